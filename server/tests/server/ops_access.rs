//! Operations endpoints that cover every tenant: the global audit-chain walk (vendor-admin only) and `/metrics`
//! (vendor-admin, or the configured metrics token for a Prometheus scraper).

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const METRICS_TOKEN: &str = "prometheus-scrape-0123456789";

async fn token(h: &Harness, tenant: &str, role: &str) -> String {
    let (s, t) =
        h.post("/v1/tokens", Some(&h.admin.clone()), json!({"name": role, "role": role, "tenant_id": tenant})).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    t["token"].as_str().unwrap().to_string()
}

async fn metrics(h: &Harness, bearer: Option<&str>) -> (StatusCode, Vec<u8>) {
    h.raw(Method::GET, "/metrics", bearer, None, &[]).await
}

fn error_of(body: &[u8]) -> String {
    err_code(&serde_json::from_slice::<Value>(body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body))))
}

#[tokio::test]
async fn the_global_audit_chain_walk_is_vendor_admin_only() {
    let h = Harness::new().await;
    let f = h.fixture("audit-walk", 1, "PERPETUAL").await;
    for t in [f.token.clone(), token(&h, &f.tenant, "support").await, token(&h, &f.tenant, "read-only").await] {
        let (s, v) = h.get("/v1/audit/verify", Some(&t)).await;
        assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("vendor-admin"), "{v}");
        assert!(v.get("checked").is_none() && v["error"]["details"].get("checked").is_none());
    }
    // The tenant still reads its own entries.
    let (s, _) = h.get("/v1/audit", Some(&f.token)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.get("/v1/audit/verify", None).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let (s, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!((s, v["ok"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
}

#[tokio::test]
async fn metrics_need_a_vendor_admin_token_or_the_metrics_token() {
    let h = Harness::with_config(tempfile::tempdir().unwrap(), |c| {
        c.metrics_token = Some(tessera_server::config::Secret(METRICS_TOKEN.into()))
    })
    .await;
    let f = h.fixture("metrics", 1, "PERPETUAL").await;

    let (s, body) = metrics(&h, None).await;
    assert_eq!((s, error_of(&body).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    for wrong in ["prometheus-scrape-0123456780", "x", METRICS_TOKEN.trim_end_matches('9')] {
        let (s, body) = metrics(&h, Some(wrong)).await;
        assert_eq!((s, error_of(&body).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{wrong}");
    }
    let (s, body) = metrics(&h, Some("tsa_0000000000000000000000000000")).await;
    assert_eq!((s, error_of(&body).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    // Tenant tokens of every role are API tokens, just not allowed here.
    for t in [f.token.clone(), token(&h, &f.tenant, "read-only").await] {
        let (s, body) = metrics(&h, Some(&t)).await;
        assert_eq!((s, error_of(&body).as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    }
    for ok in [METRICS_TOKEN, h.admin.as_str()] {
        let (s, body) = metrics(&h, Some(ok)).await;
        assert_eq!(s, StatusCode::OK);
        assert!(String::from_utf8(body).unwrap().contains("tessera_http_requests_total"));
    }
}

#[tokio::test]
async fn without_a_metrics_token_only_vendor_admin_reads_metrics() {
    let h = Harness::new().await;
    let (s, body) = metrics(&h, Some(METRICS_TOKEN)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let msg: Value = serde_json::from_slice(&body).unwrap();
    assert!(msg["error"]["message"].as_str().unwrap().contains("TESSERA_METRICS_TOKEN"), "{msg}");
    let (s, _) = metrics(&h, Some(&h.admin.clone())).await;
    assert_eq!(s, StatusCode::OK);
}

/// The binary reads `TESSERA_METRICS_TOKEN`; a scraper sends it as a bearer token over a real socket.
#[tokio::test]
async fn prometheus_scrapes_the_real_server_with_the_metrics_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tessera-server");
    let too_short = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TESSERA_METRICS_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!too_short.status.success());
    assert!(String::from_utf8_lossy(&too_short.stderr).contains("at least 16 characters"));

    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TESSERA_SYNCHRONOUS", "normal")
        .env("TESSERA_METRICS_TOKEN", METRICS_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("tessera-server listening on ").map(|u| u.trim().to_string()))
        .expect("listening line");
    let http = reqwest::Client::new();
    let anonymous = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let scraped = http.get(format!("{url}/metrics")).bearer_auth(METRICS_TOKEN).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("# TYPE tessera_http_requests counter"));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}
