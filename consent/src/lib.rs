//! The consent domain: who is who (organisations, subjects, roles), and — as the consent work
//! lands — consent records, vocabularies, the pure disclosure decision and the consent store.
//!
//! Boundary: plain synchronous Rust. No network, no gRPC, no async runtime; the gateway converts
//! wire types into these at its edge.

#![forbid(unsafe_code)]

mod error;
mod mod11;
mod org_number;
mod role;
mod subject_id;
mod vocabulary;

pub use error::ParseError;
pub use org_number::OrgNumber;
pub use role::Role;
pub use subject_id::SubjectId;
pub use vocabulary::{Category, CategoryRule, Purpose, Vocabulary};
