//! The wire contract of the client endpoints (docs/PROTOCOL.md): request and answer bodies, the signed-answer
//! payload, the error body and its codes, header names and limits. The server and the agent both use these types,
//! so the two sides cannot drift apart.
//!
//! Compatibility rules: requests ignore unknown fields (newer agents may send more) and give every field added
//! after the first release a default; answers are read the same way by agents, so a newer server may add fields.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::decision::Decision;
use crate::fingerprint::Component;
use crate::model::{CpuCount, LicenseStatus};

/// The header carrying a device's signature over a request body (`Domain::DeviceMessage`, bound to the path).
pub const SIGNATURE_HEADER: &str = "X-Tessera-Signature";

/// Largest clock difference accepted on device-signed requests (`sent_at` against the server's clock), seconds.
pub const REPLAY_WINDOW_SECS: i64 = 600;

/// Largest amount of one usage event (2^40).
pub const MAX_USAGE_AMOUNT: u64 = 1 << 40;

/// A nonce decodes (base64url, no padding) to this many bytes; agents send 16.
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 8..=64;

/// Largest `metadata` object of an activation, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 8192;

/// The client endpoints whose answers are signed: a signed answer names the one it answers, so an answer cannot be
/// passed off as another endpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Activate,
    Validate,
    Heartbeat,
    Deactivate,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [Endpoint::Activate, Endpoint::Validate, Endpoint::Heartbeat, Endpoint::Deactivate];

    /// The request path, which is also what a signed answer carries as `endpoint`.
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Activate => "/v1/client/activate",
            Endpoint::Validate => "/v1/client/validate",
            Endpoint::Heartbeat => "/v1/client/heartbeat",
            Endpoint::Deactivate => "/v1/client/deactivate",
        }
    }

    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Whether requests to it carry a device signature ([`SIGNATURE_HEADER`]).
    pub const fn device_signed(self) -> bool {
        matches!(self, Endpoint::Heartbeat | Endpoint::Deactivate)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path())
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.path())
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Endpoint::from_path(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown endpoint {s:?}")))
    }
}

/// Paths of the client endpoints whose answers are plain JSON (the codes they return are signed themselves).
pub mod path {
    pub const OFFLINE_RESPOND: &str = "/v1/client/offline/respond";
    pub const OFFLINE_RECEIPT: &str = "/v1/client/offline/receipt";
}

// Requests and answers ---------------------------------------------------------------------------------------

/// What the agent reports about the host at activation; kept with the activation for the vendor to see.
/// Other members are kept as sent (the whole object at most [`MAX_METADATA_BYTES`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub other: Map<String, Value>,
}

/// `POST /v1/client/activate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivateRequest {
    pub license_key: String,
    /// The product the agent is built for: a key of another product is refused (`PRODUCT_MISMATCH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Uuid>,
    #[serde(default)]
    pub fingerprint: Vec<Component>,
    /// The device's Ed25519 public key, 32 bytes in base64url: it signs the device's later requests.
    pub device_public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<DeviceMetadata>,
    /// The host's domain as the agent sees it, for `DOMAIN` restrictions (reported, so advisory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The machine's processors, for PER_CPU / PER_CORE licenses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuCount>,
    /// NAMED_USER licenses: the user the seat is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub nonce: String,
}

/// The signed result of an activation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivateResult {
    pub activation_id: Uuid,
    /// Compact envelope of kind `activation-token`.
    pub activation_token: String,
    /// Armored envelope of kind `license-file`.
    pub license_file: String,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_interval_secs: u32,
    /// This device had an activation already, which was returned (no new seat taken).
    #[serde(default)]
    pub reused: bool,
}

/// `POST /v1/client/validate`: a license check by key, without an activation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateRequest {
    pub license_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Vec<Component>>,
    /// The host's domain as the agent sees it, for `DOMAIN` restrictions (reported, so advisory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub nonce: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateResult {
    pub valid: bool,
    pub decision: Decision,
    pub license_id: Uuid,
    pub status: LicenseStatus,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One use of a metered feature, recorded by the agent while offline if need be. `id` makes it idempotent: the
/// same event sent twice is counted once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageEvent {
    pub id: Uuid,
    pub feature: String,
    /// 1 ..= [`MAX_USAGE_AMOUNT`].
    pub amount: u64,
    pub recorded_at: DateTime<Utc>,
}

/// What the agent reports about itself with a heartbeat. Other members are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub other: Map<String, Value>,
}

/// SHA-256 (lower-case hex) of the exact text of the artefacts a device holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Held {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_token: Option<String>,
}

/// `POST /v1/client/heartbeat` (device-signed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    pub activation_id: Uuid,
    pub nonce: String,
    /// The device's clock when it sent this; refused when more than [`REPLAY_WINDOW_SECS`] off.
    pub sent_at: DateTime<Utc>,
    #[serde(default)]
    pub usage: Vec<UsageEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<AgentMetrics>,
    /// What the device already holds; unchanged artefacts are not sent again.
    #[serde(default)]
    pub held: Held,
    /// Lower-case hex of `Fingerprint::digest()` of the host's current fingerprint: one activation heard from
    /// two hosts within an hour is flagged (`security.activation_shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_digest: Option<String>,
}

/// An activation's state on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActivationStatus {
    Active,
    Deactivated,
}

impl ActivationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivationStatus::Active => "ACTIVE",
            ActivationStatus::Deactivated => "DEACTIVATED",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResult {
    pub activation_status: ActivationStatus,
    pub license_status: LicenseStatus,
    /// Omitted when the device holds this exact token already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_token: Option<String>,
    /// Omitted when the device holds this exact file already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_file: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub next_heartbeat_secs: u32,
    /// Ids of the usage events now recorded (including ones recorded before: sending again is safe).
    #[serde(default)]
    pub accepted_usage: Vec<Uuid>,
    /// The license's usage per metered feature on the server, after this heartbeat.
    #[serde(default)]
    pub usage_totals: BTreeMap<String, u64>,
}

/// `POST /v1/client/deactivate` (device-signed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeactivateRequest {
    pub activation_id: Uuid,
    pub nonce: String,
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeactivateResult {
    pub deactivated: bool,
}

/// `POST /v1/client/offline/respond` (and `/v1/offline/respond` for staff): answers a request code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RespondRequest {
    pub request_code: String,
    /// Required when the request code does not carry the key's lookup hint unambiguously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RespondSummary {
    pub license_id: Uuid,
    pub license_key_hint: String,
    pub device_public_key: String,
    pub activation_id: Uuid,
    pub reused: bool,
    pub seats_used: u32,
    pub max_activations: u32,
    pub features: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Until when the grant works before the device must renew it (a new request/response pair).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The activation this one superseded (the same device key renewing from another machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RespondResult {
    /// The response code to paste into the air-gapped machine.
    pub response_code: String,
    pub summary: RespondSummary,
}

/// `POST /v1/client/offline/receipt` (and `/v1/offline/receipt` for staff): hands in a deactivation receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    pub receipt_code: String,
}

// Signed answers and errors ----------------------------------------------------------------------------------

/// A successful answer of an [`Endpoint`]: `{"signed": "<compact server-response envelope>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedBody {
    pub signed: String,
}

/// The payload of a `server-response` envelope. The agent trusts `result` only once the nonce it sent, the
/// endpoint it called and the activation it expects are all in here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedPayload<'a, R> {
    /// The request's nonce, echoed (borrowed when the server builds an answer).
    pub nonce: std::borrow::Cow<'a, str>,
    /// Absent only in answers of servers older than the binding, which agents refuse.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// The activation the answer is about (absent for validate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<Uuid>,
    /// RFC 3339 in UTC with microseconds (any RFC 3339 time is read).
    #[serde(with = "rfc3339_micros")]
    pub server_time: DateTime<Utc>,
    pub result: R,
}

/// Times as the server writes them: RFC 3339, UTC, microseconds (`2026-01-01T00:00:00.000000Z`).
pub mod rfc3339_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }
}

/// Every refusal of the API: `{"error": {"code", "message", "details"}}`, with the status [`ErrorCode::status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    pub code: ErrorCode,
    /// What went wrong and what to do, for a person.
    #[serde(default)]
    pub message: String,
    /// Machine-readable particulars (which field, which limit); an object, empty when there are none.
    #[serde(default)]
    pub details: Value,
}

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $status:literal, $text:literal;)*) => {
        /// The stable codes of API refusals, each with its one HTTP status. Clients match these, never messages.
        /// A code this build does not know (from a newer server) reads as [`ErrorCode::Unrecognised`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
            /// A code from a newer server; the HTTP status still tells its class.
            Unrecognised,
        }

        impl ErrorCode {
            /// Every code, in table order ([`ErrorCode::Unrecognised`] excluded).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The HTTP status the API answers this code with.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Unrecognised => 500,
                }
            }

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                    ErrorCode::Unrecognised => "UNRECOGNISED",
                }
            }

            /// One line on what the code means, for the API document (with the leading space of its doc comment).
            pub const fn describe(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),*),)*
                    ErrorCode::Unrecognised => "a code this build does not know",
                }
            }

            /// The code a wire text names; [`ErrorCode::Unrecognised`] for any other text.
            pub fn parse(s: &str) -> ErrorCode {
                match s {
                    $($text => ErrorCode::$variant,)*
                    _ => ErrorCode::Unrecognised,
                }
            }
        }
    };
}

error_codes! {
    // Malformed requests (400).
    /// The body is not valid JSON, or not the expected shape.
    BadRequest = 400, "BAD_REQUEST";
    /// The license key is malformed or its check symbol is wrong.
    InvalidLicenseKey = 400, "INVALID_LICENSE_KEY";
    /// The nonce is not 8 to 64 bytes of base64url.
    InvalidNonce = 400, "INVALID_NONCE";
    /// A copy-paste code (request, response, receipt, emergency) does not decode.
    InvalidCode = 400, "INVALID_CODE";
    /// The device public key is not a 32-byte Ed25519 key in base64url.
    InvalidDeviceKey = 400, "INVALID_DEVICE_KEY";
    /// A device-signed request's `sent_at` is more than ten minutes off the server's clock.
    StaleRequest = 400, "STALE_REQUEST";
    // Authentication (401) and permission (403).
    /// No valid bearer token.
    Unauthorized = 401, "UNAUTHORIZED";
    /// A device-signed endpoint was called without the signature header.
    SignatureRequired = 401, "SIGNATURE_REQUIRED";
    /// The device signature does not verify for this activation's key.
    SignatureInvalid = 401, "SIGNATURE_INVALID";
    /// The token's role or tenant does not allow this.
    Forbidden = 403, "FORBIDDEN";
    /// The license is suspended.
    LicenseSuspended = 403, "LICENSE_SUSPENDED";
    /// The license was revoked.
    LicenseRevoked = 403, "LICENSE_REVOKED";
    /// The license has expired.
    LicenseExpired = 403, "LICENSE_EXPIRED";
    /// The license starts later.
    LicenseNotYetValid = 403, "LICENSE_NOT_YET_VALID";
    /// The license key is for another product.
    ProductMismatch = 403, "PRODUCT_MISMATCH";
    /// The license's restrictions (network, location, domain) refuse this client.
    Restricted = 403, "RESTRICTED";
    /// The vendor blocked this device.
    DeviceBlocked = 403, "DEVICE_BLOCKED";
    /// The code was not made for this license (or was altered).
    CodeMismatch = 403, "CODE_MISMATCH";
    /// The license does not allow emergency codes.
    EmergencyDisabled = 403, "EMERGENCY_DISABLED";
    // Not found (404).
    /// No such object in this tenant.
    NotFound = 404, "NOT_FOUND";
    /// No license has this key.
    LicenseNotFound = 404, "LICENSE_NOT_FOUND";
    /// No such activation (or it was purged).
    ActivationNotFound = 404, "ACTIVATION_NOT_FOUND";
    /// No route has this path.
    NoSuchRoute = 404, "NO_SUCH_ROUTE";
    /// The path exists, with other methods.
    MethodNotAllowed = 405, "METHOD_NOT_ALLOWED";
    // Conflicts with the current state (409).
    /// A duplicate, or a reference to something that does not exist.
    Conflict = 409, "CONFLICT";
    /// The object changed while the request was handled: reload and retry.
    Changed = 409, "CHANGED";
    /// The license changed while the request was handled: reload and retry.
    LicenseChanged = 409, "LICENSE_CHANGED";
    /// The license is revoked, which is final: it cannot be changed, renewed or transferred.
    LicenseFinal = 409, "LICENSE_FINAL";
    /// The change is not allowed from the current status (of the license, subscription or plan).
    InvalidTransition = 409, "INVALID_TRANSITION";
    /// Every seat of the license is in use.
    SeatLimitReached = 409, "SEAT_LIMIT_REACHED";
    /// The license's emergency codes for this period are used up.
    EmergencyLimitReached = 409, "EMERGENCY_LIMIT_REACHED";
    /// The license or template does not allow offline activation for its model.
    OfflineNotSupported = 409, "OFFLINE_NOT_SUPPORTED";
    /// The grant does not allow releasing its seat by receipt.
    OfflineReleaseNotAllowed = 409, "OFFLINE_RELEASE_NOT_ALLOWED";
    /// The receipt is for another (older) grant of this activation.
    ReceiptGrantMismatch = 409, "RECEIPT_GRANT_MISMATCH";
    /// Another product has this id.
    ProductIdTaken = 409, "PRODUCT_ID_TAKEN";
    /// Another product has this code.
    ProductCodeTaken = 409, "PRODUCT_CODE_TAKEN";
    /// Another plan or add-on of the product has this code (archived ones keep theirs).
    PlanCodeTaken = 409, "PLAN_CODE_TAKEN";
    /// Another current plan of the product has this rank.
    PlanRankTaken = 409, "PLAN_RANK_TAKEN";
    /// Another current plan of the product has this tier name.
    PlanTierTaken = 409, "PLAN_TIER_TAKEN";
    // Payload limits (413, 415).
    /// The body is larger than the server's limit.
    PayloadTooLarge = 413, "PAYLOAD_TOO_LARGE";
    /// The body is not `application/json`.
    UnsupportedMediaType = 415, "UNSUPPORTED_MEDIA_TYPE";
    // Well-formed but refused values (422).
    /// A field's value is refused; the message names it.
    ValidationFailed = 422, "VALIDATION_FAILED";
    /// The fingerprint lacks a machine identity or enough components for the license's policy.
    FingerprintInsufficient = 422, "FINGERPRINT_INSUFFICIENT";
    /// A PER_CPU / PER_CORE license needs the machine's processor count.
    CpuCountRequired = 422, "CPU_COUNT_REQUIRED";
    /// A NAMED_USER license needs the user's id.
    UserIdRequired = 422, "USER_ID_REQUIRED";
    /// The license's emergency codes must be bound to a request code.
    EmergencyBindingRequired = 422, "EMERGENCY_BINDING_REQUIRED";
    // Limits and availability (429, 5xx).
    /// Too many requests: retry after the `Retry-After` seconds.
    RateLimited = 429, "RATE_LIMITED";
    /// The server failed; it logged why.
    Internal = 500, "INTERNAL";
    /// The database is busy: retry in a moment.
    Busy = 503, "BUSY";
    /// The server is starting or stopping.
    NotReady = 503, "NOT_READY";
    /// The request ran out of time before it changed anything: a retry is safe.
    Timeout = 503, "TIMEOUT";
    /// The request ran out of time after a write began: look before retrying.
    TimeoutOutcomeUnknown = 503, "TIMEOUT_OUTCOME_UNKNOWN";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_has_one_client_or_server_status() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} listed twice");
            assert_eq!(ErrorCode::parse(c.as_str()), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), c);
            assert!((400..600).contains(&c.status()), "{c}: {}", c.status());
            assert!(c.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{c}");
            assert!(!c.describe().is_empty(), "{c} has no description");
        }
        assert_eq!(ErrorCode::parse("SOMETHING_NEW"), ErrorCode::Unrecognised);
        assert!(!ErrorCode::ALL.contains(&ErrorCode::Unrecognised));
    }

    #[test]
    fn endpoints_travel_as_their_paths() {
        for e in Endpoint::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.path()));
            assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), e);
        }
        assert!(serde_json::from_str::<Endpoint>("\"/v1/client/other\"").is_err());
    }

    #[test]
    fn requests_ignore_unknown_fields_and_default_what_came_later() {
        let r: HeartbeatRequest = serde_json::from_str(
            r#"{"activation_id":"0190f5a2-0000-7000-8000-000000000001","nonce":"n","sent_at":"2026-01-01T00:00:00Z","future":1}"#,
        )
        .unwrap();
        assert!(r.usage.is_empty() && r.held == Held::default() && r.metrics.is_none());
        let m: DeviceMetadata = serde_json::from_str(r#"{"hostname":"h","rack":"r7"}"#).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("h"));
        assert_eq!(m.other.get("rack"), Some(&Value::from("r7")));
        assert!(serde_json::from_str::<DeviceMetadata>(r#""a string""#).is_err());
        // A negative usage amount is not a usage amount.
        assert!(serde_json::from_str::<UsageEvent>(
            r#"{"id":"0190f5a2-0000-7000-8000-000000000001","feature":"f","amount":-5,"recorded_at":"2026-01-01T00:00:00Z"}"#
        )
        .is_err());
    }

    #[test]
    fn an_error_body_with_a_new_code_still_reads() {
        let b: ErrorBody = serde_json::from_str(r#"{"error":{"code":"QUOTA_GONE","message":"m"}}"#).unwrap();
        assert_eq!(b.error.code, ErrorCode::Unrecognised);
        assert_eq!(b.error.details, Value::Null);
    }
}
