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

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing ${missing[*]}: install them (Debian: sudo apt-get install -y ${missing[*]}) and run again" >&2
    exit 2
  fi
fi

# A free loopback port: bind to port 0 and read what the kernel picked.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

data_dir=$(mktemp -d -t coord-etcd.XXXXXX)
etcd_pid=""
cleanup() {
  if [ -n "$etcd_pid" ]; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
}
trap cleanup EXIT INT TERM

for attempt in 1 2 3 4 5; do
  client_port=$(free_port)
  peer_port=$(free_port)
  etcd --name coord-test --data-dir "$data_dir/data" \
    --listen-client-urls "http://127.0.0.1:$client_port" \
    --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "coord-test=http://127.0.0.1:$peer_port" \
    >"$data_dir/etcd.log" 2>&1 &
  etcd_pid=$!
  healthy=""
  for _ in $(seq 1 100); do
    if ! kill -0 "$etcd_pid" 2>/dev/null; then break; fi
    if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client_port" --dial-timeout=1s endpoint health >/dev/null 2>&1; then
      healthy=yes
      break
    fi
    sleep 0.2
  done
  if [ -n "$healthy" ]; then break; fi
  echo "test.sh: etcd did not start on port $client_port (attempt $attempt); log:" >&2
  tail -5 "$data_dir/etcd.log" >&2 || true
  kill "$etcd_pid" 2>/dev/null || true
  wait "$etcd_pid" 2>/dev/null || true
  etcd_pid=""
  rm -rf "$data_dir/data"
done
if [ -z "$etcd_pid" ]; then
  echo "test.sh: could not start etcd" >&2
  exit 1
fi
export ETCD_ENDPOINTS="127.0.0.1:$client_port"
echo "test.sh: etcd $(etcd --version | head -1 | awk '{print $3}') on $ETCD_ENDPOINTS (pid $etcd_pid)" >&2

cargo test --workspace --all-features --locked --no-fail-fast "$@"
