//! The gateway's side of the audit log: opening it from the configuration, appending entries
//! from async code without blocking the runtime, and building entries from a [`Principal`].

use std::{path::Path, sync::Arc};

use casegate_audit::{
    checkpoint::Signer,
    entry::{Actor, Entry, EntryKind},
    index::{AuditIndex, IndexError},
    log::{AppendError, Appended, AuditLog, LogOptions, OpenError, Recovery},
};
use tokio::sync::{Semaphore, oneshot};

use crate::{config::AuditConfig, principal::Principal};

/// The open audit log and its query index, shared by every service.
#[derive(Debug, Clone)]
pub struct Audit {
    log: Arc<AuditLog>,
    index: AuditIndex,
    /// One permit per queue slot: async callers wait here instead of blocking a runtime
    /// thread on the log's bounded queue.
    slots: Arc<Semaphore>,
}

/// The log's behaviour as configured.
pub fn log_options(config: &AuditConfig) -> LogOptions {
    LogOptions {
        origin: config.origin.clone(),
        segment_bytes: config.segment_bytes,
        queue_capacity: config.queue_capacity,
        max_batch: config.max_batch,
        linger: config.linger,
        observer: Some(Arc::new(crate::metrics::audit_batch)),
        before_write: None,
    }
}

/// Reads the signer key file named in the configuration.
pub fn load_signer(path: &Path) -> Result<Signer, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Signer::from_skey(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1000).unwrap_or(i64::MAX)
}

/// The audit actor for a verified caller.
pub fn actor(principal: &Principal) -> Actor {
    Actor {
        orgnr: principal.orgnr.to_string(),
        user_id: principal.user_id.clone(),
        role: principal.role.as_str().to_owned(),
        cert_sha256: principal.cert_sha256,
    }
}

impl Audit {
    /// Opens (recovering if needed) the log under `dir`; `index` is its query index. Before
    /// each batch is written the note store is synced: a `disclosure permitted` entry never
    /// becomes durable before the note it names.
    pub fn open(
        dir: &Path,
        index: AuditIndex,
        config: &AuditConfig,
        signer: Signer,
        notes: &crate::notes::NoteStore,
    ) -> Result<(Self, Recovery), OpenError> {
        let notes = notes.clone();
        let options = LogOptions {
            before_write: Some(Arc::new(move || {
                notes.sync_now().map_err(|e| e.to_string())
            })),
            ..log_options(config)
        };
        let (log, recovery) = AuditLog::open(dir, signer, options)?;
        Ok((
            Self {
                log: Arc::new(log),
                index,
                slots: Arc::new(Semaphore::new(config.queue_capacity)),
            },
            recovery,
        ))
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    pub fn index(&self) -> &AuditIndex {
        &self.index
    }

    /// Brings the index up to every entry in the log (blocking). Returns how many it added.
    pub fn catch_up_index(&self) -> Result<u64, IndexError> {
        let log = &self.log;
        self.index.catch_up(log.size(), |i| log.entry(i))
    }

    /// Appends `entry` and waits until it is durable.
    pub async fn append(&self, entry: &Entry) -> Result<Appended, AppendError> {
        let bytes = entry
            .encode()
            .map_err(|e| AppendError::Failed(e.to_string()))?;
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppendError::Closed)?;
        let (tx, rx) = oneshot::channel();
        // A permit guarantees a free queue slot, so this never blocks the runtime.
        self.log.try_append(bytes, move |result| {
            drop(permit);
            let _ = tx.send(result);
        })?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Records that the gateway started (blocking; used before serving).
    pub fn record_start(&self, version: &str) -> Result<Appended, AppendError> {
        let mut entry = Entry::new(EntryKind::GatewayStarted, now_micros());
        entry.detail = Some(format!("casegate {version}"));
        let bytes = entry
            .encode()
            .map_err(|e| AppendError::Failed(e.to_string()))?;
        self.log.append_blocking(bytes)
    }

    /// Flushes and closes the log; later appends fail.
    pub fn close(&self) -> std::io::Result<()> {
        self.slots.close();
        self.log.close()
    }
}
