//! Events, the audit chain and the change feed's upkeep ([`AuditStore`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::rows::*;
use super::SqliteStore;
use crate::store::*;
use crate::time::ts;

pub(super) fn append_audit_tx(c: &Connection, e: &NewAudit) -> Result<(), StoreError> {
    append_audits_tx(c, std::slice::from_ref(e))
}

/// Appends entries to the hash chain: one read of the newest row, one insert per entry, one head update.
pub(super) fn append_audits_tx(c: &Connection, entries: &[NewAudit]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let prev: Option<(i64, Vec<u8>)> = c
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (mut seq, mut prev_hash) = prev.unwrap_or((0, vec![0u8; 32]));
    let mut insert = c.prepare_cached(
        "INSERT INTO audit_log (seq, at, tenant_id, actor, action, target, ip, outcome, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for e in entries {
        seq += 1;
        let hash = audit_hash(&prev_hash, seq, e).to_vec();
        insert.execute(params![
            seq,
            ts(e.at),
            s_uuid(e.tenant_id),
            e.actor,
            e.action,
            e.target,
            e.ip,
            e.outcome,
            json(&e.details)?,
            prev_hash,
            hash
        ])?;
        prev_hash = hash;
    }
    c.prepare_cached(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )?
    .execute(params![seq, prev_hash])?;
    Ok(())
}

pub(super) fn with_outcome(mut a: NewAudit, outcome: &str) -> NewAudit {
    a.outcome = outcome.to_string();
    a
}

pub(super) fn insert_event(c: &Connection, e: &Event) -> Result<(), StoreError> {
    c.prepare_cached(&format!("INSERT INTO events ({EVENT_COLS}) VALUES (?1,?2,?3,?4,?5,?6)"))?.execute(params![
        e.id.to_string(),
        e.tenant_id.to_string(),
        s_uuid(e.license_id),
        e.kind,
        ts(e.at),
        json(&e.data)?
    ])?;
    Ok(())
}

impl AuditStore for SqliteStore {
    fn prune_changes(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM changes WHERE at < ?1 AND seq < (SELECT MAX(seq) FROM changes)")?
                .execute([ts(before)])?;
            Ok(n as u64)
        })
    }

    fn add_event(&self, e: Event, audit: Option<NewAudit>) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            insert_event(c, &e)?;
            if let Some(a) = audit {
                append_audit_tx(c, &a)?;
            }
            Ok(())
        })
    }

    fn list_events(&self, scope: Scope, license_id: Option<Uuid>) -> StoreFuture<'_, Vec<Event>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLS} FROM events WHERE (?1 IS NULL OR tenant_id = ?1)
                 AND (?2 IS NULL OR license_id = ?2) ORDER BY at, id LIMIT 1000"
            );
            Ok(c.prepare_cached(&sql)?
                .query_map(params![scope_s(scope), s_uuid(license_id)], row_event)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn write_deferred(&self, audit: Vec<NewAudit>, seen: Vec<(Uuid, DateTime<Utc>)>) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let mut touch = c.prepare_cached(
                "UPDATE activations SET last_seen_at = ?2 WHERE id = ?1 AND status = 'ACTIVE' AND last_seen_at < ?2",
            )?;
            for (id, at) in &seen {
                touch.execute(params![id.to_string(), ts(*at)])?;
            }
            append_audits_tx(c, &audit)
        })
    }

    fn audit_head(&self) -> StoreFuture<'_, Option<(i64, Vec<u8>)>> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
    }

    fn audit_rows(&self, scope: Scope, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {AUDIT_COLS} FROM audit_log WHERE seq > ?1 AND (?2 IS NULL OR tenant_id = ?2)
                 ORDER BY seq LIMIT ?3"
            );
            Ok(c.prepare_cached(&sql)?
                .query_map(params![after, scope_s(scope), limit], row_audit)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn find_audit(&self, scope: Scope, f: AuditFilter, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>> {
        self.read(move |c| {
            // Only the conditions given enter the statement, so SQLite can use the target and actor indexes.
            let mut sql = format!("SELECT {AUDIT_COLS} FROM audit_log WHERE ");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            let mut cond = |clause: &str, v: Box<dyn rusqlite::ToSql>| {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
                sql.push_str(" AND ");
            };
            match f.before {
                Some(before) => cond("seq < ?", Box::new(before)),
                None => cond("seq > ?", Box::new(f.after)),
            }
            if let Some(t) = scope_s(scope) {
                cond("tenant_id = ?", Box::new(t));
            }
            if let Some(a) = f.actor {
                cond("actor = ?", Box::new(a));
            }
            match f.action {
                // SQLite counts characters, as `length` does: a prefix of any script matches.
                Some(a) if a.ends_with('.') => cond("substr(action, 1, length(?)) = ?", Box::new(a)),
                Some(a) => cond("action = ?", Box::new(a)),
                None => {}
            }
            if let Some(t) = f.target {
                cond("target = ?", Box::new(t));
            }
            if let Some(t) = f.since {
                cond("at >= ?", Box::new(ts(t)));
            }
            if let Some(t) = f.until {
                cond("at < ?", Box::new(ts(t)));
            }
            if !f.any_target.is_empty() {
                let first = args.len() + 1;
                let list = (first..first + f.any_target.len()).map(|i| format!("?{i}")).collect::<Vec<_>>();
                sql.push_str(&format!("target IN ({}) AND ", list.join(", ")));
                args.extend(f.any_target.into_iter().map(|t| Box::new(t) as Box<dyn rusqlite::ToSql>));
            }
            if !f.outcomes.is_empty() {
                let first = args.len() + 1;
                let list = (first..first + f.outcomes.len()).map(|i| format!("?{i}")).collect::<Vec<_>>();
                sql.push_str(&format!("outcome IN ({}) AND ", list.join(", ")));
                args.extend(f.outcomes.into_iter().map(|t| Box::new(t) as Box<dyn rusqlite::ToSql>));
            }
            sql.push_str(if f.before.is_some() { "1 ORDER BY seq DESC LIMIT ?" } else { "1 ORDER BY seq LIMIT ?" });
            sql = sql.replacen("LIMIT ?", &format!("LIMIT ?{}", args.len() + 1), 1);
            args.push(Box::new(limit));
            Ok(c.prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(args.iter()), row_audit)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }
}
