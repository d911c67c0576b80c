//! The license model shared by server and agent.
//!
//! Serde names are part of the wire format (license files, activation tokens, the HTTP API): they are stable and
//! pinned by the test vectors in `keys/test/vectors`. Enum values are `SCREAMING_SNAKE_CASE`, fields `snake_case`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fingerprint::MatchPolicy;

/// Commercial type of a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseType {
    Perpetual,
    Subscription,
    Trial,
    Evaluation,
    Concurrent,
    NamedUser,
}

impl LicenseType {
    pub const ALL: [LicenseType; 6] = [
        LicenseType::Perpetual,
        LicenseType::Subscription,
        LicenseType::Trial,
        LicenseType::Evaluation,
        LicenseType::Concurrent,
        LicenseType::NamedUser,
    ];

    /// Floating licenses hold seats only while heartbeats keep coming.
    pub fn is_floating(self) -> bool {
        matches!(self, LicenseType::Concurrent)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LicenseType::Perpetual => "PERPETUAL",
            LicenseType::Subscription => "SUBSCRIPTION",
            LicenseType::Trial => "TRIAL",
            LicenseType::Evaluation => "EVALUATION",
            LicenseType::Concurrent => "CONCURRENT",
            LicenseType::NamedUser => "NAMED_USER",
        }
    }
}

/// How seats are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseModel {
    PerSeat,
    PerDevice,
    PerCpu,
    PerCore,
    SiteLicense,
    Enterprise,
}

/// The processors of a machine, as the agent counts them at activation (PER_CPU and PER_CORE licenses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuCount {
    pub sockets: u32,
    pub cores: u32,
}

impl CpuCount {
    /// At most this many of either (a bound on what a report may claim, not on real machines).
    pub const MAX: u32 = 65_536;
}

impl LicenseModel {
    /// Seats are not limited (within the license's restrictions).
    pub fn is_unlimited(self) -> bool {
        matches!(self, LicenseModel::SiteLicense | LicenseModel::Enterprise)
    }

    /// Whether one activation takes as many seats as the machine has sockets (PER_CPU) or cores (PER_CORE).
    pub fn counts_processors(self) -> bool {
        matches!(self, LicenseModel::PerCpu | LicenseModel::PerCore)
    }

    /// The seats one machine takes: its sockets (PER_CPU), its cores (PER_CORE), else 1; `None` when the model
    /// counts processors and no count is known.
    pub fn seats_for(self, cpu: Option<CpuCount>) -> Option<u32> {
        match self {
            LicenseModel::PerCpu => cpu.map(|c| c.sockets.max(1)),
            LicenseModel::PerCore => cpu.map(|c| c.cores.max(1)),
            _ => Some(1),
        }
    }

    pub const ALL: [LicenseModel; 6] = [
        LicenseModel::PerSeat,
        LicenseModel::PerDevice,
        LicenseModel::PerCpu,
        LicenseModel::PerCore,
        LicenseModel::SiteLicense,
        LicenseModel::Enterprise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LicenseModel::PerSeat => "PER_SEAT",
            LicenseModel::PerDevice => "PER_DEVICE",
            LicenseModel::PerCpu => "PER_CPU",
            LicenseModel::PerCore => "PER_CORE",
            LicenseModel::SiteLicense => "SITE_LICENSE",
            LicenseModel::Enterprise => "ENTERPRISE",
        }
    }
}

/// Lifecycle state of a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseStatus {
    Active,
    Suspended,
    Revoked,
    Expired,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "ACTIVE",
            LicenseStatus::Suspended => "SUSPENDED",
            LicenseStatus::Revoked => "REVOKED",
            LicenseStatus::Expired => "EXPIRED",
        }
    }
}

/// What a feature's limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LimitType {
    #[default]
    Count,
    Size,
    Duration,
    Bandwidth,
}

impl LimitType {
    pub const ALL: [LimitType; 4] = [LimitType::Count, LimitType::Size, LimitType::Duration, LimitType::Bandwidth];

    /// The unit quota values of this type are in: COUNT events, SIZE bytes, DURATION seconds, BANDWIDTH bytes
    /// (transferred in the quota's period).
    pub fn unit(self) -> &'static str {
        match self {
            LimitType::Count => "",
            LimitType::Size | LimitType::Bandwidth => "bytes",
            LimitType::Duration => "seconds",
        }
    }
}

/// The span a feature's quota counts over; it starts afresh at each boundary (`LIFETIME`: never).
///
/// Periods are whole UTC days: DAY from 00:00 UTC, MONTH from 00:00 UTC on the 1st, BILLING_PERIOD from 00:00 UTC
/// on the date of the license's [`BillingCycle`] anchor plus whole cycles (without a cycle: the license's start,
/// monthly). A use counts in the period its time falls in. Server and agent both take periods from
/// [`License::quota_window`], so they count the same uses in the same period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LimitPeriod {
    Day,
    Month,
    BillingPeriod,
    #[default]
    Lifetime,
}

impl LimitPeriod {
    pub const ALL: [LimitPeriod; 4] =
        [LimitPeriod::Lifetime, LimitPeriod::Day, LimitPeriod::Month, LimitPeriod::BillingPeriod];

    pub fn is_lifetime(&self) -> bool {
        *self == LimitPeriod::Lifetime
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LimitPeriod::Day => "DAY",
            LimitPeriod::Month => "MONTH",
            LimitPeriod::BillingPeriod => "BILLING_PERIOD",
            LimitPeriod::Lifetime => "LIFETIME",
        }
    }
}

/// A subscription's billing cycle as the license carries it: periods start on the anchor's UTC date and every
/// `months` months after it (the same day of the month, or the month's last day where it is shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BillingCycle {
    pub anchor: DateTime<Utc>,
    /// 1 (monthly) to 12 (annual).
    pub months: u32,
}

impl BillingCycle {
    pub const MAX_MONTHS: u32 = 12;
}

/// The current period of a quota: uses at `start <= t < end` count against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl QuotaWindow {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// The window of `period` that holds `at` (`None` for LIFETIME, or past the calendar's end).
    pub fn of(
        period: LimitPeriod,
        cycle: Option<BillingCycle>,
        starts_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        use chrono::{Datelike, Months, NaiveDate};
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let day = at.date_naive();
        let (start, end) = match period {
            LimitPeriod::Lifetime => return None,
            LimitPeriod::Day => (day, day.succ_opt()?),
            LimitPeriod::Month => {
                let first = day.with_day(1)?;
                (first, first.checked_add_months(Months::new(1))?)
            }
            LimitPeriod::BillingPeriod => {
                let (anchor, months) = match cycle {
                    Some(c) => (c.anchor.date_naive(), c.months.clamp(1, BillingCycle::MAX_MONTHS)),
                    None => (starts_at.date_naive(), 1),
                };
                // Whole cycles from the anchor, each counted from the anchor itself (so a 31st-of-the-month anchor
                // comes back to the 31st after a short month).
                let nth = |k: i64| -> Option<NaiveDate> {
                    let m = u32::try_from(k.unsigned_abs().checked_mul(u64::from(months))?).ok()?;
                    if k >= 0 {
                        anchor.checked_add_months(Months::new(m))
                    } else {
                        anchor.checked_sub_months(Months::new(m))
                    }
                };
                let elapsed =
                    i64::from(day.year() - anchor.year()) * 12 + i64::from(day.month0()) - i64::from(anchor.month0());
                let mut k = elapsed.div_euclid(i64::from(months));
                while nth(k)? > day {
                    k -= 1;
                }
                while nth(k + 1)? <= day {
                    k += 1;
                }
                (nth(k)?, nth(k + 1)?)
            }
        };
        Some(QuotaWindow { start: midnight(start)?, end: midnight(end)? })
    }
}

/// `limit_value` meaning "no limit".
pub const UNLIMITED: i64 = -1;

/// The feature id that entitles every feature not listed explicitly.
pub const WILDCARD_FEATURE: &str = "*";

/// One feature entitlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feature {
    /// Stable identifier the vendor's code checks, e.g. `export_pdf`; `*` for "all features".
    pub id: String,
    /// Human-readable name; defaults to the id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Quota; [`UNLIMITED`] (-1) means no limit.
    #[serde(default = "default_unlimited")]
    pub limit_value: i64,
    #[serde(default)]
    pub limit_type: LimitType,
    /// The span the quota counts over (LIFETIME, the default, is left out of the JSON).
    #[serde(default, skip_serializing_if = "LimitPeriod::is_lifetime")]
    pub limit_period: LimitPeriod,
    /// The feature alone stops at this instant, independent of the license window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

fn default_true() -> bool {
    true
}
fn default_unlimited() -> i64 {
    UNLIMITED
}

impl Feature {
    /// An enabled, unlimited, non-expiring feature.
    pub fn new(id: impl Into<String>) -> Self {
        Feature {
            id: id.into(),
            name: String::new(),
            enabled: true,
            limit_value: UNLIMITED,
            limit_type: LimitType::Count,
            limit_period: LimitPeriod::Lifetime,
            expires_at: None,
        }
    }

    /// The quota counts per `period` (see [`LimitPeriod`]).
    pub fn per(mut self, period: LimitPeriod) -> Self {
        self.limit_period = period;
        self
    }

    pub fn with_limit(mut self, limit: i64, limit_type: LimitType) -> Self {
        self.limit_value = limit;
        self.limit_type = limit_type;
        self
    }

    pub fn is_unlimited(&self) -> bool {
        self.limit_value < 0
    }

    /// Checks the id: 1..=64 characters of `A-Z a-z 0-9 _ - . :`, or exactly `*`.
    pub fn validate_id(id: &str) -> Result<(), String> {
        if id == WILDCARD_FEATURE {
            return Ok(());
        }
        if id.is_empty() || id.len() > 64 {
            return Err(format!("feature id must be 1 to 64 characters, got {}", id.len()));
        }
        if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))) {
            return Err(format!("feature id {id:?} contains {bad:?}; use letters, digits, '_', '-', '.' or ':'"));
        }
        Ok(())
    }
}

/// Restriction kinds. Facts for them (country, domain, IP) are known on the server and, when the vendor's
/// application supplies them, on the agent; an unknown fact never denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestrictionKind {
    Geographic,
    Domain,
    IpRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestrictionMode {
    Allow,
    Deny,
}

/// `GEOGRAPHIC` values are ISO 3166 alpha-2 codes, `DOMAIN` values domain suffixes, `IP_RANGE` values CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Restriction {
    pub kind: RestrictionKind,
    pub mode: RestrictionMode,
    pub values: Vec<String>,
}

/// A license as signed into license files and as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct License {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub product_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    pub license_type: LicenseType,
    pub license_model: LicenseModel,
    pub status: LicenseStatus,
    /// Seats; 0 means unlimited (site and enterprise licenses).
    pub max_activations: u32,
    pub issued_at: DateTime<Utc>,
    pub starts_at: DateTime<Utc>,
    /// `None`: perpetual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Builds released after this instant are not covered (perpetual fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub grace_days: u32,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<Restriction>,
    #[serde(default)]
    pub fingerprint_policy: MatchPolicy,
    /// How often an activated device must check in; also sets the lease for floating licenses.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: u32,
    /// How long an activation works without reaching the server.
    #[serde(default = "default_lease")]
    pub lease_secs: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// The billing cycle BILLING_PERIOD quotas reset with (a subscription's license carries its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_cycle: Option<BillingCycle>,
}

pub const DEFAULT_HEARTBEAT_SECS: u32 = 3600;
pub const DEFAULT_LEASE_SECS: u32 = 7 * 24 * 3600;

fn default_heartbeat() -> u32 {
    DEFAULT_HEARTBEAT_SECS
}
fn default_lease() -> u32 {
    DEFAULT_LEASE_SECS
}

impl License {
    /// The entitlement for `feature_id`: an exact match first, then the wildcard.
    pub fn feature(&self, feature_id: &str) -> Option<&Feature> {
        let mut wildcard = None;
        for f in &self.features {
            if f.id == feature_id {
                return Some(f);
            }
            if f.id == WILDCARD_FEATURE {
                wildcard = Some(f);
            }
        }
        wildcard
    }

    /// The period of `feature`'s quota that holds `at`: `None` when the quota is a lifetime total (or there is none).
    #[inline]
    pub fn quota_window(&self, feature: &Feature, at: DateTime<Utc>) -> Option<QuotaWindow> {
        if feature.limit_period.is_lifetime() || feature.is_unlimited() {
            return None;
        }
        QuotaWindow::of(feature.limit_period, self.billing_cycle, self.starts_at, at)
    }

    /// The end of the grace period, if the license expires.
    pub fn grace_ends_at(&self) -> Option<DateTime<Utc>> {
        // Saturating: a far-future expiry must not overflow (and panic) on the hot path.
        self.expires_at.map(|e| {
            e.checked_add_signed(chrono::Duration::days(i64::from(self.grace_days))).unwrap_or(DateTime::<Utc>::MAX_UTC)
        })
    }
}

/// What to do with a license's activations when it moves to another customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferPolicy {
    /// Existing devices keep working for the new owner.
    Keep,
    /// Every activation is released; the new owner activates afresh.
    #[default]
    Release,
}

/// What an emergency code unlocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EmergencyScope {
    /// The features of the license file already on the machine.
    #[default]
    LicensedFeatures,
    /// Every feature (for a machine that has no license file yet).
    AllFeatures,
}

/// Emergency code policy of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmergencyPolicy {
    pub enabled: bool,
    /// Default validity of a code; at most [`EmergencyPolicy::MAX_VALIDITY_HOURS`].
    pub validity_hours: u32,
    /// Codes per license in a rolling 30 days.
    pub max_per_30_days: u32,
    pub scope: EmergencyScope,
    /// Codes must be bound to one device (issued for its request code): an unbound code works on any machine
    /// that holds the license key, for as long as it is valid. On unless a template turns it off; templates
    /// stored before the setting existed keep issuing unbound codes (migration 0006).
    #[serde(default = "default_true")]
    pub require_binding: bool,
}

impl EmergencyPolicy {
    pub const MAX_VALIDITY_HOURS: u32 = 7 * 24;
}

impl Default for EmergencyPolicy {
    fn default() -> Self {
        EmergencyPolicy {
            enabled: true,
            validity_hours: 24,
            max_per_30_days: 3,
            scope: EmergencyScope::LicensedFeatures,
            require_binding: true,
        }
    }
}

/// How long an offline grant works before the device must renew it with a new request/response pair.
///
/// On the wire: a number of days, or the string `"never"` (which a template must say explicitly; a grant that
/// never ends cannot be handed back with a deactivation receipt, because the seat could then never be counted
/// free while a copy of the device's state still runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineLease {
    Days(u32),
    Never,
}

impl OfflineLease {
    pub const DEFAULT_DAYS: u32 = 30;
    pub const MAX_DAYS: u32 = 3650;
}

impl Default for OfflineLease {
    fn default() -> Self {
        OfflineLease::Days(OfflineLease::DEFAULT_DAYS)
    }
}

impl Serialize for OfflineLease {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OfflineLease::Days(d) => s.serialize_u32(*d),
            OfflineLease::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for OfflineLease {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Days(u32),
            Word(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("offline.lease_days must be a number of days or the string \"never\"")
        })? {
            Raw::Days(n) => Ok(OfflineLease::Days(n)),
            Raw::Word(w) if w == "never" => Ok(OfflineLease::Never),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "offline.lease_days must be a number of days or \"never\", not {w:?}"
            ))),
        }
    }
}

/// When the seat of an offline grant handed back with a deactivation receipt is free again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfflineRelease {
    /// When the released grant's lease would have ended: a copy of the device's state that kept running stops
    /// by then, so there are never more working grants than seats.
    #[default]
    AfterLease,
    /// At once, up to [`OfflinePolicy::max_immediate_releases_per_30_days`] per license; beyond that, after the
    /// lease.
    Immediate,
}

/// Offline activation policy of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfflinePolicy {
    #[serde(default)]
    pub lease_days: OfflineLease,
    #[serde(default)]
    pub release: OfflineRelease,
    #[serde(default = "default_immediate_releases")]
    pub max_immediate_releases_per_30_days: u32,
}

fn default_immediate_releases() -> u32 {
    3
}

impl Default for OfflinePolicy {
    fn default() -> Self {
        OfflinePolicy {
            lease_days: OfflineLease::default(),
            release: OfflineRelease::default(),
            max_immediate_releases_per_30_days: default_immediate_releases(),
        }
    }
}

/// Defaults from which licenses are created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Template {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub product_id: Uuid,
    pub name: String,
    pub license_type: LicenseType,
    pub license_model: LicenseModel,
    pub max_activations: u32,
    /// Validity from issue; `None`: perpetual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_days: Option<u32>,
    #[serde(default)]
    pub grace_days: u32,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<Restriction>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: u32,
    #[serde(default = "default_lease")]
    pub lease_secs: u32,
    #[serde(default)]
    pub fingerprint_policy: MatchPolicy,
    #[serde(default)]
    pub emergency: EmergencyPolicy,
    #[serde(default)]
    pub offline: OfflinePolicy,
    #[serde(default)]
    pub transfer_policy: TransferPolicy,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}
