//! The e2e suite's vendor: a server that signs with the public test key (`keys/test/ed25519.pem`) and a
//! product with a fixed id, which the vendor build `tessera-agent-e2e-vendor` (tests/bin/vendor_agent.rs) has
//! compiled in.

use std::path::Path;

use serde_json::{json, Value};

use crate::{Fixture, TestServer};

/// The product id compiled into `tessera-agent-e2e-vendor`.
pub const PRODUCT_ID: &str = "0192b6a4-e2e0-7000-8000-00000000e2e0";
/// The clock tolerance limit compiled into it (seconds).
pub const MAX_CLOCK_TOLERANCE_SECS: i64 = 1800;
/// Key id of `keys/test/ed25519.pem`.
pub const SIGNING_KID: &str = "6c52680b2e47bc41";

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the e2e crate lives in the workspace")
}

/// Puts the test signing key into a server data directory before its first start.
pub fn install_test_signing_key(data_dir: &Path) {
    let keys = data_dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let pem = std::fs::read(repo_root().join("keys/test/ed25519.pem")).unwrap();
    for (name, bytes) in
        [(format!("{SIGNING_KID}.pem"), pem), ("active".to_string(), format!("{SIGNING_KID}\n").into_bytes())]
    {
        let path = keys.join(name);
        std::fs::write(&path, bytes).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// The vendor's server: signs with the test key.
pub async fn server() -> TestServer {
    TestServer::start_with(|c| install_test_signing_key(&c.data_dir)).await
}

/// The path of the vendor build (cargo builds it with the suite).
pub fn agent_binary() -> std::path::PathBuf {
    crate::bin("tessera-agent-e2e-vendor")
}

/// Runs the vendor build; returns (exit code, stdout, stderr).
pub fn run_agent(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    crate::run_binary(&agent_binary(), args, env)
}

/// A tenant, product (with `product_id`), template (`template` overrides the defaults) and license on `server`.
pub async fn fixture(server: &TestServer, name: &str, product_id: &str, template: Value) -> Fixture {
    let admin = server.admin.clone();
    let tenant = server.ok("/v1/tenants", &admin, json!({"name": name})).await["id"].as_str().unwrap().to_string();
    let token = server
        .ok("/v1/tokens", &admin, json!({"name": "e2e", "role": "tenant-admin", "tenant_id": tenant}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let p = server.ok("/v1/products", &token, json!({"id": product_id, "name": format!("{name} app")})).await;
    assert_eq!(p["id"], product_id);
    let mut tpl = json!({
        "name": "standard", "product_id": product_id, "license_type": "SUBSCRIPTION", "max_activations": 3,
        "duration_days": 365, "grace_days": 7, "heartbeat_interval_secs": 60, "lease_secs": 3600,
        "fingerprint_policy": {"required": 1, "deal_breakers": ["pinned"], "allow_pinned": true},
        "features": [{"id": "export_pdf"}, {"id": "api_calls", "limit_value": 100}]
    });
    if let (Some(base), Some(over)) = (tpl.as_object_mut(), template.as_object()) {
        for (k, v) in over {
            base.insert(k.clone(), v.clone());
        }
    }
    let template = server.ok("/v1/templates", &token, tpl).await["id"].as_str().unwrap().to_string();
    let customer = server.ok("/v1/customers", &token, json!({"name": "Ada"})).await["id"].as_str().unwrap().to_string();
    let l = server.ok("/v1/licenses", &token, json!({"template_id": template, "customer_id": customer})).await;
    Fixture {
        tenant,
        token,
        product: product_id.parse().unwrap(),
        template,
        customer,
        license: l["id"].as_str().unwrap().to_string(),
        key: l["license_key"].as_str().unwrap().to_string(),
    }
}
