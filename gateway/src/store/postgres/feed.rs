//! New deliverable notes as every replica learns of them (DESIGN §7, live inboxes): the audit
//! log's index is the cursor — a note becomes deliverable in the batch that logs its entry —
//! and a replica reads the entries past its cursor that made notes deliverable whenever it is
//! told the log grew, feeding them to its open inbox streams.
//!
//! It is told by `LISTEN` on [`CHANNEL`] (each sequenced batch notifies in its transaction)
//! with a slow poll as the safety net, or by polling alone ([`Wakeup::Poll`]: the mode of an
//! engine without LISTEN/NOTIFY, such as CockroachDB). A listening connection that ends is
//! opened again, and the cursor catches up on what came meanwhile, so nothing is missed either
//! way.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::broadcast;

use super::Prepared as _;
use super::{Database, DatabaseError};

/// The notification channel a sequenced batch notifies (its payload: the log's new size).
pub const CHANNEL: &str = "casegate_audit";

pub use crate::api::backend::Deliverable;

/// How a replica learns that the log grew.
#[derive(Debug, Clone, Copy)]
pub enum Wakeup {
    /// `LISTEN` on [`CHANNEL`], and a look every `safety_poll` besides.
    Listen {
        /// How often to look without being told.
        safety_poll: Duration,
    },
    /// A look every so often, no notifications.
    Poll(Duration),
}

/// One replica's feed of newly deliverable notes.
#[derive(Debug)]
pub struct Feed {
    sender: broadcast::Sender<Deliverable>,
    cursor: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    /// Starts the feed on the current tokio runtime, announcing notes made deliverable by
    /// entries from index `from` on.
    pub fn start(db: Database, from: u64, wakeup: Wakeup) -> Self {
        let (sender, _) = broadcast::channel(4096);
        let cursor = Arc::new(AtomicU64::new(from));
        let task = tokio::spawn(run(db, wakeup, sender.clone(), cursor.clone()));
        Self {
            sender,
            cursor,
            task,
        }
    }

    /// Notes made deliverable from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Deliverable> {
        self.sender.subscribe()
    }

    /// Whether the feed's task has ended (it runs until dropped, so only by panicking).
    pub fn stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// The log size the feed has read up to.
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    db: Database,
    wakeup: Wakeup,
    sender: broadcast::Sender<Deliverable>,
    cursor: Arc<AtomicU64>,
) {
    let mut listener = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Err(e) = catch_up(&db, &sender, &cursor).await {
            tracing::warn!(error = %e, "reading newly deliverable notes failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        backoff = Duration::from_millis(50);
        match wakeup {
            Wakeup::Poll(every) => tokio::time::sleep(every).await,
            Wakeup::Listen { safety_poll } => {
                let Some((_client, notifications)) = &mut listener else {
                    match db.listen(CHANNEL).await {
                        // Anything committed before the LISTEN took effect: catch up first.
                        Ok(opened) => listener = Some(opened),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for new audit entries");
                            tokio::time::sleep(safety_poll.min(Duration::from_secs(1))).await;
                        }
                    }
                    continue;
                };
                tokio::select! {
                    told = notifications.recv() => {
                        if told.is_none() {
                            // The connection ended: listen again, then catch up.
                            listener = None;
                        }
                    }
                    () = tokio::time::sleep(safety_poll) => {}
                }
            }
        }
    }
}

/// Announces the notes made deliverable by entries between the cursor and the log's size,
/// in index order, and moves the cursor to the size.
async fn catch_up(
    db: &Database,
    sender: &broadcast::Sender<Deliverable>,
    cursor: &AtomicU64,
) -> Result<(), DatabaseError> {
    let client = db.client().await?;
    let size: i64 = client
        .query_opt_cached("SELECT size FROM casegate_audit_tree WHERE id = 1", &[])
        .await?
        .map_or(0, |row| row.get(0));
    let from = i64::try_from(cursor.load(Ordering::Acquire)).unwrap_or(i64::MAX);
    if size <= from {
        return Ok(());
    }
    let rows = client
        .query_cached(
            "SELECT e.idx, e.note_id, n.recipient_orgnr FROM casegate_audit_entry e
             JOIN casegate_note n ON n.id = e.note_id
             WHERE e.idx >= $1 AND e.idx < $2 AND n.state = 1 ORDER BY e.idx",
            &[&from, &size],
        )
        .await?;
    // Read up to `size`: the cursor moves before the announcements, so a listener that hears
    // one finds the cursor past it.
    cursor.store(u64::try_from(size).unwrap_or(0), Ordering::Release);
    for row in &rows {
        let recipient: &str = row.get(2);
        let Ok(recipient) = recipient.parse() else {
            tracing::warn!("a stored note's recipient is not an organisation number");
            continue;
        };
        // No subscriber is no error: nobody is streaming that inbox here.
        let _ = sender.send(Deliverable {
            recipient,
            note: row.get(1),
            index: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        });
    }
    Ok(())
}
