//! A feature check three ways on one activated state file, in one run: the agent library in-process (Rust), the C
//! ABI (`tessera_check`), and Python (ffi/python/bench/check_bench.py, run by this binary on the same state once
//! criterion is done, when `TESSERA_BENCH_PYTHON=1`). Same-run baseline: a hash-map flag read with the clock read a
//! check makes. Results: docs/PERFORMANCE.md ("Checks from C and Python").
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ffi::CString;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, Utc};
use criterion::Criterion;
use tessera::{tessera_check, tessera_close, tessera_open, TesseraAgent, TesseraDecision, TesseraOptions};
use tessera_agent::{Agent, AgentConfig, Clock as _, IdentityMode, SystemClock};
use tessera_core::fingerprint::MatchPolicy;
use tessera_core::model::{Feature, LicenseModel, LicenseType, LimitType};
use tessera_core::offline::{OfflineGrant, SignedRequest};
use tessera_core::{LicenseKey, PublicKeyset, SigningKey};
use uuid::Uuid;

const IDENTITY: &str = "bench-identity-0001";

/// An activated state (an offline grant from a fresh vendor key: ten features, one metered); returns the keyset.
fn activate(state: &Path, product: Uuid) -> PublicKeyset {
    let vendor = SigningKey::generate_ed25519();
    let keyset = PublicKeyset::new([vendor.verifying_key()]);
    let cfg = AgentConfig::new(state, keyset.clone(), product)
        .with_clock(Arc::new(SystemClock))
        .with_identity(IdentityMode::PinnedValue(IDENTITY.into()));
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
        fingerprint_policy: MatchPolicy { allow_pinned: true, ..MatchPolicy::default() },
        features,
        billing_cycle: None,
    };
    let rsp = grant.sign(&vendor, &tessera_core::offline::license_binding(&key.hash(), &product), &req).expect("sign");
    agent.apply_code(&rsp).expect("apply");
    assert!(agent.check("export_pdf").allowed);
    keyset
}

/// A handle through the C ABI, as a C caller opens one.
fn open_c(state: &Path, keyset: &str, product: Uuid) -> *mut TesseraAgent {
    let state = CString::new(state.to_str().unwrap()).unwrap();
    let keyset = CString::new(keyset).unwrap();
    let product = CString::new(product.to_string()).unwrap();
    let identity = CString::new(IDENTITY).unwrap();
    let options = TesseraOptions {
        abi_version: tessera::TESSERA_ABI_VERSION,
        state_path: state.as_ptr(),
        keyset_json: keyset.as_ptr(),
        product_id: product.as_ptr(),
        server_url: std::ptr::null(),
        app_version: std::ptr::null(),
        user_id: std::ptr::null(),
        pinned_identity: identity.as_ptr(),
        clock_tolerance_secs: 0,
        background_heartbeats: 0,
        build_date: 0,
    };
    let mut handle = std::ptr::null_mut();
    // SAFETY: options and its strings live through the call; handle is writable.
    let status = unsafe { tessera_open(&options, &mut handle) };
    assert_eq!(status, tessera::TesseraStatus::Ok);
    handle
}

fn c_check(handle: *mut TesseraAgent, feature: &std::ffi::CStr) -> TesseraDecision {
    let mut d = std::mem::MaybeUninit::<TesseraDecision>::uninit();
    // SAFETY: handle is live until tessera_close below; feature is NUL-terminated; d is writable.
    let status = unsafe { tessera_check(handle, feature.as_ptr(), d.as_mut_ptr()) };
    assert_eq!(status, tessera::TesseraStatus::Ok);
    // SAFETY: tessera_check wrote the decision (it returned OK).
    unsafe { d.assume_init() }
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("bench.db");
    let product = Uuid::from_u128(1);
    let keyset = activate(&state, product).to_json();
    let rust = Agent::open(
        AgentConfig::new(&state, PublicKeyset::from_json(&keyset).unwrap(), product)
            .with_clock(Arc::new(SystemClock))
            .with_identity(IdentityMode::PinnedValue(IDENTITY.into())),
    )
    .expect("open");
    let c = open_c(&state, &keyset, product);
    assert!(c_check(c, c"export_pdf").allowed);

    let mut criterion = Criterion::default().configure_from_args();
    let mut map = std::collections::HashMap::new();
    map.insert("export_pdf".to_string(), true);
    criterion.bench_function("ffi_baseline_hashmap_lookup_and_clock", |b| {
        b.iter(|| (black_box(SystemClock.now()), black_box(map.get(black_box("export_pdf")).copied())))
    });
    criterion.bench_function("ffi_rust_check_allowed", |b| b.iter(|| black_box(rust.check(black_box("export_pdf")))));
    criterion.bench_function("ffi_c_abi_check_allowed", |b| b.iter(|| black_box(c_check(c, black_box(c"export_pdf")))));
    criterion
        .bench_function("ffi_rust_check_quota_feature", |b| b.iter(|| black_box(rust.check(black_box("api_calls")))));
    criterion
        .bench_function("ffi_c_abi_check_quota_feature", |b| b.iter(|| black_box(c_check(c, black_box(c"api_calls")))));
    criterion.final_summary();

    if std::env::var("TESSERA_BENCH_PYTHON").is_ok_and(|v| v == "1") {
        let library = std::env::current_exe().unwrap().parent().unwrap().join("libtessera.so");
        let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/bench/check_bench.py");
        let status = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(&harness)
            .arg(&state)
            .arg(&keyset)
            .arg(product.to_string())
            .arg(IDENTITY)
            .env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
            .env("TESSERA_LIBRARY", &library)
            .status()
            .expect("python3 runs the harness");
        assert!(status.success(), "the Python harness failed");
    }

    // SAFETY: no call on the handle is in flight any more.
    unsafe { tessera_close(c) };
}
