//! `casegate.v1.DisclosureService`: consent-gated notes.
//!
//! `Disclose`: parse → idempotency (the sender's request id) → decide against the subject's
//! consents → refusal: audited, `PERMISSION_DENIED` (`FAILED_PRECONDITION` for
//! `approval_missing`) with a `google.rpc.ErrorInfo`; permit: seal and store the note
//! (pending, flushed), append `disclosure permitted` (durable), put it in the inbox, answer the
//! receipt. Inbox streaming and acknowledgement arrive with the rest of the disclosure work.

use std::{collections::HashMap, sync::Arc};

use casegate_audit::entry::{ConsentRef, Entry, EntryKind};
use casegate_consent::{
    Vocabulary,
    decision::{self, Decision, POLICY_VERSION, Reason},
    store::ConsentStore,
};
use casegate_proto::v1::{
    AcknowledgeRequest, AcknowledgeResponse, DiscloseRequest, DiscloseResponse, DisclosureReceipt,
    StreamInboxRequest, StreamInboxResponse, disclosure_service_server::DisclosureService,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    ResponseStream,
    audit::{receipt, receipt_at},
};
use crate::{
    audit::{self as audit_log, Audit},
    convert::{
        consent::{PROFESSIONALS, actor},
        disclosure::{DiscloseInput, disclose_request, now},
    },
    keyring::Keyring,
    notes::{Note, NoteError, NoteState, NoteStore, Secret},
    principal::Principal,
    pseudonym::Pseudonymizer,
    status::{append_error, not_available},
};

/// The `google.rpc.ErrorInfo` domain of refusal reasons.
pub const ERROR_DOMAIN: &str = "casegate.no";

#[derive(Debug, Clone)]
pub struct DisclosureApi {
    pub notes: NoteStore,
    pub consents: ConsentStore,
    pub audit: Audit,
    pub pseudonyms: Pseudonymizer,
    pub keyring: Arc<Keyring>,
    pub vocabulary: Arc<Vocabulary>,
    pub max_body_bytes: usize,
}

fn note_error(e: NoteError) -> Status {
    tracing::error!(error = %e, "note store failed");
    Status::internal("the note store failed")
}

/// The refusal status for `reason`, machine-readable in its details.
fn refusal(reason: Reason) -> Status {
    let code = if reason == Reason::ApprovalMissing {
        Code::FailedPrecondition
    } else {
        Code::PermissionDenied
    };
    Status::with_error_details(
        code,
        format!(
            "disclosure refused: {}: {}",
            reason.code(),
            reason.explain()
        ),
        ErrorDetails::with_error_info(
            reason.code(),
            ERROR_DOMAIN,
            HashMap::<String, String>::new(),
        ),
    )
}

impl DisclosureApi {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&NoteStore) -> Result<T, NoteError> + Send + 'static,
    ) -> Result<T, Status> {
        let notes = self.notes.clone();
        tokio::task::spawn_blocking(move || f(&notes))
            .await
            .map_err(|_| Status::internal("internal error"))?
            .map_err(note_error)
    }

    /// The audit entry of a decision about `input` by `principal`.
    fn entry(&self, kind: EntryKind, principal: &Principal, input: &DiscloseInput) -> Entry {
        let mut entry = Entry::new(kind, audit_log::now_micros());
        entry.actor = Some(audit_log::actor(principal));
        entry.subject_pseudonym = Some(self.pseudonyms.pseudonym(&input.subject));
        entry.category = Some(input.category.to_string());
        entry.purpose = Some(input.purpose.to_string());
        entry.sender_orgnr = Some(principal.orgnr.to_string());
        entry.recipient_orgnr = Some(input.recipient_org.to_string());
        entry.content_sha256 = Some(sha256(&input.body));
        entry.request_id = Some(input.request_id.clone());
        entry.policy_version = Some(POLICY_VERSION.to_owned());
        entry
    }

    /// The answer to a repeated request id.
    async fn repeated(
        &self,
        existing: crate::notes::Existing,
        fingerprint: [u8; 32],
    ) -> Result<Response<DiscloseResponse>, Status> {
        if existing.fingerprint != fingerprint {
            return Err(Status::already_exists(
                "request_id was already used for a different disclosure",
            ));
        }
        let notes = self.notes.clone();
        let note = tokio::task::spawn_blocking(move || notes.get(&existing.id))
            .await
            .map_err(|_| Status::internal("internal error"))?;
        let note = match note {
            Ok(note) => note,
            // Reserved by a call still deciding (or refused and about to release it).
            Err(NoteError::NotFound) => {
                return Err(Status::unavailable(
                    "a disclosure with this request_id is in progress; retry shortly",
                ));
            }
            Err(e) => return Err(note_error(e)),
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
        let fingerprint = input.fingerprint();
        let id = uuid::Uuid::now_v7();

        let (sender, request_id) = (principal.orgnr, input.request_id.clone());
        let reserved = self
            .blocking(move |n| n.reserve(sender, &request_id, id, fingerprint))
            .await?;
        if let Err(existing) = reserved {
            return self.repeated(existing, fingerprint).await;
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
        let decided = self.consents.with_terms(&input.subject, |views| {
            decision::decide(&disclosure, views, now(), &self.vocabulary)
        });
        let decided = match decided {
            Ok(d) => d,
            Err(e) => {
                let (sender, request_id) = (principal.orgnr, input.request_id.clone());
                let _ = self.blocking(move |n| n.release(sender, &request_id)).await;
                tracing::error!(error = %e, "consent store failed");
                return Err(Status::internal("the consent store failed"));
            }
        };
        crate::metrics::decision(match &decided {
            Decision::Permit(_) => "permit",
            Decision::Deny(d) => d.reason.code(),
        });

        let permit = match decided {
            Decision::Permit(permit) => permit,
            Decision::Deny(deny) => {
                // Refusals are audited; the request id stays free for a later attempt.
                let (sender, request_id) = (principal.orgnr, input.request_id.clone());
                self.blocking(move |n| n.release(sender, &request_id))
                    .await?;
                let mut entry = self.entry(EntryKind::DisclosureRefused, principal, &input);
                entry.reason = Some(deny.reason.code().to_owned());
                if let Some((consent_id, version)) = deny.nearest
                    && let Ok(record) = self.consents.get(&consent_id, Some(version))
                {
                    entry.consent = Some(ConsentRef {
                        id: consent_id.to_string(),
                        version,
                        record_sha256: record.record_hash(),
                    });
                }
                self.audit.append(&entry).await.map_err(append_error)?;
                return Err(refusal(deny.reason));
            }
        };

        let pseudonym = self.pseudonyms.pseudonym(&input.subject);
        let secret = Secret {
            subject: input.subject,
            title: input.title.clone(),
            body: input.body.clone(),
            approval: input.approval.clone(),
        };
        let plain = serde_json::to_vec(&secret).map_err(|_| Status::internal("internal error"))?;
        let sealed = self
            .keyring
            .seal(&plain, &Note::aad(&id, &pseudonym, input.recipient_org))
            .map_err(|e| {
                tracing::error!(error = %e, "sealing a note failed");
                Status::internal("internal error")
            })?;
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
            content_sha256: sha256(&input.body),
            subject_pseudonym: pseudonym,
            disclosed_at: now(),
            audit_index: None,
            sealed: Some(sealed),
        };
        let pending = note.clone();
        self.blocking(move |n| n.put_pending(&pending)).await?;

        let mut entry = self.entry(EntryKind::DisclosurePermitted, principal, &input);
        entry.consent = Some(ConsentRef {
            id: permit.consent_id.to_string(),
            version: permit.version,
            record_sha256: permit.record_hash,
        });
        entry.disclosure_id = Some(id.to_string());
        let appended = self.audit.append(&entry).await.map_err(append_error)?;
        let index = appended.index;
        self.blocking(move |n| n.make_deliverable(&id, index))
            .await?;

        Ok(Response::new(DiscloseResponse {
            receipt: Some(DisclosureReceipt {
                disclosure_id: id.to_string(),
                consent_id: permit.consent_id.to_string(),
                consent_version: permit.version,
                content_sha256: note.content_sha256.to_vec(),
                audit: Some(receipt(&self.audit, &appended).await?),
            }),
        }))
    }

    type StreamInboxStream = ResponseStream<StreamInboxResponse>;

    async fn stream_inbox(
        &self,
        request: Request<StreamInboxRequest>,
    ) -> Result<Response<Self::StreamInboxStream>, Status> {
        Principal::of(&request)?;
        Err(not_available("StreamInbox", "the note inbox"))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("Acknowledge", "the note inbox"))
    }
}
