//! Mutual TLS: the server's rustls configuration (client certificates required, from the
//! configured CA only, checked against its CRLs) and the accept loop that turns TCP
//! connections into TLS streams, each carrying the organisation its client certificate names
//! (read once per connection) and registered among the live connections, so a CRL reload
//! can cut those whose certificate it revokes.

mod config;
pub mod crl;
pub mod live;

use std::{
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use rustls::{
    CertificateError, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime, pem::PemObject,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    base::problem::Problem,
    edge::identity::{ClientIdentity, IdentityError},
};
pub(crate) use config::SCHEMA as CONFIG_SCHEMA;
pub use config::{StaleCrls, TlsConfig};
use crl::{CrlFile, StaleCrl};
use live::{LiveConnections, Registration};

/// What a request knows of its connection: the peer's address and the organisation its
/// client certificate names (`None`: no client certificate). Every request on the
/// connection carries it as an extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The TCP peer's address (`None` if the socket could not say).
    pub remote_addr: Option<SocketAddr>,
    /// The leaf certificate's organisation and fingerprint, or why it names no valid
    /// organisation; `None` without a client certificate.
    pub identity: Option<Result<ClientIdentity, IdentityError>>,
}

/// An accepted mutual-TLS connection. Its client certificate is read when the handshake
/// completes, not on every call. Once cut (its certificate revoked by a CRL reload), every
/// read and write fails with `ConnectionAborted`, which ends the HTTP/2 connection.
#[derive(Debug)]
pub struct Connection {
    stream: TlsStream<TcpStream>,
    peer: Peer,
    registration: Registration,
}

impl Connection {
    /// Reads the client certificate of `stream` and registers the connection in `live`, to be
    /// cut after `lifetime` if given.
    pub fn new(
        stream: TlsStream<TcpStream>,
        live: &Arc<LiveConnections>,
        lifetime: Option<Duration>,
    ) -> Self {
        let (tcp, session) = stream.get_ref();
        let chain = session
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        let peer = Peer {
            remote_addr: tcp.peer_addr().ok(),
            identity: chain.first().map(|leaf| ClientIdentity::from_der(leaf)),
        };
        Self {
            stream,
            peer,
            registration: live.register(chain, lifetime),
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.registration.check(cx, true)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.registration.check(cx, false)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.registration.check(cx, false)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.registration.check(cx, false)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The crypto provider used everywhere: ring. Installing it as the process default keeps a
/// second provider (aws-lc-rs) from ever being picked.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide rustls provider; harmless when already installed.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the server's TLS configuration, reporting every unreadable or invalid file.
pub fn server_config(files: &TlsConfig) -> Result<Arc<ServerConfig>, Vec<Problem>> {
    build(files, SystemTime::now()).map(|built| built.config)
}

/// A server configuration with what it was built from: the client certificate verifier (to
/// check open connections again) and the CRL files.
#[derive(Debug, Clone)]
struct Built {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
    crls: Arc<[CrlFile]>,
}

/// Builds the configuration. With `stale_crls = "refuse"`, a CRL past its `nextUpdate` at
/// `now` is a problem.
fn build(files: &TlsConfig, now: SystemTime) -> Result<Built, Vec<Problem>> {
    let mut problems = Vec::new();
    let chain = read_certs(&files.cert, "tls.cert", &mut problems);
    let key = match PrivateKeyDer::from_pem_file(&files.key) {
        Ok(key) => Some(key),
        Err(e) => {
            problems.push(file_problem("tls.key", &files.key, &e.to_string()));
            None
        }
    };
    let (crls, crl_files) = crl::read(&files.client_crls, &mut problems);
    if files.stale_crls == StaleCrls::Refuse {
        for stale in crl_files.iter().filter_map(|f| f.stale_at(now)) {
            problems.push(Problem {
                key: stale.key.clone(),
                message: format!("{} (refused: tls.stale_crls = \"refuse\")", stale.message()),
            });
        }
    }
    let verifier = read_certs(&files.client_ca, "tls.client_ca", &mut problems).and_then(|cas| {
        match client_verifier(cas, crls, files.stale_crls) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(file_problem("tls.client_ca", &files.client_ca, &e));
                None
            }
        }
    });
    let (Some(chain), Some(key), Some(verifier), true) =
        (chain, key, verifier, problems.is_empty())
    else {
        return Err(problems);
    };
    let built = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_client_cert_verifier(verifier.clone())
                .with_single_cert(chain, key)
                .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))
        });
    match built {
        Ok(mut config) => {
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Built {
                config: Arc::new(config),
                verifier,
                crls: crl_files.into(),
            })
        }
        Err(e) => Err(vec![file_problem("tls.key", &files.key, &e)]),
    }
}

fn client_verifier(
    cas: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    stale: StaleCrls,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    // The builder requires a client certificate unless told otherwise. Revocation is checked
    // for every certificate of the chain (the organisation's and any intermediate CA's)
    // against the configured CRLs; a certificate whose issuer has no configured CRL is not
    // refused for that alone.
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
        if stale == StaleCrls::Refuse {
            builder = builder.enforce_revocation_expiration();
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// Whether `verifier` refuses `chain` (leaf first) now for what its CRLs say: a revoked
/// certificate, or (with `tls.stale_crls = "refuse"`) a CRL past its `nextUpdate`.
fn is_revoked(verifier: &dyn ClientCertVerifier, chain: &[CertificateDer<'static>]) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    matches!(
        verifier.verify_client_cert(leaf, intermediates, UnixTime::now()),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::Revoked
                | CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. }
        ))
    )
}

fn read_certs(
    path: &Path,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<CertificateDer<'static>>> {
    match CertificateDer::pem_file_iter(path).and_then(|it| it.collect::<Result<Vec<_>, _>>()) {
        Ok(certs) if certs.is_empty() => {
            problems.push(file_problem(key, path, "holds no PEM certificate"));
            None
        }
        Ok(certs) => Some(certs),
        Err(e) => {
            problems.push(file_problem(key, path, &e.to_string()));
            None
        }
    }
}

fn file_problem(key: &str, path: &Path, message: &str) -> Problem {
    Problem {
        key: key.to_owned(),
        message: format!("{}: {message}", path.display()),
    }
}

/// The server's TLS configuration, rebuilt when the CRL files change (or on request), so a
/// revoked certificate is refused without a restart. New connections get the newest one; a
/// rebuild cuts the open connections whose certificate chain it revokes.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsConfig,
    current: std::sync::RwLock<Built>,
    /// (modified time, length) of each CRL file when last loaded.
    stamps: std::sync::Mutex<Vec<Option<(std::time::SystemTime, u64)>>>,
    live: Arc<LiveConnections>,
}

impl TlsReloader {
    /// Builds the first configuration from the files of `[tls]`.
    ///
    /// # Errors
    /// Every problem found, each naming its key: an unreadable or malformed certificate, key,
    /// CA or CRL, and a CRL past its `nextUpdate` with `tls.stale_crls = "refuse"`.
    pub fn load(files: &TlsConfig) -> Result<Self, Vec<Problem>> {
        let built = build(files, SystemTime::now())?;
        Ok(Self {
            stamps: std::sync::Mutex::new(Self::stamps_of(files)),
            files: files.clone(),
            current: std::sync::RwLock::new(built),
            live: Arc::new(LiveConnections::default()),
        })
    }

    fn stamps_of(files: &TlsConfig) -> Vec<Option<(std::time::SystemTime, u64)>> {
        files
            .client_crls
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .and_then(|m| Ok((m.modified()?, m.len())))
                    .ok()
            })
            .collect()
    }

    fn built(&self) -> Built {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The newest server configuration, for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.built().config
    }

    /// How often the CRL files are checked for changes (`tls.crl_reload_interval`).
    pub fn crl_reload_interval(&self) -> Duration {
        self.files.crl_reload_interval
    }

    /// The open connections.
    pub fn live(&self) -> &Arc<LiveConnections> {
        &self.live
    }

    /// The loaded CRL files past their `nextUpdate` at `now`.
    pub fn stale_crls(&self, now: SystemTime) -> Vec<StaleCrl> {
        self.built()
            .crls
            .iter()
            .filter_map(|f| f.stale_at(now))
            .collect()
    }

    /// The earliest `nextUpdate` of the loaded CRLs, in seconds since the Unix epoch.
    pub fn earliest_next_update(&self) -> Option<i64> {
        self.built().crls.iter().filter_map(|f| f.next_update).min()
    }

    /// What is done with a stale CRL.
    pub fn stale_policy(&self) -> StaleCrls {
        self.files.stale_crls
    }

    /// Rebuilds if a CRL file changed. A failed rebuild keeps the previous configuration.
    pub fn reload_if_changed(&self) -> Result<Option<Reloaded>, Vec<Problem>> {
        let now = Self::stamps_of(&self.files);
        {
            let stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if *stamps == now {
                return Ok(None);
            }
        }
        let reloaded = self.reload()?;
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(Some(reloaded))
    }

    /// Rebuilds from the files now, then cuts the open connections whose certificate chain
    /// the new CRLs revoke.
    pub fn reload(&self) -> Result<Reloaded, Vec<Problem>> {
        let built = build(&self.files, SystemTime::now())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = built;
        Ok(Reloaded {
            connections_cut: self.cut_refused(),
        })
    }

    /// Cuts the open connections that the current configuration refuses for what its CRLs
    /// say now: a revoked certificate, or (under `stale_crls = "refuse"`) a CRL that has
    /// passed its `nextUpdate` without any file changing. Returns how many were cut.
    pub fn cut_refused(&self) -> usize {
        let verifier = self.built().verifier;
        self.live
            .cut_where(|chain| is_revoked(verifier.as_ref(), chain))
    }

    /// Registers a connection, then checks its chain against the newest CRLs; `None` when
    /// they refuse it. The handshake alone is not enough: a reload may have happened since
    /// (its sweep may have missed this connection), and a resumed TLS session (RFC 8446
    /// §2.2) carries the client certificate verified when the session was first made, before
    /// a revocation or a CRL going stale.
    fn admit(
        &self,
        stream: TlsStream<TcpStream>,
        lifetime: Option<Duration>,
    ) -> Option<Connection> {
        // Registered first: a reload from now on finds it in its sweep.
        let connection = Connection::new(stream, &self.live, lifetime);
        let (_, session) = connection.stream.get_ref();
        let chain = session.peer_certificates().unwrap_or_default();
        if is_revoked(self.built().verifier.as_ref(), chain) {
            return None;
        }
        Some(connection)
    }
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Open connections closed because the new CRLs revoke their certificate.
    pub connections_cut: usize,
}

/// The bounds the accept loop enforces on each connection.
#[derive(Debug, Clone, Copy)]
pub struct AcceptBounds {
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// With a value, each connection is cut that long after its handshake (a bound for
    /// clients that ignore GOAWAY).
    pub lifetime: Option<Duration>,
    /// Connections at most, open ones and handshakes in progress together; one beyond it is
    /// closed as soon as it is accepted.
    pub max_connections: usize,
}

/// Accepts TCP connections and completes TLS handshakes concurrently, handing finished
/// connections (their client certificate read, registered among the live connections) to
/// the gRPC server through a bounded channel. A slow or failed handshake never holds up the
/// others; accept errors of one connection or of the process's resources are retried with
/// bounded back-off (`edge::listener::accept`). `bounds` limits each connection's
/// handshake time and lifetime and how many there are.
///
/// The task ends with `Ok` when the receiver is dropped and with the error when the listening
/// socket itself fails; aborting it closes the listener.
pub fn accept(
    listener: TcpListener,
    config: Arc<TlsReloader>,
    bounds: AcceptBounds,
) -> (
    mpsc::Receiver<io::Result<Connection>>,
    JoinHandle<io::Result<()>>,
) {
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let task = tokio::spawn(async move {
        let mut backoff = crate::edge::listener::Backoff::default();
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = crate::edge::listener::accept(&listener, "grpc", &mut backoff) => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::error!(error = %e, "listener failed");
                        return Err(e);
                    }
                },
                () = tx.closed() => return Ok(()),
            };
            // A bounded number of connections: beyond it, new ones are closed at once.
            let in_handshake = MAX_PENDING_HANDSHAKES - pending.available_permits();
            if config.live().len() + in_handshake >= bounds.max_connections {
                tracing::warn!(%peer, max = bounds.max_connections, "too many connections; connection closed");
                crate::base::metrics::connection_over_limit();
                continue;
            }
            // A bounded number of handshakes at a time: beyond it, connections are closed at
            // once rather than piling up (slow or hostile clients cannot exhaust memory).
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.current());
            let tx = tx.clone();
            let config = config.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(bounds.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => match config.admit(stream, bounds.lifetime) {
                        Some(connection) => {
                            let _ = tx.send(Ok(connection)).await;
                        }
                        None => {
                            tracing::info!(%peer, "client certificate refused by the newest CRLs after the handshake; connection closed")
                        }
                    },
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    (rx, task)
}

/// TLS handshakes in progress at most.
pub const MAX_PENDING_HANDSHAKES: usize = 512;
