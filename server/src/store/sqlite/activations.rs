//! Activations and seats ([`ActivationStore`]): the seat-limited activation, heartbeats, releases and the
//! floating-seat upkeep.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::audit::{append_audit_tx, with_outcome};
use super::rows::*;
use super::usage::{insert_usage_tx, usage_totals_tx};
use super::{ready, snapshot, SqliteStore};
use crate::store::*;
use crate::time::{parse as parse_time, ts};

pub(super) fn insert_activation(c: &Connection, a: &Activation) -> Result<(), StoreError> {
    c.prepare_cached(&format!(
        "INSERT INTO activations ({ACTIVATION_COLS}, machine_hash)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)"
    ))?
    .execute(params![
        a.id.to_string(),
        a.tenant_id.to_string(),
        a.license_id.to_string(),
        a.device_public_key,
        json(&a.fingerprint)?,
        json(&a.metadata)?,
        a.status.as_str(),
        a.offline,
        a.floating,
        ts(a.created_at),
        ts(a.last_seen_at),
        s_time(a.lease_expires_at),
        s_time(a.deactivated_at),
        a.deactivation_reason,
        s_time(a.seat_held_until),
        a.seats,
        a.user_id,
        identity_hash(&a.fingerprint)
    ])?;
    Ok(())
}

pub(super) fn active_where(
    c: &Connection,
    cond: &str,
    p: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Activation>, StoreError> {
    let sql = format!("SELECT {ACTIVATION_COLS} FROM activations WHERE status = 'ACTIVE' AND {cond}");
    Ok(c.prepare_cached(&sql)?.query_map(p, row_activation)?.collect::<Result<Vec<_>, _>>()?)
}

/// Seats in use at `at`: active activations, plus released ones whose seat is still held (always inactive, so
/// the two never overlap), each taking its `seats`; the activations of one named user take one seat together.
/// Indexed sums rather than one OR that would scan the license.
pub(super) fn count_active(c: &Connection, license_id: &str, at: DateTime<Utc>) -> Result<u32, StoreError> {
    let active: u32 = c
        .prepare_cached(
            "SELECT COALESCE(SUM(seats), 0) FROM activations
             WHERE license_id = ?1 AND status = 'ACTIVE' AND user_id IS NULL",
        )?
        .query_row([license_id], |r| r.get(0))?;
    let held: u32 = c
        .prepare_cached(
            "SELECT COALESCE(SUM(seats), 0) FROM activations
             WHERE license_id = ?1 AND seat_held_until IS NOT NULL AND seat_held_until > ?2 AND user_id IS NULL",
        )?
        .query_row(params![license_id, ts(at)], |r| r.get(0))?;
    let users: u32 = c
        .prepare_cached(
            "SELECT COUNT(DISTINCT user_id) FROM activations
             WHERE license_id = ?1 AND user_id IS NOT NULL
               AND (status = 'ACTIVE' OR (seat_held_until IS NOT NULL AND seat_held_until > ?2))",
        )?
        .query_row(params![license_id, ts(at)], |r| r.get(0))?;
    Ok(active.saturating_add(held).saturating_add(users))
}

/// Ends a replacement: audits the ended activation, inserts the new one, audits it naming the one it replaced.
pub(super) fn replace_with(
    c: &Connection,
    op: ActivateOp,
    ended: &NewAudit,
    replaced: Uuid,
) -> Result<ActivateOutcome, StoreError> {
    append_audit_tx(c, ended)?;
    insert_activation(c, &op.new)?;
    let mut audit = with_outcome(op.audit, "REPLACED");
    audit.target = Some(op.new.id.to_string());
    if let Some(d) = audit.details.as_object_mut() {
        d.insert("replaced".into(), serde_json::json!(replaced));
    }
    append_audit_tx(c, &audit)?;
    let lic = op.new.license_id.to_string();
    let seats = if op.max_seats > 0 { count_active(c, &lic, op.new.created_at)? } else { 0 };
    Ok(ActivateOutcome::Replaced { activation: op.new, replaced, seats_used: seats })
}

/// The seats a new activation adds: none for a named user who already holds a seat, else its `seats`.
pub(super) fn seats_needed(c: &Connection, a: &Activation, at: DateTime<Utc>) -> Result<u32, StoreError> {
    let Some(user) = &a.user_id else {
        return Ok(a.seats);
    };
    let holds: bool = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM activations WHERE license_id = ?1 AND user_id = ?2
                              AND (status = 'ACTIVE' OR (seat_held_until IS NOT NULL AND seat_held_until > ?3)))",
        )?
        .query_row(params![a.license_id.to_string(), user, ts(at)], |r| r.get(0))?;
    Ok(if holds { 0 } else { 1 })
}

impl ActivationStore for SqliteStore {
    fn activate(&self, op: ActivateOp) -> StoreFuture<'_, ActivateOutcome> {
        self.write(move |c| {
            let lic = op.new.license_id.to_string();
            let mut found =
                active_where(c, "license_id = ?1 AND device_public_key = ?2", &[&lic, &op.new.device_public_key])?
                    .into_iter()
                    .next();
            if found.is_none() {
                let candidates = match &op.candidates {
                    SameDeviceCandidates::KeyOnly => Vec::new(),
                    SameDeviceCandidates::ByIdentity(h) => {
                        active_where(c, "license_id = ?1 AND machine_hash = ?2", &[&lic, h])?
                    }
                    SameDeviceCandidates::All if op.max_seats > 0 => active_where(c, "license_id = ?1", &[&lic])?,
                    SameDeviceCandidates::All => Vec::new(),
                };
                found = candidates.into_iter().find(|a| (op.same_device)(a));
            }
            let superseded = found.as_ref().filter(|a| {
                a.device_public_key == op.new.device_public_key && op.supersede_if.as_ref().is_some_and(|f| f(a))
            });
            if let Some(old) = superseded.cloned() {
                // The same device key from another machine: the grant it holds keeps its seats until its lease
                // ends, so the new one needs free seats of its own (a named user's other activations counted as
                // always); checked after ending the old one, undone if over: nothing is written if there are none.
                let now = op.new.created_at;
                let held_until = old.lease_expires_at.unwrap_or_else(super::hold_forever);
                let seats = count_active(c, &lic, now)?;
                c.execute_batch("SAVEPOINT supersede")?;
                c.prepare_cached(
                    "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2, deactivation_reason = ?3,
                            seat_held_until = ?4, release_kind = 'SUPERSEDED'
                     WHERE id = ?1 AND status = 'ACTIVE'",
                )?
                .execute(params![
                    old.id.to_string(),
                    ts(now),
                    SUPERSEDED_REASON,
                    (held_until > now).then(|| ts(held_until))
                ])?;
                let after = count_active(c, &lic, now)?.saturating_add(seats_needed(c, &op.new, now)?);
                if op.max_seats > 0 && after > op.max_seats {
                    c.execute_batch("ROLLBACK TO supersede; RELEASE supersede")?;
                    append_audit_tx(c, &with_outcome(op.audit, "SEAT_LIMIT_REACHED"))?;
                    return Ok(ActivateOutcome::SeatLimit { seats_used: seats });
                }
                c.execute_batch("RELEASE supersede")?;
                let mut ended = with_outcome(op.audit.clone(), "DEACTIVATED");
                ended.action = "activation.deactivate".into();
                ended.target = Some(old.id.to_string());
                ended.details = serde_json::json!({
                    "reason": SUPERSEDED_REASON, "license_id": old.license_id, "replaced_by": op.new.id,
                    "seat_held_until": (held_until > now).then_some(held_until),
                });
                return replace_with(c, op, &ended, old.id);
            }
            if let Some(existing) = found.as_ref().filter(|a| a.device_public_key == op.new.device_public_key) {
                let mut a = existing.clone();
                a.seats = op.new.seats;
                a.user_id = op.new.user_id.clone();
                a.fingerprint = op.new.fingerprint.clone();
                a.metadata = op.new.metadata.clone();
                a.last_seen_at = op.new.last_seen_at;
                // The stored lease is how long the grants handed out for this activation run: it never moves
                // back (the earlier token or offline grant still runs to its own end), and an offline grant
                // without end stays without end.
                a.lease_expires_at = match (existing.lease_expires_at, op.reuse_lease_expires_at) {
                    (None, _) if existing.offline => None,
                    (Some(old), Some(new)) => Some(old.max(new)),
                    (old, new) => new.or(old),
                };
                // A machine that grew (more sockets / cores), or a seat that moves to another named user, takes
                // what it needs only if it is free: checked after the update, undone if over.
                let grows = a.seats > existing.seats || a.user_id != existing.user_id;
                c.execute_batch("SAVEPOINT reuse_seats")?;
                c.prepare_cached(
                    "UPDATE activations SET fingerprint = ?2, metadata = ?3, last_seen_at = ?4, lease_expires_at = ?5,
                            machine_hash = ?6, seats = ?7, user_id = ?8 WHERE id = ?1",
                )?
                .execute(params![
                    a.id.to_string(),
                    json(&a.fingerprint)?,
                    json(&a.metadata)?,
                    ts(a.last_seen_at),
                    s_time(a.lease_expires_at),
                    identity_hash(&a.fingerprint),
                    a.seats,
                    a.user_id
                ])?;
                if op.max_seats > 0 && grows {
                    let seats = count_active(c, &lic, op.new.created_at)?;
                    if seats > op.max_seats {
                        c.execute_batch("ROLLBACK TO reuse_seats; RELEASE reuse_seats")?;
                        append_audit_tx(c, &with_outcome(op.audit, "SEAT_LIMIT_REACHED"))?;
                        let seats = count_active(c, &lic, op.new.created_at)?;
                        return Ok(ActivateOutcome::SeatLimit { seats_used: seats });
                    }
                }
                c.execute_batch("RELEASE reuse_seats")?;
                let mut audit = with_outcome(op.audit, "REUSED");
                audit.target = Some(a.id.to_string());
                append_audit_tx(c, &audit)?;
                let seats = if op.max_seats > 0 { count_active(c, &lic, op.new.created_at)? } else { 0 };
                return Ok(ActivateOutcome::Reused { activation: a, seats_used: seats });
            }
            if let Some(old) = found {
                // The same machine with a new device key: the old activation ends (its device is told DEACTIVATED
                // at its next heartbeat, and its token is not renewed) and the new one takes its seat, in this
                // one transaction, so the seat count never goes over: if the new one needs more (more cores, or
                // another named user), it must fit, else nothing changes.
                c.execute_batch("SAVEPOINT replace_seats")?;
                c.prepare_cached(
                    "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2, deactivation_reason = ?3
                     WHERE id = ?1 AND status = 'ACTIVE'",
                )?
                .execute(params![old.id.to_string(), ts(op.new.created_at), REPLACED_REASON])?;
                let mut ended = with_outcome(op.audit.clone(), "DEACTIVATED");
                ended.action = "activation.deactivate".into();
                ended.target = Some(old.id.to_string());
                ended.details = serde_json::json!({
                    "reason": REPLACED_REASON, "license_id": old.license_id, "replaced_by": op.new.id
                });
                if op.max_seats > 0 {
                    let now = op.new.created_at;
                    let seats = count_active(c, &lic, now)?.saturating_add(seats_needed(c, &op.new, now)?);
                    if seats > op.max_seats {
                        c.execute_batch("ROLLBACK TO replace_seats; RELEASE replace_seats")?;
                        append_audit_tx(c, &with_outcome(op.audit, "SEAT_LIMIT_REACHED"))?;
                        return Ok(ActivateOutcome::SeatLimit { seats_used: count_active(c, &lic, now)? });
                    }
                }
                c.execute_batch("RELEASE replace_seats")?;
                return replace_with(c, op, &ended, old.id);
            }
            let seats = if op.max_seats > 0 { count_active(c, &lic, op.new.created_at)? } else { 0 };
            let needed = if op.max_seats > 0 { seats_needed(c, &op.new, op.new.created_at)? } else { 0 };
            if op.max_seats > 0 && seats.saturating_add(needed) > op.max_seats {
                append_audit_tx(c, &with_outcome(op.audit, "SEAT_LIMIT_REACHED"))?;
                return Ok(ActivateOutcome::SeatLimit { seats_used: seats });
            }
            insert_activation(c, &op.new)?;
            let mut audit = with_outcome(op.audit, "CREATED");
            audit.target = Some(op.new.id.to_string());
            append_audit_tx(c, &audit)?;
            Ok(ActivateOutcome::Created { activation: op.new, seats_used: seats + needed })
        })
    }

    fn get_activation(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Activation> {
        self.read(move |c| get_scoped(c, "activations", ACTIVATION_COLS, scope, id, row_activation))
    }

    fn activation_with_license(&self, id: Uuid) -> StoreFuture<'_, (Arc<Activation>, Arc<LicenseRecord>)> {
        if let Some(a) = self.cache.activation(&id) {
            if let Some(l) = self.cache.license(&a.license_id) {
                return ready((a, l));
            }
        }
        let cache = self.cache.clone();
        self.read(move |c| {
            let (snap, (a, l)) = snapshot(c, |c| {
                let a = get_scoped(c, "activations", ACTIVATION_COLS, None, id, row_activation)?;
                let l = get_scoped(c, "licenses", LICENSE_COLS, None, a.license_id, row_license)?;
                Ok((Arc::new(a), Arc::new(l)))
            })?;
            cache.put_activation(snap, a.clone());
            cache.put_license(snap, l.clone());
            Ok((a, l))
        })
    }

    fn list_activations(&self, scope: Scope, license_id: Uuid) -> StoreFuture<'_, Vec<Activation>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {ACTIVATION_COLS} FROM activations WHERE license_id = ?1 AND (?2 IS NULL OR tenant_id = ?2)
                 ORDER BY id"
            );
            Ok(c.prepare_cached(&sql)?
                .query_map(params![license_id.to_string(), scope_s(scope)], row_activation)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn count_active_seats(&self, license_id: Uuid, at: DateTime<Utc>) -> StoreFuture<'_, u32> {
        self.read(move |c| count_active(c, &license_id.to_string(), at))
    }

    fn count_active_seats_of(&self, ids: Vec<Uuid>, at: DateTime<Utc>) -> StoreFuture<'_, Vec<(Uuid, u32)>> {
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup(); // an id twice would be counted twice across chunks
        self.read(move |c| {
            let mut seats: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
            // The three sums of `count_active`, grouped, a bounded number of ids a statement.
            for chunk in ids.chunks(500) {
                let list = (2..chunk.len() + 2).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let mut args: Vec<String> = vec![ts(at)];
                args.extend(chunk.iter().map(Uuid::to_string));
                for sql in [
                    "SELECT license_id, COALESCE(SUM(seats), 0) FROM activations
                     WHERE license_id IN (LIST) AND status = 'ACTIVE' AND user_id IS NULL
                     GROUP BY license_id",
                    "SELECT license_id, COALESCE(SUM(seats), 0) FROM activations
                     WHERE license_id IN (LIST) AND seat_held_until IS NOT NULL AND seat_held_until > ?1
                       AND user_id IS NULL GROUP BY license_id",
                    "SELECT license_id, COUNT(DISTINCT user_id) FROM activations
                     WHERE license_id IN (LIST) AND user_id IS NOT NULL
                       AND (status = 'ACTIVE' OR (seat_held_until IS NOT NULL AND seat_held_until > ?1))
                     GROUP BY license_id",
                ] {
                    let sql = sql.replace("LIST", &list);
                    let mut stmt = c.prepare(&sql)?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
                    })?;
                    for row in rows {
                        let (id, n) = row?;
                        let e = seats.entry(id).or_default();
                        *e = e.saturating_add(n);
                    }
                }
            }
            Ok(seats.into_iter().filter_map(|(id, n)| Uuid::parse_str(&id).ok().map(|id| (id, n))).collect())
        })
    }

    fn heartbeat(&self, op: HeartbeatOp) -> StoreFuture<'_, HeartbeatOutcome> {
        self.write(move |c| {
            let lease: Option<Option<String>> = c
                .prepare_cached(
                    // A heartbeat lease only moves forward (racing renewals cannot pull it back under a token
                    // already handed out); timestamps are fixed-width RFC 3339, so text order is time order.
                    "UPDATE activations SET last_seen_at = MAX(last_seen_at, ?2),
                            lease_expires_at = CASE WHEN ?3 IS NULL THEN lease_expires_at
                                                    WHEN lease_expires_at IS NULL OR lease_expires_at < ?3 THEN ?3
                                                    ELSE lease_expires_at END
                     WHERE id = ?1 AND status = 'ACTIVE' RETURNING lease_expires_at",
                )?
                .query_row(params![op.activation_id.to_string(), ts(op.now), s_time(op.lease_expires_at)], |r| r.get(0))
                .optional()?;
            let n = usize::from(lease.is_some());
            let lease_expires_at = lease.flatten().and_then(|t| parse_time(&t));
            let mut accepted = Vec::new();
            if n > 0 {
                for u in &op.usage {
                    insert_usage_tx(c, op.license_id, Some(op.activation_id), u, op.now)?;
                    accepted.push(u.id);
                }
            }
            if let Some(a) = op.audit {
                let outcome = if n > 0 { "OK" } else { "DEACTIVATED" };
                append_audit_tx(c, &with_outcome(a, outcome))?;
            }
            Ok(HeartbeatOutcome {
                active: n > 0,
                lease_expires_at,
                accepted_usage: accepted,
                usage_totals: usage_totals_tx(c, op.license_id)?,
            })
        })
    }

    fn release(&self, op: ReleaseOp) -> StoreFuture<'_, ReleaseOutcome> {
        self.write(move |c| {
            let id = op.activation_id.to_string();
            // status, seat_held_until, lease_expires_at, grant tag
            type Row = (String, Option<String>, Option<String>, Option<String>);
            let row: Option<Row> = c
                .prepare_cached(
                    "SELECT status, seat_held_until, lease_expires_at, json_extract(metadata, '$.grant_tag')
                     FROM activations WHERE id = ?1",
                )?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            let Some((status, held, lease, tag)) = row else {
                return Err(StoreError::NotFound);
            };
            if op.expect_grant_tag.is_some() && tag != op.expect_grant_tag {
                return Ok(ReleaseOutcome::GrantChanged);
            }
            let lease_end = lease.and_then(|t| parse_time(&t));
            let held = held.and_then(|t| parse_time(&t)).filter(|t| *t > op.at);
            if status != "ACTIVE" {
                if op.kind == ReleaseKind::Staff && held.is_some() {
                    c.prepare_cached(
                        "UPDATE activations SET seat_held_until = NULL, release_kind = 'STAFF' WHERE id = ?1",
                    )?
                    .execute([&id])?;
                    append_audit_tx(c, &with_outcome(op.audit, "RELEASED"))?;
                    return Ok(ReleaseOutcome::Released {
                        kind: ReleaseKind::Staff,
                        seat_held_until: None,
                        immediate_in_window: 0,
                    });
                }
                append_audit_tx(c, &with_outcome(op.audit, "ALREADY_INACTIVE"))?;
                return Ok(ReleaseOutcome::AlreadyInactive { seat_held_until: held });
            }
            let lease_hold = lease_end.unwrap_or_else(super::hold_forever);
            let mut immediate_in_window = 0;
            let (kind, hold) = match op.kind {
                ReleaseKind::Staff => (ReleaseKind::Staff, None),
                ReleaseKind::Immediate => {
                    let (max, since) = op.immediate_limit;
                    let used: u32 = c
                        .prepare_cached(
                            "SELECT COUNT(*) FROM activations
                             WHERE license_id = (SELECT license_id FROM activations WHERE id = ?1)
                               AND release_kind = 'IMMEDIATE' AND deactivated_at >= ?2",
                        )?
                        .query_row(params![&id, ts(since)], |r| r.get(0))?;
                    if used < max {
                        immediate_in_window = used + 1;
                        (ReleaseKind::Immediate, None)
                    } else {
                        immediate_in_window = used;
                        (ReleaseKind::AfterLease, Some(lease_hold))
                    }
                }
                k @ (ReleaseKind::AfterLease | ReleaseKind::Superseded) => (k, Some(lease_hold)),
            };
            let hold = hold.filter(|t| *t > op.at);
            c.prepare_cached(
                "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2, deactivation_reason = ?3,
                        seat_held_until = ?4, release_kind = ?5
                 WHERE id = ?1 AND status = 'ACTIVE'",
            )?
            .execute(params![&id, ts(op.at), op.reason, s_time(hold), kind.as_str()])?;
            let mut audit = with_outcome(op.audit, "DEACTIVATED");
            if let Some(d) = audit.details.as_object_mut() {
                d.insert("release".into(), serde_json::json!(kind));
                d.insert("seat_held_until".into(), serde_json::json!(hold));
            }
            append_audit_tx(c, &audit)?;
            Ok(ReleaseOutcome::Released { kind, seat_held_until: hold, immediate_in_window })
        })
    }

    fn deactivate(&self, id: Uuid, at: DateTime<Utc>, reason: String, audit: NewAudit) -> StoreFuture<'_, bool> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2, deactivation_reason = ?3
                     WHERE id = ?1 AND status = 'ACTIVE'",
                )?
                .execute(params![id.to_string(), ts(at), reason])?;
            let outcome = if n > 0 { "DEACTIVATED" } else { "ALREADY_INACTIVE" };
            append_audit_tx(c, &with_outcome(audit, outcome))?;
            Ok(n > 0)
        })
    }

    fn cull_if_stale(&self, id: Uuid, at: DateTime<Utc>, audit: NewAudit) -> StoreFuture<'_, bool> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2,
                            deactivation_reason = 'missed heartbeats'
                     WHERE id = ?1 AND status = 'ACTIVE' AND floating = 1
                       AND lease_expires_at IS NOT NULL AND lease_expires_at < ?2",
                )?
                .execute(params![id.to_string(), ts(at)])?;
            if n > 0 {
                append_audit_tx(c, &with_outcome(audit, "DEACTIVATED"))?;
            }
            Ok(n > 0)
        })
    }

    fn stale_floating(&self, t: DateTime<Utc>) -> StoreFuture<'_, Vec<Activation>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {ACTIVATION_COLS} FROM activations
                 WHERE status = 'ACTIVE' AND floating = 1 AND lease_expires_at IS NOT NULL AND lease_expires_at < ?1"
            );
            Ok(c.prepare_cached(&sql)?.query_map([ts(t)], row_activation)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn purge_deactivated(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM activations WHERE status = 'DEACTIVATED' AND deactivated_at < ?1
                       AND (seat_held_until IS NULL OR seat_held_until <= ?2)
                       AND (release_kind IS NULL OR deactivated_at < ?3)",
                )?
                .execute(params![ts(before), ts(now), ts(now - chrono::Duration::days(30))])?;
            Ok(n as u64)
        })
    }
}
