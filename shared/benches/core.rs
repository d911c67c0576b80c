//! Core benchmarks: the decision for a cached license (with a same-run baseline), license file verification,
//! and encode/decode of each code. `cargo bench -p tessera-core --bench core`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hint::black_box;

use chrono::Utc;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion};
use tessera_core::codes::{self, CodeKind};
use tessera_core::decision::{decide, ClockGuard, Inputs, Query};
use tessera_core::fingerprint::{match_fingerprint, MatchPolicy};
use tessera_core::offline::{SignedEmergency, SignedReceipt, SignedRequest, SignedResponse};
use tessera_core::{token, PublicKeyset};

fn keyset() -> PublicKeyset {
    PublicKeyset::from_json(&std::fs::read_to_string(keys_dir().join("keyset.json")).unwrap()).unwrap()
}

fn decision(c: &mut Criterion) {
    let mut license = sample_license();
    license.expires_at = Some(Utc::now() + chrono::Duration::days(300));
    license.maintenance_expires_at = license.expires_at;
    let fp = sample_fingerprint();
    let outcome = match_fingerprint(&MatchPolicy::default(), &fp, &fp);
    let lease = Utc::now() + chrono::Duration::days(7);
    let clock = ClockGuard { high_water: Utc::now(), tolerance: chrono::Duration::minutes(5) };
    let mut g = c.benchmark_group("decision");
    // Baseline: what any feature flag costs — a hash map lookup plus a clock read.
    let map: HashMap<String, bool> = license.features.iter().map(|f| (f.id.clone(), f.enabled)).collect();
    g.bench_function("baseline_hashmap_lookup_and_clock", |b| {
        b.iter(|| {
            let now = Utc::now();
            (black_box(map.get(black_box("cloud_sync_sync")).copied()), now)
        })
    });
    g.bench_function("cached_license_check", |b| {
        b.iter(|| {
            let mut inputs = Inputs::new(Utc::now(), Some(&license));
            inputs.fingerprint = Some(outcome);
            inputs.lease_expires_at = Some(lease);
            inputs.clock = Some(clock);
            decide(black_box(&inputs), black_box(&Query::feature("cloud_sync_sync")))
        })
    });
    g.bench_function("cached_license_quota_check", |b| {
        b.iter(|| {
            let mut inputs = Inputs::new(Utc::now(), Some(&license));
            inputs.fingerprint = Some(outcome);
            inputs.lease_expires_at = Some(lease);
            inputs.clock = Some(clock);
            decide(black_box(&inputs), black_box(&Query { feature: Some("export_pdf_docs"), amount: 1, used: 17 }))
        })
    });
    g.finish();
}

fn verification(c: &mut Criterion) {
    let ks = keyset();
    let mut g = c.benchmark_group("verify");
    for alg in ["ed25519", "rsa2048", "rsa3072"] {
        let file = std::fs::read_to_string(keys_dir().join(format!("vectors/license-file.{alg}.txt"))).unwrap();
        g.bench_function(format!("license_file_{alg}"), |b| {
            b.iter(|| token::verify_license_file(black_box(&file), &ks).unwrap())
        });
    }
    let tok = std::fs::read_to_string(keys_dir().join("vectors/activation-token.ed25519.txt")).unwrap();
    g.bench_function("activation_token_ed25519", |b| b.iter(|| token::verify_activation_token(black_box(&tok), &ks)));
    g.finish();
}

fn code_formats(c: &mut Criterion) {
    let ed = test_key("ed25519.pem");
    let device = device_key();
    let key_hash = sample_key().hash();
    let mut g = c.benchmark_group("codes");
    let (request_code, request) = sample_request(&device).sign(&key_hash, &device).unwrap();
    let response_code = sample_grant().sign(&ed, &key_hash, &request).unwrap();
    let receipt_code = sample_receipt(&device).sign(&key_hash, &device).unwrap();
    let emergency_code = sample_emergency(false).sign(&ed, &key_hash, None).unwrap();
    for (name, code, kind) in [
        ("request", &request_code, CodeKind::OfflineRequest),
        ("response", &response_code, CodeKind::OfflineResponse),
        ("receipt", &receipt_code, CodeKind::DeactivationReceipt),
        ("emergency", &emergency_code, CodeKind::Emergency),
    ] {
        let bytes = codes::decode(kind, code).unwrap();
        g.bench_function(format!("{name}_text_encode"), |b| b.iter(|| codes::encode(kind, black_box(&bytes))));
        g.bench_function(format!("{name}_text_decode"), |b| b.iter(|| codes::decode(kind, black_box(code))));
    }
    g.bench_function("request_decode_and_verify", |b| {
        b.iter(|| SignedRequest::decode(black_box(&request_code)).unwrap().verify(&key_hash))
    });
    g.bench_function("response_sign", |b| b.iter(|| sample_grant().sign(&ed, &key_hash, &request).unwrap()));
    let ks = keyset();
    g.bench_function("response_decode_and_verify", |b| {
        b.iter(|| SignedResponse::decode(black_box(&response_code)).unwrap().verify(&ks, &key_hash, &request))
    });
    let dpub = device_public(&device);
    g.bench_function("receipt_decode_and_verify", |b| {
        b.iter(|| SignedReceipt::decode(black_box(&receipt_code)).unwrap().verify(&key_hash, &dpub))
    });
    g.bench_function("emergency_decode_and_verify", |b| {
        b.iter(|| SignedEmergency::decode(black_box(&emergency_code)).unwrap().verify(&ks, &key_hash, &dpub))
    });
    g.finish();
}

criterion_group!(benches, decision, verification, code_formats);
criterion_main!(benches);
