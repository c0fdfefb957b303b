//! The audit log as the workflows see it: [`VerifiableLog`] (the verifiable-log model of
//! RFC 6962 §2 and RFC 9162 §2: append-only entries, a Merkle tree over them, signed
//! checkpoints, inclusion and consistency proofs), implemented by the embedded segment log
//! ([`AuditLog`]) and held to one suite of expectations ([`conformance`]).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::{io, sync::Arc};

use crate::{
    checkpoint::{SignedCheckpoint, Verifier},
    log::{AppendError, Appended, AuditLog, ReadError},
    merkle::Hash,
};

/// Called once an append is durable (or failed), from the log's own thread.
pub type Done = Box<dyn FnOnce(Result<Appended, AppendError>) + Send + 'static>;

/// An append-only log of canonical entries with a signed RFC 6962 tree over them.
///
/// Indexes are zero-based and contiguous; an entry is visible (in [`size`](Self::size),
/// [`entry`](Self::entry) and proofs) only once durable and covered by the newest checkpoint.
pub trait VerifiableLog: Send + Sync + std::fmt::Debug {
    /// Queues `entry` (canonical bytes); `done` is called once it is durable and covered by
    /// a signed checkpoint, or failed. Blocks while the queue is full.
    ///
    /// # Errors
    /// [`AppendError::TooLarge`], [`AppendError::Failed`], [`AppendError::Closed`]; later
    /// failures reach `done`.
    fn append(&self, entry: Vec<u8>, done: Done) -> Result<(), AppendError>;

    /// As [`append`](Self::append), but fails with [`AppendError::QueueFull`] instead of
    /// blocking.
    ///
    /// # Errors
    /// As `append`, and `QueueFull`.
    fn try_append(&self, entry: Vec<u8>, done: Done) -> Result<(), AppendError>;

    /// Appends and waits until the entry is durable.
    ///
    /// # Errors
    /// As [`append`](Self::append), and any failure of the write itself.
    fn append_blocking(&self, entry: Vec<u8>) -> Result<Appended, AppendError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.append(
            entry,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv().map_err(|_| AppendError::Closed)?
    }

    /// Why the log accepts no more appends, if it does not.
    fn failure(&self) -> Option<String>;

    /// How many entries are durable and covered by the newest checkpoint.
    fn size(&self) -> u64;

    /// The newest signed checkpoint (C2SP tlog-checkpoint); it covers [`size`](Self::size)
    /// entries.
    fn checkpoint(&self) -> Arc<SignedCheckpoint>;

    /// The verifier of the key checkpoints are signed with (C2SP signed-note).
    fn verifier(&self) -> &Verifier;

    /// The canonical bytes of entry `index`.
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] at or past the size; a read failure.
    fn entry(&self, index: u64) -> Result<Vec<u8>, ReadError>;

    /// The newest entry's time in microseconds since the Unix epoch (`None` while the log
    /// holds no entry with a readable time).
    fn newest_time(&self) -> Option<i64>;

    /// The RFC 6962 leaf hash (SHA-256 of 0x00 ‖ bytes) of entry `index`.
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`]; a read failure.
    fn leaf_hash(&self, index: u64) -> Result<Hash, ReadError>;

    /// The root of the tree of the first `size` entries (RFC 6962 §2.1).
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] past the size; a read failure.
    fn root(&self, size: u64) -> Result<Hash, ReadError>;

    /// The audit path of entry `index` in the tree of `size` entries (RFC 6962 §2.1.1).
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] for an index at or past `size` or a size past the log's.
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError>;

    /// The consistency proof between the trees of `size1` and `size2` entries (RFC 6962
    /// §2.1.2).
    ///
    /// # Errors
    /// [`ReadError::Sizes`] unless `size1 <= size2 <=` the log's size.
    fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ReadError>;

    /// Stops accepting appends, waits for those queued and leaves the log cleanly closed.
    /// Idempotent.
    ///
    /// # Errors
    /// A final write or sync failed.
    fn close(&self) -> io::Result<()>;
}

impl VerifiableLog for AuditLog {
    fn append(&self, entry: Vec<u8>, done: Done) -> Result<(), AppendError> {
        AuditLog::append(self, entry, done)
    }

    fn try_append(&self, entry: Vec<u8>, done: Done) -> Result<(), AppendError> {
        AuditLog::try_append(self, entry, done)
    }

    fn append_blocking(&self, entry: Vec<u8>) -> Result<Appended, AppendError> {
        AuditLog::append_blocking(self, entry)
    }

    fn failure(&self) -> Option<String> {
        AuditLog::failure(self)
    }

    fn size(&self) -> u64 {
        AuditLog::size(self)
    }

    fn checkpoint(&self) -> Arc<SignedCheckpoint> {
        AuditLog::checkpoint(self)
    }

    fn verifier(&self) -> &Verifier {
        AuditLog::verifier(self)
    }

    fn entry(&self, index: u64) -> Result<Vec<u8>, ReadError> {
        AuditLog::entry(self, index)
    }

    fn newest_time(&self) -> Option<i64> {
        AuditLog::newest_time(self)
    }

    fn leaf_hash(&self, index: u64) -> Result<Hash, ReadError> {
        AuditLog::leaf_hash(self, index)
    }

    fn root(&self, size: u64) -> Result<Hash, ReadError> {
        AuditLog::root(self, size)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        AuditLog::inclusion_proof(self, index, size)
    }

    fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ReadError> {
        AuditLog::consistency_proof(self, size1, size2)
    }

    fn close(&self) -> io::Result<()> {
        AuditLog::close(self)
    }
}
