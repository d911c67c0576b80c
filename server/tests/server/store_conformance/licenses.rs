//! Licenses, and the reads served from the change-feed cache.

use chrono::Duration;
use serde_json::json;
use tessera_core::{LicenseKey, LicenseStatus, LicenseType};
use tessera_server::store::*;
use uuid::Uuid;

use super::*;

fn ids(v: &[LicenseRecord]) -> Vec<Uuid> {
    v.iter().map(|l| l.license.id).collect()
}

pub async fn licenses(s: &S) {
    let fa = fixture(s, "conf-licenses-a").await;
    let fb = fixture(s, "conf-licenses-b").await;
    let cust = customer(fa.tenant, "licensee");
    s.put_customer(cust.clone(), true, audit(Some(fa.tenant), "conf.customer.create")).await.unwrap();

    let t = now();
    let (mut l1, k1) = license(&fa, LicenseType::Subscription, 5);
    l1.license.customer_id = Some(cust.id);
    l1.policy.offline.max_immediate_releases_per_30_days = 7;
    let mark = audit_mark(s).await;
    s.insert_license(l1.clone(), audit(Some(fa.tenant), "conf.license.insert")).await.unwrap();
    assert_audited(s, mark, "conf.license.insert").await;
    let (mut l2, _) = license(&fa, LicenseType::Perpetual, 0);
    l2.license.expires_at = None;
    s.insert_license(l2.clone(), audit(Some(fa.tenant), "conf.license.insert")).await.unwrap();
    let (mut l3, _) = license(&fa, LicenseType::Trial, 1);
    l3.license.status = LicenseStatus::Suspended;
    l3.license.expires_at = Some(t + Duration::days(2));
    s.insert_license(l3.clone(), audit(Some(fa.tenant), "conf.license.insert")).await.unwrap();
    let (mut lb, kb) = license(&fb, LicenseType::Subscription, 2);
    lb.license.expires_at = Some(t + Duration::days(10));
    s.insert_license(lb.clone(), audit(Some(fb.tenant), "conf.license.insert")).await.unwrap();

    // Round trips and scope.
    assert_eq!(s.get_license(Some(fa.tenant), l1.license.id).await.unwrap(), l1);
    assert_eq!(s.get_license(None, l1.license.id).await.unwrap(), l1);
    assert_eq!(s.get_license(Some(fb.tenant), l1.license.id).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(*s.get_license_by_key_hash(k1.hash()).await.unwrap(), l1);
    assert_eq!(*s.get_license_by_key_hash(kb.hash()).await.unwrap(), lb);
    let unknown = LicenseKey::generate().hash();
    assert_eq!(s.get_license_by_key_hash(unknown).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(s.find_licenses_by_hint(l1.key_hint).await.unwrap(), vec![l1.clone()]);
    assert!(s.find_licenses_by_hint([0xee; 6]).await.unwrap().is_empty());

    // The id and the key hash are unique.
    let mark = audit_mark(s).await;
    let r = s.insert_license(l1.clone(), audit(None, "conf.license.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let (mut same_key, _) = license(&fa, LicenseType::Subscription, 1);
    same_key.key_hash = l1.key_hash;
    let r = s.insert_license(same_key.clone(), audit(None, "conf.license.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_not_audited(s, mark).await;
    assert_eq!(s.get_license(None, same_key.license.id).await.unwrap_err(), StoreError::NotFound);

    // Listing with filters and pages.
    let list = |scope, f: LicenseFilter| async move {
        ids(&s.list_licenses(scope, f, PageRequest { after: None, limit: 100 }).await.unwrap().items)
    };
    let a = Some(fa.tenant);
    let all_a = vec![l1.license.id, l2.license.id, l3.license.id];
    assert_eq!(list(a, LicenseFilter::default()).await, all_a);
    assert_eq!(list(Some(fb.tenant), LicenseFilter::default()).await, vec![lb.license.id]);
    let f = LicenseFilter { status: Some(LicenseStatus::Suspended), ..Default::default() };
    assert_eq!(list(a, f).await, vec![l3.license.id]);
    let f = LicenseFilter { license_type: Some(LicenseType::Perpetual), ..Default::default() };
    assert_eq!(list(a, f).await, vec![l2.license.id]);
    let f = LicenseFilter { customer_id: Some(cust.id), ..Default::default() };
    assert_eq!(list(None, f).await, vec![l1.license.id]);
    let f = LicenseFilter { product_id: Some(fa.product), ..Default::default() };
    assert_eq!(list(None, f).await, all_a);
    let f = LicenseFilter { expiring_before: Some(t + Duration::days(5)), ..Default::default() };
    assert_eq!(list(a, f).await, vec![l3.license.id], "perpetual licenses never expire");
    let f = LicenseFilter {
        status: Some(LicenseStatus::Active),
        license_type: Some(LicenseType::Subscription),
        ..Default::default()
    };
    assert_eq!(list(a, f).await, vec![l1.license.id], "filters combine");
    let (got, sizes) =
        walk(2, |p| s.list_licenses(a, LicenseFilter::default(), p), |l: &LicenseRecord| l.license.id).await;
    assert_eq!((got, sizes), (all_a.clone(), vec![2, 1]));

    // Active licenses expiring before a time, soonest first (other tenants' too: it serves a job).
    let soon: Vec<Uuid> = ids(&s.licenses_expiring_before(t + Duration::days(40)).await.unwrap())
        .into_iter()
        .filter(|id| [l1.license.id, l2.license.id, l3.license.id, lb.license.id].contains(id))
        .collect();
    assert_eq!(soon, vec![lb.license.id, l1.license.id], "suspended and perpetual ones are not listed");
    let soon = ids(&s.licenses_expiring_before(t + Duration::days(20)).await.unwrap());
    assert!(soon.contains(&lb.license.id) && !soon.contains(&l1.license.id));

    // Optimistic update: the version read wins once; a stale read is refused with Changed and writes nothing.
    let read = s.get_license(a, l1.license.id).await.unwrap();
    let mut v2 = read.clone();
    v2.license.status = LicenseStatus::Suspended;
    v2.license.max_activations = 8;
    v2.policy.offline.max_immediate_releases_per_30_days = 1;
    v2.updated_at = read.updated_at + Duration::seconds(1);
    let mark = audit_mark(s).await;
    s.update_license(v2.clone(), read.updated_at, None, Some(audit(a, "conf.license.update"))).await.unwrap();
    assert_audited(s, mark, "conf.license.update").await;
    assert_eq!(s.get_license(a, l1.license.id).await.unwrap(), v2);
    let mut v3 = read.clone();
    v3.license.status = LicenseStatus::Revoked;
    v3.updated_at = read.updated_at + Duration::seconds(2);
    let mark = audit_mark(s).await;
    let r = s.update_license(v3.clone(), read.updated_at, None, Some(audit(a, "conf.license.stale"))).await;
    assert_eq!(r, Err(StoreError::Changed));
    assert_not_audited(s, mark).await;
    assert_eq!(s.get_license(a, l1.license.id).await.unwrap(), v2, "a stale update changes nothing");
    let (ghost, _) = license(&fa, LicenseType::Trial, 1);
    let r = s.update_license(ghost.clone(), ghost.updated_at, None, None).await;
    assert_eq!(r, Err(StoreError::NotFound));
    // Without an audit entry nothing is appended.
    let mut v4 = v2.clone();
    v4.license.status = LicenseStatus::Active;
    v4.updated_at = v2.updated_at + Duration::seconds(1);
    let mark = audit_mark(s).await;
    s.update_license(v4.clone(), v2.updated_at, None, None).await.unwrap();
    assert_not_audited(s, mark).await;
    assert_eq!(s.get_license(a, l1.license.id).await.unwrap(), v4);

    // release_activations ends every active activation of the license in the same write.
    let acts: Vec<Activation> = {
        let mut v = Vec::new();
        for i in 0..2 {
            v.push(created(s, activation(&v4, &device_key(), fingerprint(&format!("rel{i}")), t), 0).await);
        }
        v
    };
    let other = created(s, activation(&lb, &device_key(), fingerprint("other"), t), 0).await;
    let mut v5 = v4.clone();
    v5.license.status = LicenseStatus::Revoked;
    v5.updated_at = v4.updated_at + Duration::seconds(1);
    let reason = "license revoked".to_string();
    s.update_license(v5.clone(), v4.updated_at, Some(reason.clone()), Some(audit(a, "conf.license.revoke")))
        .await
        .unwrap();
    for act in &acts {
        let got = s.get_activation(a, act.id).await.unwrap();
        assert_eq!(got.status, ActivationStatus::Deactivated);
        assert_eq!(got.deactivation_reason.as_deref(), Some(reason.as_str()));
        assert!(got.deactivated_at.is_some());
    }
    assert_eq!(s.count_active_seats(l1.license.id, t).await.unwrap(), 0);
    assert_eq!(s.get_activation(None, other.id).await.unwrap().status, ActivationStatus::Active, "other licenses");

    // note_expiring: once per expiry, touching nothing else.
    let (l4, _) = stored_license(s, &fa, LicenseType::Subscription, 1).await;
    let expiry = l4.license.expires_at.unwrap();
    let event = |kind: &str| Event {
        id: Uuid::now_v7(),
        tenant_id: fa.tenant,
        license_id: Some(l4.license.id),
        kind: kind.into(),
        at: now(),
        data: json!({"expires_at": expiry}),
    };
    let e1 = event("license.expiring");
    let mark = audit_mark(s).await;
    assert!(s.note_expiring(l4.license.id, expiry, e1.clone(), audit(a, "conf.license.expiring")).await.unwrap());
    assert_audited(s, mark, "conf.license.expiring").await;
    let mark = audit_mark(s).await;
    let again = s.note_expiring(l4.license.id, expiry, event("again"), audit(a, "conf.license.expiring")).await;
    assert!(!again.unwrap(), "a notice already recorded");
    let wrong = expiry + Duration::days(1);
    let other_expiry = s.note_expiring(l4.license.id, wrong, event("wrong"), audit(a, "conf.license.expiring")).await;
    assert!(!other_expiry.unwrap(), "the license does not expire then");
    assert_not_audited(s, mark).await;
    assert_eq!(s.list_events(a, Some(l4.license.id)).await.unwrap(), vec![e1], "one event, written with the notice");
    let stored = s.get_license(a, l4.license.id).await.unwrap();
    assert_eq!(stored, LicenseRecord { expiring_notice_for: Some(expiry), ..l4.clone() }, "nothing else changed");
}

/// Reads served from the cache see this store's writes at once (read-your-writes), also after the change feed
/// was pruned.
pub async fn cached_reads(s: &S) {
    let fx = fixture(s, "conf-cache").await;
    let a = Some(fx.tenant);
    let (l, k) = stored_license(s, &fx, LicenseType::Subscription, 5).await;
    let t = now();
    for _ in 0..2 {
        assert_eq!(*s.get_license_by_key_hash(k.hash()).await.unwrap(), l); // warm
    }
    let mut v2 = l.clone();
    v2.license.status = LicenseStatus::Suspended;
    v2.updated_at += Duration::seconds(1);
    s.update_license(v2.clone(), l.updated_at, None, None).await.unwrap();
    assert_eq!(*s.get_license_by_key_hash(k.hash()).await.unwrap(), v2, "the cached license follows the update");

    // A new key: the old one stops resolving.
    let k2 = LicenseKey::generate();
    let mut v3 = v2.clone();
    v3.key_hash = k2.hash();
    v3.key_hint = k2.hint();
    v3.updated_at += Duration::seconds(1);
    s.update_license(v3.clone(), v2.updated_at, None, None).await.unwrap();
    assert_eq!(*s.get_license_by_key_hash(k2.hash()).await.unwrap(), v3);
    assert_eq!(s.get_license_by_key_hash(k.hash()).await.unwrap_err(), StoreError::NotFound, "the old key");
    assert_eq!(s.find_licenses_by_hint(k2.hint()).await.unwrap(), vec![v3.clone()]);

    // Activation with its license.
    let act = created(s, activation(&v3, &device_key(), fingerprint("cached"), t), 5).await;
    for _ in 0..2 {
        let (ca, cl) = s.activation_with_license(act.id).await.unwrap();
        assert_eq!((&*ca, &*cl), (&act, &v3));
    }
    assert_eq!(s.activation_with_license(Uuid::now_v7()).await.unwrap_err(), StoreError::NotFound);
    let lease = t + Duration::hours(5);
    let hb = HeartbeatOp {
        activation_id: act.id,
        license_id: l.license.id,
        now: t + Duration::minutes(1),
        lease_expires_at: Some(lease),
        usage: vec![UsageEvent { id: Uuid::now_v7(), feature: "api".into(), amount: 4, recorded_at: t }],
        audit: None,
    };
    let totals_before = s.usage_totals(l.license.id).await.unwrap(); // warm
    assert!(totals_before.is_empty());
    s.heartbeat(hb).await.unwrap();
    assert_eq!(s.activation_with_license(act.id).await.unwrap().0.lease_expires_at, Some(lease), "a renewed lease");
    assert_eq!(*s.usage_totals(l.license.id).await.unwrap(), vec![("api".to_string(), 4)]);
    let mut v4 = v3.clone();
    v4.license.status = LicenseStatus::Active;
    v4.updated_at += Duration::seconds(1);
    s.update_license(v4.clone(), v3.updated_at, None, None).await.unwrap();
    assert_eq!(*s.activation_with_license(act.id).await.unwrap().1, v4, "the license of an activation");
    assert!(s.deactivate(act.id, t, "gone".into(), audit(a, "conf.deactivate")).await.unwrap());
    let (ca, _) = s.activation_with_license(act.id).await.unwrap();
    assert_eq!(ca.status, ActivationStatus::Deactivated);
    assert_eq!(ca.deactivation_reason.as_deref(), Some("gone"));

    // Whether a tenant has blocks.
    assert!(!s.has_blocks(fx.tenant).await.unwrap());
    assert!(!s.has_blocks(fx.tenant).await.unwrap());
    let block = BlockedDevice {
        id: Uuid::now_v7(),
        tenant_id: fx.tenant,
        device_public_key: Some(device_key()),
        fingerprint_hash: None,
        reason: "r".into(),
        created_at: t,
    };
    s.add_block(block.clone(), audit(a, "conf.block.add"), "r".into(), Box::new(|_| audit(None, "x"))).await.unwrap();
    assert!(s.has_blocks(fx.tenant).await.unwrap());
    s.remove_block(a, block.id, audit(a, "conf.block.remove")).await.unwrap();
    assert!(!s.has_blocks(fx.tenant).await.unwrap());

    // Pruning the change feed: the newest row stays, so a second prune finds nothing more.
    assert!(s.prune_changes(now() + Duration::days(1)).await.unwrap() > 0);
    assert_eq!(s.prune_changes(now() + Duration::days(1)).await.unwrap(), 0, "the newest change row stays");
    assert_eq!(s.prune_changes(t - Duration::days(1)).await.unwrap(), 0);
    // The cache still follows writes after the prune.
    let mut v5 = v4.clone();
    v5.license.max_activations = 1;
    v5.updated_at += Duration::seconds(1);
    s.update_license(v5.clone(), v4.updated_at, None, None).await.unwrap();
    assert_eq!(*s.get_license_by_key_hash(k2.hash()).await.unwrap(), v5);
    assert_eq!(*s.activation_with_license(act.id).await.unwrap().1, v5);
}
