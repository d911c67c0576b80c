//! Storage: role traits (one per area the services work on) that together make [`Store`], one implementation
//! per backend (SQLite today, in [`sqlite`]; PostgreSQL follows behind the same traits). Nothing here names a
//! backend: records and operations are in [`types`], the one error type in [`error`], the audit chain's hash
//! in [`chain`], the read cache and the change feed it follows in [`cache`].
//!
//! A store holds persistence only: it stores and fetches records and performs the few conditional writes that
//! must be atomic; every rule that decides what to write lives in `services`. What a backend must serialise is
//! written on the roles that need it: seat counts ([`ActivationStore`]), audit appends ([`AuditStore`]) and the
//! emergency-code window ([`LicenseStore::issue_emergency`]). Every write that takes a [`NewAudit`] appends it in
//! the same transaction as the write, with the outcome the write had where the write decides it (`CREATED`,
//! `REUSED`, `REPLACED`, `SEAT_LIMIT_REACHED`, `DEACTIVATED`, `ALREADY_INACTIVE`, `ISSUED`, `LIMIT_REACHED`);
//! a conditional write that changes nothing (`cull_if_stale`, `note_expiring` answering false, a release that
//! finds another grant) appends nothing. `store_conformance` (server/tests/server/store_conformance.rs) is the
//! executable form of these contracts; a new backend passes it before it is used.

pub mod cache;
pub mod chain;
pub mod error;
pub mod sqlite;
pub mod types;
pub mod writes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use chain::audit_hash;
pub use error::StoreError;
pub use types::*;

/// Future returned by every store method.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Tenant scope of a query: `None` means every tenant (vendor-admin).
pub type Scope = Option<Uuid>;

/// The storage interface the services use: every role, from one backend. (Methods of the roles are callable on
/// `dyn Store` without importing the role traits.)
pub trait Store:
    AdminStore + CatalogStore + SubscriptionStore + LicenseStore + ActivationStore + UsageStore + SecurityStore + AuditStore
{
}

impl<T> Store for T where
    T: AdminStore
        + CatalogStore
        + SubscriptionStore
        + LicenseStore
        + ActivationStore
        + UsageStore
        + SecurityStore
        + AuditStore
{
}

/// Most plans a list returns (a product's catalog is a few dozen rungs and add-ons).
pub const MAX_PLANS_LISTED: u32 = 1000;

/// The catalog: plans and add-ons of products.
///
/// Uniqueness the backend enforces (answering `Conflict` whose text names `plans.code`, `plans.rank` or
/// `plans.tier`): a code once per product, archived plans included; a rank and a tier name once among a
/// product's current (unarchived) plans.
pub trait CatalogStore: Send + Sync + 'static {
    /// Inserts (`read_at` None) or replaces the plan with this id in its tenant if it is still the version read
    /// (`Changed` when its `updated_at` is not `read_at`; `NotFound` when there is none).
    fn put_plan(&self, p: Plan, read_at: Option<DateTime<Utc>>, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_plan(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Plan>;
    /// The plans `filter` selects, at most [`MAX_PLANS_LISTED`], by product, then kind (plans first), rank and code.
    fn list_plans(&self, scope: Scope, filter: PlanFilter) -> StoreFuture<'_, Vec<Plan>>;
}

/// Tenants, API tokens, customers, products and templates: the vendor's set-up.
pub trait AdminStore: Send + Sync + 'static {
    fn ping(&self) -> StoreFuture<'_, ()>;
    fn create_tenant(&self, t: Tenant, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_tenant(&self, id: Uuid) -> StoreFuture<'_, Tenant>;
    fn list_tenants(&self, page: PageRequest) -> StoreFuture<'_, Page<Tenant>>;
    fn create_token(&self, t: ApiToken, hash: [u8; 32], audit: NewAudit) -> StoreFuture<'_, ()>;
    fn find_token(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<(ApiToken, [u8; 32])>>;
    fn list_tokens(&self, scope: Scope) -> StoreFuture<'_, Vec<ApiToken>>;
    fn revoke_token(&self, scope: Scope, id: Uuid, at: DateTime<Utc>, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn count_tokens(&self) -> StoreFuture<'_, u64>;
    /// Creates a console user and its token together (`Conflict` when the username is taken).
    fn create_console_user(
        &self,
        u: ConsoleUser,
        token: ApiToken,
        token_hash: [u8; 32],
        audit: NewAudit,
    ) -> StoreFuture<'_, ()>;
    /// The console user with this (lower-case) username, with its token's hash.
    fn find_console_user(&self, username: String) -> StoreFuture<'_, Option<(ConsoleUser, [u8; 32])>>;
    /// The console users of a tenant (every one for `None`), with their tokens, oldest first.
    fn list_console_users(&self, scope: Scope) -> StoreFuture<'_, Vec<(ConsoleUser, ApiToken)>>;
    /// Replaces a console user's password hash and its token in one write: `token` is inserted, the user's
    /// old token revoked at `at` (`NotFound` outside the scope).
    #[allow(clippy::too_many_arguments)]
    fn set_console_password(
        &self,
        scope: Scope,
        id: Uuid,
        password_hash: String,
        token: ApiToken,
        token_hash: [u8; 32],
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> StoreFuture<'_, ()>;
    fn put_customer(&self, c: Customer, create: bool, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_customer(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Customer>;
    fn list_customers(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Customer>>;
    fn put_product(&self, p: Product, create: bool, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_product(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Product>;
    fn list_products(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Product>>;
    fn put_template(&self, t: TemplateRecord, create: bool, audit: NewAudit) -> StoreFuture<'_, ()>;
    fn get_template(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, TemplateRecord>;
    fn list_templates(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<TemplateRecord>>;
    fn delete_template(&self, scope: Scope, id: Uuid, audit: NewAudit) -> StoreFuture<'_, ()>;
}

/// Subscriptions and their history.
///
/// Serialised: a subscription and its license change together, in one atomic step: the write replaces the
/// subscription only if it is still the version read (its `updated_at`), and the license only if it is still the
/// version read, so a lifecycle job, a staff action and a license edit cannot interleave into a license that
/// disagrees with its subscription; the history row and the audit entries land in the same step.
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Inserts the license and the subscription that carries it, with the first history row.
    fn insert_subscription(
        &self,
        s: Subscription,
        license: LicenseRecord,
        event: SubscriptionEvent,
        audits: Vec<NewAudit>,
    ) -> StoreFuture<'_, ()>;
    /// `Changed` when the stored `updated_at` of the subscription is not `read_at`, or of the license (when given,
    /// replaced in the same step) not its read version; `NotFound` outside the record's tenant.
    fn update_subscription(
        &self,
        s: Subscription,
        read_at: DateTime<Utc>,
        license: Option<(LicenseRecord, DateTime<Utc>)>,
        event: SubscriptionEvent,
        audits: Vec<NewAudit>,
    ) -> StoreFuture<'_, ()>;
    fn get_subscription(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Subscription>;
    fn list_subscriptions(
        &self,
        scope: Scope,
        filter: SubscriptionFilter,
        page: PageRequest,
    ) -> StoreFuture<'_, Page<Subscription>>;
    /// Trialing subscriptions whose trial ended, and active ones whose period ended, at or before `at` (oldest
    /// first, at most `limit`): the lifecycle job's work.
    fn subscriptions_due(&self, at: DateTime<Utc>, limit: u32) -> StoreFuture<'_, Vec<Subscription>>;
    /// A subscription's history, oldest first.
    fn subscription_history(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Vec<SubscriptionEvent>>;
}

/// Licenses and the emergency codes issued for them.
pub trait LicenseStore: Send + Sync + 'static {
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
    /// Serialised: counts the codes issued in the window and inserts the next serial in one atomic step.
    fn issue_emergency(&self, op: EmergencyOp) -> StoreFuture<'_, EmergencyOutcome>;
    fn list_emergency(&self, scope: Scope, license_id: Uuid) -> StoreFuture<'_, Vec<EmergencyRecord>>;
}

/// Activations and their seats: the seat-limited writes, heartbeats, releases and the floating-seat upkeep.
///
/// Serialised: [`ActivationStore::activate`] counts the seats in use and inserts in one atomic step, so that
/// concurrent activations of one license never exceed its limit; `release`, `cull_if_stale` and `heartbeat`
/// decide from what they read in the same step (a lease renewed meanwhile wins).
pub trait ActivationStore: Send + Sync + 'static {
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
    /// [`count_active_seats`](Self::count_active_seats) of many licenses in one read (lists and totals):
    /// `(license, seats)` for those with any seat in use, in no particular order.
    fn count_active_seats_of(&self, license_ids: Vec<Uuid>, at: DateTime<Utc>) -> StoreFuture<'_, Vec<(Uuid, u32)>>;
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
}

/// Metered usage of licenses (events arrive with heartbeats, [`ActivationStore::heartbeat`], or one at a time from a
/// backend, [`UsageStore::record_usage`]). Event ids are idempotency keys per license: an id is counted once.
pub trait UsageStore: Send + Sync + 'static {
    /// Running usage totals per feature of a license (cached like licenses).
    fn usage_totals(&self, license_id: Uuid) -> StoreFuture<'_, Arc<Vec<(String, i64)>>>;
    /// Inserts the event unless the license has one with its id, adds it to the total (saturating) and appends the
    /// audit entry (outcome `OK`, `DUPLICATE` or `CONFLICT`), in one atomic step.
    fn record_usage(&self, op: RecordUsageOp) -> StoreFuture<'_, RecordUsageOutcome>;
    /// Units of a license's `feature` recorded at `from <= recorded_at < to`, where both are UTC midnights (the
    /// bounds of a quota period); not cached.
    fn usage_between(
        &self,
        license_id: Uuid,
        feature: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreFuture<'_, i64>;
    /// Records a batch in one atomic step, in order, each event as [`record_usage`](Self::record_usage) would
    /// (idempotent by id per license) and refused whole when it would take its feature's total past `limit`;
    /// appends one audit entry for the batch (outcome `OK`). Returns one outcome per event, in order.
    /// Use of `licenses` with `from <= recorded_at < to`, per license, metric and day or month (UTC), ordered by
    /// license, metric and period (at most `limit` rows).
    fn usage_summary(
        &self,
        licenses: Vec<Uuid>,
        metric: Option<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        period: SummaryPeriod,
        limit: u32,
    ) -> StoreFuture<'_, Vec<UsageBucket>>;
    fn record_usage_batch(
        &self,
        items: Vec<BatchUsage>,
        now: DateTime<Utc>,
        audit: NewAudit,
    ) -> StoreFuture<'_, Vec<BatchOutcome>>;
}

/// Device blocks and suspicious-activity reports.
pub trait SecurityStore: Send + Sync + 'static {
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
}

/// Events, the audit log and the upkeep of the change feed.
///
/// Serialised: appends to the audit log form one hash chain ([`audit_hash`]): every append reads the head and
/// writes the next row in the same atomic step as the change it records, so no two rows share a sequence
/// number and no change lands without its row.
pub trait AuditStore: Send + Sync + 'static {
    /// Drops change-feed rows older than `before` (the newest row always stays); returns how many.
    fn prune_changes(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64>;
    fn add_event(&self, e: Event, audit: Option<NewAudit>) -> StoreFuture<'_, ()>;
    fn list_events(&self, scope: Scope, license_id: Option<Uuid>) -> StoreFuture<'_, Vec<Event>>;
    /// Writes what was deferred from calls that answer without waiting for a write: audit entries, and the
    /// last-seen times of activations whose heartbeat changed nothing else.
    fn write_deferred(&self, audit: Vec<NewAudit>, seen: Vec<(Uuid, DateTime<Utc>)>) -> StoreFuture<'_, ()>;
    /// The chain head as last written: `(seq, hash)` of the newest row, or `None` for an empty log.
    fn audit_head(&self) -> StoreFuture<'_, Option<(i64, Vec<u8>)>>;
    /// Audit rows with `seq > after`, in order (at most `limit`).
    fn audit_rows(&self, scope: Scope, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>>;
    /// Audit rows matching `filter` (at most `limit`): oldest first after `filter.after`, or newest first before
    /// `filter.before`.
    fn find_audit(&self, scope: Scope, filter: AuditFilter, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>>;
}
