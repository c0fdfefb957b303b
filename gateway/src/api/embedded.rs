//! [`Backend`] over the embedded stores of one process: the consent store, the note store and
//! the segment audit log with its query index.
//!
//! A disclosure reserves its request id, decides from the consent store's memory, stores the
//! note pending (made durable by the audit writer before the entry that names it), appends
//! `disclosure permitted` and makes the note deliverable. Other changes run as store changes
//! ([`Audit::store_change`]): the entry and the store write in a task of their own, so a
//! cancelled call cannot stop between the two, and a crash between them is finished by the
//! start-up reconciliation ([`crate::app::reconcile`]).

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
use tokio::sync::{Mutex, broadcast};
use tonic::Status;
use uuid::Uuid;

mod query;

use query::matching;

use super::backend::{
    Backend, Deliverable, Disclosed, Matched, Proposed, Visible, consent_change_entry, held,
    permit_ref, recheck, same_disclosure, sweep_cutoffs, visible_consent,
};
use crate::{
    app::{
        Consents, Notes,
        audit::{self as audit_log, Audit, acknowledged_entry, delivered_entry, purge_entry},
        notes::{self, Existing, Note, NoteError, NoteState, NoteStorage, Secret},
        principal::Principal,
    },
    crypto::{keyring::Keyring, pseudonym::Pseudonymizer},
    edge::{
        convert::disclosure::now,
        status::{self, append_error},
    },
};

/// The embedded backend: one process's stores and log.
#[derive(Debug, Clone)]
pub(crate) struct Embedded {
    notes: Notes,
    consents: Consents,
    audit: Audit,
    pseudonyms: Pseudonymizer,
    keyring: Arc<Keyring>,
    vocabulary: Arc<Vocabulary>,
    /// Newly deliverable notes, for live inbox streams.
    live: broadcast::Sender<Deliverable>,
    /// Grants and withdrawals one at a time: prepare, audit and commit must not interleave.
    writes: Arc<Mutex<()>>,
}

/// Notes announced to live inbox streams that a stream may fall behind by before it is told
/// to reconnect.
pub(crate) const LIVE_CAPACITY: usize = 1024;

impl Embedded {
    /// The backend over the open stores and log; `keyring` seals and opens notes,
    /// `vocabulary` is what decisions are taken with.
    pub(crate) fn new(
        notes: Notes,
        consents: Consents,
        audit: Audit,
        pseudonyms: Pseudonymizer,
        keyring: Arc<Keyring>,
        vocabulary: Arc<Vocabulary>,
    ) -> Self {
        Self {
            notes,
            consents,
            audit,
            pseudonyms,
            keyring,
            vocabulary,
            live: broadcast::channel(LIVE_CAPACITY).0,
            writes: Arc::default(),
        }
    }

    async fn on_notes<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn NoteStorage) -> Result<T, NoteError> + Send + 'static,
    ) -> Result<T, Status> {
        on_notes(&self.notes, f).await
    }

    async fn on_consents<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn casegate_consent::storage::ConsentStorage) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let store = self.consents.clone();
        crate::base::blocking::run(move || f(store.as_ref()))
            .await
            .unwrap_or_else(|e| Err(crate::app::consent_task_failed(&e)))
    }

    /// The answer to a repeated request id.
    async fn repeated(
        &self,
        existing: Existing,
        proposed: &Proposed<'_>,
    ) -> Result<Disclosed, Status> {
        same_disclosure(&existing.fingerprint, proposed)?;
        // Not found: reserved by a call still deciding (or refused and about to release it).
        let note = self.note(existing.id).await?.ok_or_else(in_progress)?;
        let Some(index) = note
            .audit_index
            .filter(|_| note.state != NoteState::Pending)
        else {
            return Err(Status::unavailable(
                "a disclosure with this request_id is still being recorded; retry shortly",
            ));
        };
        Ok(Disclosed::Repeated {
            note: Box::new(note),
            index,
        })
    }

    /// The visible version of `id` under the write lock (the same refusal whether or not it
    /// exists).
    async fn visible(&self, id: ConsentId, visible: &Visible<'_>) -> Result<ConsentRecord, Status> {
        visible_consent(self.on_consents(move |s| s.get(&id, None)).await, visible)
    }
}

/// A repeated request id whose first call is still deciding.
fn in_progress() -> Status {
    Status::unavailable("a disclosure with this request_id is in progress; retry shortly")
}

/// Runs note-store work off the async runtime.
async fn on_notes<T: Send + 'static>(
    notes: &Notes,
    f: impl FnOnce(&dyn NoteStorage) -> Result<T, NoteError> + Send + 'static,
) -> Result<T, Status> {
    let notes = notes.clone();
    crate::base::blocking::run(move || f(notes.as_ref()))
        .await
        .map_err(status::task_failed)?
        .map_err(status::note_error)
}

/// Purges `note` (its body deleted, out of the inbox for good) for `reason`, as a store
/// change ([`Audit::store_change`]) with its `note purged` entry first: a crash between the
/// two leaves an entry whose purge the start-up reconciliation finishes
/// ([`crate::app::reconcile`]), never a purge the log does not show.
async fn purge_note(
    notes: &Notes,
    audit: &Audit,
    note: &Note,
    by: Option<&Principal>,
    reason: &str,
) -> Result<Note, Status> {
    let entry = purge_entry(note, by, reason);
    let (notes, log, id) = (notes.clone(), audit.clone(), note.id);
    audit
        .store_change(async move {
            log.append(&entry).await.map_err(append_error)?;
            on_notes(&notes, move |n| n.purge(&id)).await
        })
        .await
}

#[tonic::async_trait]
impl Backend for Embedded {
    async fn disclose(&self, proposed: Proposed<'_>) -> Result<Disclosed, Status> {
        let (principal, input) = (proposed.principal, proposed.input);
        let id = Uuid::now_v7();
        // Note-store reads and unflushed writes are in-memory work for sled: done inline.
        let reserved = self
            .notes
            .reserve(principal.orgnr, &input.request_id, id, proposed.fingerprint)
            .map_err(status::note_error)?;
        if let Err(existing) = reserved {
            return self.repeated(existing, &proposed).await;
        }
        let decided =
            self.consents
                .decide(&input.subject, &proposed.request, now(), &self.vocabulary);
        let decided = match decided {
            Ok(d) => d,
            Err(e) => {
                let _ = self.notes.release(principal.orgnr, &input.request_id);
                return Err(status::consent_store_error(e));
            }
        };
        let permit = match decided {
            Decision::Permit(permit) => permit,
            Decision::Deny(deny) => {
                // Refusals are audited; the request id stays free for a later attempt.
                self.notes
                    .release(principal.orgnr, &input.request_id)
                    .map_err(status::note_error)?;
                let nearest = deny
                    .nearest
                    .and_then(|(consent_id, version)| {
                        self.consents.get(&consent_id, Some(version)).ok()
                    })
                    .map(|record| audit_log::consent_ref(&record));
                let entry = proposed.refused_entry(deny.reason.code(), nearest);
                self.audit.append(&entry).await.map_err(append_error)?;
                return Ok(Disclosed::Refused(deny.reason));
            }
        };
        let sealed = proposed.seal(id, &self.keyring)?;
        let note = proposed.pending_note(id, &permit, sealed, self.audit.log().size());
        // Not flushed here: the audit writer syncs the note store before it writes the batch
        // holding this note's entry, so the entry is never durable before the note.
        self.notes
            .stage_pending(&note)
            .map_err(status::note_error)?;
        let entry = proposed.permitted_entry(permit_ref(&permit), id);
        let appended = self.audit.append(&entry).await.map_err(append_error)?;
        let note = self
            .notes
            .make_deliverable(note, appended.index)
            .map_err(status::note_error)?;
        // Open inbox streams of the recipient pick it up.
        let _ = self.live.send(Deliverable {
            recipient: input.recipient_org,
            note: id,
            index: appended.index,
        });
        Ok(Disclosed::Permitted {
            note: Box::new(note),
            appended,
        })
    }

    async fn note(&self, id: Uuid) -> Result<Option<Note>, Status> {
        let notes = self.notes.clone();
        held(
            crate::base::blocking::run(move || notes.get(&id))
                .await
                .map_err(status::task_failed)?,
        )
    }

    async fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<Uuid>,
        max: usize,
    ) -> Result<Vec<Note>, Status> {
        self.on_notes(move |n| n.inbox_page(org, after, max)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Deliverable> {
        self.live.subscribe()
    }

    async fn deliver(&self, to: &Principal, note: Note) -> Result<Option<(Note, Secret)>, Status> {
        let secret = notes::open_secret(&note, &self.keyring).map_err(status::note_error)?;
        let decided = self
            .consents
            .decide(
                &secret.subject,
                &recheck(&note, &secret),
                now(),
                &self.vocabulary,
            )
            .map_err(status::consent_store_error)?;
        if let Decision::Deny(deny) = decided {
            purge_note(
                &self.notes,
                &self.audit,
                &note,
                Some(to),
                deny.reason.code(),
            )
            .await?;
            return Ok(None);
        }
        self.audit
            .append(&delivered_entry(to, &note))
            .await
            .map_err(append_error)?;
        let id = note.id;
        self.on_notes(move |n| n.mark_delivered(&id)).await?;
        Ok(Some((note, secret)))
    }

    async fn acknowledge(
        &self,
        by: &Principal,
        note: &Note,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Appended, Status> {
        // The entry first, as a store change: a crash between the two leaves an entry whose
        // acknowledgement the start-up reconciliation finishes, never an acknowledged note
        // the log does not show (it would be out of the inbox, its receipt never confirmed).
        let entry = acknowledged_entry(by, note);
        let (notes, audit, id) = (self.notes.clone(), self.audit.clone(), note.id);
        self.audit
            .store_change(async move {
                let appended = audit.append(&entry).await.map_err(append_error)?;
                on_notes(&notes, move |n| n.acknowledge(&id, at, purge_after)).await?;
                Ok(appended)
            })
            .await
    }

    async fn sweep(
        &self,
        ttl: std::time::Duration,
        forget_after: std::time::Duration,
    ) -> Result<usize, Status> {
        /// Due notes read per round: memory stays bounded however many are due.
        const ROUND: usize = 256;
        let (now, ttl_cutoff, forget_cutoff) = sweep_cutoffs(ttl, forget_after);
        let mut count = 0;
        loop {
            let due = self
                .on_notes(move |n| n.due(ttl_cutoff, now, ROUND))
                .await?;
            let last_round = due.len() < ROUND;
            for (note, expiry) in due {
                purge_note(&self.notes, &self.audit, &note, None, expiry.code()).await?;
                count += 1;
            }
            if last_round {
                break;
            }
        }
        let mut forgotten = 0;
        loop {
            let n = self
                .on_notes(move |n| n.forget_purged(forget_cutoff, ROUND))
                .await?;
            forgotten += n;
            if n < ROUND {
                break;
            }
        }
        if forgotten > 0 {
            tracing::info!(forgotten, "purged notes forgotten");
        }
        crate::base::metrics::inbox_backlog(self.on_notes(|n| Ok(n.backlog())).await?);
        // Purges and acknowledgements leave superseded records behind: reclaim their files.
        self.on_notes(|n| n.compact()).await?;
        self.on_notes(|n| Ok(n.stats())).await?.record_metrics();
        Ok(count)
    }

    async fn consent(
        &self,
        id: ConsentId,
        version: Option<u32>,
    ) -> Result<ConsentRecord, StoreError> {
        self.on_consents(move |s| s.get(&id, version)).await
    }

    async fn consents_of(&self, subject: SubjectId) -> Result<Vec<ConsentRecord>, StoreError> {
        self.on_consents(move |s| s.for_subject(&subject)).await
    }

    async fn decide(
        &self,
        subject: SubjectId,
        request: DisclosureRequest,
    ) -> Result<Decision, StoreError> {
        // In memory: no blocking read.
        self.consents
            .decide(&subject, &request, now(), &self.vocabulary)
    }

    async fn grant(
        &self,
        by: &Principal,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        visible: &Visible<'_>,
    ) -> Result<(ConsentRecord, Appended), Status> {
        let write = self.writes.clone().lock_owned().await;
        // Only a consent the caller may read can be replaced; any other id, existing or not,
        // gets the same refusal. Checked under the write lock, so no newer version can slip
        // in between.
        if let Some(id) = supersedes {
            self.visible(id, visible).await?;
        }
        let record = self
            .on_consents(move |s| s.prepare_grant(new, supersedes, now()))
            .await
            .map_err(grant_error)?;
        // Audit first: a crash before the commit leaves an audited grant that does not exist
        // (fails closed, and reported by the reconciliation at start), never a consent in
        // force that the log does not show. Its own task: a cancelled call does not stop it
        // between the two.
        let entry = consent_change_entry(
            Event::ConsentGranted,
            by,
            self.pseudonyms.pseudonym(&record.subject),
            &record,
        );
        let (backend, stored) = (self.clone(), record.clone());
        let appended = self
            .audit
            .store_change(async move {
                let _write = write;
                let appended = backend.audit.append(&entry).await.map_err(append_error)?;
                backend
                    .on_consents(move |s| s.commit_grant(&stored))
                    .await
                    .map_err(status::consent_store_error)?;
                Ok(appended)
            })
            .await?;
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
        let write = self.writes.clone().lock_owned().await;
        // Under the write lock: the version withdrawn is the one the caller may read.
        let current = self.visible(id, visible).await?;
        let actor = crate::edge::convert::consent::actor(by);
        // Store first: a crash before the audit entry leaves the consent withdrawn (fails
        // closed), never a withdrawal the store does not know. Its own task: a cancelled call
        // does not stop it between the two.
        let (backend, who) = (self.clone(), by.clone());
        let (withdrawn, appended) = self
            .audit
            .store_change(async move {
                let _write = write;
                let withdrawn = backend
                    .on_consents(move |s| s.withdraw(&current.id, actor, reason, evidence, now()))
                    .await
                    .map_err(status::consent_store_error)?;
                let entry = consent_change_entry(
                    Event::ConsentWithdrawn,
                    &who,
                    backend.pseudonyms.pseudonym(&withdrawn.subject),
                    &withdrawn,
                );
                let appended = backend.audit.append(&entry).await.map_err(append_error)?;
                Ok((withdrawn, appended))
            })
            .await?;
        // Withdrawal bites: notes that relied on the consent and were not delivered go now,
        // each audited with reason `consent_withdrawn`. (Any that slip past, e.g. after a
        // crash here, are caught by the check at delivery.)
        let consent = withdrawn.id;
        let pending = self.on_notes(move |n| n.undelivered_for(&consent)).await?;
        let mut purged = 0;
        for note in pending {
            purge_note(
                &self.notes,
                &self.audit,
                &note,
                Some(by),
                "consent_withdrawn",
            )
            .await?;
            purged += 1;
        }
        Ok((withdrawn, purged, appended))
    }

    async fn append(&self, entry: &Entry) -> Result<Appended, AppendError> {
        self.audit.append(entry).await
    }

    async fn checkpoint(&self) -> Result<Arc<SignedCheckpoint>, Status> {
        Ok(self.audit.log().checkpoint())
    }

    fn verifier(&self) -> &Verifier {
        self.audit.log().verifier()
    }

    // Inline: at most 64 reads of 32-byte tree nodes, mostly recent ones served from the page
    // cache, cheaper than handing the work to another thread.
    async fn leaf_hash(&self, index: u64) -> Result<Hash, ReadError> {
        self.audit.log().leaf_hash(index)
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        self.audit.log().inclusion_proof(index, size)
    }

    async fn inclusion_proofs(
        &self,
        indexes: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, ReadError> {
        let (audit, indexes) = (self.audit.clone(), indexes.to_vec());
        crate::base::blocking::run(move || {
            let log = audit.log();
            indexes
                .iter()
                .map(|index| log.inclusion_proof(*index, size))
                .collect()
        })
        .await
        .unwrap_or_else(|e| Err(ReadError::Io(std::io::Error::other(e.to_string()))))
    }

    async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ReadError> {
        let audit = self.audit.clone();
        crate::base::blocking::run(move || audit.log().consistency_proof(first, second))
            .await
            .unwrap_or_else(|e| Err(ReadError::Io(std::io::Error::other(e.to_string()))))
    }

    async fn entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, ReadError> {
        let audit = self.audit.clone();
        crate::base::blocking::run(move || {
            let log = audit.log();
            (from..to).map(|index| log.entry(index)).collect()
        })
        .await
        .unwrap_or_else(|e| Err(ReadError::Io(std::io::Error::other(e.to_string()))))
    }

    async fn matching_page(
        &self,
        filter: Arc<Filter>,
        start: u64,
        end: u64,
        max: usize,
    ) -> Result<(Vec<Matched>, u64), Status> {
        let audit = self.audit.clone();
        crate::base::blocking::run(move || {
            let mut page = Vec::new();
            let mut next = end;
            matching(
                &audit,
                &filter,
                start,
                end,
                max,
                |index, entry, leaf, bytes| {
                    page.push((index, entry, leaf, bytes));
                    if page.len() == max {
                        next = index + 1;
                    }
                    Ok(())
                },
            )?;
            Ok((page, next))
        })
        .await
        .map_err(status::task_failed)?
    }
}

/// A grant's store refusal: a `supersedes` id that names nothing of this subject is
/// `NOT_FOUND`.
pub(crate) fn grant_error(e: StoreError) -> Status {
    match e {
        StoreError::NotFound | StoreError::SubjectMismatch => {
            Status::not_found("supersedes_consent_id: no such consent about this subject")
        }
        e => status::consent_store_error(e),
    }
}
