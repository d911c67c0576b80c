//! Server-side usage ingestion (`POST /v1/usage`): batches recorded exactly once per event id, quotas checked as
//! events are recorded, refusals per event, tenant isolation, and malformed batches refused whole.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;

fn ev(license: &str, feature: &str, amount: u64) -> Value {
    json!({"id": Uuid::now_v7(), "license_id": license, "feature": feature, "amount": amount})
}

async fn ingest(h: &Harness, token: &str, events: Vec<Value>) -> Value {
    let (s, v) = h.post("/v1/usage", Some(token), json!({"events": events})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn outcomes(v: &Value) -> Vec<&str> {
    v["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect()
}

async fn total(h: &Harness, f: &Fixture, feature: &str) -> i64 {
    let db = rusqlite::Connection::open(tessera_server::db_path(h._dir.path())).unwrap();
    db.query_row(
        "SELECT COALESCE(SUM(total), 0) FROM usage_totals WHERE license_id = ?1 AND feature = ?2",
        [f.license.as_str(), feature],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn a_batch_is_recorded_once_within_quotas_and_every_event_is_answered() {
    let h = Harness::new().await;
    let f = h.fixture("ingest", 3, "SUBSCRIPTION").await;
    let t = f.token.as_str();
    let l = f.license.as_str();

    // export_pdf is unlimited; api_calls has a quota of 5.
    let first = ev(l, "api_calls", 3);
    let batch = vec![
        first.clone(),
        ev(l, "export_pdf", 1000),
        ev(l, "api_calls", 3), // 3 + 3 > 5: refused whole
        ev(l, "api_calls", 2), // exactly to the quota
        first.clone(),         // the same event again in the batch
        ev(l, "teleport", 1),
        json!({"id": Uuid::now_v7(), "license_key": f.key, "feature": "export_pdf", "amount": 1}),
    ];
    let v = ingest(&h, t, batch).await;
    assert_eq!(
        outcomes(&v),
        ["RECORDED", "RECORDED", "QUOTA_EXCEEDED", "RECORDED", "DUPLICATE", "NOT_ENTITLED", "RECORDED"]
    );
    assert_eq!((v["recorded"].as_u64(), v["duplicates"].as_u64(), v["refused"].as_u64()), (Some(4), Some(1), Some(2)));
    let r = &v["results"];
    assert_eq!((r[0]["total"].as_u64(), r[0]["remaining"].as_u64()), (Some(3), Some(2)));
    assert_eq!(
        (r[2]["total"].as_u64(), r[2]["remaining"].as_u64()),
        (Some(3), Some(2)),
        "the refusal says what is left"
    );
    assert_eq!((r[3]["total"].as_u64(), r[3]["remaining"].as_u64()), (Some(5), Some(0)));
    assert_eq!(r[6]["total"], 1001, "by key, the same license");
    assert!(r[1].get("remaining").is_none(), "unlimited: no remaining");
    assert_eq!((total(&h, &f, "api_calls").await, total(&h, &f, "export_pdf").await), (5, 1001));

    // Sending the whole batch again counts nothing again; a reused id with another amount is a conflict.
    let again = ingest(&h, t, vec![first.clone()]).await;
    assert_eq!(outcomes(&again), ["DUPLICATE"]);
    let mut changed = first.clone();
    changed["amount"] = json!(1);
    assert_eq!(outcomes(&ingest(&h, t, vec![changed]).await), ["ID_CONFLICT"]);
    assert_eq!(total(&h, &f, "api_calls").await, 5);

    // The heartbeat path and this one share the totals: the license's usage shows it.
    let (_, lic) = h.get(&format!("/v1/licenses/{l}"), Some(t)).await;
    assert_eq!(lic["id"], l);
    let (_, audit) = h.get("/v1/audit?action=usage.ingest", Some(t)).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 3, "one audit entry per batch: {audit}");

    // A suspended license takes no usage.
    h.post(&format!("/v1/licenses/{l}/suspend"), Some(t), json!({})).await;
    assert_eq!(outcomes(&ingest(&h, t, vec![ev(l, "export_pdf", 1)]).await), ["LICENSE_NOT_USABLE"]);
    assert_eq!(total(&h, &f, "export_pdf").await, 1001);
}

#[tokio::test]
async fn malformed_batches_are_refused_whole_and_other_tenants_are_unknown() {
    let h = Harness::new().await;
    let a = h.fixture("ingest-a", 3, "SUBSCRIPTION").await;
    let b = h.fixture("ingest-b", 3, "SUBSCRIPTION").await;
    let l = a.license.as_str();
    let good = ev(l, "export_pdf", 1);
    let many: Vec<Value> = (0..1001).map(|_| ev(l, "export_pdf", 1)).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"events": []}), "1 to 1000 events"),
        (json!({"events": many}), "1 to 1000 events"),
        (
            json!({"events": [good, {"id": Uuid::now_v7(), "feature": "export_pdf", "amount": 1}]}),
            "events[1]: give license_id or license_key",
        ),
        (
            json!({"events": [{"id": Uuid::now_v7(), "license_id": l, "license_key": a.key, "feature": "export_pdf", "amount": 1}]}),
            "one of them",
        ),
        (json!({"events": [ev(l, "export_pdf", 0)]}), "amount must be 1"),
        (json!({"events": [ev(l, "export_pdf", 1 << 41)]}), "amount must be 1"),
        (json!({"events": [ev(l, "bad feature", 1)]}), "events[0]"),
        (json!({"events": [{"id": Uuid::now_v7(), "license_id": l, "feature": "export_pdf", "amount": -1}]}), "amount"),
        (json!({"events": [{"id": "nope", "license_id": l, "feature": "export_pdf", "amount": 1}]}), "id"),
        (
            json!({"events": [{"id": Uuid::now_v7(), "license_key": "TSK-NOPE", "feature": "export_pdf", "amount": 1}]}),
            "INVALID_LICENSE_KEY",
        ),
        (json!({"events": [ev(l, "export_pdf", 1)], "extra": 1}), "unknown field"),
    ];
    for (body, expect) in cases {
        let (s, v) = h.post("/v1/usage", Some(&a.token), body.clone()).await;
        assert!(s.is_client_error(), "{s} {v}");
        let code = err_code(&v);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(code == expect || msg.contains(expect), "expected {expect:?}, got {code} {msg}");
    }
    assert_eq!(total(&h, &a, "export_pdf").await, 0, "nothing of a refused batch was recorded");

    // Tenant B names A's license by id and by key: unknown, and nothing recorded.
    let v = ingest(
        &h,
        &b.token,
        vec![
            ev(l, "export_pdf", 7),
            json!({"id": Uuid::now_v7(), "license_key": a.key, "feature": "export_pdf", "amount": 7}),
        ],
    )
    .await;
    assert_eq!(outcomes(&v), ["LICENSE_NOT_FOUND", "LICENSE_NOT_FOUND"]);
    assert_eq!(total(&h, &a, "export_pdf").await, 0);

    // Recording usage changes billing data: a read-only token may not.
    let (_, ro) = h.post("/v1/tokens", Some(&a.token), json!({"name": "ro", "role": "read-only"})).await;
    let (s, v) = h
        .call(Method::POST, "/v1/usage", ro["token"].as_str(), Some(json!({"events": [ev(l, "export_pdf", 1)]})))
        .await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
}

#[tokio::test]
async fn summaries_add_up_use_per_month_and_day_for_a_license_or_a_customer() {
    let h = Harness::new().await;
    let f = h.fixture("summary", 3, "SUBSCRIPTION").await;
    let other = h.fixture("summary-other", 3, "SUBSCRIPTION").await;
    let t = f.token.as_str();
    let l = f.license.as_str();
    let at = |day: &str, amount: u64, feature: &str| {
        json!({"id": Uuid::now_v7(), "license_id": l, "feature": feature, "amount": amount,
               "recorded_at": format!("{day}T12:00:00Z")})
    };
    let v = ingest(
        &h,
        t,
        vec![
            at("2026-10-30", 10, "export_pdf"),
            at("2026-10-31", 5, "export_pdf"),
            at("2026-11-01", 7, "export_pdf"),
            at("2026-11-01", 1, "api_calls"),
        ],
    )
    .await;
    assert_eq!(v["recorded"], 4, "{v}");
    // A second license of the same customer.
    let (_, second) =
        h.post("/v1/licenses", Some(t), json!({"template_id": f.template, "customer_id": f.customer})).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    let mut e = at("2026-11-15", 100, "export_pdf");
    e["license_id"] = json!(second_id);
    ingest(&h, t, vec![e]).await;

    let window = "from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z";
    let (s, m) = h.get(&format!("/v1/usage/summary?license_id={l}&{window}"), Some(t)).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let rows: Vec<(String, String, i64)> = m["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"].as_str().unwrap().into(),
                r["period_start"].as_str().unwrap()[..10].into(),
                r["total"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("api_calls".into(), "2026-11-01".into(), 1),
            ("export_pdf".into(), "2026-10-01".into(), 15),
            ("export_pdf".into(), "2026-11-01".into(), 7)
        ]
    );
    assert_eq!(
        m["totals"],
        json!([{"metric": "api_calls", "total": 1, "events": 1}, {"metric": "export_pdf", "total": 22, "events": 3}])
    );

    let (_, d) =
        h.get(&format!("/v1/usage/summary?license_id={l}&metric=export_pdf&period=DAY&{window}"), Some(t)).await;
    let days: Vec<&str> =
        d["rows"].as_array().unwrap().iter().map(|r| &r["period_start"].as_str().unwrap()[..10]).collect();
    assert_eq!(days, ["2026-10-30", "2026-10-31", "2026-11-01"]);

    // The customer's: both licenses; a window that ends before November leaves November out.
    let (_, c) =
        h.get(&format!("/v1/usage/summary?customer_id={}&metric=export_pdf&{window}", f.customer), Some(t)).await;
    assert_eq!(c["licenses"].as_array().unwrap().len(), 2, "{c}");
    assert_eq!(c["totals"][0]["total"], 122);
    let (_, oct) = h
        .get(&format!("/v1/usage/summary?license_id={l}&from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z"), Some(t))
        .await;
    assert_eq!(oct["totals"], json!([{"metric": "export_pdf", "total": 15, "events": 2}]));

    // Bad questions are refused with what to change; another tenant's license or customer is not found.
    for (q, code) in [
        ("", "VALIDATION_FAILED"),
        (&format!("license_id={l}&customer_id={}", f.customer) as &str, "VALIDATION_FAILED"),
        (&format!("license_id={l}&from=2026-11-01T00:00:00Z&to=2026-10-01T00:00:00Z"), "VALIDATION_FAILED"),
        (&format!("license_id={l}&period=DAY&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"), "VALIDATION_FAILED"),
        (&format!("license_id={l}&period=WEEK"), "BAD_REQUEST"),
        (&format!("license_id={l}&metric=no%20spaces"), "VALIDATION_FAILED"),
        ("license_id=nope", "BAD_REQUEST"),
    ] {
        let (s, v) = h.get(&format!("/v1/usage/summary?{q}"), Some(t)).await;
        assert!(s.is_client_error(), "{q}: {s} {v}");
        assert_eq!(err_code(&v), code, "{q}: {v}");
    }
    for q in [format!("license_id={l}"), format!("customer_id={}", f.customer)] {
        let (s, v) = h.get(&format!("/v1/usage/summary?{q}"), Some(&other.token)).await;
        assert_eq!((s, err_code(&v).as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND"), "{q}");
    }
}
