//! When a heartbeat hands out its cached token again and when it signs a fresh one (docs/PROTOCOL.md, "Server
//! notes"): a token is reused only while more than the later of half the lease and 1.25 × the heartbeat interval
//! plus the agent's margin is left, so an honest agent's lease never lapses between two jittered heartbeats, and
//! heartbeats that come with plenty of lease left still get the cached token.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::common::*;

struct Device {
    dev: tessera_core::SigningKey,
    activation: String,
    /// The lease of the token the device holds.
    lease: DateTime<Utc>,
    /// The token the device holds.
    token: String,
}

async fn activated(h: &Harness, f: &Fixture, seed: &str) -> Device {
    let dev = device();
    let (s, r) = activate(h, &f.key, &dev, fingerprint(seed)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let lease = r["lease_expires_at"].as_str().unwrap().parse().unwrap();
    let token = r["activation_token"].as_str().unwrap().to_string();
    Device { dev, activation: r["activation_id"].as_str().unwrap().to_string(), lease, token }
}

/// One heartbeat at the harness's current time; returns whether the token was renewed (a new lease).
async fn beat(h: &Harness, d: &mut Device) -> bool {
    let n = nonce();
    let now = *h.now.lock().unwrap();
    let (s, v) = device_call(
        h,
        "/v1/client/heartbeat",
        &d.dev,
        json!({"activation_id": d.activation, "nonce": n, "sent_at": now}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = open_signed(&h.keys(), &v, &n);
    assert_eq!(r["activation_status"], "ACTIVE", "{r}");
    let lease: DateTime<Utc> = r["lease_expires_at"].as_str().unwrap().parse().unwrap();
    let token = r["activation_token"].as_str().unwrap();
    let claims = tessera_core::token::verify_activation_token(token, &h.keys()).unwrap();
    assert_eq!(claims.lease_expires_at, lease, "the answer's lease is its token's");
    assert!(lease >= d.lease, "a lease never moves back");
    let renewed = lease != d.lease;
    assert_eq!(renewed, token != d.token, "a token is re-signed exactly when its lease moves");
    d.lease = lease;
    d.token = token.to_string();
    renewed
}

/// Deterministic jitter in [0.9, 1.1] (xorshift), the extremes included.
fn jitters(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = vec![0.9, 1.1, 0.9, 1.1];
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(0.9 + 0.2 * (x % 10_001) as f64 / 10_000.0);
    }
    out
}

/// An agent that beats on its jittered interval alone (±10 %: an older agent, or one whose lease-aware early
/// beat comes a few seconds late) must never hold a lapsed lease when it beats. The old rule (reuse while more
/// than half the lease is left) let a beat that came a little early keep a token with just over one interval
/// left, and the next, a little late, land after the lease ended.
#[tokio::test]
async fn a_floating_lease_never_lapses_between_jittered_heartbeats() {
    let h = Harness::new().await;
    // Interval 60 s, so a floating lease is 120 s.
    let f = h.fixture("float-jitter", 5, "CONCURRENT").await;
    let mut d = activated(&h, &f, "jitter").await;
    let interval = 60.0;
    let mut renewals = 0;
    let beats = jitters(300);
    for (i, j) in beats.iter().enumerate() {
        h.advance(Duration::milliseconds((interval * j * 1000.0) as i64));
        let now = *h.now.lock().unwrap();
        assert!(d.lease > now, "beat {i}: the lease ended at {} before the heartbeat at {now}", d.lease);
        renewals += usize::from(beat(&h, &mut d).await);
    }
    assert_eq!(renewals, beats.len(), "beats an interval apart always renew a floating lease");
}

/// Heartbeats that come with plenty of lease left get the cached token (no signature, no lease write), the
/// activation's own token included: the quiet-heartbeat path stays the common case.
#[tokio::test]
async fn a_token_is_still_reused_while_plenty_of_its_lease_is_left() {
    let h = Harness::new().await;
    let f = h.fixture("float-reuse", 5, "CONCURRENT").await;
    let mut d = activated(&h, &f, "float").await;
    h.advance(Duration::seconds(1));
    assert!(!beat(&h, &mut d).await, "the first heartbeat reuses the token the activation answered with");
    // Floating: 120 s lease, interval 60 s → reused while more than 75 + 6 = 81 s are left.
    h.advance(Duration::seconds(10));
    assert!(!beat(&h, &mut d).await, "109 s left: reused");
    h.advance(Duration::seconds(27));
    assert!(!beat(&h, &mut d).await, "82 s left: reused");
    h.advance(Duration::seconds(2));
    assert!(beat(&h, &mut d).await, "80 s left: less than 1.25 intervals and the margin, renewed");

    // A long lease (3600 s, interval 60 s): reused on every beat until half of it is left.
    let f = h.fixture("long-reuse", 5, "SUBSCRIPTION").await;
    let mut d = activated(&h, &f, "long").await;
    let signed_at = *h.now.lock().unwrap();
    h.advance(Duration::seconds(1));
    assert!(!beat(&h, &mut d).await);
    let mut reused = 0;
    // 25 beats of at most 66 s: at most 1650 s of the 3600 s lease gone.
    for j in jitters(25) {
        h.advance(Duration::milliseconds((60_000.0 * j) as i64));
        reused += usize::from(!beat(&h, &mut d).await);
    }
    assert_eq!(reused, 25, "every heartbeat with more than half the lease left reuses the token");
    let since = *h.now.lock().unwrap() - signed_at;
    h.advance(Duration::seconds(1801) - since);
    assert!(beat(&h, &mut d).await, "less than half the lease left: renewed");
}
