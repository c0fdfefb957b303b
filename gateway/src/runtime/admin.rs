//! The admin listener: `GET /metrics` (Prometheus text format 0.0.4), any other path 404.
//! Connections are accepted by [`crate::edge::listener::accept`] (errors retried with
//! back-off and counted under `listener="metrics"`); each serves one request on hyper's
//! HTTP/1.1 server through an axum router, its head read within 5 seconds.

use std::time::Duration;

use axum::{Router, http::header, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

use crate::{base::metrics, edge::listener};

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the metrics on `listener` until the task is dropped.
///
/// # Errors
/// The recorder cannot be installed, or the listening socket itself fails (errors of single
/// connections and of resources are retried).
pub(crate) async fn serve(listener: TcpListener) -> Result<(), String> {
    metrics::init()?;
    let router = Router::new().route(
        "/metrics",
        get(|| async {
            match metrics::render() {
                Ok(text) => Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)),
                Err(_) => Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
            }
        }),
    );
    let mut backoff = listener::Backoff::default();
    loop {
        let (stream, _) = listener::accept(&listener, "metrics", &mut backoff)
            .await
            .map_err(|e| format!("metrics listener failed: {e}"))?;
        let router = router.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
                .await;
        });
    }
}
