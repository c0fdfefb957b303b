//! What each kind of entry records, with exactly its own fields: required facts are not
//! optional, and what version 1 keeps in its `detail` text (a recipient role, an attested
//! approval, an audit query's filter and scope, a caller's login, a version, key names) is
//! typed here. Organisation numbers are 9 digits; hashes are SHA-256; pseudonyms are
//! HMAC-SHA-256 of an identity number under the gateway's secret.

use super::{Actor, ConsentRef, EntryKind, layout::Fields};

/// What an entry records, one variant per [`EntryKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A consent version was granted.
    ConsentGranted(ConsentChange),
    /// A consent version was withdrawn.
    ConsentWithdrawn(ConsentChange),
    /// A note was accepted for disclosure under a consent.
    DisclosurePermitted(DisclosurePermitted),
    /// A disclosure was refused.
    DisclosureRefused(DisclosureRefused),
    /// A note was delivered to its recipient.
    NoteDelivered(NoteHandled),
    /// The recipient acknowledged a delivered note.
    NoteAcknowledged(NoteHandled),
    /// A note was purged.
    NotePurged(NotePurged),
    /// The audit log was queried or summarised, or a caller was refused that.
    AuditQueried(AuditQueried),
    /// A subject access report was issued, or a caller was refused one.
    SubjectReportIssued(SubjectReportIssued),
    /// The gateway started.
    GatewayStarted(GatewayStarted),
    /// The checkpoint signing key was replaced.
    KeyRotated(KeyRotated),
    /// A dry-run decision (`CheckDisclosure`) about a subject, with the answer given.
    DisclosureChecked(DisclosureChecked),
    /// A read of a subject's consent records (`GetConsent`, `ListConsents`), or a refused one.
    ConsentsRead(ConsentsRead),
    /// An entry that decodes under version 1 but fits none of the variants above (a field
    /// its kind never has, a required one missing, a `detail` text of a form this build does
    /// not know — from an older gateway, say). Kept whole, so it is still shown, counted,
    /// verified and re-encoded to its own bytes.
    Unfitted(Unfitted),
}

/// See [`Event::Unfitted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfitted {
    /// The kind the entry says it is.
    pub kind: EntryKind,
    /// Its fields as recorded.
    pub fields: Fields,
    /// Why no typed event fits it (e.g. `detail is not of the form "casegate <version>"`).
    pub why: String,
}

/// The upstream login a backend-for-frontend vouched for, recorded with the entries its
/// caller causes (version 1 text: `login=<idp>` or `login=<idp> acr=<level>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The identity provider (an issuer URL or a name; no whitespace).
    pub idp: String,
    /// The login's assurance level (OpenID Connect `acr`; no whitespace), if given.
    pub acr: Option<String>,
}

/// A consent version granted or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    /// Who granted or withdrew it.
    pub actor: Actor,
    /// The jobseeker it is about.
    pub subject_pseudonym: [u8; 32],
    /// The version granted or withdrawn.
    pub consent: ConsentRef,
    /// The decision policy in force (e.g. `casegate-policy-2`).
    pub policy_version: String,
    /// The caller's vouched login, if any.
    pub login: Option<Login>,
}

/// What a disclosure decision (taken or dry-run) was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionTerms {
    /// Who asked: the sender's person (or, for a dry run, whoever checked).
    pub actor: Actor,
    /// The jobseeker the note is about.
    pub subject_pseudonym: [u8; 32],
    /// The note's category of information (a vocabulary term).
    pub category: String,
    /// The note's purpose of disclosure (a vocabulary term).
    pub purpose: String,
    /// The sending organisation's number.
    pub sender_orgnr: String,
    /// The receiving organisation's number.
    pub recipient_orgnr: String,
    /// The policy the decision was taken under (e.g. `casegate-policy-2`).
    pub policy_version: String,
}

/// A note accepted for disclosure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosurePermitted {
    /// What was decided about.
    pub terms: DecisionTerms,
    /// The consent version the permit relied on.
    pub consent: ConsentRef,
    /// The recipient role the sender named (a role's token spelling), if any.
    pub recipient_role: Option<String>,
    /// Whether the sender attested a clinician's approval.
    pub approval_attested: bool,
    /// SHA-256 of the note body; never the body.
    pub content_sha256: [u8; 32],
    /// The sender's idempotency key.
    pub request_id: String,
    /// The gateway's id of the note (UUID text).
    pub disclosure_id: String,
}

/// A disclosure refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureRefused {
    /// What was decided about.
    pub terms: DecisionTerms,
    /// The refusal's reason code (e.g. `no_consent`).
    pub reason: String,
    /// The consent version nearest to permitting it (e.g. the one withdrawn), if any.
    pub nearest_consent: Option<ConsentRef>,
    /// The recipient role the sender named, if any.
    pub recipient_role: Option<String>,
    /// Whether the sender attested a clinician's approval.
    pub approval_attested: bool,
    /// SHA-256 of the refused note's body.
    pub content_sha256: [u8; 32],
    /// The sender's idempotency key.
    pub request_id: String,
}

/// A dry-run decision and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureChecked {
    /// What was decided about.
    pub terms: DecisionTerms,
    /// The answer given.
    pub answer: Answer,
}

/// A decision's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Permitted on this consent version.
    Permit(ConsentRef),
    /// Refused; holds the reason code.
    Refuse(String),
}

/// An existing note, as its entries name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRef {
    /// The gateway's id of the note (UUID text).
    pub disclosure_id: String,
    /// The jobseeker it is about.
    pub subject_pseudonym: [u8; 32],
    /// The consent version it was disclosed under.
    pub consent: ConsentRef,
    /// Its category of information.
    pub category: String,
    /// Its purpose of disclosure.
    pub purpose: String,
    /// The sending organisation's number.
    pub sender_orgnr: String,
    /// The receiving organisation's number.
    pub recipient_orgnr: String,
    /// SHA-256 of its body.
    pub content_sha256: [u8; 32],
    /// The sender's idempotency key.
    pub request_id: String,
    /// The policy it was disclosed under.
    pub policy_version: String,
}

/// A note delivered or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteHandled {
    /// The recipient's person who received or acknowledged it.
    pub actor: Actor,
    /// The note.
    pub note: NoteRef,
}

/// A note purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotePurged {
    /// Who caused the purge; `None` for the gateway itself (e.g. a note's time ran out).
    pub actor: Option<Actor>,
    /// The note.
    pub note: NoteRef,
    /// Why (e.g. `consent_withdrawn`, `ttl_elapsed`, a refusal's reason code).
    pub reason: String,
}

/// Whether a look at the log was answered or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<T> {
    /// Answered: what was asked for.
    Answered(T),
    /// Refused; holds the reason code (e.g. `permission_denied`).
    Refused(String),
}

/// Which entries an answer could include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every entry (a supervisory organisation).
    All,
    /// What this organisation (its number) may see.
    Org(String),
}

/// An audit query or summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQueried {
    /// The privacy officer who asked.
    pub actor: Actor,
    /// The jobseeker the query named, if any.
    pub subject_pseudonym: Option<[u8; 32]>,
    /// What was asked, or the refusal.
    pub access: Access<AuditQuery>,
    /// The caller's vouched login, if any.
    pub login: Option<Login>,
}

/// What an answered audit query asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditQuery {
    /// `QueryAudit`: matching entries.
    Entries(QueryFilter, Scope),
    /// `SummarizeAudit`: counts.
    Summary(SummaryFilter, Scope),
}

/// A `QueryAudit` filter; times are RFC 3339 text as the gateway recorded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFilter {
    /// Whether it named a subject (the entry carries the pseudonym).
    pub subject: bool,
    /// The organisation it named.
    pub orgnr: Option<String>,
    /// Entries at or after this time.
    pub from: Option<String>,
    /// Entries before this time.
    pub until: Option<String>,
    /// Kinds it was limited to (empty: any).
    pub kinds: Vec<EntryKind>,
    /// Reason codes it was limited to (empty: any).
    pub reasons: Vec<String>,
    /// The first index asked for.
    pub start_index: u64,
    /// The most entries asked for.
    pub limit: u32,
}

/// A `SummarizeAudit` filter; times are RFC 3339 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryFilter {
    /// Counted from this time.
    pub from: String,
    /// Counted until this time.
    pub until: Option<String>,
    /// Kinds counted (empty: any).
    pub kinds: Vec<EntryKind>,
    /// Reason codes counted (empty: any).
    pub reasons: Vec<String>,
}

/// A subject access report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectReportIssued {
    /// Who asked: the jobseeker themself or a privacy officer.
    pub actor: Actor,
    /// The jobseeker it is about.
    pub subject_pseudonym: [u8; 32],
    /// The scope it was issued in, or the refusal.
    pub access: Access<Scope>,
    /// The caller's vouched login, if any.
    pub login: Option<Login>,
}

/// The gateway started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStarted {
    /// The gateway's version (e.g. `0.1.0`).
    pub version: String,
}

/// The checkpoint signing key was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotated {
    /// The old key's label (C2SP key name and hash).
    pub old_key: String,
    /// The new key's label.
    pub new_key: String,
}

/// A read of consent records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentsRead {
    /// Who read.
    pub actor: Actor,
    /// The jobseeker whose consents were read or asked for (absent when a consent id was not
    /// visible: whether it exists is not recorded either).
    pub subject_pseudonym: Option<[u8; 32]>,
    /// What was read.
    pub read: ConsentRead,
    /// The caller's vouched login, if any.
    pub login: Option<Login>,
}

/// What a consent read was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentRead {
    /// `GetConsent` answered with this version.
    Get(ConsentRef),
    /// `GetConsent` of this consent id refused (reason code, e.g. `not_visible`).
    GetRefused {
        /// The consent id asked for (UUID text).
        consent_id: String,
        /// The reason code.
        reason: String,
    },
    /// `ListConsents` answered with this many versions on the page.
    List {
        /// Versions shown.
        shown: u32,
    },
    /// `ListConsents` refused (reason code, e.g. `not_permitted`).
    ListRefused(String),
}
