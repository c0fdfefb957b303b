//! Audit query benchmark: a gateway on loopback over an audit log of 1,000,000 entries about
//! 100,000 jobseekers (ten each, spread over the whole log). Measures, in one run:
//!
//! - `reindex`: rebuilding the audit index from the segment files (what
//!   `casegate audit reindex` runs);
//! - a one-subject `QueryAudit` and a `SubjectAccessReport` by a supervisory privacy officer,
//!   each over real mTLS + JWT, each audited (one durable append) as in production;
//! - the baseline: `GetCheckpoint` over the same connection (an authenticated call that reads
//!   no entries), for the ratio.
//!
//! Usage: audit_query_bench [--entries N] [--queries N]
//! (release build: `cargo run --release -p casegate-tests --bin audit_query_bench`)

#![forbid(unsafe_code)]

use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

use casegate::pseudonym::Pseudonymizer;
use casegate_audit::{
    checkpoint::Signer,
    entry::{Actor, ConsentRef, Entry, EntryKind, Fields},
    index::AuditIndex,
    log::{AuditLog, LogOptions},
};
use casegate_consent::SubjectId;
use casegate_proto::v1::{GetCheckpointRequest, QueryAuditRequest, SubjectAccessReportRequest};
use casegate_tests::{TestGateway, gateway::AUDIT_ORIGIN};
use tokio_stream::StreamExt;

/// Entries per subject.
const PER_SUBJECT: u64 = 10;
const KINDS: [EntryKind; 5] = [
    EntryKind::ConsentGranted,
    EntryKind::DisclosurePermitted,
    EntryKind::NoteDelivered,
    EntryKind::NoteAcknowledged,
    EntryKind::DisclosureRefused,
];

struct Args {
    entries: u64,
    queries: usize,
}

fn args() -> Args {
    let mut args = Args {
        entries: 1_000_000,
        queries: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--entries" => args.entries = value.parse().expect("--entries"),
            "--queries" => args.queries = value.parse().expect("--queries"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// Entry `n`: about subject `n mod subjects`, so each subject's entries lie far apart.
fn entry(n: u64, pseudonyms: &[[u8; 32]], orgs: &[String; 3]) -> Vec<u8> {
    let subject = (n % pseudonyms.len() as u64) as usize;
    let kind = KINDS[(n / pseudonyms.len() as u64 % KINDS.len() as u64) as usize];
    let e = Fields {
        actor: Some(Actor {
            orgnr: orgs[(n % 3) as usize].clone(),
            user_id: format!("user-{}", n % 97),
            role: "nav_counsellor".into(),
            cert_sha256: [7; 32],
        }),
        subject_pseudonym: Some(pseudonyms[subject]),
        consent: Some(ConsentRef {
            id: "0190f7a2-4b1c-7d3e-9a4f-2c8e6b1d0a57".into(),
            version: 1,
            record_sha256: [9; 32],
        }),
        category: Some("benefit_counselling".into()),
        purpose: Some("ips_follow_up".into()),
        sender_orgnr: Some(orgs[1].clone()),
        recipient_orgnr: Some(orgs[2].clone()),
        content_sha256: Some([3; 32]),
        request_id: Some(format!("req-{n:012}")),
        policy_version: Some("casegate-policy-1".into()),
        ..Fields::default()
    };
    Entry::from_fields(kind, 1_800_000_000_000_000 + n as i64 * 1_000, e)
        .encode()
        .expect("encodes")
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        max: *samples.last().expect("samples"),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn timed<F: Future<Output = usize>>(
    queries: usize,
    mut call: impl FnMut(usize) -> F,
) -> (Stats, usize) {
    let mut samples = Vec::with_capacity(queries);
    let mut items = 0;
    for i in 0..queries {
        let started = Instant::now();
        items += call(i).await;
        samples.push(started.elapsed());
    }
    (stats(samples), items)
}

#[tokio::main]
async fn main() {
    let args = args();
    let subjects = (args.entries / PER_SUBJECT).max(1) as usize;
    let ids: Vec<SubjectId> = SubjectId::synthetic_all().take(subjects).collect();
    let gw = TestGateway::start_with(casegate_tests::bench::NO_RATE_LIMIT).await;
    let orgs = [
        gw.org("clinic").orgnr.clone(),
        gw.org("nav").orgnr.clone(),
        gw.org("ips").orgnr.clone(),
    ];
    let mut fill_time = Duration::ZERO;
    let mut reindex_time = Duration::ZERO;
    let mut indexed = 0;
    // Fill the log while the gateway is stopped, then rebuild its index.
    let gw = gw
        .restart_after(|config: &Path| {
            let dir = config.parent().expect("test folder");
            let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
            let pseudonymizer = Pseudonymizer::from_text(&read("pseudonym.key")).expect("key");
            let pseudonyms: Vec<[u8; 32]> =
                ids.iter().map(|s| pseudonymizer.pseudonym(s)).collect();
            let signer = Signer::from_skey(&read("audit.key")).expect("audit key");
            let data = dir.join("data");
            let started = Instant::now();
            let (log, _) =
                AuditLog::open(&data.join("audit"), signer, LogOptions::new(AUDIT_ORIGIN))
                    .expect("open log");
            casegate_tests::bench::fill_log(&log, args.entries, |n| entry(n, &pseudonyms, &orgs));
            log.close().expect("close");
            fill_time = started.elapsed();
            let started = Instant::now();
            let index = AuditIndex::open(&data.join("audit-index")).expect("index");
            indexed = index.rebuild(&data.join("audit")).expect("reindex");
            reindex_time = started.elapsed();
        })
        .await;
    println!(
        "audit query benchmark: {} entries about {subjects} subjects ({PER_SUBJECT} each)",
        args.entries
    );
    println!(
        "fill {:.1} s; reindex of {indexed} entries {:.1} s ({:.0} entries/s; target <= 30 s)",
        fill_time.as_secs_f64(),
        reindex_time.as_secs_f64(),
        indexed as f64 / reindex_time.as_secs_f64()
    );

    let officer = gw.caller("authority", "privacy_officer").await;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % subjects as u64) as usize
    };
    // Warm the connection and the gateway's caches of keys and tokens.
    officer
        .clone()
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("checkpoint");

    let (baseline, _) = timed(args.queries, |_| {
        let mut c = officer.clone();
        async move {
            c.audit
                .get_checkpoint(GetCheckpointRequest {})
                .await
                .expect("checkpoint");
            0
        }
    })
    .await;
    let picks: Vec<usize> = (0..args.queries).map(|_| pick()).collect();
    let (query, queried) = timed(args.queries, |i| {
        let mut c = officer.clone();
        let subject = ids[picks[i]].expose();
        async move {
            c.audit
                .query_audit(QueryAuditRequest {
                    subject_id: subject,
                    ..Default::default()
                })
                .await
                .expect("query")
                .into_inner()
                .map(|item| item.expect("entry"))
                .collect::<Vec<_>>()
                .await
                .len()
        }
    })
    .await;
    let (report, events) = timed(args.queries, |i| {
        let mut c = officer.clone();
        let subject = ids[picks[(i + 1) % picks.len()]].expose();
        async move {
            c.audit
                .subject_access_report(SubjectAccessReportRequest {
                    subject_id: subject,
                })
                .await
                .expect("report")
                .into_inner()
                .events
                .len()
        }
    })
    .await;
    assert!(
        queried >= args.queries * PER_SUBJECT as usize,
        "queries found {queried} entries"
    );
    println!(
        "\n{:<34} {:>10} {:>10} {:>10} {:>12}",
        "call (sequential)", "p50", "p99", "max", "x baseline p50"
    );
    for (name, s) in [
        ("GetCheckpoint (baseline)", &baseline),
        ("QueryAudit, one subject", &query),
        ("SubjectAccessReport", &report),
    ] {
        println!(
            "{name:<34} {:>10} {:>10} {:>10} {:>12.1}",
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            s.p50.as_secs_f64() / baseline.p50.as_secs_f64()
        );
    }
    println!(
        "\n{} queries returned {queried} entries; {} reports {events} events (with proofs); \
         target: each <= 50 ms",
        args.queries, args.queries
    );
}
