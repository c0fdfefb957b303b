//! A jobseeker's subject access report for an officer, verified with the same code as
//! `casegate audit report`.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use casegate_consent::SubjectId;
use serde::Deserialize;

use super::results::{ResultRow, row};
use crate::web::{
    Web,
    chrome::{Chrome, failure, render},
    jobseeker::{verified_line, verified_report},
    masked, sentence, session,
    session::Officer,
};

#[derive(Debug, Template)]
#[template(path = "officer_report.html")]
struct ReportFormPage {
    c: Chrome,
    subject: String,
    error: Option<String>,
}

/// `GET /officer/report`: ask for a jobseeker's report.
pub(crate) async fn report_form(State(web): State<Arc<Web>>, Officer(_, s): Officer) -> Response {
    let c = Chrome::new(&web, &s, "officer_report.title", "/officer/report").await;
    render(&ReportFormPage {
        c,
        subject: String::new(),
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReportForm {
    subject: String,
}

/// `POST /officer/report`: keeps the jobseeker (never in a URL) and shows the report.
pub(crate) async fn report(
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
pub(crate) async fn report_result(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
) -> Response {
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
    let subject = subject.parse::<SubjectId>().ok();
    let (report, parsed) = match verified_report(&web, &person, subject.as_ref()).await {
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
