#!/usr/bin/env bash
# Makes sure the services the tests talk to are running on loopback:
# PostgreSQL on 127.0.0.1:5432 with a role warder_test (password
# warder_test, superuser: tests create databases and roles). As root it
# installs Debian's packages when missing; otherwise it says what to do.
set -euo pipefail

log() { echo "services: $*" >&2; }
as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  as_root || { log "missing $*; install it (apt-get install $*) or run make test as root"; exit 1; }
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

postgres() {
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-contrib
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    local v
    v=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
    if [ -z "$v" ]; then
      v=$(ls /usr/lib/postgresql | sort -V | tail -1)
      as_root || { log "no PostgreSQL cluster; run as root to create one"; exit 1; }
      pg_createcluster "$v" main >/dev/null
    fi
    log "starting PostgreSQL $v"
    if as_root; then
      pg_ctlcluster --skip-systemctl-redirect "$v" main start
    else
      pg_ctlcluster "$v" main start
    fi
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }
  fi
  if ! PGPASSWORD=warder_test psql -h 127.0.0.1 -U warder_test -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    as_root || { log "role warder_test missing; run make test as root once, or create it (SUPERUSER, password warder_test)"; exit 1; }
    log "creating PostgreSQL role warder_test"
    runuser -u postgres -- psql -q -d postgres -c \
      "DO \$\$ BEGIN
         IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'warder_test') THEN
           CREATE ROLE warder_test LOGIN SUPERUSER PASSWORD 'warder_test';
         ELSE
           ALTER ROLE warder_test LOGIN SUPERUSER PASSWORD 'warder_test';
         END IF;
       END \$\$;" >/dev/null
  fi
}

# OpenSSH's sshd (and sudo) for the linux connector's tests, which start
# their own sshd on a loopback port (internal/testenv/sshd.go); nothing is
# started here. The tests need root and skip without it, so a non-root run
# only warns.
openssh() {
  if ! as_root; then
    [ -x /usr/sbin/sshd ] || log "openssh-server missing; the linux connector tests need it (and root)"
    return 0
  fi
  [ -x /usr/sbin/sshd ] || apt_install openssh-server
  command -v sudo >/dev/null || apt_install sudo
  mkdir -p /run/sshd # sshd's privilege separation directory
  log "sshd and sudo ready for the linux connector tests"
}

# MariaDB on 127.0.0.1:3306 with a user warder_test (password warder_test,
# all privileges WITH GRANT OPTION: the mysql connector's tests create and
# drop accounts). Started only when nothing answers on the port.
mariadb_answers() { (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; }
mariadb_service() {
  if ! mariadb_answers; then
    [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
  fi
  if ! mariadb_answers; then
    as_root || { log "MariaDB not running on 127.0.0.1:3306; start it or run make test as root"; exit 1; }
    log "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
      --user=mysql --bind-address=127.0.0.1 --port=3306
    for _ in $(seq 1 60); do mariadb_answers && break; sleep 0.5; done
    mariadb_answers || { log "MariaDB did not start"; exit 1; }
  fi
  if ! mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u warder_test -pwarder_test -e 'select 1' >/dev/null 2>&1; then
    as_root || { log "MariaDB user warder_test missing; run make test as root once, or create it (password warder_test, ALL PRIVILEGES WITH GRANT OPTION)"; exit 1; }
    log "creating MariaDB user warder_test"
    local h sql=""
    for h in 127.0.0.1 localhost; do
      sql+="CREATE USER IF NOT EXISTS 'warder_test'@'$h' IDENTIFIED BY 'warder_test';
            ALTER USER 'warder_test'@'$h' IDENTIFIED BY 'warder_test';
            GRANT ALL PRIVILEGES ON *.* TO 'warder_test'@'$h' WITH GRANT OPTION;"
    done
    for _ in $(seq 1 20); do mariadb -u root -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
    mariadb -u root -e "$sql"
  fi
}

# Redis on 127.0.0.1:6379 whose default user needs no password (the redis
# connector's tests create password-checked ACL users). Started only when
# nothing answers; nothing is saved to disk.
redis_answers() (
  exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && IFS= read -r -t 2 line <&3 && [[ $line == +PONG* ]]
) 2>/dev/null
redis_service() {
  if ! redis_answers; then
    command -v redis-server >/dev/null || apt_install redis-server
  fi
  if ! redis_answers; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 40); do redis_answers && break; sleep 0.25; done
    redis_answers || { log "Redis did not start (or needs a password: the tests need the default user without one)"; exit 1; }
  fi
}

# PgBouncer for bench/pg/run.sh, the PostgreSQL gateway benchmark: only
# `make bench` asks for it (scripts/services.sh bench); the tests do not
# need it. Nothing is started here: run.sh starts its own.
bench_tools() {
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
  command -v pgbench >/dev/null || apt_install postgresql-contrib
  [ -x /usr/bin/time ] || apt_install time # pgbench's CPU time
  command -v pgrep >/dev/null || apt_install procps
}
if [ "${1:-}" = bench ]; then
  bench_tools
  log "pgbench and PgBouncer ready for bench/pg/run.sh"
  exit 0
fi

# The race detector (go test -race) needs a C compiler.
command -v gcc >/dev/null || apt_install gcc libc6-dev
postgres
log "PostgreSQL ready on 127.0.0.1:5432"
openssh
mariadb_service
log "MariaDB ready on 127.0.0.1:3306"
redis_service
log "Redis ready on 127.0.0.1:6379"
