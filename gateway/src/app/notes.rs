//! The note store: disclosed notes, sealed at rest (AES-256-GCM, [`crate::crypto::keyring`]), in the
//! recipient's inbox until acknowledged. An append-only journal of its own under the data
//! folder, with everything it is searched by kept in memory.
//!
//! Files `journal-NNNNNNNN` (numbered from 1; a new one is begun past 64 MiB) hold records
//! `[payload length u32 LE][CRC-32C of kind ‖ payload, u32 LE][kind u8][payload]`. Kind 1 is a
//! note as JSON (subject, title, body and approval sealed): a note's newest record is its
//! state. Kind 2 forgets a note — a pending note whose audit entry never became durable, or a
//! purged one after `notes.forget_after` —: its id and a 128-bit digest of its sender and
//! request id. At start the files are read in order and the
//! memory rebuilt: where each note's newest record is; the indexes — recipient's inbox
//! (deliverable notes by id, so oldest first), consent (withdrawal purges what relied on it),
//! expiry times (deliverable notes by disclosure time, acknowledged ones by purge time); and
//! the senders' request ids (idempotency). An incomplete or damaged record at the end of the
//! newest file is a write cut short by a crash — never flushed, so never acknowledged — and is
//! cut off; damage anywhere else stops the start.
//!
//! Writes go to the file in order under one lock, which also covers the memory they change, so
//! the indexes always agree with the notes. A group flush (one `fdatasync` per file written,
//! for everyone who waits meanwhile) makes them durable. Older files whose records are mostly
//! superseded are compacted: live records copied to the newest file, flushed, then the file
//! deleted — which is also when the superseded copies of purged bodies leave the disk.
//!
//! Invariant (with the audit log): a note becomes deliverable only after its `disclosure
//! permitted` entry is durable; it is stored `Pending` before that entry is appended, and the
//! audit log's writer syncs this store before it writes each batch ([`NoteStore::sync_now`]),
//! so an entry never names a note the store does not have.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{File, OpenOptions},
    io::{self, BufReader, Read},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use casegate_audit::durable::{self, Writes};
use casegate_consent::{
    Category, OrgNumber, Purpose, Role, SubjectId,
    record::{Actor, ConsentId, Timestamp},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::keyring::{Keyring, KeyringError, Sealed};

/// A note's states, in the only order it moves through them (some may be skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteState {
    /// Stored, its audit entry not yet known durable.
    Pending,
    /// In the recipient's inbox.
    Deliverable,
    /// Acknowledged by the recipient; the body is kept until the retention period ends.
    Acknowledged,
    /// Body deleted (withdrawn consent, retention or TTL elapsed).
    Purged,
}

/// A clinician's approval attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approving clinician's HPR number (Helsepersonellregisteret), 1-9 digits.
    pub hpr_number: String,
    /// When they approved the disclosure.
    pub approved_at: Timestamp,
}

/// What is sealed: everything personal about a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The jobseeker the note is about.
    pub subject: SubjectId,
    /// The note's title, as the sender wrote it.
    pub title: String,
    /// The note's body, as sent (its type is the note's `content_type`; base64 in JSON).
    #[serde(with = "crate::crypto::b64")]
    pub body: Vec<u8>,
    /// The clinician's approval, for a category that requires one.
    pub approval: Option<Approval>,
}

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The note's id (UUIDv7, so ids sort by disclosure time).
    pub id: uuid::Uuid,
    /// Where it is in its life.
    pub state: NoteState,
    /// The sender's idempotency key for the `Disclose` call.
    pub request_id: String,
    /// SHA-256 over every field of the `Disclose` request: a repeat with the same request id
    /// must match it.
    #[serde(with = "crate::crypto::b64")]
    pub fingerprint: [u8; 32],
    /// Who disclosed it, as authenticated.
    pub sender: Actor,
    /// The organisation whose inbox it goes to.
    pub recipient_org: OrgNumber,
    /// The role it is meant for at the recipient, if the sender named one.
    pub recipient_role: Option<Role>,
    /// What kind of information it holds.
    pub category: Category,
    /// What it is disclosed for.
    pub purpose: Purpose,
    /// The body's media type, as the sender gave it.
    pub content_type: String,
    /// The consent that permitted the disclosure.
    pub consent_id: ConsentId,
    /// The version of that consent the decision relied on.
    pub consent_version: u32,
    /// SHA-256 of that version's canonical content (`casegate.consent.v1`).
    #[serde(with = "crate::crypto::b64")]
    pub consent_record_hash: [u8; 32],
    /// SHA-256 of the body.
    #[serde(with = "crate::crypto::b64")]
    pub content_sha256: [u8; 32],
    /// The subject's pseudonym (HMAC-SHA-256), as the audit log names them.
    #[serde(with = "crate::crypto::b64")]
    pub subject_pseudonym: [u8; 32],
    /// When it was disclosed (`Disclose` was decided).
    pub disclosed_at: Timestamp,
    /// The index of its `disclosure_permitted` audit entry; `None` while pending.
    pub audit_index: Option<u64>,
    /// The audit log's size when the note was stored: its entry, if written, comes after.
    pub log_size_hint: u64,
    /// Whether it was ever streamed to the recipient.
    pub delivered: bool,
    /// When the recipient acknowledged it.
    pub acknowledged_at: Option<Timestamp>,
    /// When the body is deleted (set on acknowledgement).
    pub purge_after: Option<Timestamp>,
    /// When the body was deleted; the note itself is forgotten some time after.
    #[serde(default)]
    pub purged_at: Option<Timestamp>,
    /// `None` once purged.
    pub sealed: Option<Sealed>,
}

impl Note {
    /// Opens a note's sealed part.
    pub fn open_secret(&self, keyring: &Keyring) -> Result<Secret, NoteError> {
        let sealed = self.sealed.as_ref().ok_or(NoteError::NotFound)?;
        let plain = keyring.open(
            sealed,
            &Note::aad(&self.id, &self.subject_pseudonym, self.recipient_org),
        )?;
        serde_json::from_slice(&plain).map_err(|e| NoteError::Corrupt(e.to_string()))
    }

    /// What the seal is bound to: the note's id, subject pseudonym and recipient, so a sealed
    /// body cannot be moved to another note or inbox.
    pub fn aad(id: &uuid::Uuid, pseudonym: &[u8; 32], recipient: OrgNumber) -> Vec<u8> {
        let mut aad = id.as_bytes().to_vec();
        aad.extend_from_slice(pseudonym);
        aad.extend_from_slice(recipient.to_string().as_bytes());
        aad
    }
}

/// Why the note store could not open, read or change a note.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// A journal file or the folder could not be read, written or synced.
    #[error("note store: {0}")]
    Io(#[from] std::io::Error),
    /// A write or flush failed earlier (or now): the store refuses every further write.
    #[error("note store stopped after a failed write; restart the gateway: {0}")]
    Failed(String),
    /// A journal file is damaged other than by a write cut short, a record or sealed part
    /// does not decode, or the folder holds the earlier (sled) format.
    #[error("note store holds an unreadable note: {0}")]
    Corrupt(String),
    /// A sealed part could not be sealed or opened.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The store holds no note with that id (never stored, or forgotten), or its body is
    /// purged.
    #[error("no such note")]
    NotFound,
    /// The change needs a deliverable note (in the inbox) and the note is not.
    #[error("the note is {0}, not in the inbox")]
    NotDeliverable(&'static str),
}

/// A request id already used by the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// The note the request id was first used for.
    pub id: uuid::Uuid,
    /// That request's fingerprint (see [`Note::fingerprint`]).
    pub fingerprint: [u8; 32],
}

/// A thread waiting for the next flush.
type FlushWaiter = std::sync::mpsc::SyncSender<Result<(), String>>;

/// What a note store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// Notes in any state, purged ones not yet forgotten included.
    pub notes: usize,
    /// Journal files.
    pub files: usize,
    /// Bytes in the journal files, and how many of them are notes' newest records.
    pub bytes: u64,
    /// Bytes of the journal files that are notes' newest records (not superseded, not
    /// forgotten).
    pub live_bytes: u64,
}

impl JournalStats {
    /// What the note store holds: notes, journal files, their bytes and how many are live.
    pub fn record_metrics(&self) {
        metrics::gauge!("casegate_notes_held").set(self.notes as f64);
        metrics::gauge!("casegate_note_journal_files").set(self.files as f64);
        metrics::gauge!("casegate_note_journal_bytes").set(self.bytes as f64);
        metrics::gauge!("casegate_note_journal_live_bytes").set(self.live_bytes as f64);
    }
}

/// Why a due note's body is to be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expiry {
    /// Acknowledged, and the retention period is over.
    RetentionElapsed,
    /// Never acknowledged within the TTL.
    TtlElapsed,
}

impl NoteState {
    /// The state's name, as messages show it.
    pub fn code(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Deliverable => "deliverable",
            Self::Acknowledged => "acknowledged",
            Self::Purged => "purged",
        }
    }
}

impl Expiry {
    /// The reason code of the `note purged` audit entry: `retention_elapsed` or
    /// `ttl_elapsed`.
    pub fn code(self) -> &'static str {
        match self {
            Self::RetentionElapsed => "retention_elapsed",
            Self::TtlElapsed => "ttl_elapsed",
        }
    }
}

/// A new journal file is begun when a record would take the newest past this size.
const FILE_BYTES: u64 = 64 << 20;
/// Record header: payload length, CRC-32C, kind.
const HEADER: usize = 9;
const KIND_NOTE: u8 = 1;
const KIND_FORGET: u8 = 2;
/// Files are compacted once at most this share of their bytes is still live.
const COMPACT_LIVE_PERCENT: u64 = 30;

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    file: u32,
    offset: u64,
    len: u32,
}

/// What memory keeps of a note: where its newest record is, and what the indexes need.
#[derive(Debug, Clone)]
struct Slot {
    at: Location,
    state: NoteState,
    recipient: OrgNumber,
    consent: ConsentId,
    disclosed_at: Timestamp,
    /// Acknowledged: when the body is to be deleted; purged: when it was.
    expiry: Option<Timestamp>,
}

impl Slot {
    fn of(note: &Note, at: Location) -> Self {
        Self {
            at,
            state: note.state,
            recipient: note.recipient_org,
            consent: note.consent_id,
            disclosed_at: note.disclosed_at,
            expiry: match note.state {
                NoteState::Purged => note.purged_at,
                _ => note.purge_after,
            },
        }
    }
}

/// What memory keeps of a request id: a 128-bit digest of the sender and the id.
type RequestKey = [u8; 16];

fn request_key(sender: OrgNumber, request_id: &str) -> RequestKey {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    hash.update(sender.to_string().as_bytes());
    hash.update(&[0]);
    hash.update(request_id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.finish().as_ref()[..16]);
    key
}

#[derive(Debug)]
struct JournalFile {
    file: Arc<File>,
    len: u64,
    /// Bytes of notes' newest records (forget records, small, count as superseded).
    live: u64,
    /// The notes forgotten by records in this file: copied on when it is compacted while an
    /// older file (which may hold a record of theirs) remains.
    forgotten: Vec<Forget>,
}

/// A forget record's content: the note and its request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Forget {
    id: Uuid,
    request: RequestKey,
}

/// A forget record's payload: the note id and its request key, 16 bytes each.
const FORGET_LEN: usize = 32;

impl Forget {
    fn of(note: &Note) -> Self {
        Self {
            id: note.id,
            request: request_key(note.sender.orgnr, &note.request_id),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut payload = self.id.as_bytes().to_vec();
        payload.extend_from_slice(&self.request);
        payload
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        if payload.len() != FORGET_LEN {
            return None;
        }
        Some(Self {
            id: Uuid::from_slice(&payload[..16]).ok()?,
            request: payload[16..].try_into().ok()?,
        })
    }
}

/// Everything in memory, under one lock.
#[derive(Debug, Default)]
struct State {
    notes: HashMap<Uuid, Slot>,
    /// Sender and request id → the note (reserved, or stored).
    requests: HashMap<RequestKey, Existing>,
    inbox: BTreeSet<(OrgNumber, Uuid)>,
    by_consent: BTreeSet<(ConsentId, Uuid)>,
    /// Deliverable notes by disclosure time.
    waiting: BTreeSet<(Timestamp, Uuid)>,
    /// Acknowledged notes by purge time.
    retained: BTreeSet<(Timestamp, Uuid)>,
    /// Purged notes by the time they were purged.
    purged: BTreeSet<(Timestamp, Uuid)>,
    files: BTreeMap<u32, JournalFile>,
    /// Files written since the last flush began, and whether one was created.
    unsynced: BTreeSet<u32>,
    created: bool,
    /// Set when a write or flush failed in a way that leaves the files' content unknown.
    failed: Option<String>,
}

fn toggle<K: Ord>(set: &mut BTreeSet<K>, key: K, add: bool) {
    if add {
        set.insert(key);
    } else {
        set.remove(&key);
    }
}

impl State {
    /// Adds (or removes) the index keys `slot`'s state calls for.
    fn index(&mut self, id: Uuid, slot: &Slot, add: bool) {
        if matches!(slot.state, NoteState::Pending | NoteState::Deliverable) {
            toggle(&mut self.by_consent, (slot.consent, id), add);
        }
        if slot.state == NoteState::Deliverable {
            toggle(&mut self.inbox, (slot.recipient, id), add);
            toggle(&mut self.waiting, (slot.disclosed_at, id), add);
        }
        match (slot.state, slot.expiry) {
            (NoteState::Acknowledged, Some(at)) => toggle(&mut self.retained, (at, id), add),
            (NoteState::Purged, Some(at)) => toggle(&mut self.purged, (at, id), add),
            _ => {}
        }
    }

    /// Makes `slot` the note's newest state (`None`: forgotten).
    fn set(&mut self, id: Uuid, slot: Option<Slot>) {
        if let Some(old) = self.notes.remove(&id) {
            self.index(id, &old, false);
            self.superseded(old.at);
        }
        if let Some(slot) = slot {
            self.index(id, &slot, true);
            self.notes.insert(id, slot);
        }
    }

    /// Drops a note and its request id from memory.
    fn forget(&mut self, forget: Forget) {
        self.set(forget.id, None);
        if self.requests.get(&forget.request).map(|e| e.id) == Some(forget.id) {
            self.requests.remove(&forget.request);
        }
    }

    /// A record no longer needed.
    fn superseded(&mut self, at: Location) {
        if let Some(file) = self.files.get_mut(&at.file) {
            file.live = file.live.saturating_sub(u64::from(at.len));
        }
    }

    fn newest_file(&self) -> u32 {
        self.files.keys().next_back().copied().unwrap_or(1)
    }

    fn check(&self) -> Result<(), NoteError> {
        match &self.failed {
            Some(why) => Err(NoteError::Failed(why.clone())),
            None => Ok(()),
        }
    }
}

/// `[length][CRC-32C][kind][payload]`.
fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// The kind and payload of a record's bytes, if they are one whole, undamaged record.
fn parse(bytes: &[u8]) -> Option<(u8, &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let kind = *bytes.get(8)?;
    let payload = bytes.get(HEADER..HEADER + len)?;
    (crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload) == crc).then_some((kind, payload))
}

/// The offset of the first intact record (whole, its checksum right, a known kind) that
/// starts after byte `flaw` of `file`, searching every position. A position is checksummed
/// only if it looks like a record's start (a known kind; a forget record's fixed length, a
/// note's JSON object), so a tail of garbage costs time in proportion to its length.
fn intact_record_after(file: &File, flaw: u64, size: u64) -> io::Result<Option<u64>> {
    let mut rest = vec![0u8; usize::try_from(size - flaw).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut rest, flaw)?;
    let plausible = |bytes: &[u8]| -> bool {
        let Some(header) = bytes.get(..HEADER) else {
            return false;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        match header[8] {
            KIND_FORGET => len == FORGET_LEN,
            KIND_NOTE => bytes.get(HEADER..HEADER + 2) == Some(b"{\""),
            _ => false,
        }
    };
    Ok((1..rest.len())
        .find(|&at| plausible(&rest[at..]) && parse(&rest[at..]).is_some())
        .map(|at| flaw + at as u64))
}

fn file_name(number: u32) -> String {
    format!("journal-{number:08}")
}

fn file_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("journal-")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn create_file(dir: &Path, number: u32) -> io::Result<File> {
    durable::open_private(
        &dir.join(file_name(number)),
        durable::Existing::Refuse,
        Writes::Positioned,
    )
}

fn encode(note: &Note) -> Result<Vec<u8>, NoteError> {
    let json = serde_json::to_vec(note).map_err(|e| NoteError::Corrupt(e.to_string()))?;
    Ok(record(KIND_NOTE, &json))
}

fn decode(payload: &[u8]) -> Result<Note, NoteError> {
    serde_json::from_slice(payload).map_err(|e| NoteError::Corrupt(e.to_string()))
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    file_bytes: u64,
    state: Mutex<State>,
    /// Held while syncing.
    syncing: Mutex<()>,
}

/// The note store's handle: cheap to clone, every clone the same store.
#[derive(Debug, Clone)]
pub struct NoteStore {
    shared: Arc<Shared>,
    /// Group commit for flushes: one flusher thread, one flush for all who wait meanwhile.
    flusher: std::sync::mpsc::SyncSender<FlushWaiter>,
}

/// Reads one journal file into `state`. A record cut short or damaged ends the reading: in
/// the newest file (`newest`) the file is cut there, elsewhere it is an error.
fn replay(dir: &Path, number: u32, newest: bool, state: &mut State) -> Result<(), NoteError> {
    let path = dir.join(file_name(number));
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let size = file.metadata()?.len();
    let file = Arc::new(file);
    state.files.insert(
        number,
        JournalFile {
            file: file.clone(),
            len: 0,
            live: 0,
            forgotten: Vec::new(),
        },
    );
    let mut reader = BufReader::with_capacity(1 << 20, file.as_ref());
    let mut offset = 0u64;
    let mut bytes = Vec::new();
    while offset < size {
        let whole = (|| -> io::Result<bool> {
            if size - offset < HEADER as u64 {
                return Ok(false);
            }
            bytes.resize(HEADER, 0);
            reader.read_exact(&mut bytes)?;
            let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64;
            if offset + HEADER as u64 + len > size {
                return Ok(false);
            }
            bytes.resize(HEADER + len as usize, 0);
            reader.read_exact(&mut bytes[HEADER..])?;
            Ok(true)
        })()?;
        let parsed = if whole { parse(&bytes) } else { None };
        let Some((kind, payload)) = parsed else {
            if !newest {
                return Err(NoteError::Corrupt(format!(
                    "{} is damaged at byte {offset}",
                    path.display()
                )));
            }
            // A write cut short ends the file; a flaw with an intact record after it is
            // damage to what was synced (and acknowledged): keep every byte and refuse.
            if let Some(at) = intact_record_after(&file, offset, size)? {
                return Err(NoteError::Corrupt(format!(
                    "{} is damaged at byte {offset}, with an intact record at byte {at} after it",
                    path.display()
                )));
            }
            tracing::warn!(
                file = %path.display(),
                discarded_bytes = size - offset,
                "note journal ended in a write cut short; cut off"
            );
            file.set_len(offset)?;
            file.sync_all()?;
            break;
        };
        let at = Location {
            file: number,
            offset,
            len: bytes.len() as u32,
        };
        let journal = journal_of(state, number)?;
        journal.len = offset + u64::from(at.len);
        journal.live += u64::from(at.len);
        match kind {
            KIND_NOTE => {
                let note = decode(payload)?;
                state.requests.insert(
                    request_key(note.sender.orgnr, &note.request_id),
                    Existing {
                        id: note.id,
                        fingerprint: note.fingerprint,
                    },
                );
                state.set(note.id, Some(Slot::of(&note, at)));
            }
            KIND_FORGET => {
                let forget = Forget::decode(payload)
                    .ok_or_else(|| NoteError::Corrupt(format!("bad forget record in {number}")))?;
                state.forget(forget);
                state.superseded(at);
                journal_of(state, number)?.forgotten.push(forget);
            }
            other => {
                return Err(NoteError::Corrupt(format!(
                    "{} holds a record of unknown kind {other} at byte {offset}",
                    path.display()
                )));
            }
        }
        offset += u64::from(at.len);
    }
    Ok(())
}

fn journal_of(state: &mut State, number: u32) -> Result<&mut JournalFile, NoteError> {
    state
        .files
        .get_mut(&number)
        .ok_or_else(|| NoteError::Corrupt(format!("journal file {number} went missing")))
}

impl NoteStore {
    /// Opens the store in the folder `path` (created, and synced, if missing), reading every
    /// journal file to rebuild the memory, and starts its flusher thread.
    ///
    /// # Errors
    /// [`NoteError::Corrupt`] if a file is damaged other than at the end of the newest one, or
    /// the folder holds the earlier sled format; [`NoteError::Io`] if a file cannot be read.
    pub fn open(path: &Path) -> Result<Self, NoteError> {
        Self::open_with(path, FILE_BYTES)
    }

    /// [`Self::open`] with journal files begun past `file_bytes`.
    fn open_with(path: &Path, file_bytes: u64) -> Result<Self, NoteError> {
        casegate_audit::durable::create_dirs(path)?;
        if path.join("db").exists() || path.join("conf").exists() {
            return Err(NoteError::Corrupt(format!(
                "{} holds a note database in an earlier format (sled); this version keeps a \
                 journal there instead. Deliver or purge those notes with the earlier version, \
                 then remove the folder",
                path.display()
            )));
        }
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if let Some(n) = entry.file_name().to_str().and_then(file_number) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut state = State::default();
        for (i, &n) in numbers.iter().enumerate() {
            replay(path, n, i + 1 == numbers.len(), &mut state)?;
        }
        if state.files.is_empty() {
            let file = create_file(path, 1)?;
            File::open(path)?.sync_all()?;
            state.files.insert(
                1,
                JournalFile {
                    file: Arc::new(file),
                    len: 0,
                    live: 0,
                    forgotten: Vec::new(),
                },
            );
        }
        let shared = Arc::new(Shared {
            dir: path.to_owned(),
            file_bytes,
            state: Mutex::new(state),
            syncing: Mutex::new(()),
        });
        let (flusher, requests) = std::sync::mpsc::sync_channel::<FlushWaiter>(4096);
        let flushed = shared.clone();
        std::thread::Builder::new()
            .name("note-flusher".into())
            .spawn(move || {
                // However the thread ends (a panic included), the store says so: nothing
                // written from then on would become durable.
                let _stopped = FlusherStopped(flushed.clone());
                while let Ok(first) = requests.recv() {
                    let mut waiters = vec![first];
                    while let Ok(more) = requests.try_recv() {
                        waiters.push(more);
                    }
                    let result = flushed.sync().map_err(|e| e.to_string());
                    for waiter in waiters {
                        // A waiter that went away does not need the answer.
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .map_err(|e| NoteError::Corrupt(format!("cannot start the flusher: {e}")))?;
        Ok(Self { shared, flusher })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// Appends `bytes` (one record) to the newest file, beginning a new one if it is full.
    fn write(&self, state: &mut State, bytes: &[u8]) -> Result<Location, NoteError> {
        state.check()?;
        let mut number = state.newest_file();
        let used = state.files.get(&number).map_or(0, |f| f.len);
        if used > 0 && used + bytes.len() as u64 > self.shared.file_bytes {
            // Only the newest file may end in a write cut short (see `replay`).
            journal_of(state, number)?.file.sync_data()?;
            number += 1;
            let file = create_file(&self.shared.dir, number)?;
            state.files.insert(
                number,
                JournalFile {
                    file: Arc::new(file),
                    len: 0,
                    live: 0,
                    forgotten: Vec::new(),
                },
            );
            state.created = true;
        }
        let file = journal_of(state, number)?;
        if let Err(e) = file.file.write_all_at(bytes, file.len) {
            // Take back what part of the record was written; if that fails too, what the
            // file holds is unknown and nothing more is written.
            if let Err(cut) = file.file.set_len(file.len) {
                state.failed = Some(format!("{e}; then {cut}"));
            }
            return Err(e.into());
        }
        let at = Location {
            file: number,
            offset: file.len,
            len: bytes.len() as u32,
        };
        file.len += bytes.len() as u64;
        file.live += bytes.len() as u64;
        state.unsynced.insert(number);
        Ok(at)
    }

    /// The newest record of note `id` and where it is.
    fn read(&self, id: &Uuid) -> Result<(Note, Location), NoteError> {
        let (file, at) = {
            let state = self.state();
            let slot = state.notes.get(id).ok_or(NoteError::NotFound)?;
            let file = state
                .files
                .get(&slot.at.file)
                .map(|f| f.file.clone())
                .ok_or_else(|| NoteError::Corrupt("a note's journal file is gone".into()))?;
            (file, slot.at)
        };
        Ok((self::read_note(&file, at)?, at))
    }

    /// Writes `note` as new if `seen` is `None`, else as the newer state of the note whose
    /// newest record is at `seen`. Returns false (and writes nothing) if that is no longer so.
    fn replace(&self, note: &Note, seen: Option<Location>) -> Result<bool, NoteError> {
        let bytes = encode(note)?;
        let mut state = self.state();
        if state.notes.get(&note.id).map(|s| s.at) != seen {
            return Ok(false);
        }
        let at = self.write(&mut state, &bytes)?;
        state.set(note.id, Some(Slot::of(note, at)));
        Ok(true)
    }

    /// Changes note `id` with `change` (which says whether there is anything to write), as one
    /// step: a change made meanwhile by someone else is read and `change` applied again.
    fn update(&self, id: &Uuid, change: impl Fn(&mut Note) -> bool) -> Result<Note, NoteError> {
        loop {
            let (mut note, at) = self.read(id)?;
            if !change(&mut note) || self.replace(&note, Some(at))? {
                return Ok(note);
            }
        }
    }

    /// Claims `request_id` for a new note `id`; if the sender used it before, says for what.
    /// The claim is kept in memory until the note is stored (which records it) or it is
    /// [released](Self::release).
    pub fn reserve(
        &self,
        sender: OrgNumber,
        request_id: &str,
        id: Uuid,
        fingerprint: [u8; 32],
    ) -> Result<Result<(), Existing>, NoteError> {
        let key = request_key(sender, request_id);
        let mut state = self.state();
        state.check()?;
        match state.requests.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(Err(*e.get())),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Existing { id, fingerprint });
                Ok(Ok(()))
            }
        }
    }

    /// Gives a request id back (the disclosure was refused or failed before it was stored).
    pub fn release(&self, sender: OrgNumber, request_id: &str) -> Result<(), NoteError> {
        let key = request_key(sender, request_id);
        let mut state = self.state();
        // Only a claim: a stored note keeps its request id.
        if let Some(existing) = state.requests.get(&key)
            && !state.notes.contains_key(&existing.id)
        {
            state.requests.remove(&key);
        }
        Ok(())
    }

    /// Stores a note in state `Pending`, not yet flushed: the audit log's writer runs
    /// [`Self::sync_now`] before it writes the batch holding the note's entry (or a caller
    /// runs [`Self::flush`]), so the entry is never durable before the note.
    pub fn stage_pending(&self, note: &Note) -> Result<(), NoteError> {
        if !self.replace(note, None)? {
            return Err(NoteError::Corrupt(format!(
                "note {} exists already",
                note.id
            )));
        }
        // Recorded with the note; a claim made by `reserve` is now the same.
        self.state().requests.insert(
            request_key(note.sender.orgnr, &note.request_id),
            Existing {
                id: note.id,
                fingerprint: note.fingerprint,
            },
        );
        Ok(())
    }

    /// Puts a pending note in its recipient's inbox, once its audit entry is durable. Not
    /// flushed: after a crash, recovery finds the entry in the log and does this again. A note
    /// no longer pending (purged meanwhile: its consent was withdrawn) is left as it is, and
    /// returned as it is.
    pub fn make_deliverable(&self, mut note: Note, audit_index: u64) -> Result<Note, NoteError> {
        note.state = NoteState::Deliverable;
        note.audit_index = Some(audit_index);
        let bytes = encode(&note)?;
        {
            let mut state = self.state();
            if let Some(slot) = state.notes.get(&note.id)
                && slot.state == NoteState::Pending
            {
                let at = self.write(&mut state, &bytes)?;
                state.set(note.id, Some(Slot::of(&note, at)));
                return Ok(note);
            }
        }
        self.get(&note.id)
    }

    /// Records that a note was streamed to its recipient.
    pub fn mark_delivered(&self, id: &Uuid) -> Result<(), NoteError> {
        self.update(id, |note| !std::mem::replace(&mut note.delivered, true))?;
        Ok(())
    }

    /// Takes an acknowledged note out of the inbox; its body stays until `purge_after`.
    /// Flushed.
    pub fn acknowledge(
        &self,
        id: &Uuid,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Note, NoteError> {
        let note = self.update(id, |note| {
            // Only from the inbox: never over a purge that came first.
            if note.state != NoteState::Deliverable {
                return false;
            }
            note.state = NoteState::Acknowledged;
            note.acknowledged_at = Some(at);
            note.purge_after = Some(purge_after);
            true
        })?;
        if note.state != NoteState::Acknowledged || note.acknowledged_at != Some(at) {
            return Err(NoteError::NotDeliverable(note.state.code()));
        }
        self.flush()?;
        Ok(note)
    }

    /// Deletes a note's body and takes it out of the inbox, for good. Flushed.
    pub fn purge(&self, id: &Uuid) -> Result<Note, NoteError> {
        let now = Timestamp(crate::base::clock::now_micros());
        let note = self.update(id, |note| {
            // Purged once: its purge time (when it is forgotten) does not move.
            if note.state == NoteState::Purged {
                return false;
            }
            note.state = NoteState::Purged;
            note.sealed = None;
            note.purged_at = Some(now);
            true
        })?;
        self.flush()?;
        Ok(note)
    }

    /// Reads the notes `ids` names, passing over those gone meanwhile.
    fn notes(&self, ids: impl IntoIterator<Item = Uuid>) -> Result<Vec<Note>, NoteError> {
        let mut out = Vec::new();
        for id in ids {
            match self.get(&id) {
                Ok(note) => out.push(note),
                Err(NoteError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Notes that relied on `consent` and were never delivered.
    pub fn undelivered_for(&self, consent: &ConsentId) -> Result<Vec<Note>, NoteError> {
        let ids: Vec<Uuid> = self
            .state()
            .by_consent
            .range((*consent, Uuid::nil())..=(*consent, Uuid::max()))
            .map(|(_, id)| *id)
            .collect();
        Ok(self
            .notes(ids)?
            .into_iter()
            .filter(|n| {
                matches!(n.state, NoteState::Pending | NoteState::Deliverable) && !n.delivered
            })
            .collect())
    }

    /// Forgets a pending note whose audit entry never became durable (after a crash): it was
    /// never acknowledged to its sender, who may retry with the same request id. Flushed.
    pub fn drop_pending(&self, note: &Note) -> Result<(), NoteError> {
        self.forget(Forget::of(note))?;
        self.flush()
    }

    /// Writes a forget record and drops the note from memory.
    fn forget(&self, forget: Forget) -> Result<(), NoteError> {
        let bytes = record(KIND_FORGET, &forget.encode());
        let mut state = self.state();
        let at = self.write(&mut state, &bytes)?;
        state.forget(forget);
        state.superseded(at);
        journal_of(&mut state, at.file)?.forgotten.push(forget);
        Ok(())
    }

    /// Forgets up to `limit` notes purged at or before `before`, oldest first: they leave the
    /// store, and their request ids may be used again. Returns how many. Not flushed (a
    /// forgetting lost in a crash is done again).
    pub fn forget_purged(&self, before: Timestamp, limit: usize) -> Result<usize, NoteError> {
        let ids: Vec<Uuid> = self
            .state()
            .purged
            .range(..=(before, Uuid::max()))
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        let mut forgotten = 0;
        for id in ids {
            let note = match self.get(&id) {
                Ok(note) => note,
                Err(NoteError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            self.forget(Forget::of(&note))?;
            forgotten += 1;
        }
        Ok(forgotten)
    }

    /// The note's newest state, read from its journal file.
    ///
    /// # Errors
    /// [`NoteError::NotFound`] if the store holds no such note; [`NoteError::Io`] or
    /// [`NoteError::Corrupt`] if its record cannot be read.
    pub fn get(&self, id: &Uuid) -> Result<Note, NoteError> {
        self.read(id).map(|(note, _)| note)
    }

    /// The notes still pending (for recovery).
    pub fn pending(&self) -> Result<Vec<Note>, NoteError> {
        let ids: Vec<Uuid> = self
            .state()
            .notes
            .iter()
            .filter(|(_, slot)| slot.state == NoteState::Pending)
            .map(|(id, _)| *id)
            .collect();
        self.notes(ids)
    }

    /// Up to `limit` deliverable notes in `org`'s inbox after the note `after` (from the
    /// start without it), in disclosure-id order: ids are UUIDv7, so oldest first.
    pub fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Note>, NoteError> {
        let ids: Vec<Uuid> = {
            let state = self.state();
            let from = match after {
                Some(after) => std::ops::Bound::Excluded((org, after)),
                None => std::ops::Bound::Included((org, Uuid::nil())),
            };
            state
                .inbox
                .range((from, std::ops::Bound::Included((org, Uuid::max()))))
                .take(limit)
                .map(|(_, id)| *id)
                .collect()
        };
        // Acknowledged or purged since: passed over.
        Ok(self
            .notes(ids)?
            .into_iter()
            .filter(|n| n.state == NoteState::Deliverable)
            .collect())
    }

    /// Waits until everything written so far is on disk. Concurrent callers share one flush.
    /// Blocking: not for async code.
    pub fn flush(&self) -> Result<(), NoteError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.flusher.send(tx).map_err(|_| flusher_stopped())?;
        rx.recv()
            .map_err(|_| flusher_stopped())?
            .map_err(NoteError::Failed)
    }

    /// Why the store accepts no more writes, if it does not: a failed write or flush, or a
    /// flusher thread that stopped.
    pub fn failure(&self) -> Option<String> {
        self.state().failed.clone()
    }

    /// Makes everything written so far durable, on this thread (the audit writer's, before
    /// each batch). A flush already under way is waited for, not passed over.
    pub fn sync_now(&self) -> Result<(), NoteError> {
        self.shared.sync().map_err(NoteError::Failed)
    }

    /// Notes whose body is due for deletion: deliverable ones disclosed at or before
    /// `ttl_cutoff`, acknowledged ones whose purge time is at or before `now`; at most
    /// `limit`, oldest first.
    pub fn due(
        &self,
        ttl_cutoff: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Note, Expiry)>, NoteError> {
        let ids: Vec<(Uuid, Expiry, NoteState)> = {
            let state = self.state();
            let retained = state
                .retained
                .range(..=(now, Uuid::max()))
                .map(|(_, id)| (*id, Expiry::RetentionElapsed, NoteState::Acknowledged));
            let waiting = state
                .waiting
                .range(..=(ttl_cutoff, Uuid::max()))
                .map(|(_, id)| (*id, Expiry::TtlElapsed, NoteState::Deliverable));
            retained.chain(waiting).take(limit).collect()
        };
        let mut out = Vec::new();
        for (id, expiry, indexed) in ids {
            match self.get(&id) {
                // Changed since it was listed: no longer due for this reason.
                Ok(note) if note.state == indexed => out.push((note, expiry)),
                Ok(_) | Err(NoteError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// How many notes wait in inboxes.
    pub fn backlog(&self) -> usize {
        self.state().waiting.len()
    }

    /// What the store holds, for metrics.
    pub fn stats(&self) -> JournalStats {
        let state = self.state();
        JournalStats {
            notes: state.notes.len(),
            files: state.files.len(),
            bytes: state.files.values().map(|f| f.len).sum(),
            live_bytes: state.files.values().map(|f| f.live).sum(),
        }
    }

    /// Compacts the older journal files that are mostly superseded records: copies their live
    /// records to the newest file, flushes, deletes them. Returns how many were deleted.
    /// Blocking.
    pub fn compact(&self) -> Result<usize, NoteError> {
        let candidates: Vec<u32> = {
            let state = self.state();
            let newest = state.newest_file();
            state
                .files
                .iter()
                .filter(|(n, f)| **n != newest && f.live * 100 <= f.len * COMPACT_LIVE_PERCENT)
                .map(|(n, _)| *n)
                .collect()
        };
        let mut deleted = 0;
        for number in candidates {
            let (file, live, forgotten) = {
                let state = self.state();
                let Some(journal) = state.files.get(&number) else {
                    continue;
                };
                let live: Vec<(Uuid, Location)> = state
                    .notes
                    .iter()
                    .filter(|(_, slot)| slot.at.file == number)
                    .map(|(id, slot)| (*id, slot.at))
                    .collect();
                (journal.file.clone(), live, journal.forgotten.clone())
            };
            for (id, at) in live {
                let mut bytes = vec![0u8; at.len as usize];
                file.read_exact_at(&mut bytes, at.offset)?;
                // A damaged record is not copied on as if it were whole.
                if parse(&bytes).is_none() {
                    return Err(NoteError::Corrupt(format!(
                        "journal file {number} is damaged at byte {}",
                        at.offset
                    )));
                }
                let mut state = self.state();
                // Changed meanwhile: its newest record is elsewhere already.
                if state.notes.get(&id).map(|s| s.at) != Some(at) {
                    continue;
                }
                let moved = self.write(&mut state, &bytes)?;
                state.superseded(at);
                if let Some(slot) = state.notes.get_mut(&id) {
                    slot.at = moved;
                }
            }
            // A forgotten note's records are all in this file or older ones: with none older
            // left, its forget record has nothing more to cancel.
            let older_left = self
                .state()
                .files
                .keys()
                .next()
                .is_some_and(|&n| n < number);
            for forget in forgotten.into_iter().filter(|_| older_left) {
                let bytes = record(KIND_FORGET, &forget.encode());
                let mut state = self.state();
                let at = self.write(&mut state, &bytes)?;
                state.superseded(at);
                journal_of(&mut state, at.file)?.forgotten.push(forget);
            }
            // The copies are durable before the originals go.
            self.flush()?;
            self.state().files.remove(&number);
            std::fs::remove_file(self.shared.dir.join(file_name(number)))?;
            // Gone for good before a newer file's forget records can rely on it.
            File::open(&self.shared.dir)?.sync_all()?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// When an acknowledged note's body is purged: `retention` after its acknowledgement.
pub fn purge_after(acknowledged_at: Timestamp, retention: std::time::Duration) -> Timestamp {
    let retention = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    Timestamp(acknowledged_at.0.saturating_add(retention))
}

/// Reads and checks the note record at `at`.
fn read_note(file: &File, at: Location) -> Result<Note, NoteError> {
    let mut bytes = vec![0u8; at.len as usize];
    file.read_exact_at(&mut bytes, at.offset)?;
    match parse(&bytes) {
        Some((KIND_NOTE, payload)) => decode(payload),
        _ => Err(NoteError::Corrupt(format!(
            "journal file {} is damaged at byte {}",
            at.file, at.offset
        ))),
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every write so far durable (the flusher's work, and [`NoteStore::sync_now`]'s).
    /// One at a time: a caller must not return while files it did not take are still being
    /// synced by another.
    fn sync(&self) -> Result<(), String> {
        let _one = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (files, created) = {
            let mut state = self.state();
            state.check().map_err(|e| e.to_string())?;
            let files: Vec<Arc<File>> = std::mem::take(&mut state.unsynced)
                .into_iter()
                .filter_map(|n| state.files.get(&n).map(|f| f.file.clone()))
                .collect();
            (files, std::mem::take(&mut state.created))
        };
        let synced = files.iter().try_for_each(|f| f.sync_data()).and_then(|()| {
            if created {
                File::open(&self.dir)?.sync_all()
            } else {
                Ok(())
            }
        });
        if let Err(e) = synced {
            // After a failed fsync the kernel may have dropped the dirty pages: what the files
            // hold is unknown, so nothing more is written or acknowledged.
            let why = format!("flush failed: {e}");
            self.state().failed = Some(why.clone());
            return Err(why);
        }
        Ok(())
    }
}

/// Marks the store failed when the flusher thread ends.
struct FlusherStopped(Arc<Shared>);

impl Drop for FlusherStopped {
    fn drop(&mut self) {
        let mut state = self.0.state();
        if state.failed.is_none() {
            state.failed = Some("the note flusher stopped".into());
        }
    }
}

fn flusher_stopped() -> NoteError {
    NoteError::Failed("the flusher stopped".into())
}

/// Restores the invariant after a crash: a pending note whose `disclosure permitted` entry is
/// in the log becomes deliverable; one without is dropped (its sender never got a receipt).
/// Returns (made deliverable, dropped).
pub fn recover(
    notes: &dyn NoteStorage,
    log: &dyn casegate_audit::storage::VerifiableLog,
) -> Result<(usize, usize), NoteError> {
    use casegate_audit::entry::{Entry, Event};
    let pending = notes.pending()?;
    let (mut made, mut dropped) = (0, 0);
    let size = log.size();
    for note in pending {
        let id = note.id.to_string();
        let mut found = None;
        for index in note.log_size_hint.min(size)..size {
            let bytes = log
                .entry(index)
                .map_err(|e| NoteError::Corrupt(format!("audit log: {e}")))?;
            if let Ok(Entry {
                event: Event::DisclosurePermitted(permitted),
                ..
            }) = Entry::decode(&bytes)
                && permitted.disclosure_id == id
            {
                found = Some(index);
                break;
            }
        }
        match found {
            Some(index) => {
                notes.make_deliverable(note, index)?;
                made += 1;
            }
            None => {
                notes.drop_pending(&note)?;
                dropped += 1;
            }
        }
    }
    notes.flush()?;
    Ok((made, dropped))
}

mod storage;

pub use storage::NoteStorage;

#[cfg(test)]
mod model;
#[cfg(test)]
pub(crate) mod tests;
