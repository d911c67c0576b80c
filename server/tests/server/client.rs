use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn activate_reuse_seat_limit_validate_heartbeat_deactivate() {
    let h = Harness::new().await;
    let f = h.fixture("c", 2, "SUBSCRIPTION").await;
    let keys = h.keys();
    let d1 = device();
    let (s, r) = activate(&h, &f.key, &d1, fingerprint("one")).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["reused"], false);
    let act1 = r["activation_id"].as_str().unwrap().to_string();
    let claims = tessera_core::token::verify_activation_token(r["activation_token"].as_str().unwrap(), &keys).unwrap();
    assert_eq!(claims.activation_id.to_string(), act1);
    tessera_core::token::verify_license_file(r["license_file"].as_str().unwrap(), &keys).unwrap();

    // Same device key → same activation; same fingerprint with a new key → a new activation replacing it.
    let (_, r) = activate(&h, &f.key, &d1, fingerprint("one")).await;
    assert_eq!((r["reused"].as_bool(), r["activation_id"].as_str()), (Some(true), Some(act1.as_str())));
    let d1b = device();
    let (_, r) = activate(&h, &f.key, &d1b, fingerprint("one")).await;
    assert_eq!(r["reused"], false, "{r}");
    assert_ne!(r["activation_id"].as_str(), Some(act1.as_str()));
    let act1 = r["activation_id"].as_str().unwrap().to_string();
    let d1 = d1b; // the new activation carries the new key

    let d2 = device();
    let (s, _) = activate(&h, &f.key, &d2, fingerprint("two")).await;
    assert_eq!(s, StatusCode::OK);
    let d3 = device();
    let (s, v) = activate(&h, &f.key, &d3, fingerprint("three")).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"));
    assert_eq!(v["error"]["details"]["seats_used"], 2);
    let (_, l) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(l["seats_used"], 2);

    // Validate
    let n = nonce();
    let (s, v) =
        h.post("/v1/client/validate", None, json!({"license_key": f.key, "feature": "export_pdf", "nonce": n})).await;
    assert_eq!(s, StatusCode::OK);
    let r = open_signed(&keys, &v, &n);
    assert_eq!((r["valid"].as_bool(), r["decision"]["reason"].as_str()), (Some(true), Some("VALID")));
    let n = nonce();
    let (_, v) =
        h.post("/v1/client/validate", None, json!({"license_key": f.key, "feature": "nope", "nonce": n})).await;
    assert_eq!(open_signed(&keys, &v, &n)["decision"]["reason"], "NOT_ENTITLED");
    let (s, v) = h
        .post(
            "/v1/client/validate",
            None,
            json!({"license_key": "TSK-00000-00000-00000-00000-00000", "nonce": nonce()}),
        )
        .await;
    assert!(s.is_client_error());
    err_code(&v);

    // Heartbeat with usage, twice (idempotent)
    let usage_id = uuid::Uuid::new_v4();
    let body = |n: &str| {
        json!({"activation_id": act1, "nonce": n, "sent_at": Utc::now(),
        "usage": [{"id": usage_id, "feature": "api_calls", "amount": 3, "recorded_at": Utc::now()}], "metrics": {"cpu": 1}})
    };
    for _ in 0..2 {
        let n = nonce();
        let (s, v) = device_call(&h, "/v1/client/heartbeat", &d1, body(&n)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let r = open_signed(&keys, &v, &n);
        assert_eq!(r["activation_status"], "ACTIVE");
        assert_eq!(r["license_status"], "ACTIVE");
        assert_eq!(r["accepted_usage"][0], usage_id.to_string());
        assert_eq!(r["usage_totals"]["api_calls"], 3, "counted once");
        assert!(r["activation_token"].is_string());
    }
    // Quota shows in validate
    let n = nonce();
    let (_, v) =
        h.post("/v1/client/validate", None, json!({"license_key": f.key, "feature": "api_calls", "nonce": n})).await;
    assert_eq!(open_signed(&keys, &v, &n)["decision"]["facts"]["remaining"], 2);

    // Wrong device signature, missing signature, stale request
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &d2, body(&nonce())).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID"));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, log) = h.get("/v1/audit?limit=1000", Some(&f.token)).await;
    let refused = log["items"].as_array().unwrap().iter().find(|e| e["outcome"] == "SIGNATURE_INVALID").cloned();
    assert_eq!(refused.map(|e| e["action"].clone()), Some(json!("client.heartbeat")), "refusals are audited");
    let (s, v) = h.post("/v1/client/heartbeat", None, body(&nonce())).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNAUTHORIZED, "SIGNATURE_REQUIRED"));
    let stale = json!({"activation_id": act1, "nonce": nonce(), "sent_at": Utc::now() - Duration::hours(1)});
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &d1, stale).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::BAD_REQUEST, "STALE_REQUEST"));

    // Deactivate frees the seat; idempotent; heartbeat then says DEACTIVATED
    for _ in 0..2 {
        let n = nonce();
        let (s, v) = device_call(
            &h,
            "/v1/client/deactivate",
            &d1,
            json!({"activation_id": act1, "nonce": n, "sent_at": Utc::now()}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(open_signed(&keys, &v, &n)["deactivated"], true);
    }
    let n = nonce();
    let (_, v) =
        device_call(&h, "/v1/client/heartbeat", &d1, json!({"activation_id": act1, "nonce": n, "sent_at": Utc::now()}))
            .await;
    assert_eq!(open_signed(&keys, &v, &n)["activation_status"], "DEACTIVATED");
    let (s, _) = activate(&h, &f.key, &d3, fingerprint("three")).await;
    assert_eq!(s, StatusCode::OK, "the freed seat is available");
}

#[tokio::test]
async fn refusals_carry_reason_codes() {
    let h = Harness::new().await;
    let f = h.fixture("r", 5, "SUBSCRIPTION").await;
    let t = Some(f.token.as_str());
    let lp = format!("/v1/licenses/{}", f.license);
    h.post(&format!("{lp}/suspend"), t, json!({})).await;
    let (s, v) = activate(&h, &f.key, &device(), fingerprint("a")).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "LICENSE_SUSPENDED"));
    let n = nonce();
    let (_, v) = h.post("/v1/client/validate", None, json!({"license_key": f.key, "nonce": n})).await;
    assert_eq!(open_signed(&h.keys(), &v, &n)["decision"]["reason"], "SUSPENDED");
    h.post(&format!("{lp}/reinstate"), t, json!({})).await;

    // Blocked device
    let bad = device();
    let (s, v) = h
        .post("/v1/security/blocked-devices", t, json!({"device_public_key": device_pub(&bad), "reason": "fraud"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = activate(&h, &f.key, &bad, fingerprint("b")).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "DEVICE_BLOCKED"));

    // Product mismatch, bad key, bad device key, bad nonce
    let n = nonce();
    let (s, v) = h
        .post(
            "/v1/client/activate",
            None,
            json!({"license_key": f.key, "product_id": uuid::Uuid::new_v4(),
        "device_public_key": device_pub(&device()), "fingerprint": [], "nonce": n}),
        )
        .await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "PRODUCT_MISMATCH"));
    let (s, v) = h
        .post(
            "/v1/client/activate",
            None,
            json!({"license_key": "TSK-1", "device_public_key": device_pub(&device()), "nonce": n}),
        )
        .await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::BAD_REQUEST, "INVALID_LICENSE_KEY"));
    let (s, v) = h
        .post("/v1/client/activate", None, json!({"license_key": f.key, "device_public_key": "abc", "nonce": n}))
        .await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::BAD_REQUEST, "INVALID_DEVICE_KEY"));
    let (s, v) = h
        .post(
            "/v1/client/activate",
            None,
            json!({"license_key": f.key, "device_public_key": device_pub(&device()), "nonce": "!"}),
        )
        .await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::BAD_REQUEST, "INVALID_NONCE"));

    // Revoked and expired
    let (_, l2) = h.post("/v1/licenses", t, json!({"template_id": f.template})).await;
    let k2 = l2["license_key"].as_str().unwrap().to_string();
    h.post(&format!("/v1/licenses/{}/revoke", l2["id"].as_str().unwrap()), t, json!({})).await;
    let (s, v) = activate(&h, &k2, &device(), fingerprint("c")).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "LICENSE_REVOKED"));
    h.advance(Duration::days(40));
    let (s, v) = activate(&h, &f.key, &device(), fingerprint("d")).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "LICENSE_EXPIRED"));
}

#[tokio::test]
async fn lifecycle_jobs_cull_expire_and_warn() {
    let h = Harness::new().await;
    let f = h.fixture("j", 1, "CONCURRENT").await;
    let t = Some(f.token.as_str());
    let d = device();
    let (s, _) = activate(&h, &f.key, &d, fingerprint("a")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = activate(&h, &f.key, &device(), fingerprint("b")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Missed heartbeats: 2 × 60 s lease for floating licenses.
    h.advance(Duration::seconds(200));
    let report = h.services.run_jobs().await.unwrap();
    assert_eq!(report.culled, 1);
    let (s, _) = activate(&h, &f.key, &device(), fingerprint("b")).await;
    assert_eq!(s, StatusCode::OK, "seat freed by the cull");
    // Expiring soon (30-day licenses, 14 days ahead), once.
    h.advance(Duration::days(20));
    let r = h.services.run_jobs().await.unwrap();
    assert_eq!(r.expiring_soon, 1);
    assert_eq!(h.services.run_jobs().await.unwrap().expiring_soon, 0);
    let (_, ev) = h.get(&format!("/v1/events?license_id={}", f.license), t).await;
    assert_eq!(ev["items"][0]["kind"], "license.expiring_soon");
    // Expire
    h.advance(Duration::days(11));
    assert_eq!(h.services.run_jobs().await.unwrap().expired, 1);
    let (_, l) = h.get(&format!("/v1/licenses/{}", f.license), t).await;
    assert_eq!(l["status"], "EXPIRED");
    let (_, l) = h.post(&format!("/v1/licenses/{}/renew", f.license), t, json!({"days": 30})).await;
    assert_eq!(l["status"], "ACTIVE");
    let (s, _) = h.call(Method::POST, "/v1/jobs/run", Some(&h.admin), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn client_endpoints_are_rate_limited_per_license_key() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::with_config(dir, |c| {
        c.rate_limits.per_key_per_sec = 0.5;
        c.rate_limits.per_key_burst = 3.0;
    })
    .await;
    let f = h.fixture("rl", 2, "SUBSCRIPTION").await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let (s, v) = h.post("/v1/client/validate", None, json!({"license_key": f.key, "nonce": nonce()})).await;
        codes.push(s.as_u16());
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(err_code(&v), "RATE_LIMITED");
        }
    }
    assert_eq!(codes, vec![200, 200, 200, 429, 429]);
    let (s, _) = h
        .raw(
            Method::POST,
            "/v1/client/validate",
            None,
            Some(serde_json::to_vec(&json!({"license_key": f.key, "nonce": nonce()})).unwrap()),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn heartbeat_tokens_are_reissued_when_half_the_lease_is_gone() {
    let h = Harness::new().await;
    let f = h.fixture("tk", 2, "CONCURRENT").await;
    let d = device();
    let (_, r) = activate(&h, &f.key, &d, fingerprint("a")).await;
    let act = r["activation_id"].as_str().unwrap().to_string();
    let beat = || async {
        let n = nonce();
        let (s, v) = device_call(
            &h,
            "/v1/client/heartbeat",
            &d,
            json!({"activation_id": act, "nonce": n, "sent_at": Utc::now()}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        open_signed(&h.keys(), &v, &n)
    };
    let first = beat().await;
    let second = beat().await;
    assert_eq!(first["activation_token"], second["activation_token"]);
    assert_eq!(first["lease_expires_at"], second["lease_expires_at"]);
    let claims =
        tessera_core::token::verify_activation_token(first["activation_token"].as_str().unwrap(), &h.keys()).unwrap();
    assert_eq!(json!(claims.lease_expires_at), first["lease_expires_at"], "token and answer agree on the lease");
    h.advance(Duration::seconds(70)); // floating lease is 120 s: past half
    let third = beat().await;
    assert_ne!(third["activation_token"], first["activation_token"]);
    assert!(third["lease_expires_at"].as_str() > first["lease_expires_at"].as_str());
    // The stored lease is the token's: no cull while the token is valid.
    h.advance(Duration::seconds(100));
    assert_eq!(h.services.run_jobs().await.unwrap().culled, 0);
    h.advance(Duration::seconds(30));
    assert_eq!(h.services.run_jobs().await.unwrap().culled, 1);
}
