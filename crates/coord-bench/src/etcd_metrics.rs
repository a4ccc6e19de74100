//! What etcd itself reports on `/metrics` (Prometheus text on its client URL): its CPU time, its
//! watchers and watch streams, its open gRPC streams. The scale scenarios quote these beside our
//! own counts, so "what it costs etcd" is etcd's figure, not ours.
//!
//! One plain HTTP/1.0 GET over a `TcpStream`: a benchmark that reads a few counters from a
//! loopback etcd needs no HTTP client crate (and its TLS stack) for it.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scenarios::BenchResultOr;

/// The counters of one scrape that the scale scenarios use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EtcdFigures {
    /// `process_cpu_seconds_total`: etcd's CPU time (user + system) so far.
    pub cpu_seconds: f64,
    /// `etcd_debugging_mvcc_watcher_total`: watchers open now.
    pub watchers: f64,
    /// `etcd_debugging_mvcc_watch_stream_total`: watch streams open now.
    pub watch_streams: f64,
    /// gRPC streams open now (bidirectional streams started minus handled): watch streams,
    /// lease keep-alive streams.
    pub grpc_streams: f64,
    /// `grpc_server_msg_received_total` of `LeaseKeepAlive`: keep-alive requests so far.
    pub keep_alives: f64,
}

/// Scrapes `http://<endpoint>/metrics` (an endpoint as given to `--endpoints`, `host:port` or
/// `http://host:port`).
pub async fn scrape(endpoint: &str) -> BenchResultOr<EtcdFigures> {
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = TcpStream::connect(&host).await?;
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await?;
    Ok(parse(&body))
}

/// Reads the figures out of Prometheus text.
pub fn parse(text: &str) -> EtcdFigures {
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    let mut figures = EtcdFigures::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        match metric {
            "process_cpu_seconds_total" => figures.cpu_seconds = value,
            "etcd_debugging_mvcc_watcher_total" => figures.watchers = value,
            "etcd_debugging_mvcc_watch_stream_total" => figures.watch_streams = value,
            "grpc_server_started_total" | "grpc_server_handled_total"
                if labels.contains("grpc_type=\"bidi_stream\"") =>
            {
                *sums.entry(metric).or_default() += value;
            }
            "grpc_server_msg_received_total"
                if labels.contains("grpc_method=\"LeaseKeepAlive\"") =>
            {
                figures.keep_alives += value;
            }
            _ => {}
        }
    }
    figures.grpc_streams = sums.get("grpc_server_started_total").unwrap_or(&0.0)
        - sums.get("grpc_server_handled_total").unwrap_or(&0.0);
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters_it_needs() {
        let text = "\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
process_cpu_seconds_total 12.5
etcd_debugging_mvcc_watcher_total 3
etcd_debugging_mvcc_watch_stream_total 2
grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 5
grpc_server_started_total{grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"} 4
grpc_server_started_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 100
grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 3
grpc_server_handled_total{grpc_code=\"Canceled\",grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"} 1
grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"} 42
";
        let f = parse(text);
        assert_eq!(f.cpu_seconds, 12.5);
        assert_eq!(f.watchers, 3.0);
        assert_eq!(f.watch_streams, 2.0);
        assert_eq!(f.grpc_streams, 5.0); // (5 + 4) started − (3 + 1) handled
        assert_eq!(f.keep_alives, 42.0);
    }
}
