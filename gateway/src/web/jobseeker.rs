//! The jobseeker's pages: my consents, one consent's detail and history, granting (form →
//! plain-language preview → confirm) and changing (a new version), withdrawing (confirm →
//! result), and "who received what" (the verified subject access report) with its printable
//! and verifiable JSON downloads.

use std::{collections::BTreeMap, sync::Arc};

use askama::Template;
use axum::{
    extract::{Path, State},
    response::Response,
};
use casegate_audit::entry::EntryKind;
use casegate_consent::{SubjectId, record::ViewStatus};
use casegate_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::{
    Person, Web,
    chrome::{Chrome, failure, render},
    sentence, session,
    session::Jobseeker,
    text::Tr,
    time,
};
use crate::{
    client::output::hex,
    client::report::{self, VerifiedConsent, VerifiedReport},
};

mod grant;
mod received;
mod withdraw;

pub(super) use grant::{change_form, grant, new_form, preview};
pub(super) use received::{printable, received, report_json};
pub(super) use withdraw::{withdraw, withdraw_confirm, withdrawn};

/// Asks the gateway, as `person`, for everything recorded about `subject` (none: the person
/// has no identity number, which the gateway is not asked about) and verifies it against the
/// log's own keys, exactly as `casegate audit report` does.
pub(super) async fn verified_report(
    web: &Web,
    person: &Person,
    subject: Option<&SubjectId>,
) -> Result<(VerifiedReport, SubjectId), Status> {
    let subject = *subject.ok_or_else(|| Status::permission_denied("no jobseeker is named"))?;
    let answer = web
        .upstream
        .audit(person)?
        .subject_access_report(v1::SubjectAccessReportRequest {
            subject_id: subject.expose(),
        })
        .await?
        .into_inner();
    let verified = report::verify(&answer, &subject, &web.verifiers).map_err(|e| {
        tracing::error!(error = %e, "a subject access report did not verify");
        Status::data_loss(format!("the gateway's report did not verify: {e}"))
    })?;
    Ok((verified, subject))
}

/// One consent as the pages show it (its newest version).
#[derive(Debug, Clone)]
pub(super) struct ConsentView {
    pub id: String,
    pub version: u32,
    pub sentences: Vec<String>,
    pub status: String,
    pub active: bool,
    pub recorded: String,
    pub period: String,
    /// Notes shared under any version of it.
    pub shared: usize,
}

fn view(web: &Web, tr: &Tr, c: &VerifiedConsent, report: &VerifiedReport) -> ConsentView {
    let id = c.record.id.to_string();
    ConsentView {
        sentences: sentence::consent(web, tr, &c.record),
        status: sentence::status(tr, c.status),
        active: c.status == ViewStatus::Active,
        recorded: sentence::recorded(web, tr, &c.record),
        period: tr.fill(
            "consent.period",
            &[
                ("start", &time::date(c.record.period.start.0, tr.lang)),
                (
                    "end",
                    &time::date(time::last_instant(c.record.period.end.0), tr.lang),
                ),
            ],
        ),
        shared: report
            .events
            .iter()
            .filter(|e| {
                e.entry.kind() == EntryKind::DisclosurePermitted
                    && e.entry.consent().is_some_and(|r| r.id == id)
            })
            .count(),
        version: c.record.version,
        id,
    }
}

/// The newest version of each consent, newest consent first.
fn newest(report: &VerifiedReport) -> Vec<&VerifiedConsent> {
    let mut by_id: BTreeMap<String, &VerifiedConsent> = BTreeMap::new();
    for c in &report.consents {
        let slot = by_id.entry(c.record.id.to_string()).or_insert(c);
        if c.record.version > slot.record.version {
            *slot = c;
        }
    }
    let mut out: Vec<&VerifiedConsent> = by_id.into_values().collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.record.recorded_at.0));
    out
}

#[derive(Debug)]
struct Group {
    recipients: String,
    consents: Vec<ConsentView>,
}

#[derive(Debug, Template)]
#[template(path = "consents.html")]
struct ConsentsPage {
    c: Chrome,
    groups: Vec<Group>,
}

/// `GET /me`: my consents, grouped by who receives.
pub(super) async fn consents(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
) -> Response {
    let c = Chrome::new(&web, &s, "consents.title", "/me").await;
    let (report, _) = match verified_report(&web, &person, person.pid.as_ref()).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let mut groups: BTreeMap<String, Vec<ConsentView>> = BTreeMap::new();
    for consent in newest(&report) {
        let recipients: Vec<String> = consent
            .record
            .provisions
            .iter()
            .flat_map(|p| p.recipients.iter())
            .map(|p| web.org_name(&p.orgnr.to_string()))
            .collect();
        groups
            .entry(sentence::list(&c.t, &recipients))
            .or_default()
            .push(view(&web, &c.t, consent, &report));
    }
    let groups = groups
        .into_iter()
        .map(|(recipients, consents)| Group {
            recipients: c.t.fill("consents.to", &[("recipients", &recipients)]),
            consents,
        })
        .collect();
    render(&ConsentsPage { c, groups })
}

/// A dated line of a timeline.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub time: String,
    pub text: String,
}

/// A note with its delivery, acknowledgement and purge as steps, or a single event.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub time: String,
    pub text: String,
    pub steps: Vec<Step>,
    pub refused: bool,
    /// "Question about this?" links: (organisation name, contact URI).
    pub contacts: Vec<(String, String)>,
    micros: i64,
}

/// The report's events as a timeline, newest first; a note's later steps under it.
fn timeline(web: &Web, tr: &Tr, report: &VerifiedReport, consent: Option<&str>) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    let mut notes: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_scope: Vec<String> = Vec::new();
    // Every visit to these pages is itself recorded; the jobseeker's own looks are one line.
    let mut own_looks: Vec<i64> = Vec::new();
    for event in &report.events {
        let entry = &event.entry;
        let by_self = entry
            .actor()
            .is_some_and(|a| a.role == casegate_consent::Role::Jobseeker.as_str());
        if by_self
            && matches!(
                entry.kind(),
                EntryKind::SubjectReportIssued | EntryKind::ConsentsRead
            )
        {
            own_looks.push(entry.time_micros);
            continue;
        }
        let about = entry.consent().map(|r| r.id.as_str());
        if let Some(wanted) = consent {
            let step_of_note = sentence::is_note_step(entry.kind())
                && entry
                    .disclosure_id()
                    .is_some_and(|d| in_scope.iter().any(|s| s == d));
            if about != Some(wanted) && !step_of_note {
                continue;
            }
            if let Some(d) = entry.disclosure_id() {
                in_scope.push(d.to_owned());
            }
        }
        let text = sentence::event(web, tr, entry);
        let when = time::date_time(entry.time_micros, tr.lang);
        if sentence::is_note_step(entry.kind())
            && let Some(at) = entry.disclosure_id().and_then(|d| notes.get(d))
        {
            items[*at].steps.push(Step { time: when, text });
            continue;
        }
        let mut contacts = Vec::new();
        for org in [entry.sender_orgnr(), entry.recipient_orgnr()]
            .into_iter()
            .flatten()
        {
            if let Some(uri) = web.contact(org) {
                let name = web.org_name(org);
                if !contacts.iter().any(|(n, _)| *n == name) {
                    contacts.push((name, uri));
                }
            }
        }
        if entry.kind() == EntryKind::DisclosurePermitted
            && let Some(d) = entry.disclosure_id()
        {
            notes.insert(d.to_owned(), items.len());
        }
        items.push(Item {
            time: when,
            text,
            steps: Vec::new(),
            refused: entry.kind() == EntryKind::DisclosureRefused,
            contacts,
            micros: entry.time_micros,
        });
    }
    if let (Some(&last), None) = (own_looks.last(), consent) {
        items.push(Item {
            time: time::date_time(last, tr.lang),
            text: tr.fill(
                "event.own_looks",
                &[("count", &own_looks.len().to_string())],
            ),
            steps: Vec::new(),
            refused: false,
            contacts: Vec::new(),
            micros: last,
        });
    }
    items.sort_by_key(|i| std::cmp::Reverse(i.micros));
    items
}

/// "All N events verified against checkpoint size S, key K."
pub(super) fn verified_line(tr: &Tr, report: &VerifiedReport) -> String {
    tr.fill(
        "report.verified",
        &[
            ("events", &report.events.len().to_string()),
            ("size", &report.checkpoint.size.to_string()),
            ("key", &report.verifier_key),
        ],
    )
}

#[derive(Debug, Template)]
#[template(path = "consent.html")]
struct DetailPage {
    c: Chrome,
    consent: ConsentView,
    history: Vec<ConsentView>,
    items: Vec<Item>,
    granted: Option<Receipt>,
}

/// What a grant or a withdrawal answered, kept for the page after the redirect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Receipt {
    pub consent_id: String,
    pub audit_index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub time_micros: i64,
    pub purged_notes: u32,
}

impl Receipt {
    fn of(consent_id: &str, receipt: Option<&v1::AuditReceipt>, time: i64, purged: u32) -> Self {
        Self {
            consent_id: consent_id.to_owned(),
            audit_index: receipt.map_or(0, |r| r.audit_index),
            tree_size: receipt
                .and_then(|r| r.checkpoint.as_ref())
                .map_or(0, |c| c.tree_size),
            leaf_hash: receipt.map_or_else(String::new, |r| hex(&r.leaf_hash)),
            time_micros: time,
            purged_notes: purged,
        }
    }
}

/// `GET /me/consents/{id}`: who → whom → what → why, period, evidence, versions, what was shared.
pub(super) async fn detail(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/me/consents/{id}");
    let c = Chrome::new(&web, &s, "consent.title", &here).await;
    let (report, _) = match verified_report(&web, &person, person.pid.as_ref()).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let mut versions: Vec<&VerifiedConsent> = report
        .consents
        .iter()
        .filter(|v| v.record.id.to_string() == id)
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.record.version));
    let Some(newest) = versions.first() else {
        return failure(c, &Status::not_found("no consent with this id is yours"));
    };
    let consent = view(&web, &c.t, newest, &report);
    let history = versions
        .iter()
        .skip(1)
        .map(|v| view(&web, &c.t, v, &report))
        .collect();
    let items = timeline(&web, &c.t, &report, Some(&id));
    let granted = session::peek::<Receipt>(&s, "granted")
        .await
        .filter(|r| r.consent_id == id);
    render(&DetailPage {
        c,
        consent,
        history,
        items,
        granted,
    })
}
