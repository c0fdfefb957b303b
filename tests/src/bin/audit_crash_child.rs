//! Test helper for the crash test: appends to an audit log from several threads as fast as it
//! can and prints `index thread n` for every append that was acknowledged, until killed.
//!
//! Usage: audit_crash_child LOG_DIR SIGNER_KEY_FILE THREADS

#![forbid(unsafe_code)]

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use casegate_audit::{
    checkpoint::Signer,
    entry::{Entry, EntryKind, Fields},
    log::{AuditLog, LogOptions},
};
use casegate_tests::crash::{ORIGIN, entry_detail};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("LOG_DIR"));
    let key = std::fs::read_to_string(args.next().expect("SIGNER_KEY_FILE")).expect("key file");
    let threads: u64 = args.next().expect("THREADS").parse().expect("number");
    let signer = Signer::from_skey(&key).expect("signer key");
    let options = LogOptions {
        segment_bytes: 256 << 10,
        ..LogOptions::new(ORIGIN)
    };
    let (log, _) = AuditLog::open(&dir, signer, options).expect("open log");
    let log = Arc::new(log);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for n in 0u64.. {
                    // One time for all: threads must not send times that go backwards.
                    let fields = Fields {
                        detail: Some(entry_detail(t, n)),
                        ..Fields::default()
                    };
                    let entry = Entry::from_fields(EntryKind::NoteDelivered, 0, fields);
                    let appended = log
                        .append_blocking(entry.encode().expect("encode"))
                        .expect("append");
                    let mut out = out.lock().expect("stdout");
                    writeln!(out, "{} {t} {n}", appended.index).expect("write");
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}
