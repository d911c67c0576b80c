//! Client endpoints (docs/PROTOCOL.md): activate, validate, heartbeat, deactivate. Successful answers are
//! signed envelopes of kind `server-response` echoing the client's nonce.
//!
//! Files: this one holds what every endpoint shares (the signed answer, nonce and device-signature checks,
//! refusal auditing); [`checks`] the rules about the license, the device and its environment; [`tokens`] the
//! signed artefacts and their caches; [`activate`] activation and validation; [`heartbeat`] heartbeats and
//! deactivation.

mod activate;
mod checks;
mod heartbeat;
mod tokens;

pub(crate) use activate::ValidateQuestion;
pub use checks::{client_addr, fingerprint_refusal, lease_for, license_refusal, parse_addr, reuse_margin};

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_core::crypto::ed25519_public_from_bytes;
use tessera_core::envelope::Envelope;
use tessera_core::{Domain, LicenseKey};
use uuid::Uuid;

use crate::error::{AppError, AppResult, ErrorCode};
use crate::services::{Ctx, Services};
use crate::store::{Activation, LicenseRecord};
use tessera_core::protocol::SignedPayload;
pub use tessera_core::protocol::{
    ActivateRequest, ActivateResult, DeactivateRequest, DeactivateResult, Endpoint, HeartbeatRequest, HeartbeatResult,
    ValidateRequest, ValidateResult, MAX_USAGE_AMOUNT, REPLAY_WINDOW_SECS,
};

/// A signed answer to a client: `{"signed": "<compact envelope>"}` on the wire. The compact form is base64url,
/// dots and ASCII labels, so it is written into the JSON without escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAnswer(pub String);

impl SignedAnswer {
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(self.0.len() + 14);
        s.push_str("{\"signed\":\"");
        s.push_str(&self.0);
        s.push_str("\"}");
        s
    }
}

impl Serialize for SignedAnswer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("signed", &self.0)?;
        m.end()
    }
}

/// A device-signed request body: parsed once, trusted only after its signature verifies.
pub trait DeviceRequest: serde::de::DeserializeOwned {
    /// What the request is, for error messages ("heartbeat").
    const WHAT: &'static str;
    fn activation_id(&self) -> Uuid;
}

impl DeviceRequest for HeartbeatRequest {
    const WHAT: &'static str = "heartbeat";
    fn activation_id(&self) -> Uuid {
        self.activation_id
    }
}

impl DeviceRequest for DeactivateRequest {
    const WHAT: &'static str = "deactivate";
    fn activation_id(&self) -> Uuid {
        self.activation_id
    }
}

pub fn parse_license_key(s: &str) -> AppResult<LicenseKey> {
    LicenseKey::parse(s).map_err(|e| AppError::new(ErrorCode::InvalidLicenseKey, e.to_string()))
}

pub(crate) fn check_nonce(nonce: &str) -> AppResult<()> {
    match tessera_core::encoding::b64url_decode(nonce) {
        Some(b) if (8..=64).contains(&b.len()) => Ok(()),
        _ => Err(AppError::new(ErrorCode::InvalidNonce, "nonce must be 16 random bytes in base64url without padding")),
    }
}

impl Services {
    /// `{"signed": "<envelope>"}` around `{"nonce", "endpoint", "activation_id"?, "server_time", "result"}`: the
    /// answer names the endpoint it answers and the activation it is about (none for validate), so the agent can
    /// refuse an answer made for another endpoint or another activation (docs/PROTOCOL.md).
    pub fn sign_response(
        &self,
        endpoint: Endpoint,
        activation_id: Option<Uuid>,
        nonce: &str,
        result: impl Serialize,
    ) -> AppResult<SignedAnswer> {
        self.sign_response_at(endpoint, activation_id, nonce, result, self.now())
    }

    /// [`Services::sign_response`] with the `server_time` the result was worked out at (a heartbeat's usage totals
    /// are of the quota periods that hold it, and the agent places them by it).
    pub fn sign_response_at(
        &self,
        endpoint: Endpoint,
        activation_id: Option<Uuid>,
        nonce: &str,
        result: impl Serialize,
        server_time: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<SignedAnswer> {
        // Serialized straight from the result's type, without building a JSON value first.
        let payload = SignedPayload {
            nonce: std::borrow::Cow::Borrowed(nonce),
            endpoint: Some(endpoint),
            activation_id,
            server_time,
            result,
        };
        let bytes = serde_json::to_vec(&payload).map_err(|e| AppError::internal("sign", e))?;
        let env = Envelope::seal(self.keys.signer(), Domain::ServerResponse, bytes);
        Ok(SignedAnswer(env.to_compact()))
    }

    /// The per-license-key limit, for requests that carry only the key's hint (deactivation receipts).
    pub(super) async fn license_by_key(&self, key: &LicenseKey) -> AppResult<Arc<LicenseRecord>> {
        self.store.get_license_by_key_hash(key.hash()).await.map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                AppError::new(ErrorCode::LicenseNotFound, "no license has this key: check the key, or ask the vendor")
            }
            e => AppError::store("license", e),
        })
    }

    /// Records a refused license lookup: an unknown key is counted and summarised (see
    /// [`super::UNKNOWN_KEY_SUMMARY_SECS`]), anything else audited like other refusals.
    pub(super) fn lookup_refusal(&self, ctx: &Ctx, action: &str, err: &AppError) {
        if err.code != ErrorCode::LicenseNotFound {
            return self.audit_refusal(ctx, None, action, None, err);
        }
        crate::metrics::METRICS.refusal(err.code.as_str());
        let now = self.now();
        let summary = {
            let mut u = self.unknown_keys.lock().unwrap_or_else(|e| e.into_inner());
            u.count += 1;
            if let Some(ip) = &ctx.ip {
                if u.ips.len() < 20 {
                    u.ips.insert(ip.clone());
                }
            }
            let due = u.since.is_none_or(|s| now - s >= Duration::seconds(super::UNKNOWN_KEY_SUMMARY_SECS));
            due.then(|| {
                let row = json!({
                    "refusals": u.count, "since": u.since.unwrap_or(now), "ips": u.ips,
                    "window_secs": super::UNKNOWN_KEY_SUMMARY_SECS,
                    "message": "refusals of unknown license keys, counted since the previous summary row",
                });
                *u = super::UnknownKeys { since: Some(now), count: 0, ips: Default::default() };
                row
            })
        };
        if let Some(details) = summary {
            let mut a = ctx.audit(now, None, "client.unknown_key", None, details);
            a.outcome = err.code.to_string();
            self.audit_later(a);
        }
    }

    /// Records a refused client call in the audit log without delaying the answer.
    pub(super) fn audit_refusal(
        &self,
        ctx: &Ctx,
        tenant: Option<Uuid>,
        action: &str,
        target: Option<String>,
        err: &AppError,
    ) {
        let mut a = ctx.audit(self.now(), tenant, action, target, json!({"message": err.message}));
        a.outcome = err.code.to_string();
        self.audit_later(a);
    }

    /// Whether the tenant has device blocks: most have none, and then the block lookup is skipped (the store
    /// answers from its fed cache).
    /// The parsed device key, from a small cache.
    pub(super) fn device_key(&self, public: &[u8]) -> Result<tessera_core::VerifyingKey, tessera_core::CryptoError> {
        if let Some(k) = self.device_keys.lock().unwrap_or_else(|e| e.into_inner()).get(public) {
            return Ok(k.clone());
        }
        let k = ed25519_public_from_bytes(public)?;
        let mut cache = self.device_keys.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 100_000 {
            cache.clear();
        }
        cache.insert(public.to_vec(), k.clone());
        Ok(k)
    }

    /// Verifies a device-signed body against the activation's key, before anything else in it is trusted.
    pub async fn verify_device_body<T: DeviceRequest>(
        &self,
        ctx: &Ctx,
        action: &str,
        path: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> AppResult<(T, Arc<Activation>, Arc<LicenseRecord>)> {
        let sig = signature.and_then(tessera_core::encoding::b64url_decode).ok_or_else(|| {
            AppError::new(
                ErrorCode::SignatureRequired,
                "this request must be signed by the device key (header X-Tessera-Signature, base64url)",
            )
        })?;
        // One parse in the common case; a body that does not parse whole is still checked for its activation and
        // signature first, so a forged request is refused as forged (401, audited), not as malformed.
        let parsed: Result<T, _> = serde_json::from_slice(body);
        let activation_id = match &parsed {
            Ok(r) => r.activation_id(),
            Err(_) => {
                #[derive(Deserialize)]
                struct Head {
                    activation_id: Uuid,
                }
                serde_json::from_slice::<Head>(body)
                    .map_err(|e| AppError::bad_request(format!("the body must be JSON with an activation_id: {e}")))?
                    .activation_id
            }
        };
        let (a, rec) = self.store.activation_with_license(activation_id).await.map_err(|e| match e {
            crate::store::StoreError::NotFound => AppError::new(
                ErrorCode::ActivationNotFound,
                "this activation does not exist (it may have been purged): activate again",
            ),
            e => AppError::store("activation", e),
        })?;
        let bad = || {
            AppError::new(
                ErrorCode::SignatureInvalid,
                "the device signature does not verify: the request was altered or signed by another device",
            )
        };
        let vk = self.device_key(&a.device_public_key).map_err(|_| bad())?;
        if vk.verify(Domain::DeviceMessage, &[path.as_bytes()], body, &sig).is_err() {
            let e = bad();
            self.audit_refusal(ctx, Some(a.tenant_id), action, Some(a.id.to_string()), &e);
            return Err(e);
        }
        let req = parsed.map_err(|e| AppError::bad_request(format!("{} body is not valid: {e}", T::WHAT)))?;
        Ok((req, a, rec))
    }

    pub(super) fn check_sent_at(&self, sent_at: DateTime<Utc>) -> AppResult<()> {
        let skew = (self.now() - sent_at).num_seconds().abs();
        if skew > REPLAY_WINDOW_SECS {
            return Err(AppError::new(
                ErrorCode::StaleRequest,
                format!(
                    "sent_at is {skew} s away from server time (limit {REPLAY_WINDOW_SECS} s): check the device clock"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn the_client_address_is_read_with_or_without_a_port() {
        let at = |ip: &str| client_addr(&Ctx::client(Some(ip.to_string())));
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(at("203.0.113.9"), Some(v4));
        assert_eq!(at("203.0.113.9:4711"), Some(v4));
        assert_eq!(at("::ffff:203.0.113.9"), Some(v4));
        assert_eq!(at("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(at("not an address"), None);
    }

    #[test]
    fn a_signed_answer_is_written_as_the_json_serde_would_write() {
        let key = tessera_core::SigningKey::generate_ed25519();
        let env = Envelope::seal(&key, Domain::ServerResponse, br#"{"nonce":"n\u0000\"","result":{}}"#.to_vec());
        let a = SignedAnswer(env.to_compact());
        assert_eq!(a.to_json(), serde_json::to_string(&a).unwrap());
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(Envelope::from_compact(v["signed"].as_str().unwrap()).unwrap().to_compact(), a.0);
    }
}
