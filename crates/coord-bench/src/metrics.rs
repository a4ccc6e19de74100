//! What metrics cost: uncontended lock + unlock on a session whose metrics go to a Prometheus
//! recorder, against one with no recorder, alternately in one run.

use coord_core::{Mutex, Session};
use metrics::Histogram;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use serde_json::json;
use tokio::time::Instant;

use crate::scenarios::{Bench, BenchResultOr};
use crate::stats::{median, BenchResult};

/// Pairs of blocks (one with the recorder, one without) the iterations are split into.
const PAIRS: usize = 20;

impl Bench {
    /// `metrics_overhead`: two sessions on the same store, one built (with its mutex) under a
    /// Prometheus recorder, the other with none; blocks of lock + unlock alternate between them
    /// (which goes first alternates too). A primitive's handles are bound when it is built, so
    /// one process measures both. `ratio_median` is the median over pairs of (ns per op with
    /// the recorder) / (ns per op without), each side's ns per op being its block's median
    /// lock + unlock; the recorder's upkeep runs between blocks, as the
    /// exporter's does every few seconds; the recorded acquisitions are checked against the
    /// cycles done.
    pub(crate) async fn metrics_overhead(&self) -> BenchResultOr<BenchResult> {
        let name = "metrics_overhead";
        // As the demos and coordctl export them: `_seconds` histograms as buckets.
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                coord_core::telemetry::SECONDS_BUCKETS,
            )?
            .build_recorder();
        let handle = recorder.handle();
        let (plain_session, _) = self.session(self.ttl).await?;
        let plain = Mutex::new(&plain_session, "metrics-off")?;
        let store = self.store().await?;
        let builder = metrics::with_local_recorder(&recorder, || Session::builder(store));
        let metered_session = builder.with_ttl(self.ttl).build().await?;
        let metered =
            metrics::with_local_recorder(&recorder, || Mutex::new(&metered_session, "metrics-on"))?;

        let block = (self.iters / PAIRS).max(1);
        // Warm-up: connections, caches, the first call's extra work.
        for mutex in [&plain, &metered] {
            for _ in 0..block.min(50) {
                mutex.lock().await?.unlock().await?;
            }
        }
        let warm = block.min(50);
        // Per pair: each side's median lock + unlock (robust to another process taking the
        // core for a while), and its mean.
        let (mut ratios, mut mean_ratios) = (Vec::new(), Vec::new());
        let (mut on_p50, mut off_p50) = (Vec::new(), Vec::new());
        let mut lat = Vec::with_capacity(block * PAIRS);
        let mut samples = Vec::with_capacity(block);
        let start = Instant::now();
        for pair in 0..PAIRS {
            let (mut p50, mut mean) = ([0.0; 2], [0.0; 2]);
            let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let mutex = if side == 1 { &metered } else { &plain };
                samples.clear();
                let t = Instant::now();
                for _ in 0..block {
                    let op = Instant::now();
                    mutex.lock().await?.unlock().await?;
                    samples.push(op.elapsed());
                }
                mean[side] = t.elapsed().as_nanos() as f64 / block as f64;
                let ns: Vec<f64> = samples.iter().map(|d| d.as_nanos() as f64).collect();
                p50[side] = median(&ns).unwrap_or(0.0);
                if side == 1 {
                    lat.extend_from_slice(&samples);
                    handle.run_upkeep();
                }
            }
            off_p50.push(p50[0]);
            on_p50.push(p50[1]);
            ratios.push(p50[1] / p50[0]);
            mean_ratios.push(mean[1] / mean[0]);
        }
        let seconds = start.elapsed().as_secs_f64();
        let floor_ns = recorder_floor(&recorder, &handle, block);
        plain_session.close().await?;
        metered_session.close().await?;

        let expected = (warm + block * PAIRS) as f64;
        let recorded = series(&handle.render(), "coord_acquisitions_total");
        if recorded != Some(expected) {
            return Err(format!(
                "the recorder counted {recorded:?} acquisitions, the run did {expected}"
            )
            .into());
        }
        self.dump(name, &lat)?;
        let ns = |v: &[f64]| median(v).unwrap_or(0.0);
        Ok(
            BenchResult::new(name, (block * PAIRS * 2) as u64, seconds, &lat).with_extra(json!({
                "ratio_median": ns(&ratios),
                "ratio_of_means_median": ns(&mean_ratios),
                "p50_ns_with_recorder": ns(&on_p50),
                "p50_ns_without": ns(&off_p50),
                "recorder_floor_ns_per_cycle": floor_ns,
                "pairs": PAIRS,
                "ops_per_block": block,
                "recorded_acquisitions": expected,
            })),
        )
    }
}

/// What the recorder alone costs for the samples one metered lock + unlock gives it (five
/// histogram samples: the two backend calls, the wait, the queue length, the hold; the
/// acquisitions counter; the held gauge up and down), on handles of the same recorder, with
/// its upkeep between blocks as in the measured loop: ns per cycle, the median over blocks.
/// No instrumentation that records those samples can cost less than this.
fn recorder_floor(recorder: &PrometheusRecorder, handle: &PrometheusHandle, block: usize) -> f64 {
    let (histograms, counter, gauge) = metrics::with_local_recorder(recorder, || {
        let histograms: [Histogram; 5] = std::array::from_fn(
            |i| metrics::histogram!("coord_bench_floor_seconds", "sample" => i.to_string()),
        );
        (
            histograms,
            metrics::counter!("coord_bench_floor_total"),
            metrics::gauge!("coord_bench_floor_held"),
        )
    });
    let mut per_cycle = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let t = std::time::Instant::now();
        for i in 0..block {
            let value = std::hint::black_box(2e-6 + i as f64 * 1e-12);
            counter.increment(1);
            gauge.increment(1.0);
            for h in &histograms {
                h.record(value);
            }
            gauge.decrement(1.0);
        }
        per_cycle.push(t.elapsed().as_nanos() as f64 / block as f64);
        handle.run_upkeep();
    }
    median(&per_cycle).unwrap_or(0.0)
}

/// The value of the first series named `name` in Prometheus text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}
