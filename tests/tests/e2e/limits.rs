//! Limits degrade cleanly: a flooding organisation is slowed down alone, an oversized message is
//! refused with a message naming the limit.

use casegate_consent::SubjectId;
use casegate_proto::v1::{
    Evidence, GetCheckpointRequest, GrantConsentRequest, SignedForm, evidence::Kind,
};
use casegate_tests::TestGateway;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn a_flooding_organisation_is_rate_limited_and_others_are_not() {
    let gw = TestGateway::start_with("[limits]\nrate_per_second = 5\nrate_burst = 10\n").await;
    let mut clinic = gw.caller("clinic", "clinician").await;
    let (mut served, mut limited) = (0, 0);
    for _ in 0..40 {
        match clinic.audit.get_checkpoint(GetCheckpointRequest {}).await {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("retry in"),
                    "{}",
                    status.message()
                );
                let retry = status.get_details_retry_info().expect("RetryInfo detail");
                assert!(retry.retry_delay.is_some_and(|d| d.as_millis() <= 200));
                limited += 1;
            }
        }
    }
    assert!(served >= 10, "the burst is served ({served})");
    assert!(limited >= 20, "the flood is limited ({limited} of 40)");
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    for _ in 0..5 {
        nav.audit
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .expect("another organisation is unaffected");
    }
}

#[tokio::test]
async fn an_oversized_message_is_refused_naming_the_limit() {
    let gw =
        TestGateway::start_with("[limits]\nmax_message_bytes = 131072\nmax_body_bytes = 4096\n")
            .await;
    let mut clinic = gw.caller("clinic", "clinician").await;
    let request = GrantConsentRequest {
        subject_id: SubjectId::synthetic_all().next().expect("subject").expose(),
        evidence: Some(Evidence {
            kind: Some(Kind::SignedForm(SignedForm {
                sha256: vec![0; 32],
                reference: "x".repeat(200_000),
            })),
        }),
        ..Default::default()
    };
    let status = clinic
        .consent
        .grant_consent(request)
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("the limit is: 131072 bytes"),
        "{}",
        status.message()
    );
    // The connection and the gateway carry on.
    clinic
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("still serving");
}
