//! A token issuer's JWKS endpoint over HTTPS on loopback, for testing key fetching: its key set
//! can be changed, its requests counted, and it can go down.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use casegate::dev::DevCa;
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Published {
    body: Mutex<String>,
    hits: AtomicUsize,
}

/// The endpoint, serving until stopped or dropped.
#[derive(Debug)]
pub struct JwksServer {
    pub addr: SocketAddr,
    published: Arc<Published>,
    task: JoinHandle<()>,
}

/// The key set in 64 KiB pieces, with no `content-length` (chunked transfer coding).
async fn chunked(State(published): State<Arc<Published>>) -> impl IntoResponse {
    published.hits.fetch_add(1, Ordering::SeqCst);
    let body = published.body.lock().expect("body").clone().into_bytes();
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(futures_util::stream::iter(pieces)),
    )
}

/// Never answers within a test's patience (30 s).
async fn stalled() -> &'static str {
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    "{}"
}

async fn jwks(State(published): State<Arc<Published>>) -> impl IntoResponse {
    published.hits.fetch_add(1, Ordering::SeqCst);
    let body = published.body.lock().expect("body").clone();
    ([(header::CONTENT_TYPE, "application/json")], body)
}

impl JwksServer {
    /// Serves `jwks` at `https://127.0.0.1:<port>/jwks.json` (and without a length at
    /// `/chunked.json`; `/stalled.json` never answers in time) with a certificate from `ca`.
    pub async fn start(ca: &DevCa, jwks_json: String) -> Self {
        let published = Arc::new(Published {
            body: Mutex::new(jwks_json),
            hits: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/jwks.json", get(jwks))
            .route("/chunked.json", get(chunked))
            .route("/stalled.json", get(stalled))
            .with_state(published.clone());
        let (addr, task) = crate::https_server::serve(ca, router).await;
        Self {
            addr,
            published,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/jwks.json", self.addr)
    }

    /// Publishes another key set.
    pub fn set(&self, jwks_json: String) {
        *self.published.body.lock().expect("body") = jwks_json;
    }

    /// Requests for the key set so far.
    pub fn hits(&self) -> usize {
        self.published.hits.load(Ordering::SeqCst)
    }

    /// Stops answering: the port and every open connection are closed.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
