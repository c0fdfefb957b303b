//! The embedded note store: an append-only journal of its own under the data folder, with
//! everything it is searched by kept in memory.
//!
//! Files `journal-NNNNNNNN` (numbered from 1; a new one is begun past 64 MiB) hold records
//! `[payload length u32 LE][CRC-32C of kind ‖ payload, u32 LE][kind u8][payload]`
//! (payloads: [`crate::record`]). Kind 3 is a note, written once when it is stored (its
//! sealed part included) and once more, without the sealed part, when it is purged; kind 4
//! is a change of a note's progress (state, audit index, delivered, acknowledgement and purge
//! times), a few dozen bytes; kind 2 forgets a note — a pending note whose audit entry never
//! became durable, or a purged one after `notes.forget_after` —: its id and a 128-bit digest
//! of its sender and request id. Kind 1, a whole note as JSON, is what journals held before
//! and is still read. A progress record applies to the note record before it; one whose note
//! is not known (its note record was copied on by compaction, with the progress in it) is
//! superseded.
//!
//! At start the files are read in order and the memory rebuilt: each note's progress and
//! where its records are; the indexes — recipient's inbox (deliverable notes by id, so oldest
//! first), consent (withdrawal purges what relied on it), expiry times (deliverable notes by
//! disclosure time, acknowledged ones by purge time); and the senders' request ids
//! (idempotency). An incomplete or damaged record at the end of the newest file is a write
//! cut short by a crash — never flushed, so never acknowledged — and is cut off; damage
//! anywhere else stops the start.
//!
//! Writes go to the file in order under one lock, which also covers the memory they change, so
//! the indexes always agree with the notes. A group flush (one `fdatasync` per file written,
//! for everyone who waits meanwhile) makes them durable. Older files whose records are mostly
//! superseded are compacted: live notes written again to the newest file (with their progress
//! in the note record), flushed, then the file deleted — which is also when the superseded
//! copies of purged bodies leave the disk.
//!
//! Invariant (with the audit log): a note becomes deliverable only after its `disclosure
//! permitted` entry is durable; it is stored `Pending` before that entry is appended, and the
//! audit log's writer syncs this store before it writes each batch ([`NoteStore::sync_now`]),
//! so an entry never names a note the store does not have.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use casegate_audit::{
    durable::{self, Writes},
    frame,
};
use casegate_consent::{
    OrgNumber,
    record::{ConsentId, Timestamp},
};
use uuid::Uuid;

use crate::{
    NoteError,
    note::{Existing, Expiry, Note, NoteState},
    record::{self, Progress},
};

/// A thread waiting for the next flush.
type FlushWaiter = std::sync::mpsc::SyncSender<Result<(), String>>;

/// What a note store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// Notes in any state, purged ones not yet forgotten included.
    pub notes: usize,
    /// Journal files.
    pub files: usize,
    /// Bytes in the journal files.
    pub bytes: u64,
    /// Bytes of the journal files that are notes' live records — each held note's newest
    /// note record and the progress record after it (not superseded, not forgotten).
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

/// A new journal file is begun when a record would take the newest past this size.
const FILE_BYTES: u64 = 64 << 20;
/// A whole note as JSON (written before [`KIND_NOTE`]; read, never written).
pub(crate) const KIND_LEGACY_NOTE: u8 = 1;
/// A forgotten note: its id and request key.
pub(crate) const KIND_FORGET: u8 = 2;
/// A note: [`record::encode_note`].
pub(crate) const KIND_NOTE: u8 = 3;
/// A note's progress: [`record::encode_progress`].
pub(crate) const KIND_PROGRESS: u8 = 4;
/// Files are compacted once at most this share of their bytes is still live.
const COMPACT_LIVE_PERCENT: u64 = 30;

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    file: u32,
    offset: u64,
    len: u32,
}

/// What memory keeps of a note: its progress, where its records are, and what the indexes
/// need.
#[derive(Debug, Clone)]
struct Slot {
    /// Its newest note record.
    note_at: Location,
    /// The newest progress record after that, if any.
    progress_at: Option<Location>,
    progress: Progress,
    recipient: OrgNumber,
    consent: ConsentId,
    disclosed_at: Timestamp,
}

impl Slot {
    fn of(note: &Note, at: Location) -> Self {
        Self {
            note_at: at,
            progress_at: None,
            progress: Progress::of(note),
            recipient: note.recipient_org,
            consent: note.consent_id,
            disclosed_at: note.disclosed_at,
        }
    }

    /// Acknowledged: when the body is to be deleted; purged: when it was.
    fn expiry(&self) -> Option<Timestamp> {
        match self.progress.state {
            NoteState::Purged => self.progress.purged_at,
            _ => self.progress.purge_after,
        }
    }

    /// Where its records are: what a write must find unchanged to build on them.
    fn records(&self) -> (Location, Option<Location>) {
        (self.note_at, self.progress_at)
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
    /// Bytes of notes' live records (forget records, small, count as superseded).
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
        let state = slot.progress.state;
        if matches!(state, NoteState::Pending | NoteState::Deliverable) {
            toggle(&mut self.by_consent, (slot.consent, id), add);
        }
        if state == NoteState::Deliverable {
            toggle(&mut self.inbox, (slot.recipient, id), add);
            toggle(&mut self.waiting, (slot.disclosed_at, id), add);
        }
        match (state, slot.expiry()) {
            (NoteState::Acknowledged, Some(at)) => toggle(&mut self.retained, (at, id), add),
            (NoteState::Purged, Some(at)) => toggle(&mut self.purged, (at, id), add),
            _ => {}
        }
    }

    /// Makes `slot` the note's newest state (`None`: forgotten).
    fn set(&mut self, id: Uuid, slot: Option<Slot>) {
        if let Some(old) = self.notes.remove(&id) {
            self.index(id, &old, false);
            self.superseded(old.note_at);
            if let Some(at) = old.progress_at {
                self.superseded(at);
            }
        }
        if let Some(slot) = slot {
            self.index(id, &slot, true);
            self.notes.insert(id, slot);
        }
    }

    /// Moves note `id` on to `progress`, recorded at `at`. A note not held (its note record
    /// was copied on by compaction, with its progress) leaves the record superseded.
    fn advance(&mut self, id: Uuid, progress: Progress, at: Location) {
        let Some(mut slot) = self.notes.remove(&id) else {
            self.superseded(at);
            return;
        };
        self.index(id, &slot, false);
        if let Some(old) = slot.progress_at.replace(at) {
            self.superseded(old);
        }
        slot.progress = progress;
        self.index(id, &slot, true);
        self.notes.insert(id, slot);
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

/// A record of `kind` ([`frame`]).
fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    frame::encode(kind, payload)
}

/// The offset of the first intact record (whole, its checksum right, a known kind) that
/// starts after byte `flaw` of `file`, searching every position. A position is checksummed
/// only if it looks like a record's start (a known kind; a forget record's fixed length, a
/// payload's first bytes), so a tail of garbage costs time in proportion to its length.
fn intact_record_after(file: &File, flaw: u64, size: u64) -> io::Result<Option<u64>> {
    let mut rest = vec![0u8; usize::try_from(size - flaw).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut rest, flaw)?;
    let plausible = |kind: u8, len: usize, payload: &[u8]| match kind {
        KIND_FORGET => len == FORGET_LEN,
        kind => record::plausible(kind, payload),
    };
    Ok(frame::next_intact(&rest, plausible).map(|at| flaw + at as u64))
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

/// A note record of `note` (with its progress).
fn note_record(note: &Note) -> Vec<u8> {
    record(KIND_NOTE, &record::encode_note(note))
}

/// A progress record: note `id` moved on to `progress`.
fn progress_record(id: &Uuid, progress: &Progress) -> Vec<u8> {
    record(KIND_PROGRESS, &record::encode_progress(id, progress))
}

/// The note in a note record's payload of `kind`.
fn decode_note(kind: u8, payload: &[u8]) -> Result<Note, NoteError> {
    match kind {
        KIND_NOTE => record::decode_note(payload),
        _ => record::decode_legacy_note(payload),
    }
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
    let mut reader = frame::Reader::new(file.as_ref(), size);
    loop {
        let (kind, payload, at) = match reader.read_next()? {
            frame::Next::Record {
                kind,
                payload,
                offset,
                len,
            } => (
                kind,
                payload,
                Location {
                    file: number,
                    offset,
                    len,
                },
            ),
            frame::Next::End => break,
            frame::Next::Flaw { offset } => {
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
                        "{} is damaged at byte {offset}, with an intact record at byte {at} \
                         after it",
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
            }
        };
        let offset = at.offset;
        let journal = journal_of(state, number)?;
        journal.len = offset + u64::from(at.len);
        journal.live += u64::from(at.len);
        match kind {
            KIND_NOTE | KIND_LEGACY_NOTE => {
                let note = decode_note(kind, payload)?;
                state.requests.insert(
                    request_key(note.sender.orgnr, &note.request_id),
                    Existing {
                        id: note.id,
                        fingerprint: note.fingerprint,
                    },
                );
                state.set(note.id, Some(Slot::of(&note, at)));
            }
            KIND_PROGRESS => {
                let (id, progress) = record::decode_progress(payload)?;
                state.advance(id, progress, at);
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
    pub(crate) fn open_with(path: &Path, file_bytes: u64) -> Result<Self, NoteError> {
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

    /// Note `id` as it stands, and where its records are.
    fn read(&self, id: &Uuid) -> Result<(Note, (Location, Option<Location>)), NoteError> {
        let (file, slot) = {
            let state = self.state();
            let slot = state.notes.get(id).ok_or(NoteError::NotFound)?;
            (file_of(&state, slot.note_at)?, slot.clone())
        };
        let mut note = read_note(&file, slot.note_at)?;
        slot.progress.apply(&mut note);
        Ok((note, slot.records()))
    }

    /// Moves note `id` on with `change` (which says whether it changed anything), as one
    /// step, writing a progress record if it did. Returns the progress and the note record to
    /// read the rest from.
    fn advance(
        &self,
        id: &Uuid,
        change: impl FnOnce(&mut Progress) -> bool,
    ) -> Result<(Progress, Arc<File>, Location), NoteError> {
        let mut state = self.state();
        let slot = state.notes.get(id).ok_or(NoteError::NotFound)?;
        let (mut progress, note_at) = (slot.progress, slot.note_at);
        if change(&mut progress) {
            let at = self.write(&mut state, &progress_record(id, &progress))?;
            state.advance(*id, progress, at);
        }
        Ok((progress, file_of(&state, note_at)?, note_at))
    }

    /// [`Self::advance`], then the note as that left it.
    fn advance_and_read(
        &self,
        id: &Uuid,
        change: impl FnOnce(&mut Progress) -> bool,
    ) -> Result<Note, NoteError> {
        let (progress, file, at) = self.advance(id, change)?;
        let mut note = read_note(&file, at)?;
        progress.apply(&mut note);
        Ok(note)
    }

    /// Writes `note` (with its progress) as a note record in place of the records `seen`
    /// (`None`: as a new note). Returns false, and writes nothing, if those are no longer
    /// the note's newest.
    fn rewrite(
        &self,
        note: &Note,
        seen: Option<(Location, Option<Location>)>,
    ) -> Result<bool, NoteError> {
        let bytes = note_record(note);
        let mut state = self.state();
        if state.notes.get(&note.id).map(Slot::records) != seen {
            return Ok(false);
        }
        let at = self.write(&mut state, &bytes)?;
        state.set(note.id, Some(Slot::of(note, at)));
        Ok(true)
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
        if !self.rewrite(note, None)? {
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
    /// returned as it is. Writes only the note's progress and reads nothing from disk.
    pub fn make_deliverable(&self, mut note: Note, audit_index: u64) -> Result<Note, NoteError> {
        let (progress, ..) = self.advance(&note.id, |progress| {
            if progress.state != NoteState::Pending {
                return false;
            }
            progress.state = NoteState::Deliverable;
            progress.audit_index = Some(audit_index);
            true
        })?;
        if progress.state == NoteState::Deliverable && progress.audit_index == Some(audit_index) {
            progress.apply(&mut note);
            return Ok(note);
        }
        self.get(&note.id)
    }

    /// Records that a note was streamed to its recipient.
    pub fn mark_delivered(&self, id: &Uuid) -> Result<(), NoteError> {
        self.advance(id, |progress| {
            !std::mem::replace(&mut progress.delivered, true)
        })?;
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
        let note = self.advance_and_read(id, |progress| {
            // Only from the inbox: never over a purge that came first.
            if progress.state != NoteState::Deliverable {
                return false;
            }
            progress.state = NoteState::Acknowledged;
            progress.acknowledged_at = Some(at);
            progress.purge_after = Some(purge_after);
            true
        })?;
        if note.state != NoteState::Acknowledged || note.acknowledged_at != Some(at) {
            return Err(NoteError::NotDeliverable(note.state.code()));
        }
        self.flush()?;
        Ok(note)
    }

    /// Deletes a note's body and takes it out of the inbox, for good: the note is written
    /// again without its sealed part (the earlier record, body and all, leaves the disk when
    /// its file is compacted). Flushed.
    pub fn purge(&self, id: &Uuid) -> Result<Note, NoteError> {
        let now = now();
        loop {
            let (mut note, seen) = self.read(id)?;
            // Purged once: its purge time (when it is forgotten) does not move.
            if note.state == NoteState::Purged {
                return Ok(note);
            }
            note.state = NoteState::Purged;
            note.sealed = None;
            note.purged_at = Some(now);
            if self.rewrite(&note, Some(seen))? {
                self.flush()?;
                return Ok(note);
            }
        }
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
            .filter(|(_, slot)| slot.progress.state == NoteState::Pending)
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
            let (live, forgotten) = {
                let state = self.state();
                let Some(journal) = state.files.get(&number) else {
                    continue;
                };
                let live: Vec<Uuid> = state
                    .notes
                    .iter()
                    .filter(|(_, slot)| in_file(slot.records(), number))
                    .map(|(id, _)| *id)
                    .collect();
                (live, journal.forgotten.clone())
            };
            for id in live {
                // The note is written again whole, with its progress, so no record of it is
                // left in this file; read back first, so a damaged record is never copied on
                // as if it were whole. Changed meanwhile: read again.
                loop {
                    let (note, seen) = match self.read(&id) {
                        Ok(read) => read,
                        Err(NoteError::NotFound) => break,
                        Err(e) => return Err(e),
                    };
                    if !in_file(seen, number) || self.rewrite(&note, Some(seen))? {
                        break;
                    }
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

/// Whether either of a note's records is in file `number`.
fn in_file((note_at, progress_at): (Location, Option<Location>), number: u32) -> bool {
    note_at.file == number || progress_at.is_some_and(|at| at.file == number)
}

/// The current time, in microseconds since the Unix epoch.
fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

/// The file record `at` is in.
fn file_of(state: &State, at: Location) -> Result<Arc<File>, NoteError> {
    state
        .files
        .get(&at.file)
        .map(|f| f.file.clone())
        .ok_or_else(|| NoteError::Corrupt("a note's journal file is gone".into()))
}

/// Reads and checks the note record at `at`.
fn read_note(file: &File, at: Location) -> Result<Note, NoteError> {
    let mut bytes = vec![0u8; at.len as usize];
    file.read_exact_at(&mut bytes, at.offset)?;
    match frame::decode(&bytes) {
        Some((kind @ (KIND_NOTE | KIND_LEGACY_NOTE), payload)) => decode_note(kind, payload),
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

#[cfg(test)]
pub(crate) mod tests;
