//! Device blocks and suspicious-activity reports ([`SecurityStore`]).

use rusqlite::params;
use uuid::Uuid;

use super::audit::{append_audit_tx, with_outcome};
use super::rows::*;
use super::{ready, snapshot, SqliteStore};
use crate::store::*;
use crate::time::ts;

impl SecurityStore for SqliteStore {
    fn add_block(
        &self,
        b: BlockedDevice,
        audit: NewAudit,
        reason: String,
        deactivated: Box<dyn Fn(&Activation) -> NewAudit + Send>,
    ) -> StoreFuture<'_, Vec<Uuid>> {
        self.write(move |c| {
            c.prepare_cached(&format!("INSERT INTO blocked_devices ({BLOCK_COLS}) VALUES (?1,?2,?3,?4,?5,?6)"))?
                .execute(params![
                    b.id.to_string(),
                    b.tenant_id.to_string(),
                    b.device_public_key,
                    b.fingerprint_hash,
                    b.reason,
                    ts(b.created_at)
                ])?;
            append_audit_tx(c, &audit)?;
            let sql = format!(
                "SELECT {ACTIVATION_COLS} FROM activations
                 WHERE tenant_id = ?1 AND status = 'ACTIVE' AND (device_public_key = ?2 OR ?3 IS NOT NULL)"
            );
            let candidates = c
                .prepare_cached(&sql)?
                .query_map(params![b.tenant_id.to_string(), b.device_public_key, b.fingerprint_hash], row_activation)?
                .collect::<Result<Vec<_>, _>>()?;
            let mut ids = Vec::new();
            for a in candidates.iter().filter(|a| {
                b.device_public_key.as_deref() == Some(&a.device_public_key[..])
                    || b.fingerprint_hash.as_ref().is_some_and(|h| {
                        a.fingerprint.components().iter().any(|x| hex::encode(x.hash).eq_ignore_ascii_case(h))
                    })
            }) {
                c.prepare_cached(
                    "UPDATE activations SET status = 'DEACTIVATED', deactivated_at = ?2, deactivation_reason = ?3
                     WHERE id = ?1 AND status = 'ACTIVE'",
                )?
                .execute(params![a.id.to_string(), ts(b.created_at), reason])?;
                append_audit_tx(c, &with_outcome(deactivated(a), "DEACTIVATED"))?;
                ids.push(a.id);
            }
            Ok(ids)
        })
    }

    fn list_blocks(&self, scope: Scope) -> StoreFuture<'_, Vec<BlockedDevice>> {
        self.read(move |c| {
            let sql =
                format!("SELECT {BLOCK_COLS} FROM blocked_devices WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY id");
            Ok(c.prepare_cached(&sql)?.query_map([scope_s(scope)], row_block)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn remove_block(&self, scope: Scope, id: Uuid, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM blocked_devices WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")?
                .execute(params![id.to_string(), scope_s(scope)])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }

    fn has_blocks(&self, tenant_id: Uuid) -> StoreFuture<'_, bool> {
        if let Some(any) = self.cache.has_blocks(&tenant_id) {
            return ready(any);
        }
        let cache = self.cache.clone();
        self.read(move |c| {
            let (snap, any) = snapshot(c, |c| {
                Ok(c.prepare_cached("SELECT EXISTS(SELECT 1 FROM blocked_devices WHERE tenant_id = ?1)")?
                    .query_row([tenant_id.to_string()], |r| r.get(0))?)
            })?;
            cache.put_has_blocks(snap, tenant_id, any);
            Ok(any)
        })
    }

    fn find_block(
        &self,
        tenant_id: Uuid,
        device_public_key: Vec<u8>,
        fingerprint_hashes: Vec<String>,
    ) -> StoreFuture<'_, Option<BlockedDevice>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {BLOCK_COLS} FROM blocked_devices
                 WHERE tenant_id = ?1 AND (device_public_key = ?2 OR fingerprint_hash IS NOT NULL)"
            );
            let rows = c
                .prepare_cached(&sql)?
                .query_map(params![tenant_id.to_string(), device_public_key], row_block)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows.into_iter().find(|b| {
                b.device_public_key.as_deref() == Some(&device_public_key[..])
                    || b.fingerprint_hash
                        .as_ref()
                        .is_some_and(|h| fingerprint_hashes.iter().any(|x| x.eq_ignore_ascii_case(h)))
            }))
        })
    }

    fn add_report(&self, r: SuspiciousReport, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.prepare_cached(&format!("INSERT INTO suspicious_reports ({REPORT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"))?
                .execute(params![
                    r.id.to_string(),
                    r.tenant_id.to_string(),
                    s_uuid(r.license_id),
                    s_uuid(r.activation_id),
                    r.kind,
                    json(&r.details)?,
                    ts(r.created_at)
                ])?;
            append_audit_tx(c, &audit)
        })
    }

    fn list_reports(&self, scope: Scope) -> StoreFuture<'_, Vec<SuspiciousReport>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {REPORT_COLS} FROM suspicious_reports WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY id"
            );
            Ok(c.prepare_cached(&sql)?.query_map([scope_s(scope)], row_report)?.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
