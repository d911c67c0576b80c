//! Offline endpoints: staff endpoints need a token and stay within the caller's tenant (even with a license
//! key); self-service endpoints are rate limited per license key.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use tessera_core::offline::SignedRequest;
use tessera_core::SigningKey;

use crate::common::*;

fn receipt(key: &str, dev: &SigningKey, request: &SignedRequest) -> String {
    receipt_for(key, dev, request, Utc::now())
}

#[tokio::test]
async fn staff_offline_endpoints_need_a_token_and_stay_in_their_tenant() {
    let h = Harness::new().await;
    let a = h.fixture("a", 2, "PERPETUAL").await;
    let b = h.fixture("b", 2, "PERPETUAL").await;
    let dev = device();
    let (code, request) = signed_request(&a.key, &dev, 1);

    // No token on the staff endpoints: 401, even with the license key.
    let (s, v) = h.post("/v1/offline/respond", None, json!({"request_code": code, "license_key": a.key})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{v}");
    let (s, v) = h.post("/v1/offline/receipt", None, json!({"receipt_code": receipt(&a.key, &dev, &request)})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{v}");

    // B's staff holding A's license key cannot answer for A's license.
    let (s, v) =
        h.post("/v1/offline/respond", Some(&b.token), json!({"request_code": code, "license_key": a.key})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::NOT_FOUND, "LICENSE_NOT_FOUND"), "{v}");
    let (_, acts) = h.get(&format!("/v1/licenses/{}/activations", a.license), Some(&a.token)).await;
    assert_eq!(acts["items"].as_array().unwrap().len(), 0, "nothing was activated: {acts}");

    // A's staff (and the vendor admin) can, with or without the key.
    let (s, v) =
        h.post("/v1/offline/respond", Some(&a.token), json!({"request_code": code, "license_key": a.key})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) =
        h.post("/v1/offline/respond", Some(&h.admin), json!({"request_code": code, "license_key": a.key})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Self-service still works without a token.
    let (s, v) = h.post("/v1/client/offline/respond", None, json!({"request_code": code, "license_key": a.key})).await;
    assert_eq!((s, v["summary"]["reused"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (s, v) =
        h.post("/v1/client/offline/receipt", None, json!({"receipt_code": receipt(&a.key, &dev, &request)})).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
}

#[tokio::test]
async fn self_service_offline_endpoints_are_rate_limited_per_license_key() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::with_config(dir, |c| {
        c.rate_limits.per_key_per_sec = 0.001;
        c.rate_limits.per_key_burst = 2.0;
    })
    .await;
    let f = h.fixture("rl", 5, "PERPETUAL").await;
    let other = h.fixture("rl2", 5, "PERPETUAL").await;
    let dev = device();
    let (code, request) = signed_request(&f.key, &dev, 1);
    let body = json!({"request_code": code, "license_key": f.key});
    for _ in 0..2 {
        let (s, v) = h.post("/v1/client/offline/respond", None, body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = h.post("/v1/client/offline/respond", None, body.clone()).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"), "{v}");
    // Receipts count against the same key.
    let (s, v) =
        h.post("/v1/client/offline/receipt", None, json!({"receipt_code": receipt(&f.key, &dev, &request)})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"), "{v}");
    // Staff are not limited by it, and another key has its own budget.
    let (s, v) = h.post("/v1/offline/respond", Some(&f.token), body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let odev = device();
    let (ocode, orequest) = signed_request(&other.key, &odev, 1);
    let (s, v) =
        h.post("/v1/client/offline/respond", None, json!({"request_code": ocode, "license_key": other.key})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h
        .post("/v1/client/offline/receipt", None, json!({"receipt_code": receipt(&other.key, &odev, &orequest)}))
        .await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
}
