//! `[web]`: the web tier's listener, how it reaches the gateway's gRPC listener, the token
//! issuer it mints its short-lived tokens with, and the certificate it uses for each audience.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::reader::Section;

/// The web tier (`[web]`; off when the section is absent).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where browsers connect. Without `[web] tls_cert` the listener speaks plain HTTP and must be
    /// on loopback, behind a TLS-terminating reverse proxy on the same host.
    pub listen: SocketAddr,
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
    /// The certificate the web tier presents for jobseekers: the portal organisation's.
    pub jobseekers: AudienceConfig,
    /// The certificate the web tier presents for privacy officers: their organisation's.
    pub officers: AudienceConfig,
}

/// One audience's client certificate (the organisation the web tier acts through).
#[derive(Debug, Clone)]
pub struct AudienceConfig {
    /// PEM client certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Reads `[web]`; `None` when absent or invalid (problems recorded).
pub(super) fn read(root: &mut Section<'_>, base: &Path) -> Option<WebConfig> {
    let mut s = root.section("web");
    if s.is_empty() {
        s.finish();
        return None;
    }
    let listen = s.string("listen").and_then(|text| match text.parse() {
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
    let gateway_url = s.opt_string("gateway_url");
    if let Some(url) = &gateway_url
        && !url.starts_with("https://")
    {
        s.problem("gateway_url", "must start with https://");
    }
    let gateway_ca = s.file("gateway_ca", base);
    let issuer = s.string("issuer");
    let issuer_key = s.file("issuer_key", base);
    let token_ttl = s.duration_or(
        "token_ttl",
        Duration::from_secs(60),
        Duration::from_secs(5),
        Duration::from_secs(600),
    );
    let session_idle = s.duration_or(
        "session_idle",
        Duration::from_secs(15 * 60),
        Duration::from_secs(60),
        Duration::from_secs(8 * 3600),
    );
    let jobseekers = audience(&mut s, "jobseekers", base);
    let officers = audience(&mut s, "officers", base);
    s.finish();
    Some(WebConfig {
        listen: listen?,
        gateway_url,
        gateway_ca: gateway_ca?,
        issuer: issuer?,
        issuer_key: issuer_key?,
        token_ttl,
        session_idle,
        jobseekers: jobseekers?,
        officers: officers?,
    })
}

fn audience(s: &mut Section<'_>, key: &str, base: &Path) -> Option<AudienceConfig> {
    let mut a = s.section(key);
    let cert = a.file("cert", base);
    let key = a.file("key", base);
    a.finish();
    Some(AudienceConfig {
        cert: cert?,
        key: key?,
    })
}
