//! Every signed artefact kind verifies with an independent verifier written from docs/PROTOCOL.md ("Signed
//! bytes") alone: `tests/python/verify_artefacts.py`, Python's standard library and the `cryptography` package,
//! over the published test vectors; and an altered copy does not.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SAMPLE_KEY: &str = "TSK-B9D5M-PJTB9-D5MPJ-TB9D5-MPJTK";
const SAMPLE_PRODUCT: &str = "01935a1e-7c00-7000-8000-0000000000bb";
const KINDS: [&str; 9] = [
    "license-file.ed25519.txt",
    "license-file.rsa2048.txt",
    "license-file.rsa3072.txt",
    "activation-token.ed25519.txt",
    "request.code",
    "response.code",
    "receipt.code",
    "emergency.code",
    "emergency-bound.code",
];

fn verify(vectors: &Path) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("tests/python/verify_artefacts.py"))
        .arg(root.join("keys/test/keyset.json"))
        .arg(vectors)
        .args([SAMPLE_KEY, SAMPLE_PRODUCT])
        .output()
        .expect("python3 (with python3-cryptography, as .ci/run installs) runs the verifier");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_outside_verifier_checks_every_signed_artefact_from_the_docs() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/test/vectors");
    let v = verify(&vectors);
    for kind in KINDS {
        assert_eq!(v[kind], true, "{kind}: {v}");
    }

    // The same verifier refuses altered copies: one payload character of each text form, one byte of a code.
    let dir = tempfile::tempdir().unwrap();
    for kind in KINDS {
        std::fs::copy(vectors.join(kind), dir.path().join(kind)).unwrap();
    }
    let alter = |name: &str, f: &dyn Fn(&str) -> String| {
        let p = dir.path().join(name);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, f(&text)).unwrap();
    };
    // License file: a character in the middle of the base64 body (`A`/`B` swap keeps it decodable).
    alter("license-file.ed25519.txt", &|t| {
        let body = t.find("\n\n").unwrap() + 12;
        let mut c: Vec<char> = t.chars().collect();
        c[body] = if c[body] == 'A' { 'B' } else { 'A' };
        c.into_iter().collect()
    });
    // Token: a character of the payload part.
    alter("activation-token.ed25519.txt", &|t| {
        let at = t.match_indices('.').nth(3).unwrap().0 + 5;
        let mut c: Vec<char> = t.chars().collect();
        c[at] = if c[at] == 'A' { 'B' } else { 'A' };
        c.into_iter().collect()
    });
    // Emergency code: re-encoded with one payload bit flipped (a valid code whose signature no longer fits).
    alter("emergency.code", &|t| {
        let mut bytes = tessera_core::codes::decode(tessera_core::codes::CodeKind::Emergency, t).unwrap();
        bytes[2] ^= 1;
        tessera_core::codes::encode(tessera_core::codes::CodeKind::Emergency, &bytes).unwrap()
    });
    let v = verify(dir.path());
    for kind in ["license-file.ed25519.txt", "activation-token.ed25519.txt", "emergency.code"] {
        assert_ne!(v[kind], true, "an altered {kind} must not verify: {v}");
    }
    assert_eq!(v["response.code"], true, "untouched vectors still verify: {v}");
}
