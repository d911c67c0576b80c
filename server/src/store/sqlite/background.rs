//! The threads beside the request path: the one writer, which group-commits whatever write requests are queued
//! (one transaction per batch, a savepoint per request, one fsync per batch), and the WAL checkpointer.

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::{exec_cached, Done, Job, CHECKPOINT_EVERY, MAX_BATCH};
use crate::config::Durability;
use crate::store::cache::Cache;
use crate::store::StoreError;

/// Copies committed WAL frames back into the database every [`CHECKPOINT_EVERY`] until the store is dropped.
/// PASSIVE: copies what no reader still needs and never waits, so the writer keeps committing meanwhile. If this
/// cannot work, the writer's own threshold (~80 MB of WAL) still bounds the log.
pub(super) fn checkpointer(path: &Path, sync: Durability, stop: &std::sync::mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let result = match &conn {
            Some(c) => c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())),
            None => Connection::open(path)
                .and_then(|c| c.pragma_update(None, "synchronous", super::synchronous_pragma(sync)).map(|()| c))
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

pub(super) fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, cache: &Cache) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        crate::metrics::METRICS.write_queue.dec_by(batch.len() as i64);
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
        if let Err(e) = cache.catch_up(&conn) {
            tracing::warn!(error = %e, "reading the change feed failed; reads bypass the cache until it works");
        }
        crate::metrics::METRICS.store_batch(n, started.elapsed());
        for d in dones {
            d(result.clone());
        }
    }
}
