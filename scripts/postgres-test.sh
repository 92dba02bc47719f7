#!/usr/bin/env bash
# A throwaway PostgreSQL for the server's tests, from Debian's packages: installs the server if
# missing, initialises a cluster in a folder of its own, starts it on 127.0.0.1, creates the
# role and database the tests use, and prints their URL on stdout (everything else goes to
# stderr), so that
#
#   export FEDP2EFT_TEST_DATABASE_URL=$(scripts/postgres-test.sh)
#
# is all a developer needs before `cargo test`. Idempotent: a cluster already running is
# reused. `scripts/postgres-test.sh stop` stops it; deleting its folder removes it.
#
# Environment:
#   FEDP2EFT_PG_DIR   cluster folder (default ${TMPDIR:-/tmp}/fedp2eft-postgres)
#   FEDP2EFT_PG_PORT  port on 127.0.0.1 (default 55432: not the 5432 of a system server)
#
# The tests make one schema per test inside this database and drop it afterwards, so one
# cluster serves every worktree and parallel test binaries.
set -euo pipefail

dir=${FEDP2EFT_PG_DIR:-${TMPDIR:-/tmp}/fedp2eft-postgres}
port=${FEDP2EFT_PG_PORT:-55432}
role=fedp2eft
password=fedp2eft
database=fedp2eft_test
url="postgres://$role:$password@127.0.0.1:$port/$database"

log() { printf 'postgres-test: %s\n' "$*" >&2; }

# Debian installs the server binaries outside PATH, under /usr/lib/postgresql/<major>/bin.
find_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then
    echo "$found"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

bin=$(find_bin)
if [ -z "$bin" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "PostgreSQL is not installed; run as root or: sudo apt-get install -y postgresql"
    exit 1
  fi
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin=$(find_bin)
  [ -n "$bin" ] || { log "postgresql installed but initdb not found"; exit 1; }
fi

# initdb and postgres refuse to run as root: as root, run them as the `postgres` user that the
# Debian package creates (made here if the binaries came some other way).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [ "${1:-}" = stop ]; then
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >&2
  fi
  exit 0
fi

if [ ! -f "$dir/data/PG_VERSION" ]; then
  log "initialising a cluster in $dir/data"
  mkdir -p "$dir"
  rm -rf "$dir/data"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
  fi
  # Local socket connections (the admin steps below) are trusted; TCP ones need a password.
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  # A disposable cluster: no fsync (the tests kill the server, never PostgreSQL), room for
  # parallel tests each with a pool or two, the socket inside the cluster's own folder.
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
full_page_writes = off
log_min_messages = warning
EOF
fi

if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$port"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port" -w -t 60 start >&2 ||
    { tail -n 20 "$dir/server.log" >&2; exit 1; }
fi
if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  log "the cluster in $dir runs, but not on port $port: scripts/postgres-test.sh stop, then retry"
  exit 1
fi

psql_admin() {
  as_owner psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"
}
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$role'")" != 1 ]; then
  psql_admin -c "CREATE ROLE $role LOGIN PASSWORD '$password'" >&2
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
  psql_admin -c "CREATE DATABASE $database OWNER $role" >&2
fi
echo "$url"
