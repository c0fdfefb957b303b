//! The web tier over HTTP, without a browser: security headers and cookie flags on every
//! answer, CSRF refusals that change nothing, the development login only in development mode,
//! one jobseeker kept out of another's pages, every page in every language with no untranslated
//! text, and the officer's CSV export neutralising formula cells.

use casegate::web::dev_jobseeker;
use casegate_proto::v1::WithdrawConsentRequest;
use casegate_tests::{
    TestGateway,
    scenario::{grant_ips_consent, own_consents, update},
    web::{CONFIG, TestWeb, WebClient},
};

/// Today's date in Oslo, `YYYY-MM-DD`.
fn oslo_today() -> String {
    jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::get("Europe/Oslo").expect("tz"))
        .strftime("%Y-%m-%d")
        .to_string()
}

async fn start(dev: bool) -> (TestGateway, TestWeb) {
    let gw = TestGateway::start_with(CONFIG).await;
    let web = TestWeb::start(&gw, dev).await;
    (gw, web)
}

/// The date the grant form proposes as the consent's end (about six months ahead).
fn proposed_end(form: &casegate_tests::web::Page) -> String {
    let marker = "name=\"end\" value=\"";
    let at = form.body.find(marker).expect("an end date field") + marker.len();
    form.body[at..].split('"').next().expect("value").to_owned()
}

/// The grant form's fields for NAV → IPS, benefit counselling, IPS follow-up, until `end`.
fn ips_form(gw: &TestGateway, csrf: &str, end: &str) -> Vec<(&'static str, String)> {
    vec![
        ("csrf", csrf.to_owned()),
        ("sender", gw.org("nav").orgnr.clone()),
        ("recipient", gw.org("ips").orgnr.clone()),
        ("category", "benefit_counselling".to_owned()),
        ("purpose", "ips_follow_up".to_owned()),
        ("end", end.to_owned()),
    ]
}

/// Owned form fields as the client sends them.
fn pairs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Gives the IPS consent through the web form (form → preview → confirm); returns its id.
async fn grant_by_form(gw: &TestGateway, client: &WebClient) -> String {
    let form = client.get("/me/consents/new").await;
    assert_eq!(form.status, 200);
    let mut fields = ips_form(gw, &form.csrf(), &proposed_end(&form));
    fields.push(("supersedes", String::new()));
    let preview = client.post("/me/consents/preview", &pairs(&fields)).await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(preview.body.contains("Test nav"), "{}", preview.body);
    let done = client.post("/me/consents", &pairs(&fields)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    done.location()
        .strip_prefix("/me/consents/")
        .expect("redirect to the consent")
        .to_owned()
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_a_strict_session_cookie() {
    let (gw, web) = start(true).await;
    let client = web.client();
    let first = client.get("/").await;
    let cookie = first
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
        "Max-Age=900",
    ] {
        assert!(cookie.contains(flag), "{flag} missing from {cookie}");
    }
    client.dev_login("jobseeker-1").await;
    for path in [
        "/",
        "/dev/login",
        "/me",
        "/me/received",
        "/no/such/page",
        "/static/site.css",
    ] {
        let page = client.get(path).await;
        let header = |name: &str| {
            page.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(
            header("strict-transport-security").starts_with("max-age="),
            "{path}"
        );
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        if path != "/static/site.css" {
            assert_eq!(header("cache-control"), "no-store", "{path}");
        }
    }
    // Idle timeout: said on every page, extendable without losing the page.
    let me = client.get("/me").await;
    assert!(
        me.body.contains("action=\"/session/extend\""),
        "{}",
        me.body
    );
    let extended = client
        .post(
            "/session/extend",
            &[("csrf", &me.csrf()), ("back", "/me/received")],
        )
        .await;
    assert_eq!(
        (extended.status, extended.location()),
        (303, "/me/received")
    );
    // A login gets a new session id (no fixation).
    let fresh = web.client();
    let before = fresh.get("/dev/login").await;
    let id_before = before.headers.get("set-cookie").cloned();
    let after = fresh
        .post(
            "/dev/login",
            &[("csrf", &before.csrf()), ("who", "officer")],
        )
        .await;
    assert_ne!(after.headers.get("set-cookie").cloned(), id_before);
    assert!(
        after.headers.get("set-cookie").is_some(),
        "a new session cookie at login"
    );
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_post_without_this_sites_token_changes_nothing() {
    let (gw, web) = start(true).await;
    let client = web.client();
    client.dev_login("jobseeker-1").await;
    let subject = dev_jobseeker(0).expect("synthetic jobseeker");
    let form = client.get("/me/consents/new").await;
    let token = form.csrf();
    let end = proposed_end(&form);
    let body = |csrf: &str| serde_urlencoded::to_string(ips_form(&gw, csrf, &end)).expect("form");
    let origin = web.url("");
    let same = [
        ("sec-fetch-site", "same-origin"),
        ("origin", origin.as_str()),
    ];
    let refusals = [
        ("no token", body(""), same.to_vec()),
        ("a wrong token", body("not-the-token"), same.to_vec()),
        (
            "another site's request",
            body(&token),
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://attacker.invalid"),
            ],
        ),
        (
            "another origin",
            body(&token),
            vec![("origin", "https://attacker.invalid")],
        ),
    ];
    for (what, body, headers) in refusals {
        let page = client.post_raw("/me/consents", body, &headers).await;
        assert_eq!(page.status, 403, "{what}: {}", page.body);
    }
    let consents = own_consents(&gw, &subject).await;
    assert!(consents.is_empty(), "a refused POST recorded {consents:?}");
    // The same form with this site's token goes through.
    let page = client.post_raw("/me/consents", body(&token), &same).await;
    assert_eq!(page.status, 303, "{}", page.body);
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn the_development_login_exists_only_in_development_mode() {
    let (gw, web) = start(false).await;
    let client = web.client();
    let landing = client.get("/").await;
    assert_eq!(landing.status, 200);
    assert!(!landing.body.contains("/dev/login"), "{}", landing.body);
    assert_eq!(client.get("/dev/login").await.status, 404);
    let post = client
        .post("/dev/login", &[("csrf", ""), ("who", "officer")])
        .await;
    assert!(post.status == 403 || post.status == 404, "{}", post.status);
    let me = client.get("/me").await;
    assert_eq!((me.status, me.location()), (303, "/"));
    let officer = client.get("/officer").await;
    assert_eq!((officer.status, officer.location()), (303, "/"));
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_jobseeker_cannot_reach_another_persons_pages() {
    let (gw, web) = start(true).await;
    let owner = web.client();
    owner.dev_login("jobseeker-1").await;
    let id = grant_by_form(&gw, &owner).await;
    let mine = owner.get(&format!("/me/consents/{id}")).await;
    assert_eq!(mine.status, 200);

    let other = web.client();
    other.dev_login("jobseeker-2").await;
    for path in [
        format!("/me/consents/{id}"),
        format!("/me/consents/{id}/withdraw"),
        format!("/me/consents/{id}/change"),
    ] {
        let page = other.get(&path).await;
        assert!(page.status >= 400, "{path}: {}", page.status);
        assert!(!page.body.contains("Test ips"), "{path} shows the consent");
    }
    let token = other.get("/me").await.csrf();
    let withdraw = other
        .post(&format!("/me/consents/{id}/withdraw"), &[("csrf", &token)])
        .await;
    assert_eq!(withdraw.status, 403, "{}", withdraw.body);
    assert!(!other.get("/me").await.body.contains(&id));
    // Still in force for its owner; the gateway agrees.
    let subject = dev_jobseeker(0).expect("synthetic jobseeker");
    let withdrawn = gw
        .jobseeker(&subject)
        .await
        .consent
        .withdraw_consent(WithdrawConsentRequest {
            consent_id: id.clone(),
            ..Default::default()
        })
        .await;
    assert!(withdrawn.is_ok(), "the owner's consent was still active");
    // Neither audience reaches the other's pages.
    let officer = web.client();
    officer.dev_login("officer").await;
    assert_eq!(officer.get("/me").await.location(), "/");
    assert_eq!(owner.get("/officer").await.location(), "/");
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn every_page_renders_in_every_language_without_untranslated_text() {
    let (gw, web) = start(true).await;
    let jobseeker = web.client();
    jobseeker.dev_login("jobseeker-1").await;
    let subject = dev_jobseeker(0).expect("synthetic jobseeker");
    let id = grant_by_form(&gw, &jobseeker).await;
    grant_ips_consent(&gw, &subject).await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    nav.disclose_permitted(update(&gw, &subject, "web-1", "synthetic note"))
        .await;
    let officer = web.client();
    officer.dev_login("officer").await;
    let token = officer.get("/officer").await.csrf();
    assert_eq!(
        officer
            .post(
                "/officer",
                &[("csrf", &token), ("kind", "disclosure_permitted")]
            )
            .await
            .status,
        303
    );
    assert_eq!(
        officer
            .post(
                "/officer/report",
                &[("csrf", &token), ("subject", &subject.expose())]
            )
            .await
            .status,
        303
    );
    let jobseeker_pages = [
        "/me".to_owned(),
        format!("/me/consents/{id}"),
        format!("/me/consents/{id}/change"),
        format!("/me/consents/{id}/withdraw"),
        "/me/consents/new".to_owned(),
        "/me/received".to_owned(),
        "/me/received/print".to_owned(),
        "/no/such/page".to_owned(),
    ];
    let officer_pages = [
        "/officer",
        "/officer/results",
        "/officer/entries/1",
        "/officer/anomalies",
        "/officer/report",
        "/officer/report/result",
        "/officer/integrity",
    ];
    for lang in ["nb", "nn", "en"] {
        let mut titles = std::collections::BTreeSet::new();
        for (client, path) in jobseeker_pages
            .iter()
            .map(|p| (&jobseeker, p.as_str()))
            .chain(officer_pages.iter().map(|p| (&officer, *p)))
        {
            client.get(&format!("/language?to={lang}&back=/")).await;
            let page = client.get(path).await;
            assert!(
                page.status == 200 || path == "/no/such/page",
                "{lang} {path}: {}",
                page.status
            );
            assert!(
                page.body.contains(&format!("<html lang=\"{lang}\">")),
                "{lang} {path}"
            );
            assert!(!page.body.contains('⟦'), "{lang} {path}: untranslated text");
            assert!(
                page.body.contains("href=\"#main\""),
                "{lang} {path}: no skip link"
            );
            assert!(
                titles.insert(page.title().to_owned()),
                "{lang} {path}: title repeats"
            );
        }
        // The pages a form's POST shows, and the way in, in this language too.
        let anonymous = web.client();
        anonymous.get(&format!("/language?to={lang}&back=/")).await;
        let form = jobseeker.get("/me/consents/new").await;
        let empty = jobseeker
            .post("/me/consents/preview", &[("csrf", &form.csrf())])
            .await;
        let valid = ips_form(&gw, &form.csrf(), &proposed_end(&form));
        let preview = jobseeker.post("/me/consents/preview", &pairs(&valid)).await;
        assert_eq!(empty.status, 422);
        assert!(
            empty.body.contains("id=\"error-summary\""),
            "{lang}: no error summary"
        );
        for (what, page) in [
            ("the start page", anonymous.get("/").await),
            ("the development login", anonymous.get("/dev/login").await),
            ("the form with errors", empty),
            ("the preview", preview),
        ] {
            assert!(
                page.body.contains(&format!("<html lang=\"{lang}\">")),
                "{lang} {what}"
            );
            assert!(!page.body.contains('⟦'), "{lang} {what}: untranslated text");
            assert!(
                titles.insert(page.title().to_owned()),
                "{lang} {what}: title repeats"
            );
        }
        // The printable report shows the identity number masked, never whole.
        let print = jobseeker.get("/me/received/print").await;
        assert!(
            !print.body.contains(&subject.expose()),
            "an identity number on the page"
        );
        assert!(
            print
                .body
                .contains(&format!("{} *****", &subject.expose()[..6]))
        );
    }
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn changing_a_consent_makes_a_new_version_and_keeps_the_old_one_in_the_history() {
    let (gw, web) = start(true).await;
    let client = web.client();
    client.dev_login("jobseeker-3").await;
    let id = grant_by_form(&gw, &client).await;
    let form = client.get(&format!("/me/consents/{id}/change")).await;
    assert_eq!(form.status, 200);
    assert!(
        form.body
            .contains(&format!("name=\"supersedes\" value=\"{id}\""))
    );
    let mut fields = ips_form(&gw, &form.csrf(), &proposed_end(&form));
    fields.push(("category", "meeting_summary".to_owned()));
    fields.push(("supersedes", id.clone()));
    let done = client.post("/me/consents", &pairs(&fields)).await;
    assert_eq!(
        (done.status, done.location()),
        (303, format!("/me/consents/{id}").as_str())
    );
    client.get("/language?to=en&back=/").await;
    let detail = client.get(&format!("/me/consents/{id}")).await;
    assert!(
        detail.body.contains("<dt>Version</dt><dd>2</dd>"),
        "{}",
        detail.body
    );
    assert!(
        detail.body.contains("summaries of meetings"),
        "{}",
        detail.body
    );
    assert!(
        detail
            .body
            .contains("<strong>Version 1</strong> · Replaced by a newer version"),
        "{}",
        detail.body
    );
    // A consent the form cannot show (two provisions, role limits) is not changed here.
    let subject = dev_jobseeker(2).expect("synthetic jobseeker");
    grant_ips_consent(&gw, &subject).await;
    let listed = own_consents(&gw, &subject).await;
    let wide = listed
        .iter()
        .find(|r| r.provisions.len() == 2)
        .expect("the IPS consent");
    let refused = client
        .get(&format!("/me/consents/{}/change", wide.consent_id))
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains("cannot be changed here"),
        "{}",
        refused.body
    );
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_consent_given_until_a_day_includes_that_whole_day() {
    let (gw, web) = start(true).await;
    let client = web.client();
    client.dev_login("jobseeker-2").await;
    let form = client.get("/me/consents/new").await;
    let end = proposed_end(&form);
    let id = grant_by_form(&gw, &client).await;
    let subject = dev_jobseeker(1).expect("synthetic jobseeker");
    let record = gw
        .jobseeker(&subject)
        .await
        .consent
        .get_consent(casegate_proto::v1::GetConsentRequest {
            consent_id: id.clone(),
            version: 0,
        })
        .await
        .expect("get")
        .into_inner()
        .consent
        .expect("record");
    let period_end = record.period.and_then(|p| p.end).expect("an end");
    // The period is half-open: it ends at midnight (Oslo) after the chosen day.
    let next_midnight = {
        let day: jiff::civil::Date = end.parse().expect("a date");
        let next = day
            .tomorrow()
            .expect("a day after")
            .to_zoned(jiff::tz::TimeZone::get("Europe/Oslo").expect("tz"))
            .expect("zoned");
        next.timestamp().as_second()
    };
    assert_eq!(period_end.seconds, next_midnight);
    // And the page says the chosen day.
    client.get("/language?to=en&back=/").await;
    let detail = client.get(&format!("/me/consents/{id}")).await;
    let shown = jiff::civil::Date::strptime("%Y-%m-%d", &end)
        .expect("a date")
        .strftime("%-d %b %Y")
        .to_string();
    assert!(
        detail.body.contains(&format!("until {shown}")),
        "{shown}: {}",
        detail.body
    );
    web.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn the_officers_csv_export_neutralises_formula_cells() {
    let first_day = oslo_today();
    let (gw, web) = start(true).await;
    let subject = dev_jobseeker(1).expect("synthetic jobseeker");
    grant_ips_consent(&gw, &subject).await;
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    nav.disclose_permitted(update(&gw, &subject, "=HYPERLINK(\"x\")", "synthetic note"))
        .await;
    let officer = web.client();
    officer.dev_login("officer").await;
    let token = officer.get("/officer").await.csrf();
    // A one-day search: from and until the same (inclusive) day (two days only if the test
    // runs across midnight in Oslo).
    let (first_day, today) = (first_day, oslo_today());
    let searched = officer
        .post(
            "/officer",
            &[
                ("csrf", &token),
                ("kind", "disclosure_permitted"),
                ("from", &first_day),
                ("until", &today),
            ],
        )
        .await;
    assert_eq!(searched.status, 303, "{}", searched.body);
    let csv = officer.get("/officer/results.csv").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("attachment")),
        "a download"
    );
    let row = csv.body.lines().nth(1).expect("one row");
    assert!(row.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{row}");
    assert!(!csv.body.contains(",=HYPERLINK"), "{}", csv.body);
    let json = officer.get("/officer/results.json").await;
    let entries: serde_json::Value = serde_json::from_str(&json.body).expect("JSON");
    assert_eq!(entries[0]["request_id"], "=HYPERLINK(\"x\")");
    web.stop().await;
    gw.stop().await;
}
