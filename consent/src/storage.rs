//! The consent store as the workflows see it: [`ConsentStorage`], implemented by the embedded
//! store ([`crate::store::ConsentStore`], sled) and run against one suite of expectations
//! ([`conformance`]) that every implementation must pass.
//!
//! Every method is synchronous. The gateway calls [`ConsentStorage::decide`] on its async
//! runtime's own threads (a decision is on every disclosure's path), so an implementation must
//! answer it from memory; every other method may block and is run off the runtime. Every write
//! is durable before it returns.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use crate::{
    SubjectId, Vocabulary,
    decision::{self, Decision, DisclosureRequest},
    record::{Actor, ConsentId, ConsentRecord, Evidence, NewConsent, Timestamp},
    store::{ConsentStore, LoggedChange, LostGrants, Reconciled, StoreError},
};

/// Consent versions by subject and id, with the one decision the gateway asks of them.
///
/// Versions are immutable once stored except for their status: granting a new version of a
/// consent supersedes the current one, withdrawing it is final.
pub trait ConsentStorage: Send + Sync + std::fmt::Debug {
    /// The record a grant would store: a new consent (`supersedes: None`, version 1, a new
    /// id) or the next version of an active one, recorded at `now`. Stores nothing.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown `supersedes`; [`StoreError::SubjectMismatch`]
    /// when it is about another subject; [`StoreError::NotActive`] when it is withdrawn or
    /// superseded; a storage failure.
    fn prepare_grant(
        &self,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError>;

    /// Stores a prepared record, superseding the version before it in the same write.
    ///
    /// # Errors
    /// [`StoreError::NotActive`] (`changed meanwhile`) when the consent changed since the
    /// record was prepared (the same record committed twice included); a storage failure.
    fn commit_grant(&self, record: &ConsentRecord) -> Result<(), StoreError>;

    /// Withdraws the current version of `id` at `now`, for good, and returns it withdrawn.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::AlreadyWithdrawn`]; a storage failure.
    fn withdraw(
        &self,
        id: &ConsentId,
        by: Actor,
        reason: Option<String>,
        evidence: Option<Evidence>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError>;

    /// One version of `id` (`None`: the newest).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id or version; a storage failure.
    fn get(&self, id: &ConsentId, version: Option<u32>) -> Result<ConsentRecord, StoreError>;

    /// Every version of every consent about `subject`, ordered by consent id, then version.
    ///
    /// # Errors
    /// A storage failure or an unreadable record.
    fn for_subject(&self, subject: &SubjectId) -> Result<Vec<ConsentRecord>, StoreError>;

    /// The disclosure decision ([`decision::decide`]) for `request` about `subject` at `at`,
    /// over the subject's current versions.
    ///
    /// # Errors
    /// A storage failure or an unreadable record.
    fn decide(
        &self,
        subject: &SubjectId,
        request: &DisclosureRequest,
        at: Timestamp,
        vocabulary: &Vocabulary,
    ) -> Result<Decision, StoreError>;

    /// The audit log size up to which the store has been reconciled with the log; `None`
    /// before the first reconciliation.
    ///
    /// # Errors
    /// A storage failure or an unreadable mark.
    fn reconciled_through(&self) -> Result<Option<u64>, StoreError>;

    /// Records that the store is reconciled with the log up to `size` entries.
    ///
    /// # Errors
    /// A storage failure.
    fn set_reconciled_through(&self, size: u64) -> Result<(), StoreError>;

    /// Brings the store in line with one consent change the audit log holds (idempotent).
    ///
    /// # Errors
    /// A storage failure or an unreadable record.
    fn reconcile(
        &self,
        change: &LoggedChange,
        lost_grants: LostGrants,
    ) -> Result<Reconciled, StoreError>;
}

impl ConsentStorage for ConsentStore {
    fn prepare_grant(
        &self,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        ConsentStore::prepare_grant(self, new, supersedes, now)
    }

    fn commit_grant(&self, record: &ConsentRecord) -> Result<(), StoreError> {
        ConsentStore::commit_grant(self, record)
    }

    fn withdraw(
        &self,
        id: &ConsentId,
        by: Actor,
        reason: Option<String>,
        evidence: Option<Evidence>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        ConsentStore::withdraw(self, id, by, reason, evidence, now)
    }

    fn get(&self, id: &ConsentId, version: Option<u32>) -> Result<ConsentRecord, StoreError> {
        ConsentStore::get(self, id, version)
    }

    fn for_subject(&self, subject: &SubjectId) -> Result<Vec<ConsentRecord>, StoreError> {
        ConsentStore::for_subject(self, subject)
    }

    fn decide(
        &self,
        subject: &SubjectId,
        request: &DisclosureRequest,
        at: Timestamp,
        vocabulary: &Vocabulary,
    ) -> Result<Decision, StoreError> {
        self.with_terms(subject, |views| {
            decision::decide(request, views, at, vocabulary)
        })
    }

    fn reconciled_through(&self) -> Result<Option<u64>, StoreError> {
        ConsentStore::reconciled_through(self)
    }

    fn set_reconciled_through(&self, size: u64) -> Result<(), StoreError> {
        ConsentStore::set_reconciled_through(self, size)
    }

    fn reconcile(
        &self,
        change: &LoggedChange,
        lost_grants: LostGrants,
    ) -> Result<Reconciled, StoreError> {
        ConsentStore::reconcile(self, change, lost_grants)
    }
}
