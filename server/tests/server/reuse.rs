//! Re-activation from the same machine keeps one seat; look-alike machines without a machine identity do not
//! share one, and a new device key ends the activation of the old one.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_new_device_key_on_the_same_machine_replaces_its_activation() {
    let h = Harness::new().await;
    let f = h.fixture("reuse", 5, "SUBSCRIPTION").await;
    // A reinstalled agent (new device key) on the same machine: same machine id → one seat, a new activation.
    let old_dev = device();
    let (_, first) = activate(&h, &f.key, &old_dev, fingerprint("host-1")).await;
    let (_, again) = activate(&h, &f.key, &device(), fingerprint("host-1")).await;
    assert_ne!(again["activation_id"], first["activation_id"], "{again}");
    assert_eq!(again["reused"], false);
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 1, "{lic}");

    // Cloned hosts without a machine id are refused: every other component equal, no identity to tell them apart.
    let no_id = |fp: serde_json::Value| {
        json!(fp.as_array().unwrap().iter().filter(|c| c["kind"] != "machine_id").cloned().collect::<Vec<_>>())
    };
    let (s, v) = activate(&h, &f.key, &device(), no_id(fingerprint("clone"))).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "FINGERPRINT_INSUFFICIENT"), "{v}");
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 1, "{lic}");
}

#[tokio::test]
async fn the_replaced_device_is_told_deactivated() {
    let h = Harness::new().await;
    let f = h.fixture("replace", 1, "SUBSCRIPTION").await;
    let keys = h.keys();
    let old_dev = device();
    let (s, first) = activate(&h, &f.key, &old_dev, fingerprint("host-1")).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let old_id = first["activation_id"].as_str().unwrap().to_string();
    // The same machine identity with a new key takes the one seat (no SEAT_LIMIT_REACHED) ...
    let new_dev = device();
    let (s, second) = activate(&h, &f.key, &new_dev, fingerprint("host-1")).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    let new_id = second["activation_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);

    // ... and the old device's next heartbeat answers DEACTIVATED, with no token.
    let n = nonce();
    let (s, v) = device_call(
        &h,
        "/v1/client/heartbeat",
        &old_dev,
        json!({"activation_id": old_id, "nonce": n, "sent_at": Utc::now()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = open_signed(&keys, &v, &n);
    assert_eq!(r["activation_status"], "DEACTIVATED", "{r}");
    assert!(r["activation_token"].is_null(), "{r}");

    // The new one works; the old one is recorded as replaced, and audited.
    let n = nonce();
    let (s, v) = device_call(
        &h,
        "/v1/client/heartbeat",
        &new_dev,
        json!({"activation_id": new_id, "nonce": n, "sent_at": Utc::now()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(open_signed(&keys, &v, &n)["activation_status"], "ACTIVE");
    let (_, acts) = h.get(&format!("/v1/licenses/{}/activations", f.license), Some(&f.token)).await;
    let list = acts["items"].as_array().or(acts.as_array()).cloned().unwrap_or_default();
    let old = list.iter().find(|a| a["id"] == old_id.as_str()).unwrap_or_else(|| panic!("{acts}"));
    assert_eq!(old["status"], "DEACTIVATED", "{old}");
    assert_eq!(old["deactivation_reason"], "replaced by a new device key", "{old}");
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 1, "{lic}");
    let (_, audit) = h.get("/v1/audit?limit=1000", Some(&f.token)).await;
    let ended = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == old_id.as_str() && e["action"] == "activation.deactivate");
    assert_eq!(ended.unwrap_or_else(|| panic!("{audit}"))["details"]["replaced_by"], new_id.as_str());
}

#[tokio::test]
async fn without_deal_breakers_the_same_machine_is_still_found_by_its_identity() {
    // A policy that tolerates any component changing: the same device is still the one with the same machine id
    // (found through the identity index, never by scanning the license's activations in the writer).
    let h = Harness::new().await;
    let f = h.fixture("no-deal-breakers", 5, "SUBSCRIPTION").await;
    let (s, v) = h
        .call(
            axum::http::Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"fingerprint_policy": {"required": 3, "deal_breakers": []}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, first) = activate(&h, &f.key, &device(), fingerprint("host-1")).await;
    // A reinstall on the same machine (new key, one component changed): it replaces the activation.
    let mut moved = fingerprint("host-1");
    moved[1]["hash"] = json!("ab".repeat(32));
    let (_, again) = activate(&h, &f.key, &device(), moved).await;
    assert_eq!(again["reused"], false);
    assert_ne!(again["activation_id"], first["activation_id"]);
    // A look-alike with every other component equal but another machine id is another machine: its own seat.
    let mut clone = fingerprint("host-1");
    clone[0]["hash"] = json!("cd".repeat(32));
    let (s, other) = activate(&h, &f.key, &device(), clone).await;
    assert_eq!(s, StatusCode::OK, "{other}");
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 2, "{lic}");
}
