//! Authentication of every `casegate.v1` call: the client certificate names the organisation,
//! a JWT access token names the person and their role, and the two must agree.
//!
//! Token rules: the issuer must be configured; the header's `alg` must be on that issuer's
//! allow-list (EdDSA, ES256, RS256 at most — never `none`, never HMAC) and fit the key named by
//! `kid`; a header that asks for anything this gateway does not implement (`crit` in any form,
//! RFC 7515 §4.1.11; unencoded payloads, `b64`, RFC 7797; `zip`, `enc`, `cty`) is refused, as
//! is a `typ` other than a JWT's (RFC 7519 §5.1, RFC 9068 §2.1); EdDSA signatures are verified
//! strictly (see [`casegate_audit::ed25519`]); `exp`, `iss`, `aud` and `sub` are required;
//! `sub` follows the text rule of request fields ([`crate::base::text`]); `org` must be the
//! certificate's orgnr; `role` must be a known role; `pid`, when present, must be a valid
//! identity number; and `cnf`, when present, must hold exactly an `x5t#S256` binding that
//! matches the client certificate (RFC 8705 §3.1) — a confirmation method this gateway cannot
//! check is refused rather than treated as unbound.

mod config;
mod header;
mod jwks;
mod verified;

use std::{
    collections::HashMap,
    future::Future,
    path::Path,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use casegate_consent::{OrgNumber, Role, SubjectId};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::Deserialize;
use tonic::Status;
use tower::{Layer, Service};

#[cfg(test)]
pub(crate) use config::ISSUER as ISSUER_SCHEMA;
pub(crate) use config::SCHEMA as CONFIG_SCHEMA;
pub use config::{ALLOWED_ALGORITHMS, AuthConfig, IssuerConfig, JwksLocation};
pub(crate) use jwks::Jwks;
use verified::{Verified, VerifiedTokens};

/// Verified tokens remembered at most (see [`verified`]).
const REMEMBERED_TOKENS: usize = 8192;
/// How long one fetch of an issuer's key set may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `sub` accepted, in bytes (the bound of other user ids, such as a witness's).
const MAX_SUB_BYTES: usize = 200;

use crate::{
    app::principal::Principal,
    base::problem::Problem,
    edge::identity::{ClientIdentity, IdentityError},
    edge::limits::RateLimiter,
    edge::tls::Peer,
};

/// Why a call was not authenticated. The messages are safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no client certificate on this connection")]
    NoCertificate,
    #[error(transparent)]
    Certificate(#[from] IdentityError),
    #[error("missing access token: send `authorization: Bearer <token>`")]
    MissingToken,
    #[error("malformed access token: {0}")]
    Malformed(&'static str),
    #[error("token issuer is not trusted by this gateway")]
    UnknownIssuer,
    #[error("token algorithm {0} is not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    #[error("token header has no key id (kid)")]
    MissingKeyId,
    #[error("token key id is not in the issuer's key set")]
    UnknownKey,
    #[error("invalid access token: {0}")]
    Invalid(&'static str),
    #[error("token claim {0} is missing or empty")]
    MissingClaim(&'static str),
    #[error("token claim {0}: {1}")]
    InvalidClaim(&'static str, crate::base::text::TextRule),
    #[error("token org is not a valid organisation number")]
    InvalidOrg,
    #[error(
        "token header parameter {0} is not implemented by this gateway (RFC 7515 §4.1.11: a token that needs it is refused)"
    )]
    UnsupportedHeader(&'static str),
    #[error("token header: {0}")]
    InvalidHeader(&'static str),
    #[error(
        "token cnf names a confirmation method this gateway cannot check (only x5t#S256, RFC 8705)"
    )]
    UnsupportedConfirmation,
    #[error("token pid is not a valid national identity number: {0}")]
    InvalidPid(casegate_consent::ParseError),
    #[error("token is bound to a different client certificate (cnf x5t#S256)")]
    CertificateBinding,
    #[error("token org does not match the client certificate's organisation")]
    OrgMismatch,
    #[error(
        "token role is not one of: clinician, nav_counsellor, employment_specialist, privacy_officer, jobseeker, admin"
    )]
    UnknownRole,
    #[error("role jobseeker is accepted only from the jobseekers' portal organisation")]
    JobseekerOutsidePortal,
    /// The system clock is this far behind the audit log's newest entry (more than
    /// [`crate::base::clock::TOLERANCE`]); every call is refused until it is corrected.
    #[error(
        "the gateway's clock is {} s behind its audit log's newest entry; it refuses calls until the clock is corrected",
        .0.as_secs()
    )]
    ClockBehind(Duration),
    /// The organisation's rate limit is spent; the next call fits after this long.
    #[error("rate limit for your organisation exceeded; retry in {} ms", .0.as_millis().max(1))]
    RateLimited(Duration),
}

/// Where an issuer's keys come from.
#[derive(Debug)]
enum Source {
    File,
    Url {
        url: reqwest::Url,
        client: reqwest::Client,
        min_refresh: Duration,
    },
}

struct Issuer {
    audience: String,
    algorithms: Vec<Algorithm>,
    keys: RwLock<Arc<Jwks>>,
    source: Source,
    /// When the keys were last fetched (or tried); one fetch at a time.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Issuer {
    fn keys(&self) -> Arc<Jwks> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches the key set again if it is fetched over HTTPS and was not fetched within the
    /// minimum interval. On failure the last good set stays.
    async fn refresh(&self, iss: &str) {
        let Source::Url {
            url,
            client,
            min_refresh,
        } = &self.source
        else {
            return;
        };
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < *min_refresh) {
            return;
        }
        *fetched = Some(Instant::now());
        let result = crate::edge::https::get(client, url)
            .await
            .and_then(|body| String::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned()))
            .and_then(|text| Jwks::from_json(&text));
        match result {
            Ok(keys) => {
                tracing::info!(issuer = iss, "token keys refreshed");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(issuer = iss, error = %e, "token keys could not be fetched or were refused; keeping the last good set")
            }
        }
    }
}

/// Verifies access tokens against the configured issuers. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    issuers: Arc<HashMap<String, Issuer>>,
    leeway_secs: u64,
    jobseeker_orgs: Arc<Vec<OrgNumber>>,
    verified: Arc<VerifiedTokens<Claims>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.issuers.keys().collect();
        names.sort();
        f.debug_struct("Authenticator")
            .field("issuers", &names)
            .finish()
    }
}

/// The claims a verified token vouches for (no `Debug`: `pid` is an identity number).
#[derive(Deserialize)]
struct Claims {
    exp: u64,
    nbf: Option<u64>,
    sub: Option<String>,
    org: Option<String>,
    role: Option<String>,
    pid: Option<String>,
    cnf: Option<Confirmation>,
    /// The identity provider of an upstream login, in tokens a backend-for-frontend (the web
    /// tier) mints for the person it logged in.
    idp: Option<String>,
    /// That login's assurance level (OpenID Connect Core §2 `acr`).
    acr: Option<String>,
}

/// The `cnf` claim (RFC 7800 §3.1): only the certificate thumbprint method of RFC 8705 §3.1 is
/// understood, so any other member refuses the token.
#[derive(Deserialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
    #[serde(flatten)]
    others: HashMap<String, serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

// === impl Authenticator ===

impl Authenticator {
    /// Loads every file-based key set and prepares the HTTPS ones (fetched by
    /// [`Authenticator::prefetch`] and on demand), reporting each problem.
    pub fn from_config(config: &AuthConfig) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut issuers = HashMap::new();
        for (i, issuer) in config.issuers.iter().enumerate() {
            let loaded = match &issuer.jwks {
                JwksLocation::File(path) => Jwks::from_file(path)
                    .map(|keys| (keys, Source::File))
                    .map_err(|message| (format!("auth.issuers[{i}].jwks_file"), message)),
                JwksLocation::Url {
                    url,
                    ca,
                    min_refresh,
                } => url_source(url, ca.as_deref(), *min_refresh)
                    .map(|source| (Jwks::empty(), source))
                    .map_err(|message| (format!("auth.issuers[{i}].jwks_url"), message)),
            };
            match loaded {
                Ok((keys, source)) => {
                    issuers.insert(
                        issuer.iss.clone(),
                        Issuer {
                            audience: issuer.audience.clone(),
                            algorithms: issuer.algorithms.clone(),
                            keys: RwLock::new(Arc::new(keys)),
                            source,
                            fetched: tokio::sync::Mutex::new(None),
                        },
                    );
                }
                Err((key, message)) => problems.push(Problem { key, message }),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                issuers: Arc::new(issuers),
                leeway_secs: config.leeway.as_secs(),
                jobseeker_orgs: Arc::new(config.jobseeker_orgs.clone()),
                verified: Arc::new(VerifiedTokens::new(REMEMBERED_TOKENS)),
            })
        } else {
            Err(problems)
        }
    }

    /// Fetches every HTTPS key set once (an unreachable issuer is retried on demand).
    pub async fn prefetch(&self) {
        for (iss, issuer) in self.issuers.iter() {
            issuer.refresh(iss).await;
        }
    }

    /// Verifies `token` for a call over a connection from `client`. A token naming a key the
    /// issuer's set does not hold triggers one (rate-limited) refresh of an HTTPS key set.
    pub async fn authenticate(
        &self,
        token: &str,
        client: &ClientIdentity,
    ) -> Result<Principal, AuthError> {
        let digest = verified::digest(token);
        let now = jsonwebtoken::get_current_timestamp();
        let current_keys = |iss: &str| self.issuers.get(iss).map(Issuer::keys);
        if let Some((iss, claims)) = self
            .verified
            .get(&digest, now, self.leeway_secs, current_keys)
        {
            return self.principal(&iss, &claims, client);
        }
        let header = header::parse(token)?;
        // Only to pick the issuer's keys; everything is verified below.
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
            .map_err(|_| AuthError::Malformed("payload is not a JSON object"))?
            .iss
            .ok_or(AuthError::MissingClaim("iss"))?;
        let issuer = self.issuers.get(&iss).ok_or(AuthError::UnknownIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let kid = header.kid.as_str();
        let mut keys = issuer.keys();
        if keys.get(kid).is_none() {
            issuer.refresh(&iss).await;
            keys = issuer.keys();
        }
        let key = keys.get(kid).ok_or(AuthError::UnknownKey)?;
        if key.algorithm.is_some_and(|a| a != header.alg) || key.key.family() != header.alg.family()
        {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let claims = Arc::new(self.verify(token, &iss, issuer, header.alg, key)?);
        self.verified.insert(
            digest,
            Verified {
                iss: iss.clone(),
                keys: keys.clone(),
                exp: claims.exp,
                nbf: claims.nbf,
                claims: claims.clone(),
            },
            now,
            self.leeway_secs,
        );
        self.principal(&iss, &claims, client)
    }

    /// Checks the signature and the issuer's rules (`exp`, `nbf`, `iss`, `aud`, `sub`).
    fn verify(
        &self,
        token: &str,
        iss: &str,
        issuer: &Issuer,
        alg: Algorithm,
        key: &jwks::VerificationKey,
    ) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[iss]);
        validation.set_audience(&[&issuer.audience]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        if alg == Algorithm::EdDSA && key.ed25519.is_none() {
            // Every EdDSA key was checked at load; one without that check verifies nothing.
            return Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")));
        }
        if let Some(public) = &key.ed25519 {
            // jsonwebtoken verifies EdDSA without the strict rules; check them first.
            let (signing_input, signature) = token
                .rsplit_once('.')
                .ok_or(AuthError::Malformed("not a compact JWS"))?;
            let signature = URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
            public
                .verify_strict(signing_input.as_bytes(), &signature)
                .map_err(|_| AuthError::Invalid("signature does not verify"))?;
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))?;
        // Checked once, before the token is remembered; an empty `sub` is refused as missing
        // on every call.
        if let Some(sub) = claims.sub.as_deref().filter(|s| !s.is_empty()) {
            crate::base::text::check(sub, MAX_SUB_BYTES)
                .map_err(|rule| AuthError::InvalidClaim("sub", rule))?;
        }
        for (name, value) in [("idp", &claims.idp), ("acr", &claims.acr)] {
            if let Some(value) = value {
                crate::base::text::check(value, MAX_SUB_BYTES)
                    .map_err(|rule| AuthError::InvalidClaim(name, rule))?;
                if value.contains(char::is_whitespace) {
                    return Err(AuthError::InvalidClaim(
                        name,
                        crate::base::text::TextRule::Whitespace,
                    ));
                }
            }
        }
        Ok(claims)
    }

    /// The caller a verified token names, checked against the connection's certificate.
    fn principal(
        &self,
        iss: &str,
        claims: &Claims,
        client: &ClientIdentity,
    ) -> Result<Principal, AuthError> {
        let user_id = claims
            .sub
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        let org = claims
            .org
            .as_deref()
            .ok_or(AuthError::MissingClaim("org"))?;
        let role = claims
            .role
            .as_deref()
            .ok_or(AuthError::MissingClaim("role"))?;
        let binding = match &claims.cnf {
            None => None,
            Some(Confirmation {
                x5t_s256: Some(thumbprint),
                others,
            }) if others.is_empty() => Some(thumbprint.as_str()),
            Some(_) => return Err(AuthError::UnsupportedConfirmation),
        };
        if binding.is_some_and(|b| b != URL_SAFE_NO_PAD.encode(client.cert_sha256)) {
            return Err(AuthError::CertificateBinding);
        }
        let certificate_bound = binding.is_some();
        let pid = claims
            .pid
            .as_deref()
            .map(|p| p.parse::<SubjectId>().map_err(AuthError::InvalidPid))
            .transpose()?;
        if org
            .parse::<OrgNumber>()
            .map_err(|_| AuthError::InvalidOrg)?
            != client.orgnr
        {
            return Err(AuthError::OrgMismatch);
        }
        let role = role.parse::<Role>().map_err(|_| AuthError::UnknownRole)?;
        // A jobseeker speaks for themself only through the portal, and says who they are.
        if role == Role::Jobseeker {
            if !self.jobseeker_orgs.contains(&client.orgnr) {
                return Err(AuthError::JobseekerOutsidePortal);
            }
            if pid.is_none() {
                return Err(AuthError::MissingClaim("pid"));
            }
        }
        Ok(Principal {
            orgnr: client.orgnr,
            user_id,
            role,
            issuer: iss.to_owned(),
            pid,
            cert_sha256: client.cert_sha256,
            certificate_bound,
            login: claims.idp.as_ref().map(|idp| casegate_audit::entry::Login {
                idp: idp.clone(),
                acr: claims.acr.clone(),
            }),
        })
    }
}

fn url_source(url: &str, ca: Option<&Path>, min_refresh: Duration) -> Result<Source, String> {
    Ok(Source::Url {
        url: crate::edge::https::parse_url(url)?,
        client: crate::edge::https::client(crate::edge::https::roots(ca)?, JWKS_FETCH_TIMEOUT)?,
        min_refresh,
    })
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token has expired",
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience (aud)",
        ErrorKind::InvalidSignature => "signature does not verify",
        ErrorKind::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
        ErrorKind::InvalidAlgorithm => "algorithm does not fit the key",
        _ => "token could not be verified",
    }
}

/// The layer in front of every `casegate.v1` service: reads the client certificate, applies
/// the organisation's rate limit (before any token work), verifies the bearer token, and
/// attaches the verified [`Principal`] to the request. Refusals never reach the handler.
#[derive(Debug, Clone)]
pub(crate) struct Authenticate {
    pub authenticator: Authenticator,
    pub rate: Arc<RateLimiter>,
}

impl Authenticate {
    /// The caller, from the connection's client certificate and the `authorization` header.
    async fn principal(
        &self,
        identity: Option<Result<ClientIdentity, IdentityError>>,
        authorization: Option<http::HeaderValue>,
    ) -> Result<Principal, AuthError> {
        // Decisions and audit times must not go backwards: no call while the clock is
        // behind the audit log (see `crate::base::clock`).
        if let Some(behind) = crate::base::clock::too_far_behind() {
            return Err(AuthError::ClockBehind(behind));
        }
        let client = identity
            .ok_or(AuthError::NoCertificate)?
            .map_err(AuthError::from)?;
        self.rate
            .check(client.orgnr)
            .map_err(AuthError::RateLimited)?;
        let token = bearer(authorization.as_ref())?;
        let principal = self.authenticator.authenticate(token, &client).await?;
        let span = tracing::Span::current();
        span.record("orgnr", tracing::field::display(principal.orgnr));
        span.record("role", principal.role.as_str());
        Ok(principal)
    }
}

impl<S> Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.clone(),
        }
    }
}

/// A service behind [`Authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Authenticated<S> {
    inner: S,
    auth: Authenticate,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Use the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let identity = request
            .extensions()
            .get::<Peer>()
            .and_then(|peer| peer.identity.clone());
        let authorization = request.headers().get("authorization").cloned();
        Box::pin(async move {
            match auth.principal(identity, authorization).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(refused) => Ok(Status::from(refused).into_http()),
            }
        })
    }
}

fn bearer(value: Option<&http::HeaderValue>) -> Result<&str, AuthError> {
    let value = value
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::Malformed("authorization header is not text"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim())
}
