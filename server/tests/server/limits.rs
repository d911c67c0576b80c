//! Bounds on what anyone on the internet can make the server do: unknown keys are counted, not audited one row
//! each; the admin API has a per-IP limit; IPv6 clients are bucketed by /64.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

async fn audit_rows(h: &Harness) -> Vec<Value> {
    h.services.flush_audit().await;
    let (s, v) = h.get("/v1/audit?limit=1000", Some(&h.admin.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn unknown_license_keys_are_counted_not_audited_one_row_each() {
    let h = Harness::new().await;
    let before = audit_rows(&h).await.len();
    for i in 0..200 {
        let key = tessera_core::LicenseKey::generate().expose();
        let path = if i % 2 == 0 { "/v1/client/activate" } else { "/v1/client/validate" };
        let (s, v) = h
            .post(
                path,
                None,
                json!({"license_key": key, "device_public_key": device_pub(&device()),
                                      "fingerprint": fingerprint("x"), "nonce": nonce()}),
            )
            .await;
        assert_eq!((s, err_code(&v).as_str()), (StatusCode::NOT_FOUND, "LICENSE_NOT_FOUND"));
    }
    let rows = audit_rows(&h).await;
    let new: Vec<&Value> = rows.iter().skip(before).collect();
    assert!(new.len() <= 1, "at most one summary row per window, got {}: {new:?}", new.len());
    assert_eq!(new[0]["action"], "client.unknown_key");
    assert_eq!(new[0]["outcome"], "LICENSE_NOT_FOUND");
    // The count is in the metrics (and in the next summary row, a window later).
    let (_, body) = h.raw(Method::GET, "/metrics", Some(&h.admin.clone()), None, &[]).await;
    let text = String::from_utf8(body).unwrap();
    let line = text.lines().find(|l| l.starts_with("tessera_client_refusals_total{code=\"LICENSE_NOT_FOUND\"}"));
    let n: u64 = line.unwrap_or_else(|| panic!("{text}")).rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 200, "{line:?}");
    h.advance(chrono::Duration::seconds(61));
    let (s, _) = h
        .post(
            "/v1/client/validate",
            None,
            json!({"license_key": tessera_core::LicenseKey::generate().expose(), "nonce": nonce()}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let rows = audit_rows(&h).await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["details"]["refusals"].as_u64()),
        (Some("client.unknown_key"), Some(200))
    );
}

#[tokio::test]
async fn the_admin_api_has_a_per_ip_limit() {
    let h = Harness::with_config(tempfile::tempdir().unwrap(), |c| {
        c.rate_limits.admin_per_ip_per_sec = 0.01;
        c.rate_limits.admin_per_ip_burst = 3.0;
    })
    .await;
    let admin = h.admin.clone();
    for _ in 0..3 {
        let (s, v) = h.get("/v1/tenants", Some(&admin)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Guessing tokens is limited too: the limit is taken before the token is checked.
    let (s, v) = h.get("/v1/tenants", Some("tsk_admin_guess")).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"), "{v}");
    let (s, _) = h.get("/v1/tenants", Some(&admin)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn ipv6_clients_are_limited_per_64() {
    let h = Harness::with_config(tempfile::tempdir().unwrap(), |c| {
        c.trust_forwarded_for = true;
        c.rate_limits.per_ip_per_sec = 0.01;
        c.rate_limits.per_ip_burst = 3.0;
    })
    .await;
    let validate = |ip: String| {
        let h = &h;
        async move {
            let body = serde_json::to_vec(&json!({"license_key": "TSK-1", "nonce": nonce()})).unwrap();
            h.raw(Method::POST, "/v1/client/validate", None, Some(body), &[("x-forwarded-for", &ip)]).await.0
        }
    };
    // Three addresses of one /64 use up its bucket; a fourth address of the same /64 is refused ...
    for i in 1..=3 {
        assert_ne!(validate(format!("2001:db8:1:2::{i}")).await, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(validate("2001:db8:1:2:abcd::99".into()).await, StatusCode::TOO_MANY_REQUESTS);
    // ... while another /64 has its own.
    assert_ne!(validate("2001:db8:1:3::1".into()).await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn forged_receipts_do_not_use_up_the_license_key_limit() {
    use tessera_core::offline::DeactivationReceipt;
    let h = Harness::with_config(tempfile::tempdir().unwrap(), |c| {
        c.rate_limits.per_key_per_sec = 0.001;
        c.rate_limits.per_key_burst = 3.0;
    })
    .await;
    let f = h.fixture("forged-receipts", 2, "SUBSCRIPTION").await;
    let k = tessera_core::LicenseKey::parse(&f.key).unwrap();
    // Receipts with the license's hint (printed in every code) but signed by a key of no activation.
    for _ in 0..10 {
        let forger = device();
        let mut dpk = [0u8; 32];
        dpk.copy_from_slice(&forger.verifying_key().public_bytes());
        let code = DeactivationReceipt::for_device(&k.hash(), &dpk, [9; 8], chrono::Utc::now())
            .sign(&k.hash(), &forger)
            .unwrap();
        let (s, v) = h.post("/v1/client/offline/receipt", None, json!({"receipt_code": code})).await;
        assert_eq!((s, err_code(&v).as_str()), (StatusCode::NOT_FOUND, "ACTIVATION_NOT_FOUND"), "{v}");
    }
    // The license's own devices still have their whole limit.
    for i in 0..3 {
        let (s, v) = activate(&h, &f.key, &device(), fingerprint(&format!("d{i}"))).await;
        assert_ne!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    }
}
