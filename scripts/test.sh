#!/usr/bin/env bash
# Runs every test of the workspace, on coord-mem, on a real etcd and on a real PostgreSQL.
#
# Installs what is missing (Debian: etcd-server, etcd-client, protobuf-compiler), starts one etcd
# on a free loopback port with a temporary data dir, runs `cargo test` for every crate with
# ETCD_ENDPOINTS pointing at it, and stops etcd whatever happens. Likewise one PostgreSQL
# (Debian: postgresql) as POSTGRES_URL, unless POSTGRES_URL is set already. Tests that need their own etcd
# (clusters, TLS, auth, restarts) start it themselves through crates/etcd-harness.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p coord-mem`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/etcd-lib.sh
. scripts/pg-lib.sh

# shellcheck disable=SC2046 # one package name per word
install_packages test.sh $(missing_etcd_packages)
start_etcd test.sh coord-test
export ETCD_ENDPOINTS="$etcd_endpoint"

# PostgreSQL for coord-postgres's tests: the one in POSTGRES_URL, else a throwaway server.
if [ -z "${POSTGRES_URL:-}" ]; then
  # shellcheck disable=SC2046
  install_packages test.sh $(missing_postgres_packages)
  trap 'stop_postgres; stop_etcd' EXIT INT TERM
  start_postgres test.sh
  export POSTGRES_URL="$postgres_url"
fi

# cargo lets `--workspace` override `-p`: name the whole workspace only when no package is named.
scope=(--workspace)
for arg in "$@"; do
  case $arg in
    -p | -p* | --package | --package=*) scope=() ;;
  esac
done
cargo test ${scope[@]+"${scope[@]}"} --all-features --locked --no-fail-fast "$@"
