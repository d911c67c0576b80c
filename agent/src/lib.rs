//! tessera-agent: the Tessera license agent, as a library to embed in a vendor's Rust application.
//!
//! ```no_run
//! # async fn run() -> Result<(), tessera_agent::AgentError> {
//! use tessera_agent::{Agent, AgentConfig};
//! let keyset = tessera_core::PublicKeyset::from_json(&std::fs::read_to_string("keyset.json").unwrap_or_default()).unwrap_or_default();
//! let product = uuid::Uuid::nil();
//! let agent = Agent::open(AgentConfig::new("/var/lib/myapp/license.db", keyset, product)
//!     .with_server("https://licensing.example.com"))?;
//! if !agent.status().activated { agent.activate("TSK-…").await?; }
//! let _beats = agent.spawn_heartbeats();
//! if agent.check("export_pdf").allowed { /* … */ }
//! # Ok(()) }
//! ```
//!
//! Checks are answered from memory (everything is verified and precomputed at open and refresh); the
//! decision itself is [`tessera_core::decide`], the same function the server uses.
#![forbid(unsafe_code)]

mod agent;
pub mod cli;
pub mod client;
pub mod clock;
pub mod daemon;
mod error;
pub mod gate;
pub mod identity;
pub mod state;
pub mod vendor;

pub use agent::{
    backoff, jitter, license_from_grant, next_heartbeat_in, Activated, Agent, AgentConfig, Applied, AttestedCheck,
    AttestedPayload, EmergencyStatus, Evidence, HeartbeatOutcome, LicenseSummary, Status, DEFAULT_CLOCK_TOLERANCE_SECS,
};
pub use clock::{BootReading, Clock, SystemClock, TestClock, TrustedTime};
pub use error::{AgentError, ErrorCode};
pub use identity::{IdentityMode, RawComponent, IDENTITY_ENV, IDENTITY_FILE_ENV};
pub use state::Mode;
pub use tessera_core::protocol::ActivationStatus;
pub use tessera_core::{Decision, Reason};
