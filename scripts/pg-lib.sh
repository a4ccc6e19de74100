# Shared by test.sh (sourced, not run): installs PostgreSQL's server when missing and starts a
# throwaway one on a free loopback port, in a temporary directory, as the `postgres` OS user
# (initdb refuses root). The pg-harness crate does the same for tests that need a server of
# their own (TLS, restarts).

# The package to install when no server binaries are there.
missing_postgres_packages() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || echo postgresql
}

pg_bin=""
pg_dir=""

stop_postgres() {
  if [ -n "$pg_dir" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
    pg_dir=""
  fi
}

# start_postgres WHO: initdb + pg_ctl start (retrying on port clashes); sets postgres_url.
# The caller stops it with stop_postgres (in its EXIT trap).
start_postgres() {
  local who=$1 attempt port
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pg_dir=$(mktemp -d -t coord-pg.XXXXXX)
  chown postgres "$pg_dir"
  runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" --auth=trust -U postgres >/dev/null
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
      -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null 2>&1; then
      postgres_url="postgres://postgres@127.0.0.1:$port/postgres"
      echo "$who: PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
      return 0
    fi
    echo "$who: PostgreSQL did not start on port $port (attempt $attempt); log:" >&2
    tail -5 "$pg_dir/log" >&2 || true
  done
  echo "$who: could not start PostgreSQL" >&2
  exit 1
}
