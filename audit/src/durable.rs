//! Files and folders that survive a power cut: what POSIX promises only after `fsync`.
//!
//! A file's bytes are durable once the file is synced; its name (a create, a rename, an
//! unlink) once its folder is synced (`fsync(2)`, "Calling fsync() does not necessarily ensure
//! that the entry in the directory containing the file has also reached disk"). Every helper
//! here returns only when what it did is durable, and creates what it creates readable by its
//! owner only (0600 files, 0700 folders): the data folder names organisations and pseudonyms.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

/// Makes the names in folder `dir` durable (creates, renames and unlinks done in it so far).
///
/// # Errors
/// The folder cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The folder holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates folder `path` and any missing parents (mode 0700) and makes every one of them
/// durable: each new folder, and the folder that names it, is synced. An existing folder is
/// left as it is.
///
/// # Errors
/// A folder cannot be created or synced.
pub fn create_dirs(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = path;
    while !at.as_os_str().is_empty() && !at.exists() {
        missing.push(at);
        at = parent(at);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    for dir in missing.iter().rev() {
        sync_dir(dir)?;
        sync_dir(parent(dir))?;
    }
    Ok(())
}

/// Writes `bytes` as the whole of a new or truncated file at `path` (mode 0600 when created),
/// syncs it and its folder.
///
/// # Errors
/// The file cannot be written or synced.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = open_private(path, Existing::Truncate, Writes::Positioned)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_dir(parent(path))
}

/// Creates a new file at `path` (mode 0600; fails if it exists), writes `bytes`, syncs it and
/// its folder.
///
/// # Errors
/// The file exists, or cannot be written or synced.
pub fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_new_file_with_mode(path, bytes, 0o600)
}

/// Replaces the file at `path` with `bytes` atomically: writes and syncs `path.tmp`, renames
/// it over `path`, then syncs the folder. After a power cut at any point the file holds either
/// the old bytes or the new ones, never a mix or nothing.
///
/// # Errors
/// The temporary file cannot be written, synced or renamed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let mut file = open_private(tmp, Existing::Truncate, Writes::Positioned)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)?;
    sync_dir(parent(path))
}

/// Renames `from` to `to` (in the same or another folder) and syncs both folders.
///
/// # Errors
/// The rename or a sync fails.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent(to))?;
    if parent(from) != parent(to) {
        sync_dir(parent(from))?;
    }
    Ok(())
}

/// Removes the file at `path` (absent is fine) and syncs its folder.
///
/// # Errors
/// The removal or the sync fails.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What [`open_private`] does with a file that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with `AlreadyExists`: the file must be new.
    Refuse,
    /// Open it as it is.
    Keep,
    /// Empty it.
    Truncate,
}

/// How [`open_private`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// At the file's position (or with positioned writes).
    Positioned,
    /// Always at the end (`O_APPEND`).
    Append,
}

/// The one way casegate creates a file it writes (and opens one it keeps writing): readable
/// and writable by its owner only (created with mode 0600), `existing` saying what to do with
/// one already there. Nothing is
/// synced: the caller syncs the file, and the folder when the file is new
/// ([`sync_dir`]), before relying on either.
///
/// # Errors
/// The file cannot be opened or created, or exists under [`Existing::Refuse`].
pub fn open_private(path: &Path, existing: Existing, writes: Writes) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).mode(0o600);
    match writes {
        Writes::Positioned => options.write(true),
        Writes::Append => options.append(true),
    };
    match existing {
        Existing::Refuse => options.create_new(true),
        Existing::Keep => options.create(true).truncate(false),
        Existing::Truncate => options.create(true).truncate(true),
    };
    options.open(path)
}

/// Writes `bytes` as the whole of a new file at `path` with permission bits `mode` (fails if
/// it exists), syncs it and its folder.
///
/// # Errors
/// The file exists, or cannot be written or synced.
pub fn write_new_file_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_dir(parent(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn helpers_create_private_files_and_folders_and_replace_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let deep = root.path().join("a/b/c");
        create_dirs(&deep).expect("dirs");
        for dir in [root.path().join("a"), root.path().join("a/b"), deep.clone()] {
            let mode = fs::metadata(&dir).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        }
        create_dirs(&deep).expect("an existing folder is fine");

        let file = deep.join("f");
        write_new_file(&file, b"one").expect("new");
        assert!(write_new_file(&file, b"two").is_err(), "create_new refuses");
        replace_file(&file, b"three").expect("replace");
        assert_eq!(fs::read(&file).expect("read"), b"three");
        assert!(!deep.join("f.tmp").exists(), "no temporary file is left");
        let mode = fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        write_file(&file, b"four").expect("overwrite");
        assert_eq!(fs::read(&file).expect("read"), b"four");
        rename(&file, &root.path().join("g")).expect("rename");
        assert_eq!(fs::read(root.path().join("g")).expect("read"), b"four");
        remove_file(&root.path().join("g")).expect("remove");
        remove_file(&root.path().join("g")).expect("absent is fine");
    }

    #[test]
    fn a_private_file_is_owner_only_and_an_existing_one_is_refused_kept_or_emptied() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("f");
        let mut file = open_private(&path, Existing::Refuse, Writes::Append).expect("new");
        file.write_all(b"held").expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let refused = open_private(&path, Existing::Refuse, Writes::Positioned);
        assert_eq!(
            refused.expect_err("exists").kind(),
            io::ErrorKind::AlreadyExists
        );
        open_private(&path, Existing::Keep, Writes::Positioned).expect("kept");
        assert_eq!(fs::read(&path).expect("read"), b"held");
        open_private(&path, Existing::Truncate, Writes::Positioned).expect("emptied");
        assert_eq!(fs::read(&path).expect("read"), b"");
    }
}
