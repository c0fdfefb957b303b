//! `casegate audit report` and `casegate audit query` against a gateway that lies: a stand-in
//! `AuditService` (over TLS with the dev PKI) serves a report taken from a real dev gateway and
//! then altered, and query answers full of text meant for terminals and spreadsheets. What the
//! officer is shown must be what was verified, and safe where it is printed.

mod support;

use std::{
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex},
};

use casegate_audit::entry::EntryKind;
use casegate_proto::v1::{
    AuditActor, AuditEntry, ExportEntriesRequest, ExportEntriesResponse, GetCheckpointRequest,
    GetCheckpointResponse, GetConsistencyProofRequest, GetConsistencyProofResponse,
    GetInclusionProofRequest, GetInclusionProofResponse, QueryAuditRequest, QueryAuditResponse,
    SubjectAccessReportRequest, SubjectAccessReportResponse,
    audit_service_client::AuditServiceClient,
    audit_service_server::{AuditService, AuditServiceServer},
    consent_service_client::ConsentServiceClient,
};
use support::{
    BIN, dev_channel, dev_grant, dev_orgnr, dev_token, refused_disclosure, start_dev, with,
};
use tokio_stream::Stream;
use tonic::{
    Request, Response, Status,
    transport::{Identity, Server, ServerTlsConfig},
};

fn pki(data: &Path, name: &str) -> String {
    std::fs::read_to_string(data.join("pki").join(name)).expect("pki file")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run casegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the stand-in gateway answers.
#[derive(Clone, Default)]
struct Lies {
    report: Arc<Mutex<SubjectAccessReportResponse>>,
    entries: Arc<Vec<AuditEntry>>,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AuditService for Lies {
    type ExportEntriesStream = Stream_<ExportEntriesResponse>;
    type QueryAuditStream = Stream_<QueryAuditResponse>;

    async fn get_checkpoint(
        &self,
        _: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn get_inclusion_proof(
        &self,
        _: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn get_consistency_proof(
        &self,
        _: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn export_entries(
        &self,
        _: Request<ExportEntriesRequest>,
    ) -> Result<Response<Self::ExportEntriesStream>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn summarize_audit(
        &self,
        _: Request<casegate_proto::v1::SummarizeAuditRequest>,
    ) -> Result<Response<casegate_proto::v1::SummarizeAuditResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn query_audit(
        &self,
        _: Request<QueryAuditRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        let items: Vec<Result<QueryAuditResponse, Status>> = self
            .entries
            .iter()
            .map(|e| {
                Ok(QueryAuditResponse {
                    entry: Some(e.clone()),
                    entry_bytes: Vec::new(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn subject_access_report(
        &self,
        _: Request<SubjectAccessReportRequest>,
    ) -> Result<Response<SubjectAccessReportResponse>, Status> {
        let report = self.report.lock().expect("lock").clone();
        Ok(Response::new(report))
    }
}

/// Serves `lies` over TLS with the dev gateway's server certificate; returns its address.
async fn stand_in(data: &Path, lies: Lies) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(
        pki(data, "server.pem"),
        pki(data, "server.key"),
    ));
    let server = Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(AuditServiceServer::new(lies));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(server.serve_with_incoming(incoming));
    addr
}

/// Text meant to do something where it is printed: terminal escapes (OSC 8 hyperlink, CSI,
/// window title), bidirectional overrides, and spreadsheet formulas.
fn hostile_entry(index: u64) -> AuditEntry {
    AuditEntry {
        index,
        kind: i32::from(EntryKind::DisclosureRefused.code()),
        time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        actor: Some(AuditActor {
            orgnr: "\u{1b}[2J\u{1b}]0;owned\u{7}".into(),
            ..Default::default()
        }),
        category: "=HYPERLINK(\"https://evil.example\",\"open\")".into(),
        purpose: "@SUM(1+1)*cmd|' /C calc'!A0".into(),
        sender_orgnr: "+47 22 00 00 00".into(),
        recipient_orgnr: "-1+1".into(),
        reason: "\u{1b}]8;;https://evil.example\u{7}click\u{1b}]8;;\u{7}".into(),
        request_id: "\u{9b}31m".into(),
        detail: "permitted\u{202E}desufer\u{202C}".into(),
        ..Default::default()
    }
}

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n') || ('\u{202A}'..='\u{202E}').contains(&c)
}

// The command line runs synchronously here: the stand-in serves from another worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_is_shown_only_what_verified_and_only_safe_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let dev = start_dev(data, &[]).await;
    let addr = dev.addr.clone();
    let subject = casegate_consent::SubjectId::synthetic_all()
        .nth(91)
        .expect("subject")
        .expose();

    // A consent, and a refused disclosure (the purpose is not covered).
    let portal = dev_token(data, "portal", "jobseeker", Some(&subject));
    ConsentServiceClient::new(dev_channel(data, "portal", &addr).await)
        .grant_consent(with(
            &portal,
            dev_grant(&subject, "nav", "ips", "ips_follow_up"),
        ))
        .await
        .expect("grant");
    refused_disclosure(
        data,
        &addr,
        &subject,
        "=HYPERLINK(\"https://evil.example\",\"open\")",
    )
    .await;

    // The genuine report, and the gateway's key as the operator hands it out.
    let officer_token = dev_token(data, "privacy", "privacy_officer", None);
    let genuine = AuditServiceClient::new(dev_channel(data, "privacy", &addr).await)
        .subject_access_report(with(
            &officer_token,
            SubjectAccessReportRequest {
                subject_id: subject.clone(),
            },
        ))
        .await
        .expect("report")
        .into_inner();
    let config = data.join("casegate.toml").display().to_string();
    let (code, vkey, err) = run(&["audit", "vkey", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    let vkey = vkey.trim().to_owned();

    let refusal = genuine
        .events
        .iter()
        .position(|e| {
            e.entry.as_ref().expect("entry").kind == i32::from(EntryKind::DisclosureRefused.code())
        })
        .expect("the refusal is in the report");
    let lies = Lies {
        report: Arc::new(Mutex::new(genuine.clone())),
        entries: Arc::new((0..3).map(hostile_entry).collect()),
    };
    let fake = stand_in(data, lies.clone()).await;
    let token_file = data.join("officer.token");
    std::fs::write(&token_file, &officer_token).expect("token file");
    let pki_path = |name: &str| data.join("pki").join(name).display().to_string();
    let connection = [
        "--gateway".to_owned(),
        format!("https://{fake}"),
        "--ca".into(),
        pki_path("ca.pem"),
        "--cert".into(),
        pki_path("privacy.pem"),
        "--key".into(),
        pki_path("privacy.key"),
        "--token-file".into(),
        token_file.display().to_string(),
        "--server-name".into(),
        "localhost".into(),
    ];
    let officer = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(connection.iter().map(String::as_str));
        run(&all)
    };
    let report_args = |format: &'static str| {
        vec![
            "audit",
            "report",
            "--subject",
            subject.as_str(),
            "--vkey",
            vkey.as_str(),
            "--format",
            format,
        ]
    };

    // The genuine report, passed through: verifies, and the formula in the request id is text.
    let (code, table, err) = officer(&report_args("table"));
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("events' inclusion proofs verify"), "{table}");
    let (code, csv, err) = officer(&report_args("csv"));
    assert_eq!(code, 0, "{err}");
    assert!(csv.contains("disclosure_refused"), "{csv}");
    let (code, json, err) = officer(&report_args("json"));
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let refused = &json["events"][refusal]["entry"];
    assert_eq!(refused["kind"], "disclosure_refused");
    assert_eq!(
        refused["request_id"],
        "=HYPERLINK(\"https://evil.example\",\"open\")"
    );

    // The bytes say disclosure_refused; the readable copy says permitted, to another
    // organisation. Nothing is printed as verified.
    {
        let mut forged = genuine.clone();
        let view = forged.events[refusal].entry.as_mut().expect("entry");
        view.kind = i32::from(EntryKind::DisclosurePermitted.code());
        view.reason.clear();
        view.recipient_orgnr = dev_orgnr("clinic");
        *lies.report.lock().expect("lock") = forged;
    }
    for format in ["table", "csv", "json"] {
        let (code, out, err) = officer(&report_args(format));
        assert_eq!(code, 1, "{format}: {out}");
        assert!(out.is_empty(), "{format}: printed {out}");
        assert!(
            err.contains("the report does not verify")
                && err.contains("the readable entry differs from the verified bytes"),
            "{format}: {err}"
        );
    }
    // A consent said to be withdrawn when no verified entry says so.
    {
        let mut forged = genuine.clone();
        forged.consents[0].status = casegate_proto::v1::ConsentStatus::Withdrawn as i32;
        *lies.report.lock().expect("lock") = forged;
    }
    let (code, out, err) = officer(&report_args("table"));
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("consent version 0"), "{err}");

    // Query answers: nothing reaches the terminal raw, no CSV cell starts a formula, and the
    // JSON stays JSON with every control and format character escaped.
    let (code, table, err) = officer(&["audit", "query", "--format", "table"]);
    assert_eq!(code, 0, "{err}");
    assert!(!table.chars().any(unsafe_char), "{table:?}");
    assert!(
        table.contains("\u{FFFD}]8;;https://evil.example"),
        "{table}"
    );
    let (code, csv, err) = officer(&["audit", "query", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(!csv.chars().any(|c| unsafe_char(c) && c != '\r'), "{csv:?}");
    for row in csv.lines().skip(1) {
        for cell in row.split(',') {
            let cell = cell.trim_start_matches('"');
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "a cell starts a formula: {row}"
            );
        }
    }
    assert!(csv.contains("'=HYPERLINK("), "{csv}");
    assert!(csv.contains("'@SUM(1+1)"), "{csv}");
    assert!(csv.contains(",'+47 22 00 00 00,'-1+1,"), "{csv}");
    let (code, json, err) = officer(&["audit", "query", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!json.chars().any(unsafe_char), "{json:?}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json[0]["detail"], "permitted\u{202E}desufer\u{202C}");

    let (exit, _) = dev.stop().await;
    assert!(exit.success());
}
