//! The note store: disclosed notes, sealed at rest (AES-256-GCM, [`crate::keyring`]), in the
//! recipient's inbox until acknowledged. Over sled, in its own database under the data folder.
//!
//! Trees: `notes` — disclosure id → note (JSON; the subject, title, body and approval sealed);
//! `requests` — sender orgnr ‖ request id → disclosure id ‖ request fingerprint (idempotency);
//! `inbox` — recipient orgnr ‖ disclosure id → () for deliverable notes; `by_consent` —
//! consent id ‖ disclosure id → () (withdrawal purges what relied on a consent); `waiting` —
//! disclosure time ‖ disclosure id → () for deliverable, unacknowledged notes, and `retained` —
//! purge time ‖ disclosure id → () for acknowledged ones (expiry sweeps read only what is due).
//!
//! A change touching several trees writes them one by one (sled's transactions serialise every
//! writer): index keys that name a note are checked against the note's state when read, and
//! start-up recovery puts back any key a note's state calls for ([`recover`]).
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

/// A note's states, in the only order it moves through them (some may be skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
    #[serde(with = "crate::b64")]
    pub body: Vec<u8>,
    pub approval: Option<Approval>,
}

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub id: uuid::Uuid,
    pub state: NoteState,
    pub request_id: String,
    #[serde(with = "crate::b64")]
    pub fingerprint: [u8; 32],
    pub sender: Actor,
    pub recipient_org: OrgNumber,
    pub recipient_role: Option<Role>,
    pub category: Category,
    pub purpose: Purpose,
    pub content_type: String,
    pub consent_id: ConsentId,
    pub consent_version: u32,
    #[serde(with = "crate::b64")]
    pub consent_record_hash: [u8; 32],
    #[serde(with = "crate::b64")]
    pub content_sha256: [u8; 32],
    #[serde(with = "crate::b64")]
    pub subject_pseudonym: [u8; 32],
    pub disclosed_at: Timestamp,
    pub audit_index: Option<u64>,
    /// The audit log's size when the note was stored: its entry, if written, comes after.
    pub log_size_hint: u64,
    /// Whether it was ever streamed to the recipient.
    pub delivered: bool,
    pub acknowledged_at: Option<Timestamp>,
    /// When the body is deleted (set on acknowledgement).
    pub purge_after: Option<Timestamp>,
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

/// A waiter for the next flush: a blocked thread or an async task.
enum FlushWaiter {
    Thread(std::sync::mpsc::SyncSender<Result<(), String>>),
    Task(tokio::sync::oneshot::Sender<Result<(), String>>),
}

impl FlushWaiter {
    fn tell(self, result: Result<(), String>) {
        // A waiter that went away does not need the answer.
        let _ = match self {
            Self::Thread(tx) => tx.send(result).map_err(drop),
            Self::Task(tx) => tx.send(result).map_err(drop),
        };
    }
}

#[derive(Debug, Clone)]
pub struct NoteStore {
    /// Group commit for flushes: one flusher thread, one `flush` for all who wait meanwhile.
    flusher: std::sync::mpsc::SyncSender<FlushWaiter>,
    notes: sled::Tree,
    requests: sled::Tree,
    inbox: sled::Tree,
    by_consent: sled::Tree,
    waiting: sled::Tree,
    retained: sled::Tree,
}

/// Why a due note's body is to be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Acknowledged, and the retention period is over.
    RetentionElapsed,
    /// Never acknowledged within the TTL.
    TtlElapsed,
}

impl Expiry {
    pub fn code(self) -> &'static str {
        match self {
            Self::RetentionElapsed => "retention_elapsed",
            Self::TtlElapsed => "ttl_elapsed",
        }
    }
}

/// An expiry-index key: the time (order-preserving) then the disclosure id.
fn time_key(at: Timestamp, id: &uuid::Uuid) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&((at.0 as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(id.as_bytes());
    key
}

/// The largest expiry-index key at `at`: a range up to it holds everything due by then.
fn time_key_upto(at: Timestamp) -> [u8; 24] {
    time_key(at, &uuid::Uuid::max())
}

fn consent_key(note: &Note) -> Vec<u8> {
    let mut key = note.consent_id.as_bytes().to_vec();
    key.extend_from_slice(note.id.as_bytes());
    key
}

fn encode(note: &Note) -> Result<Vec<u8>, NoteError> {
    serde_json::to_vec(note).map_err(|e| NoteError::Corrupt(e.to_string()))
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
        // sled's page cache defaults to 1 GiB; notes are written once and read about once.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(32 << 20)
            .open()?;
        let (flusher, requests) = std::sync::mpsc::sync_channel::<FlushWaiter>(4096);
        let flushed = db.clone();
        std::thread::Builder::new()
            .name("note-flusher".into())
            .spawn(move || {
                while let Ok(first) = requests.recv() {
                    let mut waiters = vec![first];
                    while let Ok(more) = requests.try_recv() {
                        waiters.push(more);
                    }
                    let result = flushed.flush().map(drop).map_err(|e| e.to_string());
                    for waiter in waiters {
                        waiter.tell(result.clone());
                    }
                }
            })
            .map_err(|e| NoteError::Corrupt(format!("cannot start the flusher: {e}")))?;
        Ok(Self {
            flusher,
            notes: db.open_tree("notes")?,
            requests: db.open_tree("requests")?,
            inbox: db.open_tree("inbox")?,
            by_consent: db.open_tree("by_consent")?,
            waiting: db.open_tree("waiting")?,
            retained: db.open_tree("retained")?,
        })
    }

    /// Reads every note once: puts back the index keys its state calls for (missing after an
    /// interrupted change, or in a store written before the expiry index existed) and returns
    /// the pending ones.
    fn repair_index(&self) -> Result<Vec<Note>, NoteError> {
        let mut pending = Vec::new();
        for item in self.notes.iter() {
            let note = decode(&item?.1)?;
            let mut keys: Vec<(&sled::Tree, Vec<u8>)> = Vec::new();
            if matches!(note.state, NoteState::Pending | NoteState::Deliverable) {
                keys.push((&self.by_consent, consent_key(&note)));
            }
            match (note.state, note.purge_after) {
                (NoteState::Pending, _) => pending.push(note),
                (NoteState::Deliverable, _) => {
                    keys.push((&self.inbox, Self::inbox_key(&note)));
                    keys.push((
                        &self.waiting,
                        time_key(note.disclosed_at, &note.id).to_vec(),
                    ));
                }
                (NoteState::Acknowledged, Some(at)) => {
                    keys.push((&self.retained, time_key(at, &note.id).to_vec()));
                }
                _ => {}
            }
            for (tree, key) in keys {
                if !tree.contains_key(&key)? {
                    tree.insert(key, &[])?;
                }
            }
        }
        Ok(pending)
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

    /// Stores a note in state `Pending`, not yet flushed: [`Self::flushed`] (or
    /// [`Self::flush`]) must return before its audit entry is written.
    pub fn stage_pending(&self, note: &Note) -> Result<(), NoteError> {
        self.by_consent.insert(consent_key(note), &[])?;
        self.put(note)?;
        Ok(())
    }

    /// Puts a pending note in its recipient's inbox, once its audit entry is durable. Not
    /// flushed: after a crash, recovery finds the entry in the log and does this again.
    pub fn make_deliverable(&self, mut note: Note, audit_index: u64) -> Result<Note, NoteError> {
        note.state = NoteState::Deliverable;
        note.audit_index = Some(audit_index);
        self.waiting
            .insert(time_key(note.disclosed_at, &note.id), &[])?;
        self.inbox.insert(Self::inbox_key(&note), &[])?;
        self.put(&note)?;
        Ok(note)
    }

    fn put(&self, note: &Note) -> Result<(), NoteError> {
        self.notes.insert(note.id.as_bytes(), encode(note)?)?;
        Ok(())
    }

    fn inbox_key(note: &Note) -> Vec<u8> {
        let mut key = note.recipient_org.to_string().into_bytes();
        key.extend_from_slice(note.id.as_bytes());
        key
    }

    /// Records that a note was streamed to its recipient.
    pub fn mark_delivered(&self, id: &uuid::Uuid) -> Result<(), NoteError> {
        let mut note = self.get(id)?;
        if !note.delivered {
            note.delivered = true;
            self.put(&note)?;
        }
        Ok(())
    }

    /// Takes an acknowledged note out of the inbox; its body stays until `purge_after`.
    pub fn acknowledge(
        &self,
        id: &uuid::Uuid,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Note, NoteError> {
        let mut note = self.get(id)?;
        let waiting_key = time_key(note.disclosed_at, &note.id);
        note.state = NoteState::Acknowledged;
        note.acknowledged_at = Some(at);
        note.purge_after = Some(purge_after);
        self.retained.insert(time_key(purge_after, &note.id), &[])?;
        self.put(&note)?;
        self.inbox.remove(Self::inbox_key(&note))?;
        self.waiting.remove(waiting_key)?;
        self.flush()?;
        Ok(note)
    }

    /// Deletes a note's body and takes it out of the inbox, for good. Flushed.
    pub fn purge(&self, id: &uuid::Uuid) -> Result<Note, NoteError> {
        let mut note = self.get(id)?;
        note.state = NoteState::Purged;
        note.sealed = None;
        // The body goes first; the keys that named the note are only an index.
        self.put(&note)?;
        self.inbox.remove(Self::inbox_key(&note))?;
        self.by_consent.remove(consent_key(&note))?;
        self.waiting.remove(time_key(note.disclosed_at, &note.id))?;
        if let Some(at) = note.purge_after {
            self.retained.remove(time_key(at, &note.id))?;
        }
        self.flush()?;
        Ok(note)
    }

    /// Notes that relied on `consent` and were never delivered.
    pub fn undelivered_for(&self, consent: &ConsentId) -> Result<Vec<Note>, NoteError> {
        let mut out = Vec::new();
        for item in self.by_consent.scan_prefix(consent.as_bytes()) {
            let Some(note) = self.named_by(&item?.0, "consent index")? else {
                continue;
            };
            if matches!(note.state, NoteState::Pending | NoteState::Deliverable) && !note.delivered
            {
                out.push(note);
            }
        }
        Ok(out)
    }

    /// Forgets a pending note whose audit entry never became durable (after a crash): it was
    /// never acknowledged to its sender, who may retry with the same request id.
    pub fn drop_pending(&self, note: &Note) -> Result<(), NoteError> {
        // The note goes last: until then, recovery finds it pending and comes back here.
        self.requests
            .remove(request_key(note.sender.orgnr, &note.request_id))?;
        self.by_consent.remove(consent_key(note))?;
        self.inbox.remove(Self::inbox_key(note))?;
        self.waiting.remove(time_key(note.disclosed_at, &note.id))?;
        self.notes.remove(note.id.as_bytes())?;
        self.flush()?;
        Ok(())
    }

    /// The note whose id ends an index key; `None` if there is none (a key left by a change cut
    /// short, see the module notes).
    fn named_by(&self, key: &[u8], index: &str) -> Result<Option<Note>, NoteError> {
        let id: [u8; 16] = key
            .get(key.len().saturating_sub(16)..)
            .and_then(|id| id.try_into().ok())
            .ok_or_else(|| NoteError::Corrupt(format!("bad {index} key")))?;
        match self.get(&uuid::Uuid::from_bytes(id)) {
            Ok(note) => Ok(Some(note)),
            Err(NoteError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn get(&self, id: &uuid::Uuid) -> Result<Note, NoteError> {
        let bytes = self.notes.get(id.as_bytes())?.ok_or(NoteError::NotFound)?;
        decode(&bytes)
    }

    /// Up to `limit` deliverable notes in `org`'s inbox after the note `after` (from the
    /// start without it), in disclosure-id order: ids are UUIDv7, so oldest first.
    pub fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<Vec<Note>, NoteError> {
        let prefix = org.to_string().into_bytes();
        let mut start = prefix.clone();
        if let Some(after) = after {
            start.extend_from_slice(after.as_bytes());
            start.push(0);
        }
        let mut notes = Vec::new();
        for item in self.inbox.range(start..) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) || notes.len() >= limit {
                break;
            }
            // Keys of a change in progress or interrupted (see the module notes) are passed over.
            if let Some(note) = self.named_by(&key, "inbox")?
                && note.state == NoteState::Deliverable
            {
                notes.push(note);
            }
        }
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

    /// Waits until everything written so far is on disk. Concurrent callers share one flush.
    /// Blocking: not for async code (see [`Self::flushed`]).
    pub fn flush(&self) -> Result<(), NoteError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.request_flush(FlushWaiter::Thread(tx))?;
        rx.recv()
            .map_err(|_| flusher_stopped())?
            .map_err(NoteError::Corrupt)
    }

    /// [`Self::flush`] for async code: waits without holding a thread.
    pub async fn flushed(&self) -> Result<(), NoteError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request_flush(FlushWaiter::Task(tx))?;
        rx.await
            .map_err(|_| flusher_stopped())?
            .map_err(NoteError::Corrupt)
    }

    fn request_flush(&self, waiter: FlushWaiter) -> Result<(), NoteError> {
        self.flusher.send(waiter).map_err(|_| flusher_stopped())
    }

    /// Notes whose body is due for deletion: deliverable ones disclosed at or before
    /// `ttl_cutoff`, acknowledged ones whose purge time is at or before `now`; at most
    /// `limit`, oldest first. A key whose note has moved past the state it indexes (left by an
    /// interrupted change) is dropped; one whose note has not reached it yet (a change in
    /// progress) is left alone.
    pub fn due(
        &self,
        ttl_cutoff: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Note, Expiry)>, NoteError> {
        let mut out = Vec::new();
        for (tree, upto, expiry, indexed) in [
            (
                &self.retained,
                now,
                Expiry::RetentionElapsed,
                NoteState::Acknowledged,
            ),
            (
                &self.waiting,
                ttl_cutoff,
                Expiry::TtlElapsed,
                NoteState::Deliverable,
            ),
        ] {
            for item in tree.range(..=time_key_upto(upto)) {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (key, _) = item?;
                let Some(note) = self.named_by(&key, "expiry index")? else {
                    tree.remove(key)?;
                    continue;
                };
                match note.state.cmp(&indexed) {
                    std::cmp::Ordering::Equal => out.push((note, expiry)),
                    std::cmp::Ordering::Greater => {
                        tree.remove(key)?;
                    }
                    std::cmp::Ordering::Less => {}
                }
            }
        }
        Ok(out)
    }

    /// How many notes wait in inboxes.
    pub fn backlog(&self) -> usize {
        self.waiting.len()
    }
}

fn flusher_stopped() -> NoteError {
    NoteError::Corrupt("the flusher stopped".into())
}

/// Restores the invariant after a crash: a pending note whose `disclosure permitted` entry is
/// in the log becomes deliverable; one without is dropped (its sender never got a receipt).
/// Returns (made deliverable, dropped).
pub fn recover(
    notes: &NoteStore,
    log: &casegate_audit::log::AuditLog,
) -> Result<(usize, usize), NoteError> {
    use casegate_audit::entry::{Entry, EntryKind};
    let pending = notes.repair_index()?;
    let (mut made, mut dropped) = (0, 0);
    let size = log.size();
    for note in pending {
        let id = note.id.to_string();
        let mut found = None;
        for index in note.log_size_hint.min(size)..size {
            let bytes = log
                .entry(index)
                .map_err(|e| NoteError::Corrupt(format!("audit log: {e}")))?;
            if let Ok(entry) = Entry::decode(&bytes)
                && entry.kind == EntryKind::DisclosurePermitted
                && entry.disclosure_id.as_deref() == Some(id.as_str())
            {
                found = Some(index);
                break;
            }
        }
        match found {
            Some(index) => {
                notes.make_deliverable(note, index)?;
                made += 1;
            }
            None => {
                notes.drop_pending(&note)?;
                dropped += 1;
            }
        }
    }
    notes.flush()?;
    Ok((made, dropped))
}

#[cfg(test)]
mod tests;
