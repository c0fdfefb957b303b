//! What every page shares: the frame (title, language switch, navigation, who is logged in,
//! the idle-timeout notice with its "stay logged in" button, the officers' logging banner),
//! rendering, and the error pages.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use tower_sessions::Session;

use super::{
    Audience, Web, masked, session,
    text::{Lang, Tr},
    time,
};

/// The frame of a page, built once per request.
#[derive(Debug, Clone)]
pub(super) struct Chrome {
    pub t: Tr,
    /// The page's own title (unique per page), without the site name.
    pub title: String,
    pub langs: Vec<Link>,
    pub nav: Vec<Link>,
    /// "Logged in as …", when someone is.
    pub who: Option<String>,
    pub officer: bool,
    pub csrf: String,
    /// When the session ends without activity, and how to stay (WCAG 2.2.1).
    pub idle_text: String,
    /// This page's path, where "stay logged in" comes back to.
    pub here: String,
}

/// A link in the language switch or the navigation.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub href: String,
    pub label: String,
    pub current: bool,
    /// The language of the label (`hreflang`/`lang` for the switch); empty for navigation.
    pub lang: &'static str,
}

impl Chrome {
    /// The frame for the page at `here`, titled by the text of `title_key`.
    pub(super) async fn new(web: &Web, session: &Session, title_key: &str, here: &str) -> Self {
        let t = Tr {
            lang: session::lang(session).await,
        };
        let person = session::person(session).await;
        let csrf = session::csrf(session).await;
        let langs = Lang::ALL
            .into_iter()
            .map(|l| Link {
                href: format!(
                    "/language?{}",
                    serde_urlencoded::to_string([("to", l.code()), ("back", here)])
                        .unwrap_or_default()
                ),
                label: l.name().to_owned(),
                current: l == t.lang,
                lang: l.code(),
            })
            .collect();
        let link = |href: &str, key: &str| Link {
            href: href.to_owned(),
            label: t.get(key),
            current: here == href,
            lang: "",
        };
        let (nav, who, officer) = match &person {
            Some(p) if p.role == Audience::Jobseeker => (
                vec![
                    link("/me", "nav.consents"),
                    link("/me/consents/new", "nav.grant"),
                    link("/me/received", "nav.received"),
                ],
                Some(t.fill(
                    "chrome.logged_in_jobseeker",
                    &[("id", &p.pid.as_ref().map(masked).unwrap_or_default())],
                )),
                false,
            ),
            Some(p) => (
                vec![
                    link("/officer", "nav.search"),
                    link("/officer/anomalies", "nav.anomalies"),
                    link("/officer/report", "nav.report"),
                    link("/officer/integrity", "nav.integrity"),
                ],
                Some(t.fill("chrome.logged_in_officer", &[("user", &p.sub)])),
                true,
            ),
            None => (Vec::new(), None, false),
        };
        let idle = i64::try_from(web.session_idle.as_micros()).unwrap_or(i64::MAX / 2);
        let idle_until = time::clock(
            crate::base::clock::now_micros().saturating_add(idle),
            t.lang,
        );
        let idle_text = t.fill("chrome.idle", &[("time", &idle_until)]);
        Self {
            t,
            title: t.get(title_key),
            langs,
            nav,
            who,
            officer,
            csrf,
            idle_text,
            here: here.to_owned(),
        }
    }
}

/// Renders a page; a template failure is logged and answered with a plain 500.
pub(super) fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// `body` as a file to save: its media type and a fixed file name (never taken from input).
pub(super) fn download(
    content_type: &'static str,
    name: &'static str,
    body: impl IntoResponse,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// A page with a message and a way back, when there is no frame to draw it in.
#[derive(Debug, Template)]
#[template(path = "bare.html")]
pub(super) struct Bare {
    pub lang: &'static str,
    pub title: String,
    pub message: String,
    pub back: String,
}

/// A failed call to the gateway, told in the page's language.
#[derive(Debug, Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage {
    pub c: Chrome,
    pub message: String,
    /// The gateway's own message (English, free of personal data).
    pub detail: String,
}

/// The page for a refusal or failure of the gateway.
pub(super) fn failure(mut c: Chrome, status: &tonic::Status) -> Response {
    use tonic::Code;
    let (code, key) = match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => (StatusCode::FORBIDDEN, "error.denied"),
        Code::NotFound => (StatusCode::NOT_FOUND, "error.not_found"),
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
            (StatusCode::CONFLICT, "error.precondition")
        }
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "error.invalid"),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
            (StatusCode::SERVICE_UNAVAILABLE, "error.unavailable")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "error.internal"),
    };
    if code == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(code = ?status.code(), message = status.message(), "gateway call failed");
    }
    c.title = c.t.get("error.title");
    let page = ErrorPage {
        message: c.t.get(key),
        detail: status.message().to_owned(),
        c,
    };
    (code, render(&page)).into_response()
}

/// A page that does not exist.
pub(super) async fn not_found(State(web): State<Arc<Web>>, session: Session) -> Response {
    let c = Chrome::new(&web, &session, "error.title", "/").await;
    let page = ErrorPage {
        message: c.t.get("error.no_page"),
        detail: String::new(),
        c,
    };
    (StatusCode::NOT_FOUND, render(&page)).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct LanguageQuery {
    to: String,
    back: Option<String>,
}

/// `GET /language?to=nn&back=/me`: remembers the language and goes back.
pub(super) async fn language(session: Session, Query(q): Query<LanguageQuery>) -> Response {
    if let Some(lang) = Lang::from_code(&q.to) {
        session::set_lang(&session, lang).await;
    }
    Redirect::to(&local_path(q.back.as_deref())).into_response()
}

/// `back` when it is a path on this site; `/` otherwise (no open redirect). Browsers drop tabs
/// and line breaks from a `Location` and read `\\` as `/`, so any whitespace, control
/// character or backslash refuses it, as does a second leading slash.
pub(super) fn local_path(back: Option<&str>) -> String {
    match back {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '\\') =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ExtendForm {
    back: Option<String>,
}

/// `POST /session/extend`: any request renews the session's idle time; this one exists so a
/// person can do it without leaving the page's state (WCAG 2.2.1).
pub(super) async fn extend(axum::Form(form): axum::Form<ExtendForm>) -> Response {
    Redirect::to(&local_path(form.back.as_deref())).into_response()
}

/// The one style sheet (no inline styles: the CSP forbids them).
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("site.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_paths_on_this_site_are_followed_back() {
        for (back, to) in [
            (Some("/me/received"), "/me/received"),
            (Some("/language?to=nn&back=/me"), "/language?to=nn&back=/me"),
            (None, "/"),
            (Some(""), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("\\\\evil.example"), "/"),
            (Some("/\t/evil.example"), "/"),
            (Some("/\n/evil.example"), "/"),
            (Some("/ /evil.example"), "/"),
            (Some("javascript:alert(1)"), "/"),
        ] {
            assert_eq!(local_path(back), to, "{back:?}");
        }
    }
}
