//! The agent: opens the state, verifies what is cached, and answers checks from an in-memory snapshot.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tessera_core::codes::{self, CodeKind};
use tessera_core::decision::{ClockGuard, EmergencyGrant, Environment, HardwareCount};
use tessera_core::encoding::b64url;
use tessera_core::envelope::Envelope;
use tessera_core::fingerprint::{match_fingerprint, Fingerprint, MatchOutcome};
use tessera_core::model::{
    CpuCount, EmergencyScope, Feature, LicenseModel, LicenseType, DEFAULT_HEARTBEAT_SECS, DEFAULT_LEASE_SECS,
};
use tessera_core::offline::{
    license_binding, offline_grant_tag, online_grant_tag, DeactivationReceipt, OfflineGrant, OfflineRequest,
    SignedEmergency, SignedRequest, SignedResponse,
};
use tessera_core::token::{verify_activation_token, verify_license_file};
use tessera_core::{
    decide, decided_until, Decision, Domain, Inputs, License, LicenseKey, LicenseStatus, PublicKeyset, Query, Reason,
    SigningKey,
};
use uuid::Uuid;

use crate::client::{self, Client, ForActivation};
use crate::clock::{Clock, SystemClock, TrustedTime};
use crate::error::AgentError;
use crate::identity::{self, Collected, IdentityMode, RawComponent};
use crate::state::{self, ActivationRow, Mode, PendingRequest, Store};
use tessera_core::protocol::{
    ActivateRequest, ActivateResult, ActivationStatus, AgentMetrics, DeactivateRequest, DeactivateResult,
    DeviceMetadata, Endpoint, HeartbeatRequest, HeartbeatResult, Held, UsageEvent,
};

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

/// Everything a check needs, precomputed and verified at open / refresh.
#[derive(Debug, Clone)]
struct Snapshot {
    license: Option<License>,
    signatures_valid: bool,
    fingerprint: Option<MatchOutcome>,
    lease_expires_at: Option<DateTime<Utc>>,
    /// PER_CPU / PER_CORE: the processors the activation counted and those the machine has.
    hardware: Option<HardwareCount>,
    /// Trusted time as of this snapshot, with the tolerance.
    clock: ClockGuard,
    /// The observation `clock` was computed from (its trusted time is `clock.high_water`).
    trusted: TrustedTime,
    /// The latest time the verified artefacts vouch for.
    floor: Option<DateTime<Utc>>,
    build_date: Option<DateTime<Utc>>,
    emergency: Option<EmergencyGrant>,
    emergency_serial: Option<u32>,
    usage: HashMap<String, u64>,
    mode: Option<Mode>,
    activation_id: Option<Uuid>,
    key_hash: Option<[u8; 32]>,
    heartbeat_interval_secs: u32,
    problem: Option<String>,
    pending_usage: u64,
    pending_requests: usize,
    /// The vendor-signed artefacts the license was verified from, for attested answers.
    evidence: Option<Arc<Evidence>>,
    /// The host's DNS domain, for DOMAIN restrictions (reported by the host itself: advisory).
    domain: Option<Arc<str>>,
    /// The country the server's GeoIP database placed this device in when it signed the activation token, for
    /// GEOGRAPHIC restrictions offline (`None`: unknown, which never denies).
    country: Option<Arc<str>>,
    /// `check`'s answers worked out ahead, one per listed feature in the license's order ([`Snapshot::settle`]).
    settled: Vec<Settled>,
}

/// A feature id's length and last seven bytes in one word: ids of one license often share a length and a prefix
/// (`feature_1`, `feature_2`), and a word compares in one instruction where bytes take a call.
#[inline]
fn id_tag(id: &str) -> u64 {
    let bytes = id.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(7)..];
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    word[7] = bytes.len() as u8;
    u64::from_le_bytes(word)
}

/// A plain check's decision for one listed feature, taken at trusted time when the snapshot was published. Nothing
/// but the clock changes while a snapshot stands, so the decision stands from trusted time until `until`, the next
/// instant any of its time tests could turn ([`tessera_core::decided_until`]).
#[derive(Debug, Clone)]
struct Settled {
    /// [`id_tag`] of `feature`, compared before its bytes.
    tag: u64,
    feature: Box<str>,
    until: Option<DateTime<Utc>>,
    /// Boxed: checks scan the ids, and the entries stay small.
    decision: Box<Decision>,
}

/// The vendor-signed artefacts behind a decision, as cached (verified at load). An application that embeds
/// the vendor's public key verifies them itself (agent/README.md, "Verifying the daemon's answers").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Evidence {
    Online {
        /// The armored license file.
        license_file: String,
        /// The activation token (compact envelope): binds the license to this device's public key.
        activation_token: String,
        /// The last signed heartbeat answer (compact envelope of kind `server-response`), when there was one:
        /// it carries the license status (a suspension or revocation) and the server's time.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_server_answer: Option<String>,
    },
    Offline {
        /// The device-signed offline request (base64url of its exact bytes).
        offline_request: String,
        /// The vendor's response code answering it.
        offline_response: String,
    },
}

/// An answer to a local check that the asking application can verify without trusting whoever answered: the
/// decision, signed by the device key over the application's challenge, and the vendor-signed artefacts that
/// bind that device key to the license.
#[derive(Debug, Clone, Serialize)]
pub struct AttestedCheck {
    pub decision: Decision,
    /// The signed answer: a compact envelope of kind `local-answer` whose payload is [`AttestedPayload`] JSON,
    /// signed by the device key (`evidence` names it).
    pub attestation: String,
    /// `None` when nothing is activated (the decision then denies).
    pub evidence: Option<Evidence>,
    pub device_public_key: String,
}

/// What a local answer's signature covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttestedPayload {
    /// The application's challenge, base64url, echoed.
    pub challenge: String,
    pub feature: String,
    pub allowed: bool,
    pub reason: Reason,
    /// The time the decision was made at (the later of the clock and trusted time).
    pub decided_at: DateTime<Utc>,
    pub product_id: Uuid,
    pub license_id: Option<Uuid>,
    pub activation_id: Option<Uuid>,
}

impl Snapshot {
    #[inline]
    fn decide(&self, clock: &dyn Clock, now: DateTime<Utc>, feature: Option<&str>, amount: u64) -> Decision {
        let mut guard = self.clock;
        if now < guard.high_water {
            // The wall clock is behind trusted time (rare on an honest machine): count the time that passed since
            // the snapshot on the boot clock, so a clock held back cannot stop time within this process either.
            guard.high_water = guard.high_water.max(self.trusted.observe(now, clock.boot()).trusted);
        }
        let used = feature.map_or(0, |f| self.used(f));
        decide(&self.inputs(now, guard), &Query { feature, amount, used })
    }

    /// [`Snapshot::decide`] for a plain check: the settled decision while it stands.
    #[inline]
    fn check(&self, clock: &dyn Clock, now: DateTime<Utc>, feature: &str) -> Decision {
        let tag = id_tag(feature);
        match self.settled.iter().find(|s| s.tag == tag && *s.feature == *feature) {
            Some(s) if now >= self.clock.high_water && s.until.is_none_or(|u| now < u) => *s.decision,
            _ => self.decide_now(clock, now, feature),
        }
    }

    /// A check that no settled decision answers (kept out of line, so the settled path stays small).
    #[inline(never)]
    fn decide_now(&self, clock: &dyn Clock, now: DateTime<Utc>, feature: &str) -> Decision {
        self.decide(clock, now, Some(feature), 0)
    }

    /// Works out `check`'s answer for every listed feature at trusted time (see [`Settled`]). Every snapshot is
    /// settled as it is published, so no answer outlives the facts it was decided from.
    fn settle(mut self) -> Snapshot {
        let at = self.clock.high_water;
        let settled = self.license.iter().flat_map(|l| &l.features).map(|f| {
            let inputs = self.inputs(at, self.clock);
            let query = Query { feature: Some(&f.id), amount: 0, used: self.used(&f.id) };
            Settled {
                tag: id_tag(&f.id),
                feature: f.id.as_str().into(),
                until: decided_until(&inputs, &query),
                decision: Box::new(decide(&inputs, &query)),
            }
        });
        self.settled = settled.collect();
        self
    }

    fn used(&self, feature: &str) -> u64 {
        if self.usage.is_empty() {
            return 0;
        }
        self.usage.get(feature).copied().unwrap_or(0)
    }

    fn inputs(&self, now: DateTime<Utc>, clock: ClockGuard) -> Inputs<'_> {
        Inputs {
            now,
            license: self.license.as_ref(),
            signatures_valid: self.signatures_valid,
            fingerprint: self.fingerprint,
            lease_expires_at: self.lease_expires_at,
            clock: Some(clock),
            build_date: self.build_date,
            environment: Environment {
                domain: self.domain.as_deref(),
                country: self.country.as_deref(),
                ..Environment::default()
            },
            emergency: self.emergency,
            hardware: self.hardware,
        }
    }
}

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

/// The outcome of an online activation.
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub reused: bool,
    pub lease_expires_at: DateTime<Utc>,
    pub heartbeat_interval_secs: u32,
    pub features: Vec<Feature>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The outcome of a heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatOutcome {
    pub activation_status: ActivationStatus,
    pub license_status: LicenseStatus,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub next_heartbeat_secs: u32,
    /// Usage events sent in this heartbeat.
    pub usage_sent: usize,
    /// Usage events the server acknowledged (removed from the local queue).
    pub usage_acknowledged: usize,
    pub server_time: DateTime<Utc>,
}

/// What an applied code granted.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Applied {
    /// An offline response: the device is activated.
    Activation {
        license_id: Uuid,
        license_type: LicenseType,
        features: Vec<Feature>,
        expires_at: Option<DateTime<Utc>>,
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// An emergency code: access until it expires.
    Emergency { serial: u32, scope: EmergencyScope, bound: bool, expires_at: DateTime<Utc> },
}

#[derive(Deserialize)]
struct StoredHeartbeat {
    #[serde(default)]
    license_status: Option<LicenseStatus>,
    /// The license's usage totals on the server when it answered.
    #[serde(default)]
    usage_totals: HashMap<String, i64>,
}

/// The canonical text of an armored license file; `None` when it does not parse.
fn canonical_license_file(text: &str) -> Option<String> {
    Envelope::from_armored(text).ok().map(|e| e.to_armored())
}

/// The canonical text of a compact envelope; `None` when it does not parse.
fn canonical_compact(text: &str) -> Option<String> {
    Envelope::from_compact(text).ok().map(|e| e.to_compact())
}

/// The canonical text of a copy-paste code (upper case, standard grouping); `None` when it does not decode.
fn canonical_code(kind: CodeKind, text: &str) -> Option<String> {
    codes::decode(kind, text).ok().and_then(|b| codes::encode(kind, &b).ok())
}

/// Cached artefacts are stored in canonical form; anything else was edited (even where the parser would
/// tolerate the change, e.g. text after a license file's END line or the case of a code).
fn require_canonical(stored: &str, canonical: Option<String>, what: &str) -> Result<(), String> {
    if canonical.as_deref() == Some(stored) {
        Ok(())
    } else {
        Err(format!("the cached {what} was altered or damaged"))
    }
}

/// Source of snapshot generations, unique across all agents in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// Per-thread copy of the last snapshot `check` used, keyed by its generation.
    static CHECK_CACHE: RefCell<Option<(u64, Arc<Snapshot>)>> = const { RefCell::new(None) };
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Largest amount one usage event may carry (the server refuses more).
pub const MAX_USAGE_AMOUNT: u64 = 1 << 40;

/// Usage events sent per heartbeat at most.
const USAGE_BATCH: usize = 500;

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

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the snapshot; call with the store lock held so updates do not interleave.
    fn publish(&self, snap: Snapshot) {
        let snap = Arc::new(snap.settle());
        let mut guard = self.inner.snapshot.write().unwrap_or_else(|p| p.into_inner());
        *guard = snap;
        // After the snapshot: a reader that sees the new generation also sees the new snapshot.
        self.inner.generation.store(next_generation(), Ordering::Release);
    }

    /// Re-reads and re-verifies the state. If that fails, checks deny from then on (fail closed): the state on
    /// disk is no longer something this process has verified.
    fn reload_locked(&self, store: &mut Store) -> Result<(), AgentError> {
        match load(
            &self.inner.config,
            store,
            &self.inner.device_public,
            &self.inner.identity.fingerprint,
            self.inner.domain.clone(),
        ) {
            Ok(snap) => {
                self.publish(snap);
                Ok(())
            }
            Err(e) => {
                let mut denied = (*self.snapshot()).clone();
                denied.license = None;
                denied.emergency = None;
                denied.signatures_valid = false;
                denied.problem = Some(format!("the state file could not be read back: {e}"));
                self.publish(denied);
                Err(e)
            }
        }
    }

    /// Re-reads the state file (e.g. after another process applied a code) and re-verifies everything.
    pub fn refresh(&self) -> Result<(), AgentError> {
        let mut store = self.store();
        self.reload_locked(&mut store)
    }

    /// Is `feature` allowed now? Served from memory.
    #[inline]
    pub fn check(&self, feature: &str) -> Decision {
        let clock = &*self.inner.config.clock;
        let now = clock.now();
        let generation = self.inner.generation.load(Ordering::Acquire);
        // Lock-free fast path: this thread's copy of the current snapshot (one atomic load, no shared write). The
        // copy is busy only when a check runs inside a check (a clock that checks): that one reads the shared one.
        CHECK_CACHE.with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return self.snapshot().check(clock, now, feature);
            };
            if let Some((g, snap)) = cache.as_ref() {
                if *g == generation {
                    return snap.check(clock, now, feature);
                }
            }
            let snap = self.snapshot();
            let d = snap.check(clock, now, feature);
            *cache = Some((generation, snap));
            d
        })
    }

    /// [`Agent::check`], answered so that the asking application can verify it: the decision signed by the
    /// device key over `challenge` (16 to 64 bytes the application chose at random), with the vendor-signed
    /// artefacts it was decided from. What the application checks is in agent/README.md.
    pub fn check_attested(&self, feature: &str, challenge: &[u8]) -> Result<AttestedCheck, AgentError> {
        if !(16..=64).contains(&challenge.len()) {
            return Err(AgentError::Config("a challenge is 16 to 64 random bytes".into()));
        }
        let clock = &*self.inner.config.clock;
        let snap = self.snapshot();
        let now = clock.now();
        let decision = snap.decide(clock, now, Some(feature), 0);
        let payload = AttestedPayload {
            challenge: b64url(challenge),
            feature: feature.to_string(),
            allowed: decision.allowed,
            reason: decision.reason,
            decided_at: decision.facts.trusted_time.map_or(now, |t| t.max(now)),
            product_id: self.inner.config.product_id,
            license_id: snap.license.as_ref().map(|l| l.id),
            activation_id: snap.activation_id,
        };
        let bytes = serde_json::to_vec(&payload).map_err(AgentError::internal)?;
        let attestation = Envelope::seal(&self.inner.device, Domain::LocalAnswer, bytes).to_compact();
        Ok(AttestedCheck {
            decision,
            attestation,
            evidence: snap.evidence.as_deref().cloned(),
            device_public_key: b64url(&self.inner.device_public),
        })
    }

    /// Is the license usable at all (no particular feature)?
    pub fn check_license(&self) -> Decision {
        let clock = &*self.inner.config.clock;
        self.snapshot().decide(clock, clock.now(), None, 0)
    }

    /// Uses `amount` units of `feature`'s quota. When allowed, the usage event (with an idempotency id) is in the
    /// state file's queue before this returns; heartbeats send it to the server exactly once. If the state file
    /// cannot be written, the use is denied (SIGNATURE_INVALID; the cause is logged) rather than left unrecorded.
    pub fn consume(&self, feature: &str, amount: u64) -> Decision {
        match self.try_consume(feature, amount) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, feature, "usage could not be recorded; denying");
                Decision { allowed: false, reason: Reason::SignatureInvalid, facts: Default::default() }
            }
        }
    }

    /// [`Agent::consume`] that reports a state-file failure as an error.
    pub fn try_consume(&self, feature: &str, amount: u64) -> Result<Decision, AgentError> {
        let mut store = self.store();
        let now = self.inner.config.clock.now();
        let snap = self.snapshot();
        if amount > MAX_USAGE_AMOUNT {
            // No quota is this large; a bigger single record is a caller bug, not something to store.
            return Ok(Decision { allowed: false, reason: Reason::QuotaExceeded, facts: Default::default() });
        }
        let mut d = snap.decide(&*self.inner.config.clock, now, Some(feature), amount);
        if !d.allowed || amount == 0 {
            return Ok(d);
        }
        let ev = UsageEvent { id: Uuid::now_v7(), feature: feature.to_string(), amount, recorded_at: now };
        let clock = &*self.inner.config.clock;
        let trusted = store.tx(|tx| {
            state::enqueue_usage(tx, &ev)?;
            advance_trusted(tx, clock, snap.floor, Duration::zero())
        })?;
        let mut next = (*snap).clone();
        let total = next.usage.entry(feature.to_string()).or_insert(0);
        *total = total.saturating_add(amount);
        next.pending_usage += 1;
        next.clock.high_water = trusted.trusted;
        next.trusted = trusted;
        self.publish(next);
        if let Some(used) = d.facts.used.as_mut() {
            *used = used.saturating_add(amount);
        }
        if let Some(rem) = d.facts.remaining.as_mut() {
            *rem = rem.saturating_sub(i64::try_from(amount).unwrap_or(i64::MAX)).max(0);
        }
        Ok(d)
    }

    /// Status for people and scripts.
    pub fn status(&self) -> Status {
        let snap = self.snapshot();
        let cfg = &self.inner.config;
        let decision = snap.decide(&*cfg.clock, cfg.clock.now(), None, 0);
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
            usage: snap.usage.iter().map(|(k, v)| (k.clone(), *v)).collect(),
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

    fn client(&self) -> Result<&Client, AgentError> {
        self.inner.client.as_ref().ok_or(AgentError::NoServer)
    }

    /// Records a verified server time as trusted time.
    fn trust_server_time(&self, tx: &rusqlite::Connection, t: DateTime<Utc>) -> rusqlite::Result<()> {
        let clock = &*self.inner.config.clock;
        state::set_trusted_time(tx, &TrustedTime::from_server(t, clock.now(), clock.boot()))
    }

    /// Activates this device online with a license key.
    pub async fn activate(&self, key: &str) -> Result<Activated, AgentError> {
        let key = LicenseKey::parse(key).map_err(bad_key)?;
        let client = self.client()?;
        let cfg = &self.inner.config;
        let nonce = client::nonce();
        let body = ActivateRequest {
            license_key: key.expose().to_string(),
            product_id: Some(cfg.product_id),
            fingerprint: self.inner.identity.fingerprint.components().to_vec(),
            device_public_key: b64url(&self.inner.device_public),
            domain: self.inner.domain.as_deref().map(str::to_string),
            cpu: Some(cfg.cpu()),
            user_id: cfg.user_id.clone(),
            metadata: Some(DeviceMetadata {
                hostname: sysinfo::System::host_name().ok(),
                os: Some(std::env::consts::OS.to_string()),
                app_version: cfg.app_version.clone(),
                agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                other: Default::default(),
            }),
            nonce: nonce.clone(),
        };
        let v = client
            .post::<ActivateResult>(Endpoint::Activate, &body, &nonce, None, &cfg.keyset, ForActivation::Created)
            .await?;
        let r = v.result;
        if v.activation_id != Some(r.activation_id) {
            return Err(AgentError::UntrustedResponse(
                "the activation answer names another activation than the one it returns".into(),
            ));
        }
        let license = verify_license_file(&r.license_file, &cfg.keyset)
            .map_err(|e| AgentError::UntrustedResponse(format!("license file: {e}")))?
            .license;
        let token = verify_activation_token(&r.activation_token, &cfg.keyset)
            .map_err(|e| AgentError::UntrustedResponse(format!("activation token: {e}")))?;
        if token.device_public_key != self.inner.device_public
            || token.license_id != license.id
            || token.activation_id != r.activation_id
        {
            return Err(AgentError::UntrustedResponse("the activation token is for another device or license".into()));
        }
        if license.product_id != cfg.product_id {
            return Err(AgentError::Refused(format!(
                "this license is for product {}, not {}: check --product / TESSERA_PRODUCT_ID",
                license.product_id, cfg.product_id
            )));
        }
        let row = ActivationRow {
            mode: Mode::Online,
            key_hash: key.hash(),
            activation_id: Some(r.activation_id),
            license_file: canonical_license_file(&r.license_file),
            activation_token: canonical_compact(&r.activation_token),
            request_bytes: None,
            response_code: None,
            fingerprint: None,
            last_response: None,
            heartbeat_interval_secs: Some(r.heartbeat_interval_secs),
            activated_at: cfg.clock.now(),
        };
        let mut store = self.store();
        store.tx(|tx| {
            state::put_activation(tx, &row)?;
            state::delete_pending(tx, &row.key_hash)?;
            self.trust_server_time(tx, v.server_time)
        })?;
        self.reload_locked(&mut store)?;
        Ok(Activated {
            activation_id: r.activation_id,
            license_id: license.id,
            reused: r.reused,
            lease_expires_at: token.lease_expires_at,
            heartbeat_interval_secs: token.heartbeat_interval_secs,
            features: license.features,
            expires_at: license.expires_at,
        })
    }

    /// One heartbeat: sends queued usage, refreshes lease and license, applies status changes at once.
    pub async fn heartbeat(&self) -> Result<HeartbeatOutcome, AgentError> {
        let client = self.client()?;
        let cfg = &self.inner.config;
        let (activation, queue) = {
            let store = self.store();
            let a = store.activation()?.ok_or(AgentError::NotActivated)?;
            (a, store.usage_queue(USAGE_BATCH)?)
        };
        let activation_id = match (activation.mode, activation.activation_id) {
            (Mode::Online, Some(id)) => id,
            _ => {
                return Err(AgentError::Refused(
                    "this device was activated offline: there is no server activation to heartbeat; use request-code / apply-code to renew".into(),
                ))
            }
        };
        let nonce = client::nonce();
        let sent = queue.len();
        let body = HeartbeatRequest {
            activation_id,
            nonce: nonce.clone(),
            sent_at: cfg.clock.now(),
            usage: queue,
            metrics: Some(AgentMetrics {
                agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                other: Default::default(),
            }),
            // The host as it is now: one activation heard from two different hosts is flagged by the server.
            fingerprint_digest: Some(hex::encode(self.inner.identity.fingerprint.digest())),
            // What this device holds already: the server sends a license file or token only when it changed.
            held: Held {
                license_file: activation.license_file.as_deref().map(sha256_hex),
                activation_token: activation.activation_token.as_deref().map(sha256_hex),
            },
        };
        let v = client
            .post::<HeartbeatResult>(
                Endpoint::Heartbeat,
                &body,
                &nonce,
                Some(&self.inner.device),
                &cfg.keyset,
                ForActivation::Is(activation_id),
            )
            .await?;
        let r = v.result;
        let deactivated = r.activation_status == ActivationStatus::Deactivated;
        // Verify everything before storing anything.
        let mut new_license_file = None;
        let mut new_token = None;
        let interval = r.next_heartbeat_secs;
        let mut lease = None;
        if !deactivated {
            if let Some(lf) = &r.license_file {
                let l = verify_license_file(lf, &cfg.keyset)
                    .map_err(|e| AgentError::UntrustedResponse(format!("license file: {e}")))?;
                new_license_file = canonical_license_file(lf).map(|c| (c, l.license.id));
            }
            if let Some(tok) = &r.activation_token {
                let t = verify_activation_token(tok, &cfg.keyset)
                    .map_err(|e| AgentError::UntrustedResponse(format!("activation token: {e}")))?;
                if t.device_public_key != self.inner.device_public || t.activation_id != activation_id {
                    return Err(AgentError::UntrustedResponse(
                        "the refreshed activation token is for another device".into(),
                    ));
                }
                lease = Some(t.lease_expires_at);
                new_token = canonical_compact(tok);
            }
        }
        let mut store = self.store();
        let acknowledged = store.tx(|tx| {
            let n = state::ack_usage(tx, &r.accepted_usage)?;
            for (feature, total) in &r.usage_totals {
                state::set_usage_total(tx, feature, *total)?;
            }
            self.trust_server_time(tx, v.server_time)?;
            if deactivated {
                state::delete_activation(tx)?;
            } else if let Some(mut row) =
                tx.query_row("SELECT 1 FROM activation", [], |_| Ok(())).ok().map(|_| activation.clone())
            {
                if let Some((lf, _)) = &new_license_file {
                    row.license_file = Some(lf.clone());
                }
                if let Some(tok) = &new_token {
                    row.activation_token = Some(tok.clone());
                }
                row.last_response = canonical_compact(&v.signed);
                row.heartbeat_interval_secs = Some(interval);
                state::put_activation(tx, &row)?;
            }
            Ok(n)
        })?;
        self.reload_locked(&mut store)?;
        Ok(HeartbeatOutcome {
            activation_status: r.activation_status,
            license_status: r.license_status,
            lease_expires_at: lease,
            next_heartbeat_secs: interval,
            usage_sent: sent,
            usage_acknowledged: acknowledged,
            server_time: v.server_time,
        })
    }

    /// Deactivates online (frees the seat) after a last attempt to send queued usage; then removes the
    /// activation locally.
    pub async fn deactivate(&self) -> Result<(), AgentError> {
        let client = self.client()?;
        let cfg = &self.inner.config;
        let activation = self.store().activation()?.ok_or(AgentError::NotActivated)?;
        let Some(activation_id) = activation.activation_id.filter(|_| activation.mode == Mode::Online) else {
            return Err(AgentError::Refused(
                "this device was activated offline: use `tessera-agent deactivate --offline` and hand the receipt code to the vendor".into(),
            ));
        };
        if let Err(e) = self.heartbeat().await {
            tracing::warn!(error = %e, "could not flush usage before deactivating");
        }
        let nonce = client::nonce();
        let body = DeactivateRequest { activation_id, nonce: nonce.clone(), sent_at: cfg.clock.now() };
        let v = client
            .post::<DeactivateResult>(
                Endpoint::Deactivate,
                &body,
                &nonce,
                Some(&self.inner.device),
                &cfg.keyset,
                ForActivation::Is(activation_id),
            )
            .await?;
        if !v.result.deactivated {
            return Err(AgentError::Refused("the server did not confirm the deactivation: try again".into()));
        }
        let mut store = self.store();
        store.tx(|tx| {
            state::delete_activation(tx)?;
            self.trust_server_time(tx, v.server_time)
        })?;
        self.reload_locked(&mut store)
    }

    /// Makes an offline request code for `key` and records it as pending.
    pub fn request_code(&self, key: &str) -> Result<String, AgentError> {
        let key = LicenseKey::parse(key).map_err(bad_key)?;
        let key_hash = key.hash();
        let now = self.inner.config.clock.now();
        let fp = &self.inner.identity.fingerprint;
        let mut commitment = [0u8; 10];
        commitment.copy_from_slice(&fp.digest()[..10]);
        let mut nonce = [0u8; 2];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let req = OfflineRequest {
            key_hint: key.hint(),
            device_public_key: self.inner.device_public,
            fingerprint_commitment: commitment,
            created_at: now,
            nonce: u16::from_be_bytes(nonce),
        };
        let (code, signed) = req.sign(&key_hash, &self.inner.device).map_err(AgentError::internal)?;
        let pending = PendingRequest {
            key_hash,
            request_bytes: signed.bytes,
            fingerprint: serde_json::to_string(fp).map_err(AgentError::internal)?,
            code: code.clone(),
            created_at: now,
        };
        let mut store = self.store();
        store.tx(|tx| state::put_pending(tx, &pending))?;
        self.reload_locked(&mut store)?;
        Ok(code)
    }

    /// Applies a response code (answering a pending request) or an emergency code.
    pub fn apply_code(&self, text: &str) -> Result<Applied, AgentError> {
        self.apply_code_with_key(text, None)
    }

    /// [`Agent::apply_code`]; `key` names the license of an emergency code on a machine that has neither an
    /// activation nor a pending request for it.
    pub fn apply_code_with_key(&self, text: &str, key: Option<&str>) -> Result<Applied, AgentError> {
        match CodeKind::detect(text) {
            Some(CodeKind::OfflineResponse) => self.apply_response(text),
            Some(CodeKind::Emergency) => self.apply_emergency(text, key),
            Some(other) => Err(AgentError::BadCode(format!(
                "this is an {other}; apply-code takes an offline response code (RSP1-…) or an emergency code (EMG1-…)"
            ))),
            None => Err(AgentError::BadCode(
                "not a Tessera code: apply-code takes an offline response code (RSP1-…) or an emergency code (EMG1-…)"
                    .into(),
            )),
        }
    }

    fn apply_response(&self, text: &str) -> Result<Applied, AgentError> {
        let resp = SignedResponse::decode(text).map_err(|e| AgentError::BadCode(e.to_string()))?;
        let cfg = &self.inner.config;
        let now = cfg.clock.now();
        let mut store = self.store();
        let pending = store.pending_requests()?;
        let matched = pending.into_iter().find(|p| {
            SignedRequest::from_bytes(p.request_bytes.clone()).ok().is_some_and(|req| {
                resp.verify(&cfg.keyset, &license_binding(&p.key_hash, &cfg.product_id), &req).is_ok()
            })
        });
        let Some(p) = matched else {
            return Err(AgentError::Refused(
                "this response code does not answer a pending request of this device: it was made for another device or request, or it was applied already. Run `tessera-agent request-code --key ...` and get a response for the new request".into(),
            ));
        };
        let grant = &resp.grant;
        if let Some(lease) = grant.lease_expires_at.filter(|l| *l <= now) {
            return Err(AgentError::Refused(format!(
                "this response's lease ended at {lease}: request a new response code"
            )));
        }
        let row = ActivationRow {
            mode: Mode::Offline,
            key_hash: p.key_hash,
            activation_id: None,
            license_file: None,
            activation_token: None,
            request_bytes: Some(p.request_bytes.clone()),
            response_code: canonical_code(CodeKind::OfflineResponse, text),
            fingerprint: Some(p.fingerprint.clone()),
            last_response: None,
            heartbeat_interval_secs: None,
            activated_at: now,
        };
        let floor = self.snapshot().floor;
        store.tx(|tx| {
            state::put_activation(tx, &row)?;
            state::delete_pending(tx, &p.key_hash)?;
            advance_trusted(tx, &*cfg.clock, floor, Duration::zero()).map(|_| ())
        })?;
        self.reload_locked(&mut store)?;
        Ok(Applied::Activation {
            license_id: grant.license_id,
            license_type: grant.license_type,
            features: grant.features.clone(),
            expires_at: grant.expires_at,
            lease_expires_at: grant.lease_expires_at,
        })
    }

    fn apply_emergency(&self, text: &str, key: Option<&str>) -> Result<Applied, AgentError> {
        let code = SignedEmergency::decode(text).map_err(|e| AgentError::BadCode(e.to_string()))?;
        let cfg = &self.inner.config;
        let now = cfg.clock.now();
        let snap = self.snapshot();
        if snap.trusted.is_rolled_back(now, cfg.clock_tolerance) {
            return Err(AgentError::Refused(format!(
                "the system clock is behind the last trusted time ({}): correct the clock, then apply the code",
                snap.clock.high_water
            )));
        }
        let mut store = self.store();
        let mut candidates: Vec<[u8; 32]> = Vec::new();
        if let Some(k) = key {
            candidates.push(LicenseKey::parse(k).map_err(bad_key)?.hash());
        }
        if let Some(a) = store.activation()? {
            candidates.push(a.key_hash);
        }
        candidates.extend(store.pending_requests()?.into_iter().map(|p| p.key_hash));
        if candidates.is_empty() {
            return Err(AgentError::Refused(
                "this machine has no activation or pending request naming a license: pass the license key (`apply-code --key TSK-…`)".into(),
            ));
        }
        let Some(key_hash) = candidates.into_iter().find(|kh| {
            code.verify(&cfg.keyset, &license_binding(kh, &cfg.product_id), &self.inner.device_public).is_ok()
        }) else {
            return Err(AgentError::Refused(
                "this emergency code is not valid for this license and device (it was issued for another license or bound to another device, or it is damaged)".into(),
            ));
        };
        let c = &code.code;
        if c.expires_at <= now {
            return Err(AgentError::Refused(format!(
                "this emergency code expired at {}: ask vendor support for a new one",
                c.expires_at
            )));
        }
        if c.scope == EmergencyScope::LicensedFeatures && !(snap.license.is_some() && snap.key_hash == Some(key_hash)) {
            return Err(AgentError::Refused(
                "this emergency code unlocks the features of this machine's license, but the machine holds no valid \
                 license for it: activate it first (online, or offline with a response code), or ask vendor support \
                 for an all-features emergency code"
                    .into(),
            ));
        }
        let canonical = canonical_code(CodeKind::Emergency, text)
            .ok_or_else(|| AgentError::BadCode("the emergency code cannot be re-encoded".into()))?;
        if now + cfg.clock_tolerance < emergency_floor(c.expires_at) {
            return Err(AgentError::Refused(format!(
                "the system clock ({now}) is behind the time this emergency code was issued (no earlier than {}): \
                 correct the clock, then apply the code",
                emergency_floor(c.expires_at)
            )));
        }
        let floor = Some(snap.floor.map_or(emergency_floor(c.expires_at), |f| f.max(emergency_floor(c.expires_at))));
        let inserted = store.tx(|tx| {
            let ok = state::insert_emergency(tx, &key_hash, c.serial, &canonical, c.expires_at, now)?;
            if ok {
                advance_trusted(tx, &*cfg.clock, floor, Duration::zero())?;
            }
            Ok(ok)
        })?;
        if !inserted {
            return Err(AgentError::Refused(format!(
                "emergency code serial {} was already applied on this device; each code works once per device: ask vendor support for a new one",
                c.serial
            )));
        }
        self.reload_locked(&mut store)?;
        Ok(Applied::Emergency { serial: c.serial, scope: c.scope, bound: c.bound, expires_at: c.expires_at })
    }

    /// Removes the activation locally and returns a deactivation receipt code, signed by the device key, that the
    /// customer hands back to the vendor to free the seat.
    pub fn deactivate_offline(&self) -> Result<String, AgentError> {
        let mut store = self.store();
        let a = store.activation()?.ok_or(AgentError::NotActivated)?;
        // The receipt names the grant it ends; the server refuses it for any other grant of this device.
        let grant = match (a.mode, &a.request_bytes, a.activation_id) {
            (Mode::Offline, Some(req), _) => offline_grant_tag(req),
            (Mode::Online, _, Some(id)) => online_grant_tag(&id),
            _ => return Err(AgentError::Refused("the stored activation is incomplete: it names no grant".into())),
        };
        // Never dated before what the signed artefacts vouch for (the server refuses receipts older than the
        // grant they end, and a clock set back must not make this device's receipt look like one).
        let now = self.inner.config.clock.now();
        let now = self.snapshot().floor.map_or(now, |f| now.max(f));
        let receipt = DeactivationReceipt::for_device(&a.key_hash, &self.inner.device_public, grant, now)
            .sign(&a.key_hash, &self.inner.device)
            .map_err(AgentError::internal)?;
        store.tx(|tx| state::delete_activation(tx))?;
        self.reload_locked(&mut store)?;
        Ok(receipt)
    }

    /// Advances trusted time by the time elapsed since it was last recorded, and records it.
    pub fn touch_clock(&self) -> Result<(), AgentError> {
        let mut store = self.store();
        let snap = self.snapshot();
        let trusted = store.tx(|tx| advance_trusted(tx, &*self.inner.config.clock, snap.floor, Duration::zero()))?;
        if trusted != snap.trusted {
            let mut next = (*snap).clone();
            next.clock.high_water = trusted.trusted;
            next.trusted = trusted;
            self.publish(next);
        }
        Ok(())
    }

    /// True when the device holds an online activation (heartbeats apply).
    pub fn is_online_activated(&self) -> bool {
        let s = self.snapshot();
        s.mode == Some(Mode::Online) && self.inner.client.is_some()
    }

    /// Runs heartbeats in the background at the server-set interval, with ±10 % jitter and exponential
    /// backoff (from 15 s, capped at the interval) while the server is unreachable. Also refreshes the snapshot
    /// from the state file every minute (picks up codes applied by another process) and persists local time.
    /// Call from within a Tokio runtime; abort the returned handle to stop.
    pub fn spawn_heartbeats(&self) -> tokio::task::JoinHandle<()> {
        let agent = self.clone();
        tokio::spawn(async move { agent.heartbeat_loop().await })
    }

    async fn heartbeat_loop(&self) {
        let mut failures: u32 = 0;
        let mut next_beat = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_beat {
                if self.is_online_activated() {
                    match self.heartbeat().await {
                        Ok(o) => {
                            failures = 0;
                            tracing::info!(
                                status = o.activation_status.as_str(),
                                usage_acknowledged = o.usage_acknowledged,
                                "heartbeat"
                            );
                            let interval = std::time::Duration::from_secs(u64::from(o.next_heartbeat_secs.max(1)));
                            let lease_left = self.snapshot().lease_expires_at.map(|l| {
                                (l - self.inner.config.clock.now()).to_std().unwrap_or(std::time::Duration::ZERO)
                            });
                            next_beat = now + next_heartbeat_in(jitter(interval), interval, lease_left);
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let delay = backoff(failures, self.heartbeat_interval());
                            tracing::warn!(error = %e, retry_in_secs = delay.as_secs(), "heartbeat failed");
                            next_beat = now + delay;
                        }
                    }
                } else {
                    next_beat = now + std::time::Duration::from_secs(60);
                }
            } else {
                if let Err(e) = self.refresh() {
                    tracing::warn!(error = %e, "could not re-read the state file");
                }
                if let Err(e) = self.touch_clock() {
                    tracing::warn!(error = %e, "could not persist the trusted time");
                }
            }
            let wait = next_beat
                .saturating_duration_since(tokio::time::Instant::now())
                .min(std::time::Duration::from_secs(60));
            tokio::time::sleep(wait.max(std::time::Duration::from_millis(50))).await;
        }
    }
}

fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX)
}

/// When the next heartbeat is due: after the (jittered) interval, but early enough that the lease cannot
/// lapse before it: at most the lease left less a margin (a tenth of the interval, at least 5 s), and never
/// sooner than a second from now.
pub fn next_heartbeat_in(
    jittered: std::time::Duration,
    interval: std::time::Duration,
    lease_left: Option<std::time::Duration>,
) -> std::time::Duration {
    let margin = (interval / 10).max(std::time::Duration::from_secs(5));
    match lease_left {
        Some(left) => jittered.min(left.saturating_sub(margin)).max(std::time::Duration::from_secs(1)),
        None => jittered,
    }
}

/// `d` ± 10 %.
pub fn jitter(d: std::time::Duration) -> std::time::Duration {
    d.mul_f64(0.9 + 0.2 * random_unit())
}

/// Exponential backoff after `failures` consecutive failures: 15 s, 30 s, 60 s … capped at `cap`, with jitter.
pub fn backoff(failures: u32, cap: std::time::Duration) -> std::time::Duration {
    let base = std::time::Duration::from_secs(15).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    jitter(base.min(cap.max(std::time::Duration::from_secs(1))))
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

/// The license an offline response grants, in the model the decision function takes.
pub fn license_from_grant(g: &OfflineGrant, product_id: Uuid) -> License {
    License {
        id: g.license_id,
        tenant_id: Uuid::nil(),
        product_id,
        customer_id: None,
        template_id: None,
        license_type: g.license_type,
        license_model: g.license_model,
        status: LicenseStatus::Active,
        max_activations: 0,
        issued_at: g.issued_at,
        starts_at: g.starts_at,
        expires_at: g.expires_at,
        maintenance_expires_at: g.maintenance_expires_at,
        grace_days: u32::from(g.grace_days),
        features: g.features.clone(),
        restrictions: Vec::new(),
        fingerprint_policy: g.fingerprint_policy.clone(),
        heartbeat_interval_secs: DEFAULT_HEARTBEAT_SECS,
        lease_secs: DEFAULT_LEASE_SECS,
        metadata: BTreeMap::new(),
    }
}

/// What a verified activation contributes to the snapshot.
struct Bound {
    /// The latest time the signed artefacts vouch for: the clock cannot be trusted to be earlier than this.
    trusted_floor: DateTime<Utc>,
    license: License,
    fingerprint: MatchOutcome,
    lease_expires_at: Option<DateTime<Utc>>,
    /// PER_CPU / PER_CORE: the processors the token counted, and the machine's now.
    hardware: Option<HardwareCount>,
    activation_id: Option<Uuid>,
    heartbeat_interval_secs: u32,
    /// Usage totals from the last verified server answer: quota counts never fall below them, whatever the
    /// unsigned rows of the state file say.
    signed_usage: HashMap<String, u64>,
    /// The client country the activation token carries (GEOGRAPHIC restrictions).
    country: Option<String>,
}

fn verify_activation(
    cfg: &AgentConfig,
    a: &ActivationRow,
    device_public: &[u8; 32],
    current: &Fingerprint,
) -> Result<Bound, String> {
    let keys = &cfg.keyset;
    match a.mode {
        Mode::Online => {
            let lf = a.license_file.as_deref().ok_or("the cached license file is missing")?;
            require_canonical(lf, canonical_license_file(lf), "license file")?;
            let file = verify_license_file(lf, keys)
                .map_err(|e| format!("the cached license file failed verification ({e})"))?;
            let (license, file_signed_at) = (file.license, file.signed_at);
            let tok = a.activation_token.as_deref().ok_or("the cached activation token is missing")?;
            require_canonical(tok, canonical_compact(tok), "activation token")?;
            let claims = verify_activation_token(tok, keys)
                .map_err(|e| format!("the cached activation token failed verification ({e})"))?;
            if claims.device_public_key != device_public {
                return Err("the cached activation token belongs to another device key".into());
            }
            if claims.license_id != license.id || Some(claims.activation_id) != a.activation_id {
                return Err("the cached activation token and license file do not belong together".into());
            }
            if license.product_id != cfg.product_id {
                return Err(format!(
                    "the cached license is for product {}, not {}",
                    license.product_id, cfg.product_id
                ));
            }
            let mut license = license;
            let mut trusted_floor = file_signed_at.max(claims.issued_at);
            let mut signed_usage = HashMap::new();
            if let Some(lr) = &a.last_response {
                require_canonical(lr, canonical_compact(lr), "server answer")?;
                // Only a heartbeat answer for this very activation counts: one copied from another activation's
                // state, or an answer of another endpoint, is refused like any other tampering.
                let opened: client::Opened<StoredHeartbeat> =
                    client::open_signed(lr, keys, None, Endpoint::Heartbeat, ForActivation::Is(claims.activation_id))
                        .map_err(|e| format!("the cached server answer failed verification ({e})"))?;
                let (r, server_time) = (opened.result, opened.server_time);
                if let Some(s) = r.license_status {
                    license.status = s;
                }
                trusted_floor = trusted_floor.max(server_time);
                signed_usage = r.usage_totals.into_iter().map(|(f, n)| (f, n.max(0) as u64)).collect();
            }
            // Processors are counted only for licenses that count them (reading them costs a file read), and
            // only against a token that says what was counted.
            let hardware = match (license.license_model, claims.seats) {
                (LicenseModel::PerCpu, Some(counted)) => Some(HardwareCount { counted, present: cfg.cpu().sockets }),
                (LicenseModel::PerCore, Some(counted)) => Some(HardwareCount { counted, present: cfg.cpu().cores }),
                _ => None,
            };
            Ok(Bound {
                trusted_floor,
                fingerprint: match_fingerprint(&claims.fingerprint_policy, &claims.fingerprint, current),
                lease_expires_at: Some(claims.lease_expires_at),
                hardware,
                activation_id: Some(claims.activation_id),
                heartbeat_interval_secs: a.heartbeat_interval_secs.unwrap_or(claims.heartbeat_interval_secs),
                license,
                signed_usage,
                country: claims.country,
            })
        }
        Mode::Offline => {
            let req = a
                .request_bytes
                .clone()
                .ok_or("the cached offline request is missing")
                .and_then(|b| SignedRequest::from_bytes(b).map_err(|_| "the cached offline request is damaged"))?;
            let code = a.response_code.as_deref().ok_or("the cached offline response is missing")?;
            require_canonical(code, canonical_code(CodeKind::OfflineResponse, code), "offline response")?;
            let resp = SignedResponse::decode(code).map_err(|_| "the cached offline response is damaged")?;
            resp.verify(keys, &license_binding(&a.key_hash, &cfg.product_id), &req)
                .map_err(|e| format!("the cached offline response failed verification ({e})"))?;
            if req.request.device_public_key != *device_public {
                return Err("the cached offline activation belongs to another device key".into());
            }
            let bound: Fingerprint = a
                .fingerprint
                .as_deref()
                .and_then(|f| serde_json::from_str(f).ok())
                .ok_or("the cached fingerprint is missing or damaged")?;
            if bound.digest()[..10] != req.request.fingerprint_commitment {
                return Err("the cached fingerprint does not match the signed request".into());
            }
            let g = &resp.grant;
            Ok(Bound {
                trusted_floor: g.issued_at,
                fingerprint: match_fingerprint(&g.fingerprint_policy, &bound, current),
                lease_expires_at: g.lease_expires_at,
                hardware: None,
                activation_id: None,
                heartbeat_interval_secs: DEFAULT_HEARTBEAT_SECS,
                license: license_from_grant(g, cfg.product_id),
                signed_usage: HashMap::new(),
                country: None,
            })
        }
    }
}

/// Reads and verifies the whole state into a snapshot. Nothing fails open: any verification failure clears the
/// license and marks signatures invalid.
fn load(
    cfg: &AgentConfig,
    store: &mut Store,
    device_public: &[u8; 32],
    current: &Fingerprint,
    domain: Option<Arc<str>>,
) -> Result<Snapshot, AgentError> {
    let now = cfg.clock.now();
    let mut snap = Snapshot {
        license: None,
        signatures_valid: true,
        fingerprint: None,
        lease_expires_at: None,
        hardware: None,
        clock: ClockGuard { high_water: now, tolerance: cfg.clock_tolerance },
        trusted: TrustedTime::start(now, None),
        floor: None,
        build_date: cfg.build_date,
        emergency: None,
        emergency_serial: None,
        usage: store.usage_by_feature()?.into_iter().collect(),
        mode: None,
        activation_id: None,
        key_hash: None,
        heartbeat_interval_secs: DEFAULT_HEARTBEAT_SECS,
        problem: None,
        pending_usage: store.pending_usage_count()?,
        pending_requests: store.pending_requests()?.len(),
        evidence: None,
        domain,
        country: None,
        settled: Vec::new(),
    };
    let activation = store.activation()?;
    if let Some(a) = &activation {
        snap.mode = Some(a.mode);
        snap.key_hash = Some(a.key_hash);
        snap.activation_id = a.activation_id;
        match verify_activation(cfg, a, device_public, current) {
            Ok(b) => {
                // Signed times are a floor for trusted time even if the stored mark was lowered or deleted.
                snap.floor = Some(b.trusted_floor);
                snap.license = Some(b.license);
                snap.fingerprint = Some(b.fingerprint);
                snap.lease_expires_at = b.lease_expires_at;
                snap.hardware = b.hardware;
                snap.activation_id = b.activation_id.or(a.activation_id);
                snap.heartbeat_interval_secs = b.heartbeat_interval_secs.max(1);
                snap.evidence = evidence_of(a).map(Arc::new);
                snap.country = b.country.map(Arc::from);
                if !b.signed_usage.is_empty() {
                    let queued: HashMap<String, u64> = store.queued_usage_by_feature()?.into_iter().collect();
                    for (feature, total) in b.signed_usage {
                        let floor = total.saturating_add(queued.get(&feature).copied().unwrap_or(0));
                        let used = snap.usage.entry(feature).or_insert(0);
                        *used = (*used).max(floor);
                    }
                }
            }
            Err(problem) => {
                tracing::warn!(%problem, "cached activation rejected");
                snap.signatures_valid = false;
                snap.problem = Some(problem);
            }
        }
    }
    for row in store.emergencies()? {
        if row.ended || activation.as_ref().is_some_and(|a| a.key_hash != row.key_hash) {
            continue;
        }
        let canonical = canonical_code(CodeKind::Emergency, &row.code);
        let Some(code) = canonical.filter(|c| *c == row.code).and_then(|c| SignedEmergency::decode(&c).ok()) else {
            snap.signatures_valid = false;
            snap.problem = Some("a cached emergency code is damaged".into());
            continue;
        };
        if code.code.expires_at <= now {
            continue;
        }
        if code.code.serial != row.serial
            || code.verify(&cfg.keyset, &license_binding(&row.key_hash, &cfg.product_id), device_public).is_err()
        {
            snap.signatures_valid = false;
            snap.problem = Some("a cached emergency code failed verification".into());
            continue;
        }
        let issued_no_earlier = emergency_floor(code.code.expires_at);
        snap.floor = Some(snap.floor.map_or(issued_no_earlier, |f| f.max(issued_no_earlier)));
        if snap.emergency.is_none_or(|e| e.expires_at < code.code.expires_at) {
            snap.emergency = Some(EmergencyGrant { expires_at: code.code.expires_at, scope: code.code.scope });
            snap.emergency_serial = Some(code.code.serial);
        }
    }
    if !snap.signatures_valid {
        snap.license = None;
        snap.emergency = None;
        snap.evidence = None;
    }
    // Record trusted time with a coarse granularity (far below the tolerance): a `check` process then usually
    // opens the state without a write (and its fsync).
    let granularity = (cfg.clock_tolerance / 4).min(Duration::seconds(60));
    let trusted = advance_trusted(store.conn(), &*cfg.clock, snap.floor, granularity).map_err(|e| store.err(e))?;
    snap.clock.high_water = trusted.trusted;
    snap.trusted = trusted;
    Ok(snap)
}

/// The earliest an emergency code can have been issued: its expiry less the longest validity a server issues
/// ([`EmergencyPolicy::MAX_VALIDITY_HOURS`]). Trusted time never falls below it once the code is applied (and
/// while it is stored), so a state restored from a backup with the clock set back cannot stretch a code beyond
/// that window. (The exact issue time would bound it to the code's own validity, but costs a byte the 150-character
/// budget does not have.)
fn emergency_floor(expires_at: DateTime<Utc>) -> DateTime<Utc> {
    expires_at - Duration::hours(i64::from(tessera_core::model::EmergencyPolicy::MAX_VALIDITY_HOURS))
}

/// The artefacts of a verified activation row.
fn evidence_of(a: &ActivationRow) -> Option<Evidence> {
    match a.mode {
        Mode::Online => Some(Evidence::Online {
            license_file: a.license_file.clone()?,
            activation_token: a.activation_token.clone()?,
            last_server_answer: a.last_response.clone(),
        }),
        Mode::Offline => Some(Evidence::Offline {
            offline_request: b64url(a.request_bytes.as_deref()?),
            offline_response: a.response_code.clone()?,
        }),
    }
}

/// Reads the recorded trusted time, advances it by the time elapsed since (see [`TrustedTime`]), raises it to
/// `floor` (what verified artefacts vouch for), and records the result unless a later recomputation from the
/// record would give the same (`granularity`: how far trusted time may move before it must be recorded).
fn advance_trusted(
    c: &rusqlite::Connection,
    clock: &dyn Clock,
    floor: Option<DateTime<Utc>>,
    granularity: Duration,
) -> rusqlite::Result<TrustedTime> {
    let (now, boot) = (clock.now(), clock.boot());
    let stored = state::trusted_time(c)?;
    let mut next = match &stored {
        Some(s) => s.observe(now, boot),
        None => TrustedTime::start(now, boot),
    };
    if let Some(f) = floor {
        next.raise_to(f);
    }
    if stored.as_ref().is_none_or(|s| next.needs_save(s, granularity)) {
        state::set_trusted_time(c, &next)?;
    }
    Ok(next)
}
