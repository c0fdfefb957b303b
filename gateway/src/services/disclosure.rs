//! `casegate.v1.DisclosureService`: consent-gated notes and inboxes.

use casegate_proto::v1::{
    AcknowledgeRequest, AcknowledgeResponse, DiscloseRequest, DiscloseResponse, StreamInboxRequest,
    StreamInboxResponse, disclosure_service_server::DisclosureService,
};
use tonic::{Request, Response, Status};

use super::ResponseStream;
use crate::principal::Principal;
use crate::status::not_available;

#[derive(Debug, Default, Clone)]
pub struct DisclosureApi;

#[tonic::async_trait]
impl DisclosureService for DisclosureApi {
    async fn disclose(
        &self,
        request: Request<DiscloseRequest>,
    ) -> Result<Response<DiscloseResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("Disclose", "disclosure of notes"))
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
