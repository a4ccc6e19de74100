# Shared by test.sh and bench.sh (sourced, not run): installs missing Debian packages and
# starts one etcd on a free loopback port with a temporary data dir, stopped by pid at exit.

. "$(dirname "${BASH_SOURCE[0]}")/common-lib.sh"

# The etcd packages every script needs, when their commands are missing.
missing_etcd_packages() {
  command -v etcd >/dev/null 2>&1 || echo etcd-server
  command -v etcdctl >/dev/null 2>&1 || echo etcd-client
  command -v protoc >/dev/null 2>&1 || echo protobuf-compiler
}

# Go and Debian's packaged etcd 3.4 sources: the Go interop tests and the Go anchors build
# programs on etcd's `clientv3/concurrency` and `contrib/recipes` with them.
missing_go_packages() {
  command -v go >/dev/null 2>&1 || echo golang-go
  [ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3/concurrency ] || echo golang-etcd-server-dev
}

etcd_pid=""
etcd_data_dir=""
stop_etcd() {
  if [ -n "$etcd_pid" ]; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
    etcd_pid=""
  fi
  [ -z "$etcd_data_dir" ] || rm -rf "$etcd_data_dir"
}

# start_etcd WHO NAME: starts etcd (retrying on port clashes), waits until healthy, sets
# etcd_pid, etcd_data_dir and etcd_endpoint, and stops it when the script exits.
start_etcd() {
  local who=$1 name=$2 attempt client_port peer_port healthy
  etcd_data_dir=$(mktemp -d -t "$name-etcd.XXXXXX")
  at_exit stop_etcd
  for attempt in 1 2 3 4 5; do
    client_port=$(free_port)
    peer_port=$(free_port)
    etcd --name "$name" --data-dir "$etcd_data_dir/data" \
      --listen-client-urls "http://127.0.0.1:$client_port" \
      --advertise-client-urls "http://127.0.0.1:$client_port" \
      --listen-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-cluster "$name=http://127.0.0.1:$peer_port" \
      >"$etcd_data_dir/etcd.log" 2>&1 &
    etcd_pid=$!
    healthy=""
    for _ in $(seq 1 100); do
      if ! kill -0 "$etcd_pid" 2>/dev/null; then break; fi
      # Healthy, and ours: another etcd that took the port first would answer too (ours then
      # exits with "address in use" and is started again on other ports).
      if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client_port" --dial-timeout=1s endpoint health >/dev/null 2>&1 &&
        ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client_port" --dial-timeout=1s member list 2>/dev/null |
        grep -q "127.0.0.1:$peer_port"; then
        healthy=yes
        break
      fi
      sleep 0.2
    done
    if [ -n "$healthy" ]; then
      etcd_endpoint="127.0.0.1:$client_port"
      echo "$who: etcd $(etcd --version | head -1 | awk '{print $3}') on $etcd_endpoint (pid $etcd_pid)" >&2
      return 0
    fi
    echo "$who: etcd did not start on port $client_port (attempt $attempt); log:" >&2
    tail -5 "$etcd_data_dir/etcd.log" >&2 || true
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
    etcd_pid=""
    rm -rf "$etcd_data_dir/data"
  done
  echo "$who: could not start etcd" >&2
  exit 1
}
