//! What a browser session holds: the logged-in person, the CSRF token, the chosen language and
//! one-shot results of POSTs (POST-redirect-GET). Sessions live in the server's memory
//! (`tower-sessions`), keyed by a random id in the session cookie; a login gets a new id.

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::request::Parts,
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Serialize, de::DeserializeOwned};
use tower_sessions::Session;

use super::{Audience, Person, Web, text::Lang};

const PERSON: &str = "person";
const CSRF: &str = "csrf";
const LANG: &str = "lang";

/// A fresh random token: 32 bytes, base64url.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The system generator does not fail on Linux after boot; an all-zero token would only
    // weaken CSRF protection, and the error is logged.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::error!("system random number generator failed");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two secrets (tokens, OAuth `state`) are equal. Compared as SHA-256 digests, so the
/// comparison's time says nothing about the secret.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    let digest = |text: &str| ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest(a).as_ref() == digest(b).as_ref()
}

/// The session's CSRF token, created on first use.
pub(super) async fn csrf(session: &Session) -> String {
    if let Ok(Some(token)) = session.get::<String>(CSRF).await {
        return token;
    }
    let token = random_token();
    store(session, CSRF, &token).await;
    token
}

/// The language the person chose; bokmål until they choose.
pub(super) async fn lang(session: &Session) -> Lang {
    session
        .get::<Lang>(LANG)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub(super) async fn set_lang(session: &Session, lang: Lang) {
    store(session, LANG, &lang).await;
}

/// The logged-in person, if any.
pub(super) async fn person(session: &Session) -> Option<Person> {
    session.get::<Person>(PERSON).await.ok().flatten()
}

/// Logs `person` in: a new session id (no fixation), nothing kept from before but the language
/// (no earlier person's searches or results), and a new CSRF token.
pub(super) async fn log_in(session: &Session, person: &Person) {
    let lang = lang(session).await;
    session.clear().await;
    if let Err(e) = session.cycle_id().await {
        tracing::error!(error = %e, "cannot renew the session id");
    }
    set_lang(session, lang).await;
    store(session, CSRF, &random_token()).await;
    store(session, PERSON, person).await;
}

/// Ends the session: every value and the cookie.
pub(super) async fn log_out(session: &Session) {
    if let Err(e) = session.flush().await {
        tracing::error!(error = %e, "cannot end the session");
    }
}

/// Keeps a POST's result for the page it redirects to.
pub(super) async fn put<T: Serialize>(session: &Session, key: &str, value: &T) {
    store(session, key, value).await;
}

/// A value kept by [`put`]; it stays until replaced, so reloading the page shows it again.
pub(super) async fn peek<T: DeserializeOwned>(session: &Session, key: &str) -> Option<T> {
    session.get::<T>(key).await.ok().flatten()
}

async fn store<T: Serialize>(session: &Session, key: &str, value: &T) {
    if let Err(e) = session.insert(key, value).await {
        tracing::error!(error = %e, key, "cannot write to the session");
    }
}

/// A logged-in jobseeker; anyone else is sent to the start page.
#[derive(Debug)]
pub(super) struct Jobseeker(pub Person, pub Session);

/// A logged-in privacy officer; anyone else is sent to the start page.
#[derive(Debug)]
pub(super) struct Officer(pub Person, pub Session);

async fn logged_in(parts: &mut Parts, audience: Audience) -> Result<(Person, Session), Response> {
    let session = Session::from_request_parts(parts, &())
        .await
        .map_err(IntoResponse::into_response)?;
    match person(&session).await {
        Some(person) if person.role == audience => Ok((person, session)),
        _ => Err(Redirect::to("/").into_response()),
    }
}

impl FromRequestParts<Arc<Web>> for Jobseeker {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Web>) -> Result<Self, Response> {
        let (person, session) = logged_in(parts, Audience::Jobseeker).await?;
        Ok(Jobseeker(person, session))
    }
}

impl FromRequestParts<Arc<Web>> for Officer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Web>) -> Result<Self, Response> {
        let (person, session) = logged_in(parts, Audience::Officer).await?;
        Ok(Officer(person, session))
    }
}
