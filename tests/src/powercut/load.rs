//! The clients of one round, until the gateway is killed: jobseekers granting consents and
//! withdrawing some, NAV counsellors disclosing notes under them, an IPS specialist streaming
//! its inbox and acknowledging each note, and a watcher asking for checkpoints. Every OK
//! answer goes into the [`Ledger`].

use std::{
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use casegate_audit::entry::EntryKind;
use casegate_proto::v1::{
    AcknowledgeRequest, DiscloseRequest, GetCheckpointRequest, WithdrawConsentRequest,
    stream_inbox_response::Event,
};
use tonic::{Code, transport::Channel};

use super::ledger::{COMBOS, Disclosed, Grant, Ledger, Receipt};
use crate::{Caller, TestGateway, fixtures};

/// How many clients of each kind.
const JOBSEEKERS: u64 = 2;
const DISCLOSERS: u64 = 3;
/// Withdrawals stop while fewer acknowledged grants than this are left to disclose under.
const KEEP_ACTIVE: usize = 4;

/// Runs the clients until `stop` is set (after the gateway is killed) and each has seen the
/// gateway gone.
pub async fn run(
    gw: &TestGateway,
    ledger: &Mutex<Ledger>,
    round: usize,
    seed: u64,
    stop: &AtomicBool,
) {
    let portal = gw.channel("portal").await;
    let nav = gw.caller("nav", "nav_counsellor").await;
    let ips = gw.caller("ips", "employment_specialist").await;
    let c = Clients {
        gw,
        ledger,
        round,
        stop,
        portal,
    };
    let jobseekers =
        futures_util::future::join_all((0..JOBSEEKERS).map(|n| c.jobseeker(rng(seed, n))));
    let disclosers = futures_util::future::join_all(
        (0..DISCLOSERS).map(|n| c.discloser(nav.clone(), n, rng(seed, 10 + n))),
    );
    tokio::join!(
        jobseekers,
        disclosers,
        c.withdrawer(rng(seed, 20)),
        c.specialist(ips),
        c.watcher(nav.clone()),
    );
}

/// What every client shares.
struct Clients<'a> {
    gw: &'a TestGateway,
    ledger: &'a Mutex<Ledger>,
    round: usize,
    stop: &'a AtomicBool,
    /// The portal's connection, over which every jobseeker calls with their own token.
    portal: Channel,
}

impl Clients<'_> {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A failed call: counted; the caller pauses (or ends, once the gateway is gone).
    async fn failed(&self) {
        self.ledger().ops.errors += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn jobseeker_for(&self, combo: usize) -> Caller {
        let subject = self.ledger().subject(combo / COMBOS.len());
        Caller::new(self.portal.clone(), Some(self.gw.jobseeker_token(&subject)))
    }

    /// Grants consents, each for a (subject, category, purpose) never asked for before.
    async fn jobseeker(&self, mut rng: fastrand::Rng) {
        let (nav, ips) = (&self.gw.org("nav").orgnr, &self.gw.org("ips").orgnr);
        while !self.stopped() {
            let combo = self.ledger().next_combo();
            let subject = self.ledger().subject(combo / COMBOS.len());
            let (category, purpose) = COMBOS[combo % COMBOS.len()];
            let request = fixtures::consent_between(&subject, nav, ips, category, purpose);
            let mut caller = self.jobseeker_for(combo);
            match caller.consent.grant_consent(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let (Some(record), Some(receipt)) = (response.consent, response.receipt) else {
                        self.failed().await;
                        continue;
                    };
                    let mut ledger = self.ledger();
                    ledger.ops.grants += 1;
                    ledger.receipt(
                        self.round,
                        EntryKind::ConsentGranted,
                        &record.consent_id,
                        &receipt,
                    );
                    ledger.grants.insert(
                        record.consent_id,
                        Grant {
                            combo,
                            round: self.round,
                        },
                    );
                }
                Err(_) => self.failed().await,
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(60..160))).await;
        }
    }

    /// Withdraws acknowledged grants now and then, keeping a few to disclose under.
    async fn withdrawer(&self, mut rng: fastrand::Rng) {
        while !self.stopped() {
            tokio::time::sleep(Duration::from_millis(rng.u64(100..250))).await;
            let pick = {
                let mut ledger = self.ledger();
                let active = ledger.active();
                if active.len() < KEEP_ACTIVE {
                    continue;
                }
                let (id, combo) = active[rng.usize(..active.len())].clone();
                ledger.withdraw_sent.insert(id.clone());
                (id, combo)
            };
            let (consent_id, combo) = pick;
            let mut caller = self.jobseeker_for(combo);
            let request = WithdrawConsentRequest {
                consent_id: consent_id.clone(),
                ..Default::default()
            };
            match caller.consent.withdraw_consent(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let mut ledger = self.ledger();
                    ledger.ops.withdrawals += 1;
                    if let Some(receipt) = &response.receipt {
                        ledger.receipt(
                            self.round,
                            EntryKind::ConsentWithdrawn,
                            &consent_id,
                            receipt,
                        );
                    }
                    ledger.withdrawals.insert(consent_id, self.round);
                }
                Err(_) => self.failed().await,
            }
        }
    }

    /// Discloses notes under acknowledged grants not (yet) withdrawn.
    async fn discloser(&self, mut nav: Caller, n: u64, mut rng: fastrand::Rng) {
        let ips = self.gw.org("ips").orgnr.clone();
        let mut sent = 0u64;
        while !self.stopped() {
            let pick = {
                let mut ledger = self.ledger();
                let active = ledger.active();
                (!active.is_empty()).then(|| {
                    let (_, combo) = active[rng.usize(..active.len())];
                    (
                        ledger.subject(combo / COMBOS.len()),
                        COMBOS[combo % COMBOS.len()],
                    )
                })
            };
            let Some((subject, (category, purpose))) = pick else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            sent += 1;
            let request_id = format!("powercut-{}-{n}-{sent}", self.round);
            let request = DiscloseRequest {
                request_id: request_id.clone(),
                subject_id: subject.expose(),
                recipient_orgnr: ips.clone(),
                category: category.into(),
                purpose: purpose.into(),
                title: "Update".into(),
                body: request_id.into_bytes(),
                content_type: "text/plain".into(),
                ..Default::default()
            };
            match nav.disclosure.disclose(request).await {
                Ok(response) => {
                    let Some(receipt) = response.into_inner().receipt else {
                        self.failed().await;
                        continue;
                    };
                    let mut ledger = self.ledger();
                    ledger.ops.disclosures += 1;
                    if let Some(audit) = &receipt.audit {
                        ledger.receipt(
                            self.round,
                            EntryKind::DisclosurePermitted,
                            &receipt.disclosure_id,
                            audit,
                        );
                    }
                    ledger.disclosures.insert(
                        receipt.disclosure_id,
                        Disclosed {
                            consent_id: receipt.consent_id,
                            round: self.round,
                        },
                    );
                }
                Err(status) if status.code() == Code::PermissionDenied && !self.stopped() => {
                    // Its consent was withdrawn meanwhile.
                    self.ledger().ops.refused += 1;
                }
                Err(_) => self.failed().await,
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(5..20))).await;
        }
    }

    /// Streams the IPS inbox and acknowledges every note it is given.
    async fn specialist(&self, mut ips: Caller) {
        while !self.stopped() {
            let Ok(stream) = ips
                .disclosure
                .stream_inbox(casegate_proto::v1::StreamInboxRequest { role: 0 })
                .await
            else {
                self.failed().await;
                continue;
            };
            let mut stream = stream.into_inner();
            while !self.stopped() {
                let next = tokio::time::timeout(Duration::from_millis(100), stream.message()).await;
                let note = match next {
                    Err(_elapsed) => continue,
                    Ok(Ok(Some(message))) => match message.event {
                        Some(Event::Note(note)) => note,
                        _ => continue,
                    },
                    Ok(_) => break,
                };
                {
                    let mut ledger = self.ledger();
                    ledger.ops.deliveries += 1;
                    ledger.ack_sent.insert(note.disclosure_id.clone());
                }
                let request = AcknowledgeRequest {
                    disclosure_id: note.disclosure_id.clone(),
                };
                match ips.disclosure.acknowledge(request).await {
                    Ok(response) => {
                        let index = response.into_inner().audit_index;
                        let mut ledger = self.ledger();
                        ledger.ops.acknowledgements += 1;
                        ledger.receipts.push(Receipt {
                            round: self.round,
                            kind: EntryKind::NoteAcknowledged,
                            id: note.disclosure_id.clone(),
                            index,
                            leaf_hash: None,
                        });
                        ledger.acknowledged.insert(note.disclosure_id, self.round);
                    }
                    Err(_) => self.failed().await,
                }
            }
        }
    }

    /// Asks for the newest checkpoint every 50 ms.
    async fn watcher(&self, mut caller: Caller) {
        while !self.stopped() {
            match caller.audit.get_checkpoint(GetCheckpointRequest {}).await {
                Ok(response) => {
                    if let Some(checkpoint) = response.into_inner().checkpoint {
                        self.ledger().checkpoint(&checkpoint.signed_note);
                    }
                }
                Err(_) => self.failed().await,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn rng(seed: u64, client: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
