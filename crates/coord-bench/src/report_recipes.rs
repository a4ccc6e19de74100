//! The recipes section of `BENCHMARKS.md`: coord's Queue and Barrier (`recipes-ours`) against
//! etcd's Go `contrib/recipes` (`recipes-go`, `bench/go-recipes/queues`), measured alternately
//! on one etcd by scripts/bench-queues.sh.

use std::fmt::Write as _;

use crate::report::{num, ratio, Results};
use crate::stats::BenchResult;

const OURS: &str = "recipes-ours";
const GO: &str = "recipes-go";
const QUEUE: &str = "queue_throughput_p4c4";

fn p50(r: &BenchResult) -> Option<f64> {
    (r.p50_ms > 0.0).then_some(r.p50_ms)
}

fn ops(r: &BenchResult) -> Option<f64> {
    (r.ops_per_s > 0.0).then_some(r.ops_per_s)
}

/// The `barrier_release_wN` scenario measured, from the results.
fn barrier_scenario(r: &Results) -> Option<String> {
    r.rounds
        .values()
        .filter_map(|imps| imps.get(OURS))
        .flatten()
        .map(|x| x.scenario.clone())
        .find(|s| s.starts_with("barrier_release_w"))
}

/// The section, or `None` when the results hold no recipe run.
pub fn render(r: &Results) -> Option<String> {
    let rounds = r.series(OURS, QUEUE, ops).len();
    if rounds == 0 {
        return None;
    }
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "## Recipes: coord against etcd's Go `contrib/recipes`\n");
    let when = r
        .machine("recipes")
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let _ = writeln!(
        w,
        "One etcd; ours (`coord-bench --scenario queue,barrier`) and Go's recipes \
         (`bench/go-recipes/queues`) alternately, {rounds} round(s){when}, each participant on \
         its own connection; medians over rounds, ratios taken within a round \
         (`scripts/bench-queues.sh`).\n"
    );
    let _ = writeln!(
        w,
        "| scenario | ours | Go recipes | ours / Go |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        w,
        "| queue, 4 producers and 4 consumers, elements/s | {} | {} | {} |",
        num(r.med(OURS, QUEUE, ops)),
        num(r.med(GO, QUEUE, ops)),
        ratio(&r.ratios((OURS, QUEUE), (GO, QUEUE), ops)),
    );
    let _ = writeln!(
        w,
        "| queue, one dequeue, p50 ms | {} | {} | {} |",
        num(r.med(OURS, QUEUE, p50)),
        num(r.med(GO, QUEUE, p50)),
        ratio(&r.ratios((OURS, QUEUE), (GO, QUEUE), p50)),
    );
    if let Some(b) = barrier_scenario(r) {
        let waiters = b.trim_start_matches("barrier_release_w");
        let _ = writeln!(
            w,
            "| barrier release → all {waiters} waiters through, p50 ms | {} | {} | {} |",
            num(r.med(OURS, &b, p50)),
            num(r.med(GO, &b, p50)),
            ratio(&r.ratios((OURS, &b), (GO, &b), p50)),
        );
    }
    let lost = r.series(OURS, QUEUE, |x| {
        Some(x.extra_f64("lost").unwrap_or(0.0) + x.extra_f64("duplicates").unwrap_or(0.0))
    });
    let _ = writeln!(
        w,
        "\nElements lost or delivered twice in our runs: {}. Go's barrier waiters watch from the \
         revision they read, which etcd serves from its 100 ms catch-up loop while the watch \
         is young; ours register their watch from now and read after it.\n",
        num(Some(lost.iter().sum()))
    );
    Some(md)
}
