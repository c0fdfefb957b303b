//! The note store: disclosed notes, their personal content sealed at rest, in the recipient's
//! inbox until acknowledged, then kept for the retention period and purged.
//!
//! [`NoteStorage`] is what the gateway's workflows use; [`NoteStore`] is its embedded
//! implementation, an append-only journal in the data folder where a note is written once and
//! each change of its progress is a small record after it ([`journal`], record layouts in
//! [`record`]). The expectations every implementation meets are one model-based suite
//! ([`storage::model`]).
//!
//! Boundary: plain synchronous Rust. No keys (the gateway seals and opens [`Secret`]s), no
//! audit entries (the gateway writes them and keeps the note store in step with the log), no
//! async runtime.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod error;
pub mod journal;
mod note;
pub mod record;
pub mod storage;

pub use error::NoteError;
pub use journal::{JournalStats, NoteStore};
pub use note::{Approval, Existing, Expiry, Note, NoteState, Sealed, Secret, purge_after};
pub use storage::NoteStorage;
