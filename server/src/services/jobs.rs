//! Lifecycle jobs: expire licenses past expiry + grace, cull floating activations that stopped heartbeating,
//! purge old deactivated activations, record "expiring soon" events.

use chrono::Duration;
use serde::Serialize;
use serde_json::json;
use tessera_core::LicenseStatus;
use uuid::Uuid;

use super::{Ctx, Services};
use crate::error::AppResult;
use crate::store::Event;

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct JobReport {
    pub expired: u32,
    pub culled: u32,
    pub purged: u64,
    pub expiring_soon: u32,
}

impl Services {
    pub async fn run_jobs(&self) -> AppResult<JobReport> {
        let now = self.now();
        let mut report = JobReport::default();

        // Expire: past expiry and grace.
        let ctx = Ctx::system("expire");
        for mut rec in self.store.licenses_expiring_before(now).await? {
            if rec.license.grace_ends_at().is_some_and(|g| now >= g) {
                rec.license.status = LicenseStatus::Expired;
                rec.updated_at = now;
                let audit = ctx.audit(
                    now,
                    Some(rec.license.tenant_id),
                    "license.expire",
                    Some(rec.license.id.to_string()),
                    json!({"expires_at": rec.license.expires_at}),
                );
                self.store.update_license(rec, None, Some(audit)).await?;
                report.expired += 1;
            }
        }

        // Cull floating activations whose lease ran out (missed heartbeats): the seat is freed.
        let ctx = Ctx::system("cull");
        for a in self.store.stale_floating(now).await? {
            let audit = ctx.audit(
                now,
                Some(a.tenant_id),
                "activation.cull",
                Some(a.id.to_string()),
                json!({"license_id": a.license_id, "last_seen_at": a.last_seen_at}),
            );
            if self.store.deactivate(a.id, now, "missed heartbeats".into(), audit).await? {
                report.culled += 1;
            }
        }

        // Purge.
        let days = self.config.jobs.purge_deactivated_after_days;
        report.purged = self.store.purge_deactivated(now - Duration::days(i64::from(days))).await?;

        // Expiring soon.
        let ctx = Ctx::system("expiring-soon");
        let ahead = now + Duration::days(i64::from(self.config.jobs.expiring_soon_days));
        for mut rec in self.store.licenses_expiring_before(ahead).await? {
            let Some(exp) = rec.license.expires_at else {
                continue;
            };
            if exp <= now || rec.expiring_notice_for.map(crate::time::ts) == Some(crate::time::ts(exp)) {
                continue;
            }
            let ev = Event {
                id: Uuid::now_v7(),
                tenant_id: rec.license.tenant_id,
                license_id: Some(rec.license.id),
                kind: "license.expiring_soon".into(),
                at: now,
                data: json!({"expires_at": exp, "customer_id": rec.license.customer_id}),
            };
            let audit = ctx.audit(
                now,
                Some(rec.license.tenant_id),
                "license.expiring_soon",
                Some(rec.license.id.to_string()),
                json!({"expires_at": exp}),
            );
            self.store.add_event(ev, Some(audit)).await?;
            rec.expiring_notice_for = Some(exp);
            self.store.update_license(rec, None, None).await?;
            report.expiring_soon += 1;
        }
        Ok(report)
    }

    pub async fn list_events(&self, ctx: &Ctx, license_id: Option<Uuid>) -> AppResult<Vec<Event>> {
        Ok(self.store.list_events(ctx.scope()?, license_id).await?)
    }
}
