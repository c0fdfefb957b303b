//! `casegate.v1.AuditService`: checkpoints, proofs, export; queries and access reports as
//! their work lands.

use casegate_audit::{checkpoint::SignedCheckpoint, log::Appended};
use casegate_consent::Role;
use casegate_proto::v1::{
    AuditReceipt, Checkpoint, ConsistencyProof, ExportEntriesRequest, ExportEntriesResponse,
    GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest,
    GetConsistencyProofResponse, GetInclusionProofRequest, GetInclusionProofResponse,
    InclusionProof, QueryAuditRequest, QueryAuditResponse, SubjectAccessReportRequest,
    SubjectAccessReportResponse, audit_service_server::AuditService,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::ResponseStream;
use crate::{
    audit::Audit,
    principal::Principal,
    status::{not_available, read_error},
};

/// Entries read per blocking step of an export.
const EXPORT_CHUNK: u64 = 256;

#[derive(Debug, Clone)]
pub struct AuditApi {
    audit: Audit,
}

impl AuditApi {
    pub fn new(audit: Audit) -> Self {
        Self { audit }
    }
}

/// The wire form of a signed checkpoint.
pub fn checkpoint_message(signed: &SignedCheckpoint) -> Checkpoint {
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
pub async fn receipt(audit: &Audit, appended: &Appended) -> Result<AuditReceipt, Status> {
    let audit = audit.clone();
    let appended = appended.clone();
    blocking(move || {
        let size = appended.checkpoint.checkpoint.size;
        let hashes = audit
            .log()
            .inclusion_proof(appended.index, size)
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
    })
    .await
}

/// The receipt for entry `index` against the newest checkpoint (a repeated request's receipt).
pub async fn receipt_at(audit: &Audit, index: u64) -> Result<AuditReceipt, Status> {
    let log_audit = audit.clone();
    let appended = blocking(move || {
        let log = log_audit.log();
        Ok(Appended {
            index,
            leaf_hash: log.leaf_hash(index).map_err(read_error)?,
            checkpoint: log.checkpoint(),
        })
    })
    .await?;
    receipt(audit, &appended).await
}

/// Runs blocking log reads off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("internal error"))?
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        Principal::of(&request)?;
        let log = self.audit.log();
        Ok(Response::new(GetCheckpointResponse {
            checkpoint: Some(checkpoint_message(&log.checkpoint())),
            verifier_key: log.verifier().to_vkey(),
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
        let audit = self.audit.clone();
        let response = blocking(move || {
            let log = audit.log();
            let newest = log.checkpoint();
            let size = tree_size_or_newest("tree_size", tree_size, newest.checkpoint.size)?;
            if leaf_index >= size {
                return Err(Status::out_of_range(format!(
                    "leaf_index {leaf_index} is not in a tree of {size} entries"
                )));
            }
            let hashes = log.inclusion_proof(leaf_index, size).map_err(read_error)?;
            Ok(GetInclusionProofResponse {
                proof: Some(InclusionProof {
                    leaf_index,
                    tree_size: size,
                    hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                }),
                leaf_hash: log.leaf_hash(leaf_index).map_err(read_error)?.to_vec(),
                checkpoint: (size == newest.checkpoint.size).then(|| checkpoint_message(&newest)),
            })
        })
        .await?;
        Ok(Response::new(response))
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
        let audit = self.audit.clone();
        let response = blocking(move || {
            let log = audit.log();
            let newest = log.checkpoint();
            let second = tree_size_or_newest("second_size", second_size, newest.checkpoint.size)?;
            if first_size == 0 || first_size > second {
                return Err(Status::invalid_argument(format!(
                    "first_size must be between 1 and second_size ({second})"
                )));
            }
            let hashes = log
                .consistency_proof(first_size, second)
                .map_err(read_error)?;
            Ok(GetConsistencyProofResponse {
                proof: Some(ConsistencyProof {
                    first_size,
                    second_size: second,
                    hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                }),
                checkpoint: (second == newest.checkpoint.size).then(|| checkpoint_message(&newest)),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    type ExportEntriesStream = ResponseStream<ExportEntriesResponse>;

    async fn export_entries(
        &self,
        request: Request<ExportEntriesRequest>,
    ) -> Result<Response<Self::ExportEntriesStream>, Status> {
        Principal::of(&request)?.require_role(&[Role::PrivacyOfficer])?;
        let ExportEntriesRequest {
            start_index,
            end_index,
        } = *request.get_ref();
        let newest = self.audit.log().checkpoint().checkpoint.size;
        let end = tree_size_or_newest("end_index", end_index, newest)?;
        if start_index > end {
            return Err(Status::out_of_range(format!(
                "start_index {start_index} is after end_index {end}"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNK as usize);
        let audit = self.audit.clone();
        // Read a chunk on a blocking thread, then send it at the client's pace without holding
        // that thread: a slow reader costs a task, not a thread.
        tokio::spawn(async move {
            let mut from = start_index;
            while from < end {
                let to = end.min(from + EXPORT_CHUNK);
                let reader = audit.clone();
                let chunk = blocking(move || {
                    let log = reader.log();
                    (from..to)
                        .map(|index| {
                            Ok(ExportEntriesResponse {
                                index,
                                entry: log.entry(index).map_err(read_error)?,
                                leaf_hash: log.leaf_hash(index).map_err(read_error)?.to_vec(),
                            })
                        })
                        .collect::<Result<Vec<_>, Status>>()
                })
                .await;
                match chunk {
                    Ok(items) => {
                        for item in items {
                            if tx.send(Ok(item)).await.is_err() {
                                return; // the client went away
                            }
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
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
        Principal::of(&request)?;
        Err(not_available("QueryAudit", "audit queries"))
    }

    async fn subject_access_report(
        &self,
        request: Request<SubjectAccessReportRequest>,
    ) -> Result<Response<SubjectAccessReportResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available(
            "SubjectAccessReport",
            "subject access reports",
        ))
    }
}
