//! Mutual TLS is mandatory: refusals happen in the handshake, before any gRPC.

use casegate::dev::DevCa;
use casegate_proto::v1::GetCheckpointRequest;
use casegate_tests::{Caller, TestGateway, tls_probe::probe};
use tonic::Code;

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let gw = TestGateway::start().await;
    let seen = probe(gw.addr, gw.ca_pem(), None).await;
    let err = seen.expect_err("connection without a client certificate must fail");
    assert!(err.contains("CertificateRequired"), "client saw: {err}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    let gw = TestGateway::start().await;
    let other = DevCa::generate("some other CA").expect("CA");
    let stranger = other
        .issue_client("clinic", Some(&gw.org("clinic").orgnr))
        .expect("cert");
    let err = probe(gw.addr, gw.ca_pem(), Some(&stranger))
        .await
        .expect_err("a certificate from another CA must fail");
    assert!(err.contains("UnknownCA"), "client saw: {err}");
}

#[tokio::test]
async fn a_certificate_from_the_ca_completes_the_handshake() {
    // The control for the two refusals above: the same probe with a proper certificate.
    let gw = TestGateway::start().await;
    probe(gw.addr, gw.ca_pem(), Some(&gw.org("clinic").cert))
        .await
        .expect("accepted");
}

#[tokio::test]
async fn a_certificate_without_organization_identifier_is_unauthenticated() {
    let gw = TestGateway::start().await;
    let anonymous = gw.ca.issue_client("clinic", None).expect("cert");
    let channel = gw.channel_with(Some(&anonymous)).await;
    let mut caller = Caller::new(channel, Some(gw.token("clinic", "clinician")));
    let status = caller
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("organizationIdentifier"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_once_the_crl_is_updated_without_a_restart() {
    let gw = TestGateway::start().await;
    probe(gw.addr, gw.ca_pem(), Some(&gw.org("clinic").cert))
        .await
        .expect("accepted before revocation");
    gw.revoke(&["clinic"]);
    // The gateway checks the CRL file every 100 ms; allow it a few seconds at most. A
    // handshake that completed just before the reload is closed right after it (the newest
    // CRLs are checked once the connection is registered); the next is refused in the
    // handshake itself.
    let mut seen = Ok(());
    for _ in 0..50 {
        seen = probe(gw.addr, gw.ca_pem(), Some(&gw.org("clinic").cert)).await;
        if seen
            .as_ref()
            .is_err_and(|e| e.contains("CertificateRevoked"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let err = seen.expect_err("a revoked certificate must be refused");
    assert!(err.contains("CertificateRevoked"), "client saw: {err}");
    probe(gw.addr, gw.ca_pem(), Some(&gw.org("nav").cert))
        .await
        .expect("other organisations are unaffected");
}
