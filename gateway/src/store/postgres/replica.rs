//! One replica's [`Backend`] over the shared database: every state change is a flow
//! ([`Flows`]) — decided, changed and its entries queued in one transaction, then waited for —
//! so a replica killed at any point leaves either the whole change with its entries or
//! nothing; live inbox streams are fed by the [`Feed`]; reads go to the tables and the log.
//!
//! Audit queries select candidate entries by the log's query columns (SQL indexes on the
//! subject pseudonym, the organisations named, the kind and the time) and check each with the
//! same filter as the embedded index.

use std::sync::Arc;

use casegate_audit::{
    checkpoint::{SignedCheckpoint, Verifier},
    entry::{Entry, Event},
    index::Filter,
    log::{AppendError, Appended, ReadError},
    merkle::Hash,
};
use casegate_consent::{
    OrgNumber, SubjectId, Vocabulary,
    decision::{Decision, DisclosureRequest},
    record::{ConsentId, ConsentRecord, Evidence, NewConsent, Timestamp},
    store::StoreError,
};
use tokio::sync::broadcast;
use tonic::Status;
use uuid::Uuid;

use super::{
    Database,
    audit::AuditLog,
    consents::Consents,
    feed::{Feed, Wakeup},
    flows::{Delivery, Disclosure, FlowError, Flows},
    notes::Notes,
};
use crate::{
    api::{
        backend::{
            Backend, Deliverable, Disclosed, Matched, Proposed, Visible, consent_change_entry,
            held, permit_ref, recheck, same_disclosure, sweep_cutoffs, visible_consent,
        },
        embedded::grant_error,
    },
    app::{
        audit::{self as audit_log, acknowledged_entry, delivered_entry, purge_entry},
        notes::{self as app_notes, Note, Secret},
        principal::Principal,
    },
    crypto::{keyring::Keyring, pseudonym::Pseudonymizer},
    edge::{
        convert::{consent::actor, disclosure::now},
        status::{self, append_error},
    },
};

/// Candidate entries a query reads from the database at a time.
const SCAN_CHUNK: usize = 512;

/// A replica's backend: the flows, stores and log over the shared database.
#[derive(Debug)]
pub struct Replica {
    db: Database,
    log: Arc<AuditLog>,
    consents: Consents,
    notes: Notes,
    flows: Flows,
    pseudonyms: Pseudonymizer,
    keyring: Arc<Keyring>,
    vocabulary: Arc<Vocabulary>,
    feed: Feed,
}

impl Replica {
    /// The replica over `db` (migrated) logging to `log`, learning of new notes by `wakeup`.
    pub fn new(
        db: Database,
        log: Arc<AuditLog>,
        pseudonyms: Pseudonymizer,
        keyring: Arc<Keyring>,
        vocabulary: Arc<Vocabulary>,
        wakeup: Wakeup,
    ) -> Self {
        let consents = Consents::new(db.clone(), Arc::new(pseudonyms.clone()), keyring.clone());
        let feed = Feed::start(db.clone(), log.size(), wakeup);
        Self {
            flows: Flows::new(db.clone(), log.clone(), consents.clone()),
            notes: Notes::new(db.clone()),
            db,
            log,
            consents,
            pseudonyms,
            keyring,
            vocabulary,
            feed,
        }
    }

    /// The database it works in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Why this replica cannot go on serving, if it cannot: its sequencer or its feed of
    /// new notes stopped (a panic).
    pub fn failure(&self) -> Option<String> {
        self.log.failure().or_else(|| {
            self.feed
                .stopped()
                .then(|| "the feed of newly deliverable notes stopped".to_owned())
        })
    }

    /// The log this replica appends to.
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }
}

/// A flow's failure as the caller is told it (failures logged; rules answered precisely).
fn flow_error(e: FlowError) -> Status {
    match e {
        FlowError::Consent(e) => status::consent_store_error(e),
        FlowError::Note(e) => status::note_error(e),
        FlowError::Append(e) => append_error(e),
        FlowError::Entry(e) => append_error(AppendError::Failed(e.to_string())),
        FlowError::Database(e) => database_error(&e),
    }
}

/// A database failure: logged. Unreachable, or a conflict lost on every attempt: the caller
/// is told to retry (`UNAVAILABLE`, `ABORTED`); anything else is `INTERNAL`.
fn database_error(e: &super::DatabaseError) -> Status {
    tracing::error!(error = %e, "database failed");
    match e {
        super::DatabaseError::Unavailable(_) => {
            Status::unavailable("the database is unavailable; retry shortly")
        }
        e if e.is_conflict() => {
            Status::aborted("the change collided with others too often; retry it")
        }
        _ => Status::internal("the database failed"),
    }
}

#[tonic::async_trait]
impl Backend for Replica {
    async fn disclose(&self, proposed: Proposed<'_>) -> Result<Disclosed, Status> {
        let input = proposed.input;
        let id = Uuid::now_v7();
        // Sealed before the transaction: the seal binds the note's id, subject and recipient,
        // none of which the decision changes.
        let sealed = proposed.seal(id, &self.keyring)?;
        let hint = self.log.size();
        // The note as the committed attempt stored it (attempts may be tried again).
        let stored = std::sync::Mutex::new(None);
        let record = |decision: &Decision, nearest: Option<&ConsentRecord>| match decision {
            Decision::Permit(permit) => {
                let entry = proposed.permitted_entry(permit_ref(permit), id);
                let note = proposed.pending_note(id, permit, sealed.clone(), hint);
                *stored.lock().unwrap_or_else(|p| p.into_inner()) = Some(note.clone());
                Ok((entry.encode()?, Some(note)))
            }
            Decision::Deny(deny) => {
                let entry =
                    proposed.refused_entry(deny.reason.code(), nearest.map(audit_log::consent_ref));
                Ok((entry.encode()?, None))
            }
        };
        let done = self
            .flows
            .disclose(
                &input.subject,
                &proposed.request,
                now(),
                &self.vocabulary,
                &input.request_id,
                &record,
            )
            .await
            .map_err(flow_error)?;
        Ok(match done {
            Disclosure::Permitted { note: id, appended } => {
                // Made deliverable by the batch that logged its entry.
                let mut note = match stored.into_inner().unwrap_or_else(|p| p.into_inner()) {
                    Some(note) if note.id == id => note,
                    _ => self.notes.get(&id).await.map_err(status::note_error)?,
                };
                super::notes::made_deliverable(&mut note, appended.index);
                Disclosed::Permitted {
                    note: Box::new(note),
                    appended,
                }
            }
            Disclosure::Refused { deny, .. } => Disclosed::Refused(deny.reason),
            Disclosure::Repeated { existing, appended } => {
                same_disclosure(&existing.fingerprint, &proposed)?;
                let note = self
                    .notes
                    .get(&existing.id)
                    .await
                    .map_err(status::note_error)?;
                Disclosed::Repeated {
                    note: Box::new(note),
                    index: appended.index,
                }
            }
        })
    }

    async fn note(&self, id: Uuid) -> Result<Option<Note>, Status> {
        held(self.notes.get(&id).await)
    }

    async fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<Uuid>,
        max: usize,
    ) -> Result<Vec<Note>, Status> {
        self.notes
            .inbox_page(org, after, max)
            .await
            .map_err(status::note_error)
    }

    fn subscribe(&self) -> broadcast::Receiver<Deliverable> {
        self.feed.subscribe()
    }

    async fn deliver(&self, to: &Principal, note: Note) -> Result<Option<(Note, Secret)>, Status> {
        let secret = app_notes::open_secret(&note, &self.keyring).map_err(status::note_error)?;
        let record = |stored: &Note, decision: &Decision| match decision {
            Decision::Permit(_) => delivered_entry(to, stored).encode(),
            Decision::Deny(deny) => purge_entry(stored, Some(to), deny.reason.code()).encode(),
        };
        let done = self
            .flows
            .deliver(
                &note.id,
                &recheck(&note, &secret),
                now(),
                &self.vocabulary,
                &record,
            )
            .await
            .map_err(flow_error)?;
        Ok(match done {
            Delivery::Delivered { note, .. } => Some((note, secret)),
            Delivery::Withheld { .. } | Delivery::Gone => None,
        })
    }

    async fn acknowledge(
        &self,
        by: &Principal,
        note: &Note,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Appended, Status> {
        let entry = |stored: &Note| acknowledged_entry(by, stored).encode();
        let (_, appended) = self
            .flows
            .acknowledge(&note.id, at, purge_after, &entry)
            .await
            .map_err(flow_error)?;
        // Acknowledged meanwhile by another call: answered as the pre-check would have.
        appended.ok_or_else(|| Status::failed_precondition("the note is already acknowledged"))
    }

    async fn sweep(
        &self,
        ttl: std::time::Duration,
        forget_after: std::time::Duration,
    ) -> Result<usize, Status> {
        /// Notes purged per transaction.
        const ROUND: usize = 256;
        let (now, ttl_cutoff, forget_cutoff) = sweep_cutoffs(ttl, forget_after);
        let record = |note: &Note, expiry: casegate_notes::Expiry| {
            purge_entry(note, None, expiry.code()).encode()
        };
        let mut count = 0;
        loop {
            let purged = self
                .flows
                .sweep(ttl_cutoff, now, ROUND, &record)
                .await
                .map_err(flow_error)?;
            count += purged.len();
            if purged.len() < ROUND {
                break;
            }
        }
        loop {
            let n = self
                .notes
                .forget_purged(forget_cutoff, ROUND)
                .await
                .map_err(status::note_error)?;
            if n < ROUND {
                break;
            }
        }
        let backlog = self.notes.backlog().await.map_err(status::note_error)?;
        crate::base::metrics::inbox_backlog(backlog);
        Ok(count)
    }

    async fn consent(
        &self,
        id: ConsentId,
        version: Option<u32>,
    ) -> Result<ConsentRecord, StoreError> {
        self.consents.get(&id, version).await
    }

    async fn consents_of(&self, subject: SubjectId) -> Result<Vec<ConsentRecord>, StoreError> {
        self.consents.for_subject(&subject).await
    }

    async fn decide(
        &self,
        subject: SubjectId,
        request: DisclosureRequest,
    ) -> Result<Decision, StoreError> {
        self.consents
            .decide(&subject, &request, now(), &self.vocabulary)
            .await
    }

    async fn grant(
        &self,
        by: &Principal,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        visible: &Visible<'_>,
    ) -> Result<(ConsentRecord, Appended), Status> {
        // The new version is built on the version the caller was allowed to see; the grant
        // commits only while that one is still the newest, active, under the subject's lock
        // (else `NotActive`, "changed meanwhile"): what the caller may see is what is replaced.
        let current = match supersedes {
            Some(id) => Some(visible_consent(
                self.consents.get(&id, None).await,
                visible,
            )?),
            None => None,
        };
        let record =
            casegate_consent::store::next_version(new, current, now()).map_err(grant_error)?;
        let entry = consent_change_entry(
            Event::ConsentGranted,
            by,
            self.pseudonyms.pseudonym(&record.subject),
            &record,
        );
        let entry = entry
            .encode()
            .map_err(|e| append_error(AppendError::Failed(e.to_string())))?;
        let appended = self
            .flows
            .grant(&record, &entry)
            .await
            .map_err(flow_error)?;
        Ok((record, appended))
    }

    async fn withdraw(
        &self,
        by: &Principal,
        id: ConsentId,
        reason: Option<String>,
        evidence: Option<Evidence>,
        visible: &Visible<'_>,
    ) -> Result<(ConsentRecord, u32, Appended), Status> {
        let current = visible_consent(self.consents.get(&id, None).await, visible)?;
        let pseudonym = self.pseudonyms.pseudonym(&current.subject);
        let record = |withdrawn: &ConsentRecord, purged: &[Note]| {
            let mut entries = vec![
                consent_change_entry(Event::ConsentWithdrawn, by, pseudonym, withdrawn).encode()?,
            ];
            for note in purged {
                entries.push(purge_entry(note, Some(by), "consent_withdrawn").encode()?);
            }
            Ok(entries)
        };
        let withdrawn = self
            .flows
            .withdraw(
                &current.id,
                Some(visible),
                actor(by),
                reason,
                evidence,
                now(),
                &record,
            )
            .await
            .map_err(flow_error)?;
        let purged = u32::try_from(withdrawn.purged.len()).unwrap_or(u32::MAX);
        Ok((withdrawn.record, purged, withdrawn.appended))
    }

    async fn append(&self, entry: &Entry) -> Result<Appended, AppendError> {
        let bytes = entry
            .encode()
            .map_err(|e| AppendError::Failed(e.to_string()))?;
        self.log.append(&bytes).await
    }

    async fn checkpoint(&self) -> Result<Arc<SignedCheckpoint>, Status> {
        self.log.refresh().await.map_err(|e| database_error(&e))?;
        Ok(self.log.checkpoint())
    }

    fn verifier(&self) -> &Verifier {
        self.log.verifier()
    }

    async fn leaf_hash(&self, index: u64) -> Result<Hash, ReadError> {
        self.log.leaf_hash(index).await
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        self.log.inclusion_proof(index, size).await
    }

    async fn inclusion_proofs(
        &self,
        indexes: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, ReadError> {
        self.log.inclusion_proofs(indexes, size).await
    }

    async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ReadError> {
        self.log.consistency_proof(first, second).await
    }

    async fn entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, ReadError> {
        self.log.entries(from, to).await
    }

    async fn matching_page(
        &self,
        filter: Arc<Filter>,
        start: u64,
        end: u64,
        max: usize,
    ) -> Result<(Vec<Matched>, u64), Status> {
        let mut page = Vec::new();
        let mut from = start;
        while from < end {
            let candidates = self
                .log
                .candidates(&filter, from, end, SCAN_CHUNK)
                .await
                .map_err(status::read_error)?;
            let Some(last) = candidates.last().map(|(index, _)| *index) else {
                break;
            };
            for (index, bytes) in candidates {
                let Ok(entry) = Entry::decode(&bytes) else {
                    continue;
                };
                if filter.matches(&entry) {
                    let leaf = casegate_audit::merkle::leaf_hash(&bytes);
                    page.push((index, entry, leaf, bytes));
                    if page.len() == max {
                        return Ok((page, index + 1));
                    }
                }
            }
            from = last + 1;
        }
        Ok((page, end))
    }
}
