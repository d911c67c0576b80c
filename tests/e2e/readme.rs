//! README.md is the user's door: the three activation flows it shows are `scripts/demo-flows.sh`'s output, and
//! this test runs that script with the built binaries and compares, transcript by transcript, what the README
//! says with what the binaries print now (ids, keys, codes, times and ports aside). The admin requests of its
//! set-up section are sent as written to a real server too.

use std::path::Path;
use std::process::Command;

use regex::Regex;
use serde_json::Value;
use tessera_test_support::TestServer;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// What varies from run to run, replaced by placeholders.
fn normalise(text: &str) -> String {
    let rules = [
        (r"TSK-[0-9A-Z]{5}(-[0-9A-Z]{5})+", "KEY"),
        (r"(REQ1|RSP1|RCT2|EMG1)(-[0-9A-Z]{1,5})+", "$1-CODE"),
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "ID"),
        (r"http://127\.0\.0\.1:\d+", "URL"),
        (r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?( UTC)?", "TIME"),
        (r"…[0-9a-f]{12}", "…HINT"),
        (r"seats used \d+/\d+", "seats used N/N"),
    ];
    let mut out = text.to_string();
    for (pattern, to) in rules {
        out = Regex::new(pattern).unwrap().replace_all(&out, to).into_owned();
    }
    out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim().to_string()
}

/// The ```console blocks of the README, in order.
fn readme_transcripts(readme: &str) -> Vec<String> {
    readme.split("```console\n").skip(1).map(|b| b.split("```").next().unwrap_or_default().to_string()).collect()
}

#[test]
fn the_readme_flows_are_what_the_binaries_print() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let bin = tessera_test_support::bin_dir();
    // The binaries cargo built with the suite.
    tessera_test_support::bin("tessera-server");
    tessera_test_support::bin("tessera-agent");
    let out = Command::new("bash")
        .arg(repo().join("scripts/demo-flows.sh"))
        .arg(&bin)
        .current_dir(repo())
        .output()
        .expect("bash runs scripts/demo-flows.sh (it needs curl and python3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scripts/demo-flows.sh failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // The README leaves out the development-build note each command prints.
    let printed: String =
        stdout.lines().filter(|l| !l.starts_with("note: development build")).collect::<Vec<_>>().join("\n");
    let sections: Vec<&str> = Regex::new(r"(?m)^## \d\. .*$").unwrap().split(&printed).skip(1).collect();
    let documented = readme_transcripts(&readme);
    assert_eq!(sections.len(), 3, "the script prints the three flows:\n{printed}");
    assert_eq!(documented.len(), 3, "the README shows the three flows");
    for (i, (doc, now)) in documented.iter().zip(&sections).enumerate() {
        assert_eq!(
            normalise(doc),
            normalise(now),
            "README transcript {} no longer matches the binaries: regenerate it with scripts/demo-flows.sh",
            i + 1
        );
    }
}

/// The admin requests of the README's set-up section (`#   POST /v1/… {…}`), sent in order with the ids they
/// name ("…") taken from the answers before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_set_up_requests_work_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let setup = readme
        .split("```sh\n")
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("POST /v1/templates"))
        .expect("the set-up block");
    // Each request: a path and its JSON body (continued on the indented comment lines that follow it).
    let start = Regex::new(r"^#\s+POST (/v1/\S+) (\{.*)$").unwrap();
    let curl = Regex::new(r"localhost:8080(/v1/\S+) -d '(.*)'$").unwrap();
    let mut requests: Vec<(String, String)> = Vec::new();
    for line in setup.lines() {
        if let Some(c) = curl.captures(line).or_else(|| start.captures(line)) {
            requests.push((c[1].to_string(), c[2].to_string()));
        } else if let (Some(last), Some(more)) = (requests.last_mut(), line.strip_prefix("#").map(str::trim)) {
            if more.starts_with('"') {
                last.1.push_str(more);
            }
        }
    }
    assert!(requests.len() >= 5, "the set-up section names its requests: {requests:?}");
    let server = TestServer::start().await;
    let admin = server.admin.clone();
    let mut token = admin.clone();
    let mut ids: serde_json::Map<String, Value> = serde_json::Map::new();
    for (path, body) in requests {
        // The first JSON value (an arrow and a comment may follow), with the "…" ids from earlier answers.
        let mut v: Value = serde_json::Deserializer::from_str(&body)
            .into_iter::<Value>()
            .next()
            .unwrap_or_else(|| panic!("{path}: no JSON body in {body}"))
            .unwrap_or_else(|e| panic!("{path} {body}: {e}"));
        for (k, val) in v.as_object_mut().unwrap() {
            if val == "…" {
                *val = ids.get(k).cloned().unwrap_or_else(|| panic!("{path}: no earlier answer gives {k}"));
            }
        }
        let (s, answer) = server.post(&path, &token, v.clone()).await;
        assert!(s.is_success(), "README request POST {path} {v} fails: {s} {answer}");
        let noun = path.trim_start_matches("/v1/").trim_end_matches('s');
        if let Some(id) = answer.get("id") {
            ids.insert(format!("{noun}_id"), id.clone());
        }
        if path == "/v1/tokens" {
            token = answer["token"].as_str().unwrap().to_string();
        }
    }
    assert!(ids.contains_key("license_id"), "the set-up ends with a license: {ids:?}");
}
