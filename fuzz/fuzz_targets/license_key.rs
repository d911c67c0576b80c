//! License key parsing: no panic; a parsed key prints back to a string that parses to the same key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_core::LicenseKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = LicenseKey::parse(text) {
        assert_eq!(LicenseKey::parse(&key.to_string()).expect("canonical form parses"), key);
    }
});
