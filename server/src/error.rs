//! The one error type of the services. Every failure has a code of the wire contract
//! ([`tessera_core::protocol::ErrorCode`], which fixes its HTTP status), a message saying what went wrong and what
//! to do, and details; the HTTP layer turns it into `{"error": {"code", "message", "details"}}`. Internal errors
//! are logged once, where they are made, and shown only as a generic message.

use serde_json::{json, Value};
pub use tessera_core::protocol::ErrorCode;

use crate::store::StoreError;

/// Shown (`Display`) as `CODE: message`, with the cause of an internal error after it: for logs and the operator's
/// command line, never for a client (the HTTP layer shows only the code, message and details).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}{}", cause.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u64>,
    /// For the log only, never shown: what failed inside (internal errors), logged where the error becomes a
    /// response.
    pub cause: Option<String>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { code, message: message.into(), details: json!({}), retry_after: None, cause: None }
    }

    /// The HTTP status of this error (fixed by its code).
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::BadRequest, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::ValidationFailed, message)
    }

    pub fn not_found(what: &str) -> Self {
        AppError::new(
            ErrorCode::NotFound,
            format!("{what} not found: check the id, and that your token belongs to the right tenant"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::Forbidden, message)
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = AppError::new(ErrorCode::RateLimited, format!("too many requests: retry in {retry_after} s"));
        e.retry_after = Some(retry_after);
        e
    }

    /// The request ran out of time before any of its writes started: nothing was changed, a retry is safe.
    pub fn timeout_not_applied() -> Self {
        let mut e = AppError::new(
            ErrorCode::Timeout,
            "the request took too long (the server is busy) and was abandoned before it changed anything: \
             nothing was applied; retry",
        )
        .with_details(json!({"applied": false}));
        e.retry_after = Some(1);
        e
    }

    /// The request ran out of time, twice, after one of its writes had started: that write commits or rolls back
    /// on its own (with its audit entry), so what happened must be looked up, not assumed.
    pub fn timeout_outcome_unknown() -> Self {
        AppError::new(
            ErrorCode::TimeoutOutcomeUnknown,
            "the request took too long after it had started changing data: the change may have been applied \
             (it is then in the audit log); look at the object or GET /v1/audit before retrying",
        )
        .with_details(json!({"applied": "unknown"}))
    }

    /// The refusal for a request that ran out of time (see `store::writes::within`).
    pub fn timed_out(t: crate::store::writes::TimedOut) -> Self {
        match t {
            crate::store::writes::TimedOut::NothingWritten => AppError::timeout_not_applied(),
            crate::store::writes::TimedOut::OutcomeUnknown => AppError::timeout_outcome_unknown(),
        }
    }

    /// An unexpected failure: logged here, shown to the client only as a generic message.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(context, error = %err, "internal error");
        AppError::new(ErrorCode::Internal, "the server failed to handle this request; it was logged, try again later")
    }

    /// Maps a store error for an object of kind `what`.
    pub fn store(what: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::not_found(what),
            StoreError::Conflict(m) => {
                // The database's own text (table and constraint names) stays in the log.
                tracing::info!(what, constraint = %m, "store conflict");
                AppError::new(ErrorCode::Conflict,
                    format!("the {what} conflicts with existing data (a duplicate, or a reference to something that does not exist): check the values and ids"),
                )
            }
            StoreError::Changed => AppError::new(
                if what == "license" { ErrorCode::LicenseChanged } else { ErrorCode::Changed },
                format!("the {what} changed while this request was processed: reload it and retry"),
            ),
            StoreError::Abandoned => AppError::timeout_not_applied(),
            StoreError::Busy => AppError::new(ErrorCode::Busy, "the database is busy: retry in a moment"),
            other => AppError::internal(what, other),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::store("object", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_database_text_reaches_a_client() {
        let sqlite_texts = [
            StoreError::Conflict("UNIQUE constraint failed: licenses.key_hash".into()),
            StoreError::Conflict("FOREIGN KEY constraint failed".into()),
            StoreError::Db("disk I/O error: /var/lib/tessera/tessera.db".into()),
            StoreError::Corrupt("bad JSON in activations.fingerprint".into()),
            StoreError::Schema("applying migrations failed: near \"TABLE\": syntax error".into()),
        ];
        for e in sqlite_texts {
            let shown = AppError::store("license", e.clone());
            let text = format!("{} {}", shown.message, shown.details).to_ascii_lowercase();
            for leak in ["constraint", "unique", "foreign", "key_hash", "disk", "/var", "json", "fingerprint", "syntax"]
            {
                assert!(!text.contains(leak), "{e:?} shows {leak:?}: {text}");
            }
        }
    }
}
