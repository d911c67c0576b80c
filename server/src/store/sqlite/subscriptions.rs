//! Subscriptions and their history ([`SubscriptionStore`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::audit::append_audits_tx;
use super::licenses::write_license;
use super::rows::*;
use super::SqliteStore;
use crate::store::*;
use crate::time::ts;

const SUB_COLS: &str = "body, created_at, updated_at";

fn row_subscription(r: &Row<'_>) -> rusqlite::Result<Subscription> {
    let mut s: Subscription = g_json(r, 0)?;
    s.created_at = g_time(r, 1)?;
    s.updated_at = g_time(r, 2)?;
    Ok(s)
}

/// When the lifecycle job next has work on `s`.
fn due_at(s: &Subscription) -> Option<String> {
    match s.status {
        SubscriptionStatus::Trialing => s.trial_ends_at.map(ts),
        SubscriptionStatus::Active => Some(ts(s.current_period_end)),
        _ => None,
    }
}

fn insert_event(c: &Connection, s: &Subscription, e: &SubscriptionEvent) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO subscription_events (id, subscription_id, tenant_id, at, body) VALUES (?1,?2,?3,?4,?5)",
    )?
    .execute(params![e.id.to_string(), s.id.to_string(), s.tenant_id.to_string(), ts(e.at), json(e)?])?;
    Ok(())
}

impl SubscriptionStore for SqliteStore {
    fn insert_subscription(
        &self,
        s: Subscription,
        license: LicenseRecord,
        event: SubscriptionEvent,
        audits: Vec<NewAudit>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            write_license(c, &license, None)?;
            c.prepare_cached(
                "INSERT INTO subscriptions (id, tenant_id, customer_id, product_id, license_id, status, due_at, body, \
                 created_at, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
            )?
            .execute(params![
                s.id.to_string(),
                s.tenant_id.to_string(),
                s.customer_id.to_string(),
                s.product_id.to_string(),
                s.license_id.to_string(),
                s.status.as_str(),
                due_at(&s),
                json(&s)?,
                ts(s.created_at),
                ts(s.updated_at)
            ])?;
            insert_event(c, &s, &event)?;
            append_audits_tx(c, &audits)
        })
    }

    fn update_subscription(
        &self,
        s: Subscription,
        read_at: DateTime<Utc>,
        license: Option<(LicenseRecord, DateTime<Utc>)>,
        event: SubscriptionEvent,
        audits: Vec<NewAudit>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE subscriptions SET status = ?3, due_at = ?4, body = ?5, updated_at = ?6 \
                     WHERE id = ?1 AND tenant_id = ?2 AND updated_at = ?7",
                )?
                .execute(params![
                    s.id.to_string(),
                    s.tenant_id.to_string(),
                    s.status.as_str(),
                    due_at(&s),
                    json(&s)?,
                    ts(s.updated_at),
                    ts(read_at)
                ])?;
            if n == 0 {
                let exists = c
                    .prepare_cached("SELECT 1 FROM subscriptions WHERE id = ?1 AND tenant_id = ?2")?
                    .query_row(params![s.id.to_string(), s.tenant_id.to_string()], |_| Ok(()))
                    .optional()?;
                return Err(if exists.is_some() { StoreError::Changed } else { StoreError::NotFound });
            }
            if let Some((l, l_read_at)) = &license {
                write_license(c, l, Some(*l_read_at))?;
            }
            insert_event(c, &s, &event)?;
            append_audits_tx(c, &audits)
        })
    }

    fn get_subscription(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Subscription> {
        self.read(move |c| get_scoped(c, "subscriptions", SUB_COLS, scope, id, row_subscription))
    }

    fn list_subscriptions(
        &self,
        scope: Scope,
        filter: SubscriptionFilter,
        page: PageRequest,
    ) -> StoreFuture<'_, Page<Subscription>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {SUB_COLS} FROM subscriptions WHERE (?1 IS NULL OR tenant_id = ?1) \
                 AND (?2 IS NULL OR customer_id = ?2) AND (?3 IS NULL OR product_id = ?3) \
                 AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR id > ?5) ORDER BY id LIMIT ?6"
            );
            let items = c
                .prepare_cached(&sql)?
                .query_map(
                    params![
                        scope_s(scope),
                        s_uuid(filter.customer_id),
                        s_uuid(filter.product_id),
                        filter.status.map(SubscriptionStatus::as_str),
                        s_uuid(page.after),
                        i64::from(page.limit) + 1
                    ],
                    row_subscription,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(paginate(items, page.limit, |s| s.id))
        })
    }

    fn subscriptions_due(&self, at: DateTime<Utc>, limit: u32) -> StoreFuture<'_, Vec<Subscription>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {SUB_COLS} FROM subscriptions WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2"
            );
            let due = c
                .prepare_cached(&sql)?
                .query_map(params![ts(at), i64::from(limit)], row_subscription)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(due)
        })
    }

    fn subscription_history(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Vec<SubscriptionEvent>> {
        self.read(move |c| {
            let events = c
                .prepare_cached(
                    "SELECT body FROM subscription_events WHERE subscription_id = ?1 AND (?2 IS NULL OR tenant_id = ?2) \
                     ORDER BY id",
                )?
                .query_map(params![id.to_string(), scope_s(scope)], |r| g_json::<SubscriptionEvent>(r, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(events)
        })
    }
}
