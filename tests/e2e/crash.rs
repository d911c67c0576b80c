//! Crash tests: `kill -9` of the server process under client load, and of the agent binary while it records
//! usage. What was acknowledged must survive; what is sent again must not be counted twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::{PublicKeyset, SigningKey};
use tessera_test_support::*;
use uuid::Uuid;

/// The admin and client API of a server at a base URL (for the server child process).
struct Http {
    http: reqwest::Client,
    url: String,
}

impl Http {
    fn new(url: &str) -> Http {
        Http { http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(), url: url.into() }
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(token).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// A client call; `Err` when the server could not be reached or the answer was cut off.
    async fn client(&self, path: &str, body: Vec<u8>, signature: Option<&str>) -> Result<(StatusCode, Value), String> {
        let mut r = self
            .http
            .post(format!("{}{path}", self.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(sig) = signature {
            r = r.header("x-tessera-signature", sig);
        }
        let resp = r.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?))
    }

    async fn activate(&self, keys: &PublicKeyset, key: &str, dev: &SigningKey) -> Result<(StatusCode, Value), String> {
        let n = nonce();
        let body = json!({"license_key": key, "fingerprint": random_fingerprint(), "device_public_key": device_public(dev),
                          "metadata": {"hostname": "crash"}, "nonce": n});
        let (s, v) = self.client("/v1/client/activate", serde_json::to_vec(&body).unwrap(), None).await?;
        Ok(if s == StatusCode::OK { (s, open_signed(keys, &v, &n).ok_or("bad signature")?) } else { (s, v) })
    }

    /// A device-signed call; a 200 answer is returned opened (signature and nonce checked).
    async fn device(
        &self,
        keys: &PublicKeyset,
        dev: &SigningKey,
        path: &str,
        mut body: Value,
    ) -> Result<(StatusCode, Value), String> {
        let n = nonce();
        body["nonce"] = json!(n);
        body["sent_at"] = json!(Utc::now());
        let (bytes, sig) = device_sign(dev, path, &body);
        let (s, v) = self.client(path, bytes, Some(&sig)).await?;
        Ok(if s == StatusCode::OK { (s, open_signed(keys, &v, &n).ok_or("bad signature")?) } else { (s, v) })
    }
}

impl Api for Http {
    async fn post_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(format!("{}{path}", self.url)).bearer_auth(token).json(&body).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

fn export_keyset(data_dir: &Path) -> PublicKeyset {
    let out = Command::new(bin("tessera-server"))
        .args(["keys", "export", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "keys export: {}", String::from_utf8_lossy(&out.stderr));
    PublicKeyset::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

fn usage_event(feature: &str) -> (Uuid, Value) {
    let id = Uuid::new_v4();
    (id, json!({"id": id, "feature": feature, "amount": 1, "recorded_at": Utc::now()}))
}

/// What one client task sent and what the server acknowledged (200 with a verified signature).
#[derive(Default)]
struct Ledger {
    activation_attempts: usize,
    /// Acknowledged activations and their device keys.
    activations: HashMap<Uuid, Arc<SigningKey>>,
    /// Every usage event sent: id -> (activation, event).
    sent_usage: HashMap<Uuid, (Uuid, Value)>,
    acked_usage: BTreeSet<Uuid>,
    acked_heartbeats: usize,
    deactivate_attempted: BTreeSet<Uuid>,
    deactivate_acked: BTreeSet<Uuid>,
}

/// One client: activates devices, heartbeats usage, deactivates every second device; stops at the first
/// transport error (the server was killed) or when told to.
async fn client_task(
    api: Arc<Http>,
    keys: PublicKeyset,
    key: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Ledger {
    let mut l = Ledger::default();
    let mut device = 0usize;
    'outer: while !stop.load(Ordering::Relaxed) {
        device += 1;
        let dev = Arc::new(SigningKey::generate_ed25519());
        l.activation_attempts += 1;
        let id = match api.activate(&keys, &key, &dev).await {
            Err(_) => break,
            Ok((StatusCode::OK, r)) => r["activation_id"].as_str().unwrap().parse::<Uuid>().unwrap(),
            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => continue, // BUSY: not acknowledged, may be retried
            Ok((s, v)) => panic!("activation under load: {s} {v}"),
        };
        l.activations.insert(id, dev.clone());
        acks.fetch_add(1, Ordering::Relaxed);
        for _ in 0..3 {
            let events: Vec<(Uuid, Value)> = (0..2).map(|_| usage_event("api_calls")).collect();
            for (uid, ev) in &events {
                l.sent_usage.insert(*uid, (id, ev.clone()));
            }
            let body = json!({"activation_id": id, "usage": events.iter().map(|e| e.1.clone()).collect::<Vec<_>>()});
            match api.device(&keys, &dev, "/v1/client/heartbeat", body).await {
                Err(_) => break 'outer,
                Ok((StatusCode::OK, r)) => {
                    let accepted: BTreeSet<Uuid> = r["accepted_usage"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().parse().unwrap())
                        .collect();
                    for (uid, _) in &events {
                        assert!(accepted.contains(uid), "heartbeat answered 200 without accepting {uid}: {r}");
                    }
                    l.acked_usage.extend(accepted);
                    l.acked_heartbeats += 1;
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {}
                Ok((s, v)) => panic!("heartbeat under load: {s} {v}"),
            }
        }
        if device.is_multiple_of(2) {
            l.deactivate_attempted.insert(id);
            match api.device(&keys, &dev, "/v1/client/deactivate", json!({"activation_id": id})).await {
                Err(_) => break,
                Ok((StatusCode::OK, r)) => {
                    assert_eq!(r["deactivated"], true, "{r}");
                    l.deactivate_acked.insert(id);
                }
                Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {}
                Ok((s, v)) => panic!("deactivation under load: {s} {v}"),
            }
        }
    }
    l
}

fn usage_in_db(data_dir: &Path, license: &str) -> (i64, i64, i64) {
    let db = rusqlite::Connection::open_with_flags(
        tessera_server::db_path(data_dir),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (events, sum): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM usage_events WHERE license_id = ?1",
            [license],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let total: i64 = db
        .query_row("SELECT COALESCE(SUM(total), 0) FROM usage_totals WHERE license_id = ?1", [license], |r| r.get(0))
        .unwrap();
    (events, sum, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_server_under_load_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::spawn(&data).await;
    let keys = export_keyset(&data);
    let api = Arc::new(Http::new(&server.url));
    let fx = fixture(api.as_ref(), &server.admin, "crash", json!({"max_activations": 5000})).await;

    // Load: six clients activating, heartbeating usage and deactivating, over HTTP with real device keys.
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..6)
        .map(|_| tokio::spawn(client_task(api.clone(), keys.clone(), fx.key.clone(), stop.clone(), acks.clone())))
        .collect();
    // Kill once the load is well under way, at a random moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let target = 60 + (Uuid::new_v4().as_bytes()[0] as usize % 60);
    while acks.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "the load made no progress: {} acknowledgements",
            acks.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut all = Ledger::default();
    for t in tasks {
        let l = t.await.unwrap();
        all.activation_attempts += l.activation_attempts;
        all.activations.extend(l.activations);
        all.sent_usage.extend(l.sent_usage);
        all.acked_usage.extend(l.acked_usage);
        all.acked_heartbeats += l.acked_heartbeats;
        all.deactivate_attempted.extend(l.deactivate_attempted);
        all.deactivate_acked.extend(l.deactivate_acked);
    }
    assert!(!all.activations.is_empty() && all.acked_heartbeats > 0, "nothing was acknowledged before the kill");
    assert!(
        all.sent_usage.len() > all.acked_usage.len() || all.activation_attempts > all.activations.len(),
        "the kill should leave some requests unacknowledged (a client stops at its first failed request)"
    );

    eprintln!(
        "kill -9 after {} activations ({} attempted), {} heartbeats, {} of {} usage events, {} deactivations acknowledged",
        all.activations.len(),
        all.activation_attempts,
        all.acked_heartbeats,
        all.acked_usage.len(),
        all.sent_usage.len(),
        all.deactivate_acked.len()
    );

    // Restart on the same data directory.
    let server = ServerProcess::spawn(&data).await;
    let api = Http::new(&server.url);
    let admin = server.admin.clone();

    // Every acknowledged activation exists, in the state last acknowledged; no activation appeared from nowhere.
    let (s, v) = api.get(&format!("/v1/licenses/{}/activations", fx.license), &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stored: BTreeMap<Uuid, String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().parse().unwrap(), a["status"].as_str().unwrap().to_string()))
        .collect();
    for id in all.activations.keys() {
        let status = stored.get(id).unwrap_or_else(|| panic!("acknowledged activation {id} is lost after kill -9"));
        if all.deactivate_acked.contains(id) {
            assert_ne!(status, "ACTIVE", "acknowledged deactivation of {id} is lost");
        } else if !all.deactivate_attempted.contains(id) {
            assert_eq!(status, "ACTIVE", "activation {id} was never deactivated");
        }
    }
    assert!(
        stored.len() <= all.activation_attempts,
        "{} activations stored, {} attempted",
        stored.len(),
        all.activation_attempts
    );

    // The seat count equals the live activations.
    let live = stored.values().filter(|s| *s == "ACTIVE").count();
    let (s, lic) = api.get(&format!("/v1/licenses/{}", fx.license), &admin).await;
    assert_eq!(s, StatusCode::OK, "{lic}");
    assert_eq!(lic["seats_used"].as_u64(), Some(live as u64), "seats_used vs live activations: {lic}");

    // Usage: everything acknowledged is counted, nothing beyond what was sent.
    let (probe, probe_dev) = all
        .activations
        .iter()
        .find(|(id, _)| !all.deactivate_attempted.contains(id))
        .map(|(id, k)| (*id, k.clone()))
        .expect("a live activation");
    let (s, r) = api.device(&keys, &probe_dev, "/v1/client/heartbeat", json!({"activation_id": probe})).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{r}");
    let counted = r["usage_totals"]["api_calls"].as_i64().unwrap_or(0);
    assert!(
        counted >= all.acked_usage.len() as i64 && counted <= all.sent_usage.len() as i64,
        "usage after the crash: {counted} counted, {} acknowledged, {} sent",
        all.acked_usage.len(),
        all.sent_usage.len()
    );

    // Send everything again (what the agent does with events it has no acknowledgement for, and a replay of the
    // acknowledged ones): each id is counted exactly once.
    let mut by_activation: BTreeMap<Uuid, Vec<Value>> = BTreeMap::new();
    for (uid, (act, ev)) in &all.sent_usage {
        let acked = all.acked_usage.contains(uid);
        // A client sends a device's heartbeats before its deactivation, and stops at its first failure.
        assert!(acked || !all.deactivate_attempted.contains(act), "unacknowledged usage on a deactivated activation");
        if !all.deactivate_attempted.contains(act) {
            by_activation.entry(*act).or_default().push(ev.clone());
        }
    }
    for (act, events) in &by_activation {
        let (s, r) = api
            .device(
                &keys,
                &all.activations[act],
                "/v1/client/heartbeat",
                json!({"activation_id": act, "usage": events}),
            )
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["accepted_usage"].as_array().unwrap().len(), events.len(), "{r}");
    }
    let (s, r) = api.device(&keys, &probe_dev, "/v1/client/heartbeat", json!({"activation_id": probe})).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        r["usage_totals"]["api_calls"].as_i64(),
        Some(all.sent_usage.len() as i64),
        "after resending, the total must equal the distinct usage ids sent"
    );
    let (events, sum, total) = usage_in_db(&data, &fx.license);
    assert_eq!(
        (events, sum, total),
        (all.sent_usage.len() as i64, all.sent_usage.len() as i64, all.sent_usage.len() as i64),
        "usage_events rows, their sum, and the running total"
    );
    drop(server);
}

// The agent binary, killed while it records usage --------------------------------------------------------------

#[derive(Clone)]
struct AgentEnv {
    args: Vec<String>,
    identity: String,
}

impl AgentEnv {
    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(bin("tessera-agent"));
        c.args(extra)
            .args(&self.args)
            .env("TESSERA_AGENT_IDENTITY", &self.identity)
            .env_remove("TESSERA_AGENT_STATE")
            .env_remove("TESSERA_SERVER_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, extra: &[&str]) -> (i32, String, String) {
        let out = self.command(extra).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the agent off the async workers (the in-process server needs them to answer).
    async fn run_async(&self, extra: &[&str]) -> (i32, String, String) {
        let (env, extra): (AgentEnv, Vec<String>) = (self.clone(), extra.iter().map(|s| s.to_string()).collect());
        tokio::task::spawn_blocking(move || env.run(&extra.iter().map(String::as_str).collect::<Vec<_>>()))
            .await
            .unwrap()
    }

    async fn status(&self) -> Value {
        let (code, out, err) = self.run_async(&["status", "--json"]).await;
        assert_eq!(code, 0, "status: {out} {err}");
        serde_json::from_str(&out).unwrap()
    }
}

/// A random delay in `0..max`.
fn jitter(max: Duration) -> Duration {
    let r = u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
    Duration::from_nanos(r % (max.as_nanos() as u64).max(1))
}

/// Spawns the agent and SIGKILLs it after `delay` unless it finished; `Some(exit code)` when it finished by itself.
fn run_and_kill(cmd: &mut Command, delay: Duration) -> Option<i32> {
    let mut child = cmd.spawn().unwrap();
    let until = Instant::now() + delay;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() >= until {
            child.kill().unwrap();
            let st = child.wait().unwrap();
            // It may have exited on its own between the check and the kill.
            return st.code();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn server_usage(data_dir: &Path, license: &str) -> (i64, i64) {
    let (events, _, total) = usage_in_db(data_dir, license);
    (events, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_agent_while_recording_usage_loses_and_doubles_nothing() {
    let server = TestServer::start().await;
    let fx = server.fixture("agentcrash", json!({"features": [{"id": "api_calls", "limit_value": 1000}]})).await;
    let dir = tempfile::tempdir().unwrap();
    let keyset = dir.path().join("keyset.json");
    std::fs::write(&keyset, server.keyset().to_json()).unwrap();
    let state = dir.path().join("state.db");
    let env = AgentEnv {
        args: [
            "--state",
            state.to_str().unwrap(),
            "--keyset",
            keyset.to_str().unwrap(),
            "--product",
            &fx.product.to_string(),
            "--server",
            &server.url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        identity: format!("crash-agent-{}", Uuid::new_v4().simple()),
    };
    let (code, out, err) = env.run_async(&["activate", "--key", &fx.key]).await;
    assert_eq!(code, 0, "activate: {out} {err}");

    let data_dir = server.dir.path().to_path_buf();
    let runner = env.clone();
    let (attempted, exited_ok, killed) = tokio::task::spawn_blocking(move || {
        // How long a consume takes here (the fastest of three), so that the kills land inside a run.
        let mut typical = Duration::from_secs(3600);
        for _ in 0..3 {
            let started = Instant::now();
            let (code, out, err) = runner.run(&["consume", "api_calls"]);
            assert_eq!(code, 0, "consume: {out} {err}");
            typical = typical.min(started.elapsed());
        }
        let (mut attempted, mut exited_ok, mut killed) = (3usize, 3usize, 0usize);
        // Every other run is killed after a random delay within its usual run time; more runs while fewer than
        // four were caught mid-run (a kill may land after the process exited by itself).
        let mut i = 0;
        while i < 32 || (killed < 4 && i < 128) {
            attempted += 1;
            let delay = if i % 2 == 0 { jitter(typical.mul_f64(0.9)) } else { Duration::from_secs(30) };
            match run_and_kill(&mut runner.command(&["consume", "api_calls"]), delay) {
                Some(0) => exited_ok += 1,
                Some(c) => panic!("consume exited {c} without being killed"),
                None => killed += 1,
            }
            i += 1;
        }
        (attempted, exited_ok, killed)
    })
    .await
    .unwrap();
    assert!(killed > 0, "no consume run was killed mid-run ({attempted} runs)");
    eprintln!("consume: {attempted} runs, {exited_ok} exited 0, {killed} killed");

    // The agent's queue holds every acknowledged (exit 0) consume, and never more than were attempted.
    let queued = env.status().await["pending_usage"].as_u64().unwrap() as usize;
    assert!(exited_ok <= queued && queued <= attempted, "queued {queued}: {exited_ok} exited 0, {attempted} attempted");
    assert_eq!(server_usage(&data_dir, &fx.license), (0, 0), "nothing was sent yet");

    // A heartbeat killed mid-run: the server may have counted events the agent has not marked as sent.
    let runner = env.clone();
    tokio::task::spawn_blocking(move || {
        run_and_kill(&mut runner.command(&["heartbeat"]), jitter(Duration::from_millis(40)))
    })
    .await
    .unwrap();
    let (events_mid, total_mid) = server_usage(&data_dir, &fx.license);
    assert!(
        events_mid as usize <= queued && total_mid == events_mid,
        "after the killed heartbeat: {events_mid} events, total {total_mid}"
    );

    // Sync: every queued event is counted, once.
    let (code, out, err) = env.run_async(&["heartbeat"]).await;
    assert_eq!(code, 0, "heartbeat: {out} {err}");
    let after_sync = server_usage(&data_dir, &fx.license);
    assert_eq!(
        after_sync,
        (queued as i64, queued as i64),
        "server usage after sync ({exited_ok} exited 0, {killed} killed)"
    );
    assert!(after_sync.1 >= exited_ok as i64 && after_sync.1 <= attempted as i64);
    let st = env.status().await;
    assert_eq!(st["pending_usage"].as_u64(), Some(0), "{st}");

    // A second sync changes nothing.
    let (code, out, err) = env.run_async(&["heartbeat"]).await;
    assert_eq!(code, 0, "heartbeat: {out} {err}");
    assert_eq!(server_usage(&data_dir, &fx.license), after_sync, "a second sync counted something again");
}
