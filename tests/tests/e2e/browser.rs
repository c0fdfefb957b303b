//! The web tier in a real browser (headless Chromium through WebDriver): the IPS scenario end
//! to end — a jobseeker grants by the form and withdraws with the keyboard alone, NAV discloses
//! and is then refused over gRPC, an officer finds the refusal, opens its proof, exports CSV and
//! checks integrity against an older checkpoint — with axe-core's WCAG 2.1 A/AA rules run on
//! every page at 1280 and 320 CSS pixels, and screenshots written to `target/screenshots`.

use casegate::web::dev_jobseeker;
use casegate_tests::{
    TestGateway,
    browser::{self, Browser},
    scenario::{reason, update},
    web::{CONFIG, TestWeb},
};
use fantoccini::key::Key;
use serde_json::json;

/// Checks the page at both widths and keeps its screenshots; returns axe's violations.
async fn check(b: &Browser, axe: &str, name: &str) -> Vec<String> {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&folder).expect("screenshot folder");
    let mut violations = Vec::new();
    for width in [320, 1280] {
        b.resize(width).await;
        for v in b.axe(axe).await {
            violations.push(format!("{name} at {width} px: {v}"));
        }
        std::fs::write(
            folder.join(format!("{name}-{width}.png")),
            b.screenshot().await,
        )
        .expect("write screenshot");
    }
    violations
}

async fn wait_for_title(b: &Browser, part: &str) {
    for _ in 0..100 {
        if b.title().await.contains(part) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the page titled {:?} is not {part:?}", b.title().await);
}

/// The form's select `css` set by typing, as a keyboard user does; checks what it chose.
async fn choose(b: &Browser, css: &str, typed: &str, value: &str) {
    b.tab_to(css).await;
    b.press(typed).await;
    let chosen = b
        .client
        .execute(
            "return document.querySelector(arguments[0]).value;",
            vec![json!(css)],
        )
        .await
        .expect("script");
    assert_eq!(chosen, json!(value), "typing {typed:?} into {css}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ips_scenario_in_a_real_browser() {
    let axe = match browser::axe_script() {
        Ok(script) => script,
        Err(e) => return browser::unavailable(&e),
    };
    let Some(b) = Browser::start(1280).await else {
        return;
    };
    let gw = TestGateway::start_with(CONFIG).await;
    let web = TestWeb::start(&gw, true).await;
    let subject = dev_jobseeker(0).expect("synthetic jobseeker");
    let mut violations = Vec::new();

    // axe-core finds what it should: a page without a language, a title or an image's text.
    b.goto("data:text/html,<html><body><img src='x.png'></body></html>")
        .await;
    let found = b.axe(&axe).await;
    for rule in ["html-has-lang", "document-title", "image-alt"] {
        assert!(
            found.iter().any(|v| v.starts_with(rule)),
            "{rule} not in {found:?}"
        );
    }

    // The jobseeker logs in with the development picker, by keyboard.
    b.goto(&web.url("/")).await;
    violations.extend(check(&b, &axe, "start").await);
    b.tab_to("a[href='/dev/login']").await;
    b.press(&Key::Enter.to_string()).await;
    wait_for_title(&b, "Velg testperson").await;
    violations.extend(check(&b, &axe, "dev-login").await);
    b.tab_to("#who-jobseeker-1").await;
    b.press(" ").await;
    b.tab_to("form[action='/dev/login'] button").await;
    b.press(&Key::Enter.to_string()).await;
    wait_for_title(&b, "Mine samtykker").await;

    // Grants by the form, keyboard only: form → plain-language preview → confirm.
    b.tab_to("main a[href='/me/consents/new']").await;
    b.press(&Key::Enter.to_string()).await;
    wait_for_title(&b, "Gi samtykke").await;
    violations.extend(check(&b, &axe, "grant-form").await);
    // Sent empty: the form again, with an error summary whose links lead to the fields.
    b.click("form[action='/me/consents/preview'] button").await;
    wait_for_title(&b, "Feil: Gi samtykke").await;
    let summary = b.text().await;
    assert!(summary.contains("Dette må rettes") && summary.contains("Velg hvem som kan dele"));
    violations.extend(check(&b, &axe, "grant-form-errors").await);
    b.click("#error-summary + ul a[href='#sender']").await;
    let focused = b
        .client
        .execute("return document.activeElement.id;", Vec::new())
        .await
        .expect("script");
    assert_eq!(
        focused,
        json!("sender"),
        "the summary's link leads to its field"
    );
    choose(&b, "#sender", "Test n", &gw.org("nav").orgnr).await;
    choose(&b, "#recipient", "Test i", &gw.org("ips").orgnr).await;
    b.tab_to("input[name=category][value=benefit_counselling]")
        .await;
    b.press(" ").await;
    b.tab_to("input[name=purpose][value=ips_follow_up]").await;
    b.press(" ").await;
    b.tab_to("form[action='/me/consents/preview'] button").await;
    b.press(&Key::Enter.to_string()).await;
    wait_for_title(&b, "Se over samtykket").await;
    let preview = b.text().await;
    assert!(
        preview.contains("Test nav kan sende opplysninger om ytelsene dine")
            && preview.contains("til Test ips"),
        "{preview}"
    );
    violations.extend(check(&b, &axe, "grant-preview").await);
    b.tab_to("form[action='/me/consents'] button").await;
    b.press(&Key::Enter.to_string()).await;
    wait_for_title(&b, "Samtykke").await;
    assert!(b.text().await.contains("Samtykket er registrert"));
    let consent_url = b.client.current_url().await.expect("url").to_string();

    // NAV discloses over gRPC; the jobseeker sees it in "who received what".
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let receipt = nav
        .disclose_permitted(update(&gw, &subject, "browser-1", "synthetic benefit note"))
        .await;
    let older = receipt
        .audit
        .and_then(|a| a.checkpoint)
        .expect("a checkpoint in the receipt")
        .signed_note;
    b.goto(&web.url("/me")).await;
    violations.extend(check(&b, &axe, "my-consents").await);
    b.goto(&format!("{consent_url}/change")).await;
    wait_for_title(&b, "Endre samtykke").await;
    violations.extend(check(&b, &axe, "change-form").await);
    b.goto(&web.url("/me/received/print")).await;
    violations.extend(check(&b, &axe, "received-print").await);
    b.goto(&web.url("/no/such/page")).await;
    violations.extend(check(&b, &axe, "not-found").await);
    b.goto(&web.url("/me/received")).await;
    let received = b.text().await;
    assert!(
        received.contains("Test nav sendte opplysninger om ytelsene dine"),
        "{received}"
    );
    assert!(received.contains("Spørsmål om dette?"), "{received}");
    violations.extend(check(&b, &axe, "received").await);

    // Withdraws, keyboard only: confirmation page, then the result with the stopped note.
    b.goto(&consent_url).await;
    violations.extend(check(&b, &axe, "consent").await);
    b.tab_to("a[href$='/withdraw']").await;
    b.press(&Key::Enter.to_string()).await;
    wait_for_title(&b, "Trekk tilbake samtykke").await;
    let confirm = b.text().await;
    for said in [
        "Det gjelder med en gang.",
        "blir stoppet og slettet",
        "kan ikke hentes tilbake",
        "Du trenger ikke å oppgi noen grunn.",
    ] {
        assert!(confirm.contains(said), "{said:?} not in {confirm}");
    }
    violations.extend(check(&b, &axe, "withdraw-confirm").await);
    b.tab_to("form button.danger").await;
    b.press(&Key::Enter.to_string()).await;
    wait_for_title(&b, "Samtykket er trukket tilbake").await;
    let result = b.text().await;
    assert!(
        result.contains("1 notat som ikke var levert, ble stoppet."),
        "{result}"
    );
    violations.extend(check(&b, &axe, "withdrawn").await);

    // NAV's next attempt is refused.
    let refused = nav
        .disclosure
        .disclose(update(&gw, &subject, "=HYPERLINK(\"x\")", "another note"))
        .await
        .expect_err("refused after the withdrawal");
    assert_eq!(reason(&refused), "consent_withdrawn");

    // The officer logs in and finds the refusal among attempts after withdrawal.
    b.click("form[action='/logout'] button").await;
    wait_for_title(&b, "Samtykker og innsyn").await;
    b.goto(&web.url("/dev/login")).await;
    b.click("#who-officer").await;
    b.click("form[action='/dev/login'] button").await;
    wait_for_title(&b, "Søk i revisjonsloggen").await;
    violations.extend(check(&b, &axe, "officer-search").await);
    b.goto(&web.url("/officer/anomalies")).await;
    let anomalies = b.text().await;
    assert!(
        anomalies.contains("Forsøk etter tilbaketrekking"),
        "{anomalies}"
    );
    violations.extend(check(&b, &axe, "officer-anomalies").await);
    b.click("section[aria-labelledby='after-withdrawal'] form button")
        .await;
    wait_for_title(&b, "Søkeresultat").await;
    let results = b.text().await;
    assert!(results.contains("1 oppføringer"), "{results}");
    assert!(
        results.contains("samtykket er trukket tilbake"),
        "{results}"
    );
    violations.extend(check(&b, &axe, "officer-results").await);
    b.click("tbody a").await;
    wait_for_title(&b, "Loggoppføring").await;
    let entry = b.text().await;
    assert!(entry.contains("disclosure_refused"), "{entry}");
    assert!(
        entry.contains("inklusjonsbeviset for kontrollsummen av dem er kontrollert mot det signerte sjekkpunktet"),
        "{entry}"
    );
    violations.extend(check(&b, &axe, "officer-entry").await);

    // The CSV export, downloaded in the officer's session: the formula cell is neutralised.
    // (The page's CSP allows no script requests, so it is fetched outside the page.)
    let cookie = b
        .client
        .get_named_cookie(casegate::web::SESSION_COOKIE)
        .await
        .expect("the session cookie");
    let download = web.client();
    download.use_cookie(cookie.name(), cookie.value());
    let csv = download.get("/officer/results.csv").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.body.contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "{}",
        csv.body
    );

    // Integrity against the older checkpoint from NAV's receipt.
    b.goto(&web.url("/officer/integrity")).await;
    violations.extend(check(&b, &axe, "officer-integrity").await);
    b.client
        .find(fantoccini::Locator::Css("#checkpoint"))
        .await
        .expect("textarea")
        .send_keys(&older)
        .await
        .expect("paste");
    b.click("form[action='/officer/integrity'] button").await;
    wait_for_title(&b, "Loggens integritet").await;
    let integrity = b.text().await;
    assert!(
        integrity.contains("bygger videre på sjekkpunktet"),
        "{integrity}"
    );

    // The export file verifies offline, consistent with the older checkpoint.
    let export = download.get("/officer/integrity/export").await;
    assert_eq!(export.status, 200);
    let vkey = casegate_audit::checkpoint::Verifier::from_vkey(
        &b.client
            .find(fantoccini::Locator::Css("dd.hash:last-of-type"))
            .await
            .expect("the verifier key on the page")
            .text()
            .await
            .expect("text"),
    )
    .expect("a verifier key");
    let verified = casegate_audit::verify::verify_export(&export.body, &[vkey], Some(&older))
        .expect("the export verifies");
    assert!(
        verified.entries > 10 && verified.consistent_with.is_some(),
        "{verified:?}"
    );

    b.goto(&web.url("/officer/report")).await;
    violations.extend(check(&b, &axe, "officer-report").await);
    b.client
        .find(fantoccini::Locator::Css("#subject"))
        .await
        .expect("field")
        .send_keys(&subject.expose())
        .await
        .expect("type");
    b.click("form[action='/officer/report'] button").await;
    wait_for_title(&b, "Kontrollert innsynsrapport").await;
    let report = b.text().await;
    assert!(
        report.contains("er kontrollert mot loggens sjekkpunkt"),
        "{report}"
    );
    assert!(
        !report.contains(&subject.expose()),
        "the identity number shown unmasked"
    );
    violations.extend(check(&b, &axe, "officer-report-result").await);
    b.close().await;
    assert!(
        violations.is_empty(),
        "axe found:\n{}",
        violations.join("\n")
    );
    web.stop().await;
    gw.stop().await;
}
