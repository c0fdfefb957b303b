//! The tamper-evident audit log: a versioned canonical entry encoding, an RFC 6962 Merkle tree
//! over append-only, CRC-framed segment files written with group commit, C2SP signed
//! checkpoints, O(log n) proofs, and an offline verifier.
//!
//! Boundary: plain synchronous Rust with its own writer thread. No network, no gRPC, no async
//! runtime; callers are told of durability through a completion callback.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod checkpoint;
pub mod durable;
pub mod ed25519;
pub mod entry;
pub mod frame;
pub mod index;
pub mod log;
pub mod merkle;
pub mod segment;
pub mod storage;
pub mod store;
pub mod verify;
