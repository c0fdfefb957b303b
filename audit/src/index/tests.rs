use std::fs::OpenOptions;

use proptest::prelude::*;

use super::*;
use crate::{
    checkpoint::Signer,
    entry::{Actor, Fields},
    log::{AuditLog, LogOptions},
};

const ORGS: [&str; 4] = ["910000063", "910000071", "910000098", "910000101"];
const HOUR: i64 = HOUR_MICROS;

/// A synthetic entry: subject, actor, sender, recipient and kind chosen from small sets so
/// that filters overlap; times advance a little each entry with occasional skew.
fn entry(n: u64) -> Entry {
    let kind = EntryKind::ALL[(n % 9) as usize];
    let mut e = Fields::default();
    if !n.is_multiple_of(5) {
        e.subject_pseudonym = Some([(n % 6) as u8; 32]);
    }
    e.actor = Some(Actor {
        orgnr: ORGS[(n % 4) as usize].into(),
        user_id: "u".into(),
        role: "clinician".into(),
        cert_sha256: [0; 32],
    });
    if n.is_multiple_of(3) {
        e.sender_orgnr = Some(ORGS[((n / 3) % 4) as usize].into());
        e.recipient_orgnr = Some(ORGS[((n / 7) % 4) as usize].into());
    }
    if matches!(
        kind,
        EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn
    ) {
        e.consent = Some(crate::entry::ConsentRef {
            id: format!("consent-{}", n % 4),
            version: 1 + (n % 2) as u32,
            record_sha256: [0; 32],
        });
    }
    if matches!(kind, EntryKind::DisclosureRefused | EntryKind::NotePurged) {
        e.reason = Some(REASONS[(n % 3) as usize].into());
    }
    Entry::from_fields(kind, 1_800_000_000_000_000 + (n as i64) * HOUR / 7, e)
}

/// Reason codes the synthetic entries carry, and one none carries.
const REASONS: [&str; 4] = [
    "no_consent",
    "consent_withdrawn",
    "ttl_elapsed",
    "unused_reason",
];

fn entries(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| entry(i).encode().expect("encodes"))
        .collect()
}

fn indexed(bytes: &[Vec<u8>]) -> (tempfile::TempDir, AuditIndex) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = AuditIndex::open(&dir.path().join("index")).expect("open");
    let added = index
        .catch_up(bytes.len() as u64, |i| {
            Ok::<_, String>(bytes[i as usize].clone())
        })
        .expect("catch up");
    assert_eq!(added, bytes.len() as u64);
    (dir, index)
}

/// What a full scan of `bytes[start..end]` with `filter` finds.
fn scanned(bytes: &[Vec<u8>], filter: &Filter, start: u64, end: u64) -> Vec<u64> {
    (start..end.min(bytes.len() as u64))
        .filter(|i| filter.matches(&Entry::decode(&bytes[*i as usize]).expect("decodes")))
        .collect()
}

/// What the index finds: candidates, checked.
fn found(index: &AuditIndex, bytes: &[Vec<u8>], filter: &Filter, start: u64, end: u64) -> Vec<u64> {
    index
        .candidates(filter, start, end)
        .expect("candidates")
        .map(|i| i.expect("index"))
        .filter(|i| filter.matches(&Entry::decode(&bytes[*i as usize]).expect("decodes")))
        .collect()
}

fn filter_strategy() -> impl Strategy<Value = Filter> {
    (
        prop::option::of(0u8..7),
        prop::option::of(0usize..5),
        prop::option::of(0usize..5),
        prop::collection::vec(0usize..11, 0..3),
        prop::option::of(0i64..60),
        prop::option::of(0i64..60),
        prop::collection::vec((0u64..5, 1u32..3), 0..3),
        prop::collection::vec(0usize..4, 0..3),
    )
        .prop_map(
            |(subject, org, visible, kinds, from, until, consents, reasons)| {
                let org_name = |i: usize| {
                    ORGS.get(i)
                        .map_or("999999999".to_owned(), |o| o.to_string())
                };
                Filter {
                    subject: subject.map(|s| [s; 32]),
                    orgnr: org.map(org_name),
                    visible_to: visible.map(org_name),
                    consents: consents
                        .into_iter()
                        .map(|(c, v)| (format!("consent-{c}"), v))
                        .collect(),
                    kinds: kinds.into_iter().map(|k| EntryKind::ALL[k]).collect(),
                    reasons: reasons.into_iter().map(|r| REASONS[r].to_owned()).collect(),
                    from_micros: from.map(|h| 1_800_000_000_000_000 + h * HOUR),
                    until_micros: until.map(|h| 1_800_000_000_000_000 + h * HOUR + 17),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the filter and range, the index finds exactly what a full scan finds.
    #[test]
    fn index_finds_what_a_scan_finds(filter in filter_strategy(), start in 0u64..300, len in 0u64..400) {
        let bytes = entries(300);
        let (_dir, index) = indexed(&bytes);
        prop_assert_eq!(
            found(&index, &bytes, &filter, start, start + len),
            scanned(&bytes, &filter, start, start + len)
        );
    }
}

#[test]
fn a_subject_query_reads_only_that_subjects_entries() {
    let bytes = entries(600);
    let (_dir, index) = indexed(&bytes);
    let filter = Filter {
        subject: Some([2; 32]),
        ..Filter::default()
    };
    let candidates: Vec<u64> = index
        .candidates(&filter, 0, 600)
        .expect("candidates")
        .map(|i| i.expect("index"))
        .collect();
    assert_eq!(candidates, scanned(&bytes, &filter, 0, 600));
    assert_eq!(
        candidates.len(),
        80,
        "entries 2, 8, 14, … that are not multiples of 5"
    );
}

#[test]
fn catching_up_adds_only_new_entries_and_a_shorter_log_rebuilds() {
    let bytes = entries(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let index = AuditIndex::open(&dir.path().join("index")).expect("open");
    let read = |i: u64| Ok::<_, String>(bytes[i as usize].clone());
    assert_eq!(index.catch_up(40, read).expect("first"), 40);
    assert_eq!(index.catch_up(100, read).expect("rest"), 60);
    assert_eq!(index.catch_up(100, read).expect("nothing new"), 0);
    assert_eq!(index.indexed().expect("count"), 100);
    // A log shorter than its index (a different log put in its place): start over.
    assert_eq!(index.catch_up(30, read).expect("rebuilt"), 30);
    assert_eq!(index.indexed().expect("count"), 30);
    let all = Filter::default();
    assert_eq!(
        found(&index, &bytes, &all, 0, 100),
        (0..30).collect::<Vec<_>>()
    );
    // A read error is reported, and the index stays where it was.
    let failing = index.catch_up(100, |i| {
        if i < 50 {
            Ok(bytes[i as usize].clone())
        } else {
            Err("disk on fire")
        }
    });
    assert!(matches!(failing, Err(IndexError::Log(m)) if m.contains("disk on fire")));
    assert_eq!(index.indexed().expect("count"), 30);
}

#[test]
fn a_reopened_index_keeps_what_it_covered() {
    let bytes = entries(50);
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let index = AuditIndex::open(&dir.path().join("index")).expect("open");
        index
            .catch_up(50, |i| Ok::<_, String>(bytes[i as usize].clone()))
            .expect("catch up");
        index.flush().expect("flush");
    }
    let index = AuditIndex::open(&dir.path().join("index")).expect("reopen");
    assert_eq!(index.indexed().expect("count"), 50);
    let filter = Filter {
        kinds: vec![EntryKind::NotePurged],
        ..Filter::default()
    };
    assert_eq!(
        found(&index, &bytes, &filter, 0, 50),
        scanned(&bytes, &filter, 0, 50)
    );
}

#[test]
fn rebuilding_from_segments_matches_catching_up_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::generate("casegate.test/audit").expect("key");
    let options = LogOptions {
        segment_bytes: 4096,
        ..LogOptions::new("casegate.test/audit")
    };
    let (log, _) = AuditLog::open(&dir.path().join("log"), signer, options).expect("open");
    let bytes = entries(250);
    for b in &bytes {
        log.append_blocking(b.clone()).expect("append");
    }
    // Something that is not an entry is covered but found by no filter but the empty one.
    log.append_blocking(b"not an entry".to_vec())
        .expect("append");
    let followed = AuditIndex::open(&dir.path().join("followed")).expect("open");
    followed
        .catch_up(log.size(), |i| log.entry(i))
        .expect("catch up");
    log.close().expect("close");
    let rebuilt = AuditIndex::open(&dir.path().join("rebuilt")).expect("open");
    assert_eq!(
        rebuilt.rebuild(&dir.path().join("log")).expect("rebuild"),
        251
    );
    assert_eq!(followed.indexed().expect("count"), 251);
    assert_eq!(*followed.memory(), *rebuilt.memory());
    let file = |name: &str| std::fs::read(dir.path().join(name).join(POSTINGS)).expect("read");
    assert_eq!(file("followed"), file("rebuilt"));
    let subject = Filter {
        subject: Some([3; 32]),
        ..Filter::default()
    };
    assert_eq!(
        found(&rebuilt, &bytes, &subject, 0, 250),
        scanned(&bytes, &subject, 0, 250)
    );
}

#[test]
fn long_lists_are_read_across_chunks_within_the_range() {
    let bytes = entries(5_000);
    let (_dir, index) = indexed(&bytes);
    let org = Filter {
        orgnr: Some(ORGS[1].into()),
        ..Filter::default()
    };
    for (start, end) in [(0, 5_000), (17, 4_321), (2_049, 2_050), (4_999, 9_000)] {
        let candidates: Vec<u64> = index
            .candidates(&org, start, end)
            .expect("candidates")
            .map(|i| i.expect("index"))
            .collect();
        let wanted: Vec<u64> = (start..end.min(5_000))
            .filter(|i| {
                organisations(&Entry::decode(&bytes[*i as usize]).expect("decodes"))
                    .any(|o| o == ORGS[1])
            })
            .collect();
        assert_eq!(candidates, wanted, "{start}..{end}");
    }
}

#[test]
fn a_record_cut_short_is_cut_off_and_indexed_again() {
    let bytes = entries(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    let read = |i: u64| Ok::<_, String>(bytes[i as usize].clone());
    {
        let index = AuditIndex::open(&path).expect("open");
        index.catch_up(60, read).expect("catch up");
    }
    // The last record loses its end.
    let file = path.join(POSTINGS);
    let len = std::fs::metadata(&file).expect("size").len();
    let f = OpenOptions::new().write(true).open(&file).expect("open");
    f.set_len(len - 3).expect("cut");
    drop(f);
    let index = AuditIndex::open(&path).expect("reopen");
    assert_eq!(index.indexed().expect("count"), 59);
    assert_eq!(index.catch_up(60, read).expect("again"), 1);
    assert_eq!(std::fs::metadata(&file).expect("size").len(), len);
    let all = Filter::default();
    assert_eq!(
        found(&index, &bytes, &all, 0, 60),
        (0..60).collect::<Vec<_>>()
    );
}

#[test]
fn postings_in_the_earlier_record_layout_are_indexed_again_from_the_log() {
    let bytes = entries(40);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    std::fs::create_dir_all(&path).expect("folder");
    // The layout before the shared frame: `[length u16 LE][CRC-32C of payload u32 LE][payload]`.
    let mut earlier = Vec::new();
    for (i, entry) in bytes.iter().enumerate() {
        let mut record = Vec::new();
        Posting::of(i as u64, entry).encode(&mut record);
        let payload = &record[frame::HEADER_LEN..];
        earlier.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        earlier.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        earlier.extend_from_slice(payload);
    }
    std::fs::write(path.join(POSTINGS), &earlier).expect("write");
    let index = AuditIndex::open(&path).expect("open");
    assert_eq!(index.indexed().expect("count"), 0);
    let read = |i: u64| Ok::<_, String>(bytes[i as usize].clone());
    assert_eq!(index.catch_up(40, read).expect("catch up"), 40);
    let all = Filter::default();
    assert_eq!(
        found(&index, &bytes, &all, 0, 40),
        (0..40).collect::<Vec<_>>()
    );
}

#[test]
fn an_earlier_sled_index_is_removed_and_the_index_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    std::fs::create_dir_all(path.join("blobs")).expect("folders");
    for name in ["conf", "db", "snap.0000000000001234", "blobs/7"] {
        std::fs::write(path.join(name), b"sled").expect("write");
    }
    let index = AuditIndex::open(&path).expect("open");
    assert_eq!(index.indexed().expect("count"), 0);
    let mut left: Vec<String> = std::fs::read_dir(&path)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec![POSTINGS.to_owned()]);
}

#[test]
fn a_refused_or_dry_run_disclosure_is_visible_to_its_actor_alone() {
    let (sender, recipient, other) = ("910000098", "910000071", "910000063");
    let entry = |kind| {
        let fields = Fields {
            actor: Some(Actor {
                orgnr: sender.into(),
                user_id: "u".into(),
                role: "employment_specialist".into(),
                cert_sha256: [0; 32],
            }),
            sender_orgnr: Some(sender.into()),
            recipient_orgnr: Some(recipient.into()),
            ..Fields::default()
        };
        Entry::from_fields(kind, 1, fields)
    };
    for (kind, recipient_sees) in [
        (EntryKind::DisclosureRefused, false),
        (EntryKind::DisclosureChecked, false),
        (EntryKind::DisclosurePermitted, true),
        (EntryKind::NoteDelivered, true),
        (EntryKind::NoteAcknowledged, true),
        (EntryKind::NotePurged, true),
    ] {
        let e = entry(kind);
        assert!(visible_to(&e, sender), "{kind}: the actor sees it");
        assert_eq!(
            visible_to(&e, recipient),
            recipient_sees,
            "{kind}: the recipient"
        );
        assert!(!visible_to(&e, other), "{kind}: an unrelated organisation");
        let filter = Filter {
            visible_to: Some(recipient.into()),
            ..Filter::default()
        };
        assert_eq!(
            filter.matches(&e),
            recipient_sees,
            "{kind}: the filter agrees"
        );
    }
}
