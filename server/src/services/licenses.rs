//! Licenses: create (from a template or explicitly), read, list, update, renew, suspend, reinstate, revoke,
//! transfer, and the signed license file.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tessera_core::fingerprint::MatchPolicy;
use tessera_core::model::{EmergencyPolicy, Feature, OfflinePolicy, Restriction, TransferPolicy};
use tessera_core::{License, LicenseKey, LicenseModel, LicenseStatus, LicenseType};
use uuid::Uuid;

use super::terms::{
    add_days, check_date, check_days, normalize_restrictions, validate_emergency, validate_features, validate_offline,
    validate_timing,
};
use super::{Ctx, PageQuery, Services};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::{LicenseFilter, LicensePolicy, LicenseRecord, Page};

/// Declares a request body that carries the license terms a create and an update both take, after its own
/// fields: one list, so the two bodies cannot drift apart. (A shared struct under `#[serde(flatten)]` would lose
/// `deny_unknown_fields`, and a misspelt field must be refused, not ignored.)
macro_rules! with_license_terms {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            #[serde(default)]
            pub license_type: Option<LicenseType>,
            #[serde(default)]
            pub license_model: Option<LicenseModel>,
            #[serde(default)]
            pub max_activations: Option<u32>,
            #[serde(default)]
            pub starts_at: Option<DateTime<Utc>>,
            #[serde(default)]
            pub expires_at: Option<DateTime<Utc>>,
            #[serde(default)]
            pub maintenance_expires_at: Option<DateTime<Utc>>,
            #[serde(default)]
            pub grace_days: Option<u32>,
            #[serde(default)]
            pub features: Option<Vec<Feature>>,
            #[serde(default)]
            pub restrictions: Option<Vec<Restriction>>,
            #[serde(default)]
            pub fingerprint_policy: Option<MatchPolicy>,
            #[serde(default)]
            pub heartbeat_interval_secs: Option<u32>,
            #[serde(default)]
            pub lease_secs: Option<u32>,
            #[serde(default)]
            pub metadata: Option<BTreeMap<String, Value>>,
            #[serde(default)]
            pub emergency: Option<EmergencyPolicy>,
            #[serde(default)]
            pub offline: Option<OfflinePolicy>,
            #[serde(default)]
            pub transfer_policy: Option<TransferPolicy>,
        }
    };
}

with_license_terms! {
    /// Explicit values for a new license; with `template_id` they override the template's.
    pub struct CreateLicense {
        #[serde(default)]
        pub template_id: Option<Uuid>,
        #[serde(default)]
        pub product_id: Option<Uuid>,
        #[serde(default)]
        pub customer_id: Option<Uuid>,
        /// Validity from `starts_at`, when `expires_at` is not given.
        #[serde(default)]
        pub duration_days: Option<u32>,
        /// Make the license perpetual even when the template has a duration.
        #[serde(default)]
        pub perpetual: bool,
    }
}

with_license_terms! {
    /// Changes to a license (status changes have their own actions).
    pub struct UpdateLicense {}
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLicense {
    /// Extend by this many days from the later of now and the current expiry.
    #[serde(default)]
    pub days: Option<u32>,
    /// Or set this expiry.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferLicense {
    pub customer_id: Uuid,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLookup {
    pub license_key: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseListQuery {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, rename = "type")]
    pub license_type: Option<String>,
    #[serde(default)]
    pub product_id: Option<Uuid>,
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    #[serde(default)]
    pub expiring_before: Option<DateTime<Utc>>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A license as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LicenseView {
    #[serde(flatten)]
    pub license: License,
    /// First 6 bytes of the key hash, hex: how support finds a license from an offline code.
    pub key_hint: String,
    pub emergency: EmergencyPolicy,
    pub offline: OfflinePolicy,
    pub transfer_policy: TransferPolicy,
    /// Active activations (single-license reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats_used: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&LicenseRecord> for LicenseView {
    fn from(r: &LicenseRecord) -> Self {
        LicenseView {
            license: r.license.clone(),
            key_hint: hex::encode(r.key_hint),
            emergency: r.policy.emergency,
            offline: r.policy.offline,
            transfer_policy: r.policy.transfer,
            seats_used: None,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedLicense {
    /// The license key, shown once: only its hash is stored.
    pub license_key: String,
    #[serde(flatten)]
    pub view: LicenseView,
}

fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> AppResult<T> {
    serde_json::from_value(Value::String(v.to_ascii_uppercase()))
        .map_err(|_| AppError::bad_request(format!("{field} {v:?} is not a known value")))
}

pub fn validate_license(l: &mut License) -> AppResult<()> {
    super::terms::validate_seat_model(l.license_type, l.license_model)?;
    validate_features(&l.features)?;
    normalize_restrictions(&mut l.restrictions)?;
    validate_timing(l.heartbeat_interval_secs, l.lease_secs)?;
    if l.grace_days > 255 {
        return Err(AppError::invalid("grace_days must be at most 255"));
    }
    check_date("starts_at", l.starts_at)?;
    if let Some(e) = l.expires_at {
        check_date("expires_at", e)?;
    }
    if let Some(m) = l.maintenance_expires_at {
        check_date("maintenance_expires_at", m)?;
    }
    if let Some(e) = l.expires_at {
        if e <= l.starts_at {
            return Err(AppError::invalid("expires_at must be after starts_at"));
        }
    }
    if l.fingerprint_policy.required > 15 {
        return Err(AppError::invalid("fingerprint_policy.required must be at most 15"));
    }
    if let Some(c) = l.billing_cycle {
        if !(1..=tessera_core::model::BillingCycle::MAX_MONTHS).contains(&c.months) {
            return Err(AppError::invalid("billing_cycle.months must be 1 to 12"));
        }
        check_date("billing_cycle.anchor", c.anchor)?;
    }
    Ok(())
}

/// The status a license effectively has now: an active license past expiry and grace is expired.
pub fn effective_status(l: &License, now: DateTime<Utc>) -> LicenseStatus {
    match l.status {
        LicenseStatus::Active if l.grace_ends_at().is_some_and(|g| now >= g) => LicenseStatus::Expired,
        s => s,
    }
}

/// The `updated_at` of a license changed at `now` whose version read was `read_at`: always later, so every
/// change makes a new version (optimistic writes compare it) even within one clock tick.
pub fn next_version(read_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    now.max(read_at + Duration::microseconds(1))
}

fn parse_key(s: &str) -> AppResult<LicenseKey> {
    LicenseKey::parse(s).map_err(|e| AppError::new(ErrorCode::InvalidLicenseKey, e.to_string()))
}

impl Services {
    pub async fn create_license(&self, ctx: &Ctx, req: CreateLicense) -> AppResult<CreatedLicense> {
        let (rec, key, audit) = self.new_license(ctx, req).await?;
        self.store.insert_license(rec.clone(), audit).await.map_err(|e| AppError::store("license", e))?;
        Ok(CreatedLicense { license_key: key.expose(), view: LicenseView::from(&rec) })
    }

    /// A new license record, checked, with its key and the audit entry of its creation: not yet stored (a
    /// subscription stores it together with itself).
    pub(super) async fn new_license(
        &self,
        ctx: &Ctx,
        req: CreateLicense,
    ) -> AppResult<(LicenseRecord, LicenseKey, crate::store::NewAudit)> {
        ctx.require_admin()?;
        let scope = ctx.scope()?;
        let now = self.now();
        let template = match req.template_id {
            Some(id) => {
                Some(self.store.get_template(scope, id).await.map_err(|e| AppError::store("template", e))?.template)
            }
            None => None,
        };
        let product_id = match (&template, req.product_id) {
            (Some(t), Some(p)) if t.product_id != p => {
                return Err(AppError::invalid(
                    "product_id differs from the template's product: omit it or use another template",
                ))
            }
            (Some(t), _) => t.product_id,
            (None, Some(p)) => p,
            (None, None) => {
                return Err(AppError::invalid(
                    "give template_id, or product_id and license_type for an explicit license",
                ))
            }
        };
        let product = self.store.get_product(scope, product_id).await.map_err(|e| AppError::store("product", e))?;
        if let Some(c) = req.customer_id {
            let cust = self.store.get_customer(scope, c).await.map_err(|e| AppError::store("customer", e))?;
            if cust.tenant_id != product.tenant_id {
                return Err(AppError::not_found("customer"));
            }
        }
        let license_type = req
            .license_type
            .or(template.as_ref().map(|t| t.license_type))
            .ok_or_else(|| AppError::invalid("license_type is required without a template"))?;
        let starts_at = req.starts_at.unwrap_or(now);
        check_date("starts_at", starts_at)?;
        if let Some(d) = req.duration_days {
            check_days("duration_days", d)?;
        }
        let duration = req.duration_days.or(template.as_ref().and_then(|t| t.duration_days));
        let expires_at = match (req.perpetual, req.expires_at, duration) {
            (true, _, _) => None,
            (false, Some(e), _) => Some(e),
            (false, None, d) => d.map(|d| add_days("expires_at", starts_at, d)).transpose()?,
        };
        let maintenance_expires_at = match req.maintenance_expires_at {
            Some(m) => Some(m),
            None => template
                .as_ref()
                .and_then(|t| t.maintenance_days)
                .map(|d| add_days("maintenance_expires_at", starts_at, d))
                .transpose()?,
        };
        let t = template.as_ref();
        let mut license = License {
            id: Uuid::now_v7(),
            tenant_id: product.tenant_id,
            product_id,
            customer_id: req.customer_id,
            template_id: req.template_id,
            license_type,
            license_model: req.license_model.or(t.map(|t| t.license_model)).unwrap_or(LicenseModel::PerDevice),
            status: LicenseStatus::Active,
            max_activations: req.max_activations.or(t.map(|t| t.max_activations)).unwrap_or(1),
            issued_at: now,
            starts_at,
            expires_at,
            maintenance_expires_at,
            grace_days: req.grace_days.or(t.map(|t| t.grace_days)).unwrap_or(0),
            features: req.features.or(t.map(|t| t.features.clone())).unwrap_or_default(),
            restrictions: req.restrictions.or(t.map(|t| t.restrictions.clone())).unwrap_or_default(),
            fingerprint_policy: req.fingerprint_policy.or(t.map(|t| t.fingerprint_policy.clone())).unwrap_or_default(),
            heartbeat_interval_secs: req
                .heartbeat_interval_secs
                .or(t.map(|t| t.heartbeat_interval_secs))
                .unwrap_or(tessera_core::model::DEFAULT_HEARTBEAT_SECS),
            lease_secs: req.lease_secs.or(t.map(|t| t.lease_secs)).unwrap_or(tessera_core::model::DEFAULT_LEASE_SECS),
            metadata: req.metadata.or(t.map(|t| t.metadata.clone())).unwrap_or_default(),
            // A subscription sets its own; a license made by hand counts BILLING_PERIOD quotas monthly from its start.
            billing_cycle: None,
        };
        validate_license(&mut license)?;
        let policy = LicensePolicy {
            emergency: req.emergency.or(t.map(|t| t.emergency)).unwrap_or_default(),
            offline: req.offline.or(t.map(|t| t.offline)).unwrap_or_default(),
            transfer: req.transfer_policy.or(t.map(|t| t.transfer_policy)).unwrap_or_default(),
        };
        validate_emergency(&policy.emergency)?;
        validate_offline(&policy.offline, license.license_type)?;
        let key = LicenseKey::generate();
        let rec = LicenseRecord {
            license,
            key_hash: key.hash(),
            key_hint: key.hint(),
            policy,
            expiring_notice_for: None,
            created_at: now,
            updated_at: now,
        };
        let audit = ctx.audit(
            now,
            Some(rec.license.tenant_id),
            "license.create",
            Some(rec.license.id.to_string()),
            json!({"template_id": req.template_id, "product_id": product_id, "customer_id": req.customer_id,
                   "license_type": license_type}),
        );
        Ok((rec, key, audit))
    }

    pub async fn license_record(&self, ctx: &Ctx, id: Uuid) -> AppResult<LicenseRecord> {
        self.store.get_license(ctx.scope()?, id).await.map_err(|e| AppError::store("license", e))
    }

    pub async fn get_license(&self, ctx: &Ctx, id: Uuid) -> AppResult<LicenseView> {
        let rec = self.license_record(ctx, id).await?;
        let mut view = LicenseView::from(&rec);
        view.seats_used = Some(self.store.count_active_seats(rec.license.id, self.now()).await?);
        Ok(view)
    }

    pub async fn get_license_by_key(&self, ctx: &Ctx, req: KeyLookup) -> AppResult<LicenseView> {
        let scope = ctx.scope()?;
        let key = parse_key(&req.license_key)?;
        let rec = self.store.get_license_by_key_hash(key.hash()).await.map_err(|e| AppError::store("license", e))?;
        if scope.is_some_and(|s| s != rec.license.tenant_id) {
            return Err(AppError::not_found("license"));
        }
        Ok(LicenseView::from(&*rec))
    }

    pub async fn list_licenses(&self, ctx: &Ctx, q: LicenseListQuery) -> AppResult<Page<LicenseView>> {
        let filter = LicenseFilter {
            status: q.status.as_deref().map(|s| parse_enum("status", s)).transpose()?,
            license_type: q.license_type.as_deref().map(|s| parse_enum("type", s)).transpose()?,
            product_id: q.product_id,
            customer_id: q.customer_id,
            expiring_before: q.expiring_before,
        };
        let page = PageQuery { cursor: q.cursor, limit: q.limit }.to_request()?;
        let p = self.store.list_licenses(ctx.scope()?, filter, page).await?;
        Ok(Page { items: p.items.iter().map(LicenseView::from).collect(), next_cursor: p.next_cursor })
    }

    pub(super) async fn save_license(
        &self,
        ctx: &Ctx,
        mut rec: LicenseRecord,
        action: &str,
        details: Value,
        release: Option<String>,
    ) -> AppResult<LicenseView> {
        let now = self.now();
        let read_at = rec.updated_at;
        rec.updated_at = next_version(read_at, now);
        let audit = ctx.audit(now, Some(rec.license.tenant_id), action, Some(rec.license.id.to_string()), details);
        self.store
            .update_license(rec.clone(), read_at, release, Some(audit))
            .await
            .map_err(|e| AppError::store("license", e))?;
        Ok(LicenseView::from(&rec))
    }

    pub async fn update_license(&self, ctx: &Ctx, id: Uuid, req: UpdateLicense) -> AppResult<LicenseView> {
        ctx.require_admin()?;
        let mut rec = self.license_record(ctx, id).await?;
        let l = &mut rec.license;
        if l.status == LicenseStatus::Revoked {
            return Err(AppError::new(
                ErrorCode::LicenseFinal,
                "a revoked license cannot be changed: create a new one",
            ));
        }
        let mut changed = Vec::new();
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = req.$field {
                    l.$field = v;
                    changed.push(stringify!($field));
                }
            };
            (opt $field:ident) => {
                if let Some(v) = req.$field {
                    l.$field = Some(v);
                    changed.push(stringify!($field));
                }
            };
        }
        set!(license_type);
        set!(license_model);
        set!(max_activations);
        set!(starts_at);
        set!(opt expires_at);
        set!(opt maintenance_expires_at);
        set!(grace_days);
        set!(features);
        set!(restrictions);
        set!(fingerprint_policy);
        set!(heartbeat_interval_secs);
        set!(lease_secs);
        set!(metadata);
        if let Some(e) = req.emergency {
            validate_emergency(&e)?;
            rec.policy.emergency = e;
            changed.push("emergency");
        }
        if let Some(o) = req.offline {
            rec.policy.offline = o;
            changed.push("offline");
        }
        validate_offline(&rec.policy.offline, rec.license.license_type)?;
        if let Some(t) = req.transfer_policy {
            rec.policy.transfer = t;
            changed.push("transfer_policy");
        }
        validate_license(&mut rec.license)?;
        self.save_license(ctx, rec, "license.update", json!({"changed": changed}), None).await
    }

    pub async fn renew_license(&self, ctx: &Ctx, id: Uuid, req: RenewLicense) -> AppResult<LicenseView> {
        ctx.require_admin()?;
        let now = self.now();
        let mut rec = self.license_record(ctx, id).await?;
        let l = &mut rec.license;
        if l.status == LicenseStatus::Revoked {
            return Err(AppError::new(
                ErrorCode::LicenseFinal,
                "a revoked license cannot be renewed: create a new one",
            ));
        }
        let new_expiry = match (req.days, req.expires_at) {
            (Some(_), Some(_)) => return Err(AppError::invalid("give either days or expires_at, not both")),
            (Some(0), None) => return Err(AppError::invalid("days must be at least 1")),
            (Some(d), None) => {
                check_days("days", d)?;
                let base = l.expires_at.map_or(now, |e| e.max(now));
                add_days("expires_at", base, d)?
            }
            (None, Some(t)) => {
                check_date("expires_at", t)?;
                t
            }
            (None, None) => return Err(AppError::invalid("give days (extend by) or expires_at (new expiry)")),
        };
        if new_expiry <= now {
            return Err(AppError::invalid("the new expiry must be in the future"));
        }
        let old = l.expires_at;
        l.expires_at = Some(new_expiry);
        if l.status == LicenseStatus::Expired {
            l.status = LicenseStatus::Active;
        }
        rec.expiring_notice_for = None;
        self.save_license(ctx, rec, "license.renew", json!({"old_expires_at": old, "expires_at": new_expiry}), None)
            .await
    }

    pub async fn set_license_status(
        &self,
        ctx: &Ctx,
        id: Uuid,
        target: LicenseStatus,
        req: StatusChange,
    ) -> AppResult<LicenseView> {
        ctx.require_admin()?;
        let now = self.now();
        let mut rec = self.license_record(ctx, id).await?;
        let from = rec.license.status;
        let action = match (from, target) {
            (LicenseStatus::Revoked, _) => {
                return Err(AppError::new(
                    ErrorCode::LicenseFinal,
                    "the license is revoked, which is final: create a new license",
                ))
            }
            (LicenseStatus::Active, LicenseStatus::Suspended) => "license.suspend",
            (LicenseStatus::Suspended, LicenseStatus::Active) => "license.reinstate",
            (_, LicenseStatus::Revoked) => "license.revoke",
            (f, t) if f == t => {
                return Err(AppError::new(
                    ErrorCode::InvalidTransition,
                    format!("the license is already {}", f.as_str()),
                ))
            }
            (f, t) => {
                return Err(AppError::new(
                    ErrorCode::InvalidTransition,
                    format!(
                        "a {} license cannot become {}: {}",
                        f.as_str(),
                        t.as_str(),
                        if f == LicenseStatus::Expired {
                            "renew it instead"
                        } else {
                            "suspend or reinstate it instead"
                        }
                    ),
                ))
            }
        };
        let mut status = target;
        if target == LicenseStatus::Active && effective_status(&rec.license, now) == LicenseStatus::Expired {
            status = LicenseStatus::Expired;
        }
        rec.license.status = status;
        let reason = req.reason.map(|r| r.chars().take(500).collect::<String>());
        self.save_license(ctx, rec, action, json!({"from": from, "reason": reason}), None).await
    }

    pub async fn transfer_license(&self, ctx: &Ctx, id: Uuid, req: TransferLicense) -> AppResult<LicenseView> {
        ctx.require_admin()?;
        let mut rec = self.license_record(ctx, id).await?;
        if rec.license.status == LicenseStatus::Revoked {
            return Err(AppError::new(ErrorCode::LicenseFinal, "a revoked license cannot be transferred"));
        }
        let cust =
            self.store.get_customer(ctx.scope()?, req.customer_id).await.map_err(|e| AppError::store("customer", e))?;
        if cust.tenant_id != rec.license.tenant_id {
            return Err(AppError::not_found("customer"));
        }
        let from = rec.license.customer_id;
        rec.license.customer_id = Some(cust.id);
        let release = match rec.policy.transfer {
            TransferPolicy::Release => Some("transferred".to_string()),
            TransferPolicy::Keep => None,
        };
        let policy = rec.policy.transfer;
        self.save_license(
            ctx,
            rec,
            "license.transfer",
            json!({"from_customer": from, "to_customer": cust.id, "activations": policy}),
            release,
        )
        .await
    }

    /// The signed, armored license file.
    pub async fn license_file(&self, ctx: &Ctx, id: Uuid) -> AppResult<String> {
        let rec = self.license_record(ctx, id).await?;
        let mut l = rec.license;
        l.status = effective_status(&l, self.now());
        Ok(tessera_core::token::sign_license_file(self.keys.signer(), &l, self.now()))
    }

    /// A license's running usage totals per feature (metered features), within the caller's tenant.
    pub async fn license_usage(&self, ctx: &Ctx, id: Uuid) -> AppResult<Vec<(String, i64)>> {
        let rec = self.license_record(ctx, id).await?;
        Ok(self.store.usage_totals(rec.license.id).await?.as_ref().clone())
    }

    /// Seats in use of licenses already read (so within the caller's tenant), in one store read: the console's
    /// lists and totals. Licenses with no seat in use are absent.
    pub async fn seats_of(&self, licenses: &[LicenseView]) -> AppResult<std::collections::HashMap<Uuid, u32>> {
        let ids = licenses.iter().map(|l| l.license.id).collect();
        Ok(self.store.count_active_seats_of(ids, self.now()).await?.into_iter().collect())
    }

    pub async fn list_license_activations(&self, ctx: &Ctx, id: Uuid) -> AppResult<Vec<crate::store::Activation>> {
        let rec = self.license_record(ctx, id).await?;
        Ok(self.store.list_activations(ctx.scope()?, rec.license.id).await?)
    }

    /// Admin-side deactivation of one activation (frees the seat).
    pub async fn admin_deactivate(&self, ctx: &Ctx, activation_id: Uuid) -> AppResult<Value> {
        ctx.require_support()?;
        let a = self
            .store
            .get_activation(ctx.scope()?, activation_id)
            .await
            .map_err(|e| AppError::store("activation", e))?;
        let now = self.now();
        let audit = ctx.audit(
            now,
            Some(a.tenant_id),
            "activation.deactivate",
            Some(a.id.to_string()),
            json!({"license_id": a.license_id}),
        );
        if a.offline {
            // An offline device cannot be told: its grant works until its lease ends, so the seat is held until
            // then (or until staff release it with a reason: POST /v1/activations/{id}/release).
            let out = self
                .store
                .release(crate::store::ReleaseOp::after_lease(a.id, now, "deactivated by staff", audit))
                .await?;
            let (freed, held) = match out {
                crate::store::ReleaseOutcome::Released { seat_held_until, .. } => (true, seat_held_until),
                crate::store::ReleaseOutcome::AlreadyInactive { seat_held_until } => (false, seat_held_until),
                crate::store::ReleaseOutcome::GrantChanged => (false, None),
            };
            return Ok(json!({
                "deactivated": true, "freed": freed, "activation_id": a.id, "seat_held_until": held,
                "message": match held {
                    Some(_) => "the offline device cannot be told, so its seat stays counted until its grant's lease \
                                ends; to free it now, release it with a reason (POST /v1/activations/{id}/release)",
                    None => "the activation has ended and its seat is free",
                },
            }));
        }
        let freed = self.store.deactivate(a.id, now, "deactivated by staff".into(), audit).await?;
        Ok(json!({"deactivated": true, "freed": freed, "activation_id": a.id}))
    }
}
