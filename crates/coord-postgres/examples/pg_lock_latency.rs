//! Quick latency probe (not the benchmark): p50/p99 of an uncontended lock + unlock through
//! `coord_core::Mutex`, and of a handoff (A holds, B waits, A unlocks after 50 ms idle: time
//! from A's unlock call until B holds), on the PostgreSQL at URL, in schema `coord_probe`.
//!
//! usage: cargo run --release -p coord-postgres --example pg_lock_latency -- URL [ITERS]
use std::time::{Duration, Instant};

use coord_core::{Mutex, Session};
use coord_postgres::PostgresConfig;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> coord_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("usage: pg_lock_latency URL [ITERS]");
    let iters: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(2000);
    let store = PostgresConfig::new(url.clone())
        .with_schema("coord_probe")
        .connect()
        .await?;
    let session = Session::new(store.clone(), 30).await?;
    let mutex = Mutex::new(&session, format!("probe/{}", std::process::id()))?;
    for _ in 0..50 {
        mutex.lock().await?.unlock().await?;
    }
    let trips = store.round_trips();
    let mut lat = Vec::with_capacity(iters);
    let t = Instant::now();
    for _ in 0..iters {
        let s = Instant::now();
        mutex.lock().await?.unlock().await?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let secs = t.elapsed().as_secs_f64();
    let trips = store.round_trips() - trips;
    println!(
        "{{\"scenario\":\"mutex_uncontended_lock_unlock\",\"ops\":{iters},\"ops_per_s\":{:.0},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"statements_per_op\":{:.2}}}",
        iters as f64 / secs,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        trips as f64 / iters as f64
    );

    let b_session = Session::new(store.clone(), 30).await?;
    let name = format!("probe/handoff/{}", std::process::id());
    let a = Mutex::new(&session, &name)?;
    let b = Mutex::new(&b_session, &name)?;
    let rounds = (iters / 20).clamp(20, 100);
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let held = a.lock().await?;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let g = b2.lock().await?;
            let at = Instant::now();
            g.unlock().await?;
            Ok::<_, coord_core::Error>(at)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = Instant::now();
        held.unlock().await?;
        let got = waiter.await.expect("waiter")?;
        lat.push(got.duration_since(s).as_secs_f64() * 1e3);
    }
    println!(
        "{{\"scenario\":\"mutex_handoff\",\"ops\":{rounds},\"p50_ms\":{:.4},\"p99_ms\":{:.4}}}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    b_session.close().await?;
    session.close().await?;
    Ok(())
}
