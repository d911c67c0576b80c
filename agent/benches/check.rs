//! In-process feature check on an open agent (target: ≤ 100 ns median). Results: docs/PERFORMANCE.md.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use chrono::{Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use tessera_agent::{Agent, AgentConfig, Clock as _, IdentityMode, SystemClock};
use tessera_core::fingerprint::MatchPolicy;
use tessera_core::model::{Feature, LicenseModel, LicenseType, LimitType};
use tessera_core::offline::{OfflineGrant, SignedRequest};
use tessera_core::{LicenseKey, PublicKeyset, SigningKey};
use uuid::Uuid;

fn activated_agent(dir: &std::path::Path) -> (Agent, tessera_core::License) {
    let server = SigningKey::generate_ed25519();
    let product = Uuid::from_u128(1);
    let cfg = AgentConfig::new(dir.join("bench.db"), PublicKeyset::new([server.verifying_key()]), product)
        .with_clock(Arc::new(SystemClock))
        .with_identity(IdentityMode::PinnedValue("bench-identity-0001".into()));
    let agent = Agent::open(cfg).expect("open");
    let key = LicenseKey::generate();
    let req = SignedRequest::decode(&agent.request_code(&key.expose()).expect("request")).expect("decode");
    let now = Utc::now();
    let mut features: Vec<Feature> = (0..8).map(|i| Feature::new(format!("feature_{i}"))).collect();
    features.push(Feature::new("export_pdf"));
    features.push(Feature::new("api_calls").with_limit(1_000_000, LimitType::Count));
    let grant = OfflineGrant {
        license_id: Uuid::from_u128(2),
        issued_at: now,
        license_type: LicenseType::Subscription,
        license_model: LicenseModel::PerDevice,
        starts_at: now - Duration::days(1),
        expires_at: Some(now + Duration::days(365)),
        maintenance_expires_at: None,
        lease_expires_at: Some(now + Duration::days(30)),
        grace_days: 0,
        // The bench machine's identity is pinned, which a policy must allow.
        fingerprint_policy: MatchPolicy { allow_pinned: true, ..MatchPolicy::default() },
        features,
        billing_cycle: None,
    };
    let rsp = grant.sign(&server, &tessera_core::offline::license_binding(&key.hash(), &product), &req).expect("sign");
    agent.apply_code(&rsp).expect("apply");
    assert!(agent.check("export_pdf").allowed);
    (agent, tessera_agent::license_from_grant(&grant, product))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, license) = activated_agent(dir.path());
    // Same-run baselines: a hash-map flag read with the clock read `Agent::check` makes (`SystemClock`, coarse), and
    // the same with the standard library's precise clock (`Utc::now()`), which is what the check used to read.
    let mut map = std::collections::HashMap::new();
    map.insert("export_pdf".to_string(), true);
    c.bench_function("baseline_clock_read", |b| b.iter(|| black_box(SystemClock.now())));
    c.bench_function("baseline_hashmap_lookup_and_clock", |b| {
        b.iter(|| (black_box(SystemClock.now()), black_box(map.get(black_box("export_pdf")).copied())))
    });
    c.bench_function("baseline_precise_clock_read", |b| b.iter(|| black_box(Utc::now())));
    c.bench_function("baseline_hashmap_lookup_and_precise_clock", |b| {
        b.iter(|| (black_box(Utc::now()), black_box(map.get(black_box("export_pdf")).copied())))
    });
    // The decision function alone on the same license (what check adds on top is the snapshot read).
    c.bench_function("decide_only", |b| {
        let lease = Utc::now() + Duration::days(1);
        b.iter(|| {
            let mut inputs = tessera_core::Inputs::new(SystemClock.now(), Some(&license));
            inputs.lease_expires_at = Some(lease);
            black_box(tessera_core::decide(&inputs, &tessera_core::Query::feature(black_box("export_pdf"))))
        })
    });
    c.bench_function("agent_check_allowed", |b| b.iter(|| black_box(agent.check(black_box("export_pdf")))));
    c.bench_function("agent_check_quota_feature", |b| b.iter(|| black_box(agent.check(black_box("api_calls")))));
    c.bench_function("agent_check_not_entitled", |b| b.iter(|| black_box(agent.check(black_box("missing")))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
