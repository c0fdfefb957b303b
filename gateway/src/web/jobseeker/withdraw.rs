//! Withdrawing a consent: what it does, one button, then when it took effect, how many notes
//! were stopped and the receipt.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};
use casegate_consent::record::ViewStatus;
use casegate_proto::v1;
use tonic::Status;

use super::{ConsentView, Receipt, newest, verified_report, view};
use crate::web::{
    Web,
    chrome::{Chrome, failure, render},
    session,
    session::Jobseeker,
    time,
};

#[derive(Debug, Template)]
#[template(path = "withdraw.html")]
struct WithdrawPage {
    c: Chrome,
    consent: ConsentView,
}

/// `GET /me/consents/{id}/withdraw`: what withdrawing does, and the one button.
pub(crate) async fn withdraw_confirm(
    State(web): State<Arc<Web>>,
    Jobseeker(person, s): Jobseeker,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/me/consents/{id}/withdraw");
    let c = Chrome::new(&web, &s, "withdraw.title", &here).await;
    let (report, _) = match verified_report(&web, &person, person.pid.as_ref()).await {
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
pub(crate) async fn withdraw(
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
                .and_then(|w| crate::edge::convert::timestamp("at", w.at.as_ref()).ok())
                .map_or_else(crate::base::clock::now_micros, |t| t.0);
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
pub(crate) async fn withdrawn(
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
