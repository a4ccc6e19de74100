# Sourced by bench.sh: the scale part of the benchmarks (issue 11), on bench.sh's etcd.
#
# Each round: BENCH_SCALE_SESSIONS (1,000) idle sessions in one process, ours
# (`coord-bench --scenario idle_sessions`) and Go's (`bench/go-scale`, concurrency.Session)
# alternately, each over BENCH_SCALE_IDLE seconds (10); then one election with that many
# candidates and 100 observers whose leader crashes twice (`--scenario election_candidates`).
# Results go to scale-ours.jsonl and scale-go.jsonl of the round.
#
# Needs from bench.sh: repo, out, ep, ours, measure.

scale_sessions=${BENCH_SCALE_SESSIONS:-1000}
scale_idle=${BENCH_SCALE_IDLE:-10}

# bench_scale_build: builds the Go program into target/go-scale.
bench_scale_build() {
  (cd bench/go-scale && GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$repo/target/go-scale" main.go)
  go_scale=$repo/target/go-scale
}

# bench_scale_round ROUND DIR: one round (see the header).
bench_scale_round() {
  local round=$1 dir=$2
  local name=idle_sessions_$scale_sessions
  scale_ours() {
    measure "$round" scale-ours "$name" "$dir/scale-ours.jsonl" \
      "$ours" --endpoints "$ep" --scenario idle_sessions --sessions "$scale_sessions" \
      --idle-secs "$scale_idle"
  }
  scale_go() {
    measure "$round" scale-go "$name" "$dir/scale-go.jsonl" \
      "$go_scale" -endpoints "$ep" -sessions "$scale_sessions" -idle "${scale_idle}s"
  }
  if [ $((round % 2)) = 1 ]; then scale_ours; scale_go; else scale_go; scale_ours; fi
  measure "$round" scale-ours "election_candidates_$scale_sessions" "$dir/scale-ours.jsonl" \
    "$ours" --endpoints "$ep" --scenario election_candidates --sessions "$scale_sessions" \
    --observers 100 --crash-rounds 2 --dump-latencies "$dir/lat/ours"
}
