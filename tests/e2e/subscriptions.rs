//! A subscription seen by the real agent: the license its plan grants, then an upgrade, a downgrade, a pause and a
//! cancellation, each reaching the running agent with its next heartbeat (and the checks answering offline in
//! between).

use serde_json::json;
use tessera_agent::Agent;
use tessera_core::Reason;
use tessera_test_support::{agent_config, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_reach_the_agent_with_its_next_heartbeat() {
    let server = TestServer::start().await;
    let fx = server.fixture("subscribed", json!({})).await;
    let t = &fx.token;
    let plan = |name: &str, features: serde_json::Value| json!({"product_id": fx.product, "name": name, "template_id": fx.template, "features": features});
    let basic = server.ok("/v1/plans", t, plan("Basic", json!([{"id": "export_pdf"}]))).await;
    let premium = server.ok("/v1/plans", t, plan("Premium", json!([{"id": "export_pdf"}, {"id": "crm"}]))).await;
    let sub = server
        .ok("/v1/subscriptions", t, json!({"customer_id": fx.customer, "plan_id": basic["id"], "trial": false}))
        .await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let key = sub["license_key"].as_str().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let agent =
        Agent::open(agent_config(dir.path(), "sub-machine", server.keyset(), fx.product, Some(&server.url()))).unwrap();
    agent.activate(key).await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);
    assert_eq!(agent.check("crm").reason, Reason::NotEntitled, "Basic has no CRM");

    // Upgrade: the re-signed license arrives with the next heartbeat.
    server.ok(&format!("{path}/change"), t, json!({"plan_id": premium["id"]})).await;
    assert_eq!(agent.check("crm").reason, Reason::NotEntitled, "not heard yet");
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("crm").reason, Reason::Valid, "upgraded");

    // Downgrade now: the feature goes with the next heartbeat.
    server.ok(&format!("{path}/change"), t, json!({"plan_id": basic["id"]})).await;
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("crm").reason, Reason::NotEntitled, "downgraded");
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);

    // Pause suspends, resume reinstates.
    server.ok(&format!("{path}/pause"), t, json!({})).await;
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Suspended);
    server.ok(&format!("{path}/resume"), t, json!({})).await;
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);

    // Cancel now: the license ends, and the agent says so after hearing it.
    server.ok(&format!("{path}/cancel"), t, json!({"at": "NOW"})).await;
    let _ = agent.heartbeat().await;
    assert_eq!(agent.check("export_pdf").reason, Reason::Expired);
    let reopened =
        Agent::open(agent_config(dir.path(), "sub-machine", server.keyset(), fx.product, Some(&server.url()))).unwrap();
    assert_eq!(reopened.check("export_pdf").reason, Reason::Expired, "the verdict survives a restart");
}
