#!/usr/bin/env bash
# SSH gateway benchmarks (issue 6), all paths measured in one run:
#   direct          ssh -> target sshd
#   jump            ssh -J jump -> target sshd (OpenSSH ProxyJump, a second sshd)
#   gateway         ssh -> Warder gateway -> target sshd (no authz/recording store)
# Throughput: `cat` of a 1 GiB file from the page cache to /dev/null.
# Setup: p50 of `ssh HOST true` x N.  Load (LOAD=1, or LOAD=only): 200 concurrent short
# exec connections for 60 s through the gateway, then goroutines and fds.
# Needs root (a local user, sshd on loopback ports). Usage: bench/ssh/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}; N=${N:-50}; SIZE=${SIZE:-1G}; LOAD=${LOAD:-0}
CIPHER=${CIPHER:-aes128-gcm@openssh.com}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

W=$(mktemp -d /tmp/warder-bench-ssh.XXXXXX); chmod 755 "$W"
U=wb_$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  userdel -r -f "$U" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
useradd -m -s /bin/bash "$U"; usermod -p '*' "$U"
mkdir -p /run/sshd

freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PT=$(freeport); PJ=$(freeport); PG=$(freeport); PD=$(freeport)
for k in target jump gw user ca; do ssh-keygen -q -t ed25519 -N '' -C "$k" -f "$W/$k"; done
mkdir -p "$W/keys"; cp "$W/user.pub" "$W/keys/$U"; chmod 644 "$W/keys/$U"
ssh-keygen -q -s "$W/ca" -I "user:bench" -n "user:bench" -V -5m:+4h "$W/user.pub"

sshd_conf() { # port hostkey forwarding
  cat <<CFG
Port $1
ListenAddress 127.0.0.1
HostKey $2
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers $U
AuthorizedKeysFile $W/keys/%u
StrictModes no
UseDNS no
AllowTcpForwarding $3
MaxStartups 400:30:600
MaxSessions 50
CFG
}
sshd_conf "$PT" "$W/target" no >"$W/target.conf"
sshd_conf "$PJ" "$W/jump" yes >"$W/jump.conf"
/usr/sbin/sshd -D -f "$W/target.conf" -E "$W/target.log" & pids+=($!)
/usr/sbin/sshd -D -f "$W/jump.conf" -E "$W/jump.log" & pids+=($!)
go build -o "$W/gateway" ./bench/ssh/gateway
"$W/gateway" serve -listen "127.0.0.1:$PG" -host-key "$W/gw" -user-ca "$W/ca.pub" \
  -target-addr "127.0.0.1:$PT" -target-host-key "$W/target.pub" -target-user "$U" -target-key "$W/user" \
  -debug-addr "127.0.0.1:$PD" -v 2>"$W/gateway.log" & pids+=($!)

{
  echo "[127.0.0.1]:$PT $(cat "$W/target.pub")"
  echo "[127.0.0.1]:$PJ $(cat "$W/jump.pub")"
  echo "[127.0.0.1]:$PG $(cat "$W/gw.pub")"
} >"$W/known_hosts"
cat >"$W/ssh_config" <<CFG
Host *
  HostName 127.0.0.1
  UserKnownHostsFile $W/known_hosts
  StrictHostKeyChecking yes
  IdentitiesOnly yes
  IdentityFile $W/user
  BatchMode yes
  LogLevel ERROR
  Ciphers $CIPHER
Host direct
  Port $PT
  User $U
Host jumphost
  Port $PJ
  User $U
Host jump
  Port $PT
  User $U
  ProxyJump jumphost
Host gateway
  Port $PG
  User web1
  CertificateFile $W/user-cert.pub
CFG
S="ssh -F $W/ssh_config"
for h in direct jump gateway; do
  for _ in $(seq 50); do $S $h true 2>/dev/null && break; sleep 0.1; done
  $S $h true
done

[ "$LOAD" = only ] && SIZE=1M
FILE=$W/blob; head -c "$SIZE" /dev/urandom >"$FILE"; chmod 644 "$FILE"; cat "$FILE" >/dev/null
BYTES=$(stat -c %s "$FILE")
now() { date +%s%N; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(ssh -V 2>&1), cipher $CIPHER, Go $(go env GOVERSION)"
if [ "$LOAD" != only ]; then
echo "## throughput: cat $SIZE from page cache, best of $RUNS (MB/s) and gateway CPU-s"
declare -A MBS
for h in direct jump gateway; do
  best=0
  for _ in $(seq "$RUNS"); do
    t0=$(now); $S $h cat "$FILE" >/dev/null; t1=$(now)
    mbs=$(( BYTES * 1000 / (t1 - t0) ))
    [ "$mbs" -gt "$best" ] && best=$mbs
  done
  MBS[$h]=$best
  echo "$h $best MB/s"
done
gwpid=${pids[2]}
echo "gateway CPU so far: $(awk '{print ($14+$15)/100 " s"}' /proc/$gwpid/stat)"
echo "ratio gateway/jump $(awk "BEGIN{printf \"%.2f\", ${MBS[gateway]}/${MBS[jump]}}")  gateway/direct $(awk "BEGIN{printf \"%.2f\", ${MBS[gateway]}/${MBS[direct]}}")"

echo "## setup: ssh HOST true x $N, p50 / p90 (ms)"
declare -A P50
for h in direct jump gateway; do
  ts=()
  for _ in $(seq "$N"); do t0=$(now); $S $h true; t1=$(now); ts+=($(( (t1 - t0) / 1000000 ))); done
  sorted=($(printf '%s\n' "${ts[@]}" | sort -n))
  P50[$h]=${sorted[$(( N / 2 ))]}
  echo "$h p50 ${P50[$h]} p90 ${sorted[$(( N * 9 / 10 ))]}"
done
echo "delta gateway-jump $(( P50[gateway] - P50[jump] )) ms, gateway-direct $(( P50[gateway] - P50[direct] )) ms"

fi # LOAD=only
if [ "$LOAD" != 0 ]; then
  echo "## load: ${LOADC:-200} concurrent exec 'true' connections for ${LOADD:-60s} through the gateway"
  echo "before: $(curl -s "127.0.0.1:$PD/stats")"
  "$W/gateway" load -addr "127.0.0.1:$PG" -key "$W/user" -cert "$W/user-cert.pub" -user web1 -c "${LOADC:-200}" -d "${LOADD:-60s}" -cmd true
  sleep 2
  echo "after:  $(curl -s "127.0.0.1:$PD/stats")"
fi
