use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::{
    SubjectId,
    record::{Actor, ConsentRecord, Evidence, Party, Period, Provision, Status, Withdrawal},
};

const CLINIC: &str = "910000063";
const NAV: &str = "910000071";
const IPS: &str = "910000098";
const OTHER: &str = "910000101";
const DAY: i64 = 86_400_000_000;
const NOW: Timestamp = Timestamp(1_800_000_000_000_000);

fn org(s: &str) -> OrgNumber {
    s.parse().expect("orgnr")
}

fn party(s: &str, roles: &[Role]) -> Party {
    Party {
        orgnr: org(s),
        roles: roles.iter().copied().collect(),
    }
}

fn terms<T: std::str::FromStr + Ord>(names: &[&str]) -> BTreeSet<T>
where
    T::Err: std::fmt::Debug,
{
    names.iter().map(|n| n.parse().expect("term")).collect()
}

/// NAV may send benefit counselling to the clinic and to IPS's specialists, for IPS follow-up
/// and benefit planning; valid from a day ago for 30 days.
fn consent(n: u128) -> ConsentRecord {
    ConsentRecord {
        id: ConsentId::from_bytes(n.to_be_bytes()),
        version: 1,
        subject: SubjectId::synthetic(1, 2, 1990, 123).expect("synthetic"),
        recorded_by: Actor {
            orgnr: org(NAV),
            user_id: "nav-1".into(),
            role: Role::NavCounsellor,
        },
        provisions: vec![Provision {
            senders: vec![party(NAV, &[])],
            recipients: vec![
                party(CLINIC, &[]),
                party(IPS, &[Role::EmploymentSpecialist]),
            ],
            categories: terms(&["benefit_counselling"]),
            purposes: terms(&["ips_follow_up", "benefit_planning"]),
        }],
        period: Period {
            start: Timestamp(NOW.0 - DAY),
            end: Timestamp(NOW.0 + 29 * DAY),
        },
        evidence: Evidence::Digital {
            authenticated_as: "jobseeker".into(),
        },
        recorded_at: Timestamp(NOW.0 - DAY),
        status: Status::Active,
        withdrawal: None,
    }
}

fn request() -> DisclosureRequest {
    DisclosureRequest {
        sender_org: org(NAV),
        sender_role: Role::NavCounsellor,
        recipient_org: org(CLINIC),
        recipient_role: None,
        category: "benefit_counselling".parse().expect("term"),
        purpose: "benefit_planning".parse().expect("term"),
        approval_attested: false,
    }
}

fn withdrawn(mut c: ConsentRecord) -> ConsentRecord {
    c.status = Status::Withdrawn;
    c.withdrawal = Some(Withdrawal {
        at: Timestamp(NOW.0 - 1),
        by: c.recorded_by.clone(),
        reason: None,
        evidence: None,
    });
    c
}

/// Decides and compares with the expected outcome: `Ok(version)` for a permit relying on
/// that version, `Err(reason)` for a refusal.
fn check(
    name: &str,
    edit_request: impl FnOnce(&mut DisclosureRequest),
    consents: &[ConsentRecord],
    now: Timestamp,
    expected: Result<u32, Reason>,
) {
    let mut req = request();
    edit_request(&mut req);
    let decision = decide(&req, consents, now, &Vocabulary::default());
    let got = match &decision {
        Decision::Permit(p) => Ok(p.version),
        Decision::Deny(d) => Err(d.reason),
    };
    assert_eq!(got, expected, "{name}: {decision:?}");
}

#[test]
fn decision_table() {
    let c = consent(1);
    let one = std::slice::from_ref(&c);
    let keep = |_: &mut DisclosureRequest| {};
    check("covered", keep, one, NOW, Ok(1));
    check("no consents", keep, &[], NOW, Err(Reason::NoConsent));
    check(
        "other purpose in the provision",
        |r| r.purpose = "ips_follow_up".parse().expect("term"),
        one,
        NOW,
        Ok(1),
    );
    check(
        "sender not named",
        |r| {
            r.sender_org = org(CLINIC);
            r.sender_role = Role::Clinician;
            r.category = "meeting_summary".parse().expect("term");
        },
        one,
        NOW,
        Err(Reason::SenderNotCovered),
    );
    check(
        "recipient not named",
        |r| r.recipient_org = org(OTHER),
        one,
        NOW,
        Err(Reason::RecipientNotCovered),
    );
    check(
        "category not named",
        |r| r.category = "meeting_summary".parse().expect("term"),
        one,
        NOW,
        Err(Reason::CategoryNotCovered),
    );
    check(
        "purpose not in vocabulary",
        |r| r.purpose = "marketing".parse().expect("term"),
        one,
        NOW,
        Err(Reason::UnknownPurpose),
    );
    check(
        "unknown category",
        |r| r.category = "horoscope".parse().expect("term"),
        one,
        NOW,
        Err(Reason::UnknownCategory),
    );
    check(
        "sender role may not send the category",
        |r| r.sender_role = Role::Clinician,
        one,
        NOW,
        Err(Reason::SenderRoleNotAllowed),
    );
    check(
        "approval missing for a treatment summary",
        |r| {
            r.sender_role = Role::Clinician;
            r.category = "treatment_summary".parse().expect("term");
        },
        one,
        NOW,
        Err(Reason::ApprovalMissing),
    );
    // Role narrowing: IPS is covered only for employment specialists.
    check(
        "recipient role narrowed: matching role",
        |r| {
            r.recipient_org = org(IPS);
            r.recipient_role = Some(Role::EmploymentSpecialist);
        },
        one,
        NOW,
        Ok(1),
    );
    check(
        "recipient role narrowed: other role",
        |r| {
            r.recipient_org = org(IPS);
            r.recipient_role = Some(Role::Clinician);
        },
        one,
        NOW,
        Err(Reason::RecipientNotCovered),
    );
    check(
        "recipient role narrowed: whole organisation",
        |r| r.recipient_org = org(IPS),
        one,
        NOW,
        Err(Reason::RecipientNotCovered),
    );
    // Period edges: start inclusive, end exclusive.
    check("at start", keep, one, c.period.start, Ok(1));
    check(
        "just before start",
        keep,
        one,
        Timestamp(c.period.start.0 - 1),
        Err(Reason::ConsentNotYetValid),
    );
    check(
        "just before end",
        keep,
        one,
        Timestamp(c.period.end.0 - 1),
        Ok(1),
    );
    check(
        "at end",
        keep,
        one,
        c.period.end,
        Err(Reason::ConsentExpired),
    );
    check(
        "withdrawn",
        keep,
        &[withdrawn(consent(1))],
        NOW,
        Err(Reason::ConsentWithdrawn),
    );
    // Versions: a superseded version never counts, the current one does.
    let mut v1 = consent(1);
    v1.status = Status::Superseded;
    let mut v2 = consent(1);
    v2.version = 2;
    v2.provisions[0].purposes = terms(&["ips_follow_up"]);
    check(
        "superseded version would cover, current does not",
        keep,
        &[v1.clone(), v2.clone()],
        NOW,
        Err(Reason::PurposeNotCovered),
    );
    check(
        "current version covers",
        |r| r.purpose = "ips_follow_up".parse().expect("term"),
        &[v1, v2],
        NOW,
        Ok(2),
    );
    // Several consents for one subject: any current one covering suffices.
    let mut narrow = consent(2);
    narrow.provisions[0].recipients = vec![party(OTHER, &[])];
    check(
        "one of several covers",
        keep,
        &[narrow.clone(), withdrawn(consent(3)), c.clone()],
        NOW,
        Ok(1),
    );
    check(
        "withdrawn outranks a consent that does not name the recipient",
        keep,
        &[narrow, withdrawn(consent(3))],
        NOW,
        Err(Reason::ConsentWithdrawn),
    );
}

#[test]
fn a_sender_named_in_no_consent_learns_nothing_of_them() {
    // NAV → clinic only: IPS (named nowhere in this consent) asks about the same jobseeker.
    let nav_to_clinic_n = |n| {
        let mut c = consent(n);
        c.provisions[0].recipients = vec![party(CLINIC, &[])];
        c
    };
    let nav_to_clinic = nav_to_clinic_n(1);
    let ips_asks = DisclosureRequest {
        sender_org: org(IPS),
        sender_role: Role::EmploymentSpecialist,
        recipient_org: org(NAV),
        recipient_role: None,
        category: "job_progress".parse().expect("term"),
        purpose: "ips_follow_up".parse().expect("term"),
        approval_attested: false,
    };
    let vocabulary = Vocabulary::default();
    let none = decide(&ips_asks, &[] as &[ConsentRecord], NOW, &vocabulary);
    assert_eq!(
        none,
        Decision::Deny(Deny {
            reason: Reason::NoConsent,
            nearest: None
        })
    );
    for consents in [
        vec![nav_to_clinic.clone()],
        vec![withdrawn(nav_to_clinic.clone())],
        vec![nav_to_clinic.clone(), withdrawn(nav_to_clinic_n(2))],
    ] {
        assert_eq!(
            decide(&ips_asks, &consents, NOW, &vocabulary),
            none,
            "the answer is the one for no consents at all"
        );
    }
    // Policy 1 (replay of old entries) still decides as it did: it named the consent.
    assert_eq!(
        decide_under(
            "casegate-policy-1",
            &ips_asks,
            std::slice::from_ref(&nav_to_clinic),
            NOW,
            &vocabulary
        ),
        Some(Decision::Deny(Deny {
            reason: Reason::SenderNotCovered,
            nearest: Some((nav_to_clinic.id, 1))
        }))
    );
    assert_eq!(
        decide_under(
            "casegate-policy-0",
            &ips_asks,
            &[nav_to_clinic],
            NOW,
            &vocabulary
        ),
        None
    );
}

#[test]
fn every_reason_code_is_distinct_and_explained() {
    let codes: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
    assert!(Reason::ALL.iter().all(|r| !r.explain().is_empty()));
}

// === properties ===

fn arb_party() -> impl Strategy<Value = Party> {
    (
        prop::sample::select(vec![CLINIC, NAV, IPS, OTHER]),
        prop::collection::btree_set(prop::sample::select(Role::ALL.to_vec()), 0..2),
    )
        .prop_map(|(o, roles)| Party {
            orgnr: org(o),
            roles,
        })
}

fn arb_consent() -> impl Strategy<Value = ConsentRecord> {
    let categories = Vocabulary::default()
        .categories()
        .map(|(c, _)| c.to_string())
        .collect::<Vec<_>>();
    (
        any::<u8>(),
        prop::collection::vec(arb_party(), 1..3),
        prop::collection::vec(arb_party(), 1..3),
        prop::collection::btree_set(prop::sample::select(categories), 1..3),
        prop::collection::btree_set(
            prop::sample::select(vec!["ips_follow_up", "benefit_planning"]),
            1..3,
        ),
        -3i64..3,
        1i64..5,
        prop::sample::select(vec![
            Status::Active,
            Status::Active,
            Status::Withdrawn,
            Status::Superseded,
        ]),
    )
        .prop_map(
            |(id, senders, recipients, cats, purps, start, len, status)| {
                let mut c = consent(u128::from(id));
                c.provisions = vec![Provision {
                    senders,
                    recipients,
                    categories: cats.iter().map(|s| s.parse().expect("term")).collect(),
                    purposes: purps.iter().map(|s| s.parse().expect("term")).collect(),
                }];
                c.period = Period {
                    start: Timestamp(NOW.0 + start * DAY),
                    end: Timestamp(NOW.0 + (start + len) * DAY),
                };
                c.status = status;
                c
            },
        )
}

fn arb_request() -> impl Strategy<Value = DisclosureRequest> {
    let categories = Vocabulary::default()
        .categories()
        .map(|(c, _)| c.to_string())
        .collect::<Vec<_>>();
    (
        prop::sample::select(vec![CLINIC, NAV, IPS, OTHER]),
        prop::sample::select(vec![
            Role::Clinician,
            Role::NavCounsellor,
            Role::EmploymentSpecialist,
        ]),
        prop::sample::select(vec![CLINIC, NAV, IPS, OTHER]),
        prop::option::of(prop::sample::select(Role::ALL.to_vec())),
        prop::sample::select(categories),
        prop::sample::select(vec!["ips_follow_up", "benefit_planning"]),
        any::<bool>(),
    )
        .prop_map(|(s, sr, r, rr, c, p, a)| DisclosureRequest {
            sender_org: org(s),
            sender_role: sr,
            recipient_org: org(r),
            recipient_role: rr,
            category: c.parse().expect("term"),
            purpose: p.parse().expect("term"),
            approval_attested: a,
        })
}

proptest! {
    #[test]
    fn every_permit_names_an_active_in_force_provision_that_covers_the_request(
        req in arb_request(),
        consents in prop::collection::vec(arb_consent(), 0..4),
    ) {
        if let Decision::Permit(p) = decide(&req, &consents, NOW, &Vocabulary::default()) {
            let record = consents
                .iter()
                .find(|c| c.id == p.consent_id && c.version == p.version && c.status == Status::Active)
                .expect("the permit names an active version");
            prop_assert!(record.period.contains(NOW));
            prop_assert_eq!(p.record_hash, record.record_hash());
            let provision = &record.provisions[p.provision];
            prop_assert!(provision.senders.iter().any(|s| s.covers(req.sender_org, Some(req.sender_role))));
            prop_assert!(provision.recipients.iter().any(|r| r.covers(req.recipient_org, req.recipient_role)));
            prop_assert!(provision.categories.contains(&req.category));
            prop_assert!(provision.purposes.contains(&req.purpose));
        }
    }

    #[test]
    fn withdrawing_a_consent_never_turns_a_refusal_into_a_permit(
        req in arb_request(),
        consents in prop::collection::vec(arb_consent(), 1..4),
        pick in any::<prop::sample::Index>(),
    ) {
        let vocabulary = Vocabulary::default();
        let before = decide(&req, &consents, NOW, &vocabulary);
        let mut after = consents.clone();
        let i = pick.index(after.len());
        after[i] = withdrawn(after[i].clone());
        let after = decide(&req, &after, NOW, &vocabulary);
        if matches!(before, Decision::Deny(_)) {
            prop_assert!(matches!(after, Decision::Deny(_)), "{:?}", after);
        }
    }

    /// Whatever the consents, a sender they do not name gets the answer for no consents.
    #[test]
    fn consents_not_naming_the_sender_change_nothing_in_its_answer(
        req in arb_request(),
        consents in prop::collection::vec(arb_consent(), 0..5),
    ) {
        let vocabulary = Vocabulary::default();
        let naming: Vec<ConsentRecord> =
            consents.iter().filter(|c| c.names(req.sender_org)).cloned().collect();
        prop_assert_eq!(
            decide(&req, &consents, NOW, &vocabulary),
            decide(&req, &naming, NOW, &vocabulary)
        );
    }

    #[test]
    fn the_order_of_consents_does_not_change_the_outcome(
        req in arb_request(),
        mut consents in prop::collection::vec(arb_consent(), 0..4),
    ) {
        let vocabulary = Vocabulary::default();
        let permitted = matches!(decide(&req, &consents, NOW, &vocabulary), Decision::Permit(_));
        consents.reverse();
        prop_assert_eq!(permitted, matches!(decide(&req, &consents, NOW, &vocabulary), Decision::Permit(_)));
    }
}

proptest! {
    /// The store decides over its compact index; that must agree with deciding over the
    /// full records, in outcome, reason, consent and hash.
    #[test]
    fn the_compact_index_decides_exactly_as_the_records(
        req in arb_request(),
        mut consents in prop::collection::vec(arb_consent(), 0..5),
    ) {
        for (i, c) in consents.iter_mut().enumerate() {
            c.id = ConsentId::from_bytes((i as u128 + 1).to_be_bytes());
        }
        let current: Vec<&ConsentRecord> =
            consents.iter().filter(|c| c.status != Status::Superseded).collect();
        let entries: Vec<Vec<u8>> = current.iter().map(|c| crate::terms::encode_entry(c)).collect();
        let index = crate::terms::encode_index(entries.iter().map(Vec::as_slice));
        let views = crate::terms::parse_index(&index).expect("parses");
        prop_assert_eq!(views.len(), current.len());
        let vocabulary = Vocabulary::default();
        prop_assert_eq!(
            decide(&req, &views, NOW, &vocabulary),
            decide(&req, &consents, NOW, &vocabulary)
        );
    }
}

#[test]
fn a_damaged_index_is_refused_not_misread() {
    let c = consent(1);
    let entry = crate::terms::encode_entry(&c);
    let index = crate::terms::encode_index(std::iter::once(entry.as_slice()));
    assert!(crate::terms::parse_index(&index).is_ok());
    for cut in 1..index.len() {
        assert!(
            crate::terms::parse_index(&index[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut longer = index.clone();
    longer.push(0);
    assert!(crate::terms::parse_index(&longer).is_err());
    assert!(crate::terms::parse_index(&[]).expect("empty").is_empty());
}
