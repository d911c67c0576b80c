//! Heartbeats (lease renewal, usage, host changes) and deactivation.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tessera_core::decision::Environment;
use tessera_core::LicenseStatus;
use uuid::Uuid;

use crate::config::HeartbeatAudit;
use crate::error::{AppError, AppResult};
use crate::services::licenses::effective_status;
use crate::services::{Ctx, Services};
use crate::store::{Activation, ActivationStatus, HeartbeatOp, NewAudit, UsageEvent};
use tessera_core::protocol::{
    DeactivateRequest, DeactivateResult, Endpoint, HeartbeatRequest, HeartbeatResult, MAX_USAGE_AMOUNT,
};

use super::checks::*;
use super::*;

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

impl Services {
    /// A device-signed heartbeat; counted in `tessera_heartbeats_total` by outcome (renewed, reused, inactive, or
    /// the refusal code).
    pub async fn heartbeat(
        &self,
        ctx: &Ctx,
        path: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> AppResult<SignedAnswer> {
        let r = self.answer_heartbeat(ctx, path, body, signature).await;
        if let Err(e) = &r {
            crate::metrics::METRICS.heartbeat(e.code.as_str());
        }
        r
    }

    async fn answer_heartbeat(
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
                    crate::services::QuietBeat {
                        tenant_id: l.tenant_id,
                        activation_id: a.id,
                        at: now,
                        ip: ctx.ip.clone(),
                    },
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
        let totals = self.reported_totals(l, totals, now).await?;
        let activation_status = if active { ActivationStatus::Active } else { ActivationStatus::Deactivated };
        let outcome = match &token {
            _ if !active => "inactive",
            Some(t) if t.renewed => "renewed",
            _ => "reused",
        };
        crate::metrics::METRICS.heartbeat(outcome);
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
        self.sign_response_at(Endpoint::Heartbeat, Some(a.id), &req.nonce, result, now)
    }

    /// Remembers which host (fingerprint digest) an activation's heartbeat came from; the second distinct host
    /// within a window files a suspicious-activity report `activation_shared` with its audit event
    /// `security.activation_shared`, once per window. In memory, per server process.
    pub(super) async fn note_host(
        &self,
        ctx: &Ctx,
        a: &Activation,
        digest: [u8; 32],
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        let window = Duration::seconds(crate::services::SHARED_HOST_WINDOW_SECS);
        let details = {
            let mut hosts = self.hosts_seen.lock().unwrap_or_else(|e| e.into_inner());
            if hosts.len() > 200_000 {
                hosts.clear();
            }
            let seen =
                hosts.entry(a.id).or_insert_with(|| crate::services::HostsSeen { since: now, ..Default::default() });
            if now - seen.since >= window {
                *seen = crate::services::HostsSeen { since: now, ..Default::default() };
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
                    "window_secs": crate::services::SHARED_HOST_WINDOW_SECS,
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
