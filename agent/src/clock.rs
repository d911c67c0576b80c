//! Time, injected: the system clock in production, a settable clock in tests; and trusted time, the agent's
//! own account of how much time has passed, which a customer cannot turn back.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Duration, TimeZone, Utc};

/// A reading of a clock the user cannot set: which boot it belongs to and how long since that boot,
/// suspend included (Linux: `/proc/sys/kernel/random/boot_id` and `/proc/uptime`). Where the platform has no
/// such clock, [`SystemClock`] reads the process's own monotonic clock under a per-process id, so elapsed time
/// still counts within one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReading {
    pub boot_id: String,
    pub since_boot: std::time::Duration,
}

/// Where the agent reads the time. Injected so tests can move it (clock rollback, emergency expiry).
pub trait Clock: Send + Sync {
    /// The wall clock (the customer can set it).
    fn now(&self) -> DateTime<Utc>;
    /// The boot-time clock, if any: trusted time counts elapsed time with it within one boot.
    fn boot(&self) -> Option<BootReading> {
        None
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// The coarse wall clock (see [`wall_clock`]): the hot half of every feature check.
    #[inline]
    fn now(&self) -> DateTime<Utc> {
        wall_clock()
    }

    fn boot(&self) -> Option<BootReading> {
        system_boot()
    }
}

/// The wall clock as license rules need it: to the second, cheaply. On Linux it is `CLOCK_REALTIME_COARSE`, the
/// time of the kernel's last tick, read from memory the kernel shares with the process (a few nanoseconds, where the
/// precise clock reads the hardware counter and costs several times that). It trails the precise clock by one tick
/// ([`wall_clock_resolution`]; 4 ms at 250 Hz), a few when a loaded machine delivers ticks late, so an expiry at
/// second S is seen within milliseconds of S. It is read through the C library like any program's clock, and it is
/// the clock the user sets, so trusted time ([`TrustedTime`]) guards it exactly as it guards the precise one.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub fn wall_clock() -> DateTime<Utc> {
    use rustix::time::{clock_gettime_dynamic, ClockId, DynamicClockId};

    // A sandbox or emulation layer may refuse the coarse clock: the precise one serves then.
    let Ok(t) = clock_gettime_dynamic(DynamicClockId::Known(ClockId::RealtimeCoarse)) else {
        return Utc::now();
    };
    match (u64::try_from(t.tv_sec), u32::try_from(t.tv_nsec)) {
        (Ok(secs), Ok(nanos)) => from_unix(secs, nanos),
        _ => Utc::now(),
    }
}

/// The time `secs.nanos` after the Unix epoch. Turning a day number into a calendar date is most of the cost of
/// a conversion, and it changes once a day: each thread keeps the current day's date.
#[inline]
fn from_unix(secs: u64, nanos: u32) -> DateTime<Utc> {
    use std::cell::Cell;

    use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

    thread_local! {
        static TODAY: Cell<Option<(u64, NaiveDate)>> = const { Cell::new(None) };
    }
    let (day, second_of_day) = (secs / 86_400, (secs % 86_400) as u32);
    let date = TODAY.with(|today| match today.get() {
        Some((d, date)) if d == day => Some(date),
        _ => {
            let date = DateTime::from_timestamp(secs.try_into().ok()?, 0)?.date_naive();
            today.set(Some((day, date)));
            Some(date)
        }
    });
    match (date, NaiveTime::from_num_seconds_from_midnight_opt(second_of_day, nanos)) {
        (Some(date), Some(time)) => NaiveDateTime::new(date, time).and_utc(),
        _ => Utc::now(),
    }
}

/// The wall clock as license rules need it (elsewhere than Linux: the standard library's clock).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub fn wall_clock() -> DateTime<Utc> {
    Utc::now()
}

/// How far [`wall_clock`] may trail the precise clock.
pub fn wall_clock_resolution() -> std::time::Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let r = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
        let nanos = u64::try_from(r.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000);
        std::time::Duration::from_nanos(nanos.saturating_add(u64::try_from(r.tv_nsec).unwrap_or(0)))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        std::time::Duration::ZERO
    }
}

/// This process's id for the fallback monotonic clock: the pid and the wall time it started at.
fn process_clock() -> &'static (String, std::time::Instant) {
    static PROCESS: std::sync::OnceLock<(String, std::time::Instant)> = std::sync::OnceLock::new();
    PROCESS.get_or_init(|| {
        let started = Utc::now().timestamp_micros();
        (format!("process:{}:{started}", std::process::id()), std::time::Instant::now())
    })
}

#[cfg(target_os = "linux")]
fn system_boot() -> Option<BootReading> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let id = BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    let uptime = std::fs::read_to_string("/proc/uptime").ok().and_then(|s| parse_uptime(&s));
    match (id, uptime) {
        (Some(id), Some(since_boot)) => Some(BootReading { boot_id: format!("boot:{id}"), since_boot }),
        _ => process_boot(),
    }
}

#[cfg(not(target_os = "linux"))]
fn system_boot() -> Option<BootReading> {
    process_boot()
}

fn process_boot() -> Option<BootReading> {
    let (id, start) = process_clock();
    Some(BootReading { boot_id: id.clone(), since_boot: start.elapsed() })
}

/// The first field of `/proc/uptime` ("12345.67 …"), without floating point.
fn parse_uptime(text: &str) -> Option<std::time::Duration> {
    let first = text.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    let frac = frac.get(..frac.len().min(9))?;
    let nanos: u32 = if frac.is_empty() { 0 } else { frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32) };
    Some(std::time::Duration::new(secs, nanos))
}

/// A clock tests set by hand. Shared between threads; microsecond precision. It models both the wall clock and
/// the boot clock: [`TestClock::advance`] by a positive amount is time passing (both move); setting the time or
/// moving it back is someone changing the wall clock (the boot clock does not move); [`TestClock::reboot`]
/// starts a new boot.
#[derive(Debug)]
pub struct TestClock {
    micros: AtomicI64,
    since_boot_micros: AtomicU64,
    boot: Mutex<(u64, bool)>,
}

impl TestClock {
    pub fn new(start: DateTime<Utc>) -> TestClock {
        TestClock {
            micros: AtomicI64::new(start.timestamp_micros()),
            since_boot_micros: AtomicU64::new(0),
            boot: Mutex::new((0, true)),
        }
    }

    /// Sets the wall clock (backwards too: that is how rollback is simulated). The boot clock does not move.
    pub fn set(&self, t: DateTime<Utc>) {
        self.micros.store(t.timestamp_micros(), Ordering::SeqCst);
    }

    /// Moves the time by `d`: forward, time passes (wall and boot clock); backward, the wall clock is turned
    /// back.
    pub fn advance(&self, d: Duration) {
        let us = d.num_microseconds().unwrap_or(i64::MAX);
        self.micros.fetch_add(us, Ordering::SeqCst);
        if us > 0 {
            self.since_boot_micros.fetch_add(us as u64, Ordering::SeqCst);
        }
    }

    /// Time passes while the wall clock is held still (someone keeps setting it back).
    pub fn pass_holding_wall(&self, d: Duration) {
        let us = d.num_microseconds().unwrap_or(i64::MAX).max(0);
        self.since_boot_micros.fetch_add(us as u64, Ordering::SeqCst);
    }

    /// A new boot: the boot clock starts again from zero under a new boot id.
    pub fn reboot(&self) {
        let mut b = self.boot.lock().unwrap_or_else(|p| p.into_inner());
        b.0 += 1;
        self.since_boot_micros.store(0, Ordering::SeqCst);
    }

    /// Models a platform without a boot clock (only wall-clock deltas count).
    pub fn without_boot_clock(self) -> Self {
        self.boot.lock().unwrap_or_else(|p| p.into_inner()).1 = false;
        self
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.micros.load(Ordering::SeqCst)).single().unwrap_or_default()
    }

    fn boot(&self) -> Option<BootReading> {
        let (n, enabled) = *self.boot.lock().unwrap_or_else(|p| p.into_inner());
        enabled.then(|| BootReading {
            boot_id: format!("test-boot-{n}"),
            since_boot: std::time::Duration::from_micros(self.since_boot_micros.load(Ordering::SeqCst)),
        })
    }
}

/// Trusted time: the latest time the agent has reason to believe has passed, and the clock readings it was
/// last advanced from.
///
/// The rule (docs/SECURITY.md, "Time"): trusted time only moves forward, by the time that elapsed between
/// observations. Within one boot, elapsed time is read from the boot clock, so time passes even while the wall
/// clock is held back; across boots (or without a boot clock) it is the forward step of the wall clock, and a
/// backward step adds nothing. A verified server time replaces it (that also resets a mark pushed ahead by a
/// clock that ran fast), and signed artefact times are a floor. Checks decide at the later of the wall clock and
/// trusted time, and deny with CLOCK_TAMPERED once the wall clock is more than the tolerance behind it: the
/// tolerance is a budget for all backward steps together, not a window that slides with the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedTime {
    pub trusted: DateTime<Utc>,
    /// The wall clock at the last observation.
    pub wall: DateTime<Utc>,
    /// The boot clock at the last observation.
    pub boot: Option<BootReading>,
}

impl TrustedTime {
    /// A first observation: nothing is known beyond the clock itself.
    pub fn start(wall: DateTime<Utc>, boot: Option<BootReading>) -> TrustedTime {
        TrustedTime { trusted: wall, wall, boot }
    }

    /// Time elapsed since the last observation, never negative.
    pub fn elapsed_to(&self, wall: DateTime<Utc>, boot: Option<&BootReading>) -> Duration {
        match (&self.boot, boot) {
            (Some(a), Some(b)) if a.boot_id == b.boot_id && b.since_boot >= a.since_boot => {
                Duration::from_std(b.since_boot - a.since_boot).unwrap_or(Duration::MAX)
            }
            _ => (wall - self.wall).max(Duration::zero()),
        }
    }

    /// The trusted time now, from a new reading of both clocks (pure: nothing is recorded).
    pub fn observe(&self, wall: DateTime<Utc>, boot: Option<BootReading>) -> TrustedTime {
        let elapsed = self.elapsed_to(wall, boot.as_ref());
        TrustedTime { trusted: self.trusted.checked_add_signed(elapsed).unwrap_or(self.trusted), wall, boot }
    }

    /// A time from a verified server answer: trusted as it is.
    pub fn from_server(server: DateTime<Utc>, wall: DateTime<Utc>, boot: Option<BootReading>) -> TrustedTime {
        TrustedTime { trusted: server, wall, boot }
    }

    /// A time a signed artefact vouches for: trusted time is at least that.
    pub fn raise_to(&mut self, floor: DateTime<Utc>) {
        self.trusted = self.trusted.max(floor);
    }

    /// True when `now` is more than `tolerance` behind trusted time.
    pub fn is_rolled_back(&self, now: DateTime<Utc>, tolerance: Duration) -> bool {
        now.checked_add_signed(tolerance).unwrap_or(DateTime::<Utc>::MAX_UTC) < self.trusted
    }

    /// Whether this observation must be recorded over `stored`: trusted time moved by `granularity` or more;
    /// the wall clock stepped back (later wall-clock deltas must count from there); it stepped forward by more
    /// than the time that passed (a corrected clock: recorded, so that a reboot does not count the correction
    /// as time passing); or a new boot began. Anything else the next observation recomputes from `stored`.
    pub fn needs_save(&self, stored: &TrustedTime, granularity: Duration) -> bool {
        let boot_changed = match (&self.boot, &stored.boot) {
            (Some(a), Some(b)) => a.boot_id != b.boot_id || a.since_boot < b.since_boot,
            (None, None) => false,
            _ => true,
        };
        let elapsed = self.trusted - stored.trusted;
        elapsed >= granularity
            || elapsed < Duration::zero()
            || self.wall < stored.wall
            || (self.wall - stored.wall) - elapsed >= granularity
            || boot_changed
    }
}

#[cfg(test)]
mod system_clock_tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_coarse_clock_trails_the_precise_one_by_a_few_ticks_at_most() {
        let tick = Duration::from_std(wall_clock_resolution()).unwrap();
        assert!(tick <= Duration::milliseconds(20), "a coarse clock with a {tick} tick is too coarse");
        // The coarse clock moves on the timer tick, which a loaded (virtual) machine delivers late now and then:
        // a few ticks of lag are seen; license rules have second precision, so anything under 100 ms serves.
        let lag = (tick * 10).max(Duration::milliseconds(50)).min(Duration::milliseconds(100));
        for _ in 0..1000 {
            let before = Utc::now();
            let ours = SystemClock.now();
            let after = Utc::now();
            assert!(before - lag <= ours && ours <= after, "{before} - {lag} <= {ours} <= {after}");
        }
    }

    #[test]
    fn conversions_reuse_the_day_only_within_it() {
        let midnight = t("2026-03-01T00:00:00Z").timestamp() as u64;
        for secs in [midnight - 86_400, midnight - 1, midnight, midnight + 1, midnight + 86_399, midnight + 86_400] {
            for nanos in [0, 999_999_999] {
                assert_eq!(from_unix(secs, nanos), DateTime::from_timestamp(secs as i64, nanos).unwrap(), "{secs}");
            }
        }
    }

    #[test]
    fn the_boot_clock_moves_forward_under_one_id() {
        let a = SystemClock.boot().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = SystemClock.boot().unwrap();
        assert_eq!(a.boot_id, b.boot_id);
        assert!(b.since_boot > a.since_boot, "{a:?} then {b:?}");
    }

    #[test]
    fn uptime_parses_without_floats() {
        assert_eq!(parse_uptime("12345.67 54321.00\n"), Some(std::time::Duration::new(12345, 670_000_000)));
        assert_eq!(parse_uptime("7 1"), Some(std::time::Duration::new(7, 0)));
        assert_eq!(parse_uptime("x.5"), None);
        assert_eq!(parse_uptime(""), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn boot(id: &str, secs: u64) -> Option<BootReading> {
        Some(BootReading { boot_id: id.into(), since_boot: std::time::Duration::from_secs(secs) })
    }

    #[test]
    fn a_clock_set_back_59_minutes_every_hour_still_lets_time_pass() {
        // The attack the old high-water mark missed: it never moved, so leases never ran out.
        let tol = Duration::hours(1);
        let start = t("2026-01-01T00:00:00Z");
        let mut tt = TrustedTime::start(start, boot("b", 1000));
        let mut wall = start;
        for hour in 1..=5u64 {
            // An hour passes on the boot clock; the wall clock shows 59 minutes less each time.
            wall += Duration::minutes(1);
            tt = tt.observe(wall, boot("b", 1000 + hour * 3600));
            assert_eq!(tt.trusted, start + Duration::hours(hour as i64), "hour {hour}");
        }
        assert!(tt.is_rolled_back(wall, tol), "the budget is spent after the second hour");
    }

    #[test]
    fn without_a_boot_clock_backward_steps_add_nothing_and_forward_steps_count() {
        let tol = Duration::hours(1);
        let start = t("2026-01-01T00:00:00Z");
        let mut tt = TrustedTime::start(start, None);
        let mut real = start;
        for _ in 0..3 {
            // An hour passes (forward step), then the clock is set back 59 minutes.
            real += Duration::hours(1);
            let shown = tt.wall + Duration::hours(1);
            tt = tt.observe(shown, None);
            tt = tt.observe(shown - Duration::minutes(59), None);
        }
        assert_eq!(tt.trusted, real, "every forward hour counted");
        assert!(tt.is_rolled_back(tt.wall, tol), "3 x 59 minutes back exceeds a one-hour budget");
    }

    #[test]
    fn a_reboot_counts_wall_time_and_a_backward_step_across_it_adds_nothing() {
        let start = t("2026-01-01T00:00:00Z");
        let tt = TrustedTime::start(start, boot("b1", 500));
        // Powered off for a day; the clock reads a day later after the reboot.
        let after = tt.observe(start + Duration::days(1), boot("b2", 20));
        assert_eq!(after.trusted, start + Duration::days(1));
        // Set back a day before booting: nothing is added, and the rollback shows.
        let back = tt.observe(start - Duration::days(1), boot("b3", 20));
        assert_eq!(back.trusted, start);
        assert!(back.is_rolled_back(back.wall, Duration::hours(1)));
    }

    #[test]
    fn a_boot_clock_that_runs_backwards_under_the_same_id_falls_back_to_the_wall_clock() {
        let start = t("2026-01-01T00:00:00Z");
        let tt = TrustedTime::start(start, boot("b", 5000));
        let next = tt.observe(start + Duration::minutes(5), boot("b", 10));
        assert_eq!(next.trusted, start + Duration::minutes(5));
    }

    #[test]
    fn server_time_replaces_and_signed_times_are_a_floor() {
        let mut tt = TrustedTime::start(t("2030-01-01T00:00:00Z"), None);
        tt = TrustedTime::from_server(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:00:00Z"), tt.boot.clone());
        assert!(!tt.is_rolled_back(t("2026-01-01T00:00:00Z"), Duration::minutes(1)));
        tt.raise_to(t("2026-02-01T00:00:00Z"));
        tt.raise_to(t("2025-02-01T00:00:00Z"));
        assert_eq!(tt.trusted, t("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn saves_are_needed_only_when_a_recomputation_would_differ() {
        let start = t("2026-01-01T00:00:00Z");
        let stored = TrustedTime::start(start, boot("b", 100));
        let g = Duration::seconds(60);
        assert!(!stored.observe(start + Duration::seconds(10), boot("b", 110)).needs_save(&stored, g));
        assert!(stored.observe(start + Duration::seconds(70), boot("b", 170)).needs_save(&stored, g));
        assert!(
            stored.observe(start - Duration::seconds(1), boot("b", 101)).needs_save(&stored, g),
            "wall stepped back"
        );
        assert!(stored.observe(start, boot("c", 1)).needs_save(&stored, g), "new boot");
        let corrected = stored.observe(start + Duration::minutes(40), boot("b", 110));
        assert_eq!(corrected.trusted, start + Duration::seconds(10));
        assert!(corrected.needs_save(&stored, g), "a clock set forward is recorded at once");
    }

    #[test]
    fn test_clock_models_time_passing_and_clock_setting() {
        let c = TestClock::new(t("2026-01-01T00:00:00Z"));
        c.advance(Duration::hours(2));
        assert_eq!(c.now(), t("2026-01-01T02:00:00Z"));
        assert_eq!(c.boot().unwrap().since_boot, std::time::Duration::from_secs(7200));
        c.advance(Duration::hours(-3));
        assert_eq!(c.now(), t("2025-12-31T23:00:00Z"));
        assert_eq!(
            c.boot().unwrap().since_boot,
            std::time::Duration::from_secs(7200),
            "setting the clock is not time passing"
        );
        c.pass_holding_wall(Duration::hours(1));
        assert_eq!(c.now(), t("2025-12-31T23:00:00Z"));
        c.reboot();
        assert_eq!(
            c.boot().unwrap(),
            BootReading { boot_id: "test-boot-1".into(), since_boot: std::time::Duration::ZERO }
        );
    }
}
