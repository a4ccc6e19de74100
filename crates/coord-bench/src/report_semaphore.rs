//! The semaphore section of `BENCHMARKS.md`: coord's `Semaphore` (`sem-ours`) against the Go
//! anchor written the way a Go user would on etcd's clientv3 (`sem-go`,
//! bench/go-recipes/semaphore), measured alternately on one etcd by scripts/bench-semaphore.sh.

use std::fmt::Write as _;

use crate::report::{num, ratio, Results};
use crate::stats::BenchResult;

const OURS: &str = "sem-ours";
const GO: &str = "sem-go";

fn ops(r: &BenchResult) -> Option<f64> {
    (r.ops_per_s > 0.0).then_some(r.ops_per_s)
}

fn p50(r: &BenchResult) -> Option<f64> {
    (r.p50_ms > 0.0).then_some(r.p50_ms)
}

fn p99(r: &BenchResult) -> Option<f64> {
    (r.p99_ms > 0.0).then_some(r.p99_ms)
}

/// The scenarios measured (`semaphore_w{W}_p{N}` of `sem-ours`).
fn scenarios(r: &Results) -> Vec<String> {
    let mut names: Vec<String> = r
        .rounds
        .values()
        .filter_map(|imps| imps.get(OURS))
        .flatten()
        .map(|x| x.scenario.clone())
        .filter(|s| s.starts_with("semaphore_w"))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The section, or `None` when the results hold no semaphore run.
pub fn render(r: &Results) -> Option<String> {
    let names = scenarios(r);
    if names.is_empty() {
        return None;
    }
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "## Semaphore: coord against a Go semaphore on clientv3\n"
    );
    let _ = writeln!(
        w,
        "W sessions share a semaphore of N permits, each acquiring 1 permit and releasing it in \
         a loop (latency: the acquire's wait), on the same etcd. Go's etcd package has no \
         semaphore: the anchor (`bench/go-recipes/semaphore`) is the one a Go user writes on \
         clientv3 + concurrency, as Curator's InterProcessSemaphoreV2: a key per acquire on \
         the session's lease, held when it is among the N oldest keys (a read of N keys), \
         else a watch of the prefix for deletes and a read again. Ours and Go alternately, \
         each round; medians over rounds, ratios taken within a round.\n"
    );
    let _ = writeln!(
        w,
        "| scenario | ours ops/s | Go ops/s | ours / Go (ops/s) | ours p50 / p99 ms | Go p50 / p99 ms | violations (ours, Go) |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for s in &names {
        let violations = |imp: &str| {
            r.series(imp, s, |x| match &x.extra {
                serde_json::Value::String(t) => t
                    .strip_prefix("violations=")
                    .and_then(|n| n.parse::<f64>().ok()),
                _ => x.extra_f64("violations"),
            })
            .iter()
            .sum::<f64>()
        };
        let _ = writeln!(
            w,
            "| `{s}` | {} | {} | {} | {} / {} | {} / {} | {}, {} |",
            num(r.med(OURS, s, ops)),
            num(r.med(GO, s, ops)),
            ratio(&r.ratios((OURS, s), (GO, s), ops)),
            num(r.med(OURS, s, p50)),
            num(r.med(OURS, s, p99)),
            num(r.med(GO, s, p50)),
            num(r.med(GO, s, p99)),
            violations(OURS),
            violations(GO),
        );
    }
    let _ = writeln!(w);
    Some(md)
}
