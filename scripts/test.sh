#!/usr/bin/env bash
# Runs every test of the workspace, on coord-mem and on a real etcd.
#
# Installs what is missing (Debian: etcd-server, etcd-client, protobuf-compiler), starts one etcd
# on a free loopback port with a temporary data dir, runs `cargo test` for every crate with
# ETCD_ENDPOINTS pointing at it, and stops etcd whatever happens. Tests that need their own etcd
# (clusters, TLS, auth, restarts) start it themselves through crates/etcd-harness.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p coord-mem`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/etcd-lib.sh

# shellcheck disable=SC2046 # one package name per word
install_packages test.sh $(missing_etcd_packages)
start_etcd test.sh coord-test
export ETCD_ENDPOINTS="$etcd_endpoint"

# cargo lets `--workspace` override `-p`: name the whole workspace only when no package is named.
scope=(--workspace)
for arg in "$@"; do
  case $arg in
    -p | -p* | --package | --package=*) scope=() ;;
  esac
done
cargo test ${scope[@]+"${scope[@]}"} --all-features --locked --no-fail-fast "$@"
