//! Writes the audit log fixture `audit/tests/fixtures/log-v1/`: a real gateway's log holding
//! every entry kind the gateway writes (the IPS scenario, consent reads, dry runs, audit
//! queries and summaries, reports, refusals, callers with a vouched login, a key rotation and
//! two starts). Ignored: run it by hand to write a new fixture (the one checked in was
//! written by this test before audit entries became typed events, and is what
//! `audit/tests/log_fixture.rs` decodes).
//!
//! `cargo test -p casegate-tests --test e2e audit_fixture -- --ignored`

use casegate_proto::v1::{
    CheckDisclosureRequest, EntryKind, GetConsentRequest, ListConsentsRequest, QueryAuditRequest,
    Role, SubjectAccessReportRequest, SummarizeAuditRequest,
};
use casegate_tests::{
    Caller, TestGateway,
    scenario::{grant_ips_consent, ips_scenario, now, party, subject},
};

/// A caller whose token carries a login the web tier vouched for (`idp`, `acr`).
async fn with_login(gw: &TestGateway, org: &str, role: &str) -> Caller {
    let mut claims = gw.claims(org, role);
    claims["idp"] = serde_json::json!("https://login.test.casegate.invalid");
    claims["acr"] = serde_json::json!("idporten-loa-high");
    let token = gw.issuer.sign_value(&claims).expect("sign token");
    Caller::new(gw.channel(org).await, Some(token))
}

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

#[tokio::test]
#[ignore = "writes the fixture into the source tree"]
async fn audit_fixture_writes_a_log_with_every_kind() {
    let gw = TestGateway::start().await;
    let me = subject(900);
    let other = subject(901);
    let outcome = ips_scenario(&gw, &me).await;
    grant_ips_consent(&gw, &other).await;

    // Dry runs: a permit and a refusal.
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    for who in [&other, &me] {
        nav.consent
            .check_disclosure(CheckDisclosureRequest {
                subject_id: who.expose(),
                recipient: Some(party(&gw, "ips", &[Role::EmploymentSpecialist])),
                category: "benefit_counselling".into(),
                purpose: "ips_follow_up".into(),
                approval_attested: false,
            })
            .await
            .expect("check");
    }

    // Consent reads: shown, not visible, listed, refused.
    let mut jobseeker = gw.jobseeker(&me).await;
    jobseeker
        .consent
        .get_consent(GetConsentRequest {
            consent_id: outcome.consent_id.clone(),
            version: 0,
        })
        .await
        .expect("own consent");
    nav.consent
        .get_consent(GetConsentRequest {
            consent_id: "0190f0a0-0000-7000-8000-000000000000".into(),
            version: 0,
        })
        .await
        .expect_err("not visible");
    jobseeker
        .consent
        .list_consents(ListConsentsRequest {
            subject_id: me.expose(),
            ..Default::default()
        })
        .await
        .expect("list");
    let mut admin = with_login(&gw, "privacy", "admin").await;
    admin
        .consent
        .list_consents(ListConsentsRequest {
            subject_id: me.expose(),
            ..Default::default()
        })
        .await
        .expect_err("an admin may not list consents");

    // Audit queries, a summary and reports: a supervisory officer with a login, an officer of
    // one organisation, and refusals.
    let mut officer = with_login(&gw, "authority", "privacy_officer").await;
    officer
        .audit
        .query_audit(QueryAuditRequest {
            subject_id: me.expose(),
            kinds: vec![EntryKind::DisclosureRefused as i32],
            reasons: vec!["no_consent".into()],
            ..Default::default()
        })
        .await
        .expect("query");
    officer
        .audit
        .summarize_audit(SummarizeAuditRequest {
            from: at(now() - 3600),
            until: at(now() + 3600),
            kinds: vec![EntryKind::DisclosurePermitted as i32],
            reasons: Vec::new(),
            by_subject: false,
        })
        .await
        .expect("summary");
    officer
        .audit
        .subject_access_report(SubjectAccessReportRequest {
            subject_id: me.expose(),
        })
        .await
        .expect("report");
    let mut local = gw.caller("privacy", "privacy_officer").await;
    local
        .audit
        .query_audit(QueryAuditRequest {
            orgnr: gw.org("nav").orgnr.clone(),
            limit: 5,
            ..Default::default()
        })
        .await
        .expect("query");
    nav.audit
        .query_audit(QueryAuditRequest::default())
        .await
        .expect_err("not an officer");
    nav.audit
        .subject_access_report(SubjectAccessReportRequest {
            subject_id: me.expose(),
        })
        .await
        .expect_err("not an officer");
    jobseeker
        .audit
        .subject_access_report(SubjectAccessReportRequest {
            subject_id: me.expose(),
        })
        .await
        .expect("own report");

    // The audit key rotated while stopped; the gateway starts again.
    let gw = gw
        .restart_after(|config| {
            assert_eq!(
                casegate::cli::rotate_audit(config),
                std::process::ExitCode::SUCCESS
            );
        })
        .await;
    // Copied while the gateway is stopped cleanly (its folder goes with the test gateway).
    let gw = gw.restart_after(copy_log).await;
    gw.stop().await;
}

/// Copies the stopped gateway's log (segments, checkpoint) and its verifier key into the
/// fixture folder.
fn copy_log(config: &std::path::Path) {
    let dir = config.parent().expect("test folder");
    let data = dir.join("data");
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../audit/tests/fixtures/log-v1");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("segments")).expect("fixture folder");
    for file in std::fs::read_dir(data.join("audit/segments")).expect("segments") {
        let file = file.expect("segment");
        std::fs::copy(file.path(), out.join("segments").join(file.file_name())).expect("copy");
    }
    std::fs::copy(data.join("audit/checkpoint"), out.join("checkpoint")).expect("checkpoint");
    let key = std::fs::read_to_string(dir.join("audit.key")).expect("new key");
    let signer = casegate_audit::checkpoint::Signer::from_skey(key.trim()).expect("key");
    std::fs::write(
        out.join("verifier.vkey"),
        signer.verifier().to_vkey() + "\n",
    )
    .expect("vkey");
}
