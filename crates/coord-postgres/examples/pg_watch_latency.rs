//! Quick probe: time from a put's call until a watch of the same backend yields its event.
//!
//! usage: cargo run --release -p coord-postgres --example pg_watch_latency -- URL [ITERS]
use std::time::{Duration, Instant};

use coord_core::{Backend, KeyRange, PutRequest, WatchRequest};
use coord_postgres::PostgresConfig;
use futures::StreamExt;

#[tokio::main]
async fn main() -> coord_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("usage: pg_watch_latency URL [ITERS]");
    let iters: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(200);
    let store = PostgresConfig::new(url.clone())
        .with_schema("coord_probe")
        .connect()
        .await?;
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("wl/")))
        .await?;
    let mut put_lat = Vec::new();
    let mut event_lat = Vec::new();
    for i in 0..iters {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let s = Instant::now();
        store.put(PutRequest::new("wl/k", format!("{i}"))).await?;
        put_lat.push(s.elapsed().as_secs_f64() * 1e3);
        watch.next().await.unwrap()?;
        event_lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    put_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    event_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "put p50 {:.3} ms, put -> event p50 {:.3} ms p99 {:.3} ms",
        put_lat[iters / 2],
        event_lat[iters / 2],
        event_lat[iters * 99 / 100]
    );
    Ok(())
}
