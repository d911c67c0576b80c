//! Feature gating in a host application: an axum router behind `RequireFeature` layers, on a real agent activated
//! against the real server with a subscription's license. 402 carries the cheapest plan that includes the feature
//! and its upgrade URL (signed into the license by the server), 429 the end of the quota's day, 403 a license that
//! cannot be used; the daemon's local API answers with the same statuses.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tessera_agent::gate::RequireFeature;
use tessera_agent::Agent;
use tessera_test_support::{agent_config, TestServer};
use tower::ServiceExt;

async fn call(app: &Router, path: &str) -> (StatusCode, Option<String>, Value) {
    let r = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = r.status();
    let retry = r.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, retry, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_402_with_the_upgrade_429_at_the_quota_and_403_when_suspended() {
    tessera_test_support::away_from_midnight(std::time::Duration::from_secs(30)).await;
    let server = TestServer::start().await;
    let fx = server.fixture("gated", json!({})).await;
    let t = &fx.token;
    let plan = |body: Value| {
        let mut b = json!({"product_id": fx.product, "template_id": fx.template});
        b.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        b
    };
    let basic = server
        .ok(
            "/v1/plans",
            t,
            plan(json!({"name": "Basic", "features": [{"id": "export_pdf"}],
            "limits": [{"metric": "api_calls", "limit": 2, "period": "DAY"}],
            "prices": [{"interval": "MONTH", "amount": 1000, "currency": "EUR"}]})),
        )
        .await;
    let premium = server
        .ok(
            "/v1/plans",
            t,
            plan(json!({"name": "Premium", "features": [{"id": "export_pdf"}, {"id": "crm"}],
            "prices": [{"interval": "MONTH", "amount": 5000, "currency": "EUR"}],
            "upgrade_url": "https://shop.example/upgrade?to={plan}&feature={feature}&license={license}"})),
        )
        .await;
    let sub = server
        .ok("/v1/subscriptions", t, json!({"customer_id": fx.customer, "plan_id": basic["id"], "trial": false}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let agent =
        Agent::open(agent_config(dir.path(), "gated", server.keyset(), fx.product, Some(&server.url()))).unwrap();
    agent.activate(sub["license_key"].as_str().unwrap()).await.unwrap();

    let app = Router::new()
        .merge(Router::new().route("/crm", get(|| async { "crm" })).route_layer(RequireFeature(agent.clone(), "crm")))
        .merge(
            Router::new()
                .route("/export", get(|| async { "pdf" }))
                .route_layer(RequireFeature(agent.clone(), "export_pdf")),
        )
        .merge(Router::new().route("/api", get(|| async { "ok" })).route_layer(RequireFeature::consuming(
            agent.clone(),
            "api_calls",
            1,
        )));

    assert_eq!(call(&app, "/export").await.0, StatusCode::OK);
    let (st, _, v) = call(&app, "/crm").await;
    assert_eq!(st, StatusCode::PAYMENT_REQUIRED, "{v}");
    assert_eq!(v["error"]["code"], "NOT_ENTITLED");
    let up = &v["error"]["details"]["upgrade"];
    assert_eq!(up["plan"], premium["code"], "{v}");
    let license = sub["license_id"].as_str().unwrap();
    assert_eq!(
        up["upgrade_url"],
        format!("https://shop.example/upgrade?to={}&feature=crm&license={license}", premium["code"].as_str().unwrap())
    );

    // Two calls a day; the third waits for the next UTC day, and says how long.
    assert_eq!(call(&app, "/api").await.0, StatusCode::OK);
    assert_eq!(call(&app, "/api").await.0, StatusCode::OK);
    let (st, retry, v) = call(&app, "/api").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=86_400).contains(&secs), "{secs}");
    assert_eq!(agent.status().pending_usage, 2, "only the uses let through are recorded");

    // The daemon's local API answers the same way.
    let daemon = tessera_agent::daemon::router(agent.clone());
    let (st, _, v) = call(&daemon, "/v1/check/crm").await;
    assert_eq!((st, v["upgrade"]["plan"].clone()), (StatusCode::PAYMENT_REQUIRED, premium["code"].clone()), "{v}");

    // Upgrading grants crm, and the offer is gone; a paused subscription suspends: 403, no offer.
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    server.ok(&format!("{path}/change"), t, json!({"plan_id": premium["id"]})).await;
    agent.heartbeat().await.unwrap();
    assert_eq!(call(&app, "/crm").await.0, StatusCode::OK);
    server.ok(&format!("{path}/pause"), t, json!({})).await;
    agent.heartbeat().await.unwrap();
    let (st, _, v) = call(&app, "/crm").await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("SUSPENDED")), "{v}");
    assert!(v["error"]["details"].get("upgrade").is_none());
}
