//! Reconciling the store with the audit log, the truth it is brought in line with at start:
//! the consent changes the log records, what applying one did, and the mark of how far the
//! log has been applied (kept in the `meta` tree).

use super::{ConsentStore, StoreError};
use crate::record::{Actor, ConsentId, ConsentRecord, Status, Timestamp, Withdrawal};

/// Key of the reconciliation mark in the `meta` tree.
const RECONCILED_THROUGH: &[u8] = b"reconciled_through";

/// A consent change as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedChange {
    /// A version was granted (superseding the one before it, if `version > 1`).
    Granted {
        /// The consent.
        id: ConsentId,
        /// The version granted.
        version: u32,
        /// SHA-256 of the version's canonical content
        /// ([`ConsentRecord::record_hash`](crate::record::ConsentRecord::record_hash)).
        record_sha256: [u8; 32],
    },
    /// A version was withdrawn.
    Withdrawn {
        /// The consent.
        id: ConsentId,
        /// The version withdrawn.
        version: u32,
        /// Who withdrew it: the entry's actor.
        by: Actor,
        /// When: the entry's time.
        at: Timestamp,
    },
}

/// What [`ConsentStore::reconcile`] does about a grant the log holds and the store lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostGrants {
    /// Mark the version it superseded superseded: the terms the subject replaced do not come
    /// back into force.
    Supersede,
    /// Change nothing; report it.
    Report,
}

/// What [`ConsentStore::reconcile`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// The store already held the change.
    InStore,
    /// A withdrawal the store had lost was applied again.
    WithdrawalReapplied,
    /// The store lacks the granted version: it stays refused.
    GrantLost {
        /// Whether the version before it was still active and is now marked superseded.
        previous_superseded: bool,
    },
    /// The store holds the version with other content than the log's hash.
    Different,
    /// A withdrawal of a version the store does not hold (its grant was lost too).
    WithdrawnNotHeld,
}

/// The version a lost grant superseded, marked superseded if still active, so the terms it
/// replaced do not come back into force; whether it changed. Shared by every store's
/// reconciliation.
pub fn supersede_if_active(record: &mut ConsentRecord) -> Result<bool, StoreError> {
    let active = record.status == Status::Active;
    if active {
        record.status = Status::Superseded;
    }
    Ok(active)
}

/// A withdrawal the log holds and the store lost, applied again as of the log's time `at`
/// with the actor the log names (reason and evidence, kept only in the store, are lost);
/// whether it changed. Shared by every store's reconciliation.
pub fn reapply_withdrawal(
    record: &mut ConsentRecord,
    by: &Actor,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let lost = record.status != Status::Withdrawn;
    if lost {
        record.status = Status::Withdrawn;
        record.withdrawal = Some(Withdrawal {
            at,
            by: by.clone(),
            reason: None,
            evidence: None,
        });
    }
    Ok(lost)
}

impl ConsentStore {
    /// The audit log size up to which the store has been reconciled with the log (`None`
    /// when never): every consent change in entries below it is in the store.
    ///
    /// # Errors
    /// The store cannot be read, or holds a mark that is not 8 bytes.
    pub fn reconciled_through(&self) -> Result<Option<u64>, StoreError> {
        self.meta
            .get(RECONCILED_THROUGH)?
            .map(|v| {
                <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("bad reconciliation mark".into()))
            })
            .transpose()
    }

    /// Records, durably, that every consent change in the first `size` audit entries is in
    /// the store. The caller must know it: no change may be between its audit entry and its
    /// store write.
    ///
    /// # Errors
    /// The store cannot be written or synced.
    pub fn set_reconciled_through(&self, size: u64) -> Result<(), StoreError> {
        self.meta.insert(RECONCILED_THROUGH, &size.to_be_bytes())?;
        self.sync()
    }

    /// Brings the store in line with one consent change the audit log holds — the log is
    /// fsync'd with every batch, so it is the truth — and says what that took:
    /// - a grant the store lacks stays refused (its content is not in the log) and is
    ///   reported; the version it superseded is marked superseded, so the older terms it
    ///   replaced do not come back into force;
    /// - a withdrawal the store lacks is re-applied, as of the log's time, with the actor the
    ///   log names (reason and evidence, kept in the store only, are lost).
    ///
    /// With [`LostGrants::Report`] a lost grant is only reported (for a first reconciliation
    /// over a log written before there was one, whose orphan grants are calls that failed).
    ///
    /// Idempotent; the result is durable before it returns.
    ///
    /// # Errors
    /// The store cannot be read or written, or holds an unreadable record.
    pub fn reconcile(
        &self,
        change: &LoggedChange,
        lost_grants: LostGrants,
    ) -> Result<Reconciled, StoreError> {
        match change {
            LoggedChange::Granted {
                id,
                version,
                record_sha256,
            } => match self.get(id, Some(*version)) {
                Ok(held) if held.record_hash() == *record_sha256 => Ok(Reconciled::InStore),
                Ok(_) => Ok(Reconciled::Different),
                Err(StoreError::NotFound) => {
                    let restated = match *version {
                        _ if lost_grants == LostGrants::Report => Ok(false),
                        1 => Ok(false),
                        v => self
                            .restate(id, v - 1, supersede_if_active)
                            .map(|(_, changed)| changed),
                    };
                    let superseded = match restated {
                        Err(StoreError::NotFound) => false,
                        other => other?,
                    };
                    Ok(Reconciled::GrantLost {
                        previous_superseded: superseded,
                    })
                }
                Err(e) => Err(e),
            },
            LoggedChange::Withdrawn {
                id,
                version,
                by,
                at,
            } => match self.get(id, Some(*version)) {
                Ok(held) if held.status == Status::Withdrawn => Ok(Reconciled::InStore),
                Ok(_) => {
                    self.restate(id, *version, |record| reapply_withdrawal(record, by, *at))?;
                    Ok(Reconciled::WithdrawalReapplied)
                }
                Err(StoreError::NotFound) => Ok(Reconciled::WithdrawnNotHeld),
                Err(e) => Err(e),
            },
        }
    }
}
