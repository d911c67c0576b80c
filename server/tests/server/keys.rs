//! Signing keys in the data directory: order by creation time (not by file name), a fallback for key
//! directories made before creation times were recorded, and revocation (`tessera-server keys revoke`).

use std::process::Command;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tessera_core::crypto::CryptoError;
use tessera_core::envelope::EnvelopeError;
use tessera_core::token::{self, ArtefactError};
use tessera_core::{PublicKeyset, SigningKey};
use tessera_server::keys::KeyDir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera-server"))
}

fn keys_cmd(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = bin().arg("--data-dir").arg(dir).arg("keys").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn sample_license() -> tessera_core::License {
    serde_json::from_str(&std::fs::read_to_string("../keys/test/vectors/license.json").unwrap()).unwrap()
}

#[test]
fn the_newest_key_by_creation_signs_when_there_is_no_marker_whatever_the_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let kd = KeyDir::new(dir.path());
    let first = kd.rotate().unwrap();
    // A newer key whose file name sorts BEFORE the first one: name order would pick the wrong key.
    let newer = loop {
        let k = kd.generate().unwrap();
        if k.kid < first.kid {
            break k;
        }
    };
    std::fs::remove_file(dir.path().join("keys/active")).unwrap();
    let (ks, created) = kd.load_or_init().unwrap();
    assert!(!created);
    assert_eq!(ks.signer().key_id().to_string(), newer.kid, "the newest key signs, not the last by name");
    let listed = kd.list().unwrap();
    assert_eq!(listed.first().unwrap().kid, first.kid, "listed oldest first");
    assert_eq!(listed.last().unwrap().kid, newer.kid);
    assert!(listed.windows(2).all(|w| w[0].created_at < w[1].created_at));
    assert!(listed.last().unwrap().active);
}

#[test]
fn a_key_dir_without_creation_times_orders_by_file_time_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    // Two key files as an older tessera-server left them: PEM only, no marker, no metadata.
    let old = SigningKey::generate_ed25519();
    let new = loop {
        let k = SigningKey::generate_ed25519();
        if k.key_id().to_string() < old.key_id().to_string() {
            break k;
        }
    };
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    for (k, t) in [(&old, day_ago - Duration::from_secs(3_600)), (&new, day_ago)] {
        let p = keys.join(format!("{}.pem", k.key_id()));
        k.save(&p).unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
    }
    let kd = KeyDir::new(dir.path());
    let (ks, _) = kd.load_or_init().unwrap();
    assert_eq!(ks.signer().key_id(), new.key_id(), "the key written last (file time) signs");
    // The fallback is recorded, so a copy that loses the file times keeps the order.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys.join(format!("{}.json", old.key_id()))).unwrap()).unwrap();
    assert_eq!(meta["created_at_from_file_time"], true);
    let now = SystemTime::now();
    for k in [&old, &new] {
        let p = keys.join(format!("{}.pem", k.key_id()));
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(now).unwrap();
    }
    std::fs::remove_file(keys.join("active")).unwrap();
    let listed: Vec<String> = kd.list().unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(listed, vec![old.key_id().to_string(), new.key_id().to_string()]);
    let (ks, _) = KeyDir::new(dir.path()).load_or_init().unwrap();
    assert_eq!(ks.signer().key_id(), new.key_id());
    // A metadata file that does not belong to its key is refused, naming the file.
    std::fs::write(
        keys.join(format!("{}.json", new.key_id())),
        format!(r#"{{"kid":"{}","created_at":"2026-01-01T00:00:00Z"}}"#, old.key_id()),
    )
    .unwrap();
    let err = kd.load_or_init().err().unwrap().to_string();
    assert!(err.contains(&format!("{}.json", new.key_id())), "{err}");
}

#[test]
fn keys_revoke_refuses_the_signing_key_and_marks_others_revoked_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let kd = KeyDir::new(path);
    let old = kd.rotate().unwrap();
    let new = kd.rotate().unwrap();

    // The signing key cannot be revoked; the message says what to do instead.
    let (ok, _, err) = keys_cmd(path, &["revoke", &new.kid]);
    assert!(!ok);
    assert!(err.contains("is the signing key and cannot be revoked") && err.contains("keys rotate"), "{err}");
    let (ok, _, err) = keys_cmd(path, &["revoke", "0123456789abcdef"]);
    assert!(!ok);
    assert!(err.contains("no key 0123456789abcdef"), "{err}");

    // Before: the old key still verifies what it signed.
    let old_key = SigningKey::load(&old.path).unwrap();
    let file = token::sign_license_file(&old_key, &sample_license(), Utc::now());
    let (ks, _) = kd.load_or_init().unwrap();
    assert!(token::verify_license_file(&file, &ks.public()).is_ok());

    let (ok, out, err) = keys_cmd(path, &["revoke", &old.kid]);
    assert!(ok, "{err}");
    assert!(out.contains("is revoked") && out.contains("keys export"), "{out}");
    let (ok, _, _) = keys_cmd(path, &["revoke", &old.kid]);
    assert!(ok, "revoking twice is fine");
    let (ok, out, _) = keys_cmd(path, &["list"]);
    assert!(ok);
    assert!(out.lines().any(|l| l.starts_with(&old.kid) && l.contains("revoked")), "{out}");

    // A revoked key never signs again.
    let (ok, _, err) = keys_cmd(path, &["activate", &old.kid]);
    assert!(!ok);
    assert!(err.contains("revoked"), "{err}");

    // The exported keyset marks it; what it signed no longer verifies, with the server's keyset or the export.
    let (ok, out, _) = keys_cmd(path, &["export"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = json["keys"].as_array().unwrap().iter().find(|k| k["kid"] == old.kid.as_str()).unwrap().clone();
    assert_eq!(entry["revoked"], true);
    let exported = PublicKeyset::from_json(&out).unwrap();
    assert!(exported.is_revoked(&old_key.key_id()));
    let (ks, _) = kd.load_or_init().unwrap();
    assert_eq!(ks.public(), exported);
    for keys in [&exported, &ks.public()] {
        assert!(matches!(
            token::verify_license_file(&file, keys),
            Err(ArtefactError::Envelope(EnvelopeError::Crypto(CryptoError::RevokedKey(_))))
        ));
    }

    // Without a marker the newest key that is not revoked signs; a marker naming a revoked key is refused.
    std::fs::write(path.join("keys/active"), format!("{}\n", old.kid)).unwrap();
    let err = kd.load_or_init().err().unwrap().to_string();
    assert!(err.contains("revoked") && err.contains("keys rotate"), "{err}");
    std::fs::remove_file(path.join("keys/active")).unwrap();
    assert_eq!(kd.load_or_init().unwrap().0.signer().key_id().to_string(), new.kid);
}

#[tokio::test]
async fn a_server_started_after_a_revocation_exports_the_mark_and_signs_with_the_current_key() {
    let dir = tempfile::tempdir().unwrap();
    let kd = KeyDir::new(dir.path());
    let old = kd.rotate().unwrap();
    let new = kd.rotate().unwrap();
    kd.revoke(&old.kid).unwrap();
    let h = crate::common::Harness::with_config(dir, |_| {}).await;
    let ks = h.keys();
    assert!(ks.is_revoked(&SigningKey::load(&old.path).unwrap().key_id()));
    assert_eq!(ks.keys().len(), 1);
    assert_eq!(h.services.keys.signer().key_id().to_string(), new.kid);
    // A license file downloaded now is signed by the current key and verifies with the marked keyset.
    let f = h.fixture("revoked-keys", 1, "PERPETUAL").await;
    let (s, body) =
        h.raw(axum::http::Method::GET, &format!("/v1/licenses/{}/file", f.license), Some(&f.token), None, &[]).await;
    assert!(s.is_success());
    let claims = token::verify_license_file(std::str::from_utf8(&body).unwrap(), &ks).unwrap();
    assert_eq!(claims.license.id.to_string(), f.license);
}
