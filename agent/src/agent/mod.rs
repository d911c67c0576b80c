//! The agent: opens the state, verifies what is cached, and answers checks from an in-memory snapshot.
//!
//! Files: this one holds the [`Agent`] type, opening it, its status and identity accessors; [`config`] the
//! [`AgentConfig`]; [`snapshot`] the published snapshot and the checks answered from it (the fast path, settled
//! decisions, attested checks, quota use, refresh); [`load`](mod@load) reading the state back and verifying
//! every cached artefact, and trusted time; [`online`] activation, heartbeats and deactivation against the
//! server; [`offline`] request, response and emergency codes and deactivation receipts; [`background`] the
//! heartbeat loop and its timing (jitter, backoff).

mod background;
mod config;
mod load;
mod offline;
mod online;
mod snapshot;

pub use background::{backoff, jitter, next_heartbeat_in};
pub use config::{AgentConfig, DEFAULT_CLOCK_TOLERANCE_SECS};
pub use load::license_from_grant;
pub use offline::Applied;
pub use online::{Activated, HeartbeatOutcome};
pub use snapshot::{AttestedCheck, AttestedPayload, Evidence};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tessera_core::decision::ClockGuard;
use tessera_core::encoding::b64url;
use tessera_core::fingerprint::{Fingerprint, MatchOutcome};
use tessera_core::model::{EmergencyScope, Feature, LicenseModel, LicenseType, DEFAULT_HEARTBEAT_SECS};
use tessera_core::{Decision, LicenseStatus, Reason, SigningKey};
use uuid::Uuid;

use crate::client::Client;
use crate::clock::TrustedTime;
use crate::error::AgentError;
use crate::identity::{self, Collected, RawComponent};
use crate::state::{Mode, Store};
use load::load;
use snapshot::{next_generation, Snapshot};

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub state_path: PathBuf,
    pub server_url: Option<String>,
    pub product_id: Uuid,
    pub activated: bool,
    pub mode: Option<Mode>,
    pub activation_id: Option<Uuid>,
    pub license: Option<LicenseSummary>,
    /// The decision for the license as a whole (no feature).
    pub decision: Decision,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub fingerprint: Option<MatchOutcome>,
    pub trusted_time: DateTime<Utc>,
    pub clock_tolerance_secs: i64,
    pub emergency: Option<EmergencyStatus>,
    /// Quota units used per feature (server totals plus events not yet acknowledged).
    pub usage: BTreeMap<String, u64>,
    /// Usage events waiting to be sent to the server.
    pub pending_usage: u64,
    /// Offline requests waiting for a response code.
    pub pending_requests: usize,
    pub heartbeat_interval_secs: u32,
    /// This device's Ed25519 public key, base64url.
    pub device_public_key: String,
    /// What is wrong with the cached state, if anything.
    pub problem: Option<String>,
    /// What to do when the license is not usable.
    pub recovery: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LicenseSummary {
    pub id: Uuid,
    pub status: LicenseStatus,
    pub license_type: LicenseType,
    pub license_model: LicenseModel,
    pub starts_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub features: Vec<Feature>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmergencyStatus {
    pub serial: Option<u32>,
    pub expires_at: DateTime<Utc>,
    pub scope: EmergencyScope,
}

struct Inner {
    config: AgentConfig,
    store: Mutex<Store>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Globally unique id of the current snapshot; lets `check` reuse a per-thread copy without locking.
    generation: AtomicU64,
    device: SigningKey,
    device_public: [u8; 32],
    identity: Collected,
    /// The host's DNS domain, when it has one (DOMAIN restrictions).
    domain: Option<Arc<str>>,
    client: Option<Client>,
}

/// An open agent. Cheap to clone (shared state); `Send + Sync`.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

fn bad_key(e: impl std::fmt::Display) -> AgentError {
    AgentError::BadKey(e.to_string())
}

impl Agent {
    /// Opens (or creates) the state, makes the device key on first run, collects the fingerprint and verifies
    /// every cached artefact. A damaged cache does not fail here: checks deny with SIGNATURE_INVALID and
    /// [`Agent::status`] says what to do. A state file that is not a database, or from a newer agent, fails.
    pub fn open(config: AgentConfig) -> Result<Agent, AgentError> {
        let mut store = Store::open(&config.state_path)?;
        let now = config.clock.now();
        let device = match store.device_pem()? {
            Some(pem) => SigningKey::from_pkcs8_pem(&pem).map_err(|e| AgentError::StateCorrupt {
                path: config.state_path.clone(),
                reason: format!("the device key cannot be read ({e})"),
            })?,
            None => {
                // Another process opening the same new state file may store its key first: use the stored one.
                let key = SigningKey::generate_ed25519();
                let pem = key.to_pkcs8_pem().map_err(AgentError::internal)?;
                let stored = store.insert_device(&pem, now)?;
                SigningKey::from_pkcs8_pem(&stored).map_err(|e| AgentError::StateCorrupt {
                    path: config.state_path.clone(),
                    reason: format!("the device key cannot be read ({e})"),
                })?
            }
        };
        let device_public: [u8; 32] =
            device.verifying_key().public_bytes().try_into().map_err(|_| AgentError::StateCorrupt {
                path: config.state_path.clone(),
                reason: "the device key is not an Ed25519 key".into(),
            })?;
        let identity = identity::collect(&config.identity, config.product_id)?;
        let domain = identity::host_domain().map(Arc::from);
        let client = config.server_url.as_deref().map(Client::new).transpose()?;
        let mut inner = Inner {
            config,
            store: Mutex::new(store),
            generation: AtomicU64::new(next_generation()),
            snapshot: RwLock::new(Arc::new(Snapshot {
                license: None,
                signatures_valid: false,
                fingerprint: None,
                lease_expires_at: None,
                hardware: None,
                clock: ClockGuard { high_water: now, tolerance: Duration::zero() },
                trusted: TrustedTime::start(now, None),
                floor: None,
                build_date: None,
                emergency: None,
                emergency_serial: None,
                usage: HashMap::new(),
                mode: None,
                activation_id: None,
                key_hash: None,
                heartbeat_interval_secs: DEFAULT_HEARTBEAT_SECS,
                problem: None,
                pending_usage: 0,
                pending_requests: 0,
                evidence: None,
                domain: None,
                country: None,
                settled: Vec::new(),
            })),
            device,
            device_public,
            identity,
            domain,
            client,
        };
        let snap = {
            let store = inner.store.get_mut().map_err(|_| AgentError::internal("state lock poisoned"))?;
            load(&inner.config, store, &inner.device_public, &inner.identity.fingerprint, inner.domain.clone())?
        };
        *inner.snapshot.get_mut().map_err(|_| AgentError::internal("snapshot lock poisoned"))? =
            Arc::new(snap.settle());
        *inner.generation.get_mut() = next_generation();
        Ok(Agent { inner: Arc::new(inner) })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the current period of `feature`'s quota ends and the quota starts afresh (`None`: a lifetime quota, or
    /// none): the `Retry-After` of a used-up quota per period. Taken at the time decisions are taken at.
    pub fn quota_period_end(&self, feature: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let clock = &*self.inner.config.clock;
        let now = clock.now();
        let snap = self.snapshot();
        let at = now.max(snap.guard(clock, now).high_water);
        snap.period_end(feature, at)
    }

    /// The license's offer for a feature it does not grant (the cheapest plan or add-on that includes it), as the
    /// server signed it into the license; `None` without one (offline activations carry none).
    pub fn upgrade_for(&self, feature: &str) -> Option<crate::gate::Upgrade> {
        let snap = self.snapshot();
        let offer = snap.license.as_ref()?.metadata.get("upgrades")?.get(feature)?;
        serde_json::from_value(offer.clone()).ok()
    }

    /// Status for people and scripts.
    pub fn status(&self) -> Status {
        let snap = self.snapshot();
        let cfg = &self.inner.config;
        let now = cfg.clock.now();
        let decision = snap.decide(&*cfg.clock, now, None, 0);
        let recovery = (!decision.allowed).then(|| recovery_hint(&decision, &snap, cfg));
        Status {
            state_path: cfg.state_path.clone(),
            server_url: cfg.server_url.clone(),
            product_id: cfg.product_id,
            activated: snap.mode.is_some(),
            mode: snap.mode,
            activation_id: snap.activation_id,
            license: snap.license.as_ref().map(|l| LicenseSummary {
                id: l.id,
                status: l.status,
                license_type: l.license_type,
                license_model: l.license_model,
                starts_at: l.starts_at,
                expires_at: l.expires_at,
                grace_ends_at: l.grace_ends_at(),
                features: l.features.clone(),
            }),
            decision,
            lease_expires_at: snap.lease_expires_at,
            fingerprint: snap.fingerprint,
            trusted_time: snap.clock.high_water,
            clock_tolerance_secs: cfg.clock_tolerance.num_seconds(),
            emergency: snap.emergency.map(|e| EmergencyStatus {
                serial: snap.emergency_serial,
                expires_at: e.expires_at,
                scope: e.scope,
            }),
            usage: snap.usage.iter().map(|(k, v)| (k.clone(), v.at(snap.clock.high_water.max(now)))).collect(),
            pending_usage: snap.pending_usage,
            pending_requests: snap.pending_requests,
            heartbeat_interval_secs: snap.heartbeat_interval_secs,
            device_public_key: b64url(&self.inner.device_public),
            problem: snap.problem.clone(),
            recovery,
        }
    }

    /// The hashed fingerprint of this device (what is sent to the server).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.inner.identity.fingerprint
    }

    /// Raw component values: for local display only, never sent anywhere.
    pub fn raw_components(&self) -> &[RawComponent] {
        &self.inner.identity.raw
    }

    /// This device's Ed25519 public key.
    pub fn device_public_key(&self) -> [u8; 32] {
        self.inner.device_public
    }

    /// Seconds until the next heartbeat is due (the server's setting).
    pub fn heartbeat_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.snapshot().heartbeat_interval_secs.max(1)))
    }
}

fn recovery_hint(d: &Decision, snap: &Snapshot, cfg: &AgentConfig) -> String {
    match d.reason {
        Reason::SignatureInvalid => format!(
            "{}{}. Activate again (`tessera-agent activate --key …` or a new offline response code); if that fails, move {} away and activate again",
            snap.problem.as_deref().map(|p| format!("{p}: ")).unwrap_or_default(),
            Reason::SignatureInvalid.explain(),
            cfg.state_path.display()
        ),
        Reason::ClockTampered => format!(
            "the system clock is more than {} s behind the last trusted time {}: correct the clock (or run `tessera-agent heartbeat` to resynchronise with the server)",
            cfg.clock_tolerance.num_seconds(),
            snap.clock.high_water
        ),
        other => other.explain().to_string(),
    }
}
