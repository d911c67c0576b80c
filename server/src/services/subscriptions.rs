//! Subscriptions: a customer's plan (and add-ons) over time, and the license that carries what it grants.
//!
//! The subscription is the source of truth; the license follows it. Every change writes the subscription and its
//! license together, in one atomic step guarded by both versions, with the history row and the audit entries: the
//! license's features from the plan and add-ons, its expiry at the trial's or period's end, suspended while paused,
//! ended with the subscription. A change to a plan's entitlements re-signs the licenses of its subscriptions at
//! once. A re-signed license reaches each online agent with its next heartbeat.
//!
//! Life: `TRIALING` (the plan's trial days) → `ACTIVE` by [`Services::convert_subscription`] (payments will call
//! the same operation), or at the trial's end EXPIRED or moved to the product's lowest plan, as `on_trial_end`
//! says. `ACTIVE` renews at each period end while `auto_renew` holds; an upgrade or downgrade applies at once, or a
//! downgrade at the period's end; `PAUSED` suspends the license until resumed; `CANCELED` now or at the period's
//! end. CANCELED and EXPIRED are final.
//!
//! Usage limits of a plan that count over its whole life (`LIFETIME`) become the license's quotas; limits per
//! day, month or billing period are shown with the subscription but not yet enforced per period (that comes with
//! period-aware metering).

use std::collections::BTreeMap;

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tessera_core::model::{BillingCycle, Feature, LimitType, UNLIMITED};
use tessera_core::{LicenseStatus, LicenseType};
use uuid::Uuid;

use super::licenses::CreateLicense;
use super::{Ctx, Principal, Services};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::{
    BillingInterval, LimitPeriod, Page, PageRequest, Plan, PlanFilter, PlanKind, Role, ScheduledChange, Subscription,
    SubscriptionEvent, SubscriptionFilter, SubscriptionStatus, TrialEnd, UsageLimit,
};

/// Most subscriptions the lifecycle job takes in one run (the rest wait for the next run).
pub const DUE_PER_RUN: u32 = 500;

/// `POST /v1/subscriptions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    pub customer_id: Uuid,
    /// A current plan (kind PLAN) of the product.
    pub plan_id: Uuid,
    /// Add-ons of the same product that attach to the plan.
    #[serde(default)]
    pub add_ons: Vec<Uuid>,
    /// MONTH (default) or YEAR.
    #[serde(default)]
    pub interval: Option<BillingInterval>,
    /// Start with the plan's trial (default true when the plan has trial days).
    #[serde(default)]
    pub trial: Option<bool>,
    /// EXPIRE (default) or DOWNGRADE (to the product's lowest plan) when the trial ends unconverted.
    #[serde(default)]
    pub on_trial_end: Option<TrialEnd>,
    /// Renew at each period's end (default true).
    #[serde(default)]
    pub auto_renew: Option<bool>,
    /// The license's terms (seats, heartbeat, fingerprint policy); default: the plan's template.
    #[serde(default)]
    pub template_id: Option<Uuid>,
}

/// When a change takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Effective {
    #[default]
    Now,
    PeriodEnd,
}

/// `POST /v1/subscriptions/{id}/change`: another plan, other add-ons, or both.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeSubscription {
    #[serde(default)]
    pub plan_id: Option<Uuid>,
    /// The whole new set of add-ons (absent: those that still attach to the new plan are kept).
    #[serde(default)]
    pub add_ons: Option<Vec<Uuid>>,
    /// NOW (default) or PERIOD_END (an active subscription's downgrade, kept paid for until then).
    #[serde(default)]
    pub at: Option<Effective>,
}

/// `POST /v1/subscriptions/{id}/cancel`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscription {
    /// PERIOD_END (default: it runs to the end of what was paid for, or of the trial) or NOW.
    #[serde(default)]
    pub at: Option<Effective>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /v1/subscriptions` filters.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionQuery {
    pub customer_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    pub status: Option<SubscriptionStatus>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A plan as a subscription names it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanRef {
    pub id: Uuid,
    pub code: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tier: String,
}

/// One feature the subscription grants, with its use so far.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Entitlement {
    pub feature: String,
    pub enabled: bool,
    /// The license's quota (absent: unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Units used (as the server has recorded them) in the quota's current period; lifetime for a lifetime quota.
    pub used: i64,
    /// The span the quota counts over (LIFETIME: never starts afresh).
    pub period: LimitPeriod,
    /// A quota per period: when the current period ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_ends_at: Option<DateTime<Utc>>,
}

/// A subscription with what it grants: "what does this customer have".
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    #[serde(flatten)]
    pub subscription: Subscription,
    pub plan: PlanRef,
    #[serde(rename = "add_on_plans")]
    pub add_on_plans: Vec<PlanRef>,
    pub entitlements: Vec<Entitlement>,
    /// The plan's and add-ons' usage limits per period (LIFETIME ones are the license's quotas).
    pub limits: Vec<UsageLimit>,
}

/// `POST /v1/subscriptions`: the subscription and its license's key (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedSubscription {
    pub license_key: String,
    #[serde(flatten)]
    pub view: SubscriptionView,
}

/// What a subscription's license grants: the features of the plan and of each add-on; for a feature more than
/// one of them grants, enabled if any enables it, and a quota that is the sum of what each grants, where what one
/// grants is its limit of the metric if it has one (with that limit's period), else the feature's own
/// `limit_value` and `limit_period`: unlimited if any grants it without limit. (An add-on adds to the plan's quota;
/// it never lowers an unlimited grant.) Quotas of one feature add up only over the same period: an add-on that
/// counts a metric per DAY cannot add to a plan that counts it per MONTH, and is refused.
pub fn entitlements(plan: &Plan, add_ons: &[Plan]) -> AppResult<Vec<Feature>> {
    let sources: Vec<&Plan> = std::iter::once(plan).chain(add_ons).collect();
    let mut by_id: BTreeMap<String, Feature> = BTreeMap::new();
    let mut limit_periods: BTreeMap<&str, (LimitPeriod, &str)> = BTreeMap::new();
    // Absent: not granted yet; None: unlimited; Some((units, period, the plan that set the period)).
    let mut quotas: BTreeMap<String, Option<(i64, LimitPeriod, &str)>> = BTreeMap::new();
    for p in &sources {
        let mut granted: BTreeMap<&str, Option<(i64, LimitPeriod)>> = BTreeMap::new();
        for f in &p.features {
            match by_id.get_mut(&f.id) {
                None => {
                    by_id.insert(f.id.clone(), f.clone());
                }
                Some(have) => {
                    have.enabled |= f.enabled;
                    have.expires_at = match (have.expires_at, f.expires_at) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
            }
            granted.insert(f.id.as_str(), (!f.is_unlimited()).then_some((f.limit_value, f.limit_period)));
        }
        for l in &p.limits {
            // Limits of one metric (caps or included amounts) count over one period, whichever plan sets them.
            match limit_periods.get(l.metric.as_str()) {
                Some((have, by)) if *have != l.period => {
                    return Err(AppError::invalid(format!(
                        "{:?} limits {:?} per {} and {by:?} per {}: the limits of one metric add up only over the \
                         same period; give the add-on's limit the plan's period",
                        p.code,
                        l.metric,
                        l.period.as_str(),
                        have.as_str()
                    )))
                }
                Some(_) => {}
                None => {
                    limit_periods.insert(l.metric.as_str(), (l.period, p.code.as_str()));
                }
            }
            let f = by_id.entry(l.metric.clone()).or_insert_with(|| Feature::new(&l.metric));
            f.limit_type = LimitType::Count;
            // A limit with an overage price is an amount included in the price, not a cap: no quota.
            granted.insert(l.metric.as_str(), l.overage.is_none().then_some((l.limit, l.period)));
        }
        for (id, q) in granted {
            let next = match (quotas.get(id).copied(), q) {
                (None, Some((b, period))) => Some((b, period, p.code.as_str())),
                (None, None) | (Some(None), _) | (Some(Some(_)), None) => None,
                (Some(Some((a, have, by))), Some((b, period))) if have == period => {
                    Some((a.saturating_add(b), have, by))
                }
                (Some(Some((_, have, by))), Some((_, period))) => {
                    return Err(AppError::invalid(format!(
                        "{:?} counts {id:?} per {} and {by:?} per {}: quotas of one feature add up only over the \
                         same period; give the add-on's limit the plan's period",
                        p.code,
                        period.as_str(),
                        have.as_str()
                    )))
                }
            };
            quotas.insert(id.to_string(), next);
        }
    }
    for (id, f) in by_id.iter_mut() {
        match quotas.get(id).copied().flatten() {
            Some((units, period, _)) => {
                f.limit_value = units;
                f.limit_period = period;
            }
            None => {
                f.limit_value = UNLIMITED;
                f.limit_period = LimitPeriod::Lifetime;
            }
        }
    }
    Ok(by_id.into_values().collect())
}

/// The license metadata key of the upgrade offers ([`upgrade_offers`]), which the agent reads for its 402 answers.
pub const UPGRADES_KEY: &str = "upgrades";

/// What a subscription's license offers for each feature the catalog sells and the license does not grant
/// (enabled): the cheapest way to get it, among the product's current public plans above the subscription's rung
/// and the public add-ons that attach to its plan. Cheapest by what the customer would pay more per billing
/// interval, in the currency of the plan's price for the subscription's interval: for another plan the difference
/// of the two plans' prices, for an add-on its price; ones without a price there come after, the lower rung first.
/// With the offer's `upgrade_url`, its placeholders filled in (`{feature}`, `{license}`, `{plan}`). A JSON object by
/// feature id, signed into the license's metadata under [`UPGRADES_KEY`], so the agent can answer offline. Offers
/// are brought up to date whenever the subscription's license is (any change of the subscription or of its plans'
/// grants, and each renewal).
pub fn upgrade_offers(
    license_id: Uuid,
    granted: &[Feature],
    plan: &Plan,
    interval: BillingInterval,
    catalog: &[Plan],
) -> Value {
    let currency = plan.prices.iter().find(|p| p.interval == interval).map(|p| p.currency.as_str());
    let base = currency.and_then(|c| plan.price(interval, c)).unwrap_or(0);
    let extra = |c: &Plan| {
        let price = c.price(interval, currency?)?;
        Some(match c.kind {
            PlanKind::Plan => price.saturating_sub(base).max(0),
            PlanKind::AddOn => price,
        })
    };
    let has = |id: &str| granted.iter().any(|f| f.id == id && f.enabled);
    let sells = |p: &Plan, id: &str| {
        p.features.iter().any(|f| f.id == id && f.enabled) || p.limits.iter().any(|l| l.metric == id)
    };
    let candidates: Vec<&Plan> = catalog
        .iter()
        .filter(|c| c.public && c.archived_at.is_none() && c.product_id == plan.product_id && c.id != plan.id)
        .filter(|c| match c.kind {
            PlanKind::Plan => c.rank > plan.rank,
            PlanKind::AddOn => c.attaches_to.is_empty() || c.attaches_to.contains(&plan.code),
        })
        .collect();
    let mut offers = serde_json::Map::new();
    let ids: std::collections::BTreeSet<&str> = candidates
        .iter()
        .flat_map(|c| c.features.iter().map(|f| f.id.as_str()).chain(c.limits.iter().map(|l| l.metric.as_str())))
        .collect();
    for id in ids {
        if has(id) {
            continue;
        }
        let best = candidates
            .iter()
            .filter(|c| sells(c, id))
            .min_by_key(|c| (extra(c).map_or((1, 0), |m| (0, m)), c.rank, c.code.as_str()));
        let Some(best) = best else { continue };
        let mut offer = json!({"plan": best.code, "name": best.name, "kind": best.kind});
        if let Some(u) = &best.upgrade_url {
            let url =
                u.replace("{feature}", id).replace("{license}", &license_id.to_string()).replace("{plan}", &best.code);
            offer["upgrade_url"] = json!(url);
        }
        offers.insert(id.to_string(), offer);
    }
    Value::Object(offers)
}

/// The billing cycle a subscription's license carries, for its BILLING_PERIOD quotas.
pub fn billing_cycle(sub: &Subscription) -> BillingCycle {
    let months = match sub.interval {
        BillingInterval::Month => 1,
        BillingInterval::Year => 12,
    };
    BillingCycle { anchor: sub.anchor_at, months }
}

/// The end of period `n` (0 is the first period's start) counted from `anchor`.
pub fn period_boundary(anchor: DateTime<Utc>, n: u32, interval: BillingInterval) -> AppResult<DateTime<Utc>> {
    let months = match interval {
        BillingInterval::Month => n,
        BillingInterval::Year => n.saturating_mul(12),
    };
    anchor
        .checked_add_months(Months::new(months))
        .ok_or_else(|| AppError::invalid("the subscription's periods run past the year 262143"))
}

fn plan_ref(p: &Plan) -> PlanRef {
    PlanRef { id: p.id, code: p.code.clone(), name: p.name.clone(), tier: p.tier.clone() }
}

fn transition(message: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::InvalidTransition, message)
}

impl Ctx {
    /// The lifecycle job acting on every tenant's subscriptions (and their licenses).
    pub(crate) fn system_admin(job: &str) -> Ctx {
        Ctx {
            principal: Some(Principal { token_id: Uuid::nil(), tenant_id: None, role: Role::VendorAdmin }),
            ip: None,
            actor: format!("system:{job}"),
        }
    }
}

impl Services {
    /// A plan a subscription may be on: a current PLAN.
    async fn subscribable_plan(&self, ctx: &Ctx, id: Uuid) -> AppResult<Plan> {
        let p = self.get_plan(ctx, id).await?;
        if p.kind != PlanKind::Plan {
            return Err(AppError::invalid(format!("{:?} is an add-on: subscribe to a plan and attach it", p.code)));
        }
        if p.archived_at.is_some() {
            return Err(transition(format!("plan {:?} is archived and no longer sold: choose a current plan", p.code)));
        }
        Ok(p)
    }

    /// The add-ons `ids` for `plan`: current ADD_ONs of its product that attach to it, each once.
    async fn add_ons_for(&self, ctx: &Ctx, plan: &Plan, ids: &[Uuid]) -> AppResult<Vec<Plan>> {
        if ids.len() > 64 {
            return Err(AppError::invalid("at most 64 add-ons per subscription"));
        }
        let mut out: Vec<Plan> = Vec::new();
        for id in ids {
            if out.iter().any(|a| a.id == *id) {
                return Err(AppError::invalid(format!("add-on {id} is listed twice")));
            }
            let a = self.get_plan(ctx, *id).await?;
            if a.kind != PlanKind::AddOn || a.product_id != plan.product_id {
                return Err(AppError::invalid(format!("{:?} is not an add-on of this plan's product", a.code)));
            }
            if a.archived_at.is_some() {
                return Err(transition(format!("add-on {:?} is archived and no longer sold", a.code)));
            }
            if !a.attaches_to.is_empty() && !a.attaches_to.contains(&plan.code) {
                return Err(AppError::invalid(format!(
                    "add-on {:?} attaches to {} only, not to {:?}",
                    a.code,
                    a.attaches_to.join(", "),
                    plan.code
                )));
            }
            out.push(a);
        }
        Ok(out)
    }

    fn sub_event(
        ctx: &Ctx,
        s: &Subscription,
        at: DateTime<Utc>,
        action: &str,
        from: Option<Uuid>,
        details: Value,
    ) -> SubscriptionEvent {
        SubscriptionEvent {
            id: Uuid::now_v7(),
            subscription_id: s.id,
            at,
            action: action.into(),
            from_plan: from,
            to_plan: Some(s.plan_id),
            actor: ctx.actor.clone(),
            details,
        }
    }

    pub async fn create_subscription(&self, ctx: &Ctx, req: CreateSubscription) -> AppResult<CreatedSubscription> {
        ctx.require_admin()?;
        let scope = ctx.scope()?;
        let customer =
            self.store.get_customer(scope, req.customer_id).await.map_err(|e| AppError::store("customer", e))?;
        let plan = self.subscribable_plan(ctx, req.plan_id).await?;
        if plan.tenant_id != customer.tenant_id {
            return Err(AppError::not_found("plan"));
        }
        let add_ons = self.add_ons_for(ctx, &plan, &req.add_ons).await?;
        let template_id = req.template_id.or(plan.template_id).ok_or_else(|| {
            AppError::invalid(
                "the license needs terms (seats, heartbeat, fingerprint policy): give template_id, or set the plan's",
            )
        })?;
        let template =
            self.store.get_template(scope, template_id).await.map_err(|e| AppError::store("template", e))?.template;
        if template.product_id != plan.product_id {
            return Err(AppError::invalid(
                "template_id is a template of another product: use one of the plan's product",
            ));
        }
        let now = self.now();
        let interval = req.interval.unwrap_or(BillingInterval::Month);
        if !plan.prices.is_empty() && !plan.prices.iter().any(|p| p.interval == interval) {
            return Err(AppError::invalid(format!(
                "plan {:?} has no {:?} price: choose an interval it is sold by",
                plan.code, interval
            )));
        }
        if req.trial == Some(true) && plan.trial_days == 0 {
            return Err(AppError::invalid(format!("plan {:?} has no trial days: leave trial out or false", plan.code)));
        }
        let trial = req.trial.unwrap_or(true) && plan.trial_days > 0;
        let trial_ends_at = trial.then(|| now + chrono::Duration::days(i64::from(plan.trial_days)));
        let id = Uuid::now_v7();
        let mut sub = Subscription {
            id,
            tenant_id: plan.tenant_id,
            customer_id: customer.id,
            product_id: plan.product_id,
            plan_id: plan.id,
            add_ons: add_ons.iter().map(|a| a.id).collect(),
            license_id: Uuid::nil(),
            template_id,
            status: if trial { SubscriptionStatus::Trialing } else { SubscriptionStatus::Active },
            interval,
            anchor_at: now,
            periods: 0,
            current_period_start: now,
            current_period_end: period_boundary(now, 1, interval)?,
            trial_ends_at,
            on_trial_end: req.on_trial_end.unwrap_or(TrialEnd::Expire),
            auto_renew: req.auto_renew.unwrap_or(true),
            cancel_at_period_end: false,
            scheduled_change: None,
            ended_at: None,
            paid_since: (!trial).then_some(now),
            period_starts: if trial { Vec::new() } else { vec![now] },
            created_at: now,
            updated_at: now,
        };
        if let Some(t) = trial_ends_at {
            // The trial is the first stretch; paid periods count from conversion (or the trial's end).
            sub.current_period_end = t;
        }
        let mut metadata = BTreeMap::new();
        metadata.insert("subscription_id".to_string(), json!(id));
        let (mut license, key, license_audit) = self
            .new_license(
                ctx,
                CreateLicense {
                    template_id: Some(template_id),
                    customer_id: Some(customer.id),
                    license_type: Some(LicenseType::Subscription),
                    expires_at: Some(sub.current_period_end),
                    features: Some(entitlements(&plan, &add_ons)?),
                    metadata: Some(metadata),
                    ..CreateLicense::default()
                },
            )
            .await?;
        sub.license_id = license.license.id;
        license.license.billing_cycle = Some(billing_cycle(&sub));
        let catalog = self.catalog_of(ctx, plan.product_id).await?;
        let offers = upgrade_offers(sub.license_id, &license.license.features, &plan, interval, &catalog);
        license.license.metadata.insert(UPGRADES_KEY.to_string(), offers);
        let event =
            Self::sub_event(ctx, &sub, now, "created", None, json!({"status": sub.status, "interval": interval}));
        let audit = ctx.audit(
            now,
            Some(sub.tenant_id),
            "subscription.create",
            Some(id.to_string()),
            json!({"plan": plan.code, "customer_id": customer.id, "license_id": sub.license_id, "status": sub.status}),
        );
        // The license and its subscription are stored together, or neither is.
        self.store
            .insert_subscription(sub.clone(), license, event, vec![license_audit, audit])
            .await
            .map_err(|e| AppError::store("subscription", e))?;
        let view = self.subscription_view(ctx, sub).await?;
        Ok(CreatedSubscription { license_key: key.expose(), view })
    }

    pub async fn get_subscription(&self, ctx: &Ctx, id: Uuid) -> AppResult<SubscriptionView> {
        let sub = self.subscription_record(ctx, id).await?;
        self.subscription_view(ctx, sub).await
    }

    async fn subscription_record(&self, ctx: &Ctx, id: Uuid) -> AppResult<Subscription> {
        self.store.get_subscription(ctx.scope()?, id).await.map_err(|e| AppError::store("subscription", e))
    }

    pub async fn list_subscriptions(&self, ctx: &Ctx, q: SubscriptionQuery) -> AppResult<Page<SubscriptionView>> {
        let page = super::PageQuery { cursor: q.cursor, limit: q.limit }.to_request()?;
        let filter = SubscriptionFilter { customer_id: q.customer_id, product_id: q.product_id, status: q.status };
        let found = self.store.list_subscriptions(ctx.scope()?, filter, page).await?;
        let mut items = Vec::with_capacity(found.items.len());
        for s in found.items {
            items.push(self.subscription_view(ctx, s).await?);
        }
        Ok(Page { items, next_cursor: found.next_cursor })
    }

    pub async fn subscription_history(&self, ctx: &Ctx, id: Uuid) -> AppResult<Vec<SubscriptionEvent>> {
        let sub = self.subscription_record(ctx, id).await?;
        Ok(self.store.subscription_history(ctx.scope()?, sub.id).await?)
    }

    async fn subscription_view(&self, ctx: &Ctx, sub: Subscription) -> AppResult<SubscriptionView> {
        let scope = ctx.scope()?;
        let plan = self.store.get_plan(scope, sub.plan_id).await.map_err(|e| AppError::store("plan", e))?;
        let mut add_ons = Vec::new();
        for a in &sub.add_ons {
            add_ons.push(self.store.get_plan(scope, *a).await.map_err(|e| AppError::store("plan", e))?);
        }
        let license = self.store.get_license(scope, sub.license_id).await.map_err(|e| AppError::store("license", e))?;
        let now = self.now();
        let mut granted = Vec::new();
        for f in entitlements(&plan, &add_ons)? {
            // The license as stored has the same grants (a subscription keeps it in line), and its billing cycle.
            let window = license.license.quota_window(&f, now);
            granted.push(Entitlement {
                used: self.used_in_period(&license.license, &f.id, now).await? as i64,
                limit: (f.limit_value != UNLIMITED).then_some(f.limit_value),
                enabled: f.enabled,
                period: if window.is_some() { f.limit_period } else { LimitPeriod::Lifetime },
                period_ends_at: window.map(|w| w.end),
                feature: f.id,
            });
        }
        let entitlements = granted;
        let mut limits: Vec<UsageLimit> =
            std::iter::once(&plan).chain(&add_ons).flat_map(|p| p.limits.iter().cloned()).collect();
        limits.sort_by(|a, b| (a.metric.as_str(), a.period).cmp(&(b.metric.as_str(), b.period)));
        Ok(SubscriptionView {
            plan: plan_ref(&plan),
            add_on_plans: add_ons.iter().map(plan_ref).collect(),
            entitlements,
            limits,
            subscription: sub,
        })
    }

    /// Writes `next` (read as `read_at`) with its license brought in line, its history row and audit entries, in one
    /// atomic step (`CHANGED` when either was changed meanwhile: read again and retry).
    async fn save_subscription(
        &self,
        ctx: &Ctx,
        mut next: Subscription,
        read_at: DateTime<Utc>,
        action: &str,
        from_plan: Option<Uuid>,
        details: Value,
    ) -> AppResult<Subscription> {
        let now = self.now();
        next.updated_at = super::licenses::next_version(read_at, now);
        let current = self.license_record(ctx, next.license_id).await?;
        let license_read_at = current.updated_at;
        let license = self.license_for(ctx, &next, current, action == "resumed").await?;
        let event = Self::sub_event(ctx, &next, now, action, from_plan, details.clone());
        let mut audits = vec![ctx.audit(
            now,
            Some(next.tenant_id),
            &format!("subscription.{action}"),
            Some(next.id.to_string()),
            json!({"status": next.status, "plan_id": next.plan_id, "details": details}),
        )];
        let license = license.map(|mut l| {
            l.updated_at = super::licenses::next_version(license_read_at, now);
            audits.push(ctx.audit(
                now,
                Some(l.license.tenant_id),
                "license.subscription_sync",
                Some(l.license.id.to_string()),
                json!({"subscription_id": next.id, "status": next.status, "action": action}),
            ));
            (l, license_read_at)
        });
        self.store
            .update_subscription(next.clone(), read_at, license, event, audits)
            .await
            .map_err(|e| AppError::store("subscription", e))?;
        Ok(next)
    }

    /// The license as `sub` says it should be (features, expiry, suspension), or `None` when `rec` already is
    /// (or was revoked by staff, which is final). `resumed`: the subscription leaves PAUSED now, so the suspension
    /// it put on the license is lifted (one that staff put on it stays).
    async fn license_for(
        &self,
        ctx: &Ctx,
        sub: &Subscription,
        mut rec: crate::store::LicenseRecord,
        resumed: bool,
    ) -> AppResult<Option<crate::store::LicenseRecord>> {
        let scope = ctx.scope()?;
        if rec.license.status == LicenseStatus::Revoked {
            return Ok(None);
        }
        let plan = self.store.get_plan(scope, sub.plan_id).await.map_err(|e| AppError::store("plan", e))?;
        let mut add_ons = Vec::new();
        for a in &sub.add_ons {
            add_ons.push(self.store.get_plan(scope, *a).await.map_err(|e| AppError::store("plan", e))?);
        }
        let before = rec.license.clone();
        let now = self.now();
        let l = &mut rec.license;
        l.features = entitlements(&plan, &add_ons)?;
        l.billing_cycle = Some(billing_cycle(sub));
        let catalog = self.catalog_of(ctx, plan.product_id).await?;
        let offers = upgrade_offers(l.id, &l.features, &plan, sub.interval, &catalog);
        l.metadata.insert(UPGRADES_KEY.to_string(), offers);
        match sub.status {
            SubscriptionStatus::Trialing | SubscriptionStatus::Active | SubscriptionStatus::Paused => {
                l.expires_at = Some(sub.current_period_end);
                if l.status == LicenseStatus::Expired && sub.current_period_end > now {
                    l.status = LicenseStatus::Active;
                }
            }
            SubscriptionStatus::Canceled | SubscriptionStatus::Expired => {
                // An ended subscription ends its license then, with no grace after it. (A license must end after
                // it starts: one cancelled in its first instant ends a microsecond after its start.)
                let ended = sub.ended_at.unwrap_or(sub.current_period_end);
                let end =
                    l.expires_at.map_or(ended, |e| e.min(ended)).max(l.starts_at + chrono::Duration::microseconds(1));
                l.expires_at = Some(end);
                l.grace_days = 0;
                if ended <= now && matches!(l.status, LicenseStatus::Active | LicenseStatus::Suspended) {
                    l.status = LicenseStatus::Expired;
                }
            }
        }
        match (sub.status, l.status) {
            (SubscriptionStatus::Paused, LicenseStatus::Active) => l.status = LicenseStatus::Suspended,
            (SubscriptionStatus::Active, LicenseStatus::Suspended) if resumed => l.status = LicenseStatus::Active,
            _ => {}
        }
        if rec.license == before {
            return Ok(None);
        }
        if rec.license.expires_at != before.expires_at {
            rec.expiring_notice_for = None;
        }
        super::licenses::validate_license(&mut rec.license)?;
        Ok(Some(rec))
    }

    /// The product's current public plans and add-ons, for upgrade offers.
    async fn catalog_of(&self, ctx: &Ctx, product_id: Uuid) -> AppResult<Vec<Plan>> {
        let filter = PlanFilter { product_id: Some(product_id), public_only: true, ..PlanFilter::default() };
        Ok(self.store.list_plans(ctx.scope()?, filter).await?)
    }

    /// Before a plan's entitlements change: whether every current subscription on it (or with it as an add-on)
    /// can still add up its quotas with `plan` as edited (see [`entitlements`]); the first that cannot is the error.
    pub(crate) async fn check_plan_fits_subscriptions(&self, ctx: &Ctx, plan: &Plan) -> AppResult<()> {
        let scope = ctx.scope()?;
        let get = |id: Uuid| async move {
            match id == plan.id {
                true => Ok(plan.clone()),
                false => self.store.get_plan(scope, id).await.map_err(|e| AppError::store("plan", e)),
            }
        };
        let mut page = PageRequest { after: None, limit: 500 };
        loop {
            let filter = SubscriptionFilter { product_id: Some(plan.product_id), ..SubscriptionFilter::default() };
            let found = self.store.list_subscriptions(scope, filter, page).await?;
            for sub in found.items {
                if sub.status.is_final() || (sub.plan_id != plan.id && !sub.add_ons.contains(&plan.id)) {
                    continue;
                }
                let base = get(sub.plan_id).await?;
                let mut add_ons = Vec::with_capacity(sub.add_ons.len());
                for a in &sub.add_ons {
                    add_ons.push(get(*a).await?);
                }
                entitlements(&base, &add_ons)
                    .map_err(|e| AppError::invalid(format!("subscription {}: {}", sub.id, e.message)))?;
            }
            match found.next_cursor.and_then(|c| Uuid::parse_str(&c).ok()) {
                Some(after) => page.after = Some(after),
                None => return Ok(()),
            }
        }
    }

    /// After a plan's entitlements changed: every current subscription on it (or with it as an add-on) re-signs its
    /// license now. One that another writer changed meanwhile is left to that writer, which synced it itself.
    pub(crate) async fn resync_subscriptions_of(&self, ctx: &Ctx, plan: &Plan) -> AppResult<u32> {
        let mut page = PageRequest { after: None, limit: 500 };
        let mut synced = 0;
        loop {
            let filter = SubscriptionFilter { product_id: Some(plan.product_id), ..SubscriptionFilter::default() };
            let found = self.store.list_subscriptions(ctx.scope()?, filter, page).await?;
            for sub in found.items {
                if sub.status.is_final() || (sub.plan_id != plan.id && !sub.add_ons.contains(&plan.id)) {
                    continue;
                }
                let read_at = sub.updated_at;
                match self.save_subscription(ctx, sub, read_at, "plan_updated", None, json!({"plan": plan.code})).await
                {
                    Ok(_) => synced += 1,
                    Err(e) if e.code == ErrorCode::Changed || e.code == ErrorCode::LicenseChanged => {}
                    Err(e) => return Err(e),
                }
            }
            match found.next_cursor.and_then(|c| Uuid::parse_str(&c).ok()) {
                Some(after) => page.after = Some(after),
                None => return Ok(synced),
            }
        }
    }

    /// Trial → paid: the first paid period starts now.
    pub async fn convert_subscription(&self, ctx: &Ctx, id: Uuid) -> AppResult<SubscriptionView> {
        ctx.require_admin()?;
        let sub = self.subscription_record(ctx, id).await?;
        if sub.status != SubscriptionStatus::Trialing {
            return Err(transition(format!("the subscription is {}, not in a trial", sub.status.as_str())));
        }
        let now = self.now();
        let read_at = sub.updated_at;
        let mut next = sub;
        next.status = SubscriptionStatus::Active;
        next.anchor_at = now;
        next.start_paid_period(now);
        next.periods = 0;
        next.current_period_start = now;
        next.current_period_end = period_boundary(now, 1, next.interval)?;
        // Paying for it is the customer changing their mind about a cancellation made during the trial.
        next.cancel_at_period_end = false;
        let next = self.save_subscription(ctx, next, read_at, "converted", None, json!({})).await?;
        self.subscription_view(ctx, next).await
    }

    /// Another plan or other add-ons: at once, or (a downgrade of an active subscription) at the period's end.
    pub async fn change_subscription(
        &self,
        ctx: &Ctx,
        id: Uuid,
        req: ChangeSubscription,
    ) -> AppResult<SubscriptionView> {
        ctx.require_admin()?;
        let sub = self.subscription_record(ctx, id).await?;
        match sub.status {
            s if s.is_final() => {
                return Err(transition(format!("the subscription is {}: it cannot change", s.as_str())))
            }
            SubscriptionStatus::Paused => return Err(transition("the subscription is paused: resume it first")),
            _ => {}
        }
        if req.plan_id.is_none() && req.add_ons.is_none() {
            return Err(AppError::invalid("give plan_id, add_ons or both"));
        }
        let scope = ctx.scope()?;
        let current = self.store.get_plan(scope, sub.plan_id).await.map_err(|e| AppError::store("plan", e))?;
        let plan = match req.plan_id {
            Some(p) if p != sub.plan_id => self.subscribable_plan(ctx, p).await?,
            _ => current.clone(),
        };
        if plan.product_id != sub.product_id {
            return Err(AppError::invalid(
                "plan_id is a plan of another product: a subscription stays with its product",
            ));
        }
        let add_on_ids = match req.add_ons {
            Some(ids) => ids,
            None => {
                // Kept: the add-ons that still attach to the new plan.
                let mut keep = Vec::new();
                for a in &sub.add_ons {
                    let p = self.store.get_plan(scope, *a).await.map_err(|e| AppError::store("plan", e))?;
                    if p.archived_at.is_none() && (p.attaches_to.is_empty() || p.attaches_to.contains(&plan.code)) {
                        keep.push(*a);
                    }
                }
                keep
            }
        };
        let add_ons = self.add_ons_for(ctx, &plan, &add_on_ids).await?;
        entitlements(&plan, &add_ons)?; // quotas that cannot add up are refused now, not at the period's end
        let action = match plan.rank.cmp(&current.rank) {
            std::cmp::Ordering::Greater => "upgraded",
            std::cmp::Ordering::Less => "downgraded",
            std::cmp::Ordering::Equal => "add_ons_changed",
        };
        let read_at = sub.updated_at;
        let mut next = sub;
        let details = json!({"from": current.code, "to": plan.code, "add_ons": add_ons.iter().map(|a| &a.code).collect::<Vec<_>>()});
        match req.at.unwrap_or_default() {
            Effective::PeriodEnd => {
                if next.status != SubscriptionStatus::Active {
                    return Err(transition("only an active subscription changes at its period's end: change it NOW"));
                }
                next.scheduled_change = Some(ScheduledChange {
                    plan_id: plan.id,
                    add_ons: add_ons.iter().map(|a| a.id).collect(),
                    at: next.current_period_end,
                });
                let next =
                    self.save_subscription(ctx, next, read_at, "change_scheduled", Some(current.id), details).await?;
                self.subscription_view(ctx, next).await
            }
            Effective::Now => {
                next.plan_id = plan.id;
                next.add_ons = add_ons.iter().map(|a| a.id).collect();
                next.scheduled_change = None;
                let next = self.save_subscription(ctx, next, read_at, action, Some(current.id), details).await?;
                self.subscription_view(ctx, next).await
            }
        }
    }

    pub async fn cancel_subscription(
        &self,
        ctx: &Ctx,
        id: Uuid,
        req: CancelSubscription,
    ) -> AppResult<SubscriptionView> {
        ctx.require_admin()?;
        let sub = self.subscription_record(ctx, id).await?;
        if sub.status.is_final() {
            return Err(transition(format!("the subscription is {} already", sub.status.as_str())));
        }
        let reason = req.reason.map(|r| r.chars().take(500).collect::<String>());
        let now = self.now();
        let read_at = sub.updated_at;
        let mut next = sub;
        let at = match (req.at.unwrap_or(Effective::PeriodEnd), next.status) {
            (Effective::PeriodEnd, SubscriptionStatus::Paused) => {
                return Err(transition("a paused subscription is cancelled NOW (or resumed first)"))
            }
            (at, _) => at,
        };
        let (action, next) = match at {
            Effective::Now => {
                next.status = SubscriptionStatus::Canceled;
                next.ended_at = Some(now);
                next.scheduled_change = None;
                ("canceled", next)
            }
            Effective::PeriodEnd => {
                if next.status == SubscriptionStatus::Trialing {
                    next.on_trial_end = TrialEnd::Expire;
                }
                next.cancel_at_period_end = true;
                next.scheduled_change = None;
                ("cancel_scheduled", next)
            }
        };
        let next = self.save_subscription(ctx, next, read_at, action, None, json!({"reason": reason})).await?;
        self.subscription_view(ctx, next).await
    }

    /// Pauses (license suspended) or resumes (license reinstated) an active subscription.
    pub async fn pause_subscription(&self, ctx: &Ctx, id: Uuid, pause: bool) -> AppResult<SubscriptionView> {
        ctx.require_admin()?;
        let sub = self.subscription_record(ctx, id).await?;
        let (from, to, action) = if pause {
            (SubscriptionStatus::Active, SubscriptionStatus::Paused, "paused")
        } else {
            (SubscriptionStatus::Paused, SubscriptionStatus::Active, "resumed")
        };
        if sub.status != from {
            return Err(transition(format!(
                "only an {} subscription can be {action}; this one is {}",
                from.as_str(),
                sub.status.as_str()
            )));
        }
        let read_at = sub.updated_at;
        let mut next = sub;
        next.status = to;
        let now = self.now();
        let mut details = json!({});
        if !pause && next.current_period_end <= now {
            // The period ran out while paused: the paused time is not billed, a new period starts now.
            next.anchor_at = now;
            next.periods = 0;
            next.current_period_start = now;
            next.current_period_end = period_boundary(now, 1, next.interval)?;
            next.start_paid_period(now);
            details = json!({"new_period": true});
        }
        let next = self.save_subscription(ctx, next, read_at, action, None, details).await?;
        self.subscription_view(ctx, next).await
    }

    /// The lifecycle job's part: trials that ended, periods that ended (renew, apply a scheduled change, or end).
    /// Returns (renewed, ended, trials ended).
    pub async fn run_subscription_jobs(&self, now: DateTime<Utc>) -> AppResult<(u32, u32, u32)> {
        let ctx = Ctx::system_admin("subscriptions");
        let (mut renewed, mut ended, mut trials) = (0, 0, 0);
        for sub in self.store.subscriptions_due(now, DUE_PER_RUN).await? {
            let read_at = sub.updated_at;
            let id = sub.id;
            let outcome =
                match sub.status {
                    SubscriptionStatus::Trialing => self.end_trial(&ctx, sub, read_at).await.map(|_| trials += 1),
                    SubscriptionStatus::Active => self.end_period(&ctx, sub, read_at, now).await.map(|renew| {
                        if renew {
                            renewed += 1
                        } else {
                            ended += 1
                        }
                    }),
                    _ => Ok(()),
                };
            match outcome {
                Ok(()) => {}
                // A staff action got there first: the next run sees the new version.
                Err(e) if e.code == ErrorCode::Changed => {}
                Err(e) => tracing::warn!(subscription = %id, error = %e, "subscription job step failed"),
            }
        }
        Ok((renewed, ended, trials))
    }

    async fn end_trial(&self, ctx: &Ctx, sub: Subscription, read_at: DateTime<Utc>) -> AppResult<()> {
        let end = sub.trial_ends_at.unwrap_or(sub.current_period_end);
        let mut next = sub;
        let lowest = match next.on_trial_end {
            TrialEnd::Expire => None,
            TrialEnd::Downgrade => {
                let filter = crate::store::PlanFilter {
                    product_id: Some(next.product_id),
                    kind: Some(PlanKind::Plan),
                    ..Default::default()
                };
                // The lowest current plan, if it is free and not the trial's own plan (a trial of the lowest plan,
                // or a ladder with no free rung, ends instead).
                self.store
                    .list_plans(Some(next.tenant_id), filter)
                    .await?
                    .into_iter()
                    .min_by_key(|p| p.rank)
                    .filter(|p| p.id != next.plan_id && p.prices.iter().all(|pr| pr.amount == 0))
            }
        };
        match lowest {
            None => {
                next.status = SubscriptionStatus::Expired;
                next.ended_at = Some(end);
                self.save_subscription(ctx, next, read_at, "trial_expired", None, json!({})).await?;
            }
            Some(free) => {
                let from = next.plan_id;
                let mut kept = Vec::new();
                for a in &next.add_ons {
                    let p =
                        self.store.get_plan(Some(next.tenant_id), *a).await.map_err(|e| AppError::store("plan", e))?;
                    if p.attaches_to.is_empty() || p.attaches_to.contains(&free.code) {
                        kept.push(*a);
                    }
                }
                next.plan_id = free.id;
                next.add_ons = kept;
                next.status = SubscriptionStatus::Active;
                next.anchor_at = end;
                next.start_paid_period(end);
                next.periods = 0;
                next.current_period_start = end;
                next.current_period_end = period_boundary(end, 1, next.interval)?;
                self.save_subscription(ctx, next, read_at, "trial_downgraded", Some(from), json!({"to": free.code}))
                    .await?;
            }
        }
        Ok(())
    }

    /// Ends the current period: renews (true) or ends the subscription (false).
    async fn end_period(
        &self,
        ctx: &Ctx,
        sub: Subscription,
        read_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> AppResult<bool> {
        let mut next = sub;
        if next.cancel_at_period_end || !next.auto_renew {
            next.status = SubscriptionStatus::Canceled;
            next.ended_at = Some(next.current_period_end);
            self.save_subscription(ctx, next, read_at, "canceled", None, json!({"at": "PERIOD_END"})).await?;
            return Ok(false);
        }
        // A revoked license is never sold again: its subscription ends with the period instead of renewing (and
        // billing) a license nobody can use.
        let license = self.store.get_license(Some(next.tenant_id), next.license_id).await;
        if license.as_ref().is_ok_and(|l| l.license.status == LicenseStatus::Revoked) {
            next.status = SubscriptionStatus::Canceled;
            next.ended_at = Some(next.current_period_end);
            let details = json!({"at": "PERIOD_END", "why": "the license was revoked"});
            self.save_subscription(ctx, next, read_at, "canceled", None, details).await?;
            return Ok(false);
        }
        let from = next.plan_id;
        let mut details = json!({});
        if let Some(change) = next.scheduled_change.take() {
            let target = self.store.get_plan(Some(next.tenant_id), change.plan_id).await;
            match target {
                Ok(p) if p.archived_at.is_none() => {
                    next.plan_id = change.plan_id;
                    next.add_ons = change.add_ons;
                    details = json!({"applied_change": {"plan_id": change.plan_id}});
                }
                // The plan was archived since the change was scheduled: the subscription stays where it is.
                _ => details = json!({"dropped_change": {"plan_id": change.plan_id, "why": "the plan is archived"}}),
            }
        }
        // Renew period by period until the current one holds `now` (a server that was down catches up).
        let mut skipped = 0u32;
        while next.current_period_end <= now {
            next.periods = next.periods.saturating_add(1);
            next.current_period_start = next.current_period_end;
            next.current_period_end = period_boundary(next.anchor_at, next.periods + 1, next.interval)?;
            let start = next.current_period_start;
            next.start_paid_period(start);
            skipped += 1;
        }
        details["periods"] = json!(skipped);
        self.save_subscription(ctx, next, read_at, "renewed", Some(from), details).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn months_count_from_the_anchor_so_short_months_do_not_drift() {
        let jan31 = Utc.with_ymd_and_hms(2027, 1, 31, 12, 0, 0).unwrap();
        let ends: Vec<String> = (1..=4)
            .map(|n| period_boundary(jan31, n, BillingInterval::Month).unwrap().format("%m-%d").to_string())
            .collect();
        assert_eq!(ends, ["02-28", "03-31", "04-30", "05-31"]);
        let leap = Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap();
        assert_eq!(
            period_boundary(leap, 1, BillingInterval::Year).unwrap().format("%Y-%m-%d").to_string(),
            "2029-02-28"
        );
        assert_eq!(
            period_boundary(leap, 4, BillingInterval::Year).unwrap().format("%Y-%m-%d").to_string(),
            "2032-02-29"
        );
    }
}
