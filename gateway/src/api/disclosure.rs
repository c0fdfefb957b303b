//! `casegate.v1.DisclosureService`: consent-gated notes.
//!
//! `Disclose`: parse → idempotency (the sender's request id) → decide against the subject's
//! consents → refusal: audited, `PERMISSION_DENIED` (`FAILED_PRECONDITION` for
//! `approval_missing`) with a `google.rpc.ErrorInfo`; permit: seal and store the note
//! (pending; made durable by the audit writer before the entry that names it), append
//! `disclosure permitted` (durable), put it in the inbox, answer the receipt.
//!
//! `StreamInbox`: the backlog, then live notes; consent is checked again at delivery (a note
//! whose consent no longer covers it is withheld, purged and audited); every delivery is
//! audited. `Acknowledge`: out of the inbox, body kept for the retention period.

use std::sync::Arc;

use casegate_audit::entry::{
    ConsentRef, DisclosurePermitted, DisclosureRefused, Entry, Event as AuditEvent,
};
use casegate_consent::{
    OrgNumber, Vocabulary,
    decision::{self, Decision},
    record::Timestamp,
};
use casegate_proto::v1::{
    AcknowledgeRequest, AcknowledgeResponse, ApprovalAttestation, BacklogComplete, DiscloseRequest,
    DiscloseResponse, DisclosureReceipt, InboxNote, StreamInboxRequest, StreamInboxResponse,
    disclosure_service_server::DisclosureService, stream_inbox_response::Event,
};
use tonic::{Request, Response, Status};

use super::{
    ResponseStream,
    audit::{receipt, receipt_at},
};
use crate::{
    app::audit::{self as audit_log, Audit, acknowledged_entry, delivered_entry, purge_entry},
    app::principal::Principal,
    app::{
        Notes,
        notes::{self, Note, NoteError, NoteState, NoteStorage, Secret, purge_after},
    },
    crypto::keyring::Keyring,
    crypto::pseudonym::Pseudonymizer,
    edge::convert::{
        FieldError,
        consent::{PROFESSIONALS, actor},
        disclosure::{DiscloseInput, disclose_request, now},
        optional_role, role_to_wire, timestamp_to_wire,
    },
    edge::status::{self, append_error},
};

/// Inbox notes read at a time when streaming a backlog.
const BACKLOG_PAGE: usize = 64;
/// Messages an inbox stream holds before its client reads them.
const STREAM_BUFFER: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct DisclosureApi {
    pub notes: Notes,
    pub consents: crate::app::Consents,
    pub audit: Audit,
    pub pseudonyms: Pseudonymizer,
    pub keyring: Arc<Keyring>,
    pub vocabulary: Arc<Vocabulary>,
    pub max_body_bytes: usize,
    /// How long a body is kept after acknowledgement.
    pub retention: std::time::Duration,
    /// Newly deliverable notes, for live inbox streams.
    pub live: tokio::sync::broadcast::Sender<(OrgNumber, uuid::Uuid)>,
    /// Becomes true when the gateway shuts down: inbox streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Whether `principal` may receive `note`: their organisation, and the note addressed to the
/// whole organisation or to their role.
fn addressed_to(note: &Note, principal: &Principal) -> bool {
    note.recipient_org == principal.orgnr && note.recipient_role.is_none_or(|r| r == principal.role)
}

/// A decision on a disclosure, with what its entry and its note share (computed once).
struct Disclosed<'a> {
    request: &'a decision::DisclosureRequest,
    pseudonym: [u8; 32],
    content_sha256: [u8; 32],
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

/// Purges the undelivered notes that relied on `consent` (it was withdrawn), auditing each
/// with reason `consent_withdrawn`. Returns how many.
pub(crate) async fn purge_for_consent(
    notes: &Notes,
    audit: &Audit,
    consent: casegate_consent::record::ConsentId,
    by: &Principal,
) -> Result<u32, Status> {
    let pending = on_notes(notes, move |n| n.undelivered_for(&consent)).await?;
    let mut purged_notes = 0;
    for note in pending {
        purge_note(notes, audit, &note, Some(by), "consent_withdrawn").await?;
        purged_notes += 1;
    }
    Ok(purged_notes)
}

/// Purges `note` (its body deleted, out of the inbox for good) for `reason`, as a store
/// change ([`Audit::store_change`]) with its `note purged` entry first: a crash between the
/// two leaves an entry whose purge the start-up reconciliation finishes
/// ([`crate::app::reconcile`]), never a purge the log does not show.
pub(crate) async fn purge_note(
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

impl DisclosureApi {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn NoteStorage) -> Result<T, NoteError> + Send + 'static,
    ) -> Result<T, Status> {
        on_notes(&self.notes, f).await
    }

    /// The `disclosure refused` entry of `input` by `principal`, for `reason`; `nearest` is
    /// the consent version nearest to permitting it, if any.
    fn refused_entry(
        principal: &Principal,
        input: &DiscloseInput,
        disclosed: &Disclosed<'_>,
        reason: &str,
        nearest: Option<ConsentRef>,
    ) -> Entry {
        Entry::new(
            audit_log::now_micros(),
            AuditEvent::DisclosureRefused(DisclosureRefused {
                terms: audit_log::decision_terms(principal, disclosed.pseudonym, disclosed.request),
                reason: reason.to_owned(),
                nearest_consent: nearest,
                recipient_role: input.recipient_role.map(|r| r.as_str().to_owned()),
                approval_attested: input.approval.is_some(),
                content_sha256: disclosed.content_sha256,
                request_id: input.request_id.clone(),
            }),
        )
    }

    /// The `disclosure permitted` entry of `input` by `principal` on `consent`, as note `id`.
    fn permitted_entry(
        principal: &Principal,
        input: &DiscloseInput,
        disclosed: &Disclosed<'_>,
        consent: ConsentRef,
        id: uuid::Uuid,
    ) -> Entry {
        Entry::new(
            audit_log::now_micros(),
            AuditEvent::DisclosurePermitted(DisclosurePermitted {
                terms: audit_log::decision_terms(principal, disclosed.pseudonym, disclosed.request),
                consent,
                recipient_role: input.recipient_role.map(|r| r.as_str().to_owned()),
                approval_attested: input.approval.is_some(),
                content_sha256: disclosed.content_sha256,
                request_id: input.request_id.clone(),
                disclosure_id: id.to_string(),
            }),
        )
    }

    /// The answer to a repeated request id.
    async fn repeated(
        &self,
        existing: crate::app::notes::Existing,
        input: &DiscloseInput,
        fingerprint: [u8; 32],
    ) -> Result<Response<DiscloseResponse>, Status> {
        // A note stored by an earlier version holds the fingerprint as it was computed then.
        if existing.fingerprint != fingerprint
            && existing.fingerprint != input.fingerprint_before_v2()
        {
            return Err(Status::already_exists(
                "request_id was already used for a different disclosure",
            ));
        }
        let notes = self.notes.clone();
        let note = crate::base::blocking::run(move || notes.get(&existing.id))
            .await
            .map_err(status::task_failed)?;
        let note = match note {
            Ok(note) => note,
            // Reserved by a call still deciding (or refused and about to release it).
            Err(NoteError::NotFound) => {
                return Err(Status::unavailable(
                    "a disclosure with this request_id is in progress; retry shortly",
                ));
            }
            Err(e) => return Err(status::note_error(e)),
        };
        let Some(index) = note
            .audit_index
            .filter(|_| note.state != NoteState::Pending)
        else {
            return Err(Status::unavailable(
                "a disclosure with this request_id is still being recorded; retry shortly",
            ));
        };
        Ok(Response::new(DiscloseResponse {
            receipt: Some(DisclosureReceipt {
                disclosure_id: note.id.to_string(),
                consent_id: note.consent_id.to_string(),
                consent_version: note.consent_version,
                content_sha256: note.content_sha256.to_vec(),
                audit: Some(receipt_at(&self.audit, index).await?),
            }),
        }))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

#[tonic::async_trait]
impl DisclosureService for DisclosureApi {
    async fn disclose(
        &self,
        request: Request<DiscloseRequest>,
    ) -> Result<Response<DiscloseResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&PROFESSIONALS)?;
        let input = disclose_request(request.get_ref(), self.max_body_bytes)?;
        // The body is hashed once: for the fingerprint, the note and the audit entry.
        let content_sha256 = sha256(&input.body);
        let fingerprint = input.fingerprint(&content_sha256);
        let id = uuid::Uuid::now_v7();

        // Note-store reads and unflushed writes are in-memory work for sled: done inline.
        let reserved = self
            .notes
            .reserve(principal.orgnr, &input.request_id, id, fingerprint)
            .map_err(status::note_error)?;
        if let Err(existing) = reserved {
            return self.repeated(existing, &input, fingerprint).await;
        }

        let disclosure = decision::DisclosureRequest {
            sender_org: principal.orgnr,
            sender_role: principal.role,
            recipient_org: input.recipient_org,
            recipient_role: input.recipient_role,
            category: input.category.clone(),
            purpose: input.purpose.clone(),
            approval_attested: input.approval.is_some(),
        };
        let decided = self
            .consents
            .decide(&input.subject, &disclosure, now(), &self.vocabulary);
        let decided = match decided {
            Ok(d) => d,
            Err(e) => {
                let _ = self.notes.release(principal.orgnr, &input.request_id);
                return Err(status::consent_store_error(e));
            }
        };
        crate::base::metrics::decision(match &decided {
            Decision::Permit(_) => "permit",
            Decision::Deny(d) => d.reason.code(),
        });
        // Computed once, for the entry and the note.
        let pseudonym = self.pseudonyms.pseudonym(&input.subject);
        let disclosed = Disclosed {
            request: &disclosure,
            pseudonym,
            content_sha256,
        };

        let permit = match &decided {
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
                let entry =
                    Self::refused_entry(principal, &input, &disclosed, deny.reason.code(), nearest);
                self.audit.append(&entry).await.map_err(append_error)?;
                return Err(status::refusal(deny.reason));
            }
        };

        let secret = Secret {
            subject: input.subject,
            title: input.title.clone(),
            body: input.body.clone(),
            approval: input.approval.clone(),
        };
        let sealed = notes::seal(&self.keyring, &secret, &id, &pseudonym, input.recipient_org)
            .map_err(status::note_error)?;
        let note = Note {
            id,
            state: NoteState::Pending,
            request_id: input.request_id.clone(),
            fingerprint,
            sender: actor(principal),
            recipient_org: input.recipient_org,
            recipient_role: input.recipient_role,
            category: input.category.clone(),
            purpose: input.purpose.clone(),
            content_type: input.content_type.clone(),
            consent_id: permit.consent_id,
            consent_version: permit.version,
            consent_record_hash: permit.record_hash,
            content_sha256,
            subject_pseudonym: pseudonym,
            disclosed_at: now(),
            audit_index: None,
            log_size_hint: self.audit.log().size(),
            delivered: false,
            acknowledged_at: None,
            purge_after: None,
            purged_at: None,
            sealed: Some(sealed),
        };
        // Not flushed here: the audit writer syncs the note store before it writes the batch
        // holding this note's entry, so the entry is never durable before the note.
        self.notes
            .stage_pending(&note)
            .map_err(status::note_error)?;

        let consent = ConsentRef {
            id: permit.consent_id.to_string(),
            version: permit.version,
            record_sha256: permit.record_hash,
        };
        let entry = Self::permitted_entry(principal, &input, &disclosed, consent, id);
        let appended = self.audit.append(&entry).await.map_err(append_error)?;
        let note = self
            .notes
            .make_deliverable(note, appended.index)
            .map_err(status::note_error)?;
        // Open inbox streams of the recipient pick it up.
        let _ = self.live.send((input.recipient_org, id));

        Ok(Response::new(DiscloseResponse {
            receipt: Some(DisclosureReceipt {
                disclosure_id: id.to_string(),
                consent_id: permit.consent_id.to_string(),
                consent_version: permit.version,
                content_sha256: note.content_sha256.to_vec(),
                audit: Some(receipt(&self.audit, &appended)?),
            }),
        }))
    }

    type StreamInboxStream = ResponseStream<StreamInboxResponse>;

    async fn stream_inbox(
        &self,
        request: Request<StreamInboxRequest>,
    ) -> Result<Response<Self::StreamInboxStream>, Status> {
        let principal = Principal::of(&request)?.clone();
        principal.require_role(&PROFESSIONALS)?;
        let StreamInboxRequest { role } = *request.get_ref();
        if let Some(role) = optional_role("role", role)?
            && role != principal.role
        {
            return Err(Status::permission_denied(
                "role: you may stream only the notes addressed to your own role",
            ));
        }
        // Subscribe before reading the backlog, so nothing falls between the two.
        let mut live = self.live.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let api = self.clone();
        tokio::spawn(async move {
            let mut stopping = api.stopping.clone();
            // Backlog notes that may also be announced live (made deliverable meanwhile).
            let mut sent = std::collections::HashSet::new();
            let org = principal.orgnr;
            let mut delivered = 0u64;
            let mut after = None;
            loop {
                // A page at a time: memory stays bounded however long the backlog.
                let page = match api
                    .blocking(move |n| n.inbox_page(org, after, BACKLOG_PAGE))
                    .await
                {
                    Ok(notes) => notes,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let last_page = page.len() < BACKLOG_PAGE;
                after = page.last().map(|n| n.id);
                // Deliveries run together, a stream's worth at a time, so their `note
                // delivered` entries share the audit log's group commits instead of one
                // `fdatasync` each. Room for every note of a chunk is taken first, so a note
                // is never recorded as delivered to a client that has gone, and every
                // delivery started runs to its end; the notes go out in inbox order.
                let page: Vec<Note> = page
                    .into_iter()
                    .filter(|n| addressed_to(n, &principal))
                    .inspect(|n| {
                        sent.insert(n.id);
                    })
                    .collect();
                let mut page = page.into_iter().peekable();
                while page.peek().is_some() {
                    let chunk: Vec<Note> = page.by_ref().take(STREAM_BUFFER).collect();
                    let Ok(permits) = tx.reserve_many(chunk.len()).await else {
                        return;
                    };
                    let results: Vec<_> = futures_util::future::join_all(
                        chunk.into_iter().map(|note| api.deliver(&principal, note)),
                    )
                    .await;
                    let mut failure = None;
                    for (permit, result) in permits.zip(results) {
                        match result {
                            Ok(Some(message)) => {
                                permit.send(Ok(message));
                                delivered += 1;
                            }
                            Ok(None) => {}
                            Err(status) => failure = failure.or(Some(status)),
                        }
                    }
                    if let Some(status) = failure {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                if last_page {
                    break;
                }
            }
            let done = StreamInboxResponse {
                event: Some(Event::BacklogComplete(BacklogComplete { delivered })),
            };
            if tx.send(Ok(done)).await.is_err() {
                return;
            }
            loop {
                let id = tokio::select! {
                    received = live.recv() => match received {
                        // Each note is announced once: a backlog id is needed only until then.
                        Ok((to, id)) if to == org && !sent.remove(&id) => id,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx
                                .send(Err(Status::data_loss(
                                    "the inbox stream fell behind; reconnect to receive the backlog",
                                )))
                                .await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                    _ = stopping.changed() => return,
                };
                let note = match api.blocking(move |n| n.get(&id)).await {
                    Ok(note)
                        if note.state == NoteState::Deliverable
                            && addressed_to(&note, &principal) =>
                    {
                        note
                    }
                    // Purged or acknowledged since it was announced, or for another role.
                    Ok(_) => continue,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if api.send_note(&principal, note, &tx).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&PROFESSIONALS)?;
        let AcknowledgeRequest { disclosure_id } = request.get_ref();
        let id = uuid::Uuid::try_parse(disclosure_id)
            .map_err(|_| FieldError::new("disclosure_id", "a disclosure id is a UUID"))?;
        let not_yours = || Status::permission_denied("no note with this id is addressed to you");
        let notes = self.notes.clone();
        let note = match crate::base::blocking::run(move || notes.get(&id))
            .await
            .map_err(status::task_failed)?
        {
            Ok(note) if addressed_to(&note, principal) => note,
            Ok(_) | Err(NoteError::NotFound) => return Err(not_yours()),
            Err(e) => return Err(status::note_error(e)),
        };
        match note.state {
            NoteState::Deliverable => {}
            NoteState::Pending => return Err(not_yours()),
            NoteState::Acknowledged => {
                return Err(Status::failed_precondition(
                    "the note is already acknowledged",
                ));
            }
            NoteState::Purged => {
                return Err(Status::failed_precondition("the note was purged"));
            }
        }
        let at = now();
        let purge_after = purge_after(at, self.retention);
        // The entry first, as a store change: a crash between the two leaves an entry whose
        // acknowledgement the start-up reconciliation finishes, never an acknowledged note
        // the log does not show (it would be out of the inbox, its receipt never confirmed).
        let entry = acknowledged_entry(principal, &note);
        let (notes, audit) = (self.notes.clone(), self.audit.clone());
        let appended = self
            .audit
            .store_change(async move {
                let appended = audit.append(&entry).await.map_err(append_error)?;
                on_notes(&notes, move |n| n.acknowledge(&id, at, purge_after)).await?;
                Ok(appended)
            })
            .await?;
        Ok(Response::new(AcknowledgeResponse {
            acknowledged_at: Some(timestamp_to_wire(at)),
            purge_after: Some(timestamp_to_wire(purge_after)),
            audit_index: appended.index,
        }))
    }
}

impl DisclosureApi {
    /// Delivers `note` on an inbox stream: `Ok(true)` sent, `Ok(false)` withheld (purged),
    /// `Err(())` when the stream must end (the client left, or a failure was reported to it).
    async fn send_note(
        &self,
        principal: &Principal,
        note: Note,
        tx: &tokio::sync::mpsc::Sender<Result<StreamInboxResponse, Status>>,
    ) -> Result<bool, ()> {
        // Room on the stream first: a note is never recorded as delivered to a client that
        // has already gone (the stream's receiver is dropped once the call ends).
        let permit = tx.reserve().await.map_err(drop)?;
        match self.deliver(principal, note).await {
            Ok(Some(message)) => {
                permit.send(Ok(message));
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(status) => {
                permit.send(Err(status));
                Err(())
            }
        }
    }

    /// Delivers one note to `principal` if its consent still covers it; otherwise withholds
    /// and purges it. Both are audited.
    async fn deliver(
        &self,
        principal: &Principal,
        note: Note,
    ) -> Result<Option<StreamInboxResponse>, Status> {
        let secret = notes::open_secret(&note, &self.keyring).map_err(status::note_error)?;
        let recheck = decision::DisclosureRequest {
            sender_org: note.sender.orgnr,
            sender_role: note.sender.role,
            recipient_org: note.recipient_org,
            recipient_role: note.recipient_role,
            category: note.category.clone(),
            purpose: note.purpose.clone(),
            approval_attested: secret.approval.is_some(),
        };
        let decided = self
            .consents
            .decide(&secret.subject, &recheck, now(), &self.vocabulary)
            .map_err(status::consent_store_error)?;
        let id = note.id;
        if let Decision::Deny(deny) = decided {
            purge_note(
                &self.notes,
                &self.audit,
                &note,
                Some(principal),
                deny.reason.code(),
            )
            .await?;
            return Ok(None);
        }
        self.audit
            .append(&delivered_entry(principal, &note))
            .await
            .map_err(append_error)?;
        self.blocking(move |n| n.mark_delivered(&id)).await?;
        let Secret {
            subject,
            title,
            body,
            approval,
        } = secret;
        Ok(Some(StreamInboxResponse {
            event: Some(Event::Note(InboxNote {
                disclosure_id: note.id.to_string(),
                subject_id: subject.expose(),
                sender: Some(casegate_proto::v1::Actor {
                    orgnr: note.sender.orgnr.to_string(),
                    user_id: note.sender.user_id.clone(),
                    role: role_to_wire(note.sender.role),
                }),
                recipient_role: note.recipient_role.map_or(0, role_to_wire),
                category: note.category.to_string(),
                purpose: note.purpose.to_string(),
                title,
                body,
                content_type: note.content_type.clone(),
                approval: approval.map(|a| ApprovalAttestation {
                    hpr_number: a.hpr_number,
                    approved_at: Some(timestamp_to_wire(a.approved_at)),
                }),
                disclosed_at: Some(timestamp_to_wire(note.disclosed_at)),
                consent_id: note.consent_id.to_string(),
                consent_version: note.consent_version,
                content_sha256: note.content_sha256.to_vec(),
                audit_index: note.audit_index.unwrap_or_default(),
            })),
        }))
    }
}

/// Deletes the bodies the gateway may no longer hold: acknowledged notes past their retention,
/// and notes never acknowledged within the TTL. Each purge is audited. Then forgets the notes
/// purged more than `forget_after` ago and compacts the note store's journal. Returns how many
/// notes were purged.
pub(crate) async fn sweep(
    notes: &Notes,
    audit: &Audit,
    ttl: std::time::Duration,
    forget_after: std::time::Duration,
) -> Result<usize, Status> {
    /// Due notes read per round: memory stays bounded however many are due.
    const ROUND: usize = 256;
    let micros = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let now = now();
    let ttl_cutoff = Timestamp(now.0.saturating_sub(micros(ttl)));
    let mut count = 0;
    loop {
        let due = on_notes(notes, move |n| n.due(ttl_cutoff, now, ROUND)).await?;
        let last_round = due.len() < ROUND;
        for (note, expiry) in due {
            purge_note(notes, audit, &note, None, expiry.code()).await?;
            count += 1;
        }
        if last_round {
            break;
        }
    }
    let forget_cutoff = Timestamp(now.0.saturating_sub(micros(forget_after)));
    let mut forgotten = 0;
    loop {
        let n = on_notes(notes, move |n| n.forget_purged(forget_cutoff, ROUND)).await?;
        forgotten += n;
        if n < ROUND {
            break;
        }
    }
    if forgotten > 0 {
        tracing::info!(forgotten, "purged notes forgotten");
    }
    crate::base::metrics::inbox_backlog(on_notes(notes, |n| Ok(n.backlog())).await?);
    // Purges and acknowledgements leave superseded records behind: reclaim their files.
    on_notes(notes, |n| n.compact()).await?;
    on_notes(notes, |n| Ok(n.stats())).await?.record_metrics();
    Ok(count)
}
