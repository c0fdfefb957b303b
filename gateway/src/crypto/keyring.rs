//! The note encryption keyring: AES-256-GCM keys by id, the newest one sealing new notes, the
//! older ones kept so notes sealed before a rotation stay readable.
//!
//! File format: one key per line, `<key id> <base64 of 32 bytes>`, oldest first; blank lines
//! and `#` comments are ignored.

use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

/// The note keys, oldest first: the last one seals, any one opens what it sealed.
pub struct Keyring {
    keys: Vec<(String, LessSafeKey)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

pub use casegate_notes::Sealed;

/// Why a keyring could not be loaded, or data not sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The keyring file cannot be read or is malformed; the message names the file and line.
    #[error("{0}")]
    Format(String),
    /// The sealed data names a key id the keyring does not hold.
    #[error("no key with id {0:?} in the keyring")]
    UnknownKey(String),
    /// Authentication failed: the ciphertext, tag or nonce was altered, or another `aad` was
    /// given than at sealing.
    #[error("sealed data does not open with its key (damaged, or bound to other data)")]
    Open,
    /// No nonce could be drawn from the system's random number generator, or sealing failed.
    #[error("encryption failed")]
    Seal,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Keyring {
    /// Reads the keyring file at `path` (format in the module documentation).
    ///
    /// # Errors
    /// [`KeyringError::Format`] if the file cannot be read or [`Keyring::parse`] refuses it.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyringError::Format(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| KeyringError::Format(format!("{}: {e}", path.display())))
    }

    /// Parses a keyring file's text: one `<key id> <base64 of 32 bytes>` per line, oldest
    /// first; a key id is 1-32 of `A-Z`, `a-z`, `0-9` and `-`, each at most once.
    ///
    /// # Errors
    /// A message naming the first bad line (1-based), or saying the text holds no key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, key) = line
                .split_once(' ')
                .ok_or_else(|| format!("line {}: expected `<key id> <base64 key>`", n + 1))?;
            if !valid_id(id) {
                return Err(format!(
                    "line {}: key id must be 1-32 of A-Z, a-z, 0-9, -",
                    n + 1
                ));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("line {}: key id {id:?} appears twice", n + 1));
            }
            let raw = STANDARD
                .decode(key.trim())
                .map_err(|_| format!("line {}: key is not base64", n + 1))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| format!("line {}: an AES-256 key is 32 bytes", n + 1))?;
            keys.push((id.to_owned(), LessSafeKey::new(unbound)));
        }
        if keys.is_empty() {
            return Err("holds no key".into());
        }
        Ok(Self { keys })
    }

    /// A keyring line for a new random key named `id`, ending in a newline.
    ///
    /// # Errors
    /// A message if `id` is not a valid key id or the random number generator fails.
    pub fn new_line(id: &str) -> Result<String, String> {
        if !valid_id(id) {
            return Err("key id must be 1-32 of A-Z, a-z, 0-9, -".into());
        }
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| "random number generator failed".to_owned())?;
        Ok(format!("{id} {}\n", STANDARD.encode(key)))
    }

    /// The id of the newest key, the one [`Keyring::seal`] uses.
    pub fn current_id(&self) -> &str {
        self.keys.last().map_or("", |(id, _)| id.as_str())
    }

    /// Seals `plaintext` with the newest key and a fresh random nonce, bound to `aad`.
    ///
    /// # Errors
    /// [`KeyringError::Seal`] if no nonce can be drawn or encryption fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, KeyringError> {
        let (id, key) = self.keys.last().ok_or(KeyringError::Seal)?;
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyringError::Seal)?;
        let mut data = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data,
        )
        .map_err(|_| KeyringError::Seal)?;
        Ok(Sealed {
            key_id: id.clone(),
            nonce,
            ciphertext: data,
        })
    }

    /// Opens what [`Keyring::seal`] sealed with the same `aad`, with whichever key sealed it.
    ///
    /// # Errors
    /// [`KeyringError::UnknownKey`] if that key is not in the keyring; [`KeyringError::Open`]
    /// if the data does not authenticate.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or_else(|| KeyringError::UnknownKey(sealed.key_id.clone()))?;
        let mut data = sealed.ciphertext.clone();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(sealed.nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| KeyringError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_with_the_newest_key_and_opens_with_any() {
        let one = Keyring::new_line("k1").expect("line");
        let old = Keyring::parse(&one).expect("keyring");
        let sealed_before = old.seal(b"note", b"aad").expect("seal");
        let both =
            Keyring::parse(&(one + &Keyring::new_line("k2").expect("line"))).expect("keyring");
        assert_eq!(both.current_id(), "k2");
        assert_eq!(both.open(&sealed_before, b"aad").expect("open"), b"note");
        let sealed_after = both.seal(b"note", b"aad").expect("seal");
        assert_eq!(sealed_after.key_id, "k2");
        assert_ne!(
            sealed_after.nonce,
            both.seal(b"note", b"aad").expect("seal").nonce
        );
        assert!(matches!(
            both.open(&sealed_after, b"other"),
            Err(KeyringError::Open)
        ));
        assert!(matches!(
            old.open(&sealed_after, b"aad"),
            Err(KeyringError::UnknownKey(_))
        ));
        assert!(Keyring::parse("k1 c2hvcnQ=").is_err());
        assert!(Keyring::parse("# nothing\n").is_err());
    }
}
