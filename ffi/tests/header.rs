//! include/tessera.h is what cbindgen makes of src/lib.rs: a change to the ABI that forgot the header fails here.
//! `TESSERA_BLESS=1 cargo test -p tessera-ffi --test header` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn the_header_matches_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut made = Vec::new();
    cbindgen::Builder::new().with_config(config).with_src(dir.join("src/lib.rs")).generate().unwrap().write(&mut made);
    let made = String::from_utf8(made).unwrap();
    let path = dir.join("include/tessera.h");
    if std::env::var_os("TESSERA_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == made,
        "include/tessera.h differs from what src/lib.rs declares: run `TESSERA_BLESS=1 cargo test -p tessera-ffi \
         --test header`, review the diff, and bump TESSERA_ABI_VERSION if a signature or a layout changed"
    );
    // The version the header announces is the library's.
    assert!(made.contains(&format!("#define TESSERA_ABI_VERSION {}", tessera::TESSERA_ABI_VERSION)), "{made}");
}
