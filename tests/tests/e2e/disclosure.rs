//! Disclosures: refused without consent (audited, reason machine-readable), permitted with
//! one, with a receipt that verifies offline; idempotent by request id; bad input named and
//! changing nothing; bodies sealed at rest.

use casegate_audit::entry::{Entry, EntryKind};
use casegate_consent::SubjectId;
use casegate_proto::v1::{
    ApprovalAttestation, DiscloseRequest, DisclosureReceipt, GrantConsentRequest, Party, Period,
    Provision, Role,
};
use casegate_tests::{Caller, TestGateway};
use tonic::Code;
use tonic_types::StatusExt;

const DAY: i64 = 86_400;

fn subject(n: usize) -> SubjectId {
    SubjectId::synthetic_all()
        .nth(1000 + n)
        .expect("synthetic subject")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn party(gw: &TestGateway, org: &str, roles: &[Role]) -> Party {
    Party {
        orgnr: gw.org(org).orgnr.clone(),
        roles: roles.iter().map(|r| *r as i32).collect(),
    }
}

/// The IPS consent: NAV → IPS specialists (benefit counselling) and clinic → IPS specialists
/// (treatment summaries), for IPS follow-up.
fn ips_consent(gw: &TestGateway, subject: &SubjectId) -> GrantConsentRequest {
    let ips = party(gw, "ips", &[Role::EmploymentSpecialist]);
    GrantConsentRequest {
        subject_id: subject.expose(),
        provisions: vec![
            Provision {
                senders: vec![party(gw, "nav", &[])],
                recipients: vec![ips.clone()],
                categories: vec!["benefit_counselling".into()],
                purposes: vec!["ips_follow_up".into()],
            },
            Provision {
                senders: vec![party(gw, "clinic", &[Role::Clinician])],
                recipients: vec![ips],
                categories: vec!["treatment_summary".into()],
                purposes: vec!["ips_follow_up".into()],
            },
        ],
        period: Some(Period {
            start: Some(prost_types::Timestamp {
                seconds: now() - 60,
                nanos: 0,
            }),
            end: Some(prost_types::Timestamp {
                seconds: now() + 30 * DAY,
                nanos: 0,
            }),
        }),
        evidence: None,
        supersedes_consent_id: String::new(),
    }
}

fn update(gw: &TestGateway, subject: &SubjectId, request_id: &str, body: &str) -> DiscloseRequest {
    DiscloseRequest {
        request_id: request_id.into(),
        subject_id: subject.expose(),
        recipient_orgnr: gw.org("ips").orgnr.clone(),
        recipient_role: Role::EmploymentSpecialist as i32,
        category: "benefit_counselling".into(),
        purpose: "ips_follow_up".into(),
        title: "Benefit update".into(),
        body: body.as_bytes().to_vec(),
        content_type: "text/plain; charset=utf-8".into(),
        approval: None,
    }
}

fn verify(gw: &TestGateway, receipt: &DisclosureReceipt, body: &[u8]) {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    assert_eq!(receipt.content_sha256, digest.as_ref());
    gw.verify_receipt(receipt.audit.as_ref().expect("audit receipt"));
}

async fn entries(gw: &TestGateway) -> Vec<Entry> {
    gw.audit_entries()
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

#[tokio::test]
async fn a_disclosure_is_refused_without_consent_and_permitted_with_a_verifying_receipt() {
    let gw = TestGateway::start().await;
    let me = subject(1);
    let mut nav = gw.caller("nav", "nav_counsellor").await;

    let refused = nav
        .disclosure
        .disclose(update(&gw, &me, "nav-1", "income rises in May"))
        .await
        .expect_err("no consent yet");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let info = refused.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("no_consent", "casegate.no")
    );

    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant");
    // The same request id is free again after a refusal.
    let receipt = nav
        .disclosure
        .disclose(update(&gw, &me, "nav-1", "income rises in May"))
        .await
        .expect("permitted")
        .into_inner()
        .receipt
        .expect("receipt");
    verify(&gw, &receipt, b"income rises in May");
    assert_eq!(receipt.consent_version, 1);

    let kinds: Vec<(EntryKind, Option<String>)> = entries(&gw)
        .await
        .into_iter()
        .map(|e| (e.kind, e.reason.or(e.disclosure_id)))
        .collect();
    assert_eq!(
        kinds,
        [
            (EntryKind::GatewayStarted, None),
            (EntryKind::DisclosureRefused, Some("no_consent".into())),
            (EntryKind::ConsentGranted, None),
            (
                EntryKind::DisclosurePermitted,
                Some(receipt.disclosure_id.clone())
            ),
        ]
    );
}

#[tokio::test]
async fn a_treatment_summary_needs_the_clinicians_approval() {
    let gw = TestGateway::start().await;
    let me = subject(2);
    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant");
    let mut clinic = gw.caller("clinic", "clinician").await;
    let mut summary = update(&gw, &me, "dips-77", "can work 50% with quiet surroundings");
    summary.category = "treatment_summary".into();
    summary.title = "Approved summary".into();
    let status = clinic
        .disclosure
        .disclose(summary.clone())
        .await
        .expect_err("no approval");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.get_details_error_info().expect("detail").reason,
        "approval_missing"
    );
    summary.approval = Some(ApprovalAttestation {
        hpr_number: "9144889".into(),
        approved_at: Some(prost_types::Timestamp {
            seconds: now() - 300,
            nanos: 0,
        }),
    });
    let receipt = clinic
        .disclosure
        .disclose(summary)
        .await
        .expect("approved")
        .into_inner();
    verify(
        &gw,
        &receipt.receipt.expect("receipt"),
        b"can work 50% with quiet surroundings",
    );
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_same_receipt_or_already_exists() {
    let gw = TestGateway::start().await;
    let me = subject(3);
    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant");
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let first = nav
        .disclosure
        .disclose(update(&gw, &me, "r-1", "one"))
        .await
        .expect("first")
        .into_inner();
    let before = entries(&gw).await.len();
    let again = nav
        .disclosure
        .disclose(update(&gw, &me, "r-1", "one"))
        .await
        .expect("again")
        .into_inner();
    let (a, b) = (
        first.receipt.expect("receipt"),
        again.receipt.expect("receipt"),
    );
    assert_eq!(a.disclosure_id, b.disclosure_id);
    let (ia, ib) = (a.audit.expect("audit"), b.audit.clone().expect("audit"));
    assert_eq!(
        (ia.audit_index, ia.leaf_hash),
        (ib.audit_index, ib.leaf_hash)
    );
    verify(&gw, &b, b"one");
    assert_eq!(entries(&gw).await.len(), before, "nothing audited twice");

    let status = nav
        .disclosure
        .disclose(update(&gw, &me, "r-1", "something else"))
        .await
        .expect_err("different content");
    assert_eq!(status.code(), Code::AlreadyExists);
    // Another sender may use the same request id.
    let mut other = update(&gw, &me, "r-1", "one");
    other.category = "treatment_summary".into();
    other.approval = Some(ApprovalAttestation {
        hpr_number: "1234567".into(),
        approved_at: Some(prost_types::Timestamp {
            seconds: now(),
            nanos: 0,
        }),
    });
    gw.caller("clinic", "clinician")
        .await
        .disclosure
        .disclose(other)
        .await
        .expect("own request ids");
}

#[tokio::test]
async fn bad_disclosures_name_the_field_and_change_nothing() {
    let gw = TestGateway::start_with("[limits]\nmax_body_bytes = 1024\n").await;
    let me = subject(4);
    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant");
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let before = entries(&gw).await.len();
    type Edit = Box<dyn Fn(&mut DiscloseRequest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("request_id: required", Box::new(|r| r.request_id.clear())),
        (
            "request_id: at most 128 bytes",
            Box::new(|r| r.request_id = "x".repeat(129)),
        ),
        (
            "subject_id: national identity number check digits",
            Box::new(|r| r.subject_id = "01019012345".into()),
        ),
        (
            "recipient_orgnr: required",
            Box::new(|r| r.recipient_orgnr.clear()),
        ),
        (
            "recipient_orgnr: organisation number check digit",
            Box::new(|r| r.recipient_orgnr = "910000099".into()),
        ),
        (
            "recipient_role: unknown role value 42",
            Box::new(|r| r.recipient_role = 42),
        ),
        ("category: required", Box::new(|r| r.category.clear())),
        (
            "purpose: a vocabulary term is",
            Box::new(|r| r.purpose = "Ips Follow Up".into()),
        ),
        ("title: required", Box::new(|r| r.title.clear())),
        (
            "title: at most 200 bytes",
            Box::new(|r| r.title = "t".repeat(201)),
        ),
        ("body: required", Box::new(|r| r.body.clear())),
        (
            "body: 1025 bytes is over the limit of 1024 bytes",
            Box::new(|r| r.body = vec![b'x'; 1025]),
        ),
        (
            "content_type: required",
            Box::new(|r| r.content_type.clear()),
        ),
        (
            "approval.hpr_number: an HPR number is 1-9 digits",
            Box::new(|r| {
                r.approval = Some(ApprovalAttestation {
                    hpr_number: "abc".into(),
                    approved_at: None,
                })
            }),
        ),
        (
            "approval.approved_at: required",
            Box::new(|r| {
                r.approval = Some(ApprovalAttestation {
                    hpr_number: "123".into(),
                    approved_at: None,
                })
            }),
        ),
    ];
    for (expected, edit) in &cases {
        let mut request = update(&gw, &me, "bad", "body");
        edit(&mut request);
        let status = nav.disclosure.disclose(request).await.expect_err("invalid");
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
    let status = gw
        .caller("privacy", "privacy_officer")
        .await
        .disclosure
        .disclose(update(&gw, &me, "po", "body"))
        .await
        .expect_err("wrong role");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        entries(&gw).await.len(),
        before,
        "bad input is not audited and stores nothing"
    );
    // The request id "bad" was never taken.
    nav.disclosure
        .disclose(update(&gw, &me, "bad", "body"))
        .await
        .expect("valid");
}

#[tokio::test]
async fn bodies_and_identity_numbers_are_sealed_at_rest() {
    let gw = TestGateway::start().await;
    let me = subject(5);
    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant");
    let marker = "MARKER-benefit-update-7f3a";
    let mut nav: Caller = gw.caller("nav", "nav_counsellor").await;
    let mut request = update(&gw, &me, "sealed-1", marker);
    request.title = "TITLE-MARKER-91c2".into();
    nav.disclosure.disclose(request).await.expect("permitted");
    // Every note is flushed before its receipt is given: what is on disk now is all there is.
    let data = gw.data_dir();
    let mut found = Vec::new();
    for entry in walk(&data.join("notes")) {
        let bytes = std::fs::read(&entry).expect("read");
        for needle in [
            marker.as_bytes(),
            b"TITLE-MARKER-91c2",
            me.expose().as_bytes(),
        ] {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(entry.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "plaintext found in {found:?}");
    assert!(
        !walk(&data.join("notes")).is_empty(),
        "the note store is on disk"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Reads an inbox stream until its backlog is complete; returns the notes.
async fn backlog(
    stream: &mut tonic::Streaming<casegate_proto::v1::StreamInboxResponse>,
) -> Vec<casegate_proto::v1::InboxNote> {
    use casegate_proto::v1::stream_inbox_response::Event;
    let mut notes = Vec::new();
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("stream answers in time")
            .expect("stream ok")
            .expect("stream open");
        match message.event.expect("event") {
            Event::Note(note) => notes.push(note),
            Event::BacklogComplete(done) => {
                assert_eq!(done.delivered as usize, notes.len());
                return notes;
            }
        }
    }
}

#[tokio::test]
async fn the_ips_scenario_from_refusal_to_withdrawal() {
    use casegate_proto::v1::{
        AcknowledgeRequest, StreamInboxRequest, WithdrawConsentRequest,
        stream_inbox_response::Event,
    };

    let gw = TestGateway::start().await;
    let me = subject(6);
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let mut clinic = gw.caller("clinic", "clinician").await;
    let mut ips = gw.caller("ips", "employment_specialist").await;
    let mut jobseeker = gw.jobseeker(&me).await;

    // 1. No consent yet: refused.
    let status = nav
        .disclosure
        .disclose(update(&gw, &me, "s-1", "wage support from June"))
        .await
        .expect_err("refused");
    assert_eq!(
        status.get_details_error_info().expect("detail").reason,
        "no_consent"
    );

    // 2. The jobseeker grants consent in the portal; 3. the same update now goes through.
    let consent = jobseeker
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant")
        .into_inner()
        .consent
        .expect("record");
    let receipt = nav
        .disclosure
        .disclose(update(&gw, &me, "s-1", "wage support from June"))
        .await
        .expect("permitted")
        .into_inner()
        .receipt
        .expect("receipt");
    verify(&gw, &receipt, b"wage support from June");

    // 4. The IPS team's stream receives it (backlog) and acknowledges it.
    let mut stream = ips
        .disclosure
        .stream_inbox(StreamInboxRequest { role: 0 })
        .await
        .expect("stream")
        .into_inner();
    let notes = backlog(&mut stream).await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].disclosure_id, receipt.disclosure_id);
    assert_eq!(
        (notes[0].body.as_slice(), notes[0].subject_id.as_str()),
        (b"wage support from June".as_slice(), me.expose().as_str())
    );
    let ack = ips
        .disclosure
        .acknowledge(AcknowledgeRequest {
            disclosure_id: receipt.disclosure_id.clone(),
        })
        .await
        .expect("ack")
        .into_inner();
    assert!(ack.purge_after.is_some());
    let again = ips
        .disclosure
        .acknowledge(AcknowledgeRequest {
            disclosure_id: receipt.disclosure_id.clone(),
        })
        .await
        .expect_err("once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    // Another organisation cannot acknowledge (or learn about) it.
    let other = clinic
        .disclosure
        .acknowledge(AcknowledgeRequest {
            disclosure_id: receipt.disclosure_id.clone(),
        })
        .await
        .expect_err("not theirs");
    assert_eq!(other.code(), Code::PermissionDenied);

    // 5. The clinic's approved summary reaches the open stream live; without approval: refused.
    let mut summary = update(&gw, &me, "dips-1", "approved: can start at 40%");
    summary.category = "treatment_summary".into();
    let status = clinic
        .disclosure
        .disclose(summary.clone())
        .await
        .expect_err("no approval");
    assert_eq!(
        status.get_details_error_info().expect("detail").reason,
        "approval_missing"
    );
    summary.approval = Some(ApprovalAttestation {
        hpr_number: "9144889".into(),
        approved_at: Some(prost_types::Timestamp {
            seconds: now() - 60,
            nanos: 0,
        }),
    });
    let live_receipt = clinic
        .disclosure
        .disclose(summary)
        .await
        .expect("approved")
        .into_inner()
        .receipt
        .expect("receipt");
    let live = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("live note in time")
        .expect("ok")
        .expect("open");
    let Some(Event::Note(live)) = live.event else {
        panic!("expected a note")
    };
    assert_eq!(live.disclosure_id, live_receipt.disclosure_id);
    assert_eq!(live.approval.expect("approval").hpr_number, "9144889");
    drop(stream);

    // 6. A note waits undelivered; the jobseeker withdraws: it is purged and never delivered.
    let waiting = nav
        .disclosure
        .disclose(update(&gw, &me, "s-2", "never to be read"))
        .await
        .expect("permitted")
        .into_inner()
        .receipt
        .expect("receipt");
    let withdrawn = jobseeker
        .consent
        .withdraw_consent(WithdrawConsentRequest {
            consent_id: consent.consent_id.clone(),
            ..Default::default()
        })
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(withdrawn.purged_notes, 1);
    let mut stream = ips
        .disclosure
        .stream_inbox(StreamInboxRequest { role: 0 })
        .await
        .expect("stream")
        .into_inner();
    let remaining = backlog(&mut stream).await;
    assert!(
        remaining
            .iter()
            .all(|n| n.disclosure_id != waiting.disclosure_id),
        "a purged note was delivered"
    );
    drop(stream);

    // 7. The next update is refused.
    let status = nav
        .disclosure
        .disclose(update(&gw, &me, "s-3", "too late"))
        .await
        .expect_err("withdrawn");
    assert_eq!(
        status.get_details_error_info().expect("detail").reason,
        "consent_withdrawn"
    );

    // 8. The log holds every step and verifies offline.
    let kinds: Vec<EntryKind> = entries(&gw).await.into_iter().map(|e| e.kind).collect();
    for expected in [
        EntryKind::DisclosureRefused,
        EntryKind::ConsentGranted,
        EntryKind::DisclosurePermitted,
        EntryKind::NoteDelivered,
        EntryKind::NoteAcknowledged,
        EntryKind::ConsentWithdrawn,
        EntryKind::NotePurged,
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected:?} missing from {kinds:?}"
        );
    }
    let report =
        casegate_audit::verify::verify(&gw.data_dir().join("audit"), &gw.audit_verifier, None)
            .expect("the log verifies offline");
    assert!(report.entries as usize >= kinds.len());
}

#[tokio::test]
async fn notes_sealed_before_a_key_rotation_are_delivered_intact() {
    use casegate_proto::v1::StreamInboxRequest;

    let gw = TestGateway::start().await;
    let me = subject(7);
    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant");
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    nav.disclosure
        .disclose(update(&gw, &me, "k-1", "sealed with the first key"))
        .await
        .expect("permitted");

    let gw = gw
        .restart_after(|config| {
            let code = casegate::cli::rotate_notes(config);
            assert_eq!(code, std::process::ExitCode::SUCCESS, "rotate-notes");
            let keyring =
                std::fs::read_to_string(config.with_file_name("notes.keyring")).expect("keyring");
            assert_eq!(
                keyring
                    .lines()
                    .map(|l| l.split(' ').next().unwrap_or(""))
                    .collect::<Vec<_>>(),
                ["k1", "k2"]
            );
        })
        .await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    nav.disclosure
        .disclose(update(&gw, &me, "k-2", "sealed with the second key"))
        .await
        .expect("permitted");

    let mut ips = gw.caller("ips", "employment_specialist").await;
    let mut stream = ips
        .disclosure
        .stream_inbox(StreamInboxRequest { role: 0 })
        .await
        .expect("stream")
        .into_inner();
    let mut bodies: Vec<String> = backlog(&mut stream)
        .await
        .into_iter()
        .map(|n| String::from_utf8(n.body).expect("utf8"))
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["sealed with the first key", "sealed with the second key"]
    );
}

#[tokio::test]
async fn bodies_are_purged_after_retention_and_ttl_and_the_purges_are_audited() {
    use casegate_proto::v1::{AcknowledgeRequest, StreamInboxRequest};

    let gw = TestGateway::start_with_overrides(
        "",
        &[
            ("CASEGATE_NOTES__RETENTION", "0s"),
            ("CASEGATE_NOTES__TTL", "2s"),
            ("CASEGATE_NOTES__SWEEP_INTERVAL", "100ms"),
        ],
    )
    .await;
    let me = subject(8);
    gw.jobseeker(&me)
        .await
        .consent
        .grant_consent(ips_consent(&gw, &me))
        .await
        .expect("grant");
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let read = nav
        .disclosure
        .disclose(update(&gw, &me, "p-1", "read and acknowledged"))
        .await
        .expect("permitted")
        .into_inner()
        .receipt
        .expect("receipt");
    let mut ips = gw.caller("ips", "employment_specialist").await;
    let mut stream = ips
        .disclosure
        .stream_inbox(StreamInboxRequest { role: 0 })
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(backlog(&mut stream).await.len(), 1);
    drop(stream);
    ips.disclosure
        .acknowledge(AcknowledgeRequest {
            disclosure_id: read.disclosure_id.clone(),
        })
        .await
        .expect("ack");
    let unread = nav
        .disclosure
        .disclose(update(&gw, &me, "p-2", "never read"))
        .await
        .expect("permitted")
        .into_inner()
        .receipt
        .expect("receipt");

    // Retention 0 s: the acknowledged body goes at the next sweep; TTL 2 s: the unread one after.
    let mut reasons = Vec::new();
    for _ in 0..60 {
        reasons = entries(&gw)
            .await
            .into_iter()
            .filter(|e| e.kind == EntryKind::NotePurged)
            .map(|e| {
                (
                    e.disclosure_id.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                )
            })
            .collect();
        if reasons.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    reasons.sort();
    let mut expected = vec![
        (read.disclosure_id, "retention_elapsed".to_owned()),
        (unread.disclosure_id, "ttl_elapsed".to_owned()),
    ];
    expected.sort();
    assert_eq!(reasons, expected);
    let mut stream = ips
        .disclosure
        .stream_inbox(StreamInboxRequest { role: 0 })
        .await
        .expect("stream")
        .into_inner();
    assert!(
        backlog(&mut stream).await.is_empty(),
        "a purged note was delivered"
    );
}
