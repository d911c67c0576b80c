//! The read cache of the SQLite store: licenses (by id and by key hash), activations, usage totals and whether
//! a tenant has device blocks, kept
//! correct by the change feed (`migrations/sqlite/0004_change_feed.sql`).
//!
//! Every change to a cached row, from any process, appends `(seq, kind, id)` to the `changes` table (triggers do
//! it, so no write path can forget). The store applies the feed after each of its own commits, before it answers
//! the writer, so this process reads its own writes; a poller applies everyone else's within a fraction of a
//! second.
//!
//! A value read from the database carries the feed position of its read transaction (`snap`). It may enter the
//! cache only while the feed applied so far does not go past `snap`: otherwise a change it did not see may already
//! have been applied (and found nothing to drop). A change `seq` drops an entry read before it (`snap < seq`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use super::{Activation, LicenseRecord};

/// Entries per map before it is emptied (a crude bound; a miss costs one read).
const CAPACITY: usize = 200_000;

/// What a feed row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    License,
    Activation,
    Usage,
    /// Device blocks of a tenant (id is the tenant id).
    Blocks,
    /// A row this version cannot read (written by a newer one): everything is dropped rather than guessed at.
    Unknown,
}

impl Kind {
    pub fn parse(s: &str) -> Kind {
        match s {
            "license" => Kind::License,
            "activation" => Kind::Activation,
            "usage" => Kind::Usage,
            "blocks" => Kind::Blocks,
            _ => Kind::Unknown,
        }
    }
}

/// Running usage totals of a license, per feature.
pub type Totals = Arc<Vec<(String, i64)>>;

struct Entry<T> {
    snap: i64,
    value: T,
}

#[derive(Default)]
struct Inner {
    /// The feed position applied so far.
    applied: i64,
    /// Set when the feed could not be read: nothing is served or stored until an apply succeeds.
    poisoned: bool,
    licenses: HashMap<Uuid, Entry<Arc<LicenseRecord>>>,
    by_key: HashMap<[u8; 32], Uuid>,
    activations: HashMap<Uuid, Entry<Arc<Activation>>>,
    usage: HashMap<Uuid, Entry<Totals>>,
    /// Per tenant: whether it has any device block.
    blocks: HashMap<Uuid, Entry<bool>>,
}

impl Inner {
    fn drop_license(&mut self, id: &Uuid, seq: i64) {
        if let Some(rec) = drop_older(&mut self.licenses, id, seq) {
            self.by_key.remove(&rec.key_hash);
        }
    }

    fn clear(&mut self) {
        self.licenses.clear();
        self.by_key.clear();
        self.activations.clear();
        self.usage.clear();
        self.blocks.clear();
    }
}

/// Inserts, emptying the map first when it is full (a crude bound; a miss costs one read).
fn insert<T>(map: &mut HashMap<Uuid, Entry<T>>, key: Uuid, snap: i64, value: T) {
    if map.len() >= CAPACITY {
        map.clear();
    }
    map.insert(key, Entry { snap, value });
}

/// Removes `key` if it was read before change `seq`; returns what was removed.
fn drop_older<T>(map: &mut HashMap<Uuid, Entry<T>>, key: &Uuid, seq: i64) -> Option<T> {
    if map.get(key).is_some_and(|e| e.snap < seq) {
        map.remove(key).map(|e| e.value)
    } else {
        None
    }
}

#[derive(Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock, unless the cache is poisoned.
    fn live(&self) -> Option<MutexGuard<'_, Inner>> {
        Some(self.lock()).filter(|i| !i.poisoned)
    }

    /// Starts the feed at `position` (the newest change when the store opened; the cache is empty).
    pub fn start_at(&self, position: i64) {
        let mut i = self.lock();
        i.clear();
        i.applied = position;
    }

    pub fn applied(&self) -> i64 {
        self.lock().applied
    }

    pub fn license(&self, id: &Uuid) -> Option<Arc<LicenseRecord>> {
        self.live()?.licenses.get(id).map(|e| e.value.clone())
    }

    pub fn license_by_key(&self, hash: &[u8; 32]) -> Option<Arc<LicenseRecord>> {
        let i = self.live()?;
        i.by_key.get(hash).and_then(|id| i.licenses.get(id)).map(|e| e.value.clone())
    }

    pub fn activation(&self, id: &Uuid) -> Option<Arc<Activation>> {
        self.live()?.activations.get(id).map(|e| e.value.clone())
    }

    pub fn usage(&self, license_id: &Uuid) -> Option<Totals> {
        self.live()?.usage.get(license_id).map(|e| e.value.clone())
    }

    pub fn has_blocks(&self, tenant: &Uuid) -> Option<bool> {
        self.live()?.blocks.get(tenant).map(|e| e.value)
    }

    /// Runs `put` if a value read at `snap` may enter the cache (see the module docs).
    fn put_read_at(&self, snap: i64, put: impl FnOnce(&mut Inner)) {
        let mut i = self.lock();
        if !i.poisoned && i.applied <= snap {
            put(&mut i);
        }
    }

    pub fn put_has_blocks(&self, snap: i64, tenant: Uuid, any: bool) {
        self.put_read_at(snap, |i| insert(&mut i.blocks, tenant, snap, any));
    }

    pub fn put_license(&self, snap: i64, rec: Arc<LicenseRecord>) {
        self.put_read_at(snap, |i| {
            if i.licenses.len() >= CAPACITY {
                i.by_key.clear();
            }
            let id = rec.license.id;
            if let Some(old) = i.licenses.get(&id) {
                let old_key = old.value.key_hash;
                i.by_key.remove(&old_key);
            }
            i.by_key.insert(rec.key_hash, id);
            insert(&mut i.licenses, id, snap, rec);
        });
    }

    pub fn put_activation(&self, snap: i64, a: Arc<Activation>) {
        self.put_read_at(snap, |i| insert(&mut i.activations, a.id, snap, a));
    }

    pub fn put_usage(&self, snap: i64, license_id: Uuid, totals: Totals) {
        self.put_read_at(snap, |i| insert(&mut i.usage, license_id, snap, totals));
    }

    /// Applies feed rows (in order of `seq`). `floor` is the oldest row still in the feed: when rows this cache has
    /// not applied were pruned, it cannot know what changed and starts over empty.
    pub fn apply(&self, floor: Option<i64>, rows: &[(i64, Kind, Uuid)]) {
        let mut i = self.lock();
        if floor.is_some_and(|f| f > i.applied + 1) {
            i.clear();
        }
        for &(seq, kind, id) in rows {
            if seq <= i.applied {
                continue;
            }
            match kind {
                Kind::License => i.drop_license(&id, seq),
                Kind::Activation => {
                    drop_older(&mut i.activations, &id, seq);
                }
                Kind::Usage => {
                    drop_older(&mut i.usage, &id, seq);
                }
                Kind::Blocks => {
                    drop_older(&mut i.blocks, &id, seq);
                }
                Kind::Unknown => i.clear(),
            }
            i.applied = seq;
        }
        i.poisoned = false;
    }

    /// The feed could not be read: forget everything and serve nothing until an apply succeeds.
    pub fn poison(&self) {
        let mut i = self.lock();
        i.clear();
        i.poisoned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(id: Uuid) -> Arc<Activation> {
        Arc::new(Activation {
            id,
            tenant_id: Uuid::nil(),
            license_id: Uuid::nil(),
            device_public_key: vec![],
            fingerprint: tessera_core::fingerprint::Fingerprint::new(vec![]),
            metadata: serde_json::Value::Null,
            status: crate::store::ActivationStatus::Active,
            offline: false,
            floating: false,
            created_at: chrono::Utc::now(),
            last_seen_at: chrono::Utc::now(),
            lease_expires_at: None,
            deactivated_at: None,
            deactivation_reason: None,
            seat_held_until: None,
            seats: 1,
            user_id: None,
        })
    }

    #[test]
    fn a_change_drops_entries_read_before_it_only() {
        let c = Cache::default();
        c.start_at(10);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        c.put_activation(10, activation(a));
        c.put_activation(12, activation(b)); // read after change 12 committed
        c.apply(None, &[(11, Kind::Activation, a), (12, Kind::Activation, b)]);
        assert!(c.activation(&a).is_none(), "read at 10, changed at 11: stale");
        assert!(c.activation(&b).is_some(), "read at 12 already saw change 12");
        assert_eq!(c.applied(), 12);
    }

    #[test]
    fn a_read_older_than_the_applied_feed_is_not_cached() {
        let c = Cache::default();
        c.start_at(10);
        let a = Uuid::new_v4();
        // The change was applied while the read (at 10) was in flight: the read may have missed it.
        c.apply(None, &[(11, Kind::Activation, a)]);
        c.put_activation(10, activation(a));
        assert!(c.activation(&a).is_none());
        c.put_activation(11, activation(a));
        assert!(c.activation(&a).is_some());
    }

    #[test]
    fn a_pruned_gap_empties_the_cache() {
        let c = Cache::default();
        c.start_at(10);
        let a = Uuid::new_v4();
        c.put_activation(10, activation(a));
        c.apply(Some(11), &[]);
        assert!(c.activation(&a).is_some(), "no gap: 11 is the next row");
        c.apply(Some(50), &[(50, Kind::Usage, Uuid::new_v4())]);
        assert!(c.activation(&a).is_none(), "rows 11..49 were pruned unseen");
        assert_eq!(c.applied(), 50);
    }

    #[test]
    fn a_poisoned_cache_serves_and_stores_nothing_until_an_apply_succeeds() {
        let c = Cache::default();
        c.start_at(10);
        let a = Uuid::new_v4();
        c.put_activation(10, activation(a));
        c.poison();
        assert!(c.activation(&a).is_none());
        c.put_activation(10, activation(a));
        assert!(c.activation(&a).is_none(), "a read from before the failure is not stored");
        c.apply(None, &[]);
        c.put_activation(10, activation(a));
        assert!(c.activation(&a).is_some());
    }
}
