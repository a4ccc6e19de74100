//! The STM section of `BENCHMARKS.md`: coord's `stm::run` (`stm-ours`) against etcd's Go
//! `concurrency.NewSTM` (`stm-go`, bench/go-recipes/stm), measured alternately on one etcd by
//! scripts/bench-stm.sh.

use std::fmt::Write as _;

use crate::report::{num, ratio, Results};
use crate::stats::BenchResult;

const OURS: &str = "stm-ours";
const GO: &str = "stm-go";

fn ops(r: &BenchResult) -> Option<f64> {
    (r.ops_per_s > 0.0).then_some(r.ops_per_s)
}

fn p50(r: &BenchResult) -> Option<f64> {
    (r.p50_ms > 0.0).then_some(r.p50_ms)
}

fn p99(r: &BenchResult) -> Option<f64> {
    (r.p99_ms > 0.0).then_some(r.p99_ms)
}

/// A number of `extra`: a field of ours (an object) or a `key=value` word of the Go anchor's
/// string.
fn extra(r: &BenchResult, key: &str) -> Option<f64> {
    if let Some(v) = r.extra_f64(key) {
        return Some(v);
    }
    r.extra
        .as_str()?
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// The worker counts measured (`stm_transfers_wN` of `stm-ours`).
fn sizes(r: &Results) -> Vec<usize> {
    let mut sizes: Vec<usize> = r
        .rounds
        .values()
        .filter_map(|imps| imps.get(OURS))
        .flatten()
        .filter_map(|x| x.scenario.strip_prefix("stm_transfers_w")?.parse().ok())
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The section, or `None` when the results hold no STM run.
pub fn render(r: &Results) -> Option<String> {
    let sizes = sizes(r);
    if sizes.is_empty() {
        return None;
    }
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "## STM: coord's `stm::run` against Go's `concurrency.NewSTM`\n"
    );
    let _ = writeln!(
        w,
        "Concurrent transfers between 10 accounts on the main run's etcd: each moves 1 from a \
         random account to another (reads both, writes both), `SerializableSnapshot`, every \
         worker on its own connection; ours (`coord-bench --scenario stm_transfers`) and Go's \
         (`bench/go-recipes/stm`) alternately each round. Latency is one transfer, retries \
         included. Medians over rounds; ratios taken within a round.\n"
    );
    let _ = writeln!(
        w,
        "| workers | ours transfers/s | Go transfers/s | ours / Go | p50 ms ours / Go | p99 ms ours / Go | attempts per transfer ours / Go | sum kept |\n|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for n in sizes {
        let s = format!("stm_transfers_w{n}");
        let violations: f64 = [OURS, GO]
            .iter()
            .flat_map(|imp| r.series(imp, &s, |x| extra(x, "sum_violations")))
            .sum();
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} |",
            num(r.med(OURS, &s, ops)),
            num(r.med(GO, &s, ops)),
            ratio(&r.ratios((OURS, &s), (GO, &s), ops)),
            num(r.med(OURS, &s, p50)),
            num(r.med(GO, &s, p50)),
            num(r.med(OURS, &s, p99)),
            num(r.med(GO, &s, p99)),
            num(r.med(OURS, &s, |x| extra(x, "attempts_per_transfer"))),
            num(r.med(GO, &s, |x| extra(x, "attempts_per_transfer"))),
            if violations == 0.0 { "yes" } else { "**NO**" },
        );
    }
    let _ = writeln!(w);
    Some(md)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn result(ops_per_s: f64, extra: serde_json::Value) -> BenchResult {
        let lat = vec![Duration::from_millis(10); 3];
        BenchResult::new("stm_transfers_w8", ops_per_s as u64, 1.0, &lat).with_extra(extra)
    }

    #[test]
    fn section_has_the_ratio_and_reads_both_extras() {
        let mut r = Results::default();
        for (round, (ours, go)) in [(1, (500.0, 400.0)), (2, (450.0, 500.0))] {
            let mut by_impl = BTreeMap::new();
            by_impl.insert(
                OURS.to_string(),
                vec![result(
                    ours,
                    serde_json::json!({"attempts_per_transfer": 2.5, "sum_violations": 0}),
                )],
            );
            by_impl.insert(
                GO.to_string(),
                vec![result(
                    go,
                    "attempts_per_transfer=2.25 sum_violations=0 accounts=10".into(),
                )],
            );
            r.rounds.insert(round, by_impl);
        }
        let md = render(&r).expect("a section");
        // Ratios 1.25 and 0.9: median 1.075.
        assert!(
            md.contains("| 8 | 475 | 450 | 1.07x (0.900–1.25) |"),
            "{md}"
        );
        assert!(md.contains("| 2.50 / 2.25 | yes |"), "{md}");
        assert!(render(&Results::default()).is_none());
    }
}
