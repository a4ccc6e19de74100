//! The storage contract: revisions, key metadata, ranges, transactions, compaction, the
//! `Prefixed` adapter.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};

use super::support::{
    ensure, ensure_eq, expect_err, keys_of, next_item, scenario, text, Ctx, Failure, Outcome,
    SETTLE,
};
use crate::backend::{Backend, Capability, DynBackend};
use crate::error::Error;
use crate::kv::{
    DeleteRequest, KeyRange, KeyValue, PutRequest, RangeRequest, Revision, SortOrder, SortTarget,
};
use crate::prefixed::Prefixed;
use crate::txn::{Compare, CompareOp, CompareTarget, Txn, TxnOpResponse};
use crate::watch::{EventKind, WatchRequest};

scenario!(
    /// The revision rises with every write (put, delete, write transaction, however many keys
    /// it changes; by exactly one where the backend declares
    /// [`Capability::DenseRevisions`](crate::Capability)), every change of a transaction
    /// carries that revision, and reads, empty
    /// or failed transactions, deletes of nothing, lease grants and keep-alives leave it as it
    /// is. Runs alone in the process, as it counts revisions exactly.
    storage_revision_per_write,
    Exclusive,
    revision_per_write
);

async fn revision_per_write(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let r0 = s.range(RangeRequest::key("absent")).await?.header_revision;
    ensure!(
        r0 > 0,
        "a read's header revision must be positive, got {r0}"
    );

    // Exactly one more per write where the backend declares dense revisions; else just more.
    let dense = ctx.has(Capability::DenseRevisions);
    let next = |before: Revision, after: Revision, what: &str| -> Outcome {
        if dense {
            ensure_eq!(after, before + 1, "{what}");
        } else {
            ensure!(after > before, "{what}: {after} is not above {before}");
        }
        Ok(())
    };
    let p1 = s.put(PutRequest::new("a", "1")).await?;
    next(r0, p1.header_revision, "revision after one put")?;
    let r = s.range(RangeRequest::prefix("")).await?;
    ensure_eq!(
        r.header_revision,
        p1.header_revision,
        "a read must not raise the revision"
    );

    // One write transaction of three changes: one revision, carried by each change.
    let t = s
        .txn(Txn::new().and_then([
            PutRequest::new("b", "1").into(),
            PutRequest::new("c", "1").into(),
            DeleteRequest::key("a").into(),
        ]))
        .await?;
    ensure!(t.succeeded, "a transaction without compares must succeed");
    next(
        p1.header_revision,
        t.header_revision,
        "revision after a transaction of two puts and a delete",
    )?;
    let all = s.range(RangeRequest::prefix("")).await?;
    ensure_eq!(
        keys_of(&all.kvs),
        vec!["b", "c"],
        "keys after the transaction"
    );
    for kv in &all.kvs {
        ensure_eq!(
            (kv.create_revision, kv.mod_revision),
            (t.header_revision, t.header_revision),
            "create/mod revision of {:?}, written by the transaction",
            text(&kv.key)
        );
    }
    let now = t.header_revision;

    // Nothing changes: reads in a transaction, an empty transaction, a failed compare, a delete
    // of nothing, lease grant, keep-alive and revoke of a lease without keys.
    let ro = s
        .txn(Txn::new().and_then([RangeRequest::key("b").into()]))
        .await?;
    ensure_eq!(
        ro.header_revision,
        now,
        "revision after a read-only transaction"
    );
    let empty = s.txn(Txn::new()).await?;
    ensure!(empty.succeeded, "an empty transaction succeeds");
    ensure_eq!(
        empty.header_revision,
        now,
        "revision after an empty transaction"
    );
    let failed = s
        .txn(
            Txn::new()
                .when([Compare::value("b", CompareOp::Equal, "not-1")])
                .and_then([PutRequest::new("b", "2").into()]),
        )
        .await?;
    ensure!(
        !failed.succeeded,
        "a false compare must fail the transaction"
    );
    ensure_eq!(
        failed.header_revision,
        now,
        "revision after a failed transaction without failure ops"
    );
    let none = s.delete(DeleteRequest::key("absent")).await?;
    ensure_eq!(none.deleted, 0, "deleted count of a missing key");
    ensure_eq!(
        none.header_revision,
        now,
        "revision after deleting a missing key"
    );
    let none = s.delete(DeleteRequest::prefix("zzz/")).await?;
    ensure_eq!(
        none.header_revision,
        now,
        "revision after deleting an empty range"
    );
    let lease = ctx.grant(10).await?;
    s.lease_keep_alive(lease.id).await?;
    s.lease_time_to_live(lease.id, true).await?;
    s.lease_revoke(lease.id).await?;
    let r = s.range(RangeRequest::key("b")).await?;
    ensure_eq!(
        r.header_revision,
        now,
        "revision after granting, renewing and revoking a lease without keys"
    );
    ensure_eq!(
        r.kvs[0].value,
        b"1".to_vec(),
        "value of b after the failed transaction"
    );

    // The same value again is still a write.
    let again = s.put(PutRequest::new("b", "1")).await?;
    next(
        now,
        again.header_revision,
        "revision after putting an unchanged value",
    )?;
    let deleted = s.delete(DeleteRequest::prefix("")).await?;
    ensure_eq!(deleted.deleted, 2, "keys deleted by the prefix delete");
    next(
        again.header_revision,
        deleted.header_revision,
        "revision after deleting two keys at once",
    )?;
    Ok(())
}

scenario!(
    /// Each key's `create_revision`, `mod_revision`, `version` and `lease`, through updates,
    /// lease changes, delete and re-creation; `prev_kv` of put and delete; key ranges
    /// (`Range`, `FromKey`), keys-only and count-only reads.
    storage_key_metadata,
    Shared,
    key_metadata
);

async fn key_metadata(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let r1 = s.put(PutRequest::new("a", "1")).await?.header_revision;
    let a = one(s, "a").await?;
    ensure_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.lease,
            a.value.clone()
        ),
        (r1, r1, 1, 0, b"1".to_vec()),
        "(create, mod, version, lease, value) of a new key"
    );

    let p2 = s.put(PutRequest::new("a", "2").with_prev_kv()).await?;
    let r2 = p2.header_revision;
    ensure!(r2 > r1, "revisions must rise: {r1} then {r2}");
    ensure_eq!(p2.prev_kv, Some(a.clone()), "prev_kv of an update");
    let a = one(s, "a").await?;
    ensure_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.value.clone()
        ),
        (r1, r2, 2, b"2".to_vec()),
        "(create, mod, version, value) after an update"
    );
    let fresh = s.put(PutRequest::new("b", "1").with_prev_kv()).await?;
    ensure_eq!(fresh.prev_kv, None, "prev_kv of a put that created the key");

    let lease = ctx.grant(30).await?;
    let r3 = s
        .put(PutRequest::new("a", "3").with_lease(lease.id))
        .await?
        .header_revision;
    let a = one(s, "a").await?;
    ensure_eq!(
        (a.mod_revision, a.version, a.lease),
        (r3, 3, lease.id),
        "(mod, version, lease) after a put with a lease"
    );
    s.put(PutRequest::new("a", "4")).await?;
    ensure_eq!(
        one(s, "a").await?.lease,
        0,
        "a put without lease detaches the key"
    );
    s.lease_revoke(lease.id).await?;
    ensure_eq!(
        one(s, "a").await?.version,
        4,
        "revoking a lease the key left keeps the key"
    );

    let before = one(s, "a").await?;
    let d = s.delete(DeleteRequest::key("a").with_prev_kv()).await?;
    ensure_eq!(d.deleted, 1, "deleted count");
    ensure_eq!(d.prev_kvs, vec![before], "prev_kvs of a delete");
    let r = s.range(RangeRequest::key("a")).await?;
    ensure!(
        r.kvs.is_empty() && r.count == 0,
        "a deleted key is gone: {r:?}"
    );
    let r5 = s.put(PutRequest::new("a", "5")).await?.header_revision;
    let a = one(s, "a").await?;
    ensure_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (r5, r5, 1),
        "(create, mod, version) of a key created again after its delete"
    );

    // Key ranges, inside the namespace.
    for k in ["k1", "k2", "k3"] {
        s.put(PutRequest::new(k, format!("v-{k}"))).await?;
    }
    let r = s
        .range(RangeRequest::new(KeyRange::Range {
            start: b"k1".to_vec(),
            end: b"k3".to_vec(),
        }))
        .await?;
    ensure_eq!(keys_of(&r.kvs), vec!["k1", "k2"], "keys of [k1, k3)");
    let r = s
        .range(RangeRequest::new(KeyRange::FromKey(b"k2".to_vec())))
        .await?;
    ensure_eq!(keys_of(&r.kvs), vec!["k2", "k3"], "keys from k2 on");
    let r = s.range(RangeRequest::prefix("k").with_keys_only()).await?;
    ensure_eq!(keys_of(&r.kvs), vec!["k1", "k2", "k3"], "keys-only read");
    ensure!(
        r.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.version == 1),
        "keys-only read returns no values but the metadata: {:?}",
        r.kvs
    );
    let count_only = s.range(RangeRequest::prefix("k").with_count_only()).await;
    if ctx.has(Capability::CountOnly) {
        let r = count_only?;
        ensure!(
            r.kvs.is_empty(),
            "count-only read returns no keys: {:?}",
            r.kvs
        );
        ensure_eq!(r.count, 3, "count of a count-only read");
    } else {
        expect_err(
            count_only,
            unsupported,
            "count-only read without the capability",
        )?;
    }

    let d = s.delete(DeleteRequest::prefix("").with_prev_kv()).await?;
    ensure_eq!(
        d.deleted,
        5,
        "keys deleted by the prefix delete (a, b, k1, k2, k3)"
    );
    ensure_eq!(d.prev_kvs.len(), 5, "prev_kvs of the prefix delete");
    Ok(())
}

/// A request a backend without the capability refuses.
fn unsupported(e: &Error) -> bool {
    matches!(e, Error::Unsupported { .. })
}

/// The one key `key`, failing when it is missing.
async fn one(s: &DynBackend, key: &str) -> Outcome<KeyValue> {
    let r = s.range(RangeRequest::key(key)).await?;
    ensure_eq!(r.count, 1, "count of a read of key {key:?}");
    match r.kvs.into_iter().next() {
        Some(kv) => Ok(kv),
        None => Err(Failure::new(format!("key {key:?} is missing"))),
    }
}

/// Writes `c a e b d` (create order), then updates `b` and `c` (so mod order is `a e d b c`).
/// Returns the revision each key was created at, by name.
async fn five_keys(s: &DynBackend) -> Outcome<Vec<(&'static str, Revision)>> {
    let mut created = Vec::new();
    for k in ["c", "a", "e", "b", "d"] {
        let rev = s.put(PutRequest::new(k, k)).await?.header_revision;
        created.push((k, rev));
    }
    s.put(PutRequest::new("b", "b2")).await?;
    s.put(PutRequest::new("c", "c2")).await?;
    Ok(created)
}

scenario!(
    /// Range sorted by key, create and mod revision (key and mod: where the backend declares
    /// [`Capability::SortByKeyOrMod`](crate::Capability)), ascending and descending; `limit`
    /// with `count` (before the limit) and `more`.
    storage_range_sort_limit,
    Shared,
    range_sort_limit
);

async fn range_sort_limit(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    five_keys(s).await?;
    type Case = (Option<(SortTarget, SortOrder)>, [&'static str; 5]);
    let cases: [Case; 7] = [
        (None, ["a", "b", "c", "d", "e"]),
        (
            Some((SortTarget::Key, SortOrder::Ascend)),
            ["a", "b", "c", "d", "e"],
        ),
        (
            Some((SortTarget::Key, SortOrder::Descend)),
            ["e", "d", "c", "b", "a"],
        ),
        (
            Some((SortTarget::Create, SortOrder::Ascend)),
            ["c", "a", "e", "b", "d"],
        ),
        (
            Some((SortTarget::Create, SortOrder::Descend)),
            ["d", "b", "e", "a", "c"],
        ),
        (
            Some((SortTarget::Mod, SortOrder::Ascend)),
            ["a", "e", "d", "b", "c"],
        ),
        (
            Some((SortTarget::Mod, SortOrder::Descend)),
            ["c", "b", "d", "e", "a"],
        ),
    ];
    let key_or_mod = ctx.has(Capability::SortByKeyOrMod);
    for (sort, expected) in cases {
        let mut req = RangeRequest::prefix("");
        req.sort = sort;
        if !key_or_mod && matches!(sort, Some((SortTarget::Key | SortTarget::Mod, _))) {
            expect_err(
                s.range(req).await,
                unsupported,
                format!("a read sorted by {sort:?} without the capability"),
            )?;
            continue;
        }
        let r = s.range(req.clone()).await?;
        ensure_eq!(
            keys_of(&r.kvs),
            expected.to_vec(),
            "order of a range sorted by {sort:?}"
        );
        ensure_eq!(
            (r.count, r.more),
            (5, false),
            "(count, more) without limit, sort {sort:?}"
        );
        for limit in [1_i64, 2, 4, 5, 6] {
            let r = s.range(req.clone().with_limit(limit)).await?;
            let n = (limit as usize).min(5);
            ensure_eq!(
                keys_of(&r.kvs),
                expected[..n].to_vec(),
                "keys with limit {limit}, sort {sort:?}"
            );
            ensure_eq!(
                (r.count, r.more),
                (5, limit < 5),
                "(count, more) with limit {limit}, sort {sort:?}"
            );
        }
    }
    let first = s.range(RangeRequest::first_created("")).await?;
    ensure_eq!(keys_of(&first.kvs), vec!["c"], "first_created");
    let last = s.range(RangeRequest::last_created("", 2)).await?;
    ensure_eq!(keys_of(&last.kvs), vec!["d", "b"], "last_created(2)");
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// Range with `max_create_revision` and (where declared) `max_mod_revision`, alone,
    /// together, and with sort and limit (the read a waiter makes to find the key just ahead of
    /// it).
    storage_range_revision_filters,
    Shared,
    range_revision_filters
);

async fn range_revision_filters(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let created = five_keys(s).await?;
    let rev = |k: &str| {
        created
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, r)| *r)
            .unwrap_or(0)
    };
    let r = s
        .range(RangeRequest::prefix("").with_max_create_revision(rev("e")))
        .await?;
    ensure_eq!(
        keys_of(&r.kvs),
        vec!["a", "c", "e"],
        "keys created at or before e"
    );
    // Mod revisions: a, e, d as created; b and c updated after d.
    let by_mod = s
        .range(RangeRequest::prefix("").with_max_mod_revision(rev("d")))
        .await;
    if ctx.has(Capability::ModRevisionFilter) {
        ensure_eq!(
            keys_of(&by_mod?.kvs),
            vec!["a", "d", "e"],
            "keys last modified at or before d's creation"
        );
        let r = s
            .range(
                RangeRequest::prefix("")
                    .with_max_create_revision(rev("d"))
                    .with_max_mod_revision(rev("d")),
            )
            .await?;
        ensure_eq!(keys_of(&r.kvs), vec!["a", "d", "e"], "both filters");
    } else {
        expect_err(
            by_mod,
            unsupported,
            "max_mod_revision without the capability",
        )?;
    }
    // The newest key created before b: e.
    let r = s
        .range(
            RangeRequest::prefix("")
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1)
                .with_max_create_revision(rev("b") - 1),
        )
        .await?;
    ensure_eq!(keys_of(&r.kvs), vec!["e"], "newest key created before b");
    let r = s
        .range(
            RangeRequest::prefix("")
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1)
                .with_max_create_revision(rev("c") - 1),
        )
        .await?;
    ensure_eq!(
        keys_of(&r.kvs),
        Vec::<String>::new(),
        "newest key created before the first"
    );
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// Reads at a past revision see the store as it was (values, versions, deleted keys), and a
    /// future revision is refused with [`Error::InvalidArgument`].
    storage_past_revision_reads,
    Shared,
    past_revision_reads,
    needs [PastRevisionReads]
);

async fn past_revision_reads(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let r1 = s.put(PutRequest::new("k", "v1")).await?.header_revision;
    let r2 = s.put(PutRequest::new("k", "v2")).await?.header_revision;
    let r3 = s.delete(DeleteRequest::key("k")).await?.header_revision;
    let r4 = s.put(PutRequest::new("other", "x")).await?.header_revision;
    for (at, expected) in [
        (r1, Some(("v1", 1))),
        (r2, Some(("v2", 2))),
        (r3, None),
        (r4, None),
    ] {
        let r = s.range(RangeRequest::key("k").with_revision(at)).await?;
        let got = r
            .kvs
            .first()
            .map(|kv| (text(&kv.value), kv.version, kv.create_revision));
        let expected = expected.map(|(v, version)| (v.to_string(), version, r1));
        ensure_eq!(
            got,
            expected,
            "(value, version, create) of k read at revision {at}"
        );
    }
    let r = s.range(RangeRequest::prefix("").with_revision(r2)).await?;
    ensure_eq!(keys_of(&r.kvs), vec!["k"], "the namespace at revision {r2}");
    let current = s.range(RangeRequest::key("absent")).await?.header_revision;
    expect_err(
        s.range(RangeRequest::key("k").with_revision(current + 1_000_000))
            .await,
        |e| matches!(e, Error::InvalidArgument { .. }),
        "a read at a future revision",
    )?;
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// After `compact(r)`, reads below `r` and watches from below `r` (also of an empty range)
    /// give [`Error::Compacted`] (never silence), while current reads still work. Compacts only
    /// revisions the scenario itself wrote, and runs alone in the process.
    storage_compaction,
    Exclusive,
    compaction,
    needs [Compaction]
);

async fn compaction(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let r1 = s.put(PutRequest::new("k", "v1")).await?.header_revision;
    let r2 = s.put(PutRequest::new("k", "v2")).await?.header_revision;
    match s.compact(r2).await {
        Ok(()) => {}
        // Someone else (another process on a shared store) compacted further already.
        Err(Error::Compacted { compact_revision }) if compact_revision >= r2 => {}
        Err(e) => return Err(e.into()),
    }
    let err = expect_err(
        s.range(RangeRequest::key("k").with_revision(r1)).await,
        |e| matches!(e, Error::Compacted { .. }),
        "a read below the compaction point",
    )?;
    if let Error::Compacted { compact_revision } = err {
        ensure!(
            compact_revision >= r2,
            "Compacted must name the compaction point (>= {r2}), got {compact_revision}"
        );
    }
    let now = s.range(RangeRequest::key("k")).await?;
    ensure_eq!(
        now.kvs.first().map(|kv| text(&kv.value)),
        Some("v2".to_string()),
        "current value after compaction"
    );

    // A watch from a compacted revision fails, in the call or as its first item: also one of
    // an empty range, which has no event to report.
    let empty = KeyRange::Range {
        start: b"k".to_vec(),
        end: Vec::new(),
    };
    for range in [KeyRange::key("k"), empty] {
        let what = format!("a watch of {} from a compacted revision", describe(&range));
        match s
            .watch(WatchRequest::new(range).with_start_revision(r1))
            .await
        {
            Err(Error::Compacted { .. }) => {}
            Err(e) => return Err(Failure::new(format!("{what}: wrong error {e} ({e:?})"))),
            Ok(mut stream) => {
                let first = next_item(format!("first item of {what}"), &mut stream).await?;
                ensure!(
                    matches!(first, Err(Error::Compacted { .. })),
                    "{what} must yield Compacted first, got {first:?}"
                );
            }
        }
    }
    // Compacting again at the same point is refused with Compacted.
    expect_err(
        s.compact(r1).await,
        |e| matches!(e, Error::Compacted { .. }),
        "compacting below the compaction point",
    )?;
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

/// One compare, on the key `k` (or on the missing key `absent`), and whether it must hold.
struct CompareCase {
    compare: Compare,
    holds: bool,
}

scenario!(
    /// Transaction compares on every target (create and mod revision, value, lease; version
    /// where the backend declares [`Capability::VersionCompares`](crate::Capability)) with
    /// every operator, on an existing and a missing key; several compares are and-ed;
    /// the success or the failure branch runs, with put, range and delete in each.
    storage_txn_compares,
    Shared,
    txn_compares
);

async fn txn_compares(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let lease = ctx.grant(30).await?;
    let create = s.put(PutRequest::new("k", "m")).await?.header_revision;
    let modr = s
        .put(PutRequest::new("k", "m").with_lease(lease.id))
        .await?
        .header_revision;
    let l = lease.id;
    use CompareOp::{Equal as Eq, Greater as Gt, Less as Lt, NotEqual as Ne};
    let mut cases = Vec::new();
    let mut int_cases = |make: fn(i64) -> CompareTarget, v: i64| {
        for (op, operand, holds) in [
            (Eq, v, true),
            (Eq, v - 1, false),
            (Ne, v, false),
            (Ne, v + 1, true),
            (Gt, v - 1, true),
            (Gt, v, false),
            (Lt, v + 1, true),
            (Lt, v, false),
        ] {
            cases.push(CompareCase {
                compare: Compare::new("k", op, make(operand)),
                holds,
            });
        }
    };
    int_cases(CompareTarget::CreateRevision, create);
    int_cases(CompareTarget::ModRevision, modr);
    let versions = ctx.has(Capability::VersionCompares);
    if versions {
        int_cases(CompareTarget::Version, 2);
    }
    int_cases(CompareTarget::Lease, l);
    for (op, operand, holds) in [
        (Eq, "m", true),
        (Eq, "n", false),
        (Ne, "m", false),
        (Ne, "n", true),
        (Gt, "l", true),
        (Gt, "m", false),
        (Lt, "n", true),
        (Lt, "m", false),
    ] {
        cases.push(CompareCase {
            compare: Compare::value("k", op, operand),
            holds,
        });
    }
    // A missing key: revisions, version and lease are 0; a value compare never holds.
    for (compare, holds) in [
        (Compare::create_revision("absent", Eq, 0), true),
        (Compare::mod_revision("absent", Eq, 0), true),
        (Compare::lease("absent", Eq, 0), true),
        (Compare::create_revision("absent", Gt, 0), false),
        (Compare::value("absent", Eq, ""), false),
        (Compare::value("absent", Ne, "x"), false),
    ] {
        cases.push(CompareCase { compare, holds });
    }
    if versions {
        cases.push(CompareCase {
            compare: Compare::version("absent", Eq, 0),
            holds: true,
        });
    } else {
        expect_err(
            s.txn(Txn::new().when([Compare::version("k", Eq, 2)])).await,
            unsupported,
            "a version compare without the capability",
        )?;
    }
    for case in &cases {
        let resp = s
            .txn(
                Txn::new()
                    .when([case.compare.clone()])
                    .and_then([RangeRequest::key("k").into()])
                    .or_else([]),
            )
            .await?;
        ensure_eq!(
            resp.succeeded,
            case.holds,
            "outcome of compare {:?}",
            case.compare
        );
        ensure_eq!(
            resp.responses.len(),
            usize::from(case.holds),
            "responses of the branch that ran, compare {:?}",
            case.compare
        );
    }

    // And-ed compares: all true runs success; one false runs failure, with writes in both.
    let all_true = s
        .txn(
            Txn::new()
                .when([
                    Compare::mod_revision("k", Eq, modr),
                    Compare::value("k", Eq, "m"),
                    Compare::lease("k", Eq, l),
                ])
                .and_then([
                    PutRequest::new("yes", "1").into(),
                    RangeRequest::key("k").into(),
                    DeleteRequest::key("absent").into(),
                ])
                .or_else([PutRequest::new("no", "1").into()]),
        )
        .await?;
    ensure!(all_true.succeeded, "three true compares must succeed");
    ensure!(
        matches!(
            all_true.responses.as_slice(),
            [TxnOpResponse::Put(_), TxnOpResponse::Range(r), TxnOpResponse::Delete(d)]
                if r.kvs.len() == 1 && d.deleted == 0
        ),
        "responses of the success branch (put, range, delete): {:?}",
        all_true.responses
    );
    let one_false = s
        .txn(
            Txn::new()
                .when([
                    Compare::create_revision("k", Eq, create),
                    Compare::value("k", Eq, "x"),
                ])
                .and_then([PutRequest::new("yes2", "1").into()])
                .or_else([
                    PutRequest::new("no", "1").into(),
                    RangeRequest::prefix("").into(),
                    DeleteRequest::key("yes").into(),
                ]),
        )
        .await?;
    ensure!(
        !one_false.succeeded,
        "one false compare among several must fail the transaction"
    );
    ensure!(
        matches!(
            one_false.responses.as_slice(),
            [TxnOpResponse::Put(_), TxnOpResponse::Range(_), TxnOpResponse::Delete(d)] if d.deleted == 1
        ),
        "responses of the failure branch (put, range, delete): {:?}",
        one_false.responses
    );
    let left = s.range(RangeRequest::prefix("")).await?;
    ensure_eq!(
        keys_of(&left.kvs),
        vec!["k", "no"],
        "keys after both transactions"
    );
    s.lease_revoke(lease.id).await?;
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// Later operations of a transaction see the effects of earlier ones (etcd's semantics),
    /// and every change carries the transaction's revision.
    storage_txn_sees_own_writes,
    Shared,
    txn_sees_own_writes
);

async fn txn_sees_own_writes(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    s.put(PutRequest::new("old", "1")).await?;
    let resp = s
        .txn(Txn::new().and_then([
            RangeRequest::key("new").into(),
            PutRequest::new("new", "v").into(),
            RangeRequest::key("new").into(),
            DeleteRequest::key("old").into(),
            RangeRequest::key("old").into(),
            RangeRequest::prefix("").into(),
        ]))
        .await?;
    let rev = resp.header_revision;
    let counts: Vec<i64> = [0, 2, 4, 5]
        .iter()
        .map(|&i| resp.range(i).map(|r| r.count))
        .collect::<crate::Result<_>>()?;
    ensure_eq!(
        counts,
        vec![0, 1, 0, 1],
        "counts of: new before its put, new after it, old after its delete, the namespace"
    );
    let new = resp.range(2)?.kvs.first().cloned();
    ensure_eq!(
        new.map(|kv| (kv.create_revision, kv.mod_revision, kv.version, kv.value)),
        Some((rev, rev, 1, b"v".to_vec())),
        "the key put earlier in the transaction, as read later in it"
    );
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// The [`Prefixed`] adapter: keys outside the namespace are invisible to reads, deletes,
    /// compares and watches, `FromKey` stops at the namespace's end, and names that are
    /// prefixes of each other (`ns` and `ns2`, once `/`-terminated) stay apart.
    storage_prefixed_isolation,
    Shared,
    prefixed_isolation
);

async fn prefixed_isolation(ctx: &Ctx) -> Outcome {
    let base = ctx.store.clone();
    let ns: DynBackend = Arc::new(Prefixed::new(base.clone(), "ns/"));
    let ns2: DynBackend = Arc::new(Prefixed::new(base.clone(), "ns2/"));
    let mut watch = ns.watch(WatchRequest::new(KeyRange::prefix(""))).await?;
    base.put(PutRequest::new("ns", "outside")).await?;
    base.put(PutRequest::new("nsa", "outside")).await?;
    ns2.put(PutRequest::new("k", "ns2")).await?;
    let lease = ctx.grant(30).await?;
    let put = ns
        .put(PutRequest::new("k", "ns").with_lease(lease.id))
        .await?;

    let raw = base.range(RangeRequest::key("ns/k")).await?;
    ensure_eq!(
        raw.kvs.first().map(|kv| text(&kv.value)),
        Some("ns".to_string()),
        "the adapter writes k as ns/k"
    );
    for (what, range) in [
        ("everything", KeyRange::prefix("")),
        ("from the empty key", KeyRange::FromKey(Vec::new())),
        (
            "[\"\", \"zzz\")",
            KeyRange::Range {
                start: Vec::new(),
                end: b"zzz".to_vec(),
            },
        ),
    ] {
        let r = ns.range(RangeRequest::new(range)).await?;
        ensure_eq!(
            keys_of(&r.kvs),
            vec!["k"],
            "keys the adapter sees reading {what}"
        );
        ensure_eq!(r.kvs[0].value, b"ns".to_vec(), "value the adapter reads");
    }
    let t = ns
        .txn(
            Txn::new()
                .when([Compare::value("k", CompareOp::Equal, "ns")])
                .and_then([RangeRequest::key("k").into()]),
        )
        .await?;
    ensure!(
        t.succeeded,
        "a compare through the adapter sees its own k, not ns2's"
    );
    ensure_eq!(
        keys_of(&t.range(0)?.kvs),
        vec!["k"],
        "key names in a transaction read"
    );
    let ttl = ns.lease_time_to_live(lease.id, true).await?;
    ensure_eq!(
        ttl.keys,
        vec![b"k".to_vec()],
        "the lease's keys, as the adapter shows them"
    );

    let event = next_item("the adapter's watch", &mut watch).await??;
    ensure_eq!(
        (text(&event.kv.key), event.revision()),
        ("k".to_string(), put.header_revision),
        "the first event of the adapter's watch is its own put, not one outside"
    );

    let d = ns.delete(DeleteRequest::prefix("")).await?;
    ensure_eq!(d.deleted, 1, "keys an adapter's delete-everything deletes");
    let left = base.range(RangeRequest::prefix("")).await?;
    ensure_eq!(
        keys_of(&left.kvs),
        vec!["ns", "ns2/k", "nsa"],
        "keys outside the adapter's namespace survive its delete"
    );
    base.delete(DeleteRequest::prefix("")).await?;
    ns.lease_revoke(lease.id).await?;
    Ok(())
}

/// The keys of [`storage_key_range_forms`], in byte order: `0x00` and `0xff` bytes first,
/// inside and last, and the empty key (the namespace's own name on the store).
const RANGE_KEYS: &[&[u8]] = &[
    b"",
    b"\0",
    b"\0\xff",
    b"a",
    b"a\0",
    b"ab",
    b"ab\xff",
    b"a\xff",
    b"b",
    b"\xff",
    b"\xff\0",
    b"\xff\xff",
];

/// A key that failure messages show with every byte visible.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shown(Vec<u8>);

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

fn shown(key: &[u8]) -> Shown {
    Shown(key.to_vec())
}

/// A range as failure messages name it.
fn describe(range: &KeyRange) -> String {
    match range {
        KeyRange::Key(k) => format!("key {:?}", shown(k)),
        KeyRange::Prefix(p) => format!("prefix {:?}", shown(p)),
        KeyRange::Range { start, end } => format!("[{:?}, {:?})", shown(start), shown(end)),
        KeyRange::FromKey(k) => format!("from {:?} on", shown(k)),
    }
}

/// One range form of [`storage_key_range_forms`] and where it runs.
struct Form {
    what: String,
    range: KeyRange,
    /// Empty: through the adapter. Otherwise the scenario's namespace, and the form runs on the
    /// raw backend, where only the keys under it are compared (other scenarios share the store).
    base: Vec<u8>,
    /// Whether it is deleted too. Not the raw forms that a backend reading etcd's sentinels
    /// would take for "to the end of the keyspace": they would delete other scenarios' keys.
    delete: bool,
}

impl Form {
    fn store<'a>(&self, ctx: &'a Ctx) -> &'a DynBackend {
        if self.base.is_empty() {
            &ctx.store
        } else {
            &ctx.raw
        }
    }

    /// Whether the scenario's key `key` is in the range, as its literal meaning says.
    fn holds(&self, key: &[u8]) -> bool {
        self.range.contains(&[&self.base[..], key].concat())
    }

    /// The scenario's keys in the range.
    fn expected(&self) -> Vec<&'static [u8]> {
        RANGE_KEYS
            .iter()
            .copied()
            .filter(|k| self.holds(k))
            .collect()
    }

    /// The scenario's keys among `kvs`, shown.
    fn seen(&self, kvs: &[KeyValue]) -> Vec<Shown> {
        kvs.iter()
            .filter_map(|kv| kv.key.strip_prefix(&self.base[..]))
            .map(shown)
            .collect()
    }
}

/// Every form, through the adapter and (those with etcd-looking ends) on the raw backend under
/// the namespace `ns`.
fn range_forms(ns: &[u8]) -> Vec<Form> {
    let span = |start: &[u8], end: &[u8]| KeyRange::Range {
        start: start.to_vec(),
        end: end.to_vec(),
    };
    let adapter = |range: KeyRange| Form {
        what: describe(&range),
        range,
        base: Vec::new(),
        delete: true,
    };
    let ns_key = |key: &[u8]| [ns, key].concat();
    let raw = |range: KeyRange, delete: bool| Form {
        what: format!("{} on the raw backend", describe(&range)),
        range,
        base: ns.to_vec(),
        delete,
    };
    let mut forms: Vec<Form> = [
        KeyRange::key("ab"),
        KeyRange::key(""),
        KeyRange::key("absent"),
        KeyRange::prefix("a"),
        KeyRange::prefix("ab"),
        KeyRange::prefix(""),
        KeyRange::prefix(b"\0".to_vec()),
        KeyRange::prefix(b"\xff".to_vec()),
        span(b"a", b"b"),
        span(b"a\0", b"a\xff"),
        span(b"\xff", b"\xff\xff"),
        // No sentinels: an empty end and [0] are below "a", so both ranges are empty.
        span(b"a", b""),
        span(b"a", b"\0"),
        span(b"", b"\0"),
        span(b"b", b"a"),
        span(b"ab", b"ab"),
        span(b"", b"ab"),
        span(b"", b""),
        KeyRange::FromKey(b"ab".to_vec()),
        KeyRange::FromKey(b"\xff\0".to_vec()),
        KeyRange::FromKey(Vec::new()),
    ]
    .into_iter()
    .map(adapter)
    .collect();
    // On the backend itself, which gets the ends "" and "\0" unchanged (the adapter prefixes
    // them) and an empty start that reaches other scenarios' keys.
    forms.extend([
        raw(span(&ns_key(b"a"), b""), true),
        raw(span(b"", b""), true),
        raw(span(&ns_key(b"a"), b"\0"), false),
        raw(span(b"", b"\0"), false),
        raw(span(b"", &ns_key(b"a")), false),
        raw(KeyRange::FromKey(ns_key(b"ab")), false),
    ]);
    forms
}

/// A change of the scenario, as a watch shows it: revision, key, kind.
type Change = (Revision, Shown, EventKind);

scenario!(
    /// Every form of [`KeyRange`] means its literal set of keys, through the namespace adapter
    /// and on the backend itself, for reads, deletes (plain and in a transaction, with a read
    /// before and after) and watches: one key; a prefix (one that is a proper prefix of other
    /// keys, the empty one, `"\0"`, `"\xff"`); `[start, end)` with an end above the start, an
    /// empty end, the end `"\0"` (keys below `"\0"`: the empty key only), an end at or before
    /// the start, an empty start; from a key to the end. The keys hold `0x00` and `0xff` bytes;
    /// the expected keys are those [`KeyRange::contains`] accepts. Also: an empty range deleted
    /// next to a put of its start key in one transaction is no duplicate.
    storage_key_range_forms,
    Shared,
    key_range_forms
);

async fn key_range_forms(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let forms = range_forms(&ctx.prefix);
    let mut watches = Vec::with_capacity(forms.len());
    for form in &forms {
        let req = WatchRequest::new(form.range.clone());
        watches.push(form.store(ctx).watch(req).await?);
    }
    let mut log: Vec<(Revision, &'static [u8], EventKind)> = Vec::new();
    for key in RANGE_KEYS {
        let rev = s.put(PutRequest::new(*key, "v")).await?.header_revision;
        log.push((rev, key, EventKind::Put));
    }

    for form in &forms {
        let what = &form.what;
        let expected = form.expected();
        let shown_expected: Vec<Shown> = expected.iter().map(|k| shown(k)).collect();
        let store = form.store(ctx);
        let r = store.range(RangeRequest::new(form.range.clone())).await?;
        ensure_eq!(form.seen(&r.kvs), shown_expected, "keys read from {what}");
        if form.base.is_empty() {
            ensure_eq!(r.count, expected.len() as i64, "count of {what}");
        }
        if !form.delete {
            continue;
        }

        let t = store
            .txn(Txn::new().and_then([
                RangeRequest::new(form.range.clone()).into(),
                DeleteRequest::new(form.range.clone()).with_prev_kv().into(),
                RangeRequest::new(form.range.clone()).into(),
            ]))
            .await?;
        let (before, after) = (t.range(0)?, t.range(2)?);
        ensure_eq!(
            form.seen(&before.kvs),
            shown_expected,
            "keys a transaction reads from {what}"
        );
        ensure_eq!(
            form.seen(&after.kvs),
            Vec::<Shown>::new(),
            "keys the transaction reads from {what} after deleting it"
        );
        // A read ahead of the transaction's write may carry the revision before it.
        ensure!(
            0 < before.header_revision
                && before.header_revision <= after.header_revision
                && after.header_revision == t.header_revision,
            "revisions of the reads of {what} around its delete, in a transaction at revision \
             {}: {} and {}",
            t.header_revision,
            before.header_revision,
            after.header_revision
        );
        let Some(TxnOpResponse::Delete(deleted)) = t.responses.get(1) else {
            return Err(Failure::new(format!(
                "the transaction deleting {what} answered {:?}",
                t.responses
            )));
        };
        ensure_eq!(
            (deleted.deleted, form.seen(&deleted.prev_kvs)),
            (expected.len() as i64, shown_expected.clone()),
            "(count, keys) a transaction deletes from {what}"
        );
        restore(s, &expected, t.header_revision, &mut log).await?;

        let d = store
            .delete(DeleteRequest::new(form.range.clone()).with_prev_kv())
            .await?;
        ensure_eq!(
            (d.deleted, form.seen(&d.prev_kvs)),
            (expected.len() as i64, shown_expected.clone()),
            "(count, keys) a delete of {what} deletes"
        );
        let left = s.range(RangeRequest::prefix("")).await?;
        let kept: Vec<Shown> = RANGE_KEYS
            .iter()
            .filter(|k| !expected.contains(k))
            .map(|k| shown(k))
            .collect();
        let left: Vec<Shown> = left.kvs.iter().map(|kv| shown(&kv.key)).collect();
        ensure_eq!(left, kept, "keys left after deleting {what}");
        restore(s, &expected, d.header_revision, &mut log).await?;
    }

    // etcd's duplicate-key check: a delete of an empty range overlaps no put.
    let empty = KeyRange::Range {
        start: b"ab".to_vec(),
        end: b"ab".to_vec(),
    };
    let t = s
        .txn(Txn::new().and_then([
            DeleteRequest::new(empty).into(),
            PutRequest::new("ab", "w").into(),
        ]))
        .await?;
    ensure!(
        matches!(t.responses.first(), Some(TxnOpResponse::Delete(d)) if d.deleted == 0),
        "a delete of [ab, ab) next to a put of ab deletes nothing: {:?}",
        t.responses
    );
    log.push((t.header_revision, b"ab", EventKind::Put));
    let end = s.delete(DeleteRequest::prefix("")).await?;
    ensure_eq!(
        end.deleted,
        RANGE_KEYS.len() as i64,
        "keys deleted at the end"
    );
    log.extend(
        RANGE_KEYS
            .iter()
            .map(|k| (end.header_revision, *k, EventKind::Delete)),
    );

    // Each watch saw exactly the changes of its keys, in revision order.
    for (form, watch) in forms.iter().zip(&mut watches) {
        let what = &form.what;
        let mut expected: Vec<Change> = log
            .iter()
            .filter(|(_, k, _)| form.holds(k))
            .map(|(rev, k, kind)| (*rev, shown(k), *kind))
            .collect();
        // A revision changes a key once, so (revision, key) orders the changes.
        let order = |a: &Change, b: &Change| (a.0, &a.1).cmp(&(b.0, &b.1));
        expected.sort_by(order);
        let mut got: Vec<Change> = Vec::with_capacity(expected.len());
        while got.len() < expected.len() {
            let event = next_item(format!("watch of {what}"), watch).await??;
            if let Some(key) = event.kv.key.strip_prefix(&form.base[..]) {
                got.push((event.revision(), shown(key), event.kind));
            }
        }
        ensure!(
            got.windows(2).all(|w| w[0].0 <= w[1].0),
            "events of a watch of {what} out of revision order: {got:?}"
        );
        got.sort_by(order);
        ensure_eq!(got, expected, "(revision, key, kind) a watch of {what} saw");
    }
    // And nothing more: no change is left that a watch could still report.
    tokio::time::sleep(SETTLE).await;
    for (form, watch) in forms.iter().zip(&mut watches) {
        while let Some(item) = watch.next().now_or_never() {
            match item {
                Some(Ok(event)) => ensure!(
                    !event.kv.key.starts_with(&form.base),
                    "a watch of {} saw one change too many: {:?} at {}",
                    form.what,
                    shown(&event.kv.key),
                    event.revision()
                ),
                other => {
                    return Err(Failure::new(format!(
                        "the watch of {} ended: {other:?}",
                        form.what
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Puts the `keys` that a delete at revision `deleted` removed back, in one transaction, and
/// logs both changes.
async fn restore(
    s: &DynBackend,
    keys: &[&'static [u8]],
    deleted: Revision,
    log: &mut Vec<(Revision, &'static [u8], EventKind)>,
) -> Outcome {
    if keys.is_empty() {
        return Ok(());
    }
    let puts = keys.iter().map(|k| PutRequest::new(*k, "v").into());
    let rev = s.txn(Txn::new().and_then(puts)).await?.header_revision;
    log.extend(keys.iter().map(|k| (deleted, *k, EventKind::Delete)));
    log.extend(keys.iter().map(|k| (rev, *k, EventKind::Put)));
    Ok(())
}
