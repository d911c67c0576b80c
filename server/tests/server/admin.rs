use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn missing_and_invalid_tokens_are_refused_in_the_error_shape() {
    let h = Harness::new().await;
    for path in [
        "/v1/tenants",
        "/v1/licenses",
        "/v1/products",
        "/v1/customers",
        "/v1/templates",
        "/v1/tokens",
        "/v1/audit/verify",
        "/v1/security/blocked-devices",
        "/v1/events",
    ] {
        let (s, v) = h.get(path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(err_code(&v), "UNAUTHORIZED");
        let (s, v) = h.get(path, Some("tsa_0000000000000000000000000000")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        err_code(&v);
        let (s, _) = h.get(path, Some("not-a-token")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, v) = h.post("/v1/licenses", None, json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    err_code(&v);
}

#[tokio::test]
async fn admin_resources_crud_and_license_lifecycle() {
    let h = Harness::new().await;
    let f = h.fixture("acme", 2, "SUBSCRIPTION").await;
    let t = Some(f.token.as_str());

    // Reads
    let (s, v) = h.get(&format!("/v1/tenants/{}", f.tenant), t).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h.get("/v1/tokens", t).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["items"].as_array().unwrap().iter().all(|x| x.get("token").is_none()));
    let (s, v) = h.get(&format!("/v1/products/{}", f.product), t).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::OK, Some("acme-app")));
    let (s, v) =
        h.call(Method::PATCH, &format!("/v1/products/{}", f.product), t, Some(json!({"name": "Acme Pro"}))).await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("Acme Pro")));
    let (s, v) =
        h.call(Method::PATCH, &format!("/v1/customers/{}", f.customer), t, Some(json!({"email": "x@y.z"}))).await;
    assert_eq!((s, v["email"].as_str()), (StatusCode::OK, Some("x@y.z")));
    let (s, v) = h.get("/v1/customers", t).await;
    assert_eq!((s, v["items"].as_array().unwrap().len()), (StatusCode::OK, 1));

    // Templates: update, duplicate, delete
    let (s, v) = h.call(Method::PATCH, &format!("/v1/templates/{}", f.template), t, Some(json!({"max_activations": 5, "emergency": {"enabled": true, "validity_hours": 48, "max_per_30_days": 2, "scope": "LICENSED_FEATURES"}}))).await;
    assert_eq!((s, v["max_activations"].as_u64()), (StatusCode::OK, Some(5)), "{v}");
    let (s, v) = h.post(&format!("/v1/templates/{}/duplicate", f.template), t, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "std (copy)");
    let dup = v["id"].as_str().unwrap().to_string();
    let (s, _) = h.call(Method::DELETE, &format!("/v1/templates/{dup}"), t, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.get(&format!("/v1/templates/{dup}"), t).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (s, v) = h.call(Method::PATCH, &format!("/v1/templates/{}", f.template), t, Some(json!({"emergency": {"enabled": true, "validity_hours": 500, "max_per_30_days": 2, "scope": "LICENSED_FEATURES"}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // License from template with overrides, and explicit
    let (s, v) =
        h.post("/v1/licenses", t, json!({"template_id": f.template, "max_activations": 7, "perpetual": true})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["max_activations"], 7);
    assert!(v.get("expires_at").is_none());
    assert_eq!(v["emergency"]["validity_hours"], 48);
    let (s, v) = h.post("/v1/licenses", t, json!({"product_id": f.product, "license_type": "CONCURRENT", "max_activations": 3, "expires_at": "2031-01-01T00:00:00Z"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let explicit = v["id"].as_str().unwrap().to_string();

    // Get, by key, file
    let (s, v) = h.get(&format!("/v1/licenses/{}", f.license), t).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("license_key").is_none(), "key is never shown again");
    let (s, v) = h.post("/v1/licenses/by-key", t, json!({"license_key": f.key.to_lowercase()})).await;
    assert_eq!((s, v["id"].as_str()), (StatusCode::OK, Some(f.license.as_str())));
    let (s, body) = h.raw(Method::GET, &format!("/v1/licenses/{}/file", f.license), t, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let claims = tessera_core::token::verify_license_file(std::str::from_utf8(&body).unwrap(), &h.keys()).unwrap();
    assert_eq!(claims.license.id.to_string(), f.license);

    // List, filters, pagination
    let (s, v) = h.get("/v1/licenses?limit=2", t).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let (_, v2) = h.get(&format!("/v1/licenses?limit=2&cursor={cursor}"), t).await;
    assert_eq!(v2["items"].as_array().unwrap().len(), 1);
    assert!(v2.get("next_cursor").is_none());
    let (_, v) = h.get("/v1/licenses?type=concurrent", t).await;
    assert_eq!(v["items"][0]["id"].as_str(), Some(explicit.as_str()));
    let (_, v) = h.get(&format!("/v1/licenses?customer_id={}", f.customer), t).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = h.get("/v1/licenses?expiring_before=2030-01-01T00:00:00Z", t).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (s, v) = h.get("/v1/licenses?status=bogus", t).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    err_code(&v);

    // Update, renew, suspend, reinstate, revoke
    let lp = format!("/v1/licenses/{}", f.license);
    let (s, v) = h.call(Method::PATCH, &lp, t, Some(json!({"max_activations": 4, "features": [{"id": "x"}]}))).await;
    assert_eq!((s, v["max_activations"].as_u64()), (StatusCode::OK, Some(4)), "{v}");
    let old = v["expires_at"].as_str().unwrap().to_string();
    let (s, v) = h.post(&format!("{lp}/renew"), t, json!({"days": 365})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["expires_at"].as_str().unwrap() > old.as_str());
    let (s, v) = h.post(&format!("{lp}/suspend"), t, json!({"reason": "unpaid"})).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("SUSPENDED")));
    let (s, v) = h.post(&format!("{lp}/suspend"), t, json!({})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "INVALID_TRANSITION"));
    let (s, v) = h.call(Method::POST, &format!("{lp}/reinstate"), t, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ACTIVE")), "{v}");
    let (s, v) = h.post(&format!("{lp}/revoke"), t, json!({})).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("REVOKED")));
    let (s, v) = h.post(&format!("{lp}/reinstate"), t, json!({})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "LICENSE_FINAL"));

    // Token revoke
    let (s, v) = h.post("/v1/tokens", t, json!({"name": "ro", "role": "read-only"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let ro = v["token"].as_str().unwrap().to_string();
    assert!(ro.starts_with("tsa_"));
    let (s, _) = h.get("/v1/licenses", Some(&ro)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v2) = h.post("/v1/products", Some(&ro), json!({"name": "nope"})).await;
    assert_eq!((s, err_code(&v2).as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (s, _) = h.call(Method::DELETE, &format!("/v1/tokens/{}", v["id"].as_str().unwrap()), t, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.get("/v1/licenses", Some(&ro)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn transfer_releases_or_keeps_activations_per_policy() {
    let h = Harness::new().await;
    let f = h.fixture("t", 3, "PERPETUAL").await;
    let t = Some(f.token.as_str());
    let dev = device();
    let (s, _) = activate(&h, &f.key, &dev, fingerprint("a")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, c2) = h.post("/v1/customers", t, json!({"name": "Carol"})).await;
    let c2 = c2["id"].as_str().unwrap().to_string();
    let (s, v) = h.post(&format!("/v1/licenses/{}/transfer", f.license), t, json!({"customer_id": c2})).await;
    assert_eq!((s, v["customer_id"].as_str()), (StatusCode::OK, Some(c2.as_str())), "{v}");
    let (_, acts) = h.get(&format!("/v1/licenses/{}/activations", f.license), t).await;
    assert_eq!(acts["items"][0]["status"], "DEACTIVATED", "default policy releases");

    // Keep policy
    let (_, l) = h.post("/v1/licenses", t, json!({"template_id": f.template, "transfer_policy": "KEEP"})).await;
    let key = l["license_key"].as_str().unwrap().to_string();
    let id = l["id"].as_str().unwrap().to_string();
    activate(&h, &key, &dev, fingerprint("a")).await;
    let (s, _) = h.post(&format!("/v1/licenses/{id}/transfer"), t, json!({"customer_id": f.customer})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, acts) = h.get(&format!("/v1/licenses/{id}/activations"), t).await;
    assert_eq!(acts["items"][0]["status"], "ACTIVE");
}

#[tokio::test]
async fn tenant_b_sees_nothing_of_tenant_a() {
    let h = Harness::new().await;
    let a = h.fixture("a", 2, "SUBSCRIPTION").await;
    let b = h.fixture("b", 2, "SUBSCRIPTION").await;
    let bt = Some(b.token.as_str());
    let dev = device();
    let (_, act) = activate(&h, &a.key, &dev, fingerprint("x")).await;
    let act_id = act["activation_id"].as_str().unwrap().to_string();
    let gets = [
        format!("/v1/tenants/{}", a.tenant),
        format!("/v1/products/{}", a.product),
        format!("/v1/customers/{}", a.customer),
        format!("/v1/templates/{}", a.template),
        format!("/v1/licenses/{}", a.license),
        format!("/v1/licenses/{}/file", a.license),
        format!("/v1/licenses/{}/activations", a.license),
        format!("/v1/licenses/{}/emergency-codes", a.license),
    ];
    for p in &gets {
        let (s, body) = h.raw(Method::GET, p, bt, None, &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(&a.license) && !text.contains("BEGIN TESSERA"), "{p}: {text}");
        err_code(&serde_json::from_slice::<Value>(&body).unwrap());
    }
    let posts = [
        (format!("/v1/licenses/{}/suspend", a.license), json!({})),
        (format!("/v1/licenses/{}/revoke", a.license), json!({})),
        (format!("/v1/licenses/{}/renew", a.license), json!({"days": 3})),
        (format!("/v1/licenses/{}/transfer", a.license), json!({"customer_id": b.customer})),
        (format!("/v1/licenses/{}/emergency-codes", a.license), json!({"reason": "x"})),
        (format!("/v1/templates/{}/duplicate", a.template), json!({})),
        (format!("/v1/activations/{act_id}/deactivate"), json!({})),
        ("/v1/licenses".to_string(), json!({"template_id": a.template})),
        ("/v1/licenses".to_string(), json!({"template_id": b.template, "customer_id": a.customer})),
        ("/v1/licenses/by-key".to_string(), json!({"license_key": a.key})),
        ("/v1/tokens".to_string(), json!({"name": "x", "role": "read-only", "tenant_id": a.tenant})),
        ("/v1/products".to_string(), json!({"name": "x", "tenant_id": a.tenant})),
        ("/v1/security/blocked-devices".to_string(), json!({"activation_id": act_id, "reason": "x"})),
    ];
    for (p, body) in &posts {
        let (s, v) = h.post(p, bt, body.clone()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}: {v}");
        err_code(&v);
    }
    for (m, p, body) in [
        (Method::PATCH, format!("/v1/licenses/{}", a.license), json!({"max_activations": 3})),
        (Method::PATCH, format!("/v1/products/{}", a.product), json!({"name": "x"})),
        (Method::PATCH, format!("/v1/customers/{}", a.customer), json!({"name": "x"})),
        (Method::PATCH, format!("/v1/templates/{}", a.template), json!({"name": "x"})),
        (Method::DELETE, format!("/v1/templates/{}", a.template), json!({})),
    ] {
        let (s, v) = h.call(m, &p, bt, Some(body)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}: {v}");
    }
    for p in ["/v1/licenses", "/v1/products", "/v1/customers", "/v1/templates", "/v1/tokens", "/v1/audit", "/v1/events"]
    {
        let (s, body) = h.raw(Method::GET, p, bt, None, &[]).await;
        assert_eq!(s, StatusCode::OK, "{p}");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(&a.tenant), "{p} leaks tenant A: {text}");
    }
    // Still intact for A.
    let (s, v) = h.get(&format!("/v1/licenses/{}", a.license), Some(&a.token)).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ACTIVE")));
}

#[tokio::test]
async fn malformed_input_is_a_4xx_in_the_error_shape_never_500() {
    let h = Harness::new().await;
    let f = h.fixture("m", 2, "SUBSCRIPTION").await;
    let t = Some(f.token.as_str());
    let lic = f.license.clone();
    let posts: Vec<String> = vec![
        "/v1/tenants".into(),
        "/v1/tokens".into(),
        "/v1/customers".into(),
        "/v1/products".into(),
        "/v1/templates".into(),
        format!("/v1/templates/{}/duplicate", f.template),
        "/v1/licenses".into(),
        "/v1/licenses/by-key".into(),
        format!("/v1/licenses/{lic}/renew"),
        format!("/v1/licenses/{lic}/suspend"),
        format!("/v1/licenses/{lic}/transfer"),
        format!("/v1/licenses/{lic}/emergency-codes"),
        "/v1/security/validate-key".into(),
        "/v1/security/blocked-devices".into(),
        "/v1/security/reports".into(),
        "/v1/offline/respond".into(),
        "/v1/offline/receipt".into(),
        "/v1/client/activate".into(),
        "/v1/client/validate".into(),
        "/v1/client/heartbeat".into(),
        "/v1/client/deactivate".into(),
        "/v1/client/offline/respond".into(),
        "/v1/client/offline/receipt".into(),
    ];
    let bodies: [&[u8]; 6] = [
        b"{\"bad",
        b"[]",
        b"{\"license_key\": 5, \"name\": 7}",
        b"null",
        b"{\"nonce\":\"x\",\"activation_id\":\"nope\"}",
        &[0xff, 0xfe],
    ];
    for p in &posts {
        for body in bodies {
            let (s, b) = h.raw(Method::POST, p, t, Some(body.to_vec()), &[]).await;
            assert!(s.is_client_error(), "{p} with {:?} gave {s}", String::from_utf8_lossy(body));
            let v: Value =
                serde_json::from_slice(&b).unwrap_or_else(|_| panic!("{p}: not JSON: {}", String::from_utf8_lossy(&b)));
            err_code(&v);
        }
    }
    // Bad ids in paths, unknown routes, wrong method, oversized body.
    for p in ["/v1/licenses/not-a-uuid", "/v1/products/123", "/v1/templates/%00"] {
        let (s, v) = h.get(p, t).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{p}");
        err_code(&v);
    }
    let (s, v) = h.get("/v1/nothing", t).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    err_code(&v);
    let (s, v) = h.call(Method::PUT, "/v1/licenses", t, Some(json!({}))).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    err_code(&v);
    let big = vec![b' '; 512 * 1024];
    let (s, b) = h.raw(Method::POST, "/v1/licenses", t, Some(big), &[]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    err_code(&serde_json::from_slice(&b).unwrap());
    // Semantic validation
    for body in [
        json!({"template_id": f.template, "features": [{"id": "bad id!"}]}),
        json!({"template_id": f.template, "heartbeat_interval_secs": 1}),
        json!({"product_id": f.product}),
        json!({"template_id": f.template, "expires_at": "2000-01-01T00:00:00Z", "starts_at": "2001-01-01T00:00:00Z"}),
    ] {
        let (s, v) = h.post("/v1/licenses", t, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
    }
    let (s, v) = h.post("/v1/products", t, json!({"name": "m app"})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "PRODUCT_CODE_TAKEN"));
}

#[tokio::test]
async fn roles_support_and_read_only() {
    let h = Harness::new().await;
    let f = h.fixture("r", 2, "SUBSCRIPTION").await;
    let (_, v) = h.post("/v1/tokens", Some(&f.token), json!({"name": "s", "role": "support"})).await;
    let support = v["token"].as_str().unwrap().to_string();
    let (s, v) = h.post("/v1/tokens", Some(&f.token), json!({"name": "va", "role": "vendor-admin"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "tenant admin cannot mint vendor admins: {v}");
    let (s, v) = h.post("/v1/tokens", Some(&f.token), json!({"name": "Console User alice", "role": "support"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a name that passes for a console user's own token: {v}");
    let (s, v) = h
        .post(
            &format!("/v1/licenses/{}/emergency-codes", f.license),
            Some(&support),
            json!({"reason": "outage", "request_code": signed_request(&f.key, &device(), 1).0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["issued_in_window"].as_u64(), v["left_in_window"].as_u64()), (Some(1), Some(2)), "default 3: {v}");
    let (s, _) = h.post("/v1/licenses", Some(&support), json!({"template_id": f.template})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h.post(&format!("/v1/licenses/{}/suspend", f.license), Some(&support), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h.post("/v1/tenants", Some(&f.token), json!({"name": "x"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn operational_endpoints() {
    let h = Harness::new().await;
    let (s, _) = h.get("/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.get("/readyz", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, doc) = h.get("/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for r in tessera_server::http::openapi::ROUTES {
        assert!(doc["paths"][r.path][r.method].is_object(), "{} {}", r.method, r.path);
    }
    assert!(doc["paths"].as_object().unwrap().len() > 40);
    let (s, _) = h.raw(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "metrics need a token (see ops_access)");
    let (s, body) = h.raw(Method::GET, "/metrics", Some(&h.admin.clone()), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("tessera_http_requests_total"), "{text}");
    assert!(text.contains("tessera_store_op_duration_seconds"));
    for family in
        ["tessera_cache_lookups counter", "tessera_store_write_queue_depth gauge", "tessera_store_reads_waiting gauge"]
    {
        assert!(text.contains(&format!("# TYPE {family}")), "{family} in\n{text}");
    }
    // Other tests of this binary run meanwhile, so the depths may be anything but negative (a taker counting down
    // what nobody counted up).
    for gauge in ["tessera_store_write_queue_depth ", "tessera_store_reads_waiting "] {
        let line = text.lines().find(|l| l.starts_with(gauge)).unwrap_or_else(|| panic!("{gauge} missing"));
        let depth: i64 = line[gauge.len()..].trim().parse().unwrap();
        assert!(depth >= 0, "{line}");
    }
}

/// Console users through the API: made by an admin of their tenant (never a vendor admin by a tenant admin),
/// listed within the tenant without any password hash, re-passworded and revoked within the tenant only.
#[tokio::test]
async fn console_users_are_managed_within_their_tenant() {
    let h = Harness::new().await;
    let f = h.fixture("cu", 2, "SUBSCRIPTION").await;
    let g = h.fixture("cu-other", 2, "SUBSCRIPTION").await;
    let t = Some(f.token.as_str());
    let body = |name: &str, password: &str, role: &str| json!({"username": name, "password": password, "role": role});
    let (s, v) = h.post("/v1/console-users", t, body("Desk.One", "correct horse battery", "support")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["username"], "desk.one");
    assert!(v.get("password_hash").is_none() && !v.to_string().contains("argon2"), "no hash in the answer: {v}");
    let id = v["id"].as_str().unwrap().to_string();
    for (b, want) in [
        (body("desk.one", "another good password", "support"), StatusCode::CONFLICT),
        (body("desk.two", "short", "support"), StatusCode::UNPROCESSABLE_ENTITY),
        (body("desk.two", "desk.two", "support"), StatusCode::UNPROCESSABLE_ENTITY),
        (body("no", "correct horse battery", "support"), StatusCode::UNPROCESSABLE_ENTITY),
        (body("root", "correct horse battery", "vendor-admin"), StatusCode::FORBIDDEN),
        (
            json!({"username": "x.y", "password": "correct horse battery", "role": "support", "admin": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, v) = h.post("/v1/console-users", t, b.clone()).await;
        assert_eq!(s, want, "{b}: {v}");
    }
    let (_, list) = h.get("/v1/console-users", t).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (_, other) = h.get("/v1/console-users", Some(&g.token)).await;
    assert!(other["items"].as_array().unwrap().is_empty(), "another tenant sees none: {other}");
    // Another tenant's admin cannot reset or revoke it.
    let pw = json!({"password": "a brand new passphrase"});
    let (s, _) = h.post(&format!("/v1/console-users/{id}/password"), Some(&g.token), pw.clone()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.raw(Method::DELETE, &format!("/v1/console-users/{id}"), Some(&g.token), None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.post(&format!("/v1/console-users/{id}/password"), t, json!({"password": "short"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = h.post(&format!("/v1/console-users/{id}/password"), t, pw.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = h.raw(Method::DELETE, &format!("/v1/console-users/{id}"), t, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = h.get("/v1/console-users", t).await;
    assert!(list["items"][0]["revoked_at"].is_string(), "{list}");
    let (s, _) = h.post(&format!("/v1/console-users/{id}/password"), t, pw).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a revoked user gets no new password");
    // A support token may not manage users.
    let (_, v) = h.post("/v1/tokens", t, json!({"name": "s", "role": "support"})).await;
    let support = v["token"].as_str().unwrap().to_string();
    let (s, _) =
        h.post("/v1/console-users", Some(&support), body("desk.three", "correct horse battery", "support")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h.get("/v1/console-users", Some(&support)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
