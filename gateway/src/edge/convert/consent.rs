//! `casegate.v1` consent messages ↔ the consent domain.

use std::collections::BTreeSet;

use casegate_consent::{
    Category, OrgNumber, Purpose, Role, SubjectId, Vocabulary,
    decision::{Decision, DisclosureRequest, POLICY_VERSION, Reason},
    record::{
        Actor, ConsentId, ConsentRecord, Evidence, Party, Period, Provision, ProvisionPart,
        Timestamp, ViewStatus,
    },
};
use casegate_proto::v1;

use super::{
    FieldError, Parsed, role, role_to_wire, sha256, subject, text, timestamp, timestamp_to_wire,
};
use crate::app::principal::Principal;

/// A parsed `GrantConsentRequest`.
#[derive(Debug, Clone)]
pub(crate) struct GrantInput {
    pub subject: SubjectId,
    pub provisions: Vec<Provision>,
    pub period: Period,
    /// As sent; whether it is acceptable depends on who grants.
    pub evidence: Option<Evidence>,
    pub supersedes: Option<ConsentId>,
}

pub(crate) fn consent_id(field: &str, text: &str) -> Parsed<ConsentId> {
    if text.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    text.parse().map_err(|e| FieldError::new(field, e))
}

pub(crate) fn orgnr(field: &str, text: &str) -> Parsed<OrgNumber> {
    if text.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    text.parse().map_err(|e| FieldError::new(field, e))
}

fn party(field: &str, wire: &v1::Party) -> Parsed<Party> {
    let v1::Party { orgnr: org, roles } = wire;
    let orgnr = orgnr(&format!("{field}.orgnr"), org)?;
    let roles = roles
        .iter()
        .enumerate()
        .map(|(i, r)| role(&format!("{field}.roles[{i}]"), *r))
        .collect::<Parsed<BTreeSet<_>>>()?;
    Ok(Party { orgnr, roles })
}

fn parties(field: &str, wire: &[v1::Party]) -> Parsed<Vec<Party>> {
    if wire.is_empty() {
        return Err(FieldError::new(
            field,
            "at least one organisation is required",
        ));
    }
    wire.iter()
        .enumerate()
        .map(|(i, p)| party(&format!("{field}[{i}]"), p))
        .collect()
}

/// A provision as sent, checked against the vocabulary (`field` names it in errors).
pub(crate) fn provision(
    field: &str,
    wire: &v1::Provision,
    vocabulary: &Vocabulary,
) -> Parsed<Provision> {
    let v1::Provision {
        senders,
        recipients,
        categories,
        purposes,
    } = wire;
    let senders = parties(&format!("{field}.senders"), senders)?;
    let recipients = parties(&format!("{field}.recipients"), recipients)?;
    let mut cats = BTreeSet::new();
    for (i, name) in categories.iter().enumerate() {
        let f = format!("{field}.categories[{i}]");
        let category: Category = name.parse().map_err(|e| FieldError::new(&f, e))?;
        if vocabulary.category(&category).is_none() {
            return Err(FieldError::new(f, format!("unknown category {name:?}")));
        }
        cats.insert(category);
    }
    let mut purps = BTreeSet::new();
    for (i, name) in purposes.iter().enumerate() {
        let f = format!("{field}.purposes[{i}]");
        let purpose: Purpose = name.parse().map_err(|e| FieldError::new(&f, e))?;
        if !vocabulary.has_purpose(&purpose) {
            return Err(FieldError::new(f, format!("unknown purpose {name:?}")));
        }
        purps.insert(purpose);
    }
    Provision::new(senders, recipients, cats, purps, vocabulary).map_err(|(part, e)| {
        let part = match part {
            ProvisionPart::Senders => "senders",
            ProvisionPart::Recipients => "recipients",
            ProvisionPart::Categories => "categories",
            ProvisionPart::Purposes => "purposes",
        };
        FieldError::new(format!("{field}.{part}"), e)
    })
}

/// Evidence as sent (a digital one's subject is filled in by the gateway, not trusted).
pub(crate) fn evidence(field: &str, wire: &v1::Evidence) -> Parsed<Evidence> {
    let v1::Evidence { kind } = wire;
    match kind {
        None => Err(FieldError::new(
            field,
            "one of digital, signed_form or verbal is required",
        )),
        Some(v1::evidence::Kind::Digital(v1::DigitalConsent { authenticated_as })) => {
            Ok(Evidence::Digital {
                authenticated_as: authenticated_as.clone(),
            })
        }
        Some(v1::evidence::Kind::SignedForm(v1::SignedForm {
            sha256: hash,
            reference,
        })) => Ok(Evidence::SignedForm {
            sha256: sha256(&format!("{field}.signed_form.sha256"), hash)?,
            reference: text(&format!("{field}.signed_form.reference"), reference, 200)?,
        }),
        Some(v1::evidence::Kind::Verbal(v1::VerbalConsent {
            witness_user_id,
            witness_role,
            given_at,
        })) => Ok(Evidence::Verbal {
            witness_user_id: text(
                &format!("{field}.verbal.witness_user_id"),
                witness_user_id,
                200,
            )?,
            witness_role: role(&format!("{field}.verbal.witness_role"), *witness_role)?,
            given_at: timestamp(&format!("{field}.verbal.given_at"), given_at.as_ref())?,
        }),
    }
}

pub(crate) fn grant_request(
    wire: &v1::GrantConsentRequest,
    vocabulary: &Vocabulary,
    max_period_micros: i64,
) -> Parsed<GrantInput> {
    let v1::GrantConsentRequest {
        subject_id,
        provisions,
        period,
        evidence: wire_evidence,
        supersedes_consent_id,
    } = wire;
    let subject = subject("subject_id", subject_id)?;
    if provisions.is_empty() {
        return Err(FieldError::new(
            "provisions",
            "at least one provision is required",
        ));
    }
    if provisions.len() > 32 {
        return Err(FieldError::new("provisions", "at most 32 provisions"));
    }
    let provisions = provisions
        .iter()
        .enumerate()
        .map(|(i, p)| provision(&format!("provisions[{i}]"), p, vocabulary))
        .collect::<Parsed<Vec<_>>>()?;
    let v1::Period { start, end } = period
        .as_ref()
        .ok_or_else(|| FieldError::new("period", "required"))?;
    let start = timestamp("period.start", start.as_ref())?;
    let end = timestamp("period.end", end.as_ref())?;
    let period =
        Period::new(start, end, max_period_micros).map_err(|e| FieldError::new("period.end", e))?;
    let evidence = wire_evidence
        .as_ref()
        .map(|e| evidence("evidence", e))
        .transpose()?;
    let supersedes = if supersedes_consent_id.is_empty() {
        None
    } else {
        Some(consent_id("supersedes_consent_id", supersedes_consent_id)?)
    };
    Ok(GrantInput {
        subject,
        provisions,
        period,
        evidence,
        supersedes,
    })
}

/// A `CheckDisclosureRequest` from `principal` as sender.
pub(crate) fn check_request(
    wire: &v1::CheckDisclosureRequest,
    principal: &Principal,
) -> Parsed<(SubjectId, DisclosureRequest)> {
    let v1::CheckDisclosureRequest {
        subject_id,
        recipient,
        category,
        purpose,
        approval_attested,
    } = wire;
    let subject = subject("subject_id", subject_id)?;
    let v1::Party { orgnr: org, roles } = recipient
        .as_ref()
        .ok_or_else(|| FieldError::new("recipient", "required"))?;
    let recipient_org = orgnr("recipient.orgnr", org)?;
    let recipient_role = match roles.as_slice() {
        [] => None,
        [r] => Some(role("recipient.roles[0]", *r)?),
        _ => return Err(FieldError::new("recipient.roles", "at most one role")),
    };
    let category = term::<Category>("category", category)?;
    let purpose = term::<Purpose>("purpose", purpose)?;
    Ok((
        subject,
        DisclosureRequest {
            sender_org: principal.orgnr,
            sender_role: principal.role,
            recipient_org,
            recipient_role,
            category,
            purpose,
            approval_attested: *approval_attested,
        },
    ))
}

fn term<T: std::str::FromStr>(field: &str, text: &str) -> Parsed<T>
where
    T::Err: std::fmt::Display,
{
    if text.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    text.parse().map_err(|e| FieldError::new(field, e))
}

/// An actor for the store from the verified caller.
pub(crate) fn actor(principal: &Principal) -> Actor {
    Actor {
        orgnr: principal.orgnr,
        user_id: principal.user_id.clone(),
        role: principal.role,
    }
}

fn actor_to_wire(actor: &Actor) -> v1::Actor {
    v1::Actor {
        orgnr: actor.orgnr.to_string(),
        user_id: actor.user_id.clone(),
        role: role_to_wire(actor.role),
    }
}

fn party_to_wire(party: &Party) -> v1::Party {
    v1::Party {
        orgnr: party.orgnr.to_string(),
        roles: party.roles.iter().map(|r| role_to_wire(*r)).collect(),
    }
}

fn evidence_to_wire(evidence: &Evidence) -> v1::Evidence {
    let kind = match evidence {
        Evidence::Digital { authenticated_as } => v1::evidence::Kind::Digital(v1::DigitalConsent {
            authenticated_as: authenticated_as.clone(),
        }),
        Evidence::SignedForm { sha256, reference } => {
            v1::evidence::Kind::SignedForm(v1::SignedForm {
                sha256: sha256.to_vec(),
                reference: reference.clone(),
            })
        }
        Evidence::Verbal {
            witness_user_id,
            witness_role,
            given_at,
        } => v1::evidence::Kind::Verbal(v1::VerbalConsent {
            witness_user_id: witness_user_id.clone(),
            witness_role: role_to_wire(*witness_role),
            given_at: Some(timestamp_to_wire(*given_at)),
        }),
    };
    v1::Evidence { kind: Some(kind) }
}

/// A stored version as shown to an authorised caller at `now`.
pub(crate) fn record_to_wire(record: &ConsentRecord, now: Timestamp) -> v1::ConsentRecord {
    let ConsentRecord {
        id,
        version,
        subject,
        recorded_by,
        provisions,
        period,
        evidence,
        recorded_at,
        status: _,
        withdrawal,
    } = record;
    let status = match record.status_at(now) {
        ViewStatus::Active => v1::ConsentStatus::Active,
        ViewStatus::Withdrawn => v1::ConsentStatus::Withdrawn,
        ViewStatus::Superseded => v1::ConsentStatus::Superseded,
        ViewStatus::Expired => v1::ConsentStatus::Expired,
    };
    v1::ConsentRecord {
        consent_id: id.to_string(),
        version: *version,
        subject_id: subject.expose(),
        recorded_by: Some(actor_to_wire(recorded_by)),
        provisions: provisions
            .iter()
            .map(|p| v1::Provision {
                senders: p.senders.iter().map(party_to_wire).collect(),
                recipients: p.recipients.iter().map(party_to_wire).collect(),
                categories: p.categories.iter().map(ToString::to_string).collect(),
                purposes: p.purposes.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        period: Some(v1::Period {
            start: Some(timestamp_to_wire(period.start)),
            end: Some(timestamp_to_wire(period.end)),
        }),
        evidence: Some(evidence_to_wire(evidence)),
        status: status as i32,
        withdrawal: withdrawal.as_ref().map(|w| v1::Withdrawal {
            at: Some(timestamp_to_wire(w.at)),
            by: Some(actor_to_wire(&w.by)),
            reason: w.reason.clone().unwrap_or_default(),
        }),
        recorded_at: Some(timestamp_to_wire(*recorded_at)),
        record_hash: record.record_hash().to_vec(),
    }
}

pub(crate) fn reason_to_wire(reason: Reason) -> v1::ReasonCode {
    match reason {
        Reason::NoConsent => v1::ReasonCode::NoConsent,
        Reason::ConsentWithdrawn => v1::ReasonCode::ConsentWithdrawn,
        Reason::ConsentExpired => v1::ReasonCode::ConsentExpired,
        Reason::ConsentNotYetValid => v1::ReasonCode::ConsentNotYetValid,
        Reason::SenderNotCovered => v1::ReasonCode::SenderNotCovered,
        Reason::RecipientNotCovered => v1::ReasonCode::RecipientNotCovered,
        Reason::CategoryNotCovered => v1::ReasonCode::CategoryNotCovered,
        Reason::PurposeNotCovered => v1::ReasonCode::PurposeNotCovered,
        Reason::ApprovalMissing => v1::ReasonCode::ApprovalMissing,
        Reason::SenderRoleNotAllowed => v1::ReasonCode::SenderRoleNotAllowed,
        Reason::UnknownCategory => v1::ReasonCode::UnknownCategory,
        Reason::UnknownPurpose => v1::ReasonCode::UnknownPurpose,
    }
}

pub(crate) fn decision_to_wire(decision: &Decision) -> v1::Decision {
    match decision {
        Decision::Permit(p) => v1::Decision {
            permitted: true,
            reason: v1::ReasonCode::Unspecified as i32,
            consent_id: p.consent_id.to_string(),
            consent_version: p.version,
            consent_record_hash: p.record_hash.to_vec(),
            policy_version: POLICY_VERSION.to_owned(),
            message: "a current consent covers this disclosure".to_owned(),
        },
        Decision::Deny(d) => v1::Decision {
            permitted: false,
            reason: reason_to_wire(d.reason) as i32,
            consent_id: d.nearest.map(|(id, _)| id.to_string()).unwrap_or_default(),
            consent_version: d.nearest.map(|(_, v)| v).unwrap_or_default(),
            consent_record_hash: Vec::new(),
            policy_version: POLICY_VERSION.to_owned(),
            message: format!("{}: {}", d.reason.code(), d.reason.explain()),
        },
    }
}

/// Roles of people who act for an organisation that can be party to a consent.
pub(crate) const PROFESSIONALS: [Role; 3] = [
    Role::Clinician,
    Role::NavCounsellor,
    Role::EmploymentSpecialist,
];
