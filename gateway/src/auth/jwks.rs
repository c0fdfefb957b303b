//! A token issuer's public keys (JSON Web Key Set), indexed by key id.

use std::{collections::HashMap, path::Path};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{Jwk, JwkSet, PublicKeyUse},
};

/// One verification key and what it may verify.
pub struct VerificationKey {
    pub key: DecodingKey,
    /// The JWK's `alg`, when it names one: tokens must then use exactly that algorithm.
    pub algorithm: Option<Algorithm>,
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
pub struct Jwks {
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
    /// are refused, because a symmetric key would let anyone holding it mint tokens.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
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
    pub fn empty() -> Self {
        Self {
            keys: HashMap::new(),
        }
    }

    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
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
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
        return Err("symmetric keys are not accepted".to_owned());
    }
    if let Some(alg) = algorithm
        && alg.family() != key.family()
    {
        return Err(format!("\"alg\" {alg:?} does not fit the key type"));
    }
    Ok(VerificationKey { key, algorithm })
}
