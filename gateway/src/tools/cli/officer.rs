//! `casegate audit query` and `casegate audit report`: a privacy officer's (or a jobseeker
//! portal's) client for a running gateway, with the caller's certificate and token. Output as
//! a readable table, JSON or CSV, each made safe for where it goes (`render`).
//!
//! A report is verified ([`crate::client::report::verify`]) before anything is printed, and what is
//! printed is taken from the verified report alone: entries decoded from their proven bytes,
//! consent versions from their pinned content. Query results carry no proofs; they are printed
//! as the gateway answered.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use casegate_consent::SubjectId;
use casegate_proto::v1::{
    QueryAuditRequest, SubjectAccessReportRequest, audit_service_client::AuditServiceClient,
};
use serde_json::Value;
use tonic::{
    Status,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use super::{EXIT_USAGE, read_vkey};
use crate::client::{
    bearer::Bearer,
    output::{HEADER, Row, csv, entry_json, report_json, report_rows},
    render,
};
use crate::{
    client::report::{self, VerifiedConsent},
    edge::convert::audit::rfc3339,
};

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
    /// Only entries with this reason code (repeatable), e.g. consent_withdrawn.
    #[arg(long = "reason", value_name = "CODE")]
    pub reasons: Vec<String>,
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
        // Messages may quote the gateway's answer: printed as terminal-safe text.
        Err(Failure::Usage(m)) => {
            eprintln!("casegate audit {command}: {}", render::terminal(&m));
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("casegate audit {command}: {}", render::terminal(&m));
            ExitCode::FAILURE
        }
    }
}

fn read(path: &PathBuf, what: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("{what} {}: {e}", path.display())))
}

async fn connect(c: &Connection) -> Result<Client, Failure> {
    crate::edge::tls::install_provider();
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
pub(crate) fn query(connection: &Connection, args: QueryArgs, format: OutputFormat) -> ExitCode {
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
            reasons: args.reasons.clone(),
            include_entry_bytes: false,
        };
        let page_size =
            args.limit
                .unwrap_or(crate::edge::convert::audit::DEFAULT_QUERY_LIMIT) as usize;
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
        let rows: Vec<Row> = entries.iter().map(Row::of).collect();
        match format {
            OutputFormat::Table => print!("{}", table(&rows)),
            OutputFormat::Csv => print!("{}", csv(&rows)),
            OutputFormat::Json => println!(
                "{}",
                render::json(&Value::Array(entries.iter().map(entry_json).collect()))
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
pub(crate) fn report(
    connection: &Connection,
    subject: &str,
    vkey: &str,
    format: OutputFormat,
) -> ExitCode {
    let result = (|| {
        let asked: SubjectId = subject
            .parse()
            .map_err(|e| Failure::Usage(format!("--subject: {e}")))?;
        let key = read_vkey(vkey).map_err(Failure::Usage)?;
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
        let verified = report::verify(&report, &asked, std::slice::from_ref(&key))
            .map_err(|e| Failure::Failed(format!("the report does not verify: {e}")))?;
        match format {
            OutputFormat::Json => println!("{}", render::json(&report_json(&verified, &asked))),
            OutputFormat::Csv => print!("{}", csv(&report_rows(&verified))),
            OutputFormat::Table => {
                println!(
                    "Subject access report issued {} (entry {}): {} consent version(s), {} \
                     event(s).",
                    rfc3339(verified.issued.entry.time_micros),
                    verified.issued.index,
                    verified.consents.len(),
                    verified.events.len()
                );
                println!(
                    "OK: the checkpoint of {} entries is signed by {}, and all {} events' \
                     inclusion proofs verify against it; every consent version shown is pinned \
                     by one of them.",
                    verified.checkpoint.size,
                    render::terminal(&key.label()),
                    verified.events.len()
                );
                println!("\nConsents");
                print!("{}", consent_table(&verified.consents));
                println!("\nEvents");
                print!("{}", table(&report_rows(&verified)));
            }
        }
        Ok(())
    })();
    finish("report", result)
}

fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| render::terminal(c).into_owned())
                .collect()
        })
        .collect();
    let rows = &rows;
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
        // Widths are counted after the same replacement: one unsafe character, one U+FFFD.
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

fn consent_table(consents: &[VerifiedConsent]) -> String {
    let time = |t: casegate_consent::record::Timestamp| rfc3339(t.0);
    let rows: Vec<Vec<String>> = consents
        .iter()
        .map(|c| {
            let r = &c.record;
            let provisions: Vec<String> = r
                .provisions
                .iter()
                .map(|p| {
                    let orgs = |parties: &[casegate_consent::record::Party]| {
                        parties
                            .iter()
                            .map(|p| p.orgnr.to_string())
                            .collect::<Vec<_>>()
                            .join("+")
                    };
                    let terms = |terms: Vec<String>| terms.join("+");
                    format!(
                        "{} -> {}: {} for {}",
                        orgs(&p.senders),
                        orgs(&p.recipients),
                        terms(p.categories.iter().map(ToString::to_string).collect()),
                        terms(p.purposes.iter().map(ToString::to_string).collect())
                    )
                })
                .collect();
            vec![
                format!("{} v{}", r.id, r.version),
                report::status_name(c.status).to_owned(),
                format!("{} {}", r.recorded_by.orgnr, r.recorded_by.role.as_str()),
                format!("{} .. {}", time(r.period.start), time(r.period.end)),
                c.withdrawn_at.map_or_else(String::new, time),
                provisions.join("; "),
                c.pinned_by.to_string(),
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
            "pinned by entry",
        ],
        &rows,
    )
}
