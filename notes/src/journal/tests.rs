use super::*;
pub(crate) use crate::storage::model::{deliverable, note};

/// Organisation numbers with valid check digits (synthetic).
const SENDER: &str = "910000063";
const RECIPIENT: &str = "910000071";

fn store() -> (tempfile::TempDir, NoteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = NoteStore::open(&dir.path().join("notes")).expect("open");
    (dir, store)
}

/// A note made deliverable, then acknowledged with its body kept until `purge_after`.
fn acknowledged(store: &NoteStore, disclosed_at: i64, purge_after: Timestamp) -> Note {
    let note = deliverable(store, disclosed_at);
    store
        .acknowledge(&note.id, Timestamp(disclosed_at + 500), purge_after)
        .expect("acknowledge")
}

fn ids(due: &[(Note, Expiry)]) -> Vec<(uuid::Uuid, Expiry)> {
    due.iter().map(|(n, e)| (n.id, *e)).collect()
}

const FAR: Timestamp = Timestamp(i64::MAX);

#[test]
fn unacknowledged_notes_come_due_after_the_ttl_oldest_first_and_at_most_the_limit() {
    let (_dir, store) = store();
    let a = deliverable(&store, 1_000);
    let b = deliverable(&store, 2_000);
    let _c = deliverable(&store, 3_000);
    let due = store.due(Timestamp(2_000), FAR, 10).expect("due");
    assert_eq!(
        ids(&due),
        vec![(a.id, Expiry::TtlElapsed), (b.id, Expiry::TtlElapsed)]
    );
    assert_eq!(
        ids(&store.due(Timestamp(2_000), FAR, 1).expect("due")),
        vec![(a.id, Expiry::TtlElapsed)]
    );
    assert!(store.due(Timestamp(999), FAR, 10).expect("due").is_empty());
    assert_eq!(store.backlog(), 3);
}

#[test]
fn acknowledged_notes_come_due_at_their_purge_time_and_no_longer_by_ttl() {
    let (_dir, store) = store();
    let read = acknowledged(&store, 1_000, Timestamp(5_000));
    assert!(
        store
            .due(FAR, Timestamp(4_999), 10)
            .expect("due")
            .is_empty()
    );
    assert_eq!(
        ids(&store.due(FAR, Timestamp(5_000), 10).expect("due")),
        vec![(read.id, Expiry::RetentionElapsed)]
    );
    assert_eq!(store.backlog(), 0);
}

#[test]
fn purged_notes_are_never_due_again() {
    let (_dir, store) = store();
    let unread = deliverable(&store, 1_000);
    let read = acknowledged(&store, 1_000, Timestamp(2_000));
    assert_eq!(store.due(FAR, FAR, 10).expect("due").len(), 2);
    store.purge(&unread.id).expect("purge");
    store.purge(&read.id).expect("purge");
    assert!(store.due(FAR, FAR, 10).expect("due").is_empty());
    let state = store.state();
    assert!(state.waiting.is_empty() && state.retained.is_empty());
}

#[test]
fn the_inbox_is_read_in_pages_in_disclosure_order_and_holds_only_deliverable_notes() {
    let (_dir, store) = store();
    let notes: Vec<Note> = (0..5).map(|i| deliverable(&store, 1_000 + i)).collect();
    // Pending and acknowledged notes are not in the inbox.
    store.stage_pending(&note(2_000)).expect("stage");
    acknowledged(&store, 3_000, FAR);

    let org = notes[0].recipient_org;
    let mut read = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store.inbox_page(org, after, 2).expect("page");
        pages += 1;
        after = page.last().map(|n| n.id);
        let done = page.len() < 2;
        read.extend(page.into_iter().map(|n| n.id));
        if done {
            break;
        }
    }
    assert_eq!(read, notes.iter().map(|n| n.id).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    let other: OrgNumber = SENDER.parse().expect("orgnr");
    assert!(store.inbox_page(other, None, 10).expect("page").is_empty());
}

/// The journal files in the store's folder.
fn files(dir: &tempfile::TempDir) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("notes"))
        .expect("folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(file_number)
                .is_some()
        })
        .collect();
    files.sort();
    files
}

fn reopen(dir: &tempfile::TempDir, store: NoteStore) -> NoteStore {
    drop(store);
    NoteStore::open(&dir.path().join("notes")).expect("reopen")
}

#[test]
fn a_reopened_store_holds_every_note_index_and_request_id_as_before() {
    let (dir, store) = store();
    let waiting = deliverable(&store, 1_000);
    let read = acknowledged(&store, 1_001, Timestamp(2_000));
    let pending = note(1_002);
    store.stage_pending(&pending).expect("stage");
    let purged = deliverable(&store, 1_003);
    store.purge(&purged.id).expect("purge");
    let forgotten = note(1_004);
    store.stage_pending(&forgotten).expect("stage");
    store.drop_pending(&forgotten).expect("forget");
    let read = store.get(&read.id).expect("read");

    let store = reopen(&dir, store);
    assert_eq!(store.get(&waiting.id).expect("waiting"), waiting);
    assert_eq!(store.get(&read.id).expect("read"), read);
    assert_eq!(store.get(&pending.id).expect("pending"), pending);
    let purged = store.get(&purged.id).expect("purged");
    assert_eq!((purged.state, purged.sealed), (NoteState::Purged, None));
    assert!(matches!(store.get(&forgotten.id), Err(NoteError::NotFound)));
    assert_eq!(
        ids(&store.due(FAR, FAR, 10).expect("due")),
        vec![
            (read.id, Expiry::RetentionElapsed),
            (waiting.id, Expiry::TtlElapsed)
        ]
    );
    let org = waiting.recipient_org;
    let inbox = store.inbox_page(org, None, 10).expect("inbox");
    assert_eq!(inbox, vec![waiting.clone()]);
    for consent in [waiting.consent_id, pending.consent_id] {
        assert_eq!(store.undelivered_for(&consent).expect("consent").len(), 1);
    }
    assert_eq!(store.pending().expect("pending"), vec![pending]);
    assert_eq!(store.backlog(), 1);
    // Request ids: a stored note keeps its own; a forgotten note's is free again.
    let sender = waiting.sender.orgnr;
    let fresh = uuid::Uuid::now_v7();
    assert_eq!(
        store
            .reserve(sender, &waiting.request_id, fresh, [9; 32])
            .expect("reserve"),
        Err(Existing {
            id: waiting.id,
            fingerprint: waiting.fingerprint
        })
    );
    assert_eq!(
        store
            .reserve(sender, &forgotten.request_id, fresh, [9; 32])
            .expect("reserve"),
        Ok(())
    );
}

#[test]
fn a_write_cut_short_at_the_end_is_cut_off_and_damage_elsewhere_stops_the_start() {
    let (dir, store) = store();
    let kept = deliverable(&store, 1_000);
    store.flush().expect("flush");
    let newest = files(&dir).pop().expect("a file");
    let whole = std::fs::metadata(&newest).expect("size").len();
    // A record cut short: its header promises more than follows.
    let mut torn = note_record(&note(1_001));
    torn.truncate(torn.len() / 2);
    let mut file = OpenOptions::new().append(true).open(&newest).expect("open");
    std::io::Write::write_all(&mut file, &torn).expect("append");
    drop(file);

    let store = reopen(&dir, store);
    assert_eq!(std::fs::metadata(&newest).expect("size").len(), whole);
    assert_eq!(store.get(&kept.id).expect("kept"), kept);
    let later = deliverable(&store, 1_002);
    let store = reopen(&dir, store);
    assert_eq!(store.get(&later.id).expect("later"), later);
    drop(store);

    // A damaged byte in a file that is not the newest: not a crash, so no start.
    let small = NoteStore::open_with(&dir.path().join("notes"), 1).expect("open");
    deliverable(&small, 1_003);
    drop(small);
    let files = files(&dir);
    assert!(files.len() >= 2, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&files[0], bytes).expect("write");
    match NoteStore::open(&dir.path().join("notes")) {
        Err(NoteError::Corrupt(why)) => assert!(why.contains("damaged"), "{why}"),
        other => panic!("a damaged journal opened: {other:?}"),
    }
}

#[test]
fn damage_in_the_newest_file_with_synced_records_after_it_is_refused_not_cut() {
    // Only a write cut short ends the newest file; a flaw with intact records after it is
    // damage to notes already acknowledged, which a cut would lose.
    let (dir, store) = store();
    let first = deliverable(&store, 1_000);
    let _second = deliverable(&store, 1_001);
    store.flush().expect("flush");
    drop(store);
    let newest = files(&dir).pop().expect("a file");
    let mut bytes = std::fs::read(&newest).expect("read");
    let in_first = note_record(&first).len() / 2;
    bytes[in_first] ^= 0x55;
    std::fs::write(&newest, &bytes).expect("write");
    match NoteStore::open(&dir.path().join("notes")) {
        Err(NoteError::Corrupt(why)) => {
            assert!(why.contains("intact record"), "{why}");
        }
        other => panic!("a damaged journal opened: {other:?}"),
    }
    assert_eq!(std::fs::read(&newest).expect("read"), bytes, "bytes kept");
}

#[test]
fn a_tail_of_garbage_after_the_last_record_is_cut() {
    // What a disk may leave where a write never finished: bytes of no record at all.
    let (dir, store) = store();
    let kept = deliverable(&store, 1_000);
    store.flush().expect("flush");
    drop(store);
    let newest = files(&dir).pop().expect("a file");
    let whole = std::fs::metadata(&newest).expect("size").len();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let garbage: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut file = OpenOptions::new().append(true).open(&newest).expect("open");
    std::io::Write::write_all(&mut file, &garbage).expect("append");
    drop(file);

    let store = NoteStore::open(&dir.path().join("notes")).expect("opens");
    assert_eq!(std::fs::metadata(&newest).expect("size").len(), whole);
    assert_eq!(store.get(&kept.id).expect("kept"), kept);
}

#[test]
fn a_purged_note_is_not_acknowledged_after_all() {
    let (_dir, store) = store();
    let note = deliverable(&store, 1_000);
    store.purge(&note.id).expect("purge");
    match store.acknowledge(&note.id, Timestamp(2_000), Timestamp(3_000)) {
        Err(NoteError::NotDeliverable(state)) => assert_eq!(state, "purged"),
        other => panic!("a purged note was acknowledged: {other:?}"),
    }
    assert_eq!(store.get(&note.id).expect("get").state, NoteState::Purged);
}

#[test]
fn compaction_deletes_mostly_superseded_files_and_keeps_every_live_note() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes");
    let store = NoteStore::open_with(&path, 8 << 10).expect("open");
    // With sealed bodies, as notes have: a purge leaves a small record, the body superseded.
    let notes: Vec<Note> = (0..40)
        .map(|i| {
            let mut pending = note(1_000 + i);
            pending.sealed = Some(crate::Sealed {
                key_id: "key".into(),
                nonce: [1; 12],
                ciphertext: vec![2; 600],
            });
            store.stage_pending(&pending).expect("stage");
            store.make_deliverable(pending, 7).expect("deliverable")
        })
        .collect();
    let forgotten = note(5_000);
    store.stage_pending(&forgotten).expect("stage");
    store.drop_pending(&forgotten).expect("forget");
    // Every fifth note stays: most files keep a live record or two among superseded ones.
    let kept: Vec<usize> = (0..notes.len()).step_by(5).collect();
    for (i, note) in notes.iter().enumerate() {
        if !kept.contains(&i) {
            store.purge(&note.id).expect("purge");
        }
    }
    let before: Vec<Note> = notes
        .iter()
        .map(|n| store.get(&n.id).expect("note"))
        .collect();
    let bytes = |dir: &tempfile::TempDir| -> u64 {
        files(dir)
            .iter()
            .map(|f| std::fs::metadata(f).expect("size").len())
            .sum()
    };
    let (files_before, bytes_before) = (files(&dir), bytes(&dir));

    let deleted = store.compact().expect("compact");
    assert!(
        deleted > 0,
        "nothing compacted of {} files",
        files_before.len()
    );
    let gone = files_before.iter().filter(|f| !f.exists()).count();
    assert_eq!(gone, deleted);
    assert!(
        bytes(&dir) < bytes_before / 2,
        "{} of {bytes_before} bytes left",
        bytes(&dir)
    );
    for (note, was) in notes.iter().zip(&before) {
        assert_eq!(&store.get(&note.id).expect("note"), was);
    }
    // Once more after a restart: the copies are what is read now.
    let store = reopen(&dir, store);
    for (note, was) in notes.iter().zip(&before) {
        assert_eq!(&store.get(&note.id).expect("note"), was);
    }
    assert!(matches!(store.get(&forgotten.id), Err(NoteError::NotFound)));
    assert_eq!(store.backlog(), kept.len());
    let inbox = store
        .inbox_page(notes[0].recipient_org, None, 100)
        .expect("inbox");
    assert_eq!(
        inbox,
        kept.iter().map(|&i| before[i].clone()).collect::<Vec<_>>()
    );
}

#[test]
fn a_pending_note_purged_meanwhile_is_not_made_deliverable() {
    let (_dir, store) = store();
    let pending = note(1_000);
    store.stage_pending(&pending).expect("stage");
    // Its consent is withdrawn before the audit entry is written.
    store.purge(&pending.id).expect("purge");
    let after = store
        .make_deliverable(pending.clone(), 7)
        .expect("deliverable");
    assert_eq!(after.state, NoteState::Purged);
    assert_eq!(
        store.get(&pending.id).expect("note").state,
        NoteState::Purged
    );
    assert!(
        store
            .inbox_page(pending.recipient_org, None, 10)
            .expect("inbox")
            .is_empty()
    );
}

#[test]
fn a_request_id_is_claimed_until_released_and_kept_once_its_note_is_stored() {
    let (_dir, store) = store();
    let sender: OrgNumber = SENDER.parse().expect("orgnr");
    let (first, second) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert_eq!(
        store
            .reserve(sender, "r-1", first, [1; 32])
            .expect("reserve"),
        Ok(())
    );
    assert_eq!(
        store
            .reserve(sender, "r-1", second, [2; 32])
            .expect("reserve"),
        Err(Existing {
            id: first,
            fingerprint: [1; 32]
        })
    );
    // Another sender's request ids are its own.
    let other: OrgNumber = RECIPIENT.parse().expect("orgnr");
    assert_eq!(
        store
            .reserve(other, "r-1", second, [2; 32])
            .expect("reserve"),
        Ok(())
    );
    store.release(sender, "r-1").expect("release");
    assert_eq!(
        store
            .reserve(sender, "r-1", second, [2; 32])
            .expect("reserve"),
        Ok(())
    );

    let mut stored = note(1_000);
    stored.id = second;
    stored.request_id = "r-1".into();
    stored.fingerprint = [2; 32];
    store.stage_pending(&stored).expect("stage");
    store.release(sender, "r-1").expect("release");
    assert_eq!(
        store
            .reserve(sender, "r-1", first, [1; 32])
            .expect("reserve"),
        Err(Existing {
            id: second,
            fingerprint: [2; 32]
        })
    );
}

#[test]
fn concurrent_changes_to_one_note_are_all_kept() {
    let (_dir, store) = store();
    for i in 0..50 {
        let note = deliverable(&store, 1_000 + i);
        std::thread::scope(|s| {
            s.spawn(|| store.mark_delivered(&note.id).expect("delivered"));
            s.spawn(|| {
                store
                    .acknowledge(&note.id, Timestamp(2_000), FAR)
                    .expect("acknowledge")
            });
        });
        let after = store.get(&note.id).expect("note");
        assert!(after.delivered, "note {i} lost its delivery");
        assert_eq!(after.state, NoteState::Acknowledged, "note {i}");
    }
}

#[test]
fn purged_notes_are_forgotten_after_the_cutoff_and_their_request_ids_freed() {
    let (dir, store) = store();
    let early = deliverable(&store, 1_000);
    store.purge(&early.id).expect("purge");
    let cutoff = Timestamp(now().0);
    let late = deliverable(&store, 1_001);
    store.purge(&late.id).expect("purge");
    let kept = deliverable(&store, 1_002);

    assert_eq!(store.forget_purged(cutoff, 10).expect("forget"), 1);
    assert!(matches!(store.get(&early.id), Err(NoteError::NotFound)));
    assert_eq!(store.get(&late.id).expect("late").state, NoteState::Purged);
    assert_eq!(store.forget_purged(cutoff, 10).expect("forget"), 0);
    let store = reopen(&dir, store);
    assert!(matches!(store.get(&early.id), Err(NoteError::NotFound)));
    assert_eq!(store.get(&kept.id).expect("kept"), kept);
    let sender = early.sender.orgnr;
    let fresh = uuid::Uuid::now_v7();
    assert_eq!(
        store
            .reserve(sender, &early.request_id, fresh, [9; 32])
            .expect("reserve"),
        Ok(())
    );
    assert!(
        store
            .reserve(sender, &late.request_id, fresh, [9; 32])
            .expect("reserve")
            .is_err()
    );
}

#[test]
fn forget_records_outlive_the_older_records_they_cancel_and_no_longer() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Four records to a file.
    let unit = note_record(&note(1_000)).len() as u64;
    let small = 4 * unit + unit / 2;
    let store = NoteStore::open_with(&dir.path().join("notes"), small).expect("open");
    // File 1: a note's pending and deliverable records, then two pending notes — half live,
    // so it is never compacted.
    let old = deliverable(&store, 1_000);
    let pending: Vec<Note> = (0..2)
        .map(|i| {
            let n = note(2_000 + i);
            store.stage_pending(&n).expect("stage");
            n
        })
        .collect();
    // Later files: the first note purged and forgotten, then notes that come and go.
    store.purge(&old.id).expect("purge");
    let now = || Timestamp(now().0);
    assert_eq!(store.forget_purged(now(), 10).expect("forget"), 1);
    let gone: Vec<Note> = (0..6).map(|i| deliverable(&store, 3_000 + i)).collect();
    for note in &gone {
        store.purge(&note.id).expect("purge");
    }
    let kept = deliverable(&store, 4_000);
    let mut store = store;
    while store.compact().expect("compact") > 0 {
        store = reopen_with(&dir, store, small);
    }
    let store = reopen_with(&dir, store, small);
    assert!(
        files(&dir)[0].ends_with(file_name(1)),
        "the oldest file was compacted: the case is not made"
    );
    // Its records of the forgotten note are still there, and still cancelled.
    assert!(matches!(store.get(&old.id), Err(NoteError::NotFound)));
    for note in &pending {
        assert_eq!(&store.get(&note.id).expect("pending"), note);
    }
    assert_eq!(store.get(&kept.id).expect("kept"), kept);

    // Once no older file is left, a forget record has nothing to cancel and goes.
    for note in &pending {
        store.purge(&note.id).expect("purge");
    }
    assert_eq!(
        store.forget_purged(now(), 100).expect("forget"),
        gone.len() + pending.len()
    );
    deliverable(&store, 5_000);
    let mut store = store;
    while store.compact().expect("compact") > 0 {
        store = reopen_with(&dir, store, small);
    }
    assert!(!files(&dir)[0].ends_with(file_name(1)));
    let forgets: usize = store
        .state()
        .files
        .values()
        .map(|f| f.forgotten.len())
        .sum();
    assert!(forgets < 3, "{forgets} forget records kept");
    let store = reopen_with(&dir, store, small);
    for note in pending.iter().chain([&old]) {
        assert!(matches!(store.get(&note.id), Err(NoteError::NotFound)));
    }
    assert_eq!(store.get(&kept.id).expect("kept"), kept);
}

fn reopen_with(dir: &tempfile::TempDir, store: NoteStore, file_bytes: u64) -> NoteStore {
    drop(store);
    NoteStore::open_with(&dir.path().join("notes"), file_bytes).expect("reopen")
}

#[test]
fn a_folder_holding_the_earlier_sled_database_is_refused_not_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes");
    std::fs::create_dir(&path).expect("folder");
    std::fs::write(path.join("conf"), b"segment_size: 524288\n").expect("sled's conf");
    match NoteStore::open(&path) {
        Err(NoteError::Corrupt(why)) => assert!(why.contains("earlier format"), "{why}"),
        other => panic!("opened over an earlier database: {other:?}"),
    }
    assert!(files(&dir).is_empty(), "a journal was begun beside it");
}

#[test]
fn compaction_stops_at_a_damaged_record_rather_than_copy_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = NoteStore::open_with(&dir.path().join("notes"), 8 << 10).expect("open");
    let notes: Vec<Note> = (0..20).map(|i| deliverable(&store, 1_000 + i)).collect();
    for note in &notes[1..] {
        store.purge(&note.id).expect("purge");
    }
    let at = store.state().notes[&notes[0].id].note_at;
    assert_ne!(at.file, store.state().newest_file(), "the case is not made");
    let path = dir.path().join("notes").join(file_name(at.file));
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[at.offset as usize + frame::HEADER_LEN + 10] ^= 0x20;
    std::fs::write(&path, bytes).expect("write");

    match store.compact() {
        Err(NoteError::Corrupt(why)) => assert!(why.contains("damaged"), "{why}"),
        other => panic!("a damaged record was compacted: {other:?}"),
    }
    assert!(
        path.exists(),
        "the file with the damaged record was deleted"
    );
}

#[test]
fn sync_now_leaves_nothing_written_unsynced() {
    let (_dir, store) = store();
    let pending = note(1_000);
    store.stage_pending(&pending).expect("stage");
    assert!(!store.state().unsynced.is_empty());
    store.sync_now().expect("sync");
    assert!(store.state().unsynced.is_empty());
    // A failed store says so to the audit writer, which then writes nothing.
    store.state().failed = Some("disk gone".into());
    assert!(matches!(store.sync_now(), Err(NoteError::Failed(_))));
    assert!(matches!(
        store.stage_pending(&note(1_001)),
        Err(NoteError::Failed(_))
    ));
}

#[test]
fn a_failed_store_reports_its_failure_for_the_gateway_to_stop() {
    let (_dir, store) = store();
    assert_eq!(store.failure(), None);
    store.flush().expect("the flusher runs");
    assert_eq!(store.failure(), None);
    store.state().failed = Some("flush failed: disk gone".into());
    assert_eq!(store.failure().as_deref(), Some("flush failed: disk gone"));
}
