//! Consent decision benchmark: latency of one decision with its store lookup (read the
//! subject's decision index, decide) with 10,000 and with 1,000,000 stored consents, ten per
//! subject (so 1,000 and 100,000 subjects): the same work per decision, a hundred times more
//! data. The target is a p99 under 5 µs at 1,000,000; the ratio to the 10,000 run shows how
//! much of a decision's cost is where the data lives (the CPU caches or memory). Each size is
//! also measured reading the subject's index alone, without deciding, and the p99 of permits
//! and of refusals is shown apart (a permit also names the version's record hash).
//!
//! Usage: consent_bench [--dir DIR] [--decisions N] [--sizes 10000,1000000]
//! (release build: `cargo run --release -p casegate-tests --bin consent_bench`)

#![forbid(unsafe_code)]

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use casegate_consent::{
    OrgNumber, Role, SubjectId, Vocabulary,
    decision::{Decision, DisclosureRequest, decide},
    record::{
        Actor, ConsentId, ConsentRecord, Evidence, Party, Period, Provision, Status, Timestamp,
    },
    store::ConsentStore,
};

/// Consents per subject.
const PER_SUBJECT: usize = 10;
const NOW: Timestamp = Timestamp(1_800_000_000_000_000);
const DAY: i64 = 86_400_000_000;
const ORGS: [&str; 4] = ["910000063", "910000071", "910000098", "910000101"];

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn org(i: usize) -> OrgNumber {
    ORGS[i % ORGS.len()].parse().expect("orgnr")
}

fn record(subject: SubjectId, rng: &mut Rng) -> ConsentRecord {
    let categories = [
        "benefit_counselling",
        "work_functioning",
        "job_progress",
        "meeting_summary",
    ];
    let purposes = ["ips_follow_up", "benefit_planning"];
    let party = |i: usize| Party {
        orgnr: org(i),
        roles: BTreeSet::new(),
    };
    ConsentRecord {
        id: ConsentId::generate(),
        version: 1,
        subject,
        recorded_by: Actor {
            orgnr: org(1),
            user_id: "bench".into(),
            role: Role::NavCounsellor,
        },
        provisions: vec![Provision {
            senders: vec![party(rng.below(4)), party(rng.below(4))],
            recipients: vec![party(rng.below(4)), party(rng.below(4))],
            categories: [categories[rng.below(4)].parse().expect("term")].into(),
            purposes: [purposes[rng.below(2)].parse().expect("term")].into(),
        }],
        period: Period {
            start: Timestamp(NOW.0 - DAY * rng.below(30) as i64),
            end: Timestamp(NOW.0 + DAY * (1 + rng.below(300) as i64)),
        },
        evidence: Evidence::SignedForm {
            sha256: [5; 32],
            reference: "bench".into(),
        },
        recorded_at: NOW,
        status: if rng.below(10) == 0 {
            Status::Withdrawn
        } else {
            Status::Active
        },
        withdrawal: None,
    }
}

struct Measured {
    p50: Duration,
    p99: Duration,
    permits: usize,
    /// p99 of the permits and of the refusals alone.
    permit_p99: Duration,
    deny_p99: Duration,
}

/// Decides `decisions` random requests about subjects that have consents.
fn measure(
    store: &ConsentStore,
    subjects: &[SubjectId],
    size: usize,
    decisions: usize,
    rng: &mut Rng,
    vocabulary: &Vocabulary,
) -> Measured {
    let mut latencies = Vec::with_capacity(decisions);
    let (mut permitted, mut denied) = (Vec::new(), Vec::new());
    for _ in 0..decisions {
        let subject = subjects[rng.below(size / PER_SUBJECT)];
        let request = DisclosureRequest {
            sender_org: org(rng.below(4)),
            sender_role: Role::NavCounsellor,
            recipient_org: org(rng.below(4)),
            recipient_role: None,
            category: "benefit_counselling".parse().expect("term"),
            purpose: "ips_follow_up".parse().expect("term"),
            approval_attested: false,
        };
        let t = Instant::now();
        let decision = store
            .with_terms(&subject, |views| decide(&request, views, NOW, vocabulary))
            .expect("lookup");
        let took = t.elapsed();
        latencies.push(took);
        if matches!(decision, Decision::Permit(_)) {
            permitted.push(took);
        } else {
            denied.push(took);
        }
    }
    latencies.sort();
    permitted.sort();
    denied.sort();
    Measured {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        permits: permitted.len(),
        permit_p99: percentile(&permitted, 0.99),
        deny_p99: percentile(&denied, 0.99),
    }
}

/// Reads the index of `reads` random subjects and nothing more (no decision): the part of a
/// decision's cost that is the data's, wherever it lives.
fn measure_reads(
    store: &ConsentStore,
    subjects: &[SubjectId],
    size: usize,
    reads: usize,
    rng: &mut Rng,
) -> (Duration, Duration) {
    let mut latencies = Vec::with_capacity(reads);
    for _ in 0..reads {
        let subject = subjects[rng.below(size / PER_SUBJECT)];
        let t = Instant::now();
        let n = store
            .with_terms(&subject, |views| views.len())
            .expect("lookup");
        latencies.push(t.elapsed());
        std::hint::black_box(n);
    }
    latencies.sort();
    (percentile(&latencies, 0.50), percentile(&latencies, 0.99))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let mut dir = PathBuf::from("target/consent-bench");
    let mut decisions = 20_000usize;
    let mut sizes = vec![10_000usize, 1_000_000];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = PathBuf::from(value),
            "--decisions" => decisions = value.parse().expect("--decisions"),
            "--sizes" => {
                sizes = value
                    .split(',')
                    .map(|s| s.parse().expect("--sizes"))
                    .collect()
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let most = sizes.iter().max().copied().unwrap_or(0) / PER_SUBJECT;
    let subjects: Vec<SubjectId> = SubjectId::synthetic_all().take(most).collect();
    let vocabulary = Vocabulary::default();
    println!(
        "consent decision benchmark: {decisions} decisions per pass, {PER_SUBJECT} consents per subject"
    );
    println!(
        "\nconsents     load       cold p50      p99        warm p50      p99    permits   x baseline warm p99   index read p50      p99   reopen   warm p99 permits  refusals"
    );
    let mut baseline = None;
    let mut largest_read = Duration::ZERO;
    for size in sizes {
        let path = dir.join(format!("store-{size}"));
        let _ = std::fs::remove_dir_all(&path);
        let store = ConsentStore::open(&path).expect("open store");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let started = Instant::now();
        for i in 0..size {
            // Spread evenly: consent i belongs to subject i mod (size / 10).
            let r = record(subjects[i % (size / PER_SUBJECT)], &mut rng);
            store.load_unflushed(&r).expect("load");
        }
        store.flush().expect("flush");
        let load = started.elapsed();

        // Measure a freshly opened store, as after a restart: a first pass (cold caches), then
        // a second pass over other subjects once every subject's index was read once (warm).
        drop(store);
        let reopening = Instant::now();
        let store = ConsentStore::open(&path).expect("reopen store");
        let reopen = reopening.elapsed();
        let cold = measure(&store, &subjects, size, decisions, &mut rng, &vocabulary);
        for subject in subjects.iter().take(size / PER_SUBJECT) {
            std::hint::black_box(store.with_terms(subject, |views| views.len()).ok());
        }
        let warm = measure(&store, &subjects, size, decisions, &mut rng, &vocabulary);
        let (read_p50, read_p99) = measure_reads(&store, &subjects, size, decisions, &mut rng);
        largest_read = read_p99;
        let base = *baseline.get_or_insert(warm.p99);
        println!(
            "{size:>9}   {:>6.1} s   cold {:>9} {:>9}   warm {:>9} {:>9}   {:>7}   {:>6.2}                {:>9} {:>9}   {:>5.1} s   {:>9} {:>9}",
            load.as_secs_f64(),
            us(cold.p50),
            us(cold.p99),
            us(warm.p50),
            us(warm.p99),
            warm.permits,
            warm.p99.as_secs_f64() / base.as_secs_f64(),
            us(read_p50),
            us(read_p99),
            reopen.as_secs_f64(),
            us(warm.permit_p99),
            us(warm.deny_p99),
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }
    if let Some(base) = baseline {
        println!(
            "\nreading the index alone (no decision) at the largest size: p99 {} = {:.2} x the baseline's whole decision",
            us(largest_read),
            largest_read.as_secs_f64() / base.as_secs_f64()
        );
    }
}
