//! The rules about the license, the device and its environment that activation and heartbeats apply.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::net::IpAddr;
use tessera_core::decision::{restrictions_allow, Environment};
use tessera_core::fingerprint::{Fingerprint, MatchPolicy};
use tessera_core::model::CpuCount;
use tessera_core::{License, LicenseKey, LicenseModel, LicenseStatus, LicenseType};

use crate::error::{AppError, AppResult, ErrorCode};
use crate::services::licenses::effective_status;
use crate::services::{Ctx, Services};
use crate::store::{identity_hash, SameDeviceCandidates};

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
pub(super) fn reported_domain(d: Option<&str>) -> Option<&str> {
    d.map(str::trim).filter(|d| !d.is_empty() && d.len() <= 253 && d.bytes().all(|b| b.is_ascii_graphic()))
}

/// Refusal when the license's restrictions deny this environment (client address, reported domain).
pub(super) fn restriction_refusal(l: &License, env: &Environment<'_>) -> Option<AppError> {
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
pub(super) fn candidates_for(fp: &Fingerprint) -> SameDeviceCandidates {
    match identity_hash(fp) {
        Some(h) => SameDeviceCandidates::ByIdentity(h),
        None => SameDeviceCandidates::KeyOnly,
    }
}

/// Both fingerprints carry the same machine identity: the one they are indexed by (`identity_hash`: the machine
/// id, else the pinned identity).
pub(super) fn same_identity(a: &Fingerprint, b: &Fingerprint) -> bool {
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
    /// The client's country from the GeoIP database, looked up only when the license has a `GEOGRAPHIC`
    /// restriction and a database is configured.
    pub(super) fn country_of(&self, l: &License, ip: Option<IpAddr>) -> Option<String> {
        use tessera_core::model::RestrictionKind;
        let geo = self.geoip.as_ref()?;
        if !l.restrictions.iter().any(|r| r.kind == RestrictionKind::Geographic) {
            return None;
        }
        geo.country(ip?)
    }

    pub(crate) fn check_key_rate(&self, key: &LicenseKey) -> AppResult<()> {
        self.check_hint_rate(&key.hint())
    }

    pub(crate) fn check_hint_rate(&self, hint: &[u8; 6]) -> AppResult<()> {
        self.key_limiter.check(hint).map_err(AppError::rate_limited)
    }
}
