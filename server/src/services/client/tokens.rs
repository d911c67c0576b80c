//! The signed artefacts a client receives (activation tokens, license files) and the caches that spare
//! re-signing them on every heartbeat.

use sha2::{Digest as _, Sha256};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tessera_core::token::{sign_activation_token, ActivationClaims};
use tessera_core::License;

use crate::services::licenses::effective_status;
use crate::services::Services;
use crate::store::{Activation, LicenseRecord};

use super::*;

/// The token a heartbeat answers with: the cached one (its lease is the stored one) or renewed with a new lease.
pub(super) struct HeartbeatToken {
    pub(super) lease: DateTime<Utc>,
    pub(super) token: Arc<str>,
    pub(super) digest: [u8; 32],
    pub(super) renewed: bool,
    pub(super) license_updated_at: DateTime<Utc>,
    /// The client country the token carries.
    pub(super) country: Option<String>,
}

impl Services {
    /// The signed activation token of `a`. `country`: the client's country (ISO alpha-2, from the GeoIP database)
    /// when known, carried so that the agent decides `GEOGRAPHIC` restrictions offline too.
    pub fn activation_token(&self, a: &Activation, l: &License, country: Option<&str>) -> String {
        let claims = ActivationClaims {
            activation_id: a.id,
            license_id: l.id,
            tenant_id: l.tenant_id,
            product_id: l.product_id,
            device_public_key: a.device_public_key.clone(),
            fingerprint: a.fingerprint.clone(),
            fingerprint_policy: l.fingerprint_policy.clone(),
            issued_at: self.now(),
            lease_expires_at: a.lease_expires_at.unwrap_or_else(|| lease_for(l, self.now())),
            heartbeat_interval_secs: l.heartbeat_interval_secs,
            seats: l.license_model.counts_processors().then_some(a.seats),
            user_id: a.user_id.clone(),
            country: country.map(str::to_string),
        };
        sign_activation_token(self.keys.signer(), &claims)
    }

    /// The activation token for a heartbeat. A token is re-signed when the license or device key changed, its
    /// lease is not the stored one (a re-activation, another node), the client's country is no longer the one it
    /// carries, or too little of its lease is left (see [`reuse_margin`]); until then the previous one is reused
    /// (`renewed: false`), so server and device agree on the lease.
    pub(super) fn token_for_heartbeat(
        &self,
        a: &Activation,
        rec: &LicenseRecord,
        country: Option<&str>,
        now: DateTime<Utc>,
    ) -> HeartbeatToken {
        let full = lease_for(&rec.license, now) - now;
        let keep = reuse_margin(full, rec.license.heartbeat_interval_secs);
        if let Some(c) = self.token_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&a.id) {
            if c.license_updated_at == rec.updated_at
                && c.device_key == a.device_public_key
                && a.lease_expires_at == Some(c.lease_expires_at)
                && c.country.as_deref() == country
                && c.lease_expires_at - now > keep
            {
                return HeartbeatToken {
                    lease: c.lease_expires_at,
                    token: c.token.clone(),
                    digest: c.digest,
                    renewed: false,
                    license_updated_at: rec.updated_at,
                    country: c.country.clone(),
                };
            }
        }
        let lease = now + full;
        let mut a2 = a.clone();
        a2.lease_expires_at = Some(lease);
        let token: Arc<str> = self.activation_token(&a2, &rec.license, country).into();
        let digest = Sha256::digest(token.as_bytes()).into();
        HeartbeatToken {
            lease,
            token,
            digest,
            renewed: true,
            license_updated_at: rec.updated_at,
            country: country.map(str::to_string),
        }
    }

    /// Remembers the token an activation answered with, so that the device's heartbeats reuse it (as they reuse
    /// a renewed one) instead of re-signing one and writing its lease at once.
    pub(super) fn remember_issued_token(
        &self,
        a: &Activation,
        rec: &LicenseRecord,
        token: &str,
        country: Option<String>,
    ) {
        let Some(lease) = a.lease_expires_at else { return };
        let t = HeartbeatToken {
            lease,
            token: token.into(),
            digest: Sha256::digest(token.as_bytes()).into(),
            renewed: false,
            license_updated_at: rec.updated_at,
            country,
        };
        self.remember_token(a, &t);
    }

    /// Remembers a renewed token once its lease is stored.
    pub(super) fn remember_token(&self, a: &Activation, t: &HeartbeatToken) {
        let mut cache = self.token_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 200_000 {
            cache.clear();
        }
        cache.insert(
            a.id,
            crate::services::CachedToken {
                license_updated_at: t.license_updated_at,
                device_key: a.device_public_key.clone(),
                lease_expires_at: t.lease,
                token: t.token.clone(),
                digest: t.digest,
                country: t.country.clone(),
            },
        );
    }

    /// The signed license file, re-signed only when the license changed or the cached one is an hour old.
    pub fn license_file_for(&self, rec: &LicenseRecord) -> Arc<crate::services::SignedFile> {
        let now = self.now();
        let status = effective_status(&rec.license, now);
        let fresh = |c: &crate::services::CachedFile| {
            c.updated_at == rec.updated_at && c.status == status && now - c.signed_at < Duration::hours(1)
        };
        if let Some(c) = self.file_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&rec.license.id) {
            if fresh(c) {
                return c.file.clone();
            }
        }
        let mut l = rec.license.clone();
        l.status = status;
        let text = tessera_core::token::sign_license_file(self.keys.signer(), &l, now);
        let file = Arc::new(crate::services::SignedFile { digest: Sha256::digest(text.as_bytes()).into(), text });
        let mut cache = self.file_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(
            rec.license.id,
            crate::services::CachedFile { updated_at: rec.updated_at, status, signed_at: now, file: file.clone() },
        );
        file
    }
}
