//! Outgoing HTTPS: one way to build a client (`reqwest`, which runs on hyper's client, over
//! rustls with the ring provider) for an identity provider's key set and its OpenID
//! discovery, and a bounded `GET` for JSON Web Key Sets (RFC 7517 §5).

use std::{path::Path, time::Duration};

use reqwest::{StatusCode, Url, redirect::Policy};
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// Largest body [`get`] accepts, in bytes.
const MAX_BODY: usize = 1 << 20;

/// Parses an `https://` address (with a host); anything else is refused with a reason.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err("must start with https://".to_owned());
    }
    if url.host().is_none() {
        return Err("has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // It would be written to every log line about the fetch.
        return Err("must not hold a user name or password".to_owned());
    }
    Ok(url)
}

/// The trust anchors in the PEM file `ca`, or the public web PKI (`webpki-roots`) when `None`.
///
/// # Errors
/// An unreadable file, a certificate that is not PEM, or one rustls will not use as a root;
/// the message names the file.
pub fn roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let Some(path) = ca else {
        return Ok(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// An HTTPS client trusting `roots`, following no redirects and no proxy, each request
/// bounded by `timeout`.
///
/// # Errors
/// rustls or reqwest refusing the configuration (not expected with the ring provider).
pub fn client(roots: rustls::RootCertStore, timeout: Duration) -> Result<reqwest::Client, String> {
    let tls = rustls::ClientConfig::builder_with_provider(crate::edge::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(Policy::none())
        // Directly, as before: proxy settings in the environment are not taken up.
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// `GET url` with `accept: application/json`, returning the body of a `200 OK` of at most
/// 1 MiB (read as it arrives, so a larger one is refused without being held).
///
/// # Errors
/// Connection, TLS or timeout failures, another status, or a body over the bound; each
/// message starts with the URL.
pub async fn get(client: &reqwest::Client, url: &Url) -> Result<Vec<u8>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{url}: {e}");
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| fail(&error_chain(&e.without_url())))?;
    if response.status() != StatusCode::OK {
        return Err(fail(&format_args!("HTTP status {}", response.status())));
    }
    let too_large = || fail(&format_args!("response larger than {MAX_BODY} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(&error_chain(&e.without_url())))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its sources on one line, `: `-separated (an HTTP client's own message hides
/// the cause, such as a certificate the roots do not vouch for).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_addresses_with_a_host_are_accepted() {
        let u = parse_url("https://idp.example:8443/keys/jwks.json").expect("url");
        assert_eq!(
            (u.host_str(), u.port(), u.path()),
            (Some("idp.example"), Some(8443), "/keys/jwks.json")
        );
        let u = parse_url("https://[::1]:9000/jwks").expect("url");
        assert_eq!((u.host_str(), u.port()), (Some("[::1]"), Some(9000)));
        assert_eq!(
            parse_url("http://idp.example/jwks"),
            Err("must start with https://".to_owned())
        );
        assert!(parse_url("https://").is_err());
        assert!(parse_url("jwks.json").is_err());
        assert_eq!(
            parse_url("https://user:secret@idp.example/jwks"),
            Err("must not hold a user name or password".to_owned())
        );
    }
}
