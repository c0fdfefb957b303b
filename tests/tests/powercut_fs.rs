//! The power-cut filesystem keeps exactly what was made durable: each rule checked with real
//! system calls through a mount, then a cut.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use casegate_tests::powercut::{self, Mounted};

/// A mounted power-cut filesystem on a fresh temporary folder (unmounted before the folder
/// goes: fields drop in order).
struct Fixture {
    fs: Mounted,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.fs.path().join(name)
    }

    fn cut(&mut self) -> powercut::CutReport {
        self.fs.cut_power().expect("cut the power")
    }
}

fn mount() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = powercut::mount_for_test(dir.path())?;
    Some(Fixture { fs, _dir: dir })
}

fn sync_dir(path: &Path) {
    File::open(path)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

/// Creates `path` with `bytes`, fsyncs it and its directory.
fn durable_file(path: &Path, bytes: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("fsync");
    sync_dir(path.parent().expect("parent"));
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}

#[test]
fn an_unsynced_write_vanishes() {
    let Some(mut fx) = mount() else { return };
    let kept = fx.path("kept");
    durable_file(&kept, b"");
    let mut f = OpenOptions::new().append(true).open(&kept).expect("open");
    f.write_all(b"not synced").expect("write");
    drop(f);
    assert_eq!(
        fs::read(&kept).expect("read"),
        b"not synced",
        "seen at once"
    );
    let fresh = fx.path("fresh");
    fs::write(&fresh, b"never synced at all").expect("write");

    let report = fx.cut();
    assert_eq!(fs::read(&kept).expect("read"), b"", "the write is gone");
    assert!(!fresh.exists(), "an unsynced new file is gone");
    assert_eq!(report.files_reverted, 1);
    assert_eq!(report.nodes_dropped, 1);
    assert_eq!(report.bytes_reverted, 10 + 19);
    assert_eq!(fx.fs.counters().bytes_reverted_last_cut, 29);
}

#[test]
fn a_synced_file_in_an_unsynced_directory_vanishes() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("segment");
    let mut f = File::create(&path).expect("create");
    f.write_all(b"entries").expect("write");
    f.sync_all().expect("fsync the file, not its directory");
    drop(f);
    fx.cut();
    assert!(!path.exists());
    assert!(names(fx.fs.path()).is_empty());
}

#[test]
fn a_synced_file_in_a_synced_directory_survives_byte_for_byte() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("data.bin");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    durable_file(&path, &bytes);
    let report = fx.cut();
    assert_eq!(fs::read(&path).expect("read"), bytes);
    assert_eq!(
        report,
        powercut::CutReport::default(),
        "nothing to take back"
    );
    let counters = fx.fs.counters();
    assert_eq!((counters.fsyncs, counters.fsyncdirs), (1, 1));
}

#[test]
fn fdatasync_makes_a_file_durable_like_fsync() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("log");
    durable_file(&path, b"");
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(b"batch 1;").expect("write");
    f.sync_data().expect("fdatasync");
    f.write_all(b"batch 2;").expect("write");
    drop(f);
    fx.cut();
    assert_eq!(fs::read(&path).expect("read"), b"batch 1;");
    assert_eq!(fx.fs.counters().fdatasyncs, 1);
}

#[test]
fn a_sync_through_another_handle_of_the_file_counts() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("shared");
    durable_file(&path, b"");
    let mut writer = OpenOptions::new().write(true).open(&path).expect("open");
    writer.write_all(b"written by one handle").expect("write");
    File::open(&path)
        .expect("another handle")
        .sync_all()
        .expect("fsync");
    drop(writer);
    fx.cut();
    assert_eq!(fs::read(&path).expect("read"), b"written by one handle");
}

#[test]
fn an_overwrite_after_fsync_reverts_to_the_synced_bytes() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("page");
    let original = vec![b'a'; 10_000];
    durable_file(&path, &original);
    let mut f = OpenOptions::new().write(true).open(&path).expect("open");
    f.seek(SeekFrom::Start(4090)).expect("seek");
    f.write_all(b"OVERWRITTEN").expect("write");
    f.seek(SeekFrom::Start(20_000)).expect("seek past the end");
    f.write_all(b"sparse tail").expect("write");
    drop(f);
    let mut now = Vec::new();
    File::open(&path)
        .expect("open")
        .read_to_end(&mut now)
        .expect("read");
    assert_eq!(&now[4090..4101], b"OVERWRITTEN");
    assert_eq!(now.len(), 20_011);
    assert!(
        now[10_000..20_000].iter().all(|b| *b == 0),
        "a hole reads zeros"
    );

    let report = fx.cut();
    assert_eq!(fs::read(&path).expect("read"), original);
    assert_eq!(report.bytes_reverted, 11 + 10_011);
}

#[test]
fn a_rename_is_durable_only_after_the_directory_fsync() {
    let Some(mut fx) = mount() else { return };
    let current = fx.path("checkpoint");
    let tmp = fx.path("checkpoint.tmp");
    durable_file(&current, b"old checkpoint");

    // Create, write, fsync, rename; no directory fsync: the old content comes back.
    let mut f = File::create(&tmp).expect("create");
    f.write_all(b"new checkpoint").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    fs::rename(&tmp, &current).expect("rename");
    assert_eq!(fs::read(&current).expect("read"), b"new checkpoint");
    fx.cut();
    assert_eq!(fs::read(&current).expect("read"), b"old checkpoint");
    assert_eq!(names(fx.fs.path()), ["checkpoint"]);

    // The same with the directory fsync: the new content stays.
    durable_file(&tmp, b"new checkpoint");
    fs::rename(&tmp, &current).expect("rename");
    sync_dir(fx.fs.path());
    fx.cut();
    assert_eq!(fs::read(&current).expect("read"), b"new checkpoint");
    assert_eq!(names(fx.fs.path()), ["checkpoint"]);
}

#[test]
fn a_rename_across_directories_is_durable_on_each_side_after_its_own_fsync() {
    let Some(mut fx) = mount() else { return };
    let (a, b) = (fx.path("a"), fx.path("b"));
    fs::create_dir(&a).expect("mkdir");
    fs::create_dir(&b).expect("mkdir");
    sync_dir(fx.fs.path());
    durable_file(&a.join("x"), b"x");
    fs::rename(a.join("x"), b.join("x")).expect("rename");
    sync_dir(&a);
    sync_dir(&b);
    fx.cut();
    assert!(names(&a).is_empty());
    assert_eq!(names(&b), ["x"]);
    assert_eq!(fs::read(b.join("x")).expect("read"), b"x");

    // Only the source directory synced: the name is gone from both.
    fs::rename(b.join("x"), a.join("y")).expect("rename");
    sync_dir(&b);
    fx.cut();
    assert!(names(&a).is_empty() && names(&b).is_empty());
}

#[test]
fn an_unlink_is_undone_without_the_directory_fsync() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("consent.db");
    durable_file(&path, b"records");
    fs::remove_file(&path).expect("unlink");
    assert!(!path.exists());
    fx.cut();
    assert_eq!(fs::read(&path).expect("back"), b"records");

    fs::remove_file(&path).expect("unlink");
    sync_dir(fx.fs.path());
    fx.cut();
    assert!(!path.exists());
}

#[test]
fn sync_file_range_makes_nothing_durable() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("blob");
    durable_file(&path, b"");
    fs::write(&path, vec![b'z'; 8192]).expect("write");
    // The call the sled store uses to "flush": it writes back the kernel's page cache but
    // never reaches the filesystem as a sync. (Through Python's ctypes: this crate has no
    // unsafe code.)
    let script = "import ctypes, os, sys\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        fd = os.open(sys.argv[1], os.O_RDWR)\n\
        flags = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER\n\
        r = libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), ctypes.c_uint(flags))\n\
        if r != 0: raise OSError(ctypes.get_errno(), 'sync_file_range')\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .status()
        .expect("python3 runs sync_file_range");
    assert!(status.success(), "sync_file_range failed");
    let before = fx.fs.counters();
    assert_eq!(before.fsyncs, 1, "only the first durable_file fsync");
    fx.cut();
    assert_eq!(fs::read(&path).expect("read"), b"");
}

#[test]
fn a_truncate_is_reverted_unless_synced() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("index");
    durable_file(&path, &[9; 10_000]);
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(3).expect("ftruncate");
    drop(f);
    assert_eq!(fs::metadata(&path).expect("stat").len(), 3);
    fx.cut();
    assert_eq!(fs::read(&path).expect("read"), vec![9; 10_000]);

    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(3).expect("ftruncate");
    f.sync_all().expect("fsync");
    drop(f);
    fx.cut();
    assert_eq!(fs::read(&path).expect("read"), [9, 9, 9]);
}

#[test]
fn a_directory_is_durable_only_after_its_parent_fsync() {
    let Some(mut fx) = mount() else { return };
    let dir = fx.path("segments");
    fs::create_dir(&dir).expect("mkdir");
    durable_file(&dir.join("0001"), b"seg");
    fx.cut();
    assert!(!dir.exists(), "mkdir without a parent fsync vanishes");

    fs::create_dir(&dir).expect("mkdir");
    sync_dir(fx.fs.path());
    fs::write(dir.join("0001"), b"seg").expect("write");
    fx.cut();
    assert!(dir.is_dir());
    assert!(names(&dir).is_empty(), "its unsynced entry is gone");

    fs::remove_dir(&dir).expect("rmdir");
    fx.cut();
    assert!(dir.is_dir(), "rmdir without a parent fsync is undone");
}

#[test]
fn modes_are_kept_and_checked() {
    let Some(mut fx) = mount() else { return };
    let dir = fx.path("private");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("mkdir");
    let key = dir.join("key");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .expect("create");
    f.write_all(b"secret").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    sync_dir(&dir);
    sync_dir(fx.fs.path());
    fx.cut();
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!((mode(&dir), mode(&key)), (0o700, 0o600));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).expect("chmod");
    assert_eq!(mode(&key), 0o400);
    assert!(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&key)
            .is_err(),
        "create_new refuses an existing name"
    );
}

#[test]
fn file_locks_work_on_the_mount() {
    let Some(fx) = mount() else { return };
    let path = fx.path("LOCK");
    let first = File::create(&path).expect("create");
    first.try_lock().expect("first lock");
    let second = File::open(&path).expect("open");
    assert!(second.try_lock().is_err(), "the lock is held");
    first.unlock().expect("unlock");
    second.try_lock().expect("free again");
}

#[test]
fn syncing_a_growing_file_shares_its_pages_with_the_durable_copy() {
    let Some(mut fx) = mount() else { return };
    let path = fx.path("segment");
    durable_file(&path, b"");
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    let batch = vec![0x5a; 64 * 1024];
    let batches = 256; // 16 MiB
    for _ in 0..batches {
        f.write_all(&batch).expect("write");
        f.sync_data().expect("fdatasync");
    }
    f.write_all(&batch).expect("an unsynced last batch");
    drop(f);
    let size = (batches + 1) * batch.len() as u64;
    let resident = fx.fs.resident_bytes();
    assert!(
        resident <= size + 8192,
        "{resident} bytes held for a {size}-byte file: the durable copy is not shared"
    );
    assert_eq!(fx.fs.counters().fdatasyncs, batches);
    fx.cut();
    assert_eq!(
        fs::metadata(&path).expect("stat").len(),
        batches * batch.len() as u64
    );
}
