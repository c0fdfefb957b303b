//! The audit log in PostgreSQL: one log (one origin, one signing key) with a writer on every
//! replica, sequenced as Tessera's database drivers do it (DESIGN §7).
//!
//! A writer puts an entry's canonical bytes into `casegate_audit_outbox` under an id of its
//! own (UUID v7) — in the transaction of the change the entry records ([`AuditLog::enqueue`])
//! or alone ([`AuditLog::append`]) — and waits ([`AuditLog::wait`]). Each replica runs a
//! sequencer: it takes the tree-state row's lock (`SELECT … FOR UPDATE`), takes the outbox
//! entries in the order the database's clock queued them (`queued_at`, never a replica's own
//! clock: a change that waited for another's lock is logged after it), gives them the next
//! contiguous indexes, extends the RFC 6962 tree (nodes
//! of complete subtrees stored), signs a C2SP checkpoint over the new size and root, and
//! commits all of it in one transaction; whichever replica holds the lock sequences everyone's
//! entries. A waiter learns its index by its id, so an ambiguous commit is settled by looking
//! the id up, and a replica that dies leaves its queued entries to the others.
//!
//! Entry times never go backwards in the log (the offline verifier checks it), but replicas'
//! clocks differ: an entry older than its predecessor is given its predecessor's time when
//! sequenced (the rest of its bytes unchanged), so an index's time is at most the replicas'
//! clock skew later than the writer's.
//!
//! A `disclosure permitted` entry queued with its note makes that note deliverable in the batch
//! that sequences it, so a note is deliverable exactly when its entry is in the log (DESIGN
//! §4's invariant, here by one transaction rather than by recovery).
//!
//! Entry bytes, checkpoints and proofs are those of the embedded log: `casegate audit
//! verify` checks an export of this log as it checks that one.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use casegate_audit::{
    checkpoint::{Checkpoint, SignedCheckpoint, Signer, Verifier},
    entry::Entry,
    log::{AppendError, Appended, ReadError},
    merkle::{self, CompactRange, Hash},
};
use deadpool_postgres::GenericClient;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

mod query;

use query::query_columns;

use super::Prepared as _;
use super::{Database, DatabaseError};

/// Entries per sequenced batch at most.
const MAX_BATCH: i64 = 1024;

/// How often a sequencer looks at the outbox when nothing woke it: entries another replica
/// queued and could not sequence (it died) wait at most this long.
const POLL: Duration = Duration::from_secs(1);

/// What a replica knows of the log: the newest checkpoint it has seen and what it covers.
#[derive(Debug, Clone)]
struct Published {
    size: u64,
    /// Microseconds since the Unix epoch.
    newest_time: Option<i64>,
    checkpoint: Arc<SignedCheckpoint>,
}

type Waiters = HashMap<Uuid, oneshot::Sender<Result<Appended, AppendError>>>;

/// One replica's handle on the deployment's audit log.
pub struct AuditLog {
    shared: Arc<Shared>,
    sequencer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    /// Set by [`AuditLog::close`]: waits from then on are answered `Closed` at once.
    closed: std::sync::atomic::AtomicBool,
    db: Database,
    /// Whether each batch notifies [`super::feed::CHANNEL`] (off on engines without NOTIFY).
    announce: bool,
    signer: Signer,
    verifier: Verifier,
    origin: String,
    published: RwLock<Published>,
    waiters: Mutex<Waiters>,
    wake: Notify,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.shared.origin)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// Why an entry could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The entry is larger than the log accepts (1 MiB); holds its length.
    #[error("entry of {0} bytes is larger than the log accepts")]
    TooLarge(usize),
    /// The statement failed.
    #[error(transparent)]
    Database(DatabaseError),
}

/// A statement's failure as the log's callers see it.
fn failed(e: DatabaseError) -> AppendError {
    AppendError::Failed(e.to_string())
}

fn read_failed(e: DatabaseError) -> ReadError {
    ReadError::Io(std::io::Error::other(e.to_string()))
}

impl AuditLog {
    /// Opens the log in `db` (schema migrated), creating its tree-state row — an empty tree
    /// with a checkpoint signed by `signer` — if there is none, and starts this replica's
    /// sequencer on the current tokio runtime. With `announce`, each batch notifies
    /// [`super::feed::CHANNEL`] when it commits (`pg_notify`; off for an engine without
    /// it, whose replicas then poll).
    ///
    /// # Errors
    /// [`DatabaseError::Corrupt`] when the stored checkpoint is for another origin than
    /// `origin`, or not signed by `signer`'s key (one log, one key); a database failure.
    pub async fn open(
        db: Database,
        signer: Signer,
        origin: &str,
        announce: bool,
    ) -> Result<Self, DatabaseError> {
        let verifier = signer.verifier();
        let empty = signer.sign(&Checkpoint {
            origin: origin.to_owned(),
            size: 0,
            root: merkle::empty_root(),
        });
        let client = db.client().await?;
        client
            .execute_cached(
                "INSERT INTO casegate_audit_tree (id, size, newest_time, frontier, checkpoint)
                 VALUES (1, 0, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
                &[&i64::MIN, &Vec::<u8>::new(), &empty.note],
            )
            .await?;
        drop(client);
        let shared = Arc::new(Shared {
            closed: std::sync::atomic::AtomicBool::new(false),
            db,
            announce,
            signer,
            verifier,
            origin: origin.to_owned(),
            published: RwLock::new(Published {
                size: 0,
                newest_time: None,
                checkpoint: Arc::new(empty),
            }),
            waiters: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        shared.refresh().await?;
        let filled = shared.fill_query_columns().await?;
        if filled > 0 {
            tracing::info!(entries = filled, "audit query columns filled");
        }
        let sequencer = tokio::spawn(sequence(shared.clone()));
        Ok(Self {
            shared,
            sequencer: Mutex::new(Some(sequencer)),
        })
    }

    /// Puts `entry` (canonical bytes) into the outbox through `client` — the transaction of
    /// the change it records, so both commit or neither does — and returns its id for
    /// [`AuditLog::wait`]. With `note`, the entry is that note's `disclosure permitted`: the
    /// batch that gives the entry its index makes the (pending) note deliverable, in the
    /// same transaction — a note is deliverable exactly when its entry is in the log.
    ///
    /// # Errors
    /// [`QueueError::TooLarge`] over 1 MiB; a statement failure (a lost conflict among them,
    /// for the transaction to be tried again).
    pub async fn enqueue(
        client: &impl GenericClient,
        entry: &[u8],
        note: Option<Uuid>,
    ) -> Result<Uuid, QueueError> {
        if entry.len() > casegate_audit::segment::MAX_ENTRY_BYTES {
            return Err(QueueError::TooLarge(entry.len()));
        }
        let id = Uuid::now_v7();
        client
            .execute_cached(
                "INSERT INTO casegate_audit_outbox (id, entry, note_id) VALUES ($1, $2, $3)",
                &[&id, &entry, &note],
            )
            .await
            .map_err(|e| QueueError::Database(e.into()))?;
        Ok(id)
    }

    /// Waits until the entry queued as `id` has its index and a signed checkpoint covers it,
    /// whichever replica sequenced it. Call it after the transaction that queued it
    /// committed.
    ///
    /// # Errors
    /// [`AppendError::Failed`] when no entry was queued as `id` (its transaction rolled
    /// back); [`AppendError::Closed`] when this replica's sequencer stopped first.
    pub async fn wait(&self, id: Uuid) -> Result<Appended, AppendError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self
                .shared
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Checked under the waiters' lock: `close` sets it before it empties them.
            if self
                .shared
                .closed
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(AppendError::Closed);
            }
            waiters.insert(id, tx);
        }
        self.shared.wake.notify_one();
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// The outbox id of the entry queued with note `note` (in the outbox or the log), if one
    /// was: what a repeated request waits on to answer with the first one's receipt.
    ///
    /// # Errors
    /// A database failure.
    pub async fn queued_for_note(&self, note: Uuid) -> Result<Option<Uuid>, DatabaseError> {
        let client = self.shared.db.client().await?;
        Ok(client
            .query_opt_cached(
                "SELECT id FROM casegate_audit_outbox WHERE note_id = $1
                 UNION ALL
                 SELECT outbox_id FROM casegate_audit_entry WHERE note_id = $1",
                &[&note],
            )
            .await?
            .map(|row| row.get(0)))
    }

    /// Queues `entry` in a transaction of its own and waits for it: [`AuditLog::enqueue`]
    /// then [`AuditLog::wait`].
    ///
    /// # Errors
    /// As those two.
    pub async fn append(&self, entry: &[u8]) -> Result<Appended, AppendError> {
        let client = self.shared.db.client().await.map_err(failed)?;
        let id = Self::enqueue(&client, entry, None)
            .await
            .map_err(|e| match e {
                QueueError::TooLarge(n) => AppendError::TooLarge(n),
                QueueError::Database(e) => failed(e),
            })?;
        drop(client);
        self.wait(id).await
    }

    /// Entries covered by the newest checkpoint this replica has seen.
    pub fn size(&self) -> u64 {
        self.shared.published().size
    }

    /// The newest checkpoint this replica has seen; it covers [`AuditLog::size`] entries.
    pub fn checkpoint(&self) -> Arc<SignedCheckpoint> {
        self.shared.published().checkpoint
    }

    /// The newest entry's time (µs since the Unix epoch), if the log has entries.
    pub fn newest_time(&self) -> Option<i64> {
        self.shared.published().newest_time
    }

    /// The verifier of the log's signing key.
    pub fn verifier(&self) -> &Verifier {
        &self.shared.verifier
    }

    /// Reads the tree-state row again: what other replicas sequenced becomes visible.
    ///
    /// # Errors
    /// A database failure, or a stored checkpoint this replica's key did not sign.
    pub async fn refresh(&self) -> Result<(), DatabaseError> {
        self.shared.refresh().await
    }

    /// The canonical bytes of entries `from..to` (clipped to the size), in order.
    ///
    /// # Errors
    /// A database failure.
    pub async fn entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, ReadError> {
        let to = to.min(self.size());
        if from >= to {
            return Ok(Vec::new());
        }
        let client = self.shared.db.client().await.map_err(read_failed)?;
        let rows = client
            .query_cached(
                "SELECT entry FROM casegate_audit_entry WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                &[&as_i64(from), &as_i64(to)],
            )
            .await
            .map_err(|e| read_failed(e.into()))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The canonical bytes of entry `index`.
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] at or past the size; a database failure.
    pub async fn entry(&self, index: u64) -> Result<Vec<u8>, ReadError> {
        self.check_index(index)?;
        self.entries(index, index + 1)
            .await?
            .pop()
            .ok_or(ReadError::OutOfRange {
                index,
                size: self.size(),
            })
    }

    /// The RFC 6962 leaf hash of entry `index`.
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] at or past the size; a database failure.
    pub async fn leaf_hash(&self, index: u64) -> Result<Hash, ReadError> {
        self.check_index(index)?;
        let nodes = self.shared.nodes(&[(0, index)]).await?;
        nodes
            .get(&(0, index))
            .copied()
            .ok_or(ReadError::OutOfRange {
                index,
                size: self.size(),
            })
    }

    /// The root of the tree of the first `size` entries (RFC 6962 §2.1).
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] past the size; a database failure.
    pub async fn root(&self, size: u64) -> Result<Hash, ReadError> {
        self.check_size(size)?;
        self.shared
            .with_nodes(|node| merkle::subtree_root(0, size, &node))
            .await
    }

    /// The audit path of entry `index` in the tree of `size` entries (RFC 6962 §2.1.1).
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] for an index at or past `size` or a size past the log's.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        self.check_size(size)?;
        self.shared
            .with_nodes(|node| merkle::inclusion_proof(index, size, node))
            .await?
            .ok_or(ReadError::OutOfRange { index, size })
    }

    /// The audit paths of entries `indexes` in the tree of `size` entries, in order, their
    /// nodes read together (at most two queries whatever their number).
    ///
    /// # Errors
    /// [`ReadError::OutOfRange`] for an index at or past `size` or a size past the log's.
    pub async fn inclusion_proofs(
        &self,
        indexes: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, ReadError> {
        self.check_size(size)?;
        let proofs = self
            .shared
            .with_nodes(|node| {
                indexes
                    .iter()
                    .map(|index| merkle::inclusion_proof(*index, size, node))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        indexes
            .iter()
            .zip(proofs)
            .map(|(index, proof)| {
                proof.ok_or(ReadError::OutOfRange {
                    index: *index,
                    size,
                })
            })
            .collect()
    }

    /// The consistency proof between the trees of `size1` and `size2` entries (RFC 6962
    /// §2.1.2).
    ///
    /// # Errors
    /// [`ReadError::Sizes`] unless `size1 <= size2 <=` the size.
    pub async fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ReadError> {
        if size2 > self.size() {
            return Err(ReadError::Sizes(size1, size2));
        }
        self.shared
            .with_nodes(|node| merkle::consistency_proof(size1, size2, node))
            .await?
            .ok_or(ReadError::Sizes(size1, size2))
    }

    /// Why this replica's sequencer stopped though the log was not closed (it panicked), if
    /// it did: its waiters would wait for the other replicas' sequencers only, so the
    /// replica must stop serving.
    pub fn failure(&self) -> Option<String> {
        if self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return None;
        }
        self.sequencer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|task| task.is_finished())
            .map(|_| "the audit log's sequencer stopped".to_owned())
    }

    /// Stops this replica's sequencer; its waiters, and any later wait, are answered
    /// `Closed`. Entries it queued and did not sequence stay in the outbox for the other
    /// replicas (or its next start).
    pub fn close(&self) {
        {
            let _waiters = self
                .shared
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.shared
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if let Some(task) = self
            .sequencer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn check_index(&self, index: u64) -> Result<(), ReadError> {
        let size = self.size();
        if index >= size {
            return Err(ReadError::OutOfRange { index, size });
        }
        Ok(())
    }

    fn check_size(&self, size: u64) -> Result<(), ReadError> {
        let current = self.size();
        if size > current {
            return Err(ReadError::OutOfRange {
                index: size,
                size: current,
            });
        }
        Ok(())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Indexes and sizes are below 2^63 (the tree's `BIGINT` columns).
fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn hash_of(bytes: &[u8]) -> Result<Hash, DatabaseError> {
    bytes
        .try_into()
        .map_err(|_| DatabaseError::Corrupt(format!("a stored hash of {} bytes", bytes.len())))
}

impl Shared {
    fn published(&self) -> Published {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes the stored state if it is newer than what this replica has seen.
    fn publish(&self, size: u64, newest_time: i64, note: &str) -> Result<(), DatabaseError> {
        let checkpoint = self.verifier.verify(note).map_err(|e| {
            DatabaseError::Corrupt(format!(
                "the audit log's stored checkpoint does not verify with this gateway's key: {e}"
            ))
        })?;
        if checkpoint.origin != self.origin || checkpoint.size != size {
            return Err(DatabaseError::Corrupt(format!(
                "the audit log's stored checkpoint is for {:?} at size {}, not {:?} at size {size}",
                checkpoint.origin, checkpoint.size, self.origin
            )));
        }
        if size > 0 {
            // Every replica's clock reads no earlier than the newest entry any replica logged
            // (`base::clock`), as the embedded log's appends keep it.
            crate::base::clock::raise_floor(newest_time);
        }
        let mut published = self.published.write().unwrap_or_else(|p| p.into_inner());
        if size >= published.size {
            *published = Published {
                size,
                newest_time: (size > 0).then_some(newest_time),
                checkpoint: Arc::new(SignedCheckpoint {
                    checkpoint,
                    note: note.to_owned(),
                }),
            };
        }
        Ok(())
    }

    async fn refresh(&self) -> Result<(), DatabaseError> {
        let client = self.db.client().await?;
        let row = client
            .query_one_cached(
                "SELECT size, newest_time, checkpoint FROM casegate_audit_tree WHERE id = 1",
                &[],
            )
            .await?;
        self.publish(as_u64(row.get(0)), row.get(1), row.get(2))
    }

    /// One batch: under the tree-state row's lock, the oldest outbox entries get the next
    /// indexes, the tree and a new signed checkpoint, all in one transaction. Returns how
    /// many were sequenced.
    async fn pass(&self) -> Result<usize, DatabaseError> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await?;
        let tree = tx
            .query_one_cached(
                "SELECT size, newest_time, frontier, checkpoint FROM casegate_audit_tree
                 WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await?;
        let size = as_u64(tree.get(0));
        let mut newest: i64 = tree.get(1);
        let frontier: Vec<u8> = tree.get(2);
        let outbox = tx
            .query_cached(
                "SELECT id, entry, note_id FROM casegate_audit_outbox ORDER BY queued_at, id LIMIT $1",
                &[&MAX_BATCH],
            )
            .await?;
        if outbox.is_empty() {
            tx.rollback().await?;
            // What other replicas sequenced becomes visible here too, at every poll.
            self.publish(size, newest, tree.get(3))?;
            return Ok(0);
        }
        let hashes = frontier
            .chunks(32)
            .map(hash_of)
            .collect::<Result<Vec<_>, _>>()?;
        let mut range = CompactRange::from_parts(size, hashes).ok_or_else(|| {
            DatabaseError::Setup(format!(
                "the audit tree's frontier does not fit size {size}"
            ))
        })?;
        let n = outbox.len();
        let (mut indexes, mut ids, mut entries, mut leaves, mut times, mut note_ids) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut levels, mut node_indexes, mut node_hashes) = (Vec::new(), Vec::new(), Vec::new());
        let mut notes = Vec::new();
        let (mut kinds, mut subjects) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut org_names, mut org_indexes) = (Vec::new(), Vec::new());
        for row in &outbox {
            let id: Uuid = row.get(0);
            let note_id: Option<Uuid> = row.get(2);
            if let Some(note) = note_id {
                notes.push((note, range.size()));
            }
            note_ids.push(note_id);
            let bytes = no_earlier_than(row.get(1), newest);
            if let Some(time) = Entry::time_of(&bytes) {
                newest = newest.max(time);
            }
            let leaf = merkle::leaf_hash(&bytes);
            let (kind, subject, orgs) = query_columns(&bytes);
            kinds.push(kind);
            subjects.push(subject);
            for org in orgs {
                org_names.push(org);
                org_indexes.push(as_i64(range.size()));
            }
            indexes.push(as_i64(range.size()));
            range.append(leaf, |level, index, hash| {
                if level > 0 {
                    levels.push(i16::try_from(level).unwrap_or(i16::MAX));
                    node_indexes.push(as_i64(index));
                    node_hashes.push(hash.to_vec());
                }
            });
            ids.push(id);
            entries.push(bytes);
            leaves.push(leaf.to_vec());
            times.push(newest);
        }
        tx.execute_cached(
            "INSERT INTO casegate_audit_entry
                 (idx, outbox_id, entry, leaf_hash, time_micros, note_id, kind, subject)
             SELECT * FROM UNNEST($1::BIGINT[], $2::UUID[], $3::BYTEA[], $4::BYTEA[], $5::BIGINT[],
                                  $6::UUID[], $7::SMALLINT[], $8::BYTEA[])",
            &[
                &indexes, &ids, &entries, &leaves, &times, &note_ids, &kinds, &subjects,
            ],
        )
        .await?;
        if !org_names.is_empty() {
            tx.execute_cached(
                "INSERT INTO casegate_audit_org (orgnr, idx)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[]) ON CONFLICT DO NOTHING",
                &[&org_names, &org_indexes],
            )
            .await?;
        }
        if !levels.is_empty() {
            tx.execute_cached(
                "INSERT INTO casegate_audit_node (level, idx, hash)
                 SELECT * FROM UNNEST($1::SMALLINT[], $2::BIGINT[], $3::BYTEA[])",
                &[&levels, &node_indexes, &node_hashes],
            )
            .await?;
        }
        tx.execute_cached(
            "DELETE FROM casegate_audit_outbox WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
        super::notes::make_deliverable_in(&tx, &notes).await?;
        let signed = self.signer.sign(&Checkpoint {
            origin: self.origin.clone(),
            size: range.size(),
            root: range.root(),
        });
        tx.execute_cached(
            "UPDATE casegate_audit_tree SET size = $1, newest_time = $2, frontier = $3, checkpoint = $4
             WHERE id = 1",
            &[
                &as_i64(range.size()),
                &newest,
                &range.hashes().concat(),
                &signed.note,
            ],
        )
        .await?;
        if self.announce {
            // Delivered when (and only if) the batch commits.
            tx.execute_cached(
                "SELECT pg_notify($1, $2)",
                &[&super::feed::CHANNEL, &range.size().to_string()],
            )
            .await?;
        }
        tx.commit().await?;
        self.publish(range.size(), newest, &signed.note)?;
        Ok(n)
    }

    /// Answers every waiter whose entry has an index (by whichever replica), with the newest
    /// checkpoint, which covers it, and fails every waiter whose entry is in neither the
    /// outbox nor the log (its transaction did not commit). Returns whether any is left
    /// waiting.
    async fn settle(&self) -> Result<bool, DatabaseError> {
        let pending: Vec<Uuid> = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        if pending.is_empty() {
            return Ok(false);
        }
        let client = self.db.client().await?;
        // The outbox first: an entry leaves it only by entering the log, in one commit, so
        // one seen in neither afterwards was never queued.
        let queued: HashSet<Uuid> = client
            .query_cached(
                "SELECT id FROM casegate_audit_outbox WHERE id = ANY($1)",
                &[&pending],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows = client
            .query_cached(
                "SELECT outbox_id, idx, leaf_hash FROM casegate_audit_entry WHERE outbox_id = ANY($1)",
                &[&pending],
            )
            .await?;
        drop(client);
        if rows
            .iter()
            .any(|r| as_u64(r.get(1)) >= self.published().size)
        {
            // Sequenced by another replica after this one last looked.
            self.refresh().await?;
        }
        let checkpoint = self.published().checkpoint;
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut logged = HashSet::new();
        for row in &rows {
            let id: Uuid = row.get(0);
            let leaf: Vec<u8> = row.get(2);
            logged.insert(id);
            if let Some(waiter) = waiters.remove(&id) {
                let _ = waiter.send(Ok(Appended {
                    index: as_u64(row.get(1)),
                    leaf_hash: hash_of(&leaf)?,
                    checkpoint: checkpoint.clone(),
                }));
            }
        }
        for id in pending {
            if !queued.contains(&id)
                && !logged.contains(&id)
                && let Some(waiter) = waiters.remove(&id)
            {
                let _ = waiter.send(Err(AppendError::Failed(
                    "the entry is not queued: the transaction that queued it did not commit"
                        .to_owned(),
                )));
            }
        }
        Ok(!waiters.is_empty())
    }

    /// Runs `compute` over the nodes it asks for, fetched in one query: once to learn which
    /// (a proof's shape depends on sizes and indexes alone), then over the fetched hashes.
    async fn with_nodes<T>(
        &self,
        compute: impl Fn(&dyn Fn(u32, u64) -> Result<Hash, Missing>) -> Result<T, Missing>,
    ) -> Result<T, ReadError> {
        let asked = RefCell::new(HashSet::new());
        let _ = compute(&|level, index| {
            asked.borrow_mut().insert((level, index));
            Ok([0; 32])
        });
        let asked: Vec<(u32, u64)> = asked.into_inner().into_iter().collect();
        let nodes = self.nodes(&asked).await?;
        compute(&|level, index| nodes.get(&(level, index)).copied().ok_or(Missing))
            .map_err(|Missing| ReadError::Io(std::io::Error::other("a tree node is missing")))
    }

    /// The stored hashes at `coordinates` (level 0: leaf hashes).
    async fn nodes(
        &self,
        coordinates: &[(u32, u64)],
    ) -> Result<HashMap<(u32, u64), Hash>, ReadError> {
        let (leaves, inner): (Vec<_>, Vec<_>) = coordinates.iter().partition(|(l, _)| *l == 0);
        let leaf_indexes: Vec<i64> = leaves.iter().map(|(_, i)| as_i64(*i)).collect();
        let levels: Vec<i16> = inner
            .iter()
            .map(|(l, _)| i16::try_from(*l).unwrap_or(i16::MAX))
            .collect();
        let node_indexes: Vec<i64> = inner.iter().map(|(_, i)| as_i64(*i)).collect();
        let client = self.db.client().await.map_err(read_failed)?;
        let mut found = HashMap::new();
        let db = |e: tokio_postgres::Error| read_failed(e.into());
        if !leaf_indexes.is_empty() {
            for row in client
                .query_cached(
                    "SELECT idx, leaf_hash FROM casegate_audit_entry WHERE idx = ANY($1)",
                    &[&leaf_indexes],
                )
                .await
                .map_err(db)?
            {
                let hash: Vec<u8> = row.get(1);
                found.insert(
                    (0, as_u64(row.get(0))),
                    hash_of(&hash).map_err(read_failed)?,
                );
            }
        }
        if !levels.is_empty() {
            for row in client
                .query_cached(
                    "SELECT n.level, n.idx, n.hash FROM casegate_audit_node n
                     JOIN UNNEST($1::SMALLINT[], $2::BIGINT[]) AS want (level, idx)
                       ON n.level = want.level AND n.idx = want.idx",
                    &[&levels, &node_indexes],
                )
                .await
                .map_err(db)?
            {
                let level: i16 = row.get(0);
                let hash: Vec<u8> = row.get(2);
                found.insert(
                    (
                        u32::try_from(level).map_err(|_| {
                            ReadError::Io(std::io::Error::other(
                                "a tree node with a negative level",
                            ))
                        })?,
                        as_u64(row.get(1)),
                    ),
                    hash_of(&hash).map_err(read_failed)?,
                );
            }
        }
        Ok(found)
    }
}

/// A node [`Shared::with_nodes`] did not find.
#[derive(Debug)]
struct Missing;

/// `bytes` with its time raised to `newest` if it is older, written over the time in the
/// version-1 header (bytes 2..10, big-endian µs) so nothing else of it changes; bytes whose
/// header is not one this build reads are kept as they are.
fn no_earlier_than(mut bytes: Vec<u8>, newest: i64) -> Vec<u8> {
    if let Some(time) = Entry::time_of(&bytes)
        && time < newest
    {
        bytes[2..10].copy_from_slice(&newest.to_be_bytes());
        debug_assert_eq!(Entry::time_of(&bytes), Some(newest));
    }
    bytes
}

/// Failed passes in a row after which this replica's waiters are answered with the failure
/// (their entries stay queued and are logged once sequencing works again).
const FAILURES_BEFORE_ANSWERING: u32 = 5;

/// This replica's sequencer: a pass whenever a local writer waits (or every [`POLL`]), until
/// the outbox is empty and every local waiter answered. A failed pass is retried with a
/// growing pause; nothing is lost by it (the outbox is durable). After
/// [`FAILURES_BEFORE_ANSWERING`] failures in a row the waiters are answered with the failure
/// rather than left waiting.
async fn sequence(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    let mut failures = 0;
    loop {
        let _ = tokio::time::timeout(POLL, shared.wake.notified()).await;
        loop {
            let step = async {
                // A batch that lost to another replica's is tried again at once.
                let sequenced = shared.db.retrying(|| shared.pass()).await?;
                let waiting = shared.settle().await?;
                Ok::<_, DatabaseError>((sequenced, waiting))
            }
            .await;
            match step {
                Ok((sequenced, waiting)) => {
                    backoff = Duration::from_millis(10);
                    failures = 0;
                    if sequenced == 0 && !waiting {
                        break;
                    }
                    if sequenced == 0 {
                        // Queued but not yet committed by its writer, or in another
                        // replica's batch: look again shortly.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit log sequencing failed; retrying");
                    failures += 1;
                    if failures >= FAILURES_BEFORE_ANSWERING {
                        let reason = format!("the audit log cannot be sequenced: {e}");
                        let waiting = std::mem::take(
                            &mut *shared.waiters.lock().unwrap_or_else(|p| p.into_inner()),
                        );
                        for (_, waiter) in waiting {
                            let _ = waiter.send(Err(AppendError::Failed(reason.clone())));
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
