//! Logging people in with OpenID Connect (OpenID Connect Core 1.0 §3.1, the authorization code
//! flow) with PKCE (RFC 7636, S256), through the kept `openidconnect` crate: ID-porten for
//! jobseekers, the organisation's provider (HelseID, Entra ID) for officers.
//!
//! The provider's metadata and keys (OpenID Connect Discovery 1.0) are kept for a minute in a
//! kept cache (`moka`), so a burst of logins makes one discovery; a refused ID token drops them,
//! so a rotated signing key is fetched by the next login. The ID token's
//! signature, `iss`, `aud`, `exp` and `nonce` are checked by the library; the jobseeker's
//! identity number and the officer's role are read from the verified token.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use casegate_consent::SubjectId;
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
    core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Audience, Person};
use crate::{edge::https::error_chain, runtime::config::OidcConfig};

/// What a login waits for between leaving for the provider and coming back (kept in the
/// session).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Pending {
    state: String,
    nonce: String,
    verifier: String,
}

/// Why a login failed. Messages name the step, never the person.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoginError {
    #[error("the identity provider could not be reached or described itself wrongly: {0}")]
    Discovery(String),
    #[error("the login came back without a matching request (state)")]
    State,
    #[error("the identity provider refused: {0}")]
    Provider(String),
    #[error("the authorization code could not be exchanged: {0}")]
    Exchange(String),
    #[error("the ID token was refused: {0}")]
    IdToken(String),
    #[error("the ID token has no valid {0} claim")]
    Claim(String),
    #[error("the person does not have the privacy officer role")]
    Role,
    #[error("the login's assurance level is not one that was asked for")]
    Assurance,
}

impl LoginError {
    /// What went wrong, in words that carry nothing the provider or the browser sent (those
    /// go to the log only).
    pub(super) fn summary(&self) -> &'static str {
        match self {
            LoginError::Discovery(_) => "the identity provider could not be reached",
            LoginError::State => "the login came back without a matching request",
            LoginError::Provider(_) => "the identity provider refused the login",
            LoginError::Exchange(_) => "the authorization code could not be exchanged",
            LoginError::IdToken(_) => "the ID token was refused",
            LoginError::Claim(_) => "the ID token lacks a valid identity claim",
            LoginError::Role => "the person does not have the privacy officer role",
            LoginError::Assurance => "the login's assurance level is too low",
        }
    }
}

/// Why a provider cannot be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

type Discovered = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Signature algorithms an ID token may use: asymmetric only (no `none`, no HMAC).
const ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// One audience's OpenID provider.
#[derive(Debug)]
pub(super) struct Provider {
    audience: Audience,
    issuer: IssuerUrl,
    client_id: ClientId,
    secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    config: OidcConfig,
    http: reqwest::Client,
    /// The discovered metadata and key set, for at most [`DISCOVERY_TTL`].
    discovered: moka::future::Cache<(), CoreProviderMetadata>,
}

/// How long discovered metadata and keys are used before they are fetched again.
pub(super) const DISCOVERY_TTL: Duration = Duration::from_secs(60);

impl Provider {
    /// Sets up the provider; `public_url` is where browsers reach the web tier.
    ///
    /// # Errors
    /// An unreadable secret or CA file, or an unusable URL.
    pub(super) fn new(
        config: &OidcConfig,
        audience: Audience,
        public_url: &str,
    ) -> Result<Self, SetupError> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| SetupError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        let secret = config
            .client_secret_file
            .as_deref()
            .map(read)
            .transpose()?
            .map(|s| ClientSecret::new(s.trim().to_owned()));
        // No redirects: the library requires it (a redirect could send the code elsewhere).
        let http = crate::edge::https::roots(config.ca.as_deref())
            .and_then(|roots| crate::edge::https::client(roots, Duration::from_secs(10)))
            .map_err(SetupError::Invalid)?;
        let path = match audience {
            Audience::Jobseeker => "jobseeker",
            Audience::Officer => "officer",
        };
        Ok(Self {
            audience,
            issuer: IssuerUrl::new(config.issuer_url.clone())
                .map_err(|e| SetupError::Invalid(format!("issuer_url: {e}")))?,
            client_id: ClientId::new(config.client_id.clone()),
            secret,
            redirect: RedirectUrl::new(format!("{public_url}/login/{path}/callback"))
                .map_err(|e| SetupError::Invalid(format!("public_url: {e}")))?,
            config: config.clone(),
            http,
            discovered: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(DISCOVERY_TTL)
                .build(),
        })
    }

    async fn discover(&self) -> Result<Discovered, LoginError> {
        let metadata = self
            .discovered
            .try_get_with((), async {
                CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                    .await
                    .map_err(|e| error_chain(&e))
            })
            .await
            .map_err(|e| LoginError::Discovery(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            self.client_id.clone(),
            self.secret.clone(),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Where to send the browser, and what to keep until it comes back.
    ///
    /// # Errors
    /// [`LoginError::Discovery`].
    pub(super) async fn start(&self) -> Result<(String, Pending), LoginError> {
        let client = self.discover().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        // `acr_values` is a space-separated list, in order of preference (OpenID Connect Core
        // §3.1.2.1): every level listed is acceptable.
        for acr in self
            .config
            .acr_values
            .iter()
            .flat_map(|a| a.split_whitespace())
        {
            request =
                request.add_auth_context_value(AuthenticationContextClass::new(acr.to_owned()));
        }
        let (url, state, nonce) = request.url();
        Ok((
            url.to_string(),
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
            },
        ))
    }

    /// Finishes a login from the provider's redirect (`code`, `state`, or an `error`).
    ///
    /// # Errors
    /// Any [`LoginError`]: nothing is logged in.
    pub(super) async fn finish(
        &self,
        pending: Pending,
        state: &str,
        code: &str,
    ) -> Result<Person, LoginError> {
        if state.is_empty() || !super::session::same_secret(state, &pending.state) {
            return Err(LoginError::State);
        }
        let client = self.discover().await?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Exchange(error_chain(&e)))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| LoginError::IdToken("the provider sent none".into()))?;
        let verifier = client.id_token_verifier().set_allowed_algs(ALGORITHMS);
        let claims = match id_token.claims(&verifier, &Nonce::new(pending.nonce)) {
            Ok(claims) => claims,
            Err(e) => {
                // Perhaps signed with a key published since: the next login discovers again.
                self.discovered.invalidate(&()).await;
                return Err(LoginError::IdToken(error_chain(&e)));
            }
        };
        // The compact token whose signature the library has just verified.
        let payload = id_token
            .to_string()
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .unwrap_or(Value::Null);
        let acr = claims
            .auth_context_ref()
            .map_or_else(String::new, |a| a.as_str().to_owned());
        // The front channel can be changed by the browser: the level asked for is checked in
        // what came back (OpenID Connect Core §3.1.3.7, step 12).
        if let Some(wanted) = &self.config.acr_values
            && !wanted.split_whitespace().any(|w| w == acr)
        {
            return Err(LoginError::Assurance);
        }
        let pid = match self.audience {
            Audience::Jobseeker => {
                let claim = &self.config.pid_claim;
                let pid = payload[claim.as_str()].as_str().unwrap_or_default();
                Some(
                    pid.parse::<SubjectId>()
                        .map_err(|_| LoginError::Claim(claim.clone()))?,
                )
            }
            Audience::Officer => {
                let (Some(claim), Some(value)) = (&self.config.role_claim, &self.config.role_value)
                else {
                    return Err(LoginError::Role);
                };
                let holds = match &payload[claim.as_str()] {
                    Value::String(s) => s == value,
                    Value::Array(items) => items.iter().any(|i| i.as_str() == Some(value)),
                    _ => false,
                };
                if !holds {
                    return Err(LoginError::Role);
                }
                None
            }
        };
        Ok(Person {
            sub: claims.subject().as_str().to_owned(),
            pid,
            role: self.audience,
            idp: claims.issuer().as_str().to_owned(),
            acr,
        })
    }
}
