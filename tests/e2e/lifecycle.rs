//! The online life of a license, driven through the real server and the real agent library.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use tessera_agent::{Agent, TestClock};
use tessera_core::Reason;
use tessera_test_support::{agent_config, TestServer};

/// Template → license → activate → checks with the server stopped → renew → suspend (denied after the next
/// heartbeat) → reinstate → revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("lifecycle", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "machine-1", server.keyset(), fx.product, Some(&server.url()));
    let agent = Agent::open(config.clone()).unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::NotActivated);

    let activated = agent.activate(&fx.key).await.unwrap();
    assert!(!activated.reused);
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);
    assert_eq!(agent.check("beta_lab").reason, Reason::FeatureDisabled);
    assert_eq!(agent.check("teleport").reason, Reason::NotEntitled);
    let license = server.license_json(&fx).await;
    assert_eq!(license["seats_used"], 1);

    // Activating again from the same machine gives the same activation back, not a second seat.
    let again = agent.activate(&fx.key).await.unwrap();
    assert!(again.reused);
    assert_eq!(again.activation_id, activated.activation_id);
    assert_eq!(server.license_json(&fx).await["seats_used"], 1);

    // Server down: checks keep working, from memory and from the state file after a restart of the app.
    server.stop().await;
    assert!(agent.check("export_pdf").allowed);
    assert!(agent.heartbeat().await.is_err(), "no server to reach");
    assert!(agent.check("export_pdf").allowed);
    drop(agent);
    let agent = Agent::open(config.clone()).unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);
    server.restart().await;

    // Renew: the new expiry reaches the agent with the next heartbeat.
    let old_expiry = agent.status().license.unwrap().expires_at.unwrap();
    let renewed = server.ok(&format!("/v1/licenses/{}/renew", fx.license), &fx.token, json!({"days": 30})).await;
    agent.heartbeat().await.unwrap();
    let new_expiry = agent.status().license.unwrap().expires_at.unwrap();
    assert_eq!(new_expiry, old_expiry + Duration::days(30));
    assert_eq!(renewed["expires_at"], serde_json::to_value(new_expiry).unwrap());

    // Suspend: the agent holds its cached verdict until it hears from the server, then denies.
    server.ok(&format!("/v1/licenses/{}/suspend", fx.license), &fx.token, json!({"reason": "invoice overdue"})).await;
    assert!(agent.check("export_pdf").allowed, "not heard yet");
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Suspended);
    // The verdict survives a restart of the application.
    let reopened = Agent::open(config.clone()).unwrap();
    assert_eq!(reopened.check("export_pdf").reason, Reason::Suspended);
    drop(reopened);

    server.ok(&format!("/v1/licenses/{}/reinstate", fx.license), &fx.token, json!({})).await;
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);

    server.ok(&format!("/v1/licenses/{}/revoke", fx.license), &fx.token, json!({"reason": "chargeback"})).await;
    let hb = agent.heartbeat().await.unwrap();
    assert_eq!(hb.license_status, tessera_core::LicenseStatus::Revoked);
    assert_eq!(agent.check("export_pdf").reason, Reason::Revoked);
    assert!(agent.status().recovery.is_some(), "status says what to do");

    // Every step is in the audit log and the chain verifies.
    let (s, audit) = server.get("/v1/audit/verify", &server.admin.clone()).await;
    assert!(s.is_success(), "{audit}");
    assert_eq!(audit["ok"], true, "{audit}");
    server.stop().await;
}

/// Usage recorded while the server is away is sent exactly once when it returns, also across an agent restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_usage_syncs_exactly_once() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("usage", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "machine-u", server.keyset(), fx.product, Some(&server.url()));
    let agent = Agent::open(config.clone()).unwrap();
    agent.activate(&fx.key).await.unwrap();

    server.stop().await;
    for _ in 0..5 {
        assert!(agent.consume("api_calls", 2).allowed);
    }
    assert_eq!(agent.status().pending_usage, 5);
    assert!(agent.heartbeat().await.is_err());
    drop(agent);

    // The application restarts while still offline; the queue is on disk.
    let agent = Agent::open(config.clone()).unwrap();
    assert_eq!(agent.status().pending_usage, 5);
    assert!(agent.consume("api_calls", 1).allowed);
    assert_eq!(agent.status().usage.get("api_calls"), Some(&11));

    server.restart().await;
    let hb = agent.heartbeat().await.unwrap();
    assert_eq!((hb.usage_sent, hb.usage_acknowledged), (6, 6));
    assert_eq!(agent.status().pending_usage, 0);
    // A second heartbeat sends nothing and the server's total stays.
    let hb = agent.heartbeat().await.unwrap();
    assert_eq!(hb.usage_sent, 0);
    assert_eq!(agent.status().usage.get("api_calls"), Some(&11));

    // The server's own count, through validate: 11 of 100 used.
    let nonce = tessera_core::encoding::b64url(&[1; 16]);
    let (s, v) = server
        .request(
            reqwest::Method::POST,
            "/v1/client/validate",
            None,
            Some(json!({"license_key": fx.key, "feature": "api_calls", "nonce": nonce})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let env = tessera_core::envelope::Envelope::from_compact(v["signed"].as_str().unwrap()).unwrap();
    let payload: serde_json::Value =
        serde_json::from_slice(env.open(&server.keyset(), tessera_core::Domain::ServerResponse).unwrap()).unwrap();
    assert_eq!(payload["nonce"], nonce);
    assert_eq!(payload["result"]["decision"]["facts"]["used"], 11, "{payload}");

    // Quota is enforced from the synced total: 89 left.
    assert_eq!(agent.consume("api_calls", 90).reason, Reason::QuotaExceeded);
    assert!(agent.consume("api_calls", 89).allowed);
    server.stop().await;
}

/// Offline until the lease ends, then LEASE_EXPIRED, also with the clock set back into the lease; a clock moved
/// back past the tolerance gives CLOCK_TAMPERED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_clock_rules_hold_offline() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("lease", json!({"lease_secs": 3600})).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock::new(Utc::now()));
    let config = agent_config(dir.path(), "machine-l", server.keyset(), fx.product, Some(&server.url()))
        .with_clock(clock.clone());
    let agent = Agent::open(config.clone()).unwrap();
    agent.activate(&fx.key).await.unwrap();
    server.stop().await;

    clock.advance(Duration::minutes(59));
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);
    clock.advance(Duration::minutes(2));
    assert_eq!(agent.check("export_pdf").reason, Reason::LeaseExpired);

    // Setting the clock back into the lease does not bring it back: within the one-hour tolerance the check is
    // decided at trusted time; beyond it, it is tampering.
    agent.touch_clock().unwrap();
    clock.advance(Duration::minutes(-30));
    assert_eq!(agent.check("export_pdf").reason, Reason::LeaseExpired, "within the one-hour tolerance");
    clock.advance(Duration::minutes(-45));
    assert_eq!(agent.check("export_pdf").reason, Reason::ClockTampered);
    // The high-water mark is persisted: a restart does not forget it.
    drop(agent);
    let agent = Agent::open(config.clone()).unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::ClockTampered);
    drop(agent);

    // Deleting the stored mark does not help: the signed artefacts' own times are a floor.
    let db = rusqlite::Connection::open(&config.state_path).unwrap();
    db.execute("DELETE FROM clock", []).unwrap();
    drop(db);
    clock.advance(Duration::hours(-2));
    let agent = Agent::open(config).unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::ClockTampered);
}

/// One edited byte in the cached license → denied, with a recovery hint; nothing fails open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_cache_is_denied() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("tamper", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "machine-t", server.keyset(), fx.product, Some(&server.url()));
    let agent = Agent::open(config.clone()).unwrap();
    agent.activate(&fx.key).await.unwrap();
    drop(agent);
    server.stop().await;

    let db = rusqlite::Connection::open(&config.state_path).unwrap();
    let file: String = db.query_row("SELECT license_file FROM activation", [], |r| r.get(0)).unwrap();
    // Give the customer 999 seats: edit one character inside the signed body.
    let body_start = file.find("\n\n").unwrap() + 2;
    let mut bytes = file.into_bytes();
    bytes[body_start + 40] = if bytes[body_start + 40] == b'A' { b'B' } else { b'A' };
    db.execute("UPDATE activation SET license_file = ?1", [String::from_utf8(bytes).unwrap()]).unwrap();
    drop(db);

    let agent = Agent::open(config).unwrap();
    let d = agent.check("export_pdf");
    assert!(!d.allowed);
    assert_eq!(d.reason, Reason::SignatureInvalid);
    let status = agent.status();
    assert!(status.problem.is_some(), "status names the problem");
    assert!(status.recovery.is_some(), "and how to recover");
}

/// A heartbeat resends the license file and token only when the device does not hold them already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_resend_only_what_changed() {
    use sha2::Digest as _;
    use tessera_test_support::{device_public, device_sign, nonce, open_signed, random_fingerprint};

    let mut server = TestServer::start().await;
    let fx = server.fixture("held", json!({})).await;
    let dev = tessera_core::SigningKey::generate_ed25519();
    let n = nonce();
    let activate = json!({"license_key": fx.key, "fingerprint": random_fingerprint(),
                          "device_public_key": device_public(&dev), "nonce": n});
    let (_, v) = server.request(reqwest::Method::POST, "/v1/client/activate", None, Some(activate)).await;
    let act = open_signed(&server.keyset(), &v, &n).expect("signed activation");
    let digest = |k: &str| hex::encode(sha2::Sha256::digest(act[k].as_str().unwrap()));
    let heartbeat = |held: serde_json::Value| {
        let n = nonce();
        let body = json!({"activation_id": act["activation_id"], "nonce": n, "sent_at": Utc::now(), "held": held});
        (n, device_sign(&dev, "/v1/client/heartbeat", &body))
    };
    let send = |(n, (bytes, sig)): (String, (Vec<u8>, String))| {
        let (http, url, keys) = (server.http.clone(), server.url(), server.keyset());
        async move {
            let r = http
                .post(format!("{url}/v1/client/heartbeat"))
                .header("content-type", "application/json")
                .header("x-tessera-signature", sig)
                .body(bytes)
                .send()
                .await
                .unwrap();
            open_signed(&keys, &r.json().await.unwrap(), &n).expect("signed heartbeat")
        }
    };
    // Holding both: neither comes back.
    let r = send(heartbeat(
        json!({"license_file": digest("license_file"), "activation_token": digest("activation_token")}),
    ))
    .await;
    assert!(r.get("license_file").is_none() && r.get("activation_token").is_none(), "{r}");
    // Holding nothing (or something else): both come back.
    let r = send(heartbeat(json!({"license_file": "00", "activation_token": null}))).await;
    assert!(r["license_file"].as_str().is_some_and(|f| f.contains("BEGIN TESSERA LICENSE")), "{r}");
    assert!(r["activation_token"].is_string(), "{r}");
    // A change on the server (renewal) sends the new file even to a device holding the old one.
    server.ok(&format!("/v1/licenses/{}/renew", fx.license), &fx.token, json!({"days": 10})).await;
    let r = send(heartbeat(
        json!({"license_file": digest("license_file"), "activation_token": digest("activation_token")}),
    ))
    .await;
    assert!(r["license_file"].is_string(), "{r}");
    server.stop().await;
}
