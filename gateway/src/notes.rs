//! The note store: disclosed notes, sealed at rest (AES-256-GCM, [`crate::keyring`]), in the
//! recipient's inbox until acknowledged. Over sled, in its own database under the data folder.
//!
//! Trees: `notes` — disclosure id → note (JSON; the subject, title, body and approval sealed);
//! `requests` — sender orgnr ‖ request id → disclosure id ‖ request fingerprint (idempotency);
//! `inbox` — recipient orgnr ‖ disclosure id → () for deliverable notes; `by_consent` —
//! consent id ‖ disclosure id → () (withdrawal purges what relied on a consent).
//!
//! Invariant (with the audit log): a note becomes deliverable only after its `disclosure
//! permitted` entry is durable; it is stored `Pending` (and flushed) before that entry is
//! written, so an entry never names a note the store does not have.

use std::path::Path;

use casegate_consent::{
    Category, OrgNumber, Purpose, Role, SubjectId,
    record::{Actor, ConsentId, Timestamp},
};
use serde::{Deserialize, Serialize};

use crate::keyring::{Keyring, KeyringError, Sealed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// A clinician's approval attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub hpr_number: String,
    pub approved_at: Timestamp,
}

/// What is sealed: everything personal about a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub subject: SubjectId,
    pub title: String,
    pub body: Vec<u8>,
    pub approval: Option<Approval>,
}

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub id: uuid::Uuid,
    pub state: NoteState,
    pub request_id: String,
    pub fingerprint: [u8; 32],
    pub sender: Actor,
    pub recipient_org: OrgNumber,
    pub recipient_role: Option<Role>,
    pub category: Category,
    pub purpose: Purpose,
    pub content_type: String,
    pub consent_id: ConsentId,
    pub consent_version: u32,
    pub content_sha256: [u8; 32],
    pub subject_pseudonym: [u8; 32],
    pub disclosed_at: Timestamp,
    pub audit_index: Option<u64>,
    /// `None` once purged.
    pub sealed: Option<Sealed>,
}

impl Note {
    /// What the seal is bound to: the note's id, subject pseudonym and recipient, so a sealed
    /// body cannot be moved to another note or inbox.
    pub fn aad(id: &uuid::Uuid, pseudonym: &[u8; 32], recipient: OrgNumber) -> Vec<u8> {
        let mut aad = id.as_bytes().to_vec();
        aad.extend_from_slice(pseudonym);
        aad.extend_from_slice(recipient.to_string().as_bytes());
        aad
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("note store: {0}")]
    Storage(#[from] sled::Error),
    #[error("note store holds an unreadable note: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("no such note")]
    NotFound,
}

/// A request id already used by the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    pub id: uuid::Uuid,
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct NoteStore {
    db: sled::Db,
    notes: sled::Tree,
    requests: sled::Tree,
    inbox: sled::Tree,
    by_consent: sled::Tree,
}

fn request_key(sender: OrgNumber, request_id: &str) -> Vec<u8> {
    let mut key = sender.to_string().into_bytes();
    key.extend_from_slice(request_id.as_bytes());
    key
}

fn decode(bytes: &[u8]) -> Result<Note, NoteError> {
    serde_json::from_slice(bytes).map_err(|e| NoteError::Corrupt(e.to_string()))
}

impl NoteStore {
    pub fn open(path: &Path) -> Result<Self, NoteError> {
        let db = sled::Config::new().path(path).open()?;
        Ok(Self {
            notes: db.open_tree("notes")?,
            requests: db.open_tree("requests")?,
            inbox: db.open_tree("inbox")?,
            by_consent: db.open_tree("by_consent")?,
            db,
        })
    }

    /// Claims `request_id` for a new note `id`; if the sender used it before, says for what.
    pub fn reserve(
        &self,
        sender: OrgNumber,
        request_id: &str,
        id: uuid::Uuid,
        fingerprint: [u8; 32],
    ) -> Result<Result<(), Existing>, NoteError> {
        let mut value = id.as_bytes().to_vec();
        value.extend_from_slice(&fingerprint);
        match self.requests.compare_and_swap(
            request_key(sender, request_id),
            None as Option<&[u8]>,
            Some(value),
        )? {
            Ok(()) => Ok(Ok(())),
            Err(conflict) => {
                let current = conflict.current.unwrap_or_default();
                if current.len() != 48 {
                    return Err(NoteError::Corrupt("bad request record".into()));
                }
                let mut id = [0u8; 16];
                id.copy_from_slice(&current[..16]);
                let mut fingerprint = [0u8; 32];
                fingerprint.copy_from_slice(&current[16..]);
                Ok(Err(Existing {
                    id: uuid::Uuid::from_bytes(id),
                    fingerprint,
                }))
            }
        }
    }

    /// Gives a request id back (the disclosure was refused or failed before it was stored).
    pub fn release(&self, sender: OrgNumber, request_id: &str) -> Result<(), NoteError> {
        self.requests.remove(request_key(sender, request_id))?;
        Ok(())
    }

    /// Stores a note in state `Pending` and flushes: the step before its audit entry.
    pub fn put_pending(&self, note: &Note) -> Result<(), NoteError> {
        let bytes = serde_json::to_vec(note).map_err(|e| NoteError::Corrupt(e.to_string()))?;
        self.notes.insert(note.id.as_bytes(), bytes)?;
        let mut key = note.consent_id.as_bytes().to_vec();
        key.extend_from_slice(note.id.as_bytes());
        self.by_consent.insert(key, &[])?;
        self.db.flush()?;
        Ok(())
    }

    /// Puts a pending note in its recipient's inbox, once its audit entry is durable. Not
    /// flushed: after a crash, recovery finds the entry in the log and does this again.
    pub fn make_deliverable(&self, id: &uuid::Uuid, audit_index: u64) -> Result<Note, NoteError> {
        let mut note = self.get(id)?;
        note.state = NoteState::Deliverable;
        note.audit_index = Some(audit_index);
        let bytes = serde_json::to_vec(&note).map_err(|e| NoteError::Corrupt(e.to_string()))?;
        self.notes.insert(id.as_bytes(), bytes)?;
        let mut key = note.recipient_org.to_string().into_bytes();
        key.extend_from_slice(id.as_bytes());
        self.inbox.insert(key, &[])?;
        Ok(note)
    }

    pub fn get(&self, id: &uuid::Uuid) -> Result<Note, NoteError> {
        let bytes = self.notes.get(id.as_bytes())?.ok_or(NoteError::NotFound)?;
        decode(&bytes)
    }

    /// Notes in `org`'s inbox, oldest first.
    pub fn inbox(&self, org: OrgNumber) -> Result<Vec<Note>, NoteError> {
        let prefix = org.to_string().into_bytes();
        let mut notes = Vec::new();
        for item in self.inbox.scan_prefix(&prefix) {
            let (key, _) = item?;
            let id: [u8; 16] = key[prefix.len()..]
                .try_into()
                .map_err(|_| NoteError::Corrupt("bad inbox key".into()))?;
            notes.push(self.get(&uuid::Uuid::from_bytes(id))?);
        }
        notes.sort_by_key(|n| (n.disclosed_at, n.id));
        Ok(notes)
    }

    /// Opens a note's sealed part.
    pub fn open_secret(&self, note: &Note, keyring: &Keyring) -> Result<Secret, NoteError> {
        let sealed = note.sealed.as_ref().ok_or(NoteError::NotFound)?;
        let plain = keyring.open(
            sealed,
            &Note::aad(&note.id, &note.subject_pseudonym, note.recipient_org),
        )?;
        serde_json::from_slice(&plain).map_err(|e| NoteError::Corrupt(e.to_string()))
    }

    pub fn flush(&self) -> Result<(), NoteError> {
        self.db.flush()?;
        Ok(())
    }
}
