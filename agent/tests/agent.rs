//! Agent tests against real SQLite files in temp dirs: offline codes signed here acting as the server, and a
//! small in-process mock of the client protocol (docs/PROTOCOL.md) for the online paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tessera_agent::{Agent, AgentConfig, AgentError, Applied, IdentityMode, Reason, TestClock};
use tessera_core::encoding::{b64url, b64url_decode};
use tessera_core::envelope::Envelope;
use tessera_core::fingerprint::{Fingerprint, MatchPolicy};
use tessera_core::model::{EmergencyScope, Feature, LicenseModel, LicenseStatus, LicenseType, LimitType};
use tessera_core::offline::{license_binding, EmergencyCode, OfflineGrant, SignedRequest};
use tessera_core::token::{sign_activation_token, sign_license_file, ActivationClaims};
use tessera_core::{Domain, License, LicenseKey, PublicKeyset, SigningKey};
use uuid::Uuid;

const PRODUCT: Uuid = Uuid::from_u128(0x07e5_5e7a_0000_4000_8000_0000_0000_0001);

/// These tests run several "machines" in one process with pinned identities: the policy must allow them.
fn pinned_policy() -> MatchPolicy {
    MatchPolicy { allow_pinned: true, ..MatchPolicy::default() }
}

fn t0() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    server_key: Arc<SigningKey>,
    clock: Arc<TestClock>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            server_key: Arc::new(SigningKey::generate_ed25519()),
            clock: Arc::new(TestClock::new(t0())),
        }
    }

    fn keyset(&self) -> PublicKeyset {
        PublicKeyset::new([self.server_key.verifying_key()])
    }

    fn config(&self, name: &str, server: Option<String>) -> AgentConfig {
        let mut c = AgentConfig::new(self.dir.path().join(name), self.keyset(), PRODUCT)
            .with_clock(self.clock.clone())
            .with_identity(IdentityMode::PinnedValue(format!("identity-of-{name}")));
        c.server_url = server;
        c.clock_tolerance = Duration::minutes(10);
        c
    }

    fn agent(&self, name: &str) -> Agent {
        Agent::open(self.config(name, None)).unwrap()
    }

    fn grant(&self) -> OfflineGrant {
        OfflineGrant {
            license_id: Uuid::from_u128(42),
            issued_at: t0(),
            license_type: LicenseType::Subscription,
            license_model: LicenseModel::PerDevice,
            starts_at: t0() - Duration::days(1),
            expires_at: Some(t0() + Duration::days(365)),
            maintenance_expires_at: None,
            lease_expires_at: Some(t0() + Duration::days(30)),
            grace_days: 7,
            fingerprint_policy: pinned_policy(),
            features: vec![Feature::new("export_pdf"), Feature::new("api_calls").with_limit(3, LimitType::Count)],
            billing_cycle: None,
        }
    }

    /// Acts as the server: answers a request code.
    fn respond(&self, key: &LicenseKey, request_code: &str) -> String {
        let req = SignedRequest::decode(request_code).unwrap();
        req.verify(&key.hash()).unwrap();
        self.grant().sign(&self.server_key, &license_binding(&key.hash(), &PRODUCT), &req).unwrap()
    }

    fn emergency(
        &self,
        key: &LicenseKey,
        device: Option<&[u8; 32]>,
        serial: u32,
        hours: i64,
        scope: EmergencyScope,
    ) -> String {
        EmergencyCode { bound: device.is_some(), scope, expires_at: self.clock_now() + Duration::hours(hours), serial }
            .sign(&self.server_key, &license_binding(&key.hash(), &PRODUCT), device)
            .unwrap()
    }

    fn clock_now(&self) -> DateTime<Utc> {
        use tessera_agent::Clock;
        self.clock.now()
    }
}

#[test]
fn fresh_agent_is_not_activated_and_says_what_to_do() {
    let f = Fixture::new();
    let a = f.agent("a.db");
    let d = a.check("export_pdf");
    assert!(!d.allowed);
    assert_eq!(d.reason, Reason::NotActivated);
    let s = a.status();
    assert!(!s.activated);
    assert!(s.recovery.unwrap().contains("activate"));
}

#[test]
fn offline_request_response_apply_allows_then_misuse_fails() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    let req = a.request_code(&key.expose()).unwrap();
    assert!(req.starts_with("REQ1"));
    assert_eq!(a.status().pending_requests, 1);
    let rsp = f.respond(&key, &req);
    assert!(rsp.len() <= 500, "response budget: {}", rsp.len());

    let applied = a.apply_code(&rsp).unwrap();
    assert!(matches!(applied, Applied::Activation { license_id, .. } if license_id == Uuid::from_u128(42)));
    let d = a.check("export_pdf");
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.reason, Reason::Valid);
    assert_eq!(a.check("other").reason, Reason::NotEntitled);

    // Survives a restart: everything re-verified from the state file.
    drop(a);
    let a = f.agent("a.db");
    assert!(a.check("export_pdf").allowed);

    // Applied twice fails.
    let err = a.apply_code(&rsp).unwrap_err();
    assert!(matches!(err, AgentError::Refused(_)), "{err}");

    // The same response on another device (with its own pending request for the same key) fails.
    let b = f.agent("b.db");
    b.request_code(&key.expose()).unwrap();
    assert!(b.apply_code(&rsp).is_err());
    assert_eq!(b.check("export_pdf").reason, Reason::NotActivated);

    // A typo is reported with its group, and nothing is applied.
    let mut typo: Vec<char> = rsp.chars().collect();
    let i = typo.len() / 2;
    typo[i] = if typo[i] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    let c = f.agent("c.db");
    c.request_code(&key.expose()).unwrap();
    let err = c.apply_code(&typo).unwrap_err();
    assert!(err.to_string().contains("group"), "{err}");
    assert_eq!(c.check("export_pdf").reason, Reason::NotActivated);

    // Lease end → LEASE_EXPIRED.
    f.clock.advance(Duration::days(31));
    assert_eq!(a.check("export_pdf").reason, Reason::LeaseExpired);
}

#[test]
fn quota_is_enforced_and_recorded_with_idempotency_ids() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    let rsp = f.respond(&key, &a.request_code(&key.expose()).unwrap());
    a.apply_code(&rsp).unwrap();
    assert!(a.consume("api_calls", 2).allowed);
    let d = a.consume("api_calls", 2);
    assert_eq!(d.reason, Reason::QuotaExceeded);
    assert!(a.consume("api_calls", 1).allowed);
    assert_eq!(a.check("api_calls").facts.remaining, Some(0));
    drop(a);
    let a = f.agent("a.db");
    assert_eq!(a.status().pending_usage, 2);
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);
}

#[test]
fn edited_cached_response_denies_signature_invalid() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    let rsp = f.respond(&key, &a.request_code(&key.expose()).unwrap());
    a.apply_code(&rsp).unwrap();
    drop(a);
    // Flip the grace days byte region: re-encode a tampered code is hard; edit the stored request instead.
    let conn = rusqlite::Connection::open(f.dir.path().join("a.db")).unwrap();
    let mut bytes: Vec<u8> = conn.query_row("SELECT request_bytes FROM activation", [], |r| r.get(0)).unwrap();
    bytes[3] ^= 0x01;
    conn.execute("UPDATE activation SET request_bytes = ?1", [bytes]).unwrap();
    drop(conn);
    let a = f.agent("a.db");
    let d = a.check("export_pdf");
    assert!(!d.allowed);
    assert_eq!(d.reason, Reason::SignatureInvalid);
    let s = a.status();
    assert!(s.problem.is_some());
    assert!(s.recovery.unwrap().contains("activate again"));
}

#[test]
fn clock_rollback_beyond_tolerance_is_clock_tampered() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    a.apply_code(&f.respond(&key, &a.request_code(&key.expose()).unwrap())).unwrap();
    f.clock.advance(Duration::days(2));
    a.touch_clock().unwrap();
    let real = f.clock_now();
    f.clock.advance(Duration::minutes(-5));
    assert!(a.check("export_pdf").allowed, "within tolerance");
    f.clock.advance(Duration::hours(-3));
    assert_eq!(a.check("export_pdf").reason, Reason::ClockTampered);
    // Also after a restart (the mark is persisted).
    drop(a);
    let a = f.agent("a.db");
    assert_eq!(a.check("export_pdf").reason, Reason::ClockTampered);
    assert!(a.status().recovery.unwrap().contains("clock"));
    // Moving the clock forward by what it was set back is not enough while time passes too: trusted time kept
    // counting on the boot clock. Setting it right is.
    f.clock.pass_holding_wall(Duration::minutes(30));
    f.clock.advance(Duration::hours(3) + Duration::minutes(5));
    a.touch_clock().unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::ClockTampered);
    f.clock.set(real + Duration::minutes(30) + Duration::hours(3) + Duration::minutes(5));
    let a = f.agent("a.db");
    assert!(a.check("export_pdf").allowed, "{:?}", a.check("export_pdf"));
}

#[test]
fn emergency_code_grants_until_expiry_once_per_device() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    // A machine with only a pending request (no activation yet) and an all-features code bound to it.
    a.request_code(&key.expose()).unwrap();
    let dev = a.device_public_key();
    let code = f.emergency(&key, Some(&dev), 7, 24, EmergencyScope::AllFeatures);
    assert!(code.len() <= 150, "emergency budget: {}", code.len());
    let applied = a.apply_code(&code).unwrap();
    assert!(matches!(applied, Applied::Emergency { serial: 7, .. }));
    let d = a.check("anything");
    assert!(d.allowed);
    assert_eq!(d.reason, Reason::EmergencyAccess);

    // Once per device.
    assert!(a.apply_code(&code).is_err());
    // Bound to another device: refused there.
    let b = f.agent("b.db");
    b.request_code(&key.expose()).unwrap();
    assert!(b.apply_code(&code).is_err());
    // Another license's code: refused.
    let other = LicenseKey::generate();
    let wrong = f.emergency(&other, None, 8, 24, EmergencyScope::AllFeatures);
    assert!(a.apply_code(&wrong).is_err());

    // Expiry: back to the normal state, no feature kept (also after restart).
    f.clock.advance(Duration::hours(25));
    assert_eq!(a.check("anything").reason, Reason::NotActivated);
    drop(a);
    let a = f.agent("a.db");
    assert_eq!(a.check("anything").reason, Reason::NotActivated);
    // An expired code is refused.
    let late = EmergencyCode {
        bound: false,
        scope: EmergencyScope::AllFeatures,
        expires_at: f.clock_now() - Duration::hours(1),
        serial: 9,
    }
    .sign(&f.server_key, &license_binding(&key.hash(), &PRODUCT), None)
    .unwrap();
    assert!(a.apply_code(&late).is_err());
}

#[test]
fn emergency_lifts_lease_expiry_for_licensed_features_then_ends() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    a.apply_code(&f.respond(&key, &a.request_code(&key.expose()).unwrap())).unwrap();
    f.clock.advance(Duration::days(31));
    assert_eq!(a.check("export_pdf").reason, Reason::LeaseExpired);
    let code = f.emergency(&key, None, 1, 2, EmergencyScope::LicensedFeatures);
    a.apply_code(&code).unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::EmergencyAccess);
    assert_eq!(a.check("not_licensed").reason, Reason::NotEntitled);
    f.clock.advance(Duration::hours(3));
    assert_eq!(a.check("export_pdf").reason, Reason::LeaseExpired);
}

#[test]
fn offline_deactivation_prints_a_receipt_and_removes_everything() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    a.apply_code(&f.respond(&key, &a.request_code(&key.expose()).unwrap())).unwrap();
    let receipt = a.deactivate_offline().unwrap();
    assert!(receipt.starts_with("RCT2") && receipt.len() <= 200, "{receipt}");
    let r = tessera_core::offline::SignedReceipt::decode(&receipt).unwrap();
    r.verify(&key.hash(), &a.device_public_key()).unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::NotActivated);
    assert!(matches!(a.deactivate_offline(), Err(AgentError::NotActivated)));
}

#[test]
fn newer_schema_is_refused_with_advice() {
    let f = Fixture::new();
    drop(f.agent("a.db"));
    let conn = rusqlite::Connection::open(f.dir.path().join("a.db")).unwrap();
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(conn);
    let err = Agent::open(f.config("a.db", None)).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

// ------------------------------------------------------------------------------------------------------------
// Online: a mock of the client protocol.

struct Mock {
    key: Arc<SigningKey>,
    clock: Arc<TestClock>,
    license: License,
    device: Option<Vec<u8>>,
    activation_id: Uuid,
    fingerprint: Fingerprint,
    seen_usage: HashSet<Uuid>,
    totals: HashMap<String, u64>,
    down: bool,
    wrong_nonce: bool,
    heartbeats: usize,
    /// Signs heartbeat answers as if for this endpoint (`Some(None)`: names none, as an older server would).
    heartbeat_endpoint: Option<Option<&'static str>>,
    /// Signs activation and heartbeat answers as if for this activation.
    answer_activation: Option<Uuid>,
    /// The country the activation token carries.
    country: Option<String>,
}

type Shared = Arc<Mutex<Mock>>;

/// A signed answer as the server makes it (docs/PROTOCOL.md): naming its endpoint and activation.
fn sealed(
    key: &SigningKey,
    now: DateTime<Utc>,
    endpoint: Option<&str>,
    activation: Option<Uuid>,
    nonce: &str,
    result: Value,
) -> String {
    let payload = json!({"nonce": nonce, "endpoint": endpoint, "activation_id": activation, "server_time": now, "result": result});
    Envelope::seal(key, Domain::ServerResponse, serde_json::to_vec(&payload).unwrap()).to_compact()
}

fn signed(m: &Mock, endpoint: Option<&str>, activation: Option<Uuid>, nonce: &str, result: Value) -> Response {
    use tessera_agent::Clock;
    Json(json!({"signed": sealed(&m.key, m.clock.now(), endpoint, activation, nonce, result)})).into_response()
}

fn token(m: &Mock) -> String {
    use tessera_agent::Clock;
    let now = m.clock.now();
    sign_activation_token(
        &m.key,
        &ActivationClaims {
            activation_id: m.activation_id,
            license_id: m.license.id,
            tenant_id: m.license.tenant_id,
            product_id: m.license.product_id,
            device_public_key: m.device.clone().unwrap_or_default(),
            fingerprint: m.fingerprint.clone(),
            fingerprint_policy: m.license.fingerprint_policy.clone(),
            issued_at: now,
            lease_expires_at: now + Duration::days(7),
            heartbeat_interval_secs: 3600,
            seats: None,
            user_id: None,
            country: m.country.clone(),
        },
    )
}

async fn activate(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    use tessera_agent::Clock;
    let mut m = s.lock().unwrap();
    if m.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    m.device = Some(b64url_decode(body["device_public_key"].as_str().unwrap()).unwrap());
    m.fingerprint = serde_json::from_value(body["fingerprint"].clone()).unwrap();
    let now = m.clock.now();
    let result = json!({
        "activation_id": m.activation_id,
        "activation_token": token(&m),
        "license_file": sign_license_file(&m.key, &m.license, now),
        "lease_expires_at": now + Duration::days(7),
        "heartbeat_interval_secs": 3600,
        "reused": false,
    });
    let activation = m.answer_activation.unwrap_or(m.activation_id);
    signed(&m, Some("/v1/client/activate"), Some(activation), body["nonce"].as_str().unwrap(), result)
}

async fn heartbeat(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    use tessera_agent::Clock;
    let mut m = s.lock().unwrap();
    if m.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let sig = b64url_decode(headers["x-tessera-signature"].to_str().unwrap()).unwrap();
    let dev = tessera_core::crypto::ed25519_public_from_bytes(m.device.as_ref().unwrap()).unwrap();
    if dev.verify(Domain::DeviceMessage, &[b"/v1/client/heartbeat"], &body, &sig).is_err() {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "BAD_DEVICE_SIGNATURE", "message": "x"}})))
            .into_response();
    }
    m.heartbeats += 1;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut accepted = Vec::new();
    for u in v["usage"].as_array().unwrap() {
        let id: Uuid = u["id"].as_str().unwrap().parse().unwrap();
        if m.seen_usage.insert(id) {
            *m.totals.entry(u["feature"].as_str().unwrap().to_string()).or_insert(0) += u["amount"].as_u64().unwrap();
        }
        accepted.push(id);
    }
    let now = m.clock.now();
    let nonce =
        if m.wrong_nonce { "AAAAAAAAAAAAAAAAAAAAAA".to_string() } else { v["nonce"].as_str().unwrap().to_string() };
    let result = json!({
        "activation_status": "ACTIVE",
        "license_status": m.license.status,
        "activation_token": token(&m),
        "license_file": sign_license_file(&m.key, &m.license, now),
        "lease_expires_at": now + Duration::days(7),
        "next_heartbeat_secs": 3600,
        "accepted_usage": accepted,
        "usage_totals": m.totals,
    });
    let endpoint = m.heartbeat_endpoint.unwrap_or(Some("/v1/client/heartbeat"));
    signed(&m, endpoint, Some(m.answer_activation.unwrap_or(m.activation_id)), &nonce, result)
}

async fn deactivate(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let m = s.lock().unwrap();
    signed(
        &m,
        Some("/v1/client/deactivate"),
        Some(m.activation_id),
        body["nonce"].as_str().unwrap(),
        json!({"deactivated": true}),
    )
}

async fn mock_server(f: &Fixture) -> (String, Shared) {
    let license = License {
        id: Uuid::from_u128(77),
        tenant_id: Uuid::from_u128(1),
        product_id: PRODUCT,
        customer_id: None,
        template_id: None,
        license_type: LicenseType::Subscription,
        license_model: LicenseModel::PerDevice,
        status: LicenseStatus::Active,
        max_activations: 3,
        issued_at: t0(),
        starts_at: t0() - Duration::days(1),
        expires_at: Some(t0() + Duration::days(365)),
        maintenance_expires_at: None,
        grace_days: 0,
        features: vec![Feature::new("export_pdf"), Feature::new("api_calls").with_limit(10, LimitType::Count)],
        restrictions: vec![],
        fingerprint_policy: pinned_policy(),
        heartbeat_interval_secs: 3600,
        lease_secs: 7 * 86400,
        metadata: Default::default(),
        billing_cycle: None,
    };
    let shared = Arc::new(Mutex::new(Mock {
        key: f.server_key.clone(),
        clock: f.clock.clone(),
        license,
        device: None,
        activation_id: Uuid::from_u128(99),
        fingerprint: Fingerprint::default(),
        seen_usage: HashSet::new(),
        totals: HashMap::new(),
        down: false,
        wrong_nonce: false,
        heartbeats: 0,
        heartbeat_endpoint: None,
        answer_activation: None,
        country: None,
    }));
    let app = Router::new()
        .route("/v1/client/activate", post(activate))
        .route("/v1/client/heartbeat", post(heartbeat))
        .route("/v1/client/deactivate", post(deactivate))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

#[tokio::test]
async fn online_activate_usage_exactly_once_revocation_and_tamper() {
    let f = Fixture::new();
    let (url, mock) = mock_server(&f).await;
    let key = LicenseKey::generate();
    let a = Agent::open(f.config("a.db", Some(url.clone()))).unwrap();
    let act = a.activate(&key.expose()).await.unwrap();
    assert_eq!(act.license_id, Uuid::from_u128(77));
    assert!(a.check("export_pdf").allowed);

    // Usage recorded while the server is down stays queued; survives a restart; syncs exactly once.
    mock.lock().unwrap().down = true;
    assert!(a.consume("api_calls", 3).allowed);
    assert!(a.heartbeat().await.is_err());
    assert!(a.check("export_pdf").allowed, "offline until the lease ends");
    drop(a);
    let a = Agent::open(f.config("a.db", Some(url.clone()))).unwrap();
    assert_eq!(a.status().pending_usage, 1);
    mock.lock().unwrap().down = false;
    let o = a.heartbeat().await.unwrap();
    assert_eq!((o.usage_sent, o.usage_acknowledged), (1, 1));
    let o = a.heartbeat().await.unwrap();
    assert_eq!(o.usage_sent, 0);
    assert_eq!(mock.lock().unwrap().totals["api_calls"], 3);
    assert_eq!(a.check("api_calls").facts.remaining, Some(7));

    // A replayed / forged answer (wrong nonce) is rejected and changes nothing.
    mock.lock().unwrap().wrong_nonce = true;
    assert!(matches!(a.heartbeat().await, Err(AgentError::UntrustedResponse(_))));
    mock.lock().unwrap().wrong_nonce = false;

    // Revocation reaches the agent at its next heartbeat, and stays after a restart.
    mock.lock().unwrap().license.status = LicenseStatus::Revoked;
    a.heartbeat().await.unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::Revoked);
    drop(a);
    let a = Agent::open(f.config("a.db", Some(url.clone()))).unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::Revoked);
    mock.lock().unwrap().license.status = LicenseStatus::Active;
    a.heartbeat().await.unwrap();
    assert!(a.check("export_pdf").allowed);

    // Lease end with the server gone.
    mock.lock().unwrap().down = true;
    f.clock.advance(Duration::days(8));
    assert_eq!(a.check("export_pdf").reason, Reason::LeaseExpired);
    f.clock.advance(Duration::days(-8));
    drop(a);

    // One edited byte in the cached license file → SIGNATURE_INVALID.
    let conn = rusqlite::Connection::open(f.dir.path().join("a.db")).unwrap();
    let lf: String = conn.query_row("SELECT license_file FROM activation", [], |r| r.get(0)).unwrap();
    let body_start = lf.find("\n\n").unwrap() + 2;
    let mut bytes = lf.into_bytes();
    bytes[body_start + 10] = if bytes[body_start + 10] == b'A' { b'B' } else { b'A' };
    conn.execute("UPDATE activation SET license_file = ?1", [String::from_utf8(bytes).unwrap()]).unwrap();
    drop(conn);
    let a = Agent::open(f.config("a.db", Some(url.clone()))).unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::SignatureInvalid);
    assert!(a.status().recovery.unwrap().contains("activate again"));

    // Activating again repairs it; deactivation frees it.
    mock.lock().unwrap().down = false;
    a.activate(&key.expose()).await.unwrap();
    assert!(a.check("export_pdf").allowed);
    a.deactivate().await.unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::NotActivated);
}

#[tokio::test]
async fn daemon_api_answers_from_memory() {
    use tower::ServiceExt;
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    a.apply_code(&f.respond(&key, &a.request_code(&key.expose()).unwrap())).unwrap();
    let app = tessera_agent::daemon::router(a.clone());
    let req = |m: &str, uri: &str, body: &str| {
        axum::http::Request::builder()
            .method(m)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    let r = app.clone().oneshot(req("GET", "/v1/check/export_pdf", "")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.clone().oneshot(req("GET", "/v1/check/nope", "")).await.unwrap();
    assert_eq!(r.status(), 402, "not in the plan");
    let r = app.clone().oneshot(req("POST", "/v1/usage", r#"{"feature":"api_calls","amount":3}"#)).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.clone().oneshot(req("POST", "/v1/usage", r#"{"feature":"api_calls"}"#)).await.unwrap();
    assert_eq!(r.status(), 402, "a used-up lifetime quota asks for an upgrade");
    let r = app.oneshot(req("GET", "/v1/status", "")).await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = b64url(&[1]);
}

#[test]
fn heartbeat_backoff_grows_and_is_capped_with_jitter() {
    use std::time::Duration as Std;
    let cap = Std::from_secs(3600);
    let first = tessera_agent::backoff(1, cap);
    assert!(first >= Std::from_millis(13_500) && first <= Std::from_millis(16_500), "{first:?}");
    let third = tessera_agent::backoff(3, cap);
    assert!(third >= Std::from_secs(54) && third <= Std::from_secs(66), "{third:?}");
    let capped = tessera_agent::backoff(30, Std::from_secs(60));
    assert!(capped <= Std::from_secs(66), "{capped:?}");
    let j = tessera_agent::jitter(Std::from_secs(100));
    assert!(j >= Std::from_secs(90) && j <= Std::from_secs(110));
}

#[test]
fn an_honest_agent_renews_before_its_lease_can_lapse() {
    use std::time::Duration as Std;
    let interval = Std::from_secs(60);
    // A floating lease reused with 63 s left: a jittered 66 s beat would land after it; the beat comes at 57 s.
    assert_eq!(
        tessera_agent::next_heartbeat_in(Std::from_secs(66), interval, Some(Std::from_secs(63))),
        Std::from_secs(57)
    );
    // Plenty of lease: the jittered interval.
    assert_eq!(
        tessera_agent::next_heartbeat_in(Std::from_secs(66), interval, Some(Std::from_secs(3600))),
        Std::from_secs(66)
    );
    // Almost gone: as soon as allowed, never a busy loop.
    assert_eq!(
        tessera_agent::next_heartbeat_in(Std::from_secs(66), interval, Some(Std::from_secs(2))),
        Std::from_secs(1)
    );
    for _ in 0..1000 {
        let left = Std::from_secs(61 + u64::from(rand_byte()) % 60);
        let next = tessera_agent::next_heartbeat_in(tessera_agent::jitter(interval), interval, Some(left));
        assert!(next + Std::from_secs(5) <= left, "{next:?} with {left:?} left");
    }
}

fn rand_byte() -> u8 {
    Uuid::new_v4().as_bytes()[0]
}

// ------------------------------------------------------------------------------------------------------------
// The binary.

fn cli(f: &Fixture, args: &[&str]) -> (i32, String, String) {
    let keyset = f.dir.path().join("keyset.json");
    if !keyset.exists() {
        std::fs::write(&keyset, f.keyset().to_json()).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-agent"))
        .args(args)
        .env("TESSERA_AGENT_STATE", f.dir.path().join("cli.db"))
        .env("TESSERA_AGENT_KEYSET", &keyset)
        .env("TESSERA_PRODUCT_ID", PRODUCT.to_string())
        .env("TESSERA_AGENT_IDENTITY", "cli-test-identity-0001")
        .env_remove("TESSERA_SERVER_URL")
        .env_remove("TESSERA_AGENT_IDENTITY_FILE")
        .env_remove("TESSERA_LICENSE_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_offline_flow_exit_codes_and_json() {
    let f = Fixture::new();
    // Not activated: exit 1 and the reason.
    let (code, out, _) = cli(&f, &["check", "export_pdf"]);
    assert_eq!(code, 1);
    assert!(out.contains("NOT_ACTIVATED"), "{out}");
    let (code, out, _) = cli(&f, &["check", "export_pdf", "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reason"], "NOT_ACTIVATED");

    // request-code --out, the vendor answers, apply-code --file.
    let key = LicenseKey::generate();
    let req_file = f.dir.path().join("req.txt");
    let (code, out, err) = cli(&f, &["request-code", "--key", &key.expose(), "--out", req_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let req = std::fs::read_to_string(&req_file).unwrap();
    assert_eq!(out.trim(), req.trim());
    // The real clock is used by the binary: answer with a grant valid around now.
    let mut grant = f.grant();
    let now = Utc::now();
    grant.issued_at = now;
    grant.starts_at = now - Duration::days(1);
    grant.expires_at = Some(now + Duration::days(365));
    grant.lease_expires_at = Some(now + Duration::days(30));
    let sreq = SignedRequest::decode(&req).unwrap();
    let rsp = grant.sign(&f.server_key, &license_binding(&key.hash(), &PRODUCT), &sreq).unwrap();
    let rsp_file = f.dir.path().join("rsp.txt");
    std::fs::write(&rsp_file, format!("{}\n", tessera_core::codes::wrap(&rsp, 40))).unwrap();

    // A typo: exit 2, names the group, nothing applied.
    let mut typo: Vec<char> = rsp.chars().collect();
    let i = 30;
    typo[i] = if typo[i] == 'Z' { 'Y' } else { 'Z' };
    let typo: String = typo.into_iter().collect();
    let (code, _, err) = cli(&f, &["apply-code", &typo]);
    assert_eq!(code, 2);
    assert!(err.contains("group"), "{err}");

    let (code, out, err) = cli(&f, &["apply-code", "--file", rsp_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("export_pdf"), "{out}");
    let (code, out, _) = cli(&f, &["check", "export_pdf"]);
    assert_eq!(code, 0, "{out}");
    // Applied twice fails.
    let (code, _, _) = cli(&f, &["apply-code", "--file", rsp_file.to_str().unwrap()]);
    assert_eq!(code, 2);
    let (code, out, _) = cli(&f, &["consume", "api_calls", "2", "--json"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&f, &["status", "--json"]);
    assert_eq!(code, 0);
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["activated"], true);
    assert_eq!(s["pending_usage"], 1);
    assert_eq!(s["decision"]["reason"], "VALID");
    let (code, out, _) = cli(&f, &["fingerprint", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["fingerprint"][0]["kind"], "pinned");
    assert!(v.get("raw").is_none());
    let (code, out, _) = cli(&f, &["deactivate", "--offline", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["receipt_code"].as_str().unwrap().starts_with("RCT2"));
    let (code, _, _) = cli(&f, &["check", "export_pdf"]);
    assert_eq!(code, 1);
    // No server configured: online commands say what to do.
    let (code, _, err) = cli(&f, &["heartbeat"]);
    assert_eq!(code, 2);
    assert!(err.contains("TESSERA_SERVER_URL") || err.contains("not activated"), "{err}");
}

/// Flips every bit of one cached column; the agent must refuse (refresh fails) or deny after each.
fn sweep_column(agent: &Agent, state: &std::path::Path, column: &str, step: usize) -> usize {
    let db = rusqlite::Connection::open(state).unwrap();
    db.pragma_update(None, "synchronous", "OFF").unwrap();
    let original: String = db.query_row(&format!("SELECT {column} FROM activation"), [], |r| r.get(0)).unwrap();
    let bytes = original.as_bytes().to_vec();
    for bit in (0..bytes.len() * 8).step_by(step) {
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
        assert!(rejected, "{column}: bit {bit} of {} flipped and still allowed", bytes.len() * 8);
    }
    db.execute(&format!("UPDATE activation SET {column} = ?1"), [original]).unwrap();
    agent.refresh().unwrap();
    assert!(agent.check("export_pdf").allowed, "restored {column} verifies again");
    bytes.len() * 8
}

#[tokio::test]
async fn every_bit_flip_of_cached_artefacts_is_rejected() {
    let f = Fixture::new();
    let (url, _mock) = mock_server(&f).await;
    let key = LicenseKey::generate();
    let config = f.config("a.db", Some(url));
    let a = Agent::open(config.clone()).unwrap();
    a.activate(&key.expose()).await.unwrap();
    a.heartbeat().await.unwrap();
    assert!(a.check("export_pdf").allowed);
    let n = sweep_column(&a, &config.state_path, "license_file", 1)
        + sweep_column(&a, &config.state_path, "activation_token", 1)
        + sweep_column(&a, &config.state_path, "last_response", 7);
    assert!(n > 10_000, "{n}");

    // Offline: the stored response code.
    let b = f.agent("b.db");
    b.apply_code(&f.respond(&key, &b.request_code(&key.expose()).unwrap())).unwrap();
    sweep_column(&b, &f.dir.path().join("b.db"), "response_code", 1);
}

fn stored_answer(state: &std::path::Path) -> String {
    let db = rusqlite::Connection::open(state).unwrap();
    db.query_row("SELECT last_response FROM activation", [], |r| r.get(0)).unwrap()
}

fn store_answer(state: &std::path::Path, answer: &str) {
    let db = rusqlite::Connection::open(state).unwrap();
    assert_eq!(db.execute("UPDATE activation SET last_response = ?1", [answer]).unwrap(), 1);
}

/// Signed answers name their endpoint and activation (docs/PROTOCOL.md): one signed for another endpoint, for
/// another activation, or naming neither (an older server) is refused when it arrives, and nothing of it is stored.
#[tokio::test]
async fn an_answer_for_another_endpoint_or_activation_is_refused_on_receipt() {
    let f = Fixture::new();
    let (url, mock) = mock_server(&f).await;
    let key = LicenseKey::generate();
    let config = f.config("a.db", Some(url));
    let a = Agent::open(config.clone()).unwrap();

    // An activation answer naming another activation than the one it returns.
    mock.lock().unwrap().answer_activation = Some(Uuid::from_u128(1234));
    match a.activate(&key.expose()).await {
        Err(AgentError::UntrustedResponse(m)) => assert!(m.contains("another activation"), "{m}"),
        other => panic!("expected an untrusted answer, got {other:?}"),
    }
    assert_eq!(a.check("export_pdf").reason, Reason::NotActivated);
    mock.lock().unwrap().answer_activation = None;
    a.activate(&key.expose()).await.unwrap();
    a.heartbeat().await.unwrap();
    let before = stored_answer(&config.state_path);

    let cases: [(Option<&'static str>, Option<Uuid>, &str); 4] = [
        (Some("/v1/client/validate"), None, "signed for /v1/client/validate"),
        (Some("/v1/client/deactivate"), None, "signed for /v1/client/deactivate"),
        (None, None, "does not name the endpoint"),
        (Some("/v1/client/heartbeat"), Some(Uuid::from_u128(1234)), "another activation"),
    ];
    for (endpoint, activation, why) in cases {
        {
            let mut m = mock.lock().unwrap();
            m.heartbeat_endpoint = Some(endpoint);
            m.answer_activation = activation;
            m.license.status = LicenseStatus::Revoked; // what the refused answer would have said
        }
        match a.heartbeat().await {
            Err(AgentError::UntrustedResponse(m)) => assert!(m.contains(why), "{why}: {m}"),
            other => panic!("{endpoint:?} / {activation:?}: expected an untrusted answer, got {other:?}"),
        }
        assert_eq!(stored_answer(&config.state_path), before, "nothing of a refused answer is stored");
        assert!(a.check("export_pdf").allowed);
    }
    {
        let mut m = mock.lock().unwrap();
        m.heartbeat_endpoint = None;
        m.answer_activation = None;
    }
    a.heartbeat().await.unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::Revoked, "the right answer is taken");
}

/// A customer copies a heartbeat answer of one activation into the state of another (or puts there an answer of
/// another endpoint, signed by the same server): the cached answer is refused on load, like any other tampering.
#[tokio::test]
async fn a_stored_answer_of_another_activation_or_endpoint_is_refused_on_load() {
    let f = Fixture::new();
    let (url, mock) = mock_server(&f).await;
    let key = LicenseKey::generate();
    let a = Agent::open(f.config("a.db", Some(url.clone()))).unwrap();
    a.activate(&key.expose()).await.unwrap();
    a.heartbeat().await.unwrap();
    let a_answer = stored_answer(&f.dir.path().join("a.db"));
    // A second machine gets its own activation.
    let b_id = Uuid::from_u128(100);
    mock.lock().unwrap().activation_id = b_id;
    let b_state = f.dir.path().join("b.db");
    let b = Agent::open(f.config("b.db", Some(url))).unwrap();
    b.activate(&key.expose()).await.unwrap();
    b.heartbeat().await.unwrap();
    assert!(b.check("export_pdf").allowed);
    let b_answer = stored_answer(&b_state);
    assert_ne!(a_answer, b_answer);

    // A's answer in B's state: signed by the vendor's server, but for activation A.
    store_answer(&b_state, &a_answer);
    b.refresh().unwrap();
    assert_eq!(b.check("export_pdf").reason, Reason::SignatureInvalid);
    let problem = b.status().problem.unwrap();
    assert!(problem.contains("cached server answer") && problem.contains("another activation"), "{problem}");
    drop(b);
    let b = Agent::open(f.config("b.db", None)).unwrap();
    assert_eq!(b.check("export_pdf").reason, Reason::SignatureInvalid, "and on the next start");

    // Answers of other endpoints for B's activation, signed by the same server key.
    let now = f.clock_now();
    let forged = [
        sealed(&f.server_key, now, Some("/v1/client/deactivate"), Some(b_id), "n", json!({"deactivated": true})),
        sealed(&f.server_key, now, Some("/v1/client/validate"), None, "n", json!({"valid": true})),
        sealed(&f.server_key, now, None, Some(b_id), "n", json!({"activation_status": "ACTIVE"})),
        sealed(&f.server_key, now, Some("/v1/client/heartbeat"), None, "n", json!({"activation_status": "ACTIVE"})),
    ];
    for answer in &forged {
        store_answer(&b_state, answer);
        b.refresh().unwrap();
        assert_eq!(b.check("export_pdf").reason, Reason::SignatureInvalid, "{answer}");
    }
    // B's own answer verifies again, and so would a fresh heartbeat answer for B.
    let own = sealed(
        &f.server_key,
        now,
        Some("/v1/client/heartbeat"),
        Some(b_id),
        "n",
        json!({"activation_status": "ACTIVE", "license_status": "ACTIVE"}),
    );
    for answer in [b_answer.as_str(), own.as_str()] {
        store_answer(&b_state, answer);
        b.refresh().unwrap();
        assert!(b.check("export_pdf").allowed, "{answer}");
    }
}

/// The activation token carries the country the server's GeoIP database placed the device in; the agent decides
/// GEOGRAPHIC restrictions on it offline (unknown never denies).
#[tokio::test]
async fn a_signed_country_that_the_license_denies_is_denied_offline() {
    use tessera_core::model::{Restriction, RestrictionKind, RestrictionMode};
    let geo = |mode, values: &[&str]| Restriction {
        kind: RestrictionKind::Geographic,
        mode,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let cases = [
        (Some("DE"), geo(RestrictionMode::Deny, &["DE"]), false),
        (Some("DE"), geo(RestrictionMode::Allow, &["FR", "AT"]), false),
        (Some("FR"), geo(RestrictionMode::Allow, &["FR", "AT"]), true),
        (Some("FR"), geo(RestrictionMode::Deny, &["DE"]), true),
        (None, geo(RestrictionMode::Allow, &["FR"]), true),
        (None, geo(RestrictionMode::Deny, &["DE"]), true),
    ];
    for (i, (country, restriction, allowed)) in cases.into_iter().enumerate() {
        let f = Fixture::new();
        let (url, mock) = mock_server(&f).await;
        {
            let mut m = mock.lock().unwrap();
            m.country = country.map(str::to_string);
            m.license.restrictions = vec![restriction.clone()];
        }
        let name = format!("geo-{i}.db");
        let a = Agent::open(f.config(&name, Some(url.clone()))).unwrap();
        a.activate(&LicenseKey::generate().expose()).await.unwrap();
        // Offline from here on: the decision is the agent's own, from what it verified.
        mock.lock().unwrap().down = true;
        drop(a);
        let a = Agent::open(f.config(&name, None)).unwrap();
        let d = a.check("export_pdf");
        assert_eq!(d.allowed, allowed, "{country:?} under {restriction:?}: {d:?}");
        if !allowed {
            assert_eq!(d.reason, Reason::Restricted);
        }
    }
}

#[test]
fn per_thread_check_cache_never_mixes_agents_or_misses_updates() {
    let f = Fixture::new();
    let key = LicenseKey::generate();
    let a = f.agent("a.db");
    let b = f.agent("b.db");
    a.apply_code(&f.respond(&key, &a.request_code(&key.expose()).unwrap())).unwrap();
    for _ in 0..3 {
        assert!(a.check("export_pdf").allowed);
        assert_eq!(b.check("export_pdf").reason, Reason::NotActivated);
    }
    // An update published from another thread is seen by this thread's next check, and vice versa.
    let a2 = a.clone();
    std::thread::spawn(move || {
        assert!(a2.check("export_pdf").allowed);
        a2.deactivate_offline().unwrap();
        assert_eq!(a2.check("export_pdf").reason, Reason::NotActivated);
    })
    .join()
    .unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::NotActivated);
    let b2 = b.clone();
    let rsp = f.respond(&key, &b.request_code(&key.expose()).unwrap());
    b2.apply_code(&rsp).unwrap();
    let allowed = std::thread::spawn(move || b2.check("export_pdf").allowed).join().unwrap();
    assert!(allowed);
    assert!(b.check("export_pdf").allowed);
}

/// An agent on the real clock (`SystemClock`, the coarse wall clock and the boot clock), given `grant`.
fn real_clock_agent(f: &Fixture, name: &str, grant: &OfflineGrant) -> Agent {
    let mut config = f.config(name, None).with_clock(Arc::new(tessera_agent::SystemClock));
    config.clock_tolerance = Duration::minutes(10);
    let a = Agent::open(config).unwrap();
    let key = LicenseKey::generate();
    let req = SignedRequest::decode(&a.request_code(&key.expose()).unwrap()).unwrap();
    a.apply_code(&grant.sign(&f.server_key, &license_binding(&key.hash(), &PRODUCT), &req).unwrap()).unwrap();
    a
}

#[tokio::test]
async fn on_the_real_clock_a_license_expiring_in_a_second_is_refused_after_it() {
    // Online: a license file carries its expiry to the microsecond (offline codes carry whole minutes).
    let f = Fixture::new();
    let now = Utc::now();
    f.clock.set(now); // the mock server's clock, for the token it signs
    let (url, mock) = mock_server(&f).await;
    let expires = now + Duration::seconds(1);
    {
        let mut m = mock.lock().unwrap();
        m.license.issued_at = now;
        m.license.starts_at = now - Duration::days(1);
        m.license.expires_at = Some(expires);
    }
    let mut config = f.config("real.db", Some(url)).with_clock(Arc::new(tessera_agent::SystemClock));
    config.clock_tolerance = Duration::minutes(10);
    let a = Agent::open(config).unwrap();
    a.activate(&LicenseKey::generate().expose()).await.unwrap();
    assert_eq!(a.check("export_pdf").facts.expires_at, Some(expires));
    let sleep_until = |t: DateTime<Utc>| std::thread::sleep((t - Utc::now()).to_std().unwrap_or_default());
    sleep_until(expires - Duration::milliseconds(100));
    assert_eq!(a.check("export_pdf").reason, Reason::Valid, "before the expiry");
    // The coarse clock trails the precise one by a tick, a few on a loaded machine (see the clock's own test,
    // which bounds the lag at 100 ms): past that, the license has expired.
    sleep_until(expires + Duration::milliseconds(150));
    let d = a.check("export_pdf");
    assert_eq!((d.allowed, d.reason), (false, Reason::Expired), "{d:?}");
    assert_eq!(a.check_license().reason, Reason::Expired);
}

#[test]
fn on_the_real_clock_a_clock_set_back_is_detected() {
    // The code was issued (signed) by a server whose clock reads an hour later than this machine's: as if this
    // machine's clock had been set back an hour after the code was issued. Trusted time is at least the signed
    // time, so the machine's real clock is an hour behind it, past the ten-minute tolerance.
    let f = Fixture::new();
    let grant = |issued_at| OfflineGrant {
        issued_at,
        starts_at: issued_at - Duration::days(1),
        expires_at: Some(issued_at + Duration::days(365)),
        lease_expires_at: Some(issued_at + Duration::days(30)),
        ..f.grant()
    };
    let a = real_clock_agent(&f, "back.db", &grant(Utc::now() + Duration::hours(1)));
    assert_eq!(a.check("export_pdf").reason, Reason::ClockTampered);
    assert_eq!(a.check_license().reason, Reason::ClockTampered);
    drop(a);
    let mut config = f.config("back.db", None).with_clock(Arc::new(tessera_agent::SystemClock));
    config.clock_tolerance = Duration::minutes(10);
    assert_eq!(Agent::open(config).unwrap().check("export_pdf").reason, Reason::ClockTampered, "after a restart");
    // Five minutes behind is within the tolerance: allowed, and decided at trusted time.
    let a = real_clock_agent(&f, "near.db", &grant(Utc::now() + Duration::minutes(5)));
    let d = a.check("export_pdf");
    assert!(d.allowed, "{d:?}");
    assert!(d.facts.trusted_time.unwrap() > Utc::now() + Duration::minutes(4), "{d:?}");
}

#[test]
fn a_quota_per_day_is_enforced_offline_and_starts_afresh_at_utc_midnight() {
    use tessera_core::model::LimitPeriod;
    let f = Fixture::new(); // 12:00 UTC
    let key = LicenseKey::generate();
    let a = f.agent("day.db");
    let grant = OfflineGrant {
        features: vec![Feature::new("api_calls").with_limit(3, LimitType::Count).per(LimitPeriod::Day)],
        ..f.grant()
    };
    let req = SignedRequest::decode(&a.request_code(&key.expose()).unwrap()).unwrap();
    a.apply_code(&grant.sign(&f.server_key, &license_binding(&key.hash(), &PRODUCT), &req).unwrap()).unwrap();
    let midnight: DateTime<Utc> = "2026-06-02T00:00:00Z".parse().unwrap();

    assert!(a.consume("api_calls", 3).allowed);
    let d = a.consume("api_calls", 1);
    assert_eq!((d.reason, a.quota_period_end("api_calls")), (Reason::QuotaExceeded, Some(midnight)));
    assert_eq!(a.check("api_calls").facts.remaining, Some(0));
    // The day's use is in the state file: a restart the same day does not free it.
    drop(a);
    let a = f.agent("day.db");
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);

    // At midnight the settled answers and quota use both see a fresh day, without a restart...
    f.clock.advance(Duration::hours(12));
    assert_eq!(a.check("api_calls").facts.remaining, Some(3));
    assert!(a.consume("api_calls", 2).allowed);
    assert_eq!(a.check("api_calls").facts.used, Some(2));
    // ...and after one, where yesterday's queued events no longer count.
    drop(a);
    let a = f.agent("day.db");
    assert_eq!(a.check("api_calls").facts.used, Some(2));
    assert_eq!(a.status().pending_usage, 2, "both events stay queued for the server");
    assert!(a.consume("api_calls", 1).allowed);
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);
    // A clock set back into yesterday, within the tolerance, still decides at trusted time: today stays used up.
    f.clock.advance(Duration::minutes(-5));
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);
    assert_eq!(a.status().usage["api_calls"], 3);
    // Set back past the tolerance, it is tampering, not yesterday's quota.
    f.clock.advance(Duration::hours(-1));
    assert_eq!(a.consume("api_calls", 1).reason, Reason::ClockTampered);
}

/// A daily-quota agent, activated offline at 12:00 UTC with 3 calls a day.
fn daily_agent(f: &Fixture, name: &str) -> Agent {
    use tessera_core::model::LimitPeriod;
    let key = LicenseKey::generate();
    let a = f.agent(name);
    let grant = OfflineGrant {
        features: vec![Feature::new("api_calls").with_limit(3, LimitType::Count).per(LimitPeriod::Day)],
        ..f.grant()
    };
    let req = SignedRequest::decode(&a.request_code(&key.expose()).unwrap()).unwrap();
    a.apply_code(&grant.sign(&f.server_key, &license_binding(&key.hash(), &PRODUCT), &req).unwrap()).unwrap();
    a
}

#[test]
fn a_clock_set_forward_to_borrow_tomorrows_quota_then_back_gains_nothing() {
    let f = Fixture::new();
    let a = daily_agent(&f, "borrow.db");
    assert!(a.consume("api_calls", 3).allowed);
    // Wall clock to tomorrow (the boot clock does not move): tomorrow's quota can be used...
    f.clock.set(t0() + Duration::days(1));
    assert!(a.consume("api_calls", 3).allowed);
    // ...and back to today it is still counted: today stays used up, in this process and after a restart.
    f.clock.set(t0() + Duration::minutes(1));
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);
    drop(a);
    let a = f.agent("borrow.db");
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);
    // When tomorrow really comes, the uses made on it are counted in it.
    f.clock.advance(Duration::days(1));
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded);
}

#[test]
fn a_clock_held_back_across_midnight_counts_the_first_use_in_the_new_day() {
    let f = Fixture::new();
    let a = daily_agent(&f, "held.db");
    f.clock.advance(Duration::hours(11) + Duration::minutes(59)); // 23:59 UTC
    a.touch_clock().unwrap(); // trusted time recorded at 23:59
                              // The wall clock is set back 30 s, within the tolerance, and held there while two minutes pass: on the boot
                              // clock, trusted time is past midnight.
    f.clock.set(t0() + Duration::hours(11) + Duration::minutes(58) + Duration::seconds(30));
    f.clock.pass_holding_wall(Duration::minutes(2));
    let d = a.consume("api_calls", 3);
    assert!(d.allowed);
    assert_eq!(
        a.quota_period_end("api_calls"),
        Some("2026-06-03T00:00:00Z".parse().unwrap()),
        "decided in the new day"
    );
    // The use is in the new day's count, so the quota cannot be taken twice.
    assert_eq!(a.consume("api_calls", 3).reason, Reason::QuotaExceeded);
    drop(a);
    let a = f.agent("held.db");
    assert_eq!(a.consume("api_calls", 1).reason, Reason::QuotaExceeded, "and after a restart");
}
