//! Quick throughput probe of the client endpoints (not the benchmark harness): starts a server in-process on a
//! temp dir and hammers one endpoint at a time. `cargo run --release -p tessera-server --example probe`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_core::{Domain, SigningKey};

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut c = tessera_server::Config::for_data_dir(dir.path());
    c.rate_limits.per_ip_per_sec = 0.0;
    c.rate_limits.per_key_per_sec = 0.0;
    c.apply_env(std::env::vars()).unwrap();
    let s = tessera_server::start(c).await.unwrap();
    let base = s.url();
    let admin = s.admin_token.clone().unwrap();
    let http = reqwest::Client::new();
    let post = |p: &str, b: Value| http.post(format!("{base}{p}")).bearer_auth(&admin).json(&b).send();
    let t: Value = post("/v1/tenants", json!({"name": "p"})).await.unwrap().json().await.unwrap();
    let p: Value =
        post("/v1/products", json!({"name": "p", "tenant_id": t["id"]})).await.unwrap().json().await.unwrap();
    let l: Value = post("/v1/licenses", json!({"product_id": p["id"], "license_type": "SITE_LICENSE".replace("SITE_LICENSE", "PERPETUAL"), "max_activations": 0, "features": [{"id": "f"}]}))
        .await.unwrap().json().await.unwrap();
    let key = l["license_key"].as_str().unwrap().to_string();
    let nonce = || tessera_core::encoding::b64url(uuid::Uuid::new_v4().as_bytes());

    // one activation for heartbeats
    let dev = Arc::new(SigningKey::generate_ed25519());
    let r: Value = http
        .post(format!("{base}/v1/client/activate"))
        .json(&json!({"license_key": key,
        "device_public_key": tessera_core::encoding::b64url(&dev.verifying_key().public_bytes()), "nonce": nonce()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let env = tessera_core::envelope::Envelope::from_compact(r["signed"].as_str().unwrap()).unwrap();
    let payload: Value = serde_json::from_slice(&env.payload).unwrap();
    let act = payload["result"]["activation_id"].as_str().unwrap().to_string();

    for scenario in ["validate", "activate", "heartbeat"] {
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (http, base, key, act, dev, done, errors) =
                (http.clone(), base.clone(), key.clone(), act.clone(), dev.clone(), done.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let n = tessera_core::encoding::b64url(uuid::Uuid::new_v4().as_bytes());
                    let resp = match scenario {
                        "validate" => http.post(format!("{base}/v1/client/validate"))
                            .json(&json!({"license_key": key, "feature": "f", "nonce": n})).send().await,
                        "activate" => {
                            let d = SigningKey::generate_ed25519();
                            http.post(format!("{base}/v1/client/activate")).json(&json!({"license_key": key,
                                "device_public_key": tessera_core::encoding::b64url(&d.verifying_key().public_bytes()), "nonce": n}))
                                .send().await
                        }
                        _ => {
                            let body = serde_json::to_vec(&json!({"activation_id": act, "nonce": n, "sent_at": chrono::Utc::now()})).unwrap();
                            let sig = dev.sign(Domain::DeviceMessage, &[b"/v1/client/heartbeat"], &body);
                            http.post(format!("{base}/v1/client/heartbeat")).header("content-type", "application/json")
                                .header("x-tessera-signature", tessera_core::encoding::b64url(&sig)).body(body).send().await
                        }
                    };
                    match resp {
                        Ok(r) if r.status().is_success() => { let _ = r.bytes().await; done.fetch_add(1, Ordering::Relaxed); }
                        _ => { errors.fetch_add(1, Ordering::Relaxed); }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        println!(
            "{scenario}: {:.0} req/s ({} errors)",
            done.load(Ordering::Relaxed) as f64 / secs as f64,
            errors.load(Ordering::Relaxed)
        );
    }
    s.shutdown().await;
}
