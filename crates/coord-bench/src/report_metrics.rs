//! The "Cost of metrics" section of `BENCHMARKS.md`: uncontended lock + unlock with a
//! Prometheus recorder against none (`metrics_overhead`, by scripts/bench-metrics.sh).

use std::fmt::Write as _;

use crate::report::{num, ratio, Results};
use crate::stats::BenchResult;

const SCENARIO: &str = "metrics_overhead";
/// The most the recorder may cost (issue 13).
const TARGET: f64 = 1.03;

fn extra(key: &'static str) -> impl Fn(&BenchResult) -> Option<f64> {
    move |r| r.extra_f64(key)
}

/// The section, or `None` when the results hold no `metrics_overhead` run.
pub fn render(r: &Results) -> Option<String> {
    let stores = [
        ("metrics-mem", "coord-mem"),
        ("metrics-etcd", "etcd"),
        ("metrics-postgres", "PostgreSQL"),
    ];
    if stores
        .iter()
        .all(|(imp, _)| r.series(imp, SCENARIO, extra("ratio_median")).is_empty())
    {
        return None;
    }
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "## Cost of metrics\n");
    let _ = writeln!(
        w,
        "Uncontended lock + unlock on a session whose metrics go to a Prometheus recorder \
         (`metrics-exporter-prometheus`, upkeep between blocks) against one with no recorder, \
         in one process: {} pairs of blocks per round, alternating which goes first \
         (`coord-bench --scenario metrics`). Ratio: per round, the median over pairs of \
         (block median with the recorder) / (block median without); median over rounds \
         (range). Each run checks that the recorder counted every acquisition. \
         \"Recorder alone\" is what the recorder costs for one cycle's samples (five histogram \
         samples, a counter, a gauge up and down) on handles of its own, timed in the same \
         process; \"lowest possible\" is 1 + that / p50 without: no instrumentation that \
         records these samples into this recorder can cost less.\n",
        stores
            .iter()
            .find_map(|(imp, _)| r.med(imp, SCENARIO, extra("pairs")))
            .map_or("–".to_string(), |p| num(Some(p)))
    );
    let _ = writeln!(
        w,
        "| store | p50 without (µs) | p50 with recorder (µs) | with / without | recorder alone (µs per cycle) | lowest possible | target |\n\
         |---|---:|---:|---:|---:|---:|---|"
    );
    for (imp, store) in stores {
        let ratios = r.series(imp, SCENARIO, extra("ratio_median"));
        if ratios.is_empty() {
            continue;
        }
        let us = |key| r.med(imp, SCENARIO, extra(key)).map(|ns| ns / 1000.0);
        let verdict = match crate::stats::median(&ratios) {
            Some(m) if m <= TARGET => "met",
            Some(_) => "**not met**",
            None => "–",
        };
        let floor = us("recorder_floor_ns_per_cycle");
        let lowest = floor
            .zip(us("p50_ns_without"))
            .map(|(f, without)| format!("{}x", num(Some(1.0 + f / without))));
        let _ = writeln!(
            w,
            "| {store} | {} | {} | {} | {} | {} | ≤ {TARGET}x: {verdict} |",
            num(us("p50_ns_without")),
            num(us("p50_ns_with_recorder")),
            ratio(&ratios),
            num(floor),
            lowest.unwrap_or_else(|| "–".into()),
        );
    }
    let _ = writeln!(w);
    Some(md)
}
