//! Per-organisation rate limiting, keyed on the organisation proven by the client certificate
//! (not the IP address, which says nothing about who calls through a shared proxy or NAT):
//! `governor`'s keyed GCRA limiter (the generic cell rate algorithm, equivalent to a token
//! bucket of `burst` calls refilled at `rate` per second).

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use casegate_consent::OrgNumber;
use governor::{
    Quota,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

/// Organisations whose state is kept before states back at full burst are forgotten (looked at
/// every 1,024 calls; a forgotten organisation starts again with a full burst, which it had
/// anyway).
const MAX_KEYS: usize = 10_000;

/// A per-organisation limiter over the clock `C` (the monotonic clock in production, a fake
/// one in tests).
pub(crate) struct RateLimiter<C: Clock = DefaultClock> {
    limiter: governor::RateLimiter<
        OrgNumber,
        DefaultKeyedStateStore<OrgNumber>,
        C,
        NoOpMiddleware<C::Instant>,
    >,
    clock: C,
    calls: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("organisations", &self.limiter.len())
            .finish()
    }
}

impl RateLimiter {
    /// `rate_per_second` calls per second on average per organisation, bursts up to `burst`
    /// (both at least 1).
    pub(crate) fn new(rate_per_second: u32, burst: u32) -> Self {
        Self::with_clock(rate_per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    fn with_clock(rate_per_second: u32, burst: u32, clock: C) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(rate_per_second).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        Self {
            limiter: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            calls: AtomicU64::new(0),
        }
    }

    /// Takes one call from `org`'s allowance; when spent, says how long until the next call
    /// fits (the `RetryInfo` delay).
    pub(crate) fn check(&self, org: OrgNumber) -> Result<(), Duration> {
        // Counting the organisations locks every shard of the map: done every 1,024 calls.
        if self
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && self.limiter.len() >= MAX_KEYS
        {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&org)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// tonic refuses an oversized request message with `OUT_OF_RANGE`; gRPC's convention (and
/// this gateway's rule for every limit) is `RESOURCE_EXHAUSTED`. The message, which names the
/// size and the limit, is kept.
pub(crate) fn oversize_is_resource_exhausted<B>(
    mut response: http::Response<B>,
) -> http::Response<B> {
    const OUT_OF_RANGE: &str = "11";
    const TOO_LARGE: &str = "Error, decoded message length too large";
    let headers = response.headers();
    let oversize = headers
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.replace("%20", " ").starts_with(TOO_LARGE));
    if oversize {
        response.headers_mut().insert(
            "grpc-status",
            http::HeaderValue::from_static("8"), // RESOURCE_EXHAUSTED
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_organisation_has_its_own_allowance_that_refills() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(10, 3, clock.clone());
        let (a, b): (OrgNumber, OrgNumber) = (
            "910000063".parse().expect("org"),
            "910000071".parse().expect("org"),
        );
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(100), "one call per 100 ms");
        assert!(
            limiter.check(b).is_ok(),
            "another organisation is unaffected"
        );
        clock.advance(Duration::from_millis(60));
        assert_eq!(limiter.check(a), Err(Duration::from_millis(40)));
        clock.advance(Duration::from_millis(40));
        assert!(limiter.check(a).is_ok(), "refilled");
        assert!(limiter.check(a).is_err(), "one call refilled, not more");
    }
}
