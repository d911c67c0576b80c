//! The usage-based billing report: per customer and calendar month (UTC), each subscription's base charge for the
//! paid periods that start in the month (plan and add-ons, at their price for the subscription's interval), and
//! its use past the included amounts of limits with an overage price, priced per metric (per unit, per package,
//! or graduated tiers).
//!
//! Money is integer minor units with its currency, never floating point. Rounding, stated once: an overage is
//! worked out exactly (as a fraction of minor units) and rounded once per quota period (each day of a DAY limit,
//! the month of a MONTH limit), half up: half a minor unit or more rounds up, less rounds down. A started package
//! is charged whole. Base charges need no rounding. Totals are exact sums, per currency (a customer can owe in more
//! than one). Not covered yet: proration of mid-period changes (the base charge is the plan held when the report is
//! made), taxes, discounts and credits; invoices, orders and payments build on this report later.

use std::collections::BTreeMap;

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::subscriptions::period_boundary;
use super::{Ctx, Services};
use crate::error::{AppError, AppResult};
use crate::store::{
    BillingInterval, LimitPeriod, Overage, PageRequest, Subscription, SubscriptionFilter, SummaryPeriod,
};

/// The rounding rule, as the report states it.
pub const ROUNDING: &str = "overage is computed exactly and rounded once per quota period (day or month), half up \
                            to the minor unit; a started package is charged whole; totals are exact sums per currency";

/// `GET /v1/billing/report`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingQuery {
    /// The calendar month, `YYYY-MM` (UTC).
    pub month: String,
    /// One customer only.
    pub customer_id: Option<Uuid>,
    /// One product's subscriptions only.
    pub product_id: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineKind {
    /// The plan's price for the periods that start in the month.
    Base,
    /// An add-on's price for those periods.
    AddOn,
    /// Use past the included amount of a metric.
    Usage,
}

/// One line of a customer's bill.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BillLine {
    pub subscription_id: Uuid,
    pub kind: LineKind,
    /// The plan or add-on the line is for (its code).
    pub plan: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Periods charged (BASE, ADD_ON) or billable units (USAGE).
    pub quantity: u64,
    /// USAGE: units used in the month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// USAGE: units included per quota period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub included: Option<u64>,
    /// USAGE: the period the included amount is per (DAY or MONTH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<LimitPeriod>,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
}

/// An amount of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Money {
    pub currency: String,
    /// Minor units.
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomerBill {
    pub customer_id: Uuid,
    pub customer_name: String,
    pub lines: Vec<BillLine>,
    /// Per currency, in currency order.
    pub totals: Vec<Money>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BillingReport {
    pub month: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// How amounts were rounded.
    pub rounding: String,
    /// Customers with at least one line, by id.
    pub customers: Vec<CustomerBill>,
    /// All customers' totals per currency.
    pub totals: Vec<Money>,
}

fn overflow() -> AppError {
    AppError::invalid("an amount of this report exceeds 2^63 minor units: report a narrower set of customers")
}

/// `num / den` rounded half up (half a unit or more rounds up), exactly.
fn div_half_up(num: u128, den: u128) -> u128 {
    (2 * num + den) / (2 * den)
}

/// The price of `units` billable units (past the included amount, in one quota period), in minor units (see the
/// module's rounding rule).
pub fn price_overage(o: &Overage, units: u64) -> AppResult<i64> {
    let units = u128::from(units);
    let minor = match o {
        Overage::PerUnit { unit_amount, per, .. } => {
            div_half_up(units * u128::from(unit_amount.unsigned_abs()), u128::from((*per).max(1)))
        }
        Overage::Package { package_size, package_amount, .. } => {
            units.div_ceil(u128::from((*package_size).max(1))) * u128::from(package_amount.unsigned_abs())
        }
        Overage::Graduated { tiers, per, .. } => {
            let mut exact = 0u128;
            let mut start = 0u128;
            for t in tiers {
                let end = t.up_to.map_or(u128::MAX, u128::from);
                if units <= start {
                    break;
                }
                let in_tier = units.min(end).saturating_sub(start);
                exact = exact.checked_add(in_tier * u128::from(t.unit_amount.unsigned_abs())).ok_or_else(overflow)?;
                start = end;
            }
            div_half_up(exact, u128::from((*per).max(1)))
        }
    };
    i64::try_from(minor).map_err(|_| overflow())
}

/// The first instant of `YYYY-MM` and of the month after.
fn month_bounds(month: &str) -> AppResult<(DateTime<Utc>, DateTime<Utc>)> {
    let bad = || AppError::invalid(format!("month must be YYYY-MM (for example 2026-11), not {month:?}"));
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    if month.len() != 7 || !(2000..=9999).contains(&chrono::Datelike::year(&first)) {
        return Err(bad());
    }
    let next = first.checked_add_months(Months::new(1)).ok_or_else(bad)?;
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(bad);
    Ok((at(first)?, at(next)?))
}

/// The paid periods of `sub` that start in `from..to` and no later than `now`: from the starts it kept, or for a
/// record kept before them, counted from its anchor.
fn periods_starting_in(
    sub: &Subscription,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let Some(paid) = sub.paid_from() else { return Ok(0) };
    let counts = |start: DateTime<Utc>| {
        start >= from && start < to && start <= now && start >= paid && sub.ended_at.is_none_or(|e| start < e)
    };
    if !sub.period_starts.is_empty() {
        return Ok(sub.period_starts.iter().filter(|s| counts(**s)).count() as u64);
    }
    let mut n = 0;
    for k in 0..=sub.periods {
        let start = period_boundary(sub.anchor_at, k, sub.interval)?;
        if start >= to || start > now {
            break;
        }
        if counts(start) {
            n += 1;
        }
    }
    Ok(n)
}

fn add(totals: &mut BTreeMap<String, i64>, currency: &str, amount: i64) -> AppResult<()> {
    let t = totals.entry(currency.to_string()).or_insert(0);
    *t = t.checked_add(amount).ok_or_else(overflow)?;
    Ok(())
}

fn money(totals: BTreeMap<String, i64>) -> Vec<Money> {
    totals.into_iter().map(|(currency, amount)| Money { currency, amount }).collect()
}

impl Services {
    /// The billing report of a month (any role of the tenant; a vendor admin sees every tenant's customers).
    pub async fn billing_report(&self, ctx: &Ctx, q: BillingQuery) -> AppResult<BillingReport> {
        ctx.role()?;
        let scope = ctx.scope()?;
        let (from, to) = month_bounds(q.month.trim())?;
        let now = self.now();
        let mut by_customer: BTreeMap<Uuid, Vec<BillLine>> = BTreeMap::new();
        let mut page = PageRequest { after: None, limit: 500 };
        loop {
            let filter = SubscriptionFilter { customer_id: q.customer_id, product_id: q.product_id, status: None };
            let found = self.store.list_subscriptions(scope, filter, page).await?;
            for sub in found.items {
                if sub.created_at >= to || sub.ended_at.is_some_and(|e| e <= from) {
                    continue;
                }
                let lines = self.bill_subscription(ctx, &sub, from, to, now).await?;
                if !lines.is_empty() {
                    by_customer.entry(sub.customer_id).or_default().extend(lines);
                }
            }
            match found.next_cursor.and_then(|c| Uuid::parse_str(&c).ok()) {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        let mut customers = Vec::with_capacity(by_customer.len());
        let mut all = BTreeMap::new();
        for (customer_id, lines) in by_customer {
            let mut totals = BTreeMap::new();
            for l in &lines {
                add(&mut totals, &l.currency, l.amount)?;
                add(&mut all, &l.currency, l.amount)?;
            }
            let customer_name = match self.store.get_customer(scope, customer_id).await {
                Ok(c) => c.name,
                Err(crate::store::StoreError::NotFound) => String::new(),
                Err(e) => return Err(AppError::store("customer", e)),
            };
            customers.push(CustomerBill { customer_id, customer_name, lines, totals: money(totals) });
        }
        Ok(BillingReport {
            month: q.month.trim().to_string(),
            from,
            to,
            rounding: ROUNDING.to_string(),
            customers,
            totals: money(all),
        })
    }

    async fn bill_subscription(
        &self,
        ctx: &Ctx,
        sub: &Subscription,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> AppResult<Vec<BillLine>> {
        let scope = ctx.scope()?;
        let plan = self.store.get_plan(scope, sub.plan_id).await.map_err(|e| AppError::store("plan", e))?;
        let mut add_ons = Vec::with_capacity(sub.add_ons.len());
        for a in &sub.add_ons {
            add_ons.push(self.store.get_plan(scope, *a).await.map_err(|e| AppError::store("plan", e))?);
        }
        let mut lines = Vec::new();
        // The subscription's currency: its plan's for its interval (prices are kept in currency order).
        let currency = plan.prices.iter().find(|p| p.interval == sub.interval).map(|p| p.currency.clone());
        let periods = periods_starting_in(sub, from, to, now)?;
        if let (Some(currency), true) = (&currency, periods > 0) {
            let interval = match sub.interval {
                BillingInterval::Month => "month",
                BillingInterval::Year => "year",
            };
            for (kind, p) in
                std::iter::once((LineKind::Base, &plan)).chain(add_ons.iter().map(|a| (LineKind::AddOn, a)))
            {
                // An add-on without a price in the subscription's currency is not charged (it is free with it).
                let Some(price) = p.price(sub.interval, currency) else { continue };
                let amount = price.checked_mul(periods as i64).ok_or_else(overflow)?;
                lines.push(BillLine {
                    subscription_id: sub.id,
                    kind,
                    plan: p.code.clone(),
                    description: format!("{} ({periods} × 1 {interval})", p.name),
                    metric: None,
                    quantity: periods,
                    used: None,
                    included: None,
                    period: None,
                    amount,
                    currency: currency.clone(),
                });
            }
        }
        // Metered metrics: every limit of the metric in the plan and its add-ons adds to the included amount (over
        // one period: subscriptions refuse a mix); the first overage price (the plan's before an add-on's) prices
        // what is past it. Only use while paid counts: not a trial's, nor any after the end.
        let mut included: BTreeMap<&str, (u64, LimitPeriod)> = BTreeMap::new();
        let mut priced: BTreeMap<&str, (&Overage, &str)> = BTreeMap::new();
        for p in std::iter::once(&plan).chain(&add_ons) {
            for l in &p.limits {
                let e = included.entry(l.metric.as_str()).or_insert((0, l.period));
                e.0 = e.0.saturating_add(l.limit.max(0) as u64);
                if let Some(o) = &l.overage {
                    priced.entry(l.metric.as_str()).or_insert((o, p.code.as_str()));
                }
            }
        }
        let Some(paid) = sub.paid_from() else { return Ok(lines) };
        let (use_from, use_to) = (from.max(paid), sub.ended_at.map_or(to, |e| e.min(to)));
        if use_from >= use_to {
            return Ok(lines);
        }
        for (metric, (overage, by)) in priced {
            let (included, period) = included.get(metric).copied().unwrap_or((0, LimitPeriod::Month));
            let rows = self
                .store
                .usage_summary(
                    vec![sub.license_id],
                    Some(metric.to_string()),
                    use_from,
                    use_to,
                    SummaryPeriod::Day,
                    400,
                )
                .await?;
            let days: Vec<u64> = rows.iter().map(|r| r.total.max(0) as u64).collect();
            let used: u64 = days.iter().fold(0u64, |a, d| a.saturating_add(*d));
            if used == 0 {
                continue;
            }
            let (billable, amount) = match period {
                LimitPeriod::Day => {
                    let mut billable = 0u64;
                    let mut amount = 0i64;
                    for d in &days {
                        let over = d.saturating_sub(included);
                        billable = billable.saturating_add(over);
                        amount = amount.checked_add(price_overage(overage, over)?).ok_or_else(overflow)?;
                    }
                    (billable, amount)
                }
                _ => {
                    let over = used.saturating_sub(included);
                    (over, price_overage(overage, over)?)
                }
            };
            lines.push(BillLine {
                subscription_id: sub.id,
                kind: LineKind::Usage,
                plan: by.to_string(),
                description: format!("{metric}: {used} used, {included} included per {}", period.as_str()),
                metric: Some(metric.to_string()),
                quantity: billable,
                used: Some(used),
                included: Some(included),
                period: Some(period),
                amount,
                currency: overage.currency().to_string(),
            });
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GraduatedTier;

    fn eur(o: impl FnOnce(String) -> Overage) -> Overage {
        o("EUR".into())
    }

    #[test]
    fn per_unit_prices_round_half_up_once() {
        // 1 cent per 1,000 calls: 1,499 calls are 1.499 cents → 1; 1,500 are 1.5 → 2; 2,499 are 2.499 → 2.
        let o = eur(|currency| Overage::PerUnit { currency, unit_amount: 1, per: 1000 });
        assert_eq!(price_overage(&o, 0).ok(), Some(0));
        assert_eq!(price_overage(&o, 499).ok(), Some(0));
        assert_eq!(price_overage(&o, 500).ok(), Some(1));
        assert_eq!(price_overage(&o, 1_499).ok(), Some(1));
        assert_eq!(price_overage(&o, 1_500).ok(), Some(2));
        assert_eq!(price_overage(&o, 2_499).ok(), Some(2));
        // Whole-unit prices need no rounding: 7 units at 0.25 EUR.
        let o = eur(|currency| Overage::PerUnit { currency, unit_amount: 25, per: 1 });
        assert_eq!(price_overage(&o, 7).ok(), Some(175));
        // An odd `per`: 1 unit at 1/3 cent is 0.33 → 0; 2 units 0.67 → 1; 3 units exactly 1.
        let o = eur(|currency| Overage::PerUnit { currency, unit_amount: 1, per: 3 });
        assert_eq!([1, 2, 3].map(|u| price_overage(&o, u).ok()), [Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn packages_charge_a_started_package_whole() {
        let o = eur(|currency| Overage::Package { currency, package_size: 100, package_amount: 500 });
        assert_eq!(
            [0, 1, 100, 101, 250].map(|u| price_overage(&o, u).ok()),
            [Some(0), Some(500), Some(500), Some(1000), Some(1500)]
        );
    }

    #[test]
    fn graduated_tiers_price_each_slice_at_its_rate_then_round_once() {
        // Per 10 units: the first 100 at 50 (5 cents each), up to 1,000 at 30, the rest at 12.
        let tiers = vec![
            GraduatedTier { up_to: Some(100), unit_amount: 50 },
            GraduatedTier { up_to: Some(1_000), unit_amount: 30 },
            GraduatedTier { up_to: None, unit_amount: 12 },
        ];
        let o = eur(|currency| Overage::Graduated { currency, tiers, per: 10 });
        // By hand: 100·50/10 = 500; 900·30/10 = 2,700; 1,234·12/10 = 1,480.8; exact 4,680.8 → 4,681.
        assert_eq!(price_overage(&o, 2_234).ok(), Some(4_681));
        assert_eq!(price_overage(&o, 100).ok(), Some(500));
        assert_eq!(price_overage(&o, 101).ok(), Some(503)); // 500 + 3
        assert_eq!(price_overage(&o, 0).ok(), Some(0));
        // Rounded once, not per tier: 1 unit in each of two tiers at 0.5 cents each is 1 cent, not 2.
        let half =
            vec![GraduatedTier { up_to: Some(1), unit_amount: 5 }, GraduatedTier { up_to: None, unit_amount: 5 }];
        let o = eur(|currency| Overage::Graduated { currency, tiers: half, per: 10 });
        assert_eq!(price_overage(&o, 2).ok(), Some(1));
    }

    #[test]
    fn huge_amounts_are_an_error_not_a_wrap() {
        let o = eur(|currency| Overage::PerUnit { currency, unit_amount: 1_000_000_000_000, per: 1 });
        assert!(price_overage(&o, u64::MAX).is_err());
    }

    #[test]
    fn months_are_parsed_strictly() {
        let (from, to) = month_bounds("2028-02").unwrap_or_default();
        assert_eq!(
            (from.to_rfc3339(), to.to_rfc3339()),
            ("2028-02-01T00:00:00+00:00".into(), "2028-03-01T00:00:00+00:00".into())
        );
        for bad in ["2028-2", "2028-13", "28-02", "2028-02-01", "", "1999-12", "abcd-ef"] {
            assert!(month_bounds(bad).is_err(), "{bad:?}");
        }
    }
}
