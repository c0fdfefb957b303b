//! The expectations every [`ConsentStorage`] implementation meets, written once: the embedded
//! store runs them in its tests, and any other implementation runs the same [`run`].
//!
//! Each case starts from an empty store ([`Harness::fresh`]) and panics, naming itself, at
//! the first expectation that fails.

use std::collections::BTreeSet;

use super::ConsentStorage;
use crate::{
    OrgNumber, Role, SubjectId, Vocabulary,
    decision::{Decision, DisclosureRequest, Reason},
    record::{Actor, ConsentId, Evidence, NewConsent, Party, Period, Provision, Status, Timestamp},
    store::{LoggedChange, LostGrants, Reconciled, StoreError},
};

/// Opens the stores a run needs.
pub trait Harness {
    /// The implementation under test.
    type Store: ConsentStorage;
    /// An empty store of its own.
    fn fresh(&mut self) -> Self::Store;
    /// `store` closed and opened again over the same data, as after a restart.
    fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

const NAV: &str = "910000071";
const CLINIC: &str = "910000063";
/// A day in microseconds.
pub(crate) const DAY: i64 = 86_400_000_000;
/// 2027-01-15T08:00:00Z, in microseconds since the Unix epoch.
pub(crate) const NOW: Timestamp = Timestamp(1_800_000_000_000_000);

fn org(text: &str) -> OrgNumber {
    text.parse().expect("organisation number")
}

fn subject(n: u16) -> SubjectId {
    SubjectId::synthetic_all()
        .nth(usize::from(n) * 97)
        .expect("synthetic subject")
}

/// A NAV counsellor.
pub(crate) fn nav() -> Actor {
    Actor {
        orgnr: org(NAV),
        user_id: "nav-1".into(),
        role: Role::NavCounsellor,
    }
}

/// NAV may send benefit counselling to the clinic for `purpose`, for 30 days from `NOW`.
pub(crate) fn new_consent(subject: SubjectId, purpose: &str) -> NewConsent {
    NewConsent {
        subject,
        recorded_by: nav(),
        provisions: vec![Provision {
            senders: vec![Party {
                orgnr: org(NAV),
                roles: BTreeSet::new(),
            }],
            recipients: vec![Party {
                orgnr: org(CLINIC),
                roles: BTreeSet::new(),
            }],
            categories: ["benefit_counselling".parse().expect("term")].into(),
            purposes: [purpose.parse().expect("term")].into(),
        }],
        period: Period {
            start: NOW,
            end: Timestamp(NOW.0 + 30 * DAY),
        },
        evidence: Evidence::SignedForm {
            sha256: [1; 32],
            reference: "form-1".into(),
        },
    }
}

fn request(purpose: &str) -> DisclosureRequest {
    DisclosureRequest {
        sender_org: org(NAV),
        sender_role: Role::NavCounsellor,
        recipient_org: org(CLINIC),
        recipient_role: None,
        category: "benefit_counselling".parse().expect("term"),
        purpose: purpose.parse().expect("term"),
        approval_attested: false,
    }
}

fn grant<S: ConsentStorage>(
    store: &S,
    new: NewConsent,
    supersedes: Option<ConsentId>,
) -> Result<crate::record::ConsentRecord, StoreError> {
    let record = store.prepare_grant(new, supersedes, Timestamp(NOW.0 + 1))?;
    store.commit_grant(&record)?;
    Ok(record)
}

/// What a decision came to: the version relied on, or the reason for refusing.
fn outcome<S: ConsentStorage>(
    store: &S,
    subject: &SubjectId,
    purpose: &str,
) -> Result<u32, Reason> {
    let at = Timestamp(NOW.0 + DAY);
    match store
        .decide(subject, &request(purpose), at, &Vocabulary::default())
        .expect("decide")
    {
        Decision::Permit(p) => Ok(p.version),
        Decision::Deny(d) => Err(d.reason),
    }
}

/// Runs every case.
pub fn run<H: Harness>(harness: &mut H) {
    grants_are_read_back_and_new_versions_supersede(harness);
    only_an_active_consent_of_the_same_subject_can_be_superseded(harness);
    a_prepared_version_is_committed_once(harness);
    a_withdrawal_is_final(harness);
    decisions_follow_grants_versions_and_withdrawals(harness);
    everything_survives_reopening(harness);
    reconciliation_restores_what_the_log_holds(harness);
}

/// A grant is read back by id and by subject; a new version supersedes the one before.
pub fn grants_are_read_back_and_new_versions_supersede<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let (a, b) = (subject(1), subject(2));
    let v1 = grant(&store, new_consent(a, "ips_follow_up"), None).expect("grant v1");
    let other = grant(&store, new_consent(b, "ips_follow_up"), None).expect("grant other");
    assert_eq!((v1.version, v1.status), (1, Status::Active), "v1");
    assert_eq!(store.get(&v1.id, None).expect("get"), v1, "read back");
    let v2 = grant(&store, new_consent(a, "benefit_planning"), Some(v1.id)).expect("v2");
    assert_eq!(
        (v2.id, v2.version),
        (v1.id, 2),
        "the next version of the same consent"
    );
    assert_eq!(
        store.get(&v1.id, None).expect("newest"),
        v2,
        "newest version"
    );
    assert_eq!(
        store.get(&v1.id, Some(1)).expect("v1").status,
        Status::Superseded,
        "the version before is superseded"
    );
    let about_a = store.for_subject(&a).expect("for subject");
    assert_eq!(
        about_a
            .iter()
            .map(|r| (r.id, r.version))
            .collect::<Vec<_>>(),
        [(v1.id, 1), (v1.id, 2)],
        "every version about the subject, by id then version"
    );
    assert_eq!(
        store.for_subject(&b).expect("other"),
        [other],
        "only the subject's"
    );
    assert!(
        store.for_subject(&subject(3)).expect("none").is_empty(),
        "a subject without consents"
    );
    assert!(
        matches!(store.get(&v1.id, Some(3)), Err(StoreError::NotFound)),
        "no such version"
    );
    assert!(
        matches!(
            store.get(&ConsentId::from_bytes([7; 16]), None),
            Err(StoreError::NotFound)
        ),
        "no such consent"
    );
}

/// Superseding needs an active consent about the same subject.
pub fn only_an_active_consent_of_the_same_subject_can_be_superseded<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let a = subject(1);
    let v1 = grant(&store, new_consent(a, "ips_follow_up"), None).expect("grant");
    assert!(
        matches!(
            store.prepare_grant(new_consent(subject(2), "ips_follow_up"), Some(v1.id), NOW),
            Err(StoreError::SubjectMismatch)
        ),
        "another subject's consent"
    );
    assert!(
        matches!(
            store.prepare_grant(
                new_consent(a, "ips_follow_up"),
                Some(ConsentId::from_bytes([9; 16])),
                NOW
            ),
            Err(StoreError::NotFound)
        ),
        "an unknown consent"
    );
    grant(&store, new_consent(a, "benefit_planning"), Some(v1.id)).expect("v2");
    store
        .withdraw(&v1.id, nav(), None, None, Timestamp(NOW.0 + 2))
        .expect("withdraw");
    assert!(
        matches!(
            store.prepare_grant(new_consent(a, "ips_follow_up"), Some(v1.id), NOW),
            Err(StoreError::NotActive("withdrawn"))
        ),
        "a withdrawn consent"
    );
}

/// A prepared record is committed once; committing it again is refused and changes nothing.
pub fn a_prepared_version_is_committed_once<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let a = subject(1);
    let v1 = grant(&store, new_consent(a, "ips_follow_up"), None).expect("grant");
    let v2 = store
        .prepare_grant(new_consent(a, "benefit_planning"), Some(v1.id), NOW)
        .expect("prepare");
    store.commit_grant(&v2).expect("commit");
    assert!(
        matches!(store.commit_grant(&v2), Err(StoreError::NotActive(_))),
        "the same version again"
    );
    assert_eq!(
        store.for_subject(&a).expect("read").len(),
        2,
        "two versions"
    );
}

/// A withdrawal is recorded with who, why and when, and cannot be repeated.
pub fn a_withdrawal_is_final<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let v1 = grant(&store, new_consent(subject(1), "ips_follow_up"), None).expect("grant");
    let at = Timestamp(NOW.0 + 5);
    let withdrawn = store
        .withdraw(&v1.id, nav(), Some("changed my mind".into()), None, at)
        .expect("withdraw");
    assert_eq!(withdrawn.status, Status::Withdrawn, "withdrawn");
    let withdrawal = withdrawn.withdrawal.as_ref().expect("withdrawal recorded");
    assert_eq!(
        (
            withdrawal.at,
            withdrawal.by.clone(),
            withdrawal.reason.as_deref()
        ),
        (at, nav(), Some("changed my mind")),
        "when, by whom, why"
    );
    assert_eq!(store.get(&v1.id, None).expect("get"), withdrawn, "stored");
    assert!(
        matches!(
            store.withdraw(&v1.id, nav(), None, None, at),
            Err(StoreError::AlreadyWithdrawn)
        ),
        "withdrawing again"
    );
    assert!(
        matches!(
            store.withdraw(&ConsentId::from_bytes([3; 16]), nav(), None, None, at),
            Err(StoreError::NotFound)
        ),
        "an unknown consent"
    );
}

/// The decision sees the subject's current versions, as they change.
pub fn decisions_follow_grants_versions_and_withdrawals<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let a = subject(1);
    assert_eq!(
        outcome(&store, &a, "ips_follow_up"),
        Err(Reason::NoConsent),
        "nothing granted"
    );
    let v1 = grant(&store, new_consent(a, "ips_follow_up"), None).expect("grant");
    assert_eq!(outcome(&store, &a, "ips_follow_up"), Ok(1), "granted");
    assert_eq!(
        outcome(&store, &subject(2), "ips_follow_up"),
        Err(Reason::NoConsent),
        "another subject"
    );
    grant(&store, new_consent(a, "benefit_planning"), Some(v1.id)).expect("v2");
    assert_eq!(
        outcome(&store, &a, "benefit_planning"),
        Ok(2),
        "the new version"
    );
    assert!(
        outcome(&store, &a, "ips_follow_up").is_err(),
        "the superseded version's purpose no longer counts"
    );
    store
        .withdraw(&v1.id, nav(), None, None, Timestamp(NOW.0 + 2))
        .expect("withdraw");
    assert_eq!(
        outcome(&store, &a, "benefit_planning"),
        Err(Reason::ConsentWithdrawn),
        "withdrawn"
    );
}

/// Grants, withdrawals and the reconciliation mark are durable across a restart.
pub fn everything_survives_reopening<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let a = subject(1);
    assert_eq!(
        store.reconciled_through().expect("mark"),
        None,
        "no mark yet"
    );
    let v1 = grant(&store, new_consent(a, "ips_follow_up"), None).expect("grant");
    let kept = grant(&store, new_consent(subject(2), "ips_follow_up"), None).expect("grant");
    store
        .withdraw(&v1.id, nav(), None, None, Timestamp(NOW.0 + 2))
        .expect("withdraw");
    store.set_reconciled_through(42).expect("set mark");
    let before = store.for_subject(&a).expect("read");
    let store = harness.reopen(store);
    assert_eq!(
        store.for_subject(&a).expect("read"),
        before,
        "the withdrawal"
    );
    assert_eq!(store.get(&kept.id, None).expect("get"), kept, "the grant");
    assert_eq!(
        store.reconciled_through().expect("mark"),
        Some(42),
        "the mark"
    );
    assert_eq!(
        outcome(&store, &a, "ips_follow_up"),
        Err(Reason::ConsentWithdrawn),
        "decisions after the restart"
    );
    assert_eq!(outcome(&store, &subject(2), "ips_follow_up"), Ok(1), "kept");
}

/// Reconciliation: a logged withdrawal the store lacks is applied again, a logged grant the
/// store holds is recognised, one it lacks is reported lost; each is idempotent.
pub fn reconciliation_restores_what_the_log_holds<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let a = subject(1);
    let v1 = grant(&store, new_consent(a, "ips_follow_up"), None).expect("grant");
    let granted = LoggedChange::Granted {
        id: v1.id,
        version: 1,
        record_sha256: v1.record_hash(),
    };
    assert_eq!(
        store
            .reconcile(&granted, LostGrants::Supersede)
            .expect("reconcile"),
        Reconciled::InStore,
        "a grant the store holds"
    );
    let withdrawn = LoggedChange::Withdrawn {
        id: v1.id,
        version: 1,
        by: nav(),
        at: Timestamp(NOW.0 + 3),
    };
    assert_eq!(
        store
            .reconcile(&withdrawn, LostGrants::Supersede)
            .expect("reconcile"),
        Reconciled::WithdrawalReapplied,
        "a withdrawal the store lost"
    );
    assert_eq!(
        store.get(&v1.id, None).expect("get").status,
        Status::Withdrawn,
        "applied"
    );
    assert_eq!(
        store
            .reconcile(&withdrawn, LostGrants::Supersede)
            .expect("again"),
        Reconciled::InStore,
        "applied once"
    );
    assert_eq!(
        outcome(&store, &a, "ips_follow_up"),
        Err(Reason::ConsentWithdrawn),
        "the decision sees it"
    );
    let lost = LoggedChange::Granted {
        id: ConsentId::from_bytes([5; 16]),
        version: 1,
        record_sha256: [0; 32],
    };
    assert!(
        matches!(
            store.reconcile(&lost, LostGrants::Supersede).expect("lost"),
            Reconciled::GrantLost { .. }
        ),
        "a grant the store never held"
    );
}
