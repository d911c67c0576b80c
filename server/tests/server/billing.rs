//! The billing report (`GET /v1/billing/report`) against hand-computed bills: base charges of the periods that
//! start in the month, metered use past the included amounts priced graduated, per package and per unit, rounding
//! half up once per period, totals exact per currency; trials and other tenants' customers not billed.

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::common::*;

async fn ok(h: &Harness, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let (s, v) = h.call(method, path, Some(token), body).await;
    assert!(s.is_success(), "{path}: {s} {v}");
    v
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn line<'a>(bill: &'a Value, kind: &str, metric: Option<&str>) -> &'a Value {
    bill["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == kind && metric.is_none_or(|m| l["metric"] == m))
        .unwrap_or_else(|| panic!("no {kind} {metric:?} line in {bill}"))
}

#[tokio::test]
async fn a_month_bills_base_prices_and_use_past_the_included_amounts_exactly() {
    let h = Harness::new().await;
    *h.now.lock().unwrap() = at("2026-11-20T12:00:00Z");
    let f = h.fixture("billing", 3, "SUBSCRIPTION").await;
    let t = f.token.clone();
    let p = f.product.to_string();
    let plan = |body: Value| {
        let mut b = json!({"product_id": p, "template_id": f.template});
        b.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        b
    };
    // Pro: 29.00 EUR a month, 1,000 API calls a month included then graduated per 10 calls; 10 exports a day
    // included then 2.00 EUR per started package of 5.
    let pro = ok(&h, Method::POST, "/v1/plans", &t, Some(plan(json!({"name": "Pro", "trial_days": 14,
        "features": [{"id": "export_pdf"}],
        "prices": [{"interval": "MONTH", "amount": 2900, "currency": "EUR"}],
        "limits": [
            {"metric": "api_calls", "limit": 1000, "period": "MONTH", "overage": {"model": "GRADUATED", "currency": "eur", "per": 10,
              "tiers": [{"up_to": 100, "unit_amount": 50}, {"up_to": 1000, "unit_amount": 30}, {"unit_amount": 12}]}},
            {"metric": "exports", "limit": 10, "period": "DAY", "overage": {"model": "PACKAGE", "currency": "EUR", "package_size": 5, "package_amount": 200}},
            {"metric": "sms", "limit": 0, "period": "DAY", "overage": {"model": "PER_UNIT", "currency": "EUR", "unit_amount": 1, "per": 2}}
        ]}))))
    .await;
    // Extra: 5.00 EUR a month, 500 more calls included (its own overage price is not used: the plan's comes first).
    let extra = ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "Extra", "kind": "ADD_ON",
        "category": "capacity", "prices": [{"interval": "MONTH", "amount": 500, "currency": "EUR"}],
        "limits": [{"metric": "api_calls", "limit": 500, "period": "MONTH",
                    "overage": {"model": "PER_UNIT", "currency": "EUR", "unit_amount": 1, "per": 1000}}]})),
    )
    .await;
    let sub = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": f.customer,
        "plan_id": pro["id"], "add_ons": [extra["id"]], "trial": false})),
    )
    .await;
    // Metered with an overage price: included, not capped; the license grants the metric without a quota.
    let lic = ok(&h, Method::GET, &format!("/v1/licenses/{}", sub["license_id"].as_str().unwrap()), &t, None).await;
    let calls = lic["features"].as_array().unwrap().iter().find(|f| f["id"] == "api_calls").unwrap().clone();
    assert_eq!(calls["limit_value"], -1, "{calls}");
    // A trial in the same month is not billed.
    // Trials are not billed, neither their use (metered metrics have no cap, so a trial can use them) nor a trial
    // cancelled at once.
    let other = ok(&h, Method::POST, "/v1/customers", &t, Some(json!({"name": "Trialist"}))).await;
    let trial =
        ok(&h, Method::POST, "/v1/subscriptions", &t, Some(json!({"customer_id": other["id"], "plan_id": pro["id"]})))
            .await;
    assert_eq!(trial["status"], "TRIALING");
    let quitter = ok(&h, Method::POST, "/v1/customers", &t, Some(json!({"name": "Quitter"}))).await;
    let quit = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": quitter["id"], "plan_id": pro["id"]})),
    )
    .await;
    ok(
        &h,
        Method::POST,
        &format!("/v1/subscriptions/{}/cancel", quit["id"].as_str().unwrap()),
        &t,
        Some(json!({"at": "NOW"})),
    )
    .await;
    let trial_use = json!({"id": uuid::Uuid::now_v7(), "license_id": trial["license_id"], "feature": "api_calls",
        "amount": 50_000, "recorded_at": "2026-11-20T12:00:00Z"});
    let (st, v) = h.post("/v1/usage", Some(&t), json!({"events": [trial_use]})).await;
    assert_eq!((st, v["recorded"].as_u64()), (StatusCode::OK, Some(1)), "{v}");

    h.advance(Duration::days(5));
    let license = sub["license_id"].as_str().unwrap();
    let ev = |feature: &str, amount: u64, when: &str| json!({"id": uuid::Uuid::now_v7(), "license_id": license, "feature": feature, "amount": amount, "recorded_at": when});
    let events = vec![
        ev("api_calls", 3000, "2026-11-21T10:00:00Z"),
        ev("exports", 17, "2026-11-21T11:00:00Z"),
        ev("api_calls", 734, "2026-11-22T10:00:00Z"),
        ev("exports", 10, "2026-11-22T11:00:00Z"),
        ev("sms", 1, "2026-11-21T12:00:00Z"),
        ev("sms", 1, "2026-11-22T12:00:00Z"),
    ];
    let (st, v) = h.post("/v1/usage", Some(&t), json!({"events": events})).await;
    assert_eq!((st, v["recorded"].as_u64()), (StatusCode::OK, Some(6)), "{v}");

    let report = ok(&h, Method::GET, "/v1/billing/report?month=2026-11", &t, None).await;
    let bills = report["customers"].as_array().unwrap();
    assert_eq!(bills.len(), 1, "only the paying customer: {report}");
    let bill = &bills[0];
    assert_eq!(bill["customer_id"], f.customer.as_str());
    assert_eq!(
        (line(bill, "BASE", None)["amount"].as_i64(), line(bill, "BASE", None)["quantity"].as_u64()),
        (Some(2900), Some(1))
    );
    assert_eq!(line(bill, "ADD_ON", None)["amount"], 500);
    // api_calls: 3,734 used, 1,500 included (plan + add-on), 2,234 billable, graduated per 10 calls:
    // 100 × 50/10 = 500, 900 × 30/10 = 2,700, 1,234 × 12/10 = 1,480.8 → exact 4,680.8, rounded half up: 4,681.
    let calls = line(bill, "USAGE", Some("api_calls"));
    assert_eq!(
        (calls["used"].as_u64(), calls["included"].as_u64(), calls["quantity"].as_u64(), calls["amount"].as_i64()),
        (Some(3734), Some(1500), Some(2234), Some(4681)),
        "{calls}"
    );
    // exports per day: 17 on the 21st (7 past 10: two started packages, 400), 10 on the 22nd (nothing past).
    let exports = line(bill, "USAGE", Some("exports"));
    assert_eq!((exports["quantity"].as_u64(), exports["amount"].as_i64()), (Some(7), Some(400)), "{exports}");
    // sms at half a cent each, one a day: each day's 0.5 rounds up to 1, so two days are 2 (rounded once per day,
    // not 1 for the month's 1.0).
    let sms = line(bill, "USAGE", Some("sms"));
    assert_eq!((sms["quantity"].as_u64(), sms["amount"].as_i64()), (Some(2), Some(2)), "{sms}");
    assert_eq!(bill["totals"], json!([{"currency": "EUR", "amount": 2900 + 500 + 4681 + 400 + 2}]));
    assert_eq!(report["totals"], bill["totals"]);
    assert!(report["rounding"].as_str().unwrap().contains("half up"));

    // December: the renewal on the 20th is billed; no use, so no usage lines. November's bill stays as it was.
    h.advance(Duration::days(26));
    ok(&h, Method::POST, "/v1/jobs/run", &h.admin, None).await;
    let dec = ok(&h, Method::GET, "/v1/billing/report?month=2026-12", &t, None).await;
    // (The trial has ended unconverted meanwhile; it is billed nothing either.)
    assert_eq!(dec["totals"], json!([{"currency": "EUR", "amount": 3400}]), "{dec}");
    assert_eq!(ok(&h, Method::GET, "/v1/billing/report?month=2026-11", &t, None).await["totals"], report["totals"]);
    // October: nothing yet.
    let oct = ok(&h, Method::GET, "/v1/billing/report?month=2026-10", &t, None).await;
    assert_eq!((oct["customers"].as_array().unwrap().len(), oct["totals"].clone()), (0, json!([])));

    // Another tenant sees none of it, even naming the customer.
    let g = h.fixture("billing-other", 1, "SUBSCRIPTION").await;
    let theirs =
        ok(&h, Method::GET, &format!("/v1/billing/report?month=2026-11&customer_id={}", f.customer), &g.token, None)
            .await;
    assert_eq!(theirs["customers"], json!([]));

    // An add-on whose limit of a metered metric counts over another period cannot be added: refused.
    let pack = ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "Export pack",
        "kind": "ADD_ON", "category": "capacity", "limits": [{"metric": "exports", "limit": 100, "period": "MONTH"}]})),
    )
    .await;
    let (st, v) = h
        .post(
            "/v1/subscriptions",
            Some(&t),
            json!({"customer_id": f.customer, "plan_id": pro["id"], "add_ons": [pack["id"]], "trial": false}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("same period"), "{v}");

    // Bad months and bad overage prices are refused with what to do.
    for m in ["2026-13", "2026-1", "november", ""] {
        let (st, v) = h.call(Method::GET, &format!("/v1/billing/report?month={m}"), Some(&t), None).await;
        assert!(st == StatusCode::UNPROCESSABLE_ENTITY || st == StatusCode::BAD_REQUEST, "{m}: {st} {v}");
    }
    let (st, _) = h.call(Method::GET, "/v1/billing/report", Some(&t), None).await;
    assert!(st.is_client_error(), "month is required");
    let bad = |overage: Value, period: &str| {
        plan(
            json!({"name": "Bad", "tier": "BAD", "limits": [{"metric": "m", "limit": 1, "period": period, "overage": overage}]}),
        )
    };
    for (body, why) in [
        (bad(json!({"model": "PER_UNIT", "currency": "EUR", "unit_amount": 1}), "LIFETIME"), "per DAY or MONTH"),
        (bad(json!({"model": "PER_UNIT", "currency": "XXX1", "unit_amount": 1}), "DAY"), "ISO 4217"),
        (bad(json!({"model": "PER_UNIT", "currency": "EUR", "unit_amount": -1}), "DAY"), "minor units"),
        (
            bad(json!({"model": "PACKAGE", "currency": "EUR", "package_size": 0, "package_amount": 1}), "DAY"),
            "package_size",
        ),
        (bad(json!({"model": "GRADUATED", "currency": "EUR", "tiers": []}), "DAY"), "1 to 16 tiers"),
        (
            bad(json!({"model": "GRADUATED", "currency": "EUR", "tiers": [{"up_to": 5, "unit_amount": 1}]}), "DAY"),
            "last tier",
        ),
        (
            bad(
                json!({"model": "GRADUATED", "currency": "EUR", "tiers": [{"up_to": 5, "unit_amount": 1}, {"up_to": 5, "unit_amount": 1}, {"unit_amount": 1}]}),
                "DAY",
            ),
            "not after",
        ),
        (bad(json!({"model": "PER_UNIT", "currency": "EUR", "unit_amount": 1, "surprise": 1}), "DAY"), "surprise"),
    ] {
        let (st, v) = h.post("/v1/plans", Some(&t), body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{why}: {v}");
    }
}
