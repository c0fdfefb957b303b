//! The officer's search results: the kept search run as one audited `QueryAudit`, sorted
//! and paged here, and its CSV and JSON exports.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Query, State},
    response::{IntoResponse, Redirect, Response},
};
use casegate_audit::entry::EntryKind;
use casegate_proto::v1;
use serde::Deserialize;

use super::{FETCH, PAGE, Search, run};
use crate::{
    client::output::{Row, csv, entry_json},
    web::{
        Person, Web,
        chrome::{Chrome, download, failure, render},
        sentence, session,
        session::Officer,
        text::Tr,
        time,
    },
};

#[derive(Debug, Deserialize)]
pub(crate) struct ResultsQuery {
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
pub(super) struct ResultRow {
    pub(super) index: u64,
    pub(super) time: String,
    pub(super) kind: String,
    pub(super) actor: String,
    pub(super) sender: String,
    pub(super) recipient: String,
    pub(super) reason: String,
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

pub(super) fn row(web: &Web, tr: &Tr, e: &v1::AuditEntry) -> ResultRow {
    let micros = crate::edge::convert::timestamp("time", e.time.as_ref()).map_or(0, |t| t.0);
    let kind = u8::try_from(e.kind)
        .ok()
        .and_then(EntryKind::from_code)
        .map_or_else(String::new, |k| sentence::term(tr, "kind", k.as_str()));
    let actor = e.actor.as_ref().map_or_else(String::new, |a| {
        let role = crate::edge::convert::role(" ", a.role)
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
pub(crate) async fn results(
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
pub(crate) async fn results_csv(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
) -> Response {
    export(&web, &person, &s, |entries| {
        let rows: Vec<Row> = entries.iter().map(Row::of).collect();
        ("text/csv; charset=utf-8", "casegate-audit.csv", csv(&rows))
    })
    .await
}

/// `GET /officer/results.json`: the kept search as JSON.
pub(crate) async fn results_json(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
) -> Response {
    export(&web, &person, &s, |entries| {
        let value = serde_json::Value::Array(entries.iter().map(entry_json).collect());
        (
            "application/json",
            "casegate-audit.json",
            crate::client::render::json(&value),
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
            download(content_type, name, body)
        }
        Err(status) => failure(
            Chrome::new(web, s, "results.title", "/officer/results").await,
            &status,
        ),
    }
}
