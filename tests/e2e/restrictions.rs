//! License restrictions, end to end: IP_RANGE decided by the server on the real client address (loopback here),
//! and restriction values checked when written.

use reqwest::StatusCode;
use serde_json::json;
use tessera_agent::{Agent, AgentError, ErrorCode};
use tessera_core::Reason;
use tessera_test_support::{agent_config, error_code, TestServer};

fn ip_range(mode: &str, range: &str) -> serde_json::Value {
    json!([{"kind": "IP_RANGE", "mode": mode, "values": [range]}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_range_restriction_refuses_activation_from_outside() {
    let server = TestServer::start().await;
    let fx = server.fixture("ip-outside", json!({"restrictions": ip_range("ALLOW", "10.0.0.0/8")})).await;
    let dir = tempfile::tempdir().unwrap();
    let agent =
        Agent::open(agent_config(dir.path(), "outside", server.keyset(), fx.product, Some(&server.url()))).unwrap();
    match agent.activate(&fx.key).await {
        Err(AgentError::Server { status, code, .. }) => assert_eq!((status, code), (403, ErrorCode::Restricted)),
        other => panic!("expected RESTRICTED, got {other:?}"),
    }
    assert_eq!(server.license_json(&fx).await["seats_used"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restriction_added_later_stops_renewals() {
    let server = TestServer::start().await;
    let fx = server.fixture("ip-later", json!({"restrictions": ip_range("ALLOW", "127.0.0.0/8")})).await;
    let dir = tempfile::tempdir().unwrap();
    let agent =
        Agent::open(agent_config(dir.path(), "inside", server.keyset(), fx.product, Some(&server.url()))).unwrap();
    agent.activate(&fx.key).await.unwrap();
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);

    // The vendor narrows the license to another network: the next heartbeat is refused (not renewed), and the
    // device keeps its current lease until it ends.
    let (s, v) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/licenses/{}", fx.license),
            Some(&fx.token),
            Some(json!({"restrictions": ip_range("DENY", "127.0.0.0/8")})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    match agent.heartbeat().await {
        Err(AgentError::Server { status, code, .. }) => assert_eq!((status, code), (403, ErrorCode::Restricted)),
        other => panic!("expected RESTRICTED, got {other:?}"),
    }
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid, "until the lease ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_range_is_refused_when_written() {
    let server = TestServer::start().await;
    let fx = server.fixture("ip-bad", json!({})).await;
    for bad in ["10.0.0.0/33", "garbage"] {
        let (s, v) = server
            .post(
                "/v1/templates",
                &fx.token,
                json!({"name": "bad", "product_id": fx.product, "license_type": "SUBSCRIPTION",
                       "restrictions": ip_range("ALLOW", bad)}),
            )
            .await;
        assert_eq!((s, error_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(bad), "{v}");
    }
}
