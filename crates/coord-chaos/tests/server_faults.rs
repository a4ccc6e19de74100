//! etcd itself fails: a 3-member cluster loses its raft leader while 8 workers contend, and a
//! single etcd restarts on its data dir while a waiter and an observer wait. Each test spawns
//! the etcd it breaks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use coord_chaos::history::{Access, Faults, History};
use coord_chaos::support::{
    connect, eventually, keys_under, unique_prefix, variant, wait_leases_gone, wait_prefix_empty,
};
use coord_core::{Election, Error, Fence, Mutex, PutRequest, Session, Txn, TxnOp};
use etcd_harness::{require_etcd_binary, EtcdCluster, EtcdServer};
use futures::StreamExt;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const WORKERS: usize = 8;

#[derive(Default)]
struct Run {
    history: History,
    fence: Fence,
    stop: AtomicBool,
    acquisitions: StdMutex<Vec<Instant>>,
    errors: StdMutex<HashMap<&'static str, usize>>,
    double_holders: AtomicUsize,
    leases: StdMutex<Vec<i64>>,
}

impl Run {
    fn error(&self, e: &Error) {
        *self.errors.lock().unwrap().entry(variant(e)).or_default() += 1;
    }
}

async fn contend(id: usize, endpoints: Vec<String>, name: String, resource: String, run: Arc<Run>) {
    let backend = connect(&endpoints, Duration::from_secs(2)).await.unwrap();
    let mut session: Option<Session> = None;
    while !run.stop.load(Ordering::SeqCst) {
        let s = match &session {
            Some(s) if !s.is_lost() => s.clone(),
            _ => match Session::new(backend.clone(), 5).await {
                Ok(s) => {
                    run.leases.lock().unwrap().push(s.lease());
                    session = Some(s.clone());
                    s
                }
                Err(e) => {
                    run.error(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let mutex = Mutex::new(&s, &name).unwrap();
        let guard = match mutex.lock_timeout(Duration::from_secs(10)).await {
            Ok(g) => g,
            Err(e) => {
                run.error(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let token = guard.fencing_token();
        let entry = run
            .history
            .acquired(format!("w{id}"), token, Access::Exclusive);
        run.acquisitions.lock().unwrap().push(Instant::now());
        let fenced = run.fence.accept(token).is_ok();
        let write = Txn::new()
            .when([guard.is_owner()])
            .and_then([TxnOp::Put(PutRequest::new(
                resource.clone(),
                token.to_string(),
            ))]);
        match s.backend().txn(write).await {
            Ok(r) if r.succeeded && !fenced => {
                run.double_holders.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(e) => run.error(&e),
        }
        run.history.releasing(entry);
        match guard.unlock().await {
            Ok(()) => {}
            Err(e @ (Error::NotHeld { .. } | Error::SessionExpired { .. })) => {
                run.history.lost(entry, variant(&e));
                run.error(&e);
            }
            // Retried in the background; the key goes before anyone else can acquire.
            Err(e) => run.error(&e),
        }
    }
    if let Some(s) = session {
        let _ = s.close().await;
    }
}

/// Kill the raft leader of a 3-member cluster while 8 workers contend: never two holders,
/// fencing tokens keep rising, and locks are granted again once a new leader is elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_leader_killed_while_eight_workers_contend() {
    if !require_etcd_binary() {
        return;
    }
    let cluster = EtcdCluster::start(3).await.unwrap();
    let endpoints = cluster.endpoints();
    let admin = connect(&endpoints, Duration::from_secs(2)).await.unwrap();
    let root = unique_prefix("raftleader");
    let name = format!("{root}lock");
    let resource = format!("{root}resource");
    let run = Arc::new(Run::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            tokio::spawn(contend(
                id,
                endpoints.clone(),
                name.clone(),
                resource.clone(),
                run.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = run.acquisitions.lock().unwrap().len();
    let leader = cluster.leader_index().await.expect("a leader");
    let killed = Instant::now();
    cluster.member(leader).kill();
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .unwrap();
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);
    // Progress resumes: wait for 20 acquisitions after the kill (bounded).
    let resumed = eventually(Duration::from_secs(20), || async {
        run.acquisitions
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t > killed)
            .count()
            >= 20
    })
    .await;
    run.stop.store(true, Ordering::SeqCst);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("workers stop")
            .unwrap();
    }
    let acquisitions = run.acquisitions.lock().unwrap().clone();
    let after: Vec<_> = acquisitions.iter().filter(|t| **t > killed).collect();
    let first_after = after.iter().map(|t| t.duration_since(killed)).min();
    let report = run.history.check(Faults::Injected);
    eprintln!(
        "MEASURED raft leader kill: {before} acquisitions in 3 s before; new raft leader after \
         {:.0} ms; first lock granted {:.0} ms after the kill; {} acquisitions after; errors {:?}; \
         double holders {}; history: {}",
        ms(elected),
        first_after.map(ms).unwrap_or(f64::NAN),
        after.len(),
        run.errors.lock().unwrap(),
        run.double_holders.load(Ordering::SeqCst),
        report.to_string().lines().next().unwrap_or_default(),
    );
    assert!(before >= 10, "workers made progress before the fault");
    assert!(resumed, "progress resumes after a new leader is elected");
    assert!(report.is_ok(), "{report}");
    assert_eq!(run.double_holders.load(Ordering::SeqCst), 0);

    let prefix = format!("{name}/");
    wait_prefix_empty(&admin, prefix.as_bytes(), Duration::from_secs(10))
        .await
        .unwrap();
    let leases = run.leases.lock().unwrap().clone();
    wait_leases_gone(&admin, &leases, Duration::from_secs(10))
        .await
        .unwrap();
}

/// Restart a single etcd on its data dir while a waiter is blocked and an observer watches:
/// the waiter's prefix watch resumes (it acquires once the holder unlocks after the restart)
/// and `observe()` reports the right leader afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_resumes_waiters_and_observers() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let endpoints = server.endpoints();
    let admin = connect(&endpoints, Duration::from_secs(2)).await.unwrap();
    let root = unique_prefix("restart");
    let lock_name = format!("{root}lock");
    let election_name = format!("{root}election");

    let holder = Session::new(admin.clone(), 30).await.unwrap();
    let waiter_backend = connect(&endpoints, Duration::from_secs(2)).await.unwrap();
    let waiter = Session::new(waiter_backend.clone(), 30).await.unwrap();
    let observer = Session::new(admin.clone(), 30).await.unwrap();

    let guard = Mutex::new(&holder, &lock_name)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let lead = Election::new(&holder, &election_name)
        .unwrap()
        .campaign("holder")
        .await
        .unwrap();
    let waiting_lock = tokio::spawn({
        let m = Mutex::new(&waiter, &lock_name).unwrap();
        async move {
            (
                m.lock_timeout(Duration::from_secs(60)).await,
                Instant::now(),
            )
        }
    });
    let waiting_campaign = tokio::spawn({
        let e = Election::new(&waiter, &election_name).unwrap();
        async move { e.campaign_timeout("waiter", Duration::from_secs(60)).await }
    });
    let observations = Arc::new(StdMutex::new(Vec::new()));
    let watcher = tokio::spawn({
        let mut stream = Election::new(&observer, &election_name).unwrap().observe();
        let sink = observations.clone();
        async move {
            while let Some(item) = stream.next().await {
                let obs = item.expect("observe never fails here");
                sink.lock().unwrap().push(obs);
            }
        }
    });
    let lock_prefix = format!("{lock_name}/");
    let election_prefix = format!("{election_name}/");
    assert!(
        eventually(Duration::from_secs(10), || async {
            keys_under(&admin, lock_prefix.as_bytes())
                .await
                .unwrap()
                .len()
                == 2
                && keys_under(&admin, election_prefix.as_bytes())
                    .await
                    .unwrap()
                    .len()
                    == 2
                && !observations.lock().unwrap().is_empty()
        })
        .await
    );

    let restart = Instant::now();
    server.restart().await.unwrap();
    let downtime = restart.elapsed();
    // The first answers after the restart: both clients reconnect by themselves (a call that
    // meets a dead connection fails as retryable; the waiter's own calls come later).
    let mut restarted_rev = 0;
    for backend in [&admin, &waiter_backend] {
        let deadline = Instant::now() + Duration::from_secs(10);
        restarted_rev = loop {
            match coord_core::Backend::range(backend, coord_core::RangeRequest::key(root.clone()))
                .await
            {
                Ok(r) => break r.header_revision,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "etcd does not answer after the restart: {e:?}\n{}",
                    server.log_tail(80)
                ),
            }
        };
    }

    // The holder leaves after the restart; the waiter must hear of it through its watch.
    let unlocked = Instant::now();
    guard.unlock().await.unwrap();
    let (got, acquired) = waiting_lock.await.unwrap();
    let got = got.expect("the waiter acquires after the restart");
    let handoff = acquired.duration_since(unlocked);
    lead.resign().await.unwrap();
    let leadership = waiting_campaign
        .await
        .unwrap()
        .expect("the waiting candidate is elected after the restart");
    assert!(
        eventually(Duration::from_secs(10), || async {
            observations.lock().unwrap().last().is_some_and(|o| {
                o.leader
                    .as_ref()
                    .is_some_and(|kv| kv.value == b"waiter" && kv.key == leadership.key())
            })
        })
        .await,
        "observe() reports the new leader after the restart: {:?}",
        observations.lock().unwrap()
    );
    let seen = observations.lock().unwrap().clone();
    eprintln!(
        "MEASURED etcd restart: down {:.0} ms; waiter acquired {:.0} ms after the post-restart \
         unlock; observe saw {:?}",
        ms(downtime),
        ms(handoff),
        seen.iter()
            .map(|o| o
                .leader
                .as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
            .collect::<Vec<_>>()
    );
    // Never back to an older leader: revisions rise, and "holder" never follows "waiter".
    assert!(seen.windows(2).all(|w| w[0].revision <= w[1].revision));
    assert_eq!(
        seen.first()
            .and_then(|o| o.leader.as_ref())
            .map(|kv| kv.value.clone()),
        Some(b"holder".to_vec())
    );
    let first_waiter = seen
        .iter()
        .position(|o| o.leader.as_ref().is_some_and(|kv| kv.value == b"waiter"))
        .unwrap();
    assert!(seen[first_waiter..]
        .iter()
        .all(|o| o.leader.as_ref().is_some_and(|kv| kv.value == b"waiter")));
    assert!(seen[first_waiter].revision > restarted_rev);

    got.unlock().await.unwrap();
    leadership.resign().await.unwrap();
    watcher.abort();
    for s in [&holder, &waiter, &observer] {
        s.close().await.unwrap();
    }
    wait_prefix_empty(&admin, root.as_bytes(), Duration::from_secs(5))
        .await
        .unwrap();
    wait_leases_gone(
        &admin,
        &[holder.lease(), waiter.lease(), observer.lease()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}
