//! Feature gating in the host application: what a denied decision means over HTTP, and a tower layer that
//! applies it in front of a route.
//!
//! | decision | status | body `error.code` |
//! |---|---|---|
//! | allowed | (the route answers) | |
//! | `NOT_ENTITLED`, `FEATURE_DISABLED`, `FEATURE_EXPIRED`, a used-up lifetime quota | 402 Payment Required, with the license's upgrade offer for the feature when it has one | the reason |
//! | `QUOTA_EXCEEDED` of a quota per period | 429 Too Many Requests, `Retry-After` the seconds until the period ends | `QUOTA_EXCEEDED` |
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

/// The HTTP status of a decision (see the module's table).
pub fn status_of(d: &Decision) -> StatusCode {
    if d.allowed {
        return StatusCode::OK;
    }
    match d.reason {
        Reason::NotEntitled | Reason::FeatureDisabled | Reason::FeatureExpired => StatusCode::PAYMENT_REQUIRED,
        Reason::QuotaExceeded if d.facts.period_ends_at.is_some() => StatusCode::TOO_MANY_REQUESTS,
        Reason::QuotaExceeded => StatusCode::PAYMENT_REQUIRED,
        _ => StatusCode::FORBIDDEN,
    }
}

/// Whole seconds from `now` until `end`, rounded up, at least 1 (what `Retry-After` says).
pub fn retry_after(end: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (end - now).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

/// The answer to a denied `feature` (see the module's table).
pub fn denied(agent: &Agent, feature: &str, d: &Decision) -> Response {
    let status = status_of(d);
    let mut details = serde_json::json!({"feature": feature, "reason": d.reason, "facts": d.facts});
    let mut message = d.reason.explain().to_string();
    if status == StatusCode::PAYMENT_REQUIRED {
        if let Some(up) = agent.upgrade_for(feature) {
            message = format!("{message}: {} ({}) includes {feature}", up.name, up.plan);
            details["upgrade"] = serde_json::to_value(&up).unwrap_or_default();
        }
    }
    let body = serde_json::json!({"error": {"code": d.reason, "message": message, "details": details}});
    let mut r = (status, Json(body)).into_response();
    if let (StatusCode::TOO_MANY_REQUESTS, Some(end)) = (status, d.facts.period_ends_at) {
        let now = d.facts.trusted_time.map_or_else(Utc::now, |t| t.max(Utc::now()));
        if let Ok(v) = HeaderValue::from_str(&retry_after(end, now).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
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
        let g = &self.gate;
        let decision = match g.amount {
            0 => g.agent.check(&g.feature),
            n => g.agent.consume(&g.feature, n),
        };
        if decision.allowed {
            return Box::pin(self.inner.call(req));
        }
        let r = denied(&g.agent, &g.feature, &decision);
        Box::pin(async move { Ok(r) })
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
        let d = |allowed, reason, period: bool| Decision {
            allowed,
            reason,
            facts: tessera_core::decision::Facts { period_ends_at: period.then(Utc::now), ..Default::default() },
        };
        assert_eq!(status_of(&d(true, Reason::Valid, false)), StatusCode::OK);
        assert_eq!(status_of(&d(false, Reason::NotEntitled, false)), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(status_of(&d(false, Reason::FeatureDisabled, false)), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(status_of(&d(false, Reason::QuotaExceeded, true)), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status_of(&d(false, Reason::QuotaExceeded, false)), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(status_of(&d(false, Reason::Expired, false)), StatusCode::FORBIDDEN);
        assert_eq!(status_of(&d(false, Reason::SignatureInvalid, false)), StatusCode::FORBIDDEN);
    }
}
