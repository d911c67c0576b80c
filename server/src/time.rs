//! Time as stored and shown: RFC 3339, UTC, microseconds, fixed width (so text order is time order).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

/// Injected clock: tests pass a fixed or movable time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}
