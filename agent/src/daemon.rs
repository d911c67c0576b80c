//! The daemon's local HTTP API: status, feature checks and usage records, answered from memory.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/status` | [`crate::Status`] |
//! | `GET /v1/check/{feature}` | a decision; 200 when allowed, else 402 (not in the plan), 429 (quota per period used up, `Retry-After`) or 403, as [`crate::gate`] says |
//! | `GET /v1/check/{feature}?challenge=<base64url>` | the same, plus `attestation` (the decision signed by the device key over the challenge) and `evidence` (the vendor-signed license file and activation token): see [`crate::AttestedCheck`] |
//! | `POST /v1/usage` `{"feature": "...", "amount": 1}` | a decision; 200 when recorded, else as for a check |
//! | `GET /healthz` | `ok` |
//!
//! Listen on loopback only: the API has no authentication of its own. An application that must not trust
//! whatever answers on that port asks with a challenge and verifies the answer with the vendor's public key
//! (agent/README.md, "Verifying the daemon's answers").

use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tessera_core::Decision;

use crate::agent::Agent;

#[derive(Debug, Deserialize)]
pub struct UsageBody {
    pub feature: String,
    #[serde(default = "one")]
    pub amount: u64,
}

fn one() -> u64 {
    1
}

fn decision_body(d: &Decision) -> serde_json::Value {
    serde_json::json!({
        "allowed": d.allowed,
        "reason": d.reason,
        "explanation": d.reason.explain(),
        "facts": d.facts,
    })
}

fn decision_status(agent: &Agent, feature: &str, d: &Decision) -> StatusCode {
    crate::gate::status_of(d, 0, agent.quota_period_end(feature))
}

/// The decision as JSON, with the statuses of [`crate::gate`]: a 402 carries the license's upgrade offer, a 429
/// its `Retry-After`.
fn decision_response(agent: &Agent, feature: &str, amount: u64, d: Decision) -> Response {
    let mut body = decision_body(&d);
    let period_end = agent.quota_period_end(feature);
    if let Some(end) = period_end {
        body["period_ends_at"] = serde_json::json!(end);
    }
    let status = crate::gate::status_of(&d, amount, period_end);
    if status == StatusCode::PAYMENT_REQUIRED {
        if let Some(up) = agent.upgrade_for(feature) {
            body["upgrade"] = serde_json::to_value(up).unwrap_or_default();
        }
    }
    crate::gate::with_retry_after((status, Json(body)).into_response(), &d, period_end)
}

fn bad_request(code: &str, message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    /// 16 to 64 random bytes, base64url: ask for an attested answer.
    pub challenge: Option<String>,
}

async fn status(State(agent): State<Agent>) -> Response {
    Json(agent.status()).into_response()
}

async fn check(State(agent): State<Agent>, Path(feature): Path<String>, Query(q): Query<CheckQuery>) -> Response {
    let Some(challenge) = q.challenge else {
        let d = agent.check(&feature);
        return decision_response(&agent, &feature, 0, d);
    };
    let Some(bytes) = tessera_core::encoding::b64url_decode(&challenge).filter(|b| (16..=64).contains(&b.len())) else {
        return bad_request(
            "INVALID_CHALLENGE",
            "challenge must be 16 to 64 random bytes in base64url (no padding); make a new one for every check",
        );
    };
    match agent.check_attested(&feature, &bytes) {
        Ok(a) => {
            let mut body = decision_body(&a.decision);
            body["challenge"] = serde_json::Value::String(challenge);
            body["attestation"] = serde_json::Value::String(a.attestation);
            body["device_public_key"] = serde_json::Value::String(a.device_public_key);
            body["evidence"] = serde_json::to_value(&a.evidence).unwrap_or_default();
            (decision_status(&agent, &feature, &a.decision), Json(body)).into_response()
        }
        Err(e) => bad_request("INVALID_CHALLENGE", &e.to_string()),
    }
}

async fn usage(State(agent): State<Agent>, Json(body): Json<UsageBody>) -> Response {
    if body.amount == 0 {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": {"code": "INVALID_AMOUNT", "message": "amount must be at least 1"}})),
        )
            .into_response();
    }
    let a = agent.clone();
    let (feature, amount) = (body.feature.clone(), body.amount);
    let result = tokio::task::spawn_blocking(move || a.try_consume(&body.feature, body.amount)).await;
    match result {
        Ok(Ok(d)) => decision_response(&agent, &feature, amount, d),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": {"code": "STATE_UNAVAILABLE", "message": e.to_string()}})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": {"code": "INTERNAL", "message": e.to_string()}})),
        )
            .into_response(),
    }
}

/// The router, testable without a port.
pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/status", get(status))
        .route("/v1/check/{feature}", get(check))
        .route("/v1/usage", post(usage))
        .with_state(agent)
}

/// Serves the local API on `addr` and runs heartbeats until the process is stopped.
pub async fn serve(agent: Agent, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "tessera-agent daemon listening");
    let beats = agent.spawn_heartbeats();
    let result = axum::serve(listener, router(agent)).with_graceful_shutdown(tessera_core::shutdown::signal()).await;
    beats.abort();
    result
}

/// Serves the local API on a Unix socket (mode 0600) and runs heartbeats.
#[cfg(unix)]
pub async fn serve_unix(agent: Agent, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(path = %path.display(), "tessera-agent daemon listening");
    let beats = agent.spawn_heartbeats();
    let result = axum::serve(listener, router(agent)).with_graceful_shutdown(tessera_core::shutdown::signal()).await;
    beats.abort();
    result
}
