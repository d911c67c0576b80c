//! Time, injected: the system clock in production, a settable clock in tests.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, TimeZone, Utc};

/// Where the agent reads the time. Injected so tests can move it (clock rollback, emergency expiry).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock tests set by hand. Shared between threads; microsecond precision.
#[derive(Debug)]
pub struct TestClock {
    micros: AtomicI64,
}

impl TestClock {
    pub fn new(start: DateTime<Utc>) -> TestClock {
        TestClock { micros: AtomicI64::new(start.timestamp_micros()) }
    }

    /// Sets the time (backwards too: that is how rollback is simulated).
    pub fn set(&self, t: DateTime<Utc>) {
        self.micros.store(t.timestamp_micros(), Ordering::SeqCst);
    }

    /// Moves the time by `d` (negative to go back).
    pub fn advance(&self, d: Duration) {
        let us = d.num_microseconds().unwrap_or(i64::MAX);
        self.micros.fetch_add(us, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.micros.load(Ordering::SeqCst)).single().unwrap_or_default()
    }
}

/// The trusted-time high-water mark: the latest time the agent has reason to believe has passed.
///
/// Server times from verified responses are authoritative (they also reset a mark pushed ahead by a clock that
/// ran fast); local times only ever raise it. A local clock more than the tolerance behind the mark means the
/// clock was turned back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HighWater(pub DateTime<Utc>);

impl HighWater {
    /// A local reading: raises the mark, never lowers it. Returns true when it moved.
    pub fn observe_local(&mut self, t: DateTime<Utc>) -> bool {
        if t > self.0 {
            self.0 = t;
            true
        } else {
            false
        }
    }

    /// A time from a verified server response: trusted, replaces the mark.
    pub fn observe_server(&mut self, t: DateTime<Utc>) {
        self.0 = t;
    }

    /// True when `now` is more than `tolerance` behind the mark.
    pub fn is_rolled_back(&self, now: DateTime<Utc>, tolerance: Duration) -> bool {
        now + tolerance < self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn local_times_only_raise_the_mark() {
        let mut hw = HighWater(t("2026-01-01T00:00:00Z"));
        assert!(hw.observe_local(t("2026-01-02T00:00:00Z")));
        assert!(!hw.observe_local(t("2025-12-01T00:00:00Z")));
        assert_eq!(hw.0, t("2026-01-02T00:00:00Z"));
    }

    #[test]
    fn rollback_beyond_tolerance_is_detected() {
        let hw = HighWater(t("2026-01-02T00:00:00Z"));
        let tol = Duration::minutes(10);
        assert!(!hw.is_rolled_back(t("2026-01-01T23:55:00Z"), tol));
        assert!(hw.is_rolled_back(t("2026-01-01T23:49:00Z"), tol));
        assert!(!hw.is_rolled_back(t("2026-01-03T00:00:00Z"), tol));
    }

    #[test]
    fn server_time_resets_a_mark_pushed_ahead() {
        let mut hw = HighWater(t("2030-01-01T00:00:00Z"));
        hw.observe_server(t("2026-01-01T00:00:00Z"));
        assert!(!hw.is_rolled_back(t("2026-01-01T00:00:00Z"), Duration::minutes(1)));
    }

    #[test]
    fn test_clock_moves_both_ways() {
        let c = TestClock::new(t("2026-01-01T00:00:00Z"));
        c.advance(Duration::hours(2));
        assert_eq!(c.now(), t("2026-01-01T02:00:00Z"));
        c.advance(Duration::hours(-3));
        assert_eq!(c.now(), t("2025-12-31T23:00:00Z"));
    }
}
