//! Air-gapped activation and emergency codes, end to end. The agents here are given no server address at all.

use std::sync::Arc;

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_agent::{Agent, Applied, TestClock};
use tessera_core::codes::CodeKind;
use tessera_core::Reason;
use tessera_test_support::{agent_config, Fixture, TestServer};

async fn support_token(server: &TestServer, fx: &Fixture) -> String {
    let v = server
        .ok("/v1/tokens", &server.admin.clone(), json!({"name": "desk", "role": "support", "tenant_id": fx.tenant}))
        .await;
    v["token"].as_str().unwrap().to_string()
}

fn offline_agent(dir: &std::path::Path, name: &str, server: &TestServer, fx: &Fixture) -> Agent {
    Agent::open(agent_config(dir, name, server.keyset(), fx.product, None)).unwrap()
}

/// Changes one character of a code body (the first after `skip` body characters) to another valid one.
fn typo(code: &str, index: usize) -> String {
    let mut seen = 0;
    code.char_indices()
        .map(|(i, c)| {
            if i >= 5 && c != '-' {
                seen += 1;
                if seen == index + 1 {
                    return if c == 'A' { 'B' } else { 'A' };
                }
            }
            c
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn air_gapped_activation_with_response_and_receipt() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("airgap", json!({"max_activations": 2})).await;
    let support = support_token(&server, &fx).await;
    let dir = tempfile::tempdir().unwrap();

    // Device A: request code → staff respond → apply → features allowed.
    let a = offline_agent(dir.path(), "air-a", &server, &fx);
    let request = a.request_code(&fx.key).unwrap();
    assert!(request.starts_with("REQ1-") && request.len() <= 250, "{request}");
    assert_eq!(a.status().pending_requests, 1);
    let r = server.ok("/v1/offline/respond", &support, json!({"request_code": request})).await;
    let response = r["response_code"].as_str().unwrap().to_string();
    assert!(response.starts_with("RSP1-") && response.len() <= 500);
    assert_eq!(r["summary"]["seats_used"], 1);
    assert_eq!(r["summary"]["license_id"], fx.license.as_str());
    // A support token may answer requests but not create licenses.
    let (s, _) = server.post("/v1/licenses", &support, json!({"template_id": fx.template})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A typo or a cut is refused with the group named, and nothing is applied.
    let err = a.apply_code(&typo(&response, 12)).unwrap_err().to_string();
    assert!(err.contains("group 3"), "{err}");
    let err = a.apply_code(&response[..response.len() - 7]).unwrap_err().to_string();
    assert!(err.contains("cut short"), "{err}");
    assert_eq!(a.check("export_pdf").reason, Reason::NotActivated);

    match a.apply_code(&response).unwrap() {
        Applied::Activation { license_id, features, .. } => {
            assert_eq!(license_id.to_string(), fx.license);
            assert!(features.iter().any(|f| f.id == "export_pdf"));
        }
        other => panic!("expected an activation, got {other:?}"),
    }
    assert_eq!(a.check("export_pdf").reason, Reason::Valid);
    assert_eq!(a.check("beta_lab").reason, Reason::FeatureDisabled);
    assert_eq!(a.status().pending_requests, 0);
    // Only once.
    assert!(a.apply_code(&response).is_err(), "a response applies once");

    // Device B cannot use A's response; it makes its own and uses the self-service endpoint with the key.
    let b = offline_agent(dir.path(), "air-b", &server, &fx);
    assert!(b.apply_code(&response).is_err(), "another device's response");
    let request_b = b.request_code(&fx.key).unwrap();
    assert!(b.apply_code(&response).is_err(), "answers a different request");
    assert_eq!(b.check("export_pdf").reason, Reason::NotActivated);
    let (s, v) = server
        .request(
            reqwest::Method::POST,
            "/v1/client/offline/respond",
            None,
            Some(json!({"license_key": fx.key, "request_code": request_b})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    b.apply_code(v["response_code"].as_str().unwrap()).unwrap();
    assert_eq!(b.check("export_pdf").reason, Reason::Valid);
    // The self-service endpoint refuses a request made for another license key.
    let other = server.fixture("airgap-other", json!({})).await;
    let (s, v) = server
        .request(
            reqwest::Method::POST,
            "/v1/client/offline/respond",
            None,
            Some(json!({"license_key": other.key, "request_code": request_b})),
        )
        .await;
    assert!(s.is_client_error(), "{s} {v}");

    // Two seats used: device C is refused.
    let c = offline_agent(dir.path(), "air-c", &server, &fx);
    let request_c = c.request_code(&fx.key).unwrap();
    let (s, v) = server.post("/v1/offline/respond", &support, json!({"request_code": request_c})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("SEAT_LIMIT_REACHED")), "{v}");

    // A leaves: the receipt ends its grant once. The seat stays counted until the grant's lease would have
    // ended (a copy of A's state could still run until then), unless staff release it.
    let receipt = a.deactivate_offline().unwrap();
    assert!(receipt.starts_with("RCT2-") && receipt.len() <= 200, "{receipt}");
    assert_eq!(a.check("export_pdf").reason, Reason::NotActivated);
    let v = server.ok("/v1/offline/receipt", &support, json!({"receipt_code": receipt})).await;
    assert_eq!((v["freed"].as_bool(), v["release"].as_str()), (Some(true), Some("AFTER_LEASE")), "{v}");
    assert_eq!(server.license_json(&fx).await["seats_used"], 2);
    let v = server.ok("/v1/offline/receipt", &support, json!({"receipt_code": receipt})).await;
    assert_eq!(v["freed"], false, "a second time changes nothing: {v}");
    let (s, v) = server.post("/v1/offline/respond", &support, json!({"request_code": request_c})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("SEAT_LIMIT_REACHED")), "{v}");
    let a_activation = r["summary"]["activation_id"].as_str().unwrap();
    let v = server
        .ok(&format!("/v1/activations/{a_activation}/release"), &support, json!({"reason": "A scrapped, confirmed"}))
        .await;
    assert_eq!(v["release"], "STAFF", "{v}");
    assert_eq!(server.license_json(&fx).await["seats_used"], 1);
    // A receipt with a typo is refused with its group.
    let (s, v) = server.post("/v1/offline/receipt", &support, json!({"receipt_code": typo(&receipt, 7)})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("group 2"), "{v}");

    // Now C fits.
    let v = server.ok("/v1/offline/respond", &support, json!({"request_code": request_c})).await;
    c.apply_code(v["response_code"].as_str().unwrap()).unwrap();
    assert_eq!(c.check("export_pdf").reason, Reason::Valid);
    assert_eq!(server.license_json(&fx).await["seats_used"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_codes_expire_are_limited_and_bind() {
    let mut server = TestServer::start().await;
    let fx = server
        .fixture("emergency", json!({"lease_secs": 3600, "emergency": tessera_test_support::unbound_emergency()}))
        .await;
    let support = support_token(&server, &fx).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock::new(Utc::now()));

    // A machine activated online whose lease ran out while the server was unreachable.
    let config =
        agent_config(dir.path(), "em-a", server.keyset(), fx.product, Some(&server.url())).with_clock(clock.clone());
    let a = Agent::open(config).unwrap();
    a.activate(&fx.key).await.unwrap();
    clock.advance(Duration::hours(2));
    assert_eq!(a.check("export_pdf").reason, Reason::LeaseExpired);

    // By default a template's codes must be bound to a device; this one's policy allows unbound codes.
    let strict = server.fixture("emergency-strict", json!({})).await;
    let (s, v) = server
        .post(
            &format!("/v1/licenses/{}/emergency-codes", strict.license),
            &server.admin.clone(),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("EMERGENCY_BINDING_REQUIRED"))
    );

    let path = format!("/v1/licenses/{}/emergency-codes", fx.license);
    let (s, v) = server.post(&path, &support, json!({})).await;
    assert!(s.is_client_error(), "the reason is mandatory: {v}");
    let (s, v) = server.post(&path, &support, json!({"reason": "x", "validity_hours": 24 * 8})).await;
    assert!(s.is_client_error(), "at most 7 days: {v}");
    let issued = server.ok(&path, &support, json!({"reason": "license server behind a firewall change"})).await;
    let code = issued["code"].as_str().unwrap().to_string();
    assert!(code.starts_with("EMG1-") && code.len() <= 150, "{code}");

    match a.apply_code(&code).unwrap() {
        Applied::Emergency { expires_at, bound, .. } => {
            assert!(!bound);
            let hours = (expires_at - server.clock.now()).num_minutes();
            assert!((23 * 60..=24 * 60 + 1).contains(&hours), "24 h by default, got {hours} min");
        }
        other => panic!("expected an emergency grant, got {other:?}"),
    }
    assert_eq!(a.check("export_pdf").reason, Reason::EmergencyAccess);
    assert_eq!(a.check("teleport").reason, Reason::NotEntitled, "licensed features only");
    assert!(a.apply_code(&code).is_err(), "once per device");
    // When it expires the agent is back where it was, with no feature left on.
    clock.advance(Duration::hours(23));
    assert_eq!(a.check("export_pdf").reason, Reason::LeaseExpired);

    // At most 3 per license in 30 days (the template's default).
    for _ in 0..2 {
        server.ok(&path, &support, json!({"reason": "still down"})).await;
    }
    let (s, v) = server.post(&path, &support, json!({"reason": "one more"})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("EMERGENCY_LIMIT_REACHED")), "{v}");
    let (_, list) = server.get(&path, &support).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    // Thirty days later the window has room again.
    server.clock.advance(Duration::days(31));

    // Bound to device B through its request code: useless on A, works on B.
    let b = Agent::open(
        agent_config(dir.path(), "em-b", server.keyset(), fx.product, None)
            .with_clock(Arc::new(TestClock::new(server.clock.now()))),
    )
    .unwrap();
    let request_b = b.request_code(&fx.key).unwrap();
    let bound = server.ok(&path, &support, json!({"reason": "new hardware", "request_code": request_b})).await;
    let bound_code = bound["code"].as_str().unwrap();
    assert!(bound["bound_device"].is_string(), "{bound}");
    clock.set(server.clock.now());
    assert!(a.apply_code(bound_code).is_err(), "bound to another device");
    // B holds no license yet: a licensed-features code has nothing to unlock, and says so.
    let err = b.apply_code(bound_code).unwrap_err().to_string();
    assert!(err.contains("no valid license"), "{err}");
    let response = server.ok("/v1/offline/respond", &support, json!({"request_code": request_b})).await;
    b.apply_code(response["response_code"].as_str().unwrap()).unwrap();
    assert!(matches!(b.apply_code(bound_code).unwrap(), Applied::Emergency { bound: true, .. }));
    // Each issue is in the audit log.
    let (_, audit) = server.get("/v1/audit?limit=1000", &server.admin.clone()).await;
    let issued_events = audit
        .as_array()
        .or_else(|| audit["items"].as_array())
        .unwrap()
        .iter()
        .filter(|e| e.to_string().to_lowercase().contains("emergency"))
        .count();
    assert!(issued_events >= 4, "{audit}");
    server.stop().await;
}

/// A single-character typo anywhere in one code of each kind is caught at the real entry point, naming the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_single_character_typo_is_caught_at_the_entry_points() {
    let mut server = TestServer::start().await;
    let fx = server
        .fixture("typos", json!({"max_activations": 5, "emergency": tessera_test_support::unbound_emergency()}))
        .await;
    let support = support_token(&server, &fx).await;
    let dir = tempfile::tempdir().unwrap();
    let a = offline_agent(dir.path(), "typo-a", &server, &fx);
    let request = a.request_code(&fx.key).unwrap();
    let response = server.ok("/v1/offline/respond", &support, json!({"request_code": request})).await["response_code"]
        .as_str()
        .unwrap()
        .to_string();
    let emergency = server
        .ok(&format!("/v1/licenses/{}/emergency-codes", fx.license), &support, json!({"reason": "typo test"}))
        .await["code"]
        .as_str()
        .unwrap()
        .to_string();

    let body_len = |c: &str| c[5..].chars().filter(|c| *c != '-').count();
    // Request codes: the server's respond endpoint.
    for i in 0..body_len(&request) {
        let (s, v) = server.post("/v1/offline/respond", &support, json!({"request_code": typo(&request, i)})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "position {i}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("group {}", i / 5 + 1)), "position {i}: {msg}");
    }
    // Response and emergency codes: the agent.
    for (code, kind) in [(&response, CodeKind::OfflineResponse), (&emergency, CodeKind::Emergency)] {
        for i in 0..body_len(code) {
            let err = a.apply_code(&typo(code, i)).unwrap_err().to_string();
            assert!(err.contains(&format!("group {}", i / 5 + 1)), "{kind}: position {i}: {err}");
        }
    }
    // Nothing was applied by any of them; the genuine response still works.
    assert_eq!(a.check("export_pdf").reason, Reason::NotActivated);
    a.apply_code(&response).unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::Valid);
    // Receipts: the server's receipt endpoint.
    let receipt = a.deactivate_offline().unwrap();
    for i in 0..body_len(&receipt) {
        let (s, v) = server.post("/v1/offline/receipt", &support, json!({"receipt_code": typo(&receipt, i)})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "position {i}: {v}");
    }
    assert_eq!(server.license_json(&fx).await["seats_used"], 1, "no typo freed the seat");
    let v: Value = server.ok("/v1/offline/receipt", &support, json!({"receipt_code": receipt})).await;
    assert_eq!(v["freed"], true);
    server.stop().await;
}

/// An offline grant works until its lease (30 days by default) and is renewed by a new request/response pair
/// from the same device; the renewed grant's receipt is the one that counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_grant_ends_with_its_lease_and_renews_with_a_new_request() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("lease", json!({"max_activations": 1, "duration_days": 3650})).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock::new(server.clock.now()));
    let a =
        Agent::open(agent_config(dir.path(), "lease-a", server.keyset(), fx.product, None).with_clock(clock.clone()))
            .unwrap();
    let r = server
        .ok("/v1/offline/respond", &server.admin.clone(), json!({"request_code": a.request_code(&fx.key).unwrap()}))
        .await;
    match a.apply_code(r["response_code"].as_str().unwrap()).unwrap() {
        Applied::Activation { lease_expires_at: Some(lease), .. } => {
            let days = (lease - server.clock.now()).num_hours() / 24;
            assert_eq!(days, 29, "{lease}");
        }
        other => panic!("expected a grant with a lease, got {other:?}"),
    }
    clock.advance(Duration::days(29));
    assert_eq!(a.check("export_pdf").reason, Reason::Valid);
    clock.advance(Duration::days(1) + Duration::minutes(1));
    assert_eq!(a.check("export_pdf").reason, Reason::LeaseExpired);

    // Renewal: a new request from the same device, answered by the server 30 days on.
    server.clock.advance(Duration::days(30) + Duration::minutes(1));
    let r2 = server
        .ok("/v1/offline/respond", &server.admin.clone(), json!({"request_code": a.request_code(&fx.key).unwrap()}))
        .await;
    assert_eq!(r2["summary"]["reused"], true, "{r2}");
    assert_eq!(r2["summary"]["activation_id"], r["summary"]["activation_id"]);
    a.apply_code(r2["response_code"].as_str().unwrap()).unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::Valid);
    assert_eq!(server.license_json(&fx).await["seats_used"], 1);
    server.stop().await;
}

/// A state file backed up long ago (the same device key, an old trusted time), restored after a bound
/// emergency code has run out, with the clock set back to the backup's time and a reboot (so the boot clock
/// cannot tell): applying the code again is refused, because a code's expiry puts a floor under the time it can
/// have been issued (expiry less the longest validity, 7 days) and trusted time never falls below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_and_a_clock_set_back_cannot_stretch_an_emergency_code() {
    let mut server = TestServer::start().await;
    let fx = server
        .fixture(
            "em-backup",
            json!({"emergency": {"enabled": true, "validity_hours": 24, "max_per_30_days": 3, "scope": "ALL_FEATURES"}}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let start = server.clock.now() - Duration::days(30);
    let clock = Arc::new(TestClock::new(start));
    let config = agent_config(dir.path(), "em-backup", server.keyset(), fx.product, None).with_clock(clock.clone());
    let state = config.state_path.clone();
    let backup = dir.path().join("backup.db");
    drop(Agent::open(config.clone()).unwrap());
    std::fs::copy(&state, &backup).unwrap();

    // Thirty days on, the same machine gets a bound code, uses it, and it runs out.
    clock.advance(Duration::days(30));
    let agent = Agent::open(config.clone()).unwrap();
    let request = agent.request_code(&fx.key).unwrap();
    let issued = server
        .ok(
            &format!("/v1/licenses/{}/emergency-codes", fx.license),
            &server.admin.clone(),
            json!({"reason": "server migration", "request_code": request}),
        )
        .await;
    let code = issued["code"].as_str().unwrap().to_string();
    agent.apply_code_with_key(&code, Some(&fx.key)).unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::EmergencyAccess);
    clock.advance(Duration::hours(25));
    assert_eq!(agent.check("export_pdf").reason, Reason::NotActivated);
    drop(agent);

    // Restore the old backup, set the clock back to its time, reboot.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    std::fs::copy(&backup, &state).unwrap();
    clock.set(start + Duration::minutes(1));
    clock.reboot();
    let restored = Agent::open(config).unwrap();
    assert_eq!(restored.check("export_pdf").reason, Reason::NotActivated, "the backup itself is fine");
    let err = restored.apply_code_with_key(&code, Some(&fx.key)).unwrap_err().to_string();
    assert!(err.contains("behind the time this emergency code was issued"), "{err}");
    assert_eq!(restored.check("export_pdf").reason, Reason::NotActivated);
    server.stop().await;
}
