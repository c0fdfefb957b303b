//! Every `casegate.v1` call needs a valid access token that agrees with the client certificate.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use casegate::dev::TokenIssuer;
use casegate_consent::SubjectId;
use casegate_proto::v1::GetCheckpointRequest;
use casegate_tests::{
    Caller, TestGateway,
    gateway::{AUDIENCE, AUDIT_ORIGIN, ISSUER},
};
use serde_json::{Value, json};
use tonic::Code;

/// A token signed with an arbitrary header and an HMAC key, as an attacker would make one.
fn hmac_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Calls `GetCheckpoint` as the clinic's system with `token`; a success reads as `Code::Ok`
/// with the checkpoint's origin as the message.
async fn call(gw: &TestGateway, token: Option<String>) -> (Code, String) {
    let mut caller = Caller::new(gw.channel("clinic").await, token);
    match caller.audit.get_checkpoint(GetCheckpointRequest {}).await {
        Ok(response) => (
            Code::Ok,
            response
                .into_inner()
                .checkpoint
                .map(|c| c.origin)
                .unwrap_or_default(),
        ),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

struct Case {
    name: &'static str,
    token: Option<String>,
    code: Code,
    message: &'static str,
}

#[tokio::test]
async fn tokens_are_checked_on_every_call() {
    let gw = TestGateway::start().await;
    let good = gw.claims("clinic", "clinician");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        edit(&mut claims);
        claims
    };
    let sign = |claims: &Value| Some(gw.issuer.sign_value(claims).expect("sign"));
    let now = good["iat"].as_i64().expect("iat");
    let forger = TokenIssuer::generate(ISSUER, AUDIENCE).expect("other key");
    let public_jwks = gw.issuer.jwks_json();
    let kid = gw.issuer.kid().to_owned();
    let header = |header: Value| gw.issuer.sign_with_header(&header.to_string(), &good);

    let cases = [
        Case {
            name: "missing token",
            token: None,
            code: Code::Unauthenticated,
            message: "missing access token",
        },
        Case {
            name: "expired",
            token: sign(&with(&|c| {
                c["iat"] = json!(now - 7200);
                c["nbf"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            })),
            code: Code::Unauthenticated,
            message: "expired",
        },
        Case {
            name: "wrong audience",
            token: sign(&with(&|c| c["aud"] = json!("another-service"))),
            code: Code::Unauthenticated,
            message: "wrong audience",
        },
        Case {
            name: "wrong issuer",
            token: sign(&with(&|c| c["iss"] = json!("https://elsewhere.invalid"))),
            code: Code::Unauthenticated,
            message: "issuer is not trusted",
        },
        Case {
            name: "unknown kid",
            token: Some(gw.issuer.sign_with_kid("no-such-key", &good).expect("sign")),
            code: Code::Unauthenticated,
            message: "key id is not in the issuer's key set",
        },
        Case {
            name: "bad signature (another key claiming the issuer's kid)",
            token: Some(forger.sign_with_kid(gw.issuer.kid(), &good).expect("sign")),
            code: Code::Unauthenticated,
            message: "signature does not verify",
        },
        Case {
            name: "alg none",
            token: Some(unsigned_token(&good)),
            code: Code::Unauthenticated,
            message: "malformed access token",
        },
        Case {
            name: "HS256 signed with the issuer's public key as the secret",
            token: Some(hmac_token(
                &json!({"alg": "HS256", "typ": "JWT", "kid": gw.issuer.kid()}),
                &good,
                public_jwks.as_bytes(),
            )),
            code: Code::Unauthenticated,
            message: "algorithm HS256 is not allowed",
        },
        Case {
            name: "missing sub",
            token: sign(&with(&|c| {
                c.as_object_mut().expect("object").remove("sub");
            })),
            code: Code::Unauthenticated,
            message: "invalid access token",
        },
        Case {
            name: "missing exp",
            token: sign(&with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            })),
            code: Code::Unauthenticated,
            message: "invalid access token",
        },
        Case {
            name: "bound to another certificate",
            token: sign(&with(&|c| {
                c["cnf"]["x5t#S256"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]))
            })),
            code: Code::Unauthenticated,
            message: "bound to a different client certificate",
        },
        Case {
            name: "pid that is not an identity number",
            token: sign(&with(&|c| c["pid"] = json!("12345678901"))),
            code: Code::Unauthenticated,
            message: "pid is not a valid national identity number: national identity number \
                      check digits do not match: the first",
        },
        Case {
            name: "pid that is an FH number",
            token: sign(&with(&|c| c["pid"] = json!("81819012349"))),
            code: Code::Unauthenticated,
            message: "FH numbers (the health sector's help numbers, first digit 8 or 9) are not \
                      supported",
        },
        Case {
            name: "org differs from the certificate's",
            token: sign(&with(&|c| {
                c["org"] = json!(gw.org("nav").orgnr);
            })),
            code: Code::PermissionDenied,
            message: "org does not match",
        },
        Case {
            name: "unknown role",
            token: sign(&with(&|c| c["role"] = json!("superuser"))),
            code: Code::PermissionDenied,
            message: "role is not one of",
        },
        Case {
            name: "crit naming an extension the gateway does not know",
            token: Some(header(
                json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "crit": ["urn:example:must-understand"], "urn:example:must-understand": true}),
            )),
            code: Code::Unauthenticated,
            message: "header parameter crit is not implemented",
        },
        Case {
            name: "unencoded payload (crit b64, b64 false)",
            token: Some(header(
                json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "crit": ["b64"], "b64": false}),
            )),
            code: Code::Unauthenticated,
            message: "header parameter crit is not implemented",
        },
        Case {
            name: "empty crit",
            token: Some(header(
                json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "crit": []}),
            )),
            code: Code::Unauthenticated,
            message: "header parameter crit is not implemented",
        },
        Case {
            name: "b64 without crit",
            token: Some(header(
                json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "b64": false}),
            )),
            code: Code::Unauthenticated,
            message: "header parameter b64 is not implemented",
        },
        Case {
            name: "nested token (cty)",
            token: Some(header(
                json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "cty": "JWT"}),
            )),
            code: Code::Unauthenticated,
            message: "header parameter cty is not implemented",
        },
        Case {
            name: "compressed (zip)",
            token: Some(header(json!({"alg": "EdDSA", "kid": kid, "zip": "DEF"}))),
            code: Code::Unauthenticated,
            message: "header parameter zip is not implemented",
        },
        Case {
            name: "typ of something other than a JWT",
            token: Some(header(
                json!({"alg": "EdDSA", "typ": "dpop+jwt", "kid": kid}),
            )),
            code: Code::Unauthenticated,
            message: "typ must be JWT or at+jwt",
        },
        Case {
            name: "alg given twice",
            token: Some(gw.issuer.sign_with_header(
                &format!(r#"{{"alg":"EdDSA","kid":"{kid}","alg":"none"}}"#),
                &good,
            )),
            code: Code::Unauthenticated,
            message: "each at most once",
        },
        Case {
            name: "kid that is not a string",
            token: Some(header(json!({"alg": "EdDSA", "kid": 7}))),
            code: Code::Unauthenticated,
            message: "kid must be a string",
        },
        Case {
            name: "kid with a control character",
            token: Some(header(
                json!({"alg": "EdDSA", "kid": format!("{kid}\u{1b}[2J")}),
            )),
            code: Code::Unauthenticated,
            message: "kid must be 1 to 256 bytes of visible text",
        },
        Case {
            name: "typ at+jwt (RFC 9068) is accepted",
            token: Some(header(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}))),
            code: Code::Ok,
            message: AUDIT_ORIGIN,
        },
        Case {
            name: "unregistered header parameter outside crit is ignored",
            token: Some(header(json!({"alg": "EdDSA", "kid": kid, "x5t": "abc"}))),
            code: Code::Ok,
            message: AUDIT_ORIGIN,
        },
        Case {
            name: "sub with a right-to-left override",
            token: sign(&with(&|c| c["sub"] = json!("clinician-1\u{202e}nimda"))),
            code: Code::Unauthenticated,
            message: "token claim sub: must not contain invisible format characters",
        },
        Case {
            name: "sub with a line break",
            token: sign(&with(&|c| c["sub"] = json!("clinician-1\nrole=admin"))),
            code: Code::Unauthenticated,
            message: "token claim sub: must not contain control characters",
        },
        Case {
            name: "sub too long",
            token: sign(&with(&|c| c["sub"] = json!("u".repeat(201)))),
            code: Code::Unauthenticated,
            message: "token claim sub: at most 200 bytes",
        },
        Case {
            name: "org that is not an organisation number",
            token: sign(&with(&|c| c["org"] = json!("\u{202e}910000012"))),
            code: Code::Unauthenticated,
            message: "token org is not a valid organisation number",
        },
        Case {
            name: "cnf with a confirmation method the gateway cannot check",
            token: sign(&with(&|c| {
                c["cnf"] = json!({"jkt": URL_SAFE_NO_PAD.encode([7u8; 32])})
            })),
            code: Code::Unauthenticated,
            message: "cnf names a confirmation method",
        },
        Case {
            name: "cnf with the right thumbprint and another method besides",
            token: sign(&with(&|c| {
                c["cnf"]["jkt"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]))
            })),
            code: Code::Unauthenticated,
            message: "cnf names a confirmation method",
        },
        Case {
            name: "valid token reaches the handler",
            token: sign(&good),
            code: Code::Ok,
            message: AUDIT_ORIGIN,
        },
        Case {
            name: "a jobseeker token from an organisation other than the portal",
            token: sign(&with(&|c| {
                c["role"] = json!("jobseeker");
                c["pid"] = json!(
                    SubjectId::synthetic(17, 5, 1994, 347)
                        .expect("synthetic")
                        .expose()
                );
            })),
            code: Code::PermissionDenied,
            message: "only from the jobseekers' portal",
        },
        Case {
            name: "valid unbound clinician token with pid reaches the handler",
            token: sign(&with(&|c| {
                c.as_object_mut().expect("object").remove("cnf");
                c["pid"] = json!(
                    SubjectId::synthetic(17, 5, 1994, 347)
                        .expect("synthetic")
                        .expose()
                );
            })),
            code: Code::Ok,
            message: AUDIT_ORIGIN,
        },
    ];

    let mut failures = Vec::new();
    for case in cases {
        let (code, message) = call(&gw, case.token).await;
        if code != case.code || !message.contains(case.message) {
            failures.push(format!(
                "{}: expected {:?} containing {:?}, got {code:?} {message:?}",
                case.name, case.code, case.message,
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn a_non_bearer_authorization_header_is_unauthenticated() {
    let gw = TestGateway::start().await;
    let mut request = tonic::Request::new(GetCheckpointRequest {});
    request.metadata_mut().insert(
        "authorization",
        "Basic Y2xpbmljOnNlY3JldA==".parse().expect("ascii"),
    );
    let mut client = casegate_proto::v1::audit_service_client::AuditServiceClient::new(
        gw.channel("clinic").await,
    );
    let status = client.get_checkpoint(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn audit_queries_and_reports_sit_behind_authentication() {
    use casegate_proto::v1::*;
    let gw = TestGateway::start().await;
    let mut anonymous = Caller::new(gw.channel("privacy").await, None);
    let status = anonymous
        .audit
        .query_audit(QueryAuditRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = anonymous
        .audit
        .subject_access_report(SubjectAccessReportRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// A gateway that also trusts issuer `iss`, whose key set (at first `key` alone) it fetches
/// over HTTPS from a test server with its own CA, refreshing on any unknown `kid`. The CA file
/// must outlive the gateway.
async fn with_https_issuer(
    iss: &str,
    key: &TokenIssuer,
) -> (
    casegate_tests::jwks_server::JwksServer,
    TestGateway,
    tempfile::NamedTempFile,
) {
    let idp_ca = casegate::dev::DevCa::generate("idp test CA").expect("CA");
    let server = casegate_tests::jwks_server::JwksServer::start(
        &idp_ca,
        json!({ "keys": [key.jwk()] }).to_string(),
    )
    .await;
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), &idp_ca.cert_pem).expect("write CA");
    let gw = TestGateway::start_with(&format!(
        "[[auth.issuers]]\niss = \"{iss}\"\naudience = \"{AUDIENCE}\"\nalgorithms = [\"EdDSA\"]\n\
         jwks_url = \"{}\"\njwks_ca = \"{}\"\njwks_min_refresh = \"0s\"\n",
        server.url(),
        ca_file.path().display()
    ))
    .await;
    (server, gw, ca_file)
}

#[tokio::test]
async fn keys_fetched_over_https_are_refreshed_on_a_new_kid_and_kept_when_the_issuer_is_down() {
    const ISS: &str = "https://idp2.test.invalid";
    let first = TokenIssuer::generate(ISS, AUDIENCE).expect("key A");
    let second = TokenIssuer::generate(ISS, AUDIENCE).expect("key B");
    let (server, gw, _ca_file) = with_https_issuer(ISS, &first).await;
    let token = |issuer: &TokenIssuer| {
        let mut claims = gw.claims("clinic", "clinician");
        claims["iss"] = json!(ISS);
        issuer.sign_value(&claims).expect("sign")
    };

    assert_eq!(
        call(&gw, Some(token(&first))).await.0,
        Code::Ok,
        "key A, fetched over HTTPS"
    );
    // The issuer publishes key B; its first use fetches the set again.
    server.set(json!({ "keys": [first.jwk(), second.jwk()] }).to_string());
    let before = server.hits();
    assert_eq!(
        call(&gw, Some(token(&second))).await.0,
        Code::Ok,
        "key B on first use"
    );
    assert!(server.hits() > before, "the new kid triggered a fetch");

    // The issuer goes down: known keys keep working, unknown ones are refused.
    server.stop();
    assert_eq!(call(&gw, Some(token(&first))).await.0, Code::Ok);
    assert_eq!(call(&gw, Some(token(&second))).await.0, Code::Ok);
    let stranger = TokenIssuer::generate(ISS, AUDIENCE).expect("key C");
    let (code, message) = call(&gw, Some(token(&stranger))).await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(
        message.contains("key id is not in the issuer's key set"),
        "{message}"
    );
}

#[tokio::test]
async fn a_refreshed_key_set_with_a_small_order_key_is_refused_and_the_last_good_set_kept() {
    const ISS: &str = "https://idp3.test.invalid";
    let good = TokenIssuer::generate(ISS, AUDIENCE).expect("key");
    let (server, gw, _ca_file) = with_https_issuer(ISS, &good).await;
    let mut claims = gw.claims("privacy", "privacy_officer");
    claims["iss"] = json!(ISS);
    let officer = |token: String| async {
        let mut caller = Caller::new(gw.channel("privacy").await, Some(token));
        caller.audit.get_checkpoint(GetCheckpointRequest {}).await
    };
    assert!(
        officer(good.sign_value(&claims).expect("sign"))
            .await
            .is_ok()
    );

    // The issuer's set now also holds the identity point; a token naming it carries the
    // signature R = identity, S = 0, which verifies under that key for any message.
    server.set(
        json!({ "keys": [good.jwk(), {"kty": "OKP", "crv": "Ed25519", "kid": "weak", "alg": "EdDSA",
            "x": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}] })
        .to_string(),
    );
    let mut forged_signature = [0u8; 64];
    forged_signature[0] = 1;
    let forged = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": "weak"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(forged_signature)
    );
    let before = server.hits();
    let status = officer(forged).await.expect_err("a forged token");
    assert!(
        server.hits() > before,
        "the unknown kid made the gateway fetch the set"
    );
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status
            .message()
            .contains("key id is not in the issuer's key set"),
        "{}",
        status.message()
    );
    // The set that brought the weak key was refused whole; the last good one still serves.
    assert!(
        officer(good.sign_value(&claims).expect("sign"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_token_already_accepted_is_still_checked_against_each_connection() {
    let gw = TestGateway::start().await;
    let token = gw.token("clinic", "clinician");
    // Accepted twice on its own organisation's connection (the second time remembered)...
    for _ in 0..2 {
        assert_eq!(
            call(&gw, Some(token.clone())).await,
            (Code::Ok, AUDIT_ORIGIN.to_owned())
        );
    }
    // ...and still refused on another organisation's (its certificate binding is checked first).
    let mut other = Caller::new(gw.channel("nav").await, Some(token));
    let status = other
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect_err("the clinic's token on NAV's connection");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status
            .message()
            .contains("token is bound to a different client certificate"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn the_key_set_fetch_takes_only_a_bounded_200_from_a_server_the_configured_ca_vouches_for() {
    use casegate::https;
    let ca = casegate::dev::DevCa::generate("idp test CA").expect("CA");
    let server = casegate_tests::jwks_server::JwksServer::start(&ca, "{\"keys\":[]}".into()).await;
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), &ca.cert_pem).expect("write CA");
    let client = https::client(
        https::roots(Some(ca_file.path())).expect("roots"),
        std::time::Duration::from_secs(10),
    )
    .expect("client");
    let url = https::parse_url(&server.url()).expect("url");
    assert_eq!(
        https::get(&client, &url).await,
        Ok(b"{\"keys\":[]}".to_vec())
    );

    // Exactly the bound passes; one byte more is refused.
    let at_bound = "x".repeat(1 << 20);
    server.set(at_bound.clone());
    assert_eq!(
        https::get(&client, &url).await.map(|b| b.len()),
        Ok(at_bound.len())
    );
    server.set("x".repeat((1 << 20) + 1));
    let error = https::get(&client, &url).await.expect_err("over the bound");
    assert!(error.contains("larger than 1048576 bytes"), "{error}");
    // The same without a length announced: counted as it arrives.
    let chunked = https::parse_url(&format!("https://{}/chunked.json", server.addr)).expect("url");
    let error = https::get(&client, &chunked)
        .await
        .expect_err("over the bound, streamed");
    assert!(error.contains("larger than 1048576 bytes"), "{error}");
    server.set(at_bound.clone());
    assert_eq!(
        https::get(&client, &chunked).await.map(|b| b.len()),
        Ok(at_bound.len()),
        "exactly the bound, streamed"
    );

    // A server that does not answer is given up on after the client's timeout.
    let impatient = https::client(
        https::roots(Some(ca_file.path())).expect("roots"),
        std::time::Duration::from_millis(300),
    )
    .expect("client");
    let stalled = https::parse_url(&format!("https://{}/stalled.json", server.addr)).expect("url");
    let error = https::get(&impatient, &stalled)
        .await
        .expect_err("no answer in time");
    assert!(error.to_lowercase().contains("timed out"), "{error}");

    let missing = https::parse_url(&format!("https://{}/other", server.addr)).expect("url");
    let error = https::get(&client, &missing).await.expect_err("404");
    assert!(error.contains("HTTP status 404"), "{error}");

    // The public web PKI does not vouch for the test CA's certificate.
    let public = https::client(
        https::roots(None).expect("roots"),
        std::time::Duration::from_secs(10),
    )
    .expect("client");
    let error = https::get(&public, &url).await.expect_err("unknown issuer");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}
