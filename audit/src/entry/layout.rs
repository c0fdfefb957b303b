//! The version-1 byte layout: a kind, a time and thirteen optional fields behind presence
//! flags. Only [`super::Entry::encode`] and [`super::Entry::decode`] (and the [`Unfitted`]
//! fallback) see it; everything else reads typed events.
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
//! [`Unfitted`]: super::Unfitted

use std::borrow::Cow;

use super::{Actor, ConsentRef, DecodeError, EncodeError, EntryKind, VERSION};

/// An entry's fields exactly as version 1 lays them out: every field optional, kind-specific
/// facts as `detail` text. Held by [`super::Unfitted`] for an entry no typed event fits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fields {
    /// Who caused it.
    pub actor: Option<Actor>,
    /// The jobseeker's keyed pseudonym.
    pub subject_pseudonym: Option<[u8; 32]>,
    /// The consent version granted, withdrawn or relied on.
    pub consent: Option<ConsentRef>,
    /// The note's category of information.
    pub category: Option<String>,
    /// The note's purpose of disclosure.
    pub purpose: Option<String>,
    /// The sending organisation's number.
    pub sender_orgnr: Option<String>,
    /// The receiving organisation's number.
    pub recipient_orgnr: Option<String>,
    /// SHA-256 of the note body.
    pub content_sha256: Option<[u8; 32]>,
    /// A reason code.
    pub reason: Option<String>,
    /// The sender's idempotency key.
    pub request_id: Option<String>,
    /// The policy version of a decision.
    pub policy_version: Option<String>,
    /// The gateway's id of a note.
    pub disclosure_id: Option<String>,
    /// Kind-specific text.
    pub detail: Option<String>,
}

/// The same fields borrowed — from a typed event or from [`Fields`] — with only a `detail`
/// text built: what the encoder writes and what the fit check compares, without copying the
/// event's strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct View<'a> {
    pub(super) actor: Option<&'a Actor>,
    pub(super) subject_pseudonym: Option<&'a [u8; 32]>,
    pub(super) consent: Option<&'a ConsentRef>,
    pub(super) category: Option<&'a str>,
    pub(super) purpose: Option<&'a str>,
    pub(super) sender_orgnr: Option<&'a str>,
    pub(super) recipient_orgnr: Option<&'a str>,
    pub(super) content_sha256: Option<&'a [u8; 32]>,
    pub(super) reason: Option<&'a str>,
    pub(super) request_id: Option<&'a str>,
    pub(super) policy_version: Option<&'a str>,
    pub(super) disclosure_id: Option<&'a str>,
    pub(super) detail: Option<Cow<'a, str>>,
}

impl Fields {
    /// These fields, borrowed.
    pub(super) fn view(&self) -> View<'_> {
        View {
            actor: self.actor.as_ref(),
            subject_pseudonym: self.subject_pseudonym.as_ref(),
            consent: self.consent.as_ref(),
            category: self.category.as_deref(),
            purpose: self.purpose.as_deref(),
            sender_orgnr: self.sender_orgnr.as_deref(),
            recipient_orgnr: self.recipient_orgnr.as_deref(),
            content_sha256: self.content_sha256.as_ref(),
            reason: self.reason.as_deref(),
            request_id: self.request_id.as_deref(),
            policy_version: self.policy_version.as_deref(),
            disclosure_id: self.disclosure_id.as_deref(),
            detail: self.detail.as_deref().map(Cow::Borrowed),
        }
    }
}

impl View<'_> {
    /// The fields, owned.
    pub(super) fn to_fields(&self) -> Fields {
        let text = |s: Option<&str>| s.map(str::to_owned);
        Fields {
            actor: self.actor.cloned(),
            subject_pseudonym: self.subject_pseudonym.copied(),
            consent: self.consent.cloned(),
            category: text(self.category),
            purpose: text(self.purpose),
            sender_orgnr: text(self.sender_orgnr),
            recipient_orgnr: text(self.recipient_orgnr),
            content_sha256: self.content_sha256.copied(),
            reason: text(self.reason),
            request_id: text(self.request_id),
            policy_version: text(self.policy_version),
            disclosure_id: text(self.disclosure_id),
            detail: self.detail.as_deref().map(str::to_owned),
        }
    }
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
pub(super) const F_ALL: u16 = (1 << 13) - 1;

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

/// The canonical version-1 bytes of an entry of `kind` at `time_micros` with `fields`.
pub(super) fn encode(
    kind: EntryKind,
    time_micros: i64,
    fields: &View<'_>,
) -> Result<Vec<u8>, EncodeError> {
    let View {
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
    } = fields;
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
        w.0.extend_from_slice(*p);
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
        w.0.extend_from_slice(*h);
    }
    for s in [reason, request_id, policy_version, disclosure_id]
        .into_iter()
        .flatten()
    {
        w.str(s)?;
    }
    if let Some(d) = detail {
        w.str(d)?;
    }
    Ok(w.0)
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

/// Reads exactly one version-1 entry: its kind, time and fields.
pub(super) fn decode(bytes: &[u8]) -> Result<(EntryKind, i64, Fields), DecodeError> {
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
    let fields = Fields {
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
    Ok((kind, time_micros, fields))
}
