//! Audit entries and verified reports as an officer reads them: rows for tables and CSV
//! (RFC 4180, every cell made safe by [`crate::client::render`]), and JSON. Shared by the command
//! line and the officer pages.

use base64::{Engine, engine::general_purpose::STANDARD};
use casegate_consent::SubjectId;
use casegate_proto::v1::{self, AuditEntry};
use serde_json::{Value, json};

use super::{
    render,
    report::{self, VerifiedReport},
};
use crate::edge::convert::audit::rfc3339;

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn wire_time(t: &prost_types::Timestamp) -> String {
    rfc3339(t.seconds * 1_000_000 + i64::from(t.nanos / 1000))
}

pub(crate) fn kind_name(kind: i32) -> String {
    u8::try_from(kind)
        .ok()
        .and_then(casegate_audit::entry::EntryKind::from_code)
        .map_or_else(|| format!("kind {kind}"), |k| k.as_str().to_owned())
}

pub(crate) fn role_name(role: i32) -> &'static str {
    v1::Role::try_from(role).map_or("", |r| match r {
        v1::Role::Unspecified => "",
        v1::Role::Clinician => "clinician",
        v1::Role::NavCounsellor => "nav_counsellor",
        v1::Role::EmploymentSpecialist => "employment_specialist",
        v1::Role::PrivacyOfficer => "privacy_officer",
        v1::Role::Jobseeker => "jobseeker",
        v1::Role::Admin => "admin",
    })
}

/// One printed line of entries.
pub(crate) struct Row(pub(crate) [String; 13]);

pub(crate) const HEADER: [&str; 13] = [
    "index",
    "time",
    "kind",
    "actor",
    "user",
    "sender",
    "recipient",
    "category",
    "purpose",
    "consent",
    "reason",
    "request_id",
    "detail",
];

impl Row {
    pub(crate) fn of(e: &AuditEntry) -> Self {
        let actor = e.actor.as_ref().map_or_else(String::new, |a| {
            format!("{} {}", a.orgnr, role_name(a.role))
        });
        Row([
            e.index.to_string(),
            e.time.as_ref().map_or_else(String::new, wire_time),
            kind_name(e.kind),
            actor.trim().to_owned(),
            e.actor
                .as_ref()
                .map_or_else(String::new, |a| a.user_id.clone()),
            e.sender_orgnr.clone(),
            e.recipient_orgnr.clone(),
            e.category.clone(),
            e.purpose.clone(),
            if e.consent_id.is_empty() {
                String::new()
            } else {
                format!("{} v{}", e.consent_id, e.consent_version)
            },
            e.reason.clone(),
            e.request_id.clone(),
            e.detail.clone(),
        ])
    }
}

/// The report's events, each rendered from its verified bytes.
pub(crate) fn report_rows(report: &VerifiedReport) -> Vec<Row> {
    report.events.iter().map(|e| Row::of(&e.view())).collect()
}

pub(crate) fn csv(rows: &[Row]) -> String {
    let mut out = format!("{}\r\n", HEADER.join(","));
    for row in rows {
        let cells: Vec<String> = row.0.iter().map(|c| render::csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

pub(crate) fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "index": e.index,
        "kind": kind_name(e.kind),
        "time": e.time.as_ref().map(wire_time),
        "actor": e.actor.as_ref().map(|a| json!({
            "orgnr": a.orgnr,
            "user_id": a.user_id,
            "role": role_name(a.role),
            "certificate_sha256": hex(&a.certificate_sha256),
        })),
        "subject_pseudonym": hex(&e.subject_pseudonym),
        "consent_id": e.consent_id,
        "consent_version": e.consent_version,
        "consent_record_hash": hex(&e.consent_record_hash),
        "category": e.category,
        "purpose": e.purpose,
        "sender_orgnr": e.sender_orgnr,
        "recipient_orgnr": e.recipient_orgnr,
        "content_sha256": hex(&e.content_sha256),
        "reason": e.reason,
        "request_id": e.request_id,
        "policy_version": e.policy_version,
        "disclosure_id": e.disclosure_id,
        "detail": e.detail,
        "leaf_hash": hex(&e.leaf_hash),
    })
}

pub(crate) fn report_json(report: &VerifiedReport, subject: &SubjectId) -> Value {
    let time = |t: casegate_consent::record::Timestamp| rfc3339(t.0);
    json!({
        "subject_id": subject.expose(),
        "issued_at": rfc3339(report.issued.entry.time_micros),
        "issued_by_entry": report.issued.index,
        "verifier_key": report.verifier_key,
        "checkpoint": {
            "signed_note": report.signed_note,
            "origin": report.checkpoint.origin,
            "tree_size": report.checkpoint.size,
            "root_hash": hex(&report.checkpoint.root),
        },
        "consent_versions": report
            .consents
            .iter()
            .map(|c| serde_json::from_slice::<Value>(&c.canonical).unwrap_or(Value::Null))
            .collect::<Vec<_>>(),
        "consent_status": report.consents.iter().map(|c| json!({
            "consent_id": c.record.id.to_string(),
            "version": c.record.version,
            "status": report::status_name(c.status),
            "withdrawn_at": c.withdrawn_at.map(time),
            "record_hash": hex(&c.record_hash),
            "pinned_by_entry": c.pinned_by,
        })).collect::<Vec<_>>(),
        "events": report.events.iter().map(|ev| json!({
            "entry": entry_json(&ev.view()),
            "entry_bytes": STANDARD.encode(&ev.bytes),
            "inclusion_proof": {
                "leaf_index": ev.index,
                "tree_size": report.checkpoint.size,
                "hashes": ev.proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            },
        })).collect::<Vec<_>>(),
    })
}
