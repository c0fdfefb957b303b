//! The `casegate.v1` gRPC contract: generated message types, clients and servers.
//!
//! Nothing but the contract lives here; conversions to domain types belong to the gateway.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

/// Package `casegate.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("casegate.v1");
}

/// Encoded `FileDescriptorSet` of every `casegate.v1` file and its imports, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/casegate_v1_descriptor.bin"));
