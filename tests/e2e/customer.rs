//! The customer as an attacker, with nothing but the shipped binaries, a text editor and curl
//! (docs/SECURITY.md, "Threat model"): each test is one attack and the rule that stops it.

use std::path::Path;

use serde_json::{json, Value};
use tessera_test_support::{run_agent, vendor, TestServer};

const IDENTITY: (&str, &str) = ("TESSERA_AGENT_IDENTITY", "e2e-customer-machine-0001");

fn state(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The customer runs their own `tessera-server`, issues themselves a perpetual license for every feature of the
/// vendor's product id, and points the vendor's agent at its keys and URL. A vendor build trusts only the
/// keyset compiled into it: every way of passing another is refused, and the forged server's answers do not
/// verify. The same attack on a development build works — which is why it says what it is in every output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_build_trusts_only_its_compiled_in_keyset() {
    let real = vendor::server().await;
    let fx = vendor::fixture(&real, "Vendor", vendor::PRODUCT_ID, json!({})).await;
    let own = TestServer::start().await;
    let forged = vendor::fixture(
        &own,
        "Customer's own server",
        vendor::PRODUCT_ID,
        json!({"license_type": "PERPETUAL", "duration_days": null, "features": [{"id": "*"}]}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let own_keys = dir.path().join("own-keyset.json");
    std::fs::write(&own_keys, own.keyset().to_json()).unwrap();
    let own_keys = own_keys.display().to_string();
    let st = state(dir.path(), "vendor.db");
    let (own_url, real_url) = (own.url(), real.url());

    let run = |args: Vec<String>, env: Vec<(&'static str, String)>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).chain([IDENTITY]).collect();
            vendor::run_agent(&args, &env)
        })
    };
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // --keyset, or the environment variable, naming the customer's keys: refused before anything is read.
    for (extra, env) in
        [(vec!["--keyset", own_keys.as_str()], vec![]), (vec![], vec![("TESSERA_AGENT_KEYSET", own_keys.clone())])]
    {
        let mut a = args(&["--state", &st, "--server", &own_url]);
        a.extend(args(&extra));
        a.extend(args(&["activate", "--key", &forged.key]));
        let (code, out, err) = run(a, env).await.unwrap();
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("takes no --keyset"), "{err}");
        assert!(err.contains(vendor::SIGNING_KID), "names the keys it trusts: {err}");
    }
    // Another product id, or more clock tolerance than the build allows: refused too.
    let (code, _, err) =
        run(args(&["--state", &st, "--product", &uuid::Uuid::new_v4().to_string(), "status"]), vec![]).await.unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("licenses only that product"), "{err}");
    let (code, _, err) =
        run(args(&["--state", &st, "status"]), vec![("TESSERA_AGENT_CLOCK_TOLERANCE", "999999".into())]).await.unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("outside what this vendor build allows"), "{err}");

    // Pointed at the customer's server without a keyset: its answer is signed by a key the build does not know.
    let (code, out, err) =
        run(args(&["--state", &st, "--server", &own_url, "activate", "--key", &forged.key]), vec![]).await.unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("could not be trusted"), "{err}");
    let (code, out, _) = run(args(&["--state", &st, "check", "anything", "--json"]), vec![]).await.unwrap();
    assert_eq!(code, 1);
    assert_eq!(json_of(&out)["reason"], "NOT_ACTIVATED");

    // The vendor's own server: works, and every answer names the build.
    let (code, out, err) =
        run(args(&["--state", &st, "--server", &real_url, "activate", "--key", &fx.key]), vec![]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("development build"), "{err}");
    let (code, out, _) = run(args(&["--state", &st, "check", "export_pdf", "--json"]), vec![]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    let v = json_of(&out);
    assert_eq!(v["build"]["kind"], "vendor");
    assert_eq!(v["build"]["key_ids"][0], vendor::SIGNING_KID);
    let (_, out, _) = run(args(&["--state", &st, "check", "teleport"]), vec![]).await.unwrap();
    assert!(out.contains("NOT_ENTITLED"), "{out}");
    let (code, out, _) = run(args(&["--version"]), vec![]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("vendor build of Tessera e2e") && out.contains(vendor::SIGNING_KID), "{out}");
    let (_, out, _) = run(args(&["--state", &st, "status"]), vec![]).await.unwrap();
    assert!(out.contains("build:        vendor build"), "{out}");

    // The same attack on a development build succeeds: that build takes its keys from whoever runs it, and
    // says so on every run.
    let dev_state = state(dir.path(), "dev.db");
    let product = vendor::PRODUCT_ID.to_string();
    let dev = move |a: Vec<String>| {
        let mut full = vec!["--state".to_string(), dev_state.clone(), "--keyset".into(), own_keys.clone()];
        full.extend(["--product".to_string(), product.clone()]);
        full.extend(a);
        tokio::task::spawn_blocking(move || {
            run_agent(&full.iter().map(String::as_str).collect::<Vec<_>>(), &[IDENTITY])
        })
    };
    let (code, _, err) = dev(args(&["--server", &own_url, "activate", "--key", &forged.key])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("development build"), "{err}");
    let (code, out, err) = dev(args(&["check", "teleport", "--json"])).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["build"]["kind"], "development");
    assert!(err.contains("development build"), "{err}");
}

/// Eight processes of an application start at once on a machine that has never run the agent: all of them
/// get an answer (today most failed with "table device already exists" or a UNIQUE constraint error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_first_checks_at_once_on_a_new_state_file_all_answer() {
    let dir = tempfile::tempdir().unwrap();
    let keyset = dir.path().join("keyset.json");
    std::fs::write(&keyset, include_str!("../../keys/test/keyset.json")).unwrap();
    for round in 0..3 {
        let st = state(dir.path(), &format!("fresh-{round}.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (st, keyset, barrier) = (st.clone(), keyset.display().to_string(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let args =
                        ["--state", &st, "--keyset", &keyset, "--product", vendor::PRODUCT_ID, "check", "x", "--json"];
                    run_agent(&args, &[IDENTITY])
                })
            })
            .collect();
        for h in handles {
            let (code, out, err) = h.join().unwrap();
            assert_eq!(code, 1, "round {round}: denied, not an error: {out}{err}");
            assert_eq!(json_of(&out)["reason"], "NOT_ACTIVATED");
        }
        let (_, out, _) = run_agent(
            &[
                "--state",
                &st,
                "--keyset",
                &keyset.display().to_string(),
                "--product",
                vendor::PRODUCT_ID,
                "status",
                "--json",
            ],
            &[IDENTITY],
        );
        assert!(json_of(&out)["device_public_key"].as_str().is_some_and(|k| !k.is_empty()));
    }
}

/// Runs the vendor build under libfaketime (the wall clock shifted by `offset`, e.g. "-20m"); the boot clock
/// the agent also reads (`/proc/uptime`) is not shifted, as on a machine whose owner sets the clock.
fn vendor_agent_with_clock(offset: &str, args: &[&str]) -> (i32, String, String) {
    let faketime = ["/usr/bin/faketime", "/usr/local/bin/faketime"].into_iter().find(|p| Path::new(p).exists());
    let faketime = faketime.expect("this test needs libfaketime's `faketime` (Debian: apt-get install faketime)");
    let agent = vendor::agent_binary().display().to_string();
    let mut full = vec!["-f", offset, agent.as_str()];
    full.extend_from_slice(args);
    tessera_test_support::run_binary(Path::new(faketime), &full, &[IDENTITY, ("FAKETIME_DONT_FAKE_MONOTONIC", "1")])
}

/// The customer keeps the clock behind, inside the tolerance, so that a lease or license never runs out
/// offline (the old high-water mark only ever saw the held-back clock). Trusted time counts elapsed time on the
/// boot clock and checks decide at it: the lease ends on time, and holding the clock back further than the
/// tolerance is CLOCK_TAMPERED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_held_back_does_not_hold_back_the_lease() {
    let server = vendor::server().await;
    // The shortest lease the server allows, so the test can wait for it.
    let fx =
        vendor::fixture(&server, "Clock", vendor::PRODUCT_ID, json!({"heartbeat_interval_secs": 10, "lease_secs": 10}))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), "clock.db");
    let url = server.url();
    let (st2, key) = (st.clone(), fx.key.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        vendor::run_agent(&["--state", &st2, "--server", &url, "activate", "--key", &key, "--json"], &[IDENTITY])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let lease: chrono::DateTime<chrono::Utc> = json_of(&out)["lease_expires_at"].as_str().unwrap().parse().unwrap();
    drop(server); // offline from here on

    let check = |offset: &str| {
        let (code, out, err) = vendor_agent_with_clock(offset, &["--state", &st, "check", "export_pdf", "--json"]);
        assert!(code == 0 || code == 1, "{out}{err}");
        json_of(&out)["reason"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(check("-20m"), "VALID", "20 minutes behind is within the 30-minute tolerance, and the lease runs");
    while chrono::Utc::now() <= lease + chrono::Duration::seconds(1) {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(check("-20m"), "LEASE_EXPIRED", "the clock says the lease runs for 20 more minutes; it has ended");
    assert_eq!(check("+0"), "LEASE_EXPIRED");
    assert_eq!(check("-40m"), "CLOCK_TAMPERED", "beyond the tolerance");
    assert_eq!(check("-20m"), "LEASE_EXPIRED", "the budget is not spent by one look at a wrong clock");
}

/// A daemon process (vendor or development build) on a free loopback port, killed on drop.
struct Daemon {
    child: std::process::Child,
    url: String,
}

impl Daemon {
    async fn start(binary: &Path, args: &[&str]) -> Daemon {
        let port = tessera_test_support::free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(binary)
            .args(args)
            .args(["daemon", "--listen", &listen])
            .env(IDENTITY.0, IDENTITY.1)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://{listen}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while reqwest::get(format!("{url}/healthz")).await.map(|r| r.status().is_success()).ok() != Some(true) {
            assert!(std::time::Instant::now() < deadline, "the daemon did not start on {url}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Daemon { child, url }
    }

    /// Sends SIGTERM (what a service manager sends) and expects a clean exit within ten seconds.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "the daemon did not stop on SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn python_verify(daemon: &Daemon, keyset: &Path, product: &str, feature: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/verify_local_answer.py");
    let args = [
        script.display().to_string(),
        "--daemon".into(),
        daemon.url.clone(),
        "--keyset".into(),
        keyset.display().to_string(),
        "--product".into(),
        product.into(),
        "--feature".into(),
        feature.into(),
    ];
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("python3").args(&args).output())
        .await
        .unwrap()
        .expect("python3 must be installed (with the `cryptography` package: Debian python3-cryptography)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ModuleNotFoundError"), "install python3-cryptography: {stderr}");
    let v = json_of(stdout.trim());
    assert_eq!(out.status.success(), v["verified"] == true, "{stdout}{stderr}");
    v
}

/// An application that embeds the vendor's public key need not trust whatever answers on the daemon's port:
/// it asks with a challenge and verifies the answer and the vendor-signed evidence itself (here from Python
/// with `cryptography`, nothing of Tessera's). A daemon of the customer's own, backed by their own server,
/// answers "allowed" for everything and fails that verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_verifies_the_daemons_answers_with_the_vendor_key_alone() {
    let real = vendor::server().await;
    let fx = vendor::fixture(&real, "Vendor", vendor::PRODUCT_ID, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), "daemon.db");
    let (st2, url, key) = (st.clone(), real.url(), fx.key.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        vendor::run_agent(&["--state", &st2, "--server", &url, "activate", "--key", &key], &[IDENTITY])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    // The vendor's keyset as the application embeds it.
    let vendor_keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/test/keyset.json");

    let daemon = Daemon::start(&vendor::agent_binary(), &["--state", &st, "--server", &real.url()]).await;
    let v = python_verify(&daemon, &vendor_keys, vendor::PRODUCT_ID, "export_pdf").await;
    assert_eq!(
        (v["allowed"].clone(), v["usable"].clone(), v["feature_granted"].clone()),
        (json!(true), json!(true), json!(true)),
        "{v}"
    );
    assert_eq!(v["tampered_refused"].as_array().map(Vec::len), Some(4), "{v}");
    let v = python_verify(&daemon, &vendor_keys, vendor::PRODUCT_ID, "teleport").await;
    assert_eq!(
        (v["allowed"].clone(), v["reason"].clone(), v["feature_granted"].clone()),
        (json!(false), json!("NOT_ENTITLED"), json!(false)),
        "{v}"
    );
    // A bad challenge is a clear 400, not an unsigned answer.
    let r = reqwest::get(format!("{}/v1/check/export_pdf?challenge=short", daemon.url)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "INVALID_CHALLENGE");
    daemon.terminate();

    // The customer's own server and a development-build daemon that trusts it: every check "allowed".
    let own = TestServer::start().await;
    let forged = vendor::fixture(&own, "Own", vendor::PRODUCT_ID, json!({"features": [{"id": "*"}]})).await;
    let own_keys = dir.path().join("own.json");
    std::fs::write(&own_keys, own.keyset().to_json()).unwrap();
    let fake_state = state(dir.path(), "fake.db");
    let dev_args = |extra: &[&str]| {
        let mut a = vec!["--state".to_string(), fake_state.clone(), "--keyset".into(), own_keys.display().to_string()];
        a.extend(["--product".into(), vendor::PRODUCT_ID.into(), "--server".into(), own.url()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let activate = dev_args(&["activate", "--key", &forged.key]);
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        run_agent(&activate.iter().map(String::as_str).collect::<Vec<_>>(), &[IDENTITY])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let fake_args = dev_args(&[]);
    let fake = Daemon::start(
        &tessera_test_support::bin("tessera-agent"),
        &fake_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let r: Value = reqwest::get(format!("{}/v1/check/teleport", fake.url)).await.unwrap().json().await.unwrap();
    assert_eq!(r["allowed"], true, "the fake daemon says yes: {r}");
    let v = python_verify(&fake, &vendor_keys, vendor::PRODUCT_ID, "teleport").await;
    assert_eq!(v["verified"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not in the trusted keyset"), "{v}");
}

/// Deleting the usage rows of the state file to get the quota back: the totals that gate quotas come from the
/// last signed server answer, which the agent re-verifies at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_usage_rows_does_not_give_quota_back() {
    let server = TestServer::start().await;
    let fx = server.fixture("quota", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        tessera_test_support::agent_config(dir.path(), "quota", server.keyset(), fx.product, Some(&server.url()));
    let agent = tessera_agent::Agent::open(config.clone()).unwrap();
    agent.activate(&fx.key).await.unwrap();
    assert!(agent.try_consume("api_calls", 60).unwrap().allowed);
    let beat = agent.heartbeat().await.unwrap();
    assert_eq!(beat.usage_acknowledged, 1);
    assert_eq!(agent.check("api_calls").facts.remaining, Some(40));
    drop(agent);

    let db = rusqlite::Connection::open(&config.state_path).unwrap();
    assert_eq!(db.execute("DELETE FROM usage_totals", []).unwrap(), 1);
    drop(db);
    let agent = tessera_agent::Agent::open(config.clone()).unwrap();
    let d = agent.check("api_calls");
    assert_eq!((d.facts.used, d.facts.remaining), (Some(60), Some(40)), "{d:?}");
    assert!(!agent.try_consume("api_calls", 41).unwrap().allowed, "the quota is not back");
    assert!(agent.try_consume("api_calls", 40).unwrap().allowed);
}

async fn agent_on(args: Vec<String>, machine: &'static str) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vendor::run_agent(&args, &[("TESSERA_AGENT_IDENTITY", machine)])
    })
    .await
    .unwrap()
}

fn machine_args(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

async fn request_code(key: &str, st: String, machine: &'static str) -> String {
    let (code, out, err) =
        agent_on(machine_args(&["--state", &st, "request-code", "--key", key, "--json"]), machine).await;
    assert_eq!(code, 0, "{out}{err}");
    json_of(&out)["request_code"].as_str().unwrap().to_string()
}

async fn respond(server: &TestServer, key: &str, code: String) -> (reqwest::StatusCode, Value) {
    server
        .request(
            reqwest::Method::POST,
            "/v1/client/offline/respond",
            None,
            Some(json!({"license_key": key, "request_code": code})),
        )
        .await
}

/// Copying an offline-activated state file, deactivating the copy and handing in its receipt, to free the seat
/// while the original keeps working (then doing it again for every machine): the seat a receipt releases stays
/// counted until the released grant's lease would have ended, so there are never more working grants than
/// seats. A receipt from an older copy does not end a renewed grant either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_offline_state_cannot_free_a_seat_that_still_works() {
    let server = vendor::server().await;
    let fx = vendor::fixture(&server, "Copies", vendor::PRODUCT_ID, json!({"max_activations": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (original, copy, other) =
        (state(dir.path(), "original.db"), state(dir.path(), "copy.db"), state(dir.path(), "other.db"));
    // The original machine activates offline (self-service page with the license key).
    let (status, v) =
        respond(&server, &fx.key, request_code(&fx.key, original.clone(), "e2e-customer-machine-0001").await).await;
    assert!(status.is_success(), "{v}");
    let (code, out, err) = agent_on(
        machine_args(&["--state", &original, "apply-code", v["response_code"].as_str().unwrap()]),
        "e2e-customer-machine-0001",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // The copy (the same state file on a second machine) deactivates and hands in its receipt.
    std::fs::copy(&original, &copy).unwrap();
    let (code, out, err) =
        agent_on(machine_args(&["--state", &copy, "deactivate", "--offline", "--json"]), "e2e-customer-machine-0002")
            .await;
    assert_eq!(code, 0, "{out}{err}");
    let receipt = json_of(&out)["receipt_code"].as_str().unwrap().to_string();
    assert!(receipt.starts_with("RCT2-"), "{receipt}");
    let (status, v) = server
        .request(reqwest::Method::POST, "/v1/client/offline/receipt", None, Some(json!({"receipt_code": receipt})))
        .await;
    assert!(status.is_success(), "{v}");
    assert_eq!((v["freed"].as_bool(), v["release"].as_str()), (Some(true), Some("AFTER_LEASE")), "{v}");
    assert!(v["seat_held_until"].is_string(), "{v}");

    // The original still works (it cannot be told, and that is why the seat stays counted) ...
    let (code, out, err) =
        agent_on(machine_args(&["--state", &original, "check", "export_pdf"]), "e2e-customer-machine-0001").await;
    assert_eq!(code, 0, "{out}{err}");
    // ... so a third machine finds no seat, and neither does the original's key asking again.
    let (status, v) =
        respond(&server, &fx.key, request_code(&fx.key, other.clone(), "e2e-customer-machine-0003").await).await;
    assert_eq!((status.as_u16(), v["error"]["code"].as_str()), (409, Some("SEAT_LIMIT_REACHED")), "{v}");
    let (status, v) =
        respond(&server, &fx.key, request_code(&fx.key, original.clone(), "e2e-customer-machine-0001").await).await;
    assert_eq!((status.as_u16(), v["error"]["code"].as_str()), (409, Some("SEAT_LIMIT_REACHED")), "{v}");
    assert_eq!(server.license_json(&fx).await["seats_used"], 1);

    // Vendor staff can release it at once, with a reason (the 3 a.m. case: the customer's machine is gone).
    let acts = server.get(&format!("/v1/licenses/{}/activations", fx.license), &fx.token).await.1;
    let id = acts["items"][0]["id"].as_str().unwrap().to_string();
    let (status, v) =
        server.post(&format!("/v1/activations/{id}/release"), &fx.token, json!({"reason": "disk failed"})).await;
    assert!(status.is_success(), "{v}");
    let (status, v) =
        respond(&server, &fx.key, request_code(&fx.key, other.clone(), "e2e-customer-machine-0003").await).await;
    assert!(status.is_success(), "{v}");
}
