//! Offline grants have a lease; a deactivation receipt ends the grant it names and no other; the seat it frees
//! stays counted until the released grant's lease would have ended (or at once, within a limit, or by staff).

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use tessera_core::offline::{SignedRequest, SignedResponse};
use tessera_core::SigningKey;

use crate::common::*;

/// A request like [`signed_request`] with a chosen fingerprint commitment (another machine's).
fn request_from(key: &str, dev: &SigningKey, nonce: u16, machine: u8) -> (String, SignedRequest) {
    let k = tessera_core::LicenseKey::parse(key).unwrap();
    let mut dpk = [0u8; 32];
    dpk.copy_from_slice(&dev.verifying_key().public_bytes());
    tessera_core::offline::OfflineRequest {
        key_hint: k.hint(),
        device_public_key: dpk,
        fingerprint_commitment: [machine; 10],
        created_at: Utc::now(),
        nonce,
    }
    .sign(&k.hash(), dev)
    .unwrap()
}

async fn respond(h: &Harness, f: &Fixture, code: &str) -> (StatusCode, Value) {
    h.post("/v1/offline/respond", Some(&f.token), json!({"request_code": code})).await
}

async fn receipt(h: &Harness, code: &str) -> (StatusCode, Value) {
    h.post("/v1/client/offline/receipt", None, json!({"receipt_code": code})).await
}

async fn seats(h: &Harness, f: &Fixture) -> u64 {
    let (_, l) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    l["seats_used"].as_u64().unwrap_or_else(|| panic!("{l}"))
}

/// The fixture's license expires in 30 days, with the default lease: move its expiry out of the way.
async fn far_expiry(h: &Harness, f: &Fixture) {
    let (s, v) = h
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn set_offline(h: &Harness, f: &Fixture, offline: Value) -> (StatusCode, Value) {
    h.call(Method::PATCH, &format!("/v1/licenses/{}", f.license), Some(&f.token), Some(json!({"offline": offline})))
        .await
}

#[tokio::test]
async fn a_copied_state_cannot_free_a_seat_that_is_still_working() {
    let h = Harness::new().await;
    let f = h.fixture("copy", 1, "PERPETUAL").await;
    far_expiry(&h, &f).await;
    let dev = device();
    let (code, request) = signed_request(&f.key, &dev, 1);
    let (s, v) = respond(&h, &f, &code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The grant has the default 30-day lease, signed into the response.
    let resp = SignedResponse::decode(v["response_code"].as_str().unwrap()).unwrap();
    let lease = resp.grant.lease_expires_at.expect("offline grants have a lease by default");
    let days = (lease - Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.1).contains(&days), "{lease}");
    assert_eq!(
        v["summary"]["lease_expires_at"].as_str().map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()),
        Some(lease)
    );

    // A copy of the device's state hands in a receipt: the activation ends, but the seat stays counted until
    // the grant's lease ends (the original keeps working until then, and cannot be told).
    let r = receipt_for(&f.key, &dev, &request, Utc::now());
    let (s, v) = receipt(&h, &r).await;
    assert_eq!(
        (s, v["freed"].as_bool(), v["release"].as_str()),
        (StatusCode::OK, Some(true), Some("AFTER_LEASE")),
        "{v}"
    );
    let held: chrono::DateTime<Utc> = v["seat_held_until"].as_str().unwrap().parse().unwrap();
    assert_eq!(held, lease);
    assert!(v["message"].as_str().unwrap().contains("free again at"), "{v}");
    assert_eq!(seats(&h, &f).await, 1);
    let other = device();
    let (other_code, _) = signed_request(&f.key, &other, 2);
    let (s, v) = respond(&h, &f, &other_code).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    // The same receipt again changes nothing and says when the seat frees.
    let (s, v) = receipt(&h, &r).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    assert_eq!(v["seat_held_until"].as_str().map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()), Some(lease));
    // The released grant's device key cannot take the held seat back as a "new" activation either.
    let (again, _) = signed_request(&f.key, &dev, 3);
    let (s, v) = respond(&h, &f, &again).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");

    // When the lease would have ended, the seat is free.
    h.advance(Duration::days(30) + Duration::seconds(1));
    assert_eq!(seats(&h, &f).await, 0);
    let (s, v) = respond(&h, &f, &other_code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_receipt_ends_only_the_grant_it_names() {
    let h = Harness::new().await;
    let f = h.fixture("named", 2, "PERPETUAL").await;
    let dev = device();
    let (c1, r1) = signed_request(&f.key, &dev, 1);
    let (s, v) = respond(&h, &f, &c1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = v["summary"]["activation_id"].clone();
    // Renewal: a new request from the same device (same machine) keeps the activation and moves the lease.
    h.advance(Duration::days(10));
    let (c2, r2) = signed_request(&f.key, &dev, 2);
    let (s, v) = respond(&h, &f, &c2).await;
    assert_eq!((s, v["summary"]["reused"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["summary"]["activation_id"], first);
    let renewed: chrono::DateTime<Utc> = v["summary"]["lease_expires_at"].as_str().unwrap().parse().unwrap();
    assert!(renewed > Utc::now() + Duration::days(39), "{renewed}");

    // A receipt made from a copy holding the first grant is refused: the device holds another one now.
    let old = receipt_for(&f.key, &dev, &r1, Utc::now() + Duration::days(10));
    let (s, v) = receipt(&h, &old).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "RECEIPT_GRANT_MISMATCH"), "{v}");
    assert_eq!(seats(&h, &f).await, 1);
    // A receipt dated before the grant it names was issued is refused too.
    let early = receipt_for(&f.key, &dev, &r2, Utc::now());
    let (s, v) = receipt(&h, &early).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "RECEIPT_GRANT_MISMATCH"), "{v}");
    // The current grant's receipt works.
    let current = receipt_for(&f.key, &dev, &r2, Utc::now() + Duration::days(10));
    let (s, v) = receipt(&h, &current).await;
    assert_eq!((s, v["freed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["seat_held_until"].as_str().map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()), Some(renewed));
}

#[tokio::test]
async fn immediate_release_is_bounded_per_30_days() {
    let h = Harness::new().await;
    let f = h.fixture("immediate", 1, "PERPETUAL").await;
    far_expiry(&h, &f).await;
    let (s, v) = set_offline(&h, &f, json!({"release": "IMMEDIATE", "max_immediate_releases_per_30_days": 2})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for i in 0..3u16 {
        let dev = device();
        let (code, request) = signed_request(&f.key, &dev, i);
        let (s, v) = respond(&h, &f, &code).await;
        assert_eq!(s, StatusCode::OK, "round {i}: {v}");
        let (s, v) = receipt(&h, &receipt_for(&f.key, &dev, &request, Utc::now())).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["immediate_releases"]["limit"], 2, "{v}");
        if i < 2 {
            assert_eq!((v["release"].as_str(), v["seat_held_until"].is_null()), (Some("IMMEDIATE"), true), "{v}");
            assert_eq!(seats(&h, &f).await, 0);
        } else {
            // Over the limit: the receipt still ends the grant, but its seat is held until the lease ends.
            assert_eq!(v["release"], "AFTER_LEASE", "{v}");
            assert!(v["seat_held_until"].is_string(), "{v}");
            assert_eq!(seats(&h, &f).await, 1);
        }
    }
    // The window rolls: 30 days on, immediate releases are available again.
    h.advance(Duration::days(31));
    let dev = device();
    let (code, request) = signed_request(&f.key, &dev, 9);
    assert_eq!(respond(&h, &f, &code).await.0, StatusCode::OK);
    let (_, v) = receipt(&h, &receipt_for(&f.key, &dev, &request, Utc::now() + Duration::days(31))).await;
    assert_eq!(v["release"], "IMMEDIATE", "{v}");
}

#[tokio::test]
async fn staff_release_frees_a_held_seat_at_once_with_a_reason() {
    let h = Harness::new().await;
    let f = h.fixture("staff", 1, "PERPETUAL").await;
    let dev = device();
    let (code, request) = signed_request(&f.key, &dev, 1);
    let (_, v) = respond(&h, &f, &code).await;
    let activation = v["summary"]["activation_id"].as_str().unwrap().to_string();
    let (_, v) = receipt(&h, &receipt_for(&f.key, &dev, &request, Utc::now())).await;
    assert!(v["seat_held_until"].is_string(), "{v}");
    let path = format!("/v1/activations/{activation}/release");

    // A reason is required; read-only tokens and other tenants cannot.
    let (s, v) = h.post(&path, Some(&f.token), json!({"reason": "  "})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
    let (s, v) = h.post(&path, Some(&f.token), json!({})).await;
    assert!(s.is_client_error(), "{s} {v}");
    let (s, v) = h.post(&path, Some(&f.token), json!({"reason": "x".repeat(501)})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
    let (_, ro) = h.post("/v1/tokens", Some(&f.token), json!({"name": "ro", "role": "read-only"})).await;
    let (s, _) = h.post(&path, ro["token"].as_str(), json!({"reason": "x"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let other = h.fixture("staff-other", 1, "PERPETUAL").await;
    let (s, _) = h.post(&path, Some(&other.token), json!({"reason": "x"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(seats(&h, &f).await, 1);

    let (_, sup) = h.post("/v1/tokens", Some(&f.token), json!({"name": "desk", "role": "support"})).await;
    let (s, v) = h.post(&path, sup["token"].as_str(), json!({"reason": "machine scrapped, confirmed by phone"})).await;
    assert_eq!((s, v["release"].as_str()), (StatusCode::OK, Some("STAFF")), "{v}");
    assert!(v["seat_held_until"].is_null(), "{v}");
    assert_eq!(seats(&h, &f).await, 0);
    let (_, audit) = h.get("/v1/audit", Some(&f.token)).await;
    assert!(audit.to_string().contains("machine scrapped, confirmed by phone"), "{audit}");
}

#[tokio::test]
async fn a_grant_that_never_expires_cannot_be_handed_back_by_receipt() {
    let h = Harness::new().await;
    let f = h.fixture("never", 1, "PERPETUAL").await;
    // Bad input: zero days, too many, unknown words.
    for bad in [json!({"lease_days": 0}), json!({"lease_days": 4000}), json!({"lease_days": "forever"})] {
        let (s, v) = set_offline(&h, &f, bad.clone()).await;
        assert!(s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST, "{bad}: {s} {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("lease_days"), "{v}");
    }
    let (s, v) = set_offline(&h, &f, json!({"lease_days": "never"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["offline"]["lease_days"], "never", "{v}");
    let dev = device();
    let (code, request) = signed_request(&f.key, &dev, 1);
    let (s, v) = respond(&h, &f, &code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let resp = SignedResponse::decode(v["response_code"].as_str().unwrap()).unwrap();
    assert_eq!(resp.grant.lease_expires_at, None);
    let (s, v) = receipt(&h, &receipt_for(&f.key, &dev, &request, Utc::now())).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "OFFLINE_RELEASE_NOT_ALLOWED"), "{v}");
    assert_eq!(seats(&h, &f).await, 1);
    // Staff deactivation without a reason keeps the seat; a release with a reason frees it.
    let activation = h.get(&format!("/v1/licenses/{}/activations", f.license), Some(&f.token)).await.1["items"][0]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = h.post(&format!("/v1/activations/{activation}/deactivate"), Some(&f.token), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["seat_held_until"].is_string(), "{v}");
    assert_eq!(seats(&h, &f).await, 1);
    let (s, v) =
        h.post(&format!("/v1/activations/{activation}/release"), Some(&f.token), json!({"reason": "rma"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(seats(&h, &f).await, 0);
}

#[tokio::test]
async fn concurrent_licenses_only_borrow_offline_with_a_lease() {
    let h = Harness::new().await;
    let f = h.fixture("float", 1, "CONCURRENT").await;
    far_expiry(&h, &f).await;
    let (s, v) = set_offline(&h, &f, json!({"lease_days": "never"})).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"), "{v}");
    let (s, v) = h
        .post(
            "/v1/templates",
            Some(&f.token),
            json!({"name": "float-never", "product_id": f.product, "license_type": "CONCURRENT", "max_activations": 1,
                   "offline": {"lease_days": "never"}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // An online floating seat borrowed offline keeps a lease: the seat comes back when it ends.
    let dev = device();
    let (s, v) = activate(&h, &f.key, &dev, fingerprint("float-host")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (code, _) = signed_request(&f.key, &dev, 1);
    let (s, v) = respond(&h, &f, &code).await;
    assert_eq!((s, v["summary"]["reused"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let resp = SignedResponse::decode(v["response_code"].as_str().unwrap()).unwrap();
    assert!(resp.grant.lease_expires_at.is_some());
    let acts = h.get(&format!("/v1/licenses/{}/activations", f.license), Some(&f.token)).await.1;
    assert_eq!(acts["items"][0]["floating"], true, "{acts}");
    assert!(acts["items"][0]["lease_expires_at"].is_string(), "{acts}");
    h.advance(Duration::days(30) + Duration::minutes(1));
    let (s, v) = h.post("/v1/jobs/run", Some(&h.admin), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(seats(&h, &f).await, 0, "the borrowed seat came back when its lease ended");
}

#[tokio::test]
async fn the_same_device_key_renewing_from_another_machine_needs_its_own_seat() {
    let h = Harness::new().await;
    let f = h.fixture("moved", 1, "PERPETUAL").await;
    let dev = device();
    let (code, _) = request_from(&f.key, &dev, 1, 1);
    let (s, v) = respond(&h, &f, &code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = v["summary"]["activation_id"].clone();
    // The device key (copied) asks from a machine with another fingerprint: the first grant still runs, and
    // the license has one seat, so nothing is granted and nothing changes.
    let (moved, _) = request_from(&f.key, &dev, 2, 2);
    let (s, v) = respond(&h, &f, &moved).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
    let acts = h.get(&format!("/v1/licenses/{}/activations", f.license), Some(&f.token)).await.1;
    assert_eq!(acts["items"].as_array().unwrap().len(), 1, "{acts}");
    assert_eq!(acts["items"][0]["status"], "ACTIVE", "{acts}");

    // With a second seat it is granted: the first grant's activation ends with its seat held, and the vendor
    // sees a report.
    let (s, v) = h
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"max_activations": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = respond(&h, &f, &moved).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["summary"]["superseded"], first, "{v}");
    assert_eq!(seats(&h, &f).await, 2);
    let (_, reports) = h.get("/v1/security/reports", Some(&f.token)).await;
    assert!(reports.to_string().contains("offline_machine_changed"), "{reports}");
    // A third machine with the same key finds no seat.
    let (third, _) = request_from(&f.key, &dev, 3, 3);
    let (s, v) = respond(&h, &f, &third).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
}

#[tokio::test]
async fn old_format_receipts_are_refused_with_what_to_do() {
    let h = Harness::new().await;
    let (s, v) = receipt(&h, "RCT1-AAAAA-AAAAA").await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::BAD_REQUEST, "INVALID_CODE"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("older agent"), "{v}");
}

#[tokio::test]
async fn a_device_signed_deactivation_of_an_offline_grant_holds_its_seat_too() {
    let h = Harness::new().await;
    let f = h.fixture("device-deact", 1, "PERPETUAL").await;
    far_expiry(&h, &f).await;
    let dev = device();
    let (code, _) = signed_request(&f.key, &dev, 1);
    let (_, v) = respond(&h, &f, &code).await;
    let activation = v["summary"]["activation_id"].as_str().unwrap().to_string();
    // The device key (from the state file, or a copy of it) deactivates through the online route.
    let (s, v) = device_call(
        &h,
        "/v1/client/deactivate",
        &dev,
        json!({"activation_id": activation, "nonce": nonce(), "sent_at": Utc::now()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(seats(&h, &f).await, 1, "the grant still runs: its seat is held");
    let (other, _) = signed_request(&f.key, &device(), 2);
    let (s, v) = respond(&h, &f, &other).await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::CONFLICT, "SEAT_LIMIT_REACHED"), "{v}");
}

#[tokio::test]
async fn a_renewal_under_a_shorter_lease_keeps_the_hold_of_the_longer_grant() {
    let h = Harness::new().await;
    let f = h.fixture("shorter", 1, "PERPETUAL").await;
    far_expiry(&h, &f).await;
    assert_eq!(set_offline(&h, &f, json!({"lease_days": 90})).await.0, StatusCode::OK);
    let dev = device();
    let (c1, _) = signed_request(&f.key, &dev, 1);
    let (_, v) = respond(&h, &f, &c1).await;
    let long: chrono::DateTime<Utc> = v["summary"]["lease_expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(set_offline(&h, &f, json!({"lease_days": 30})).await.0, StatusCode::OK);
    let (c2, r2) = signed_request(&f.key, &dev, 2);
    let (_, v) = respond(&h, &f, &c2).await;
    let short: chrono::DateTime<Utc> = v["summary"]["lease_expires_at"].as_str().unwrap().parse().unwrap();
    assert!(short < long);
    // The 90-day grant (a copy may hold it) still runs: the receipt of the 30-day one holds the seat to day 90.
    let (s, v) = receipt(&h, &receipt_for(&f.key, &dev, &r2, Utc::now())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["seat_held_until"].as_str().map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()), Some(long), "{v}");
}
