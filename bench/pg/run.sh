#!/usr/bin/env bash
# PostgreSQL gateway benchmark (docs/benchmarks.md, "PostgreSQL gateway").
#
# Starts a fresh PostgreSQL cluster (SCRAM on 127.0.0.1, TLS available),
# PgBouncer in session mode (SCRAM, auth_file, client TLS optional) and the
# Warder gateway (bench/pg/gateway: TLS always, every statement recorded
# in memory), initialises pgbench -s $SCALE, then in one run measures
# select-only (-S), TPC-B-like (default) and connect-per-transaction (-S -C)
# against each path, interleaved so drift hits all paths alike.
#
#   bench/pg/run.sh               # T=30 CLIENTS=8 JOBS=2 SCALE=10
#   PATHS="direct server" TESTS=C bench/pg/run.sh   # the real `warder dev`
#   T=10 bench/pg/run.sh          # shorter
#   T=10 TESTS=S PATHS="direct pgbouncer gateway" REPEAT=3 bench/pg/run.sh
#   GWFLAGS="-cpuprofile /tmp/gw.prof" TESTS=S PATHS=gateway bench/pg/run.sh
#   GATEWAY_B=/tmp/gw-old PATHS="gateway gateway-b" REPEAT=5 TESTS=S bench/pg/run.sh
#                                 # A/B: another build of bench/pg/gateway
#
# "proxy_us_txn" is the proxy's CPU time (user+system) per transaction:
# on 2 shared cores it, more than TPS, says what a proxy costs.
# "client_us_txn" is pgbench's and "server_us_txn" the PostgreSQL
# cluster's (postmaster and backends): together they show where the two
# cores go, e.g. what client TLS alone costs pgbench.
#
# Needs initdb/postgres (Debian's postgresql), pgbench, pgbouncer and
# openssl. As root the servers run as the OS user postgres.
set -euo pipefail

T=${T:-30}
CT=${CT:-$T} # duration of the -C runs
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
PATHS=${PATHS:-"direct direct-tls pgbouncer pgbouncer-tls gateway"}
TESTS=${TESTS:-"S tpcb C"} # S select-only, tpcb TPC-B-like, C -S -C
REPEAT=${REPEAT:-1}        # rounds of each test over all paths
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=${PGPORT:-55432}
BPORT=${BPORT:-56432}
GPORT=${GPORT:-57432}
GWFLAGS=${GWFLAGS:-} # e.g. -cpuprofile /tmp/gw.prof
GATEWAY_B=${GATEWAY_B:-} # a gateway binary for the path gateway-b
GBPORT=${GBPORT:-58432}
SPORT=${SPORT:-59432}     # path "server": a real `warder dev` (policy, vault, recordings in SQLite)
SAPORT=${SAPORT:-59433}   # its API

for c in pgbench pgbouncer openssl /usr/bin/time pgrep; do
  command -v "$c" >/dev/null || { echo "run.sh: $c not found (apt-get install postgresql-contrib pgbouncer openssl)" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/warder-pgbench-XXXXXX)
PW="bench-$(openssl rand -hex 12)"
TOKEN="wt1.bench-$(openssl rand -hex 12)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$DIR"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$DIR/pgbouncer.pid" ] && kill "$(cat "$DIR/pgbouncer.pid")" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

echo "== setup in $DIR" >&2
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null
as_pg sh -c "cat > '$DIR/data/pg_hba.conf'" <<EOF
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
EOF
as_pg openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout "$DIR/data/server.key" -out "$DIR/data/server.crt" 2>/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -w -l "$DIR/postgres.log" start -o \
  "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR -c ssl=on -c max_connections=100 -c password_encryption=scram-sha-256" >/dev/null
as_pg "$PGBIN/psql" -h "$DIR" -p "$PGPORT" -U postgres -d postgres -q -c "CREATE ROLE bench LOGIN PASSWORD '$PW'" -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=$PW pgbench -h 127.0.0.1 -p "$PGPORT" -U bench -i -s "$SCALE" -q bench 2>&1 | tail -1 >&2

# PgBouncer: session pooling, SCRAM to clients and to the server, the
# password in auth_file; client TLS allowed (used by pgbouncer-tls).
as_pg sh -c "umask 077; cat > '$DIR/userlist.txt'" <<EOF
"bench" "$PW"
EOF
as_pg sh -c "cat > '$DIR/pgbouncer.ini'" <<EOF
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $DIR/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
client_tls_sslmode = allow
client_tls_key_file = $DIR/data/server.key
client_tls_cert_file = $DIR/data/server.crt
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
EOF
as_pg pgbouncer -d -q "$DIR/pgbouncer.ini" </dev/null >/dev/null 2>&1

(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$DIR/gateway" ./bench/pg/gateway)
UPSTREAM_PASSWORD=$PW "$DIR/gateway" -listen "127.0.0.1:$GPORT" -upstream-port "$PGPORT" -upstream-user bench -token "$TOKEN" $GWFLAGS 2>"$DIR/gateway.log" &
GWPID=$!
pids+=($GWPID)
if [ -n "$GATEWAY_B" ]; then
  UPSTREAM_PASSWORD=$PW "$GATEWAY_B" -listen "127.0.0.1:$GBPORT" -upstream-port "$PGPORT" -upstream-user bench -token "$TOKEN" 2>"$DIR/gateway-b.log" &
  GBPID=$!
  pids+=($GBPID)
fi
# Path "server": the real server, `warder dev`, with the bench role as a
# vaulted account (not rotated on check-in) and the admin's API token as
# the password: every connection is authenticated, decided by Cedar
# (audited), checks the account out (shared by the principal's
# connections), logs in with SCRAM and is recorded in SQLite.
SVPID=""
if [[ " $PATHS " == *" server "* ]]; then
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$DIR/warder" ./cmd/warder)
  "$DIR/warder" dev --data-dir "$DIR/warder-data" --listen "127.0.0.1:$SAPORT" --db-listen "127.0.0.1:$SPORT" \
    --ssh-listen "" >"$DIR/server.log" 2>&1 &
  SVPID=$!
  pids+=($SVPID)
  for _ in $(seq 100); do [ -s "$DIR/warder-data/admin.token" ] && break; sleep 0.1; done
  STOKEN=$(cat "$DIR/warder-data/admin.token")
  export WARDER_ADDR="https://127.0.0.1:$SAPORT" WARDER_CACERT="$DIR/warder-data/ca.pem"
  WARDER_TOKEN=$STOKEN "$DIR/warder" target add postgres pg --host 127.0.0.1 --port "$PGPORT" --option sslmode=disable >/dev/null
  printf '%s\n' "$PW" | WARDER_TOKEN=$STOKEN "$DIR/warder" account add pg/bench --password-stdin --no-rotate-on-checkin >/dev/null
fi
sleep 1
BPID=$(cat "$DIR/pgbouncer.pid")

# conn PATH: the libpq environment for a path.
conn() {
  case $1 in
    direct)        echo "PGPORT=$PGPORT PGUSER=bench PGPASSWORD=$PW PGSSLMODE=disable" ;;
    direct-tls)    echo "PGPORT=$PGPORT PGUSER=bench PGPASSWORD=$PW PGSSLMODE=require" ;;
    pgbouncer)     echo "PGPORT=$BPORT PGUSER=bench PGPASSWORD=$PW PGSSLMODE=disable" ;;
    pgbouncer-tls) echo "PGPORT=$BPORT PGUSER=bench PGPASSWORD=$PW PGSSLMODE=require" ;;
    gateway)       echo "PGPORT=$GPORT PGUSER=bench@pg PGPASSWORD=$TOKEN PGSSLMODE=require" ;;
    gateway-b)     echo "PGPORT=$GBPORT PGUSER=bench@pg PGPASSWORD=$TOKEN PGSSLMODE=require" ;;
    server)        echo "PGPORT=$SPORT PGUSER=bench@pg PGPASSWORD=$STOKEN PGSSLMODE=require" ;;
  esac
}
cpu() { # CPU seconds (user+system) of a pid
  awk '{print ($14+$15)/100}' "/proc/$1/stat"
}
PMPID=$(head -1 "$DIR/data/postmaster.pid")
server_cpu() { # CPU seconds of the PostgreSQL cluster: postmaster, its live and its reaped children
  { cat "/proc/$PMPID/stat"; for c in $(pgrep -P "$PMPID"); do cat "/proc/$c/stat" 2>/dev/null; done; } |
    awk -v pm="$PMPID" '{t += $14 + $15; if ($1 == pm) t += $16 + $17} END {print t / 100}'
}

printf '%-14s %-6s %10s %12s %11s %12s %13s %13s\n' path test tps latency_ms proxy_cpu_s proxy_us_txn client_us_txn server_us_txn
for test in $TESTS; do
  for round in $(seq "$REPEAT"); do
  for path in $PATHS; do
    case $test in
      S)    args=(-S -T "$T") ;;
      tpcb) args=(-T "$T") ;;
      C)    args=(-S -C -T "$CT") ;;
    esac
    proxy=""
    case $path in pgbouncer*) proxy=$BPID ;; gateway) proxy=$GWPID ;; gateway-b) proxy=$GBPID ;; server) proxy=$SVPID ;; esac
    before=0; [ -n "$proxy" ] && before=$(cpu "$proxy")
    sbefore=$(server_cpu)
    out=$(env $(conn "$path") PGHOST=127.0.0.1 PGDATABASE=bench /usr/bin/time -f '%U %S' -o "$DIR/time" \
      pgbench -c "$CLIENTS" -j "$JOBS" "${args[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
    after=0; [ -n "$proxy" ] && after=$(cpu "$proxy")
    sleep 0.5 # the last backends exit and are reaped
    safter=$(server_cpu)
    client=$(awk '{print $1 + $2}' "$DIR/time")
    tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
    lat=$(echo "$out" | awk '/^latency average/ {print $4}')
    txns=$(echo "$out" | awk '/^number of transactions actually processed/ {print $NF; exit}')
    printf '%-14s %-6s %10.1f %12s %11.2f %12.1f %13.1f %13.1f\n' "$path" "$test" "$tps" "$lat" \
      "$(awk -v a="$after" -v b="$before" 'BEGIN {print a - b}')" \
      "$(awk -v a="$after" -v b="$before" -v n="$txns" 'BEGIN {print (n > 0 ? (a - b) * 1e6 / n : 0)}')" \
      "$(awk -v c="$client" -v n="$txns" 'BEGIN {print (n > 0 ? c * 1e6 / n : 0)}')" \
      "$(awk -v a="$safter" -v b="$sbefore" -v n="$txns" 'BEGIN {print (n > 0 ? (a - b) * 1e6 / n : 0)}')"
  done
  done
done
kill -INT "$GWPID"; wait "$GWPID" 2>/dev/null || true
tail -1 "$DIR/gateway.log" >&2
if [ -n "$GATEWAY_B" ]; then
  kill -INT "$GBPID"; wait "$GBPID" 2>/dev/null || true
  tail -1 "$DIR/gateway-b.log" >&2
fi
