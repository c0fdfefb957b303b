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
    ConsentGranted = 1,
    ConsentWithdrawn = 2,
    DisclosurePermitted = 3,
    DisclosureRefused = 4,
    NoteDelivered = 5,
    NoteAcknowledged = 6,
    NotePurged = 7,
    AuditQueried = 8,
    SubjectReportIssued = 9,
    GatewayStarted = 10,
    KeyRotated = 11,
    /// A dry-run decision (`CheckDisclosure`) about a subject, with the answer given.
    DisclosureChecked = 12,
    /// A read of a subject's consent records (`GetConsent`, `ListConsents`).
    ConsentsRead = 13,
}

impl EntryKind {
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

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

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
    pub orgnr: String,
    pub user_id: String,
    pub role: String,
    pub cert_sha256: [u8; 32],
}

/// The consent version a decision relied on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRef {
    pub id: String,
    pub version: u32,
    pub record_sha256: [u8; 32],
}

/// One audit entry. Never holds note content or identity numbers: the jobseeker appears only
/// as a keyed pseudonym, a note only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Microseconds since the Unix epoch, UTC.
    pub time_micros: i64,
    pub actor: Option<Actor>,
    pub subject_pseudonym: Option<[u8; 32]>,
    pub consent: Option<ConsentRef>,
    pub category: Option<String>,
    pub purpose: Option<String>,
    pub sender_orgnr: Option<String>,
    pub recipient_orgnr: Option<String>,
    pub content_sha256: Option<[u8; 32]>,
    /// Reason code of a refusal or purge.
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub policy_version: Option<String>,
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
    #[error("empty entry")]
    Empty,
    #[error("unknown entry encoding version {0}")]
    UnknownVersion(u8),
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    #[error("unknown presence flags {0:#06x}")]
    UnknownFlags(u16),
    #[error("entry is truncated")]
    Truncated,
    #[error("{0} trailing bytes after the entry")]
    TrailingBytes(usize),
    #[error("a text field is not UTF-8")]
    InvalidUtf8,
}

/// Why an entry cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
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
