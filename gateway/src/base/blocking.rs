//! The one way work that blocks — storage reads and writes, `fsync`, reading certificate
//! files — runs off the async runtime: on tokio's blocking pool, never on a runtime thread.

/// Runs `f` on the blocking pool and waits for it without blocking the runtime.
///
/// # Errors
/// The task panicked, or the runtime is shutting down; callers map it to their own failure
/// (`edge::status::task_failed` for a call).
pub(crate) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}
