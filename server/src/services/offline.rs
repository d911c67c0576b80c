//! Air-gapped activation (request → response codes), deactivation receipts, emergency codes.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tessera_core::fingerprint::Fingerprint;
use tessera_core::model::EmergencyPolicy;
use tessera_core::offline::{license_binding, EmergencyCode, OfflineGrant, SignedReceipt, SignedRequest, CODE_EPOCH};
use uuid::Uuid;

use super::client::{license_refusal, parse_license_key};
use super::{Ctx, Services};
use crate::error::{AppError, AppResult};
use crate::store::{
    ActivateOp, ActivateOutcome, Activation, ActivationStatus, EmergencyOp, EmergencyOutcome, EmergencyRecord,
    LicenseRecord,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondRequest {
    pub request_code: String,
    #[serde(default)]
    pub license_key: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RespondSummary {
    pub license_id: Uuid,
    pub license_key_hint: String,
    pub device_public_key: String,
    pub activation_id: Uuid,
    pub reused: bool,
    pub seats_used: u32,
    pub max_activations: u32,
    pub features: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct RespondResult {
    pub response_code: String,
    pub summary: RespondSummary,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    pub receipt_code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueEmergency {
    pub reason: String,
    #[serde(default)]
    pub validity_hours: Option<u32>,
    #[serde(default)]
    pub request_code: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct IssuedEmergency {
    pub code: String,
    pub serial: u32,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_device: Option<String>,
    pub license_id: Uuid,
    pub reason: String,
}

/// An issued emergency code as listed: without the code text.
#[derive(Debug, Serialize)]
pub struct EmergencyListing {
    pub id: Uuid,
    pub serial: u32,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub reason: String,
    /// Bound to one device (issued for its request code).
    pub bound: bool,
    pub issued_by: String,
}

fn code_error(e: impl std::fmt::Display) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, "INVALID_CODE", e.to_string())
}

fn no_license() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "LICENSE_NOT_FOUND",
        "no license matches this code: check that it was made with the right license key",
    )
}

/// Rounds up to the minute (emergency codes carry minutes).
fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp() - CODE_EPOCH;
    let m = (s + 59).div_euclid(60) * 60 + CODE_EPOCH;
    Utc.timestamp_opt(m, 0).single().unwrap_or(t)
}

impl Services {
    /// Finds the license a request code names (by key hint) and verifies the device's signature with it.
    async fn license_for_request(&self, ctx: &Ctx, req: &SignedRequest, key: Option<&str>) -> AppResult<LicenseRecord> {
        if let Some(k) = key {
            let key = parse_license_key(k)?;
            let hash = key.hash();
            req.verify(&hash).map_err(|_| {
                AppError::new(
                    StatusCode::FORBIDDEN,
                    "CODE_MISMATCH",
                    "this request code was not made for this license key (or it was altered)",
                )
            })?;
            let rec = self.store.get_license_by_key_hash(hash).await.map_err(|_| no_license())?;
            // Staff answer for the licenses of their own tenant only, key or not.
            if ctx.principal.is_some() && ctx.scope()?.is_some_and(|s| s != rec.license.tenant_id) {
                return Err(no_license());
            }
            return Ok(std::sync::Arc::unwrap_or_clone(rec));
        }
        let scope = ctx.scope()?;
        let candidates = self.store.find_licenses_by_hint(req.request.key_hint).await?;
        candidates
            .into_iter()
            .filter(|r| scope.is_none_or(|s| s == r.license.tenant_id))
            .find(|r| req.verify(&r.key_hash).is_ok())
            .ok_or_else(no_license)
    }

    /// Answers an offline request code: activates the device (seat limits apply) and signs a response code.
    pub async fn offline_respond(&self, ctx: &Ctx, req: RespondRequest) -> AppResult<RespondResult> {
        let self_service = ctx.principal.is_none();
        if !self_service {
            ctx.require_support()?;
        } else {
            let Some(key) = req.license_key.as_deref() else {
                return Err(AppError::unauthorized(
                    "the self-service endpoint needs the license_key the request was made with",
                ));
            };
            self.check_key_rate(&parse_license_key(key)?)?;
        }
        let signed = SignedRequest::decode(&req.request_code).map_err(code_error)?;
        let rec = self.license_for_request(ctx, &signed, req.license_key.as_deref()).await?;
        let l = &rec.license;
        let now = self.now();
        if let Some(e) = license_refusal(l, now) {
            return Err(e);
        }
        let device_key = signed.request.device_public_key.to_vec();
        if let Some(b) = self.store.find_block(l.tenant_id, device_key.clone(), vec![]).await? {
            return Err(AppError::new(StatusCode::FORBIDDEN, "DEVICE_BLOCKED", "this device is blocked by the vendor")
                .with_details(json!({"block_id": b.id})));
        }
        let new = Activation {
            id: Uuid::now_v7(),
            tenant_id: l.tenant_id,
            license_id: l.id,
            device_public_key: device_key.clone(),
            fingerprint: Fingerprint::default(),
            metadata: json!({
                "offline": true,
                "fingerprint_commitment": hex::encode(signed.request.fingerprint_commitment),
                "requested_at": signed.request.created_at,
            }),
            status: ActivationStatus::Active,
            offline: true,
            floating: false,
            created_at: now,
            last_seen_at: now,
            lease_expires_at: None,
            deactivated_at: None,
            deactivation_reason: None,
        };
        let dk = device_key.clone();
        let audit = ctx.audit(
            now,
            Some(l.tenant_id),
            if self_service { "client.offline_respond" } else { "offline.respond" },
            Some(l.id.to_string()),
            json!({"device": tessera_core::encoding::b64url(&device_key)}),
        );
        let outcome = self
            .store
            .activate(ActivateOp {
                new,
                candidates: crate::store::SameDeviceCandidates::KeyOnly,
                max_seats: l.max_activations,
                same_device: Box::new(move |a: &Activation| a.device_public_key == dk),
                reuse_lease_expires_at: None,
                audit,
            })
            .await?;
        let (activation, reused, seats_used) = match outcome {
            // Offline activations are matched by device key only, so nothing is replaced here.
            ActivateOutcome::Created { activation, seats_used }
            | ActivateOutcome::Replaced { activation, seats_used, .. } => (activation, false, seats_used),
            ActivateOutcome::Reused { activation, seats_used } => (activation, true, seats_used),
            ActivateOutcome::SeatLimit { seats_used } => {
                return Err(AppError::new(
                    StatusCode::CONFLICT,
                    "SEAT_LIMIT_REACHED",
                    format!(
                        "all {} seats of this license are in use: free one (deactivation receipt) first",
                        l.max_activations
                    ),
                )
                .with_details(json!({"max_activations": l.max_activations, "seats_used": seats_used})))
            }
        };
        let grant = OfflineGrant {
            license_id: l.id,
            issued_at: now,
            license_type: l.license_type,
            license_model: l.license_model,
            starts_at: l.starts_at,
            expires_at: l.expires_at,
            maintenance_expires_at: l.maintenance_expires_at,
            lease_expires_at: None,
            grace_days: u8::try_from(l.grace_days).unwrap_or(u8::MAX),
            fingerprint_policy: l.fingerprint_policy.clone(),
            features: l.features.clone(),
        };
        let response_code = grant
            .sign(self.keys.signer(), &license_binding(&rec.key_hash, &l.product_id), &signed)
            .map_err(|e| AppError::internal("offline response", e))?;
        Ok(RespondResult {
            response_code,
            summary: RespondSummary {
                license_id: l.id,
                license_key_hint: hex::encode(rec.key_hint),
                device_public_key: tessera_core::encoding::b64url(&device_key),
                activation_id: activation.id,
                reused,
                seats_used,
                max_activations: l.max_activations,
                features: l.features.iter().map(|f| f.id.clone()).collect(),
                expires_at: l.expires_at,
            },
        })
    }

    /// Frees the seat named by a deactivation receipt. Idempotent: a second time answers `freed: false`.
    pub async fn offline_receipt(&self, ctx: &Ctx, req: ReceiptRequest) -> AppResult<Value> {
        if ctx.principal.is_some() {
            ctx.require_support()?;
        }
        let receipt = SignedReceipt::decode(&req.receipt_code).map_err(code_error)?;
        // The per-key limit is charged only once a receipt verifies: the key hint is printed in every code, so
        // charging forged receipts would let anyone use up a license's limit (its devices share it).
        let self_service = ctx.principal.is_none();
        let mut charged = false;
        let scope = if ctx.principal.is_some() { ctx.scope()? } else { None };
        let candidates = self.store.find_licenses_by_hint(receipt.receipt.key_hint).await?;
        // A device that was already freed (and maybe activated again since) has older, inactive activations:
        // only an active one is freed; with none, the receipt was already applied.
        let mut already_freed = None;
        for rec in candidates.into_iter().filter(|r| scope.is_none_or(|s| s == r.license.tenant_id)) {
            let acts = self.store.list_activations(None, rec.license.id).await?;
            for a in acts.iter().filter(|a| a.device_public_key.get(..4) == Some(&receipt.receipt.device_tag[..])) {
                let Ok(dk) = <[u8; 32]>::try_from(a.device_public_key.as_slice()) else {
                    continue;
                };
                if receipt.verify(&rec.key_hash, &dk).is_err() {
                    continue;
                }
                if self_service && !charged {
                    self.check_hint_rate(&receipt.receipt.key_hint)?;
                    charged = true;
                }
                if a.status != ActivationStatus::Active {
                    already_freed.get_or_insert((a.id, a.license_id));
                    continue;
                }
                let now = self.now();
                let audit = ctx.audit(
                    now,
                    Some(a.tenant_id),
                    "offline.receipt",
                    Some(a.id.to_string()),
                    json!({"license_id": a.license_id}),
                );
                let freed = self.store.deactivate(a.id, now, "offline deactivation receipt".into(), audit).await?;
                return Ok(json!({"freed": freed, "activation_id": a.id, "license_id": a.license_id}));
            }
        }
        if let Some((id, license_id)) = already_freed {
            return Ok(json!({"freed": false, "activation_id": id, "license_id": license_id}));
        }
        Err(AppError::new(
            StatusCode::NOT_FOUND,
            "ACTIVATION_NOT_FOUND",
            "no activation matches this receipt (wrong license, or the activation was purged)",
        ))
    }

    pub async fn issue_emergency(
        &self,
        ctx: &Ctx,
        license_id: Uuid,
        req: IssueEmergency,
    ) -> AppResult<IssuedEmergency> {
        ctx.require_support()?;
        let reason = req.reason.trim().to_string();
        if reason.is_empty() {
            return Err(AppError::invalid("reason is required: say why the customer needs an emergency code"));
        }
        if reason.chars().count() > 500 {
            return Err(AppError::invalid("reason must be at most 500 characters"));
        }
        let rec = self.license_record(ctx, license_id).await?;
        let l = &rec.license;
        let policy = rec.policy.emergency;
        if !policy.enabled {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "EMERGENCY_DISABLED",
                "emergency codes are disabled for this license (template emergency policy)",
            ));
        }
        if l.status == tessera_core::LicenseStatus::Revoked {
            return Err(AppError::conflict("LICENSE_REVOKED", "the license is revoked: no emergency code can help"));
        }
        let hours = req.validity_hours.unwrap_or(policy.validity_hours);
        if hours == 0 || hours > EmergencyPolicy::MAX_VALIDITY_HOURS {
            return Err(AppError::invalid(format!(
                "validity_hours must be between 1 and {} (7 days)",
                EmergencyPolicy::MAX_VALIDITY_HOURS
            )));
        }
        let bound_device: Option<[u8; 32]> = match &req.request_code {
            None => None,
            Some(code) => {
                let signed = SignedRequest::decode(code).map_err(code_error)?;
                signed.verify(&rec.key_hash).map_err(|_| {
                    AppError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "CODE_MISMATCH",
                        "this request code was not made for this license (or it was altered)",
                    )
                })?;
                Some(signed.request.device_public_key)
            }
        };
        let now = self.now();
        let expires_at = ceil_minute(now + Duration::hours(i64::from(hours)));
        let binding = license_binding(&rec.key_hash, &rec.license.product_id);
        let signer = self.keys.clone();
        let scope = policy.scope;
        let make_code = Box::new(move |serial: u32| {
            EmergencyCode { bound: bound_device.is_some(), scope, expires_at, serial }
                .sign(signer.signer(), &binding, bound_device.as_ref())
                .map_err(|e| e.to_string())
        });
        let record = EmergencyRecord {
            id: Uuid::now_v7(),
            tenant_id: l.tenant_id,
            license_id: l.id,
            serial: 0,
            reason: reason.clone(),
            issued_by: ctx.actor.clone(),
            issued_at: now,
            expires_at,
            bound_device: bound_device.map(|d| d.to_vec()),
            code: String::new(),
        };
        let audit = ctx.audit(
            now,
            Some(l.tenant_id),
            "emergency.issue",
            Some(l.id.to_string()),
            json!({"reason": reason, "expires_at": expires_at, "bound": bound_device.is_some()}),
        );
        let out = self
            .store
            .issue_emergency(EmergencyOp {
                record,
                window_start: now - Duration::days(30),
                max_in_window: policy.max_per_30_days,
                make_code,
                audit,
            })
            .await?;
        match out {
            EmergencyOutcome::Issued(r) => Ok(IssuedEmergency {
                code: r.code,
                serial: r.serial,
                expires_at: r.expires_at,
                bound_device: r.bound_device.as_deref().map(tessera_core::encoding::b64url),
                license_id: r.license_id,
                reason: r.reason,
            }),
            EmergencyOutcome::LimitReached { issued_in_window } => Err(AppError::new(
                StatusCode::CONFLICT,
                "EMERGENCY_LIMIT_REACHED",
                format!(
                    "{issued_in_window} emergency codes were issued for this license in the last 30 days (limit {}): \
                     fix the customer's activation instead",
                    policy.max_per_30_days
                ),
            )
            .with_details(json!({"issued_in_window": issued_in_window, "limit": policy.max_per_30_days}))),
        }
    }

    /// The emergency codes issued for a license (support or admin): when, by whom, why, until when; never the
    /// code text, which would grant access to whoever reads it.
    pub async fn list_emergency(&self, ctx: &Ctx, license_id: Uuid) -> AppResult<Vec<EmergencyListing>> {
        ctx.require_support()?;
        let rec = self.license_record(ctx, license_id).await?;
        let list = self.store.list_emergency(ctx.scope()?, rec.license.id).await?;
        Ok(list
            .into_iter()
            .map(|r| EmergencyListing {
                id: r.id,
                serial: r.serial,
                issued_at: r.issued_at,
                expires_at: r.expires_at,
                reason: r.reason,
                bound: r.bound_device.is_some(),
                issued_by: r.issued_by,
            })
            .collect())
    }
}
