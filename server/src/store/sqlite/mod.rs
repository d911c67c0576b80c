//! SQLite implementation of [`Store`]: WAL, `synchronous=FULL` by default, a pool of read connections used from
//! `spawn_blocking`, and ONE writer thread that group-commits whatever write requests are queued: one
//! transaction per batch, a savepoint per request (a failing request is rolled back alone), one fsync per batch,
//! and every request answered only after its batch committed.
//!
//! Files: this one opens the database and runs reads and writes; [`background`] the writer and checkpointer
//! threads; [`feed`] the change feed the cache follows; [`rows`] the row mapping; one file per role
//! ([`admin`], [`licenses`], [`activations`], [`usage`], [`security`], [`audit`]). Nothing SQLite-specific
//! leaves this module.

mod activations;
mod admin;
mod audit;
mod background;
mod catalog;
mod feed;
mod licenses;
mod rows;
mod security;
mod subscriptions;
mod usage;

pub use rows::{REPLACED_REASON, SUPERSEDED_REASON};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::cache::{Cache, ChangeFeed, Follower};
use super::*;
use crate::config::Durability;
use crate::metrics::{Waiting, METRICS};

/// Migrations, in order. The schema version is `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../../migrations/sqlite/0002_activation_lookup.sql"),
    include_str!("../../../../migrations/sqlite/0003_audit_head.sql"),
    include_str!("../../../../migrations/sqlite/0004_change_feed.sql"),
    include_str!("../../../../migrations/sqlite/0005_usage_scope.sql"),
    include_str!("../../../../migrations/sqlite/0006_offline_release.sql"),
    include_str!("../../../../migrations/sqlite/0007_seat_units.sql"),
    include_str!("../../../../migrations/sqlite/0008_usage_without_activation.sql"),
    include_str!("../../../../migrations/sqlite/0009_audit_lookup.sql"),
    include_str!("../../../../migrations/sqlite/0010_console_users.sql"),
    include_str!("../../../../migrations/sqlite/0011_plans.sql"),
    include_str!("../../../../migrations/sqlite/0012_subscriptions.sql"),
    include_str!("../../../../migrations/sqlite/0013_usage_daily.sql"),
];
/// How often other processes' changes are picked up from the change feed.
const FEED_POLL: Duration = Duration::from_millis(200);
/// How often committed WAL frames are copied back to the database (beside the writer, never blocking it).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
const MAX_BATCH: usize = 1024;

/// `PRAGMA synchronous` for a durability setting.
fn synchronous_pragma(d: Durability) -> &'static str {
    match d {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
        Durability::Off => "OFF",
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::Conflict(msg.clone().unwrap_or_else(|| e.to_string()))
                }
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => StoreError::Busy,
                _ => StoreError::Db(e.to_string()),
            },
            _ => StoreError::Db(e.to_string()),
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
    /// Applies other processes' changes to the cache; dropping it stops it.
    _follower: Follower,
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
    pub fn open(path: &Path, sync: Durability, readers: usize) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous_pragma(sync))?;
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
        cache.start_at(conn.head()?);
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let writer_cache = cache.clone();
        let handle = std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || background::writer_loop(conn, rx, &writer_cache))
            .map_err(|e| StoreError::Db(format!("cannot start the writer thread: {e}")))?;
        let feed_path = path.to_path_buf();
        let follower =
            Follower::spawn("tessera-sqlite-feed", cache.clone(), FEED_POLL, move || open_reader(&feed_path))?;
        let (stop_checkpointer, stopped) = std::sync::mpsc::channel::<()>();
        let cp_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("tessera-sqlite-checkpoint".into())
            .spawn(move || background::checkpointer(&cp_path, sync, &stopped))
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
            _follower: follower,
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
            let waiting = Waiting::new(&METRICS.reads_waiting);
            let permit = pool.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
            drop(waiting);
            let r = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let c = pool.take()?;
                let r = f(&c);
                pool.give(c);
                r
            })
            .await
            .map_err(|e| StoreError::Db(format!("read task failed: {e}")))?;
            METRICS.store_op("read", started.elapsed());
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
                METRICS.store_op("write_abandoned", Duration::ZERO);
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
            // Counted down by the writer when it takes the job.
            let queued = Waiting::new(&METRICS.write_queue);
            sender.send(job).await.map_err(|_| StoreError::Closed)?;
            queued.hand_over();
            let r = rx.await.map_err(|_| StoreError::Closed)?;
            METRICS.store_op("write", started.elapsed());
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
