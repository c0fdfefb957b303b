//! What a decision needs to know of a consent version — its terms — behind one interface, so
//! the decision rules are written once and run both over full records and over the store's
//! compact per-subject index, which is read without allocating.
//!
//! Index encoding, the current versions of one subject's consents:
//!
//! ```text
//! u8 version (1, or 2 when an entry is superseded) | u16 count | count × entry
//! entry: [16] id | u32 version | [32] record hash | u8 status (0 active, 1 withdrawn, 2 superseded)
//!        | i64 start | i64 end | i64 recorded_at | u8 provisions | provisions × provision
//! provision: u8 n | n × party (senders) | u8 n | n × party (recipients)
//!            | u8 n | n × term (categories) | u8 n | n × term (purposes)
//! party: u32 orgnr | u8 role mask (bit i = Role::ALL[i]; 0 = every role)
//! term:  u8 length | UTF-8 bytes
//! ```

use crate::{
    Category, OrgNumber, Purpose, Role,
    record::{ConsentId, ConsentRecord, Party, Period, Provision, Status, Timestamp},
};

/// The decision-relevant part of one consent version.
pub trait Terms {
    /// A view of one of the version's provisions.
    type Provision<'a>: ProvisionTerms
    where
        Self: 'a;

    /// The consent's id.
    fn id(&self) -> ConsentId;
    /// The version number.
    fn version(&self) -> u32;
    /// SHA-256 of the version's canonical content ([`ConsentRecord::record_hash`]).
    fn record_hash(&self) -> [u8; 32];
    /// The stored state.
    fn status(&self) -> Status;
    /// When the version is in force.
    fn period(&self) -> Period;
    /// When the version was recorded.
    fn recorded_at(&self) -> Timestamp;
    /// The provisions, in order (a permit names one by its position).
    fn provisions(&self) -> impl Iterator<Item = Self::Provision<'_>>;
}

/// The four questions a decision asks of a provision.
pub trait ProvisionTerms {
    /// Whether a sender party covers someone of `org` acting as `role`.
    fn covers_sender(&self, org: OrgNumber, role: Role) -> bool;
    /// Whether a recipient party covers `org` and `role` (`None`: the whole organisation,
    /// covered only by a party narrowed to no roles).
    fn covers_recipient(&self, org: OrgNumber, role: Option<Role>) -> bool;
    /// Whether the provision lists `category`.
    fn has_category(&self, category: &Category) -> bool;
    /// Whether the provision lists `purpose`.
    fn has_purpose(&self, purpose: &Purpose) -> bool;
    /// Whether `org` appears in the provision at all, as a sender or a recipient, whatever
    /// the roles.
    fn names(&self, org: OrgNumber) -> bool;
}

// === full records ===

impl Terms for ConsentRecord {
    type Provision<'a> = &'a Provision;

    fn id(&self) -> ConsentId {
        self.id
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn record_hash(&self) -> [u8; 32] {
        ConsentRecord::record_hash(self)
    }
    fn status(&self) -> Status {
        self.status
    }
    fn period(&self) -> Period {
        self.period
    }
    fn recorded_at(&self) -> Timestamp {
        self.recorded_at
    }
    fn provisions(&self) -> impl Iterator<Item = &Provision> {
        self.provisions.iter()
    }
}

impl ProvisionTerms for &Provision {
    fn covers_sender(&self, org: OrgNumber, role: Role) -> bool {
        self.senders.iter().any(|p| p.covers(org, Some(role)))
    }
    fn covers_recipient(&self, org: OrgNumber, role: Option<Role>) -> bool {
        self.recipients.iter().any(|p| p.covers(org, role))
    }
    fn has_category(&self, category: &Category) -> bool {
        self.categories.contains(category)
    }
    fn has_purpose(&self, purpose: &Purpose) -> bool {
        self.purposes.contains(purpose)
    }
    fn names(&self, org: OrgNumber) -> bool {
        Provision::names(self, org)
    }
}

// === the compact index ===

const INDEX_VERSION: u8 = 1;
/// The version of an index holding a superseded entry (only after a reconciliation): a
/// binary that knows only version 1 refuses it rather than read the entry as active.
const INDEX_VERSION_SUPERSEDED: u8 = 2;
/// Where an entry's status byte is.
const STATUS_AT: usize = 16 + 4 + 32;
const PARTY_LEN: usize = 5;
const FIXED_LEN: usize = 16 + 4 + 32 + 1 + 8 + 8 + 8;

/// The index could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consent index is malformed")]
pub struct IndexError;

fn org_code(org: OrgNumber) -> u32 {
    org.as_u32()
}

fn role_bit(role: Role) -> u8 {
    let at = Role::ALL.iter().position(|r| *r == role).unwrap_or(7);
    1u8 << at
}

fn party_covers(bytes: &[u8], org: u32, role: Option<Role>) -> bool {
    bytes.chunks_exact(PARTY_LEN).any(|p| {
        let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let mask = p[4];
        code == org && (mask == 0 || role.is_some_and(|r| mask & role_bit(r) != 0))
    })
}

fn has_term(mut bytes: &[u8], term: &str) -> bool {
    while let [len, rest @ ..] = bytes {
        let (name, tail) = rest.split_at((*len as usize).min(rest.len()));
        if name == term.as_bytes() {
            return true;
        }
        bytes = tail;
    }
    false
}

/// One provision inside the index.
#[derive(Debug, Clone, Copy)]
pub struct ProvisionView<'a> {
    senders: &'a [u8],
    recipients: &'a [u8],
    categories: &'a [u8],
    purposes: &'a [u8],
}

impl ProvisionTerms for ProvisionView<'_> {
    fn covers_sender(&self, org: OrgNumber, role: Role) -> bool {
        party_covers(self.senders, org_code(org), Some(role))
    }
    fn covers_recipient(&self, org: OrgNumber, role: Option<Role>) -> bool {
        party_covers(self.recipients, org_code(org), role)
    }
    fn has_category(&self, category: &Category) -> bool {
        has_term(self.categories, category.as_str())
    }
    fn has_purpose(&self, purpose: &Purpose) -> bool {
        has_term(self.purposes, purpose.as_str())
    }
    fn names(&self, org: OrgNumber) -> bool {
        let code = org_code(org);
        [self.senders, self.recipients].iter().any(|parties| {
            parties
                .chunks_exact(PARTY_LEN)
                .any(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]) == code)
        })
    }
}

/// One consent version inside the index, borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct TermsView<'a> {
    /// The whole entry, as encoded.
    raw: &'a [u8],
    provisions: &'a [u8],
    count: u8,
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

impl TermsView<'_> {
    /// The encoded entry (for rewriting the index).
    pub fn raw(&self) -> &[u8] {
        self.raw
    }
}

impl<'a> Terms for TermsView<'a> {
    type Provision<'b>
        = ProvisionView<'a>
    where
        Self: 'b;

    fn id(&self) -> ConsentId {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.raw[..16]);
        ConsentId::from_bytes(id)
    }
    fn version(&self) -> u32 {
        u32::from_be_bytes([self.raw[16], self.raw[17], self.raw[18], self.raw[19]])
    }
    fn record_hash(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.raw[20..52]);
        h
    }
    fn status(&self) -> Status {
        match self.raw[STATUS_AT] {
            0 => Status::Active,
            1 => Status::Withdrawn,
            _ => Status::Superseded,
        }
    }
    fn period(&self) -> Period {
        Period {
            start: Timestamp(i64_at(self.raw, 53)),
            end: Timestamp(i64_at(self.raw, 61)),
        }
    }
    fn recorded_at(&self) -> Timestamp {
        Timestamp(i64_at(self.raw, 69))
    }
    fn provisions(&self) -> impl Iterator<Item = ProvisionView<'a>> {
        let mut rest = self.provisions;
        (0..self.count).map_while(move |_| {
            let (view, tail) = split_provision(rest).ok()?;
            rest = tail;
            Some(view)
        })
    }
}

/// Takes `n` parties (`n` read first) off the front.
fn take_parties(b: &[u8]) -> Result<(&[u8], &[u8]), IndexError> {
    let (&n, rest) = b.split_first().ok_or(IndexError)?;
    let len = n as usize * PARTY_LEN;
    if rest.len() < len {
        return Err(IndexError);
    }
    Ok(rest.split_at(len))
}

/// Takes `n` terms (`n` read first) off the front.
fn take_terms(b: &[u8]) -> Result<(&[u8], &[u8]), IndexError> {
    let (&n, rest) = b.split_first().ok_or(IndexError)?;
    let mut len = 0usize;
    for _ in 0..n {
        let l = *rest.get(len).ok_or(IndexError)? as usize;
        len += 1 + l;
        if rest.len() < len {
            return Err(IndexError);
        }
    }
    Ok(rest.split_at(len))
}

fn split_provision(b: &[u8]) -> Result<(ProvisionView<'_>, &[u8]), IndexError> {
    let (senders, b) = take_parties(b)?;
    let (recipients, b) = take_parties(b)?;
    let (categories, b) = take_terms(b)?;
    let (purposes, b) = take_terms(b)?;
    Ok((
        ProvisionView {
            senders,
            recipients,
            categories,
            purposes,
        },
        b,
    ))
}

/// Reads an index, checking its structure once; the views then read without further checks.
pub fn parse_index(bytes: &[u8]) -> Result<Vec<TermsView<'_>>, IndexError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let [INDEX_VERSION | INDEX_VERSION_SUPERSEDED, c0, c1, body @ ..] = bytes else {
        return Err(IndexError);
    };
    let mut rest: &[u8] = body;
    let count = u16::from_be_bytes([*c0, *c1]);
    let mut views = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let entry = rest;
        if entry.len() < FIXED_LEN + 1 {
            return Err(IndexError);
        }
        let provisions_count = entry[FIXED_LEN];
        let provisions = &entry[FIXED_LEN + 1..];
        let mut tail = provisions;
        for _ in 0..provisions_count {
            tail = split_provision(tail)?.1;
        }
        let used = entry.len() - tail.len();
        views.push(TermsView {
            raw: &entry[..used],
            provisions: &provisions[..provisions.len() - tail.len()],
            count: provisions_count,
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(IndexError);
    }
    Ok(views)
}

fn encode_parties(parties: &[Party], out: &mut Vec<u8>) {
    out.push(u8::try_from(parties.len()).unwrap_or(u8::MAX));
    for p in parties.iter().take(255) {
        out.extend_from_slice(&org_code(p.orgnr).to_be_bytes());
        out.push(p.roles.iter().fold(0u8, |m, r| m | role_bit(*r)));
    }
}

fn encode_terms<'a>(terms: impl ExactSizeIterator<Item = &'a str>, out: &mut Vec<u8>) {
    out.push(u8::try_from(terms.len()).unwrap_or(u8::MAX));
    for t in terms.take(255) {
        out.push(u8::try_from(t.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&t.as_bytes()[..t.len().min(255)]);
    }
}

/// The index entry of one (current) version.
pub fn encode_entry(record: &ConsentRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(record.id.as_bytes());
    out.extend_from_slice(&record.version.to_be_bytes());
    out.extend_from_slice(&record.record_hash());
    out.push(match record.status {
        Status::Active => 0,
        Status::Withdrawn => 1,
        // Only after a reconciliation: a version whose successor's grant was lost.
        Status::Superseded => 2,
    });
    out.extend_from_slice(&record.period.start.0.to_be_bytes());
    out.extend_from_slice(&record.period.end.0.to_be_bytes());
    out.extend_from_slice(&record.recorded_at.0.to_be_bytes());
    out.push(u8::try_from(record.provisions.len()).unwrap_or(u8::MAX));
    for p in record.provisions.iter().take(255) {
        encode_parties(&p.senders, &mut out);
        encode_parties(&p.recipients, &mut out);
        encode_terms(p.categories.iter().map(Category::as_str), &mut out);
        encode_terms(p.purposes.iter().map(Purpose::as_str), &mut out);
    }
    out
}

/// An index of the given entries (each from [`encode_entry`] or [`TermsView::raw`]).
pub fn encode_index<'a>(entries: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![INDEX_VERSION];
    out.extend_from_slice(
        &u16::try_from(entries.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for e in entries {
        if e.get(STATUS_AT) == Some(&2) {
            out[0] = INDEX_VERSION_SUPERSEDED;
        }
        out.extend_from_slice(e);
    }
    out
}
