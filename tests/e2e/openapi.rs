//! A client that knows the server only from `/v1/openapi.json` (tests/python/openapi_client.py) drives the main
//! flows against the real server: every body it sends and every answer it gets must match the document's schemas,
//! every refusal must carry a code the document lists for that operation, and every signed result must verify.

use std::path::Path;

use tessera_test_support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_built_from_the_openapi_document_drives_the_main_flows() {
    let server = TestServer::start().await;
    let keyset = server.dir.path().join("public-keyset.json");
    std::fs::write(&keyset, server.keyset().to_json()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openapi_client.py");
    let args = [script.display().to_string(), server.url(), server.admin.clone(), keyset.display().to_string()];
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("python3").args(&args).output())
        .await
        .unwrap()
        .expect("python3 with the `cryptography` and `jsonschema` packages (as .ci/run installs) runs the client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the schema-driven client failed:\n{stderr}");
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (what, at_least) in [("requests", 8), ("answers", 15), ("refusals", 8), ("signed_results", 4)] {
        assert!(checked[what].as_u64().unwrap() >= at_least, "{what}: {checked}");
    }
}
