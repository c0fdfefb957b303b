//! Privacy officers and jobseekers: audit queries and subject access reports after the IPS
//! scenario — what each may see, proofs that verify offline, no note content, and every query
//! and report (and every refused one) in the log.

use casegate_audit::entry::{self, Access, AuditQuery, Entry, EntryKind, Event};
use casegate_proto::v1::{
    AuditEntry, AuditReceipt, QueryAuditRequest, SubjectAccessReportRequest,
    SubjectAccessReportResponse,
};
use casegate_tests::{
    Caller, TestGateway,
    scenario::{CONTENT, grant_ips_consent, ips_scenario, subject},
};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;

async fn query(
    caller: &mut Caller,
    request: QueryAuditRequest,
) -> Result<Vec<AuditEntry>, tonic::Status> {
    let mut stream = caller.audit.query_audit(request).await?.into_inner();
    let mut entries = Vec::new();
    while let Some(item) = stream.next().await {
        entries.push(item?.entry.expect("entry"));
    }
    Ok(entries)
}

fn indexes(entries: &[AuditEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

async fn report(
    caller: &mut Caller,
    subject: &casegate_consent::SubjectId,
) -> Result<SubjectAccessReportResponse, tonic::Status> {
    caller
        .audit
        .subject_access_report(SubjectAccessReportRequest {
            subject_id: subject.expose(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Checks that every event of `report` is its canonical bytes, and that the bytes' inclusion
/// proof verifies against the report's checkpoint, signed by the gateway's key.
fn verify_report(gw: &TestGateway, report: &SubjectAccessReportResponse) {
    assert_eq!(report.verifier_key, gw.audit_verifier.to_vkey());
    for event in &report.events {
        let entry = event.entry.as_ref().expect("entry");
        let leaf = casegate_audit::merkle::leaf_hash(&event.entry_bytes);
        assert_eq!(entry.leaf_hash, leaf.to_vec(), "entry {}", entry.index);
        let decoded = Entry::decode(&event.entry_bytes).expect("canonical bytes");
        assert_eq!(i32::from(decoded.kind().code()), entry.kind);
        gw.verify_receipt(&AuditReceipt {
            audit_index: entry.index,
            leaf_hash: leaf.to_vec(),
            checkpoint: report.checkpoint.clone(),
            inclusion_proof: event.inclusion_proof.clone(),
        });
    }
}

#[tokio::test]
async fn after_the_ips_scenario_each_sees_exactly_what_they_may_and_every_look_is_logged() {
    let gw = TestGateway::start().await;
    let me = subject(20);
    let someone_else = subject(21);
    ips_scenario(&gw, &me).await;
    // Someone else's consent: in the log, never in this jobseeker's report.
    grant_ips_consent(&gw, &someone_else).await;

    // The jobseeker's own report: every step, in order, each provable against its checkpoint.
    let mine = report(&mut gw.jobseeker(&me).await, &me)
        .await
        .expect("own report");
    verify_report(&gw, &mine);
    let kinds: Vec<EntryKind> = mine
        .events
        .iter()
        .map(|e| {
            EntryKind::from_code(u8::try_from(e.entry.as_ref().expect("entry").kind).expect("kind"))
                .expect("kind")
        })
        .collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        [
            DisclosureRefused,   // no consent yet
            ConsentGranted,      // in the portal
            DisclosurePermitted, // NAV's update
            NoteDelivered,       // to the IPS team
            NoteAcknowledged,
            DisclosureRefused,   // the summary without approval
            DisclosurePermitted, // the approved summary
            NoteDelivered,       // live
            DisclosurePermitted, // the note that will wait
            ConsentWithdrawn,
            NotePurged,          // the waiting note
            NotePurged,          // the unacknowledged summary, withheld when streamed again
            DisclosureRefused,   // after the withdrawal
            SubjectReportIssued, // this report
        ]
    );
    let reasons: Vec<&str> = mine
        .events
        .iter()
        .map(|e| e.entry.as_ref().expect("entry").reason.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    assert_eq!(
        reasons,
        [
            "no_consent",
            "approval_missing",
            "consent_withdrawn",
            "consent_withdrawn",
            "consent_withdrawn"
        ]
    );
    let names: Vec<&str> = mine
        .events
        .iter()
        .map(|e| e.recipient_name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    assert!(names.iter().all(|n| *n == "Test ips"), "{names:?}");
    assert!(!names.is_empty());
    // Complete: every entry about this subject in the whole log is in the report.
    let pseudonym = Entry::decode(&mine.events[0].entry_bytes)
        .expect("entry")
        .subject_pseudonym();
    let all = gw.audit_entries().await;
    let about_me: Vec<u64> = all
        .iter()
        .enumerate()
        .filter(|(i, (_, e))| {
            e.subject_pseudonym() == pseudonym
                && (*i as u64) < mine.checkpoint.as_ref().expect("checkpoint").tree_size
        })
        .map(|(i, _)| i as u64)
        .collect();
    let in_report: Vec<u64> = mine
        .events
        .iter()
        .map(|e| e.entry.as_ref().expect("entry").index)
        .collect();
    assert_eq!(in_report, about_me);
    assert_eq!(mine.consents.len(), 1, "one consent, withdrawn");
    assert!(mine.consents[0].withdrawal.is_some());
    // No note content anywhere in the report.
    let bytes = mine.encode_to_vec();
    for text in CONTENT {
        assert!(
            !bytes.windows(text.len()).any(|w| w == text.as_bytes()),
            "note content in the report"
        );
    }

    // A privacy officer of an unrelated organisation sees none of it; a supervisory one all.
    let subject_filter = || QueryAuditRequest {
        subject_id: me.expose(),
        ..Default::default()
    };
    let mut unrelated = gw.caller("privacy", "privacy_officer").await;
    let seen = query(&mut unrelated, subject_filter())
        .await
        .expect("query");
    let their_report = report(&mut unrelated, &me).await.expect("officer report");
    // They see their own looking, nothing of the scenario.
    let privacy_org = gw.org("privacy").orgnr.clone();
    let only_own = |entries: Vec<&AuditEntry>| {
        entries.iter().all(|e| {
            e.actor.as_ref().is_some_and(|a| a.orgnr == privacy_org)
                && [
                    i32::from(AuditQueried.code()),
                    i32::from(SubjectReportIssued.code()),
                ]
                .contains(&e.kind)
        })
    };
    assert_eq!(
        seen.len(),
        1,
        "an unrelated officer saw {} entries",
        seen.len()
    );
    assert!(only_own(seen.iter().collect()));
    assert!(their_report.consents.is_empty());
    assert_eq!(their_report.events.len(), 2, "their query and this report");
    assert!(only_own(
        their_report
            .events
            .iter()
            .filter_map(|e| e.entry.as_ref())
            .collect()
    ));
    let mut supervisor = gw.caller("authority", "privacy_officer").await;
    let seen = query(&mut supervisor, subject_filter())
        .await
        .expect("query");
    let seen = indexes(&seen);
    assert!(
        in_report.iter().all(|i| seen.contains(i)),
        "the supervisory officer misses entries"
    );
    let kinds_seen: Vec<EntryKind> = seen
        .iter()
        .map(|i| all.get(*i as usize).map_or(AuditQueried, |(_, e)| e.kind()))
        .collect();
    // The report, the unrelated officer's query and report, and the supervisor's own query.
    assert_eq!(seen.len(), in_report.len() + 3, "{kinds_seen:?}");
    // Once the background indexer (every second) has taken the entries in, the index answers
    // the same as the log's newest entries did.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let again = indexes(
        &query(&mut supervisor, subject_filter())
            .await
            .expect("query"),
    );
    assert_eq!(again[..seen.len()], seen[..]);
    assert_eq!(
        again.len(),
        seen.len() + 1,
        "and the previous query's own entry"
    );
    // Filters narrow: refusals only, then a time window before the scenario.
    let refused = query(
        &mut supervisor,
        QueryAuditRequest {
            kinds: vec![EntryKind::DisclosureRefused.code().into()],
            ..subject_filter()
        },
    )
    .await
    .expect("query");
    assert_eq!(refused.len(), 3);
    let before = query(
        &mut supervisor,
        QueryAuditRequest {
            until: Some(prost_types::Timestamp {
                seconds: 1_000_000_000,
                nanos: 0,
            }),
            ..subject_filter()
        },
    )
    .await
    .expect("query");
    assert!(before.is_empty());
    // Resumable: from an index, at most `limit`.
    let page = query(
        &mut supervisor,
        QueryAuditRequest {
            start_index: seen[3],
            limit: 2,
            ..subject_filter()
        },
    )
    .await
    .expect("query");
    assert_eq!(indexes(&page), seen[3..5]);

    // Both officers' queries are in the log as `audit queried`, with the filter, not results.
    let logged: Vec<Entry> = gw
        .audit_entries()
        .await
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.kind() == AuditQueried)
        .collect();
    for org in ["privacy", "authority"] {
        let orgnr = &gw.org(org).orgnr;
        assert!(
            logged
                .iter()
                .any(|e| e.actor().is_some_and(|a| &a.orgnr == orgnr)
                    && e.subject_pseudonym() == pseudonym
                    && matches!(
                        &e.event,
                        Event::AuditQueried(entry::AuditQueried {
                            access: Access::Answered(AuditQuery::Entries(filter, _)),
                            ..
                        }) if filter.subject
                    )),
            "{org}'s query is not in the log"
        );
    }
    assert!(
        logged
            .iter()
            .all(|e| !e.detail_text().unwrap_or_default().contains(&me.expose())),
        "an identity number in an audit entry"
    );
}

#[tokio::test]
async fn only_privacy_officers_query_and_only_the_subject_or_an_officer_gets_a_report() {
    let gw = TestGateway::start().await;
    let me = subject(22);
    let other = subject(23);
    for (org, role) in [
        ("clinic", "clinician"),
        ("nav", "nav_counsellor"),
        ("ips", "employment_specialist"),
    ] {
        let mut caller = gw.caller(org, role).await;
        let status = query(&mut caller, QueryAuditRequest::default())
            .await
            .expect_err("not an officer");
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
        let status = report(&mut caller, &me).await.expect_err("not an officer");
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
    }
    let status = report(&mut gw.jobseeker(&me).await, &other)
        .await
        .expect_err("someone else's report");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("only their own"));

    // Bad input: named, and nothing recorded for it.
    let mut officer = gw.caller("privacy", "privacy_officer").await;
    let before = gw.audit_entries().await.len();
    let bad = [
        (
            QueryAuditRequest {
                subject_id: "12345678901".into(),
                ..Default::default()
            },
            "subject_id",
        ),
        (
            QueryAuditRequest {
                orgnr: "123".into(),
                ..Default::default()
            },
            "orgnr",
        ),
        (
            QueryAuditRequest {
                kinds: vec![0],
                ..Default::default()
            },
            "kinds[0]",
        ),
        (
            QueryAuditRequest {
                kinds: vec![99],
                ..Default::default()
            },
            "kinds[0]",
        ),
        (
            QueryAuditRequest {
                limit: 1_000_000,
                ..Default::default()
            },
            "limit",
        ),
        (
            QueryAuditRequest {
                from: Some(prost_types::Timestamp {
                    seconds: 2_000_000_000,
                    nanos: 0,
                }),
                until: Some(prost_types::Timestamp {
                    seconds: 1_000_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "until",
        ),
    ];
    for (request, field) in bad {
        let status = query(&mut officer, request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    report(&mut officer, &me)
        .await
        .expect("an officer's report");
    let status = officer
        .audit
        .subject_access_report(SubjectAccessReportRequest {
            subject_id: "01010112345".into(),
        })
        .await
        .expect_err("invalid subject");
    assert_eq!(status.code(), Code::InvalidArgument);
    // The refused attempts were audited: 3 queries and 4 reports refused, then one report.
    let entries: Vec<Entry> = gw
        .audit_entries()
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let refused = entries
        .iter()
        .filter(|e| e.reason() == Some("permission_denied"))
        .count();
    assert_eq!(refused, 7);
    assert_eq!(
        entries.len(),
        before + 1,
        "only the officer's report was added"
    );
}

#[tokio::test]
async fn replay_reproduces_recorded_permits_and_refusals_and_notices_an_altered_consent() {
    use casegate::{
        cli::replay_verdict,
        replay::{read_export, replay},
    };

    let gw = TestGateway::start().await;
    let me = subject(24);
    let outcome = ips_scenario(&gw, &me).await;
    let mine = report(&mut gw.jobseeker(&me).await, &me)
        .await
        .expect("report");
    // The export as `casegate audit report --format json` writes it.
    let versions: Vec<serde_json::Value> = mine
        .consent_versions
        .iter()
        .map(|b| serde_json::from_slice(b).expect("canonical JSON"))
        .collect();
    let export =
        serde_json::to_vec(&serde_json::json!({ "consent_versions": versions })).expect("JSON");
    let log = gw.data_dir().join("audit");
    let vocabulary = casegate_consent::Vocabulary::default();
    let index_of = |kind: EntryKind, reason: &str| -> Vec<u64> {
        mine.events
            .iter()
            .filter_map(|e| e.entry.as_ref())
            .filter(|e| e.kind == i32::from(kind.code()) && e.reason == reason)
            .map(|e| e.index)
            .collect()
    };
    let permits = index_of(EntryKind::DisclosurePermitted, "");
    assert_eq!(permits.len(), 3);
    assert_eq!(
        permits[0],
        outcome.first.audit.as_ref().expect("receipt").audit_index
    );
    let refusals = [
        index_of(EntryKind::DisclosureRefused, "no_consent"),
        index_of(EntryKind::DisclosureRefused, "approval_missing"),
        index_of(EntryKind::DisclosureRefused, "consent_withdrawn"),
    ]
    .concat();
    assert_eq!(refusals.len(), 3);
    let records = read_export(&export).expect("export");
    for index in permits.iter().chain(&refusals) {
        let (line, ok) = replay_verdict(&replay(&log, &records, *index, &vocabulary));
        assert!(ok, "{line}");
        assert!(
            line.starts_with(&format!("REPRODUCED: entry {index} ")),
            "{line}"
        );
    }
    let (line, _) = replay_verdict(&replay(&log, &records, permits[0], &vocabulary));
    assert!(line.contains(&outcome.consent_id), "{line}");

    // The same consent with a purpose changed: the log's pinned hash gives it away, for a
    // permit and for a refusal alike.
    let altered = String::from_utf8(export.clone())
        .expect("text")
        .replace("ips_follow_up", "benefit_planning");
    let altered = read_export(altered.as_bytes()).expect("still a valid consent");
    for index in [permits[0], refusals[2]] {
        let (line, ok) = replay_verdict(&replay(&log, &altered, index, &vocabulary));
        assert!(!ok);
        assert!(
            line.starts_with("FAILED: the exported consent") && line.contains("was altered"),
            "{line}"
        );
    }
    // A consent missing from the export, and an entry that is not a decision, are named.
    let (line, ok) = replay_verdict(&replay(&log, &[], permits[0], &vocabulary));
    assert!(!ok && line.contains("is not in the export"), "{line}");
    let delivered = index_of(EntryKind::NoteDelivered, "")[0];
    let (line, ok) = replay_verdict(&replay(&log, &records, delivered, &vocabulary));
    assert!(!ok && line.contains("not a disclosure decision"), "{line}");
    // A decision replayed with a different outcome says so: the refusal without approval,
    // replayed against a vocabulary where the category needs none, would be a permit.
    let lenient = casegate_consent::Vocabulary::new(
        vocabulary.categories().map(|(category, rule)| {
            let mut rule = rule.clone();
            rule.approval_required = false;
            (category.clone(), rule)
        }),
        vocabulary.purposes().cloned(),
    )
    .expect("vocabulary");
    let (line, ok) = replay_verdict(&replay(&log, &records, refusals[1], &lenient));
    assert!(!ok && line.starts_with("NOT REPRODUCED"), "{line}");
}

#[tokio::test]
async fn a_report_too_large_for_one_answer_is_refused_naming_how_to_page() {
    use casegate_tests::scenario::update;

    let gw =
        TestGateway::start_with("[limits]\nmax_message_bytes = 131072\nmax_body_bytes = 4096\n")
            .await;
    let me = subject(25);
    // Refusals are cheap to make and each is an event in the report (about 1 KB with its
    // proof): 200 of them exceed 128 KiB.
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    for n in 0..200 {
        let status = nav
            .disclosure
            .disclose(update(&gw, &me, &format!("big-{n}"), "x"))
            .await
            .expect_err("no consent");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let status = report(&mut gw.jobseeker(&me).await, &me)
        .await
        .map(|r| r.events.len())
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("holds 201 events")
            && status.message().contains("131072 bytes")
            && status.message().contains("QueryAudit and start_index"),
        "{}",
        status.message()
    );
    // Paging through them with QueryAudit works.
    let mut officer = gw.caller("authority", "privacy_officer").await;
    let page = query(
        &mut officer,
        QueryAuditRequest {
            subject_id: me.expose(),
            limit: 50,
            ..Default::default()
        },
    )
    .await
    .expect("first page");
    assert_eq!(page.len(), 50);
    let rest = query(
        &mut officer,
        QueryAuditRequest {
            subject_id: me.expose(),
            start_index: page[49].index + 1,
            ..Default::default()
        },
    )
    .await
    .expect("the rest");
    // 200 refusals, the refused report's own entry, and both queries' own entries.
    assert_eq!(page.len() + rest.len(), 203);
}

/// `casegate::report::verify`, which `casegate audit report` prints from: a genuine report
/// verifies and shows what its bytes say; a report whose readable entries, consent states or
/// checkpoint fields are not what the verified bytes say is refused.
#[tokio::test]
async fn a_report_is_shown_only_as_its_verified_bytes_say() {
    use casegate::report::{ConsentFault, EventFault, ReportError, verify};
    use casegate_consent::record::ViewStatus;

    let gw = TestGateway::start().await;
    let me = subject(26);
    ips_scenario(&gw, &me).await;
    let mine = report(&mut gw.jobseeker(&me).await, &me)
        .await
        .expect("report");
    let keys = [gw.audit_verifier.clone()];
    let verified = verify(&mine, &me, &keys).expect("a genuine report verifies");
    assert_eq!(verified.events.len(), mine.events.len());
    for (shown, sent) in verified.events.iter().zip(&mine.events) {
        assert_eq!(Some(shown.view()), sent.entry);
    }
    assert_eq!(verified.issued.entry.kind(), EntryKind::SubjectReportIssued);
    let statuses: Vec<ViewStatus> = verified.consents.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [ViewStatus::Withdrawn]);
    assert!(verified.consents[0].withdrawn_at.is_some());

    let refused = |edit: &dyn Fn(&mut SubjectAccessReportResponse)| {
        let mut forged = mine.clone();
        edit(&mut forged);
        verify(&forged, &me, &keys).expect_err("a forged report is refused")
    };
    let position_of = |kind: EntryKind| {
        mine.events
            .iter()
            .position(|e| e.entry.as_ref().expect("entry").kind == i32::from(kind.code()))
            .expect("event")
    };

    // The bytes say disclosure_refused; the readable copy says permitted, to someone else.
    let refusal = position_of(EntryKind::DisclosureRefused);
    let e = refused(&|r| {
        let view = r.events[refusal].entry.as_mut().expect("entry");
        view.kind = i32::from(EntryKind::DisclosurePermitted.code());
        view.reason.clear();
        view.recipient_orgnr = "974760673".into();
    });
    assert!(
        matches!(
            e,
            ReportError::Event {
                fault: EventFault::ViewDiffers(_),
                ..
            }
        ),
        "{e}"
    );
    // Any one field of the copy, e.g. the detail.
    let e = refused(&|r| {
        let last = r.events.len() - 1;
        r.events[last].entry.as_mut().expect("entry").detail = "scope=none".into();
    });
    assert!(matches!(e, ReportError::Event { .. }), "{e}");
    // Bytes that are not the proven ones.
    let e = refused(&|r| r.events[refusal].entry_bytes.push(0));
    assert!(
        matches!(
            e,
            ReportError::Event {
                fault: EventFault::Inclusion { .. },
                ..
            }
        ),
        "{e}"
    );
    // The withdrawal left out: the consent's state can no longer be tied to an entry.
    let withdrawal = position_of(EntryKind::ConsentWithdrawn);
    let e = refused(&|r| {
        r.events.remove(withdrawal);
    });
    assert!(
        matches!(
            e,
            ReportError::Consent {
                fault: ConsentFault::Status { .. },
                ..
            }
        ),
        "{e}"
    );
    // Every event that pins the version's hash left out: its content is tied to nothing.
    let e = refused(&|r| {
        r.events.retain(|ev| {
            ev.entry
                .as_ref()
                .expect("entry")
                .consent_record_hash
                .is_empty()
        });
    });
    assert!(
        matches!(
            e,
            ReportError::Consent {
                fault: ConsentFault::NotPinned,
                ..
            }
        ),
        "{e}"
    );
    // A consent version's content that does not hash to the stated record hash.
    let e = refused(&|r| r.consent_versions[0].push(b' '));
    assert!(
        matches!(
            e,
            ReportError::Consent {
                fault: ConsentFault::Hash | ConsentFault::Content(_),
                ..
            }
        ),
        "{e}"
    );
    // Checkpoint fields that are not the signed note's.
    let e = refused(&|r| r.checkpoint.as_mut().expect("checkpoint").tree_size += 1);
    assert_eq!(e, ReportError::CheckpointFields);
    let e = refused(&|r| r.checkpoint.as_mut().expect("checkpoint").origin = "elsewhere".into());
    assert_eq!(e, ReportError::CheckpointFields);
    // Without its own entry there is no verified issue time.
    let issued = position_of(EntryKind::SubjectReportIssued);
    let e = refused(&|r| {
        r.events.remove(issued);
    });
    assert_eq!(e, ReportError::NoIssueEntry);
    // A report about someone else.
    let other = subject(27);
    assert_eq!(
        verify(&mine, &other, &keys).expect_err("another subject"),
        ReportError::Subject
    );
    // Another key does not verify it.
    let stranger = casegate_audit::checkpoint::Signer::generate("casegate.test/audit")
        .expect("key")
        .verifier();
    assert!(matches!(
        verify(&mine, &me, &[stranger]),
        Err(ReportError::Checkpoint(_))
    ));
}

/// Identity numbers valid only under the rules announced for 2032 (synthetic, month + 80) are
/// served end to end: granted about, carried in a jobseeker's token, reported on.
#[tokio::test]
async fn identity_numbers_valid_under_the_2032_rules_are_served() {
    let gw = TestGateway::start().await;
    // First check digit remainder 1, and an individual number that says no century.
    for number in ["15838510083", "15834060091"] {
        let me: casegate_consent::SubjectId = number.parse().expect("valid under 2032 rules");
        grant_ips_consent(&gw, &me).await;
        let mine = report(&mut gw.jobseeker(&me).await, &me)
            .await
            .expect("the jobseeker's own report");
        assert_eq!(mine.consent_versions.len(), 1);
        verify_report(&gw, &mine);
    }
}

/// An officer whose organisation is not supervisory gets a report scoped to it. Its consent
/// was withdrawn through the portal, an entry outside that scope: the verified report must not
/// show the consent as active; it either ties the withdrawal to a verified entry or is refused
/// naming the state it cannot tie.
#[tokio::test]
async fn a_scoped_report_proves_the_state_of_every_consent_it_holds() {
    use casegate::report::verify;
    use casegate_consent::record::ViewStatus;

    let gw = TestGateway::start().await;
    let me = subject(28);
    ips_scenario(&gw, &me).await;
    // The jobseeker withdrew through the portal; each party's officer still gets the
    // withdrawal entry, so the report verifies and shows the consent withdrawn.
    for org in ["clinic", "nav", "ips"] {
        let scoped = report(&mut gw.caller(org, "privacy_officer").await, &me)
            .await
            .expect("scoped report");
        assert_eq!(scoped.consents.len(), 1, "{org}");
        let verified = verify(&scoped, &me, std::slice::from_ref(&gw.audit_verifier))
            .unwrap_or_else(|e| panic!("{org}: {e}"));
        assert_eq!(verified.consents[0].status, ViewStatus::Withdrawn, "{org}");
    }
}

#[tokio::test]
async fn query_answers_carry_canonical_bytes_only_when_asked_and_they_hash_to_the_leaf() {
    let gw = TestGateway::start().await;
    let me = subject(7);
    grant_ips_consent(&gw, &me).await;
    let mut officer = gw.caller("authority", "privacy_officer").await;
    for include_entry_bytes in [false, true] {
        let mut stream = officer
            .audit
            .query_audit(QueryAuditRequest {
                kinds: vec![EntryKind::ConsentGranted.code().into()],
                include_entry_bytes,
                ..Default::default()
            })
            .await
            .expect("query")
            .into_inner();
        let answer = stream.next().await.expect("one answer").expect("ok");
        let entry = answer.entry.expect("entry");
        if include_entry_bytes {
            let leaf = casegate_audit::merkle::leaf_hash(&answer.entry_bytes);
            assert_eq!(leaf.to_vec(), entry.leaf_hash);
            let decoded = Entry::decode(&answer.entry_bytes).expect("canonical bytes");
            assert_eq!(decoded.kind(), EntryKind::ConsentGranted);
        } else {
            assert!(answer.entry_bytes.is_empty(), "bytes sent unasked");
        }
    }
    gw.stop().await;
}
