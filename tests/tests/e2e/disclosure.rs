//! Disclosures: refused without consent (audited, reason machine-readable), permitted with
//! one, with a receipt that verifies offline; idempotent by request id; bad input named and
//! changing nothing; bodies sealed at rest.

use casegate_audit::entry::{Entry, EntryKind};
use casegate_proto::v1::{ApprovalAttestation, DiscloseRequest, DisclosureReceipt};
use casegate_tests::{
    Caller, TestGateway,
    scenario::{
        approval, backlog, grant_ips_consent, ips_scenario, next_event, now, reason, subject,
        update,
    },
};
use tonic::Code;
use tonic_types::StatusExt;

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

    grant_ips_consent(&gw, &me).await;
    // The same request id is free again after a refusal.
    let receipt = nav
        .disclose_permitted(update(&gw, &me, "nav-1", "income rises in May"))
        .await;
    verify(&gw, &receipt, b"income rises in May");
    assert_eq!(receipt.consent_version, 1);

    let kinds: Vec<(EntryKind, Option<String>)> = entries(&gw)
        .await
        .into_iter()
        .map(|e| {
            (
                e.kind(),
                e.reason().or(e.disclosure_id()).map(str::to_owned),
            )
        })
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
    grant_ips_consent(&gw, &me).await;
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
    assert_eq!(reason(&status), "approval_missing");
    summary.approval = Some(approval(300));
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
    grant_ips_consent(&gw, &me).await;
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
    grant_ips_consent(&gw, &me).await;
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
    grant_ips_consent(&gw, &me).await;
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
#[tokio::test]
async fn the_ips_scenario_from_refusal_to_withdrawal() {
    let gw = TestGateway::start().await;
    let me = subject(6);
    let outcome = ips_scenario(&gw, &me).await;
    verify(&gw, &outcome.first, b"wage support from June");

    // 8. The log holds every step and verifies offline.
    let kinds: Vec<EntryKind> = entries(&gw).await.into_iter().map(|e| e.kind()).collect();
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
    let gw = TestGateway::start().await;
    let me = subject(7);
    grant_ips_consent(&gw, &me).await;
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
    let mut stream = ips.inbox().await;
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
    use casegate_proto::v1::AcknowledgeRequest;

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
    grant_ips_consent(&gw, &me).await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let read = nav
        .disclose_permitted(update(&gw, &me, "p-1", "read and acknowledged"))
        .await;
    let mut ips = gw.caller("ips", "employment_specialist").await;
    let mut stream = ips.inbox().await;
    assert_eq!(backlog(&mut stream).await.len(), 1);
    drop(stream);
    ips.disclosure
        .acknowledge(AcknowledgeRequest {
            disclosure_id: read.disclosure_id.clone(),
        })
        .await
        .expect("ack");
    let unread = nav
        .disclose_permitted(update(&gw, &me, "p-2", "never read"))
        .await;

    // Retention 0 s: the acknowledged body goes at the next sweep; TTL 2 s: the unread one after.
    let mut reasons = Vec::new();
    for _ in 0..60 {
        reasons = entries(&gw)
            .await
            .into_iter()
            .filter(|e| e.kind() == EntryKind::NotePurged)
            .map(|e| {
                (
                    e.disclosure_id().unwrap_or_default().to_owned(),
                    e.reason().unwrap_or_default().to_owned(),
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
    let mut stream = ips.inbox().await;
    assert!(
        backlog(&mut stream).await.is_empty(),
        "a purged note was delivered"
    );
}

#[tokio::test]
async fn a_backlog_longer_than_a_page_arrives_whole_in_order_then_live_notes_follow() {
    use casegate_proto::v1::stream_inbox_response::Event;

    let gw = TestGateway::start().await;
    let me = subject(9);
    grant_ips_consent(&gw, &me).await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    // More than two of the stream's backlog pages.
    let sent: Vec<String> = (0..150).map(|i| format!("backlog note {i:03}")).collect();
    for (i, body) in sent.iter().enumerate() {
        nav.disclose_permitted(update(&gw, &me, &format!("b-{i}"), body))
            .await;
    }

    let mut ips = gw.caller("ips", "employment_specialist").await;
    let mut stream = ips.inbox().await;
    let received: Vec<String> = backlog(&mut stream)
        .await
        .into_iter()
        .map(|n| String::from_utf8(n.body).expect("utf8"))
        .collect();
    assert_eq!(received, sent, "every note once, oldest first");

    let live = nav
        .disclose_permitted(update(&gw, &me, "b-live", "live note"))
        .await;
    match next_event(&mut stream).await {
        Event::Note(note) => assert_eq!(note.disclosure_id, live.disclosure_id),
        other => panic!("expected the live note, got {other:?}"),
    }
}

#[tokio::test]
async fn a_long_backlog_arrives_in_inbox_order_with_every_delivery_audited_once() {
    let gw = TestGateway::start().await;
    let me = subject(1);
    grant_ips_consent(&gw, &me).await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    // More than two pages (64 notes each) of deliveries.
    let mut sent = Vec::new();
    for i in 0..150 {
        let receipt = nav
            .disclose_permitted(update(
                &gw,
                &me,
                &format!("backlog-{i}"),
                &format!("note {i}"),
            ))
            .await;
        sent.push(receipt.disclosure_id);
    }
    let mut ips = gw.caller("ips", "employment_specialist").await;
    let mut stream = ips.inbox().await;
    let received: Vec<String> = backlog(&mut stream)
        .await
        .into_iter()
        .map(|n| n.disclosure_id)
        .collect();
    assert_eq!(received, sent, "every note, in disclosure order");
    let delivered: Vec<String> = entries(&gw)
        .await
        .into_iter()
        .filter(|e| e.kind() == EntryKind::NoteDelivered)
        .filter_map(|e| e.disclosure_id().map(str::to_owned))
        .collect();
    let mut audited = delivered.clone();
    audited.sort();
    audited.dedup();
    assert_eq!(audited.len(), delivered.len(), "each delivery audited once");
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(audited, expected, "every delivery audited");
}
