//! Online activation and validation.

use serde_json::json;
use tessera_core::crypto::ed25519_public_from_bytes;
use tessera_core::decision::{Environment, Inputs};
use tessera_core::fingerprint::{match_fingerprint, Fingerprint};
use tessera_core::{decide, Decision, Query, Reason};
use uuid::Uuid;

use crate::error::{AppError, AppResult, ErrorCode};
use crate::services::licenses::effective_status;
use crate::services::{Ctx, Services};
use crate::store::{ActivateOp, ActivateOutcome, Activation, ActivationStatus, LicenseRecord};
use tessera_core::protocol::MAX_METADATA_BYTES;
use tessera_core::protocol::{ActivateRequest, ActivateResult, Endpoint, ValidateRequest, ValidateResult};
use tessera_core::License;

use super::checks::*;
use super::*;

/// What a validate call asks about a license (see [`Services::validate_license`]).
pub(crate) struct ValidateQuestion<'a> {
    pub feature: Option<&'a str>,
    pub fingerprint: Option<Vec<tessera_core::fingerprint::Component>>,
    /// The activation asked about, already checked to belong to the license.
    pub activation: Option<&'a Activation>,
    /// The host's domain and address, for restrictions (`None`: unknown, which never denies).
    pub domain: Option<&'a str>,
    pub ip: Option<std::net::IpAddr>,
}

impl Services {
    pub async fn activate(&self, ctx: &Ctx, req: ActivateRequest) -> AppResult<SignedAnswer> {
        check_nonce(&req.nonce)?;
        let key = parse_license_key(&req.license_key)?;
        self.check_key_rate(&key)?;
        let device_key = tessera_core::encoding::b64url_decode(&req.device_public_key)
            .filter(|b| ed25519_public_from_bytes(b).is_ok())
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::InvalidDeviceKey,
                    "device_public_key must be a 32-byte Ed25519 public key in base64url",
                )
            })?;
        let metadata = match req.metadata.map(serde_json::to_value).transpose() {
            Ok(None) => json!({}),
            Ok(Some(v)) if v.to_string().len() <= MAX_METADATA_BYTES => v,
            _ => {
                return Err(AppError::invalid(format!(
                    "metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"
                )))
            }
        };
        let fingerprint = Fingerprint::new(req.fingerprint);
        let rec = self.license_by_key(&key).await.inspect_err(|e| self.lookup_refusal(ctx, "client.activate", e))?;
        let l = &rec.license;
        let now = self.now();
        let tenant = Some(l.tenant_id);
        let target = Some(l.id.to_string());
        if let Some(p) = req.product_id {
            if p != l.product_id {
                let e = AppError::new(ErrorCode::ProductMismatch, "this license key is for another product");
                self.audit_refusal(ctx, tenant, "client.activate", target, &e);
                return Err(e);
            }
        }
        if let Some(e) = license_refusal(l, now) {
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation(e.code.as_str());
            return Err(e);
        }
        let ip = client_addr(ctx);
        let country = self.country_of(l, ip);
        let env = Environment { country: country.as_deref(), domain: reported_domain(req.domain.as_deref()), ip };
        if let Some(e) = restriction_refusal(l, &env) {
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation(e.code.as_str());
            return Err(e);
        }
        if let Some(e) = fingerprint_refusal(&l.fingerprint_policy, &fingerprint) {
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation(e.code.as_str());
            return Err(e);
        }
        let fp_hashes: Vec<String> = fingerprint.components().iter().map(|c| hex::encode(c.hash)).collect();
        let block = if self.tenant_may_have_blocks(l.tenant_id).await? {
            self.store.find_block(l.tenant_id, device_key.clone(), fp_hashes).await?
        } else {
            None
        };
        if let Some(b) = block {
            let e = AppError::new(ErrorCode::DeviceBlocked, "this device is blocked by the vendor")
                .with_details(json!({"block_id": b.id}));
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation("DEVICE_BLOCKED");
            return Err(e);
        }
        let (seats, user_id) = match seat_terms(l, req.cpu, req.user_id) {
            Ok(t) => t,
            Err(e) => {
                self.audit_refusal(ctx, tenant, "client.activate", target, &e);
                crate::metrics::METRICS.activation(e.code.as_str());
                return Err(e);
            }
        };
        let lease = lease_for(l, now);
        let new = Activation {
            id: Uuid::now_v7(),
            tenant_id: l.tenant_id,
            license_id: l.id,
            device_public_key: device_key.clone(),
            fingerprint: fingerprint.clone(),
            metadata,
            status: ActivationStatus::Active,
            offline: false,
            floating: l.license_type.is_floating(),
            created_at: now,
            last_seen_at: now,
            lease_expires_at: Some(lease),
            deactivated_at: None,
            deactivation_reason: None,
            seat_held_until: None,
            seats,
            user_id,
        };
        let policy = l.fingerprint_policy.clone();
        let candidates = candidates_for(&fingerprint);
        let fp = fingerprint;
        let dk = device_key;
        // The same device: the same device key, or (a reinstalled agent with a new key) a fingerprint that matches
        // under the policy AND carries the same machine identity. Without an identity component on both sides,
        // look-alike hosts (cloned VMs, pods) could otherwise take turns on one seat.
        let same_device = Box::new(move |a: &Activation| {
            a.device_public_key == dk
                || (same_identity(&a.fingerprint, &fp) && match_fingerprint(&policy, &a.fingerprint, &fp).is_match())
        });
        let audit = ctx.audit(now, tenant, "client.activate", target, json!({"license_id": l.id}));
        let outcome = self
            .store
            .activate(ActivateOp {
                new,
                candidates,
                max_seats: if l.license_model.is_unlimited() { 0 } else { l.max_activations },
                same_device,
                reuse_lease_expires_at: Some(lease),
                supersede_if: None,
                audit,
            })
            .await?;
        let (activation, reused) = match outcome {
            ActivateOutcome::Created { activation, .. } => (activation, false),
            ActivateOutcome::Replaced { activation, replaced, .. } => {
                self.token_cache.lock().unwrap_or_else(|e| e.into_inner()).remove(&replaced);
                crate::metrics::METRICS.activation("replaced");
                (activation, false)
            }
            ActivateOutcome::Reused { activation, .. } => (activation, true),
            ActivateOutcome::SeatLimit { seats_used } => {
                crate::metrics::METRICS.activation("SEAT_LIMIT_REACHED");
                let needed = if l.license_model.counts_processors() {
                    format!(", this machine needs {seats}")
                } else {
                    String::new()
                };
                return Err(AppError::new(ErrorCode::SeatLimitReached,
                    format!(
                        "{seats_used} of the {} seats of this license are in use{needed}: deactivate another device or buy more seats",
                        l.max_activations
                    ),
                )
                .with_details(json!({"max_activations": l.max_activations, "seats_used": seats_used, "seats_needed": seats})));
            }
        };
        crate::metrics::METRICS.activation(if reused { "reused" } else { "created" });
        let token = self.activation_token(&activation, l, country.as_deref());
        self.remember_issued_token(&activation, &rec, &token, country);
        let result = ActivateResult {
            activation_id: activation.id,
            activation_token: token,
            license_file: self.license_file_for(&rec).text.clone(),
            lease_expires_at: activation.lease_expires_at,
            heartbeat_interval_secs: l.heartbeat_interval_secs,
            reused,
        };
        self.sign_response(Endpoint::Activate, Some(activation.id), &req.nonce, result)
    }

    pub async fn validate(&self, ctx: &Ctx, req: ValidateRequest) -> AppResult<SignedAnswer> {
        check_nonce(&req.nonce)?;
        let key = parse_license_key(&req.license_key)?;
        self.check_key_rate(&key)?;
        if let Some(f) = &req.feature {
            tessera_core::Feature::validate_id(f).map_err(AppError::bad_request)?;
        }
        let rec = self.license_by_key(&key).await.inspect_err(|e| self.lookup_refusal(ctx, "client.validate", e))?;
        let question = ValidateQuestion {
            feature: req.feature.as_deref(),
            fingerprint: req.fingerprint,
            activation: None,
            domain: req.domain.as_deref(),
            ip: client_addr(ctx),
        };
        let (result, _) = self.validate_license(ctx, "client.validate", &rec, question).await?;
        self.sign_response(Endpoint::Validate, None, &req.nonce, result)
    }

    /// The decision of a validate call (REST `validate`, gRPC `Validate`) for a license already found: the license
    /// as it stands now, the feature with its recorded usage, and, when asked, whether a machine (fingerprint) or
    /// an activation may use it. Audited as `action` when `audit_validate` is on (deferred: the answer does not
    /// wait). Returns the result and the license with its effective status.
    pub(crate) async fn validate_license(
        &self,
        ctx: &Ctx,
        action: &'static str,
        rec: &LicenseRecord,
        q: ValidateQuestion<'_>,
    ) -> AppResult<(ValidateResult, License)> {
        let now = self.now();
        let mut license = rec.license.clone();
        license.status = effective_status(&license, now);
        let mut inputs = Inputs::new(now, Some(&license));
        let country = self.country_of(&license, q.ip);
        inputs.environment = Environment { country: country.as_deref(), domain: reported_domain(q.domain), ip: q.ip };
        // With a fingerprint, the question is whether THIS machine may use the license: it must be one of the
        // license's active activations (NOT_ACTIVATED when there is none it could be, FINGERPRINT_MISMATCH when
        // there are some but it matches none of them). With an activation, that activation must be active (and
        // within its lease), and a fingerprint is matched against it alone.
        let mut not_activated = false;
        if let Some(a) = q.activation {
            if a.status == ActivationStatus::Active {
                inputs.lease_expires_at = a.lease_expires_at;
            } else {
                not_activated = true;
            }
        }
        if let Some(components) = q.fingerprint {
            let current = Fingerprint::new(components);
            let acts = match q.activation {
                Some(a) => vec![a.clone()],
                None => self.store.list_activations(None, license.id).await?,
            };
            let best = acts
                .iter()
                .filter(|a| a.status == ActivationStatus::Active && !a.fingerprint.is_empty())
                .map(|a| match_fingerprint(&license.fingerprint_policy, &a.fingerprint, &current))
                .max_by_key(|o| (o.is_match(), o.matched));
            not_activated |= best.is_none();
            inputs.fingerprint = best;
        }
        let mut query = Query { feature: q.feature, amount: 0, used: 0 };
        if let Some(f) = q.feature {
            query.used = self.used_in_period(&license, f, now).await?;
        }
        let mut decision = decide(&inputs, &query);
        if not_activated {
            decision = Decision { allowed: false, reason: Reason::NotActivated, facts: decision.facts };
        }
        if self.config.audit_validate {
            let mut a = ctx.audit(
                now,
                Some(license.tenant_id),
                action,
                Some(license.id.to_string()),
                json!({"feature": q.feature}),
            );
            a.outcome = decision.reason.as_str().to_string();
            self.audit_later(a);
        }
        let result = ValidateResult {
            valid: decision.allowed,
            decision,
            license_id: license.id,
            status: license.status,
            expires_at: license.expires_at,
        };
        crate::metrics::METRICS.decision(action, result.decision.reason.as_str());
        Ok((result, license))
    }

    pub(crate) async fn tenant_may_have_blocks(&self, tenant: Uuid) -> AppResult<bool> {
        self.store.has_blocks(tenant).await.map_err(|e| AppError::store("device blocks", e))
    }
}
