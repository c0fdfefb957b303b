//! Shared by the benchmarks: filling an audit log quickly; a gateway configuration without
//! the per-organisation rate limit (a benchmark's calls all come from one organisation).

use casegate_audit::log::AuditLog;

/// Configuration (TOML, for `TestGateway::start_with`) lifting the rate limit.
pub const NO_RATE_LIMIT: &str = "[limits]\nrate_per_second = 1000000\nrate_burst = 1000000\n";

/// Appends entries `0..entries` (built by `make`) from 256 threads, so group commit packs
/// them into large batches. Entries are queued in order of `n` (one thread at a time takes
/// the next `n` and queues it, then waits for its own append outside the lock), so entry
/// times that grow with `n` never go backwards in the log.
pub fn fill_log(log: &AuditLog, entries: u64, make: impl Fn(u64) -> Vec<u8> + Sync) {
    let threads = 256u64;
    let next = std::sync::Mutex::new(0u64);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (make, next) = (&make, &next);
            scope.spawn(move || {
                loop {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    {
                        let mut n = next.lock().expect("counter");
                        if *n >= entries {
                            return;
                        }
                        log.append(make(*n), move |result| {
                            let _ = tx.send(result);
                        })
                        .expect("queue");
                        *n += 1;
                    }
                    rx.recv().expect("answer").expect("append");
                }
            });
        }
    });
}
