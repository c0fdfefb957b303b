//! Three gateways on one PostgreSQL database, over gRPC (DESIGN §7): notes disclosed on one
//! replica reach inbox streams on the others, one audit log that verifies offline, a
//! withdrawal that purges what other replicas have in flight, a replica SIGKILLed under load
//! and the database restarted mid-test — each with LISTEN/NOTIFY, with polling only, and with
//! every transaction SERIALIZABLE. The machine's PostgreSQL server binaries are required
//! (`.ci/run` installs them; with `CI=true` their absence fails the tests).

use std::{collections::HashSet, time::Duration};

use base64::Engine;
use casegate_proto::v1::{
    DisclosureReceipt, ExportEntriesRequest, GetCheckpointRequest, WithdrawConsentRequest,
    stream_inbox_response::Event,
};
use casegate_tests::{
    replicas::{Mode, Replicas},
    scenario::{
        backlog, eventually, ips_consent, ips_scenario_at, next_event, reason, subject, update,
    },
};
use tokio_stream::StreamExt;

const CHILD: &str = env!("CARGO_BIN_EXE_gateway_child");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_inboxes_one_log_and_withdrawals_with_listen() {
    across_replicas(Mode::Listen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_inboxes_one_log_and_withdrawals_polling_only() {
    across_replicas(Mode::Poll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_inboxes_one_log_and_withdrawals_under_serializable_isolation() {
    across_replicas(Mode::Serializable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_and_a_restarted_database_lose_nothing_acknowledged_with_listen() {
    kill_and_restart(Mode::Listen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_and_a_restarted_database_lose_nothing_polling_only() {
    kill_and_restart(Mode::Poll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_and_a_restarted_database_lose_nothing_under_serializable_isolation() {
    kill_and_restart(Mode::Serializable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ips_scenario_passes_with_each_step_on_another_replica() {
    let Some(mut r) = Replicas::start(3, Mode::Listen, CHILD) else {
        return;
    };
    let me = subject(7);
    let outcome = ips_scenario_at(&r.gw, &me, &r.addrs()).await;
    let log = export_and_verify(&r, 2).await;
    for receipt in [&outcome.first, &outcome.summary, &outcome.purged] {
        assert_in_log(&log, receipt);
    }
    audit_queries_answer_what_the_log_holds(&r, &me).await;

    // Entries logged before the query columns existed (schema version 3) are answered the
    // same before and after the next replica to start fills their columns.
    let sql = r.sql().await;
    sql.batch_execute(
        "UPDATE casegate_audit_entry SET kind = NULL, subject = NULL;
         DELETE FROM casegate_audit_org;",
    )
    .await
    .expect("columns emptied");
    // Not filled yet: such entries are candidates for every filter, so answers stay whole.
    audit_queries_answer_what_the_log_holds(&r, &me).await;
    r.restart(0);
    let unfilled: i64 = sql
        .query_one(
            "SELECT count(*) FROM casegate_audit_entry WHERE kind IS NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(unfilled, 0);
    audit_queries_answer_what_the_log_holds(&r, &me).await;
}

/// Audit queries and a subject access report on the replicas (selected by the log's SQL
/// indexes) answer exactly the entries of the exported log that their filters match.
async fn audit_queries_answer_what_the_log_holds(r: &Replicas, me: &casegate_consent::SubjectId) {
    use casegate_audit::entry::{Entry, EntryKind};
    use casegate_proto::v1::{QueryAuditRequest, SubjectAccessReportRequest};
    let key = std::fs::read_to_string(
        r.gw.config_path()
            .parent()
            .expect("folder")
            .join("pseudonym.key"),
    )
    .expect("pseudonym key");
    let mine = casegate::pseudonym::Pseudonymizer::from_text(&key)
        .expect("key")
        .pseudonym(me);
    let query = |at: usize, org: &'static str, request: QueryAuditRequest| async move {
        let mut officer = r.caller(at, org, "privacy_officer").await;
        officer
            .audit
            .query_audit(request)
            .await
            .expect("query")
            .into_inner()
            .map(|found| found.expect("entry").entry.expect("entry").index)
            .collect::<Vec<u64>>()
            .await
    };
    // A supervisory officer's query about the jobseeker, on replica 1. Its own entry (about
    // the jobseeker too) is the last it answers.
    let about_me = query(
        0,
        "authority",
        QueryAuditRequest {
            subject_id: me.expose(),
            limit: 10_000,
            ..Default::default()
        },
    )
    .await;
    // NAV's officer's refusals, on replica 2: only what NAV may see.
    let refused = query(
        1,
        "nav",
        QueryAuditRequest {
            kinds: vec![i32::from(EntryKind::DisclosureRefused.code())],
            limit: 10_000,
            ..Default::default()
        },
    )
    .await;
    // The jobseeker's own report, on replica 3.
    let report =
        r.gw.jobseeker_at(r.addr(2), me)
            .await
            .audit
            .subject_access_report(SubjectAccessReportRequest {
                subject_id: me.expose(),
            })
            .await
            .expect("report")
            .into_inner();

    let mut officer = r.caller(2, "authority", "privacy_officer").await;
    let entries: Vec<(u64, Entry)> = officer
        .audit
        .export_entries(ExportEntriesRequest::default())
        .await
        .expect("export")
        .into_inner()
        .map(|item| {
            let item = item.expect("entry");
            (item.index, Entry::decode(&item.entry).expect("decodes"))
        })
        .collect()
        .await;
    let upto = |end: u64, keep: &dyn Fn(&Entry) -> bool| -> Vec<u64> {
        entries
            .iter()
            .filter(|(i, e)| *i < end && keep(e))
            .map(|(i, _)| *i)
            .collect()
    };
    let end = about_me.last().expect("its own entry") + 1;
    let want = upto(end, &|e| e.subject_pseudonym() == Some(mine));
    assert!(
        want.len() >= 10,
        "the scenario's entries about the jobseeker: {want:?}"
    );
    assert_eq!(about_me, want);
    let nav = r.gw.org("nav").orgnr.clone();
    let want = upto(u64::MAX, &|e| {
        e.kind() == EntryKind::DisclosureRefused && casegate_audit::index::visible_to(e, &nav)
    });
    assert!(!want.is_empty());
    assert_eq!(refused, want);
    let size = report.checkpoint.as_ref().expect("checkpoint").tree_size;
    let reported: Vec<u64> = report
        .events
        .iter()
        .map(|e| e.entry.as_ref().expect("entry").index)
        .collect();
    assert_eq!(
        reported,
        upto(size, &|e| e.subject_pseudonym() == Some(mine))
    );
    eprintln!(
        "queries on the replicas: {} entries about the jobseeker, {} refusals NAV sees, a \
         report of {} events",
        about_me.len(),
        refused.len(),
        reported.len()
    );
}

/// Grants the IPS consent about `n`'s subject on replica `at`; returns its id.
async fn consent(r: &Replicas, at: usize, n: usize) -> String {
    let me = subject(n);
    r.gw.jobseeker_at(r.addr(at), &me)
        .await
        .consent
        .grant_consent(ips_consent(&r.gw, &me))
        .await
        .expect("grant")
        .into_inner()
        .consent
        .expect("record")
        .consent_id
}

/// The whole log as exported from replica `at` to a supervisory officer, checked offline as
/// `casegate audit verify --export` checks it (every entry re-hashed to the signed root);
/// returns the leaf hashes by index.
async fn export_and_verify(r: &Replicas, at: usize) -> Vec<Vec<u8>> {
    let mut officer = r.caller(at, "authority", "privacy_officer").await;
    let checkpoint = officer
        .audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint
        .expect("checkpoint");
    let items: Vec<_> = officer
        .audit
        .export_entries(ExportEntriesRequest {
            start_index: 0,
            end_index: checkpoint.tree_size,
        })
        .await
        .expect("export")
        .into_inner()
        .map(|item| item.expect("entry"))
        .collect()
        .await;
    let indexes: Vec<u64> = items.iter().map(|i| i.index).collect();
    assert_eq!(
        indexes,
        (0..checkpoint.tree_size).collect::<Vec<_>>(),
        "one log, indexes contiguous"
    );
    let mut text = format!("{}\n", casegate_audit::verify::EXPORT_HEADER);
    for item in &items {
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(&item.entry));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&checkpoint.signed_note);
    let report = casegate_audit::verify::verify_export(
        &text,
        std::slice::from_ref(&r.gw.audit_verifier),
        None,
    )
    .expect("the exported log verifies offline");
    assert_eq!(report.entries, checkpoint.tree_size);
    items.into_iter().map(|i| i.leaf_hash).collect()
}

/// `receipt`'s entry is in `log` at its index, with its leaf hash.
fn assert_in_log(log: &[Vec<u8>], receipt: &DisclosureReceipt) {
    let audit = receipt.audit.as_ref().expect("audit receipt");
    let index = usize::try_from(audit.audit_index).expect("index");
    assert_eq!(
        log.get(index),
        Some(&audit.leaf_hash),
        "entry {index} in the log"
    );
}

async fn across_replicas(mode: Mode) {
    let Some(r) = Replicas::start(3, mode, CHILD) else {
        return;
    };
    let gw = &r.gw;
    let me = subject(1);
    consent(&r, 2, 1).await;

    // Disclosed on A, live on B's open stream (in Listen mode only a notification is in
    // time: the safety poll is 60 s).
    let mut ips_b = r.caller(1, "ips", "employment_specialist").await;
    let mut stream = ips_b.inbox().await;
    assert!(backlog(&mut stream).await.is_empty());
    let mut nav_a = r.caller(0, "nav", "nav_counsellor").await;
    let first = nav_a
        .disclose_permitted(update(gw, &me, "r-1", "first note"))
        .await;
    gw.verify_receipt(first.audit.as_ref().expect("audit"));
    let Event::Note(live) = next_event(&mut stream).await else {
        panic!("a note")
    };
    assert_eq!(live.disclosure_id, first.disclosure_id);
    assert_eq!(live.body, b"first note");
    drop(stream);

    // The same request id on C: the same receipt.
    let mut nav_c = r.caller(2, "nav", "nav_counsellor").await;
    let again = nav_c
        .disclose_permitted(update(gw, &me, "r-1", "first note"))
        .await;
    assert_eq!(again.disclosure_id, first.disclosure_id);
    let (a, b) = (
        again.audit.expect("audit"),
        first.audit.clone().expect("audit"),
    );
    assert_eq!((a.audit_index, a.leaf_hash), (b.audit_index, b.leaf_hash));
    let status = nav_c
        .disclosure
        .disclose(update(gw, &me, "r-1", "another body"))
        .await
        .expect_err("a different disclosure");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);

    // Disclosed on A with no stream open; C's stream has it in its backlog.
    let second = nav_a
        .disclose_permitted(update(gw, &me, "r-2", "second note"))
        .await;
    let mut ips_c = r.caller(2, "ips", "employment_specialist").await;
    let mut stream = ips_c.inbox().await;
    let waiting: Vec<String> = backlog(&mut stream)
        .await
        .into_iter()
        .map(|n| n.disclosure_id)
        .collect();
    assert!(waiting.contains(&second.disclosure_id), "{waiting:?}");
    drop(stream);

    // Three replicas sequencing at once: 3 × 20 disclosures, every receipt verifies against
    // the one log.
    for n in 2..5 {
        consent(&r, n % 3, n).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for replica in 0..3 {
        let mut nav = r.caller(replica, "nav", "nav_counsellor").await;
        let gw_requests: Vec<_> = (0..20)
            .map(|i| {
                update(
                    gw,
                    &subject(2 + replica),
                    &format!("c-{replica}-{i}"),
                    "concurrent",
                )
            })
            .collect();
        tasks.spawn(async move {
            let mut receipts = Vec::new();
            for request in gw_requests {
                receipts.push(nav.disclose_permitted(request).await);
            }
            receipts
        });
    }
    let receipts: Vec<DisclosureReceipt> = tasks.join_all().await.into_iter().flatten().collect();
    let indexes: HashSet<u64> = receipts
        .iter()
        .map(|r| r.audit.as_ref().expect("audit").audit_index)
        .collect();
    assert_eq!(indexes.len(), 60, "each entry its own index");
    for receipt in &receipts {
        gw.verify_receipt(receipt.audit.as_ref().expect("audit"));
    }
    let log = export_and_verify(&r, 1).await;
    for receipt in receipts.iter().chain([&first, &second]) {
        assert_in_log(&log, receipt);
    }

    // A withdrawal on C while A and B disclose about the same subject: every note permitted
    // before it is purged in its transaction, none is delivered, the rest are refused.
    let withdrawn_subject = subject(5);
    let consent_id = consent(&r, 0, 5).await;
    let mut racing = tokio::task::JoinSet::new();
    for replica in 0..2 {
        let mut nav = r.caller(replica, "nav", "nav_counsellor").await;
        let requests: Vec<_> = (0..1000)
            .map(|i| {
                update(
                    gw,
                    &withdrawn_subject,
                    &format!("w-{replica}-{i}"),
                    "in flight",
                )
            })
            .collect();
        // Disclosing until the withdrawal bites: permitted before it, refused after.
        racing.spawn(async move {
            let mut permitted = Vec::new();
            for request in requests {
                match nav.disclosure.disclose(request).await {
                    Ok(response) => permitted.push(response.into_inner().receipt.expect("receipt")),
                    Err(status) => {
                        assert_eq!(reason(&status), "consent_withdrawn");
                        return (permitted, true);
                    }
                }
            }
            (permitted, false)
        });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let withdrawn =
        r.gw.jobseeker_at(r.addr(2), &withdrawn_subject)
            .await
            .consent
            .withdraw_consent(WithdrawConsentRequest {
                consent_id,
                ..Default::default()
            })
            .await
            .expect("withdraw")
            .into_inner();
    let raced = racing.join_all().await;
    assert!(
        raced.iter().all(|(_, refused)| *refused),
        "each replica's disclosures ran into the withdrawal"
    );
    let permitted: Vec<DisclosureReceipt> = raced.into_iter().flat_map(|(p, _)| p).collect();
    assert!(
        !permitted.is_empty(),
        "some permitted before the withdrawal"
    );
    assert_eq!(
        withdrawn.purged_notes as usize,
        permitted.len(),
        "every note permitted before the withdrawal purged with it"
    );
    let purged: HashSet<String> = permitted.iter().map(|p| p.disclosure_id.clone()).collect();
    for replica in 0..3 {
        let mut ips = r.caller(replica, "ips", "employment_specialist").await;
        let mut stream = ips.inbox().await;
        let inbox = backlog(&mut stream).await;
        assert!(
            inbox.iter().all(|n| !purged.contains(&n.disclosure_id)),
            "a purged note was delivered on replica {replica}"
        );
    }
    let sql = r.sql().await;
    let retried = r.conflicts_retried().await;
    eprintln!(
        "{mode:?}: {} racing disclosures permitted and purged with the withdrawal, then \
         refused; {retried} transactions tried again after losing a conflict",
        permitted.len()
    );
    if mode == Mode::Serializable {
        assert!(
            retried > 0,
            "SERIALIZABLE: conflicts were lost and tried again"
        );
    }
    let ids: Vec<uuid::Uuid> = purged.iter().map(|id| id.parse().expect("uuid")).collect();
    let left: i64 = sql
        .query_one(
            "SELECT count(*) FROM casegate_note WHERE id = ANY($1) AND (state <> 3 OR delivered)",
            &[&ids],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "purged, never delivered");
}

async fn kill_and_restart(mode: Mode) {
    let Some(mut r) = Replicas::start(3, mode, CHILD) else {
        return;
    };
    let me = subject(1);
    consent(&r, 0, 1).await;

    // Load on A; A is SIGKILLed while its calls are in flight.
    let mut loaders = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut nav = r.caller(0, "nav", "nav_counsellor").await;
        let gw_requests: Vec<_> = (0..200)
            .map(|i| update(&r.gw, &me, &format!("k-{worker}-{i}"), "under load"))
            .collect();
        loaders.spawn(async move {
            let mut acknowledged = Vec::new();
            for request in gw_requests {
                match nav.disclosure.disclose(request).await {
                    Ok(response) => {
                        acknowledged.push(response.into_inner().receipt.expect("receipt"))
                    }
                    Err(_) => break,
                }
            }
            acknowledged
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    r.kill(0);
    let acknowledged: Vec<DisclosureReceipt> =
        loaders.join_all().await.into_iter().flatten().collect();
    assert!(
        !acknowledged.is_empty(),
        "A answered some calls before it was killed"
    );

    // The others go on.
    let mut nav_b = r.caller(1, "nav", "nav_counsellor").await;
    let after_kill = nav_b
        .disclose_permitted(update(&r.gw, &me, "after-kill", "B goes on"))
        .await;
    r.gw.verify_receipt(after_kill.audit.as_ref().expect("audit"));

    // Nothing acknowledged is lost; entries A queued and never sequenced are sequenced by
    // the others; no note is deliverable without its entry in the log.
    let sql = r.sql().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let queued: i64 = sql
                .query_one("SELECT count(*) FROM casegate_audit_outbox", &[])
                .await
                .expect("count")
                .get(0);
            queued == 0
        })
        .await,
        "the outbox drained"
    );
    let orphans: i64 = sql
        .query_one(
            "SELECT count(*) FROM casegate_note n WHERE n.state <> 0
             AND NOT EXISTS (SELECT 1 FROM casegate_audit_entry e WHERE e.note_id = n.id)",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(orphans, 0, "no note deliverable without its entry");
    let committed: i64 = sql
        .query_one(
            "SELECT count(*) FROM casegate_note WHERE request_id LIKE 'k-%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    eprintln!(
        "{mode:?}: {committed} disclosures committed under load, {} of them answered before the \
         SIGKILL",
        acknowledged.len()
    );
    let pending: i64 = sql
        .query_one("SELECT count(*) FROM casegate_note WHERE state = 0", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(pending, 0, "every committed note's entry was sequenced");
    let log = export_and_verify(&r, 2).await;
    for receipt in acknowledged.iter().chain([&after_kill]) {
        assert_in_log(&log, receipt);
    }
    let mut ips = r.caller(2, "ips", "employment_specialist").await;
    let mut stream = ips.inbox().await;
    let inbox: HashSet<String> = backlog(&mut stream)
        .await
        .into_iter()
        .map(|n| n.disclosure_id)
        .collect();
    drop(stream);
    for receipt in &acknowledged {
        assert!(
            inbox.contains(&receipt.disclosure_id),
            "acknowledged note in the inbox"
        );
    }

    // The database restarts under an open stream on C: B's pool reconnects, C's listener
    // subscribes again and catches up by its cursor.
    let mut stream = ips.inbox().await;
    backlog(&mut stream).await;
    assert_eq!(r.readiness(1).await, 200);
    r.stop_database();
    // Readiness follows the database: not ready while it is down, ready again after.
    assert!(
        eventually(Duration::from_secs(10), || async {
            r.readiness(1).await == 503
        })
        .await,
        "/readyz answers 503 while the database is down"
    );
    r.start_database();
    assert!(
        eventually(Duration::from_secs(20), || async {
            r.readiness(1).await == 200
        })
        .await,
        "/readyz answers 200 once the database is back"
    );
    let mut delivered_after_restart = None;
    for attempt in 0..100 {
        match nav_b
            .disclosure
            .disclose(update(
                &r.gw,
                &me,
                "after-restart",
                "the database came back",
            ))
            .await
        {
            Ok(response) => {
                delivered_after_restart = response.into_inner().receipt;
                break;
            }
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Internal
                    ),
                    "attempt {attempt}: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let after_restart = delivered_after_restart.expect("B serves again after the restart");
    let Event::Note(live) = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match next_event(&mut stream).await {
                Event::Note(n) if n.disclosure_id == after_restart.disclosure_id => {
                    return Event::Note(n);
                }
                _ => {}
            }
        }
    })
    .await
    .expect("C's stream receives the note disclosed after the restart") else {
        unreachable!()
    };
    assert_eq!(live.body, b"the database came back");
    // The next one arrives live too: C listens again (with a 60 s safety poll, only a
    // notification is in time in Listen mode).
    let next = nav_b
        .disclose_permitted(update(&r.gw, &me, "after-restart-2", "listening again"))
        .await;
    let Event::Note(live) = next_event(&mut stream).await else {
        panic!("a note")
    };
    assert_eq!(live.disclosure_id, next.disclosure_id);

    // A comes back and serves from the same log.
    r.restart(0);
    let mut nav_a = r.caller(0, "nav", "nav_counsellor").await;
    let back = nav_a
        .disclose_permitted(update(&r.gw, &me, "a-is-back", "A again"))
        .await;
    let log = export_and_verify(&r, 0).await;
    for receipt in [&after_restart, &back] {
        assert_in_log(&log, receipt);
    }
}
