//! The durable audit log: one writer thread appends with group commit (bounded queue, batches
//! cut by count or a short linger, one `fdatasync` per batch, callers answered after it), keeps
//! the Merkle tree's nodes, and signs a checkpoint after every batch. Readers get entries,
//! checkpoints and O(log n) proofs concurrently.
//!
//! Folder layout: `segments/*.seg` (the records and, after each batch, a commit frame naming
//! the size its callers were handed: the only durable truth), `tree/level-NN` and `offsets`
//! (derived, rebuilt after a crash), `checkpoint` (a recent signed note, replaced atomically
//! and synced; it also catches lost segments), `clean` (present only after a clean shutdown:
//! lets start-up skip re-hashing). Whatever state a derived file is in — missing, empty,
//! truncated, garbage — start-up rebuilds it from the segments.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint, Signer, Verifier},
    durable::{self, Existing, Writes, sync_dir},
    merkle::{self, CompactRange, Hash},
    segment::{self, Flaw},
    store::{FixedFile, TreeStore},
};

/// What one group commit did, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Entries in the batch.
    pub entries: usize,
    /// Time spent in `fdatasync` for it.
    pub sync: Duration,
    /// Appends still waiting after it.
    pub queue_depth: usize,
    /// The log's size (and newest checkpoint's) after it.
    pub size: u64,
}

/// Called by the writer after every batch.
pub type Observer = Arc<dyn Fn(&BatchStats) + Send + Sync>;

/// Called by the writer before it writes a batch: makes durable whatever the batch's entries
/// rely on (the gateway's note store). An error fails that batch's appends, not the log.
pub type BeforeWrite = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// How the log behaves.
#[derive(Clone)]
pub struct LogOptions {
    /// The checkpoint origin line, e.g. `casegate.example/audit`.
    pub origin: String,
    /// A new segment starts once the current one reaches this size.
    pub segment_bytes: u64,
    /// Appends waiting for the writer at most; more block (or fail with `try_append`).
    pub queue_capacity: usize,
    /// Most appends in one batch (one `fdatasync`).
    pub max_batch: usize,
    /// How long the writer waits for more appends after the first of a batch.
    pub linger: Duration,
    /// Told about every batch (metrics).
    pub observer: Option<Observer>,
    /// Run before every batch is written.
    pub before_write: Option<BeforeWrite>,
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("origin", &self.origin)
            .field("segment_bytes", &self.segment_bytes)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch", &self.max_batch)
            .field("linger", &self.linger)
            .field("observer", &self.observer.is_some())
            .field("before_write", &self.before_write.is_some())
            .finish()
    }
}

impl LogOptions {
    /// Options for origin `origin` with the defaults: 64 MiB segments, a queue of 8,192
    /// appends, batches of at most 4,096, no linger, no observer and no hook.
    pub fn new(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            segment_bytes: 64 << 20,
            queue_capacity: 8192,
            max_batch: 4096,
            linger: Duration::ZERO,
            observer: None,
            before_write: None,
        }
    }
}

/// An append made durable.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The entry's zero-based index in the log.
    pub index: u64,
    /// The entry's RFC 6962 leaf hash: SHA-256 of 0x00 and its canonical bytes.
    pub leaf_hash: Hash,
    /// The checkpoint signed right after the append's batch; it covers the entry.
    pub checkpoint: Arc<SignedCheckpoint>,
}

/// Why an append was not made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The entry is larger than [`segment::MAX_ENTRY_BYTES`] (1 MiB); holds its length.
    #[error("entry of {0} bytes is larger than the log accepts")]
    TooLarge(usize),
    /// The queue is full ([`AuditLog::try_append`] only).
    #[error("the audit log's queue is full")]
    QueueFull,
    /// The log is closed, or its writer ended without answering.
    #[error("the audit log is closed")]
    Closed,
    /// A write failed, now or before (the log then refuses every append), the `before_write`
    /// hook failed for this batch, or the leaf hash could not be read back; says why.
    #[error("the audit log failed to write and accepts no more appends: {0}")]
    Failed(String),
    /// The entry's time is older than the newest entry's: the log's times never go back.
    #[error(
        "entry time {time} µs is older than the log's newest entry ({newest} µs): the log's times never go backwards"
    )]
    TimeWentBack {
        /// The entry's time, in microseconds since the Unix epoch.
        time: i64,
        /// The newest entry's time, in microseconds since the Unix epoch.
        newest: i64,
    },
}

/// Why [`AuditLog::open`] or [`read_checkpoint`] refused.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A file or folder could not be created, read, written or synced.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A record within what was acknowledged is damaged; nothing on disk was changed.
    #[error("audit log is damaged at index {index}: {reason}")]
    Damaged {
        /// The first bad record's index.
        index: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The checkpoint file holds a well-formed signed note the key does not verify (another
    /// key, or tampering); from [`read_checkpoint`], any note it cannot verify.
    #[error("the last signed checkpoint cannot be used: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint file is for another log.
    #[error("the last signed checkpoint is for origin {found:?}, not {expected:?}")]
    Origin {
        /// The checkpoint's origin.
        found: String,
        /// [`LogOptions::origin`].
        expected: String,
    },
    /// The segments hold fewer entries than a commit frame or the checkpoint file says were
    /// acknowledged.
    #[error(
        "audit log holds {size} entries but the last signed checkpoint covers {checkpoint}: \
         entries from index {size} are missing"
    )]
    Truncated {
        /// Entries the segments hold.
        size: u64,
        /// Entries acknowledged.
        checkpoint: u64,
    },
    /// The entries do not hash to the checkpoint file's root.
    #[error("the first {checkpoint} entries do not hash to the last signed checkpoint's root")]
    RootMismatch {
        /// The checkpoint's size.
        checkpoint: u64,
    },
    /// A commit frame in the segments names a root the records before it do not hash to.
    #[error("the first {size} entries do not hash to the root their commit frame names")]
    CommitMismatch {
        /// The size the commit frame names.
        size: u64,
    },
}

/// Why a read of the log failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An entry index or tree size beyond the log's size.
    #[error("index {index} is beyond the log's size {size}")]
    OutOfRange {
        /// The index or tree size asked for.
        index: u64,
        /// The log's size (for an inclusion proof's leaf, the tree size asked for).
        size: u64,
    },
    /// Two tree sizes that admit no consistency proof (the first 0 or above the second, or
    /// the second beyond the log); holds both.
    #[error("sizes {0} and {1} do not describe a proof")]
    Sizes(u64, u64),
    /// A stored file could not be read, or did not hold the record its offset names.
    #[error("audit log storage: {0}")]
    Io(#[from] io::Error),
}

/// What start-up found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Entries in the log once opened.
    pub size: u64,
    /// Whether the previous run shut down cleanly (no re-hash was needed).
    pub clean: bool,
    /// Bytes of an unacknowledged, torn tail that were cut.
    pub discarded_bytes: u64,
    /// The size of the signed checkpoint found in the checkpoint file, if any.
    pub checkpoint_size: Option<u64>,
    /// The largest size any caller may have been handed: the newest commit frame's, or the
    /// checkpoint file's if larger. Nothing below it was cut.
    pub acknowledged: u64,
    /// Why the checkpoint file was unusable and rebuilt (empty, torn, not a signed note).
    pub checkpoint_file_rebuilt: Option<String>,
}

type Done = Box<dyn FnOnce(Result<Appended, AppendError>) + Send>;

struct Job {
    entry: Vec<u8>,
    done: Done,
}

struct Published {
    size: u64,
    checkpoint: Arc<SignedCheckpoint>,
    failed: Option<String>,
}

struct Shared {
    dir: PathBuf,
    tree: TreeStore,
    offsets: FixedFile<8>,
    /// (first index, file) of every segment, in order.
    segments: RwLock<Vec<(u64, Arc<File>)>>,
    published: RwLock<Published>,
    /// Appends sent to the writer and not yet taken by it.
    queued: AtomicUsize,
    /// The newest entry's time (µs since the Unix epoch), `i64::MIN` when none is known.
    newest_time: AtomicI64,
}

impl Shared {
    /// The canonical bytes of entry `index` (which must be below the published size).
    fn entry(&self, index: u64) -> Result<Vec<u8>, ReadError> {
        let offset = u64::from_be_bytes(self.offsets.get(index)?);
        let file = {
            let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
            let at = segments.partition_point(|(first, _)| *first <= index);
            segments
                .get(at.wrapping_sub(1))
                .map(|(_, f)| f.clone())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no segment"))?
        };
        Ok(segment::read_record(&file, offset, index)?)
    }
}

/// The audit log. Appends go through the writer thread; reads are concurrent.
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<io::Result<()>>>>,
    verifier: Verifier,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.shared.dir)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates a folder (and its parents) accessible to its owner only, durably.
pub(crate) fn private_dirs(path: &Path) -> io::Result<()> {
    durable::create_dirs(path)
}

const CHECKPOINT: &str = "checkpoint";
const CLEAN: &str = "clean";

/// The checkpoint file is rewritten at most this often while appends flow (a newer checkpoint
/// waits at most this long for its turn) and on close. Each rewrite is a create, a write, two
/// syncs and a rename; once per batch, they would cost a sizeable part of the writer's time
/// under load. Callers learn what was acknowledged from the commit frames, never from this
/// file, so its lag loses nothing.
const CHECKPOINT_FILE_EVERY: Duration = Duration::from_millis(100);

/// Replaces the checkpoint file atomically and durably ([`durable::replace_file`]): after a
/// power cut it holds the old note or the new one, never an empty or partial file.
fn write_checkpoint(dir: &Path, note: &str) -> io::Result<()> {
    durable::replace_file(&dir.join(CHECKPOINT), note.as_bytes())
}

/// What the checkpoint file held at start-up.
enum CheckpointFile {
    Missing,
    /// Not a signed note at all (empty, torn, garbage): derived, so rebuilt.
    Unusable(String),
    Found(SignedCheckpoint),
}

/// Reads the checkpoint file for [`AuditLog::open`]. A file that is not a well-formed signed
/// note is reported as unusable (it is rebuilt); a well-formed note that the key does not
/// verify refuses to open — the log would otherwise go on under another key.
fn read_checkpoint_file(dir: &Path, verifier: &Verifier) -> Result<CheckpointFile, OpenError> {
    let path = dir.join(CHECKPOINT);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CheckpointFile::Missing),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let Ok(note) = String::from_utf8(bytes) else {
        return Ok(CheckpointFile::Unusable("not UTF-8 text".into()));
    };
    if note.is_empty() {
        return Ok(CheckpointFile::Unusable("empty".into()));
    }
    match verifier.verify(&note) {
        Ok(checkpoint) => Ok(CheckpointFile::Found(SignedCheckpoint { checkpoint, note })),
        Err(e @ (CheckpointError::NoteFormat(_) | CheckpointError::BodyFormat(_))) => {
            Ok(CheckpointFile::Unusable(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces the checkpoint signing key of a closed log: appends `rotation_entry` (which should
/// record the change) signed under `old`, then leaves the newest checkpoint signed by both keys,
/// so it verifies with either and the log opens with `new` from then on. The caller must hold
/// the folder's lock (no gateway running on it).
pub fn rotate_key(
    dir: &Path,
    old: Signer,
    new: &Signer,
    options: LogOptions,
    rotation_entry: Vec<u8>,
) -> Result<Appended, RotateError> {
    let verifier = old.verifier();
    let (log, _) = AuditLog::open(dir, Signer::from_skey(&old.to_skey())?, options)?;
    let appended = log.append_blocking(rotation_entry)?;
    log.close().map_err(|e| RotateError::Io(e.to_string()))?;
    let Some(newest) = read_checkpoint(dir, &verifier)? else {
        return Err(RotateError::Io(
            "no checkpoint after the rotation entry".into(),
        ));
    };
    let bridged = Signer::cosign(&[&old, new], &newest.checkpoint);
    write_checkpoint(dir, &bridged.note).map_err(|e| RotateError::Io(e.to_string()))?;
    Ok(appended)
}

/// Why [`rotate_key`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The log could not be opened with the old key, or its newest checkpoint not read.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The rotation entry could not be appended.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The old signer could not be rebuilt from its own key text.
    #[error(transparent)]
    Key(#[from] CheckpointError),
    /// Closing the log or writing the bridging checkpoint failed, or no checkpoint followed
    /// the rotation entry; says which.
    #[error("audit log: {0}")]
    Io(String),
}

/// Reads and verifies the newest checkpoint in a log folder, if there is one.
pub fn read_checkpoint(
    dir: &Path,
    verifier: &Verifier,
) -> Result<Option<SignedCheckpoint>, OpenError> {
    let path = dir.join(CHECKPOINT);
    match fs::read_to_string(&path) {
        Ok(note) => {
            let checkpoint = verifier.verify(&note)?;
            Ok(Some(SignedCheckpoint { checkpoint, note }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(&path)(e)),
    }
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash if needed, and starts the
    /// writer. Refuses to open a log that is damaged anywhere but an unacknowledged tail.
    pub fn open(
        dir: &Path,
        signer: Signer,
        options: LogOptions,
    ) -> Result<(Self, Recovery), OpenError> {
        let seg_dir = dir.join("segments");
        private_dirs(&seg_dir).map_err(io_at(&seg_dir))?;
        let verifier = signer.verifier();
        let (found, checkpoint_file_rebuilt) = match read_checkpoint_file(dir, &verifier)? {
            CheckpointFile::Found(cp) => (Some(cp), None),
            CheckpointFile::Missing => (None, None),
            CheckpointFile::Unusable(reason) => (None, Some(reason)),
        };
        if let Some(cp) = &found
            && cp.checkpoint.origin != options.origin
        {
            return Err(OpenError::Origin {
                found: cp.checkpoint.origin.clone(),
                expected: options.origin.clone(),
            });
        }
        let tree_dir = dir.join("tree");
        let tree = TreeStore::open(&tree_dir).map_err(io_at(&tree_dir))?;
        let offsets_path = dir.join("offsets");
        let offsets = FixedFile::<8>::open(&offsets_path).map_err(io_at(&offsets_path))?;
        let segments = segment::list(&seg_dir).map_err(io_at(&seg_dir))?;

        let clean_path = dir.join(CLEAN);
        let left = fs::read_to_string(&clean_path)
            .ok()
            .and_then(|text| CleanState::parse(&text));
        // After a clean shutdown the derived files are trusted, but only if the segments and
        // the derived files are as the shutdown left them and agree with the checkpoint;
        // otherwise they are rebuilt like after a crash.
        let fast = match left {
            Some(left) if left.is_current(dir, &segments) => {
                fast_open(&segments, &tree, &offsets, left.size)?.filter(|scanned| {
                    check_roots(scanned, found.as_ref(), &tree, &tree_dir).is_ok()
                })
            }
            _ => None,
        };
        let clean = fast.is_some();
        let scanned = match fast {
            Some(scanned) => scanned,
            None => rebuild(&segments, &tree, &offsets)?,
        };
        // What any caller may have been handed: commit frames first (written and synced with
        // each batch), the checkpoint file as well (it catches a lost segment).
        let acknowledged = [
            scanned.commit.map(|(size, _)| size),
            scanned.tail.as_ref().and_then(|t| t.commit_beyond),
            found.as_ref().map(|cp| cp.checkpoint.size),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        let size = scanned.size;
        match &scanned.tail {
            // The flaw is inside what was acknowledged: keep every byte and refuse.
            Some(tail) if acknowledged > tail.index => {
                return Err(OpenError::Damaged {
                    index: tail.index,
                    reason: tail.flaw.to_string(),
                });
            }
            _ if acknowledged > size => {
                return Err(OpenError::Truncated {
                    size,
                    checkpoint: acknowledged,
                });
            }
            _ => {}
        }
        if !clean {
            check_roots(&scanned, found.as_ref(), &tree, &tree_dir)?;
        }
        let discarded = match &scanned.tail {
            Some(tail) => tail.cut()?,
            None => 0,
        };
        let (range, last_is_v1) = (scanned.range, scanned.last_is_v1);
        // From here on the derived files change: a crash must not be mistaken for clean.
        if clean_path.exists() {
            fs::remove_file(&clean_path).map_err(io_at(&clean_path))?;
            sync_dir(dir).map_err(io_at(dir))?;
        }
        let checkpoint = match found.as_ref() {
            Some(cp) if cp.checkpoint.size == size => cp.clone(),
            _ => {
                let signed = signer.sign(&Checkpoint {
                    origin: options.origin.clone(),
                    size,
                    root: range.root(),
                });
                write_checkpoint(dir, &signed.note).map_err(io_at(dir))?;
                signed
            }
        };

        let mut handles = Vec::new();
        for (first, path) in &segments {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(path)
                .map_err(io_at(path))?;
            handles.push((*first, Arc::new(file)));
        }
        let segment_len = match segments.last() {
            Some((_, path)) => fs::metadata(path).map_err(io_at(path))?.len(),
            None => 0,
        };
        // A segment from before commit frames is not appended to: older readers would take a
        // commit frame for damage.
        let legacy_tail = last_is_v1 && segment_len > segment::HEADER_LEN;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            tree,
            offsets,
            segments: RwLock::new(handles),
            published: RwLock::new(Published {
                size,
                checkpoint: Arc::new(checkpoint),
                failed: None,
            }),
            queued: AtomicUsize::new(0),
            newest_time: AtomicI64::new(i64::MIN),
        });
        if size > 0 {
            let newest = shared.entry(size - 1).map_err(|e| OpenError::Damaged {
                index: size - 1,
                reason: e.to_string(),
            })?;
            if let Some(time) = crate::entry::Entry::time_of(&newest) {
                shared.newest_time.store(time, Ordering::Release);
            }
        }
        let (tx, rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let writer = Writer {
            shared: shared.clone(),
            signer,
            options,
            range,
            segment_len,
            seg_dir,
            roll: legacy_tail,
            unwritten: None,
            file_written: None,
        };
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_at(dir))?;
        let recovery = Recovery {
            size,
            clean,
            discarded_bytes: discarded,
            checkpoint_size: found.map(|c| c.checkpoint.size),
            acknowledged,
            checkpoint_file_rebuilt,
        };
        Ok((
            Self {
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                verifier,
            },
            recovery,
        ))
    }

    /// Queues `entry`; `done` is called from the writer thread once it is durable (or failed).
    /// Blocks while the queue is full.
    pub fn append(
        &self,
        entry: Vec<u8>,
        done: impl FnOnce(Result<Appended, AppendError>) + Send + 'static,
    ) -> Result<(), AppendError> {
        self.enqueue(entry, Box::new(done), true)
    }

    /// As [`AuditLog::append`], but fails with `QueueFull` instead of blocking.
    pub fn try_append(
        &self,
        entry: Vec<u8>,
        done: impl FnOnce(Result<Appended, AppendError>) + Send + 'static,
    ) -> Result<(), AppendError> {
        self.enqueue(entry, Box::new(done), false)
    }

    /// Hands a job to the writer, counting it in the queue depth while it waits.
    fn enqueue(&self, entry: Vec<u8>, done: Done, block: bool) -> Result<(), AppendError> {
        let job = self.job(entry, done)?;
        let sender = self.sender()?;
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let sent = if block {
            sender.send(job).map_err(|_| AppendError::Closed)
        } else {
            sender.try_send(job).map_err(|e| match e {
                TrySendError::Full(_) => AppendError::QueueFull,
                TrySendError::Disconnected(_) => AppendError::Closed,
            })
        };
        if sent.is_err() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// Appends and waits until the entry is durable.
    pub fn append_blocking(&self, entry: Vec<u8>) -> Result<Appended, AppendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append(entry, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| AppendError::Closed)?
    }

    /// A handle on the queue (cloned so that no lock is held while blocking on it).
    fn sender(&self) -> Result<SyncSender<Job>, AppendError> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(AppendError::Closed)
    }

    fn job(&self, entry: Vec<u8>, done: Done) -> Result<Job, AppendError> {
        if entry.len() > segment::MAX_ENTRY_BYTES {
            return Err(AppendError::TooLarge(entry.len()));
        }
        if let Some(reason) = &self.published().failed {
            return Err(AppendError::Failed(reason.clone()));
        }
        Ok(Job { entry, done })
    }

    fn published(&self) -> std::sync::RwLockReadGuard<'_, Published> {
        self.shared
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Why the log accepts no more appends while open, if it does not: a failed write, or a
    /// writer thread that ended (a panic). `None` after [`AuditLog::close`].
    pub fn failure(&self) -> Option<String> {
        if let Some(reason) = &self.published().failed {
            return Some(reason.clone());
        }
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer
            .as_ref()
            .is_some_and(|w| w.is_finished())
            .then(|| "the writer thread stopped".to_owned())
    }

    /// Entries durable and covered by the newest checkpoint.
    pub fn size(&self) -> u64 {
        self.published().size
    }

    /// The newest signed checkpoint: it covers [`AuditLog::size`] entries.
    pub fn checkpoint(&self) -> Arc<SignedCheckpoint> {
        self.published().checkpoint.clone()
    }

    /// The verifier of the key the log signs its checkpoints with.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn check_index(&self, index: u64) -> Result<(), ReadError> {
        let size = self.size();
        if index >= size {
            return Err(ReadError::OutOfRange { index, size });
        }
        Ok(())
    }

    /// The canonical bytes of entry `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, ReadError> {
        self.check_index(index)?;
        self.shared.entry(index)
    }

    /// The time of the newest entry, in microseconds since the Unix epoch (`None` while the
    /// log holds no entry with a readable time). Appends are never older than this: see
    /// [`AppendError::TimeWentBack`].
    pub fn newest_time(&self) -> Option<i64> {
        match self.shared.newest_time.load(Ordering::Acquire) {
            i64::MIN => None,
            t => Some(t),
        }
    }

    /// The RFC 6962 leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, ReadError> {
        self.check_index(index)?;
        Ok(self.shared.tree.node(0, index)?)
    }

    /// The root of the tree of the first `size` entries.
    pub fn root(&self, size: u64) -> Result<Hash, ReadError> {
        let current = self.size();
        if size > current {
            return Err(ReadError::OutOfRange {
                index: size,
                size: current,
            });
        }
        Ok(merkle::subtree_root(0, size, &|l, i| {
            self.shared.tree.node(l, i)
        })?)
    }

    /// Inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        let current = self.size();
        if size > current {
            return Err(ReadError::OutOfRange {
                index: size,
                size: current,
            });
        }
        merkle::inclusion_proof(index, size, |l, i| self.shared.tree.node(l, i))?
            .ok_or(ReadError::OutOfRange { index, size })
    }

    /// Consistency proof between the trees of `size1` and `size2` entries.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ReadError> {
        if size2 > self.size() {
            return Err(ReadError::Sizes(size1, size2));
        }
        merkle::consistency_proof(size1, size2, |l, i| self.shared.tree.node(l, i))?
            .ok_or(ReadError::Sizes(size1, size2))
    }

    /// Stops accepting appends, waits for queued ones, syncs the derived files and marks the
    /// shutdown clean so the next start need not re-hash.
    /// Appends after it fail with `Closed`. Idempotent.
    pub fn close(&self) -> io::Result<()> {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        match writer {
            Some(handle) => handle
                .join()
                .map_err(|_| io::Error::other("audit writer panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// What a clean shutdown leaves in the `clean` marker: the log's size, every segment's first
/// index and length, and every derived file's length and CRC-32C. A start that finds them all
/// as left trusts the derived files; anything else (a file lost, cut, changed, or a marker in
/// an older format) is rebuilt from the segments.
///
/// ```text
/// casegate-clean 2
/// size N
/// segment FIRST LENGTH          (one per segment)
/// derived NAME LENGTH CRC32C    (offsets, tree/level-NN)
/// ```
#[derive(Debug, PartialEq, Eq)]
struct CleanState {
    size: u64,
    segments: Vec<(u64, u64)>,
    derived: Vec<(String, u64, u32)>,
}

impl CleanState {
    const HEADER: &'static str = "casegate-clean 2";

    /// The state of the log folder `dir` now, with `size` entries in `segments`.
    fn now(dir: &Path, size: u64, segments: &[(u64, PathBuf)]) -> io::Result<Self> {
        let segments = segments
            .iter()
            .map(|(first, path)| Ok((*first, fs::metadata(path)?.len())))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            size,
            segments,
            derived: derived_files(dir)?,
        })
    }

    fn render(&self) -> String {
        let mut out = format!("{}\nsize {}\n", Self::HEADER, self.size);
        for (first, len) in &self.segments {
            out.push_str(&format!("segment {first} {len}\n"));
        }
        for (name, len, crc) in &self.derived {
            out.push_str(&format!("derived {name} {len} {crc:08x}\n"));
        }
        out
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != Self::HEADER {
            return None;
        }
        let size = lines.next()?.strip_prefix("size ")?.parse().ok()?;
        let mut state = Self {
            size,
            segments: Vec::new(),
            derived: Vec::new(),
        };
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["segment", first, len] => state
                    .segments
                    .push((first.parse().ok()?, len.parse().ok()?)),
                ["derived", name, len, crc] => state.derived.push((
                    (*name).to_owned(),
                    len.parse().ok()?,
                    u32::from_str_radix(crc, 16).ok()?,
                )),
                _ => return None,
            }
        }
        Some(state)
    }

    /// Whether the folder is still as this state says: the same segments at the same lengths,
    /// the same derived files with the same contents.
    fn is_current(&self, dir: &Path, segments: &[(u64, PathBuf)]) -> bool {
        let now = Self::now(dir, self.size, segments);
        now.is_ok_and(|now| now == *self)
    }
}

/// The derived files of a log folder (`offsets`, `tree/level-NN`, those present), each with
/// its length and CRC-32C.
fn derived_files(dir: &Path) -> io::Result<Vec<(String, u64, u32)>> {
    let mut names = vec!["offsets".to_owned()];
    let mut levels: Vec<String> = match fs::read_dir(dir.join("tree")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("level-"))
            .map(|name| format!("tree/{name}"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    levels.sort();
    names.extend(levels);
    names
        .into_iter()
        .map(|name| {
            let bytes = fs::read(dir.join(&name))?;
            Ok((name, bytes.len() as u64, crc32c::crc32c(&bytes)))
        })
        .collect()
}

/// What start-up read from the segments.
struct Scanned {
    size: u64,
    range: CompactRange,
    /// A flaw at the end of the last segment, not yet cut.
    tail: Option<Tail>,
    /// The newest intact commit frame: (size, root).
    commit: Option<(u64, Hash)>,
    /// The last segment was written before commit frames existed (magic `CGAUDIT1`).
    last_is_v1: bool,
}

/// Checks that the tree of the scanned records has the roots the checkpoint file and the
/// newest commit frame name.
fn check_roots(
    scanned: &Scanned,
    found: Option<&SignedCheckpoint>,
    tree: &TreeStore,
    tree_dir: &Path,
) -> Result<(), OpenError> {
    let root_at = |size: u64| -> Result<Hash, OpenError> {
        if size == scanned.size {
            Ok(scanned.range.root())
        } else {
            merkle::subtree_root(0, size, &|l, i| tree.node(l, i)).map_err(io_at(tree_dir))
        }
    };
    if let Some(cp) = found {
        let cp = &cp.checkpoint;
        if cp.size > scanned.size {
            return Err(OpenError::Truncated {
                size: scanned.size,
                checkpoint: cp.size,
            });
        }
        if root_at(cp.size)? != cp.root {
            return Err(OpenError::RootMismatch {
                checkpoint: cp.size,
            });
        }
    }
    if let Some((size, root)) = scanned.commit
        && root_at(size)? != root
    {
        return Err(OpenError::CommitMismatch { size });
    }
    Ok(())
}

/// Start-up after a clean shutdown: trust the derived files, checking only that the last
/// segment ends where the clean marker says. `None` means "rebuild instead".
fn fast_open(
    segments: &[(u64, PathBuf)],
    tree: &TreeStore,
    offsets: &FixedFile<8>,
    size: u64,
) -> Result<Option<Scanned>, OpenError> {
    let (end, commit, last_is_v1) = match segments.last() {
        None => (0, None, false),
        Some((first, path)) => {
            let bytes = segment::read(path).map_err(io_at(path))?;
            let scan = segment::scan(&bytes, *first, |_, _, _| {});
            if scan.flaw.is_some() {
                return Ok(None);
            }
            (scan.next_index, scan.commit, segment::is_v1(&bytes))
        }
    };
    if end != size
        || offsets.records().unwrap_or(0) < size
        || !tree.covers(size).unwrap_or(false)
        || segments.windows(2).any(|w| w[0].0 >= w[1].0)
    {
        return Ok(None);
    }
    match CompactRange::from_store(size, |l, i| tree.node(l, i)) {
        Ok(range) => Ok(Some(Scanned {
            size,
            range,
            tail: None,
            commit,
            last_is_v1,
        })),
        Err(_) => Ok(None),
    }
}

/// The tree nodes appends complete, gathered per level (consecutive from the first one of
/// each level) to be stored in one write per level.
#[derive(Default)]
struct NewNodes(Vec<(u64, Vec<u8>)>);

impl NewNodes {
    /// Records node `index` of `level` (called by [`CompactRange::append`], in order).
    fn add(&mut self, level: u32, index: u64, hash: &Hash) {
        let level = level as usize;
        if self.0.len() <= level {
            self.0.push((index, Vec::new()));
        }
        self.0[level].1.extend_from_slice(hash);
    }

    fn store(&self, tree: &TreeStore) -> io::Result<()> {
        for (level, (first, bytes)) in self.0.iter().enumerate() {
            tree.put(level as u32, *first, bytes)?;
        }
        Ok(())
    }
}

/// A flawed end of the last segment: unacknowledged if no commit frame and no checkpoint
/// reaches into it.
struct Tail {
    path: PathBuf,
    first: u64,
    /// Bytes to keep (the header and the good frames).
    keep: u64,
    len: u64,
    index: u64,
    flaw: Flaw,
    /// The largest size named by an intact commit frame after the flaw.
    commit_beyond: Option<u64>,
}

impl Tail {
    /// Cuts the tail off; a segment whose header never reached the disk is rewritten.
    fn cut(&self) -> Result<u64, OpenError> {
        let path = &self.path;
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_at(path))?;
        if self.flaw == Flaw::Header {
            file.set_len(0).map_err(io_at(path))?;
            file.write_all(&segment::header(self.first))
                .map_err(io_at(path))?;
        } else {
            file.set_len(self.keep).map_err(io_at(path))?;
        }
        file.sync_all().map_err(io_at(path))?;
        Ok(self.len.saturating_sub(self.keep))
    }
}

/// Start-up after a crash: re-read every segment and rebuild the tree and offsets. A flaw is
/// tolerated only at the end of the last segment (returned, not yet cut).
fn rebuild(
    segments: &[(u64, PathBuf)],
    tree: &TreeStore,
    offsets: &FixedFile<8>,
) -> Result<Scanned, OpenError> {
    tree.clear().map_err(io_at(Path::new("tree")))?;
    let mut range = CompactRange::new();
    let mut nodes = NewNodes::default();
    let mut offset_bytes = Vec::new();
    let mut tail = None;
    let mut commit = None;
    let mut last_is_v1 = false;
    let mut next = 0u64;
    for (n, (first, path)) in segments.iter().enumerate() {
        if *first != next {
            return Err(OpenError::Damaged {
                index: next,
                reason: format!("segment {} starts at record {first}", path.display()),
            });
        }
        let bytes = segment::read(path).map_err(io_at(path))?;
        let scan = segment::scan(&bytes, *first, |_, offset, payload| {
            offset_bytes.extend_from_slice(&offset.to_be_bytes());
            range.append(merkle::leaf_hash(payload), |level, index, hash| {
                nodes.add(level, index, hash)
            });
        });
        if scan.commit.is_some() {
            commit = scan.commit;
        }
        last_is_v1 = segment::is_v1(&bytes);
        if let Some(flaw) = scan.flaw {
            let last = n + 1 == segments.len();
            // A header that never reached the disk leaves at most a partial header.
            let lost_header = flaw == Flaw::Header && bytes.len() <= segment::HEADER_LEN as usize;
            if !last || (flaw == Flaw::Header && !lost_header) {
                return Err(OpenError::Damaged {
                    index: scan.next_index,
                    reason: flaw.to_string(),
                });
            }
            tail = Some(Tail {
                path: path.clone(),
                first: *first,
                keep: scan.good_len.max(segment::HEADER_LEN),
                len: bytes.len() as u64,
                index: scan.next_index,
                commit_beyond: segment::commit_beyond(&bytes, scan.good_len as usize),
                flaw,
            });
        }
        next = scan.next_index;
    }
    nodes.store(tree).map_err(io_at(Path::new("tree")))?;
    offsets.truncate(0).map_err(io_at(Path::new("offsets")))?;
    offsets
        .put(0, &offset_bytes)
        .map_err(io_at(Path::new("offsets")))?;
    Ok(Scanned {
        size: next,
        range,
        tail,
        commit,
        last_is_v1,
    })
}

// === the writer ===

struct Writer {
    shared: Arc<Shared>,
    signer: Signer,
    options: LogOptions,
    range: CompactRange,
    segment_len: u64,
    seg_dir: PathBuf,
    /// Start a new segment before the next write.
    roll: bool,
    /// A checkpoint newer than the checkpoint file, waiting for its turn.
    unwritten: Option<Arc<SignedCheckpoint>>,
    /// When the checkpoint file was last written.
    file_written: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) -> io::Result<()> {
        loop {
            let received = match self.file_due() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            let first = match received {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.write_checkpoint_file();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.options.linger;
            while batch.len() < self.options.max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) if self.options.linger.is_zero() => break,
                    Err(_) => match rx
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(job) => batch.push(job),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                }
            }
            self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            self.process(batch);
        }
        self.finish()
    }

    /// When the waiting checkpoint is to be written to the checkpoint file, if one waits.
    fn file_due(&self) -> Option<Instant> {
        self.unwritten.as_ref()?;
        Some(
            self.file_written
                .map_or_else(Instant::now, |at| at + CHECKPOINT_FILE_EVERY),
        )
    }

    fn write_checkpoint_file(&mut self) {
        if let Some(checkpoint) = self.unwritten.take() {
            // A failure only leaves an older (still valid) checkpoint there.
            let _ = write_checkpoint(&self.shared.dir, &checkpoint.note);
            self.file_written = Some(Instant::now());
        }
    }

    fn failed(&self) -> Option<String> {
        self.shared
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .clone()
    }

    fn process(&mut self, batch: Vec<Job>) {
        if let Some(reason) = self.failed() {
            for job in batch {
                (job.done)(Err(AppendError::Failed(reason.clone())));
            }
            return;
        }
        if let Some(before) = &self.options.before_write
            && let Err(reason) = before()
        {
            for job in batch {
                (job.done)(Err(AppendError::Failed(reason.clone())));
            }
            return;
        }
        // Times never go backwards in the log: an entry older than its predecessor is refused
        // (its caller stamps it again) and the rest of the batch goes on.
        let mut newest = self.shared.newest_time.load(Ordering::Acquire);
        let batch: Vec<Job> = batch
            .into_iter()
            .filter_map(|job| match crate::entry::Entry::time_of(&job.entry) {
                Some(time) if time < newest => {
                    (job.done)(Err(AppendError::TimeWentBack { time, newest }));
                    None
                }
                Some(time) => {
                    newest = time;
                    Some(job)
                }
                None => Some(job),
            })
            .collect();
        if batch.is_empty() {
            return;
        }
        let start = self.range.size();
        let synced = match self.write(&batch) {
            Ok(synced) => synced,
            Err(e) => {
                let reason = e.to_string();
                self.shared
                    .published
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .failed = Some(reason.clone());
                for job in batch {
                    (job.done)(Err(AppendError::Failed(reason.clone())));
                }
                return;
            }
        };
        if let Some(observe) = &self.options.observer {
            observe(&BatchStats {
                entries: batch.len(),
                sync: synced,
                queue_depth: self.shared.queued.load(Ordering::Relaxed),
                size: self.range.size(),
            });
        }
        let checkpoint = Arc::new(self.signer.sign(&Checkpoint {
            origin: self.options.origin.clone(),
            size: self.range.size(),
            root: self.range.root(),
        }));
        // The records and their commit frame are durable; the checkpoint file follows.
        self.unwritten = Some(checkpoint.clone());
        if self.file_due().is_some_and(|due| due <= Instant::now()) {
            self.write_checkpoint_file();
        }
        self.shared.newest_time.store(newest, Ordering::Release);
        {
            let mut published = self
                .shared
                .published
                .write()
                .unwrap_or_else(|p| p.into_inner());
            published.size = self.range.size();
            published.checkpoint = checkpoint.clone();
        }
        for (i, job) in batch.into_iter().enumerate() {
            let index = start + i as u64;
            let leaf_hash = self.shared.tree.node(0, index);
            (job.done)(match leaf_hash {
                Ok(leaf_hash) => Ok(Appended {
                    index,
                    leaf_hash,
                    checkpoint: checkpoint.clone(),
                }),
                Err(e) => Err(AppendError::Failed(e.to_string())),
            });
        }
    }

    /// Writes the batch's records and its commit frame and syncs them, then stores the tree
    /// nodes and offsets. Returns the time spent in `fdatasync`.
    fn write(&mut self, batch: &[Job]) -> io::Result<Duration> {
        let mut synced = Duration::ZERO;
        let start = self.range.size();
        let mut range = self.range.clone();
        let mut nodes = NewNodes::default();
        for job in batch {
            range.append(merkle::leaf_hash(&job.entry), |level, index, hash| {
                nodes.add(level, index, hash)
            });
        }
        let mut frames = Vec::new();
        let mut offsets = Vec::with_capacity(batch.len() * 8);
        let mut file = if std::mem::take(&mut self.roll) {
            self.new_segment(start)?
        } else {
            self.current_segment(start)?
        };
        for (i, job) in batch.iter().enumerate() {
            let index = start + i as u64;
            let len = segment::frame_len(job.entry.len());
            if self.segment_len > segment::HEADER_LEN
                && self.segment_len + len > self.options.segment_bytes
            {
                file.as_ref().write_all(&frames)?;
                let t = Instant::now();
                file.sync_data()?;
                synced += t.elapsed();
                frames.clear();
                file = self.new_segment(index)?;
            }
            offsets.extend_from_slice(&self.segment_len.to_be_bytes());
            segment::encode_frame(index, &job.entry, &mut frames);
            self.segment_len += len;
        }
        segment::encode_commit(range.size(), &range.root(), &mut frames);
        self.segment_len += segment::COMMIT_LEN as u64;
        file.as_ref().write_all(&frames)?;
        let t = Instant::now();
        file.sync_data()?;
        synced += t.elapsed();

        self.range = range;
        nodes.store(&self.shared.tree)?;
        self.shared.offsets.put(start, &offsets)?;
        Ok(synced)
    }

    fn current_segment(&mut self, next_index: u64) -> io::Result<Arc<File>> {
        let last = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .map(|(_, f)| f.clone());
        match last {
            Some(file) => Ok(file),
            None => self.new_segment(next_index),
        }
    }

    fn new_segment(&mut self, first: u64) -> io::Result<Arc<File>> {
        let path = self.seg_dir.join(segment::file_name(first));
        let mut file = durable::open_private(&path, Existing::Refuse, Writes::Append)?;
        file.write_all(&segment::header(first))?;
        file.sync_all()?;
        sync_dir(&self.seg_dir)?;
        let file = Arc::new(file);
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((first, file.clone()));
        self.segment_len = segment::HEADER_LEN;
        Ok(file)
    }

    /// Clean shutdown: sync the derived files and the checkpoint, then mark clean.
    fn finish(self) -> io::Result<()> {
        if self.failed().is_some() {
            return Ok(());
        }
        self.shared.tree.sync()?;
        self.shared.offsets.sync()?;
        let checkpoint = self
            .shared
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .checkpoint
            .clone();
        write_checkpoint(&self.shared.dir, &checkpoint.note)?;
        let segments = segment::list(&self.seg_dir)?;
        let left = CleanState::now(&self.shared.dir, self.range.size(), &segments)?;
        durable::write_file(&self.shared.dir.join(CLEAN), left.render().as_bytes())
    }
}

#[cfg(test)]
mod tests;
