use std::fs;

use super::*;
use crate::{
    checkpoint::Signer,
    entry::{Entry, EntryKind, Fields},
    log::{AuditLog, LogOptions},
};

const ORIGIN: &str = "casegate.test/audit";

fn entry(n: u64) -> Vec<u8> {
    with_request(n as i64, format!("request-{n}"))
}

/// An entry at `time` naming request `id`.
fn with_request(time: i64, id: String) -> Vec<u8> {
    let fields = Fields {
        request_id: Some(id),
        ..Fields::default()
    };
    Entry::from_fields(EntryKind::DisclosurePermitted, time, fields)
        .encode()
        .expect("encodes")
}

/// A closed log of `n` entries; returns the verifier and the checkpoint note after `early`.
fn log_with(dir: &Path, n: u64, early: u64) -> (Signer, String) {
    let signer = Signer::generate(ORIGIN).expect("key");
    let copy = Signer::from_skey(&signer.to_skey()).expect("copy");
    let options = LogOptions {
        segment_bytes: 2048,
        ..LogOptions::new(ORIGIN)
    };
    let (log, _) = AuditLog::open(dir, copy, options).expect("open");
    let mut early_note = String::new();
    for i in 0..n {
        let appended = log.append_blocking(entry(i)).expect("append");
        if i + 1 == early {
            early_note = appended.checkpoint.note.clone();
        }
    }
    log.close().expect("close");
    (signer, early_note)
}

#[test]
fn a_sound_log_verifies_and_is_consistent_with_an_older_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, early) = log_with(dir.path(), 120, 30);
    let report = verify(dir.path(), &signer.verifier(), Some(&early)).expect("verifies");
    assert_eq!(report.entries, 120);
    assert_eq!(report.checkpoint.size, 120);
    assert_eq!(report.consistent_with, Some(30));
    assert_eq!((report.uncovered, report.torn_tail_bytes), (0, 0));
}

#[test]
fn rewritten_history_with_fresh_checksums_is_caught_by_the_roots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, early) = log_with(dir.path(), 20, 5);
    // Rewrite record 2 consistently (valid frame, valid checksum) and re-sign nothing.
    let segments = segment::list(&dir.path().join("segments")).expect("list");
    let (first, path) = &segments[0];
    let bytes = fs::read(path).expect("read");
    let mut rebuilt = segment::header(*first).to_vec();
    segment::scan(&bytes, *first, |index, _, payload| {
        let payload = if index == 2 {
            with_request(2, "request-forged".into())
        } else {
            payload.to_vec()
        };
        segment::encode_frame(index, &payload, &mut rebuilt);
    });
    fs::write(path, rebuilt).expect("write");
    assert!(matches!(
        verify(dir.path(), &signer.verifier(), None),
        Err(Failure::RootMismatch(20))
    ));
    // An attacker who also holds no key cannot fix the checkpoint, and the trusted older
    // checkpoint independently shows the rewrite.
    let trusted_only = verify(dir.path(), &signer.verifier(), Some(&early));
    assert!(trusted_only.is_err());
}

#[test]
fn an_entry_time_going_backwards_is_flagged_even_under_a_valid_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, _) = log_with(dir.path(), 12, 0);
    // Entry 7 rewritten to a time before entry 6's, and the checkpoint re-signed over the new
    // records, as a key holder rewriting history would: roots and signature all verify.
    let segments = segment::list(&dir.path().join("segments")).expect("list");
    let mut range = CompactRange::new();
    for (first, path) in &segments {
        let bytes = fs::read(path).expect("read");
        let mut rebuilt = segment::header(*first).to_vec();
        segment::scan(&bytes, *first, |index, _, payload| {
            let payload = if index == 7 {
                with_request(3, "request-7".into())
            } else {
                payload.to_vec()
            };
            range.append(merkle::leaf_hash(&payload), |_, _, _| {});
            segment::encode_frame(index, &payload, &mut rebuilt);
        });
        fs::write(path, rebuilt).expect("write");
    }
    let resigned = signer.sign(&Checkpoint {
        origin: ORIGIN.into(),
        size: range.size(),
        root: range.root(),
    });
    fs::write(dir.path().join("checkpoint"), &resigned.note).expect("write");
    let failure = verify(dir.path(), &signer.verifier(), None).expect_err("flagged");
    assert!(
        matches!(
            failure,
            Failure::TimeWentBack {
                index: 7,
                earlier_by_micros: 3
            }
        ),
        "{failure}"
    );
    assert_eq!(failure.index(), Some(7));
}

#[test]
fn records_after_the_checkpoint_and_a_torn_tail_are_reported_not_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, _) = log_with(dir.path(), 10, 0);
    let note = fs::read_to_string(dir.path().join("checkpoint")).expect("checkpoint");
    let segments = segment::list(&dir.path().join("segments")).expect("list");
    let path = &segments.last().expect("segment").1;
    let mut bytes = fs::read(path).expect("read");
    segment::encode_frame(10, &entry(10), &mut bytes);
    let mut torn = Vec::new();
    segment::encode_frame(11, &entry(11), &mut torn);
    bytes.extend_from_slice(&torn[..torn.len() - 3]);
    fs::write(path, bytes).expect("write");
    let report = verify(dir.path(), &signer.verifier(), Some(&note)).expect("verifies");
    assert_eq!((report.entries, report.uncovered), (11, 1));
    assert_eq!(report.torn_tail_bytes, torn.len() as u64 - 3);
}

/// `audit verify` checks the newest checkpoint's origin against the key's name: the same key's
/// signature over another origin (with this log's size and root) is not this log's checkpoint.
#[test]
fn a_checkpoint_for_another_origin_signed_by_the_same_key_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, _) = log_with(dir.path(), 12, 0);
    let path = dir.path().join("checkpoint");
    let note = fs::read_to_string(&path).expect("checkpoint");
    let verifier = signer.verifier();
    let mut own = verifier.verify(&note).expect("own checkpoint");
    own.origin = "other.example/log".into();
    fs::write(&path, signer.sign(&own).note).expect("write");
    let failure = verify(dir.path(), &verifier, None).expect_err("another origin");
    assert!(
        matches!(
            failure,
            Failure::Checkpoint(CheckpointError::OriginMismatch { .. })
        ),
        "{failure}"
    );
}

/// The export text of the first `n` entries of `entry(..)` under a checkpoint `signer` signs.
fn export(signer: &Signer, n: u64, payload: impl Fn(u64) -> Vec<u8>) -> String {
    use base64::Engine;
    let mut range = CompactRange::new();
    let mut text = format!("{EXPORT_HEADER}\n");
    for i in 0..n {
        let bytes = payload(i);
        range.append(merkle::leaf_hash(&bytes), |_, _, _| {});
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        text.push('\n');
    }
    let note = signer.sign(&Checkpoint {
        origin: ORIGIN.to_owned(),
        size: range.size(),
        root: range.root(),
    });
    format!("{text}\n{}", note.note)
}

#[test]
fn an_export_verifies_like_the_folder_and_its_faults_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, early) = log_with(dir.path(), 40, 12);
    let text = export(&signer, 40, entry);
    let report = verify_export(&text, &[signer.verifier()], Some(&early)).expect("verifies");
    assert_eq!((report.entries, report.checkpoint.size), (40, 40));
    assert_eq!(report.consistent_with, Some(12));

    // One entry changed after the checkpoint was signed.
    let changed = text.replacen(
        &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, entry(3)),
        &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, entry(4)),
        1,
    );
    assert!(matches!(
        verify_export(&changed, &[signer.verifier()], None),
        Err(Failure::RootMismatch(40) | Failure::TimeWentBack { .. })
    ));
    // The last entry left out.
    let lines: Vec<&str> = text.lines().collect();
    let short = format!("{}\n", [&lines[..40], &lines[41..]].concat().join("\n"));
    assert!(matches!(
        verify_export(&short, &[signer.verifier()], None),
        Err(Failure::Truncated {
            size: 39,
            checkpoint: 40
        })
    ));
    // Another log's history under the same key: not consistent with the trusted checkpoint.
    let other = export(&signer, 40, |i| entry(i + 1000));
    assert!(matches!(
        verify_export(&other, &[signer.verifier()], Some(&early)),
        Err(Failure::Inconsistent { trusted: 12, .. })
    ));
    // An empty log's export: no entries, the blank line at once, then the note.
    let empty = export(&signer, 0, entry);
    let report = verify_export(&empty, &[signer.verifier()], None).expect("an empty log verifies");
    assert_eq!((report.entries, report.checkpoint.size), (0, 0));
    // Not an export at all.
    assert!(matches!(
        verify_export("hello\n", &[signer.verifier()], None),
        Err(Failure::Export(_))
    ));
    // An unknown key.
    let stranger = Signer::generate(ORIGIN).expect("key");
    assert!(matches!(
        verify_export(&text, &[stranger.verifier()], None),
        Err(Failure::Checkpoint(_))
    ));
}
