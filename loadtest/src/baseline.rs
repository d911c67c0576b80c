//! The baseline endpoint: the least work any signed client endpoint does, and nothing else.
//!
//! Verify the client's Ed25519 signature over the raw body (as the heartbeat does), parse the JSON, and answer
//! with a signed envelope echoing the nonce. Same HTTP stack as the server (axum on tokio), no database.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tessera_core::crypto::Domain;
use tessera_core::encoding::{b64url, b64url_decode};
use tessera_core::envelope::Envelope;
use tessera_core::{SigningKey, VerifyingKey};

pub const PATH: &str = "/baseline";

struct Baseline {
    server_key: SigningKey,
    device_key: VerifyingKey,
}

#[derive(Deserialize)]
struct Body {
    nonce: String,
}

async fn handle(
    State(b): State<Arc<Baseline>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let sig = headers
        .get("x-tessera-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(b64url_decode)
        .ok_or(StatusCode::UNAUTHORIZED)?;
    b.device_key
        .verify(Domain::DeviceMessage, &[PATH.as_bytes()], &body, &sig)
        .map_err(|_| StatusCode::UNAUTHORIZED)?;
    let req: Body = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let payload = serde_json::json!({
        "nonce": req.nonce,
        "server_time": chrono::Utc::now(),
        "result": {"ok": true},
    });
    let env = Envelope::seal(&b.server_key, Domain::ServerResponse, serde_json::to_vec(&payload).unwrap_or_default());
    Ok(Json(serde_json::json!({ "signed": env.to_compact() })))
}

pub fn router(device_key: VerifyingKey) -> Router {
    let state = Arc::new(Baseline { server_key: SigningKey::generate_ed25519(), device_key });
    Router::new().route(PATH, post(handle)).with_state(state)
}

/// A signed baseline request body and its signature header value.
pub fn request(device: &SigningKey, i: u64) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&serde_json::json!({
        "nonce": b64url(&i.to_be_bytes()),
        "sent_at": chrono::Utc::now(),
    }))
    .unwrap_or_default();
    let sig = device.sign(Domain::DeviceMessage, &[PATH.as_bytes()], &body);
    (body, b64url(&sig))
}
