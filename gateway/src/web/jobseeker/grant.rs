//! Giving a consent (form → plain-language preview → confirm) and changing one (the form filled
//! in from the newest version; the result is a new version).

use std::sync::Arc;

use askama::Template;
use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};
use casegate_consent::record::ViewStatus;
use casegate_proto::v1;
use tonic::Status;

use super::{Receipt, newest, verified_report};
use crate::web::{
    Web,
    chrome::{Chrome, failure, render},
    sentence, session,
    session::Jobseeker,
    time,
};

/// The grant form's fields, as sent (repeated `category` and `purpose`).
#[derive(Debug, Clone, Default)]
pub(super) struct GrantForm {
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
        let now = crate::base::clock::now_micros();
        let max = i64::try_from(web.max_consent_period.as_micros()).unwrap_or(i64::MAX / 2);
        match time::end_of(&self.end) {
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
        let stamp = |micros: i64| {
            crate::edge::convert::timestamp_to_wire(casegate_consent::record::Timestamp(micros))
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
                start: Some(stamp(crate::base::clock::now_micros())),
                end: time::end_of(&self.end).map(stamp),
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
pub(crate) async fn new_form(State(web): State<Arc<Web>>, Jobseeker(_, s): Jobseeker) -> Response {
    let c = Chrome::new(&web, &s, "grant.title", "/me/consents/new").await;
    let six_months = crate::base::clock::now_micros() + 182 * 86_400 * 1_000_000;
    let form = GrantForm {
        end: time::input_date(six_months),
        ..GrantForm::default()
    };
    render(&grant_page(&web, c, &form, &[]))
}

/// `GET /me/consents/{id}/change`: the form filled in from the newest version, to make a new one.
pub(crate) async fn change_form(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/me/consents/{id}/change");
    let mut c = Chrome::new(&web, &s, "change.title", &here).await;
    let (report, _) = match verified_report(&web, &person, person.pid.as_ref()).await {
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
    // The form holds one sender, one recipient and no role limits: a consent with more would
    // come back wider or narrower than it is, so it is not changed here.
    let representable = match record.provisions.as_slice() {
        [p] => {
            p.senders.len() == 1
                && p.recipients.len() == 1
                && p.senders
                    .iter()
                    .chain(&p.recipients)
                    .all(|party| party.roles.is_empty())
        }
        _ => false,
    };
    if !representable {
        let page = crate::web::chrome::ErrorPage {
            message: c.t.get("change.unsupported"),
            detail: String::new(),
            c,
        };
        return (axum::http::StatusCode::CONFLICT, render(&page)).into_response();
    }
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
        end: time::input_date(time::last_instant(record.period.end.0)),
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
pub(crate) async fn preview(
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
        .and_then(|p| {
            crate::edge::convert::consent::provision("provisions[0]", p, &web.vocabulary).ok()
        })
        .map(|p| sentence::provision(&web, &c.t, &p, time::end_of(&form.end).unwrap_or_default()))
        .unwrap_or_default();
    render(&PreviewPage { c, sentence, form })
}

/// `POST /me/consents`: gives the consent, then shows it.
pub(crate) async fn grant(
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
        Ok(mut client) => {
            client
                .grant_consent(form.request(&person.pid.map(|p| p.expose()).unwrap_or_default()))
                .await
        }
        Err(status) => Err(status),
    };
    match answer {
        Ok(answer) => {
            let answer = answer.into_inner();
            let id = answer
                .consent
                .as_ref()
                .map_or_else(String::new, |r| r.consent_id.clone());
            let receipt = Receipt::of(
                &id,
                answer.receipt.as_ref(),
                crate::base::clock::now_micros(),
                0,
            );
            session::put(&s, "granted", &receipt).await;
            Redirect::to(&format!("/me/consents/{id}")).into_response()
        }
        Err(status) => failure(c, &status),
    }
}
