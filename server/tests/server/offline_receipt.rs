//! Deactivation receipts free only an active activation of the device.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use tessera_core::offline::DeactivationReceipt;
use tessera_core::{LicenseKey, SigningKey};

use crate::common::*;

fn receipt(key: &str, dev: &SigningKey, at: chrono::DateTime<Utc>) -> String {
    let k = LicenseKey::parse(key).unwrap();
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&dev.verifying_key().public_bytes());
    DeactivationReceipt::for_device(&k.hash(), &dpk, at).sign(&k.hash(), dev).unwrap()
}

#[tokio::test]
async fn offline_receipt_frees_the_active_activation_after_a_reactivation() {
    let h = Harness::new().await;
    let f = h.fixture("rcpt", 1, "PERPETUAL").await;
    let t = Some(f.token.as_str());
    let dev = device();
    let (s, v) = h.post("/v1/offline/respond", t, json!({"request_code": signed_request(&f.key, &dev, 1).0})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = v["summary"]["activation_id"].as_str().unwrap().to_string();
    let r1 = receipt(&f.key, &dev, Utc::now() - chrono::Duration::seconds(5));
    let (s, v) = h.post("/v1/offline/receipt", t, json!({"receipt_code": r1})).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["activation_id"], first.as_str());

    // The same device is activated again: a new activation, the old one stays deactivated.
    let (s, v) = h.post("/v1/offline/respond", t, json!({"request_code": signed_request(&f.key, &dev, 2).0})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let second = v["summary"]["activation_id"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    // A new receipt frees the active (second) activation, not the older deactivated one.
    let r2 = receipt(&f.key, &dev, Utc::now());
    let (s, v) = h.post("/v1/offline/receipt", t, json!({"receipt_code": r2})).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["activation_id"], second.as_str());
    let (s, acts) = h.get(&format!("/v1/licenses/{}/activations", f.license), t).await;
    assert_eq!(s, StatusCode::OK, "{acts}");
    let list = acts.as_array().or_else(|| acts["items"].as_array()).unwrap_or_else(|| panic!("{acts}"));
    assert!(list.iter().all(|a| a["status"] == "DEACTIVATED"), "{acts}");

    // Applying it again: nothing left to free.
    let (s, v) = h.post("/v1/offline/receipt", t, json!({"receipt_code": r2})).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    // The seat is free for another device.
    let (s, v) =
        h.post("/v1/offline/respond", t, json!({"request_code": signed_request(&f.key, &device(), 3).0})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
