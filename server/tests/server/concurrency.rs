use serde_json::json;

use crate::common::*;

/// 200 concurrent activations on a 10-seat license over a real loopback port grant exactly 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_activations_on_ten_seats_grant_exactly_ten() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.synchronous = tessera_server::config::Durability::Full;
    let server = tessera_server::start(config).await.unwrap();
    let base = server.url();
    let admin = server.admin_token.clone().unwrap();
    let http = reqwest::Client::new();
    let post =
        |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).bearer_auth(&admin).json(&body).send();
    let t: serde_json::Value = post("/v1/tenants", json!({"name": "c"})).await.unwrap().json().await.unwrap();
    let p: serde_json::Value =
        post("/v1/products", json!({"name": "p", "tenant_id": t["id"]})).await.unwrap().json().await.unwrap();
    let l: serde_json::Value =
        post("/v1/licenses", json!({"product_id": p["id"], "license_type": "PERPETUAL", "max_activations": 10}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let key = l["license_key"].as_str().unwrap().to_string();

    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = http.clone();
        let url = format!("{base}/v1/client/activate");
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let dev = device();
            let r = http
                .post(url)
                .json(&json!({"license_key": key, "device_public_key": device_pub(&dev),
                              "fingerprint": fingerprint(&format!("d{i}")), "nonce": nonce()}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut ok = 0;
    let mut full = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            409 => {
                assert_eq!(body["error"]["code"], "SEAT_LIMIT_REACHED");
                full += 1
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, full), (10, 190));
    let acts: serde_json::Value = http
        .get(format!("{base}/v1/licenses/{}/activations", l["id"].as_str().unwrap()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(acts["items"].as_array().unwrap().len(), 10);
    server.shutdown().await;
}
