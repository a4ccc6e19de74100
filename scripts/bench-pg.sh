# Sourced by bench.sh: the PostgreSQL part of the benchmarks.
#
# Ours (coord-bench --postgres-url) and the anchor a Postgres user picks today (session-level
# advisory locks: ../shared/anchors/pg-advisory-lock) run ALTERNATELY on one throwaway
# PostgreSQL (fsync on), for BENCH_ROUNDS rounds, into the same results directory as the etcd
# part (implementations `pg-ours` and `pg-advisory`); then the server's single-writer commit
# rate (`pg_commit_rate`, each round) and, once, the table sizes over BENCH_PG_CYCLES lock
# cycles (`pg_bounded`, 100,000 by default: several minutes), sampled after each fifth of
# them once the compactor has caught up.
#
# Needs from bench.sh: repo, out, rounds, iters, uncontended_iters, workers, shared, ours,
# measure.

pg_cycles=${BENCH_PG_CYCLES:-100000}

# bench_pg_build: builds the anchor into target/anchors (shared/ is only read).
bench_pg_build() {
  rm -rf target/anchors/src/pg-advisory-lock
  cp -r "$shared/anchors/pg-advisory-lock" target/anchors/src/
  chmod -R u+w target/anchors/src/pg-advisory-lock
  CARGO_TARGET_DIR=$repo/target/anchors cargo build --release --quiet \
    --manifest-path target/anchors/src/pg-advisory-lock/Cargo.toml
  pg_anchor=$repo/target/anchors/release/pg-advisory-lock
}

# bench_pg_run: starts PostgreSQL and runs every round (see the header).
bench_pg_run() {
  start_postgres bench.sh coord-bench
  local url=$postgres_url
  {
    echo "postgresql: $("$(postgres_bin_dir)/postgres" --version | awk '{print $3}') (fsync on, data dir on $(df -T "$postgres_dir" | awk 'NR==2 {print $2}'))"
  } >>"$out/machine.txt"
  local round dir n
  for round in $(seq 1 "$rounds"); do
    dir=$out/rounds/$round
    mkdir -p "$dir"
    echo "bench.sh: PostgreSQL round $round/$rounds (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    pg_ours() {
      measure "$round" pg-ours mutex_uncontended_lock_unlock "$dir/pg-ours.jsonl" \
        "$ours" --postgres-url "$url" --scenario uncontended --iters "$uncontended_iters"
      for w in "$workers" 128; do
        n=$(( iters > 10 * w ? iters : 10 * w ))
        measure "$round" pg-ours "mutex_contended_w$w" "$dir/pg-ours.jsonl" \
          "$ours" --postgres-url "$url" --scenario contended --iters "$n" --workers "$w"
      done
      measure "$round" pg-ours mutex_handoff "$dir/pg-ours.jsonl" \
        "$ours" --postgres-url "$url" --scenario handoff,failover --iters "$iters"
    }
    pg_anchor_run() {
      measure "$round" pg-advisory all "$dir/pg-advisory.jsonl" \
        "$pg_anchor" "$url" "$uncontended_iters" "$workers" uncontended
      for w in "$workers" 128; do
        n=$(( iters > 10 * w ? iters : 10 * w ))
        measure "$round" pg-advisory "mutex_contended_w$w" "$dir/pg-advisory.jsonl" \
          "$pg_anchor" "$url" "$n" "$w" contended
      done
      measure "$round" pg-advisory mutex_handoff "$dir/pg-advisory.jsonl" \
        "$pg_anchor" "$url" "$iters" 1 handoff
    }
    if [ $(( round % 2 )) = 1 ]; then pg_ours; pg_anchor_run; else pg_anchor_run; pg_ours; fi
    measure "$round" pg-ours pg_commit_rate "$dir/pg-ours.jsonl" \
      "$ours" --postgres-url "$url" --scenario pg_commit_rate --iters "$uncontended_iters"
    # What metrics cost on PostgreSQL (the "Cost of metrics" section, beside coord-mem and etcd).
    rm -f "$dir/metrics-postgres.jsonl"
    measure "$round" metrics-postgres metrics_overhead "$dir/metrics-postgres.jsonl" \
      "$ours" --postgres-url "$url" --scenario metrics --iters "$uncontended_iters"
  done
  echo "bench.sh: PostgreSQL: $pg_cycles lock cycles for the table sizes" >&2
  measure 1 pg-ours pg_bounded "$out/rounds/1/pg-ours.jsonl" \
    "$ours" --postgres-url "$url" --scenario pg_bounded --memory-cycles "$pg_cycles" --workers 6
  stop_postgres
}
