//! Tenants, API tokens, customers, products and templates.

use chrono::Duration;
use serde_json::json;
use tessera_core::{LicenseModel, LicenseType, Template};
use tessera_server::store::*;
use uuid::Uuid;

use super::*;

pub async fn tenants_and_tokens(s: &S) {
    // Tenants: create (audited), read back, refuse a second create of the same id without writing anything.
    let mark = audit_mark(s).await;
    let a = tenant("conf-tenants-a");
    s.create_tenant(a.clone(), audit(Some(a.id), "conf.tenant.create")).await.unwrap();
    let row = assert_audited(s, mark, "conf.tenant.create").await;
    assert_eq!(row.entry.tenant_id, Some(a.id));
    assert_eq!(s.get_tenant(a.id).await.unwrap(), a);
    assert_eq!(s.get_tenant(Uuid::now_v7()).await.unwrap_err(), StoreError::NotFound);
    let mark = audit_mark(s).await;
    let dup = Tenant { name: "other name".into(), ..a.clone() };
    assert!(matches!(s.create_tenant(dup, audit(None, "conf.tenant.dup")).await, Err(StoreError::Conflict(_))));
    assert_not_audited(s, mark).await; // a failed write leaves no audit row
    assert_eq!(s.get_tenant(a.id).await.unwrap(), a);

    let b = tenant("conf-tenants-b");
    let c = tenant("conf-tenants-c");
    for t in [&b, &c] {
        s.create_tenant(t.clone(), audit(Some(t.id), "conf.tenant.create")).await.unwrap();
    }
    let (ids, _) = walk(2, |p| s.list_tenants(p), |t: &Tenant| t.id).await;
    for t in [&a, &b, &c] {
        assert!(ids.contains(&t.id), "tenant {} listed", t.name);
    }
    let (all, _) = walk(1000, |p| s.list_tenants(p), |t: &Tenant| t.id).await;
    assert_eq!(all, ids, "page size does not change what is listed");
    let page = s.list_tenants(PageRequest { after: Some(a.id), limit: 1000 }).await.unwrap();
    assert!(page.items.iter().all(|t| t.id > a.id) && page.items.iter().any(|t| t.id == c.id));

    // API tokens: a tenant token and a vendor-wide one.
    let count = s.count_tokens().await.unwrap();
    let token = |tenant_id: Option<Uuid>, role: Role| ApiToken {
        id: Uuid::now_v7(),
        tenant_id,
        name: format!("{} token", role.as_str()),
        role,
        prefix: "tsr_conf_".into(),
        created_at: now(),
        revoked_at: None,
    };
    let (ta, hash_a) = (token(Some(a.id), Role::TenantAdmin), random32());
    let (tv, hash_v) = (token(None, Role::VendorAdmin), random32());
    let mark = audit_mark(s).await;
    s.create_token(ta.clone(), hash_a, audit(Some(a.id), "conf.token.create")).await.unwrap();
    assert_audited(s, mark, "conf.token.create").await;
    s.create_token(tv.clone(), hash_v, audit(None, "conf.token.create")).await.unwrap();
    assert_eq!(s.count_tokens().await.unwrap(), count + 2);
    assert_eq!(s.find_token(hash_a).await.unwrap(), Some((ta.clone(), hash_a)));
    assert_eq!(s.find_token(hash_v).await.unwrap(), Some((tv.clone(), hash_v)));
    assert_eq!(s.find_token(random32()).await.unwrap(), None);
    let dup = token(Some(a.id), Role::ReadOnly);
    let r = s.create_token(dup, hash_a, audit(None, "conf.token.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "a token hash is unique: {r:?}");
    assert_eq!(s.count_tokens().await.unwrap(), count + 2);

    let ids = |v: Vec<ApiToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_tokens(Some(a.id)).await.unwrap()), vec![ta.id], "a tenant's tokens only");
    assert!(ids(s.list_tokens(Some(b.id)).await.unwrap()).is_empty());
    let everyone = s.list_tokens(None).await.unwrap();
    assert!(everyone.contains(&ta) && everyone.contains(&tv));

    // Revocation is scoped: another tenant's scope does not find the token.
    let mark = audit_mark(s).await;
    let at = now();
    let r = s.revoke_token(Some(b.id), ta.id, at, audit(Some(b.id), "conf.token.revoke")).await;
    assert_eq!(r, Err(StoreError::NotFound));
    assert_not_audited(s, mark).await;
    assert_eq!(s.find_token(hash_a).await.unwrap().unwrap().0.revoked_at, None);
    s.revoke_token(Some(a.id), ta.id, at, audit(Some(a.id), "conf.token.revoke")).await.unwrap();
    assert_audited(s, mark, "conf.token.revoke").await;
    assert_eq!(s.find_token(hash_a).await.unwrap().unwrap().0.revoked_at, Some(at));
    s.revoke_token(None, tv.id, at, audit(None, "conf.token.revoke")).await.unwrap();
    assert_eq!(s.list_tokens(None).await.unwrap().iter().find(|t| t.id == tv.id).unwrap().revoked_at, Some(at));
    let r = s.revoke_token(None, Uuid::now_v7(), at, audit(None, "conf.token.revoke")).await;
    assert_eq!(r, Err(StoreError::NotFound));
    assert_eq!(s.count_tokens().await.unwrap(), count + 2, "revoked tokens still count");
}

/// Console users: created with their token in one write (a taken username writes neither), found by username
/// with the token's hash, listed by tenant with their tokens, passwords replaced within the scope only.
pub async fn console_users(s: &S) {
    let a = fixture(s, "conf-users-a").await;
    let b = fixture(s, "conf-users-b").await;
    let user = |tenant: Uuid, name: &str| {
        let token = ApiToken {
            id: Uuid::now_v7(),
            tenant_id: Some(tenant),
            name: format!("console user {name}"),
            role: Role::Support,
            prefix: "console user".into(),
            created_at: now(),
            revoked_at: None,
        };
        let u = ConsoleUser {
            id: Uuid::now_v7(),
            tenant_id: Some(tenant),
            username: name.into(),
            password_hash: format!("$argon2id$fake${name}"),
            token_id: token.id,
            created_at: now(),
            password_changed_at: now(),
        };
        (u, token, random32())
    };
    let (ua, ta, ha) = user(a.tenant, "conf.alice");
    let mark = audit_mark(s).await;
    s.create_console_user(ua.clone(), ta.clone(), ha, audit(Some(a.tenant), "conf.user.create")).await.unwrap();
    assert_audited(s, mark, "conf.user.create").await;
    assert_eq!(s.find_console_user("conf.alice".into()).await.unwrap(), Some((ua.clone(), ha)));
    assert_eq!(s.find_token(ha).await.unwrap(), Some((ta.clone(), ha)), "the user's token is written with it");
    assert_eq!(s.find_console_user("conf.nobody".into()).await.unwrap(), None);

    // The same username in another tenant: refused, and neither the user nor its token is written.
    let (dup, tdup, hdup) = user(b.tenant, "conf.alice");
    let tokens = s.count_tokens().await.unwrap();
    let mark = audit_mark(s).await;
    let r = s.create_console_user(dup, tdup, hdup, audit(Some(b.tenant), "conf.user.create")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_not_audited(s, mark).await;
    assert_eq!((s.count_tokens().await.unwrap(), s.find_token(hdup).await.unwrap()), (tokens, None));

    let (ub, tb, hb) = user(b.tenant, "conf.bob");
    s.create_console_user(ub.clone(), tb.clone(), hb, audit(Some(b.tenant), "conf.user.create")).await.unwrap();
    assert_eq!(s.list_console_users(Some(a.tenant)).await.unwrap(), vec![(ua.clone(), ta.clone())]);
    assert_eq!(s.list_console_users(Some(b.tenant)).await.unwrap(), vec![(ub.clone(), tb.clone())]);
    let all = s.list_console_users(None).await.unwrap();
    assert!(all.contains(&(ua.clone(), ta.clone())) && all.contains(&(ub.clone(), tb.clone())));

    // A new password: not from another tenant's scope; in its own, hash, time and token replaced in one write
    // (the old token revoked, so sessions signed in with the old password end).
    let at = now() + Duration::minutes(1);
    let (_, t2, h2) = user(a.tenant, "conf.alice");
    let mark = audit_mark(s).await;
    let pw = |scope, hash: &str, t: ApiToken, h| {
        s.set_console_password(scope, ua.id, hash.into(), t, h, at, audit(scope, "conf.user.pw"))
    };
    assert_eq!(pw(Some(b.tenant), "x", t2.clone(), h2).await, Err(StoreError::NotFound));
    assert_not_audited(s, mark).await;
    assert_eq!(s.find_token(h2).await.unwrap(), None, "nothing written");
    pw(Some(a.tenant), "$argon2id$new", t2.clone(), h2).await.unwrap();
    assert_audited(s, mark, "conf.user.pw").await;
    let (found, hash) = s.find_console_user("conf.alice".into()).await.unwrap().unwrap();
    assert_eq!((found.password_hash.as_str(), found.password_changed_at, found.token_id), ("$argon2id$new", at, t2.id));
    assert_eq!(hash, h2, "found with the new token's hash");
    assert_eq!(s.find_token(ha).await.unwrap().unwrap().0.revoked_at, Some(at), "the old token is revoked");
    assert_eq!(s.list_console_users(Some(a.tenant)).await.unwrap(), vec![(found.clone(), t2.clone())]);
    // Revoking the token shows in the list.
    s.revoke_token(Some(a.tenant), t2.id, at, audit(Some(a.tenant), "conf.token.revoke")).await.unwrap();
    assert_eq!(s.list_console_users(Some(a.tenant)).await.unwrap()[0].1.revoked_at, Some(at));
}

fn template(fx: &Fx, name: &str) -> TemplateRecord {
    let t = now();
    TemplateRecord {
        template: Template {
            id: Uuid::now_v7(),
            tenant_id: fx.tenant,
            product_id: fx.product,
            name: name.into(),
            license_type: LicenseType::Subscription,
            license_model: LicenseModel::PerSeat,
            max_activations: 5,
            duration_days: Some(365),
            maintenance_days: None,
            grace_days: 7,
            features: vec![tessera_core::Feature::new("export_pdf")],
            restrictions: Vec::new(),
            heartbeat_interval_secs: 120,
            lease_secs: 7200,
            fingerprint_policy: Default::default(),
            emergency: Default::default(),
            offline: Default::default(),
            transfer_policy: Default::default(),
            metadata: [("color".to_string(), json!("blue"))].into_iter().collect(),
        },
        created_at: t,
        updated_at: t,
    }
}

/// Customers, products and templates follow one pattern: put (create / update), scoped get and list, paging.
pub async fn catalog(s: &S) {
    let fa = fixture(s, "conf-catalog-a").await;
    let fb = fixture(s, "conf-catalog-b").await;

    // Customers
    let mark = audit_mark(s).await;
    let mut cs = Vec::new();
    for i in 0..5 {
        let c = customer(fa.tenant, &format!("cust{i}"));
        s.put_customer(c.clone(), true, audit(Some(fa.tenant), "conf.customer.create")).await.unwrap();
        cs.push(c);
    }
    assert_audited(s, mark, "conf.customer.create").await;
    let c0 = cs[0].clone();
    assert_eq!(s.get_customer(Some(fa.tenant), c0.id).await.unwrap(), c0);
    assert_eq!(s.get_customer(None, c0.id).await.unwrap(), c0);
    assert_eq!(s.get_customer(Some(fb.tenant), c0.id).await.unwrap_err(), StoreError::NotFound);
    let r = s.put_customer(c0.clone(), true, audit(None, "conf.customer.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "create on an existing id: {r:?}");
    let updated = Customer {
        name: "renamed".into(),
        email: None,
        metadata: json!({"vip": true}),
        updated_at: c0.updated_at + Duration::seconds(5),
        ..c0.clone()
    };
    let mark = audit_mark(s).await;
    s.put_customer(updated.clone(), false, audit(Some(fa.tenant), "conf.customer.update")).await.unwrap();
    assert_audited(s, mark, "conf.customer.update").await;
    assert_eq!(s.get_customer(None, c0.id).await.unwrap(), updated);
    let missing = customer(fa.tenant, "missing");
    let r = s.put_customer(missing.clone(), false, audit(None, "conf.customer.update")).await;
    assert_eq!(r, Err(StoreError::NotFound), "update of a missing id");
    assert_eq!(s.get_customer(None, missing.id).await.unwrap_err(), StoreError::NotFound);
    // An update cannot move a record to another tenant: it matches id and tenant.
    let moved = Customer { tenant_id: fb.tenant, name: "moved".into(), ..updated.clone() };
    let r = s.put_customer(moved, false, audit(None, "conf.customer.update")).await;
    assert_eq!(r, Err(StoreError::NotFound));
    assert_eq!(s.get_customer(None, c0.id).await.unwrap(), updated);

    let want: Vec<Uuid> = cs.iter().map(|c| c.id).collect();
    let (ids, sizes) = walk(2, |p| s.list_customers(Some(fa.tenant), p), |c: &Customer| c.id).await;
    assert_eq!((ids, sizes), (want.clone(), vec![2, 2, 1]));
    let (ids, sizes) = walk(5, |p| s.list_customers(Some(fa.tenant), p), |c: &Customer| c.id).await;
    assert_eq!((ids, sizes), (want.clone(), vec![5]), "an exactly full last page has no cursor");
    let (ids, _) = walk(3, |p| s.list_customers(Some(fb.tenant), p), |c: &Customer| c.id).await;
    assert!(ids.is_empty(), "another tenant's customers are not listed");
    let (ids, _) = walk(3, |p| s.list_customers(None, p), |c: &Customer| c.id).await;
    assert!(want.iter().all(|id| ids.contains(id)));
    let page = s.list_customers(Some(fa.tenant), PageRequest { after: Some(want[1]), limit: 2 }).await.unwrap();
    assert_eq!(page.items.iter().map(|c| c.id).collect::<Vec<_>>(), want[2..4].to_vec());
    assert_eq!(page.next_cursor, Some(want[3].to_string()));
    assert_eq!(page.items[0], cs[2], "listed records are whole");

    // Products: the code is unique within a tenant.
    let p = product(fa.tenant, "conf-widget");
    let mark = audit_mark(s).await;
    s.put_product(p.clone(), true, audit(Some(fa.tenant), "conf.product.create")).await.unwrap();
    assert_audited(s, mark, "conf.product.create").await;
    assert_eq!(s.get_product(Some(fa.tenant), p.id).await.unwrap(), p);
    assert_eq!(s.get_product(Some(fb.tenant), p.id).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(s.get_product(None, p.id).await.unwrap(), p);
    let same_code = product(fa.tenant, "conf-widget");
    let r = s.put_product(same_code, true, audit(None, "conf.product.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "a product code is unique in a tenant: {r:?}");
    let other_tenant = product(fb.tenant, "conf-widget");
    s.put_product(other_tenant.clone(), true, audit(Some(fb.tenant), "conf.product.create")).await.unwrap();
    assert!(matches!(s.put_product(p.clone(), true, audit(None, "x")).await, Err(StoreError::Conflict(_))));
    let renamed = Product { name: "Widget Pro".into(), updated_at: p.updated_at + Duration::seconds(1), ..p.clone() };
    let mark = audit_mark(s).await;
    s.put_product(renamed.clone(), false, audit(Some(fa.tenant), "conf.product.update")).await.unwrap();
    assert_audited(s, mark, "conf.product.update").await;
    assert_eq!(s.get_product(None, p.id).await.unwrap(), renamed);
    let r = s.put_product(product(fa.tenant, "conf-none"), false, audit(None, "conf.product.update")).await;
    assert_eq!(r, Err(StoreError::NotFound));
    let (ids, sizes) = walk(1, |pr| s.list_products(Some(fa.tenant), pr), |x: &Product| x.id).await;
    assert_eq!((ids, sizes), (vec![fa.product, p.id], vec![1, 1]));
    let (ids, _) = walk(10, |pr| s.list_products(Some(fb.tenant), pr), |x: &Product| x.id).await;
    assert_eq!(ids, vec![fb.product, other_tenant.id]);

    // Templates: also deleted, scoped.
    let t1 = template(&fa, "standard");
    let t2 = template(&fa, "premium");
    let mark = audit_mark(s).await;
    for t in [&t1, &t2] {
        s.put_template(t.clone(), true, audit(Some(fa.tenant), "conf.template.create")).await.unwrap();
    }
    assert_audited(s, mark, "conf.template.create").await;
    assert_eq!(s.get_template(Some(fa.tenant), t1.template.id).await.unwrap(), t1);
    assert_eq!(s.get_template(Some(fb.tenant), t1.template.id).await.unwrap_err(), StoreError::NotFound);
    let r = s.put_template(t1.clone(), true, audit(None, "conf.template.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let mut t1b = t1.clone();
    t1b.template.max_activations = 9;
    t1b.template.name = "standard v2".into();
    t1b.updated_at += Duration::seconds(1);
    let mark = audit_mark(s).await;
    s.put_template(t1b.clone(), false, audit(Some(fa.tenant), "conf.template.update")).await.unwrap();
    assert_audited(s, mark, "conf.template.update").await;
    assert_eq!(s.get_template(None, t1.template.id).await.unwrap(), t1b);
    let r = s.put_template(template(&fa, "ghost"), false, audit(None, "conf.template.update")).await;
    assert_eq!(r, Err(StoreError::NotFound));
    let (ids, sizes) = walk(1, |p| s.list_templates(Some(fa.tenant), p), |t: &TemplateRecord| t.template.id).await;
    assert_eq!((ids, sizes), (vec![t1.template.id, t2.template.id], vec![1, 1]));
    let (ids, _) = walk(5, |p| s.list_templates(Some(fb.tenant), p), |t: &TemplateRecord| t.template.id).await;
    assert!(ids.is_empty());

    let mark = audit_mark(s).await;
    let r = s.delete_template(Some(fb.tenant), t1.template.id, audit(Some(fb.tenant), "conf.template.delete")).await;
    assert_eq!(r, Err(StoreError::NotFound), "another tenant cannot delete it");
    assert_not_audited(s, mark).await;
    s.delete_template(Some(fa.tenant), t1.template.id, audit(Some(fa.tenant), "conf.template.delete")).await.unwrap();
    assert_audited(s, mark, "conf.template.delete").await;
    assert_eq!(s.get_template(None, t1.template.id).await.unwrap_err(), StoreError::NotFound);
    let r = s.delete_template(None, t1.template.id, audit(None, "conf.template.delete")).await;
    assert_eq!(r, Err(StoreError::NotFound), "deleting twice");
    let (ids, _) = walk(5, |p| s.list_templates(Some(fa.tenant), p), |t: &TemplateRecord| t.template.id).await;
    assert_eq!(ids, vec![t2.template.id]);
}
