//! Storage: one trait, one implementation per backend (SQLite today; PostgreSQL can follow behind the same
//! trait). The store holds SQL only: it persists and fetches records and performs the few conditional writes
//! that must be atomic (seat-limited activation, rate-limited emergency codes); every rule that decides what to
//! write lives in `services`.

pub mod cache;
pub mod sqlite;
pub mod writes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_core::fingerprint::Fingerprint;
use tessera_core::model::{EmergencyPolicy, OfflinePolicy, TransferPolicy};
use tessera_core::{License, LicenseStatus, LicenseType, Template};
use uuid::Uuid;

/// Future returned by every store method.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Tenant scope of a query: `None` means every tenant (vendor-admin).
pub type Scope = Option<Uuid>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// An optimistic write found the record changed since it was read.
    #[error("the record changed since it was read")]
    Changed,
    #[error("database error: {0}")]
    Db(String),
    #[error("stored data could not be decoded: {0}")]
    Corrupt(String),
    #[error("the database is busy (another process holds the write lock); retry")]
    Busy,
    #[error("the store is shut down")]
    Closed,
    /// The request that queued the write was abandoned (timed out) before the write started: nothing was written.
    #[error("the request was abandoned before its write started; nothing was written")]
    Abandoned,
    #[error("{0}")]
    Schema(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::Conflict(msg.clone().unwrap_or_else(|| e.to_string()))
                }
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => StoreError::Busy,
                _ => StoreError::Db(e.to_string()),
            },
            _ => StoreError::Db(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

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
    Issued(EmergencyRecord),
    LimitReached { issued_in_window: u32 },
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

/// How the chain hash of an audit row is computed. Shared by the store (when appending) and the verifier.
pub fn audit_hash(prev_hash: &[u8], seq: i64, e: &NewAudit) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tessera/audit/v1\0");
    h.update(prev_hash);
    h.update(canonical_audit(seq, e));
    h.finalize().into()
}

/// The hashed form of an audit row: compact JSON with keys in alphabetical order (the order of the fields below;
/// nested objects are `serde_json` maps, sorted too). Serialized from borrowed fields, without a JSON value.
fn canonical_audit(seq: i64, e: &NewAudit) -> Vec<u8> {
    #[derive(Serialize)]
    struct Canonical<'a> {
        action: &'a str,
        actor: &'a str,
        at: String,
        details: &'a Value,
        ip: &'a Option<String>,
        outcome: &'a str,
        seq: i64,
        target: &'a Option<String>,
        tenant_id: &'a Option<Uuid>,
    }
    let c = Canonical {
        action: &e.action,
        actor: &e.actor,
        at: crate::time::ts(e.at),
        details: &e.details,
        ip: &e.ip,
        outcome: &e.outcome,
        seq,
        target: &e.target,
        tenant_id: &e.tenant_id,
    };
    serde_json::to_vec(&c).unwrap_or_default()
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

/// The storage interface the services use.
pub trait Store: Send + Sync + 'static {
    // Health
    fn ping(&self) -> StoreFuture<'_, ()>;

    // Tenants
    fn create_tenant(&self, t: Tenant, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_tenant(&self, id: Uuid) -> StoreFuture<'_, Tenant>;
    fn list_tenants(&self, page: PageRequest) -> StoreFuture<'_, Page<Tenant>>;

    // API tokens
    fn create_token(&self, t: ApiToken, hash: [u8; 32], audit: NewAudit) -> StoreFuture<'_, ()>;
    fn find_token(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<(ApiToken, [u8; 32])>>;
    fn list_tokens(&self, scope: Scope) -> StoreFuture<'_, Vec<ApiToken>>;
    fn revoke_token(&self, scope: Scope, id: Uuid, at: DateTime<Utc>, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn count_tokens(&self) -> StoreFuture<'_, u64>;

    // Customers
    fn put_customer(&self, c: Customer, create: bool, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_customer(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Customer>;
    fn list_customers(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Customer>>;

    // Products
    fn put_product(&self, p: Product, create: bool, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_product(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Product>;
    fn list_products(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Product>>;

    // Templates
    fn put_template(&self, t: TemplateRecord, create: bool, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_template(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, TemplateRecord>;
    fn list_templates(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<TemplateRecord>>;
    fn delete_template(&self, scope: Scope, id: Uuid, audit: NewAudit) -> StoreFuture<'_, ()>;

    // Licenses
    fn insert_license(&self, l: LicenseRecord, audit: NewAudit) -> StoreFuture<'_, ()>;
    /// Replaces the license if it is still the version read (its stored `updated_at` is `read_at`), else fails
    /// with `StoreError::Changed`; when `release_activations` is set, every active activation is deactivated
    /// with that reason in the same transaction.
    fn update_license(
        &self,
        l: LicenseRecord,
        read_at: DateTime<Utc>,
        release_activations: Option<String>,
        audit: Option<NewAudit>,
    ) -> StoreFuture<'_, ()>;
    fn get_license(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, LicenseRecord>;
    /// Served from a cache kept exact by the change feed (see `cache`); the hot path of every client call.
    fn get_license_by_key_hash(&self, hash: [u8; 32]) -> StoreFuture<'_, Arc<LicenseRecord>>;
    fn find_licenses_by_hint(&self, hint: [u8; 6]) -> StoreFuture<'_, Vec<LicenseRecord>>;
    fn list_licenses(
        &self,
        scope: Scope,
        filter: LicenseFilter,
        page: PageRequest,
    ) -> StoreFuture<'_, Page<LicenseRecord>>;
    /// Active licenses whose expiry is before `t`.
    fn licenses_expiring_before(&self, t: DateTime<Utc>) -> StoreFuture<'_, Vec<LicenseRecord>>;
    /// Records that the "expiring soon" notice for expiry `expires_at` was sent (with its event), touching
    /// nothing else of the license; false (and nothing written) when the license no longer expires then or the
    /// notice was already recorded.
    fn note_expiring(
        &self,
        license_id: Uuid,
        expires_at: DateTime<Utc>,
        event: Event,
        audit: NewAudit,
    ) -> StoreFuture<'_, bool>;

    // Activations
    fn activate(&self, op: ActivateOp) -> StoreFuture<'_, ActivateOutcome>;
    fn get_activation(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Activation>;
    /// An activation and its license, in one read (the hot path of device-signed requests).
    /// Served from the cache. Its `last_seen_at` may lag behind the database (it moves on every heartbeat and is
    /// not fed); read `get_activation` where it matters.
    fn activation_with_license(&self, id: Uuid) -> StoreFuture<'_, (Arc<Activation>, Arc<LicenseRecord>)>;
    fn list_activations(&self, scope: Scope, license_id: Uuid) -> StoreFuture<'_, Vec<Activation>>;
    /// Seats in use at `at`: active activations plus released ones whose seat is still held, each taking its
    /// `seats`, except that all activations of one named user take one seat together.
    fn count_active_seats(&self, license_id: Uuid, at: DateTime<Utc>) -> StoreFuture<'_, u32>;
    fn heartbeat(&self, op: HeartbeatOp) -> StoreFuture<'_, HeartbeatOutcome>;
    /// Ends an activation with a release schedule for its seat (see [`ReleaseOp`]).
    fn release(&self, op: ReleaseOp) -> StoreFuture<'_, ReleaseOutcome>;
    /// Deactivates if active; returns whether it was active.
    fn deactivate(&self, id: Uuid, at: DateTime<Utc>, reason: String, audit: NewAudit) -> StoreFuture<'_, bool>;
    /// Active floating activations whose lease ended before `t`.
    fn stale_floating(&self, t: DateTime<Utc>) -> StoreFuture<'_, Vec<Activation>>;
    /// Deactivates a floating activation only if its lease is still over at `at`, checked in the same write: a
    /// heartbeat that renewed the lease after the scan keeps its seat. Returns whether it was culled.
    fn cull_if_stale(&self, id: Uuid, at: DateTime<Utc>, audit: NewAudit) -> StoreFuture<'_, bool>;
    /// Deletes deactivated activations older than `before` whose seat is no longer held at `now` and that no
    /// 30-day release count still needs; returns how many.
    fn purge_deactivated(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreFuture<'_, u64>;
    /// Running usage totals per feature of a license (cached like licenses).
    fn usage_totals(&self, license_id: Uuid) -> StoreFuture<'_, Arc<Vec<(String, i64)>>>;
    /// Drops change-feed rows older than `before` (the newest row always stays); returns how many.
    fn prune_changes(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64>;

    // Security
    /// Adds the block and, in the same transaction, deactivates (with `reason`) the tenant's active activations
    /// it matches: the same device key, or a fingerprint component with the blocked hash; each deactivation is
    /// audited with `deactivated(activation)`. Returns the ids of the deactivated activations.
    fn add_block(
        &self,
        b: BlockedDevice,
        audit: NewAudit,
        reason: String,
        deactivated: Box<dyn Fn(&Activation) -> NewAudit + Send>,
    ) -> StoreFuture<'_, Vec<Uuid>>;
    fn list_blocks(&self, scope: Scope) -> StoreFuture<'_, Vec<BlockedDevice>>;
    fn remove_block(&self, scope: Scope, id: Uuid, audit: NewAudit) -> StoreFuture<'_, ()>;
    /// Whether the tenant has any device block at all.
    fn has_blocks(&self, tenant_id: Uuid) -> StoreFuture<'_, bool>;
    fn find_block(
        &self,
        tenant_id: Uuid,
        device_public_key: Vec<u8>,
        fingerprint_hashes: Vec<String>,
    ) -> StoreFuture<'_, Option<BlockedDevice>>;
    fn add_report(&self, r: SuspiciousReport, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn list_reports(&self, scope: Scope) -> StoreFuture<'_, Vec<SuspiciousReport>>;

    // Emergency codes
    fn issue_emergency(&self, op: EmergencyOp) -> StoreFuture<'_, EmergencyOutcome>;
    fn list_emergency(&self, scope: Scope, license_id: Uuid) -> StoreFuture<'_, Vec<EmergencyRecord>>;

    // Events and audit
    fn add_event(&self, e: Event, audit: Option<NewAudit>) -> StoreFuture<'_, ()>;
    fn list_events(&self, scope: Scope, license_id: Option<Uuid>) -> StoreFuture<'_, Vec<Event>>;
    /// Writes what was deferred from calls that answer without waiting for a write: audit entries, and the
    /// last-seen times of activations whose heartbeat changed nothing else.
    fn write_deferred(&self, audit: Vec<NewAudit>, seen: Vec<(Uuid, DateTime<Utc>)>) -> StoreFuture<'_, ()>;
    /// Audit rows with `seq > after`, in order.
    /// The chain head as last written: `(seq, hash)` of the newest row, or `None` for an empty log.
    fn audit_head(&self) -> StoreFuture<'_, Option<(i64, Vec<u8>)>>;
    fn audit_rows(&self, scope: Scope, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>>;
}

#[cfg(test)]
mod canonical_tests {
    use super::*;

    /// The form chains were first hashed in: a `json!` value (sorted keys). Existing logs must keep verifying.
    fn original(seq: i64, e: &NewAudit) -> Vec<u8> {
        serde_json::json!({
            "seq": seq,
            "at": crate::time::ts(e.at),
            "tenant_id": e.tenant_id,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "ip": e.ip,
            "outcome": e.outcome,
            "details": e.details,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_canonical_form_is_byte_identical_to_the_original() {
        let base = NewAudit {
            at: chrono::Utc::now(),
            tenant_id: Some(Uuid::new_v4()),
            actor: "token:ab\"c".into(),
            action: "client.heartbeat".into(),
            target: Some(Uuid::new_v4().to_string()),
            ip: Some("203.0.113.9".into()),
            outcome: "OK".into(),
            details: serde_json::json!({"z": [1, {"b": null, "a": "é\n"}], "a": 1.5, "usage": 0}),
        };
        let bare = NewAudit { tenant_id: None, target: None, ip: None, details: Value::Null, ..base.clone() };
        for (seq, e) in [(1, &base), (i64::MAX, &bare)] {
            assert_eq!(canonical_audit(seq, e), original(seq, e));
        }
    }
}
