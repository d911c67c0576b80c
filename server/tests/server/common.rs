use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tessera_core::envelope::Envelope;
use tessera_core::{Domain, PublicKeyset, SigningKey};
use tessera_server::{AppState, Config, Services};
use tower::ServiceExt as _;

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub services: Services,
    pub router: axum::Router,
    pub admin: String,
    pub now: Arc<Mutex<DateTime<Utc>>>,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::for_data_dir(dir);
    c.synchronous = tessera_server::config::Durability::Normal;
    c.jobs.interval_secs = 0;
    c.rate_limits.per_ip_per_sec = 0.0;
    c.rate_limits.per_key_per_sec = 0.0;
    c.rate_limits.admin_per_ip_per_sec = 0.0;
    c
}

impl Harness {
    pub async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness::with_config(dir, |_| {}).await
    }

    pub async fn with_config(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Harness {
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let now = Arc::new(Mutex::new(Utc::now()));
        let n2 = now.clone();
        let clock: tessera_server::time::Clock = Arc::new(move || *n2.lock().unwrap());
        let opened = tessera_server::open(config, clock).await.unwrap();
        let admin = opened.admin_token.clone().unwrap();
        let router = tessera_server::app(AppState::new(opened.services.clone()));
        Harness { _dir: dir, services: opened.services, router, admin, now }
    }

    pub fn advance(&self, d: Duration) {
        let mut n = self.now.lock().unwrap();
        *n += d;
    }

    pub fn keys(&self) -> PublicKeyset {
        (*self.services.public).clone()
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Vec<u8>) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        (status, bytes.to_vec())
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, b) = self.raw(method, path, token, body.map(|v| serde_json::to_vec(&v).unwrap()), &[]).await;
        let v = serde_json::from_slice(&b).unwrap_or(Value::String(String::from_utf8_lossy(&b).into()));
        (s, v)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    /// Tenant, tenant-admin token, product, template, license. Returns a fixture.
    pub async fn fixture(&self, name: &str, max: u32, license_type: &str) -> Fixture {
        let admin = self.admin.clone();
        let (s, t) = self.post("/v1/tenants", Some(&admin), json!({"name": name})).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let tenant = t["id"].as_str().unwrap().to_string();
        let (s, tok) = self
            .post("/v1/tokens", Some(&admin), json!({"name": "ta", "role": "tenant-admin", "tenant_id": tenant}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{tok}");
        let token = tok["token"].as_str().unwrap().to_string();
        let (s, p) = self.post("/v1/products", Some(&token), json!({"name": format!("{name} app")})).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let product = p["id"].as_str().unwrap().to_string();
        let (s, tp) = self
            .post(
                "/v1/templates",
                Some(&token),
                json!({"name": "std", "product_id": product, "license_type": license_type,
                       "max_activations": max, "duration_days": 30, "heartbeat_interval_secs": 60,
                       "lease_secs": 3600,
                       "features": [{"id": "export_pdf"}, {"id": "api_calls", "limit_value": 5}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{tp}");
        let template = tp["id"].as_str().unwrap().to_string();
        let (s, c) = self.post("/v1/customers", Some(&token), json!({"name": "Bob", "email": "bob@example.com"})).await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        let customer = c["id"].as_str().unwrap().to_string();
        let (s, l) =
            self.post("/v1/licenses", Some(&token), json!({"template_id": template, "customer_id": customer})).await;
        assert_eq!(s, StatusCode::CREATED, "{l}");
        Fixture {
            tenant,
            token,
            product,
            template,
            customer,
            license: l["id"].as_str().unwrap().to_string(),
            key: l["license_key"].as_str().unwrap().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fixture {
    pub tenant: String,
    pub token: String,
    pub product: String,
    pub template: String,
    pub customer: String,
    pub license: String,
    pub key: String,
}

pub fn nonce() -> String {
    tessera_core::encoding::b64url(uuid::Uuid::new_v4().as_bytes())
}

pub fn device() -> SigningKey {
    SigningKey::generate_ed25519()
}

pub fn device_pub(k: &SigningKey) -> String {
    tessera_core::encoding::b64url(&k.verifying_key().public_bytes())
}

pub fn fingerprint(seed: &str) -> Value {
    json!([
        {"kind": "machine_id", "hash": hex::encode(sha(seed, "m"))},
        {"kind": "mac", "hash": hex::encode(sha(seed, "mac"))},
        {"kind": "cpu", "hash": hex::encode(sha(seed, "cpu"))},
        {"kind": "disk", "hash": hex::encode(sha(seed, "disk"))},
    ])
}

fn sha(a: &str, b: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(format!("{a}/{b}").as_bytes()).into()
}

/// Opens a signed client response, checking signature and nonce; returns `result`.
pub fn open_signed(keys: &PublicKeyset, body: &Value, nonce: &str) -> Value {
    let env = Envelope::from_compact(body["signed"].as_str().expect("signed field")).unwrap();
    let payload: Value = serde_json::from_slice(env.open(keys, Domain::ServerResponse).unwrap()).unwrap();
    assert_eq!(payload["nonce"], nonce, "nonce echoed");
    assert!(payload["server_time"].is_string());
    payload["result"].clone()
}

/// Opens a signed client response, checking signature and nonce; returns the whole signed payload
/// (`nonce`, `endpoint`, `activation_id`, `server_time`, `result`).
pub fn open_payload(keys: &PublicKeyset, body: &Value, nonce: &str) -> Value {
    let env = Envelope::from_compact(body["signed"].as_str().expect("signed field")).unwrap();
    let payload: Value = serde_json::from_slice(env.open(keys, Domain::ServerResponse).unwrap()).unwrap();
    assert_eq!(payload["nonce"], nonce, "nonce echoed");
    payload
}

/// Asserts the one error shape and returns the code.
pub fn err_code(v: &Value) -> String {
    let e = &v["error"];
    assert!(e["code"].is_string(), "error shape: {v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error message: {v}");
    e["code"].as_str().unwrap().to_string()
}

pub async fn activate(h: &Harness, key: &str, dev: &SigningKey, fp: Value) -> (StatusCode, Value) {
    let n = nonce();
    let (s, v) = h
        .post(
            "/v1/client/activate",
            None,
            json!({"license_key": key, "device_public_key": device_pub(dev), "fingerprint": fp,
                   "metadata": {"hostname": "h"}, "nonce": n}),
        )
        .await;
    if s == StatusCode::OK {
        (s, open_signed(&h.keys(), &v, &n))
    } else {
        (s, v)
    }
}

/// Sends a device-signed request.
pub async fn device_call(h: &Harness, path: &str, dev: &SigningKey, body: Value) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(&body).unwrap();
    let sig = dev.sign(Domain::DeviceMessage, &[path.as_bytes()], &bytes);
    let sig = tessera_core::encoding::b64url(&sig);
    let (s, b) = h.raw(Method::POST, path, None, Some(bytes), &[("x-tessera-signature", &sig)]).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// An offline request code signed by `dev` for the license `key`, and its decoded form.
pub fn signed_request(key: &str, dev: &SigningKey, nonce: u16) -> (String, tessera_core::offline::SignedRequest) {
    let k = tessera_core::LicenseKey::parse(key).unwrap();
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&dev.verifying_key().public_bytes());
    tessera_core::offline::OfflineRequest {
        key_hint: k.hint(),
        device_public_key: dpk,
        fingerprint_commitment: [7u8; 10],
        created_at: Utc::now(),
        nonce,
    }
    .sign(&k.hash(), dev)
    .unwrap()
}

/// A deactivation receipt, made by `dev` at `at`, ending the offline grant that answered `request`.
pub fn receipt_for(
    key: &str,
    dev: &SigningKey,
    request: &tessera_core::offline::SignedRequest,
    at: DateTime<Utc>,
) -> String {
    let k = tessera_core::LicenseKey::parse(key).unwrap();
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&dev.verifying_key().public_bytes());
    let grant = tessera_core::offline::offline_grant_tag(&request.bytes);
    tessera_core::offline::DeactivationReceipt::for_device(&k.hash(), &dpk, grant, at).sign(&k.hash(), dev).unwrap()
}

/// The binding responses and emergency codes are signed over: the license key hash within its product.
pub fn bind(k: &tessera_core::LicenseKey, product: &str) -> [u8; 32] {
    tessera_core::offline::license_binding(&k.hash(), &product.parse().unwrap())
}
