//! Server-side usage ingestion (`POST /v1/usage`): applications that run on the vendor's side and have no agent
//! (SaaS) report metered use in batches, exactly once per event id, checked against each license's quota as it
//! is recorded.
//!
//! A batch is one atomic write: every event is answered (recorded, duplicate, or refused with its reason), and a
//! refused event records nothing while the others of its batch still count. Events of a license that is not usable
//! (suspended, revoked, expired) or of a feature it does not grant are refused before the write. One audit entry
//! names the batch (its size and counts); the events themselves are the record.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_core::protocol::MAX_USAGE_AMOUNT;
use tessera_core::{Feature, License, LicenseStatus};
use uuid::Uuid;

use super::licenses::effective_status;
use super::{Ctx, Services};
use crate::error::{AppError, AppResult};
use crate::store::{BatchOutcome, BatchUsage, LicenseRecord, UsageEvent};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;

/// `POST /v1/usage`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestUsage {
    /// 1 to 1,000 events, recorded in order.
    pub events: Vec<IngestEvent>,
}

/// One use of a metered feature. `id` is the idempotency key: the same event sent again is counted once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestEvent {
    pub id: Uuid,
    /// The license, by id (or give `license_key`).
    #[serde(default)]
    pub license_id: Option<Uuid>,
    #[serde(default)]
    pub license_key: Option<String>,
    pub feature: String,
    /// 1 to 2^40 units.
    pub amount: u64,
    /// When the use happened (default: when it arrives); it counts in the quota period this falls in. At most
    /// five minutes ahead of the server's clock.
    #[serde(default)]
    pub recorded_at: Option<DateTime<Utc>>,
}

/// How far ahead of the server's clock an event's `recorded_at` may be (clock skew between hosts).
const MAX_FUTURE_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UsageOutcome {
    /// Counted.
    Recorded,
    /// Counted before: not counted again.
    Duplicate,
    /// The id was used before for another feature or amount: give a new event a new id.
    IdConflict,
    /// It would take the license past its quota of the feature: nothing recorded.
    QuotaExceeded,
    /// The license does not grant the feature (or it is disabled).
    NotEntitled,
    /// The license is suspended, revoked or expired.
    LicenseNotUsable,
    /// No license of this tenant has this id or key.
    LicenseNotFound,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventResult {
    pub id: Uuid,
    pub outcome: UsageOutcome,
    /// The license's use of the feature after the event (recorded, duplicate and quota refusals): in the quota's
    /// period for a quota per period, else the lifetime total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Units left of the quota after the event (absent: unlimited or unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// A quota per period: when the period the event counted in ends (and a used-up quota starts afresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_ends_at: Option<DateTime<Utc>>,
}

/// The answer: one result per event, in order, and the counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResult {
    pub recorded: u32,
    pub duplicates: u32,
    pub refused: u32,
    pub results: Vec<EventResult>,
}

/// How an event names its license.
#[derive(Clone, PartialEq, Eq, Hash)]
enum LicenseRef {
    Id(Uuid),
    Key(String),
}

impl Services {
    pub async fn ingest_usage(&self, ctx: &Ctx, req: IngestUsage) -> AppResult<IngestResult> {
        ctx.require_admin()?;
        let scope = ctx.scope()?;
        if req.events.is_empty() || req.events.len() > MAX_BATCH {
            return Err(AppError::invalid(format!(
                "events must hold 1 to {MAX_BATCH} events, not {}",
                req.events.len()
            )));
        }
        // Shape first: a malformed event refuses the whole batch, before anything is read or written.
        let now = self.now();
        let mut refs = Vec::with_capacity(req.events.len());
        for (i, e) in req.events.iter().enumerate() {
            let at = |m: String| {
                AppError::invalid(format!("events[{i}]: {m}")).with_details(json!({"index": i, "id": e.id}))
            };
            let r = match (&e.license_id, &e.license_key) {
                (Some(id), None) => LicenseRef::Id(*id),
                (None, Some(k)) => LicenseRef::Key(k.trim().to_string()),
                _ => return Err(at("give license_id or license_key (one of them)".into())),
            };
            Feature::validate_id(&e.feature).map_err(|m| at(m.to_string()))?;
            if e.amount == 0 || e.amount > MAX_USAGE_AMOUNT {
                return Err(at(format!("amount must be 1 to {MAX_USAGE_AMOUNT} (2^40), not {}", e.amount)));
            }
            if e.recorded_at.is_some_and(|t| t > now + MAX_FUTURE_SKEW) {
                return Err(at(
                    "recorded_at is more than 5 minutes ahead of the server's clock: send the time the use happened"
                        .into(),
                ));
            }
            refs.push(r);
        }

        // Each license once; one of another tenant is as unknown as one that does not exist.
        let mut licenses: HashMap<LicenseRef, Option<Arc<LicenseRecord>>> = HashMap::new();
        for r in &refs {
            if licenses.contains_key(r) {
                continue;
            }
            let found = match r {
                LicenseRef::Id(id) => match self.store.get_license(scope, *id).await {
                    Ok(rec) => Some(Arc::new(rec)),
                    Err(crate::store::StoreError::NotFound) => None,
                    Err(e) => return Err(AppError::store("license", e)),
                },
                LicenseRef::Key(k) => match self.tenant_license_by_key(ctx, k).await {
                    Ok(rec) => Some(rec),
                    Err(e) if e.code == crate::error::ErrorCode::LicenseNotFound => None,
                    Err(e) => return Err(e),
                },
            };
            licenses.insert(r.clone(), found);
        }

        // Refusals decided before the write; the rest go to the store in one batch.
        let mut results: Vec<Option<EventResult>> = Vec::with_capacity(refs.len());
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        for (i, (e, r)) in req.events.iter().zip(&refs).enumerate() {
            let refuse =
                |outcome| Some(EventResult { id: e.id, outcome, total: None, remaining: None, period_ends_at: None });
            let Some(rec) = licenses.get(r).cloned().flatten() else {
                results.push(refuse(UsageOutcome::LicenseNotFound));
                continue;
            };
            let l = &rec.license;
            if effective_status(l, now) != LicenseStatus::Active {
                results.push(refuse(UsageOutcome::LicenseNotUsable));
                continue;
            }
            let Some(f) = l.feature(&e.feature).filter(|f| f.enabled) else {
                results.push(refuse(UsageOutcome::NotEntitled));
                continue;
            };
            results.push(None);
            let limit = (!f.is_unlimited()).then_some(f.limit_value);
            let recorded_at = e.recorded_at.unwrap_or(now);
            let window = l.quota_window(f, recorded_at);
            slots.push((i, limit, window.map(|w| w.end)));
            batch.push(BatchUsage {
                license_id: l.id,
                event: UsageEvent { id: e.id, feature: e.feature.clone(), amount: e.amount as i64, recorded_at },
                limit,
                window,
            });
        }
        // The batch's tenant (a vendor-admin batch across tenants is audited as the vendor's).
        let mut tenants = licenses.values().flatten().map(|r| r.license.tenant_id);
        let first = tenants.next();
        let tenant = first.filter(|t| tenants.all(|u| u == *t));
        if !batch.is_empty() {
            let audit = ctx.audit(
                now,
                tenant,
                "usage.ingest",
                None,
                json!({"events": req.events.len(), "to_store": batch.len(),
                       "first_id": req.events.first().map(|e| e.id), "last_id": req.events.last().map(|e| e.id)}),
            );
            let outcomes =
                self.store.record_usage_batch(batch, now, audit).await.map_err(|e| AppError::store("usage", e))?;
            for ((i, limit, period_ends_at), outcome) in slots.into_iter().zip(outcomes) {
                let id = req.events[i].id;
                let left = |total: i64| limit.map(|l| l.saturating_sub(total).max(0) as u64);
                results[i] = Some(match outcome {
                    BatchOutcome::Recorded { total } => EventResult {
                        id,
                        outcome: UsageOutcome::Recorded,
                        total: Some(total.max(0) as u64),
                        remaining: left(total),
                        period_ends_at,
                    },
                    BatchOutcome::Duplicate { total } => EventResult {
                        id,
                        outcome: UsageOutcome::Duplicate,
                        total: Some(total.max(0) as u64),
                        remaining: left(total),
                        period_ends_at,
                    },
                    BatchOutcome::QuotaExceeded { total } => EventResult {
                        id,
                        outcome: UsageOutcome::QuotaExceeded,
                        total: Some(total.max(0) as u64),
                        remaining: left(total),
                        period_ends_at,
                    },
                    BatchOutcome::IdConflict => EventResult {
                        id,
                        outcome: UsageOutcome::IdConflict,
                        total: None,
                        remaining: None,
                        period_ends_at,
                    },
                });
            }
        }
        let results: Vec<EventResult> = results.into_iter().flatten().collect();
        let count = |o: UsageOutcome| results.iter().filter(|r| r.outcome == o).count() as u32;
        let recorded = count(UsageOutcome::Recorded);
        let duplicates = count(UsageOutcome::Duplicate);
        let refused = results.len() as u32 - recorded - duplicates;
        Ok(IngestResult { recorded, duplicates, refused, results })
    }
}

/// Most rows one summary returns.
pub const MAX_SUMMARY_ROWS: u32 = 10_000;

/// `GET /v1/usage/summary`: one of `license_id` and `customer_id` (all of the customer's licenses).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    pub license_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    /// One metric (feature id) only.
    pub metric: Option<String>,
    /// MONTH (default) or DAY, in UTC.
    pub period: Option<crate::store::SummaryPeriod>,
    /// From this instant (default: the start of the month eleven months back, or of the day 30 days back).
    pub from: Option<DateTime<Utc>>,
    /// Up to this instant, excluded (default: now).
    pub to: Option<DateTime<Utc>>,
}

/// Totals of one metric over the whole window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricTotal {
    pub metric: String,
    pub total: i64,
    pub events: u64,
}

/// Use per license, metric and day or month, by when the use happened (agents' heartbeats and `POST /v1/usage`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageSummary {
    pub period: crate::store::SummaryPeriod,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub licenses: Vec<Uuid>,
    pub rows: Vec<crate::store::UsageBucket>,
    pub totals: Vec<MetricTotal>,
}

fn start_of_month(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{Datelike, TimeZone};
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().unwrap_or(t)
}

impl Services {
    pub async fn usage_summary(&self, ctx: &Ctx, q: SummaryQuery) -> AppResult<UsageSummary> {
        use crate::store::SummaryPeriod;
        let scope = ctx.scope()?;
        let period = q.period.unwrap_or(SummaryPeriod::Month);
        let now = self.now();
        let to = q.to.unwrap_or(now);
        let from = match (q.from, period) {
            (Some(f), _) => f,
            (None, SummaryPeriod::Month) => {
                let this_month = start_of_month(now);
                this_month.checked_sub_months(chrono::Months::new(11)).unwrap_or(this_month)
            }
            (None, SummaryPeriod::Day) => {
                (now - chrono::Duration::days(30)).date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
            }
        };
        if from >= to {
            return Err(AppError::invalid("from must be before to"));
        }
        let most = match period {
            SummaryPeriod::Month => chrono::Duration::days(366 * 5),
            SummaryPeriod::Day => chrono::Duration::days(400),
        };
        if to - from > most {
            return Err(AppError::invalid(format!(
                "a {} summary spans at most {} days: narrow from and to",
                if period == SummaryPeriod::Month { "monthly" } else { "daily" },
                most.num_days()
            )));
        }
        if let Some(m) = &q.metric {
            Feature::validate_id(m).map_err(|e| AppError::invalid(format!("metric: {e}")))?;
        }
        let licenses: Vec<Uuid> = match (q.license_id, q.customer_id) {
            (Some(l), None) => {
                vec![self.store.get_license(scope, l).await.map_err(|e| AppError::store("license", e))?.license.id]
            }
            (None, Some(c)) => {
                let customer = self.store.get_customer(scope, c).await.map_err(|e| AppError::store("customer", e))?;
                let mut ids = Vec::new();
                let mut page = crate::store::PageRequest { after: None, limit: 500 };
                loop {
                    let filter = crate::store::LicenseFilter { customer_id: Some(customer.id), ..Default::default() };
                    let found = self.store.list_licenses(Some(customer.tenant_id), filter, page).await?;
                    ids.extend(found.items.iter().map(|l| l.license.id));
                    match found.next_cursor.and_then(|c| Uuid::parse_str(&c).ok()) {
                        Some(after) if ids.len() < 5_000 => page.after = Some(after),
                        _ => break,
                    }
                }
                ids
            }
            _ => return Err(AppError::invalid("give license_id or customer_id (one of them)")),
        };
        let rows = self
            .store
            .usage_summary(licenses.clone(), q.metric.clone(), from, to, period, MAX_SUMMARY_ROWS)
            .await
            .map_err(|e| AppError::store("usage", e))?;
        let mut totals: std::collections::BTreeMap<&str, (i64, u64)> = std::collections::BTreeMap::new();
        for r in &rows {
            let t = totals.entry(r.metric.as_str()).or_default();
            t.0 = t.0.saturating_add(r.total);
            t.1 += r.events;
        }
        let totals = totals
            .into_iter()
            .map(|(m, (total, events))| MetricTotal { metric: m.to_string(), total, events })
            .collect();
        Ok(UsageSummary { period, from, to, licenses, rows, totals })
    }
}

impl Services {
    /// Units of `feature` (the id asked about) the license has used in the period of its quota that holds `at`:
    /// the lifetime total for a lifetime quota, 0 without a quota.
    pub(crate) async fn used_in_period(&self, license: &License, feature: &str, at: DateTime<Utc>) -> AppResult<u64> {
        let Some(f) = license.feature(feature).filter(|f| !f.is_unlimited()) else {
            return Ok(0);
        };
        let n = match license.quota_window(f, at) {
            Some(w) => self.store.usage_between(license.id, feature.to_string(), w.start, w.end).await?,
            None => {
                self.store.usage_totals(license.id).await?.iter().find(|(id, _)| id == feature).map_or(0, |(_, n)| *n)
            }
        };
        Ok(n.max(0) as u64)
    }

    /// The usage totals a client is told (heartbeat answers, validation): the license's lifetime totals, each
    /// feature under a quota per period replaced by its use in the period that holds `at` (the agent places them
    /// by the answer's server time). A license without such quotas costs nothing more.
    pub(crate) async fn reported_totals(
        &self,
        license: &License,
        totals: Arc<Vec<(String, i64)>>,
        at: DateTime<Utc>,
    ) -> AppResult<Arc<Vec<(String, i64)>>> {
        let periodic = |id: &str| license.feature(id).and_then(|f| license.quota_window(f, at));
        if !license.features.iter().any(|f| !f.is_unlimited() && !f.limit_period.is_lifetime()) {
            return Ok(totals);
        }
        let mut out = Vec::with_capacity(totals.len());
        for (id, n) in totals.iter() {
            let n = match periodic(id) {
                Some(w) => self.store.usage_between(license.id, id.clone(), w.start, w.end).await?,
                None => *n,
            };
            out.push((id.clone(), n));
        }
        Ok(Arc::new(out))
    }
}
