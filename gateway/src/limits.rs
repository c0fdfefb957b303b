//! Per-organisation rate limiting, keyed on the organisation proven by the client certificate
//! (not the IP address, which says nothing about who calls through a shared proxy or NAT).
//! A token bucket per organisation: `rate` calls per second on average, bursts up to `burst`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use casegate_consent::OrgNumber;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Buckets kept at most; beyond it, full (idle) buckets are forgotten first.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<OrgNumber, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate_per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `org`'s bucket; when empty, says how long until the next call fits.
    pub fn check(&self, org: OrgNumber, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&org) {
            let (rate, burst) = (self.rate, self.burst);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(org).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` detail saying when to retry.
pub fn rate_limited(retry_after: Duration) -> Status {
    let millis = retry_after.as_millis().max(1);
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("rate limit for your organisation exceeded; retry in {millis} ms"),
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// tonic refuses an oversized request message with `OUT_OF_RANGE`; gRPC's convention (and
/// this gateway's rule for every limit) is `RESOURCE_EXHAUSTED`. The message, which names the
/// size and the limit, is kept.
pub fn oversize_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
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
    fn each_organisation_has_its_own_bucket_that_refills() {
        let limiter = RateLimiter::new(10, 3);
        let (a, b): (OrgNumber, OrgNumber) = (
            "910000063".parse().expect("org"),
            "910000071".parse().expect("org"),
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(a, t0).is_ok());
        }
        let wait = limiter.check(a, t0).expect_err("burst spent");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            limiter.check(b, t0).is_ok(),
            "another organisation is unaffected"
        );
        assert!(
            limiter.check(a, t0 + Duration::from_millis(110)).is_ok(),
            "refilled"
        );
    }
}
