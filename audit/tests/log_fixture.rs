//! A log written by the gateway before entries were typed events
//! (`fixtures/log-v1/`, written by `tests/tests/e2e/audit_fixture.rs` at that commit): every
//! entry decodes to a typed event — none left unfitted — re-encodes to its own bytes, and the
//! log verifies with its checkpoint and an inclusion proof for every entry.

use std::{ops::ControlFlow, path::PathBuf};

use casegate_audit::{
    checkpoint::Verifier,
    entry::{
        Access, Answer, AuditQuery, ConsentRead, Entry, EntryKind, Event, Login, QueryFilter, Scope,
    },
    merkle::{self, Hash},
    segment, verify,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v1")
}

/// Every entry's canonical bytes, in log order.
fn records() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let size = segment::scan_dir(&fixture().join("segments"), |index, payload| {
        assert_eq!(index, out.len() as u64);
        out.push(payload.to_vec());
        ControlFlow::Continue(())
    })
    .expect("segments");
    assert_eq!(size, out.len() as u64);
    out
}

fn verifier() -> Verifier {
    let text = std::fs::read_to_string(fixture().join("verifier.vkey")).expect("key");
    Verifier::from_vkey(text.trim()).expect("verifier key")
}

/// RFC 6962 `MTH` of `leaves`.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => merkle::empty_root(),
        [leaf] => *leaf,
        _ => {
            let k = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
            merkle::node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

#[test]
fn every_entry_decodes_to_a_typed_event_and_re_encodes_to_its_bytes() {
    let records = records();
    let entries: Vec<Entry> = records
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let entry = Entry::decode(bytes).unwrap_or_else(|e| panic!("entry {i}: {e}"));
            if let Event::Unfitted(u) = &entry.event {
                panic!("entry {i} ({}) fits no typed event: {}", u.kind, u.why);
            }
            assert_eq!(entry.encode().as_ref(), Ok(bytes), "entry {i} re-encodes");
            entry
        })
        .collect();
    let mut kinds: Vec<EntryKind> = entries.iter().map(Entry::kind).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, EntryKind::ALL, "the fixture holds every kind");

    let events = || entries.iter().map(|e| &e.event);
    let started: Vec<&str> = events()
        .filter_map(|e| match e {
            Event::GatewayStarted(s) => Some(s.version.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        ["0.1.0", "0.1.0"],
        "started, rotated, started again"
    );
    assert!(events().any(|e| matches!(e,
        Event::KeyRotated(k) if k.old_key.starts_with("test.casegate.invalid/audit+")
            && k.new_key.starts_with("test.casegate.invalid/audit+")
            && k.old_key != k.new_key)));

    // The recipient role and an attested approval, from the disclosures' detail.
    let permits: Vec<_> = events()
        .filter_map(|e| match e {
            Event::DisclosurePermitted(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(permits.len(), 3);
    assert!(permits.iter().all(|p| {
        p.recipient_role.as_deref() == Some("employment_specialist")
            && p.terms.recipient_orgnr == "910000098"
            && p.terms.policy_version == "casegate-policy-2"
    }));
    assert_eq!(
        permits
            .iter()
            .map(|p| (p.terms.category.as_str(), p.approval_attested))
            .collect::<Vec<_>>(),
        [
            ("benefit_counselling", false),
            ("treatment_summary", true),
            ("benefit_counselling", false),
        ]
    );
    let refusals: Vec<&str> = events()
        .filter_map(|e| match e {
            Event::DisclosureRefused(r) => Some(r.reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals,
        ["no_consent", "approval_missing", "consent_withdrawn"]
    );
    assert!(events().any(|e| matches!(e,
        Event::DisclosureChecked(c) if matches!(c.answer, Answer::Permit(_)))));
    assert!(events().any(|e| matches!(e,
        Event::NotePurged(p) if p.reason == "consent_withdrawn")));

    // Audit queries: the filter, the scope and the vouched login, typed.
    let login = Some(Login {
        idp: "https://login.test.casegate.invalid".into(),
        acr: Some("idporten-loa-high".into()),
    });
    assert!(events().any(|e| matches!(e,
    Event::AuditQueried(q) if q.login == login
        && q.access == Access::Answered(AuditQuery::Entries(
            QueryFilter {
                subject: true,
                orgnr: None,
                from: None,
                until: None,
                kinds: vec![EntryKind::DisclosureRefused],
                reasons: vec!["no_consent".into()],
                start_index: 0,
                limit: 1000,
            },
            Scope::All,
        )))));
    assert!(events().any(|e| matches!(e,
        Event::AuditQueried(q) if q.login == login
            && matches!(&q.access, Access::Answered(AuditQuery::Summary(f, Scope::All))
                if f.kinds == [EntryKind::DisclosurePermitted] && f.until.is_some()))));
    assert!(
        events().any(|e| matches!(e,
        Event::AuditQueried(q) if q.login.is_none()
            && matches!(&q.access, Access::Answered(AuditQuery::Entries(f, Scope::Org(org)))
                if org == "910000101" && f.orgnr.as_deref() == Some("910000071") && f.limit == 5)))
    );
    assert!(events().any(|e| matches!(e,
        Event::AuditQueried(q) if q.access == Access::Refused("permission_denied".into()))));
    assert!(events().any(|e| matches!(e,
        Event::SubjectReportIssued(r) if r.login == login && r.access == Access::Answered(Scope::All))));
    assert!(events().any(|e| matches!(e,
        Event::SubjectReportIssued(r) if r.access == Access::Refused("permission_denied".into()))));

    // Consent reads of each form.
    let reads: Vec<&ConsentRead> = events()
        .filter_map(|e| match e {
            Event::ConsentsRead(r) => Some(&r.read),
            _ => None,
        })
        .collect();
    assert!(reads.iter().any(|r| matches!(r, ConsentRead::Get(_))));
    assert!(reads.iter().any(|r| matches!(r,
        ConsentRead::GetRefused { consent_id, reason }
            if consent_id == "0190f0a0-0000-7000-8000-000000000000" && reason == "not_visible")));
    assert!(
        reads
            .iter()
            .any(|r| matches!(r, ConsentRead::List { shown: 1 }))
    );
    assert!(reads.iter().any(|r| matches!(r,
        ConsentRead::ListRefused(reason) if reason == "not_permitted")));
}

#[test]
fn the_log_verifies_and_proves_every_entry() {
    let report = verify::verify(&fixture(), &verifier(), None).expect("the fixture verifies");
    let records = records();
    assert_eq!(report.entries, records.len() as u64);
    assert_eq!(report.checkpoint.size, records.len() as u64);
    assert_eq!((report.uncovered, report.torn_tail_bytes), (0, 0));

    let leaves: Vec<Hash> = records.iter().map(|b| merkle::leaf_hash(b)).collect();
    let size = leaves.len() as u64;
    assert_eq!(mth(&leaves), report.checkpoint.root);
    let node = |level: u32, index: u64| {
        let (start, end) = (index << level, (index + 1) << level);
        Ok::<_, ()>(mth(&leaves[start as usize..end as usize]))
    };
    for (index, leaf) in leaves.iter().enumerate() {
        let proof = merkle::inclusion_proof(index as u64, size, node)
            .expect("nodes")
            .expect("in range");
        merkle::verify_inclusion(leaf, index as u64, size, &proof, &report.checkpoint.root)
            .unwrap_or_else(|e| panic!("entry {index}: {e:?}"));
    }
}
