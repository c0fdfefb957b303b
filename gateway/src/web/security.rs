//! What every answer and every POST goes through: security headers (a Content-Security-Policy
//! without inline script or style, no framing, HSTS, no referrer, no caching of personal
//! pages), and the CSRF check — a POST must come from this site (`Sec-Fetch-Site` / `Origin`,
//! when the browser sends them) and carry the session's token in its `csrf` field.

use axum::{
    body::{Body, to_bytes},
    extract::Request,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_sessions::Session;

use super::{session, text::Tr};

/// The headers on every answer.
pub(super) const HEADERS: [(&str, &str); 8] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
    ("cache-control", "no-store"),
];

/// The largest form body read for the CSRF check (bytes).
const MAX_FORM: usize = 64 << 10;

/// Adds [`HEADERS`] to every answer.
pub(super) async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        let name = HeaderName::from_static(name);
        // A handler may allow caching of what is not personal (the style sheet).
        if name == header::CACHE_CONTROL && headers.contains_key(&name) {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Refuses a state-changing request that did not come from one of this site's own forms.
pub(super) async fn csrf(session: Session, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let tr = Tr {
        lang: session::lang(&session).await,
    };
    if !same_site(&request) {
        return refused(tr, "cross-site request");
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
    };
    let sent = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(name, _)| name == "csrf"))
        .map(|(_, value)| value);
    let expected = session.get::<String>("csrf").await.ok().flatten();
    match (sent, expected) {
        (Some(sent), Some(expected)) if session::same_secret(&sent, &expected) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => refused(tr, "missing or wrong CSRF token"),
    }
}

/// Whether the browser says the request came from this site. Browsers that send neither
/// header (old ones) are left to the token check and the `SameSite=Strict` cookie.
fn same_site(request: &Request) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, authority)| host.to_str().is_ok_and(|h| h == authority)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn refused(tr: Tr, why: &'static str) -> Response {
    tracing::info!(why, "web request refused");
    let page = super::chrome::Bare {
        lang: tr.lang.code(),
        title: tr.get("error.csrf.title"),
        message: tr.get("error.csrf.body"),
        back: tr.get("error.start"),
    };
    (StatusCode::FORBIDDEN, super::chrome::render(&page)).into_response()
}
