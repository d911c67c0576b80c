//! What a vendor's backend asks about licenses, server to server (served over gRPC by `crate::grpc`): validate a
//! license, check a feature against its quota, record metered usage.
//!
//! Callers authenticate with API tokens like the admin API and see only their tenant's licenses: a key of another
//! tenant answers `LICENSE_NOT_FOUND`, exactly like a key nobody has. Roles: any role may validate and check
//! features (they only read); recording usage changes billing data, so it needs a tenant-admin or vendor-admin
//! token. Calls by license key count against the key's rate limit like the client endpoints.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use tessera_core::decision::Inputs;
use tessera_core::fingerprint::Component;
use tessera_core::protocol::{Endpoint, ValidateResult, MAX_USAGE_AMOUNT};
use tessera_core::{decide, Decision, Feature, Query};
use uuid::Uuid;

use crate::error::{AppError, AppResult, ErrorCode};
use crate::services::client::{check_nonce, parse_addr, parse_license_key, SignedAnswer, ValidateQuestion};
use crate::services::licenses::effective_status;
use crate::services::{Ctx, Services};
use crate::store::{Activation, LicenseRecord, RecordUsageOp, RecordUsageOutcome, StoreError, UsageEvent};

/// `Validate`: the REST validate's question, asked by a backend for one of its tenant's licenses.
#[derive(Debug, Clone, Default)]
pub struct BackendValidate {
    pub license_key: String,
    pub feature: Option<String>,
    /// `Some`: is the machine with this fingerprint one of the license's active activations.
    pub fingerprint: Option<Vec<Component>>,
    /// `Some`: is this activation of the license active and within its lease.
    pub activation_id: Option<Uuid>,
    /// The end user's host domain and address, as the backend knows them, for the license's restrictions.
    pub domain: Option<String>,
    pub client_ip: Option<String>,
    /// Echoed in the signed answer; `None`: the server picks one.
    pub nonce: Option<String>,
}

/// An entitlement of the license and, for a metered one, the usage recorded so far.
#[derive(Debug, Clone)]
pub struct FeatureUse {
    pub feature: Feature,
    pub used: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct BackendValidation {
    /// What the REST validate answers (and signs).
    pub result: ValidateResult,
    pub features: Vec<FeatureUse>,
    /// The signed answer of endpoint `/v1/client/validate` over `result`.
    pub signed: SignedAnswer,
    /// The nonce the signed answer echoes.
    pub nonce: String,
}

/// `CheckFeature`: may `amount` more units of `feature` be used now.
#[derive(Debug, Clone, Default)]
pub struct FeatureCheck {
    pub license_key: String,
    pub feature: String,
    pub amount: u64,
}

/// Whose usage is recorded.
#[derive(Debug, Clone)]
pub enum UsageTarget {
    LicenseKey(String),
    /// An activation: the use is its license's, attributed to it.
    Activation(Uuid),
}

/// `RecordUsage`: one usage event, idempotent by `id` per license.
#[derive(Debug, Clone)]
pub struct RecordUsage {
    pub target: UsageTarget,
    pub feature: String,
    pub amount: u64,
    pub id: Uuid,
    /// When the use happened; `None`: now.
    pub recorded_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecorded {
    /// `false`: the event was recorded before and not counted again.
    pub recorded: bool,
    /// The license's use of the feature after the call: in the quota's current period for a quota per period (the
    /// period of the event's time), else the lifetime total.
    pub total: u64,
    pub license_id: Uuid,
}

fn unknown_key() -> AppError {
    AppError::new(
        ErrorCode::LicenseNotFound,
        "no license of your tenant has this key: check the key, and that your token belongs to the right tenant",
    )
}

fn unknown_activation() -> AppError {
    AppError::new(
        ErrorCode::ActivationNotFound,
        "no activation of this license (in your tenant) has this id: check the id, or activate again",
    )
}

fn check_feature_id(feature: &str) -> AppResult<()> {
    Feature::validate_id(feature).map_err(AppError::invalid)
}

fn check_amount(amount: u64, zero_allowed: bool) -> AppResult<()> {
    if amount > MAX_USAGE_AMOUNT || (amount == 0 && !zero_allowed) {
        let least = if zero_allowed { 0 } else { 1 };
        return Err(AppError::invalid(format!("amount must be {least} to {MAX_USAGE_AMOUNT} (2^40)")));
    }
    Ok(())
}

/// A fresh nonce: 16 random bytes, base64url.
fn server_nonce() -> String {
    use rand_core::{OsRng, RngCore};
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    tessera_core::encoding::b64url(&b)
}

impl Services {
    /// The license with this key, if it is in the caller's scope; within the key's rate limit.
    pub(super) async fn tenant_license_by_key(&self, ctx: &Ctx, key: &str) -> AppResult<Arc<LicenseRecord>> {
        let scope = ctx.scope()?;
        let key = parse_license_key(key)?;
        self.check_key_rate(&key)?;
        let rec = self.store.get_license_by_key_hash(key.hash()).await.map_err(|e| match e {
            StoreError::NotFound => unknown_key(),
            e => AppError::store("license", e),
        })?;
        if scope.is_some_and(|s| s != rec.license.tenant_id) {
            return Err(unknown_key());
        }
        Ok(rec)
    }

    /// The activation with this id and its license, if they are in the caller's scope.
    async fn tenant_activation(&self, ctx: &Ctx, id: Uuid) -> AppResult<(Arc<Activation>, Arc<LicenseRecord>)> {
        let scope = ctx.scope()?;
        let (a, rec) = self.store.activation_with_license(id).await.map_err(|e| match e {
            StoreError::NotFound => unknown_activation(),
            e => AppError::store("activation", e),
        })?;
        if scope.is_some_and(|s| s != a.tenant_id) {
            return Err(unknown_activation());
        }
        Ok((a, rec))
    }

    /// Any role: the decision the REST validate gives, its signed answer, and the license's entitlements with
    /// their usage.
    pub async fn backend_validate(&self, ctx: &Ctx, req: BackendValidate) -> AppResult<BackendValidation> {
        ctx.role()?;
        if let Some(f) = &req.feature {
            check_feature_id(f)?;
        }
        let nonce = match req.nonce {
            Some(n) => {
                check_nonce(&n)?;
                n
            }
            None => server_nonce(),
        };
        let ip = match req.client_ip.as_deref() {
            Some(s) => Some(parse_addr(s).ok_or_else(|| {
                AppError::invalid("client_ip must be an IPv4 or IPv6 address (with or without a port)")
            })?),
            None => None,
        };
        let rec = self.tenant_license_by_key(ctx, &req.license_key).await?;
        let activation = match req.activation_id {
            Some(id) => {
                let (a, _) = self.tenant_activation(ctx, id).await?;
                if a.license_id != rec.license.id {
                    return Err(unknown_activation());
                }
                Some(a)
            }
            None => None,
        };
        let question = ValidateQuestion {
            feature: req.feature.as_deref(),
            fingerprint: req.fingerprint,
            activation: activation.as_deref(),
            domain: req.domain.as_deref(),
            ip,
        };
        let (result, license) = self.validate_license(ctx, "backend.validate", &rec, question).await?;
        let now = self.now();
        let mut features = Vec::with_capacity(license.features.len());
        for f in &license.features {
            let used = match f.is_unlimited() {
                true => None,
                false => Some(self.used_in_period(&license, &f.id, now).await?),
            };
            features.push(FeatureUse { feature: f.clone(), used });
        }
        let signed = self.sign_response(Endpoint::Validate, None, &nonce, &result)?;
        Ok(BackendValidation { result, features, signed, nonce })
    }

    /// Any role: whether `amount` more units of the feature may be used now, decided by `tessera_core::decide`
    /// over the license as it stands and its recorded usage. The caller's environment is not the end user's, so
    /// restrictions are not applied here (ask `backend_validate` with the user's address for those).
    pub async fn check_feature(&self, ctx: &Ctx, req: FeatureCheck) -> AppResult<Decision> {
        ctx.role()?;
        check_feature_id(&req.feature)?;
        check_amount(req.amount, true)?;
        let rec = self.tenant_license_by_key(ctx, &req.license_key).await?;
        let now = self.now();
        let mut license = rec.license.clone();
        license.status = effective_status(&license, now);
        let used = self.used_in_period(&license, &req.feature, now).await?;
        let query = Query { feature: Some(&req.feature), amount: req.amount, used };
        let decision = decide(&Inputs::new(now, Some(&license)), &query);
        if self.config.audit_validate {
            let mut a = ctx.audit(
                now,
                Some(license.tenant_id),
                "backend.check_feature",
                Some(license.id.to_string()),
                json!({"feature": req.feature, "amount": req.amount}),
            );
            a.outcome = decision.reason.as_str().to_string();
            self.audit_later(a);
        }
        Ok(decision)
    }

    /// Tenant-admin or vendor-admin: records one usage event of a feature the license grants, idempotently by its
    /// id (the same id again counts once; with another feature or amount it is refused, `CONFLICT`), audited
    /// (`usage.record`) in the same write.
    pub async fn record_usage(&self, ctx: &Ctx, req: RecordUsage) -> AppResult<UsageRecorded> {
        ctx.require_admin()?;
        check_feature_id(&req.feature)?;
        check_amount(req.amount, false)?;
        let (activation_id, rec) = match &req.target {
            UsageTarget::LicenseKey(k) => (None, self.tenant_license_by_key(ctx, k).await?),
            UsageTarget::Activation(id) => {
                let (a, rec) = self.tenant_activation(ctx, *id).await?;
                (Some(a.id), rec)
            }
        };
        let l = &rec.license;
        if l.feature(&req.feature).is_none() {
            return Err(AppError::invalid(format!(
                "the license has no feature {:?}: usage is recorded for the features it grants",
                req.feature
            ))
            .with_details(json!({"feature": req.feature})));
        }
        let now = self.now();
        let event = UsageEvent {
            id: req.id,
            feature: req.feature.clone(),
            amount: req.amount.min(MAX_USAGE_AMOUNT) as i64,
            recorded_at: req.recorded_at.unwrap_or(now),
        };
        let audit = ctx.audit(
            now,
            Some(l.tenant_id),
            "usage.record",
            Some(l.id.to_string()),
            json!({
                "event_id": req.id, "feature": req.feature, "amount": req.amount,
                "activation_id": activation_id, "recorded_at": crate::time::ts(event.recorded_at),
            }),
        );
        let window = l.feature(&req.feature).and_then(|f| l.quota_window(f, event.recorded_at));
        let op = RecordUsageOp { license_id: l.id, activation_id, event, now, audit };
        let outcome = self.store.record_usage(op).await.map_err(|e| AppError::store("usage event", e))?;
        // The store answers lifetime totals; a quota per period is told its period's.
        let total = |t: i64| async move {
            match window {
                Some(w) => {
                    self.store.usage_between(l.id, req.feature.clone(), w.start, w.end).await.map(|n| n.max(0) as u64)
                }
                None => Ok(t.max(0) as u64),
            }
        };
        match outcome {
            RecordUsageOutcome::Recorded { total: t } => {
                Ok(UsageRecorded { recorded: true, total: total(t).await?, license_id: l.id })
            }
            RecordUsageOutcome::Duplicate { total: t } => {
                Ok(UsageRecorded { recorded: false, total: total(t).await?, license_id: l.id })
            }
            RecordUsageOutcome::IdConflict => Err(AppError::new(
                ErrorCode::Conflict,
                format!(
                    "usage event {} was recorded before with another feature or amount: give a new event a new id",
                    req.id
                ),
            )
            .with_details(json!({"id": req.id}))),
        }
    }
}
