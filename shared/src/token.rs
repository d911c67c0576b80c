//! Typed JSON artefacts on top of the envelope: the license file and the activation token.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{CryptoError, Domain, PublicKeyset, SigningKey};
use crate::envelope::{Envelope, EnvelopeError};
use crate::fingerprint::{Fingerprint, MatchPolicy};
use crate::model::License;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtefactError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("signed content is not a valid {what}: {reason}")]
    Content { what: &'static str, reason: String },
}

impl ArtefactError {
    /// True when the failure is about trust (signature, key) rather than format.
    pub fn is_signature_failure(&self) -> bool {
        matches!(
            self,
            ArtefactError::Envelope(EnvelopeError::Crypto(
                CryptoError::BadSignature | CryptoError::UnknownKey(_) | CryptoError::RevokedKey(_)
            ))
        )
    }
}

/// Signed content of a license file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseFileClaims {
    pub license: License,
    pub signed_at: DateTime<Utc>,
}

/// Signs a license as an armored license file.
pub fn sign_license_file(key: &SigningKey, license: &License, now: DateTime<Utc>) -> String {
    let claims = LicenseFileClaims { license: license.clone(), signed_at: now };
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    Envelope::seal(key, Domain::LicenseFile, payload).to_armored()
}

/// Verifies an armored license file and returns its claims.
pub fn verify_license_file(text: &str, keys: &PublicKeyset) -> Result<LicenseFileClaims, ArtefactError> {
    let env = Envelope::from_armored(text)?;
    let payload = env.open(keys, Domain::LicenseFile)?;
    serde_json::from_slice(payload).map_err(|e| ArtefactError::Content { what: "license file", reason: e.to_string() })
}

/// Signed content of an activation token: a license bound to one device until the lease ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationClaims {
    pub activation_id: Uuid,
    pub license_id: Uuid,
    pub tenant_id: Uuid,
    pub product_id: Uuid,
    /// Ed25519 public key of the device (32 bytes).
    #[serde(with = "crate::encoding::b64bytes")]
    pub device_public_key: Vec<u8>,
    pub fingerprint: Fingerprint,
    pub fingerprint_policy: MatchPolicy,
    pub issued_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    pub heartbeat_interval_secs: u32,
    /// Seats this activation takes: the sockets (PER_CPU) or cores (PER_CORE) counted at activation; absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
    /// NAMED_USER: the user the seat belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The client's country (ISO 3166-1 alpha-2, upper case) as the server's GeoIP database placed it when the
    /// token was signed; `None` when unknown (no database, an address it does not place, or a license without a
    /// `GEOGRAPHIC` restriction). The agent passes it to the decision as the country fact, so a `GEOGRAPHIC`
    /// restriction holds offline too; unknown never denies. Left out of the payload when `None`, so tokens without
    /// it (older servers) decode, and are byte-identical to what they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

pub fn sign_activation_token(key: &SigningKey, claims: &ActivationClaims) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    Envelope::seal(key, Domain::ActivationToken, payload).to_compact()
}

pub fn verify_activation_token(text: &str, keys: &PublicKeyset) -> Result<ActivationClaims, ArtefactError> {
    let env = Envelope::from_compact(text)?;
    let payload = env.open(keys, Domain::ActivationToken)?;
    serde_json::from_slice(payload)
        .map_err(|e| ArtefactError::Content { what: "activation token", reason: e.to_string() })
}
