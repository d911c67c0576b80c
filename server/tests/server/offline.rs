use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use tessera_core::offline::{SignedEmergency, SignedResponse};
use tessera_core::LicenseKey;

use crate::common::*;

#[tokio::test]
async fn offline_respond_receipt_and_seats() {
    let h = Harness::new().await;
    let f = h.fixture("o", 1, "PERPETUAL").await;
    let dev = device();
    let (code, signed) = signed_request(&f.key, &dev, 42);
    let (s, v) = h.post("/v1/offline/respond", Some(&f.token), json!({"request_code": code.to_lowercase()})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["summary"]["license_id"], f.license.as_str());
    assert_eq!(v["summary"]["seats_used"], 1);
    let resp = SignedResponse::decode(v["response_code"].as_str().unwrap()).unwrap();
    let k = LicenseKey::parse(&f.key).unwrap();
    resp.verify(&h.keys(), &bind(&k, &f.product), &signed).unwrap();
    assert_eq!(resp.grant.license_id.to_string(), f.license);

    // Self-service: same device again is reused; key required and must match.
    let (s, v) = h.post("/v1/client/offline/respond", None, json!({"request_code": code, "license_key": f.key})).await;
    assert_eq!((s, v["summary"]["reused"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (s, v) = h.post("/v1/client/offline/respond", None, json!({"request_code": code})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let other = h.fixture("o2", 1, "PERPETUAL").await;
    let (s, v) =
        h.post("/v1/client/offline/respond", None, json!({"request_code": code, "license_key": other.key})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "CODE_MISMATCH"));
    // Other tenant's staff cannot answer it.
    let (s, _) = h.post("/v1/offline/respond", Some(&other.token), json!({"request_code": code})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Seat limit: a second device is refused.
    let dev2 = device();
    let (code2, _) = signed_request(&f.key, &dev2, 42);
    let (s, v) = h.post("/v1/offline/respond", Some(&f.token), json!({"request_code": code2})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"));

    // Typo → INVALID_CODE naming a group.
    let mut broken: Vec<char> = code.chars().collect();
    let i = 12;
    broken[i] = if broken[i] == 'A' { 'B' } else { 'A' };
    let broken: String = broken.into_iter().collect();
    let (s, v) = h.post("/v1/offline/respond", Some(&f.token), json!({"request_code": broken})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::BAD_REQUEST, "INVALID_CODE"));
    assert!(v["error"]["message"].as_str().unwrap().contains("group"), "{v}");

    // The receipt ends the grant once; its seat stays counted until the grant's lease (30 days by default)
    // would have ended, then the second device fits.
    let receipt = receipt_for(&f.key, &dev, &signed, Utc::now());
    let (s, v) = h.post("/v1/offline/receipt", Some(&f.token), json!({"receipt_code": receipt})).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (s, v) = h.post("/v1/client/offline/receipt", None, json!({"receipt_code": receipt})).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    let (s, v) = h.post("/v1/offline/respond", Some(&f.token), json!({"request_code": code2})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    let (s, v) = h
        .call(
            axum::http::Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.advance(chrono::Duration::days(30) + chrono::Duration::seconds(1));
    let (s, v) = h.post("/v1/offline/respond", Some(&f.token), json!({"request_code": code2})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn emergency_codes_limits_binding_and_listing() {
    let h = Harness::new().await;
    let f = h.fixture("e", 1, "SUBSCRIPTION").await;
    let path = format!("/v1/licenses/{}/emergency-codes", f.license);
    let t = Some(f.token.as_str());
    let (s, v) = h.post(&path, t, json!({"reason": "  "})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"));
    let (s, v) = h.post(&path, t, json!({"validity_hours": 1})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "reason is mandatory: {v}");
    let (s, _) = h.post(&path, t, json!({"reason": "x", "validity_hours": 169})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // By default a code must be bound to one device (its request code).
    let (s, v) = h.post(&path, t, json!({"reason": "server outage"})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "EMERGENCY_BINDING_REQUIRED"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("request-code"), "{v}");
    // A policy may allow unbound codes.
    let (s, v) = h
        .call(
            axum::http::Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            t,
            Some(json!({"emergency": {"enabled": true, "validity_hours": 24, "max_per_30_days": 3,
                                      "scope": "LICENSED_FEATURES", "require_binding": false}})),
        )
        .await;
    assert_eq!((s, &v["emergency"]["require_binding"]), (StatusCode::OK, &json!(false)), "{v}");

    let k = LicenseKey::parse(&f.key).unwrap();
    let (s, v) = h.post(&path, t, json!({"reason": "server outage"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let code = v["code"].as_str().unwrap();
    assert!(code.len() <= 150, "{} chars", code.len());
    let e = SignedEmergency::decode(code).unwrap();
    assert!(!e.code.bound);
    let hours = (e.code.expires_at - Utc::now()).num_minutes();
    assert!((23 * 60..=24 * 60 + 1).contains(&hours), "{hours}");
    e.verify(&h.keys(), &bind(&k, &f.product), &[9u8; 32]).unwrap();

    let dev = device();
    let (req, _) = signed_request(&f.key, &dev, 42);
    let (s, v) = h.post(&path, t, json!({"reason": "bound", "validity_hours": 2, "request_code": req})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["serial"], 2);
    let e = SignedEmergency::decode(v["code"].as_str().unwrap()).unwrap();
    assert!(e.code.bound);
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&dev.verifying_key().public_bytes());
    e.verify(&h.keys(), &bind(&k, &f.product), &dpk).unwrap();
    assert!(e.verify(&h.keys(), &bind(&k, &f.product), &[1u8; 32]).is_err(), "bound code fails on another device");

    let (s, _) = h.post(&path, t, json!({"reason": "third"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = h.post(&path, t, json!({"reason": "fourth"})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "EMERGENCY_LIMIT_REACHED"));
    let (_, list) = h.get(&path, t).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert_eq!(list["items"][1]["reason"], "bound");
    // 31 days later the window has room again.
    h.advance(chrono::Duration::days(31));
    let (s, _) = h.post(&path, t, json!({"reason": "later"})).await;
    assert_eq!(s, StatusCode::CREATED);
}
