//! The JSON bodies of the client endpoints, through the real router over a real (temporary) SQLite store.
//!
//! The first input byte picks the endpoint and whether the body gets a valid device signature (so the fuzzer
//! reaches the parsing behind the signature check); the rest is the body. Whatever it is, the answer must be a
//! response in the one error shape or a success — never a 5xx.
#![no_main]
use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tessera_core::crypto::Domain;
use tessera_core::encoding::b64url;
use tessera_core::SigningKey;
use tower::ServiceExt as _;

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    device: SigningKey,
    _dir: tempfile::TempDir,
}

const PATHS: [&str; 6] = [
    "/v1/client/activate",
    "/v1/client/validate",
    "/v1/client/heartbeat",
    "/v1/client/deactivate",
    "/v1/client/offline/respond",
    "/v1/client/offline/receipt",
];

async fn call(router: &axum::Router, path: &str, token: Option<&str>, body: Vec<u8>, sig: Option<String>) -> (u16, Vec<u8>) {
    let mut b = Request::builder().method("POST").uri(path).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(s) = sig {
        b = b.header("x-tessera-signature", s);
    }
    let mut req = b.body(Body::from(body)).expect("request");
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22).await.expect("body");
    (status, bytes.to_vec())
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let router = rt.block_on(async {
            let mut config = tessera_server::Config::for_data_dir(dir.path());
            config.rate_limits.per_ip_per_sec = 0.0;
            config.rate_limits.per_key_per_sec = 0.0;
            config.jobs.interval_secs = 0;
            let opened = tessera_server::open(config, tessera_server::time::system_clock()).await.expect("open");
            let admin = opened.admin_token.clone().expect("admin token");
            let router = tessera_server::app(tessera_server::AppState::new(opened.services));
            let post = |path: &'static str, token: String, body: Value| {
                let router = router.clone();
                async move {
                    let (_, b) = call(&router, path, Some(&token), serde_json::to_vec(&body).expect("json"), None).await;
                    serde_json::from_slice::<Value>(&b).expect("json answer")
                }
            };
            let t = post("/v1/tenants", admin.clone(), json!({"name": "fuzz"})).await;
            let tok = post("/v1/tokens", admin, json!({"name": "f", "role": "tenant-admin", "tenant_id": t["id"]})).await;
            let token = tok["token"].as_str().expect("token").to_string();
            let p = post("/v1/products", token.clone(), json!({"name": "p"})).await;
            let tp = post("/v1/templates", token.clone(), json!({"name": "t", "product_id": p["id"], "license_type": "CONCURRENT", "max_activations": 1000000, "features": [{"id": "a", "limit_value": 10}]})).await;
            let l = post("/v1/licenses", token, json!({"template_id": tp["id"]})).await;
            println!("fuzz license key: {}", l["license_key"]);
            router
        });
        World { rt, router, device: SigningKey::ed25519_from_bytes(&[3; 32]), _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let w = world();
    let path = PATHS[usize::from(selector & 7) % PATHS.len()];
    let sig = match selector >> 6 {
        0 => None,
        1 => Some(b64url(&w.device.sign(Domain::DeviceMessage, &[path.as_bytes()], body))),
        _ => Some(b64url(&body[..body.len().min(64)])),
    };
    let (status, answer) = w.rt.block_on(call(&w.router, path, None, body.to_vec(), sig));
    assert!(status < 500, "{path}: {status} {}", String::from_utf8_lossy(&answer));
    if status >= 400 {
        let v: Value = serde_json::from_slice(&answer).expect("errors are JSON");
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "error shape: {v}");
    }
});
