use std::{path::Path, sync::Arc};

use super::*;
use crate::entry::{Entry, EntryKind, Fields};

const ORIGIN: &str = "casegate.test/audit";

fn signer() -> Signer {
    // One fixed key per test run is enough; tests that need another key make one.
    Signer::generate(ORIGIN).expect("key")
}

fn entry(n: u64) -> Vec<u8> {
    entry_at(n as i64, n)
}

/// Entry `n`, stamped at `time` (µs).
fn entry_at(time: i64, n: u64) -> Vec<u8> {
    let fields = Fields {
        detail: Some(format!("entry {n}")),
        ..Fields::default()
    };
    Entry::from_fields(EntryKind::NoteDelivered, time, fields)
        .encode()
        .expect("encodes")
}

fn open(
    dir: &Path,
    signer: &Signer,
    options: LogOptions,
) -> Result<(AuditLog, Recovery), OpenError> {
    AuditLog::open(
        dir,
        Signer::from_skey(&signer.to_skey()).expect("copy"),
        options,
    )
}

fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 1024,
        ..LogOptions::new(ORIGIN)
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    segment::list(&dir.join("segments"))
        .expect("list")
        .pop()
        .expect("a segment")
        .1
}

/// The byte offset of record `index`'s frame in the last segment.
fn record_offset(dir: &Path, index: u64) -> usize {
    let (first, path) = segment::list(&dir.join("segments"))
        .expect("list")
        .pop()
        .expect("a segment");
    let bytes = fs::read(&path).expect("read");
    let mut found = None;
    segment::scan(&bytes, first, |i, offset, _| {
        if i == index {
            found = Some(offset as usize);
        }
    });
    found.expect("the record is in the last segment")
}

#[test]
fn appends_are_durable_readable_and_provable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, recovery) = open(dir.path(), &key, small_segments()).expect("open");
    assert_eq!((recovery.size, recovery.checkpoint_size), (0, None));
    let mut receipts = Vec::new();
    for n in 0..100 {
        receipts.push(log.append_blocking(entry(n)).expect("append"));
    }
    assert_eq!(log.size(), 100);
    assert!(
        segment::list(&dir.path().join("segments"))
            .expect("list")
            .len()
            > 3
    );
    for (n, receipt) in receipts.iter().enumerate() {
        assert_eq!(receipt.index, n as u64);
        assert_eq!(log.entry(receipt.index).expect("read"), entry(n as u64));
        let cp = &receipt.checkpoint.checkpoint;
        assert!(cp.size > receipt.index);
        let proof = log.inclusion_proof(receipt.index, cp.size).expect("proof");
        merkle::verify_inclusion(&receipt.leaf_hash, receipt.index, cp.size, &proof, &cp.root)
            .expect("inclusion verifies");
        assert_eq!(
            key.verifier().verify(&receipt.checkpoint.note).as_ref(),
            Ok(cp)
        );
    }
    let newest = log.checkpoint().checkpoint.clone();
    let old = &receipts[10].checkpoint.checkpoint;
    let proof = log.consistency_proof(old.size, newest.size).expect("proof");
    merkle::verify_consistency(old.size, newest.size, &proof, &old.root, &newest.root)
        .expect("consistency verifies");
    assert!(matches!(log.entry(100), Err(ReadError::OutOfRange { .. })));
    log.close().expect("close");

    let (log, recovery) = open(dir.path(), &key, small_segments()).expect("reopen");
    assert!(recovery.clean, "a clean shutdown needs no rebuild");
    assert_eq!((recovery.size, recovery.checkpoint_size), (100, Some(100)));
    assert_eq!(log.checkpoint().checkpoint, newest);
    assert_eq!(log.append_blocking(entry(100)).expect("append").index, 100);
}

#[test]
fn concurrent_appenders_get_distinct_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = open(dir.path(), &signer(), LogOptions::new(ORIGIN)).expect("open");
    let log = Arc::new(log);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|n| {
                        log.append_blocking(entry_at(0, t * 1000 + n))
                            .expect("append")
                            .index
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    all.sort();
    assert_eq!(all, (0..800).collect::<Vec<_>>());
    assert_eq!(log.size(), 800);
}

#[test]
fn an_entry_older_than_the_newest_is_refused_even_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer();
    {
        let (log, _) = open(dir.path(), &signer, LogOptions::new(ORIGIN)).expect("open");
        assert_eq!(log.newest_time(), None);
        log.append_blocking(entry_at(2_000, 0)).expect("append");
        log.append_blocking(entry_at(2_000, 1))
            .expect("the same time is fine");
        assert!(matches!(
            log.append_blocking(entry_at(1_999, 2)),
            Err(AppendError::TimeWentBack {
                time: 1_999,
                newest: 2_000
            })
        ));
        assert_eq!(log.size(), 2, "the refused entry was not written");
        log.close().expect("close");
    }
    // The newest time is read back from the log itself, clean close or not.
    for clean in [true, false] {
        if !clean {
            let _ = std::fs::remove_file(dir.path().join(CLEAN));
        }
        let (log, _) = open(dir.path(), &signer, LogOptions::new(ORIGIN)).expect("reopen");
        assert_eq!(log.newest_time(), Some(2_000));
        assert!(matches!(
            log.append_blocking(entry_at(1_000, 3)),
            Err(AppendError::TimeWentBack { .. })
        ));
        log.close().expect("close");
    }
}

#[test]
fn a_crash_rebuilds_the_tree_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, _) = open(dir.path(), &key, small_segments()).expect("open");
    for n in 0..40 {
        log.append_blocking(entry(n)).expect("append");
    }
    let root = log.checkpoint().checkpoint.root;
    log.close().expect("close");
    // As after a crash: no clean marker, derived files garbage, half a record at the end.
    fs::remove_file(dir.path().join(CLEAN)).expect("unmark");
    fs::write(dir.path().join("tree/level-00"), [7u8; 100]).expect("garble tree");
    let mut torn = Vec::new();
    segment::encode_frame(40, &entry(40), &mut torn);
    torn.truncate(torn.len() / 2);
    OpenOptions::new()
        .append(true)
        .open(last_segment(dir.path()))
        .expect("segment")
        .write_all(&torn)
        .expect("tear");

    let (log, recovery) = open(dir.path(), &key, small_segments()).expect("recovers");
    assert!(!recovery.clean);
    assert_eq!(recovery.size, 40);
    assert_eq!(recovery.discarded_bytes, torn.len() as u64);
    assert_eq!(log.checkpoint().checkpoint.root, root);
    assert_eq!(log.append_blocking(entry(40)).expect("append").index, 40);
    assert_eq!(log.entry(40).expect("read"), entry(40));
}

#[test]
fn damage_before_the_tail_refuses_to_open_naming_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, _) = open(dir.path(), &key, small_segments()).expect("open");
    for n in 0..80 {
        log.append_blocking(entry(n)).expect("append");
    }
    log.close().expect("close");
    let segments = segment::list(&dir.path().join("segments")).expect("list");
    let (first, path) = &segments[1];
    let mut bytes = fs::read(path).expect("read");
    let at = segment::HEADER_LEN as usize + segment::FRAME_HEADER_LEN + 3;
    bytes[at] ^= 0x01;
    fs::write(path, bytes).expect("write");
    fs::remove_file(dir.path().join(CLEAN)).expect("unmark");
    match open(dir.path(), &key, small_segments()) {
        Err(OpenError::Damaged { index, reason }) => {
            assert_eq!(index, *first);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn losing_acknowledged_entries_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, _) = open(dir.path(), &key, small_segments()).expect("open");
    for n in 0..10 {
        log.append_blocking(entry(n)).expect("append");
    }
    log.close().expect("close");
    let path = last_segment(dir.path());
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(record_offset(dir.path(), 9) as u64)
        .expect("truncate");
    fs::remove_file(dir.path().join(CLEAN)).expect("unmark");
    match open(dir.path(), &key, small_segments()) {
        Err(OpenError::Truncated { size, checkpoint }) => assert_eq!((size, checkpoint), (9, 10)),
        other => panic!("expected truncation to be refused, got {other:?}"),
    }
}

#[test]
fn a_checkpoint_from_another_key_or_origin_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, _) = open(dir.path(), &key, LogOptions::new(ORIGIN)).expect("open");
    log.append_blocking(entry(0)).expect("append");
    log.close().expect("close");
    assert!(matches!(
        open(dir.path(), &signer(), LogOptions::new(ORIGIN)),
        Err(OpenError::Checkpoint(_))
    ));
    assert!(matches!(
        open(dir.path(), &key, LogOptions::new("elsewhere/audit")),
        Err(OpenError::Origin { .. })
    ));
}

#[test]
fn oversized_entries_are_refused_before_queueing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = open(dir.path(), &signer(), LogOptions::new(ORIGIN)).expect("open");
    let big = vec![0u8; segment::MAX_ENTRY_BYTES + 1];
    assert_eq!(
        log.append_blocking(big).map(|a| a.index),
        Err(AppendError::TooLarge(segment::MAX_ENTRY_BYTES + 1))
    );
    assert_eq!(log.size(), 0);
}

#[test]
fn damage_in_the_last_segment_under_the_checkpoint_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, _) = open(dir.path(), &key, small_segments()).expect("open");
    for n in 0..10 {
        log.append_blocking(entry(n)).expect("append");
    }
    log.close().expect("close");
    let path = last_segment(dir.path());
    let at = record_offset(dir.path(), 4) + segment::FRAME_HEADER_LEN;
    let mut bytes = fs::read(&path).expect("read");
    bytes[at] ^= 0x01;
    fs::write(&path, &bytes).expect("write");
    fs::remove_file(dir.path().join(CLEAN)).expect("unmark");
    match open(dir.path(), &key, small_segments()) {
        Err(OpenError::Damaged { index, .. }) => assert_eq!(index, 4),
        other => panic!("expected damage at 4, got {other:?}"),
    }
    assert_eq!(
        fs::read(&path).expect("read"),
        bytes,
        "evidence must not be cut"
    );
}

#[test]
fn the_checkpoint_file_catches_up_with_the_last_append_without_a_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, _) = open(dir.path(), &key, LogOptions::new(ORIGIN)).expect("open");
    // Appends in quick succession: the file is rewritten at most every interval...
    for n in 0..20 {
        log.append_blocking(entry(n)).expect("append");
    }
    // ...and the newest checkpoint reaches it soon after, with no further append.
    let deadline = Instant::now() + CHECKPOINT_FILE_EVERY * 20;
    loop {
        let on_file = read_checkpoint(dir.path(), &key.verifier())
            .expect("readable")
            .map(|c| c.checkpoint.size);
        if on_file == Some(20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint file still covers {on_file:?} entries"
        );
        std::thread::sleep(CHECKPOINT_FILE_EVERY / 4);
    }
    log.close().expect("close");
}

#[test]
fn the_hook_runs_before_each_batch_is_written_and_its_failure_fails_only_that_batch() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (calls, failing) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    // What the log holds when the hook runs: nothing of the batch yet.
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let segments = dir.path().join("segments");
    let hook: BeforeWrite = {
        let (calls, failing, sizes) = (calls.clone(), failing.clone(), sizes.clone());
        Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let written: u64 = segment::list(&segments)
                .map(|list| {
                    list.iter()
                        .map(|(_, path)| std::fs::metadata(path).map_or(0, |m| m.len()))
                        .sum()
                })
                .unwrap_or(0);
            sizes.lock().expect("sizes").push(written);
            if failing.load(Ordering::SeqCst) {
                Err("the note store failed".to_owned())
            } else {
                Ok(())
            }
        })
    };
    let options = LogOptions {
        before_write: Some(hook),
        ..LogOptions::new(ORIGIN)
    };
    let (log, _) = open(dir.path(), &key, options).expect("open");
    log.append_blocking(entry(0)).expect("append");
    let after_first = std::fs::metadata(last_segment(dir.path()))
        .expect("segment")
        .len();
    log.append_blocking(entry(1)).expect("append");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        sizes.lock().expect("sizes")[1],
        after_first,
        "the second batch was written before its hook ran"
    );

    failing.store(true, Ordering::SeqCst);
    match log.append_blocking(entry(2)) {
        Err(AppendError::Failed(why)) => assert_eq!(why, "the note store failed"),
        other => panic!("appended despite the hook: {other:?}"),
    }
    assert_eq!(log.size(), 2);
    // The log itself is fine: once the hook succeeds, appends do too.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(log.append_blocking(entry(3)).expect("append").index, 2);
}

/// Appends entries `from..to`, one batch (and one commit frame) each, and returns the newest
/// checkpoint note.
fn append_range(log: &AuditLog, from: u64, to: u64) -> String {
    for n in from..to {
        log.append_blocking(entry(n)).expect("append");
    }
    log.checkpoint().note.clone()
}

/// A closed log of `entries` entries, one batch (and commit frame) each: its folder, its key
/// and its root.
fn closed_log(entries: u64, options: LogOptions) -> (tempfile::TempDir, Signer, Hash) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let (log, _) = open(dir.path(), &key, options).expect("open");
    append_range(&log, 0, entries);
    let root = log.checkpoint().checkpoint.root;
    log.close().expect("close");
    (dir, key, root)
}

#[test]
fn a_zero_length_or_garbled_checkpoint_file_is_rebuilt_from_the_segments() {
    // A checkpoint file replaced without a sync can be left empty by a power cut; whatever
    // state it is in, it is derived, so the log opens and writes a good one.
    for (name, contents) in [
        ("empty", Vec::new()),
        ("torn", b"casegate.test/audit\n12\n".to_vec()),
        ("garbage", vec![0xff, 0x00, 0x17]),
    ] {
        let (dir, key, root) = closed_log(12, small_segments());
        fs::write(dir.path().join(CHECKPOINT), &contents).expect("damage");
        fs::remove_file(dir.path().join(CLEAN)).expect("unmark");

        let (log, recovery) = open(dir.path(), &key, small_segments())
            .unwrap_or_else(|e| panic!("{name} checkpoint file: {e}"));
        assert_eq!(recovery.size, 12, "{name}");
        assert_eq!(recovery.acknowledged, 12, "{name}: from the commit frames");
        assert!(recovery.checkpoint_file_rebuilt.is_some(), "{name}");
        assert_eq!(log.checkpoint().checkpoint.root, root, "{name}");
        let on_file = read_checkpoint(dir.path(), &key.verifier())
            .expect("readable")
            .expect("rewritten");
        assert_eq!(on_file.checkpoint.size, 12, "{name}");
    }
}

#[test]
fn a_lagging_checkpoint_file_does_not_let_recovery_cut_an_acknowledged_record() {
    // Record 9 was synced and its caller handed a checkpoint of size 10; the checkpoint file
    // still says 6. A flaw in record 9 must refuse to open (keeping the bytes), never be cut
    // as a torn tail: the next append would re-use index 9 and fork the log.
    for damage in ["payload", "length field"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = signer();
        let (log, _) = open(dir.path(), &key, LogOptions::new(ORIGIN)).expect("open");
        let at_six = append_range(&log, 0, 6);
        append_range(&log, 6, 10);
        log.close().expect("close");
        fs::write(dir.path().join(CHECKPOINT), at_six).expect("lagging checkpoint");
        let path = last_segment(dir.path());
        let frame = record_offset(dir.path(), 9);
        let at = match damage {
            "payload" => frame + segment::FRAME_HEADER_LEN + 2,
            _ => frame,
        };
        let mut bytes = fs::read(&path).expect("read");
        bytes[at] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        fs::remove_file(dir.path().join(CLEAN)).expect("unmark");

        match open(dir.path(), &key, LogOptions::new(ORIGIN)) {
            Err(OpenError::Damaged { index, .. }) => assert_eq!(index, 9, "{damage}"),
            Ok((log, recovery)) => panic!(
                "{damage}: opened at size {} (cut {} bytes): the log forked",
                log.size(),
                recovery.discarded_bytes
            ),
            Err(other) => panic!("{damage}: expected damage at 9, got {other}"),
        }
        assert_eq!(
            fs::read(&path).expect("read"),
            bytes,
            "{damage}: bytes kept"
        );
    }
}

#[test]
fn a_torn_batch_after_the_last_commit_frame_is_cut() {
    let (dir, key, _) = closed_log(10, LogOptions::new(ORIGIN));
    // A batch whose write never completed: whole records, no commit frame, then half a record.
    let mut torn = Vec::new();
    segment::encode_frame(10, &entry(10), &mut torn);
    segment::encode_frame(11, &entry(11), &mut torn);
    let half = torn.len() - 10;
    torn.truncate(half);
    OpenOptions::new()
        .append(true)
        .open(last_segment(dir.path()))
        .expect("segment")
        .write_all(&torn)
        .expect("tear");
    fs::remove_file(dir.path().join(CLEAN)).expect("unmark");

    let (log, recovery) = open(dir.path(), &key, LogOptions::new(ORIGIN)).expect("recovers");
    assert_eq!(recovery.acknowledged, 10);
    // The whole record 10 stays (it is intact); the half of 11 goes.
    assert_eq!(recovery.size, 11);
    assert_eq!(
        recovery.discarded_bytes,
        (half as u64) - segment::frame_len(entry(10).len())
    );
    assert_eq!(log.append_blocking(entry(11)).expect("append").index, 11);
}

#[test]
fn a_commit_frame_that_contradicts_the_records_refuses_to_open() {
    let (dir, key, _) = closed_log(5, LogOptions::new(ORIGIN));
    fs::remove_file(dir.path().join(CHECKPOINT)).expect("no checkpoint file");
    fs::remove_file(dir.path().join(CLEAN)).expect("unmark");
    // A commit frame naming size 5 with another root.
    let mut frame = Vec::new();
    segment::encode_commit(5, &[9u8; 32], &mut frame);
    OpenOptions::new()
        .append(true)
        .open(last_segment(dir.path()))
        .expect("segment")
        .write_all(&frame)
        .expect("append");
    assert!(matches!(
        open(dir.path(), &key, LogOptions::new(ORIGIN)),
        Err(OpenError::CommitMismatch { size: 5 })
    ));
}

#[test]
fn a_segment_from_before_commit_frames_opens_and_is_not_appended_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer();
    let seg_dir = dir.path().join("segments");
    fs::create_dir_all(&seg_dir).expect("dirs");
    let mut old = segment::header(0).to_vec();
    old[..8].copy_from_slice(segment::MAGIC_V1);
    for n in 0..3 {
        segment::encode_frame(n, &entry(n), &mut old);
    }
    fs::write(seg_dir.join(segment::file_name(0)), &old).expect("old segment");

    let (log, recovery) = open(dir.path(), &key, LogOptions::new(ORIGIN)).expect("opens");
    assert_eq!(recovery.size, 3);
    assert_eq!(log.entry(2).expect("read"), entry(2));
    assert_eq!(log.append_blocking(entry(3)).expect("append").index, 3);
    log.close().expect("close");
    assert_eq!(
        fs::read(seg_dir.join(segment::file_name(0))).expect("read"),
        old,
        "the old segment is left as it was"
    );
    let segments = segment::list(&seg_dir).expect("list");
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[1].0, 3);
    let (log, _) = open(dir.path(), &key, LogOptions::new(ORIGIN)).expect("reopens");
    assert_eq!(log.size(), 4);
}

#[test]
fn after_a_clean_shutdown_derived_files_and_segments_not_as_left_are_rebuilt_or_refused() {
    let build = || closed_log(40, small_segments());

    // Derived files changed after the clean shutdown: rebuilt, and the proofs are right.
    for damage in ["tree", "offsets", "old marker"] {
        let (dir, key, root) = build();
        match damage {
            "tree" => {
                let path = dir.path().join("tree/level-00");
                let mut bytes = fs::read(&path).expect("read");
                bytes[..64].iter_mut().for_each(|b| *b ^= 0x5a);
                fs::write(&path, bytes).expect("write");
            }
            "offsets" => {
                let path = dir.path().join("offsets");
                let mut bytes = fs::read(&path).expect("read");
                bytes[..80].iter_mut().for_each(|b| *b = 0);
                fs::write(&path, bytes).expect("write");
            }
            _ => fs::write(dir.path().join(CLEAN), "40\n").expect("marker"),
        }
        let (log, recovery) =
            open(dir.path(), &key, small_segments()).unwrap_or_else(|e| panic!("{damage}: {e}"));
        assert!(!recovery.clean, "{damage}: the derived files were trusted");
        assert_eq!(log.root(40).expect("root"), root, "{damage}");
        for index in [0, 9, 39] {
            assert_eq!(log.entry(index).expect("read"), entry(index), "{damage}");
            let proof = log.inclusion_proof(index, 40).expect("proof");
            let leaf = merkle::leaf_hash(&entry(index));
            merkle::verify_inclusion(&leaf, index, 40, &proof, &root)
                .unwrap_or_else(|e| panic!("{damage}: proof of {index}: {e:?}"));
        }
    }

    // A segment lost after the clean shutdown: refused, naming the first missing index.
    let (dir, key, _) = build();
    let segments = segment::list(&dir.path().join("segments")).expect("list");
    let (first, path) = &segments[1];
    fs::remove_file(path).expect("lose a segment");
    match open(dir.path(), &key, small_segments()) {
        Err(OpenError::Damaged { index, .. }) => assert_eq!(index, *first),
        other => panic!(
            "a log with a segment missing opened: {:?}",
            other.map(|(_, r)| r)
        ),
    }
}

/// The segment log in a temporary folder of its own per log, with one signing key per log.
struct Embedded(Vec<(tempfile::TempDir, Signer)>);

impl crate::storage::conformance::Harness for Embedded {
    type Log = AuditLog;

    fn fresh(&mut self) -> AuditLog {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = signer();
        let (log, _) = open(dir.path(), &key, LogOptions::new(ORIGIN)).expect("open");
        self.0.push((dir, key));
        log
    }

    fn reopen(&mut self, log: AuditLog) -> AuditLog {
        log.close().expect("close");
        drop(log);
        let (dir, key) = self.0.last().expect("a log was opened");
        open(dir.path(), key, LogOptions::new(ORIGIN))
            .expect("reopen")
            .0
    }
}

#[test]
fn the_segment_log_meets_the_verifiable_log_expectations() {
    crate::storage::conformance::run(&mut Embedded(Vec::new()));
}
