//! A power-cut filesystem for tests: an in-memory FUSE filesystem that keeps only what was
//! made durable (`fsync`/`fdatasync` of a file, `fsync` of a directory) and, on
//! [`Mounted::cut_power`], forgets everything else, as a machine losing power would.
//!
//! Writes are seen at once by every reader; a cut then puts back each file's content and each
//! directory's entries as they were at their last sync (see [`fs`] for the exact rules), and
//! remounts the folder so no kernel cache outlives the cut.
//!
//! Tests that need FUSE call [`mount_for_test`]: where FUSE cannot be used it fails the test
//! under CI (`CI=true`) and otherwise says why it skipped.
//!
//! [`run`] puts the gateway, running in a child process with its data folder on such a
//! filesystem, through power cuts under load, and checks after each that nothing any client
//! was acknowledged is lost.

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use fuser::{BackgroundSession, MountOption};

mod check;
mod fs;
mod ledger;
mod load;
mod pages;
mod trial;

pub use check::{Check, Checks, Failure};
pub use ledger::Ops;
pub use trial::{Options, Report, run, start_child};

use fs::{PowerCutFs, Tree};

/// What the filesystem was asked to do since it was mounted (cuts included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `fsync` requests on files, `fdatasync` included.
    pub fsyncs: u64,
    /// Of which `fdatasync`.
    pub fdatasyncs: u64,
    /// `fsync` requests on directories.
    pub fsyncdirs: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub cuts: u64,
    /// [`CutReport::bytes_reverted`] of the last cut.
    pub bytes_reverted_last_cut: u64,
}

/// What a cut took back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Byte positions whose content differed from the durable version (a position past the
    /// end of one version counts), summed over all files, plus the whole of every dropped file.
    pub bytes_reverted: u64,
    /// Surviving files whose content went back.
    pub files_reverted: u64,
    /// Directories whose entries went back.
    pub dirs_reverted: u64,
    /// Files and directories gone because no durable entry names them.
    pub nodes_dropped: u64,
}

/// A power-cut filesystem mounted on a folder. Dropping it unmounts.
#[derive(Debug)]
pub struct Mounted {
    path: PathBuf,
    tree: Arc<Mutex<Tree>>,
    session: Option<BackgroundSession>,
}

/// Mounts an empty power-cut filesystem on the (existing, empty) folder `path`.
pub fn mount(path: impl AsRef<Path>) -> io::Result<Mounted> {
    let path = path.as_ref().to_path_buf();
    let meta = std::fs::metadata(&path)?;
    let tree = Tree::new((meta.mode() & 0o7777) as u16, meta.uid(), meta.gid());
    let tree = Arc::new(Mutex::new(tree));
    let session = spawn(&path, &tree)?;
    Ok(Mounted {
        path,
        tree,
        session: Some(session),
    })
}

impl Mounted {
    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Cuts the power: unmounts, takes back everything not durable, and mounts the same
    /// tree again at the same place. Every process using the folder must be gone first
    /// (SIGKILL it and wait for it); an open file keeps the folder busy and fails the cut.
    pub fn cut_power(&mut self) -> io::Result<CutReport> {
        self.unmount()?;
        let report = lock(&self.tree).cut();
        self.session = Some(spawn(&self.path, &self.tree)?);
        Ok(report)
    }

    /// Makes everything durable as it is now, as the kernel's background writeback would
    /// given time: for a test about what a program syncs itself after some set-up that is
    /// not under test.
    pub fn settle(&self) {
        lock(&self.tree).settle();
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        lock(&self.tree).counters
    }

    /// Bytes of file content held in memory (live and durable versions, shared pages once).
    pub fn resident_bytes(&self) -> u64 {
        lock(&self.tree).resident_bytes()
    }

    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // A process that was just killed may hold the folder for a moment while the kernel
        // closes its files: retry a busy unmount for a while.
        let mut tries = 0;
        loop {
            match nix::mount::umount(&self.path) {
                // The session's thread ends when the kernel closes the connection.
                Ok(()) => return ended(session.join()),
                Err(nix::errno::Errno::EBUSY) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                // Not allowed to unmount directly: fuser goes through fusermount3.
                Err(nix::errno::Errno::EPERM) => return ended(session.umount_and_join()),
                Err(e) => {
                    self.session = Some(session);
                    return Err(io::Error::other(format!(
                        "unmount {}: {e}",
                        self.path.display()
                    )));
                }
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("power-cut filesystem: {e}");
        }
    }
}

/// Whether this machine can mount a FUSE filesystem here, and if not, why.
pub fn fuse_available() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    let root = nix::unistd::geteuid().is_root();
    if !root && !on_path("fusermount3") {
        return Err("not root and no fusermount3 (Debian package fuse3)".into());
    }
    Ok(())
}

/// Mounts a power-cut filesystem on `path` for a test, or returns `None` when FUSE cannot be
/// used here, after saying so on standard error. Under CI (`CI=true`) it panics instead: a
/// power-cut test must never pass there by skipping.
pub fn mount_for_test(path: impl AsRef<Path>) -> Option<Mounted> {
    match fuse_available().and_then(|()| {
        mount(path.as_ref()).map_err(|e| format!("mount on {}: {e}", path.as_ref().display()))
    }) {
        Ok(mounted) => Some(mounted),
        Err(reason) => {
            unavailable(&reason);
            None
        }
    }
}

/// Reports that FUSE is unavailable: panics under CI, says "skipped" otherwise.
pub fn unavailable(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the power-cut filesystem is needed under CI: {reason}");
    }
    eprintln!("skipped: power-cut filesystem unavailable: {reason}");
}

/// A FUSE session's end after an unmount this side asked for. With requests still queued at
/// the unmount the kernel aborts the connection (ECONNABORTED) rather than closing it: the same
/// end, not a failure of the filesystem.
fn ended(joined: io::Result<()>) -> io::Result<()> {
    match joined {
        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(()),
        other => other,
    }
}

fn spawn(path: &Path, tree: &Arc<Mutex<Tree>>) -> io::Result<BackgroundSession> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("powercut".into()),
        MountOption::Subtype("powercut".into()),
        // The kernel checks modes (0600 files stay 0600 for everyone but root).
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    let fs = PowerCutFs { tree: tree.clone() };
    fuser::spawn_mount(fs, path, &config)
}

fn lock(tree: &Mutex<Tree>) -> MutexGuard<'_, Tree> {
    tree.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
