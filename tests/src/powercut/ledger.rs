//! What the clients of a power-cut run were told: every answer a client received OK, kept
//! across rounds, which the checks after each cut hold the gateway to.

use std::collections::{BTreeMap, HashSet};

use casegate_audit::entry::EntryKind;
use casegate_consent::SubjectId;
use casegate_proto::v1::AuditReceipt;

/// The (category, purpose) pairs a NAV counsellor may send to IPS under the default
/// vocabulary. Each consent covers one pair for one subject, and no pair of a subject is
/// granted twice, so a withdrawn consent is the only one that could permit its disclosures.
pub const COMBOS: [(&str, &str); 4] = [
    ("benefit_counselling", "ips_follow_up"),
    ("benefit_counselling", "benefit_planning"),
    ("meeting_summary", "ips_follow_up"),
    ("meeting_summary", "benefit_planning"),
];

/// Synthetic subjects of a run start this far into [`SubjectId::synthetic_all`], clear of
/// the subjects other tests use.
const FIRST_SUBJECT: usize = 30_000;

/// A consent grant a jobseeker was told was recorded.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Index into [`COMBOS`] and the subjects: subject `combo / 4`, pair `combo % 4`.
    pub combo: usize,
    pub round: usize,
}

/// A disclosure NAV was given a receipt for.
#[derive(Debug, Clone)]
pub struct Disclosed {
    pub consent_id: String,
    pub round: usize,
}

/// An audit entry a client holds a receipt (or an index) for.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub round: usize,
    pub kind: EntryKind,
    /// The consent id (grant, withdrawal) or disclosure id (disclosure, acknowledgement).
    pub id: String,
    pub index: u64,
    /// Absent for an acknowledgement (its answer gives only the index).
    pub leaf_hash: Option<[u8; 32]>,
}

/// Operations acknowledged (answered OK) and otherwise answered, per kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ops {
    pub grants: u64,
    pub withdrawals: u64,
    pub disclosures: u64,
    /// Disclosures refused during the load (a consent withdrawn meanwhile).
    pub refused: u64,
    pub deliveries: u64,
    pub acknowledgements: u64,
    /// Signed checkpoints handed to clients (in receipts or asked for).
    pub checkpoints: u64,
    /// Calls that failed otherwise (the gateway killed mid-call, mostly).
    pub errors: u64,
}

/// Everything acknowledged so far, in all rounds.
pub struct Ledger {
    subjects: Vec<SubjectId>,
    source: Box<dyn Iterator<Item = SubjectId> + Send>,
    next_combo: usize,
    /// Acknowledged grants by consent id.
    pub grants: BTreeMap<String, Grant>,
    /// Consents a withdrawal was sent for (acknowledged or not).
    pub withdraw_sent: HashSet<String>,
    /// Acknowledged withdrawals: consent id → round.
    pub withdrawals: BTreeMap<String, usize>,
    /// Acknowledged disclosures by disclosure id.
    pub disclosures: BTreeMap<String, Disclosed>,
    /// Notes an acknowledgement was sent for (answered or not).
    pub ack_sent: HashSet<String>,
    /// Acknowledged acknowledgements: disclosure id → round.
    pub acknowledged: BTreeMap<String, usize>,
    pub receipts: Vec<Receipt>,
    /// Signed checkpoints handed to clients since the last check.
    pub handed: HashSet<String>,
    pub ops: Ops,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("grants", &self.grants.len())
            .field("withdrawals", &self.withdrawals.len())
            .field("disclosures", &self.disclosures.len())
            .finish_non_exhaustive()
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            subjects: Vec::new(),
            source: Box::new(SubjectId::synthetic_all().skip(FIRST_SUBJECT)),
            next_combo: 0,
            grants: BTreeMap::new(),
            withdraw_sent: HashSet::new(),
            withdrawals: BTreeMap::new(),
            disclosures: BTreeMap::new(),
            ack_sent: HashSet::new(),
            acknowledged: BTreeMap::new(),
            receipts: Vec::new(),
            handed: HashSet::new(),
            ops: Ops::default(),
        }
    }
}

impl Ledger {
    /// A (subject, pair) never asked for before, for the next grant.
    pub fn next_combo(&mut self) -> usize {
        let combo = self.next_combo;
        self.next_combo += 1;
        combo
    }

    /// Subject number `n` of this run.
    pub fn subject(&mut self, n: usize) -> SubjectId {
        while self.subjects.len() <= n {
            let next = self.source.next().expect("enough synthetic subjects");
            self.subjects.push(next);
        }
        self.subjects[n]
    }

    /// Keeps a receipt a client was given and the checkpoint in it.
    pub fn receipt(&mut self, round: usize, kind: EntryKind, id: &str, receipt: &AuditReceipt) {
        self.receipts.push(Receipt {
            round,
            kind,
            id: id.to_owned(),
            index: receipt.audit_index,
            leaf_hash: receipt.leaf_hash.as_slice().try_into().ok(),
        });
        if let Some(checkpoint) = &receipt.checkpoint {
            self.checkpoint(&checkpoint.signed_note);
        }
    }

    /// Keeps a signed checkpoint a client was handed.
    pub fn checkpoint(&mut self, signed_note: &str) {
        self.ops.checkpoints += 1;
        if !self.handed.contains(signed_note) {
            self.handed.insert(signed_note.to_owned());
        }
    }

    /// Acknowledged grants whose withdrawal was never sent: what the load may disclose
    /// under or withdraw.
    pub fn active(&self) -> Vec<(String, usize)> {
        self.grants
            .iter()
            .filter(|(id, _)| !self.withdraw_sent.contains(*id))
            .map(|(id, g)| (id.clone(), g.combo))
            .collect()
    }
}
