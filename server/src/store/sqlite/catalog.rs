//! Plans and add-ons ([`CatalogStore`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use uuid::Uuid;

use super::audit::append_audit_tx;
use super::rows::*;
use super::SqliteStore;
use crate::store::*;
use crate::time::ts;

const PLAN_COLS: &str = "body, created_at, updated_at";

fn row_plan(r: &Row<'_>) -> rusqlite::Result<Plan> {
    let mut p: Plan = g_json(r, 0)?;
    p.created_at = g_time(r, 1)?;
    p.updated_at = g_time(r, 2)?;
    Ok(p)
}

impl CatalogStore for SqliteStore {
    fn put_plan(&self, p: Plan, read_at: Option<DateTime<Utc>>, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let values = params![
                p.id.to_string(),
                p.tenant_id.to_string(),
                p.product_id.to_string(),
                p.code,
                p.kind.as_str(),
                p.rank,
                p.tier,
                p.category,
                p.public,
                s_time(p.archived_at),
                json(&p)?,
                ts(p.created_at),
                ts(p.updated_at),
                read_at.map(ts)
            ];
            if read_at.is_none() {
                c.prepare_cached(
                    "INSERT INTO plans (id, tenant_id, product_id, code, kind, rank, tier, category, public, \
                     archived_at, body, created_at, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                )?
                .execute(&values[..13])?;
                return append_audit_tx(c, &audit);
            }
            let n = c
                .prepare_cached(
                    "UPDATE plans SET product_id = ?3, code = ?4, kind = ?5, rank = ?6, tier = ?7, category = ?8, \
                     public = ?9, archived_at = ?10, body = ?11, created_at = ?12, updated_at = ?13 \
                     WHERE id = ?1 AND tenant_id = ?2 AND updated_at = ?14",
                )?
                .execute(values)?;
            if n == 0 {
                let exists = c
                    .prepare_cached("SELECT 1 FROM plans WHERE id = ?1 AND tenant_id = ?2")?
                    .query_row(params![p.id.to_string(), p.tenant_id.to_string()], |_| Ok(()))
                    .optional()?;
                return Err(if exists.is_some() { StoreError::Changed } else { StoreError::NotFound });
            }
            append_audit_tx(c, &audit)
        })
    }

    fn get_plan(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Plan> {
        self.read(move |c| get_scoped(c, "plans", PLAN_COLS, scope, id, row_plan))
    }

    fn list_plans(&self, scope: Scope, filter: PlanFilter) -> StoreFuture<'_, Vec<Plan>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {PLAN_COLS} FROM plans WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR product_id = ?2) \
                 AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR category = ?4) AND (?5 IS NULL OR tier = ?5) \
                 AND (?6 = 0 OR public = 1) AND (?7 = 1 OR archived_at IS NULL) \
                 ORDER BY product_id, kind DESC, rank, code LIMIT ?8"
            );
            let plans = c
                .prepare_cached(&sql)?
                .query_map(
                    params![
                        scope_s(scope),
                        s_uuid(filter.product_id),
                        filter.kind.map(PlanKind::as_str),
                        filter.category,
                        filter.tier,
                        filter.public_only,
                        filter.include_archived,
                        i64::from(MAX_PLANS_LISTED)
                    ],
                    row_plan,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(plans)
        })
    }
}
