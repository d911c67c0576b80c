//! Seat limits under concurrency, over a real loopback port.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Duration;
use serde_json::{json, Value};
use tessera_core::encoding::b64url;
use tessera_core::fingerprint::{Component, ComponentKind};
use tessera_core::SigningKey;
use tessera_test_support::TestServer;

fn activation_body(key: &str, i: u64) -> Value {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&i.to_be_bytes());
    seed[31] = 0x5e;
    let device = SigningKey::ed25519_from_bytes(&seed);
    let fingerprint: Vec<Component> = [ComponentKind::MachineId, ComponentKind::Mac, ComponentKind::Hostname]
        .into_iter()
        .map(|k| Component::hash_raw(k, b"race", &format!("{k:?}-{i}")))
        .collect();
    json!({
        "license_key": key,
        "fingerprint": fingerprint,
        "device_public_key": b64url(&device.verifying_key().public_bytes()),
        "nonce": b64url(&i.to_be_bytes()),
    })
}

/// Fires `n` activations from distinct devices at once; returns (granted, refused with SEAT_LIMIT_REACHED).
async fn storm(server: &TestServer, key: &str, from: u64, n: u64) -> (usize, usize) {
    let url = format!("{}/v1/client/activate", server.url());
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let gate = Arc::new(tokio::sync::Barrier::new(n as usize));
    let mut tasks = Vec::new();
    for i in from..from + n {
        let (http, url, gate, body) = (http.clone(), url.clone(), gate.clone(), activation_body(key, i));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            // Connection resets under a thousand simultaneous connects are the client's, not a verdict: retry.
            for _ in 0..5 {
                if let Ok(r) = http.post(&url).json(&body).send().await {
                    let status = r.status();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    return (status, v);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("activation request never reached the server");
        }));
    }
    let (mut granted, mut refused) = (0, 0);
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status.as_u16() {
            200 => granted += 1,
            409 => {
                assert_eq!(v["error"]["code"], "SEAT_LIMIT_REACHED", "{v}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    (granted, refused)
}

/// 1,000 concurrent activations from distinct devices on a 10-seat license grant exactly 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_race_for_ten_seats() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("race", json!({"max_activations": 10})).await;
    let (granted, refused) = storm(&server, &fx.key, 0, 1000).await;
    assert_eq!((granted, refused), (10, 990));
    assert_eq!(server.license_json(&fx).await["seats_used"], 10);
    let (_, acts) = server.get(&format!("/v1/licenses/{}/activations", fx.license), &fx.token).await;
    let live = acts["items"].as_array().unwrap().iter().filter(|a| a["status"] == "ACTIVE").count();
    assert_eq!(live, 10, "{acts}");
    // Durable: the same count after a restart.
    server.restart().await;
    assert_eq!(server.license_json(&fx).await["seats_used"], 10);
    server.stop().await;
}

/// A floating license: seats held by devices that stopped heartbeating are culled while new devices race for
/// them; at no point are more than 10 seats held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_seats_are_culled_and_reused_under_a_race() {
    let mut server = TestServer::start().await;
    let fx = server
        .fixture(
            "floating",
            json!({"license_type": "CONCURRENT", "max_activations": 10, "heartbeat_interval_secs": 60}),
        )
        .await;
    let (granted, _) = storm(&server, &fx.key, 0, 10).await;
    assert_eq!(granted, 10);
    // The first ten devices go silent past their heartbeat window.
    server.clock.advance(Duration::minutes(30));

    let over = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (url, token, license) = (server.url(), fx.token.clone(), fx.license.clone());
        let (over, samples) = (over.clone(), samples.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..40 {
                let v: Value = http
                    .get(format!("{url}/v1/licenses/{license}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["seats_used"].as_u64().unwrap_or(0) > 10 {
                    over.store(true, Ordering::SeqCst);
                }
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let cull = server.run_jobs();
    let race = storm(&server, &fx.key, 1000, 200);
    let (jobs, (granted, refused)) = tokio::join!(cull, race);
    watcher.await.unwrap();
    assert!(!over.load(Ordering::SeqCst), "more than 10 seats were held at some point");
    assert!(samples.load(Ordering::SeqCst) > 0);
    // Whatever the interleaving, the license ends full and never over: silent seats were freed and reused.
    let after = server.run_jobs().await;
    let (granted_late, _) = storm(&server, &fx.key, 5000, 20).await;
    let seats = server.license_json(&fx).await["seats_used"].as_u64().unwrap();
    assert_eq!(seats, 10, "jobs: {jobs} / {after}");
    assert_eq!(granted + granted_late, 10, "exactly the freed seats were granted ({granted} + {granted_late})");
    assert_eq!(granted + refused, 200);
    server.stop().await;
}
