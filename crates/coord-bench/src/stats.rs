//! Percentiles and the JSON line each scenario prints.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `p`-th quantile (0..=1) of `samples` in milliseconds, as the anchors compute it: sort,
/// then take index `floor((n - 1) * p)`. `0` for no samples.
pub fn pct_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p) as usize;
    v[i].as_secs_f64() * 1000.0
}

/// The same for samples already in milliseconds.
pub fn pct_of(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

/// The median of `values` (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One scenario's result: the anchors' fields, plus `extra` (a string in the anchors' output,
/// an object in ours).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchResult {
    /// Scenario name, as the anchors name it.
    pub scenario: String,
    /// Operations measured (lock+unlock pairs, acquisitions, handoffs, …).
    pub ops: u64,
    /// Wall time of the measured loop, in seconds (`0` where the anchors leave it out).
    #[serde(default)]
    pub seconds: f64,
    /// `ops / seconds` (`0` for latency-only scenarios).
    #[serde(default)]
    pub ops_per_s: f64,
    /// Median latency in milliseconds (what is timed depends on the scenario).
    #[serde(default)]
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    #[serde(default)]
    pub p99_ms: f64,
    /// Anything else: calls per operation, violations, TTLs, memory.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

impl BenchResult {
    /// A result from timed samples: ops = number of samples unless given.
    pub fn new(scenario: impl Into<String>, ops: u64, seconds: f64, lat: &[Duration]) -> Self {
        BenchResult {
            scenario: scenario.into(),
            ops,
            seconds,
            ops_per_s: if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            },
            p50_ms: pct_ms(lat, 0.5),
            p99_ms: pct_ms(lat, 0.99),
            extra: serde_json::Value::Null,
        }
    }

    /// Sets `extra`.
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = extra;
        self
    }

    /// A number from `extra` (an object), if present.
    pub fn extra_f64(&self, key: &str) -> Option<f64> {
        self.extra.get(key).and_then(serde_json::Value::as_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_as_the_anchors() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct_ms(&v, 0.5), 50.0);
        assert_eq!(pct_ms(&v, 0.99), 99.0);
        assert_eq!(pct_ms(&[], 0.5), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn parses_anchor_lines() {
        let go: BenchResult = serde_json::from_str(
            r#"{"scenario":"mutex_contended_w8","ops":400,"seconds":5.1,"ops_per_s":78.4,"p50_ms":99.8,"p99_ms":110.2,"extra":"violations=0"}"#,
        )
        .unwrap();
        assert_eq!(go.extra, serde_json::json!("violations=0"));
        let rs: BenchResult = serde_json::from_str(
            r#"{"scenario":"election_resign_handoff","ops":41,"p50_ms":40.1,"p99_ms":44.0}"#,
        )
        .unwrap();
        assert_eq!((rs.seconds, rs.ops_per_s), (0.0, 0.0));
    }
}
