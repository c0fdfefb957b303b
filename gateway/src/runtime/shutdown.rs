//! The process's shutdown signal: SIGINT or SIGTERM.

use std::future::Future;

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives at any later moment
/// is caught, not fatal) and returns a future that resolves on the first of them. Call it
/// inside the runtime, before announcing that the gateway is up.
pub fn install() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
