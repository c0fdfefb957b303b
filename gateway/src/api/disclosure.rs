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

use casegate_consent::decision;
use casegate_proto::v1::{
    AcknowledgeRequest, AcknowledgeResponse, ApprovalAttestation, BacklogComplete, DiscloseRequest,
    DiscloseResponse, DisclosureReceipt, InboxNote, StreamInboxRequest, StreamInboxResponse,
    disclosure_service_server::DisclosureService, stream_inbox_response::Event,
};
use tonic::{Request, Response, Status};

use super::{
    ResponseStream,
    audit::{receipt, receipt_at},
    backend::{Disclosed, Proposed, Shared},
};
use crate::{
    app::notes::{Note, NoteState, Secret, purge_after},
    app::principal::Principal,
    crypto::pseudonym::Pseudonymizer,
    edge::convert::{
        FieldError,
        consent::PROFESSIONALS,
        disclosure::{disclose_request, now},
        optional_role, role_to_wire, timestamp_to_wire,
    },
};

/// Inbox notes read at a time when streaming a backlog.
const BACKLOG_PAGE: usize = 64;
/// Messages an inbox stream holds before its client reads them.
const STREAM_BUFFER: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct DisclosureApi {
    pub backend: Shared,
    pub pseudonyms: Pseudonymizer,
    pub max_body_bytes: usize,
    /// How long a body is kept after acknowledgement.
    pub retention: std::time::Duration,
    /// Becomes true when the gateway shuts down: inbox streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Whether `principal` may receive `note`: their organisation, and the note addressed to the
/// whole organisation or to their role.
fn addressed_to(note: &Note, principal: &Principal) -> bool {
    note.recipient_org == principal.orgnr && note.recipient_role.is_none_or(|r| r == principal.role)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// A disclosure's receipt: the note's terms and its entry's audit receipt.
fn disclosure_receipt(note: &Note, audit: casegate_proto::v1::AuditReceipt) -> DisclosureReceipt {
    DisclosureReceipt {
        disclosure_id: note.id.to_string(),
        consent_id: note.consent_id.to_string(),
        consent_version: note.consent_version,
        content_sha256: note.content_sha256.to_vec(),
        audit: Some(audit),
    }
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
        let proposed = Proposed {
            principal,
            request: decision::DisclosureRequest {
                sender_org: principal.orgnr,
                sender_role: principal.role,
                recipient_org: input.recipient_org,
                recipient_role: input.recipient_role,
                category: input.category.clone(),
                purpose: input.purpose.clone(),
                approval_attested: input.approval.is_some(),
            },
            content_sha256,
            fingerprint: input.fingerprint(&content_sha256),
            pseudonym: self.pseudonyms.pseudonym(&input.subject),
            input: &input,
        };
        let receipt = match self.backend.disclose(proposed).await? {
            Disclosed::Permitted { note, appended } => {
                crate::base::metrics::decision("permit");
                disclosure_receipt(&note, receipt(self.backend.as_ref(), &appended).await?)
            }
            Disclosed::Refused(reason) => {
                crate::base::metrics::decision(reason.code());
                return Err(crate::edge::status::refusal(reason));
            }
            Disclosed::Repeated { note, index } => {
                disclosure_receipt(&note, receipt_at(self.backend.as_ref(), index).await?)
            }
        };
        Ok(Response::new(DiscloseResponse {
            receipt: Some(receipt),
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
        let mut live = self.backend.subscribe();
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
                let page = match api.backend.inbox_page(org, after, BACKLOG_PAGE).await {
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
                        Ok(d) if d.recipient == org && !sent.remove(&d.note) => d.note,
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
                let note = match api.backend.note(id).await {
                    Ok(Some(note))
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
        let note = match self.backend.note(id).await? {
            Some(note) if addressed_to(&note, principal) => note,
            _ => return Err(not_yours()),
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
        let appended = self
            .backend
            .acknowledge(principal, &note, at, purge_after)
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
        let Some((note, secret)) = self.backend.deliver(principal, note).await? else {
            return Ok(None);
        };
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
