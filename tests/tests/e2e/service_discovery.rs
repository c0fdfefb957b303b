//! Health and reflection answer over mutual TLS without a token.

use casegate_tests::TestGateway;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn health_reports_serving_for_the_gateway_and_each_service() {
    let gw = TestGateway::start().await;
    let mut health = HealthClient::new(gw.channel("clinic").await);
    for service in [
        "",
        "casegate.v1.ConsentService",
        "casegate.v1.DisclosureService",
        "casegate.v1.AuditService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "casegate.v1.Nothing".to_owned(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_three_casegate_services() {
    let gw = TestGateway::start().await;
    let mut reflection = ServerReflectionClient::new(gw.channel("nav").await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("one response")
        .expect("not an error");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let mut casegate: Vec<String> = list
        .service
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("casegate.v1."))
        .collect();
    casegate.sort();
    assert_eq!(
        casegate,
        [
            "casegate.v1.AuditService",
            "casegate.v1.ConsentService",
            "casegate.v1.DisclosureService"
        ]
    );
}
