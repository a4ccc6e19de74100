# Sourced by bench.sh: the STM part of the benchmarks (issue 12, recipes).
#
# Concurrent transfers between 10 accounts with BENCH_WORKERS workers (8), BENCH_ITERS
# transfers in all: ours (`coord-bench --scenario stm_transfers`, coord's `stm::run`) and the
# Go anchor (bench/go-recipes/stm: etcd's `concurrency.NewSTM`), both SerializableSnapshot,
# ALTERNATELY on bench.sh's etcd, for BENCH_ROUNDS rounds, into the same results directory as
# the rest (implementations `stm-ours` and `stm-go`). The report's STM section gives the
# transfers/s of each and the ratio, taken within each round.
#
# Needs from bench.sh: repo, out, rounds, iters, workers, ours, ep, measure.

# bench_stm_build: builds the Go anchor into target/go-recipes-stm.
bench_stm_build() {
  (cd "$repo/bench/go-recipes/stm" &&
    GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$repo/target/go-recipes-stm" main.go)
  stm_anchor=$repo/target/go-recipes-stm
}

# bench_stm_run: every round, ours and Go's STM transfers, the order alternating.
bench_stm_run() {
  local round dir
  for round in $(seq 1 "$rounds"); do
    dir=$out/rounds/$round
    mkdir -p "$dir"
    echo "bench.sh: STM round $round/$rounds (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    stm_ours() {
      measure "$round" stm-ours "stm_transfers_w$workers" "$dir/stm-ours.jsonl" \
        "$ours" --endpoints "$ep" --scenario stm_transfers --iters "$iters" --workers "$workers"
    }
    stm_go() {
      measure "$round" stm-go "stm_transfers_w$workers" "$dir/stm-go.jsonl" \
        "$stm_anchor" -endpoints "$ep" -iters "$iters" -workers "$workers" \
        -prefix "/go-stm/r$round/"
    }
    if [ $(( round % 2 )) = 1 ]; then stm_ours; stm_go; else stm_go; stm_ours; fi
  done
}
