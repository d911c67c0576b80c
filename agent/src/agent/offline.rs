//! Offline activation by copy-paste codes: request codes, response codes, emergency codes and deactivation
//! receipts.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tessera_core::codes::CodeKind;
use tessera_core::model::{EmergencyScope, Feature, LicenseType};
use tessera_core::offline::{
    license_binding, offline_grant_tag, online_grant_tag, DeactivationReceipt, OfflineRequest, SignedEmergency,
    SignedRequest, SignedResponse,
};
use tessera_core::LicenseKey;
use uuid::Uuid;

use super::load::{advance_trusted, canonical_code, emergency_floor};
use super::{bad_key, Agent};
use crate::error::AgentError;
use crate::state::{self, ActivationRow, Mode, PendingRequest};

/// What an applied code granted.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Applied {
    /// An offline response: the device is activated.
    Activation {
        license_id: Uuid,
        license_type: LicenseType,
        features: Vec<Feature>,
        expires_at: Option<DateTime<Utc>>,
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// An emergency code: access until it expires.
    Emergency { serial: u32, scope: EmergencyScope, bound: bool, expires_at: DateTime<Utc> },
}

impl Agent {
    /// Makes an offline request code for `key` and records it as pending.
    pub fn request_code(&self, key: &str) -> Result<String, AgentError> {
        let key = LicenseKey::parse(key).map_err(bad_key)?;
        let key_hash = key.hash();
        let now = self.inner.config.clock.now();
        let fp = &self.inner.identity.fingerprint;
        let mut commitment = [0u8; 10];
        commitment.copy_from_slice(&fp.digest()[..10]);
        let mut nonce = [0u8; 2];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let req = OfflineRequest {
            key_hint: key.hint(),
            device_public_key: self.inner.device_public,
            fingerprint_commitment: commitment,
            created_at: now,
            nonce: u16::from_be_bytes(nonce),
        };
        let (code, signed) = req.sign(&key_hash, &self.inner.device).map_err(AgentError::internal)?;
        let pending = PendingRequest {
            key_hash,
            request_bytes: signed.bytes,
            fingerprint: serde_json::to_string(fp).map_err(AgentError::internal)?,
            code: code.clone(),
            created_at: now,
        };
        let mut store = self.store();
        store.tx(|tx| state::put_pending(tx, &pending))?;
        self.reload_locked(&mut store)?;
        Ok(code)
    }

    /// Applies a response code (answering a pending request) or an emergency code.
    pub fn apply_code(&self, text: &str) -> Result<Applied, AgentError> {
        self.apply_code_with_key(text, None)
    }

    /// [`Agent::apply_code`]; `key` names the license of an emergency code on a machine that has neither an
    /// activation nor a pending request for it.
    pub fn apply_code_with_key(&self, text: &str, key: Option<&str>) -> Result<Applied, AgentError> {
        match CodeKind::detect(text) {
            Some(CodeKind::OfflineResponse) => self.apply_response(text),
            Some(CodeKind::Emergency) => self.apply_emergency(text, key),
            Some(other) => Err(AgentError::BadCode(format!(
                "this is an {other}; apply-code takes an offline response code (RSP1-…) or an emergency code (EMG1-…)"
            ))),
            None => Err(AgentError::BadCode(
                "not a Tessera code: apply-code takes an offline response code (RSP1-…) or an emergency code (EMG1-…)"
                    .into(),
            )),
        }
    }

    fn apply_response(&self, text: &str) -> Result<Applied, AgentError> {
        let resp = SignedResponse::decode(text).map_err(|e| AgentError::BadCode(e.to_string()))?;
        let cfg = &self.inner.config;
        let now = cfg.clock.now();
        let mut store = self.store();
        let pending = store.pending_requests()?;
        let matched = pending.into_iter().find(|p| {
            SignedRequest::from_bytes(p.request_bytes.clone()).ok().is_some_and(|req| {
                resp.verify(&cfg.keyset, &license_binding(&p.key_hash, &cfg.product_id), &req).is_ok()
            })
        });
        let Some(p) = matched else {
            return Err(AgentError::Refused(
                "this response code does not answer a pending request of this device: it was made for another device or request, or it was applied already. Run `tessera-agent request-code --key ...` and get a response for the new request".into(),
            ));
        };
        let grant = &resp.grant;
        if let Some(lease) = grant.lease_expires_at.filter(|l| *l <= now) {
            return Err(AgentError::Refused(format!(
                "this response's lease ended at {lease}: request a new response code"
            )));
        }
        let row = ActivationRow {
            mode: Mode::Offline,
            key_hash: p.key_hash,
            activation_id: None,
            license_file: None,
            activation_token: None,
            request_bytes: Some(p.request_bytes.clone()),
            response_code: canonical_code(CodeKind::OfflineResponse, text),
            fingerprint: Some(p.fingerprint.clone()),
            last_response: None,
            heartbeat_interval_secs: None,
            activated_at: now,
        };
        let floor = self.snapshot().floor;
        store.tx(|tx| {
            state::put_activation(tx, &row)?;
            state::delete_pending(tx, &p.key_hash)?;
            advance_trusted(tx, &*cfg.clock, floor, Duration::zero()).map(|_| ())
        })?;
        self.reload_locked(&mut store)?;
        Ok(Applied::Activation {
            license_id: grant.license_id,
            license_type: grant.license_type,
            features: grant.features.clone(),
            expires_at: grant.expires_at,
            lease_expires_at: grant.lease_expires_at,
        })
    }

    fn apply_emergency(&self, text: &str, key: Option<&str>) -> Result<Applied, AgentError> {
        let code = SignedEmergency::decode(text).map_err(|e| AgentError::BadCode(e.to_string()))?;
        let cfg = &self.inner.config;
        let now = cfg.clock.now();
        let snap = self.snapshot();
        if snap.trusted.is_rolled_back(now, cfg.clock_tolerance) {
            return Err(AgentError::Refused(format!(
                "the system clock is behind the last trusted time ({}): correct the clock, then apply the code",
                snap.clock.high_water
            )));
        }
        let mut store = self.store();
        let mut candidates: Vec<[u8; 32]> = Vec::new();
        if let Some(k) = key {
            candidates.push(LicenseKey::parse(k).map_err(bad_key)?.hash());
        }
        if let Some(a) = store.activation()? {
            candidates.push(a.key_hash);
        }
        candidates.extend(store.pending_requests()?.into_iter().map(|p| p.key_hash));
        if candidates.is_empty() {
            return Err(AgentError::Refused(
                "this machine has no activation or pending request naming a license: pass the license key (`apply-code --key TSK-…`)".into(),
            ));
        }
        let Some(key_hash) = candidates.into_iter().find(|kh| {
            code.verify(&cfg.keyset, &license_binding(kh, &cfg.product_id), &self.inner.device_public).is_ok()
        }) else {
            return Err(AgentError::Refused(
                "this emergency code is not valid for this license and device (it was issued for another license or bound to another device, or it is damaged)".into(),
            ));
        };
        let c = &code.code;
        if c.expires_at <= now {
            return Err(AgentError::Refused(format!(
                "this emergency code expired at {}: ask vendor support for a new one",
                c.expires_at
            )));
        }
        if c.scope == EmergencyScope::LicensedFeatures && !(snap.license.is_some() && snap.key_hash == Some(key_hash)) {
            return Err(AgentError::Refused(
                "this emergency code unlocks the features of this machine's license, but the machine holds no valid \
                 license for it: activate it first (online, or offline with a response code), or ask vendor support \
                 for an all-features emergency code"
                    .into(),
            ));
        }
        let canonical = canonical_code(CodeKind::Emergency, text)
            .ok_or_else(|| AgentError::BadCode("the emergency code cannot be re-encoded".into()))?;
        if now + cfg.clock_tolerance < emergency_floor(c.expires_at) {
            return Err(AgentError::Refused(format!(
                "the system clock ({now}) is behind the time this emergency code was issued (no earlier than {}): \
                 correct the clock, then apply the code",
                emergency_floor(c.expires_at)
            )));
        }
        let floor = Some(snap.floor.map_or(emergency_floor(c.expires_at), |f| f.max(emergency_floor(c.expires_at))));
        let inserted = store.tx(|tx| {
            let ok = state::insert_emergency(tx, &key_hash, c.serial, &canonical, c.expires_at, now)?;
            if ok {
                advance_trusted(tx, &*cfg.clock, floor, Duration::zero())?;
            }
            Ok(ok)
        })?;
        if !inserted {
            return Err(AgentError::Refused(format!(
                "emergency code serial {} was already applied on this device; each code works once per device: ask vendor support for a new one",
                c.serial
            )));
        }
        self.reload_locked(&mut store)?;
        Ok(Applied::Emergency { serial: c.serial, scope: c.scope, bound: c.bound, expires_at: c.expires_at })
    }

    /// Removes the activation locally and returns a deactivation receipt code, signed by the device key, that the
    /// customer hands back to the vendor to free the seat.
    pub fn deactivate_offline(&self) -> Result<String, AgentError> {
        let mut store = self.store();
        let a = store.activation()?.ok_or(AgentError::NotActivated)?;
        // The receipt names the grant it ends; the server refuses it for any other grant of this device.
        let grant = match (a.mode, &a.request_bytes, a.activation_id) {
            (Mode::Offline, Some(req), _) => offline_grant_tag(req),
            (Mode::Online, _, Some(id)) => online_grant_tag(&id),
            _ => return Err(AgentError::Refused("the stored activation is incomplete: it names no grant".into())),
        };
        // Never dated before what the signed artefacts vouch for (the server refuses receipts older than the
        // grant they end, and a clock set back must not make this device's receipt look like one).
        let now = self.inner.config.clock.now();
        let now = self.snapshot().floor.map_or(now, |f| now.max(f));
        let receipt = DeactivationReceipt::for_device(&a.key_hash, &self.inner.device_public, grant, now)
            .sign(&a.key_hash, &self.inner.device)
            .map_err(AgentError::internal)?;
        store.tx(|tx| state::delete_activation(tx))?;
        self.reload_locked(&mut store)?;
        Ok(receipt)
    }
}
