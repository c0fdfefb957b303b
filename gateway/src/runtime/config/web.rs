//! `[web]`: the web tier's listener, how it reaches the gateway's gRPC listener, the token
//! issuer it mints its short-lived tokens with, and the certificate it uses for each audience.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::base::settings::{Schema, Section, count, duration, list, path, secs, table, text};

/// The web tier (`[web]`; off when the section is absent).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where browsers connect. The listener speaks plain HTTP and must be on loopback, behind a
    /// TLS-terminating reverse proxy on the same host.
    pub listen: SocketAddr,
    /// The address browsers use for these pages (`https://…`, no path), which the identity
    /// providers redirect back to (`<public_url>/login/<audience>/callback`). Required when an
    /// audience logs in with OpenID Connect.
    pub public_url: Option<String>,
    /// The gateway's gRPC address as the web tier dials it, e.g. `https://localhost:50051`
    /// (the host must be a name in the gateway's server certificate). Default: `localhost` and
    /// the port of `[server] listen`.
    pub gateway_url: Option<String>,
    /// PEM CA certificate(s) that issued the gateway's server certificate.
    pub gateway_ca: PathBuf,
    /// The `iss` of the web tier's own tokens; an `[[auth.issuers]]` entry with this `iss` and
    /// the web tier's public key must exist.
    pub issuer: String,
    /// The web tier's Ed25519 signing key (PKCS#8 v1 PEM, RFC 8410).
    pub issuer_key: PathBuf,
    /// How long a minted token lives (RFC 7519 `exp` − `iat`).
    pub token_ttl: Duration,
    /// A session ends after this long without a request (WCAG 2.2.1: every page says when and
    /// offers to extend it).
    pub session_idle: Duration,
    /// Sessions kept at most (in memory; the least used go first when it is full).
    pub max_sessions: u64,
    /// The certificate the web tier presents for jobseekers: the portal organisation's.
    pub jobseekers: AudienceConfig,
    /// The certificate the web tier presents for privacy officers: their organisation's.
    pub officers: AudienceConfig,
}

/// One audience's client certificate (the organisation the web tier acts through) and how
/// its people log in.
#[derive(Debug, Clone)]
pub struct AudienceConfig {
    /// PEM client certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// OpenID Connect login (`[web.<audience>.oidc]`); without it only `casegate dev`'s picker
    /// logs this audience in.
    pub oidc: Option<OidcConfig>,
}

/// An OpenID Connect provider (OpenID Connect Core 1.0 §3.1, authorization code flow, with
/// PKCE, RFC 7636): ID-porten for jobseekers, HelseID or Entra ID for officers.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The provider's issuer (`iss`); its discovery document is at
    /// `<issuer_url>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4).
    pub issuer_url: String,
    /// The web tier's client id at the provider.
    pub client_id: String,
    /// A file holding the client secret (`client_secret_basic`); a public client with PKCE
    /// alone when absent.
    pub client_secret_file: Option<PathBuf>,
    /// PEM roots to trust for the provider; the public web PKI when absent.
    pub ca: Option<PathBuf>,
    /// Scopes besides `openid`, e.g. `profile`.
    pub scopes: Vec<String>,
    /// `acr_values` to ask for, space-separated in order of preference, e.g.
    /// `idporten-loa-high`; a login is accepted only at one of these levels.
    pub acr_values: Option<String>,
    /// The ID token claim holding a jobseeker's national identity number (ID-porten: `pid`).
    pub pid_claim: String,
    /// For officers: the claim (a string or an array of strings) that must hold `role_value`.
    pub role_claim: Option<String>,
    /// For officers: the value `role_claim` must hold (required with it for officers).
    pub role_value: Option<String>,
}

/// `[web]`'s keys (required ones only when the section is there).
static WEB: Schema = Schema {
    section: "web",
    keys: &[
        text("listen", true),
        text("public_url", false),
        text("gateway_url", false),
        path("gateway_ca", true),
        text("issuer", true),
        path("issuer_key", true),
        duration("token_ttl", secs(60), secs(5), secs(600)),
        duration("session_idle", secs(15 * 60), secs(60), secs(8 * 3600)),
        count("max_sessions", 100_000, 10_000_000),
        table("jobseekers"),
        table("officers"),
    ],
};

/// `[web.jobseekers]` and `[web.officers]`.
static AUDIENCE: Schema = Schema {
    section: "web.*",
    keys: &[path("cert", true), path("key", true), table("oidc")],
};

/// `[web.<audience>.oidc]`.
static OIDC: Schema = Schema {
    section: "web.*.oidc",
    keys: &[
        text("issuer_url", true),
        text("client_id", true),
        path("client_secret_file", false),
        path("ca", false),
        list("scopes", false),
        text("acr_values", false),
        text("pid_claim", false),
        text("role_claim", false),
        text("role_value", false),
    ],
};

/// The web tier's schemas.
#[cfg(test)]
pub(super) fn schemas() -> [&'static Schema; 3] {
    [&WEB, &AUDIENCE, &OIDC]
}

/// Reads `[web]`; `None` when absent or invalid (problems recorded).
pub(super) fn read(root: &mut Section<'_>, base: &Path) -> Option<WebConfig> {
    let mut s = root.section("web", &WEB);
    if s.is_empty() {
        s.finish();
        return None;
    }
    let listen = s.text("listen").and_then(|text| match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            s.problem(
                "listen",
                format!("{text:?} is not an address like 127.0.0.1:8080"),
            );
            None
        }
    });
    if let Some(addr) = listen
        && !SocketAddr::ip(&addr).is_loopback()
    {
        s.problem(
            "listen",
            "the web listener speaks plain HTTP: bind it to loopback, behind a TLS-terminating \
             reverse proxy on the same host",
        );
    }
    let public_url = s.text("public_url");
    if let Some(url) = &public_url
        && (!url.starts_with("https://") && !url.starts_with("http://127.0.0.1:")
            || url.ends_with('/'))
    {
        s.problem(
            "public_url",
            "must be https://host[:port] with no trailing slash (http only for 127.0.0.1)",
        );
    }
    let gateway_url = s.text("gateway_url");
    if let Some(url) = &gateway_url
        && !url.starts_with("https://")
    {
        s.problem("gateway_url", "must start with https://");
    }
    let gateway_ca = s.file("gateway_ca", base);
    let issuer = s.text("issuer");
    let issuer_key = s.file("issuer_key", base);
    let token_ttl = s.duration("token_ttl");
    let session_idle = s.duration("session_idle");
    let max_sessions = s.count("max_sessions");
    let jobseekers = audience(&mut s, "jobseekers", base, false);
    let officers = audience(&mut s, "officers", base, true);
    let uses_oidc = [&jobseekers, &officers]
        .iter()
        .any(|a| a.as_ref().is_some_and(|a| a.oidc.is_some()));
    if uses_oidc && public_url.is_none() {
        s.problem(
            "public_url",
            "missing: OpenID Connect providers redirect back to it",
        );
    }
    s.finish();
    Some(WebConfig {
        listen: listen?,
        public_url,
        gateway_url,
        gateway_ca: gateway_ca?,
        issuer: issuer?,
        issuer_key: issuer_key?,
        token_ttl,
        session_idle,
        max_sessions,
        jobseekers: jobseekers?,
        officers: officers?,
    })
}

fn audience(s: &mut Section<'_>, key: &str, base: &Path, officers: bool) -> Option<AudienceConfig> {
    let mut a = s.section(key, &AUDIENCE);
    let cert = a.file("cert", base);
    let key = a.file("key", base);
    let oidc = {
        let mut o = a.section("oidc", &OIDC);
        if o.is_empty() {
            o.finish();
            None
        } else {
            let issuer_url = o.text("issuer_url");
            if let Some(url) = &issuer_url
                && !url.starts_with("https://")
            {
                o.problem("issuer_url", "must start with https://");
            }
            let client_id = o.text("client_id");
            let client_secret_file = o.file("client_secret_file", base);
            let ca = o.file("ca", base);
            let scopes = o.strings("scopes").unwrap_or_default();
            let acr_values = o.text("acr_values");
            let pid_claim = o.text("pid_claim").unwrap_or_else(|| "pid".to_owned());
            let role_claim = o.text("role_claim");
            let role_value = o.text("role_value");
            if officers && (role_claim.is_none() || role_value.is_none()) {
                o.problem(
                    "role_claim",
                    "officers need role_claim and role_value: the claim that makes a person a \
                     privacy officer",
                );
            }
            o.finish();
            Some(OidcConfig {
                issuer_url: issuer_url?,
                client_id: client_id?,
                client_secret_file,
                ca,
                scopes,
                acr_values,
                pid_claim,
                role_claim,
                role_value,
            })
        }
    };
    a.finish();
    Some(AudienceConfig {
        cert: cert?,
        key: key?,
        oidc,
    })
}
