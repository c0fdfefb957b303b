//! The gateway's side of the audit log: opening it from the configuration, appending entries
//! from async code without blocking the runtime, and building entries from a [`Principal`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use casegate_audit::{
    checkpoint::Signer,
    entry::{
        Actor, Answer, ConsentRef, DecisionTerms, Entry, Event, GatewayStarted, NoteHandled,
        NotePurged, NoteRef,
    },
    index::{AuditIndex, IndexError},
    log::{AppendError, Appended, AuditLog, LogOptions, OpenError, Recovery},
    storage::VerifiableLog,
};
use casegate_consent::{
    decision::{Decision, DisclosureRequest, POLICY_VERSION},
    record::ConsentRecord,
};
use tokio::sync::{Semaphore, oneshot};

use crate::{
    app::{notes::Note, principal::Principal},
    base::settings::{Schema, Section, count, duration, path, text},
};

/// The open audit log and its query index, shared by every service.
#[derive(Debug, Clone)]
pub struct Audit {
    log: Arc<dyn VerifiableLog>,
    index: AuditIndex,
    /// One permit per queue slot: async callers wait here instead of blocking a runtime
    /// thread on the log's bounded queue.
    slots: Arc<Semaphore>,
    /// The newest time stamped on a queued entry, held while the next is stamped and queued,
    /// so entries reach the log in time order.
    stamped: Arc<std::sync::Mutex<i64>>,
    /// Shared by every store change in progress between its audit entry and its store write
    /// ([`Audit::store_change`]); taken whole to move the reconciliation mark
    /// ([`Audit::quiet_size`]).
    changes: Arc<tokio::sync::RwLock<()>>,
    /// The log's size when the earliest store change that failed began: the reconciliation
    /// mark stays at or below it until the next start replays it (`u64::MAX`: none failed).
    unfinished: Arc<std::sync::atomic::AtomicU64>,
}

/// The log's behaviour as configured.
pub(crate) fn log_options(config: &AuditConfig) -> LogOptions {
    LogOptions {
        origin: config.origin.clone(),
        segment_bytes: config.segment_bytes,
        queue_capacity: config.queue_capacity,
        max_batch: config.max_batch,
        linger: config.linger,
        observer: Some(Arc::new(crate::base::metrics::audit_batch)),
        before_write: None,
    }
}

/// Reads the signer key file named in the configuration.
pub(crate) fn load_signer(path: &Path) -> Result<Signer, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Signer::from_skey(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Microseconds since the Unix epoch, now, on the gateway's clock (never going backwards: see
/// [`crate::base::clock`]).
pub(crate) fn now_micros() -> i64 {
    crate::base::clock::now_micros()
}

/// What a decision about `request` (a disclosure, or a dry run of one) taken for `principal`
/// about the subject with `pseudonym` was about: who acted, the parties, category, purpose and
/// policy version.
pub(crate) fn decision_terms(
    principal: &Principal,
    pseudonym: [u8; 32],
    request: &DisclosureRequest,
) -> DecisionTerms {
    DecisionTerms {
        actor: actor(principal),
        subject_pseudonym: pseudonym,
        category: request.category.to_string(),
        purpose: request.purpose.to_string(),
        sender_orgnr: request.sender_org.to_string(),
        recipient_orgnr: request.recipient_org.to_string(),
        policy_version: POLICY_VERSION.to_owned(),
    }
}

/// The answer of `decision`: the consent version a permit relied on, or a refusal's reason.
pub(crate) fn answer(decision: &Decision) -> Answer {
    match decision {
        Decision::Permit(permit) => Answer::Permit(ConsentRef {
            id: permit.consent_id.to_string(),
            version: permit.version,
            record_sha256: permit.record_hash,
        }),
        Decision::Deny(deny) => Answer::Refuse(deny.reason.code().to_owned()),
    }
}

/// An existing note as its entries name it.
pub(crate) fn note_ref(note: &Note) -> NoteRef {
    NoteRef {
        disclosure_id: note.id.to_string(),
        subject_pseudonym: note.subject_pseudonym,
        consent: ConsentRef {
            id: note.consent_id.to_string(),
            version: note.consent_version,
            record_sha256: note.consent_record_hash,
        },
        category: note.category.to_string(),
        purpose: note.purpose.to_string(),
        sender_orgnr: note.sender.orgnr.to_string(),
        recipient_orgnr: note.recipient_org.to_string(),
        content_sha256: note.content_sha256,
        request_id: note.request_id.clone(),
        policy_version: POLICY_VERSION.to_owned(),
    }
}

/// The `note delivered` entry of `note`, delivered to `to`.
pub(crate) fn delivered_entry(to: &Principal, note: &Note) -> Entry {
    Entry::new(
        now_micros(),
        Event::NoteDelivered(NoteHandled {
            actor: actor(to),
            note: note_ref(note),
        }),
    )
}

/// The `note acknowledged` entry of `note`, acknowledged by `by`.
pub(crate) fn acknowledged_entry(by: &Principal, note: &Note) -> Entry {
    Entry::new(
        now_micros(),
        Event::NoteAcknowledged(NoteHandled {
            actor: actor(by),
            note: note_ref(note),
        }),
    )
}

/// The `note purged` entry of `note`, purged by `by` (`None`: the gateway) for `reason`.
pub(crate) fn purge_entry(note: &Note, by: Option<&Principal>, reason: &str) -> Entry {
    Entry::new(
        now_micros(),
        Event::NotePurged(NotePurged {
            actor: by.map(actor),
            note: note_ref(note),
            reason: reason.to_owned(),
        }),
    )
}

/// The reference an entry pins for a consent version: id, version and record hash.
pub(crate) fn consent_ref(record: &ConsentRecord) -> ConsentRef {
    ConsentRef {
        id: record.id.to_string(),
        version: record.version,
        record_sha256: record.record_hash(),
    }
}

/// The `gateway started` entry of this build.
pub(crate) fn started_entry() -> Entry {
    Entry::new(
        now_micros(),
        Event::GatewayStarted(GatewayStarted {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }),
    )
}

/// The audit actor for a verified caller.
pub(crate) fn actor(principal: &Principal) -> Actor {
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
        notes: &crate::app::Notes,
    ) -> Result<(Self, Recovery), OpenError> {
        let notes = notes.clone();
        let options = LogOptions {
            before_write: Some(Arc::new(move || {
                notes.sync_now().map_err(|e| e.to_string())
            })),
            ..log_options(config)
        };
        let (log, recovery) = AuditLog::open(dir, signer, options)?;
        // The newest entry is durable: the clock never reads earlier than it, even after a
        // restart with the system clock set back.
        let newest = log.newest_time();
        if let Some(newest) = newest {
            crate::base::clock::raise_floor(newest);
        }
        Ok((
            Self {
                log: Arc::new(log),
                index,
                slots: Arc::new(Semaphore::new(config.queue_capacity)),
                stamped: Arc::new(std::sync::Mutex::new(newest.unwrap_or(i64::MIN))),
                changes: Arc::default(),
                unfinished: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            },
            recovery,
        ))
    }

    pub fn log(&self) -> &dyn VerifiableLog {
        self.log.as_ref()
    }

    pub fn index(&self) -> &AuditIndex {
        &self.index
    }

    /// Brings the index up to every entry in the log (blocking). Returns how many it added.
    pub fn catch_up_index(&self) -> Result<u64, IndexError> {
        let log = &self.log;
        self.index.catch_up(log.size(), |i| log.entry(i))
    }

    /// Appends `entry` and waits until it is durable. An entry whose time is earlier than the
    /// entry queued before it (decided a moment earlier, queued a moment later) takes that
    /// entry's time, so the log's times never go backwards.
    pub async fn append(&self, entry: &Entry) -> Result<Appended, AppendError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppendError::Closed)?;
        let (tx, rx) = oneshot::channel();
        self.stamped(entry, |log, bytes| {
            // A permit guarantees a free queue slot, so this never blocks the runtime.
            log.try_append(
                bytes,
                Box::new(move |result| {
                    drop(permit);
                    let _ = tx.send(result);
                }),
            )
        })?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Runs `work` — a store change: its audit entry and the store write that goes with it —
    /// in a task of its own, so a cancelled call cannot stop it between the two, and holds the
    /// reconciliation mark back until it ends ([`Audit::quiet_size`]). A change that fails
    /// (or panics) may have left its entry without its store write: the mark then stays below
    /// where it began until the next start replays it.
    ///
    /// # Errors
    /// `work`'s error, or `INTERNAL` if its task panicked.
    pub async fn store_change<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, tonic::Status>> + Send + 'static,
    ) -> Result<T, tonic::Status> {
        use std::sync::atomic::Ordering;
        let change = self.changes.clone().read_owned().await;
        let began = self.log.size();
        let done = tokio::spawn(async move {
            let _change = change;
            work.await
        })
        .await
        .map_err(|_| tonic::Status::internal("a store change failed to finish"))
        .and_then(|result| result);
        if done.is_err() {
            self.unfinished.fetch_min(began, Ordering::AcqRel);
        }
        done
    }

    /// Waits until no store change is between its audit entry and its store write and
    /// returns the log's size then — or, if a change failed since the start, the size when it
    /// began: every change recorded in the entries below the returned size is in its store.
    /// Changes that begin later append at or above it.
    pub async fn quiet_size(&self) -> u64 {
        let _quiet = self.changes.write().await;
        self.log
            .size()
            .min(self.unfinished.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Records that the gateway started (blocking; used before serving).
    pub fn record_start(&self) -> Result<Appended, AppendError> {
        self.append_blocking(&started_entry())
    }

    /// Appends `entry` and waits until it is durable, blocking the thread (start-up work,
    /// before serving).
    pub fn append_blocking(&self, entry: &Entry) -> Result<Appended, AppendError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.stamped(entry, |log, bytes| {
            log.append(
                bytes,
                Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            )
        })?;
        rx.recv().map_err(|_| AppendError::Closed)?
    }

    /// Hands `entry`'s bytes to `queue` with a time no earlier than the last queued entry's.
    fn stamped(
        &self,
        entry: &Entry,
        queue: impl FnOnce(&dyn VerifiableLog, Vec<u8>) -> Result<(), AppendError>,
    ) -> Result<(), AppendError> {
        let mut last = self.stamped.lock().unwrap_or_else(|p| p.into_inner());
        let time = entry.time_micros.max(*last);
        let bytes = if time == entry.time_micros {
            entry.encode()
        } else {
            let mut later = entry.clone();
            later.time_micros = time;
            later.encode()
        }
        .map_err(|e| AppendError::Failed(e.to_string()))?;
        crate::base::clock::raise_floor(time);
        queue(self.log.as_ref(), bytes)?;
        *last = time;
        Ok(())
    }

    /// Flushes and closes the log; later appends fail.
    pub fn close(&self) -> std::io::Result<()> {
        self.slots.close();
        self.log.close()
    }
}

/// The audit log's settings (`[audit]`).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The checkpoint origin line: names this log, e.g. `casegate.hospital.example/audit`.
    pub origin: String,
    /// The C2SP signer key file (`PRIVATE+KEY+…`) that signs checkpoints.
    pub signing_key: PathBuf,
    /// A new segment file starts at this size.
    pub segment_bytes: u64,
    /// Appends waiting for the writer at most (backpressure beyond).
    pub queue_capacity: usize,
    /// Most appends per `fdatasync`.
    pub max_batch: usize,
    /// How long the writer waits to fill a batch.
    pub linger: Duration,
}

/// `[audit]`'s keys.
pub(crate) static CONFIG_SCHEMA: Schema = Schema {
    section: "audit",
    keys: &[
        text("origin", true),
        path("signing_key", true),
        count("segment_bytes", 64 << 20, 1 << 40),
        count("queue_capacity", 8192, 1 << 20),
        count("max_batch", 4096, 1 << 16),
        duration(
            "linger",
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_millis(50),
        ),
    ],
};

impl AuditConfig {
    /// Reads the `[audit]` section from `s`; the signing key's path is relative to `base`.
    /// Every problem is reported to `s`; `None` when `origin` or `signing_key` is missing or
    /// wrong.
    pub(crate) fn read(s: &mut Section<'_>, base: &Path) -> Option<Self> {
        let origin = s.text("origin");
        if let Some(o) = &origin
            && (o.is_empty() || o.chars().any(char::is_whitespace))
        {
            s.problem("origin", "must be non-empty and contain no whitespace");
        }
        let signing_key = s.file("signing_key", base);
        let segment_bytes = s.count("segment_bytes");
        if segment_bytes < 4 << 20 {
            s.problem("segment_bytes", "must be at least 4 MiB (4194304)");
        }
        let queue_capacity = s.count("queue_capacity");
        let max_batch = s.count("max_batch");
        let linger = s.duration("linger");
        match (origin, signing_key) {
            (Some(origin), Some(signing_key)) => Some(Self {
                origin,
                signing_key,
                segment_bytes,
                queue_capacity: usize::try_from(queue_capacity).unwrap_or(usize::MAX),
                max_batch: usize::try_from(max_batch).unwrap_or(usize::MAX),
                linger,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "casegate.test/audit";

    fn open(dir: &Path) -> Audit {
        let config = AuditConfig {
            origin: ORIGIN.into(),
            signing_key: dir.join("unused.key"),
            segment_bytes: 1 << 20,
            queue_capacity: 16,
            max_batch: 16,
            linger: std::time::Duration::ZERO,
        };
        let notes: crate::app::Notes = std::sync::Arc::new(
            crate::app::notes::NoteStore::open(&dir.join("notes")).expect("notes"),
        );
        let index = AuditIndex::open(&dir.join("index")).expect("index");
        let signer = Signer::generate(ORIGIN).expect("key");
        Audit::open(&dir.join("audit"), index, &config, signer, &notes)
            .expect("audit")
            .0
    }

    /// A store change that appends an entry, then fails in its store write if `fails`.
    async fn change(audit: &Audit, fails: bool) -> Result<(), tonic::Status> {
        let log = audit.clone();
        audit
            .store_change(async move {
                let started = Event::GatewayStarted(GatewayStarted {
                    version: "test".into(),
                });
                log.append(&Entry::new(now_micros(), started))
                    .await
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                if fails {
                    return Err(tonic::Status::internal("the store failed"));
                }
                Ok(())
            })
            .await
    }

    #[tokio::test]
    async fn the_mark_stays_below_a_store_change_that_failed_after_its_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = open(dir.path());
        change(&audit, false).await.expect("a change that finishes");
        assert_eq!(audit.quiet_size().await, 1);

        // The entry is durable, the store write after it fails.
        assert!(change(&audit, true).await.is_err());
        change(&audit, false).await.expect("a later change");
        assert_eq!(audit.log().size(), 3);
        assert_eq!(
            audit.quiet_size().await,
            1,
            "the mark may not pass the change that failed: the next start replays it"
        );
    }
}
