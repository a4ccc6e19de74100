//! Prometheus metrics for the demos (`--metrics-addr HOST:PORT`), and reading them back over
//! HTTP, as a scraper would, to check them against what the demo did.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Installs a Prometheus recorder for the whole process, serving its text on `addr`. Call it
/// before building sessions: primitives register their metrics when they are built.
pub fn serve(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        // Histograms as buckets, so that quantiles can be aggregated across processes.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            coord::telemetry::SECONDS_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    coord::telemetry::describe();
    Ok(())
}

/// The Prometheus text served at `addr` (an HTTP/1.0 GET).
pub async fn scrape(addr: SocketAddr) -> std::io::Result<Scrape> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(Scrape(body.to_string())),
        _ => Err(std::io::Error::other(format!(
            "unexpected response: {response:.200}"
        ))),
    }
}

/// One scrape's text.
#[derive(Debug)]
pub struct Scrape(pub String);

impl Scrape {
    /// The value of series `name` whose labels include every `label="value"` of `labels`
    /// (0 when there is none: a series appears once it was first touched).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(id, _)| {
                id.split('{').next() == Some(name)
                    && labels
                        .iter()
                        .all(|(k, v)| id.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0.0)
    }
}
