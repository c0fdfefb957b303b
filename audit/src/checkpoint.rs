//! Signed checkpoints: a C2SP `tlog-checkpoint` body (origin, tree size, base64 root hash)
//! wrapped in a C2SP `signed-note` with an Ed25519 signature, so standard transparency-log
//! tooling can read and verify them.
//!
//! Key formats (C2SP signed-note): the key id is the first four bytes of
//! `SHA-256(name || "\n" || 0x01 || public key)`; a verifier key is
//! `<name>+<hex key id>+<base64(0x01 || public key)>`; a signer key is
//! `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};

use crate::merkle::Hash;

const ED25519_ALG: u8 = 0x01;
/// The signature line prefix: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("key name must be non-empty and contain no '+' or whitespace")]
    KeyName,
    #[error("malformed key: {0}")]
    KeyFormat(&'static str),
    #[error("random number generator failed")]
    Random,
    #[error("malformed signed note: {0}")]
    NoteFormat(&'static str),
    #[error("malformed checkpoint body: {0}")]
    BodyFormat(&'static str),
    #[error("checkpoint is not signed by key {0}")]
    NotSigned(String),
    #[error("checkpoint signature by key {0} does not verify")]
    BadSignature(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

fn key_id(name: &str, public: &[u8]) -> [u8; 4] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ED25519_ALG]);
    ctx.update(public);
    let digest = ctx.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest.as_ref()[..4]);
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex4(s: &str) -> Option<[u8; 4]> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 4];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// An Ed25519 note signer.
pub struct Signer {
    name: String,
    seed: [u8; 32],
    pair: Ed25519KeyPair,
    id: [u8; 4],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &hex(&self.id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| CheckpointError::Random)?;
        Self::from_seed(name, seed)
    }

    fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::KeyName);
        }
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| CheckpointError::KeyFormat("not an Ed25519 seed"))?;
        let id = key_id(name, pair.public_key().as_ref());
        Ok(Self {
            name: name.to_owned(),
            seed,
            pair,
            id,
        })
    }

    /// Parses a signer key (`PRIVATE+KEY+name+id+key`).
    pub fn from_skey(text: &str) -> Result<Self, CheckpointError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(CheckpointError::KeyFormat(
                "signer key must start with PRIVATE+KEY+",
            ))?;
        // The base64 key may itself contain '+': split off only name and id.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::KeyFormat(
                "expected PRIVATE+KEY+name+id+key",
            ));
        };
        let raw = STANDARD
            .decode(key)
            .map_err(|_| CheckpointError::KeyFormat("key is not base64"))?;
        let [alg, seed @ ..] = raw.as_slice() else {
            return Err(CheckpointError::KeyFormat("key is empty"));
        };
        if *alg != ED25519_ALG {
            return Err(CheckpointError::KeyFormat("not an Ed25519 key"));
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| CheckpointError::KeyFormat("Ed25519 seed must be 32 bytes"))?;
        let signer = Self::from_seed(name, seed)?;
        if parse_hex4(id) != Some(signer.id) {
            return Err(CheckpointError::KeyFormat("key id does not match the key"));
        }
        Ok(signer)
    }

    /// The signer key text. Secret: store it readable by the gateway only.
    pub fn to_skey(&self) -> String {
        let mut raw = vec![ED25519_ALG];
        raw.extend_from_slice(&self.seed);
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex(&self.id),
            STANDARD.encode(raw)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> Verifier {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        Verifier {
            name: self.name.clone(),
            id: self.id,
            public,
        }
    }

    /// Signs a checkpoint, producing the complete signed note.
    pub fn sign(&self, checkpoint: &Checkpoint) -> SignedCheckpoint {
        Self::cosign(&[self], checkpoint)
    }

    /// The signature line of this key over `body`.
    fn signature_line(&self, body: &str) -> String {
        let sig = self.pair.sign(body.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(sig.as_ref());
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }

    /// One note signed by several keys (a key rotation's bridge: verifiable with either).
    pub fn cosign(signers: &[&Signer], checkpoint: &Checkpoint) -> SignedCheckpoint {
        let body = checkpoint.body();
        let mut note = format!("{body}\n");
        for signer in signers {
            note.push_str(&signer.signature_line(&body));
        }
        SignedCheckpoint {
            checkpoint: checkpoint.clone(),
            note,
        }
    }
}

/// An Ed25519 note verifier (public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    public: [u8; 32],
}

impl Verifier {
    /// Parses a verifier key (`name+id+key`).
    pub fn from_vkey(text: &str) -> Result<Self, CheckpointError> {
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id_text), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CheckpointError::KeyFormat("expected name+id+key"));
        };
        if !valid_name(name) {
            return Err(CheckpointError::KeyName);
        }
        let raw = STANDARD
            .decode(key)
            .map_err(|_| CheckpointError::KeyFormat("key is not base64"))?;
        let [alg, public @ ..] = raw.as_slice() else {
            return Err(CheckpointError::KeyFormat("key is empty"));
        };
        if *alg != ED25519_ALG {
            return Err(CheckpointError::KeyFormat("not an Ed25519 key"));
        }
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| CheckpointError::KeyFormat("Ed25519 public key must be 32 bytes"))?;
        let id = key_id(name, &public);
        if parse_hex4(id_text) != Some(id) {
            return Err(CheckpointError::KeyFormat("key id does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            public,
        })
    }

    /// The verifier key text.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![ED25519_ALG];
        raw.extend_from_slice(&self.public);
        format!("{}+{}+{}", self.name, hex(&self.id), STANDARD.encode(raw))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name+id`, how messages name the key.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, hex(&self.id))
    }

    /// Verifies a signed checkpoint note and returns its body. Signatures by other keys are
    /// ignored; one valid signature by this key is required.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let split = note.find("\n\n").ok_or(CheckpointError::NoteFormat(
            "no blank line before the signatures",
        ))?;
        let (body, sigs) = (&note[..=split], &note[split + 2..]);
        if !sigs.ends_with('\n') {
            return Err(CheckpointError::NoteFormat(
                "signature block must end with a newline",
            ));
        }
        let mut found = false;
        for line in sigs.lines() {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or(CheckpointError::NoteFormat(
                    "signature line must start with an em dash",
                ))?;
            let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::NoteFormat(
                "signature line needs a name and a signature",
            ))?;
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| CheckpointError::NoteFormat("signature is not base64"))?;
            if name != self.name || blob.len() < 4 || blob[..4] != self.id {
                continue;
            }
            found = true;
            UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(body.as_bytes(), &blob[4..])
                .map_err(|_| CheckpointError::BadSignature(self.label()))?;
        }
        if !found {
            return Err(CheckpointError::NotSigned(self.label()));
        }
        Checkpoint::parse_body(body)
    }
}

/// A tlog checkpoint: the log's origin, its size and its root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body text, each line ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let mut lines = body.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::BodyFormat("missing origin"))?;
        let size_text = lines
            .next()
            .ok_or(CheckpointError::BodyFormat("missing tree size"))?;
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(CheckpointError::BodyFormat(
                "tree size is not a decimal number",
            ));
        }
        let size = size_text
            .parse()
            .map_err(|_| CheckpointError::BodyFormat("tree size is out of range"))?;
        let root = STANDARD
            .decode(
                lines
                    .next()
                    .ok_or(CheckpointError::BodyFormat("missing root hash"))?,
            )
            .ok()
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or(CheckpointError::BodyFormat(
                "root hash is not 32 bytes of base64",
            ))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// A checkpoint together with its complete signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed note text, exactly as signed.
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(size: u64) -> Checkpoint {
        Checkpoint {
            origin: "casegate.test/audit".into(),
            size,
            root: crate::merkle::leaf_hash(&size.to_be_bytes()),
        }
    }

    #[test]
    fn signs_and_verifies_in_the_c2sp_format() {
        let signer = Signer::generate("casegate.test/audit").expect("key");
        let signed = signer.sign(&checkpoint(42));
        let lines: Vec<&str> = signed.note.lines().collect();
        assert_eq!(lines[0], "casegate.test/audit");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} casegate.test/audit "));
        let verifier = Verifier::from_vkey(&signer.verifier().to_vkey()).expect("vkey");
        assert_eq!(verifier.verify(&signed.note), Ok(checkpoint(42)));
        let again = Signer::from_skey(&signer.to_skey()).expect("skey");
        assert_eq!(again.verifier(), signer.verifier());
    }

    /// The key id must follow the C2SP derivation, checked here against an independent
    /// computation over the published formula.
    #[test]
    fn key_id_is_the_c2sp_hash() {
        let signer = Signer::generate("example.com/log").expect("key");
        let vkey = signer.verifier().to_vkey();
        let parts: Vec<&str> = vkey.splitn(3, '+').collect();
        let raw = STANDARD.decode(parts[2]).expect("b64");
        assert_eq!(raw[0], 1);
        let mut input = b"example.com/log\n".to_vec();
        input.extend_from_slice(&raw);
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        assert_eq!(parts[1], hex(&digest.as_ref()[..4]));
    }

    #[test]
    fn a_cosigned_note_verifies_with_either_key() {
        let old = Signer::generate("casegate.test/audit").expect("key");
        let new = Signer::generate("casegate.test/audit").expect("key");
        let note = Signer::cosign(&[&old, &new], &checkpoint(9)).note;
        assert_eq!(old.verifier().verify(&note), Ok(checkpoint(9)));
        assert_eq!(new.verifier().verify(&note), Ok(checkpoint(9)));
        let stranger = Signer::generate("casegate.test/audit").expect("key");
        assert!(stranger.verifier().verify(&note).is_err());
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let signer = Signer::generate("casegate.test/audit").expect("key");
        let other = Signer::generate("casegate.test/audit").expect("key");
        let verifier = signer.verifier();
        let note = signer.sign(&checkpoint(7)).note;

        let bigger = note.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            verifier.verify(&bigger),
            Err(CheckpointError::BadSignature(_))
        ));
        let foreign = other.sign(&checkpoint(7)).note;
        assert!(matches!(
            verifier.verify(&foreign),
            Err(CheckpointError::NotSigned(_))
        ));
        // A second signature by another key does not hurt; it is ignored.
        let cosigned = format!("{note}{}", foreign.lines().last().expect("sig")) + "\n";
        assert_eq!(verifier.verify(&cosigned), Ok(checkpoint(7)));
        assert!(verifier.verify("casegate.test/audit\n7\n").is_err());
        assert!(Verifier::from_vkey("name+00000000+AQ==").is_err());
        let vkey = verifier.to_vkey();
        let key = vkey.splitn(3, '+').nth(2).expect("key");
        let wrong_id = format!("{}+00000000+{key}", verifier.name());
        assert!(Verifier::from_vkey(&wrong_id).is_err());
        assert!(Signer::generate("has space").is_err());
    }
}
