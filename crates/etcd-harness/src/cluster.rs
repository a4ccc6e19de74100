//! A multi-member etcd cluster on loopback.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::HarnessError;
use crate::process::{etcd_binary, free_ports};
use crate::server::{EtcdOptions, EtcdServer, Spec};
use crate::tls::TlsFiles;

/// An etcd cluster of `n` members named `m0`, `m1`, … on `127.0.0.1`, each with its own ports,
/// data dir and log. Dropping it kills every member.
#[derive(Debug)]
pub struct EtcdCluster {
    // Dropped before the directory.
    members: Vec<EtcdServer>,
    _dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each is healthy and the cluster has a leader.
    pub async fn start(n: usize) -> Result<EtcdCluster, HarnessError> {
        Self::start_with(n, EtcdOptions::new()).await
    }

    /// [`EtcdCluster::start`] with options applied to every member.
    pub async fn start_with(n: usize, options: EtcdOptions) -> Result<EtcdCluster, HarnessError> {
        if n == 0 {
            return Err(HarnessError::new("a cluster needs at least one member"));
        }
        let binary = etcd_binary().ok_or_else(|| {
            HarnessError::new("etcd binary not found (set ETCD_BIN or put etcd on PATH)")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("etcd-harness-cluster-")
            .tempdir()
            .map_err(|e| HarnessError::new("creating a temp dir").with_source(e))?;
        let tls = options
            .tls_files()
            .cloned()
            .map(Ok)
            .or_else(|| {
                options
                    .generates_tls()
                    .then(|| TlsFiles::generate(&dir.path().join("tls")))
            })
            .transpose()?;
        let token = format!("harness-cluster-{}-{}", std::process::id(), n);
        let mut last_err = None;
        for _attempt in 0..5 {
            let ports =
                free_ports(2 * n).map_err(|e| HarnessError::new("picking ports").with_source(e))?;
            let initial_cluster = (0..n)
                .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[2 * i + 1]))
                .collect::<Vec<_>>()
                .join(",");
            let members: Vec<EtcdServer> = (0..n)
                .map(|i| {
                    let member_dir = dir.path().join(format!("m{i}"));
                    let spec = Spec {
                        name: format!("m{i}"),
                        data_dir: member_dir.join("data"),
                        log_path: member_dir.join("etcd.log"),
                        client_port: ports[2 * i],
                        peer_port: ports[2 * i + 1],
                        initial_cluster: initial_cluster.clone(),
                        cluster_token: format!("{token}-{}", ports[0]),
                        tls: tls.clone(),
                        client_cert_auth: options.requires_client_cert(),
                        args: options.extra_args().to_vec(),
                    };
                    EtcdServer::new(spec, binary.clone(), options.startup_timeout(), None)
                })
                .collect();
            let mut failure = None;
            for m in &members {
                if let Err(e) = m.spawn_process() {
                    failure = Some(e);
                    break;
                }
            }
            if failure.is_none() {
                for m in &members {
                    if let Err(e) = m.wait_healthy().await {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let Some(e) = failure else {
                let cluster = EtcdCluster { members, _dir: dir };
                cluster.wait_for_leader(options.startup_timeout()).await?;
                return Ok(cluster);
            };
            let in_use = members.iter().any(|m| {
                std::fs::read_to_string(m.log_path())
                    .map(|s| s.contains("address already in use"))
                    .unwrap_or(false)
            });
            for m in &members {
                m.kill();
            }
            if !in_use {
                drop(members);
                let _ = dir.keep();
                return Err(e);
            }
            for m in &members {
                let _ = std::fs::remove_dir_all(m.data_dir());
            }
            last_err = Some(e);
        }
        let _ = dir.keep();
        Err(last_err.unwrap_or_else(|| HarnessError::new("could not start the cluster")))
    }

    /// Member `i` (panics when out of range), with its own stop/kill/pause/resume/restart.
    pub fn member(&self, i: usize) -> &EtcdServer {
        &self.members[i]
    }

    /// Every member.
    pub fn members(&self) -> &[EtcdServer] {
        &self.members
    }

    /// Every member's client endpoint (`127.0.0.1:PORT`).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// The index of the member that is leader, as reported by the first running member that
    /// answers `Status`; `None` when no member reports a running leader.
    pub async fn leader_index(&self) -> Option<usize> {
        for m in self.members.iter().filter(|m| m.is_running()) {
            let Ok(mut client) = m.client().await else {
                continue;
            };
            let status = match tokio::time::timeout(Duration::from_secs(1), client.status()).await {
                Ok(Ok(s)) => s,
                _ => continue,
            };
            let leader = status.leader();
            if leader == 0 {
                continue;
            }
            // Followers keep naming a killed leader until they time out: skip it.
            if let Some(i) = self.members.iter().position(|m| m.member_id() == leader) {
                if self.members[i].is_running() {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits until some member reports a leader; returns its index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader_index().await {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::new(format!("no leader within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
