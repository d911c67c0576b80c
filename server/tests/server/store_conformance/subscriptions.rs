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
        created_at: t,
        updated_at: t,
    };
    s.put_plan(plan.clone(), true, audit(Some(fx.tenant), "conf.plan.create")).await.unwrap();
    Parts { fx, customer: c.id, plan: plan.id }
}

async fn subscription(
    s: &S,
    p: &Parts,
    status: SubscriptionStatus,
    period_end: chrono::DateTime<chrono::Utc>,
) -> Subscription {
    let (license, _) = stored_license(s, &p.fx, LicenseType::Subscription, 1).await;
    let t = now();
    Subscription {
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
        created_at: t,
        updated_at: t,
    }
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

    // Insert: the record, its first history row and the audit entry, in one step; read back in scope only.
    let sa = subscription(s, &a, SubscriptionStatus::Active, far).await;
    let mark = audit_mark(s).await;
    s.insert_subscription(sa.clone(), event(&sa, "created"), audit(Some(a.fx.tenant), "conf.sub.create"))
        .await
        .unwrap();
    assert_audited(s, mark, "conf.sub.create").await;
    assert_eq!(s.get_subscription(Some(a.fx.tenant), sa.id).await.unwrap(), sa);
    assert_eq!(s.get_subscription(None, sa.id).await.unwrap(), sa);
    assert_eq!(s.get_subscription(Some(b.fx.tenant), sa.id).await.unwrap_err(), StoreError::NotFound);
    // One license carries one subscription.
    let twin = Subscription { id: Uuid::now_v7(), ..sa.clone() };
    let mark = audit_mark(s).await;
    let r = s.insert_subscription(twin, event(&sa, "created"), audit(None, "conf.sub.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_not_audited(s, mark).await;

    // Update: only the version read; a stale one is Changed, another tenant's is NotFound; nothing written then.
    let paused = Subscription {
        status: SubscriptionStatus::Paused,
        updated_at: sa.updated_at + Duration::seconds(1),
        ..sa.clone()
    };
    s.update_subscription(paused.clone(), sa.updated_at, event(&paused, "paused"), audit(None, "conf.sub.pause"))
        .await
        .unwrap();
    let stale = Subscription {
        status: SubscriptionStatus::Canceled,
        updated_at: paused.updated_at + Duration::seconds(1),
        ..paused.clone()
    };
    let mark = audit_mark(s).await;
    let r = s.update_subscription(stale.clone(), sa.updated_at, event(&stale, "canceled"), audit(None, "x")).await;
    assert_eq!(r, Err(StoreError::Changed));
    let moved = Subscription { tenant_id: b.fx.tenant, ..stale.clone() };
    let r = s.update_subscription(moved, paused.updated_at, event(&stale, "canceled"), audit(None, "x")).await;
    assert_eq!(r, Err(StoreError::NotFound));
    assert_not_audited(s, mark).await;
    assert_eq!(s.get_subscription(None, sa.id).await.unwrap(), paused);
    let history = s.subscription_history(Some(a.fx.tenant), sa.id).await.unwrap();
    assert_eq!(history.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["created", "paused"]);
    assert_eq!(history[1].details, json!({"n": "paused"}));
    assert!(s.subscription_history(Some(b.fx.tenant), sa.id).await.unwrap().is_empty());

    // Due: trials past their end and active subscriptions past their period's end; not paused or final ones.
    let due_trial = subscription(s, &a, SubscriptionStatus::Trialing, now() - Duration::hours(1)).await;
    let due_active = subscription(s, &a, SubscriptionStatus::Active, now() - Duration::hours(2)).await;
    let later = subscription(s, &b, SubscriptionStatus::Active, far).await;
    let ended = Subscription {
        ended_at: Some(now()),
        ..subscription(s, &b, SubscriptionStatus::Canceled, now() - Duration::hours(3)).await
    };
    for x in [&due_trial, &due_active, &later, &ended] {
        s.insert_subscription(x.clone(), event(x, "created"), audit(None, "conf.sub.create")).await.unwrap();
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
    assert_eq!(only(SubscriptionFilter { customer_id: Some(b.customer), ..Default::default() }).await, 2);
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
