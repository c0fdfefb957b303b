//! The workflows' state: the audit trail (the log's handle, its entries, reconciliation of the
//! stores with it), the note store, the consent store's seam and the verified caller. Uses
//! `crypto` and `base`; knows nothing of TLS, the wire messages (`casegate_proto`) or
//! configuration files (a call that must end does so with a `tonic::Status`).

pub(crate) mod audit;
pub(crate) mod notes;
pub(crate) mod principal;
pub mod reconcile;

/// The note store the workflows use: any [`NoteStorage`] implementation, shared.
///
/// [`NoteStorage`]: notes::NoteStorage
pub(crate) type Notes = std::sync::Arc<dyn notes::NoteStorage>;

/// The consent store the workflows use: any [`ConsentStorage`] implementation, shared.
///
/// [`ConsentStorage`]: casegate_consent::storage::ConsentStorage
pub(crate) type Consents = std::sync::Arc<dyn casegate_consent::storage::ConsentStorage>;

/// A consent store call run off the runtime that panicked or was cancelled, as the store's
/// own I/O failure (it is logged and answered as one).
pub(crate) fn consent_task_failed(
    e: &tokio::task::JoinError,
) -> casegate_consent::store::StoreError {
    casegate_consent::store::StoreError::Io(std::io::Error::other(format!(
        "the store task failed: {e}"
    )))
}
