//! Indexes over the audit log, kept in sled, so a query reads only the entries it may match:
//! by subject pseudonym, by organisation (actor, sender or recipient), by kind, and hour
//! buckets for time ranges.
//!
//! The index is derived data. It records how many entries it covers and is brought up to date
//! from the log ([`AuditIndex::catch_up`]) or rebuilt from the segment files alone
//! ([`AuditIndex::rebuild`]). Every batch of entries and the new count are written in one
//! atomic sled batch, so a crash leaves a shorter index, never a holey one; catching up again
//! after a crash re-adds what was lost.
//!
//! Key layout (one tree; integers big-endian so ranges run in log order):
//!
//! ```text
//! 'S' pseudonym[32] index            -> ()       entries about a subject
//! 'O' len(u8) orgnr block            -> postings entries whose actor, sender or recipient
//!                                                is the organisation
//! 'K' kind block                     -> postings entries of a kind
//! 'H' hour (i64)                     -> first index, last index (entries in that hour)
//! 'M' "indexed"                      -> u64      how many entries the index covers
//! ```
//!
//! A subject has few entries, scattered over the log: one key each. An organisation or a kind
//! has many, dense: their postings are grouped in blocks of 4,096 indexes, a block's value
//! being the ascending u16 offsets of its entries, so indexing an entry rewrites a block
//! rather than adding keys.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Mutex, MutexGuard},
};

use crate::{
    entry::{Entry, EntryKind},
    segment,
};

const META_INDEXED: &[u8] = b"Mindexed";
/// Indexes per postings block (small in unit tests, so they cross blocks).
#[cfg(not(test))]
const BLOCK: u64 = 1 << 12;
#[cfg(test)]
const BLOCK: u64 = 64;
const HOUR_MICROS: i64 = 3_600_000_000;
/// Entries written per sled batch while catching up or rebuilding.
const BATCH: usize = 8_192;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("audit index storage: {0}")]
    Store(#[from] sled::Error),
    #[error("audit index: {0}")]
    Corrupt(String),
    #[error("audit log: {0}")]
    Log(String),
    #[error("reading the audit segments: {0}")]
    Io(#[from] std::io::Error),
}

/// What a query asks for. Every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Entries about this subject pseudonym.
    pub subject: Option<[u8; 32]>,
    /// Entries whose actor, sender or recipient is this organisation.
    pub orgnr: Option<String>,
    /// Entries this organisation may see (it is actor, sender or recipient); `None` sees all.
    pub visible_to: Option<String>,
    /// Entries of these kinds; empty means every kind.
    pub kinds: Vec<EntryKind>,
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
            .is_none_or(|s| entry.subject_pseudonym == Some(s))
            && self.orgnr.as_deref().is_none_or(involves)
            && self.visible_to.as_deref().is_none_or(involves)
            && (self.kinds.is_empty() || self.kinds.contains(&entry.kind))
            && self.from_micros.is_none_or(|t| entry.time_micros >= t)
            && self.until_micros.is_none_or(|t| entry.time_micros < t)
    }
}

/// The organisations an entry involves: its actor, sender and recipient.
pub fn organisations(entry: &Entry) -> impl Iterator<Item = &str> {
    let actor = entry.actor.as_ref().map(|a| a.orgnr.as_str());
    let sender = entry.sender_orgnr.as_deref();
    let recipient = entry.recipient_orgnr.as_deref();
    [actor, sender, recipient].into_iter().flatten()
}

/// The sled-backed index. Cheap to clone; one writer at a time.
#[derive(Debug, Clone)]
pub struct AuditIndex {
    tree: sled::Tree,
    db: sled::Db,
    writer: std::sync::Arc<Mutex<()>>,
}

fn sortable_time(micros: i64) -> [u8; 8] {
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

fn hour_key(hour: i64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = b'H';
    key[1..].copy_from_slice(&sortable_time(hour));
    key
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes.get(at..at + 8)?);
    Some(u64::from_be_bytes(b))
}

/// The key prefix of an organisation's or a kind's postings blocks.
fn postings_prefix(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len() + 8);
    k.push(tag);
    if tag == b'O' {
        k.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
    }
    k.extend_from_slice(key);
    k
}

fn block_key(prefix: &[u8], block: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&block.to_be_bytes());
    k
}

fn keyed(tag: u8, key: &[u8], index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len() + 8);
    k.push(tag);
    k.extend_from_slice(key);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

impl AuditIndex {
    /// Opens (creating) the index database at `path`.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(32 << 20)
            .open()?;
        let tree = db.open_tree("audit-index")?;
        Ok(Self {
            tree,
            db,
            writer: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many entries (from index 0) the index covers.
    pub fn indexed(&self) -> Result<u64, IndexError> {
        match self.tree.get(META_INDEXED)? {
            None => Ok(0),
            Some(v) => u64_at(&v, 0)
                .ok_or_else(|| IndexError::Corrupt("bad count of indexed entries".into())),
        }
    }

    /// Adds entries `first..` (their canonical bytes, in order) in one atomic batch. `first`
    /// must be the number of entries already indexed.
    fn add<B: AsRef<[u8]>>(&self, first: u64, entries: &[B]) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        let mut hours: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        // New postings by block key; offsets ascend because entries come in log order.
        let mut postings: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut post = |prefix: Vec<u8>, index: u64| {
            let offset = u16::try_from(index % BLOCK).unwrap_or(u16::MAX);
            postings
                .entry(block_key(&prefix, index / BLOCK))
                .or_default()
                .extend_from_slice(&offset.to_be_bytes());
        };
        for (i, bytes) in entries.iter().enumerate() {
            let index = first + i as u64;
            // Bytes that are not an entry this build understands are covered but unindexed:
            // only an unfiltered range reads them.
            let Ok(entry) = Entry::decode(bytes.as_ref()) else {
                continue;
            };
            if let Some(p) = entry.subject_pseudonym {
                batch.insert(keyed(b'S', &p, index), &[]);
            }
            let mut orgs: Vec<&str> = organisations(&entry).collect();
            orgs.sort_unstable();
            orgs.dedup();
            for org in orgs {
                post(postings_prefix(b'O', org.as_bytes()), index);
            }
            post(postings_prefix(b'K', &[entry.kind.code()]), index);
            let span = hours
                .entry(entry.time_micros.div_euclid(HOUR_MICROS))
                .or_insert((index, index));
            span.0 = span.0.min(index);
            span.1 = span.1.max(index);
        }
        for (key, added) in postings {
            let mut value = self.tree.get(&key)?.map(|v| v.to_vec()).unwrap_or_default();
            value.extend_from_slice(&added);
            batch.insert(key, value);
        }
        for (hour, (lo, hi)) in hours {
            let key = hour_key(hour);
            let (lo, hi) = match self.tree.get(key)? {
                Some(v) => match (u64_at(&v, 0), u64_at(&v, 8)) {
                    (Some(a), Some(b)) => (a.min(lo), b.max(hi)),
                    _ => return Err(IndexError::Corrupt("bad hour bucket".into())),
                },
                None => (lo, hi),
            };
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&lo.to_be_bytes());
            value[8..].copy_from_slice(&hi.to_be_bytes());
            batch.insert(&key, &value);
        }
        let next = first + entries.len() as u64;
        batch.insert(META_INDEXED, &next.to_be_bytes());
        self.tree.apply_batch(batch)?;
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
        let _writer = self.lock();
        let mut next = self.indexed()?;
        if next > size {
            self.tree.clear()?;
            next = 0;
        }
        let start = next;
        while next < size {
            let end = size.min(next + BATCH as u64);
            let entries = (next..end)
                .map(|i| read(i).map_err(|e| IndexError::Log(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            self.add(next, &entries)?;
            next = end;
        }
        Ok(next - start)
    }

    /// Clears the index and rebuilds it from the segment files of the log in `log_dir` alone,
    /// up to the first flaw. Returns how many entries it covers.
    pub fn rebuild(&self, log_dir: &Path) -> Result<u64, IndexError> {
        use std::ops::ControlFlow;
        let _writer = self.lock();
        self.tree.clear()?;
        let mut pending: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut first = 0u64;
        let mut failed = None;
        let next = segment::scan_dir(&log_dir.join("segments"), |_, payload| {
            pending.push(payload.to_vec());
            if pending.len() == BATCH {
                if let Err(e) = self.add(first, &pending) {
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
        self.add(first, &pending)?;
        self.db.flush()?;
        Ok(next)
    }

    /// Writes the index to disk.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
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
        let (start, end) = self.narrow_by_time(filter, start, end.min(self.indexed()?))?;
        if start >= end {
            return Ok(Box::new(std::iter::empty()));
        }
        let org = filter.orgnr.as_deref().or(filter.visible_to.as_deref());
        if let Some(subject) = filter.subject {
            return Ok(self.keyed_range(b'S', &subject, start, end));
        }
        if let Some(org) = org {
            return Ok(self.postings(postings_prefix(b'O', org.as_bytes()), start, end));
        }
        if !filter.kinds.is_empty() {
            let mut kinds = filter.kinds.clone();
            kinds.sort_by_key(|k| k.code());
            kinds.dedup();
            let ranges = kinds
                .iter()
                .map(|k| {
                    self.postings(postings_prefix(b'K', &[k.code()]), start, end)
                        .peekable()
                })
                .collect();
            return Ok(Box::new(Merge(ranges)));
        }
        Ok(Box::new((start..end).map(Ok)))
    }

    fn keyed_range(
        &self,
        tag: u8,
        key: &[u8],
        start: u64,
        end: u64,
    ) -> Box<dyn Iterator<Item = Result<u64, IndexError>> + Send> {
        let prefix_len = 1 + key.len();
        Box::new(
            self.tree
                .range(keyed(tag, key, start)..keyed(tag, key, end))
                .map(move |item| {
                    let (k, _) = item?;
                    u64_at(&k, prefix_len)
                        .ok_or_else(|| IndexError::Corrupt("bad index key".into()))
                }),
        )
    }

    /// The indexes in `start..end` of the postings blocks under `prefix`, ascending.
    fn postings(
        &self,
        prefix: Vec<u8>,
        start: u64,
        end: u64,
    ) -> Box<dyn Iterator<Item = Result<u64, IndexError>> + Send> {
        let blocks = self
            .tree
            .range(block_key(&prefix, start / BLOCK)..=block_key(&prefix, (end - 1) / BLOCK));
        let prefix_len = prefix.len();
        Box::new(blocks.flat_map(move |item| {
            let decoded = item.map_err(IndexError::from).and_then(|(k, v)| {
                let block = u64_at(&k, prefix_len)
                    .ok_or_else(|| IndexError::Corrupt("bad postings key".into()))?;
                if v.len() % 2 != 0 {
                    return Err(IndexError::Corrupt("bad postings block".into()));
                }
                Ok(v.chunks_exact(2)
                    .map(|c| block * BLOCK + u64::from(u16::from_be_bytes([c[0], c[1]])))
                    .filter(|i| (start..end).contains(i))
                    .map(Ok)
                    .collect::<Vec<_>>())
            });
            match decoded {
                Ok(indexes) => indexes,
                Err(e) => vec![Err(e)],
            }
        }))
    }

    /// `start..end` narrowed to the entries whose hour buckets overlap the filter's time range.
    fn narrow_by_time(
        &self,
        filter: &Filter,
        start: u64,
        end: u64,
    ) -> Result<(u64, u64), IndexError> {
        if filter.from_micros.is_none() && filter.until_micros.is_none() {
            return Ok((start, end));
        }
        let from = filter
            .from_micros
            .map_or(i64::MIN, |t| t.div_euclid(HOUR_MICROS));
        let until = filter
            .until_micros
            .map_or(i64::MAX, |t| t.saturating_sub(1).div_euclid(HOUR_MICROS));
        if from > until {
            return Ok((start, start));
        }
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for item in self.tree.range(hour_key(from)..=hour_key(until)) {
            let (_, v) = item?;
            match (u64_at(&v, 0), u64_at(&v, 8)) {
                (Some(a), Some(b)) => {
                    lo = lo.min(a);
                    hi = hi.max(b + 1);
                }
                _ => return Err(IndexError::Corrupt("bad hour bucket".into())),
            }
        }
        Ok((start.max(lo), end.min(hi)))
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
