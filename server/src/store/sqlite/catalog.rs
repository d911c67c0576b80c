//! Plans and add-ons ([`CatalogStore`]).

use rusqlite::{params, Row};
use uuid::Uuid;

use super::admin::put_row;
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
    fn put_plan(&self, p: Plan, create: bool, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let cols = [
                "product_id",
                "code",
                "kind",
                "rank",
                "tier",
                "category",
                "public",
                "archived_at",
                "body",
                "created_at",
                "updated_at",
            ];
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
                ts(p.updated_at)
            ];
            put_row(c, "plans", &cols, values, create)?;
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
