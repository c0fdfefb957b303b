//! The privacy officer's console: search over every `QueryAudit` filter and reason codes (a
//! paged table sortable by column, exports as CSV and JSON), an entry with its verified
//! inclusion proof, anomaly views from `SummarizeAudit`, a jobseeker's verified subject access
//! report, and integrity (the newest checkpoint, a consistency check from a pasted one).
//! Every search, summary and report is itself an audited gateway call.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    body::Bytes,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use casegate_audit::{checkpoint, entry::EntryKind, merkle};
use casegate_consent::{OrgNumber, SubjectId};
use casegate_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::{
    Person, Web,
    chrome::{Chrome, failure, render},
    jobseeker::{verified_line, verified_report},
    masked, sentence, session,
    session::Officer,
    text::Tr,
    time,
};
use crate::cli::officer::{Row, csv, entry_json};

/// Every reason code an entry can carry: the refusal reasons of a decision, then the purge
/// reasons of a note.
pub const REASONS: [&str; 14] = [
    "no_consent",
    "consent_withdrawn",
    "consent_expired",
    "consent_not_yet_valid",
    "sender_not_covered",
    "recipient_not_covered",
    "category_not_covered",
    "purpose_not_covered",
    "approval_missing",
    "sender_role_not_allowed",
    "unknown_category",
    "unknown_purpose",
    "ttl_elapsed",
    "retention_elapsed",
];

/// Entries one results page shows.
const PAGE: usize = 50;
/// Entries one search fetches at most (the gateway's own maximum per call).
const FETCH: u32 = crate::convert::audit::MAX_QUERY_LIMIT;

/// A search as the form sent it (kept in the session: it may name a jobseeker, and identity
/// numbers never go into URLs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Search {
    pub subject: String,
    pub orgnr: String,
    pub from: String,
    pub until: String,
    pub kinds: Vec<String>,
    pub reasons: Vec<String>,
}

impl Search {
    fn parse(body: &[u8]) -> Self {
        let mut s = Search::default();
        for (name, value) in
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
        {
            let value = value.trim().to_owned();
            match name.as_str() {
                "subject" => s.subject = value,
                "orgnr" => s.orgnr = value,
                "from" => s.from = value,
                "until" => s.until = value,
                "kind" => s.kinds.push(value),
                "reason" => s.reasons.push(value),
                _ => {}
            }
        }
        s
    }

    /// The problems, each as (field id, text key); empty when the search can run.
    fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if !self.subject.is_empty() && self.subject.parse::<SubjectId>().is_err() {
            out.push(("subject", "search.error.subject"));
        }
        if !self.orgnr.is_empty() && self.orgnr.parse::<OrgNumber>().is_err() {
            out.push(("orgnr", "search.error.orgnr"));
        }
        let from = (!self.from.is_empty()).then(|| time::parse_date(&self.from));
        let until = (!self.until.is_empty()).then(|| time::parse_date(&self.until));
        if from == Some(None) {
            out.push(("from", "search.error.date"));
        }
        if until == Some(None) {
            out.push(("until", "search.error.date"));
        }
        if let (Some(Some(f)), Some(Some(u))) = (from, until)
            && u <= f
        {
            out.push(("until", "search.error.order"));
        }
        if self
            .kinds
            .iter()
            .any(|k| !EntryKind::ALL.iter().any(|e| e.as_str() == k))
        {
            out.push(("kind-0", "search.error.kind"));
        }
        if self.reasons.iter().any(|r| !REASONS.contains(&r.as_str())) {
            out.push(("reason-0", "search.error.reason"));
        }
        out
    }

    fn request(&self, start_index: u64, limit: u32) -> v1::QueryAuditRequest {
        let stamp = |date: &str| {
            time::parse_date(date).map(|micros| prost_types::Timestamp {
                seconds: micros.div_euclid(1_000_000),
                nanos: 0,
            })
        };
        v1::QueryAuditRequest {
            subject_id: self.subject.clone(),
            orgnr: self.orgnr.clone(),
            from: stamp(&self.from),
            // The form's "until" day is included: the filter ends at the next midnight.
            until: time::parse_date(&self.until)
                .and_then(|m| crate::oslo::zoned(m + 36 * 3_600_000_000))
                .and_then(|z| time::parse_date(&z.strftime("%Y-%m-%d").to_string()))
                .map(|micros| prost_types::Timestamp {
                    seconds: micros.div_euclid(1_000_000),
                    nanos: 0,
                }),
            kinds: self
                .kinds
                .iter()
                .filter_map(|k| EntryKind::ALL.into_iter().find(|e| e.as_str() == k))
                .map(crate::convert::audit::kind_to_wire)
                .collect(),
            start_index,
            limit,
            reasons: self.reasons.clone(),
        }
    }
}

/// A checkbox.
#[derive(Debug, Clone)]
struct Check {
    value: String,
    label: String,
    checked: bool,
}

#[derive(Debug, Template)]
#[template(path = "search.html")]
struct SearchPage {
    c: Chrome,
    search: Search,
    kinds: Vec<Check>,
    reasons: Vec<Check>,
    errors: Vec<(String, String)>,
}

fn search_page(c: Chrome, search: Search, errors: &[(&str, &str)]) -> SearchPage {
    let kinds = EntryKind::ALL
        .iter()
        .map(|k| Check {
            value: k.as_str().to_owned(),
            label: sentence::term(&c.t, "kind", k.as_str()),
            checked: search.kinds.iter().any(|x| x == k.as_str()),
        })
        .collect();
    let reasons = REASONS
        .iter()
        .map(|r| Check {
            value: (*r).to_owned(),
            label: sentence::reason(&c.t, r),
            checked: search.reasons.iter().any(|x| x == r),
        })
        .collect();
    let errors = errors
        .iter()
        .map(|(field, key)| ((*field).to_owned(), c.t.get(key)))
        .collect();
    SearchPage {
        c,
        search,
        kinds,
        reasons,
        errors,
    }
}

/// `GET /officer`: the search form, filled in with the last search.
pub async fn search_form(State(web): State<Arc<Web>>, Officer(_, s): Officer) -> Response {
    let c = Chrome::new(&web, &s, "search.title", "/officer").await;
    let search = session::peek::<Search>(&s, "search")
        .await
        .unwrap_or_default();
    render(&search_page(c, search, &[]))
}

/// `POST /officer`: keeps the search and shows its results (or the form with its errors).
pub async fn search(State(web): State<Arc<Web>>, Officer(_, s): Officer, body: Bytes) -> Response {
    let search = Search::parse(&body);
    let problems = search.problems();
    if !problems.is_empty() {
        let mut c = Chrome::new(&web, &s, "search.title", "/officer").await;
        c.title = c.t.fill("form.title_with_errors", &[("title", &c.title)]);
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&search_page(c, search, &problems)),
        )
            .into_response();
    }
    session::put(&s, "search", &search).await;
    Redirect::to("/officer/results").into_response()
}

/// Runs the kept search (one audited `QueryAudit`).
async fn run(web: &Web, person: &Person, search: &Search) -> Result<Vec<v1::AuditEntry>, Status> {
    let mut stream = web
        .upstream
        .audit(person)?
        .query_audit(search.request(0, FETCH))
        .await?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(answer) = stream.message().await? {
        if let Some(entry) = answer.entry {
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[derive(Debug, Deserialize)]
pub struct ResultsQuery {
    page: Option<usize>,
    sort: Option<String>,
    dir: Option<String>,
}

/// A column of the results table.
#[derive(Debug, Clone)]
struct Column {
    label: String,
    href: String,
    /// `ascending`, `descending` or empty (`aria-sort`).
    sorted: &'static str,
}

/// One row of the results table, in words.
#[derive(Debug, Clone)]
struct ResultRow {
    index: u64,
    time: String,
    kind: String,
    actor: String,
    sender: String,
    recipient: String,
    reason: String,
}

#[derive(Debug, Template)]
#[template(path = "results.html")]
struct ResultsPage {
    c: Chrome,
    columns: Vec<Column>,
    rows: Vec<ResultRow>,
    total: usize,
    truncated: bool,
    summary: String,
    previous: Option<String>,
    next: Option<String>,
}

const COLUMNS: [(&str, &str); 7] = [
    ("index", "results.index"),
    ("time", "results.time"),
    ("kind", "results.kind"),
    ("actor", "results.actor"),
    ("sender", "results.sender"),
    ("recipient", "results.recipient"),
    ("reason", "results.reason"),
];

fn row(web: &Web, tr: &Tr, e: &v1::AuditEntry) -> ResultRow {
    let micros = e
        .time
        .as_ref()
        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000));
    let kind = u8::try_from(e.kind)
        .ok()
        .and_then(EntryKind::from_code)
        .map_or_else(String::new, |k| sentence::term(tr, "kind", k.as_str()));
    let actor = e.actor.as_ref().map_or_else(String::new, |a| {
        let role = crate::convert::role(" ", a.role)
            .map(|r| sentence::role(tr, r))
            .unwrap_or_default();
        format!("{} ({role})", web.org_name(&a.orgnr))
    });
    let org = |o: &str| {
        if o.is_empty() {
            String::new()
        } else {
            web.org_name(o)
        }
    };
    ResultRow {
        index: e.index,
        time: time::date_time(micros, tr.lang),
        kind,
        actor,
        sender: org(&e.sender_orgnr),
        recipient: org(&e.recipient_orgnr),
        reason: if e.reason.is_empty() {
            String::new()
        } else {
            sentence::reason(tr, &e.reason)
        },
    }
}

/// `GET /officer/results`: the kept search's results, sorted and paged.
pub async fn results(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Query(q): Query<ResultsQuery>,
) -> Response {
    let c = Chrome::new(&web, &s, "results.title", "/officer/results").await;
    let Some(search) = session::peek::<Search>(&s, "search").await else {
        return Redirect::to("/officer").into_response();
    };
    let entries = match run(&web, &person, &search).await {
        Ok(e) => e,
        Err(status) => return failure(c, &status),
    };
    let sort = COLUMNS
        .iter()
        .find(|(k, _)| q.sort.as_deref() == Some(*k))
        .map_or("index", |(k, _)| *k);
    let descending = q.dir.as_deref() != Some("asc");
    let mut rows: Vec<ResultRow> = entries.iter().map(|e| row(&web, &c.t, e)).collect();
    rows.sort_by(|a, b| {
        let order = match sort {
            "kind" => a.kind.cmp(&b.kind),
            "actor" => a.actor.cmp(&b.actor),
            "sender" => a.sender.cmp(&b.sender),
            "recipient" => a.recipient.cmp(&b.recipient),
            "reason" => a.reason.cmp(&b.reason),
            // Index order is time order: the log is append-only.
            _ => a.index.cmp(&b.index),
        }
        .then(a.index.cmp(&b.index));
        if descending { order.reverse() } else { order }
    });
    let total = rows.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let dir = if descending { "desc" } else { "asc" };
    let href = |p: usize| format!("/officer/results?page={p}&sort={sort}&dir={dir}");
    let columns = COLUMNS
        .iter()
        .map(|(key, label)| {
            let this = *key == sort;
            let next_dir = if this && descending { "asc" } else { "desc" };
            Column {
                label: c.t.get(label),
                href: format!("/officer/results?page=1&sort={key}&dir={next_dir}"),
                sorted: match (this, descending) {
                    (false, _) => "",
                    (true, true) => "descending",
                    (true, false) => "ascending",
                },
            }
        })
        .collect();
    let rows: Vec<ResultRow> = rows
        .into_iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .collect();
    let summary = c.t.fill(
        "results.summary",
        &[
            ("total", &total.to_string()),
            ("page", &page.to_string()),
            ("pages", &pages.to_string()),
        ],
    );
    render(&ResultsPage {
        columns,
        rows,
        total,
        truncated: total == FETCH as usize,
        summary,
        previous: (page > 1).then(|| href(page - 1)),
        next: (page < pages).then(|| href(page + 1)),
        c,
    })
}

/// `GET /officer/results.csv`: the kept search as RFC 4180 CSV, every cell made safe for
/// spreadsheets (a cell starting with `=`, `+`, `-`, `@`, tab or CR is neutralised).
pub async fn results_csv(State(web): State<Arc<Web>>, Officer(person, s): Officer) -> Response {
    export(&web, &person, &s, |entries| {
        let rows: Vec<Row> = entries.iter().map(Row::of).collect();
        ("text/csv; charset=utf-8", "casegate-audit.csv", csv(&rows))
    })
    .await
}

/// `GET /officer/results.json`: the kept search as JSON.
pub async fn results_json(State(web): State<Arc<Web>>, Officer(person, s): Officer) -> Response {
    export(&web, &person, &s, |entries| {
        let value = serde_json::Value::Array(entries.iter().map(entry_json).collect());
        (
            "application/json",
            "casegate-audit.json",
            crate::cli::render::json(&value),
        )
    })
    .await
}

async fn export(
    web: &Web,
    person: &Person,
    s: &tower_sessions::Session,
    format: impl FnOnce(&[v1::AuditEntry]) -> (&'static str, &'static str, String),
) -> Response {
    let Some(search) = session::peek::<Search>(s, "search").await else {
        return Redirect::to("/officer").into_response();
    };
    match run(web, person, &search).await {
        Ok(entries) => {
            let (content_type, name, body) = format(&entries);
            (
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}\""),
                    ),
                ],
                body,
            )
                .into_response()
        }
        Err(status) => failure(
            Chrome::new(web, s, "results.title", "/officer/results").await,
            &status,
        ),
    }
}

#[derive(Debug, Template)]
#[template(path = "entry.html")]
struct EntryPage {
    c: Chrome,
    index: u64,
    fields: Vec<(String, String)>,
    proof: Vec<String>,
    proof_line: String,
    proof_ok: bool,
    replay: Option<String>,
}

/// `GET /officer/entries/{index}`: every field of one entry, its inclusion proof verified
/// against the newest signed checkpoint, and how to replay its decision offline.
pub async fn entry(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Path(index): Path<u64>,
) -> Response {
    let here = format!("/officer/entries/{index}");
    let c = Chrome::new(&web, &s, "entry.title", &here).await;
    let found = async {
        let mut client = web.upstream.audit(&person)?;
        let mut stream = client
            .query_audit(v1::QueryAuditRequest {
                start_index: index,
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        let entry = stream
            .message()
            .await?
            .and_then(|a| a.entry)
            .filter(|e| e.index == index)
            .ok_or_else(|| Status::not_found("no entry with this index is visible to you"))?;
        let proof = client
            .get_inclusion_proof(v1::GetInclusionProofRequest {
                leaf_index: index,
                tree_size: 0,
            })
            .await?
            .into_inner();
        Ok::<_, Status>((entry, proof))
    }
    .await;
    let (entry, proof) = match found {
        Ok(f) => f,
        Err(status) => return failure(c, &status),
    };
    let (proof_ok, proof_line) = check_inclusion(&web, &c.t, &entry, &proof);
    let kind = u8::try_from(entry.kind).ok().and_then(EntryKind::from_code);
    let replay = matches!(
        kind,
        Some(EntryKind::DisclosurePermitted | EntryKind::DisclosureRefused)
    )
    .then(|| {
        format!(
            "casegate audit report … --subject <NNIN> --format json > report.json\n\
             casegate audit replay --log <data_dir>/audit --consents report.json --index {index} \
             --config {}",
            web.config_path.display()
        )
    });
    let fields = fields_of(&entry_json(&entry));
    let hashes = proof
        .proof
        .as_ref()
        .map(|p| p.hashes.iter().map(|h| hex(h)).collect())
        .unwrap_or_default();
    render(&EntryPage {
        c,
        index,
        fields,
        proof: hashes,
        proof_line,
        proof_ok,
        replay,
    })
}

/// Every field of an entry's JSON form as (name, text), nested objects flattened
/// (`actor.orgnr`).
fn fields_of(json: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(object) = json.as_object() else {
        return out;
    };
    for (key, value) in object {
        match value {
            serde_json::Value::Object(_) => {
                out.extend(
                    fields_of(value)
                        .into_iter()
                        .map(|(k, v)| (format!("{key}.{k}"), v)),
                );
            }
            serde_json::Value::String(s) => out.push((key.clone(), s.clone())),
            serde_json::Value::Null => out.push((key.clone(), String::new())),
            other => out.push((key.clone(), other.to_string())),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies the entry's inclusion proof against the checkpoint that came with it, whose
/// signature must verify with the log's own key.
fn check_inclusion(
    web: &Web,
    tr: &Tr,
    entry: &v1::AuditEntry,
    answer: &v1::GetInclusionProofResponse,
) -> (bool, String) {
    let result = (|| {
        let note = answer
            .checkpoint
            .as_ref()
            .ok_or("no checkpoint came with the proof")?;
        let signed = checkpoint::verify_log_checkpoint(&web.verifiers, &note.signed_note)
            .map_err(|e| e.to_string())?;
        let proof = answer.proof.as_ref().ok_or("no proof")?;
        let leaf: merkle::Hash = entry
            .leaf_hash
            .as_slice()
            .try_into()
            .map_err(|_| "the leaf hash is not 32 bytes")?;
        if answer.leaf_hash != entry.leaf_hash {
            return Err("the proof is for another leaf".to_owned());
        }
        let hashes: Vec<merkle::Hash> = proof
            .hashes
            .iter()
            .map(|h| {
                h.as_slice()
                    .try_into()
                    .map_err(|_| "a proof hash is not 32 bytes")
            })
            .collect::<Result<_, _>>()?;
        merkle::verify_inclusion(&leaf, entry.index, signed.size, &hashes, &signed.root)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(signed.size)
    })();
    match result {
        Ok(size) => (
            true,
            tr.fill("entry.proof_ok", &[("size", &size.to_string())]),
        ),
        Err(e) => (false, tr.fill("entry.proof_failed", &[("error", &e)])),
    }
}

// === subject access report ===

#[derive(Debug, Template)]
#[template(path = "officer_report.html")]
struct ReportFormPage {
    c: Chrome,
    subject: String,
    error: Option<String>,
}

/// `GET /officer/report`: ask for a jobseeker's report.
pub async fn report_form(State(web): State<Arc<Web>>, Officer(_, s): Officer) -> Response {
    let c = Chrome::new(&web, &s, "officer_report.title", "/officer/report").await;
    render(&ReportFormPage {
        c,
        subject: String::new(),
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct ReportForm {
    subject: String,
}

/// `POST /officer/report`: keeps the jobseeker (never in a URL) and shows the report.
pub async fn report(
    State(web): State<Arc<Web>>,
    Officer(_, s): Officer,
    Form(form): Form<ReportForm>,
) -> Response {
    let subject = form.subject.trim().to_owned();
    if subject.parse::<SubjectId>().is_err() {
        let mut c = Chrome::new(&web, &s, "officer_report.title", "/officer/report").await;
        c.title = c.t.fill("form.title_with_errors", &[("title", &c.title)]);
        let error = Some(c.t.get("search.error.subject"));
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&ReportFormPage { c, subject, error }),
        )
            .into_response();
    }
    session::put(&s, "report_subject", &subject).await;
    Redirect::to("/officer/report/result").into_response()
}

#[derive(Debug, Template)]
#[template(path = "officer_report_result.html")]
struct ReportPage {
    c: Chrome,
    subject: String,
    verified: String,
    rows: Vec<ResultRow>,
    consents: Vec<(String, String)>,
}

/// `GET /officer/report/result`: the report, verified with the same code as
/// `casegate audit report`.
pub async fn report_result(State(web): State<Arc<Web>>, Officer(person, s): Officer) -> Response {
    let c = Chrome::new(
        &web,
        &s,
        "officer_report.result_title",
        "/officer/report/result",
    )
    .await;
    let Some(subject) = session::peek::<String>(&s, "report_subject").await else {
        return Redirect::to("/officer/report").into_response();
    };
    let (report, parsed) = match verified_report(&web, &person, &subject).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let rows = report
        .events
        .iter()
        .rev()
        .map(|e| row(&web, &c.t, &e.view()))
        .collect();
    let consents = report
        .consents
        .iter()
        .map(|v| {
            (
                sentence::consent(&web, &c.t, &v.record).join(" "),
                format!(
                    "{} · {} {}",
                    sentence::status(&c.t, v.status),
                    c.t.get("consent.version"),
                    v.record.version
                ),
            )
        })
        .collect();
    render(&ReportPage {
        subject: masked(&parsed),
        verified: verified_line(&c.t, &report),
        rows,
        consents,
        c,
    })
}

// === anomalies ===

/// One anomaly view: a heading, an explanation, its rows and the search that shows the entries.
#[derive(Debug, Clone)]
struct View {
    id: &'static str,
    title: String,
    text: String,
    rows: Vec<(String, String, u64)>,
    kinds: Vec<&'static str>,
    reasons: Vec<&'static str>,
}

#[derive(Debug, Template)]
#[template(path = "anomalies.html")]
struct AnomaliesPage {
    c: Chrome,
    views: Vec<View>,
    period: String,
    from: String,
    counted: String,
}

#[derive(Debug, Deserialize)]
pub struct AnomaliesQuery {
    days: Option<u32>,
}

/// `GET /officer/anomalies?days=30`: patterns worth a look, from one audited summary.
pub async fn anomalies(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Query(q): Query<AnomaliesQuery>,
) -> Response {
    let c = Chrome::new(&web, &s, "anomalies.title", "/officer/anomalies").await;
    let days = q.days.unwrap_or(30).clamp(1, 366);
    let from = crate::clock::now_micros() - i64::from(days) * 86_400_000_000;
    let answer = async {
        Ok::<_, Status>(
            web.upstream
                .audit(&person)?
                .summarize_audit(v1::SummarizeAuditRequest {
                    from: Some(prost_types::Timestamp {
                        seconds: from.div_euclid(1_000_000),
                        nanos: 0,
                    }),
                    by_subject: true,
                    ..Default::default()
                })
                .await?
                .into_inner(),
        )
    }
    .await;
    let summary = match answer {
        Ok(a) => a,
        Err(status) => return failure(c, &status),
    };
    let kind_of = |n: &v1::AuditCount| u8::try_from(n.kind).ok().and_then(EntryKind::from_code);
    let t = c.t;
    let tally = |pick: &dyn Fn(&v1::AuditCount) -> bool,
                 label: &dyn Fn(&v1::AuditCount) -> (String, String)| {
        let mut out: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for n in summary.counts.iter().filter(|n| pick(n)) {
            *out.entry(label(n)).or_default() += n.count;
        }
        let mut rows: Vec<(String, String, u64)> =
            out.into_iter().map(|((a, b), n)| (a, b, n)).collect();
        rows.sort_by(|x, y| y.2.cmp(&x.2).then(x.cmp(y)));
        rows.truncate(20);
        rows
    };
    let org_day = |n: &v1::AuditCount| (web.org_name(&n.orgnr), n.day.clone());
    let refused = |reason: &'static str| {
        move |n: &v1::AuditCount| {
            kind_of(n) == Some(EntryKind::DisclosureRefused) && n.reason == reason
        }
    };
    let jobseeker = |n: &v1::AuditCount| {
        (
            t.fill(
                "anomalies.jobseeker",
                &[(
                    "pseudonym",
                    &hex(&n.subject_pseudonym[..n.subject_pseudonym.len().min(4)]),
                )],
            ),
            n.day.clone(),
        )
    };
    let views = vec![
        View {
            id: "after-withdrawal",
            title: t.get("anomalies.after_withdrawal"),
            text: t.get("anomalies.after_withdrawal_text"),
            rows: tally(&refused("consent_withdrawn"), &org_day),
            kinds: vec!["disclosure_refused"],
            reasons: vec!["consent_withdrawn"],
        },
        View {
            id: "no-consent-sender",
            title: t.get("anomalies.no_consent_sender"),
            text: t.get("anomalies.no_consent_sender_text"),
            rows: tally(&refused("no_consent"), &org_day),
            kinds: vec!["disclosure_refused"],
            reasons: vec!["no_consent"],
        },
        View {
            id: "no-consent-jobseeker",
            title: t.get("anomalies.no_consent_jobseeker"),
            text: t.get("anomalies.no_consent_jobseeker_text"),
            rows: tally(&refused("no_consent"), &jobseeker),
            kinds: vec!["disclosure_refused"],
            reasons: vec!["no_consent"],
        },
        View {
            id: "approval-missing",
            title: t.get("anomalies.approval_missing"),
            text: t.get("anomalies.approval_missing_text"),
            rows: tally(&refused("approval_missing"), &org_day),
            kinds: vec!["disclosure_refused"],
            reasons: vec!["approval_missing"],
        },
        View {
            id: "purged",
            title: t.get("anomalies.purged"),
            text: t.get("anomalies.purged_text"),
            rows: tally(
                &|n| kind_of(n) == Some(EntryKind::NotePurged) && n.reason != "retention_elapsed",
                &|n| (sentence::reason(&t, &n.reason), n.day.clone()),
            ),
            kinds: vec!["note_purged"],
            reasons: vec!["consent_withdrawn", "ttl_elapsed"],
        },
        View {
            id: "officer-lookups",
            title: t.get("anomalies.lookups"),
            text: t.get("anomalies.lookups_text"),
            rows: tally(
                &|n| {
                    kind_of(n) == Some(EntryKind::SubjectReportIssued)
                        && n.actor_role == v1::Role::PrivacyOfficer as i32
                },
                &org_day,
            ),
            kinds: vec!["subject_report_issued"],
            reasons: vec![],
        },
        View {
            id: "off-hours",
            title: t.get("anomalies.off_hours"),
            text: t.get("anomalies.off_hours_text"),
            rows: tally(
                &|n| {
                    n.outside_office_hours
                        && !matches!(
                            kind_of(n),
                            Some(EntryKind::GatewayStarted | EntryKind::KeyRotated)
                        )
                },
                &|n| {
                    (
                        format!(
                            "{} – {}",
                            web.org_name(&n.orgnr),
                            kind_of(n).map_or_else(String::new, |k| sentence::term(
                                &t,
                                "kind",
                                k.as_str()
                            ))
                        ),
                        n.day.clone(),
                    )
                },
            ),
            kinds: vec![],
            reasons: vec![],
        },
    ];
    render(&AnomaliesPage {
        period: t.fill("anomalies.period", &[("days", &days.to_string())]),
        from: time::input_date(from),
        counted: t.fill(
            "anomalies.counted",
            &[
                ("entries", &summary.entries.to_string()),
                ("size", &summary.tree_size.to_string()),
            ],
        ),
        views,
        c,
    })
}

// === integrity ===

/// The result of a consistency check, kept for the page after the redirect.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Consistency {
    ok: bool,
    message: String,
}

#[derive(Debug, Template)]
#[template(path = "integrity.html")]
struct IntegrityPage {
    c: Chrome,
    note: String,
    size: u64,
    root: String,
    vkey: String,
    key_label: String,
    verified: bool,
    signed_line: String,
    check: Option<Consistency>,
    verify_command: String,
    export_command: String,
}

/// `GET /officer/integrity`: the newest signed checkpoint, verified with the log's key.
pub async fn integrity(State(web): State<Arc<Web>>, Officer(person, s): Officer) -> Response {
    let c = Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await;
    let answer = async {
        Ok::<_, Status>(
            web.upstream
                .audit(&person)?
                .get_checkpoint(v1::GetCheckpointRequest {})
                .await?
                .into_inner(),
        )
    }
    .await;
    let answer = match answer {
        Ok(a) => a,
        Err(status) => return failure(c, &status),
    };
    let note = answer
        .checkpoint
        .as_ref()
        .map_or_else(String::new, |cp| cp.signed_note.clone());
    let signed = checkpoint::verify_log_checkpoint(&web.verifiers, &note);
    let key = web.verifiers.first();
    let vkey = key.map_or_else(String::new, checkpoint::Verifier::to_vkey);
    let check = session::peek::<Consistency>(&s, "consistency").await;
    render(&IntegrityPage {
        verified: signed.is_ok(),
        signed_line: c.t.fill(
            "integrity.signed",
            &[("size", &signed.as_ref().map_or(0, |c| c.size).to_string())],
        ),
        size: signed.as_ref().map_or(0, |c| c.size),
        root: signed
            .as_ref()
            .map_or_else(|_| String::new(), |c| hex(&c.root)),
        key_label: key.map_or_else(String::new, checkpoint::Verifier::label),
        verify_command: format!(
            "casegate audit verify --log <data_dir>/audit --vkey '{vkey}' --trusted checkpoint.txt"
        ),
        export_command: format!(
            "casegate audit verify --export casegate-audit-export.txt --vkey '{vkey}' --trusted checkpoint.txt"
        ),
        vkey,
        note,
        check,
        c,
    })
}

#[derive(Debug, Deserialize)]
pub struct PastedCheckpoint {
    checkpoint: String,
}

/// `POST /officer/integrity`: is the log now consistent with the pasted (older) checkpoint?
pub async fn consistency(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Form(form): Form<PastedCheckpoint>,
) -> Response {
    let c = Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await;
    // Browsers send textarea line breaks as CRLF; a signed note's are LF.
    let pasted = form.checkpoint.replace("\r\n", "\n");
    let pasted = if pasted.ends_with('\n') {
        pasted
    } else {
        format!("{pasted}\n")
    };
    let check = match checkpoint::verify_log_checkpoint(&web.verifiers, &pasted) {
        Err(e) => Consistency {
            ok: false,
            message: c
                .t
                .fill("integrity.pasted_bad", &[("error", &e.to_string())]),
        },
        Ok(old) => {
            let answer = async {
                Ok::<_, Status>(
                    web.upstream
                        .audit(&person)?
                        .get_consistency_proof(v1::GetConsistencyProofRequest {
                            first_size: old.size,
                            second_size: 0,
                        })
                        .await?
                        .into_inner(),
                )
            }
            .await;
            match answer {
                Err(status) => return failure(c, &status),
                Ok(answer) => consistent(&web, &c.t, &old, &answer),
            }
        }
    };
    session::put(&s, "consistency", &check).await;
    Redirect::to("/officer/integrity").into_response()
}

fn consistent(
    web: &Web,
    tr: &Tr,
    old: &checkpoint::Checkpoint,
    answer: &v1::GetConsistencyProofResponse,
) -> Consistency {
    let result = (|| {
        let note = answer.checkpoint.as_ref().ok_or("no checkpoint")?;
        let new = checkpoint::verify_log_checkpoint(&web.verifiers, &note.signed_note)
            .map_err(|e| e.to_string())?;
        let proof = answer.proof.as_ref().ok_or("no proof")?;
        let hashes: Vec<merkle::Hash> = proof
            .hashes
            .iter()
            .map(|h| {
                h.as_slice()
                    .try_into()
                    .map_err(|_| "a proof hash is not 32 bytes")
            })
            .collect::<Result<_, _>>()?;
        merkle::verify_consistency(old.size, new.size, &hashes, &old.root, &new.root)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(new.size)
    })();
    match result {
        Ok(size) => Consistency {
            ok: true,
            message: tr.fill(
                "integrity.consistent",
                &[("old", &old.size.to_string()), ("new", &size.to_string())],
            ),
        },
        Err(e) => Consistency {
            ok: false,
            message: tr.fill(
                "integrity.inconsistent",
                &[("old", &old.size.to_string()), ("error", &e)],
            ),
        },
    }
}

/// `GET /officer/integrity/checkpoint.txt`: the newest signed checkpoint as a file, to keep
/// and give to `casegate audit verify --trusted` later.
pub async fn checkpoint_file(State(web): State<Arc<Web>>, Officer(person, s): Officer) -> Response {
    let answer = async {
        Ok::<_, Status>(
            web.upstream
                .audit(&person)?
                .get_checkpoint(v1::GetCheckpointRequest {})
                .await?
                .into_inner(),
        )
    }
    .await;
    match answer {
        Ok(a) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"checkpoint.txt\"",
                ),
            ],
            a.checkpoint.map(|c| c.signed_note).unwrap_or_default(),
        )
            .into_response(),
        Err(status) => failure(
            Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await,
            &status,
        ),
    }
}

/// `GET /officer/integrity/export`: every entry up to the newest checkpoint and that checkpoint,
/// in the file `casegate audit verify --export` reads (`casegate_audit::verify::EXPORT_HEADER`),
/// streamed as the gateway exports it. `ExportEntries` is for officers of supervisory
/// organisations; others get the gateway's refusal.
pub async fn export_file(State(web): State<Arc<Web>>, Officer(person, s): Officer) -> Response {
    use futures_util::StreamExt;
    let opened = async {
        let mut client = web.upstream.audit(&person)?;
        let note = client
            .get_checkpoint(v1::GetCheckpointRequest {})
            .await?
            .into_inner()
            .checkpoint
            .map(|c| (c.tree_size, c.signed_note))
            .ok_or_else(|| Status::internal("the gateway sent no checkpoint"))?;
        let entries = client
            .export_entries(v1::ExportEntriesRequest {
                start_index: 0,
                end_index: note.0,
            })
            .await?
            .into_inner();
        Ok::<_, Status>((note.1, entries))
    }
    .await;
    let (note, entries) = match opened {
        Ok(o) => o,
        Err(status) => {
            return failure(
                Chrome::new(&web, &s, "integrity.title", "/officer/integrity").await,
                &status,
            );
        }
    };
    let header = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(format!("{}\n", casegate_audit::verify::EXPORT_HEADER))
    });
    let lines = entries.map(|answer| {
        answer
            .map(|e| {
                let mut line =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &e.entry);
                line.push('\n');
                line
            })
            .map_err(|status| std::io::Error::other(status.message().to_owned()))
    });
    let footer = futures_util::stream::once(async move { Ok(format!("\n{note}")) });
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"casegate-audit-export.txt\"",
            ),
        ],
        axum::body::Body::from_stream(header.chain(lines).chain(footer)),
    )
        .into_response()
}
