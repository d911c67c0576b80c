//! Usage amounts are bounded per event (2^40) and totals saturate at i64::MAX instead of turning into REALs.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use tessera_server::store::{HeartbeatOp, UsageEvent};
use uuid::Uuid;

use crate::common::*;

#[tokio::test]
async fn a_usage_amount_above_two_to_the_forty_is_refused() {
    let h = Harness::new().await;
    let f = h.fixture("usage", 1, "SUBSCRIPTION").await;
    let dev = device();
    let (s, r) = activate(&h, &f.key, &dev, fingerprint("u")).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let act = r["activation_id"].as_str().unwrap().to_string();
    let body = |amount: i64| {
        json!({"activation_id": act, "nonce": nonce(), "sent_at": Utc::now(),
               "usage": [{"id": Uuid::new_v4(), "feature": "api_calls", "amount": amount, "recorded_at": Utc::now()}]})
    };
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &dev, body((1 << 40) + 1)).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("1099511627776"), "{v}");
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &dev, body(i64::MAX)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let b = body(1 << 40);
    let n = b["nonce"].as_str().unwrap().to_string();
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &dev, b).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(open_signed(&h.keys(), &v, &n)["usage_totals"]["api_calls"], 1u64 << 40);
}

#[tokio::test]
async fn usage_totals_saturate_and_stay_integers() {
    let h = Harness::new().await;
    let f = h.fixture("sat", 1, "SUBSCRIPTION").await;
    let dev = device();
    let (s, r) = activate(&h, &f.key, &dev, fingerprint("s")).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let activation_id: Uuid = r["activation_id"].as_str().unwrap().parse().unwrap();
    let license_id: Uuid = f.license.parse().unwrap();
    let event =
        |amount: i64| UsageEvent { id: Uuid::new_v4(), feature: "api_calls".into(), amount, recorded_at: Utc::now() };
    for amounts in [vec![i64::MAX - 10], vec![5, 100], vec![i64::MAX]] {
        let out = h
            .services
            .store
            .heartbeat(HeartbeatOp {
                activation_id,
                license_id,
                now: Utc::now(),
                lease_expires_at: None,
                usage: amounts.into_iter().map(event).collect(),
                audit: None,
            })
            .await
            .unwrap();
        assert!(out.active);
    }
    // Read back as an INTEGER (a REAL would fail to decode as i64).
    assert_eq!(
        h.services.store.usage_totals(license_id).await.unwrap().as_slice(),
        &[("api_calls".to_string(), i64::MAX)]
    );
}

#[tokio::test]
async fn usage_ids_are_scoped_to_their_license() {
    let h = Harness::new().await;
    // Two licenses of one customer: the same event id sent on both counts on both (an id used on an unmetered
    // license must not make the metered one skip it as a duplicate).
    let a = h.fixture("scope-a", 1, "SUBSCRIPTION").await;
    let b = h.fixture("scope-b", 1, "SUBSCRIPTION").await;
    let id = Uuid::new_v4();
    for (f, seed) in [(&a, "a"), (&b, "b")] {
        let dev = device();
        let (s, r) = activate(&h, &f.key, &dev, fingerprint(seed)).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        let n = nonce();
        let body = json!({"activation_id": r["activation_id"], "nonce": n, "sent_at": Utc::now(),
                          "usage": [{"id": id, "feature": "api_calls", "amount": 2, "recorded_at": Utc::now()}]});
        for _ in 0..2 {
            let (s, v) = device_call(&h, "/v1/client/heartbeat", &dev, body.clone()).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let r = open_signed(&h.keys(), &v, &n);
            assert_eq!(r["accepted_usage"][0], id.to_string());
            assert_eq!(r["usage_totals"]["api_calls"], 2, "{seed}: counted once on its own license: {r}");
        }
    }
}
