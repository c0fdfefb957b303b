use super::*;

use crate::storage::conformance::{DAY, NOW, nav as actor, new_consent};

fn subject(n: u16) -> SubjectId {
    (0..200)
        .find_map(|i| {
            SubjectId::synthetic(1 + (n % 28) as u8, 1 + (n / 28 % 12) as u8, 1980, 100 + i)
        })
        .expect("synthetic subject")
}

#[test]
fn grants_versions_and_withdrawals_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (subject(1), subject(2));
    let (v1, v2, other) = {
        let store = ConsentStore::open(dir.path()).expect("open");
        let v1 = store
            .prepare_grant(new_consent(a, "ips_follow_up"), None, NOW)
            .expect("prepare");
        store.commit_grant(&v1).expect("commit");
        let other = store
            .prepare_grant(new_consent(b, "ips_follow_up"), None, NOW)
            .expect("prepare");
        store.commit_grant(&other).expect("commit");
        let v2 = store
            .prepare_grant(
                new_consent(a, "benefit_planning"),
                Some(v1.id),
                Timestamp(NOW.0 + 1),
            )
            .expect("prepare v2");
        assert_eq!((v2.id, v2.version), (v1.id, 2));
        store.commit_grant(&v2).expect("commit v2");
        // The same prepared version cannot be committed twice.
        assert!(matches!(
            store.commit_grant(&v2),
            Err(StoreError::NotActive(_))
        ));
        (v1, v2, other)
    };

    let store = reopen(dir.path());
    let versions = store.for_subject(&a).expect("scan");
    assert_eq!(versions.len(), 2, "both versions kept, only this subject's");
    assert_eq!(versions[0].status, Status::Superseded);
    assert_eq!(versions[1], v2);
    assert_eq!(
        store.get(&v1.id, Some(1)).expect("v1").record_hash(),
        v1.record_hash()
    );
    assert_eq!(store.get(&v1.id, None).expect("latest").version, 2);
    assert_eq!(
        store.for_subject(&b).expect("scan"),
        std::slice::from_ref(&other)
    );

    let withdrawn = store
        .withdraw(
            &v1.id,
            actor(),
            Some("changed my mind".into()),
            None,
            Timestamp(NOW.0 + 2),
        )
        .expect("withdraw");
    assert_eq!(
        (withdrawn.version, withdrawn.status),
        (2, Status::Withdrawn)
    );
    assert!(matches!(
        store.withdraw(&v1.id, actor(), None, None, NOW),
        Err(StoreError::AlreadyWithdrawn)
    ));
    assert!(matches!(
        store.prepare_grant(new_consent(a, "ips_follow_up"), Some(v1.id), NOW),
        Err(StoreError::NotActive("withdrawn"))
    ));
    assert!(matches!(
        store
            .prepare_grant(new_consent(b, "ips_follow_up"), Some(other.id), NOW)
            .map(|r| r.version),
        Ok(2)
    ));
    assert!(matches!(
        store.prepare_grant(new_consent(a, "ips_follow_up"), Some(other.id), NOW),
        Err(StoreError::SubjectMismatch)
    ));
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(
        store.get(&v1.id, None).expect("latest").status,
        Status::Withdrawn
    );
    assert!(matches!(
        store.get(&ConsentId::generate(), None),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn the_record_hash_covers_content_not_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ConsentStore::open(dir.path()).expect("open");
    let record = store
        .prepare_grant(new_consent(subject(3), "ips_follow_up"), None, NOW)
        .expect("prepare");
    store.commit_grant(&record).expect("commit");
    let withdrawn = store
        .withdraw(&record.id, actor(), None, None, NOW)
        .expect("withdraw");
    assert_eq!(withdrawn.record_hash(), record.record_hash());
    let mut changed = record.clone();
    changed.period.end = Timestamp(changed.period.end.0 + 1);
    assert_ne!(changed.record_hash(), record.record_hash());
    let text = String::from_utf8(record.canonical_content()).expect("utf8");
    assert!(
        text.starts_with(r#"{"format":"casegate.consent.v1","id":"#),
        "{text}"
    );
}

#[test]
fn canonical_content_reads_back_to_the_same_hash_and_an_altered_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ConsentStore::open(dir.path()).expect("open");
    let record = store
        .prepare_grant(new_consent(subject(3), "ips_follow_up"), None, NOW)
        .expect("prepare");
    let bytes = record.canonical_content();
    let back = ConsentRecord::from_canonical_content(&bytes).expect("reads back");
    assert_eq!(back.record_hash(), record.record_hash());
    assert_eq!(
        (back.id, back.version, &back.provisions),
        (record.id, 1, &record.provisions)
    );
    let text = String::from_utf8(bytes).expect("JSON");
    let altered = text.replace("ips_follow_up", "benefit_planning");
    assert_ne!(altered, text);
    let altered = ConsentRecord::from_canonical_content(altered.as_bytes()).expect("still valid");
    assert_ne!(altered.record_hash(), record.record_hash());
    let wrong_format = text.replace("casegate.consent.v1", "casegate.consent.v0");
    assert!(ConsentRecord::from_canonical_content(wrong_format.as_bytes()).is_err());
    assert!(ConsentRecord::from_canonical_content(b"{}").is_err());
}

/// Opens a store again after its previous handle was dropped. sled's background flusher
/// thread may hold the folder's lock for a moment after the drop, so a `WouldBlock` is retried
/// for up to five seconds.
fn reopen(path: &std::path::Path) -> ConsentStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match ConsentStore::open(path) {
            Ok(store) => return store,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

/// Whether the decision index of `subject` holds `id` as active.
fn active_in_index(store: &ConsentStore, subject: &SubjectId, id: &ConsentId) -> bool {
    store
        .with_terms(subject, |views| {
            views
                .iter()
                .any(|v| v.id() == *id && v.status() == Status::Active)
        })
        .expect("index")
}

#[test]
fn reconciling_reapplies_a_lost_withdrawal_and_supersedes_under_a_lost_grant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ConsentStore::open(dir.path()).expect("open");
    let who = subject(3);
    let v1 = store
        .prepare_grant(new_consent(who, "ips_follow_up"), None, NOW)
        .expect("prepare");
    store.commit_grant(&v1).expect("grant");
    assert_eq!(store.reconciled_through().expect("mark"), None);

    // The log holds a withdrawal of v1 the store lost.
    let withdrawn = LoggedChange::Withdrawn {
        id: v1.id,
        version: 1,
        by: actor(),
        at: Timestamp(NOW.0 + DAY),
    };
    assert!(active_in_index(&store, &who, &v1.id));
    assert_eq!(
        store
            .reconcile(&withdrawn, LostGrants::Supersede)
            .expect("reconcile"),
        Reconciled::WithdrawalReapplied
    );
    assert!(!active_in_index(&store, &who, &v1.id));
    let held = store.get(&v1.id, None).expect("get");
    assert_eq!(held.status, Status::Withdrawn);
    assert_eq!(
        held.withdrawal.expect("withdrawal").at,
        Timestamp(NOW.0 + DAY)
    );
    assert_eq!(
        store
            .reconcile(&withdrawn, LostGrants::Supersede)
            .expect("again"),
        Reconciled::InStore,
        "idempotent"
    );

    // The log holds version 2 of another consent; the store has only version 1, active.
    let w1 = store
        .prepare_grant(new_consent(who, "ips_follow_up"), None, NOW)
        .expect("prepare");
    store.commit_grant(&w1).expect("grant");
    let w2 = store
        .prepare_grant(new_consent(who, "ips_follow_up"), Some(w1.id), NOW)
        .expect("prepare v2");
    let granted = |record: &ConsentRecord| LoggedChange::Granted {
        id: record.id,
        version: record.version,
        record_sha256: record.record_hash(),
    };
    assert_eq!(
        store
            .reconcile(&granted(&w1), LostGrants::Supersede)
            .expect("v1"),
        Reconciled::InStore
    );
    // A first reconciliation only reports it.
    assert_eq!(
        store
            .reconcile(&granted(&w2), LostGrants::Report)
            .expect("v2, first"),
        Reconciled::GrantLost {
            previous_superseded: false
        }
    );
    assert!(active_in_index(&store, &who, &w1.id));
    assert_eq!(
        store
            .reconcile(&granted(&w2), LostGrants::Supersede)
            .expect("v2"),
        Reconciled::GrantLost {
            previous_superseded: true
        }
    );
    assert!(
        !active_in_index(&store, &who, &w1.id),
        "the terms v2 replaced are not in force again"
    );
    assert_eq!(
        store
            .reconcile(&granted(&w2), LostGrants::Supersede)
            .expect("again"),
        Reconciled::GrantLost {
            previous_superseded: false
        }
    );
    // Other content than the log's hash is reported.
    let other = LoggedChange::Granted {
        id: w1.id,
        version: 1,
        record_sha256: [0; 32],
    };
    assert_eq!(
        store
            .reconcile(&other, LostGrants::Supersede)
            .expect("other"),
        Reconciled::Different
    );

    // A withdrawal of a version the store never held.
    let lost = LoggedChange::Withdrawn {
        id: w2.id,
        version: 2,
        by: actor(),
        at: NOW,
    };
    assert_eq!(
        store.reconcile(&lost, LostGrants::Supersede).expect("lost"),
        Reconciled::WithdrawnNotHeld
    );

    // A grant of a consent the store holds no version of at all.
    let unknown = LoggedChange::Granted {
        id: ConsentId::generate(),
        version: 3,
        record_sha256: [5; 32],
    };
    assert_eq!(
        store
            .reconcile(&unknown, LostGrants::Supersede)
            .expect("unknown"),
        Reconciled::GrantLost {
            previous_superseded: false
        }
    );

    store.set_reconciled_through(42).expect("mark");
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.reconciled_through().expect("mark"), Some(42));
    assert_eq!(
        store.get(&v1.id, None).expect("get").status,
        Status::Withdrawn
    );
}

/// The embedded store in a temporary folder of its own per case.
struct Embedded(Vec<tempfile::TempDir>);

impl crate::storage::conformance::Harness for Embedded {
    type Store = ConsentStore;

    fn fresh(&mut self) -> ConsentStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ConsentStore::open(dir.path()).expect("open");
        self.0.push(dir);
        store
    }

    fn reopen(&mut self, store: ConsentStore) -> ConsentStore {
        drop(store);
        let dir = self.0.last().expect("a store was opened");
        ConsentStore::open(dir.path()).expect("reopen")
    }
}

#[test]
fn the_embedded_store_meets_the_storage_expectations() {
    crate::storage::conformance::run(&mut Embedded(Vec::new()));
}

#[test]
fn concurrent_grants_and_withdrawals_about_one_subject_leave_memory_as_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ConsentStore::open(dir.path()).expect("open");
    let who = subject(11);
    let key = subject_key(&who);
    let grant = |store: &ConsentStore| {
        let granted = store
            .prepare_grant(new_consent(who, "ips_follow_up"), None, NOW)
            .expect("prepare");
        store.commit_grant(&granted).expect("grant");
        granted
    };
    let mut standing = grant(&store);
    for round in 0..40 {
        // A withdrawal and a grant about the same subject, started together.
        let barrier = std::sync::Barrier::new(2);
        let granted = std::thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                store
                    .withdraw(&standing.id, actor(), None, None, NOW)
                    .expect("withdraw");
            });
            let granting = scope.spawn(|| {
                barrier.wait();
                grant(&store)
            });
            granting.join().expect("grant thread")
        });
        let in_memory = store
            .index
            .read()
            .expect("index")
            .get(&key)
            .map(|b| b.to_vec());
        let committed = store
            .terms
            .get(who.expose().as_bytes())
            .expect("read")
            .map(|b| b.to_vec());
        assert!(
            in_memory == committed,
            "round {round}: memory holds another decision index than the one committed"
        );
        assert!(
            !active_in_index(&store, &who, &standing.id),
            "round {round}"
        );
        standing = granted;
    }
}
