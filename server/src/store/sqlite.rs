//! SQLite implementation of [`Store`]: WAL, `synchronous=FULL` by default, a pool of read connections used from
//! `spawn_blocking`, and ONE writer thread that group-commits whatever write requests are queued: one
//! transaction per batch, a savepoint per request (a failing request is rolled back alone), one fsync per batch,
//! and every request answered only after its batch committed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::cache::{Cache, Kind};
use super::*;
use crate::time::{parse as parse_time, ts};

/// Migrations, in order. The schema version is `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_activation_lookup.sql"),
    include_str!("../../../migrations/sqlite/0003_audit_head.sql"),
    include_str!("../../../migrations/sqlite/0004_change_feed.sql"),
    include_str!("../../../migrations/sqlite/0005_usage_scope.sql"),
    include_str!("../../../migrations/sqlite/0006_offline_release.sql"),
    include_str!("../../../migrations/sqlite/0007_seat_units.sql"),
];
/// How often other processes' changes are picked up from the change feed.
const FEED_POLL: Duration = Duration::from_millis(200);
/// How often committed WAL frames are copied back to the database (beside the writer, never blocking it).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
const MAX_BATCH: usize = 1024;

/// `PRAGMA synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
    Off,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Done) + Send>;

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// At most `max_idle` reads run at once, so connections are reused instead of opened (and their schema
    /// parsed) per read under load; further reads wait their turn.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let popped = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match popped {
            Some(c) => Ok(c),
            None => open_reader(&self.path),
        }
    }

    fn give(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }
}

pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: std::sync::Arc<ReadPool>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    cache: Arc<Cache>,
    /// Dropping it stops the feed poller.
    _stop_poller: std::sync::mpsc::Sender<()>,
    /// Dropping it stops the checkpointer.
    _stop_checkpointer: std::sync::mpsc::Sender<()>,
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

/// Schema version this binary knows.
pub fn known_schema_version() -> usize {
    MIGRATIONS.len()
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies migrations, starts the writer thread.
    pub fn open(path: &Path, sync: Synchronous, readers: usize) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", sync.pragma())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every write request runs in its own savepoint: keep their statement journals in memory, not temp files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Checkpoints run beside the writer (their own thread, PASSIVE: they never block a commit); the writer
        // checkpoints itself only as a safety net if the WAL grows past ~80 MB.
        conn.pragma_update(None, "wal_autocheckpoint", 20_000)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::Schema(format!(
                "the database {} has schema version {version}, newer than this tessera-server knows ({}): \
                 run a newer tessera-server, or restore a backup made with this version",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        let migrations =
            rusqlite_migration::Migrations::new(MIGRATIONS.iter().map(|m| rusqlite_migration::M::up(m)).collect());
        migrations.to_latest(&mut conn).map_err(|e| StoreError::Schema(format!("applying migrations failed: {e}")))?;
        conn.set_prepared_statement_cache_capacity(64);

        let cache = Arc::new(Cache::default());
        cache.start_at(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))?);
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let writer_cache = cache.clone();
        let handle = std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &writer_cache))
            .map_err(|e| StoreError::Db(format!("cannot start the writer thread: {e}")))?;
        let (stop_poller, stopped) = std::sync::mpsc::channel::<()>();
        let (poll_cache, poll_path) = (cache.clone(), path.to_path_buf());
        std::thread::Builder::new()
            .name("tessera-sqlite-feed".into())
            .spawn(move || feed_poller(&poll_path, &poll_cache, &stopped))
            .map_err(|e| StoreError::Db(format!("cannot start the change-feed poller: {e}")))?;
        let (stop_checkpointer, stopped) = std::sync::mpsc::channel::<()>();
        let cp_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("tessera-sqlite-checkpoint".into())
            .spawn(move || checkpointer(&cp_path, sync, &stopped))
            .map_err(|e| StoreError::Db(format!("cannot start the WAL checkpointer: {e}")))?;
        Ok(SqliteStore {
            writer: tx,
            readers: std::sync::Arc::new(ReadPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
                max_idle: readers.max(1),
                permits: std::sync::Arc::new(tokio::sync::Semaphore::new(readers.max(1))),
            }),
            writer_thread: Mutex::new(Some(handle)),
            cache,
            _stop_poller: stop_poller,
            _stop_checkpointer: stop_checkpointer,
        })
    }

    /// Stops accepting writes and waits for the writer thread to finish the queue.
    pub fn close(&self) {
        let handle = self.writer_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The thread ends when every sender is gone; callers drop the store after this.
        drop(handle);
    }

    fn read<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.readers.clone();
        Box::pin(async move {
            let started = Instant::now();
            let permit = pool.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
            let r = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let c = pool.take()?;
                let r = f(&c);
                pool.give(c);
                r
            })
            .await
            .map_err(|e| StoreError::Db(format!("read task failed: {e}")))?;
            crate::metrics::METRICS.store_op("read", started.elapsed());
            r
        })
    }

    fn write<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        // The request this write belongs to (see `writes`): an abandoned request queues nothing, and the writer
        // skips a queued job whose request was abandoned before the job started.
        let request = super::writes::current();
        if request.as_ref().is_some_and(|r| r.is_abandoned()) {
            return Box::pin(std::future::ready(Err(StoreError::Abandoned)));
        }
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn| match conn {
            None => (
                false,
                Box::new(move |_| {
                    let _ = tx.send(Err(StoreError::Busy));
                }),
            ),
            Some(_) if request.as_ref().is_some_and(|r| !r.begin()) => {
                crate::metrics::METRICS.store_op("write_abandoned", Duration::ZERO);
                (
                    false,
                    Box::new(move |_| {
                        let _ = tx.send(Err(StoreError::Abandoned));
                    }),
                )
            }
            Some(c) => {
                let r = f(c);
                let ok = r.is_ok();
                (
                    ok,
                    Box::new(move |commit: Result<(), StoreError>| {
                        let _ = tx.send(commit.and(r));
                    }),
                )
            }
        });
        let sender = self.writer.clone();
        Box::pin(async move {
            let started = Instant::now();
            sender.send(job).await.map_err(|_| StoreError::Closed)?;
            let r = rx.await.map_err(|_| StoreError::Closed)?;
            crate::metrics::METRICS.store_op("write", started.elapsed());
            r
        })
    }
}

fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

/// Runs `f` in one read transaction and returns the change-feed position that transaction saw with its result.
fn snapshot<T>(c: &Connection, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<(i64, T), StoreError> {
    exec_cached(c, "BEGIN")?;
    let r = c
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map_err(StoreError::from)
        .and_then(|snap| Ok((snap, f(c)?)));
    let _ = exec_cached(c, "COMMIT");
    r
}

fn ready<'a, T: Send + 'a>(v: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

/// Applies the change-feed rows after the cache's position (see `cache`).
fn apply_feed(c: &Connection, cache: &Cache) -> Result<(), StoreError> {
    loop {
        let after = cache.applied();
        // The floor and the rows from one snapshot, so a prune in between cannot hide a gap.
        exec_cached(c, "BEGIN")?;
        let read = (|| -> Result<_, StoreError> {
            let floor: Option<i64> = c.prepare_cached("SELECT MIN(seq) FROM changes")?.query_row([], |r| r.get(0))?;
            let rows = c
                .prepare_cached("SELECT seq, kind, id FROM changes WHERE seq > ?1 ORDER BY seq LIMIT 4096")?
                .query_map([after], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((floor, rows))
        })();
        let _ = exec_cached(c, "COMMIT");
        let (floor, rows) = read?;
        let n = rows.len();
        let parsed: Vec<(i64, Kind, Uuid)> = rows
            .into_iter()
            .map(|(seq, kind, id)| match Uuid::parse_str(&id) {
                Ok(id) => (seq, Kind::parse(&kind), id),
                Err(_) => (seq, Kind::Unknown, Uuid::nil()),
            })
            .collect();
        cache.apply(floor, &parsed);
        if n < 4096 {
            return Ok(());
        }
    }
}

/// Copies committed WAL frames back into the database every [`CHECKPOINT_EVERY`] until the store is dropped.
/// PASSIVE: copies what no reader still needs and never waits, so the writer keeps committing meanwhile. If this
/// cannot work, the writer's own threshold (~80 MB of WAL) still bounds the log.
fn checkpointer(path: &Path, sync: Synchronous, stop: &std::sync::mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let result = match &conn {
            Some(c) => c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())),
            None => Connection::open(path)
                .and_then(|c| c.pragma_update(None, "synchronous", sync.pragma()).map(|()| c))
                .and_then(|c| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map(|()| conn = Some(c))),
        };
        match result {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints past ~80 MB meanwhile");
                }
                failing = true;
                conn = None;
            }
        }
    }
}

/// Picks up other processes' changes every [`FEED_POLL`] until the store is dropped. While the feed cannot be
/// read, the cache is bypassed (poisoned) rather than trusted.
fn feed_poller(path: &Path, cache: &Cache, stop: &std::sync::mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(FEED_POLL) {
        let result = match &conn {
            Some(c) => apply_feed(c, cache),
            None => open_reader(path).and_then(|c| apply_feed(&c, cache).map(|()| conn = Some(c))),
        };
        match result {
            Ok(()) => failing = false,
            Err(e) => {
                cache.poison();
                conn = None;
                if !failing {
                    tracing::warn!(error = %e, "reading the change feed failed; reads bypass the cache until it works");
                }
                failing = true;
            }
        }
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, cache: &Cache) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut dones: Vec<Done> = Vec::with_capacity(batch.len());
        if let Err(e) = exec_cached(&conn, "BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, "could not begin a write transaction");
            for j in batch {
                let (_, d) = j(None);
                dones.push(d);
            }
            for d in dones {
                d(Err(StoreError::Busy));
            }
            continue;
        }
        let n = batch.len();
        // Set when SQLite aborted the whole transaction (disk full, I/O error): the rest of the batch must not run,
        // or it would run (and commit) outside the batch while being reported as failed.
        let mut aborted = false;
        for j in batch {
            if aborted || exec_cached(&conn, "SAVEPOINT job").is_err() {
                let (_, d) = j(None);
                dones.push(d);
                continue;
            }
            let (ok, d) = j(Some(&conn));
            if conn.is_autocommit() {
                tracing::error!("the database aborted the batch transaction; the batch is refused");
                aborted = true;
                dones.push(d);
                continue;
            }
            let end =
                if ok { conn.execute_batch("RELEASE job") } else { conn.execute_batch("ROLLBACK TO job; RELEASE job") };
            if let Err(e) = end {
                tracing::error!(error = %e, "savepoint handling failed");
            }
            dones.push(d);
        }
        let result = exec_cached(&conn, "COMMIT").map(|_| ()).map_err(StoreError::from);
        if let Err(e) = &result {
            tracing::error!(error = %e, "commit failed; the batch is rolled back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Before anyone hears of the commit, so this process reads its own writes.
        if let Err(e) = apply_feed(&conn, cache) {
            tracing::warn!(error = %e, "reading the change feed failed; reads bypass the cache until it works");
            cache.poison();
        }
        crate::metrics::METRICS.store_batch(n, started.elapsed());
        for d in dones {
            d(result.clone());
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Row helpers

fn conv(i: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, msg.into())
}

fn g_uuid(r: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let s: String = r.get(i)?;
    Uuid::parse_str(&s).map_err(|e| conv(i, format!("bad uuid {s:?}: {e}")))
}

fn g_opt_uuid(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| conv(i, format!("bad uuid {s:?}: {e}")))).transpose()
}

fn g_time(r: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = r.get(i)?;
    parse_time(&s).ok_or_else(|| conv(i, format!("bad time {s:?}")))
}

fn g_opt_time(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| parse_time(&s).ok_or_else(|| conv(i, format!("bad time {s:?}")))).transpose()
}

fn g_json<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| conv(i, format!("bad JSON: {e}")))
}

fn g_arr<const N: usize>(r: &Row<'_>, i: usize) -> rusqlite::Result<[u8; N]> {
    let v: Vec<u8> = r.get(i)?;
    v.try_into().map_err(|_| conv(i, format!("expected {N} bytes")))
}

fn s_uuid(u: Option<Uuid>) -> Option<String> {
    u.map(|u| u.to_string())
}

fn s_time(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

fn json(v: &impl serde::Serialize) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

fn paginate<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| id(t).to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

fn append_audit_tx(c: &Connection, e: &NewAudit) -> Result<(), StoreError> {
    append_audits_tx(c, std::slice::from_ref(e))
}

/// Appends entries to the hash chain: one read of the newest row, one insert per entry, one head update.
fn append_audits_tx(c: &Connection, entries: &[NewAudit]) -> Result<(), StoreError> {
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

fn with_outcome(mut a: NewAudit, outcome: &str) -> NewAudit {
    a.outcome = outcome.to_string();
    a
}

/// Why an activation ended when the same machine activated again with a new device key.
pub const REPLACED_REASON: &str = "replaced by a new device key";
/// Why an offline activation ended when its device key renewed from a machine with another fingerprint.
pub const SUPERSEDED_REASON: &str = "superseded: the device key renewed its offline grant from another machine";

const TENANT_COLS: &str = "id, name, created_at";
fn row_tenant(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant { id: g_uuid(r, 0)?, name: r.get(1)?, created_at: g_time(r, 2)? })
}

const TOKEN_COLS: &str = "id, tenant_id, name, role, prefix, created_at, revoked_at, token_hash";
fn row_token(r: &Row<'_>) -> rusqlite::Result<ApiToken> {
    let role: String = r.get(3)?;
    Ok(ApiToken {
        id: g_uuid(r, 0)?,
        tenant_id: g_opt_uuid(r, 1)?,
        name: r.get(2)?,
        role: Role::parse(&role).ok_or_else(|| conv(3, format!("unknown role {role:?}")))?,
        prefix: r.get(4)?,
        created_at: g_time(r, 5)?,
        revoked_at: g_opt_time(r, 6)?,
    })
}

const CUSTOMER_COLS: &str = "id, tenant_id, name, email, metadata, created_at, updated_at";
fn row_customer(r: &Row<'_>) -> rusqlite::Result<Customer> {
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

const PRODUCT_COLS: &str = "id, tenant_id, name, code, metadata, created_at, updated_at";
fn row_product(r: &Row<'_>) -> rusqlite::Result<Product> {
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

const TEMPLATE_COLS: &str = "body, created_at, updated_at";
fn row_template(r: &Row<'_>) -> rusqlite::Result<TemplateRecord> {
    Ok(TemplateRecord { template: g_json(r, 0)?, created_at: g_time(r, 1)?, updated_at: g_time(r, 2)? })
}

const LICENSE_COLS: &str = "body, key_hash, key_hint, policy, expiring_notice_for, created_at, updated_at";
fn row_license(r: &Row<'_>) -> rusqlite::Result<LicenseRecord> {
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

const ACTIVATION_COLS: &str = "id, tenant_id, license_id, device_public_key, fingerprint, metadata, status, \
     offline, floating, created_at, last_seen_at, lease_expires_at, deactivated_at, deactivation_reason, seat_held_until, seats, user_id";
fn row_activation(r: &Row<'_>) -> rusqlite::Result<Activation> {
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

const BLOCK_COLS: &str = "id, tenant_id, device_public_key, fingerprint_hash, reason, created_at";
fn row_block(r: &Row<'_>) -> rusqlite::Result<BlockedDevice> {
    Ok(BlockedDevice {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        device_public_key: r.get(2)?,
        fingerprint_hash: r.get(3)?,
        reason: r.get(4)?,
        created_at: g_time(r, 5)?,
    })
}

const REPORT_COLS: &str = "id, tenant_id, license_id, activation_id, kind, details, created_at";
fn row_report(r: &Row<'_>) -> rusqlite::Result<SuspiciousReport> {
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

const EMERGENCY_COLS: &str =
    "id, tenant_id, license_id, serial, reason, issued_by, issued_at, expires_at, bound_device, code";
fn row_emergency(r: &Row<'_>) -> rusqlite::Result<EmergencyRecord> {
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

const EVENT_COLS: &str = "id, tenant_id, license_id, kind, at, data";
fn row_event(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: g_uuid(r, 0)?,
        tenant_id: g_uuid(r, 1)?,
        license_id: g_opt_uuid(r, 2)?,
        kind: r.get(3)?,
        at: g_time(r, 4)?,
        data: g_json(r, 5)?,
    })
}

const AUDIT_COLS: &str = "seq, at, tenant_id, actor, action, target, ip, outcome, details, prev_hash, hash";
fn row_audit(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
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

fn scope_s(scope: Scope) -> Option<String> {
    s_uuid(scope)
}

fn list_scoped<T>(
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

fn get_scoped<T>(
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

fn insert_activation(c: &Connection, a: &Activation) -> Result<(), StoreError> {
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

fn active_where(c: &Connection, cond: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<Activation>, StoreError> {
    let sql = format!("SELECT {ACTIVATION_COLS} FROM activations WHERE status = 'ACTIVE' AND {cond}");
    Ok(c.prepare_cached(&sql)?.query_map(p, row_activation)?.collect::<Result<Vec<_>, _>>()?)
}

/// Seats in use at `at`: active activations, plus released ones whose seat is still held (always inactive, so
/// the two never overlap), each taking its `seats`; the activations of one named user take one seat together.
/// Indexed sums rather than one OR that would scan the license.
fn count_active(c: &Connection, license_id: &str, at: DateTime<Utc>) -> Result<u32, StoreError> {
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
fn replace_with(
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
fn seats_needed(c: &Connection, a: &Activation, at: DateTime<Utc>) -> Result<u32, StoreError> {
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

fn usage_totals_tx(c: &Connection, license_id: Uuid) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(c.prepare_cached("SELECT feature, total FROM usage_totals WHERE license_id = ?1 ORDER BY feature")?
        .query_map([license_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?)
}

fn insert_event(c: &Connection, e: &Event) -> Result<(), StoreError> {
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

/// Inserts the license (`read_at` None) or replaces the version whose `updated_at` is `read_at`.
fn write_license(c: &Connection, l: &LicenseRecord, read_at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
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

impl Store for SqliteStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn create_tenant(&self, t: Tenant, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)")?.execute(params![
                t.id.to_string(),
                t.name,
                ts(t.created_at)
            ])?;
            append_audit_tx(c, &audit)
        })
    }

    fn get_tenant(&self, id: Uuid) -> StoreFuture<'_, Tenant> {
        self.read(move |c| {
            let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1");
            Ok(c.prepare_cached(&sql)?.query_row([id.to_string()], row_tenant)?)
        })
    }

    fn list_tenants(&self, page: PageRequest) -> StoreFuture<'_, Page<Tenant>> {
        self.read(move |c| {
            let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2");
            let items = c
                .prepare_cached(&sql)?
                .query_map(params![s_uuid(page.after), i64::from(page.limit) + 1], row_tenant)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(paginate(items, page.limit, |t| t.id))
        })
    }

    fn create_token(&self, t: ApiToken, hash: [u8; 32], audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.prepare_cached(&format!("INSERT INTO api_tokens ({TOKEN_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"))?
                .execute(params![
                    t.id.to_string(),
                    s_uuid(t.tenant_id),
                    t.name,
                    t.role.as_str(),
                    t.prefix,
                    ts(t.created_at),
                    s_time(t.revoked_at),
                    hash.to_vec()
                ])?;
            append_audit_tx(c, &audit)
        })
    }

    fn find_token(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<(ApiToken, [u8; 32])>> {
        self.read(move |c| {
            let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE token_hash = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([hash.to_vec()], |r| Ok((row_token(r)?, g_arr::<32>(r, 7)?)))
                .optional()?)
        })
    }

    fn list_tokens(&self, scope: Scope) -> StoreFuture<'_, Vec<ApiToken>> {
        self.read(move |c| {
            let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY id");
            Ok(c.prepare_cached(&sql)?.query_map([scope_s(scope)], row_token)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn revoke_token(&self, scope: Scope, id: Uuid, at: DateTime<Utc>, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?3)
                     WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)",
                )?
                .execute(params![id.to_string(), scope_s(scope), ts(at)])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }

    fn count_tokens(&self) -> StoreFuture<'_, u64> {
        self.read(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    fn put_customer(&self, x: Customer, create: bool, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let p = params![
                x.id.to_string(),
                x.tenant_id.to_string(),
                x.name,
                x.email,
                json(&x.metadata)?,
                ts(x.created_at),
                ts(x.updated_at)
            ];
            if create {
                c.prepare_cached(&format!("INSERT INTO customers ({CUSTOMER_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"))?
                    .execute(p)?;
            } else if c
                .prepare_cached(
                    "UPDATE customers SET name = ?3, email = ?4, metadata = ?5, created_at = ?6, updated_at = ?7
                     WHERE id = ?1 AND tenant_id = ?2",
                )?
                .execute(p)?
                == 0
            {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }

    fn get_customer(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Customer> {
        self.read(move |c| get_scoped(c, "customers", CUSTOMER_COLS, scope, id, row_customer))
    }

    fn list_customers(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Customer>> {
        self.read(move |c| list_scoped(c, "customers", CUSTOMER_COLS, scope, page, row_customer, |x| x.id))
    }

    fn put_product(&self, x: Product, create: bool, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let p = params![
                x.id.to_string(),
                x.tenant_id.to_string(),
                x.name,
                x.code,
                json(&x.metadata)?,
                ts(x.created_at),
                ts(x.updated_at)
            ];
            if create {
                c.prepare_cached(&format!("INSERT INTO products ({PRODUCT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"))?
                    .execute(p)?;
            } else if c
                .prepare_cached(
                    "UPDATE products SET name = ?3, code = ?4, metadata = ?5, created_at = ?6, updated_at = ?7
                     WHERE id = ?1 AND tenant_id = ?2",
                )?
                .execute(p)?
                == 0
            {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }

    fn get_product(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Product> {
        self.read(move |c| get_scoped(c, "products", PRODUCT_COLS, scope, id, row_product))
    }

    fn list_products(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Product>> {
        self.read(move |c| list_scoped(c, "products", PRODUCT_COLS, scope, page, row_product, |x| x.id))
    }

    fn put_template(&self, t: TemplateRecord, create: bool, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let tpl = &t.template;
            let p = params![
                tpl.id.to_string(),
                tpl.tenant_id.to_string(),
                tpl.product_id.to_string(),
                tpl.name,
                json(tpl)?,
                ts(t.created_at),
                ts(t.updated_at)
            ];
            if create {
                c.prepare_cached(
                    "INSERT INTO templates (id, tenant_id, product_id, name, body, created_at, updated_at)
                     VALUES (?1,?2,?3,?4,?5,?6,?7)",
                )?
                .execute(p)?;
            } else if c
                .prepare_cached(
                    "UPDATE templates SET product_id = ?3, name = ?4, body = ?5, created_at = ?6, updated_at = ?7
                     WHERE id = ?1 AND tenant_id = ?2",
                )?
                .execute(p)?
                == 0
            {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }

    fn get_template(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, TemplateRecord> {
        self.read(move |c| get_scoped(c, "templates", TEMPLATE_COLS, scope, id, row_template))
    }

    fn list_templates(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<TemplateRecord>> {
        self.read(move |c| list_scoped(c, "templates", TEMPLATE_COLS, scope, page, row_template, |x| x.template.id))
    }

    fn delete_template(&self, scope: Scope, id: Uuid, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM templates WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")?
                .execute(params![id.to_string(), scope_s(scope)])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }

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
                // The same device key from another machine: the grant it holds keeps its seat until its lease
                // ends, so the new one needs a free seat of its own; nothing is written if there is none.
                let now = op.new.created_at;
                let held_until = old.lease_expires_at.unwrap_or_else(super::hold_forever);
                let seats = count_active(c, &lic, now)?;
                let after = if held_until > now { seats } else { seats.saturating_sub(1) };
                if op.max_seats > 0 && after.saturating_add(op.new.seats) > op.max_seats {
                    append_audit_tx(c, &with_outcome(op.audit, "SEAT_LIMIT_REACHED"))?;
                    return Ok(ActivateOutcome::SeatLimit { seats_used: seats });
                }
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
                let mut ins = c.prepare_cached(
                    "INSERT OR IGNORE INTO usage_events (id, activation_id, license_id, feature, amount, recorded_at,
                     received_at) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                )?;
                let mut add = c.prepare_cached(
                    "INSERT INTO usage_totals (license_id, feature, total) VALUES (?1, ?2, ?3)
                     ON CONFLICT (license_id, feature)
                     DO UPDATE SET total = CASE WHEN total > 9223372036854775807 - excluded.total
                                           THEN 9223372036854775807 ELSE total + excluded.total END",
                )?;
                for u in &op.usage {
                    let inserted = ins.execute(params![
                        u.id.to_string(),
                        op.activation_id.to_string(),
                        op.license_id.to_string(),
                        u.feature,
                        u.amount,
                        ts(u.recorded_at),
                        ts(op.now)
                    ])?;
                    if inserted > 0 {
                        add.execute(params![op.license_id.to_string(), u.feature, u.amount])?;
                    }
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

    fn prune_changes(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM changes WHERE at < ?1 AND seq < (SELECT MAX(seq) FROM changes)")?
                .execute([ts(before)])?;
            Ok(n as u64)
        })
    }

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
            Ok(EmergencyOutcome::Issued(rec))
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
}
