//! An axum router served over HTTPS on `127.0.0.1:0`, for the test identity providers: each
//! connection on hyper's HTTP/1.1 server, all of them ended when the server is stopped.

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use casegate::dev::DevCa;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{net::TcpListener, task::JoinHandle, task::JoinSet};
use tokio_rustls::TlsAcceptor;

/// Serves `router` at `https://127.0.0.1:<port>` with a certificate for `127.0.0.1` issued by
/// `ca`. Aborting the returned task closes the port and every open connection with it (a
/// kept-alive connection does not outlive a stopped server).
pub async fn serve(ca: &DevCa, router: Router) -> (SocketAddr, JoinHandle<()>) {
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
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, router) = (acceptor.clone(), router.clone());
            connections.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    (addr, task)
}
