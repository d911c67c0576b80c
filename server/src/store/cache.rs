//! The read cache in front of any backend: licenses (by id and by key hash), activations, usage totals and
//! whether a tenant has device blocks, kept exact by following the backend's change feed ([`ChangeFeed`]).
//!
//! A backend that offers the cache must keep a change feed: every committed change to a cached record, from any
//! process, appends `(seq, kind, id)` in commit order (SQLite: triggers, `migrations/sqlite/0004_change_feed.sql`,
//! so no write path can forget). The backend applies the feed after each of its own commits, before it answers
//! the writer ([`Cache::catch_up`]), so a process reads its own writes; a [`Follower`] applies everyone else's
//! within a fraction of a second.
//!
//! A value read from the backend carries the feed position of its read snapshot (`snap`). It may enter the cache
//! only while the feed applied so far does not go past `snap`: otherwise a change it did not see may already have
//! been applied (and found nothing to drop). A change `seq` drops an entry read before it (`snap < seq`).
//!
//! The cache is bounded per map: when a map is full the entry used least recently is evicted, one at a time
//! (quick_cache's CLOCK-Pro), so a full cache never empties at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use uuid::Uuid;

use super::{Activation, LicenseRecord, StoreError};

/// Entries per map; beyond it the least valuable entry is evicted (a miss costs one read).
const CAPACITY: usize = 200_000;
/// Feed rows read per round.
const FEED_BATCH: u32 = 4096;

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

/// One row of the change feed: change `seq` touched the record `id` of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: Kind,
    pub id: Uuid,
}

/// One read of the change feed, from one snapshot (so that a prune in between cannot hide a gap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedRead {
    /// The oldest position still kept (`None`: the feed is empty).
    pub floor: Option<i64>,
    /// Rows after the position asked for, in order of `seq`.
    pub rows: Vec<Change>,
}

/// What a backend provides for the cache to follow it (see the module docs). Blocking: it is called from the
/// backend's writer after a commit and from a [`Follower`]'s own thread.
pub trait ChangeFeed {
    /// The newest position (0 for an empty feed).
    fn head(&self) -> Result<i64, StoreError>;
    /// At most `limit` rows after `after`, with the floor, read in one snapshot.
    fn changes_after(&self, after: i64, limit: u32) -> Result<FeedRead, StoreError>;
}

/// Running usage totals of a license, per feature.
pub type Totals = Arc<Vec<(String, i64)>>;

#[derive(Clone)]
struct Entry<T> {
    snap: i64,
    value: T,
}

type Map<K, T> = quick_cache::unsync::Cache<K, Entry<T>>;

struct Inner {
    /// The feed position applied so far.
    applied: i64,
    /// Set when the feed could not be read: nothing is served or stored until an apply succeeds.
    poisoned: bool,
    licenses: Map<Uuid, Arc<LicenseRecord>>,
    /// Key hash to license id; an id whose license was evicted is a miss like any other.
    by_key: quick_cache::unsync::Cache<[u8; 32], Uuid>,
    activations: Map<Uuid, Arc<Activation>>,
    usage: Map<Uuid, Totals>,
    /// Per tenant: whether it has any device block.
    blocks: Map<Uuid, bool>,
}

impl Inner {
    fn new(capacity: usize) -> Inner {
        Inner {
            applied: 0,
            poisoned: false,
            licenses: Map::new(capacity),
            by_key: quick_cache::unsync::Cache::new(capacity),
            activations: Map::new(capacity),
            usage: Map::new(capacity),
            blocks: Map::new(capacity),
        }
    }

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

/// Removes `key` if it was read before change `seq`; returns what was removed.
fn drop_older<T: Clone>(map: &mut Map<Uuid, T>, key: &Uuid, seq: i64) -> Option<T> {
    map.remove_if(key, |e| e.snap < seq).map(|(_, e)| e.value)
}

/// The cache (see the module docs). Hits and misses are counted in the metrics (`tessera_cache_lookups_total`).
pub struct Cache {
    inner: Mutex<Inner>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::with_capacity(CAPACITY)
    }
}

impl Cache {
    /// A cache holding at most `capacity` entries per kind.
    pub fn with_capacity(capacity: usize) -> Cache {
        Cache { inner: Mutex::new(Inner::new(capacity.max(1))) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads under the lock unless the cache is poisoned, counting the hit or miss.
    fn lookup<T>(&self, f: impl FnOnce(&Inner) -> Option<T>) -> Option<T> {
        let found = {
            let i = self.lock();
            if i.poisoned {
                None
            } else {
                f(&i)
            }
        };
        crate::metrics::METRICS.cache_lookup(found.is_some());
        found
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
        self.lookup(|i| i.licenses.get(id).map(|e| e.value.clone()))
    }

    pub fn license_by_key(&self, hash: &[u8; 32]) -> Option<Arc<LicenseRecord>> {
        // The index may outlive a license evicted and re-read since under another key: only a record that still
        // has this key answers for it.
        self.lookup(|i| {
            i.by_key
                .get(hash)
                .and_then(|id| i.licenses.get(id))
                .filter(|e| e.value.key_hash == *hash)
                .map(|e| e.value.clone())
        })
    }

    pub fn activation(&self, id: &Uuid) -> Option<Arc<Activation>> {
        self.lookup(|i| i.activations.get(id).map(|e| e.value.clone()))
    }

    pub fn usage(&self, license_id: &Uuid) -> Option<Totals> {
        self.lookup(|i| i.usage.get(license_id).map(|e| e.value.clone()))
    }

    pub fn has_blocks(&self, tenant: &Uuid) -> Option<bool> {
        self.lookup(|i| i.blocks.get(tenant).map(|e| e.value))
    }

    /// Runs `put` if a value read at `snap` may enter the cache (see the module docs).
    fn put_read_at(&self, snap: i64, put: impl FnOnce(&mut Inner)) {
        let mut i = self.lock();
        if !i.poisoned && i.applied <= snap {
            put(&mut i);
        }
    }

    pub fn put_has_blocks(&self, snap: i64, tenant: Uuid, any: bool) {
        self.put_read_at(snap, |i| i.blocks.insert(tenant, Entry { snap, value: any }));
    }

    pub fn put_license(&self, snap: i64, rec: Arc<LicenseRecord>) {
        self.put_read_at(snap, |i| {
            let id = rec.license.id;
            if let Some(old_key) = i.licenses.peek(&id).map(|old| old.value.key_hash) {
                i.by_key.remove(&old_key);
            }
            i.by_key.insert(rec.key_hash, id);
            i.licenses.insert(id, Entry { snap, value: rec });
        });
    }

    pub fn put_activation(&self, snap: i64, a: Arc<Activation>) {
        self.put_read_at(snap, |i| i.activations.insert(a.id, Entry { snap, value: a }));
    }

    pub fn put_usage(&self, snap: i64, license_id: Uuid, totals: Totals) {
        self.put_read_at(snap, |i| i.usage.insert(license_id, Entry { snap, value: totals }));
    }

    /// Applies feed rows (in order of `seq`). `floor` is the oldest row still in the feed: when rows this cache has
    /// not applied were pruned, it cannot know what changed and starts over empty.
    pub fn apply(&self, floor: Option<i64>, rows: &[Change]) {
        let mut i = self.lock();
        if floor.is_some_and(|f| f > i.applied + 1) {
            i.clear();
        }
        for c in rows {
            if c.seq <= i.applied {
                continue;
            }
            match c.kind {
                Kind::License => i.drop_license(&c.id, c.seq),
                Kind::Activation => {
                    drop_older(&mut i.activations, &c.id, c.seq);
                }
                Kind::Usage => {
                    drop_older(&mut i.usage, &c.id, c.seq);
                }
                Kind::Blocks => {
                    drop_older(&mut i.blocks, &c.id, c.seq);
                }
                Kind::Unknown => i.clear(),
            }
            i.applied = c.seq;
        }
        i.poisoned = false;
    }

    /// Applies everything the feed holds after the applied position. On failure the cache is poisoned (reads go
    /// to the backend) until a later catch-up succeeds.
    pub fn catch_up(&self, feed: &dyn ChangeFeed) -> Result<(), StoreError> {
        let r = (|| loop {
            let read = feed.changes_after(self.applied(), FEED_BATCH)?;
            let full = read.rows.len() >= FEED_BATCH as usize;
            self.apply(read.floor, &read.rows);
            if !full {
                return Ok(());
            }
        })();
        if r.is_err() {
            self.poison();
        }
        r
    }

    /// The feed could not be read: forget everything and serve nothing until an apply succeeds.
    pub fn poison(&self) {
        let mut i = self.lock();
        i.clear();
        i.poisoned = true;
    }
}

/// Applies other writers' changes to a cache every `every`, on its own thread, until dropped. While the feed
/// cannot be read, the cache is poisoned (reads bypass it) and the feed is connected again on the next round.
pub struct Follower {
    _stop: std::sync::mpsc::Sender<()>,
}

impl Follower {
    /// `connect` opens the feed (again after a failure).
    pub fn spawn<F: ChangeFeed>(
        name: &str,
        cache: Arc<Cache>,
        every: Duration,
        mut connect: impl FnMut() -> Result<F, StoreError> + Send + 'static,
    ) -> Result<Follower, StoreError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut feed: Option<F> = None;
                let mut failing = false;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let result = match &feed {
                        Some(f) => cache.catch_up(f),
                        None => connect().and_then(|f| cache.catch_up(&f).map(|()| feed = Some(f))),
                    };
                    match result {
                        Ok(()) => failing = false,
                        Err(e) => {
                            cache.poison();
                            feed = None;
                            if !failing {
                                tracing::warn!(error = %e, "reading the change feed failed; reads bypass the cache until it works");
                            }
                            failing = true;
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Db(format!("cannot start the change-feed follower: {e}")))?;
        Ok(Follower { _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64, kind: Kind, id: Uuid) -> Change {
        Change { seq, kind, id }
    }

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
        c.apply(None, &[change(11, Kind::Activation, a), change(12, Kind::Activation, b)]);
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
        c.apply(None, &[change(11, Kind::Activation, a)]);
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
        c.apply(Some(50), &[change(50, Kind::Usage, Uuid::new_v4())]);
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

    /// A feed kept in memory, as a backend would keep it; `fail` makes reads fail.
    #[derive(Default)]
    struct MemFeed {
        rows: Vec<Change>,
        floor: Option<i64>,
        fail: bool,
    }

    impl ChangeFeed for MemFeed {
        fn head(&self) -> Result<i64, StoreError> {
            Ok(self.rows.last().map_or(0, |c| c.seq))
        }
        fn changes_after(&self, after: i64, limit: u32) -> Result<FeedRead, StoreError> {
            if self.fail {
                return Err(StoreError::Db("the feed is unreachable".into()));
            }
            let rows = self.rows.iter().filter(|c| c.seq > after).take(limit as usize).copied().collect();
            Ok(FeedRead { floor: self.floor.or(self.rows.first().map(|c| c.seq)), rows })
        }
    }

    #[test]
    fn catch_up_applies_the_whole_feed_in_rounds_and_a_failing_feed_poisons() {
        let c = Cache::default();
        c.start_at(0);
        let a = Uuid::new_v4();
        c.put_activation(0, activation(a));
        // More rows than one round reads, the change to `a` in the last round.
        let mut feed = MemFeed::default();
        let n = FEED_BATCH as i64 * 2 + 5;
        feed.rows = (1..n).map(|seq| change(seq, Kind::Usage, Uuid::new_v4())).collect();
        feed.rows.push(change(n, Kind::Activation, a));
        c.catch_up(&feed).unwrap();
        assert_eq!(c.applied(), n);
        assert!(c.activation(&a).is_none(), "the change in the last round dropped the entry");
        c.put_activation(n, activation(a));
        assert!(c.activation(&a).is_some());
        feed.fail = true;
        assert!(c.catch_up(&feed).is_err());
        assert!(c.activation(&a).is_none(), "a cache that cannot follow its feed serves nothing");
        feed.fail = false;
        c.catch_up(&feed).unwrap();
        c.put_activation(n, activation(a));
        assert!(c.activation(&a).is_some(), "served again once the feed is read");
    }

    #[test]
    fn a_full_cache_evicts_entries_one_at_a_time_not_all_at_once() {
        let c = Cache::with_capacity(100);
        c.start_at(0);
        let ids: Vec<Uuid> = (0..150).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            c.put_activation(0, activation(*id));
        }
        let kept = ids.iter().filter(|id| c.activation(id).is_some()).count();
        assert!((80..=100).contains(&kept), "kept {kept} of 150 in a cache of 100");
        assert!(c.activation(ids.last().unwrap()).is_some(), "the newest entry is in");
    }

    fn license_with_key(id: Uuid, key: u8) -> Arc<LicenseRecord> {
        let now = chrono::Utc::now();
        let license: tessera_core::License = serde_json::from_value(serde_json::json!({
            "id": id, "tenant_id": Uuid::nil(), "product_id": Uuid::nil(), "license_type": "PERPETUAL",
            "license_model": "PER_DEVICE", "status": "ACTIVE", "max_activations": 1, "issued_at": now,
            "starts_at": now, "features": [], "restrictions": [], "heartbeat_interval_secs": 60, "lease_secs": 3600,
            "fingerprint_policy": tessera_core::fingerprint::MatchPolicy::default(), "metadata": {}
        }))
        .unwrap();
        Arc::new(LicenseRecord {
            license,
            key_hash: [key; 32],
            key_hint: [key; 6],
            policy: Default::default(),
            expiring_notice_for: None,
            created_at: now,
            updated_at: now,
        })
    }

    #[test]
    fn an_old_key_does_not_find_a_license_evicted_and_cached_again_under_a_new_one() {
        let c = Cache::default();
        c.start_at(0);
        let id = Uuid::new_v4();
        c.put_license(0, license_with_key(id, 1));
        assert!(c.license_by_key(&[1; 32]).is_some());
        // Evicted from the licenses map while its key index entry stays (the two maps evict apart) ...
        c.lock().licenses.remove(&id);
        // ... then read again after its key changed.
        c.put_license(0, license_with_key(id, 2));
        assert!(c.license_by_key(&[2; 32]).is_some());
        assert!(c.license_by_key(&[1; 32]).is_none(), "the old key no longer opens the license");
    }
}
