use super::*;

/// Organisation numbers with valid check digits (synthetic).
const SENDER: &str = "910000063";
const RECIPIENT: &str = "910000071";

fn store() -> (tempfile::TempDir, NoteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = NoteStore::open(&dir.path().join("notes")).expect("open");
    (dir, store)
}

fn note(disclosed_at: i64) -> Note {
    Note {
        id: uuid::Uuid::now_v7(),
        state: NoteState::Pending,
        request_id: format!("request-{disclosed_at}"),
        fingerprint: [1; 32],
        sender: Actor {
            orgnr: SENDER.parse().expect("orgnr"),
            user_id: "sender-user".into(),
            role: Role::NavCounsellor,
        },
        recipient_org: RECIPIENT.parse().expect("orgnr"),
        recipient_role: None,
        category: "job_progress".parse().expect("category"),
        purpose: "ips_follow_up".parse().expect("purpose"),
        content_type: "text/plain".into(),
        consent_id: ConsentId::generate(),
        consent_version: 1,
        consent_record_hash: [2; 32],
        content_sha256: [3; 32],
        subject_pseudonym: [4; 32],
        disclosed_at: Timestamp(disclosed_at),
        audit_index: None,
        log_size_hint: 0,
        delivered: false,
        acknowledged_at: None,
        purge_after: None,
        sealed: None,
    }
}

/// A note staged and made deliverable, as `Disclose` leaves it.
fn deliverable(store: &NoteStore, disclosed_at: i64) -> Note {
    let pending = note(disclosed_at);
    store.stage_pending(&pending).expect("stage");
    store.make_deliverable(pending, 7).expect("deliverable")
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
    assert!(store.waiting.is_empty() && store.retained.is_empty());
}

#[test]
fn a_key_left_by_an_interrupted_change_is_dropped_but_one_of_a_change_in_progress_stays() {
    let (_dir, store) = store();
    // Acknowledged, but the waiting key of its deliverable days is still there.
    let read = acknowledged(&store, 1_000, FAR);
    let stale = time_key(read.disclosed_at, &read.id);
    store.waiting.insert(stale, &[]).expect("insert");
    // Pending, and its waiting key already written by `make_deliverable`.
    let pending = note(1_000);
    store.stage_pending(&pending).expect("stage");
    let early = time_key(pending.disclosed_at, &pending.id);
    store.waiting.insert(early, &[]).expect("insert");

    assert!(store.due(FAR, Timestamp(0), 10).expect("due").is_empty());
    assert!(!store.waiting.contains_key(stale).expect("read"));
    assert!(store.waiting.contains_key(early).expect("read"));
}

#[test]
fn recovery_puts_back_the_index_keys_a_note_calls_for() {
    let (_dir, store) = store();
    let waiting = deliverable(&store, 1_000);
    let read = acknowledged(&store, 1_000, Timestamp(2_000));
    let pending = note(1_000);
    store.stage_pending(&pending).expect("stage");
    // As if the changes had been cut short, or the store predated the index.
    for tree in [
        &store.inbox,
        &store.waiting,
        &store.retained,
        &store.by_consent,
    ] {
        tree.clear().expect("clear");
    }

    let found = store.repair_index().expect("repair");
    assert_eq!(
        found.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![pending.id]
    );
    assert_eq!(
        ids(&store.due(FAR, FAR, 10).expect("due")),
        vec![
            (read.id, Expiry::RetentionElapsed),
            (waiting.id, Expiry::TtlElapsed)
        ]
    );
    let inbox = store
        .inbox_page(waiting.recipient_org, None, 10)
        .expect("inbox");
    assert_eq!(
        inbox.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![waiting.id]
    );
    for consent in [waiting.consent_id, pending.consent_id] {
        assert_eq!(
            store.undelivered_for(&consent).expect("by consent").len(),
            1
        );
    }
}

#[test]
fn the_inbox_is_read_in_pages_in_disclosure_order_and_holds_only_deliverable_notes() {
    let (_dir, store) = store();
    let notes: Vec<Note> = (0..5).map(|i| deliverable(&store, 1_000 + i)).collect();
    // A pending note whose inbox key is already written (a change in progress).
    let pending = note(2_000);
    store.stage_pending(&pending).expect("stage");
    store
        .inbox
        .insert(NoteStore::inbox_key(&pending), &[])
        .expect("insert");

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
