//! The web tier (DESIGN §6): server-rendered pages for jobseekers (their consents, grants,
//! withdrawals and "who received what") and for privacy officers (audit search, reports,
//! integrity), on a listener of their own. It is a backend-for-frontend and one more client of
//! the gateway: every page is built from `casegate.v1` calls made over mutual TLS with a token
//! minted for the logged-in person (`upstream`), so every rule stays in the gRPC services.
//!
//! Pages work without JavaScript (forms, POST-redirect-GET); sessions live in the server's
//! memory behind a `Secure`, `HttpOnly`, `SameSite=Strict` cookie; every POST carries a CSRF
//! token (`security`); every answer carries a strict Content-Security-Policy.

mod chrome;
mod jobseeker;
mod login;
mod officer;
mod oidc;
mod security;
mod sentence;
mod session;
pub mod text;
mod time;
mod upstream;

use std::{collections::BTreeMap, future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    routing::{get, post},
};
use casegate_audit::checkpoint::Verifier;
use casegate_consent::{OrgNumber, SubjectId, Vocabulary};
use tokio::net::TcpListener;
use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};
use tower_sessions_moka_store::MokaStore;

use crate::runtime::config::Config;
pub use upstream::{Audience, Person, Upstream, UpstreamError};

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "casegate_session";

/// Everything the pages need, shared by every request.
#[derive(Debug)]
pub struct Web {
    upstream: Upstream,
    vocabulary: Vocabulary,
    organisations: BTreeMap<OrgNumber, String>,
    contacts: BTreeMap<OrgNumber, String>,
    /// The audit log's verifier keys: reports and checkpoints are verified against these,
    /// never against a key the gateway's answer names.
    verifiers: Vec<Verifier>,
    /// OpenID Connect login per audience, where configured.
    jobseeker_login: Option<oidc::Provider>,
    officer_login: Option<oidc::Provider>,
    /// The synthetic people of the development login; `None` outside `casegate dev`.
    dev_people: Option<Vec<login::DevPerson>>,
    session_idle: std::time::Duration,
    max_sessions: u64,
    /// The longest consent the gateway accepts (the grant form says so before it is sent).
    max_consent_period: std::time::Duration,
    /// Where the gateway's configuration was read from, for the commands the pages print.
    config_path: std::path::PathBuf,
}

/// Why the web tier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The channels to the gateway cannot be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The audit signing key, whose verifier checks reports and proofs, cannot be loaded.
    #[error("audit signing key: {0}")]
    Verifier(String),
    /// An OpenID Connect provider's settings are unusable (an unreadable secret or CA file,
    /// an invalid URL).
    #[error("OpenID Connect: {0}")]
    Oidc(#[from] oidc::SetupError),
}

impl Web {
    /// Builds the web tier for `config` (which must have `[web]`), dialling the gateway at
    /// `gateway` (its bound gRPC address). `dev` enables the development login picker.
    ///
    /// # Errors
    /// Unreadable keys or certificates.
    pub fn build(
        config: &Config,
        gateway: SocketAddr,
        dev: bool,
    ) -> Result<Option<Self>, WebError> {
        let Some(web) = &config.web else {
            return Ok(None);
        };
        let url = web
            .gateway_url
            .clone()
            .unwrap_or_else(|| format!("https://localhost:{}", gateway.port()));
        let audience = config
            .auth
            .issuers
            .iter()
            .find(|i| i.iss == web.issuer)
            .map_or_else(String::new, |i| i.audience.clone());
        let upstream = Upstream::new(web, &audience, &url)?;
        let signer = crate::app::audit::load_signer(&config.audit.signing_key)
            .map_err(|e| WebError::Verifier(e.to_string()))?;
        let dev_people = dev.then(|| login::dev_people(&upstream));
        let public_url = web.public_url.clone().unwrap_or_default();
        let provider = |config: &crate::runtime::config::AudienceConfig, audience| {
            config
                .oidc
                .as_ref()
                .map(|oidc| oidc::Provider::new(oidc, audience, &public_url))
                .transpose()
        };
        let jobseeker_login = provider(&web.jobseekers, Audience::Jobseeker)?;
        let officer_login = provider(&web.officers, Audience::Officer)?;
        Ok(Some(Self {
            upstream,
            vocabulary: config.vocabulary.clone(),
            organisations: config.organisations.clone(),
            contacts: config.contacts.clone(),
            verifiers: vec![signer.verifier()],
            jobseeker_login,
            officer_login,
            dev_people,
            session_idle: web.session_idle,
            max_sessions: web.max_sessions,
            max_consent_period: config.max_consent_period,
            config_path: config.source.clone(),
        }))
    }

    /// The routes, with sessions, CSRF checks and security headers.
    pub fn router(self) -> Router {
        let idle = tower_sessions::cookie::time::Duration::try_from(self.session_idle)
            .unwrap_or(tower_sessions::cookie::time::Duration::minutes(15));
        // Expired sessions leave the store at their expiry; a full store drops the least used.
        let sessions = SessionManagerLayer::new(MokaStore::new(Some(self.max_sessions)))
            .with_name(SESSION_COOKIE)
            .with_secure(true)
            .with_http_only(true)
            .with_same_site(SameSite::Strict)
            .with_expiry(Expiry::OnInactivity(idle))
            // Every request renews the idle time, not only those that change the session.
            .with_always_save(true);
        let dev = self.dev_people.is_some();
        let state = Arc::new(self);
        let mut router = Router::new()
            .route("/", get(login::landing))
            .route("/language", get(chrome::language))
            .route("/static/site.css", get(chrome::stylesheet))
            .route("/session/extend", post(chrome::extend))
            .route("/logout", post(login::logout))
            .route("/login/{audience}", get(login::oidc_start))
            .route("/login/{audience}/callback", get(login::oidc_callback))
            .route("/me", get(jobseeker::consents))
            .route("/me/consents/new", get(jobseeker::new_form))
            .route("/me/consents/preview", post(jobseeker::preview))
            .route("/me/consents", post(jobseeker::grant))
            .route("/me/consents/{id}", get(jobseeker::detail))
            .route("/me/consents/{id}/change", get(jobseeker::change_form))
            .route(
                "/me/consents/{id}/withdraw",
                get(jobseeker::withdraw_confirm).post(jobseeker::withdraw),
            )
            .route("/me/consents/{id}/withdrawn", get(jobseeker::withdrawn))
            .route("/me/received", get(jobseeker::received))
            .route("/me/received/print", get(jobseeker::printable))
            .route("/me/received.json", get(jobseeker::report_json))
            .route("/officer", get(officer::search_form).post(officer::search))
            .route("/officer/results", get(officer::results))
            .route("/officer/results.csv", get(officer::results_csv))
            .route("/officer/results.json", get(officer::results_json))
            .route("/officer/entries/{index}", get(officer::entry))
            .route("/officer/entries/{index}/replay", post(officer::replay))
            .route(
                "/officer/report",
                get(officer::report_form).post(officer::report),
            )
            .route("/officer/report/result", get(officer::report_result))
            .route(
                "/officer/integrity",
                get(officer::integrity).post(officer::consistency),
            )
            .route(
                "/officer/integrity/checkpoint.txt",
                get(officer::checkpoint_file),
            )
            .route("/officer/integrity/export", get(officer::export_file))
            .route("/officer/anomalies", get(officer::anomalies));
        if dev {
            router = router.route("/dev/login", get(login::dev_picker).post(login::dev_login));
        }
        router
            .fallback(chrome::not_found)
            .layer(axum::middleware::from_fn(security::csrf))
            .layer(sessions)
            .layer(axum::middleware::from_fn(security::headers))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
            .with_state(state)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight finish.
///
/// # Errors
/// The listener failing.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

impl Web {
    fn org_name(&self, orgnr: &str) -> String {
        orgnr
            .parse::<OrgNumber>()
            .ok()
            .and_then(|o| self.organisations.get(&o).cloned())
            .unwrap_or_else(|| orgnr.to_owned())
    }

    fn contact(&self, orgnr: &str) -> Option<String> {
        orgnr
            .parse::<OrgNumber>()
            .ok()
            .and_then(|o| self.contacts.get(&o).cloned())
    }
}

/// The `n`th synthetic jobseeker of the development login (`jobseeker-{n+1}`): a synthetic
/// identity number with valid check digits, no real person's.
pub fn dev_jobseeker(n: usize) -> Option<SubjectId> {
    SubjectId::synthetic_all().step_by(997).nth(n)
}

/// An identity number as pages show it: the date of birth, the rest masked.
pub fn masked(subject: &SubjectId) -> String {
    let digits = subject.expose();
    format!("{} *****", &digits[..6])
}
