//! The decision function: one pure function, used by the agent offline and by the server online.
//!
//! Time and every fact are passed in; nothing is read from the environment. The result is allowed or denied
//! with a stable reason code and the facts behind it. Checks run in a fixed order, trust first:
//!
//! 1. activated at all (`NOT_ACTIVATED`), signatures (`SIGNATURE_INVALID`), clock (`CLOCK_TAMPERED`: the clock is
//!    more than the tolerance behind trusted time; within it, every later check uses the later of the two);
//! 2. license status (`REVOKED`, `SUSPENDED`, `EXPIRED` when the server marked it so);
//! 3. device binding (`FINGERPRINT_MISMATCH`) and lease (`LEASE_EXPIRED`);
//! 4. validity window (`NOT_YET_VALID`, grace → `IN_GRACE`, then `EXPIRED`), restrictions (`RESTRICTED`),
//!    maintenance (`MAINTENANCE_EXPIRED`);
//! 5. the feature (`NOT_ENTITLED`, `FEATURE_DISABLED`, `FEATURE_EXPIRED`, `QUOTA_EXCEEDED`).
//!
//! An active emergency grant lifts the lease, activation and expiry checks, and (all-features scope only) the
//! device binding; never revocation, suspension, signatures or the clock. It allows with `EMERGENCY_ACCESS`.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::fingerprint::MatchOutcome;
use crate::model::{EmergencyScope, License, LicenseStatus, LimitType, Restriction, RestrictionKind, RestrictionMode};

/// Stable reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    Valid,
    InGrace,
    EmergencyAccess,
    NotActivated,
    SignatureInvalid,
    ClockTampered,
    Revoked,
    Suspended,
    Expired,
    NotYetValid,
    FingerprintMismatch,
    LeaseExpired,
    Restricted,
    MaintenanceExpired,
    NotEntitled,
    FeatureDisabled,
    FeatureExpired,
    QuotaExceeded,
    HardwareExceedsLicense,
}

impl Reason {
    pub const ALL: [Reason; 19] = [
        Reason::Valid,
        Reason::InGrace,
        Reason::EmergencyAccess,
        Reason::NotActivated,
        Reason::SignatureInvalid,
        Reason::ClockTampered,
        Reason::Revoked,
        Reason::Suspended,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::FingerprintMismatch,
        Reason::LeaseExpired,
        Reason::Restricted,
        Reason::MaintenanceExpired,
        Reason::NotEntitled,
        Reason::FeatureDisabled,
        Reason::FeatureExpired,
        Reason::QuotaExceeded,
        Reason::HardwareExceedsLicense,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Valid => "VALID",
            Reason::InGrace => "IN_GRACE",
            Reason::EmergencyAccess => "EMERGENCY_ACCESS",
            Reason::NotActivated => "NOT_ACTIVATED",
            Reason::SignatureInvalid => "SIGNATURE_INVALID",
            Reason::ClockTampered => "CLOCK_TAMPERED",
            Reason::Revoked => "REVOKED",
            Reason::Suspended => "SUSPENDED",
            Reason::Expired => "EXPIRED",
            Reason::NotYetValid => "NOT_YET_VALID",
            Reason::FingerprintMismatch => "FINGERPRINT_MISMATCH",
            Reason::LeaseExpired => "LEASE_EXPIRED",
            Reason::Restricted => "RESTRICTED",
            Reason::MaintenanceExpired => "MAINTENANCE_EXPIRED",
            Reason::NotEntitled => "NOT_ENTITLED",
            Reason::FeatureDisabled => "FEATURE_DISABLED",
            Reason::FeatureExpired => "FEATURE_EXPIRED",
            Reason::QuotaExceeded => "QUOTA_EXCEEDED",
            Reason::HardwareExceedsLicense => "HARDWARE_EXCEEDS_LICENSE",
        }
    }

    pub fn is_allowed(self) -> bool {
        matches!(self, Reason::Valid | Reason::InGrace | Reason::EmergencyAccess)
    }

    /// One sentence for people: what happened and what to do.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::Valid => "the license allows this",
            Reason::InGrace => "the license has expired but is within its grace period: renew it soon",
            Reason::EmergencyAccess => "allowed by an emergency code until it expires: restore normal activation",
            Reason::NotActivated => "this machine is not activated: run `tessera-agent activate` or apply a code",
            Reason::SignatureInvalid => "the cached license or token failed its signature check: activate again",
            Reason::ClockTampered => "the system clock is behind the last trusted time: correct the clock",
            Reason::Revoked => "the license was revoked by the vendor",
            Reason::Suspended => "the license is suspended: contact the vendor",
            Reason::Expired => "the license has expired: renew it",
            Reason::NotYetValid => "the license is not valid yet",
            Reason::FingerprintMismatch => "this machine differs from the one activated: activate it again",
            Reason::LeaseExpired => "the activation lease ran out: connect to the license server to renew it",
            Reason::Restricted => "the license does not allow use from this location, domain or network",
            Reason::MaintenanceExpired => "this version was released after maintenance ended: renew maintenance",
            Reason::NotEntitled => "the license does not include this feature",
            Reason::FeatureDisabled => "this feature is disabled on the license",
            Reason::FeatureExpired => "this feature's entitlement has expired",
            Reason::QuotaExceeded => "the feature's quota is used up",
            Reason::HardwareExceedsLicense => {
                "this machine has more CPU sockets or cores than its activation counted: activate it again (it \
                 takes as many seats as it has sockets or cores)"
            }
        }
    }
}

/// The facts behind a decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Facts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_ends_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_expires_at: Option<DateTime<Utc>>,
    /// Quota of the feature (`None`: unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// What `limit`, `used` and `remaining` count (set with `limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_type: Option<LimitType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<MatchOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    pub facts: Facts,
}

/// Clock rollback guard: the highest trusted time seen, and how far behind it the clock may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockGuard {
    pub high_water: DateTime<Utc>,
    pub tolerance: Duration,
}

impl ClockGuard {
    /// True when `now` is more than the tolerance behind trusted time (CLOCK_TAMPERED).
    #[inline]
    pub fn is_tampered(&self, now: DateTime<Utc>) -> bool {
        // A clock at or past trusted time, the common case, needs no date arithmetic.
        if now >= self.high_water && self.tolerance >= Duration::zero() {
            return false;
        }
        now.checked_add_signed(self.tolerance).unwrap_or(DateTime::<Utc>::MAX_UTC) < self.high_water
    }
}

/// Where the request comes from, when known. Unknown facts never deny.
#[derive(Debug, Clone, Copy, Default)]
pub struct Environment<'a> {
    pub country: Option<&'a str>,
    pub domain: Option<&'a str>,
    pub ip: Option<IpAddr>,
}

/// An emergency code in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmergencyGrant {
    pub expires_at: DateTime<Utc>,
    pub scope: EmergencyScope,
}

/// Everything the decision depends on except the question.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub now: DateTime<Utc>,
    /// `None`: no license on this machine.
    pub license: Option<&'a License>,
    /// Both the license and the activation token verified.
    pub signatures_valid: bool,
    /// `None` when the device binding is not checked (server side, or not bound).
    pub fingerprint: Option<MatchOutcome>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub clock: Option<ClockGuard>,
    /// Release date of the running software build, for the maintenance check.
    pub build_date: Option<DateTime<Utc>>,
    pub environment: Environment<'a>,
    pub emergency: Option<EmergencyGrant>,
    /// PER_CPU / PER_CORE: the sockets or cores the activation counted, and those the machine has now.
    pub hardware: Option<HardwareCount>,
}

/// Sockets or cores: counted at activation (the seats taken) and present on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardwareCount {
    pub counted: u32,
    pub present: u32,
}

impl<'a> Inputs<'a> {
    /// Inputs with only the essentials; set the other fields as known.
    pub fn new(now: DateTime<Utc>, license: Option<&'a License>) -> Self {
        Inputs {
            now,
            license,
            signatures_valid: true,
            fingerprint: None,
            lease_expires_at: None,
            clock: None,
            build_date: None,
            environment: Environment::default(),
            emergency: None,
            hardware: None,
        }
    }
}

/// The question: a feature (or the license as a whole) and how much of its quota to use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    /// `None`: is the license usable at all.
    pub feature: Option<&'a str>,
    /// Quota units this use needs (0 for a plain check).
    pub amount: u64,
    /// Quota units already used in the current period.
    pub used: u64,
}

impl<'a> Query<'a> {
    pub fn feature(id: &'a str) -> Self {
        Query { feature: Some(id), amount: 0, used: 0 }
    }
}

fn deny(reason: Reason, facts: Facts) -> Decision {
    Decision { allowed: false, reason, facts }
}

/// Decides. See the module documentation for the order of checks.
pub fn decide(inputs: &Inputs<'_>, query: &Query<'_>) -> Decision {
    // With a clock guard, time is the later of the clock and trusted time: a clock held back within the
    // tolerance does not hold back expiry, leases or emergency codes either.
    let now = match inputs.clock {
        Some(c) => inputs.now.max(c.high_water),
        None => inputs.now,
    };
    let emergency = inputs.emergency.filter(|e| now < e.expires_at);
    let mut facts = Facts {
        lease_expires_at: inputs.lease_expires_at,
        fingerprint: inputs.fingerprint,
        trusted_time: inputs.clock.map(|c| c.high_water),
        emergency_expires_at: emergency.map(|e| e.expires_at),
        ..Facts::default()
    };

    if !inputs.signatures_valid {
        return deny(Reason::SignatureInvalid, facts);
    }
    if inputs.clock.is_some_and(|c| c.is_tampered(inputs.now)) {
        return deny(Reason::ClockTampered, facts);
    }
    let Some(license) = inputs.license else {
        return match emergency {
            Some(e) if e.scope == EmergencyScope::AllFeatures => {
                Decision { allowed: true, reason: Reason::EmergencyAccess, facts }
            }
            _ => deny(Reason::NotActivated, facts),
        };
    };
    facts.expires_at = license.expires_at;
    facts.grace_ends_at = license.grace_ends_at();

    match license.status {
        LicenseStatus::Revoked => return deny(Reason::Revoked, facts),
        LicenseStatus::Suspended => return deny(Reason::Suspended, facts),
        LicenseStatus::Expired if emergency.is_none() => return deny(Reason::Expired, facts),
        LicenseStatus::Expired | LicenseStatus::Active => {}
    }
    // A licensed-features emergency keeps the license's device binding: it stands in for the server (lease,
    // expiry), not for the machine. Only an all-features code, for a machine with no license, lifts it.
    if emergency.is_none_or(|e| e.scope == EmergencyScope::LicensedFeatures)
        && inputs.fingerprint.is_some_and(|f| !f.is_match())
    {
        return deny(Reason::FingerprintMismatch, facts);
    }
    if emergency.is_none() && inputs.lease_expires_at.is_some_and(|l| now >= l) {
        return deny(Reason::LeaseExpired, facts);
    }
    // The machine grew (more sockets or cores than the seats its activation took): like a changed machine.
    if emergency.is_none_or(|e| e.scope == EmergencyScope::LicensedFeatures)
        && inputs.hardware.is_some_and(|h| h.present > h.counted)
    {
        return deny(Reason::HardwareExceedsLicense, facts);
    }
    if now < license.starts_at {
        return deny(Reason::NotYetValid, facts);
    }
    let mut ok_reason = Reason::Valid;
    if let Some(expires) = license.expires_at {
        if now >= expires {
            if facts.grace_ends_at.is_some_and(|g| now < g) {
                ok_reason = Reason::InGrace;
            } else if emergency.is_none() {
                return deny(Reason::Expired, facts);
            }
        }
    }
    if emergency.is_some() {
        ok_reason = Reason::EmergencyAccess;
    }
    if !license.restrictions.is_empty() && !restrictions_allow(&license.restrictions, &inputs.environment) {
        return deny(Reason::Restricted, facts);
    }
    if let (Some(maint), Some(build)) = (license.maintenance_expires_at, inputs.build_date) {
        if build > maint {
            return deny(Reason::MaintenanceExpired, facts);
        }
    }

    let Some(feature_id) = query.feature else {
        return Decision { allowed: true, reason: ok_reason, facts };
    };
    let feature = match license.feature(feature_id) {
        Some(f) => f,
        None if emergency.is_some_and(|e| e.scope == EmergencyScope::AllFeatures) => {
            return Decision { allowed: true, reason: ok_reason, facts };
        }
        None => return deny(Reason::NotEntitled, facts),
    };
    facts.feature_expires_at = feature.expires_at;
    if !feature.enabled {
        return deny(Reason::FeatureDisabled, facts);
    }
    if feature.expires_at.is_some_and(|e| now >= e) {
        return deny(Reason::FeatureExpired, facts);
    }
    if feature.limit_value >= 0 {
        let limit = feature.limit_value;
        let used = query.used;
        let after = used.saturating_add(query.amount);
        facts.limit = Some(limit);
        facts.limit_type = Some(feature.limit_type);
        facts.used = Some(used);
        facts.remaining = Some(limit.saturating_sub(i64::try_from(used).unwrap_or(i64::MAX)).max(0));
        if after > limit as u64 {
            return deny(Reason::QuotaExceeded, facts);
        }
    }
    Decision { allowed: true, reason: ok_reason, facts }
}

/// How long [`decide`]'s answer stands: the first instant after `inputs.now` at which moving `inputs.now` forward
/// could change it (`None`: never, given these inputs). Every other input held fixed, the decision is the same for
/// every `now` in `inputs.now..decided_until(..)`, so a caller may reuse it there.
///
/// The decision reads time only through threshold tests of the form `now >= t` (or their negation): the clock
/// guard's tolerance edge, the lease, the license's start, expiry and grace end, the emergency grant's end and the
/// feature's expiry, and the end of the current period of a feature's quota per period. This is the earliest of those still ahead. (The guard's high-water mark is none: below it
/// every test is taken at the mark, which the thresholds already passed or not.) A new time test in [`decide`] belongs here too;
/// `shared/tests/decisions.rs` walks the clock across every threshold to check the two agree.
pub fn decided_until(inputs: &Inputs<'_>, query: &Query<'_>) -> Option<DateTime<Utc>> {
    let license = inputs.license;
    let feature = license.zip(query.feature).and_then(|(l, f)| l.feature(f));
    let thresholds = [
        // is_tampered flips where `now + tolerance` reaches the high-water mark.
        inputs.clock.map(|c| c.high_water.checked_sub_signed(c.tolerance).unwrap_or(DateTime::<Utc>::MIN_UTC)),
        inputs.lease_expires_at,
        inputs.emergency.map(|e| e.expires_at),
        license.map(|l| l.starts_at),
        license.and_then(|l| l.expires_at),
        license.and_then(|l| l.grace_ends_at()),
        feature.and_then(|f| f.expires_at),
        // A quota per period starts afresh at the period's end (the caller's `used` is for the current period).
        license.zip(feature).and_then(|(l, f)| {
            let now = inputs.clock.map_or(inputs.now, |c| inputs.now.max(c.high_water));
            l.quota_window(f, now).map(|w| w.end)
        }),
    ];
    thresholds.into_iter().flatten().filter(|t| *t > inputs.now).min()
}

/// Every restriction whose fact is known must pass.
pub fn restrictions_allow(restrictions: &[Restriction], env: &Environment<'_>) -> bool {
    restrictions.iter().all(|r| {
        let hit = match r.kind {
            RestrictionKind::Geographic => env.country.map(|c| r.values.iter().any(|v| v.eq_ignore_ascii_case(c))),
            RestrictionKind::Domain => env.domain.map(|d| r.values.iter().any(|v| domain_matches(d, v))),
            RestrictionKind::IpRange => env.ip.map(|ip| r.values.iter().any(|v| cidr_contains(v, ip))),
        };
        match (hit, r.mode) {
            (None, _) => true,
            (Some(h), RestrictionMode::Allow) => h,
            (Some(h), RestrictionMode::Deny) => !h,
        }
    })
}

fn domain_matches(domain: &str, rule: &str) -> bool {
    let d = domain.trim_end_matches('.');
    let r = rule.trim_start_matches("*.").trim_end_matches('.');
    d.eq_ignore_ascii_case(r)
        || (d.len() > r.len()
            && d.as_bytes()[d.len() - r.len() - 1] == b'.'
            && d[d.len() - r.len()..].eq_ignore_ascii_case(r))
}

/// `10.0.0.0/8`, `2001:db8::/32` or a single address (an IPv4 range never holds an IPv6 address, mapped or not:
/// callers pass the IPv4 form of a mapped address).
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let cidr = cidr.trim();
    match cidr.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => cidr.parse::<IpAddr>().is_ok_and(|a| a == ip),
    }
}

#[cfg(test)]
mod tests {
    use super::cidr_contains;

    #[test]
    fn ip_ranges_hold_what_they_should_and_nothing_else() {
        let ip = |s: &str| s.parse().unwrap();
        for (range, addr, inside) in [
            ("203.0.113.0/24", "203.0.113.77", true),
            ("203.0.113.0/24", "203.0.114.1", false),
            ("10.0.0.1/8", "10.200.3.4", true), // host bits in the range are ignored, as the server stores it
            ("0.0.0.0/0", "198.51.100.1", true),
            (" 198.51.100.7 ", "198.51.100.7", true),
            ("198.51.100.7", "198.51.100.8", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("203.0.113.0/24", "::ffff:203.0.113.5", false), // callers pass the IPv4 form
            ("203.0.113.0/33", "203.0.113.5", false),
            ("not a range", "203.0.113.5", false),
            ("", "203.0.113.5", false),
        ] {
            assert_eq!(cidr_contains(range, ip(addr)), inside, "{range:?} holds {addr}");
        }
    }
}
