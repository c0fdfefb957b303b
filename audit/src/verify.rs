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
    /// A file or folder of the log could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The log folder has no `checkpoint` file; holds the folder.
    #[error("no signed checkpoint in {0}")]
    NoCheckpoint(PathBuf),
    /// The newest checkpoint does not verify, or its origin is not its key's name.
    #[error("newest checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// The trusted checkpoint does not verify, or its origin is not its key's name.
    #[error("trusted checkpoint: {0}")]
    Trusted(CheckpointError),
    /// A record is missing, damaged, out of place or not a valid entry.
    #[error("index {index}: {reason}")]
    Entry {
        /// The first bad index.
        index: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The log ends before the newest checkpoint's size.
    #[error(
        "index {size}: the log ends here, but the signed checkpoint covers {checkpoint} entries"
    )]
    Truncated {
        /// Entries found.
        size: u64,
        /// The checkpoint's size.
        checkpoint: u64,
    },
    /// The entries do not hash to the newest checkpoint's root; holds its size.
    #[error("the first {0} entries do not hash to the signed checkpoint's root")]
    RootMismatch(u64),
    /// The log does not extend the trusted checkpoint.
    #[error("not consistent with the trusted checkpoint (size {trusted}): {reason}")]
    Inconsistent {
        /// The trusted checkpoint's size.
        trusted: u64,
        /// Why: another origin, a larger size, or other entries below it.
        reason: &'static str,
    },
    /// An export file's text is malformed; says how.
    #[error("the export file is malformed: {0}")]
    Export(String),
    /// An entry's time is earlier than its predecessor's, which the log never writes.
    #[error(
        "index {index}: the entry's time is {earlier_by_micros} µs earlier than its predecessor's (the log's times never go backwards)"
    )]
    TimeWentBack {
        /// The entry's index.
        index: u64,
        /// How much earlier, in microseconds.
        earlier_by_micros: i64,
    },
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

/// The first line of an export file ([`EXPORT_HEADER`], then one base64 canonical entry per
/// line from index 0, a blank line, and the signed checkpoint note covering exactly those
/// entries).
pub const EXPORT_HEADER: &str = "casegate-audit-export 1";

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
    let note_path = dir.join("checkpoint");
    let note = match std::fs::read_to_string(&note_path) {
        Ok(note) => note,
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
    let mut hasher = Hasher::new(verifiers, &note, trusted)?;
    let seg_dir = dir.join("segments");
    let segments = segment::list(&seg_dir).map_err(|source| Failure::Io {
        path: seg_dir.clone(),
        source,
    })?;
    let mut torn_tail_bytes = 0;
    for (n, (first, path)) in segments.iter().enumerate() {
        if *first != hasher.next {
            return Err(Failure::Entry {
                index: hasher.next,
                reason: format!("segment {} starts at record {first}", file_name(path)),
            });
        }
        let bytes = segment::read(path).map_err(|source| Failure::Io {
            path: path.clone(),
            source,
        })?;
        let mut failed = None;
        let scan = segment::scan(&bytes, *first, |_, _, payload| {
            if let Err(e) = hasher.entry(payload)
                && failed.is_none()
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(flaw) = scan.flaw {
            let last = n + 1 == segments.len();
            let tolerable = last
                && scan.next_index >= hasher.newest.size
                && matches!(flaw, Flaw::Incomplete | Flaw::Checksum);
            if !tolerable {
                return Err(Failure::Entry {
                    index: scan.next_index,
                    reason: flaw.to_string(),
                });
            }
            torn_tail_bytes = bytes.len() as u64 - scan.good_len;
        }
    }
    hasher.finish(torn_tail_bytes)
}

/// Verifies an export file's text ([`EXPORT_HEADER`]): the same checks as [`verify_with`] over
/// the exported entries, which must be exactly those the exported checkpoint covers.
pub fn verify_export(
    text: &str,
    verifiers: &[Verifier],
    trusted: Option<&str>,
) -> Result<Report, Failure> {
    let malformed = |reason: &str| Failure::Export(reason.to_owned());
    let rest = text
        .strip_prefix(EXPORT_HEADER)
        .and_then(|r| r.strip_prefix('\n'))
        .ok_or_else(|| malformed("it does not start with the export header line"))?;
    // Entries end at the first blank line (a signed note has one of its own, further on).
    let (entries, note) = if let Some(note) = rest.strip_prefix('\n') {
        ("", note)
    } else {
        rest.split_once("\n\n")
            .ok_or_else(|| malformed("no blank line before the checkpoint"))?
    };
    let mut hasher = Hasher::new(verifiers, note, trusted)?;
    for line in entries.lines().filter(|l| !l.is_empty()) {
        let index = hasher.next;
        let payload = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, line)
            .map_err(|_| Failure::Entry {
                index,
                reason: "not base64".into(),
            })?;
        hasher.entry(&payload)?;
    }
    if hasher.next > hasher.newest.size {
        return Err(malformed(
            "it holds more entries than its checkpoint covers",
        ));
    }
    hasher.finish(0)
}

/// What both forms share: each entry decoded, its time checked, its leaf added to the tree,
/// and the roots at the checkpoints' sizes kept.
struct Hasher {
    newest: Checkpoint,
    trusted: Option<Checkpoint>,
    range: CompactRange,
    roots: Vec<(u64, Option<Hash>)>,
    previous_time: i64,
    next: u64,
}

impl Hasher {
    /// Checks the newest checkpoint `note` (every known key's signature must verify, and the
    /// origin must be the name of a key that signed: C2SP signed-note, tlog-checkpoint) and the
    /// trusted one against it.
    fn new(verifiers: &[Verifier], note: &str, trusted: Option<&str>) -> Result<Self, Failure> {
        let newest =
            checkpoint::verify_log_checkpoint(verifiers, note).map_err(Failure::Checkpoint)?;
        let trusted = trusted
            .map(|note| {
                checkpoint::verify_log_checkpoint(verifiers, note).map_err(Failure::Trusted)
            })
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
        let mut roots: Vec<(u64, Option<Hash>)> = vec![(newest.size, None)];
        if let Some(t) = &trusted {
            roots.push((t.size, None));
        }
        let mut hasher = Self {
            newest,
            trusted,
            range: CompactRange::new(),
            roots,
            previous_time: i64::MIN,
            next: 0,
        };
        hasher.note_root();
        Ok(hasher)
    }

    fn note_root(&mut self) {
        for (size, root) in &mut self.roots {
            if *size == self.range.size() {
                *root = Some(self.range.root());
            }
        }
    }

    /// Takes the entry at the next index.
    fn entry(&mut self, payload: &[u8]) -> Result<(), Failure> {
        let index = self.next;
        let time_micros = Entry::check(payload).map_err(|e| Failure::Entry {
            index,
            reason: format!("not a valid entry: {e}"),
        })?;
        if time_micros < self.previous_time {
            return Err(Failure::TimeWentBack {
                index,
                earlier_by_micros: self.previous_time.saturating_sub(time_micros),
            });
        }
        self.previous_time = time_micros;
        self.range.append(merkle::leaf_hash(payload), |_, _, _| {});
        self.next += 1;
        self.note_root();
        Ok(())
    }

    fn finish(self, torn_tail_bytes: u64) -> Result<Report, Failure> {
        let Hasher {
            newest,
            trusted,
            roots,
            next,
            ..
        } = self;
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
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
