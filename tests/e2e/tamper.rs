//! Tamper sweep: every artefact the agent trusts, with each bit flipped, is rejected by the agent.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use tessera_agent::{Agent, TestClock};
use tessera_core::codes::{self, CodeKind};
use tessera_core::Reason;
use tessera_test_support::{agent_config, TestServer};

/// Flips every bit of one column of the agent's state and checks the agent notices (refresh fails or denies).
fn sweep_column(agent: &Agent, state: &std::path::Path, column: &str) -> usize {
    let db = rusqlite::Connection::open(state).unwrap();
    let original: String = db.query_row(&format!("SELECT {column} FROM activation"), [], |r| r.get(0)).unwrap();
    let bytes = original.as_bytes().to_vec();
    // The artefact is the signed text itself; a line break after an armored block is outside it.
    let artefact_len = original.trim_end().len();
    let mut checked = 0;
    for bit in 0..artefact_len * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 0x80 >> (bit % 8);
        match String::from_utf8(b) {
            Ok(text) => db.execute(&format!("UPDATE activation SET {column} = ?1"), [text]).unwrap(),
            Err(e) => db.execute(&format!("UPDATE activation SET {column} = ?1"), [e.into_bytes()]).unwrap(),
        };
        let rejected = match agent.refresh() {
            Err(_) => true,
            Ok(()) => !agent.check("export_pdf").allowed,
        };
        assert!(
            rejected,
            "{column}: bit {bit} (byte {}) flipped and the agent still allows: {:?} -> {:?}",
            bit / 8,
            String::from_utf8_lossy(&bytes[(bit / 8).saturating_sub(30)..(bit / 8 + 10).min(bytes.len())]),
            agent.check("export_pdf")
        );
        checked += 1;
    }
    db.execute(&format!("UPDATE activation SET {column} = ?1"), [original]).unwrap();
    agent.refresh().unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid, "restored {column} verifies again");
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bit_flip_of_the_cached_license_and_token_is_rejected() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("bitflip", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "flip", server.keyset(), fx.product, Some(&server.url()));
    let agent = Agent::open(config.clone()).unwrap();
    agent.activate(&fx.key).await.unwrap();
    server.stop().await;
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);
    let file_bits = sweep_column(&agent, &config.state_path, "license_file");
    let token_bits = sweep_column(&agent, &config.state_path, "activation_token");
    assert!(file_bits > 8000 && token_bits > 4000, "{file_bits} / {token_bits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bit_flip_of_a_response_and_an_emergency_code_is_rejected() {
    let mut server = TestServer::start().await;
    let fx = server
        .fixture("bitflip-codes", json!({"lease_secs": 3600, "emergency": tessera_test_support::unbound_emergency()}))
        .await;
    let admin = server.admin.clone();
    let dir = tempfile::tempdir().unwrap();

    // Offline response: flip each bit of the signed bytes, re-encode with a valid checksum, apply.
    let device = Agent::open(agent_config(dir.path(), "flip-off", server.keyset(), fx.product, None)).unwrap();
    let request = device.request_code(&fx.key).unwrap();
    let response = server.ok("/v1/offline/respond", &admin, json!({"request_code": request})).await["response_code"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = codes::decode(CodeKind::OfflineResponse, &response).unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 0x80 >> (bit % 8);
        let forged = codes::encode(CodeKind::OfflineResponse, &b).unwrap();
        assert!(device.apply_code(&forged).is_err(), "response bit {bit} flipped and accepted");
    }
    assert_eq!(device.check("export_pdf").reason, Reason::NotActivated, "nothing half-applied");
    device.apply_code(&response).unwrap();
    assert_eq!(device.check("export_pdf").reason, Reason::Valid);

    // Emergency code on a machine whose lease ran out.
    let clock = Arc::new(TestClock::new(Utc::now()));
    let online = Agent::open(
        agent_config(dir.path(), "flip-em", server.keyset(), fx.product, Some(&server.url())).with_clock(clock.clone()),
    )
    .unwrap();
    online.activate(&fx.key).await.unwrap();
    clock.advance(Duration::hours(2));
    assert_eq!(online.check("export_pdf").reason, Reason::LeaseExpired);
    let code = server
        .ok(&format!("/v1/licenses/{}/emergency-codes", fx.license), &admin, json!({"reason": "bit flips"}))
        .await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = codes::decode(CodeKind::Emergency, &code).unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 0x80 >> (bit % 8);
        let forged = codes::encode(CodeKind::Emergency, &b).unwrap();
        assert!(online.apply_code(&forged).is_err(), "emergency bit {bit} flipped and accepted");
        assert_eq!(online.check("export_pdf").reason, Reason::LeaseExpired);
    }
    online.apply_code(&code).unwrap();
    assert_eq!(online.check("export_pdf").reason, Reason::EmergencyAccess);
    server.stop().await;
}

/// The customer edits the state file with sqlite: into machine Y's state goes a signed answer that is not Y's —
/// machine X's stored heartbeat answer (same license, before Y used its quota), or a validate answer fetched
/// with curl — and Y's unsigned usage rows go. Both answers verify against the vendor's keys, and each would
/// hand the quota back; each names another activation or endpoint, so the agent treats the state as tampered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_answer_of_another_activation_or_endpoint_is_not_trusted() {
    let server = TestServer::start().await;
    let fx = server.fixture("swap", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let x_config = agent_config(dir.path(), "swap-x", server.keyset(), fx.product, Some(&server.url()));
    let x = Agent::open(x_config.clone()).unwrap();
    x.activate(&fx.key).await.unwrap();
    x.heartbeat().await.unwrap();
    let y_config = agent_config(dir.path(), "swap-y", server.keyset(), fx.product, Some(&server.url()));
    let y = Agent::open(y_config.clone()).unwrap();
    y.activate(&fx.key).await.unwrap();
    assert!(y.try_consume("api_calls", 90).unwrap().allowed);
    assert_eq!(y.heartbeat().await.unwrap().usage_acknowledged, 1);
    assert_eq!(y.check("api_calls").facts.remaining, Some(10));
    drop((x, y));

    let read = |state: &std::path::Path| -> String {
        let db = rusqlite::Connection::open(state).unwrap();
        db.query_row("SELECT last_response FROM activation", [], |r| r.get(0)).unwrap()
    };
    let (x_answer, y_answer) = (read(&x_config.state_path), read(&y_config.state_path));
    let n = tessera_test_support::nonce();
    let validate: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/client/validate", server.url()))
        .json(&json!({"license_key": fx.key, "nonce": n}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tessera_test_support::open_signed(&server.keyset(), &validate, &n).is_some(), "a genuine signed answer");
    let validate_answer = validate["signed"].as_str().unwrap().to_string();

    let edit = |answer: &str| {
        let db = rusqlite::Connection::open(&y_config.state_path).unwrap();
        db.execute("UPDATE activation SET last_response = ?1", [answer]).unwrap();
        db.execute("DELETE FROM usage_totals", []).unwrap();
    };
    for (what, answer) in [("X's heartbeat answer", &x_answer), ("a validate answer", &validate_answer)] {
        edit(answer);
        let y = Agent::open(y_config.clone()).unwrap();
        let d = y.check("api_calls");
        assert_eq!(d.reason, Reason::SignatureInvalid, "{what} in Y's state: {d:?}");
        let problem = y.status().problem.unwrap_or_default();
        assert!(problem.contains("cached server answer"), "{what}: {problem}");
        assert!(!y.try_consume("api_calls", 50).unwrap().allowed, "{what}: no quota handed back");
    }
    // Y's own answer verifies, and its signed total still holds the quota down without the usage rows.
    edit(&y_answer);
    let y = Agent::open(y_config.clone()).unwrap();
    let d = y.check("api_calls");
    assert_eq!((d.reason, d.facts.remaining), (Reason::Valid, Some(10)), "{d:?}");
}
