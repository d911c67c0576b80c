//! Security endpoints: check a license key, device blacklist, suspicious-activity reports.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tessera_core::fingerprint::ComponentKind;
use uuid::Uuid;

use super::licenses::effective_status;
use super::{Ctx, Services};
use crate::error::{AppError, AppResult};
use crate::store::{Activation, BlockedDevice, NewAudit, SuspiciousReport};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckKey {
    pub license_key: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyCheck {
    pub well_formed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<tessera_core::LicenseStatus>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBlock {
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    /// base64url Ed25519 device key.
    #[serde(default)]
    pub device_public_key: Option<String>,
    /// A fingerprint component hash (64 hex), e.g. the machine id's.
    #[serde(default)]
    pub fingerprint_hash: Option<String>,
    /// Or block the device of this activation (and deactivate it).
    #[serde(default)]
    pub activation_id: Option<Uuid>,
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    #[serde(default)]
    pub license_id: Option<Uuid>,
    #[serde(default)]
    pub activation_id: Option<Uuid>,
    pub kind: String,
    #[serde(default)]
    pub details: Option<Value>,
}

impl Services {
    pub async fn check_key(&self, ctx: &Ctx, req: CheckKey) -> AppResult<KeyCheck> {
        let scope = ctx.scope()?;
        let key = match tessera_core::LicenseKey::parse(&req.license_key) {
            Ok(k) => k,
            Err(e) => {
                return Ok(KeyCheck {
                    well_formed: false,
                    problem: Some(e.to_string()),
                    exists: false,
                    license_id: None,
                    status: None,
                })
            }
        };
        let found = match self.store.get_license_by_key_hash(key.hash()).await {
            Ok(r) if scope.is_none_or(|s| s == r.license.tenant_id) => Some(r),
            Ok(_) | Err(crate::store::StoreError::NotFound) => None,
            Err(e) => return Err(AppError::store("license", e)),
        };
        Ok(KeyCheck {
            well_formed: true,
            problem: None,
            exists: found.is_some(),
            license_id: found.as_ref().map(|r| r.license.id),
            status: found.as_ref().map(|r| effective_status(&r.license, self.now())),
        })
    }

    pub async fn create_block(&self, ctx: &Ctx, req: CreateBlock) -> AppResult<BlockedDevice> {
        ctx.require_support()?;
        let reason = super::check_name("reason", &req.reason)?;
        let now = self.now();
        let (tenant_id, device_key, fp) = if let Some(aid) = req.activation_id {
            let a = self.store.get_activation(ctx.scope()?, aid).await.map_err(|e| AppError::store("activation", e))?;
            // The block (same device key) deactivates it.
            let fp = a.fingerprint.get(ComponentKind::MachineId).map(|c| hex::encode(c.hash));
            (a.tenant_id, Some(a.device_public_key), fp)
        } else {
            let tenant = ctx.tenant_for_create(req.tenant_id)?;
            let dk = req
                .device_public_key
                .as_deref()
                .map(|s| {
                    tessera_core::encoding::b64url_decode(s)
                        .filter(|b| b.len() == 32)
                        .ok_or_else(|| AppError::invalid("device_public_key must be 32 bytes in base64url"))
                })
                .transpose()?;
            let fp = req
                .fingerprint_hash
                .as_deref()
                .map(|h| {
                    let h = h.trim().to_ascii_lowercase();
                    if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) {
                        Ok(h)
                    } else {
                        Err(AppError::invalid("fingerprint_hash must be 64 hexadecimal characters"))
                    }
                })
                .transpose()?;
            if dk.is_none() && fp.is_none() {
                return Err(AppError::invalid("give device_public_key, fingerprint_hash or activation_id"));
            }
            (tenant, dk, fp)
        };
        let b = BlockedDevice {
            id: Uuid::now_v7(),
            tenant_id,
            device_public_key: device_key,
            fingerprint_hash: fp,
            reason,
            created_at: now,
        };
        let audit =
            ctx.audit(now, Some(tenant_id), "device.block", Some(b.id.to_string()), json!({"reason": b.reason}));
        // Every active activation of the blocked device goes with the block, in the same transaction.
        let template = ctx.audit(now, Some(tenant_id), "activation.deactivate", None, json!({}));
        let block_id = b.id;
        let deactivated = Box::new(move |a: &Activation| NewAudit {
            target: Some(a.id.to_string()),
            details: json!({"reason": "device blocked", "block_id": block_id, "license_id": a.license_id}),
            ..template.clone()
        });
        self.store.add_block(b.clone(), audit, "device blocked".into(), deactivated).await?;
        Ok(b)
    }

    pub async fn list_blocks(&self, ctx: &Ctx) -> AppResult<Vec<BlockedDevice>> {
        Ok(self.store.list_blocks(ctx.scope()?).await?)
    }

    pub async fn remove_block(&self, ctx: &Ctx, id: Uuid) -> AppResult<()> {
        ctx.require_admin()?;
        let scope = ctx.scope()?;
        let audit = ctx.audit(self.now(), scope, "device.unblock", Some(id.to_string()), json!({}));
        self.store.remove_block(scope, id, audit).await.map_err(|e| AppError::store("block", e))?;
        Ok(())
    }

    pub async fn create_report(&self, ctx: &Ctx, req: CreateReport) -> AppResult<SuspiciousReport> {
        ctx.require_support()?;
        let kind = super::check_name("kind", &req.kind)?;
        let mut tenant = None;
        if let Some(lid) = req.license_id {
            tenant = Some(self.license_record(ctx, lid).await?.license.tenant_id);
        }
        if let Some(aid) = req.activation_id {
            let a = self.store.get_activation(ctx.scope()?, aid).await.map_err(|e| AppError::store("activation", e))?;
            tenant = Some(a.tenant_id);
        }
        let tenant_id = match tenant {
            Some(t) => t,
            None => ctx.tenant_for_create(req.tenant_id)?,
        };
        let now = self.now();
        let r = SuspiciousReport {
            id: Uuid::now_v7(),
            tenant_id,
            license_id: req.license_id,
            activation_id: req.activation_id,
            kind,
            details: req.details.unwrap_or_else(|| json!({})),
            created_at: now,
        };
        let audit = ctx.audit(now, Some(tenant_id), "security.report", Some(r.id.to_string()), json!({"kind": r.kind}));
        self.store.add_report(r.clone(), audit).await?;
        Ok(r)
    }

    pub async fn list_reports(&self, ctx: &Ctx) -> AppResult<Vec<SuspiciousReport>> {
        Ok(self.store.list_reports(ctx.scope()?).await?)
    }
}
