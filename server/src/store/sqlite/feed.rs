//! The change feed as the cache reads it ([`ChangeFeed`]): rows appended by triggers
//! (`migrations/sqlite/0004_change_feed.sql`) to the `changes` table.

use rusqlite::Connection;
use uuid::Uuid;

use super::exec_cached;
use crate::store::cache::{Change, ChangeFeed, FeedRead, Kind};
use crate::store::StoreError;

/// The feed read over a connection (the writer's own after a commit, or the follower's).
impl ChangeFeed for Connection {
    fn head(&self) -> Result<i64, StoreError> {
        Ok(self.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")?.query_row([], |r| r.get(0))?)
    }

    fn changes_after(&self, after: i64, limit: u32) -> Result<FeedRead, StoreError> {
        let c = self;
        exec_cached(c, "BEGIN")?;
        let read = (|| -> Result<FeedRead, StoreError> {
            let floor: Option<i64> = c.prepare_cached("SELECT MIN(seq) FROM changes")?.query_row([], |r| r.get(0))?;
            let rows = c
                .prepare_cached("SELECT seq, kind, id FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
                .query_map(rusqlite::params![after, limit], |r| {
                    let (seq, kind, id) = (r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?);
                    // A row this version cannot read drops everything rather than being guessed at.
                    Ok(match Uuid::parse_str(&id) {
                        Ok(id) => Change { seq, kind: Kind::parse(&kind), id },
                        Err(_) => Change { seq, kind: Kind::Unknown, id: Uuid::nil() },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(FeedRead { floor, rows })
        })();
        let _ = exec_cached(c, "COMMIT");
        read
    }
}
