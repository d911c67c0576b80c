//! Usage totals and backend-recorded usage events ([`UsageStore`]).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use tessera_core::model::QuotaWindow;
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

/// The UTC day of a stored time, as `usage_daily` keys it.
fn day_of(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// Adds `amount` in `events` events to a license's use of `feature` on `day`, saturating like the totals.
fn add_to_day_tx(
    c: &Connection,
    license_id: Uuid,
    feature: &str,
    day: &str,
    amount: i64,
    events: i64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO usage_daily (license_id, feature, day, total, events) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (license_id, feature, day)
         DO UPDATE SET total = CASE WHEN total > 9223372036854775807 - excluded.total
                               THEN 9223372036854775807 ELSE total + excluded.total END,
                       events = events + excluded.events",
    )?
    .execute(params![license_id.to_string(), feature, day, amount, events])?;
    Ok(())
}

/// A license's use of `feature` on the UTC days `from <= day < to`.
fn between_tx(
    c: &Connection,
    license_id: Uuid,
    feature: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<i64, StoreError> {
    // TOTAL is a float that cannot overflow; totals saturate at i64::MAX, as the stored ones do.
    let sum: f64 = c
        .prepare_cached(
            "SELECT TOTAL(total) FROM usage_daily WHERE license_id = ?1 AND feature = ?2 AND day >= ?3 AND day < ?4",
        )?
        .query_row(params![license_id.to_string(), feature, day_of(from), day_of(to)], |r| r.get(0))?;
    Ok(if sum >= i64::MAX as f64 { i64::MAX } else { sum as i64 })
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
        add_to_day_tx(c, license_id, &e.feature, &day_of(e.recorded_at), e.amount, 1)?;
    }
    Ok(inserted > 0)
}

fn total_tx(c: &Connection, license_id: Uuid, feature: &str) -> Result<i64, StoreError> {
    Ok(c.prepare_cached("SELECT total FROM usage_totals WHERE license_id = ?1 AND feature = ?2")?
        .query_row(params![license_id.to_string(), feature], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The running totals a batch checks quotas against, one slot per license, feature and quota period (`None`:
/// lifetime), each read once and kept as (stored, added in this batch); and what the batch adds per UTC day, written
/// once at the end. Consecutive events of one license and feature (the common batch) find their slot and day without
/// hashing or allocating.
#[derive(Default)]
struct BatchTotals {
    index: HashMap<(Uuid, String, Option<QuotaWindow>), usize>,
    slots: Vec<Slot>,
    last: Option<usize>,
    /// (slot, day as days from the common era, units, events), merged while consecutive.
    daily: Vec<(usize, i32, i64, i64)>,
}

struct Slot {
    license_id: Uuid,
    feature: String,
    window: Option<QuotaWindow>,
    stored: i64,
    added: i64,
}

impl BatchTotals {
    /// The slot of a license's feature in `window`, read from the store the first time.
    fn slot(
        &mut self,
        c: &Connection,
        license_id: Uuid,
        feature: &str,
        window: Option<QuotaWindow>,
    ) -> Result<usize, StoreError> {
        if let Some(i) = self.last {
            let s = &self.slots[i];
            if s.license_id == license_id && s.window == window && s.feature == feature {
                return Ok(i);
            }
        }
        let key = (license_id, feature.to_string(), window);
        let i = match self.index.get(&key) {
            Some(i) => *i,
            None => {
                let stored = match window {
                    None => total_tx(c, license_id, feature)?,
                    Some(w) => between_tx(c, license_id, feature, w.start, w.end)?,
                };
                self.slots.push(Slot { license_id, feature: key.1.clone(), window, stored, added: 0 });
                self.index.insert(key, self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        self.last = Some(i);
        Ok(i)
    }

    /// Counts a recorded event in its slot and day; returns the slot's total after it.
    fn add(&mut self, slot: usize, e: &UsageEvent) -> i64 {
        use chrono::Datelike;
        let s = &mut self.slots[slot];
        s.added = s.added.saturating_add(e.amount);
        let total = s.stored.saturating_add(s.added);
        let day = e.recorded_at.date_naive().num_days_from_ce();
        match self.daily.last_mut() {
            Some(d) if d.0 == slot && d.1 == day => *d = (slot, day, d.2.saturating_add(e.amount), d.3 + 1),
            _ => self.daily.push((slot, day, e.amount, 1)),
        }
        total
    }

    fn write(self, c: &Connection) -> Result<(), StoreError> {
        let mut lifetime: HashMap<(Uuid, &str), i64> = HashMap::new();
        for (slot, day, added, events) in &self.daily {
            let s = &self.slots[*slot];
            let t = lifetime.entry((s.license_id, s.feature.as_str())).or_default();
            *t = t.saturating_add(*added);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(*day)
                .ok_or_else(|| StoreError::Corrupt(format!("usage day {day}")))?;
            add_to_day_tx(c, s.license_id, &s.feature, &date.format("%Y-%m-%d").to_string(), *added, *events)?;
        }
        for ((license_id, feature), added) in lifetime {
            add_to_total_tx(c, license_id, feature, added)?;
        }
        Ok(())
    }
}

fn record_batch_tx(
    c: &Connection,
    items: &[BatchUsage],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<BatchOutcome>, StoreError> {
    let mut totals = BatchTotals::default();
    let mut insert = c.prepare_cached(
        "INSERT OR IGNORE INTO usage_events (id, activation_id, license_id, feature, amount, recorded_at, received_at)
         VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let received = ts(now);
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let e = &item.event;
        let slot = totals.slot(c, item.license_id, &e.feature, item.window)?;
        let total = totals.slots[slot].stored.saturating_add(totals.slots[slot].added);
        if let Some(limit) = item.limit {
            if total.saturating_add(e.amount) > limit {
                // A repeat of an event recorded before is still a duplicate, not a refusal.
                out.push(match existing_event(c, item)? {
                    Some(same) if same => BatchOutcome::Duplicate { total },
                    Some(_) => BatchOutcome::IdConflict,
                    None => BatchOutcome::QuotaExceeded { total },
                });
                continue;
            }
        }
        let inserted = insert.execute(params![
            e.id.to_string(),
            item.license_id.to_string(),
            e.feature,
            e.amount,
            ts(e.recorded_at),
            received
        ])?;
        if inserted > 0 {
            let total = totals.add(slot, e);
            out.push(BatchOutcome::Recorded { total });
        } else if existing_event(c, item)? == Some(true) {
            out.push(BatchOutcome::Duplicate { total });
        } else {
            out.push(BatchOutcome::IdConflict);
        }
    }
    totals.write(c)?;
    Ok(out)
}

/// Whether the license has an event with this item's id: `Some(true)` with the same feature and amount.
fn existing_event(c: &Connection, item: &BatchUsage) -> Result<Option<bool>, StoreError> {
    let found: Option<(String, i64)> = c
        .prepare_cached("SELECT feature, amount FROM usage_events WHERE license_id = ?1 AND id = ?2")?
        .query_row(params![item.license_id.to_string(), item.event.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.map(|(f, a)| f == item.event.feature && a == item.event.amount))
}

impl UsageStore for SqliteStore {
    fn usage_summary(
        &self,
        licenses: Vec<Uuid>,
        metric: Option<String>,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        period: SummaryPeriod,
        limit: u32,
    ) -> StoreFuture<'_, Vec<UsageBucket>> {
        self.read(move |c| {
            // Stored times are fixed-width RFC 3339 UTC text, so a day is its first 10 characters, a month its 7.
            let width = match period {
                SummaryPeriod::Day => 10,
                SummaryPeriod::Month => 7,
            };
            let sql = format!(
                "SELECT license_id, feature, substr(recorded_at, 1, {width}) AS bucket, SUM(amount), COUNT(*) \
                 FROM usage_events WHERE license_id = ?1 AND (?2 IS NULL OR feature = ?2) \
                 AND recorded_at >= ?3 AND recorded_at < ?4 GROUP BY feature, bucket ORDER BY feature, bucket"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut out = Vec::new();
            for l in licenses {
                let rows = stmt.query_map(params![l.to_string(), metric, ts(from), ts(to)], |r| {
                    let bucket: String = r.get(2)?;
                    Ok((r.get::<_, String>(1)?, bucket, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?))
                })?;
                for row in rows {
                    let (feature, bucket, total, events) = row?;
                    let day = if width == 7 { format!("{bucket}-01") } else { bucket };
                    let start = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                        .map_err(|e| StoreError::Corrupt(format!("usage event time {day:?}: {e}")))?
                        .and_hms_opt(0, 0, 0)
                        .map(|t| t.and_utc())
                        .ok_or_else(|| StoreError::Corrupt(format!("usage event time {day:?}")))?;
                    out.push(UsageBucket {
                        license_id: l,
                        metric: feature,
                        period_start: start,
                        total,
                        events: events.max(0) as u64,
                    });
                    if out.len() >= limit as usize {
                        return Ok(out);
                    }
                }
            }
            Ok(out)
        })
    }

    fn record_usage_batch(
        &self,
        items: Vec<BatchUsage>,
        now: chrono::DateTime<chrono::Utc>,
        audit: NewAudit,
    ) -> StoreFuture<'_, Vec<BatchOutcome>> {
        self.write(move |c| {
            let out = record_batch_tx(c, &items, now)?;
            append_audit_tx(c, &audit)?;
            Ok(out)
        })
    }

    fn usage_between(
        &self,
        license_id: Uuid,
        feature: String,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> StoreFuture<'_, i64> {
        self.read(move |c| between_tx(c, license_id, &feature, from, to))
    }

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
