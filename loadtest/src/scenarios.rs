//! Server start-up, fixtures through the real admin API, and the scenarios.
//!
//! Request bodies (and the device signatures of heartbeats) are prepared before each scenario's clock starts,
//! so the measured window spends the shared CPU on the server, not on the client's cryptography.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::HeaderValue;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tessera_core::crypto::Domain;
use tessera_core::encoding::b64url;
use tessera_core::fingerprint::{Component, ComponentKind};
use tessera_core::SigningKey;
use tessera_server::{Config, RunningServer};

use crate::{baseline, drive, Args, Stats};

pub struct Servers {
    real: RunningServer,
    admin: String,
    baseline: SocketAddr,
    baseline_task: tokio::task::JoinHandle<()>,
    baseline_device: SigningKey,
}

impl Servers {
    pub async fn shutdown(self) {
        self.baseline_task.abort();
        self.real.shutdown().await;
    }
}

const BASELINE_DEVICE: [u8; 32] = [7; 32];

pub async fn start_servers(dir: &Path) -> anyhow::Result<Servers> {
    let mut config = Config::for_data_dir(dir);
    config.listen = "127.0.0.1:0".into();
    // The harness is one client address hammering one license: rate limits would measure themselves.
    config.rate_limits.per_ip_per_sec = 0.0;
    config.rate_limits.per_key_per_sec = 0.0;
    config.rate_limits.admin_per_ip_per_sec = 0.0;
    let real = tessera_server::start(config).await.context("starting tessera-server")?;
    let admin = real.admin_token.clone().context("a fresh data directory yields an admin token")?;
    let baseline_device = SigningKey::ed25519_from_bytes(&BASELINE_DEVICE);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let baseline = listener.local_addr()?;
    let router = baseline::router(baseline_device.verifying_key());
    let baseline_task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Servers { real, admin, baseline, baseline_task, baseline_device })
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body).send().await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }
}

/// Tenant, token, product, an unlimited-seat template and a license; returns the license key.
async fn fixture(api: &Api, admin: &str, seats: u32) -> anyhow::Result<String> {
    Ok(fixture_parts(api, admin, seats).await?.2)
}

/// As [`fixture`]; returns (tenant-admin token, license id, license key).
async fn fixture_parts(api: &Api, admin: &str, seats: u32) -> anyhow::Result<(String, String, String)> {
    let t = api.post("/v1/tenants", admin, json!({"name": format!("load-{}", uuid::Uuid::new_v4())})).await?;
    let tok =
        api.post("/v1/tokens", admin, json!({"name": "load", "role": "tenant-admin", "tenant_id": t["id"]})).await?;
    let token = tok["token"].as_str().context("token")?.to_string();
    let p = api.post("/v1/products", &token, json!({"name": "Load app"})).await?;
    let tp = api
        .post(
            "/v1/templates",
            &token,
            json!({"name": "load", "product_id": p["id"], "license_type": "SUBSCRIPTION",
                   "max_activations": seats, "duration_days": 365, "heartbeat_interval_secs": 3600,
                   "features": [{"id": "export_pdf"}, {"id": "api_calls", "limit_value": 1000000}]}),
        )
        .await?;
    let l = api.post("/v1/licenses", &token, json!({"template_id": tp["id"]})).await?;
    let id = l["id"].as_str().context("license id")?.to_string();
    Ok((token, id, l["license_key"].as_str().context("license key")?.to_string()))
}

/// Events in one `POST /v1/usage` of the ingestion scenario (the figure is for batches of 100).
pub const USAGE_BATCH: usize = 100;

/// A tenant with `n` licenses (the list scenarios' fixture); returns its tenant-admin token.
async fn many_licenses(api: &Api, admin: &str, n: usize) -> anyhow::Result<String> {
    let t = api.post("/v1/tenants", admin, json!({"name": format!("load-list-{}", uuid::Uuid::new_v4())})).await?;
    let tok =
        api.post("/v1/tokens", admin, json!({"name": "load", "role": "tenant-admin", "tenant_id": t["id"]})).await?;
    let token = tok["token"].as_str().context("token")?.to_string();
    let p = api.post("/v1/products", &token, json!({"name": "List app"})).await?;
    let tp = api
        .post(
            "/v1/templates",
            &token,
            json!({"name": "list", "product_id": p["id"], "license_type": "SUBSCRIPTION", "max_activations": 5,
                   "duration_days": 365, "features": [{"id": "export_pdf"}]}),
        )
        .await?;
    for _ in 0..n {
        api.post("/v1/licenses", &token, json!({"template_id": tp["id"]})).await?;
    }
    Ok(token)
}

/// Signs in to the console with `token` as a browser does (the sign-in page's CSRF value and cookie, then the
/// form); returns the session cookie.
async fn console_session(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<String> {
    let page = http.get(format!("{base}/console/sign-in")).send().await?;
    let pre = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next().filter(|c| c.starts_with("tessera_console_signin=")))
        .context("the sign-in page's cookie")?
        .to_string();
    let html = page.text().await?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the sign-in form's CSRF value")?
        .to_string();
    let r = http
        .post(format!("{base}/console/sign-in"))
        .header("cookie", pre)
        .form(&[("csrf", csrf.as_str()), ("token", token)])
        .send()
        .await?;
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next().filter(|c| c.starts_with("tessera_console=")))
        .map(str::to_string)
        .with_context(|| format!("console sign-in answered {} without a session", r.status()))
}

fn nonce(i: u64) -> String {
    b64url(&i.to_be_bytes())
}

fn activation_body(key: &str, device: &SigningKey, i: u64) -> Vec<u8> {
    let fingerprint: Vec<Component> = [ComponentKind::MachineId, ComponentKind::Mac, ComponentKind::Cpu]
        .into_iter()
        .map(|k| Component::hash_raw(k, b"load", &format!("{k:?}-{i}")))
        .collect();
    serde_json::to_vec(&json!({
        "license_key": key,
        "fingerprint": fingerprint,
        "device_public_key": b64url(&device.verifying_key().public_bytes()),
        "metadata": {"hostname": format!("load-{i}")},
        "nonce": nonce(i),
    }))
    .unwrap_or_default()
}

/// A pool of prepared requests, shared by the workers.
type Pool = Arc<Vec<(Bytes, Option<HeaderValue>)>>;

/// A prepared request: reference-counted, so sending one copies nothing on the client side.
fn item(body: Vec<u8>, signature: Option<String>) -> (Bytes, Option<HeaderValue>) {
    (Bytes::from(body), signature.map(|s| HeaderValue::from_str(&s).expect("base64url is a valid header value")))
}

/// A scenario's prepared requests and where it is in them (slices continue where the last one stopped, so a
/// "new device each time" pool is never replayed).
struct Load {
    url: Arc<String>,
    pool: Pool,
    next: Arc<AtomicU64>,
    /// `None`: POST of the pool's bodies; or a GET with these headers (the pool is unused).
    get: Option<Arc<Vec<(&'static str, String)>>>,
    /// Headers of every POST (the admin API's bearer token).
    headers: Arc<Vec<(&'static str, String)>>,
}

impl Load {
    fn new(url: String, pool: Pool) -> Load {
        Load { url: Arc::new(url), pool, next: Arc::new(AtomicU64::new(0)), get: None, headers: Arc::default() }
    }

    fn with_headers(self, headers: Vec<(&'static str, String)>) -> Load {
        Load { headers: Arc::new(headers), ..self }
    }

    fn get(url: String, headers: Vec<(&'static str, String)>) -> Load {
        let pool: Pool = Arc::new(vec![item(Vec::new(), None)]);
        Load { get: Some(Arc::new(headers)), ..Load::new(url, pool) }
    }
}

async fn run_slice(name: &str, args: &Args, http: &reqwest::Client, load: &Load, slice: Duration) -> Stats {
    let (http, url, pool, next) = (http.clone(), load.url.clone(), load.pool.clone(), load.next.clone());
    let get = load.get.clone();
    let headers = load.headers.clone();
    drive(name, args.connections, slice, move |_, _| {
        let http = http.clone();
        let url = url.clone();
        let get = get.clone();
        let headers = headers.clone();
        let i = next.fetch_add(1, Ordering::Relaxed);
        let (body, sig) = pool[(i as usize) % pool.len()].clone();
        async move {
            let mut req = match &get {
                Some(headers) => headers.iter().fold(http.get(url.as_str()), |r, (k, v)| r.header(*k, v)),
                None => headers
                    .iter()
                    .fold(http.post(url.as_str()), |r, (k, v)| r.header(*k, v))
                    .header("content-type", "application/json")
                    .body(body),
            };
            if let Some(sig) = sig {
                req = req.header("x-tessera-signature", sig);
            }
            let r = req.send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let bytes = r.bytes().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)))
            }
        }
    })
    .await
}

/// Runs the scenario in `args.rounds` slices, each right after a baseline slice of the same length; returns the
/// baseline's slices and the scenario's, each merged, the scenario carrying its paired baseline throughput.
async fn interleaved(name: &str, args: &Args, http: &reqwest::Client, base: &Load, load: &Load) -> (Stats, Stats) {
    let rounds = args.rounds.max(1);
    let slice = Duration::from_secs(args.duration) / rounds;
    let (mut b, mut s): (Option<Stats>, Option<Stats>) = (None, None);
    for _ in 0..rounds {
        let bs = run_slice(BASELINE, args, http, base, slice).await;
        b = Some(match b {
            Some(x) => x.merge(bs),
            None => bs,
        });
        let ss = run_slice(name, args, http, load, slice).await;
        s = Some(match s {
            Some(x) => x.merge(ss),
            None => ss,
        });
    }
    let (b, mut s) = (b.expect("at least one round"), s.expect("at least one round"));
    s.paired_baseline_rps = Some(b.rps());
    (b, s)
}

const BASELINE: &str = "baseline (verify Ed25519 + sign JSON, no DB)";

pub async fn run_all(args: &Args, servers: &Servers) -> anyhow::Result<Vec<Stats>> {
    // No redirects: a console page that sends the client to sign in must count as a failure, not as a page.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(args.connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let api = Api { http: http.clone(), base: servers.real.url() };
    let per_run = |rate: u64| (rate * args.duration).max(1000) as usize;
    let mut pairs: Vec<(Stats, Stats)> = Vec::new();

    eprintln!("baseline: preparing signed bodies");
    let pool: Pool = Arc::new(
        (0..20_000u64)
            .map(|i| {
                let (b, s) = baseline::request(&servers.baseline_device, i);
                item(b, Some(s))
            })
            .collect(),
    );
    let base = Load::new(format!("http://{}{}", servers.baseline, baseline::PATH), pool);
    let run = |name: &'static str, load: Load| {
        let (http, base) = (http.clone(), &base);
        async move { interleaved(name, args, &http, base, &load).await }
    };

    let mut list_token: Option<String> = None;
    for scenario in &args.scenarios {
        match scenario.as_str() {
            "validate" => {
                let key = fixture(&api, &servers.admin, 10).await?;
                let pool: Pool = Arc::new(
                    (0..20_000u64)
                        .map(|i| {
                            let b = json!({"license_key": key, "feature": "export_pdf", "nonce": nonce(i)});
                            item(serde_json::to_vec(&b).unwrap_or_default(), None)
                        })
                        .collect(),
                );
                let url = format!("{}/v1/client/validate", servers.real.url());
                pairs.push(run("validate", Load::new(url, pool)).await);
            }
            "activate" => {
                let key = fixture(&api, &servers.admin, 0).await?;
                eprintln!("activate: preparing device keys");
                let n = per_run(9_000);
                let pool: Pool = Arc::new(
                    (0..n as u64)
                        .map(|i| {
                            let mut seed = [0u8; 32];
                            seed[..8].copy_from_slice(&i.to_be_bytes());
                            seed[8] = 0xac;
                            item(activation_body(&key, &SigningKey::ed25519_from_bytes(&seed), i), None)
                        })
                        .collect(),
                );
                let url = format!("{}/v1/client/activate", servers.real.url());
                pairs.push(run("activate (new device each, synchronous=FULL)", Load::new(url, pool)).await);
            }
            "heartbeat" => {
                let key = fixture(&api, &servers.admin, 0).await?;
                let devices = args.connections * 4;
                eprintln!("heartbeat: activating {devices} devices and signing bodies");
                let mut activated = Vec::with_capacity(devices);
                for d in 0..devices as u64 {
                    let mut seed = [0u8; 32];
                    seed[..8].copy_from_slice(&d.to_be_bytes());
                    seed[8] = 0x4b;
                    let device = SigningKey::ed25519_from_bytes(&seed);
                    let body = activation_body(&key, &device, 1_000_000 + d);
                    let r = http
                        .post(format!("{}/v1/client/activate", servers.real.url()))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        bail!("activation for the heartbeat fixture failed: {}", r.text().await?);
                    }
                    let v: Value = r.json().await?;
                    let signed = v["signed"].as_str().context("signed response")?;
                    let env = tessera_core::envelope::Envelope::from_compact(signed)?;
                    let payload: Value =
                        serde_json::from_slice(env.open(&servers.real.public_keyset(), Domain::ServerResponse)?)?;
                    let result = &payload["result"];
                    let id = result["activation_id"].as_str().context("activation id")?.to_string();
                    // A real agent tells the server what it holds (PROTOCOL.md, heartbeat `held`).
                    let digest = |k: &str| {
                        use sha2::Digest as _;
                        result[k].as_str().map(|t| hex::encode(sha2::Sha256::digest(t)))
                    };
                    let held =
                        json!({"license_file": digest("license_file"), "activation_token": digest("activation_token")});
                    activated.push((id, device, held));
                }
                let path = "/v1/client/heartbeat";
                // The bodies are signed ahead, so what they say the device holds must stay what the server would
                // send: a first heartbeat that answers with a token or file (the server re-signed one) means
                // every measured heartbeat would carry it again, which no agent sees.
                for (i, (id, device, held)) in activated.iter().enumerate() {
                    let n = nonce(u64::MAX - i as u64);
                    let body = serde_json::to_vec(&json!({
                        "activation_id": id, "nonce": n, "sent_at": chrono::Utc::now(), "held": held,
                    }))?;
                    let sig = device.sign(Domain::DeviceMessage, &[path.as_bytes()], &body);
                    let r = http
                        .post(format!("{}{path}", servers.real.url()))
                        .header("content-type", "application/json")
                        .header("x-tessera-signature", b64url(&sig))
                        .body(body)
                        .send()
                        .await?;
                    let v: Value = r.json().await?;
                    let env = tessera_core::envelope::Envelope::from_compact(v["signed"].as_str().context("signed")?)?;
                    let payload: Value =
                        serde_json::from_slice(env.open(&servers.real.public_keyset(), Domain::ServerResponse)?)?;
                    let result = &payload["result"];
                    if !result["activation_token"].is_null() || !result["license_file"].is_null() {
                        bail!("the first heartbeat re-sent what the device holds; the prepared bodies would measure that: {result}");
                    }
                }
                // Bodies may repeat (usage-free heartbeats are idempotent; the replay window is 10 minutes).
                let n = 20_000;
                let now = chrono::Utc::now();
                let pool: Pool = Arc::new(
                    (0..n as u64)
                        .map(|i| {
                            let (id, device, held) = &activated[(i as usize) % activated.len()];
                            let body = serde_json::to_vec(&json!({
                                "activation_id": id, "nonce": nonce(i), "sent_at": now, "held": held,
                            }))
                            .unwrap_or_default();
                            let sig = device.sign(Domain::DeviceMessage, &[path.as_bytes()], &body);
                            item(body, Some(b64url(&sig)))
                        })
                        .collect(),
                );
                let url = format!("{}{path}", servers.real.url());
                pairs.push(run("heartbeat (device-signed)", Load::new(url, pool)).await);
            }
            "usage-ingest" => {
                // Batches of 100 new events (fresh ids: every one is recorded, none a duplicate) for one license's
                // metered feature, as a SaaS backend sends them; durable like every write (one transaction each).
                let (token, license, _) = fixture_parts(&api, &servers.admin, 1).await?;
                let n = per_run(6_000);
                eprintln!("usage-ingest: preparing {n} batches of {USAGE_BATCH} events");
                let now = chrono::Utc::now();
                let pool: Pool = Arc::new(
                    (0..n)
                        .map(|_| {
                            let events: Vec<Value> = (0..USAGE_BATCH)
                                .map(|_| {
                                    json!({"id": uuid::Uuid::now_v7(), "license_id": license,
                                                "feature": "export_pdf", "amount": 1, "recorded_at": now})
                                })
                                .collect();
                            item(serde_json::to_vec(&json!({"events": events})).unwrap_or_default(), None)
                        })
                        .collect(),
                );
                let url = format!("{}/v1/usage", servers.real.url());
                let load = Load::new(url, pool).with_headers(vec![("authorization", format!("Bearer {token}"))]);
                pairs.push(run("usage ingest (batches of 100 events)", load).await);
                let sent = pairs.last().map_or(0, |(_, s)| s.ok) as usize;
                if sent > n {
                    bail!("usage-ingest sent {sent} batches from a pool of {n}: repeats would measure duplicates");
                }
            }
            "licenses-api" | "licenses-console" => {
                // 1,000 licenses in one tenant; a page of 100 of them, as JSON or as the console's page.
                if list_token.is_none() {
                    eprintln!("licenses: creating 1,000 licenses");
                    list_token = Some(many_licenses(&api, &servers.admin, 1000).await?);
                }
                let token = list_token.clone().context("list fixture")?;
                let base_url = servers.real.url();
                if scenario == "licenses-api" {
                    let url = format!("{base_url}/v1/licenses?limit=100");
                    let load = Load::get(url, vec![("authorization", format!("Bearer {token}"))]);
                    pairs.push(run("licenses: API page of 100 (of 1,000)", load).await);
                } else {
                    let cookie = console_session(&http, &base_url, &token).await?;
                    // What is measured is the real list: a hundred rows and a next page.
                    let page =
                        http.get(format!("{base_url}/console/licenses")).header("cookie", &cookie).send().await?;
                    let html = page.text().await?;
                    if html.matches("<tr>").count() != 101 || !html.contains("Next page") {
                        bail!("the console's license page is not the list of 100 with a next page");
                    }
                    let load = Load::get(format!("{base_url}/console/licenses"), vec![("cookie", cookie)]);
                    pairs.push(run("licenses: console page of 100 (of 1,000)", load).await);
                }
            }
            other => {
                bail!(
                    "unknown scenario {other:?}: use validate, activate, heartbeat, licenses-api, licenses-console, \
                     usage-ingest"
                )
            }
        }
    }
    // First row: every baseline slice together; then each scenario with the baseline slices paired with it.
    let mut baseline: Option<Stats> = None;
    let mut results = Vec::with_capacity(pairs.len() + 1);
    for (b, s) in pairs {
        baseline = Some(match baseline {
            Some(x) => x.merge(b),
            None => b,
        });
        results.push(s);
    }
    results.insert(0, baseline.context("no scenario ran")?);
    Ok(results)
}
