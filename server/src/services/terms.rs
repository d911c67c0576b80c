//! What valid license terms are: the checks shared by templates (`admin`) and licenses (`licenses`) on seat
//! models, features, restrictions, timing, dates and the emergency and offline policies.

use chrono::{DateTime, Datelike, Utc};
use serde_json::json;
use tessera_core::model::{EmergencyPolicy, Feature, OfflineLease, OfflinePolicy, Restriction, RestrictionKind};
use tessera_core::{LicenseType, Template};

use super::check_name;
use crate::error::{AppError, AppResult};

/// Checks a template's values (shared with license checks).
pub fn validate_template(t: &mut Template) -> AppResult<()> {
    check_name("name", &t.name)?;
    validate_seat_model(t.license_type, t.license_model)?;
    normalize_restrictions(&mut t.restrictions)?;
    validate_features(&t.features)?;
    validate_timing(t.heartbeat_interval_secs, t.lease_secs)?;
    if t.grace_days > 255 {
        return Err(AppError::invalid("grace_days must be at most 255"));
    }
    if t.fingerprint_policy.required > 15 {
        return Err(AppError::invalid("fingerprint_policy.required must be at most 15"));
    }
    if let Some(d) = t.duration_days {
        check_days("duration_days", d)?;
    }
    if let Some(d) = t.maintenance_days {
        check_days("maintenance_days", d)?;
    }
    validate_emergency(&t.emergency)?;
    validate_offline(&t.offline, t.license_type)
}

/// Most restrictions on one license or template, and most values in one restriction.
pub const MAX_RESTRICTIONS: usize = 16;
pub const MAX_RESTRICTION_VALUES: usize = 256;

/// Checks and normalises the restrictions of a license or template, so a typo is refused when it is written
/// instead of silently denying (or allowing) everything later: `IP_RANGE` values are CIDRs or single addresses
/// (written back in canonical form, host bits cleared), `GEOGRAPHIC` values ISO 3166-1 alpha-2 shaped codes
/// (two ASCII letters, upper-cased), `DOMAIN` values host names or `*.`-wildcards (lower-cased).
pub fn normalize_restrictions(restrictions: &mut [Restriction]) -> AppResult<()> {
    if restrictions.len() > MAX_RESTRICTIONS {
        return Err(AppError::invalid(format!("at most {MAX_RESTRICTIONS} restrictions")));
    }
    for r in restrictions.iter_mut() {
        let kind = match r.kind {
            RestrictionKind::Geographic => "GEOGRAPHIC",
            RestrictionKind::Domain => "DOMAIN",
            RestrictionKind::IpRange => "IP_RANGE",
        };
        if r.values.is_empty() || r.values.len() > MAX_RESTRICTION_VALUES {
            return Err(AppError::invalid(format!("a {kind} restriction needs 1 to {MAX_RESTRICTION_VALUES} values")));
        }
        for v in r.values.iter_mut() {
            let bad = |what: &str| {
                AppError::invalid(format!("{kind} restriction value {v:?} is not {what}"))
                    .with_details(json!({"kind": kind, "value": v.clone()}))
            };
            let t = v.trim();
            let norm = match r.kind {
                RestrictionKind::IpRange => canonical_ip_range(t)
                    .ok_or_else(|| bad("an IP address or CIDR range (e.g. 203.0.113.0/24 or 2001:db8::/32)"))?,
                RestrictionKind::Geographic => {
                    if t.len() != 2 || !t.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(bad("an ISO 3166-1 alpha-2 country code (two letters, e.g. DE)"));
                    }
                    t.to_ascii_uppercase()
                }
                RestrictionKind::Domain => {
                    let host = t.strip_prefix("*.").unwrap_or(t).trim_end_matches('.');
                    if !is_host_name(host) {
                        return Err(bad("a host name or a *.example.com wildcard"));
                    }
                    let wild = if t.starts_with("*.") { "*." } else { "" };
                    format!("{wild}{}", host.to_ascii_lowercase())
                }
            };
            *v = norm;
        }
    }
    Ok(())
}

/// `203.0.113.0/24`, `2001:db8::/32` or a single address, in canonical form; `None` when it is none of these.
fn canonical_ip_range(s: &str) -> Option<String> {
    if s.contains('/') {
        let net: ipnet::IpNet = s.parse().ok()?;
        return Some(net.trunc().to_string());
    }
    let ip: std::net::IpAddr = s.parse().ok()?;
    Some(ip.to_string())
}

/// A DNS host name: 1 to 253 characters, labels of 1 to 63 letters, digits and inner hyphens (no wildcard).
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Longest license, maintenance or renewal period, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// Checks a number of days given for `field`.
pub fn check_days(field: &str, days: u32) -> AppResult<()> {
    if days > MAX_DAYS {
        return Err(AppError::invalid(format!("{field} must be at most {MAX_DAYS} days (100 years)")));
    }
    Ok(())
}

/// Checks a date given for `field`: from 1970 to 9999.
pub fn check_date(field: &str, t: DateTime<Utc>) -> AppResult<()> {
    if !(1970..=9999).contains(&t.year()) {
        return Err(AppError::invalid(format!(
            "{field} must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
        )));
    }
    Ok(())
}

/// `t` plus `days` days, checked as a date for `field`.
pub fn add_days(field: &str, t: DateTime<Utc>, days: u32) -> AppResult<DateTime<Utc>> {
    check_days(field, days)?;
    let sum = t
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .ok_or_else(|| AppError::invalid(format!("{field} would be after 9999-12-31T23:59:59Z")))?;
    check_date(field, sum)?;
    Ok(sum)
}

pub fn validate_emergency(e: &EmergencyPolicy) -> AppResult<()> {
    if e.validity_hours == 0 || e.validity_hours > EmergencyPolicy::MAX_VALIDITY_HOURS {
        return Err(AppError::invalid(format!(
            "emergency.validity_hours must be between 1 and {}",
            EmergencyPolicy::MAX_VALIDITY_HOURS
        )));
    }
    if e.max_per_30_days > 1000 {
        return Err(AppError::invalid("emergency.max_per_30_days must be at most 1000"));
    }
    Ok(())
}

/// Seats are counted one way: per named user, or per socket / core, not both.
pub fn validate_seat_model(license_type: LicenseType, model: tessera_core::LicenseModel) -> AppResult<()> {
    if license_type == LicenseType::NamedUser && model.counts_processors() {
        return Err(AppError::invalid(format!(
            "a NAMED_USER license counts seats per user; it cannot also count them per processor ({}): use PER_SEAT",
            model.as_str()
        )));
    }
    Ok(())
}

/// Checks an offline policy: a lease of 1 to 3650 days, or `"never"` (not for floating licenses, whose seats
/// must come back when a borrowed grant ends).
pub fn validate_offline(o: &OfflinePolicy, license_type: LicenseType) -> AppResult<()> {
    match o.lease_days {
        OfflineLease::Days(d) if d == 0 || d > OfflineLease::MAX_DAYS => {
            return Err(AppError::invalid(format!(
                "offline.lease_days must be between 1 and {} days, or \"never\"",
                OfflineLease::MAX_DAYS
            )))
        }
        OfflineLease::Never if license_type.is_floating() => {
            return Err(AppError::invalid(
                "offline.lease_days cannot be \"never\" for a CONCURRENT license: a borrowed seat must come back; \
                 give a number of days",
            ))
        }
        _ => {}
    }
    if o.max_immediate_releases_per_30_days > 1000 {
        return Err(AppError::invalid("offline.max_immediate_releases_per_30_days must be at most 1000"));
    }
    Ok(())
}

pub fn validate_features(features: &[Feature]) -> AppResult<()> {
    if features.len() > 127 {
        return Err(AppError::invalid("at most 127 features per license"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in features {
        Feature::validate_id(&f.id).map_err(AppError::invalid)?;
        if !seen.insert(f.id.as_str()) {
            return Err(AppError::invalid(format!("feature {:?} is listed twice", f.id)));
        }
    }
    Ok(())
}

pub fn validate_timing(heartbeat: u32, lease: u32) -> AppResult<()> {
    if heartbeat < 10 {
        return Err(AppError::invalid("heartbeat_interval_secs must be at least 10"));
    }
    if lease < heartbeat {
        return Err(AppError::invalid("lease_secs must be at least heartbeat_interval_secs"));
    }
    Ok(())
}
