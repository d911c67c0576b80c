//! Licenses and emergency codes ([`LicenseStore`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::audit::{append_audit_tx, insert_event, with_outcome};
use super::rows::*;
use super::{ready, snapshot, SqliteStore};
use crate::store::*;
use crate::time::ts;

/// Inserts the license (`read_at` None) or replaces the version whose `updated_at` is `read_at`.
pub(super) fn write_license(
    c: &Connection,
    l: &LicenseRecord,
    read_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let lic = &l.license;
    let p = params![
        lic.id.to_string(),
        lic.tenant_id.to_string(),
        lic.product_id.to_string(),
        s_uuid(lic.customer_id),
        s_uuid(lic.template_id),
        l.key_hash.to_vec(),
        l.key_hint.to_vec(),
        lic.status.as_str(),
        lic.license_type.as_str(),
        s_time(lic.expires_at),
        json(lic)?,
        json(&l.policy)?,
        s_time(l.expiring_notice_for),
        ts(l.created_at),
        ts(l.updated_at)
    ];
    let Some(read_at) = read_at else {
        c.prepare_cached(
            "INSERT INTO licenses (id, tenant_id, product_id, customer_id, template_id, key_hash, key_hint, status,
             license_type, expires_at, body, policy, expiring_notice_for, created_at, updated_at)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
        )?
        .execute(p)?;
        return Ok(());
    };
    let read_at: &dyn rusqlite::ToSql = &ts(read_at);
    let n = c
        .prepare_cached(
            "UPDATE licenses SET product_id = ?3, customer_id = ?4, template_id = ?5, key_hash = ?6,
             key_hint = ?7, status = ?8, license_type = ?9, expires_at = ?10, body = ?11, policy = ?12,
             expiring_notice_for = ?13, created_at = ?14, updated_at = ?15
             WHERE id = ?1 AND tenant_id = ?2 AND updated_at = ?16",
        )?
        .execute(rusqlite::params_from_iter(p.iter().chain(std::iter::once(&read_at))))?;
    if n == 0 {
        let exists: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM licenses WHERE id = ?1 AND tenant_id = ?2)")?
            .query_row(params![lic.id.to_string(), lic.tenant_id.to_string()], |r| r.get(0))?;
        return Err(if exists { StoreError::Changed } else { StoreError::NotFound });
    }
    Ok(())
}

impl LicenseStore for SqliteStore {
    fn insert_license(&self, l: LicenseRecord, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            write_license(c, &l, None)?;
            append_audit_tx(c, &audit)
        })
    }

    fn update_license(
        &self,
        l: LicenseRecord,
        read_at: DateTime<Utc>,
        release_activations: Option<String>,
        audit: Option<NewAudit>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            write_license(c, &l, Some(read_at))?;
            if let Some(reason) = release_activations {
                c.prepare_cached(
                    "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2, deactivation_reason = ?3
                     WHERE license_id = ?1 AND status = 'ACTIVE'",
                )?
                .execute(params![l.license.id.to_string(), ts(l.updated_at), reason])?;
            }
            if let Some(a) = audit {
                append_audit_tx(c, &a)?;
            }
            Ok(())
        })
    }

    fn get_license(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, LicenseRecord> {
        self.read(move |c| get_scoped(c, "licenses", LICENSE_COLS, scope, id, row_license))
    }

    fn get_license_by_key_hash(&self, hash: [u8; 32]) -> StoreFuture<'_, Arc<LicenseRecord>> {
        if let Some(l) = self.cache.license_by_key(&hash) {
            return ready(l);
        }
        let cache = self.cache.clone();
        self.read(move |c| {
            let sql = format!("SELECT {LICENSE_COLS} FROM licenses WHERE key_hash = ?1");
            let (snap, l) = snapshot(c, |c| Ok(c.prepare_cached(&sql)?.query_row([hash.to_vec()], row_license)?))?;
            let l = Arc::new(l);
            cache.put_license(snap, l.clone());
            Ok(l)
        })
    }

    fn find_licenses_by_hint(&self, hint: [u8; 6]) -> StoreFuture<'_, Vec<LicenseRecord>> {
        self.read(move |c| {
            let sql = format!("SELECT {LICENSE_COLS} FROM licenses WHERE key_hint = ?1");
            Ok(c.prepare_cached(&sql)?.query_map([hint.to_vec()], row_license)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn list_licenses(&self, scope: Scope, f: LicenseFilter, page: PageRequest) -> StoreFuture<'_, Page<LicenseRecord>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {LICENSE_COLS} FROM licenses
                 WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR id > ?2)
                   AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR license_type = ?4)
                   AND (?5 IS NULL OR product_id = ?5) AND (?6 IS NULL OR customer_id = ?6)
                   AND (?7 IS NULL OR (expires_at IS NOT NULL AND expires_at < ?7))
                 ORDER BY id LIMIT ?8"
            );
            let items = c
                .prepare_cached(&sql)?
                .query_map(
                    params![
                        scope_s(scope),
                        s_uuid(page.after),
                        f.status.map(|s| s.as_str()),
                        f.license_type.map(|t| t.as_str()),
                        s_uuid(f.product_id),
                        s_uuid(f.customer_id),
                        s_time(f.expiring_before),
                        i64::from(page.limit) + 1
                    ],
                    row_license,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(paginate(items, page.limit, |l| l.license.id))
        })
    }

    fn licenses_expiring_before(&self, t: DateTime<Utc>) -> StoreFuture<'_, Vec<LicenseRecord>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {LICENSE_COLS} FROM licenses
                 WHERE status = 'ACTIVE' AND expires_at IS NOT NULL AND expires_at < ?1 ORDER BY expires_at"
            );
            Ok(c.prepare_cached(&sql)?.query_map([ts(t)], row_license)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn note_expiring(
        &self,
        license_id: Uuid,
        expires_at: DateTime<Utc>,
        e: Event,
        audit: NewAudit,
    ) -> StoreFuture<'_, bool> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE licenses SET expiring_notice_for = ?2
                     WHERE id = ?1 AND expires_at = ?2 AND expiring_notice_for IS NOT ?2",
                )?
                .execute(params![license_id.to_string(), ts(expires_at)])?;
            if n == 0 {
                return Ok(false);
            }
            insert_event(c, &e)?;
            append_audit_tx(c, &audit)?;
            Ok(true)
        })
    }

    fn issue_emergency(&self, op: EmergencyOp) -> StoreFuture<'_, EmergencyOutcome> {
        self.write(move |c| {
            let lic = op.record.license_id.to_string();
            let count: u32 = c
                .prepare_cached("SELECT COUNT(*) FROM emergency_codes WHERE license_id = ?1 AND issued_at >= ?2")?
                .query_row(params![lic, ts(op.window_start)], |r| r.get(0))?;
            if count >= op.max_in_window {
                append_audit_tx(c, &with_outcome(op.audit, "LIMIT_REACHED"))?;
                return Ok(EmergencyOutcome::LimitReached { issued_in_window: count });
            }
            let serial: u32 = c
                .prepare_cached("SELECT COALESCE(MAX(serial), 0) + 1 FROM emergency_codes WHERE license_id = ?1")?
                .query_row([&lic], |r| r.get(0))?;
            let mut rec = op.record;
            rec.serial = serial;
            rec.code = (op.make_code)(serial).map_err(StoreError::Db)?;
            c.prepare_cached(&format!(
                "INSERT INTO emergency_codes ({EMERGENCY_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"
            ))?
            .execute(params![
                rec.id.to_string(),
                rec.tenant_id.to_string(),
                lic,
                rec.serial,
                rec.reason,
                rec.issued_by,
                ts(rec.issued_at),
                ts(rec.expires_at),
                rec.bound_device,
                rec.code
            ])?;
            let mut audit = with_outcome(op.audit, "ISSUED");
            if let serde_json::Value::Object(m) = &mut audit.details {
                m.insert("serial".into(), serial.into());
            }
            append_audit_tx(c, &audit)?;
            Ok(EmergencyOutcome::Issued { record: rec, issued_in_window: count + 1 })
        })
    }

    fn list_emergency(&self, scope: Scope, license_id: Uuid) -> StoreFuture<'_, Vec<EmergencyRecord>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {EMERGENCY_COLS} FROM emergency_codes WHERE license_id = ?1 AND (?2 IS NULL OR tenant_id = ?2)
                 ORDER BY serial"
            );
            Ok(c.prepare_cached(&sql)?
                .query_map(params![license_id.to_string(), scope_s(scope)], row_emergency)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }
}
