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

# The race detector (go test -race) needs a C compiler.
command -v gcc >/dev/null || apt_install gcc libc6-dev
postgres
log "PostgreSQL ready on 127.0.0.1:5432"
