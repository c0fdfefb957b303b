//! The `casegate` binary as an operator runs it: exit codes, the dev setup, signals.
//! (These need the built executable, which only this package's tests can name.)

use std::{path::Path, process::Stdio, time::Duration};

mod support;

use support::{
    BIN, DevGateway, casegate, check_config, dev_channel, dev_grant, dev_orgnr, dev_token,
    refused_disclosure, signal, start_dev, with,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// `casegate dev` over `data` with a grace period of `grace`: the child and its address.
async fn dev_with_grace(data: &Path, grace: &str) -> (tokio::process::Child, String) {
    let DevGateway { child, addr, .. } =
        start_dev(data, &[("CASEGATE_SERVER__SHUTDOWN_GRACE", grace)]).await;
    (child, addr)
}

#[tokio::test]
async fn bad_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("casegate.toml");
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys": []}"#).expect("write");
    std::fs::write(
        &config,
        r#"
[server]
listen = "127.0.0.1:0"
listen_backlog = 100

[tls]
cert = "no-such-cert.pem"
key = "no-such-key.pem"
client_ca = "ca.pem"

[[auth.issuers]]
iss = "https://idp.test.invalid"
audience = "casegate"
algorithms = ["HS256"]
jwks_file = "jwks.json"

[storage]
data_dir = "data"
"#,
    )
    .expect("write config");
    let out = casegate()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    for expected in [
        "has 9 problems",
        "privacy.pseudonym_key: missing",
        "notes.keyring: missing",
        "audit.origin: missing",
        "audit.signing_key: missing",
        "server.listen_backlog: unknown key",
        "algorithms: \"HS256\" is not allowed",
        "tls.cert:",
        "no-such-cert.pem: No such file or directory",
        "tls.key:",
        "tls.client_ca:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing may be created on a bad config"
    );
}

/// A configuration in `dir` whose key files all exist but hold nothing usable (so every one
/// is checked and reported), with `jwks` as its one issuer's key set.
fn unusable_key_material(dir: &Path, jwks: &str) -> std::path::PathBuf {
    for name in [
        "server.pem",
        "server.key",
        "ca.pem",
        "audit.key",
        "pseudonym.key",
        "notes.keyring",
    ] {
        std::fs::write(dir.join(name), "not PEM\n").expect("write");
    }
    std::fs::write(dir.join("jwks.json"), jwks).expect("write");
    let config = dir.join("casegate.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n\
         [[auth.issuers]]\niss = \"i\"\naudience = \"a\"\nalgorithms = [\"EdDSA\"]\njwks_file = \"jwks.json\"\n\
         [storage]\ndata_dir = \"data\"\n[audit]\norigin = \"t/audit\"\nsigning_key = \"audit.key\"\n\
         [privacy]\npseudonym_key = \"pseudonym.key\"\n[notes]\nkeyring = \"notes.keyring\"\n",
    )
    .expect("write");
    config
}

#[tokio::test]
async fn key_material_problems_are_reported_together_and_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unusable_key_material(
        dir.path(),
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}"#,
    );
    let out = casegate()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    for expected in [
        "tls.cert:",
        "tls.key:",
        "tls.client_ca:",
        "auth.issuers[0].jwks_file:",
        "symmetric keys are not accepted",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn check_config_refuses_a_key_set_holding_a_small_order_ed25519_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The identity point: with it as a key, "R = identity, S = 0" verifies for any token.
    let config = unusable_key_material(
        dir.path(),
        r#"{"keys": [{"kty":"OKP","crv":"Ed25519","kid":"weak","alg":"EdDSA","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#,
    );
    let out = check_config(&config, &[]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("auth.issuers[0].jwks_file:")
            && text.contains("key \"weak\": refused: small-order Ed25519 point"),
        "{text}"
    );
}

#[tokio::test]
async fn check_config_refuses_an_audit_origin_that_is_not_the_signing_keys_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = casegate::dev::prepare(dir.path()).expect("dev setup");
    let fine = check_config(&config, &[]).await;
    assert_eq!(fine.status.code(), Some(0), "{fine:?}");
    let other = check_config(
        &config,
        &[("CASEGATE_AUDIT__ORIGIN", "other.example/audit")],
    )
    .await;
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("audit.signing_key:")
            && stderr.contains("audit.origin is \"other.example/audit\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_during_a_streaming_call_exits_zero_within_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = dev_with_grace(dir.path(), "2s").await;

    let mut health = HealthClient::new(dev_channel(dir.path(), "clinic", &addr).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch starts")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("stream ok")
        .expect("first status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let sent = tokio::time::Instant::now();
    signal(&child, "TERM");
    // The open stream hears that the gateway is going away.
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("status change in time");
    if let Ok(Some(update)) = next {
        assert_eq!(update.status(), ServingStatus::NotServing);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status:?}");
    // 2 s of grace for the stream that never ends, plus process teardown.
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[tokio::test]
async fn dev_mode_serves_tokens_that_the_gateway_accepts_and_sigint_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = dev_with_grace(dir.path(), "5s").await;
    for file in [
        "ca.pem",
        "clinic.pem",
        "clinic.key",
        "nav.pem",
        "ips.pem",
        "privacy.pem",
        "portal.pem",
    ] {
        assert!(dir.path().join("pki").join(file).is_file(), "{file}");
    }
    assert!(dir.path().join("casegate.toml").is_file());
    let out = casegate()
        .arg("check-config")
        .arg(dir.path().join("casegate.toml"))
        .output()
        .await
        .expect("check-config");
    let verdict = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        verdict.contains(": OK (listen 127.0.0.1:50051"),
        "{verdict}"
    );

    let out = casegate()
        .args([
            "dev",
            "token",
            "--org",
            "ips",
            "--role",
            "employment_specialist",
            "--ttl",
            "5m",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .await
        .expect("dev token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();

    let channel = dev_channel(dir.path(), "ips", &addr).await;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "casegate.v1.ConsentService".into(),
        })
        .await
        .expect("health");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
    let mut request = tonic::Request::new(casegate_proto::v1::ListConsentsRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let status = casegate_proto::v1::consent_service_client::ConsentServiceClient::new(channel)
        .list_consents(request)
        .await
        .expect_err("an empty request names its missing field");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "subject_id: required");

    // The same token over another organisation's certificate is refused (token binding).
    let mut request = tonic::Request::new(casegate_proto::v1::ListConsentsRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let status = casegate_proto::v1::consent_service_client::ConsentServiceClient::new(
        dev_channel(dir.path(), "nav", &addr).await,
    )
    .list_consents(request)
    .await
    .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // A second gateway on the same data folder refuses to start.
    let second = casegate()
        .env("CASEGATE_METRICS__LISTEN", "127.0.0.1:0")
        .env("CASEGATE_WEB__LISTEN", "127.0.0.1:0")
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .await
        .expect("second gateway");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another casegate process"));

    signal(&child, "INT");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");

    // The gateway's own audit log verifies offline with the key `audit vkey` prints.
    let out = casegate()
        .args(["audit", "vkey", "--config"])
        .arg(dir.path().join("casegate.toml"))
        .output()
        .await
        .expect("audit vkey");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vkey = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(vkey.starts_with("dev.casegate.local/audit+"), "{vkey}");
    let out = casegate()
        .args(["audit", "verify", "--vkey", &vkey, "--log"])
        .arg(dir.path().join("audit"))
        .output()
        .await
        .expect("audit verify");
    let verdict = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{verdict}");
    assert!(verdict.starts_with("OK: 1 entries"), "{verdict}");

    // Damage the log's one record: the gateway refuses to start and names the index.
    let segment = std::fs::read_dir(dir.path().join("audit/segments"))
        .expect("segments")
        .next()
        .expect("one segment")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&segment).expect("read");
    let in_record = casegate_audit::segment::HEADER_LEN as usize
        + casegate_audit::segment::FRAME_HEADER_LEN
        + 2;
    bytes[in_record] ^= 0xff;
    std::fs::write(&segment, bytes).expect("write");
    let out = casegate()
        .env("CASEGATE_METRICS__LISTEN", "127.0.0.1:0")
        .env("CASEGATE_WEB__LISTEN", "127.0.0.1:0")
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .await
        .expect("restart");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("audit log is damaged at index 0"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dev_token_refuses_unknown_organisations_roles_and_identity_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, expected) in [
        (
            vec!["--org", "bank", "--role", "clinician"],
            "unknown organisation",
        ),
        (
            vec!["--org", "nav", "--role", "boss"],
            "--role: unknown role",
        ),
        (
            vec![
                "--org",
                "portal",
                "--role",
                "jobseeker",
                "--pid",
                "12345678901",
            ],
            "--pid:",
        ),
    ] {
        let out = casegate()
            .args(["dev", "token", "--data"])
            .arg(dir.path())
            .args(&args)
            .output()
            .await
            .expect("run");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Fetches `http://addr/metrics`.
async fn scrape(addr: &str) -> String {
    let (status, body) = support::http_get(&format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_calls_and_neither_metrics_nor_logs_show_identity_numbers() {
    use casegate_proto::v1::{
        CheckDisclosureRequest, ListConsentsRequest, Party,
        consent_service_client::ConsentServiceClient,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("gateway.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut child = casegate()
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("CASEGATE_METRICS__LISTEN", "127.0.0.1:0")
        .env("CASEGATE_WEB__LISTEN", "127.0.0.1:0")
        .env("CASEGATE_LOG__FORMAT", "json")
        .env("CASEGATE_NOTES__SWEEP_INTERVAL", "100ms")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("start");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut metrics) = (None, None);
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("screen in time")
        .expect("read")
    {
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.split("http://").nth(1)
            && rest.ends_with("/metrics")
        {
            metrics = rest.strip_suffix("/metrics").map(str::to_owned);
            break;
        }
    }
    let (addr, metrics) = (addr.expect("address"), metrics.expect("metrics address"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let subject = casegate_consent::SubjectId::synthetic_all()
        .nth(42)
        .expect("subject")
        .expose();
    let token = |org: &str, role: &str, pid: Option<&str>| dev_token(dir.path(), org, role, pid);
    let orgnr = dev_orgnr;
    let grant = dev_grant(&subject, "nav", "clinic", "benefit_planning");
    let portal = token("portal", "jobseeker", Some(&subject));
    let mut jobseeker = ConsentServiceClient::new(dev_channel(dir.path(), "portal", &addr).await);
    jobseeker
        .grant_consent(with(&portal, grant))
        .await
        .expect("grant");
    jobseeker
        .list_consents(with(
            &portal,
            ListConsentsRequest {
                subject_id: subject.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list");
    let nav = token("nav", "nav_counsellor", None);
    let mut counsellor = ConsentServiceClient::new(dev_channel(dir.path(), "nav", &addr).await);
    for purpose in ["benefit_planning", "ips_follow_up"] {
        counsellor
            .check_disclosure(with(
                &nav,
                CheckDisclosureRequest {
                    subject_id: subject.clone(),
                    recipient: Some(Party {
                        orgnr: orgnr("clinic"),
                        roles: vec![],
                    }),
                    category: "benefit_counselling".into(),
                    purpose: purpose.into(),
                    approval_attested: false,
                },
            ))
            .await
            .expect("decision");
    }
    // A disclosure and its delivery: title and body must not reach the logs either.
    {
        use casegate_proto::v1::{
            DiscloseRequest, StreamInboxRequest, disclosure_service_client::DisclosureServiceClient,
        };
        let mut sender = DisclosureServiceClient::new(dev_channel(dir.path(), "nav", &addr).await);
        sender
            .disclose(with(
                &nav,
                DiscloseRequest {
                    request_id: "log-scan-1".into(),
                    subject_id: subject.clone(),
                    recipient_orgnr: orgnr("clinic"),
                    category: "benefit_counselling".into(),
                    purpose: "benefit_planning".into(),
                    title: "TITLE-log-scan-2c1f".into(),
                    body: b"BODY-log-scan-88d0".to_vec(),
                    content_type: "text/plain".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("disclosed");
        let clinic = token("clinic", "clinician", None);
        let mut receiver =
            DisclosureServiceClient::new(dev_channel(dir.path(), "clinic", &addr).await);
        let mut stream = receiver
            .stream_inbox(with(&clinic, StreamInboxRequest { role: 0 }))
            .await
            .expect("stream")
            .into_inner();
        let first = stream.message().await.expect("ok").expect("a note");
        let Some(casegate_proto::v1::stream_inbox_response::Event::Note(note)) = first.event else {
            panic!("expected the note first");
        };
        assert_eq!(note.body, b"BODY-log-scan-88d0", "delivered intact");
    }
    // A refused call too: an invalid identity number must not be echoed anywhere either.
    let _ = counsellor
        .list_consents(with(
            &nav,
            ListConsentsRequest {
                subject_id: "12345678901".into(),
                ..Default::default()
            },
        ))
        .await;

    // The note store's figures, as of a sweep after the disclosure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = scrape(&metrics).await;
    assert!(metric(&text, "casegate_calls_total") >= 5.0, "{text}");
    assert_eq!(metric(&text, "casegate_notes_held"), 1.0, "{text}");
    assert!(metric(&text, "casegate_note_journal_bytes") > 0.0, "{text}");
    assert_eq!(metric(&text, "casegate_note_journal_files"), 1.0, "{text}");
    assert!(
        metric(&text, "casegate_decisions_total{outcome=\"permit\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "casegate_decisions_total{outcome=\"purpose_not_covered\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "casegate_audit_batch_entries_count") >= 2.0,
        "{text}"
    );

    signal(&child, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(
        logs.contains("\"orgnr\":\"910000020\""),
        "calls are logged with their organisation"
    );
    for secret in [
        subject.as_str(),
        "12345678901",
        "TITLE-log-scan-2c1f",
        "BODY-log-scan-88d0",
        "Qk9EWS1sb2ctc2Nhbi04OGQw", // the body in base64
    ] {
        assert!(!text.contains(secret), "metrics show personal data");
        assert!(!logs.contains(secret), "logs show personal data");
    }
}

#[tokio::test]
async fn rotating_the_audit_key_keeps_the_whole_log_verifiable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("casegate.toml");
    let vkey = |config: &Path| {
        let out = std::process::Command::new(BIN)
            .args(["audit", "vkey", "--config"])
            .arg(config)
            .output()
            .expect("vkey");
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    };
    let verify = |keys: &[&str], trusted: Option<&Path>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["audit", "verify", "--log"])
            .arg(dir.path().join("audit"));
        for k in keys {
            cmd.args(["--vkey", k]);
        }
        if let Some(t) = trusted {
            cmd.arg("--trusted").arg(t);
        }
        let out = cmd.output().expect("verify");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };

    // A first run, then keep its checkpoint as a privacy officer would.
    let (mut child, _) = dev_with_grace(dir.path(), "5s").await;
    signal(&child, "INT");
    assert!(child.wait().await.expect("wait").success());
    let old_vkey = vkey(&config);
    let kept = dir.path().join("kept.checkpoint");
    std::fs::copy(dir.path().join("audit/checkpoint"), &kept).expect("keep checkpoint");

    let out = casegate()
        .args(["keys", "rotate-audit", "--config"])
        .arg(&config)
        .output()
        .await
        .expect("rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_vkey = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert_ne!(new_vkey, old_vkey);
    assert_eq!(
        vkey(&config),
        new_vkey,
        "the configured key file now holds the new key"
    );

    // A second run signs with the new key only.
    let (mut child, _) = dev_with_grace(dir.path(), "5s").await;
    signal(&child, "INT");
    assert!(child.wait().await.expect("wait").success());

    let (ok, verdict) = verify(&[&new_vkey], None);
    assert!(ok && verdict.starts_with("OK: 3 entries"), "{verdict}");
    let (ok, verdict) = verify(&[&new_vkey, &old_vkey], Some(&kept));
    assert!(ok, "{verdict}");
    assert!(
        verdict.contains("consistent with the trusted checkpoint of 1 entries"),
        "{verdict}"
    );
    let (ok, verdict) = verify(&[&old_vkey], None);
    assert!(!ok && verdict.contains("not signed by key"), "{verdict}");
    // The old checkpoint itself still verifies with the old key.
    let note = std::fs::read_to_string(&kept).expect("kept");
    casegate_audit::checkpoint::Verifier::from_vkey(&old_vkey)
        .expect("old vkey")
        .verify(&note)
        .expect("older checkpoints stay verifiable with the older key");
}

/// Runs `casegate` with `args` to completion: (exit code, stdout, stderr).
fn run_casegate(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run casegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf8"),
        String::from_utf8(out.stderr).expect("utf8"),
    )
}

#[tokio::test]
async fn an_officer_queries_and_reports_from_the_command_line_and_replays_offline() {
    use casegate_proto::v1::consent_service_client::ConsentServiceClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let (mut child, addr) = dev_with_grace(data, "2s").await;
    let subject = casegate_consent::SubjectId::synthetic_all()
        .nth(77)
        .expect("subject")
        .expose();
    let portal = dev_token(data, "portal", "jobseeker", Some(&subject));
    ConsentServiceClient::new(dev_channel(data, "portal", &addr).await)
        .grant_consent(with(
            &portal,
            dev_grant(&subject, "nav", "ips", "ips_follow_up"),
        ))
        .await
        .expect("grant");
    // A refusal (the purpose is not covered) to replay later.
    let refused = refused_disclosure(data, &addr, &subject, "cli-1").await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let token_file = data.join("officer.token");
    std::fs::write(
        &token_file,
        dev_token(data, "privacy", "privacy_officer", None),
    )
    .expect("token file");
    let pki = |name: &str| data.join("pki").join(name).display().to_string();
    let gateway = format!("https://{addr}");
    let connection = [
        "--gateway".to_owned(),
        gateway,
        "--ca".into(),
        pki("ca.pem"),
        "--cert".into(),
        pki("privacy.pem"),
        "--key".into(),
        pki("privacy.key"),
        "--token-file".into(),
        token_file.display().to_string(),
        "--server-name".into(),
        "localhost".into(),
    ];
    let officer = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(connection.iter().map(String::as_str));
        run_casegate(&all)
    };

    // CSV: a header and one row per entry about the subject, oldest first.
    let (code, csv, err) = officer(&["audit", "query", "--subject", &subject, "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("index,time,kind,actor,"), "{csv}");
    let kinds: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(2).expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        ["consent_granted", "disclosure_refused", "audit_queried"]
    );
    assert!(rows[2].contains("purpose_not_covered"), "{csv}");
    assert!(!csv.contains(&subject), "an identity number in the output");
    // Every entry, page by page (each page an audited query that may list earlier pages).
    let (code, paged, err) = officer(&[
        "audit",
        "query",
        "--subject",
        &subject,
        "--limit",
        "2",
        "--all",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    let paged: Vec<&str> = paged.lines().skip(1).collect();
    assert_eq!(paged[..3], rows[1..4], "{paged:?}");
    assert!(
        paged[3..].iter().all(|r| r.contains(",audit_queried,")),
        "{paged:?}"
    );
    let (code, _, err) = officer(&["audit", "query", "--limit", "1", "--all"]);
    assert_eq!((code, err.contains("at least 2")), (64, true), "{err}");
    let refusal_index: u64 = rows[2]
        .split(',')
        .next()
        .expect("index")
        .parse()
        .expect("index");
    // JSON and a kind filter.
    let (code, json, err) = officer(&[
        "audit",
        "query",
        "--kind",
        "disclosure_refused",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json.as_array().expect("array").len(), 1);
    assert_eq!(json[0]["reason"], "purpose_not_covered");
    assert_eq!(json[0]["index"], refusal_index);
    // A readable table, and bad input named with exit 64.
    let (code, table, _) = officer(&["audit", "query", "--subject", &subject]);
    assert_eq!(code, 0);
    assert!(
        table
            .lines()
            .next()
            .expect("header")
            .starts_with("index  time")
    );
    let (code, _, err) = officer(&["audit", "query", "--kind", "gossip"]);
    assert_eq!(
        (code, err.contains("--kind \"gossip\": unknown")),
        (64, true),
        "{err}"
    );
    let (code, _, err) = officer(&["audit", "query", "--subject", "12345678901"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("InvalidArgument") && err.contains("subject_id"),
        "{err}"
    );

    // The report, checked against the gateway's key given by the operator.
    let (code, vkey, _) = run_casegate(&[
        "audit",
        "vkey",
        "--config",
        &data.join("casegate.toml").display().to_string(),
    ]);
    assert_eq!(code, 0);
    let (code, report, err) = officer(&[
        "audit",
        "report",
        "--subject",
        &subject,
        "--vkey",
        vkey.trim(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report_file = data.join("report.json");
    std::fs::write(&report_file, &report).expect("write report");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(
        report["consent_versions"]
            .as_array()
            .expect("versions")
            .len(),
        1
    );
    assert!(report["events"].as_array().expect("events").len() >= 3);
    let (code, table, err) = officer(&[
        "audit",
        "report",
        "--subject",
        &subject,
        "--vkey",
        vkey.trim(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("events' inclusion proofs verify against it"),
        "{table}"
    );
    // Another gateway's key does not verify the report.
    let other_key = data.join("other.key");
    let (_, other_vkey, _) = run_casegate(&[
        "audit",
        "keygen",
        "--name",
        "other.example/audit",
        "--out",
        &other_key.display().to_string(),
    ]);
    let (code, _, err) = officer(&[
        "audit",
        "report",
        "--subject",
        &subject,
        "--vkey",
        other_vkey.trim(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("checkpoint"), "{err}");
    // Without a key from the operator there is nothing to check the report against.
    let (code, _, err) = officer(&["audit", "report", "--subject", &subject]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--vkey"), "{err}");

    // Offline, with the gateway stopped: rebuild the index, replay the refusal from the report.
    signal(&child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops in time")
        .expect("status");
    assert!(status.success());
    let config = data.join("casegate.toml").display().to_string();
    let (code, out, err) = run_casegate(&["audit", "reindex", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("OK: audit index rebuilt over "), "{out}");
    let log = data.join("audit").display().to_string();
    let (code, out, err) = run_casegate(&[
        "audit",
        "replay",
        "--log",
        &log,
        "--consents",
        &report_file.display().to_string(),
        "--index",
        &refusal_index.to_string(),
        "--config",
        &config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "REPRODUCED: entry {refusal_index} (disclosure_refused"
        )),
        "{out}"
    );
    assert!(out.contains("refusal purpose_not_covered"), "{out}");
}

/// `casegate dev token --pid` follows the identity-number rules of the consent domain: numbers
/// valid only under the rules announced for 2032 (first check digit remainder 1-3, individual
/// numbers that no longer say the century) are accepted; an FH number is refused as such.
#[tokio::test]
async fn dev_token_takes_identity_numbers_valid_under_the_2032_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Synthetic numbers (month + 80).
    for pid in ["15838510083", "15838510091", "15838510180", "15834060091"] {
        let out = casegate()
            .args(["dev", "token", "--org", "portal", "--role", "jobseeker"])
            .args(["--pid", pid, "--data"])
            .arg(dir.path())
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", &pid[..4]);
    }
    let out = casegate()
        .args(["dev", "token", "--org", "portal", "--role", "jobseeker"])
        .args(["--pid", "81819012349", "--data"])
        .arg(dir.path())
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("FH numbers") && !stderr.contains("81819012349"),
        "{stderr}"
    );
}

#[tokio::test]
async fn casegate_dev_prints_the_web_address_and_serves_the_pages_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let DevGateway { mut child, web, .. } = start_dev(&dir.path().join("dev"), &[]).await;
    let web = web.expect("the connection screen names the web pages");
    let authority = web
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .expect("http://ADDR/");
    assert!(authority.starts_with("127.0.0.1:"), "{web}");
    let (status, answer) = support::http_get(&web).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("<html lang=\"nb\">"), "{answer}");
    assert!(
        answer.contains("href=\"/dev/login\""),
        "the development login is offered"
    );
    signal(&child, "TERM");
    let status = child.wait().await.expect("wait");
    assert!(status.success(), "{status}");
}
