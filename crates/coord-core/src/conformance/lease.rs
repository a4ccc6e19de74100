//! Leases: grant, keep-alive, time-to-live, revoke, expiry, unknown leases.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::support::{
    ensure, ensure_eq, expect_err, next_item, scenario, text, within, Ctx, Outcome, PROMPT,
};
use crate::backend::Capability;
use crate::error::Error;
use crate::kv::{DeleteRequest, KeyRange, LeaseId, PutRequest, RangeRequest};
use crate::txn::{Compare, CompareOp, Txn};
use crate::watch::{EventKind, WatchRequest};

fn not_found(id: LeaseId) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::LeaseNotFound { lease } if *lease == id)
}

/// A lease id no one holds: random, and checked against the store.
pub(crate) async fn unknown_lease(ctx: &Ctx) -> Outcome<LeaseId> {
    loop {
        let id = rand::random::<i64>() & 0x3fff_ffff_ffff_ffff | 0x1000_0000_0000_0000;
        if !ctx.lease_alive(id).await? {
            return Ok(id);
        }
    }
}

scenario!(
    /// Grant, list (where listed leases are a capability; else `Unsupported`), time-to-live
    /// (with keys), keep-alive; revoke deletes every attached key in
    /// one revision, a prefix watch sees each delete, and the lease is then unknown to every
    /// call. A lease granted with a chosen id has that id; the id cannot be granted twice.
    storage_lease_lifecycle,
    Shared,
    lease_lifecycle
);

async fn lease_lifecycle(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let lease = ctx.grant(30).await?;
    ensure!(lease.id > 0, "lease ids are positive, got {}", lease.id);
    ensure_eq!(lease.ttl, 30, "granted TTL");
    if ctx.has(Capability::LeaseList) {
        ensure!(
            s.lease_list().await?.contains(&lease.id),
            "lease_list lists a granted lease"
        );
    } else {
        expect_err(
            s.lease_list().await,
            |e| matches!(e, Error::Unsupported { .. }),
            "lease_list of a backend without the capability",
        )?;
    }
    let ttl = s.lease_time_to_live(lease.id, false).await?;
    ensure!(
        ttl.id == lease.id && ttl.granted_ttl == 30 && ttl.ttl > 0 && ttl.ttl <= 30,
        "time-to-live of a fresh 30 s lease: {ttl:?}"
    );
    for k in ["l/a", "l/b", "l/c"] {
        s.put(PutRequest::new(k, "v").with_lease(lease.id)).await?;
    }
    let last_put = s.put(PutRequest::new("l/free", "v")).await?.header_revision;
    let ttl = s.lease_time_to_live(lease.id, true).await?;
    let keys: BTreeSet<String> = ttl.keys.iter().map(|k| text(k)).collect();
    let attached: BTreeSet<String> = ["l/a", "l/b", "l/c"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    ensure_eq!(keys, attached, "keys of time-to-live with keys");
    let left = s.lease_keep_alive(lease.id).await?;
    ensure!(
        left > 0 && left <= 30,
        "keep-alive returns the TTL now left: {left}"
    );

    let mut watch = s
        .watch(WatchRequest::new(KeyRange::prefix("l/")).with_no_put())
        .await?;
    s.lease_revoke(lease.id).await?;
    let mut deleted = BTreeSet::new();
    let mut revisions = BTreeSet::new();
    for _ in 0..3 {
        let e = next_item("deletes of a revoked lease's keys", &mut watch).await??;
        ensure_eq!(e.kind, EventKind::Delete, "event kind after revoke");
        deleted.insert(text(&e.kv.key));
        revisions.insert(e.revision());
    }
    ensure_eq!(deleted, attached, "keys whose deletes the watch saw");
    ensure_eq!(
        revisions.len(),
        1,
        "revisions of the revoke's deletes (one revision for all): {revisions:?}"
    );
    ensure!(
        revisions.iter().all(|r| *r > last_put),
        "the revoke's revision {revisions:?} is after the last put {last_put}"
    );
    let left = s.range(RangeRequest::prefix("l/")).await?;
    ensure_eq!(
        super::support::keys_of(&left.kvs),
        vec!["l/free"],
        "keys left after the revoke"
    );
    if ctx.has(Capability::LeaseList) {
        ensure!(
            !s.lease_list().await?.contains(&lease.id),
            "lease_list no longer lists a revoked lease"
        );
    }
    expect_err(
        s.lease_time_to_live(lease.id, false).await,
        not_found(lease.id),
        "time-to-live of a revoked lease",
    )?;
    expect_err(
        s.lease_keep_alive(lease.id).await,
        not_found(lease.id),
        "keep-alive of a revoked lease",
    )?;
    expect_err(
        s.lease_revoke(lease.id).await,
        not_found(lease.id),
        "revoking a lease twice",
    )?;

    // A chosen id.
    let id = unknown_lease(ctx).await?;
    let chosen = s.lease_grant(30, Some(id)).await?;
    ctx.track_lease(chosen.id);
    ensure_eq!(chosen.id, id, "id of a lease granted with a chosen id");
    ensure!(
        s.lease_grant(30, Some(id)).await.is_err(),
        "granting an id that is alive must fail"
    );
    s.lease_revoke(id).await?;
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// An unknown lease is [`Error::LeaseNotFound`] for put (nothing written), for a put in a
    /// transaction (nothing written), time-to-live, keep-alive and revoke.
    storage_lease_unknown,
    Shared,
    lease_unknown
);

async fn lease_unknown(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let id = unknown_lease(ctx).await?;
    expect_err(
        s.put(PutRequest::new("k", "v").with_lease(id)).await,
        not_found(id),
        "put with an unknown lease",
    )?;
    expect_err(
        s.txn(
            Txn::new()
                .when([Compare::create_revision("k", CompareOp::Equal, 0)])
                .and_then([
                    PutRequest::new("other", "v").into(),
                    PutRequest::new("k", "v").with_lease(id).into(),
                ]),
        )
        .await,
        not_found(id),
        "a transaction putting with an unknown lease",
    )?;
    let r = s.range(RangeRequest::prefix("")).await?;
    ensure_eq!(r.count, 0, "keys written by the failed put and transaction");
    expect_err(
        s.lease_time_to_live(id, true).await,
        not_found(id),
        "time-to-live of an unknown lease",
    )?;
    expect_err(
        s.lease_keep_alive(id).await,
        not_found(id),
        "keep-alive of an unknown lease",
    )?;
    expect_err(
        s.lease_revoke(id).await,
        not_found(id),
        "revoke of an unknown lease",
    )?;

    // A revoked lease is as unknown.
    let lease = ctx.grant(30).await?;
    s.lease_revoke(lease.id).await?;
    expect_err(
        s.put(PutRequest::new("k", "v").with_lease(lease.id)).await,
        not_found(lease.id),
        "put with a revoked lease",
    )?;
    ensure_eq!(
        s.range(RangeRequest::prefix("")).await?.count,
        0,
        "keys written by the put with a revoked lease"
    );
    Ok(())
}

scenario!(
    /// A lease that is not kept alive expires after its TTL (real time: about the store's
    /// minimum TTL), deleting its key, which a watch sees.
    storage_lease_expiry,
    Shared,
    lease_expiry
);

async fn lease_expiry(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let ttl = s.limits().min_ttl.max(1);
    let started = Instant::now();
    let lease = ctx.grant(ttl).await?;
    let put = s
        .put(PutRequest::new("k", "v").with_lease(lease.id))
        .await?
        .header_revision;
    let mut watch = s.watch(WatchRequest::new(KeyRange::key("k"))).await?;
    let limit = Duration::from_secs(lease.ttl as u64) + PROMPT;
    let event = within(limit, "the expiry of an unrenewed lease", async {
        loop {
            match futures::StreamExt::next(&mut watch).await {
                // A watch "from now" on a cluster member that lags may start with the put
                // (see the contract): only that, and only before the expiry.
                Some(Ok(e)) if e.kind == EventKind::Put && e.revision() == put => continue,
                other => return other,
            }
        }
    })
    .await?;
    let event = match event {
        Some(e) => e?,
        None => {
            return Err(super::support::Failure::new(
                "the watch ended before the expiry",
            ))
        }
    };
    let elapsed = started.elapsed();
    ensure!(
        event.kind == EventKind::Delete && event.revision() > put,
        "the event of the expiry is the key's delete after its put (rev {put}): {event:?}"
    );
    ensure!(
        elapsed + Duration::from_millis(600) >= Duration::from_secs(lease.ttl as u64),
        "a lease of {} s expired after only {elapsed:?}",
        lease.ttl
    );
    expect_err(
        s.lease_time_to_live(lease.id, false).await,
        not_found(lease.id),
        "time-to-live of an expired lease",
    )?;
    ensure_eq!(
        s.range(RangeRequest::prefix("")).await?.count,
        0,
        "keys after the expiry"
    );
    Ok(())
}
