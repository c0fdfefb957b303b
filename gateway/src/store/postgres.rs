//! PostgreSQL (DESIGN §7): the `[storage.postgres]` settings, a pool of connections over TLS
//! (rustls with the ring provider, the server verified against a configured CA, a client
//! certificate optional), and the schema's versioned migrations ([`migrate`]).
//!
//! Client: `tokio-postgres` (the PostgreSQL frontend/backend protocol 3.0) pooled by
//! `deadpool-postgres`, TLS by `tokio-postgres-rustls`. SQL is kept portable to CockroachDB
//! and YugabyteDB: no sequences, no advisory locks, no PostgreSQL-only types.

pub mod audit;
pub mod consents;
pub mod feed;
pub mod flows;
mod migrate;
pub mod notes;
pub mod replica;

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_postgres::config::{Host, SslMode};

pub use migrate::{MIGRATIONS, Migrated, Migration, SCHEMA_VERSION, migrate, schema_version};

use crate::base::settings::{Schema, Section, count, duration, path, secs, text};

/// `[storage.postgres]`: how a replica reaches the deployment's database.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The connection URL, libpq style (`postgresql://user@host:port/dbname`, several hosts
    /// allowed: `host1:5432,host2:5432`, with `target_session_attrs=read-write` to find the
    /// primary). It holds no password ([`PostgresConfig::password_file`]).
    pub url: String,
    /// A file whose first line is the password, if the server asks for one (SCRAM-SHA-256).
    pub password_file: Option<PathBuf>,
    /// Connections in the pool at most.
    pub pool_size: usize,
    /// How long opening a connection (TCP, TLS, authentication) may take; also how long a
    /// caller waits for a free connection.
    pub connect_timeout: Duration,
    /// PEM file of the CA(s) the server's certificate must chain to. When set, every
    /// connection uses TLS and the server's name is checked against its certificate; without
    /// it connections are plain TCP, which only loopback hosts and Unix sockets may use.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain presented to the server (with [`PostgresConfig::client_key`]).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of [`PostgresConfig::client_cert`].
    pub client_key: Option<PathBuf>,
    /// Run every transaction at `SERIALIZABLE` (as CockroachDB always does) instead of
    /// PostgreSQL's `READ COMMITTED` with row locks; lost conflicts are tried again either
    /// way.
    pub serializable: bool,
    /// How a replica learns that another one logged new entries (live inboxes): `LISTEN`
    /// for the log's notifications with a look every [`PostgresConfig::poll_interval`]
    /// besides (`notifications = "listen"`, the default), or looking every
    /// `poll_interval` only (`"poll"`: engines without LISTEN/NOTIFY, such as CockroachDB).
    pub listen: bool,
    /// How often a replica looks for new entries without being told.
    pub poll_interval: Duration,
}

impl PostgresConfig {
    /// How a replica learns that the log grew, as configured.
    pub fn wakeup(&self) -> feed::Wakeup {
        if self.listen {
            feed::Wakeup::Listen {
                safety_poll: self.poll_interval,
            }
        } else {
            feed::Wakeup::Poll(self.poll_interval)
        }
    }
}

/// `[storage.postgres]`'s keys.
pub(crate) static CONFIG_SCHEMA: Schema = Schema {
    section: "storage.postgres",
    keys: &[
        text("url", true),
        path("password_file", false),
        count("pool_size", 16, 1024),
        duration("connect_timeout", secs(5), secs(1), secs(120)),
        path("ca", false),
        path("client_cert", false),
        path("client_key", false),
        text("isolation", false),
        text("notifications", false),
        duration(
            "poll_interval",
            secs(1),
            Duration::from_millis(10),
            secs(60),
        ),
    ],
};

impl PostgresConfig {
    /// Reads `[storage.postgres]` from `s` (paths relative to `base`), reporting every
    /// problem to `s`: a URL that does not parse or holds a password, plain TCP to a host
    /// that is not loopback, a client certificate without its key (or the reverse). `None`
    /// when the URL is missing or unusable.
    pub(crate) fn read(s: &mut Section<'_>, base: &Path) -> Option<Self> {
        let url = s.text("url");
        let password_file = s.file("password_file", base);
        let pool_size = s.count("pool_size");
        let connect_timeout = s.duration("connect_timeout");
        let ca = s.file("ca", base);
        let client_cert = s.file("client_cert", base);
        let client_key = s.file("client_key", base);
        let serializable = match s.text("isolation").as_deref() {
            None | Some("read_committed") => false,
            Some("serializable") => true,
            Some(other) => {
                s.problem(
                    "isolation",
                    format!("must be \"read_committed\" or \"serializable\", not {other:?}"),
                );
                false
            }
        };
        let listen = match s.text("notifications").as_deref() {
            None | Some("listen") => true,
            Some("poll") => false,
            Some(other) => {
                s.problem(
                    "notifications",
                    format!("must be \"listen\" or \"poll\", not {other:?}"),
                );
                true
            }
        };
        let poll_interval = s.duration("poll_interval");
        if client_cert.is_some() != client_key.is_some() {
            s.problem(
                if client_cert.is_some() {
                    "client_key"
                } else {
                    "client_cert"
                },
                "client_cert and client_key go together",
            );
        }
        let url = url?;
        let parsed = match tokio_postgres::Config::from_str(&url) {
            Ok(parsed) => parsed,
            Err(e) => {
                s.problem("url", format!("not a PostgreSQL connection URL: {e}"));
                return None;
            }
        };
        if parsed.get_password().is_some() {
            // It would sit in every copy of the configuration.
            s.problem(
                "url",
                "must not hold a password: put it in a file named by password_file",
            );
            return None;
        }
        if parsed.get_hosts().is_empty() {
            s.problem("url", "names no host");
            return None;
        }
        if ca.is_none()
            && let Some(addr) = parsed.get_hostaddrs().iter().find(|a| !a.is_loopback())
        {
            // `hostaddr` is where the connection goes, whatever the host is named.
            s.problem(
                "ca",
                format!(
                    "required for hostaddr {addr}: only loopback hosts and Unix sockets may be \
                     reached without TLS"
                ),
            );
            return None;
        }
        if ca.is_none()
            && let Some(host) = parsed.get_hosts().iter().find(|h| !is_local(h))
        {
            let Host::Tcp(name) = host else {
                unreachable!("a Unix socket is local")
            };
            s.problem(
                "ca",
                format!(
                    "required for host {name}: only loopback hosts and Unix sockets may be \
                     reached without TLS"
                ),
            );
            return None;
        }
        Some(Self {
            url,
            password_file,
            pool_size: usize::try_from(pool_size).unwrap_or(usize::MAX),
            connect_timeout,
            ca,
            client_cert,
            client_key,
            serializable,
            listen,
            poll_interval,
        })
    }

    /// Plain-TCP settings for a database on this machine: `url` with no TLS, 16 connections,
    /// 5 s to connect. For `casegate dev --cluster` and tests.
    pub fn local(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password_file: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            ca: None,
            client_cert: None,
            client_key: None,
            serializable: false,
            listen: true,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Whether `host` is this machine: a Unix socket, `localhost`, or a loopback address.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Why the database could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// A configured file (CA, client certificate or key, password) could not be used; says
    /// which and why.
    #[error("{0}")]
    Setup(String),
    /// No connection could be had: the server is down or unreachable, TLS or authentication
    /// failed, or the pool waited [`PostgresConfig::connect_timeout`] in vain.
    #[error("cannot reach the database: {0}")]
    Unavailable(String),
    /// The server refused or failed a statement; holds its SQLSTATE (PostgreSQL manual,
    /// appendix A) and message.
    #[error("database error {code}: {message}")]
    Sql {
        /// The five-character SQLSTATE code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The database holds data this gateway cannot use: a stored hash of the wrong length, a
    /// tree frontier that does not fit its size, a checkpoint another key signed or for
    /// another log, a note that does not decode; says what.
    #[error("the database holds unusable data: {0}")]
    Corrupt(String),
    /// The database's schema is newer than this gateway knows: it was migrated by a later
    /// version, whose data this one must not write.
    #[error(
        "the database's schema is version {found}, newer than this gateway knows ({known}): \
         run a gateway of the version that migrated it"
    )]
    SchemaTooNew {
        /// The newest version applied to the database.
        found: i32,
        /// The newest version this gateway knows ([`SCHEMA_VERSION`]).
        known: i32,
    },
    /// A version applied to the database is not the migration this gateway knows by that
    /// number: the database was migrated by another build.
    #[error(
        "the database's schema version {version} is {found:?}, but this gateway's is {known:?}: \
         the database was migrated by another build"
    )]
    SchemaMismatch {
        /// The version number.
        version: i32,
        /// The name recorded in the database.
        found: String,
        /// The name this gateway gives it.
        known: &'static str,
    },
}

/// SQLSTATEs after which a transaction is tried again (PostgreSQL manual, appendix A; the
/// same codes on CockroachDB and YugabyteDB): `40001` serialization failure, `40P01`
/// deadlock detected.
const CONFLICTS: &[&str] = &["40001", "40P01"];

/// Attempts of one transaction at most.
const ATTEMPTS: u32 = 20;

/// The pause before attempt `tries + 1`: exponential from 5 ms, at most 200 ms, with up to as
/// much again at random, so transactions that collided do not collide again in step (under
/// SERIALIZABLE, as on CockroachDB, conflicts come in bursts). 20 attempts wait about 3-6 s
/// in all.
fn pause(tries: u32) -> std::time::Duration {
    let base = (5u64 << tries.min(6)).min(200);
    let mut jitter = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jitter);
    std::time::Duration::from_millis(base + base * u64::from(jitter[0]) / 255)
}

impl DatabaseError {
    /// The SQLSTATE of a statement's failure, if that is what it is.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Sql { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the transaction lost to a concurrent one ([`CONFLICTS`]) and another attempt
    /// may succeed.
    pub fn is_conflict(&self) -> bool {
        self.code().is_some_and(|c| CONFLICTS.contains(&c))
    }
}

/// Why a store's transaction failed: a rule of the store (`E`, final) or the database (a lost
/// conflict among them, tried again by [`Database::retrying`]).
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// The store's own refusal.
    Rule(E),
    /// The database's.
    Database(DatabaseError),
}

impl<E> From<tokio_postgres::Error> for Failure<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.into())
    }
}

impl<E> From<DatabaseError> for Failure<E> {
    fn from(e: DatabaseError) -> Self {
        Self::Database(e)
    }
}

impl<E> Conflict for Failure<E> {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Database(e) if e.is_conflict())
    }
}

impl<E> Failure<E> {
    /// The store's error, a database failure made one by `database`.
    pub(crate) fn into_rule(self, database: impl FnOnce(DatabaseError) -> E) -> E {
        match self {
            Self::Rule(e) => e,
            Self::Database(e) => database(e),
        }
    }
}

/// An attempt's failure that may be a lost conflict.
pub(crate) trait Conflict {
    /// Whether another attempt may succeed.
    fn is_conflict(&self) -> bool;
}

impl Conflict for DatabaseError {
    fn is_conflict(&self) -> bool {
        DatabaseError::is_conflict(self)
    }
}

impl From<tokio_postgres::Error> for DatabaseError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            // The server cannot serve now (PostgreSQL Appendix A): connection exceptions
            // (class 08), shutting down or starting up (57P01–57P03), too many connections
            // (53300), read-only after a failover (25006) — a retry later, or on the new
            // primary, can succeed.
            Some(db) if is_transient(db.code().code()) => {
                Self::Unavailable(format!("{} ({})", db.message(), db.code().code()))
            }
            Some(db) => Self::Sql {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
            },
            None => Self::Unavailable(error_chain(&e)),
        }
    }
}

/// Whether SQLSTATE `code` says the server cannot serve now rather than that the statement
/// failed.
fn is_transient(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
}

impl From<deadpool_postgres::PoolError> for DatabaseError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => Self::Unavailable(error_chain(&other)),
        }
    }
}

/// `e` and its sources, joined by `: ` (tokio-postgres keeps the cause — refused, TLS,
/// authentication — in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The deployment's database: a pool of connections, opened lazily.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    /// Transactions tried again after a lost conflict, since the pool was made.
    retried: Arc<AtomicU64>,
    /// How to open a connection outside the pool (a listener's, which must be polled for
    /// notifications itself).
    direct: Direct,
}

/// A connection's settings and TLS, for connections the pool does not hold.
#[derive(Clone)]
struct Direct {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Database")
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl Database {
    /// A pool for `config`. Connects nothing yet: the first [`Database::client`] does.
    ///
    /// # Errors
    /// [`DatabaseError::Setup`] for an unreadable CA, client certificate, key or password
    /// file, or a URL that no longer parses.
    pub fn connect(config: &PostgresConfig) -> Result<Self, DatabaseError> {
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| DatabaseError::Setup(format!("storage.postgres.url: {e}")))?;
        pg.connect_timeout(config.connect_timeout);
        if config.serializable {
            pg.options("-c default_transaction_isolation=serializable");
        }
        if pg.get_application_name().is_none() {
            pg.application_name("casegate");
        }
        if let Some(file) = &config.password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| DatabaseError::Setup(format!("{}: {e}", file.display())))?;
            pg.password(text.lines().next().unwrap_or_default());
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let (manager, direct) = match &config.ca {
            Some(ca) => {
                pg.ssl_mode(SslMode::Require);
                let tls = tls_config(
                    ca,
                    config.client_cert.as_deref(),
                    config.client_key.as_deref(),
                )
                .map_err(DatabaseError::Setup)?;
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let direct = Direct {
                    config: pg.clone(),
                    tls: Some(tls.clone()),
                };
                (Manager::from_config(pg, tls, manager_config), direct)
            }
            None => {
                pg.ssl_mode(SslMode::Disable);
                let direct = Direct {
                    config: pg.clone(),
                    tls: None,
                };
                (
                    Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
                    direct,
                )
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| DatabaseError::Setup(e.to_string()))?;
        Ok(Self {
            pool,
            retried: Arc::new(AtomicU64::new(0)),
            direct,
        })
    }

    /// Runs `attempt` (one transaction) until it succeeds, fails otherwise than by a lost
    /// conflict, or has been tried [`ATTEMPTS`] times, pausing after each conflict
    /// ([`pause`]).
    ///
    /// # Errors
    /// The last attempt's error.
    pub(crate) async fn retrying<T, E: Conflict, F: std::future::Future<Output = Result<T, E>>>(
        &self,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, E> {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Err(e) if tries < ATTEMPTS && e.is_conflict() => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    crate::base::metrics::database_conflict_retried();
                    tokio::time::sleep(pause(tries - 1)).await;
                }
                done => return done,
            }
        }
    }

    /// Transactions tried again after losing a conflict to another, since the pool was made.
    pub fn conflicts_retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// A connection of its own, outside the pool, that has run `LISTEN channel`, and a
    /// stream of the notifications it receives (payloads). The stream ends when the
    /// connection does.
    ///
    /// # Errors
    /// [`DatabaseError::Unavailable`] when no connection can be opened.
    pub(crate) async fn listen(
        &self,
        channel: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<String>,
        ),
        DatabaseError,
    > {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match &self.direct.tls {
            Some(tls) => {
                let (client, connection) = self.direct.config.connect(tls.clone()).await?;
                tokio::spawn(forward_notifications(connection, tx));
                client
            }
            None => {
                let (client, connection) =
                    self.direct.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(forward_notifications(connection, tx));
                client
            }
        };
        // The channel name is ours, never outside text.
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok((client, rx))
    }

    /// A connection from the pool, opened if none is free (at most
    /// [`PostgresConfig::pool_size`]; waits up to [`PostgresConfig::connect_timeout`]).
    ///
    /// # Errors
    /// [`DatabaseError::Unavailable`] when none can be had in time; [`DatabaseError::Sql`]
    /// when the server refused the connection (authentication, an unknown database).
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DatabaseError> {
        Ok(self.pool.get().await?)
    }

    /// Whether the database answers a statement now (readiness).
    ///
    /// # Errors
    /// As [`Database::client`], or the statement's failure.
    pub async fn ping(&self) -> Result<(), DatabaseError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// Drives `connection`, passing each notification's payload to `to` until either ends.
async fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    to: tokio::sync::mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
        if let tokio_postgres::AsyncMessage::Notification(n) = message
            && to.send(n.payload().to_owned()).is_err()
        {
            return;
        }
    }
}

/// The TLS client configuration for the database: roots from `ca`, a client certificate if
/// given, the ring provider.
fn tls_config(
    ca: &Path,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    let roots = crate::edge::https::roots(Some(ca))?;
    let builder = rustls::ClientConfig::builder_with_provider(crate::edge::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (client_cert, client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("storage.postgres.client_cert: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Statements run through a connection's statement cache (`deadpool-postgres`'
/// `prepare_cached`): each SQL text is parsed and planned once per connection, then only bound
/// and executed — one round trip per statement instead of two, and no parsing on the server.
#[tonic::async_trait]
pub(crate) trait Prepared: deadpool_postgres::GenericClient {
    /// `query` of the cached statement for `sql`.
    async fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    /// `query_opt` of the cached statement for `sql`.
    async fn query_opt_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }

    /// `query_one` of the cached statement for `sql`.
    async fn query_one_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    /// `execute` of the cached statement for `sql`.
    async fn execute_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }
}

impl<T: deadpool_postgres::GenericClient + ?Sized> Prepared for T {}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_that_cannot_serve_now_is_told_from_a_statement_that_failed() {
        for transient in ["08006", "08001", "57P01", "57P03", "53300", "25006"] {
            assert!(super::is_transient(transient), "{transient}");
        }
        for failed in ["40001", "40P01", "23505", "42P01", "22001"] {
            assert!(!super::is_transient(failed), "{failed}");
        }
    }
}
