//! What is sold and what it earns: the plans of each product as a ladder (with add-ons, a form for a new rung and
//! archiving), subscriptions with their use against limits (upgrade or downgrade now or at the period's end, convert
//! a trial, cancel), and the month's billing report. Every screen is on the API's services: a refusal is shown in
//! their words, and a role that may not act sees no forms.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::pages::date;
use super::{csrf_field, error_page, page, role_refusal, CsrfOnly, Form, Query, User};
use crate::error::AppError;
use crate::http::AppState;
use crate::services::billing::{BillingQuery, BillingReport};
use crate::services::catalog::{currency_exponent, display_amount, CreatePlan, PlanQuery};
use crate::services::subscriptions::{CancelSubscription, ChangeSubscription, Effective, SubscriptionQuery};
use crate::store::{BillingInterval, LimitPeriod, Plan, PlanKind, Price, UsageLimit};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/plans", get(plans).post(create_plan))
        .route("/console/plans/{id}/archive", post(archive_plan))
        .route("/console/subscriptions", get(subscriptions))
        .route("/console/subscriptions/{id}/change", post(change))
        .route("/console/subscriptions/{id}/convert", post(convert))
        .route("/console/subscriptions/{id}/cancel", post(cancel))
        .route("/console/billing", get(billing))
}

/// `1999` EUR as `19.99 EUR`, from the integer, with the currency's own decimals.
fn money(amount: i64, currency: &str) -> String {
    format!("{} {currency}", display_amount(amount, currency_exponent(currency).unwrap_or(2)))
}

fn price_text(p: &Price) -> String {
    let per = match p.interval {
        BillingInterval::Month => "month",
        BillingInterval::Year => "year",
    };
    format!("{} / {per}", money(p.amount, &p.currency))
}

fn limit_text(l: &UsageLimit) -> String {
    let per = match l.period {
        LimitPeriod::Lifetime => "in all".to_string(),
        p => format!("per {}", p.as_str().to_lowercase().replace('_', " ")),
    };
    let extra = if l.overage.is_some() { " included, then billed" } else { "" };
    format!("{} {} {per}{extra}", l.limit, l.metric)
}

// Plans --------------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct PlanForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    product_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tier: String,
    /// Feature ids, comma-separated.
    #[serde(default)]
    features: String,
    /// Minor units (cents).
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    limit_metric: String,
    #[serde(default)]
    limit: String,
    #[serde(default)]
    limit_period: String,
}

async fn plans(State(state): State<AppState>, user: User) -> Response {
    plans_page(&state, &user, &PlanForm::default(), None).await
}

fn ladder(plans: &[&Plan], user: &User) -> Markup {
    html! {
        table.ladder {
            thead { tr {
                th scope="col" { "Rung" } th scope="col" { "Tier" } th scope="col" { "Plan" } th scope="col" { "Prices" }
                th scope="col" { "Features" } th scope="col" { "Limits" } th scope="col" { "Trial" } th scope="col" { "Listed" }
                @if user.may_admin() { th scope="col" { span.sr-only { "Actions" } } }
            } }
            tbody {
                @for p in plans {
                    tr data-plan=(p.code) {
                        td { (p.rank) }
                        td { (p.tier) }
                        td { (p.name) br; code { (p.code) } }
                        td { @for pr in &p.prices { (price_text(pr)) br; } @if p.prices.is_empty() { "free" } }
                        td { (p.features.iter().map(|f| f.id.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { @for l in &p.limits { (limit_text(l)) br; } }
                        td { @if p.trial_days > 0 { (p.trial_days) " days" } @else { "none" } }
                        td { @if p.public { "public" } @else { "private" } }
                        @if user.may_admin() {
                            td {
                                form method="post" action={ "/console/plans/" (p.id) "/archive" } {
                                    (csrf_field(user))
                                    button.link type="submit" { "Archive" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn plans_page(state: &AppState, user: &User, f: &PlanForm, err: Option<&AppError>) -> Response {
    let list = state.services.list_plans(&user.ctx, PlanQuery::default()).await;
    // Per product: its rungs (lowest first) and its add-ons.
    let groups = list.as_ref().map(|all| {
        let mut by_product: BTreeMap<Uuid, (Vec<&Plan>, Vec<&Plan>)> = BTreeMap::new();
        for p in all {
            let g = by_product.entry(p.product_id).or_default();
            if p.kind == PlanKind::Plan {
                g.0.push(p)
            } else {
                g.1.push(p)
            }
        }
        for (rungs, add_ons) in by_product.values_mut() {
            rungs.sort_by_key(|p| p.rank);
            add_ons.sort_by(|a, b| (&a.category, &a.code).cmp(&(&b.category, &b.code)));
        }
        by_product
    });
    let body = html! {
        h1 { "Plans" }
        p { "Each product's ladder of tiers, lowest first, and its add-ons. A subscription's license carries what its plan grants." }
        @match &groups {
            Err(e) => p.error role="alert" { (e.message) },
            Ok(g) if g.is_empty() => p { "No plans yet." },
            Ok(g) => {
                @for (product, (rungs, add_ons)) in g {
                    section.product aria-label={ "Product " (product) } {
                        h2 { "Product " code { (product) } }
                        @if !rungs.is_empty() { (ladder(rungs, user)) }
                        @if !add_ons.is_empty() {
                            h3 { "Add-ons" }
                            table.add-ons {
                                thead { tr { th scope="col" { "Category" } th scope="col" { "Add-on" } th scope="col" { "Prices" } th scope="col" { "Features and limits" } } }
                                tbody { @for a in add_ons { tr data-plan=(a.code) {
                                    td { (a.category.clone().unwrap_or_default()) }
                                    td { (a.name) br; code { (a.code) } }
                                    td { @for pr in &a.prices { (price_text(pr)) br; } }
                                    td { (a.features.iter().map(|f| f.id.as_str()).collect::<Vec<_>>().join(", ")) @for l in &a.limits { br; (limit_text(l)) } }
                                } } }
                            }
                        }
                    }
                }
            }
        }
        @if user.may_admin() {
            section aria-labelledby="create" {
                h2 #create { "A new rung" }
                form #plan-form method="post" action="/console/plans" {
                    (csrf_field(user))
                    div.field { label for="product_id" { "Product id" } input #product_id name="product_id" value=(f.product_id) required autocomplete="off"; }
                    div.field { label for="name" { "Name" } input #name name="name" value=(f.name) required autocomplete="off"; }
                    div.field { label for="tier" { "Tier (blank: FREE, BASIC, PREMIUM, ENTERPRISE by rung)" } input #tier name="tier" value=(f.tier) autocomplete="off"; }
                    div.field { label for="features" { "Features (ids, comma-separated)" } input #features name="features" value=(f.features) autocomplete="off"; }
                    div.field { label for="price" { "Monthly price in minor units (1999 = 19.99)" } input #price name="price" value=(f.price) inputmode="numeric" autocomplete="off"; }
                    div.field { label for="currency" { "Currency (ISO 4217)" } input #currency name="currency" value=(f.currency) autocomplete="off"; }
                    div.field { label for="limit_metric" { "Limit: metric" } input #limit_metric name="limit_metric" value=(f.limit_metric) autocomplete="off"; }
                    div.field { label for="limit" { "Limit: units" } input #limit name="limit" value=(f.limit) inputmode="numeric" autocomplete="off"; }
                    div.field {
                        label for="limit_period" { "Limit: per" }
                        select #limit_period name="limit_period" {
                            @for (v, l) in [("DAY", "day"), ("MONTH", "month"), ("BILLING_PERIOD", "billing period"), ("LIFETIME", "in all")] {
                                option value=(v) selected[f.limit_period == v] { (l) }
                            }
                        }
                    }
                    @if let Some(e) = err { p #form-error .error role="alert" { (e.message) } }
                    button type="submit" { "Add the plan" }
                }
            }
        }
    };
    page(user, "Plans", "/console/plans", body, err)
}

/// The form as the service's request; a malformed number is the service's kind of refusal.
fn plan_request(f: &PlanForm) -> Result<CreatePlan, AppError> {
    let product_id = Uuid::parse_str(f.product_id.trim())
        .map_err(|_| AppError::invalid("product id must be a product's id (a UUID)"))?;
    let int = |what: &str, v: &str| {
        v.trim().parse::<i64>().map_err(|_| AppError::invalid(format!("{what} must be a whole number, not {v:?}")))
    };
    let features =
        f.features.split(',').map(str::trim).filter(|s| !s.is_empty()).map(tessera_core::Feature::new).collect();
    let prices = match f.price.trim() {
        "" => Vec::new(),
        p => {
            vec![Price { interval: BillingInterval::Month, amount: int("the price", p)?, currency: f.currency.clone() }]
        }
    };
    let limits = match f.limit_metric.trim() {
        "" => Vec::new(),
        m => {
            let period = serde_json::from_value(serde_json::Value::String(f.limit_period.clone()))
                .map_err(|_| AppError::invalid("choose what the limit counts per"))?;
            vec![UsageLimit { metric: m.to_string(), limit: int("the limit", &f.limit)?, period, overage: None }]
        }
    };
    Ok(CreatePlan {
        product_id,
        name: f.name.clone(),
        code: None,
        kind: None,
        tier: Some(f.tier.trim().to_string()).filter(|t| !t.is_empty()),
        rank: None,
        description: None,
        public: None,
        trial_days: None,
        features,
        limits,
        prices,
        category: None,
        attaches_to: Vec::new(),
        template_id: None,
        upgrade_url: None,
    })
}

async fn create_plan(State(state): State<AppState>, user: User, Form(f): Form<PlanForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let r = match plan_request(&f) {
        Ok(req) => state.services.create_plan(&user.ctx, req).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(_) => Redirect::to("/console/plans").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => plans_page(&state, &user, &f, Some(&e)).await,
    }
}

/// An action's checks, in order: the form's CSRF token, then the id in the path (of a `what`).
fn checked_id(user: &User, csrf: &str, id: &str, what: &str) -> Result<Uuid, Box<Response>> {
    if let Some(r) = user.refuse_csrf(csrf) {
        return Err(Box::new(r));
    }
    Uuid::parse_str(id).map_err(|_| Box::new(error_page(&AppError::not_found(what))))
}

async fn archive_plan(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let id = match checked_id(&user, &f.csrf, &id, "plan") {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match state.services.archive_plan(&user.ctx, id).await {
        Ok(_) => Redirect::to("/console/plans").into_response(),
        Err(e) => error_page(&e),
    }
}

// Subscriptions ------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct SubscriptionsQuery {
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

async fn subscriptions(State(state): State<AppState>, user: User, Query(q): Query<SubscriptionsQuery>) -> Response {
    subscriptions_page(&state, &user, &q, None).await
}

async fn subscriptions_page(state: &AppState, user: &User, q: &SubscriptionsQuery, err: Option<&AppError>) -> Response {
    let customer_id =
        q.customer_id.as_deref().map(str::trim).filter(|c| !c.is_empty()).and_then(|c| Uuid::parse_str(c).ok());
    let query =
        SubscriptionQuery { customer_id, cursor: q.cursor.clone(), limit: Some(100), ..SubscriptionQuery::default() };
    let list = state.services.list_subscriptions(&user.ctx, query).await;
    let plans =
        state.services.list_plans(&user.ctx, PlanQuery { kind: Some(PlanKind::Plan), ..PlanQuery::default() }).await;
    let plans = plans.unwrap_or_default();
    let body = html! {
        h1 { "Subscriptions" }
        form.filters method="get" action="/console/subscriptions" {
            div.field { label for="customer_id" { "Customer id" } input #customer_id name="customer_id" value=(q.customer_id.clone().unwrap_or_default()) autocomplete="off"; }
            button type="submit" { "Show" }
        }
        @if let Some(e) = err { p #action-error .error role="alert" { (e.message) } }
        @match &list {
            Err(e) => p.error role="alert" { (e.message) },
            Ok(page) if page.items.is_empty() => p { "No subscriptions." },
            Ok(page) => {
                table.subscriptions {
                    thead { tr {
                        th scope="col" { "Customer" } th scope="col" { "Plan" } th scope="col" { "Status" }
                        th scope="col" { "Period ends" } th scope="col" { "Use against limits" }
                        @if user.may_admin() { th scope="col" { "Change" } }
                    } }
                    tbody {
                        @for v in &page.items {
                            @let s = &v.subscription;
                            tr data-subscription=(s.id) {
                                td { code { (s.customer_id) } }
                                td.plan { (v.plan.name) " (" (v.plan.tier) ")" @for a in &v.add_on_plans { br; "+ " (a.name) } }
                                td.status { (s.status.as_str()) @if s.cancel_at_period_end { br; "ends at period end" } @if let Some(c) = &s.scheduled_change { br; "changes " (date(c.at)) } }
                                td { (date(s.current_period_end)) }
                                td.use {
                                    @for e in v.entitlements.iter().filter(|e| e.limit.is_some()) {
                                        @let per = if e.period == LimitPeriod::Lifetime { "in all".to_string() } else { format!("per {}", e.period.as_str().to_lowercase()) };
                                        span.meter { (e.feature) ": " (e.used) " of " (e.limit.unwrap_or(0)) " " (per) }
                                        meter value=(e.used) max=(e.limit.unwrap_or(0).max(1)) aria-label={ (e.feature) " used" } {}
                                        br;
                                    }
                                }
                                @if user.may_admin() && !s.status.is_final() {
                                    td.actions {
                                        form.change method="post" action={ "/console/subscriptions/" (s.id) "/change" } {
                                            (csrf_field(user))
                                            label for={ "plan-" (s.id) } { "Plan" }
                                            select id={ "plan-" (s.id) } name="plan_id" {
                                                @for p in plans.iter().filter(|p| p.product_id == s.product_id && p.archived_at.is_none()) {
                                                    option value=(p.id) selected[p.id == s.plan_id] { (p.name) " (" (p.tier) ")" }
                                                }
                                            }
                                            select name="at" aria-label="When" {
                                                option value="NOW" { "now" }
                                                option value="PERIOD_END" { "at the period's end" }
                                            }
                                            button type="submit" { "Change plan" }
                                        }
                                        @if s.status.as_str() == "TRIALING" {
                                            form method="post" action={ "/console/subscriptions/" (s.id) "/convert" } {
                                                (csrf_field(user)) button type="submit" { "Convert to paid" }
                                            }
                                        }
                                        @if !s.cancel_at_period_end && s.status.as_str() != "PAUSED" {
                                            form method="post" action={ "/console/subscriptions/" (s.id) "/cancel" } {
                                                (csrf_field(user)) button.link type="submit" { "Cancel at period end" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(c) = &page.next_cursor {
                    p { a href={ "/console/subscriptions?cursor=" (c) @if let Some(id) = customer_id { "&customer_id=" (id) } } { "Next page" } }
                }
            }
        }
    };
    page(user, "Subscriptions", "/console/subscriptions", body, err)
}

#[derive(Deserialize, Default)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    plan_id: String,
    #[serde(default)]
    at: String,
}

/// After an action: back to the list, or the list with the refusal above it.
async fn after(state: &AppState, user: &User, r: Result<impl Sized, AppError>) -> Response {
    match r {
        Ok(_) => Redirect::to("/console/subscriptions").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => subscriptions_page(state, user, &SubscriptionsQuery::default(), Some(&e)).await,
    }
}

async fn change(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let id = match checked_id(&user, &f.csrf, &id, "subscription") {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let plan_id = match Uuid::parse_str(f.plan_id.trim()) {
        Ok(p) => p,
        Err(_) => return after(&state, &user, Err::<(), _>(AppError::invalid("choose a plan"))).await,
    };
    let at = if f.at == "PERIOD_END" { Effective::PeriodEnd } else { Effective::Now };
    let req = ChangeSubscription { plan_id: Some(plan_id), add_ons: None, at: Some(at) };
    let r = state.services.change_subscription(&user.ctx, id, req).await;
    after(&state, &user, r).await
}

async fn convert(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let id = match checked_id(&user, &f.csrf, &id, "subscription") {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let r = state.services.convert_subscription(&user.ctx, id).await;
    after(&state, &user, r).await
}

async fn cancel(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let id = match checked_id(&user, &f.csrf, &id, "subscription") {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let req = CancelSubscription { at: Some(Effective::PeriodEnd), reason: Some("console".into()) };
    let r = state.services.cancel_subscription(&user.ctx, id, req).await;
    after(&state, &user, r).await
}

// Billing ------------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct MonthQuery {
    #[serde(default)]
    month: Option<String>,
}

fn bill(report: &BillingReport) -> Markup {
    html! {
        p.rounding { "Rounding: " (report.rounding) "." }
        @if report.customers.is_empty() { p { "Nothing to bill this month." } }
        @for c in &report.customers {
            section.bill data-customer=(c.customer_id) aria-label={ "Bill of " (c.customer_name) } {
                h2 { (if c.customer_name.is_empty() { c.customer_id.to_string() } else { c.customer_name.clone() }) }
                table {
                    thead { tr { th scope="col" { "Line" } th scope="col" { "Plan" } th scope="col" { "Quantity" } th scope="col" .num { "Amount" } } }
                    tbody {
                        @for l in &c.lines {
                            tr { td { (l.description) } td { code { (l.plan) } } td { (l.quantity) } td.num { (money(l.amount, &l.currency)) } }
                        }
                    }
                    tfoot {
                        @for t in &c.totals { tr.total { th scope="row" colspan="3" { "Total" } td.num { (money(t.amount, &t.currency)) } } }
                    }
                }
            }
        }
        @if !report.totals.is_empty() {
            p #grand-total { "All customers: " (report.totals.iter().map(|t| money(t.amount, &t.currency)).collect::<Vec<_>>().join(" + ")) }
        }
    }
}

async fn billing(State(state): State<AppState>, user: User, Query(q): Query<MonthQuery>) -> Response {
    let month = q
        .month
        .clone()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| state.services.now().format("%Y-%m").to_string());
    let report = state
        .services
        .billing_report(&user.ctx, BillingQuery { month: month.clone(), ..BillingQuery::default() })
        .await;
    let body = html! {
        h1 { "Billing" }
        form.filters method="get" action="/console/billing" {
            div.field { label for="month" { "Month (YYYY-MM, UTC)" } input #month name="month" value=(month) autocomplete="off"; }
            button type="submit" { "Show" }
        }
        @match &report {
            Ok(r) => (bill(r)),
            Err(e) => p #month-error .error role="alert" { (e.message) },
        }
    };
    page(&user, "Billing", "/console/billing", body, report.as_ref().err())
}
