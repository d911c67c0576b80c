//! Makes a demo setup for trying the CLI (and timing `tessera-agent check`) without a server:
//! a throwaway vendor key, its public keyset, and a state file activated offline with a pinned identity.
//!
//! `cargo run -p tessera-agent --example demo_state -- /tmp/tessera-demo` then follow the printed exports.
#![allow(clippy::expect_used)]

use chrono::{Duration, Utc};
use tessera_agent::{Agent, AgentConfig, IdentityMode};
use tessera_core::fingerprint::MatchPolicy;
use tessera_core::model::{Feature, LicenseModel, LicenseType, LimitType};
use tessera_core::offline::{OfflineGrant, SignedRequest};
use tessera_core::{LicenseKey, PublicKeyset, SigningKey};
use uuid::Uuid;

const IDENTITY: &str = "demo-identity-0001";

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "tessera-demo".into()));
    std::fs::create_dir_all(&dir).expect("create the demo directory");
    let server = SigningKey::generate_ed25519();
    let keyset = PublicKeyset::new([server.verifying_key()]);
    let keyset_path = dir.join("keyset.json");
    std::fs::write(&keyset_path, keyset.to_json()).expect("write keyset");
    let product = Uuid::new_v4();
    let state = dir.join("state.db");
    let agent = Agent::open(
        AgentConfig::new(&state, keyset, product).with_identity(IdentityMode::PinnedValue(IDENTITY.into())),
    )
    .expect("open the agent");
    let key = LicenseKey::generate();
    let req = SignedRequest::decode(&agent.request_code(&key.expose()).expect("request")).expect("decode");
    let now = Utc::now();
    let grant = OfflineGrant {
        license_id: Uuid::new_v4(),
        issued_at: now,
        license_type: LicenseType::Subscription,
        license_model: LicenseModel::PerDevice,
        starts_at: now - Duration::days(1),
        expires_at: Some(now + Duration::days(365)),
        maintenance_expires_at: None,
        lease_expires_at: Some(now + Duration::days(30)),
        grace_days: 7,
        fingerprint_policy: MatchPolicy::default(),
        features: vec![Feature::new("export_pdf"), Feature::new("api_calls").with_limit(100, LimitType::Count)],
        billing_cycle: None,
    };
    let rsp = grant
        .sign(&server, &tessera_core::offline::license_binding(&key.hash(), &product), &req)
        .expect("sign the response");
    agent.apply_code(&rsp).expect("apply the response");
    println!("export TESSERA_AGENT_STATE={}", state.display());
    println!("export TESSERA_AGENT_KEYSET={}", keyset_path.display());
    println!("export TESSERA_PRODUCT_ID={product}");
    println!("export TESSERA_AGENT_IDENTITY={IDENTITY}");
}
