//! Tenant isolation sweep: every route of the OpenAPI document, called by tenant B (tenant-admin, read-only and
//! support tokens, and B's license key on the client endpoints) against tenant A's objects, gets 403/404 in the
//! one error shape, shows nothing of tenant A, and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tessera_core::offline::{online_grant_tag, DeactivationReceipt, OfflineRequest};
use tessera_core::{LicenseKey, SigningKey};
use tessera_test_support::*;
use uuid::Uuid;

/// Routes that are not tenant data: operations endpoints and the document itself.
const OPS: &[&str] = &["/healthz", "/readyz", "/metrics", "/v1/openapi.json"];

/// Tables that legitimately change when a refused call is made: the audit trail and the event log.
const LOGS: &[&str] = &["audit_log", "audit_head", "events"];

/// Tenant A's objects, and every string of tenant A that must never reach tenant B.
struct TenantA {
    fx: Fixture,
    customer: String,
    token_id: String,
    activation: String,
    block: String,
    console_user: String,
    plan: String,
    subscription: String,
    request_code: String,
    receipt_code: String,
    secrets: Vec<String>,
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

async fn tenant_a(server: &TestServer) -> TenantA {
    let marker = Uuid::new_v4().simple().to_string();
    let fx = server
        .fixture(
            &format!("tenant-a-{}", &marker[..10]),
            json!({"emergency": tessera_test_support::unbound_emergency()}),
        )
        .await;
    let t = fx.token.clone();
    let customer = id_of(
        &server
            .ok(
                "/v1/customers",
                &t,
                json!({"name": format!("Zelda {}", &marker[..12]), "email": format!("z{}@a.example", &marker[..12])}),
            )
            .await,
    );
    let token = server
        .ok(
            "/v1/tokens",
            &server.admin,
            json!({"name": format!("ro-{}", &marker[..9]), "role": "read-only", "tenant_id": fx.tenant}),
        )
        .await;
    let token_id = id_of(&token);
    let console_user = id_of(
        &server
            .ok(
                "/v1/console-users",
                &t,
                json!({"username": format!("desk-{}", &marker[..10]), "password": "tenant a's passphrase", "role": "support"}),
            )
            .await,
    );

    // A public plan and an add-on, so tenant A's catalog has something to leak.
    let plan = id_of(
        &server
            .ok(
                "/v1/plans",
                &t,
                json!({"product_id": fx.product, "name": format!("Plan {}", &marker[..10]), "template_id": fx.template,
                       "prices": [{"interval": "MONTH", "amount": 4242, "currency": "EUR"}]}),
            )
            .await,
    );
    server
        .ok(
            "/v1/plans",
            &t,
            json!({"product_id": fx.product, "name": format!("Addon {}", &marker[..10]),
                                    "kind": "ADD_ON", "category": format!("cat-{}", &marker[..10])}),
        )
        .await;

    let subscribed = server.ok("/v1/subscriptions", &t, json!({"customer_id": customer, "plan_id": plan})).await;
    let subscription = id_of(&subscribed);
    let sub_license = subscribed["license_id"].as_str().unwrap().to_string();
    let sub_key = subscribed["license_key"].as_str().unwrap().to_string();

    // An online activation of device `dev`.
    let keys = server.keyset();
    let dev = SigningKey::generate_ed25519();
    let n = nonce();
    let (s, v) = server
        .request(
            Method::POST,
            "/v1/client/activate",
            None,
            Some(json!({"license_key": fx.key, "fingerprint": random_fingerprint(), "device_public_key": device_public(&dev),
                        "metadata": {"hostname": format!("host-{}", &marker[..11])}, "nonce": n})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let activation = open_signed(&keys, &v, &n).unwrap()["activation_id"].as_str().unwrap().to_string();

    let block = id_of(
        &server
            .ok(
                "/v1/security/blocked-devices",
                &t,
                json!({"device_public_key": device_public(&SigningKey::generate_ed25519()), "reason": format!("blk {}", &marker[..8])}),
            )
            .await,
    );
    let report =
        id_of(&server.ok("/v1/security/reports", &t, json!({"license_id": fx.license, "kind": "ab-test"})).await);
    let emergency =
        server.ok(&format!("/v1/licenses/{}/emergency-codes", fx.license), &t, json!({"reason": "support"})).await;

    // Codes that act on A's license: an offline request from a second device, and a (valid) deactivation
    // receipt for the online activation.
    let k = LicenseKey::parse(&fx.key).unwrap();
    let dev2 = SigningKey::generate_ed25519();
    let mut dpk2 = [0u8; 32];
    dpk2.copy_from_slice(&dev2.verifying_key().public_bytes());
    let (request_code, _) = OfflineRequest {
        key_hint: k.hint(),
        device_public_key: dpk2,
        fingerprint_commitment: [3u8; 10],
        created_at: Utc::now(),
        nonce: 7,
    }
    .sign(&k.hash(), &dev2)
    .unwrap();
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&dev.verifying_key().public_bytes());
    let grant = online_grant_tag(&activation.parse().unwrap());
    let receipt_code =
        DeactivationReceipt::for_device(&k.hash(), &dpk, grant, Utc::now()).sign(&k.hash(), &dev).unwrap();

    let (_, tenant) = server.get(&format!("/v1/tenants/{}", fx.tenant), &server.admin).await;
    let (_, product) = server.get(&format!("/v1/products/{}", fx.product), &fx.token).await;
    let mut secrets = vec![
        fx.tenant.clone(),
        tenant["name"].as_str().unwrap().to_string(),
        fx.product.to_string(),
        product["name"].as_str().unwrap().to_string(),
        product["code"].as_str().unwrap().to_string(),
        fx.template.clone(),
        fx.customer.clone(),
        customer.clone(),
        format!("Zelda {}", &marker[..12]),
        format!("z{}@a.example", &marker[..12]),
        fx.license.clone(),
        fx.key.clone(),
        token_id.clone(),
        token["prefix"].as_str().unwrap().to_string(),
        activation.clone(),
        device_public(&dev),
        format!("host-{}", &marker[..11]),
        block.clone(),
        format!("blk {}", &marker[..8]),
        console_user.clone(),
        format!("desk-{}", &marker[..10]),
        plan.clone(),
        subscription.clone(),
        sub_license,
        sub_key,
        format!("Plan {}", &marker[..10]),
        format!("Addon {}", &marker[..10]),
        format!("cat-{}", &marker[..10]),
        report,
        emergency["code"].as_str().unwrap().to_string(),
    ];
    secrets.retain(|s| s.len() >= 6);
    TenantA {
        fx,
        customer,
        token_id,
        activation,
        block,
        console_user,
        plan,
        subscription,
        request_code,
        receipt_code,
        secrets,
    }
}

/// Sends a request with raw control over body and headers; returns the status and the body text.
async fn send(
    server: &TestServer,
    method: &Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, String)],
) -> (StatusCode, String) {
    let mut r = server.http.request(method.clone(), format!("{}{path}", server.url()));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

fn assert_no_leak(what: &str, text: &str, secrets: &[String]) {
    let lower = text.to_lowercase();
    for s in secrets {
        assert!(!lower.contains(&s.to_lowercase()), "{what}: the answer shows tenant A's {s:?}: {text}");
    }
}

/// A refusal: one of `allowed`, the one error shape, nothing of tenant A.
fn assert_refused(what: &str, (status, text): &(StatusCode, String), allowed: &[u16], secrets: &[String]) {
    assert!(allowed.contains(&status.as_u16()), "{what}: expected one of {allowed:?}, got {status}: {text}");
    let v: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    error_code(&v);
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{what}: only `error` in the body: {text}");
    assert_no_leak(what, text, secrets);
}

/// The tenant-A object a path's `{id}` names, by the collection the path is under.
fn object_for(path: &str, a: &TenantA) -> String {
    let collection = path.trim_start_matches("/v1/").split('/').next().unwrap();
    match (collection, path) {
        ("tenants", _) => a.fx.tenant.clone(),
        ("tokens", _) => a.token_id.clone(),
        ("console-users", _) => a.console_user.clone(),
        ("customers", _) => a.customer.clone(),
        ("products", _) => a.fx.product.to_string(),
        ("templates", _) => a.fx.template.clone(),
        ("plans", _) => a.plan.clone(),
        ("subscriptions", _) => a.subscription.clone(),
        ("licenses", _) => a.fx.license.clone(),
        ("activations", _) => a.activation.clone(),
        (_, "/v1/security/blocked-devices/{id}") => a.block.clone(),
        _ => panic!("the isolation sweep has no tenant-A object for {path}: add one"),
    }
}

/// Tenant B's own object for a readable path.
fn own_object(path: &str, b: &Fixture, b_plan: &str, b_subscription: &str) -> String {
    match path.trim_start_matches("/v1/").split('/').next().unwrap() {
        "plans" => b_plan.to_string(),
        "subscriptions" => b_subscription.to_string(),
        "tenants" => b.tenant.clone(),
        "customers" => b.customer.clone(),
        "products" => b.product.to_string(),
        "templates" => b.template.clone(),
        "licenses" => b.license.clone(),
        _ => panic!("no tenant-B object for GET {path}: add one"),
    }
}

/// A body that would be accepted on the caller's own object, so a refusal is about the object's tenant.
fn body_for(method: &str, path: &str, b: &Fixture) -> Option<Value> {
    Some(match (method, path) {
        ("patch", "/v1/customers/{id}")
        | ("patch", "/v1/products/{id}")
        | ("patch", "/v1/templates/{id}")
        | ("patch", "/v1/plans/{id}") => json!({"name": "hijacked"}),
        ("patch", "/v1/licenses/{id}") => json!({"max_activations": 99}),
        ("post", "/v1/licenses/{id}/renew") => json!({"days": 30}),
        ("post", "/v1/licenses/{id}/transfer") => json!({"customer_id": b.customer}),
        ("post", "/v1/licenses/{id}/emergency-codes") => json!({"reason": "hijack"}),
        ("post", "/v1/activations/{id}/release") => json!({"reason": "hijack"}),
        ("post", "/v1/console-users/{id}/password") => json!({"password": "a hijacker's passphrase"}),
        ("post", "/v1/subscriptions/{id}/change") => json!({"add_ons": []}),
        ("post", "/v1/subscriptions/{id}/cancel") => json!({"at": "NOW"}),
        ("post", _) | ("patch", _) => json!({}),
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_b_cannot_reach_tenant_a_on_any_route() {
    let server = TestServer::start().await;
    let a = tenant_a(&server).await;
    let b = server.fixture("tenant-b", json!({})).await;
    let b_plan = server
        .ok("/v1/plans", &b.token, json!({"product_id": b.product, "name": "B's own plan", "template_id": b.template}))
        .await;
    let b_plan = b_plan["id"].as_str().unwrap().to_string();
    let b_sub = server.ok("/v1/subscriptions", &b.token, json!({"customer_id": b.customer, "plan_id": b_plan})).await;
    let b_sub = b_sub["id"].as_str().unwrap().to_string();
    let mut b_tokens = vec![("tenant-admin", b.token.clone())];
    for role in ["read-only", "support"] {
        let t =
            server.ok("/v1/tokens", &server.admin, json!({"name": role, "role": role, "tenant_id": b.tenant})).await;
        b_tokens.push((role, t["token"].as_str().unwrap().to_string()));
    }
    let db = tessera_server::db_path(server.dir.path());
    let before = db_snapshot(&db, LOGS);

    let doc = server.get("/v1/openapi.json", &b.token).await.1;
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            routes.push((method.clone(), path.clone()));
        }
    }
    assert!(routes.len() >= 50, "the OpenAPI document lists only {} operations", routes.len());
    let mut covered: BTreeMap<(String, String), usize> = BTreeMap::new();
    let s = &a.secrets;

    // Admin routes, with each of tenant B's tokens.
    for (method, path) in routes.iter().filter(|(_, p)| !OPS.contains(&p.as_str()) && !p.starts_with("/v1/client/")) {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        for (role, token) in &b_tokens {
            let what = format!("{role} {method} {path}");
            let hits = covered.entry((method.clone(), path.clone())).or_default();
            if path.contains("{id}") {
                let concrete = path.replace("{id}", &object_for(path, &a));
                let r = send(&server, &m, &concrete, Some(token), body_for(method, path, &b).as_ref(), &[]).await;
                assert_refused(&what, &r, &[403, 404], s);
                *hits += 1;
                // Control: the same token reads its own tenant's object, so the refusal was about the tenant.
                // (Emergency codes are for support staff: a read-only token is refused even on its own tenant.)
                if method == "get" {
                    let own = path.replace("{id}", &own_object(path, &b, &b_plan, &b_sub));
                    let (st, text) = send(&server, &m, &own, Some(token), None, &[]).await;
                    let expected = if path.ends_with("/emergency-codes") && role.contains("read") {
                        StatusCode::FORBIDDEN
                    } else {
                        StatusCode::OK
                    };
                    assert_eq!(st, expected, "{what} on B's own object: {text}");
                }
                continue;
            }
            if method == "get" {
                // Collections: B sees its own objects or is refused; never A's. Filters naming A's objects too.
                let mut paths = vec![path.clone()];
                match path.as_str() {
                    "/v1/licenses" => {
                        paths.push(format!("{path}?product_id={}&customer_id={}", a.fx.product, a.fx.customer))
                    }
                    "/v1/events" => paths.push(format!("{path}?license_id={}", a.fx.license)),
                    "/v1/plans" | "/v1/catalog" => paths.push(format!("{path}?product_id={}", a.fx.product)),
                    "/v1/subscriptions" => paths.push(format!("{path}?customer_id={}", a.customer)),
                    // A bill is of a month: B's own, and none of A's when B names A's customer.
                    "/v1/billing/report" => {
                        let month = chrono::Utc::now().format("%Y-%m");
                        paths = vec![
                            format!("{path}?month={month}"),
                            format!("{path}?month={month}&customer_id={}", a.customer),
                            format!("{path}?month={month}&product_id={}", a.fx.product),
                        ]
                    }
                    // A summary is always of a license or a customer: only A's, by id.
                    "/v1/usage/summary" => {
                        paths = vec![
                            format!("{path}?license_id={}", a.fx.license),
                            format!("{path}?customer_id={}", a.customer),
                        ]
                    }
                    _ => {}
                }
                for p in paths {
                    let (st, text) = send(&server, &m, &p, Some(token), None, &[]).await;
                    assert!(matches!(st.as_u16(), 200 | 403 | 404), "{what} ({p}): {st} {text}");
                    if st != StatusCode::OK {
                        assert_refused(&what, &(st, text.clone()), &[403, 404], s);
                    }
                    assert_no_leak(&format!("{what} ({p})"), &text, s);
                    *hits += 1;
                }
                continue;
            }
            // Collection POSTs that name tenant A's objects or tenant A in the body.
            let bodies: Vec<Value> = match path.as_str() {
                "/v1/tenants" => vec![json!({"name": "tenant-c"})],
                "/v1/tokens" => vec![
                    json!({"name": "x", "role": "tenant-admin", "tenant_id": a.fx.tenant}),
                    json!({"name": "x", "role": "read-only", "tenant_id": a.fx.tenant}),
                ],
                "/v1/console-users" => vec![
                    json!({"username": "intruder", "password": "a hijacker's passphrase", "role": "tenant-admin", "tenant_id": a.fx.tenant}),
                    json!({"username": "intruder2", "password": "a hijacker's passphrase", "role": "support", "tenant_id": a.fx.tenant}),
                ],
                "/v1/customers" => vec![json!({"name": "x", "tenant_id": a.fx.tenant})],
                "/v1/products" => vec![json!({"name": "x", "tenant_id": a.fx.tenant})],
                "/v1/plans" => vec![json!({"product_id": a.fx.product, "name": "intruder plan"})],
                "/v1/subscriptions" => vec![
                    json!({"customer_id": a.customer, "plan_id": a.plan}),
                    json!({"customer_id": b.customer, "plan_id": a.plan}),
                    json!({"customer_id": a.customer, "plan_id": b_plan}),
                ],
                "/v1/templates" => vec![json!({"name": "x", "product_id": a.fx.product, "license_type": "PERPETUAL",
                                               "max_activations": 1, "features": [{"id": "export_pdf"}]})],
                "/v1/licenses" => vec![
                    json!({"template_id": a.fx.template}),
                    json!({"template_id": b.template, "customer_id": a.customer}),
                    json!({"product_id": a.fx.product, "license_type": "PERPETUAL", "max_activations": 1}),
                ],
                "/v1/licenses/by-key" => vec![json!({"license_key": a.fx.key})],
                "/v1/security/blocked-devices" => vec![
                    json!({"tenant_id": a.fx.tenant, "device_public_key": device_public(&SigningKey::generate_ed25519()), "reason": "x"}),
                    json!({"activation_id": a.activation, "reason": "x"}),
                ],
                "/v1/security/reports" => vec![
                    json!({"license_id": a.fx.license, "kind": "x"}),
                    json!({"activation_id": a.activation, "kind": "x"}),
                    json!({"tenant_id": a.fx.tenant, "kind": "x"}),
                ],
                "/v1/offline/respond" => vec![json!({"request_code": a.request_code})],
                "/v1/offline/receipt" => vec![json!({"receipt_code": a.receipt_code})],
                "/v1/jobs/run" => vec![json!({})],
                "/v1/usage" => {
                    // Usage for A's license, by id and by key: each event is answered as unknown, nothing recorded.
                    let events = json!({"events": [
                        {"id": Uuid::now_v7(), "license_id": a.fx.license, "feature": "export_pdf", "amount": 1},
                        {"id": Uuid::now_v7(), "license_key": a.fx.key, "feature": "export_pdf", "amount": 1},
                    ]});
                    let (st, text) = send(&server, &m, path, Some(token), Some(&events), &[]).await;
                    if st == StatusCode::OK {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        let outcomes: Vec<&str> =
                            v["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
                        assert_eq!(outcomes, ["LICENSE_NOT_FOUND", "LICENSE_NOT_FOUND"], "{what}: {text}");
                        assert_no_leak(&what, &text, s);
                    } else {
                        assert_refused(&what, &(st, text), &[403, 404], s);
                    }
                    *hits += 1;
                    continue;
                }
                "/v1/security/validate-key" => {
                    // A key check answers for B's own licenses only: "does not exist" is the refusal here.
                    let (st, text) =
                        send(&server, &m, path, Some(token), Some(&json!({"license_key": a.fx.key})), &[]).await;
                    if st == StatusCode::OK {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        assert_eq!(
                            (v["exists"].as_bool(), &v["license_id"]),
                            (Some(false), &Value::Null),
                            "{what}: {text}"
                        );
                        assert_no_leak(&what, &text, s);
                    } else {
                        assert_refused(&what, &(st, text), &[403, 404], s);
                    }
                    *hits += 1;
                    continue;
                }
                _ => panic!("the isolation sweep has no case for {method} {path}: add one"),
            };
            for body in bodies {
                let r = send(&server, &m, path, Some(token), Some(&body), &[]).await;
                assert_refused(&format!("{what} {body}"), &r, &[403, 404], s);
                *hits += 1;
            }
        }
    }

    // Nothing of tenant A (nor anything else) changed.
    assert_same_db(&before, &db_snapshot(&db, LOGS), "after tenant B's admin calls");

    // Client endpoints: tenant B's license key and device key against tenant A's objects.
    let keys = server.keyset();
    let b_dev = SigningKey::generate_ed25519();
    let n = nonce();
    let (st, v) = server
        .request(
            Method::POST,
            "/v1/client/activate",
            None,
            Some(json!({"license_key": b.key, "fingerprint": random_fingerprint(), "device_public_key": device_public(&b_dev), "nonce": n})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(open_signed(&keys, &v, &n).is_some());
    let before = db_snapshot(&db, LOGS);
    let mut client_case = |path: &str| *covered.entry(("post".to_string(), path.to_string())).or_default() += 1;

    let r = send(
        &server,
        &Method::POST,
        "/v1/client/activate",
        None,
        Some(&json!({"license_key": b.key, "product_id": a.fx.product, "fingerprint": random_fingerprint(),
                     "device_public_key": device_public(&SigningKey::generate_ed25519()), "nonce": nonce()})),
        &[],
    )
    .await;
    assert_refused("B's key, A's product: activate", &r, &[403], s);
    client_case("/v1/client/activate");
    for path in ["/v1/client/heartbeat", "/v1/client/deactivate"] {
        // B's device signs a request about A's activation; and B's activation id with A's… nothing else to name.
        let body = json!({"activation_id": a.activation, "nonce": nonce(), "sent_at": Utc::now(), "usage": []});
        let (bytes, sig) = device_sign(&b_dev, path, &body);
        let resp = server
            .http
            .post(format!("{}{path}", server.url()))
            .header("content-type", "application/json")
            .header("x-tessera-signature", sig)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let r = (resp.status(), resp.text().await.unwrap());
        assert_refused(&format!("B's device, A's activation: {path}"), &r, &[401, 403, 404], s);
        client_case(path);
    }
    let r = send(
        &server,
        &Method::POST,
        "/v1/client/offline/respond",
        None,
        Some(&json!({"license_key": b.key, "request_code": a.request_code})),
        &[],
    )
    .await;
    assert_refused("B's key, A's request code: offline respond", &r, &[403, 404, 422], s);
    client_case("/v1/client/offline/respond");
    // A receipt naming A's device, signed by B's device key.
    let k = LicenseKey::parse(&a.fx.key).unwrap();
    let a_act = server.get(&format!("/v1/licenses/{}/activations", a.fx.license), &a.fx.token).await.1;
    let a_dev_pub =
        tessera_core::encoding::b64url_decode(a_act["items"][0]["device_public_key"].as_str().unwrap_or_default());
    let mut dpk = [0u8; 32];
    if let Some(d) = a_dev_pub.filter(|d| d.len() == 32) {
        dpk.copy_from_slice(&d);
    }
    let a_grant = a_act["items"][0]["id"].as_str().and_then(|id| id.parse().ok()).map(|id| online_grant_tag(&id));
    let forged = DeactivationReceipt::for_device(&k.hash(), &dpk, a_grant.unwrap_or_default(), Utc::now())
        .sign(&k.hash(), &b_dev)
        .unwrap();
    let r =
        send(&server, &Method::POST, "/v1/client/offline/receipt", None, Some(&json!({"receipt_code": forged})), &[])
            .await;
    assert_refused("B's device key, A's device: offline receipt", &r, &[400, 401, 403, 404, 422], s);
    client_case("/v1/client/offline/receipt");
    // Validate names no object but the key itself: B's key answers about B's license only.
    let n = nonce();
    let (st, v) = server
        .request(
            Method::POST,
            "/v1/client/validate",
            None,
            Some(json!({"license_key": b.key, "feature": "export_pdf", "nonce": n})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let res = open_signed(&keys, &v, &n).unwrap();
    assert_eq!(res["license_id"].as_str(), Some(b.license.as_str()));
    assert_no_leak("B's key: validate", &v.to_string(), s);
    client_case("/v1/client/validate");

    assert_same_db(&before, &db_snapshot(&db, LOGS), "after tenant B's client calls");

    // Coverage: every route of the document, minus the operations endpoints, was swept.
    let expected: BTreeSet<(String, String)> =
        routes.iter().filter(|(_, p)| !OPS.contains(&p.as_str())).cloned().collect();
    let missing: Vec<_> = expected.iter().filter(|r| !covered.contains_key(*r)).collect();
    assert!(missing.is_empty(), "routes the sweep did not cover: {missing:?}");
    let calls: usize = covered.values().sum();
    assert!(covered.len() >= 50 && calls >= 150, "the sweep covered {} routes with {calls} calls", covered.len());
}
