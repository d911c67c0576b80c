//! The one error type of every store method, whatever the backend. Backends map their driver's errors into it
//! (SQLite: in [`super::sqlite`]).

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// An optimistic write found the record changed since it was read.
    #[error("the record changed since it was read")]
    Changed,
    #[error("database error: {0}")]
    Db(String),
    #[error("stored data could not be decoded: {0}")]
    Corrupt(String),
    #[error("the database is busy (another process holds the write lock); retry")]
    Busy,
    #[error("the store is shut down")]
    Closed,
    /// The request that queued the write was abandoned (timed out) before the write started: nothing was written.
    #[error("the request was abandoned before its write started; nothing was written")]
    Abandoned,
    #[error("{0}")]
    Schema(String),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
