//! Re-activation from the same machine reuses its seat; look-alike machines without a machine identity do not.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_new_device_key_reuses_the_seat_only_with_the_same_machine_identity() {
    let h = Harness::new().await;
    let f = h.fixture("reuse", 5, "SUBSCRIPTION").await;
    // A reinstalled agent (new device key) on the same machine: same machine id → the same activation.
    let (_, first) = activate(&h, &f.key, &device(), fingerprint("host-1")).await;
    let (_, again) = activate(&h, &f.key, &device(), fingerprint("host-1")).await;
    assert_eq!(again["activation_id"], first["activation_id"], "{again}");
    assert_eq!(again["reused"], true);

    // Cloned hosts without a machine id: every other component equal, but no identity to prove sameness.
    let no_id = |fp: serde_json::Value| {
        json!(fp.as_array().unwrap().iter().filter(|c| c["kind"] != "machine_id").cloned().collect::<Vec<_>>())
    };
    let (_, a) = activate(&h, &f.key, &device(), no_id(fingerprint("clone"))).await;
    let (_, b) = activate(&h, &f.key, &device(), no_id(fingerprint("clone"))).await;
    assert_ne!(a["activation_id"], b["activation_id"], "look-alikes must not share a seat");
    assert_eq!(b["reused"], false);
    let (_, lic) = h.get(&format!("/v1/licenses/{}", f.license), Some(&f.token)).await;
    assert_eq!(lic["seats_used"], 3, "{lic}");
}
