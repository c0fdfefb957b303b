//! The caller's access token on every request of a gRPC client (RFC 6750 §2.1).

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
};

/// Puts the caller's token on every request.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(pub(crate) MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
