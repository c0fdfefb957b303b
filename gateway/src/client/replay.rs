//! Replaying a recorded disclosure decision offline (`casegate audit replay`).
//!
//! From the log alone: the decision entry (sender, role, recipient, category, purpose, time,
//! policy version, the consent version it pinned or the refusal reason), and every consent
//! grant and withdrawal about the same subject pseudonym before it. From the export: the
//! consent versions' content, each checked against the record hash its grant entry pinned.
//! The consents' state at the entry's time is rebuilt from the log (the newest version granted
//! before it is active, older ones superseded, withdrawn ones withdrawn), the pure decision
//! function runs again, and the outcome is compared with the recorded one.

use std::{collections::BTreeMap, ops::ControlFlow, path::Path};

use casegate_audit::{
    entry::{ConsentRef, DecisionTerms, Entry, EntryKind, Event},
    segment,
};
use casegate_consent::{
    Vocabulary,
    decision::{self, Decision, DisclosureRequest, POLICY_VERSIONS},
    record::{ConsentId, ConsentRecord, Status, Timestamp},
};

/// A decision's outcome, recorded or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The disclosure was permitted on this consent version.
    Permit {
        /// The consent's id (a UUID, as text).
        consent_id: String,
        /// The version's number.
        version: u32,
        /// SHA-256 of the version's canonical content (`casegate.consent.v1`).
        record_hash: [u8; 32],
    },
    /// The disclosure was refused.
    Refuse {
        /// The refusal's reason code (for example `no_consent`).
        reason: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Permit {
                consent_id,
                version,
                ..
            } => write!(f, "permit on consent {consent_id} version {version}"),
            Outcome::Refuse { reason } => write!(f, "refusal {reason}"),
        }
    }
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The decision entry's index in the log.
    pub index: u64,
    /// `disclosure_permitted` or `disclosure_refused`.
    pub kind: EntryKind,
    /// The entry's time, in microseconds since the Unix epoch; the decision is replayed at it.
    pub time_micros: i64,
    /// The outcome the entry records.
    pub recorded: Outcome,
    /// The outcome of deciding again under the recorded policy version.
    pub replayed: Outcome,
    /// Consent versions from the export that were checked against the log.
    pub checked_versions: usize,
}

impl Replay {
    /// Whether the replayed outcome is the recorded one (the same consent version and record
    /// hash, or the same refusal reason).
    pub fn reproduced(&self) -> bool {
        self.recorded == self.replayed
    }
}

/// Why a decision cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The log's segments could not be read.
    #[error("reading the audit log: {0}")]
    Io(#[from] std::io::Error),
    /// The log ends, or its readable part (up to the first damaged frame) ends, before the
    /// entry asked for.
    #[error("the log holds {size} entries; there is no entry {index}")]
    NoEntry {
        /// The index asked for.
        index: u64,
        /// How many entries were read.
        size: u64,
    },
    /// The entry, or a consent grant or withdrawal before it, does not decode or fits no
    /// typed event (a field the decision needs is missing, or its detail is of a form this
    /// build does not know), or a field does not parse.
    #[error("entry {index} cannot be read: {reason}")]
    Unreadable {
        /// The entry's index in the log.
        index: u64,
        /// What is missing or malformed.
        reason: String,
    },
    /// The entry is neither `disclosure_permitted` nor `disclosure_refused`.
    #[error("entry {index} records {kind}, not a disclosure decision")]
    NotADecision {
        /// The entry's index in the log.
        index: u64,
        /// The kind it records.
        kind: EntryKind,
    },
    /// The entry was decided under a policy version this build does not implement
    /// (`POLICY_VERSIONS`), or names none.
    #[error(
        "entry {index} was decided under policy {recorded:?}; this build implements \
         {POLICY_VERSIONS:?} and cannot replay it"
    )]
    Policy {
        /// The entry's index in the log.
        index: u64,
        /// The policy version the entry records (empty if none).
        recorded: String,
    },
    /// The consent export is not JSON of the expected shape, or one of its versions is not
    /// canonical consent content.
    #[error("the consent export: {0}")]
    Export(String),
    /// An exported version's SHA-256 is not the record hash its grant entry pinned.
    #[error(
        "the exported consent {id} version {version} does not match the record hash the log \
         pinned for it at index {at} (exported {exported}, pinned {pinned}): the export was altered"
    )]
    Altered {
        /// The consent's id.
        id: String,
        /// The version's number.
        version: u32,
        /// The index of the grant entry that pinned the hash.
        at: u64,
        /// SHA-256 of the exported content, in lowercase hex.
        exported: String,
        /// The pinned record hash, in lowercase hex.
        pinned: String,
    },
    /// A version granted before the decision is not in the export.
    #[error(
        "consent {id} version {version}, granted at index {at}, is not in the export: \
         the decision cannot be replayed without it"
    )]
    Missing {
        /// The consent's id.
        id: String,
        /// The version's number.
        version: u32,
        /// The index of its grant entry.
        at: u64,
    },
}

/// A consent grant or withdrawal recorded before the decision.
#[derive(Debug, Clone)]
struct Recorded {
    at: u64,
    version: u32,
    hash: [u8; 32],
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the consent versions of an export: a JSON array of canonical consent documents, or
/// an object with such an array under `consent_versions` (a report written as JSON).
///
/// # Errors
/// [`ReplayError::Export`] if `bytes` are not JSON of either shape or an item is not a
/// canonical consent version; the item's position is named.
pub fn read_export(bytes: &[u8]) -> Result<Vec<ConsentRecord>, ReplayError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ReplayError::Export(e.to_string()))?;
    let items = match &value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(map) => match map.get("consent_versions") {
            Some(serde_json::Value::Array(items)) => items,
            _ => {
                return Err(ReplayError::Export(
                    "expected an array of consent versions or an object with `consent_versions`"
                        .into(),
                ));
            }
        },
        _ => {
            return Err(ReplayError::Export(
                "expected an array of consent versions".into(),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let bytes = serde_json::to_vec(item).map_err(|e| ReplayError::Export(e.to_string()))?;
            ConsentRecord::from_canonical_content(&bytes)
                .map_err(|e| ReplayError::Export(format!("version [{i}]: {e}")))
        })
        .collect()
}

/// Replays the decision recorded at `index` of the log in `log_dir` (the folder that holds
/// `segments/`), against the consent versions of `export`.
///
/// # Errors
/// [`ReplayError::Io`] if the segments cannot be read; [`ReplayError::NoEntry`] if the log
/// is shorter; otherwise as [`replay_entry`].
pub fn replay(
    log_dir: &Path,
    export: &[ConsentRecord],
    index: u64,
    vocabulary: &Vocabulary,
) -> Result<Replay, ReplayError> {
    let mut earlier = Vec::new();
    let mut target = None;
    // A consent entry that cannot be read could change the outcome: the replay stops there.
    let mut unreadable = None;
    let size = segment::scan_dir(&log_dir.join("segments"), |i, payload| {
        if i == index {
            target = Some(payload.to_vec());
            return ControlFlow::Break(());
        }
        if !matches!(
            Entry::kind_of(payload),
            Some(EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn) | None
        ) {
            return ControlFlow::Continue(());
        }
        match Entry::decode(payload) {
            Ok(Entry {
                event: Event::Unfitted(u),
                ..
            }) => {
                unreadable = Some(ReplayError::Unreadable {
                    index: i,
                    reason: format!("a {} entry before the decision: {}", u.kind, u.why),
                });
                return ControlFlow::Break(());
            }
            Ok(entry) => earlier.push((i, entry)),
            Err(e) => {
                unreadable = Some(ReplayError::Unreadable {
                    index: i,
                    reason: format!("an entry before the decision: {e}"),
                });
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(error) = unreadable {
        return Err(error);
    }
    let bytes = target.ok_or(ReplayError::NoEntry { index, size })?;
    let entry = Entry::decode(&bytes).map_err(|e| ReplayError::Unreadable {
        index,
        reason: e.to_string(),
    })?;
    replay_entry(index, &entry, earlier, export, vocabulary)
}

/// Replays the decision `entry`, recorded at `index`, from `earlier`: the consent grants and
/// withdrawals recorded before it, as (index, entry) — read from the log's segments by
/// [`replay`], or taken from a verified subject access report. Entries about other subjects
/// are ignored.
///
/// # Errors
/// As [`replay`], except for reading the log.
pub fn replay_entry(
    index: u64,
    entry: &Entry,
    earlier: impl IntoIterator<Item = (u64, Entry)>,
    export: &[ConsentRecord],
    vocabulary: &Vocabulary,
) -> Result<Replay, ReplayError> {
    let unreadable = |reason: String| ReplayError::Unreadable { index, reason };
    let decided = |terms: &DecisionTerms, role: &Option<String>, approval_attested: bool| {
        fn parse<T: std::str::FromStr>(index: u64, name: &str, text: &str) -> Result<T, ReplayError>
        where
            T::Err: std::fmt::Display,
        {
            text.parse().map_err(|e: T::Err| ReplayError::Unreadable {
                index,
                reason: format!("{name}: {e}"),
            })
        }
        Ok::<_, ReplayError>((
            terms.policy_version.clone(),
            terms.subject_pseudonym,
            DisclosureRequest {
                sender_org: parse(index, "sender", &terms.sender_orgnr)?,
                sender_role: parse(index, "role", &terms.actor.role)?,
                recipient_org: parse(index, "recipient", &terms.recipient_orgnr)?,
                recipient_role: role
                    .as_deref()
                    .map(|r| parse(index, "recipient role", r))
                    .transpose()?,
                category: parse(index, "category", &terms.category)?,
                purpose: parse(index, "purpose", &terms.purpose)?,
                approval_attested,
            },
        ))
    };
    let (recorded, (policy, subject, request)) = match &entry.event {
        Event::DisclosurePermitted(p) => {
            let ConsentRef {
                id,
                version,
                record_sha256,
            } = &p.consent;
            let recorded = Outcome::Permit {
                consent_id: id.clone(),
                version: *version,
                record_hash: *record_sha256,
            };
            (
                recorded,
                decided(&p.terms, &p.recipient_role, p.approval_attested)?,
            )
        }
        Event::DisclosureRefused(r) => (
            Outcome::Refuse {
                reason: r.reason.clone(),
            },
            decided(&r.terms, &r.recipient_role, r.approval_attested)?,
        ),
        Event::Unfitted(u)
            if matches!(
                u.kind,
                EntryKind::DisclosurePermitted | EntryKind::DisclosureRefused
            ) =>
        {
            return Err(unreadable(u.why.clone()));
        }
        _ => {
            return Err(ReplayError::NotADecision {
                index,
                kind: entry.kind(),
            });
        }
    };
    if !decision::POLICY_VERSIONS.contains(&policy.as_str()) {
        return Err(ReplayError::Policy {
            index,
            recorded: policy,
        });
    }

    // Grants and withdrawals about this subject before the decision, by consent id.
    let mut granted: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
    let mut withdrawn: BTreeMap<String, u64> = BTreeMap::new();
    for (at, e) in earlier {
        match e.event {
            Event::ConsentGranted(c) if at < index && c.subject_pseudonym == subject => {
                granted.entry(c.consent.id).or_default().push(Recorded {
                    at,
                    version: c.consent.version,
                    hash: c.consent.record_sha256,
                });
            }
            Event::ConsentWithdrawn(c) if at < index && c.subject_pseudonym == subject => {
                withdrawn.insert(c.consent.id, at);
            }
            // A consent entry that may be this subject's but cannot be read: not skipped.
            Event::Unfitted(u)
                if at < index
                    && matches!(
                        u.kind,
                        EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn
                    )
                    && u.fields.subject_pseudonym.is_none_or(|p| p == subject) =>
            {
                return Err(ReplayError::Unreadable {
                    index: at,
                    reason: format!("a {} entry before the decision: {}", u.kind, u.why),
                });
            }
            _ => {}
        }
    }

    // The export's versions as they stood at the decision, each checked against its grant.
    let mut state = Vec::new();
    for (id, versions) in &granted {
        let newest = versions.iter().map(|v| v.version).max().unwrap_or(0);
        for grant in versions {
            let found = export
                .iter()
                .find(|r| r.id.to_string() == *id && r.version == grant.version)
                .ok_or_else(|| ReplayError::Missing {
                    id: id.clone(),
                    version: grant.version,
                    at: grant.at,
                })?;
            let exported = found.record_hash();
            if exported != grant.hash {
                return Err(ReplayError::Altered {
                    id: id.clone(),
                    version: grant.version,
                    at: grant.at,
                    exported: hex(&exported),
                    pinned: hex(&grant.hash),
                });
            }
            let mut record = found.clone();
            record.status = if grant.version < newest {
                Status::Superseded
            } else if withdrawn.contains_key(id) {
                Status::Withdrawn
            } else {
                Status::Active
            };
            state.push(record);
        }
    }
    let checked_versions = state.len();
    let decided = decision::decide_under(
        &policy,
        &request,
        &state,
        Timestamp(entry.time_micros),
        vocabulary,
    )
    .ok_or_else(|| ReplayError::Policy {
        index,
        recorded: policy.clone(),
    })?;
    let replayed = match decided {
        Decision::Permit(p) => Outcome::Permit {
            consent_id: ConsentId::to_string(&p.consent_id),
            version: p.version,
            record_hash: p.record_hash,
        },
        Decision::Deny(d) => Outcome::Refuse {
            reason: d.reason.code().to_owned(),
        },
    };
    Ok(Replay {
        index,
        kind: entry.kind(),
        time_micros: entry.time_micros,
        recorded,
        replayed,
        checked_versions,
    })
}

#[cfg(test)]
mod tests;
