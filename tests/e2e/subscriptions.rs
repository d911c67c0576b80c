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

/// A plan's quota per day on two real agents of one license: the server is the record (one machine's use reaches
/// the other with its heartbeat), each agent enforces the day offline, and a new UTC day starts afresh on the
/// machine whose clock reached it, while the server's total for the old day no longer counts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_is_shared_through_the_server_and_starts_afresh_the_next_day() {
    use std::sync::Arc;
    use tessera_agent::TestClock;
    tessera_test_support::away_from_midnight(std::time::Duration::from_secs(30)).await;
    let server = TestServer::start().await;
    let fx = server.fixture("daily", json!({"lease_secs": 3 * 86400})).await;
    let t = &fx.token;
    let plan = server
        .ok(
            "/v1/plans",
            t,
            json!({"product_id": fx.product, "name": "Metered", "template_id": fx.template,
                   "features": [{"id": "export_pdf"}], "limits": [{"metric": "api_calls", "limit": 3, "period": "DAY"}]}),
        )
        .await;
    let sub = server
        .ok("/v1/subscriptions", t, json!({"customer_id": fx.customer, "plan_id": plan["id"], "trial": false}))
        .await;
    let key = sub["license_key"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock::new(chrono::Utc::now()));
    let open = |name: &str| {
        let c = agent_config(dir.path(), name, server.keyset(), fx.product, Some(&server.url()));
        Agent::open(c.with_clock(clock.clone())).unwrap()
    };
    let (a, b) = (open("day-a"), open("day-b"));
    a.activate(key).await.unwrap();
    b.activate(key).await.unwrap();

    assert!(a.consume("api_calls", 2).allowed);
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    assert_eq!(b.check("api_calls").facts.used, Some(2), "A's use reached B through the server");
    assert!(b.consume("api_calls", 1).allowed);
    let d = b.consume("api_calls", 1);
    assert_eq!(d.reason, Reason::QuotaExceeded);
    let next_day = (clock_now(&clock).date_naive() + chrono::Duration::days(1)).and_hms_opt(0, 0, 0).unwrap().and_utc();
    assert_eq!(b.quota_period_end("api_calls"), Some(next_day));
    b.heartbeat().await.unwrap();
    let (_, view) = server.get(&format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()), t).await;
    let ent = view["entitlements"].as_array().unwrap().iter().find(|e| e["feature"] == "api_calls").unwrap().clone();
    assert_eq!((ent["used"].as_i64(), ent["period"].as_str()), (Some(3), Some("DAY")), "{view}");

    // The machines' clock reaches the next UTC day (the server's has not): the old day's total no longer counts.
    clock.advance(next_day - clock_now(&clock) + chrono::Duration::minutes(1));
    assert_eq!(a.check("api_calls").facts.used, Some(0), "{:?}", a.check("api_calls"));
    assert!(a.consume("api_calls", 3).allowed);
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);
    let reopened = open("day-b");
    assert_eq!(reopened.check("api_calls").facts.used, Some(0), "after a restart too");
}

fn clock_now(clock: &tessera_agent::TestClock) -> chrono::DateTime<chrono::Utc> {
    use tessera_agent::Clock;
    clock.now()
}
