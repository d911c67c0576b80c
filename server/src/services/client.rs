//! Client endpoints (docs/PROTOCOL.md): activate, validate, heartbeat, deactivate. Successful answers are
//! signed envelopes of kind `server-response` echoing the client's nonce.

use sha2::{Digest as _, Sha256};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::IpAddr;
use tessera_core::crypto::ed25519_public_from_bytes;
use tessera_core::decision::{restrictions_allow, Environment, Inputs};
use tessera_core::envelope::Envelope;
use tessera_core::fingerprint::{match_fingerprint, Fingerprint, MatchPolicy};
use tessera_core::model::CpuCount;
use tessera_core::token::{sign_activation_token, ActivationClaims};
use tessera_core::{
    decide, Decision, Domain, License, LicenseKey, LicenseModel, LicenseStatus, LicenseType, Query, Reason,
};
use uuid::Uuid;

use super::licenses::effective_status;
use super::{Ctx, Services};
use crate::config::HeartbeatAudit;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::{identity_hash, SameDeviceCandidates};
use crate::store::{
    ActivateOp, ActivateOutcome, Activation, ActivationStatus, HeartbeatOp, LicenseRecord, NewAudit, UsageEvent,
};
pub use tessera_core::protocol::{
    ActivateRequest, ActivateResult, DeactivateRequest, DeactivateResult, Endpoint, HeartbeatRequest, HeartbeatResult,
    ValidateRequest, ValidateResult, MAX_USAGE_AMOUNT, REPLAY_WINDOW_SECS,
};
use tessera_core::protocol::{SignedPayload, MAX_METADATA_BYTES};

/// A usage event as stored (amounts are checked to be at most [`MAX_USAGE_AMOUNT`] before).
fn stored_usage(u: tessera_core::protocol::UsageEvent) -> UsageEvent {
    UsageEvent {
        id: u.id,
        feature: u.feature,
        amount: u.amount.min(MAX_USAGE_AMOUNT) as i64,
        recorded_at: u.recorded_at,
    }
}

/// Whether the device's digest (a `Held` member) names the artefact with SHA-256 `digest`.
fn holds(held: &Option<String>, digest: &[u8; 32]) -> bool {
    let mut bytes = [0u8; 32];
    held.as_deref().is_some_and(|h| hex::decode_to_slice(h, &mut bytes).is_ok() && bytes == *digest)
}

/// A signed answer to a client: `{"signed": "<compact envelope>"}` on the wire. The compact form is base64url,
/// dots and ASCII labels, so it is written into the JSON without escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAnswer(pub String);

impl SignedAnswer {
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(self.0.len() + 14);
        s.push_str("{\"signed\":\"");
        s.push_str(&self.0);
        s.push_str("\"}");
        s
    }
}

impl Serialize for SignedAnswer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("signed", &self.0)?;
        m.end()
    }
}

/// A device-signed request body: parsed once, trusted only after its signature verifies.
pub trait DeviceRequest: serde::de::DeserializeOwned {
    /// What the request is, for error messages ("heartbeat").
    const WHAT: &'static str;
    fn activation_id(&self) -> Uuid;
}

impl DeviceRequest for HeartbeatRequest {
    const WHAT: &'static str = "heartbeat";
    fn activation_id(&self) -> Uuid {
        self.activation_id
    }
}

impl DeviceRequest for DeactivateRequest {
    const WHAT: &'static str = "deactivate";
    fn activation_id(&self) -> Uuid {
        self.activation_id
    }
}

/// The token a heartbeat answers with: the cached one (its lease is the stored one) or renewed with a new lease.
struct HeartbeatToken {
    lease: DateTime<Utc>,
    token: Arc<str>,
    digest: [u8; 32],
    renewed: bool,
    license_updated_at: DateTime<Utc>,
    /// The client country the token carries.
    country: Option<String>,
}

pub fn parse_license_key(s: &str) -> AppResult<LicenseKey> {
    LicenseKey::parse(s).map_err(|e| AppError::new(ErrorCode::InvalidLicenseKey, e.to_string()))
}

fn check_nonce(nonce: &str) -> AppResult<()> {
    match tessera_core::encoding::b64url_decode(nonce) {
        Some(b) if (8..=64).contains(&b.len()) => Ok(()),
        _ => Err(AppError::new(ErrorCode::InvalidNonce, "nonce must be 16 random bytes in base64url without padding")),
    }
}

/// Refusal for a license that is not usable now (status, validity window).
pub fn license_refusal(l: &License, now: DateTime<Utc>) -> Option<AppError> {
    match effective_status(l, now) {
        LicenseStatus::Suspended => {
            Some(AppError::new(ErrorCode::LicenseSuspended, "the license is suspended: contact the vendor"))
        }
        LicenseStatus::Revoked => {
            Some(AppError::new(ErrorCode::LicenseRevoked, "the license was revoked by the vendor"))
        }
        LicenseStatus::Expired => Some(
            AppError::new(ErrorCode::LicenseExpired, "the license has expired: renew it")
                .with_details(json!({"expires_at": l.expires_at})),
        ),
        LicenseStatus::Active if now < l.starts_at => Some(
            AppError::new(ErrorCode::LicenseNotYetValid, "the license is not valid yet")
                .with_details(json!({"starts_at": l.starts_at})),
        ),
        LicenseStatus::Active => None,
    }
}

/// The client address as restrictions see it (an IPv4-mapped IPv6 address is the IPv4 address).
/// A forwarded address may carry a port (`203.0.113.9:4711`, `[2001:db8::1]:443`): it is the address all the same.
pub fn client_addr(ctx: &Ctx) -> Option<IpAddr> {
    parse_addr(ctx.ip.as_deref()?)
}

/// An address as a client or proxy writes it, with or without a port; IPv4-mapped IPv6 is IPv4.
pub fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let ip = s.parse::<IpAddr>().ok().or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))?;
    Some(ip.to_canonical())
}

/// A reported domain, if it is a plausible host name (anything else is treated as unknown).
fn reported_domain(d: Option<&str>) -> Option<&str> {
    d.map(str::trim).filter(|d| !d.is_empty() && d.len() <= 253 && d.bytes().all(|b| b.is_ascii_graphic()))
}

/// Refusal when the license's restrictions deny this environment (client address, reported domain).
fn restriction_refusal(l: &License, env: &Environment<'_>) -> Option<AppError> {
    if l.restrictions.is_empty() || restrictions_allow(&l.restrictions, env) {
        return None;
    }
    Some(
        AppError::new(ErrorCode::Restricted, "the license does not allow use from this network, location or domain")
            .with_details(json!({"ip": env.ip, "domain": env.domain, "country": env.country})),
    )
}

/// Refusal for a fingerprint that cannot be bound under `policy` (see `MatchPolicy::insufficient`): without a
/// machine identity, or with too few components, any similar machine would match it.
pub fn fingerprint_refusal(policy: &MatchPolicy, fp: &Fingerprint) -> Option<AppError> {
    use tessera_core::fingerprint::Insufficient;
    let why = policy.insufficient(fp)?;
    let required = policy.required;
    let msg = match why {
        Insufficient::PinnedNotAllowed => {
            "this license's fingerprint policy does not allow a pinned identity: run the \
             agent with its hardware identity, or ask the vendor for a license whose template allows pinned \
             identities (allow_pinned)"
                .to_string()
        }
        Insufficient::NoIdentity | Insufficient::TooFewComponents => format!(
            "the fingerprint must carry a machine identity (machine_id{}) and at least {required} components; this \
             one has {} ({}): a host without a machine id needs one (e.g. systemd-machine-id-setup)",
            if policy.allow_pinned { ", or a pinned identity" } else { "" },
            fp.components().len(),
            fp.components().iter().map(|c| c.kind.as_str()).collect::<Vec<_>>().join(", "),
        ),
    };
    Some(AppError::new(ErrorCode::FingerprintInsufficient, msg).with_details(json!({
        "reason": why,
        "required": required,
        "allow_pinned": policy.allow_pinned,
        "components": fp.components().iter().map(|c| c.kind).collect::<Vec<_>>(),
    })))
}

/// Which activations may belong to this device by fingerprint. The same device must carry the same machine
/// identity (see `same_device` in `activate`), whatever the policy's deal-breakers, so only activations indexed by
/// that identity can match: an index finds them, and the single writer never scans a license's activations.
fn candidates_for(fp: &Fingerprint) -> SameDeviceCandidates {
    match identity_hash(fp) {
        Some(h) => SameDeviceCandidates::ByIdentity(h),
        None => SameDeviceCandidates::KeyOnly,
    }
}

/// Both fingerprints carry the same machine identity: the one they are indexed by (`identity_hash`: the machine
/// id, else the pinned identity).
fn same_identity(a: &Fingerprint, b: &Fingerprint) -> bool {
    matches!((identity_hash(a), identity_hash(b)), (Some(x), Some(y)) if x == y)
}

/// Lease for an online activation: floating licenses must check in every heartbeat (twice the interval of
/// slack); others may stay offline for the license's lease.
pub fn lease_for(l: &License, now: DateTime<Utc>) -> DateTime<Utc> {
    let secs = if l.license_type.is_floating() {
        (l.heartbeat_interval_secs.saturating_mul(2)).min(l.lease_secs)
    } else {
        l.lease_secs
    };
    now + Duration::seconds(i64::from(secs))
}

/// The seats one activation takes and the user it is for, by the license's model and type: PER_CPU / PER_CORE
/// count the reported sockets / cores, NAMED_USER needs a user id (seats are counted per user).
pub(super) fn seat_terms(
    l: &License,
    cpu: Option<CpuCount>,
    user_id: Option<String>,
) -> AppResult<(u32, Option<String>)> {
    if let Some(c) = cpu {
        if c.sockets == 0 || c.cores == 0 || c.sockets > CpuCount::MAX || c.cores > CpuCount::MAX || c.sockets > c.cores
        {
            return Err(AppError::invalid(format!(
                "cpu must have 1 to {} sockets and at least as many cores",
                CpuCount::MAX
            )));
        }
    }
    let seats = l.license_model.seats_for(cpu).ok_or_else(|| {
        AppError::new(
            ErrorCode::CpuCountRequired,
            format!(
                "this license counts seats per {} ({}): the activation must report the machine's cpu \
                 {{\"sockets\", \"cores\"}} (tessera-agent does)",
                if l.license_model == LicenseModel::PerCpu { "CPU socket" } else { "CPU core" },
                l.license_model.as_str()
            ),
        )
    })?;
    let user_id = match (l.license_type, user_id.map(|u| u.trim().to_string())) {
        (LicenseType::NamedUser, None) => {
            return Err(AppError::new(ErrorCode::UserIdRequired,
                "this is a named-user license: activate with the user the seat is for (`tessera-agent activate --user NAME`)",
            ))
        }
        (_, Some(u)) if u.is_empty() || u.chars().count() > 128 || u.chars().any(char::is_control) => {
            return Err(AppError::invalid("user_id must be 1 to 128 printable characters"));
        }
        (LicenseType::NamedUser, u) => u,
        // Only named-user licenses bind seats to users; elsewhere a user id is not stored.
        (_, _) => None,
    };
    Ok((seats, user_id))
}

/// How much of a reused token's lease must be left for a heartbeat to hand it out again rather than sign a new one:
/// the later of
/// - half the full lease (a device that goes offline after a heartbeat keeps at least half its allowance), and
/// - 1.25 × the heartbeat interval plus the agent's margin (a tenth of the interval, at least 5 s; see
///   `next_heartbeat_in` in the agent): an honest agent's next heartbeat comes after at most 1.1 × the interval
///   (±10 % jitter) and no later than its margin before the lease ends, so a token reused with this much left
///   never makes it beat early, and never lapses before that beat, with a quarter interval to spare for a slow
///   network or a busy host.
///
/// For a floating license (lease = 2 × interval) the second bound is the one that counts: a token is reused only
/// for heartbeats that come sooner than about 0.65 × the interval after it was signed (restarts, usage flushes,
/// several processes); for a license with a long lease the first one does, and reuse stays the common case.
pub fn reuse_margin(full_lease: Duration, heartbeat_interval_secs: u32) -> Duration {
    let interval = Duration::seconds(i64::from(heartbeat_interval_secs));
    let agent_margin = (interval / 10).max(Duration::seconds(5));
    (full_lease / 2).max(interval * 5 / 4 + agent_margin)
}

impl Services {
    /// `{"signed": "<envelope>"}` around `{"nonce", "endpoint", "activation_id"?, "server_time", "result"}`: the
    /// answer names the endpoint it answers and the activation it is about (none for validate), so the agent can
    /// refuse an answer made for another endpoint or another activation (docs/PROTOCOL.md).
    pub fn sign_response(
        &self,
        endpoint: Endpoint,
        activation_id: Option<Uuid>,
        nonce: &str,
        result: impl Serialize,
    ) -> AppResult<SignedAnswer> {
        // Serialized straight from the result's type, without building a JSON value first.
        let payload = SignedPayload {
            nonce: std::borrow::Cow::Borrowed(nonce),
            endpoint: Some(endpoint),
            activation_id,
            server_time: self.now(),
            result,
        };
        let bytes = serde_json::to_vec(&payload).map_err(|e| AppError::internal("sign", e))?;
        let env = Envelope::seal(self.keys.signer(), Domain::ServerResponse, bytes);
        Ok(SignedAnswer(env.to_compact()))
    }

    /// The client's country from the GeoIP database, looked up only when the license has a `GEOGRAPHIC`
    /// restriction and a database is configured.
    fn country_of(&self, l: &License, ip: Option<IpAddr>) -> Option<String> {
        use tessera_core::model::RestrictionKind;
        let geo = self.geoip.as_ref()?;
        if !l.restrictions.iter().any(|r| r.kind == RestrictionKind::Geographic) {
            return None;
        }
        geo.country(ip?)
    }

    pub(super) fn check_key_rate(&self, key: &LicenseKey) -> AppResult<()> {
        self.check_hint_rate(&key.hint())
    }

    /// The per-license-key limit, for requests that carry only the key's hint (deactivation receipts).
    pub(super) fn check_hint_rate(&self, hint: &[u8; 6]) -> AppResult<()> {
        self.key_limiter.check(hint).map_err(AppError::rate_limited)
    }

    async fn license_by_key(&self, key: &LicenseKey) -> AppResult<Arc<LicenseRecord>> {
        self.store.get_license_by_key_hash(key.hash()).await.map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                AppError::new(ErrorCode::LicenseNotFound, "no license has this key: check the key, or ask the vendor")
            }
            e => AppError::store("license", e),
        })
    }

    /// Records a refused license lookup: an unknown key is counted and summarised (see
    /// [`super::UNKNOWN_KEY_SUMMARY_SECS`]), anything else audited like other refusals.
    fn lookup_refusal(&self, ctx: &Ctx, action: &str, err: &AppError) {
        if err.code != ErrorCode::LicenseNotFound {
            return self.audit_refusal(ctx, None, action, None, err);
        }
        crate::metrics::METRICS.refusal(err.code.as_str());
        let now = self.now();
        let summary = {
            let mut u = self.unknown_keys.lock().unwrap_or_else(|e| e.into_inner());
            u.count += 1;
            if let Some(ip) = &ctx.ip {
                if u.ips.len() < 20 {
                    u.ips.insert(ip.clone());
                }
            }
            let due = u.since.is_none_or(|s| now - s >= Duration::seconds(super::UNKNOWN_KEY_SUMMARY_SECS));
            due.then(|| {
                let row = json!({
                    "refusals": u.count, "since": u.since.unwrap_or(now), "ips": u.ips,
                    "window_secs": super::UNKNOWN_KEY_SUMMARY_SECS,
                    "message": "refusals of unknown license keys, counted since the previous summary row",
                });
                *u = super::UnknownKeys { since: Some(now), count: 0, ips: Default::default() };
                row
            })
        };
        if let Some(details) = summary {
            let mut a = ctx.audit(now, None, "client.unknown_key", None, details);
            a.outcome = err.code.to_string();
            self.audit_later(a);
        }
    }

    /// Records a refused client call in the audit log without delaying the answer.
    fn audit_refusal(&self, ctx: &Ctx, tenant: Option<Uuid>, action: &str, target: Option<String>, err: &AppError) {
        let mut a = ctx.audit(self.now(), tenant, action, target, json!({"message": err.message}));
        a.outcome = err.code.to_string();
        self.audit_later(a);
    }

    /// The signed activation token of `a`. `country`: the client's country (ISO alpha-2, from the GeoIP database)
    /// when known, carried so that the agent decides `GEOGRAPHIC` restrictions offline too.
    pub fn activation_token(&self, a: &Activation, l: &License, country: Option<&str>) -> String {
        let claims = ActivationClaims {
            activation_id: a.id,
            license_id: l.id,
            tenant_id: l.tenant_id,
            product_id: l.product_id,
            device_public_key: a.device_public_key.clone(),
            fingerprint: a.fingerprint.clone(),
            fingerprint_policy: l.fingerprint_policy.clone(),
            issued_at: self.now(),
            lease_expires_at: a.lease_expires_at.unwrap_or_else(|| lease_for(l, self.now())),
            heartbeat_interval_secs: l.heartbeat_interval_secs,
            seats: l.license_model.counts_processors().then_some(a.seats),
            user_id: a.user_id.clone(),
            country: country.map(str::to_string),
        };
        sign_activation_token(self.keys.signer(), &claims)
    }

    /// The activation token for a heartbeat. A token is re-signed when the license or device key changed, its
    /// lease is not the stored one (a re-activation, another node), the client's country is no longer the one it
    /// carries, or too little of its lease is left (see [`reuse_margin`]); until then the previous one is reused
    /// (`renewed: false`), so server and device agree on the lease.
    fn token_for_heartbeat(
        &self,
        a: &Activation,
        rec: &LicenseRecord,
        country: Option<&str>,
        now: DateTime<Utc>,
    ) -> HeartbeatToken {
        let full = lease_for(&rec.license, now) - now;
        let keep = reuse_margin(full, rec.license.heartbeat_interval_secs);
        if let Some(c) = self.token_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&a.id) {
            if c.license_updated_at == rec.updated_at
                && c.device_key == a.device_public_key
                && a.lease_expires_at == Some(c.lease_expires_at)
                && c.country.as_deref() == country
                && c.lease_expires_at - now > keep
            {
                return HeartbeatToken {
                    lease: c.lease_expires_at,
                    token: c.token.clone(),
                    digest: c.digest,
                    renewed: false,
                    license_updated_at: rec.updated_at,
                    country: c.country.clone(),
                };
            }
        }
        let lease = now + full;
        let mut a2 = a.clone();
        a2.lease_expires_at = Some(lease);
        let token: Arc<str> = self.activation_token(&a2, &rec.license, country).into();
        let digest = Sha256::digest(token.as_bytes()).into();
        HeartbeatToken {
            lease,
            token,
            digest,
            renewed: true,
            license_updated_at: rec.updated_at,
            country: country.map(str::to_string),
        }
    }

    /// Remembers a renewed token once its lease is stored.
    fn remember_token(&self, a: &Activation, t: &HeartbeatToken) {
        let mut cache = self.token_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 200_000 {
            cache.clear();
        }
        cache.insert(
            a.id,
            super::CachedToken {
                license_updated_at: t.license_updated_at,
                device_key: a.device_public_key.clone(),
                lease_expires_at: t.lease,
                token: t.token.clone(),
                digest: t.digest,
                country: t.country.clone(),
            },
        );
    }

    /// The signed license file, re-signed only when the license changed or the cached one is an hour old.
    pub fn license_file_for(&self, rec: &LicenseRecord) -> Arc<super::SignedFile> {
        let now = self.now();
        let status = effective_status(&rec.license, now);
        let fresh = |c: &super::CachedFile| {
            c.updated_at == rec.updated_at && c.status == status && now - c.signed_at < Duration::hours(1)
        };
        if let Some(c) = self.file_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&rec.license.id) {
            if fresh(c) {
                return c.file.clone();
            }
        }
        let mut l = rec.license.clone();
        l.status = status;
        let text = tessera_core::token::sign_license_file(self.keys.signer(), &l, now);
        let file = Arc::new(super::SignedFile { digest: Sha256::digest(text.as_bytes()).into(), text });
        let mut cache = self.file_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(
            rec.license.id,
            super::CachedFile { updated_at: rec.updated_at, status, signed_at: now, file: file.clone() },
        );
        file
    }

    pub async fn activate(&self, ctx: &Ctx, req: ActivateRequest) -> AppResult<SignedAnswer> {
        check_nonce(&req.nonce)?;
        let key = parse_license_key(&req.license_key)?;
        self.check_key_rate(&key)?;
        let device_key = tessera_core::encoding::b64url_decode(&req.device_public_key)
            .filter(|b| ed25519_public_from_bytes(b).is_ok())
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::InvalidDeviceKey,
                    "device_public_key must be a 32-byte Ed25519 public key in base64url",
                )
            })?;
        let metadata = match req.metadata.map(serde_json::to_value).transpose() {
            Ok(None) => json!({}),
            Ok(Some(v)) if v.to_string().len() <= MAX_METADATA_BYTES => v,
            _ => {
                return Err(AppError::invalid(format!(
                    "metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"
                )))
            }
        };
        let fingerprint = Fingerprint::new(req.fingerprint);
        let rec = self.license_by_key(&key).await.inspect_err(|e| self.lookup_refusal(ctx, "client.activate", e))?;
        let l = &rec.license;
        let now = self.now();
        let tenant = Some(l.tenant_id);
        let target = Some(l.id.to_string());
        if let Some(p) = req.product_id {
            if p != l.product_id {
                let e = AppError::new(ErrorCode::ProductMismatch, "this license key is for another product");
                self.audit_refusal(ctx, tenant, "client.activate", target, &e);
                return Err(e);
            }
        }
        if let Some(e) = license_refusal(l, now) {
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation(e.code.as_str());
            return Err(e);
        }
        let ip = client_addr(ctx);
        let country = self.country_of(l, ip);
        let env = Environment { country: country.as_deref(), domain: reported_domain(req.domain.as_deref()), ip };
        if let Some(e) = restriction_refusal(l, &env) {
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation(e.code.as_str());
            return Err(e);
        }
        if let Some(e) = fingerprint_refusal(&l.fingerprint_policy, &fingerprint) {
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation(e.code.as_str());
            return Err(e);
        }
        let fp_hashes: Vec<String> = fingerprint.components().iter().map(|c| hex::encode(c.hash)).collect();
        let block = if self.tenant_may_have_blocks(l.tenant_id).await? {
            self.store.find_block(l.tenant_id, device_key.clone(), fp_hashes).await?
        } else {
            None
        };
        if let Some(b) = block {
            let e = AppError::new(ErrorCode::DeviceBlocked, "this device is blocked by the vendor")
                .with_details(json!({"block_id": b.id}));
            self.audit_refusal(ctx, tenant, "client.activate", target, &e);
            crate::metrics::METRICS.activation("DEVICE_BLOCKED");
            return Err(e);
        }
        let (seats, user_id) = match seat_terms(l, req.cpu, req.user_id) {
            Ok(t) => t,
            Err(e) => {
                self.audit_refusal(ctx, tenant, "client.activate", target, &e);
                crate::metrics::METRICS.activation(e.code.as_str());
                return Err(e);
            }
        };
        let lease = lease_for(l, now);
        let new = Activation {
            id: Uuid::now_v7(),
            tenant_id: l.tenant_id,
            license_id: l.id,
            device_public_key: device_key.clone(),
            fingerprint: fingerprint.clone(),
            metadata,
            status: ActivationStatus::Active,
            offline: false,
            floating: l.license_type.is_floating(),
            created_at: now,
            last_seen_at: now,
            lease_expires_at: Some(lease),
            deactivated_at: None,
            deactivation_reason: None,
            seat_held_until: None,
            seats,
            user_id,
        };
        let policy = l.fingerprint_policy.clone();
        let candidates = candidates_for(&fingerprint);
        let fp = fingerprint;
        let dk = device_key;
        // The same device: the same device key, or (a reinstalled agent with a new key) a fingerprint that matches
        // under the policy AND carries the same machine identity. Without an identity component on both sides,
        // look-alike hosts (cloned VMs, pods) could otherwise take turns on one seat.
        let same_device = Box::new(move |a: &Activation| {
            a.device_public_key == dk
                || (same_identity(&a.fingerprint, &fp) && match_fingerprint(&policy, &a.fingerprint, &fp).is_match())
        });
        let audit = ctx.audit(now, tenant, "client.activate", target, json!({"license_id": l.id}));
        let outcome = self
            .store
            .activate(ActivateOp {
                new,
                candidates,
                max_seats: if l.license_model.is_unlimited() { 0 } else { l.max_activations },
                same_device,
                reuse_lease_expires_at: Some(lease),
                supersede_if: None,
                audit,
            })
            .await?;
        let (activation, reused) = match outcome {
            ActivateOutcome::Created { activation, .. } => (activation, false),
            ActivateOutcome::Replaced { activation, replaced, .. } => {
                self.token_cache.lock().unwrap_or_else(|e| e.into_inner()).remove(&replaced);
                crate::metrics::METRICS.activation("replaced");
                (activation, false)
            }
            ActivateOutcome::Reused { activation, .. } => (activation, true),
            ActivateOutcome::SeatLimit { seats_used } => {
                crate::metrics::METRICS.activation("SEAT_LIMIT_REACHED");
                let needed = if l.license_model.counts_processors() {
                    format!(", this machine needs {seats}")
                } else {
                    String::new()
                };
                return Err(AppError::new(ErrorCode::SeatLimitReached,
                    format!(
                        "{seats_used} of the {} seats of this license are in use{needed}: deactivate another device or buy more seats",
                        l.max_activations
                    ),
                )
                .with_details(json!({"max_activations": l.max_activations, "seats_used": seats_used, "seats_needed": seats})));
            }
        };
        crate::metrics::METRICS.activation(if reused { "reused" } else { "created" });
        let result = ActivateResult {
            activation_id: activation.id,
            activation_token: self.activation_token(&activation, l, country.as_deref()),
            license_file: self.license_file_for(&rec).text.clone(),
            lease_expires_at: activation.lease_expires_at,
            heartbeat_interval_secs: l.heartbeat_interval_secs,
            reused,
        };
        self.sign_response(Endpoint::Activate, Some(activation.id), &req.nonce, result)
    }

    pub async fn validate(&self, ctx: &Ctx, req: ValidateRequest) -> AppResult<SignedAnswer> {
        check_nonce(&req.nonce)?;
        let key = parse_license_key(&req.license_key)?;
        self.check_key_rate(&key)?;
        if let Some(f) = &req.feature {
            tessera_core::Feature::validate_id(f).map_err(AppError::bad_request)?;
        }
        let rec = self.license_by_key(&key).await.inspect_err(|e| self.lookup_refusal(ctx, "client.validate", e))?;
        let now = self.now();
        let mut license = rec.license.clone();
        license.status = effective_status(&license, now);
        let mut inputs = Inputs::new(now, Some(&license));
        let ip = client_addr(ctx);
        let country = self.country_of(&license, ip);
        inputs.environment =
            Environment { country: country.as_deref(), domain: reported_domain(req.domain.as_deref()), ip };
        // With a fingerprint, the question is whether THIS machine may use the license: it must be one of the
        // license's active activations (NOT_ACTIVATED when there is none it could be, FINGERPRINT_MISMATCH when
        // there are some but it matches none of them).
        let mut not_activated = false;
        if let Some(components) = req.fingerprint {
            let current = Fingerprint::new(components);
            let acts = self.store.list_activations(None, license.id).await?;
            let best = acts
                .iter()
                .filter(|a| a.status == ActivationStatus::Active && !a.fingerprint.is_empty())
                .map(|a| match_fingerprint(&license.fingerprint_policy, &a.fingerprint, &current))
                .max_by_key(|o| (o.is_match(), o.matched));
            not_activated = best.is_none();
            inputs.fingerprint = best;
        }
        let mut query = Query { feature: req.feature.as_deref(), amount: 0, used: 0 };
        if let Some(f) = req.feature.as_deref().and_then(|f| license.feature(f)) {
            if f.limit_value >= 0 {
                let totals = self.store.usage_totals(license.id).await?;
                query.used = totals.iter().find(|(id, _)| *id == f.id).map(|(_, n)| (*n).max(0) as u64).unwrap_or(0);
            }
        }
        let mut decision = decide(&inputs, &query);
        if not_activated {
            decision = Decision { allowed: false, reason: Reason::NotActivated, facts: decision.facts };
        }
        if self.config.audit_validate {
            let mut a = ctx.audit(
                now,
                Some(license.tenant_id),
                "client.validate",
                Some(license.id.to_string()),
                json!({"feature": req.feature}),
            );
            a.outcome = decision.reason.as_str().to_string();
            self.audit_later(a);
        }
        let result = ValidateResult {
            valid: decision.allowed,
            decision,
            license_id: license.id,
            status: license.status,
            expires_at: license.expires_at,
        };
        self.sign_response(Endpoint::Validate, None, &req.nonce, result)
    }

    /// Whether the tenant has device blocks: most have none, and then the block lookup is skipped (the store
    /// answers from its fed cache).
    pub(crate) async fn tenant_may_have_blocks(&self, tenant: Uuid) -> AppResult<bool> {
        self.store.has_blocks(tenant).await.map_err(|e| AppError::store("device blocks", e))
    }

    /// The parsed device key, from a small cache.
    fn device_key(&self, public: &[u8]) -> Result<tessera_core::VerifyingKey, tessera_core::CryptoError> {
        if let Some(k) = self.device_keys.lock().unwrap_or_else(|e| e.into_inner()).get(public) {
            return Ok(k.clone());
        }
        let k = ed25519_public_from_bytes(public)?;
        let mut cache = self.device_keys.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 100_000 {
            cache.clear();
        }
        cache.insert(public.to_vec(), k.clone());
        Ok(k)
    }

    /// Verifies a device-signed body against the activation's key, before anything else in it is trusted.
    pub async fn verify_device_body<T: DeviceRequest>(
        &self,
        ctx: &Ctx,
        action: &str,
        path: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> AppResult<(T, Arc<Activation>, Arc<LicenseRecord>)> {
        let sig = signature.and_then(tessera_core::encoding::b64url_decode).ok_or_else(|| {
            AppError::new(
                ErrorCode::SignatureRequired,
                "this request must be signed by the device key (header X-Tessera-Signature, base64url)",
            )
        })?;
        // One parse in the common case; a body that does not parse whole is still checked for its activation and
        // signature first, so a forged request is refused as forged (401, audited), not as malformed.
        let parsed: Result<T, _> = serde_json::from_slice(body);
        let activation_id = match &parsed {
            Ok(r) => r.activation_id(),
            Err(_) => {
                #[derive(Deserialize)]
                struct Head {
                    activation_id: Uuid,
                }
                serde_json::from_slice::<Head>(body)
                    .map_err(|e| AppError::bad_request(format!("the body must be JSON with an activation_id: {e}")))?
                    .activation_id
            }
        };
        let (a, rec) = self.store.activation_with_license(activation_id).await.map_err(|e| match e {
            crate::store::StoreError::NotFound => AppError::new(
                ErrorCode::ActivationNotFound,
                "this activation does not exist (it may have been purged): activate again",
            ),
            e => AppError::store("activation", e),
        })?;
        let bad = || {
            AppError::new(
                ErrorCode::SignatureInvalid,
                "the device signature does not verify: the request was altered or signed by another device",
            )
        };
        let vk = self.device_key(&a.device_public_key).map_err(|_| bad())?;
        if vk.verify(Domain::DeviceMessage, &[path.as_bytes()], body, &sig).is_err() {
            let e = bad();
            self.audit_refusal(ctx, Some(a.tenant_id), action, Some(a.id.to_string()), &e);
            return Err(e);
        }
        let req = parsed.map_err(|e| AppError::bad_request(format!("{} body is not valid: {e}", T::WHAT)))?;
        Ok((req, a, rec))
    }

    fn check_sent_at(&self, sent_at: DateTime<Utc>) -> AppResult<()> {
        let skew = (self.now() - sent_at).num_seconds().abs();
        if skew > REPLAY_WINDOW_SECS {
            return Err(AppError::new(
                ErrorCode::StaleRequest,
                format!(
                    "sent_at is {skew} s away from server time (limit {REPLAY_WINDOW_SECS} s): check the device clock"
                ),
            ));
        }
        Ok(())
    }

    pub async fn heartbeat(
        &self,
        ctx: &Ctx,
        path: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> AppResult<SignedAnswer> {
        let (mut req, a, rec): (HeartbeatRequest, _, _) =
            self.verify_device_body(ctx, "client.heartbeat", path, body, signature).await?;
        let held = std::mem::take(&mut req.held);
        check_nonce(&req.nonce)?;
        self.check_sent_at(req.sent_at)?;
        if req.usage.len() > 1000 {
            return Err(AppError::invalid("at most 1000 usage events per heartbeat"));
        }
        for u in &req.usage {
            tessera_core::Feature::validate_id(&u.feature).map_err(AppError::invalid)?;
            if u.amount > MAX_USAGE_AMOUNT {
                return Err(AppError::invalid(format!(
                    "a usage amount must be at most {MAX_USAGE_AMOUNT} (2^40) per event"
                )));
            }
        }
        let l = &rec.license;
        let now = self.now();
        // A heartbeat from an address the license's restrictions deny is refused (403 RESTRICTED, audited): its
        // lease is not renewed and nothing is recorded, so the device stops working when its current lease ends.
        let ip = client_addr(ctx);
        let country = self.country_of(l, ip);
        let env = Environment { country: country.as_deref(), domain: None, ip };
        if let Some(e) = restriction_refusal(l, &env) {
            self.audit_refusal(ctx, Some(a.tenant_id), "client.heartbeat", Some(a.id.to_string()), &e);
            return Err(e);
        }
        if let Some(d) = req.fingerprint_digest.as_deref() {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(d, &mut digest)
                .map_err(|_| AppError::invalid("fingerprint_digest must be 64 hex digits (SHA-256)"))?;
            if a.status == ActivationStatus::Active {
                self.note_host(ctx, &a, digest, now).await?;
            }
        }
        let mut blocked = false;
        if a.status == ActivationStatus::Active && self.tenant_may_have_blocks(l.tenant_id).await? {
            // A blocked device is deactivated (blocks normally take its activations along; this catches one
            // activated while the block was being added): the heartbeat below then answers DEACTIVATED.
            let fp_hashes: Vec<String> = a.fingerprint.components().iter().map(|c| hex::encode(c.hash)).collect();
            if let Some(b) = self.store.find_block(l.tenant_id, a.device_public_key.clone(), fp_hashes).await? {
                let audit = ctx.audit(
                    now,
                    Some(a.tenant_id),
                    "activation.deactivate",
                    Some(a.id.to_string()),
                    json!({"reason": "device blocked", "block_id": b.id, "license_id": a.license_id}),
                );
                self.store.deactivate(a.id, now, "device blocked".into(), audit).await?;
                blocked = true;
            }
        }
        let status = effective_status(l, now);
        let usable = status == LicenseStatus::Active && now >= l.starts_at;
        let token = usable.then(|| self.token_for_heartbeat(&a, &rec, country.as_deref(), now));
        let usage_count = req.usage.len();
        let audit = || {
            ctx.audit(now, Some(l.tenant_id), "client.heartbeat", Some(a.id.to_string()), json!({"usage": usage_count}))
        };
        // A heartbeat that changes nothing durable (no usage, the token and its stored lease reused, the
        // activation active) is answered without waiting for the writer: its last-seen time and audit entry are
        // written with the next deferred batch, a few milliseconds later.
        let quiet = req.usage.is_empty()
            && !blocked
            && a.status == ActivationStatus::Active
            && token.as_ref().is_some_and(|t| !t.renewed);
        let (active, lease, accepted_usage, totals) = if quiet {
            let touch = self.note_seen(a.id, now, false).then_some((a.id, now));
            match self.config.audit_heartbeats {
                HeartbeatAudit::Each => self.defer(Some(NewAudit { outcome: "OK".into(), ..audit() }), touch),
                HeartbeatAudit::Batched => self.defer_beat(
                    super::QuietBeat { tenant_id: l.tenant_id, activation_id: a.id, at: now, ip: ctx.ip.clone() },
                    touch,
                ),
                HeartbeatAudit::Changes => self.defer(None, touch),
            }
            let totals = self.store.usage_totals(l.id).await?;
            (true, token.as_ref().map(|t| t.lease), Vec::new(), totals)
        } else {
            let out = self
                .store
                .heartbeat(HeartbeatOp {
                    activation_id: a.id,
                    license_id: l.id,
                    now,
                    // A reused token's lease is the stored one: keep it (a concurrent renewal may have moved it).
                    lease_expires_at: token.as_ref().filter(|t| t.renewed).map(|t| t.lease),
                    usage: req.usage.into_iter().map(stored_usage).collect(),
                    // Anything but a quiet heartbeat gets its own audit row, whatever `audit_heartbeats` says.
                    audit: Some(audit()),
                })
                .await?;
            if out.active {
                self.note_seen(a.id, now, true); // the heartbeat's write set it
            }
            if let Some(t) = token.as_ref().filter(|t| t.renewed && out.active && out.lease_expires_at == Some(t.lease))
            {
                self.remember_token(&a, t);
            }
            // The lease the device is told is its token's (never later than the stored one: heartbeat leases only
            // move forward); with no token (license unusable) there is none.
            let lease = token.as_ref().map(|t| t.lease);
            (out.active, lease, out.accepted_usage, Arc::new(out.usage_totals))
        };
        let activation_status = if active { ActivationStatus::Active } else { ActivationStatus::Deactivated };
        let activation_token =
            token.filter(|t| active && !holds(&held.activation_token, &t.digest)).map(|t| t.token.to_string());
        let file = self.license_file_for(&rec);
        let license_file = (!holds(&held.license_file, &file.digest)).then(|| file.text.clone());
        let result = HeartbeatResult {
            activation_status,
            license_status: status,
            activation_token,
            license_file,
            lease_expires_at: if active { lease } else { None },
            next_heartbeat_secs: l.heartbeat_interval_secs,
            accepted_usage,
            usage_totals: totals.iter().map(|(f, n)| (f.clone(), (*n).max(0) as u64)).collect(),
        };
        self.sign_response(Endpoint::Heartbeat, Some(a.id), &req.nonce, result)
    }

    /// Remembers which host (fingerprint digest) an activation's heartbeat came from; the second distinct host
    /// within a window files a suspicious-activity report `activation_shared` with its audit event
    /// `security.activation_shared`, once per window. In memory, per server process.
    async fn note_host(&self, ctx: &Ctx, a: &Activation, digest: [u8; 32], now: DateTime<Utc>) -> AppResult<()> {
        let window = Duration::seconds(super::SHARED_HOST_WINDOW_SECS);
        let details = {
            let mut hosts = self.hosts_seen.lock().unwrap_or_else(|e| e.into_inner());
            if hosts.len() > 200_000 {
                hosts.clear();
            }
            let seen = hosts.entry(a.id).or_insert_with(|| super::HostsSeen { since: now, ..Default::default() });
            if now - seen.since >= window {
                *seen = super::HostsSeen { since: now, ..Default::default() };
            }
            if !seen.digests.contains(&digest) && seen.digests.len() < 8 {
                seen.digests.push(digest);
            }
            if let Some(ip) = &ctx.ip {
                if seen.ips.len() < 8 {
                    seen.ips.insert(ip.clone());
                }
            }
            (seen.digests.len() >= 2 && !seen.flagged).then(|| {
                seen.flagged = true;
                json!({
                    "license_id": a.license_id,
                    "hosts": seen.digests.iter().map(hex::encode).collect::<Vec<_>>(),
                    "ips": seen.ips,
                    "since": seen.since,
                    "window_secs": super::SHARED_HOST_WINDOW_SECS,
                    "message": "one activation heartbeats from several hosts: a copied state file or a shared device key",
                })
            })
        };
        let Some(details) = details else { return Ok(()) };
        let report = crate::store::SuspiciousReport {
            id: Uuid::now_v7(),
            tenant_id: a.tenant_id,
            license_id: Some(a.license_id),
            activation_id: Some(a.id),
            kind: "activation_shared".into(),
            details: details.clone(),
            created_at: now,
        };
        let mut audit =
            ctx.audit(now, Some(a.tenant_id), "security.activation_shared", Some(a.id.to_string()), details);
        audit.outcome = "FLAGGED".into();
        self.store.add_report(report, audit).await.map_err(|e| AppError::store("report", e))
    }

    pub async fn deactivate(
        &self,
        ctx: &Ctx,
        path: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> AppResult<SignedAnswer> {
        let (req, a, _): (DeactivateRequest, _, _) =
            self.verify_device_body(ctx, "client.deactivate", path, body, signature).await?;
        check_nonce(&req.nonce)?;
        self.check_sent_at(req.sent_at)?;
        let now = self.now();
        let audit = ctx.audit(
            now,
            Some(a.tenant_id),
            "client.deactivate",
            Some(a.id.to_string()),
            json!({"license_id": a.license_id}),
        );
        if a.offline {
            // The device key of an offline grant signs this, but so could a copy of its state: the grant runs
            // until its lease whatever this call says, so its seat is held until then, as for a receipt.
            self.store
                .release(crate::store::ReleaseOp::after_lease(a.id, now, "deactivated by the device", audit))
                .await?;
        } else {
            self.store.deactivate(a.id, now, "deactivated by the device".into(), audit).await?;
        }
        self.sign_response(Endpoint::Deactivate, Some(a.id), &req.nonce, DeactivateResult { deactivated: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_read_with_or_without_a_port() {
        let at = |ip: &str| client_addr(&Ctx::client(Some(ip.to_string())));
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(at("203.0.113.9"), Some(v4));
        assert_eq!(at("203.0.113.9:4711"), Some(v4));
        assert_eq!(at("::ffff:203.0.113.9"), Some(v4));
        assert_eq!(at("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(at("not an address"), None);
    }

    #[test]
    fn a_signed_answer_is_written_as_the_json_serde_would_write() {
        let key = tessera_core::SigningKey::generate_ed25519();
        let env = Envelope::seal(&key, Domain::ServerResponse, br#"{"nonce":"n\u0000\"","result":{}}"#.to_vec());
        let a = SignedAnswer(env.to_compact());
        assert_eq!(a.to_json(), serde_json::to_string(&a).unwrap());
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(Envelope::from_compact(v["signed"].as_str().unwrap()).unwrap().to_compact(), a.0);
    }
}
