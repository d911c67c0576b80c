//! Configuration, in layers: defaults, then a TOML file (`--config`), then `TESSERA_*` environment variables
//! (secrets also as `TESSERA_*_FILE`, naming a file that holds the value), then command-line flags (applied by
//! the binary). Secrets are redacted in `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML for tessera-server: {reason}")]
    Parse { path: String, reason: String },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Env { name: String, value: String, reason: String },
    #[error("cannot read {name} (from {path}): {reason}")]
    SecretFile { name: String, path: String, reason: String },
}

/// A secret value; `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// How heartbeats that change nothing durable ("quiet" ones: no usage, token and lease kept) are audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatAudit {
    /// One audit row per heartbeat.
    Each,
    /// One row per tenant per deferred batch (a few milliseconds), listing each heartbeat's activation, time and
    /// address: every call is still recorded, at a fraction of the cost.
    Batched,
    /// Not recorded (the activation's last-seen time still moves).
    Changes,
}

impl HeartbeatAudit {
    /// `each`, `batched`, `changes`; `true`/`false` (the older boolean setting) mean `each`/`changes`.
    pub fn parse(s: &str) -> Option<HeartbeatAudit> {
        match s.trim().to_ascii_lowercase().as_str() {
            "each" | "true" | "1" | "yes" | "on" => Some(HeartbeatAudit::Each),
            "batched" => Some(HeartbeatAudit::Batched),
            "changes" | "false" | "0" | "no" | "off" => Some(HeartbeatAudit::Changes),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for HeartbeatAudit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(HeartbeatAudit::Each),
            Raw::Bool(false) => Ok(HeartbeatAudit::Changes),
            Raw::Text(s) => HeartbeatAudit::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!("audit_heartbeats: expected each, batched or changes, not {s:?}"))
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Client requests per second per IP address (0: no limit).
    pub per_ip_per_sec: f64,
    pub per_ip_burst: f64,
    /// Client requests per second per license key (0: no limit).
    pub per_key_per_sec: f64,
    pub per_key_burst: f64,
    /// Admin API requests per second per IP address, counted before the token is checked (0: no limit).
    pub admin_per_ip_per_sec: f64,
    pub admin_per_ip_burst: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_ip_per_sec: 500.0,
            per_ip_burst: 1000.0,
            per_key_per_sec: 100.0,
            per_key_burst: 300.0,
            admin_per_ip_per_sec: 50.0,
            admin_per_ip_burst: 200.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Jobs {
    /// How often the lifecycle jobs run (0: never).
    pub interval_secs: u64,
    /// Record an "expiring soon" event this many days ahead of a license's expiry.
    pub expiring_soon_days: u32,
    /// Delete deactivated activations this many days after deactivation.
    pub purge_deactivated_after_days: u32,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs { interval_secs: 60, expiring_soon_days: 14, purge_deactivated_after_days: 90 }
    }
}

/// What a commit waits for before the request is answered (`synchronous` in the config; each backend maps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// On disk before the answer: survives a power loss (the default).
    Full,
    /// Survives a crash of the server process; a power loss may lose the last commits.
    Normal,
    /// Waits for nothing (tests and benchmarks only).
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `host:port`; port 0 picks a free port.
    pub listen: String,
    /// `host:port` of the gRPC API (`tessera.v1.Licensing`, for backends); `None` (the default): not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<String>,
    pub synchronous: Durability,
    /// Read connections kept open (one per concurrent read; more are opened on demand).
    pub read_connections: usize,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    pub rate_limits: RateLimits,
    pub jobs: Jobs,
    /// Record every validate call in the audit log (a write per call).
    pub audit_validate: bool,
    /// How heartbeats that change nothing durable are audited (refusals and heartbeats that renew a lease, carry
    /// usage or find the activation or license unusable always get their own row).
    pub audit_heartbeats: HeartbeatAudit,
    /// Vendor-admin token to create on first start instead of a random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    /// Bearer token that may read `/metrics` (for a Prometheus scraper); a vendor-admin API token may too. Without
    /// either, `/metrics` answers 401. At least 16 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<Secret>,
    /// Trust `X-Forwarded-For` for the client address (behind a reverse proxy).
    pub trust_forwarded_for: bool,
    /// A GeoIP country database (MaxMind format, e.g. GeoLite2-Country.mmdb): with one, `GEOGRAPHIC`
    /// restrictions are decided on the client address's country; without, they never deny online.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geoip_db: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tessera-data"),
            listen: "127.0.0.1:8080".into(),
            grpc_listen: None,
            synchronous: Durability::Full,
            read_connections: 64,
            body_limit_bytes: 256 * 1024,
            request_timeout_secs: 30,
            rate_limits: RateLimits::default(),
            jobs: Jobs::default(),
            audit_validate: true,
            audit_heartbeats: HeartbeatAudit::Batched,
            admin_token: None,
            metrics_token: None,
            trust_forwarded_for: false,
            geoip_db: None,
        }
    }
}

/// Shortest accepted metrics token.
pub const MIN_METRICS_TOKEN_LEN: usize = 16;

impl Config {
    /// Checks what the layers cannot check one by one (called when the server opens its data directory).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.metrics_token {
            if t.0.chars().count() < MIN_METRICS_TOKEN_LEN {
                return Err(format!(
                    "the metrics token (metrics_token / TESSERA_METRICS_TOKEN) must be at least \
                     {MIN_METRICS_TOKEN_LEN} characters: generate one, e.g. with `openssl rand -hex 24`"
                ));
            }
        }
        Ok(())
    }

    /// Defaults with this data directory, listening on a free loopback port (for tests and embedding).
    pub fn for_data_dir(path: impl Into<PathBuf>) -> Config {
        Config { data_dir: path.into(), listen: "127.0.0.1:0".into(), ..Config::default() }
    }

    /// Defaults, then the TOML file if given, then the environment.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut c = match file {
            Some(p) => Config::from_toml_file(p)?,
            None => Config::default(),
        };
        c.apply_env(env)?;
        Ok(c)
    }

    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), source: e })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), reason: e.to_string() })
    }

    /// Applies `TESSERA_*` variables.
    pub fn apply_env(&mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        let vars: std::collections::BTreeMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("TESSERA_")).collect();
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            v.trim().parse::<T>().map_err(|e| ConfigError::Env {
                name: name.into(),
                value: v.into(),
                reason: e.to_string(),
            })
        }
        fn boolean(name: &str, v: &str) -> Result<bool, ConfigError> {
            match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::Env {
                    name: name.into(),
                    value: v.into(),
                    reason: "expected true or false".into(),
                }),
            }
        }
        for (k, v) in &vars {
            let k = k.as_str();
            match k {
                "TESSERA_DATA_DIR" => self.data_dir = PathBuf::from(v),
                "TESSERA_LISTEN" => self.listen = v.clone(),
                // Empty or `off`: no gRPC listener (overrides a config file that sets one).
                "TESSERA_GRPC_LISTEN" => {
                    let v = v.trim();
                    self.grpc_listen = (!v.is_empty() && !v.eq_ignore_ascii_case("off")).then(|| v.to_string());
                }
                "TESSERA_SYNCHRONOUS" => {
                    self.synchronous = match v.to_ascii_lowercase().as_str() {
                        "full" => Durability::Full,
                        "normal" => Durability::Normal,
                        "off" => Durability::Off,
                        _ => {
                            return Err(ConfigError::Env {
                                name: k.into(),
                                value: v.clone(),
                                reason: "expected full, normal or off".into(),
                            })
                        }
                    }
                }
                "TESSERA_READ_CONNECTIONS" => self.read_connections = num(k, v)?,
                "TESSERA_BODY_LIMIT_BYTES" => self.body_limit_bytes = num(k, v)?,
                "TESSERA_REQUEST_TIMEOUT_SECS" => self.request_timeout_secs = num(k, v)?,
                "TESSERA_RATE_LIMIT_PER_IP" => self.rate_limits.per_ip_per_sec = num(k, v)?,
                "TESSERA_RATE_LIMIT_PER_IP_BURST" => self.rate_limits.per_ip_burst = num(k, v)?,
                "TESSERA_RATE_LIMIT_PER_KEY" => self.rate_limits.per_key_per_sec = num(k, v)?,
                "TESSERA_RATE_LIMIT_PER_KEY_BURST" => self.rate_limits.per_key_burst = num(k, v)?,
                "TESSERA_RATE_LIMIT_ADMIN_PER_IP" => self.rate_limits.admin_per_ip_per_sec = num(k, v)?,
                "TESSERA_RATE_LIMIT_ADMIN_PER_IP_BURST" => self.rate_limits.admin_per_ip_burst = num(k, v)?,
                "TESSERA_JOBS_INTERVAL_SECS" => self.jobs.interval_secs = num(k, v)?,
                "TESSERA_EXPIRING_SOON_DAYS" => self.jobs.expiring_soon_days = num(k, v)?,
                "TESSERA_PURGE_DEACTIVATED_AFTER_DAYS" => self.jobs.purge_deactivated_after_days = num(k, v)?,
                "TESSERA_AUDIT_VALIDATE" => self.audit_validate = boolean(k, v)?,
                "TESSERA_AUDIT_HEARTBEATS" => {
                    self.audit_heartbeats = HeartbeatAudit::parse(v).ok_or_else(|| ConfigError::Env {
                        name: k.to_string(),
                        value: v.to_string(),
                        reason: "expected each, batched or changes".into(),
                    })?
                }
                "TESSERA_TRUST_FORWARDED_FOR" => self.trust_forwarded_for = boolean(k, v)?,
                "TESSERA_GEOIP_DB" => self.geoip_db = Some(PathBuf::from(v)),
                "TESSERA_ADMIN_TOKEN" => self.admin_token = Some(Secret(v.trim().to_string())),
                "TESSERA_METRICS_TOKEN" => self.metrics_token = Some(Secret(v.trim().to_string())),
                "TESSERA_METRICS_TOKEN_FILE" => {
                    let s = std::fs::read_to_string(v).map_err(|e| ConfigError::SecretFile {
                        name: "TESSERA_METRICS_TOKEN".into(),
                        path: v.clone(),
                        reason: e.to_string(),
                    })?;
                    self.metrics_token = Some(Secret(s.trim().to_string()));
                }
                "TESSERA_ADMIN_TOKEN_FILE" => {
                    let s = std::fs::read_to_string(v).map_err(|e| ConfigError::SecretFile {
                        name: "TESSERA_ADMIN_TOKEN".into(),
                        path: v.clone(),
                        reason: e.to_string(),
                    })?;
                    self.admin_token = Some(Secret(s.trim().to_string()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\nread_connections = 3\n[rate_limits]\nper_ip_per_sec = 7.0\n")
            .unwrap();
        let secret = dir.path().join("tok");
        std::fs::write(&secret, "tsa_fromfile\n").unwrap();
        let c = Config::load(
            Some(&file),
            [
                ("TESSERA_READ_CONNECTIONS".to_string(), "5".to_string()),
                ("TESSERA_ADMIN_TOKEN_FILE".to_string(), secret.display().to_string()),
                ("OTHER".to_string(), "x".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.grpc_listen, None, "gRPC is off unless configured");
        assert_eq!(c.read_connections, 5);
        assert_eq!(c.rate_limits.per_ip_per_sec, 7.0);
        assert_eq!(c.admin_token, Some(Secret("tsa_fromfile".into())));
        assert!(!format!("{c:?}").contains("fromfile"));
        let bad = Config::load(None, [("TESSERA_READ_CONNECTIONS".into(), "many".into())]);
        assert!(bad.unwrap_err().to_string().contains("TESSERA_READ_CONNECTIONS"));
    }

    #[test]
    fn the_grpc_listener_is_set_by_file_or_env_and_env_can_turn_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "grpc_listen = \"127.0.0.1:9090\"\n").unwrap();
        assert_eq!(Config::load(Some(&file), []).unwrap().grpc_listen.as_deref(), Some("127.0.0.1:9090"));
        let env = |v: &str| Config::load(Some(&file), [("TESSERA_GRPC_LISTEN".to_string(), v.to_string())]).unwrap();
        assert_eq!(env("0.0.0.0:50051").grpc_listen.as_deref(), Some("0.0.0.0:50051"));
        assert_eq!(env("off").grpc_listen, None);
        assert_eq!(env("").grpc_listen, None);
    }

    #[test]
    fn the_metrics_token_comes_from_env_or_file_and_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("metrics");
        std::fs::write(&secret, "scrape-me-please-0123\n").unwrap();
        let c = Config::load(None, [("TESSERA_METRICS_TOKEN_FILE".to_string(), secret.display().to_string())]).unwrap();
        assert_eq!(c.metrics_token, Some(Secret("scrape-me-please-0123".into())));
        assert!(!format!("{c:?}").contains("scrape-me"));
        assert!(c.validate().is_ok());
        let c = Config::load(None, [("TESSERA_METRICS_TOKEN".to_string(), "short".to_string())]).unwrap();
        assert!(c.validate().unwrap_err().contains("at least 16 characters"));
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "metrics_token = \"from-the-config-file-1\"\n").unwrap();
        assert_eq!(Config::load(Some(&file), []).unwrap().metrics_token, Some(Secret("from-the-config-file-1".into())));
    }

    #[test]
    fn heartbeat_audit_reads_names_and_the_older_booleans() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        for (toml, want) in [
            ("audit_heartbeats = \"each\"", HeartbeatAudit::Each),
            ("audit_heartbeats = \"batched\"", HeartbeatAudit::Batched),
            ("audit_heartbeats = false", HeartbeatAudit::Changes),
            ("audit_heartbeats = true", HeartbeatAudit::Each),
        ] {
            std::fs::write(&file, toml).unwrap();
            assert_eq!(Config::load(Some(&file), []).unwrap().audit_heartbeats, want, "{toml}");
        }
        std::fs::write(&file, "audit_heartbeats = \"sometimes\"").unwrap();
        assert!(Config::load(Some(&file), []).unwrap_err().to_string().contains("each, batched or changes"));
        let env = |v: &str| Config::load(None, [("TESSERA_AUDIT_HEARTBEATS".to_string(), v.to_string())]);
        assert_eq!(env("changes").unwrap().audit_heartbeats, HeartbeatAudit::Changes);
        assert_eq!(env("0").unwrap().audit_heartbeats, HeartbeatAudit::Changes);
        assert!(env("maybe").unwrap_err().to_string().contains("TESSERA_AUDIT_HEARTBEATS"));
        assert_eq!(Config::default().audit_heartbeats, HeartbeatAudit::Batched);
    }
}
