//! Audit entries — a time and a typed [`Event`] — and their versioned canonical binary
//! encoding. The encoded bytes are what the log stores and what the Merkle tree hashes;
//! verification never re-serialises.
//!
//! Version 1 ([`layout`]) lays every kind out as the same thirteen optional fields, with
//! kind-specific facts in a `detail` text. Encoding lays the event out so; decoding reads the
//! fields back into the one event that lays out to exactly them. An entry no event fits
//! (an older `detail` form, a field its kind never has) decodes to [`Event::Unfitted`], kept
//! whole: never an error, never dropped.
//!
//! **Invariant:** decoding rejects an unknown version or kind, unknown flag bits, invalid
//! UTF-8, truncation and trailing bytes, so every byte string has at most one meaning and
//! re-encodes to itself; encoding refuses an event that would not decode to itself.

use std::fmt;

mod detail;
mod event;
mod fit;
mod layout;

pub use event::{
    Access, Answer, AuditQueried, AuditQuery, ConsentChange, ConsentRead, ConsentsRead,
    DecisionTerms, DisclosureChecked, DisclosurePermitted, DisclosureRefused, Event,
    GatewayStarted, KeyRotated, Login, NoteHandled, NotePurged, NoteRef, QueryFilter, Scope,
    SubjectReportIssued, SummaryFilter, Unfitted,
};
pub use layout::Fields;

/// The encoding version written by [`Entry::encode`].
pub const VERSION: u8 = 1;

/// What an entry records. Ordered by code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// A consent version was granted.
    ConsentGranted = 1,
    /// A consent version was withdrawn.
    ConsentWithdrawn = 2,
    /// A note was accepted for disclosure under a consent.
    DisclosurePermitted = 3,
    /// A disclosure was refused.
    DisclosureRefused = 4,
    /// A note was delivered to its recipient.
    NoteDelivered = 5,
    /// The recipient acknowledged a delivered note.
    NoteAcknowledged = 6,
    /// A note was purged.
    NotePurged = 7,
    /// The audit log was queried or summarised.
    AuditQueried = 8,
    /// A subject access report was issued.
    SubjectReportIssued = 9,
    /// The gateway started.
    GatewayStarted = 10,
    /// The checkpoint signing key was replaced.
    KeyRotated = 11,
    /// A dry-run decision (`CheckDisclosure`) about a subject, with the answer given.
    DisclosureChecked = 12,
    /// A read of a subject's consent records (`GetConsent`, `ListConsents`).
    ConsentsRead = 13,
}

impl EntryKind {
    /// Every kind, in code order.
    pub const ALL: [EntryKind; 13] = [
        EntryKind::ConsentGranted,
        EntryKind::ConsentWithdrawn,
        EntryKind::DisclosurePermitted,
        EntryKind::DisclosureRefused,
        EntryKind::NoteDelivered,
        EntryKind::NoteAcknowledged,
        EntryKind::NotePurged,
        EntryKind::AuditQueried,
        EntryKind::SubjectReportIssued,
        EntryKind::GatewayStarted,
        EntryKind::KeyRotated,
        EntryKind::DisclosureChecked,
        EntryKind::ConsentsRead,
    ];

    /// The kind's byte in the encoding (1-13).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind whose code is `code`, or `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The lower snake case name, e.g. `consent_granted`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::ConsentGranted => "consent_granted",
            EntryKind::ConsentWithdrawn => "consent_withdrawn",
            EntryKind::DisclosurePermitted => "disclosure_permitted",
            EntryKind::DisclosureRefused => "disclosure_refused",
            EntryKind::NoteDelivered => "note_delivered",
            EntryKind::NoteAcknowledged => "note_acknowledged",
            EntryKind::NotePurged => "note_purged",
            EntryKind::AuditQueried => "audit_queried",
            EntryKind::SubjectReportIssued => "subject_report_issued",
            EntryKind::GatewayStarted => "gateway_started",
            EntryKind::KeyRotated => "key_rotated",
            EntryKind::DisclosureChecked => "disclosure_checked",
            EntryKind::ConsentsRead => "consents_read",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused an entry, as the gateway authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The organisation number (9 digits) acted for.
    pub orgnr: String,
    /// The person's user id at their organisation's identity provider.
    pub user_id: String,
    /// The role acted in, as its token spelling (e.g. `nav_counsellor`).
    pub role: String,
    /// SHA-256 of the client certificate (DER) the call came over.
    pub cert_sha256: [u8; 32],
}

/// The consent version a decision relied on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRef {
    /// The consent id (UUID text).
    pub id: String,
    /// The version number.
    pub version: u32,
    /// SHA-256 of the version's canonical content (`casegate.consent.v1`).
    pub record_sha256: [u8; 32],
}

/// One audit entry. Never holds note content or identity numbers: the jobseeker appears only
/// as a keyed pseudonym, a note only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Microseconds since the Unix epoch, UTC.
    pub time_micros: i64,
    /// What happened.
    pub event: Event,
}

/// Why bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty entry")]
    Empty,
    /// The first byte is not [`VERSION`]; holds it.
    #[error("unknown entry encoding version {0}")]
    UnknownVersion(u8),
    /// The kind byte is not an [`EntryKind`] code; holds it.
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    /// Presence flags beyond the 13 defined; holds the unknown bits.
    #[error("unknown presence flags {0:#06x}")]
    UnknownFlags(u16),
    /// The bytes end inside a field.
    #[error("entry is truncated")]
    Truncated,
    /// Bytes follow the entry; holds how many.
    #[error("{0} trailing bytes after the entry")]
    TrailingBytes(usize),
    /// A text field is not valid UTF-8.
    #[error("a text field is not UTF-8")]
    InvalidUtf8,
}

/// Why an entry cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A text field is longer than its `u16` length can say (65,535 bytes).
    #[error("a text field is longer than 65535 bytes")]
    FieldTooLong,
    /// The event's text would not read back as itself (e.g. a login or reason code with a
    /// space, a key label containing ` replaced by `); holds why.
    #[error("the {kind} entry would not decode to itself: {why}")]
    Ambiguous {
        /// The event's kind.
        kind: EntryKind,
        /// What reads back differently.
        why: String,
    },
}

impl Entry {
    /// An entry recording `event` at `time_micros`.
    pub fn new(time_micros: i64, event: Event) -> Self {
        Self { time_micros, event }
    }

    /// The entry that `fields` of `kind` decode to: the typed event that lays out to exactly
    /// them, or [`Event::Unfitted`] holding them. For tools and tests that start from the
    /// version-1 layout; the gateway builds typed events.
    pub fn from_fields(kind: EntryKind, time_micros: i64, fields: Fields) -> Self {
        let event = fit::event(kind, &fields)
            .unwrap_or_else(|why| Event::Unfitted(Unfitted { kind, fields, why }));
        Self { time_micros, event }
    }

    /// The kind of entry (an unfitted entry's recorded kind).
    pub fn kind(&self) -> EntryKind {
        fit::kind(&self.event)
    }

    /// The canonical version-1 encoding.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for a text field longer than 65,535 bytes;
    /// [`EncodeError::Ambiguous`] for an event whose bytes would decode to another event.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let kind = self.kind();
        let fields = fit::fields(&self.event);
        let bytes = layout::encode(kind, self.time_micros, &fields)?;
        let decoded = match &self.event {
            Event::Unfitted(u) => match fit::event(kind, &u.fields) {
                Ok(_) => Err("a typed event fits its fields".to_owned()),
                Err(why) if why == u.why => Ok(()),
                Err(why) => Err(format!("it does not fit because {why}")),
            },
            // Without a `detail` text the fields are the event's own, one for one, and read
            // back to it (debug builds check it; the tests run every event the gateway
            // writes); a text is parsed back, which is where a value can be ambiguous (a
            // login with a space in it). Reading the fields back to this event is enough:
            // its fields are the ones read.
            _ if fields.detail.is_none() && !cfg!(debug_assertions) => Ok(()),
            event => match fit::read(kind, fields.to_fields()) {
                Ok(read) if read == *event => Ok(()),
                Ok(_) => Err("it reads back as another event".to_owned()),
                Err(why) => Err(why),
            },
        };
        decoded.map_err(|why| EncodeError::Ambiguous { kind, why })?;
        Ok(bytes)
    }

    /// Decodes exactly one entry from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (kind, time_micros, fields) = layout::decode(bytes)?;
        Ok(Self::from_fields(kind, time_micros, fields))
    }

    /// The time (µs since the Unix epoch) of the entry `bytes` encode, checking that they are
    /// one canonical version-1 entry without building its typed event: it accepts exactly
    /// the byte strings [`Entry::decode`] accepts, refusing the others with the same error
    /// (every byte string decodes to an event, [`Event::Unfitted`] at worst). What the
    /// offline verifier needs of each entry.
    pub fn check(bytes: &[u8]) -> Result<i64, DecodeError> {
        layout::decode(bytes).map(|(_, time_micros, _)| time_micros)
    }

    /// The time (µs since the Unix epoch) of the entry encoded in `bytes`, read from its fixed
    /// header (version, kind, time, flags) without decoding the rest: `Some` for every byte
    /// string [`Entry::decode`] accepts, with the same time; `None` where that header is not
    /// version 1's.
    pub fn time_of(bytes: &[u8]) -> Option<i64> {
        let header: &[u8; 12] = bytes.get(..12)?.try_into().ok()?;
        let [version, kind, time @ .., f0, f1] = *header;
        (version == VERSION
            && EntryKind::from_code(kind).is_some()
            && u16::from_be_bytes([f0, f1]) & !layout::F_ALL == 0)
            .then(|| i64::from_be_bytes(time))
    }

    /// The kind of the entry encoded in `bytes`, read without decoding the rest (`None` when
    /// the header is not one this version writes).
    pub fn kind_of(bytes: &[u8]) -> Option<EntryKind> {
        match bytes {
            [VERSION, kind, ..] => EntryKind::from_code(*kind),
            _ => None,
        }
    }

    /// The version-1 `detail` text of this entry: what the wire's `AuditEntry.detail` shows
    /// (the typed facts as the gateway has always written them). For display, never parsed.
    pub fn detail_text(&self) -> Option<String> {
        fit::fields(&self.event)
            .detail
            .map(std::borrow::Cow::into_owned)
    }

    /// The version-1 fields of this entry: what its encoding holds, and what the wire's
    /// `AuditEntry` shows field by field.
    pub fn fields(&self) -> Fields {
        fit::fields(&self.event).to_fields()
    }
}

// === the facts several kinds share ===

impl Entry {
    /// Who caused it; `None` for the gateway's own entries.
    pub fn actor(&self) -> Option<&Actor> {
        match &self.event {
            Event::ConsentGranted(c) | Event::ConsentWithdrawn(c) => Some(&c.actor),
            Event::DisclosurePermitted(p) => Some(&p.terms.actor),
            Event::DisclosureRefused(r) => Some(&r.terms.actor),
            Event::DisclosureChecked(c) => Some(&c.terms.actor),
            Event::NoteDelivered(n) | Event::NoteAcknowledged(n) => Some(&n.actor),
            Event::NotePurged(p) => p.actor.as_ref(),
            Event::AuditQueried(q) => Some(&q.actor),
            Event::SubjectReportIssued(r) => Some(&r.actor),
            Event::ConsentsRead(r) => Some(&r.actor),
            Event::GatewayStarted(_) | Event::KeyRotated(_) => None,
            Event::Unfitted(u) => u.fields.actor.as_ref(),
        }
    }

    /// The jobseeker it is about (keyed pseudonym), if any.
    pub fn subject_pseudonym(&self) -> Option<[u8; 32]> {
        match &self.event {
            Event::ConsentGranted(c) | Event::ConsentWithdrawn(c) => Some(c.subject_pseudonym),
            Event::DisclosurePermitted(p) => Some(p.terms.subject_pseudonym),
            Event::DisclosureRefused(r) => Some(r.terms.subject_pseudonym),
            Event::DisclosureChecked(c) => Some(c.terms.subject_pseudonym),
            Event::NoteDelivered(n) | Event::NoteAcknowledged(n) => Some(n.note.subject_pseudonym),
            Event::NotePurged(p) => Some(p.note.subject_pseudonym),
            Event::AuditQueried(q) => q.subject_pseudonym,
            Event::SubjectReportIssued(r) => Some(r.subject_pseudonym),
            Event::ConsentsRead(r) => r.subject_pseudonym,
            Event::GatewayStarted(_) | Event::KeyRotated(_) => None,
            Event::Unfitted(u) => u.fields.subject_pseudonym,
        }
    }

    /// The consent version granted, withdrawn, relied on, read or nearest to a refusal.
    pub fn consent(&self) -> Option<&ConsentRef> {
        match &self.event {
            Event::ConsentGranted(c) | Event::ConsentWithdrawn(c) => Some(&c.consent),
            Event::DisclosurePermitted(p) => Some(&p.consent),
            Event::DisclosureRefused(r) => r.nearest_consent.as_ref(),
            Event::DisclosureChecked(c) => match &c.answer {
                Answer::Permit(consent) => Some(consent),
                Answer::Refuse(_) => None,
            },
            Event::NoteDelivered(n) | Event::NoteAcknowledged(n) => Some(&n.note.consent),
            Event::NotePurged(p) => Some(&p.note.consent),
            Event::ConsentsRead(r) => match &r.read {
                ConsentRead::Get(consent) => Some(consent),
                _ => None,
            },
            Event::AuditQueried(_)
            | Event::SubjectReportIssued(_)
            | Event::GatewayStarted(_)
            | Event::KeyRotated(_) => None,
            Event::Unfitted(u) => u.fields.consent.as_ref(),
        }
    }

    /// The terms of a disclosure or note: (category, purpose, sender, recipient).
    fn note_terms(&self) -> Option<(&str, &str, &str, &str)> {
        fn t<'a>(
            c: &'a str,
            p: &'a str,
            s: &'a str,
            r: &'a str,
        ) -> Option<(&'a str, &'a str, &'a str, &'a str)> {
            Some((c, p, s, r))
        }
        match &self.event {
            Event::DisclosurePermitted(p) => t(
                &p.terms.category,
                &p.terms.purpose,
                &p.terms.sender_orgnr,
                &p.terms.recipient_orgnr,
            ),
            Event::DisclosureRefused(r) => t(
                &r.terms.category,
                &r.terms.purpose,
                &r.terms.sender_orgnr,
                &r.terms.recipient_orgnr,
            ),
            Event::DisclosureChecked(c) => t(
                &c.terms.category,
                &c.terms.purpose,
                &c.terms.sender_orgnr,
                &c.terms.recipient_orgnr,
            ),
            Event::NoteDelivered(n) | Event::NoteAcknowledged(n) => t(
                &n.note.category,
                &n.note.purpose,
                &n.note.sender_orgnr,
                &n.note.recipient_orgnr,
            ),
            Event::NotePurged(p) => t(
                &p.note.category,
                &p.note.purpose,
                &p.note.sender_orgnr,
                &p.note.recipient_orgnr,
            ),
            _ => None,
        }
    }

    /// The category of information of a disclosure decision or note.
    pub fn category(&self) -> Option<&str> {
        match &self.event {
            Event::Unfitted(u) => u.fields.category.as_deref(),
            _ => self.note_terms().map(|t| t.0),
        }
    }

    /// The purpose of disclosure of a disclosure decision or note.
    pub fn purpose(&self) -> Option<&str> {
        match &self.event {
            Event::Unfitted(u) => u.fields.purpose.as_deref(),
            _ => self.note_terms().map(|t| t.1),
        }
    }

    /// The sending organisation of a disclosure decision or note.
    pub fn sender_orgnr(&self) -> Option<&str> {
        match &self.event {
            Event::Unfitted(u) => u.fields.sender_orgnr.as_deref(),
            _ => self.note_terms().map(|t| t.2),
        }
    }

    /// The receiving organisation of a disclosure decision or note.
    pub fn recipient_orgnr(&self) -> Option<&str> {
        match &self.event {
            Event::Unfitted(u) => u.fields.recipient_orgnr.as_deref(),
            _ => self.note_terms().map(|t| t.3),
        }
    }

    /// The reason code of a refusal or purge, if the entry records one.
    pub fn reason(&self) -> Option<&str> {
        match &self.event {
            Event::DisclosureRefused(r) => Some(&r.reason),
            Event::DisclosureChecked(DisclosureChecked {
                answer: Answer::Refuse(reason),
                ..
            }) => Some(reason),
            Event::NotePurged(p) => Some(&p.reason),
            Event::AuditQueried(AuditQueried {
                access: Access::Refused(reason),
                ..
            })
            | Event::SubjectReportIssued(SubjectReportIssued {
                access: Access::Refused(reason),
                ..
            }) => Some(reason),
            Event::ConsentsRead(r) => match &r.read {
                ConsentRead::GetRefused { reason, .. } | ConsentRead::ListRefused(reason) => {
                    Some(reason)
                }
                ConsentRead::Get(_) | ConsentRead::List { .. } => None,
            },
            Event::Unfitted(u) => u.fields.reason.as_deref(),
            _ => None,
        }
    }

    /// The gateway's id of the note a disclosure or note entry is about.
    pub fn disclosure_id(&self) -> Option<&str> {
        match &self.event {
            Event::DisclosurePermitted(p) => Some(&p.disclosure_id),
            Event::NoteDelivered(n) | Event::NoteAcknowledged(n) => Some(&n.note.disclosure_id),
            Event::NotePurged(p) => Some(&p.note.disclosure_id),
            Event::Unfitted(u) => u.fields.disclosure_id.as_deref(),
            _ => None,
        }
    }

    /// The upstream login the caller's backend-for-frontend vouched for, if recorded.
    pub fn login(&self) -> Option<&Login> {
        match &self.event {
            Event::ConsentGranted(c) | Event::ConsentWithdrawn(c) => c.login.as_ref(),
            Event::AuditQueried(q) => q.login.as_ref(),
            Event::SubjectReportIssued(r) => r.login.as_ref(),
            Event::ConsentsRead(r) => r.login.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
