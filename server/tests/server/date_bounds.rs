//! Day counts and dates are bounded (≤ 36500 days, years 1970..=9999): huge values are refused with 422
//! instead of overflowing date arithmetic (which panicked the request).

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const FAR: &str = "+262142-06-01T00:00:00Z";

fn refused(s: StatusCode, v: &Value, field: &str) {
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(err_code(v), "VALIDATION_FAILED");
    assert!(v["error"]["message"].as_str().unwrap().contains(field), "{v}");
}

#[tokio::test]
async fn renewals_are_bounded() {
    let h = Harness::new().await;
    let f = h.fixture("renew", 1, "SUBSCRIPTION").await;
    let path = format!("/v1/licenses/{}/renew", f.license);
    let t = Some(f.token.as_str());
    let (s, v) = h.post(&path, t, json!({"days": 4_294_967_295u32})).await;
    refused(s, &v, "days");
    assert!(v["error"]["message"].as_str().unwrap().contains("36500"), "{v}");
    let (s, v) = h.post(&path, t, json!({"days": 36_501})).await;
    refused(s, &v, "days");
    let (s, v) = h.post(&path, t, json!({"expires_at": FAR})).await;
    refused(s, &v, "expires_at");
    let (s, v) = h.post(&path, t, json!({"expires_at": "10000-01-01T00:00:00Z"})).await;
    refused(s, &v, "expires_at");
    let (s, v) = h.post(&path, t, json!({"days": 36_500})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The server still answers.
    let (s, _) = h.get(&format!("/v1/licenses/{}", f.license), t).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn template_and_license_periods_and_dates_are_bounded() {
    let h = Harness::new().await;
    let f = h.fixture("dates", 1, "SUBSCRIPTION").await;
    let t = Some(f.token.as_str());
    let tpl = |extra: Value| {
        let mut b = json!({"name": "big", "product_id": f.product, "license_type": "SUBSCRIPTION",
                           "max_activations": 1, "heartbeat_interval_secs": 60, "lease_secs": 3600});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let (s, v) = h.post("/v1/templates", t, tpl(json!({"duration_days": 4_294_967_295u32}))).await;
    refused(s, &v, "duration_days");
    let (s, v) = h.post("/v1/templates", t, tpl(json!({"maintenance_days": 36_501}))).await;
    refused(s, &v, "maintenance_days");
    let (s, v) = h
        .call(Method::PATCH, &format!("/v1/templates/{}", f.template), t, Some(json!({"duration_days": 99_999})))
        .await;
    refused(s, &v, "duration_days");

    let create = |extra: Value| {
        let mut b = json!({"template_id": f.template, "customer_id": f.customer});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let (s, v) = h.post("/v1/licenses", t, create(json!({"duration_days": 4_294_967_295u32}))).await;
    refused(s, &v, "duration_days");
    // With the template's 30 days, a far start date would overflow the expiry.
    let (s, v) = h.post("/v1/licenses", t, create(json!({"starts_at": FAR}))).await;
    refused(s, &v, "starts_at");
    let (s, v) = h.post("/v1/licenses", t, create(json!({"starts_at": "9999-12-30T00:00:00Z"}))).await;
    refused(s, &v, "expires_at");
    let (s, v) = h.post("/v1/licenses", t, create(json!({"expires_at": FAR}))).await;
    refused(s, &v, "expires_at");
    let (s, v) = h.post("/v1/licenses", t, create(json!({"maintenance_expires_at": "1969-12-31T23:59:59Z"}))).await;
    refused(s, &v, "maintenance_expires_at");
    let (s, v) = h.post("/v1/licenses", t, create(json!({"expires_at": "9999-12-31T00:00:00Z"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let path = format!("/v1/licenses/{}", f.license);
    for (field, value) in [("starts_at", "0001-01-01T00:00:00Z"), ("expires_at", FAR), ("maintenance_expires_at", FAR)]
    {
        let (s, v) = h.call(Method::PATCH, &path, t, Some(json!({ field: value }))).await;
        refused(s, &v, field);
    }
}
