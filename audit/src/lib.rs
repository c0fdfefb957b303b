//! The tamper-evident audit log. Entries, Merkle tree, checkpoints and the verifier arrive with the audit-log work.

#![forbid(unsafe_code)]
