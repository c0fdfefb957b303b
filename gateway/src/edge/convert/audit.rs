//! Audit queries, access reports and entries on the wire.

use casegate_audit::entry::{Entry, EntryKind};
use casegate_consent::{OrgNumber, Role, SubjectId, record::Timestamp};
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
    /// The filter as recorded in the `audit queried` entry: everything but the subject, which
    /// the entry carries as its pseudonym.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.subject.is_some() {
            parts.push("subject=<pseudonym>".to_owned());
        }
        if let Some(org) = self.orgnr {
            parts.push(format!("orgnr={org}"));
        }
        if let Some(t) = self.from {
            parts.push(format!("from={}", rfc3339(t.0)));
        }
        if let Some(t) = self.until {
            parts.push(format!("until={}", rfc3339(t.0)));
        }
        if !self.kinds.is_empty() {
            let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
            parts.push(format!("kinds={}", kinds.join(",")));
        }
        if !self.reasons.is_empty() {
            parts.push(format!("reasons={}", self.reasons.join(",")));
        }
        parts.push(format!("start_index={}", self.start_index));
        parts.push(format!("limit={}", self.limit));
        parts.join(" ")
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

/// The `detail` of a disclosure decision's entry: what the decision used beyond the entry's
/// own fields (the recipient role, whether an approval was attested), so it can be replayed.
pub(crate) fn disclosure_detail(
    recipient_role: Option<Role>,
    approval_attested: bool,
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(role) = recipient_role {
        parts.push(format!("recipient_role={role}"));
    }
    if approval_attested {
        parts.push("approval=attested".to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Reads [`disclosure_detail`] back: the recipient role and whether an approval was attested.
pub(crate) fn parse_disclosure_detail(
    detail: Option<&str>,
) -> Result<(Option<Role>, bool), String> {
    let (mut role, mut approval) = (None, false);
    for part in detail.unwrap_or_default().split_whitespace() {
        match part.split_once('=') {
            Some(("recipient_role", r)) => {
                role = Some(
                    r.parse()
                        .map_err(|_| format!("unknown recipient role {r:?}"))?,
                )
            }
            Some(("approval", "attested")) => approval = true,
            _ => return Err(format!("unexpected detail {part:?}")),
        }
    }
    Ok((role, approval))
}

/// The readable view of entry `index`.
pub(crate) fn entry_to_wire(index: u64, entry: &Entry, leaf_hash: &[u8]) -> v1::AuditEntry {
    let Entry {
        kind,
        time_micros,
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
    } = entry;
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    v1::AuditEntry {
        index,
        kind: kind_to_wire(*kind),
        time: Some(timestamp_to_wire(Timestamp(*time_micros))),
        actor: actor.as_ref().map(|a| v1::AuditActor {
            orgnr: a.orgnr.clone(),
            user_id: a.user_id.clone(),
            role: a
                .role
                .parse()
                .map_or(v1::Role::Unspecified as i32, super::role_to_wire),
            certificate_sha256: a.cert_sha256.to_vec(),
        }),
        subject_pseudonym: subject_pseudonym.map(|p| p.to_vec()).unwrap_or_default(),
        consent_id: consent.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        consent_version: consent.as_ref().map_or(0, |c| c.version),
        consent_record_hash: consent
            .as_ref()
            .map(|c| c.record_sha256.to_vec())
            .unwrap_or_default(),
        category: text(category),
        purpose: text(purpose),
        sender_orgnr: text(sender_orgnr),
        recipient_orgnr: text(recipient_orgnr),
        content_sha256: content_sha256.map(|h| h.to_vec()).unwrap_or_default(),
        reason: text(reason),
        request_id: text(request_id),
        policy_version: text(policy_version),
        disclosure_id: text(disclosure_id),
        leaf_hash: leaf_hash.to_vec(),
        detail: text(detail),
    }
}
