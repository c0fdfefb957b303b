//! Consents in PostgreSQL (DESIGN §7): one row per subject in `casegate_consent_subject`, the
//! lock every change about the subject takes (`FOR UPDATE`) and every decision shares (`FOR
//! SHARE`), and every version of every consent in `casegate_consent_version`: the embedded
//! store's encoding (`casegate_consent::store::encode`) sealed with the note keyring
//! ([`Consents::seal`]). Subjects are keyed by their pseudonym (HMAC-SHA-256 under the
//! deployment's pseudonym key); no identity number, name or reason is stored in the clear.
//!
//! The operations are those of [`ConsentStorage`](casegate_consent::storage::ConsentStorage),
//! asynchronous, each one transaction, retried on a serialization failure or deadlock; the
//! record rules (what a grant or withdrawal makes of a version) are the consent crate's own
//! (`store::next_version`, `store::withdraw`).

use std::{future::Future, sync::Arc};

use casegate_consent::{
    SubjectId, Vocabulary,
    decision::{self, Decision, DisclosureRequest},
    record::{Actor, ConsentId, ConsentRecord, Evidence, NewConsent, Status, Timestamp},
    store::{self, LoggedChange, LostGrants, Reconciled, StoreError},
};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::Prepared as _;
use super::{Database, DatabaseError};
use crate::crypto::{keyring::Keyring, pseudonym::Pseudonymizer};

/// What a sealed record is bound to: a label, its consent id and version.
fn aad(id: &Uuid, version: u32) -> Vec<u8> {
    let mut aad = b"casegate.consent.v1".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// `id` as the `UUID` column holds it.
fn uuid(id: &ConsentId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

/// The stored status codes (`casegate_consent_version.status`).
fn status_code(status: Status) -> i16 {
    match status {
        Status::Active => 0,
        Status::Superseded => 1,
        Status::Withdrawn => 2,
    }
}

/// Why an attempt failed.
pub(crate) type Failure = super::Failure<StoreError>;

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Rule(e)
    }
}

/// A database failure as the consent store's error (logged and answered as its I/O failure).
fn store_error(e: DatabaseError) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}

/// Runs `attempt` (one transaction) as [`Database::retrying`] does, answering with the
/// store's own error.
async fn retrying<T, F: Future<Output = Result<T, Failure>>>(
    db: &Database,
    attempt: impl FnMut() -> F,
) -> Result<T, StoreError> {
    db.retrying(attempt)
        .await
        .map_err(|e| e.into_rule(store_error))
}

/// The deployment's consents.
#[derive(Clone)]
pub struct Consents {
    db: Database,
    pseudonyms: Arc<Pseudonymizer>,
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for Consents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consents").field("db", &self.db).finish()
    }
}

impl Consents {
    /// Consents in `db` (schema migrated), subjects keyed by `pseudonyms`, records sealed with
    /// `keyring` (the note keyring: its current key seals, every key in it opens).
    pub fn new(db: Database, pseudonyms: Arc<Pseudonymizer>, keyring: Arc<Keyring>) -> Self {
        Self {
            db,
            pseudonyms,
            keyring,
        }
    }

    /// The bytes stored for `record`: its store encoding sealed with AES-256-GCM under the
    /// keyring's current key, bound (as associated data) to its consent id and version, laid
    /// out as key id length (1 byte), key id, nonce (12 bytes), ciphertext and tag. The
    /// database so holds no identity number, name or reason in the clear.
    ///
    /// # Errors
    /// [`StoreError::Io`] when sealing fails (a key id longer than 255 bytes, or the
    /// system's random number generator).
    pub fn seal(&self, record: &ConsentRecord) -> Result<Vec<u8>, StoreError> {
        let sealed = self
            .keyring
            .seal(
                &store::encode(record),
                &aad(&uuid(&record.id), record.version),
            )
            .map_err(|e| {
                StoreError::Io(std::io::Error::other(format!("sealing a consent: {e}")))
            })?;
        let key_id = u8::try_from(sealed.key_id.len()).map_err(|_| {
            StoreError::Io(std::io::Error::other(
                "a keyring key id longer than 255 bytes",
            ))
        })?;
        let mut out = Vec::with_capacity(1 + sealed.key_id.len() + 12 + sealed.ciphertext.len());
        out.push(key_id);
        out.extend_from_slice(sealed.key_id.as_bytes());
        out.extend_from_slice(&sealed.nonce);
        out.extend_from_slice(&sealed.ciphertext);
        Ok(out)
    }

    /// The record a row (`consent_id`, `version`, `record`) holds, opened.
    fn record_of(&self, row: &tokio_postgres::Row) -> Result<ConsentRecord, StoreError> {
        let (id, version, bytes): (Uuid, i32, &[u8]) =
            (row.get("consent_id"), row.get("version"), row.get("record"));
        let corrupt =
            |why: &str| StoreError::Corrupt(format!("consent {id} version {version}: {why}"));
        let version = u32::try_from(version).map_err(|_| corrupt("a negative version"))?;
        let (&len, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
        let len = usize::from(len);
        if rest.len() < len + 12 {
            return Err(corrupt("cut short"));
        }
        let (key_id, rest) = rest.split_at(len);
        let (nonce, ciphertext) = rest.split_at(12);
        let sealed = casegate_notes::Sealed {
            key_id: String::from_utf8(key_id.to_vec())
                .map_err(|_| corrupt("a key id that is not UTF-8"))?,
            nonce: nonce.try_into().map_err(|_| corrupt("cut short"))?,
            ciphertext: ciphertext.to_vec(),
        };
        let plain = self
            .keyring
            .open(&sealed, &aad(&id, version))
            .map_err(|e| corrupt(&e.to_string()))?;
        let record = store::decode(&plain)?;
        if uuid(&record.id) != id || record.version != version {
            return Err(corrupt("it holds another version"));
        }
        Ok(record)
    }

    /// The subject's key in the tables: its pseudonym.
    pub(crate) fn key(&self, subject: &SubjectId) -> Vec<u8> {
        self.pseudonyms.pseudonym(subject).to_vec()
    }

    /// The record a grant would store (see `ConsentStorage::prepare_grant`). Stores nothing.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::SubjectMismatch`], [`StoreError::NotActive`];
    /// a database failure.
    pub async fn prepare_grant(
        &self,
        new: NewConsent,
        supersedes: Option<ConsentId>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        let current = match supersedes {
            Some(id) => Some(self.get(&id, None).await?),
            None => None,
        };
        store::next_version(new, current, now)
    }

    /// Stores a prepared record, superseding the version before it, in one transaction under
    /// the subject's lock.
    ///
    /// # Errors
    /// [`StoreError::NotActive`] (`changed meanwhile`) when the consent changed since the
    /// record was prepared; a database failure.
    pub async fn commit_grant(&self, record: &ConsentRecord) -> Result<(), StoreError> {
        retrying(&self.db, || self.try_commit_grant(record)).await
    }

    async fn try_commit_grant(&self, record: &ConsentRecord) -> Result<(), Failure> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        commit_grant_in(&tx, self, record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Withdraws the newest version of `id` at `now`, for good, under the subject's lock, and
    /// returns it withdrawn.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::AlreadyWithdrawn`]; a database failure.
    pub async fn withdraw(
        &self,
        id: &ConsentId,
        by: Actor,
        reason: Option<String>,
        evidence: Option<Evidence>,
        now: Timestamp,
    ) -> Result<ConsentRecord, StoreError> {
        retrying(&self.db, || {
            self.try_restate(id, None, |record| {
                store::withdraw(record, by.clone(), reason.clone(), evidence.clone(), now)
                    .map(|()| true)
            })
        })
        .await
        .map(|(record, _)| record)
    }

    /// Applies `change` to version `version` of `id` (`None`: the newest) under the
    /// subject's lock (see [`restate_in`]), in a transaction of its own.
    async fn try_restate(
        &self,
        id: &ConsentId,
        version: Option<u32>,
        change: impl Fn(&mut ConsentRecord) -> Result<bool, StoreError>,
    ) -> Result<(ConsentRecord, bool), Failure> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let restated = restate_in(&tx, self, id, version, change).await?;
        tx.commit().await?;
        Ok(restated)
    }

    /// One version of `id` (`None`: the newest).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; a database failure or an unreadable record.
    pub async fn get(
        &self,
        id: &ConsentId,
        version: Option<u32>,
    ) -> Result<ConsentRecord, StoreError> {
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            read(&client, self, id, version).await
        })
        .await
    }

    /// Every version of every consent about `subject`, ordered by consent id, then version.
    ///
    /// # Errors
    /// A database failure or an unreadable record.
    pub async fn for_subject(&self, subject: &SubjectId) -> Result<Vec<ConsentRecord>, StoreError> {
        let key = self.key(subject);
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            let rows = client
                .query_cached(
                    "SELECT consent_id, version, record FROM casegate_consent_version WHERE subject_key = $1
                     ORDER BY consent_id, version",
                    &[&key],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| self.record_of(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The disclosure decision for `request` about `subject` at `at`, over the subject's
    /// current versions, read under a share lock on the subject's row: a withdrawal
    /// committing meanwhile is waited for, and seen.
    ///
    /// # Errors
    /// A database failure or an unreadable record.
    pub async fn decide(
        &self,
        subject: &SubjectId,
        request: &DisclosureRequest,
        at: Timestamp,
        vocabulary: &Vocabulary,
    ) -> Result<Decision, StoreError> {
        let key = self.key(subject);
        retrying(&self.db, || async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            let (decided, _) = decide_in(&tx, self, &key, request, at, vocabulary).await?;
            tx.commit().await?;
            Ok(decided)
        })
        .await
    }

    /// The audit log size up to which consents are reconciled with the log; `None` before
    /// the first reconciliation.
    ///
    /// # Errors
    /// A database failure.
    pub async fn reconciled_through(&self) -> Result<Option<u64>, StoreError> {
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            Ok(client
                .query_opt_cached(
                    "SELECT reconciled_through FROM casegate_consent_mark WHERE id = 1",
                    &[],
                )
                .await?
                .map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
        })
        .await
    }

    /// Records that consents are reconciled with the log up to `size` entries.
    ///
    /// # Errors
    /// A database failure.
    pub async fn set_reconciled_through(&self, size: u64) -> Result<(), StoreError> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        retrying(&self.db, || async {
            let client = self.db.client().await?;
            client
                .execute_cached(
                    "INSERT INTO casegate_consent_mark (id, reconciled_through) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET reconciled_through = EXCLUDED.reconciled_through",
                    &[&size],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Brings consents in line with one change the audit log holds (idempotent), with the
    /// rules of the embedded store's reconciliation.
    ///
    /// # Errors
    /// A database failure or an unreadable record.
    pub async fn reconcile(
        &self,
        change: &LoggedChange,
        lost_grants: LostGrants,
    ) -> Result<Reconciled, StoreError> {
        match change {
            LoggedChange::Granted {
                id,
                version,
                record_sha256,
            } => match self.get(id, Some(*version)).await {
                Ok(held) if held.record_hash() == *record_sha256 => Ok(Reconciled::InStore),
                Ok(_) => Ok(Reconciled::Different),
                Err(StoreError::NotFound) => {
                    let previous_superseded = match *version {
                        _ if lost_grants == LostGrants::Report => false,
                        1 => false,
                        v => match retrying(&self.db, || {
                            self.try_restate(id, Some(v - 1), store::supersede_if_active)
                        })
                        .await
                        {
                            Ok((_, changed)) => changed,
                            Err(StoreError::NotFound) => false,
                            Err(e) => return Err(e),
                        },
                    };
                    Ok(Reconciled::GrantLost {
                        previous_superseded,
                    })
                }
                Err(e) => Err(e),
            },
            LoggedChange::Withdrawn {
                id,
                version,
                by,
                at,
            } => {
                let restated = retrying(&self.db, || {
                    self.try_restate(id, Some(*version), |record| {
                        store::reapply_withdrawal(record, by, *at)
                    })
                })
                .await;
                match restated {
                    Ok((_, true)) => Ok(Reconciled::WithdrawalReapplied),
                    Ok((_, false)) => Ok(Reconciled::InStore),
                    Err(StoreError::NotFound) => Ok(Reconciled::WithdrawnNotHeld),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// Stores a prepared record in `client`'s transaction, superseding
/// the version before it, holding the subject's lock until the transaction ends.
///
/// # Errors
/// [`StoreError::NotActive`] (`changed meanwhile`) when the consent changed since the record
/// was prepared; a database failure.
pub(crate) async fn commit_grant_in(
    client: &impl GenericClient,
    consents: &Consents,
    record: &ConsentRecord,
) -> Result<(), Failure> {
    let key = consents.key(&record.subject);
    lock_subject(client, &key).await?;
    let id = uuid(&record.id);
    let newest = client
        .query_opt_cached(
            "SELECT version, status FROM casegate_consent_version
             WHERE consent_id = $1 ORDER BY version DESC LIMIT 1",
            &[&id],
        )
        .await?
        .map(|row| (row.get::<_, i32>(0), row.get::<_, i16>(1)));
    let expected = i32::try_from(record.version).unwrap_or(i32::MAX) - 1;
    match newest {
        None if expected == 0 => {}
        Some((version, status)) if version == expected && status == status_code(Status::Active) => {
            client
                .execute_cached(
                    "UPDATE casegate_consent_version SET status = $3, record = $4
                     WHERE consent_id = $1 AND version = $2",
                    &[
                        &id,
                        &version,
                        &status_code(Status::Superseded),
                        &superseded_bytes(client, consents, id, version).await?,
                    ],
                )
                .await?;
        }
        _ => return Err(StoreError::NotActive("changed meanwhile").into()),
    }
    client
        .execute_cached(
            "INSERT INTO casegate_consent_version (consent_id, version, subject_key, status, record)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &id,
                &i32::try_from(record.version).unwrap_or(i32::MAX),
                &key,
                &status_code(record.status),
                &consents.seal(record)?,
            ],
        )
        .await?;
    Ok(())
}

/// Applies `change` to version `version` of `id` (`None`: the newest) in `client`'s
/// transaction, holding the subject's lock until it ends, and stores it if `change` says it
/// changed. Returns the record and that.
pub(crate) async fn restate_in(
    client: &impl GenericClient,
    consents: &Consents,
    id: &ConsentId,
    version: Option<u32>,
    change: impl Fn(&mut ConsentRecord) -> Result<bool, StoreError>,
) -> Result<(ConsentRecord, bool), Failure> {
    let Some(row) = client
        .query_opt_cached(
            "SELECT subject_key FROM casegate_consent_version WHERE consent_id = $1 LIMIT 1",
            &[&uuid(id)],
        )
        .await?
    else {
        return Err(StoreError::NotFound.into());
    };
    let key: Vec<u8> = row.get(0);
    lock_subject(client, &key).await?;
    let mut record = read(client, consents, id, version).await?;
    let changed = change(&mut record)?;
    if changed {
        client
            .execute_cached(
                "UPDATE casegate_consent_version SET status = $3, record = $4
                 WHERE consent_id = $1 AND version = $2",
                &[
                    &uuid(id),
                    &i32::try_from(record.version).unwrap_or(i32::MAX),
                    &status_code(record.status),
                    &consents.seal(&record)?,
                ],
            )
            .await?;
    }
    Ok((record, changed))
}

/// The decision over the subject keyed `key`, in `client`'s transaction, holding a share lock
/// on the subject's row until it ends (the workflows decide and record in one transaction),
/// and for a refusal the consent version nearest to permitting it, if any.
///
/// # Errors
/// A database failure or an unreadable record.
pub(crate) async fn decide_in(
    client: &impl GenericClient,
    consents: &Consents,
    key: &[u8],
    request: &DisclosureRequest,
    at: Timestamp,
    vocabulary: &Vocabulary,
) -> Result<(Decision, Option<ConsentRecord>), Failure> {
    client
        .query_opt_cached(
            "SELECT changes FROM casegate_consent_subject WHERE subject_key = $1 FOR SHARE",
            &[&key],
        )
        .await?;
    // The current version of each consent: the one not superseded.
    let rows = client
        .query_cached(
            "SELECT consent_id, version, record FROM casegate_consent_version WHERE subject_key = $1 AND status <> $2
             ORDER BY consent_id",
            &[&key, &status_code(Status::Superseded)],
        )
        .await?;
    let records = rows
        .iter()
        .map(|r| consents.record_of(r))
        .collect::<Result<Vec<_>, _>>()?;
    let decision = decision::decide(request, &records, at, vocabulary);
    let nearest = match &decision {
        Decision::Deny(deny) => deny.nearest.and_then(|(id, version)| {
            records
                .into_iter()
                .find(|r| r.id == id && r.version == version)
        }),
        Decision::Permit(_) => None,
    };
    Ok((decision, nearest))
}

/// Takes the subject's row lock (creating the row on its first consent); every change about
/// the subject counts in `changes`.
async fn lock_subject(client: &impl GenericClient, key: &[u8]) -> Result<(), Failure> {
    client
        .execute_cached(
            "INSERT INTO casegate_consent_subject (subject_key, changes) VALUES ($1, 1)
             ON CONFLICT (subject_key) DO UPDATE
             SET changes = casegate_consent_subject.changes + 1",
            &[&key],
        )
        .await?;
    Ok(())
}

/// Version `version` of `id` (`None`: the newest).
async fn read(
    client: &impl GenericClient,
    consents: &Consents,
    id: &ConsentId,
    version: Option<u32>,
) -> Result<ConsentRecord, Failure> {
    let row = match version {
        Some(v) => {
            client
                .query_opt_cached(
                    "SELECT consent_id, version, record FROM casegate_consent_version WHERE consent_id = $1 AND version = $2",
                    &[&uuid(id), &i32::try_from(v).unwrap_or(i32::MAX)],
                )
                .await?
        }
        None => {
            client
                .query_opt_cached(
                    "SELECT consent_id, version, record FROM casegate_consent_version WHERE consent_id = $1
                     ORDER BY version DESC LIMIT 1",
                    &[&uuid(id)],
                )
                .await?
        }
    };
    let row = row.ok_or(StoreError::NotFound)?;
    Ok(consents.record_of(&row)?)
}

/// The stored bytes of version `version` of `id`, marked superseded.
async fn superseded_bytes(
    client: &impl GenericClient,
    consents: &Consents,
    id: Uuid,
    version: i32,
) -> Result<Vec<u8>, Failure> {
    let mut record = read(
        client,
        consents,
        &ConsentId::from_bytes(*id.as_bytes()),
        u32::try_from(version).ok(),
    )
    .await?;
    record.status = Status::Superseded;
    Ok(consents.seal(&record)?)
}
