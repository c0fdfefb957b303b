//! Fetching a JWKS over HTTPS: one `GET` over rustls (ring), HTTP/1.1, `Connection: close`,
//! bounded in size and time. Enough for an identity provider's key set; nothing more general.

use std::{sync::Arc, time::Duration};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// Largest key set accepted.
const MAX_BODY: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

/// An `https://host[:port]/path` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
    text: String,
}

impl HttpsUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("https://")
            .ok_or("must start with https://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
            let port = after.strip_prefix(':').map(str::parse).transpose();
            (host, port.map_err(|_| "bad port")?.unwrap_or(443))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| "bad port")?),
                None => (authority, 443),
            }
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err("not a usable https address".into());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            text: text.to_owned(),
        })
    }
}

impl std::fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A TLS client trusting `roots` (or the public web PKI when `None`).
pub fn client_config(roots: Option<RootCertStore>) -> Result<Arc<ClientConfig>, String> {
    let roots = roots.unwrap_or_else(|| RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    let config = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `GET url`, returning the body of a 200 response.
pub async fn get(url: &HttpsUrl, tls: Arc<ClientConfig>) -> Result<Vec<u8>, String> {
    tokio::time::timeout(TIMEOUT, fetch(url, tls))
        .await
        .map_err(|_| format!("{url}: timed out"))?
}

async fn fetch(url: &HttpsUrl, tls: Arc<ClientConfig>) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| format!("{url}: {e}"))?;
    let mut stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{url}: TLS: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\naccept: application/json\r\nconnection: close\r\n\r\n",
        url.path, url.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                if response.len() > MAX_BODY + 16 * 1024 {
                    return Err(format!("{url}: response larger than {MAX_BODY} bytes"));
                }
            }
            // Servers often close without close_notify; what was read is complete when the
            // length checks below pass.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    parse_response(&response).map_err(|e| format!("{url}: {e}"))
}

fn parse_response(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP response head")?;
    let head = std::str::from_utf8(&bytes[..split]).map_err(|_| "response head is not text")?;
    let body = &bytes[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status {status:?}"));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return dechunk(body);
    }
    match header("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(len)) if body.len() >= len => Ok(body[..len].to_vec()),
        Some(Ok(_)) => Err("response body is shorter than its content-length".into()),
        Some(Err(_)) => Err("bad content-length".into()),
        None => Ok(body.to_vec()),
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses_parse() {
        let u = HttpsUrl::parse("https://idp.example:8443/keys/jwks.json").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("idp.example", 8443, "/keys/jwks.json")
        );
        let u = HttpsUrl::parse("https://[::1]:9000/jwks").expect("url");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(
            HttpsUrl::parse("https://idp.example").expect("url").path,
            "/"
        );
        assert!(HttpsUrl::parse("http://idp.example/jwks").is_err());

        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain), Ok(b"hello".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Ok(b"hello".to_vec()));
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }
}
