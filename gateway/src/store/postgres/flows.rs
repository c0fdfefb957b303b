//! The cross-replica flows (DESIGN §7) as single transactions: each decides, changes state and
//! queues its audit entries in one commit, then waits for the entries' indexes, so no replica
//! decides or delivers on a withdrawn consent once the withdrawal commits, and nothing is
//! acknowledged before it is committed.
//!
//! - [`Flows::disclose`]: the sender's request id checked (unique per sender across replicas),
//!   the decision taken under a share lock on the subject's consent row, the note stored
//!   pending and its `disclosure permitted` entry queued with it (the batch that logs the
//!   entry makes the note deliverable) — or the refusal's entry queued, nothing stored.
//! - [`Flows::withdraw`]: the subject's row locked, the consent's newest version withdrawn,
//!   every undelivered note relying on it purged, the withdrawal's and the purges' entries
//!   queued — one commit.
//! - [`Flows::grant`] and [`Flows::acknowledge`]: the change and its entry, one commit.
//! - [`Flows::deliver`]: a note delivered only if its consent, read under the same share lock,
//!   still covers it (else withheld and purged), with its entry.
//! - [`Flows::sweep`]: notes past their retention or TTL purged with their entries, each by
//!   exactly one replica (`SKIP LOCKED`).
//!
//! Entry bytes are the caller's (the workflows build the events); each transaction is retried
//! ([`Database::retrying`]) on a serialization failure, a deadlock, or a request id taken
//! meanwhile by another replica (then answered as a repeat).

use std::sync::Arc;

use casegate_audit::{
    entry::EncodeError,
    log::{AppendError, Appended},
};
use casegate_consent::{
    OrgNumber, SubjectId, Vocabulary,
    decision::{Decision, Deny, DisclosureRequest},
    record::{Actor, ConsentId, ConsentRecord, Evidence, Timestamp},
    store::{self, StoreError},
};
use casegate_notes::{Existing, Expiry, Note, NoteError, NoteState};
use uuid::Uuid;

use super::Prepared as _;
use super::{
    Database, DatabaseError, Failure,
    audit::{AuditLog, QueueError},
    consents::{self, Consents},
    notes,
};

/// Why a flow did not complete. Nothing it would have changed is changed, except where its
/// commit succeeded and waiting for its entries failed ([`FlowError::Append`]): then the
/// entries are queued and will be logged.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// A consent rule refused it (unknown consent, already withdrawn, an unreadable record).
    #[error(transparent)]
    Consent(StoreError),
    /// A note could not be stored or read.
    #[error(transparent)]
    Note(NoteError),
    /// The entries were committed but this replica could not wait for their indexes.
    #[error(transparent)]
    Append(AppendError),
    /// An event has no canonical encoding (a text field too long, or ambiguous): nothing
    /// was committed.
    #[error("an audit entry could not be encoded: {0}")]
    Entry(#[from] EncodeError),
    /// The database failed.
    #[error(transparent)]
    Database(DatabaseError),
}

impl From<tokio_postgres::Error> for FlowError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.into())
    }
}

impl From<DatabaseError> for FlowError {
    fn from(e: DatabaseError) -> Self {
        Self::Database(e)
    }
}

impl From<QueueError> for FlowError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::TooLarge(n) => Self::Append(AppendError::TooLarge(n)),
            QueueError::Database(e) => Self::Database(e),
        }
    }
}

impl From<consents::Failure> for FlowError {
    fn from(e: consents::Failure) -> Self {
        match e {
            Failure::Rule(e) => Self::Consent(e),
            Failure::Database(e) => Self::Database(e),
        }
    }
}

impl From<notes::Failure> for FlowError {
    fn from(e: notes::Failure) -> Self {
        match e {
            Failure::Rule(e) => Self::Note(e),
            Failure::Database(e) => Self::Database(e),
        }
    }
}

impl super::Conflict for FlowError {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Database(e) if e.is_conflict())
    }
}

/// A disclosure attempt's failure: the flow's, or its request id taken by another
/// replica's commit meanwhile (tried again: the next attempt answers it as a repeat).
#[derive(Debug)]
enum Lost {
    Flow(FlowError),
    Taken,
}

impl super::Conflict for Lost {
    fn is_conflict(&self) -> bool {
        match self {
            Self::Flow(e) => super::Conflict::is_conflict(e),
            Self::Taken => true,
        }
    }
}

impl<E: Into<FlowError>> From<E> for Lost {
    fn from(e: E) -> Self {
        Self::Flow(e.into())
    }
}

/// What [`Flows::disclose`] did.
#[derive(Debug)]
pub enum Disclosure {
    /// Permitted: the note is stored and deliverable, its entry logged.
    Permitted {
        /// The note's id.
        note: Uuid,
        /// Its `disclosure permitted` entry.
        appended: Appended,
    },
    /// Refused by the decision: nothing stored, the refusal logged.
    Refused {
        /// Why.
        deny: Deny,
        /// Its `disclosure refused` entry.
        appended: Appended,
    },
    /// The sender used this request id before (on any replica), for `existing`; the first
    /// disclosure's entry, once logged.
    Repeated {
        /// The note and fingerprint of the first request.
        existing: Existing,
        /// Its `disclosure permitted` entry.
        appended: Appended,
    },
}

/// What [`Flows::withdraw`] did.
#[derive(Debug)]
pub struct Withdrawn {
    /// The consent's version, withdrawn.
    pub record: ConsentRecord,
    /// The notes purged with it (undelivered, relying on it), as stored after.
    pub purged: Vec<Note>,
    /// The withdrawal's entry.
    pub appended: Appended,
}

/// The flows of one replica.
#[derive(Debug, Clone)]
pub struct Flows {
    db: Database,
    log: Arc<AuditLog>,
    consents: Consents,
}

/// How a disclosure is recorded: its entry's bytes and, when permitted, the pending note to
/// store — built from the decision (the note and the entry name the consent it relied on)
/// and, for a refusal, the consent version nearest to permitting it.
pub type Record<'a> = dyn Fn(&Decision, Option<&ConsentRecord>) -> Result<(Vec<u8>, Option<Note>), EncodeError>
    + Send
    + Sync
    + 'a;

/// An entry's canonical bytes, or why the event has none (nothing is then committed).
pub type Encoded = Result<Vec<u8>, EncodeError>;

/// How a withdrawal is recorded: the withdrawal's entry, then one entry per purged note.
pub type WithdrawalRecord<'a> =
    dyn Fn(&ConsentRecord, &[Note]) -> Result<Vec<Vec<u8>>, EncodeError> + Send + Sync + 'a;

impl Flows {
    /// The flows over `db`, logging to `log`, with consents keyed as `consents` keys them.
    pub fn new(db: Database, log: Arc<AuditLog>, consents: Consents) -> Self {
        Self { db, log, consents }
    }

    /// Decides `request` about `subject` at `at` and records it in one transaction (see the
    /// module), then waits for its entry. A request id of `sender`'s used before — on any
    /// replica — is answered as [`Disclosure::Repeated`] with the first one's entry.
    ///
    /// # Errors
    /// [`FlowError`]; nothing is stored unless the commit succeeded.
    pub async fn disclose(
        &self,
        subject: &SubjectId,
        request: &DisclosureRequest,
        at: Timestamp,
        vocabulary: &Vocabulary,
        request_id: &str,
        record: &Record<'_>,
    ) -> Result<Disclosure, FlowError> {
        let key = self.consents.key(subject);
        let sender = request.sender_org;
        let attempt = self
            .db
            .retrying(|| {
                self.try_disclose(&key, request, at, vocabulary, sender, request_id, record)
            })
            .await;
        match attempt {
            Ok(Attempt::Queued(queued, decision)) => {
                let appended = self.log.wait(queued).await.map_err(FlowError::Append)?;
                Ok(match decision {
                    Decided::Permitted(note) => Disclosure::Permitted { note, appended },
                    Decided::Refused(deny) => Disclosure::Refused { deny, appended },
                })
            }
            Ok(Attempt::Repeated(existing)) => self.repeated(existing).await,
            Err(Lost::Flow(e)) => Err(e),
            Err(Lost::Taken) => Err(FlowError::Note(NoteError::Failed(
                "a request id kept being taken by other replicas".into(),
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_disclose(
        &self,
        key: &[u8],
        request: &DisclosureRequest,
        at: Timestamp,
        vocabulary: &Vocabulary,
        sender: OrgNumber,
        request_id: &str,
        record: &Record<'_>,
    ) -> Result<Attempt, Lost> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        if let Some(existing) = used(&tx, sender, request_id).await? {
            return Ok(Attempt::Repeated(existing));
        }
        let (decision, nearest) =
            consents::decide_in(&tx, &self.consents, key, request, at, vocabulary).await?;
        let (entry, note) = record(&decision, nearest.as_ref()).map_err(FlowError::from)?;
        let decided = match (&decision, &note) {
            (Decision::Permit(_), Some(note)) => {
                match notes::insert(&tx, note).await {
                    Ok(()) => {}
                    Err(Failure::Rule(_)) => return Err(Lost::Taken),
                    Err(e) => return Err(e.into()),
                }
                Decided::Permitted(note.id)
            }
            (Decision::Deny(deny), None) => Decided::Refused(deny.clone()),
            _ => {
                return Err(FlowError::Note(NoteError::Failed(
                    "a permitted disclosure is recorded with its note, a refused one without"
                        .into(),
                ))
                .into());
            }
        };
        let queued = AuditLog::enqueue(&tx, &entry, note.as_ref().map(|n| n.id)).await?;
        tx.commit().await?;
        Ok(Attempt::Queued(queued, decided))
    }

    /// The first disclosure's entry, for a repeated request id: waited for if it is still
    /// queued.
    async fn repeated(&self, existing: Existing) -> Result<Disclosure, FlowError> {
        let queued = self
            .log
            .queued_for_note(existing.id)
            .await?
            .ok_or_else(|| {
                FlowError::Note(NoteError::Corrupt(format!(
                    "note {} has no disclosure entry queued or logged",
                    existing.id
                )))
            })?;
        let appended = self.log.wait(queued).await.map_err(FlowError::Append)?;
        Ok(Disclosure::Repeated { existing, appended })
    }

    /// Withdraws the newest version of consent `id` and purges every undelivered note
    /// relying on it, in one transaction under the subject's lock (see the module); then
    /// waits for the entries. With `visible`, the newest version — read under the lock —
    /// must be one the caller may see, else nothing changes and the answer is
    /// [`StoreError::NotFound`] (the same as for a consent that does not exist).
    ///
    /// # Errors
    /// [`FlowError::Consent`] with [`StoreError::NotFound`] or
    /// [`StoreError::AlreadyWithdrawn`]; a database failure (nothing changed).
    #[allow(clippy::too_many_arguments)]
    pub async fn withdraw(
        &self,
        id: &ConsentId,
        visible: Option<&(dyn Fn(&ConsentRecord) -> bool + Send + Sync)>,
        by: Actor,
        reason: Option<String>,
        evidence: Option<Evidence>,
        now: Timestamp,
        record: &WithdrawalRecord<'_>,
    ) -> Result<Withdrawn, FlowError> {
        let attempt = self
            .db
            .retrying(|| async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                let (withdrawn, _) = consents::restate_in(&tx, &self.consents, id, None, |r| {
                    if visible.is_some_and(|may| !may(r)) {
                        // Superseded since the caller looked, by a version they may not see.
                        return Err(StoreError::NotFound);
                    }
                    store::withdraw(r, by.clone(), reason.clone(), evidence.clone(), now)
                        .map(|()| true)
                })
                .await?;
                let undelivered = tx
                    .query_cached(
                        "SELECT id FROM casegate_note
                         WHERE consent_id = $1 AND state IN (0, 1) AND NOT delivered
                         ORDER BY id FOR UPDATE",
                        &[&Uuid::from_bytes(*id.as_bytes())],
                    )
                    .await?;
                let mut purged = Vec::with_capacity(undelivered.len());
                for row in &undelivered {
                    let note_id: Uuid = row.get(0);
                    purged.push(notes::advance_in(&tx, &note_id, |n| notes::purged(n, now)).await?);
                }
                let mut queued = Vec::new();
                for entry in record(&withdrawn, &purged)? {
                    queued.push(AuditLog::enqueue(&tx, &entry, None).await?);
                }
                tx.commit().await?;
                Ok::<_, FlowError>((withdrawn, purged, queued))
            })
            .await;
        let (record, purged, queued) = attempt?;
        let mut appended = None;
        for id in queued {
            let done = self.log.wait(id).await.map_err(FlowError::Append)?;
            appended.get_or_insert(done);
        }
        let appended = appended.ok_or(FlowError::Append(AppendError::Failed(
            "a withdrawal is recorded with its entry".into(),
        )))?;
        Ok(Withdrawn {
            record,
            purged,
            appended,
        })
    }
}

impl Flows {
    /// Purges up to `max` notes whose body is due — acknowledged ones whose purge time is at
    /// or before `now`, deliverable ones disclosed at or before `ttl_cutoff` — and queues
    /// each purge's entry (`record`), in one transaction; then waits for the entries. Rows
    /// another replica's sweep holds are skipped (`FOR UPDATE SKIP LOCKED`), so replicas
    /// sweeping together purge each note once. Returns the notes purged and why.
    ///
    /// # Errors
    /// [`FlowError`]; nothing changed unless the commit succeeded.
    pub async fn sweep(
        &self,
        ttl_cutoff: Timestamp,
        now: Timestamp,
        max: usize,
        record: &(dyn Fn(&Note, Expiry) -> Encoded + Send + Sync),
    ) -> Result<Vec<(Note, Expiry)>, FlowError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let attempt = self
            .db
            .retrying(|| async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                let mut due: Vec<(Uuid, Expiry)> = tx
                    .query_cached(
                        "SELECT id FROM casegate_note WHERE state = 2 AND purge_after <= $1
                         ORDER BY purge_after, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                        &[&now.0, &max],
                    )
                    .await?
                    .iter()
                    .map(|row| (row.get(0), Expiry::RetentionElapsed))
                    .collect();
                let left = max - i64::try_from(due.len()).unwrap_or(max);
                if left > 0 {
                    due.extend(
                        tx.query_cached(
                            "SELECT id FROM casegate_note WHERE state = 1 AND disclosed_at <= $1
                             ORDER BY disclosed_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                            &[&ttl_cutoff.0, &left],
                        )
                        .await?
                        .iter()
                        .map(|row| (row.get(0), Expiry::TtlElapsed)),
                    );
                }
                let mut purged = Vec::with_capacity(due.len());
                let mut queued = Vec::with_capacity(due.len());
                for (id, expiry) in due {
                    let (note, changed) =
                        notes::changed_in(&tx, &id, |n| notes::purged(n, now)).await?;
                    if changed {
                        queued.push(AuditLog::enqueue(&tx, &record(&note, expiry)?, None).await?);
                        purged.push((note, expiry));
                    }
                }
                tx.commit().await?;
                Ok::<_, FlowError>((purged, queued))
            })
            .await;
        let (purged, queued) = attempt?;
        for id in queued {
            self.log.wait(id).await.map_err(FlowError::Append)?;
        }
        Ok(purged)
    }
}

impl Flows {
    /// Stores a prepared consent version (superseding the one before it) and queues its
    /// `consent granted` entry, in one transaction under the subject's lock; then waits for
    /// the entry.
    ///
    /// # Errors
    /// [`FlowError::Consent`] with [`StoreError::NotActive`] when the consent changed since
    /// the record was prepared; a database failure (nothing changed).
    pub async fn grant(&self, record: &ConsentRecord, entry: &[u8]) -> Result<Appended, FlowError> {
        let queued = self
            .db
            .retrying(|| async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                consents::commit_grant_in(&tx, &self.consents, record).await?;
                let queued = AuditLog::enqueue(&tx, entry, None).await?;
                tx.commit().await?;
                Ok::<_, FlowError>(queued)
            })
            .await?;
        self.log.wait(queued).await.map_err(FlowError::Append)
    }

    /// Takes deliverable note `id` out of its inbox at `at` (its body kept until
    /// `purge_after`) and queues its `note acknowledged` entry (`entry`), in one
    /// transaction; then waits for the entry. The same acknowledgement again is answered as
    /// the first was, without a second entry (`None`).
    ///
    /// # Errors
    /// [`FlowError::Note`] with [`NoteError::NotDeliverable`] or [`NoteError::NotFound`]; a
    /// database failure (nothing changed).
    pub async fn acknowledge(
        &self,
        id: &Uuid,
        at: Timestamp,
        purge_after: Timestamp,
        entry: &(dyn Fn(&Note) -> Encoded + Send + Sync),
    ) -> Result<(Note, Option<Appended>), FlowError> {
        let (note, queued) = self
            .db
            .retrying(|| async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                let (note, first) =
                    notes::changed_in(&tx, id, |n| notes::acknowledged(n, at, purge_after)).await?;
                if note.state != NoteState::Acknowledged || note.acknowledged_at != Some(at) {
                    return Err(FlowError::Note(NoteError::NotDeliverable(
                        note.state.code(),
                    )));
                }
                let queued = match first {
                    true => Some(AuditLog::enqueue(&tx, &entry(&note)?, None).await?),
                    false => None,
                };
                tx.commit().await?;
                Ok::<_, FlowError>((note, queued))
            })
            .await?;
        let appended = match queued {
            Some(queued) => Some(self.log.wait(queued).await.map_err(FlowError::Append)?),
            None => None,
        };
        Ok((note, appended))
    }
}

/// What [`Flows::deliver`] did.
#[derive(Debug)]
pub enum Delivery {
    /// The consent still covers the note: it is marked delivered, its entry logged.
    Delivered {
        /// The note as stored.
        note: Note,
        /// Its `note delivered` entry.
        appended: Appended,
    },
    /// The consent no longer covers it: withheld and purged, its entry logged.
    Withheld {
        /// The note as stored (purged).
        note: Note,
        /// Why.
        deny: Deny,
        /// Its `note purged` entry.
        appended: Appended,
    },
    /// The note is no longer in the inbox (acknowledged, purged or forgotten meanwhile).
    Gone,
}

impl Flows {
    /// Delivers deliverable note `id`, in one transaction: the note locked, the consent
    /// decision taken again for `recheck` (the note's own terms; the caller opens the sealed
    /// part for the approval) under a share lock on the subject's consent row, then the note
    /// marked delivered with its entry queued — or, refused, purged with its entry queued.
    /// `record` builds the entry from the note and the decision. Waits for the entry.
    ///
    /// # Errors
    /// [`FlowError`]; nothing changed unless the commit succeeded.
    pub async fn deliver(
        &self,
        id: &Uuid,
        recheck: &DisclosureRequest,
        at: Timestamp,
        vocabulary: &Vocabulary,
        record: &(dyn Fn(&Note, &Decision) -> Encoded + Send + Sync),
    ) -> Result<Delivery, FlowError> {
        let attempt = self
            .db
            .retrying(|| async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                // Locks in the order every flow takes them: the subject's consent row, then
                // the note. The note is read first only for its subject's key.
                let Some(row) = tx
                    .query_opt_cached(
                        "SELECT record, progress FROM casegate_note WHERE id = $1 AND state = 1",
                        &[id],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                let pseudonym = notes::note_of(&row)
                    .map_err(FlowError::Note)?
                    .subject_pseudonym;
                let (decision, _) =
                    consents::decide_in(&tx, &self.consents, &pseudonym, recheck, at, vocabulary)
                        .await?;
                let still = |n: &Note| n.state == NoteState::Deliverable;
                let (note, changed) = match &decision {
                    Decision::Permit(_) => {
                        notes::changed_in(&tx, id, |n| {
                            still(n) && !std::mem::replace(&mut n.delivered, true)
                        })
                        .await?
                    }
                    Decision::Deny(_) => {
                        notes::changed_in(&tx, id, |n| still(n) && notes::purged(n, at)).await?
                    }
                };
                let delivering = matches!(decision, Decision::Permit(_)) && still(&note);
                if !(delivering || changed) {
                    // Acknowledged or purged meanwhile.
                    return Ok(None);
                }
                let entry = record(&note, &decision)?;
                let queued = AuditLog::enqueue(&tx, &entry, None).await?;
                tx.commit().await?;
                Ok::<_, FlowError>(Some((note, decision, queued)))
            })
            .await?;
        let Some((note, decision, queued)) = attempt else {
            return Ok(Delivery::Gone);
        };
        let appended = self.log.wait(queued).await.map_err(FlowError::Append)?;
        Ok(match decision {
            Decision::Permit(_) => Delivery::Delivered { note, appended },
            Decision::Deny(deny) => Delivery::Withheld {
                note,
                deny,
                appended,
            },
        })
    }
}

/// What a disclosure's transaction came to.
enum Attempt {
    /// Committed; its entry queued under this outbox id.
    Queued(Uuid, Decided),
    /// The request id was used before.
    Repeated(Existing),
}

enum Decided {
    Permitted(Uuid),
    Refused(Deny),
}

/// The note `sender`'s `request_id` was used for, if any.
async fn used(
    client: &impl deadpool_postgres::GenericClient,
    sender: OrgNumber,
    request_id: &str,
) -> Result<Option<Existing>, FlowError> {
    Ok(notes::stored_request(client, &sender.to_string(), request_id).await?)
}
