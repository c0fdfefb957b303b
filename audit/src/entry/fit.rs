//! Between typed events and the version-1 fields: [`fields`] lays an event out as version 1
//! does (its facts beyond the fixed fields as the `detail` text the gateway has always
//! written), and [`event`] reads fields back into the one event that lays out to exactly
//! them, or says why none does.

use std::borrow::Cow;

use super::{
    Actor, ConsentRef, EntryKind,
    detail::{
        describe, disclosure_detail, only_login, read_audit_query, read_disclosure_detail,
        read_scope, scope_text, split_login, summary, with_login,
    },
    event::{
        Access, Answer, AuditQueried, AuditQuery, ConsentChange, ConsentRead, ConsentsRead,
        DecisionTerms, DisclosureChecked, DisclosurePermitted, DisclosureRefused, Event,
        GatewayStarted, KeyRotated, NoteHandled, NotePurged, NoteRef, SubjectReportIssued,
    },
    layout::{Fields, View},
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

/// `event` as version 1 lays it out, borrowed from it.
pub(super) fn fields(event: &Event) -> View<'_> {
    let text = |t: Option<String>| t.map(Cow::Owned);
    match event {
        Event::ConsentGranted(c) | Event::ConsentWithdrawn(c) => {
            let ConsentChange {
                actor,
                subject_pseudonym,
                consent,
                policy_version,
                login,
            } = c;
            View {
                actor: Some(actor),
                subject_pseudonym: Some(subject_pseudonym),
                consent: Some(consent),
                policy_version: Some(policy_version),
                detail: text(with_login(None, login.as_ref())),
                ..View::default()
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
            View {
                consent: Some(consent),
                content_sha256: Some(content_sha256),
                request_id: Some(request_id),
                disclosure_id: Some(disclosure_id),
                detail: text(disclosure_detail(
                    recipient_role.as_deref(),
                    *approval_attested,
                )),
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
            View {
                consent: nearest_consent.as_ref(),
                reason: Some(reason),
                content_sha256: Some(content_sha256),
                request_id: Some(request_id),
                detail: text(disclosure_detail(
                    recipient_role.as_deref(),
                    *approval_attested,
                )),
                ..terms_fields(terms)
            }
        }
        Event::DisclosureChecked(DisclosureChecked { terms, answer }) => {
            let (consent, reason) = match answer {
                Answer::Permit(c) => (Some(c), None),
                Answer::Refuse(r) => (None, Some(r.as_str())),
            };
            View {
                consent,
                reason,
                ..terms_fields(terms)
            }
        }
        Event::NoteDelivered(NoteHandled { actor, note })
        | Event::NoteAcknowledged(NoteHandled { actor, note }) => View {
            actor: Some(actor),
            ..note_fields(note)
        },
        Event::NotePurged(NotePurged {
            actor,
            note,
            reason,
        }) => View {
            actor: actor.as_ref(),
            reason: Some(reason),
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
                Access::Refused(reason) => (Some(reason.as_str()), None),
            };
            View {
                actor: Some(actor),
                subject_pseudonym: subject_pseudonym.as_ref(),
                reason,
                detail: text(with_login(detail, login.as_ref())),
                ..View::default()
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
                Access::Refused(reason) => (Some(reason.as_str()), None),
            };
            View {
                actor: Some(actor),
                subject_pseudonym: Some(subject_pseudonym),
                reason,
                detail: text(with_login(detail, login.as_ref())),
                ..View::default()
            }
        }
        Event::GatewayStarted(GatewayStarted { version }) => View {
            detail: Some(Cow::Owned(format!("{STARTED}{version}"))),
            ..View::default()
        },
        Event::KeyRotated(KeyRotated { old_key, new_key }) => View {
            detail: Some(Cow::Owned(format!(
                "{KEY_ROTATED}{old_key}{REPLACED_BY}{new_key}"
            ))),
            ..View::default()
        },
        Event::ConsentsRead(ConsentsRead {
            actor,
            subject_pseudonym,
            read,
            login,
        }) => {
            let (consent, reason, detail) = match read {
                ConsentRead::Get(c) => (Some(c), None, "get_consent".to_owned()),
                ConsentRead::GetRefused { consent_id, reason } => (
                    None,
                    Some(reason.as_str()),
                    format!("get_consent {consent_id}"),
                ),
                ConsentRead::List { shown } => (None, None, format!("list_consents shown={shown}")),
                ConsentRead::ListRefused(reason) => {
                    (None, Some(reason.as_str()), "list_consents".to_owned())
                }
            };
            View {
                actor: Some(actor),
                subject_pseudonym: subject_pseudonym.as_ref(),
                consent,
                reason,
                detail: text(with_login(Some(detail), login.as_ref())),
                ..View::default()
            }
        }
        Event::Unfitted(u) => u.fields.view(),
    }
}

fn terms_fields(terms: &DecisionTerms) -> View<'_> {
    let DecisionTerms {
        actor,
        subject_pseudonym,
        category,
        purpose,
        sender_orgnr,
        recipient_orgnr,
        policy_version,
    } = terms;
    View {
        actor: Some(actor),
        subject_pseudonym: Some(subject_pseudonym),
        category: Some(category),
        purpose: Some(purpose),
        sender_orgnr: Some(sender_orgnr),
        recipient_orgnr: Some(recipient_orgnr),
        policy_version: Some(policy_version),
        ..View::default()
    }
}

fn note_fields(note: &NoteRef) -> View<'_> {
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
    View {
        subject_pseudonym: Some(subject_pseudonym),
        consent: Some(consent),
        category: Some(category),
        purpose: Some(purpose),
        sender_orgnr: Some(sender_orgnr),
        recipient_orgnr: Some(recipient_orgnr),
        content_sha256: Some(content_sha256),
        request_id: Some(request_id),
        policy_version: Some(policy_version),
        disclosure_id: Some(disclosure_id),
        ..View::default()
    }
}

// === fields → event ===

/// The event of `kind` that lays out to exactly `fields`, or why there is none.
pub(super) fn event(kind: EntryKind, fields: &Fields) -> Result<Event, String> {
    let event = read(kind, fields.clone())?;
    if self::fields(&event) == fields.view() {
        Ok(event)
    } else {
        Err(format!("it holds fields a {kind} entry never has"))
    }
}

pub(super) fn need<T>(value: Option<T>, name: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("it has no {name}"))
}

/// The typed reading of `fields`, not yet checked to lay out to them again.
pub(super) fn read(kind: EntryKind, f: Fields) -> Result<Event, String> {
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
