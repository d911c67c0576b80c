//! The audit log's hash chain: how each row's hash is computed from the previous one. Shared by every backend
//! (when appending) and the verifier (`services::audit`).

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::NewAudit;

/// How the chain hash of an audit row is computed. Shared by the store (when appending) and the verifier.
pub fn audit_hash(prev_hash: &[u8], seq: i64, e: &NewAudit) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tessera/audit/v1\0");
    h.update(prev_hash);
    h.update(canonical_audit(seq, e));
    h.finalize().into()
}

/// The hashed form of an audit row: compact JSON with keys in alphabetical order (the order of the fields below;
/// nested objects are `serde_json` maps, sorted too). Serialized from borrowed fields, without a JSON value.
fn canonical_audit(seq: i64, e: &NewAudit) -> Vec<u8> {
    #[derive(Serialize)]
    struct Canonical<'a> {
        action: &'a str,
        actor: &'a str,
        at: String,
        details: &'a Value,
        ip: &'a Option<String>,
        outcome: &'a str,
        seq: i64,
        target: &'a Option<String>,
        tenant_id: &'a Option<Uuid>,
    }
    let c = Canonical {
        action: &e.action,
        actor: &e.actor,
        at: crate::time::ts(e.at),
        details: &e.details,
        ip: &e.ip,
        outcome: &e.outcome,
        seq,
        target: &e.target,
        tenant_id: &e.tenant_id,
    };
    serde_json::to_vec(&c).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The form chains were first hashed in: a `json!` value (sorted keys). Existing logs must keep verifying.
    fn original(seq: i64, e: &NewAudit) -> Vec<u8> {
        serde_json::json!({
            "seq": seq,
            "at": crate::time::ts(e.at),
            "tenant_id": e.tenant_id,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "ip": e.ip,
            "outcome": e.outcome,
            "details": e.details,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_canonical_form_is_byte_identical_to_the_original() {
        let base = NewAudit {
            at: chrono::Utc::now(),
            tenant_id: Some(Uuid::new_v4()),
            actor: "token:ab\"c".into(),
            action: "client.heartbeat".into(),
            target: Some(Uuid::new_v4().to_string()),
            ip: Some("203.0.113.9".into()),
            outcome: "OK".into(),
            details: serde_json::json!({"z": [1, {"b": null, "a": "é\n"}], "a": 1.5, "usage": 0}),
        };
        let bare = NewAudit { tenant_id: None, target: None, ip: None, details: Value::Null, ..base.clone() };
        for (seq, e) in [(1, &base), (i64::MAX, &bare)] {
            assert_eq!(canonical_audit(seq, e), original(seq, e));
        }
    }
}
