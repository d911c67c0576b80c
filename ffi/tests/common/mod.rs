//! What the tests that load libtessera from outside Rust (C, Python) share.

use std::path::PathBuf;

/// The directory cargo put libtessera.so in for this test (beside the test binary).
pub fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    assert!(
        deps.join("libtessera.so").exists(),
        "no libtessera.so in {}: build it with `cargo build -p tessera-ffi`",
        deps.display()
    );
    deps
}
