//! License restrictions: values are checked when written, and IP_RANGE / DOMAIN are enforced online.

use axum::http::{Method, StatusCode};
use chrono::Utc;
use serde_json::{json, Value};
use tessera_core::Domain;

use crate::common::*;

async fn patch_restrictions(h: &Harness, f: &Fixture, restrictions: Value) -> (StatusCode, Value) {
    h.call(
        Method::PATCH,
        &format!("/v1/licenses/{}", f.license),
        Some(&f.token),
        Some(json!({"restrictions": restrictions})),
    )
    .await
}

#[tokio::test]
async fn bad_restriction_values_are_refused_naming_the_value() {
    let h = Harness::new().await;
    let f = h.fixture("bad-restrictions", 5, "SUBSCRIPTION").await;
    for (kind, value) in [
        ("IP_RANGE", "10.0.0.0/33"),
        ("IP_RANGE", "garbage"),
        ("IP_RANGE", "2001:db8::/129"),
        ("IP_RANGE", "10.0.0.0/ 8"),
        ("GEOGRAPHIC", "DEU"),
        ("GEOGRAPHIC", "1A"),
        ("DOMAIN", "exa mple.com"),
        ("DOMAIN", "*.*.example.com"),
        ("DOMAIN", "-bad.example.com"),
    ] {
        let r = json!([{"kind": kind, "mode": "ALLOW", "values": [value]}]);
        let (s, v) = patch_restrictions(&h, &f, r.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{kind} {value}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(value), "{kind} {value}: {v}");
        assert_eq!(v["error"]["details"]["value"], value);
        // The same check on templates.
        let (s, v) = h
            .call(
                Method::PATCH,
                &format!("/v1/templates/{}", f.template),
                Some(&f.token),
                Some(json!({"restrictions": r})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "template {kind} {value}: {v}");
    }
    let (s, v) = patch_restrictions(&h, &f, json!([{"kind": "IP_RANGE", "mode": "ALLOW", "values": []}])).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn restriction_values_are_normalised() {
    let h = Harness::new().await;
    let f = h.fixture("norm-restrictions", 5, "SUBSCRIPTION").await;
    let (s, v) = patch_restrictions(
        &h,
        &f,
        json!([
            {"kind": "IP_RANGE", "mode": "ALLOW", "values": [" 10.1.2.3/8", "2001:DB8::1/32", "192.0.2.7"]},
            {"kind": "GEOGRAPHIC", "mode": "DENY", "values": ["de", "Fr"]},
            {"kind": "DOMAIN", "mode": "ALLOW", "values": ["*.Example.COM", "corp.example.org."]},
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let lic = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await.1;
    let r = &lic["restrictions"];
    assert_eq!(r[0]["values"], json!(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]), "{lic}");
    assert_eq!(r[1]["values"], json!(["DE", "FR"]));
    assert_eq!(r[2]["values"], json!(["*.example.com", "corp.example.org"]));
}

/// A harness that trusts X-Forwarded-For, so a test can speak from any address.
async fn behind_proxy() -> Harness {
    Harness::with_config(tempfile::tempdir().unwrap(), |c| c.trust_forwarded_for = true).await
}

async fn activate_from(
    h: &Harness,
    ip: &str,
    key: &str,
    dev: &tessera_core::SigningKey,
    seed: &str,
) -> (StatusCode, Value) {
    let n = nonce();
    let body =
        json!({"license_key": key, "device_public_key": device_pub(dev), "fingerprint": fingerprint(seed), "nonce": n});
    let (s, b) = h
        .raw(
            Method::POST,
            "/v1/client/activate",
            None,
            Some(serde_json::to_vec(&body).unwrap()),
            &[("x-forwarded-for", ip)],
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    if s == StatusCode::OK {
        (s, open_signed(&h.keys(), &v, &n))
    } else {
        (s, v)
    }
}

async fn validate_from(h: &Harness, ip: &str, key: &str, domain: Option<&str>) -> String {
    let n = nonce();
    let body = json!({"license_key": key, "feature": "export_pdf", "domain": domain, "nonce": n});
    let (s, b) = h
        .raw(
            Method::POST,
            "/v1/client/validate",
            None,
            Some(serde_json::to_vec(&body).unwrap()),
            &[("x-forwarded-for", ip)],
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    open_signed(&h.keys(), &v, &n)["decision"]["reason"].as_str().unwrap().to_string()
}

async fn heartbeat_from(
    h: &Harness,
    ip: &str,
    dev: &tessera_core::SigningKey,
    activation: &str,
) -> (StatusCode, Value) {
    let path = "/v1/client/heartbeat";
    let bytes =
        serde_json::to_vec(&json!({"activation_id": activation, "nonce": nonce(), "sent_at": Utc::now()})).unwrap();
    let sig = tessera_core::encoding::b64url(&dev.sign(Domain::DeviceMessage, &[path.as_bytes()], &bytes));
    let (s, b) =
        h.raw(Method::POST, path, None, Some(bytes), &[("x-tessera-signature", &sig), ("x-forwarded-for", ip)]).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[tokio::test]
async fn ip_range_restrictions_are_enforced_at_activate_validate_and_heartbeat() {
    let h = behind_proxy().await;
    let f = h.fixture("ip-range", 5, "SUBSCRIPTION").await;
    let (s, v) = patch_restrictions(
        &h,
        &f,
        json!([{"kind": "IP_RANGE", "mode": "ALLOW", "values": ["203.0.113.0/24", "2001:db8::/32"]}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Activate: refused outside the range, allowed inside (also an IPv4-mapped IPv6 address).
    let (s, v) = activate_from(&h, "198.51.100.7", &f.key, &device(), "outside").await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "RESTRICTED"), "{v}");
    let dev = device();
    let (s, a) = activate_from(&h, "203.0.113.9", &f.key, &dev, "inside").await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let (s, v) = activate_from(&h, "::ffff:203.0.113.10", &f.key, &device(), "mapped").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = activate_from(&h, "2001:db8::5", &f.key, &device(), "v6").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 3);

    // Validate: a denied decision outside.
    assert_eq!(validate_from(&h, "203.0.113.200", &f.key, None).await, "VALID");
    assert_eq!(validate_from(&h, "198.51.100.7", &f.key, None).await, "RESTRICTED");

    // Heartbeat: refused outside (no renewal), answered inside.
    let id = a["activation_id"].as_str().unwrap();
    let (s, v) = heartbeat_from(&h, "198.51.100.7", &dev, id).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "RESTRICTED"), "{v}");
    let (s, v) = heartbeat_from(&h, "203.0.113.9", &dev, id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_deny_range_refuses_only_its_addresses() {
    let h = behind_proxy().await;
    let f = h.fixture("ip-deny", 5, "SUBSCRIPTION").await;
    patch_restrictions(&h, &f, json!([{"kind": "IP_RANGE", "mode": "DENY", "values": ["198.51.100.0/24"]}])).await;
    let (s, v) = activate_from(&h, "198.51.100.7", &f.key, &device(), "denied").await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "RESTRICTED"), "{v}");
    let (s, v) = activate_from(&h, "192.0.2.1", &f.key, &device(), "fine").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn domain_restrictions_use_the_reported_domain() {
    let h = behind_proxy().await;
    let f = h.fixture("domain", 5, "SUBSCRIPTION").await;
    patch_restrictions(&h, &f, json!([{"kind": "DOMAIN", "mode": "ALLOW", "values": ["*.example.com"]}])).await;
    assert_eq!(validate_from(&h, "192.0.2.1", &f.key, Some("build01.example.com")).await, "VALID");
    assert_eq!(validate_from(&h, "192.0.2.1", &f.key, Some("example.org")).await, "RESTRICTED");
    // Not reported: unknown facts never deny (the domain is what the agent says, so this is advisory).
    assert_eq!(validate_from(&h, "192.0.2.1", &f.key, None).await, "VALID");
}
