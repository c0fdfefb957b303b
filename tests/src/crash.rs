//! Shared by the crash test and its child process.

/// The audit log origin the crash test uses.
pub const ORIGIN: &str = "crash.casegate.test/audit";

/// The detail a child writes into entry `n` of thread `t`, so the parent can check it.
pub fn entry_detail(t: u64, n: u64) -> String {
    format!("thread {t} entry {n}")
}
