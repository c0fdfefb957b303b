//! The consent store over sled. Every version is kept. Records are keyed by subject first, so
//! a decision reads one subject's records with one range scan, however many consents the
//! store holds. Writes are durable before they return: sled 0.34's `flush` ends in
//! `sync_file_range(2)`, which promises nothing after a power cut (sled issue #1452), so every
//! flush is followed by `fdatasync` of sled's log file and `fsync` of its folders.
//!
//! The audit log is the truth the store is reconciled against at start
//! ([`ConsentStore::reconcile`]); `meta` holds how far that has been done.
//!
//! Trees: `records` — subject (11 digits) ‖ consent id (16) ‖ version (u32 BE) → record JSON;
//! `ids` — consent id → subject ‖ latest version; `terms` — subject → the compact decision
//! index of its current versions ([`crate::terms`]), kept in the same transactions, so a
//! decision is one read and no allocation per consent.

use std::{
    collections::HashMap,
    fs::File,
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};

use crate::{
    SubjectId,
    record::{
        Actor, ConsentId, ConsentRecord, Evidence, NewConsent, Status, Timestamp, Withdrawal,
    },
    terms::{self, Terms, TermsView},
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed to open, read, write or flush.
    #[error("consent store: {0}")]
    Storage(#[from] sled::Error),
    /// Opening or syncing sled's files and folders failed.
    #[error("consent store: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record, consent location, decision index or reconciliation mark does not
    /// parse; says which and why.
    #[error("consent store holds an unreadable record: {0}")]
    Corrupt(String),
    /// No consent has that id, or it has no such version.
    #[error("no such consent")]
    NotFound,
    /// The consent's current version is already withdrawn.
    #[error("the consent is already withdrawn")]
    AlreadyWithdrawn,
    /// The consent to supersede is not active: `withdrawn`, `superseded`, or `changed
    /// meanwhile` when it changed between preparing and committing the grant.
    #[error("the consent to supersede is {0}, not active")]
    NotActive(&'static str),
    /// The consent to supersede is about another subject.
    #[error("the consent to supersede is about another subject")]
    SubjectMismatch,
}

pub use reconcile::{
    LoggedChange, LostGrants, Reconciled, reapply_withdrawal, supersede_if_active,
};

/// Decision index bytes by subject.
type Index = HashMap<[u8; 11], Box<[u8]>>;

/// What is synced after every sled flush: its log file, the blob files it wrote since (sled
/// writes a value larger than about a quarter of a segment to a file of its own, unsynced),
/// and the folders naming its files.
#[derive(Debug)]
struct SledFiles {
    log: File,
    blobs: std::path::PathBuf,
    /// Blob files already synced (sled writes each once).
    synced_blobs: std::sync::Mutex<std::collections::HashSet<std::ffi::OsString>>,
    folders: Vec<File>,
}

impl SledFiles {
    fn open(path: &Path) -> std::io::Result<Self> {
        let blobs = path.join("blobs");
        let mut folders = vec![File::open(path)?, File::open(&blobs)?];
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            folders.push(File::open(parent)?);
        }
        Ok(Self {
            log: File::open(path.join("db"))?,
            blobs,
            synced_blobs: Default::default(),
            folders,
        })
    }

    fn sync(&self) -> std::io::Result<()> {
        // Syncing through another descriptor syncs the same file: the kernel's cache, and so
        // `fsync(2)`, is per file, not per descriptor.
        self.log.sync_data()?;
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        for blob in std::fs::read_dir(&self.blobs)? {
            let name = blob?.file_name();
            if synced.contains(&name) {
                continue;
            }
            match File::open(self.blobs.join(&name)) {
                Ok(file) => file.sync_data()?,
                // Removed by sled meanwhile: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            synced.insert(name);
        }
        self.folders.iter().try_for_each(File::sync_all)
    }
}

/// The durable consent store.
#[derive(Debug, Clone)]
pub struct ConsentStore {
    db: sled::Db,
    files: Arc<SledFiles>,
    records: sled::Tree,
    ids: sled::Tree,
    terms: sled::Tree,
    meta: sled::Tree,
    /// Every subject's decision index in memory (loaded on open, replaced after each committed
    /// write): a decision then costs the same however large the store grows.
    index: Arc<RwLock<Index>>,
    /// Held by each write from before it reads what it changes until its decision index is in
    /// memory, so memory takes the writes in the order they committed: two writes about one
    /// subject (a grant and a withdrawal) can never leave memory with the older index. Writes
    /// are rare and decisions do not take it.
    writes: Arc<Mutex<()>>,
}

/// `index` with the entry of `id` replaced by `entry` (or appended).
fn replace_entry(
    index: Option<&[u8]>,
    id: &ConsentId,
    entry: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let views =
        terms::parse_index(index.unwrap_or(&[])).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let kept = views.iter().filter(|v| v.id() != *id).map(TermsView::raw);
    let entries: Vec<&[u8]> = kept.chain(std::iter::once(entry)).collect();
    Ok(terms::encode_index(entries.into_iter()))
}

fn subject_key(subject: &SubjectId) -> [u8; 11] {
    let mut key = [0u8; 11];
    key.copy_from_slice(subject.expose().as_bytes());
    key
}

fn record_key(subject: &SubjectId, id: &ConsentId, version: u32) -> Vec<u8> {
    let mut key = subject.expose().into_bytes();
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// A stored record read back (the embedded store's encoding, which other backends share).
///
/// # Errors
/// [`StoreError::Corrupt`] for bytes that are not a record.
pub fn decode(bytes: &[u8]) -> Result<ConsentRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A record as stores keep it (JSON; its content hash is over its canonical content, not
/// these bytes).
pub fn encode(record: &ConsentRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// The record a grant stores, whatever the store: a new consent (`current: None`: version
/// 1, a new id) or the version after `current` (the newest version of the consent it
/// supersedes), recorded at `now`, active.
///
/// # Errors
/// [`StoreError::SubjectMismatch`] when `current` is about another subject;
/// [`StoreError::NotActive`] when it is withdrawn or superseded.
pub fn next_version(
    new: NewConsent,
    current: Option<ConsentRecord>,
    now: Timestamp,
) -> Result<ConsentRecord, StoreError> {
    let (id, version) = match current {
        None => (ConsentId::generate(), 1),
        Some(current) => {
            if current.subject != new.subject {
                return Err(StoreError::SubjectMismatch);
            }
            match current.status {
                Status::Active => {}
                Status::Withdrawn => return Err(StoreError::NotActive("withdrawn")),
                Status::Superseded => return Err(StoreError::NotActive("superseded")),
            }
            (current.id, current.version + 1)
        }
    };
    let NewConsent {
        subject,
        recorded_by,
        provisions,
        period,
        evidence,
    } = new;
    Ok(ConsentRecord {
        id,
        version,
        subject,
        recorded_by,
        provisions,
        period,
        evidence,
        recorded_at: now,
        status: Status::Active,
        withdrawal: None,
    })
}

/// Withdraws `record` (the consent's newest version) for good, at `now`.
///
/// # Errors
/// [`StoreError::AlreadyWithdrawn`].
pub fn withdraw(
    record: &mut ConsentRecord,
    by: Actor,
    reason: Option<String>,
    evidence: Option<Evidence>,
    now: Timestamp,
) -> Result<(), StoreError> {
    if record.status == Status::Withdrawn {
        return Err(StoreError::AlreadyWithdrawn);
    }
    record.status = Status::Withdrawn;
    record.withdrawal = Some(Withdrawal {
        at: now,
        by,
        reason,
        evidence,
    });
    Ok(())
}

fn abort<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

fn flatten(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Storage(e),
    }
}

impl ConsentStore {
    /// Opens (creating) the store in folder `path`, syncs the files and folders sled created,
    /// and loads every subject's decision index into memory.
    ///
    /// # Errors
    /// [`StoreError::Storage`] when sled cannot open the database or read the index,
    /// [`StoreError::Io`] when its files or folders cannot be opened or synced,
    /// [`StoreError::Corrupt`] for a decision index key that is not 11 bytes.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Decisions read the in-memory index; sled's cache (1 GiB by default) serves the rest.
        // sled's memory is many times its cache capacity: 16 MiB took the peak of loading a
        // million consents from 412 to 343 MiB (decisions as fast), against 128 MiB.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(16 << 20)
            .open()?;
        let files = Arc::new(SledFiles::open(path)?);
        // The files sled created are named durably before anything is acknowledged.
        files.sync()?;
        let terms = db.open_tree("terms")?;
        let mut index = HashMap::new();
        for item in terms.iter() {
            let (key, value) = item?;
            let key: [u8; 11] = key
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("bad decision index key".into()))?;
            index.insert(key, Box::from(value.as_ref()));
        }
        Ok(Self {
            records: db.open_tree("records")?,
            ids: db.open_tree("ids")?,
            meta: db.open_tree("meta")?,
            terms,
            index: Arc::new(RwLock::new(index)),
            writes: Arc::new(Mutex::new(())),
            files,
            db,
        })
    }

    /// Where `id`'s versions live: its subject and latest version.
    fn locate(&self, id: &ConsentId) -> Result<(SubjectId, u32), StoreError> {
        let value = self.ids.get(id.as_bytes())?.ok_or(StoreError::NotFound)?;
        parse_location(&value)
    }

    /// Builds the record a grant would store: a new consent, or the next version of
    /// `supersedes` (which must be active and about the same subject). Writes nothing.
    pub fn prepare_grant(
        &self,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        let current = supersedes.map(|id| self.get(&id, None)).transpose()?;
        next_version(new, current, now)
    }

    /// Stores a prepared grant (superseding the previous version, if any) and flushes.
    /// Fails, changing nothing, if the consent changed since it was prepared.
    pub fn commit_grant(&self, record: &ConsentRecord) -> Result<(), StoreError> {
        let _write = self.write_lock();
        let key = record_key(&record.subject, &record.id, record.version);
        let mut location = record.subject.expose().into_bytes();
        location.extend_from_slice(&record.version.to_be_bytes());
        let subject_key = record.subject.expose().into_bytes();
        let entry = terms::encode_entry(record);
        let new_index = (&self.records, &self.ids, &self.terms)
            .transaction(|(records, ids, index)| {
                let latest = ids.get(record.id.as_bytes())?;
                let expected = record.version - 1;
                let found = match &latest {
                    None => 0,
                    Some(v) => match parse_location(v) {
                        Ok((_, version)) => version,
                        Err(e) => return abort(e),
                    },
                };
                if found != expected {
                    return abort(StoreError::NotActive("changed meanwhile"));
                }
                if expected > 0 {
                    let old_key = record_key(&record.subject, &record.id, expected);
                    let Some(bytes) = records.get(&old_key)? else {
                        return abort(StoreError::NotFound);
                    };
                    let mut old = match decode(&bytes) {
                        Ok(old) => old,
                        Err(e) => return abort(e),
                    };
                    if old.status != Status::Active {
                        return abort(StoreError::NotActive("changed meanwhile"));
                    }
                    old.status = Status::Superseded;
                    records.insert(old_key, encode(&old))?;
                }
                records.insert(key.as_slice(), encode(record))?;
                ids.insert(record.id.as_bytes(), location.as_slice())?;
                let current = index.get(&subject_key)?;
                match replace_entry(current.as_deref(), &record.id, &entry) {
                    Ok(updated) => {
                        index.insert(subject_key.as_slice(), updated.as_slice())?;
                        Ok(updated)
                    }
                    Err(e) => abort(e),
                }
            })
            .map_err(flatten)?;
        self.sync()?;
        self.cache(&record.subject, Some(new_index));
        Ok(())
    }

    /// Withdraws the current version of `id`, at once and for good, and syncs.
    pub fn withdraw(
        &self,
        id: &ConsentId,
        by: Actor,
        reason: Option<String>,
        evidence: Option<Evidence>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        // The version withdrawn is the latest when the withdrawal is written.
        let _write = self.write_lock();
        let (_, version) = self.locate(id)?;
        let (withdrawn, _) = self.restate_locked(id, version, |record| {
            withdraw(record, by.clone(), reason.clone(), evidence.clone(), now).map(|()| true)
        })?;
        Ok(withdrawn)
    }

    /// One version of `id` (`None`: the latest).
    pub fn get(&self, id: &ConsentId, version: Option<u32>) -> Result<ConsentRecord, StoreError> {
        let (subject, latest) = self.locate(id)?;
        let version = version.unwrap_or(latest);
        let bytes = self
            .records
            .get(record_key(&subject, id, version))?
            .ok_or(StoreError::NotFound)?;
        decode(&bytes)
    }

    /// Every version of every consent about `subject`, ordered by consent id and version.
    pub fn for_subject(&self, subject: &SubjectId) -> Result<Vec<ConsentRecord>, StoreError> {
        self.records
            .scan_prefix(subject.expose().as_bytes())
            .map(|item| decode(&item?.1))
            .collect()
    }

    /// Runs `f` over the decision index of `subject`: one in-memory lookup, however many
    /// consents the store holds, and nothing copied.
    pub fn with_terms<R>(
        &self,
        subject: &SubjectId,
        f: impl FnOnce(&[TermsView<'_>]) -> R,
    ) -> Result<R, StoreError> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let bytes = index.get(&subject_key(subject)).map_or(&[][..], |b| &b[..]);
        touch_lines(bytes);
        let views = terms::parse_index(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(f(&views))
    }

    /// The lock every write holds (see `writes`).
    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the in-memory index of `subject` after a committed write.
    fn cache(&self, subject: &SubjectId, bytes: Option<Vec<u8>>) {
        // Tests widen the window between a commit and its index reaching memory, by a
        // varying 0-2 ms, so writes racing each other arrive here out of order.
        #[cfg(test)]
        {
            static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_micros(n * 7_919 % 2_000));
        }
        if let Some(bytes) = bytes {
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(subject_key(subject), bytes.into_boxed_slice());
        }
    }

    /// Makes everything written so far durable (see the module documentation).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.sync()
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.files.sync()?;
        Ok(())
    }

    /// Changes the stored state of version `version` of `id` with `change` (which says
    /// whether it changed anything, or refuses), keeping the decision index in step, and
    /// syncs. Returns the version as stored and whether it changed.
    fn restate(
        &self,
        id: &ConsentId,
        version: u32,
        change: impl Fn(&mut ConsentRecord) -> Result<bool, StoreError>,
    ) -> Result<(ConsentRecord, bool), StoreError> {
        let _write = self.write_lock();
        self.restate_locked(id, version, change)
    }

    /// [`Self::restate`] by a caller holding [`Self::write_lock`].
    fn restate_locked(
        &self,
        id: &ConsentId,
        version: u32,
        change: impl Fn(&mut ConsentRecord) -> Result<bool, StoreError>,
    ) -> Result<(ConsentRecord, bool), StoreError> {
        let (subject, latest) = self.locate(id)?;
        let key = record_key(&subject, id, version);
        let subject_key = subject.expose().into_bytes();
        let (record, new_index) = (&self.records, &self.terms)
            .transaction(|(records, index)| {
                let Some(bytes) = records.get(&key)? else {
                    return abort(StoreError::NotFound);
                };
                let mut record = match decode(&bytes) {
                    Ok(r) => r,
                    Err(e) => return abort(e),
                };
                match change(&mut record) {
                    Ok(true) => {}
                    Ok(false) => return Ok((record, None)),
                    Err(e) => return abort(e),
                }
                records.insert(key.as_slice(), encode(&record))?;
                if version != latest {
                    // Only the latest version is in the decision index.
                    return Ok((record, Some(None)));
                }
                let current = index.get(&subject_key)?;
                match replace_entry(
                    current.as_deref(),
                    &record.id,
                    &terms::encode_entry(&record),
                ) {
                    Ok(updated) => {
                        index.insert(subject_key.as_slice(), updated.as_slice())?;
                        Ok((record, Some(Some(updated))))
                    }
                    Err(e) => abort(e),
                }
            })
            .map_err(flatten)?;
        let Some(new_index) = new_index else {
            return Ok((record, false));
        };
        self.sync()?;
        self.cache(&subject, new_index);
        Ok((record, true))
    }

    /// Stores a record as is, without flushing (bulk loading for benchmarks).
    pub fn load_unflushed(&self, record: &ConsentRecord) -> Result<(), StoreError> {
        let _write = self.write_lock();
        let mut location = record.subject.expose().into_bytes();
        location.extend_from_slice(&record.version.to_be_bytes());
        self.records.insert(
            record_key(&record.subject, &record.id, record.version),
            encode(record),
        )?;
        self.ids.insert(record.id.as_bytes(), location)?;
        let subject_key = record.subject.expose().into_bytes();
        let current = self.terms.get(&subject_key)?;
        let updated = replace_entry(current.as_deref(), &record.id, &terms::encode_entry(record))?;
        self.terms.insert(subject_key, updated.as_slice())?;
        self.cache(&record.subject, Some(updated));
        Ok(())
    }
}

/// Reads one byte of every cache line of `bytes` before they are parsed. The loads do not
/// depend on each other, so the CPU fetches the lines from memory in parallel; parsing, where
/// each entry's offset depends on the one before, would otherwise wait for them one by one.
/// With a million consents the index no longer fits in the CPU caches and this is most of the
/// cost of a decision.
fn touch_lines(bytes: &[u8]) {
    const LINE: usize = 64;
    let mut acc = 0u8;
    let mut at = 0;
    while at < bytes.len() {
        acc |= bytes[at];
        at += LINE;
    }
    std::hint::black_box(acc);
}

fn parse_location(value: &[u8]) -> Result<(SubjectId, u32), StoreError> {
    let corrupt = || StoreError::Corrupt("bad consent location".into());
    if value.len() != 15 {
        return Err(corrupt());
    }
    let subject = std::str::from_utf8(&value[..11])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(corrupt)?;
    let mut version = [0u8; 4];
    version.copy_from_slice(&value[11..]);
    Ok((subject, u32::from_be_bytes(version)))
}

mod reconcile;
#[cfg(test)]
mod tests;
