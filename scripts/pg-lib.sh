# Shared by test.sh (sourced, not run): starts one PostgreSQL on a free loopback port with a
# temporary cluster, as crates/pg-harness does, stopped by pid at exit.

. "$(dirname "${BASH_SOURCE[0]}")/common-lib.sh"

# The directory of the server binaries, as pg-harness finds it: $PG_BIN_DIR, else the newest
# /usr/lib/postgresql/<version>/bin with initdb, pg_ctl and postgres, else initdb's on $PATH.
postgres_bin_dir() {
  local dir
  if [ -n "${PG_BIN_DIR:-}" ]; then
    [ -x "$PG_BIN_DIR/initdb" ] && [ -x "$PG_BIN_DIR/postgres" ] && echo "$PG_BIN_DIR"
    return
  fi
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return 0
    fi
  done
  dir=$(command -v initdb 2>/dev/null) && dirname "$dir"
}

# The PostgreSQL package every script needs, when its server binaries are missing.
missing_postgres_packages() {
  postgres_bin_dir >/dev/null || echo postgresql
}

postgres_pid=""
postgres_dir=""
postgres_port=""
postgres_url=""

# Fast shutdown (SIGINT, what `pg_ctl stop -m fast` sends), SIGKILL after 30 s; removes the
# cluster.
stop_postgres() {
  local i
  if [ -n "$postgres_pid" ]; then
    kill -INT "$postgres_pid" 2>/dev/null || true
    for i in $(seq 1 300); do
      alive "$postgres_pid" || break
      sleep 0.1
    done
    kill -KILL "$postgres_pid" 2>/dev/null || true
    wait "$postgres_pid" 2>/dev/null || true
    postgres_pid=""
  fi
  [ -z "$postgres_dir" ] || rm -rf "$postgres_dir"
  postgres_dir=""
}

# start_postgres WHO NAME: initdb's a cluster in a temp dir, starts postgres on a free
# 127.0.0.1 port (retrying on port clashes; its Unix socket in the temp dir), waits until it
# accepts connections, creates the user `coord` (password `coord`) owning a database `coord`,
# sets postgres_pid, postgres_dir, postgres_port and postgres_url (the password URL, as
# PgServer::url gives it), and stops it when the script exits.
#
# initdb and postgres refuse root: as root, the temp dir goes to the `postgres` OS user and
# both run as that user through setpriv, which execs (runuser and su fork): `$!` is then the
# postmaster's pid. The server keeps fsync on.
start_postgres() {
  local who=$1 name=$2 bin psql attempt ready pidfile
  local as_postgres=()
  bin=$(postgres_bin_dir) || {
    echo "$who: PostgreSQL not found (set PG_BIN_DIR or install postgresql)" >&2
    exit 1
  }
  psql=$bin/psql
  [ -x "$psql" ] || psql=psql
  postgres_dir=$(mktemp -d -t "$name-postgres.XXXXXX")
  at_exit stop_postgres
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$postgres_dir"
    as_postgres=(setpriv --reuid postgres --regid postgres --clear-groups)
  fi
  # initdb looks for postgres from the current directory: one the postgres user can read.
  if ! (cd "$postgres_dir" && ${as_postgres[@]+"${as_postgres[@]}"} "$bin/initdb" \
    -D "$postgres_dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C --no-sync >"$postgres_dir/initdb.log" 2>&1); then
    echo "$who: initdb failed; log:" >&2
    tail -20 "$postgres_dir/initdb.log" >&2
    exit 1
  fi
  # Rewritten in place, the files stay the postgres user's.
  cat >"$postgres_dir/data/pg_hba.conf" <<'HBA'
# Written by pg-lib.sh: the socket and the superuser on loopback are trusted, the rest give a
# password.
local   all       all                     trust
host    all       postgres  127.0.0.1/32  trust
host    all       all       127.0.0.1/32  scram-sha-256
HBA
  printf '\n# Added by pg-lib.sh.\nmax_connections = 200\n' >>"$postgres_dir/data/postgresql.conf"
  pidfile=$postgres_dir/data/postmaster.pid
  for attempt in 1 2 3 4 5; do
    postgres_port=$(free_port)
    (cd "$postgres_dir" && exec ${as_postgres[@]+"${as_postgres[@]}"} "$bin/postgres" \
      -D "$postgres_dir/data" -c listen_addresses=127.0.0.1 -c "port=$postgres_port" \
      -c "unix_socket_directories=$postgres_dir" >>"$postgres_dir/postgres.log" 2>&1) &
    postgres_pid=$!
    ready=""
    for _ in $(seq 1 300); do
      alive "$postgres_pid" || break
      # What `pg_ctl start -w` waits for: our postmaster's pid on line 1, `ready` on line 8.
      if [ "$(sed -n 1p "$pidfile" 2>/dev/null)" = "$postgres_pid" ] &&
        [ "$(sed -n '8{s/ *$//;p}' "$pidfile" 2>/dev/null)" = ready ]; then
        ready=yes
        break
      fi
      sleep 0.1
    done
    if [ -n "$ready" ]; then
      break
    fi
    echo "$who: PostgreSQL did not start on port $postgres_port (attempt $attempt); log:" >&2
    tail -5 "$postgres_dir/postgres.log" >&2 || true
    kill -KILL "$postgres_pid" 2>/dev/null || true
    wait "$postgres_pid" 2>/dev/null || true
    postgres_pid=""
    grep -q "could not bind" "$postgres_dir/postgres.log" || break
    : >"$postgres_dir/postgres.log"
  done
  if [ -z "$postgres_pid" ]; then
    echo "$who: could not start PostgreSQL" >&2
    exit 1
  fi
  "$psql" -X -q -v ON_ERROR_STOP=1 -h "$postgres_dir" -p "$postgres_port" -U postgres -d postgres \
    -c "CREATE ROLE coord LOGIN PASSWORD 'coord'" -c "CREATE DATABASE coord OWNER coord" >&2
  postgres_url="postgres://coord:coord@127.0.0.1:$postgres_port/coord?sslmode=disable"
  # The password URL works (TCP, SCRAM), as the tests will use it.
  "$psql" -X -q -A -t -c 'SELECT 1' "$postgres_url" >/dev/null
  echo "$who: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$postgres_port (pid $postgres_pid)" >&2
}
