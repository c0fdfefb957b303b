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
//!
//! The store is a bounded `moka` cache (TinyLFU admission, LRU eviction): when full, the least
//! likely to be used again goes, one at a time, and each token leaves by itself once it has
//! expired.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{Expiry, sync::Cache};

use super::Jwks;

/// How a remembered token was verified, and what it says.
#[derive(Debug)]
pub(super) struct Verified<C> {
    pub iss: String,
    /// The issuer's key set that verified the signature.
    pub keys: Arc<Jwks>,
    /// `exp` and `nbf`, in seconds since the Unix epoch.
    pub exp: u64,
    pub nbf: Option<u64>,
    pub claims: Arc<C>,
}

/// A remembered token and how long it is kept (until its `exp` plus the leeway).
struct Remembered<C> {
    verified: Verified<C>,
    lifetime: Duration,
}

/// Remembered tokens, at most `capacity` of them.
pub(super) struct VerifiedTokens<C> {
    entries: Cache<[u8; 32], Arc<Remembered<C>>>,
}

impl<C> std::fmt::Debug for VerifiedTokens<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// Each entry lives until its token's `exp` plus the leeway, as measured when it was inserted.
struct UntilExpiry;

impl<C> Expiry<[u8; 32], Arc<Remembered<C>>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        value: &Arc<Remembered<C>>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// The key a token is remembered by.
pub(super) fn digest(token: &str) -> [u8; 32] {
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

impl<C: Send + Sync + 'static> VerifiedTokens<C> {
    /// A store of at most `capacity` tokens.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity as u64)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    /// The issuer and claims of a remembered token, if it still counts at `now` (seconds since
    /// the Unix epoch); `current_keys` gives an issuer's key set as it is now.
    pub(super) fn get(
        &self,
        digest: &[u8; 32],
        now: u64,
        leeway: u64,
        current_keys: impl Fn(&str) -> Option<Arc<Jwks>>,
    ) -> Option<(String, Arc<C>)> {
        let remembered = self.entries.get(digest)?;
        let entry = &remembered.verified;
        let same_keys = current_keys(&entry.iss).is_some_and(|k| Arc::ptr_eq(&k, &entry.keys));
        if same_keys && in_time(entry.exp, entry.nbf, now, leeway) {
            Some((entry.iss.clone(), entry.claims.clone()))
        } else {
            self.entries.invalidate(digest);
            None
        }
    }

    /// Remembers a token that verified at `now` (seconds since the Unix epoch), until its `exp`
    /// plus `leeway`.
    pub(super) fn insert(&self, digest: [u8; 32], verified: Verified<C>, now: u64, leeway: u64) {
        let until = verified.exp.saturating_add(leeway).saturating_sub(now);
        let lifetime = Duration::from_secs(until.max(1));
        self.entries
            .insert(digest, Arc::new(Remembered { verified, lifetime }));
    }

    #[cfg(test)]
    fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
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
    fn a_full_store_evicts_one_at_a_time_keeping_tokens_in_use() {
        let keys = Arc::new(Jwks::empty());
        let tokens = VerifiedTokens::new(100);
        let current = |_: &str| Some(keys.clone());
        let hot = digest("a client's token, used on every call");
        tokens.insert(hot, verified(&keys, NOW + 600, None), NOW, LEEWAY);
        for i in 0..1_000 {
            assert!(tokens.get(&hot, NOW, LEEWAY, current).is_some(), "call {i}");
            let d = digest(&format!("token {i}"));
            tokens.insert(d, verified(&keys, NOW + 600, None), NOW, LEEWAY);
        }
        let kept = tokens.len();
        assert!(kept <= 100, "{kept} kept, capacity 100");
        assert!(kept > 1, "not cleared: {kept} kept");
        assert!(tokens.get(&hot, NOW, LEEWAY, current).is_some());
    }
}
