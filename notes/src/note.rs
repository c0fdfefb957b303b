//! What the store holds of a disclosed note: its routing and audit facts in the clear, its
//! personal content sealed ([`Sealed`], opened only by the gateway's keyring), and where it
//! is in its life ([`NoteState`]).

use casegate_consent::{
    Category, OrgNumber, Purpose, Role, SubjectId,
    record::{Actor, ConsentId, Timestamp},
};

/// A note's states, in the only order it moves through them (some may be skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoteState {
    /// Stored, its audit entry not yet known durable.
    Pending,
    /// In the recipient's inbox.
    Deliverable,
    /// Acknowledged by the recipient; the body is kept until the retention period ends.
    Acknowledged,
    /// Body deleted (withdrawn consent, retention or TTL elapsed).
    Purged,
}

impl NoteState {
    /// Every state, in order.
    pub const ALL: [NoteState; 4] = [
        NoteState::Pending,
        NoteState::Deliverable,
        NoteState::Acknowledged,
        NoteState::Purged,
    ];

    /// The state's name, as messages show it: `pending`, `deliverable`, `acknowledged`,
    /// `purged`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Deliverable => "deliverable",
            Self::Acknowledged => "acknowledged",
            Self::Purged => "purged",
        }
    }
}

/// A clinician's approval attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The approving clinician's HPR number (Helsepersonellregisteret), 1-9 digits.
    pub hpr_number: String,
    /// When they approved the disclosure.
    pub approved_at: Timestamp,
}

/// What is sealed: everything personal about a note. [`Secret::encode`] gives the bytes the
/// gateway seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The jobseeker the note is about.
    pub subject: SubjectId,
    /// The note's title, as the sender wrote it.
    pub title: String,
    /// The note's body, as sent (its type is the note's `content_type`).
    pub body: Vec<u8>,
    /// The clinician's approval, for a category that requires one.
    pub approval: Option<Approval>,
}

/// A sealed payload (AES-256-GCM): which key, which nonce, the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the keyring key that sealed it.
    pub key_id: String,
    /// The 96-bit AES-GCM nonce, random per seal.
    pub nonce: [u8; 12],
    /// The ciphertext followed by the 16-byte GCM tag.
    pub ciphertext: Vec<u8>,
}

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The note's id (UUIDv7, so ids sort by disclosure time).
    pub id: uuid::Uuid,
    /// Where it is in its life.
    pub state: NoteState,
    /// The sender's idempotency key for the `Disclose` call.
    pub request_id: String,
    /// The gateway's digest of the `Disclose` request (SHA-256): a repeat with the same
    /// request id must match it.
    pub fingerprint: [u8; 32],
    /// Who disclosed it, as authenticated.
    pub sender: Actor,
    /// The organisation whose inbox it goes to.
    pub recipient_org: OrgNumber,
    /// The role it is meant for at the recipient, if the sender named one.
    pub recipient_role: Option<Role>,
    /// What kind of information it holds.
    pub category: Category,
    /// What it is disclosed for.
    pub purpose: Purpose,
    /// The body's media type, as the sender gave it.
    pub content_type: String,
    /// The consent that permitted the disclosure.
    pub consent_id: ConsentId,
    /// The version of that consent the decision relied on.
    pub consent_version: u32,
    /// SHA-256 of that version's canonical content (`casegate.consent.v1`).
    pub consent_record_hash: [u8; 32],
    /// SHA-256 of the body.
    pub content_sha256: [u8; 32],
    /// The subject's pseudonym (HMAC-SHA-256), as the audit log names them.
    pub subject_pseudonym: [u8; 32],
    /// When it was disclosed (`Disclose` was decided).
    pub disclosed_at: Timestamp,
    /// The index of its `disclosure_permitted` audit entry; `None` while pending.
    pub audit_index: Option<u64>,
    /// The audit log's size when the note was stored: its entry, if written, comes after.
    pub log_size_hint: u64,
    /// Whether it was ever streamed to the recipient.
    pub delivered: bool,
    /// When the recipient acknowledged it.
    pub acknowledged_at: Option<Timestamp>,
    /// When the body is deleted (set on acknowledgement).
    pub purge_after: Option<Timestamp>,
    /// When the body was deleted; the note itself is forgotten some time after.
    pub purged_at: Option<Timestamp>,
    /// The sealed [`Secret`]; `None` once purged.
    pub sealed: Option<Sealed>,
}

impl Note {
    /// What the seal is bound to (AEAD associated data): the note's id (16 bytes), subject
    /// pseudonym (32 bytes) and recipient's organisation number (9 ASCII digits), so a sealed
    /// body cannot be moved to another note or inbox.
    pub fn aad(id: &uuid::Uuid, pseudonym: &[u8; 32], recipient: OrgNumber) -> Vec<u8> {
        let mut aad = id.as_bytes().to_vec();
        aad.extend_from_slice(pseudonym);
        aad.extend_from_slice(recipient.to_string().as_bytes());
        aad
    }
}

/// A request id already used by the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// The note the request id was first used for.
    pub id: uuid::Uuid,
    /// That request's fingerprint (see [`Note::fingerprint`]).
    pub fingerprint: [u8; 32],
}

/// Why a due note's body is to be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expiry {
    /// Acknowledged, and the retention period is over.
    RetentionElapsed,
    /// Never acknowledged within the TTL.
    TtlElapsed,
}

impl Expiry {
    /// The reason code of the `note purged` audit entry: `retention_elapsed` or
    /// `ttl_elapsed`.
    pub fn code(self) -> &'static str {
        match self {
            Self::RetentionElapsed => "retention_elapsed",
            Self::TtlElapsed => "ttl_elapsed",
        }
    }
}

/// When an acknowledged note's body is purged: `retention` after its acknowledgement
/// (saturating at the end of time).
pub fn purge_after(acknowledged_at: Timestamp, retention: std::time::Duration) -> Timestamp {
    let retention = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    Timestamp(acknowledged_at.0.saturating_add(retention))
}
