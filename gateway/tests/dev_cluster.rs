//! `casegate dev --cluster 3`: the IPS scenario against the three replicas it prints, each
//! step on another replica than the one before. Needs the machine's PostgreSQL server
//! binaries (`.ci/run` installs them; with `CI=true` their absence fails the test).

mod support;

use std::{process::Stdio, time::Duration};

use casegate_proto::v1::{
    AcknowledgeRequest, ApprovalAttestation, AuditReceipt, DiscloseRequest, DisclosureReceipt,
    GetCheckpointRequest, Party, Provision, StreamInboxRequest, StreamInboxResponse,
    WithdrawConsentRequest, audit_service_client::AuditServiceClient,
    consent_service_client::ConsentServiceClient,
    disclosure_service_client::DisclosureServiceClient, stream_inbox_response::Event,
};
use support::{casegate, dev_channel, dev_grant, dev_orgnr, dev_token, with};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic_types::StatusExt;

/// The replicas' addresses, as `casegate dev --cluster` prints them.
async fn replicas(
    stdout: tokio::process::ChildStdout,
    n: usize,
) -> (Vec<String>, tokio::task::JoinHandle<()>) {
    let mut lines = BufReader::new(stdout).lines();
    let mut found = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            if let Some(rest) = line.trim().strip_prefix("replica ") {
                let addr = rest.split_whitespace().nth(1).expect("address");
                found.push(addr.to_owned());
                if found.len() == n {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the cluster printed its replicas in time");
    // Keep draining stdout so the child never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (found, drain)
}

/// Discloses `request` as `token`, which must be permitted: its receipt.
async fn permitted(
    mut client: DisclosureServiceClient<tonic::transport::Channel>,
    token: &str,
    request: DiscloseRequest,
) -> DisclosureReceipt {
    client
        .disclose(with(token, request))
        .await
        .expect("permitted")
        .into_inner()
        .receipt
        .expect("receipt")
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The next event of an inbox stream, within 15 s.
async fn next_event(stream: &mut tonic::Streaming<StreamInboxResponse>) -> Event {
    tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("in time")
        .expect("stream ok")
        .expect("open")
        .event
        .expect("event")
}

/// The receipt's checkpoint is signed by the log's key and its inclusion proof verifies.
fn verify(receipt: &AuditReceipt, verifier: &casegate_audit::checkpoint::Verifier) {
    let checkpoint = verifier
        .verify(&receipt.checkpoint.as_ref().expect("checkpoint").signed_note)
        .expect("signed by the log's key");
    let proof = receipt.inclusion_proof.as_ref().expect("proof");
    let hashes: Vec<[u8; 32]> = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().expect("32 bytes"))
        .collect();
    casegate_audit::merkle::verify_inclusion(
        &receipt.leaf_hash.as_slice().try_into().expect("32 bytes"),
        receipt.audit_index,
        checkpoint.size,
        &hashes,
        &checkpoint.root,
    )
    .expect("the inclusion proof verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ips_scenario_passes_against_casegate_dev_cluster_3_a_step_per_replica() {
    casegate::tls::install_provider();
    if casegate::dev::postgres::binaries().is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no PostgreSQL server binaries: .ci/run installs them"
        );
        eprintln!("skipped: no PostgreSQL server binaries on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let mut child = casegate()
        .args(["dev", "--cluster", "3", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("CASEGATE_SERVER__SHUTDOWN_GRACE", "1s")
        .env("CASEGATE_METRICS__LISTEN", "127.0.0.1:0")
        .env("CASEGATE_WEB__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start casegate dev --cluster 3");
    let (at, drain) = replicas(child.stdout.take().expect("stdout"), 3).await;
    assert_eq!(at.len(), 3);
    assert_eq!(
        at.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "three listeners"
    );
    let mut step = 0;
    let mut next = || {
        step += 1;
        at[(step - 1) % at.len()].clone()
    };
    let subject = casegate_consent::SubjectId::synthetic_all()
        .nth(4242)
        .expect("synthetic subject")
        .expose();
    let nav = dev_token(&data, "nav", "nav_counsellor", None);
    let clinic = dev_token(&data, "clinic", "clinician", None);
    let ips = dev_token(&data, "ips", "employment_specialist", None);
    let jobseeker = dev_token(&data, "portal", "jobseeker", Some(&subject));
    let update = |request_id: &str, category: &str, body: &str| DiscloseRequest {
        request_id: request_id.into(),
        subject_id: subject.clone(),
        recipient_orgnr: dev_orgnr("ips"),
        category: category.into(),
        purpose: "ips_follow_up".into(),
        title: "IPS update".into(),
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        ..Default::default()
    };
    let disclosure = |addr: String, org: &'static str| {
        let data = data.clone();
        async move { DisclosureServiceClient::new(dev_channel(&data, org, &addr).await) }
    };

    // 1. No consent yet: refused (replica 1).
    let status = disclosure(next(), "nav")
        .await
        .disclose(with(
            &nav,
            update("c-1", "benefit_counselling", "wage support"),
        ))
        .await
        .expect_err("no consent");
    assert_eq!(reason(&status), "no_consent");

    // 2. The jobseeker grants consent: NAV's benefit counselling and the clinic's approved
    // summaries to the IPS team (replica 2).
    let mut grant = dev_grant(&subject, "nav", "ips", "ips_follow_up");
    grant.provisions.push(Provision {
        senders: vec![Party {
            orgnr: dev_orgnr("clinic"),
            roles: vec![],
        }],
        recipients: vec![Party {
            orgnr: dev_orgnr("ips"),
            roles: vec![],
        }],
        categories: vec!["treatment_summary".into()],
        purposes: vec!["ips_follow_up".into()],
    });
    let consent = ConsentServiceClient::new(dev_channel(&data, "portal", &next()).await)
        .grant_consent(with(&jobseeker, grant))
        .await
        .expect("grant")
        .into_inner()
        .consent
        .expect("record");

    // 3. The same update is permitted (replica 3); its receipt verifies with the log's key.
    let replica = next();
    let verifier = AuditServiceClient::new(dev_channel(&data, "nav", &replica).await)
        .get_checkpoint(with(&nav, GetCheckpointRequest {}))
        .await
        .expect("checkpoint")
        .into_inner()
        .verifier_key;
    let verifier = casegate_audit::checkpoint::Verifier::from_vkey(&verifier).expect("vkey");
    let first = permitted(
        disclosure(replica, "nav").await,
        &nav,
        update("c-1", "benefit_counselling", "wage support"),
    )
    .await;
    verify(first.audit.as_ref().expect("audit"), &verifier);

    // 4. The IPS team's stream has it (replica 1); acknowledged on replica 2.
    let mut ips_stream = disclosure(next(), "ips")
        .await
        .stream_inbox(with(&ips, StreamInboxRequest { role: 0 }))
        .await
        .expect("stream")
        .into_inner();
    let Event::Note(note) = next_event(&mut ips_stream).await else {
        panic!("the backlog's note")
    };
    assert_eq!(note.disclosure_id, first.disclosure_id);
    assert_eq!(note.body, b"wage support");
    assert!(matches!(
        next_event(&mut ips_stream).await,
        Event::BacklogComplete(_)
    ));
    disclosure(next(), "ips")
        .await
        .acknowledge(with(
            &ips,
            AcknowledgeRequest {
                disclosure_id: first.disclosure_id.clone(),
            },
        ))
        .await
        .expect("acknowledged");

    // 5. The clinic's summary: refused without the clinician's approval (replica 3), then
    // approved and delivered live to the stream open on replica 1 (from replica 1).
    let status = disclosure(next(), "clinic")
        .await
        .disclose(with(
            &clinic,
            update("dips-1", "treatment_summary", "can start at 40%"),
        ))
        .await
        .expect_err("approval missing");
    assert_eq!(reason(&status), "approval_missing");
    let mut approved = update("dips-1", "treatment_summary", "can start at 40%");
    approved.approval = Some(ApprovalAttestation {
        hpr_number: "9144889".into(),
        approved_at: Some(prost_types::Timestamp {
            seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs() as i64
                - 60,
            nanos: 0,
        }),
    });
    let summary = permitted(disclosure(next(), "clinic").await, &clinic, approved).await;
    let Event::Note(live) = next_event(&mut ips_stream).await else {
        panic!("a live note")
    };
    assert_eq!(live.disclosure_id, summary.disclosure_id);
    drop(ips_stream);

    // 6. A note waits (replica 2); the jobseeker withdraws (replica 3): it is purged.
    let waiting = permitted(
        disclosure(next(), "nav").await,
        &nav,
        update("c-2", "benefit_counselling", "never read"),
    )
    .await;
    let withdrawn = ConsentServiceClient::new(dev_channel(&data, "portal", &next()).await)
        .withdraw_consent(with(
            &jobseeker,
            WithdrawConsentRequest {
                consent_id: consent.consent_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("withdrawn")
        .into_inner();
    assert_eq!(withdrawn.purged_notes, 1);
    let mut ips_stream = disclosure(next(), "ips")
        .await
        .stream_inbox(with(&ips, StreamInboxRequest { role: 0 }))
        .await
        .expect("stream")
        .into_inner();
    // The backlog, up to its end marker: the purged note is not in it.
    while let Event::Note(n) = next_event(&mut ips_stream).await {
        assert_ne!(n.disclosure_id, waiting.disclosure_id, "purged");
    }

    // 7. The next update is refused (replica 2).
    let status = disclosure(next(), "nav")
        .await
        .disclose(with(&nav, update("c-3", "benefit_counselling", "too late")))
        .await
        .expect_err("withdrawn");
    assert_eq!(reason(&status), "consent_withdrawn");

    support::signal(&child, "TERM");
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "{exit}");
    drain.abort();
}
