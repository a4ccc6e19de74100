#!/usr/bin/env bash
# Runs every test of the workspace, on coord-mem, on a real etcd and on a real PostgreSQL.
#
# Installs what is missing (Debian: etcd-server, etcd-client, protobuf-compiler, golang-go and
# golang-etcd-server-dev for the Go interop tests, postgresql, in one apt-get run), starts one
# etcd and one PostgreSQL on free loopback ports with temporary data dirs, runs `cargo test` for
# every crate with ETCD_ENDPOINTS and POSTGRES_URL pointing at them, and stops both by pid
# whatever happens. Tests that need a server of their own (clusters, TLS,
# auth, restarts, pauses) start it themselves through crates/etcd-harness and crates/pg-harness.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p coord-mem`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/etcd-lib.sh
. scripts/pg-lib.sh

# shellcheck disable=SC2046 # one package name per word
install_packages test.sh $(missing_etcd_packages) $(missing_go_packages) $(missing_postgres_packages)
start_etcd test.sh coord-test
start_postgres test.sh coord-test
export ETCD_ENDPOINTS="$etcd_endpoint"
export POSTGRES_URL="$postgres_url"

# cargo lets `--workspace` override `-p`: name the whole workspace only when no package is named.
scope=(--workspace)
for arg in "$@"; do
  case $arg in
    -p | -p* | --package | --package=*) scope=() ;;
  esac
done
cargo test ${scope[@]+"${scope[@]}"} --all-features --locked --no-fail-fast "$@"
