//! Lifecycle jobs: expire licenses past expiry + grace, cull floating activations that stopped heartbeating,
//! purge old deactivated activations, record "expiring soon" events.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;
use tessera_core::LicenseStatus;
use uuid::Uuid;

use super::licenses::next_version;
use super::{Ctx, Services};
use crate::error::AppResult;
use crate::store::{Event, LicenseRecord, StoreError};

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct JobReport {
    pub expired: u32,
    pub culled: u32,
    pub purged: u64,
    pub expiring_soon: u32,
    /// Change-feed rows older than an hour, dropped.
    pub pruned_changes: u64,
    /// Subscriptions renewed for another period.
    pub subscriptions_renewed: u32,
    /// Subscriptions that ended at their period's end (cancelled, or not renewing).
    pub subscriptions_ended: u32,
    /// Trials that ended unconverted (expired, or moved to the lowest plan).
    pub trials_ended: u32,
}

impl Services {
    pub async fn run_jobs(&self) -> AppResult<JobReport> {
        let now = self.now();
        // The change feed only has to outlive the slowest reader's poll (a fraction of a second); its rows carry
        // the database's own clock, not the service clock. First, so a failing job below cannot starve it.
        let pruned_changes = self.store.prune_changes(chrono::Utc::now() - Duration::hours(1)).await?;
        let mut report = JobReport { pruned_changes, ..JobReport::default() };

        // Subscriptions first: a renewal moves its license's expiry before the expiry step below looks at it.
        let (renewed, ended, trials) = self.run_subscription_jobs(now).await?;
        report.subscriptions_renewed = renewed;
        report.subscriptions_ended = ended;
        report.trials_ended = trials;

        // Expire: past expiry and grace.
        let ctx = Ctx::system("expire");
        for rec in self.store.licenses_expiring_before(now).await? {
            if self.expire_license(&ctx, rec, now).await? {
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
            if self.store.cull_if_stale(a.id, now, audit).await? {
                report.culled += 1;
            }
        }

        // Purge.
        let days = self.config.jobs.purge_deactivated_after_days;
        report.purged = self.store.purge_deactivated(now - Duration::days(i64::from(days)), now).await?;

        // Expiring soon.
        let ctx = Ctx::system("expiring-soon");
        let ahead = now + Duration::days(i64::from(self.config.jobs.expiring_soon_days));
        for rec in self.store.licenses_expiring_before(ahead).await? {
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
            // Only the notice mark is written: an admin change made meanwhile is kept.
            if self.store.note_expiring(rec.license.id, exp, ev, audit).await? {
                report.expiring_soon += 1;
            }
        }
        Ok(report)
    }

    /// Expires the license if it is active and past expiry and grace. It writes over the version it read only:
    /// when the license changed meanwhile (renewed, say) it reloads it once and decides again; when it changed
    /// yet again, the next run decides.
    async fn expire_license(&self, ctx: &Ctx, mut rec: LicenseRecord, now: DateTime<Utc>) -> AppResult<bool> {
        for attempt in 0..2 {
            let l = &rec.license;
            if l.status != LicenseStatus::Active || l.grace_ends_at().is_none_or(|g| now < g) {
                return Ok(false);
            }
            let audit = ctx.audit(
                now,
                Some(l.tenant_id),
                "license.expire",
                Some(l.id.to_string()),
                json!({"expires_at": l.expires_at}),
            );
            let read_at = rec.updated_at;
            let mut expired = rec.clone();
            expired.license.status = LicenseStatus::Expired;
            expired.updated_at = next_version(read_at, now);
            match self.store.update_license(expired, read_at, None, Some(audit)).await {
                Ok(()) => return Ok(true),
                Err(StoreError::Changed) if attempt == 0 => {
                    rec = match self.store.get_license(None, rec.license.id).await {
                        Ok(r) => r,
                        Err(StoreError::NotFound) => return Ok(false),
                        Err(e) => return Err(e.into()),
                    };
                }
                Err(StoreError::Changed | StoreError::NotFound) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    pub async fn list_events(&self, ctx: &Ctx, license_id: Option<Uuid>) -> AppResult<Vec<Event>> {
        Ok(self.store.list_events(ctx.scope()?, license_id).await?)
    }
}
