//! Notes in PostgreSQL (DESIGN §7): one `casegate_note` row per note holding the note record
//! and the progress record the embedded journal would write (`casegate_notes::record`), with
//! the columns the inbox, expiry and idempotency queries use; request ids are unique per
//! sender across replicas (the note's own unique key, and `casegate_note_claim` while a
//! `Disclose` is deciding).
//!
//! The operations are those of [`NoteStorage`](casegate_notes::NoteStorage), asynchronous,
//! each one transaction (a change reads its row `FOR UPDATE`), durable when it returns
//! (committed). The sealed part is stored as sealed: the database never sees a body.

use std::future::Future;

use casegate_consent::{OrgNumber, record::ConsentId, record::Timestamp};
use casegate_notes::{
    Existing, Expiry, Note, NoteError, NoteState,
    record::{apply_progress, decode_note, encode_note, progress_of},
};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::Prepared as _;
use super::{Database, DatabaseError};

/// The stored state codes (`casegate_note.state`).
fn state_code(state: NoteState) -> i16 {
    match state {
        NoteState::Pending => 0,
        NoteState::Deliverable => 1,
        NoteState::Acknowledged => 2,
        NoteState::Purged => 3,
    }
}

/// Why an attempt failed.
pub(crate) type Failure = super::Failure<NoteError>;

impl From<NoteError> for Failure {
    fn from(e: NoteError) -> Self {
        Self::Rule(e)
    }
}

/// Runs `attempt` (one transaction) as [`Database::retrying`] does, answering with the
/// store's own error.
async fn retrying<T, F: Future<Output = Result<T, Failure>>>(
    db: &Database,
    attempt: impl FnMut() -> F,
) -> Result<T, NoteError> {
    db.retrying(attempt)
        .await
        .map_err(|e| e.into_rule(|e| NoteError::Io(std::io::Error::other(e.to_string()))))
}

/// A count or limit as a `BIGINT`.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The note a row's `record` and `progress` hold.
pub(crate) fn note_of(row: &tokio_postgres::Row) -> Result<Note, NoteError> {
    let (record, progress): (&[u8], &[u8]) = (row.get("record"), row.get("progress"));
    let mut note = decode_note(record)?;
    apply_progress(progress, &mut note)?;
    Ok(note)
}

fn notes_of(rows: &[tokio_postgres::Row]) -> Result<Vec<Note>, NoteError> {
    rows.iter().map(note_of).collect()
}

/// The current time, in microseconds since the Unix epoch (a purge's time).
fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

/// The deployment's notes.
#[derive(Debug, Clone)]
pub struct Notes {
    db: Database,
}

impl Notes {
    /// Notes in `db` (schema migrated).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Claims `request_id` of `sender` for the new note `id`; if the sender used it before
    /// (a stored note, or another claim), answers `Err` with what for.
    ///
    /// # Errors
    /// A database failure.
    pub async fn reserve(
        &self,
        sender: OrgNumber,
        request_id: &str,
        id: Uuid,
        fingerprint: [u8; 32],
    ) -> Result<Result<(), Existing>, NoteError> {
        let sender = sender.to_string();
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            // A claim is dropped when its note is stored (in one transaction), so looking at
            // the claims and then the notes misses neither.
            for _ in 0..3 {
                let claimed = client
                    .execute_cached(
                        "INSERT INTO casegate_note_claim (sender_orgnr, request_id, note_id, fingerprint)
                         SELECT $1, $2, $3, $4
                         WHERE NOT EXISTS (SELECT 1 FROM casegate_note
                                           WHERE sender_orgnr = $1 AND request_id = $2)
                         ON CONFLICT (sender_orgnr, request_id) DO NOTHING",
                        &[&sender, &request_id, &id, &fingerprint.as_slice()],
                    )
                    .await?;
                if claimed == 1 {
                    // The insert's check saw the notes as they were when it began; a note
                    // stored under this request id since then makes the claim void.
                    if let Some(existing) = stored_request(&client, &sender, request_id).await? {
                        client
                            .execute_cached(
                                "DELETE FROM casegate_note_claim
                                 WHERE sender_orgnr = $1 AND request_id = $2 AND note_id = $3",
                                &[&sender, &request_id, &id],
                            )
                            .await?;
                        return Ok(Err(existing));
                    }
                    return Ok(Ok(()));
                }
                let held = client
                    .query_opt_cached(
                        "SELECT note_id, fingerprint FROM casegate_note_claim
                         WHERE sender_orgnr = $1 AND request_id = $2
                         UNION ALL
                         SELECT id, fingerprint FROM casegate_note
                         WHERE sender_orgnr = $1 AND request_id = $2
                         LIMIT 1",
                        &[&sender, &request_id],
                    )
                    .await?;
                if let Some(row) = held {
                    let fingerprint: &[u8] = row.get(1);
                    return Ok(Err(Existing {
                        id: row.get(0),
                        fingerprint: fingerprint.try_into().map_err(|_| {
                            NoteError::Corrupt("a fingerprint that is not 32 bytes".into())
                        })?,
                    }));
                }
                // Given back between the two statements: try again.
            }
            Err(NoteError::Failed("a request id's claim kept changing".into()).into())
        })
        .await
    }

    /// Gives a claimed request id back; a stored note keeps its own.
    ///
    /// # Errors
    /// A database failure.
    pub async fn release(&self, sender: OrgNumber, request_id: &str) -> Result<(), NoteError> {
        let sender = sender.to_string();
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            client
                .execute_cached(
                    "DELETE FROM casegate_note_claim WHERE sender_orgnr = $1 AND request_id = $2",
                    &[&sender, &request_id],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Stores a new note in state `Pending` (its claim, if any, becomes the note's own).
    ///
    /// # Errors
    /// [`NoteError::Corrupt`] when a note with this id, or this sender's request id, exists;
    /// a database failure.
    pub async fn stage_pending(&self, note: &Note) -> Result<(), NoteError> {
        retrying(&self.db, || async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            insert(&tx, note).await?;
            tx.execute_cached(
                "DELETE FROM casegate_note_claim WHERE sender_orgnr = $1 AND request_id = $2",
                &[&note.sender.orgnr.to_string(), &note.request_id],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Puts a pending note in its recipient's inbox, naming its audit entry; a note no longer
    /// pending is left as it is. Returns the note as stored.
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a database failure.
    pub async fn make_deliverable(&self, note: &Note, audit_index: u64) -> Result<Note, NoteError> {
        self.advance(&note.id, |n| made_deliverable(n, audit_index))
            .await
    }

    /// Records that a note was streamed to its recipient.
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a database failure.
    pub async fn mark_delivered(&self, id: &Uuid) -> Result<(), NoteError> {
        self.advance(id, |n| !std::mem::replace(&mut n.delivered, true))
            .await
            .map(drop)
    }

    /// Takes a deliverable note out of the inbox at `at`; its body stays until
    /// `purge_after`. The same acknowledgement again is answered as the first was.
    ///
    /// # Errors
    /// [`NoteError::NotDeliverable`] for a note in another state; [`NoteError::NotFound`];
    /// a database failure.
    pub async fn acknowledge(
        &self,
        id: &Uuid,
        at: Timestamp,
        purge_after: Timestamp,
    ) -> Result<Note, NoteError> {
        let note = self
            .advance(id, |n| acknowledged(n, at, purge_after))
            .await?;
        if note.state != NoteState::Acknowledged || note.acknowledged_at != Some(at) {
            return Err(NoteError::NotDeliverable(note.state.code()));
        }
        Ok(note)
    }

    /// Deletes a note's body and takes it out of the inbox, for good (a purged note keeps its
    /// first purge time).
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a database failure.
    pub async fn purge(&self, id: &Uuid) -> Result<Note, NoteError> {
        let at = now();
        self.advance(id, |n| purged(n, at)).await
    }

    /// Applies `change` to note `id` under its row lock (see [`advance_in`]).
    async fn advance(
        &self,
        id: &Uuid,
        change: impl Fn(&mut Note) -> bool,
    ) -> Result<Note, NoteError> {
        retrying(&self.db, || async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            let note = advance_in(&tx, id, &change).await?;
            tx.commit().await?;
            Ok(note)
        })
        .await
    }

    /// Notes relying on `consent` that are pending or deliverable and were never delivered.
    ///
    /// # Errors
    /// A database failure or an unreadable note.
    pub async fn undelivered_for(&self, consent: &ConsentId) -> Result<Vec<Note>, NoteError> {
        let consent = Uuid::from_bytes(*consent.as_bytes());
        self.select(
            "SELECT record, progress FROM casegate_note
             WHERE consent_id = $1 AND state IN (0, 1) AND NOT delivered ORDER BY id",
            &[&consent],
        )
        .await
    }

    /// Forgets a pending note whose audit entry never became durable; its request id is
    /// free again.
    ///
    /// # Errors
    /// A database failure.
    pub async fn drop_pending(&self, note: &Note) -> Result<(), NoteError> {
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            client
                .execute_cached(
                    "DELETE FROM casegate_note WHERE id = $1 AND state = 0",
                    &[&note.id],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Forgets up to `max` notes purged at or before `before`, oldest purge first; their
    /// request ids are free again. Returns how many.
    ///
    /// # Errors
    /// A database failure.
    pub async fn forget_purged(&self, before: Timestamp, max: usize) -> Result<usize, NoteError> {
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            let forgotten = client
                .execute_cached(
                    "DELETE FROM casegate_note WHERE id IN (
                         SELECT id FROM casegate_note WHERE state = 3 AND purged_at <= $1
                         ORDER BY purged_at, id LIMIT $2)",
                    &[&before.0, &limit(max)],
                )
                .await?;
            Ok(usize::try_from(forgotten).unwrap_or(usize::MAX))
        })
        .await
    }

    /// One note.
    ///
    /// # Errors
    /// [`NoteError::NotFound`]; a database failure or an unreadable note.
    pub async fn get(&self, id: &Uuid) -> Result<Note, NoteError> {
        self.select(
            "SELECT record, progress FROM casegate_note WHERE id = $1",
            &[id],
        )
        .await?
        .pop()
        .ok_or(NoteError::NotFound)
    }

    /// Every note still pending.
    ///
    /// # Errors
    /// A database failure or an unreadable note.
    pub async fn pending(&self) -> Result<Vec<Note>, NoteError> {
        self.select(
            "SELECT record, progress FROM casegate_note WHERE state = 0 ORDER BY id",
            &[],
        )
        .await
    }

    /// Up to `max` deliverable notes in `org`'s inbox after the note `after` (from the start
    /// when `None`), oldest first (by UUIDv7 id).
    ///
    /// # Errors
    /// A database failure or an unreadable note.
    pub async fn inbox_page(
        &self,
        org: OrgNumber,
        after: Option<Uuid>,
        max: usize,
    ) -> Result<Vec<Note>, NoteError> {
        let after = after.unwrap_or(Uuid::nil());
        self.select(
            "SELECT record, progress FROM casegate_note
             WHERE state = 1 AND recipient_orgnr = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&org.to_string(), &after, &limit(max)],
        )
        .await
    }

    /// Notes whose body is due for deletion — acknowledged ones whose purge time is at or
    /// before `now` (by purge time), then deliverable ones disclosed at or before
    /// `ttl_cutoff` (by disclosure time) — at most `max`.
    ///
    /// # Errors
    /// A database failure or an unreadable note.
    pub async fn due(
        &self,
        ttl_cutoff: Timestamp,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<(Note, Expiry)>, NoteError> {
        let retained = self
            .select(
                "SELECT record, progress FROM casegate_note WHERE state = 2 AND purge_after <= $1
                 ORDER BY purge_after, id LIMIT $2",
                &[&now.0, &limit(max)],
            )
            .await?;
        let mut due: Vec<(Note, Expiry)> = retained
            .into_iter()
            .map(|n| (n, Expiry::RetentionElapsed))
            .collect();
        if due.len() < max {
            let waiting = self
                .select(
                    "SELECT record, progress FROM casegate_note WHERE state = 1 AND disclosed_at <= $1
                     ORDER BY disclosed_at, id LIMIT $2",
                    &[&ttl_cutoff.0, &limit(max - due.len())],
                )
                .await?;
            due.extend(waiting.into_iter().map(|n| (n, Expiry::TtlElapsed)));
        }
        Ok(due)
    }

    /// How many notes wait in inboxes.
    ///
    /// # Errors
    /// A database failure.
    pub async fn backlog(&self) -> Result<usize, NoteError> {
        self.count("SELECT count(*) FROM casegate_note WHERE state = 1")
            .await
    }

    /// How many notes are held, purged ones not yet forgotten included.
    ///
    /// # Errors
    /// A database failure.
    pub async fn held(&self) -> Result<usize, NoteError> {
        self.count("SELECT count(*) FROM casegate_note").await
    }

    async fn count(&self, sql: &str) -> Result<usize, NoteError> {
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            let n: i64 = client.query_one_cached(sql, &[]).await?.get(0);
            Ok(usize::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn select(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Note>, NoteError> {
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            let rows = client.query_cached(sql, params).await?;
            Ok(notes_of(&rows)?)
        })
        .await
    }
}

/// Puts a pending note in its recipient's inbox under audit entry `audit_index`; whether it
/// was pending (a note no longer pending is left as it is).
pub(crate) fn made_deliverable(note: &mut Note, audit_index: u64) -> bool {
    if note.state != NoteState::Pending {
        return false;
    }
    note.state = NoteState::Deliverable;
    note.audit_index = Some(audit_index);
    true
}

/// Takes a deliverable note out of the inbox at `at`, its body kept until `purge_after`;
/// whether it was deliverable.
pub(crate) fn acknowledged(note: &mut Note, at: Timestamp, purge_after: Timestamp) -> bool {
    if note.state != NoteState::Deliverable {
        return false;
    }
    note.state = NoteState::Acknowledged;
    note.acknowledged_at = Some(at);
    note.purge_after = Some(purge_after);
    true
}

/// Purges `note` at `at` (its body deleted, out of the inbox); whether it changed (a note
/// purged before keeps its first purge time).
pub(crate) fn purged(note: &mut Note, at: Timestamp) -> bool {
    if note.state == NoteState::Purged {
        return false;
    }
    note.state = NoteState::Purged;
    note.sealed = None;
    note.purged_at = Some(at);
    true
}

/// Applies `change` to note `id` in `client`'s transaction, under its row lock, storing it if
/// `change` says it changed (the note record too when its sealed part went). Returns the
/// note as stored.
pub(crate) async fn advance_in(
    client: &impl GenericClient,
    id: &Uuid,
    change: impl Fn(&mut Note) -> bool,
) -> Result<Note, Failure> {
    changed_in(client, id, change).await.map(|(note, _)| note)
}

/// [`advance_in`], also saying whether `change` changed the note.
pub(crate) async fn changed_in(
    client: &impl GenericClient,
    id: &Uuid,
    change: impl Fn(&mut Note) -> bool,
) -> Result<(Note, bool), Failure> {
    let row = client
        .query_opt_cached(
            "SELECT record, progress FROM casegate_note WHERE id = $1 FOR UPDATE",
            &[id],
        )
        .await?
        .ok_or(NoteError::NotFound)?;
    let mut note = note_of(&row)?;
    let sealed_before = note.sealed.is_some();
    let changed = change(&mut note);
    if changed {
        // The note record is written again only when its sealed part is deleted.
        let record = (sealed_before && note.sealed.is_none()).then(|| encode_note(&note));
        client
            .execute_cached(
                "UPDATE casegate_note SET state = $2, delivered = $3, purge_after = $4,
                 purged_at = $5, progress = $6, record = COALESCE($7, record)
                 WHERE id = $1",
                &[
                    id,
                    &state_code(note.state),
                    &note.delivered,
                    &note.purge_after.map(|t| t.0),
                    &note.purged_at.map(|t| t.0),
                    &progress_of(&note),
                    &record,
                ],
            )
            .await?;
    }
    Ok((note, changed))
}

/// Puts each pending note of `notes` (id, audit index) in its recipient's inbox under its
/// audit entry, in `client`'s transaction (the audit log's batch that gave the entries their
/// indexes): the notes locked in id order (the order every flow locks notes in), then
/// updated together. A note no longer pending (purged meanwhile) or no longer held is left as
/// it is.
///
/// # Errors
/// A database failure; [`DatabaseError::Corrupt`] for a stored note that does not decode.
pub(crate) async fn make_deliverable_in(
    client: &impl GenericClient,
    notes: &[(Uuid, u64)],
) -> Result<(), DatabaseError> {
    if notes.is_empty() {
        return Ok(());
    }
    let index_of: std::collections::HashMap<Uuid, u64> = notes.iter().copied().collect();
    let ids: Vec<Uuid> = index_of.keys().copied().collect();
    let rows = client
        .query_cached(
            "SELECT record, progress, id FROM casegate_note WHERE id = ANY($1)
             ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?;
    let (mut changed, mut states, mut progress) = (Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        let id: Uuid = row.get(2);
        let mut note = note_of(row).map_err(|e| DatabaseError::Corrupt(e.to_string()))?;
        if index_of
            .get(&id)
            .is_some_and(|index| made_deliverable(&mut note, *index))
        {
            changed.push(id);
            states.push(state_code(note.state));
            progress.push(progress_of(&note));
        }
    }
    if !changed.is_empty() {
        client
            .execute_cached(
                "UPDATE casegate_note SET state = u.state, progress = u.progress
                 FROM UNNEST($1::UUID[], $2::SMALLINT[], $3::BYTEA[]) AS u(id, state, progress)
                 WHERE casegate_note.id = u.id",
                &[&changed, &states, &progress],
            )
            .await?;
    }
    Ok(())
}

/// The note `sender` (its organisation number as text) stored under `request_id`, if any.
///
/// # Errors
/// A database failure, or a stored fingerprint that is not 32 bytes.
pub(crate) async fn stored_request(
    client: &impl GenericClient,
    sender: &str,
    request_id: &str,
) -> Result<Option<Existing>, Failure> {
    let Some(row) = client
        .query_opt_cached(
            "SELECT id, fingerprint FROM casegate_note WHERE sender_orgnr = $1 AND request_id = $2",
            &[&sender, &request_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let fingerprint: &[u8] = row.get(1);
    Ok(Some(Existing {
        id: row.get(0),
        fingerprint: fingerprint
            .try_into()
            .map_err(|_| NoteError::Corrupt("a fingerprint that is not 32 bytes".into()))?,
    }))
}

/// Inserts `note` (in any state), failing if its id or its sender's request id is taken.
pub(crate) async fn insert(client: &impl GenericClient, note: &Note) -> Result<(), Failure> {
    let inserted = client
        .execute_cached(
            "INSERT INTO casegate_note (id, sender_orgnr, request_id, fingerprint, recipient_orgnr,
                 consent_id, state, delivered, disclosed_at, purge_after, purged_at, record, progress)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT DO NOTHING",
            &[
                &note.id,
                &note.sender.orgnr.to_string(),
                &note.request_id,
                &note.fingerprint.as_slice(),
                &note.recipient_org.to_string(),
                &Uuid::from_bytes(*note.consent_id.as_bytes()),
                &state_code(note.state),
                &note.delivered,
                &note.disclosed_at.0,
                &note.purge_after.map(|t| t.0),
                &note.purged_at.map(|t| t.0),
                &encode_note(note),
                &progress_of(note),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(NoteError::Corrupt(format!(
            "note {} or its sender's request id exists already",
            note.id
        ))
        .into());
    }
    Ok(())
}
