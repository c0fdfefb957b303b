//! The note store as the workflows see it: [`NoteStorage`], implemented by the embedded
//! journal ([`NoteStore`]) and held to one suite of expectations (the model-based test in
//! [`model`], run against any implementation through its [`model::Harness`]).
//!
//! Every method is synchronous. The workflows call `reserve`, `release`, `stage_pending`,
//! `make_deliverable` and `backlog` on the async runtime's own threads, so an
//! implementation must answer those from memory or a local write that does not wait for the
//! disk; every other method may block and is run off the runtime.

use casegate_consent::{OrgNumber, record::ConsentId, record::Timestamp};
use uuid::Uuid;

use crate::{Existing, Expiry, JournalStats, Note, NoteError, NoteStore};

#[cfg(any(test, feature = "conformance"))]
pub mod model;

/// Disclosed notes by id, in their recipients' inboxes until acknowledged, with the request
/// ids their senders used (for idempotency) and what comes due for deletion.
pub trait NoteStorage: Send + Sync + std::fmt::Debug {
    /// Claims `request_id` of `sender` for the new note `id` (whose request has the SHA-256
    /// `fingerprint`); if the sender used it before, answers `Err` with what for. The claim
    /// holds until the note is stored or the claim is [released](Self::release).
    ///
    /// # Errors
    /// The store accepts no more writes.
    fn reserve(
        &self,
        sender: OrgNumber,
        request_id: &str,
        id: Uuid,
        fingerprint: [u8; 32],
    ) -> Result<Result<(), Existing>, NoteError>;

    /// Gives a claimed request id back; a stored note keeps its own.
    ///
    /// # Errors
    /// None today; an implementation over a database may fail to reach it.
    fn release(&self, sender: OrgNumber, request_id: &str) -> Result<(), NoteError>;

    /// Stores a new note in state `Pending`. Durable once [`Self::flush`] or
    /// [`Self::sync_now`] returns, which must happen before its audit entry is written.
    ///
    /// # Errors
    /// A note with this id exists; a write failure.
    fn stage_pending(&self, note: &Note) -> Result<(), NoteError>;

    /// Puts a pending note in its recipient's inbox, naming its audit entry (`audit_index`);
    /// a note no longer pending is left as it is. Returns the note as stored.
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a write failure.
    fn make_deliverable(&self, note: Note, audit_index: u64) -> Result<Note, NoteError>;

    /// Records that a note was streamed to its recipient.
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a write failure.
    fn mark_delivered(&self, id: &Uuid) -> Result<(), NoteError>;

    /// Takes a deliverable note out of the inbox at `at`; its body stays until
    /// `purge_after`. Durable when it returns. The same acknowledgement again is answered as
    /// the first was.
    ///
    /// # Errors
    /// [`NoteError::NotDeliverable`] for a note in another state; [`NoteError::NotFound`];
    /// a write failure.
    fn acknowledge(
        &self,
        id: &Uuid,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Note, NoteError>;

    /// Deletes a note's body and takes it out of the inbox, for good. Durable when it
    /// returns.
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a write failure.
    fn purge(&self, id: &Uuid) -> Result<Note, NoteError>;

    /// Notes relying on `consent` that are pending or deliverable and were never delivered.
    ///
    /// # Errors
    /// A read failure.
    fn undelivered_for(&self, consent: &ConsentId) -> Result<Vec<Note>, NoteError>;

    /// Forgets a pending note whose audit entry never became durable; its request id is
    /// free again. Durable when it returns.
    ///
    /// # Errors
    /// A write failure.
    fn drop_pending(&self, note: &Note) -> Result<(), NoteError>;

    /// Forgets up to `limit` notes purged at or before `before`, oldest purge first; their
    /// request ids are free again. Returns how many.
    ///
    /// # Errors
    /// A write failure.
    fn forget_purged(&self, before: Timestamp, limit: usize) -> Result<usize, NoteError>;

    /// One note.
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a read failure.
    fn get(&self, id: &Uuid) -> Result<Note, NoteError>;

    /// Every note still pending (for recovery at start).
    ///
    /// # Errors
    /// A read failure.
    fn pending(&self) -> Result<Vec<Note>, NoteError>;

    /// Up to `limit` deliverable notes in `org`'s inbox after the note `after` (from the
    /// start when `None`), oldest first (by UUIDv7 id).
    ///
    /// # Errors
    /// A read failure.
    fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Note>, NoteError>;

    /// Notes whose body is due for deletion: deliverable ones disclosed at or before
    /// `ttl_cutoff`, acknowledged ones whose purge time is at or before `now`; at most
    /// `limit`, oldest first.
    ///
    /// # Errors
    /// A read failure.
    fn due(
        &self,
        ttl_cutoff: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Note, Expiry)>, NoteError>;

    /// Waits until everything written so far is durable (concurrent callers share one flush).
    ///
    /// # Errors
    /// The flush failed; the store then accepts no more writes.
    fn flush(&self) -> Result<(), NoteError>;

    /// Makes everything written so far durable on the calling thread (the audit writer's,
    /// before each batch).
    ///
    /// # Errors
    /// The sync failed; the store then accepts no more writes.
    fn sync_now(&self) -> Result<(), NoteError>;

    /// Why the store accepts no more writes, if it does not.
    fn failure(&self) -> Option<String>;

    /// How many notes wait in inboxes.
    fn backlog(&self) -> usize;

    /// What the store holds, for metrics.
    fn stats(&self) -> JournalStats;

    /// Reclaims space held by superseded records; returns how many files (or other units of
    /// the implementation's storage) were freed.
    ///
    /// # Errors
    /// A read or write failure.
    fn compact(&self) -> Result<usize, NoteError>;
}

impl NoteStorage for NoteStore {
    fn reserve(
        &self,
        sender: OrgNumber,
        request_id: &str,
        id: Uuid,
        fingerprint: [u8; 32],
    ) -> Result<Result<(), Existing>, NoteError> {
        NoteStore::reserve(self, sender, request_id, id, fingerprint)
    }

    fn release(&self, sender: OrgNumber, request_id: &str) -> Result<(), NoteError> {
        NoteStore::release(self, sender, request_id)
    }

    fn stage_pending(&self, note: &Note) -> Result<(), NoteError> {
        NoteStore::stage_pending(self, note)
    }

    fn make_deliverable(&self, note: Note, audit_index: u64) -> Result<Note, NoteError> {
        NoteStore::make_deliverable(self, note, audit_index)
    }

    fn mark_delivered(&self, id: &Uuid) -> Result<(), NoteError> {
        NoteStore::mark_delivered(self, id)
    }

    fn acknowledge(
        &self,
        id: &Uuid,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Note, NoteError> {
        NoteStore::acknowledge(self, id, at, purge_after)
    }

    fn purge(&self, id: &Uuid) -> Result<Note, NoteError> {
        NoteStore::purge(self, id)
    }

    fn undelivered_for(&self, consent: &ConsentId) -> Result<Vec<Note>, NoteError> {
        NoteStore::undelivered_for(self, consent)
    }

    fn drop_pending(&self, note: &Note) -> Result<(), NoteError> {
        NoteStore::drop_pending(self, note)
    }

    fn forget_purged(&self, before: Timestamp, limit: usize) -> Result<usize, NoteError> {
        NoteStore::forget_purged(self, before, limit)
    }

    fn get(&self, id: &Uuid) -> Result<Note, NoteError> {
        NoteStore::get(self, id)
    }

    fn pending(&self) -> Result<Vec<Note>, NoteError> {
        NoteStore::pending(self)
    }

    fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Note>, NoteError> {
        NoteStore::inbox_page(self, org, after, limit)
    }

    fn due(
        &self,
        ttl_cutoff: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Note, Expiry)>, NoteError> {
        NoteStore::due(self, ttl_cutoff, now, limit)
    }

    fn flush(&self) -> Result<(), NoteError> {
        NoteStore::flush(self)
    }

    fn sync_now(&self) -> Result<(), NoteError> {
        NoteStore::sync_now(self)
    }

    fn failure(&self) -> Option<String> {
        NoteStore::failure(self)
    }

    fn backlog(&self) -> usize {
        NoteStore::backlog(self)
    }

    fn stats(&self) -> JournalStats {
        NoteStore::stats(self)
    }

    fn compact(&self) -> Result<usize, NoteError> {
        NoteStore::compact(self)
    }
}
