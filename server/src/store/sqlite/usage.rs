//! Usage totals ([`UsageStore`]).

use rusqlite::Connection;
use uuid::Uuid;

use super::{ready, snapshot, SqliteStore};
use crate::store::*;

pub(super) fn usage_totals_tx(c: &Connection, license_id: Uuid) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(c.prepare_cached("SELECT feature, total FROM usage_totals WHERE license_id = ?1 ORDER BY feature")?
        .query_map([license_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?)
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
}
