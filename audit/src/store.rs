//! Files of fixed-size records addressed by index: the stored Merkle nodes (one file per
//! level, 32-byte hashes) and the record offsets (8 bytes per entry). Everything in them can
//! be rebuilt from the segments, so they are written without `fsync` and synced only on a
//! clean shutdown.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::RwLock,
};

use crate::merkle::Hash;

/// A file of `N`-byte records.
#[derive(Debug)]
pub struct FixedFile<const N: usize> {
    file: File,
}

impl<const N: usize> FixedFile<N> {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        Ok(Self { file })
    }

    /// Records wholly present.
    pub fn records(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len() / N as u64)
    }

    pub fn get(&self, index: u64) -> io::Result<[u8; N]> {
        let mut out = [0u8; N];
        self.file.read_exact_at(&mut out, index * N as u64)?;
        Ok(out)
    }

    /// Writes consecutive records starting at `first` (`bytes` is a multiple of `N`).
    pub fn put(&self, first: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, first * N as u64)
    }

    pub fn truncate(&self, records: u64) -> io::Result<()> {
        self.file.set_len(records * N as u64)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// The stored nodes of the Merkle tree: level `l` holds the roots of the perfect subtrees of
/// `2^l` leaves, in order.
#[derive(Debug)]
pub struct TreeStore {
    dir: PathBuf,
    levels: RwLock<Vec<FixedFile<32>>>,
}

impl TreeStore {
    pub fn open(dir: &Path) -> io::Result<Self> {
        crate::log::private_dirs(dir)?;
        let mut levels = Vec::new();
        loop {
            let path = Self::level_path(dir, levels.len());
            if !path.exists() {
                break;
            }
            levels.push(FixedFile::open(&path)?);
        }
        Ok(Self {
            dir: dir.to_owned(),
            levels: RwLock::new(levels),
        })
    }

    fn level_path(dir: &Path, level: usize) -> PathBuf {
        dir.join(format!("level-{level:02}"))
    }

    pub fn node(&self, level: u32, index: u64) -> io::Result<Hash> {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        match levels.get(level as usize) {
            Some(file) => file.get(index),
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
            if let Some(file) = levels.get(level) {
                return file.put(first, hashes);
            }
        }
        let mut levels = self.levels.write().unwrap_or_else(|p| p.into_inner());
        while levels.len() <= level {
            let path = Self::level_path(&self.dir, levels.len());
            levels.push(FixedFile::open(&path)?);
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
                Some(file) if file.records()? >= needed => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Drops every node.
    pub fn clear(&self) -> io::Result<()> {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        for file in levels.iter() {
            file.truncate(0)?;
        }
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        levels.iter().try_for_each(FixedFile::sync)
    }
}
