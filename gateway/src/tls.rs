//! Mutual TLS: the server's rustls configuration (client certificates required, from the
//! configured CA only) and the accept loop that turns TCP connections into TLS streams, each
//! carrying the organisation its client certificate names (read once per connection).

use std::{
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject,
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
    config::{Problem, TlsConfig},
    identity::{ClientIdentity, IdentityError},
};

/// What a request knows of its connection: the peer's address and the organisation its
/// client certificate names (`None`: no client certificate). Every request on the
/// connection carries it as an extension.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote_addr: Option<SocketAddr>,
    pub identity: Option<Result<ClientIdentity, IdentityError>>,
}

/// An accepted mutual-TLS connection. Its client certificate is read when the handshake
/// completes, not on every call.
#[derive(Debug)]
pub struct Connection {
    stream: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connection {
    pub fn new(stream: TlsStream<TcpStream>) -> Self {
        let (tcp, session) = stream.get_ref();
        let peer = Peer {
            remote_addr: tcp.peer_addr().ok(),
            identity: session
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| ClientIdentity::from_der(leaf)),
        };
        Self { stream, peer }
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
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    let mut problems = Vec::new();
    let chain = read_certs(&files.cert, "tls.cert", &mut problems);
    let key = match PrivateKeyDer::from_pem_file(&files.key) {
        Ok(key) => Some(key),
        Err(e) => {
            problems.push(file_problem("tls.key", &files.key, &e.to_string()));
            None
        }
    };
    let crls = read_crls(&files.client_crls, &mut problems);
    let verifier = read_certs(&files.client_ca, "tls.client_ca", &mut problems).and_then(|cas| {
        match client_verifier(cas, crls) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(file_problem("tls.client_ca", &files.client_ca, &e));
                None
            }
        }
    });
    let (Some(chain), Some(key), Some(verifier)) = (chain, key, verifier) else {
        return Err(problems);
    };
    let built = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))
        });
    match built {
        Ok(mut config) => {
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(config))
        }
        Err(e) => Err(vec![file_problem("tls.key", &files.key, &e)]),
    }
}

fn read_crls(
    paths: &[std::path::PathBuf],
    problems: &mut Vec<Problem>,
) -> Vec<CertificateRevocationListDer<'static>> {
    let mut crls = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let key = format!("tls.client_crls[{i}]");
        match CertificateRevocationListDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        {
            Ok(found) if found.is_empty() => {
                problems.push(file_problem(&key, path, "holds no PEM X509 CRL"));
            }
            Ok(found) => crls.extend(found),
            Err(e) => problems.push(file_problem(&key, path, &e.to_string())),
        }
    }
    crls
}

fn client_verifier(
    cas: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    // The builder requires a client certificate unless told otherwise. Revocation is checked
    // for the organisation's certificate against the configured CRLs; a certificate from a CA
    // without a configured CRL is not refused for that alone.
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if !crls.is_empty() {
        builder = builder
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    builder.build().map_err(|e| e.to_string())
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
/// revoked certificate is refused without a restart. New connections get the newest one.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsConfig,
    current: std::sync::RwLock<Arc<ServerConfig>>,
    /// (modified time, length) of each CRL file when last loaded.
    stamps: std::sync::Mutex<Vec<Option<(std::time::SystemTime, u64)>>>,
}

impl TlsReloader {
    pub fn load(files: &TlsConfig) -> Result<Self, Vec<Problem>> {
        let config = server_config(files)?;
        Ok(Self {
            stamps: std::sync::Mutex::new(Self::stamps_of(files)),
            files: files.clone(),
            current: std::sync::RwLock::new(config),
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

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn crl_reload_interval(&self) -> Duration {
        self.files.crl_reload_interval
    }

    /// Rebuilds if a CRL file changed. A failed rebuild keeps the previous configuration.
    pub fn reload_if_changed(&self) -> Result<bool, Vec<Problem>> {
        let now = Self::stamps_of(&self.files);
        {
            let stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if *stamps == now {
                return Ok(false);
            }
        }
        self.reload()?;
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(true)
    }

    /// Rebuilds from the files now.
    pub fn reload(&self) -> Result<(), Vec<Problem>> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently, handing finished
/// connections (their client certificate read) to the gRPC server through a bounded channel. A slow or failed handshake never
/// holds up the others. Ends when `listener` errors fatally or the receiver is dropped.
///
/// Aborting the returned task closes the listener: no new connections are accepted.
pub fn accept(
    listener: TcpListener,
    config: Arc<TlsReloader>,
    handshake_timeout: Duration,
) -> (mpsc::Receiver<io::Result<Connection>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "listener failed");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
                () = tx.closed() => return,
            };
            // A bounded number of handshakes at a time: beyond it, connections are closed at
            // once rather than piling up (slow or hostile clients cannot exhaust memory).
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Connection::new(stream))).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    (rx, task)
}

/// TLS handshakes in progress at most.
const MAX_PENDING_HANDSHAKES: usize = 512;

/// Errors after which the listener is still usable (per-connection failures, fd exhaustion).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(24) // EMFILE: back off, connections will close
}
