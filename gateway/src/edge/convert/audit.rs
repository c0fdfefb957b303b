//! Audit queries, access reports and entries on the wire.

use casegate_audit::entry::{Actor, ConsentRef, Entry, EntryKind, Fields, QueryFilter};
use casegate_consent::{OrgNumber, SubjectId, record::Timestamp};
use casegate_proto::v1;

use super::{FieldError, Parsed, consent::orgnr, subject, timestamp, timestamp_to_wire};

/// Entries a query returns when it names no limit.
pub(crate) const DEFAULT_QUERY_LIMIT: u32 = 1_000;
/// The most entries one query may ask for; resume from the last index for more.
pub(crate) const MAX_QUERY_LIMIT: u32 = 10_000;

/// A parsed `QueryAuditRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditQuery {
    pub subject: Option<SubjectId>,
    pub orgnr: Option<OrgNumber>,
    pub from: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub kinds: Vec<EntryKind>,
    /// Reason codes (lower snake case); empty means any.
    pub reasons: Vec<String>,
    /// Whether each answer carries the entry's canonical bytes.
    pub include_entry_bytes: bool,
    pub start_index: u64,
    pub limit: u32,
}

impl AuditQuery {
    /// The filter as the `audit queried` entry records it: everything but the subject,
    /// which the entry carries as its pseudonym; times as RFC 3339 text.
    pub(crate) fn recorded(&self) -> QueryFilter {
        QueryFilter {
            subject: self.subject.is_some(),
            orgnr: self.orgnr.map(|o| o.to_string()),
            from: self.from.map(|t| rfc3339(t.0)),
            until: self.until.map(|t| rfc3339(t.0)),
            kinds: self.kinds.clone(),
            reasons: self.reasons.clone(),
            start_index: self.start_index,
            limit: self.limit,
        }
    }
}

/// RFC 3339 text of a time in microseconds since the epoch (UTC).
pub(crate) fn rfc3339(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{micros}us"))
}

fn optional<T>(text: &str, parse: impl FnOnce(&str) -> Parsed<T>) -> Parsed<Option<T>> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse(text).map(Some)
    }
}

pub(crate) fn kind(field: &str, value: i32) -> Parsed<EntryKind> {
    match u8::try_from(value).ok().and_then(EntryKind::from_code) {
        Some(kind) => Ok(kind),
        None if value == v1::EntryKind::Unspecified as i32 => {
            Err(FieldError::new(field, "a kind must be specified"))
        }
        None => Err(FieldError::new(
            field,
            format!("unknown entry kind value {value}"),
        )),
    }
}

pub(crate) fn kind_to_wire(kind: EntryKind) -> i32 {
    i32::from(kind.code())
}

pub(crate) fn query_request(wire: &v1::QueryAuditRequest) -> Parsed<AuditQuery> {
    let v1::QueryAuditRequest {
        subject_id,
        orgnr: org,
        from,
        until,
        kinds,
        start_index,
        limit,
        reasons,
        include_entry_bytes,
    } = wire;
    let subject = optional(subject_id, |t| subject("subject_id", t))?;
    let orgnr = optional(org, |t| orgnr("orgnr", t))?;
    let from = from
        .as_ref()
        .map(|t| timestamp("from", Some(t)))
        .transpose()?;
    let until = until
        .as_ref()
        .map(|t| timestamp("until", Some(t)))
        .transpose()?;
    if let (Some(f), Some(u)) = (from, until)
        && u <= f
    {
        return Err(FieldError::new("until", "must be after from"));
    }
    let kinds = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| kind(&format!("kinds[{i}]"), *k))
        .collect::<Parsed<Vec<_>>>()?;
    let reasons = reason_codes("reasons", reasons)?;
    let limit = match *limit {
        0 => DEFAULT_QUERY_LIMIT,
        n if n > MAX_QUERY_LIMIT => {
            return Err(FieldError::new(
                "limit",
                format!("must be at most {MAX_QUERY_LIMIT}; resume from the last index for more"),
            ));
        }
        n => n,
    };
    Ok(AuditQuery {
        subject,
        orgnr,
        from,
        until,
        kinds,
        reasons,
        include_entry_bytes: *include_entry_bytes,
        start_index: *start_index,
        limit,
    })
}

/// The most reason codes one filter may name.
const MAX_REASONS: usize = 32;

/// Reason codes as a filter names them: lower snake case, at most 64 characters each.
pub(crate) fn reason_codes(field: &str, wire: &[String]) -> Parsed<Vec<String>> {
    if wire.len() > MAX_REASONS {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_REASONS} reason codes"),
        ));
    }
    for (i, code) in wire.iter().enumerate() {
        let valid = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                "a reason code is lower snake case (e.g. consent_withdrawn), at most 64 characters",
            ));
        }
    }
    Ok(wire.to_vec())
}

pub(crate) fn report_request(wire: &v1::SubjectAccessReportRequest) -> Parsed<SubjectId> {
    let v1::SubjectAccessReportRequest { subject_id } = wire;
    subject("subject_id", subject_id)
}

/// The readable view of entry `index`: its typed event laid out as the wire's flat
/// `AuditEntry`, with the event's version-1 `detail` text.
pub(crate) fn entry_to_wire(index: u64, entry: &Entry, leaf_hash: &[u8]) -> v1::AuditEntry {
    let mut wire = v1::AuditEntry {
        index,
        kind: kind_to_wire(entry.kind()),
        time: Some(timestamp_to_wire(Timestamp(entry.time_micros))),
        leaf_hash: leaf_hash.to_vec(),
        ..v1::AuditEntry::default()
    };
    // The wire shows an entry as version 1 lays it out, whatever its kind.
    fields_to_wire(&mut wire, entry.fields());
    wire
}

fn actor_to_wire(actor: &Actor) -> v1::AuditActor {
    let Actor {
        orgnr,
        user_id,
        role,
        cert_sha256,
    } = actor;
    v1::AuditActor {
        orgnr: orgnr.clone(),
        user_id: user_id.clone(),
        role: role
            .parse()
            .map_or(v1::Role::Unspecified as i32, super::role_to_wire),
        certificate_sha256: cert_sha256.to_vec(),
    }
}

fn consent_to_wire(wire: &mut v1::AuditEntry, consent: &ConsentRef) {
    let ConsentRef {
        id,
        version,
        record_sha256,
    } = consent;
    wire.consent_id = id.clone();
    wire.consent_version = *version;
    wire.consent_record_hash = record_sha256.to_vec();
}

/// An entry's version-1 fields, field by field.
fn fields_to_wire(wire: &mut v1::AuditEntry, fields: Fields) {
    let Fields {
        actor,
        subject_pseudonym,
        consent,
        category,
        purpose,
        sender_orgnr,
        recipient_orgnr,
        content_sha256,
        reason,
        request_id,
        policy_version,
        disclosure_id,
        detail,
    } = fields;
    wire.actor = actor.as_ref().map(actor_to_wire);
    wire.subject_pseudonym = subject_pseudonym.map(|p| p.to_vec()).unwrap_or_default();
    if let Some(consent) = &consent {
        consent_to_wire(wire, consent);
    }
    wire.category = category.unwrap_or_default();
    wire.purpose = purpose.unwrap_or_default();
    wire.sender_orgnr = sender_orgnr.unwrap_or_default();
    wire.recipient_orgnr = recipient_orgnr.unwrap_or_default();
    wire.content_sha256 = content_sha256.map(|h| h.to_vec()).unwrap_or_default();
    wire.reason = reason.unwrap_or_default();
    wire.request_id = request_id.unwrap_or_default();
    wire.policy_version = policy_version.unwrap_or_default();
    wire.disclosure_id = disclosure_id.unwrap_or_default();
    wire.detail = detail.unwrap_or_default();
}
