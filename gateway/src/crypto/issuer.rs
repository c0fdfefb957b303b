//! A token issuer: an Ed25519 key, its JWKS, and signed access tokens (RFC 7519, EdDSA per
//! RFC 8037) in the shape the gateway expects. The web tier mints its per-call tokens with it;
//! `casegate dev` and the tests use it for their synthetic organisations. Other production
//! tokens come from the organisations' own identity providers.

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{Ed25519KeyPair, KeyPair},
};
use serde_json::{Value, json};

/// DER prefix of a PKCS#8 v1 (RFC 8410) Ed25519 private key; the 32-byte seed follows.
/// (ring's own PKCS#8 output is v2, which the token library's Ed25519 backend refuses.)
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Signs access tokens with one Ed25519 key.
pub struct TokenIssuer {
    /// The `iss` of its tokens; the gateway picks the `[[auth.issuers]]` entry by it.
    pub iss: String,
    /// The `aud` of its tokens.
    pub audience: String,
    seed: [u8; 32],
    public: [u8; 32],
    kid: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("iss", &self.iss)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be made or read, or a token signed.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The system's random number generator failed while generating a key.
    #[error("random number generator failed")]
    Random,
    /// The PEM's base64 does not decode, or is not exactly a PKCS#8 v1 (RFC 8410) Ed25519
    /// private key.
    #[error("not a PKCS#8 v1 Ed25519 private key in PEM")]
    KeyFormat,
    /// The JWT library refused to sign (it could not use the key or serialise the claims).
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// What a token says about its holder.
#[derive(Debug, Clone, Default)]
pub struct TokenClaims {
    /// The holder's identifier (`sub`), unique within the issuer.
    pub sub: String,
    /// The holder's organisation number (`org`, nine digits); the gateway requires it to be
    /// the client certificate's organisation.
    pub org: String,
    /// The holder's role (`role`), as `Role` names it (for example `clinician`).
    pub role: String,
    /// The jobseeker's identity number or D-number (`pid`, 11 digits), for a jobseeker's
    /// token.
    pub pid: Option<String>,
    /// SHA-256 of the client certificate (DER) to bind the token to (RFC 8705).
    pub bind_cert_sha256: Option<[u8; 32]>,
    /// How long the token is valid: `exp` is `iat` plus this, in whole seconds.
    pub ttl: std::time::Duration,
    /// The identity provider that logged the person in upstream (claim `idp`), when the
    /// token is minted by a backend-for-frontend such as the web tier.
    pub idp: Option<String>,
    /// The assurance level of that login (OpenID Connect Core §2 `acr`).
    pub acr: Option<String>,
}

impl TokenIssuer {
    /// An issuer with a new random Ed25519 key.
    ///
    /// # Errors
    /// `IssuerError::Random` if the system's random number generator fails.
    pub fn generate(iss: &str, audience: &str) -> Result<Self, IssuerError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| IssuerError::Random)?;
        Ok(Self::from_seed(iss, audience, seed))
    }

    fn from_seed(iss: &str, audience: &str, seed: [u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes are a seed");
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        let x = URL_SAFE_NO_PAD.encode(public);
        // RFC 7638 JWK thumbprint: members in lexicographic order, no whitespace.
        let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            thumbprint.as_bytes(),
        ));
        Self {
            iss: iss.to_owned(),
            audience: audience.to_owned(),
            seed,
            public,
            kid,
        }
    }

    /// Reads a key written by [`TokenIssuer::private_key_pem`].
    ///
    /// # Errors
    /// `IssuerError::KeyFormat` if `pem` is not a PKCS#8 v1 Ed25519 private key.
    pub fn from_pem(iss: &str, audience: &str, pem: &str) -> Result<Self, IssuerError> {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = STANDARD.decode(body).map_err(|_| IssuerError::KeyFormat)?;
        let seed = der
            .strip_prefix(&PKCS8_V1_PREFIX[..])
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or(IssuerError::KeyFormat)?;
        Ok(Self::from_seed(iss, audience, seed))
    }

    fn pkcs8_der(&self) -> Vec<u8> {
        [&PKCS8_V1_PREFIX[..], &self.seed[..]].concat()
    }

    /// The private key as PKCS#8 v1 PEM.
    pub fn private_key_pem(&self) -> String {
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(self.pkcs8_der())
        )
    }

    /// The key's id: its RFC 7638 JWK thumbprint (SHA-256, base64url without padding).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// A JWKS holding this issuer's public key.
    pub fn jwks_json(&self) -> String {
        let set = json!({ "keys": [self.jwk()] });
        serde_json::to_string_pretty(&set).unwrap_or_default()
    }

    /// The standard claims for `claims`, valid from now for `claims.ttl`.
    pub fn claims(&self, claims: &TokenClaims) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ttl = i64::try_from(claims.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let mut body = json!({
            "iss": self.iss,
            "aud": self.audience,
            "sub": claims.sub,
            "org": claims.org,
            "role": claims.role,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl),
            "jti": uuid::Uuid::now_v7().to_string(),
        });
        if let Some(pid) = &claims.pid {
            body["pid"] = json!(pid);
        }
        if let Some(idp) = &claims.idp {
            body["idp"] = json!(idp);
        }
        if let Some(acr) = &claims.acr {
            body["acr"] = json!(acr);
        }
        if let Some(hash) = claims.bind_cert_sha256 {
            body["cnf"] = json!({ "x5t#S256": URL_SAFE_NO_PAD.encode(hash) });
        }
        body
    }

    /// Signs arbitrary claims (tests use this for tokens that must be refused).
    ///
    /// # Errors
    /// `IssuerError::Sign` if the claims cannot be signed.
    pub fn sign_value(&self, claims: &Value) -> Result<String, IssuerError> {
        self.sign_with_kid(&self.kid, claims)
    }

    /// Signs with this key but names `kid` in the header (tests: unknown or foreign key ids).
    pub fn sign_with_kid(&self, kid: &str, claims: &Value) -> Result<String, IssuerError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_ed_der(&self.pkcs8_der());
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }

    /// Signs `claims` under an arbitrary protected header, its JSON text taken as it is
    /// (tests: headers the gateway must refuse, such as `crit`, `b64` or a repeated `alg`).
    pub fn sign_with_header(&self, header_json: &str, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&self.seed).expect("any 32 bytes are a seed");
        let signature = pair.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// The protected header [`TokenIssuer::sign`] uses, to start a variation from.
    pub fn header(&self) -> Value {
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid })
    }

    /// A signed access token: a compact JWS (EdDSA, RFC 8037) over [`TokenIssuer::claims`].
    ///
    /// # Errors
    /// `IssuerError::Sign` if the claims cannot be signed.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, IssuerError> {
        self.sign_value(&self.claims(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::auth::Jwks;

    #[test]
    fn key_round_trips_through_pem_and_verifies() {
        let issuer = TokenIssuer::generate("iss", "aud").expect("issuer");
        let again = TokenIssuer::from_pem("iss", "aud", &issuer.private_key_pem()).expect("pem");
        assert_eq!(again.kid(), issuer.kid());
        let jwks = Jwks::from_json(&issuer.jwks_json()).expect("jwks");
        let key = jwks.get(issuer.kid()).expect("kid present");
        let token = again
            .sign(&TokenClaims {
                sub: "u".into(),
                org: "910000012".into(),
                role: "clinician".into(),
                ttl: std::time::Duration::from_secs(60),
                ..TokenClaims::default()
            })
            .expect("sign");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["aud"]);
        jsonwebtoken::decode::<Value>(&token, &key.key, &validation).expect("verifies");
    }
}
