//! Blocking a device (by key or fingerprint hash) deactivates that tenant's active activations of it in the same
//! transaction, and a heartbeat from a blocked device answers (signed) DEACTIVATED.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Value};
use sha2::Digest;
use tessera_core::SigningKey;

use crate::common::*;

async fn statuses(h: &Harness, f: &Fixture) -> Vec<(String, String)> {
    let (s, v) = h.get(&format!("/v1/licenses/{}/activations", f.license), Some(&f.token)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["device_public_key"].as_str().unwrap().to_string(), a["status"].as_str().unwrap().to_string()))
        .collect()
}

fn status_of(list: &[(String, String)], dev: &SigningKey) -> String {
    list.iter().find(|(k, _)| *k == device_pub(dev)).map(|(_, s)| s.clone()).unwrap_or_default()
}

async fn heartbeat(h: &Harness, dev: &SigningKey, activation: &str) -> Value {
    let n = nonce();
    let (s, v) = device_call(
        h,
        "/v1/client/heartbeat",
        dev,
        json!({"activation_id": activation, "nonce": n, "sent_at": Utc::now()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    open_signed(&h.keys(), &v, &n)
}

fn machine_id_hash(seed: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("{seed}/m").as_bytes()))
}

#[tokio::test]
async fn blocking_a_device_deactivates_its_activations_at_once() {
    let h = Harness::new().await;
    let f = h.fixture("blk", 5, "SUBSCRIPTION").await;
    let f2 = {
        // A second license of the same tenant.
        let (s, l) =
            h.post("/v1/licenses", Some(&f.token), json!({"template_id": f.template, "customer_id": f.customer})).await;
        assert_eq!(s, StatusCode::CREATED, "{l}");
        Fixture {
            license: l["id"].as_str().unwrap().into(),
            key: l["license_key"].as_str().unwrap().into(),
            ..f.clone()
        }
    };
    let other = h.fixture("other", 5, "SUBSCRIPTION").await;
    let (bad, good, by_fp) = (device(), device(), device());
    let mut act = std::collections::HashMap::new();
    for (fx, dev, seed) in
        [(&f, &bad, "bad"), (&f2, &bad, "bad"), (&other, &bad, "bad"), (&f, &good, "good"), (&f, &by_fp, "fp")]
    {
        let (s, r) = activate(&h, &fx.key, dev, fingerprint(seed)).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        act.insert((fx.license.clone(), device_pub(dev)), r["activation_id"].as_str().unwrap().to_string());
    }

    // By device key: both of this tenant's licenses lose it, the other tenant keeps it.
    let (s, v) = h
        .post(
            "/v1/security/blocked-devices",
            Some(&f.token),
            json!({"device_public_key": device_pub(&bad), "reason": "fraud"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let list = statuses(&h, &f).await;
    assert_eq!(status_of(&list, &bad), "DEACTIVATED");
    assert_eq!(status_of(&list, &good), "ACTIVE");
    assert_eq!(status_of(&statuses(&h, &f2).await, &bad), "DEACTIVATED");
    assert_eq!(status_of(&statuses(&h, &other).await, &bad), "ACTIVE");
    let r = heartbeat(&h, &bad, &act[&(f.license.clone(), device_pub(&bad))]).await;
    assert_eq!(r["activation_status"], "DEACTIVATED", "{r}");
    assert!(r["activation_token"].is_null(), "{r}");

    // By fingerprint hash (the machine id).
    let (s, v) = h
        .post(
            "/v1/security/blocked-devices",
            Some(&f.token),
            json!({"fingerprint_hash": machine_id_hash("fp").to_uppercase(), "reason": "cloned"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let list = statuses(&h, &f).await;
    assert_eq!(status_of(&list, &by_fp), "DEACTIVATED");
    assert_eq!(status_of(&list, &good), "ACTIVE");
    let r = heartbeat(&h, &by_fp, &act[&(f.license.clone(), device_pub(&by_fp))]).await;
    assert_eq!(r["activation_status"], "DEACTIVATED", "{r}");
    let r = heartbeat(&h, &good, &act[&(f.license.clone(), device_pub(&good))]).await;
    assert_eq!(r["activation_status"], "ACTIVE", "{r}");

    let (_, audit) = h.get("/v1/audit?limit=1000", Some(&h.admin)).await;
    let text = audit.to_string();
    assert!(text.contains("device blocked"), "deactivations are audited: {audit}");
}

#[tokio::test]
async fn a_heartbeat_from_a_device_blocked_while_active_answers_deactivated() {
    let h = Harness::new().await;
    let f = h.fixture("late", 2, "SUBSCRIPTION").await;
    let dev = device();
    let (s, r) = activate(&h, &f.key, &dev, fingerprint("late")).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let act = r["activation_id"].as_str().unwrap().to_string();
    // A block that did not take the activation along (added while it was being activated, or before this
    // behaviour): written straight into the database.
    let db = rusqlite::Connection::open(h._dir.path().join("tessera.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO blocked_devices (id, tenant_id, device_public_key, fingerprint_hash, reason, created_at)
         VALUES (?1, ?2, NULL, ?3, 'late', ?4)",
        rusqlite::params![
            uuid::Uuid::now_v7().to_string(),
            f.tenant,
            machine_id_hash("late"),
            tessera_server::time::ts(Utc::now())
        ],
    )
    .unwrap();
    drop(db);
    // Written by another connection, the block reaches this server through the change feed within a poll.
    let started = std::time::Instant::now();
    let r = loop {
        let r = heartbeat(&h, &dev, &act).await;
        if r["activation_status"] != "ACTIVE" || started.elapsed() > std::time::Duration::from_secs(2) {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(r["activation_status"], "DEACTIVATED", "{r}");
    assert!(r["activation_token"].is_null() && r["lease_expires_at"].is_null(), "{r}");
    assert_eq!(status_of(&statuses(&h, &f).await, &dev), "DEACTIVATED");
}
