//! The expectations every [`VerifiableLog`] implementation meets, written once: the embedded
//! segment log runs them in its tests, and any other implementation runs the same [`run`].
//!
//! Each case starts from an empty log ([`Harness::fresh`]) and panics, naming what it
//! expected, at the first expectation that fails.

use std::sync::{Arc, Mutex};

use super::VerifiableLog;
use crate::{
    entry::{Entry, EntryKind, Fields},
    log::{AppendError, ReadError},
    merkle::{self, verify_consistency, verify_inclusion},
    segment::MAX_ENTRY_BYTES,
};

/// Opens the logs a run needs.
pub trait Harness {
    /// The implementation under test.
    type Log: VerifiableLog;
    /// An empty log of its own.
    fn fresh(&mut self) -> Self::Log;
    /// `log` closed and opened again over the same data, as after a restart.
    fn reopen(&mut self, log: Self::Log) -> Self::Log;
}

/// 2027-01-15T08:00:00Z in microseconds since the Unix epoch, plus `n`.
fn entry(n: u64) -> Vec<u8> {
    let fields = Fields {
        request_id: Some(format!("request-{n}")),
        ..Fields::default()
    };
    let time = 1_800_000_000_000_000 + i64::try_from(n).expect("small");
    Entry::from_fields(EntryKind::AuditQueried, time, fields)
        .encode()
        .expect("encode")
}

fn append_n<L: VerifiableLog>(log: &L, from: u64, n: u64) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| {
            let bytes = entry(i);
            let appended = log.append_blocking(bytes.clone()).expect("append");
            assert_eq!(appended.index, i, "contiguous index");
            assert_eq!(
                appended.leaf_hash,
                merkle::leaf_hash(&bytes),
                "the RFC 6962 leaf hash"
            );
            assert!(
                appended.checkpoint.checkpoint.size > i,
                "the receipt's checkpoint covers the entry"
            );
            bytes
        })
        .collect()
}

/// Every proof of a log of `size` entries verifies against its roots.
fn proofs_hold<L: VerifiableLog>(log: &L, size: u64) {
    for s in 1..=size {
        let root = log.root(s).expect("root");
        for i in 0..s {
            let proof = log.inclusion_proof(i, s).expect("inclusion proof");
            let leaf = log.leaf_hash(i).expect("leaf");
            verify_inclusion(&leaf, i, s, &proof, &root)
                .unwrap_or_else(|e| panic!("inclusion of {i} in {s}: {e}"));
        }
        for s1 in 1..=s {
            let proof = log.consistency_proof(s1, s).expect("consistency proof");
            verify_consistency(s1, s, &proof, &log.root(s1).expect("root"), &root)
                .unwrap_or_else(|e| panic!("consistency {s1} → {s}: {e}"));
        }
    }
}

/// Runs every case.
pub fn run<H: Harness>(harness: &mut H) {
    appends_are_contiguous_durable_and_read_back(harness);
    the_checkpoint_is_signed_and_every_proof_verifies(harness);
    concurrent_appends_get_distinct_contiguous_indexes(harness);
    reads_and_proofs_past_the_size_are_refused(harness);
    an_oversized_entry_is_refused_and_changes_nothing(harness);
    everything_survives_reopening(harness);
    a_closed_log_takes_no_appends(harness);
}

/// Entries come back byte for byte at the indexes their receipts named.
pub fn appends_are_contiguous_durable_and_read_back<H: Harness>(harness: &mut H) {
    let log = harness.fresh();
    assert_eq!(log.size(), 0, "empty");
    assert_eq!(log.newest_time(), None, "no entry time yet");
    let written = append_n(&log, 0, 12);
    assert_eq!(log.size(), 12, "size");
    for (i, bytes) in written.iter().enumerate() {
        assert_eq!(&log.entry(i as u64).expect("entry"), bytes, "entry {i}");
    }
    assert_eq!(
        log.newest_time(),
        Some(1_800_000_000_000_000 + 11),
        "the newest entry's time"
    );
    assert_eq!(log.failure(), None, "healthy");
}

/// The newest checkpoint verifies with the log's key and names its size and root.
pub fn the_checkpoint_is_signed_and_every_proof_verifies<H: Harness>(harness: &mut H) {
    let log = harness.fresh();
    append_n(&log, 0, 9);
    let signed = log.checkpoint();
    let checkpoint = log.verifier().verify(&signed.note).expect("signature");
    assert_eq!(checkpoint, signed.checkpoint, "the note says what it holds");
    assert_eq!(checkpoint.size, 9, "covers every entry");
    assert_eq!(checkpoint.root, log.root(9).expect("root"), "its root");
    proofs_hold(&log, 9);
}

/// Appends from many threads at once each get their own index; none is lost. (Entry times
/// must not go back, so each thread takes its time and queues its entry under one lock, then
/// waits for durability outside it, alongside the others.)
pub fn concurrent_appends_get_distinct_contiguous_indexes<H: Harness>(harness: &mut H) {
    let log = Arc::new(harness.fresh());
    let next = Arc::new(Mutex::new(0u64));
    let indexes = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (log, next, indexes) = (log.clone(), next.clone(), indexes.clone());
            scope.spawn(move || {
                for _ in 0..10 {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    {
                        let mut next = next.lock().expect("next");
                        let done: super::Done = Box::new(move |r| {
                            let _ = tx.send(r);
                        });
                        log.append(entry(*next), done).expect("queued");
                        *next += 1;
                    }
                    let appended = rx.recv().expect("answered").expect("durable");
                    indexes.lock().expect("indexes").push(appended.index);
                }
            });
        }
    });
    let mut indexes = indexes.lock().expect("indexes").clone();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..40).collect::<Vec<u64>>(), "0..40, each once");
    assert_eq!(log.size(), 40, "size");
    proofs_hold(log.as_ref(), 40);
}

/// Nothing is read or proven beyond what the log holds.
pub fn reads_and_proofs_past_the_size_are_refused<H: Harness>(harness: &mut H) {
    let log = harness.fresh();
    append_n(&log, 0, 5);
    assert!(
        matches!(log.entry(5), Err(ReadError::OutOfRange { .. })),
        "entry at the size"
    );
    assert!(
        matches!(log.leaf_hash(7), Err(ReadError::OutOfRange { .. })),
        "leaf past the size"
    );
    assert!(
        matches!(log.root(6), Err(ReadError::OutOfRange { .. })),
        "root past the size"
    );
    assert!(
        matches!(log.inclusion_proof(2, 6), Err(ReadError::OutOfRange { .. })),
        "inclusion in a tree larger than the log"
    );
    assert!(
        matches!(log.inclusion_proof(4, 3), Err(ReadError::OutOfRange { .. })),
        "inclusion of an index outside its tree"
    );
    assert!(
        matches!(log.consistency_proof(2, 6), Err(ReadError::Sizes(2, 6))),
        "consistency with a tree larger than the log"
    );
    assert!(
        matches!(log.consistency_proof(4, 3), Err(ReadError::Sizes(4, 3))),
        "consistency backwards"
    );
}

/// An entry over the size limit is refused before it is queued.
pub fn an_oversized_entry_is_refused_and_changes_nothing<H: Harness>(harness: &mut H) {
    let log = harness.fresh();
    append_n(&log, 0, 2);
    assert!(
        matches!(
            log.append_blocking(vec![0; MAX_ENTRY_BYTES + 1]),
            Err(AppendError::TooLarge(_))
        ),
        "over {MAX_ENTRY_BYTES} bytes"
    );
    assert_eq!(log.size(), 2, "nothing appended");
    append_n(&log, 2, 1);
}

/// Entries, tree and checkpoint are durable across a restart, and appends go on from there.
pub fn everything_survives_reopening<H: Harness>(harness: &mut H) {
    let log = harness.fresh();
    let written = append_n(&log, 0, 7);
    let (root, note) = (log.root(7).expect("root"), log.checkpoint().note.clone());
    let log = harness.reopen(log);
    assert_eq!(log.size(), 7, "size");
    assert_eq!(log.root(7).expect("root"), root, "root");
    for (i, bytes) in written.iter().enumerate() {
        assert_eq!(&log.entry(i as u64).expect("entry"), bytes, "entry {i}");
    }
    let checkpoint = log
        .verifier()
        .verify(&log.checkpoint().note)
        .expect("signature");
    assert_eq!((checkpoint.size, checkpoint.root), (7, root), "checkpoint");
    let before = log.verifier().verify(&note).expect("the earlier note");
    assert_eq!(before.size, 7, "the earlier checkpoint still verifies");
    append_n(&log, 7, 3);
    proofs_hold(&log, 10);
}

/// After `close`, appends fail with `Closed`; reads still answer.
pub fn a_closed_log_takes_no_appends<H: Harness>(harness: &mut H) {
    let log = harness.fresh();
    append_n(&log, 0, 3);
    log.close().expect("close");
    log.close().expect("closing twice");
    assert!(
        matches!(log.append_blocking(entry(3)), Err(AppendError::Closed)),
        "closed"
    );
    assert_eq!(log.size(), 3, "reads after close");
}
