#!/usr/bin/env bash
# What metrics cost: coord-bench's metrics_overhead (uncontended lock + unlock on a session whose
# metrics go to a Prometheus recorder, against one with none, in alternating blocks within one
# process) on coord-mem and on etcd, BENCH_ROUNDS rounds, into the results directory as the
# implementations `metrics-mem` and `metrics-etcd`; the report's "Cost of metrics" section reads
# them.
#
# Sourced by bench.sh (needs: out, rounds, uncontended_iters, ours, ep, measure). Run on its own
# (`scripts/bench-metrics.sh`), it builds coord-bench, starts its own etcd, adds its results to
# BENCH_OUT (bench-results/latest) and rewrites BENCHMARKS.md from them.

metrics_mem_iters=${BENCH_METRICS_MEM_ITERS:-200000}

# bench_metrics_run: every round, coord-mem then etcd.
bench_metrics_run() {
  local round dir
  for round in $(seq 1 "$rounds"); do
    dir=$out/rounds/$round
    mkdir -p "$dir"
    echo "bench.sh: metrics round $round/$rounds (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    rm -f "$dir/metrics-mem.jsonl" "$dir/metrics-etcd.jsonl"
    measure "$round" metrics-mem metrics_overhead "$dir/metrics-mem.jsonl" \
      "$ours" --backend mem --scenario metrics --iters "$metrics_mem_iters"
    measure "$round" metrics-etcd metrics_overhead "$dir/metrics-etcd.jsonl" \
      "$ours" --endpoints "$ep" --scenario metrics --iters "$uncontended_iters"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  repo=$PWD
  rounds=${BENCH_ROUNDS:-5}
  uncontended_iters=${BENCH_UNCONTENDED_ITERS:-$((${BENCH_ITERS:-400} * 5))}
  out=${BENCH_OUT:-bench-results/latest}
  . scripts/etcd-lib.sh
  install_packages bench-metrics.sh $(missing_etcd_packages)
  cargo build --release --locked -p coord-bench --bins
  ours=$repo/target/release/coord-bench
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then ours=$CARGO_TARGET_DIR/release/coord-bench; fi
  report=$(dirname "$ours")/coord-bench-report
  start_etcd bench-metrics.sh coord-bench-metrics
  ep=$etcd_endpoint
  # Runs CMD, appending its stdout to OUTFILE (bench.sh's `measure` also records CPU times).
  measure() {
    local file=$4
    shift 4
    "$@" >>"$file"
  }
  mkdir -p "$out/rounds"
  bench_metrics_run
  "$report" --results "$out" --out BENCHMARKS.md --notes bench/notes.md
  echo "bench-metrics.sh: results in $out; BENCHMARKS.md rewritten" >&2
fi
