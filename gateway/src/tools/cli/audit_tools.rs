//! Offline audit tools: `casegate audit reindex` and `casegate audit replay`.

use std::{path::Path, process::ExitCode, time::Instant};

use casegate_audit::index::AuditIndex;

use super::{EXIT_USAGE, stopped_gateway};
use crate::{
    client::replay::{Replay, ReplayError, read_export, replay as run_replay},
    edge::convert::audit::rfc3339,
};

/// `casegate audit reindex`: drops the audit index and rebuilds it from the segment files.
pub(super) fn reindex(config: &Path) -> ExitCode {
    let (_config, data) = match stopped_gateway(config, "reindex") {
        Ok(found) => found,
        Err(code) => return code,
    };
    let started = Instant::now();
    let rebuilt = AuditIndex::open(&data.path().join("audit-index"))
        .and_then(|index| index.rebuild(&data.path().join("audit")));
    match rebuilt {
        Ok(entries) => {
            println!(
                "OK: audit index rebuilt over {entries} entries in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "casegate audit reindex: {}",
                crate::client::render::terminal(&e.to_string())
            );
            ExitCode::FAILURE
        }
    }
}

/// The one-line verdict `casegate audit replay` prints, and whether it is a success.
pub fn replay_verdict(result: &Result<Replay, ReplayError>) -> (String, bool) {
    match result {
        Ok(r) if r.reproduced() => (
            format!(
                "REPRODUCED: entry {} ({} at {}): {}; {} consent version(s) checked against \
                 the record hashes in the log; policy {}",
                r.index,
                r.kind,
                rfc3339(r.time_micros),
                r.replayed,
                r.checked_versions,
                casegate_consent::decision::POLICY_VERSION
            ),
            true,
        ),
        Ok(r) => (
            format!(
                "NOT REPRODUCED: entry {} ({} at {}) recorded {}, but the decision now gives {}",
                r.index,
                r.kind,
                rfc3339(r.time_micros),
                r.recorded,
                r.replayed
            ),
            false,
        ),
        Err(e) => (format!("FAILED: {e}"), false),
    }
}

/// `casegate audit replay`.
pub(super) fn replay(log: &Path, consents: &Path, index: u64, config: Option<&Path>) -> ExitCode {
    let vocabulary = match config {
        None => casegate_consent::Vocabulary::default(),
        Some(path) => match crate::runtime::config::Config::load(path) {
            Ok(config) => config.vocabulary,
            Err(e) => {
                eprintln!("casegate audit replay: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let export = match std::fs::read(consents) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!(
                "casegate audit replay: --consents {}: {e}",
                consents.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result =
        read_export(&export).and_then(|export| run_replay(log, &export, index, &vocabulary));
    let (line, ok) = replay_verdict(&result);
    // The verdict quotes the log's entries (kinds, reasons): terminal-safe.
    println!("{}", crate::client::render::terminal(&line));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
