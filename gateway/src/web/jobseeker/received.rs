//! "Who received what": the verified subject access report as sentences, newest first, with
//! its printable form and the verifiable JSON download.

use std::sync::Arc;

use askama::Template;
use axum::{extract::State, response::Response};

use super::{ConsentView, Item, newest, timeline, verified_line, verified_report, view};
use crate::web::{
    Web,
    chrome::{Chrome, download, failure, render},
    masked,
    session::Jobseeker,
    time,
};

#[derive(Debug, Template)]
#[template(path = "received.html")]
struct ReceivedPage {
    c: Chrome,
    items: Vec<Item>,
    verified: String,
}

/// `GET /me/received`: every event about me, newest first, each as a sentence.
pub(crate) async fn received(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
) -> Response {
    let c = Chrome::new(&web, &s, "received.title", "/me/received").await;
    let (report, _) = match verified_report(&web, &person, person.pid.as_ref()).await {
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
pub(crate) async fn printable(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
) -> Response {
    let c = Chrome::new(&web, &s, "print.title", "/me/received/print").await;
    let (report, subject) = match verified_report(&web, &person, person.pid.as_ref()).await {
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
pub(crate) async fn report_json(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
) -> Response {
    match verified_report(&web, &person, person.pid.as_ref()).await {
        Ok((report, subject)) => download(
            "application/json",
            "casegate-report.json",
            crate::client::render::json(&crate::client::output::report_json(&report, &subject)),
        ),
        Err(status) => failure(
            Chrome::new(&web, &s, "received.title", "/me/received").await,
            &status,
        ),
    }
}
