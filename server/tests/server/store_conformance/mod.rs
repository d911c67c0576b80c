//! A conformance suite for the storage trait: [`store_conformance`] exercises every `Store` method's documented
//! contract through the trait alone (no SQL, no backend internals), so the same suite can run against any
//! backend. The tests at the bottom run it against a real SQLite store in a temporary directory.
//!
//! The suite expects a fresh store (the purge and chain checks count rows), and runs its areas one after the
//! other; each area makes its own tenants, so areas do not depend on each other.

mod activations;
mod admin;
mod audit;
mod licenses;
mod plans;
mod security;
mod subscriptions;

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;
use tessera_core::fingerprint::{Component, ComponentKind, Fingerprint};
use tessera_core::{Feature, License, LicenseKey, LicenseModel, LicenseStatus, LicenseType};
use tessera_server::store::*;
use uuid::Uuid;

/// The store under test, as the services hold it.
pub type S = Arc<dyn Store>;

/// Opens the SQLite backend in `dir` the way the server does (see `tessera_server::open`).
fn open_sqlite(dir: &std::path::Path) -> S {
    let store =
        sqlite::SqliteStore::open(&dir.join("tessera.db"), tessera_server::config::Durability::Normal, 4).unwrap();
    Arc::new(store)
}

/// Runs every area of the contract against `store`.
pub async fn store_conformance(store: S) {
    let s = &store;
    s.ping().await.unwrap();
    admin::tenants_and_tokens(s).await;
    admin::console_users(s).await;
    admin::catalog(s).await;
    plans::plans(s).await;
    subscriptions::subscriptions(s).await;
    licenses::licenses(s).await;
    activations::activations_and_seats(s).await;
    activations::heartbeat_and_usage(s).await;
    activations::record_usage(s).await;
    activations::release_deactivate_cull(s).await;
    activations::purge(s).await;
    activations::seat_race(s).await;
    activations::supersede_frees_all_seats_of_an_expired_grant(s).await;
    security::blocks_and_reports(s).await;
    security::emergency(s).await;
    audit::events_and_deferred(s).await;
    audit::concurrent_appends(s).await;
    audit::filters(s).await;
    // Last: it prunes the change feed, then checks the cache still serves the writes that follow.
    licenses::cached_reads(s).await;
    audit::verify_chain(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    store_conformance(open_sqlite(dir.path())).await;
}

// ------------------------------------------------------------------------------------------------------------
// Record constructors

/// Who the suite's audit entries name.
pub const ACTOR: &str = "conformance:suite";

/// The current time at the precision stores keep (microseconds), so round-trips compare equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn audit(tenant: Option<Uuid>, action: &str) -> NewAudit {
    NewAudit {
        at: now(),
        tenant_id: tenant,
        actor: ACTOR.into(),
        action: action.into(),
        target: None,
        ip: Some("192.0.2.7".into()),
        outcome: "OK".into(),
        details: json!({"suite": "conformance"}),
    }
}

pub fn random32() -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    h[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    h
}

pub fn device_key() -> Vec<u8> {
    random32().to_vec()
}

/// A machine: machine id, MAC and disk components derived from `seed`.
pub fn fingerprint(seed: &str) -> Fingerprint {
    Fingerprint::new(
        [ComponentKind::MachineId, ComponentKind::Mac, ComponentKind::Disk]
            .map(|k| Component::hash_raw(k, b"conformance", seed)),
    )
}

pub fn tenant(name: &str) -> Tenant {
    Tenant { id: Uuid::now_v7(), name: name.into(), created_at: now() }
}

pub fn product(tenant: Uuid, code: &str) -> Product {
    let t = now();
    Product {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        name: format!("{code} app"),
        code: code.into(),
        metadata: json!({"tier": "gold"}),
        created_at: t,
        updated_at: t,
    }
}

pub fn customer(tenant: Uuid, name: &str) -> Customer {
    let t = now();
    Customer {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        name: name.into(),
        email: Some(format!("{name}@example.com")),
        metadata: json!({"crm": name}),
        created_at: t,
        updated_at: t,
    }
}

/// A license record of the fixture's product with a fresh key (returned too), expiring in 30 days.
pub fn license(fx: &Fx, license_type: LicenseType, max: u32) -> (LicenseRecord, LicenseKey) {
    let t = now();
    let key = LicenseKey::generate();
    let license = License {
        id: Uuid::now_v7(),
        tenant_id: fx.tenant,
        product_id: fx.product,
        customer_id: None,
        template_id: None,
        license_type,
        license_model: LicenseModel::PerDevice,
        status: LicenseStatus::Active,
        max_activations: max,
        issued_at: t,
        starts_at: t,
        expires_at: Some(t + Duration::days(30)),
        maintenance_expires_at: None,
        grace_days: 3,
        features: vec![Feature::new("export_pdf"), Feature::new("api").with_limit(100, Default::default())],
        restrictions: Vec::new(),
        fingerprint_policy: Default::default(),
        heartbeat_interval_secs: 60,
        lease_secs: 3600,
        metadata: [("plan".to_string(), json!("pro"))].into_iter().collect(),
        billing_cycle: None,
    };
    let rec = LicenseRecord {
        license,
        key_hash: key.hash(),
        key_hint: key.hint(),
        policy: LicensePolicy::default(),
        expiring_notice_for: None,
        created_at: t,
        updated_at: t,
    };
    (rec, key)
}

/// An active activation of `l` for a device key and machine, its lease an hour after `at`.
pub fn activation(l: &LicenseRecord, key: &[u8], fp: Fingerprint, at: DateTime<Utc>) -> Activation {
    Activation {
        id: Uuid::now_v7(),
        tenant_id: l.license.tenant_id,
        license_id: l.license.id,
        device_public_key: key.to_vec(),
        fingerprint: fp,
        metadata: json!({"hostname": "host"}),
        status: ActivationStatus::Active,
        offline: false,
        floating: l.license.license_type.is_floating(),
        created_at: at,
        last_seen_at: at,
        lease_expires_at: Some(at + Duration::hours(1)),
        deactivated_at: None,
        deactivation_reason: None,
        seat_held_until: None,
        seats: 1,
        user_id: None,
    }
}

/// Activation by device key only, limited to `max` seats.
pub fn activate_op(new: Activation, max: u32) -> ActivateOp {
    ActivateOp {
        audit: audit(Some(new.tenant_id), "conf.activate"),
        new,
        candidates: SameDeviceCandidates::KeyOnly,
        max_seats: max,
        same_device: Box::new(|_| false),
        reuse_lease_expires_at: None,
        supersede_if: None,
    }
}

/// Activates `a` (a new device), expecting it to be created; returns the stored activation.
pub async fn created(s: &S, a: Activation, max: u32) -> Activation {
    match s.activate(activate_op(a.clone(), max)).await.unwrap() {
        ActivateOutcome::Created { activation, .. } => {
            assert_eq!(activation, a);
            activation
        }
        other => panic!("expected Created, got {other:?}"),
    }
}

/// A tenant with one product.
pub struct Fx {
    pub tenant: Uuid,
    pub product: Uuid,
}

pub async fn fixture(s: &S, name: &str) -> Fx {
    let t = tenant(name);
    s.create_tenant(t.clone(), audit(Some(t.id), "conf.fixture.tenant")).await.unwrap();
    let p = product(t.id, name);
    s.put_product(p.clone(), true, audit(Some(t.id), "conf.fixture.product")).await.unwrap();
    Fx { tenant: t.id, product: p.id }
}

/// Inserts a license of the fixture (see [`license`]); returns the record and its key.
pub async fn stored_license(s: &S, fx: &Fx, license_type: LicenseType, max: u32) -> (LicenseRecord, LicenseKey) {
    let (l, k) = license(fx, license_type, max);
    s.insert_license(l.clone(), audit(Some(fx.tenant), "conf.license.insert")).await.unwrap();
    (l, k)
}

// ------------------------------------------------------------------------------------------------------------
// Audit and paging checks

/// The sequence number of the newest audit row (0 for an empty log): rows written later have a greater one.
pub async fn audit_mark(s: &S) -> i64 {
    s.audit_head().await.unwrap().map_or(0, |(seq, _)| seq)
}

/// Asserts that a write since `mark` appended an audit row with `action` by [`ACTOR`]; returns the newest one.
pub async fn assert_audited(s: &S, mark: i64, action: &str) -> AuditEntry {
    let rows = s.audit_rows(None, mark, 10_000).await.unwrap();
    rows.into_iter()
        .rev()
        .find(|r| r.entry.action == action && r.entry.actor == ACTOR)
        .unwrap_or_else(|| panic!("no audit row {action:?} by {ACTOR} after seq {mark}"))
}

/// Asserts that nothing was appended to the audit log since `mark`.
pub async fn assert_not_audited(s: &S, mark: i64) {
    let rows = s.audit_rows(None, mark, 100).await.unwrap();
    assert!(rows.is_empty(), "unexpected audit rows: {rows:?}");
    assert_eq!(audit_mark(s).await, mark);
}

/// Walks every page of a listing with `limit` per page, checking the cursor rules: ids strictly increasing
/// across pages, a full page and a cursor equal to its last id while more follow, no cursor on the last page.
/// Returns the ids and the size of each page.
pub async fn walk<'a, T, F>(limit: u32, mut fetch: F, id: impl Fn(&T) -> Uuid) -> (Vec<Uuid>, Vec<usize>)
where
    F: FnMut(PageRequest) -> StoreFuture<'a, Page<T>>,
{
    let (mut ids, mut sizes) = (Vec::<Uuid>::new(), Vec::new());
    let mut after = None;
    loop {
        let page = fetch(PageRequest { after, limit }).await.unwrap();
        assert!(page.items.len() <= limit as usize, "a page holds at most `limit` items");
        sizes.push(page.items.len());
        for item in &page.items {
            let i = id(item);
            assert!(ids.last().is_none_or(|l| *l < i), "ids increase across pages");
            assert!(after.is_none_or(|a| a < i), "`after` is exclusive");
            ids.push(i);
        }
        match page.next_cursor {
            Some(c) => {
                assert_eq!(page.items.len(), limit as usize, "a page followed by more is full");
                assert_eq!(c, ids.last().unwrap().to_string(), "the cursor is the last id of the page");
                after = Some(c.parse().unwrap());
            }
            None => return (ids, sizes),
        }
        assert!(sizes.len() < 10_000, "the cursor never ends");
    }
}
