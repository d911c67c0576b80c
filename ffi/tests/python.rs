//! The Python package (ffi/python), built as a vendor would ship it: a wheel that carries this libtessera, installed
//! into a fresh directory, then its pytest suite run against the real `tessera-server` binary (online activation,
//! checks with the server stopped, request and response codes, quota use synced once, seat refusals, threads, bad
//! input, the example script). Needs python3 with pip, setuptools, wheel and pytest (`.ci/run` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod common;
use common::library_dir;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e} (install python3, or set PYTHON)"));
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn the_python_package_passes_its_suite_against_the_real_server() {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let work = tempfile::tempdir().unwrap();
    let missing = Command::new(python())
        .args(["-c", "import pytest, setuptools, wheel"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true);
    assert!(!missing, "python3 needs pytest, setuptools and wheel: python3 -m pip install pytest setuptools wheel");

    // The source tree with this build's library inside it, as the package README says to build a wheel.
    let source = work.path().join("source");
    for part in ["pyproject.toml", "setup.py", "README.md"] {
        std::fs::create_dir_all(&source).unwrap();
        std::fs::copy(package.join(part), source.join(part)).unwrap();
    }
    copy_dir(&package.join("tessera"), &source.join("tessera"));
    std::fs::copy(library_dir().join("libtessera.so"), source.join("tessera/libtessera.so")).unwrap();

    let dist = work.path().join("dist");
    run(
        Command::new(python())
            .args(["-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w"])
            .arg(&dist)
            .arg(&source),
        "pip wheel",
    );
    let wheel =
        std::fs::read_dir(&dist).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension() == Some("whl".as_ref()));
    let wheel = wheel.expect("pip wheel made no wheel");
    let name = wheel.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("tessera_agent-") && name.contains("-py3-none-") && !name.ends_with("-any.whl"), "{name}");

    let site = work.path().join("site");
    run(
        Command::new(python())
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target"])
            .arg(&site)
            .arg(&wheel),
        "pip install",
    );
    assert!(site.join("tessera/libtessera.so").exists(), "the wheel carries the library");

    // The suite imports the installed package (not the source tree) and finds its library inside it.
    let out = run(
        Command::new(python())
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-W",
                "error::pytest.PytestUnraisableExceptionWarning",
            ])
            .arg(package.join("tests"))
            .current_dir(work.path())
            .env("PYTHONPATH", &site)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("TESSERA_EXPECT_PACKAGE_IN", &site)
            .env("TESSERA_SERVER_BIN", tessera_test_support::bin("tessera-server"))
            .env_remove("TESSERA_LIBRARY"),
        "pytest",
    );
    assert!(out.contains(" passed"), "{out}");
    assert!(!out.contains("skipped"), "no test may be skipped: {out}");
}
