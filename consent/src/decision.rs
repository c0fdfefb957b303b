//! The disclosure decision: a pure function of the request, the subject's consents, the time
//! and the vocabulary. Deny by default; a permit names the consent version and provision it
//! relied on, a refusal names one precise reason.
//!
//! **Invariant** (policy 2): a decision is taken only over the consents that name the sender's
//! organisation (as a sender or a recipient, in any provision) — the consents that
//! organisation may read. The others cannot cover the request, and an answer that mentioned
//! them would tell a sender named in none of a jobseeker's consents that consents exist (for an
//! IPS participant, that they are in treatment). Such a sender gets exactly the answer it would
//! get if there were none: `no_consent`, naming no consent.

use std::fmt;

use crate::{
    Category, OrgNumber, Purpose, Role, Vocabulary,
    record::{ConsentId, Status, Timestamp},
    terms::{ProvisionTerms, Terms},
};

/// Version of the decision rules; recorded with every decision so it can be replayed.
pub const POLICY_VERSION: &str = "casegate-policy-2";

/// Every policy version [`decide_under`] can replay: policy 1 decided over all of the subject's
/// consents; policy 2 ([`POLICY_VERSION`]) over those that name the sender's organisation.
pub const POLICY_VERSIONS: [&str; 2] = ["casegate-policy-1", POLICY_VERSION];

/// A disclosure someone wants to make (or asks about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureRequest {
    /// The organisation sending the note.
    pub sender_org: OrgNumber,
    /// The role the sender acts in; the category's rule must allow it.
    pub sender_role: Role,
    /// The organisation the note is addressed to.
    pub recipient_org: OrgNumber,
    /// The role the note is addressed to; `None` means the whole organisation.
    pub recipient_role: Option<Role>,
    /// The category of information; refused unless the vocabulary holds it.
    pub category: Category,
    /// The purpose of disclosure; refused unless the vocabulary holds it.
    pub purpose: Purpose,
    /// Whether a clinician's approval attestation accompanies the note.
    pub approval_attested: bool,
}

/// Why a disclosure is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// `no_consent`: the decision saw no consent that is not superseded (under policy 2 it
    /// sees only those naming the sender's organisation).
    NoConsent,
    /// `consent_withdrawn`: a consent covers the request but is withdrawn.
    ConsentWithdrawn,
    /// `consent_expired`: a consent covers the request but its period has ended.
    ConsentExpired,
    /// `consent_not_yet_valid`: a consent covers the request but its period has not begun.
    ConsentNotYetValid,
    /// `sender_not_covered`: no provision has the sender's organisation and role as a sender.
    SenderNotCovered,
    /// `recipient_not_covered`: a provision covers the sender but not the recipient.
    RecipientNotCovered,
    /// `category_not_covered`: a provision covers sender and recipient but not the category.
    CategoryNotCovered,
    /// `purpose_not_covered`: a provision covers all but the purpose.
    PurposeNotCovered,
    /// `approval_missing`: the category needs a clinician's approval attestation and none came.
    ApprovalMissing,
    /// `sender_role_not_allowed`: the vocabulary does not let the sender's role send the
    /// category.
    SenderRoleNotAllowed,
    /// `unknown_category`: the category is not in the vocabulary.
    UnknownCategory,
    /// `unknown_purpose`: the purpose is not in the vocabulary.
    UnknownPurpose,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 12] = [
        Reason::NoConsent,
        Reason::ConsentWithdrawn,
        Reason::ConsentExpired,
        Reason::ConsentNotYetValid,
        Reason::SenderNotCovered,
        Reason::RecipientNotCovered,
        Reason::CategoryNotCovered,
        Reason::PurposeNotCovered,
        Reason::ApprovalMissing,
        Reason::SenderRoleNotAllowed,
        Reason::UnknownCategory,
        Reason::UnknownPurpose,
    ];

    /// The machine-readable code, e.g. `consent_withdrawn`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::NoConsent => "no_consent",
            Reason::ConsentWithdrawn => "consent_withdrawn",
            Reason::ConsentExpired => "consent_expired",
            Reason::ConsentNotYetValid => "consent_not_yet_valid",
            Reason::SenderNotCovered => "sender_not_covered",
            Reason::RecipientNotCovered => "recipient_not_covered",
            Reason::CategoryNotCovered => "category_not_covered",
            Reason::PurposeNotCovered => "purpose_not_covered",
            Reason::ApprovalMissing => "approval_missing",
            Reason::SenderRoleNotAllowed => "sender_role_not_allowed",
            Reason::UnknownCategory => "unknown_category",
            Reason::UnknownPurpose => "unknown_purpose",
        }
    }

    /// A readable explanation, free of personal data.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::NoConsent => "no consent from the jobseeker is on record",
            Reason::ConsentWithdrawn => "the jobseeker has withdrawn the consent that covered this",
            Reason::ConsentExpired => "the consent that covered this has expired",
            Reason::ConsentNotYetValid => "the consent that covers this is not yet in force",
            Reason::SenderNotCovered => "no consent covers the sender in this role",
            Reason::RecipientNotCovered => "no consent names this recipient for this sender",
            Reason::CategoryNotCovered => "no consent covers this category of information",
            Reason::PurposeNotCovered => "no consent covers this purpose",
            Reason::ApprovalMissing => "this category needs a clinician's approval attestation",
            Reason::SenderRoleNotAllowed => "the sender's role may not send this category",
            Reason::UnknownCategory => "the category is not in the gateway's vocabulary",
            Reason::UnknownPurpose => "the purpose is not in the gateway's vocabulary",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What a permit relied on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The consent relied on.
    pub consent_id: ConsentId,
    /// The version of it relied on.
    pub version: u32,
    /// SHA-256 of that version's canonical content
    /// ([`ConsentRecord::record_hash`](crate::record::ConsentRecord::record_hash)).
    pub record_hash: [u8; 32],
    /// Index of the covering provision in the consent.
    pub provision: usize,
}

/// Why a refusal, and the consent version nearest to covering the request, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// The one reason for the refusal.
    pub reason: Reason,
    /// The consent id and version that came nearest to covering the request; `None` when the
    /// decision saw no consent or refused before looking at any.
    pub nearest: Option<(ConsentId, u32)>,
}

/// The outcome of [`decide`]: deny unless a current consent covers the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A consent in force covers the request.
    Permit(Permit),
    /// Refused, with one reason.
    Deny(Deny),
}

impl Decision {
    fn deny(reason: Reason) -> Self {
        Decision::Deny(Deny {
            reason,
            nearest: None,
        })
    }
}

/// How far a consent's best provision gets in covering a request: sender, then recipient,
/// category, purpose (4 = covered), and which provision that is.
fn coverage<T: Terms>(terms: &T, request: &DisclosureRequest) -> (usize, u8) {
    let mut best = (0, 0u8);
    for (i, p) in terms.provisions().enumerate() {
        let depth = if !p.covers_sender(request.sender_org, request.sender_role) {
            0
        } else if !p.covers_recipient(request.recipient_org, request.recipient_role) {
            1
        } else if !p.has_category(&request.category) {
            2
        } else if !p.has_purpose(&request.purpose) {
            3
        } else {
            4
        };
        if depth > best.1 {
            best = (i, depth);
        }
    }
    best
}

/// Decides `request` against `consents` (the subject's consent versions, full records or
/// index views; superseded versions are ignored; the order does not matter) at `now`, under
/// the current policy ([`POLICY_VERSION`]): consents that do not name the sender's organisation
/// are not looked at.
pub fn decide<T: Terms>(
    request: &DisclosureRequest,
    consents: &[T],
    now: Timestamp,
    vocabulary: &Vocabulary,
) -> Decision {
    decide_over(
        request,
        consents
            .iter()
            .filter(|t| t.provisions().any(|p| p.names(request.sender_org))),
        now,
        vocabulary,
    )
}

/// Decides as the policy version `policy` did (for replaying recorded decisions), or `None`
/// for a version not in [`POLICY_VERSIONS`].
pub fn decide_under<T: Terms>(
    policy: &str,
    request: &DisclosureRequest,
    consents: &[T],
    now: Timestamp,
    vocabulary: &Vocabulary,
) -> Option<Decision> {
    match policy {
        "casegate-policy-1" => Some(decide_over(request, consents.iter(), now, vocabulary)),
        POLICY_VERSION => Some(decide(request, consents, now, vocabulary)),
        _ => None,
    }
}

/// The rules, over the consents a policy lets the decision see.
fn decide_over<'a, T: Terms + 'a>(
    request: &DisclosureRequest,
    consents: impl Iterator<Item = &'a T>,
    now: Timestamp,
    vocabulary: &Vocabulary,
) -> Decision {
    let Some(rule) = vocabulary.category(&request.category) else {
        return Decision::deny(Reason::UnknownCategory);
    };
    if !vocabulary.has_purpose(&request.purpose) {
        return Decision::deny(Reason::UnknownPurpose);
    }
    if !rule.senders.contains(&request.sender_role) {
        return Decision::deny(Reason::SenderRoleNotAllowed);
    }
    if rule.approval_required && !request.approval_attested {
        return Decision::deny(Reason::ApprovalMissing);
    }

    // Superseded versions never count: only each consent's current version speaks.
    let mut nearest: Option<(u8, Reason, &T)> = None;
    let mut permit: Option<(&T, usize)> = None;
    for terms in consents.filter(|t| t.status() != Status::Superseded) {
        let (provision, depth) = coverage(terms, request);
        let in_force = terms.status() == Status::Active && terms.period().contains(now);
        if depth == 4 && in_force {
            // Several may cover; the most recently recorded gives a stable answer.
            if permit.is_none_or(|(p, _)| terms.recorded_at() > p.recorded_at()) {
                permit = Some((terms, provision));
            }
            continue;
        }
        // Rank refusals: a consent that would cover but is not in force says most; among
        // the rest, the one that gets furthest.
        let (rank, reason) = match depth {
            4 => (
                5,
                match terms.status() {
                    Status::Withdrawn => Reason::ConsentWithdrawn,
                    _ if now < terms.period().start => Reason::ConsentNotYetValid,
                    _ => Reason::ConsentExpired,
                },
            ),
            3 => (4, Reason::PurposeNotCovered),
            2 => (3, Reason::CategoryNotCovered),
            1 => (2, Reason::RecipientNotCovered),
            _ => (1, Reason::SenderNotCovered),
        };
        if nearest.is_none_or(|(r, _, _)| rank > r) {
            nearest = Some((rank, reason, terms));
        }
    }
    if let Some((terms, provision)) = permit {
        return Decision::Permit(Permit {
            consent_id: terms.id(),
            version: terms.version(),
            record_hash: terms.record_hash(),
            provision,
        });
    }
    match nearest {
        Some((_, reason, terms)) => Decision::Deny(Deny {
            reason,
            nearest: Some((terms.id(), terms.version())),
        }),
        None => Decision::deny(Reason::NoConsent),
    }
}

#[cfg(test)]
mod tests;
