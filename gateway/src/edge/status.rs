//! The one place where the gateway's errors become gRPC statuses. Messages are for the caller:
//! precise about what to fix, free of internal detail and of personal data.

use std::collections::HashMap;

use casegate_audit::{
    index::IndexError,
    log::{AppendError, ReadError},
};
use casegate_consent::{decision::Reason, store::StoreError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    app::notes::NoteError,
    edge::{auth::AuthError, convert::FieldError},
};

/// The `google.rpc.ErrorInfo` domain of refusal reasons.
pub(crate) const ERROR_DOMAIN: &str = "casegate.no";

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
            AuthError::ClockBehind(_) => Status::unavailable(e.to_string()),
            // With a `google.rpc.RetryInfo` detail saying when to retry.
            AuthError::RateLimited(retry_after) => Status::with_error_details(
                Code::ResourceExhausted,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
        }
    }
}

/// A failed audit-log read.
pub(crate) fn read_error(e: ReadError) -> Status {
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
pub(crate) fn append_error(e: AppendError) -> Status {
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

/// A failed audit-index query: logged; the caller learns only that it failed.
pub(crate) fn index_error(e: IndexError) -> Status {
    tracing::error!(error = %e, "audit index failed");
    Status::internal("the audit index failed")
}

/// A consent the caller may not see, or that does not exist: the same answer for both, so
/// that ids cannot be probed.
pub(crate) fn consent_not_visible() -> Status {
    Status::permission_denied("no consent with this id is visible to you")
}

/// A consent store refusal or failure (failures are logged; the caller learns only that the
/// store failed).
pub(crate) fn consent_store_error(e: StoreError) -> Status {
    match e {
        StoreError::NotFound => consent_not_visible(),
        StoreError::AlreadyWithdrawn => {
            Status::failed_precondition("the consent is already withdrawn; withdrawal is final")
        }
        StoreError::NotActive(state) => Status::failed_precondition(format!(
            "supersedes_consent_id: the consent is {state}, not active"
        )),
        StoreError::SubjectMismatch => {
            Status::invalid_argument("supersedes_consent_id: names a consent about another subject")
        }
        StoreError::Storage(_) | StoreError::Io(_) | StoreError::Corrupt(_) => {
            tracing::error!(error = %e, "consent store failed");
            Status::internal("the consent store failed")
        }
    }
}

/// A note store refusal or failure (failures are logged).
pub(crate) fn note_error(e: NoteError) -> Status {
    if let NoteError::NotDeliverable(state) = e {
        // Changed meanwhile (a purge won the race): the caller's view is stale.
        return Status::failed_precondition(format!("the note is {state}, not in the inbox"));
    }
    tracing::error!(error = %e, "note store failed");
    Status::internal("the note store failed")
}

/// The refusal status for `reason`, machine-readable in its details.
pub(crate) fn refusal(reason: Reason) -> Status {
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

/// A request field that breaks its rule: `INVALID_ARGUMENT` naming the field and the rule.
impl From<FieldError> for Status {
    fn from(e: FieldError) -> Self {
        Status::invalid_argument(format!("{}: {}", e.field, e.rule))
    }
}

/// Work run off the runtime (`base::blocking::run`) that panicked or was cancelled: logged; the
/// caller learns only that it failed.
pub(crate) fn task_failed(e: tokio::task::JoinError) -> Status {
    tracing::error!(error = %e, "a blocking task failed");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_spent_rate_limit_is_resource_exhausted_with_retry_info() {
        let status = Status::from(AuthError::RateLimited(Duration::from_millis(250)));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "rate limit for your organisation exceeded; retry in 250 ms"
        );
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(250)));
    }

    #[test]
    fn a_clock_behind_the_log_is_unavailable() {
        let status = Status::from(AuthError::ClockBehind(Duration::from_secs(7)));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("7 s behind"),
            "{}",
            status.message()
        );
    }
}
