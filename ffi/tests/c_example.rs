//! The C example (examples/gate.c), compiled with the system's C compiler against libtessera and the header,
//! drives the real server: online activation, a feature check, quota use synced once by a heartbeat; then, with
//! the server stopped, the same checks answer offline. An online run and the offline run are repeated under
//! valgrind: no invalid access and no leak across the boundary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_test_support::TestServer;

mod common;
use common::library_dir;

/// The vendor keyset as a C header, compiled into the example like an application would.
fn keyset_header(dir: &Path, json: &str) {
    let escaped: String = json
        .chars()
        .map(|c| match c {
            '"' => "\\\"".to_string(),
            '\\' => "\\\\".to_string(),
            '\n' => "\\n".to_string(),
            c => c.to_string(),
        })
        .collect();
    std::fs::write(dir.join("keyset.h"), format!("static const char KEYSET_JSON[] = \"{escaped}\";\n")).unwrap();
}

fn compile(dir: &Path) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let libs = library_dir();
    let out = dir.join("gate");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let r = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-I")
        .arg(dir)
        .arg(crate_dir.join("examples/gate.c"))
        .arg("-L")
        .arg(&libs)
        .arg(format!("-Wl,-rpath,{}", libs.display()))
        .arg("-ltessera")
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e} (install gcc, or set CC)"));
    assert!(r.status.success(), "gate.c does not compile: {}", String::from_utf8_lossy(&r.stderr));
    out
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn used_on_server(server: &TestServer, license: &str) -> i64 {
    let db = rusqlite::Connection::open(tessera_server::db_path(server.dir.path())).unwrap();
    db.query_row(
        "SELECT COALESCE(SUM(total), 0) FROM usage_totals WHERE license_id = ?1 AND feature = 'api_calls'",
        [license],
        |r| r.get(0),
    )
    .unwrap()
}

/// `program` under valgrind: exit 99 on an invalid access or a definite leak.
fn valgrind(program: &Path) -> Command {
    let version = Command::new("valgrind").arg("--version").output();
    assert!(version.is_ok_and(|o| o.status.success()), "valgrind is missing: install it (apt-get install valgrind)");
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite", "--quiet"]).arg(program);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_program_gates_a_feature_online_then_offline_without_leaks() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("c-example", serde_json::json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    keyset_header(dir.path(), &server.keyset().to_json());
    let gate = compile(dir.path());
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let product = fx.product.to_string();
    let url = server.url();

    // Online: activate, check, use 3 units, heartbeat (the use reaches the server once).
    let (code, out, err) = run(Command::new(&gate).args([state, &product, &url, &fx.key]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("activated: {\"activation_id\":"), "{out}");
    assert!(out.contains("export_pdf: allowed (VALID)"), "{out}");
    assert!(out.contains("api_calls: recorded (VALID), 3 used of 100, 97 left"), "{out}");
    assert!(out.contains("\"usage_acknowledged\":1"), "{out}");
    assert_eq!(used_on_server(&server, &fx.license), 3);

    // A mistyped key is refused before anything is sent, with a message that says so.
    let other = dir.path().join("other.db");
    let (code, out, err) =
        run(Command::new(&gate).args([other.to_str().unwrap(), &product, &url, "TSR-NOPE-NOPE-NOPE-NOPE"]));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.starts_with("activate failed (status 7"), "a malformed key is BAD_KEY: {err}");
    assert!(err.contains("license key"), "the message says what is wrong: {err}");

    // The online flow under valgrind as well: the activation and heartbeat outcomes are strings the caller frees.
    let watched = dir.path().join("watched.db");
    let (code, out, err) = run(valgrind(&gate).args([watched.to_str().unwrap(), &product, &url, &fx.key]));
    assert_eq!(code, 0, "valgrind found errors:\n{out}\n{err}");
    assert!(out.contains("activated: {\"activation_id\":") && out.contains("\"usage_acknowledged\":1"), "{out}");

    // Offline: the server is gone; the checks answer from the signed cache and the use is kept for later.
    server.stop().await;
    let (code, out, err) = run(Command::new(&gate).args([state, &product, &url]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("export_pdf: allowed (VALID)"), "{out}");
    assert!(out.contains("api_calls: recorded (VALID), 6 used of 100, 94 left"), "{out}");
    assert!(out.contains("heartbeat: server unreachable, working offline"), "{out}");

    // The same run under valgrind: no invalid read or write, nothing definitely lost.
    let (code, out, err) = run(valgrind(&gate).args([state, &product, "-"]));
    assert_eq!(code, 0, "valgrind found errors:\n{out}\n{err}");
    assert!(out.contains("api_calls: recorded (VALID), 9 used of 100, 91 left"), "{out}");
}
