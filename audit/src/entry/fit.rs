//! Between typed events and the version-1 fields: [`fields`] lays an event out as version 1
//! does (its facts beyond the fixed fields as the `detail` text the gateway has always
//! written), and [`event`] reads fields back into the one event that lays out to exactly
//! them, or says why none does.

use super::{
    Actor, ConsentRef, EntryKind,
    event::{
        Access, Answer, AuditQueried, AuditQuery, ConsentChange, ConsentRead, ConsentsRead,
        DecisionTerms, DisclosureChecked, DisclosurePermitted, DisclosureRefused, Event,
        GatewayStarted, KeyRotated, Login, NoteHandled, NotePurged, NoteRef, QueryFilter, Scope,
        SubjectReportIssued, SummaryFilter,
    },
    layout::Fields,
};

const STARTED: &str = "casegate ";
const KEY_ROTATED: &str = "audit checkpoint key ";
const REPLACED_BY: &str = " replaced by ";

/// The kind of `event` (an unfitted entry's recorded kind).
pub(super) fn kind(event: &Event) -> EntryKind {
    match event {
        Event::ConsentGranted(_) => EntryKind::ConsentGranted,
        Event::ConsentWithdrawn(_) => EntryKind::ConsentWithdrawn,
        Event::DisclosurePermitted(_) => EntryKind::DisclosurePermitted,
        Event::DisclosureRefused(_) => EntryKind::DisclosureRefused,
        Event::NoteDelivered(_) => EntryKind::NoteDelivered,
        Event::NoteAcknowledged(_) => EntryKind::NoteAcknowledged,
        Event::NotePurged(_) => EntryKind::NotePurged,
        Event::AuditQueried(_) => EntryKind::AuditQueried,
        Event::SubjectReportIssued(_) => EntryKind::SubjectReportIssued,
        Event::GatewayStarted(_) => EntryKind::GatewayStarted,
        Event::KeyRotated(_) => EntryKind::KeyRotated,
        Event::DisclosureChecked(_) => EntryKind::DisclosureChecked,
        Event::ConsentsRead(_) => EntryKind::ConsentsRead,
        Event::Unfitted(u) => u.kind,
    }
}

// === event → fields ===

/// `event` as version 1 lays it out.
pub(super) fn fields(event: &Event) -> Fields {
    match event {
        Event::ConsentGranted(c) | Event::ConsentWithdrawn(c) => {
            let ConsentChange {
                actor,
                subject_pseudonym,
                consent,
                policy_version,
                login,
            } = c;
            Fields {
                actor: Some(actor.clone()),
                subject_pseudonym: Some(*subject_pseudonym),
                consent: Some(consent.clone()),
                policy_version: Some(policy_version.clone()),
                detail: with_login(None, login.as_ref()),
                ..Fields::default()
            }
        }
        Event::DisclosurePermitted(p) => {
            let DisclosurePermitted {
                terms,
                consent,
                recipient_role,
                approval_attested,
                content_sha256,
                request_id,
                disclosure_id,
            } = p;
            Fields {
                consent: Some(consent.clone()),
                content_sha256: Some(*content_sha256),
                request_id: Some(request_id.clone()),
                disclosure_id: Some(disclosure_id.clone()),
                detail: disclosure_detail(recipient_role.as_deref(), *approval_attested),
                ..terms_fields(terms)
            }
        }
        Event::DisclosureRefused(r) => {
            let DisclosureRefused {
                terms,
                reason,
                nearest_consent,
                recipient_role,
                approval_attested,
                content_sha256,
                request_id,
            } = r;
            Fields {
                consent: nearest_consent.clone(),
                reason: Some(reason.clone()),
                content_sha256: Some(*content_sha256),
                request_id: Some(request_id.clone()),
                detail: disclosure_detail(recipient_role.as_deref(), *approval_attested),
                ..terms_fields(terms)
            }
        }
        Event::DisclosureChecked(DisclosureChecked { terms, answer }) => {
            let (consent, reason) = match answer {
                Answer::Permit(c) => (Some(c.clone()), None),
                Answer::Refuse(r) => (None, Some(r.clone())),
            };
            Fields {
                consent,
                reason,
                ..terms_fields(terms)
            }
        }
        Event::NoteDelivered(NoteHandled { actor, note })
        | Event::NoteAcknowledged(NoteHandled { actor, note }) => Fields {
            actor: Some(actor.clone()),
            ..note_fields(note)
        },
        Event::NotePurged(NotePurged {
            actor,
            note,
            reason,
        }) => Fields {
            actor: actor.clone(),
            reason: Some(reason.clone()),
            ..note_fields(note)
        },
        Event::AuditQueried(AuditQueried {
            actor,
            subject_pseudonym,
            access,
            login,
        }) => {
            let (reason, detail) = match access {
                Access::Answered(AuditQuery::Entries(filter, scope)) => (
                    None,
                    Some(format!("{} {}", describe(filter), scope_text(scope))),
                ),
                Access::Answered(AuditQuery::Summary(filter, scope)) => (
                    None,
                    Some(format!("{} {}", summary(filter), scope_text(scope))),
                ),
                Access::Refused(reason) => (Some(reason.clone()), None),
            };
            Fields {
                actor: Some(actor.clone()),
                subject_pseudonym: *subject_pseudonym,
                reason,
                detail: with_login(detail, login.as_ref()),
                ..Fields::default()
            }
        }
        Event::SubjectReportIssued(SubjectReportIssued {
            actor,
            subject_pseudonym,
            access,
            login,
        }) => {
            let (reason, detail) = match access {
                Access::Answered(scope) => (None, Some(scope_text(scope))),
                Access::Refused(reason) => (Some(reason.clone()), None),
            };
            Fields {
                actor: Some(actor.clone()),
                subject_pseudonym: Some(*subject_pseudonym),
                reason,
                detail: with_login(detail, login.as_ref()),
                ..Fields::default()
            }
        }
        Event::GatewayStarted(GatewayStarted { version }) => Fields {
            detail: Some(format!("{STARTED}{version}")),
            ..Fields::default()
        },
        Event::KeyRotated(KeyRotated { old_key, new_key }) => Fields {
            detail: Some(format!("{KEY_ROTATED}{old_key}{REPLACED_BY}{new_key}")),
            ..Fields::default()
        },
        Event::ConsentsRead(ConsentsRead {
            actor,
            subject_pseudonym,
            read,
            login,
        }) => {
            let (consent, reason, detail) = match read {
                ConsentRead::Get(c) => (Some(c.clone()), None, "get_consent".to_owned()),
                ConsentRead::GetRefused { consent_id, reason } => (
                    None,
                    Some(reason.clone()),
                    format!("get_consent {consent_id}"),
                ),
                ConsentRead::List { shown } => (None, None, format!("list_consents shown={shown}")),
                ConsentRead::ListRefused(reason) => {
                    (None, Some(reason.clone()), "list_consents".to_owned())
                }
            };
            Fields {
                actor: Some(actor.clone()),
                subject_pseudonym: *subject_pseudonym,
                consent,
                reason,
                detail: with_login(Some(detail), login.as_ref()),
                ..Fields::default()
            }
        }
        Event::Unfitted(u) => u.fields.clone(),
    }
}

fn terms_fields(terms: &DecisionTerms) -> Fields {
    let DecisionTerms {
        actor,
        subject_pseudonym,
        category,
        purpose,
        sender_orgnr,
        recipient_orgnr,
        policy_version,
    } = terms;
    Fields {
        actor: Some(actor.clone()),
        subject_pseudonym: Some(*subject_pseudonym),
        category: Some(category.clone()),
        purpose: Some(purpose.clone()),
        sender_orgnr: Some(sender_orgnr.clone()),
        recipient_orgnr: Some(recipient_orgnr.clone()),
        policy_version: Some(policy_version.clone()),
        ..Fields::default()
    }
}

fn note_fields(note: &NoteRef) -> Fields {
    let NoteRef {
        disclosure_id,
        subject_pseudonym,
        consent,
        category,
        purpose,
        sender_orgnr,
        recipient_orgnr,
        content_sha256,
        request_id,
        policy_version,
    } = note;
    Fields {
        subject_pseudonym: Some(*subject_pseudonym),
        consent: Some(consent.clone()),
        category: Some(category.clone()),
        purpose: Some(purpose.clone()),
        sender_orgnr: Some(sender_orgnr.clone()),
        recipient_orgnr: Some(recipient_orgnr.clone()),
        content_sha256: Some(*content_sha256),
        request_id: Some(request_id.clone()),
        policy_version: Some(policy_version.clone()),
        disclosure_id: Some(disclosure_id.clone()),
        ..Fields::default()
    }
}

/// `text` followed by the login, if any (either alone if the other is absent).
fn with_login(text: Option<String>, login: Option<&Login>) -> Option<String> {
    let login = login.map(|l| match &l.acr {
        Some(acr) => format!("login={} acr={acr}", l.idp),
        None => format!("login={}", l.idp),
    });
    match (text, login) {
        (Some(text), Some(login)) => Some(format!("{text} {login}")),
        (text, login) => text.or(login),
    }
}

fn disclosure_detail(recipient_role: Option<&str>, approval_attested: bool) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(role) = recipient_role {
        parts.push(format!("recipient_role={role}"));
    }
    if approval_attested {
        parts.push("approval=attested".to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::All => "scope=all".to_owned(),
        Scope::Org(org) => format!("scope=org:{org}"),
    }
}

fn kinds_text(kinds: &[EntryKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    names.join(",")
}

fn describe(filter: &QueryFilter) -> String {
    let QueryFilter {
        subject,
        orgnr,
        from,
        until,
        kinds,
        reasons,
        start_index,
        limit,
    } = filter;
    let mut parts = Vec::new();
    if *subject {
        parts.push("subject=<pseudonym>".to_owned());
    }
    if let Some(org) = orgnr {
        parts.push(format!("orgnr={org}"));
    }
    if let Some(t) = from {
        parts.push(format!("from={t}"));
    }
    if let Some(t) = until {
        parts.push(format!("until={t}"));
    }
    if !kinds.is_empty() {
        parts.push(format!("kinds={}", kinds_text(kinds)));
    }
    if !reasons.is_empty() {
        parts.push(format!("reasons={}", reasons.join(",")));
    }
    parts.push(format!("start_index={start_index}"));
    parts.push(format!("limit={limit}"));
    parts.join(" ")
}

fn summary(filter: &SummaryFilter) -> String {
    let SummaryFilter {
        from,
        until,
        kinds,
        reasons,
    } = filter;
    let mut text = format!("summary from={from}");
    if let Some(until) = until {
        text.push_str(&format!(" until={until}"));
    }
    if !kinds.is_empty() {
        text.push_str(&format!(" kinds={}", kinds_text(kinds)));
    }
    if !reasons.is_empty() {
        text.push_str(&format!(" reasons={}", reasons.join(",")));
    }
    text
}

// === fields → event ===

/// The event of `kind` that lays out to exactly `fields`, or why there is none.
pub(super) fn event(kind: EntryKind, fields: &Fields) -> Result<Event, String> {
    let event = read(kind, fields.clone())?;
    if self::fields(&event) == *fields {
        Ok(event)
    } else {
        Err(format!("it holds fields a {kind} entry never has"))
    }
}

fn need<T>(value: Option<T>, name: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("it has no {name}"))
}

/// The typed reading of `fields`, not yet checked to lay out to them again.
fn read(kind: EntryKind, f: Fields) -> Result<Event, String> {
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
    } = f;
    let terms = |actor: Option<Actor>| -> Result<DecisionTerms, String> {
        Ok(DecisionTerms {
            actor: need(actor, "actor")?,
            subject_pseudonym: need(subject_pseudonym, "subject pseudonym")?,
            category: need(category.clone(), "category")?,
            purpose: need(purpose.clone(), "purpose")?,
            sender_orgnr: need(sender_orgnr.clone(), "sender")?,
            recipient_orgnr: need(recipient_orgnr.clone(), "recipient")?,
            policy_version: need(policy_version.clone(), "policy version")?,
        })
    };
    let note = |consent: Option<ConsentRef>| -> Result<NoteRef, String> {
        Ok(NoteRef {
            disclosure_id: need(disclosure_id.clone(), "disclosure id")?,
            subject_pseudonym: need(subject_pseudonym, "subject pseudonym")?,
            consent: need(consent, "consent")?,
            category: need(category.clone(), "category")?,
            purpose: need(purpose.clone(), "purpose")?,
            sender_orgnr: need(sender_orgnr.clone(), "sender")?,
            recipient_orgnr: need(recipient_orgnr.clone(), "recipient")?,
            content_sha256: need(content_sha256, "content hash")?,
            request_id: need(request_id.clone(), "request id")?,
            policy_version: need(policy_version.clone(), "policy version")?,
        })
    };
    Ok(match kind {
        EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn => {
            let change = ConsentChange {
                actor: need(actor, "actor")?,
                subject_pseudonym: need(subject_pseudonym, "subject pseudonym")?,
                consent: need(consent, "consent")?,
                policy_version: need(policy_version, "policy version")?,
                login: only_login(detail.as_deref())?,
            };
            if kind == EntryKind::ConsentGranted {
                Event::ConsentGranted(change)
            } else {
                Event::ConsentWithdrawn(change)
            }
        }
        EntryKind::DisclosurePermitted => {
            let (recipient_role, approval_attested) = read_disclosure_detail(detail.as_deref())?;
            Event::DisclosurePermitted(DisclosurePermitted {
                terms: terms(actor)?,
                consent: need(consent, "consent")?,
                recipient_role,
                approval_attested,
                content_sha256: need(content_sha256, "content hash")?,
                request_id: need(request_id, "request id")?,
                disclosure_id: need(disclosure_id, "disclosure id")?,
            })
        }
        EntryKind::DisclosureRefused => {
            let (recipient_role, approval_attested) = read_disclosure_detail(detail.as_deref())?;
            Event::DisclosureRefused(DisclosureRefused {
                terms: terms(actor)?,
                reason: need(reason, "reason")?,
                nearest_consent: consent,
                recipient_role,
                approval_attested,
                content_sha256: need(content_sha256, "content hash")?,
                request_id: need(request_id, "request id")?,
            })
        }
        EntryKind::DisclosureChecked => {
            let answer = match (consent, reason) {
                (Some(c), None) => Answer::Permit(c),
                (None, Some(r)) => Answer::Refuse(r),
                _ => return Err("it has not exactly one of a consent and a reason".into()),
            };
            Event::DisclosureChecked(DisclosureChecked {
                terms: terms(actor)?,
                answer,
            })
        }
        EntryKind::NoteDelivered | EntryKind::NoteAcknowledged => {
            let handled = NoteHandled {
                actor: need(actor, "actor")?,
                note: note(consent)?,
            };
            if kind == EntryKind::NoteDelivered {
                Event::NoteDelivered(handled)
            } else {
                Event::NoteAcknowledged(handled)
            }
        }
        EntryKind::NotePurged => Event::NotePurged(NotePurged {
            actor,
            note: note(consent)?,
            reason: need(reason, "reason")?,
        }),
        EntryKind::AuditQueried => {
            let (body, login) = split_login(detail.as_deref());
            let access = match (reason, body) {
                (Some(reason), None) => Access::Refused(reason),
                (None, Some(body)) => Access::Answered(read_audit_query(body)?),
                _ => return Err("it has not exactly one of a reason and a filter".into()),
            };
            Event::AuditQueried(AuditQueried {
                actor: need(actor, "actor")?,
                subject_pseudonym,
                access,
                login,
            })
        }
        EntryKind::SubjectReportIssued => {
            let (body, login) = split_login(detail.as_deref());
            let access = match (reason, body) {
                (Some(reason), None) => Access::Refused(reason),
                (None, Some(body)) => Access::Answered(read_scope(body)?),
                _ => return Err("it has not exactly one of a reason and a scope".into()),
            };
            Event::SubjectReportIssued(SubjectReportIssued {
                actor: need(actor, "actor")?,
                subject_pseudonym: need(subject_pseudonym, "subject pseudonym")?,
                access,
                login,
            })
        }
        EntryKind::GatewayStarted => {
            let detail = need(detail, "detail")?;
            let version = detail
                .strip_prefix(STARTED)
                .ok_or("its detail is not `casegate <version>`")?;
            Event::GatewayStarted(GatewayStarted {
                version: version.to_owned(),
            })
        }
        EntryKind::KeyRotated => {
            let detail = need(detail, "detail")?;
            let (old_key, new_key) = detail
                .strip_prefix(KEY_ROTATED)
                .and_then(|rest| rest.split_once(REPLACED_BY))
                .ok_or("its detail is not `audit checkpoint key <old> replaced by <new>`")?;
            Event::KeyRotated(KeyRotated {
                old_key: old_key.to_owned(),
                new_key: new_key.to_owned(),
            })
        }
        EntryKind::ConsentsRead => {
            let (body, login) = split_login(detail.as_deref());
            let body = need(body, "detail")?;
            let read = match (body.split_once(' '), consent, reason) {
                (None, Some(c), None) if body == "get_consent" => ConsentRead::Get(c),
                (Some(("get_consent", id)), None, Some(reason)) => ConsentRead::GetRefused {
                    consent_id: id.to_owned(),
                    reason,
                },
                (None, None, Some(reason)) if body == "list_consents" => {
                    ConsentRead::ListRefused(reason)
                }
                (Some(("list_consents", shown)), None, None) => ConsentRead::List {
                    shown: shown
                        .strip_prefix("shown=")
                        .and_then(|n| n.parse().ok())
                        .ok_or("its detail is not a consent read this build knows")?,
                },
                _ => return Err("its detail is not a consent read this build knows".into()),
            };
            Event::ConsentsRead(ConsentsRead {
                actor: need(actor, "actor")?,
                subject_pseudonym,
                read,
                login,
            })
        }
    })
}

/// Splits the login off the end of a `detail`: (what comes before it, the login).
fn split_login(detail: Option<&str>) -> (Option<&str>, Option<Login>) {
    let Some(detail) = detail else {
        return (None, None);
    };
    let mut words: Vec<&str> = detail.split(' ').collect();
    let acr = match words.last().and_then(|w| w.strip_prefix("acr=")) {
        Some(acr) if words.len() >= 2 && words[words.len() - 2].starts_with("login=") => {
            words.pop();
            Some(acr.to_owned())
        }
        _ => None,
    };
    let login = match words.last().and_then(|w| w.strip_prefix("login=")) {
        Some(idp) => {
            let idp = idp.to_owned();
            words.pop();
            Some(Login { idp, acr })
        }
        // An `acr=` word without a login before it is part of the text.
        None => return (Some(detail), None),
    };
    let rest = words.len();
    if rest == 0 {
        return (None, login);
    }
    // What precedes the login, as a slice of `detail` (the words joined by single spaces).
    let before: usize = words.iter().map(|w| w.len()).sum::<usize>() + rest - 1;
    (Some(&detail[..before]), login)
}

fn only_login(detail: Option<&str>) -> Result<Option<Login>, String> {
    match split_login(detail) {
        (None, login) => Ok(login),
        (Some(_), _) => Err("its detail is not a login".into()),
    }
}

fn read_disclosure_detail(detail: Option<&str>) -> Result<(Option<String>, bool), String> {
    let (mut role, mut approval) = (None, false);
    let Some(detail) = detail else {
        return Ok((role, approval));
    };
    for part in detail.split(' ') {
        match part.split_once('=') {
            Some(("recipient_role", r)) if role.is_none() => role = Some(r.to_owned()),
            Some(("approval", "attested")) => approval = true,
            _ => return Err(format!("its detail has an unknown part {part:?}")),
        }
    }
    Ok((role, approval))
}

fn read_scope(text: &str) -> Result<Scope, String> {
    match text {
        "scope=all" => Ok(Scope::All),
        _ => text
            .strip_prefix("scope=org:")
            .map(|org| Scope::Org(org.to_owned()))
            .ok_or_else(|| format!("{text:?} is not a scope")),
    }
}

fn read_kinds(text: &str) -> Result<Vec<EntryKind>, String> {
    text.split(',')
        .map(|name| {
            EntryKind::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .ok_or_else(|| format!("unknown kind {name:?}"))
        })
        .collect()
}

fn read_list(text: &str) -> Vec<String> {
    text.split(',').map(str::to_owned).collect()
}

/// Reads `<filter> <scope>` of an answered audit query or summary.
fn read_audit_query(body: &str) -> Result<AuditQuery, String> {
    let (filter, scope) = body
        .rsplit_once(' ')
        .ok_or("its detail has no filter and scope")?;
    let scope = read_scope(scope)?;
    let mut words = filter.split(' ').peekable();
    if words.peek() == Some(&"summary") {
        words.next();
        let mut from = None;
        let mut out = SummaryFilter {
            from: String::new(),
            until: None,
            kinds: Vec::new(),
            reasons: Vec::new(),
        };
        for word in words {
            match word.split_once('=') {
                Some(("from", t)) => from = Some(t.to_owned()),
                Some(("until", t)) => out.until = Some(t.to_owned()),
                Some(("kinds", k)) => out.kinds = read_kinds(k)?,
                Some(("reasons", r)) => out.reasons = read_list(r),
                _ => return Err(format!("unknown summary filter part {word:?}")),
            }
        }
        out.from = need(from, "summary start")?;
        return Ok(AuditQuery::Summary(out, scope));
    }
    let mut out = QueryFilter {
        subject: false,
        orgnr: None,
        from: None,
        until: None,
        kinds: Vec::new(),
        reasons: Vec::new(),
        start_index: 0,
        limit: 0,
    };
    let (mut start, mut limit) = (None, None);
    for word in words {
        match word.split_once('=') {
            Some(("subject", "<pseudonym>")) => out.subject = true,
            Some(("orgnr", o)) => out.orgnr = Some(o.to_owned()),
            Some(("from", t)) => out.from = Some(t.to_owned()),
            Some(("until", t)) => out.until = Some(t.to_owned()),
            Some(("kinds", k)) => out.kinds = read_kinds(k)?,
            Some(("reasons", r)) => out.reasons = read_list(r),
            Some(("start_index", n)) => start = n.parse().ok(),
            Some(("limit", n)) => limit = n.parse().ok(),
            _ => return Err(format!("unknown query filter part {word:?}")),
        }
    }
    out.start_index = need(start, "start index")?;
    out.limit = need(limit, "limit")?;
    Ok(AuditQuery::Entries(out, scope))
}
