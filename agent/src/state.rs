//! The agent's one SQLite state file: device key, activation, trusted time, usage queue, pending offline
//! requests, applied emergency codes. WAL, transactions, a schema version; a newer schema is refused.
//!
//! Nothing read from here is trusted as is: signed artefacts are re-verified by the agent at every load.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use uuid::Uuid;

use crate::clock::{BootReading, TrustedTime};
use crate::error::AgentError;

/// The schema version this agent writes: the number of migrations (`PRAGMA user_version`, kept by
/// rusqlite_migration as on the server).
pub const SCHEMA_VERSION: i64 = 4;

fn migrations() -> rusqlite_migration::Migrations<'static> {
    rusqlite_migration::Migrations::new(vec![
        rusqlite_migration::M::up(SCHEMA_V1),
        rusqlite_migration::M::up(SCHEMA_V2),
        rusqlite_migration::M::up(SCHEMA_V3),
        rusqlite_migration::M::up(SCHEMA_V4),
    ])
}

const SCHEMA_V1: &str = "
CREATE TABLE device (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret_pem TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE activation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    mode TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    key_hash BLOB NOT NULL,
    activation_id TEXT,
    license_file TEXT,
    activation_token TEXT,
    request_bytes BLOB,
    response_code TEXT,
    fingerprint TEXT,
    last_response TEXT,
    heartbeat_interval_secs INTEGER,
    activated_at TEXT NOT NULL
);
CREATE TABLE clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    high_water_us INTEGER NOT NULL
);
CREATE TABLE usage_queue (
    id TEXT PRIMARY KEY,
    feature TEXT NOT NULL,
    amount INTEGER NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE usage_totals (
    feature TEXT PRIMARY KEY,
    total INTEGER NOT NULL
);
CREATE TABLE pending_requests (
    key_hash BLOB PRIMARY KEY,
    request_bytes BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    code TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE emergency (
    key_hash BLOB NOT NULL,
    serial INTEGER NOT NULL,
    code TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_hash, serial)
);
";

/// Version 2: trusted time keeps the clock readings it was last advanced from (see `clock::TrustedTime`).
const SCHEMA_V2: &str = "
ALTER TABLE clock ADD COLUMN wall_us INTEGER;
ALTER TABLE clock ADD COLUMN boot_id TEXT;
ALTER TABLE clock ADD COLUMN since_boot_us INTEGER;
";

/// Version 3: a server total keeps the server time it was reported at, which places it in a quota's period.
const SCHEMA_V3: &str = "
ALTER TABLE usage_totals ADD COLUMN as_of_us INTEGER;
";

/// Version 4: a queued event the server acknowledged but dated after the period its answer reported stays, marked
/// `acked`, until an answer covers its period (so it counts somewhere meanwhile).
const SCHEMA_V4: &str = "
ALTER TABLE usage_queue ADD COLUMN acked INTEGER NOT NULL DEFAULT 0;
";

/// The activation as stored (unverified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationRow {
    pub mode: Mode,
    pub key_hash: [u8; 32],
    pub activation_id: Option<Uuid>,
    pub license_file: Option<String>,
    pub activation_token: Option<String>,
    pub request_bytes: Option<Vec<u8>>,
    pub response_code: Option<String>,
    /// JSON of the fingerprint committed to by an offline request.
    pub fingerprint: Option<String>,
    /// The last signed heartbeat answer (compact envelope), re-verified at load.
    pub last_response: Option<String>,
    pub heartbeat_interval_secs: Option<u32>,
    pub activated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Online,
    Offline,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub key_hash: [u8; 32],
    pub request_bytes: Vec<u8>,
    pub fingerprint: String,
    pub code: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyRow {
    pub key_hash: [u8; 32],
    pub serial: u32,
    pub code: String,
    pub ended: bool,
}

/// A server total of a feature: (feature, units, the server time it was reported at).
pub type ServerTotal = (String, u64, Option<DateTime<Utc>>);

/// Queued usage is sent as it is kept.
pub use tessera_core::protocol::UsageEvent;

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn hash32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "a key hash is 32 bytes".into())
    })
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Store {
    /// Opens (creating if needed) the state file with mode 0600, WAL and the current schema.
    pub fn open(path: &Path) -> Result<Store, AgentError> {
        let io = |e: &dyn std::fmt::Display| AgentError::StateIo { path: path.to_path_buf(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        if !path.exists() {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            match o.open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&e)),
            }
        }
        restrict(path).map_err(|e| io(&e))?;
        let conn = Connection::open(path).map_err(|e| io(&e))?;
        let mut store = Store { conn, path: path.to_path_buf() };
        store.init()?;
        for s in ["-wal", "-shm"] {
            restrict(&sidecar(path, s)).map_err(|e| io(&e))?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Maps a SQLite error: a damaged file is `StateCorrupt`, the rest `StateIo`.
    pub fn err(&self, e: rusqlite::Error) -> AgentError {
        map_err(&self.path, e)
    }

    /// Sets the connection up and brings the schema to the current version. Several processes may open a new
    /// state file at once (an application starting eight workers): the version is read and the schema written
    /// inside one `BEGIN IMMEDIATE` transaction, so exactly one of them migrates and the others wait for it
    /// (busy timeout) and then see the current version.
    fn init(&mut self) -> Result<(), AgentError> {
        let path = self.path.clone();
        let m = |e| map_err(&path, e);
        self.conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(m)?;
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(m)?;
        if version > SCHEMA_VERSION {
            return Err(AgentError::StateTooNew { path, found: version, supported: SCHEMA_VERSION });
        }
        let mode = self.journal_wal().map_err(m)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "state file is not in WAL mode");
        }
        self.conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;").map_err(m)?;
        if version < SCHEMA_VERSION {
            // IMMEDIATE: openers racing on a new file migrate one after the other. The migrations read the version
            // before their transaction, so one that waited behind another opener's migration finds its tables
            // there and fails, rolled back; it then reads the version the winner wrote, which is all it needed.
            self.conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
            let migrated = migrations().to_latest(&mut self.conn);
            self.conn.set_transaction_behavior(rusqlite::TransactionBehavior::Deferred);
            if let Err(e) = migrated {
                let now: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(m)?;
                if now > SCHEMA_VERSION {
                    return Err(AgentError::StateTooNew { path, found: now, supported: SCHEMA_VERSION });
                }
                if now < SCHEMA_VERSION {
                    return Err(match e {
                        rusqlite_migration::Error::RusqliteError { err, .. } => m(err),
                        other => AgentError::StateIo { path, reason: format!("migrating the state file: {other}") },
                    });
                }
            }
        }
        Ok(())
    }

    /// Switches to WAL. The switch needs the database to itself; a process that loses the race to another
    /// process's migration gets SQLITE_BUSY without the busy handler, so it retries for a while.
    fn journal_wal(&self) -> rusqlite::Result<String> {
        let mut tries = 0;
        loop {
            match self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy && tries < 200 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// Runs `f` in one transaction: all or nothing.
    pub fn tx<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T, AgentError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| map_err(&path, e))?;
        let out = f(&tx).map_err(|e| map_err(&path, e))?;
        tx.commit().map_err(|e| map_err(&path, e))?;
        Ok(out)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    // --- device ---------------------------------------------------------------------------------------

    pub fn device_pem(&self) -> Result<Option<String>, AgentError> {
        self.conn
            .query_row("SELECT secret_pem FROM device WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Stores `pem` as the device key unless another process stored one first; returns the key that is stored.
    pub fn insert_device(&mut self, pem: &str, now: DateTime<Utc>) -> Result<String, AgentError> {
        self.tx(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO device (id, secret_pem, created_at) VALUES (1, ?1, ?2)",
                params![pem, ts(now)],
            )?;
            tx.query_row("SELECT secret_pem FROM device WHERE id = 1", [], |r| r.get(0))
        })
    }

    // --- trusted time ---------------------------------------------------------------------------------

    /// The stored trusted time (unverified: signed artefact times are applied as a floor by the agent).
    pub fn trusted_time(&self) -> Result<Option<TrustedTime>, AgentError> {
        trusted_time(&self.conn).map_err(|e| self.err(e))
    }

    pub fn set_trusted_time(&mut self, t: &TrustedTime) -> Result<(), AgentError> {
        self.tx(|tx| set_trusted_time(tx, t))
    }

    // --- activation -----------------------------------------------------------------------------------

    pub fn activation(&self) -> Result<Option<ActivationRow>, AgentError> {
        self.conn
            .query_row(
                "SELECT mode, key_hash, activation_id, license_file, activation_token, request_bytes,
                        response_code, fingerprint, last_response, heartbeat_interval_secs, activated_at
                 FROM activation WHERE id = 1",
                [],
                |r| {
                    let mode: String = r.get(0)?;
                    let id: Option<String> = r.get(2)?;
                    let activated: String = r.get(10)?;
                    Ok(ActivationRow {
                        mode: if mode == "offline" { Mode::Offline } else { Mode::Online },
                        key_hash: hash32(r.get(1)?)?,
                        activation_id: id.and_then(|s| Uuid::parse_str(&s).ok()),
                        license_file: r.get(3)?,
                        activation_token: r.get(4)?,
                        request_bytes: r.get(5)?,
                        response_code: r.get(6)?,
                        fingerprint: r.get(7)?,
                        last_response: r.get(8)?,
                        heartbeat_interval_secs: r.get(9)?,
                        activated_at: parse_ts(&activated)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    // --- usage ----------------------------------------------------------------------------------------

    pub fn usage_queue(&self, limit: usize) -> Result<Vec<UsageEvent>, AgentError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, feature, amount, recorded_at FROM usage_queue WHERE acked = 0 ORDER BY recorded_at, id LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([limit as i64], |r| {
                let id: String = r.get(0)?;
                let amount: i64 = r.get(2)?;
                let at: String = r.get(3)?;
                Ok(UsageEvent {
                    id: Uuid::parse_str(&id).unwrap_or_default(),
                    feature: r.get(1)?,
                    amount: amount.max(0) as u64,
                    recorded_at: parse_ts(&at)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| map_err(&self.path, e))?;
        Ok(rows)
    }

    /// The server's usage totals per feature as last reported, with the server time of the report (`None` for a
    /// total stored before times were kept).
    pub fn usage_totals(&self) -> Result<Vec<ServerTotal>, AgentError> {
        let mut st = self.conn.prepare("SELECT feature, total, as_of_us FROM usage_totals").map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let n: i64 = r.get(1)?;
                let as_of: Option<i64> = r.get(2)?;
                Ok((r.get::<_, String>(0)?, n.max(0) as u64, as_of.and_then(DateTime::from_timestamp_micros)))
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| map_err(&self.path, e))?;
        Ok(rows)
    }

    /// Units of `feature` in queued events (sent or not) recorded at `from` or later: a quota period's local use.
    /// Events dated after the period count too: a clock set forward to use a later period's quota, then back, finds
    /// that use still counted (it only ever moves quota later, never adds any).
    pub fn queued_usage_since(&self, feature: &str, from: DateTime<Utc>) -> Result<u64, AgentError> {
        // Stored times are fixed-width RFC 3339 UTC text, so text order is time order.
        self.conn
            .prepare_cached("SELECT COALESCE(SUM(amount), 0) FROM usage_queue WHERE feature = ?1 AND recorded_at >= ?2")
            .and_then(|mut st| st.query_row(params![feature, ts(from)], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// Units per feature in events not yet acknowledged by the server.
    pub fn queued_usage_by_feature(&self) -> Result<Vec<(String, u64)>, AgentError> {
        self.sums_by_feature("SELECT feature, SUM(amount) FROM usage_queue WHERE acked = 0 GROUP BY feature")
    }

    /// Runs a `SELECT feature, <sum>` query; negative sums read as 0.
    fn sums_by_feature(&self, sql: &str) -> Result<Vec<(String, u64)>, AgentError> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let n: i64 = r.get(1)?;
                Ok((r.get::<_, String>(0)?, n.max(0) as u64))
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| map_err(&self.path, e))?;
        Ok(rows)
    }

    pub fn pending_usage_count(&self) -> Result<u64, AgentError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM usage_queue WHERE acked = 0", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    // --- offline --------------------------------------------------------------------------------------

    pub fn pending_requests(&self) -> Result<Vec<PendingRequest>, AgentError> {
        let mut st = self
            .conn
            .prepare("SELECT key_hash, request_bytes, fingerprint, code, created_at FROM pending_requests ORDER BY created_at DESC")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let at: String = r.get(4)?;
                Ok(PendingRequest {
                    key_hash: hash32(r.get(0)?)?,
                    request_bytes: r.get(1)?,
                    fingerprint: r.get(2)?,
                    code: r.get(3)?,
                    created_at: parse_ts(&at)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| map_err(&self.path, e))?;
        Ok(rows)
    }

    pub fn emergencies(&self) -> Result<Vec<EmergencyRow>, AgentError> {
        let mut st = self
            .conn
            .prepare("SELECT key_hash, serial, code, ended FROM emergency ORDER BY expires_at DESC")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let serial: i64 = r.get(1)?;
                Ok(EmergencyRow {
                    key_hash: hash32(r.get(0)?)?,
                    serial: serial.clamp(0, i64::from(u32::MAX)) as u32,
                    code: r.get(2)?,
                    ended: r.get::<_, i64>(3)? != 0,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| map_err(&self.path, e))?;
        Ok(rows)
    }
}

// --- statements used inside transactions ------------------------------------------------------------------

fn micros(us: Option<i64>) -> Option<DateTime<Utc>> {
    us.and_then(|us| Utc.timestamp_micros(us).single())
}

pub fn trusted_time(c: &Connection) -> rusqlite::Result<Option<TrustedTime>> {
    let row = c
        .query_row("SELECT high_water_us, wall_us, boot_id, since_boot_us FROM clock WHERE id = 1", [], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .optional()?;
    Ok(row.and_then(|(trusted, wall, boot_id, since)| {
        let trusted = micros(trusted)?;
        let boot = match (boot_id, since) {
            (Some(boot_id), Some(us)) if us >= 0 => {
                Some(BootReading { boot_id, since_boot: std::time::Duration::from_micros(us as u64) })
            }
            _ => None,
        };
        // A row from schema 1 has no wall reading: the mark was the latest local time seen.
        Some(TrustedTime { trusted, wall: micros(wall).unwrap_or(trusted), boot })
    }))
}

pub fn set_trusted_time(tx: &Connection, t: &TrustedTime) -> rusqlite::Result<()> {
    let since = t.boot.as_ref().map(|b| i64::try_from(b.since_boot.as_micros()).unwrap_or(i64::MAX));
    tx.execute(
        "INSERT INTO clock (id, high_water_us, wall_us, boot_id, since_boot_us) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET high_water_us = excluded.high_water_us, wall_us = excluded.wall_us,
            boot_id = excluded.boot_id, since_boot_us = excluded.since_boot_us",
        params![
            t.trusted.timestamp_micros(),
            t.wall.timestamp_micros(),
            t.boot.as_ref().map(|b| b.boot_id.as_str()),
            since
        ],
    )
    .map(|_| ())
}

pub fn put_activation(tx: &Connection, a: &ActivationRow) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM activation", [])?;
    tx.execute(
        "INSERT INTO activation (id, mode, key_hash, activation_id, license_file, activation_token, request_bytes,
            response_code, fingerprint, last_response, heartbeat_interval_secs, activated_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            a.mode.as_str(),
            a.key_hash.as_slice(),
            a.activation_id.map(|u| u.to_string()),
            a.license_file,
            a.activation_token,
            a.request_bytes,
            a.response_code,
            a.fingerprint,
            a.last_response,
            a.heartbeat_interval_secs,
            ts(a.activated_at),
        ],
    )
    .map(|_| ())
}

/// Removes the activation and ends the emergency grants of its license.
pub fn delete_activation(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute("UPDATE emergency SET ended = 1 WHERE key_hash IN (SELECT key_hash FROM activation)", [])?;
    tx.execute("DELETE FROM activation", []).map(|_| ())
}

pub fn enqueue_usage(tx: &Connection, e: &UsageEvent) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO usage_queue (id, feature, amount, recorded_at) VALUES (?1, ?2, ?3, ?4)",
        params![e.id.to_string(), e.feature, i64::try_from(e.amount).unwrap_or(i64::MAX), ts(e.recorded_at)],
    )
    .map(|_| ())
}

/// Deletes acknowledged events; returns how many were in the queue.
pub fn ack_usage(tx: &Connection, ids: &[Uuid]) -> rusqlite::Result<usize> {
    let mut n = 0;
    let mut st = tx.prepare("UPDATE usage_queue SET acked = 1 WHERE id = ?1 AND acked = 0")?;
    for id in ids {
        n += st.execute([id.to_string()])?;
    }
    Ok(n)
}

/// Drops the acknowledged events the server's totals now cover: for each feature, those recorded before
/// `covered_until(feature)` (`None`: all of them, as a lifetime total covers every event).
pub fn prune_acked(tx: &Connection, covered_until: impl Fn(&str) -> Option<DateTime<Utc>>) -> rusqlite::Result<()> {
    let features: Vec<String> = tx
        .prepare("SELECT DISTINCT feature FROM usage_queue WHERE acked = 1")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for f in features {
        match covered_until(&f) {
            None => tx.execute("DELETE FROM usage_queue WHERE acked = 1 AND feature = ?1", [&f])?,
            Some(t) => tx.execute(
                "DELETE FROM usage_queue WHERE acked = 1 AND feature = ?1 AND recorded_at < ?2",
                params![f, ts(t)],
            )?,
        };
    }
    Ok(())
}

/// Stores the server's total of `feature` as reported at server time `as_of` (for a quota per period, the total
/// of the period that holds `as_of`).
pub fn set_usage_total(tx: &Connection, feature: &str, total: u64, as_of: DateTime<Utc>) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO usage_totals (feature, total, as_of_us) VALUES (?1, ?2, ?3)
         ON CONFLICT (feature) DO UPDATE SET total = excluded.total, as_of_us = excluded.as_of_us",
        params![feature, i64::try_from(total).unwrap_or(i64::MAX), as_of.timestamp_micros()],
    )
    .map(|_| ())
}

pub fn put_pending(tx: &Connection, p: &PendingRequest) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO pending_requests (key_hash, request_bytes, fingerprint, code, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key_hash) DO UPDATE SET request_bytes = excluded.request_bytes,
            fingerprint = excluded.fingerprint, code = excluded.code, created_at = excluded.created_at",
        params![p.key_hash.as_slice(), p.request_bytes, p.fingerprint, p.code, ts(p.created_at)],
    )
    .map(|_| ())
}

pub fn delete_pending(tx: &Connection, key_hash: &[u8; 32]) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM pending_requests WHERE key_hash = ?1", [key_hash.as_slice()]).map(|_| ())
}

/// Records an emergency code; false when this serial was already applied for the license.
pub fn insert_emergency(
    tx: &Connection,
    key_hash: &[u8; 32],
    serial: u32,
    code: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "INSERT OR IGNORE INTO emergency (key_hash, serial, code, expires_at, applied_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key_hash.as_slice(), i64::from(serial), code, ts(expires_at), ts(now)],
    )?;
    Ok(n == 1)
}

fn map_err(path: &Path, e: rusqlite::Error) -> AgentError {
    use rusqlite::ErrorCode;
    let corrupt = match &e {
        rusqlite::Error::SqliteFailure(f, _) => {
            matches!(f.code, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnName(_) => true,
        _ => false,
    };
    if corrupt {
        AgentError::StateCorrupt { path: path.to_path_buf(), reason: e.to_string() }
    } else {
        AgentError::StateIo { path: path.to_path_buf(), reason: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_schema_and_refuses_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = Store::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        s.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(Store::open(&path), Err(AgentError::StateTooNew { found: 99, .. })));
    }

    #[test]
    fn garbage_file_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, AgentError::StateCorrupt { .. }), "{err}");
        assert!(err.to_string().contains("activate again"));
    }

    #[test]
    fn a_version_3_state_file_keeps_its_queued_usage_through_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let v3 = rusqlite_migration::Migrations::new(vec![
                rusqlite_migration::M::up(SCHEMA_V1),
                rusqlite_migration::M::up(SCHEMA_V2),
                rusqlite_migration::M::up(SCHEMA_V3),
            ]);
            v3.to_latest(&mut c).unwrap();
            c.execute(
                "INSERT INTO usage_queue (id, feature, amount, recorded_at) VALUES (?1, 'f', 4, ?2)",
                params![Uuid::new_v4().to_string(), ts(Utc::now())],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.usage_queue(10).unwrap().len(), 1, "still to be sent");
        assert_eq!(s.pending_usage_count().unwrap(), 1);
        assert_eq!(s.queued_usage_since("f", Utc::now() - chrono::Duration::days(1)).unwrap(), 4);
    }

    #[test]
    fn usage_queue_survives_reopen_and_acks_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let id = Uuid::new_v4();
        {
            let mut s = Store::open(&path).unwrap();
            s.tx(|tx| enqueue_usage(tx, &UsageEvent { id, feature: "f".into(), amount: 2, recorded_at: Utc::now() }))
                .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.usage_queue(10).unwrap().len(), 1);
        assert_eq!(s.queued_usage_by_feature().unwrap(), vec![("f".to_string(), 2)]);
        let day = Utc::now() - chrono::Duration::days(1);
        assert_eq!(s.queued_usage_since("f", day).unwrap(), 2);
        assert_eq!(s.queued_usage_since("f", day + chrono::Duration::days(2)).unwrap(), 0);
        assert_eq!(s.queued_usage_since("g", day).unwrap(), 0);
        assert_eq!(s.tx(|tx| ack_usage(tx, &[id])).unwrap(), 1);
        assert_eq!(s.tx(|tx| ack_usage(tx, &[id])).unwrap(), 0);
        assert!(s.usage_queue(10).unwrap().is_empty(), "an acknowledged event is not sent again");
        assert_eq!(s.pending_usage_count().unwrap(), 0);
        // Kept while the server's answer covered a period before it; dropped once one covers it.
        s.tx(|tx| prune_acked(tx, |_| Some(day))).unwrap();
        assert_eq!(s.queued_usage_since("f", day).unwrap(), 2, "still counted locally");
        s.tx(|tx| prune_acked(tx, |_| Some(Utc::now() + chrono::Duration::hours(1)))).unwrap();
        assert_eq!(s.queued_usage_since("f", day).unwrap(), 0);
    }

    #[test]
    fn eight_processes_creating_one_state_file_at_once_all_succeed() {
        // Each thread has its own connection, as separate processes do; all race on a file that does not exist.
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut s = Store::open(&path)?;
                        s.insert_device(&format!("pem-{i}"), Utc::now())
                    })
                })
                .collect();
            let keys: Vec<String> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
            assert!(
                keys.iter().all(|k| *k == keys[0]),
                "round {round}: every opener uses the one stored key: {keys:?}"
            );
        }
    }

    #[test]
    fn a_schema_1_state_file_is_migrated_and_keeps_its_trusted_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let t = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute("INSERT INTO clock (id, high_water_us) VALUES (1, ?1)", [t.timestamp_micros()]).unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let v: i64 = s.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(s.trusted_time().unwrap(), Some(TrustedTime { trusted: t, wall: t, boot: None }));
        let next = TrustedTime {
            trusted: t + chrono::Duration::hours(1),
            wall: t,
            boot: Some(BootReading { boot_id: "b".into(), since_boot: std::time::Duration::from_micros(1_500_000) }),
        };
        s.set_trusted_time(&next).unwrap();
        drop(s);
        assert_eq!(Store::open(&path).unwrap().trusted_time().unwrap(), Some(next));
    }
}
