//! The production login path: an OpenID provider started by the test on loopback (HTTPS
//! discovery, JWKS, authorization code with PKCE, an ID token with the login's nonce) logs a
//! jobseeker and an officer in through the web tier's real code; a wrong nonce, issuer or
//! audience, an expired ID token, a state that does not match, a replayed callback and an
//! officer without the role are all refused, and nobody is logged in by them.

use casegate_consent::SubjectId;
use casegate_tests::{
    TestGateway,
    browser::Browser,
    oidc_provider::{CLIENT_ID, Fault, OidcProvider},
    web::{CONFIG, TestWeb, WebClient},
};
use serde_json::json;

async fn start(op: &OidcProvider) -> (TestGateway, TestWeb) {
    start_asking(op, "idporten-loa-high").await
}

/// As [`start`], the jobseekers' provider asked for `acr_values`.
async fn start_asking(op: &OidcProvider, acr_values: &str) -> (TestGateway, TestWeb) {
    let issuer = op.issuer_url();
    let ca = op.ca_file.path().display().to_string();
    let extra = format!(
        r#"{CONFIG}
[web.jobseekers.oidc]
issuer_url = "{issuer}"
client_id = "{CLIENT_ID}"
ca = "{ca}"
scopes = ["profile"]
acr_values = "{acr_values}"

[web.officers.oidc]
issuer_url = "{issuer}"
client_id = "{CLIENT_ID}"
ca = "{ca}"
role_claim = "roles"
role_value = "privacy_officer"
"#
    );
    let gw = TestGateway::start_with(&extra).await;
    let web = TestWeb::start(&gw, false).await;
    (gw, web)
}

/// Goes out to the provider and back; returns the web tier's answer to the callback.
async fn log_in(
    op: &OidcProvider,
    client: &WebClient,
    audience: &str,
) -> casegate_tests::web::Page {
    let start = client.get(&format!("/login/{audience}")).await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.location().to_owned();
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    assert!(authorize.contains("nonce="), "{authorize}");
    client.get(&op.approve(&authorize)).await
}

fn jobseeker() -> SubjectId {
    SubjectId::synthetic_all()
        .nth(40)
        .expect("synthetic subject")
}

#[tokio::test]
async fn a_jobseeker_and_an_officer_log_in_through_the_provider() {
    let op = OidcProvider::start().await;
    let (gw, web) = start(&op).await;
    let landing = web.client().get("/").await;
    assert!(
        landing.body.contains("href=\"/login/jobseeker\""),
        "{}",
        landing.body
    );
    assert!(!landing.body.contains("/dev/login"));

    let subject = jobseeker();
    op.next_person(
        json!({"sub": "pairwise-1", "pid": subject.expose(), "acr": "idporten-loa-high"}),
    );
    let person = web.client();
    let done = log_in(&op, &person, "jobseeker").await;
    assert_eq!((done.status, done.location()), (303, "/"), "{}", done.body);
    let me = person.get("/me").await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(
        me.body
            .contains(&format!("{} *****", &subject.expose()[..6])),
        "{}",
        me.body
    );
    // The gateway saw the login's provider and assurance level in the web tier's token.
    let received = person.get("/me/received").await;
    assert_eq!(received.status, 200);
    let entries = gw.audit_entries().await;
    let report = entries
        .iter()
        .rev()
        .find(|(_, e)| e.kind() == casegate_audit::entry::EntryKind::SubjectReportIssued)
        .expect("a report entry");
    let login = report.1.login().expect("the login is recorded");
    assert_eq!(login.idp, op.issuer_url(), "{login:?}");
    assert_eq!(login.acr.as_deref(), Some("idporten-loa-high"));

    // No acr at all (as from Entra ID): the officer's provider asks for none, and the gateway
    // takes the web tier's token without one.
    op.next_person(json!({"sub": "officer-7", "roles": ["privacy_officer"]}));
    let officer = web.client();
    let done = log_in(&op, &officer, "officer").await;
    assert_eq!((done.status, done.location()), (303, "/"), "{}", done.body);
    assert_eq!(officer.get("/officer").await.status, 200);
    assert_eq!(officer.get("/me").await.location(), "/");

    op.next_person(json!({"sub": "clerk-3", "roles": ["clinician"]}));
    let clerk = web.client();
    let refused = log_in(&op, &clerk, "officer").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(clerk.get("/officer").await.location(), "/");
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_login_below_the_assurance_level_asked_for_is_refused() {
    let op = OidcProvider::start().await;
    let (gw, web) = start(&op).await;
    op.next_person(json!({"sub": "pairwise-5", "pid": jobseeker().expose(), "acr": "idporten-loa-substantial"}));
    let client = web.client();
    let answer = log_in(&op, &client, "jobseeker").await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer.body.contains("assurance level is too low"),
        "{}",
        answer.body
    );
    assert_eq!(client.get("/me").await.location(), "/");
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_id_token_or_callback_logs_nobody_in() {
    let op = OidcProvider::start().await;
    let (gw, web) = start(&op).await;
    let subject = jobseeker();
    for fault in [Fault::Nonce, Fault::Issuer, Fault::Audience, Fault::Expired] {
        op.next_person(
            json!({"sub": "pairwise-2", "pid": subject.expose(), "acr": "idporten-loa-high"}),
        );
        op.next_fault(fault);
        let client = web.client();
        let answer = log_in(&op, &client, "jobseeker").await;
        assert_eq!(answer.status, 403, "{fault:?}: {}", answer.body);
        assert!(
            answer.body.contains("the ID token was refused"),
            "{fault:?}: {}",
            answer.body
        );
        assert_eq!(
            client.get("/me").await.location(),
            "/",
            "{fault:?} logged someone in"
        );
    }
    // A token without a valid identity number.
    op.next_person(json!({"sub": "pairwise-3", "pid": "12345678901", "acr": "idporten-loa-high"}));
    let client = web.client();
    let answer = log_in(&op, &client, "jobseeker").await;
    assert_eq!(answer.status, 403);
    assert!(
        answer.body.contains("lacks a valid identity claim"),
        "{}",
        answer.body
    );

    // A callback whose state is not the login's, and a callback used twice.
    op.next_person(
        json!({"sub": "pairwise-4", "pid": subject.expose(), "acr": "idporten-loa-high"}),
    );
    let client = web.client();
    let start = client.get("/login/jobseeker").await;
    let back = op.approve(start.location());
    let forged = back.replace("state=", "state=x");
    assert_eq!(client.get(&forged).await.status, 403);
    assert_eq!(client.get("/me").await.location(), "/");
    let client = web.client();
    let start = client.get("/login/jobseeker").await;
    let back = op.approve(start.location());
    assert_eq!(client.get(&back).await.status, 303);
    let other = web.client();
    assert_eq!(
        other.get(&back).await.status,
        403,
        "a callback from another session"
    );
    assert_eq!(client.get(&back).await.status, 403, "a callback used twice");
    web.stop().await;
    gw.stop().await;
}

/// The same login in a real browser, where cookies follow `SameSite`: the provider's redirect
/// back is a cross-site navigation, and the login must still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_through_the_provider_across_sites() {
    let Some(b) = Browser::start_accepting_test_certificates(1280).await else {
        return;
    };
    let op = OidcProvider::start().await;
    let (gw, web) = start(&op).await;
    let subject = jobseeker();
    op.next_person(
        json!({"sub": "pairwise-9", "pid": subject.expose(), "acr": "idporten-loa-high"}),
    );
    b.goto(&web.url("/")).await;
    b.click("a[href='/login/jobseeker']").await;
    let mut title = String::new();
    for _ in 0..100 {
        title = b.title().await;
        if title.contains("Mine samtykker") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        title.contains("Mine samtykker"),
        "landed on {title:?}: {}",
        b.text().await
    );
    assert!(
        b.text()
            .await
            .contains(&format!("{} *****", &subject.expose()[..6]))
    );
    b.close().await;
    web.stop().await;
    gw.stop().await;
}
