//! `casegate audit query` and `casegate audit report`: a privacy officer's (or a jobseeker
//! portal's) client for a running gateway, with the caller's certificate and token. Output as
//! a readable table, JSON or CSV. A report's proofs are checked here before it is printed.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use casegate_audit::{checkpoint::Verifier, merkle};
use casegate_proto::v1::{
    self, AuditEntry, QueryAuditRequest, SubjectAccessReportRequest, SubjectAccessReportResponse,
    audit_service_client::AuditServiceClient,
};
use serde_json::{Value, json};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use super::{EXIT_USAGE, read_vkey};
use crate::convert::audit::rfc3339;

/// How to reach the gateway and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The gateway's address.
    #[arg(
        long,
        value_name = "URL",
        env = "CASEGATE_GATEWAY",
        default_value = "https://127.0.0.1:50051"
    )]
    pub gateway: String,
    /// The CA certificate (PEM) that issued the gateway's server certificate.
    #[arg(long, value_name = "FILE", env = "CASEGATE_CA")]
    pub ca: PathBuf,
    /// Your organisation's client certificate (PEM).
    #[arg(long, value_name = "FILE", env = "CASEGATE_CERT")]
    pub cert: PathBuf,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "CASEGATE_KEY")]
    pub key: PathBuf,
    /// A file holding your access token (e.g. from `casegate dev token`).
    #[arg(long, value_name = "FILE", env = "CASEGATE_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// The name in the gateway's certificate, when it differs from the address's host.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for reading.
    Table,
    /// One JSON document (hashes in hex, canonical bytes in base64).
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// The filters of `casegate audit query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Only entries about this jobseeker (national identity number or D-number).
    #[arg(long, value_name = "NNIN")]
    pub subject: Option<String>,
    /// Only entries this organisation is actor, sender or recipient of.
    #[arg(long, value_name = "ORGNR")]
    pub orgnr: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only entries before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only entries of this kind (repeatable), e.g. disclosure_refused.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Resume from this index.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub start_index: u64,
    /// At most this many entries (the gateway's default when absent); with --all, per page.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Page through every matching entry (each page is itself an audited query).
    #[arg(long)]
    pub all: bool,
}

/// Puts the caller's token on every request.
#[derive(Debug, Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = AuditServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A failure of the command: usage (exit 64) or at the gateway (exit 1).
enum Failure {
    Usage(String),
    Failed(String),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Failed(format!("{:?}: {}", s.code(), s.message()))
    }
}

fn finish(command: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("casegate audit {command}: {m}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("casegate audit {command}: {m}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &PathBuf, what: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("{what} {}: {e}", path.display())))
}

async fn connect(c: &Connection) -> Result<Client, Failure> {
    crate::tls::install_provider();
    let ca = read(&c.ca, "--ca")?;
    let cert = read(&c.cert, "--cert")?;
    let key = read(&c.key, "--key")?;
    let token = read(&c.token_file, "--token-file")?;
    let bearer: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| Failure::Usage("the token is not printable text".into()))?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    if let Some(name) = &c.server_name {
        tls = tls.domain_name(name.clone());
    }
    let channel = Channel::from_shared(c.gateway.clone())
        .map_err(|e| Failure::Usage(format!("--gateway: {e}")))?
        .tls_config(tls)
        .map_err(|e| Failure::Usage(format!("TLS settings: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .connect()
        .await
        .map_err(|e| Failure::Failed(format!("cannot connect to {}: {e}", c.gateway)))?;
    Ok(
        AuditServiceClient::with_interceptor(channel, Bearer(bearer))
            .max_decoding_message_size(64 << 20),
    )
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))
}

fn timestamp(flag: &str, text: &Option<String>) -> Result<Option<prost_types::Timestamp>, Failure> {
    let Some(text) = text else {
        return Ok(None);
    };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Failure::Usage(format!("{flag} {text:?}: not an RFC 3339 time ({e})")))?;
    Ok(Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }))
}

fn kind_code(text: &str) -> Result<i32, Failure> {
    casegate_audit::entry::EntryKind::ALL
        .into_iter()
        .find(|k| k.as_str() == text)
        .map(|k| i32::from(k.code()))
        .ok_or_else(|| {
            let known: Vec<&str> = casegate_audit::entry::EntryKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect();
            Failure::Usage(format!(
                "--kind {text:?}: unknown; one of {}",
                known.join(", ")
            ))
        })
}

/// `casegate audit query`.
pub fn query(connection: &Connection, args: QueryArgs, format: OutputFormat) -> ExitCode {
    let result = (|| {
        let mut request = QueryAuditRequest {
            subject_id: args.subject.clone().unwrap_or_default(),
            orgnr: args.orgnr.clone().unwrap_or_default(),
            from: timestamp("--from", &args.from)?,
            until: timestamp("--until", &args.until)?,
            kinds: args
                .kinds
                .iter()
                .map(|k| kind_code(k))
                .collect::<Result<_, _>>()?,
            start_index: args.start_index,
            limit: args.limit.unwrap_or(0),
        };
        let page_size = args
            .limit
            .unwrap_or(crate::convert::audit::DEFAULT_QUERY_LIMIT) as usize;
        // Each page is an audited query that may match itself: pages of one would never end.
        if args.all && page_size < 2 {
            return Err(Failure::Usage("--all needs a --limit of at least 2".into()));
        }
        let entries = runtime()?.block_on(async {
            let mut client = connect(connection).await?;
            let mut entries = Vec::new();
            loop {
                let mut stream = client.query_audit(request.clone()).await?.into_inner();
                let mut page = 0;
                while let Some(item) = stream.message().await? {
                    if let Some(entry) = item.entry {
                        request.start_index = entry.index + 1;
                        entries.push(entry);
                        page += 1;
                    }
                }
                if !args.all || page < page_size {
                    return Ok::<_, Failure>(entries);
                }
            }
        })?;
        let rows: Vec<Row> = entries.iter().map(|e| Row::of(e, None)).collect();
        match format {
            OutputFormat::Table => print!("{}", table(&rows)),
            OutputFormat::Csv => print!("{}", csv(&rows)),
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&Value::Array(
                    entries.iter().map(entry_json).collect()
                ))
                .unwrap_or_default()
            ),
        }
        if format == OutputFormat::Table && !args.all {
            match entries.last() {
                Some(last) => eprintln!(
                    "{} entries; resume with --start-index {}",
                    entries.len(),
                    last.index + 1
                ),
                None => eprintln!("no entries"),
            }
        }
        Ok(())
    })();
    finish("query", result)
}

/// `casegate audit report`.
pub fn report(
    connection: &Connection,
    subject: &str,
    vkey: Option<&str>,
    format: OutputFormat,
) -> ExitCode {
    let result = (|| {
        let pinned = vkey.map(read_vkey).transpose().map_err(Failure::Usage)?;
        let report = runtime()?.block_on(async {
            let mut client = connect(connection).await?;
            let report = client
                .subject_access_report(SubjectAccessReportRequest {
                    subject_id: subject.to_owned(),
                })
                .await?
                .into_inner();
            Ok::<_, Failure>(report)
        })?;
        let key = match pinned {
            Some(key) => key,
            None => Verifier::from_vkey(&report.verifier_key)
                .map_err(|e| Failure::Failed(format!("the report's verifier key: {e}")))?,
        };
        let checked = check_report(&report, &key).map_err(Failure::Failed)?;
        match format {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&report_json(&report)).unwrap_or_default()
            ),
            OutputFormat::Csv => print!("{}", csv(&report_rows(&report))),
            OutputFormat::Table => {
                println!(
                    "Subject access report issued {}: {} consent version(s), {} event(s).",
                    report
                        .issued_at
                        .as_ref()
                        .map_or_else(String::new, wire_time),
                    report.consents.len(),
                    report.events.len()
                );
                println!("{checked}");
                if vkey.is_none() {
                    println!(
                        "(checked with the key the report names; pass --vkey to pin the \
                         gateway's key)"
                    );
                }
                println!("\nConsents");
                print!("{}", consent_table(&report.consents));
                println!("\nEvents");
                print!("{}", table(&report_rows(&report)));
            }
        }
        Ok(())
    })();
    finish("report", result)
}

/// Checks a report offline: the checkpoint is signed by `key`; each event's canonical bytes
/// hash to its leaf, and its inclusion proof leads to the checkpoint's root.
pub fn check_report(
    report: &SubjectAccessReportResponse,
    key: &Verifier,
) -> Result<String, String> {
    let checkpoint = report
        .checkpoint
        .as_ref()
        .ok_or("the report has no checkpoint")?;
    let signed = key
        .verify(&checkpoint.signed_note)
        .map_err(|e| format!("the report's checkpoint: {e}"))?;
    for event in &report.events {
        let entry = event.entry.as_ref().ok_or("an event without its entry")?;
        let leaf = merkle::leaf_hash(&event.entry_bytes);
        if entry.leaf_hash != leaf {
            return Err(format!(
                "event at index {}: its bytes do not hash to its leaf",
                entry.index
            ));
        }
        let proof = event
            .inclusion_proof
            .as_ref()
            .ok_or_else(|| format!("event at index {}: no inclusion proof", entry.index))?;
        let hashes = proof
            .hashes
            .iter()
            .map(|h| merkle::Hash::try_from(h.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                format!(
                    "event at index {}: a proof hash is not 32 bytes",
                    entry.index
                )
            })?;
        merkle::verify_inclusion(&leaf, entry.index, signed.size, &hashes, &signed.root)
            .map_err(|e| format!("event at index {}: {e}", entry.index))?;
    }
    Ok(format!(
        "OK: the checkpoint of {} entries is signed by {}, and all {} events' inclusion proofs \
         verify against it.",
        signed.size,
        key.label(),
        report.events.len()
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn wire_time(t: &prost_types::Timestamp) -> String {
    rfc3339(t.seconds * 1_000_000 + i64::from(t.nanos / 1000))
}

fn kind_name(kind: i32) -> String {
    u8::try_from(kind)
        .ok()
        .and_then(casegate_audit::entry::EntryKind::from_code)
        .map_or_else(|| format!("kind {kind}"), |k| k.as_str().to_owned())
}

fn role_name(role: i32) -> &'static str {
    v1::Role::try_from(role).map_or("", |r| match r {
        v1::Role::Unspecified => "",
        v1::Role::Clinician => "clinician",
        v1::Role::NavCounsellor => "nav_counsellor",
        v1::Role::EmploymentSpecialist => "employment_specialist",
        v1::Role::PrivacyOfficer => "privacy_officer",
        v1::Role::Jobseeker => "jobseeker",
        v1::Role::Admin => "admin",
    })
}

/// One printed line of entries.
struct Row([String; 11]);

const HEADER: [&str; 11] = [
    "index",
    "time",
    "kind",
    "actor",
    "sender",
    "recipient",
    "category",
    "purpose",
    "consent",
    "reason",
    "detail",
];

impl Row {
    fn of(e: &AuditEntry, names: Option<[&str; 3]>) -> Self {
        let [actor_name, sender_name, recipient_name] = names.unwrap_or_default();
        let named = |org: &str, name: &str| match (org.is_empty(), name.is_empty()) {
            (true, _) => String::new(),
            (false, true) => org.to_owned(),
            (false, false) => format!("{org} ({name})"),
        };
        let actor = e.actor.as_ref().map_or_else(String::new, |a| {
            format!("{} {}", named(&a.orgnr, actor_name), role_name(a.role))
        });
        Row([
            e.index.to_string(),
            e.time.as_ref().map_or_else(String::new, wire_time),
            kind_name(e.kind),
            actor.trim().to_owned(),
            named(&e.sender_orgnr, sender_name),
            named(&e.recipient_orgnr, recipient_name),
            e.category.clone(),
            e.purpose.clone(),
            if e.consent_id.is_empty() {
                String::new()
            } else {
                format!("{} v{}", e.consent_id, e.consent_version)
            },
            e.reason.clone(),
            e.detail.clone(),
        ])
    }
}

fn report_rows(report: &SubjectAccessReportResponse) -> Vec<Row> {
    report
        .events
        .iter()
        .filter_map(|ev| {
            ev.entry.as_ref().map(|e| {
                Row::of(
                    e,
                    Some([&ev.actor_name, &ev.sender_name, &ev.recipient_name]),
                )
            })
        })
        .collect()
}

fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.0.to_vec()).collect();
    aligned(&HEADER, &cells)
}

fn consent_table(consents: &[v1::ConsentRecord]) -> String {
    let rows: Vec<Vec<String>> = consents
        .iter()
        .map(|c| {
            let status = v1::ConsentStatus::try_from(c.status)
                .map_or("unknown", |s| s.as_str_name())
                .trim_start_matches("CONSENT_STATUS_")
                .to_lowercase();
            let provisions: Vec<String> = c
                .provisions
                .iter()
                .map(|p| {
                    let orgs = |parties: &[v1::Party]| {
                        parties
                            .iter()
                            .map(|p| p.orgnr.clone())
                            .collect::<Vec<_>>()
                            .join("+")
                    };
                    format!(
                        "{} -> {}: {} for {}",
                        orgs(&p.senders),
                        orgs(&p.recipients),
                        p.categories.join("+"),
                        p.purposes.join("+")
                    )
                })
                .collect();
            let period = c.period.as_ref().map_or_else(String::new, |p| {
                format!(
                    "{} .. {}",
                    p.start.as_ref().map_or_else(String::new, wire_time),
                    p.end.as_ref().map_or_else(String::new, wire_time)
                )
            });
            vec![
                format!("{} v{}", c.consent_id, c.version),
                status,
                c.recorded_by.as_ref().map_or_else(String::new, |a| {
                    format!("{} {}", a.orgnr, role_name(a.role))
                }),
                period,
                c.withdrawal
                    .as_ref()
                    .and_then(|w| w.at.as_ref())
                    .map_or_else(String::new, wire_time),
                provisions.join("; "),
            ]
        })
        .collect();
    aligned(
        &[
            "consent",
            "status",
            "recorded by",
            "period",
            "withdrawn",
            "provisions",
        ],
        &rows,
    )
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

fn csv(rows: &[Row]) -> String {
    let mut out = format!("{}\r\n", HEADER.join(","));
    for row in rows {
        let cells: Vec<String> = row.0.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "index": e.index,
        "kind": kind_name(e.kind),
        "time": e.time.as_ref().map(wire_time),
        "actor": e.actor.as_ref().map(|a| json!({
            "orgnr": a.orgnr,
            "user_id": a.user_id,
            "role": role_name(a.role),
            "certificate_sha256": hex(&a.certificate_sha256),
        })),
        "subject_pseudonym": hex(&e.subject_pseudonym),
        "consent_id": e.consent_id,
        "consent_version": e.consent_version,
        "consent_record_hash": hex(&e.consent_record_hash),
        "category": e.category,
        "purpose": e.purpose,
        "sender_orgnr": e.sender_orgnr,
        "recipient_orgnr": e.recipient_orgnr,
        "content_sha256": hex(&e.content_sha256),
        "reason": e.reason,
        "request_id": e.request_id,
        "policy_version": e.policy_version,
        "disclosure_id": e.disclosure_id,
        "detail": e.detail,
        "leaf_hash": hex(&e.leaf_hash),
    })
}

fn report_json(report: &SubjectAccessReportResponse) -> Value {
    json!({
        "subject_id": report.subject_id,
        "issued_at": report.issued_at.as_ref().map(wire_time),
        "verifier_key": report.verifier_key,
        "checkpoint": report.checkpoint.as_ref().map(|c| json!({
            "signed_note": c.signed_note,
            "origin": c.origin,
            "tree_size": c.tree_size,
            "root_hash": hex(&c.root_hash),
        })),
        "consent_versions": report
            .consent_versions
            .iter()
            .map(|bytes| serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null))
            .collect::<Vec<_>>(),
        "consent_status": report.consents.iter().map(|c| json!({
            "consent_id": c.consent_id,
            "version": c.version,
            "status": v1::ConsentStatus::try_from(c.status).map_or("unknown", |s| s.as_str_name()),
            "withdrawn_at": c.withdrawal.as_ref().and_then(|w| w.at.as_ref()).map(wire_time),
            "record_hash": hex(&c.record_hash),
        })).collect::<Vec<_>>(),
        "events": report.events.iter().map(|ev| json!({
            "entry": ev.entry.as_ref().map(entry_json),
            "actor_name": ev.actor_name,
            "sender_name": ev.sender_name,
            "recipient_name": ev.recipient_name,
            "entry_bytes": STANDARD.encode(&ev.entry_bytes),
            "inclusion_proof": ev.inclusion_proof.as_ref().map(|p| json!({
                "leaf_index": p.leaf_index,
                "tree_size": p.tree_size,
                "hashes": p.hashes.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            })),
        })).collect::<Vec<_>>(),
    })
}
