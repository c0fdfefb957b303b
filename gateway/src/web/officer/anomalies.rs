//! Anomaly views: patterns from one audited `SummarizeAudit`, each with the search that shows
//! its entries.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Query, State},
    response::Response,
};
use casegate_audit::entry::EntryKind;
use casegate_proto::v1;
use serde::Deserialize;
use tonic::Status;

use crate::{
    client::output::hex,
    web::{
        Web,
        chrome::{Chrome, failure, render},
        sentence,
        session::Officer,
        time,
    },
};

/// One anomaly view: a heading, an explanation, its rows and the search that shows the entries.
#[derive(Debug, Clone)]
struct View {
    id: &'static str,
    title: String,
    text: String,
    rows: Vec<(String, String, u64)>,
    kinds: Vec<&'static str>,
    reasons: Vec<&'static str>,
}

#[derive(Debug, Template)]
#[template(path = "anomalies.html")]
struct AnomaliesPage {
    c: Chrome,
    views: Vec<View>,
    period: String,
    from: String,
    counted: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AnomaliesQuery {
    days: Option<u32>,
}

/// `GET /officer/anomalies?days=30`: patterns worth a look, from one audited summary.
pub(crate) async fn anomalies(
    State(web): State<Arc<Web>>,
    Officer(person, s): Officer,
    Query(q): Query<AnomaliesQuery>,
) -> Response {
    let c = Chrome::new(&web, &s, "anomalies.title", "/officer/anomalies").await;
    let days = q.days.unwrap_or(30).clamp(1, 366);
    let from = crate::base::clock::now_micros() - i64::from(days) * 86_400_000_000;
    let answer = async {
        Ok::<_, Status>(
            web.upstream
                .audit(&person)?
                .summarize_audit(v1::SummarizeAuditRequest {
                    from: Some(crate::edge::convert::timestamp_to_wire(
                        casegate_consent::record::Timestamp(from),
                    )),
                    by_subject: true,
                    ..Default::default()
                })
                .await?
                .into_inner(),
        )
    }
    .await;
    let summary = match answer {
        Ok(a) => a,
        Err(status) => return failure(c, &status),
    };
    let kind_of = |n: &v1::AuditCount| u8::try_from(n.kind).ok().and_then(EntryKind::from_code);
    let t = c.t;
    let tally = |pick: &dyn Fn(&v1::AuditCount) -> bool,
                 label: &dyn Fn(&v1::AuditCount) -> (String, String)| {
        let mut out: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for n in summary.counts.iter().filter(|n| pick(n)) {
            *out.entry(label(n)).or_default() += n.count;
        }
        let mut rows: Vec<(String, String, u64)> =
            out.into_iter().map(|((a, b), n)| (a, b, n)).collect();
        rows.sort_by(|x, y| y.2.cmp(&x.2).then(x.cmp(y)));
        rows.truncate(20);
        rows
    };
    let org_day = |n: &v1::AuditCount| (web.org_name(&n.orgnr), n.day.clone());
    let refused = |reason: &'static str| {
        move |n: &v1::AuditCount| {
            kind_of(n) == Some(EntryKind::DisclosureRefused) && n.reason == reason
        }
    };
    let jobseeker = |n: &v1::AuditCount| {
        (
            t.fill(
                "anomalies.jobseeker",
                &[(
                    "pseudonym",
                    &hex(&n.subject_pseudonym[..n.subject_pseudonym.len().min(4)]),
                )],
            ),
            n.day.clone(),
        )
    };
    // Refusals for one reason, per `label`, with the search that lists them.
    let refusal = |id: &'static str,
                   (title, text): (&str, &str),
                   reason: &'static str,
                   label: &dyn Fn(&v1::AuditCount) -> (String, String)| View {
        id,
        title: t.get(title),
        text: t.get(text),
        rows: tally(&refused(reason), label),
        kinds: vec!["disclosure_refused"],
        reasons: vec![reason],
    };
    let views = vec![
        refusal(
            "after-withdrawal",
            (
                "anomalies.after_withdrawal",
                "anomalies.after_withdrawal_text",
            ),
            "consent_withdrawn",
            &org_day,
        ),
        refusal(
            "no-consent-sender",
            (
                "anomalies.no_consent_sender",
                "anomalies.no_consent_sender_text",
            ),
            "no_consent",
            &org_day,
        ),
        refusal(
            "no-consent-jobseeker",
            (
                "anomalies.no_consent_jobseeker",
                "anomalies.no_consent_jobseeker_text",
            ),
            "no_consent",
            &jobseeker,
        ),
        refusal(
            "approval-missing",
            (
                "anomalies.approval_missing",
                "anomalies.approval_missing_text",
            ),
            "approval_missing",
            &org_day,
        ),
        View {
            id: "purged",
            title: t.get("anomalies.purged"),
            text: t.get("anomalies.purged_text"),
            rows: tally(
                &|n| kind_of(n) == Some(EntryKind::NotePurged) && n.reason != "retention_elapsed",
                &|n| (sentence::reason(&t, &n.reason), n.day.clone()),
            ),
            kinds: vec!["note_purged"],
            reasons: vec!["consent_withdrawn", "ttl_elapsed"],
        },
        View {
            id: "officer-lookups",
            title: t.get("anomalies.lookups"),
            text: t.get("anomalies.lookups_text"),
            rows: tally(
                &|n| {
                    kind_of(n) == Some(EntryKind::SubjectReportIssued)
                        && n.actor_role == v1::Role::PrivacyOfficer as i32
                },
                &org_day,
            ),
            kinds: vec!["subject_report_issued"],
            reasons: vec![],
        },
        View {
            id: "off-hours",
            title: t.get("anomalies.off_hours"),
            text: t.get("anomalies.off_hours_text"),
            rows: tally(
                &|n| {
                    n.outside_office_hours
                        && !matches!(
                            kind_of(n),
                            Some(EntryKind::GatewayStarted | EntryKind::KeyRotated)
                        )
                },
                &|n| {
                    (
                        format!(
                            "{} – {}",
                            web.org_name(&n.orgnr),
                            kind_of(n).map_or_else(String::new, |k| sentence::term(
                                &t,
                                "kind",
                                k.as_str()
                            ))
                        ),
                        n.day.clone(),
                    )
                },
            ),
            kinds: vec![],
            reasons: vec![],
        },
    ];
    render(&AnomaliesPage {
        period: t.fill("anomalies.period", &[("days", &days.to_string())]),
        from: time::input_date(from),
        counted: t.fill(
            "anomalies.counted",
            &[
                ("entries", &summary.entries.to_string()),
                ("size", &summary.tree_size.to_string()),
            ],
        ),
        views,
        c,
    })
}
