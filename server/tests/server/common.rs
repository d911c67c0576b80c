use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tessera_core::envelope::Envelope;
use tessera_core::{Domain, PublicKeyset, SigningKey};

pub use tessera_test_support::harness::config as test_config;
pub use tessera_test_support::{Fixture, Harness};

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
pub fn bind(k: &tessera_core::LicenseKey, product: &uuid::Uuid) -> [u8; 32] {
    tessera_core::offline::license_binding(&k.hash(), product)
}
