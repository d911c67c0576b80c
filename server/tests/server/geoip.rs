//! GEOGRAPHIC restrictions from a GeoIP database (MaxMind DB format), with a tiny database built here.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

/// Writes a MaxMind DB (IPv4, 24-bit records) that places the /24 `prefix` in country `iso` and knows nothing
/// else; see the MaxMind DB format specification.
fn tiny_mmdb(path: &std::path::Path, prefix: [u8; 3], iso: &str) {
    const NODES: u32 = 24;
    let bits: Vec<u8> = prefix.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
    let mut out = Vec::new();
    let rec = |v: u32, out: &mut Vec<u8>| out.extend_from_slice(&v.to_be_bytes()[1..]);
    for (i, bit) in bits.iter().enumerate() {
        // The branch on the prefix goes on (or, at the last bit, to the data at offset 0); the other finds nothing.
        let on = if i + 1 < bits.len() { i as u32 + 1 } else { NODES + 16 };
        let (left, right) = if *bit == 0 { (on, NODES) } else { (NODES, on) };
        rec(left, &mut out);
        rec(right, &mut out);
    }
    out.extend_from_slice(&[0u8; 16]);
    let s = |t: &str, out: &mut Vec<u8>| {
        out.push(0x40 | t.len() as u8);
        out.extend_from_slice(t.as_bytes());
    };
    // Data: {"country": {"iso_code": iso}}
    out.push(0xE1);
    s("country", &mut out);
    out.push(0xE1);
    s("iso_code", &mut out);
    s(iso, &mut out);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    // Metadata map.
    out.push(0xE9);
    s("binary_format_major_version", &mut out);
    out.extend_from_slice(&[0xA1, 2]);
    s("binary_format_minor_version", &mut out);
    out.push(0xA0);
    s("build_epoch", &mut out);
    out.extend_from_slice(&[0x01, 0x02, 1]); // uint64 (extended type 9), one byte
    s("database_type", &mut out);
    s("Tessera-Test-Country", &mut out);
    s("description", &mut out);
    out.push(0xE0);
    s("ip_version", &mut out);
    out.extend_from_slice(&[0xA1, 4]);
    s("languages", &mut out);
    out.extend_from_slice(&[0x00, 0x04]); // empty array (extended type 11)
    s("node_count", &mut out);
    out.extend_from_slice(&[0xC1, NODES as u8]);
    s("record_size", &mut out);
    out.extend_from_slice(&[0xA1, 24]);
    std::fs::write(path, out).unwrap();
}

async fn activate_from(h: &Harness, ip: &str, key: &str, seed: &str) -> (StatusCode, Value) {
    let body = json!({"license_key": key, "device_public_key": device_pub(&device()), "fingerprint": fingerprint(seed),
                      "nonce": nonce()});
    let (s, b) = h
        .raw(
            Method::POST,
            "/v1/client/activate",
            None,
            Some(serde_json::to_vec(&body).unwrap()),
            &[("x-forwarded-for", ip)],
        )
        .await;
    (s, serde_json::from_slice(&b).unwrap())
}

#[tokio::test]
async fn geographic_restrictions_use_the_geoip_country() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    tiny_mmdb(&db, [203, 0, 113], "de");
    let h = Harness::with_config(dir, |c| {
        c.trust_forwarded_for = true;
        c.geoip_db = Some(db.clone());
    })
    .await;
    let geo = h.services.geoip.as_ref().expect("the database is loaded");
    assert_eq!(geo.country("203.0.113.9".parse().unwrap()).as_deref(), Some("DE"));
    assert_eq!(geo.country("192.0.2.1".parse().unwrap()), None);

    let f = h.fixture("geo", 10, "SUBSCRIPTION").await;
    let (s, v) = h
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"restrictions": [{"kind": "GEOGRAPHIC", "mode": "DENY", "values": ["de"]}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = activate_from(&h, "203.0.113.9", &f.key, "in-de").await;
    assert_eq!((s, err_code(&v).as_str()), (StatusCode::FORBIDDEN, "RESTRICTED"), "{v}");
    assert_eq!(v["error"]["details"]["country"], "DE");
    // An address the database does not place: the country is unknown, and unknown facts never deny.
    let (s, v) = activate_from(&h, "192.0.2.1", &f.key, "unknown").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Validate decides the same way.
    let n = nonce();
    let body = serde_json::to_vec(&json!({"license_key": f.key, "nonce": n})).unwrap();
    let (s, b) =
        h.raw(Method::POST, "/v1/client/validate", None, Some(body), &[("x-forwarded-for", "203.0.113.200")]).await;
    assert_eq!(s, StatusCode::OK);
    let r = open_signed(&h.keys(), &serde_json::from_slice(&b).unwrap(), &n);
    assert_eq!(r["decision"]["reason"], "RESTRICTED", "{r}");
}

#[tokio::test]
async fn a_geoip_database_that_cannot_be_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broken.mmdb");
    std::fs::write(&db, b"not a database").unwrap();
    let mut config = test_config(dir.path());
    config.geoip_db = Some(db);
    let clock: tessera_server::time::Clock = std::sync::Arc::new(chrono::Utc::now);
    let err = tessera_server::open(config, clock).await.err().expect("refused");
    assert!(err.to_string().contains("broken.mmdb"), "{err}");
}

/// The activation token carries the country the database places the client in (so the agent decides GEOGRAPHIC
/// restrictions offline), at activation and in renewed heartbeat tokens; none when it is unknown or the license
/// has no GEOGRAPHIC restriction (no lookup is made for it).
#[tokio::test]
async fn the_activation_token_carries_the_geoip_country() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    tiny_mmdb(&db, [203, 0, 113], "de");
    let h = Harness::with_config(dir, |c| {
        c.trust_forwarded_for = true;
        c.geoip_db = Some(db.clone());
    })
    .await;
    let keys = h.keys();
    let country_of = |r: &Value| {
        tessera_core::token::verify_activation_token(r["activation_token"].as_str().unwrap(), &keys).unwrap().country
    };
    let f = h.fixture("geo-token", 10, "SUBSCRIPTION").await;
    let (s, v) = h
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license),
            Some(&f.token),
            Some(json!({"restrictions": [{"kind": "GEOGRAPHIC", "mode": "ALLOW", "values": ["DE", "AT"]}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let dev = device();
    let n = nonce();
    let body = json!({"license_key": f.key, "device_public_key": device_pub(&dev), "fingerprint": fingerprint("de"),
                      "nonce": n});
    let (s, b) = h
        .raw(
            Method::POST,
            "/v1/client/activate",
            None,
            Some(serde_json::to_vec(&body).unwrap()),
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = open_signed(&keys, &serde_json::from_slice(&b).unwrap(), &n);
    assert_eq!(country_of(&r).as_deref(), Some("DE"), "{r}");
    let activation = r["activation_id"].as_str().unwrap().to_string();

    // A heartbeat's token carries the country of that heartbeat's address; an address the database does not
    // place gives a token without one (unknown never denies, here or on the agent).
    let heartbeat_from = |ip: &'static str| {
        let (dev, activation, h) = (&dev, activation.clone(), &h);
        async move {
            let n = nonce();
            let now = *h.now.lock().unwrap();
            let bytes = serde_json::to_vec(&json!({"activation_id": activation, "nonce": n, "sent_at": now})).unwrap();
            let sig = dev.sign(tessera_core::Domain::DeviceMessage, &[b"/v1/client/heartbeat"], &bytes);
            let sig = tessera_core::encoding::b64url(&sig);
            let (s, b) = h
                .raw(
                    Method::POST,
                    "/v1/client/heartbeat",
                    None,
                    Some(bytes),
                    &[("x-forwarded-for", ip), ("x-tessera-signature", &sig)],
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
            open_signed(&h.keys(), &serde_json::from_slice(&b).unwrap(), &n)
        }
    };
    h.advance(chrono::Duration::seconds(1));
    assert_eq!(country_of(&heartbeat_from("203.0.113.20").await).as_deref(), Some("DE"));
    h.advance(chrono::Duration::seconds(1));
    assert_eq!(country_of(&heartbeat_from("192.0.2.1").await), None, "the country changed: a new token");
    h.advance(chrono::Duration::seconds(1));
    assert_eq!(country_of(&heartbeat_from("203.0.113.20").await).as_deref(), Some("DE"));

    // A license without a GEOGRAPHIC restriction: no lookup, no country in its tokens.
    let g = h.fixture("geo-none", 10, "SUBSCRIPTION").await;
    let (s, b) = h
        .raw(
            Method::POST,
            "/v1/client/activate",
            None,
            Some(
                serde_json::to_vec(&json!({"license_key": g.key, "device_public_key": device_pub(&device()),
                                          "fingerprint": fingerprint("plain"), "nonce": n}))
                .unwrap(),
            ),
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(country_of(&open_signed(&keys, &serde_json::from_slice(&b).unwrap(), &n)), None);
}
