//! The cull job must not free a seat whose device heartbeated after the job scanned for stale activations.

use chrono::Duration;
use serde_json::json;
use tessera_server::store::NewAudit;

use crate::common::*;

#[tokio::test]
async fn a_heartbeat_between_scan_and_cull_keeps_the_seat() {
    let h = Harness::new().await;
    let f = h.fixture("cull", 2, "CONCURRENT").await;
    let dev = device();
    let (s, act) = activate(&h, &f.key, &dev, fingerprint("cull")).await;
    assert_eq!(s, axum::http::StatusCode::OK, "{act}");
    let id = act["activation_id"].as_str().unwrap().to_string();

    // The device goes quiet past its lease; the job's scan finds it.
    h.advance(Duration::hours(3));
    let now = h.services.now();
    let stale = h.services.store.stale_floating(now).await.unwrap();
    assert_eq!(stale.len(), 1);

    // It heartbeats before the job gets to it.
    let (s, v) = device_call(
        &h,
        "/v1/client/heartbeat",
        &dev,
        json!({"activation_id": id, "nonce": nonce(), "sent_at": h.services.now()}),
    )
    .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{v}");

    let audit = NewAudit {
        at: now,
        tenant_id: None,
        actor: "system:cull".into(),
        action: "activation.cull".into(),
        target: Some(id.clone()),
        ip: None,
        outcome: "OK".into(),
        details: json!({}),
    };
    assert!(
        !h.services.store.cull_if_stale(stale[0].id, now, audit).await.unwrap(),
        "renewed lease must not be culled"
    );
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 1, "{lic}");

    // Quiet again past the renewed lease: now it goes.
    h.advance(Duration::hours(3));
    let report = h.services.run_jobs().await.unwrap();
    assert_eq!(report.culled, 1);
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 0, "{lic}");
}
