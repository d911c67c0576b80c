//! The catalog: a product's plans (an ordered ladder of tiers) and add-ons, with their features, usage limits
//! per period and prices, and the public catalog a pricing page reads (`GET /v1/catalog`).
//!
//! Money is integer minor units of an ISO 4217 currency, never a float: 1999 EUR is 19.99 €, 1999 JPY is ¥1,999.
//! A plan's code is its name for good (subscriptions will refer to it), so a plan is archived, never deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_core::Feature;
use uuid::Uuid;

use super::terms::validate_features;
use super::{check_code, check_name, slug, Ctx, Services};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::{
    BillingInterval, LimitPeriod, Overage, Plan, PlanFilter, PlanKind, Price, Product, StoreError, UsageLimit,
};

/// The tiers of a ladder when the vendor names none: rank 0 to 3.
pub const DEFAULT_TIERS: [&str; 4] = ["FREE", "BASIC", "PREMIUM", "ENTERPRISE"];
/// Most plans and add-ons one product may have (archived ones included).
pub const MAX_PLANS_PER_PRODUCT: usize = 200;
/// Highest rank on a ladder.
pub const MAX_RANK: i32 = 999;
/// Largest price, in minor units (ten billion major units of a two-decimal currency).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;
/// Largest usage limit of one period (as usage events: 2^40).
pub const MAX_LIMIT: i64 = 1 << 40;
const MAX_TRIAL_DAYS: u32 = 365;
const MAX_PRICES: usize = 32;
const MAX_LIMITS: usize = 64;
const MAX_ATTACHES: usize = 64;

/// `POST /v1/plans`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    pub product_id: Uuid,
    pub name: String,
    /// Unique within the product; made from the name when absent.
    #[serde(default)]
    pub code: Option<String>,
    /// `PLAN` (a rung of the ladder, the default) or `ADD_ON`.
    #[serde(default)]
    pub kind: Option<PlanKind>,
    /// Plans: the rung's label; for ranks 0 to 3 it defaults to FREE, BASIC, PREMIUM, ENTERPRISE.
    #[serde(default)]
    pub tier: Option<String>,
    /// Plans: the rung's place, 0 the lowest (0 to 999, unique among the product's current plans); absent: one
    /// above the highest.
    #[serde(default)]
    pub rank: Option<i32>,
    #[serde(default)]
    pub description: Option<String>,
    /// Listed in the public catalog (default true).
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub trial_days: Option<u32>,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default)]
    pub limits: Vec<UsageLimit>,
    #[serde(default)]
    pub prices: Vec<Price>,
    /// Add-ons: required, the category they are listed under (lower case: `crm`, `network-automation`).
    #[serde(default)]
    pub category: Option<String>,
    /// Add-ons: the codes of the plans they attach to (absent or empty: every plan of the product).
    #[serde(default)]
    pub attaches_to: Vec<String>,
    /// The template of the product whose terms (seats, heartbeat, fingerprint policy) a subscription's license
    /// takes; the plan gives the features.
    #[serde(default)]
    pub template_id: Option<Uuid>,
    /// Where a customer buys this plan: an `https://` (or `http://`) URL; `{feature}`, `{license}` and `{plan}` are
    /// filled in when a license offers it as an upgrade.
    #[serde(default)]
    pub upgrade_url: Option<String>,
}

/// `PATCH /v1/plans/{id}`: the members given replace the plan's. The product and the kind never change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub rank: Option<i32>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub trial_days: Option<u32>,
    #[serde(default)]
    pub features: Option<Vec<Feature>>,
    #[serde(default)]
    pub limits: Option<Vec<UsageLimit>>,
    #[serde(default)]
    pub prices: Option<Vec<Price>>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub attaches_to: Option<Vec<String>>,
    #[serde(default)]
    pub template_id: Option<Uuid>,
    /// `""` removes it.
    #[serde(default)]
    pub upgrade_url: Option<String>,
}

/// `GET /v1/plans` filters.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    pub product_id: Option<Uuid>,
    pub kind: Option<PlanKind>,
    pub category: Option<String>,
    pub tier: Option<String>,
    /// Also list archived plans (default false).
    pub include_archived: Option<bool>,
}

/// `GET /v1/catalog` filters.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    pub product_id: Option<Uuid>,
    /// Only add-ons of this category (plans are listed whatever it is, so a page can show what they attach to).
    pub category: Option<String>,
    /// Only the plan of this tier, and the add-ons that attach to it.
    pub tier: Option<String>,
}

/// One plan or add-on as a pricing page shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogEntry {
    pub id: Uuid,
    pub code: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tier: String,
    pub rank: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub trial_days: u32,
    pub features: Vec<Feature>,
    pub limits: Vec<UsageLimit>,
    pub prices: Vec<CatalogPrice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attaches_to: Vec<String>,
}

/// A price with what a page needs to show it: the currency's decimals and the amount as exact decimal text.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogPrice {
    pub interval: BillingInterval,
    /// Minor units, as stored.
    pub amount: i64,
    pub currency: String,
    /// Digits after the decimal point in this currency (2 for EUR, 0 for JPY, 3 for BHD).
    pub exponent: u16,
    /// The amount in major units as exact text (`"19.99"`, `"1999"`), made from the integer, never a float.
    pub display: String,
}

/// A product's ladder and add-ons.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogProduct {
    pub product_id: Uuid,
    pub product_name: String,
    pub product_code: String,
    /// From the lowest rung to the highest.
    pub plans: Vec<CatalogEntry>,
    /// By category, then code.
    pub add_ons: Vec<CatalogEntry>,
}

/// `GET /v1/catalog`: the public, current plans and add-ons of the tenant's products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Catalog {
    pub products: Vec<CatalogProduct>,
    /// Every add-on category listed, sorted.
    pub categories: Vec<String>,
}

/// The amount in major units as exact decimal text: `display_amount(1999, 2)` is `"19.99"`, `(-5, 2)` `"-0.05"`.
pub fn display_amount(amount: i64, exponent: u16) -> String {
    let digits = amount.unsigned_abs().to_string();
    let sign = if amount < 0 { "-" } else { "" };
    let e = usize::from(exponent);
    if e == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = e + 1);
    let (major, minor) = padded.split_at(padded.len() - e);
    format!("{sign}{major}.{minor}")
}

/// The minor-unit exponent of an ISO 4217 currency that can price things (not a fund, metal or test code).
pub fn currency_exponent(code: &str) -> Option<u16> {
    let c = iso_currency::Currency::from_code(code)?;
    if c.is_fund() || c.is_superseded().is_some() {
        return None;
    }
    c.exponent()
}

fn check_tier(tier: &str) -> AppResult<String> {
    let t = tier.trim().to_ascii_uppercase();
    if t.is_empty() || t.len() > 40 || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(AppError::invalid(format!(
            "tier {tier:?} must be 1 to 40 letters, digits or '_' (it is upper-cased: FREE, BASIC, PREMIUM, ...)"
        )));
    }
    Ok(t)
}

fn check_category(category: &str) -> AppResult<String> {
    let c = category.trim().to_ascii_lowercase();
    if c.is_empty() || c.len() > 60 || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
        return Err(AppError::invalid(format!(
            "category {category:?} must be 1 to 60 letters, digits or '-' (it is lower-cased: crm, network-automation)"
        )));
    }
    Ok(c)
}

fn check_rank(rank: i32) -> AppResult<i32> {
    if !(0..=MAX_RANK).contains(&rank) {
        return Err(AppError::invalid(format!("rank must be 0 to {MAX_RANK} (0 is the lowest rung), not {rank}")));
    }
    Ok(rank)
}

fn check_description(d: Option<String>) -> AppResult<String> {
    let d = d.unwrap_or_default();
    if d.chars().count() > 2000 || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AppError::invalid("description must be at most 2000 characters, without control characters"));
    }
    Ok(d.trim().to_string())
}

fn check_trial(days: u32) -> AppResult<u32> {
    if days > MAX_TRIAL_DAYS {
        return Err(AppError::invalid(format!("trial_days must be 0 to {MAX_TRIAL_DAYS}, not {days}")));
    }
    Ok(days)
}

/// Largest number of tiers of a graduated price, and of units a `per` or a package may count.
const MAX_TIERS: usize = 16;
const MAX_PER: u64 = 1_000_000_000;

/// Checks an overage price (and writes its currency in upper case): billed per DAY or MONTH, amounts 0 to
/// [`MAX_AMOUNT`] minor units, `per` and package sizes 1 to 10^9, graduated tiers with rising `up_to` and a last
/// tier without one.
fn check_overage(metric: &str, period: LimitPeriod, o: &mut Overage) -> AppResult<()> {
    let bad = |m: String| AppError::invalid(format!("the overage price of {metric:?}: {m}"));
    if !matches!(period, LimitPeriod::Day | LimitPeriod::Month) {
        return Err(bad(format!(
            "overage is billed per DAY or MONTH, not per {}; make the limit per DAY or MONTH, or drop the overage to \
             make it a hard quota",
            period.as_str()
        )));
    }
    let code = o.currency().trim().to_ascii_uppercase();
    if currency_exponent(&code).is_none() {
        return Err(bad(format!(
            "currency {:?} is not an ISO 4217 currency: use a code such as EUR, USD, JPY",
            o.currency()
        )));
    }
    *o.currency_mut() = code;
    let amount = |a: i64| {
        if (0..=MAX_AMOUNT).contains(&a) {
            Ok(())
        } else {
            Err(bad(format!("an amount is in minor units, 0 to {MAX_AMOUNT}, not {a}")))
        }
    };
    let count = |what: &str, n: u64| {
        if (1..=MAX_PER).contains(&n) {
            Ok(())
        } else {
            Err(bad(format!("{what} must be 1 to {MAX_PER}, not {n}")))
        }
    };
    match o {
        Overage::PerUnit { unit_amount, per, .. } => {
            amount(*unit_amount)?;
            count("per", *per)?;
        }
        Overage::Package { package_size, package_amount, .. } => {
            amount(*package_amount)?;
            count("package_size", *package_size)?;
        }
        Overage::Graduated { tiers, per, .. } => {
            count("per", *per)?;
            if tiers.is_empty() || tiers.len() > MAX_TIERS {
                return Err(bad(format!("a graduated price has 1 to {MAX_TIERS} tiers, not {}", tiers.len())));
            }
            let mut last = 0u64;
            for (i, t) in tiers.iter().enumerate() {
                amount(t.unit_amount)?;
                match (t.up_to, i + 1 == tiers.len()) {
                    (None, true) => {}
                    (None, false) => {
                        return Err(bad(format!("tier {i} has no up_to: only the last tier is open-ended")))
                    }
                    (Some(_), true) => return Err(bad("the last tier has no up_to (it has no end)".into())),
                    (Some(u), false) if u <= last => {
                        return Err(bad(format!("tier {i} ends at {u}, not after the tier before it ({last})")))
                    }
                    (Some(u), false) => last = u,
                }
            }
        }
    }
    Ok(())
}

/// Checks prices and writes each currency in upper case; one price per interval and currency.
fn check_prices(prices: &mut [Price]) -> AppResult<()> {
    if prices.len() > MAX_PRICES {
        return Err(AppError::invalid(format!("at most {MAX_PRICES} prices per plan")));
    }
    let mut seen = BTreeSet::new();
    for p in prices.iter_mut() {
        let code = p.currency.trim().to_ascii_uppercase();
        if currency_exponent(&code).is_none() {
            return Err(AppError::invalid(format!(
                "currency {:?} is not an ISO 4217 currency that prices can be in: use a code such as EUR, USD, JPY",
                p.currency
            ))
            .with_details(json!({"currency": p.currency})));
        }
        p.currency = code;
        if !(0..=MAX_AMOUNT).contains(&p.amount) {
            return Err(AppError::invalid(format!(
                "a price's amount is in minor units (cents), 0 to {MAX_AMOUNT}, not {}",
                p.amount
            )));
        }
        if !seen.insert((p.interval, p.currency.clone())) {
            return Err(AppError::invalid(format!(
                "two prices for {} per {:?}: give one price per interval and currency",
                p.currency, p.interval
            )));
        }
    }
    prices.sort_by(|a, b| (a.currency.as_str(), a.interval).cmp(&(b.currency.as_str(), b.interval)));
    Ok(())
}

/// Checks usage limits: a metric is a feature id, with one limit (of one period) per metric, since a license
/// carries one quota per feature.
fn check_limits(limits: &mut [UsageLimit]) -> AppResult<()> {
    if limits.len() > MAX_LIMITS {
        return Err(AppError::invalid(format!("at most {MAX_LIMITS} usage limits per plan")));
    }
    let mut seen = BTreeSet::new();
    for l in limits.iter_mut() {
        l.metric = l.metric.trim().to_string();
        Feature::validate_id(&l.metric).map_err(|e| AppError::invalid(format!("limit metric: {e}")))?;
        if !(0..=MAX_LIMIT).contains(&l.limit) {
            return Err(AppError::invalid(format!(
                "the limit of {:?} must be 0 to {MAX_LIMIT} units per period, not {}",
                l.metric, l.limit
            )));
        }
        if !seen.insert(l.metric.clone()) {
            return Err(AppError::invalid(format!(
                "two limits for {:?}: a license carries one quota per feature, so give one limit per metric (per \
                 DAY, MONTH, BILLING_PERIOD or LIFETIME)",
                l.metric
            )));
        }
        if let Some(o) = &mut l.overage {
            check_overage(&l.metric, l.period, o)?;
        }
    }
    limits.sort_by(|a, b| (a.metric.as_str(), a.period).cmp(&(b.metric.as_str(), b.period)));
    Ok(())
}

/// An upgrade URL: absolute `https://` or `http://`, at most 512 characters, no spaces or control characters; the
/// placeholders are `{feature}`, `{license}` and `{plan}` (any other `{...}` is refused, so a typo shows at once).
fn check_upgrade_url(u: &str) -> AppResult<()> {
    let bad = |why: &str| {
        AppError::invalid(format!("upgrade_url {why}: give an absolute https:// URL, with {{feature}}, {{license}} or {{plan}} where they belong"))
    };
    if u.len() > 512 {
        return Err(bad("is longer than 512 characters"));
    }
    if !(u.starts_with("https://") || u.starts_with("http://")) {
        return Err(bad("is not an http(s) URL"));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces or control characters"));
    }
    let mut rest = u;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or_else(|| bad("has an unclosed '{'"))?;
        let name = &rest[open + 1..open + close];
        if !matches!(name, "feature" | "license" | "plan") {
            return Err(bad(&format!("has an unknown placeholder {{{name}}}")));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

fn entry(p: Plan) -> CatalogEntry {
    let prices = p
        .prices
        .into_iter()
        .map(|pr| {
            // Stored prices were checked on the way in; a currency unknown to this build shows with 2 decimals.
            let exponent = currency_exponent(&pr.currency).unwrap_or(2);
            CatalogPrice {
                interval: pr.interval,
                amount: pr.amount,
                display: display_amount(pr.amount, exponent),
                currency: pr.currency,
                exponent,
            }
        })
        .collect();
    CatalogEntry {
        id: p.id,
        code: p.code,
        name: p.name,
        tier: p.tier,
        rank: p.rank,
        description: p.description,
        trial_days: p.trial_days,
        features: p.features,
        limits: p.limits,
        prices,
        category: p.category,
        attaches_to: p.attaches_to,
    }
}

impl Services {
    /// A plan's template: one of the plan's product.
    async fn plan_template(&self, ctx: &Ctx, product: Uuid, id: Option<Uuid>) -> AppResult<Option<Uuid>> {
        let Some(id) = id else { return Ok(None) };
        let t = self.get_template(ctx, id).await?;
        if t.template.product_id != product {
            return Err(AppError::invalid("template_id is a template of another product: use one of this product's"));
        }
        Ok(Some(id))
    }

    /// The product's other plans (archived ones included), read once per write to check codes, ranks and
    /// attachments.
    async fn plans_of(&self, ctx: &Ctx, product: Uuid) -> AppResult<Vec<Plan>> {
        let filter = PlanFilter { product_id: Some(product), include_archived: true, ..PlanFilter::default() };
        Ok(self.store.list_plans(ctx.scope()?, filter).await?)
    }

    /// Fills defaults and checks a plan against the rules of its kind and the product's other plans.
    fn settle_plan(p: &mut Plan, others: &[Plan], tier_given: bool) -> AppResult<()> {
        p.name = check_name("name", &p.name)?;
        p.code = check_code(&p.code)?;
        validate_features(&p.features)?;
        if p.features.iter().any(|f| f.id == tessera_core::model::WILDCARD_FEATURE)
            || p.limits.iter().any(|l| l.metric == tessera_core::model::WILDCARD_FEATURE)
        {
            return Err(AppError::invalid(
                "a plan names the features it grants: \"*\" (every feature) is for hand-made licenses",
            ));
        }
        if p.features.iter().any(|f| f.limit_value < tessera_core::model::UNLIMITED) {
            return Err(AppError::invalid("a feature's limit_value is 0 or more, or -1 for unlimited"));
        }
        check_limits(&mut p.limits)?;
        check_prices(&mut p.prices)?;
        if let Some(u) = &p.upgrade_url {
            check_upgrade_url(u)?;
        }
        check_trial(p.trial_days)?;
        let current = || others.iter().filter(|o| o.id != p.id && o.archived_at.is_none());
        match p.kind {
            PlanKind::Plan => {
                if p.category.is_some() || !p.attaches_to.is_empty() {
                    return Err(AppError::invalid(
                        "category and attaches_to are for add-ons (kind ADD_ON): leave them out of a plan",
                    ));
                }
                check_rank(p.rank)?;
                if !tier_given && p.tier.is_empty() {
                    p.tier = match DEFAULT_TIERS.get(p.rank as usize) {
                        Some(t) => (*t).to_string(),
                        None => {
                            return Err(AppError::invalid(format!(
                                "rank {} has no default tier name: give the plan a tier",
                                p.rank
                            )))
                        }
                    };
                }
                p.tier = check_tier(&p.tier)?;
            }
            PlanKind::AddOn => {
                if tier_given && !p.tier.is_empty() {
                    return Err(AppError::invalid("an add-on has no tier: leave tier and rank out"));
                }
                p.tier.clear();
                p.rank = 0;
                let category =
                    p.category.as_deref().ok_or_else(|| AppError::invalid("an add-on needs a category (e.g. crm)"))?;
                p.category = Some(check_category(category)?);
                if p.attaches_to.len() > MAX_ATTACHES {
                    return Err(AppError::invalid(format!("an add-on attaches to at most {MAX_ATTACHES} plans")));
                }
                let plans: BTreeMap<&str, &Plan> =
                    current().filter(|o| o.kind == PlanKind::Plan).map(|o| (o.code.as_str(), o)).collect();
                for code in &p.attaches_to {
                    if !plans.contains_key(code.as_str()) {
                        return Err(AppError::invalid(format!(
                            "attaches_to names {code:?}, which is no current plan of this product: use a plan's code"
                        ))
                        .with_details(json!({"attaches_to": code})));
                    }
                }
                p.attaches_to.sort();
                p.attaches_to.dedup();
            }
        }
        Ok(())
    }

    fn plan_write_error(p: &Plan, e: StoreError) -> AppError {
        match e {
            StoreError::Conflict(m) if m.contains("plans.code") => AppError::new(
                ErrorCode::PlanCodeTaken,
                format!(
                    "the product has a plan with code {:?} already (perhaps archived): choose another code",
                    p.code
                ),
            ),
            StoreError::Conflict(m) if m.contains("plans.rank") => AppError::new(
                ErrorCode::PlanRankTaken,
                format!("another current plan of the product has rank {}: choose a free rank", p.rank),
            ),
            StoreError::Conflict(m) if m.contains("plans.tier") => AppError::new(
                ErrorCode::PlanTierTaken,
                format!("another current plan of the product is its {} tier: give this plan another tier", p.tier),
            ),
            e => AppError::store("plan", e),
        }
    }

    pub async fn create_plan(&self, ctx: &Ctx, req: CreatePlan) -> AppResult<Plan> {
        ctx.require_admin()?;
        let product = self.get_product(ctx, req.product_id).await?;
        let others = self.plans_of(ctx, product.id).await?;
        if others.len() >= MAX_PLANS_PER_PRODUCT {
            return Err(AppError::invalid(format!(
                "a product has at most {MAX_PLANS_PER_PRODUCT} plans and add-ons (archived ones count)"
            )));
        }
        let kind = req.kind.unwrap_or(PlanKind::Plan);
        if kind == PlanKind::AddOn && req.rank.is_some() {
            return Err(AppError::invalid("an add-on has no rank: leave tier and rank out"));
        }
        let rank = match req.rank {
            Some(r) => r,
            None => others
                .iter()
                .filter(|o| o.kind == PlanKind::Plan && o.archived_at.is_none())
                .map(|o| o.rank.saturating_add(1))
                .max()
                .unwrap_or(0),
        };
        let now = self.now();
        let tier_given = req.tier.is_some();
        let mut plan = Plan {
            id: Uuid::now_v7(),
            tenant_id: product.tenant_id,
            product_id: product.id,
            code: req.code.unwrap_or_else(|| slug(&req.name, "plan")),
            name: req.name,
            kind,
            tier: req.tier.unwrap_or_default(),
            rank,
            description: check_description(req.description)?,
            public: req.public.unwrap_or(true),
            trial_days: req.trial_days.unwrap_or(0),
            features: req.features,
            limits: req.limits,
            prices: req.prices,
            category: req.category,
            attaches_to: req.attaches_to,
            archived_at: None,
            template_id: self.plan_template(ctx, product.id, req.template_id).await?,
            upgrade_url: req.upgrade_url.filter(|u| !u.is_empty()),
            created_at: now,
            updated_at: now,
        };
        Self::settle_plan(&mut plan, &others, tier_given)?;
        let audit = ctx.audit(
            now,
            Some(plan.tenant_id),
            "plan.create",
            Some(plan.id.to_string()),
            json!({"code": plan.code, "kind": plan.kind, "tier": plan.tier, "rank": plan.rank}),
        );
        self.store.put_plan(plan.clone(), None, audit).await.map_err(|e| Self::plan_write_error(&plan, e))?;
        Ok(plan)
    }

    pub async fn get_plan(&self, ctx: &Ctx, id: Uuid) -> AppResult<Plan> {
        self.store.get_plan(ctx.scope()?, id).await.map_err(|e| AppError::store("plan", e))
    }

    pub async fn list_plans(&self, ctx: &Ctx, q: PlanQuery) -> AppResult<Vec<Plan>> {
        let filter = PlanFilter {
            product_id: q.product_id,
            kind: q.kind,
            category: q.category.as_deref().map(check_category).transpose()?,
            tier: q.tier.as_deref().map(check_tier).transpose()?,
            public_only: false,
            include_archived: q.include_archived.unwrap_or(false),
        };
        Ok(self.store.list_plans(ctx.scope()?, filter).await?)
    }

    pub async fn update_plan(&self, ctx: &Ctx, id: Uuid, req: UpdatePlan) -> AppResult<Plan> {
        ctx.require_admin()?;
        let mut plan = self.get_plan(ctx, id).await?;
        if plan.archived_at.is_some() {
            return Err(AppError::new(
                ErrorCode::InvalidTransition,
                "the plan is archived: it is no longer sold and cannot change; create a new plan",
            ));
        }
        let others = self.plans_of(ctx, plan.product_id).await?;
        let before = plan.clone();
        let tier_given = req.tier.is_some();
        if plan.kind == PlanKind::AddOn && req.rank.is_some() {
            return Err(AppError::invalid("an add-on has no rank: leave tier and rank out"));
        }
        if let Some(v) = req.name {
            plan.name = v;
        }
        if let Some(v) = req.code {
            plan.code = v;
        }
        if let Some(v) = req.tier {
            plan.tier = v;
        }
        if let Some(v) = req.rank {
            // A plan with its rung's default name that moves to another rung takes that rung's name; a name of
            // the vendor's own stays.
            let default_name = DEFAULT_TIERS.get(plan.rank as usize).is_some_and(|t| *t == plan.tier);
            plan.rank = v;
            if !tier_given && plan.kind == PlanKind::Plan && default_name {
                plan.tier.clear();
            }
        }
        if req.description.is_some() {
            plan.description = check_description(req.description)?;
        }
        if let Some(v) = req.public {
            plan.public = v;
        }
        if let Some(v) = req.trial_days {
            plan.trial_days = v;
        }
        if let Some(v) = req.features {
            plan.features = v;
        }
        if let Some(v) = req.limits {
            plan.limits = v;
        }
        if let Some(v) = req.prices {
            plan.prices = v;
        }
        if req.category.is_some() {
            plan.category = req.category;
        }
        if let Some(v) = req.attaches_to {
            plan.attaches_to = v;
        }
        if req.template_id.is_some() {
            plan.template_id = self.plan_template(ctx, plan.product_id, req.template_id).await?;
        }
        if let Some(u) = req.upgrade_url {
            plan.upgrade_url = (!u.is_empty()).then_some(u);
        }
        Self::settle_plan(&mut plan, &others, tier_given)?;
        if plan.kind == PlanKind::Plan && plan.code != before.code {
            if let Some(a) = others.iter().find(|o| o.archived_at.is_none() && o.attaches_to.contains(&before.code)) {
                return Err(AppError::new(
                    ErrorCode::Conflict,
                    format!("add-on {:?} attaches to this plan by its code: change the add-on first", a.code),
                ));
            }
        }
        let now = self.now();
        plan.updated_at = super::licenses::next_version(before.updated_at, now);
        let audit = ctx.audit(
            now,
            Some(plan.tenant_id),
            "plan.update",
            Some(id.to_string()),
            json!({"code": plan.code, "tier": plan.tier, "rank": plan.rank, "public": plan.public}),
        );
        let grants_changed = (&plan.features, &plan.limits) != (&before.features, &before.limits);
        if grants_changed {
            self.check_plan_fits_subscriptions(ctx, &plan).await?;
        }
        self.store
            .put_plan(plan.clone(), Some(before.updated_at), audit)
            .await
            .map_err(|e| Self::plan_write_error(&plan, e))?;
        // What the plan grants changed: the licenses of its subscriptions follow now, not at their next renewal.
        if grants_changed {
            self.resync_subscriptions_of(ctx, &plan).await?;
        }
        Ok(plan)
    }

    /// Archives a plan: no longer sold or listed in the catalog, its rank free for another plan; still readable.
    pub async fn archive_plan(&self, ctx: &Ctx, id: Uuid) -> AppResult<Plan> {
        ctx.require_admin()?;
        let mut plan = self.get_plan(ctx, id).await?;
        if plan.archived_at.is_some() {
            return Ok(plan);
        }
        let now = self.now();
        let read_at = plan.updated_at;
        plan.archived_at = Some(now);
        plan.updated_at = super::licenses::next_version(read_at, now);
        let audit =
            ctx.audit(now, Some(plan.tenant_id), "plan.archive", Some(id.to_string()), json!({"code": plan.code}));
        self.store.put_plan(plan.clone(), Some(read_at), audit).await.map_err(|e| Self::plan_write_error(&plan, e))?;
        Ok(plan)
    }

    /// The public catalog: current public plans (lowest rung first) and add-ons (by category) per product.
    pub async fn catalog(&self, ctx: &Ctx, q: CatalogQuery) -> AppResult<Catalog> {
        let scope = ctx.scope()?;
        let category = q.category.as_deref().map(check_category).transpose()?;
        let tier = q.tier.as_deref().map(check_tier).transpose()?;
        let filter = PlanFilter { product_id: q.product_id, public_only: true, ..PlanFilter::default() };
        let plans = self.store.list_plans(scope, filter).await?;
        let mut by_product: BTreeMap<Uuid, (Vec<Plan>, Vec<Plan>)> = BTreeMap::new();
        for p in plans {
            let slot = by_product.entry(p.product_id).or_default();
            match p.kind {
                PlanKind::Plan => slot.0.push(p),
                PlanKind::AddOn => slot.1.push(p),
            }
        }
        let mut products = Vec::new();
        let mut categories = BTreeSet::new();
        for (product_id, (mut ladder, mut add_ons)) in by_product {
            if let Some(t) = &tier {
                ladder.retain(|p| &p.tier == t);
                let codes: BTreeSet<&str> = ladder.iter().map(|p| p.code.as_str()).collect();
                add_ons
                    .retain(|a| a.attaches_to.is_empty() || a.attaches_to.iter().any(|c| codes.contains(c.as_str())));
                if ladder.is_empty() {
                    continue;
                }
            }
            if let Some(c) = &category {
                add_ons.retain(|a| a.category.as_ref() == Some(c));
            }
            let product: Product = match self.store.get_product(scope, product_id).await {
                Ok(p) => p,
                Err(e) => return Err(AppError::store("product", e)),
            };
            ladder.sort_by_key(|p| p.rank);
            add_ons.sort_by(|a, b| (&a.category, &a.code).cmp(&(&b.category, &b.code)));
            categories.extend(add_ons.iter().filter_map(|a| a.category.clone()));
            products.push(CatalogProduct {
                product_id,
                product_name: product.name,
                product_code: product.code,
                plans: ladder.into_iter().map(entry).collect(),
                add_ons: add_ons.into_iter().map(entry).collect(),
            });
        }
        Ok(Catalog { products, categories: categories.into_iter().collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_display_exactly_from_minor_units() {
        assert_eq!(display_amount(1999, 2), "19.99");
        assert_eq!(display_amount(5, 2), "0.05");
        assert_eq!(display_amount(0, 2), "0.00");
        assert_eq!(display_amount(-5, 2), "-0.05");
        assert_eq!(display_amount(1999, 0), "1999");
        assert_eq!(display_amount(1, 3), "0.001");
        assert_eq!(display_amount(MAX_AMOUNT, 2), "10000000000.00");
        assert_eq!(display_amount(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn currencies_are_iso_4217_codes_that_price_things() {
        assert_eq!(currency_exponent("EUR"), Some(2));
        assert_eq!(currency_exponent("JPY"), Some(0));
        assert_eq!(currency_exponent("BHD"), Some(3));
        for refused in ["XAU", "XXX", "EURO", "", "ZZZ"] {
            assert_eq!(currency_exponent(refused), None, "{refused}");
        }
    }

    #[test]
    fn slugs_are_codes() {
        assert_eq!(slug("Premium  Plus!", "plan"), "premium-plus");
        assert_eq!(slug("???", "plan"), "plan");
        assert!(check_code(&slug(&"x".repeat(100), "plan")).is_ok());
    }
}
