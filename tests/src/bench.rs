//! Shared by the benchmarks: filling an audit log quickly; a gateway configuration without
//! the per-organisation rate limit (a benchmark's calls all come from one organisation).

use casegate_audit::log::AuditLog;

/// Configuration (TOML, for `TestGateway::start_with`) lifting the rate limit.
pub const NO_RATE_LIMIT: &str = "[limits]\nrate_per_second = 1000000\nrate_burst = 1000000\n";

/// Appends entries `0..entries` (built by `make`) from 256 threads, so group commit packs
/// them into large batches. Entry order follows the threads' interleaving.
pub fn fill_log(log: &AuditLog, entries: u64, make: impl Fn(u64) -> Vec<u8> + Sync) {
    let threads = 256u64;
    let per = entries.div_ceil(threads);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let make = &make;
            scope.spawn(move || {
                for n in (t * per..(t + 1) * per).filter(|n| *n < entries) {
                    log.append_blocking(make(n)).expect("append");
                }
            });
        }
    });
}
