//! The read cache behind client calls: changes made by another process (another connection to the same SQLite
//! file, as the `tessera-server offline …` CLI is) reach heartbeats through the change feed, and quiet heartbeats
//! (answered without waiting for the writer) still record their last-seen time and audit entry.

use std::time::{Duration as StdDuration, Instant};

use axum::http::StatusCode;
use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::common::*;
use tessera_server::config::HeartbeatAudit;

async fn beat(h: &Harness, dev: &tessera_core::SigningKey, act: &str) -> Value {
    let n = nonce();
    let (s, v) = device_call(
        h,
        "/v1/client/heartbeat",
        dev,
        json!({"activation_id": act, "nonce": n, "sent_at": *h.now.lock().unwrap()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    open_signed(&h.keys(), &v, &n)
}

/// Another process's connection: the server does not hear of its writes except through the feed.
fn other_process(h: &Harness) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(tessera_server::db_path(h._dir.path())).unwrap();
    c.busy_timeout(StdDuration::from_secs(5)).unwrap();
    c
}

/// Heartbeats until `done` holds for the answer; returns how long that took.
async fn beat_until(
    h: &Harness,
    dev: &tessera_core::SigningKey,
    act: &str,
    done: impl Fn(&Value) -> bool,
) -> StdDuration {
    let started = Instant::now();
    loop {
        let r = beat(h, dev, act).await;
        if done(&r) {
            return started.elapsed();
        }
        assert!(started.elapsed() < StdDuration::from_secs(5), "the change never reached heartbeats: {r}");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn changes_from_another_process_reach_cached_heartbeats() {
    let h = Harness::new().await;
    let f = h.fixture("feed", 5, "SUBSCRIPTION").await;
    let (d1, d2) = (device(), device());
    let (_, r1) = activate(&h, &f.key, &d1, fingerprint("one")).await;
    let (_, r2) = activate(&h, &f.key, &d2, fingerprint("two")).await;
    let (a1, a2) = (r1["activation_id"].as_str().unwrap(), r2["activation_id"].as_str().unwrap());
    // Warm the cache: the second heartbeat of each is answered from it.
    for _ in 0..2 {
        assert_eq!(beat(&h, &d1, a1).await["activation_status"], "ACTIVE");
        assert_eq!(beat(&h, &d2, a2).await["license_status"], "ACTIVE");
    }

    // Another process deactivates one activation…
    let other = other_process(&h);
    let n = other
        .execute(
            "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2, deactivation_reason = 'elsewhere'
             WHERE id = ?1",
            rusqlite::params![a1, tessera_server::time::ts(Utc::now())],
        )
        .unwrap();
    assert_eq!(n, 1);
    let took = beat_until(&h, &d1, a1, |r| r["activation_status"] == "DEACTIVATED").await;
    assert!(took < StdDuration::from_secs(2), "seen after {took:?}");
    assert!(beat(&h, &d1, a1).await["activation_token"].is_null(), "no token for a deactivated activation");

    // …and suspends the license (as a writer does: status and updated_at together).
    let later = tessera_server::time::ts(Utc::now() + Duration::seconds(1));
    other
        .execute(
            "UPDATE licenses SET body = json_set(body, '$.status', 'SUSPENDED'), updated_at = ?2 WHERE id = ?1",
            rusqlite::params![f.license, later],
        )
        .unwrap();
    // Nothing is written by this server meanwhile: the poller alone brings the change in.
    let hash = tessera_server::services::client::parse_license_key(&f.key).unwrap().hash();
    let started = Instant::now();
    while h.services.store.get_license_by_key_hash(hash).await.unwrap().license.status
        != tessera_core::LicenseStatus::Suspended
    {
        assert!(started.elapsed() < StdDuration::from_secs(2), "the feed poller did not pick the change up");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    beat_until(&h, &d2, a2, |r| r["license_status"] == "SUSPENDED").await;
    let r = beat(&h, &d2, a2).await;
    assert!(r["activation_token"].is_null(), "a suspended license gets no fresh token: {r}");
    let file = tessera_core::token::verify_license_file(r["license_file"].as_str().unwrap(), &h.keys()).unwrap();
    assert_eq!(file.license.status, tessera_core::LicenseStatus::Suspended, "the resent file says so too");

    // Changes made through this server are seen at once, not a poll later.
    let (s, v) = h.post(&format!("/v1/licenses/{}/reinstate", f.license), Some(&f.token), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(beat(&h, &d2, a2).await["license_status"], "ACTIVE");
}

#[tokio::test]
async fn quiet_heartbeats_still_record_last_seen_and_audit() {
    for mode in [HeartbeatAudit::Batched, HeartbeatAudit::Each] {
        quiet_heartbeats_are_recorded(mode).await;
    }
}

/// Each heartbeat's record in the audit log as (activation id, time, address): its own row, or an entry of its
/// tenant's batch row.
fn heartbeat_records(items: &[Value]) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for e in items {
        if e["action"] == "client.heartbeat" {
            assert_eq!(e["outcome"], "OK", "{e}");
            out.push((
                e["target"].as_str().unwrap().to_string(),
                e["at"].as_str().unwrap().to_string(),
                e["ip"].clone(),
            ));
        } else if e["action"] == "client.heartbeat.batch" {
            let list = e["details"]["heartbeats"].as_array().unwrap();
            assert_eq!(e["details"]["count"], list.len(), "{e}");
            for b in list {
                out.push((
                    b["activation_id"].as_str().unwrap().to_string(),
                    b["at"].as_str().unwrap().to_string(),
                    b["ip"].clone(),
                ));
            }
        }
    }
    out
}

async fn quiet_heartbeats_are_recorded(mode: HeartbeatAudit) {
    let h = Harness::with_config(tempfile::tempdir().unwrap(), |c| c.audit_heartbeats = mode).await;
    let f = h.fixture("quiet", 5, "SUBSCRIPTION").await;
    let d = device();
    let (_, r) = activate(&h, &f.key, &d, fingerprint("q")).await;
    let act = r["activation_id"].as_str().unwrap();
    let micros = |t| chrono::SubsecRound::trunc_subsecs(t, 6); // the store keeps microseconds
    let first_at = micros(*h.now.lock().unwrap());
    let first = beat(&h, &d, act).await; // renews the token: written before the answer
    let last_seen = || async {
        let (s, v) = h.get(&format!("/v1/licenses/{}/activations", f.license), Some(&f.token)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().iter().find(|a| a["id"] == act).unwrap()["last_seen_at"].clone()
    };
    // Within the granularity a quiet heartbeat leaves the stored time alone (the audit log has it)…
    h.advance(Duration::seconds(10));
    beat(&h, &d, act).await;
    h.services.flush_audit().await;
    assert_eq!(last_seen().await, json!(first_at));
    // …and past it, moves it.
    h.advance(Duration::seconds(tessera_server::services::LAST_SEEN_GRANULARITY_SECS));
    let quiet_at = micros(*h.now.lock().unwrap());
    let second = beat(&h, &d, act).await; // reuses the token: answered before its write
    assert_eq!(first["activation_token"], second["activation_token"]);
    assert_eq!(first["lease_expires_at"], second["lease_expires_at"], "a quiet heartbeat keeps the stored lease");
    h.services.flush_audit().await;
    assert_eq!(last_seen().await, json!(quiet_at));

    let (s, v) = h.get("/v1/audit?limit=1000", Some(&f.token)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    let records = heartbeat_records(items);
    assert_eq!(records.len(), 3, "every heartbeat is in the audit log ({mode:?}): {v}");
    assert!(records.iter().all(|(id, _, _)| id == act), "{records:?}");
    assert_eq!(records.last().unwrap().1, tessera_server::time::ts(quiet_at), "with its own time");
    let batch_rows = items.iter().filter(|e| e["action"] == "client.heartbeat.batch").count();
    match mode {
        HeartbeatAudit::Batched => assert_eq!(batch_rows, 2, "the two quiet heartbeats, one flush each"),
        _ => assert_eq!(batch_rows, 0),
    }
    let (s, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn the_feed_is_pruned_but_keeps_its_newest_row() {
    let h = Harness::new().await;
    let f = h.fixture("prune", 5, "SUBSCRIPTION").await;
    for _ in 0..3 {
        let (s, v) = h.post(&format!("/v1/licenses/{}/suspend", f.license), Some(&f.token), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = h.post(&format!("/v1/licenses/{}/reinstate", f.license), Some(&f.token), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let other = other_process(&h);
    let count = || other.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get::<_, i64>(0)).unwrap();
    assert!(count() >= 6, "every license change is fed");
    assert_eq!(h.services.store.prune_changes(Utc::now() - Duration::hours(1)).await.unwrap(), 0, "all recent");
    let pruned = h.services.store.prune_changes(Utc::now() + Duration::hours(1)).await.unwrap();
    assert_eq!(count(), 1, "the newest row stays, so readers can tell a gap from an empty feed");
    assert!(pruned >= 5);
}

#[tokio::test]
async fn a_heartbeat_never_hands_out_a_lease_other_than_the_stored_one() {
    let h = Harness::new().await;
    let f = h.fixture("lease", 5, "SUBSCRIPTION").await;
    let d = device();
    let (_, r) = activate(&h, &f.key, &d, fingerprint("l")).await;
    let act = r["activation_id"].as_str().unwrap().to_string();
    let stored = || async {
        let (_, v) = h.get(&format!("/v1/licenses/{}/activations", f.license), Some(&f.token)).await;
        v["items"].as_array().unwrap().iter().find(|a| a["id"] == act.as_str()).unwrap()["lease_expires_at"].clone()
    };
    let check = |r: &Value| {
        let token = r["activation_token"].as_str().expect("a token (the test sends no held digests)");
        let claims = tessera_core::token::verify_activation_token(token, &h.keys()).unwrap();
        assert_eq!(json!(claims.lease_expires_at), r["lease_expires_at"], "token and answer agree: {r}");
    };
    let first = beat(&h, &d, &act).await;
    check(&first);
    assert_eq!(stored().await, first["lease_expires_at"]);
    // The same device activates again (a reinstall): the stored lease moves on without a heartbeat.
    h.advance(Duration::seconds(40));
    let (s, again) = activate(&h, &f.key, &d, fingerprint("l")).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["activation_id"], act.as_str());
    assert_ne!(stored().await, first["lease_expires_at"]);
    // The next heartbeat must not fall back to the cached token and its older lease.
    h.advance(Duration::seconds(5));
    let next = beat(&h, &d, &act).await;
    check(&next);
    h.services.flush_audit().await;
    assert_eq!(stored().await, next["lease_expires_at"], "what the device was told is what is stored");
    let quiet = beat(&h, &d, &act).await;
    check(&quiet);
    assert_eq!(quiet["lease_expires_at"], next["lease_expires_at"]);
}

#[tokio::test]
async fn a_forged_heartbeat_is_refused_as_forged_even_when_malformed() {
    let h = Harness::new().await;
    let f = h.fixture("forged", 5, "SUBSCRIPTION").await;
    let d = device();
    let (_, r) = activate(&h, &f.key, &d, fingerprint("forged")).await;
    let act = r["activation_id"].as_str().unwrap();
    // No sent_at (malformed) and signed by another key: the signature is judged first.
    let body = json!({"activation_id": act, "nonce": nonce()});
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &device(), body.clone()).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID".to_string()), "{v}");
    // Signed by the device, the same body is a plain 400 naming the problem.
    let (s, v) = device_call(&h, "/v1/client/heartbeat", &d, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("sent_at"), "{v}");
    // An unknown activation is named as such, whatever else is wrong with the body.
    let (s, v) =
        device_call(&h, "/v1/client/heartbeat", &d, json!({"activation_id": uuid::Uuid::now_v7(), "x": 1})).await;
    assert_eq!((s, err_code(&v)), (StatusCode::NOT_FOUND, "ACTIVATION_NOT_FOUND".to_string()), "{v}");
}

#[tokio::test]
async fn a_stored_lease_never_moves_back() {
    let h = Harness::new().await;
    let f = h.fixture("monotonic", 5, "CONCURRENT").await;
    let d = device();
    let (_, r) = activate(&h, &f.key, &d, fingerprint("m")).await;
    let act: uuid::Uuid = r["activation_id"].as_str().unwrap().parse().unwrap();
    let license: uuid::Uuid = f.license.parse().unwrap();
    let now = Utc::now();
    let op = |lease| tessera_server::store::HeartbeatOp {
        activation_id: act,
        license_id: license,
        now,
        lease_expires_at: Some(lease),
        usage: vec![],
        audit: None,
    };
    let later = now + Duration::hours(2);
    let out = h.services.store.heartbeat(op(later)).await.unwrap();
    assert_eq!(out.lease_expires_at, Some(chrono::SubsecRound::trunc_subsecs(later, 6)));
    // A renewal computed a moment earlier that commits second cannot pull the lease under a token already out.
    let out = h.services.store.heartbeat(op(now + Duration::hours(1))).await.unwrap();
    assert_eq!(out.lease_expires_at, Some(chrono::SubsecRound::trunc_subsecs(later, 6)));
}

#[tokio::test]
async fn a_batch_row_holds_only_its_own_tenants_heartbeats() {
    let h = Harness::new().await; // default: batched
    let (fa, fb) = (h.fixture("tenant-a", 5, "SUBSCRIPTION").await, h.fixture("tenant-b", 5, "SUBSCRIPTION").await);
    let (da, db) = (device(), device());
    let (_, ra) = activate(&h, &fa.key, &da, fingerprint("a")).await;
    let (_, rb) = activate(&h, &fb.key, &db, fingerprint("b")).await;
    let (aa, ab) = (ra["activation_id"].as_str().unwrap(), rb["activation_id"].as_str().unwrap());
    beat(&h, &da, aa).await; // renewals: own rows
    beat(&h, &db, ab).await;
    // Quiet heartbeats of both tenants in one deferred batch.
    for _ in 0..3 {
        beat(&h, &da, aa).await;
        beat(&h, &db, ab).await;
    }
    h.services.flush_audit().await;
    for (f, mine, theirs) in [(&fa, aa, ab), (&fb, ab, aa)] {
        let (s, v) = h.get("/v1/audit?limit=1000", Some(&f.token)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let items = v["items"].as_array().unwrap();
        let records = heartbeat_records(items);
        assert_eq!(records.len(), 4, "one renewal and three quiet heartbeats: {v}");
        assert!(records.iter().all(|(id, _, _)| id == mine), "only this tenant's heartbeats: {records:?}");
        assert!(!v.to_string().contains(theirs), "nothing of the other tenant");
        let batches: Vec<&Value> = items.iter().filter(|e| e["action"] == "client.heartbeat.batch").collect();
        assert_eq!(batches.len(), 1, "{v}");
        assert_eq!(batches[0]["tenant_id"], f.tenant.as_str());
        assert_eq!(batches[0]["actor"], "client");
    }
    let (_, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!(v["ok"], true, "{v}");
}
