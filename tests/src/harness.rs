//! The in-process harness: the server's router driven without a port (`tower::ServiceExt::oneshot`), over a
//! real SQLite data directory and a settable clock; for the server's own integration tests.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tessera_core::PublicKeyset;
use tessera_server::{AppState, Config, Services};
use tower::ServiceExt as _;

use crate::{fixture, test_config, Api, Fixture};

/// The suite's configuration ([`test_config`]) with commits that survive a crash of the process, not of the
/// machine (`Durability::Normal`): the in-process tests never lose power.
pub fn config(dir: &std::path::Path) -> Config {
    let mut c = test_config(dir);
    c.synchronous = tessera_server::config::Durability::Normal;
    c
}

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub services: Services,
    pub router: axum::Router,
    pub admin: String,
    pub now: Arc<Mutex<DateTime<Utc>>>,
}

impl Harness {
    pub async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness::with_config(dir, |_| {}).await
    }

    pub async fn with_config(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Harness {
        let mut config = config(dir.path());
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

    /// Tenant, tenant-admin token, product, template (`max` seats of `license_type`, 30 days, heartbeat 60 s, lease
    /// 1 h, `export_pdf` and `api_calls` limited to 5), customer and license.
    pub async fn fixture(&self, name: &str, max: u32, license_type: &str) -> Fixture {
        let template = json!({"name": "std", "license_type": license_type, "max_activations": max,
                              "duration_days": 30, "grace_days": null, "lease_secs": 3600,
                              "fingerprint_policy": null,
                              "features": [{"id": "export_pdf"}, {"id": "api_calls", "limit_value": 5}]});
        fixture(self, &self.admin.clone(), name, template).await
    }
}

impl Api for Harness {
    async fn post_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.post(path, Some(token), body).await
    }
}
