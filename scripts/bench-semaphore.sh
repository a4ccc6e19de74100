#!/usr/bin/env bash
# Sourced by bench.sh: the semaphore part of the benchmarks ("semaphore_w8_p3": BENCH_WORKERS
# sessions share a semaphore of 3 permits, acquiring 1 and releasing it in a loop).
#
# Ours (coord-bench --scenario semaphore) and the Go anchor (bench/go-recipes/semaphore: the
# semaphore a Go user writes on etcd 3.4's clientv3, as Curator's InterProcessSemaphoreV2) run
# ALTERNATELY on bench.sh's etcd, for BENCH_ROUNDS rounds, into the same results directory
# (implementations `sem-ours` and `sem-go`); the report's semaphore section compares them.
#
# Needs from bench.sh: repo, out, rounds, iters, workers, ours, ep, measure.
#
# Run on its own (`scripts/bench-semaphore.sh`), it starts an etcd of its own, builds what it
# needs, runs BENCH_ROUNDS (3) rounds into BENCH_OUT (target/bench-semaphore) and prints the
# report's semaphore section.

# bench_semaphore_build: builds the Go anchor into target/go-semaphore.
bench_semaphore_build() {
  (cd "$repo/bench/go-recipes/semaphore" &&
    GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$repo/target/go-semaphore" main.go)
  sem_anchor=$repo/target/go-semaphore
}

# bench_semaphore_run: every round, ours and Go in alternating order.
bench_semaphore_run() {
  local round dir
  for round in $(seq 1 "$rounds"); do
    dir=$out/rounds/$round
    mkdir -p "$dir"
    echo "bench.sh: semaphore round $round/$rounds (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    sem_ours() {
      measure "$round" sem-ours "semaphore_w${workers}_p3" "$dir/sem-ours.jsonl" \
        "$ours" --endpoints "$ep" --scenario semaphore --iters "$iters" --workers "$workers"
    }
    sem_go() {
      measure "$round" sem-go "semaphore_w${workers}_p3" "$dir/sem-go.jsonl" \
        "$sem_anchor" -endpoints "$ep" -iters "$iters" -workers "$workers" -permits 3 \
        -prefix "/go-semaphore/r$round"
    }
    if [ $(( round % 2 )) = 1 ]; then sem_ours; sem_go; else sem_go; sem_ours; fi
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  repo=$PWD
  rounds=${BENCH_ROUNDS:-3}
  iters=${BENCH_ITERS:-400}
  workers=${BENCH_WORKERS:-8}
  out=${BENCH_OUT:-target/bench-semaphore}
  target=${CARGO_TARGET_DIR:-$repo/target}
  . scripts/etcd-lib.sh
  cargo build --release --locked -p coord-bench --bins
  ours=$target/release/coord-bench
  mkdir -p "$repo/target"
  bench_semaphore_build
  start_etcd bench-semaphore.sh coord-bench-semaphore
  ep=$etcd_endpoint
  rm -rf "$out"
  mkdir -p "$out/rounds"
  echo "etcd: $(etcd --version | head -1 | awk '{print $3}')" >"$out/machine.txt"
  # measure ROUND IMPL SCENARIO OUTFILE CMD...: runs CMD, appending its stdout to OUTFILE.
  measure() {
    local file=$4
    shift 4
    "$@" >>"$file"
  }
  bench_semaphore_run
  "$target/release/coord-bench-report" --results "$out" --out "$out/BENCHMARKS.md"
  sed -n '/^## Semaphore/,/^## /p' "$out/BENCHMARKS.md" | sed '$d'
fi
