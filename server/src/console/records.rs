//! The records staff read and keep: the audit log (filtered, newest first, and the chain verified with its first
//! broken link named) and security (blocked devices, block and unblock; suspicious-activity reports).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::pages::date;
use super::{csrf_field, error_page, layout, page_response, role_refusal, status_of, CsrfOnly, Form, Query, User};
use crate::error::AppError;
use crate::http::AppState;
use crate::services::audit::AuditQuery;
use crate::services::security::CreateBlock;
use crate::store::AuditEntry;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/audit", get(audit))
        .route("/console/audit/verify", get(verify))
        .route("/console/security", get(security))
        .route("/console/security/blocks", post(block))
        .route("/console/security/blocks/{id}/remove", post(unblock))
}

/// Audit entries as a table, newest first as given.
pub(super) fn audit_table(rows: &[AuditEntry]) -> Markup {
    html! {
        table.audit {
            thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Action" }
                th scope="col" { "Outcome" } th scope="col" { "Actor" } th scope="col" { "Target" }
                th scope="col" { "Details" } } }
            tbody {
                @for r in rows {
                    tr {
                        td { (r.seq) }
                        td { (date(r.entry.at)) }
                        td { code { (r.entry.action) } }
                        td { (r.entry.outcome) }
                        td { (r.entry.actor) }
                        td { @if let Some(t) = &r.entry.target { code { (t) } } }
                        td.details { (details(&r.entry.details)) }
                    }
                }
            }
        }
    }
}

/// An entry's details, compact: `key: value` pairs of a JSON object, at most 300 characters.
fn details(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {s}"),
                v => format!("{k}: {v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    };
    if text.chars().count() > 300 {
        text.chars().take(299).chain(['…']).collect()
    } else {
        text
    }
}

/// The audit filters, as the form sends them (every one may be empty).
#[derive(Deserialize, Serialize, Default, Clone)]
struct AuditSearch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    tenant_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    actor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target: String,
    /// First day shown (YYYY-MM-DD, UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    /// Last day shown (YYYY-MM-DD, UTC, inclusive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<i64>,
}

const AUDIT_PAGE: u32 = 100;

/// A day of the form (00:00 UTC), `days_after` days on; years 1 to 9999 (what the log's times can hold).
fn day(field: &'static str, v: &str, days_after: i64) -> Result<Option<DateTime<Utc>>, (&'static str, AppError)> {
    let refuse = || (field, AppError::invalid(format!("{field} must be a date from year 1 to 9999, YYYY-MM-DD")));
    match v.trim() {
        "" => Ok(None),
        d => {
            let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| refuse())?;
            if !(1..=9999).contains(&chrono::Datelike::year(&date)) {
                return Err(refuse());
            }
            let t = date.and_hms_opt(0, 0, 0).ok_or_else(refuse)?;
            let t = Utc.from_utc_datetime(&t).checked_add_signed(Duration::days(days_after)).ok_or_else(refuse)?;
            Ok(Some(t))
        }
    }
}

fn audit_query(s: &AuditSearch) -> Result<AuditQuery, (&'static str, AppError)> {
    let tenant_id = match s.tenant_id.trim() {
        "" => None,
        t => Some(Uuid::parse_str(t).map_err(|_| ("tenant_id", AppError::invalid("tenant must be a tenant id")))?),
    };
    let since = day("from", &s.from, 0)?;
    // The last day is included: entries before the start of the next one.
    let until = day("to", &s.to, 1)?;
    if let (Some(a), Some(b)) = (since, until) {
        if a >= b {
            return Err(("to", AppError::invalid("to must be on or after from")));
        }
    }
    for (field, v) in [("actor", &s.actor), ("action", &s.action), ("target", &s.target)] {
        if v.trim().chars().count() > 200 {
            return Err((field, AppError::invalid(format!("{field} is longer than 200 characters"))));
        }
    }
    let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    Ok(AuditQuery {
        before: Some(s.before.unwrap_or(i64::MAX)),
        limit: Some(AUDIT_PAGE),
        tenant_id,
        actor: text(&s.actor),
        action: text(&s.action),
        target: text(&s.target),
        since,
        until,
        ..AuditQuery::default()
    })
}

async fn audit(State(state): State<AppState>, user: User, Query(s): Query<AuditSearch>) -> Response {
    let read = match audit_query(&s) {
        Ok(q) => state.services.list_audit(&user.ctx, q).await.map_err(|e| (None, e)),
        Err((field, e)) => Err((Some(field), e)),
    };
    let field_error = |name: &str| match &read {
        Err((Some(f), e)) if *f == name => Some(e.message.clone()),
        _ => None,
    };
    let input = |name: &'static str, label: &str, kind: &str, value: &str| {
        let err = field_error(name);
        html! {
            div.field {
                label for=(name) { (label) }
                input id=(name) name=(name) type=(kind) value=(value)
                    aria-describedby=[err.as_ref().map(|_| format!("{name}-error"))];
                @if let Some(e) = &err { p.error id={ (name) "-error" } role="alert" { (e) } }
            }
        }
    };
    let next = match &read {
        Ok(rows) if rows.len() as u32 == AUDIT_PAGE => {
            rows.last().and_then(|r| serde_urlencoded::to_string(AuditSearch { before: Some(r.seq), ..s.clone() }).ok())
        }
        _ => None,
    };
    let body = html! {
        h1 { "Audit log" }
        form.search method="get" action="/console/audit" {
            @if user.role == crate::store::Role::VendorAdmin { (input("tenant_id", "Tenant id", "text", &s.tenant_id)) }
            (input("actor", "Actor", "text", &s.actor))
            (input("action", "Action (ending in . for a family: license.)", "text", &s.action))
            (input("target", "Target id", "text", &s.target))
            (input("from", "From (UTC)", "date", &s.from))
            (input("to", "To (UTC, inclusive)", "date", &s.to))
            button type="submit" { "Filter" }
        }
        @if user.role == crate::store::Role::VendorAdmin {
            p { a.button href="/console/audit/verify" { "Verify the chain" } }
        }
        @match &read {
            Ok(rows) if rows.is_empty() => { p { "No entries match." } }
            Ok(rows) => { (audit_table(rows)) }
            Err((None, e)) => { p.error role="alert" { (e.message) } }
            Err(_) => {}
        }
        @if let Some(n) = next { p { a href={ "/console/audit?" (n) } { "Older entries" } } }
    };
    let code = read.as_ref().err().map_or(StatusCode::OK, |(_, e)| status_of(e));
    page_response(code, layout(&user, "Audit log", "/console/audit", body))
}

async fn verify(State(state): State<AppState>, user: User) -> Response {
    let v = match state.services.verify_audit(&user.ctx).await {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let body = html! {
        h1 { "Audit chain" }
        @if v.ok {
            p.note role="status" #verified { "The chain holds: " (v.checked) " entries checked, none edited or missing." }
        } @else if let Some(b) = &v.first_broken {
            p.error role="alert" #broken {
                "The chain is broken at entry " (b.seq) ": " (b.reason) ". " (v.checked) " entries before it hold. "
                "Restore the database from a backup taken before the change, and find out who could write to it."
            }
            p { a href={ "/console/audit?before=" (b.seq + 1) } { "Entries up to the broken one" } }
        }
        p { a href="/console/audit" { "Back to the audit log" } }
    };
    page_response(StatusCode::OK, layout(&user, "Audit chain", "/console/audit", body))
}

// Security ---------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct BlockForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    device_public_key: String,
    #[serde(default)]
    fingerprint_hash: String,
    #[serde(default)]
    activation_id: String,
    #[serde(default)]
    reason: String,
}

async fn security(State(state): State<AppState>, user: User) -> Response {
    security_page(&state, &user, &BlockForm::default(), None).await
}

async fn security_page(state: &AppState, user: &User, f: &BlockForm, err: Option<&AppError>) -> Response {
    let blocks = state.services.list_blocks(&user.ctx).await;
    let reports = state.services.list_reports(&user.ctx).await;
    let refused = |r: &AppError| html! { p.note { "Not shown: " (r.message) } };
    let body = html! {
        h1 { "Security" }
        section aria-labelledby="blocks" {
            h2 #blocks { "Blocked devices" }
            @match &blocks {
                Ok(list) if list.is_empty() => { p { "No device is blocked." } }
                Ok(list) => {
                    table {
                        thead { tr { th scope="col" { "Device key or fingerprint" } th scope="col" { "Reason" }
                            th scope="col" { "Since" } @if user.may_admin() { th scope="col" { span.visually-hidden { "Actions" } } } } }
                        tbody {
                            @for b in list {
                                tr {
                                    td { code { @if let Some(k) = &b.device_public_key { (tessera_core::encoding::b64url(k)) }
                                        @else if let Some(h) = &b.fingerprint_hash { (h) } } }
                                    td { (b.reason) }
                                    td { (date(b.created_at)) }
                                    @if user.may_admin() {
                                        td {
                                            form method="post" action={ "/console/security/blocks/" (b.id) "/remove" } {
                                                (csrf_field(user))
                                                button.link type="submit" { "Unblock" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Err(e) => { (refused(e)) }
            }
            @if user.may_support() {
                h3 { "Block a device" }
                p.hint { "Give one of: the activation to end and block, the device's public key, or a fingerprint hash." }
                form method="post" action="/console/security/blocks" {
                    (csrf_field(user))
                    @if user.role == crate::store::Role::VendorAdmin {
                        div.field { label for="tenant_id" { "Tenant id (for a device key or fingerprint)" }
                            input #tenant_id name="tenant_id" value=(f.tenant_id) autocomplete="off"; }
                    }
                    div.field { label for="activation_id" { "Activation id" }
                        input #activation_id name="activation_id" value=(f.activation_id) autocomplete="off"; }
                    div.field { label for="device_public_key" { "Device public key (base64url)" }
                        input #device_public_key name="device_public_key" value=(f.device_public_key) autocomplete="off"; }
                    div.field { label for="fingerprint_hash" { "Fingerprint hash (64 hex)" }
                        input #fingerprint_hash name="fingerprint_hash" value=(f.fingerprint_hash) autocomplete="off"; }
                    div.field { label for="block-reason" { "Reason" }
                        input #block-reason name="reason" value=(f.reason) required maxlength="200"
                            aria-describedby=[err.map(|_| "block-error")]; }
                    @if let Some(e) = err { p #block-error .error role="alert" { (e.message) } }
                    button type="submit" { "Block" }
                }
            }
        }
        section aria-labelledby="reports" {
            h2 #reports { "Suspicious activity" }
            @match &reports {
                Ok(list) if list.is_empty() => { p { "Nothing reported." } }
                Ok(list) => {
                    table {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "License" }
                            th scope="col" { "Activation" } th scope="col" { "Details" } } }
                        tbody {
                            @for r in list.iter().rev().take(200) {
                                tr {
                                    td { (date(r.created_at)) }
                                    td { code { (r.kind) } }
                                    td { @if let Some(l) = r.license_id { a href={ "/console/licenses/" (l) } { code { (l) } } } }
                                    td { @if let Some(a) = r.activation_id { code { (a) } } }
                                    td.details { (details(&r.details)) }
                                }
                            }
                        }
                    }
                }
                Err(e) => { (refused(e)) }
            }
        }
    };
    let code = err.map_or(StatusCode::OK, status_of);
    page_response(code, layout(user, "Security", "/console/security", body))
}

async fn block(State(state): State<AppState>, user: User, Form(f): Form<BlockForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let id = |field: &str, v: &str| match text(v).map(|a| Uuid::parse_str(&a)) {
        None => Ok(None),
        Some(Ok(id)) => Ok(Some(id)),
        Some(Err(_)) => Err(AppError::invalid(format!("{field} must be an id (a UUID), or left empty"))),
    };
    let (activation_id, tenant_id) = match (id("activation id", &f.activation_id), id("tenant id", &f.tenant_id)) {
        (Ok(a), Ok(t)) => (a, t),
        (Err(e), _) | (_, Err(e)) => return security_page(&state, &user, &f, Some(&e)).await,
    };
    let req = CreateBlock {
        tenant_id,
        device_public_key: text(&f.device_public_key),
        fingerprint_hash: text(&f.fingerprint_hash),
        activation_id,
        reason: f.reason.clone(),
    };
    match state.services.create_block(&user.ctx, req).await {
        Ok(_) => Redirect::to("/console/security").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => security_page(&state, &user, &f, Some(&e)).await,
    }
}

async fn unblock(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return error_page(&AppError::not_found("block"));
    };
    match state.services.remove_block(&user.ctx, id).await {
        Ok(()) => Redirect::to("/console/security").into_response(),
        Err(e) => error_page(&e),
    }
}
