//! Who is logged in, and how they got there: the start page, logging out, and the development
//! login picker of `casegate dev`, which logs in a synthetic jobseeker or officer. The picker's
//! routes exist only when the web tier is built in development mode.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use tower_sessions::Session;

use super::{
    Audience, Person, Upstream, Web,
    chrome::{Chrome, render},
    masked, session,
};

/// A synthetic person of the development login.
#[derive(Debug, Clone)]
pub struct DevPerson {
    pub key: String,
    pub person: Person,
}

/// Three synthetic jobseekers (valid check digits, no real person) and one privacy officer.
pub fn dev_people(upstream: &Upstream) -> Vec<DevPerson> {
    let mut people: Vec<DevPerson> = (0..3)
        .filter_map(|i| super::dev_jobseeker(i).map(|s| (i, s)))
        .map(|(i, subject)| DevPerson {
            key: format!("jobseeker-{}", i + 1),
            person: Person {
                sub: format!("dev-jobseeker-{}", i + 1),
                pid: subject.expose(),
                role: Audience::Jobseeker,
                idp: "dev".to_owned(),
                acr: "dev".to_owned(),
            },
        })
        .collect();
    people.push(DevPerson {
        key: "officer".to_owned(),
        person: Person {
            sub: format!("dev-officer-{}", upstream.orgnr(Audience::Officer)),
            pid: String::new(),
            role: Audience::Officer,
            idp: "dev".to_owned(),
            acr: "dev".to_owned(),
        },
    });
    people
}

#[derive(Debug, Template)]
#[template(path = "landing.html")]
struct Landing {
    c: Chrome,
    dev: bool,
}

/// `GET /`: the way in, or the logged-in person's own start page.
pub async fn landing(State(web): State<Arc<Web>>, session: Session) -> Response {
    match session::person(&session).await {
        Some(p) if p.role == Audience::Jobseeker => Redirect::to("/me").into_response(),
        Some(_) => Redirect::to("/officer").into_response(),
        None => render(&Landing {
            c: Chrome::new(&web, &session, "landing.title", "/").await,
            dev: web.dev_people.is_some(),
        }),
    }
}

#[derive(Debug, Template)]
#[template(path = "dev_login.html")]
struct Picker {
    c: Chrome,
    choices: Vec<Choice>,
    error: bool,
}

#[derive(Debug)]
struct Choice {
    key: String,
    label: String,
}

/// `GET /dev/login`: pick a synthetic person (development mode only).
pub async fn dev_picker(State(web): State<Arc<Web>>, session: Session) -> Response {
    picker(&web, &session, false).await
}

async fn picker(web: &Web, session: &Session, error: bool) -> Response {
    let c = Chrome::new(web, session, "dev.title", "/dev/login").await;
    let choices = web
        .dev_people
        .iter()
        .flatten()
        .map(|d| Choice {
            key: d.key.clone(),
            label: match d.person.role {
                Audience::Jobseeker => c.t.fill(
                    "dev.jobseeker",
                    &[(
                        "id",
                        &d.person.pid.parse().map(|s| masked(&s)).unwrap_or_default(),
                    )],
                ),
                Audience::Officer => c.t.fill(
                    "dev.officer",
                    &[(
                        "org",
                        &web.org_name(&web.upstream.orgnr(Audience::Officer).to_string()),
                    )],
                ),
            },
        })
        .collect();
    let page = Picker { c, choices, error };
    if error {
        (axum::http::StatusCode::BAD_REQUEST, render(&page)).into_response()
    } else {
        render(&page)
    }
}

#[derive(Debug, Deserialize)]
pub struct PickForm {
    who: Option<String>,
}

/// `POST /dev/login`: logs the picked synthetic person in.
pub async fn dev_login(
    State(web): State<Arc<Web>>,
    session: Session,
    Form(form): Form<PickForm>,
) -> Response {
    let picked = web
        .dev_people
        .iter()
        .flatten()
        .find(|d| form.who.as_deref() == Some(d.key.as_str()));
    let Some(picked) = picked else {
        return picker(&web, &session, true).await;
    };
    session::log_in(&session, &picked.person).await;
    Redirect::to("/").into_response()
}

/// `POST /logout`: ends the session.
pub async fn logout(session: Session) -> Response {
    session::log_out(&session).await;
    Redirect::to("/").into_response()
}
