//! `/v1/openapi.json` against what the server serves: the same routes both ways, every route's answer and body
//! described by a real schema, every refusal code one of the protocol's.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use tessera_core::protocol::ErrorCode;
use tessera_server::http::openapi::{errors_of, ROUTES};

use crate::common::Harness;

/// (method, path) of every `.route(...)` the router is built with (server/src/http/mod.rs).
fn served_routes() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs")).unwrap();
    let re_method = regex::Regex::new(r"\b(get|post|patch|put|delete)\(").unwrap();
    let mut out = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, ch)| {
                depth += match ch {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(chunk.len(), |(i, _)| i);
        let args = &chunk[..end];
        let path = args.split('"').nth(1).unwrap().to_string();
        for m in re_method.captures_iter(args) {
            out.insert((m[1].to_string(), path.clone()));
        }
    }
    out
}

#[test]
fn the_document_has_every_served_route_and_no_other() {
    let served = served_routes();
    assert!(served.len() > 50, "the route parser found only {served:?}");
    let documented: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in http::openapi::ROUTES: {undocumented:?}");
    assert!(unserved.is_empty(), "in http::openapi::ROUTES but not served: {unserved:?}");
    assert_eq!(documented.len(), ROUTES.len(), "a route is listed twice");
    let ids: BTreeSet<String> = ROUTES.iter().map(tessera_server::http::openapi::operation_id).collect();
    assert_eq!(ids.len(), ROUTES.len(), "two routes share an operationId");
}

#[tokio::test]
async fn every_documented_route_is_served_with_its_method() {
    let h = Harness::new().await;
    for r in ROUTES {
        let path = r.path.replace("{id}", "0190f5a2-0000-7000-8000-000000000001");
        let method = Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()).unwrap();
        let body = (r.method != "get" && r.method != "delete").then(|| b"{}".to_vec());
        let (s, b) = h.raw(method, &path, Some(&h.admin.clone()), body, &[]).await;
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        let code = v["error"]["code"].as_str().unwrap_or_default();
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED && code != "NO_SUCH_ROUTE" && code != "METHOD_NOT_ALLOWED",
            "{} {path}: {s} {v}",
            r.method
        );
        if let Some(code) = v["error"]["code"].as_str() {
            let c = ErrorCode::parse(code);
            assert!(
                errors_of(r).contains(&c),
                "{} {path} answered {code}, which its document entry does not list",
                r.method
            );
            assert_eq!(s.as_u16(), c.status(), "{code}");
        }
    }
}

/// All `$ref`s in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_body_and_answer_has_a_real_schema_and_every_code_is_known() {
    let h = Harness::new().await;
    let (s, doc) = h.get("/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("foreign ref {r}"));
        let s = schemas.get(name).unwrap_or_else(|| panic!("{r} is not in components"));
        let described = ["properties", "enum", "oneOf", "anyOf", "allOf", "$ref"].iter().any(|k| s.get(*k).is_some())
            || s["type"].as_str().is_some_and(|t| t != "object");
        assert!(described, "{name} is described only as {s}");
    }
    let known: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|k| k.starts_with('2')), "{method} {path} has no success answer");
            // Actions whose whole meaning is in the path take no body.
            let bodiless = ["/jobs/run", "/deactivate", "/convert", "/pause", "/resume"];
            if ["post", "patch"].contains(&method.as_str()) && !bodiless.iter().any(|b| path.ends_with(b)) {
                assert!(op["requestBody"].is_object(), "{method} {path} documents no body");
            }
            for (status, resp) in responses.iter().filter(|(k, _)| !k.starts_with('2')) {
                let codes = resp["x-tessera-codes"].as_array().unwrap_or_else(|| panic!("{method} {path} {status}"));
                for c in codes {
                    let c = c.as_str().unwrap();
                    assert!(known.contains(c), "{method} {path} lists unknown code {c}");
                    assert_eq!(ErrorCode::parse(c).status().to_string(), *status, "{c} under {status}");
                }
            }
        }
    }
}
