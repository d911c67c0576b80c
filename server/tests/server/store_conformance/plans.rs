//! Plans and add-ons ([`CatalogStore`]): round-trips, the uniqueness the trait documents, scope, filters and order.

use chrono::Duration;
use tessera_core::Feature;
use tessera_server::store::*;
use uuid::Uuid;

use super::*;

fn plan(fx: &Fx, code: &str, kind: PlanKind, rank: i32, tier: &str) -> Plan {
    let t = now();
    Plan {
        id: Uuid::now_v7(),
        tenant_id: fx.tenant,
        product_id: fx.product,
        code: code.into(),
        name: format!("{code} plan"),
        kind,
        tier: tier.into(),
        rank,
        description: "for the suite".into(),
        public: true,
        trial_days: 14,
        features: vec![Feature::new("export_pdf")],
        limits: vec![UsageLimit { metric: "api_calls".into(), limit: 1000, period: LimitPeriod::Month, overage: None }],
        prices: vec![Price { interval: BillingInterval::Month, amount: 1999, currency: "EUR".into() }],
        category: (kind == PlanKind::AddOn).then(|| "crm".to_string()),
        attaches_to: Vec::new(),
        archived_at: None,
        template_id: None,
        upgrade_url: None,
        created_at: t,
        updated_at: t,
    }
}

fn conflict_names(r: Result<(), StoreError>, constraint: &str) {
    match r {
        Err(StoreError::Conflict(m)) => assert!(m.contains(constraint), "conflict names {constraint}: {m}"),
        other => panic!("expected a conflict on {constraint}, got {other:?}"),
    }
}

pub async fn plans(s: &S) {
    let fa = fixture(s, "conf-plans-a").await;
    let fb = fixture(s, "conf-plans-b").await;
    let filter = |product| PlanFilter { product_id: Some(product), ..PlanFilter::default() };

    // A plan round-trips whole, audited, and only in its tenant's scope.
    let basic = plan(&fa, "basic", PlanKind::Plan, 1, "BASIC");
    let mark = audit_mark(s).await;
    s.put_plan(basic.clone(), None, audit(Some(fa.tenant), "conf.plan.create")).await.unwrap();
    assert_audited(s, mark, "conf.plan.create").await;
    assert_eq!(s.get_plan(Some(fa.tenant), basic.id).await.unwrap(), basic);
    assert_eq!(s.get_plan(None, basic.id).await.unwrap(), basic);
    assert_eq!(s.get_plan(Some(fb.tenant), basic.id).await.unwrap_err(), StoreError::NotFound);

    // Codes are unique per product, ranks and tiers among current plans; a refused write leaves no audit row.
    let mark = audit_mark(s).await;
    conflict_names(
        s.put_plan(plan(&fa, "basic", PlanKind::AddOn, 0, ""), None, audit(None, "conf.plan.dup")).await,
        "plans.code",
    );
    conflict_names(
        s.put_plan(plan(&fa, "other", PlanKind::Plan, 1, "OTHER"), None, audit(None, "x")).await,
        "plans.rank",
    );
    conflict_names(
        s.put_plan(plan(&fa, "other", PlanKind::Plan, 2, "BASIC"), None, audit(None, "x")).await,
        "plans.tier",
    );
    assert_not_audited(s, mark).await;
    // Another product may reuse all three; add-ons share rank 0 and an empty tier.
    s.put_plan(plan(&fb, "basic", PlanKind::Plan, 1, "BASIC"), None, audit(None, "conf.plan.create")).await.unwrap();
    let crm = plan(&fa, "crm", PlanKind::AddOn, 0, "");
    let mon = Plan { category: Some("monitoring".into()), public: false, ..plan(&fa, "mon", PlanKind::AddOn, 0, "") };
    for p in [&crm, &mon] {
        s.put_plan(p.clone(), None, audit(None, "conf.plan.create")).await.unwrap();
    }
    let free = plan(&fa, "free", PlanKind::Plan, 0, "FREE");
    s.put_plan(free.clone(), None, audit(None, "conf.plan.create")).await.unwrap();

    // Lists: plans by rank first, then add-ons by code; filters narrow; scope hides other tenants.
    let codes = |v: Vec<Plan>| v.into_iter().map(|p| p.code).collect::<Vec<_>>();
    assert_eq!(
        codes(s.list_plans(Some(fa.tenant), filter(fa.product)).await.unwrap()),
        ["free", "basic", "crm", "mon"]
    );
    assert_eq!(codes(s.list_plans(Some(fb.tenant), filter(fa.product)).await.unwrap()), Vec::<String>::new());
    let only = |f: PlanFilter| async move { codes(s.list_plans(Some(fa.tenant), f).await.unwrap()) };
    assert_eq!(only(PlanFilter { kind: Some(PlanKind::AddOn), ..filter(fa.product) }).await, ["crm", "mon"]);
    assert_eq!(only(PlanFilter { category: Some("monitoring".into()), ..filter(fa.product) }).await, ["mon"]);
    assert_eq!(only(PlanFilter { tier: Some("FREE".into()), ..filter(fa.product) }).await, ["free"]);
    assert_eq!(only(PlanFilter { public_only: true, ..filter(fa.product) }).await, ["free", "basic", "crm"]);

    // Archiving frees the rank and tier but not the code; archived plans are listed only when asked for.
    let archived = Plan { archived_at: Some(now()), updated_at: now(), ..basic.clone() };
    s.put_plan(archived.clone(), Some(basic.updated_at), audit(Some(fa.tenant), "conf.plan.archive")).await.unwrap();
    assert_eq!(s.get_plan(None, basic.id).await.unwrap(), archived);
    assert_eq!(only(filter(fa.product)).await, ["free", "crm", "mon"]);
    assert_eq!(
        only(PlanFilter { include_archived: true, ..filter(fa.product) }).await,
        ["free", "basic", "crm", "mon"]
    );
    s.put_plan(plan(&fa, "basic-2", PlanKind::Plan, 1, "BASIC"), None, audit(None, "conf.plan.create")).await.unwrap();
    conflict_names(
        s.put_plan(plan(&fa, "basic", PlanKind::Plan, 7, "SEVEN"), None, audit(None, "x")).await,
        "plans.code",
    );

    // An update matches id and tenant: another tenant's id is not replaced.
    let stolen = Plan { tenant_id: fb.tenant, name: "stolen".into(), ..free.clone() };
    assert_eq!(s.put_plan(stolen, Some(free.updated_at), audit(None, "x")).await, Err(StoreError::NotFound));
    assert_eq!(s.get_plan(None, free.id).await.unwrap(), free);
    // An update must find the version it read: a stale one (an archive that raced a rename) is Changed.
    let mark = audit_mark(s).await;
    let renamed = Plan { name: "renamed".into(), updated_at: now() + Duration::seconds(1), ..free.clone() };
    s.put_plan(renamed.clone(), Some(free.updated_at), audit(None, "conf.plan.update")).await.unwrap();
    let stale = Plan { archived_at: Some(now()), ..free.clone() };
    assert_eq!(s.put_plan(stale, Some(free.updated_at), audit(None, "x")).await, Err(StoreError::Changed));
    assert_eq!(s.get_plan(None, free.id).await.unwrap(), renamed);
    let rows = s.audit_rows(None, mark, 100).await.unwrap();
    assert_eq!(rows.len(), 1, "the refused write appended nothing");
    let missing = plan(&fa, "missing", PlanKind::Plan, 9, "NINE");
    let at = missing.updated_at;
    assert_eq!(s.put_plan(missing, Some(at), audit(None, "x")).await, Err(StoreError::NotFound));
}
