//! The consent domain: who is who (organisations, subjects, roles), the vocabularies of
//! categories and purposes, consent records, the pure disclosure decision and the consent
//! store.
//!
//! Boundary: plain synchronous Rust. No network, no gRPC, no async runtime; the gateway converts
//! wire types into these at its edge.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod decision;
mod error;
mod mod11;
mod org_number;
pub mod record;
mod role;
mod serde_impls;
pub mod storage;
pub mod store;
mod subject_id;
pub mod terms;
mod vocabulary;

pub use error::ParseError;
pub use org_number::OrgNumber;
pub use role::Role;
pub use subject_id::SubjectId;
pub use vocabulary::{Category, CategoryRule, Purpose, Vocabulary};
