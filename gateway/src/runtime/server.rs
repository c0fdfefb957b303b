//! Assembles the gateway from a checked configuration and serves it on a bound listener until
//! a shutdown future resolves, then drains in-flight calls for at most the grace period.

use std::{future::Future, sync::Arc, time::Duration};

use casegate_proto::v1::{
    audit_service_server::AuditServiceServer, consent_service_server::ConsentServiceServer,
    disclosure_service_server::DisclosureServiceServer,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tower::Layer;
use tower::limit::GlobalConcurrencyLimitLayer;

use casegate_audit::{
    checkpoint::Signer,
    log::{AppendError, OpenError},
};
use casegate_consent::store::StoreError;

use crate::{
    api::{AuditApi, ConsentApi, DisclosureApi},
    app::audit::{self, Audit},
    app::{
        Notes,
        notes::{NoteError, NoteStore},
    },
    crypto::keyring::Keyring,
    crypto::pseudonym::Pseudonymizer,
    edge::auth::{Authenticate, Authenticator},
    edge::call_span::CallSpanLayer,
    edge::limits::{self, RateLimiter},
    edge::tls,
    runtime::config::Backend,
    runtime::config::{Config, ConfigError, Problem},
    runtime::data_dir::{DataDir, DataDirError},
    runtime::supervisor::{Supervisor, TaskEnded},
    store::postgres::{Database, DatabaseError, PostgresConfig, audit::AuditLog, replica::Replica},
};

mod embedded;

use embedded::{EmbeddedState, close_embedded, spawn_embedded_tasks};

/// The fully-loaded gateway, ready to serve: every file read, every key parsed, its state
/// open.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    metrics: Option<TcpListener>,
    tls: Arc<tls::TlsReloader>,
    auth: Authenticator,
    pseudonyms: Pseudonymizer,
    state: State,
}

/// Where the gateway's state lives.
#[derive(Debug)]
enum State {
    /// The embedded stores and log in the data folder (one process).
    Embedded(Box<EmbeddedState>),
    /// A database shared with other replicas.
    Postgres(Arc<Replica>),
}

/// Why [`Gateway::build`] failed; nothing has been bound.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file the configuration names is missing or unusable (every problem listed).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data folder cannot be created or opened, or another process holds its lock.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The audit log cannot be opened or recovered (damage before its last commit, a
    /// checkpoint file another key signed, an I/O error).
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] OpenError),
    /// The `gateway_started` entry could not be appended.
    #[error("cannot record the gateway's start in the audit log: {0}")]
    AuditAppend(#[from] AppendError),
    /// The audit query index cannot be opened or brought up to date.
    #[error("audit index: {0} (rebuild it with `casegate audit reindex`)")]
    Index(casegate_audit::index::IndexError),
    /// The consent store cannot be opened, or its reconciliation mark not written.
    #[error("cannot open the consent store: {0}")]
    Consents(#[from] StoreError),
    /// The note store cannot be opened (damaged journal, unreadable file), or its pending
    /// notes not recovered.
    #[error("cannot open the note store: {0}")]
    Notes(#[from] NoteError),
    /// Replaying the audit log into the stores failed.
    #[error("cannot reconcile the consent store with the audit log: {0}")]
    Reconcile(#[from] crate::app::reconcile::ReconcileError),
    /// The database (`storage.backend = "postgres"`) cannot be reached, migrated or read, its
    /// schema is newer than this gateway knows, or its log was signed by another key.
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

/// Why [`Gateway::serve`] stopped other than at its shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The embedded descriptor set cannot be served by gRPC reflection.
    #[error("reflection descriptors are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server (tonic) failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The gRPC server's task panicked or was cancelled.
    #[error("gRPC server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The Prometheus recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A background task ended while serving (the listener, storage, …): the gateway
    /// stopped, drained and exits non-zero so a supervisor restarts it.
    #[error(transparent)]
    Stopped(#[from] TaskEnded),
}

/// Everything the configuration names, loaded and checked: certificates and keys, token
/// issuers' keys, the audit signing key, the pseudonym secret.
#[derive(Debug)]
pub struct Material {
    /// The server's TLS configuration (certificate, key, client CA and CRLs).
    pub tls: Arc<tls::TlsReloader>,
    /// The token verifier, with every issuer's key set.
    pub auth: Authenticator,
    /// The audit log's checkpoint signer (C2SP signed-note key), named as `audit.origin`.
    pub signer: Signer,
    /// The subject pseudonym key (HMAC-SHA-256).
    pub pseudonyms: Pseudonymizer,
    /// The note encryption keys (AES-256-GCM).
    pub keyring: Arc<Keyring>,
}

impl Material {
    /// Loads every file, reporting all problems at once. Touches no state: this is also what
    /// `casegate check-config` runs.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every file that cannot be read or used, by its key.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let tls = tls::TlsReloader::load(&config.tls)
            .map(Arc::new)
            .map_err(|p| problems.extend(p));
        let auth = Authenticator::from_config(&config.auth).map_err(|p| problems.extend(p));
        let signer = audit::load_signer(&config.audit.signing_key)
            .and_then(|signer| {
                // C2SP tlog-checkpoint: the origin is the name of the key that signs it; a log
                // whose origin is another name would fail `audit verify`.
                if signer.name() == config.audit.origin {
                    Ok(signer)
                } else {
                    Err(format!(
                        "the signing key is named {:?} but audit.origin is {:?}; a checkpoint's \
                         origin must be its key's name (C2SP tlog-checkpoint)",
                        signer.name(),
                        config.audit.origin
                    ))
                }
            })
            .map_err(|message| {
                problems.push(Problem {
                    key: "audit.signing_key".into(),
                    message,
                })
            });
        let pseudonyms = std::fs::read_to_string(&config.privacy.pseudonym_key)
            .map_err(|e| e.to_string())
            .and_then(|text| Pseudonymizer::from_text(&text))
            .map_err(|message| {
                problems.push(Problem {
                    key: "privacy.pseudonym_key".into(),
                    message: format!("{}: {message}", config.privacy.pseudonym_key.display()),
                })
            });
        let keyring = Keyring::load(&config.notes.keyring)
            .map(Arc::new)
            .map_err(|e| {
                problems.push(Problem {
                    key: "notes.keyring".into(),
                    message: e.to_string(),
                })
            });
        match (tls, auth, signer, pseudonyms, keyring) {
            (Ok(tls), Ok(auth), Ok(signer), Ok(pseudonyms), Ok(keyring)) => Ok(Self {
                tls,
                auth,
                signer,
                pseudonyms,
                keyring,
            }),
            _ => Err(ConfigError::invalid(&config.source, problems)),
        }
    }
}

/// How a serve run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight call finished within the grace period.
    Clean,
    /// The grace period ran out; the remaining calls were cut off.
    GraceElapsed,
}

// === impl Gateway ===

impl Gateway {
    /// Loads TLS material, token keys and the audit signing key, reporting every problem at
    /// once; then opens the gateway's state and records the start. Binds nothing.
    ///
    /// - Embedded: takes the data folder's lock, opens (recovering) the audit log and the
    ///   stores and reconciles them with the log.
    /// - PostgreSQL: connects, applies the schema's migrations (under the schema lock),
    ///   opens the shared log and starts this replica's sequencer and feed on the current
    ///   runtime.
    ///
    /// # Errors
    /// [`StartError`]: the first step that failed; the data folder's lock is released.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let material = Material::load(&config)?;
        match &config.storage.backend {
            Backend::Embedded => Self::build_embedded(config, material),
            Backend::Postgres(postgres) => {
                let postgres = postgres.clone();
                Self::build_postgres(config, &postgres, material).await
            }
        }
    }

    async fn build_postgres(
        config: Config,
        postgres: &PostgresConfig,
        material: Material,
    ) -> Result<Self, StartError> {
        let Material {
            tls,
            auth,
            signer,
            pseudonyms,
            keyring,
        } = material;
        let db = Database::connect(postgres)?;
        let migrated = crate::store::postgres::migrate(&db).await?;
        tracing::info!(
            from = migrated.from,
            to = migrated.to,
            "database schema up to date"
        );
        let log = Arc::new(
            AuditLog::open(db.clone(), signer, &config.audit.origin, postgres.listen).await?,
        );
        // The clock never reads earlier than the newest logged entry, on any replica.
        if let Some(newest) = log.newest_time() {
            crate::base::clock::raise_floor(newest);
        }
        let replica = Arc::new(Replica::new(
            db.clone(),
            log,
            pseudonyms.clone(),
            keyring,
            Arc::new(config.vocabulary.clone()),
            postgres.wakeup(),
        ));
        crate::api::backend::Backend::append(replica.as_ref(), &audit::started_entry()).await?;
        tracing::info!(
            entries = replica.log().size(),
            "audit log open in the database"
        );
        Ok(Self {
            config,
            metrics: None,
            tls,
            auth,
            pseudonyms,
            state: State::Postgres(replica),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves Prometheus metrics on `listener` (the admin listener) while serving.
    pub fn with_metrics(mut self, listener: TcpListener) -> Self {
        self.metrics = Some(listener);
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, reports
    /// NOT_SERVING on health, and drains in-flight calls for at most the grace period.
    ///
    /// # Errors
    /// [`ServeError`] if the server could not start, or stopped early because it or a
    /// background task ended or failed (after draining as at shutdown).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Drained, ServeError> {
        let Gateway {
            config,
            metrics: metrics_listener,
            tls,
            auth,
            pseudonyms,
            state,
        } = self;
        let limits = &config.limits;
        let (health, health_service) = tonic_health::server::health_reporter();
        // Serving while the clock is not behind and the state is reachable.
        let ready = Arc::new(crate::runtime::admin::Readiness::default());
        set_health(
            &health,
            ready.set_clock(crate::base::clock::too_far_behind().is_none()),
        )
        .await;

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let authenticate = Authenticate {
            authenticator: auth,
            rate: Arc::new(RateLimiter::new(limits.rate_per_second, limits.rate_burst)),
        };
        let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
        let backend: crate::api::backend::Shared = match &state {
            State::Embedded(e) => Arc::new(crate::api::embedded::Embedded::new(
                e.notes.clone(),
                e.consents.clone(),
                e.audit.clone(),
                pseudonyms.clone(),
                e.keyring.clone(),
                Arc::new(config.vocabulary.clone()),
            )),
            State::Postgres(replica) => replica.clone(),
        };
        let consent = authenticate.layer(
            ConsentServiceServer::new(ConsentApi::new(
                backend.clone(),
                pseudonyms.clone(),
                Arc::new(config.vocabulary.clone()),
                config.max_consent_period,
            ))
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes),
        );
        let disclosure = authenticate.layer(
            DisclosureServiceServer::new(DisclosureApi {
                backend: backend.clone(),
                pseudonyms: pseudonyms.clone(),
                max_body_bytes: limits.max_body_bytes,
                retention: config.notes.retention,
                stopping: stopping_rx,
            })
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes),
        );
        let audit_service = authenticate.layer(
            AuditServiceServer::new(AuditApi {
                backend: backend.clone(),
                pseudonyms,
                supervisory: config.privacy.supervisory_orgs.clone().into(),
                names: Arc::new(config.organisations.clone()),
                max_message_bytes: limits.max_message_bytes,
            })
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes),
        );

        let mut tasks = Supervisor::new();
        tasks.spawn_once("token key prefetch", {
            let authenticator = authenticate.authenticator.clone();
            async move { authenticator.prefetch().await }
        });
        tasks.spawn("CRL reloader", reload_crls(tls.clone()));
        tasks.spawn("clock watch", {
            let (health, ready) = (health.clone(), ready.clone());
            async move {
                crate::base::clock::watch(CLOCK_CHECK_INTERVAL, move |serving| {
                    let (health, ready) = (health.clone(), ready.clone());
                    async move { set_health(&health, ready.set_clock(serving)).await }
                })
                .await;
                Ok(())
            }
        });
        tasks.spawn("note sweep", {
            let backend = backend.clone();
            let (ttl, every) = (config.notes.ttl, config.notes.sweep_interval);
            let forget_after = config.notes.forget_after;
            async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match backend.sweep(ttl, forget_after).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(purged = n, "expired note bodies deleted"),
                        Err(e) => tracing::error!(error = %e.message(), "note sweep failed"),
                    }
                }
            }
        });
        match &state {
            State::Embedded(e) => spawn_embedded_tasks(&mut tasks, e),
            State::Postgres(replica) => {
                // Readiness follows the database; a sequencer or feed that stopped (it
                // panicked) stops the gateway, as a failed embedded store does.
                tasks.spawn("database readiness", {
                    let replica = replica.clone();
                    let (health, ready) = (health.clone(), ready.clone());
                    async move {
                        let mut tick = tokio::time::interval(DATABASE_CHECK_INTERVAL);
                        loop {
                            tick.tick().await;
                            if let Some(reason) = replica.failure() {
                                return Err(reason);
                            }
                            let reachable = replica.database().ping().await;
                            if let Err(e) = &reachable {
                                tracing::warn!(error = %e, "the database is unreachable");
                            }
                            set_health(&health, ready.set_state(reachable.is_ok())).await;
                        }
                    }
                });
            }
        }
        if let Some(listener) = metrics_listener {
            crate::base::metrics::init().map_err(ServeError::Metrics)?;
            if let State::Embedded(e) = &state {
                e.reconciled.record_metrics();
            }
            tasks.spawn(
                "metrics listener",
                crate::runtime::admin::serve(listener, ready.clone()),
            );
        }
        let (connections, acceptor) = tls::accept(
            listener,
            tls,
            tls::AcceptBounds {
                handshake_timeout: config.server.handshake_timeout,
                lifetime: Some(
                    config.server.max_connection_age + config.server.max_connection_age_grace,
                ),
                max_connections: config.server.max_connections,
            },
        );
        let stop_accepting = acceptor.abort_handle();
        tasks.spawn("gRPC listener", async move {
            match acceptor.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("listener failed: {e}")),
                Err(e) => Err(e.to_string()),
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let router = connection_bounds(Server::builder(), &config)
            .layer(
                tower::ServiceBuilder::new()
                    .layer(CallSpanLayer)
                    .map_response(limits::oversize_is_resource_exhausted)
                    .load_shed()
                    .layer(GlobalConcurrencyLimitLayer::new(
                        limits.max_concurrent_calls,
                    )),
            )
            .timeout(limits.request_timeout)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(consent)
            .add_service(disclosure)
            .add_service(audit_service);
        let mut server = tokio::spawn(router.serve_with_incoming_shutdown(
            ReceiverStream::new(connections),
            async {
                let _ = stop_rx.await;
            },
        ));
        match &state {
            State::Embedded(e) => tracing::info!(data_dir = %e.data.path().display(), "serving"),
            State::Postgres(_) => tracing::info!("serving from the database"),
        }

        // Serve until the shutdown signal, or until something the gateway needs stops.
        let (failure, server_done) = tokio::select! {
            result = &mut server => {
                // The server ends by itself when its connections end: say why, if the
                // listener's task (or another) reports it.
                let cause = tokio::time::timeout(Duration::from_secs(1), tasks.first_end()).await;
                let failure = match (cause, result) {
                    (Ok(ended), _) => ServeError::Stopped(ended),
                    (Err(_), Ok(Ok(()))) => TaskEnded {
                        task: "gRPC server",
                        reason: "it ended".into(),
                    }
                    .into(),
                    (Err(_), Ok(Err(e))) => ServeError::Transport(e),
                    (Err(_), Err(e)) => ServeError::Task(e),
                };
                (Some(failure), true)
            }
            ended = tasks.first_end() => (Some(ServeError::Stopped(ended)), false),
            () = shutdown => (None, false),
        };
        if let Some(failure) = &failure {
            tracing::error!(error = %failure, "the gateway cannot go on serving; stopping");
        }
        tasks.abort_all();
        stop_accepting.abort();
        let grace = config.server.shutdown_grace;
        tracing::info!(grace = %humantime::format_duration(grace), "shutting down: draining calls");
        set_health(&health, false).await;
        // Live inbox streams end now; unary calls get the grace period.
        let _ = stopping_tx.send(true);
        let _ = stop_tx.send(());
        let drained = if server_done {
            Drained::Clean
        } else {
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => {
                    if failure.is_none() {
                        result??;
                    }
                    Drained::Clean
                }
                Err(_) => {
                    server.abort();
                    tracing::warn!("grace period elapsed; remaining calls were cut off");
                    Drained::GraceElapsed
                }
            }
        };
        match state {
            State::Embedded(e) => close_embedded(*e).await,
            // Its entries are in the database; waiting calls are answered.
            State::Postgres(replica) => replica.log().close(),
        }
        match failure {
            Some(failure) => Err(failure),
            None => Ok(drained),
        }
    }
}

/// The bounds on each client connection, all reachable by any holder of a certificate from
/// the client CA before a token is checked (RFC 9113):
/// - concurrent streams (`SETTINGS_MAX_CONCURRENT_STREAMS`, §6.5.2): `limits.max_concurrent_streams`;
/// - header list size (`SETTINGS_MAX_HEADER_LIST_SIZE`, §6.5.2): [`MAX_HEADER_LIST_BYTES`];
/// - streams the gateway resets because the client broke the protocol (a malformed request,
///   §8.1.1): after [`MAX_LOCAL_ERROR_RESETS`] on one connection, GOAWAY with
///   `ENHANCE_YOUR_CALM` (§6.8, §7);
/// - streams the client opens and resets before they are served ("rapid reset"): at most
///   [`MAX_PENDING_ACCEPT_RESETS`] waiting at once, then GOAWAY `ENHANCE_YOUR_CALM`;
/// - keep-alive: a PING (§6.7) after `server.keepalive_interval` of silence, the connection
///   closed if it is not answered within `server.keepalive_timeout`;
/// - age: GOAWAY after `server.max_connection_age`, cut `server.max_connection_age_grace`
///   later by [`tls::accept`] (so a revoked certificate's connection ends within that bound
///   in any case);
/// - the TLS handshake: `server.handshake_timeout`, at most
///   [`tls::MAX_PENDING_HANDSHAKES`] at once (in [`tls::accept`]);
/// - connections, open and in handshake: at most `server.max_connections` (in
///   [`tls::accept`]).
pub fn connection_bounds(server: Server, config: &Config) -> Server {
    server
        .max_concurrent_streams(config.limits.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(config.server.keepalive_interval))
        .http2_keepalive_timeout(Some(config.server.keepalive_timeout))
        // tonic sends GOAWAY at the maximum age only when it is given no grace period (with
        // one, it skips GOAWAY and just drops the connection later); the cut at age + grace is
        // made by the TLS layer instead (`tls::accept`).
        .max_connection_age(config.server.max_connection_age)
}

/// Largest header list a request may carry, in bytes as RFC 9113 §6.5.2 counts them (each
/// field's name and value plus 32). A token is a few KiB.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Streams reset by the gateway for protocol errors, per connection, before GOAWAY
/// (`ENHANCE_YOUR_CALM`); hyper's own default, which tonic leaves unset.
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams the client reset before the gateway served them, waiting at once, before GOAWAY
/// (`ENHANCE_YOUR_CALM`); the `h2` default against CVE-2023-44487.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// How often the audit log and the note store are checked for a failure that stops them
/// accepting writes.
const STORAGE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Rebuilds the TLS configuration when a CRL file changes, or at once on SIGHUP; each rebuild
/// cuts the open connections whose certificate is now revoked. On every tick, reports CRLs
/// past their `nextUpdate` (logged when that set changes, and in the metrics). Never ends.
async fn reload_crls(tls: Arc<tls::TlsReloader>) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(tls.crl_reload_interval());
    let mut reported: Vec<String> = Vec::new();
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        // Reading CRLs and checking every open connection's chain is blocking work.
        let reloader = tls.clone();
        let result = crate::base::blocking::run(move || {
            if forced {
                reloader.reload().map(Some)
            } else {
                reloader.reload_if_changed()
            }
        })
        .await
        .map_err(|e| format!("the CRL reload panicked: {e}"))?;
        match result {
            Ok(Some(reloaded)) => {
                tracing::info!(
                    closed_revoked = reloaded.connections_cut,
                    "TLS configuration reloaded (CRLs)"
                );
                if reloaded.connections_cut > 0 {
                    tracing::warn!(
                        connections = reloaded.connections_cut,
                        "closed open connections whose client certificate is now revoked"
                    );
                    crate::base::metrics::connections_cut_on_revocation(reloaded.connections_cut);
                }
            }
            Ok(None) => {}
            Err(problems) => {
                for p in problems {
                    tracing::error!(problem = %p, "TLS reload failed; keeping the previous configuration");
                }
            }
        }
        let stale = tls.stale_crls(std::time::SystemTime::now());
        crate::base::metrics::crls(stale.len(), tls.earliest_next_update());
        let now_reported: Vec<String> = stale.iter().map(|s| s.key.clone()).collect();
        if !stale.is_empty() && tls.stale_policy() == crate::runtime::config::StaleCrls::Refuse {
            // A CRL gone stale refuses its CA's certificates on open connections too. Checked
            // at every tick while one is stale: the handshake check counts whole seconds, so
            // it may agree only a moment after the CRL was first found stale.
            let reloader = tls.clone();
            let cut = crate::base::blocking::run(move || reloader.cut_refused())
                .await
                .map_err(|e| format!("the stale-CRL sweep panicked: {e}"))?;
            if cut > 0 {
                tracing::warn!(
                    connections = cut,
                    "closed open connections whose CA's CRL is past its nextUpdate"
                );
                crate::base::metrics::connections_cut_on_revocation(cut);
            }
        }
        if now_reported != reported {
            for crl in &stale {
                match tls.stale_policy() {
                    crate::runtime::config::StaleCrls::Warn => {
                        tracing::warn!(crl = %crl, "CRL past its nextUpdate is in use")
                    }
                    crate::runtime::config::StaleCrls::Refuse => tracing::error!(
                        crl = %crl,
                        "CRL past its nextUpdate: certificates of its CA are refused"
                    ),
                }
            }
            reported = now_reported;
        }
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(casegate_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

async fn set_health(health: &HealthReporter, serving: bool) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let status = if serving { Serving } else { NotServing };
    for service in ["", SERVICES[0], SERVICES[1], SERVICES[2]] {
        health.set_service_status(service, status).await;
    }
}

/// How often the consent store's reconciliation mark moves to the audit log's end: a start
/// after a crash reads at most this long's entries to reconcile the store.
const RECONCILED_MARK_INTERVAL: Duration = Duration::from_secs(10);

/// How often the system clock is compared with the audit log's newest entry.
const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often a replica checks that its database answers (health NOT_SERVING while not).
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How often the audit index catches up with the log in the background. Often, so each
/// catch-up is small: a second's worth of entries under load took long enough to show in the
/// latency of the calls around it.
const INDEX_INTERVAL: Duration = Duration::from_millis(100);

/// Fully-qualified names of the `casegate.v1` services.
pub const SERVICES: [&str; 3] = [
    "casegate.v1.ConsentService",
    "casegate.v1.DisclosureService",
    "casegate.v1.AuditService",
];
