//! The gRPC API (`tessera.v1.Licensing`) over a real loopback connection: a server started with `grpc_listen`,
//! a tonic client, the same tokens and tenants as the REST API.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Value};
use tessera_core::envelope::Envelope;
use tessera_core::Domain;
use tessera_server::grpc::proto::licensing_client::LicensingClient;
use tessera_server::grpc::proto::{
    record_usage_request::Target, CheckFeatureRequest, FingerprintComponent, RecordUsageRequest, ValidateRequest,
};
use tessera_server::{AppState, RunningServer};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

use crate::common::*;

/// A started server (HTTP and gRPC on loopback port 0) and a harness over its services for the REST set-up.
struct Grpc {
    h: Harness,
    server: RunningServer,
}

async fn start(tweak: impl FnOnce(&mut tessera_server::Config)) -> Grpc {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.grpc_listen = Some("127.0.0.1:0".into());
    tweak(&mut config);
    let now = Arc::new(Mutex::new(Utc::now()));
    let n2 = now.clone();
    let clock: tessera_server::time::Clock = Arc::new(move || *n2.lock().unwrap());
    let server = tessera_server::start_with_clock(config, clock).await.unwrap();
    let admin = server.admin_token.clone().unwrap();
    // The set-up goes through a router of its own, without the limits a test may set for the gRPC calls.
    let mut setup = server.services.clone();
    setup.config = Arc::new(test_config(dir.path()));
    let router = tessera_server::app(AppState::new(setup));
    let h = Harness { _dir: dir, services: server.services.clone(), router, admin, now };
    Grpc { h, server }
}

impl Grpc {
    async fn client(&self) -> LicensingClient<Channel> {
        let addr = self.server.grpc_addr.expect("grpc_addr is set when grpc_listen is");
        LicensingClient::connect(format!("http://{addr}")).await.unwrap()
    }
}

/// A request with `authorization: Bearer <token>`.
fn authed<T>(token: &str, m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// The refusal's stable code, as metadata and as the ErrorInfo reason (they must agree).
fn code_of(st: &Status) -> String {
    let meta = st.metadata().get("x-tessera-code").and_then(|v| v.to_str().ok()).map(str::to_string);
    let info = st.get_details_error_info().map(|i| i.reason);
    assert_eq!(meta, info, "x-tessera-code and ErrorInfo agree: {st:?}");
    meta.unwrap_or_else(|| panic!("no x-tessera-code: {st:?}"))
}

fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>) -> (Code, String) {
    let st = r.expect_err("the call is refused");
    (st.code(), code_of(&st))
}

fn validate(key: &str, feature: Option<&str>) -> ValidateRequest {
    ValidateRequest { license_key: key.into(), feature: feature.map(str::to_string), ..Default::default() }
}

fn check(key: &str, feature: &str, amount: u64) -> CheckFeatureRequest {
    CheckFeatureRequest { license_key: key.into(), feature: feature.into(), amount }
}

fn usage(key: &str, feature: &str, amount: u64, id: uuid::Uuid) -> RecordUsageRequest {
    RecordUsageRequest {
        target: Some(Target::LicenseKey(key.into())),
        feature: feature.into(),
        amount,
        id: id.to_string(),
        recorded_at: None,
    }
}

async fn token(h: &Harness, f: &Fixture, role: &str) -> String {
    let (s, v) = h.post("/v1/tokens", Some(&f.token), json!({"name": role, "role": role})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn validate_answers_the_rest_decision_with_a_signed_answer_and_the_entitlements() {
    let g = start(|_| {}).await;
    let f = g.h.fixture("gv", 2, "SUBSCRIPTION").await;
    let mut c = g.client().await;
    let n = nonce();
    let v = c
        .validate(authed(&f.token, ValidateRequest { nonce: Some(n.clone()), ..validate(&f.key, Some("api_calls")) }))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");
    assert_eq!((v.reason.as_str(), v.status.as_str()), ("VALID", "ACTIVE"));
    assert_eq!(v.license_id, f.license);
    assert!(v.expires_at.is_some(), "a 30-day subscription expires");
    let facts = v.facts.clone().unwrap();
    assert_eq!((facts.limit, facts.used, facts.remaining), (Some(5), Some(0), Some(5)));
    assert_eq!(facts.limit_type.as_deref(), Some("COUNT"));
    let ids: Vec<&str> = v.features.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(ids, ["export_pdf", "api_calls"]);
    assert_eq!((v.features[0].limit, v.features[0].used), (None, None), "unmetered");
    assert_eq!((v.features[1].limit, v.features[1].used), (Some(5), Some(0)));

    // The signed answer verifies with the vendor's keyset and is the REST validate's, for this nonce.
    let env = Envelope::from_compact(&v.signed).unwrap();
    let payload: Value = serde_json::from_slice(env.open(&g.h.keys(), Domain::ServerResponse).unwrap()).unwrap();
    assert_eq!(v.nonce, n);
    assert_eq!(
        (payload["nonce"].as_str(), payload["endpoint"].as_str()),
        (Some(n.as_str()), Some("/v1/client/validate"))
    );
    let (s, rest) =
        g.h.post("/v1/client/validate", None, json!({"license_key": f.key, "feature": "api_calls", "nonce": n})).await;
    assert_eq!(s, StatusCode::OK, "{rest}");
    let rest = open_signed(&g.h.keys(), &rest, &n);
    assert_eq!(payload["result"], rest, "gRPC and REST decide alike");

    // Without a nonce the server picks one, and the answer echoes it.
    let v = c.validate(authed(&f.token, validate(&f.key, None))).await.unwrap().into_inner();
    let env = Envelope::from_compact(&v.signed).unwrap();
    let payload: Value = serde_json::from_slice(env.open(&g.h.keys(), Domain::ServerResponse).unwrap()).unwrap();
    assert!(!v.nonce.is_empty());
    assert_eq!(payload["nonce"].as_str(), Some(v.nonce.as_str()));

    // A feature the license lacks: not valid, NOT_ENTITLED (a decision, not an error).
    let v = c.validate(authed(&f.token, validate(&f.key, Some("teleport")))).await.unwrap().into_inner();
    assert_eq!((v.valid, v.reason.as_str()), (false, "NOT_ENTITLED"));

    // A suspended license: the decision says so.
    let (s, b) = g.h.post(&format!("/v1/licenses/{}/suspend", f.license), Some(&f.token), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v = c.validate(authed(&f.token, validate(&f.key, None))).await.unwrap().into_inner();
    assert_eq!((v.valid, v.reason.as_str(), v.status.as_str()), (false, "SUSPENDED", "SUSPENDED"));
    g.server.shutdown().await;
}

#[tokio::test]
async fn validate_with_a_fingerprint_or_an_activation_asks_about_that_machine() {
    let g = start(|_| {}).await;
    let f = g.h.fixture("gfp", 2, "SUBSCRIPTION").await;
    let mut c = g.client().await;
    let (s, a) = activate(&g.h, &f.key, &device(), fingerprint("box")).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let act = a["activation_id"].as_str().unwrap().to_string();
    let fp = |seed: &str| -> Vec<FingerprintComponent> {
        fingerprint(seed)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| FingerprintComponent {
                kind: c["kind"].as_str().unwrap().into(),
                hash: c["hash"].as_str().unwrap().into(),
            })
            .collect()
    };
    let ask = |fingerprint: Vec<FingerprintComponent>, activation_id: Option<String>| ValidateRequest {
        fingerprint,
        activation_id,
        ..validate(&f.key, None)
    };
    let v = c.validate(authed(&f.token, ask(fp("box"), None))).await.unwrap().into_inner();
    assert_eq!(v.reason, "VALID");
    let v = c.validate(authed(&f.token, ask(fp("other"), None))).await.unwrap().into_inner();
    assert_eq!((v.valid, v.reason.as_str()), (false, "FINGERPRINT_MISMATCH"));
    let v = c.validate(authed(&f.token, ask(vec![], Some(act.clone())))).await.unwrap().into_inner();
    assert_eq!(v.reason, "VALID");
    assert!(v.facts.unwrap().lease_expires_at.is_some(), "the activation's lease is a fact");
    let unknown = uuid::Uuid::new_v4().to_string();
    let r = c.validate(authed(&f.token, ask(vec![], Some(unknown)))).await;
    assert_eq!(refused(r), (Code::NotFound, "ACTIVATION_NOT_FOUND".into()));
    let bad = vec![FingerprintComponent { kind: "retina".into(), hash: "00".into() }];
    let r = c.validate(authed(&f.token, ask(bad, None))).await;
    assert_eq!(refused(r), (Code::InvalidArgument, "BAD_REQUEST".into()));

    // Usage recorded by activation counts for its license.
    let r = c
        .record_usage(authed(
            &f.token,
            RecordUsageRequest {
                target: Some(Target::ActivationId(act.clone())),
                ..usage(&f.key, "api_calls", 2, uuid::Uuid::new_v4())
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.recorded, r.total, r.license_id.as_str()), (true, 2, f.license.as_str()));
    g.server.shutdown().await;
}

#[tokio::test]
async fn refusals_carry_the_status_of_their_code_and_the_code() {
    let g = start(|_| {}).await;
    let f = g.h.fixture("gr", 2, "SUBSCRIPTION").await;
    let mut c = g.client().await;

    // Unknown key, malformed key.
    let unknown = tessera_core::LicenseKey::generate().expose();
    let r = c.validate(authed(&f.token, validate(&unknown, None))).await;
    assert_eq!(refused(r), (Code::NotFound, "LICENSE_NOT_FOUND".into()));
    let r = c.check_feature(authed(&f.token, check(&unknown, "export_pdf", 0))).await;
    assert_eq!(refused(r), (Code::NotFound, "LICENSE_NOT_FOUND".into()));
    let r = c.validate(authed(&f.token, validate("TSK-1", None))).await;
    assert_eq!(refused(r), (Code::InvalidArgument, "INVALID_LICENSE_KEY".into()));

    // No token, a malformed one, an unknown one, a revoked one.
    let r = c.validate(Request::new(validate(&f.key, None))).await;
    assert_eq!(refused(r), (Code::Unauthenticated, "UNAUTHORIZED".into()));
    let r = c.validate(authed("not-a-token", validate(&f.key, None))).await;
    assert_eq!(refused(r), (Code::Unauthenticated, "UNAUTHORIZED".into()));
    let r = c.validate(authed("tsa_0000000000000000000000000000", validate(&f.key, None))).await;
    assert_eq!(refused(r), (Code::Unauthenticated, "UNAUTHORIZED".into()));
    let mut basic = Request::new(validate(&f.key, None));
    basic.metadata_mut().insert("authorization", format!("Basic {}", f.token).parse().unwrap());
    assert_eq!(refused(c.validate(basic).await), (Code::Unauthenticated, "UNAUTHORIZED".into()));

    // Another tenant's token sees the license as it sees a key nobody has.
    let other = g.h.fixture("gr-other", 1, "SUBSCRIPTION").await;
    let r = c.validate(authed(&other.token, validate(&f.key, None))).await;
    assert_eq!(refused(r), (Code::NotFound, "LICENSE_NOT_FOUND".into()));
    let r = c.check_feature(authed(&other.token, check(&f.key, "export_pdf", 0))).await;
    assert_eq!(refused(r), (Code::NotFound, "LICENSE_NOT_FOUND".into()));
    let r = c.record_usage(authed(&other.token, usage(&f.key, "api_calls", 1, uuid::Uuid::new_v4()))).await;
    assert_eq!(refused(r), (Code::NotFound, "LICENSE_NOT_FOUND".into()));
    // ... while its own license and the vendor-admin's view are fine.
    assert!(c.validate(authed(&other.token, validate(&other.key, None))).await.unwrap().into_inner().valid);
    assert!(c.validate(authed(&g.h.admin, validate(&f.key, None))).await.unwrap().into_inner().valid);

    // Input errors.
    let r = c.record_usage(authed(&f.token, usage(&f.key, "api_calls", 1, uuid::Uuid::nil()).clone())).await;
    assert!(r.is_ok(), "the nil UUID is a UUID: {r:?}");
    let mut bad_id = usage(&f.key, "api_calls", 1, uuid::Uuid::new_v4());
    bad_id.id = "seven".into();
    assert_eq!(refused(c.record_usage(authed(&f.token, bad_id)).await), (Code::InvalidArgument, "BAD_REQUEST".into()));
    let mut no_target = usage(&f.key, "api_calls", 1, uuid::Uuid::new_v4());
    no_target.target = None;
    assert_eq!(
        refused(c.record_usage(authed(&f.token, no_target)).await),
        (Code::InvalidArgument, "BAD_REQUEST".into())
    );
    let r = c.record_usage(authed(&f.token, usage(&f.key, "teleport", 1, uuid::Uuid::new_v4()))).await;
    assert_eq!(refused(r), (Code::InvalidArgument, "VALIDATION_FAILED".into()), "a feature the license lacks");
    g.server.shutdown().await;
}

#[tokio::test]
async fn check_feature_decides_on_entitlement_and_recorded_usage() {
    let g = start(|_| {}).await;
    let f = g.h.fixture("gc", 2, "SUBSCRIPTION").await;
    let mut c = g.client().await;
    let d = c.check_feature(authed(&f.token, check(&f.key, "export_pdf", 0))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (true, "VALID"));
    let d = c.check_feature(authed(&f.token, check(&f.key, "teleport", 0))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (false, "NOT_ENTITLED"));
    // api_calls has a quota of 5.
    let d = c.check_feature(authed(&f.token, check(&f.key, "api_calls", 5))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (true, "VALID"));
    let d = c.check_feature(authed(&f.token, check(&f.key, "api_calls", 6))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (false, "QUOTA_EXCEEDED"));
    let r = c.record_usage(authed(&f.token, usage(&f.key, "api_calls", 4, uuid::Uuid::new_v4()))).await.unwrap();
    assert_eq!(r.into_inner().total, 4);
    let d = c.check_feature(authed(&f.token, check(&f.key, "api_calls", 1))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (true, "VALID"));
    let facts = d.facts.unwrap();
    assert_eq!((facts.used, facts.remaining), (Some(4), Some(1)));
    let d = c.check_feature(authed(&f.token, check(&f.key, "api_calls", 2))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (false, "QUOTA_EXCEEDED"));
    c.record_usage(authed(&f.token, usage(&f.key, "api_calls", 1, uuid::Uuid::new_v4()))).await.unwrap();
    let d = c.check_feature(authed(&f.token, check(&f.key, "api_calls", 0))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (true, "VALID"), "a plain check of a used-up quota");
    let d = c.check_feature(authed(&f.token, check(&f.key, "api_calls", 1))).await.unwrap().into_inner();
    assert_eq!((d.allowed, d.reason.as_str()), (false, "QUOTA_EXCEEDED"));
    assert_eq!(d.facts.unwrap().remaining, Some(0));
    // A read-only token may check.
    let ro = token(&g.h, &f, "read-only").await;
    let d = c.check_feature(authed(&ro, check(&f.key, "export_pdf", 0))).await.unwrap().into_inner();
    assert!(d.allowed);
    let r = c.check_feature(authed(&ro, check(&f.key, "api_calls", (1 << 40) + 1))).await;
    assert_eq!(refused(r), (Code::InvalidArgument, "VALIDATION_FAILED".into()));
    g.server.shutdown().await;
}

#[tokio::test]
async fn record_usage_is_idempotent_by_id_bounded_audited_and_needs_a_writing_role() {
    let g = start(|_| {}).await;
    let f = g.h.fixture("gu", 2, "SUBSCRIPTION").await;
    let mut c = g.client().await;
    let id = uuid::Uuid::new_v4();
    let r = c.record_usage(authed(&f.token, usage(&f.key, "api_calls", 2, id))).await.unwrap().into_inner();
    assert_eq!((r.recorded, r.total), (true, 2));
    let r = c.record_usage(authed(&f.token, usage(&f.key, "api_calls", 2, id))).await.unwrap().into_inner();
    assert_eq!((r.recorded, r.total), (false, 2), "the same id again counts once");
    let r = c.record_usage(authed(&f.token, usage(&f.key, "api_calls", 3, id))).await;
    assert_eq!(refused(r), (Code::AlreadyExists, "CONFLICT".into()), "the same id for another amount");
    let v = c.validate(authed(&f.token, validate(&f.key, Some("api_calls")))).await.unwrap().into_inner();
    assert_eq!(v.features[1].used, Some(2));

    // Amounts: 1 ..= 2^40.
    for amount in [0, (1 << 40) + 1, u64::MAX] {
        let r = c.record_usage(authed(&f.token, usage(&f.key, "api_calls", amount, uuid::Uuid::new_v4()))).await;
        assert_eq!(refused(r), (Code::InvalidArgument, "VALIDATION_FAILED".into()), "amount {amount}");
    }
    let r = c.record_usage(authed(&f.token, usage(&f.key, "api_calls", 1 << 40, uuid::Uuid::new_v4()))).await;
    assert_eq!(r.unwrap().into_inner().total, (1 << 40) + 2, "the largest amount is accepted");

    // Read-only and support tokens may validate, not record.
    for role in ["read-only", "support"] {
        let t = token(&g.h, &f, role).await;
        assert!(c.validate(authed(&t, validate(&f.key, None))).await.unwrap().into_inner().valid);
        let r = c.record_usage(authed(&t, usage(&f.key, "api_calls", 1, uuid::Uuid::new_v4()))).await;
        assert_eq!(refused(r), (Code::PermissionDenied, "FORBIDDEN".into()), "{role}");
    }

    // Each call is in the audit log: the recording, the duplicate and the conflict.
    let (s, audit) = g.h.get("/v1/audit?limit=1000", Some(&f.token)).await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let rows: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "usage.record" && r["details"]["event_id"] == id.to_string())
        .collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["OK", "DUPLICATE", "CONFLICT"], "{rows:?}");
    assert_eq!(rows[0]["target"].as_str(), Some(f.license.as_str()));
    assert_eq!(rows[0]["details"]["feature"], "api_calls");
    assert_eq!(rows[0]["details"]["amount"], 2);
    assert!(rows[0]["actor"].as_str().unwrap().starts_with("token:"), "{:?}", rows[0]);
    let (s, v) = g.h.get("/v1/audit/verify", Some(&g.h.admin)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    g.server.shutdown().await;
}

#[tokio::test]
async fn messages_larger_than_the_body_limit_are_refused() {
    let g = start(|c| c.body_limit_bytes = 4096).await;
    let f = g.h.fixture("gbig", 1, "SUBSCRIPTION").await;
    let mut c = g.client().await;
    let huge = "x".repeat(8192);
    let r = c.validate(authed(&f.token, ValidateRequest { domain: Some(huge), ..validate(&f.key, None) })).await;
    let st = r.expect_err("too large");
    assert_eq!(st.code(), Code::OutOfRange, "{st:?}");
    assert!(st.message().contains("too large"), "{st:?}");
    // Within the limit, the same call works.
    assert!(c.validate(authed(&f.token, validate(&f.key, None))).await.unwrap().into_inner().valid);
    g.server.shutdown().await;
}

#[tokio::test]
async fn calls_count_against_the_admin_per_ip_limit_with_retry_info() {
    let g = start(|c| {
        c.rate_limits.admin_per_ip_per_sec = 0.01;
        c.rate_limits.admin_per_ip_burst = 2.0;
        // Set for an HTTP proxy in front of the REST port; it must not reach the gRPC port.
        c.trust_forwarded_for = true;
    })
    .await;
    let f = g.h.fixture("grl", 1, "SUBSCRIPTION").await;
    let mut c = g.client().await;
    for _ in 0..2 {
        c.check_feature(authed(&f.token, check(&f.key, "export_pdf", 0))).await.unwrap();
    }
    let st = c.check_feature(authed(&f.token, check(&f.key, "export_pdf", 0))).await.expect_err("limited");
    assert_eq!((st.code(), code_of(&st).as_str()), (Code::ResourceExhausted, "RATE_LIMITED"));
    let secs: u64 = st.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!(secs >= 1, "{secs}");
    let delay = st.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert_eq!(delay.as_secs(), secs);
    // The limit is counted before the token: an unauthenticated caller is limited too.
    let st = c.validate(Request::new(validate(&f.key, None))).await.expect_err("limited");
    assert_eq!(st.code(), Code::ResourceExhausted);
    // A forwarded address is the caller's own claim on this port: it picks no fresh bucket.
    for claimed in ["198.51.100.7", "198.51.100.8", "not-an-address"] {
        let mut r = authed(&f.token, check(&f.key, "export_pdf", 0));
        r.metadata_mut().insert("x-forwarded-for", claimed.parse().unwrap());
        let st = c.check_feature(r).await.expect_err("still limited");
        assert_eq!(st.code(), Code::ResourceExhausted, "x-forwarded-for: {claimed}");
    }
    g.server.shutdown().await;
}

#[tokio::test]
async fn grpc_is_off_by_default_and_stops_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let off = tessera_server::start(test_config(dir.path())).await.unwrap();
    assert!(off.grpc_addr.is_none());
    off.shutdown().await;

    let g = start(|_| {}).await;
    let addr = g.server.grpc_addr.unwrap();
    assert_ne!(addr.port(), 0);
    let f = g.h.fixture("gs", 1, "SUBSCRIPTION").await;
    let mut c = g.client().await;
    assert!(c.validate(authed(&f.token, validate(&f.key, None))).await.unwrap().into_inner().valid);
    tokio::time::timeout(std::time::Duration::from_secs(10), g.server.shutdown()).await.expect("shuts down");
    let after = LicensingClient::connect(format!("http://{addr}")).await;
    assert!(after.is_err(), "nothing listens after shutdown");
}
