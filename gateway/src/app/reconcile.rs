//! Start-up reconciliation of the other stores against the audit log.
//!
//! The audit log is the one record synced with every batch before anyone is answered, so at
//! start it is the truth the consent and note stores are brought in line with:
//! - every consent change the log holds (grants, supersessions, withdrawals) that the consent
//!   store lacks is replayed ([`casegate_consent::store::ConsentStore::reconcile`]): a
//!   withdrawal the store forgot is applied again and the notes still waiting under it are
//!   purged (audited); a grant whose record content was lost stays refused and is reported;
//! - every note acknowledgement and purge the log holds that the note store lacks is finished
//!   (they are written entry first, so a crash can leave exactly that).
//!
//! Only the entries from the `reconciled_through` mark (kept in the consent store) on are
//! read. The mark moves to the log's end while no store change is between its entry and its
//! store write ([`mark`]): every 10 s and at shutdown, so a start after a clean shutdown reads
//! no entry and one after a crash at most some seconds' worth.

use casegate_audit::{
    entry::{Entry, EntryKind, Event},
    storage::VerifiableLog,
};
use casegate_consent::{
    record::{Actor, ConsentId, Timestamp},
    storage::ConsentStorage,
    store::{LoggedChange, LostGrants, Reconciled, StoreError},
};

use crate::app::notes::{NoteError, NoteState, NoteStorage};

/// What reconciling the consent store found, for the start-up log line and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Audit entries read: `[from, to)`. `from` is the `reconciled_through` mark (0 without
    /// one).
    pub from: u64,
    /// The log's size when reconciliation began: where the mark may move once the summary's
    /// follow-up is done.
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
    /// Note deliveries in the log that the note store had not recorded, now recorded.
    pub deliveries_finished: u64,
    /// No mark was found: the whole log was read, and lost grants only reported (a log
    /// written before reconciliation existed holds grants whose calls failed).
    pub first: bool,
}

impl Summary {
    /// Sets the gauges of what reconciling the stores with the audit log found at this start
    /// (`casegate_consent_reconciliation_at_start` by outcome, and
    /// `casegate_consent_reconciliation_entries_read`): losses the consent store had (each
    /// should be zero), and note changes finished after a crash (see `deploy/README.md`).
    pub fn record_metrics(&self) {
        let set = |outcome: &'static str, n: u64| {
            metrics::gauge!("casegate_consent_reconciliation_at_start", "outcome" => outcome)
                .set(n as f64);
        };
        set(
            "withdrawal_reapplied",
            self.withdrawals_reapplied.len() as u64,
        );
        set("grant_lost", self.grants_lost);
        set("superseded", self.superseded);
        set("different", self.different);
        set("withdrawn_not_held", self.withdrawn_not_held);
        set("unreadable", self.unreadable);
        set("acknowledgement_finished", self.acknowledgements_finished);
        set("purge_finished", self.purges_finished);
        set("delivery_finished", self.deliveries_finished);
        metrics::gauge!("casegate_consent_reconciliation_entries_read")
            .set(self.to.saturating_sub(self.from) as f64);
    }

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
    /// An entry's bytes could not be read from the log.
    #[error("reading audit entry {index}: {reason}")]
    Log {
        /// The entry's index in the log.
        index: u64,
        /// The log's error.
        reason: String,
    },
    /// The consent store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The note store could not be read or written.
    #[error("note store: {0}")]
    Notes(#[from] NoteError),
    /// A purge's audit entry could not be appended.
    #[error("audit log: {0}")]
    Append(#[from] casegate_audit::log::AppendError),
}

/// The consent change an audit entry records, if it records one: `Some(Err(()))` for a
/// consent entry that cannot be read as one.
fn logged_change(entry: &Entry) -> Option<Result<LoggedChange, ()>> {
    let change = match &entry.event {
        Event::ConsentGranted(c) => c.consent.id.parse().ok().map(|id| LoggedChange::Granted {
            id,
            version: c.consent.version,
            record_sha256: c.consent.record_sha256,
        }),
        Event::ConsentWithdrawn(c) => (|| {
            Some(LoggedChange::Withdrawn {
                id: c.consent.id.parse().ok()?,
                version: c.consent.version,
                by: Actor {
                    orgnr: c.actor.orgnr.parse().ok()?,
                    user_id: c.actor.user_id.clone(),
                    role: c.actor.role.parse().ok()?,
                },
                at: Timestamp(entry.time_micros),
            })
        })(),
        Event::Unfitted(u)
            if matches!(
                u.kind,
                EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn
            ) =>
        {
            None
        }
        _ => return None,
    };
    Some(change.ok_or(()))
}

/// Replays into the stores every consent change, note delivery, acknowledgement and purge in
/// the log's entries from the `reconciled_through` mark to the log's end. `retention`: how
/// long an acknowledged note's body is kept. The caller moves the mark to `summary.to` once
/// what follows from the summary (purging under re-applied withdrawals) is done.
///
/// # Errors
/// An entry cannot be read, or a store cannot be written.
pub fn stores(
    log: &dyn VerifiableLog,
    store: &dyn ConsentStorage,
    notes: &dyn NoteStorage,
    retention: std::time::Duration,
) -> Result<Summary, ReconcileError> {
    let to = log.size();
    // A mark past the log's end (a log restored from an older copy) says nothing about this
    // log: read it all, as the first time.
    let mark = store.reconciled_through()?.filter(|&mark| mark <= to);
    let from = mark.unwrap_or(0);
    let mut summary = Summary {
        from,
        to,
        first: mark.is_none(),
        ..Summary::default()
    };
    let lost_grants = if summary.first {
        LostGrants::Report
    } else {
        LostGrants::Supersede
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
                    | EntryKind::NoteDelivered
                    | EntryKind::NoteAcknowledged
                    | EntryKind::NotePurged
            ) | None
        ) {
            continue;
        }
        let Ok(entry) = Entry::decode(&bytes) else {
            tracing::error!(index, "audit entry of a store change cannot be decoded");
            summary.unreadable += 1;
            continue;
        };
        if finish_note_change(&entry, notes, retention)? {
            match entry.kind() {
                EntryKind::NoteAcknowledged => summary.acknowledgements_finished += 1,
                EntryKind::NoteDelivered => summary.deliveries_finished += 1,
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
        match store.reconcile(&change, lost_grants)? {
            Reconciled::InStore => {}
            Reconciled::WithdrawalReapplied => {
                if let LoggedChange::Withdrawn { id, .. } = &change {
                    tracing::warn!(
                        index,
                        "the consent store had lost a withdrawal the audit log holds (its entry \
                         is at this index); applied again"
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
    notes.flush()?;
    Ok(summary)
}

/// Makes the note acknowledgement or purge `entry` records, if the note store has not made it
/// (the entry is written first): `Ok(true)` when it did so now.
fn finish_note_change(
    entry: &Entry,
    notes: &dyn NoteStorage,
    retention: std::time::Duration,
) -> Result<bool, NoteError> {
    // Kind and note id are all it takes: an entry of a note change that fits no typed event
    // (an older form) is finished all the same.
    let wanted = match entry.kind() {
        EntryKind::NoteDelivered => NoteState::Deliverable,
        EntryKind::NoteAcknowledged => NoteState::Acknowledged,
        EntryKind::NotePurged => NoteState::Purged,
        _ => return Ok(false),
    };
    let Some(id) = entry
        .disclosure_id()
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
    if wanted == NoteState::Deliverable {
        // Recorded after its entry and flushed with later writes: a cut can lose it, and a
        // note delivered is never purged as undelivered.
        if note.delivered {
            return Ok(false);
        }
        notes.mark_delivered(&id)?;
        return Ok(true);
    }
    if note.state >= wanted {
        return Ok(false);
    }
    match wanted {
        // Acknowledged only from the inbox (a pending note was never delivered).
        NoteState::Acknowledged if note.state != NoteState::Deliverable => return Ok(false),
        NoteState::Acknowledged => {
            let at = Timestamp(entry.time_micros);
            let purge_after = crate::app::notes::purge_after(at, retention);
            notes.acknowledge(&id, at, purge_after)?;
        }
        _ => {
            notes.purge(&id)?;
        }
    }
    Ok(true)
}

/// Moves the reconciliation mark to the audit log's size while no store change is between its
/// audit entry and its store write (`Audit::quiet_size`): every change the
/// log holds below it is then in its store.
///
/// # Errors
/// The consent store cannot be written.
pub async fn mark(
    store: &crate::app::Consents,
    audit: &crate::app::audit::Audit,
) -> Result<u64, StoreError> {
    let size = audit.quiet_size().await;
    let store = store.clone();
    crate::base::blocking::run(move || store.set_reconciled_through(size))
        .await
        .unwrap_or_else(|e| Err(crate::app::consent_task_failed(&e)))?;
    Ok(size)
}

/// Purges the notes still waiting under each consent whose withdrawal was applied again, as
/// the withdrawal itself would have (`note purged`, reason `consent_withdrawn`, audited with
/// no actor: the gateway acted; the entry first). Returns how many were purged.
///
/// # Errors
/// The note store or the audit log fails.
pub fn purge_withdrawn(
    notes: &dyn NoteStorage,
    audit: &crate::app::audit::Audit,
    withdrawn: &[ConsentId],
) -> Result<u64, ReconcileError> {
    let mut purged = 0;
    for id in withdrawn {
        for note in notes.undelivered_for(id)? {
            let entry = crate::app::audit::purge_entry(&note, None, "consent_withdrawn");
            audit.append_blocking(&entry)?;
            notes.purge(&note.id)?;
            purged += 1;
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use casegate_audit::{
        checkpoint::Signer,
        entry::{Actor as EntryActor, ConsentChange, ConsentRef, Fields},
        log::LogOptions,
    };
    use casegate_consent::{
        SubjectId,
        record::{ConsentRecord, Evidence, NewConsent, Party, Period, Provision, Status},
    };

    use casegate_audit::log::AuditLog;
    use casegate_consent::store::ConsentStore;

    use crate::app::notes::NoteStore;

    use super::*;
    use crate::app::notes::Note;
    use casegate_notes::storage::model::deliverable;

    const ORIGIN: &str = "casegate.test/audit";
    const NOW: i64 = 1_800_000_000_000_000;
    const NAV: &str = "910000071";
    const IPS: &str = "910000063";

    fn new_consent(subject: SubjectId) -> NewConsent {
        let party = |orgnr: &str| Party {
            orgnr: orgnr.parse().expect("orgnr"),
            roles: BTreeSet::new(),
        };
        NewConsent {
            subject,
            recorded_by: actor(),
            provisions: vec![Provision {
                senders: vec![party(NAV)],
                recipients: vec![party(IPS)],
                categories: ["benefit_counselling".parse().expect("term")].into(),
                purposes: ["ips_follow_up".parse().expect("term")].into(),
            }],
            period: Period {
                start: Timestamp(NOW),
                end: Timestamp(NOW + 86_400_000_000),
            },
            evidence: Evidence::SignedForm {
                sha256: [1; 32],
                reference: "form-1".into(),
            },
        }
    }

    fn actor() -> Actor {
        Actor {
            orgnr: NAV.parse().expect("orgnr"),
            user_id: "nav-1".into(),
            role: casegate_consent::Role::NavCounsellor,
        }
    }

    fn change(record: &ConsentRecord) -> ConsentChange {
        ConsentChange {
            actor: EntryActor {
                orgnr: NAV.into(),
                user_id: "nav-1".into(),
                role: "nav_counsellor".into(),
                cert_sha256: [0; 32],
            },
            subject_pseudonym: [9; 32],
            consent: ConsentRef {
                id: record.id.to_string(),
                version: record.version,
                record_sha256: record.record_hash(),
            },
            policy_version: "casegate-policy-2".into(),
            login: None,
        }
    }

    fn consent_entry(
        event: fn(ConsentChange) -> Event,
        time: i64,
        record: &ConsentRecord,
    ) -> Vec<u8> {
        Entry::new(time, event(change(record)))
            .encode()
            .expect("encodes")
    }

    /// An entry of a note change naming only the note (as an older form might): reconciliation
    /// needs no more.
    fn note_entry(kind: EntryKind, time: i64, note: &Note) -> Vec<u8> {
        let fields = Fields {
            disclosure_id: Some(note.id.to_string()),
            ..Fields::default()
        };
        Entry::from_fields(kind, time, fields)
            .encode()
            .expect("encodes")
    }

    #[test]
    fn the_log_is_replayed_into_the_stores_from_the_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = AuditLog::open(
            &dir.path().join("audit"),
            Signer::generate(ORIGIN).expect("key"),
            LogOptions::new(ORIGIN),
        )
        .expect("log");
        let consents = ConsentStore::open(&dir.path().join("consents")).expect("consents");
        let notes = NoteStore::open(&dir.path().join("notes")).expect("notes");
        let mut subjects = SubjectId::synthetic_all();
        let mut subject = || subjects.next().expect("subject");
        let now = Timestamp(NOW);

        // In the store and withdrawn in the log only.
        let withdrawn = consents
            .prepare_grant(new_consent(subject()), None, now)
            .expect("prepare");
        consents.commit_grant(&withdrawn).expect("grant");
        // Version 1 in the store; version 2 granted in the log only.
        let v1 = consents
            .prepare_grant(new_consent(subject()), None, now)
            .expect("prepare");
        consents.commit_grant(&v1).expect("grant");
        let v2 = consents
            .prepare_grant(new_consent(v1.subject), Some(v1.id), now)
            .expect("prepare v2");
        let (delivered, acknowledged, purged) = (
            deliverable(&notes, 1),
            deliverable(&notes, 2),
            deliverable(&notes, 3),
        );
        for (i, bytes) in [
            consent_entry(Event::ConsentGranted, NOW + 1, &withdrawn),
            consent_entry(Event::ConsentGranted, NOW + 2, &v1),
            consent_entry(Event::ConsentGranted, NOW + 3, &v2),
            consent_entry(Event::ConsentWithdrawn, NOW + 4, &withdrawn),
            note_entry(EntryKind::NoteDelivered, NOW + 5, &delivered),
            note_entry(EntryKind::NoteAcknowledged, NOW + 6, &acknowledged),
            note_entry(EntryKind::NotePurged, NOW + 7, &purged),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(log.append_blocking(bytes).expect("append").index, i as u64);
        }

        // The first reconciliation of this folder: the whole log, lost grants only reported.
        let first =
            stores(&log, &consents, &notes, std::time::Duration::from_secs(60)).expect("reconcile");
        assert!(first.first);
        assert_eq!((first.from, first.to, first.changes), (0, 7, 4));
        assert_eq!(first.withdrawals_reapplied, [withdrawn.id]);
        assert_eq!((first.grants_lost, first.superseded), (1, 0));
        assert_eq!(
            (
                first.deliveries_finished,
                first.acknowledgements_finished,
                first.purges_finished
            ),
            (1, 1, 1)
        );
        assert_eq!(
            consents.get(&withdrawn.id, None).expect("get").status,
            Status::Withdrawn
        );
        assert_eq!(
            consents.get(&v1.id, None).expect("get").status,
            Status::Active
        );
        assert!(notes.get(&delivered.id).expect("note").delivered);
        let acked = notes.get(&acknowledged.id).expect("note");
        assert_eq!(acked.state, NoteState::Acknowledged);
        assert_eq!(acked.acknowledged_at, Some(Timestamp(NOW + 6)));
        assert_eq!(
            notes.get(&purged.id).expect("note").state,
            NoteState::Purged
        );

        // With a mark (here from the start): the lost version 2 supersedes version 1, and what
        // was replayed before is found in the stores.
        consents.set_reconciled_through(0).expect("mark");
        let again =
            stores(&log, &consents, &notes, std::time::Duration::from_secs(60)).expect("reconcile");
        assert!(!again.first);
        assert_eq!((again.grants_lost, again.superseded), (1, 1));
        assert!(again.withdrawals_reapplied.is_empty());
        assert_eq!(
            again.deliveries_finished + again.acknowledgements_finished + again.purges_finished,
            0
        );
        assert_eq!(
            consents.get(&v1.id, None).expect("get").status,
            Status::Superseded
        );

        // From the end: nothing is read.
        consents.set_reconciled_through(7).expect("mark");
        let clean =
            stores(&log, &consents, &notes, std::time::Duration::from_secs(60)).expect("reconcile");
        assert_eq!((clean.from, clean.to, clean.changes), (7, 7, 0));
    }

    #[test]
    fn only_consent_entries_with_a_readable_consent_are_changes() {
        let unnamed = Entry::from_fields(EntryKind::ConsentGranted, 7, Fields::default());
        assert_eq!(logged_change(&unnamed), Some(Err(())), "no consent named");
        let id = ConsentId::generate();
        let mut change = ConsentChange {
            actor: EntryActor {
                orgnr: "910000071".into(),
                user_id: "js".into(),
                role: "jobseeker".into(),
                cert_sha256: [0; 32],
            },
            subject_pseudonym: [1; 32],
            consent: ConsentRef {
                id: id.to_string(),
                version: 2,
                record_sha256: [3; 32],
            },
            policy_version: "casegate-policy-2".into(),
            login: None,
        };
        assert_eq!(
            logged_change(&Entry::new(7, Event::ConsentGranted(change.clone()))),
            Some(Ok(LoggedChange::Granted {
                id,
                version: 2,
                record_sha256: [3; 32]
            }))
        );
        match logged_change(&Entry::new(7, Event::ConsentWithdrawn(change.clone()))) {
            Some(Ok(LoggedChange::Withdrawn {
                version, by, at, ..
            })) => {
                assert_eq!((version, at), (2, Timestamp(7)));
                assert_eq!(by.orgnr.to_string(), "910000071");
            }
            other => panic!("{other:?}"),
        }
        change.actor.role = "pilot".into();
        assert_eq!(
            logged_change(&Entry::new(7, Event::ConsentWithdrawn(change))),
            Some(Err(())),
            "no role named"
        );
        assert_eq!(
            logged_change(&Entry::from_fields(
                EntryKind::NoteDelivered,
                7,
                Fields::default()
            )),
            None
        );
    }
}
