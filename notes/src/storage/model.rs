//! The expectations every [`NoteStorage`] implementation meets, written once: the store
//! against a plain in-memory model, random sequences of the store's operations
//! (disclosures with colliding request ids, claims given back, deliveries, acknowledgements,
//! purges, dropped pending notes, forgetting, compaction, and the process dying and the store
//! opening again), each followed by a comparison of everything the store answers — every
//! note, every inbox, the notes relying on each consent, what is due, the backlog, the
//! request ids — with what the model says. The embedded journal runs it below; another
//! implementation runs [`check_against_model`] with a [`Harness`] of its own.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::atomic::{AtomicUsize, Ordering},
};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestRunner},
};

use casegate_consent::{
    OrgNumber, Role,
    record::{Actor, ConsentId, Timestamp},
};
use uuid::Uuid;

use crate::{Existing, Expiry, Note, NoteError, NoteState, NoteStorage};

/// Organisation numbers with valid check digits (synthetic).
const ORGS: [&str; 2] = ["910000063", "910000071"];
const RETENTION: i64 = 1_000;

/// A synthetic pending note disclosed at `disclosed_at` (µs), with a fresh UUIDv7 id and
/// request id `request-{disclosed_at}`, no sealed part.
pub fn note(disclosed_at: i64) -> Note {
    Note {
        id: uuid::Uuid::now_v7(),
        state: NoteState::Pending,
        request_id: format!("request-{disclosed_at}"),
        fingerprint: [1; 32],
        sender: Actor {
            orgnr: ORGS[0].parse().expect("orgnr"),
            user_id: "sender-user".into(),
            role: Role::NavCounsellor,
        },
        recipient_org: ORGS[1].parse().expect("orgnr"),
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
        purged_at: None,
        sealed: None,
    }
}

/// A note staged and made deliverable (audit index 7), as `Disclose` leaves it.
pub fn deliverable(store: &dyn NoteStorage, disclosed_at: i64) -> Note {
    let pending = note(disclosed_at);
    store.stage_pending(&pending).expect("stage");
    store.make_deliverable(pending, 7).expect("deliverable")
}

#[derive(Debug, Clone)]
enum Op {
    /// A sender discloses with request id `request` (few, so they collide) relying on one of
    /// three consents, to one of two recipients.
    Disclose {
        sender: usize,
        request: u8,
        consent: usize,
        recipient: usize,
        at: u16,
    },
    /// A claim on a request id given back (the decision refused).
    ClaimAndRelease {
        sender: usize,
        request: u8,
    },
    /// The n-th note (of those the model holds) made deliverable.
    MakeDeliverable(usize),
    MarkDelivered(usize),
    Acknowledge(usize, u16),
    Purge(usize),
    /// The n-th pending note dropped, as recovery does when its entry never became durable.
    DropPending(usize),
    ForgetPurged(u8),
    Compact,
    /// The process dies (nothing flushed on purpose) and the store opens again.
    Reopen,
    /// What is due at a cutoff, for both the TTL and retention.
    Due(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..12u8, 0..3usize, 0..2usize, any::<u16>()).prop_map(
            |(sender, request, consent, recipient, at)| Op::Disclose {
                sender,
                request,
                consent,
                recipient,
                at,
            }
        ),
        1 => (0..2usize, 0..12u8).prop_map(|(sender, request)| Op::ClaimAndRelease { sender, request }),
        3 => any::<usize>().prop_map(Op::MakeDeliverable),
        2 => any::<usize>().prop_map(Op::MarkDelivered),
        2 => (any::<usize>(), any::<u16>()).prop_map(|(n, at)| Op::Acknowledge(n, at)),
        2 => any::<usize>().prop_map(Op::Purge),
        1 => any::<usize>().prop_map(Op::DropPending),
        1 => (1..4u8).prop_map(Op::ForgetPurged),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => any::<u16>().prop_map(Op::Due),
    ]
}

/// What the store should hold.
#[derive(Debug, Default)]
struct Model {
    notes: BTreeMap<Uuid, Note>,
    /// Request ids of stored notes, by sender.
    requests: HashMap<(OrgNumber, String), Uuid>,
}

/// The ids of `notes`, collected as the caller needs them.
fn ids<C: FromIterator<Uuid>>(notes: &[Note]) -> C {
    notes.iter().map(|n| n.id).collect()
}

impl Model {
    /// The ids of the notes the model holds that `keep` picks, in id order.
    fn ids_where<C: FromIterator<Uuid>>(&self, keep: impl Fn(&Note) -> bool) -> C {
        self.notes
            .values()
            .filter(|n| keep(n))
            .map(|n| n.id)
            .collect()
    }

    fn nth(&self, n: usize, keep: impl Fn(&Note) -> bool) -> Option<Note> {
        let candidates: Vec<&Note> = self.notes.values().filter(|n| keep(n)).collect();
        (!candidates.is_empty()).then(|| candidates[n % candidates.len()].clone())
    }

    fn forget(&mut self, id: &Uuid) {
        if let Some(note) = self.notes.remove(id) {
            self.requests
                .remove(&(note.sender.orgnr, note.request_id.clone()));
        }
    }
}

fn org(i: usize) -> OrgNumber {
    ORGS[i].parse().expect("orgnr")
}

fn consent(i: usize) -> ConsentId {
    let mut bytes = [0u8; 16];
    bytes[15] = u8::try_from(i).expect("small") + 1;
    ConsentId::from_bytes(bytes)
}

/// Opens the stores a run needs.
pub trait Harness {
    /// An empty store of its own.
    fn fresh(&mut self) -> Box<dyn NoteStorage>;
    /// `store` dropped without a flush, as when the process dies, and opened again over the
    /// same data.
    fn reopen(&mut self, store: Box<dyn NoteStorage>) -> Box<dyn NoteStorage>;
}

struct Run<'h> {
    harness: &'h mut dyn Harness,
    store: Option<Box<dyn NoteStorage>>,
    model: Model,
}

impl<'h> Run<'h> {
    fn new(harness: &'h mut dyn Harness) -> Self {
        let store = harness.fresh();
        Self {
            harness,
            store: Some(store),
            model: Model::default(),
        }
    }

    fn store(&self) -> &dyn NoteStorage {
        self.store.as_deref().expect("open")
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Disclose {
                sender,
                request,
                consent: c,
                recipient,
                at,
            } => {
                let mut n = note(i64::from(at));
                n.sender.orgnr = org(sender);
                n.request_id = format!("request-{request}");
                n.consent_id = consent(c);
                n.recipient_org = org(recipient);
                n.fingerprint = [request; 32];
                let key = (n.sender.orgnr, n.request_id.clone());
                let answer = self
                    .store()
                    .reserve(n.sender.orgnr, &n.request_id, n.id, n.fingerprint)
                    .expect("reserve");
                match self.model.requests.get(&key) {
                    Some(existing) => {
                        let fingerprint = self.model.notes[existing].fingerprint;
                        prop_assert_eq!(
                            answer,
                            Err(Existing {
                                id: *existing,
                                fingerprint
                            })
                        );
                    }
                    None => {
                        prop_assert_eq!(answer, Ok(()));
                        self.store().stage_pending(&n).expect("stage");
                        self.model.requests.insert(key, n.id);
                        self.model.notes.insert(n.id, n);
                    }
                }
            }
            Op::ClaimAndRelease { sender, request } => {
                let (orgnr, request_id) = (org(sender), format!("request-{request}"));
                let claimed = self
                    .store()
                    .reserve(orgnr, &request_id, Uuid::now_v7(), [0; 32])
                    .expect("reserve");
                let held = self
                    .model
                    .requests
                    .contains_key(&(orgnr, request_id.clone()));
                prop_assert_eq!(claimed.is_err(), held, "claimed while held");
                self.store().release(orgnr, &request_id).expect("release");
            }
            Op::MakeDeliverable(n) => {
                let Some(note) = self.model.nth(n, |_| true) else {
                    return Ok(());
                };
                let index = self.model.notes.len() as u64;
                let answer = self
                    .store()
                    .make_deliverable(note.clone(), index)
                    .expect("make deliverable");
                let expected = self.model.notes.get_mut(&note.id).expect("held");
                if expected.state == NoteState::Pending {
                    expected.state = NoteState::Deliverable;
                    expected.audit_index = Some(index);
                }
                prop_assert_eq!(&answer, &*expected);
            }
            Op::MarkDelivered(n) => {
                let Some(note) = self.model.nth(n, |_| true) else {
                    return Ok(());
                };
                self.store().mark_delivered(&note.id).expect("mark");
                self.model.notes.get_mut(&note.id).expect("held").delivered = true;
            }
            Op::Acknowledge(n, at) => {
                let Some(note) = self.model.nth(n, |_| true) else {
                    return Ok(());
                };
                let at = Timestamp(i64::from(at));
                let purge_after = Timestamp(at.0 + RETENTION);
                let answer = self.store().acknowledge(&note.id, at, purge_after);
                let expected = self.model.notes.get_mut(&note.id).expect("held");
                let again = expected.state == NoteState::Acknowledged
                    && expected.acknowledged_at == Some(at);
                if again {
                    // The same acknowledgement repeated: answered as the first was.
                    prop_assert_eq!(&answer.expect("acknowledged"), &*expected);
                } else if expected.state == NoteState::Deliverable {
                    expected.state = NoteState::Acknowledged;
                    expected.acknowledged_at = Some(at);
                    expected.purge_after = Some(purge_after);
                    prop_assert_eq!(&answer.expect("acknowledged"), &*expected);
                } else {
                    prop_assert!(
                        matches!(answer, Err(NoteError::NotDeliverable(state)) if state == expected.state.code()),
                        "acknowledging a note that is {:?}",
                        expected.state
                    );
                }
            }
            Op::Purge(n) => {
                let Some(note) = self.model.nth(n, |_| true) else {
                    return Ok(());
                };
                let answer = self.store().purge(&note.id).expect("purge");
                let expected = self.model.notes.get_mut(&note.id).expect("held");
                if expected.state != NoteState::Purged {
                    // A purge is stamped with the store's clock; purging again changes nothing.
                    expected.state = NoteState::Purged;
                    expected.sealed = None;
                    prop_assert!(answer.purged_at.is_some(), "purge time recorded");
                    expected.purged_at = answer.purged_at;
                }
                prop_assert_eq!(&answer, &*expected);
            }
            Op::DropPending(n) => {
                let Some(note) = self.model.nth(n, |n| n.state == NoteState::Pending) else {
                    return Ok(());
                };
                self.store().drop_pending(&note).expect("drop");
                self.model.forget(&note.id);
            }
            Op::ForgetPurged(limit) => {
                let forgotten = self
                    .store()
                    .forget_purged(Timestamp(i64::MAX), usize::from(limit))
                    .expect("forget");
                let mut purged: Vec<(Timestamp, Uuid)> = self
                    .model
                    .notes
                    .values()
                    .filter(|n| n.state == NoteState::Purged)
                    .map(|n| (n.purged_at.expect("purge time"), n.id))
                    .collect();
                purged.sort();
                purged.truncate(usize::from(limit));
                prop_assert_eq!(forgotten, purged.len());
                for (_, id) in purged {
                    self.model.forget(&id);
                }
            }
            Op::Compact => {
                self.store().compact().expect("compact");
            }
            Op::Reopen => {
                let store = self.store.take().expect("open");
                self.store = Some(self.harness.reopen(store));
            }
            Op::Due(cutoff) => {
                let cutoff = Timestamp(i64::from(cutoff) + RETENTION / 2);
                let due_ids = |limit| -> Vec<(Uuid, Expiry)> {
                    self.store()
                        .due(cutoff, cutoff, limit)
                        .expect("due")
                        .into_iter()
                        .map(|(n, e)| (n.id, e))
                        .collect()
                };
                let (all, first) = (due_ids(usize::MAX), due_ids(2));
                prop_assert_eq!(
                    &first[..],
                    &all[..all.len().min(2)],
                    "a limit takes the first of the whole answer"
                );
                let due: BTreeSet<(Uuid, Expiry)> = all.into_iter().collect();
                let expected: BTreeSet<(Uuid, Expiry)> = self
                    .model
                    .notes
                    .values()
                    .filter_map(|n| match n.state {
                        NoteState::Deliverable if n.disclosed_at <= cutoff => {
                            Some((n.id, Expiry::TtlElapsed))
                        }
                        NoteState::Acknowledged if n.purge_after.is_some_and(|p| p <= cutoff) => {
                            Some((n.id, Expiry::RetentionElapsed))
                        }
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(due, expected);
            }
        }
        self.check()
    }

    /// Everything the store answers agrees with the model.
    fn check(&self) -> Result<(), TestCaseError> {
        let store = self.store();
        for (id, expected) in &self.model.notes {
            prop_assert_eq!(&store.get(id).expect("held"), expected);
        }
        for org in [org(0), org(1)] {
            let inbox: Vec<Uuid> = ids(&store.inbox_page(org, None, usize::MAX).expect("inbox"));
            let expected: Vec<Uuid> = self
                .model
                .ids_where(|n| n.recipient_org == org && n.state == NoteState::Deliverable);
            prop_assert_eq!(&inbox, &expected, "inbox");
            // Read in pages of three, each after the last note of the one before.
            let mut paged = Vec::new();
            loop {
                let page = store
                    .inbox_page(org, paged.last().copied(), 3)
                    .expect("page");
                let len = page.len();
                paged.extend(page.iter().map(|n| n.id));
                if len < 3 {
                    break;
                }
            }
            prop_assert_eq!(paged, expected, "inbox read in pages");
        }
        for c in 0..3 {
            let undelivered: BTreeSet<Uuid> =
                ids(&store.undelivered_for(&consent(c)).expect("undelivered"));
            let expected: BTreeSet<Uuid> = self.model.ids_where(|n| {
                n.consent_id == consent(c)
                    && matches!(n.state, NoteState::Pending | NoteState::Deliverable)
                    && !n.delivered
            });
            prop_assert_eq!(undelivered, expected, "undelivered");
        }
        let backlog = self
            .model
            .notes
            .values()
            .filter(|n| n.state == NoteState::Deliverable)
            .count();
        prop_assert_eq!(store.backlog(), backlog, "backlog");
        prop_assert_eq!(store.stats().notes, self.model.notes.len(), "notes held");
        let pending: BTreeSet<Uuid> = ids(&store.pending().expect("pending"));
        let expected: BTreeSet<Uuid> = self.model.ids_where(|n| n.state == NoteState::Pending);
        prop_assert_eq!(pending, expected, "pending, for recovery");
        Ok(())
    }
}

/// Runs 100 random sequences of 100 to 140 operations, each on a store from `harness`;
/// panics with the shortest failing sequence proptest finds. Returns the steps run.
pub fn check_against_model(harness: &mut dyn Harness) -> usize {
    let steps = AtomicUsize::new(0);
    let harness = std::cell::RefCell::new(harness);
    let mut runner = TestRunner::new(Config {
        cases: 100,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&vec(op(), 100..=140), |ops| {
            let mut harness = harness.borrow_mut();
            let mut run = Run::new(&mut **harness);
            for op in &ops {
                steps.fetch_add(1, Ordering::Relaxed);
                run.apply(op)?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    steps.into_inner()
}

#[cfg(test)]
mod embedded {
    use super::*;
    use crate::NoteStore;

    /// Journal files this small rotate every few records, so compaction and reading across
    /// files are exercised.
    const FILE_BYTES: u64 = 4 * 1024;

    /// The embedded journal, in a temporary folder of its own per store.
    struct Embedded(Vec<tempfile::TempDir>);

    impl Harness for Embedded {
        fn fresh(&mut self) -> Box<dyn NoteStorage> {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = NoteStore::open_with(&dir.path().join("notes"), FILE_BYTES).expect("open");
            // Earlier runs' folders are not needed again.
            self.0.clear();
            self.0.push(dir);
            Box::new(store)
        }

        fn reopen(&mut self, store: Box<dyn NoteStorage>) -> Box<dyn NoteStorage> {
            drop(store);
            let dir = self.0.last().expect("a store was opened");
            Box::new(NoteStore::open_with(&dir.path().join("notes"), FILE_BYTES).expect("reopen"))
        }
    }

    #[test]
    fn the_embedded_store_answers_as_its_model_does_through_restarts() {
        let steps = check_against_model(&mut Embedded(Vec::new()));
        assert!(steps >= 10_000, "{steps} steps");
    }
}
