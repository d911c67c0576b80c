//! [`AgentConfig`]: how the agent is set up (state file, server, keys, clock, identity), and its builders.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tessera_core::model::CpuCount;
use tessera_core::PublicKeyset;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::identity::IdentityMode;

/// How the agent is set up. Build with [`AgentConfig::new`] and adjust the public fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// The SQLite state file (created with mode 0600).
    pub state_path: PathBuf,
    /// Base URL of the license server, e.g. `https://licensing.example.com`; `None`: fully offline.
    pub server_url: Option<String>,
    /// The vendor's public keys: every signed artefact is verified against them.
    pub keyset: PublicKeyset,
    /// The product this agent licenses; also the fingerprint salt.
    pub product_id: Uuid,
    /// Where time comes from (the system clock; a [`crate::TestClock`] in tests).
    pub clock: Arc<dyn Clock>,
    /// Hardware fingerprint or a pinned identity (containers).
    pub identity: IdentityMode,
    /// How far behind the trusted-time high-water mark the clock may be before checks deny with CLOCK_TAMPERED.
    pub clock_tolerance: Duration,
    /// Release date of the vendor's build, for the maintenance check.
    pub build_date: Option<DateTime<Utc>>,
    /// Sent as activation metadata.
    pub app_version: Option<String>,
    /// NAMED_USER licenses: the user this machine's seat is for (sent at activation).
    pub user_id: Option<String>,
    /// The processor count PER_CPU / PER_CORE licenses are decided on; `None`: read from the machine. For a
    /// vendor's application that counts differently (and for tests); the CLI never sets it.
    pub cpu_count: Option<CpuCount>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("state_path", &self.state_path)
            .field("server_url", &self.server_url)
            .field("keyset", &self.keyset)
            .field("product_id", &self.product_id)
            .field("identity", &self.identity)
            .field("clock_tolerance", &self.clock_tolerance)
            .field("build_date", &self.build_date)
            .field("app_version", &self.app_version)
            .field("user_id", &self.user_id)
            .field("cpu_count", &self.cpu_count)
            .finish_non_exhaustive()
    }
}

/// Default clock tolerance: one hour.
pub const DEFAULT_CLOCK_TOLERANCE_SECS: i64 = 3600;

impl AgentConfig {
    /// Offline, system clock, hardware identity, one hour clock tolerance.
    pub fn new(state_path: impl Into<PathBuf>, keyset: PublicKeyset, product_id: Uuid) -> Self {
        AgentConfig {
            state_path: state_path.into(),
            server_url: None,
            keyset,
            product_id,
            clock: Arc::new(SystemClock),
            identity: IdentityMode::Hardware,
            clock_tolerance: Duration::seconds(DEFAULT_CLOCK_TOLERANCE_SECS),
            build_date: None,
            app_version: None,
            user_id: None,
            cpu_count: None,
        }
    }

    pub fn with_user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    pub fn with_cpu_count(mut self, cpu: CpuCount) -> Self {
        self.cpu_count = Some(cpu);
        self
    }

    /// The machine's processors: the configured count, else what the machine reports.
    pub fn cpu(&self) -> CpuCount {
        self.cpu_count.unwrap_or_else(crate::identity::cpu_count)
    }

    pub fn with_server(mut self, url: impl Into<String>) -> Self {
        self.server_url = Some(url.into());
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_identity(mut self, identity: IdentityMode) -> Self {
        self.identity = identity;
        self
    }
}
