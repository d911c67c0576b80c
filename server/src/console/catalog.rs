//! What an admin sets up: tenants (vendor admin), customers, products, templates (create, edit, duplicate), new
//! licenses from a template, and API tokens (the secret shown once, list, revoke). Each screen is a list and a
//! form on the API's services; a refusal is shown above the form's button, in the service's words, and the form
//! keeps what was typed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::LicenseType;
use uuid::Uuid;

use super::pages::date;
use super::{
    csrf_field, error_page, layout, page, page_response, role_refusal, show_once, status_of, CsrfOnly, Form, Once,
    Query, User,
};
use crate::error::AppError;
use crate::http::AppState;
use crate::services::admin::{CreateCustomer, CreateProduct, CreateTenant, CreateToken, DuplicateTemplate};
use crate::services::licenses::CreateLicense;
use crate::services::users::{CreateConsoleUser, MIN_PASSWORD, USER_TOKEN_PREFIX};
use crate::services::PageQuery;
use crate::store::{Page, Role};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/tenants", get(tenants).post(create_tenant))
        .route("/console/customers", get(customers).post(create_customer))
        .route("/console/products", get(products).post(create_product))
        .route("/console/templates", get(templates).post(create_template))
        .route("/console/templates/{id}", get(template).post(update_template))
        .route("/console/templates/{id}/duplicate", post(duplicate_template))
        .route("/console/licenses/new", get(new_license).post(create_license))
        .route("/console/tokens", get(tokens).post(create_token))
        .route("/console/tokens/{id}/revoke", post(revoke_token))
        .route("/console/users", get(users).post(create_user))
        .route("/console/users/{id}/password", post(reset_password))
        .route("/console/users/{id}/revoke", post(revoke_user))
}

/// How many rows a list shows, and pages by.
const PAGE: u32 = 100;

#[derive(Deserialize, Default)]
struct Paging {
    #[serde(default)]
    cursor: Option<String>,
}

fn paging(p: &Paging) -> PageQuery {
    PageQuery { cursor: p.cursor.clone(), limit: Some(PAGE) }
}

/// A list's rows, its next page, or why there are none.
fn rows<T>(page: &Result<Page<T>, AppError>, path: &str, none: &str, table: impl FnOnce(&[T]) -> Markup) -> Markup {
    match page {
        Ok(p) if p.items.is_empty() => html! { p { (none) } },
        Ok(p) => html! {
            (table(&p.items))
            @if let Some(c) = &p.next_cursor { p { a href={ (path) "?cursor=" (c) } { "Next page" } } }
        },
        Err(e) => html! { p.error role="alert" { (e.message) } },
    }
}

/// An admin's form: a heading, its fields, the refusal (if any) above the button.
fn create_form(user: &User, action: &str, title: &str, button: &str, err: Option<&AppError>, fields: Markup) -> Markup {
    html! {
        @if user.may_admin() {
            section aria-labelledby="create" {
                h2 #create { (title) }
                form method="post" action=(action) {
                    (csrf_field(user))
                    (fields)
                    @if let Some(e) = err { p #form-error .error role="alert" { (e.message) } }
                    button type="submit" { (button) }
                }
            }
        }
    }
}

fn text_field(id: &str, label: &str, value: &str, required: bool) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(id) value=(value) required[required] autocomplete="off";
        }
    }
}

/// The tenant field, for a vendor admin (whose token belongs to no tenant); others act in their own tenant.
fn tenant_field(user: &User, value: &str) -> Markup {
    html! {
        @if user.role == Role::VendorAdmin {
            (text_field("tenant_id", "Tenant id (a vendor admin acts for one tenant)", value, false))
        }
    }
}

fn opt_uuid(field: &str, v: &str) -> Result<Option<Uuid>, AppError> {
    match v.trim() {
        "" => Ok(None),
        t => Uuid::parse_str(t).map(Some).map_err(|_| AppError::invalid(format!("{field} must be an id (a UUID)"))),
    }
}

fn opt_text(v: &str) -> Option<String> {
    Some(v.trim().to_string()).filter(|v| !v.is_empty())
}

// Tenants ------------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

async fn tenants(State(state): State<AppState>, user: User, Query(p): Query<Paging>) -> Response {
    tenants_page(&state, &user, &p, &NameForm::default(), None).await
}

async fn tenants_page(state: &AppState, user: &User, p: &Paging, f: &NameForm, err: Option<&AppError>) -> Response {
    let list = state.services.list_tenants(&user.ctx, paging(p)).await;
    let body = html! {
        h1 { "Tenants" }
        (rows(&list, "/console/tenants", "No tenants yet.", |items| html! {
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Created" } } }
                tbody { @for t in items { tr { td { (t.name) } td { code { (t.id) } } td { (date(t.created_at)) } } } } }
        }))
        @if user.role == Role::VendorAdmin {
            (create_form(user, "/console/tenants", "New tenant", "Create tenant", err, text_field("name", "Name", &f.name, true)))
        }
    };
    page(user, "Tenants", "/console/tenants", body, err)
}

async fn create_tenant(State(state): State<AppState>, user: User, Form(f): Form<NameForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let r = state.services.create_tenant(&user.ctx, CreateTenant { name: f.name.clone() }).await;
    match r {
        Ok(_) => Redirect::to("/console/tenants").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => tenants_page(&state, &user, &Paging::default(), &f, Some(&e)).await,
    }
}

// Customers ----------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct CustomerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

async fn customers(State(state): State<AppState>, user: User, Query(p): Query<Paging>) -> Response {
    customers_page(&state, &user, &p, &CustomerForm::default(), None).await
}

async fn customers_page(
    state: &AppState,
    user: &User,
    p: &Paging,
    f: &CustomerForm,
    err: Option<&AppError>,
) -> Response {
    let list = state.services.list_customers(&user.ctx, paging(p)).await;
    let body = html! {
        h1 { "Customers" }
        (rows(&list, "/console/customers", "No customers yet.", |items| html! {
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Id" } th scope="col" { "Licenses" } } }
                tbody { @for c in items { tr { td { (c.name) } td { (c.email.as_deref().unwrap_or("")) } td { code { (c.id) } }
                    td { a href={ "/console/licenses?customer_id=" (c.id) } { "Licenses" } } } } } }
        }))
        (create_form(user, "/console/customers", "New customer", "Create customer", err, html! {
            (tenant_field(user, &f.tenant_id))
            (text_field("name", "Name", &f.name, true))
            (text_field("email", "Email (optional)", &f.email, false))
        }))
    };
    page(user, "Customers", "/console/customers", body, err)
}

async fn create_customer(State(state): State<AppState>, user: User, Form(f): Form<CustomerForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let r = match opt_uuid("tenant id", &f.tenant_id) {
        Ok(tenant_id) => {
            let req = CreateCustomer { tenant_id, name: f.name.clone(), email: opt_text(&f.email), metadata: None };
            state.services.create_customer(&user.ctx, req).await
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(_) => Redirect::to("/console/customers").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => customers_page(&state, &user, &Paging::default(), &f, Some(&e)).await,
    }
}

// Products -----------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct ProductForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    code: String,
}

async fn products(State(state): State<AppState>, user: User, Query(p): Query<Paging>) -> Response {
    products_page(&state, &user, &p, &ProductForm::default(), None).await
}

async fn products_page(state: &AppState, user: &User, p: &Paging, f: &ProductForm, err: Option<&AppError>) -> Response {
    let list = state.services.list_products(&user.ctx, paging(p)).await;
    let body = html! {
        h1 { "Products" }
        (rows(&list, "/console/products", "No products yet.", |items| html! {
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Code" } th scope="col" { "Product id (built into the agent)" } } }
                tbody { @for p in items { tr { td { (p.name) } td { code { (p.code) } } td { code { (p.id) } } } } } }
        }))
        (create_form(user, "/console/products", "New product", "Create product", err, html! {
            (tenant_field(user, &f.tenant_id))
            (text_field("name", "Name", &f.name, true))
            (text_field("code", "Code (optional: made from the name)", &f.code, false))
        }))
    };
    page(user, "Products", "/console/products", body, err)
}

async fn create_product(State(state): State<AppState>, user: User, Form(f): Form<ProductForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let r = match opt_uuid("tenant id", &f.tenant_id) {
        Ok(tenant_id) => {
            let req =
                CreateProduct { tenant_id, id: None, name: f.name.clone(), code: opt_text(&f.code), metadata: None };
            state.services.create_product(&user.ctx, req).await
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(_) => Redirect::to("/console/products").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => products_page(&state, &user, &Paging::default(), &f, Some(&e)).await,
    }
}

// Templates ----------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct TemplateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    product_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    license_type: String,
    #[serde(default)]
    max_activations: String,
    #[serde(default)]
    duration_days: String,
    /// One feature a line: `id`, `id 100` (a usage limit) or `!id` (listed, disabled).
    #[serde(default)]
    features: String,
}

/// The features of the form's lines.
fn features(text: &str) -> Result<Vec<Value>, AppError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (enabled, line) = match line.strip_prefix('!') {
                Some(rest) => (false, rest.trim()),
                None => (true, line),
            };
            let mut parts = line.split_whitespace();
            let id = parts.next().unwrap_or_default();
            let limit = match parts.next() {
                None => 0,
                Some(n) => n.parse::<u64>().map_err(|_| {
                    AppError::invalid(format!("feature line \"{line}\": the limit must be a whole number, such as 100"))
                })?,
            };
            if parts.next().is_some() {
                return Err(AppError::invalid(format!("feature line \"{line}\": write `id`, `id limit` or `!id`")));
            }
            Ok(json!({"id": id, "enabled": enabled, "limit_value": limit}))
        })
        .collect()
}

fn template_body(f: &TemplateForm) -> Result<Value, AppError> {
    let number = |field: &str, v: &str| -> Result<Option<u32>, AppError> {
        match v.trim() {
            "" => Ok(None),
            n => n.parse().map(Some).map_err(|_| AppError::invalid(format!("{field} must be a whole number"))),
        }
    };
    let mut body = json!({
        "product_id": f.product_id.trim(),
        "name": f.name,
        "license_type": f.license_type,
        "features": features(&f.features)?,
    });
    if let Some(n) = number("max activations", &f.max_activations)? {
        body["max_activations"] = n.into();
    }
    if let Some(n) = number("duration days", &f.duration_days)? {
        body["duration_days"] = n.into();
    }
    Ok(body)
}

async fn templates(State(state): State<AppState>, user: User, Query(p): Query<Paging>) -> Response {
    templates_page(&state, &user, &p, &TemplateForm::default(), None).await
}

async fn templates_page(
    state: &AppState,
    user: &User,
    p: &Paging,
    f: &TemplateForm,
    err: Option<&AppError>,
) -> Response {
    let list = state.services.list_templates(&user.ctx, paging(p)).await;
    let products = state.services.list_products(&user.ctx, PageQuery { cursor: None, limit: Some(500) }).await;
    let body = html! {
        h1 { "Templates" }
        (rows(&list, "/console/templates", "No templates yet.", |items| html! {
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Seats" }
                th scope="col" { "Duration" } th scope="col" { "Features" } } }
                tbody { @for t in items { tr {
                    td { a href={ "/console/templates/" (t.template.id) } { (t.template.name) } }
                    td { (t.template.license_type.as_str()) }
                    td { (t.template.max_activations) }
                    td { @if let Some(d) = t.template.duration_days { (d) " days" } @else { "perpetual" } }
                    td { (t.template.features.iter().map(|f| f.id.as_str()).collect::<Vec<_>>().join(", ")) }
                } } } }
        }))
        (create_form(user, "/console/templates", "New template", "Create template", err, html! {
            div.field {
                label for="product_id" { "Product" }
                select #product_id name="product_id" required {
                    option value="" { "choose…" }
                    @if let Ok(ps) = &products {
                        @for p in &ps.items { option value=(p.id) selected[f.product_id == p.id.to_string()] { (p.name) } }
                    }
                }
            }
            (text_field("name", "Name", &f.name, true))
            div.field {
                label for="license_type" { "License type" }
                select #license_type name="license_type" {
                    @for t in LicenseType::ALL {
                        option value=(t.as_str()) selected[f.license_type == t.as_str()] { (t.as_str().to_lowercase().replace('_', " ")) }
                    }
                }
            }
            (text_field("max_activations", "Seats (devices at once)", &f.max_activations, false))
            (text_field("duration_days", "Duration in days (empty: perpetual)", &f.duration_days, false))
            div.field {
                label for="features" { "Features, one a line: id, id and a usage limit (api_calls 1000), or !id for listed but off" }
                textarea #features name="features" rows="4" spellcheck="false" { (f.features) }
            }
            p.hint { "Offline, emergency, restriction and timing settings: edit the template after creating it." }
        }))
    };
    page(user, "Templates", "/console/templates", body, err)
}

async fn create_template(State(state): State<AppState>, user: User, Form(f): Form<TemplateForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let r = match template_body(&f) {
        Ok(body) => state.services.create_template(&user.ctx, body).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(t) => Redirect::to(&format!("/console/templates/{}", t.template.id)).into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => templates_page(&state, &user, &Paging::default(), &f, Some(&e)).await,
    }
}

#[derive(Deserialize, Default)]
struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    body: String,
}

/// A template's settings as editable JSON: everything but what the server assigns.
fn editable(t: &crate::store::TemplateRecord) -> String {
    let mut v = serde_json::to_value(&t.template).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("id");
        m.remove("tenant_id");
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

async fn template(State(state): State<AppState>, user: User, Path(id): Path<String>) -> Response {
    template_page(&state, &user, &id, None, None).await
}

/// A refusal on the template page: of the settings (with what was typed) or of the duplicate (with its name).
enum TemplateError<'a> {
    Settings(&'a str, &'a AppError),
    Duplicate(&'a str, &'a AppError),
}

async fn template_page(
    state: &AppState,
    user: &User,
    id: &str,
    edited: Option<&str>,
    err: Option<&AppError>,
) -> Response {
    let e = match (edited, err) {
        (Some(body), Some(e)) => Some(TemplateError::Settings(body, e)),
        _ => None,
    };
    template_page_with(state, user, id, e).await
}

async fn template_page_with(state: &AppState, user: &User, id: &str, err: Option<TemplateError<'_>>) -> Response {
    let (edited, settings_err, copy_name, copy_err) = match &err {
        Some(TemplateError::Settings(b, e)) => (Some(*b), Some(*e), "", None),
        Some(TemplateError::Duplicate(n, e)) => (None, None, *n, Some(*e)),
        None => (None, None, "", None),
    };
    let Ok(id) = Uuid::parse_str(id) else {
        return error_page(&AppError::not_found("template"));
    };
    let t = match state.services.get_template(&user.ctx, id).await {
        Ok(t) => t,
        Err(e) => return error_page(&e),
    };
    let text = edited.map_or_else(|| editable(&t), str::to_string);
    let body = html! {
        h1 { "Template " (t.template.name) }
        dl.terms {
            dt { "Id" } dd { code { (t.template.id) } }
            dt { "Updated" } dd { (date(t.updated_at)) }
        }
        @if user.may_admin() {
            p { a.button href={ "/console/licenses/new?template=" (t.template.id) } { "New license from this template…" } }
            section aria-labelledby="edit" {
                h2 #edit { "Settings" }
                p.hint { "Edit and save: the JSON is applied as a merge patch (set a setting to null to drop it). "
                    "Licenses made before keep their terms." }
                form method="post" action={ "/console/templates/" (t.template.id) } {
                    (csrf_field(user))
                    label for="body" { "Template settings (JSON)" }
                    textarea #body name="body" rows="24" spellcheck="false" aria-describedby=[settings_err.map(|_| "body-error")] { (text) }
                    @if let Some(e) = settings_err { p #body-error .error role="alert" { (e.message) } }
                    button type="submit" { "Save" }
                }
            }
            section aria-labelledby="duplicate" {
                h2 #duplicate { "Duplicate" }
                form method="post" action={ "/console/templates/" (t.template.id) "/duplicate" } {
                    (csrf_field(user))
                    (text_field("name", "Name of the copy (empty: \"… (copy)\")", copy_name, false))
                    @if let Some(e) = copy_err { p #duplicate-error .error role="alert" { (e.message) } }
                    button type="submit" { "Duplicate" }
                }
            }
        } @else {
            pre { code { (text) } }
        }
    };
    let code = settings_err.or(copy_err).map_or(StatusCode::OK, status_of);
    page_response(code, layout(user, &format!("Template {}", t.template.name), "/console/templates", body))
}

async fn update_template(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<EditForm>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let Ok(tid) = Uuid::parse_str(&id) else {
        return error_page(&AppError::not_found("template"));
    };
    let patch = serde_json::from_str::<Value>(&f.body)
        .map_err(|e| AppError::invalid(format!("the settings are not valid JSON: {e}")))
        .and_then(|v| match v {
            Value::Object(mut m) => {
                // What the page showed but the server assigns is dropped, not refused.
                for k in ["id", "tenant_id", "created_at", "updated_at"] {
                    m.remove(k);
                }
                Ok(Value::Object(m))
            }
            _ => Err(AppError::invalid("the settings must be a JSON object ({ … })")),
        });
    let r = match patch {
        Ok(p) => state.services.update_template(&user.ctx, tid, p).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(_) => Redirect::to(&format!("/console/templates/{tid}")).into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => template_page(&state, &user, &id, Some(&f.body), Some(&e)).await,
    }
}

async fn duplicate_template(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<NameForm>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let Ok(tid) = Uuid::parse_str(&id) else {
        return error_page(&AppError::not_found("template"));
    };
    match state.services.duplicate_template(&user.ctx, tid, DuplicateTemplate { name: opt_text(&f.name) }).await {
        Ok(t) => Redirect::to(&format!("/console/templates/{}", t.template.id)).into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => template_page_with(&state, &user, &id, Some(TemplateError::Duplicate(&f.name, &e))).await,
    }
}

// New license --------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct NewLicenseQuery {
    #[serde(default)]
    template: Option<String>,
}

#[derive(Deserialize, Default)]
struct LicenseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    template_id: String,
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    duration_days: String,
    #[serde(default)]
    perpetual: Option<String>,
}

async fn new_license(State(state): State<AppState>, user: User, Query(q): Query<NewLicenseQuery>) -> Response {
    let f = LicenseForm { template_id: q.template.unwrap_or_default(), ..LicenseForm::default() };
    license_form(&state, &user, &f, None).await
}

async fn license_form(state: &AppState, user: &User, f: &LicenseForm, err: Option<&AppError>) -> Response {
    if !user.may_admin() {
        return error_page(&AppError::forbidden(format!(
            "a {} user may not create licenses: sign in with a tenant-admin or vendor-admin token",
            user.role.as_str()
        )));
    }
    let all = PageQuery { cursor: None, limit: Some(500) };
    let templates = state.services.list_templates(&user.ctx, all.clone()).await;
    let customers = state.services.list_customers(&user.ctx, all).await;
    let body = html! {
        h1 { "New license" }
        form method="post" action="/console/licenses/new" {
            (csrf_field(user))
            div.field {
                label for="template_id" { "Template" }
                select #template_id name="template_id" required {
                    option value="" { "choose…" }
                    @if let Ok(ts) = &templates {
                        @for t in &ts.items {
                            option value=(t.template.id) selected[f.template_id == t.template.id.to_string()] { (t.template.name) }
                        }
                    }
                }
            }
            div.field {
                label for="customer_id" { "Customer (optional)" }
                select #customer_id name="customer_id" {
                    option value="" { "none" }
                    @if let Ok(cs) = &customers {
                        @for c in &cs.items {
                            option value=(c.id) selected[f.customer_id == c.id.to_string()] { (c.name) }
                        }
                    }
                }
            }
            (text_field("duration_days", "Duration in days (empty: the template's)", &f.duration_days, false))
            div.field {
                label { input type="checkbox" name="perpetual" value="on" checked[f.perpetual.is_some()] style="width:auto"; " Perpetual, whatever the template's duration" }
            }
            @if let Some(e) = err { p #form-error .error role="alert" { (e.message) } }
            button type="submit" { "Create license" }
        }
    };
    page(user, "New license", "/console/licenses", body, err)
}

async fn create_license(State(state): State<AppState>, user: User, Form(f): Form<LicenseForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let req = (|| {
        let duration_days = match f.duration_days.trim() {
            "" => None,
            d => Some(d.parse::<u32>().map_err(|_| AppError::invalid("duration must be a whole number of days"))?),
        };
        Ok::<_, AppError>(CreateLicense {
            template_id: Some(
                opt_uuid("template", &f.template_id)?.ok_or_else(|| AppError::invalid("choose a template"))?,
            ),
            customer_id: opt_uuid("customer", &f.customer_id)?,
            duration_days,
            perpetual: f.perpetual.is_some(),
            ..CreateLicense::default()
        })
    })();
    let r = match req {
        Ok(req) => state.services.create_license(&user.ctx, req).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(created) => {
            let v = &created.view;
            let body = html! {
                h1 { "License created" }
                p.warning { "The license key is shown once: only its hash is kept. Copy it now and send it to the customer." }
                label for="license-key" { "License key" }
                textarea #license-key readonly rows="2" spellcheck="false" { (created.license_key) }
                p { button type="button" data-copy="license-key" { "Copy" } }
                p { a href={ "/console/licenses/" (v.license.id) } { "Open license " code { (v.key_hint) } } }
            };
            show_once(&state, &user, Once { title: "License created".into(), nav: "/console/licenses", body })
        }
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => license_form(&state, &user, &f, Some(&e)).await,
    }
}

// API tokens ---------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    tenant_id: String,
}

async fn tokens(State(state): State<AppState>, user: User) -> Response {
    tokens_page(&state, &user, &TokenForm::default(), None).await
}

async fn tokens_page(state: &AppState, user: &User, f: &TokenForm, err: Option<&AppError>) -> Response {
    let list = state.services.list_tokens(&user.ctx).await;
    let roles: &[Role] = if user.role == Role::VendorAdmin {
        &[Role::TenantAdmin, Role::Support, Role::ReadOnly, Role::VendorAdmin]
    } else {
        &[Role::TenantAdmin, Role::Support, Role::ReadOnly]
    };
    let body = html! {
        h1 { "API tokens" }
        @match &list {
            Ok(items) if items.is_empty() => { p { "No tokens." } }
            Ok(items) => {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Starts with" }
                        th scope="col" { "Created" } th scope="col" { "Revoked" }
                        @if user.may_admin() { th scope="col" { span.visually-hidden { "Actions" } } } } }
                    tbody {
                        @for t in items {
                            tr {
                                @if t.prefix == USER_TOKEN_PREFIX {
                                    td { a href="/console/users" { (t.name) } } td { (t.role.as_str()) }
                                    td { em { "a console user's (no secret)" } }
                                } @else {
                                    td { (t.name) } td { (t.role.as_str()) } td { code { (t.prefix) "…" } }
                                }
                                td { (date(t.created_at)) }
                                td { @if let Some(r) = t.revoked_at { (date(r)) } }
                                @if user.may_admin() {
                                    td { @if t.revoked_at.is_none() {
                                        form method="post" action={ "/console/tokens/" (t.id) "/revoke" } {
                                            (csrf_field(user))
                                            button.link type="submit" aria-label={ "Revoke " (t.name) } { "Revoke" }
                                        }
                                    } }
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => { p.note { "Not shown: " (e.message) } }
        }
        (create_form(user, "/console/tokens", "New token", "Create token", err, html! {
            (text_field("name", "Name (who or what uses it)", &f.name, true))
            div.field {
                label for="role" { "Role" }
                select #role name="role" {
                    @for r in roles { option value=(r.as_str()) selected[f.role == r.as_str()] { (r.as_str()) } }
                }
            }
            (tenant_field(user, &f.tenant_id))
        }))
    };
    page(user, "API tokens", "/console/tokens", body, err)
}

async fn create_token(State(state): State<AppState>, user: User, Form(f): Form<TokenForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let req = Role::parse(f.role.trim())
        .ok_or_else(|| AppError::invalid("choose a role: tenant-admin, support or read-only"))
        .and_then(|role| {
            Ok(CreateToken { name: f.name.clone(), role, tenant_id: opt_uuid("tenant id", &f.tenant_id)? })
        });
    let r = match req {
        Ok(req) => state.services.create_token(&user.ctx, req).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(t) => {
            let body = html! {
                h1 { "New token" }
                p.warning { "Shown once: only its hash is kept. Copy it now." }
                dl.terms { dt { "Name" } dd { (t.info.name) } dt { "Role" } dd { (t.info.role.as_str()) } }
                textarea #token-secret readonly rows="2" spellcheck="false" aria-label="New token" { (t.token) }
                p { button type="button" data-copy="token-secret" { "Copy" } }
                p { a href="/console/tokens" { "Back to the tokens" } }
            };
            show_once(&state, &user, Once { title: "New token".into(), nav: "/console/tokens", body })
        }
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => tokens_page(&state, &user, &f, Some(&e)).await,
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return error_page(&AppError::not_found("token"));
    };
    match state.services.revoke_token(&user.ctx, id).await {
        Ok(()) => Redirect::to("/console/tokens").into_response(),
        Err(e) => error_page(&e),
    }
}

// Console users ------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    tenant_id: String,
}

async fn users(State(state): State<AppState>, user: User) -> Response {
    users_page(&state, &user, &UserForm::default(), None, None).await
}

/// The console users, a form to add one; `err`: a refusal, and the user id whose password reset it concerns.
async fn users_page(
    state: &AppState,
    user: &User,
    f: &UserForm,
    err: Option<&AppError>,
    reset_err: Option<(Uuid, &AppError)>,
) -> Response {
    if !user.may_admin() {
        return error_page(&AppError::forbidden(format!(
            "a {} user may not manage console users: sign in as a tenant admin or vendor admin",
            user.role.as_str()
        )));
    }
    let list = state.services.list_console_users(&user.ctx).await;
    let roles: &[Role] = if user.role == Role::VendorAdmin {
        &[Role::Support, Role::ReadOnly, Role::TenantAdmin, Role::VendorAdmin]
    } else {
        &[Role::Support, Role::ReadOnly, Role::TenantAdmin]
    };
    let body = html! {
        h1 { "Console users" }
        p { "People who sign in with a username and password. Revoking one ends its sessions at their next page." }
        @match &list {
            Ok(items) if items.is_empty() => { p { "No console users yet." } }
            Ok(items) => {
                table {
                    thead { tr { th scope="col" { "Username" } th scope="col" { "Role" } th scope="col" { "Created" }
                        th scope="col" { "Password set" } th scope="col" { "Revoked" } th scope="col" { "New password" } } }
                    tbody {
                        @for u in items {
                            tr {
                                td { (u.username) } td { (u.role.as_str()) } td { (date(u.created_at)) }
                                td { (date(u.password_changed_at)) }
                                td { @if let Some(r) = u.revoked_at { (date(r)) } @else {
                                    form method="post" action={ "/console/users/" (u.id) "/revoke" } {
                                        (csrf_field(user))
                                        button.link type="submit" aria-label={ "Revoke " (u.username) } { "Revoke" }
                                    }
                                } }
                                td {
                                    @if u.revoked_at.is_none() {
                                        @let field = format!("password-{}", u.id);
                                        @let e = reset_err.filter(|(id, _)| *id == u.id).map(|(_, e)| e);
                                        form method="post" action={ "/console/users/" (u.id) "/password" } {
                                            (csrf_field(user))
                                            label.visually-hidden for=(field) { "New password for " (u.username) }
                                            input id=(field) type="password" name="password" autocomplete="new-password"
                                                minlength=(MIN_PASSWORD) required
                                                aria-describedby=[e.map(|_| format!("{field}-error"))];
                                            @if let Some(e) = e { p.error id={ (field) "-error" } role="alert" { (e.message) } }
                                            button type="submit" aria-label={ "Set the password of " (u.username) } { "Set" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => { p.error role="alert" { (e.message) } }
        }
        (create_form(user, "/console/users", "New console user", "Create user", err, html! {
            (text_field("username", "Username (letters, digits, . _ @ -)", &f.username, true))
            div.field {
                label for="password" { "Password (at least " (MIN_PASSWORD) " characters; tell it to the user in person)" }
                input #password type="password" name="password" autocomplete="new-password" required minlength=(MIN_PASSWORD);
            }
            div.field {
                label for="role" { "Role" }
                select #role name="role" {
                    @for r in roles { option value=(r.as_str()) selected[f.role == r.as_str()] { (r.as_str()) } }
                }
            }
            (tenant_field(user, &f.tenant_id))
        }))
    };
    let code = err.or(reset_err.map(|(_, e)| e)).map_or(StatusCode::OK, status_of);
    page_response(code, layout(user, "Console users", "/console/users", body))
}

async fn create_user(State(state): State<AppState>, user: User, Form(f): Form<UserForm>) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let req = Role::parse(f.role.trim())
        .ok_or_else(|| AppError::invalid("choose a role: support, read-only or tenant-admin"))
        .and_then(|role| {
            Ok(CreateConsoleUser {
                username: f.username.clone(),
                password: f.password.clone(),
                role,
                tenant_id: opt_uuid("tenant id", &f.tenant_id)?,
            })
        });
    let r = match req {
        Ok(req) => state.services.create_console_user(&user.ctx, req).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(_) => Redirect::to("/console/users").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        // The password is not sent back into the form.
        Err(e) => users_page(&state, &user, &UserForm { password: String::new(), ..f }, Some(&e), None).await,
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return error_page(&AppError::not_found("console user"));
    };
    match state.services.set_console_password(&user.ctx, id, f.password).await {
        Ok(()) => Redirect::to("/console/users").into_response(),
        Err(e) if role_refusal(&e) => error_page(&e),
        Err(e) => users_page(&state, &user, &UserForm::default(), None, Some((id, &e))).await,
    }
}

async fn revoke_user(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = user.refuse_csrf(&f.csrf) {
        return r;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return error_page(&AppError::not_found("console user"));
    };
    match state.services.revoke_console_user(&user.ctx, id).await {
        Ok(()) => Redirect::to("/console/users").into_response(),
        Err(e) => error_page(&e),
    }
}
