//! Several gateways on one PostgreSQL database: a throwaway cluster
//! ([`casegate::dev::postgres::Cluster`]) and N replicas, each its own process
//! (`gateway_child`, so a test can SIGKILL one) on `127.0.0.1:0`, sharing one test
//! configuration ([`TestGateway::prepare`]: PKI, token issuer, keys), hence one audit log
//! under one signing key.

use std::{net::SocketAddr, process::Command};

use casegate::dev::postgres::Cluster;

use crate::{TestGateway, child::ServerProcess};

/// How the replicas run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// LISTEN/NOTIFY with a slow safety poll (60 s): live delivery across replicas can only
    /// be in time by notification.
    Listen,
    /// Polling every 200 ms, no LISTEN (an engine without LISTEN/NOTIFY).
    Poll,
    /// Every transaction SERIALIZABLE: concurrent flows lose serialization conflicts and are
    /// tried again.
    Serializable,
}

/// A database and the replicas serving from it.
pub struct Replicas {
    /// The shared configuration, PKI and token issuer (not itself serving).
    pub gw: TestGateway,
    _db_dir: tempfile::TempDir,
    cluster: Cluster,
    child: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    running: Vec<Option<ServerProcess>>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("replicas", &self.running.len())
            .finish_non_exhaustive()
    }
}

/// `None` (after a message) when the machine has no PostgreSQL server binaries; with
/// `CI=true` that is a failure instead.
pub fn postgres_available() -> bool {
    if casegate::dev::postgres::binaries().is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and no PostgreSQL server binaries: .ci/run installs them"
    );
    eprintln!("skipped: no PostgreSQL server binaries on this machine");
    false
}

impl Replicas {
    /// A fresh database and `n` replicas on it in `mode`, started one after another (the
    /// first migrates the schema); `child` is the `gateway_child` binary. `None` when the
    /// machine has no PostgreSQL ([`postgres_available`]).
    pub fn start(n: usize, mode: Mode, child: &str) -> Option<Self> {
        Self::start_with(n, mode, &[child.into()], "")
    }

    /// As [`Replicas::start`], each replica run as `child` (program and arguments, the
    /// configuration file's path appended) with `extra` appended to the shared
    /// configuration (TOML).
    pub fn start_with(
        n: usize,
        mode: Mode,
        child: &[std::ffi::OsString],
        extra: &str,
    ) -> Option<Self> {
        if !postgres_available() {
            return None;
        }
        let gw = TestGateway::prepare(extra, &[]);
        let db_dir = tempfile::tempdir().expect("folder");
        let cluster = Cluster::start(db_dir.path(), &[]).expect("throwaway cluster starts");
        cluster.create_database("casegate").expect("database");
        let mut env = vec![
            ("CASEGATE_STORAGE__BACKEND", "postgres".to_owned()),
            ("CASEGATE_STORAGE__POSTGRES__URL", cluster.url("casegate")),
            ("CASEGATE_STORAGE__POSTGRES__POOL_SIZE", "8".to_owned()),
            ("CASEGATE_METRICS__LISTEN", "127.0.0.1:0".to_owned()),
        ];
        match mode {
            Mode::Listen => {
                env.push((
                    "CASEGATE_STORAGE__POSTGRES__POLL_INTERVAL",
                    "60s".to_owned(),
                ));
            }
            Mode::Poll => {
                env.push((
                    "CASEGATE_STORAGE__POSTGRES__NOTIFICATIONS",
                    "poll".to_owned(),
                ));
                env.push((
                    "CASEGATE_STORAGE__POSTGRES__POLL_INTERVAL",
                    "200ms".to_owned(),
                ));
            }
            Mode::Serializable => {
                env.push((
                    "CASEGATE_STORAGE__POSTGRES__ISOLATION",
                    "serializable".to_owned(),
                ));
            }
        }
        let mut replicas = Self {
            gw,
            _db_dir: db_dir,
            cluster,
            child: child.to_vec(),
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            running: Vec::new(),
        };
        replicas.add(n);
        Some(replicas)
    }

    /// Starts `n` more replicas, one after another.
    pub fn add(&mut self, n: usize) {
        for _ in 0..n {
            let process = self.spawn();
            self.running.push(Some(process));
        }
    }

    fn spawn(&self) -> ServerProcess {
        let mut command = Command::new(&self.child[0]);
        command
            .args(&self.child[1..])
            .arg(self.gw.config_path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn");
        ServerProcess::spawn(command)
    }

    /// Replica `i`'s address.
    ///
    /// # Panics
    /// If it is not running.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.running[i].as_ref().expect("replica running").addr
    }

    /// The database transactions the running replicas tried again after losing a conflict
    /// (`casegate_database_conflicts_retried_total`, summed over their metrics).
    pub async fn conflicts_retried(&self) -> u64 {
        let mut total = 0;
        for process in self.running.iter().flatten() {
            let addr = process.metrics.expect("metrics served");
            let page = crate::web::WebClient::to(&format!("http://{addr}"))
                .get("/metrics")
                .await;
            assert_eq!(page.status, 200, "metrics scraped");
            total += page
                .body
                .lines()
                .find_map(|l| l.strip_prefix("casegate_database_conflicts_retried_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
        }
        total
    }

    /// The running replicas' processes.
    pub fn processes(&self) -> impl Iterator<Item = &ServerProcess> {
        self.running.iter().flatten()
    }

    /// CPU time the database server has used so far (user and system, in seconds): the
    /// postmaster with the children it has reaped, and its children running now.
    pub fn database_cpu_seconds(&self) -> f64 {
        let pid = std::fs::read_to_string(self.cluster.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok());
        let Some(pid) = pid else { return 0.0 };
        let mut total = crate::child::cpu_seconds_with_children(&format!("/proc/{pid}/stat"));
        for child in crate::child::children(pid) {
            total += crate::child::cpu_seconds(&format!("/proc/{child}/stat"));
        }
        total
    }

    /// Every running replica's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.running.iter().flatten().map(|p| p.addr).collect()
    }

    /// Typed clients for `org` acting as `role` on replica `i`.
    pub async fn caller(&self, i: usize, org: &str, role: &str) -> crate::Caller {
        self.gw.caller_at(self.addr(i), org, role).await
    }

    /// SIGKILLs replica `i` (no drain, nothing flushed).
    pub fn kill(&mut self, i: usize) {
        self.running[i].take().expect("replica running").kill();
    }

    /// Starts replica `i` again (a new port).
    pub fn restart(&mut self, i: usize) {
        if let Some(process) = self.running[i].take() {
            process.stop();
        }
        self.running[i] = Some(self.spawn());
    }

    /// Stops the database server at once (in-flight transactions fail).
    pub fn stop_database(&mut self) {
        self.cluster.kill().expect("database stops");
    }

    /// Starts the stopped database server again on the same port and data.
    pub fn start_database(&mut self) {
        self.cluster.restart().expect("database starts again");
    }

    /// Replica `i`'s readiness as its admin listener answers it (`GET /readyz`): the HTTP
    /// status.
    pub async fn readiness(&self, i: usize) -> u16 {
        let addr = self.running[i]
            .as_ref()
            .and_then(|p| p.metrics)
            .expect("admin listener");
        crate::web::WebClient::to(&format!("http://{addr}"))
            .get("/readyz")
            .await
            .status
    }

    /// A SQL client to the database, for checks behind the replicas' backs.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.cluster.url("casegate"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for process in self.running.iter_mut().filter_map(Option::take) {
            process.kill();
        }
    }
}
