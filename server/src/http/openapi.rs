//! `/v1/openapi.json`: the OpenAPI 3.1 document, built from the route table below and the schemas utoipa derives
//! from the request and answer types themselves. Every route lists the error codes it answers with.
//!
//! Kept honest by tests: every route the router serves is in [`ROUTES`] and every route in it is served
//! (`server/tests/server/admin.rs`), and a schema-driven client drives the main flows from this document alone,
//! checking each answer against the schema and each refusal's code against the route's list
//! (`tests/python/openapi_client.py`, run by `tests/e2e/openapi.rs`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tessera_core::protocol::{self as wire, ErrorCode};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::services::{
    admin, audit, billing, catalog, jobs, licenses, offline, security, subscriptions as subs, usage, users,
};
use crate::store;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    None,
    /// A bearer API token (roles as the summary says).
    Token,
    /// The metrics token or a vendor-admin token.
    Metrics,
    /// Anyone with a license key (client endpoints; per-IP and per-key limits).
    Client,
    /// The device key of the activation, signing the body (`X-Tessera-Signature`).
    Device,
}

/// A type the document describes, by its schema.
#[derive(Clone, Copy)]
pub struct Ty {
    name: fn() -> Cow<'static, str>,
    collect: fn(&mut Vec<(String, RefOr<Schema>)>),
}

fn collect<T: ToSchema>(v: &mut Vec<(String, RefOr<Schema>)>) {
    v.push((T::name().into_owned(), T::schema()));
    T::schemas(v);
}

const fn ty<T: ToSchema>() -> Ty {
    Ty { name: T::name, collect: collect::<T> }
}

/// The body of `POST /v1/templates`: a [`tessera_core::Template`] without the members the server assigns (`id`,
/// `tenant_id`), with `license_model` (PER_DEVICE) and `max_activations` (1) defaulted.
pub struct NewTemplate;

impl utoipa::PartialSchema for NewTemplate {
    fn schema() -> RefOr<Schema> {
        let mut s = <tessera_core::Template as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(o)) = &mut s {
            for assigned in ["id", "tenant_id"] {
                o.properties.remove(assigned);
            }
            o.required.retain(|r| !["id", "tenant_id", "license_model", "max_activations"].contains(&r.as_str()));
            o.description = Some("A license template; the server assigns id and tenant_id.".into());
        }
        s
    }
}

impl ToSchema for NewTemplate {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NewTemplate")
    }

    fn schemas(v: &mut Vec<(String, RefOr<Schema>)>) {
        <tessera_core::Template as ToSchema>::schemas(v);
    }
}

/// A route's request body.
#[derive(Clone, Copy)]
pub enum Body {
    None,
    Json(Ty),
    /// May be left out (defaults).
    Optional(Ty),
    /// A JSON merge patch of the type.
    Patch(Ty),
}

/// A route's successful answer.
#[derive(Clone, Copy)]
pub enum Answer {
    /// 200 with the type.
    One(Ty),
    /// 201 with the type.
    Created(Ty),
    /// 200 with `{"items": [type]}`.
    Items(Ty),
    /// 200 with `{"items": [type], "next_cursor"?}`.
    Page(Ty),
    /// 200 with `{"signed": envelope}` whose payload's `result` is the type (docs/PROTOCOL.md).
    Signed(Ty),
    /// 200 with `{"<flag>": true, "id": uuid}`.
    Done(&'static str),
    /// 200, plain text.
    Text(&'static str),
    /// 200 with a free-form object, described.
    Object(&'static str),
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Query parameters (all optional strings unless the summary says otherwise).
    pub query: &'static [&'static str],
    pub body: Body,
    pub answer: Answer,
    /// Refusals particular to the route; the ones every route of its kind has are added (see [`errors_of`]).
    pub errors: &'static [ErrorCode],
}

use Answer::*;
use Auth as A;
use Body as B;
use ErrorCode as E;

const PAGE: &[&str] = &["cursor", "limit"];

macro_rules! route {
    (@or $default:expr) => { $default };
    (@or $default:expr, $given:expr) => { $given };
    ($m:literal $p:literal, $tag:literal, $sum:literal, $auth:expr, $body:expr, $ans:expr $(, q = $q:expr)? $(, e = $e:expr)?) => {
        Route {
            method: $m, path: $p, tag: $tag, summary: $sum, auth: $auth,
            query: route!(@or &[] $(, $q)?),
            body: $body, answer: $ans,
            errors: route!(@or &[] $(, $e)?),
        }
    };
}

/// Every route the server serves.
pub const ROUTES: &[Route] = &[
    route!("get" "/healthz", "ops", "Liveness", A::None, B::None, Object("{\"status\": \"ok\"}")),
    route!("get" "/readyz", "ops", "Readiness (database reachable)", A::None, B::None, Object("{\"status\": \"ready\"}"), e = &[E::NotReady]),
    route!("get" "/metrics", "ops", "Prometheus metrics (metrics token or vendor-admin token)", A::Metrics, B::None, Text("Prometheus text format")),
    route!("get" "/v1/openapi.json", "ops", "This document", A::None, B::None, Object("this OpenAPI document")),
    route!("post" "/v1/tenants", "tenants", "Create a tenant (vendor-admin)", A::Token, B::Json(ty::<admin::CreateTenant>()), Created(ty::<store::Tenant>()), e = &[E::Conflict]),
    route!("get" "/v1/tenants", "tenants", "List tenants (vendor-admin)", A::Token, B::None, Page(ty::<store::Tenant>()), q = PAGE),
    route!("get" "/v1/tenants/{id}", "tenants", "Get a tenant", A::Token, B::None, One(ty::<store::Tenant>())),
    route!("post" "/v1/tokens", "tokens", "Create an API token (its secret is returned once)", A::Token, B::Json(ty::<admin::CreateToken>()), Created(ty::<admin::CreatedToken>())),
    route!("get" "/v1/tokens", "tokens", "List API tokens", A::Token, B::None, Items(ty::<store::ApiToken>())),
    route!("delete" "/v1/tokens/{id}", "tokens", "Revoke an API token", A::Token, B::None, Done("revoked")),
    route!("post" "/v1/console-users", "console users", "Create a console user (username and password; argon2id)", A::Token, B::Json(ty::<users::CreateConsoleUser>()), Created(ty::<users::ConsoleUserView>()), e = &[E::Conflict]),
    route!("get" "/v1/console-users", "console users", "List console users", A::Token, B::None, Items(ty::<users::ConsoleUserView>())),
    route!("post" "/v1/console-users/{id}/password", "console users", "Set a console user's password (ends its sessions)", A::Token, B::Json(ty::<users::NewPassword>()), Done("updated")),
    route!("delete" "/v1/console-users/{id}", "console users", "Revoke a console user (ends its sessions)", A::Token, B::None, Done("revoked")),
    route!("post" "/v1/customers", "customers", "Create a customer", A::Token, B::Json(ty::<admin::CreateCustomer>()), Created(ty::<store::Customer>()), e = &[E::Conflict]),
    route!("get" "/v1/customers", "customers", "List customers", A::Token, B::None, Page(ty::<store::Customer>()), q = PAGE),
    route!("get" "/v1/customers/{id}", "customers", "Get a customer", A::Token, B::None, One(ty::<store::Customer>())),
    route!("patch" "/v1/customers/{id}", "customers", "Update a customer", A::Token, B::Json(ty::<admin::UpdateCustomer>()), One(ty::<store::Customer>()), e = &[E::Changed]),
    route!("post" "/v1/products", "products", "Create a product", A::Token, B::Json(ty::<admin::CreateProduct>()), Created(ty::<store::Product>()), e = &[E::ProductIdTaken, E::ProductCodeTaken, E::Conflict]),
    route!("get" "/v1/products", "products", "List products", A::Token, B::None, Page(ty::<store::Product>()), q = PAGE),
    route!("get" "/v1/products/{id}", "products", "Get a product", A::Token, B::None, One(ty::<store::Product>())),
    route!("patch" "/v1/products/{id}", "products", "Update a product", A::Token, B::Json(ty::<admin::UpdateProduct>()), One(ty::<store::Product>()), e = &[E::ProductCodeTaken, E::Changed]),
    route!("post" "/v1/templates", "templates", "Create a license template", A::Token, B::Json(ty::<NewTemplate>()), Created(ty::<store::TemplateRecord>()), e = &[E::Conflict]),
    route!("get" "/v1/templates", "templates", "List templates", A::Token, B::None, Page(ty::<store::TemplateRecord>()), q = PAGE),
    route!("get" "/v1/templates/{id}", "templates", "Get a template", A::Token, B::None, One(ty::<store::TemplateRecord>())),
    route!("patch" "/v1/templates/{id}", "templates", "Update a template (JSON merge patch)", A::Token, B::Patch(ty::<tessera_core::Template>()), One(ty::<store::TemplateRecord>()), e = &[E::Changed]),
    route!("delete" "/v1/templates/{id}", "templates", "Delete a template", A::Token, B::None, Done("deleted"), e = &[E::Conflict]),
    route!("post" "/v1/templates/{id}/duplicate", "templates", "Duplicate a template", A::Token, B::Json(ty::<admin::DuplicateTemplate>()), Created(ty::<store::TemplateRecord>())),
    route!("post" "/v1/plans", "catalog", "Create a plan or add-on", A::Token, B::Json(ty::<catalog::CreatePlan>()), Created(ty::<store::Plan>()), e = &[E::PlanCodeTaken, E::PlanRankTaken, E::PlanTierTaken]),
    route!("get" "/v1/plans", "catalog", "List plans and add-ons (archived ones with include_archived=true)", A::Token, B::None, Items(ty::<store::Plan>()),
        q = &["product_id", "kind", "category", "tier", "include_archived"]),
    route!("get" "/v1/plans/{id}", "catalog", "Get a plan or add-on", A::Token, B::None, One(ty::<store::Plan>())),
    route!("patch" "/v1/plans/{id}", "catalog", "Update a plan or add-on", A::Token, B::Json(ty::<catalog::UpdatePlan>()), One(ty::<store::Plan>()),
        e = &[E::PlanCodeTaken, E::PlanRankTaken, E::PlanTierTaken, E::InvalidTransition, E::Conflict]),
    route!("delete" "/v1/plans/{id}", "catalog", "Archive a plan or add-on (no longer sold; still readable)", A::Token, B::None, One(ty::<store::Plan>())),
    route!("get" "/v1/catalog", "catalog", "The public catalog: current public plans (lowest rung first) and add-ons per product", A::Token, B::None, One(ty::<catalog::Catalog>()),
        q = &["product_id", "category", "tier"]),
    route!("post" "/v1/usage", "usage", "Record metered usage from the vendor's side (batches of up to 1,000 events, idempotent by id, checked against quotas)", A::Token, B::Json(ty::<usage::IngestUsage>()), One(ty::<usage::IngestResult>()),
        e = &[E::InvalidLicenseKey, E::RateLimited]),
    route!("get" "/v1/usage/summary", "usage", "Use per license, metric and day or month (UTC) of a license or a customer's licenses", A::Token, B::None, One(ty::<usage::UsageSummary>()),
        q = &["license_id", "customer_id", "metric", "period", "from", "to"]),
    route!("get" "/v1/billing/report", "billing", "The usage-based billing report of a month: per customer, base charges and use past included amounts, exact minor units", A::Token, B::None, One(ty::<billing::BillingReport>()),
        q = &["month", "customer_id", "product_id"]),
    route!("post" "/v1/subscriptions", "subscriptions", "Subscribe a customer to a plan (and add-ons): makes the license, its key returned once", A::Token, B::Json(ty::<subs::CreateSubscription>()), Created(ty::<subs::CreatedSubscription>()),
        e = &[E::InvalidTransition]),
    route!("get" "/v1/subscriptions", "subscriptions", "List subscriptions, with what each grants and its use (customer_id: what a customer has)", A::Token, B::None, Page(ty::<subs::SubscriptionView>()),
        q = &["customer_id", "product_id", "status", "cursor", "limit"]),
    route!("get" "/v1/subscriptions/{id}", "subscriptions", "Get a subscription, with what it grants and its use", A::Token, B::None, One(ty::<subs::SubscriptionView>())),
    route!("get" "/v1/subscriptions/{id}/history", "subscriptions", "A subscription's history, oldest first", A::Token, B::None, Items(ty::<store::SubscriptionEvent>())),
    route!("post" "/v1/subscriptions/{id}/convert", "subscriptions", "Convert a trial to paid (the first period starts now)", A::Token, B::None, One(ty::<subs::SubscriptionView>()), e = &[E::InvalidTransition, E::Changed]),
    route!("post" "/v1/subscriptions/{id}/change", "subscriptions", "Upgrade, downgrade or change add-ons, now or at the period's end", A::Token, B::Json(ty::<subs::ChangeSubscription>()), One(ty::<subs::SubscriptionView>()), e = &[E::InvalidTransition, E::Changed]),
    route!("post" "/v1/subscriptions/{id}/cancel", "subscriptions", "Cancel at the period's end (default) or now", A::Token, B::Optional(ty::<subs::CancelSubscription>()), One(ty::<subs::SubscriptionView>()), e = &[E::InvalidTransition, E::Changed]),
    route!("post" "/v1/subscriptions/{id}/pause", "subscriptions", "Pause (the license is suspended)", A::Token, B::None, One(ty::<subs::SubscriptionView>()), e = &[E::InvalidTransition, E::Changed]),
    route!("post" "/v1/subscriptions/{id}/resume", "subscriptions", "Resume a paused subscription", A::Token, B::None, One(ty::<subs::SubscriptionView>()), e = &[E::InvalidTransition, E::Changed]),
    route!("post" "/v1/licenses", "licenses", "Create a license (its key is returned once)", A::Token, B::Json(ty::<licenses::CreateLicense>()), Created(ty::<licenses::CreatedLicense>()), e = &[E::Conflict, E::OfflineNotSupported]),
    route!("get" "/v1/licenses", "licenses", "List licenses", A::Token, B::None, Page(ty::<licenses::LicenseView>()),
        q = &["status", "type", "product_id", "customer_id", "expiring_before", "cursor", "limit"]),
    route!("post" "/v1/licenses/by-key", "licenses", "Get a license by its key", A::Token, B::Json(ty::<licenses::KeyLookup>()), One(ty::<licenses::LicenseView>()), e = &[E::InvalidLicenseKey, E::LicenseNotFound]),
    route!("get" "/v1/licenses/{id}", "licenses", "Get a license", A::Token, B::None, One(ty::<licenses::LicenseView>())),
    route!("patch" "/v1/licenses/{id}", "licenses", "Update a license", A::Token, B::Json(ty::<licenses::UpdateLicense>()), One(ty::<licenses::LicenseView>()), e = &[E::LicenseFinal, E::LicenseChanged, E::OfflineNotSupported]),
    route!("post" "/v1/licenses/{id}/renew", "licenses", "Renew a license", A::Token, B::Json(ty::<licenses::RenewLicense>()), One(ty::<licenses::LicenseView>()), e = &[E::LicenseFinal, E::LicenseChanged]),
    route!("post" "/v1/licenses/{id}/suspend", "licenses", "Suspend a license", A::Token, B::Optional(ty::<licenses::StatusChange>()), One(ty::<licenses::LicenseView>()), e = &[E::LicenseFinal, E::InvalidTransition, E::LicenseChanged]),
    route!("post" "/v1/licenses/{id}/reinstate", "licenses", "Reinstate a suspended license", A::Token, B::Optional(ty::<licenses::StatusChange>()), One(ty::<licenses::LicenseView>()), e = &[E::LicenseFinal, E::InvalidTransition, E::LicenseChanged]),
    route!("post" "/v1/licenses/{id}/revoke", "licenses", "Revoke a license (final)", A::Token, B::Optional(ty::<licenses::StatusChange>()), One(ty::<licenses::LicenseView>()), e = &[E::LicenseFinal, E::InvalidTransition, E::LicenseChanged]),
    route!("post" "/v1/licenses/{id}/transfer", "licenses", "Transfer a license to another customer", A::Token, B::Json(ty::<licenses::TransferLicense>()), One(ty::<licenses::LicenseView>()), e = &[E::LicenseFinal, E::LicenseChanged]),
    route!("get" "/v1/licenses/{id}/file", "licenses", "Download the signed license file", A::Token, B::None, Text("the armored license file (docs/PROTOCOL.md)")),
    route!("get" "/v1/licenses/{id}/activations", "licenses", "List a license's activations", A::Token, B::None, Items(ty::<store::Activation>())),
    route!("post" "/v1/licenses/{id}/emergency-codes", "offline", "Issue an emergency code (support/admin)", A::Token, B::Json(ty::<offline::IssueEmergency>()), Created(ty::<offline::IssuedEmergency>()),
        e = &[E::EmergencyDisabled, E::EmergencyLimitReached, E::EmergencyBindingRequired, E::LicenseFinal, E::InvalidCode, E::CodeMismatch]),
    route!("get" "/v1/licenses/{id}/emergency-codes", "offline", "List a license's emergency codes", A::Token, B::None, Items(ty::<offline::EmergencyListing>())),
    route!("post" "/v1/activations/{id}/deactivate", "licenses", "Deactivate an activation (staff)", A::Token, B::None, Object("{\"deactivated\": bool, \"activation_id\", ...}")),
    route!("post" "/v1/activations/{id}/release", "licenses", "Release an activation's seat at once, with a reason (staff)", A::Token, B::Json(ty::<offline::ReleaseRequest>()), One(ty::<offline::ReceiptResult>())),
    route!("get" "/v1/events", "audit", "Lifecycle events (expiring soon, ...)", A::Token, B::None, Items(ty::<store::Event>()), q = &["license_id"]),
    route!("get" "/v1/audit", "audit", "Audit log entries", A::Token, B::None, Items(ty::<store::AuditEntry>()), q = &["after", "before", "limit", "tenant_id", "actor", "action", "target", "outcome", "since", "until"]),
    route!("get" "/v1/audit/verify", "audit", "Verify the audit hash chain of every tenant (vendor-admin)", A::Token, B::None, One(ty::<audit::AuditVerification>())),
    route!("post" "/v1/security/validate-key", "security", "Check a license key", A::Token, B::Json(ty::<security::CheckKey>()), One(ty::<security::KeyCheck>())),
    route!("post" "/v1/security/blocked-devices", "security", "Block a device", A::Token, B::Json(ty::<security::CreateBlock>()), Created(ty::<store::BlockedDevice>())),
    route!("get" "/v1/security/blocked-devices", "security", "List blocked devices", A::Token, B::None, Items(ty::<store::BlockedDevice>())),
    route!("delete" "/v1/security/blocked-devices/{id}", "security", "Unblock a device", A::Token, B::None, Done("deleted")),
    route!("post" "/v1/security/reports", "security", "Report suspicious activity", A::Token, B::Json(ty::<security::CreateReport>()), Created(ty::<store::SuspiciousReport>())),
    route!("get" "/v1/security/reports", "security", "List suspicious-activity reports", A::Token, B::None, Items(ty::<store::SuspiciousReport>())),
    route!("post" "/v1/offline/respond", "offline", "Answer an offline request code (support/admin)", A::Token, B::Json(ty::<wire::RespondRequest>()), One(ty::<wire::RespondResult>()), e = OFFLINE_RESPOND_ERRORS),
    route!("post" "/v1/offline/receipt", "offline", "Apply a deactivation receipt (support/admin)", A::Token, B::Json(ty::<wire::ReceiptRequest>()), One(ty::<offline::ReceiptResult>()), e = RECEIPT_ERRORS),
    route!("post" "/v1/jobs/run", "ops", "Run the lifecycle jobs now (vendor-admin)", A::Token, B::None, One(ty::<jobs::JobReport>())),
    route!("post" "/v1/client/activate", "client", "Activate a device", A::Client, B::Json(ty::<wire::ActivateRequest>()), Signed(ty::<wire::ActivateResult>()),
        e = &[E::InvalidLicenseKey, E::InvalidNonce, E::InvalidDeviceKey, E::LicenseNotFound, E::LicenseSuspended, E::LicenseRevoked, E::LicenseExpired, E::LicenseNotYetValid, E::ProductMismatch, E::Restricted, E::DeviceBlocked, E::SeatLimitReached, E::FingerprintInsufficient, E::CpuCountRequired, E::UserIdRequired, E::LicenseChanged]),
    route!("post" "/v1/client/validate", "client", "Validate a license", A::Client, B::Json(ty::<wire::ValidateRequest>()), Signed(ty::<wire::ValidateResult>()),
        e = &[E::InvalidLicenseKey, E::InvalidNonce, E::LicenseNotFound]),
    route!("post" "/v1/client/heartbeat", "client", "Heartbeat: lease, usage, status", A::Device, B::Json(ty::<wire::HeartbeatRequest>()), Signed(ty::<wire::HeartbeatResult>()),
        e = &[E::InvalidNonce, E::StaleRequest, E::SignatureRequired, E::SignatureInvalid, E::ActivationNotFound, E::Restricted]),
    route!("post" "/v1/client/deactivate", "client", "Deactivate this device (frees or holds the seat)", A::Device, B::Json(ty::<wire::DeactivateRequest>()), Signed(ty::<wire::DeactivateResult>()),
        e = &[E::InvalidNonce, E::StaleRequest, E::SignatureRequired, E::SignatureInvalid, E::ActivationNotFound]),
    route!("post" "/v1/client/offline/respond", "client", "Self-service offline response (needs the license key)", A::Client, B::Json(ty::<wire::RespondRequest>()), One(ty::<wire::RespondResult>()), e = OFFLINE_RESPOND_ERRORS),
    route!("post" "/v1/client/offline/receipt", "client", "Self-service deactivation receipt", A::Client, B::Json(ty::<wire::ReceiptRequest>()), One(ty::<offline::ReceiptResult>()), e = RECEIPT_ERRORS),
];

const OFFLINE_RESPOND_ERRORS: &[ErrorCode] = &[
    E::InvalidCode,
    E::InvalidLicenseKey,
    E::CodeMismatch,
    E::LicenseNotFound,
    E::LicenseSuspended,
    E::LicenseRevoked,
    E::LicenseExpired,
    E::LicenseNotYetValid,
    E::DeviceBlocked,
    E::SeatLimitReached,
    E::FingerprintInsufficient,
    E::OfflineNotSupported,
    E::LicenseChanged,
];

const RECEIPT_ERRORS: &[ErrorCode] =
    &[E::InvalidCode, E::ActivationNotFound, E::ReceiptGrantMismatch, E::OfflineReleaseNotAllowed, E::LicenseChanged];

/// The codes a route may answer with: its own, and those of every route of its kind (input shape, auth, limits,
/// availability).
pub fn errors_of(r: &Route) -> Vec<ErrorCode> {
    let mut v: Vec<ErrorCode> = vec![E::Internal, E::Busy, E::Timeout, E::TimeoutOutcomeUnknown];
    if !matches!(r.body, Body::None) {
        v.extend([E::BadRequest, E::ValidationFailed, E::PayloadTooLarge, E::UnsupportedMediaType]);
    } else if !r.query.is_empty() {
        v.extend([E::BadRequest, E::ValidationFailed]);
    }
    match r.auth {
        Auth::None => {}
        Auth::Token => v.extend([E::Unauthorized, E::Forbidden, E::RateLimited]),
        Auth::Metrics => v.extend([E::Unauthorized, E::Forbidden]),
        Auth::Client | Auth::Device => v.push(E::RateLimited),
    }
    if r.path.contains("{id}") {
        v.extend([E::NotFound, E::BadRequest]);
    }
    v.extend_from_slice(r.errors);
    let mut seen = std::collections::HashSet::new();
    v.retain(|c| seen.insert(*c));
    v
}

fn reference(t: Ty) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", (t.name)())})
}

fn answer_schema(a: Answer) -> (u16, &'static str, Value) {
    let list = |t: Ty| json!({"type": "array", "items": reference(t)});
    match a {
        One(t) => (200, "application/json", reference(t)),
        Created(t) => (201, "application/json", reference(t)),
        Items(t) => (
            200,
            "application/json",
            json!({"type": "object", "required": ["items"], "properties": {"items": list(t)}}),
        ),
        Page(t) => (
            200,
            "application/json",
            json!({"type": "object", "required": ["items"], "properties": {
                "items": list(t),
                "next_cursor": {"type": "string", "description": "pass as `cursor` for the next page; absent on the last"}}}),
        ),
        Signed(_) => (200, "application/json", json!({"$ref": "#/components/schemas/SignedBody"})),
        Done(flag) => (
            200,
            "application/json",
            json!({"type": "object", "required": [flag, "id"], "properties": {
                flag: {"type": "boolean"}, "id": {"type": "string", "format": "uuid"}}}),
        ),
        Text(d) => (200, "text/plain", json!({"type": "string", "description": d})),
        Object(d) => (200, "application/json", json!({"type": "object", "description": d})),
    }
}

fn operation(r: &Route) -> Value {
    let (status, media, schema) = answer_schema(r.answer);
    let mut description = String::new();
    if let Signed(t) = r.answer {
        description = format!(
            "The answer is a `server-response` envelope (docs/PROTOCOL.md, \"Signed bytes\"); its payload is \
             `{{nonce, endpoint, activation_id?, server_time, result}}` with `result` a `{}` \
             (`x-tessera-signed-result`). Verify the signature, the echoed nonce and the endpoint before trusting it.",
            (t.name)()
        );
    }
    let mut responses = Map::new();
    let mut success = json!({"description": "Success", "content": {media: {"schema": schema}}});
    if let Signed(t) = r.answer {
        success["x-tessera-signed-result"] = reference(t);
    }
    responses.insert(status.to_string(), success);
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for c in errors_of(r) {
        by_status.entry(c.status()).or_default().push(c);
    }
    for (status, codes) in by_status {
        let text: Vec<String> = codes.iter().map(|c| format!("`{c}`:{}", c.describe())).collect();
        responses.insert(
            status.to_string(),
            json!({
                "description": text.join("\n"),
                "x-tessera-codes": codes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            }),
        );
    }
    let mut op = json!({
        "tags": [r.tag],
        "summary": r.summary,
        "operationId": operation_id(r),
        "responses": responses,
    });
    if !description.is_empty() {
        op["description"] = json!(description);
    }
    let mut params: Vec<Value> = Vec::new();
    if r.path.contains("{id}") {
        params.push(
            json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}),
        );
    }
    for q in r.query {
        params.push(json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}));
    }
    if r.auth == Auth::Device {
        params.push(json!({"name": wire::SIGNATURE_HEADER, "in": "header", "required": true,
            "description": "Ed25519 signature of the raw body by the activation's device key (Domain::DeviceMessage, bound to the path), base64url",
            "schema": {"type": "string"}}));
    }
    if !params.is_empty() {
        op["parameters"] = json!(params);
    }
    match r.body {
        Body::None => {}
        Body::Json(t) => {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": reference(t)}}})
        }
        Body::Optional(t) => {
            op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": reference(t)}}})
        }
        Body::Patch(t) => {
            op["requestBody"] = json!({"required": true, "description": format!("A JSON merge patch (RFC 7396) of a {}", (t.name)()),
                "content": {"application/merge-patch+json": {"schema": {"type": "object"}}, "application/json": {"schema": {"type": "object"}}}})
        }
    }
    match r.auth {
        Auth::Token => op["security"] = json!([{"bearer": []}]),
        Auth::Metrics => {
            op["security"] = json!([{"bearer": []}]);
            op["description"] = json!(
                "Bearer: the configured metrics token (metrics_token, TESSERA_METRICS_TOKEN) or a vendor-admin API \
                 token; 401 without either, 403 for other API tokens."
            );
        }
        _ => {}
    }
    op
}

/// `get_v1_licenses_id` style ids, unique per route.
pub fn operation_id(r: &Route) -> String {
    format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['{', '}'], "").replace(['/', '.', '-'], "_"))
}

fn schemas() -> Map<String, Value> {
    let mut all = Vec::new();
    for r in ROUTES {
        for t in [body_ty(r.body), answer_ty(r.answer)].into_iter().flatten() {
            (t.collect)(&mut all);
        }
    }
    collect::<wire::ErrorBody>(&mut all);
    collect::<wire::SignedBody>(&mut all);
    collect::<wire::Endpoint>(&mut all);
    let mut out = Map::new();
    for (name, schema) in all {
        let v = serde_json::to_value(&schema).unwrap_or_else(|_| json!({}));
        out.entry(name).or_insert(v);
    }
    out
}

fn body_ty(b: Body) -> Option<Ty> {
    match b {
        Body::None => None,
        Body::Json(t) | Body::Optional(t) | Body::Patch(t) => Some(t),
    }
}

fn answer_ty(a: Answer) -> Option<Ty> {
    match a {
        One(t) | Created(t) | Items(t) | Page(t) | Signed(t) => Some(t),
        Done(_) | Text(_) | Object(_) => None,
    }
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = operation(r);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tessera licensing server", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Admin API (Bearer API tokens) and client API (see docs/PROTOCOL.md). Every refusal is an ErrorBody whose code fixes the status; each operation lists its codes (x-tessera-codes per status)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        }
    })
}
