//! Subject access reports checked offline, so that what an officer or a jobseeker is shown is
//! what was verified: [`verify`] turns a `SubjectAccessReportResponse` into a
//! [`VerifiedReport`] built only from bytes that a signed checkpoint covers, or refuses it.
//!
//! - The checkpoint is read from its signed note (C2SP signed-note, tlog-checkpoint), verified
//!   with a known key, and its origin must be that key's name; the separate origin, size and
//!   root fields must agree with it.
//! - Each event's canonical bytes hash to an RFC 9162 leaf whose inclusion proof leads to that
//!   root; the entry is decoded from those bytes (`casegate_audit::entry`), and the readable
//!   copy the gateway sends beside them must be exactly their rendering, or the report is
//!   refused.
//! - Each consent version is its canonical content (`casegate.consent.v1`), whose SHA-256 must
//!   be pinned by a verified event of the report and whose subject must be the one asked about.
//!   Its status is derived from verified events (a withdrawal entry, a newer pinned version, the
//!   period's end at the report's own entry), and the gateway's stated status must agree.
//! - What cannot be tied to verified bytes is not carried over: the organisation names the
//!   gateway adds, and its `issued_at` (the report's own `subject_report_issued` entry gives
//!   the time instead).
//!
//! Used by `casegate audit report`; no network, no printing.

use casegate_audit::{
    checkpoint::{self, Checkpoint, CheckpointError, Verifier},
    entry::{Entry, EntryKind},
    merkle::{self, Hash},
};
use casegate_consent::{
    SubjectId,
    record::{ConsentRecord, Timestamp, ViewStatus},
};
use casegate_proto::v1::{self, SubjectAccessReportResponse};

use crate::edge::convert::audit::entry_to_wire;

/// A report whose every shown part was verified.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    /// The checkpoint every proof was checked against, as its signed note says.
    pub checkpoint: Checkpoint,
    /// The signed note, exactly as received.
    pub signed_note: String,
    /// The verifier key (`name+id+key`) whose signature on the note verified.
    pub verifier_key: String,
    /// The report's own `subject_report_issued` entry: when it was issued, and by whom.
    pub issued: VerifiedEvent,
    /// The events, in log order, each decoded from bytes proven to be in the log.
    pub events: Vec<VerifiedEvent>,
    /// The consent versions, in the order the gateway sent them.
    pub consents: Vec<VerifiedConsent>,
}

/// One event: its entry decoded from the canonical bytes whose inclusion proof verified.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    /// The entry's index in the log.
    pub index: u64,
    /// The entry, decoded from `bytes`.
    pub entry: Entry,
    /// The canonical encoding, as proven.
    pub bytes: Vec<u8>,
    /// RFC 6962 leaf hash of `bytes`.
    pub leaf_hash: Hash,
    /// The inclusion proof to the report's checkpoint.
    pub proof: Vec<Hash>,
}

impl VerifiedEvent {
    /// The readable form of the entry (the `casegate.v1` view), derived from the bytes.
    pub fn view(&self) -> v1::AuditEntry {
        entry_to_wire(self.index, &self.entry, &self.leaf_hash)
    }
}

/// One consent version: its canonical content, pinned by a verified event.
#[derive(Debug, Clone)]
pub struct VerifiedConsent {
    /// The version as its canonical content says (`status` and `withdrawal` are not part of
    /// the content; see [`VerifiedConsent::status`]).
    pub record: ConsentRecord,
    /// The canonical content (`casegate.consent.v1` JSON), as received.
    pub canonical: Vec<u8>,
    /// SHA-256 of `canonical`.
    pub record_hash: [u8; 32],
    /// The index of the first verified event that pins `record_hash`.
    pub pinned_by: u64,
    /// The status at the report's own entry, from verified events.
    pub status: ViewStatus,
    /// The time of the verified `consent_withdrawn` event of this version, if there is one.
    pub withdrawn_at: Option<Timestamp>,
}

/// Why a report is refused. Messages name the part at fault, never identity numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The report carries no checkpoint.
    #[error("the report has no checkpoint")]
    NoCheckpoint,
    /// The signed note verifies with none of the known keys, is malformed, or its origin is
    /// not the name of the key that verified it.
    #[error("the report's checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// The checkpoint's separate origin, tree size or root hash differ from its signed note.
    #[error("the report's checkpoint fields (origin, size, root) differ from its signed note")]
    CheckpointFields,
    /// The report's `subject_id` is not the subject asked about.
    #[error("the report is about another subject than the one asked for")]
    Subject,
    /// An event failed verification.
    #[error("event {position}: {fault}")]
    Event {
        /// The event's position in the report, from 0.
        position: usize,
        /// What is wrong with it.
        fault: EventFault,
    },
    /// An event's log index is not greater than the one before it (the index given).
    #[error("events are not in strictly ascending log order at index {0}")]
    Order(u64),
    /// No verified event is a `subject_report_issued` entry, so the report has no verified time.
    #[error("the report's own subject_report_issued entry is not among its verified events")]
    NoIssueEntry,
    /// The canonical contents (`consent_versions`) and the consent versions (`consents`) are
    /// not the same in number.
    #[error(
        "the report has {versions} consent contents for {consents} consent versions; each \
         version needs its content"
    )]
    ConsentCount {
        /// How many canonical contents the report holds.
        versions: usize,
        /// How many consent versions the report holds.
        consents: usize,
    },
    /// A consent version failed verification.
    #[error("consent version {position}: {fault}")]
    Consent {
        /// The version's position in the report, from 0.
        position: usize,
        /// What is wrong with it.
        fault: ConsentFault,
    },
}

/// What is wrong with one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventFault {
    /// The event has no readable entry.
    #[error("no entry")]
    NoEntry,
    /// The event has no inclusion proof.
    #[error("no inclusion proof")]
    NoProof,
    /// The proof is for another leaf, or another tree size, than the entry's index and the
    /// checkpoint's size.
    #[error("its proof is for index {proof} of a tree of {size}, not index {index} of {expected}")]
    ProofFor {
        /// The entry's index in the log, as its readable entry states.
        index: u64,
        /// The leaf index the proof is for.
        proof: u64,
        /// The tree size the proof is for.
        size: u64,
        /// The checkpoint's tree size.
        expected: u64,
    },
    /// A hash of the inclusion proof of the entry at this index is not 32 bytes long.
    #[error("index {0}: a proof hash is not 32 bytes")]
    ProofHash(u64),
    /// The RFC 9162 inclusion proof does not lead from the entry's leaf hash to the
    /// checkpoint's root.
    #[error("index {index}: the inclusion proof does not verify ({reason})")]
    Inclusion {
        /// The entry's index in the log.
        index: u64,
        /// Why the proof failed.
        reason: String,
    },
    /// The proven bytes are not a canonical audit entry (`casegate_audit::entry`).
    #[error("index {index}: its bytes are not an audit entry ({reason})")]
    Decode {
        /// The entry's index in the log.
        index: u64,
        /// Why decoding failed.
        reason: String,
    },
    /// The readable entry sent beside the bytes is not their rendering.
    #[error("index {0}: the readable entry differs from the verified bytes")]
    ViewDiffers(u64),
}

/// What is wrong with one consent version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentFault {
    /// The content is not canonical `casegate.consent.v1` JSON; the reason is given.
    #[error("its content is not a canonical consent version ({0})")]
    Content(String),
    /// The content's SHA-256 is not the record hash the report states for the version.
    #[error("its content does not hash to the record hash the report states")]
    Hash,
    /// The content names another subject than the one asked about.
    #[error("its content is about another subject")]
    Subject,
    /// No verified event names this consent id and version with the content's hash.
    #[error("no verified event of the report pins its record hash")]
    NotPinned,
    /// The stated status and the one derived from verified events disagree on whether the
    /// version is withdrawn or superseded (or the gateway stated no status).
    #[error("the report says {stated}, but its verified events say {derived}")]
    Status {
        /// The gateway's status, as printed: `withdrawn`, `superseded`, `active or expired`
        /// or `no status`.
        stated: &'static str,
        /// The status derived from verified events, as [`status_name`] prints it.
        derived: &'static str,
    },
}

/// Verifies `report`, asked about `subject`, against the known `keys`.
///
/// # Errors
/// The first [`ReportError`] found; nothing of a refused report is to be shown as verified.
pub fn verify(
    report: &SubjectAccessReportResponse,
    subject: &SubjectId,
    keys: &[Verifier],
) -> Result<VerifiedReport, ReportError> {
    let SubjectAccessReportResponse {
        subject_id,
        issued_at: _, // not covered by the log; the report's own entry gives the time
        consents,
        events,
        checkpoint,
        verifier_key: _, // a claim: the key that verifies is reported instead
        consent_versions,
    } = report;
    if *subject_id != subject.expose() {
        return Err(ReportError::Subject);
    }
    let wire = checkpoint.as_ref().ok_or(ReportError::NoCheckpoint)?;
    let (signed, key) =
        checkpoint::verify_any(keys, &wire.signed_note).map_err(ReportError::Checkpoint)?;
    if signed.origin != key.name() {
        return Err(ReportError::Checkpoint(CheckpointError::OriginMismatch {
            origin: signed.origin,
            key: key.label(),
        }));
    }
    let v1::Checkpoint {
        origin,
        tree_size,
        root_hash,
        signed_note: _,
    } = wire;
    if *origin != signed.origin || *tree_size != signed.size || root_hash[..] != signed.root[..] {
        return Err(ReportError::CheckpointFields);
    }

    let mut verified: Vec<VerifiedEvent> = Vec::with_capacity(events.len());
    for (position, event) in events.iter().enumerate() {
        let event =
            verify_event(event, &signed).map_err(|fault| ReportError::Event { position, fault })?;
        if verified
            .last()
            .is_some_and(|last| last.index >= event.index)
        {
            return Err(ReportError::Order(event.index));
        }
        verified.push(event);
    }
    let issued = verified
        .iter()
        .rev()
        .find(|e| e.entry.kind() == EntryKind::SubjectReportIssued)
        .cloned()
        .ok_or(ReportError::NoIssueEntry)?;

    if consents.len() != consent_versions.len() {
        return Err(ReportError::ConsentCount {
            versions: consent_versions.len(),
            consents: consents.len(),
        });
    }
    let mut versions = Vec::with_capacity(consents.len());
    for (position, (stated, canonical)) in consents.iter().zip(consent_versions).enumerate() {
        let version = consent_content(stated, canonical, subject, &verified)
            .map_err(|fault| ReportError::Consent { position, fault })?;
        versions.push(version);
    }
    let now = Timestamp(issued.entry.time_micros);
    let derived: Vec<(ViewStatus, Option<Timestamp>)> = versions
        .iter()
        .map(|(record, ..)| derive_status(record, &versions, &verified, now))
        .collect();
    let mut out = Vec::with_capacity(versions.len());
    for (position, ((record, canonical, record_hash, pinned_by), (status, withdrawn_at))) in
        versions.iter().zip(derived).enumerate()
    {
        let stated = consents[position].status;
        if let Some(fault) = status_disagrees(stated, status) {
            return Err(ReportError::Consent { position, fault });
        }
        out.push(VerifiedConsent {
            record: record.clone(),
            canonical: canonical.clone(),
            record_hash: *record_hash,
            pinned_by: *pinned_by,
            status,
            withdrawn_at,
        });
    }
    Ok(VerifiedReport {
        checkpoint: signed,
        signed_note: wire.signed_note.clone(),
        verifier_key: key.to_vkey(),
        issued,
        events: verified,
        consents: out,
    })
}

fn verify_event(event: &v1::ReportEvent, signed: &Checkpoint) -> Result<VerifiedEvent, EventFault> {
    let v1::ReportEvent {
        entry,
        sender_name: _, // organisation names are not in the log: not carried over
        recipient_name: _,
        actor_name: _,
        entry_bytes,
        inclusion_proof,
    } = event;
    let view = entry.as_ref().ok_or(EventFault::NoEntry)?;
    let proof = inclusion_proof.as_ref().ok_or(EventFault::NoProof)?;
    let index = view.index;
    if proof.leaf_index != index || proof.tree_size != signed.size {
        return Err(EventFault::ProofFor {
            index,
            proof: proof.leaf_index,
            size: proof.tree_size,
            expected: signed.size,
        });
    }
    let hashes = proof
        .hashes
        .iter()
        .map(|h| Hash::try_from(h.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| EventFault::ProofHash(index))?;
    let leaf_hash = merkle::leaf_hash(entry_bytes);
    merkle::verify_inclusion(&leaf_hash, index, signed.size, &hashes, &signed.root).map_err(
        |e| EventFault::Inclusion {
            index,
            reason: e.to_string(),
        },
    )?;
    let decoded = Entry::decode(entry_bytes).map_err(|e| EventFault::Decode {
        index,
        reason: e.to_string(),
    })?;
    if entry_to_wire(index, &decoded, &leaf_hash) != *view {
        return Err(EventFault::ViewDiffers(index));
    }
    Ok(VerifiedEvent {
        index,
        entry: decoded,
        bytes: entry_bytes.clone(),
        leaf_hash,
        proof: hashes,
    })
}

/// A consent version's content, checked: (record, canonical bytes, hash, pinning index).
fn consent_content(
    stated: &v1::ConsentRecord,
    canonical: &[u8],
    subject: &SubjectId,
    events: &[VerifiedEvent],
) -> Result<(ConsentRecord, Vec<u8>, [u8; 32], u64), ConsentFault> {
    let record = ConsentRecord::from_canonical_content(canonical).map_err(ConsentFault::Content)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    if stated.record_hash[..] != hash[..] {
        return Err(ConsentFault::Hash);
    }
    if record.subject != *subject {
        return Err(ConsentFault::Subject);
    }
    let id = record.id.to_string();
    let pinned_by = events
        .iter()
        .find(|e| {
            e.entry.consent().is_some_and(|c| {
                c.record_sha256 == hash && c.id == id && c.version == record.version
            })
        })
        .map(|e| e.index)
        .ok_or(ConsentFault::NotPinned)?;
    Ok((record, canonical.to_vec(), hash, pinned_by))
}

/// A version's status from verified data alone: withdrawn if a verified `consent_withdrawn`
/// entry names it; superseded if a newer version of the consent is in the report; expired if
/// its period ended by `now`; active otherwise.
fn derive_status(
    record: &ConsentRecord,
    versions: &[(ConsentRecord, Vec<u8>, [u8; 32], u64)],
    events: &[VerifiedEvent],
    now: Timestamp,
) -> (ViewStatus, Option<Timestamp>) {
    let id = record.id.to_string();
    let withdrawn = events.iter().find(|e| {
        e.entry.kind() == EntryKind::ConsentWithdrawn
            && e.entry
                .consent()
                .is_some_and(|c| c.id == id && c.version == record.version)
    });
    if let Some(e) = withdrawn {
        return (ViewStatus::Withdrawn, Some(Timestamp(e.entry.time_micros)));
    }
    if versions
        .iter()
        .any(|(other, ..)| other.id == record.id && other.version > record.version)
    {
        return (ViewStatus::Superseded, None);
    }
    if now >= record.period.end {
        return (ViewStatus::Expired, None);
    }
    (ViewStatus::Active, None)
}

/// The final states (withdrawn, superseded) must agree between what the gateway states and
/// what the verified events show. Active and expired may differ: the gateway judges expiry at
/// its clock when answering, the report at its own entry's time, a moment before.
fn status_disagrees(stated: i32, derived: ViewStatus) -> Option<ConsentFault> {
    let stated = v1::ConsentStatus::try_from(stated).unwrap_or(v1::ConsentStatus::Unspecified);
    let stated_final = match stated {
        v1::ConsentStatus::Withdrawn => Some(ViewStatus::Withdrawn),
        v1::ConsentStatus::Superseded => Some(ViewStatus::Superseded),
        v1::ConsentStatus::Active | v1::ConsentStatus::Expired => None,
        v1::ConsentStatus::Unspecified => {
            return Some(ConsentFault::Status {
                stated: "no status",
                derived: status_name(derived),
            });
        }
    };
    let derived_final =
        matches!(derived, ViewStatus::Withdrawn | ViewStatus::Superseded).then_some(derived);
    (stated_final != derived_final).then(|| ConsentFault::Status {
        stated: stated_final.map_or("active or expired", status_name),
        derived: status_name(derived),
    })
}

/// The status's name, as reports print it.
pub fn status_name(status: ViewStatus) -> &'static str {
    match status {
        ViewStatus::Active => "active",
        ViewStatus::Withdrawn => "withdrawn",
        ViewStatus::Superseded => "superseded",
        ViewStatus::Expired => "expired",
    }
}

#[cfg(test)]
mod tests;
