//! A write that was queued completes or is reported, never half-lost behind a 503 (`store::writes`).
//!
//! The single writer is held up the way production holds it up: another process holds the database's write lock
//! (`BEGIN IMMEDIATE` on its own connection), so the writer waits in its busy handler while requests queue behind
//! it and run out of time. Afterwards the database must say exactly what each client was told.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_server::error::ErrorCode;
use tessera_server::services::admin::{CreateCustomer, CreateTenant};
use tessera_server::services::Ctx;
use tessera_server::store::writes::{track, Abandoned, RequestWrites};

use crate::common::test_config;

/// Holds the database's write lock from another connection until `for_` has passed.
fn hold_write_lock(db: &std::path::Path, for_: Duration) -> std::thread::JoinHandle<()> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(for_);
        conn.execute_batch("ROLLBACK").unwrap();
    })
}

fn count(db: &std::path::Path, sql: &str, name: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [name], |r| r.get(0)).unwrap()
}

fn customers_named(db: &std::path::Path, name: &str) -> i64 {
    count(db, "SELECT COUNT(*) FROM customers WHERE name = ?1", name)
}

fn audit_rows_naming(db: &std::path::Path, name: &str) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'customer.create' AND json_extract(details, '$.name') = ?1",
        name,
    )
}

struct Server {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    url: String,
    admin: String,
    tenant: String,
    http: reqwest::Client,
    running: tessera_server::RunningServer,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.request_timeout_secs = 1;
    let running = tessera_server::start(config).await.unwrap();
    let admin = running.admin_token.clone().unwrap();
    let url = running.url();
    let http = reqwest::Client::new();
    let t: Value = http
        .post(format!("{url}/v1/tenants"))
        .bearer_auth(&admin)
        .json(&json!({"name": "queue"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = t["id"].as_str().unwrap().to_string();
    Server { db: tessera_server::db_path(dir.path()), _dir: dir, url, admin, tenant, http, running }
}

impl Server {
    async fn create_customer(&self, name: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/customers", self.url))
            .bearer_auth(&self.admin)
            .json(&json!({"name": name, "tenant_id": self.tenant}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_before_its_write_starts_writes_nothing_and_says_so() {
    let s = server().await;
    let lock = hold_write_lock(&s.db, Duration::from_millis(2_500));
    let started = Instant::now();
    let (status, body) = s.create_customer("ghost").await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "TIMEOUT", "{body}");
    assert_eq!(body["error"]["details"]["applied"], false, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nothing was applied; retry"), "{body}");
    assert!(waited < Duration::from_millis(2_400), "answered at the time limit, not after the lock: {waited:?}");
    lock.join().unwrap();

    // The writer is free again; a write queued after the ghost's has committed, so the ghost's job is behind us.
    let (status, body) = s.create_customer("after").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(customers_named(&s.db, "after"), 1);
    assert_eq!(customers_named(&s.db, "ghost"), 0, "the client was told nothing was applied");
    assert_eq!(audit_rows_naming(&s.db, "ghost"), 0);
    // The retry the answer asked for works and is applied once.
    let (status, _) = s.create_customer("ghost").await;
    assert_eq!(status, 201);
    assert_eq!(customers_named(&s.db, "ghost"), 1);
    s.running.shutdown().await;
}

/// Requests arrive over a second while the writer is held up, so some run out of time before the writer gets to
/// them and some are reached first. Whatever each client was told, the database agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_each_client_was_told_is_what_the_database_holds() {
    let s = std::sync::Arc::new(server().await);
    let lock = hold_write_lock(&s.db, Duration::from_millis(1_300));
    let mut calls = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        calls.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(25 * i)).await;
            let name = format!("load-{i}");
            let (status, body) = s.create_customer(&name).await;
            (name, status, body)
        }));
    }
    let mut outcomes = Vec::new();
    for c in calls {
        outcomes.push(c.await.unwrap());
    }
    lock.join().unwrap();
    let (status, _) = s.create_customer("barrier").await;
    assert_eq!(status, 201);

    let (mut created, mut not_applied) = (0, 0);
    for (name, status, body) in &outcomes {
        let rows = customers_named(&s.db, name);
        let audited = audit_rows_naming(&s.db, name);
        match (*status, body["error"]["code"].as_str()) {
            (201, _) => {
                created += 1;
                assert_eq!((rows, audited), (1, 1), "{name}: told created");
            }
            (503, Some("TIMEOUT")) => {
                not_applied += 1;
                assert_eq!(body["error"]["details"]["applied"], false);
                assert_eq!((rows, audited), (0, 0), "{name}: told nothing was applied");
            }
            (503, Some("TIMEOUT_OUTCOME_UNKNOWN")) => {
                assert_eq!(rows, audited, "{name}: applied with its audit row or not at all")
            }
            other => panic!("{name}: unexpected answer {other:?}: {body}"),
        }
    }
    // The early requests ran out of time behind the lock; the late ones were reached after it.
    assert!(not_applied > 0 && created > 0, "created {created}, not applied {not_applied}: {outcomes:?}");
}

/// The rule underneath, on the real store: a job that started runs to completion (with its audit row) and the
/// timeout learns it started; a job abandoned before it started is skipped by the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_skips_abandoned_jobs_and_finishes_started_ones() {
    let dir = tempfile::tempdir().unwrap();
    let opened = tessera_server::open(test_config(dir.path()), tessera_server::time::system_clock()).await.unwrap();
    let services = opened.services.clone();
    let db = tessera_server::db_path(dir.path());
    let ctx = Ctx::cli("test");
    let tenant = services.create_tenant(&ctx, CreateTenant { name: "t".into() }).await.unwrap().id;
    let customer =
        |name: &str| CreateCustomer { tenant_id: Some(tenant), name: name.into(), email: None, metadata: None };

    // Abandoned while queued: nothing is written.
    let lock = hold_write_lock(&db, Duration::from_millis(600));
    let w = RequestWrites::new();
    let (s2, c2) = (services.clone(), customer("abandoned"));
    let job = tokio::spawn(track(w.clone(), async move { s2.create_customer(&Ctx::cli("test"), c2).await }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!w.has_started(), "the writer is held by the lock");
    assert_eq!(w.abandon(), Abandoned::NothingWritten);
    lock.join().unwrap();
    let err = job.await.unwrap().unwrap_err();
    assert_eq!((err.status(), err.code), (503, ErrorCode::Timeout));
    // Later writes of an abandoned request are refused before they are queued.
    let r = track(w.clone(), services.store.count_tokens()).await;
    assert!(r.is_ok(), "reads are not affected");
    let again = track(w, services.create_customer(&ctx, customer("abandoned"))).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::Timeout);
    services.create_customer(&ctx, customer("barrier")).await.unwrap();
    assert_eq!((customers_named(&db, "abandoned"), audit_rows_naming(&db, "abandoned")), (0, 0));

    // Started: abandoning fails, the write completes, its audit row is there.
    let lock = hold_write_lock(&db, Duration::from_millis(300));
    let w = RequestWrites::new();
    let (s2, c2) = (services.clone(), customer("started"));
    let job = tokio::spawn(track(w.clone(), async move { s2.create_customer(&Ctx::cli("test"), c2).await }));
    lock.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.has_started() {
        assert!(Instant::now() < deadline, "the writer never started the job");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(w.abandon(), Abandoned::WriteStarted);
    job.await.unwrap().unwrap();
    assert_eq!((customers_named(&db, "started"), audit_rows_naming(&db, "started")), (1, 1));
}
