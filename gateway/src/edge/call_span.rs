//! One `tracing` span per call, carrying the method, a request id (the caller's
//! `x-request-id` when it is well-formed, otherwise a new UUIDv7, echoed in the response) and,
//! once authenticated, the calling organisation and role. Never identity numbers, titles or
//! bodies: those are only in request messages, which are not logged.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};

/// Header carrying the request id.
pub(crate) const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallSpanLayer;

impl<S> Layer<S> for CallSpanLayer {
    type Service = CallSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallSpan { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CallSpan<S> {
    inner: S,
}

/// A caller's request id, if it is short and plain enough to log.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl<S, B, R> Service<Request<B>> for CallSpan<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(REQUEST_ID) {
            Some(v) if acceptable(v) => v.clone(),
            _ => {
                let fresh = uuid::Uuid::now_v7().to_string();
                let value = HeaderValue::from_str(&fresh).unwrap_or(HeaderValue::from_static("-"));
                request.headers_mut().insert(REQUEST_ID, value.clone());
                value
            }
        };
        let span = tracing::info_span!(
            "call",
            rpc = %request.uri().path(),
            request_id = %id.to_str().unwrap_or("-"),
            orgnr = Empty,
            role = Empty,
        );
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = future.await;
                if let Ok(response) = &result {
                    // Handler errors come back in the headers; success (0) in the trailers.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0);
                    let elapsed = started.elapsed();
                    tracing::info!(
                        grpc_status = code,
                        elapsed_ms = elapsed.as_secs_f64() * 1e3,
                        "call done"
                    );
                    crate::base::metrics::call_done(&path, code, elapsed);
                }
                result.map(|mut response| {
                    response.headers_mut().insert(REQUEST_ID, id);
                    response
                })
            }
            .instrument(span),
        )
    }
}
