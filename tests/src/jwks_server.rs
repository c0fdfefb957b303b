//! A token issuer's JWKS endpoint over HTTPS on loopback, for testing key fetching: its key set
//! can be changed, its requests counted, and it can go down.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use casegate::dev::DevCa;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

pub struct JwksServer {
    pub addr: SocketAddr,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for JwksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A TLS acceptor for an HTTPS test server on `127.0.0.1`, its certificate issued by `ca`.
pub fn loopback_acceptor(ca: &DevCa) -> TlsAcceptor {
    casegate::tls::install_provider();
    let cert = ca.issue_server(&["127.0.0.1"]).expect("server cert");
    let config = ServerConfig::builder_with_provider(casegate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key"),
        )
        .expect("TLS config");
    TlsAcceptor::from(Arc::new(config))
}

impl JwksServer {
    /// Serves `jwks` at `https://127.0.0.1:<port>/jwks.json` with a certificate from `ca`.
    pub async fn start(ca: &DevCa, jwks: String) -> Self {
        let acceptor = loopback_acceptor(ca);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(jwks));
        let hits = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (body, hits) = (body.clone(), hits.clone());
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let (body, hits) = (body.clone(), hits.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        hits.fetch_add(1, Ordering::SeqCst);
                        let json = body.lock().expect("body").clone();
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                            json.len()
                        );
                        let _ = tls.write_all(response.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    });
                }
            }
        });
        Self {
            addr,
            body,
            hits,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/jwks.json", self.addr)
    }

    pub fn set(&self, jwks: String) {
        *self.body.lock().expect("body") = jwks;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops answering: the port is closed.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
