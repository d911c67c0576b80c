//! License models are enforced, not labels: PER_CPU / PER_CORE take one seat per socket / core, SITE_LICENSE and
//! ENTERPRISE are unlimited, NAMED_USER counts one seat per user; quota answers keep their units.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tessera_core::token::verify_activation_token;

use crate::common::*;

/// Activates with extra body fields (cpu, user_id).
async fn activate_with(h: &Harness, key: &str, machine: &str, extra: Value) -> (StatusCode, Value) {
    let n = nonce();
    let mut body = json!({"license_key": key, "device_public_key": device_pub(&device()),
                          "fingerprint": fingerprint(machine), "nonce": n});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, v) = h.post("/v1/client/activate", None, body).await;
    if s == StatusCode::OK {
        (s, open_signed(&h.keys(), &v, &n))
    } else {
        (s, v)
    }
}

async fn set_model(h: &Harness, f: &Fixture, fields: Value) {
    let (s, v) = h.call(Method::PATCH, &format!("/v1/licenses/{}", f.license), Some(&f.token), Some(fields)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn seats(h: &Harness, f: &Fixture) -> u64 {
    h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await.1["seats_used"].as_u64().unwrap()
}

#[tokio::test]
async fn per_core_and_per_cpu_licenses_count_processors() {
    let h = Harness::new().await;
    let f = h.fixture("cores", 8, "SUBSCRIPTION").await;
    set_model(&h, &f, json!({"license_model": "PER_CORE"})).await;

    // The count is required, and checked.
    let (s, v) = activate_with(&h, &f.key, "m0", json!({})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "CPU_COUNT_REQUIRED"), "{v}");
    for bad in
        [json!({"sockets": 0, "cores": 4}), json!({"sockets": 2, "cores": 1}), json!({"sockets": 1, "cores": 100000})]
    {
        let (s, v) = activate_with(&h, &f.key, "m0", json!({"cpu": bad})).await;
        assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{bad}: {v}");
    }
    assert_eq!(seats(&h, &f).await, 0, "nothing was activated");

    // Two 4-core machines fill 8 seats; the token says what was counted.
    let (s, v) = activate_with(&h, &f.key, "m1", json!({"cpu": {"sockets": 1, "cores": 4}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let claims = verify_activation_token(v["activation_token"].as_str().unwrap(), &h.keys()).unwrap();
    assert_eq!(claims.seats, Some(4));
    assert_eq!(seats(&h, &f).await, 4);
    let (s, v) = activate_with(&h, &f.key, "m2", json!({"cpu": {"sockets": 2, "cores": 4}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(seats(&h, &f).await, 8);
    // A one-core machine does not fit any more, and the answer says how many it needs.
    let (s, v) = activate_with(&h, &f.key, "m3", json!({"cpu": {"sockets": 1, "cores": 1}})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    assert_eq!(v["error"]["details"]["seats_needed"], 1, "{v}");
    // The same machine with a new device key (agent reinstalled) and more cores: the extra cores must fit.
    let (s, v) = activate_with(&h, &f.key, "m1", json!({"cpu": {"sockets": 1, "cores": 64}})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    assert_eq!(seats(&h, &f).await, 8, "nothing changed");
    let (s, v) = activate_with(&h, &f.key, "m1", json!({"cpu": {"sockets": 1, "cores": 4}})).await;
    assert_eq!(s, StatusCode::OK, "the same size still fits: {v}");
    assert_eq!(seats(&h, &f).await, 8);

    // PER_CPU counts sockets: the same two machines take 3 seats.
    let g = h.fixture("sockets", 3, "SUBSCRIPTION").await;
    set_model(&h, &g, json!({"license_model": "PER_CPU"})).await;
    let (s, _) = activate_with(&h, &g.key, "s1", json!({"cpu": {"sockets": 1, "cores": 4}})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = activate_with(&h, &g.key, "s2", json!({"cpu": {"sockets": 2, "cores": 32}})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(seats(&h, &g).await, 3);
    let (s, v) = activate_with(&h, &g.key, "s3", json!({"cpu": {"sockets": 1, "cores": 2}})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    // An air-gapped request cannot report processors: refused with what to do.
    let (code, _) = signed_request(&g.key, &device(), 1);
    let (s, v) = h.post("/v1/offline/respond", Some(&g.token), json!({"request_code": code})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "OFFLINE_NOT_SUPPORTED"), "{v}");
}

#[tokio::test]
async fn site_and_enterprise_licenses_are_unlimited() {
    let h = Harness::new().await;
    for model in ["SITE_LICENSE", "ENTERPRISE"] {
        let f = h.fixture(&format!("site-{model}"), 1, "SUBSCRIPTION").await;
        set_model(&h, &f, json!({"license_model": model})).await;
        for i in 0..4 {
            let (s, v) = activate_with(&h, &f.key, &format!("{model}-{i}"), json!({})).await;
            assert_eq!(s, StatusCode::OK, "{model} #{i}: {v}");
        }
        assert_eq!(seats(&h, &f).await, 4);
        // Restrictions still hold.
        set_model(&h, &f, json!({"restrictions": [{"kind": "DOMAIN", "mode": "ALLOW", "values": ["corp.example"]}]}))
            .await;
        let (s, v) = activate_with(&h, &f.key, &format!("{model}-x"), json!({"domain": "home.example"})).await;
        assert!(s.is_client_error(), "{model}: restrictions apply: {s} {v}");
    }
}

#[tokio::test]
async fn named_user_licenses_count_users_not_devices() {
    let h = Harness::new().await;
    let f = h.fixture("named", 2, "NAMED_USER").await;
    let (s, v) = activate_with(&h, &f.key, "n0", json!({})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "USER_ID_REQUIRED"), "{v}");
    for bad in [json!("\u{0007}bell"), json!("   "), json!("u".repeat(129))] {
        let (s, v) = activate_with(&h, &f.key, "n0", json!({"user_id": bad})).await;
        assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
    }
    assert_eq!(seats(&h, &f).await, 0);

    // Alice on two machines takes one seat; Bob the second; Carol finds none.
    for machine in ["alice-laptop", "alice-desktop"] {
        let (s, v) = activate_with(&h, &f.key, machine, json!({"user_id": "alice"})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let claims = verify_activation_token(v["activation_token"].as_str().unwrap(), &h.keys()).unwrap();
        assert_eq!(claims.user_id.as_deref(), Some("alice"));
    }
    assert_eq!(seats(&h, &f).await, 1);
    let (s, v) = activate_with(&h, &f.key, "bob", json!({"user_id": "bob"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = activate_with(&h, &f.key, "carol", json!({"user_id": "carol"})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    // Nor by reinstalling the agent (a new device key) on Alice's laptop and naming Carol: Alice still has her
    // desktop, so Carol would be a third user.
    let (s, v) = activate_with(&h, &f.key, "alice-laptop", json!({"user_id": "carol"})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    assert_eq!(seats(&h, &f).await, 2);
    // A named-user license cannot also count processors.
    let (s, v) = h
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"license_model": "PER_CORE"})),
        )
        .await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
    let (code, _) = signed_request(&f.key, &device(), 1);
    let (s, v) = h.post("/v1/offline/respond", Some(&f.token), json!({"request_code": code})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "OFFLINE_NOT_SUPPORTED"), "{v}");
}

#[tokio::test]
async fn quota_answers_keep_their_units() {
    let h = Harness::new().await;
    let f = h.fixture("units", 2, "SUBSCRIPTION").await;
    set_model(
        &h,
        &f,
        json!({"features": [{"id": "storage", "limit_value": 1_000_000_000i64, "limit_type": "SIZE"},
                            {"id": "render_time", "limit_value": 3600, "limit_type": "DURATION"}]}),
    )
    .await;
    for (feature, unit) in [("storage", "SIZE"), ("render_time", "DURATION")] {
        let n = nonce();
        let (s, v) =
            h.post("/v1/client/validate", None, json!({"license_key": f.key, "feature": feature, "nonce": n})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let r = open_signed(&h.keys(), &v, &n);
        assert_eq!(r["decision"]["facts"]["limit_type"], unit, "{r}");
    }
}
