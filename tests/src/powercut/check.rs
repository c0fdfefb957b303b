//! The checks after a cut and a restart, against everything the [`Ledger`] says any client
//! was acknowledged in any round so far:
//!
//! - every acknowledged grant is there, active unless a withdrawal was sent for it;
//! - every acknowledged withdrawal holds: `CheckDisclosure` and `Disclose` under it refused;
//! - every receipt's entry is in the log at its index, with its leaf hash, kind and id;
//! - no fork: the newest checkpoint extends the previous check's and every checkpoint
//!   handed out since (consistency proofs from the audit service; consistency is transitive,
//!   so this covers every checkpoint of earlier rounds too); the exported log has that root;
//! - a note is delivered iff its `disclosure permitted` entry is in the log and no entry
//!   acknowledges or purges it or withdraws its consent; no acknowledged note comes again.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use casegate_audit::{
    entry::{Entry, EntryKind},
    merkle,
};
use casegate_proto::v1::{
    CheckDisclosureRequest, ConsentStatus, DiscloseRequest, ExportEntriesRequest,
    GetCheckpointRequest, GetConsistencyProofRequest, ListConsentsRequest, Party,
    StreamInboxRequest, stream_inbox_response::Event,
};
use futures_util::StreamExt;

use super::ledger::{COMBOS, Ledger};
use crate::{Caller, TestGateway};

/// Checks made, per kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    /// Acknowledged grants found (or not) with their state.
    pub grants: u64,
    /// Acknowledged withdrawals tried with `CheckDisclosure` and `Disclose`.
    pub withdrawals: u64,
    /// Receipts (and acknowledgement indices) looked up in the exported log.
    pub receipts: u64,
    /// Handed-out checkpoints proved consistent with the newest.
    pub checkpoints: u64,
    /// Notes compared between the inbox and the log.
    pub notes: u64,
    /// Offline verifications of the log with `casegate audit verify`.
    pub verifications: u64,
}

/// One thing lost or wrong after a cut.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The round whose cut preceded the check.
    pub round: usize,
    pub check: Check,
    /// What was lost or wrong (a consent id, a note's disclosure id, an entry): the same
    /// thing found again by a later check has the same `item`.
    pub item: String,
    pub detail: String,
}

/// What a failure broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    GatewayStart,
    Grant,
    Withdrawal,
    Receipt,
    Fork,
    Notes,
    OfflineVerify,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Check::GatewayStart => "gateway start after the cut",
            Check::Grant => "acknowledged grant",
            Check::Withdrawal => "acknowledged withdrawal",
            Check::Receipt => "receipt entry in the log",
            Check::Fork => "no fork (checkpoint consistency)",
            Check::Notes => "note delivery matches the log",
            Check::OfflineVerify => "casegate audit verify",
        })
    }
}

/// What a check carries to the next one.
#[derive(Debug, Default)]
pub struct Carry {
    /// The newest checkpoint at the previous check: (size, root, signed note).
    pub previous: Option<(u64, merkle::Hash, String)>,
    /// The largest checkpoint any client was handed so far (signed note).
    pub largest_handed: Option<(u64, String)>,
}

/// Runs every check against the gateway `gw` points at; returns the failures.
pub async fn after_restart(
    gw: &TestGateway,
    ledger: &Mutex<Ledger>,
    round: usize,
    carry: &mut Carry,
    checks: &mut Checks,
) -> Vec<Failure> {
    let mut c = Checker {
        gw,
        ledger,
        round,
        checks,
        failures: Vec::new(),
    };
    let mut nav = gw.caller("nav", "nav_counsellor").await;
    let mut officer = gw.caller("authority", "privacy_officer").await;
    if let Some(current) = c.checkpoints(&mut nav, carry).await {
        let delivered = c.inbox().await;
        c.consents().await;
        c.withdrawals(&nav).await;
        match export(&mut officer).await {
            Ok(entries) => {
                c.log_has_root(&entries, &current);
                c.receipts(&entries);
                c.notes(&entries, &delivered);
            }
            Err(e) => c.fail(Check::Receipt, format!("exporting the log failed: {e}")),
        }
        carry.previous = Some(current);
    }
    c.failures
}

struct Checker<'a> {
    gw: &'a TestGateway,
    ledger: &'a Mutex<Ledger>,
    round: usize,
    checks: &'a mut Checks,
    failures: Vec<Failure>,
}

impl Checker<'_> {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fail(&mut self, check: Check, detail: String) {
        self.fail_about(check, detail.clone(), detail);
    }

    fn fail_about(&mut self, check: Check, item: String, detail: String) {
        self.failures.push(Failure {
            round: self.round,
            check,
            item,
            detail,
        });
    }

    /// The newest checkpoint, proved consistent with the previous check's and with every
    /// checkpoint handed out since. `None` when there is no usable newest checkpoint.
    async fn checkpoints(
        &mut self,
        caller: &mut Caller,
        carry: &mut Carry,
    ) -> Option<(u64, merkle::Hash, String)> {
        let current = match caller.audit.get_checkpoint(GetCheckpointRequest {}).await {
            Ok(r) => r.into_inner().checkpoint.map(|c| c.signed_note),
            Err(e) => {
                self.fail(Check::Fork, format!("GetCheckpoint failed: {e}"));
                return None;
            }
        };
        let Some(current) = current.and_then(|note| {
            let c = self.gw.audit_verifier.verify(&note).ok()?;
            Some((c.size, c.root, note))
        }) else {
            self.fail(
                Check::Fork,
                "the newest checkpoint is missing or not signed by the gateway".into(),
            );
            return None;
        };
        let handed: Vec<String> = self.ledger().handed.drain().collect();
        let mut earlier: BTreeMap<u64, (merkle::Hash, &'static str)> = BTreeMap::new();
        if let Some((size, root, _)) = &carry.previous {
            earlier.insert(*size, (*root, "the previous check's newest checkpoint"));
        }
        for note in handed {
            let Ok(c) = self.gw.audit_verifier.verify(&note) else {
                self.fail(
                    Check::Fork,
                    "a client was handed a checkpoint the gateway's key does not verify".into(),
                );
                continue;
            };
            if carry
                .largest_handed
                .as_ref()
                .is_none_or(|(size, _)| c.size > *size)
            {
                carry.largest_handed = Some((c.size, note.clone()));
            }
            match earlier.get(&c.size) {
                Some((root, _)) if *root != c.root => {
                    self.fail(
                        Check::Fork,
                        format!(
                            "two checkpoints of size {} with different roots were handed out",
                            c.size
                        ),
                    );
                }
                _ => {
                    earlier.insert(c.size, (c.root, "a checkpoint handed to a client"));
                }
            }
        }
        let (size, root, _) = &current;
        for (first, (first_root, what)) in earlier {
            self.checks.checkpoints += 1;
            if first > *size {
                self.fail(
                    Check::Fork,
                    format!(
                        "{what} has {first} entries; the log now has {size}: entries were lost"
                    ),
                );
                continue;
            }
            if first == 0 {
                continue;
            }
            let request = GetConsistencyProofRequest {
                first_size: first,
                second_size: *size,
            };
            let proof = match caller.audit.get_consistency_proof(request).await {
                Ok(r) => r.into_inner().proof.map(|p| p.hashes).unwrap_or_default(),
                Err(e) => {
                    self.fail(
                        Check::Fork,
                        format!("consistency proof {first} → {size}: {e}"),
                    );
                    continue;
                }
            };
            let hashes: Option<Vec<merkle::Hash>> =
                proof.iter().map(|h| h.as_slice().try_into().ok()).collect();
            let verified = hashes
                .ok_or(merkle::ProofError::WrongLength)
                .and_then(|h| merkle::verify_consistency(first, *size, &h, &first_root, root));
            if let Err(e) = verified {
                self.fail(
                    Check::Fork,
                    format!("{what} ({first} entries) is not extended by the newest ({size}): {e}"),
                );
            }
        }
        Some(current)
    }

    /// The IPS inbox's backlog: the notes the gateway would deliver now (not acknowledged).
    async fn inbox(&mut self) -> Vec<String> {
        let mut ips = self.gw.caller("ips", "employment_specialist").await;
        let mut notes = Vec::new();
        let stream = ips
            .disclosure
            .stream_inbox(StreamInboxRequest { role: 0 })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => {
                self.fail(Check::Notes, format!("StreamInbox failed: {e}"));
                return notes;
            }
        };
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(message))) => match message.event {
                    Some(Event::Note(note)) => notes.push(note.disclosure_id),
                    Some(Event::BacklogComplete(_)) => return notes,
                    None => {}
                },
                Ok(Ok(None)) => {
                    self.fail(
                        Check::Notes,
                        "the inbox stream ended before its backlog did".into(),
                    );
                    return notes;
                }
                Ok(Err(e)) => {
                    self.fail(Check::Notes, format!("the inbox stream failed: {e}"));
                    return notes;
                }
                Err(_) => {
                    self.fail(
                        Check::Notes,
                        "the inbox backlog did not end within 30 s".into(),
                    );
                    return notes;
                }
            }
        }
    }

    /// Every acknowledged grant is listed, in the state its acknowledged changes left it.
    async fn consents(&mut self) {
        let portal = self.gw.channel("portal").await;
        let by_subject: BTreeMap<usize, Vec<(String, usize)>> = {
            let ledger = self.ledger();
            let mut by: BTreeMap<usize, Vec<(String, usize)>> = BTreeMap::new();
            for (id, grant) in &ledger.grants {
                by.entry(grant.combo / COMBOS.len())
                    .or_default()
                    .push((id.clone(), grant.round));
            }
            by
        };
        for (n, grants) in by_subject {
            let subject = self.ledger().subject(n);
            let mut jobseeker =
                Caller::new(portal.clone(), Some(self.gw.jobseeker_token(&subject)));
            let request = ListConsentsRequest {
                subject_id: subject.expose(),
                include_history: false,
                page_size: 500,
                page_token: String::new(),
            };
            let listed: HashMap<String, i32> = match jobseeker.consent.list_consents(request).await
            {
                Ok(r) => r
                    .into_inner()
                    .consents
                    .into_iter()
                    .map(|c| (c.consent_id, c.status))
                    .collect(),
                Err(e) => {
                    self.fail(
                        Check::Grant,
                        format!("ListConsents for subject #{n} failed: {e}"),
                    );
                    continue;
                }
            };
            for (id, granted_in) in &grants {
                self.checks.grants += 1;
                let (withdrawn_in, sent) = {
                    let ledger = self.ledger();
                    (
                        ledger.withdrawals.get(id).copied(),
                        ledger.withdraw_sent.contains(id),
                    )
                };
                let name =
                    |s: i32| ConsentStatus::try_from(s).map_or("unknown", |s| s.as_str_name());
                let (active, withdrawn) = (
                    ConsentStatus::Active as i32,
                    ConsentStatus::Withdrawn as i32,
                );
                let problem = match (listed.get(id).copied(), withdrawn_in) {
                    (None, _) => Some("is gone".to_owned()),
                    (Some(s), Some(_)) if s != withdrawn => {
                        Some(format!("is {}, not withdrawn", name(s)))
                    }
                    (Some(_), Some(_)) => None,
                    (Some(s), None) if s == active => None,
                    // A withdrawal was sent; its answer was lost with the gateway.
                    (Some(s), None) if s == withdrawn && sent => None,
                    (Some(s), None) => Some(format!("is {}, not active", name(s))),
                };
                if let Some(problem) = problem {
                    let detail = match withdrawn_in {
                        Some(w) => format!(
                            "consent {id} (subject #{n}), granted in round {granted_in} and withdrawn in round {w}, {problem}"
                        ),
                        None => format!(
                            "consent {id} (subject #{n}), granted in round {granted_in}, {problem}"
                        ),
                    };
                    let check = if withdrawn_in.is_some() {
                        Check::Withdrawal
                    } else {
                        Check::Grant
                    };
                    self.fail_about(check, id.clone(), detail);
                }
            }
        }
    }

    /// Every acknowledged withdrawal holds: the dry run and the real disclosure are refused.
    async fn withdrawals(&mut self, nav: &Caller) {
        let ips = self.gw.org("ips").orgnr.clone();
        let withdrawn: Vec<(String, usize, usize)> = {
            let ledger = self.ledger();
            ledger
                .withdrawals
                .iter()
                .filter_map(|(id, round)| Some((id.clone(), ledger.grants.get(id)?.combo, *round)))
                .collect()
        };
        let mut probes = Vec::new();
        for (i, (id, combo, withdrawn_in)) in withdrawn.into_iter().enumerate() {
            let subject = self.ledger().subject(combo / COMBOS.len()).expose();
            let (category, purpose) = COMBOS[combo % COMBOS.len()];
            let mut nav = nav.clone();
            let ips = ips.clone();
            let round = self.round;
            probes.push(async move {
                let check = CheckDisclosureRequest {
                    subject_id: subject.clone(),
                    recipient: Some(Party {
                        orgnr: ips.clone(),
                        roles: vec![],
                    }),
                    category: category.into(),
                    purpose: purpose.into(),
                    approval_attested: false,
                };
                let mut problems = Vec::new();
                match nav.consent.check_disclosure(check).await {
                    Ok(r) => {
                        if r.into_inner().decision.is_some_and(|d| d.permitted) {
                            problems
                                .push("CheckDisclosure permits a disclosure under it".to_owned());
                        }
                    }
                    Err(e) => problems.push(format!("CheckDisclosure failed: {e}")),
                }
                let request_id = format!("powercut-check-{round}-{i}");
                let disclose = DiscloseRequest {
                    request_id: request_id.clone(),
                    subject_id: subject,
                    recipient_orgnr: ips,
                    category: category.into(),
                    purpose: purpose.into(),
                    title: "Check".into(),
                    body: request_id.into_bytes(),
                    content_type: "text/plain".into(),
                    ..Default::default()
                };
                if let Ok(r) = nav.disclosure.disclose(disclose).await {
                    let id = r
                        .into_inner()
                        .receipt
                        .map(|r| r.disclosure_id)
                        .unwrap_or_default();
                    problems.push(format!("Disclose under it was permitted (disclosure {id})"));
                }
                (id, withdrawn_in, problems)
            });
        }
        let results: Vec<_> = futures_util::stream::iter(probes)
            .buffer_unordered(8)
            .collect()
            .await;
        for (id, withdrawn_in, problems) in results {
            self.checks.withdrawals += 1;
            for problem in problems {
                self.fail_about(
                    Check::Withdrawal,
                    id.clone(),
                    format!("consent {id}, withdrawn in round {withdrawn_in}: {problem}"),
                );
            }
        }
    }

    /// The exported log is the tree the newest checkpoint signs.
    fn log_has_root(
        &mut self,
        entries: &[(Vec<u8>, Entry)],
        current: &(u64, merkle::Hash, String),
    ) {
        let (size, root, _) = current;
        if (entries.len() as u64) < *size {
            self.fail(
                Check::Fork,
                format!(
                    "the newest checkpoint has {size} entries; the export only {}",
                    entries.len()
                ),
            );
            return;
        }
        let mut range = merkle::CompactRange::new();
        for (bytes, _) in &entries[..*size as usize] {
            range.append(merkle::leaf_hash(bytes), |_, _, _| {});
        }
        if range.root() != *root {
            self.fail(Check::Fork, format!("the exported log's first {size} entries do not have the newest checkpoint's root"));
        }
    }

    /// Every receipt's entry is at its index, with its leaf hash, kind and id.
    fn receipts(&mut self, entries: &[(Vec<u8>, Entry)]) {
        let receipts = self.ledger().receipts.clone();
        for r in receipts {
            self.checks.receipts += 1;
            let item = format!("{:?} {}", r.kind, r.id);
            let Some((bytes, entry)) = entries.get(r.index as usize) else {
                self.fail_about(
                    Check::Receipt,
                    item,
                    format!(
                        "{:?} {} (round {}) at index {}: the log has only {} entries",
                        r.kind,
                        r.id,
                        r.round,
                        r.index,
                        entries.len()
                    ),
                );
                continue;
            };
            let id = match r.kind {
                EntryKind::ConsentGranted | EntryKind::ConsentWithdrawn => {
                    entry.consent().map(|c| c.id.as_str())
                }
                _ => entry.disclosure_id(),
            };
            let leaf_ok = r
                .leaf_hash
                .is_none_or(|leaf| leaf == merkle::leaf_hash(bytes));
            if !leaf_ok || entry.kind() != r.kind || id != Some(r.id.as_str()) {
                self.fail_about(
                    Check::Receipt,
                    item,
                    format!(
                        "{:?} {} (round {}) at index {}: the log has {:?} {:?} there{}",
                        r.kind,
                        r.id,
                        r.round,
                        r.index,
                        entry.kind(),
                        id,
                        if leaf_ok {
                            ""
                        } else {
                            " with another leaf hash"
                        }
                    ),
                );
            }
        }
    }

    /// A note is delivered iff the log permits it and nothing in the log ends it.
    fn notes(&mut self, entries: &[(Vec<u8>, Entry)], delivered: &[String]) {
        let mut permitted: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut ended: HashSet<&str> = HashSet::new();
        let mut withdrawn: HashSet<&str> = HashSet::new();
        for (_, e) in entries {
            let disclosure = e.disclosure_id();
            match (e.kind(), disclosure) {
                (EntryKind::DisclosurePermitted, Some(d)) => {
                    permitted.insert(d, e.consent().map(|c| c.id.as_str()));
                }
                (EntryKind::NoteAcknowledged | EntryKind::NotePurged, Some(d)) => {
                    ended.insert(d);
                }
                (EntryKind::ConsentWithdrawn, _) => {
                    if let Some(c) = e.consent() {
                        withdrawn.insert(c.id.as_str());
                    }
                }
                _ => {}
            }
        }
        let deliverable: BTreeMap<&str, Option<&str>> = permitted
            .iter()
            .filter(|(d, consent)| {
                !ended.contains(*d) && !consent.is_some_and(|c| withdrawn.contains(c))
            })
            .map(|(d, c)| (*d, *c))
            .collect();
        let mut seen = HashSet::new();
        let acknowledged = self.ledger().acknowledged.clone();
        let mut problems = Vec::new();
        for d in delivered {
            self.checks.notes += 1;
            if !seen.insert(d.as_str()) {
                problems.push((
                    d.to_string(),
                    format!("note {d} delivered twice in one backlog"),
                ));
            }
            if let Some(round) = acknowledged.get(d) {
                problems.push((
                    d.to_string(),
                    format!("note {d}, acknowledged in round {round}, delivered again"),
                ));
            } else if !permitted.contains_key(d.as_str()) {
                problems.push((
                    d.to_string(),
                    format!("note {d} delivered without its `disclosure permitted` entry"),
                ));
            } else if !deliverable.contains_key(d.as_str()) {
                problems.push((
                    d.to_string(),
                    format!(
                        "note {d} delivered though the log acknowledges, purges or withdraws it"
                    ),
                ));
            }
        }
        let (disclosures, ack_sent) = {
            let ledger = self.ledger();
            (ledger.disclosures.clone(), ledger.ack_sent.clone())
        };
        for d in deliverable.keys() {
            if !seen.contains(d) {
                let sent =
                    disclosures
                        .get(*d)
                        .map_or("its sender was not answered".to_owned(), |x| {
                            format!(
                                "under consent {}, receipt given in round {}",
                                x.consent_id, x.round
                            )
                        });
                let ack = if ack_sent.contains(*d) {
                    "an acknowledgement was sent, its answer lost with the gateway"
                } else {
                    "no acknowledgement was ever sent"
                };
                problems.push((d.to_string(), format!(
                    "note {d} ({sent}; {ack}) is permitted in the log, neither acknowledged nor purged there, \
                     but not delivered"
                )));
            }
        }
        for (item, detail) in problems {
            self.fail_about(Check::Notes, item, detail);
        }
    }
}

/// Every entry of the log (up to the newest checkpoint), as exported to a supervisory
/// privacy officer.
async fn export(officer: &mut Caller) -> Result<Vec<(Vec<u8>, Entry)>, String> {
    let mut stream = officer
        .audit
        .export_entries(ExportEntriesRequest::default())
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(item) = stream.message().await.map_err(|e| e.to_string())? {
        if item.index != entries.len() as u64 {
            return Err(format!(
                "entry {} came at position {}",
                item.index,
                entries.len()
            ));
        }
        let entry = Entry::decode(&item.entry).map_err(|e| format!("entry {}: {e}", item.index))?;
        entries.push((item.entry, entry));
    }
    Ok(entries)
}
