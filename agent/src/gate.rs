//! Feature gating in the host application: what a denied decision means over HTTP, and a tower layer that
//! applies it in front of a route.
//!
//! | decision | status | body `error.code` |
//! |---|---|---|
//! | allowed | (the route answers) | |
//! | `NOT_ENTITLED`, `FEATURE_DISABLED`, `FEATURE_EXPIRED`, a used-up lifetime quota | 402 Payment Required, with the license's upgrade offer for the feature when it has one | the reason |
//! | `QUOTA_EXCEEDED` of a quota per period | 429 Too Many Requests, `Retry-After` the seconds until the period ends (402 when one use needs more than a whole period's quota: waiting would not help) | `QUOTA_EXCEEDED` |
//! | the state file cannot record a use | 503 Service Unavailable | `STATE_UNAVAILABLE` |
//! | anything else (expired, suspended, not activated, tampering, ...) | 403 Forbidden | the reason |
//!
//! The body is `{"error": {"code", "message", "details": {"feature", "reason", "facts", "upgrade"?}}}`. The
//! daemon's local HTTP API answers with the same statuses ([`crate::daemon`]).
//!
//! ```no_run
//! # fn app(agent: tessera_agent::Agent) -> axum::Router {
//! use axum::{routing::get, Router};
//! use tessera_agent::gate::RequireFeature;
//! Router::new()
//!     .route("/crm", get(|| async { "contacts" }))
//!     .route_layer(RequireFeature::new(agent.clone(), "crm"))
//!     .merge(Router::new().route("/api", get(|| async { "ok" })).route_layer(RequireFeature::consuming(agent, "api_calls", 1)))
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_core::{Decision, Reason};

use crate::agent::Agent;

/// What the license offers for a feature it does not grant: the cheapest plan or add-on of the vendor's catalog
/// that includes it, as the server signed it into the license (`metadata.upgrades`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrade {
    /// The plan's code.
    pub plan: String,
    pub name: String,
    /// `PLAN` or `ADD_ON`.
    pub kind: String,
    /// Where to buy it, with the feature and license filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_url: Option<String>,
}

/// The HTTP status of a decision on using `amount` units (0 for a plain check) of a feature whose quota period ends
/// at `period_end` (`None`: no quota per period; see the module's table).
pub fn status_of(d: &Decision, amount: u64, period_end: Option<DateTime<Utc>>) -> StatusCode {
    if d.allowed {
        return StatusCode::OK;
    }
    let fits_a_period = d.facts.limit.is_none_or(|l| i64::try_from(amount).is_ok_and(|a| a <= l));
    match d.reason {
        Reason::NotEntitled | Reason::FeatureDisabled | Reason::FeatureExpired => StatusCode::PAYMENT_REQUIRED,
        Reason::QuotaExceeded if period_end.is_some() && fits_a_period => StatusCode::TOO_MANY_REQUESTS,
        Reason::QuotaExceeded => StatusCode::PAYMENT_REQUIRED,
        _ => StatusCode::FORBIDDEN,
    }
}

/// Whole seconds from `now` until `end`, rounded up, at least 1 (what `Retry-After` says).
pub fn retry_after(end: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (end - now).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

/// The answer to a denied use of `amount` units of `feature` (see the module's table).
pub fn denied(agent: &Agent, feature: &str, amount: u64, d: &Decision) -> Response {
    let period_end = agent.quota_period_end(feature);
    let status = status_of(d, amount, period_end);
    let mut details = serde_json::json!({"feature": feature, "reason": d.reason, "facts": d.facts});
    if let Some(end) = period_end {
        details["period_ends_at"] = serde_json::json!(end);
    }
    let mut message = d.reason.explain().to_string();
    if status == StatusCode::PAYMENT_REQUIRED {
        if let Some(up) = agent.upgrade_for(feature) {
            message = format!("{message}: {} ({}) includes {feature}", up.name, up.plan);
            details["upgrade"] = serde_json::to_value(&up).unwrap_or_default();
        }
    }
    let body = serde_json::json!({"error": {"code": d.reason, "message": message, "details": details}});
    with_retry_after((status, Json(body)).into_response(), d, period_end)
}

/// `r` with `Retry-After` (the seconds until the quota's period ends) when it is a 429.
pub(crate) fn with_retry_after(mut r: Response, d: &Decision, period_end: Option<DateTime<Utc>>) -> Response {
    if let (StatusCode::TOO_MANY_REQUESTS, Some(end)) = (r.status(), period_end) {
        let now = d.facts.trusted_time.map_or_else(Utc::now, |t| t.max(Utc::now()));
        if let Ok(v) = HeaderValue::from_str(&retry_after(end, now).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// 503: the use could not be recorded, so it is not allowed (the cause is in the message and the log).
fn unavailable(cause: &str) -> Response {
    tracing::error!(%cause, "usage could not be recorded; request refused");
    let message =
        format!("the license state could not record this use ({cause}); try again, and check the agent's state file");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": {"code": "STATE_UNAVAILABLE", "message": message}})),
    )
        .into_response()
}

/// A tower layer that lets a request through only when the license allows `feature` (and, with
/// [`RequireFeature::consuming`], uses its quota first); otherwise answers as the module's table says.
#[derive(Clone)]
pub struct RequireFeature {
    agent: Agent,
    feature: Arc<str>,
    amount: u64,
}

#[allow(non_snake_case)]
/// `RequireFeature(agent, "crm")`: the layer that requires `feature`.
pub fn RequireFeature(agent: Agent, feature: &str) -> RequireFeature {
    RequireFeature::new(agent, feature)
}

impl RequireFeature {
    /// Requires `feature` (a plain check, answered from memory).
    pub fn new(agent: Agent, feature: &str) -> Self {
        RequireFeature { agent, feature: feature.into(), amount: 0 }
    }

    /// Requires `feature` and uses `amount` units of its quota for each request let through (recorded in the
    /// state file before the request goes on, sent to the server with the next heartbeat).
    pub fn consuming(agent: Agent, feature: &str, amount: u64) -> Self {
        RequireFeature { agent, feature: feature.into(), amount }
    }
}

impl<S> tower::Layer<S> for RequireFeature {
    type Service = RequireFeatureService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireFeatureService { gate: self.clone(), inner }
    }
}

/// The service [`RequireFeature`] wraps a route in.
#[derive(Clone)]
pub struct RequireFeatureService<S> {
    gate: RequireFeature,
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for RequireFeatureService<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let g = self.gate.clone();
        if g.amount == 0 {
            // A plain check is answered from memory, at once.
            let d = g.agent.check(&g.feature);
            if d.allowed {
                return Box::pin(self.inner.call(req));
            }
            let r = denied(&g.agent, &g.feature, 0, &d);
            return Box::pin(async move { Ok(r) });
        }
        // Using quota writes the state file: off the async worker threads. The service that was polled ready is
        // the one called (a fresh clone stays behind for the next request).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (agent, feature, amount) = (g.agent.clone(), g.feature.clone(), g.amount);
            let used = tokio::task::spawn_blocking(move || agent.try_consume(&feature, amount)).await;
            match used {
                Ok(Ok(d)) if d.allowed => inner.call(req).await,
                Ok(Ok(d)) => Ok(denied(&g.agent, &g.feature, g.amount, &d)),
                Ok(Err(e)) => Ok(unavailable(&e.to_string())),
                Err(e) => Ok(unavailable(&e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let t: DateTime<Utc> = "2026-06-01T23:59:58.200Z".parse().unwrap_or_default();
        let end: DateTime<Utc> = "2026-06-02T00:00:00Z".parse().unwrap_or_default();
        assert_eq!(retry_after(end, t), 2);
        assert_eq!(retry_after(end, end), 1);
        assert_eq!(retry_after(end, end + chrono::Duration::hours(1)), 1);
    }

    #[test]
    fn statuses_follow_the_table() {
        let d = |allowed, reason| Decision { allowed, reason, facts: Default::default() };
        let end = Some(Utc::now());
        assert_eq!(status_of(&d(true, Reason::Valid), 0, None), StatusCode::OK);
        assert_eq!(status_of(&d(false, Reason::NotEntitled), 0, None), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(status_of(&d(false, Reason::FeatureDisabled), 0, None), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(status_of(&d(false, Reason::QuotaExceeded), 1, end), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status_of(&d(false, Reason::QuotaExceeded), 1, None), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(status_of(&d(false, Reason::Expired), 0, None), StatusCode::FORBIDDEN);
        assert_eq!(status_of(&d(false, Reason::SignatureInvalid), 0, end), StatusCode::FORBIDDEN);
        // More than a whole period's quota in one use: waiting for the next period would not help.
        let mut big = d(false, Reason::QuotaExceeded);
        big.facts.limit = Some(10);
        assert_eq!(status_of(&big, 10, end), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status_of(&big, 11, end), StatusCode::PAYMENT_REQUIRED);
    }
}
