//! Samples shared by the core's integration tests, benches and the test-vector generator.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use tessera_core::fingerprint::{Component, ComponentKind, Fingerprint, MatchPolicy};
use tessera_core::model::{Feature, License, LicenseModel, LicenseStatus, LicenseType, LimitType};
use tessera_core::offline::{DeactivationReceipt, EmergencyCode, OfflineGrant, OfflineRequest};
use tessera_core::token::ActivationClaims;
use tessera_core::{LicenseKey, SigningKey};
use uuid::Uuid;

pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../keys/test")
}

pub fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).single().expect("valid date")
}

pub fn test_key(name: &str) -> SigningKey {
    SigningKey::load(&keys_dir().join(name)).expect("test key (run `cargo run -p tessera-core --example make_vectors`)")
}

/// Ten features with ids of ~15 characters: the budget case of the offline response.
pub fn ten_features() -> Vec<Feature> {
    let ids = [
        "export_pdf_docs",
        "advanced_report",
        "cloud_sync_sync",
        "api_access_full",
        "multi_user_edit",
        "custom_branding",
        "audit_trail_log",
        "bulk_import_csv",
        "priority_suport",
        "sso_integration",
    ];
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let mut f = Feature::new(*id);
            f.name = id.replace('_', " ");
            if i % 3 == 0 {
                f = f.with_limit(10_000, LimitType::Count);
            }
            if i == 4 {
                f.expires_at = Some(at(2027, 6, 30));
            }
            if i == 9 {
                f.enabled = false;
            }
            f
        })
        .collect()
}

pub fn sample_license() -> License {
    License {
        id: Uuid::from_u128(0x0193_5a1e_7c00_7000_8000_0000_0000_0001),
        tenant_id: Uuid::from_u128(0x0193_5a1e_7c00_7000_8000_0000_0000_00aa),
        product_id: Uuid::from_u128(0x0193_5a1e_7c00_7000_8000_0000_0000_00bb),
        customer_id: Some(Uuid::from_u128(0x0193_5a1e_7c00_7000_8000_0000_0000_00cc)),
        template_id: None,
        license_type: LicenseType::Subscription,
        license_model: LicenseModel::PerDevice,
        status: LicenseStatus::Active,
        max_activations: 5,
        issued_at: at(2026, 1, 1),
        starts_at: at(2026, 1, 1),
        expires_at: Some(at(2027, 1, 1)),
        maintenance_expires_at: Some(at(2027, 1, 1)),
        grace_days: 14,
        features: ten_features(),
        restrictions: vec![],
        fingerprint_policy: MatchPolicy::default(),
        heartbeat_interval_secs: 3600,
        lease_secs: 7 * 24 * 3600,
        metadata: Default::default(),
        billing_cycle: None,
    }
}

pub fn sample_key() -> LicenseKey {
    LicenseKey::from_random(&[0x5a; 15])
}

/// What responses and emergency codes are signed over: the sample key within the sample license's product.
pub fn sample_binding() -> [u8; 32] {
    tessera_core::offline::license_binding(&sample_key().hash(), &sample_license().product_id)
}

pub fn sample_fingerprint() -> Fingerprint {
    Fingerprint::new(
        [
            (ComponentKind::MachineId, "4c4c4544-0042-3510-8052-b3c04f4e3232"),
            (ComponentKind::Mac, "52:54:00:12:34:56"),
            (ComponentKind::Cpu, "AMD EPYC 7B13 x2"),
            (ComponentKind::Memory, "24GiB"),
            (ComponentKind::Os, "linux"),
            (ComponentKind::Hostname, "build-01"),
        ]
        .map(|(k, v)| Component::hash_raw(k, b"product-salt", v)),
    )
}

pub fn device_key() -> SigningKey {
    SigningKey::ed25519_from_bytes(&[0x42; 32])
}

pub fn device_public(k: &SigningKey) -> [u8; 32] {
    k.verifying_key().public_bytes().try_into().expect("ed25519 public key")
}

pub fn sample_claims(device: &SigningKey) -> ActivationClaims {
    let l = sample_license();
    ActivationClaims {
        activation_id: Uuid::from_u128(0x0193_5a1e_7c00_7000_8000_0000_0000_0d01),
        license_id: l.id,
        tenant_id: l.tenant_id,
        product_id: l.product_id,
        device_public_key: device.verifying_key().public_bytes(),
        fingerprint: sample_fingerprint(),
        fingerprint_policy: MatchPolicy::default(),
        issued_at: at(2026, 3, 1),
        lease_expires_at: at(2026, 3, 8),
        heartbeat_interval_secs: 3600,
        seats: None,
        user_id: None,
        country: None,
    }
}

pub fn sample_request(device: &SigningKey) -> OfflineRequest {
    let mut commitment = [0u8; 10];
    commitment.copy_from_slice(&sample_fingerprint().digest()[..10]);
    OfflineRequest {
        key_hint: sample_key().hint(),
        device_public_key: device_public(device),
        fingerprint_commitment: commitment,
        created_at: at(2026, 3, 1),
        nonce: 0xbeef,
    }
}

pub fn sample_grant() -> OfflineGrant {
    let l = sample_license();
    OfflineGrant {
        license_id: l.id,
        issued_at: at(2026, 3, 1),
        license_type: l.license_type,
        license_model: l.license_model,
        starts_at: l.starts_at,
        expires_at: l.expires_at,
        maintenance_expires_at: l.maintenance_expires_at,
        lease_expires_at: l.expires_at,
        grace_days: 14,
        fingerprint_policy: MatchPolicy::default(),
        features: ten_features()
            .into_iter()
            .map(|mut f| {
                f.name.clear();
                f
            })
            .collect(),
        billing_cycle: None,
    }
}

/// The receipt ending the grant that answered [`sample_request`].
pub fn sample_receipt(device: &SigningKey) -> DeactivationReceipt {
    let key_hash = sample_key().hash();
    let (_, request) = sample_request(device).sign(&key_hash, device).expect("sample request");
    let grant = tessera_core::offline::offline_grant_tag(&request.bytes);
    DeactivationReceipt::for_device(&key_hash, &device_public(device), grant, at(2026, 4, 1))
}

pub fn sample_emergency(bound: bool) -> EmergencyCode {
    EmergencyCode {
        bound,
        scope: tessera_core::model::EmergencyScope::LicensedFeatures,
        expires_at: at(2026, 3, 2),
        serial: 0x2_a5a5,
    }
}
