//! The payloads of the journal's records, in a binary layout (integers big-endian; `str` and
//! `bytes` are a u32 length and then the bytes; `[n]` is n bytes as they are):
//!
//! ```text
//! note (kind 3), written once when a note is stored, and again without its sealed part when
//! it is purged:
//!   u8 format = 1 | [16] id | progress
//!   | str request id | [32] fingerprint
//!   | str sender orgnr | str sender user id | str sender role
//!   | str recipient orgnr | str recipient role ("" = the whole organisation)
//!   | str category | str purpose | str content type
//!   | [16] consent id | u32 consent version | [32] consent record SHA-256
//!   | [32] content SHA-256 | [32] subject pseudonym | i64 disclosed at | u64 log size hint
//!   | u8 sealed (0 none, 1 present) [ str key id | [12] nonce | bytes ciphertext ]
//! progress (kind 4), a note's state change, a few dozen bytes:
//!   u8 format = 1 | [16] id | progress
//! progress:
//!   u8 state (0 pending, 1 deliverable, 2 acknowledged, 3 purged)
//!   | u8 flags (bit 0 delivered; bits 1-4: audit index, acknowledged at, purge after,
//!     purged at present)
//!   | the present ones in that order: u64 audit index, i64 times (µs since the Unix epoch)
//! secret (the plaintext the gateway seals):
//!   u8 format = 1 | [11] subject (digits as ASCII) | str title | bytes body
//!   | u8 approval (0 none, 1 present) [ str HPR number | i64 approved at ]
//! ```
//!
//! Kind 1 records and secrets written before this layout are JSON objects (byte fields as
//! base64); they are still read ([`decode_legacy_note`], [`Secret::decode`]) and never
//! written. Decoding refuses an unknown format, bad values, truncation and trailing bytes.

use base64::{Engine, engine::general_purpose::STANDARD};
use casegate_consent::{
    Category, OrgNumber, Purpose, Role, SubjectId,
    record::{Actor, ConsentId, Timestamp},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    NoteError,
    note::{Approval, Note, NoteState, Sealed, Secret},
};

/// The layout version written first in every payload.
const FORMAT: u8 = 1;

/// The parts of a note that change after it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) state: NoteState,
    pub(crate) audit_index: Option<u64>,
    pub(crate) delivered: bool,
    pub(crate) acknowledged_at: Option<Timestamp>,
    pub(crate) purge_after: Option<Timestamp>,
    pub(crate) purged_at: Option<Timestamp>,
}

/// `note`'s progress (state, audit index, delivery, acknowledgement, purge times) as a
/// progress record's payload (at most 51 bytes).
pub fn progress_of(note: &Note) -> Vec<u8> {
    encode_progress(&note.id, &Progress::of(note))
}

/// Sets `note`'s progress from a progress record's payload written for it.
///
/// # Errors
/// [`NoteError::Corrupt`] for a payload that is not a progress record, or one of another
/// note.
pub fn apply_progress(payload: &[u8], note: &mut Note) -> Result<(), NoteError> {
    let (id, progress) = decode_progress(payload)?;
    if id != note.id {
        return Err(NoteError::Corrupt(format!(
            "progress record of note {id} read for note {}",
            note.id
        )));
    }
    progress.apply(note);
    Ok(())
}

impl Progress {
    pub(crate) fn of(note: &Note) -> Self {
        Self {
            state: note.state,
            audit_index: note.audit_index,
            delivered: note.delivered,
            acknowledged_at: note.acknowledged_at,
            purge_after: note.purge_after,
            purged_at: note.purged_at,
        }
    }

    /// Sets `note`'s changing parts to these.
    pub(crate) fn apply(self, note: &mut Note) {
        let Self {
            state,
            audit_index,
            delivered,
            acknowledged_at,
            purge_after,
            purged_at,
        } = self;
        note.state = state;
        note.audit_index = audit_index;
        note.delivered = delivered;
        note.acknowledged_at = acknowledged_at;
        note.purge_after = purge_after;
        note.purged_at = purged_at;
    }

    fn write(&self, out: &mut Writer) {
        out.u8(self.state as u8);
        let mut flags = u8::from(self.delivered);
        let present = [
            self.audit_index.is_some(),
            self.acknowledged_at.is_some(),
            self.purge_after.is_some(),
            self.purged_at.is_some(),
        ];
        for (bit, present) in present.into_iter().enumerate() {
            flags |= u8::from(present) << (bit + 1);
        }
        out.u8(flags);
        if let Some(index) = self.audit_index {
            out.u64(index);
        }
        for time in [self.acknowledged_at, self.purge_after, self.purged_at]
            .into_iter()
            .flatten()
        {
            out.i64(time.0);
        }
    }

    fn read(input: &mut Reader<'_>) -> Result<Self, String> {
        let state = *NoteState::ALL
            .get(usize::from(input.u8()?))
            .ok_or("unknown note state")?;
        let flags = input.u8()?;
        if flags >> 5 != 0 {
            return Err("unknown progress flags".into());
        }
        let has = |bit: u8| flags & (1 << bit) != 0;
        let audit_index = if has(1) { Some(input.u64()?) } else { None };
        let mut time = |bit| -> Result<Option<Timestamp>, String> {
            Ok(if has(bit) {
                Some(Timestamp(input.i64()?))
            } else {
                None
            })
        };
        Ok(Self {
            state,
            audit_index,
            delivered: has(0),
            acknowledged_at: time(2)?,
            purge_after: time(3)?,
            purged_at: time(4)?,
        })
    }
}

/// A note record's payload: the note as written once (its progress — state, audit index,
/// delivery, acknowledgement and purge times — is not in it: see [`progress_of`]). Other
/// backends store notes in this form too.
pub fn encode_note(note: &Note) -> Vec<u8> {
    let Note {
        id,
        state: _,
        request_id,
        fingerprint,
        sender,
        recipient_org,
        recipient_role,
        category,
        purpose,
        content_type,
        consent_id,
        consent_version,
        consent_record_hash,
        content_sha256,
        subject_pseudonym,
        disclosed_at,
        audit_index: _,
        log_size_hint,
        delivered: _,
        acknowledged_at: _,
        purge_after: _,
        purged_at: _,
        sealed,
    } = note;
    let mut out = Writer::with_capacity(
        320 + request_id.len() + sealed.as_ref().map_or(0, |s| s.ciphertext.len()),
    );
    out.u8(FORMAT);
    out.raw(id.as_bytes());
    Progress::of(note).write(&mut out);
    out.str(request_id);
    out.raw(fingerprint);
    out.str(&sender.orgnr.to_string());
    out.str(&sender.user_id);
    out.str(sender.role.as_str());
    out.str(&recipient_org.to_string());
    out.str(recipient_role.map_or("", |r| r.as_str()));
    out.str(category.as_str());
    out.str(purpose.as_str());
    out.str(content_type);
    out.raw(consent_id.as_bytes());
    out.u32(*consent_version);
    out.raw(consent_record_hash);
    out.raw(content_sha256);
    out.raw(subject_pseudonym);
    out.i64(disclosed_at.0);
    out.u64(*log_size_hint);
    match sealed {
        None => out.u8(0),
        Some(Sealed {
            key_id,
            nonce,
            ciphertext,
        }) => {
            out.u8(1);
            out.str(key_id);
            out.raw(nonce);
            out.bytes(ciphertext);
        }
    }
    out.0
}

/// The note a note record's payload holds, with the progress of a note just stored (apply
/// its newest progress with [`apply_progress`]).
///
/// # Errors
/// [`NoteError::Corrupt`] for a payload that is not a note record.
pub fn decode_note(payload: &[u8]) -> Result<Note, NoteError> {
    let corrupt = |e: String| NoteError::Corrupt(format!("note record: {e}"));
    (|| {
        let mut input = Reader::new(payload)?;
        let id = Uuid::from_bytes(input.fixed()?);
        let progress = Progress::read(&mut input)?;
        let request_id = input.str()?.to_owned();
        let fingerprint = input.fixed()?;
        let sender = Actor {
            orgnr: input.parse::<OrgNumber>()?,
            user_id: input.str()?.to_owned(),
            role: input.parse::<Role>()?,
        };
        let recipient_org = input.parse::<OrgNumber>()?;
        let recipient_role = match input.str()? {
            "" => None,
            role => Some(role.parse::<Role>().map_err(|e| e.to_string())?),
        };
        let mut note = Note {
            id,
            state: progress.state,
            request_id,
            fingerprint,
            sender,
            recipient_org,
            recipient_role,
            category: input.parse::<Category>()?,
            purpose: input.parse::<Purpose>()?,
            content_type: input.str()?.to_owned(),
            consent_id: ConsentId::from_bytes(input.fixed()?),
            consent_version: input.u32()?,
            consent_record_hash: input.fixed()?,
            content_sha256: input.fixed()?,
            subject_pseudonym: input.fixed()?,
            disclosed_at: Timestamp(input.i64()?),
            audit_index: None,
            log_size_hint: input.u64()?,
            delivered: false,
            acknowledged_at: None,
            purge_after: None,
            purged_at: None,
            sealed: match input.u8()? {
                0 => None,
                1 => Some(Sealed {
                    key_id: input.str()?.to_owned(),
                    nonce: input.fixed()?,
                    ciphertext: input.bytes()?.to_vec(),
                }),
                _ => return Err("bad sealed-part marker".into()),
            },
        };
        input.finish()?;
        progress.apply(&mut note);
        Ok(note)
    })()
    .map_err(corrupt)
}

/// A progress record's payload: note `id` moved to `progress`.
pub(crate) fn encode_progress(id: &Uuid, progress: &Progress) -> Vec<u8> {
    let mut out = Writer::with_capacity(1 + 16 + 2 + 32);
    out.u8(FORMAT);
    out.raw(id.as_bytes());
    progress.write(&mut out);
    out.0
}

/// The note and progress a progress record's payload holds.
pub(crate) fn decode_progress(payload: &[u8]) -> Result<(Uuid, Progress), NoteError> {
    (|| {
        let mut input = Reader::new(payload)?;
        let id = Uuid::from_bytes(input.fixed()?);
        let progress = Progress::read(&mut input)?;
        input.finish()?;
        Ok((id, progress))
    })()
    .map_err(|e: String| NoteError::Corrupt(format!("progress record: {e}")))
}

/// Whether `payload` could be a record of `kind` (its first bytes and its length fit): how
/// the journal tells a torn write from damage followed by intact records.
pub(crate) fn plausible(kind: u8, payload: &[u8]) -> bool {
    match kind {
        crate::journal::KIND_LEGACY_NOTE => payload.starts_with(b"{\""),
        crate::journal::KIND_NOTE => payload.first() == Some(&FORMAT),
        crate::journal::KIND_PROGRESS => {
            payload.first() == Some(&FORMAT) && (19..=19 + 32).contains(&payload.len())
        }
        _ => false,
    }
}

impl Secret {
    /// The bytes to seal (the `secret` layout in this module's documentation).
    pub fn encode(&self) -> Vec<u8> {
        let Secret {
            subject,
            title,
            body,
            approval,
        } = self;
        let mut out = Writer::with_capacity(32 + title.len() + body.len());
        out.u8(FORMAT);
        out.raw(subject.expose().as_bytes());
        out.str(title);
        out.bytes(body);
        match approval {
            None => out.u8(0),
            Some(Approval {
                hpr_number,
                approved_at,
            }) => {
                out.u8(1);
                out.str(hpr_number);
                out.i64(approved_at.0);
            }
        }
        out.0
    }

    /// The secret in opened bytes: the binary layout, or the JSON object sealed before it.
    ///
    /// # Errors
    /// [`NoteError::Corrupt`] if the bytes are neither.
    pub fn decode(plain: &[u8]) -> Result<Self, NoteError> {
        if plain.first() == Some(&b'{') {
            return serde_json::from_slice::<LegacySecret>(plain)
                .map_err(|e| NoteError::Corrupt(format!("sealed part: {e}")))?
                .into_secret();
        }
        (|| {
            let mut input = Reader::new(plain)?;
            let subject: [u8; 11] = input.fixed()?;
            let subject = std::str::from_utf8(&subject)
                .map_err(|_| "subject is not ASCII digits".to_owned())?
                .parse::<SubjectId>()
                .map_err(|e| e.to_string())?;
            let secret = Secret {
                subject,
                title: input.str()?.to_owned(),
                body: input.bytes()?.to_vec(),
                approval: match input.u8()? {
                    0 => None,
                    1 => Some(Approval {
                        hpr_number: input.str()?.to_owned(),
                        approved_at: Timestamp(input.i64()?),
                    }),
                    _ => return Err("bad approval marker".to_owned()),
                },
            };
            input.finish()?;
            Ok(secret)
        })()
        .map_err(|e| NoteError::Corrupt(format!("sealed part: {e}")))
    }
}

// === the layout's primitives ===

struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn bytes(&mut self, bytes: &[u8]) {
        // Payloads are bounded far below 4 GiB (a note body by `limits.max_body_bytes`).
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.raw(bytes);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A reader past the format byte, which must be [`FORMAT`].
    fn new(payload: &'a [u8]) -> Result<Self, String> {
        match payload.split_first() {
            Some((&FORMAT, rest)) => Ok(Self(rest)),
            Some((other, _)) => Err(format!("unknown format {other}")),
            None => Err("empty".into()),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.fixed()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.fixed()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a text field is not UTF-8".to_owned())
    }
    fn parse<T: std::str::FromStr>(&mut self) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        self.str()?.parse().map_err(|e: T::Err| e.to_string())
    }
    fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes after the end", self.0.len()))
        }
    }
}

// === the JSON layout read from journals and seals written before ===

/// A note as kind 1 records hold it.
pub(crate) fn decode_legacy_note(payload: &[u8]) -> Result<Note, NoteError> {
    let legacy: LegacyNote =
        serde_json::from_slice(payload).map_err(|e| NoteError::Corrupt(e.to_string()))?;
    let LegacyNote {
        id,
        state,
        request_id,
        fingerprint,
        sender,
        recipient_org,
        recipient_role,
        category,
        purpose,
        content_type,
        consent_id,
        consent_version,
        consent_record_hash,
        content_sha256,
        subject_pseudonym,
        disclosed_at,
        audit_index,
        log_size_hint,
        delivered,
        acknowledged_at,
        purge_after,
        purged_at,
        sealed,
    } = legacy;
    Ok(Note {
        id,
        state: match state {
            LegacyState::Pending => NoteState::Pending,
            LegacyState::Deliverable => NoteState::Deliverable,
            LegacyState::Acknowledged => NoteState::Acknowledged,
            LegacyState::Purged => NoteState::Purged,
        },
        request_id,
        fingerprint: base64_array(&fingerprint)?,
        sender,
        recipient_org,
        recipient_role,
        category,
        purpose,
        content_type,
        consent_id,
        consent_version,
        consent_record_hash: base64_array(&consent_record_hash)?,
        content_sha256: base64_array(&content_sha256)?,
        subject_pseudonym: base64_array(&subject_pseudonym)?,
        disclosed_at,
        audit_index,
        log_size_hint,
        delivered,
        acknowledged_at,
        purge_after,
        purged_at,
        sealed: match sealed {
            None => None,
            Some(LegacySealed {
                key_id,
                nonce,
                ciphertext,
            }) => Some(Sealed {
                key_id,
                nonce: base64_array(&nonce)?,
                ciphertext: base64(&ciphertext)?,
            }),
        },
    })
}

fn base64(text: &str) -> Result<Vec<u8>, NoteError> {
    STANDARD
        .decode(text)
        .map_err(|e| NoteError::Corrupt(format!("base64 field: {e}")))
}

fn base64_array<const N: usize>(text: &str) -> Result<[u8; N], NoteError> {
    base64(text)?
        .try_into()
        .map_err(|_| NoteError::Corrupt("a base64 field has the wrong length".into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum LegacyState {
    Pending,
    Deliverable,
    Acknowledged,
    Purged,
}

#[derive(Deserialize)]
struct LegacySealed {
    key_id: String,
    nonce: String,
    ciphertext: String,
}

#[derive(Deserialize)]
struct LegacyNote {
    id: Uuid,
    state: LegacyState,
    request_id: String,
    fingerprint: String,
    sender: Actor,
    recipient_org: OrgNumber,
    recipient_role: Option<Role>,
    category: Category,
    purpose: Purpose,
    content_type: String,
    consent_id: ConsentId,
    consent_version: u32,
    consent_record_hash: String,
    content_sha256: String,
    subject_pseudonym: String,
    disclosed_at: Timestamp,
    audit_index: Option<u64>,
    log_size_hint: u64,
    delivered: bool,
    acknowledged_at: Option<Timestamp>,
    purge_after: Option<Timestamp>,
    #[serde(default)]
    purged_at: Option<Timestamp>,
    sealed: Option<LegacySealed>,
}

#[derive(Deserialize)]
struct LegacyApproval {
    hpr_number: String,
    approved_at: Timestamp,
}

#[derive(Deserialize)]
struct LegacySecret {
    subject: SubjectId,
    title: String,
    body: String,
    approval: Option<LegacyApproval>,
}

impl LegacySecret {
    fn into_secret(self) -> Result<Secret, NoteError> {
        let LegacySecret {
            subject,
            title,
            body,
            approval,
        } = self;
        Ok(Secret {
            subject,
            title,
            body: base64(&body)?,
            approval: approval.map(|a| Approval {
                hpr_number: a.hpr_number,
                approved_at: a.approved_at,
            }),
        })
    }
}

#[cfg(test)]
mod tests;
