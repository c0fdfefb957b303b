//! The one place where the gateway's errors become gRPC statuses. Messages are for the caller:
//! precise about what to fix, free of internal detail and of personal data.

use tonic::Status;

use casegate_audit::log::{AppendError, ReadError};

use crate::auth::AuthError;

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            // The caller is who they say, but may not act as the token claims.
            AuthError::OrgMismatch | AuthError::UnknownRole | AuthError::JobseekerOutsidePortal => {
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
            | AuthError::InvalidPid(_)
            | AuthError::InvalidClaim(..)
            | AuthError::InvalidOrg
            | AuthError::UnsupportedHeader(_)
            | AuthError::InvalidHeader(_)
            | AuthError::UnsupportedConfirmation
            | AuthError::CertificateBinding => Status::unauthenticated(e.to_string()),
        }
    }
}

/// The refusal of every call while the system clock is `behind` the audit log's newest entry
/// by more than [`crate::clock::TOLERANCE`].
pub fn clock_behind(behind: std::time::Duration) -> Status {
    Status::unavailable(format!(
        "the gateway's clock is {} s behind its audit log's newest entry; it refuses calls until \
         the clock is corrected",
        behind.as_secs()
    ))
}

/// A failed audit-log read.
pub fn read_error(e: ReadError) -> Status {
    {
        match e {
            ReadError::OutOfRange { .. } => Status::out_of_range(e.to_string()),
            ReadError::Sizes(..) => Status::invalid_argument(e.to_string()),
            ReadError::Io(io) => {
                tracing::error!(error = %io, "audit log read failed");
                Status::internal("the audit log could not be read")
            }
        }
    }
}

/// A failed audit-log append.
pub fn append_error(e: AppendError) -> Status {
    {
        tracing::error!(error = %e, "audit append failed");
        match e {
            AppendError::QueueFull | AppendError::Closed => {
                Status::unavailable("the audit log is not accepting entries; retry shortly")
            }
            AppendError::TooLarge(_)
            | AppendError::Failed(_)
            | AppendError::TimeWentBack { .. } => {
                Status::internal("the audit log could not record this call")
            }
        }
    }
}
