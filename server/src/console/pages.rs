//! The console's pages: one handler and one template function each. A new resource adds a route here, an entry
//! in `NAV` (mod.rs) and its page functions; the layout, the session and the CSRF check come with `User`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use tessera_core::protocol::{RespondRequest, RespondResult};
use uuid::Uuid;

use super::actions::Action;
use super::{csrf_field, error_page, layout, page_response, qr_svg, role_refusal, Form, Query, User};
use crate::error::AppError;
use crate::http::AppState;
use crate::services::audit::AuditQuery;
use crate::services::licenses::{effective_status, KeyLookup, LicenseListQuery, LicenseView};
use crate::store::ActivationStatus;
use tessera_core::LicenseStatus;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/overview", get(overview))
        .route("/console/licenses", get(licenses).post(find_license))
        .route("/console/licenses/{id}", get(license))
        .route("/console/offline", get(offline_page).post(offline_respond))
        .route("/console/offline/receipt", post(offline_receipt))
}

pub(super) fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(super) fn opt_date(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "never".to_string(), date)
}

// Overview ---------------------------------------------------------------------------------------------------

/// How many licenses the overview reads (one page of the store's largest size).
const OVERVIEW_LIMIT: u32 = 500;
/// How many recent events and refusals it shows.
const RECENT: u32 = 10;
/// Audit outcomes that are refusals of what a customer's device or staff asked for.
const REFUSALS: &[&str] = &["SEAT_LIMIT_REACHED", "LIMIT_REACHED", "CONFLICT"];

async fn overview(State(state): State<AppState>, user: User) -> Response {
    let q = LicenseListQuery { limit: Some(OVERVIEW_LIMIT), ..LicenseListQuery::default() };
    let page = match state.services.list_licenses(&user.ctx, q).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let now = state.services.now();
    let soon = now + Duration::days(30);
    let mut by_status: Vec<(&str, usize)> = Vec::new();
    for l in &page.items {
        let s = effective_status(&l.license, now).as_str();
        match by_status.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => by_status.push((s, 1)),
        }
    }
    by_status.sort();
    let mut expiring: Vec<&LicenseView> =
        page.items.iter().filter(|l| l.license.expires_at.is_some_and(|e| e > now && e <= soon)).collect();
    expiring.sort_by_key(|l| l.license.expires_at);
    let partial = page.next_cursor.is_some();
    let seats = seats_or_log(&state, &page.items).await;
    // Seats of the licenses that work now: in use, and what their limits allow (unlimited models apart).
    let working: Vec<&LicenseView> =
        page.items.iter().filter(|l| effective_status(&l.license, now) == LicenseStatus::Active).collect();
    let used: u64 = working
        .iter()
        .filter(|l| !l.license.license_model.is_unlimited())
        .map(|l| u64::from(seats.as_ref().and_then(|m| m.get(&l.license.id).copied()).unwrap_or(0)))
        .sum();
    let limited: u64 = working
        .iter()
        .filter(|l| !l.license.license_model.is_unlimited())
        .map(|l| u64::from(l.license.max_activations))
        .sum();
    let unlimited = working.iter().filter(|l| l.license.license_model.is_unlimited()).count();
    let recent = |outcomes: &[&str]| AuditQuery {
        before: Some(i64::MAX),
        limit: Some(RECENT),
        any_outcome: outcomes.iter().map(|o| o.to_string()).collect(),
        ..AuditQuery::default()
    };
    let events = state.services.list_audit(&user.ctx, recent(&[])).await;
    let refusals = state.services.list_audit(&user.ctx, recent(REFUSALS)).await;
    let body = html! {
        h1 { "Overview" }
        @if partial { p.note { "Counting the first " (OVERVIEW_LIMIT) " licenses." } }
        section aria-labelledby="by-status" {
            h2 #by-status { "Licenses by status" }
            @if by_status.is_empty() { p { "No licenses yet." } }
            @else {
                ul.tiles {
                    @for (s, n) in &by_status {
                        li { a href={ "/console/licenses?status=" (s) } { span.count { (n) } " " (s.to_lowercase()) } }
                    }
                }
            }
        }
        section aria-labelledby="seats" {
            h2 #seats { "Seats" }
            @if seats.is_some() {
                p #seat-totals { span.count { (used) } " in use of " (limited) " on active licenses with a seat limit"
                    @if unlimited > 0 { ", and " (unlimited) " site or enterprise licenses without a seat limit" } "." }
            } @else { p.error role="alert" { "The seats in use could not be read: reload the page." } }
        }
        section aria-labelledby="refusals" {
            h2 #refusals { "Recent refusals" }
            (listed(&refusals, "None recorded.", |rows| html! { (super::records::audit_table(rows)) }))
        }
        section aria-labelledby="events" {
            h2 #events { "Recent events" }
            (listed(&events, "Nothing recorded yet.", |rows| html! {
                (super::records::audit_table(rows))
                p { a href="/console/audit" { "The whole audit log" } }
            }))
        }
        section aria-labelledby="expiring" {
            h2 #expiring { "Expiring in the next 30 days" }
            @if expiring.is_empty() { p { "None." } }
            @else { (license_table(&expiring, seats.as_ref(), now)) }
        }
    };
    page_response(StatusCode::OK, layout(&user, "Overview", "/console/overview", body))
}

// Licenses ---------------------------------------------------------------------------------------------------

/// The list's filters (in the query string: none of them is a secret).
#[derive(Deserialize, serde::Serialize, Default, Clone)]
struct LicenseSearch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
}

/// A license key or id to find: posted, so a key never lands in a URL, the history or a proxy's log.
#[derive(Deserialize)]
struct FindForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    q: String,
}

/// Seats in use of listed licenses; `None` (logged) when they could not be read, so the list still shows.
async fn seats_or_log(state: &AppState, items: &[LicenseView]) -> Option<HashMap<Uuid, u32>> {
    match state.services.seats_of(items).await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e.message, "console: seats of a license list not read");
            None
        }
    }
}

fn license_table(items: &[&LicenseView], seats: Option<&HashMap<Uuid, u32>>, now: DateTime<Utc>) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { "License" } th scope="col" { "Status" } th scope="col" { "Type" }
                th scope="col" { "Seats" } th scope="col" { "Expires" } } }
            tbody {
                @for l in items {
                    tr {
                        td { a href={ "/console/licenses/" (l.license.id) } { code { (l.key_hint) } } }
                        td { (effective_status(&l.license, now).as_str()) }
                        td { (l.license.license_type.as_str()) }
                        td {
                            @match seats { Some(m) => { (m.get(&l.license.id).copied().unwrap_or(0)) }, None => { "?" } }
                            " of "
                            @if l.license.license_model.is_unlimited() { "unlimited" } @else { (l.license.max_activations) }
                        }
                        td { (opt_date(l.license.expires_at)) }
                    }
                }
            }
        }
    }
}

fn parse_id(field: &str, v: &Option<String>) -> Result<Option<Uuid>, AppError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| AppError::invalid(format!("{field} must be an id (a UUID such as 0192…-…), or left empty"))),
    }
}

async fn licenses(State(state): State<AppState>, user: User, Query(s): Query<LicenseSearch>) -> Response {
    let filters = parse_id("product id", &s.product_id).and_then(|p| Ok((p, parse_id("customer id", &s.customer_id)?)));
    let listed = match filters {
        Err(e) => Err(e),
        Ok((product_id, customer_id)) => {
            let q = LicenseListQuery {
                status: s.status.clone().filter(|v| !v.is_empty()),
                product_id,
                customer_id,
                cursor: s.cursor.clone(),
                limit: Some(100),
                ..LicenseListQuery::default()
            };
            state.services.list_licenses(&user.ctx, q).await
        }
    };
    match listed {
        Ok(p) => {
            let next = p.next_cursor.map(|c| LicenseSearch { cursor: Some(c), ..s.clone() });
            licenses_page(&state, &user, &s, "", &p.items, next.as_ref(), None).await
        }
        Err(e) => licenses_page(&state, &user, &s, "", &[], None, Some(&e)).await,
    }
}

async fn find_license(State(state): State<AppState>, user: User, Form(f): Form<FindForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let q = f.q.trim();
    let none = LicenseSearch::default();
    if q.is_empty() {
        let e = AppError::invalid("enter a license key (TSK-…) or a license id");
        return licenses_page(&state, &user, &none, q, &[], None, Some(&e)).await;
    }
    // One license: by id, or by its key (hashed; the key itself is never stored).
    let r = match Uuid::parse_str(q) {
        Ok(id) => state.services.get_license(&user.ctx, id).await,
        Err(_) => state.services.get_license_by_key(&user.ctx, KeyLookup { license_key: q.to_string() }).await,
    };
    match r {
        Ok(l) => licenses_page(&state, &user, &none, q, &[l], None, None).await,
        Err(e) => licenses_page(&state, &user, &none, q, &[], None, Some(&e)).await,
    }
}

async fn licenses_page(
    state: &AppState,
    user: &User,
    s: &LicenseSearch,
    query: &str,
    found: &[LicenseView],
    next: Option<&LicenseSearch>,
    error: Option<&AppError>,
) -> Response {
    let now = state.services.now();
    let statuses = ["ACTIVE", "SUSPENDED", "REVOKED", "EXPIRED"];
    let refs: Vec<&LicenseView> = found.iter().collect();
    // The page's seats in one more read: two store reads for the whole list.
    let seats = seats_or_log(state, found).await;
    let message = error.map(|e| e.message.as_str());
    let body = html! {
        h1 { "Licenses" }
        @if user.may_admin() { p { a.button href="/console/licenses/new" { "New license…" } } }
        form.search method="post" action="/console/licenses" role="search" {
            (csrf_field(user))
            div.field {
                label for="q" { "License key or id" }
                input #q type="search" name="q" value=(query) autocomplete="off" aria-describedby=[message.map(|_| "search-error")];
            }
            button type="submit" { "Find" }
        }
        form.search method="get" action="/console/licenses" {
            div.field {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for st in statuses {
                        option value=(st) selected[s.status.as_deref() == Some(st)] { (st.to_lowercase()) }
                    }
                }
            }
            div.field {
                label for="product_id" { "Product id" }
                input #product_id name="product_id" value=[s.product_id.as_deref()];
            }
            div.field {
                label for="customer_id" { "Customer id" }
                input #customer_id name="customer_id" value=[s.customer_id.as_deref()];
            }
            button type="submit" { "Filter" }
        }
        @if let Some(e) = message { p #search-error .error role="alert" { (e) } }
        @if refs.is_empty() && error.is_none() { p { "No licenses match." } }
        @else if !refs.is_empty() { (license_table(&refs, seats.as_ref(), now)) }
        @if let Some(n) = next.and_then(|n| serde_urlencoded::to_string(n).ok()) {
            p { a href={ "/console/licenses?" (n) } { "Next page" } }
        }
    };
    let status = error.map_or(StatusCode::OK, |e| StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST));
    page_response(status, layout(user, "Licenses", "/console/licenses", body))
}

/// What the device said it is (host name and system, as the agent reported them; never trusted for anything).
fn device_label(metadata: &serde_json::Value) -> String {
    let text = |k: &str| metadata[k].as_str().map(|s| s.chars().take(80).collect::<String>());
    match (text("hostname"), text("os")) {
        (Some(h), Some(o)) => format!("{h} ({o})"),
        (Some(h), None) => h,
        (None, Some(o)) => o,
        (None, None) if metadata["offline"] == true => "offline device".to_string(),
        (None, None) => "unnamed".to_string(),
    }
}

/// A section's rows, or why there are none to show (a role that may not read them, or an error).
fn listed<T>(r: &Result<Vec<T>, AppError>, none: &str, rows: impl FnOnce(&[T]) -> Markup) -> Markup {
    match r {
        Ok(items) if items.is_empty() => html! { p { (none) } },
        Ok(items) => rows(items),
        Err(e) if role_refusal(e) => html! { p.note { "Not shown: " (e.message) } },
        Err(e) => html! { p.error role="alert" { (e.message) } },
    }
}

#[derive(Deserialize)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

/// How many audit entries of a license its page shows (newest first).
const HISTORY: u32 = 50;

async fn license(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return error_page(&AppError::not_found("license"));
    };
    let svc = &state.services;
    let view = match svc.get_license(&user.ctx, id).await {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let activations = svc.list_license_activations(&user.ctx, id).await;
    let emergency = svc.list_emergency(&user.ctx, id).await;
    let usage = svc.license_usage(&user.ctx, id).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e.message, "console: usage totals not read");
        Vec::new()
    });
    // The license's own entries and its devices' (deactivations, releases), newest first, in one read.
    let mut targets = vec![id.to_string()];
    if let Ok(list) = &activations {
        targets.extend(list.iter().rev().take(499).map(|a| a.id.to_string()));
    }
    let history = svc
        .list_audit(
            &user.ctx,
            AuditQuery { before: Some(i64::MAX), any_target: targets, limit: Some(HISTORY), ..Default::default() },
        )
        .await;
    let now = svc.now();
    let l = &view.license;
    let status = effective_status(l, now);
    let done = q.done.as_deref().and_then(|d| Action::ALL.into_iter().find(|a| a.slug() == d));
    let body = html! {
        h1 { "License " code { (view.key_hint) } }
        @if let Some(a) = done { p.note role="status" #done { (a.done()) } }
        nav.actions aria-label="License actions" {
            ul {
                @if user.may_admin() {
                    @for a in Action::ALL.into_iter().filter(|a| a.fits(status)) {
                        li { a.button href={ "/console/licenses/" (l.id) "/act/" (a.slug()) } { (a.label()) "…" } }
                    }
                }
                @if user.may_support() && status != LicenseStatus::Revoked {
                    li { a.button href={ "/console/emergency?license=" (l.id) } { "Emergency code…" } }
                }
                li { a.button href={ "/console/licenses/" (l.id) "/file" } download { "Download license file" } }
            }
        }
        dl.terms {
            dt { "Id" } dd { code { (l.id) } }
            dt { "Status" } dd { (effective_status(l, now).as_str()) }
            dt { "Product" } dd { code { (l.product_id) } }
            dt { "Customer" } dd { @if let Some(c) = l.customer_id { code { (c) } } @else { "none" } }
            dt { "Seats" } dd { (view.seats_used.unwrap_or(0)) " of " (l.max_activations) " in use" }
            dt { "Starts" } dd { (date(l.starts_at)) }
            dt { "Expires" } dd { (opt_date(l.expires_at)) }
            dt { "Grace" } dd { (l.grace_days) " days" }
            dt { "Heartbeat" } dd { "every " (l.heartbeat_interval_secs) " s" }
        }
        section aria-labelledby="features" {
            h2 #features { "Features" }
            @if l.features.is_empty() { p { "No features listed." } }
            @else {
                table {
                    thead { tr { th scope="col" { "Feature" } th scope="col" { "Enabled" } th scope="col" { "Limit" }
                        th scope="col" { "Used" } } }
                    tbody {
                        @for f in &l.features {
                            @let used = usage.iter().find(|(id, _)| *id == f.id).map_or(0, |(_, n)| *n);
                            tr { td { code { (f.id) } } td { (if f.enabled { "yes" } else { "no" }) }
                                td { @if f.limit_value > 0 { (f.limit_value) } @else { "unlimited" } }
                                td.used { (used) } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="activations" {
            h2 #activations { "Activations" }
            (listed(&activations, "No activations.", |rows| html! {
                table {
                    thead { tr { th scope="col" { "Activation" } th scope="col" { "Device" } th scope="col" { "Status" } th scope="col" { "Kind" }
                        th scope="col" { "Last seen" } th scope="col" { "Lease until" }
                        @if user.may_support() { th scope="col" { span.visually-hidden { "Actions" } } } } }
                    tbody {
                        @for a in rows {
                            tr { td { code { (a.id) } }
                                td { (device_label(&a.metadata)) }
                                td { (a.status.as_str().to_lowercase()) }
                                td { (if a.offline { "offline" } else { "online" }) }
                                td { (date(a.last_seen_at)) } td { (opt_date(a.lease_expires_at)) }
                                @if user.may_support() {
                                    td { @if a.status == ActivationStatus::Active {
                                        a href={ "/console/licenses/" (l.id) "/activations/" (a.id) "/deactivate" } { "Deactivate…" }
                                    } }
                                } }
                        }
                    }
                }
            }))
        }
        section aria-labelledby="emergency" {
            h2 #emergency { "Emergency codes issued" }
            (listed(&emergency, "None.", |rows| html! {
                table {
                    thead { tr { th scope="col" { "Serial" } th scope="col" { "Issued" } th scope="col" { "Expires" }
                        th scope="col" { "Bound to a device" } th scope="col" { "By" } th scope="col" { "Reason" } } }
                    tbody {
                        @for e in rows {
                            tr { td { (e.serial) } td { (date(e.issued_at)) } td { (date(e.expires_at)) }
                                td { (if e.bound { "yes" } else { "no" }) } td { (e.issued_by) } td { (e.reason) } }
                        }
                    }
                }
            }))
        }
        section aria-labelledby="history" {
            h2 #history { "History" }
            (listed(&history, "Nothing recorded.", |rows| html! {
                (super::records::audit_table(rows))
                @if rows.len() as u32 == HISTORY {
                    @if let Some(last) = rows.last() {
                        p { a href={ "/console/audit?target=" (l.id) "&before=" (last.seq) } { "Older entries of the license in the audit log" } }
                    }
                }
            }))
        }
    };
    let title = format!("License {}", view.key_hint);
    page_response(StatusCode::OK, layout(&user, &title, "/console/licenses", body))
}

// Offline desk -----------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct OfflineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_code: String,
    #[serde(default)]
    license_key: String,
}

fn offline_form(user: &User, code: &str, key: &str, error: Option<&str>) -> Markup {
    html! {
        form method="post" action="/console/offline" {
            (csrf_field(user))
            div.field {
                label for="request_code" { "Request code from the customer's machine" }
                textarea #request_code name="request_code" rows="6" required spellcheck="false"
                    aria-describedby=[error.map(|_| "request-error")] { (code) }
                @if let Some(e) = error { p #request-error .error role="alert" { (e) } }
            }
            div.field {
                label for="license_key" { "License key (only when the code's key hint matches several licenses)" }
                input #license_key name="license_key" value=(key) autocomplete="off";
            }
            button type="submit" { "Answer the request" }
        }
    }
}

async fn offline_page(user: User) -> Response {
    if !user.may_support() {
        return error_page(&AppError::forbidden(format!(
            "a {} token may not answer offline requests: sign in with a support or admin token",
            user.role.as_str()
        )));
    }
    let body = html! {
        h1 { "Offline desk" }
        p { "Paste the request code the customer read off the air-gapped machine (" code { "tessera-agent request-code" } ")." }
        (offline_form(&user, "", "", None))
        (receipt_form(&user, "", None))
    };
    page_response(StatusCode::OK, layout(&user, "Offline desk", "/console/offline", body))
}

async fn offline_respond(State(state): State<AppState>, user: User, Form(f): Form<OfflineForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let key = f.license_key.trim();
    let req = RespondRequest {
        request_code: f.request_code.trim().to_string(),
        license_key: (!key.is_empty()).then(|| key.to_string()),
    };
    match state.services.offline_respond(&user.ctx, req).await {
        Ok(r) => page_response(StatusCode::OK, layout(&user, "Offline desk", "/console/offline", answered(&r))),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => {
            let body = html! {
                h1 { "Offline desk" }
                (offline_form(&user, &f.request_code, key, Some(&e.message)))
            };
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            page_response(status, layout(&user, "Offline desk", "/console/offline", body))
        }
    }
}

#[derive(Deserialize)]
struct ReceiptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    receipt_code: String,
}

fn receipt_form(user: &User, code: &str, error: Option<&str>) -> Markup {
    html! {
        section aria-labelledby="receipt" {
            h2 #receipt { "Deactivation receipt" }
            p { "When the customer moves the license off an air-gapped machine, " code { "tessera-agent deactivate-offline" }
                " prints a receipt: paste it here to end that activation and free its seat (now or when its lease ends, "
                "as the license's offline policy says)." }
            form method="post" action="/console/offline/receipt" {
                (csrf_field(user))
                div.field {
                    label for="receipt_code" { "Receipt code" }
                    textarea #receipt_code name="receipt_code" rows="4" required spellcheck="false"
                        aria-describedby=[error.map(|_| "receipt-error")] { (code) }
                    @if let Some(e) = error { p #receipt-error .error role="alert" { (e) } }
                }
                button type="submit" { "Take the receipt" }
            }
        }
    }
}

async fn offline_receipt(State(state): State<AppState>, user: User, Form(f): Form<ReceiptForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let req = tessera_core::protocol::ReceiptRequest { receipt_code: f.receipt_code.trim().to_string() };
    match state.services.offline_receipt(&user.ctx, req).await {
        Ok(r) => {
            let body = html! {
                h1 { "Offline desk" }
                section aria-labelledby="taken" {
                    h2 #taken { "Receipt taken" }
                    p.note role="status" #receipt-result { (r.message) }
                    dl.terms {
                        dt { "License" } dd { a href={ "/console/licenses/" (r.license_id) } { code { (r.license_id) } } }
                        dt { "Activation" } dd { code { (r.activation_id) } (if r.freed { " (ended now)" } else { " (had ended already)" }) }
                        dt { "Seat" } dd { @if let Some(t) = r.seat_held_until { "counted until " (date(t)) } @else { "free" } }
                    }
                }
                p { a href="/console/offline" { "Back to the offline desk" } }
            };
            page_response(StatusCode::OK, layout(&user, "Offline desk", "/console/offline", body))
        }
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => {
            let body = html! {
                h1 { "Offline desk" }
                (receipt_form(&user, &f.receipt_code, Some(&e.message)))
            };
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            page_response(status, layout(&user, "Offline desk", "/console/offline", body))
        }
    }
}

fn answered(r: &RespondResult) -> Markup {
    let s = &r.summary;
    html! {
        h1 { "Offline desk" }
        section aria-labelledby="summary" {
            h2 #summary { "Request" }
            dl.terms {
                dt { "License" } dd { a href={ "/console/licenses/" (s.license_id) } { code { (s.license_key_hint) } } }
                dt { "Device key" } dd { code { (s.device_public_key) } }
                dt { "Activation" } dd { code #activation-id { (s.activation_id) } (if s.reused { " (renewed)" } else { " (new)" }) }
                dt { "Seats" } dd { (s.seats_used) " of " (s.max_activations) " in use" }
                dt { "Features" } dd { (s.features.join(", ")) }
                dt { "Expires" } dd { (opt_date(s.expires_at)) }
                dt { "Lease until" } dd { (opt_date(s.lease_expires_at)) }
            }
        }
        section aria-labelledby="response" {
            h2 #response { "Response code" }
            p { "Read this to the customer, or let them scan it; they apply it with " code { "tessera-agent apply-code" } "." }
            textarea #response-code readonly rows="6" spellcheck="false" aria-label="Response code" { (r.response_code) }
            p { button type="button" data-copy="response-code" { "Copy" } }
            @if let Some(qr) = qr_svg(&r.response_code) { div.qr aria-label="QR code of the response code" { (qr) } }
        }
        p { a href="/console/offline" { "Answer another request" } }
    }
}
