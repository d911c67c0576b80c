//! Reading the state back: every cached artefact checked for canonical form and verified (license file,
//! activation token, last server answer, offline response, emergency codes) into a [`Snapshot`], and trusted
//! time advanced and recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use tessera_core::codes::{self, CodeKind};
use tessera_core::decision::{ClockGuard, EmergencyGrant, HardwareCount};
use tessera_core::encoding::b64url;
use tessera_core::envelope::Envelope;
use tessera_core::fingerprint::{match_fingerprint, Fingerprint, MatchOutcome};
use tessera_core::model::{LicenseModel, DEFAULT_HEARTBEAT_SECS, DEFAULT_LEASE_SECS};
use tessera_core::offline::{license_binding, OfflineGrant, SignedEmergency, SignedRequest, SignedResponse};
use tessera_core::protocol::Endpoint;
use tessera_core::token::{verify_activation_token, verify_license_file};
use tessera_core::{License, LicenseStatus};
use uuid::Uuid;

use super::config::AgentConfig;
use super::snapshot::{Evidence, Snapshot, Used};
use crate::client::{self, ForActivation};
use crate::clock::{Clock, TrustedTime};
use crate::error::AgentError;
use crate::state::{self, ActivationRow, Mode, Store};

#[derive(Deserialize)]
struct StoredHeartbeat {
    #[serde(default)]
    license_status: Option<LicenseStatus>,
    /// The license's usage totals on the server when it answered.
    #[serde(default)]
    usage_totals: HashMap<String, i64>,
}

/// The canonical text of an armored license file; `None` when it does not parse.
pub(super) fn canonical_license_file(text: &str) -> Option<String> {
    Envelope::from_armored(text).ok().map(|e| e.to_armored())
}

/// The canonical text of a compact envelope; `None` when it does not parse.
pub(super) fn canonical_compact(text: &str) -> Option<String> {
    Envelope::from_compact(text).ok().map(|e| e.to_compact())
}

/// The canonical text of a copy-paste code (upper case, standard grouping); `None` when it does not decode.
pub(super) fn canonical_code(kind: CodeKind, text: &str) -> Option<String> {
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
        billing_cycle: g.billing_cycle,
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
    /// The server time of the answer `signed_usage` is from (it places a total in a quota's period).
    signed_usage_at: Option<DateTime<Utc>>,
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
            let mut signed_usage_at = None;
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
                signed_usage_at = Some(server_time);
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
                signed_usage_at,
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
                signed_usage_at: None,
                country: None,
            })
        }
    }
}

/// Reads and verifies the whole state into a snapshot. Nothing fails open: any verification failure clears the
/// license and marks signatures invalid.
pub(super) fn load(
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
        usage: HashMap::new(),
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
    let mut signed = (HashMap::new(), None);
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
                signed = (b.signed_usage, b.signed_usage_at);
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
    snap.usage = usage_at(store, snap.license.as_ref(), snap.clock.high_water.max(now), signed)?;
    Ok(snap)
}

/// Units used per feature id at `at`, each in its quota's current period: the server's total (the larger of the
/// stored one and the one in the signed heartbeat answer, which a hand-edited state file cannot lower) where it was
/// reported within the period, plus the queued events recorded in it or later (sent ones that no reported total
/// covers yet included). A lifetime total counts whenever reported, plus the events not yet sent.
fn usage_at(
    store: &Store,
    license: Option<&License>,
    at: DateTime<Utc>,
    (signed, signed_at): (HashMap<String, u64>, Option<DateTime<Utc>>),
) -> Result<HashMap<String, Used>, AgentError> {
    let stored: HashMap<String, (u64, Option<DateTime<Utc>>)> =
        store.usage_totals()?.into_iter().map(|(f, n, as_of)| (f, (n, as_of))).collect();
    let queued: HashMap<String, u64> = store.queued_usage_by_feature()?.into_iter().collect();
    let ids: BTreeSet<&String> = stored.keys().chain(queued.keys()).chain(signed.keys()).collect();
    let mut usage = HashMap::with_capacity(ids.len());
    for id in ids {
        let window = license.and_then(|l| l.quota_window(l.feature(id)?, at));
        let reported = |(n, as_of): (u64, Option<DateTime<Utc>>)| match window {
            None => n,
            Some(w) if as_of.is_some_and(|t| w.contains(t)) => n,
            Some(_) => 0,
        };
        let server = reported(stored.get(id).copied().unwrap_or_default())
            .max(reported((signed.get(id).copied().unwrap_or(0), signed_at)));
        let (local, ahead) = match window {
            None => (queued.get(id).copied().unwrap_or(0), 0),
            Some(w) => (store.queued_usage_since(id, w.start)?, store.queued_usage_since(id, w.end)?),
        };
        let units = server.saturating_add(local);
        usage.insert(id.clone(), Used { units, until: window.map(|w| w.end), ahead });
    }
    Ok(usage)
}

/// The earliest an emergency code can have been issued: its expiry less the longest validity a server issues
/// ([`EmergencyPolicy::MAX_VALIDITY_HOURS`]). Trusted time never falls below it once the code is applied (and
/// while it is stored), so a state restored from a backup with the clock set back cannot stretch a code beyond
/// that window. (The exact issue time would bound it to the code's own validity, but costs a byte the 150-character
/// budget does not have.)
pub(super) fn emergency_floor(expires_at: DateTime<Utc>) -> DateTime<Utc> {
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
pub(super) fn advance_trusted(
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
