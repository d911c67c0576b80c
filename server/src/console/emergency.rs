//! The emergency desk: support issues a short-lived code when nothing else works. The license is picked by key or
//! id, or found from the device's request code (which also binds the code to that device); a reason is required
//! and kept in the audit log; the validity is the policy's unless shortened or lengthened within its bounds. The
//! code is shown once (the server keeps no readable copy a page could show again) with the count left in the
//! license's 30-day window.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Duration;
use maud::{html, Markup};
use serde::Deserialize;
use tessera_core::protocol::ErrorCode;
use uuid::Uuid;

use super::pages::{date, opt_date};
use super::{
    csrf_field, error_page, layout, page_response, qr_svg, role_refusal, show_once, status_of, Form, Once, Query, User,
};
use crate::error::AppError;
use crate::http::AppState;
use crate::services::licenses::{effective_status, KeyLookup, LicenseView};
use crate::services::offline::{IssueEmergency, IssuedEmergency};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/console/emergency", get(desk).post(issue))
}

#[derive(Deserialize, Default)]
struct DeskQuery {
    #[serde(default)]
    license: Option<String>,
}

#[derive(Deserialize, Default)]
struct IssueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    license: String,
    #[serde(default)]
    request_code: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    validity_hours: String,
}

fn may_not(user: &User) -> Response {
    error_page(&AppError::forbidden(format!(
        "a {} user may not issue emergency codes: sign in with a support or admin token",
        user.role.as_str()
    )))
}

/// A license by id or by key, within the user's tenant.
async fn find(state: &AppState, user: &User, text: &str) -> Result<LicenseView, AppError> {
    match Uuid::parse_str(text) {
        Ok(id) => state.services.get_license(&user.ctx, id).await,
        Err(_) => state.services.get_license_by_key(&user.ctx, KeyLookup { license_key: text.to_string() }).await,
    }
}

async fn desk(State(state): State<AppState>, user: User, Query(q): Query<DeskQuery>) -> Response {
    if !user.may_support() {
        return may_not(&user);
    }
    let f = IssueForm { license: q.license.clone().unwrap_or_default(), ..IssueForm::default() };
    // Only an id in the URL: a license key must not land in a URL, the history or a proxy's log.
    let picked = match q.license.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        Some(l) if Uuid::parse_str(l).is_err() => {
            let e = AppError::invalid("open the desk from a license's page, or type the key in the form");
            return form_page(&state, &user, &IssueForm::default(), None, Some((Field::License, e))).await;
        }
        Some(l) => match find(&state, &user, l).await {
            Ok(v) => Some(v),
            Err(e) => return form_page(&state, &user, &f, None, Some((Field::License, e))).await,
        },
        None => None,
    };
    form_page(&state, &user, &f, picked.as_ref(), None).await
}

/// The field a refusal concerns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    License,
    RequestCode,
    Reason,
    Validity,
    Form,
}

impl Field {
    fn of(e: &AppError) -> Field {
        match e.code {
            ErrorCode::InvalidCode | ErrorCode::CodeMismatch | ErrorCode::EmergencyBindingRequired => {
                Field::RequestCode
            }
            ErrorCode::LicenseNotFound | ErrorCode::NotFound | ErrorCode::InvalidLicenseKey => Field::License,
            ErrorCode::ValidationFailed if e.message.starts_with("reason") => Field::Reason,
            ErrorCode::ValidationFailed if e.message.starts_with("validity") => Field::Validity,
            _ => Field::Form,
        }
    }

    fn id(self) -> &'static str {
        match self {
            Field::License => "license-error",
            Field::RequestCode => "request-error",
            Field::Reason => "reason-error",
            Field::Validity => "validity-error",
            Field::Form => "form-error",
        }
    }
}

/// What the license's policy allows now: codes issued in the last 30 days, and the limit.
async fn window(state: &AppState, user: &User, v: &LicenseView) -> Option<(usize, u32)> {
    let since = state.services.now() - Duration::days(30);
    let list = state.services.list_emergency(&user.ctx, v.license.id).await.ok()?;
    Some((list.iter().filter(|e| e.issued_at >= since).count(), v.emergency.max_per_30_days))
}

async fn form_page(
    state: &AppState,
    user: &User,
    f: &IssueForm,
    picked: Option<&LicenseView>,
    err: Option<(Field, AppError)>,
) -> Response {
    let beside = |field: Field| -> Option<Markup> {
        err.as_ref()
            .filter(|(f, _)| *f == field)
            .map(|(f, e)| html! { p.error id=(f.id()) role="alert" { (e.message) } })
    };
    let described = |field: Field| err.as_ref().filter(|(f, _)| *f == field).map(|(f, _)| f.id());
    let counts = match picked {
        Some(v) => window(state, user, v).await,
        None => None,
    };
    let now = state.services.now();
    let body = html! {
        h1 { "Emergency desk" }
        p { "For a customer who cannot activate and cannot wait: the code unlocks the license on a device for a few "
            "hours. Prefer the offline desk when the customer can send a request code and wait for the answer." }
        @if let Some(v) = picked {
            section aria-labelledby="picked" {
                h2 #picked { "License " code { (v.key_hint) } }
                dl.terms {
                    dt { "Status" } dd { (effective_status(&v.license, now).as_str()) }
                    dt { "Expires" } dd { (opt_date(v.license.expires_at)) }
                    dt { "Emergency codes" } dd { @if v.emergency.enabled { "allowed" } @else { "disabled by the template" } }
                    dt { "Validity" } dd { (v.emergency.validity_hours) " hours by default, at most "
                        (tessera_core::model::EmergencyPolicy::MAX_VALIDITY_HOURS) }
                    dt { "Bound to a device" } dd { @if v.emergency.require_binding { "required: paste the device's request code" } @else { "optional" } }
                    @if let Some((n, max)) = counts {
                        dt { "Last 30 days" } dd #window { (n) " of " (max) " issued" }
                    }
                }
            }
        }
        form method="post" action="/console/emergency" {
            (csrf_field(user))
            div.field {
                label for="license" { "License key or id (may stay empty when the request code is given)" }
                input #license name="license" value=(f.license) autocomplete="off" aria-describedby=[described(Field::License)];
                @if let Some(e) = beside(Field::License) { (e) }
            }
            div.field {
                label for="request_code" { "Request code of the device (binds the code to it)" }
                textarea #request_code name="request_code" rows="5" spellcheck="false"
                    aria-describedby=[described(Field::RequestCode)] { (f.request_code) }
                @if let Some(e) = beside(Field::RequestCode) { (e) }
            }
            div.field {
                label for="reason" { "Reason (kept in the audit log)" }
                input #reason name="reason" value=(f.reason) required maxlength="500" aria-describedby=[described(Field::Reason)];
                @if let Some(e) = beside(Field::Reason) { (e) }
            }
            div.field {
                label for="validity_hours" { "Valid for hours (empty: the license's policy)" }
                input #validity_hours name="validity_hours" inputmode="numeric" value=(f.validity_hours)
                    aria-describedby=[described(Field::Validity)];
                @if let Some(e) = beside(Field::Validity) { (e) }
            }
            @if let Some(e) = beside(Field::Form) { (e) }
            button type="submit" { "Issue the code" }
        }
    };
    let code = err.as_ref().map_or(StatusCode::OK, |(_, e)| status_of(e));
    page_response(code, layout(user, "Emergency desk", "/console/emergency", body))
}

async fn issue(State(state): State<AppState>, user: User, Form(f): Form<IssueForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    if !user.may_support() {
        return may_not(&user);
    }
    let svc = &state.services;
    let code = f.request_code.trim();
    let license = f.license.trim();
    let fail = |field: Field, e: AppError, picked: Option<LicenseView>| {
        let state = state.clone();
        let f = &f;
        let user = &user;
        async move { form_page(&state, user, f, picked.as_ref(), Some((field, e))).await }
    };
    let view = if !license.is_empty() {
        match find(&state, &user, license).await {
            Ok(v) => v,
            Err(e) => return fail(Field::License, e, None).await,
        }
    } else if !code.is_empty() {
        let found = match svc.license_of_request(&user.ctx, code).await {
            Ok(id) => svc.get_license(&user.ctx, id).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(v) => v,
            Err(e) if role_refusal(&e) => return error_page(&e),
            // Found from the code alone: whatever is wrong is wrong with the code.
            Err(e) => return fail(Field::RequestCode, e, None).await,
        }
    } else {
        let e = AppError::invalid("give the license key or id, or the device's request code");
        return fail(Field::License, e, None).await;
    };
    let validity_hours = match f.validity_hours.trim() {
        "" => None,
        h => match h.parse::<u32>() {
            Ok(h) => Some(h),
            Err(_) => {
                let e = AppError::invalid("validity_hours must be a whole number of hours, such as 24");
                return fail(Field::Validity, e, Some(view)).await;
            }
        },
    };
    let req = IssueEmergency {
        reason: f.reason.clone(),
        validity_hours,
        request_code: (!code.is_empty()).then(|| code.to_string()),
    };
    match svc.issue_emergency(&user.ctx, view.license.id, req).await {
        Ok(issued) => {
            let body = issued_page(&view, &issued);
            show_once(&state, &user, Once { title: "Emergency code".into(), nav: "/console/emergency", body })
        }
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => fail(Field::of(&e), e, Some(view)).await,
    }
}

fn issued_page(v: &LicenseView, r: &IssuedEmergency) -> Markup {
    html! {
        h1 { "Emergency code" }
        p.warning { "Shown once: copy it now. The console does not show an issued code again." }
        dl.terms {
            dt { "License" } dd { a href={ "/console/licenses/" (v.license.id) } { code { (v.key_hint) } } }
            dt { "Serial" } dd #serial { (r.serial) }
            dt { "Valid until" } dd { (date(r.expires_at)) }
            dt { "Bound to a device" } dd { (if r.bound_device.is_some() { "yes" } else { "no: any device of the license" }) }
            dt { "Reason" } dd { (r.reason) }
            dt { "Left in the 30-day window" } dd #left { (r.left_in_window) " (" (r.issued_in_window) " issued)" }
        }
        section aria-labelledby="code" {
            h2 #code { "Code" }
            p { "The customer applies it with " code { "tessera-agent apply-code" } "." }
            textarea #emergency-code readonly rows="4" spellcheck="false" aria-label="Emergency code" { (r.code) }
            p { button type="button" data-copy="emergency-code" { "Copy" } }
            @if let Some(qr) = qr_svg(&r.code) { div.qr aria-label="QR code of the emergency code" { (qr) } }
        }
        p { a href={ "/console/licenses/" (v.license.id) } { "Back to the license" } }
    }
}
