//! What signed client answers name (docs/PROTOCOL.md): the endpoint they answer and the activation they are about,
//! so an answer of one endpoint or activation cannot be passed off as another's.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn every_signed_answer_names_its_endpoint_and_activation() {
    let h = Harness::new().await;
    let f = h.fixture("answers", 2, "SUBSCRIPTION").await;
    let keys = h.keys();
    let dev = device();

    let n = nonce();
    let (s, v) = h
        .post(
            "/v1/client/activate",
            None,
            json!({"license_key": f.key, "device_public_key": device_pub(&dev), "fingerprint": fingerprint("one"),
                   "nonce": n}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let p = open_payload(&keys, &v, &n);
    let activation = p["result"]["activation_id"].as_str().unwrap().to_string();
    assert_eq!(p["endpoint"], "/v1/client/activate", "{p}");
    assert_eq!(p["activation_id"], activation.as_str(), "the activation it created: {p}");

    // Validate is about a license, not an activation: it names none.
    let n = nonce();
    let (s, v) = h.post("/v1/client/validate", None, json!({"license_key": f.key, "nonce": n})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let p = open_payload(&keys, &v, &n);
    assert_eq!(p["endpoint"], "/v1/client/validate", "{p}");
    assert!(p.get("activation_id").is_none(), "{p}");

    for path in ["/v1/client/heartbeat", "/v1/client/deactivate"] {
        let n = nonce();
        let now = *h.now.lock().unwrap();
        let (s, v) =
            device_call(&h, path, &dev, json!({"activation_id": activation, "nonce": n, "sent_at": now})).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        let p = open_payload(&keys, &v, &n);
        assert_eq!(p["endpoint"], path, "{p}");
        assert_eq!(p["activation_id"], activation.as_str(), "{p}");
    }
    // A deactivated activation's heartbeat answer (DEACTIVATED) still names it.
    let n = nonce();
    let now = *h.now.lock().unwrap();
    let (_, v) =
        device_call(&h, "/v1/client/heartbeat", &dev, json!({"activation_id": activation, "nonce": n, "sent_at": now}))
            .await;
    let p = open_payload(&keys, &v, &n);
    assert_eq!(
        (p["result"]["activation_status"].as_str(), p["activation_id"].as_str()),
        (Some("DEACTIVATED"), Some(activation.as_str()))
    );
}
