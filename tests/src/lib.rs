//! Test support, shared by the server's integration tests and the end-to-end suite: the in-process harness
//! ([`Harness`], the router without a port), the real server (in-process on a loopback port, [`TestServer`], or
//! the built binary as a child process for crash tests) and the real agent (library and binary), each in a
//! temporary directory; one test configuration, one fixture builder ([`fixture`]) for all of them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed setup step should fail the test loudly

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_agent::{AgentConfig, IdentityMode};
use tessera_core::PublicKeyset;
use tessera_server::{Config, RunningServer};
use uuid::Uuid;

pub mod harness;
pub mod vendor;

pub use harness::Harness;

/// A settable server clock.
#[derive(Clone)]
pub struct ServerClock(Arc<Mutex<DateTime<Utc>>>);

impl ServerClock {
    pub fn new() -> Self {
        ServerClock(Arc::new(Mutex::new(Utc::now())))
    }
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
    fn as_clock(&self) -> tessera_server::time::Clock {
        let c = self.0.clone();
        Arc::new(move || *c.lock().unwrap())
    }
}

impl Default for ServerClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A tenant with a product, a template and a license, made through the admin API ([`fixture`]).
#[derive(Debug, Clone)]
pub struct Fixture {
    pub tenant: String,
    /// Tenant-admin token.
    pub token: String,
    pub product: Uuid,
    pub template: String,
    pub customer: String,
    pub license: String,
    pub key: String,
}

/// The real server, in-process, on a free loopback port.
pub struct TestServer {
    pub running: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub admin: String,
    pub http: reqwest::Client,
    pub clock: ServerClock,
    url: String,
}

pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::for_data_dir(dir);
    c.listen = "127.0.0.1:0".into();
    c.rate_limits.per_ip_per_sec = 0.0;
    c.rate_limits.per_key_per_sec = 0.0;
    c.rate_limits.admin_per_ip_per_sec = 0.0;
    c.jobs.interval_secs = 0;
    c
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let clock = ServerClock::new();
        let running = tessera_server::start_with_clock(config, clock.as_clock()).await.unwrap();
        let admin = running.admin_token.clone().unwrap();
        let url = running.url();
        TestServer { running: Some(running), dir, admin, http: reqwest::Client::new(), clock, url }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn running(&self) -> &RunningServer {
        self.running.as_ref().expect("server is running")
    }

    pub fn keyset(&self) -> PublicKeyset {
        self.running().public_keyset()
    }

    /// Stops the server (graceful drain); the data directory stays.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Starts again on the same data directory and the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut config = test_config(self.dir.path());
        config.listen = self.url.trim_start_matches("http://").to_string();
        let mut last = None;
        for _ in 0..50 {
            match tessera_server::start_with_clock(config.clone(), self.clock.as_clock()).await {
                Ok(r) => {
                    self.running = Some(r);
                    return;
                }
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not restart: {last:?}");
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, Some(token), None).await
    }

    /// POST that must succeed; returns the JSON body.
    pub async fn ok(&self, path: &str, token: &str, body: Value) -> Value {
        let (s, v) = self.post(path, token, body).await;
        assert!(s.is_success(), "POST {path}: {s} {v}");
        v
    }

    /// A tenant, its admin token, a product, a template (`template` fields override the defaults), a customer
    /// and one license from the template.
    pub async fn fixture(&self, name: &str, template: Value) -> Fixture {
        fixture(self, &self.admin.clone(), name, template).await
    }

    pub async fn license_json(&self, fx: &Fixture) -> Value {
        let (s, v) = self.get(&format!("/v1/licenses/{}", fx.license), &fx.token).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub async fn run_jobs(&self) -> Value {
        self.ok("/v1/jobs/run", &self.admin.clone(), json!({})).await
    }
}

/// Anything that speaks the admin API.
pub trait Api {
    fn post_json(&self, path: &str, token: &str, body: Value)
        -> impl std::future::Future<Output = (StatusCode, Value)>;
}

impl Api for TestServer {
    async fn post_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.post(path, token, body).await
    }
}

/// A template emergency policy that allows codes bound to no device (the default requires binding).
pub fn unbound_emergency() -> Value {
    json!({"enabled": true, "validity_hours": 24, "max_per_30_days": 3, "scope": "LICENSED_FEATURES",
           "require_binding": false})
}

/// A tenant, its tenant-admin token, a product, a template (the defaults below; `template` overrides them, a
/// `null` drops one), a customer and one license from the template, made through `api`.
pub async fn fixture(api: &impl Api, admin: &str, name: &str, template: Value) -> Fixture {
    let ok = |what: &str, (s, v): (StatusCode, Value)| {
        assert!(s.is_success(), "{what}: {s} {v}");
        v
    };
    let t = ok("tenant", api.post_json("/v1/tenants", admin, json!({"name": name})).await);
    let tenant = t["id"].as_str().unwrap().to_string();
    let tok = ok(
        "token",
        api.post_json("/v1/tokens", admin, json!({"name": "e2e", "role": "tenant-admin", "tenant_id": tenant})).await,
    );
    let token = tok["token"].as_str().unwrap().to_string();
    let p = ok("product", api.post_json("/v1/products", &token, json!({"name": format!("{name} app")})).await);
    let product: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let mut tpl = json!({
        "name": "standard", "product_id": product, "license_type": "SUBSCRIPTION", "max_activations": 3,
        "duration_days": 365, "grace_days": 7, "heartbeat_interval_secs": 60, "lease_secs": 3600,
        // The suite's agents run with a pinned identity (`agent_config`), so its template allows one; the
        // default policy refuses pinned identities (tests/e2e/identity.rs).
        "fingerprint_policy": {"required": 3, "deal_breakers": ["machine_id", "pinned"], "allow_pinned": true},
        "features": [{"id": "export_pdf"}, {"id": "api_calls", "limit_value": 100}, {"id": "beta_lab", "enabled": false}]
    });
    if let (Some(base), Some(over)) = (tpl.as_object_mut(), template.as_object()) {
        for (k, v) in over {
            // `null` drops a default (the server's own default applies).
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    let tp = ok("template", api.post_json("/v1/templates", &token, tpl).await);
    let template = tp["id"].as_str().unwrap().to_string();
    let c = ok(
        "customer",
        api.post_json("/v1/customers", &token, json!({"name": "Ada", "email": "ada@example.com"})).await,
    );
    let customer = c["id"].as_str().unwrap().to_string();
    let l = ok(
        "license",
        api.post_json("/v1/licenses", &token, json!({"template_id": template, "customer_id": customer})).await,
    );
    Fixture {
        tenant,
        token,
        product,
        template,
        customer,
        license: l["id"].as_str().unwrap().to_string(),
        key: l["license_key"].as_str().unwrap().to_string(),
    }
}

/// An agent configuration with a pinned identity, so several "machines" can live in one test process.
pub fn agent_config(
    state_dir: &Path,
    identity: &str,
    keyset: PublicKeyset,
    product: Uuid,
    server: Option<&str>,
) -> AgentConfig {
    let mut c = AgentConfig::new(state_dir.join(format!("{identity}.db")), keyset, product)
        .with_identity(IdentityMode::PinnedValue(format!("e2e-machine-{identity}")));
    if let Some(url) = server {
        c = c.with_server(url);
    }
    c
}

/// The directory cargo put the workspace's binaries in (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path to a workspace binary. `cargo test --workspace` builds `tessera-server` and `tessera-agent` because
/// their packages have integration tests; running this suite alone needs `cargo build --bins` first.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The built `tessera-server` binary as a child process (for crash tests).
pub struct ServerProcess {
    pub child: Child,
    pub data_dir: PathBuf,
    pub url: String,
    pub admin: String,
}

impl ServerProcess {
    pub async fn spawn(data_dir: &Path) -> ServerProcess {
        Self::spawn_on(data_dir, free_port()).await
    }

    pub async fn spawn_on(data_dir: &Path, port: u16) -> ServerProcess {
        let child = Command::new(bin("tessera-server"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("TESSERA_RATE_LIMIT_PER_IP", "0")
            .env("TESSERA_RATE_LIMIT_PER_KEY", "0")
            .env("TESSERA_RATE_LIMIT_ADMIN_PER_IP", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "tessera-server did not become ready on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let admin = std::fs::read_to_string(data_dir.join("admin-token")).unwrap().trim().to_string();
        ServerProcess { child, data_dir: data_dir.to_path_buf(), url, admin }
    }

    /// SIGKILL: no drain, no clean shutdown.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `tessera-agent` binary; returns (exit code, stdout, stderr).
pub fn run_agent(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run_binary(&bin("tessera-agent"), args, env)
}

/// Runs a binary with no standard input; returns (exit code, stdout, stderr).
pub fn run_binary(path: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(path).args(args).envs(env.iter().copied()).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Client-protocol and database helpers (crash, isolation and bad-input sweeps) ----------------------------------

/// A client nonce: 16 random bytes, base64url.
pub fn nonce() -> String {
    tessera_core::encoding::b64url(Uuid::new_v4().as_bytes())
}

/// A random device fingerprint: four components with random 64-hex hashes.
pub fn random_fingerprint() -> Value {
    let h = || format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    json!([
        {"kind": "machine_id", "hash": h()}, {"kind": "mac", "hash": h()},
        {"kind": "cpu", "hash": h()}, {"kind": "disk", "hash": h()},
    ])
}

/// The device public key as the activate body carries it (base64url).
pub fn device_public(dev: &tessera_core::SigningKey) -> String {
    tessera_core::encoding::b64url(&dev.verifying_key().public_bytes())
}

/// Serializes a device-signed request body and signs it (PROTOCOL.md): returns the body bytes and the value of
/// the `X-Tessera-Signature` header.
pub fn device_sign(dev: &tessera_core::SigningKey, path: &str, body: &Value) -> (Vec<u8>, String) {
    let bytes = serde_json::to_vec(body).unwrap();
    let sig = dev.sign(tessera_core::Domain::DeviceMessage, &[path.as_bytes()], &bytes);
    (bytes, tessera_core::encoding::b64url(&sig))
}

/// Opens a signed client response (`{"signed": …}`): checks the server signature and the echoed nonce and
/// returns `result`; `None` when any of that fails.
pub fn open_signed(keys: &PublicKeyset, body: &Value, nonce: &str) -> Option<Value> {
    let env = tessera_core::envelope::Envelope::from_compact(body["signed"].as_str()?).ok()?;
    let payload: Value = serde_json::from_slice(env.open(keys, tessera_core::Domain::ServerResponse).ok()?).ok()?;
    (payload["nonce"] == nonce).then(|| payload["result"].clone())
}

/// Asserts the one error shape `{"error": {"code", "message", …}}` and returns the code.
pub fn error_code(v: &Value) -> String {
    let e = &v["error"];
    assert!(e["code"].as_str().is_some_and(|c| !c.is_empty()), "not the error shape: {v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {v}");
    e["code"].as_str().unwrap().to_string()
}

/// Every row of every table of a SQLite database, rendered and sorted per table (tables in `skip` left out).
pub type DbSnapshot = std::collections::BTreeMap<String, Vec<String>>;

pub fn db_snapshot(db: &Path, skip: &[&str]) -> DbSnapshot {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let mut snap = DbSnapshot::new();
    for t in tables.into_iter().filter(|t| !skip.contains(&t.as_str())) {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells: Vec<String> = (0..n).map(|i| format!("{:?}", r.get_ref(i).unwrap())).collect();
                Ok(cells.join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        snap.insert(t, rows);
    }
    snap
}

/// Asserts two snapshots are equal, naming the tables and rows that differ.
pub fn assert_same_db(before: &DbSnapshot, after: &DbSnapshot, what: &str) {
    let mut diffs = Vec::new();
    for t in before.keys().chain(after.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (b, a) = (before.get(t).cloned().unwrap_or_default(), after.get(t).cloned().unwrap_or_default());
        if a != b {
            let gone: Vec<&String> = b.iter().filter(|r| !a.contains(r)).collect();
            let new: Vec<&String> = a.iter().filter(|r| !b.contains(r)).collect();
            diffs.push(format!("table {t}: {} row(s) -> {}; removed {gone:?}; added {new:?}", b.len(), a.len()));
        }
    }
    assert!(diffs.is_empty(), "{what}: the database changed:\n{}", diffs.join("\n"));
}

/// Sleeps past UTC midnight when it is less than `margin` away, for tests that count a quota per day on the real
/// clock and must not see the day change halfway.
pub async fn away_from_midnight(margin: std::time::Duration) {
    let now = chrono::Utc::now();
    let next = (now.date_naive() + chrono::Duration::days(1)).and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    if let Some(left) = next.and_then(|n| (n - now).to_std().ok()).filter(|left| *left < margin) {
        tokio::time::sleep(left + std::time::Duration::from_millis(100)).await;
    }
}
