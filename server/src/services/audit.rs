//! The hash-chained audit log: listing and verification.

use serde::{Deserialize, Serialize};

use super::{Ctx, Services};
use crate::error::{AppError, AppResult};
use crate::store::{audit_hash, AuditEntry, AuditFilter, Store};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    pub checked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries after this sequence number, oldest first (the default, from the first entry).
    #[serde(default)]
    pub after: Option<i64>,
    /// Or entries before this sequence number, newest first (`before=9223372036854775807` from the newest).
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only this tenant's entries (a vendor admin's filter; a tenant's token reads its own tenant only).
    #[serde(default)]
    pub tenant_id: Option<uuid::Uuid>,
    /// Only this actor (`token:<id>`, `console:token:<id>`, `agent`, …).
    #[serde(default)]
    pub actor: Option<String>,
    /// Only this action, or every action it begins when it ends with `.` (`license.`).
    #[serde(default)]
    pub action: Option<String>,
    /// Only this target (a license, activation or token id, …).
    #[serde(default)]
    pub target: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Entries before this time (RFC 3339).
    #[serde(default)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this outcome (`OK`, `SEAT_LIMIT_REACHED`, `LIMIT_REACHED`, …).
    #[serde(default)]
    pub outcome: Option<String>,
    /// Or any of these outcomes (the console's recent refusals); with `outcome`, both apply.
    #[serde(skip)]
    pub any_outcome: Vec<String>,
    /// Any of these targets (the console's license history: the license and its activations); at most 500.
    #[serde(skip)]
    pub any_target: Vec<String>,
}

/// Walks the whole chain from the first row; names the first row whose link does not hold.
pub async fn verify_chain(store: &dyn Store) -> Result<AuditVerification, crate::store::StoreError> {
    let mut prev_hash = vec![0u8; 32];
    let mut prev_seq = 0i64;
    let mut checked = 0u64;
    // The head is read first: rows appended while the walk runs lie past it and are left to the next check.
    let (head_seq, head_hash) = store.audit_head().await?.unwrap_or((0, vec![0u8; 32]));
    loop {
        let rows = store.audit_rows(None, prev_seq, 1000).await?;
        let mut end = rows.is_empty();
        for r in rows {
            if r.seq > head_seq {
                end = true;
                break;
            }
            let broken = |reason: &str| AuditVerification {
                ok: false,
                checked,
                first_broken: Some(BrokenLink { seq: r.seq, reason: reason.to_string() }),
            };
            if r.seq != prev_seq + 1 {
                return Ok(broken(&format!("rows {} to {} are missing (deleted)", prev_seq + 1, r.seq - 1)));
            }
            if r.prev_hash != prev_hash {
                return Ok(broken("prev_hash does not match the previous row's hash"));
            }
            if r.hash != audit_hash(&r.prev_hash, r.seq, &r.entry) {
                return Ok(broken("the row's content does not match its hash (edited)"));
            }
            checked += 1;
            prev_seq = r.seq;
            prev_hash = r.hash;
        }
        if end || prev_seq >= head_seq {
            break;
        }
    }
    // The walk must end exactly at the recorded head: otherwise the newest rows were deleted (or the head edited).
    if prev_seq == head_seq && prev_hash == head_hash {
        return Ok(AuditVerification { ok: true, checked, first_broken: None });
    }
    let reason = if prev_seq < head_seq {
        format!("rows {} to {head_seq} are missing (deleted from the end of the log)", prev_seq + 1)
    } else {
        "the recorded chain head does not match the last row (edited)".to_string()
    };
    Ok(AuditVerification { ok: false, checked, first_broken: Some(BrokenLink { seq: prev_seq + 1, reason }) })
}

impl Services {
    /// Walks the one hash chain of every tenant's audit rows: vendor-admin only (a tenant's token would learn how
    /// many rows other tenants wrote, and where the chain of the whole server breaks).
    pub async fn verify_audit(&self, ctx: &Ctx) -> AppResult<AuditVerification> {
        if ctx.require_vendor().is_err() {
            ctx.role()?;
            return Err(AppError::forbidden(
                "the audit chain spans every tenant, so verifying it needs a vendor-admin token; a tenant reads its \
                 own entries at GET /v1/audit",
            ));
        }
        Ok(verify_chain(self.store.as_ref()).await?)
    }

    /// A tenant's audit entries (every tenant's for a vendor admin), filtered and paged.
    pub async fn list_audit(&self, ctx: &Ctx, q: AuditQuery) -> AppResult<Vec<AuditEntry>> {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        if q.after.is_some() && q.before.is_some() {
            return Err(AppError::invalid("give after (oldest first) or before (newest first), not both"));
        }
        let text = |field: &str, v: Option<String>| -> AppResult<Option<String>> {
            match v.map(|v| v.trim().to_string()) {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) if v.chars().count() > 200 => {
                    Err(AppError::invalid(format!("{field} is longer than 200 characters")))
                }
                Some(v) => Ok(Some(v)),
            }
        };
        if let (Some(s), Some(u)) = (q.since, q.until) {
            if s >= u {
                return Err(AppError::invalid("since must be before until"));
            }
        }
        let filter = AuditFilter {
            after: q.after.unwrap_or(0),
            before: q.before,
            actor: text("actor", q.actor)?,
            action: text("action", q.action)?,
            target: text("target", q.target)?,
            since: q.since,
            until: q.until,
            any_target: q.any_target.into_iter().take(500).collect(),
            outcomes: match text("outcome", q.outcome)? {
                Some(o) => vec![o],
                None => q.any_outcome.into_iter().take(50).collect(),
            },
        };
        let scope = match (ctx.scope()?, q.tenant_id) {
            (Some(own), Some(asked)) if own != asked => return Err(AppError::not_found("tenant")),
            (Some(own), _) => Some(own),
            (None, asked) => asked,
        };
        Ok(self.store.find_audit(scope, filter, limit).await?)
    }
}
