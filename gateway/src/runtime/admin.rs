//! The admin listener: `GET /metrics` (Prometheus text format 0.0.4) and `GET /readyz` (200
//! while the gateway can serve — its clock not behind and, on PostgreSQL, its database
//! answering — 503 otherwise: what a load balancer or Kubernetes readiness probe asks, since
//! the gRPC health service needs a client certificate), any other path 404.
//! Connections are accepted by [`crate::edge::listener::accept`] (errors retried with
//! back-off and counted under `listener="metrics"`); each serves one request on hyper's
//! HTTP/1.1 server through an axum router, its head read within 5 seconds.

use std::{sync::Arc, time::Duration};

use axum::{Router, http::header, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

use crate::{base::metrics, edge::listener};

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the gateway can serve: its clock not behind, its state reachable.
#[derive(Debug)]
pub(crate) struct Readiness {
    clock: std::sync::atomic::AtomicBool,
    state: std::sync::atomic::AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            clock: true.into(),
            state: true.into(),
        }
    }
}

impl Readiness {
    /// Records the clock's verdict; answers whether the gateway can serve.
    pub(crate) fn set_clock(&self, ok: bool) -> bool {
        use std::sync::atomic::Ordering;
        self.clock.store(ok, Ordering::Release);
        ok && self.state.load(Ordering::Acquire)
    }

    /// Whether the gateway can serve now.
    pub(crate) fn ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.clock.load(Ordering::Acquire) && self.state.load(Ordering::Acquire)
    }

    /// Records whether the state (the database) is reachable; answers whether the gateway
    /// can serve.
    pub(crate) fn set_state(&self, ok: bool) -> bool {
        use std::sync::atomic::Ordering;
        self.state.store(ok, Ordering::Release);
        ok && self.clock.load(Ordering::Acquire)
    }
}

/// Serves the metrics and readiness on `listener` until the task is dropped.
///
/// # Errors
/// The recorder cannot be installed, or the listening socket itself fails (errors of single
/// connections and of resources are retried).
pub(crate) async fn serve(listener: TcpListener, ready: Arc<Readiness>) -> Result<(), String> {
    metrics::init()?;
    let router = Router::new()
        .route(
            "/metrics",
            get(|| async {
                match metrics::render() {
                    Ok(text) => Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)),
                    Err(_) => Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                }
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                match ready.ready() {
                    true => (axum::http::StatusCode::OK, "serving\n"),
                    false => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n"),
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
