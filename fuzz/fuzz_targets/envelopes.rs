//! Signed token and license file parsers, then verification against the public test keyset.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_core::envelope::Envelope;
use tessera_core::{token, PublicKeyset};

static KEYSET: &str = include_str!("../../keys/test/keyset.json");

fn keys() -> &'static PublicKeyset {
    static K: std::sync::OnceLock<PublicKeyset> = std::sync::OnceLock::new();
    K.get_or_init(|| PublicKeyset::from_json(KEYSET).expect("test keyset"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let keys = keys();
    if let Ok(env) = Envelope::from_compact(text) {
        assert_eq!(Envelope::from_compact(&env.to_compact()).expect("round trip"), env);
    }
    let _ = Envelope::from_armored(text);
    assert!(token::verify_license_file(text, keys).is_err() || text.contains("BEGIN TESSERA LICENSE"));
    let _ = token::verify_activation_token(text, keys);
});
