//! The workflows: the audit trail (entries, reconciliation, reports, replay), the note store, and
//! the verified caller. Uses `crypto` and `base`; knows nothing of gRPC transport, TLS or
//! configuration files.

pub(crate) mod audit;
pub mod notes;
pub(crate) mod principal;
pub mod reconcile;
