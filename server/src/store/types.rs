//! The records the store keeps and the operations it performs atomically, backend-neutral: every backend
//! reads and writes these and nothing else.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_core::fingerprint::Fingerprint;
use tessera_core::model::{EmergencyPolicy, OfflinePolicy, TransferPolicy};
use tessera_core::{License, LicenseStatus, LicenseType, Template};
use uuid::Uuid;

/// Roles of API tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    VendorAdmin,
    TenantAdmin,
    ReadOnly,
    Support,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::VendorAdmin => "vendor-admin",
            Role::TenantAdmin => "tenant-admin",
            Role::ReadOnly => "read-only",
            Role::Support => "support",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "vendor-admin" => Some(Role::VendorAdmin),
            "tenant-admin" => Some(Role::TenantAdmin),
            "read-only" => Some(Role::ReadOnly),
            "support" => Some(Role::Support),
            _ => None,
        }
    }
}

/// A person who signs in to the console with a username and password. Its role, tenant and revocation are
/// those of its own API token (`token_id`), whose secret nobody holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleUser {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    /// Lower case, unique across the server.
    pub username: String,
    /// argon2id, PHC string format; never serialized.
    #[serde(skip)]
    pub password_hash: String,
    pub token_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub role: Role,
    /// The visible start of the token (kind prefix and a few characters), for recognising it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Customer {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub code: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateRecord {
    #[serde(flatten)]
    pub template: Template,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Per-license settings carried over from the template (not part of the signed license).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LicensePolicy {
    #[serde(default)]
    pub emergency: EmergencyPolicy,
    #[serde(default)]
    pub offline: OfflinePolicy,
    #[serde(default)]
    pub transfer: TransferPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LicenseRecord {
    pub license: License,
    pub key_hash: [u8; 32],
    pub key_hint: [u8; 6],
    pub policy: LicensePolicy,
    /// Expiry for which an "expiring soon" event was already recorded.
    pub expiring_notice_for: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A plan is a rung of a product's ladder; an add-on attaches to a subscription of one of its plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlanKind {
    Plan,
    AddOn,
}

impl PlanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanKind::Plan => "PLAN",
            PlanKind::AddOn => "ADD_ON",
        }
    }
}

/// How often a price is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingInterval {
    Month,
    Year,
}

/// A price: `amount` in the currency's minor units (cents for EUR, yen for JPY), never a fraction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub interval: BillingInterval,
    /// Integer minor units of `currency` (1999 = 19.99 EUR; 1999 = 1,999 JPY).
    pub amount: i64,
    /// ISO 4217 code, upper case (`EUR`, `USD`, `JPY`).
    pub currency: String,
}

/// The span a usage limit counts over; it resets at each boundary (`LIFETIME`: never). The license model's, so a
/// plan's limit becomes a feature's quota per period as it is.
pub use tessera_core::model::LimitPeriod;

/// How much of a metric a plan includes per period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageLimit {
    /// The metered feature's id (`api_calls`).
    pub metric: String,
    /// Units included per period (0 or more).
    pub limit: i64,
    pub period: LimitPeriod,
    /// Use past `limit` is allowed and billed at this price, instead of refused: the limit is then the amount
    /// included in the base price, and the license grants the metric without a quota. DAY and MONTH limits only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage: Option<Overage>,
}

/// How use past a limit's included amount is priced, in integer minor units of `currency` (the pricing models of
/// usage-based billing systems). Amounts are worked out exactly and rounded once per period, half up (half a minor
/// unit rounds up): see `services::billing::price_overage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "model", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum Overage {
    /// `unit_amount` minor units per `per` units (1 cent per 1,000 calls: `unit_amount` 1, `per` 1000).
    PerUnit {
        currency: String,
        unit_amount: i64,
        #[serde(default = "one_unit")]
        per: u64,
    },
    /// `package_amount` per package of `package_size` units; a started package is charged whole.
    Package { currency: String, package_size: u64, package_amount: i64 },
    /// Units past the included amount priced tier by tier: up to the first tier's `up_to` at its price, the next
    /// up to the second's `up_to` at its price, ...; the last tier has no `up_to`. Prices per `per` units.
    Graduated {
        currency: String,
        tiers: Vec<GraduatedTier>,
        #[serde(default = "one_unit")]
        per: u64,
    },
}

impl Overage {
    pub fn currency(&self) -> &str {
        match self {
            Overage::PerUnit { currency, .. }
            | Overage::Package { currency, .. }
            | Overage::Graduated { currency, .. } => currency,
        }
    }

    pub fn currency_mut(&mut self) -> &mut String {
        match self {
            Overage::PerUnit { currency, .. }
            | Overage::Package { currency, .. }
            | Overage::Graduated { currency, .. } => currency,
        }
    }
}

fn one_unit() -> u64 {
    1
}

/// One tier of a graduated price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraduatedTier {
    /// The tier ends after this many billable units in the period (absent: the last tier, without end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<u64>,
    /// Minor units per `per` units in this tier.
    pub unit_amount: i64,
}

/// A plan or add-on of a product's catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub product_id: Uuid,
    /// Unique within the product (`premium`, `crm-connector`); what integrations and pricing pages refer to.
    pub code: String,
    pub name: String,
    pub kind: PlanKind,
    /// The rung's label (`FREE`, `BASIC`, `PREMIUM`, `ENTERPRISE` by default; the vendor's own names otherwise);
    /// empty for add-ons.
    pub tier: String,
    /// The rung's place on the ladder, 0 the lowest; unique among a product's current plans (0 for add-ons).
    pub rank: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Listed in the catalog (`GET /v1/catalog`); a private plan is sold by hand.
    pub public: bool,
    pub trial_days: u32,
    pub features: Vec<tessera_core::Feature>,
    pub limits: Vec<UsageLimit>,
    pub prices: Vec<Price>,
    /// Add-ons: the category they are listed under (`crm`, `monitoring`, ...: the vendor's data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Add-ons: the codes of the plans they attach to (empty: every plan of the product).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attaches_to: Vec<String>,
    /// Archived plans are no longer sold (not in the catalog, their rank free for another plan) but stay readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// The template a subscription's license takes its terms from (seats, heartbeat, fingerprint policy); the
    /// plan gives the entitlements. A subscription may name another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    /// Where a customer buys this plan (`{feature}`, `{license}`, `{plan}` filled in when a license offers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a subscription is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    /// In its trial: the license runs until `trial_ends_at`.
    Trialing,
    /// Paid (or free) and running period by period.
    Active,
    /// Paused by the vendor: the license is suspended until resumed.
    Paused,
    /// Cancelled (now, or at the end of its period): final.
    Canceled,
    /// A trial that ended unconverted with the EXPIRE policy: final.
    Expired,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "TRIALING",
            SubscriptionStatus::Active => "ACTIVE",
            SubscriptionStatus::Paused => "PAUSED",
            SubscriptionStatus::Canceled => "CANCELED",
            SubscriptionStatus::Expired => "EXPIRED",
        }
    }

    /// No change follows a final status.
    pub fn is_final(self) -> bool {
        matches!(self, SubscriptionStatus::Canceled | SubscriptionStatus::Expired)
    }
}

/// What an unconverted trial becomes at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrialEnd {
    /// The subscription ends, and its license with it.
    Expire,
    /// The subscription moves to the product's lowest current plan (FREE) and goes on.
    Downgrade,
}

/// A plan change waiting for the end of the current period (a downgrade the customer keeps paying for until then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduledChange {
    pub plan_id: Uuid,
    pub add_ons: Vec<Uuid>,
    pub at: DateTime<Utc>,
}

/// A customer's subscription to a plan (and add-ons): the one source of truth for what its license grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub customer_id: Uuid,
    pub product_id: Uuid,
    pub plan_id: Uuid,
    /// Add-on plans attached to `plan_id`.
    pub add_ons: Vec<Uuid>,
    /// The license that carries the entitlements (made with the subscription).
    pub license_id: Uuid,
    /// The template the license's terms (seats, heartbeat, fingerprint policy) come from.
    pub template_id: Uuid,
    pub status: SubscriptionStatus,
    pub interval: BillingInterval,
    /// Periods are counted from here, so a month that starts on the 31st ends on the last day of shorter months
    /// and goes back to the 31st after.
    pub anchor_at: DateTime<Utc>,
    /// Whole periods between `anchor_at` and `current_period_start`.
    pub periods: u32,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub on_trial_end: TrialEnd,
    /// Renewed at the end of each period (unless cancelled at period end).
    pub auto_renew: bool,
    pub cancel_at_period_end: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_change: Option<ScheduledChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// When paid periods began (subscribed without a trial, converted, or moved to a free rung at the trial's end);
    /// absent while in a trial, and for a trial that ended unpaid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_since: Option<DateTime<Utc>>,
    /// The start of every paid period, oldest first (what the billing report charges): kept as periods start, so
    /// a new anchor (a resume after the period ran out) leaves the earlier ones in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub period_starts: Vec<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Plan {
    /// The price for `interval` in `currency` (`None`: the plan has none).
    pub fn price(&self, interval: BillingInterval, currency: &str) -> Option<i64> {
        self.prices.iter().find(|x| x.interval == interval && x.currency == currency).map(|x| x.amount)
    }
}

impl Subscription {
    /// When paid periods began: `paid_since`; for a record kept before it was, the anchor of one made without a
    /// trial (one made with a trial and no `paid_since` is taken as never paid).
    pub fn paid_from(&self) -> Option<DateTime<Utc>> {
        self.paid_since.or_else(|| self.trial_ends_at.is_none().then_some(self.anchor_at))
    }

    /// Notes that a paid period starts at `at` (from now on `paid_since` is set, if it was not).
    pub fn start_paid_period(&mut self, at: DateTime<Utc>) {
        self.paid_since.get_or_insert(at);
        if self.period_starts.last().is_none_or(|last| *last < at) {
            self.period_starts.push(at);
        }
    }
}

/// One change in a subscription's life (kept with it, written in the same step as the change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionEvent {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub at: DateTime<Utc>,
    /// `created`, `converted`, `upgraded`, `downgraded`, `change_scheduled`, `renewed`, `canceled`,
    /// `cancel_scheduled`, `paused`, `resumed`, `trial_expired`, `trial_downgraded`.
    pub action: String,
    pub from_plan: Option<Uuid>,
    pub to_plan: Option<Uuid>,
    pub actor: String,
    pub details: Value,
}

/// Which subscriptions a list returns.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionFilter {
    pub customer_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    pub status: Option<SubscriptionStatus>,
}

/// Which plans a list returns (every field narrows it).
#[derive(Debug, Clone, Default)]
pub struct PlanFilter {
    pub product_id: Option<Uuid>,
    pub kind: Option<PlanKind>,
    pub category: Option<String>,
    pub tier: Option<String>,
    pub public_only: bool,
    pub include_archived: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LicenseFilter {
    pub status: Option<LicenseStatus>,
    pub license_type: Option<LicenseType>,
    pub product_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub expiring_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// Exclusive: items with an id greater than this (ids are UUIDv7, time-ordered).
    pub after: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An activation's state (part of the wire contract: heartbeats answer it).
pub use tessera_core::protocol::ActivationStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Activation {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub license_id: Uuid,
    #[serde(with = "tessera_core::encoding::b64bytes")]
    #[schema(value_type = String)]
    pub device_public_key: Vec<u8>,
    pub fingerprint: Fingerprint,
    pub metadata: Value,
    pub status: ActivationStatus,
    pub offline: bool,
    pub floating: bool,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivation_reason: Option<String>,
    /// A released activation still counts against the seats until then (see [`ReleaseOp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_held_until: Option<DateTime<Utc>>,
    /// Seats it takes: the machine's sockets (PER_CPU) or cores (PER_CORE), else 1.
    #[serde(default = "one")]
    pub seats: u32,
    /// NAMED_USER: the user whose seat it uses (all of one user's activations share one seat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

fn one() -> u32 {
    1
}

/// How a released activation gives its seat back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReleaseKind {
    /// Held until the released grant's lease ends (a copy of the device's state may run until then).
    AfterLease,
    /// Free at once, if fewer than the limit were released so since the window start; else as `AfterLease`.
    Immediate,
    /// Free at once by staff decision (also ends the hold of an already released activation).
    Staff,
    /// Ended because the device key renewed from another machine; held like `AfterLease`.
    Superseded,
}

impl ReleaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseKind::AfterLease => "AFTER_LEASE",
            ReleaseKind::Immediate => "IMMEDIATE",
            ReleaseKind::Staff => "STAFF",
            ReleaseKind::Superseded => "SUPERSEDED",
        }
    }
}

/// A seat hold with no end (a grant without lease): until staff release it.
pub fn hold_forever() -> DateTime<Utc> {
    use chrono::TimeZone;
    // The last instant the fixed-width timestamps order correctly.
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Ends an activation and says when its seat is free again, atomically with the count of immediate releases.
pub struct ReleaseOp {
    pub activation_id: Uuid,
    pub at: DateTime<Utc>,
    pub reason: String,
    pub kind: ReleaseKind,
    /// End it only if it still holds this grant (hex tag in its metadata, `grant_tag`): a renewal that committed
    /// after the caller read the activation wins. The hold runs to the activation's stored lease, read in the
    /// same write (`None`: it has none, the hold lasts until staff release it).
    pub expect_grant_tag: Option<String>,
    /// For `Immediate`: at most this many immediate releases per license since this instant.
    pub immediate_limit: (u32, DateTime<Utc>),
    pub audit: NewAudit,
}

impl ReleaseOp {
    /// Ends the activation with its seat held until its stored lease ends (no grant check, no immediate count).
    pub fn after_lease(activation_id: Uuid, at: DateTime<Utc>, reason: &str, audit: NewAudit) -> ReleaseOp {
        ReleaseOp {
            activation_id,
            at,
            reason: reason.to_string(),
            kind: ReleaseKind::AfterLease,
            expect_grant_tag: None,
            immediate_limit: (0, at),
            audit,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Ended (or, for a staff release of a released activation, its hold ended).
    Released {
        kind: ReleaseKind,
        seat_held_until: Option<DateTime<Utc>>,
        /// Immediate releases of the license in the window, this one included.
        immediate_in_window: u32,
    },
    /// Already inactive, and nothing to change.
    AlreadyInactive { seat_held_until: Option<DateTime<Utc>> },
    /// It holds another grant than the one expected (renewed meanwhile): nothing changed.
    GrantChanged,
}

/// Decides whether an existing active activation belongs to the device now activating (a service rule).
pub type SameDevice = Box<dyn Fn(&Activation) -> bool + Send>;

/// Which existing activations are checked with `same_device` (beyond an exact device-key match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SameDeviceCandidates {
    /// Only the device key counts.
    KeyOnly,
    /// Active activations whose identity component (machine id, else pinned id) has this hash (hex).
    ByIdentity(String),
    /// Every active activation of the license (only done when the license has a seat limit).
    All,
}

/// The identity component hash an activation is indexed by: the machine id, else the pinned identity.
pub fn identity_hash(fp: &Fingerprint) -> Option<String> {
    use tessera_core::fingerprint::ComponentKind;
    fp.get(ComponentKind::MachineId).or_else(|| fp.get(ComponentKind::Pinned)).map(|c| hex::encode(c.hash))
}

/// A seat-limited activation, done atomically by the single writer.
pub struct ActivateOp {
    /// The activation to insert when the device has none yet.
    pub new: Activation,
    pub candidates: SameDeviceCandidates,
    /// 0: unlimited.
    pub max_seats: u32,
    pub same_device: SameDevice,
    /// Lease to give an existing activation that is reused.
    pub reuse_lease_expires_at: Option<DateTime<Utc>>,
    /// When the device key's active activation satisfies this, it is not reused but superseded: ended, its seat
    /// held until its lease ends ([`ReleaseKind::Superseded`]), and the new activation takes a seat if one is
    /// free; all or nothing (an offline renewal from a machine with another fingerprint).
    pub supersede_if: Option<SameDevice>,
    pub audit: NewAudit,
}

#[derive(Debug, Clone)]
pub enum ActivateOutcome {
    Created {
        activation: Activation,
        seats_used: u32,
    },
    Reused {
        activation: Activation,
        seats_used: u32,
    },
    /// The same machine (by fingerprint) with a new device key: `replaced` was deactivated, `activation` created.
    Replaced {
        activation: Activation,
        replaced: Uuid,
        seats_used: u32,
    },
    SeatLimit {
        seats_used: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageEvent {
    pub id: Uuid,
    pub feature: String,
    pub amount: i64,
    pub recorded_at: DateTime<Utc>,
}

pub struct HeartbeatOp {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub now: DateTime<Utc>,
    /// The new lease; `None` keeps the stored one, and a stored lease is never moved back.
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub usage: Vec<UsageEvent>,
    pub audit: Option<NewAudit>,
}

#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    /// `false` when the activation was no longer active (nothing updated, no usage stored).
    pub active: bool,
    /// The lease as stored after the heartbeat.
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub accepted_usage: Vec<Uuid>,
    pub usage_totals: Vec<(String, i64)>,
}

/// One usage event recorded for a license outside a heartbeat (a backend's RecordUsage), with its audit entry.
pub struct RecordUsageOp {
    pub license_id: Uuid,
    /// The activation the use is attributed to, if any.
    pub activation_id: Option<Uuid>,
    pub event: UsageEvent,
    pub now: DateTime<Utc>,
    pub audit: NewAudit,
}

/// One event of a batch (`UsageStore::record_usage_batch`), with the quota its feature has on its license.
#[derive(Debug, Clone)]
pub struct BatchUsage {
    pub license_id: Uuid,
    pub event: UsageEvent,
    /// The license's quota of the feature (`None`: unlimited): an event that would take the total past it is
    /// refused, and nothing of it recorded.
    pub limit: Option<i64>,
    /// For a quota per period, the period the event's time falls in: the total checked against `limit` is the
    /// use in it (`None`: the lifetime total).
    pub window: Option<tessera_core::model::QuotaWindow>,
}

/// The span a usage summary adds up over (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SummaryPeriod {
    Day,
    Month,
}

/// Use of one feature of one license in one day or month (UTC), as recorded (by agents' heartbeats and by
/// `POST /v1/usage` alike), by when the use happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageBucket {
    pub license_id: Uuid,
    pub metric: String,
    /// The first instant of the day or month.
    pub period_start: DateTime<Utc>,
    pub total: i64,
    pub events: u64,
}

/// What became of one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Counted; the license's total of the feature after it.
    Recorded { total: i64 },
    /// Counted before (same id, feature and amount): not counted again.
    Duplicate { total: i64 },
    /// The license has an event with this id for another feature or amount: nothing recorded.
    IdConflict,
    /// It would take the total past the quota: nothing recorded.
    QuotaExceeded { total: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordUsageOutcome {
    /// Counted; `total` is the license's total of the feature after it.
    Recorded { total: i64 },
    /// An event with this id and the same feature and amount was recorded before: not counted again.
    Duplicate { total: i64 },
    /// The license already has an event with this id for another feature or amount: nothing recorded.
    IdConflict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockedDevice {
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    pub device_public_key: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint_hash: Option<String>,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SuspiciousReport {
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<Uuid>,
    pub kind: String,
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmergencyRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub license_id: Uuid,
    pub serial: u32,
    pub reason: String,
    pub issued_by: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    pub bound_device: Option<Vec<u8>>,
    pub code: String,
}

/// Issue an emergency code if fewer than `max_in_window` were issued since `window_start`. The serial is the
/// next one for the license; `make_code` signs the code for that serial.
pub struct EmergencyOp {
    pub record: EmergencyRecord,
    pub window_start: DateTime<Utc>,
    pub max_in_window: u32,
    pub make_code: Box<dyn FnOnce(u32) -> Result<String, String> + Send>,
    pub audit: NewAudit,
}

#[derive(Debug, Clone)]
pub enum EmergencyOutcome {
    /// Issued; `issued_in_window` counts it with the others of the window.
    Issued {
        record: EmergencyRecord,
        issued_in_window: u32,
    },
    LimitReached {
        issued_in_window: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Uuid>,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub data: Value,
}

/// Which audit rows to read: every condition given holds together; `None` places no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Rows with `seq > after` (oldest first) …
    pub after: i64,
    /// … or, when set, rows with `seq < before`, newest first (paging back from the newest with `i64::MAX`).
    pub before: Option<i64>,
    /// Exactly this actor (`token:<id>`, `console:token:<id>`, `agent`, …).
    pub actor: Option<String>,
    /// Exactly this action, or every action it begins when it ends with `.` (`license.` is every license action).
    pub action: Option<String>,
    /// Exactly this target (a license, activation or token id, …).
    pub target: Option<String>,
    /// Any of these targets (none: no condition), as a license's history reads the license's and its
    /// activations' entries at once.
    pub any_target: Vec<String>,
    /// Any of these outcomes (none: no condition): `OK`, `SEAT_LIMIT_REACHED`, …
    pub outcomes: Vec<String>,
    /// Rows at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Rows before this time.
    pub until: Option<DateTime<Utc>>,
}

/// An audit entry to append; the store assigns the sequence number and chains the hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    pub tenant_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub outcome: String,
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: NewAudit,
    #[serde(with = "hexbytes")]
    #[schema(value_type = String)]
    pub prev_hash: Vec<u8>,
    #[serde(with = "hexbytes")]
    #[schema(value_type = String)]
    pub hash: Vec<u8>,
}

mod hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

mod opt_b64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&tessera_core::encoding::b64url(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => tessera_core::encoding::b64url_decode(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("expected base64url")),
        }
    }
}
