//! Row mapping: the column lists and the conversions between rows and records, shared by the role files.

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{params, Connection, Row};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::store::*;
use crate::time::{parse as parse_time, ts};

pub(super) fn conv(i: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, msg.into())
}

pub(super) fn g_uuid(r: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let s: String = r.get(i)?;
    Uuid::parse_str(&s).map_err(|e| conv(i, format!("bad uuid {s:?}: {e}")))
}

pub(super) fn g_opt_uuid(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| conv(i, format!("bad uuid {s:?}: {e}")))).transpose()
}

pub(super) fn g_time(r: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = r.get(i)?;
    parse_time(&s).ok_or_else(|| conv(i, format!("bad time {s:?}")))
}

pub(super) fn g_opt_time(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| parse_time(&s).ok_or_else(|| conv(i, format!("bad time {s:?}")))).transpose()
}

pub(super) fn g_json<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| conv(i, format!("bad JSON: {e}")))
}

pub(super) fn g_arr<const N: usize>(r: &Row<'_>, i: usize) -> rusqlite::Result<[u8; N]> {
    let v: Vec<u8> = r.get(i)?;
    v.try_into().map_err(|_| conv(i, format!("expected {N} bytes")))
}

pub(super) fn s_uuid(u: Option<Uuid>) -> Option<String> {
    u.map(|u| u.to_string())
}

pub(super) fn s_time(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

pub(super) fn json(v: &impl serde::Serialize) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

pub(super) fn paginate<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| id(t).to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Why an activation ended when the same machine activated again with a new device key.
pub const REPLACED_REASON: &str = "replaced by a new device key";
/// Why an offline activation ended when its device key renewed from a machine with another fingerprint.
pub const SUPERSEDED_REASON: &str = "superseded: the device key renewed its offline grant from another machine";

pub(super) const TENANT_COLS: &str = "id, name, created_at";
pub(super) fn row_tenant(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant { id: g_uuid(r, 0)?, name: r.get(1)?, created_at: g_time(r, 2)? })
}

pub(super) const CONSOLE_USER_COLS: &str =
    "id, tenant_id, username, password_hash, token_id, created_at, password_changed_at";
pub(super) fn row_console_user(r: &Row<'_>) -> rusqlite::Result<ConsoleUser> {
    Ok(ConsoleUser {
        id: g_uuid(r, 0)?,
        tenant_id: g_opt_uuid(r, 1)?,
        username: r.get(2)?,
        password_hash: r.get(3)?,
        token_id: g_uuid(r, 4)?,
        created_at: g_time(r, 5)?,
        password_changed_at: g_time(r, 6)?,
    })
}

pub(super) const TOKEN_COLS: &str = "id, tenant_id, name, role, prefix, created_at, revoked_at, token_hash";
pub(super) fn row_token(r: &Row<'_>) -> rusqlite::Result<ApiToken> {
    row_token_at(r, 0)
}

/// A token whose [`TOKEN_COLS`] start at column `at` (after another table's columns in a join).
pub(super) fn row_token_at(r: &Row<'_>, at: usize) -> rusqlite::Result<ApiToken> {
    let role: String = r.get(at + 3)?;
    Ok(ApiToken {
        id: g_uuid(r, at)?,
        tenant_id: g_opt_uuid(r, at + 1)?,
        name: r.get(at + 2)?,
        role: Role::parse(&role).ok_or_else(|| conv(at + 3, format!("unknown role {role:?}")))?,
        prefix: r.get(at + 4)?,
        created_at: g_time(r, at + 5)?,
        revoked_at: g_opt_time(r, at + 6)?,
    })
}

pub(super) const CUSTOMER_COLS: &str = "id, tenant_id, name, email, metadata, created_at, updated_at";
pub(super) fn row_customer(r: &Row<'_>) -> rusqlite::Result<Customer> {
    Ok(Customer {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        name: r.get(2)?,
        email: r.get(3)?,
        metadata: g_json(r, 4)?,
        created_at: g_time(r, 5)?,
        updated_at: g_time(r, 6)?,
    })
}

pub(super) const PRODUCT_COLS: &str = "id, tenant_id, name, code, metadata, created_at, updated_at";
pub(super) fn row_product(r: &Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        name: r.get(2)?,
        code: r.get(3)?,
        metadata: g_json(r, 4)?,
        created_at: g_time(r, 5)?,
        updated_at: g_time(r, 6)?,
    })
}

pub(super) const TEMPLATE_COLS: &str = "body, created_at, updated_at";
pub(super) fn row_template(r: &Row<'_>) -> rusqlite::Result<TemplateRecord> {
    Ok(TemplateRecord { template: g_json(r, 0)?, created_at: g_time(r, 1)?, updated_at: g_time(r, 2)? })
}

pub(super) const LICENSE_COLS: &str = "body, key_hash, key_hint, policy, expiring_notice_for, created_at, updated_at";
pub(super) fn row_license(r: &Row<'_>) -> rusqlite::Result<LicenseRecord> {
    Ok(LicenseRecord {
        license: g_json(r, 0)?,
        key_hash: g_arr(r, 1)?,
        key_hint: g_arr(r, 2)?,
        policy: g_json(r, 3)?,
        expiring_notice_for: g_opt_time(r, 4)?,
        created_at: g_time(r, 5)?,
        updated_at: g_time(r, 6)?,
    })
}

pub(super) const ACTIVATION_COLS: &str = "id, tenant_id, license_id, device_public_key, fingerprint, metadata, status, \
     offline, floating, created_at, last_seen_at, lease_expires_at, deactivated_at, deactivation_reason, seat_held_until, seats, user_id";
pub(super) fn row_activation(r: &Row<'_>) -> rusqlite::Result<Activation> {
    let status: String = r.get(6)?;
    Ok(Activation {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        license_id: g_uuid(r, 2)?,
        device_public_key: r.get(3)?,
        fingerprint: g_json(r, 4)?,
        metadata: g_json(r, 5)?,
        status: if status == "ACTIVE" { ActivationStatus::Active } else { ActivationStatus::Deactivated },
        offline: r.get(7)?,
        floating: r.get(8)?,
        created_at: g_time(r, 9)?,
        last_seen_at: g_time(r, 10)?,
        lease_expires_at: g_opt_time(r, 11)?,
        deactivated_at: g_opt_time(r, 12)?,
        deactivation_reason: r.get(13)?,
        seat_held_until: g_opt_time(r, 14)?,
        seats: r.get(15)?,
        user_id: r.get(16)?,
    })
}

pub(super) const BLOCK_COLS: &str = "id, tenant_id, device_public_key, fingerprint_hash, reason, created_at";
pub(super) fn row_block(r: &Row<'_>) -> rusqlite::Result<BlockedDevice> {
    Ok(BlockedDevice {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        device_public_key: r.get(2)?,
        fingerprint_hash: r.get(3)?,
        reason: r.get(4)?,
        created_at: g_time(r, 5)?,
    })
}

pub(super) const REPORT_COLS: &str = "id, tenant_id, license_id, activation_id, kind, details, created_at";
pub(super) fn row_report(r: &Row<'_>) -> rusqlite::Result<SuspiciousReport> {
    Ok(SuspiciousReport {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        license_id: g_opt_uuid(r, 2)?,
        activation_id: g_opt_uuid(r, 3)?,
        kind: r.get(4)?,
        details: g_json(r, 5)?,
        created_at: g_time(r, 6)?,
    })
}

pub(super) const EMERGENCY_COLS: &str =
    "id, tenant_id, license_id, serial, reason, issued_by, issued_at, expires_at, bound_device, code";
pub(super) fn row_emergency(r: &Row<'_>) -> rusqlite::Result<EmergencyRecord> {
    Ok(EmergencyRecord {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        license_id: g_uuid(r, 2)?,
        serial: r.get(3)?,
        reason: r.get(4)?,
        issued_by: r.get(5)?,
        issued_at: g_time(r, 6)?,
        expires_at: g_time(r, 7)?,
        bound_device: r.get(8)?,
        code: r.get(9)?,
    })
}

pub(super) const EVENT_COLS: &str = "id, tenant_id, license_id, kind, at, data";
pub(super) fn row_event(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        license_id: g_opt_uuid(r, 2)?,
        kind: r.get(3)?,
        at: g_time(r, 4)?,
        data: g_json(r, 5)?,
    })
}

pub(super) const AUDIT_COLS: &str = "seq, at, tenant_id, actor, action, target, ip, outcome, details, prev_hash, hash";
pub(super) fn row_audit(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        entry: NewAudit {
            at: g_time(r, 1)?,
            tenant_id: g_opt_uuid(r, 2)?,
            actor: r.get(3)?,
            action: r.get(4)?,
            target: r.get(5)?,
            ip: r.get(6)?,
            outcome: r.get(7)?,
            // An edited row must still be readable so that verification can name it.
            details: {
                let raw: String = r.get(8)?;
                serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw))
            },
        },
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

pub(super) fn scope_s(scope: Scope) -> Option<String> {
    s_uuid(scope)
}

pub(super) fn list_scoped<T>(
    c: &Connection,
    table: &str,
    cols: &str,
    scope: Scope,
    page: PageRequest,
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
    id: fn(&T) -> Uuid,
) -> Result<Page<T>, StoreError> {
    let sql = format!(
        "SELECT {cols} FROM {table} WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR id > ?2) \
         ORDER BY id LIMIT ?3"
    );
    let items = c
        .prepare_cached(&sql)?
        .query_map(params![scope_s(scope), s_uuid(page.after), i64::from(page.limit) + 1], map)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, page.limit, id))
}

pub(super) fn get_scoped<T>(
    c: &Connection,
    table: &str,
    cols: &str,
    scope: Scope,
    id: Uuid,
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    let sql = format!("SELECT {cols} FROM {table} WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)");
    Ok(c.prepare_cached(&sql)?.query_row(params![id.to_string(), scope_s(scope)], map)?)
}
