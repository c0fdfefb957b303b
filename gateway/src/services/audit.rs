//! `casegate.v1.AuditService`: checkpoints, proofs, export, queries and access reports.

use casegate_proto::v1::{
    ExportEntriesRequest, ExportEntriesResponse, GetCheckpointRequest, GetCheckpointResponse,
    GetConsistencyProofRequest, GetConsistencyProofResponse, GetInclusionProofRequest,
    GetInclusionProofResponse, QueryAuditRequest, QueryAuditResponse, SubjectAccessReportRequest,
    SubjectAccessReportResponse, audit_service_server::AuditService,
};
use tonic::{Request, Response, Status};

use super::ResponseStream;
use crate::principal::Principal;
use crate::status::not_available;

const LOG: &str = "the signed audit log";

#[derive(Debug, Default, Clone)]
pub struct AuditApi;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("GetCheckpoint", LOG))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("GetInclusionProof", LOG))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("GetConsistencyProof", LOG))
    }

    type ExportEntriesStream = ResponseStream<ExportEntriesResponse>;

    async fn export_entries(
        &self,
        request: Request<ExportEntriesRequest>,
    ) -> Result<Response<Self::ExportEntriesStream>, Status> {
        Principal::of(&request)?;
        Err(not_available("ExportEntries", LOG))
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
