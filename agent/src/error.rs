//! The agent's error type. Every message says what went wrong and what to do.

use std::path::PathBuf;

pub use tessera_core::protocol::ErrorCode;

/// Errors of the agent library. Feature checks never return these: they return a
/// [`tessera_core::Decision`] that denies with a reason code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use the state file {path}: {reason}. Check the path and its permissions, or pass another --state / TESSERA_AGENT_STATE")]
    StateIo { path: PathBuf, reason: String },
    #[error("the state file {path} is damaged ({reason}). Move it away and activate again (`tessera-agent activate`), or restore it from a backup")]
    StateCorrupt { path: PathBuf, reason: String },
    #[error("the state file {path} was written by a newer tessera-agent (schema {found}, this agent knows up to {supported}). Upgrade tessera-agent, or use another --state")]
    StateTooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("no license server is configured: pass --server / TESSERA_SERVER_URL, or use the offline flow (`tessera-agent request-code`)")]
    NoServer,
    #[error("cannot reach the license server at {url}: {reason}. Check the network and the server address; licensed features keep working offline until the lease ends")]
    Unreachable { url: String, reason: String },
    /// A refusal of the server: `code` is its stable reason ([`ErrorCode::Unrecognised`] for a code newer than
    /// this agent, or an answer without the error shape; `message` then says more).
    #[error("the license server refused ({status} {code}): {message}")]
    Server { status: u16, code: ErrorCode, message: String },
    #[error("the license server's answer could not be trusted: {0}. Is --server pointing at the right server, and does --keyset hold its public keys?")]
    UntrustedResponse(String),
    #[error("the license key is not valid: {0}")]
    BadKey(String),
    #[error("{0}")]
    BadCode(String),
    #[error("this machine is not activated: run `tessera-agent activate --key ...` or apply an offline code")]
    NotActivated,
    #[error("the device identity could not be read: {0}")]
    Identity(String),
    #[error("{0}")]
    Refused(String),
    /// The agent's configuration is refused (e.g. a vendor build given another keyset).
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}. Please report this to the vendor")]
    Internal(String),
}

impl AgentError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> AgentError {
        AgentError::Internal(e.to_string())
    }

    /// The stable machine code of a server refusal (e.g. `SEAT_LIMIT_REACHED`), if this is one.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            AgentError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
