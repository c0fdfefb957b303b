//! The gateway's data folder, held under an exclusive lock: the audit log has exactly one
//! writer, so a second gateway on the same folder must refuse to start.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use casegate_audit::durable::{self, Existing, Writes};

const LOCK_FILE: &str = "casegate.lock";

/// An open, locked data folder. The lock is released when this is dropped.
#[derive(Debug)]
pub(crate) struct DataDir {
    path: PathBuf,
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create or open data folder {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data folder {path} is in use by another casegate process")]
    InUse { path: PathBuf },
}

impl DataDir {
    pub(crate) fn open(path: &Path) -> Result<Self, DataDirError> {
        let open_err = |source| DataDirError::Open {
            path: path.to_owned(),
            source,
        };
        // Consents, notes and the audit log live here: owner only, and named durably before
        // anything in it is acknowledged.
        casegate_audit::durable::create_dirs(path).map_err(open_err)?;
        let lock = durable::open_private(&path.join(LOCK_FILE), Existing::Keep, Writes::Positioned)
            .map_err(open_err)?;
        match lock.try_lock() {
            Ok(()) => Ok(Self {
                path: path.to_owned(),
                _lock: lock,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DataDirError::InUse {
                path: path.to_owned(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(open_err(e)),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(dir.path()).expect("first open");
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(DataDirError::InUse { .. })
        ));
        drop(first);
        DataDir::open(dir.path()).expect("reopen after release");
    }
}
