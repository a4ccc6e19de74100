#!/usr/bin/env bash
# The recipe benchmarks: coord's Queue and Barrier (coord-bench --scenario queue,barrier)
# against etcd's Go contrib/recipes (bench/go-recipes/queues), ALTERNATELY on one etcd, into the
# results directory as implementations `recipes-ours` and `recipes-go`; coord-bench-report puts
# them in BENCHMARKS.md (crates/coord-bench/src/report_recipes.rs).
#
# Sourced by bench.sh (which calls bench_queues_build, then bench_queues_run in each round), or
# run on its own: builds both, starts one etcd, runs BENCH_ROUNDS (3) rounds into BENCH_OUT
# (bench-results/latest: its other results are kept), and rewrites BENCHMARKS.md.
#
# Scenarios: queue_throughput_p4c4 (BENCH_ITERS elements, 4 producers and 4 consumers, each on
# its own connection; elements/s) and barrier_release_wBENCH_WORKERS (BENCH_ITERS/10 rounds of
# hold, waiters start waiting for 50 ms, release; p50 of release → last waiter through).

# bench_queues_build: builds the Go anchor into target/go-recipes-queues.
bench_queues_build() {
  (cd "$repo/bench/go-recipes/queues" &&
    GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$repo/target/go-recipes-queues" main.go)
  go_queues=$repo/target/go-recipes-queues
}

# bench_queues_run ROUND DIR: ours and Go's recipes, in an order that alternates by round.
bench_queues_run() {
  local round=$1 dir=$2 rounds_b=$(( ${iters:-400} / 10 ))
  queues_ours() {
    measure "$round" recipes-ours queue_throughput_p4c4 "$dir/recipes-ours.jsonl" \
      "$ours" --endpoints "$ep" --scenario queue --iters "$iters"
    measure "$round" recipes-ours "barrier_release_w$workers" "$dir/recipes-ours.jsonl" \
      "$ours" --endpoints "$ep" --scenario barrier --iters "$iters" --workers "$workers"
  }
  queues_go() {
    measure "$round" recipes-go queue_throughput_p4c4 "$dir/recipes-go.jsonl" \
      "$go_queues" -endpoints "$ep" -scenario queue -elements "$iters" \
      -prefix "/go-recipes/r$round"
    measure "$round" recipes-go "barrier_release_w$workers" "$dir/recipes-go.jsonl" \
      "$go_queues" -endpoints "$ep" -scenario barrier -rounds "$rounds_b" -waiters "$workers" \
      -prefix "/go-recipes/r$round"
  }
  if [ $(( round % 2 )) = 1 ]; then queues_ours; queues_go; else queues_go; queues_ours; fi
}

# --- on its own ---------------------------------------------------------------------------------
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  repo=$PWD
  rounds=${BENCH_ROUNDS:-3}
  iters=${BENCH_ITERS:-400}
  workers=${BENCH_WORKERS:-8}
  out=${BENCH_OUT:-bench-results/latest}
  . scripts/etcd-lib.sh
  target_dir=${CARGO_TARGET_DIR:-$repo/target}
  echo "bench-queues.sh: building coord-bench (release) and the Go anchor" >&2
  cargo build --release --locked -p coord-bench --bins
  ours=$target_dir/release/coord-bench
  report=$target_dir/release/coord-bench-report
  mkdir -p "$repo/target"
  bench_queues_build
  start_etcd bench-queues.sh coord-bench-queues
  ep=$etcd_endpoint
  # measure ROUND IMPL SCENARIO OUTFILE CMD...: runs CMD, appends its stdout to OUTFILE.
  measure() {
    local file=$4
    shift 4
    "$@" >>"$file"
  }
  mkdir -p "$out/rounds"
  touch "$out/machine.txt"
  sed -i '/^recipes:/d' "$out/machine.txt"
  echo "recipes: $(date -u '+%Y-%m-%d %H:%M UTC'), scripts/bench-queues.sh on its own, load $(cut -d' ' -f1 /proc/loadavg)" >>"$out/machine.txt"
  for round in $(seq 1 "$rounds"); do
    dir=$out/rounds/$round
    mkdir -p "$dir"
    rm -f "$dir/recipes-ours.jsonl" "$dir/recipes-go.jsonl"
    echo "bench-queues.sh: round $round/$rounds (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    bench_queues_run "$round" "$dir"
  done
  for round in $(seq 1 "$rounds"); do
    cat "$out/rounds/$round/recipes-ours.jsonl" "$out/rounds/$round/recipes-go.jsonl" | sed "s/^/r$round /"
  done
  "$report" --results "$out" --out BENCHMARKS.md --notes bench/notes.md
  echo "bench-queues.sh: BENCHMARKS.md rewritten" >&2
fi
