//! The gateway's background tasks (the accept loop, the CRL reloader, the note sweep, the
//! audit index catch-up, the metrics listener, the storage watch). Each runs for as long as
//! the gateway serves; one that ends — returning, failing or panicking — means the gateway
//! no longer does its job, so `serve` stops and the process exits non-zero.

use std::future::Future;

use tokio::{sync::mpsc, task::AbortHandle};

/// A background task that ended while the gateway was serving, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{task} stopped: {reason}")]
pub struct TaskEnded {
    /// The task's name, as given to [`Supervisor::spawn`].
    pub task: &'static str,
    /// Why it ended: its error, "it ended", or its panic's message.
    pub reason: String,
}

/// The running background tasks.
#[derive(Debug)]
pub(crate) struct Supervisor {
    ended_tx: mpsc::UnboundedSender<TaskEnded>,
    ended_rx: mpsc::UnboundedReceiver<TaskEnded>,
    running: Vec<AbortHandle>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// A supervisor with no task yet.
    pub(crate) fn new() -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Self {
            ended_tx,
            ended_rx,
            running: Vec::new(),
        }
    }

    /// Runs `task`, which is meant to run until aborted: its end (`Ok` or `Err(reason)`) or
    /// its panic is reported by [`Supervisor::first_end`].
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let inner = tokio::spawn(task);
        self.running.push(inner.abort_handle());
        let ended = self.ended_tx.clone();
        tokio::spawn(async move {
            let reason = match inner.await {
                Ok(Ok(())) => "it ended".to_owned(),
                Ok(Err(reason)) => reason,
                Err(e) if e.is_cancelled() => return,
                Err(e) => format!("it panicked: {}", panic_message(e)),
            };
            let _ = ended.send(TaskEnded { task: name, reason });
        });
    }

    /// Runs `task`, which ends of itself when its work is done; only a panic is reported (as
    /// an error in the log), since the gateway keeps doing its job without it.
    pub(crate) fn spawn_once(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let inner = tokio::spawn(task);
        self.running.push(inner.abort_handle());
        tokio::spawn(async move {
            if let Err(e) = inner.await
                && e.is_panic()
            {
                tracing::error!(task = name, panic = %panic_message(e), "task panicked");
            }
        });
    }

    /// The first task that ended; pending while all run.
    pub(crate) async fn first_end(&mut self) -> TaskEnded {
        match self.ended_rx.recv().await {
            Some(ended) => ended,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// Stops every task.
    pub(crate) fn abort_all(&self) {
        for task in &self.running {
            task.abort();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.abort_all();
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_fails_or_panics_is_reported_and_one_that_runs_is_not() {
        for (task, expected) in [
            (0, "it ended"),
            (1, "disk gone"),
            (2, "it panicked: worker lost"),
        ] {
            let mut tasks = Supervisor::new();
            tasks.spawn("forever", std::future::pending());
            tasks.spawn("under test", async move {
                match task {
                    0 => Ok(()),
                    1 => Err("disk gone".to_owned()),
                    _ => panic!("worker lost"),
                }
            });
            let ended = tokio::time::timeout(Duration::from_secs(5), tasks.first_end())
                .await
                .expect("reported");
            assert_eq!(
                ended,
                TaskEnded {
                    task: "under test",
                    reason: expected.to_owned()
                }
            );
        }
    }

    #[tokio::test]
    async fn aborted_and_finished_one_shot_tasks_are_not_reported() {
        let mut tasks = Supervisor::new();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn_once("one shot", async {});
        tasks.abort_all();
        let seen = tokio::time::timeout(Duration::from_millis(200), tasks.first_end()).await;
        assert!(seen.is_err(), "nothing ended: {seen:?}");
    }
}
