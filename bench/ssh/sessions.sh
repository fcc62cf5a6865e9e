#!/usr/bin/env bash
# SSH gateway session benchmarks (issue 6) with the real Warder server
# (`warder dev`: policies, audit log, recordings deflated and encrypted in
# SQLite), all paths in one run:
#   memory   N idle interactive sessions (pty + bash, prompt shown) held at
#            once through the gateway, recorded; then the same N through an
#            OpenSSH jump host (ssh -J, a second sshd). Per session: the
#            growth of the warder process's RSS, PSS and Go heap (in use,
#            from /metrics), and of the jump sshd's process tree (RSS and
#            PSS summed over the listener and its per-connection children),
#            divided by N.
#   record   one busy interactive session through the gateway for DUR: a
#            command typed every second or so, a character every 40 ms,
#            directory listings. Recording bytes stored per minute (deflated
#            and encrypted, SUM(LENGTH(data_ct))) and the raw asciicast
#            bytes per minute (the file `warder session play` replays).
# The target logs in with Warder's host-access CA (ssh_auth=certificate):
# no vault check-out, so one principal may hold N sessions on one account.
# Needs root (a local user, sshd on loopback ports, ulimit -n).
# Usage: bench/ssh/sessions.sh            N=500 DUR=60s
#        N=5 DUR=10s bench/ssh/sessions.sh   (smoke)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-500}; DUR=${DUR:-60s}; SETTLE=${SETTLE:-5}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((N * 4 + 256)) ] || echo "warning: ulimit -n $(ulimit -n) is low for N=$N (the gateway holds 2 sockets per session)" >&2

W=$(mktemp -d /tmp/warder-bench-sessions.XXXXXX); chmod 755 "$W"
U=wb_$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() {
  exec 7>&- 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pkill -u "$U" 2>/dev/null || true
  userdel -r -f "$U" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
useradd -m -s /bin/bash "$U"; usermod -p '*' "$U"
mkdir -p /run/sshd

freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PT=$(freeport); PJ=$(freeport); PG=$(freeport); PA=$(freeport)
for k in target jump user; do ssh-keygen -q -t ed25519 -N '' -C "$k" -f "$W/$k"; done
mkdir -p "$W/keys"; cp "$W/user.pub" "$W/keys/$U"; chmod 644 "$W/keys/$U"

go build -o "$W/warder" ./cmd/warder
go build -o "$W/gateway" ./bench/ssh/gateway

# The Warder server, its API and its SSH gateway on loopback.
"$W/warder" dev --data-dir "$W/dev" --listen "127.0.0.1:$PA" --ssh-listen "127.0.0.1:$PG" \
  --ssh-idle-timeout 0 >"$W/warder.out" 2>"$W/warder.log" & WPID=$!; pids+=($WPID)
export WARDER_ADDR="https://127.0.0.1:$PA" WARDER_CACERT="$W/dev/ca.pem" WARDER_CONFIG_DIR="$W/cli"
for _ in $(seq 100); do [ -s "$W/dev/admin.token" ] && grep -q "ssh gateway listening" "$W/warder.log" && break; sleep 0.2; done
WARDER_TOKEN=$(cat "$W/dev/admin.token"); export WARDER_TOKEN
WB="$W/warder"
$WB ssh-ca | awk '{print $1, $2}' >"$W/access_ca.pub"

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
TrustedUserCAKeys $W/access_ca.pub
StrictModes no
UseDNS no
AllowTcpForwarding $3
MaxStartups 1000:30:2000
MaxSessions 10
CFG
}
sshd_conf "$PT" "$W/target" no >"$W/target.conf"
sshd_conf "$PJ" "$W/jump" yes >"$W/jump.conf"
/usr/sbin/sshd -D -f "$W/target.conf" -E "$W/target.log" & pids+=($!)
/usr/sbin/sshd -D -f "$W/jump.conf" -E "$W/jump.log" & JPID=$!; pids+=($JPID)

$WB target add linux web1 --host 127.0.0.1 --port "$PT" --option "host_key=$(cut -d' ' -f1,2 "$W/target.pub")" \
  --option ssh_auth=certificate >/dev/null
$WB ssh-config >/dev/null # the user key and certificate in $WARDER_CONFIG_DIR
KEY=$W/cli/id_ed25519_warder; CERT=$KEY-cert.pub
for _ in $(seq 50); do $WB ssh "$U@web1" -- true 2>/dev/null && break; sleep 0.2; done
$WB ssh "$U@web1" -- true

# mem_warder prints the warder process's RSS, PSS and Go heap in use, KiB.
mem_warder() {
  local rss pss heap
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$WPID/status")
  pss=$(awk '/^Pss:/{print $2}' "/proc/$WPID/smaps_rollup")
  heap=$(curl -s --cacert "$WARDER_CACERT" "$WARDER_ADDR/metrics" | awk '/^go_memstats_heap_inuse_bytes /{printf "%d", $2/1024}')
  echo "$rss $pss $heap"
}
# mem_tree prints the RSS and PSS, KiB, summed over process $1 and its descendants.
mem_tree() {
  local p rss=0 pss=0 r s
  for p in $(ps -e -o pid=,ppid= | awk -v root="$1" '{kids[$2]=kids[$2]" "$1} END{q=root; while(q!=""){split(q,a," "); q=""; for(i in a){print a[i]; q=q" "kids[a[i]]}}}'); do
    r=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    s=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0}))
  done
  echo "$rss $pss"
}
per() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN{printf "%.0f", (b-a)/n}'; }

# hold NAME ARGS... opens N idle sessions with `gateway hold` in the
# background ($! after it returns) and waits until they are up; release
# PID closes them.
hold() {
  local name=$1; shift
  rm -f "$W/hold.in"; mkfifo "$W/hold.in"
  "$W/gateway" hold -n "$N" "$@" <"$W/hold.in" >"$W/hold-$name.out" 2>"$W/hold-$name.log" &
  exec 7>"$W/hold.in"
  for _ in $(seq 1200); do grep -q '^ready' "$W/hold-$name.out" && break; sleep 0.5; done
  grep '^ready' "$W/hold-$name.out" || { echo "hold $name did not get ready" >&2; cat "$W/hold-$name.log" >&2; exit 1; }
  sleep "$SETTLE"
}
release() { exec 7>&-; wait "$1" 2>/dev/null || true; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, $(ssh -V 2>&1), Go $(go env GOVERSION), N=$N"

echo "## memory: $N idle recorded interactive sessions through the gateway"
sleep "$SETTLE"
read -r w_rss0 w_pss0 w_heap0 <<<"$(mem_warder)"
hold gateway -addr "127.0.0.1:$PG" -user "$U@web1" -key "$KEY" -cert "$CERT"
hp=$!
read -r w_rss1 w_pss1 w_heap1 <<<"$(mem_warder)"
active=$($WB session ls --active --kind ssh --limit 1000 --format json | grep -o '"id"' | wc -l)
echo "active recorded sessions: $active"
echo "warder RSS  $w_rss0 -> $w_rss1 KiB: $(per "$w_rss0" "$w_rss1") KiB/session"
echo "warder PSS  $w_pss0 -> $w_pss1 KiB: $(per "$w_pss0" "$w_pss1") KiB/session"
echo "warder heap $w_heap0 -> $w_heap1 KiB (Go heap in use): $(per "$w_heap0" "$w_heap1") KiB/session"
echo "goroutines: $(curl -s --cacert "$WARDER_CACERT" "$WARDER_ADDR/metrics" | awk '/^go_goroutines /{print $2}')"
release "$hp"

echo "## memory: $N idle interactive sessions through an OpenSSH jump host (ProxyJump)"
read -r j_rss0 j_pss0 <<<"$(mem_tree "$JPID")"
hold jump -addr "127.0.0.1:$PT" -user "$U" -key "$W/user" -jump "127.0.0.1:$PJ"
hp=$!
read -r j_rss1 j_pss1 <<<"$(mem_tree "$JPID")"
echo "jump sshd tree RSS $j_rss0 -> $j_rss1 KiB: $(per "$j_rss0" "$j_rss1") KiB/session"
echo "jump sshd tree PSS $j_pss0 -> $j_pss1 KiB: $(per "$j_pss0" "$j_pss1") KiB/session"
release "$hp"
echo "ratio gateway PSS / jump PSS per session: $(awk -v g="$(per "$w_pss0" "$w_pss1")" -v j="$(per "$j_pss0" "$j_pss1")" 'BEGIN{if (j>0) printf "%.2f", g/j; else print "n/a"}')"

echo "## recording: one busy interactive session for $DUR"
"$W/gateway" busy -addr "127.0.0.1:$PG" -user "$U@web1" -key "$KEY" -cert "$CERT" -d "$DUR"
sleep 2
q() { sqlite3 -readonly "$W/dev/warder.db" "$1"; }
id=$(q "SELECT id FROM recording_sessions WHERE status <> 'active' AND pty = 1 ORDER BY started_at DESC LIMIT 1")
IFS='|' read -r raw micros bin bout events status <<<"$(q "SELECT recorded_bytes, ended_at - started_at, bytes_in, bytes_out, events, status FROM recording_sessions WHERE id = '$id'")"
stored=$(q "SELECT SUM(LENGTH(data_ct)) FROM recording_chunks WHERE session_id = '$id'")
chunks=$(q "SELECT COUNT(*) FROM recording_chunks WHERE session_id = '$id'")
echo "session $id: status $status, $(awk -v m="$micros" 'BEGIN{printf "%.1f", m/1e6}') s, $bin bytes in, $bout bytes out, $events events"
echo "asciicast (raw)  $raw bytes: $(awk -v b="$raw" -v m="$micros" 'BEGIN{printf "%.0f", b*60e6/m}') bytes/min"
echo "stored (deflated, encrypted, $chunks chunks) $stored bytes: $(awk -v b="$stored" -v m="$micros" 'BEGIN{printf "%.0f", b*60e6/m}') bytes/min ($(awk -v s="$stored" -v r="$raw" 'BEGIN{printf "%.1f", r/s}')x smaller)"
