//! The offline verifier: from the segment files and the public key alone, re-hash every
//! record, rebuild the root, check the newest checkpoint's signature and that it covers the
//! records, and — given an older trusted checkpoint — that the log is consistent with it.
//! The derived files (tree, offsets) are not trusted and not read. Entry times must not go
//! backwards: the log refuses such an append, so one found here was written around it.

use std::path::{Path, PathBuf};

use crate::{
    checkpoint::{self, Checkpoint, CheckpointError, Verifier},
    entry::Entry,
    merkle::{self, CompactRange, Hash},
    segment::{self, Flaw},
};

/// What a passing verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries read and re-hashed.
    pub entries: u64,
    /// The newest checkpoint, whose signature and root verified.
    pub checkpoint: Checkpoint,
    /// Entries after the checkpoint's size (durable, not yet covered by a signed checkpoint).
    pub uncovered: u64,
    /// Bytes of an incomplete record at the very end, after everything the checkpoint covers.
    pub torn_tail_bytes: u64,
    /// The size of the trusted checkpoint the log was found consistent with.
    pub consistent_with: Option<u64>,
}

/// Why the log does not verify.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no signed checkpoint in {0}")]
    NoCheckpoint(PathBuf),
    #[error("newest checkpoint: {0}")]
    Checkpoint(CheckpointError),
    #[error("trusted checkpoint: {0}")]
    Trusted(CheckpointError),
    #[error("index {index}: {reason}")]
    Entry { index: u64, reason: String },
    #[error(
        "index {size}: the log ends here, but the signed checkpoint covers {checkpoint} entries"
    )]
    Truncated { size: u64, checkpoint: u64 },
    #[error("the first {0} entries do not hash to the signed checkpoint's root")]
    RootMismatch(u64),
    #[error("not consistent with the trusted checkpoint (size {trusted}): {reason}")]
    Inconsistent { trusted: u64, reason: &'static str },
    #[error(
        "index {index}: the entry's time is {earlier_by_micros} µs earlier than its predecessor's (the log's times never go backwards)"
    )]
    TimeWentBack { index: u64, earlier_by_micros: i64 },
}

impl Failure {
    /// The first bad index, where one can be named.
    pub fn index(&self) -> Option<u64> {
        match self {
            Failure::Entry { index, .. } => Some(*index),
            Failure::Truncated { size, .. } => Some(*size),
            Failure::TimeWentBack { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// Verifies the log in `dir` against `verifier`, and against `trusted` (an older signed
/// checkpoint note) when given.
pub fn verify(dir: &Path, verifier: &Verifier, trusted: Option<&str>) -> Result<Report, Failure> {
    verify_with(dir, std::slice::from_ref(verifier), trusted)
}

/// As [`verify`], where each checkpoint must be signed by at least one of `verifiers` (the
/// keys the log was signed with across rotations).
pub fn verify_with(
    dir: &Path,
    verifiers: &[Verifier],
    trusted: Option<&str>,
) -> Result<Report, Failure> {
    // Every known key's signature must verify, and the origin must be the name of a key
    // that signed (C2SP signed-note, tlog-checkpoint).
    let check = |note: &str| -> Result<Checkpoint, CheckpointError> {
        checkpoint::verify_log_checkpoint(verifiers, note)
    };
    let note_path = dir.join("checkpoint");
    let newest = match std::fs::read_to_string(&note_path) {
        Ok(note) => check(&note).map_err(Failure::Checkpoint)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::NoCheckpoint(dir.to_owned()));
        }
        Err(source) => {
            return Err(Failure::Io {
                path: note_path,
                source,
            });
        }
    };
    let trusted = trusted
        .map(|note| check(note).map_err(Failure::Trusted))
        .transpose()?;
    if let Some(t) = &trusted {
        if t.origin != newest.origin {
            return Err(Failure::Inconsistent {
                trusted: t.size,
                reason: "it is for another log (origin differs)",
            });
        }
        if t.size > newest.size {
            return Err(Failure::Inconsistent {
                trusted: t.size,
                reason: "it is larger than the newest checkpoint",
            });
        }
    }

    let seg_dir = dir.join("segments");
    let segments = segment::list(&seg_dir).map_err(|source| Failure::Io {
        path: seg_dir.clone(),
        source,
    })?;
    let mut range = CompactRange::new();
    let mut roots: Vec<(u64, Option<Hash>)> = vec![(newest.size, None)];
    if let Some(t) = &trusted {
        roots.push((t.size, None));
    }
    let note_root = |range: &CompactRange, roots: &mut Vec<(u64, Option<Hash>)>| {
        for (size, root) in roots.iter_mut() {
            if *size == range.size() {
                *root = Some(range.root());
            }
        }
    };
    note_root(&range, &mut roots);
    let mut torn_tail_bytes = 0;
    let mut next = 0u64;
    let mut previous_time = i64::MIN;
    for (n, (first, path)) in segments.iter().enumerate() {
        if *first != next {
            return Err(Failure::Entry {
                index: next,
                reason: format!("segment {} starts at record {first}", file_name(path)),
            });
        }
        let bytes = segment::read(path).map_err(|source| Failure::Io {
            path: path.clone(),
            source,
        })?;
        let mut bad_entry = None;
        let mut went_back = None;
        let scan = segment::scan(&bytes, *first, |index, _, payload| {
            match Entry::decode(payload) {
                Err(e) if bad_entry.is_none() => bad_entry = Some((index, e)),
                Err(_) => {}
                Ok(entry) => {
                    if entry.time_micros < previous_time && went_back.is_none() {
                        went_back = Some((index, previous_time.saturating_sub(entry.time_micros)));
                    }
                    previous_time = previous_time.max(entry.time_micros);
                }
            }
            range.append(merkle::leaf_hash(payload), |_, _, _| {});
            note_root(&range, &mut roots);
        });
        if let Some((index, e)) = bad_entry {
            return Err(Failure::Entry {
                index,
                reason: format!("not a valid entry: {e}"),
            });
        }
        if let Some((index, earlier_by_micros)) = went_back {
            return Err(Failure::TimeWentBack {
                index,
                earlier_by_micros,
            });
        }
        if let Some(flaw) = scan.flaw {
            let last = n + 1 == segments.len();
            let tolerable = last
                && scan.next_index >= newest.size
                && matches!(flaw, Flaw::Incomplete | Flaw::Checksum);
            if !tolerable {
                return Err(Failure::Entry {
                    index: scan.next_index,
                    reason: flaw.to_string(),
                });
            }
            torn_tail_bytes = bytes.len() as u64 - scan.good_len;
        }
        next = scan.next_index;
    }
    if next < newest.size {
        return Err(Failure::Truncated {
            size: next,
            checkpoint: newest.size,
        });
    }
    let root_at = |size: u64| roots.iter().find(|(s, _)| *s == size).and_then(|(_, r)| *r);
    if root_at(newest.size) != Some(newest.root) {
        return Err(Failure::RootMismatch(newest.size));
    }
    if let Some(t) = &trusted
        && root_at(t.size) != Some(t.root)
    {
        return Err(Failure::Inconsistent {
            trusted: t.size,
            reason: "the log's first entries do not hash to its root (history was rewritten)",
        });
    }
    Ok(Report {
        entries: next,
        uncovered: next - newest.size,
        checkpoint: newest,
        torn_tail_bytes,
        consistent_with: trusted.map(|t| t.size),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
