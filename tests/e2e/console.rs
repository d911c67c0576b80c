//! The browser console in a real browser: Debian's chromium, driven through chromedriver (WebDriver), against the
//! real server on a loopback port, with the real agent library making and applying the offline codes.
//! Screenshots of the main screens are written to `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;
use tessera_agent::Agent;
use tessera_test_support::{agent_config, free_port, Fixture, TestServer};

/// chromedriver and a headless chromium for one test; both end with it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromedriver() -> PathBuf {
    let path = std::env::var_os("CHROMEDRIVER").map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver), \
         as .ci/run does, or set CHROMEDRIVER",
        path.display()
    );
    path
}

async fn browser() -> Browser {
    let port = free_port();
    let driver = Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display()),
        ]}),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Browser { client, driver, _profile: profile },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start a browser: {last:?}");
}

fn shot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    std::fs::write(shot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Clicks what navigates and returns once the next page has replaced this one: a form's answer may still be on its
/// way when the click returns, and the old page can hold what the next step looks for.
async fn follow(c: &Client, what: Locator<'_>) {
    // The current document carries a mark; the next one does not. Scripts may fail while the page changes over.
    c.execute("window.__tesseraOld = true", vec![]).await.unwrap();
    c.find(what).await.unwrap_or_else(|e| panic!("{what:?}: {e}")).click().await.unwrap();
    let loaded = "return window.__tesseraOld === undefined && document.readyState === 'complete'";
    for _ in 0..400 {
        if let Ok(serde_json::Value::Bool(true)) = c.execute(loaded, vec![]).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the page did not change within 10 s of clicking {what:?}");
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

async fn sign_in(c: &Client, server: &TestServer, token: &str) {
    c.goto(&format!("{}/console", server.url())).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/console/sign-in"), "signed out: the sign-in page");
    c.find(Locator::Css("#token")).await.unwrap().send_keys(token).await.unwrap();
    follow(c, Locator::Css("#token-form button[type=submit]")).await;
    c.wait().for_element(Locator::Css("nav[aria-label=Main]")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/console/overview");
}

async fn sign_out(c: &Client) {
    follow(c, Locator::Css(".who button")).await;
    c.wait().for_element(Locator::Css("#token")).await.unwrap();
}

/// The session cookie, as the browser holds it (HttpOnly, so only WebDriver sees it).
async fn session_cookie(c: &Client) -> String {
    let cookie = c.get_named_cookie("tessera_console").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true), "the session cookie is HttpOnly");
    assert_eq!(cookie.same_site().map(|s| format!("{s:?}")).as_deref(), Some("Strict"));
    format!("tessera_console={}", cookie.value())
}

async fn token(server: &TestServer, fx: &Fixture, role: &str) -> String {
    let v = server
        .ok("/v1/tokens", &server.admin.clone(), json!({"name": role, "role": role, "tenant_id": fx.tenant}))
        .await;
    v["token"].as_str().unwrap().to_string()
}

async fn seats_used(server: &TestServer, fx: &Fixture) -> usize {
    let (s, v) = server.get(&format!("/v1/licenses/{}/activations", fx.license), &fx.token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().iter().filter(|a| a["status"] == "ACTIVE").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_answers_a_real_request_code_in_the_browser_and_forged_or_unauthorised_posts_change_nothing() {
    let server = TestServer::start().await;
    let fx = server.fixture("console", json!({"max_activations": 3})).await;
    let support = token(&server, &fx, "support").await;
    let read_only = token(&server, &fx, "read-only").await;
    let b = browser().await;
    let c = &b.client;

    // A wrong token: the error beside the field, in the API's words.
    c.goto(&format!("{}/console/sign-in", server.url())).await.unwrap();
    c.find(Locator::Css("#token")).await.unwrap().send_keys("tsa_not-a-real-token-at-all").await.unwrap();
    follow(c, Locator::Css("#token-form button[type=submit]")).await;
    let e = text(c, "#token-error").await;
    assert!(e.contains("not valid"), "{e}");

    // Support signs in: the overview counts the fixture's license; the licenses page finds it by key.
    sign_in(c, &server, &support).await;
    let tiles = text(c, "ul.tiles").await;
    assert!(tiles.contains("1 active"), "{tiles}");
    assert!(text(c, "#seat-totals").await.starts_with("0 in use of 3"));
    screenshot(c, "overview").await;
    // Found by key through a posted form: the key never appears in a URL.
    follow(c, Locator::Css("nav a[href='/console/licenses']")).await;
    c.wait().for_element(Locator::Css("#q")).await.unwrap().send_keys(&fx.key).await.unwrap();
    follow(c, Locator::XPath("//button[.='Find']")).await;
    c.wait().for_element(Locator::Css("table tbody a")).await.unwrap();
    assert!(!c.current_url().await.unwrap().as_str().contains(&fx.key), "no key in the URL");
    let row = text(c, "table tbody").await;
    assert!(row.contains("ACTIVE") && row.contains("0 of 3"), "{row}");
    follow(c, Locator::Css("table tbody a")).await;
    c.wait().for_element(Locator::Css("dl.terms")).await.unwrap();
    let terms = text(c, "dl.terms").await;
    assert!(terms.contains(&fx.license), "{terms}");
    screenshot(c, "license").await;

    // The offline desk: a request code made by the real agent on an "air-gapped" machine.
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::open(agent_config(dir.path(), "console-air", server.keyset(), fx.product, None)).unwrap();
    let request = agent.request_code(&fx.key).unwrap();
    follow(c, Locator::Css("nav a[href='/console/offline']")).await;
    c.wait().for_element(Locator::Css("#request_code")).await.unwrap();
    // A typo in the code: refused beside the field, naming the group, nothing issued.
    let mut typo: Vec<char> = request.chars().collect();
    let at = typo.iter().rposition(|ch| ch.is_ascii_alphanumeric()).unwrap();
    typo[at] = if typo[at] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    c.find(Locator::Css("#request_code")).await.unwrap().send_keys(&typo).await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    c.wait().for_element(Locator::Css("#request-error")).await.unwrap();
    let e = text(c, "#request-error").await;
    assert!(e.to_lowercase().contains("group"), "a typo names its group: {e}");
    assert_eq!(seats_used(&server, &fx).await, 0);
    let field = c.find(Locator::Css("#request_code")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(&request).await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    c.wait().for_element(Locator::Css("#response-code")).await.unwrap();
    let response = c.find(Locator::Css("#response-code")).await.unwrap().prop("value").await.unwrap().unwrap();
    assert!(response.starts_with("RSP1-"), "{response}");
    assert!(c.find(Locator::Css(".qr svg")).await.is_ok(), "a QR code of the response");
    let summary = text(c, "dl.terms").await;
    assert!(summary.contains("1 of 3 in use"), "{summary}");
    screenshot(c, "offline-desk").await;
    agent.apply_code(&response).unwrap();
    assert!(agent.check_license().allowed, "the response code from the browser activates the air-gapped agent");
    assert_eq!(seats_used(&server, &fx).await, 1);

    // The answer is in the audit log under the console user.
    let (s, v) = server.get("/v1/audit?limit=1000", &server.admin.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let answered =
        v["items"].as_array().unwrap().iter().filter(|e| e["action"] == "offline.respond").collect::<Vec<_>>();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert!(answered[0]["actor"].as_str().unwrap().starts_with("console:token:"), "{answered:?}");

    // A forged form: the session cookie without the CSRF value (another site's page posting on the user's behalf).
    let cookie = session_cookie(c).await;
    let other = agent_config(dir.path(), "console-forged", server.keyset(), fx.product, None);
    let forged_request = Agent::open(other).unwrap().request_code(&fx.key).unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let post_from = |origin: Option<String>, form: Vec<(&'static str, String)>, cookie: String| {
        let http = http.clone();
        let url = format!("{}/console/offline", server.url());
        async move {
            let mut r = http.post(url).header("cookie", cookie).form(&form);
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            r.send().await.unwrap()
        }
    };
    let post = |form, cookie| post_from(None, form, cookie);
    let r = post(vec![("request_code", forged_request.clone())], cookie.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("This form was refused"));
    let r = post(vec![("csrf", "0".repeat(64)), ("request_code", forged_request.clone())], cookie.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(seats_used(&server, &fx).await, 1, "a forged form changes nothing");
    // The same in the browser: a page script that strips the CSRF field before posting.
    c.goto(&format!("{}/console/offline", server.url())).await.unwrap();
    c.execute("document.querySelector('main form input[name=csrf]').remove()", vec![]).await.unwrap();
    c.find(Locator::Css("#request_code")).await.unwrap().send_keys(&forged_request).await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    c.wait().for_element(Locator::XPath("//h1[contains(., 'refused')]")).await.unwrap();
    assert_eq!(seats_used(&server, &fx).await, 1);
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    sign_out(c).await;
    let r = post(vec![("request_code", forged_request.clone())], cookie).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "a signed-out session is gone");

    // A read-only user does not see the desk, and is refused when it posts a well-formed form anyway.
    sign_in(c, &server, &read_only).await;
    let nav = text(c, "nav[aria-label=Main]").await;
    assert!(!nav.contains("Offline desk"), "{nav}");
    c.goto(&format!("{}/console/offline", server.url())).await.unwrap();
    assert!(text(c, "p.error").await.contains("read-only"));
    let cookie = session_cookie(c).await;
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    let csrf = c.find(Locator::Css(".who input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let r = post(vec![("csrf", csrf), ("request_code", forged_request.clone())], cookie).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let why = r.text().await.unwrap();
    assert!(why.contains("may not") && !why.contains("This form was refused"), "refused for the role: {why}");
    assert_eq!(seats_used(&server, &fx).await, 1, "a read-only user's post changes nothing");
    // The read-only user sees the license but not the emergency codes its role may not read, and is told why.
    c.goto(&format!("{}/console/licenses/{}", server.url(), fx.license)).await.unwrap();
    let note = text(c, "section[aria-labelledby=emergency] p").await;
    assert!(note.contains("read-only"), "{note}");

    // A well-formed form posted from another site's page (its Origin) is refused, CSRF value and all.
    sign_out(c).await;
    sign_in(c, &server, &support).await;
    let cookie = session_cookie(c).await;
    let csrf = c.find(Locator::Css(".who input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let r = post_from(
        Some("http://evil.example".to_string()),
        vec![("csrf", csrf.clone()), ("request_code", forged_request.clone())],
        cookie.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(seats_used(&server, &fx).await, 1, "a cross-site post changes nothing");
    // The same form from the console's own origin goes through (the check is not refusing everything).
    let r = post_from(Some(server.url()), vec![("csrf", csrf), ("request_code", forged_request)], cookie).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(seats_used(&server, &fx).await, 2);

    // Another tenant's license, by id in the URL or by key in the form: not found for this tenant's support user.
    let other = server.fixture("console-other", json!({})).await;
    let r = http
        .get(format!("{}/console/licenses/{}", server.url(), other.license))
        .header("cookie", session_cookie(c).await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!r.text().await.unwrap().contains(&other.license), "nothing of the other tenant's license is shown");
    c.goto(&format!("{}/console/licenses", server.url())).await.unwrap();
    c.wait().for_element(Locator::Css("#q")).await.unwrap().send_keys(&other.key).await.unwrap();
    follow(c, Locator::XPath("//button[.='Find']")).await;
    c.wait().for_element(Locator::Css("#search-error")).await.unwrap();
    assert!(c.find(Locator::Css("table tbody")).await.is_err(), "no row for another tenant's key");

    // The last seat taken online, and a fourth device refused: the overview counts the seats and shows the refusal.
    for (name, ok) in [("console-third", true), ("console-fourth", false)] {
        let online =
            Agent::open(agent_config(dir.path(), name, server.keyset(), fx.product, Some(&server.url()))).unwrap();
        assert_eq!(online.activate(&fx.key).await.is_ok(), ok, "{name}");
    }
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    assert!(text(c, "#seat-totals").await.starts_with("3 in use of 3"));
    let refused = text(c, "section[aria-labelledby=refusals] tbody").await;
    assert!(refused.contains("client.activate") && refused.contains("SEAT_LIMIT_REACHED"), "{refused}");
    assert!(text(c, "section[aria-labelledby=events] tbody").await.contains("offline.respond"));

    // By keyboard: the first Tab lands on the link that skips to the page.
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    c.find(Locator::Css("body")).await.unwrap().send_keys("\u{E004}").await.unwrap();
    let focused = c.execute("return document.activeElement.textContent", vec![]).await.unwrap();
    assert_eq!(focused, json!("Skip to the page"));

    // A phone-width window still shows the navigation and the page.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    assert!(c.find(Locator::Css("nav a[href='/console/licenses']")).await.unwrap().is_displayed().await.unwrap());
    screenshot(c, "overview-phone").await;
}

/// An idle session ends, and a revoked token ends its sessions at the next page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_revoked_tokens_sign_out() {
    let server = TestServer::start().await;
    let fx = server.fixture("console-idle", json!({})).await;
    let support = token(&server, &fx, "support").await;
    let b = browser().await;
    let c = &b.client;
    sign_in(c, &server, &support).await;
    server.running().console_sessions().age_all(tessera_server::console::IDLE);
    c.goto(&format!("{}/console/licenses", server.url())).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().query(), Some("why=expired"));
    assert!(text(c, "p.note").await.contains("30 minutes"));

    sign_in(c, &server, &support).await;
    let (s, v) = server.get("/v1/tokens", &server.admin.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["items"].as_array().unwrap().iter().find(|t| t["name"] == "support").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/tokens/{id}", server.url()))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().query(), Some("why=revoked"));
}

/// Sets a field's value by script, as text and without `required`, so a test can send what a careless user or a
/// hand-made request would (a browser's date field sends no malformed date).
async fn set_field(c: &Client, id: &str, value: &str) {
    let js = "const e = document.getElementById(arguments[0]); e.removeAttribute('required'); \
              if (e.tagName === 'INPUT') { e.type = 'text'; } e.value = arguments[1];";
    c.execute(js, vec![json!(id), json!(value)]).await.unwrap();
}

async fn license_status(server: &TestServer, fx: &Fixture) -> String {
    server.license_json(fx).await["status"].as_str().unwrap().to_string()
}

/// Staff at work on a license in the browser: an emergency code from the desk, bound by the device's request code
/// alone, opens the real agent and shows in the license's list, its history and the audit log; suspend and
/// reinstate go through a confirmation; a revoke without the typed key hint changes nothing; a device is
/// deactivated; the license file downloads; the chain verifies. A read-only user sees none of the actions and its
/// well-formed posts are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_issue_an_emergency_code_and_act_on_a_license_read_only_users_cannot() {
    let server = TestServer::start().await;
    let emergency = json!({"enabled": true, "validity_hours": 24, "max_per_30_days": 3, "scope": "ALL_FEATURES",
                           "require_binding": true});
    let fx = server.fixture("console-actions", json!({"max_activations": 3, "emergency": emergency})).await;
    let support = token(&server, &fx, "support").await;
    let read_only = token(&server, &fx, "read-only").await;
    let b = browser().await;
    let c = &b.client;
    let dir = tempfile::tempdir().unwrap();

    // The emergency desk: only the device's request code; the reason is mandatory.
    let air = Agent::open(agent_config(dir.path(), "console-emergency", server.keyset(), fx.product, None)).unwrap();
    let request = air.request_code(&fx.key).unwrap();
    sign_in(c, &server, &support).await;
    follow(c, Locator::Css("nav a[href='/console/emergency']")).await;
    c.find(Locator::Css("#request_code")).await.unwrap().send_keys(&request).await.unwrap();
    set_field(c, "reason", "  ").await;
    follow(c, Locator::Css("main form button[type=submit]")).await;
    let e = text(c, "#reason-error").await;
    assert!(e.contains("reason is required"), "{e}");
    let (_, listed) = server.get(&format!("/v1/licenses/{}/emergency-codes", fx.license), &fx.token).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "nothing issued without a reason");
    c.find(Locator::Css("#reason"))
        .await
        .unwrap()
        .send_keys("license server down after a firewall change")
        .await
        .unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    let code = c.find(Locator::Css("#emergency-code")).await.unwrap().prop("value").await.unwrap().unwrap();
    assert!(code.starts_with("EMG1-"), "{code}");
    assert!(text(c, "#left").await.starts_with("2 "), "3 a window by default, one used");
    assert!(c.find(Locator::Css(".qr svg")).await.is_ok());
    screenshot(c, "emergency-desk").await;
    air.apply_code_with_key(&code, Some(&fx.key)).unwrap();
    assert_eq!(
        air.check("export_pdf").reason,
        tessera_core::Reason::EmergencyAccess,
        "the desk's code opens the agent"
    );
    // Reloading the page neither issues another code nor shows this one again.
    c.refresh().await.unwrap();
    assert!(text(c, "h1").await.contains("Already shown"));
    assert!(!c.source().await.unwrap().contains(&code));
    // In the license's list and history, and in the audit log under the console user.
    c.goto(&format!("{}/console/licenses/{}", server.url(), fx.license)).await.unwrap();
    let codes = c.find_all(Locator::Css("section[aria-labelledby=emergency] tbody tr")).await.unwrap();
    assert_eq!(codes.len(), 1, "one code issued, however often the page was loaded");
    let issued = text(c, "section[aria-labelledby=emergency] tbody").await;
    assert!(issued.contains("firewall change") && issued.contains("console:token:"), "{issued}");
    assert!(text(c, "section[aria-labelledby=history]").await.contains("emergency.issue"));
    c.goto(&format!("{}/console/audit", server.url())).await.unwrap();
    assert!(text(c, "table.audit tbody").await.contains("license.create"), "the unfiltered log has the fixture's");
    c.goto(&format!("{}/console/audit?action=emergency.", server.url())).await.unwrap();
    let rows = text(c, "table.audit tbody").await;
    assert!(rows.contains("emergency.issue") && rows.contains("console:token:"), "{rows}");
    assert!(!rows.contains("license.create"), "filtered by action: {rows}");
    // Bad filters: a date no log can hold, a range backwards, another tenant: refused beside the field.
    c.goto(&format!("{}/console/audit?to=%2B262143-12-31", server.url())).await.unwrap();
    assert!(text(c, "#to-error").await.contains("YYYY-MM-DD"));
    c.goto(&format!("{}/console/audit?from=2026-12-02&to=2026-12-01", server.url())).await.unwrap();
    assert!(text(c, "#to-error").await.contains("on or after"));
    let other = server.fixture("console-actions-other", json!({})).await;
    c.goto(&format!("{}/console/audit?tenant_id={}", server.url(), other.tenant)).await.unwrap();
    assert!(text(c, "p.error").await.contains("not found"), "a support user names no other tenant");
    // Another tenant's license on the desk, by key or by id: not found, nothing issued.
    follow(c, Locator::Css("nav a[href='/console/emergency']")).await;
    c.find(Locator::Css("#license")).await.unwrap().send_keys(&other.key).await.unwrap();
    c.find(Locator::Css("#reason")).await.unwrap().send_keys("cross-tenant attempt").await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "#license-error").await.contains("not found"));
    c.goto(&format!("{}/console/emergency?license={}", server.url(), other.license)).await.unwrap();
    assert!(text(c, "#license-error").await.contains("not found"));
    c.goto(&format!("{}/console/emergency?license={}", server.url(), fx.key)).await.unwrap();
    assert!(text(c, "#license-error").await.contains("license's page"), "a key in a URL is not taken");
    let (_, listed) = server.get(&format!("/v1/licenses/{}/emergency-codes", other.license), &other.token).await;
    assert!(listed["items"].as_array().unwrap().is_empty());
    // Support blocks a device but may not unblock (an admin's decision): no Unblock button.
    c.goto(&format!("{}/console/security", server.url())).await.unwrap();
    c.find(Locator::Css("#device_public_key"))
        .await
        .unwrap()
        .send_keys(&tessera_core::encoding::b64url(&[7u8; 32]))
        .await
        .unwrap();
    c.find(Locator::Css("#block-reason")).await.unwrap().send_keys("shared on a forum").await.unwrap();
    follow(c, Locator::XPath("//button[.='Block']")).await;
    assert!(text(c, "section[aria-labelledby=blocks] table").await.contains("shared on a forum"));
    assert!(c.find(Locator::XPath("//button[.='Unblock']")).await.is_err(), "support sees no Unblock");
    sign_out(c).await;

    // A tenant admin suspends and reinstates, each behind a confirmation page.
    sign_in(c, &server, &fx.token).await;
    let page = format!("{}/console/licenses/{}", server.url(), fx.license);
    c.goto(&page).await.unwrap();
    follow(c, Locator::XPath("//a[starts-with(., 'Suspend')]")).await;
    assert_eq!(license_status(&server, &fx).await, "ACTIVE", "the confirmation page changes nothing");
    c.find(Locator::Css("#reason")).await.unwrap().send_keys("unpaid invoice").await.unwrap();
    screenshot(c, "license-suspend").await;
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "#done").await.contains("suspended"));
    assert_eq!(license_status(&server, &fx).await, "SUSPENDED");
    follow(c, Locator::XPath("//a[starts-with(., 'Reinstate')]")).await;
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert_eq!(license_status(&server, &fx).await, "ACTIVE");
    // Renewing with a date that is no date, then by days.
    let expires = server.license_json(&fx).await["expires_at"].clone();
    follow(c, Locator::XPath("//a[starts-with(., 'Renew')]")).await;
    set_field(c, "expires_on", "31/12/2030").await;
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "#expires_on-error").await.contains("YYYY-MM-DD"));
    assert_eq!(server.license_json(&fx).await["expires_at"], expires, "nothing changed");
    set_field(c, "expires_on", "").await;
    c.find(Locator::Css("#days")).await.unwrap().send_keys("30").await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "#done").await.contains("renewed"));
    assert_ne!(server.license_json(&fx).await["expires_at"], expires);
    // Revoking is final: without the typed key hint, refused beside the field.
    follow(c, Locator::XPath("//a[starts-with(., 'Revoke')]")).await;
    c.find(Locator::Css("#confirm")).await.unwrap().send_keys("not-the-hint").await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "#confirm-error").await.contains("key hint"));
    assert_eq!(license_status(&server, &fx).await, "ACTIVE", "a revoke without its confirmation changes nothing");

    // An online device, deactivated from the license page.
    let online =
        Agent::open(agent_config(dir.path(), "console-online", server.keyset(), fx.product, Some(&server.url())))
            .unwrap();
    online.activate(&fx.key).await.unwrap();
    assert_eq!(seats_used(&server, &fx).await, 1);
    c.goto(&page).await.unwrap();
    follow(c, Locator::XPath("//a[.='Deactivate…']")).await;
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "#deactivated").await.contains("seat is free"));
    assert_eq!(seats_used(&server, &fx).await, 0);
    // The history names what was done, newest first.
    c.goto(&page).await.unwrap();
    let history = text(c, "section[aria-labelledby=history] tbody").await;
    let at = |a: &str| history.find(a).unwrap_or_else(|| panic!("{a} in {history}"));
    assert!(at("license.renew") < at("license.reinstate") && at("license.reinstate") < at("license.suspend"));
    assert!(history.contains("unpaid invoice"), "the reason is kept: {history}");
    assert!(at("activation.deactivate") < at("license.renew"), "the device's entries are in the history");
    screenshot(c, "license-history").await;

    // The license file, downloaded with the session's cookie: the signed file, verified with the vendor key.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = session_cookie(c).await;
    let r = http.get(format!("{page}/file")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let file = r.text().await.unwrap();
    let claims = tessera_core::token::verify_license_file(&file, &server.keyset()).unwrap();
    assert_eq!(claims.license.id.to_string(), fx.license);
    sign_out(c).await;

    // The vendor admin verifies the chain, and blocks a device key of one tenant (it belongs to none itself).
    sign_in(c, &server, &server.admin.clone()).await;
    c.goto(&format!("{}/console/security", server.url())).await.unwrap();
    c.find(Locator::Css("#tenant_id")).await.unwrap().send_keys(&fx.tenant).await.unwrap();
    c.find(Locator::Css("#device_public_key"))
        .await
        .unwrap()
        .send_keys(&tessera_core::encoding::b64url(&[9u8; 32]))
        .await
        .unwrap();
    c.find(Locator::Css("#block-reason")).await.unwrap().send_keys("chargeback").await.unwrap();
    follow(c, Locator::XPath("//button[.='Block']")).await;
    let (_, blocks) = server.get("/v1/security/blocked-devices", &fx.token).await;
    assert!(blocks["items"].as_array().unwrap().iter().any(|b| b["reason"] == "chargeback"), "{blocks}");
    c.goto(&format!("{}/console/audit", server.url())).await.unwrap();
    follow(c, Locator::XPath("//a[.='Verify the chain']")).await;
    assert!(text(c, "#verified").await.contains("The chain holds"));
    sign_out(c).await;

    // A read-only user: no action on the license page, and the posts themselves are refused.
    sign_in(c, &server, &read_only).await;
    c.goto(&page).await.unwrap();
    let actions = text(c, "nav.actions").await;
    assert!(!actions.contains("Suspend") && !actions.contains("Emergency"), "{actions}");
    assert!(c.find(Locator::XPath("//a[.='Deactivate…']")).await.is_err());
    let nav = text(c, "nav[aria-label=Main]").await;
    assert!(!nav.contains("Emergency desk"), "{nav}");
    let cookie = session_cookie(c).await;
    let csrf = c.find(Locator::Css(".who input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move { http.post(path).header("cookie", cookie).form(&form).send().await.unwrap() }
    };
    // A body that is no form, and an address no page makes: console pages that say so (no framework text).
    let r = http
        .post(format!("{page}/act/suspend"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.text().await.unwrap().contains("the form could not be read"));
    let r = http.get(format!("{}/console/audit?before=yesterday", server.url())).header("cookie", &cookie).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("not one of this page"));
    // Each refusal is for the role (a stale CSRF value would be refused with 403 too, for another reason).
    let refused_for_role = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body = r.text().await.unwrap();
        assert!(body.contains("may not") && !body.contains("This form was refused"), "{body}");
    };
    refused_for_role(post(format!("{page}/act/suspend"), vec![("csrf", csrf.clone()), ("reason", "x".into())]).await)
        .await;
    refused_for_role(post(format!("{page}/act/revoke"), vec![("csrf", csrf.clone()), ("confirm", "x".into())]).await)
        .await;
    let desk = format!("{}/console/emergency", server.url());
    let form = vec![("csrf", csrf.clone()), ("license", fx.license.clone()), ("reason", "x".into())];
    refused_for_role(post(desk, form).await).await;
    assert_eq!(license_status(&server, &fx).await, "ACTIVE");
    let (_, listed) = server.get(&format!("/v1/licenses/{}/emergency-codes", fx.license), &fx.token).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "a read-only user's posts issue nothing");
}

/// A tenant admin sets up a product from nothing in the browser: product, template (a malformed feature line
/// refused, nothing made; then edited as JSON and duplicated), customer, a license whose key, shown once,
/// activates the real agent; and an API token whose secret is shown once, signs in, and is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_up_a_product_template_customer_license_and_token_in_the_browser() {
    let server = TestServer::start().await;
    let fx = server.fixture("console-setup", json!({})).await;
    let b = browser().await;
    let c = &b.client;
    sign_in(c, &server, &fx.token).await;
    let count = |path: &'static str| {
        let (server, token) = (&server, fx.token.clone());
        async move {
            let (s, v) = server.get(path, &token).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["items"].as_array().unwrap().len()
        }
    };

    follow(c, Locator::Css("nav a[href='/console/products']")).await;
    c.find(Locator::Css("#name")).await.unwrap().send_keys("Console Studio").await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "main table").await.contains("Console Studio"));
    let products = server.get("/v1/products", &fx.token).await.1;
    let product = products["items"].as_array().unwrap().iter().find(|p| p["name"] == "Console Studio").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A template whose feature line is malformed: refused in the service's words, the form keeps what was typed.
    follow(c, Locator::Css("nav a[href='/console/templates']")).await;
    let templates_before = count("/v1/templates").await;
    c.find(Locator::Css(&format!("#product_id option[value='{product}']"))).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("#name")).await.unwrap().send_keys("Studio Pro").await.unwrap();
    c.find(Locator::Css("#license_type option[value='SUBSCRIPTION']")).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("#max_activations")).await.unwrap().send_keys("2").await.unwrap();
    c.find(Locator::Css("#duration_days")).await.unwrap().send_keys("365").await.unwrap();
    c.find(Locator::Css("#features")).await.unwrap().send_keys("export_pdf\napi_calls lots").await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "#form-error").await.contains("whole number"));
    assert_eq!(count("/v1/templates").await, templates_before, "nothing made");
    let features = c.find(Locator::Css("#features")).await.unwrap();
    assert!(features.prop("value").await.unwrap().unwrap().contains("api_calls lots"), "the form keeps its input");
    features.clear().await.unwrap();
    features.send_keys("export_pdf\napi_calls 100\n!beta_lab").await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "h1").await.contains("Studio Pro"));
    let template_url = c.current_url().await.unwrap().to_string();
    // Edited as JSON: not JSON is refused beside the field; a merge patch is saved.
    set_field(c, "body", "{ not json").await;
    follow(c, Locator::XPath("//button[.='Save']")).await;
    assert!(text(c, "#body-error").await.contains("not valid JSON"));
    // (The suite's agents run with a pinned identity, which the default fingerprint policy refuses.)
    let patch = json!({"max_activations": 3, "grace_days": 5,
        "fingerprint_policy": {"required": 3, "deal_breakers": ["machine_id", "pinned"], "allow_pinned": true}});
    set_field(c, "body", &patch.to_string()).await;
    follow(c, Locator::XPath("//button[.='Save']")).await;
    let body = c.find(Locator::Css("#body")).await.unwrap().prop("value").await.unwrap().unwrap();
    let saved: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((saved["max_activations"].as_u64(), saved["grace_days"].as_u64()), (Some(3), Some(5)), "{saved}");
    assert_eq!(saved["features"].as_array().unwrap().len(), 3, "the rest is kept: {saved}");
    follow(c, Locator::XPath("//button[.='Duplicate']")).await;
    assert!(text(c, "h1").await.contains("Studio Pro (copy)"));
    assert_eq!(count("/v1/templates").await, templates_before + 2);

    // A customer, then a license for it from the template: the key is shown once and activates the real agent.
    follow(c, Locator::Css("nav a[href='/console/customers']")).await;
    c.find(Locator::Css("#name")).await.unwrap().send_keys("Acme Studios").await.unwrap();
    c.find(Locator::Css("#email")).await.unwrap().send_keys("it@acme.example").await.unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    assert!(text(c, "main table").await.contains("Acme Studios"));
    c.goto(&template_url).await.unwrap();
    follow(c, Locator::XPath("//a[starts-with(., 'New license from this template')]")).await;
    c.find(Locator::XPath("//select[@id='customer_id']/option[.='Acme Studios']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    let key = c.find(Locator::Css("#license-key")).await.unwrap().prop("value").await.unwrap().unwrap();
    assert!(key.starts_with("TSK-"), "{key}");
    screenshot(c, "license-created").await;
    let dir = tempfile::tempdir().unwrap();
    let product_id = uuid::Uuid::parse_str(&product).unwrap();
    let agent =
        Agent::open(agent_config(dir.path(), "console-new", server.keyset(), product_id, Some(&server.url()))).unwrap();
    agent.activate(&key).await.unwrap();
    assert!(agent.check("export_pdf").allowed && !agent.check("beta_lab").allowed);
    // Metered use reaches the server with a heartbeat and shows beside the feature's limit.
    assert!(agent.consume("api_calls", 7).allowed);
    agent.heartbeat().await.unwrap();
    follow(c, Locator::XPath("//a[starts-with(., 'Open license')]")).await;
    let terms = text(c, "dl.terms").await;
    assert!(terms.contains("1 of 3 in use"), "{terms}");
    let api_calls = text(c, "section[aria-labelledby=features] tbody tr:nth-child(2)").await;
    assert!(api_calls.starts_with("api_calls") && api_calls.ends_with("100 7"), "{api_calls}");
    let device = text(c, "section[aria-labelledby=activations] tbody td:nth-child(2)").await;
    assert!(!device.is_empty() && device != "unnamed", "the device as the agent reported it: {device}");

    // A support token: its secret shown once, it signs in, then it is revoked from the list.
    c.goto(&format!("{}/console/tokens", server.url())).await.unwrap();
    c.find(Locator::Css("#name")).await.unwrap().send_keys("night desk").await.unwrap();
    c.find(Locator::Css("#role option[value='support']")).await.unwrap().click().await.unwrap();
    assert!(c.find(Locator::Css("#role option[value='vendor-admin']")).await.is_err(), "not offered to a tenant admin");
    follow(c, Locator::XPath("//button[.='Create token']")).await;
    let secret = c.find(Locator::Css("#token-secret")).await.unwrap().prop("value").await.unwrap().unwrap();
    let tokens = server.get("/v1/tokens", &fx.token).await.1["items"].as_array().unwrap().len();
    c.refresh().await.unwrap();
    assert!(c.find(Locator::Css("#token-secret")).await.is_err(), "shown once");
    assert!(!c.source().await.unwrap().contains(&secret));
    assert_eq!(
        server.get("/v1/tokens", &fx.token).await.1["items"].as_array().unwrap().len(),
        tokens,
        "a reload makes none"
    );
    c.goto(&format!("{}/console/tokens", server.url())).await.unwrap();
    follow(c, Locator::Css("button[aria-label='Revoke night desk']")).await;
    let (s, _) = server.get("/v1/licenses", &secret).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the revoked token no longer works");
}

/// Signs in with a username and password.
async fn sign_in_password(c: &Client, server: &TestServer, username: &str, password: &str) {
    c.goto(&format!("{}/console/sign-in", server.url())).await.unwrap();
    c.find(Locator::Css("#username")).await.unwrap().send_keys(username).await.unwrap();
    c.find(Locator::Css("#password")).await.unwrap().send_keys(password).await.unwrap();
    follow(c, Locator::Css("#password-form button[type=submit]")).await;
}

/// A tenant admin makes a console user (a short password refused); the user signs in with the password (a wrong
/// password and an unknown name refused in the same words), works the desk under its own name in the audit log,
/// gets a new password, and is revoked: its session ends at the next page and it cannot sign in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_users_sign_in_with_a_password_and_are_revoked() {
    let server = TestServer::start().await;
    let fx = server.fixture("console-users", json!({})).await;
    let b = browser().await;
    let c = &b.client;
    sign_in(c, &server, &fx.token).await;
    follow(c, Locator::Css("nav a[href='/console/users']")).await;
    c.find(Locator::Css("#username")).await.unwrap().send_keys("Night.Desk@vendor.example").await.unwrap();
    c.find(Locator::Css("#role option[value='support']")).await.unwrap().click().await.unwrap();
    set_field(c, "password", "short").await;
    follow(c, Locator::XPath("//button[.='Create user']")).await;
    assert!(text(c, "#form-error").await.contains("at least 12"));
    let field = c.find(Locator::Css("#username")).await.unwrap().prop("value").await.unwrap().unwrap();
    assert_eq!(field, "Night.Desk@vendor.example", "the form keeps the username");
    assert!(c.find(Locator::Css("#password")).await.unwrap().prop("value").await.unwrap().unwrap().is_empty());
    c.find(Locator::Css("#password")).await.unwrap().send_keys("correct horse battery").await.unwrap();
    follow(c, Locator::XPath("//button[.='Create user']")).await;
    let rows = text(c, "main table tbody").await;
    assert!(rows.contains("night.desk@vendor.example") && rows.contains("support"), "kept in lower case: {rows}");
    // The same name again (any case) is taken.
    c.find(Locator::Css("#username")).await.unwrap().send_keys("NIGHT.DESK@vendor.example").await.unwrap();
    c.find(Locator::Css("#password")).await.unwrap().send_keys("another long password").await.unwrap();
    follow(c, Locator::XPath("//button[.='Create user']")).await;
    assert!(text(c, "#form-error").await.contains("taken"));
    sign_out(c).await;

    // Wrong password, unknown user: the same refusal.
    sign_in_password(c, &server, "night.desk@vendor.example", "correct horse battery!").await;
    let wrong = text(c, "#password-error").await;
    sign_in_password(c, &server, "nobody@vendor.example", "correct horse battery").await;
    assert_eq!(text(c, "#password-error").await, wrong, "an unknown user is refused like a wrong password");
    assert!(wrong.contains("not right"), "{wrong}");
    sign_in_password(c, &server, "Night.Desk@Vendor.Example", "correct horse battery").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console/overview");
    assert!(text(c, ".who").await.contains("night.desk@vendor.example"));
    // The user's work is audited under its name.
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::open(agent_config(dir.path(), "console-user-air", server.keyset(), fx.product, None)).unwrap();
    follow(c, Locator::Css("nav a[href='/console/offline']")).await;
    c.find(Locator::Css("#request_code"))
        .await
        .unwrap()
        .send_keys(&agent.request_code(&fx.key).unwrap())
        .await
        .unwrap();
    follow(c, Locator::Css("main form button[type=submit]")).await;
    let response = c.find(Locator::Css("#response-code")).await.unwrap().prop("value").await.unwrap().unwrap();
    let (_, v) = server.get("/v1/audit?action=offline.respond", &fx.token).await;
    assert_eq!(v["items"][0]["actor"], "console:user:night.desk@vendor.example", "{v}");
    // The customer moves the license off the machine: the desk takes its receipt (a typo refused beside it).
    agent.apply_code(&response).unwrap();
    let receipt = agent.deactivate_offline().unwrap();
    let mut typo: Vec<char> = receipt.chars().collect();
    let at = typo.iter().rposition(|ch| ch.is_ascii_alphanumeric()).unwrap();
    typo[at] = if typo[at] == 'A' { 'B' } else { 'A' };
    c.goto(&format!("{}/console/offline", server.url())).await.unwrap();
    c.find(Locator::Css("#receipt_code"))
        .await
        .unwrap()
        .send_keys(&typo.into_iter().collect::<String>())
        .await
        .unwrap();
    follow(c, Locator::XPath("//button[.='Take the receipt']")).await;
    assert!(text(c, "#receipt-error").await.to_lowercase().contains("group"));
    assert_eq!(seats_used(&server, &fx).await, 1, "a refused receipt ends nothing");
    let field = c.find(Locator::Css("#receipt_code")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(&receipt).await.unwrap();
    follow(c, Locator::XPath("//button[.='Take the receipt']")).await;
    assert!(text(c, "#receipt-result").await.len() > 10);
    assert!(text(c, "dl.terms").await.contains("ended now"));
    assert_eq!(seats_used(&server, &fx).await, 0, "the activation ended");
    let cookie = session_cookie(c).await;

    // A new password from the admin; then the user is revoked: its session ends and it cannot sign in.
    let admin = browser().await;
    let a = &admin.client;
    sign_in(a, &server, &fx.token).await;
    a.goto(&format!("{}/console/users", server.url())).await.unwrap();
    let id = server.get("/v1/audit?action=console_user.create", &fx.token).await.1["items"][0]["target"]
        .as_str()
        .unwrap()
        .to_string();
    a.find(Locator::Css(&format!("#password-{id}"))).await.unwrap().send_keys("a new long passphrase").await.unwrap();
    follow(a, Locator::Css("button[aria-label='Set the password of night.desk@vendor.example']")).await;
    let (_, v) = server.get(&format!("/v1/audit?action=console_user.password&target={id}"), &fx.token).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "the new password is set and audited: {v}");
    // The session signed in with the old password ends; the old password no longer works, the new one does.
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().query(), Some("why=revoked"), "a reset ends the user's sessions");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = http.get(format!("{}/console/overview", server.url())).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the old session is gone");
    sign_in_password(c, &server, "night.desk@vendor.example", "correct horse battery").await;
    assert_eq!(text(c, "#password-error").await, wrong, "the old password is refused");
    sign_in_password(c, &server, "night.desk@vendor.example", "a new long passphrase").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console/overview", "the new password signs in");
    // A support user may not manage users, even by a hand-made post.
    let support_cookie = session_cookie(c).await;
    let csrf = c.find(Locator::Css(".who input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let form = [
        ("csrf", csrf.as_str()),
        ("username", "sneaky"),
        ("password", "a long enough password"),
        ("role", "tenant-admin"),
    ];
    let r = http.post(format!("{}/console/users", server.url())).header("cookie", &support_cookie).form(&form);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("may not"));
    // Nor a tenant admin make a vendor admin.
    let admin_cookie = session_cookie(a).await;
    let csrf = a.find(Locator::Css(".who input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let form = [
        ("csrf", csrf.as_str()),
        ("username", "root"),
        ("password", "a long enough password"),
        ("role", "vendor-admin"),
    ];
    let r = http.post(format!("{}/console/users", server.url())).header("cookie", &admin_cookie).form(&form);
    assert_eq!(r.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let (_, users) = server.get("/v1/audit?action=console_user.create", &fx.token).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "neither made a user");

    // Revoked: the session ends, the user cannot sign in, and the revocation is audited under the user's name.
    a.goto(&format!("{}/console/users", server.url())).await.unwrap();
    follow(a, Locator::Css("button[aria-label='Revoke night.desk@vendor.example']")).await;
    assert!(a.find(Locator::Css("button[aria-label='Revoke night.desk@vendor.example']")).await.is_err());
    let (_, v) = server.get(&format!("/v1/audit?action=console_user.revoke&target={id}"), &fx.token).await;
    assert_eq!(v["items"][0]["details"]["username"], "night.desk@vendor.example", "{v}");
    c.goto(&format!("{}/console/overview", server.url())).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().query(), Some("why=revoked"));
    sign_in_password(c, &server, "night.desk@vendor.example", "a new long passphrase").await;
    assert_eq!(text(c, "#password-error").await, wrong, "a revoked user cannot sign in");
    // An overlong password is refused like a wrong one; then guessing is slowed per username.
    sign_in_password(c, &server, "night.desk@vendor.example", &"x".repeat(5000)).await;
    assert_eq!(text(c, "#password-error").await, wrong);
    let mut limited = None;
    for _ in 0..12 {
        sign_in_password(c, &server, "someone.else@vendor.example", "guess guess guess").await;
        let e = text(c, "#password-error").await;
        if e != wrong {
            limited = Some(e);
            break;
        }
    }
    assert!(limited.is_some_and(|e| e.contains("too many")), "password guessing is rate limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_the_ladder_adds_a_rung_upgrades_a_subscription_and_reads_the_bill() {
    let server = TestServer::start().await;
    let fx = server.fixture("console-commerce", json!({})).await;
    let t = &fx.token;
    let plan = |body: serde_json::Value| {
        let mut b = json!({"product_id": fx.product, "template_id": fx.template});
        b.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        b
    };
    server
        .ok(
            "/v1/plans",
            t,
            plan(json!({"name": "Basic", "features": [{"id": "export_pdf"}],
            "limits": [{"metric": "api_calls", "limit": 5, "period": "DAY"}],
            "prices": [{"interval": "MONTH", "amount": 1000, "currency": "EUR"}]})),
        )
        .await;
    let basic = server.get("/v1/plans", t).await.1["items"][0].clone();
    let premium = server
        .ok(
            "/v1/plans",
            t,
            plan(json!({"name": "Premium", "features": [{"id": "export_pdf"}, {"id": "crm"}],
            "prices": [{"interval": "MONTH", "amount": 3000, "currency": "EUR"}]})),
        )
        .await;
    let sub = server
        .ok("/v1/subscriptions", t, json!({"customer_id": fx.customer, "plan_id": basic["id"], "trial": false}))
        .await;
    let license = sub["license_id"].as_str().unwrap();
    let ev = json!({"id": uuid::Uuid::now_v7(), "license_id": license, "feature": "api_calls", "amount": 3});
    server.ok("/v1/usage", t, json!({"events": [ev]})).await;

    let b = browser().await;
    let c = &b.client;
    sign_in(c, &server, t).await;

    // The ladder, lowest rung first, with prices shown from integer minor units.
    follow(c, Locator::Css("nav a[href='/console/plans']")).await;
    let ladder = text(c, "table.ladder").await;
    let (bi, pi) = (ladder.find("Basic").unwrap(), ladder.find("Premium").unwrap());
    assert!(bi < pi, "lowest rung first: {ladder}");
    assert!(ladder.contains("10.00 EUR / month") && ladder.contains("5 api_calls per day"), "{ladder}");
    // A malformed price is refused in the service's words and the form keeps what was typed; then a rung is added.
    c.find(Locator::Css("#product_id")).await.unwrap().send_keys(&fx.product.to_string()).await.unwrap();
    c.find(Locator::Css("#name")).await.unwrap().send_keys("Enterprise").await.unwrap();
    c.find(Locator::Css("#price")).await.unwrap().send_keys("99.00").await.unwrap();
    c.find(Locator::Css("#currency")).await.unwrap().send_keys("EUR").await.unwrap();
    follow(c, Locator::Css("#plan-form button[type=submit]")).await;
    assert!(text(c, "#form-error").await.contains("whole number"));
    assert_eq!(
        c.find(Locator::Css("#name")).await.unwrap().prop("value").await.unwrap().as_deref(),
        Some("Enterprise")
    );
    let price = c.find(Locator::Css("#price")).await.unwrap();
    price.clear().await.unwrap();
    price.send_keys("9900").await.unwrap();
    follow(c, Locator::Css("#plan-form button[type=submit]")).await;
    let ladder = text(c, "table.ladder").await;
    assert!(ladder.contains("Enterprise") && ladder.contains("99.00 EUR / month"), "{ladder}");
    assert_eq!(server.get("/v1/plans", t).await.1["items"].as_array().unwrap().len(), 3);
    screenshot(c, "plans").await;

    // The subscription with its use against the day's limit; an upgrade from the browser re-signs the license.
    follow(c, Locator::Css("nav a[href='/console/subscriptions']")).await;
    let row = text(c, "table.subscriptions tbody").await;
    assert!(row.contains("Basic") && row.contains("api_calls: 3 of 5 per day"), "{row}");
    let select = format!("#plan-{} option[value='{}']", sub["id"].as_str().unwrap(), premium["id"].as_str().unwrap());
    c.find(Locator::Css(&select)).await.unwrap().click().await.unwrap();
    follow(c, Locator::Css("form.change button[type=submit]")).await;
    assert!(text(c, "table.subscriptions td.plan").await.contains("Premium"));
    let (_, lic) = server.get(&format!("/v1/licenses/{license}"), t).await;
    assert!(lic["features"].as_array().unwrap().iter().any(|f| f["id"] == "crm"), "{lic}");
    screenshot(c, "subscriptions").await;

    // The month's bill, as the API reports it, with the rounding stated; a bad month is refused beside the field.
    follow(c, Locator::Css("nav a[href='/console/billing']")).await;
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let (_, report) = server.get(&format!("/v1/billing/report?month={month}"), t).await;
    let total = report["totals"][0]["amount"].as_i64().unwrap();
    let shown = text(c, "section.bill tfoot").await;
    assert!(shown.contains(&format!("{}.{:02} EUR", total / 100, total % 100)), "{shown} vs {report}");
    assert!(text(c, "p.rounding").await.contains("half up"));
    screenshot(c, "billing").await;
    let field = c.find(Locator::Css("#month")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("2026-13").await.unwrap();
    follow(c, Locator::Css("form.filters button[type=submit]")).await;
    assert!(text(c, "#month-error").await.contains("YYYY-MM"));

    // A forged post (the session's cookie, not its form token) changes nothing.
    let cookie = session_cookie(c).await;
    let sub_id = sub["id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/console/subscriptions/{sub_id}/cancel", server.url()))
        .header("cookie", cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, now) = server.get(&format!("/v1/subscriptions/{sub_id}"), t).await;
    assert_eq!(now["cancel_at_period_end"], false, "{now}");

    // A read-only user sees the screens and no forms.
    let read_only = token(&server, &fx, "read-only").await;
    sign_out(c).await;
    sign_in(c, &server, &read_only).await;
    c.goto(&format!("{}/console/subscriptions", server.url())).await.unwrap();
    c.wait().for_element(Locator::Css("table.subscriptions")).await.unwrap();
    assert!(c.find(Locator::Css("form.change")).await.is_err(), "no change form for a read-only user");
    c.goto(&format!("{}/console/plans", server.url())).await.unwrap();
    c.wait().for_element(Locator::Css("table.ladder")).await.unwrap();
    assert!(c.find(Locator::Css("#plan-form")).await.is_err());
}
