//! A token issuer's public keys (JSON Web Key Set), indexed by key id.

use std::{collections::HashMap, path::Path};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use casegate_audit::ed25519;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};

/// The smallest RSA modulus accepted, in bits (NIST SP 800-131A Rev. 2, RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;

/// One verification key and what it may verify.
pub(crate) struct VerificationKey {
    pub key: DecodingKey,
    /// The JWK's `alg`, when it names one: tokens must then use exactly that algorithm.
    pub algorithm: Option<Algorithm>,
    /// For an Ed25519 key (RFC 8037 §2), the checked point: EdDSA signatures are verified
    /// strictly against it (see [`casegate_audit::ed25519`]).
    pub ed25519: Option<ed25519::PublicKey>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("family", &self.key.family())
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// The usable signing keys of one issuer, by `kid`.
pub(crate) struct Jwks {
    keys: HashMap<String, VerificationKey>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Jwks").field("kids", &kids).finish()
    }
}

impl Jwks {
    /// Reads a JWKS file. Every key needs a `kid`; keys meant for encryption and symmetric keys
    /// are refused, because a symmetric key would let anyone holding it mint tokens; so are
    /// weak keys: Ed25519 points of small order or in a non-canonical encoding, and RSA moduli
    /// under 2048 bits. One bad key refuses the whole set, naming it.
    pub(crate) fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn from_json(text: &str) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| format!("key {i} has no \"kid\""))?;
            let key = verification_key(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
            if keys.insert(kid.clone(), key).is_some() {
                return Err(format!("key id {kid:?} appears twice"));
            }
        }
        if keys.is_empty() {
            return Err("holds no keys".to_owned());
        }
        Ok(Self { keys })
    }

    /// A set with no keys (an HTTPS set not fetched yet).
    pub(crate) fn empty() -> Self {
        Self {
            keys: HashMap::new(),
        }
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.get(kid)
    }
}

fn verification_key(jwk: &Jwk) -> Result<VerificationKey, String> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err("\"use\" is not \"sig\"".to_owned());
    }
    let algorithm = match &jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(
            a.to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("\"alg\" {a} is not a signature algorithm"))?,
        ),
    };
    let ed25519 = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(okp) => {
            // Only Ed25519 (RFC 8037 §2); any other label would still be loaded as an Ed25519
            // key by the token library, past the checks below.
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(format!(
                    "refused: an OKP key must be on curve Ed25519, not {:?}",
                    okp.curve
                ));
            }
            let x = URL_SAFE_NO_PAD
                .decode(&okp.x)
                .map_err(|_| "\"x\" is not unpadded base64url".to_owned())?;
            Some(ed25519::PublicKey::from_bytes(&x).map_err(|e| format!("refused: {e}"))?)
        }
        AlgorithmParameters::RSA(rsa) => {
            check_rsa(&rsa.n, &rsa.e)?;
            None
        }
        _ => None,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
        return Err("symmetric keys are not accepted".to_owned());
    }
    if let Some(alg) = algorithm
        && alg.family() != key.family()
    {
        return Err(format!("\"alg\" {alg:?} does not fit the key type"));
    }
    Ok(VerificationKey {
        key,
        algorithm,
        ed25519,
    })
}

/// Refuses an RSA public key (RFC 7518 §6.3.1, base64url `n` and `e`) whose modulus is under
/// [`MIN_RSA_BITS`] or whose exponent is not an odd number of at least 3.
fn check_rsa(n: &str, e: &str) -> Result<(), String> {
    let decode = |name: &str, value: &str| {
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("\"{name}\" is not unpadded base64url"))
    };
    let bits = |bytes: &[u8]| {
        bytes.iter().position(|&b| b != 0).map_or(0, |first| {
            (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize
        })
    };
    let n = decode("n", n)?;
    if bits(&n) < MIN_RSA_BITS {
        return Err(format!(
            "refused: RSA modulus of {} bits (at least {MIN_RSA_BITS} required)",
            bits(&n)
        ));
    }
    let e = decode("e", e)?;
    let odd = e.last().is_some_and(|last| last & 1 == 1);
    if !odd || bits(&e) < 2 {
        return Err("refused: RSA exponent must be an odd number of at least 3".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A JWKS holding a good key from a dev issuer and `extra`.
    fn set_with(extra: serde_json::Value) -> String {
        let issuer = crate::tools::dev::TokenIssuer::generate("iss", "aud").expect("issuer");
        json!({ "keys": [issuer.jwk(), extra] }).to_string()
    }

    fn okp(kid: &str, x: &[u8]) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
               "x": URL_SAFE_NO_PAD.encode(x)})
    }

    #[test]
    fn weak_keys_refuse_the_whole_set_and_say_which_and_why() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // p + 1 = 2^255 - 18: the identity again, non-canonically encoded.
        let mut non_canonical_identity = [0xffu8; 32];
        non_canonical_identity[0] = 0xee;
        non_canonical_identity[31] = 0x7f;
        let small_rsa = json!({"kty": "RSA", "kid": "rsa1024", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode([0xc1u8; 128]), "e": "AQAB"});
        let cases = [
            (
                okp("weak", &identity),
                "key \"weak\": refused: small-order Ed25519 point",
            ),
            (
                okp("zero", &[0u8; 32]),
                "key \"zero\": refused: small-order Ed25519 point",
            ),
            (
                okp("nc", &non_canonical_identity),
                "key \"nc\": refused: non-canonical Ed25519 point",
            ),
            (
                okp("short", &[9u8; 31]),
                "key \"short\": refused: an Ed25519 public key is 32 bytes",
            ),
            (
                small_rsa,
                "key \"rsa1024\": refused: RSA modulus of 1024 bits",
            ),
        ];
        for (key, expected) in cases {
            let error = Jwks::from_json(&set_with(key)).expect_err(expected);
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn the_issuer_key_issued_as_the_spec_example_is_accepted() {
        // RFC 8037 appendix A.2: a real Ed25519 public key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("base64url");
        let keys = Jwks::from_json(&set_with(okp("rfc8037", &x))).expect("accepted");
        assert!(keys.get("rfc8037").and_then(|k| k.ed25519).is_some());
    }
}
