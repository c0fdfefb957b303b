//! The one place where the gateway's errors become gRPC statuses. Messages are for the caller:
//! precise about what to fix, free of internal detail and of personal data.

use tonic::Status;

use crate::auth::AuthError;

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            // The caller is who they say, but may not act as the token claims.
            AuthError::OrgMismatch | AuthError::UnknownRole => {
                Status::permission_denied(e.to_string())
            }
            AuthError::NoCertificate
            | AuthError::Certificate(_)
            | AuthError::MissingToken
            | AuthError::Malformed(_)
            | AuthError::UnknownIssuer
            | AuthError::AlgorithmNotAllowed(_)
            | AuthError::MissingKeyId
            | AuthError::UnknownKey
            | AuthError::Invalid(_)
            | AuthError::MissingClaim(_)
            | AuthError::InvalidPid
            | AuthError::CertificateBinding => Status::unauthenticated(e.to_string()),
        }
    }
}

/// The answer of an RPC whose capability this gateway version does not offer yet.
pub fn not_available(rpc: &str, capability: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc}: {capability} is not available in this version of the gateway"
    ))
}
