//! Audit-log benchmark. Prints, from one run on one disk: the bare `fdatasync` rate (the
//! baseline), appends/s with p50/p99 acknowledgement latency at 1, 16 and 256 concurrent
//! appenders, start-up time over a large log (clean and after a crash), and the offline
//! verifier's rate.
//!
//! Usage: audit_bench [--dir DIR] [--seconds S] [--startup-entries N]
//! (`--seconds 0`: the start-up figures only)
//! (release build recommended: `cargo run --release -p casegate-tests --bin audit_bench`)

#![forbid(unsafe_code)]

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use casegate_audit::{
    checkpoint::Signer,
    entry::{Actor, ConsentRef, DecisionTerms, DisclosurePermitted, Entry, Event},
    log::{AuditLog, LogOptions},
    verify,
};

const ORIGIN: &str = "bench.casegate.test/audit";

struct Args {
    dir: PathBuf,
    seconds: u64,
    startup_entries: u64,
}

fn args() -> Args {
    let mut args = Args {
        dir: PathBuf::from("target/audit-bench"),
        seconds: 3,
        startup_entries: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value),
            "--seconds" => args.seconds = value.parse().expect("--seconds"),
            "--startup-entries" => args.startup_entries = value.parse().expect("--startup-entries"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A realistic `disclosure permitted` entry (synthetic values, ~250 bytes). Every entry has
/// the same time: appenders on several threads must not send times that go backwards.
fn entry(n: u64) -> Vec<u8> {
    let permitted = DisclosurePermitted {
        terms: DecisionTerms {
            actor: Actor {
                orgnr: "910000020".into(),
                user_id: "nav-counsellor-17".into(),
                role: "nav_counsellor".into(),
                cert_sha256: [7; 32],
            },
            subject_pseudonym: [n as u8; 32],
            category: "benefit_counselling".into(),
            purpose: "benefit_planning".into(),
            sender_orgnr: "910000020".into(),
            recipient_orgnr: "910000039".into(),
            policy_version: "v1".into(),
        },
        consent: ConsentRef {
            id: "0190f7a2-4b1c-7d3e-9a4f-2c8e6b1d0a57".into(),
            version: 2,
            record_sha256: [9; 32],
        },
        recipient_role: None,
        approval_attested: false,
        content_sha256: [3; 32],
        request_id: format!("req-{n:012}"),
        disclosure_id: format!("0190f7a2-0000-7000-8000-{n:012}"),
    };
    Entry::new(1_800_000_000_000_000, Event::DisclosurePermitted(permitted))
        .encode()
        .expect("encodes")
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("bench folder");
    dir.to_owned()
}

fn open(dir: &Path, signer: &Signer) -> (AuditLog, casegate_audit::log::Recovery) {
    let copy = Signer::from_skey(&signer.to_skey()).expect("key");
    AuditLog::open(dir, copy, LogOptions::new(ORIGIN)).expect("open log")
}

/// Bare `write` + `fdatasync` of a small record, one at a time.
fn fdatasync_rate(dir: &Path, seconds: u64) -> f64 {
    let path = fresh(dir).join("fdatasync.probe");
    let mut file = fs::File::create(&path).expect("probe file");
    let record = [0u8; 256];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct Run {
    appends: u64,
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn append_run(dir: &Path, signer: &Signer, threads: usize, seconds: u64) -> Run {
    let (log, _) = open(&fresh(dir), signer);
    let log = Arc::new(log);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut n = t as u64 * 1_000_000_000;
                while Instant::now() < deadline {
                    let bytes = entry(n);
                    let sent = Instant::now();
                    log.append_blocking(bytes).expect("append");
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    log.close().expect("close");
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Run {
        appends: all.len() as u64,
        rate: all.len() as f64 / elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn fill(dir: &Path, signer: &Signer, entries: u64) {
    let (log, _) = open(&fresh(dir), signer);
    casegate_tests::bench::fill_log(&log, entries, entry);
    log.close().expect("close");
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args = args();
    let signer = Signer::generate(ORIGIN).expect("key");
    fs::create_dir_all(&args.dir).expect("bench folder");
    println!(
        "audit log benchmark — folder {} ({} s per run)",
        args.dir.display(),
        args.seconds
    );

    if args.seconds == 0 {
        startup(&args, &signer);
        return;
    }
    let baseline = fdatasync_rate(&args.dir.join("baseline"), args.seconds);
    println!("\nbaseline: bare write+fdatasync          {baseline:>10.0} /s");

    println!("\nappenders   appends/s   x baseline   p50 ack     p99 ack     appends");
    for threads in [1usize, 16, 256] {
        let run = append_run(
            &args.dir.join(format!("append-{threads}")),
            &signer,
            threads,
            args.seconds,
        );
        println!(
            "{threads:>9}   {:>9.0}   {:>10.1}   {:>9}   {:>9}   {:>7}",
            run.rate,
            run.rate / baseline,
            ms(run.p50),
            ms(run.p99),
            run.appends
        );
    }

    startup(&args, &signer);
}

/// The gateway's start-up reconciliation of `consents` and `notes` with `log` from `mark`:
/// (entries read, time taken).
fn reconcile(
    log: &AuditLog,
    consents: &casegate_consent::store::ConsentStore,
    notes: &casegate_notes::NoteStore,
    mark: u64,
) -> (u64, Duration) {
    consents.set_reconciled_through(mark).expect("mark");
    let t = Instant::now();
    let reconciled = casegate::reconcile::stores(log, consents, notes, Duration::from_secs(3600))
        .expect("reconcile");
    (reconciled.to - reconciled.from, t.elapsed())
}

/// Held notes whose start-up time is measured.
const HELD_NOTES: u64 = 200_000;

/// A held note as `Disclose` leaves it: deliverable, its ~1 KiB body sealed.
fn held_note(keyring: &casegate::keyring::Keyring, n: u64) -> casegate_notes::Note {
    use casegate_consent::record::{Actor as ConsentActor, ConsentId, Timestamp};
    use casegate_notes::{Note, NoteState};
    let id = uuid::Uuid::now_v7();
    let recipient = "910000039".parse().expect("orgnr");
    let pseudonym = [n as u8; 32];
    let body = vec![b'x'; 1024];
    Note {
        id,
        state: NoteState::Pending,
        request_id: format!("req-{n:012}"),
        fingerprint: [1; 32],
        sender: ConsentActor {
            orgnr: "910000020".parse().expect("orgnr"),
            user_id: "nav-counsellor-17".into(),
            role: casegate_consent::Role::NavCounsellor,
        },
        recipient_org: recipient,
        recipient_role: None,
        category: "benefit_counselling".parse().expect("category"),
        purpose: "ips_follow_up".parse().expect("purpose"),
        content_type: "text/plain".into(),
        consent_id: ConsentId::generate(),
        consent_version: 1,
        consent_record_hash: [2; 32],
        content_sha256: [3; 32],
        subject_pseudonym: pseudonym,
        disclosed_at: Timestamp(1_800_000_000_000_000 + n as i64),
        audit_index: None,
        log_size_hint: n,
        delivered: false,
        acknowledged_at: None,
        purge_after: None,
        purged_at: None,
        sealed: Some(
            keyring
                .seal(&body, &Note::aad(&id, &pseudonym, recipient))
                .expect("seal"),
        ),
    }
}

/// Start-up time of the note store holding [`HELD_NOTES`] deliverable notes (the journal is
/// read whole at every start, clean or not).
fn notes_startup(dir: &Path) {
    use casegate::keyring::Keyring;
    use casegate_notes::NoteStore;
    let keyring = Keyring::parse(&Keyring::new_line("k1").expect("key")).expect("keyring");
    let path = fresh(dir).join("notes");
    {
        let store = NoteStore::open(&path).expect("note store");
        for n in 0..HELD_NOTES {
            let note = held_note(&keyring, n);
            store.stage_pending(&note).expect("stage");
            store.make_deliverable(note, n).expect("deliverable");
        }
        store.flush().expect("flush");
    }
    let t = Instant::now();
    let store = NoteStore::open(&path).expect("reopen");
    let took = t.elapsed();
    assert_eq!(store.backlog() as u64, HELD_NOTES);
    println!(
        "note store start-up, {HELD_NOTES} held notes  {:>10} ({:.1} µs per note)",
        ms(took),
        took.as_secs_f64() * 1e6 / HELD_NOTES as f64
    );
}

/// Start-up time over a log of `--startup-entries` entries, clean and after a crash, and the
/// offline verifier's rate over it.
fn startup(args: &Args, signer: &Signer) {
    notes_startup(&args.dir.join("notes-startup"));
    let signer = Signer::from_skey(&signer.to_skey()).expect("key");
    if args.startup_entries > 0 {
        let dir = args.dir.join("startup");
        let started = Instant::now();
        fill(&dir, &signer, args.startup_entries);
        println!(
            "\nfilled {} entries in {:.1} s",
            args.startup_entries,
            started.elapsed().as_secs_f64()
        );
        // The gateway's start reconciles its consent store with the log from the store's
        // mark: at the log's end after a clean shutdown, further back after a crash (at
        // most 10 s of entries; here the worst case, the whole log).
        let consents = casegate_consent::store::ConsentStore::open(&args.dir.join("consents"))
            .expect("consent store");
        let notes = casegate_notes::NoteStore::open(&args.dir.join("notes")).expect("note store");
        let t = Instant::now();
        let (log, recovery) = open(&dir, &signer);
        let clean = t.elapsed();
        assert!(recovery.clean && recovery.size == args.startup_entries);
        let (read, clean_reconcile) = reconcile(&log, &consents, &notes, recovery.size);
        assert_eq!(read, 0, "nothing to read after a clean start");
        log.close().expect("close");
        fs::remove_file(dir.join("clean")).expect("simulate a crash");
        let t = Instant::now();
        let (log, recovery) = open(&dir, &signer);
        let crashed = t.elapsed();
        assert!(!recovery.clean && recovery.size == args.startup_entries);
        let (read, crash_reconcile) = reconcile(&log, &consents, &notes, 0);
        assert_eq!(read, args.startup_entries);
        log.close().expect("close");
        println!("start-up, clean shutdown before        {:>10}", ms(clean));
        println!(
            "  + consent reconciliation (0 entries)  {:>10}",
            ms(clean_reconcile)
        );
        println!(
            "start-up after a crash (full re-hash)   {:>10}",
            ms(crashed)
        );
        println!(
            "  + consent reconciliation (all {} entries) {:>10}",
            args.startup_entries,
            ms(crash_reconcile)
        );

        let t = Instant::now();
        let report = verify::verify(&dir, &signer.verifier(), None).expect("verifies");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "offline verifier                        {:>10.0} entries/s ({} entries in {:.2} s)",
            report.entries as f64 / secs,
            report.entries,
            secs
        );
    }
}
