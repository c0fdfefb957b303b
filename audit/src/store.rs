//! Files of fixed-size records addressed by index: the stored Merkle nodes (one file per
//! level, 32-byte hashes) and the record offsets (8 bytes per entry). Everything in them can
//! be rebuilt from the segments, so they are written without `fsync` and synced only on a
//! clean shutdown.

use std::{
    collections::VecDeque,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::RwLock,
};

use crate::{
    durable::{Existing, Writes, open_private},
    merkle::Hash,
};

/// A file of `N`-byte records.
#[derive(Debug)]
pub struct FixedFile<const N: usize> {
    file: File,
}

impl<const N: usize> FixedFile<N> {
    /// Opens the file at `path`, creating it (mode 0600) if missing and keeping what it holds.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: open_private(path, Existing::Keep, Writes::Positioned)?,
        })
    }

    /// Records wholly present.
    pub fn records(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len() / N as u64)
    }

    /// Record `index`.
    ///
    /// # Errors
    /// The read fails, or the file ends before the record does (`UnexpectedEof`).
    pub fn get(&self, index: u64) -> io::Result<[u8; N]> {
        let mut out = [0u8; N];
        self.file.read_exact_at(&mut out, index * N as u64)?;
        Ok(out)
    }

    /// Writes consecutive records starting at `first` (`bytes` is a multiple of `N`).
    pub fn put(&self, first: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, first * N as u64)
    }

    /// Cuts the file to its first `records` records (or extends it with zeros to that many).
    pub fn truncate(&self, records: u64) -> io::Result<()> {
        self.file.set_len(records * N as u64)
    }

    /// Syncs the file's data and metadata (`fsync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Nodes of each level kept in memory, the newest ones: proofs for recent entries (every
/// receipt's) and the writer's own reads of what it just wrote need no file read.
const TAIL_NODES: usize = 1024;

/// The newest nodes of one level: `hashes[i]` is node `first + i`.
#[derive(Debug, Default)]
struct Tail {
    first: u64,
    hashes: VecDeque<Hash>,
}

impl Tail {
    fn get(&self, index: u64) -> Option<Hash> {
        let at = usize::try_from(index.checked_sub(self.first)?).ok()?;
        self.hashes.get(at).copied()
    }

    /// Records that nodes `first..` now hold `hashes` (32 bytes each).
    fn put(&mut self, first: u64, hashes: &[u8]) {
        let end = self.first + self.hashes.len() as u64;
        if first < self.first || first > end {
            // Not adjacent to what is kept: start over from these.
            self.hashes.clear();
            self.first = first;
        } else {
            // Overwritten nodes (and any after them) are replaced.
            self.hashes.truncate((first - self.first) as usize);
        }
        for hash in hashes.chunks_exact(32) {
            let mut h = [0u8; 32];
            h.copy_from_slice(hash);
            self.hashes.push_back(h);
        }
        while self.hashes.len() > TAIL_NODES {
            self.hashes.pop_front();
            self.first += 1;
        }
    }
}

/// One level of stored nodes: its file and its newest nodes.
#[derive(Debug)]
struct Level {
    file: FixedFile<32>,
    tail: RwLock<Tail>,
}

impl Level {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: FixedFile::open(path)?,
            tail: RwLock::default(),
        })
    }

    fn tail(&self) -> std::sync::RwLockReadGuard<'_, Tail> {
        self.tail.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tail_mut(&self) -> std::sync::RwLockWriteGuard<'_, Tail> {
        self.tail.write().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, first: u64, hashes: &[u8]) -> io::Result<()> {
        // The file first: a reader that misses the tail finds the node there.
        let written = self.file.put(first, hashes);
        let mut tail = self.tail_mut();
        match written {
            Ok(()) => tail.put(first, hashes),
            // What the file now holds is unknown: forget the newest nodes.
            Err(_) => *tail = Tail::default(),
        }
        written
    }
}

/// The stored nodes of the Merkle tree: level `l` holds the roots of the perfect subtrees of
/// `2^l` leaves, in order. The newest nodes of each level are also kept in memory.
#[derive(Debug)]
pub struct TreeStore {
    dir: PathBuf,
    levels: RwLock<Vec<Level>>,
}

impl TreeStore {
    /// Opens folder `dir` (creating it, mode 0700, durably) and its `level-NN` files from
    /// level 0 up to the first one missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        crate::log::private_dirs(dir)?;
        let mut levels = Vec::new();
        loop {
            let path = Self::level_path(dir, levels.len());
            if !path.exists() {
                break;
            }
            levels.push(Level::open(&path)?);
        }
        Ok(Self {
            dir: dir.to_owned(),
            levels: RwLock::new(levels),
        })
    }

    fn level_path(dir: &Path, level: usize) -> PathBuf {
        dir.join(format!("level-{level:02}"))
    }

    /// Node `index` of level `level`: from memory when among the newest, else from its file.
    ///
    /// # Errors
    /// `NotFound` for a level not stored; the read fails or the file ends before the node.
    pub fn node(&self, level: u32, index: u64) -> io::Result<Hash> {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        match levels.get(level as usize) {
            Some(level) => match level.tail().get(index) {
                Some(hash) => Ok(hash),
                None => level.file.get(index),
            },
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("tree level {level} is not stored"),
            )),
        }
    }

    /// Writes consecutive nodes of `level` starting at `first`.
    pub fn put(&self, level: u32, first: u64, hashes: &[u8]) -> io::Result<()> {
        let level = level as usize;
        {
            let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
            if let Some(stored) = levels.get(level) {
                return stored.put(first, hashes);
            }
        }
        let mut levels = self.levels.write().unwrap_or_else(|p| p.into_inner());
        while levels.len() <= level {
            let path = Self::level_path(&self.dir, levels.len());
            levels.push(Level::open(&path)?);
        }
        levels[level].put(first, hashes)
    }

    /// Whether every node of a tree of `size` leaves is stored.
    pub fn covers(&self, size: u64) -> io::Result<bool> {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        for level in 0..64u32 {
            let needed = size >> level;
            if needed == 0 {
                break;
            }
            match levels.get(level as usize) {
                Some(stored) if stored.file.records()? >= needed => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Drops every node.
    pub fn clear(&self) -> io::Result<()> {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        for stored in levels.iter() {
            *stored.tail_mut() = Tail::default();
            stored.file.truncate(0)?;
        }
        Ok(())
    }

    /// Syncs every level's file and the folder that names them.
    pub fn sync(&self) -> io::Result<()> {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        levels.iter().try_for_each(|stored| stored.file.sync())?;
        crate::durable::sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests;
