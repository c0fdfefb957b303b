//! Consent records end to end: who may grant, read, list and withdraw; decisions that follow
//! the provisions exactly; withdrawal that bites at once; state that survives a restart; and
//! bad input that is named and changes nothing.

use casegate_audit::entry::{ConsentRead, ConsentsRead, EntryKind, Event};
use casegate_consent::SubjectId;
use casegate_proto::v1::{
    CheckDisclosureRequest, ConsentRecord, ConsentStatus, Evidence, GetCheckpointRequest,
    GetConsentRequest, GrantConsentRequest, ListConsentsRequest, Party, Period, Provision,
    ReasonCode, Role, SignedForm, VerbalConsent, WithdrawConsentRequest, evidence::Kind,
};
use casegate_tests::{Caller, TestGateway};
use tonic::Code;

const DAY: i64 = 86_400;

fn subject(n: usize) -> SubjectId {
    SubjectId::synthetic_all()
        .nth(n)
        .expect("synthetic subject")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn party(gw: &TestGateway, org: &str, roles: &[Role]) -> Party {
    Party {
        orgnr: gw.org(org).orgnr.clone(),
        roles: roles.iter().map(|r| *r as i32).collect(),
    }
}

/// NAV may send benefit counselling to the clinic and to IPS's employment specialists, for
/// IPS follow-up and benefit planning, from an hour ago for 90 days.
fn nav_grant(gw: &TestGateway, subject: &SubjectId) -> GrantConsentRequest {
    GrantConsentRequest {
        subject_id: subject.expose(),
        provisions: vec![Provision {
            senders: vec![party(gw, "nav", &[])],
            recipients: vec![
                party(gw, "clinic", &[]),
                party(gw, "ips", &[Role::EmploymentSpecialist]),
            ],
            categories: vec!["benefit_counselling".into()],
            purposes: vec!["ips_follow_up".into(), "benefit_planning".into()],
        }],
        period: Some(Period {
            start: Some(ts(now() - 3600)),
            end: Some(ts(now() + 90 * DAY)),
        }),
        evidence: None,
        supersedes_consent_id: String::new(),
    }
}

/// Grants `request` as `caller` and returns the stored record.
async fn grant(caller: &mut Caller, request: GrantConsentRequest) -> ConsentRecord {
    caller
        .consent
        .grant_consent(request)
        .await
        .expect("grant")
        .into_inner()
        .consent
        .expect("record")
}

fn signed_form() -> Evidence {
    Evidence {
        kind: Some(Kind::SignedForm(SignedForm {
            sha256: vec![0xab; 32],
            reference: "dips-doc-4711".into(),
        })),
    }
}

async fn check(
    caller: &mut Caller,
    subject: &SubjectId,
    recipient: Party,
    category: &str,
    purpose: &str,
) -> (bool, ReasonCode) {
    let decision = caller
        .consent
        .check_disclosure(CheckDisclosureRequest {
            subject_id: subject.expose(),
            recipient: Some(recipient),
            category: category.into(),
            purpose: purpose.into(),
            approval_attested: false,
        })
        .await
        .expect("decision")
        .into_inner()
        .decision
        .expect("decision");
    (decision.permitted, decision.reason())
}

#[tokio::test]
async fn a_jobseeker_grants_through_the_portal_and_only_parties_see_it() {
    let gw = TestGateway::start().await;
    let me = subject(1);
    let mut jobseeker = gw.jobseeker(&me).await;
    let granted = jobseeker
        .consent
        .grant_consent(nav_grant(&gw, &me))
        .await
        .expect("grant")
        .into_inner();
    let consent = granted.consent.expect("record");
    assert_eq!(
        (consent.version, consent.status()),
        (1, ConsentStatus::Active)
    );
    assert_eq!(consent.subject_id, me.expose());
    assert!(matches!(
        consent.evidence.as_ref().and_then(|e| e.kind.as_ref()),
        Some(Kind::Digital(d)) if d.authenticated_as.starts_with("portal-user-")
    ));
    gw.verify_receipt(&granted.receipt.expect("receipt"));

    let get = GetConsentRequest {
        consent_id: consent.consent_id.clone(),
        version: 0,
    };
    for (org, role) in [
        ("nav", "nav_counsellor"),
        ("clinic", "clinician"),
        ("ips", "employment_specialist"),
    ] {
        let seen = gw
            .caller(org, role)
            .await
            .consent
            .get_consent(get.clone())
            .await;
        assert_eq!(
            seen.expect("party reads").into_inner().consent,
            Some(consent.clone())
        );
    }
    let outsider = gw
        .caller("privacy", "privacy_officer")
        .await
        .consent
        .get_consent(get.clone())
        .await
        .expect_err("not a party");
    assert_eq!(outsider.code(), Code::PermissionDenied);
    let other_jobseeker = gw
        .jobseeker(&subject(2))
        .await
        .consent
        .get_consent(get.clone())
        .await;
    assert_eq!(
        other_jobseeker.expect_err("someone else's").code(),
        Code::PermissionDenied
    );
    // An unknown id is refused the same way: existence is not revealed.
    let unknown = gw
        .caller("nav", "nav_counsellor")
        .await
        .consent
        .get_consent(GetConsentRequest {
            consent_id: "0190f7a2-4b1c-7d3e-9a4f-2c8e6b1d0a57".into(),
            version: 0,
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::PermissionDenied);
    assert_eq!(unknown.message(), outsider.message());

    let list = |caller: Caller| async move {
        let mut caller = caller;
        caller
            .consent
            .list_consents(ListConsentsRequest {
                subject_id: subject(1).expose(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().consents.len())
    };
    assert_eq!(list(jobseeker.clone()).await.expect("own list"), 1);
    assert_eq!(
        list(gw.caller("clinic", "clinician").await)
            .await
            .expect("party list"),
        1
    );
    assert_eq!(
        list(gw.caller("privacy", "privacy_officer").await)
            .await
            .expect("no consents name it"),
        0
    );
    let status = list(gw.jobseeker(&subject(2)).await)
        .await
        .expect_err("not their own");
    assert_eq!(status.code(), Code::PermissionDenied);

    // A jobseeker cannot grant on someone else's behalf.
    let status = jobseeker
        .consent
        .grant_consent(nav_grant(&gw, &subject(3)))
        .await
        .expect_err("other subject");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_clinician_records_a_grant_with_a_signed_form() {
    let gw = TestGateway::start().await;
    let me = subject(4);
    let mut clinician = gw.caller("clinic", "clinician").await;
    let mut request = nav_grant(&gw, &me);
    request.evidence = Some(signed_form());
    let granted = clinician
        .consent
        .grant_consent(request.clone())
        .await
        .expect("grant")
        .into_inner();
    let consent = granted.consent.expect("record");
    assert!(matches!(
        consent.evidence.and_then(|e| e.kind),
        Some(Kind::SignedForm(f)) if f.sha256 == vec![0xab; 32]
    ));
    assert_eq!(
        consent.recorded_by.expect("actor").orgnr,
        gw.org("clinic").orgnr
    );

    let mut without = request.clone();
    without.evidence = None;
    let status = clinician
        .consent
        .grant_consent(without)
        .await
        .expect_err("no evidence");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("evidence: required"),
        "{}",
        status.message()
    );

    // A clinic may not record a consent that does not name it.
    let mut elsewhere = request.clone();
    elsewhere.provisions[0].recipients = vec![party(&gw, "ips", &[])];
    let status = clinician
        .consent
        .grant_consent(elsewhere)
        .await
        .expect_err("not a party");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Verbal consent with a witness is accepted too; privacy officers may not record.
    let mut verbal = request.clone();
    verbal.evidence = Some(Evidence {
        kind: Some(Kind::Verbal(VerbalConsent {
            witness_user_id: "clinic-nurse-2".into(),
            witness_role: Role::Clinician as i32,
            given_at: Some(ts(now() - 600)),
        })),
    });
    clinician
        .consent
        .grant_consent(verbal.clone())
        .await
        .expect("verbal grant");
    let status = gw
        .caller("privacy", "privacy_officer")
        .await
        .consent
        .grant_consent(verbal)
        .await
        .expect_err("wrong role");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn check_disclosure_permits_exactly_what_the_provisions_cover() {
    let gw = TestGateway::start().await;
    let me = subject(5);
    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(nav_grant(&gw, &me))
        .await
        .expect("grant");
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let mut clinic = gw.caller("clinic", "clinician").await;
    let mut ips = gw.caller("ips", "employment_specialist").await;
    let clinic_party = party(&gw, "clinic", &[]);
    let ips_specialists = party(&gw, "ips", &[Role::EmploymentSpecialist]);
    let ips_whole = party(&gw, "ips", &[]);
    let privacy = party(&gw, "privacy", &[]);

    let permit = (true, ReasonCode::Unspecified);
    assert_eq!(
        check(
            &mut nav,
            &me,
            clinic_party.clone(),
            "benefit_counselling",
            "benefit_planning"
        )
        .await,
        permit
    );
    assert_eq!(
        check(
            &mut nav,
            &me,
            clinic_party.clone(),
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        permit
    );
    assert_eq!(
        check(
            &mut nav,
            &me,
            ips_specialists.clone(),
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        permit
    );
    assert_eq!(
        check(
            &mut nav,
            &me,
            ips_whole,
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::RecipientNotCovered)
    );
    assert_eq!(
        check(
            &mut nav,
            &me,
            privacy,
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::RecipientNotCovered)
    );
    assert_eq!(
        check(
            &mut nav,
            &me,
            clinic_party.clone(),
            "meeting_summary",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::CategoryNotCovered)
    );
    assert_eq!(
        check(
            &mut clinic,
            &me,
            ips_specialists.clone(),
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::SenderRoleNotAllowed)
    );
    assert_eq!(
        check(
            &mut ips,
            &me,
            clinic_party.clone(),
            "job_progress",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::SenderNotCovered)
    );
    assert_eq!(
        check(
            &mut clinic,
            &me,
            ips_specialists.clone(),
            "treatment_summary",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::ApprovalMissing)
    );
    assert_eq!(
        check(
            &mut nav,
            &me,
            clinic_party.clone(),
            "horoscope",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::UnknownCategory)
    );
    assert_eq!(
        check(
            &mut nav,
            &me,
            clinic_party.clone(),
            "benefit_counselling",
            "marketing"
        )
        .await,
        (false, ReasonCode::UnknownPurpose)
    );
    assert_eq!(
        check(
            &mut nav,
            &subject(6),
            clinic_party,
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::NoConsent)
    );
}

#[tokio::test]
async fn a_party_named_in_no_consent_learns_nothing_of_them_and_every_look_is_audited() {
    let gw = TestGateway::start().await;
    let (me, nobody) = (subject(7), subject(8));
    // NAV → clinic only: IPS is named nowhere.
    let mut nav_to_clinic = nav_grant(&gw, &me);
    nav_to_clinic.provisions[0].recipients = vec![party(&gw, "clinic", &[])];
    let consent = grant(&mut gw.jobseeker(&me).await, nav_to_clinic).await;
    let mut ips = gw.caller("ips", "employment_specialist").await;

    let dry_run = |subject: &SubjectId| CheckDisclosureRequest {
        subject_id: subject.expose(),
        recipient: Some(party(&gw, "nav", &[])),
        category: "job_progress".into(),
        purpose: "ips_follow_up".into(),
        approval_attested: false,
    };
    let mut answers = Vec::new();
    for subject in [&me, &nobody] {
        answers.push(
            ips.consent
                .check_disclosure(dry_run(subject))
                .await
                .expect("decision")
                .into_inner()
                .decision
                .expect("decision"),
        );
    }
    assert_eq!(answers[0].reason(), ReasonCode::NoConsent);
    assert!(answers[0].consent_id.is_empty(), "{:?}", answers[0]);
    assert_eq!(
        answers[0], answers[1],
        "with consents that do not name IPS, as without any"
    );

    // A real disclosure attempt is refused the same way.
    let mut refusals = Vec::new();
    for subject in [&me, &nobody] {
        let status = ips
            .disclosure
            .disclose(casegate_proto::v1::DiscloseRequest {
                request_id: "progress-1".into(),
                subject_id: subject.expose(),
                recipient_orgnr: gw.org("nav").orgnr.clone(),
                recipient_role: 0,
                category: "job_progress".into(),
                purpose: "ips_follow_up".into(),
                title: "Progress".into(),
                body: b"met an employer".to_vec(),
                content_type: "text/plain; charset=utf-8".into(),
                approval: None,
            })
            .await
            .expect_err("refused");
        refusals.push((
            status.code(),
            status.message().to_owned(),
            casegate_tests::scenario::reason(&status),
        ));
    }
    assert_eq!(refusals[0].2, "no_consent");
    assert_eq!(refusals[0], refusals[1]);

    // Reads: a list shows nothing, a get is refused as for an id that does not exist.
    let listed = ips
        .consent
        .list_consents(ListConsentsRequest {
            subject_id: me.expose(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.consents.is_empty());
    let mut gets = Vec::new();
    for id in [
        consent.consent_id.clone(),
        "0190b6c2-5a1e-7000-8000-00000000abcd".to_owned(),
    ] {
        let status = ips
            .consent
            .get_consent(GetConsentRequest {
                consent_id: id,
                version: 0,
            })
            .await
            .expect_err("not visible");
        gets.push((status.code(), status.message().to_owned()));
    }
    assert_eq!(gets[0], gets[1]);

    // Nor can IPS replace the consent by recording a new version of it: refused as for an
    // id that does not exist, and the consent stays as it was.
    let mut takeover = nav_grant(&gw, &me);
    takeover.provisions[0].senders = vec![party(&gw, "ips", &[])];
    takeover.evidence = Some(signed_form());
    let mut supersede_refusals = Vec::new();
    for id in [
        consent.consent_id.clone(),
        "0190b6c2-5a1e-7000-8000-00000000abcd".to_owned(),
    ] {
        let mut request = takeover.clone();
        request.supersedes_consent_id = id;
        let status = ips
            .consent
            .grant_consent(request)
            .await
            .expect_err("not the caller's to replace");
        supersede_refusals.push((status.code(), status.message().to_owned()));
    }
    assert_eq!(supersede_refusals[0], supersede_refusals[1]);
    assert_eq!(supersede_refusals[0].0, Code::PermissionDenied);
    let still = gw
        .jobseeker(&me)
        .await
        .consent
        .get_consent(GetConsentRequest {
            consent_id: consent.consent_id.clone(),
            version: 0,
        })
        .await
        .expect("the jobseeker reads it")
        .into_inner()
        .consent
        .expect("record");
    assert_eq!((still.version, still.status()), (1, ConsentStatus::Active));

    // NAV, named as the recipient of IPS's refused attempts and dry runs, never sees them: to
    // its privacy officer the log holds nothing of IPS about this jobseeker.
    let mut nav_officer = gw.caller("nav", "privacy_officer").await;
    let mut stream = nav_officer
        .audit
        .query_audit(casegate_proto::v1::QueryAuditRequest {
            subject_id: me.expose(),
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner();
    let ips_orgnr = gw.org("ips").orgnr.clone();
    let mut seen_by_nav = 0;
    while let Some(item) = stream.message().await.expect("entry") {
        let entry = item.entry.expect("entry");
        seen_by_nav += 1;
        assert!(
            entry.actor.as_ref().is_none_or(|a| a.orgnr != ips_orgnr),
            "NAV sees IPS's {:?}",
            entry.kind
        );
    }
    assert_eq!(seen_by_nav, 1, "NAV sees only its own query");

    // Another jobseeker asking for this one's consents is refused, and that look is logged.
    let status = gw
        .jobseeker(&nobody)
        .await
        .consent
        .list_consents(ListConsentsRequest {
            subject_id: me.expose(),
            ..Default::default()
        })
        .await
        .expect_err("not their own");
    assert_eq!(status.code(), Code::PermissionDenied);
    let portal_orgnr = gw.org("portal").orgnr.clone();
    let all = gw.audit_entries().await;
    let refused_list = all
        .iter()
        .map(|(_, e)| e)
        .find(|e| {
            e.kind() == EntryKind::ConsentsRead
                && e.actor().is_some_and(|a| a.orgnr == portal_orgnr)
                && e.reason() == Some("not_permitted")
        })
        .expect("the refused list is audited");
    assert!(refused_list.subject_pseudonym().is_some());

    // Every one of those looks is in the log, as IPS's.
    let entries: Vec<_> = gw
        .audit_entries()
        .await
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.actor().is_some_and(|a| a.orgnr == ips_orgnr))
        .collect();
    let of = |kind| entries.iter().filter(move |e| e.kind() == kind);
    let checks: Vec<_> = of(EntryKind::DisclosureChecked).collect();
    assert_eq!(checks.len(), 2, "both dry runs audited");
    assert!(checks.iter().all(|e| e.subject_pseudonym().is_some()
        && e.reason() == Some("no_consent")
        && e.consent().is_none()));
    assert_ne!(checks[0].subject_pseudonym(), checks[1].subject_pseudonym());
    let reads: Vec<_> = of(EntryKind::ConsentsRead).collect();
    assert_eq!(reads.len(), 3, "one list and two gets: {reads:?}");
    assert!(reads[0].subject_pseudonym().is_some());
    assert!(matches!(
        &reads[0].event,
        Event::ConsentsRead(ConsentsRead {
            read: ConsentRead::List { shown: 0 },
            ..
        })
    ));
    assert_eq!(
        reads[0].detail_text().as_deref(),
        Some("list_consents shown=0")
    );
    for refused in &reads[1..] {
        assert_eq!(
            refused.subject_pseudonym(),
            None,
            "a refused get names no subject"
        );
        assert_eq!(refused.consent(), None);
        assert_eq!(refused.reason(), Some("not_visible"));
    }
    let refusals: Vec<_> = of(EntryKind::DisclosureRefused).collect();
    assert_eq!(refusals.len(), 2);
    assert!(refusals.iter().all(|e| e.consent().is_none()));
}

#[tokio::test]
async fn withdrawal_bites_on_the_next_call_is_final_and_is_audited_pseudonymously() {
    let gw = TestGateway::start().await;
    let me = subject(7);
    let mut jobseeker = gw.jobseeker(&me).await;
    let consent = grant(&mut jobseeker, nav_grant(&gw, &me)).await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let clinic = party(&gw, "clinic", &[]);
    assert!(
        check(
            &mut nav,
            &me,
            clinic.clone(),
            "benefit_counselling",
            "ips_follow_up"
        )
        .await
        .0
    );

    let withdraw = WithdrawConsentRequest {
        consent_id: consent.consent_id.clone(),
        reason: String::new(),
        evidence: None,
    };
    let withdrawn = jobseeker
        .consent
        .withdraw_consent(withdraw.clone())
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(
        withdrawn.consent.expect("record").status(),
        ConsentStatus::Withdrawn
    );
    gw.verify_receipt(&withdrawn.receipt.expect("receipt"));
    assert_eq!(
        check(
            &mut nav,
            &me,
            clinic,
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::ConsentWithdrawn)
    );
    let again = jobseeker
        .consent
        .withdraw_consent(withdraw)
        .await
        .expect_err("final");
    assert_eq!(again.code(), Code::FailedPrecondition);

    let entries = gw.audit_entries().await;
    let kinds: Vec<EntryKind> = entries.iter().map(|(_, e)| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::GatewayStarted,
            EntryKind::ConsentGranted,
            EntryKind::DisclosureChecked,
            EntryKind::ConsentWithdrawn,
            EntryKind::DisclosureChecked,
        ]
    );
    let granted = &entries[1].1;
    let pinned = granted.consent().expect("consent ref");
    assert_eq!(
        (pinned.id.as_str(), pinned.version),
        (consent.consent_id.as_str(), 1)
    );
    assert_eq!(pinned.record_sha256.to_vec(), consent.record_hash);
    assert_eq!(
        granted.subject_pseudonym(),
        entries[2].1.subject_pseudonym()
    );
    for (bytes, _) in &entries {
        let digits = me.expose();
        assert!(
            !bytes.windows(digits.len()).any(|w| w == digits.as_bytes()),
            "an audit entry holds an identity number"
        );
    }
}

#[tokio::test]
async fn a_restarted_gateway_knows_every_acknowledged_grant_and_withdrawal() {
    let gw = TestGateway::start().await;
    let (kept, dropped) = (subject(8), subject(9));
    let kept_id = grant(&mut gw.jobseeker(&kept).await, nav_grant(&gw, &kept))
        .await
        .consent_id;
    let mut other = gw.jobseeker(&dropped).await;
    let dropped_id = grant(&mut other, nav_grant(&gw, &dropped)).await.consent_id;
    other
        .consent
        .withdraw_consent(WithdrawConsentRequest {
            consent_id: dropped_id.clone(),
            ..Default::default()
        })
        .await
        .expect("withdraw");

    let gw = gw.restart().await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let clinic = party(&gw, "clinic", &[]);
    assert!(
        check(
            &mut nav,
            &kept,
            clinic.clone(),
            "benefit_counselling",
            "ips_follow_up"
        )
        .await
        .0
    );
    assert_eq!(
        check(
            &mut nav,
            &dropped,
            clinic,
            "benefit_counselling",
            "ips_follow_up"
        )
        .await,
        (false, ReasonCode::ConsentWithdrawn)
    );
    for (id, status) in [
        (kept_id, ConsentStatus::Active),
        (dropped_id, ConsentStatus::Withdrawn),
    ] {
        let record = nav
            .consent
            .get_consent(GetConsentRequest {
                consent_id: id,
                version: 0,
            })
            .await
            .expect("get")
            .into_inner()
            .consent
            .expect("record");
        assert_eq!(record.status(), status);
    }
}

#[tokio::test]
async fn a_new_version_supersedes_the_old_one() {
    let gw = TestGateway::start().await;
    let me = subject(10);
    let mut jobseeker = gw.jobseeker(&me).await;
    let v1 = grant(&mut jobseeker, nav_grant(&gw, &me)).await;
    let mut narrower = nav_grant(&gw, &me);
    narrower.provisions[0].purposes = vec!["ips_follow_up".into()];
    narrower.supersedes_consent_id = v1.consent_id.clone();
    let v2 = grant(&mut jobseeker, narrower).await;
    assert_eq!(
        (v2.consent_id.as_str(), v2.version),
        (v1.consent_id.as_str(), 2)
    );
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let clinic = party(&gw, "clinic", &[]);
    assert_eq!(
        check(
            &mut nav,
            &me,
            clinic.clone(),
            "benefit_counselling",
            "benefit_planning"
        )
        .await,
        (false, ReasonCode::PurposeNotCovered)
    );
    assert!(
        check(
            &mut nav,
            &me,
            clinic,
            "benefit_counselling",
            "ips_follow_up"
        )
        .await
        .0
    );
    let history = jobseeker
        .consent
        .list_consents(ListConsentsRequest {
            subject_id: me.expose(),
            include_history: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .consents;
    let statuses: Vec<(u32, ConsentStatus)> =
        history.iter().map(|c| (c.version, c.status())).collect();
    assert_eq!(
        statuses,
        [(1, ConsentStatus::Superseded), (2, ConsentStatus::Active)]
    );
}

#[tokio::test]
async fn bad_requests_name_the_field_and_change_nothing() {
    let gw = TestGateway::start().await;
    let me = subject(11);
    let mut clinician = gw.caller("clinic", "clinician").await;
    let good = {
        let mut r = nav_grant(&gw, &me);
        r.evidence = Some(signed_form());
        r
    };
    let before = gw
        .caller("privacy", "privacy_officer")
        .await
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint
        .expect("checkpoint")
        .tree_size;

    type Edit = Box<dyn Fn(&mut GrantConsentRequest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("subject_id: required", Box::new(|r| r.subject_id.clear())),
        (
            "subject_id: national identity number check digits",
            Box::new(|r| r.subject_id = "01019012345".into()),
        ),
        (
            "subject_id: a national identity number or D-number has exactly 11 digits",
            Box::new(|r| r.subject_id = "123".into()),
        ),
        (
            "provisions: at least one provision is required",
            Box::new(|r| r.provisions.clear()),
        ),
        (
            "provisions[0].senders: at least one organisation",
            Box::new(|r| r.provisions[0].senders.clear()),
        ),
        (
            "provisions[0].senders[0].orgnr: organisation number check digit",
            Box::new(|r| r.provisions[0].senders[0].orgnr = "910000064".into()),
        ),
        (
            "provisions[0].recipients: at least one organisation",
            Box::new(|r| r.provisions[0].recipients.clear()),
        ),
        (
            "provisions[0].recipients[1].roles[0]: a role must be specified",
            Box::new(|r| r.provisions[0].recipients[1].roles = vec![0]),
        ),
        (
            "provisions[0].recipients[1].roles[0]: unknown role value 99",
            Box::new(|r| r.provisions[0].recipients[1].roles = vec![99]),
        ),
        (
            "provisions[0].categories[0]: unknown category \"horoscope\"",
            Box::new(|r| r.provisions[0].categories = vec!["horoscope".into()]),
        ),
        (
            "provisions[0].categories: must not be empty",
            Box::new(|r| r.provisions[0].categories.clear()),
        ),
        (
            "provisions[0].purposes[1]: unknown purpose \"marketing\"",
            Box::new(|r| r.provisions[0].purposes[1] = "marketing".into()),
        ),
        (
            "provisions[0].purposes[0]: a vocabulary term is",
            Box::new(|r| r.provisions[0].purposes[0] = "Bad Term".into()),
        ),
        ("period: required", Box::new(|r| r.period = None)),
        (
            "period.start: required",
            Box::new(|r| r.period.as_mut().expect("period").start = None),
        ),
        (
            "period.end: end must be after start",
            Box::new(|r| r.period.as_mut().expect("period").end = Some(ts(now() - 7200))),
        ),
        (
            "period.end: is longer than the maximum consent period of 365 days",
            Box::new(|r| r.period.as_mut().expect("period").end = Some(ts(now() + 400 * DAY))),
        ),
        (
            "period.end: nanos must be within",
            Box::new(|r| {
                r.period.as_mut().expect("period").end = Some(prost_types::Timestamp {
                    seconds: now() + DAY,
                    nanos: -1,
                })
            }),
        ),
        (
            "evidence: required when a professional records it",
            Box::new(|r| r.evidence = None),
        ),
        (
            "evidence: one of digital, signed_form or verbal is required",
            Box::new(|r| r.evidence = Some(Evidence { kind: None })),
        ),
        (
            "evidence.signed_form.sha256: must be 32 bytes (SHA-256), got 3",
            Box::new(|r| {
                r.evidence = Some(Evidence {
                    kind: Some(Kind::SignedForm(SignedForm {
                        sha256: vec![1, 2, 3],
                        reference: "x".into(),
                    })),
                })
            }),
        ),
        (
            "evidence.verbal.witness_user_id: required",
            Box::new(|r| {
                r.evidence = Some(Evidence {
                    kind: Some(Kind::Verbal(VerbalConsent {
                        witness_user_id: " ".into(),
                        witness_role: Role::Clinician as i32,
                        given_at: Some(ts(now())),
                    })),
                })
            }),
        ),
        (
            "evidence.digital: only the jobseeker's own grant is digital",
            Box::new(|r| {
                r.evidence = Some(Evidence {
                    kind: Some(Kind::Digital(Default::default())),
                })
            }),
        ),
        (
            "supersedes_consent_id: a consent id is a UUID",
            Box::new(|r| r.supersedes_consent_id = "not-a-uuid".into()),
        ),
    ];
    assert!(cases.len() >= 15);
    for (expected, edit) in &cases {
        let mut request = good.clone();
        edit(&mut request);
        let status = clinician
            .consent
            .grant_consent(request)
            .await
            .expect_err("invalid");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{expected}: {status:?}"
        );
        assert!(
            status.message().starts_with(expected),
            "expected {expected:?}, got {:?}",
            status.message()
        );
    }
    // Other RPCs name their fields too.
    let status = clinician
        .consent
        .get_consent(GetConsentRequest {
            consent_id: "x".into(),
            version: 0,
        })
        .await
        .expect_err("bad id");
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "consent_id: a consent id is a UUID")
    );
    let status = clinician
        .consent
        .check_disclosure(CheckDisclosureRequest {
            subject_id: me.expose(),
            ..Default::default()
        })
        .await
        .expect_err("no recipient");
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "recipient: required")
    );
    let status = clinician
        .consent
        .list_consents(ListConsentsRequest {
            subject_id: me.expose(),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Nothing changed: no consent stored, nothing audited but the valid read that shows it.
    let listed = clinician
        .consent
        .list_consents(ListConsentsRequest {
            subject_id: me.expose(),
            include_history: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .consents;
    assert!(listed.is_empty());
    let entries = gw.audit_entries().await;
    assert_eq!(entries.len() as u64, before + 1);
    assert_eq!(
        entries.last().map(|(_, e)| e.kind()),
        Some(EntryKind::ConsentsRead)
    );
    // And the good request does work.
    clinician
        .consent
        .grant_consent(good)
        .await
        .expect("valid grant");
}

#[tokio::test]
async fn a_professional_records_a_withdrawal_with_evidence() {
    let gw = TestGateway::start().await;
    let me = subject(12);
    let id = grant(&mut gw.jobseeker(&me).await, nav_grant(&gw, &me))
        .await
        .consent_id;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let without = nav
        .consent
        .withdraw_consent(WithdrawConsentRequest {
            consent_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("evidence needed");
    assert_eq!(without.code(), Code::InvalidArgument);
    assert!(
        without.message().starts_with("evidence: required"),
        "{}",
        without.message()
    );
    // An organisation the consent does not name cannot even see it.
    let outsider = gw
        .caller("privacy", "privacy_officer")
        .await
        .consent
        .withdraw_consent(WithdrawConsentRequest {
            consent_id: id.clone(),
            evidence: Some(signed_form()),
            ..Default::default()
        })
        .await
        .expect_err("not a party");
    assert_eq!(outsider.code(), Code::PermissionDenied);
    let withdrawn = nav
        .consent
        .withdraw_consent(WithdrawConsentRequest {
            consent_id: id,
            reason: "told the counsellor by phone".into(),
            evidence: Some(signed_form()),
        })
        .await
        .expect("withdraw")
        .into_inner()
        .consent
        .expect("record");
    assert_eq!(withdrawn.status(), ConsentStatus::Withdrawn);
    let by = withdrawn.withdrawal.expect("withdrawal").by.expect("actor");
    assert_eq!(
        (by.orgnr, by.role),
        (gw.org("nav").orgnr.clone(), Role::NavCounsellor as i32)
    );
}

#[tokio::test]
async fn export_streams_every_entry_across_chunks() {
    let gw = TestGateway::start().await;
    let me = subject(13);
    let mut jobseeker = gw.jobseeker(&me).await;
    // 300 grants: more than one export chunk of entries.
    for _ in 0..300 {
        jobseeker
            .consent
            .grant_consent(nav_grant(&gw, &me))
            .await
            .expect("grant");
    }
    let entries = gw.audit_entries().await;
    assert_eq!(entries.len(), 301);
    assert_eq!(
        entries
            .iter()
            .filter(|(_, e)| e.kind() == EntryKind::ConsentGranted)
            .count(),
        300
    );
}
