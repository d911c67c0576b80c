//! Rate limits per key (client IP, license key hint), in memory: GCRA from `governor` (a token bucket without
//! floating point, one compare-and-swap per check on a sharded map).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Keys tracked before the ones back at full allowance are forgotten.
const MAX_KEYS: usize = 800_000;
/// The longest wait between two allowed requests (a rate below one a century is taken as one a century).
const MAX_PERIOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Checks between two looks at the number of keys (counting them visits every shard).
const SWEEP_EVERY: u32 = 4096;

pub struct RateLimiter {
    /// `None`: no limit.
    limiter: Option<DefaultKeyedRateLimiter<Vec<u8>>>,
    clock: DefaultClock,
    checks: AtomicU32,
}

impl RateLimiter {
    /// `rate` requests per second, up to `burst` at once; a rate of 0 (or less) disables the limit.
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        let quota = (rate > 0.0 && rate.is_finite())
            .then(|| {
                Duration::try_from_secs_f64(1.0 / rate).unwrap_or(MAX_PERIOD).clamp(Duration::from_nanos(1), MAX_PERIOD)
            })
            .and_then(Quota::with_period)
            .map(|q| {
                q.allow_burst(NonZeroU32::new(burst.clamp(1.0, f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN))
            });
        RateLimiter {
            limiter: quota.map(DefaultKeyedRateLimiter::keyed),
            clock: DefaultClock::default(),
            checks: AtomicU32::new(0),
        }
    }

    /// Takes one request's allowance for `key`; `Err(seconds)` to wait (at least 1) when none is left.
    pub fn check(&self, key: &[u8]) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) && limiter.len() > MAX_KEYS {
            // A forgotten key starts again at full allowance, which is where these keys were anyway.
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&key.to_vec()).map_err(|not_until| {
            // Whole seconds, rounded up (Retry-After has second precision).
            not_until.wait_time_from(self.clock.now()).as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_key_waits_and_other_keys_do_not() {
        let l = RateLimiter::new(1.0, 3.0);
        for _ in 0..3 {
            assert!(l.check(b"a").is_ok());
        }
        assert_eq!(l.check(b"a"), Err(1), "one a second: wait a second");
        assert!(l.check(b"b").is_ok(), "keys are limited apart");
        assert!(RateLimiter::new(0.0, 0.0).check(b"a").is_ok(), "0 is no limit");
    }

    #[test]
    fn absurd_rates_neither_panic_nor_lift_the_limit() {
        for rate in [1e-30, f64::MIN_POSITIVE, 5e-324] {
            let l = RateLimiter::new(rate, 1.0);
            assert!(l.check(b"k").is_ok(), "the burst");
            assert!(l.check(b"k").is_err(), "then the wait, at {rate}/s");
        }
        for rate in [f64::NAN, f64::INFINITY, -1.0] {
            assert!(RateLimiter::new(rate, 1.0).check(b"k").is_ok(), "{rate}: no limit, as 0 is");
        }
        let l = RateLimiter::new(1e12, 2.0);
        assert!(l.check(b"k").is_ok());
    }

    #[test]
    fn a_slow_rate_says_how_long_to_wait() {
        let l = RateLimiter::new(0.1, 1.0);
        assert!(l.check(b"k").is_ok());
        let wait = l.check(b"k").unwrap_err();
        assert!((9..=10).contains(&wait), "one per 10 s: wait {wait}");
    }

    #[test]
    fn the_allowance_comes_back_with_time() {
        let l = RateLimiter::new(50.0, 1.0);
        assert!(l.check(b"k").is_ok());
        assert!(l.check(b"k").is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(l.check(b"k").is_ok(), "one per 20 ms: back after 40 ms");
    }
}
