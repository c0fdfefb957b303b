//! Consent records (modelled on FHIR R5 Consent): who granted what to whom, for what purpose,
//! for how long, on what evidence. A version is immutable once stored; a change is a new
//! version, and a withdrawal is final.

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Category, OrgNumber, Purpose, Role, SubjectId, Vocabulary};

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

/// A consent's id (a UUID), stable across its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsentId(uuid::Uuid);

impl ConsentId {
    /// A new, time-ordered id (UUIDv7).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The UUID's 16 bytes, as the store keys and the decision index hold them.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id whose UUID is these 16 bytes (any bytes are accepted).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }
}

impl FromStr for ConsentId {
    type Err = RecordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| RecordError::ConsentIdFormat)
    }
}

impl fmt::Display for ConsentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a consent cannot be built as asked. Messages never repeat personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Text that is not a UUID.
    #[error("a consent id is a UUID")]
    ConsentIdFormat,
    /// A list that must not be empty is (which one goes with it: [`ProvisionPart`]).
    #[error("must not be empty")]
    Empty,
    /// A category the vocabulary does not hold; holds the term.
    #[error("unknown category {0:?} (not in the gateway's vocabulary)")]
    UnknownCategory(String),
    /// A purpose the vocabulary does not hold; holds the term.
    #[error("unknown purpose {0:?} (not in the gateway's vocabulary)")]
    UnknownPurpose(String),
    /// A period whose end is not after its start.
    #[error("end must be after start")]
    PeriodOrder,
    /// A period longer than the longest allowed.
    #[error("is longer than the maximum consent period of {max_days} days")]
    PeriodTooLong {
        /// The longest period allowed, in whole days (rounded down).
        max_days: i64,
    },
}

/// An organisation, optionally narrowed to some of its roles (empty: every role).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Party {
    /// The organisation.
    pub orgnr: OrgNumber,
    /// The roles covered; empty covers every role of the organisation.
    pub roles: BTreeSet<Role>,
}

impl Party {
    /// Whether someone of `orgnr` acting as `role` is this party. An unknown role (`None`,
    /// e.g. delivery to a whole organisation) is covered only by a party without narrowing.
    pub fn covers(&self, orgnr: OrgNumber, role: Option<Role>) -> bool {
        self.orgnr == orgnr
            && (self.roles.is_empty() || role.is_some_and(|r| self.roles.contains(&r)))
    }
}

/// What a consent allows: every sender may send every category to every recipient for every
/// purpose. [`Provision::new`] checks that the four lists are non-empty and that their terms
/// are in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provision {
    /// Who may send.
    pub senders: Vec<Party>,
    /// Who may receive.
    pub recipients: Vec<Party>,
    /// The categories of information that may be sent.
    pub categories: BTreeSet<Category>,
    /// The purposes they may be sent for.
    pub purposes: BTreeSet<Purpose>,
}

/// Which part of a [`Provision`] is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionPart {
    /// [`Provision::senders`].
    Senders,
    /// [`Provision::recipients`].
    Recipients,
    /// [`Provision::categories`].
    Categories,
    /// [`Provision::purposes`].
    Purposes,
}

impl Provision {
    /// A provision whose four lists are non-empty and whose terms are in `vocabulary`.
    ///
    /// # Errors
    /// The first part found wrong, in field order, with [`RecordError::Empty`], then
    /// [`RecordError::UnknownCategory`] or [`RecordError::UnknownPurpose`].
    pub fn new(
        senders: Vec<Party>,
        recipients: Vec<Party>,
        categories: BTreeSet<Category>,
        purposes: BTreeSet<Purpose>,
        vocabulary: &Vocabulary,
    ) -> Result<Self, (ProvisionPart, RecordError)> {
        use ProvisionPart::*;
        if senders.is_empty() {
            return Err((Senders, RecordError::Empty));
        }
        if recipients.is_empty() {
            return Err((Recipients, RecordError::Empty));
        }
        if categories.is_empty() {
            return Err((Categories, RecordError::Empty));
        }
        if purposes.is_empty() {
            return Err((Purposes, RecordError::Empty));
        }
        if let Some(c) = categories.iter().find(|c| vocabulary.category(c).is_none()) {
            return Err((Categories, RecordError::UnknownCategory(c.to_string())));
        }
        if let Some(p) = purposes.iter().find(|p| !vocabulary.has_purpose(p)) {
            return Err((Purposes, RecordError::UnknownPurpose(p.to_string())));
        }
        Ok(Self {
            senders,
            recipients,
            categories,
            purposes,
        })
    }

    /// Whether `org` is named in this provision, as sender or recipient.
    pub fn names(&self, org: OrgNumber) -> bool {
        self.senders
            .iter()
            .chain(&self.recipients)
            .any(|p| p.orgnr == org)
    }
}

/// A half-open validity period: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// The first instant in force.
    pub start: Timestamp,
    /// The first instant no longer in force.
    pub end: Timestamp,
}

impl Period {
    /// A period of positive length no longer than `max_micros` (microseconds).
    ///
    /// # Errors
    /// [`RecordError::PeriodOrder`] when `end` is not after `start`,
    /// [`RecordError::PeriodTooLong`] when it is longer than `max_micros`.
    pub fn new(start: Timestamp, end: Timestamp, max_micros: i64) -> Result<Self, RecordError> {
        if end <= start {
            return Err(RecordError::PeriodOrder);
        }
        if end.0.saturating_sub(start.0) > max_micros {
            return Err(RecordError::PeriodTooLong {
                max_days: max_micros / 86_400_000_000,
            });
        }
        Ok(Self { start, end })
    }

    /// Whether `t` is in the period: `start <= t < end`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// How the jobseeker's consent was obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// Granted by the jobseeker themself, authenticated as this token subject.
    Digital {
        /// The token subject (`sub`) the jobseeker authenticated as.
        authenticated_as: String,
    },
    /// A form signed by the jobseeker, kept by the recording organisation.
    SignedForm {
        /// SHA-256 of the signed form (the scan or the electronic document).
        sha256: [u8; 32],
        /// Where the recording organisation keeps the form, e.g. a document id.
        reference: String,
    },
    /// Given orally, with a witness.
    Verbal {
        /// The witness's user id at the recording organisation.
        witness_user_id: String,
        /// The role the witness acts in.
        witness_role: Role,
        /// When the consent was given.
        given_at: Timestamp,
    },
}

/// Who recorded something, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The organisation acted for.
    pub orgnr: OrgNumber,
    /// The person's user id at their organisation's identity provider (a token's `sub`).
    pub user_id: String,
    /// The role acted in.
    pub role: Role,
}

/// A version's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The consent's current version, not withdrawn (in force during its period).
    Active,
    /// Replaced by a later version of the same consent.
    Superseded,
    /// Withdrawn; final.
    Withdrawn,
}

/// When and by whom a version was withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// When it was withdrawn.
    pub at: Timestamp,
    /// Who recorded the withdrawal.
    pub by: Actor,
    /// Free text given with it; a jobseeker never has to give a reason.
    pub reason: Option<String>,
    /// Evidence when a professional recorded the withdrawal.
    pub evidence: Option<Evidence>,
}

/// What a grant says, before the store gives it an id and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    /// The jobseeker the consent is about.
    pub subject: SubjectId,
    /// Who recorded it: the jobseeker, or a professional for them.
    pub recorded_by: Actor,
    /// What it allows.
    pub provisions: Vec<Provision>,
    /// When it is in force.
    pub period: Period,
    /// How it was obtained.
    pub evidence: Evidence,
}

/// One version of a consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// The consent's id, the same in every version.
    pub id: ConsentId,
    /// The version number: 1 for a new consent, one more for each that supersedes it.
    pub version: u32,
    /// The jobseeker the consent is about.
    pub subject: SubjectId,
    /// Who recorded it: the jobseeker, or a professional for them.
    pub recorded_by: Actor,
    /// What it allows.
    pub provisions: Vec<Provision>,
    /// When it is in force.
    pub period: Period,
    /// How it was obtained.
    pub evidence: Evidence,
    /// When the store built this version.
    pub recorded_at: Timestamp,
    /// The stored state (never expired: see [`ConsentRecord::status_at`]).
    pub status: Status,
    /// Set when [`ConsentRecord::status`] is [`Status::Withdrawn`].
    pub withdrawal: Option<Withdrawal>,
}

/// The immutable content of a version, in the fixed order its hash is taken over.
#[derive(Serialize)]
struct Content<'a> {
    format: &'static str,
    id: &'a ConsentId,
    version: u32,
    subject: &'a SubjectId,
    recorded_by: &'a Actor,
    provisions: &'a [Provision],
    period: &'a Period,
    evidence: &'a Evidence,
    recorded_at: Timestamp,
}

/// [`Content`] read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedContent {
    format: String,
    id: ConsentId,
    version: u32,
    subject: SubjectId,
    recorded_by: Actor,
    provisions: Vec<Provision>,
    period: Period,
    evidence: Evidence,
    recorded_at: Timestamp,
}

/// Names the content encoding that record hashes are taken over.
pub const RECORD_FORMAT: &str = "casegate.consent.v1";

impl ConsentRecord {
    /// The canonical encoding of this version's immutable content (JSON with a fixed field
    /// order; sets are sorted): what audit entries pin by hash and replays re-check.
    pub fn canonical_content(&self) -> Vec<u8> {
        let content = Content {
            format: RECORD_FORMAT,
            id: &self.id,
            version: self.version,
            subject: &self.subject,
            recorded_by: &self.recorded_by,
            provisions: &self.provisions,
            period: &self.period,
            evidence: &self.evidence,
            recorded_at: self.recorded_at,
        };
        serde_json::to_vec(&content).unwrap_or_default()
    }

    /// A version read back from its canonical content, as active and not withdrawn (its
    /// status at a given time comes from the audit log). Its [`ConsentRecord::record_hash`]
    /// is what an audit entry pins only if the content is unaltered.
    pub fn from_canonical_content(bytes: &[u8]) -> Result<Self, String> {
        let content: OwnedContent = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if content.format != RECORD_FORMAT {
            return Err(format!(
                "format {:?} is not {RECORD_FORMAT:?}",
                content.format
            ));
        }
        Ok(Self {
            id: content.id,
            version: content.version,
            subject: content.subject,
            recorded_by: content.recorded_by,
            provisions: content.provisions,
            period: content.period,
            evidence: content.evidence,
            recorded_at: content.recorded_at,
            status: Status::Active,
            withdrawal: None,
        })
    }

    /// SHA-256 of [`ConsentRecord::canonical_content`].
    pub fn record_hash(&self) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.canonical_content());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// Whether `org` is named anywhere in this version.
    pub fn names(&self, org: OrgNumber) -> bool {
        self.provisions.iter().any(|p| p.names(org))
    }

    /// The status as seen at `now`: an active version past its end reads as expired.
    pub fn status_at(&self, now: Timestamp) -> ViewStatus {
        match self.status {
            Status::Withdrawn => ViewStatus::Withdrawn,
            Status::Superseded => ViewStatus::Superseded,
            Status::Active if now >= self.period.end => ViewStatus::Expired,
            Status::Active => ViewStatus::Active,
        }
    }
}

/// A version's status as shown to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewStatus {
    /// Active and its period not ended (it may not have begun).
    Active,
    /// Withdrawn; final.
    Withdrawn,
    /// Replaced by a later version.
    Superseded,
    /// Active in the store, but its period has ended.
    Expired,
}
