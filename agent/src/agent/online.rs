//! Online activation, heartbeats and deactivation against the license server.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tessera_core::encoding::b64url;
use tessera_core::model::Feature;
use tessera_core::protocol::{
    ActivateRequest, ActivateResult, ActivationStatus, AgentMetrics, DeactivateRequest, DeactivateResult,
    DeviceMetadata, Endpoint, HeartbeatRequest, HeartbeatResult, Held,
};
use tessera_core::token::{verify_activation_token, verify_license_file};
use tessera_core::{LicenseKey, LicenseStatus};
use uuid::Uuid;

use super::load::{canonical_compact, canonical_license_file};
use super::{bad_key, Agent};
use crate::client::{self, Client, ForActivation};
use crate::clock::TrustedTime;
use crate::error::AgentError;
use crate::state::{self, ActivationRow, Mode};

/// The outcome of an online activation.
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub reused: bool,
    pub lease_expires_at: DateTime<Utc>,
    pub heartbeat_interval_secs: u32,
    pub features: Vec<Feature>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The outcome of a heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatOutcome {
    pub activation_status: ActivationStatus,
    pub license_status: LicenseStatus,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub next_heartbeat_secs: u32,
    /// Usage events sent in this heartbeat.
    pub usage_sent: usize,
    /// Usage events the server acknowledged (removed from the local queue).
    pub usage_acknowledged: usize,
    pub server_time: DateTime<Utc>,
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Usage events sent per heartbeat at most.
const USAGE_BATCH: usize = 500;

impl Agent {
    fn client(&self) -> Result<&Client, AgentError> {
        self.inner.client.as_ref().ok_or(AgentError::NoServer)
    }

    /// Records a verified server time as trusted time.
    fn trust_server_time(&self, tx: &rusqlite::Connection, t: DateTime<Utc>) -> rusqlite::Result<()> {
        let clock = &*self.inner.config.clock;
        state::set_trusted_time(tx, &TrustedTime::from_server(t, clock.now(), clock.boot()))
    }

    /// Activates this device online with a license key.
    pub async fn activate(&self, key: &str) -> Result<Activated, AgentError> {
        let key = LicenseKey::parse(key).map_err(bad_key)?;
        let client = self.client()?;
        let cfg = &self.inner.config;
        let nonce = client::nonce();
        let body = ActivateRequest {
            license_key: key.expose().to_string(),
            product_id: Some(cfg.product_id),
            fingerprint: self.inner.identity.fingerprint.components().to_vec(),
            device_public_key: b64url(&self.inner.device_public),
            domain: self.inner.domain.as_deref().map(str::to_string),
            cpu: Some(cfg.cpu()),
            user_id: cfg.user_id.clone(),
            metadata: Some(DeviceMetadata {
                hostname: sysinfo::System::host_name().ok(),
                os: Some(std::env::consts::OS.to_string()),
                app_version: cfg.app_version.clone(),
                agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                other: Default::default(),
            }),
            nonce: nonce.clone(),
        };
        let v = client
            .post::<ActivateResult>(Endpoint::Activate, &body, &nonce, None, &cfg.keyset, ForActivation::Created)
            .await?;
        let r = v.result;
        if v.activation_id != Some(r.activation_id) {
            return Err(AgentError::UntrustedResponse(
                "the activation answer names another activation than the one it returns".into(),
            ));
        }
        let license = verify_license_file(&r.license_file, &cfg.keyset)
            .map_err(|e| AgentError::UntrustedResponse(format!("license file: {e}")))?
            .license;
        let token = verify_activation_token(&r.activation_token, &cfg.keyset)
            .map_err(|e| AgentError::UntrustedResponse(format!("activation token: {e}")))?;
        if token.device_public_key != self.inner.device_public
            || token.license_id != license.id
            || token.activation_id != r.activation_id
        {
            return Err(AgentError::UntrustedResponse("the activation token is for another device or license".into()));
        }
        if license.product_id != cfg.product_id {
            return Err(AgentError::Refused(format!(
                "this license is for product {}, not {}: check --product / TESSERA_PRODUCT_ID",
                license.product_id, cfg.product_id
            )));
        }
        let row = ActivationRow {
            mode: Mode::Online,
            key_hash: key.hash(),
            activation_id: Some(r.activation_id),
            license_file: canonical_license_file(&r.license_file),
            activation_token: canonical_compact(&r.activation_token),
            request_bytes: None,
            response_code: None,
            fingerprint: None,
            last_response: None,
            heartbeat_interval_secs: Some(r.heartbeat_interval_secs),
            activated_at: cfg.clock.now(),
        };
        let mut store = self.store();
        store.tx(|tx| {
            state::put_activation(tx, &row)?;
            state::delete_pending(tx, &row.key_hash)?;
            self.trust_server_time(tx, v.server_time)
        })?;
        self.reload_locked(&mut store)?;
        Ok(Activated {
            activation_id: r.activation_id,
            license_id: license.id,
            reused: r.reused,
            lease_expires_at: token.lease_expires_at,
            heartbeat_interval_secs: token.heartbeat_interval_secs,
            features: license.features,
            expires_at: license.expires_at,
        })
    }

    /// One heartbeat: sends queued usage, refreshes lease and license, applies status changes at once.
    pub async fn heartbeat(&self) -> Result<HeartbeatOutcome, AgentError> {
        let client = self.client()?;
        let cfg = &self.inner.config;
        let (activation, queue) = {
            let store = self.store();
            let a = store.activation()?.ok_or(AgentError::NotActivated)?;
            (a, store.usage_queue(USAGE_BATCH)?)
        };
        let activation_id = match (activation.mode, activation.activation_id) {
            (Mode::Online, Some(id)) => id,
            _ => {
                return Err(AgentError::Refused(
                    "this device was activated offline: there is no server activation to heartbeat; use request-code / apply-code to renew".into(),
                ))
            }
        };
        let nonce = client::nonce();
        let sent = queue.len();
        let body = HeartbeatRequest {
            activation_id,
            nonce: nonce.clone(),
            sent_at: cfg.clock.now(),
            usage: queue,
            metrics: Some(AgentMetrics {
                agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                other: Default::default(),
            }),
            // The host as it is now: one activation heard from two different hosts is flagged by the server.
            fingerprint_digest: Some(hex::encode(self.inner.identity.fingerprint.digest())),
            // What this device holds already: the server sends a license file or token only when it changed.
            held: Held {
                license_file: activation.license_file.as_deref().map(sha256_hex),
                activation_token: activation.activation_token.as_deref().map(sha256_hex),
            },
        };
        let v = client
            .post::<HeartbeatResult>(
                Endpoint::Heartbeat,
                &body,
                &nonce,
                Some(&self.inner.device),
                &cfg.keyset,
                ForActivation::Is(activation_id),
            )
            .await?;
        let r = v.result;
        let deactivated = r.activation_status == ActivationStatus::Deactivated;
        // Verify everything before storing anything.
        let mut new_license_file = None;
        let mut new_license = None;
        let mut new_token = None;
        let interval = r.next_heartbeat_secs;
        let mut lease = None;
        if !deactivated {
            if let Some(lf) = &r.license_file {
                let l = verify_license_file(lf, &cfg.keyset)
                    .map_err(|e| AgentError::UntrustedResponse(format!("license file: {e}")))?;
                new_license_file = canonical_license_file(lf).map(|c| (c, l.license.id));
                new_license = Some(l.license);
            }
            if let Some(tok) = &r.activation_token {
                let t = verify_activation_token(tok, &cfg.keyset)
                    .map_err(|e| AgentError::UntrustedResponse(format!("activation token: {e}")))?;
                if t.device_public_key != self.inner.device_public || t.activation_id != activation_id {
                    return Err(AgentError::UntrustedResponse(
                        "the refreshed activation token is for another device".into(),
                    ));
                }
                lease = Some(t.lease_expires_at);
                new_token = canonical_compact(tok);
            }
        }
        let mut store = self.store();
        let acknowledged = store.tx(|tx| {
            let n = state::ack_usage(tx, &r.accepted_usage)?;
            for (feature, total) in &r.usage_totals {
                state::set_usage_total(tx, feature, *total, v.server_time)?;
            }
            // The totals are of the quota periods that hold the server's time: an acknowledged event dated later
            // (this machine's clock ahead of the server's) is in none of them yet, so it stays counted here.
            let snap = self.snapshot();
            let license = new_license.as_ref().or(snap.license.as_ref());
            state::prune_acked(tx, |feature| {
                let l = license?;
                l.quota_window(l.feature(feature)?, v.server_time).map(|w| w.end)
            })?;
            self.trust_server_time(tx, v.server_time)?;
            if deactivated {
                state::delete_activation(tx)?;
            } else if let Some(mut row) =
                tx.query_row("SELECT 1 FROM activation", [], |_| Ok(())).ok().map(|_| activation.clone())
            {
                if let Some((lf, _)) = &new_license_file {
                    row.license_file = Some(lf.clone());
                }
                if let Some(tok) = &new_token {
                    row.activation_token = Some(tok.clone());
                }
                row.last_response = canonical_compact(&v.signed);
                row.heartbeat_interval_secs = Some(interval);
                state::put_activation(tx, &row)?;
            }
            Ok(n)
        })?;
        self.reload_locked(&mut store)?;
        Ok(HeartbeatOutcome {
            activation_status: r.activation_status,
            license_status: r.license_status,
            lease_expires_at: lease,
            next_heartbeat_secs: interval,
            usage_sent: sent,
            usage_acknowledged: acknowledged,
            server_time: v.server_time,
        })
    }

    /// Deactivates online (frees the seat) after a last attempt to send queued usage; then removes the
    /// activation locally.
    pub async fn deactivate(&self) -> Result<(), AgentError> {
        let client = self.client()?;
        let cfg = &self.inner.config;
        let activation = self.store().activation()?.ok_or(AgentError::NotActivated)?;
        let Some(activation_id) = activation.activation_id.filter(|_| activation.mode == Mode::Online) else {
            return Err(AgentError::Refused(
                "this device was activated offline: use `tessera-agent deactivate --offline` and hand the receipt code to the vendor".into(),
            ));
        };
        if let Err(e) = self.heartbeat().await {
            tracing::warn!(error = %e, "could not flush usage before deactivating");
        }
        let nonce = client::nonce();
        let body = DeactivateRequest { activation_id, nonce: nonce.clone(), sent_at: cfg.clock.now() };
        let v = client
            .post::<DeactivateResult>(
                Endpoint::Deactivate,
                &body,
                &nonce,
                Some(&self.inner.device),
                &cfg.keyset,
                ForActivation::Is(activation_id),
            )
            .await?;
        if !v.result.deactivated {
            return Err(AgentError::Refused("the server did not confirm the deactivation: try again".into()));
        }
        let mut store = self.store();
        store.tx(|tx| {
            state::delete_activation(tx)?;
            self.trust_server_time(tx, v.server_time)
        })?;
        self.reload_locked(&mut store)
    }

    /// True when the device holds an online activation (heartbeats apply).
    pub fn is_online_activated(&self) -> bool {
        let s = self.snapshot();
        s.mode == Some(Mode::Online) && self.inner.client.is_some()
    }
}
