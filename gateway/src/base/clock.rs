//! The gateway's clock: wall-clock time that never goes backwards, for decisions and for audit
//! entries alike.
//!
//! A consent's period, a note's TTL and every audit entry's time are read from this clock. Its
//! floor is the newest audit entry's time, read when the log opens (the log is `fdatasync`'d
//! with every batch, so the floor survives a crash or a power cut) and raised by every reading.
//! A reading is `max(system clock, floor)`.
//!
//! A system clock a little behind the floor (an NTP step of up to [`TOLERANCE`]) is absorbed:
//! time stands still until the clock catches up. A clock further behind — a host restored with
//! the wrong time, a VM resumed from an old snapshot — would let a consent that has expired
//! permit again, so the gateway then refuses `casegate.v1` calls (`UNAVAILABLE`) and reports
//! `NOT_SERVING` until the clock catches up; [`watch`] logs it and sets the metric
//! `casegate_clock_behind_seconds`.
//!
//! One gateway per process: the floor is process-wide.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

/// How far the system clock may be behind the floor before calls are refused.
pub(crate) const TOLERANCE: Duration = Duration::from_secs(1);

/// A floor under wall-clock readings.
#[derive(Debug)]
pub(crate) struct Clock {
    floor: AtomicI64,
}

impl Clock {
    /// A clock with no floor yet.
    pub(crate) const fn new() -> Self {
        Self {
            floor: AtomicI64::new(i64::MIN),
        }
    }

    /// The reading when the system clock says `system` (µs): `max(system, floor)`, which
    /// becomes the floor.
    pub(crate) fn reading(&self, system: i64) -> i64 {
        self.floor.fetch_max(system, Ordering::AcqRel).max(system)
    }

    /// Raises the floor to `micros`.
    pub(crate) fn raise_floor(&self, micros: i64) {
        self.floor.fetch_max(micros, Ordering::AcqRel);
    }

    /// How far `system` (µs) is behind the floor (zero when it is not).
    pub(crate) fn behind(&self, system: i64) -> Duration {
        let behind = self.floor.load(Ordering::Acquire).saturating_sub(system);
        Duration::from_micros(u64::try_from(behind).unwrap_or(0))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The gateway's clock.
static CLOCK: Clock = Clock::new();

/// The system's wall clock, in microseconds since the Unix epoch (UTC).
pub(crate) fn system_micros() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1000).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch, never less than any earlier reading nor than the newest
/// audit entry's time.
pub(crate) fn now_micros() -> i64 {
    CLOCK.reading(system_micros())
}

/// Raises the gateway clock's floor to `micros` (the newest audit entry's time, or a time
/// just stamped on an entry).
pub(crate) fn raise_floor(micros: i64) {
    CLOCK.raise_floor(micros);
}

/// How far the system clock is behind the gateway clock's floor.
pub(crate) fn behind() -> Duration {
    CLOCK.behind(system_micros())
}

/// `Some(how far)` when the system clock is further behind the floor than [`TOLERANCE`].
pub(crate) fn too_far_behind() -> Option<Duration> {
    Some(behind()).filter(|b| *b > TOLERANCE)
}

/// Checks the clock every `every` for as long as it runs: reports `casegate_clock_behind_seconds`,
/// logs when the clock falls too far behind and when it catches up, and calls `serving(false)`
/// and `serving(true)` at those moments (health reporting).
pub(crate) async fn watch<F, Fut>(every: Duration, serving: F)
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    let mut was_behind = false;
    loop {
        tick.tick().await;
        // One reading per tick: what is logged, reported and remembered must agree.
        let behind = behind();
        let far = behind > TOLERANCE;
        metrics::gauge!("casegate_clock_behind_seconds").set(behind.as_secs_f64());
        match (far, was_behind) {
            (true, false) => {
                tracing::error!(
                    behind_seconds = behind.as_secs(),
                    "the system clock is behind the audit log's newest entry: refusing calls \
                     (NOT_SERVING) until it catches up"
                );
                serving(false).await;
            }
            (false, true) => {
                tracing::info!("the system clock has caught up with the audit log: serving");
                serving(true).await;
            }
            _ => {}
        }
        was_behind = far;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn readings_never_go_below_the_floor_and_how_far_behind_is_measured() {
        let clock = Clock::new();
        let t = 1_800_000_000_000_000;
        assert_eq!(clock.reading(t), t);
        // The newest audit entry is from an hour ahead of the system clock (a clock set back).
        clock.raise_floor(t + HOUR);
        assert_eq!(
            clock.reading(t + 1),
            t + HOUR,
            "decisions and stamps use the floor"
        );
        assert_eq!(clock.behind(t), Duration::from_secs(3600));
        // Once the system clock passes the floor, it is read as it is.
        assert_eq!(clock.reading(t + HOUR + 5), t + HOUR + 5);
        assert_eq!(clock.behind(t + HOUR + 5), Duration::ZERO);
        // A step back during a run raises no alarm within the tolerance...
        assert!(clock.behind(t + HOUR + 5 - 500_000) <= TOLERANCE);
        // ...and readings stay where they were.
        assert_eq!(clock.reading(t + HOUR), t + HOUR + 5);
    }
}
