//! The protected header of a compact JWS access token (RFC 7515 §4, §7.1), checked before
//! anything else: a token that asks for processing this gateway does not implement is refused.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::AuthError;

/// The longest `kid` accepted, in bytes.
const MAX_KID_BYTES: usize = 256;

/// The JOSE header parameters this gateway reads or must refuse (RFC 7515 §4.1, RFC 7797 §3,
/// RFC 7516 §4.1). Others (`x5t`, `x5c`, …) carry nothing the verification uses and are
/// ignored, as RFC 7515 §4 allows for parameters not listed in `crit`. A repeated parameter
/// is refused by the parser (RFC 7515 §5.2).
#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<String>,
    kid: Option<serde_json::Value>,
    typ: Option<serde_json::Value>,
    cty: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
    b64: Option<serde_json::Value>,
    zip: Option<serde_json::Value>,
    enc: Option<serde_json::Value>,
}

/// What the header says, once checked.
pub(super) struct TokenHeader {
    pub(super) alg: Algorithm,
    pub(super) kid: String,
}

/// Reads and checks a compact JWS's protected header (RFC 7515 §7.1): base64url of a JSON
/// object with an `alg` this gateway implements and a `kid`, and nothing that changes how the
/// token must be processed.
pub(super) fn parse(token: &str) -> Result<TokenHeader, AuthError> {
    let encoded = match token.split('.').collect::<Vec<_>>()[..] {
        [header, _, _] => header,
        _ => {
            return Err(AuthError::Malformed(
                "not a compact JWS (three dot-separated parts)",
            ));
        }
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed("header is not unpadded base64url"))?;
    let header: JoseHeader = serde_json::from_slice(&bytes).map_err(|_| {
        AuthError::Malformed("header is not a JSON object of JWS parameters (each at most once)")
    })?;
    // Any `crit`, even an empty list (which RFC 7515 §4.1.11 forbids producers to send): no
    // extension is implemented here.
    if header.crit.is_some() {
        return Err(AuthError::UnsupportedHeader("crit"));
    }
    if header.b64.is_some() {
        return Err(AuthError::UnsupportedHeader("b64"));
    }
    if header.zip.is_some() {
        return Err(AuthError::UnsupportedHeader("zip"));
    }
    if header.enc.is_some() {
        return Err(AuthError::UnsupportedHeader("enc"));
    }
    if header.cty.is_some() {
        return Err(AuthError::UnsupportedHeader("cty"));
    }
    match &header.typ {
        None => {}
        Some(serde_json::Value::String(typ))
            if ["JWT", "at+jwt", "application/at+jwt"]
                .iter()
                .any(|t| t.eq_ignore_ascii_case(typ)) => {}
        Some(_) => {
            return Err(AuthError::InvalidHeader(
                "typ must be JWT or at+jwt (RFC 7519 §5.1, RFC 9068 §2.1)",
            ));
        }
    }
    let alg = header
        .alg
        .ok_or(AuthError::InvalidHeader("alg is missing"))?
        .parse::<Algorithm>()
        .map_err(|_| AuthError::Malformed("header is not a JWS header with a supported alg"))?;
    let kid = match header.kid {
        None => return Err(AuthError::MissingKeyId),
        Some(serde_json::Value::String(kid)) => kid,
        Some(_) => return Err(AuthError::InvalidHeader("kid must be a string")),
    };
    crate::base::text::check(&kid, MAX_KID_BYTES)
        .map_err(|_| AuthError::InvalidHeader("kid must be 1 to 256 bytes of visible text"))?;
    Ok(TokenHeader { alg, kid })
}
