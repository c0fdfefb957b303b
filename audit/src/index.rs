//! Indexes over the audit log, so a query reads only the entries it may match: by subject
//! pseudonym, by organisation (actor, sender or recipient), by kind, and hour buckets for time
//! ranges.
//!
//! The index is derived data. In memory it is, per subject, organisation and kind, the
//! ascending list of the indexes of the entries that name it (8 bytes an entry and list), and
//! per hour the first and last entry in it. On disk it is one file, `postings`, with a record
//! ([`frame`], kind 1) per entry — payload `[index u64 BE][time i64 BE][kind u8, 0: not an
//! entry this build understands][subject flag u8][pseudonym 32, if flagged][count u8]
//! ([length u8][orgnr])*` — read back at open. (A file in the layout before, whose records
//! began with a u16 length, reads as a flaw at its first record: it is cut off and the index
//! built again from the log.) Records are written in log order after the
//! entries are durable in the log, so the file is always a prefix of the log's index; it is
//! synced only on [`AuditIndex::flush`] and a record cut short at its end (a crash) is cut off
//! and indexed again by the next catch-up. The index is brought up to date from the log
//! ([`AuditIndex::catch_up`]) or rebuilt from the segment files alone ([`AuditIndex::rebuild`]).
//!
//! (An earlier version kept the index in sled, whose memory grew by about 3 KB per entry when
//! entries name many subjects. A sled database found in the folder is removed at open and the
//! index rebuilt from the log.)

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard},
};

use crate::{
    entry::{Entry, EntryKind},
    frame, segment,
};

const HOUR_MICROS: i64 = 3_600_000_000;
/// Entries indexed per write while catching up or rebuilding.
const BATCH: usize = 8_192;
/// The postings file in the index folder.
const POSTINGS: &str = "postings";
/// The kind of a postings record ([`frame`]).
const POSTING: u8 = 1;

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index holds something it cannot use; says what.
    #[error("audit index: {0}")]
    Corrupt(String),
    /// Reading an entry from the log failed while catching up; holds the log's error.
    #[error("audit log: {0}")]
    Log(String),
    /// The index folder, its postings file or the log's segments could not be read, written
    /// or synced.
    #[error("audit index files: {0}")]
    Io(#[from] std::io::Error),
}

/// What a query asks for. Every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Entries about this subject pseudonym.
    pub subject: Option<[u8; 32]>,
    /// Entries whose actor, sender or recipient is this organisation.
    pub orgnr: Option<String>,
    /// Entries this organisation may see ([`visible_to`]); `None` sees all.
    pub visible_to: Option<String>,
    /// With `visible_to`: also the grant and withdrawal entries of these consent versions
    /// (id, version) — the versions that organisation may read, whoever recorded them.
    pub consents: Vec<(String, u32)>,
    /// Entries of these kinds; empty means every kind.
    pub kinds: Vec<EntryKind>,
    /// Entries with one of these reason codes; empty means any reason or none.
    pub reasons: Vec<String>,
    /// Entries at or after this time (microseconds since the epoch).
    pub from_micros: Option<i64>,
    /// Entries before this time.
    pub until_micros: Option<i64>,
}

impl Filter {
    /// Whether `entry` satisfies every condition.
    pub fn matches(&self, entry: &Entry) -> bool {
        let involves = |org: &str| organisations(entry).any(|o| o == org);
        self.subject
            .is_none_or(|s| entry.subject_pseudonym() == Some(s))
            && self.orgnr.as_deref().is_none_or(involves)
            && self
                .visible_to
                .as_deref()
                .is_none_or(|org| visible_to(entry, org) || self.records_consent(entry))
            && (self.kinds.is_empty() || self.kinds.contains(&entry.kind()))
            && (self.reasons.is_empty()
                || entry
                    .reason()
                    .is_some_and(|r| self.reasons.iter().any(|x| x == r)))
            && self.from_micros.is_none_or(|t| entry.time_micros >= t)
            && self.until_micros.is_none_or(|t| entry.time_micros < t)
    }
}

impl Filter {
    /// Whether `entry` grants or withdraws one of [`Filter::consents`].
    fn records_consent(&self, entry: &Entry) -> bool {
        matches!(
            entry.kind(),
            EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn
        ) && entry.consent().is_some_and(|c| {
            self.consents
                .iter()
                .any(|(id, version)| *id == c.id && *version == c.version)
        })
    }
}

/// Whether organisation `org` may see `entry`: it acted, or it is the sender or recipient of a
/// note that was disclosed (permitted, delivered, acknowledged or purged). A refused or dry-run
/// disclosure is its actor's alone: the recipient it named received nothing, and seeing it
/// would tell that organisation that the sender knows the jobseeker — for IPS, that they are in
/// treatment.
pub fn visible_to(entry: &Entry, org: &str) -> bool {
    let acted = entry.actor().is_some_and(|a| a.orgnr == org);
    let disclosed = matches!(
        entry.kind(),
        EntryKind::DisclosurePermitted
            | EntryKind::NoteDelivered
            | EntryKind::NoteAcknowledged
            | EntryKind::NotePurged
    );
    acted
        || (disclosed
            && (entry.sender_orgnr() == Some(org) || entry.recipient_orgnr() == Some(org)))
}

/// The organisations an entry involves: its actor, sender and recipient.
pub fn organisations(entry: &Entry) -> impl Iterator<Item = &str> {
    let actor = entry.actor().map(|a| a.orgnr.as_str());
    let sender = entry.sender_orgnr();
    let recipient = entry.recipient_orgnr();
    [actor, sender, recipient].into_iter().flatten()
}

/// What one entry contributes to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Posting {
    index: u64,
    time_micros: i64,
    /// `None`: bytes that are not an entry this build understands (covered, found by no
    /// filter but the empty one).
    kind: Option<u8>,
    subject: Option<[u8; 32]>,
    orgs: Vec<String>,
}

impl Posting {
    fn of(index: u64, bytes: &[u8]) -> Self {
        match Entry::decode(bytes) {
            Ok(entry) => {
                let mut orgs: Vec<String> = organisations(&entry).map(str::to_owned).collect();
                orgs.sort_unstable();
                orgs.dedup();
                Self {
                    index,
                    time_micros: entry.time_micros,
                    kind: Some(entry.kind().code()),
                    subject: entry.subject_pseudonym(),
                    orgs,
                }
            }
            Err(_) => Self {
                index,
                time_micros: 0,
                kind: None,
                subject: None,
                orgs: Vec::new(),
            },
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(64);
        payload.extend_from_slice(&self.index.to_be_bytes());
        payload.extend_from_slice(&self.time_micros.to_be_bytes());
        payload.push(self.kind.unwrap_or(0));
        match &self.subject {
            Some(p) => {
                payload.push(1);
                payload.extend_from_slice(p);
            }
            None => payload.push(0),
        }
        payload.push(u8::try_from(self.orgs.len()).unwrap_or(u8::MAX));
        for org in self.orgs.iter().take(usize::from(u8::MAX)) {
            let bytes = &org.as_bytes()[..org.len().min(usize::from(u8::MAX))];
            payload.push(bytes.len() as u8);
            payload.extend_from_slice(bytes);
        }
        frame::encode_into(out, POSTING, &payload);
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let part = payload.get(at..at + n)?;
            at += n;
            Some(part)
        };
        let index = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let time_micros = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let kind = match take(1)?[0] {
            0 => None,
            k => Some(k),
        };
        let subject = match take(1)?[0] {
            0 => None,
            _ => Some(take(32)?.try_into().ok()?),
        };
        let count = take(1)?[0];
        let mut orgs = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = take(1)?[0];
            orgs.push(
                std::str::from_utf8(take(usize::from(len))?)
                    .ok()?
                    .to_owned(),
            );
        }
        (at == payload.len()).then_some(Self {
            index,
            time_micros,
            kind,
            subject,
            orgs,
        })
    }
}

/// The index in memory.
#[derive(Debug, Default, PartialEq, Eq)]
struct Postings {
    /// Entries covered: `0..indexed`.
    indexed: u64,
    subjects: HashMap<[u8; 32], Vec<u64>>,
    orgs: HashMap<String, Vec<u64>>,
    kinds: HashMap<u8, Vec<u64>>,
    /// Per hour since the epoch, the first and last entry in it.
    hours: BTreeMap<i64, (u64, u64)>,
}

impl Postings {
    fn add(&mut self, p: &Posting) {
        if let Some(kind) = p.kind {
            if let Some(subject) = p.subject {
                self.subjects.entry(subject).or_default().push(p.index);
            }
            for org in &p.orgs {
                match self.orgs.get_mut(org.as_str()) {
                    Some(list) => list.push(p.index),
                    None => {
                        self.orgs.insert(org.clone(), vec![p.index]);
                    }
                }
            }
            self.kinds.entry(kind).or_default().push(p.index);
            let span = self
                .hours
                .entry(p.time_micros.div_euclid(HOUR_MICROS))
                .or_insert((p.index, p.index));
            span.0 = span.0.min(p.index);
            span.1 = span.1.max(p.index);
        }
        self.indexed = p.index + 1;
    }

    fn list(&self, list: &List) -> Option<&Vec<u64>> {
        match list {
            List::Subject(s) => self.subjects.get(s),
            List::Org(o) => self.orgs.get(o.as_str()),
            List::Kind(k) => self.kinds.get(k),
        }
    }
}

/// One list of the index.
#[derive(Debug, Clone)]
enum List {
    Subject([u8; 32]),
    Org(String),
    Kind(u8),
}

#[derive(Debug)]
struct Shared {
    /// The postings file and its length; held by the one writer at a time.
    writer: Mutex<(File, u64)>,
    memory: RwLock<Postings>,
}

/// The index. Cheap to clone; one writer at a time.
#[derive(Debug, Clone)]
pub struct AuditIndex {
    shared: Arc<Shared>,
}

/// Reads the postings file: every whole, undamaged record in order from index 0. Returns the
/// memory and the length of that prefix.
fn load(file: &File) -> Result<(Postings, u64), IndexError> {
    let size = file.metadata()?.len();
    let mut reader = frame::Reader::new(file, size);
    let mut postings = Postings::default();
    loop {
        match reader.read_next()? {
            frame::Next::Record {
                kind: POSTING,
                payload,
                offset,
                ..
            } => match Posting::decode(payload).filter(|p| p.index == postings.indexed) {
                Some(p) => postings.add(&p),
                None => return Ok((postings, offset)),
            },
            frame::Next::Record { offset, .. } | frame::Next::Flaw { offset } => {
                return Ok((postings, offset));
            }
            frame::Next::End => return Ok((postings, size)),
        }
    }
}

impl AuditIndex {
    /// Opens (creating) the index folder at `path` and reads its postings file. A record cut
    /// short or damaged ends what the index covers there; the rest is indexed again by the
    /// next catch-up.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        crate::durable::create_dirs(path)?;
        remove_earlier_format(path)?;
        let file = crate::durable::open_private(
            &path.join(POSTINGS),
            crate::durable::Existing::Keep,
            crate::durable::Writes::Positioned,
        )?;
        let (postings, len) = load(&file)?;
        if file.metadata()?.len() > len {
            file.set_len(len)?;
        }
        Ok(Self {
            shared: Arc::new(Shared {
                writer: Mutex::new((file, len)),
                memory: RwLock::new(postings),
            }),
        })
    }

    fn writer(&self) -> MutexGuard<'_, (File, u64)> {
        self.shared.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn memory(&self) -> RwLockReadGuard<'_, Postings> {
        self.shared.memory.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How many entries (from index 0) the index covers.
    pub fn indexed(&self) -> Result<u64, IndexError> {
        Ok(self.memory().indexed)
    }

    /// Adds entries `first..` (their canonical bytes, in order): the file first, then memory.
    /// `first` must be the number of entries already indexed.
    fn add<B: AsRef<[u8]>>(
        &self,
        writer: &mut (File, u64),
        first: u64,
        entries: &[B],
    ) -> Result<(), IndexError> {
        let postings: Vec<Posting> = entries
            .iter()
            .enumerate()
            .map(|(i, bytes)| Posting::of(first + i as u64, bytes.as_ref()))
            .collect();
        let mut bytes = Vec::with_capacity(postings.len() * 80);
        for p in &postings {
            p.encode(&mut bytes);
        }
        let (file, len) = writer;
        if let Err(e) = file.write_all_at(&bytes, *len) {
            // What part of it was written is not part of the index.
            let _ = file.set_len(*len);
            return Err(e.into());
        }
        *len += bytes.len() as u64;
        let mut memory = self
            .shared
            .memory
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for p in &postings {
            memory.add(p);
        }
        Ok(())
    }

    /// Forgets everything: an empty file, an empty index.
    fn clear(&self, writer: &mut (File, u64)) -> Result<(), IndexError> {
        *self
            .shared
            .memory
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Postings::default();
        writer.0.set_len(0)?;
        writer.1 = 0;
        Ok(())
    }

    /// Indexes entries from the number already covered up to `size`, reading each with
    /// `read`. Returns how many were added. If the index covers more than `size` entries (a
    /// log shorter than its index), the index is rebuilt from entry 0.
    pub fn catch_up<E: std::fmt::Display>(
        &self,
        size: u64,
        mut read: impl FnMut(u64) -> Result<Vec<u8>, E>,
    ) -> Result<u64, IndexError> {
        let mut writer = self.writer();
        let mut next = self.indexed()?;
        if next > size {
            self.clear(&mut writer)?;
            next = 0;
        }
        let start = next;
        while next < size {
            let end = size.min(next + BATCH as u64);
            let entries = (next..end)
                .map(|i| read(i).map_err(|e| IndexError::Log(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            self.add(&mut writer, next, &entries)?;
            next = end;
        }
        Ok(next - start)
    }

    /// Clears the index and rebuilds it from the segment files of the log in `log_dir` alone,
    /// up to the first flaw. Returns how many entries it covers.
    pub fn rebuild(&self, log_dir: &Path) -> Result<u64, IndexError> {
        use std::ops::ControlFlow;
        let mut writer = self.writer();
        self.clear(&mut writer)?;
        let mut pending: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut first = 0u64;
        let mut failed = None;
        let next = segment::scan_dir(&log_dir.join("segments"), |_, payload| {
            pending.push(payload.to_vec());
            if pending.len() == BATCH {
                if let Err(e) = self.add(&mut writer, first, &pending) {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
                first += pending.len() as u64;
                pending.clear();
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        self.add(&mut writer, first, &pending)?;
        writer.0.sync_all()?;
        Ok(next)
    }

    /// Writes the index to disk.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.writer().0.sync_data()?;
        Ok(())
    }

    /// The indexes, in increasing order within `start..end`, of entries that may match
    /// `filter`, read from its most selective index. Callers check each entry with
    /// [`Filter::matches`]. Entries beyond what the index covers are not returned.
    pub fn candidates(
        &self,
        filter: &Filter,
        start: u64,
        end: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<u64, IndexError>> + Send>, IndexError> {
        let (start, end) = self.narrow_by_time(filter, start, end.min(self.indexed()?));
        if start >= end {
            return Ok(Box::new(std::iter::empty()));
        }
        // Consent entries widen what `visible_to` lets through beyond the organisation's list.
        let org = match filter.consents.is_empty() {
            true => filter.orgnr.as_deref().or(filter.visible_to.as_deref()),
            false => filter.orgnr.as_deref(),
        };
        if let Some(subject) = filter.subject {
            return Ok(Box::new(self.list(List::Subject(subject), start, end)));
        }
        if let Some(org) = org {
            return Ok(Box::new(self.list(List::Org(org.to_owned()), start, end)));
        }
        if !filter.kinds.is_empty() {
            let mut kinds = filter.kinds.clone();
            kinds.sort_by_key(|k| k.code());
            kinds.dedup();
            let ranges = kinds
                .iter()
                .map(|k| self.list(List::Kind(k.code()), start, end).peekable())
                .collect();
            return Ok(Box::new(Merge(ranges)));
        }
        Ok(Box::new((start..end).map(Ok)))
    }

    /// The indexes in `start..end` on `list`, ascending, read a few at a time (the index may
    /// grow meanwhile; what it held when read is returned).
    fn list(&self, list: List, start: u64, end: u64) -> ListIter {
        let at = self
            .memory()
            .list(&list)
            .map_or(0, |l| l.partition_point(|&i| i < start));
        ListIter {
            shared: self.shared.clone(),
            list,
            at,
            end,
            buffer: Vec::new(),
        }
    }

    /// `start..end` narrowed to the entries whose hour buckets overlap the filter's time range.
    fn narrow_by_time(&self, filter: &Filter, start: u64, end: u64) -> (u64, u64) {
        if filter.from_micros.is_none() && filter.until_micros.is_none() {
            return (start, end);
        }
        let from = filter
            .from_micros
            .map_or(i64::MIN, |t| t.div_euclid(HOUR_MICROS));
        let until = filter
            .until_micros
            .map_or(i64::MAX, |t| t.saturating_sub(1).div_euclid(HOUR_MICROS));
        if from > until {
            return (start, start);
        }
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for (a, b) in self.memory().hours.range(from..=until).map(|(_, v)| *v) {
            lo = lo.min(a);
            hi = hi.max(b + 1);
        }
        (start.max(lo), end.min(hi))
    }
}

/// Removes the files of the earlier sled index, if any: the index is derived data and is
/// rebuilt from the log.
fn remove_earlier_format(path: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let earlier = matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.");
        if !earlier {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Reads one list a chunk at a time, holding the lock only while copying a chunk.
struct ListIter {
    shared: Arc<Shared>,
    list: List,
    /// The next position on the list.
    at: usize,
    end: u64,
    /// Read but not yet returned, in reverse order.
    buffer: Vec<u64>,
}

impl Iterator for ListIter {
    type Item = Result<u64, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        /// Indexes copied under one read lock.
        const CHUNK: usize = 1024;
        if self.buffer.is_empty() {
            let memory = self.shared.memory.read().unwrap_or_else(|p| p.into_inner());
            let list = memory.list(&self.list)?;
            let chunk = list.get(self.at..list.len().min(self.at + CHUNK))?;
            self.at += chunk.len();
            self.buffer
                .extend(chunk.iter().rev().copied().filter(|&i| i < self.end));
        }
        self.buffer.pop().map(Ok)
    }
}

/// Merges ascending streams of indexes into one ascending stream.
struct Merge<I: Iterator<Item = Result<u64, IndexError>>>(Vec<std::iter::Peekable<I>>);

impl<I: Iterator<Item = Result<u64, IndexError>>> Iterator for Merge<I> {
    type Item = Result<u64, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, u64)> = None;
        for (i, stream) in self.0.iter_mut().enumerate() {
            match stream.peek() {
                None => {}
                Some(Err(_)) => return stream.next(),
                Some(Ok(index)) if best.is_none_or(|(_, b)| *index < b) => {
                    best = Some((i, *index));
                }
                Some(Ok(_)) => {}
            }
        }
        let (i, _) = best?;
        self.0[i].next()
    }
}

#[cfg(test)]
mod tests;
