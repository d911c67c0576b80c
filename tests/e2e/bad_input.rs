//! Bad input sweep: every route of the OpenAPI document that takes a body or parameters gets oversized bodies,
//! wrong JSON types, invalid UTF-8, truncated JSON, missing required fields, unknown fields, wrong or missing
//! content types and malformed path and query parameters. Each must be a 4xx in the one error shape, never a
//! 5xx, and leave the database as it was. Then every valid body is sent once and must succeed, so the refusals
//! above were about the damage, not about a body that was never right.

use std::collections::BTreeSet;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tessera_core::offline::{online_grant_tag, DeactivationReceipt, OfflineRequest};
use tessera_core::{LicenseKey, SigningKey};
use tessera_test_support::*;
use uuid::Uuid;

const OPS: &[&str] = &["/healthz", "/readyz", "/metrics", "/v1/openapi.json"];
/// The audit trail and the event log record refused calls; everything else must stay as it was.
const LOGS: &[&str] = &["audit_log", "audit_head", "events"];

#[derive(Clone, Copy, PartialEq)]
enum Body {
    /// A JSON body.
    Json,
    /// Device-signed JSON: every variant is signed by the device, so the body itself is what is judged.
    Signed,
    /// The route reads no body (the action is in the path).
    Nothing,
}

struct Route {
    method: Method,
    /// The path as the OpenAPI document has it.
    template: String,
    /// With real ids.
    path: String,
    token: Option<String>,
    body: Body,
    /// A valid body; client bodies get a fresh nonce and sent_at each time.
    valid: Value,
    required: Vec<&'static str>,
}

struct World {
    server: TestServer,
    fx: Fixture,
    device: SigningKey,
}

impl World {
    /// The valid body of a route, with a fresh nonce and sent_at where the body has them.
    fn fresh(&self, r: &Route) -> Value {
        let mut v = r.valid.clone();
        if let Some(o) = v.as_object_mut() {
            if o.contains_key("nonce") {
                o.insert("nonce".into(), json!(nonce()));
            }
            if o.contains_key("sent_at") {
                o.insert("sent_at".into(), json!(Utc::now()));
            }
        }
        v
    }

    async fn send(
        &self,
        r: &Route,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, String) {
        let mut req = self.server.http.request(r.method.clone(), format!("{}{path}", self.server.url()));
        if let Some(t) = &r.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            if r.body == Body::Signed {
                let sig = self.device.sign(tessera_core::Domain::DeviceMessage, &[r.template.as_bytes()], &b);
                req = req.header("x-tessera-signature", tessera_core::encoding::b64url(&sig));
            }
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }
}

/// A refusal in the one error shape; never a 5xx. Problems are collected, so one run names them all.
fn check_4xx(problems: &mut Vec<String>, what: &str, (status, text): &(StatusCode, String)) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let text = &text[..text.len().min(300)];
    if !status.is_client_error() {
        problems.push(format!("{what}: expected a 4xx, got {status}: {text}"));
        return;
    }
    let e = &v["error"];
    if !(e["code"].as_str().is_some_and(|c| !c.is_empty()) && e["message"].as_str().is_some_and(|m| !m.is_empty())) {
        problems.push(format!("{what}: {status} not in the error shape: {text}"));
    }
}

/// A value of another JSON kind than `v`.
fn wrong_kind(v: &Value) -> Vec<Value> {
    match v {
        Value::String(_) => vec![json!(12345), json!(["x"])],
        Value::Number(_) => vec![json!("12"), json!(-1.5e300), json!({"n": 1})],
        Value::Bool(_) => vec![json!("true"), json!(1)],
        Value::Array(_) => vec![json!("not a list"), json!({"0": 1})],
        Value::Object(_) => vec![json!("not an object"), json!([1, 2])],
        Value::Null => vec![json!(1)],
    }
}

/// Body variants that are wrong, each with a name.
fn damaged(valid: &Value, required: &[&str], limit: usize) -> Vec<(String, Option<&'static str>, Vec<u8>)> {
    let json_ct = Some("application/json");
    let bytes = serde_json::to_vec(valid).unwrap();
    let mut out: Vec<(String, Option<&'static str>, Vec<u8>)> = Vec::new();
    // Oversized: a valid object with a huge string, and a huge run of whitespace.
    let mut big = valid.clone();
    big["padding"] = json!("a".repeat(limit + 1024));
    out.push(("oversized object".into(), json_ct, serde_json::to_vec(&big).unwrap()));
    let mut ws = vec![b' '; limit + 1];
    ws.extend_from_slice(&bytes);
    out.push(("oversized whitespace".into(), json_ct, ws));
    // Not an object at all.
    for v in ["[]", "\"text\"", "42", "null", "true", "[{}]"] {
        out.push((format!("body {v}"), json_ct, v.as_bytes().to_vec()));
    }
    // Wrong types, field by field (and inside arrays of objects).
    if let Some(o) = valid.as_object() {
        for (k, v) in o {
            for w in wrong_kind(v) {
                let mut b = valid.clone();
                b[k] = w.clone();
                out.push((format!("{k} = {w}"), json_ct, serde_json::to_vec(&b).unwrap()));
            }
            if let Some(first) = v.as_array().and_then(|a| a.first()).and_then(Value::as_object) {
                for (ik, iv) in first {
                    for w in wrong_kind(iv) {
                        let mut b = valid.clone();
                        b[k][0][ik] = w.clone();
                        out.push((format!("{k}[0].{ik} = {w}"), json_ct, serde_json::to_vec(&b).unwrap()));
                    }
                }
            }
        }
        for k in required {
            let mut b = valid.clone();
            b.as_object_mut().unwrap().remove(*k);
            out.push((format!("missing {k}"), json_ct, serde_json::to_vec(&b).unwrap()));
        }
    }
    // Invalid UTF-8: inside the first string value, and as a stray byte before the object.
    let text = String::from_utf8(bytes.clone()).unwrap();
    if let Some(s) = valid.as_object().and_then(|o| o.values().find_map(Value::as_str)).filter(|s| !s.is_empty()) {
        let needle = format!("\"{s}\"");
        if let Some(at) = text.find(&needle) {
            let mut b = bytes[..at + 1].to_vec();
            b.extend_from_slice(&[0xff, 0xfe, b'A', 0xc3]);
            b.extend_from_slice(&bytes[at + needle.len() - 1..]);
            out.push(("invalid UTF-8 in a string".into(), json_ct, b));
        }
    }
    let mut b = vec![0xff];
    b.extend_from_slice(&bytes);
    out.push(("invalid UTF-8 before the object".into(), json_ct, b));
    // Truncated JSON.
    for cut in [bytes.len() / 2, bytes.len() - 1] {
        out.push((format!("truncated at {cut}"), json_ct, bytes[..cut].to_vec()));
    }
    // Wrong or missing content type, with the valid body.
    out.push(("content-type text/plain".into(), Some("text/plain"), bytes.clone()));
    out.push(("content-type form".into(), Some("application/x-www-form-urlencoded"), bytes.clone()));
    out.push(("no content-type".into(), None, bytes.clone()));
    out
}

/// (method, template, concrete path, token, body kind, valid body, required fields)
type Spec = (&'static str, &'static str, String, Option<String>, Body, Value, Vec<&'static str>);

async fn world() -> (World, Vec<Route>) {
    let server = TestServer::start().await;
    let fx = server
        .fixture("bad-input", json!({"max_activations": 5, "emergency": tessera_test_support::unbound_emergency()}))
        .await;
    let t = fx.token.clone();
    let admin = server.admin.clone();
    let keys = server.keyset();
    let customer2 = server.ok("/v1/customers", &t, json!({"name": "Grace"})).await["id"].as_str().unwrap().to_string();
    let spare_template =
        server.ok(&format!("/v1/templates/{}/duplicate", fx.template), &t, json!({"name": "spare"})).await;
    let spare_template = spare_template["id"].as_str().unwrap().to_string();
    let plan = server
        .ok("/v1/plans", &t, json!({"product_id": fx.product, "name": "Spare plan", "template_id": fx.template}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let trial_plan =
        json!({"product_id": fx.product, "name": "Trial plan", "template_id": fx.template, "trial_days": 7});
    let trial_plan = server.ok("/v1/plans", &t, trial_plan).await["id"].as_str().unwrap().to_string();
    let subscription = json!({"customer_id": fx.customer, "plan_id": trial_plan});
    let subscription = server.ok("/v1/subscriptions", &t, subscription).await["id"].as_str().unwrap().to_string();
    let token = server.ok("/v1/tokens", &t, json!({"name": "spare", "role": "read-only"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let console_user = server
        .ok(
            "/v1/console-users",
            &t,
            json!({"username": "spare.user", "password": "a long spare passphrase", "role": "support"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let block = server
        .ok(
            "/v1/security/blocked-devices",
            &t,
            json!({"device_public_key": device_public(&SigningKey::generate_ed25519()), "reason": "r"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // An online activation (device-signed routes, admin deactivation, the receipt).
    let device = SigningKey::generate_ed25519();
    let n = nonce();
    let (s, v) = server
        .request(
            Method::POST,
            "/v1/client/activate",
            None,
            Some(json!({"license_key": fx.key, "fingerprint": random_fingerprint(), "device_public_key": device_public(&device), "nonce": n})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let activation = open_signed(&keys, &v, &n).unwrap()["activation_id"].as_str().unwrap().to_string();
    let k = LicenseKey::parse(&fx.key).unwrap();
    let offline_dev = SigningKey::generate_ed25519();
    let mut odpk = [0u8; 32];
    odpk.copy_from_slice(&offline_dev.verifying_key().public_bytes());
    let (request_code, _) = OfflineRequest {
        key_hint: k.hint(),
        device_public_key: odpk,
        fingerprint_commitment: [1u8; 10],
        created_at: Utc::now(),
        nonce: 9,
    }
    .sign(&k.hash(), &offline_dev)
    .unwrap();
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&device.verifying_key().public_bytes());
    let grant = online_grant_tag(&activation.parse().unwrap());
    let receipt = DeactivationReceipt::for_device(&k.hash(), &dpk, grant, Utc::now()).sign(&k.hash(), &device).unwrap();

    let lic = format!("/v1/licenses/{}", fx.license);
    let template = serde_json::json!({
        "name": "other", "product_id": fx.product, "license_type": "SUBSCRIPTION", "max_activations": 2,
        "duration_days": 30, "heartbeat_interval_secs": 60, "lease_secs": 3600,
        "features": [{"id": "export_pdf"}, {"id": "api_calls", "limit_value": 10}]
    });
    // (method, template, concrete path, token, body kind, valid body, required fields), in an order in which
    // every valid body still succeeds when they are finally sent one after the other.
    let ta = Some(t.clone());
    let va = Some(admin.clone());
    let specs: Vec<Spec> = vec![
        ("post", "/v1/tenants", "/v1/tenants".into(), va.clone(), Body::Json, json!({"name": "another"}), vec!["name"]),
        (
            "post",
            "/v1/tokens",
            "/v1/tokens".into(),
            ta.clone(),
            Body::Json,
            json!({"name": "tok", "role": "read-only", "tenant_id": fx.tenant}),
            vec!["name", "role"],
        ),
        (
            "post",
            "/v1/customers",
            "/v1/customers".into(),
            ta.clone(),
            Body::Json,
            json!({"name": "Cust", "email": "c@example.com", "metadata": {"a": 1}}),
            vec!["name"],
        ),
        (
            "patch",
            "/v1/customers/{id}",
            format!("/v1/customers/{}", fx.customer),
            ta.clone(),
            Body::Json,
            json!({"name": "Ada L", "email": "ada@example.org", "metadata": {"b": 2}}),
            vec![],
        ),
        (
            "post",
            "/v1/products",
            "/v1/products".into(),
            ta.clone(),
            Body::Json,
            json!({"name": "Second", "code": "second", "metadata": {}}),
            vec!["name"],
        ),
        (
            "patch",
            "/v1/products/{id}",
            format!("/v1/products/{}", fx.product),
            ta.clone(),
            Body::Json,
            json!({"name": "Renamed", "metadata": {"c": 3}}),
            vec![],
        ),
        (
            "post",
            "/v1/templates",
            "/v1/templates".into(),
            ta.clone(),
            Body::Json,
            template,
            vec!["name", "product_id", "license_type"],
        ),
        (
            "patch",
            "/v1/templates/{id}",
            format!("/v1/templates/{}", fx.template),
            ta.clone(),
            Body::Json,
            json!({"name": "standard 2", "max_activations": 5}),
            vec![],
        ),
        (
            "post",
            "/v1/templates/{id}/duplicate",
            format!("/v1/templates/{}/duplicate", fx.template),
            ta.clone(),
            Body::Json,
            json!({"name": "copy"}),
            vec![],
        ),
        (
            "post",
            "/v1/plans",
            "/v1/plans".into(),
            ta.clone(),
            Body::Json,
            json!({"product_id": fx.product, "name": "Gold", "tier": "GOLD", "trial_days": 14,
                   "features": [{"id": "export_pdf"}], "limits": [{"metric": "api_calls", "limit": 100, "period": "MONTH"}],
                   "prices": [{"interval": "MONTH", "amount": 1999, "currency": "EUR"}]}),
            vec!["product_id", "name"],
        ),
        (
            "patch",
            "/v1/plans/{id}",
            format!("/v1/plans/{plan}"),
            ta.clone(),
            Body::Json,
            json!({"name": "Spare plan, renamed", "prices": [{"interval": "YEAR", "amount": 9900, "currency": "USD"}]}),
            vec![],
        ),
        (
            "post",
            "/v1/usage",
            "/v1/usage".into(),
            ta.clone(),
            Body::Json,
            json!({"events": [{"id": Uuid::now_v7(), "license_id": fx.license, "feature": "export_pdf", "amount": 2,
                               "recorded_at": Utc::now()}]}),
            vec!["events"],
        ),
        (
            "post",
            "/v1/subscriptions",
            "/v1/subscriptions".into(),
            ta.clone(),
            Body::Json,
            json!({"customer_id": fx.customer, "plan_id": plan, "interval": "YEAR", "trial": false, "auto_renew": true}),
            vec!["customer_id", "plan_id"],
        ),
        (
            "post",
            "/v1/subscriptions/{id}/convert",
            format!("/v1/subscriptions/{subscription}/convert"),
            ta.clone(),
            Body::Nothing,
            json!(null),
            vec![],
        ),
        (
            "post",
            "/v1/subscriptions/{id}/change",
            format!("/v1/subscriptions/{subscription}/change"),
            ta.clone(),
            Body::Json,
            json!({"plan_id": plan, "add_ons": []}),
            vec![],
        ),
        (
            "post",
            "/v1/subscriptions/{id}/pause",
            format!("/v1/subscriptions/{subscription}/pause"),
            ta.clone(),
            Body::Nothing,
            json!(null),
            vec![],
        ),
        (
            "post",
            "/v1/subscriptions/{id}/resume",
            format!("/v1/subscriptions/{subscription}/resume"),
            ta.clone(),
            Body::Nothing,
            json!(null),
            vec![],
        ),
        (
            "post",
            "/v1/subscriptions/{id}/cancel",
            format!("/v1/subscriptions/{subscription}/cancel"),
            ta.clone(),
            Body::Json,
            json!({"at": "NOW", "reason": "test"}),
            vec![],
        ),
        ("delete", "/v1/plans/{id}", format!("/v1/plans/{plan}"), ta.clone(), Body::Nothing, json!(null), vec![]),
        (
            "post",
            "/v1/licenses",
            "/v1/licenses".into(),
            ta.clone(),
            Body::Json,
            json!({"template_id": fx.template, "customer_id": fx.customer}),
            vec![],
        ),
        (
            "post",
            "/v1/licenses/by-key",
            "/v1/licenses/by-key".into(),
            ta.clone(),
            Body::Json,
            json!({"license_key": fx.key}),
            vec!["license_key"],
        ),
        (
            "patch",
            "/v1/licenses/{id}",
            lic.clone(),
            ta.clone(),
            Body::Json,
            json!({"max_activations": 6, "metadata": {"k": "v"}}),
            vec![],
        ),
        (
            "post",
            "/v1/licenses/{id}/renew",
            format!("{lic}/renew"),
            ta.clone(),
            Body::Json,
            json!({"days": 30}),
            vec![],
        ),
        (
            "post",
            "/v1/licenses/{id}/transfer",
            format!("{lic}/transfer"),
            ta.clone(),
            Body::Json,
            json!({"customer_id": customer2}),
            vec!["customer_id"],
        ),
        (
            "post",
            "/v1/licenses/{id}/emergency-codes",
            format!("{lic}/emergency-codes"),
            ta.clone(),
            Body::Json,
            json!({"reason": "support call", "validity_hours": 12}),
            vec!["reason"],
        ),
        (
            "post",
            "/v1/security/validate-key",
            "/v1/security/validate-key".into(),
            ta.clone(),
            Body::Json,
            json!({"license_key": fx.key}),
            vec!["license_key"],
        ),
        (
            "post",
            "/v1/security/blocked-devices",
            "/v1/security/blocked-devices".into(),
            ta.clone(),
            Body::Json,
            json!({"device_public_key": device_public(&SigningKey::generate_ed25519()), "reason": "stolen"}),
            vec!["reason"],
        ),
        (
            "post",
            "/v1/security/reports",
            "/v1/security/reports".into(),
            ta.clone(),
            Body::Json,
            json!({"license_id": fx.license, "kind": "sharing"}),
            vec!["kind"],
        ),
        (
            "post",
            "/v1/offline/respond",
            "/v1/offline/respond".into(),
            ta.clone(),
            Body::Json,
            json!({"request_code": request_code}),
            vec!["request_code"],
        ),
        (
            "post",
            "/v1/client/offline/respond",
            "/v1/client/offline/respond".into(),
            None,
            Body::Json,
            json!({"request_code": request_code, "license_key": fx.key}),
            vec!["request_code"],
        ),
        (
            "post",
            "/v1/client/activate",
            "/v1/client/activate".into(),
            None,
            Body::Json,
            json!({"license_key": fx.key, "product_id": fx.product, "fingerprint": random_fingerprint(), "device_public_key": device_public(&SigningKey::generate_ed25519()), "metadata": {"hostname": "h"}, "nonce": nonce()}),
            vec!["license_key", "device_public_key", "nonce"],
        ),
        (
            "post",
            "/v1/client/validate",
            "/v1/client/validate".into(),
            None,
            Body::Json,
            json!({"license_key": fx.key, "feature": "export_pdf", "nonce": nonce()}),
            vec!["license_key", "nonce"],
        ),
        (
            "post",
            "/v1/client/heartbeat",
            "/v1/client/heartbeat".into(),
            None,
            Body::Signed,
            json!({"activation_id": activation, "nonce": nonce(), "sent_at": Utc::now(), "usage": [{"id": Uuid::new_v4(), "feature": "api_calls", "amount": 1, "recorded_at": Utc::now()}]}),
            vec!["activation_id", "nonce", "sent_at"],
        ),
        (
            "post",
            "/v1/licenses/{id}/suspend",
            format!("{lic}/suspend"),
            ta.clone(),
            Body::Json,
            json!({"reason": "unpaid"}),
            vec![],
        ),
        (
            "post",
            "/v1/licenses/{id}/reinstate",
            format!("{lic}/reinstate"),
            ta.clone(),
            Body::Json,
            json!({"reason": "paid"}),
            vec![],
        ),
        (
            "delete",
            "/v1/templates/{id}",
            format!("/v1/templates/{spare_template}"),
            ta.clone(),
            Body::Nothing,
            json!(null),
            vec![],
        ),
        ("delete", "/v1/tokens/{id}", format!("/v1/tokens/{token}"), ta.clone(), Body::Nothing, json!(null), vec![]),
        (
            "post",
            "/v1/console-users",
            "/v1/console-users".into(),
            ta.clone(),
            Body::Json,
            json!({"username": "desk@example.com", "password": "twelve chars or more", "role": "read-only"}),
            vec!["username", "password", "role"],
        ),
        (
            "post",
            "/v1/console-users/{id}/password",
            format!("/v1/console-users/{console_user}/password"),
            ta.clone(),
            Body::Json,
            json!({"password": "another long passphrase"}),
            vec!["password"],
        ),
        (
            "delete",
            "/v1/console-users/{id}",
            format!("/v1/console-users/{console_user}"),
            ta.clone(),
            Body::Nothing,
            json!(null),
            vec![],
        ),
        (
            "delete",
            "/v1/security/blocked-devices/{id}",
            format!("/v1/security/blocked-devices/{block}"),
            ta.clone(),
            Body::Nothing,
            json!(null),
            vec![],
        ),
        (
            "post",
            "/v1/offline/receipt",
            "/v1/offline/receipt".into(),
            ta.clone(),
            Body::Json,
            json!({"receipt_code": receipt}),
            vec!["receipt_code"],
        ),
        (
            "post",
            "/v1/client/offline/receipt",
            "/v1/client/offline/receipt".into(),
            None,
            Body::Json,
            json!({"receipt_code": receipt}),
            vec!["receipt_code"],
        ),
        (
            "post",
            "/v1/client/deactivate",
            "/v1/client/deactivate".into(),
            None,
            Body::Signed,
            json!({"activation_id": activation, "nonce": nonce(), "sent_at": Utc::now()}),
            vec!["activation_id", "nonce", "sent_at"],
        ),
        (
            "post",
            "/v1/activations/{id}/release",
            format!("/v1/activations/{activation}/release"),
            ta.clone(),
            Body::Json,
            json!({"reason": "customer's machine was replaced"}),
            vec!["reason"],
        ),
        (
            "post",
            "/v1/activations/{id}/deactivate",
            format!("/v1/activations/{activation}/deactivate"),
            ta.clone(),
            Body::Nothing,
            json!(null),
            vec![],
        ),
        ("post", "/v1/jobs/run", "/v1/jobs/run".into(), va.clone(), Body::Nothing, json!(null), vec![]),
        (
            "post",
            "/v1/licenses/{id}/revoke",
            format!("{lic}/revoke"),
            ta.clone(),
            Body::Json,
            json!({"reason": "fraud"}),
            vec![],
        ),
    ];
    let routes = specs
        .into_iter()
        .map(|(m, template, path, token, body, valid, required)| Route {
            method: Method::from_bytes(m.to_uppercase().as_bytes()).unwrap(),
            template: template.into(),
            path,
            token,
            body,
            valid,
            required,
        })
        .collect();
    (World { server, fx, device }, routes)
}

/// Bad path ids for a path with `{id}`.
fn bad_ids(template: &str) -> Vec<String> {
    ["not-a-uuid", "%FF%FE%FD", "00000000-0000-0000-0000-00000000000g", &"9".repeat(4000), "..%2F..%2Fetc%2Fpasswd"]
        .iter()
        .map(|id| template.replace("{id}", id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_on_every_route_and_changes_nothing() {
    let (w, routes) = world().await;
    let limit = tessera_server::Config::default().body_limit_bytes;
    let db = tessera_server::db_path(w.server.dir.path());
    let before = db_snapshot(&db, LOGS);
    let admin = w.server.admin.clone();

    // Every operation of the document that takes a body or parameters has a route here.
    let doc = w.server.get("/v1/openapi.json", &admin).await.1;
    let mut with_input = BTreeSet::new();
    let mut collections = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if OPS.contains(&path.as_str()) {
                continue;
            }
            // Query parameters of a collection (limit, cursor, filters) are swept as malformed query strings below.
            let path_params = op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "path"));
            if op.get("requestBody").is_some() || path_params {
                with_input.insert((method.to_uppercase(), path.clone()));
            } else if method == "get" {
                collections.push(path.clone());
            }
        }
    }
    let have: BTreeSet<(String, String)> = routes.iter().map(|r| (r.method.to_string(), r.template.clone())).collect();
    let gets_with_id: Vec<&(String, String)> =
        with_input.iter().filter(|(m, p)| m == "GET" && p.contains("{id}")).collect();
    let missing: Vec<_> = with_input.iter().filter(|r| !have.contains(*r) && !gets_with_id.contains(r)).collect();
    assert!(missing.is_empty(), "routes with input the sweep has no valid body for: {missing:?}");

    let mut calls = 0usize;
    let mut problems: Vec<String> = Vec::new();
    let mut swept = BTreeSet::new();
    for r in &routes {
        let route = format!("{} {}", r.method, r.template);
        swept.insert((r.method.to_string(), r.template.clone()));
        // Malformed path ids, with an otherwise valid request.
        if r.template.contains("{id}") {
            for p in bad_ids(&r.template) {
                let body = (r.body != Body::Nothing).then(|| serde_json::to_vec(&w.fresh(r)).unwrap());
                let resp = w.send(r, &p, Some("application/json"), body).await;
                check_4xx(&mut problems, &format!("{route} at {}", &p[..p.len().min(80)]), &resp);
                calls += 1;
            }
        }
        if r.body == Body::Nothing {
            continue;
        }
        for (name, ct, bytes) in damaged(&w.fresh(r), &r.required, limit) {
            let resp = w.send(r, &r.path, ct, Some(bytes)).await;
            let what = format!("{route}: {name}");
            check_4xx(&mut problems, &what, &resp);
            if name.starts_with("oversized") && resp.0 != StatusCode::PAYLOAD_TOO_LARGE {
                problems.push(format!("{what}: expected 413, got {}", resp.0));
            }
            if name.contains("content-type") && !matches!(resp.0.as_u16(), 400 | 415) {
                problems.push(format!("{what}: expected 415 (or 400), got {}", resp.0));
            }
            calls += 1;
        }
        // Unknown fields: the admin API refuses them. Client endpoints ignore them (newer agents may send more).
        if !r.template.starts_with("/v1/client/") {
            let mut b = w.fresh(r);
            b["no_such_field"] = json!(1);
            let resp = w.send(r, &r.path, Some("application/json"), Some(serde_json::to_vec(&b).unwrap())).await;
            check_4xx(&mut problems, &format!("{route}: unknown field"), &resp);
            calls += 1;
        }
    }
    // GET routes with an id, and collections with malformed query strings.
    for (_, template) in &gets_with_id {
        let r = Route {
            method: Method::GET,
            template: template.clone(),
            path: String::new(),
            token: Some(w.fx.token.clone()),
            body: Body::Nothing,
            valid: Value::Null,
            required: vec![],
        };
        for p in bad_ids(template) {
            let resp = w.send(&r, &p, None, None).await;
            check_4xx(&mut problems, &format!("GET {template} at {}", &p[..p.len().min(80)]), &resp);
            calls += 1;
        }
        swept.insert(("GET".into(), template.clone()));
    }
    let paged = ["/v1/tenants", "/v1/customers", "/v1/products", "/v1/templates", "/v1/licenses"];
    for path in &collections {
        let token = if path == "/v1/tenants" { admin.clone() } else { w.fx.token.clone() };
        let r = Route {
            method: Method::GET,
            template: path.clone(),
            path: path.clone(),
            token: Some(token),
            body: Body::Nothing,
            valid: Value::Null,
            required: vec![],
        };
        let mut queries = vec![
            "limit=abc",
            "limit=-1",
            "limit=0",
            "limit=99999999999999999999",
            "cursor=not-a-uuid",
            "cursor=%FF%FE",
            "limit=%FF",
        ];
        match path.as_str() {
            "/v1/licenses" => {
                queries.extend(["product_id=nope", "customer_id=%FF", "expiring_before=yesterday", "status=%FF%FE"])
            }
            "/v1/events" => queries.extend(["license_id=nope", "license_id=%FF"]),
            "/v1/plans" => {
                queries.extend(["product_id=nope", "kind=BUNDLE", "include_archived=maybe", "tier=%20", "category=%FF"])
            }
            "/v1/catalog" => queries.extend(["product_id=nope", "tier=no%20way", "category=a%20b", "colour=red"]),
            "/v1/subscriptions" => queries.extend(["customer_id=nope", "status=SLEEPING", "product_id=%FF"]),
            "/v1/billing/report" => queries.extend([
                "month=2026-13",
                "month=%FF",
                "month=2026-11&customer_id=nope",
                "month=2026-11&product_id=%FF",
                "month=11-2026",
                "customer_id=%FF",
            ]),
            "/v1/audit" => {
                // The audit list clamps its limit instead of refusing 0.
                queries.retain(|q| *q != "limit=0");
                queries.extend(["after=abc", "after=%FF", "limit=-5"]);
            }
            _ => {}
        }
        for q in queries {
            let resp = w.send(&r, &format!("{path}?{q}"), None, None).await;
            let what = format!("GET {path}?{q}");

            // Parameters a route takes must be valid; routes without parameters may ignore a query string.
            let takes = paged.contains(&path.as_str())
                || (path == "/v1/events" && q.starts_with("license_id"))
                || path == "/v1/plans"
                || path == "/v1/catalog"
                || path == "/v1/subscriptions"
                || path == "/v1/billing/report"
                || (path == "/v1/audit" && !q.starts_with("cursor"));
            if takes || !resp.0.is_success() {
                check_4xx(&mut problems, &what, &resp);
            }
            calls += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {calls} bad requests were not refused properly:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_same_db(&before, &db_snapshot(&db, LOGS), "after the bad input sweep");
    let expected: BTreeSet<_> = with_input.iter().cloned().collect();
    assert!(expected.is_subset(&swept), "not swept: {:?}", expected.difference(&swept).collect::<Vec<_>>());
    assert!(swept.len() >= 40 && calls >= 800, "the sweep made {calls} calls on {} routes", swept.len());

    // The valid bodies succeed, one after the other: the refusals above were about the damage.
    for r in &routes {
        let body = (r.body != Body::Nothing).then(|| serde_json::to_vec(&w.fresh(r)).unwrap());
        let (s, text) = w.send(r, &r.path, body.as_ref().map(|_| "application/json"), body).await;
        assert!(s.is_success(), "valid {} {}: {s} {text}", r.method, r.template);
    }
}
