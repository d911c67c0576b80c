//! Regenerates the public test keys and the test vectors in `keys/test/`.
//!
//! `cargo run -p tessera-core --example make_vectors` — existing test keys are kept (delete them to rotate);
//! vectors are rewritten. The keys are TEST keys, published on purpose: never use them for real licenses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;

use common::*;
use tessera_core::{token, Keyset, SigningKey};

fn key(name: &str, make: impl FnOnce() -> SigningKey) -> SigningKey {
    let path = keys_dir().join(name);
    if !path.exists() {
        make().save(&path).expect("save key");
    }
    SigningKey::load(&path).expect("load key")
}

fn main() {
    let dir = keys_dir();
    fs::create_dir_all(dir.join("vectors")).expect("mkdir");
    let ed = key("ed25519.pem", SigningKey::generate_ed25519);
    let rsa2048 = key("rsa2048.pem", || SigningKey::generate_rsa(2048).expect("rsa"));
    let rsa3072 = key("rsa3072.pem", || SigningKey::generate_rsa(3072).expect("rsa"));
    let public = Keyset::new(ed, [rsa2048.verifying_key(), rsa3072.verifying_key()]).public();
    fs::write(dir.join("keyset.json"), public.to_json() + "\n").expect("write keyset");
    let ed = test_key("ed25519.pem");
    let device = device_key();
    let v = dir.join("vectors");

    let license = sample_license();
    fs::write(v.join("license.json"), serde_json::to_string_pretty(&license).unwrap() + "\n").unwrap();
    for (name, k) in [("ed25519", &ed), ("rsa2048", &rsa2048), ("rsa3072", &rsa3072)] {
        fs::write(v.join(format!("license-file.{name}.txt")), token::sign_license_file(k, &license, at(2026, 3, 1)))
            .unwrap();
    }
    fs::write(
        v.join("activation-token.ed25519.txt"),
        token::sign_activation_token(&ed, &sample_claims(&device)) + "\n",
    )
    .unwrap();

    let key_hash = sample_key().hash();
    let (request_code, request) = sample_request(&device).sign(&key_hash, &device).unwrap();
    let response = sample_grant().sign(&ed, &sample_binding(), &request).unwrap();
    let receipt = sample_receipt(&device).sign(&key_hash, &device).unwrap();
    let emergency = sample_emergency(false).sign(&ed, &sample_binding(), None).unwrap();
    let bound = sample_emergency(true).sign(&ed, &sample_binding(), Some(&device_public(&device))).unwrap();
    for (name, code) in [
        ("request", request_code),
        ("response", response),
        ("receipt", receipt),
        ("emergency", emergency),
        ("emergency-bound", bound),
    ] {
        println!("{name:16} {:4} chars", code.len());
        fs::write(v.join(format!("{name}.code")), code + "\n").unwrap();
    }
    println!("license key of the samples: {}", sample_key());
    println!("vectors written to {}", v.display());
}
