//! Subscriptions through the HTTP API, with the server's clock moved by the test: every transition (trial → paid,
//! trial → expiry or downgrade, upgrade, scheduled downgrade, cancel now and at period end, pause, renew) and what
//! the license says after each.

use axum::http::{Method, StatusCode};
use chrono::Duration;
use serde_json::{json, Value};

use crate::common::*;

struct Shop {
    f: Fixture,
    free: String,
    basic: String,
    premium: String,
    reports: String,
}

async fn ok(h: &Harness, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let (s, v) = h.call(method, path, Some(token), body).await;
    assert!(s.is_success(), "{path}: {s} {v}");
    v
}

async fn shop(h: &Harness, name: &str) -> Shop {
    let f = h.fixture(name, 3, "SUBSCRIPTION").await;
    let t = f.token.clone();
    let p = f.product.to_string();
    let plan = |body: Value| {
        let mut b = json!({"product_id": p, "template_id": f.template});
        b.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        b
    };
    let id = |v: Value| v["id"].as_str().unwrap().to_string();
    let free =
        id(ok(h, Method::POST, "/v1/plans", &t, Some(plan(json!({"name": "Free", "features": [{"id": "view"}]}))))
            .await);
    let basic = id(ok(
        h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(plan(json!({"name": "Basic", "features": [{"id": "view"}, {"id": "export_pdf"}],
        "limits": [{"metric": "api_calls", "limit": 100, "period": "LIFETIME"}],
        "prices": [{"interval": "MONTH", "amount": 1000, "currency": "EUR"}]}))),
    )
    .await);
    let premium = id(ok(h, Method::POST, "/v1/plans", &t, Some(plan(json!({"name": "Premium", "trial_days": 14,
        "features": [{"id": "view"}, {"id": "export_pdf"}, {"id": "crm"}],
        "limits": [{"metric": "api_calls", "limit": 1000, "period": "LIFETIME"}],
        "prices": [{"interval": "MONTH", "amount": 3000, "currency": "EUR"}, {"interval": "YEAR", "amount": 30000, "currency": "EUR"}]})))).await);
    let reports = id(ok(
        h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "Reports", "kind": "ADD_ON", "category": "reporting",
        "features": [{"id": "reports"}], "limits": [{"metric": "api_calls", "limit": 500, "period": "LIFETIME"}]})),
    )
    .await);
    Shop { f, free, basic, premium, reports }
}

fn features(license: &Value) -> Vec<String> {
    let mut f: Vec<String> =
        license["features"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
    f.sort();
    f
}

async fn license(h: &Harness, s: &Shop, sub: &Value) -> Value {
    ok(h, Method::GET, &format!("/v1/licenses/{}", sub["license_id"].as_str().unwrap()), &s.f.token, None).await
}

async fn run_jobs(h: &Harness) -> Value {
    ok(h, Method::POST, "/v1/jobs/run", &h.admin, None).await
}

#[tokio::test]
async fn a_trial_converts_upgrades_downgrades_at_period_end_and_renews() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-life").await;
    let t = s.f.token.clone();

    // Subscribe to Premium with the Reports add-on: a 14-day trial, and a license that grants both.
    let created = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": s.f.customer, "plan_id": s.premium, "add_ons": [s.reports]})),
    )
    .await;
    assert!(created["license_key"].as_str().unwrap().starts_with("TSK-"));
    assert_eq!((created["status"].as_str(), created["plan"]["tier"].as_str()), (Some("TRIALING"), Some("PREMIUM")));
    let id = created["id"].as_str().unwrap().to_string();
    let sub_path = format!("/v1/subscriptions/{id}");
    let lic = license(&h, &s, &created).await;
    assert_eq!(features(&lic), ["api_calls", "crm", "export_pdf", "reports", "view"]);
    let calls = lic["features"].as_array().unwrap().iter().find(|f| f["id"] == "api_calls").unwrap();
    assert_eq!(calls["limit_value"], 1500, "lifetime limits of plan and add-on add up");
    assert_eq!(lic["expires_at"], created["trial_ends_at"], "the license runs to the trial's end");
    assert_eq!(lic["license_type"], "SUBSCRIPTION");
    assert_eq!(lic["metadata"]["subscription_id"], id.as_str());
    let ent = &created["entitlements"];
    assert!(
        ent.as_array().unwrap().iter().any(|e| e["feature"] == "api_calls" && e["limit"] == 1500 && e["used"] == 0),
        "{ent}"
    );

    // Convert: the first month starts now.
    h.advance(Duration::days(3));
    let converted = ok(&h, Method::POST, &format!("{sub_path}/convert"), &t, None).await;
    assert_eq!(converted["status"], "ACTIVE");
    let lic = license(&h, &s, &converted).await;
    assert_eq!(lic["expires_at"], converted["current_period_end"]);
    let (st, v) = h.post(&format!("{sub_path}/convert"), Some(&t), json!({})).await;
    assert_eq!((st, err_code(&v).as_str()), (StatusCode::CONFLICT, "INVALID_TRANSITION"));

    // Downgrade to Basic at the period's end: Premium until then (and the add-on that still fits is kept).
    let scheduled =
        ok(&h, Method::POST, &format!("{sub_path}/change"), &t, Some(json!({"plan_id": s.basic, "at": "PERIOD_END"})))
            .await;
    assert_eq!(scheduled["plan"]["tier"], "PREMIUM");
    assert_eq!(scheduled["scheduled_change"]["plan_id"], s.basic.as_str());
    assert_eq!(scheduled["scheduled_change"]["at"], converted["current_period_end"]);
    assert!(features(&license(&h, &s, &scheduled).await).contains(&"crm".to_string()));

    // The period ends: the job renews it, applying the downgrade; the license follows.
    h.advance(Duration::days(31));
    let report = run_jobs(&h).await;
    assert_eq!(report["subscriptions_renewed"], 1, "{report}");
    let renewed = ok(&h, Method::GET, &sub_path, &t, None).await;
    assert_eq!((renewed["plan"]["tier"].as_str(), renewed["periods"].as_u64()), (Some("BASIC"), Some(1)));
    assert!(renewed.get("scheduled_change").is_none());
    assert_eq!(renewed["current_period_start"], converted["current_period_end"]);
    let lic = license(&h, &s, &renewed).await;
    assert_eq!(features(&lic), ["api_calls", "export_pdf", "reports", "view"]);
    assert_eq!(lic["expires_at"], renewed["current_period_end"]);
    assert_eq!(lic["status"], "ACTIVE");
    // The plan's and the add-on's lifetime quotas add up.
    let calls = lic["features"].as_array().unwrap().iter().find(|f| f["id"] == "api_calls").unwrap();
    assert_eq!(calls["limit_value"], 600);
    assert!(calls.get("limit_period").is_none(), "a lifetime quota: {calls}");

    // Upgrade takes effect at once.
    let up = ok(&h, Method::POST, &format!("{sub_path}/change"), &t, Some(json!({"plan_id": s.premium}))).await;
    assert_eq!(up["plan"]["tier"], "PREMIUM");
    assert!(features(&license(&h, &s, &up).await).contains(&"crm".to_string()));

    // A job run with nothing due changes nothing.
    let report = run_jobs(&h).await;
    assert_eq!((report["subscriptions_renewed"].as_u64(), report["subscriptions_ended"].as_u64()), (Some(0), Some(0)));

    // Every step is in the history, oldest first.
    let history = ok(&h, Method::GET, &format!("{sub_path}/history"), &t, None).await;
    let actions: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["created", "converted", "change_scheduled", "renewed", "upgraded"]);
    let (_, audit) = h.get("/v1/audit?action=subscription.upgraded", Some(&t)).await;
    assert_eq!(audit["items"][0]["target"], id.as_str());
}

#[tokio::test]
async fn unconverted_trials_expire_or_move_to_the_lowest_plan() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-trials").await;
    let t = s.f.token.clone();
    let expire =
        ok(&h, Method::POST, "/v1/subscriptions", &t, Some(json!({"customer_id": s.f.customer, "plan_id": s.premium})))
            .await;
    let downgrade = ok(&h, Method::POST, "/v1/subscriptions", &t,
        Some(json!({"customer_id": s.f.customer, "plan_id": s.premium, "on_trial_end": "DOWNGRADE", "add_ons": [s.reports]}))).await;

    h.advance(Duration::days(15));
    let report = run_jobs(&h).await;
    assert_eq!(report["trials_ended"], 2, "{report}");

    let ended = ok(&h, Method::GET, &format!("/v1/subscriptions/{}", expire["id"].as_str().unwrap()), &t, None).await;
    assert_eq!(ended["status"], "EXPIRED");
    assert_eq!(ended["ended_at"], expire["trial_ends_at"]);
    let lic = license(&h, &s, &ended).await;
    assert_eq!((lic["grace_days"].as_u64(), &lic["expires_at"]), (Some(0), &expire["trial_ends_at"]));
    assert_eq!(lic["status"], "EXPIRED", "the subscription's end expired its license in the same step: {lic}");

    let free = ok(&h, Method::GET, &format!("/v1/subscriptions/{}", downgrade["id"].as_str().unwrap()), &t, None).await;
    assert_eq!((free["status"].as_str(), free["plan"]["tier"].as_str()), (Some("ACTIVE"), Some("FREE")));
    assert_eq!(free["current_period_start"], downgrade["trial_ends_at"]);
    let lic = license(&h, &s, &free).await;
    assert_eq!(features(&lic), ["api_calls", "reports", "view"], "the add-on attaches to every plan, so it stays");
    assert_eq!(lic["status"], "ACTIVE");

    // Final statuses take no more changes.
    let path = format!("/v1/subscriptions/{}", ended["id"].as_str().unwrap());
    for (action, body) in
        [("convert", None), ("change", Some(json!({"plan_id": s.basic}))), ("cancel", None), ("pause", None)]
    {
        let (st, v) = h.call(Method::POST, &format!("{path}/{action}"), Some(&t), body).await;
        assert_eq!((st, err_code(&v).as_str()), (StatusCode::CONFLICT, "INVALID_TRANSITION"), "{action}");
    }
}

#[tokio::test]
async fn cancel_now_or_at_period_end_and_pause() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-cancel").await;
    let t = s.f.token.clone();
    let monthly = |plan: &str| json!({"customer_id": s.f.customer, "plan_id": plan, "trial": false});

    // At period end (the default): it runs to the end of what was paid for, then ends without renewing.
    let a = ok(&h, Method::POST, "/v1/subscriptions", &t, Some(monthly(&s.basic))).await;
    assert_eq!(a["status"], "ACTIVE");
    let a_path = format!("/v1/subscriptions/{}", a["id"].as_str().unwrap());
    let c = ok(&h, Method::POST, &format!("{a_path}/cancel"), &t, None).await;
    assert_eq!((c["status"].as_str(), c["cancel_at_period_end"].as_bool()), (Some("ACTIVE"), Some(true)));
    h.advance(Duration::days(32));
    let report = run_jobs(&h).await;
    assert_eq!(report["subscriptions_ended"], 1, "{report}");
    let done = ok(&h, Method::GET, &a_path, &t, None).await;
    assert_eq!((done["status"].as_str(), &done["ended_at"]), (Some("CANCELED"), &a["current_period_end"]));
    assert_eq!(license(&h, &s, &done).await["status"], "EXPIRED");

    // Now: the license ends now, with no grace.
    let b = ok(&h, Method::POST, "/v1/subscriptions", &t, Some(monthly(&s.premium))).await;
    let b_path = format!("/v1/subscriptions/{}", b["id"].as_str().unwrap());
    let gone =
        ok(&h, Method::POST, &format!("{b_path}/cancel"), &t, Some(json!({"at": "NOW", "reason": "customer asked"})))
            .await;
    assert_eq!(gone["status"], "CANCELED");
    let lic = license(&h, &s, &gone).await;
    assert_eq!((lic["status"].as_str(), lic["grace_days"].as_u64()), (Some("EXPIRED"), Some(0)), "{lic}");
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let late = at(&lic["expires_at"]) - at(&gone["ended_at"]);
    assert!(
        Duration::zero() <= late && late <= Duration::microseconds(1),
        "the license ends with the subscription (a license outlives its start)"
    );

    // Pause suspends the license; resume reinstates it; a yearly subscription's period is a year.
    let y = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": s.f.customer, "plan_id": s.premium, "trial": false, "interval": "YEAR"})),
    )
    .await;
    let start = chrono::DateTime::parse_from_rfc3339(y["current_period_start"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(y["current_period_end"].as_str().unwrap()).unwrap();
    assert!((365..=366).contains(&(end - start).num_days()), "{start} {end}");
    let y_path = format!("/v1/subscriptions/{}", y["id"].as_str().unwrap());
    let paused = ok(&h, Method::POST, &format!("{y_path}/pause"), &t, None).await;
    assert_eq!(paused["status"], "PAUSED");
    assert_eq!(license(&h, &s, &paused).await["status"], "SUSPENDED");
    let (st, v) = h.post(&format!("{y_path}/change"), Some(&t), json!({"plan_id": s.basic})).await;
    assert_eq!((st, err_code(&v).as_str()), (StatusCode::CONFLICT, "INVALID_TRANSITION"));
    let resumed = ok(&h, Method::POST, &format!("{y_path}/resume"), &t, None).await;
    assert_eq!(resumed["status"], "ACTIVE");
    assert_eq!(license(&h, &s, &resumed).await["status"], "ACTIVE");

    // What this customer has: their subscriptions with what each grants.
    let (_, mine) = h.get(&format!("/v1/subscriptions?customer_id={}", s.f.customer), Some(&t)).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 3);
    let (_, active) = h.get(&format!("/v1/subscriptions?customer_id={}&status=ACTIVE", s.f.customer), Some(&t)).await;
    assert_eq!(active["items"].as_array().unwrap().len(), 1);
    let _ = s.free;
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_write_nothing() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-bad").await;
    let other = shop(&h, "sub-other").await;
    let t = s.f.token.clone();
    let no_template = ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": s.f.product, "name": "Loose", "tier": "LOOSE", "rank": 9})),
    )
    .await;
    let only_premium = ok(&h, Method::POST, "/v1/plans", &t,
        Some(json!({"product_id": s.f.product, "name": "Premium extra", "kind": "ADD_ON", "category": "x", "attaches_to": ["premium"]}))).await;
    let c = s.f.customer.clone();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"customer_id": c, "plan_id": s.reports}), 422, "is an add-on"),
        (json!({"customer_id": c, "plan_id": no_template["id"]}), 422, "give template_id"),
        (
            json!({"customer_id": c, "plan_id": s.basic, "add_ons": [only_premium["id"]]}),
            422,
            "attaches to premium only",
        ),
        (json!({"customer_id": c, "plan_id": s.basic, "add_ons": [s.reports, s.reports]}), 422, "twice"),
        (json!({"customer_id": c, "plan_id": s.basic, "add_ons": [s.basic]}), 422, "not an add-on"),
        (json!({"customer_id": c, "plan_id": s.basic, "template_id": other.f.template}), 404, "NOT_FOUND"),
        (json!({"customer_id": c, "plan_id": other.basic}), 404, "NOT_FOUND"),
        (json!({"customer_id": other.f.customer, "plan_id": s.basic}), 404, "NOT_FOUND"),
        (json!({"customer_id": c, "plan_id": s.basic, "interval": "WEEK"}), 422, "unknown variant"),
        (json!({"customer_id": c, "plan_id": s.basic, "surprise": true}), 422, "unknown field"),
        (json!({"plan_id": s.basic}), 422, "customer_id"),
    ];
    for (body, status, expect) in cases {
        let (st, v) = h.post("/v1/subscriptions", Some(&t), body.clone()).await;
        let code = err_code(&v);
        let msg = v["error"]["message"].as_str().unwrap();
        assert_eq!(st.as_u16(), status, "{body}: {v}");
        assert!(code == expect || msg.contains(expect), "{body}: expected {expect:?}, got {code} {msg}");
    }
    let (_, subs) = h.get("/v1/subscriptions", Some(&t)).await;
    assert_eq!(subs["items"], json!([]), "nothing was stored");
    let (_, lics) = h.get("/v1/licenses", Some(&t)).await;
    assert_eq!(lics["items"].as_array().unwrap().len(), 1, "no license was made but the fixture's: {lics}");

    // A read-only token reads but cannot subscribe; another tenant sees nothing.
    let sub = ok(&h, Method::POST, "/v1/subscriptions", &t, Some(json!({"customer_id": c, "plan_id": s.basic}))).await;
    let (_, ro) = h.post("/v1/tokens", Some(&t), json!({"name": "ro", "role": "read-only"})).await;
    let ro = ro["token"].as_str().unwrap();
    let (st, _) = h.post("/v1/subscriptions", Some(ro), json!({"customer_id": c, "plan_id": s.basic})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let (st, _) = h.get(&path, Some(ro)).await;
    assert_eq!(st, StatusCode::OK);
    for (m, p) in [
        (Method::GET, path.clone()),
        (Method::POST, format!("{path}/cancel")),
        (Method::GET, format!("{path}/history")),
    ] {
        let (st, v) = h.call(m, &p, Some(&other.f.token), None).await;
        assert_eq!((st, err_code(&v).as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND"), "{p}");
    }
    let (st, v) = h.post(&format!("{path}/change"), Some(&t), json!({})).await;
    assert_eq!(
        (st, v["error"]["message"].as_str().unwrap().contains("give plan_id")),
        (StatusCode::UNPROCESSABLE_ENTITY, true)
    );
}

#[tokio::test]
async fn the_license_follows_plan_edits_and_keeps_a_staff_suspension() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-edges").await;
    let t = s.f.token.clone();
    let sub = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": s.f.customer, "plan_id": s.basic, "trial": false, "add_ons": [s.reports]})),
    )
    .await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());

    // A plan's entitlements change: the licenses of its subscriptions are re-signed at once.
    ok(
        &h,
        Method::PATCH,
        &format!("/v1/plans/{}", s.basic),
        &t,
        Some(json!({"features": [{"id": "view"}, {"id": "export_pdf"}, {"id": "charts"}]})),
    )
    .await;
    let lic = license(&h, &s, &sub).await;
    assert!(features(&lic).contains(&"charts".to_string()), "{lic}");
    let history = ok(&h, Method::GET, &format!("{path}/history"), &t, None).await;
    assert_eq!(history["items"].as_array().unwrap().last().unwrap()["action"], "plan_updated");

    // Staff suspend the license (fraud): a subscription change keeps it suspended; only a resume of a pause
    // lifts the suspension a pause put on.
    let lic_path = format!("/v1/licenses/{}", sub["license_id"].as_str().unwrap());
    ok(&h, Method::POST, &format!("{lic_path}/suspend"), &t, Some(json!({"reason": "chargeback"}))).await;
    ok(&h, Method::POST, &format!("{path}/change"), &t, Some(json!({"plan_id": s.premium}))).await;
    assert_eq!(license(&h, &s, &sub).await["status"], "SUSPENDED", "the staff suspension stays");
    ok(&h, Method::POST, &format!("{lic_path}/reinstate"), &t, None).await;

    // A downgrade scheduled to a plan archived before the period ends is dropped; the subscription stays.
    ok(&h, Method::POST, &format!("{path}/change"), &t, Some(json!({"plan_id": s.basic, "at": "PERIOD_END"}))).await;
    ok(&h, Method::DELETE, &format!("/v1/plans/{}", s.basic), &t, None).await;
    h.advance(Duration::days(32));
    run_jobs(&h).await;
    let renewed = ok(&h, Method::GET, &path, &t, None).await;
    assert_eq!((renewed["plan"]["tier"].as_str(), renewed["periods"].as_u64()), (Some("PREMIUM"), Some(1)));
    let history = ok(&h, Method::GET, &format!("{path}/history"), &t, None).await;
    let last = history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["details"]["dropped_change"].is_object()), (Some("renewed"), true));

    // Paused past its period's end: resuming starts a new period now (the paused time is not billed).
    ok(&h, Method::POST, &format!("{path}/pause"), &t, None).await;
    h.advance(Duration::days(40));
    let report = run_jobs(&h).await;
    assert_eq!(report["subscriptions_renewed"], 0, "a paused subscription does not renew");
    let resumed = ok(&h, Method::POST, &format!("{path}/resume"), &t, None).await;
    assert_eq!(resumed["periods"], 0);
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        at(&resumed["current_period_start"]),
        at(&resumed["updated_at"]).min(at(&resumed["current_period_start"]))
    );
    assert!(at(&resumed["current_period_end"]) > at(&renewed["current_period_end"]) + Duration::days(30));
    let lic = license(&h, &s, &resumed).await;
    assert_eq!((lic["status"].as_str(), &lic["expires_at"]), (Some("ACTIVE"), &resumed["current_period_end"]));
}

#[tokio::test]
async fn quotas_add_up_and_trials_of_the_lowest_or_a_paid_rung_end() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-quotas").await;
    let t = s.f.token.clone();
    let p = s.f.product.to_string();

    // An add-on with a lifetime limit on a metric the plan grants without limit leaves it unlimited.
    let unlimited = ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "Unlimited", "tier": "UNLIMITED",
        "template_id": s.f.template, "features": [{"id": "api_calls"}]})),
    )
    .await;
    let sub = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": s.f.customer, "plan_id": unlimited["id"], "add_ons": [s.reports]})),
    )
    .await;
    let lic = license(&h, &s, &sub).await;
    let calls = lic["features"].as_array().unwrap().iter().find(|f| f["id"] == "api_calls").unwrap().clone();
    assert_eq!(calls["limit_value"], -1, "{calls}");

    // A trial on the lowest rung with DOWNGRADE has nowhere lower to go: it ends.
    ok(&h, Method::PATCH, &format!("/v1/plans/{}", s.free), &t, Some(json!({"trial_days": 7}))).await;
    let low = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": s.f.customer, "plan_id": s.free, "on_trial_end": "DOWNGRADE"})),
    )
    .await;
    assert_eq!(low["status"], "TRIALING");
    h.advance(Duration::days(8));
    run_jobs(&h).await;
    let low = ok(&h, Method::GET, &format!("/v1/subscriptions/{}", low["id"].as_str().unwrap()), &t, None).await;
    assert_eq!(low["status"], "EXPIRED");

    // Intervals a plan is not sold by, and trials a plan has not, are refused.
    let (st, v) = h
        .post(
            "/v1/subscriptions",
            Some(&t),
            json!({"customer_id": s.f.customer, "plan_id": s.basic, "interval": "YEAR"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("no Year price"), "{v}");
    let (st, v) = h
        .post("/v1/subscriptions", Some(&t), json!({"customer_id": s.f.customer, "plan_id": s.basic, "trial": true}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Plans name the features they grant: no wildcard.
    let (st, v) = h
        .post("/v1/plans", Some(&t), json!({"product_id": p, "name": "All", "tier": "ALL", "features": [{"id": "*"}]}))
        .await;
    assert_eq!(
        (st, v["error"]["message"].as_str().unwrap().contains("every feature")),
        (StatusCode::UNPROCESSABLE_ENTITY, true)
    );
}

/// The next UTC midnight after the harness clock's time.
fn next_midnight(h: &Harness) -> chrono::DateTime<chrono::Utc> {
    let now = *h.now.lock().unwrap();
    (now.date_naive() + Duration::days(1)).and_hms_opt(0, 0, 0).unwrap().and_utc()
}

#[tokio::test]
async fn quotas_per_day_add_up_reset_at_midnight_and_mismatched_periods_are_refused() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-periods").await;
    let t = s.f.token.clone();
    let p = s.f.product.to_string();
    let metered = ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "Metered",
        "tier": "METERED", "template_id": s.f.template, "features": [{"id": "view"}],
        "limits": [{"metric": "api_calls", "limit": 10, "period": "DAY"}],
        "prices": [{"interval": "MONTH", "amount": 900, "currency": "EUR"}]})),
    )
    .await;
    let boost = ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "Boost", "kind": "ADD_ON",
        "category": "capacity", "limits": [{"metric": "api_calls", "limit": 5, "period": "DAY"}]})),
    )
    .await;

    // Plan and add-on both count per DAY: the license's quota is 15 a day, with the subscription's billing cycle.
    let sub = ok(
        &h,
        Method::POST,
        "/v1/subscriptions",
        &t,
        Some(json!({"customer_id": s.f.customer,
        "plan_id": metered["id"], "add_ons": [boost["id"]]})),
    )
    .await;
    let lic = license(&h, &s, &sub).await;
    let calls = lic["features"].as_array().unwrap().iter().find(|f| f["id"] == "api_calls").unwrap().clone();
    assert_eq!((calls["limit_value"].as_i64(), calls["limit_period"].as_str()), (Some(15), Some("DAY")), "{calls}");
    assert_eq!(lic["billing_cycle"]["months"], 1);
    assert_eq!(lic["billing_cycle"]["anchor"], sub["anchor_at"]);

    // A day's 15 are recorded; the 16th is refused and says when the day ends.
    let license_id = sub["license_id"].as_str().unwrap().to_string();
    let ev = || json!({"id": uuid::Uuid::now_v7(), "license_id": license_id, "feature": "api_calls", "amount": 1});
    let (st, v) = h.post("/v1/usage", Some(&t), json!({"events": (0..16).map(|_| ev()).collect::<Vec<_>>()})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert!(results[..15].iter().all(|r| r["outcome"] == "RECORDED"), "{v}");
    assert_eq!(results[15]["outcome"], "QUOTA_EXCEEDED", "{v}");
    assert_eq!(results[15]["total"], 15);
    let midnight = next_midnight(&h);
    let ends: chrono::DateTime<chrono::Utc> = serde_json::from_value(results[15]["period_ends_at"].clone()).unwrap();
    assert_eq!(ends, midnight);
    let view = ok(&h, Method::GET, &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()), &t, None).await;
    let ent = view["entitlements"].as_array().unwrap().iter().find(|e| e["feature"] == "api_calls").unwrap().clone();
    assert_eq!(
        (ent["used"].as_i64(), ent["limit"].as_i64(), ent["period"].as_str()),
        (Some(15), Some(15), Some("DAY"))
    );

    // Past midnight the day's quota starts afresh; the day before stays on record.
    let now = *h.now.lock().unwrap();
    h.advance(midnight - now + Duration::seconds(1));
    let (_, v) = h.post("/v1/usage", Some(&t), json!({"events": [ev()]})).await;
    assert_eq!(v["results"][0]["outcome"], "RECORDED", "{v}");
    assert_eq!(v["results"][0]["total"], 1);
    assert_eq!(v["results"][0]["remaining"], 14);
    // An event dated yesterday counts against yesterday, which is full.
    let mut late = ev();
    late["recorded_at"] = json!(midnight - Duration::minutes(5));
    let (_, v) = h.post("/v1/usage", Some(&t), json!({"events": [late]})).await;
    assert_eq!(v["results"][0]["outcome"], "QUOTA_EXCEEDED", "{v}");
    // One dated more than five minutes ahead of the server is refused, whole batch.
    let mut ahead = ev();
    ahead["recorded_at"] = json!(midnight + Duration::hours(1));
    let (st, v) = h.post("/v1/usage", Some(&t), json!({"events": [ev(), ahead]})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("ahead of the server's clock"), "{v}");
    h.advance(Duration::seconds(1)); // a summary runs up to now, excluded
    let day = ok(&h, Method::GET, &format!("/v1/usage/summary?license_id={license_id}&period=DAY"), &t, None).await;
    let totals: Vec<i64> = day["rows"].as_array().unwrap().iter().map(|b| b["total"].as_i64().unwrap()).collect();
    assert_eq!(totals, [15, 1], "{day}");

    // An add-on counting the metric over another period cannot add to the plan's quota: refused, nothing made.
    let before = ok(&h, Method::GET, "/v1/subscriptions", &t, None).await["items"].as_array().unwrap().len();
    let (st, v) = h
        .post(
            "/v1/subscriptions",
            Some(&t),
            json!({"customer_id": s.f.customer, "plan_id": metered["id"], "add_ons": [s.reports]}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("same period"), "{v}");
    let after = ok(&h, Method::GET, "/v1/subscriptions", &t, None).await["items"].as_array().unwrap().len();
    assert_eq!(before, after);
    // Nor may a plan edit break a live subscription's sum: the edit is refused and the plan stays as it was.
    let path = format!("/v1/plans/{}", boost["id"].as_str().unwrap());
    let (st, v) = h
        .call(
            Method::PATCH,
            &path,
            Some(&t),
            Some(json!({"limits": [{"metric": "api_calls", "limit": 5, "period": "MONTH"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(ok(&h, Method::GET, &path, &t, None).await["limits"][0]["period"], "DAY");
    // Two limits for one metric in one plan: a license carries one quota per feature.
    let (st, v) = h
        .post("/v1/plans", Some(&t), json!({"product_id": p, "name": "Two", "tier": "TWO",
            "limits": [{"metric": "api_calls", "limit": 5, "period": "DAY"}, {"metric": "api_calls", "limit": 50, "period": "MONTH"}]}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn the_license_offers_the_cheapest_way_to_each_feature_it_lacks() {
    let h = Harness::new().await;
    let s = shop(&h, "sub-offers").await;
    let t = s.f.token.clone();
    let p = s.f.product.to_string();
    // From Basic (1000/month), Premium (3000/month) sells crm for 2000 more a month; a CRM add-on for 1500, a
    // deluxe one for 2500: the add-on at 1500 is the cheapest way.
    let crm = ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "CRM connector",
        "kind": "ADD_ON", "category": "crm", "features": [{"id": "crm"}],
        "prices": [{"interval": "MONTH", "amount": 1500, "currency": "EUR"}],
        "upgrade_url": "https://shop.example/buy/{plan}?feature={feature}&license={license}"})),
    )
    .await;
    ok(
        &h,
        Method::POST,
        "/v1/plans",
        &t,
        Some(json!({"product_id": p, "name": "CRM deluxe",
        "kind": "ADD_ON", "category": "crm", "features": [{"id": "crm"}],
        "prices": [{"interval": "MONTH", "amount": 2500, "currency": "EUR"}]})),
    )
    .await;
    let sub =
        ok(&h, Method::POST, "/v1/subscriptions", &t, Some(json!({"customer_id": s.f.customer, "plan_id": s.basic})))
            .await;
    let lic = license(&h, &s, &sub).await;
    let offers = &lic["metadata"]["upgrades"];
    let license_id = sub["license_id"].as_str().unwrap();
    assert_eq!(offers["crm"]["plan"], crm["code"], "{offers}");
    assert_eq!(offers["crm"]["kind"], "ADD_ON");
    assert_eq!(
        offers["crm"]["upgrade_url"],
        format!("https://shop.example/buy/{}?feature=crm&license={license_id}", crm["code"].as_str().unwrap())
    );
    // Reports is sold only as an add-on; what the license grants is not offered.
    assert_eq!(offers["reports"]["plan"], "reports", "{offers}");
    assert!(offers.get("export_pdf").is_none() && offers.get("view").is_none(), "{offers}");

    // With the add-on, crm is granted and no longer offered: the re-signed license says so.
    let path = format!("/v1/subscriptions/{}/change", sub["id"].as_str().unwrap());
    let changed = ok(&h, Method::POST, &path, &t, Some(json!({"add_ons": [crm["id"]]}))).await;
    let lic = license(&h, &s, &changed).await;
    assert!(lic["metadata"]["upgrades"].get("crm").is_none(), "{}", lic["metadata"]);
    // The cheap add-on archived and dropped: Premium's 2000 more now beats the deluxe add-on's 2500.
    ok(&h, Method::DELETE, &format!("/v1/plans/{}", crm["id"].as_str().unwrap()), &t, None).await;
    let dropped = ok(&h, Method::POST, &path, &t, Some(json!({"add_ons": []}))).await;
    let lic = license(&h, &s, &dropped).await;
    assert_eq!(lic["metadata"]["upgrades"]["crm"]["plan"], "premium", "{}", lic["metadata"]);

    // A bad upgrade URL is refused with what to do.
    for (url, why) in [
        ("ftp://x.example/{plan}", "http(s)"),
        ("https://x.example/{sku}", "unknown placeholder {sku}"),
        ("https://x.example/a b", "spaces"),
        ("https://x.example/{plan", "unclosed"),
    ] {
        let (st, v) = h
            .post("/v1/plans", Some(&t), json!({"product_id": p, "name": "Bad", "tier": "BAD", "upgrade_url": url}))
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{url}: {v}");
    }
}

#[tokio::test]
async fn a_revoked_license_ends_its_subscription_at_the_period_end_and_is_billed_no_more() {
    let h = Harness::new().await;
    *h.now.lock().unwrap() = "2026-11-10T12:00:00Z".parse().unwrap();
    let s = shop(&h, "sub-revoked").await;
    let t = s.f.token.clone();
    let sub =
        ok(&h, Method::POST, "/v1/subscriptions", &t, Some(json!({"customer_id": s.f.customer, "plan_id": s.basic})))
            .await;
    let license = sub["license_id"].as_str().unwrap();
    ok(&h, Method::POST, &format!("/v1/licenses/{license}/revoke"), &t, Some(json!({"reason": "chargeback"}))).await;

    h.advance(Duration::days(31));
    let report = run_jobs(&h).await;
    assert_eq!((report["subscriptions_renewed"].as_u64(), report["subscriptions_ended"].as_u64()), (Some(0), Some(1)));
    let ended = ok(&h, Method::GET, &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()), &t, None).await;
    assert_eq!(ended["status"], "CANCELED");
    assert_eq!(ended["ended_at"], sub["current_period_end"]);
    let history =
        ok(&h, Method::GET, &format!("/v1/subscriptions/{}/history", sub["id"].as_str().unwrap()), &t, None).await;
    assert!(history.to_string().contains("the license was revoked"), "{history}");
    // November's period is billed; December's is not, as there is none.
    let nov = ok(&h, Method::GET, "/v1/billing/report?month=2026-11", &t, None).await;
    assert_eq!(nov["totals"], json!([{"currency": "EUR", "amount": 1000}]), "{nov}");
    let dec = ok(&h, Method::GET, "/v1/billing/report?month=2026-12", &t, None).await;
    assert_eq!(dec["totals"], json!([]), "{dec}");
}
