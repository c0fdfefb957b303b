//! The privacy officer's console: search over every `QueryAudit` filter and reason codes (a
//! paged table sortable by column, exports as CSV and JSON), an entry with its verified
//! inclusion proof, anomaly views from `SummarizeAudit`, a jobseeker's verified subject access
//! report, and integrity (the newest checkpoint, a consistency check from a pasted one).
//! Every search, summary and report is itself an audited gateway call.

use std::sync::Arc;

use askama::Template;
use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use casegate_audit::entry::EntryKind;
use casegate_consent::{OrgNumber, SubjectId, record::Timestamp};
use casegate_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::app::notes::Expiry;

use super::{
    Person, Web,
    chrome::{Chrome, render},
    sentence, session,
    session::Officer,
    time,
};
mod anomalies;
mod entry;
mod integrity;
mod report;
mod results;

pub(super) use anomalies::anomalies;
pub(super) use entry::{entry, replay};
pub(super) use integrity::{checkpoint_file, consistency, export_file, integrity};
pub(super) use report::{report, report_form, report_result};
pub(super) use results::{results, results_csv, results_json};

/// Every reason code an entry can carry: the refusal reasons of a decision, then the reasons a
/// note's body expires.
fn reason_codes() -> impl Iterator<Item = &'static str> {
    casegate_consent::decision::Reason::ALL
        .into_iter()
        .map(|r| r.code())
        .chain([Expiry::TtlElapsed, Expiry::RetentionElapsed].map(Expiry::code))
}

/// Entries one results page shows.
const PAGE: usize = 50;
/// Entries one search fetches at most (the gateway's own maximum per call).
const FETCH: u32 = crate::edge::convert::audit::MAX_QUERY_LIMIT;

/// A search as the form sent it (kept in the session: it may name a jobseeker, and identity
/// numbers never go into URLs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Search {
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
        // `until` is a whole day (inclusive): the same day as `from` is a one-day search.
        if let (Some(Some(f)), Some(Some(u))) = (from, until)
            && u < f
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
        if self.reasons.iter().any(|r| !reason_codes().any(|c| c == r)) {
            out.push(("reason-0", "search.error.reason"));
        }
        out
    }

    /// The query for this search: from the log's start, as many entries as one call may ask.
    fn request(&self) -> v1::QueryAuditRequest {
        let wire = |micros: i64| crate::edge::convert::timestamp_to_wire(Timestamp(micros));
        v1::QueryAuditRequest {
            subject_id: self.subject.clone(),
            orgnr: self.orgnr.clone(),
            from: time::parse_date(&self.from).map(wire),
            // The form's "until" day is included: the filter ends at the next midnight.
            until: time::end_of(&self.until).map(wire),
            kinds: self
                .kinds
                .iter()
                .filter_map(|k| EntryKind::ALL.into_iter().find(|e| e.as_str() == k))
                .map(crate::edge::convert::audit::kind_to_wire)
                .collect(),
            start_index: 0,
            limit: FETCH,
            reasons: self.reasons.clone(),
            include_entry_bytes: false,
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
    let reasons = reason_codes()
        .map(|r| Check {
            value: r.to_owned(),
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
pub(super) async fn search_form(State(web): State<Arc<Web>>, Officer(_, s): Officer) -> Response {
    let c = Chrome::new(&web, &s, "search.title", "/officer").await;
    let search = session::peek::<Search>(&s, "search")
        .await
        .unwrap_or_default();
    render(&search_page(c, search, &[]))
}

/// `POST /officer`: keeps the search and shows its results (or the form with its errors).
pub(super) async fn search(
    State(web): State<Arc<Web>>,
    Officer(_, s): Officer,
    body: Bytes,
) -> Response {
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
        .query_audit(search.request())
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
