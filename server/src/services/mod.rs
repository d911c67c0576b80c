//! The rules. Services take a caller context, check permissions and inputs, decide, and ask the store to
//! persist. They know nothing of HTTP.

pub mod admin;
pub mod audit;
pub mod backend;
pub mod billing;
pub mod catalog;
pub mod client;
pub mod geoip;
pub mod jobs;
pub mod licenses;
pub mod offline;
pub mod security;
pub mod subscriptions;
pub mod terms;
pub mod usage;
pub mod users;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tessera_core::{Keyset, PublicKeyset};
use uuid::Uuid;

use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::ratelimit::RateLimiter;
use crate::store::{NewAudit, PageRequest, Role, Scope, Store};
use crate::time::Clock;

/// Everything the rules need; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keyset>,
    pub public: Arc<PublicKeyset>,
    pub clock: Clock,
    pub config: Arc<Config>,
    pub key_limiter: Arc<RateLimiter>,
    pub(crate) file_cache: Arc<std::sync::Mutex<std::collections::HashMap<Uuid, CachedFile>>>,
    pub(crate) token_cache: Arc<std::sync::Mutex<std::collections::HashMap<Uuid, CachedToken>>>,
    /// Parsed device public keys (point decompression costs about as much as a tenth of a verification).
    pub(crate) device_keys: Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, tessera_core::VerifyingKey>>>,
    /// Writes of calls that answer without waiting for the writer, made together a few milliseconds later.
    deferred: Arc<std::sync::Mutex<Deferred>>,
    /// Per activation, the last-seen time this process last wrote (see [`LAST_SEEN_GRANULARITY`]).
    seen_written: Arc<std::sync::Mutex<std::collections::HashMap<Uuid, DateTime<Utc>>>>,
    /// Refusals of well-formed but unknown license keys since the last summary row (see
    /// [`UNKNOWN_KEY_SUMMARY_SECS`]).
    pub(crate) unknown_keys: Arc<std::sync::Mutex<UnknownKeys>>,
    /// Per activation, the hosts (fingerprint digests) its heartbeats came from in the current window.
    pub(crate) hosts_seen: Arc<std::sync::Mutex<std::collections::HashMap<Uuid, HostsSeen>>>,
    /// The GeoIP country database, when configured (`geoip_db`).
    pub geoip: Option<Arc<geoip::GeoIp>>,
}

/// One activation heard from two hosts within this many seconds is flagged as shared (once per window).
pub const SHARED_HOST_WINDOW_SECS: i64 = 3600;

#[derive(Default)]
pub(crate) struct HostsSeen {
    pub since: DateTime<Utc>,
    pub digests: Vec<[u8; 32]>,
    pub ips: std::collections::BTreeSet<String>,
    pub flagged: bool,
}

/// Refusals of unknown license keys are counted (metric `tessera_client_refusals_total`) and summarised in at
/// most one audit row per this many seconds, instead of one row each: anyone may send them, as fast as the
/// per-IP limit lets them, and each row is kept for good.
pub const UNKNOWN_KEY_SUMMARY_SECS: i64 = 60;

#[derive(Default)]
pub(crate) struct UnknownKeys {
    /// When the current summary window opened; `None` before the first refusal.
    pub since: Option<DateTime<Utc>>,
    pub count: u64,
    /// Distinct client addresses seen in the window (bounded).
    pub ips: std::collections::BTreeSet<String>,
}

/// An activation's stored last-seen time is moved at most this often by heartbeats that change nothing else; the
/// exact time of every heartbeat is in the audit log. Saves a row rewrite per heartbeat for frequent heartbeaters.
pub const LAST_SEEN_GRANULARITY_SECS: i64 = 60;

/// Audit entries of read-only client calls and last-seen times of quiet heartbeats, not yet written.
#[derive(Default)]
struct Deferred {
    audit: Vec<NewAudit>,
    seen: Vec<(Uuid, DateTime<Utc>)>,
    /// Quiet heartbeats to record in one audit row per tenant (`audit_heartbeats = "batched"`).
    beats: Vec<QuietBeat>,
}

/// A heartbeat that changed nothing durable, as recorded in a batch row.
/// Its actor is always the client-endpoint actor (`Ctx::client`), so it is not carried per heartbeat.
pub(crate) struct QuietBeat {
    pub tenant_id: Uuid,
    pub activation_id: Uuid,
    pub at: DateTime<Utc>,
    pub ip: Option<String>,
}

impl Deferred {
    fn is_empty(&self) -> bool {
        self.audit.is_empty() && self.seen.is_empty() && self.beats.is_empty()
    }

    /// The batch rows: one per tenant (and per 1,000 heartbeats, so a row stays small when the writer fell behind),
    /// in order of first heartbeat, each listing its heartbeats.
    fn beat_rows(beats: Vec<QuietBeat>) -> Vec<NewAudit> {
        const PER_ROW: usize = 1000;
        let mut by_tenant: Vec<(Uuid, Vec<QuietBeat>)> = Vec::new();
        for b in beats {
            match by_tenant.iter_mut().rev().find(|(t, v)| *t == b.tenant_id && v.len() < PER_ROW) {
                Some((_, v)) => v.push(b),
                None => by_tenant.push((b.tenant_id, vec![b])),
            }
        }
        by_tenant
            .into_iter()
            .map(|(tenant, beats)| {
                let at = beats.iter().map(|b| b.at).max().unwrap_or_default();
                let list: Vec<serde_json::Value> = beats
                    .iter()
                    .map(|b| serde_json::json!({"activation_id": b.activation_id, "at": crate::time::ts(b.at), "ip": b.ip}))
                    .collect();
                NewAudit {
                    at,
                    tenant_id: Some(tenant),
                    actor: Ctx::client(None).actor,
                    action: "client.heartbeat.batch".into(),
                    target: None,
                    ip: None,
                    outcome: "OK".into(),
                    details: serde_json::json!({"count": list.len(), "heartbeats": list}),
                }
            })
            .collect()
    }
}

/// The last activation token issued to an activation by a heartbeat.
pub(crate) struct CachedToken {
    pub license_updated_at: DateTime<Utc>,
    pub device_key: Vec<u8>,
    pub lease_expires_at: DateTime<Utc>,
    pub token: Arc<str>,
    /// SHA-256 of `token`, compared with the digest the device says it holds.
    pub digest: [u8; 32],
    /// The client country the token carries (re-signed when the client's country changes).
    pub country: Option<String>,
}

/// A signed license file kept while the license is unchanged.
pub(crate) struct CachedFile {
    pub updated_at: DateTime<Utc>,
    pub status: tessera_core::LicenseStatus,
    pub signed_at: DateTime<Utc>,
    pub file: Arc<SignedFile>,
}

/// A signed license file and the SHA-256 of its text.
pub struct SignedFile {
    pub text: String,
    pub digest: [u8; 32],
}

impl Services {
    pub fn new(store: Arc<dyn Store>, keys: Keyset, clock: Clock, config: Config) -> Services {
        let public = keys.public();
        let key_limiter = RateLimiter::new(config.rate_limits.per_key_per_sec, config.rate_limits.per_key_burst);
        Services {
            store,
            keys: Arc::new(keys),
            public: Arc::new(public),
            clock,
            config: Arc::new(config),
            key_limiter: Arc::new(key_limiter),
            file_cache: Arc::default(),
            token_cache: Arc::default(),
            device_keys: Arc::default(),
            deferred: Arc::default(),
            seen_written: Arc::default(),
            unknown_keys: Arc::default(),
            hosts_seen: Arc::default(),
            geoip: None,
        }
    }

    /// Queues an audit entry for a call whose answer must not wait for a write (validate, refusals). Entries
    /// queued within a few milliseconds are appended in one write.
    pub fn audit_later(&self, entry: NewAudit) {
        self.defer(Some(entry), None);
    }

    /// Queues an audit entry and/or an activation's last-seen time (see [`Services::audit_later`]).
    pub fn defer(&self, entry: Option<NewAudit>, seen: Option<(Uuid, DateTime<Utc>)>) {
        self.defer_all(entry, seen, None);
    }

    /// Queues a quiet heartbeat for its tenant's batch row, and/or its last-seen time.
    pub(crate) fn defer_beat(&self, beat: QuietBeat, seen: Option<(Uuid, DateTime<Utc>)>) {
        self.defer_all(None, seen, Some(beat));
    }

    fn defer_all(&self, entry: Option<NewAudit>, seen: Option<(Uuid, DateTime<Utc>)>, beat: Option<QuietBeat>) {
        if entry.is_none() && seen.is_none() && beat.is_none() {
            return;
        }
        let first = {
            let mut d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = d.is_empty();
            d.audit.extend(entry);
            d.seen.extend(seen);
            d.beats.extend(beat);
            crate::metrics::METRICS.deferred.set((d.audit.len() + d.seen.len() + d.beats.len()) as i64);
            was_empty
        };
        if first {
            let s = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                s.flush_audit().await;
            });
        }
    }

    /// Records that `id` was seen at `at`; returns whether the stored last-seen time needs writing (it is older than
    /// the granularity, as far as this process knows). `written` says the caller writes it anyway.
    pub(crate) fn note_seen(&self, id: Uuid, at: DateTime<Utc>, written: bool) -> bool {
        let mut m = self.seen_written.lock().unwrap_or_else(|e| e.into_inner());
        // Due when unknown, older than the granularity, or in the future (the clock stepped back).
        let due = written
            || m.get(&id)
                .is_none_or(|last| at < *last || at - *last >= chrono::Duration::seconds(LAST_SEEN_GRANULARITY_SECS));
        if due {
            if m.len() >= 200_000 {
                m.clear();
            }
            m.insert(id, at);
        }
        due
    }

    /// Writes the deferred audit entries and last-seen times now (also called on shutdown).
    pub async fn flush_audit(&self) {
        let mut d = {
            let mut pending = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            crate::metrics::METRICS.deferred.set(0);
            std::mem::take(&mut *pending)
        };
        if d.is_empty() {
            return;
        }
        d.audit.extend(Deferred::beat_rows(std::mem::take(&mut d.beats)));
        let n = d.audit.len();
        let seen = d.seen.clone();
        if let Err(e) = self.store.write_deferred(d.audit, d.seen).await {
            tracing::warn!(error = %e, entries = n, "could not record deferred audit entries and last-seen times");
            // Not written: the next heartbeat of each of these activations writes its last-seen time again.
            let mut m = self.seen_written.lock().unwrap_or_else(|e| e.into_inner());
            for (id, at) in seen {
                if m.get(&id) == Some(&at) {
                    m.remove(&id);
                }
            }
        }
    }

    /// Current time, at the microsecond precision the store keeps.
    pub fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound as _;
        (self.clock)().trunc_subsecs(6)
    }
}

/// The authenticated caller of an admin endpoint.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub role: Role,
}

/// Who is calling, from where.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Option<Principal>,
    pub ip: Option<String>,
    /// Actor name when there is no principal (client endpoints, CLI, jobs).
    pub actor: String,
}

impl Ctx {
    pub fn admin(principal: Principal, ip: Option<String>) -> Ctx {
        let actor = format!("token:{}", principal.token_id);
        Ctx { principal: Some(principal), ip, actor }
    }

    pub fn client(ip: Option<String>) -> Ctx {
        Ctx { principal: None, ip, actor: "client".into() }
    }

    /// Local operator (CLI on the data directory): acts as vendor-admin.
    pub fn cli(who: &str) -> Ctx {
        Ctx {
            principal: Some(Principal { token_id: Uuid::nil(), tenant_id: None, role: Role::VendorAdmin }),
            ip: None,
            actor: format!("cli:{who}"),
        }
    }

    pub fn system(job: &str) -> Ctx {
        Ctx { principal: None, ip: None, actor: format!("system:{job}") }
    }

    fn principal(&self) -> AppResult<&Principal> {
        self.principal.as_ref().ok_or_else(|| AppError::unauthorized("an API token is required"))
    }

    /// The tenant scope of reads: `None` for vendor-admin (all tenants).
    pub fn scope(&self) -> AppResult<Scope> {
        let p = self.principal()?;
        Ok(match p.role {
            Role::VendorAdmin => None,
            _ => p.tenant_id,
        })
    }

    pub fn role(&self) -> AppResult<Role> {
        Ok(self.principal()?.role)
    }

    /// Create / change / delete: tenant-admin or vendor-admin.
    pub fn require_admin(&self) -> AppResult<()> {
        match self.role()? {
            Role::VendorAdmin | Role::TenantAdmin => Ok(()),
            r => Err(AppError::forbidden(format!(
                "a {} token may not change this: use a tenant-admin or vendor-admin token",
                r.as_str()
            ))),
        }
    }

    /// Emergency codes, offline responses and receipts: support, tenant-admin or vendor-admin.
    pub fn require_support(&self) -> AppResult<()> {
        match self.role()? {
            Role::VendorAdmin | Role::TenantAdmin | Role::Support => Ok(()),
            r => Err(AppError::forbidden(format!(
                "a {} token may not do this: use a support or admin token",
                r.as_str()
            ))),
        }
    }

    pub fn require_vendor(&self) -> AppResult<()> {
        match self.role()? {
            Role::VendorAdmin => Ok(()),
            r => Err(AppError::forbidden(format!(
                "a {} token may not do this: it needs a vendor-admin token",
                r.as_str()
            ))),
        }
    }

    /// The tenant a new object belongs to: the token's, or for vendor-admin the one named in the request.
    pub fn tenant_for_create(&self, requested: Option<Uuid>) -> AppResult<Uuid> {
        let p = self.principal()?;
        match (p.role, p.tenant_id, requested) {
            (Role::VendorAdmin, _, Some(t)) => Ok(t),
            (Role::VendorAdmin, _, None) => {
                Err(AppError::invalid("tenant_id is required when a vendor-admin token creates tenant objects"))
            }
            (_, Some(own), Some(t)) if t != own => Err(AppError::not_found("tenant")),
            (_, Some(own), _) => Ok(own),
            (_, None, _) => Err(AppError::forbidden("this token has no tenant")),
        }
    }

    pub fn audit(
        &self,
        at: DateTime<Utc>,
        tenant_id: Option<Uuid>,
        action: &str,
        target: Option<String>,
        details: Value,
    ) -> NewAudit {
        NewAudit {
            at,
            tenant_id,
            actor: self.actor.clone(),
            action: action.to_string(),
            target,
            ip: self.ip.clone(),
            outcome: "OK".into(),
            details,
        }
    }
}

/// Cursor pagination parameters as the API takes them.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

impl PageQuery {
    pub fn to_request(&self) -> AppResult<PageRequest> {
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
                AppError::bad_request("cursor is not valid: pass the next_cursor of the previous page")
            })?),
        };
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > 500 {
            return Err(AppError::bad_request("limit must be between 1 and 500"));
        }
        Ok(PageRequest { after, limit })
    }
}

/// Checks a human-entered name.
/// A code (of a product, a plan): 1 to 64 characters of letters, digits, `-`, `_` or `.`, trimmed.
pub fn check_code(code: &str) -> AppResult<String> {
    let c = code.trim();
    if c.is_empty() || c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err(AppError::invalid("code must be 1 to 64 characters of letters, digits, '-', '_' or '.'"));
    }
    Ok(c.to_string())
}

/// A code made from a name: lower-case letters and digits, runs of anything else one `-` (`fallback` when nothing
/// is left).
pub fn slug(name: &str, fallback: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let s: String = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    if s.is_empty() {
        fallback.into()
    } else {
        s.chars().take(64).collect()
    }
}

pub fn check_name(field: &str, v: &str) -> AppResult<String> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return Err(AppError::invalid(format!("{field} must be 1 to 200 characters")));
    }
    if t.chars().any(char::is_control) {
        return Err(AppError::invalid(format!("{field} must not contain control characters")));
    }
    Ok(t.to_string())
}

/// JSON merge patch (RFC 7386): objects merge recursively, `null` removes a key.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Refuses fields a caller may not set through a patch.
pub fn reject_fields(patch: &Value, fields: &[&str]) -> AppResult<()> {
    if let Value::Object(m) = patch {
        for f in fields {
            if m.contains_key(*f) {
                return Err(AppError::invalid(format!("{f} cannot be changed here")));
            }
        }
        Ok(())
    } else {
        Err(AppError::bad_request("the request body must be a JSON object"))
    }
}

/// Refuses top-level fields outside `known` (a typo such as `max_activation` must not silently keep a default).
pub fn only_fields(body: &Value, known: &[&str], what: &str) -> AppResult<()> {
    if let Value::Object(m) = body {
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(AppError::invalid(format!(
                "unknown field {k:?} in a {what}: known fields are {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_heartbeats_are_batched_per_tenant_in_rows_of_at_most_a_thousand() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let beat = |tenant| QuietBeat { tenant_id: tenant, activation_id: Uuid::new_v4(), at: Utc::now(), ip: None };
        let beats: Vec<QuietBeat> = (0..2500).map(|i| beat(if i % 2 == 0 { a } else { b })).collect();
        let rows = Deferred::beat_rows(beats);
        let count = |t: Uuid| -> Vec<u64> {
            rows.iter().filter(|r| r.tenant_id == Some(t)).map(|r| r.details["count"].as_u64().unwrap()).collect()
        };
        assert_eq!(count(a), vec![1000, 250]);
        assert_eq!(count(b), vec![1000, 250]);
        assert!(rows
            .iter()
            .all(|r| r.details["heartbeats"].as_array().unwrap().len() as u64 == r.details["count"].as_u64().unwrap()));
    }
}
