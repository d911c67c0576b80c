//! HTTP: routes, extractors, middleware. Handlers only translate between HTTP and services.

pub mod extract;
pub mod openapi;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::LicenseStatus;
use uuid::Uuid;

use crate::error::{AppError, AppResult, ErrorCode};
use crate::ratelimit::RateLimiter;
use crate::services::admin::*;
use crate::services::audit::AuditQuery;
use crate::services::catalog::{CatalogQuery, CreatePlan, PlanQuery, UpdatePlan};
use crate::services::client::{ActivateRequest, ValidateRequest};
use crate::services::licenses::*;
use crate::services::offline::{IssueEmergency, ReceiptRequest, RespondRequest};
use crate::services::security::{CheckKey, CreateBlock, CreateReport};
use crate::services::subscriptions::{CancelSubscription, ChangeSubscription, CreateSubscription, SubscriptionQuery};
use crate::services::{PageQuery, Services};
use extract::{ApiBytes, ApiJson, ApiPath, ApiQuery, Auth, Client, DeviceSignature, MetricsAuth};

#[derive(Clone)]
pub struct AppState {
    /// Behind one `Arc`: the state is cloned for every request and middleware layer.
    pub services: Arc<Services>,
    pub ip_limiter: Arc<RateLimiter>,
    /// Per-IP limit of the admin API, checked before the bearer token (so guessing tokens is slow too).
    pub admin_limiter: Arc<RateLimiter>,
    /// SHA-256 of the configured metrics token (`/metrics` also takes a vendor-admin token).
    pub metrics_token: Option<[u8; 32]>,
    /// The browser console's sessions.
    pub console: Arc<crate::console::Sessions>,
    /// Password sign-ins, by address and by username: guessing is slow, and so is flooding argon2.
    pub password_limiter: Arc<RateLimiter>,
}

impl AppState {
    pub fn new(services: Services) -> AppState {
        let rl = &services.config.rate_limits;
        let ip_limiter = Arc::new(RateLimiter::new(rl.per_ip_per_sec, rl.per_ip_burst));
        let admin_limiter = Arc::new(RateLimiter::new(rl.admin_per_ip_per_sec, rl.admin_per_ip_burst));
        let metrics_token =
            services.config.metrics_token.as_ref().map(|t| tessera_core::license_key::hash_secret(t.0.trim()));
        // Five attempts a minute after a burst of ten, per address and per username (a person mistyping a few
        // times never meets it; a guesser gets 7,200 tries a day at most).
        let password_limiter = Arc::new(RateLimiter::new(5.0 / 60.0, 10.0));
        AppState {
            services: Arc::new(services),
            ip_limiter,
            admin_limiter,
            metrics_token,
            console: Arc::default(),
            password_limiter,
        }
    }
}

type J = AppResult<Json<Value>>;

fn ok(v: impl serde::Serialize) -> J {
    serde_json::to_value(v).map(Json).map_err(|e| AppError::internal("serialize", e))
}

fn created(v: impl serde::Serialize) -> AppResult<(StatusCode, Json<Value>)> {
    Ok((StatusCode::CREATED, ok(v)?))
}

/// The router, testable without a port.
pub fn app(state: AppState) -> Router {
    let limit = state.services.config.body_limit_bytes;
    let timeout = Duration::from_secs(state.services.config.request_timeout_secs.max(1));

    let client = Router::new()
        .route("/v1/client/activate", post(client_activate))
        .route("/v1/client/validate", post(client_validate))
        .route("/v1/client/heartbeat", post(client_heartbeat))
        .route("/v1/client/deactivate", post(client_deactivate))
        .route("/v1/client/offline/respond", post(client_offline_respond))
        .route("/v1/client/offline/receipt", post(client_offline_receipt));

    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi_doc))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{id}", get(get_tenant))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/console-users", post(create_console_user).get(list_console_users))
        .route("/v1/console-users/{id}/password", post(set_console_password))
        .route("/v1/console-users/{id}", axum::routing::delete(revoke_console_user))
        .route("/v1/customers", post(create_customer).get(list_customers))
        .route("/v1/customers/{id}", get(get_customer).patch(update_customer))
        .route("/v1/products", post(create_product).get(list_products))
        .route("/v1/products/{id}", get(get_product).patch(update_product))
        .route("/v1/templates", post(create_template).get(list_templates))
        .route("/v1/templates/{id}", get(get_template).patch(update_template).delete(delete_template))
        .route("/v1/templates/{id}/duplicate", post(duplicate_template))
        .route("/v1/plans", post(create_plan).get(list_plans))
        .route("/v1/plans/{id}", get(get_plan).patch(update_plan).delete(archive_plan))
        .route("/v1/catalog", get(catalog))
        .route("/v1/usage", post(ingest_usage))
        .route("/v1/usage/summary", get(usage_summary))
        .route("/v1/billing/report", get(billing_report))
        .route("/v1/subscriptions", post(create_subscription).get(list_subscriptions))
        .route("/v1/subscriptions/{id}", get(get_subscription))
        .route("/v1/subscriptions/{id}/history", get(subscription_history))
        .route("/v1/subscriptions/{id}/convert", post(convert_subscription))
        .route("/v1/subscriptions/{id}/change", post(change_subscription))
        .route("/v1/subscriptions/{id}/cancel", post(cancel_subscription))
        .route("/v1/subscriptions/{id}/pause", post(pause_subscription))
        .route("/v1/subscriptions/{id}/resume", post(resume_subscription))
        .route("/v1/licenses", post(create_license).get(list_licenses))
        .route("/v1/licenses/by-key", post(license_by_key))
        .route("/v1/licenses/{id}", get(get_license).patch(update_license))
        .route("/v1/licenses/{id}/renew", post(renew_license))
        .route("/v1/licenses/{id}/suspend", post(suspend_license))
        .route("/v1/licenses/{id}/reinstate", post(reinstate_license))
        .route("/v1/licenses/{id}/revoke", post(revoke_license))
        .route("/v1/licenses/{id}/transfer", post(transfer_license))
        .route("/v1/licenses/{id}/file", get(license_file))
        .route("/v1/licenses/{id}/activations", get(license_activations))
        .route("/v1/licenses/{id}/emergency-codes", post(issue_emergency).get(list_emergency))
        .route("/v1/activations/{id}/deactivate", post(admin_deactivate))
        .route("/v1/activations/{id}/release", post(release_activation))
        .route("/v1/events", get(list_events))
        .route("/v1/audit", get(list_audit))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/v1/security/validate-key", post(check_key))
        .route("/v1/security/blocked-devices", post(create_block).get(list_blocks))
        .route("/v1/security/blocked-devices/{id}", axum::routing::delete(remove_block))
        .route("/v1/security/reports", post(create_report).get(list_reports))
        .route("/v1/offline/respond", post(offline_respond))
        .route("/v1/offline/receipt", post(offline_receipt))
        .route("/v1/jobs/run", post(run_jobs))
        .merge(client)
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req, next| timed(timeout, req, next)))
        .with_state(state)
}

// Middleware -------------------------------------------------------------------------------------------------

/// The request timeout, the request metrics and the log of server errors, in one layer (a tracing span per request
/// cost about 4% of a heartbeat's CPU; per-route counts and latencies are in `/metrics`).
///
/// The timeout tells the truth about writes (`store::writes`): when it runs out and none of the request's writes
/// has started, the request is abandoned, the writer skips its queued writes, and the answer is 503 `TIMEOUT`
/// "nothing was applied; retry". When a write has started it runs to completion, so the request gets the same time
/// again to finish and answers what it did; only if that runs out too is the answer 503
/// `TIMEOUT_OUTCOME_UNKNOWN` (the change may be applied; it is in the audit log if so).
async fn timed(limit: Duration, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = match crate::store::writes::within(limit, next.run(req)).await {
        Ok(r) => r,
        Err(t) => AppError::timed_out(t).into_response(),
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (status, elapsed) = (resp.status().as_u16(), started.elapsed());
    crate::metrics::METRICS.request(method.as_str(), route, status, elapsed);
    if resp.status().is_server_error() {
        tracing::error!(method = %method, route, status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request failed");
    }
    resp
}

async fn not_found() -> AppError {
    AppError::new(ErrorCode::NoSuchRoute, "no such endpoint: see /v1/openapi.json for the API")
}

async fn method_not_allowed() -> AppError {
    AppError::new(ErrorCode::MethodNotAllowed, "this endpoint does not accept this method: see /v1/openapi.json")
}

/// The one error shape: `{"error": {"code", "message", "details"}}` with the code's status, and `Retry-After`
/// when the error names one.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(code = self.code.as_str(), cause, "internal error");
        }
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = tessera_core::protocol::ErrorBody {
            error: tessera_core::protocol::ErrorInfo { code: self.code, message: self.message, details: self.details },
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(s));
        }
        resp
    }
}

// Operational ------------------------------------------------------------------------------------------------

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.services.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            // Anyone may ask: the database's own error text (paths, SQL) stays in the log.
            tracing::warn!(error = %e, "readiness check failed");
            AppError::new(ErrorCode::NotReady, "the database is not available: see the server log").into_response()
        }
    }
}

/// OpenMetrics text format; needs the metrics token or a vendor-admin token (counts cover every tenant).
async fn metrics(_: MetricsAuth) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::METRICS.render(),
    )
        .into_response()
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document())
}

// Tenants and tokens -----------------------------------------------------------------------------------------

async fn create_tenant(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateTenant>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_tenant(&ctx, req).await?)
}

async fn list_tenants(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<PageQuery>) -> J {
    ok(s.services.list_tenants(&ctx, q).await?)
}

async fn get_tenant(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.get_tenant(&ctx, id).await?)
}

async fn create_token(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateToken>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_token(&ctx, req).await?)
}

async fn list_tokens(State(s): State<AppState>, Auth(ctx): Auth) -> J {
    ok(json!({"items": s.services.list_tokens(&ctx).await?}))
}

async fn revoke_token(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    s.services.revoke_token(&ctx, id).await?;
    ok(json!({"revoked": true, "id": id}))
}

async fn create_console_user(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<crate::services::users::CreateConsoleUser>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_console_user(&ctx, req).await?)
}

async fn list_console_users(State(s): State<AppState>, Auth(ctx): Auth) -> J {
    ok(json!({"items": s.services.list_console_users(&ctx).await?}))
}

async fn set_console_password(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<crate::services::users::NewPassword>,
) -> J {
    s.services.set_console_password(&ctx, id, req.password).await?;
    ok(json!({"updated": true, "id": id}))
}

async fn revoke_console_user(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    s.services.revoke_console_user(&ctx, id).await?;
    ok(json!({"revoked": true, "id": id}))
}

// Customers, products, templates -----------------------------------------------------------------------------

async fn create_customer(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateCustomer>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_customer(&ctx, req).await?)
}

async fn list_customers(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<PageQuery>) -> J {
    ok(s.services.list_customers(&ctx, q).await?)
}

async fn get_customer(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.get_customer(&ctx, id).await?)
}

async fn update_customer(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateCustomer>,
) -> J {
    ok(s.services.update_customer(&ctx, id, req).await?)
}

async fn create_product(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateProduct>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_product(&ctx, req).await?)
}

async fn list_products(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<PageQuery>) -> J {
    ok(s.services.list_products(&ctx, q).await?)
}

async fn get_product(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.get_product(&ctx, id).await?)
}

async fn update_product(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateProduct>,
) -> J {
    ok(s.services.update_product(&ctx, id, req).await?)
}

async fn create_template(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_template(&ctx, body).await?)
}

async fn list_templates(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<PageQuery>) -> J {
    ok(s.services.list_templates(&ctx, q).await?)
}

async fn get_template(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.get_template(&ctx, id).await?)
}

async fn update_template(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Value>,
) -> J {
    ok(s.services.update_template(&ctx, id, body).await?)
}

async fn delete_template(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    s.services.delete_template(&ctx, id).await?;
    ok(json!({"deleted": true, "id": id}))
}

// Plans and the catalog --------------------------------------------------------------------------------------

async fn create_plan(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreatePlan>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_plan(&ctx, req).await?)
}

async fn list_plans(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<PlanQuery>) -> J {
    ok(json!({"items": s.services.list_plans(&ctx, q).await?}))
}

async fn get_plan(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.get_plan(&ctx, id).await?)
}

async fn update_plan(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdatePlan>,
) -> J {
    ok(s.services.update_plan(&ctx, id, req).await?)
}

async fn archive_plan(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.archive_plan(&ctx, id).await?)
}

async fn catalog(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<CatalogQuery>) -> J {
    ok(s.services.catalog(&ctx, q).await?)
}

async fn ingest_usage(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<crate::services::usage::IngestUsage>,
) -> J {
    ok(s.services.ingest_usage(&ctx, req).await?)
}

async fn usage_summary(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(q): ApiQuery<crate::services::usage::SummaryQuery>,
) -> J {
    ok(s.services.usage_summary(&ctx, q).await?)
}

async fn billing_report(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiQuery(q): ApiQuery<crate::services::billing::BillingQuery>,
) -> J {
    ok(s.services.billing_report(&ctx, q).await?)
}

// Subscriptions ---------------------------------------------------------------------------------------------

async fn create_subscription(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateSubscription>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_subscription(&ctx, req).await?)
}

async fn list_subscriptions(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<SubscriptionQuery>) -> J {
    ok(s.services.list_subscriptions(&ctx, q).await?)
}

async fn get_subscription(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.get_subscription(&ctx, id).await?)
}

async fn subscription_history(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(json!({"items": s.services.subscription_history(&ctx, id).await?}))
}

async fn convert_subscription(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.convert_subscription(&ctx, id).await?)
}

async fn change_subscription(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<ChangeSubscription>,
) -> J {
    ok(s.services.change_subscription(&ctx, id, req).await?)
}

async fn cancel_subscription(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiBytes(body): ApiBytes,
) -> J {
    let req: CancelSubscription = optional_body(&body)?;
    ok(s.services.cancel_subscription(&ctx, id, req).await?)
}

async fn pause_subscription(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.pause_subscription(&ctx, id, true).await?)
}

async fn resume_subscription(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.pause_subscription(&ctx, id, false).await?)
}

/// An optional JSON body: empty means defaults.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> AppResult<T> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(T::default()),
        Some(b'{') => {}
        Some(_) => return Err(AppError::bad_request("the request body must be a JSON object")),
    }
    serde_json::from_slice(body).map_err(|e| AppError::bad_request(format!("the request body is not valid: {e}")))
}

async fn duplicate_template(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiBytes(body): ApiBytes,
) -> AppResult<(StatusCode, Json<Value>)> {
    let req: DuplicateTemplate = optional_body(&body)?;
    created(s.services.duplicate_template(&ctx, id, req).await?)
}

// Licenses ---------------------------------------------------------------------------------------------------

async fn create_license(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateLicense>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_license(&ctx, req).await?)
}

async fn list_licenses(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<LicenseListQuery>) -> J {
    ok(s.services.list_licenses(&ctx, q).await?)
}

async fn license_by_key(State(s): State<AppState>, Auth(ctx): Auth, ApiJson(req): ApiJson<KeyLookup>) -> J {
    ok(s.services.get_license_by_key(&ctx, req).await?)
}

async fn get_license(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.get_license(&ctx, id).await?)
}

async fn update_license(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateLicense>,
) -> J {
    ok(s.services.update_license(&ctx, id, req).await?)
}

async fn renew_license(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RenewLicense>,
) -> J {
    ok(s.services.renew_license(&ctx, id, req).await?)
}

fn status_body(body: ApiBytes) -> AppResult<StatusChange> {
    optional_body(&body.0)
}

async fn suspend_license(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>, body: ApiBytes) -> J {
    ok(s.services.set_license_status(&ctx, id, LicenseStatus::Suspended, status_body(body)?).await?)
}

async fn reinstate_license(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiBytes,
) -> J {
    ok(s.services.set_license_status(&ctx, id, LicenseStatus::Active, status_body(body)?).await?)
}

async fn revoke_license(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>, body: ApiBytes) -> J {
    ok(s.services.set_license_status(&ctx, id, LicenseStatus::Revoked, status_body(body)?).await?)
}

async fn transfer_license(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<TransferLicense>,
) -> J {
    ok(s.services.transfer_license(&ctx, id, req).await?)
}

async fn license_file(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> AppResult<Response> {
    let text = s.services.license_file(&ctx, id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"license-{id}.lic\"")),
        ],
        text,
    )
        .into_response())
}

async fn license_activations(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(json!({"items": s.services.list_license_activations(&ctx, id).await?}))
}

async fn issue_emergency(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<IssueEmergency>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.issue_emergency(&ctx, id, req).await?)
}

async fn list_emergency(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(json!({"items": s.services.list_emergency(&ctx, id).await?}))
}

async fn admin_deactivate(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    ok(s.services.admin_deactivate(&ctx, id).await?)
}

async fn release_activation(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<crate::services::offline::ReleaseRequest>,
) -> J {
    ok(s.services.release_activation(&ctx, id, req).await?)
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    license_id: Option<Uuid>,
}

async fn list_events(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<EventsQuery>) -> J {
    ok(json!({"items": s.services.list_events(&ctx, q.license_id).await?}))
}

async fn list_audit(State(s): State<AppState>, Auth(ctx): Auth, ApiQuery(q): ApiQuery<AuditQuery>) -> J {
    ok(json!({"items": s.services.list_audit(&ctx, q).await?}))
}

async fn verify_audit(State(s): State<AppState>, Auth(ctx): Auth) -> J {
    ok(s.services.verify_audit(&ctx).await?)
}

async fn run_jobs(State(s): State<AppState>, Auth(ctx): Auth) -> J {
    ctx.require_vendor()?;
    ok(s.services.run_jobs().await?)
}

// Security ---------------------------------------------------------------------------------------------------

async fn check_key(State(s): State<AppState>, Auth(ctx): Auth, ApiJson(req): ApiJson<CheckKey>) -> J {
    ok(s.services.check_key(&ctx, req).await?)
}

async fn create_block(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateBlock>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_block(&ctx, req).await?)
}

async fn list_blocks(State(s): State<AppState>, Auth(ctx): Auth) -> J {
    ok(json!({"items": s.services.list_blocks(&ctx).await?}))
}

async fn remove_block(State(s): State<AppState>, Auth(ctx): Auth, ApiPath(id): ApiPath<Uuid>) -> J {
    s.services.remove_block(&ctx, id).await?;
    ok(json!({"deleted": true, "id": id}))
}

async fn create_report(
    State(s): State<AppState>,
    Auth(ctx): Auth,
    ApiJson(req): ApiJson<CreateReport>,
) -> AppResult<(StatusCode, Json<Value>)> {
    created(s.services.create_report(&ctx, req).await?)
}

async fn list_reports(State(s): State<AppState>, Auth(ctx): Auth) -> J {
    ok(json!({"items": s.services.list_reports(&ctx).await?}))
}

// Offline ----------------------------------------------------------------------------------------------------

async fn offline_respond(State(s): State<AppState>, Auth(ctx): Auth, ApiJson(req): ApiJson<RespondRequest>) -> J {
    ok(s.services.offline_respond(&ctx, req).await?)
}

async fn offline_receipt(State(s): State<AppState>, Auth(ctx): Auth, ApiJson(req): ApiJson<ReceiptRequest>) -> J {
    ok(s.services.offline_receipt(&ctx, req).await?)
}

/// Self-service: authenticated by the license key (respond) or the device signature (receipt).
async fn client_offline_respond(
    State(s): State<AppState>,
    Client(ctx): Client,
    ApiJson(req): ApiJson<RespondRequest>,
) -> J {
    ok(s.services.offline_respond(&ctx, req).await?)
}

async fn client_offline_receipt(
    State(s): State<AppState>,
    Client(ctx): Client,
    ApiJson(req): ApiJson<ReceiptRequest>,
) -> J {
    ok(s.services.offline_receipt(&ctx, req).await?)
}

// Client -----------------------------------------------------------------------------------------------------

/// What client endpoints answer: a signed envelope, or the error shape.
type Signed = AppResult<crate::services::client::SignedAnswer>;

impl IntoResponse for crate::services::client::SignedAnswer {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.to_json()).into_response()
    }
}

async fn client_activate(
    State(s): State<AppState>,
    Client(ctx): Client,
    ApiJson(req): ApiJson<ActivateRequest>,
) -> Signed {
    s.services.activate(&ctx, req).await
}

async fn client_validate(
    State(s): State<AppState>,
    Client(ctx): Client,
    ApiJson(req): ApiJson<ValidateRequest>,
) -> Signed {
    s.services.validate(&ctx, req).await
}

async fn client_heartbeat(
    State(s): State<AppState>,
    Client(ctx): Client,
    DeviceSignature(sig): DeviceSignature,
    ApiBytes(body): ApiBytes,
) -> Signed {
    s.services.heartbeat(&ctx, "/v1/client/heartbeat", &body, sig.as_deref()).await
}

async fn client_deactivate(
    State(s): State<AppState>,
    Client(ctx): Client,
    DeviceSignature(sig): DeviceSignature,
    ApiBytes(body): ApiBytes,
) -> Signed {
    s.services.deactivate(&ctx, "/v1/client/deactivate", &body, sig.as_deref()).await
}
