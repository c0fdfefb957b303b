//! Revocation reaches connections that are already open, an intermediate CA's revocation is
//! honoured, and a CRL past its `nextUpdate` (RFC 5280 §5.1.2.5) is reported, or refused
//! when `tls.stale_crls = "refuse"`.

use std::time::{Duration, SystemTime};

use casegate::{config::Config, dev::pki::CertifiedKey, server::Material};
use casegate_proto::v1::GetCheckpointRequest;
use casegate_tests::{TestGateway, scenario::eventually, tls_probe::probe};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long the tests allow for a reload (the test gateway checks its CRL every 100 ms).
const RELOAD_BOUND: Duration = Duration::from_secs(5);

/// Whether calls by `caller` fail within `bound` (its connection cut, and no new one let in).
async fn calls_fail_within(bound: Duration, caller: &casegate_tests::Caller) -> bool {
    eventually(bound, || {
        let mut caller = caller.clone();
        async move {
            caller
                .audit
                .get_checkpoint(GetCheckpointRequest {})
                .await
                .is_err()
        }
    })
    .await
}

#[tokio::test]
async fn an_open_connection_is_closed_once_a_crl_revokes_its_certificate() {
    let gw = TestGateway::start().await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let mut clinic = gw.caller("clinic", "clinician").await;
    nav.audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("served before the revocation");
    clinic
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("served");

    gw.revoke(&["nav"]);
    let cut = calls_fail_within(RELOAD_BOUND, &nav).await;
    assert!(
        cut,
        "calls on the revoked certificate's open connection still succeed"
    );
    // The channel reconnects, and the new handshake is refused too.
    let status = nav
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect_err("refused after the revocation");
    assert!(
        format!("{status:?}").contains("CertificateRevoked"),
        "{status:?}"
    );
    // Another organisation's open connection is untouched.
    clinic
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("other organisations are unaffected");
}

/// A channel presenting `chain_pem` (leaf first, then its intermediate CA) and `key_pem`.
async fn chain_channel(gw: &TestGateway, client: &CertifiedKey) -> Result<Channel, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(gw.ca_pem()))
        .identity(Identity::from_pem(&client.cert_pem, &client.key_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{}", gw.addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn serving(channel: &Channel) -> bool {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

#[tokio::test]
async fn revoking_an_intermediate_ca_in_the_root_crl_refuses_and_closes_its_clients() {
    let gw = TestGateway::start().await;
    let regional = gw.ca.issue_intermediate("regional client CA").expect("CA");
    let leaf = regional
        .issue_client("ips", Some(&gw.org("ips").orgnr))
        .expect("client certificate");
    let chained = CertifiedKey {
        cert_pem: format!("{}{}", leaf.cert_pem, regional.cert_pem),
        key_pem: leaf.key_pem.clone(),
    };
    let open = chain_channel(&gw, &chained)
        .await
        .expect("a certificate under an intermediate CA is accepted");
    assert!(serving(&open).await);

    let next_update = SystemTime::now() + Duration::from_secs(86_400);
    gw.publish_crl(&[&regional.certified()], next_update);
    let closed = eventually(RELOAD_BOUND, || {
        let open = open.clone();
        async move { !serving(&open).await }
    })
    .await;
    assert!(
        closed,
        "the open connection under the revoked CA must be closed"
    );
    let fresh = match chain_channel(&gw, &chained).await {
        Ok(channel) => serving(&channel).await,
        Err(_) => false,
    };
    assert!(
        !fresh,
        "a new handshake under the revoked CA must be refused"
    );
    // The organisations' own certificates, issued by the root, are unaffected.
    probe(gw.addr, gw.ca_pem(), Some(&gw.org("nav").cert))
        .await
        .expect("accepted");
}

/// Loads the material of `gw`'s configuration with the `CASEGATE_…` overrides `env`.
fn material(gw: &TestGateway, env: &[(&str, &str)]) -> Result<Material, String> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let config = Config::load_with_env(&gw.config_path(), env).expect("config");
    Material::load(&config).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_crl_past_its_next_update_is_reported_and_refused_when_configured() {
    let gw = TestGateway::prepare("", &[]);
    let three_days_ago = SystemTime::now() - Duration::from_secs(3 * 86_400);
    gw.publish_crl(&[], three_days_ago);

    // By default it is used, and reported (what `check-config` prints and the log says).
    let loaded = material(&gw, &[]).expect("a stale CRL is used by default");
    let stale = loaded.tls.stale_crls(SystemTime::now());
    assert_eq!(stale.len(), 1, "{stale:?}");
    let shown = stale[0].to_string();
    assert!(
        shown.starts_with("tls.client_crls[0]: ")
            && shown.contains("past its nextUpdate (")
            && shown.contains(") by 3days"),
        "{shown}"
    );

    // Refused when the configuration says so.
    let refused = material(&gw, &[("CASEGATE_TLS__STALE_CRLS", "refuse")])
        .expect_err("a stale CRL is refused");
    assert!(
        refused.contains("tls.client_crls[0]") && refused.contains("past its nextUpdate"),
        "{refused}"
    );

    // A fresh CRL is neither.
    gw.publish_crl(&[], SystemTime::now() + Duration::from_secs(86_400));
    let fresh = material(&gw, &[("CASEGATE_TLS__STALE_CRLS", "refuse")]).expect("fresh");
    assert!(fresh.tls.stale_crls(SystemTime::now()).is_empty());
}

#[tokio::test]
async fn with_refuse_a_crl_that_passes_its_next_update_while_loaded_refuses_its_cas_clients() {
    let gw = TestGateway::start_with_overrides("", &[("CASEGATE_TLS__STALE_CRLS", "refuse")]).await;
    let clinic = &gw.org("clinic").cert;
    gw.publish_crl(&[], SystemTime::now() + Duration::from_secs(4));
    // Loaded while fresh…
    let loaded = eventually(RELOAD_BOUND, || async {
        probe(gw.addr, gw.ca_pem(), Some(clinic)).await.is_ok()
    })
    .await;
    assert!(loaded);
    let mut open = gw.caller("clinic", "clinician").await;
    open.audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("served while the CRL is fresh");
    // …and once past its nextUpdate, certificates of its CA are refused in the handshake.
    let refused = eventually(Duration::from_secs(15), || async {
        probe(gw.addr, gw.ca_pem(), Some(clinic)).await.is_err()
    })
    .await;
    assert!(
        refused,
        "a client of a CA whose CRL is stale must be refused"
    );
    // The connection opened while it was fresh is closed too (and cannot reconnect).
    let cut = calls_fail_within(RELOAD_BOUND, &open).await;
    assert!(
        cut,
        "calls on a connection opened before the CRL went stale still succeed"
    );
}
