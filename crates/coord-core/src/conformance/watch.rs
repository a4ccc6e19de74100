//! Watches: replay from a past revision, changes from now on, filters, previous key-values.

use super::support::{ensure, ensure_eq, next_item, scenario, text, Ctx, Outcome};
use crate::kv::{DeleteRequest, KeyRange, PutRequest, Revision};
use crate::txn::Txn;
use crate::watch::{EventKind, WatchEvent, WatchRequest, WatchStream};

/// An event as the scenarios compare it: kind, key, value, revision, version.
type Seen = (EventKind, String, String, Revision, i64);

fn seen(e: &WatchEvent) -> Seen {
    (
        e.kind,
        text(&e.kv.key),
        text(&e.kv.value),
        e.revision(),
        e.kv.version,
    )
}

/// The next `n` events of `stream`, each within the prompt deadline.
async fn take(stream: &mut WatchStream, n: usize, what: &str) -> Outcome<Vec<Seen>> {
    let mut got = Vec::with_capacity(n);
    for i in 0..n {
        let event = next_item(format!("{what}: event {} of {n}", i + 1), stream).await??;
        got.push(seen(&event));
    }
    Ok(got)
}

/// The changes a scenario made, as a watch must report them.
#[derive(Default)]
struct Log {
    events: Vec<Seen>,
    versions: std::collections::HashMap<String, i64>,
}

impl Log {
    fn put(&mut self, key: &str, value: &str, rev: Revision) {
        let v = self.versions.entry(key.to_string()).or_insert(0);
        *v += 1;
        self.events
            .push((EventKind::Put, key.into(), value.into(), rev, *v));
    }

    fn delete(&mut self, key: &str, rev: Revision) {
        self.versions.remove(key);
        self.events
            .push((EventKind::Delete, key.into(), String::new(), rev, 0));
    }
}

scenario!(
    /// A watch from a past revision replays every change since, in order, none missed, none
    /// repeated (write N, watch from the first, get exactly N, then the next live change), also
    /// from the middle and for one key. Changes of one transaction share its revision.
    storage_watch_replay,
    Shared,
    watch_replay
);

async fn watch_replay(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let mut log = Log::default();
    for i in 0..6 {
        let key = format!("k{i}");
        let rev = s
            .put(PutRequest::new(key.clone(), "1"))
            .await?
            .header_revision;
        log.put(&key, "1", rev);
        if i % 2 == 0 {
            let rev = s
                .put(PutRequest::new(key.clone(), "2"))
                .await?
                .header_revision;
            log.put(&key, "2", rev);
        }
    }
    let t = s
        .txn(Txn::new().and_then([
            PutRequest::new("t1", "x").into(),
            PutRequest::new("t2", "y").into(),
        ]))
        .await?;
    log.put("t1", "x", t.header_revision);
    log.put("t2", "y", t.header_revision);
    for key in ["k1", "k2", "k4"] {
        let rev = s.delete(DeleteRequest::key(key)).await?.header_revision;
        log.delete(key, rev);
    }
    let rev = s.put(PutRequest::new("k2", "again")).await?.header_revision;
    log.put("k2", "again", rev);
    let expected = log.events.clone();
    let n = expected.len();

    let first = expected[0].3;
    let mut all = s
        .watch(WatchRequest::new(KeyRange::prefix("")).with_start_revision(first))
        .await?;
    let mid = expected[n / 2].3;
    let mut from_mid = s
        .watch(WatchRequest::new(KeyRange::prefix("")).with_start_revision(mid))
        .await?;
    let mut one_key = s
        .watch(WatchRequest::new(KeyRange::key("k2")).with_start_revision(first))
        .await?;

    ensure_eq!(
        take(&mut all, n, "replay from the first").await?,
        expected,
        "events replayed from revision {first}"
    );
    let tail: Vec<Seen> = expected.iter().filter(|e| e.3 >= mid).cloned().collect();
    ensure_eq!(
        take(&mut from_mid, tail.len(), "replay from the middle").await?,
        tail,
        "events replayed from revision {mid}"
    );
    let k2: Vec<Seen> = expected.iter().filter(|e| e.1 == "k2").cloned().collect();
    ensure_eq!(
        take(&mut one_key, k2.len(), "replay of one key").await?,
        k2,
        "events of key k2"
    );

    // The next event of each is the next live change: nothing repeated, nothing extra.
    let live = s.put(PutRequest::new("k2", "live")).await?.header_revision;
    log.put("k2", "live", live);
    let next = log.events[n].clone();
    for (what, stream) in [
        ("from the first", &mut all),
        ("from the middle", &mut from_mid),
        ("of k2", &mut one_key),
    ] {
        let got = seen(&next_item(format!("live event after the replay {what}"), stream).await??);
        ensure_eq!(got, next, "the event after the replay {what}");
    }
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// A watch with start revision `0` sees only changes after it was registered (the call
    /// returns once it is); a delete event carries the key, an empty value and the delete's
    /// revision.
    storage_watch_from_now,
    Shared,
    watch_from_now
);

async fn watch_from_now(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let before = s.put(PutRequest::new("before", "1")).await?.header_revision;
    let mut watch = s.watch(WatchRequest::new(KeyRange::prefix(""))).await?;
    let put = s.put(PutRequest::new("after", "2")).await?.header_revision;
    let del = s
        .delete(DeleteRequest::key("before"))
        .await?
        .header_revision;
    // A cluster member that has not applied `before` yet registers the watch at its own
    // "now", so the contract allows changes from just before the call; none may be missed.
    let mut got = take(&mut watch, 2, "watch from now").await?;
    if got.first().is_some_and(|e| e.3 <= before) {
        got.remove(0);
        got.extend(take(&mut watch, 1, "watch from now").await?);
    }
    ensure_eq!(
        got,
        vec![
            (EventKind::Put, "after".into(), "2".into(), put, 1),
            (EventKind::Delete, "before".into(), String::new(), del, 0),
        ],
        "events of a watch from now"
    );
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// `no_put` leaves puts out, `no_delete` deletes, and `prev_kv` adds the previous
    /// key-value to updates and deletes (none to a creation).
    storage_watch_filters,
    Shared,
    watch_filters
);

async fn watch_filters(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let mut deletes = s
        .watch(WatchRequest::new(KeyRange::prefix("")).with_no_put())
        .await?;
    let mut puts = s
        .watch(WatchRequest::new(KeyRange::prefix("")).with_no_delete())
        .await?;
    let mut prev = s
        .watch(WatchRequest::new(KeyRange::prefix("")).with_prev_kv())
        .await?;
    let r1 = s.put(PutRequest::new("a", "1")).await?.header_revision;
    let r2 = s.put(PutRequest::new("a", "2")).await?.header_revision;
    let r3 = s.delete(DeleteRequest::key("a")).await?.header_revision;
    // A sentinel of each kind: what follows the filtered events must be it.
    let r4 = s.put(PutRequest::new("end", "x")).await?.header_revision;
    let r5 = s.delete(DeleteRequest::key("end")).await?.header_revision;

    let got: Vec<(EventKind, Revision)> = take(&mut deletes, 2, "no_put watch")
        .await?
        .into_iter()
        .map(|e| (e.0, e.3))
        .collect();
    ensure_eq!(
        got,
        vec![(EventKind::Delete, r3), (EventKind::Delete, r5)],
        "(kind, revision) of a no_put watch"
    );
    let got: Vec<(EventKind, Revision)> = take(&mut puts, 3, "no_delete watch")
        .await?
        .into_iter()
        .map(|e| (e.0, e.3))
        .collect();
    ensure_eq!(
        got,
        vec![
            (EventKind::Put, r1),
            (EventKind::Put, r2),
            (EventKind::Put, r4)
        ],
        "(kind, revision) of a no_delete watch"
    );
    let mut with_prev = Vec::new();
    for _ in 0..3 {
        let e = next_item("prev_kv watch", &mut prev).await??;
        with_prev.push((
            e.kind,
            e.revision(),
            e.prev_kv
                .map(|kv| (text(&kv.value), kv.mod_revision, kv.version)),
        ));
    }
    ensure_eq!(
        with_prev,
        vec![
            (EventKind::Put, r1, None),
            (EventKind::Put, r2, Some(("1".to_string(), r1, 1))),
            (EventKind::Delete, r3, Some(("2".to_string(), r2, 2))),
        ],
        "(kind, revision, prev (value, mod, version)) of a prev_kv watch"
    );
    ensure!(
        s.range(crate::kv::RangeRequest::prefix("")).await?.count == 0,
        "namespace is empty at the end"
    );
    Ok(())
}
