use axum::http::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn audit_chain_detects_an_edited_row_via_api_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let h = Harness::with_config(dir, |_| {}).await;
    let f = h.fixture("au", 2, "SUBSCRIPTION").await;
    activate(&h, &f.key, &device(), fingerprint("x")).await;
    let (s, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!((s, v["ok"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let total = v["checked"].as_u64().unwrap();
    assert!(total >= 8);
    let (_, entries) = h.get("/v1/audit?limit=1000", Some(&f.token)).await;
    assert!(entries["items"].as_array().unwrap().iter().any(|e| e["action"] == "client.activate"));

    // CLI agrees the chain is intact.
    let bin = env!("CARGO_BIN_EXE_tessera-server");
    let out = std::process::Command::new(bin)
        .args(["--data-dir", path.to_str().unwrap(), "audit", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Tamper with row 5.
    let db = rusqlite::Connection::open(tessera_server::db_path(&path)).unwrap();
    db.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 5", []).unwrap();
    drop(db);
    let (_, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_broken"]["seq"], 5, "{v}");
    let out = std::process::Command::new(bin)
        .args(["--data-dir", path.to_str().unwrap(), "audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("entry 5"), "{}", String::from_utf8_lossy(&out.stdout));

    // Deleting a row is detected too (after restoring nothing: row 5 still broken first).
    let db = rusqlite::Connection::open(tessera_server::db_path(&path)).unwrap();
    db.execute("DELETE FROM audit_log WHERE seq = 3", []).unwrap();
    drop(db);
    let (_, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!(v["first_broken"]["seq"], 4, "{v}");
    let _ = json!({});
}

#[tokio::test]
async fn newer_schema_is_refused_and_restart_reuses_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = test_config(&path);
    let s1 = tessera_server::start(config.clone()).await.unwrap();
    assert!(s1.admin_token.is_some());
    let keys = s1.public_keyset();
    let token_file = std::fs::read_to_string(path.join("admin-token")).unwrap();
    assert_eq!(token_file.trim(), s1.admin_token.as_deref().unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path.join("admin-token")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    s1.shutdown().await;
    let s2 = tessera_server::start(config.clone()).await.unwrap();
    assert!(s2.admin_token.is_none(), "token printed only on first start");
    assert_eq!(s2.public_keyset(), keys, "same signing key");
    s2.shutdown().await;

    let db = rusqlite::Connection::open(tessera_server::db_path(&path)).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let err = match tessera_server::start(config).await {
        Ok(_) => panic!("a newer schema must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("newer"), "{err}");
}

#[tokio::test]
async fn deleting_the_newest_audit_rows_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let h = Harness::with_config(dir, |_| {}).await;
    let f = h.fixture("tail", 2, "SUBSCRIPTION").await;
    activate(&h, &f.key, &device(), fingerprint("tail")).await;
    let (_, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!(v["ok"], true, "{v}");
    let last = v["checked"].as_i64().unwrap();

    // Someone removes the last two entries (say, their own activation and the refusal before it).
    let db = rusqlite::Connection::open(tessera_server::db_path(&path)).unwrap();
    db.execute("DELETE FROM audit_log WHERE seq > ?1", [last - 2]).unwrap();
    drop(db);
    let (_, v) = h.get("/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_broken"]["seq"], last - 1, "{v}");
    assert!(v["first_broken"]["reason"].as_str().unwrap().contains("end of the log"), "{v}");
}

#[tokio::test]
async fn the_first_admin_token_is_saved_before_it_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = test_config(&path);
    // The token file cannot be written (a directory is in its way): the start fails and commits no token…
    std::fs::create_dir(path.join("admin-token")).unwrap();
    let err = match tessera_server::start(config.clone()).await {
        Ok(_) => panic!("a token that cannot be saved must not be created"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("admin-token"), "the error names the file: {err}");
    let db = rusqlite::Connection::open(tessera_server::db_path(&path)).unwrap();
    let tokens: i64 = db.query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0)).unwrap();
    assert_eq!(tokens, 0, "no token nobody could know");
    drop(db);
    // …so once the path is free, the next start creates one and saves it.
    std::fs::remove_dir(path.join("admin-token")).unwrap();
    let s = tessera_server::start(config).await.unwrap();
    let token = s.admin_token.clone().expect("a token on the first successful start");
    assert_eq!(std::fs::read_to_string(path.join("admin-token")).unwrap().trim(), token);
    s.shutdown().await;
}

/// The audit API filters by actor, action (or its prefix), target and time, pages back from the newest, stays
/// within the token's tenant, and refuses a contradictory query with a message.
#[tokio::test]
async fn audit_entries_are_filtered_and_paged_back_within_the_tenant() {
    let h = Harness::new().await;
    let f = h.fixture("au-filter", 2, "SUBSCRIPTION").await;
    let g = h.fixture("au-filter-other", 2, "SUBSCRIPTION").await;
    for (fx, path) in [(&f, "suspend"), (&f, "reinstate"), (&g, "suspend")] {
        let (s, v) = h.post(&format!("/v1/licenses/{}/{path}", fx.license), Some(&fx.token), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let items = |v: serde_json::Value| v["items"].as_array().unwrap().clone();
    let url = format!("/v1/audit?target={}&action=license.&before=9223372036854775807", f.license);
    let (s, v) = h.get(&url, Some(&f.token)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let actions: Vec<_> = items(v).iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions[..2], ["license.reinstate", "license.suspend"], "newest first: {actions:?}");
    assert!(actions.iter().all(|a| a.starts_with("license.")));
    // Another tenant's license id as the target: nothing of it, for this tenant's token.
    let (_, v) = h.get(&format!("/v1/audit?target={}", g.license), Some(&f.token)).await;
    assert!(items(v).is_empty(), "another tenant's entries are not shown");
    let (_, v) = h.get(&format!("/v1/audit?target={}&action=license.suspend", g.license), Some(&h.admin)).await;
    assert_eq!(items(v).len(), 1, "the vendor admin sees every tenant's");
    let (_, v) = h.get(&format!("/v1/audit?target={}&tenant_id={}", g.license, f.tenant), Some(&h.admin)).await;
    assert!(items(v).is_empty(), "filtered by tenant");
    let (s, _) = h.get(&format!("/v1/audit?tenant_id={}", g.tenant), Some(&f.token)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a tenant's token cannot name another tenant");
    let (s, v) = h.get("/v1/audit?after=1&before=10", Some(&f.token)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("not both"), "{v}");
    let (s, v) = h.get("/v1/audit?since=yesterday", Some(&f.token)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}
