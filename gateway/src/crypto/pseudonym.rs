//! Keyed pseudonyms for jobseekers: outside the consent store a subject appears only as
//! HMAC-SHA-256(gateway secret, identity number), so the audit log can be searched by subject
//! without holding identity numbers.

use base64::{Engine, engine::general_purpose::STANDARD};
use casegate_consent::SubjectId;
use ring::hmac;

/// Maps identity numbers to pseudonyms.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: hmac::Key,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(<secret>)")
    }
}

/// Shortest secret accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

impl Pseudonymizer {
    /// From the key file's text: base64 of at least 32 random bytes.
    ///
    /// # Errors
    /// A message if the text is not base64 or the key is shorter than [`MIN_KEY_BYTES`].
    pub fn from_text(text: &str) -> Result<Self, String> {
        let secret = STANDARD
            .decode(text.trim())
            .map_err(|_| "pseudonym key is not base64".to_owned())?;
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "pseudonym key must be at least {MIN_KEY_BYTES} bytes"
            ));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// A new random key file text: base64 of [`MIN_KEY_BYTES`] bytes and a newline.
    ///
    /// # Errors
    /// A message if the system's random number generator fails.
    pub fn generate_text() -> Result<String, String> {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut secret = [0u8; MIN_KEY_BYTES];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| "random number generator failed".to_owned())?;
        Ok(format!("{}\n", STANDARD.encode(secret)))
    }

    /// The subject's pseudonym: HMAC-SHA-256 of its 11 identity-number digits (ASCII) under
    /// the gateway's secret.
    pub fn pseudonym(&self, subject: &SubjectId) -> [u8; 32] {
        let tag = hmac::sign(&self.key, subject.expose().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_across_keys() {
        let a =
            Pseudonymizer::from_text(&Pseudonymizer::generate_text().expect("key")).expect("key");
        let b =
            Pseudonymizer::from_text(&Pseudonymizer::generate_text().expect("key")).expect("key");
        let mut ids = SubjectId::synthetic_all();
        let (s1, s2) = (ids.next().expect("one"), ids.next().expect("two"));
        assert_eq!(a.pseudonym(&s1), a.pseudonym(&s1));
        assert_ne!(a.pseudonym(&s1), a.pseudonym(&s2));
        assert_ne!(a.pseudonym(&s1), b.pseudonym(&s1));
        assert!(Pseudonymizer::from_text("c2hvcnQ=").is_err());
    }
}
