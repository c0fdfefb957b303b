//! Audit entries and their versioned canonical binary encoding. The encoded bytes are what the
//! log stores and what the Merkle tree hashes; verification never re-serialises.
//!
//! Version 1 layout (integers big-endian):
//!
//! ```text
//! u8  version = 1
//! u8  kind
//! i64 time, microseconds since the Unix epoch (UTC)
//! u16 presence flags, one bit per optional field below, in order
//! then each present field, in order:
//!   actor             str orgnr, str user_id, str role, [32] certificate SHA-256
//!   subject_pseudonym [32]
//!   consent           str id, u32 version, [32] record SHA-256
//!   category, purpose, sender_orgnr, recipient_orgnr       str each
//!   content_sha256    [32]
//!   reason, request_id, policy_version, disclosure_id, detail  str each
//! str = u16 length + UTF-8 bytes
//! ```
//!
//! Decoding rejects an unknown version or kind, unknown flag bits, invalid UTF-8, truncation and
//! trailing bytes, so every byte string has at most one meaning and re-encodes to itself.

use std::fmt;

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
    /// A disclosure was refused; `reason` holds the reason code.
    DisclosureRefused = 4,
    /// A note was delivered to its recipient.
    NoteDelivered = 5,
    /// The recipient acknowledged a delivered note.
    NoteAcknowledged = 6,
    /// A note was purged; `reason` says why (e.g. `consent_withdrawn`, `ttl_elapsed`).
    NotePurged = 7,
    /// The audit log was queried or summarised; `detail` holds the filter.
    AuditQueried = 8,
    /// A subject access report was issued.
    SubjectReportIssued = 9,
    /// The gateway started.
    GatewayStarted = 10,
    /// The checkpoint signing key was replaced; `detail` names the old and new keys.
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
    /// What the entry records.
    pub kind: EntryKind,
    /// Microseconds since the Unix epoch, UTC.
    pub time_micros: i64,
    /// Who caused it; `None` for the gateway's own entries (e.g. [`EntryKind::GatewayStarted`]).
    pub actor: Option<Actor>,
    /// The jobseeker it is about, as a keyed pseudonym (HMAC-SHA-256 of the identity number
    /// under a gateway secret).
    pub subject_pseudonym: Option<[u8; 32]>,
    /// The consent version granted, withdrawn or relied on.
    pub consent: Option<ConsentRef>,
    /// The note's category of information (a vocabulary term).
    pub category: Option<String>,
    /// The note's purpose of disclosure (a vocabulary term).
    pub purpose: Option<String>,
    /// The sending organisation's number.
    pub sender_orgnr: Option<String>,
    /// The receiving organisation's number.
    pub recipient_orgnr: Option<String>,
    /// SHA-256 of the note body; never the body.
    pub content_sha256: Option<[u8; 32]>,
    /// Reason code of a refusal or purge.
    pub reason: Option<String>,
    /// The sender's idempotency key for a disclosure.
    pub request_id: Option<String>,
    /// The policy a disclosure decision was taken under (e.g. `casegate-policy-2`).
    pub policy_version: Option<String>,
    /// The gateway's id of a note (UUID text).
    pub disclosure_id: Option<String>,
    /// Kind-specific detail free of personal data (an audit query's filter, a key id).
    pub detail: Option<String>,
}

impl Entry {
    /// An entry of `kind` at `time_micros` with every optional field empty.
    pub fn new(kind: EntryKind, time_micros: i64) -> Self {
        Self {
            kind,
            time_micros,
            actor: None,
            subject_pseudonym: None,
            consent: None,
            category: None,
            purpose: None,
            sender_orgnr: None,
            recipient_orgnr: None,
            content_sha256: None,
            reason: None,
            request_id: None,
            policy_version: None,
            disclosure_id: None,
            detail: None,
        }
    }
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
}

const F_ACTOR: u16 = 1 << 0;
const F_SUBJECT: u16 = 1 << 1;
const F_CONSENT: u16 = 1 << 2;
const F_CATEGORY: u16 = 1 << 3;
const F_PURPOSE: u16 = 1 << 4;
const F_SENDER: u16 = 1 << 5;
const F_RECIPIENT: u16 = 1 << 6;
const F_CONTENT: u16 = 1 << 7;
const F_REASON: u16 = 1 << 8;
const F_REQUEST: u16 = 1 << 9;
const F_POLICY: u16 = 1 << 10;
const F_DISCLOSURE: u16 = 1 << 11;
const F_DETAIL: u16 = 1 << 12;
const F_ALL: u16 = (1 << 13) - 1;

// === encoding ===

struct Writer(Vec<u8>);

impl Writer {
    fn str(&mut self, s: &str) -> Result<(), EncodeError> {
        let len = u16::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong)?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Entry {
    /// The canonical version-1 encoding.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for a text field longer than 65,535 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
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
        } = self;
        let flag = |present: bool, bit: u16| if present { bit } else { 0 };
        let flags = flag(actor.is_some(), F_ACTOR)
            | flag(subject_pseudonym.is_some(), F_SUBJECT)
            | flag(consent.is_some(), F_CONSENT)
            | flag(category.is_some(), F_CATEGORY)
            | flag(purpose.is_some(), F_PURPOSE)
            | flag(sender_orgnr.is_some(), F_SENDER)
            | flag(recipient_orgnr.is_some(), F_RECIPIENT)
            | flag(content_sha256.is_some(), F_CONTENT)
            | flag(reason.is_some(), F_REASON)
            | flag(request_id.is_some(), F_REQUEST)
            | flag(policy_version.is_some(), F_POLICY)
            | flag(disclosure_id.is_some(), F_DISCLOSURE)
            | flag(detail.is_some(), F_DETAIL);
        let mut w = Writer(Vec::with_capacity(192));
        w.0.push(VERSION);
        w.0.push(kind.code());
        w.0.extend_from_slice(&time_micros.to_be_bytes());
        w.0.extend_from_slice(&flags.to_be_bytes());
        if let Some(a) = actor {
            w.str(&a.orgnr)?;
            w.str(&a.user_id)?;
            w.str(&a.role)?;
            w.0.extend_from_slice(&a.cert_sha256);
        }
        if let Some(p) = subject_pseudonym {
            w.0.extend_from_slice(p);
        }
        if let Some(c) = consent {
            w.str(&c.id)?;
            w.0.extend_from_slice(&c.version.to_be_bytes());
            w.0.extend_from_slice(&c.record_sha256);
        }
        for s in [category, purpose, sender_orgnr, recipient_orgnr]
            .into_iter()
            .flatten()
        {
            w.str(s)?;
        }
        if let Some(h) = content_sha256 {
            w.0.extend_from_slice(h);
        }
        for s in [reason, request_id, policy_version, disclosure_id, detail]
            .into_iter()
            .flatten()
        {
            w.str(s)?;
        }
        Ok(w.0)
    }
}

// === decoding ===

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_be_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
    }

    fn opt_str(&mut self, flags: u16, bit: u16) -> Result<Option<String>, DecodeError> {
        if flags & bit != 0 {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_hash(&mut self, flags: u16, bit: u16) -> Result<Option<[u8; 32]>, DecodeError> {
        if flags & bit != 0 {
            self.array().map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Entry {
    /// The time (µs since the Unix epoch) of the entry encoded in `bytes`, read from its fixed
    /// header (version, kind, time, flags) without decoding the rest: `Some` for every byte
    /// string [`Entry::decode`] accepts, with the same time; `None` where that header is not
    /// version 1's.
    pub fn time_of(bytes: &[u8]) -> Option<i64> {
        let header: &[u8; 12] = bytes.get(..12)?.try_into().ok()?;
        let [version, kind, time @ .., f0, f1] = *header;
        (version == VERSION
            && EntryKind::from_code(kind).is_some()
            && u16::from_be_bytes([f0, f1]) & !F_ALL == 0)
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

    /// Decodes exactly one entry from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let [version] = r.array::<1>().map_err(|_| DecodeError::Empty)?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let [kind] = r.array::<1>()?;
        let kind = EntryKind::from_code(kind).ok_or(DecodeError::UnknownKind(kind))?;
        let time_micros = i64::from_be_bytes(r.array()?);
        let flags = u16::from_be_bytes(r.array()?);
        if flags & !F_ALL != 0 {
            return Err(DecodeError::UnknownFlags(flags & !F_ALL));
        }
        let actor = if flags & F_ACTOR != 0 {
            Some(Actor {
                orgnr: r.str()?,
                user_id: r.str()?,
                role: r.str()?,
                cert_sha256: r.array()?,
            })
        } else {
            None
        };
        let subject_pseudonym = r.opt_hash(flags, F_SUBJECT)?;
        let consent = if flags & F_CONSENT != 0 {
            Some(ConsentRef {
                id: r.str()?,
                version: u32::from_be_bytes(r.array()?),
                record_sha256: r.array()?,
            })
        } else {
            None
        };
        let entry = Entry {
            kind,
            time_micros,
            actor,
            subject_pseudonym,
            consent,
            category: r.opt_str(flags, F_CATEGORY)?,
            purpose: r.opt_str(flags, F_PURPOSE)?,
            sender_orgnr: r.opt_str(flags, F_SENDER)?,
            recipient_orgnr: r.opt_str(flags, F_RECIPIENT)?,
            content_sha256: r.opt_hash(flags, F_CONTENT)?,
            reason: r.opt_str(flags, F_REASON)?,
            request_id: r.opt_str(flags, F_REQUEST)?,
            policy_version: r.opt_str(flags, F_POLICY)?,
            disclosure_id: r.opt_str(flags, F_DISCLOSURE)?,
            detail: r.opt_str(flags, F_DETAIL)?,
        };
        if !r.0.is_empty() {
            return Err(DecodeError::TrailingBytes(r.0.len()));
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_ æøåÆØÅ-]{0,40}"
    }

    fn hash() -> impl Strategy<Value = [u8; 32]> {
        any::<[u8; 32]>()
    }

    prop_compose! {
        fn actor()(orgnr in "[0-9]{9}", user_id in text(), role in text(), cert_sha256 in hash()) -> Actor {
            Actor { orgnr, user_id, role, cert_sha256 }
        }
    }

    prop_compose! {
        fn consent()(id in text(), version in any::<u32>(), record_sha256 in hash()) -> ConsentRef {
            ConsentRef { id, version, record_sha256 }
        }
    }

    prop_compose! {
        fn entry()(
            kind in prop::sample::select(EntryKind::ALL.to_vec()),
            time_micros in any::<i64>(),
            actor in prop::option::of(actor()),
            subject_pseudonym in prop::option::of(hash()),
            consent in prop::option::of(consent()),
            strings in prop::collection::vec(prop::option::of(text()), 9),
            content_sha256 in prop::option::of(hash()),
        ) -> Entry {
            let mut s = strings.into_iter();
            let mut next = || s.next().flatten();
            Entry {
                kind, time_micros, actor, subject_pseudonym, consent,
                category: next(), purpose: next(), sender_orgnr: next(), recipient_orgnr: next(),
                content_sha256,
                reason: next(), request_id: next(), policy_version: next(), disclosure_id: next(),
                detail: next(),
            }
        }
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(e in entry()) {
            let bytes = e.encode().expect("encodes");
            prop_assert_eq!(Entry::time_of(&bytes), Some(e.time_micros));
            prop_assert_eq!(Entry::decode(&bytes), Ok(e));
        }

        #[test]
        fn every_proper_prefix_is_truncated_and_any_suffix_is_trailing(e in entry(), extra in 1usize..8) {
            let bytes = e.encode().expect("encodes");
            for cut in 1..bytes.len() {
                prop_assert_eq!(Entry::decode(&bytes[..cut]), Err(DecodeError::Truncated));
            }
            let mut longer = bytes.clone();
            longer.extend(std::iter::repeat_n(0u8, extra));
            prop_assert_eq!(Entry::decode(&longer), Err(DecodeError::TrailingBytes(extra)));
        }

        #[test]
        fn accepted_bytes_re_encode_to_themselves(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(e) = Entry::decode(&bytes) {
                prop_assert_eq!(Entry::time_of(&bytes), Some(e.time_micros));
                prop_assert_eq!(e.encode().expect("encodes"), bytes);
            }
        }
    }

    #[test]
    fn version_kind_and_flags_are_checked() {
        let bytes = Entry::new(EntryKind::GatewayStarted, 1)
            .encode()
            .expect("encodes");
        assert_eq!(bytes.len(), 12);
        assert_eq!(Entry::decode(&[]), Err(DecodeError::Empty));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(Entry::decode(&v2), Err(DecodeError::UnknownVersion(2)));
        let mut kind = bytes.clone();
        kind[1] = 99;
        assert_eq!(Entry::decode(&kind), Err(DecodeError::UnknownKind(99)));
        let mut flags = bytes.clone();
        flags[10] = 0x80;
        assert_eq!(
            Entry::decode(&flags),
            Err(DecodeError::UnknownFlags(0x8000))
        );
        let long = Entry {
            detail: Some("x".repeat(70_000)),
            ..Entry::new(EntryKind::AuditQueried, 0)
        };
        assert_eq!(long.encode(), Err(EncodeError::FieldTooLong));
    }
}
