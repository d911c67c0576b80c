//! Plans, add-ons and the public catalog through the HTTP API: the ladder and its defaults, prices in minor
//! units, the rules of each kind, what a customer-facing token may do, and tenant isolation.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

async fn plan(h: &Harness, token: &str, body: Value) -> Value {
    let (s, v) = h.post("/v1/plans", Some(token), body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

async fn refused(
    h: &Harness,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, String, String) {
    let (s, v) = h.call(method, path, Some(token), body).await;
    assert!(s.is_client_error(), "{path}: {s} {v}");
    let code = err_code(&v);
    (s, code, v["error"]["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_ladder_of_tiers_with_prices_and_add_ons_makes_the_catalog() {
    let h = Harness::new().await;
    let f = h.fixture("ladder", 3, "SUBSCRIPTION").await;
    let t = f.token.as_str();
    let p = f.product.to_string();

    // Four rungs, ranked by the order they are made; the default tier names follow the rank.
    let free = plan(
        &h,
        t,
        json!({"product_id": p, "name": "Free", "features": [{"id": "view"}],
        "limits": [{"metric": "api_calls", "limit": 100, "period": "DAY"}]}),
    )
    .await;
    assert_eq!(
        (free["tier"].as_str(), free["rank"].as_i64(), free["code"].as_str()),
        (Some("FREE"), Some(0), Some("free"))
    );
    assert_eq!(
        (free["kind"].as_str(), free["public"].as_bool(), free["trial_days"].as_u64()),
        (Some("PLAN"), Some(true), Some(0))
    );
    let basic = plan(&h, t, json!({"product_id": p, "name": "Basic", "trial_days": 14,
        "prices": [{"interval": "MONTH", "amount": 1999, "currency": "eur"}, {"interval": "YEAR", "amount": 19900, "currency": "EUR"},
                   {"interval": "MONTH", "amount": 2500, "currency": "JPY"}]})).await;
    assert_eq!((basic["tier"].as_str(), basic["rank"].as_i64()), (Some("BASIC"), Some(1)));
    assert_eq!(basic["prices"][0]["currency"], "EUR", "currencies are upper-cased");
    let premium =
        plan(&h, t, json!({"product_id": p, "name": "Premium", "features": [{"id": "view"}, {"id": "crm"}]})).await;
    assert_eq!(premium["tier"], "PREMIUM");
    let enterprise = plan(&h, t, json!({"product_id": p, "name": "Enterprise", "public": false})).await;
    assert_eq!(enterprise["tier"], "ENTERPRISE");
    // A fifth rung has no default name: the vendor names it.
    let (s, code, msg) =
        refused(&h, Method::POST, "/v1/plans", t, Some(json!({"product_id": p, "name": "Ultra"}))).await;
    assert_eq!((s, code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"));
    assert!(msg.contains("give the plan a tier"), "{msg}");
    let ultra = plan(&h, t, json!({"product_id": p, "name": "Ultra", "tier": "platinum"})).await;
    assert_eq!((ultra["tier"].as_str(), ultra["rank"].as_i64()), (Some("PLATINUM"), Some(4)));

    // Add-ons in categories, one for every plan and one for two plans only.
    let crm = plan(
        &h,
        t,
        json!({"product_id": p, "name": "CRM connector", "kind": "ADD_ON", "category": "CRM",
        "features": [{"id": "crm_sync"}], "prices": [{"interval": "MONTH", "amount": 500, "currency": "EUR"}]}),
    )
    .await;
    assert_eq!(
        (crm["category"].as_str(), crm["tier"].as_str(), crm["rank"].as_i64()),
        (Some("crm"), Some(""), Some(0))
    );
    plan(
        &h,
        t,
        json!({"product_id": p, "name": "Uptime monitor", "kind": "ADD_ON", "category": "monitoring",
        "attaches_to": ["premium", "basic"]}),
    )
    .await;

    let (s, cat) = h.get(&format!("/v1/catalog?product_id={p}"), Some(t)).await;
    assert_eq!(s, StatusCode::OK, "{cat}");
    let product = &cat["products"][0];
    assert_eq!(product["product_code"], "ladder-app");
    let tiers: Vec<&str> = product["plans"].as_array().unwrap().iter().map(|x| x["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["FREE", "BASIC", "PREMIUM", "PLATINUM"], "lowest rung first; the private plan is not listed");
    let prices = &product["plans"][1]["prices"];
    assert_eq!(
        prices[0],
        json!({"interval": "MONTH", "amount": 1999, "currency": "EUR", "exponent": 2, "display": "19.99"})
    );
    assert_eq!(prices[1]["display"], "199.00");
    assert_eq!(
        prices[2],
        json!({"interval": "MONTH", "amount": 2500, "currency": "JPY", "exponent": 0, "display": "2500"})
    );
    assert_eq!(product["plans"][0]["limits"], json!([{"metric": "api_calls", "limit": 100, "period": "DAY"}]));
    let add_ons: Vec<&str> =
        product["add_ons"].as_array().unwrap().iter().map(|x| x["code"].as_str().unwrap()).collect();
    assert_eq!(add_ons, ["crm-connector", "uptime-monitor"]);
    assert_eq!(cat["categories"], json!(["crm", "monitoring"]));

    // Filters: a tier keeps that rung and the add-ons that attach to it; a category keeps its add-ons.
    let (_, free_only) = h.get(&format!("/v1/catalog?product_id={p}&tier=free"), Some(t)).await;
    assert_eq!(free_only["products"][0]["plans"].as_array().unwrap().len(), 1);
    assert_eq!(free_only["products"][0]["add_ons"].as_array().unwrap().len(), 1, "the monitor does not attach to FREE");
    let (_, monitoring) = h.get("/v1/catalog?category=monitoring", Some(t)).await;
    assert_eq!(monitoring["products"][0]["add_ons"][0]["code"], "uptime-monitor");
    assert_eq!(monitoring["categories"], json!(["monitoring"]));

    // The admin list has every plan, the private one too; archiving takes a plan out of the catalog and frees
    // its rung, and the code stays taken.
    let (_, all) = h.get(&format!("/v1/plans?product_id={p}"), Some(t)).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 7);
    let (_, only_add_ons) = h.get(&format!("/v1/plans?product_id={p}&kind=ADD_ON"), Some(t)).await;
    assert_eq!(only_add_ons["items"].as_array().unwrap().len(), 2);
    let ultra_id = ultra["id"].as_str().unwrap();
    let (s, archived) = h.call(Method::DELETE, &format!("/v1/plans/{ultra_id}"), Some(t), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(archived["archived_at"].is_string());
    let (_, cat) = h.get(&format!("/v1/catalog?product_id={p}"), Some(t)).await;
    assert_eq!(cat["products"][0]["plans"].as_array().unwrap().len(), 3);
    let (s, code, _) = refused(
        &h,
        Method::POST,
        "/v1/plans",
        t,
        Some(json!({"product_id": p, "name": "Ultra again", "code": "ultra", "tier": "PLATINUM", "rank": 4})),
    )
    .await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "PLAN_CODE_TAKEN"));
    let reborn = plan(&h, t, json!({"product_id": p, "name": "Ultra 2", "tier": "PLATINUM", "rank": 4})).await;
    assert_eq!(reborn["rank"], 4, "the archived plan's rung and tier are free again");
    let (s, code, _) =
        refused(&h, Method::PATCH, &format!("/v1/plans/{ultra_id}"), t, Some(json!({"name": "x"}))).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "INVALID_TRANSITION"));
    let (_, with_archived) = h.get(&format!("/v1/plans?product_id={p}&include_archived=true"), Some(t)).await;
    assert_eq!(with_archived["items"].as_array().unwrap().len(), 8);

    // Every change is in the audit log.
    let (_, audit) = h.get("/v1/audit?action=plan.archive", Some(t)).await;
    assert_eq!(audit["items"][0]["target"], ultra_id, "{audit}");
    let _ = (enterprise, premium);
}

#[tokio::test]
async fn updates_keep_the_ladder_consistent() {
    let h = Harness::new().await;
    let f = h.fixture("moves", 3, "SUBSCRIPTION").await;
    let t = f.token.as_str();
    let p = f.product.to_string();
    let free = plan(&h, t, json!({"product_id": p, "name": "Free"})).await;
    let gold = plan(&h, t, json!({"product_id": p, "name": "Gold", "tier": "GOLD", "rank": 5})).await;
    let addon = plan(
        &h,
        t,
        json!({"product_id": p, "name": "Extra", "kind": "ADD_ON", "category": "reporting", "attaches_to": ["gold"]}),
    )
    .await;

    // Rank and tier clashes are refused with their own codes, and the plan is unchanged.
    let gold_path = format!("/v1/plans/{}", gold["id"].as_str().unwrap());
    let (s, code, _) = refused(&h, Method::PATCH, &gold_path, t, Some(json!({"rank": 0}))).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "PLAN_RANK_TAKEN"));
    let (s, code, _) = refused(&h, Method::PATCH, &gold_path, t, Some(json!({"tier": "free"}))).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "PLAN_TIER_TAKEN"));
    let (_, now) = h.get(&gold_path, Some(t)).await;
    assert_eq!((now["rank"].as_i64(), now["tier"].as_str()), (Some(5), Some("GOLD")));

    // A vendor's own tier name stays when the plan moves; a default name follows the rung.
    let (s, moved) = h.call(Method::PATCH, &gold_path, Some(t), Some(json!({"rank": 2}))).await;
    assert_eq!((s, moved["tier"].as_str()), (StatusCode::OK, Some("GOLD")), "{moved}");
    let free_path = format!("/v1/plans/{}", free["id"].as_str().unwrap());
    let (s, moved) = h.call(Method::PATCH, &free_path, Some(t), Some(json!({"rank": 1}))).await;
    assert_eq!((s, moved["tier"].as_str()), (StatusCode::OK, Some("BASIC")), "{moved}");

    // An add-on refers to plans by code: renaming the code under it is refused until the add-on lets go.
    let (s, code, msg) = refused(&h, Method::PATCH, &gold_path, t, Some(json!({"code": "golden"}))).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "CONFLICT"));
    assert!(msg.contains("extra"), "{msg}");
    let addon_path = format!("/v1/plans/{}", addon["id"].as_str().unwrap());
    let (s, _) = h.call(Method::PATCH, &addon_path, Some(t), Some(json!({"attaches_to": []}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, renamed) = h.call(Method::PATCH, &gold_path, Some(t), Some(json!({"code": "golden"}))).await;
    assert_eq!((s, renamed["code"].as_str()), (StatusCode::OK, Some("golden")));
}

#[tokio::test]
async fn bad_plans_are_refused_with_the_field_named_and_nothing_written() {
    let h = Harness::new().await;
    let f = h.fixture("strict", 3, "SUBSCRIPTION").await;
    let t = f.token.as_str();
    let p = f.product.to_string();
    plan(&h, t, json!({"product_id": p, "name": "Free"})).await;
    let base = |extra: Value| {
        let mut b = json!({"product_id": p, "name": "Pro", "tier": "PRO", "rank": 3});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            base(json!({"prices": [{"interval": "MONTH", "amount": 19.99, "currency": "EUR"}]})),
            "prices[0].amount: invalid type: floating point",
        ),
        (base(json!({"prices": [{"interval": "MONTH", "amount": -1, "currency": "EUR"}]})), "minor units"),
        (base(json!({"prices": [{"interval": "MONTH", "amount": 100, "currency": "EURO"}]})), "ISO 4217"),
        (base(json!({"prices": [{"interval": "MONTH", "amount": 100, "currency": "XAU"}]})), "ISO 4217"),
        (base(json!({"prices": [{"interval": "WEEK", "amount": 100, "currency": "EUR"}]})), "unknown variant `WEEK`"),
        (
            base(
                json!({"prices": [{"interval": "MONTH", "amount": 1, "currency": "EUR"}, {"interval": "MONTH", "amount": 2, "currency": "eur"}]}),
            ),
            "one price per interval",
        ),
        (base(json!({"limits": [{"metric": "api calls", "limit": 5, "period": "DAY"}]})), "metric"),
        (base(json!({"limits": [{"metric": "api_calls", "limit": -5, "period": "DAY"}]})), "0 to"),
        (
            base(
                json!({"limits": [{"metric": "a", "limit": 1, "period": "DAY"}, {"metric": "a", "limit": 2, "period": "DAY"}]}),
            ),
            "one limit per metric",
        ),
        (base(json!({"trial_days": 400})), "trial_days"),
        (base(json!({"rank": 1000})), "rank must be"),
        (base(json!({"rank": -1})), "rank must be"),
        (base(json!({"tier": "not a tier!"})), "tier"),
        (base(json!({"category": "crm"})), "for add-ons"),
        (base(json!({"features": [{"id": "x"}, {"id": "x"}]})), "twice"),
        (base(json!({"code": "no spaces"})), "code must be"),
        (base(json!({"name": ""})), "name"),
        (base(json!({"surprise": 1})), "unknown field `surprise`"),
        (json!({"product_id": p, "name": "Addon", "kind": "ADD_ON"}), "needs a category"),
        (json!({"product_id": p, "name": "Addon", "kind": "ADD_ON", "category": "crm", "rank": 2}), "no rank"),
        (
            json!({"product_id": p, "name": "Addon", "kind": "ADD_ON", "category": "crm", "attaches_to": ["nope"]}),
            "no current plan",
        ),
        (json!({"product_id": p, "name": "Addon", "kind": "ADD_ON", "category": "c r m"}), "category"),
        (json!({"product_id": uuid::Uuid::now_v7(), "name": "Lost"}), "NOT_FOUND"),
        (json!({"product_id": "not-a-uuid", "name": "Lost"}), "product_id"),
    ];
    for (body, expect) in cases {
        let (s, v) = h.post("/v1/plans", Some(t), body.clone()).await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
        let code = err_code(&v);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(code == expect || msg.contains(expect), "{body}: expected {expect:?}, got {code} {msg}");
    }
    let (_, all) = h.get(&format!("/v1/plans?product_id={p}"), Some(t)).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "nothing refused was written: {all}");
    for bad in
        ["/v1/plans?kind=BUNDLE", "/v1/plans?tier=no%20way", "/v1/catalog?product_id=nope", "/v1/plans?colour=red"]
    {
        let (s, v) = h.get(bad, Some(t)).await;
        assert!(s.is_client_error(), "{bad}: {s} {v}");
        err_code(&v);
    }
}

#[tokio::test]
async fn read_only_tokens_read_the_catalog_and_other_tenants_see_nothing() {
    let h = Harness::new().await;
    let a = h.fixture("vendor-a", 3, "SUBSCRIPTION").await;
    let b = h.fixture("vendor-b", 3, "SUBSCRIPTION").await;
    let pa = a.product.to_string();
    let secret = plan(&h, &a.token, json!({"product_id": pa, "name": "Secret plan A"})).await;
    let id = secret["id"].as_str().unwrap();

    // A read-only token (what a pricing page's backend holds) reads, and cannot write.
    let (_, ro) = h.post("/v1/tokens", Some(&a.token), json!({"name": "pricing-page", "role": "read-only"})).await;
    let ro = ro["token"].as_str().unwrap().to_string();
    let (s, cat) = h.get("/v1/catalog", Some(&ro)).await;
    assert_eq!((s, cat["products"][0]["plans"][0]["code"].as_str()), (StatusCode::OK, Some("secret-plan-a")));
    let (s, code, _) =
        refused(&h, Method::POST, "/v1/plans", &ro, Some(json!({"product_id": pa, "name": "Mine"}))).await;
    assert_eq!((s, code.as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (s, code, _) = refused(&h, Method::DELETE, &format!("/v1/plans/{id}"), &ro, None).await;
    assert_eq!((s, code.as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"));

    // Tenant B: no plan of A in its catalog or lists, and A's plan and product are not found.
    let (_, cat) = h.get("/v1/catalog", Some(&b.token)).await;
    assert_eq!(cat, json!({"products": [], "categories": []}));
    let (_, list) = h.get("/v1/plans", Some(&b.token)).await;
    assert_eq!(list["items"], json!([]));
    let (_, list) = h.get(&format!("/v1/plans?product_id={pa}"), Some(&b.token)).await;
    assert_eq!(list["items"], json!([]));
    for (method, body) in
        [(Method::GET, None), (Method::PATCH, Some(json!({"name": "Stolen"}))), (Method::DELETE, None)]
    {
        let (s, code, _) = refused(&h, method, &format!("/v1/plans/{id}"), &b.token, body).await;
        assert_eq!((s, code.as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    }
    let (s, code, _) =
        refused(&h, Method::POST, "/v1/plans", &b.token, Some(json!({"product_id": pa, "name": "Into A"}))).await;
    assert_eq!((s, code.as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (_, mine) = h.get(&format!("/v1/plans/{id}"), Some(&a.token)).await;
    assert_eq!((mine["name"].as_str(), mine["archived_at"].as_str()), (Some("Secret plan A"), None));
}
