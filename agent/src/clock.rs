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
    /// `Utc::now()` turns the OS time into a calendar date on every call; within one second only the
    /// sub-second part changes, so each thread keeps the current second's date and reuses it. This is the hot
    /// half of every feature check.
    #[inline]
    fn now(&self) -> DateTime<Utc> {
        use std::cell::Cell;
        use std::time::{SystemTime, UNIX_EPOCH};

        use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

        thread_local! {
            static SECOND: Cell<(u64, Option<NaiveDate>)> = const { Cell::new((u64::MAX, None)) };
        }
        let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            return Utc::now();
        };
        let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
        let seconds_of_day = (secs % 86_400) as u32;
        let date = SECOND.with(|c| match c.get() {
            (s, Some(d)) if s == secs / 86_400 => Some(d),
            _ => {
                let d = DateTime::from_timestamp(secs as i64, 0).map(|t| t.date_naive());
                c.set((secs / 86_400, d));
                d
            }
        });
        match (date, NaiveTime::from_num_seconds_from_midnight_opt(seconds_of_day, nanos)) {
            (Some(d), Some(t)) => NaiveDateTime::new(d, t).and_utc(),
            _ => Utc::now(),
        }
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
mod system_clock_tests {
    use super::*;

    #[test]
    fn cached_date_matches_chrono() {
        for _ in 0..1000 {
            let before = Utc::now();
            let ours = SystemClock.now();
            let after = Utc::now();
            assert!(before <= ours && ours <= after, "{before} <= {ours} <= {after}");
        }
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
