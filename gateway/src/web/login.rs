//! Who is logged in, and how they got there: the start page, logging out, and the development
//! login picker of `casegate dev`, which logs in a synthetic jobseeker or officer. The picker's
//! routes exist only when the web tier is built in development mode.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use tower_sessions::{
    Session,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
};

use super::{
    Audience, Person, Upstream, Web,
    chrome::{Chrome, render},
    masked, oidc, session,
};

/// A synthetic person of the development login.
#[derive(Debug, Clone)]
pub(super) struct DevPerson {
    pub key: String,
    pub person: Person,
}

/// Three synthetic jobseekers (valid check digits, no real person) and one privacy officer.
pub(super) fn dev_people(upstream: &Upstream) -> Vec<DevPerson> {
    let mut people: Vec<DevPerson> = (0..3)
        .filter_map(|i| super::dev_jobseeker(i).map(|s| (i, s)))
        .map(|(i, subject)| DevPerson {
            key: format!("jobseeker-{}", i + 1),
            person: Person {
                sub: format!("dev-jobseeker-{}", i + 1),
                pid: Some(subject),
                role: Audience::Jobseeker,
                idp: "dev".to_owned(),
                acr: "dev".to_owned(),
            },
        })
        .collect();
    people.push(DevPerson {
        key: "officer".to_owned(),
        person: Person {
            sub: format!("dev-officer-{}", upstream.orgnr(Audience::Officer)),
            pid: None,
            role: Audience::Officer,
            idp: "dev".to_owned(),
            acr: "dev".to_owned(),
        },
    });
    people
}

#[derive(Debug, Template)]
#[template(path = "landing.html")]
struct Landing {
    c: Chrome,
    dev: bool,
    jobseeker_login: bool,
    officer_login: bool,
}

/// `GET /`: the way in, or the logged-in person's own start page.
pub(super) async fn landing(State(web): State<Arc<Web>>, session: Session) -> Response {
    match session::person(&session).await {
        Some(p) if p.role == Audience::Jobseeker => Redirect::to("/me").into_response(),
        Some(_) => Redirect::to("/officer").into_response(),
        None => render(&Landing {
            c: Chrome::new(&web, &session, "landing.title", "/").await,
            dev: web.dev_people.is_some(),
            jobseeker_login: web.jobseeker_login.is_some(),
            officer_login: web.officer_login.is_some(),
        }),
    }
}

#[derive(Debug, Template)]
#[template(path = "dev_login.html")]
struct Picker {
    c: Chrome,
    choices: Vec<Choice>,
    error: bool,
}

#[derive(Debug)]
struct Choice {
    key: String,
    label: String,
}

/// `GET /dev/login`: pick a synthetic person (development mode only).
pub(super) async fn dev_picker(State(web): State<Arc<Web>>, session: Session) -> Response {
    picker(&web, &session, false).await
}

async fn picker(web: &Web, session: &Session, error: bool) -> Response {
    let c = Chrome::new(web, session, "dev.title", "/dev/login").await;
    let choices = web
        .dev_people
        .iter()
        .flatten()
        .map(|d| Choice {
            key: d.key.clone(),
            label: match d.person.role {
                Audience::Jobseeker => c.t.fill(
                    "dev.jobseeker",
                    &[("id", &d.person.pid.as_ref().map(masked).unwrap_or_default())],
                ),
                Audience::Officer => c.t.fill(
                    "dev.officer",
                    &[(
                        "org",
                        &web.org_name(&web.upstream.orgnr(Audience::Officer).to_string()),
                    )],
                ),
            },
        })
        .collect();
    let page = Picker { c, choices, error };
    if error {
        (axum::http::StatusCode::BAD_REQUEST, render(&page)).into_response()
    } else {
        render(&page)
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PickForm {
    who: Option<String>,
}

/// `POST /dev/login`: logs the picked synthetic person in.
pub(super) async fn dev_login(
    State(web): State<Arc<Web>>,
    session: Session,
    Form(form): Form<PickForm>,
) -> Response {
    let picked = web
        .dev_people
        .iter()
        .flatten()
        .find(|d| form.who.as_deref() == Some(d.key.as_str()));
    let Some(picked) = picked else {
        return picker(&web, &session, true).await;
    };
    session::log_in(&session, &picked.person).await;
    Redirect::to("/").into_response()
}

fn provider<'w>(web: &'w Web, audience: &str) -> Option<&'w oidc::Provider> {
    match audience {
        "jobseeker" => web.jobseeker_login.as_ref(),
        "officer" => web.officer_login.as_ref(),
        _ => None,
    }
}

/// `GET /login/{jobseeker|officer}`: off to the audience's identity provider (a GET link, since
/// `form-action 'self'` would stop a form's redirect to another site).
pub(super) async fn oidc_start(
    State(web): State<Arc<Web>>,
    session: Session,
    Path(audience): Path<String>,
) -> Response {
    let Some(provider) = provider(&web, &audience) else {
        return super::chrome::not_found(State(web), session).await;
    };
    match provider.start().await {
        Ok((url, pending)) => {
            let cookie = pending_cookie(&PendingLogin { audience, pending });
            ([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response()
        }
        Err(e) => login_failed(&web, &session, &e).await,
    }
}

/// The cookie that carries a login's `state`, `nonce` and PKCE verifier to its callback. The
/// session cookie is `SameSite=Strict`, so browsers do not send it on the provider's
/// cross-site redirect back; this one is `Lax` (sent on that top-level GET), lives ten
/// minutes, and its `__Host-` prefix keeps other hosts from planting one.
const LOGIN_COOKIE: &str = "__Host-casegate_login";

#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    audience: String,
    pending: oidc::Pending,
}

fn pending_cookie(login: &PendingLogin) -> String {
    let value = URL_SAFE_NO_PAD.encode(serde_json::to_vec(login).unwrap_or_default());
    login_cookie(value, CookieDuration::minutes(10))
}

fn login_cookie(value: String, max_age: CookieDuration) -> String {
    Cookie::build((LOGIN_COOKIE, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(max_age)
        .build()
        .to_string()
}

fn read_pending(headers: &HeaderMap) -> Option<PendingLogin> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == LOGIN_COOKIE)
        .and_then(|c| URL_SAFE_NO_PAD.decode(c.value()).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

#[derive(Debug, Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /login/{jobseeker|officer}/callback`: the provider's answer.
pub(super) async fn oidc_callback(
    State(web): State<Arc<Web>>,
    session: Session,
    Path(audience): Path<String>,
    Query(answer): Query<Callback>,
    headers: HeaderMap,
) -> Response {
    let Some(provider) = provider(&web, &audience) else {
        return super::chrome::not_found(State(web), session).await;
    };
    // A pending login is used once, whatever the outcome: its cookie goes with this answer.
    let clear = [(
        header::SET_COOKIE,
        login_cookie(String::new(), CookieDuration::ZERO),
    )];
    let pending = read_pending(&headers)
        .filter(|p| p.audience == audience)
        .map(|p| p.pending);
    let result = match (pending, answer.error, answer.code) {
        (None, ..) => Err(oidc::LoginError::State),
        (_, Some(error), _) => Err(oidc::LoginError::Provider(error)),
        (_, None, None) => Err(oidc::LoginError::Provider("no code".into())),
        (Some(pending), None, Some(code)) => {
            provider
                .finish(pending, answer.state.as_deref().unwrap_or_default(), &code)
                .await
        }
    };
    match result {
        Ok(person) => {
            tracing::info!(idp = ?person.idp, audience, "logged in");
            session::log_in(&session, &person).await;
            (clear, Redirect::to("/")).into_response()
        }
        Err(e) => (clear, login_failed(&web, &session, &e).await).into_response(),
    }
}

async fn login_failed(web: &Web, session: &Session, e: &oidc::LoginError) -> Response {
    // Debug-formatted: what the provider or the browser sent cannot forge log lines.
    tracing::warn!(error = ?e, "login failed");
    let c = Chrome::new(web, session, "login.failed_title", "/").await;
    let page = super::chrome::ErrorPage {
        message: c.t.get("login.failed"),
        detail: e.summary().to_owned(),
        c,
    };
    (axum::http::StatusCode::FORBIDDEN, render(&page)).into_response()
}

/// `POST /logout`: ends the session.
pub(super) async fn logout(session: Session) -> Response {
    session::log_out(&session).await;
    Redirect::to("/").into_response()
}
