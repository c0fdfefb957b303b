//! Consents and audit events as plain sentences in the page's language: "Dev NAV Office may
//! send information about your benefits … to Dev IPS Team, to follow up your job search, until
//! 1.7.2027." Vocabulary terms the text table does not know (an operator's own) are shown as
//! their names.

use casegate_audit::entry::{Entry, EntryKind};
use casegate_consent::{
    Role,
    record::{ConsentRecord, Evidence, Party, Provision, ViewStatus},
};

use super::{Web, text::Tr, time};

/// "a, b and c" in the page's language.
pub(super) fn list(tr: &Tr, items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {} {last}", init.join(", "), tr.get("word.and")),
    }
}

/// A vocabulary term in words: the text of `{prefix}.{term}`, or the term itself.
pub(super) fn term(tr: &Tr, prefix: &str, term: &str) -> String {
    let key = format!("{prefix}.{term}");
    if tr.has(&key) {
        tr.get(&key)
    } else {
        term.replace('_', " ")
    }
}

/// A role in words.
pub(super) fn role(tr: &Tr, role: Role) -> String {
    term(tr, "role", role.as_str())
}

fn parties(web: &Web, tr: &Tr, parties: &[Party]) -> String {
    let names: Vec<String> = parties
        .iter()
        .map(|p| {
            let name = web.org_name(&p.orgnr.to_string());
            if p.roles.is_empty() {
                name
            } else {
                let roles: Vec<String> = p.roles.iter().map(|r| role(tr, *r)).collect();
                tr.fill(
                    "consent.party_roles",
                    &[("org", &name), ("roles", &list(tr, &roles))],
                )
            }
        })
        .collect();
    list(tr, &names)
}

/// One provision of a consent as a sentence, ending with the consent's end date.
pub(super) fn provision(web: &Web, tr: &Tr, provision: &Provision, end_micros: i64) -> String {
    let categories: Vec<String> = provision
        .categories
        .iter()
        .map(|c| term(tr, "category", c.as_str()))
        .collect();
    let purposes: Vec<String> = provision
        .purposes
        .iter()
        .map(|p| term(tr, "purpose", p.as_str()))
        .collect();
    tr.fill(
        "consent.sentence",
        &[
            ("senders", &parties(web, tr, &provision.senders)),
            ("categories", &list(tr, &categories)),
            ("recipients", &parties(web, tr, &provision.recipients)),
            ("purposes", &list(tr, &purposes)),
            ("end", &time::date(time::last_instant(end_micros), tr.lang)),
        ],
    )
}

/// Every provision of `record` as sentences.
pub(super) fn consent(web: &Web, tr: &Tr, record: &ConsentRecord) -> Vec<String> {
    record
        .provisions
        .iter()
        .map(|p| provision(web, tr, p, record.period.end.0))
        .collect()
}

/// A consent's status in words.
pub(super) fn status(tr: &Tr, status: ViewStatus) -> String {
    tr.get(match status {
        ViewStatus::Active => "status.active",
        ViewStatus::Withdrawn => "status.withdrawn",
        ViewStatus::Superseded => "status.superseded",
        ViewStatus::Expired => "status.expired",
    })
}

/// Who recorded a consent, and on what evidence.
pub(super) fn recorded(web: &Web, tr: &Tr, record: &ConsentRecord) -> String {
    let when = time::date_time(record.recorded_at.0, tr.lang);
    match &record.evidence {
        Evidence::Digital { .. } => tr.fill("evidence.digital", &[("time", &when)]),
        Evidence::SignedForm { reference, .. } => tr.fill(
            "evidence.signed_form",
            &[
                ("org", &web.org_name(&record.recorded_by.orgnr.to_string())),
                ("role", &role(tr, record.recorded_by.role)),
                ("reference", reference),
                ("time", &when),
            ],
        ),
        Evidence::Verbal { witness_role, .. } => tr.fill(
            "evidence.verbal",
            &[
                ("org", &web.org_name(&record.recorded_by.orgnr.to_string())),
                ("role", &role(tr, record.recorded_by.role)),
                ("witness", &role(tr, *witness_role)),
                ("time", &when),
            ],
        ),
    }
}

/// A refusal or purge reason in words (`reason.consent_withdrawn`, …).
pub(super) fn reason(tr: &Tr, code: &str) -> String {
    term(tr, "reason", code)
}

/// An audit event about the jobseeker, told to the jobseeker.
pub(super) fn event(web: &Web, tr: &Tr, entry: &Entry) -> String {
    let org = |o: Option<&str>| web.org_name(o.unwrap_or_default());
    let actor_org = entry
        .actor()
        .map(|a| web.org_name(&a.orgnr))
        .unwrap_or_default();
    let by_jobseeker = entry
        .actor()
        .is_some_and(|a| a.role == Role::Jobseeker.as_str());
    let by_officer = entry
        .actor()
        .is_some_and(|a| a.role == Role::PrivacyOfficer.as_str());
    let category = term(tr, "category", entry.category().unwrap_or_default());
    let purpose = term(tr, "purpose", entry.purpose().unwrap_or_default());
    let version = entry
        .consent()
        .map_or_else(String::new, |c| c.version.to_string());
    let values: [(&str, &str); 7] = [
        ("actor", &actor_org),
        ("sender", &org(entry.sender_orgnr())),
        ("recipient", &org(entry.recipient_orgnr())),
        ("category", &category),
        ("purpose", &purpose),
        ("version", &version),
        ("reason", &reason(tr, entry.reason().unwrap_or_default())),
    ];
    let key = match entry.kind() {
        EntryKind::ConsentGranted if by_jobseeker => "event.granted_by_you",
        EntryKind::ConsentGranted => "event.granted",
        EntryKind::ConsentWithdrawn if by_jobseeker => "event.withdrawn_by_you",
        EntryKind::ConsentWithdrawn => "event.withdrawn",
        EntryKind::DisclosurePermitted => "event.sent",
        EntryKind::NoteDelivered => "event.delivered",
        EntryKind::NoteAcknowledged => "event.acknowledged",
        EntryKind::NotePurged => match entry.reason() {
            Some("consent_withdrawn") => "event.purged_withdrawn",
            Some("ttl_elapsed") => "event.purged_ttl",
            Some("retention_elapsed") => "event.purged_retention",
            _ => "event.purged",
        },
        EntryKind::DisclosureRefused => "event.refused",
        EntryKind::DisclosureChecked if entry.reason().is_some() => "event.checked_no",
        EntryKind::DisclosureChecked => "event.checked_yes",
        EntryKind::ConsentsRead if by_jobseeker => "event.read_by_you",
        EntryKind::ConsentsRead => "event.read",
        EntryKind::SubjectReportIssued if by_jobseeker => "event.report_by_you",
        EntryKind::SubjectReportIssued if by_officer => "event.report_by_officer",
        EntryKind::SubjectReportIssued => "event.report",
        EntryKind::AuditQueried => "event.queried",
        EntryKind::GatewayStarted | EntryKind::KeyRotated => "event.other",
    };
    tr.fill(key, &values)
}

/// Whether an event is one step of a note (after its `disclosure permitted` entry).
pub(super) fn is_note_step(kind: EntryKind) -> bool {
    matches!(
        kind,
        EntryKind::NoteDelivered | EntryKind::NoteAcknowledged | EntryKind::NotePurged
    )
}
