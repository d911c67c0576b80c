//! Usage totals and backend-recorded usage events ([`UsageStore`]).

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::audit::{append_audit_tx, with_outcome};
use super::{ready, snapshot, SqliteStore};
use crate::store::*;
use crate::time::ts;

pub(super) fn usage_totals_tx(c: &Connection, license_id: Uuid) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(c.prepare_cached("SELECT feature, total FROM usage_totals WHERE license_id = ?1 ORDER BY feature")?
        .query_map([license_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// Adds `amount` to a license's total of `feature`, saturating at `i64::MAX` (as heartbeats do).
fn add_to_total_tx(c: &Connection, license_id: Uuid, feature: &str, amount: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO usage_totals (license_id, feature, total) VALUES (?1, ?2, ?3)
         ON CONFLICT (license_id, feature)
         DO UPDATE SET total = CASE WHEN total > 9223372036854775807 - excluded.total
                               THEN 9223372036854775807 ELSE total + excluded.total END",
    )?
    .execute(params![license_id.to_string(), feature, amount])?;
    Ok(())
}

/// Stores a usage event unless the license has one with its id, and adds a stored one to the total; returns
/// whether it was stored (heartbeats and `record_usage` alike).
pub(super) fn insert_usage_tx(
    c: &Connection,
    license_id: Uuid,
    activation_id: Option<Uuid>,
    e: &UsageEvent,
    received_at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    let inserted = c
        .prepare_cached(
            "INSERT OR IGNORE INTO usage_events (id, activation_id, license_id, feature, amount, recorded_at,
             received_at) VALUES (?1,?2,?3,?4,?5,?6,?7)",
        )?
        .execute(params![
            e.id.to_string(),
            activation_id.map(|a| a.to_string()),
            license_id.to_string(),
            e.feature,
            e.amount,
            ts(e.recorded_at),
            ts(received_at)
        ])?;
    if inserted > 0 {
        add_to_total_tx(c, license_id, &e.feature, e.amount)?;
    }
    Ok(inserted > 0)
}

fn total_tx(c: &Connection, license_id: Uuid, feature: &str) -> Result<i64, StoreError> {
    Ok(c.prepare_cached("SELECT total FROM usage_totals WHERE license_id = ?1 AND feature = ?2")?
        .query_row(params![license_id.to_string(), feature], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

impl UsageStore for SqliteStore {
    fn usage_totals(&self, license_id: Uuid) -> StoreFuture<'_, Arc<Vec<(String, i64)>>> {
        if let Some(t) = self.cache.usage(&license_id) {
            return ready(t);
        }
        let cache = self.cache.clone();
        self.read(move |c| {
            let (snap, totals) = snapshot(c, |c| usage_totals_tx(c, license_id))?;
            let totals = Arc::new(totals);
            cache.put_usage(snap, license_id, totals.clone());
            Ok(totals)
        })
    }

    fn record_usage(&self, op: RecordUsageOp) -> StoreFuture<'_, RecordUsageOutcome> {
        self.write(move |c| {
            let e = &op.event;
            let inserted = insert_usage_tx(c, op.license_id, op.activation_id, e, op.now)?;
            if inserted {
                append_audit_tx(c, &with_outcome(op.audit, "OK"))?;
                return Ok(RecordUsageOutcome::Recorded { total: total_tx(c, op.license_id, &e.feature)? });
            }
            let (feature, amount): (String, i64) = c
                .prepare_cached("SELECT feature, amount FROM usage_events WHERE license_id = ?1 AND id = ?2")?
                .query_row(params![op.license_id.to_string(), e.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if feature != e.feature || amount != e.amount {
                append_audit_tx(c, &with_outcome(op.audit, "CONFLICT"))?;
                return Ok(RecordUsageOutcome::IdConflict);
            }
            append_audit_tx(c, &with_outcome(op.audit, "DUPLICATE"))?;
            Ok(RecordUsageOutcome::Duplicate { total: total_tx(c, op.license_id, &e.feature)? })
        })
    }
}
