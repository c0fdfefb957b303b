use std::{path::Path, sync::Arc};

use super::*;
use crate::entry::{Entry, EntryKind};

const ORIGIN: &str = "casegate.test/audit";

fn signer() -> Signer {
    // One fixed key per test run is enough; tests that need another key make one.
    Signer::generate(ORIGIN).expect("key")
}

fn entry(n: u64) -> Vec<u8> {
    let mut e = Entry::new(EntryKind::NoteDelivered, n as i64);
    e.detail = Some(format!("entry {n}"));
    e.encode().expect("encodes")
}

/// Entry `n`, stamped at `time` (µs).
fn entry_at(time: i64, n: u64) -> Vec<u8> {
    let mut e = Entry::new(EntryKind::NoteDelivered, time);
    e.detail = Some(format!("entry {n}"));
    e.encode().expect("encodes")
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
    let len = fs::metadata(&path).expect("meta").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len - segment::frame_len(entry(9).len()))
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
    let mut bytes = fs::read(&path).expect("read");
    let frame = segment::frame_len(entry(0).len()) as usize;
    let at = segment::HEADER_LEN as usize + 4 * frame + segment::FRAME_HEADER_LEN;
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
