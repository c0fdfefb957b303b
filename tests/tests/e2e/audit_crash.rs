//! Nothing acknowledged is ever lost: a child process appends under concurrent load and is
//! killed with SIGKILL at varied moments; after each kill every acknowledged index is present
//! with its content, the log verifies offline, and appending continues.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use casegate_audit::{
    checkpoint::Signer,
    entry::{Entry, EntryKind, Fields},
    log::{AuditLog, LogOptions},
    verify,
};
use casegate_tests::crash::{ORIGIN, entry_detail};

const CHILD: &str = env!("CARGO_BIN_EXE_audit_crash_child");
const KILLS: u64 = 20;

#[test]
fn sigkill_under_load_never_loses_an_acknowledged_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("audit");
    let signer = Signer::generate(ORIGIN).expect("key");
    let key_file = dir.path().join("audit.key");
    std::fs::write(&key_file, signer.to_skey()).expect("key file");
    let verifier = signer.verifier();
    let mut total_acked = 0usize;

    for round in 0..KILLS {
        let mut child = Command::new(CHILD)
            .arg(&log_dir)
            .arg(&key_file)
            .arg("8")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start child");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acked = acked.clone();
            let stdout = child.stdout.take().expect("stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let parts: Vec<u64> = line.split(' ').filter_map(|p| p.parse().ok()).collect();
                    if let [index, t, n] = parts[..] {
                        acked.lock().expect("acked").push((index, t, n));
                    }
                }
            })
        };
        // Kill at varied moments: 20 ms to 215 ms into the run.
        std::thread::sleep(Duration::from_millis(20 + (round * 53) % 200));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        let acked = acked.lock().expect("acked").clone();
        total_acked += acked.len();

        let copy = Signer::from_skey(&signer.to_skey()).expect("copy");
        let options = LogOptions {
            segment_bytes: 256 << 10,
            ..LogOptions::new(ORIGIN)
        };
        let (log, recovery) = AuditLog::open(&log_dir, copy, options)
            .unwrap_or_else(|e| panic!("round {round}: log does not reopen: {e}"));
        for (index, t, n) in &acked {
            assert!(
                *index < recovery.size,
                "round {round}: acknowledged {index} lost"
            );
            let entry = Entry::decode(&log.entry(*index).expect("read")).expect("decode");
            assert_eq!(
                entry.detail_text(),
                Some(entry_detail(*t, *n)),
                "round {round}, index {index}"
            );
        }
        let fields = Fields {
            detail: Some(format!("after crash {round}")),
            ..Fields::default()
        };
        let probe = Entry::from_fields(EntryKind::GatewayStarted, 0, fields);
        let appended = log
            .append_blocking(probe.encode().expect("encode"))
            .unwrap_or_else(|e| panic!("round {round}: appending does not continue: {e}"));
        assert_eq!(appended.index, recovery.size);
        log.close().expect("close");
        let report = verify::verify(&log_dir, &verifier, None)
            .unwrap_or_else(|e| panic!("round {round}: log does not verify: {e}"));
        assert_eq!(report.entries, recovery.size + 1);
    }
    assert!(
        total_acked > 100,
        "only {total_acked} appends were acknowledged in {KILLS} rounds"
    );
}
