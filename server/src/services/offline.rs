//! Air-gapped activation (request → response codes), deactivation receipts, emergency codes.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tessera_core::fingerprint::Fingerprint;
use tessera_core::model::{EmergencyPolicy, OfflineLease, OfflineRelease};
use tessera_core::offline::{
    license_binding, offline_grant_tag, online_grant_tag, EmergencyCode, GrantTag, OfflineGrant, SignedReceipt,
    SignedRequest, CODE_EPOCH,
};
use uuid::Uuid;

use super::client::{license_refusal, parse_license_key};
use super::{Ctx, Services};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::{
    hold_forever, ActivateOp, ActivateOutcome, Activation, ActivationStatus, EmergencyOp, EmergencyOutcome,
    EmergencyRecord, LicenseRecord, ReleaseKind, ReleaseOp, ReleaseOutcome, SuspiciousReport,
};
use crate::time::ts;

pub use tessera_core::protocol::{ReceiptRequest, RespondRequest, RespondResult, RespondSummary};

/// What a receipt (or a staff release) did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiptResult {
    /// This call ended the activation (false: it had ended already).
    pub freed: bool,
    pub activation_id: Uuid,
    pub license_id: Uuid,
    /// `AFTER_LEASE`, `IMMEDIATE`, `STAFF` or `SUPERSEDED`; absent when nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseKind>,
    /// The seat stays counted until then; absent: it is free now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat_held_until: Option<DateTime<Utc>>,
    /// Immediate releases of the license in the last 30 days and the limit (immediate-release policies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immediate_releases: Option<Value>,
    pub message: String,
}

impl ReceiptResult {
    fn from_outcome(a: &Activation, out: ReleaseOutcome, immediate_max: u32) -> ReceiptResult {
        let (freed, release, held, used) = match out {
            ReleaseOutcome::Released { kind, seat_held_until, immediate_in_window } => {
                (true, Some(kind), seat_held_until, immediate_in_window)
            }
            ReleaseOutcome::AlreadyInactive { seat_held_until } => (false, None, seat_held_until, 0),
            ReleaseOutcome::GrantChanged => (false, None, None, 0),
        };
        let message = match (freed, held) {
            (_, Some(t)) if t >= hold_forever() => {
                "the activation has ended; its grant never expires, so the seat stays in use until the vendor's \
                 staff release it"
                    .to_string()
            }
            (true, Some(t)) => format!(
                "the activation has ended; its seat is free again at {} (when the grant's lease would have ended)",
                ts(t)
            ),
            (true, None) => "the activation has ended and its seat is free".to_string(),
            (false, Some(t)) => format!("this receipt was applied already; the seat is free again at {}", ts(t)),
            (false, None) => "this receipt was applied already; the seat is free".to_string(),
        };
        ReceiptResult {
            freed,
            activation_id: a.id,
            license_id: a.license_id,
            release,
            seat_held_until: held,
            immediate_releases: (freed && immediate_max > 0 && release.is_some_and(|k| k != ReleaseKind::Staff))
                .then(|| json!({"in_last_30_days": used, "limit": immediate_max})),
            message,
        }
    }
}

/// The grant an activation holds: its tag (offline: the request it answered; online: its id) and issue time.
fn grant_of(a: &Activation) -> (GrantTag, Option<DateTime<Utc>>) {
    let issued = a.metadata.get("grant_issued_at").and_then(Value::as_str).and_then(crate::time::parse);
    let tag = a
        .metadata
        .get("grant_tag")
        .and_then(Value::as_str)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| GrantTag::try_from(b.as_slice()).ok());
    match tag {
        Some(t) => (t, issued),
        None if !a.offline => (online_grant_tag(&a.id), None),
        // An offline activation made before grants were named: no receipt can name it.
        None => ([0; 8], issued),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueEmergency {
    pub reason: String,
    #[serde(default)]
    pub validity_hours: Option<u32>,
    #[serde(default)]
    pub request_code: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedEmergency {
    pub code: String,
    pub serial: u32,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_device: Option<String>,
    pub license_id: Uuid,
    pub reason: String,
    /// Codes issued for the license in the last 30 days, this one included.
    pub issued_in_window: u32,
    /// How many more the license's emergency policy allows in that window.
    pub left_in_window: u32,
}

/// An issued emergency code as listed: without the code text.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    AppError::new(ErrorCode::InvalidCode, e.to_string())
}

fn no_license() -> AppError {
    AppError::new(
        ErrorCode::LicenseNotFound,
        "no license matches this code: check that it was made with the right license key",
    )
}

/// The reason staff give for an action, trimmed: required, at most 500 characters; `why` says what it explains.
fn staff_reason(text: &str, why: &str) -> AppResult<String> {
    let reason = text.trim();
    if reason.is_empty() {
        return Err(AppError::invalid(format!("reason is required: say {why}")));
    }
    if reason.chars().count() > 500 {
        return Err(AppError::invalid("reason must be at most 500 characters"));
    }
    Ok(reason.to_string())
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
                    ErrorCode::CodeMismatch,
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

    /// The license a device's request code was made for, within the token's tenant (support or admin): the
    /// emergency desk binds a code to the device that asks without staff typing its license key.
    pub async fn license_of_request(&self, ctx: &Ctx, request_code: &str) -> AppResult<Uuid> {
        ctx.require_support()?;
        let signed = SignedRequest::decode(request_code).map_err(code_error)?;
        Ok(self.license_for_request(ctx, &signed, None).await?.license.id)
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
        // A request code carries neither a processor count nor a user: licenses that count seats by them
        // activate online (or vendor staff issue a separate per-device license for the air-gapped machine).
        if l.license_model.counts_processors() || l.license_type == tessera_core::LicenseType::NamedUser {
            return Err(AppError::new(
                ErrorCode::OfflineNotSupported,
                format!(
                    "this license counts seats per {}, which an offline request code cannot report: activate the \
                     machine online, or ask the vendor for a per-device license for air-gapped use",
                    if l.license_type == tessera_core::LicenseType::NamedUser {
                        "named user"
                    } else {
                        "CPU socket or core"
                    }
                ),
            ));
        }
        let device_key = signed.request.device_public_key.to_vec();
        // The grant's lease: the template's, and always a finite one for floating licenses (a borrowed seat
        // must come back), so an online CONCURRENT seat is never turned into a lease-less offline one.
        let lease_expires_at = match rec.policy.offline.lease_days {
            OfflineLease::Days(d) => Some(now + Duration::days(i64::from(d))),
            OfflineLease::Never if l.license_type.is_floating() => {
                Some(now + Duration::days(i64::from(OfflineLease::DEFAULT_DAYS)))
            }
            OfflineLease::Never => None,
        }
        // Codes carry whole seconds: the seat is held until exactly the instant the device's grant ends.
        .map(|t| chrono::SubsecRound::trunc_subsecs(t, 0));
        let grant_tag = offline_grant_tag(&signed.bytes);
        let commitment = hex::encode(signed.request.fingerprint_commitment);
        if let Some(b) = self.store.find_block(l.tenant_id, device_key.clone(), vec![]).await? {
            return Err(AppError::new(ErrorCode::DeviceBlocked, "this device is blocked by the vendor")
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
                "fingerprint_commitment": commitment,
                "requested_at": signed.request.created_at,
                "grant_tag": hex::encode(grant_tag),
                "grant_issued_at": ts(now),
            }),
            status: ActivationStatus::Active,
            offline: true,
            floating: l.license_type.is_floating(),
            created_at: now,
            last_seen_at: now,
            lease_expires_at,
            deactivated_at: None,
            deactivation_reason: None,
            seat_held_until: None,
            seats: 1,
            user_id: None,
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
                max_seats: if l.license_model.is_unlimited() { 0 } else { l.max_activations },
                same_device: Box::new(move |a: &Activation| a.device_public_key == dk),
                // A renewal keeps the activation; the lease moves to the new grant's (it may also shorten when
                // the policy did: the old grant still runs until its own lease, which the device enforces).
                reuse_lease_expires_at: lease_expires_at,
                // The same device key renewing from a machine with another fingerprint is a copy of the
                // device's state (or changed hardware): its grant needs a seat of its own while the old one runs.
                supersede_if: Some(Box::new(move |a: &Activation| {
                    a.metadata.get("fingerprint_commitment").and_then(Value::as_str).is_some_and(|c| c != commitment)
                })),
                audit,
            })
            .await?;
        let (activation, reused, seats_used, superseded) = match outcome {
            ActivateOutcome::Created { activation, seats_used } => (activation, false, seats_used, None),
            // Offline activations are matched by device key only: a replacement is a supersession.
            ActivateOutcome::Replaced { activation, seats_used, replaced } => {
                (activation, false, seats_used, Some(replaced))
            }
            ActivateOutcome::Reused { activation, seats_used } => (activation, true, seats_used, None),
            ActivateOutcome::SeatLimit { seats_used } => {
                return Err(AppError::new(
                    ErrorCode::SeatLimitReached,
                    format!(
                        "all {} seats of this license are in use (seats handed back with a receipt stay counted \
                         until their grant's lease ends): free one first, or ask the vendor's staff to release one",
                        l.max_activations
                    ),
                )
                .with_details(json!({"max_activations": l.max_activations, "seats_used": seats_used})))
            }
        };
        if let Some(old) = superseded {
            let report = SuspiciousReport {
                id: Uuid::now_v7(),
                tenant_id: l.tenant_id,
                license_id: Some(l.id),
                activation_id: Some(activation.id),
                kind: "offline_machine_changed".into(),
                details: json!({
                    "superseded": old,
                    "device": tessera_core::encoding::b64url(&device_key),
                    "note": "the device key renewed its offline grant from a machine with another fingerprint",
                }),
                created_at: now,
            };
            let audit = ctx.audit(now, Some(l.tenant_id), "security.report", Some(report.id.to_string()), json!({}));
            self.store.add_report(report, audit).await?;
        }
        let grant = OfflineGrant {
            license_id: l.id,
            issued_at: now,
            license_type: l.license_type,
            license_model: l.license_model,
            starts_at: l.starts_at,
            expires_at: l.expires_at,
            maintenance_expires_at: l.maintenance_expires_at,
            lease_expires_at,
            grace_days: u8::try_from(l.grace_days).unwrap_or(u8::MAX),
            fingerprint_policy: l.fingerprint_policy.clone(),
            features: l.features.clone(),
            billing_cycle: l.billing_cycle,
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
                lease_expires_at,
                superseded,
            },
        })
    }

    /// Ends the grant a deactivation receipt names and says when its seat is free (the license's offline
    /// release policy). Idempotent: the same receipt again answers `freed: false` with the same schedule.
    pub async fn offline_receipt(&self, ctx: &Ctx, req: ReceiptRequest) -> AppResult<ReceiptResult> {
        if ctx.principal.is_some() {
            ctx.require_support()?;
        }
        let receipt = SignedReceipt::decode(&req.receipt_code).map_err(code_error)?;
        let r = &receipt.receipt;
        // The per-key limit is charged only once a receipt verifies: the key hint is printed in every code, so
        // charging forged receipts would let anyone use up a license's limit (its devices share it).
        let self_service = ctx.principal.is_none();
        let mut charged = false;
        let scope = if ctx.principal.is_some() { ctx.scope()? } else { None };
        let candidates = self.store.find_licenses_by_hint(r.key_hint).await?;
        // The device's activations of the license, newest first: the receipt ends the one holding the grant it
        // names. An ended one with that grant means the receipt was applied already.
        let mut stale: Option<AppError> = None;
        for rec in candidates.into_iter().filter(|c| scope.is_none_or(|s| s == c.license.tenant_id)) {
            let mut acts = self.store.list_activations(None, rec.license.id).await?;
            acts.reverse();
            for a in acts.iter().filter(|a| a.device_public_key.get(..4) == Some(&r.device_tag[..])) {
                let Ok(dk) = <[u8; 32]>::try_from(a.device_public_key.as_slice()) else {
                    continue;
                };
                if receipt.verify(&rec.key_hash, &dk).is_err() {
                    continue;
                }
                if self_service && !charged {
                    self.check_hint_rate(&r.key_hint)?;
                    charged = true;
                }
                let (tag, issued_at) = grant_of(a);
                if tag != r.grant_tag {
                    stale.get_or_insert_with(|| {
                        AppError::new(
                            ErrorCode::ReceiptGrantMismatch,
                            "this receipt ends an offline grant this device no longer holds (it was renewed since, \
                             or the receipt was made from an older copy of its state): make a new receipt on the \
                             device with its current grant",
                        )
                    });
                    continue;
                }
                if issued_at.is_some_and(|t| r.created_at + Duration::seconds(1) < t) {
                    return Err(AppError::new(
                        ErrorCode::ReceiptGrantMismatch,
                        "this receipt is dated before the grant it names was issued: make a new receipt on the device",
                    ));
                }
                return self.apply_receipt(ctx, &rec, a).await;
            }
        }
        Err(stale.unwrap_or_else(|| {
            AppError::new(
                ErrorCode::ActivationNotFound,
                "no activation matches this receipt (wrong license, or the activation was purged)",
            )
        }))
    }

    async fn apply_receipt(&self, ctx: &Ctx, rec: &LicenseRecord, a: &Activation) -> AppResult<ReceiptResult> {
        let now = self.now();
        let policy = rec.policy.offline;
        if a.status == ActivationStatus::Active && a.lease_expires_at.is_none() {
            return Err(AppError::new(
                ErrorCode::OfflineReleaseNotAllowed,
                "this license's offline grants never expire (template offline.lease_days = \"never\"), so a \
                 receipt cannot free the seat: a copy of the device's state would keep working. Ask the vendor's \
                 staff to release the seat",
            ));
        }
        let kind = match policy.release {
            OfflineRelease::AfterLease => ReleaseKind::AfterLease,
            OfflineRelease::Immediate => ReleaseKind::Immediate,
        };
        let audit = ctx.audit(
            now,
            Some(a.tenant_id),
            "offline.receipt",
            Some(a.id.to_string()),
            json!({"license_id": a.license_id}),
        );
        let out = self
            .store
            .release(ReleaseOp {
                activation_id: a.id,
                at: now,
                reason: "offline deactivation receipt".into(),
                kind,
                // The grant checked above must still be the activation's when the write runs (a renewal may
                // have committed since), and the hold runs to the lease stored then.
                expect_grant_tag: a.metadata.get("grant_tag").and_then(Value::as_str).map(str::to_string),
                immediate_limit: (policy.max_immediate_releases_per_30_days, now - Duration::days(30)),
                audit,
            })
            .await?;
        if out == ReleaseOutcome::GrantChanged {
            return Err(AppError::new(
                ErrorCode::ReceiptGrantMismatch,
                "the device renewed its offline grant while this receipt was handed in: make a new receipt on the \
                 device with its current grant",
            ));
        }
        Ok(ReceiptResult::from_outcome(a, out, policy.max_immediate_releases_per_30_days))
    }

    /// Staff release of an activation's seat, at once, with a reason (audited): for a device that is gone, or a
    /// seat a receipt left held until its lease ends.
    pub async fn release_activation(
        &self,
        ctx: &Ctx,
        activation_id: Uuid,
        req: ReleaseRequest,
    ) -> AppResult<ReceiptResult> {
        ctx.require_support()?;
        let reason = staff_reason(&req.reason, "why the seat is released before its lease ends")?;
        let a = self
            .store
            .get_activation(ctx.scope()?, activation_id)
            .await
            .map_err(|e| AppError::store("activation", e))?;
        let now = self.now();
        let audit = ctx.audit(
            now,
            Some(a.tenant_id),
            "activation.release",
            Some(a.id.to_string()),
            json!({"license_id": a.license_id, "reason": reason}),
        );
        let out = self
            .store
            .release(ReleaseOp {
                activation_id: a.id,
                at: now,
                reason: format!("released by staff: {reason}"),
                kind: ReleaseKind::Staff,
                expect_grant_tag: None,
                immediate_limit: (0, now),
                audit,
            })
            .await?;
        Ok(ReceiptResult::from_outcome(&a, out, 0))
    }

    pub async fn issue_emergency(
        &self,
        ctx: &Ctx,
        license_id: Uuid,
        req: IssueEmergency,
    ) -> AppResult<IssuedEmergency> {
        ctx.require_support()?;
        let reason = staff_reason(&req.reason, "why the customer needs an emergency code")?;
        let rec = self.license_record(ctx, license_id).await?;
        let l = &rec.license;
        let policy = rec.policy.emergency;
        if !policy.enabled {
            return Err(AppError::new(
                ErrorCode::EmergencyDisabled,
                "emergency codes are disabled for this license (template emergency policy)",
            ));
        }
        if l.status == tessera_core::LicenseStatus::Revoked {
            return Err(AppError::new(
                ErrorCode::LicenseFinal,
                "the license is revoked, which is final: no emergency code can help",
            ));
        }
        let hours = req.validity_hours.unwrap_or(policy.validity_hours);
        if hours == 0 || hours > EmergencyPolicy::MAX_VALIDITY_HOURS {
            return Err(AppError::invalid(format!(
                "validity_hours must be between 1 and {} (7 days)",
                EmergencyPolicy::MAX_VALIDITY_HOURS
            )));
        }
        let bound_device: Option<[u8; 32]> = match &req.request_code {
            None if policy.require_binding => {
                return Err(AppError::new(
                    ErrorCode::EmergencyBindingRequired,
                    "this license's emergency policy requires the code to be bound to one device: paste the \
                     device's request code (`tessera-agent request-code --key …` on that machine) as request_code",
                ))
            }
            None => None,
            Some(code) => {
                let signed = SignedRequest::decode(code).map_err(code_error)?;
                signed.verify(&rec.key_hash).map_err(|_| {
                    AppError::new(
                        ErrorCode::CodeMismatch,
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
            EmergencyOutcome::Issued { record: r, issued_in_window } => Ok(IssuedEmergency {
                code: r.code,
                serial: r.serial,
                expires_at: r.expires_at,
                bound_device: r.bound_device.as_deref().map(tessera_core::encoding::b64url),
                license_id: r.license_id,
                reason: r.reason,
                issued_in_window,
                left_in_window: policy.max_per_30_days.saturating_sub(issued_in_window),
            }),
            EmergencyOutcome::LimitReached { issued_in_window } => Err(AppError::new(
                ErrorCode::EmergencyLimitReached,
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
