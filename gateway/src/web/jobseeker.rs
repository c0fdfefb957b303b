//! The jobseeker's pages: my consents, one consent's detail and history, granting (form →
//! plain-language preview → confirm) and changing (a new version), withdrawing (confirm →
//! result), and "who received what" (the verified subject access report) with its printable
//! and verifiable JSON downloads.

use std::{collections::BTreeMap, sync::Arc};

use askama::Template;
use axum::{
    body::Bytes,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Redirect, Response},
};
use casegate_audit::entry::EntryKind;
use casegate_consent::{SubjectId, record::ViewStatus};
use casegate_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::{
    Person, Web,
    chrome::{Chrome, failure, render},
    masked, sentence, session,
    session::Jobseeker,
    text::Tr,
    time,
};
use crate::report::{self, VerifiedConsent, VerifiedReport};

/// Asks the gateway for everything recorded about the logged-in jobseeker and verifies it
/// against the log's own keys, exactly as `casegate audit report` does.
pub(super) async fn verified_report(
    web: &Web,
    person: &Person,
    subject: &str,
) -> Result<(VerifiedReport, SubjectId), Status> {
    let parsed: SubjectId = subject
        .parse()
        .map_err(|_| Status::invalid_argument("not a national identity number"))?;
    let answer = web
        .upstream
        .audit(person)?
        .subject_access_report(v1::SubjectAccessReportRequest {
            subject_id: subject.to_owned(),
        })
        .await?
        .into_inner();
    let verified = report::verify(&answer, &parsed, &web.verifiers).map_err(|e| {
        tracing::error!(error = %e, "a subject access report did not verify");
        Status::data_loss(format!("the gateway's report did not verify: {e}"))
    })?;
    Ok((verified, parsed))
}

/// One consent as the pages show it (its newest version).
#[derive(Debug, Clone)]
pub struct ConsentView {
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
                ("end", &time::date(c.record.period.end.0, tr.lang)),
            ],
        ),
        shared: report
            .events
            .iter()
            .filter(|e| {
                e.entry.kind == EntryKind::DisclosurePermitted
                    && e.entry.consent.as_ref().is_some_and(|r| r.id == id)
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
pub async fn consents(State(web): State<Arc<Web>>, Jobseeker(person, s): Jobseeker) -> Response {
    let c = Chrome::new(&web, &s, "consents.title", "/me").await;
    let (report, _) = match verified_report(&web, &person, &person.pid).await {
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
pub struct Step {
    pub time: String,
    pub text: String,
}

/// A note with its delivery, acknowledgement and purge as steps, or a single event.
#[derive(Debug, Clone)]
pub struct Item {
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
            .actor
            .as_ref()
            .is_some_and(|a| a.role == casegate_consent::Role::Jobseeker.as_str());
        if by_self
            && matches!(
                entry.kind,
                EntryKind::SubjectReportIssued | EntryKind::ConsentsRead
            )
        {
            own_looks.push(entry.time_micros);
            continue;
        }
        let about = entry.consent.as_ref().map(|r| r.id.as_str());
        if let Some(wanted) = consent {
            let step_of_note = sentence::is_note_step(entry.kind)
                && entry
                    .disclosure_id
                    .as_ref()
                    .is_some_and(|d| in_scope.contains(d));
            if about != Some(wanted) && !step_of_note {
                continue;
            }
            if let Some(d) = &entry.disclosure_id {
                in_scope.push(d.clone());
            }
        }
        let text = sentence::event(web, tr, entry);
        let when = time::date_time(entry.time_micros, tr.lang);
        if sentence::is_note_step(entry.kind)
            && let Some(at) = entry.disclosure_id.as_ref().and_then(|d| notes.get(d))
        {
            items[*at].steps.push(Step { time: when, text });
            continue;
        }
        let mut contacts = Vec::new();
        for org in [&entry.sender_orgnr, &entry.recipient_orgnr]
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
        if entry.kind == EntryKind::DisclosurePermitted
            && let Some(d) = &entry.disclosure_id
        {
            notes.insert(d.clone(), items.len());
        }
        items.push(Item {
            time: when,
            text,
            steps: Vec::new(),
            refused: entry.kind == EntryKind::DisclosureRefused,
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
pub struct Receipt {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /me/consents/{id}`: who → whom → what → why, period, evidence, versions, what was shared.
pub async fn detail(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/me/consents/{id}");
    let c = Chrome::new(&web, &s, "consent.title", &here).await;
    let (report, _) = match verified_report(&web, &person, &person.pid).await {
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

// === granting ===

/// The grant form's fields, as sent (repeated `category` and `purpose`).
#[derive(Debug, Clone, Default)]
pub struct GrantForm {
    pub sender: String,
    pub recipient: String,
    pub categories: Vec<String>,
    pub purposes: Vec<String>,
    pub end: String,
    pub supersedes: String,
}

impl GrantForm {
    fn parse(body: &[u8]) -> Self {
        let mut form = GrantForm::default();
        for (name, value) in
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
        {
            match name.as_str() {
                "sender" => form.sender = value,
                "recipient" => form.recipient = value,
                "category" => form.categories.push(value),
                "purpose" => form.purposes.push(value),
                "end" => form.end = value,
                "supersedes" => form.supersedes = value,
                _ => {}
            }
        }
        form
    }

    /// The problems with the form, each as (field id, text key); empty when it can be sent.
    fn problems(&self, web: &Web) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        let known_org = |o: &str| o.parse().is_ok_and(|o| web.organisations.contains_key(&o));
        if !known_org(&self.sender) {
            out.push(("sender", "grant.error.sender"));
        }
        if !known_org(&self.recipient) {
            out.push(("recipient", "grant.error.recipient"));
        } else if self.recipient == self.sender {
            out.push(("recipient", "grant.error.same"));
        }
        let categories: Vec<String> = web
            .vocabulary
            .categories()
            .map(|(c, _)| c.as_str().to_owned())
            .collect();
        if self.categories.is_empty() || self.categories.iter().any(|c| !categories.contains(c)) {
            out.push(("category-0", "grant.error.category"));
        }
        let purposes: Vec<String> = web
            .vocabulary
            .purposes()
            .map(|p| p.as_str().to_owned())
            .collect();
        if self.purposes.is_empty() || self.purposes.iter().any(|p| !purposes.contains(p)) {
            out.push(("purpose-0", "grant.error.purpose"));
        }
        let now = crate::clock::now_micros();
        let max = i64::try_from(web.max_consent_period.as_micros()).unwrap_or(i64::MAX / 2);
        match time::parse_date(&self.end) {
            None => out.push(("end", "grant.error.end")),
            Some(end) if end <= now => out.push(("end", "grant.error.end_past")),
            Some(end) if end - now > max => out.push(("end", "grant.error.end_far")),
            Some(_) => {}
        }
        out
    }

    fn request(&self, subject: &str) -> v1::GrantConsentRequest {
        let party = |orgnr: &str| v1::Party {
            orgnr: orgnr.to_owned(),
            roles: Vec::new(),
        };
        let stamp = |micros: i64| prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: 0,
        };
        v1::GrantConsentRequest {
            subject_id: subject.to_owned(),
            provisions: vec![v1::Provision {
                senders: vec![party(&self.sender)],
                recipients: vec![party(&self.recipient)],
                categories: self.categories.clone(),
                purposes: self.purposes.clone(),
            }],
            period: Some(v1::Period {
                start: Some(stamp(crate::clock::now_micros())),
                end: time::parse_date(&self.end).map(stamp),
            }),
            evidence: None,
            supersedes_consent_id: self.supersedes.clone(),
        }
    }
}

/// One choice of a select or a checkbox group.
#[derive(Debug, Clone)]
struct Option_ {
    value: String,
    label: String,
    chosen: bool,
}

#[derive(Debug, Template)]
#[template(path = "grant.html")]
struct GrantPage {
    c: Chrome,
    senders: Vec<Option_>,
    recipients: Vec<Option_>,
    categories: Vec<Option_>,
    purposes: Vec<Option_>,
    end: String,
    supersedes: String,
    /// (field id, message)
    errors: Vec<(String, String)>,
}

fn grant_page(web: &Web, c: Chrome, form: &GrantForm, errors: &[(&str, &str)]) -> GrantPage {
    let orgs = |chosen: &str| -> Vec<Option_> {
        web.organisations
            .iter()
            .map(|(orgnr, name)| Option_ {
                value: orgnr.to_string(),
                label: name.clone(),
                chosen: orgnr.to_string() == chosen,
            })
            .collect()
    };
    let categories = web
        .vocabulary
        .categories()
        .map(|(cat, _)| Option_ {
            value: cat.as_str().to_owned(),
            label: sentence::term(&c.t, "category", cat.as_str()),
            chosen: form.categories.iter().any(|x| x == cat.as_str()),
        })
        .collect();
    let purposes = web
        .vocabulary
        .purposes()
        .map(|p| Option_ {
            value: p.as_str().to_owned(),
            label: sentence::term(&c.t, "purpose", p.as_str()),
            chosen: form.purposes.iter().any(|x| x == p.as_str()),
        })
        .collect();
    let errors = errors
        .iter()
        .map(|(field, key)| ((*field).to_owned(), c.t.get(key)))
        .collect();
    GrantPage {
        senders: orgs(&form.sender),
        recipients: orgs(&form.recipient),
        categories,
        purposes,
        end: form.end.clone(),
        supersedes: form.supersedes.clone(),
        errors,
        c,
    }
}

/// `GET /me/consents/new`: the guided grant form.
pub async fn new_form(State(web): State<Arc<Web>>, Jobseeker(_, s): Jobseeker) -> Response {
    let c = Chrome::new(&web, &s, "grant.title", "/me/consents/new").await;
    let six_months = crate::clock::now_micros() + 182 * 86_400 * 1_000_000;
    let form = GrantForm {
        end: time::input_date(six_months),
        ..GrantForm::default()
    };
    render(&grant_page(&web, c, &form, &[]))
}

/// `GET /me/consents/{id}/change`: the form filled in from the newest version, to make a new one.
pub async fn change_form(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/me/consents/{id}/change");
    let mut c = Chrome::new(&web, &s, "change.title", &here).await;
    let (report, _) = match verified_report(&web, &person, &person.pid).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let Some(current) = newest(&report)
        .into_iter()
        .find(|v| v.record.id.to_string() == id && v.status == ViewStatus::Active)
    else {
        return failure(
            c,
            &Status::failed_precondition("only an active consent can be changed"),
        );
    };
    let record = &current.record;
    let first = record.provisions.first();
    let form = GrantForm {
        sender: first
            .and_then(|p| p.senders.first())
            .map_or_else(String::new, |p| p.orgnr.to_string()),
        recipient: first
            .and_then(|p| p.recipients.first())
            .map_or_else(String::new, |p| p.orgnr.to_string()),
        categories: first.map_or_else(Vec::new, |p| {
            p.categories.iter().map(|c| c.as_str().to_owned()).collect()
        }),
        purposes: first.map_or_else(Vec::new, |p| {
            p.purposes.iter().map(|c| c.as_str().to_owned()).collect()
        }),
        end: time::input_date(record.period.end.0),
        supersedes: id,
    };
    c.title = c.t.get("change.title");
    render(&grant_page(&web, c, &form, &[]))
}

#[derive(Debug, Template)]
#[template(path = "preview.html")]
struct PreviewPage {
    c: Chrome,
    sentence: String,
    form: GrantForm,
}

/// `POST /me/consents/preview`: the consent in plain words before it is given; or the form
/// again with its errors.
pub async fn preview(
    State(web): State<Arc<Web>>,
    Jobseeker(_, s): Jobseeker,
    body: Bytes,
) -> Response {
    let form = GrantForm::parse(&body);
    let problems = form.problems(&web);
    let edit = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .unwrap_or_default()
        .iter()
        .any(|(name, _)| name == "edit");
    if !problems.is_empty() || edit {
        let key = if form.supersedes.is_empty() {
            "grant.title"
        } else {
            "change.title"
        };
        let mut c = Chrome::new(&web, &s, key, "/me/consents/new").await;
        if !problems.is_empty() {
            c.title = c.t.fill("form.title_with_errors", &[("title", &c.title)]);
        }
        let page = grant_page(&web, c, &form, &problems);
        let status = if problems.is_empty() {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::UNPROCESSABLE_ENTITY
        };
        return (status, render(&page)).into_response();
    }
    let c = Chrome::new(&web, &s, "preview.title", "/me/consents/preview").await;
    let request = form.request("");
    let sentence = request
        .provisions
        .first()
        .and_then(|p| crate::convert::consent::provision("provisions[0]", p, &web.vocabulary).ok())
        .map(|p| {
            sentence::provision(
                &web,
                &c.t,
                &p,
                time::parse_date(&form.end).unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    render(&PreviewPage { c, sentence, form })
}

/// `POST /me/consents`: gives the consent, then shows it.
pub async fn grant(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    body: Bytes,
) -> Response {
    let form = GrantForm::parse(&body);
    let c = Chrome::new(&web, &s, "grant.title", "/me/consents").await;
    if !form.problems(&web).is_empty() {
        return failure(c, &Status::invalid_argument("the form is incomplete"));
    }
    let answer = match web.upstream.consent(&person) {
        Ok(mut client) => client.grant_consent(form.request(&person.pid)).await,
        Err(status) => Err(status),
    };
    match answer {
        Ok(answer) => {
            let answer = answer.into_inner();
            let id = answer
                .consent
                .as_ref()
                .map_or_else(String::new, |r| r.consent_id.clone());
            let receipt = Receipt::of(&id, answer.receipt.as_ref(), crate::clock::now_micros(), 0);
            session::put(&s, "granted", &receipt).await;
            Redirect::to(&format!("/me/consents/{id}")).into_response()
        }
        Err(status) => failure(c, &status),
    }
}

// === withdrawing ===

#[derive(Debug, Template)]
#[template(path = "withdraw.html")]
struct WithdrawPage {
    c: Chrome,
    consent: ConsentView,
}

/// `GET /me/consents/{id}/withdraw`: what withdrawing does, and the one button.
pub async fn withdraw_confirm(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/me/consents/{id}/withdraw");
    let c = Chrome::new(&web, &s, "withdraw.title", &here).await;
    let (report, _) = match verified_report(&web, &person, &person.pid).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let Some(current) = newest(&report)
        .into_iter()
        .find(|v| v.record.id.to_string() == id)
    else {
        return failure(c, &Status::not_found("no consent with this id is yours"));
    };
    if current.status != ViewStatus::Active {
        return failure(c, &Status::failed_precondition("the consent is not active"));
    }
    let consent = view(&web, &c.t, current, &report);
    render(&WithdrawPage { c, consent })
}

/// `POST /me/consents/{id}/withdraw`: withdraws it at once.
pub async fn withdraw(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let answer = match web.upstream.consent(&person) {
        Ok(mut client) => {
            client
                .withdraw_consent(v1::WithdrawConsentRequest {
                    consent_id: id.clone(),
                    reason: String::new(),
                    evidence: None,
                })
                .await
        }
        Err(status) => Err(status),
    };
    match answer {
        Ok(answer) => {
            let answer = answer.into_inner();
            let at = answer
                .consent
                .as_ref()
                .and_then(|r| r.withdrawal.as_ref())
                .and_then(|w| w.at.as_ref())
                .map_or_else(crate::clock::now_micros, |t| {
                    t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
                });
            let receipt = Receipt::of(&id, answer.receipt.as_ref(), at, answer.purged_notes);
            session::put(&s, "withdrawn", &receipt).await;
            Redirect::to(&format!("/me/consents/{id}/withdrawn")).into_response()
        }
        Err(status) => {
            let here = format!("/me/consents/{id}/withdraw");
            failure(
                Chrome::new(&web, &s, "withdraw.title", &here).await,
                &status,
            )
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "withdrawn.html")]
struct WithdrawnPage {
    c: Chrome,
    id: String,
    when: String,
    stopped: String,
    receipt: Receipt,
}

/// `GET /me/consents/{id}/withdrawn`: when it took effect, how many notes were stopped, the receipt.
pub async fn withdrawn(
    State(web): State<Arc<Web>>,
    Jobseeker(_, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let Some(receipt) = session::peek::<Receipt>(&s, "withdrawn")
        .await
        .filter(|r| r.consent_id == id)
    else {
        return Redirect::to(&format!("/me/consents/{id}")).into_response();
    };
    let here = format!("/me/consents/{id}/withdrawn");
    let c = Chrome::new(&web, &s, "withdrawn.title", &here).await;
    let when = c.t.fill(
        "withdrawn.when",
        &[("time", &time::date_time(receipt.time_micros, c.t.lang))],
    );
    let stopped = c.t.fill(
        if receipt.purged_notes == 1 {
            "withdrawn.stopped_one"
        } else {
            "withdrawn.stopped"
        },
        &[("count", &receipt.purged_notes.to_string())],
    );
    render(&WithdrawnPage {
        c,
        id,
        when,
        stopped,
        receipt,
    })
}

// === who received what ===

#[derive(Debug, Template)]
#[template(path = "received.html")]
struct ReceivedPage {
    c: Chrome,
    items: Vec<Item>,
    verified: String,
}

/// `GET /me/received`: every event about me, newest first, each as a sentence.
pub async fn received(State(web): State<Arc<Web>>, Jobseeker(person, s): Jobseeker) -> Response {
    let c = Chrome::new(&web, &s, "received.title", "/me/received").await;
    let (report, _) = match verified_report(&web, &person, &person.pid).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let items = timeline(&web, &c.t, &report, None);
    let verified = verified_line(&c.t, &report);
    render(&ReceivedPage { c, items, verified })
}

#[derive(Debug, Template)]
#[template(path = "print.html")]
struct PrintPage {
    c: Chrome,
    subject: String,
    issued: String,
    consents: Vec<ConsentView>,
    items: Vec<Item>,
    verified: String,
}

/// `GET /me/received/print`: the same report laid out for paper.
pub async fn printable(State(web): State<Arc<Web>>, Jobseeker(person, s): Jobseeker) -> Response {
    let c = Chrome::new(&web, &s, "print.title", "/me/received/print").await;
    let (report, subject) = match verified_report(&web, &person, &person.pid).await {
        Ok(r) => r,
        Err(status) => return failure(c, &status),
    };
    let consents = newest(&report)
        .into_iter()
        .map(|v| view(&web, &c.t, v, &report))
        .collect();
    render(&PrintPage {
        subject: masked(&subject),
        issued: time::date_time(report.issued.entry.time_micros, c.t.lang),
        items: timeline(&web, &c.t, &report, None),
        verified: verified_line(&c.t, &report),
        consents,
        c,
    })
}

/// `GET /me/received.json`: the verified report as `casegate audit report --format json`
/// writes it, which `casegate audit replay --consents` reads.
pub async fn report_json(State(web): State<Arc<Web>>, Jobseeker(person, s): Jobseeker) -> Response {
    match verified_report(&web, &person, &person.pid).await {
        Ok((report, subject)) => json_download(
            &crate::cli::officer::report_json(&report, &subject),
            "casegate-report.json",
        ),
        Err(status) => failure(
            Chrome::new(&web, &s, "received.title", "/me/received").await,
            &status,
        ),
    }
}

/// A JSON document as a download.
pub(super) fn json_download(value: &serde_json::Value, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        crate::cli::render::json(value),
    )
        .into_response()
}
