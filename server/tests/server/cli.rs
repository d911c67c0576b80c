use std::io::BufRead as _;
use std::process::{Command, Stdio};

use chrono::Utc;
use serde_json::{json, Value};
use tessera_core::offline::{DeactivationReceipt, OfflineRequest, SignedEmergency, SignedResponse};
use tessera_core::{LicenseKey, PublicKeyset};

use crate::common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera-server"))
}

fn run_json(dir: &std::path::Path, args: &[&str]) -> Value {
    let out = bin().arg("--data-dir").arg(dir).arg("--json").args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{args:?}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn serve_prints_token_once_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TESSERA_SYNCHRONOUS", "normal")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut token = None;
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim().starts_with("tsa_") {
            token = Some(line.trim().to_string());
        }
        if let Some(u) = line.strip_prefix("tessera-server listening on ") {
            url = Some(u.trim().to_string());
            break;
        }
    }
    let url = url.expect("listening line");
    let token = token.expect("first start prints the token");
    assert_eq!(std::fs::read_to_string(dir.path().join("admin-token")).unwrap().trim(), token);
    let r = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new().get(format!("{url}/v1/tenants")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
}

#[tokio::test]
async fn keys_offline_and_emergency_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let h = Harness::with_config(dir, |_| {}).await;
    let f = h.fixture("cli", 1, "PERPETUAL").await;

    // keys export = the keyset the server uses
    let out = bin().arg("--data-dir").arg(&path).args(["keys", "export"]).output().unwrap();
    assert!(out.status.success());
    let exported = PublicKeyset::from_json(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(exported, h.keys());
    let list = run_json(&path, &["keys", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["active"], true);

    // offline respond / receipt
    let k = LicenseKey::parse(&f.key).unwrap();
    let dev = device();
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&dev.verifying_key().public_bytes());
    let (code, signed) = OfflineRequest {
        key_hint: k.hint(),
        device_public_key: dpk,
        fingerprint_commitment: [1u8; 10],
        created_at: Utc::now(),
        nonce: 7,
    }
    .sign(&k.hash(), &dev)
    .unwrap();
    let v = run_json(&path, &["offline", "respond", &code]);
    let resp = SignedResponse::decode(v["response_code"].as_str().unwrap()).unwrap();
    resp.verify(&h.keys(), &bind(&k, &f.product), &signed).unwrap();
    assert_eq!(v["summary"]["seats_used"], 1);
    let grant = tessera_core::offline::offline_grant_tag(&signed.bytes);
    let receipt = DeactivationReceipt::for_device(&k.hash(), &dpk, grant, Utc::now()).sign(&k.hash(), &dev).unwrap();
    let v = run_json(&path, &["offline", "receipt", &receipt]);
    assert_eq!(v["freed"], true, "{v}");
    assert_eq!(v["release"], "AFTER_LEASE", "by default the seat is held until the grant's lease ends: {v}");
    assert!(v["seat_held_until"].is_string(), "{v}");
    assert_eq!(run_json(&path, &["offline", "receipt", &receipt])["freed"], false);

    // emergency issue / list (reason mandatory)
    let out = bin()
        .arg("--data-dir")
        .arg(&path)
        .args(["emergency", "issue", "--license", &f.license, "--reason", "datacenter fire"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "unbound codes need the policy's consent");
    assert!(String::from_utf8_lossy(&out.stderr).contains("request code"), "{out:?}");
    let v = run_json(
        &path,
        &[
            "emergency",
            "issue",
            "--license",
            &f.license,
            "--reason",
            "datacenter fire",
            "--hours",
            "5",
            "--request-code",
            &code,
        ],
    );
    let e = SignedEmergency::decode(v["code"].as_str().unwrap()).unwrap();
    e.verify(&h.keys(), &bind(&k, &f.product), &dpk).unwrap();
    let out = bin()
        .arg("--data-dir")
        .arg(&path)
        .args(["emergency", "issue", "--license", &f.license, "--reason", " "])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let list = run_json(&path, &["emergency", "list", "--license", &f.license]);
    assert_eq!(list[0]["reason"], "datacenter fire");
    assert!(list[0]["issued_by"].as_str().unwrap().starts_with("cli:"));
    let (_, api_list) = h.get(&format!("/v1/licenses/{}/emergency-codes", f.license), Some(&f.token)).await;
    assert_eq!(api_list["items"].as_array().unwrap().len(), 1);

    // rotate: a new signing key, the old one still trusted
    let rotated = run_json(&path, &["keys", "rotate"]);
    let out = bin().arg("--data-dir").arg(&path).args(["keys", "export"]).output().unwrap();
    let ks = PublicKeyset::from_json(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(ks.keys().len(), 2);
    assert_eq!(ks.keys()[0].key_id().to_string(), rotated["kid"].as_str().unwrap());
    let _ = json!({});
}
