//! Access tokens already verified. A client sends the same token on every call until it
//! expires, and checking its signature (Ed25519, ECDSA or RSA) costs more than everything else
//! about authenticating a call; so a token that verified is remembered, by its SHA-256, with
//! what its signature vouched for.
//!
//! A remembered token counts only while it has not expired (with the configured leeway, as
//! on first verification) and while its issuer still has the very key set it was verified
//! against: a refreshed key set (a rotated or withdrawn key) verifies it again. Everything that
//! depends on the connection — the certificate's organisation, the certificate binding — is
//! checked on every call by the caller of [`VerifiedTokens::get`]. Failures are not remembered.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::Jwks;

/// How a remembered token was verified, and what it says.
#[derive(Debug)]
pub struct Verified<C> {
    pub iss: String,
    /// The issuer's key set that verified the signature.
    pub keys: Arc<Jwks>,
    /// `exp` and `nbf`, in seconds since the Unix epoch.
    pub exp: u64,
    pub nbf: Option<u64>,
    pub claims: Arc<C>,
}

/// Remembered tokens, at most `capacity` of them.
#[derive(Debug)]
pub struct VerifiedTokens<C> {
    entries: Mutex<HashMap<[u8; 32], Verified<C>>>,
    capacity: usize,
}

/// The key a token is remembered by.
pub fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// Whether a token with these times is acceptable at `now` (the rules of the first
/// verification: expired once `exp` is more than `leeway` in the past, not yet valid while
/// `nbf` is more than `leeway` ahead).
fn in_time(exp: u64, nbf: Option<u64>, now: u64, leeway: u64) -> bool {
    exp >= now.saturating_sub(leeway) && nbf.is_none_or(|nbf| nbf <= now.saturating_add(leeway))
}

impl<C> VerifiedTokens<C> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The issuer and claims of a remembered token, if it still counts at `now`;
    /// `current_keys` gives an issuer's key set as it is now.
    pub fn get(
        &self,
        digest: &[u8; 32],
        now: u64,
        leeway: u64,
        current_keys: impl Fn(&str) -> Option<Arc<Jwks>>,
    ) -> Option<(String, Arc<C>)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(digest)?;
        let same_keys = current_keys(&entry.iss).is_some_and(|k| Arc::ptr_eq(&k, &entry.keys));
        if same_keys && in_time(entry.exp, entry.nbf, now, leeway) {
            Some((entry.iss.clone(), entry.claims.clone()))
        } else {
            entries.remove(digest);
            None
        }
    }

    /// Remembers a token that verified. When full, expired tokens are forgotten first, and
    /// everything if that is not enough.
    pub fn insert(&self, digest: [u8; 32], verified: Verified<C>, now: u64, leeway: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, v| in_time(v.exp, v.nbf, now, leeway));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, verified);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const LEEWAY: u64 = 30;

    fn verified(keys: &Arc<Jwks>, exp: u64, nbf: Option<u64>) -> Verified<&'static str> {
        Verified {
            iss: "https://issuer.test".into(),
            keys: keys.clone(),
            exp,
            nbf,
            claims: Arc::new("claims"),
        }
    }

    #[test]
    fn a_remembered_token_counts_until_it_expires_with_the_leeway() {
        let keys = Arc::new(Jwks::empty());
        let tokens = VerifiedTokens::new(16);
        let d = digest("token");
        tokens.insert(d, verified(&keys, NOW + 60, Some(NOW)), NOW, LEEWAY);
        let current = |_: &str| Some(keys.clone());
        assert_eq!(
            tokens.get(&d, NOW + 60 + LEEWAY, LEEWAY, current),
            Some(("https://issuer.test".to_owned(), Arc::new("claims")))
        );
        assert_eq!(tokens.get(&d, NOW + 61 + LEEWAY, LEEWAY, current), None);
        // Forgotten once it no longer counts.
        assert!(tokens.is_empty());
    }

    #[test]
    fn a_token_not_yet_valid_does_not_count() {
        let keys = Arc::new(Jwks::empty());
        let tokens = VerifiedTokens::new(16);
        let d = digest("token");
        tokens.insert(d, verified(&keys, NOW + 600, Some(NOW + 100)), NOW, LEEWAY);
        assert_eq!(tokens.get(&d, NOW, LEEWAY, |_| Some(keys.clone())), None);
    }

    #[test]
    fn a_refreshed_key_set_or_a_removed_issuer_verifies_again() {
        let keys = Arc::new(Jwks::empty());
        let tokens = VerifiedTokens::new(16);
        let d = digest("token");
        tokens.insert(d, verified(&keys, NOW + 600, None), NOW, LEEWAY);
        let refreshed = Arc::new(Jwks::empty());
        assert_eq!(
            tokens.get(&d, NOW, LEEWAY, |_| Some(refreshed.clone())),
            None
        );
        tokens.insert(d, verified(&keys, NOW + 600, None), NOW, LEEWAY);
        assert_eq!(tokens.get(&d, NOW, LEEWAY, |_| None), None);
    }

    #[test]
    fn only_the_same_token_is_recognised() {
        let keys = Arc::new(Jwks::empty());
        let tokens = VerifiedTokens::new(16);
        tokens.insert(
            digest("token"),
            verified(&keys, NOW + 600, None),
            NOW,
            LEEWAY,
        );
        assert_eq!(
            tokens.get(&digest("token2"), NOW, LEEWAY, |_| Some(keys.clone())),
            None
        );
    }

    #[test]
    fn a_full_store_forgets_expired_tokens_first_then_everything() {
        let keys = Arc::new(Jwks::empty());
        let tokens = VerifiedTokens::new(3);
        tokens.insert(digest("a"), verified(&keys, NOW - 100, None), NOW, LEEWAY);
        tokens.insert(digest("b"), verified(&keys, NOW + 600, None), NOW, LEEWAY);
        tokens.insert(digest("c"), verified(&keys, NOW + 600, None), NOW, LEEWAY);
        tokens.insert(digest("d"), verified(&keys, NOW + 600, None), NOW, LEEWAY);
        assert_eq!(tokens.len(), 3);
        let current = |_: &str| Some(keys.clone());
        assert!(tokens.get(&digest("b"), NOW, LEEWAY, current).is_some());
        tokens.insert(digest("e"), verified(&keys, NOW + 600, None), NOW, LEEWAY);
        assert_eq!(tokens.len(), 1);
        assert!(tokens.get(&digest("e"), NOW, LEEWAY, current).is_some());
    }
}
