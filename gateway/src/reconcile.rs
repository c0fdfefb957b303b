//! Start-up reconciliation of the other stores against the audit log.
//!
//! The audit log is the one record synced with every batch before anyone is answered, so at
//! start it is the truth the consent and note stores are brought in line with:
//! - every consent change the log holds (grants, supersessions, withdrawals) that the consent
//!   store lacks is replayed ([`ConsentStore::reconcile`]): a withdrawal the store forgot is
//!   applied again and the notes still waiting under it are purged (audited); a grant whose
//!   record content was lost stays refused and is reported;
//! - every note acknowledgement and purge the log holds that the note store lacks is finished
//!   (they are written entry first, so a crash can leave exactly that).
//!
//! Only the entries from the `reconciled_through` mark (kept in the consent store) on are
//! read. The mark moves to the log's end while no store change is between its entry and its
//! store write ([`mark`]): every 10 s and at shutdown, so a start after a clean shutdown reads
//! no entry and one after a crash at most some seconds' worth.

use casegate_audit::{
    entry::{Entry, EntryKind},
    log::AuditLog,
};
use casegate_consent::{
    record::{Actor, ConsentId, Timestamp},
    store::{ConsentStore, LoggedChange, Reconciled, StoreError},
};

use crate::notes::{NoteError, NoteState, NoteStore};

/// What reconciling the consent store found, for the start-up log line and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Audit entries read: `[from, to)`.
    pub from: u64,
    pub to: u64,
    /// Consent changes among them.
    pub changes: u64,
    /// Withdrawals the store had lost, applied again.
    pub withdrawals_reapplied: Vec<ConsentId>,
    /// Grants whose record the store lacks (they stay refused).
    pub grants_lost: u64,
    /// Versions marked superseded because their successor's grant was lost.
    pub superseded: u64,
    /// Versions held with other content than the log's hash.
    pub different: u64,
    /// Withdrawals of versions the store does not hold.
    pub withdrawn_not_held: u64,
    /// Consent entries that could not be read as a change (reported, skipped).
    pub unreadable: u64,
    /// Note acknowledgements in the log that the note store had not made, now made.
    pub acknowledgements_finished: u64,
    /// Note purges in the log that the note store had not made, now made.
    pub purges_finished: u64,
}

impl Summary {
    /// Whether the store had lost or differed from anything the log holds.
    pub fn found_losses(&self) -> bool {
        !self.withdrawals_reapplied.is_empty()
            || self.grants_lost > 0
            || self.different > 0
            || self.withdrawn_not_held > 0
            || self.unreadable > 0
    }
}

/// Why reconciliation could not finish (the gateway does not start).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading audit entry {index}: {reason}")]
    Log { index: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("note store: {0}")]
    Notes(#[from] NoteError),
}

/// The consent change an audit entry records, if it records one: `Some(Err(()))` for a
/// consent entry that cannot be read as one.
fn logged_change(entry: &Entry) -> Option<Result<LoggedChange, ()>> {
    if !matches!(
        entry.kind,
        EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn
    ) {
        return None;
    }
    let change = || -> Option<LoggedChange> {
        let consent = entry.consent.as_ref()?;
        let id: ConsentId = consent.id.parse().ok()?;
        Some(match entry.kind {
            EntryKind::ConsentGranted => LoggedChange::Granted {
                id,
                version: consent.version,
                record_sha256: consent.record_sha256,
            },
            _ => {
                let actor = entry.actor.as_ref()?;
                LoggedChange::Withdrawn {
                    id,
                    version: consent.version,
                    by: Actor {
                        orgnr: actor.orgnr.parse().ok()?,
                        user_id: actor.user_id.clone(),
                        role: actor.role.parse().ok()?,
                    },
                    at: Timestamp(entry.time_micros),
                }
            }
        })
    };
    Some(change().ok_or(()))
}

/// Replays into the stores every consent change, note acknowledgement and note purge in the
/// log's entries from the `reconciled_through` mark to the log's end, then moves the mark to
/// the end (durably). `retention`: how long an acknowledged note's body is kept.
///
/// # Errors
/// An entry cannot be read, or a store cannot be written.
pub fn stores(
    log: &AuditLog,
    store: &ConsentStore,
    notes: &NoteStore,
    retention: std::time::Duration,
) -> Result<Summary, ReconcileError> {
    let to = log.size();
    let from = store.reconciled_through()?.min(to);
    let mut summary = Summary {
        from,
        to,
        ..Summary::default()
    };
    for index in from..to {
        let bytes = log.entry(index).map_err(|e| ReconcileError::Log {
            index,
            reason: e.to_string(),
        })?;
        // Only the entries of store changes are decoded in full.
        if !matches!(
            Entry::kind_of(&bytes),
            Some(
                EntryKind::ConsentGranted
                    | EntryKind::ConsentWithdrawn
                    | EntryKind::NoteAcknowledged
                    | EntryKind::NotePurged
            ) | None
        ) {
            continue;
        }
        let Ok(entry) = Entry::decode(&bytes) else {
            continue;
        };
        if finish_note_change(&entry, notes, retention)? {
            match entry.kind {
                EntryKind::NoteAcknowledged => summary.acknowledgements_finished += 1,
                _ => summary.purges_finished += 1,
            }
            continue;
        }
        let Some(change) = logged_change(&entry) else {
            continue;
        };
        summary.changes += 1;
        let Ok(change) = change else {
            tracing::error!(
                index,
                "audit entry of a consent change names no readable consent"
            );
            summary.unreadable += 1;
            continue;
        };
        match store.reconcile(&change)? {
            Reconciled::InStore => {}
            Reconciled::WithdrawalReapplied => {
                if let LoggedChange::Withdrawn { id, .. } = &change {
                    tracing::warn!(
                        index,
                        consent_id = %id,
                        "the consent store had lost a withdrawal the audit log holds; applied again"
                    );
                    summary.withdrawals_reapplied.push(*id);
                }
            }
            Reconciled::GrantLost {
                previous_superseded,
            } => {
                tracing::error!(
                    index,
                    previous_superseded,
                    "the consent store lacks a grant the audit log holds; it stays refused"
                );
                summary.grants_lost += 1;
                summary.superseded += u64::from(previous_superseded);
            }
            Reconciled::Different => {
                tracing::error!(
                    index,
                    "the consent store holds a version whose content differs from the audit log's hash"
                );
                summary.different += 1;
            }
            Reconciled::WithdrawnNotHeld => summary.withdrawn_not_held += 1,
        }
    }
    if to != from {
        store.set_reconciled_through(to)?;
    }
    Ok(summary)
}

/// Makes the note acknowledgement or purge `entry` records, if the note store has not made it
/// (the entry is written first): `Ok(true)` when it did so now.
fn finish_note_change(
    entry: &Entry,
    notes: &NoteStore,
    retention: std::time::Duration,
) -> Result<bool, NoteError> {
    let wanted = match entry.kind {
        EntryKind::NoteAcknowledged => NoteState::Acknowledged,
        EntryKind::NotePurged => NoteState::Purged,
        _ => return Ok(false),
    };
    let Some(id) = entry
        .disclosure_id
        .as_deref()
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
    else {
        return Ok(false);
    };
    let note = match notes.get(&id) {
        Ok(note) => note,
        // Forgotten after its purge: nothing left to do.
        Err(NoteError::NotFound) => return Ok(false),
        Err(e) => return Err(e),
    };
    if note.state >= wanted {
        return Ok(false);
    }
    match wanted {
        NoteState::Acknowledged => {
            let at = Timestamp(entry.time_micros);
            let purge_after = crate::services::disclosure::purge_after(at, retention);
            notes.acknowledge(&id, at, purge_after)?;
        }
        _ => {
            notes.purge(&id)?;
        }
    }
    Ok(true)
}

/// Moves the reconciliation mark to the audit log's size while no store change is between its
/// audit entry and its store write ([`crate::audit::Audit::quiet_size`]): every change the
/// log holds below it is then in its store.
///
/// # Errors
/// The consent store cannot be written.
pub async fn mark(store: &ConsentStore, audit: &crate::audit::Audit) -> Result<u64, StoreError> {
    let (_quiet, size) = audit.quiet_size().await;
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.set_reconciled_through(size))
        .await
        .unwrap_or_else(|_| Err(StoreError::Corrupt("store task failed".into())))?;
    Ok(size)
}

/// Purges the notes still waiting under each consent whose withdrawal was applied again, as
/// the withdrawal itself would have (`note purged`, reason `consent_withdrawn`, audited with
/// no actor: the gateway acted; the entry first). Returns how many were purged.
///
/// # Errors
/// The note store or the audit log fails.
pub fn purge_withdrawn(
    notes: &NoteStore,
    audit: &crate::audit::Audit,
    withdrawn: &[ConsentId],
) -> Result<u64, String> {
    let mut purged = 0;
    for id in withdrawn {
        for note in notes.undelivered_for(id).map_err(|e| e.to_string())? {
            let mut entry =
                crate::services::disclosure::note_entry(EntryKind::NotePurged, None, &note);
            entry.reason = Some("consent_withdrawn".to_owned());
            audit.append_blocking(&entry).map_err(|e| e.to_string())?;
            notes.purge(&note.id).map_err(|e| e.to_string())?;
            purged += 1;
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use casegate_audit::entry::{Actor as EntryActor, ConsentRef};

    use super::*;

    #[test]
    fn only_consent_entries_with_a_readable_consent_are_changes() {
        let mut granted = Entry::new(EntryKind::ConsentGranted, 7);
        assert_eq!(logged_change(&granted), Some(Err(())), "no consent named");
        let id = ConsentId::generate();
        granted.consent = Some(ConsentRef {
            id: id.to_string(),
            version: 2,
            record_sha256: [3; 32],
        });
        assert_eq!(
            logged_change(&granted),
            Some(Ok(LoggedChange::Granted {
                id,
                version: 2,
                record_sha256: [3; 32]
            }))
        );
        let mut withdrawn = granted.clone();
        withdrawn.kind = EntryKind::ConsentWithdrawn;
        assert_eq!(logged_change(&withdrawn), Some(Err(())), "no actor named");
        withdrawn.actor = Some(EntryActor {
            orgnr: "910000071".into(),
            user_id: "js".into(),
            role: "jobseeker".into(),
            cert_sha256: [0; 32],
        });
        match logged_change(&withdrawn) {
            Some(Ok(LoggedChange::Withdrawn {
                version, by, at, ..
            })) => {
                assert_eq!((version, at), (2, Timestamp(7)));
                assert_eq!(by.orgnr.to_string(), "910000071");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            logged_change(&Entry::new(EntryKind::NoteDelivered, 7)),
            None
        );
    }
}
