//! Scale scenarios of issue 11 that are not about throughput:
//!
//! - `idle_sessions`: N sessions (default 1,000) idle in one process on one connection, as a
//!   service keeps them: what they cost per second in CPU (ours and etcd's), memory, keep-alive
//!   requests, and what they hold open in etcd (watchers, streams). `go-scale` (bench/go-scale)
//!   does the same with N `concurrency.Session`s on one Go client, for the ratio.
//! - `election_candidates`: one election with N candidates and `--observers` observers; the
//!   leader "crashes" (stops renewing, as a SIGKILLed process) and we time crash → next leader
//!   elected and → every observer told, against the limit of TTL + 1 s after its last renewal,
//!   and count what one leader change costs: requests, watch events, etcd CPU.

use std::time::Duration;

use coord_core::{Backend, Election, ElectionObserver, KeyRange, RangeRequest, Session};
use futures::{stream, StreamExt, TryStreamExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::alloc::live_bytes;
use crate::crash::Crashable;
use crate::etcd_metrics::{scrape, EtcdFigures};
use crate::scenarios::{Bench, BenchResultOr, Target};
use crate::stats::{pct_ms, BenchResult};

/// Sessions (or candidates) created at once: enough to start 1,000 in a second or two, few
/// enough not to queue thousands of grants on one connection.
const CREATE_CONCURRENCY: usize = 64;

impl Bench {
    /// etcd's own figures, when the run is on etcd (`None` elsewhere).
    async fn etcd_figures(&self) -> BenchResultOr<Option<EtcdFigures>> {
        match &self.target {
            Target::Etcd(endpoints) => match endpoints.first() {
                Some(ep) => Ok(Some(scrape(ep).await?)),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// See the module docs.
    pub(crate) async fn idle_sessions(&self) -> BenchResultOr<BenchResult> {
        let n = self.sessions;
        let name = format!("idle_sessions_{n}");
        let store = self.store().await?;
        let heap_before = live_bytes();
        let rss_before = rss_bytes();
        let sessions: Vec<Session> = stream::iter(0..n)
            .map(|_| Session::new(store.clone(), self.ttl))
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect()
            .await?;
        // Let every session's first renewal cycle start before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let calls_before = store.counts();
        let etcd_before = self.etcd_figures().await?;
        let cpu_before = process_cpu_seconds();
        let started = Instant::now();
        tokio::time::sleep(self.idle).await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds() - cpu_before;
        let etcd_after = self.etcd_figures().await?;
        let calls = store.counts().since(&calls_before);
        let heap = live_bytes()
            .zip(heap_before)
            .map(|(a, b)| a.saturating_sub(b));
        let rss = rss_bytes()
            .zip(rss_before)
            .map(|(a, b)| a.saturating_sub(b));
        let lost = sessions.iter().filter(|s| s.is_lost()).count();
        for s in sessions {
            s.close().await?;
        }
        let mut extra = json!({
            "sessions": n,
            "ttl_s": self.ttl,
            "idle_s": seconds,
            "cpu_s_per_s": cpu / seconds,
            "heap_bytes": heap,
            "heap_bytes_per_session": heap.map(|h| h as f64 / n as f64),
            "rss_bytes": rss,
            "calls_per_s": calls.calls() as f64 / seconds,
            "calls": calls.to_string(),
            "sessions_lost": lost,
        });
        if let (Some(before), Some(after)) = (etcd_before, etcd_after) {
            extra["etcd_cpu_s_per_s"] = json!((after.cpu_seconds - before.cpu_seconds) / seconds);
            extra["etcd_keep_alives_per_s"] =
                json!((after.keep_alives - before.keep_alives) / seconds);
            extra["etcd_watchers"] = json!(after.watchers);
            extra["etcd_watch_streams"] = json!(after.watch_streams);
            extra["etcd_grpc_streams"] = json!(after.grpc_streams);
        }
        if lost > 0 {
            return Err(format!("{lost} of {n} idle sessions were lost").into());
        }
        Ok(BenchResult::new(&name, n as u64, seconds, &[]).with_extra(extra))
    }

    /// See the module docs.
    pub(crate) async fn election_candidates(&self) -> BenchResultOr<BenchResult> {
        let n = self.sessions.max(2);
        let rounds = self.crash_rounds.clamp(1, n - 1);
        let name = format!("election_candidates_{n}");
        let store = self.store().await?;
        // The first `rounds + 1` candidates campaign one by one, so the queue's order is known:
        // round r crashes candidate r, and candidate r + 1 must take over. They have the short
        // crash TTL; the rest keep the run's TTL (they only wait), on the same connection.
        let mut crashables = Vec::new();
        let mut sessions = Vec::new();
        for _ in 0..=rounds {
            let crashable = Crashable::new(store.clone());
            sessions.push(Session::new(crashable.clone(), self.crash_ttl).await?);
            crashables.push(crashable);
        }
        let rest: Vec<Session> = stream::iter(rounds + 1..n)
            .map(|_| Session::new(store.clone(), self.ttl))
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect()
            .await?;
        sessions.extend(rest);
        let granted = sessions[0].ttl();

        // Observers on a connection of their own: each reports every new leader key it sees.
        let observers_store = self.store().await?;
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut observers = JoinSet::new();
        for i in 0..self.observers {
            let mut leaders =
                ElectionObserver::new(observers_store.clone(), "candidates")?.observe();
            let seen_tx = seen_tx.clone();
            observers.spawn(async move {
                while let Some(Ok(obs)) = leaders.next().await {
                    let Some(leader) = obs.leader else { continue };
                    if seen_tx.send((i, leader.key, Instant::now())).is_err() {
                        break;
                    }
                }
            });
        }

        let mut campaigns = JoinSet::new();
        let (won_tx, mut won_rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, session) in sessions.iter().enumerate() {
            let election = Election::new(session, "candidates")?;
            let won_tx = won_tx.clone();
            let campaign = async move {
                let leadership = election.campaign(format!("candidate-{i}")).await?;
                let _ = won_tx.send((i, leadership.key().to_vec(), Instant::now()));
                // Hold the leadership until the run ends; losing it otherwise is an error.
                let lost = leadership.lost().await;
                Err::<(), _>(coord_core::Error::invalid(format!(
                    "candidate {i} lost: {lost}"
                )))
            };
            campaigns.spawn(campaign);
            // In order: each of the first candidates is in the queue before the next. The rest
            // join in batches, as a fleet's processes would, not as one burst of a thousand
            // requests on one connection.
            if i <= rounds || (i + 1) % CREATE_CONCURRENCY == 0 {
                wait_for_keys(&store, i + 1, &mut campaigns).await?;
            }
        }
        wait_for_keys(&store, n, &mut campaigns).await?;
        let (first, leader_key, _) = won_rx.recv().await.ok_or("no first leader")?;
        if first != 0 {
            return Err(format!("candidate {first} led first, not candidate 0").into());
        }
        // Every observer has named the first leader before the crashes start.
        drain_until_all_told(&mut seen_rx, self.observers, &leader_key).await?;

        let mut to_leader = Vec::new();
        let mut to_all_observers = Vec::new();
        let mut from_renewal = Vec::new();
        let mut calls_per_change = Vec::new();
        let mut events_per_change = Vec::new();
        let mut etcd_cpu_ms_per_change = Vec::new();
        for (r, crashable) in crashables.iter().enumerate().take(rounds) {
            tokio::time::sleep(Duration::from_millis(
                rand::random::<u64>() % (granted.max(1) as u64 * 1000),
            ))
            .await;
            // etcd's CPU while nothing changes (the candidates' keep-alives), to subtract.
            let idle_from = (Instant::now(), self.etcd_figures().await?);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let calls_before = store.counts().plus(&observers_store.counts());
            let etcd_before = self.etcd_figures().await?;
            let idle_rate = match (idle_from.1, etcd_before) {
                (Some(a), Some(b)) => {
                    (b.cpu_seconds - a.cpu_seconds) / idle_from.0.elapsed().as_secs_f64()
                }
                _ => 0.0,
            };
            let crashed_at = Instant::now();
            crashable.crash();
            let (next, key, won_at) = won_rx.recv().await.ok_or("no next leader")?;
            if next != r + 1 {
                return Err(format!("candidate {next} took over from {r}, not {}", r + 1).into());
            }
            let told_at = drain_until_all_told(&mut seen_rx, self.observers, &key).await?;
            let renewed = crashable.last_renewal_sent().unwrap_or(crashed_at);
            to_leader.push(won_at.duration_since(crashed_at));
            to_all_observers.push(told_at.max(won_at).duration_since(crashed_at));
            from_renewal.push(told_at.max(won_at).duration_since(renewed));
            // Let the change settle (waiters re-targeting) before counting what it cost.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let calls = store
                .counts()
                .plus(&observers_store.counts())
                .since(&calls_before);
            calls_per_change.push(calls.kv_calls() as f64);
            events_per_change.push(calls.watch_events as f64);
            if let (Some(before), Some(after)) = (etcd_before, self.etcd_figures().await?) {
                let window = crashed_at.elapsed().as_secs_f64();
                let cpu = after.cpu_seconds - before.cpu_seconds - idle_rate * window;
                etcd_cpu_ms_per_change.push(cpu.max(0.0) * 1000.0);
            }
        }
        campaigns.abort_all();
        observers.abort_all();
        for s in sessions.into_iter().skip(rounds) {
            s.close().await?;
        }
        let left = store
            .range(RangeRequest::new(KeyRange::prefix("candidates/")).with_count_only())
            .await?;
        let limit_ms = (granted as f64 + 1.0) * 1000.0;
        let worst_ms = from_renewal
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3;
        self.dump(&name, &to_all_observers)?;
        Ok(
            BenchResult::new(&name, to_leader.len() as u64, 0.0, &to_all_observers).with_extra(
                json!({
                    "candidates": n,
                    "observers": self.observers,
                    "ttl_s": granted,
                    "latency": "crash -> new leader elected and every observer told",
                    "to_leader_p50_ms": pct_ms(&to_leader, 0.5),
                    "from_last_renewal_max_ms": worst_ms,
                    "limit_ms": limit_ms,
                    "within_limit": worst_ms <= limit_ms,
                    "kv_calls_per_change": crate::stats::median(&calls_per_change),
                    "watch_events_per_change": crate::stats::median(&events_per_change),
                    "etcd_cpu_ms_per_change": crate::stats::median(&etcd_cpu_ms_per_change),
                    "keys_left_after_close": left.count,
                }),
            ),
        )
    }
}

/// Waits until the election holds at least `n` candidate keys; a campaign that failed meanwhile
/// fails the wait with its error.
async fn wait_for_keys(
    store: &impl Backend,
    n: usize,
    campaigns: &mut JoinSet<coord_core::Result<()>>,
) -> BenchResultOr<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(ended) = campaigns.try_join_next() {
            ended??;
            return Err("a campaign ended before the crashes".into());
        }
        let resp = store
            .range(RangeRequest::new(KeyRange::prefix("candidates/")).with_count_only())
            .await?;
        if resp.count >= n as i64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} candidates queued in 60 s", resp.count).into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads observations until each of `observers` has named `key`; returns when the last did.
async fn drain_until_all_told(
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Vec<u8>, Instant)>,
    observers: usize,
    key: &[u8],
) -> BenchResultOr<Instant> {
    let mut told = vec![false; observers];
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while told.iter().any(|t| !t) {
        let (i, seen_key, at) = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .map_err(|_| "observers not told within 60 s")?
            .ok_or("observers ended")?;
        if seen_key == key && !told[i] {
            told[i] = true;
            last = at;
        }
    }
    Ok(last)
}

/// This process's CPU time (user + system), seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Resident set size, bytes (Linux: /proc/self/statm).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64)
}
