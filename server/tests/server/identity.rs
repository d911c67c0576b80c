//! Device identity at the server: a fingerprint is bound only when it carries a machine identity and enough
//! components; pinned identities only where the license's policy allows them; `validate` with a fingerprint
//! answers for that machine.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

fn component(kind: &str, seed: &str) -> Value {
    use sha2::Digest;
    json!({"kind": kind, "hash": hex::encode(sha2::Sha256::digest(format!("{seed}/{kind}").as_bytes()))})
}

async fn seats(h: &Harness, f: &Fixture) -> Value {
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    lic["seats_used"].clone()
}

async fn refused(h: &Harness, f: &Fixture, fp: Value) -> Value {
    let (s, v) = activate(h, &f.key, &device(), fp.clone()).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "FINGERPRINT_INSUFFICIENT"), "{fp}: {v}");
    v["error"].clone()
}

#[tokio::test]
async fn an_empty_fingerprint_is_refused() {
    let h = Harness::new().await;
    let f = h.fixture("empty-fp", 5, "SUBSCRIPTION").await;
    let e = refused(&h, &f, json!([])).await;
    assert_eq!(e["details"]["reason"], "no_identity");
    assert!(e["message"].as_str().unwrap().contains("machine_id"), "{e}");
    assert_eq!(seats(&h, &f).await, 0);
}

#[tokio::test]
async fn a_fingerprint_of_weak_components_only_is_refused() {
    let h = Harness::new().await;
    let f = h.fixture("weak-fp", 5, "SUBSCRIPTION").await;
    let weak = json!([component("os", "a"), component("cpu", "a"), component("memory", "a"), component("mac", "a")]);
    let e = refused(&h, &f, weak).await;
    assert_eq!(e["details"]["reason"], "no_identity");
    assert_eq!(seats(&h, &f).await, 0);
}

#[tokio::test]
async fn a_hardware_fingerprint_needs_the_policy_s_required_components() {
    let h = Harness::new().await;
    let f = h.fixture("few-fp", 5, "SUBSCRIPTION").await;
    // The default policy requires 3 components.
    let e = refused(&h, &f, json!([component("machine_id", "a"), component("os", "a")])).await;
    assert_eq!(
        (e["details"]["reason"].as_str(), e["details"]["required"].as_u64()),
        (Some("too_few_components"), Some(3))
    );
    let (s, v) = activate(
        &h,
        &f.key,
        &device(),
        json!([component("machine_id", "a"), component("os", "a"), component("cpu", "a")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_pinned_identity_is_refused_by_the_default_policy() {
    let h = Harness::new().await;
    let f = h.fixture("pinned-default", 5, "SUBSCRIPTION").await;
    let e = refused(&h, &f, json!([component("pinned", "pod-1")])).await;
    assert_eq!(e["details"]["reason"], "pinned_not_allowed");
    // Also alongside a machine id: the pinned value is the customer's to choose.
    let e = refused(
        &h,
        &f,
        json!([component("machine_id", "a"), component("cpu", "a"), component("disk", "a"), component("pinned", "x")]),
    )
    .await;
    assert_eq!(e["details"]["reason"], "pinned_not_allowed");
    assert_eq!(seats(&h, &f).await, 0);
}

#[tokio::test]
async fn a_pinned_identity_is_accepted_where_the_policy_allows_it() {
    let h = Harness::new().await;
    let f = h.fixture("pinned-allowed", 5, "SUBSCRIPTION").await;
    let (s, v) = h
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"fingerprint_policy": {"required": 3, "deal_breakers": ["machine_id", "pinned"], "allow_pinned": true}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, a) = activate(&h, &f.key, &device(), json!([component("pinned", "pod-1")])).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    // The token carries the policy, so the agent applies it offline too.
    let claims =
        tessera_core::token::verify_activation_token(a["activation_token"].as_str().unwrap(), &h.keys()).unwrap();
    assert!(claims.fingerprint_policy.allow_pinned);
    // Another pod with another pinned value is another seat; the same value with a new key replaces it.
    let (_, b) = activate(&h, &f.key, &device(), json!([component("pinned", "pod-2")])).await;
    assert_ne!(a["activation_id"], b["activation_id"]);
    let (_, c) = activate(&h, &f.key, &device(), json!([component("pinned", "pod-1")])).await;
    assert_ne!(c["activation_id"], a["activation_id"]);
    assert_eq!(seats(&h, &f).await, 2);
}

async fn validate_reason(h: &Harness, key: &str, fp: Option<Value>) -> (bool, String) {
    let n = nonce();
    let mut body = json!({"license_key": key, "feature": "export_pdf", "nonce": n});
    if let Some(fp) = fp {
        body["fingerprint"] = fp;
    }
    let (s, v) = h.post("/v1/client/validate", None, body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = open_signed(&h.keys(), &v, &n);
    (r["valid"].as_bool().unwrap(), r["decision"]["reason"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn validate_with_a_fingerprint_answers_for_that_machine() {
    let h = Harness::new().await;
    let f = h.fixture("validate-fp", 5, "SUBSCRIPTION").await;
    // No activation at all: this machine is not activated (today: VALID, the fingerprint was ignored).
    assert_eq!(validate_reason(&h, &f.key, Some(fingerprint("one"))).await, (false, "NOT_ACTIVATED".into()));
    let (s, _) = activate(&h, &f.key, &device(), fingerprint("one")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(validate_reason(&h, &f.key, Some(fingerprint("one"))).await, (true, "VALID".into()));
    // Activations exist, none of them this machine.
    assert_eq!(validate_reason(&h, &f.key, Some(fingerprint("two"))).await, (false, "FINGERPRINT_MISMATCH".into()));
    assert_eq!(validate_reason(&h, &f.key, Some(json!([]))).await, (false, "FINGERPRINT_MISMATCH".into()));
    // Without a fingerprint the question is about the license only.
    assert_eq!(validate_reason(&h, &f.key, None).await, (true, "VALID".into()));
}

#[tokio::test]
async fn one_activation_heartbeating_from_two_hosts_is_flagged_once_per_window() {
    let h = Harness::new().await;
    let f = h.fixture("shared-host", 5, "SUBSCRIPTION").await;
    let dev = device();
    let (s, a) = activate(&h, &f.key, &dev, fingerprint("one")).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let id = a["activation_id"].as_str().unwrap().to_string();
    let beat = |digest: String| {
        let (h, dev, id) = (&h, &dev, id.clone());
        async move {
            let now = *h.now.lock().unwrap();
            let body = json!({"activation_id": id, "nonce": nonce(), "sent_at": now, "fingerprint_digest": digest});
            let (s, v) = device_call(h, "/v1/client/heartbeat", dev, body).await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    };
    let reports = || async {
        let (s, v) = h.get("/v1/security/reports", Some(&f.token)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().iter().filter(|r| r["kind"] == "activation_shared").cloned().collect::<Vec<_>>()
    };
    let (host_a, host_b, host_c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    beat(host_a.clone()).await;
    beat(host_a.clone()).await;
    assert!(reports().await.is_empty(), "one host is not shared");
    beat(host_b.clone()).await;
    let r = reports().await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["activation_id"], id.as_str());
    assert_eq!(r[0]["details"]["hosts"], json!([host_a, host_b]));
    beat(host_c).await;
    beat(host_a.clone()).await;
    assert_eq!(reports().await.len(), 1, "once per window");
    let (_, audit) = h.get("/v1/audit?limit=1000", Some(&f.token)).await;
    let flagged =
        audit["items"].as_array().unwrap().iter().filter(|e| e["action"] == "security.activation_shared").count();
    assert_eq!(flagged, 1, "{audit}");

    // The next window flags again.
    h.advance(chrono::Duration::minutes(61));
    beat(host_a).await;
    beat(host_b).await;
    assert_eq!(reports().await.len(), 2);

    // A digest that is not 64 hex digits is refused.
    let now = *h.now.lock().unwrap();
    let body = json!({"activation_id": id, "nonce": nonce(), "sent_at": now, "fingerprint_digest": "xyz"});
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &dev, body).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
}
