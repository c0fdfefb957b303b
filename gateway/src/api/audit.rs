//! `casegate.v1.AuditService`: checkpoints, proofs and export; audit queries and subject
//! access reports, both answered from the audit index and both audited themselves.

mod summary;

use std::{collections::BTreeMap, sync::Arc};

use casegate_audit::merkle::leaf_hash;
use casegate_audit::{
    checkpoint::SignedCheckpoint,
    entry::{self, Access, AuditQueried, AuditQuery, Entry, Event, SubjectReportIssued},
    index::Filter,
    log::Appended,
};
use casegate_consent::{
    OrgNumber, Role,
    record::{ConsentRecord, Timestamp},
};
use casegate_proto::v1::{
    AuditReceipt, Checkpoint, ConsistencyProof, ExportEntriesRequest, ExportEntriesResponse,
    GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest,
    GetConsistencyProofResponse, GetInclusionProofRequest, GetInclusionProofResponse,
    InclusionProof, QueryAuditRequest, QueryAuditResponse, ReportEvent, SubjectAccessReportRequest,
    SubjectAccessReportResponse, SummarizeAuditRequest, SummarizeAuditResponse,
    audit_service_server::AuditService,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    ResponseStream,
    backend::{Backend, Shared, matching},
};
use crate::{
    app::audit,
    app::principal::Principal,
    crypto::pseudonym::Pseudonymizer,
    edge::convert::{audit as convert, consent::record_to_wire, timestamp_to_wire},
    edge::status::{self, append_error, read_error},
};

/// Entries read at a time by an export.
const EXPORT_CHUNK: u64 = 256;

#[derive(Debug, Clone)]
pub(crate) struct AuditApi {
    pub backend: Shared,
    pub pseudonyms: Pseudonymizer,
    /// Organisations whose privacy officers see every entry.
    pub supervisory: Arc<[OrgNumber]>,
    /// Registered organisation names, for reports.
    pub names: Arc<BTreeMap<OrgNumber, String>>,
    /// The largest message the gateway sends (`[limits] max_message_bytes`).
    pub max_message_bytes: usize,
}

/// The wire form of a signed checkpoint.
pub(crate) fn checkpoint_message(signed: &SignedCheckpoint) -> Checkpoint {
    Checkpoint {
        signed_note: signed.note.clone(),
        origin: signed.checkpoint.origin.clone(),
        tree_size: signed.checkpoint.size,
        root_hash: signed.checkpoint.root.to_vec(),
    }
}

/// A requested tree size, where 0 means the newest checkpoint's; beyond it is `OUT_OF_RANGE`.
fn tree_size_or_newest(field: &str, requested: u64, newest: u64) -> Result<u64, Status> {
    match requested {
        0 => Ok(newest),
        size if size > newest => Err(Status::out_of_range(format!(
            "{field} {size} is beyond the newest checkpoint ({newest})"
        ))),
        size => Ok(size),
    }
}

/// The receipt for an append: its index and leaf hash, and the checkpoint of its batch with an
/// inclusion proof against it.
pub(crate) async fn receipt(
    backend: &dyn Backend,
    appended: &Appended,
) -> Result<AuditReceipt, Status> {
    let size = appended.checkpoint.checkpoint.size;
    let hashes = backend
        .inclusion_proof(appended.index, size)
        .await
        .map_err(read_error)?;
    Ok(AuditReceipt {
        audit_index: appended.index,
        leaf_hash: appended.leaf_hash.to_vec(),
        checkpoint: Some(checkpoint_message(&appended.checkpoint)),
        inclusion_proof: Some(InclusionProof {
            leaf_index: appended.index,
            tree_size: size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }),
    })
}

/// The receipt for entry `index` against the newest checkpoint (a repeated request's receipt).
pub(crate) async fn receipt_at(backend: &dyn Backend, index: u64) -> Result<AuditReceipt, Status> {
    let appended = Appended {
        index,
        leaf_hash: backend.leaf_hash(index).await.map_err(read_error)?,
        checkpoint: backend.checkpoint().await?,
    };
    receipt(backend, &appended).await
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        Principal::of(&request)?;
        Ok(Response::new(GetCheckpointResponse {
            checkpoint: Some(checkpoint_message(&*self.backend.checkpoint().await?)),
            verifier_key: self.backend.verifier().to_vkey(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        Principal::of(&request)?;
        let GetInclusionProofRequest {
            leaf_index,
            tree_size,
        } = *request.get_ref();
        let backend = self.backend.as_ref();
        let newest = backend.checkpoint().await?;
        let size = tree_size_or_newest("tree_size", tree_size, newest.checkpoint.size)?;
        if leaf_index >= size {
            return Err(Status::out_of_range(format!(
                "leaf_index {leaf_index} is not in a tree of {size} entries"
            )));
        }
        // Any index a client names, however old: read off the runtime.
        let hashes = backend
            .inclusion_proofs(&[leaf_index], size)
            .await
            .map_err(read_error)?
            .pop()
            .unwrap_or_default();
        Ok(Response::new(GetInclusionProofResponse {
            proof: Some(InclusionProof {
                leaf_index,
                tree_size: size,
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            }),
            leaf_hash: backend
                .leaf_hash(leaf_index)
                .await
                .map_err(read_error)?
                .to_vec(),
            checkpoint: (size == newest.checkpoint.size).then(|| checkpoint_message(&newest)),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        Principal::of(&request)?;
        let GetConsistencyProofRequest {
            first_size,
            second_size,
        } = *request.get_ref();
        let newest = self.backend.checkpoint().await?;
        let second = tree_size_or_newest("second_size", second_size, newest.checkpoint.size)?;
        if first_size == 0 || first_size > second {
            return Err(Status::invalid_argument(format!(
                "first_size must be between 1 and second_size ({second})"
            )));
        }
        let hashes = self
            .backend
            .consistency_proof(first_size, second)
            .await
            .map_err(read_error)?;
        Ok(Response::new(GetConsistencyProofResponse {
            proof: Some(ConsistencyProof {
                first_size,
                second_size: second,
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            }),
            checkpoint: (second == newest.checkpoint.size).then(|| checkpoint_message(&newest)),
        }))
    }

    type ExportEntriesStream = ResponseStream<ExportEntriesResponse>;

    async fn export_entries(
        &self,
        request: Request<ExportEntriesRequest>,
    ) -> Result<Response<Self::ExportEntriesStream>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&[Role::PrivacyOfficer])?;
        if self.scope(principal) != Scope::All {
            return Err(Status::permission_denied(
                "the whole log is exported only to officers of supervisory organisations \
                 ([privacy] supervisory_orgs); use QueryAudit for your organisation's entries",
            ));
        }
        let ExportEntriesRequest {
            start_index,
            end_index,
        } = *request.get_ref();
        let newest = self.backend.checkpoint().await?.checkpoint.size;
        let end = tree_size_or_newest("end_index", end_index, newest)?;
        if start_index > end {
            return Err(Status::out_of_range(format!(
                "start_index {start_index} is after end_index {end}"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNK as usize);
        let backend = self.backend.clone();
        // Read a chunk, then send it at the client's pace.
        tokio::spawn(async move {
            let mut from = start_index;
            while from < end {
                let to = end.min(from + EXPORT_CHUNK);
                match backend.entries(from, to).await {
                    Ok(entries) => {
                        for (index, entry) in (from..).zip(entries) {
                            let item = ExportEntriesResponse {
                                index,
                                leaf_hash: leaf_hash(&entry).to_vec(),
                                entry,
                            };
                            if tx.send(Ok(item)).await.is_err() {
                                return; // the client went away
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(read_error(e))).await;
                        return;
                    }
                }
                from = to;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type QueryAuditStream = ResponseStream<QueryAuditResponse>;

    async fn query_audit(
        &self,
        request: Request<QueryAuditRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        let principal = Principal::of(&request)?;
        if let Err(status) = principal.require_role(&[Role::PrivacyOfficer]) {
            self.refused(queried(principal, None, Access::Refused(DENIED.into())))
                .await?;
            return Err(status);
        }
        let query = convert::query_request(request.get_ref())?;
        let newest = self.backend.checkpoint().await?.checkpoint.size;
        if query.start_index > newest {
            return Err(Status::out_of_range(format!(
                "start_index {} is beyond the newest checkpoint ({newest})",
                query.start_index
            )));
        }
        let scope = self.scope(principal);
        let pseudonym = query.subject.as_ref().map(|s| self.pseudonyms.pseudonym(s));
        let asked = AuditQuery::Entries(query.recorded(), scope.recorded());
        let entry = queried(principal, pseudonym, Access::Answered(asked));
        let appended = self.backend.append(&entry).await.map_err(append_error)?;

        let filter = Filter {
            subject: pseudonym,
            orgnr: query.orgnr.map(|o| o.to_string()),
            visible_to: scope.visible_to(),
            consents: Vec::new(),
            kinds: query.kinds.clone(),
            reasons: query.reasons.clone(),
            from_micros: query.from.map(|t| t.0),
            until_micros: query.until.map(|t| t.0),
        };
        let end = appended.checkpoint.checkpoint.size;
        let (start, limit) = (query.start_index, query.limit as usize);
        let with_bytes = query.include_entry_bytes;
        let mut found = Vec::new();
        matching(
            self.backend.as_ref(),
            filter,
            start,
            end,
            limit,
            |index, entry, leaf, bytes| {
                found.push(Ok(QueryAuditResponse {
                    entry: Some(convert::entry_to_wire(index, entry, leaf)),
                    entry_bytes: if with_bytes { bytes } else { Vec::new() },
                }));
                Ok(())
            },
        )
        .await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(found))))
    }

    async fn summarize_audit(
        &self,
        request: Request<SummarizeAuditRequest>,
    ) -> Result<Response<SummarizeAuditResponse>, Status> {
        self.summarize(request).await
    }

    async fn subject_access_report(
        &self,
        request: Request<SubjectAccessReportRequest>,
    ) -> Result<Response<SubjectAccessReportResponse>, Status> {
        let principal = Principal::of(&request)?;
        let subject = convert::report_request(request.get_ref())?;
        let pseudonym = self.pseudonyms.pseudonym(&subject);
        let scope = match principal.role {
            Role::Jobseeker if principal.pid.as_ref() == Some(&subject) => Scope::All,
            Role::PrivacyOfficer => self.scope(principal),
            role => {
                self.refused(reported(
                    principal,
                    pseudonym,
                    Access::Refused(DENIED.into()),
                ))
                .await?;
                return Err(Status::permission_denied(if role == Role::Jobseeker {
                    "a jobseeker may request only their own report".to_owned()
                } else {
                    format!(
                        "role {role} may not request a subject access report; allowed: \
                         the jobseeker themself, privacy_officer"
                    )
                }));
            }
        };
        let entry = reported(principal, pseudonym, Access::Answered(scope.recorded()));
        let appended = self.backend.append(&entry).await.map_err(append_error)?;

        let now = Timestamp(audit::now_micros());
        let mut records = self
            .backend
            .consents_of(subject)
            .await
            .map_err(status::consent_store_error)?;
        records.retain(|r| scope.sees_consent(r));
        let checkpoint = appended.checkpoint.clone();
        let end = checkpoint.checkpoint.size;
        // An officer sees the grant and withdrawal of every consent version the report
        // holds, whoever recorded them, so its state is proven by entries in the report.
        let filter = Filter {
            subject: Some(pseudonym),
            visible_to: scope.visible_to(),
            consents: match scope {
                Scope::All => Vec::new(),
                Scope::Org(_) => records
                    .iter()
                    .map(|r| (r.id.to_string(), r.version))
                    .collect(),
            },
            ..Filter::default()
        };
        let names = &self.names;
        let name = |org: Option<&str>| {
            org.and_then(|o| o.parse::<OrgNumber>().ok())
                .and_then(|o| names.get(&o).cloned())
                .unwrap_or_default()
        };
        let mut found = Vec::new();
        matching(
            self.backend.as_ref(),
            filter,
            0,
            end,
            usize::MAX,
            |index, entry, leaf, bytes| {
                found.push((
                    index,
                    ReportEvent {
                        entry: Some(convert::entry_to_wire(index, entry, leaf)),
                        sender_name: name(entry.sender_orgnr()),
                        recipient_name: name(entry.recipient_orgnr()),
                        actor_name: name(entry.actor().map(|a| a.orgnr.as_str())),
                        entry_bytes: bytes,
                        inclusion_proof: None,
                    },
                ));
                Ok(())
            },
        )
        .await?;
        let indexes: Vec<u64> = found.iter().map(|(index, _)| *index).collect();
        let proofs = self
            .backend
            .inclusion_proofs(&indexes, end)
            .await
            .map_err(read_error)?;
        let events: Vec<ReportEvent> = found
            .into_iter()
            .zip(proofs)
            .map(|((index, mut event), hashes)| {
                event.inclusion_proof = Some(InclusionProof {
                    leaf_index: index,
                    tree_size: end,
                    hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                });
                event
            })
            .collect();
        let report = SubjectAccessReportResponse {
            subject_id: subject.expose(),
            issued_at: Some(timestamp_to_wire(Timestamp(entry.time_micros))),
            consents: records.iter().map(|r| record_to_wire(r, now)).collect(),
            consent_versions: records.iter().map(|r| r.canonical_content()).collect(),
            events,
            checkpoint: Some(checkpoint_message(&checkpoint)),
            verifier_key: self.backend.verifier().to_vkey(),
        };
        let size = prost::Message::encoded_len(&report);
        if size > self.max_message_bytes {
            return Err(Status::resource_exhausted(format!(
                "the report holds {} events ({size} bytes), more than one answer may carry \
                 ({} bytes); page through them with QueryAudit and start_index",
                report.events.len(),
                self.max_message_bytes
            )));
        }
        Ok(Response::new(report))
    }
}

/// What an officer's organisation may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything: the jobseeker about themself, a supervisory organisation.
    All,
    /// Entries the organisation is actor, sender or recipient of; consents it is a party to.
    Org(OrgNumber),
}

impl Scope {
    fn visible_to(self) -> Option<String> {
        match self {
            Scope::All => None,
            Scope::Org(org) => Some(org.to_string()),
        }
    }

    fn sees_consent(self, record: &ConsentRecord) -> bool {
        let Scope::Org(org) = self else {
            return true;
        };
        record.recorded_by.orgnr == org
            || record
                .withdrawal
                .as_ref()
                .is_some_and(|w| w.by.orgnr == org)
            || record.provisions.iter().any(|p| {
                p.senders
                    .iter()
                    .chain(&p.recipients)
                    .any(|party| party.orgnr == org)
            })
    }
}

impl Scope {
    /// The scope as its audit entry records it.
    fn recorded(self) -> entry::Scope {
        match self {
            Scope::All => entry::Scope::All,
            Scope::Org(org) => entry::Scope::Org(org.to_string()),
        }
    }
}

/// The reason code of a refused look at the log.
const DENIED: &str = "permission_denied";

/// The entry recording that `principal` queried or summarised the log (about `subject`), or
/// was refused that.
fn queried(principal: &Principal, subject: Option<[u8; 32]>, access: Access<AuditQuery>) -> Entry {
    Entry::new(
        audit::now_micros(),
        Event::AuditQueried(AuditQueried {
            actor: audit::actor(principal),
            subject_pseudonym: subject,
            access,
            login: principal.login.clone(),
        }),
    )
}

/// The entry recording that `principal` was issued, or refused, a report about `subject`.
fn reported(principal: &Principal, subject: [u8; 32], access: Access<entry::Scope>) -> Entry {
    Entry::new(
        audit::now_micros(),
        Event::SubjectReportIssued(SubjectReportIssued {
            actor: audit::actor(principal),
            subject_pseudonym: subject,
            access,
            login: principal.login.clone(),
        }),
    )
}

impl AuditApi {
    fn scope(&self, principal: &Principal) -> Scope {
        if self.supervisory.contains(&principal.orgnr) {
            Scope::All
        } else {
            Scope::Org(principal.orgnr)
        }
    }

    /// Records a refused audit query or report request (the caller learns nothing more).
    async fn refused(&self, entry: Entry) -> Result<(), Status> {
        self.backend.append(&entry).await.map_err(append_error)?;
        Ok(())
    }
}
