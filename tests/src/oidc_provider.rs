//! An OpenID provider for tests, over HTTPS on loopback: discovery, JWKS, an authorization
//! endpoint that approves at once as a configured person, and a token endpoint that checks
//! PKCE (RFC 7636, S256) and issues an EdDSA-signed ID token with the request's nonce. A
//! [`Fault`] makes the next ID token wrong in one way, for the tests that it must be refused.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use casegate::dev::{DevCa, TokenIssuer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The client id the web tier is registered with.
pub const CLIENT_ID: &str = "casegate-web-test";

/// How the next ID token is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// A nonce other than the one the login asked for.
    Nonce,
    /// An `iss` other than the provider's.
    Issuer,
    /// An `aud` other than the web tier's client id.
    Audience,
    /// `exp` an hour ago.
    Expired,
}

#[derive(Debug)]
struct Shared {
    base: String,
    issuer: TokenIssuer,
    /// The claims (`sub`, `pid`, `roles`, `acr`) of whoever logs in next.
    person: Value,
    fault: Fault,
    /// Codes handed out: (nonce, PKCE challenge, redirect_uri).
    codes: HashMap<String, (String, String, String)>,
}

/// The provider, serving until dropped.
#[derive(Debug)]
pub struct OidcProvider {
    pub addr: SocketAddr,
    /// Its CA certificate (PEM), written for the web tier's `ca` setting.
    pub ca_file: tempfile::NamedTempFile,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl OidcProvider {
    pub async fn start() -> Self {
        let ca = DevCa::generate("test identity provider CA").expect("CA");
        let ca_file = tempfile::NamedTempFile::new().expect("CA file");
        std::fs::write(ca_file.path(), &ca.cert_pem).expect("write CA");
        // The issuer URL holds the port, known once the server listens; until then nothing
        // can reach it.
        let shared = Arc::new(Mutex::new(Shared {
            issuer: TokenIssuer::generate("unset", CLIENT_ID).expect("signing key"),
            base: String::new(),
            person: json!({}),
            fault: Fault::None,
            codes: HashMap::new(),
        }));
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let (addr, task) = crate::https_server::serve(&ca, router).await;
        {
            let mut shared = shared.lock().expect("provider");
            shared.base = format!("https://{addr}");
            shared.issuer = TokenIssuer::generate(&shared.base, CLIENT_ID).expect("signing key");
        }
        Self {
            addr,
            ca_file,
            shared,
            task,
        }
    }

    /// The issuer URL (`https://127.0.0.1:PORT`).
    pub fn issuer_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Who the next login is: the ID token's extra claims (`sub`, `pid`, `roles`, `acr`).
    pub fn next_person(&self, claims: Value) {
        self.shared.lock().expect("provider").person = claims;
    }

    /// How the next ID token is wrong.
    pub fn next_fault(&self, fault: Fault) {
        self.shared.lock().expect("provider").fault = fault;
    }

    /// What a browser does at the authorization endpoint: the provider approves at once and
    /// the answer is the redirect back to the web tier (its path and query).
    pub fn approve(&self, authorize_url: &str) -> String {
        let url = url::Url::parse(authorize_url).expect("authorization URL");
        assert_eq!(url.origin().ascii_serialization(), self.issuer_url());
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let redirect = issue_code(&self.shared, &query).expect("an authorization request");
        let back = url::Url::parse(&redirect).expect("redirect");
        format!("{}?{}", back.path(), back.query().unwrap_or_default())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Provider = State<Arc<Mutex<Shared>>>;

async fn discovery(State(shared): Provider) -> Json<Value> {
    let base = shared.lock().expect("provider").base.clone();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "profile"],
    }))
}

async fn jwks(State(shared): Provider) -> Json<Value> {
    Json(json!({ "keys": [shared.lock().expect("provider").issuer.jwk()] }))
}

async fn authorize(
    State(shared): Provider,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match issue_code(&shared, &query) {
        Some(location) => (StatusCode::SEE_OTHER, [("location", location)]).into_response(),
        None => (StatusCode::BAD_REQUEST, "invalid authorization request").into_response(),
    }
}

/// Checks an authorization request and returns the redirect with a new code.
fn issue_code(shared: &Mutex<Shared>, query: &HashMap<String, String>) -> Option<String> {
    let field = |name: &str| query.get(name).cloned().filter(|v| !v.is_empty());
    if field("response_type")? != "code"
        || field("client_id")? != CLIENT_ID
        || field("code_challenge_method")? != "S256"
        || !field("scope")?.split(' ').any(|s| s == "openid")
    {
        return None;
    }
    let code = URL_SAFE_NO_PAD.encode(uuid::Uuid::now_v7().as_bytes());
    let redirect = field("redirect_uri")?;
    shared.lock().expect("provider").codes.insert(
        code.clone(),
        (field("nonce")?, field("code_challenge")?, redirect.clone()),
    );
    let mut back = url::Url::parse(&redirect).ok()?;
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &field("state")?);
    Some(back.to_string())
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: String,
    client_id: Option<String>,
}

async fn token(State(shared): Provider, Form(request): Form<TokenRequest>) -> Response {
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": why })),
        )
            .into_response()
    };
    let mut shared = shared.lock().expect("provider");
    let Some((nonce, challenge, redirect)) = shared.codes.remove(&request.code) else {
        return refuse("unknown or used code");
    };
    if request.grant_type != "authorization_code"
        || request.redirect_uri != redirect
        || request.client_id.as_deref() != Some(CLIENT_ID)
    {
        return refuse("wrong grant, redirect_uri or client_id");
    }
    let computed = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        request.code_verifier.as_bytes(),
    ));
    if computed != challenge {
        return refuse("PKCE verifier does not match the challenge");
    }
    let now = crate::fixtures::now_seconds();
    let mut claims = json!({
        "iss": shared.base,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "nonce": nonce,
    });
    if let (Value::Object(claims), Value::Object(person)) = (&mut claims, &shared.person) {
        claims.extend(person.clone());
    }
    match shared.fault {
        Fault::None => {}
        Fault::Nonce => claims["nonce"] = json!("another-nonce"),
        Fault::Issuer => claims["iss"] = json!("https://attacker.invalid"),
        Fault::Audience => claims["aud"] = json!("another-client"),
        Fault::Expired => claims["exp"] = json!(now - 3600),
    }
    shared.fault = Fault::None;
    let id_token = shared.issuer.sign_value(&claims).expect("sign ID token");
    Json(json!({
        "access_token": "opaque-test-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}
