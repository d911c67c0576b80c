//! Vendor builds: the keyset, product id and policy limits a build of `tessera-agent` trusts are compiled in.
//!
//! Set these when building (see agent/README.md, "Vendor builds"):
//! - `TESSERA_VENDOR_KEYSET`: path to the public keyset JSON (`tessera-server keys export`). Required for a
//!   vendor build; without it the binary is a development build and says so in every output.
//! - `TESSERA_VENDOR_PRODUCT_ID`: the product id (UUID) the build licenses. Required with the keyset.
//! - `TESSERA_VENDOR_MAX_CLOCK_TOLERANCE_SECS`: the most clock tolerance a user may choose (default 3600).
//! - `TESSERA_VENDOR_NAME`: the vendor's name, shown by `--version` and `status`.
//!
//! The script checks what it can without the agent's own crates (the keyset is JSON with a `keys` list, the
//! product id is a UUID); the agent parses the keyset with tessera-core at start and a unit test does too.
use std::path::PathBuf;

const VARS: [&str; 4] = [
    "TESSERA_VENDOR_KEYSET",
    "TESSERA_VENDOR_PRODUCT_ID",
    "TESSERA_VENDOR_MAX_CLOCK_TOLERANCE_SECS",
    "TESSERA_VENDOR_NAME",
];

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn fail(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn is_uuid(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) && (s.len() == 32 || s.len() == 36)
}

fn main() {
    for v in VARS {
        println!("cargo::rerun-if-env-changed={v}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR is not set".into())));
    let keyset = var("TESSERA_VENDOR_KEYSET");
    let product = var("TESSERA_VENDOR_PRODUCT_ID");
    let tolerance = var("TESSERA_VENDOR_MAX_CLOCK_TOLERANCE_SECS");
    let name = var("TESSERA_VENDOR_NAME");
    let code = match (keyset, product) {
        (None, None) => {
            if tolerance.is_some() || name.is_some() {
                fail("TESSERA_VENDOR_MAX_CLOCK_TOLERANCE_SECS / TESSERA_VENDOR_NAME need TESSERA_VENDOR_KEYSET and TESSERA_VENDOR_PRODUCT_ID".into());
            }
            "pub const VENDOR: Option<crate::vendor::CompiledIn> = None;\n".to_string()
        }
        (Some(path), Some(product)) => {
            let path = PathBuf::from(path);
            println!("cargo::rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| fail(format!("TESSERA_VENDOR_KEYSET: cannot read {}: {e}", path.display())));
            if !text.contains("\"keys\"") || !text.contains("\"public_key\"") {
                fail(format!(
                    "TESSERA_VENDOR_KEYSET: {} is not a public keyset (the JSON from `tessera-server keys export`)",
                    path.display()
                ));
            }
            if text.contains("PRIVATE KEY") {
                fail(format!(
                    "TESSERA_VENDOR_KEYSET: {} holds a private key: export the public keyset",
                    path.display()
                ));
            }
            if !is_uuid(&product) {
                fail(format!("TESSERA_VENDOR_PRODUCT_ID: {product:?} is not a UUID"));
            }
            let tolerance: i64 = match tolerance {
                None => 3600,
                Some(t) => t.parse().ok().filter(|t| (0..=86_400 * 7).contains(t)).unwrap_or_else(|| {
                    fail(format!(
                        "TESSERA_VENDOR_MAX_CLOCK_TOLERANCE_SECS: {t:?} is not a number of seconds from 0 to 604800"
                    ))
                }),
            };
            let copy = out.join("vendor-keyset.json");
            std::fs::write(&copy, &text).unwrap_or_else(|e| fail(format!("cannot write {}: {e}", copy.display())));
            format!(
                "pub const VENDOR: Option<crate::vendor::CompiledIn> = Some(crate::vendor::CompiledIn {{\n    keyset_json: include_str!({copy:?}),\n    product_id: {product:?},\n    max_clock_tolerance_secs: {tolerance},\n    name: {name:?},\n}});\n"
            )
        }
        _ => fail("a vendor build needs both TESSERA_VENDOR_KEYSET and TESSERA_VENDOR_PRODUCT_ID".into()),
    };
    let file = out.join("vendor.rs");
    std::fs::write(&file, code).unwrap_or_else(|e| fail(format!("cannot write {}: {e}", file.display())));
}
