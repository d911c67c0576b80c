//! Quotas per period: the windows [`License::quota_window`] gives (whole UTC days, months from the 1st, billing
//! periods from the cycle's anchor date) and what `decide` makes of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use tessera_core::decision::{decide, decided_until, Inputs, Query, Reason};
use tessera_core::model::{BillingCycle, LimitPeriod, LimitType, QuotaWindow};
use tessera_core::{Feature, License};

fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid time")
}

fn window(period: LimitPeriod, cycle: Option<BillingCycle>, at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let w = QuotaWindow::of(period, cycle, t(2026, 1, 15, 9, 30), at).expect("a window");
    assert!(w.contains(at), "{period:?} window {w:?} holds {at}");
    (w.start, w.end)
}

#[test]
fn days_and_months_are_utc_calendar_periods() {
    let day = window(LimitPeriod::Day, None, t(2026, 3, 1, 23, 59));
    assert_eq!(day, (t(2026, 3, 1, 0, 0), t(2026, 3, 2, 0, 0)));
    assert_eq!(window(LimitPeriod::Day, None, t(2026, 3, 2, 0, 0)).0, t(2026, 3, 2, 0, 0), "midnight starts a day");
    assert_eq!(window(LimitPeriod::Month, None, t(2028, 2, 29, 12, 0)), (t(2028, 2, 1, 0, 0), t(2028, 3, 1, 0, 0)));
    assert_eq!(window(LimitPeriod::Month, None, t(2026, 12, 31, 23, 59)), (t(2026, 12, 1, 0, 0), t(2027, 1, 1, 0, 0)));
    assert_eq!(QuotaWindow::of(LimitPeriod::Lifetime, None, t(2026, 1, 1, 0, 0), t(2026, 5, 1, 0, 0)), None);
}

#[test]
fn billing_periods_count_whole_cycles_from_the_anchor_date() {
    // Anchored on the 31st: periods start on the 31st, or on a shorter month's last day, never drifting.
    let monthly = Some(BillingCycle { anchor: t(2026, 1, 31, 17, 45), months: 1 });
    let p = LimitPeriod::BillingPeriod;
    assert_eq!(window(p, monthly, t(2026, 2, 10, 8, 0)), (t(2026, 1, 31, 0, 0), t(2026, 2, 28, 0, 0)));
    assert_eq!(window(p, monthly, t(2026, 2, 28, 0, 0)), (t(2026, 2, 28, 0, 0), t(2026, 3, 31, 0, 0)));
    assert_eq!(window(p, monthly, t(2026, 4, 30, 0, 0)), (t(2026, 4, 30, 0, 0), t(2026, 5, 31, 0, 0)));
    // Before the anchor, the cycles run backwards from it.
    assert_eq!(window(p, monthly, t(2026, 1, 5, 0, 0)), (t(2025, 12, 31, 0, 0), t(2026, 1, 31, 0, 0)));
    // Annual, anchored on a leap day.
    let annual = Some(BillingCycle { anchor: t(2028, 2, 29, 6, 0), months: 12 });
    assert_eq!(window(p, annual, t(2029, 2, 28, 0, 0)), (t(2029, 2, 28, 0, 0), t(2030, 2, 28, 0, 0)));
    assert_eq!(window(p, annual, t(2032, 3, 1, 0, 0)), (t(2032, 2, 29, 0, 0), t(2033, 2, 28, 0, 0)));
    // Without a cycle: monthly from the license's start date.
    assert_eq!(window(p, None, t(2026, 3, 20, 0, 0)), (t(2026, 3, 15, 0, 0), t(2026, 4, 15, 0, 0)));
    // Every instant of three years lies in exactly one period, and periods tile without gaps.
    let quarterly = Some(BillingCycle { anchor: t(2026, 1, 31, 0, 0), months: 3 });
    let mut at = t(2025, 6, 1, 0, 0);
    let mut last: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    while at < t(2028, 6, 1, 0, 0) {
        let w = window(p, quarterly, at);
        if let Some(prev) = last.filter(|prev| *prev != w) {
            assert_eq!(prev.1, w.0, "periods tile: {prev:?} then {w:?}");
        }
        last = Some(w);
        at += Duration::hours(13);
    }
}

fn metered(period: LimitPeriod) -> License {
    let mut l = sample_license();
    l.starts_at = t(2026, 1, 1, 0, 0);
    l.expires_at = None;
    l.features = vec![Feature::new("api_calls").with_limit(100, LimitType::Count).per(period)];
    l
}

#[test]
fn a_used_up_period_denies_until_its_end_and_says_when_that_is() {
    let l = metered(LimitPeriod::Day);
    let now = t(2026, 5, 4, 22, 0);
    let inputs = Inputs::new(now, Some(&l));
    let full = decide(&inputs, &Query { feature: Some("api_calls"), amount: 1, used: 100 });
    assert_eq!(full.reason, Reason::QuotaExceeded);
    let window = |l: &License, at| l.quota_window(&l.features[0], at).map(|w| w.end);
    assert_eq!(window(&l, now), Some(t(2026, 5, 5, 0, 0)), "the Retry-After of a used-up quota");
    assert_eq!(full.facts.remaining, Some(0));
    // The caller passes the use of the current period; in the next one nothing is used yet.
    let fresh =
        decide(&Inputs::new(t(2026, 5, 5, 0, 0), Some(&l)), &Query { feature: Some("api_calls"), amount: 1, used: 0 });
    assert!(fresh.allowed);
    assert_eq!(window(&l, t(2026, 5, 5, 0, 0)), Some(t(2026, 5, 6, 0, 0)));
    // A plain check's answer stands until the period ends at the latest.
    assert_eq!(decided_until(&inputs, &Query::feature("api_calls")), Some(t(2026, 5, 5, 0, 0)));
    // A lifetime quota has no period end.
    let lifetime = metered(LimitPeriod::Lifetime);
    let d = decide(&Inputs::new(now, Some(&lifetime)), &Query { feature: Some("api_calls"), amount: 1, used: 100 });
    assert_eq!((d.reason, window(&lifetime, now)), (Reason::QuotaExceeded, None));
    assert_eq!(decided_until(&Inputs::new(now, Some(&lifetime)), &Query::feature("api_calls")), None);
}

#[test]
fn periods_survive_the_license_json_and_lifetime_is_left_out() {
    let mut l = metered(LimitPeriod::BillingPeriod);
    l.billing_cycle = Some(BillingCycle { anchor: t(2026, 2, 3, 4, 5), months: 12 });
    let json = serde_json::to_value(&l).unwrap();
    assert_eq!(json["features"][0]["limit_period"], "BILLING_PERIOD");
    assert_eq!(json["billing_cycle"]["months"], 12);
    assert_eq!(serde_json::from_value::<License>(json).unwrap(), l);
    // A lifetime quota serialises as it always did, so existing license files and their signatures are unchanged.
    let plain = serde_json::to_value(metered(LimitPeriod::Lifetime)).unwrap();
    assert!(plain["features"][0].get("limit_period").is_none());
    assert!(plain.get("billing_cycle").is_none());
    // An unknown period is refused, not read as lifetime.
    let mut bad = serde_json::to_value(&l).unwrap();
    bad["features"][0]["limit_period"] = "FORTNIGHT".into();
    assert!(serde_json::from_value::<License>(bad).is_err());
}
