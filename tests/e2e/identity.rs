//! Device identity, end to end with the real agent library: pinned identities only where the template allows
//! them (online and offline), no binding without a machine identity, and a new device key on the same machine
//! ends the old activation.

use reqwest::StatusCode;
use serde_json::json;
use tessera_agent::{ActivationStatus, Agent, AgentError, ErrorCode};
use tessera_core::Reason;
use tessera_test_support::{agent_config, device_public, error_code, nonce, TestServer};

/// The default fingerprint policy (the e2e fixture opts in to pinned identities; this one does not).
fn default_policy() -> serde_json::Value {
    json!({"fingerprint_policy": {"required": 3, "deal_breakers": ["machine_id", "pinned"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_agent_is_refused_where_the_policy_does_not_allow_it() {
    let server = TestServer::start().await;
    let fx = server.fixture("pinned-refused", default_policy()).await;
    let dir = tempfile::tempdir().unwrap();
    let agent =
        Agent::open(agent_config(dir.path(), "pod-1", server.keyset(), fx.product, Some(&server.url()))).unwrap();
    match agent.activate(&fx.key).await {
        Err(AgentError::Server { status, code, .. }) => {
            assert_eq!((status, code), (422, ErrorCode::FingerprintInsufficient));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(agent.check("export_pdf").reason, Reason::NotActivated);
    assert_eq!(server.license_json(&fx).await["seats_used"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_pinned_grant_binds_only_where_the_policy_allows_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, template, expect) in [
        ("offline-pinned-no", default_policy(), Reason::FingerprintMismatch),
        ("offline-pinned-yes", json!({}), Reason::Valid),
    ] {
        let fx = server.fixture(name, template).await;
        let agent = Agent::open(agent_config(dir.path(), name, server.keyset(), fx.product, None)).unwrap();
        let request = agent.request_code(&fx.key).unwrap();
        // The request carries only a commitment to the fingerprint: the server cannot see that it is pinned,
        // so the policy travels in the response code and the agent applies it.
        let (s, v) = server
            .request(
                reqwest::Method::POST,
                "/v1/client/offline/respond",
                None,
                Some(json!({"license_key": fx.key, "request_code": request})),
            )
            .await;
        assert!(s.is_success(), "{v}");
        agent.apply_code(v["response_code"].as_str().unwrap()).unwrap();
        assert_eq!(agent.check("export_pdf").reason, expect, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_identity_less_fingerprint_is_refused() {
    let server = TestServer::start().await;
    let fx = server.fixture("no-identity", json!({})).await;
    let h = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    for fp in [
        json!([]),
        json!([{"kind": "os", "hash": h()}]),
        json!([{"kind": "cpu", "hash": h()}, {"kind": "memory", "hash": h()}, {"kind": "os", "hash": h()}]),
    ] {
        let dev = tessera_core::SigningKey::generate_ed25519();
        let (s, v) = server
            .request(
                reqwest::Method::POST,
                "/v1/client/activate",
                None,
                Some(json!({"license_key": fx.key, "device_public_key": device_public(&dev), "fingerprint": fp,
                            "nonce": nonce()})),
            )
            .await;
        assert_eq!(
            (s, error_code(&v).as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "FINGERPRINT_INSUFFICIENT"),
            "{fp}"
        );
    }
    assert_eq!(server.license_json(&fx).await["seats_used"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_agent_ends_the_old_activation() {
    let server = TestServer::start().await;
    let fx = server.fixture("reinstall", json!({"max_activations": 1})).await;
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Two state files (two device keys), one machine identity: a copy of the machine, or a reinstall.
    let old = Agent::open(agent_config(old_dir.path(), "same-host", server.keyset(), fx.product, Some(&server.url())))
        .unwrap();
    let first = old.activate(&fx.key).await.unwrap();
    let new = Agent::open(agent_config(new_dir.path(), "same-host", server.keyset(), fx.product, Some(&server.url())))
        .unwrap();
    let second = new.activate(&fx.key).await.unwrap();
    assert_ne!(second.activation_id, first.activation_id);
    assert!(!second.reused);
    assert_eq!(server.license_json(&fx).await["seats_used"], 1);

    // The old device is told DEACTIVATED at its next heartbeat and stops; the new one keeps working.
    let beat = old.heartbeat().await.unwrap();
    assert_eq!(beat.activation_status, ActivationStatus::Deactivated);
    assert!(!old.check("export_pdf").allowed, "{:?}", old.check("export_pdf"));
    assert_eq!(new.heartbeat().await.unwrap().activation_status, ActivationStatus::Active);
    assert_eq!(new.check("export_pdf").reason, Reason::Valid);
}
