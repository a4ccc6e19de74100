//! Property tests: random sequences of puts, deletes, ranges, transactions and compactions
//! run against the store and against a deliberately naive model (a map cloned at every
//! revision); every answer, every revision and every watch event must agree.

use std::collections::BTreeMap;

use coord_core::{
    Backend, Compare, CompareOp, CompareTarget, DeleteRequest, DeleteResponse, Error, EventKind,
    KeyRange, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, Revision, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent, WatchRequest, WatchStream,
};
use coord_mem::MemStore;
use futures::{FutureExt, StreamExt};
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "ab", "abc", "b", "ba", "c"];
const PREFIXES: &[&str] = &["", "a", "ab", "b", "z"];
const VALUES: &[&str] = &["", "x", "y", "yy"];
const UNKNOWN_LEASE: i64 = 999;

// ----- generated operations -------------------------------------------------------------

/// A range request whose revision is relative to the store's revision when it runs.
#[derive(Clone, Debug)]
struct RangeSpec {
    range: KeyRange,
    sort: Option<(SortTarget, SortOrder)>,
    limit: i64,
    max_create: Revision,
    max_mod: Revision,
    /// 0: current; n > 0: `current - n` (at least 1); -1: `current + 1` (the future).
    back: i64,
    keys_only: bool,
    count_only: bool,
}

impl RangeSpec {
    fn at(&self, current: Revision) -> RangeRequest {
        let mut r = RangeRequest::new(self.range.clone()).with_limit(self.limit);
        r.sort = self.sort;
        r.max_create_revision = self.max_create;
        r.max_mod_revision = self.max_mod;
        r.revision = match self.back {
            0 => 0,
            -1 => current + 1,
            n => (current - n).max(1),
        };
        r.keys_only = self.keys_only;
        r.count_only = self.count_only;
        r
    }
}

#[derive(Clone, Debug)]
enum OpSpec {
    Put(PutRequest),
    Delete(DeleteRequest),
    Range(RangeSpec),
}

impl OpSpec {
    fn at(&self, current: Revision) -> TxnOp {
        match self {
            OpSpec::Put(p) => TxnOp::Put(p.clone()),
            OpSpec::Delete(d) => TxnOp::Delete(d.clone()),
            OpSpec::Range(r) => TxnOp::Range(r.at(current)),
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Op(OpSpec),
    Txn {
        compares: Vec<Compare>,
        success: Vec<OpSpec>,
        failure: Vec<OpSpec>,
    },
    Compact(i64),
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_string)
}

fn key_range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        3 => key().prop_map(KeyRange::key),
        2 => prop::sample::select(PREFIXES).prop_map(KeyRange::prefix),
        1 => key().prop_map(|k| KeyRange::FromKey(k.into_bytes())),
        // Any two keys: an end at or before the start is an empty range.
        1 => (key(), key())
            .prop_map(|(s, e)| KeyRange::Range { start: s.into_bytes(), end: e.into_bytes() }),
    ]
}

fn put_spec() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        prop::sample::select(VALUES),
        prop::bool::weighted(0.05),
        any::<bool>(),
    )
        .prop_map(|(k, v, bad_lease, prev)| {
            let mut p = PutRequest::new(k, v);
            if bad_lease {
                p = p.with_lease(UNKNOWN_LEASE);
            }
            if prev {
                p = p.with_prev_kv();
            }
            p
        })
}

fn delete_spec() -> impl Strategy<Value = DeleteRequest> {
    (key_range(), any::<bool>()).prop_map(|(r, prev)| {
        let d = DeleteRequest::new(r);
        if prev {
            d.with_prev_kv()
        } else {
            d
        }
    })
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    let sort = prop_oneof![
        2 => Just(None),
        1 => (
            prop::sample::select(vec![SortTarget::Key, SortTarget::Create, SortTarget::Mod]),
            prop::sample::select(vec![SortOrder::Ascend, SortOrder::Descend]),
        ).prop_map(Some),
    ];
    let back = prop_oneof![4 => Just(0i64), 2 => 1i64..8, 1 => Just(-1i64)];
    let filter = prop_oneof![3 => Just(0i64), 1 => 1i64..15];
    (
        key_range(),
        sort,
        0i64..4,
        filter.clone(),
        filter,
        back,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(range, sort, limit, max_create, max_mod, back, keys_only, count_only)| RangeSpec {
                range,
                sort,
                limit,
                max_create,
                max_mod,
                back,
                keys_only,
                count_only,
            },
        )
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        3 => put_spec().prop_map(OpSpec::Put),
        1 => delete_spec().prop_map(OpSpec::Delete),
        2 => range_spec().prop_map(OpSpec::Range),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    let op = prop::sample::select(vec![
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Greater,
        CompareOp::Less,
    ]);
    let target = prop_oneof![
        (0i64..12).prop_map(CompareTarget::CreateRevision),
        (0i64..12).prop_map(CompareTarget::ModRevision),
        (0i64..4).prop_map(CompareTarget::Version),
        prop::sample::select(VALUES).prop_map(|v| CompareTarget::Value(v.as_bytes().to_vec())),
        prop_oneof![Just(0i64), Just(UNKNOWN_LEASE)].prop_map(CompareTarget::Lease),
    ];
    (key(), op, target).prop_map(|(k, op, t)| Compare::new(k, op, t))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => op_spec().prop_map(Step::Op),
        3 => (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(op_spec(), 0..4),
            prop::collection::vec(op_spec(), 0..4),
        ).prop_map(|(compares, success, failure)| Step::Txn { compares, success, failure }),
        1 => (0i64..6).prop_map(Step::Compact),
    ]
}

// ----- the naive model --------------------------------------------------------------------

type Map = BTreeMap<Vec<u8>, KeyValue>;

struct Model {
    rev: Revision,
    compact: Revision,
    history_limit: i64,
    kv: Map,
    /// The whole state at every revision.
    snaps: BTreeMap<Revision, Map>,
    events: Vec<WatchEvent>,
}

/// Error kinds, for comparing errors (they are not `PartialEq`).
fn kind(e: &Error) -> String {
    match e {
        Error::InvalidArgument { .. } => "invalid".into(),
        Error::LeaseNotFound { lease } => format!("lease-not-found {lease}"),
        Error::Compacted { compact_revision } => format!("compacted {compact_revision}"),
        other => format!("unexpected {other:?}"),
    }
}

fn delete_conflicts(range: &KeyRange, key: &[u8]) -> bool {
    match range {
        // etcd's interval check ignores deletes "to the end" (range end [0]).
        KeyRange::FromKey(_) => false,
        KeyRange::Prefix(p) if p.is_empty() => false,
        r => r.contains(key),
    }
}

impl Model {
    fn new(history_limit: u64) -> Self {
        Model {
            rev: 1,
            compact: 0,
            history_limit: history_limit as i64,
            kv: Map::new(),
            snaps: BTreeMap::from([(1, Map::new())]),
            events: Vec::new(),
        }
    }

    fn range(req: &RangeRequest, view: &Map, header: Revision) -> RangeResponse {
        let all: Vec<KeyValue> = view
            .values()
            .filter(|kv| req.range.contains(&kv.key))
            .cloned()
            .collect();
        let count = all.len() as i64;
        if req.count_only {
            return RangeResponse {
                header_revision: header,
                kvs: vec![],
                count,
                more: false,
            };
        }
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| {
                req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision
            })
            .filter(|kv| req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            .collect();
        if let Some((target, order)) = req.sort {
            let field = |kv: &KeyValue| match target {
                SortTarget::Key => 0,
                SortTarget::Create => kv.create_revision,
                SortTarget::Mod => kv.mod_revision,
            };
            match (target, order) {
                (SortTarget::Key, SortOrder::Descend) => kvs.reverse(),
                (_, SortOrder::Ascend) => kvs.sort_by_key(field),
                (_, SortOrder::Descend) => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
            }
        }
        let more = req.limit > 0 && kvs.len() > req.limit as usize;
        if req.limit > 0 {
            kvs.truncate(req.limit as usize);
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        RangeResponse {
            header_revision: header,
            kvs,
            count,
            more,
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kv = self.kv.get(&c.key);
        let ord = match &c.target {
            CompareTarget::Value(v) => match kv {
                None => return false,
                Some(kv) => kv.value.cmp(v),
            },
            CompareTarget::CreateRevision(r) => kv.map_or(0, |k| k.create_revision).cmp(r),
            CompareTarget::ModRevision(r) => kv.map_or(0, |k| k.mod_revision).cmp(r),
            CompareTarget::Version(v) => kv.map_or(0, |k| k.version).cmp(v),
            CompareTarget::Lease(l) => kv.map_or(0, |k| k.lease).cmp(l),
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Greater => ord.is_gt(),
            CompareOp::Less => ord.is_lt(),
        }
    }

    fn txn(&mut self, txn: &Txn) -> Result<TxnResponse, String> {
        for branch in [&txn.success, &txn.failure] {
            let puts: Vec<&[u8]> = branch
                .iter()
                .filter_map(|op| match op {
                    TxnOp::Put(p) => Some(p.key.as_slice()),
                    _ => None,
                })
                .collect();
            for (i, k) in puts.iter().enumerate() {
                let dup = puts[i + 1..].contains(k);
                let deleted = branch.iter().any(|op| match op {
                    TxnOp::Delete(d) => delete_conflicts(&d.range, k),
                    _ => false,
                });
                if dup || deleted {
                    return Err("invalid".into());
                }
            }
        }
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let begin = self.rev;
        for op in ops {
            match op {
                TxnOp::Range(r) if r.revision > begin => return Err("invalid".into()),
                TxnOp::Range(r) if r.revision > 0 && r.revision < self.compact => {
                    return Err(format!("compacted {}", self.compact))
                }
                TxnOp::Put(p) if p.lease != 0 => {
                    return Err(format!("lease-not-found {}", p.lease))
                }
                _ => {}
            }
        }
        let new = begin + 1;
        let mut work = self.kv.clone();
        let mut events = Vec::new();
        let mut responses = Vec::new();
        for op in ops {
            let header = |events: &Vec<WatchEvent>| if events.is_empty() { begin } else { new };
            responses.push(match op {
                TxnOp::Range(r) => {
                    let view = if r.revision > 0 {
                        &self.snaps[&r.revision]
                    } else {
                        &work
                    };
                    TxnOpResponse::Range(Self::range(r, view, header(&events)))
                }
                TxnOp::Put(p) => {
                    let prev = work.get(&p.key).cloned();
                    let kv = KeyValue {
                        key: p.key.clone(),
                        value: p.value.clone(),
                        create_revision: prev.as_ref().map_or(new, |k| k.create_revision),
                        mod_revision: new,
                        version: prev.as_ref().map_or(1, |k| k.version + 1),
                        lease: p.lease,
                    };
                    work.insert(p.key.clone(), kv.clone());
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev.clone(),
                    });
                    TxnOpResponse::Put(PutResponse {
                        header_revision: new,
                        prev_kv: if p.prev_kv { prev } else { None },
                    })
                }
                TxnOp::Delete(d) => {
                    let doomed: Vec<KeyValue> = work
                        .values()
                        .filter(|kv| d.range.contains(&kv.key))
                        .cloned()
                        .collect();
                    for kv in &doomed {
                        work.remove(&kv.key);
                        events.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: kv.key.clone(),
                                mod_revision: new,
                                ..KeyValue::default()
                            },
                            prev_kv: Some(kv.clone()),
                        });
                    }
                    TxnOpResponse::Delete(DeleteResponse {
                        header_revision: header(&events),
                        deleted: doomed.len() as i64,
                        prev_kvs: if d.prev_kv { doomed } else { vec![] },
                    })
                }
            });
        }
        if !events.is_empty() {
            self.rev = new;
            self.kv = work;
            self.snaps.insert(new, self.kv.clone());
            self.events.extend(events);
            if self.rev - self.compact > self.history_limit {
                self.compact = self.rev - self.history_limit;
            }
        }
        Ok(TxnResponse {
            succeeded,
            header_revision: self.rev,
            responses,
        })
    }

    fn compact(&mut self, rev: Revision) -> Result<(), String> {
        if rev > self.rev {
            Err("invalid".into())
        } else if rev <= self.compact {
            Err(format!("compacted {}", self.compact))
        } else {
            self.compact = rev;
            Ok(())
        }
    }

    fn watch(&self, req: &WatchRequest) -> Result<Vec<WatchEvent>, String> {
        let start = req.start_revision;
        if start > 0 && start < self.compact {
            return Err(format!("compacted {}", self.compact));
        }
        if start == 0 {
            // "From now": nothing yet.
            return Ok(vec![]);
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.revision() >= start && req.range.contains(&e.kv.key))
            .cloned()
            .collect())
    }
}

// ----- running both -----------------------------------------------------------------------

fn single(resp: TxnResponse) -> TxnOpResponse {
    resp.responses.into_iter().next().expect("one op")
}

async fn run_step(store: &MemStore, model: &mut Model, step: &Step) {
    let current = model.rev;
    assert_eq!(store.revision(), current);
    match step {
        Step::Op(op) => {
            let op = op.at(current);
            let expect = model.txn(&Txn::new().and_then([op.clone()])).map(single);
            let got = match op {
                TxnOp::Put(p) => store.put(p).await.map(TxnOpResponse::Put),
                TxnOp::Delete(d) => store.delete(d).await.map(TxnOpResponse::Delete),
                TxnOp::Range(r) => store.range(r).await.map(TxnOpResponse::Range),
            };
            assert_eq!(got.map_err(|e| kind(&e)), expect, "{step:?}");
        }
        Step::Txn {
            compares,
            success,
            failure,
        } => {
            let txn = Txn::new()
                .when(compares.iter().cloned())
                .and_then(success.iter().map(|o| o.at(current)))
                .or_else(failure.iter().map(|o| o.at(current)));
            let expect = model.txn(&txn);
            let got = store.txn(txn).await.map_err(|e| kind(&e));
            assert_eq!(got, expect, "{step:?}");
        }
        Step::Compact(back) => {
            let rev = current - back;
            let expect = model.compact(rev);
            let got = store.compact(rev).await.map_err(|e| kind(&e));
            assert_eq!(got, expect, "{step:?}");
        }
    }
    assert_eq!(store.revision(), model.rev);
    assert_eq!(store.compact_revision(), model.compact);
}

fn drain(watch: &mut WatchStream) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while let Some(Some(item)) = tokio::task::unconstrained(watch.next()).now_or_never() {
        out.push(item.expect("no error items"));
    }
    out
}

fn run(steps: Vec<Step>, history_limit: u64, watch_range: KeyRange, watch_start: i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemStore::builder().history_limit(history_limit).build();
        let mut model = Model::new(history_limit);
        let mut live = store
            .watch(WatchRequest::new(KeyRange::prefix("")).with_prev_kv())
            .await
            .unwrap();
        for step in &steps {
            run_step(&store, &mut model, step).await;
        }
        // A watch from the start saw exactly the model's events, in order.
        assert_eq!(drain(&mut live), model.events);
        // A watch from a past revision replays exactly the model's events since then.
        let req = WatchRequest::new(watch_range)
            .with_start_revision(watch_start.min(model.rev + 1))
            .with_prev_kv();
        let expect = model.watch(&req);
        match store.watch(req.clone()).await {
            Ok(mut w) => assert_eq!(Ok(drain(&mut w)), expect, "{req:?}"),
            Err(e) => assert_eq!(Err(kind(&e)), expect, "{req:?}"),
        }
        // The present state agrees key by key.
        let all = store.range(RangeRequest::prefix("")).await.unwrap();
        assert_eq!(all.kvs, model.kv.values().cloned().collect::<Vec<_>>());
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn store_agrees_with_the_model(
        steps in prop::collection::vec(step(), 1..40),
        history_limit in prop_oneof![2 => Just(10_000u64), 1 => 0u64..6],
        watch_range in key_range(),
        watch_start in 0i64..45,
    ) {
        run(steps, history_limit, watch_range, watch_start);
    }
}
