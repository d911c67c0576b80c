//! Listing emergency codes needs a support or admin token and never shows the code text.

use axum::http::StatusCode;
use chrono::Duration;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn emergency_listing_hides_codes_and_needs_support() {
    let h = Harness::new().await;
    let f = h.fixture("el", 1, "SUBSCRIPTION").await;
    let path = format!("/v1/licenses/{}/emergency-codes", f.license);
    let t = Some(f.token.as_str());
    let request = signed_request(&f.key, &device(), 1).0;
    let (s, issued) = h.post(&path, t, json!({"reason": "outage", "validity_hours": 2, "request_code": request})).await;
    assert_eq!(s, StatusCode::CREATED, "{issued}");
    let code = issued["code"].as_str().unwrap().to_string();

    let token = |role: &'static str| {
        let tenant = f.tenant.clone();
        let admin = f.token.clone();
        let h = &h;
        async move {
            let (s, v) =
                h.post("/v1/tokens", Some(&admin), json!({"name": role, "role": role, "tenant_id": tenant})).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            v["token"].as_str().unwrap().to_string()
        }
    };
    let read_only = token("read-only").await;
    let (s, v) = h.get(&path, Some(&read_only)).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{v}");
    assert!(!v.to_string().contains(&code));

    let support = token("support").await;
    for tok in [support.as_str(), f.token.as_str()] {
        let (s, list) = h.get(&path, Some(tok)).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert!(!list.to_string().contains(&code), "the code text is not listed: {list}");
        let item = &list["items"][0];
        assert!(item.get("code").is_none(), "{item}");
        assert_eq!(item["serial"], 1);
        assert_eq!(item["reason"], "outage");
        assert_eq!(item["bound"], true);
        assert_eq!(item["expires_at"], issued["expires_at"]);
        assert!(item["issued_at"].is_string() && item["issued_by"].is_string(), "{item}");
    }
    // Nor once expired.
    h.advance(Duration::hours(3));
    let (s, list) = h.get(&path, t).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!list.to_string().contains(&code), "{list}");
}
