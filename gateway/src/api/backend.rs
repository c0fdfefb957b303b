//! The one seam between the gRPC handlers and where the gateway's state lives: [`Backend`],
//! the workflows' state changes (each with its audit entries) and reads. Two implementations:
//! [`super::embedded::Embedded`] (the embedded stores and segment log of one process) and the
//! PostgreSQL replica (`crate::store::postgres::Replica`, one database shared by many
//! replicas, every change one transaction). The handlers parse, authorise and answer; the
//! backend decides, stores and logs.

use std::sync::Arc;

use casegate_audit::{
    checkpoint::{SignedCheckpoint, Verifier},
    entry::{ConsentChange, ConsentRef, DisclosurePermitted, DisclosureRefused, Entry, Event},
    index::Filter,
    log::{AppendError, Appended, ReadError},
    merkle::Hash,
};
use casegate_consent::{
    OrgNumber, SubjectId,
    decision::{Decision, DisclosureRequest, POLICY_VERSION, Permit, Reason},
    record::{ConsentId, ConsentRecord, Evidence, NewConsent, Timestamp},
    store::StoreError,
};
use casegate_notes::Sealed;
use tonic::Status;
use uuid::Uuid;

use crate::{
    app::{
        audit,
        notes::{self, Note, NoteState, Secret},
        principal::Principal,
    },
    crypto::keyring::Keyring,
    edge::{
        convert::{
            consent::actor,
            disclosure::{DiscloseInput, now},
        },
        status,
    },
};

/// Which consent versions a caller may see (the handler's rule, applied by the backend under
/// the same lock as the change it guards).
pub(crate) type Visible<'a> = dyn Fn(&ConsentRecord) -> bool + Send + Sync + 'a;

/// A disclosure as the handler hands it over: parsed, authorised, hashed once.
#[derive(Debug)]
pub(crate) struct Proposed<'a> {
    /// The sender.
    pub principal: &'a Principal,
    /// The parsed request.
    pub input: &'a DiscloseInput,
    /// What the decision is taken on (built from the input and the sender).
    pub request: DisclosureRequest,
    /// SHA-256 of the body.
    pub content_sha256: [u8; 32],
    /// The request's fingerprint (idempotency, [`DiscloseInput::fingerprint`]).
    pub fingerprint: [u8; 32],
    /// The subject's pseudonym.
    pub pseudonym: [u8; 32],
}

/// What a disclosure came to.
#[derive(Debug)]
pub(crate) enum Disclosed {
    /// Permitted: the note is stored and deliverable, its entry logged.
    Permitted {
        /// The note as stored.
        note: Box<Note>,
        /// Its `disclosure permitted` entry.
        appended: Appended,
    },
    /// Refused by the decision: nothing stored, the refusal logged.
    Refused(Reason),
    /// The sender used the request id before for the same disclosure (on any replica).
    Repeated {
        /// The first disclosure's note.
        note: Box<Note>,
        /// Its `disclosure permitted` entry's index.
        index: u64,
    },
}

/// A note made deliverable, as live inbox streams learn of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deliverable {
    /// Whose inbox it is in.
    pub recipient: OrgNumber,
    /// The note.
    pub note: Uuid,
    /// Its `disclosure permitted` entry's index.
    pub index: u64,
}

/// One entry a query matched: its index, decoded form, leaf hash and canonical bytes.
pub(crate) type Matched = (u64, Entry, Hash, Vec<u8>);

/// The gateway's state as the handlers use it. Every method that changes state records its
/// audit entries before it answers (or, on the embedded backend, as a store change that the
/// start-up reconciliation finishes); a failure changes nothing the caller is told of.
///
/// Errors of the methods answering `Status` are the call's answer as `edge::status` words
/// it: a rule (`PERMISSION_DENIED` for a consent the caller may not see, `FAILED_PRECONDITION`
/// for one changed or withdrawn meanwhile, `NOT_FOUND` for an unknown `supersedes`), the
/// state unreachable (`UNAVAILABLE`), a conflict lost on every attempt (`ABORTED`), or a
/// store or log failure (`INTERNAL`, logged). The others answer the store's or log's own
/// error for the handler to word.
#[tonic::async_trait]
pub(crate) trait Backend: Send + Sync + std::fmt::Debug + 'static {
    // Disclosures and inboxes.

    /// Decides `proposed` and records it (see [`Disclosed`]).
    ///
    /// # Errors
    /// A repeated request id with another fingerprint: `ALREADY_EXISTS`; one still being
    /// recorded: `UNAVAILABLE`; else as the trait says.
    async fn disclose(&self, proposed: Proposed<'_>) -> Result<Disclosed, Status>;

    /// Note `id`, if held.
    ///
    /// # Errors
    /// A store failure (`INTERNAL`) or the state unreachable.
    async fn note(&self, id: Uuid) -> Result<Option<Note>, Status>;

    /// Up to `max` deliverable notes for `org` after note `after`, in inbox order.
    ///
    /// # Errors
    /// As [`Backend::note`].
    async fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<Uuid>,
        max: usize,
    ) -> Result<Vec<Note>, Status>;

    /// Notes made deliverable from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Deliverable>;

    /// Delivers `note` to `to` if its consent still covers it (its `note delivered` entry
    /// logged) and answers it with its opened secret; otherwise withholds and purges it
    /// (audited) and answers `None`. `None` also when it left the inbox meanwhile.
    ///
    /// # Errors
    /// Its sealed part does not open (`INTERNAL`); else as the trait says.
    async fn deliver(&self, to: &Principal, note: Note) -> Result<Option<(Note, Secret)>, Status>;

    /// Takes deliverable `note` out of the inbox at `at`, its body kept until `purge_after`,
    /// with its `note acknowledged` entry.
    ///
    /// # Errors
    /// Acknowledged or purged meanwhile: `FAILED_PRECONDITION`; else as the trait says.
    async fn acknowledge(
        &self,
        by: &Principal,
        note: &Note,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Appended, Status>;

    /// Purges (audited) the bodies past their retention or TTL, forgets notes purged before
    /// `forget_after`; returns how many were purged.
    ///
    /// # Errors
    /// As the trait says; the purges done before a failure stand (each with its entry).
    async fn sweep(
        &self,
        ttl: std::time::Duration,
        forget_after: std::time::Duration,
    ) -> Result<usize, Status>;

    // Consents.

    /// Version `version` (newest when `None`) of consent `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; a store failure.
    async fn consent(
        &self,
        id: ConsentId,
        version: Option<u32>,
    ) -> Result<ConsentRecord, StoreError>;

    /// Every version of every consent about `subject`, in key order.
    ///
    /// # Errors
    /// A store failure.
    async fn consents_of(&self, subject: SubjectId) -> Result<Vec<ConsentRecord>, StoreError>;

    /// The decision on `request` about `subject` now (a dry run: nothing recorded here).
    ///
    /// # Errors
    /// A store failure.
    async fn decide(
        &self,
        subject: SubjectId,
        request: DisclosureRequest,
    ) -> Result<Decision, StoreError>;

    /// Grants `new` by `by` (superseding `supersedes`, which must be `visible`), with its
    /// `consent granted` entry.
    ///
    /// # Errors
    /// `supersedes` not visible: `PERMISSION_DENIED`; about another subject or unknown:
    /// `NOT_FOUND`; not active, or changed meanwhile: `FAILED_PRECONDITION`.
    async fn grant(
        &self,
        by: &Principal,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        visible: &Visible<'_>,
    ) -> Result<(ConsentRecord, Appended), Status>;

    /// Withdraws the newest version of `id` (which must be `visible`) by `by`, and purges
    /// every undelivered note relying on it; answers the withdrawn version, how many notes
    /// were purged and the withdrawal's entry.
    ///
    /// # Errors
    /// Not visible (or unknown): `PERMISSION_DENIED`; already withdrawn:
    /// `FAILED_PRECONDITION`.
    async fn withdraw(
        &self,
        by: &Principal,
        id: ConsentId,
        reason: Option<String>,
        evidence: Option<Evidence>,
        visible: &Visible<'_>,
    ) -> Result<(ConsentRecord, u32, Appended), Status>;

    // The audit log.

    /// Appends `entry` and waits for its index and checkpoint.
    ///
    /// # Errors
    /// The log's [`AppendError`] (full, closed, failed, too large).
    async fn append(&self, entry: &Entry) -> Result<Appended, AppendError>;

    /// The newest signed checkpoint: on a replica, as the database holds it now (what any
    /// replica has logged), so a receipt from one replica is in what another one shows.
    ///
    /// # Errors
    /// The database unreachable (`UNAVAILABLE`) or failing.
    async fn checkpoint(&self) -> Result<Arc<SignedCheckpoint>, Status>;

    /// The checkpoint signer's verifier key.
    fn verifier(&self) -> &Verifier;

    /// Entry `index`'s leaf hash (RFC 6962 §2.1).
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`]; a read failure.
    async fn leaf_hash(&self, index: u64) -> Result<Hash, ReadError>;

    /// The inclusion proof of entry `index` in the tree of `size` entries (RFC 6962 §2.1.1):
    /// a receipt's, read the cheapest way (the newest nodes).
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] for an index at or past `size`, or a size past the log's; a
    /// read failure.
    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError>;

    /// The inclusion proofs of entries `indexes` in the tree of `size` entries, in order: any
    /// number, of any age, read together off the async runtime.
    ///
    /// # Errors
    /// As [`Backend::inclusion_proof`].
    async fn inclusion_proofs(
        &self,
        indexes: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, ReadError>;

    /// The consistency proof between trees of `first` and `second` entries (RFC 6962 §2.1.2).
    ///
    /// # Errors
    /// [`ReadError::Sizes`] unless `first <= second <=` the size; a read failure.
    async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ReadError>;

    /// The canonical bytes of entries `from..to`.
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`]; a read failure.
    async fn entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, ReadError>;

    /// Up to `max` entries in `start..end` that `filter` matches, in log order, and the index
    /// to go on from (`end` when the range is done).
    ///
    /// # Errors
    /// A read or index failure (`INTERNAL`) or the state unreachable.
    async fn matching_page(
        &self,
        filter: Arc<Filter>,
        start: u64,
        end: u64,
        max: usize,
    ) -> Result<(Vec<Matched>, u64), Status>;
}

/// The shared handle the services hold.
pub(crate) type Shared = Arc<dyn Backend>;

/// Calls `each` with every entry in `start..end` that `filter` matches, in log order, at most
/// `limit` of them, reading a page at a time.
///
/// # Errors
/// The backend's, or `each`'s.
pub(crate) async fn matching(
    backend: &dyn Backend,
    filter: Filter,
    start: u64,
    end: u64,
    limit: usize,
    mut each: impl FnMut(u64, &Entry, &[u8], Vec<u8>) -> Result<(), Status> + Send,
) -> Result<(), Status> {
    /// Matches read at a time: memory stays bounded however many match.
    const PAGE: usize = 1024;
    let filter = Arc::new(filter);
    let (mut from, mut left) = (start, limit);
    while from < end && left > 0 {
        let (page, next) = backend
            .matching_page(filter.clone(), from, end, left.min(PAGE))
            .await?;
        for (index, entry, leaf, bytes) in page {
            each(index, &entry, &leaf, bytes)?;
            left -= 1;
        }
        from = next;
    }
    Ok(())
}

/// The answer to a repeated request id whose first disclosure is `existing_fingerprint`:
/// `Ok` if it is the same disclosure.
///
/// # Errors
/// `ALREADY_EXISTS` when the request id was used for a different disclosure.
pub(crate) fn same_disclosure(
    existing_fingerprint: &[u8; 32],
    proposed: &Proposed<'_>,
) -> Result<(), Status> {
    // A note stored by an earlier version holds the fingerprint as it was computed then.
    if *existing_fingerprint != proposed.fingerprint
        && *existing_fingerprint != proposed.input.fingerprint_before_v2()
    {
        return Err(Status::already_exists(
            "request_id was already used for a different disclosure",
        ));
    }
    Ok(())
}

/// The decision request a note is checked against again at delivery: its own terms, with the
/// approval its sealed part holds.
pub(crate) fn recheck(note: &Note, secret: &Secret) -> DisclosureRequest {
    DisclosureRequest {
        sender_org: note.sender.orgnr,
        sender_role: note.sender.role,
        recipient_org: note.recipient_org,
        recipient_role: note.recipient_role,
        category: note.category.clone(),
        purpose: note.purpose.clone(),
        approval_attested: secret.approval.is_some(),
    }
}

impl Proposed<'_> {
    /// Its `disclosure refused` entry, for `reason`; `nearest` is the consent version nearest
    /// to permitting it, if any.
    pub(crate) fn refused_entry(&self, reason: &str, nearest: Option<ConsentRef>) -> Entry {
        Entry::new(
            audit::now_micros(),
            Event::DisclosureRefused(DisclosureRefused {
                terms: audit::decision_terms(self.principal, self.pseudonym, &self.request),
                reason: reason.to_owned(),
                nearest_consent: nearest,
                recipient_role: self.input.recipient_role.map(|r| r.as_str().to_owned()),
                approval_attested: self.input.approval.is_some(),
                content_sha256: self.content_sha256,
                request_id: self.input.request_id.clone(),
            }),
        )
    }

    /// Its `disclosure permitted` entry, relying on `consent`, as note `id`.
    pub(crate) fn permitted_entry(&self, consent: ConsentRef, id: Uuid) -> Entry {
        Entry::new(
            audit::now_micros(),
            Event::DisclosurePermitted(DisclosurePermitted {
                terms: audit::decision_terms(self.principal, self.pseudonym, &self.request),
                consent,
                recipient_role: self.input.recipient_role.map(|r| r.as_str().to_owned()),
                approval_attested: self.input.approval.is_some(),
                content_sha256: self.content_sha256,
                request_id: self.input.request_id.clone(),
                disclosure_id: id.to_string(),
            }),
        )
    }

    /// Its personal content sealed for note `id` with `keyring` (bound to the note's id,
    /// subject pseudonym and recipient).
    ///
    /// # Errors
    /// `INTERNAL` when sealing fails.
    pub(crate) fn seal(&self, id: Uuid, keyring: &Keyring) -> Result<Sealed, Status> {
        let input = self.input;
        let secret = Secret {
            subject: input.subject,
            title: input.title.clone(),
            body: input.body.clone(),
            approval: input.approval.clone(),
        };
        notes::seal(keyring, &secret, &id, &self.pseudonym, input.recipient_org)
            .map_err(status::note_error)
    }

    /// The pending note `id` it stores when `permit`ted, its content `sealed` ([`Self::seal`]);
    /// `log_size_hint` is the log's size before its entry.
    pub(crate) fn pending_note(
        &self,
        id: Uuid,
        permit: &Permit,
        sealed: Sealed,
        log_size_hint: u64,
    ) -> Note {
        let input = self.input;
        Note {
            id,
            state: NoteState::Pending,
            request_id: input.request_id.clone(),
            fingerprint: self.fingerprint,
            sender: actor(self.principal),
            recipient_org: input.recipient_org,
            recipient_role: input.recipient_role,
            category: input.category.clone(),
            purpose: input.purpose.clone(),
            content_type: input.content_type.clone(),
            consent_id: permit.consent_id,
            consent_version: permit.version,
            consent_record_hash: permit.record_hash,
            content_sha256: self.content_sha256,
            subject_pseudonym: self.pseudonym,
            disclosed_at: now(),
            audit_index: None,
            log_size_hint,
            delivered: false,
            acknowledged_at: None,
            purge_after: None,
            purged_at: None,
            sealed: Some(sealed),
        }
    }
}

/// The reference a permit's entry pins: the consent version it relied on.
pub(crate) fn permit_ref(permit: &Permit) -> ConsentRef {
    ConsentRef {
        id: permit.consent_id.to_string(),
        version: permit.version,
        record_sha256: permit.record_hash,
    }
}

/// The `consent granted` or `consent withdrawn` entry (`event`) of `record` by `by`; the
/// subject's `pseudonym`.
pub(crate) fn consent_change_entry(
    event: fn(ConsentChange) -> Event,
    by: &Principal,
    pseudonym: [u8; 32],
    record: &ConsentRecord,
) -> Entry {
    let change = ConsentChange {
        actor: audit::actor(by),
        subject_pseudonym: pseudonym,
        consent: audit::consent_ref(record),
        policy_version: POLICY_VERSION.to_owned(),
        login: by.login.clone(),
    };
    Entry::new(audit::now_micros(), event(change))
}

/// The version `found` if the caller may see it (`visible`); otherwise the same refusal
/// whether or not it exists, so ids cannot be probed.
///
/// # Errors
/// `PERMISSION_DENIED` when not visible or unknown; a store failure as
/// [`status::consent_store_error`] words it.
pub(crate) fn visible_consent(
    found: Result<ConsentRecord, StoreError>,
    visible: &Visible<'_>,
) -> Result<ConsentRecord, Status> {
    match found {
        Ok(record) if visible(&record) => Ok(record),
        Ok(_) | Err(StoreError::NotFound) => Err(status::consent_not_visible()),
        Err(e) => Err(status::consent_store_error(e)),
    }
}

/// A note looked up by id: `None` when it is not held.
///
/// # Errors
/// A store failure as [`status::note_error`] words it.
pub(crate) fn held(found: Result<Note, notes::NoteError>) -> Result<Option<Note>, Status> {
    match found {
        Ok(note) => Ok(Some(note)),
        Err(notes::NoteError::NotFound) => Ok(None),
        Err(e) => Err(status::note_error(e)),
    }
}

/// What a sweep run now removes: (now, the TTL cutoff — deliverable notes disclosed at or
/// before it are purged —, the forget cutoff — notes purged before it are forgotten).
pub(crate) fn sweep_cutoffs(
    ttl: std::time::Duration,
    forget_after: std::time::Duration,
) -> (Timestamp, Timestamp, Timestamp) {
    let micros = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let now = now();
    (
        now,
        Timestamp(now.0.saturating_sub(micros(ttl))),
        Timestamp(now.0.saturating_sub(micros(forget_after))),
    )
}
