//! The IPS scenario, step by step, shared by the tests that check what it leaves behind:
//! NAV's update refused without consent; the jobseeker grants consent in the portal; the update
//! permitted with a verifying receipt, streamed to the IPS team and acknowledged; the clinic's
//! summary refused without and delivered with the clinician's approval; a waiting note purged
//! by the jobseeker's withdrawal; the next update refused.

use casegate_consent::SubjectId;
use casegate_proto::v1::{
    AcknowledgeRequest, ApprovalAttestation, DiscloseRequest, DisclosureReceipt,
    GrantConsentRequest, Party, Period, Provision, Role, WithdrawConsentRequest,
    stream_inbox_response::Event,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::TestGateway;

pub const DAY: i64 = 86_400;

pub fn subject(n: usize) -> SubjectId {
    SubjectId::synthetic_all()
        .nth(1000 + n)
        .expect("synthetic subject")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub fn party(gw: &TestGateway, org: &str, roles: &[Role]) -> Party {
    Party {
        orgnr: gw.org(org).orgnr.clone(),
        roles: roles.iter().map(|r| *r as i32).collect(),
    }
}

/// The jobseeker `subject` grants [`ips_consent`] through the portal.
pub async fn grant_ips_consent(gw: &TestGateway, subject: &SubjectId) {
    gw.jobseeker(subject)
        .await
        .consent
        .grant_consent(ips_consent(gw, subject))
        .await
        .expect("grant");
}

/// The jobseeker `subject`'s own consents (newest version of each), as the portal lists them.
pub async fn own_consents(
    gw: &TestGateway,
    subject: &SubjectId,
) -> Vec<casegate_proto::v1::ConsentRecord> {
    gw.jobseeker(subject)
        .await
        .consent
        .list_consents(casegate_proto::v1::ListConsentsRequest {
            subject_id: subject.expose(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .consents
}

/// The IPS consent: NAV → IPS specialists (benefit counselling) and clinic → IPS specialists
/// (treatment summaries), for IPS follow-up.
pub fn ips_consent(gw: &TestGateway, subject: &SubjectId) -> GrantConsentRequest {
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

pub fn update(
    gw: &TestGateway,
    subject: &SubjectId,
    request_id: &str,
    body: &str,
) -> DiscloseRequest {
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

/// A clinician's approval attestation (a synthetic HPR number), given `age_seconds` ago.
pub fn approval(age_seconds: i64) -> ApprovalAttestation {
    ApprovalAttestation {
        hpr_number: "9144889".into(),
        approved_at: Some(prost_types::Timestamp {
            seconds: now() - age_seconds,
            nanos: 0,
        }),
    }
}

/// The refusal reason code in a status's `google.rpc.ErrorInfo`.
pub fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().expect("detail").reason
}

/// The next event of an inbox stream, waiting at most 10 s.
pub async fn next_event(
    stream: &mut tonic::Streaming<casegate_proto::v1::StreamInboxResponse>,
) -> Event {
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("stream answers in time")
        .expect("stream ok")
        .expect("stream open")
        .event
        .expect("event")
}

/// The next backlog of an inbox stream: its notes, up to the backlog-complete marker.
pub async fn backlog(
    stream: &mut tonic::Streaming<casegate_proto::v1::StreamInboxResponse>,
) -> Vec<casegate_proto::v1::InboxNote> {
    let mut notes = Vec::new();
    loop {
        match next_event(stream).await {
            Event::Note(note) => notes.push(note),
            Event::BacklogComplete(done) => {
                assert_eq!(done.delivered as usize, notes.len());
                return notes;
            }
        }
    }
}

/// The notes' titles and bodies the scenario sent (none may appear outside an inbox).
pub const CONTENT: [&str; 6] = [
    "Benefit update",
    "wage support from June",
    "approved: can start at 40%",
    "never to be read",
    "too late",
    "9144889",
];

/// What the scenario leaves for later checks.
#[derive(Debug)]
pub struct Outcome {
    pub consent_id: String,
    pub first: DisclosureReceipt,
    pub summary: DisclosureReceipt,
    pub purged: DisclosureReceipt,
}

/// Runs the IPS scenario about `me`, asserting each step's answer.
pub async fn ips_scenario(gw: &TestGateway, me: &SubjectId) -> Outcome {
    ips_scenario_at(gw, me, &[gw.addr]).await
}

/// [`ips_scenario`] against the replicas at `replicas`, each step on the next one in turn (so
/// with three, no two consecutive steps share a replica).
pub async fn ips_scenario_at(
    gw: &TestGateway,
    me: &SubjectId,
    replicas: &[std::net::SocketAddr],
) -> Outcome {
    let mut step = 0usize;
    let mut next = || {
        step += 1;
        replicas[(step - 1) % replicas.len()]
    };
    let mut nav = gw.caller_at(next(), "nav", "nav_counsellor").await;

    // 1. No consent yet: refused.
    let status = nav
        .disclosure
        .disclose(update(gw, me, "s-1", "wage support from June"))
        .await
        .expect_err("refused");
    assert_eq!(reason(&status), "no_consent");

    // 2. The jobseeker grants consent in the portal; 3. the same update now goes through.
    let mut jobseeker = gw.jobseeker_at(next(), me).await;
    let consent = jobseeker
        .consent
        .grant_consent(ips_consent(gw, me))
        .await
        .expect("grant")
        .into_inner()
        .consent
        .expect("record");
    let mut nav = gw.caller_at(next(), "nav", "nav_counsellor").await;
    let receipt = nav
        .disclose_permitted(update(gw, me, "s-1", "wage support from June"))
        .await;
    gw.verify_receipt(receipt.audit.as_ref().expect("audit receipt"));

    // 4. The IPS team's stream receives it (backlog) and acknowledges it (elsewhere).
    let mut ips = gw.caller_at(next(), "ips", "employment_specialist").await;
    let mut stream = ips.inbox().await;
    let notes = backlog(&mut stream).await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].disclosure_id, receipt.disclosure_id);
    assert_eq!(
        (notes[0].body.as_slice(), notes[0].subject_id.as_str()),
        (b"wage support from June".as_slice(), me.expose().as_str())
    );
    let mut ips_elsewhere = gw.caller_at(next(), "ips", "employment_specialist").await;
    let ack = ips_elsewhere
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
    let mut clinic = gw.caller_at(next(), "clinic", "clinician").await;
    let other = clinic
        .disclosure
        .acknowledge(AcknowledgeRequest {
            disclosure_id: receipt.disclosure_id.clone(),
        })
        .await
        .expect_err("not theirs");
    assert_eq!(other.code(), Code::PermissionDenied);

    // 5. The clinic's approved summary reaches the open stream live; without approval: refused.
    let mut summary = update(gw, me, "dips-1", "approved: can start at 40%");
    summary.category = "treatment_summary".into();
    let status = clinic
        .disclosure
        .disclose(summary.clone())
        .await
        .expect_err("no approval");
    assert_eq!(reason(&status), "approval_missing");
    summary.approval = Some(approval(60));
    let live_receipt = clinic
        .disclosure
        .disclose(summary)
        .await
        .expect("approved")
        .into_inner()
        .receipt
        .expect("receipt");
    let Event::Note(live) = next_event(&mut stream).await else {
        panic!("expected a note")
    };
    assert_eq!(live.disclosure_id, live_receipt.disclosure_id);
    assert_eq!(live.approval.expect("approval").hpr_number, "9144889");
    drop(stream);

    // 6. A note waits undelivered; the jobseeker withdraws: it is purged and never delivered.
    let mut nav = gw.caller_at(next(), "nav", "nav_counsellor").await;
    let waiting = nav
        .disclose_permitted(update(gw, me, "s-2", "never to be read"))
        .await;
    let mut jobseeker = gw.jobseeker_at(next(), me).await;
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
    let mut ips = gw.caller_at(next(), "ips", "employment_specialist").await;
    let mut stream = ips.inbox().await;
    let remaining = backlog(&mut stream).await;
    assert!(
        remaining
            .iter()
            .all(|n| n.disclosure_id != waiting.disclosure_id),
        "a purged note was delivered"
    );
    drop(stream);

    // 7. The next update is refused.
    let mut nav = gw.caller_at(next(), "nav", "nav_counsellor").await;
    let status = nav
        .disclosure
        .disclose(update(gw, me, "s-3", "too late"))
        .await
        .expect_err("withdrawn");
    assert_eq!(reason(&status), "consent_withdrawn");

    Outcome {
        consent_id: consent.consent_id,
        first: receipt,
        summary: live_receipt,
        purged: waiting,
    }
}

/// Polls `check` every 100 ms until it returns `true`, for at most `bound`.
pub async fn eventually<F: Future<Output = bool>>(
    bound: std::time::Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}
