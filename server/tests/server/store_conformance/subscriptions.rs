//! Subscriptions and their history ([`SubscriptionStore`]): versioned updates, scope, filters, paging, the due
//! scan, and history rows written with each change.

use chrono::Duration;
use serde_json::json;
use tessera_core::LicenseType;
use tessera_server::store::*;
use uuid::Uuid;

use super::*;

struct Parts {
    fx: Fx,
    customer: Uuid,
    plan: Uuid,
}

async fn parts(s: &S, name: &str) -> Parts {
    let fx = fixture(s, name).await;
    let c = customer(fx.tenant, name);
    s.put_customer(c.clone(), true, audit(Some(fx.tenant), "conf.customer.create")).await.unwrap();
    let t = now();
    let plan = Plan {
        id: Uuid::now_v7(),
        tenant_id: fx.tenant,
        product_id: fx.product,
        code: "basic".into(),
        name: "Basic".into(),
        kind: PlanKind::Plan,
        tier: "BASIC".into(),
        rank: 1,
        description: String::new(),
        public: true,
        trial_days: 0,
        features: vec![],
        limits: vec![],
        prices: vec![],
        category: None,
        attaches_to: vec![],
        archived_at: None,
        template_id: None,
        upgrade_url: None,
        created_at: t,
        updated_at: t,
    };
    s.put_plan(plan.clone(), None, audit(Some(fx.tenant), "conf.plan.create")).await.unwrap();
    Parts { fx, customer: c.id, plan: plan.id }
}

/// A subscription and the (unstored) license it carries.
fn subscription(
    p: &Parts,
    status: SubscriptionStatus,
    period_end: chrono::DateTime<chrono::Utc>,
) -> (Subscription, LicenseRecord) {
    let (license, _) = super::license(&p.fx, LicenseType::Subscription, 1);
    let t = now();
    let sub = Subscription {
        id: Uuid::now_v7(),
        tenant_id: p.fx.tenant,
        customer_id: p.customer,
        product_id: p.fx.product,
        plan_id: p.plan,
        add_ons: vec![],
        license_id: license.license.id,
        template_id: Uuid::now_v7(),
        status,
        interval: BillingInterval::Month,
        anchor_at: t,
        periods: 0,
        current_period_start: t,
        current_period_end: period_end,
        trial_ends_at: (status == SubscriptionStatus::Trialing).then_some(period_end),
        on_trial_end: TrialEnd::Expire,
        auto_renew: true,
        cancel_at_period_end: false,
        scheduled_change: None,
        ended_at: None,
        paid_since: None,
        period_starts: Vec::new(),
        created_at: t,
        updated_at: t,
    };
    (sub, license)
}

fn event(sub: &Subscription, action: &str) -> SubscriptionEvent {
    SubscriptionEvent {
        id: Uuid::now_v7(),
        subscription_id: sub.id,
        at: now(),
        action: action.into(),
        from_plan: None,
        to_plan: Some(sub.plan_id),
        actor: ACTOR.into(),
        details: json!({"n": action}),
    }
}

pub async fn subscriptions(s: &S) {
    let a = parts(s, "conf-subs-a").await;
    let b = parts(s, "conf-subs-b").await;
    let far = now() + Duration::days(30);

    // Insert: the license, the record, its first history row and the audit entries, in one step; in scope only.
    let (sa, la) = subscription(&a, SubscriptionStatus::Active, far);
    let mark = audit_mark(s).await;
    let audits = vec![audit(Some(a.fx.tenant), "conf.license.insert"), audit(Some(a.fx.tenant), "conf.sub.create")];
    s.insert_subscription(sa.clone(), la.clone(), event(&sa, "created"), audits).await.unwrap();
    assert_audited(s, mark, "conf.sub.create").await;
    assert_eq!(s.get_license(None, la.license.id).await.unwrap(), la, "the license is stored with it");
    assert_eq!(s.get_subscription(Some(a.fx.tenant), sa.id).await.unwrap(), sa);
    assert_eq!(s.get_subscription(None, sa.id).await.unwrap(), sa);
    assert_eq!(s.get_subscription(Some(b.fx.tenant), sa.id).await.unwrap_err(), StoreError::NotFound);
    // One license carries one subscription; a refused insert stores neither its license nor anything else.
    let (twin, twin_license) = subscription(&a, SubscriptionStatus::Active, far);
    let twin = Subscription { license_id: la.license.id, ..twin };
    let mark = audit_mark(s).await;
    let r = s.insert_subscription(twin, twin_license.clone(), event(&sa, "created"), vec![audit(None, "x")]).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_not_audited(s, mark).await;
    assert_eq!(s.get_license(None, twin_license.license.id).await.unwrap_err(), StoreError::NotFound);

    // Update: only the versions read; a stale subscription or license is Changed, another tenant's is NotFound;
    // nothing written then. The license changes with the subscription, in the same step.
    let paused = Subscription {
        status: SubscriptionStatus::Paused,
        updated_at: sa.updated_at + Duration::seconds(1),
        ..sa.clone()
    };
    let mut suspended = la.clone();
    suspended.license.status = tessera_core::LicenseStatus::Suspended;
    suspended.updated_at = la.updated_at + Duration::seconds(1);
    let with_license = Some((suspended.clone(), la.updated_at));
    s.update_subscription(
        paused.clone(),
        sa.updated_at,
        with_license,
        event(&paused, "paused"),
        vec![audit(None, "conf.sub.pause")],
    )
    .await
    .unwrap();
    assert_eq!(s.get_license(None, la.license.id).await.unwrap(), suspended);
    let stale = Subscription {
        status: SubscriptionStatus::Canceled,
        updated_at: paused.updated_at + Duration::seconds(1),
        ..paused.clone()
    };
    let mark = audit_mark(s).await;
    let r = s
        .update_subscription(stale.clone(), sa.updated_at, None, event(&stale, "canceled"), vec![audit(None, "x")])
        .await;
    assert_eq!(r, Err(StoreError::Changed));
    let stale_license = Some((la.clone(), la.updated_at));
    let r = s
        .update_subscription(
            stale.clone(),
            paused.updated_at,
            stale_license,
            event(&stale, "canceled"),
            vec![audit(None, "x")],
        )
        .await;
    assert_eq!(r, Err(StoreError::Changed), "the license was changed since it was read");
    let moved = Subscription { tenant_id: b.fx.tenant, ..stale.clone() };
    let r =
        s.update_subscription(moved, paused.updated_at, None, event(&stale, "canceled"), vec![audit(None, "x")]).await;
    assert_eq!(r, Err(StoreError::NotFound));
    assert_not_audited(s, mark).await;
    assert_eq!(s.get_subscription(None, sa.id).await.unwrap(), paused, "a refused step leaves the subscription");
    assert_eq!(s.get_license(None, la.license.id).await.unwrap(), suspended, "and its license");
    let history = s.subscription_history(Some(a.fx.tenant), sa.id).await.unwrap();
    assert_eq!(history.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["created", "paused"]);
    assert_eq!(history[1].details, json!({"n": "paused"}));
    assert!(s.subscription_history(Some(b.fx.tenant), sa.id).await.unwrap().is_empty());

    // Due: trials past their end and active subscriptions past their period's end; not paused (even with its
    // period over) or final ones.
    let (due_trial, l1) = subscription(&a, SubscriptionStatus::Trialing, now() - Duration::hours(1));
    let (due_active, l2) = subscription(&a, SubscriptionStatus::Active, now() - Duration::hours(2));
    let (later, l3) = subscription(&b, SubscriptionStatus::Active, far);
    let (ended, l4) = subscription(&b, SubscriptionStatus::Canceled, now() - Duration::hours(3));
    let ended = Subscription { ended_at: Some(now()), ..ended };
    let (paused_over, l5) = subscription(&b, SubscriptionStatus::Paused, now() - Duration::hours(4));
    for (x, l) in [(&due_trial, l1), (&due_active, l2), (&later, l3), (&ended, l4), (&paused_over, l5)] {
        s.insert_subscription(x.clone(), l, event(x, "created"), vec![audit(None, "conf.sub.create")]).await.unwrap();
    }
    let due: Vec<Uuid> = s.subscriptions_due(now(), 100).await.unwrap().iter().map(|x| x.id).collect();
    assert_eq!(due, [due_active.id, due_trial.id], "oldest due first; paused, final and future ones are not due");
    assert_eq!(s.subscriptions_due(now(), 1).await.unwrap().len(), 1);

    // Lists: scope, filters, paging.
    let (ids, sizes) =
        walk(2, |p| s.list_subscriptions(Some(a.fx.tenant), SubscriptionFilter::default(), p), |x: &Subscription| x.id)
            .await;
    assert_eq!((ids.len(), sizes), (3, vec![2, 1]));
    let only = |f: SubscriptionFilter| async move {
        s.list_subscriptions(None, f, PageRequest { after: None, limit: 100 }).await.unwrap().items.len()
    };
    assert_eq!(only(SubscriptionFilter { customer_id: Some(b.customer), ..Default::default() }).await, 3);
    assert_eq!(
        only(SubscriptionFilter {
            customer_id: Some(a.customer),
            status: Some(SubscriptionStatus::Trialing),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        only(SubscriptionFilter {
            product_id: Some(b.fx.product),
            status: Some(SubscriptionStatus::Canceled),
            ..Default::default()
        })
        .await,
        1
    );
    let (ids, _) = walk(
        10,
        |p| {
            s.list_subscriptions(
                Some(b.fx.tenant),
                SubscriptionFilter { customer_id: Some(a.customer), ..Default::default() },
                p,
            )
        },
        |x: &Subscription| x.id,
    )
    .await;
    assert!(ids.is_empty(), "another tenant's customer filter finds nothing");
}
