//! One row per decision reason code: the inputs that produce it, and the facts it reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Duration;
use common::*;
use tessera_core::decision::{decide, ClockGuard, EmergencyGrant, Environment, HardwareCount, Inputs, Query, Reason};
use tessera_core::fingerprint::{ComponentKind, MatchOutcome};
use tessera_core::model::{EmergencyScope, LicenseStatus, Restriction, RestrictionKind, RestrictionMode};
use tessera_core::License;

struct Row {
    name: &'static str,
    license: Option<License>,
    tweak: fn(&mut Inputs<'_>),
    query: Query<'static>,
    expect: Reason,
}

fn base() -> License {
    sample_license()
}

fn with(f: fn(&mut License)) -> Option<License> {
    let mut l = base();
    f(&mut l);
    Some(l)
}

fn mismatch() -> MatchOutcome {
    MatchOutcome {
        matched: 1,
        required: 3,
        bound: 6,
        broken_deal_breaker: Some(ComponentKind::MachineId),
        unmatchable: None,
    }
}

#[test]
fn every_reason_code_has_a_row() {
    let now = at(2026, 6, 1);
    let q = Query::feature("export_pdf_docs");
    let rows = [
        Row { name: "valid", license: Some(base()), tweak: |_| {}, query: q, expect: Reason::Valid },
        Row {
            name: "in grace",
            license: Some(base()),
            tweak: |i| i.now = at(2027, 1, 10),
            query: q,
            expect: Reason::InGrace,
        },
        Row {
            name: "emergency lifts an expired lease",
            license: Some(base()),
            tweak: |i| {
                i.lease_expires_at = Some(at(2026, 5, 1));
                i.emergency =
                    Some(EmergencyGrant { expires_at: at(2026, 6, 2), scope: EmergencyScope::LicensedFeatures });
            },
            query: q,
            expect: Reason::EmergencyAccess,
        },
        Row { name: "no license", license: None, tweak: |_| {}, query: q, expect: Reason::NotActivated },
        Row {
            name: "bad signature",
            license: Some(base()),
            tweak: |i| i.signatures_valid = false,
            query: q,
            expect: Reason::SignatureInvalid,
        },
        Row {
            name: "clock rolled back",
            license: Some(base()),
            tweak: |i| i.clock = Some(ClockGuard { high_water: at(2026, 6, 3), tolerance: Duration::hours(1) }),
            query: q,
            expect: Reason::ClockTampered,
        },
        Row {
            name: "revoked",
            license: with(|l| l.status = LicenseStatus::Revoked),
            tweak: |_| {},
            query: q,
            expect: Reason::Revoked,
        },
        Row {
            name: "suspended",
            license: with(|l| l.status = LicenseStatus::Suspended),
            tweak: |_| {},
            query: q,
            expect: Reason::Suspended,
        },
        Row {
            name: "expired past grace",
            license: Some(base()),
            tweak: |i| i.now = at(2027, 2, 1),
            query: q,
            expect: Reason::Expired,
        },
        Row {
            name: "not yet valid",
            license: Some(base()),
            tweak: |i| i.now = at(2025, 12, 1),
            query: q,
            expect: Reason::NotYetValid,
        },
        Row {
            name: "other machine",
            license: Some(base()),
            tweak: |i| i.fingerprint = Some(mismatch()),
            query: q,
            expect: Reason::FingerprintMismatch,
        },
        Row {
            name: "lease over",
            license: Some(base()),
            tweak: |i| i.lease_expires_at = Some(at(2026, 5, 31)),
            query: q,
            expect: Reason::LeaseExpired,
        },
        Row {
            name: "denied country",
            license: with(|l| {
                l.restrictions = vec![Restriction {
                    kind: RestrictionKind::Geographic,
                    mode: RestrictionMode::Deny,
                    values: vec!["KP".into()],
                }]
            }),
            tweak: |i| i.environment = Environment { country: Some("kp"), ..Environment::default() },
            query: q,
            expect: Reason::Restricted,
        },
        Row {
            name: "build after maintenance",
            license: Some(base()),
            tweak: |i| i.build_date = Some(at(2027, 1, 2)),
            query: q,
            expect: Reason::MaintenanceExpired,
        },
        Row {
            name: "feature not on license",
            license: Some(base()),
            tweak: |_| {},
            query: Query::feature("teleportation"),
            expect: Reason::NotEntitled,
        },
        Row {
            name: "feature disabled",
            license: Some(base()),
            tweak: |_| {},
            query: Query::feature("sso_integration"),
            expect: Reason::FeatureDisabled,
        },
        Row {
            name: "feature expired",
            license: with(|l| l.features[4].expires_at = Some(at(2026, 6, 15))),
            tweak: |i| i.now = at(2026, 7, 1),
            query: Query::feature("multi_user_edit"),
            expect: Reason::FeatureExpired,
        },
        Row {
            name: "quota used up",
            license: Some(base()),
            tweak: |_| {},
            query: Query { feature: Some("export_pdf_docs"), amount: 1, used: 10_000 },
            expect: Reason::QuotaExceeded,
        },
        Row {
            name: "more cores than the activation counted",
            license: Some(base()),
            tweak: |i| i.hardware = Some(HardwareCount { counted: 4, present: 8 }),
            query: q,
            expect: Reason::HardwareExceedsLicense,
        },
        Row {
            name: "fewer or as many cores as counted",
            license: Some(base()),
            tweak: |i| i.hardware = Some(HardwareCount { counted: 4, present: 4 }),
            query: q,
            expect: Reason::Valid,
        },
    ];
    for reason in Reason::ALL {
        assert!(rows.iter().any(|r| r.expect == reason), "no table row for {reason:?}");
    }
    for row in &rows {
        let mut inputs = Inputs::new(now, row.license.as_ref());
        (row.tweak)(&mut inputs);
        let d = decide(&inputs, &row.query);
        assert_eq!(d.reason, row.expect, "{}", row.name);
        assert_eq!(d.allowed, row.expect.is_allowed(), "{}", row.name);
        let json = serde_json::to_value(d.reason).unwrap();
        assert_eq!(json, row.expect.as_str(), "stable wire name");
    }
}

#[test]
fn facts_explain_the_decision() {
    let l = base();
    let inputs = Inputs::new(at(2026, 6, 1), Some(&l));
    let d = decide(&inputs, &Query { feature: Some("export_pdf_docs"), amount: 5, used: 9_990 });
    assert!(d.allowed);
    assert_eq!((d.facts.limit, d.facts.used, d.facts.remaining), (Some(10_000), Some(9_990), Some(10)));
    assert_eq!(d.facts.expires_at, l.expires_at);
    assert_eq!(d.facts.grace_ends_at, Some(at(2027, 1, 15)));
    let d = decide(&inputs, &Query { feature: Some("export_pdf_docs"), amount: 11, used: 9_990 });
    assert_eq!(d.reason, Reason::QuotaExceeded);
}

#[test]
fn order_of_checks_puts_trust_first() {
    // Revoked and rolled back and mismatched: the clock speaks first, then status, then binding.
    let mut l = base();
    l.status = LicenseStatus::Revoked;
    let mut inputs = Inputs::new(at(2026, 6, 1), Some(&l));
    inputs.fingerprint = Some(mismatch());
    inputs.clock = Some(ClockGuard { high_water: at(2026, 7, 1), tolerance: Duration::minutes(5) });
    assert_eq!(decide(&inputs, &Query::feature("x")).reason, Reason::ClockTampered);
    inputs.clock = None;
    assert_eq!(decide(&inputs, &Query::feature("x")).reason, Reason::Revoked);
    // An emergency never overrides revocation.
    inputs.emergency = Some(EmergencyGrant { expires_at: at(2026, 6, 2), scope: EmergencyScope::AllFeatures });
    assert_eq!(decide(&inputs, &Query::feature("x")).reason, Reason::Revoked);
}

#[test]
fn emergency_ends_at_its_expiry_and_all_features_scope() {
    let grant = EmergencyGrant { expires_at: at(2026, 6, 2), scope: EmergencyScope::AllFeatures };
    let mut inputs = Inputs::new(at(2026, 6, 1), None);
    inputs.emergency = Some(grant);
    assert_eq!(decide(&inputs, &Query::feature("anything")).reason, Reason::EmergencyAccess);
    inputs.now = at(2026, 6, 2);
    assert_eq!(decide(&inputs, &Query::feature("anything")).reason, Reason::NotActivated);
    // Licensed-features scope keeps the license's entitlements.
    let l = base();
    let mut inputs = Inputs::new(at(2026, 6, 1), Some(&l));
    inputs.lease_expires_at = Some(at(2026, 5, 1));
    inputs.emergency = Some(EmergencyGrant { expires_at: at(2026, 6, 2), scope: EmergencyScope::LicensedFeatures });
    assert_eq!(decide(&inputs, &Query::feature("teleportation")).reason, Reason::NotEntitled);
}

#[test]
fn wildcard_and_restrictions() {
    let mut l = base();
    l.features.push(tessera_core::Feature::new("*"));
    l.restrictions = vec![
        Restriction { kind: RestrictionKind::IpRange, mode: RestrictionMode::Allow, values: vec!["10.0.0.0/8".into()] },
        Restriction { kind: RestrictionKind::Domain, mode: RestrictionMode::Allow, values: vec!["example.com".into()] },
    ];
    let mut inputs = Inputs::new(at(2026, 6, 1), Some(&l));
    assert_eq!(decide(&inputs, &Query::feature("unlisted")).reason, Reason::Valid, "unknown facts never deny");
    inputs.environment.ip = Some("10.1.2.3".parse().unwrap());
    inputs.environment.domain = Some("eu.example.com");
    assert_eq!(decide(&inputs, &Query::feature("unlisted")).reason, Reason::Valid);
    inputs.environment.domain = Some("badexample.com");
    assert_eq!(decide(&inputs, &Query::feature("unlisted")).reason, Reason::Restricted);
    inputs.environment.domain = None;
    inputs.environment.ip = Some("192.168.1.1".parse().unwrap());
    assert_eq!(decide(&inputs, &Query::feature("unlisted")).reason, Reason::Restricted);
}

#[test]
fn a_clock_behind_trusted_time_within_the_tolerance_decides_at_trusted_time() {
    // The license expires (grace ended) on 2027-01-15; trusted time is past that, the clock is set back
    // 50 minutes with a one-hour tolerance: not tampered, but expiry is judged at trusted time.
    let l = base();
    let trusted = at(2027, 1, 15) + Duration::minutes(30);
    let mut inputs = Inputs::new(trusted - Duration::minutes(50), Some(&l));
    assert_eq!(
        decide(&inputs, &Query::feature("export_pdf_docs")).reason,
        Reason::InGrace,
        "without a guard: the clock"
    );
    inputs.clock = Some(ClockGuard { high_water: trusted, tolerance: Duration::hours(1) });
    assert_eq!(decide(&inputs, &Query::feature("export_pdf_docs")).reason, Reason::Expired);
    // Leases and emergency codes too.
    let mut inputs = Inputs::new(at(2026, 6, 1), Some(&l));
    inputs.lease_expires_at = Some(at(2026, 6, 1) + Duration::minutes(10));
    inputs.clock =
        Some(ClockGuard { high_water: at(2026, 6, 1) + Duration::minutes(20), tolerance: Duration::hours(1) });
    assert_eq!(decide(&inputs, &Query::feature("export_pdf_docs")).reason, Reason::LeaseExpired);
    inputs.lease_expires_at = None;
    inputs.emergency =
        Some(EmergencyGrant { expires_at: at(2026, 6, 1) + Duration::minutes(15), scope: EmergencyScope::AllFeatures });
    assert_eq!(decide(&inputs, &Query::feature("export_pdf_docs")).reason, Reason::Valid, "the emergency has ended");
}

#[test]
fn a_licensed_features_emergency_still_binds_the_device() {
    let l = base();
    let mut inputs = Inputs::new(at(2026, 6, 1), Some(&l));
    inputs.lease_expires_at = Some(at(2026, 5, 1));
    inputs.fingerprint = Some(mismatch());
    inputs.emergency = Some(EmergencyGrant { expires_at: at(2026, 6, 2), scope: EmergencyScope::LicensedFeatures });
    assert_eq!(decide(&inputs, &Query::feature("export_pdf_docs")).reason, Reason::FingerprintMismatch);
    inputs.emergency = Some(EmergencyGrant { expires_at: at(2026, 6, 2), scope: EmergencyScope::AllFeatures });
    assert_eq!(decide(&inputs, &Query::feature("export_pdf_docs")).reason, Reason::EmergencyAccess);
}

#[test]
fn the_clock_is_tampered_only_past_the_tolerance_behind_trusted_time() {
    let trusted = at(2026, 6, 1);
    let guard = ClockGuard { high_water: trusted, tolerance: Duration::minutes(5) };
    assert!(!guard.is_tampered(trusted + Duration::days(1)), "ahead");
    assert!(!guard.is_tampered(trusted), "at trusted time");
    assert!(!guard.is_tampered(trusted - Duration::minutes(5)), "exactly the tolerance behind");
    assert!(guard.is_tampered(trusted - Duration::minutes(5) - Duration::microseconds(1)));
    // No tolerance: any step behind is tampering; a negative one (a misconfiguration) refuses even a clock ahead.
    assert!(ClockGuard { tolerance: Duration::zero(), ..guard }.is_tampered(trusted - Duration::microseconds(1)));
    assert!(ClockGuard { tolerance: Duration::seconds(-1), ..guard }.is_tampered(trusted));
    assert!(!ClockGuard { tolerance: Duration::seconds(-1), ..guard }.is_tampered(trusted + Duration::seconds(1)));
}

/// `decided_until` against `decide`: walking the clock over every threshold of a license, the decision taken at one
/// instant is the decision at every later instant before its `decided_until`.
#[test]
fn a_decision_stands_until_decided_until() {
    use tessera_core::decided_until;

    let t0 = at(2026, 6, 1);
    let h = Duration::hours;
    let mut l = base();
    l.starts_at = t0;
    l.expires_at = Some(t0 + h(6));
    l.grace_days = 1;
    let mut feature = tessera_core::Feature::new("timed");
    feature.expires_at = Some(t0 + h(3));
    l.features.push(feature);
    // A quota per day: its facts name the period's end, so the decision changes at midnight.
    l.features.push(
        tessera_core::Feature::new("daily")
            .with_limit(5, tessera_core::model::LimitType::Count)
            .per(tessera_core::model::LimitPeriod::Day),
    );
    l.features.push(tessera_core::Feature::new("*"));
    let guard = ClockGuard { high_water: t0 - h(1), tolerance: h(1) };
    let emergency = |hours, scope| EmergencyGrant { expires_at: t0 + h(hours), scope };
    // (lease, emergency, clock guard): each threshold decides something in at least one of them.
    let setups = [
        (None, None, None),
        (Some(t0 + h(4)), None, Some(guard)),
        (Some(t0 + h(1)), Some(emergency(2, EmergencyScope::LicensedFeatures)), Some(guard)),
        (None, Some(emergency(8, EmergencyScope::AllFeatures)), None),
    ];
    let thresholds =
        [t0, t0 + h(1), t0 + h(2), t0 + h(3), t0 + h(4), t0 + h(6), t0 + h(8), t0 + h(12), t0 + h(30), t0 - h(2)];
    // Every threshold, a microsecond either side, and a coarse walk from before the first to after the last.
    let mut instants: Vec<_> = thresholds
        .iter()
        .flat_map(|t| [*t - Duration::microseconds(1), *t, *t + Duration::microseconds(1)])
        .chain((0..80).map(|i| t0 - h(4) + Duration::minutes(29) * i))
        .collect();
    instants.sort();
    let mut changes = 0;
    for (lease, emergency, clock) in setups {
        let make = |now| Inputs { lease_expires_at: lease, emergency, clock, ..Inputs::new(now, Some(&l)) };
        for feature in ["export_pdf_docs", "timed", "daily", "unlisted"] {
            let query = Query::feature(feature);
            for (n, now) in instants.iter().enumerate() {
                let decision = decide(&make(*now), &query);
                let until = decided_until(&make(*now), &query);
                for later in &instants[n + 1..] {
                    let later_decision = decide(&make(*later), &query);
                    if until.is_none_or(|u| *later < u) {
                        assert_eq!(later_decision, decision, "{feature}: decided at {now} until {until:?}; at {later}");
                    }
                    changes += usize::from(later_decision != decision);
                }
            }
        }
    }
    assert!(changes > 0, "the walk crosses thresholds that change the decision");
}
