//! What staff do to a license from its page: renew, suspend, reinstate, revoke and transfer (each behind a page
//! that says what will happen and asks for what the service needs), deactivating one activation, and the signed
//! license file. Every action is the API's service call, audited under the console user.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::{NaiveDate, TimeZone, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use tessera_core::LicenseStatus;
use uuid::Uuid;

use super::pages::{date, opt_date};
use super::{csrf_field, error_page, layout, page_response, role_refusal, status_of, CsrfOnly, Form, User};
use crate::error::AppError;
use crate::http::AppState;
use crate::services::licenses::{effective_status, LicenseView, RenewLicense, StatusChange, TransferLicense};
use crate::services::PageQuery;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/licenses/{id}/act/{action}", get(action_page).post(action_post))
        .route("/console/licenses/{id}/file", get(license_file))
        .route("/console/licenses/{id}/activations/{activation}/deactivate", get(deactivate_page).post(deactivate))
}

/// A change of a license's terms or status, as the console offers it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Action {
    Renew,
    Suspend,
    Reinstate,
    Revoke,
    Transfer,
}

impl Action {
    pub(super) const ALL: [Action; 5] =
        [Action::Renew, Action::Suspend, Action::Reinstate, Action::Transfer, Action::Revoke];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.slug() == s)
    }

    pub(super) fn slug(self) -> &'static str {
        match self {
            Action::Renew => "renew",
            Action::Suspend => "suspend",
            Action::Reinstate => "reinstate",
            Action::Revoke => "revoke",
            Action::Transfer => "transfer",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Action::Renew => "Renew",
            Action::Suspend => "Suspend",
            Action::Reinstate => "Reinstate",
            Action::Revoke => "Revoke",
            Action::Transfer => "Transfer",
        }
    }

    /// The note on the license page after it was done.
    pub(super) fn done(self) -> &'static str {
        match self {
            Action::Renew => "The license was renewed.",
            Action::Suspend => "The license was suspended.",
            Action::Reinstate => "The license was reinstated.",
            Action::Revoke => "The license was revoked.",
            Action::Transfer => "The license was transferred.",
        }
    }

    fn consequence(self) -> &'static str {
        match self {
            Action::Renew => {
                "The new expiry reaches devices at their next heartbeat; offline devices keep the expiry \
                              of their grant until they are answered again."
            }
            Action::Suspend => {
                "Every device is refused at its next check with the server; devices offline keep \
                                working until their lease ends. Reinstating undoes it."
            }
            Action::Reinstate => "Devices work again at their next check with the server.",
            Action::Revoke => {
                "Revoking is final: no device can use the license again and it cannot be renewed or \
                               reinstated. Devices offline keep working until their lease ends."
            }
            Action::Transfer => {
                "The license moves to another customer of this tenant; the template's transfer \
                                 policy says whether its activations end."
            }
        }
    }

    /// Whether the action applies to a license in this (effective) status.
    pub(super) fn fits(self, status: LicenseStatus) -> bool {
        use LicenseStatus::*;
        match self {
            _ if status == Revoked => false,
            Action::Suspend => status == Active,
            Action::Reinstate => status == Suspended,
            Action::Renew | Action::Revoke | Action::Transfer => true,
        }
    }
}

#[derive(Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    expires_on: String,
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    confirm: String,
}

/// A refusal and the field it concerns (`None`: the form as a whole).
struct FieldError {
    field: Option<&'static str>,
    error: AppError,
}

fn field_error(field: Option<&'static str>, error: AppError) -> FieldError {
    FieldError { field, error }
}

async fn license_for(state: &AppState, user: &User, id: &str) -> Result<LicenseView, Response> {
    let id = Uuid::parse_str(id).map_err(|_| error_page(&AppError::not_found("license")))?;
    state.services.get_license(&user.ctx, id).await.map_err(|e| error_page(&e))
}

fn may_not_change(user: &User) -> Response {
    error_page(&AppError::forbidden(format!(
        "a {} user may not change licenses: sign in with a tenant-admin or vendor-admin token",
        user.role.as_str()
    )))
}

async fn action_page(
    State(state): State<AppState>,
    user: User,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return error_page(&AppError::not_found("license action"));
    };
    if !user.may_admin() {
        return may_not_change(&user);
    }
    let view = match license_for(&state, &user, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    action_form(&state, &user, &view, action, &ActionForm::default(), None).await
}

async fn action_post(
    State(state): State<AppState>,
    user: User,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let Some(action) = Action::parse(&action) else {
        return error_page(&AppError::not_found("license action"));
    };
    if !user.may_admin() {
        return may_not_change(&user); // before any check of the form, so a refusal says what matters
    }
    let view = match license_for(&state, &user, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match perform(&state, &user, &view, action, &f).await {
        Ok(()) => {
            Redirect::to(&format!("/console/licenses/{}?done={}", view.license.id, action.slug())).into_response()
        }
        Err(e) if role_refusal(&e.error) => error_page(&e.error),
        Err(e) => action_form(&state, &user, &view, action, &f, Some(&e)).await,
    }
}

async fn perform(
    state: &AppState,
    user: &User,
    view: &LicenseView,
    action: Action,
    f: &ActionForm,
) -> Result<(), FieldError> {
    let svc = &state.services;
    let id = view.license.id;
    let reason = || StatusChange { reason: Some(f.reason.trim().to_string()).filter(|r| !r.is_empty()) };
    let done = match action {
        Action::Renew => {
            let days = match f.days.trim() {
                "" => None,
                d => Some(d.parse::<u32>().map_err(|_| {
                    field_error(Some("days"), AppError::invalid("days must be a whole number of days, such as 365"))
                })?),
            };
            let expires_at = match f.expires_on.trim() {
                "" => None,
                d => {
                    let day = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                        field_error(Some("expires_on"), AppError::invalid("the new expiry must be a date, YYYY-MM-DD"))
                    })?;
                    Some(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default()))
                }
            };
            let field = if days.is_some() || expires_at.is_none() { "days" } else { "expires_on" };
            svc.renew_license(&user.ctx, id, RenewLicense { days, expires_at })
                .await
                .map_err(|e| field_error(Some(field), e))
        }
        Action::Suspend => Ok(svc.set_license_status(&user.ctx, id, LicenseStatus::Suspended, reason()).await?),
        Action::Reinstate => Ok(svc.set_license_status(&user.ctx, id, LicenseStatus::Active, reason()).await?),
        Action::Revoke => {
            // Final, so the user types the key hint shown on the page: a slip of the mouse does not revoke.
            if f.confirm.trim() != view.key_hint {
                return Err(field_error(
                    Some("confirm"),
                    AppError::invalid(format!("type the license's key hint, {}, to revoke it", view.key_hint)),
                ));
            }
            Ok(svc.set_license_status(&user.ctx, id, LicenseStatus::Revoked, reason()).await?)
        }
        Action::Transfer => {
            let customer_id = Uuid::parse_str(f.customer_id.trim()).map_err(|_| {
                field_error(Some("customer_id"), AppError::invalid("choose the customer to transfer the license to"))
            })?;
            if Some(customer_id) == view.license.customer_id {
                return Err(field_error(
                    Some("customer_id"),
                    AppError::invalid("the license already belongs to this customer: choose another"),
                ));
            }
            svc.transfer_license(&user.ctx, id, TransferLicense { customer_id })
                .await
                .map_err(|e| field_error(Some("customer_id"), e))
        }
    };
    done.map(|_| ())
}

impl From<AppError> for FieldError {
    fn from(error: AppError) -> Self {
        FieldError { field: None, error }
    }
}

/// An error beside its field: the `<p>` the field's `aria-describedby` names.
fn beside(err: Option<&FieldError>, field: &'static str) -> Option<Markup> {
    err.filter(|e| e.field == Some(field))
        .map(|e| html! { p.error id={ (field) "-error" } role="alert" { (e.error.message) } })
}

fn described(err: Option<&FieldError>, field: &'static str) -> Option<String> {
    err.filter(|e| e.field == Some(field)).map(|_| format!("{field}-error"))
}

async fn action_form(
    state: &AppState,
    user: &User,
    view: &LicenseView,
    action: Action,
    f: &ActionForm,
    err: Option<&FieldError>,
) -> Response {
    let l = &view.license;
    let now = state.services.now();
    let status = effective_status(l, now);
    let customers = match action {
        Action::Transfer => {
            Some(state.services.list_customers(&user.ctx, PageQuery { limit: Some(500), cursor: None }).await)
        }
        _ => None,
    };
    let general = err.filter(|e| e.field.is_none());
    let body = html! {
        h1 { (action.label()) " license " code { (view.key_hint) } }
        dl.terms {
            dt { "Status" } dd { (status.as_str()) }
            dt { "Expires" } dd { (opt_date(l.expires_at)) }
            dt { "Customer" } dd { @if let Some(c) = l.customer_id { code { (c) } } @else { "none" } }
            dt { "Seats" } dd { (view.seats_used.unwrap_or(0)) " of " (l.max_activations) " in use" }
        }
        p.warning { (action.consequence()) }
        @if !action.fits(status) {
            p.error role="alert" { "A " (status.as_str().to_lowercase()) " license cannot be "
                (action.done().trim_start_matches("The license was ").trim_end_matches('.')) "." }
        }
        form method="post" action={ "/console/licenses/" (l.id) "/act/" (action.slug()) } {
            (csrf_field(user))
            @match action {
                Action::Renew => {
                    div.field {
                        label for="days" { "Extend by days (from the later of today and the current expiry)" }
                        input #days name="days" inputmode="numeric" value=(f.days) aria-describedby=[described(err, "days")];
                        @if let Some(e) = beside(err, "days") { (e) }
                    }
                    div.field {
                        label for="expires_on" { "Or a new expiry date (the license ends at 00:00 UTC that day)" }
                        input #expires_on name="expires_on" type="date" value=(f.expires_on)
                            aria-describedby=[described(err, "expires_on")];
                        @if let Some(e) = beside(err, "expires_on") { (e) }
                    }
                }
                Action::Transfer => {
                    div.field {
                        label for="customer_id" { "New customer" }
                        @match &customers {
                            Some(Ok(page)) => {
                                select #customer_id name="customer_id" required aria-describedby=[described(err, "customer_id")] {
                                    option value="" { "choose…" }
                                    @for c in page.items.iter().filter(|c| Some(c.id) != l.customer_id) {
                                        option value=(c.id) selected[f.customer_id == c.id.to_string()] {
                                            (c.name) @if let Some(m) = &c.email { " <" (m) ">" }
                                        }
                                    }
                                }
                                @if page.next_cursor.is_some() { p.hint { "The first 500 customers are listed." } }
                            }
                            Some(Err(e)) => { p.error role="alert" { (e.message) } }
                            None => {}
                        }
                        @if let Some(e) = beside(err, "customer_id") { (e) }
                    }
                }
                _ => {
                    div.field {
                        label for="reason" { "Reason (kept in the audit log)" }
                        input #reason name="reason" value=(f.reason) maxlength="500";
                    }
                }
            }
            @if action == Action::Revoke {
                div.field {
                    label for="confirm" { "Type the key hint " code { (view.key_hint) } " to confirm" }
                    input #confirm name="confirm" autocomplete="off" required value=(f.confirm)
                        aria-describedby=[described(err, "confirm")];
                    @if let Some(e) = beside(err, "confirm") { (e) }
                }
            }
            @if let Some(e) = general { p #form-error .error role="alert" { (e.error.message) } }
            div.buttons {
                button type="submit" class=[(action == Action::Revoke).then_some("danger")] { (action.label()) }
                a href={ "/console/licenses/" (l.id) } { "Cancel" }
            }
        }
    };
    let code = err.map_or(StatusCode::OK, |e| status_of(&e.error));
    let title = format!("{} license {}", action.label(), view.key_hint);
    page_response(code, layout(user, &title, "/console/licenses", body))
}

async fn license_file(State(state): State<AppState>, user: User, Path(id): Path<String>) -> Response {
    let view = match license_for(&state, &user, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state.services.license_file(&user.ctx, view.license.id).await {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"license-{}.lic\"", view.license.id)),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            text,
        )
            .into_response(),
        Err(e) => error_page(&e),
    }
}

/// The activation of the license with this id (not found when it belongs to another license or tenant).
async fn activation_of(
    state: &AppState,
    user: &User,
    id: &str,
    activation: &str,
) -> Result<(LicenseView, crate::store::Activation), Response> {
    let view = license_for(state, user, id).await?;
    let not_found = || error_page(&AppError::not_found("activation"));
    let aid = Uuid::parse_str(activation).map_err(|_| not_found())?;
    let list = state.services.list_license_activations(&user.ctx, view.license.id).await.map_err(|e| error_page(&e))?;
    let a = list.into_iter().find(|a| a.id == aid).ok_or_else(not_found)?;
    Ok((view, a))
}

fn may_not_deactivate(user: &User) -> Response {
    error_page(&AppError::forbidden(format!(
        "a {} user may not deactivate devices: sign in with a support or admin token",
        user.role.as_str()
    )))
}

async fn deactivate_page(
    State(state): State<AppState>,
    user: User,
    Path((id, activation)): Path<(String, String)>,
) -> Response {
    if !user.may_support() {
        return may_not_deactivate(&user);
    }
    let (view, a) = match activation_of(&state, &user, &id, &activation).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = html! {
        h1 { "Deactivate a device of " code { (view.key_hint) } }
        dl.terms {
            dt { "Activation" } dd { code { (a.id) } }
            dt { "Kind" } dd { (if a.offline { "offline" } else { "online" }) }
            dt { "Last seen" } dd { (date(a.last_seen_at)) }
            dt { "Lease until" } dd { (opt_date(a.lease_expires_at)) }
        }
        p.warning {
            @if a.offline {
                "An offline device cannot be told: it keeps working until its grant's lease ends, and its seat stays \
                 counted until then."
            } @else {
                "The device is refused at its next heartbeat and its seat is free at once."
            }
        }
        form method="post" action={ "/console/licenses/" (view.license.id) "/activations/" (a.id) "/deactivate" } {
            (csrf_field(&user))
            div.buttons {
                button type="submit" { "Deactivate" }
                a href={ "/console/licenses/" (view.license.id) } { "Cancel" }
            }
        }
    };
    page_response(StatusCode::OK, layout(&user, "Deactivate a device", "/console/licenses", body))
}

async fn deactivate(
    State(state): State<AppState>,
    user: User,
    Path((id, activation)): Path<(String, String)>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    if !user.may_support() {
        return may_not_deactivate(&user);
    }
    let (view, a) = match activation_of(&state, &user, &id, &activation).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match state.services.admin_deactivate(&user.ctx, a.id).await {
        Ok(v) => {
            let message = v["message"].as_str().unwrap_or("The activation has ended and its seat is free.");
            let body = html! {
                h1 { "Device deactivated" }
                p.note role="status" #deactivated { (message) }
                p { a href={ "/console/licenses/" (view.license.id) } { "Back to license " (view.key_hint) } }
            };
            page_response(StatusCode::OK, layout(&user, "Device deactivated", "/console/licenses", body))
        }
        Err(e) => error_page(&e),
    }
}
