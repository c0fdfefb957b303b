//! Authentication of every `casegate.v1` call: the client certificate names the organisation,
//! a JWT access token names the person and their role, and the two must agree.
//!
//! Token rules: the issuer must be configured; the header's `alg` must be on that issuer's
//! allow-list (EdDSA, ES256, RS256 at most — never `none`, never HMAC) and fit the key named by
//! `kid`; `exp`, `iss`, `aud` and `sub` are required; `org` must equal the certificate's orgnr;
//! `role` must be a known role; `pid`, when present, must be a valid identity number; and a
//! `cnf.x5t#S256` binding, when present, must match the client certificate (RFC 8705).

mod jwks;

use std::{collections::HashMap, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use casegate_consent::{OrgNumber, Role, SubjectId};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::Deserialize;
use tonic::{Request, Status, service::Interceptor};

pub use jwks::Jwks;

use crate::{
    config::{AuthConfig, Problem},
    identity::{ClientIdentity, IdentityError},
    limits::{RateLimiter, rate_limited},
    principal::Principal,
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
    #[error("token pid is not a valid national identity number")]
    InvalidPid,
    #[error("token is bound to a different client certificate (cnf x5t#S256)")]
    CertificateBinding,
    #[error("token org does not match the client certificate's organisation")]
    OrgMismatch,
    #[error(
        "token role is not one of: clinician, nav_counsellor, employment_specialist, privacy_officer, jobseeker, admin"
    )]
    UnknownRole,
}

struct Issuer {
    audience: String,
    algorithms: Vec<Algorithm>,
    keys: Jwks,
}

/// Verifies access tokens against the configured issuers. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    issuers: Arc<HashMap<String, Issuer>>,
    leeway_secs: u64,
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

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    org: Option<String>,
    role: Option<String>,
    pid: Option<String>,
    cnf: Option<Confirmation>,
}

#[derive(Deserialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

// === impl Authenticator ===

impl Authenticator {
    /// Loads every issuer's key set, reporting each unreadable one.
    pub fn from_config(config: &AuthConfig) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut issuers = HashMap::new();
        for (i, issuer) in config.issuers.iter().enumerate() {
            match Jwks::from_file(&issuer.jwks_file) {
                Ok(keys) => {
                    issuers.insert(
                        issuer.iss.clone(),
                        Issuer {
                            audience: issuer.audience.clone(),
                            algorithms: issuer.algorithms.clone(),
                            keys,
                        },
                    );
                }
                Err(message) => problems.push(Problem {
                    key: format!("auth.issuers[{i}].jwks_file"),
                    message,
                }),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                issuers: Arc::new(issuers),
                leeway_secs: config.leeway.as_secs(),
            })
        } else {
            Err(problems)
        }
    }

    /// Verifies `token` for a call over a connection from `client`.
    pub fn authenticate(
        &self,
        token: &str,
        client: &ClientIdentity,
    ) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Malformed("header is not a JWS header with a supported alg"))?;
        // Only to pick the issuer's keys; everything is verified below.
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
            .map_err(|_| AuthError::Malformed("payload is not a JSON object"))?
            .iss
            .ok_or(AuthError::MissingClaim("iss"))?;
        let issuer = self.issuers.get(&iss).ok_or(AuthError::UnknownIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let kid = header.kid.as_deref().ok_or(AuthError::MissingKeyId)?;
        let key = issuer.keys.get(kid).ok_or(AuthError::UnknownKey)?;
        if key.algorithm.is_some_and(|a| a != header.alg) || key.key.family() != header.alg.family()
        {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }

        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&iss]);
        validation.set_audience(&[&issuer.audience]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))?
            .claims;

        let user_id = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        let org = claims.org.ok_or(AuthError::MissingClaim("org"))?;
        let role = claims.role.ok_or(AuthError::MissingClaim("role"))?;
        let binding = claims.cnf.and_then(|c| c.x5t_s256);
        if binding
            .as_ref()
            .is_some_and(|b| *b != URL_SAFE_NO_PAD.encode(client.cert_sha256))
        {
            return Err(AuthError::CertificateBinding);
        }
        let certificate_bound = binding.is_some();
        let pid = claims
            .pid
            .map(|p| p.parse::<SubjectId>().map_err(|_| AuthError::InvalidPid))
            .transpose()?;
        if org.parse::<OrgNumber>().ok() != Some(client.orgnr) {
            return Err(AuthError::OrgMismatch);
        }
        let role = role.parse::<Role>().map_err(|_| AuthError::UnknownRole)?;
        Ok(Principal {
            orgnr: client.orgnr,
            user_id,
            role,
            issuer: iss,
            pid,
            cert_sha256: client.cert_sha256,
            certificate_bound,
        })
    }
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

/// The tonic interceptor in front of every `casegate.v1` service: reads the certificate,
/// applies the organisation's rate limit (before any token work), verifies the bearer token,
/// and attaches the verified [`Principal`] to the request.
#[derive(Debug, Clone)]
pub struct Authenticate {
    pub authenticator: Authenticator,
    pub rate: Arc<RateLimiter>,
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = {
            let certs = request.peer_certs().ok_or(AuthError::NoCertificate)?;
            let leaf = certs.first().ok_or(AuthError::NoCertificate)?;
            let client = ClientIdentity::from_der(leaf).map_err(AuthError::from)?;
            self.rate
                .check(client.orgnr, std::time::Instant::now())
                .map_err(rate_limited)?;
            let token = bearer(&request)?;
            self.authenticator.authenticate(token, &client)?
        };
        let span = tracing::Span::current();
        span.record("orgnr", tracing::field::display(principal.orgnr));
        span.record("role", principal.role.as_str());
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

fn bearer<T>(request: &Request<T>) -> Result<&str, AuthError> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::Malformed("authorization header is not text"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim())
}
