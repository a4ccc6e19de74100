#!/usr/bin/env bash
# Runs coord's benchmarks against the anchors on one etcd and rewrites BENCHMARKS.md.
#
# What it does:
#  1. installs what is missing (Debian: etcd-server, etcd-client, protobuf-compiler, golang-go,
#     golang-etcd-server-dev — the Go anchor builds against Debian's packaged etcd 3.4 sources);
#  2. starts ONE etcd on a free 127.0.0.1 port with a temporary data dir (stopped by pid at exit);
#  3. builds the anchors from ../shared/anchors into target/anchors (shared/ is only read: the
#     Rust anchor is copied to target/anchors/src first, so its Cargo.lock is written there),
#     bench/go-latency (our Go program that dumps Go's raw latencies) into target/go-latency,
#     and coord-bench with the release profile;
#  4. runs, for BENCH_ROUNDS rounds, ours, the Go anchor and the etcd-client anchor ALTERNATELY
#     (the order rotates each round) on that etcd, then go-latency, the mutex_contended sweep
#     (BENCH_SWEEP: 2, 32, 64, 128 and 256 sessions; 8 is in the main runs) for ours and Go,
#     with its floor (mutex_write_floor_wN, at 8 sessions too), and coord-mem's scenarios;
#     each scenario runs as its own process, and the CPU time of etcd (/proc/<pid>/stat) and of
#     the process (`times`) over it goes to cpu.tsv;
#     then (scripts/bench-scale.sh) 1,000 idle sessions, ours and Go's, and an election with
#     1,000 candidates, and the recipes against Go's contrib/recipes (scripts/bench-queues.sh);
#  4a. then the semaphore, ours and a Go semaphore on clientv3 alternately
#      (scripts/bench-semaphore.sh);
#  4b. then metrics_overhead (a Prometheus recorder against none) on coord-mem and that etcd
#      (scripts/bench-metrics.sh);
#  4c. then, on the same etcd, STM transfers: ours and Go's concurrency.NewSTM alternately
#      (scripts/bench-stm.sh);
#  4d. then, on one PostgreSQL, ours and the advisory-lock anchor alternately (scripts/bench-pg.sh);
#  5. writes the raw results to bench-results/latest/ (committed, so BENCHMARKS.md can be
#     checked) and runs coord-bench-report, which rewrites BENCHMARKS.md and the plot.
#
# Settings (environment): BENCH_ROUNDS (5), BENCH_ITERS (400), BENCH_UNCONTENDED_ITERS (5 x
# BENCH_ITERS), BENCH_WORKERS (8),
# BENCH_OUT (bench-results/latest), SHARED_DIR (../shared, relative to the repo).
# Timings on a shared 2-core machine are noisy: run it when `uptime` shows a low load; the
# report gives ratios taken within each round.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

rounds=${BENCH_ROUNDS:-5}
iters=${BENCH_ITERS:-400}
# A lock + unlock takes well under a millisecond: more of them, so each run lasts a second or
# so and one hiccup of the machine does not decide the ratio (ours and Go alike).
uncontended_iters=${BENCH_UNCONTENDED_ITERS:-$((iters * 5))}
workers=${BENCH_WORKERS:-8}
# Contenders of the mutex_contended sweep, besides BENCH_WORKERS (in the main runs).
sweep=${BENCH_SWEEP:-2 32 64 128 256}
out=${BENCH_OUT:-bench-results/latest}
shared=${SHARED_DIR:-../shared}
shared=$(cd "$shared" && pwd)

# --- 1. install what is missing ------------------------------------------------------------
. scripts/etcd-lib.sh
. scripts/pg-lib.sh
. scripts/bench-pg.sh
. scripts/bench-scale.sh
. scripts/bench-semaphore.sh
. scripts/bench-metrics.sh
. scripts/bench-stm.sh
. scripts/bench-queues.sh
missing=($(missing_etcd_packages) $(missing_go_packages) $(missing_postgres_packages))
install_packages bench.sh "${missing[@]}"

# --- 3. build (before etcd starts, so compiling does not share the CPUs with it) -------------
echo "bench.sh: building coord-bench (release)" >&2
cargo build --release --locked -p coord-bench --bins
echo "bench.sh: building the anchors" >&2
mkdir -p target/anchors/src
rm -rf target/anchors/src/rust-etcd-client-lock
cp -r "$shared/anchors/rust-etcd-client-lock" target/anchors/src/
chmod -R u+w target/anchors/src/rust-etcd-client-lock
CARGO_TARGET_DIR=$repo/target/anchors cargo build --release --quiet \
  --manifest-path target/anchors/src/rust-etcd-client-lock/Cargo.toml
"$shared/anchors/go-etcd-bench/build.sh" "$repo/target/anchors/go-etcd-bench"
(cd bench/go-latency && GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$repo/target/go-latency" main.go)
bench_pg_build
bench_scale_build
bench_semaphore_build
bench_stm_build
bench_queues_build

ours=$repo/target/release/coord-bench
report=$repo/target/release/coord-bench-report
go_anchor=$repo/target/anchors/go-etcd-bench
rs_anchor=$repo/target/anchors/release/rust-etcd-client-lock
go_latency=$repo/target/go-latency

# --- 2. one etcd ------------------------------------------------------------------------------
start_etcd bench.sh coord-bench
data_dir=$etcd_data_dir
ep=$etcd_endpoint

# --- results directory and machine description -------------------------------------------------
rm -rf "$out"
mkdir -p "$out/rounds"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cores: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "etcd: $(etcd --version | head -1 | awk '{print $3}') (one member, data dir on $(df -T "$data_dir" | awk 'NR==2 {print $2}'))"
  echo "go: $(go version | awk '{print $3}')"
  echo "rustc: $(rustc --version | awk '{print $2}')"
  # (The results this run rewrites do not count as changes.)
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git status --porcelain --untracked-files=no -- . ':!bench-results' ':!BENCHMARKS.md' 2>/dev/null)" ] && echo ' (with uncommitted changes)')"
  echo "rounds: $rounds (iters $iters, uncontended $uncontended_iters, workers $workers)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
printf 'round\timpl\tscenario\twall_s\tetcd_cpu_s\tclient_cpu_s\n' >"$out/cpu.tsv"
: >"$out/commands.txt"

clk=$(getconf CLK_TCK)
etcd_ticks() { awk '{print $14 + $15}' "/proc/$etcd_pid/stat"; }
# CPU seconds of this shell's finished children (the second line of `times`, user + sys).
# `times` must run in this shell, not in a $(…) subshell (whose children are not ours).
children_cpu() {
  tail -n1 "$data_dir/times" | awk '{
    s = 0
    for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] }
    print s }'
}
# measure ROUND IMPL SCENARIO OUTFILE CMD...: runs CMD, appends its stdout to OUTFILE, and its
# wall time and the CPU time of etcd and of CMD to cpu.tsv.
measure() {
  local round=$1 impl=$2 scenario=$3 file=$4
  shift 4
  [ "$round" = 1 ] && echo "$*" | sed "s#$repo/##g" >>"$out/commands.txt"
  local t0 e0 c0 t1 e1 c1
  times >"$data_dir/times"
  t0=$(date +%s.%N); e0=$(etcd_ticks); c0=$(children_cpu)
  "$@" >>"$file"
  t1=$(date +%s.%N); e1=$(etcd_ticks)
  times >"$data_dir/times"
  c1=$(children_cpu)
  awk -v r="$round" -v i="$impl" -v s="$scenario" -v t0="$t0" -v t1="$t1" -v e0="$e0" -v e1="$e1" \
    -v c0="$c0" -v c1="$c1" -v clk="$clk" \
    'BEGIN { printf "%s\t%s\t%s\t%.3f\t%.3f\t%.3f\n", r, i, s, t1 - t0, (e1 - e0) / clk, c1 - c0 }' \
    >>"$out/cpu.tsv"
}

# The anchors' scenario names, by the Go anchor's short names.
full_name() {
  case $1 in
    uncontended) echo mutex_uncontended_lock_unlock ;;
    contended) echo "mutex_contended_w$2" ;;
    rwlock) echo "rwmutex_mixed_w$2" ;;
    handoff) echo mutex_handoff ;;
    failover) echo election_resign_handoff ;;
  esac
}

run_ours() { # ROUND DIR
  local s
  for s in uncontended contended rwlock handoff failover crash floor rtt; do
    local name
    case $s in
      crash) name=election_crash_failover ;;
      floor) name=watch_floor ;;
      rtt) name=round_trips ;;
      *) name=$(full_name "$s" "$workers") ;;
    esac
    local n=$iters
    [ "$s" = uncontended ] && n=$uncontended_iters
    measure "$1" ours "$name" "$2/ours.jsonl" \
      "$ours" --endpoints "$ep" --scenario "$s" --iters "$n" --workers "$workers" \
      --dump-latencies "$2/lat/ours"
  done
}
run_go() { # ROUND DIR
  local s
  for s in uncontended contended rwlock handoff failover; do
    local n=$iters
    [ "$s" = uncontended ] && n=$uncontended_iters
    measure "$1" go "$(full_name "$s" "$workers")" "$2/go.jsonl" \
      "$go_anchor" -endpoints "$ep" -iters "$n" -workers "$workers" -scenario "$s" \
      -prefix "/anchor-bench/r$1"
  done
}
run_rs() { # ROUND DIR
  measure "$1" etcd-client all "$2/etcd-client.jsonl" "$rs_anchor" "$ep" "$iters" "$workers"
}

for round in $(seq 1 "$rounds"); do
  dir=$out/rounds/$round
  mkdir -p "$dir"
  order=(ours go rs)
  shift_by=$(( (round - 1) % 3 ))
  order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
  echo "bench.sh: round $round/$rounds: ${order[*]} (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for impl in "${order[@]}"; do
    "run_$impl" "$round" "$dir"
  done
  # Go's raw latencies, for the plot.
  measure "$round" go-latency all "$dir/go-latency.jsonl" \
    "$go_latency" -endpoints "$ep" -iters "$iters" -workers "$workers" -dump "$dir/lat/go" \
    -prefix "/go-latency/r$round"
  # Scaling with contenders (8 is measured above), ours and Go alternately: at least
  # BENCH_ITERS acquisitions in all and 10 per session (as issue 11 measured them).
  # The floor of the sweep (issue 11): the two writes of each acquisition alone, the turn passed
  # in-process (`mutex_write_floor_wN`); at 8 sessions too.
  sweep_floor() {
    measure "$round" floor "mutex_write_floor_w$w" "$dir/floor.jsonl" \
      "$ours" --endpoints "$ep" --scenario mutex_write_floor --iters "$n" --workers "$w"
  }
  w=$workers n=$(( iters > 10 * workers ? iters : 10 * workers )) sweep_floor
  for w in $sweep; do
    n=$(( iters > 10 * w ? iters : 10 * w ))
    sweep_ours() {
      measure "$round" ours "mutex_contended_w$w" "$dir/ours.jsonl" \
        "$ours" --endpoints "$ep" --scenario contended --iters "$n" --workers "$w"
    }
    sweep_go() {
      measure "$round" go "mutex_contended_w$w" "$dir/go.jsonl" \
        "$go_anchor" -endpoints "$ep" -iters "$n" -workers "$w" -scenario contended \
        -prefix "/anchor-bench/r$round-w$w"
    }
    case $(( (round + w) % 3 )) in
      0) sweep_ours; sweep_go; sweep_floor ;;
      1) sweep_go; sweep_floor; sweep_ours ;;
      *) sweep_floor; sweep_ours; sweep_go ;;
    esac
  done
  # 1,000 idle sessions (ours and Go's) and an election with 1,000 candidates.
  bench_scale_round "$round" "$dir"
  # coord-mem, on one core (current-thread runtime), with more iterations.
  measure "$round" mem mutex_uncontended_lock_unlock "$dir/mem.jsonl" \
    "$ours" --backend mem --scenario uncontended --iters 200000
  measure "$round" mem mutex_contended_w8 "$dir/mem.jsonl" \
    "$ours" --backend mem --scenario contended --iters 40000 --workers 8
  measure "$round" mem rwmutex_mixed_w8 "$dir/mem.jsonl" \
    "$ours" --backend mem --scenario rwlock --iters 40000 --workers 8
  measure "$round" mem handoffs "$dir/mem.jsonl" \
    "$ours" --backend mem --scenario handoff,failover,floor,crash --iters "$iters"
  measure "$round" mem mem_calls_per_release_w1000 "$dir/mem.jsonl" \
    "$ours" --backend mem --scenario mem_calls_per_release_w1000
  measure "$round" mem mem_calls_per_release_w10000 "$dir/mem.jsonl" \
    "$ours" --backend mem --scenario mem_calls_per_release_w10000
  measure "$round" mem mem_memory_cycles "$dir/mem.jsonl" \
    "$ours" --backend mem --scenario mem_memory_cycles
  # Recipes: ours and Go's contrib/recipes, alternately (scripts/bench-queues.sh).
  bench_queues_run "$round" "$dir"
done
# --- 4a. the semaphore, ours and the Go anchor (scripts/bench-semaphore.sh) ----------------------
bench_semaphore_run
# --- 4b. what metrics cost, on coord-mem and on this etcd (scripts/bench-metrics.sh) -------------
bench_metrics_run
# --- 4c. STM transfers: ours and Go's concurrency.NewSTM, on the same etcd ---------------------
bench_stm_run
# --- 4d. PostgreSQL: ours and advisory locks, on one PostgreSQL (etcd stays idle) ---------------
bench_pg_run
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"

# --- 5. the report -------------------------------------------------------------------------------
"$report" --results "$out" --out BENCHMARKS.md --notes bench/notes.md
echo "bench.sh: raw results in $out; BENCHMARKS.md rewritten" >&2
