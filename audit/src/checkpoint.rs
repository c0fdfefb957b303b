//! Signed checkpoints: a C2SP `tlog-checkpoint` body (origin, tree size, base64 root hash)
//! wrapped in a C2SP `signed-note` with an Ed25519 signature, so standard transparency-log
//! tooling can read and verify them.
//!
//! Key formats (C2SP signed-note): the key id is the first four bytes of
//! `SHA-256(name || "\n" || 0x01 || public key)`; a verifier key is
//! `<name>+<hex key id>+<base64(0x01 || public key)>`; a signer key is
//! `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.
//!
//! Notes are opened as C2SP signed-note says and as Go's `golang.org/x/mod/sumdb/note.Open`
//! does: UTF-8 with no control character but newline, the text separated from the signature
//! block by the last blank line, at most [`MAX_SIGNATURES`] signature lines, no key signing
//! twice, and every signature by a known key verified (one that fails rejects the note).
//! Verifier keys are refused when they are small-order or non-canonical points, and
//! signatures are verified strictly ([`crate::ed25519`]).

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{Ed25519KeyPair, KeyPair},
};

use crate::{
    ed25519::{KeyError, PublicKey},
    merkle::Hash,
};

const ED25519_ALG: u8 = 0x01;
/// The signature line prefix: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// The most signature lines a note may carry. C2SP signed-note asks verifiers for a bound of
/// at least 16; Go's `note.Open` allows 100.
pub const MAX_SIGNATURES: usize = 100;

/// Why a key or a signed checkpoint note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// A key name that is empty or holds `+`, whitespace or a control character.
    #[error("key name must be non-empty and contain no '+', whitespace or control characters")]
    KeyName,
    /// Signer or verifier key text that does not parse, or whose key id does not match the
    /// key; says what.
    #[error("malformed key: {0}")]
    KeyFormat(&'static str),
    /// A public key that is not a canonical point of large order.
    #[error("unusable Ed25519 public key: {0}")]
    PublicKey(KeyError),
    /// The system's random number generator failed while generating a key.
    #[error("random number generator failed")]
    Random,
    /// A note that breaks the C2SP signed-note grammar; says how.
    #[error("malformed signed note: {0}")]
    NoteFormat(&'static str),
    /// A note text that is not a C2SP tlog-checkpoint body; says how.
    #[error("malformed checkpoint body: {0}")]
    BodyFormat(&'static str),
    /// No known key signed the note; holds the known keys' labels (`name+id`).
    #[error("checkpoint is not signed by key {0}")]
    NotSigned(String),
    /// A known key's signature fails strict verification; holds the key's label.
    #[error("checkpoint signature by key {0} does not verify")]
    BadSignature(String),
    /// Two signature lines by one key (same name and id); holds its label.
    #[error("the note has two signatures by key {0}")]
    DuplicateSignature(String),
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("the note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// The checkpoint's origin is not the name of the key that verified it.
    #[error("checkpoint origin {origin:?} is not the name of key {key}, which signed it")]
    OriginMismatch {
        /// The checkpoint's origin line.
        origin: String,
        /// The verifying key's label (`name+id`).
        key: String,
    },
}

/// C2SP signed-note: non-empty, no Unicode spaces, no `+`; and no control characters, which
/// no note may hold (so a key named with one could never verify anything).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('+')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
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
    verifier: Verifier,
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
        let public = PublicKey::from_bytes(pair.public_key().as_ref())
            .map_err(CheckpointError::PublicKey)?;
        let id = key_id(name, public.as_bytes());
        Ok(Self {
            name: name.to_owned(),
            seed,
            pair,
            id,
            verifier: Verifier {
                name: name.to_owned(),
                id,
                public,
            },
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

    /// The key name, as the signer key text and signature lines carry it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier of this key's public half.
    pub fn verifier(&self) -> Verifier {
        self.verifier.clone()
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

/// An Ed25519 note verifier: a key name and a public key that is a canonical point of large
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    public: PublicKey,
}

impl Verifier {
    /// Parses a verifier key (`name+id+key`, C2SP signed-note).
    ///
    /// # Errors
    /// [`CheckpointError::KeyName`] or [`CheckpointError::KeyFormat`] for a malformed key or
    /// one whose id does not match it; [`CheckpointError::PublicKey`] for a small-order or
    /// non-canonical point (signatures under a small-order key can be forged).
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
        if public.len() != crate::ed25519::PUBLIC_KEY_LENGTH {
            return Err(CheckpointError::KeyFormat(
                "Ed25519 public key must be 32 bytes",
            ));
        }
        let public = PublicKey::from_bytes(public).map_err(CheckpointError::PublicKey)?;
        let id = key_id(name, public.as_bytes());
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
        raw.extend_from_slice(self.public.as_bytes());
        format!("{}+{}+{}", self.name, hex(&self.id), STANDARD.encode(raw))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name+id`, how messages name the key.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, hex(&self.id))
    }

    /// Verifies a signed checkpoint note and returns its body: [`verify_any`] with this key
    /// alone.
    ///
    /// # Errors
    /// As [`verify_any`].
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        verify_any(std::slice::from_ref(self), note).map(|(checkpoint, _)| checkpoint)
    }

    fn knows(&self, line: &SignatureLine<'_>) -> bool {
        line.name == self.name && line.id == self.id
    }
}

/// Opens a signed checkpoint note (C2SP signed-note, C2SP tlog-checkpoint) with the known keys
/// `verifiers`, and returns the checkpoint and the first key whose signature verified.
///
/// Signatures by unknown keys are ignored (C2SP: "verifiers MUST ignore signatures from
/// unknown keys, even if they share a name or ID (but not both) with a known key"); every
/// signature by a known key must verify, and at least one must be present.
///
/// # Errors
/// [`CheckpointError::NoteFormat`] for a note that breaks the signed-note grammar (control
/// characters other than newline, no blank line before the signatures, a malformed signature
/// line); [`CheckpointError::TooManySignatures`], [`CheckpointError::DuplicateSignature`];
/// [`CheckpointError::BadSignature`] when a known key's signature fails strict Ed25519
/// verification; [`CheckpointError::NotSigned`] when no known key signed;
/// [`CheckpointError::BodyFormat`] for a body that is not a tlog checkpoint.
pub fn verify_any<'v>(
    verifiers: &'v [Verifier],
    note: &str,
) -> Result<(Checkpoint, &'v Verifier), CheckpointError> {
    let (body, lines) = parse_note(note)?;
    let mut verified = None;
    for line in &lines {
        let Some(key) = verifiers.iter().find(|v| v.knows(line)) else {
            continue;
        };
        key.public
            .verify_strict(body.as_bytes(), &line.signature)
            .map_err(|_| CheckpointError::BadSignature(key.label()))?;
        verified.get_or_insert(key);
    }
    let Some(key) = verified else {
        let labels: Vec<String> = verifiers.iter().map(Verifier::label).collect();
        return Err(CheckpointError::NotSigned(if labels.is_empty() {
            "(no verifier key given)".into()
        } else {
            labels.join(" or ")
        }));
    };
    Ok((Checkpoint::parse_body(body)?, key))
}

/// As [`verify_any`], for a log's own checkpoint checked by someone outside it (the offline
/// verifier, an officer checking a report): the checkpoint's origin must also be the name of
/// the key that verified it, since a log's key is named for its origin. So a note for another
/// log signed with the same key does not pass as this log's.
///
/// # Errors
/// As [`verify_any`], and [`CheckpointError::OriginMismatch`].
pub fn verify_log_checkpoint(
    verifiers: &[Verifier],
    note: &str,
) -> Result<Checkpoint, CheckpointError> {
    let (checkpoint, key) = verify_any(verifiers, note)?;
    if checkpoint.origin != key.name {
        return Err(CheckpointError::OriginMismatch {
            origin: checkpoint.origin,
            key: key.label(),
        });
    }
    Ok(checkpoint)
}

/// One signature line: `— <name> base64(key id || signature)`.
struct SignatureLine<'a> {
    name: &'a str,
    id: [u8; 4],
    signature: Vec<u8>,
}

/// Splits a signed note into its text and signature lines (C2SP signed-note, "Format"), with
/// the limits of Go's `note.Open`.
fn parse_note(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), CheckpointError> {
    // Valid UTF-8 is given by `&str`.
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(CheckpointError::NoteFormat(
            "control character other than newline (a CR, tab or NUL)",
        ));
    }
    // The text is separated from the signatures by the last blank line.
    let split = note.rfind("\n\n").ok_or(CheckpointError::NoteFormat(
        "no blank line before the signatures",
    ))?;
    let (body, sigs) = (&note[..=split], &note[split + 2..]);
    if sigs.is_empty() {
        return Err(CheckpointError::NoteFormat("no signature lines"));
    }
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(CheckpointError::NoteFormat(
            "signature block must end with a newline",
        ));
    };
    let mut lines: Vec<SignatureLine<'_>> = Vec::new();
    for line in sigs.split('\n') {
        if lines.len() == MAX_SIGNATURES {
            return Err(CheckpointError::TooManySignatures);
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(CheckpointError::NoteFormat(
                "signature line must start with an em dash and a space",
            ))?;
        let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::NoteFormat(
            "signature line needs a name and a signature",
        ))?;
        if !valid_name(name) {
            return Err(CheckpointError::NoteFormat(
                "signature key name must be non-empty, without spaces or '+'",
            ));
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| CheckpointError::NoteFormat("signature is not base64"))?;
        let [a, b, c, d, signature @ ..] = blob.as_slice() else {
            return Err(CheckpointError::NoteFormat(
                "signature is shorter than a key id and one byte",
            ));
        };
        if signature.is_empty() {
            return Err(CheckpointError::NoteFormat(
                "signature is shorter than a key id and one byte",
            ));
        }
        let id = [*a, *b, *c, *d];
        if lines.iter().any(|l| l.name == name && l.id == id) {
            return Err(CheckpointError::DuplicateSignature(format!(
                "{name}+{}",
                hex(&id)
            )));
        }
        lines.push(SignatureLine {
            name,
            id,
            signature: signature.to_vec(),
        });
    }
    Ok((body, lines))
}

/// A tlog checkpoint: the log's origin, its size and its root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The origin line naming the log, e.g. `casegate.example/audit`.
    pub origin: String,
    /// The tree size: how many entries the root covers.
    pub size: u64,
    /// The RFC 6962 root hash of the first `size` entries.
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

    /// Parses a C2SP tlog-checkpoint body: origin, tree size (decimal, no leading zeros),
    /// base64 root hash, then optional non-empty extension lines, each ending in a newline.
    fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let Some(body) = body.strip_suffix('\n') else {
            return Err(CheckpointError::BodyFormat("must end with a newline"));
        };
        let mut lines = body.split('\n');
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
        if lines.any(str::is_empty) {
            return Err(CheckpointError::BodyFormat("an extension line is empty"));
        }
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
    /// The checkpoint the note's body holds.
    pub checkpoint: Checkpoint,
    /// The signed note text, exactly as signed.
    pub note: String,
}

#[cfg(test)]
mod tests;
