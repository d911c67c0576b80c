//! gRPC (`proto/tessera/v1/licensing.proto`): the `tessera.v1.Licensing` service for backends, on its own port
//! (`grpc_listen`). Like the HTTP handlers, this layer only translates: metadata to a caller context, messages to
//! the requests of [`crate::services::backend`], answers back to messages, and [`AppError`]s to statuses by one
//! table ([`grpc_code`]).
//!
//! Per call, in order: the per-IP limit of the admin API (the same buckets as the REST admin API, checked before
//! the token), the bearer token (`authorization: Bearer tsa_…`, [`Services::authenticate`]), then the service
//! call under the request timeout with the write-tracking of `store::writes` (a timeout says truthfully whether
//! anything was applied). Messages larger than `body_limit_bytes` are refused by tonic before they are decoded.
//!
//! A refusal carries its stable code three ways: metadata `x-tessera-code`, a `google.rpc.ErrorInfo` in the
//! status details (reason = the code, domain `tessera`, metadata `details` = the REST error's details as JSON),
//! and, when the server names a delay, metadata `retry-after` (seconds) with a `google.rpc.RetryInfo`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tessera_core::decision::Facts;
use tessera_core::fingerprint::{Component, ComponentKind};
use tessera_core::Decision;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use uuid::Uuid;

use crate::error::{AppError, AppResult, ErrorCode};
use crate::ratelimit::RateLimiter;
use crate::services::backend::{BackendValidate, FeatureCheck, FeatureUse, RecordUsage, UsageTarget};
use crate::services::{Ctx, Services};

/// The code generated from the .proto (server and client).
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod proto {
    tonic::include_proto!("tessera.v1");
}

use proto::licensing_server::{Licensing, LicensingServer};

/// Metadata key of the stable error code of a refusal.
pub const CODE_METADATA: &str = "x-tessera-code";
/// Metadata key of the seconds to wait before retrying (rate limits, busy, timeouts that applied nothing).
pub const RETRY_AFTER_METADATA: &str = "retry-after";
/// `google.rpc.ErrorInfo.domain` of Tessera's refusals.
pub const ERROR_DOMAIN: &str = "tessera";

/// The gRPC status code of an error code. Most follow the code's HTTP status; conflicts are split by what the
/// caller should do (a duplicate, a concurrent change to retry, or a state that forbids the call).
///
/// | HTTP | gRPC |
/// |------|------|
/// | 400, 413, 415, 422 | `INVALID_ARGUMENT` |
/// | 401 | `UNAUTHENTICATED` |
/// | 403 | `PERMISSION_DENIED` |
/// | 404 | `NOT_FOUND` |
/// | 405 | `UNIMPLEMENTED` |
/// | 409 `CONFLICT`, `PRODUCT_ID_TAKEN`, `PRODUCT_CODE_TAKEN` | `ALREADY_EXISTS` |
/// | 409 `CHANGED`, `LICENSE_CHANGED` | `ABORTED` (re-read and retry) |
/// | 409 others | `FAILED_PRECONDITION` |
/// | 429 | `RESOURCE_EXHAUSTED` (with retry info) |
/// | 503 `BUSY`, `NOT_READY`, `TIMEOUT` | `UNAVAILABLE` (nothing applied: retry is safe) |
/// | 503 `TIMEOUT_OUTCOME_UNKNOWN` | `DEADLINE_EXCEEDED` (may have been applied) |
/// | 500 and any other 5xx | `INTERNAL` |
/// | a code this build does not know | `UNKNOWN` |
pub fn grpc_code(code: ErrorCode) -> Code {
    use ErrorCode as E;
    match code {
        E::Conflict | E::ProductIdTaken | E::ProductCodeTaken => Code::AlreadyExists,
        E::Changed | E::LicenseChanged => Code::Aborted,
        E::Busy | E::NotReady | E::Timeout => Code::Unavailable,
        E::TimeoutOutcomeUnknown => Code::DeadlineExceeded,
        E::Unrecognised => Code::Unknown,
        c => match c.status() {
            400 | 413 | 415 | 422 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            405 => Code::Unimplemented,
            409 => Code::FailedPrecondition,
            429 => Code::ResourceExhausted,
            _ => Code::Internal,
        },
    }
}

/// The status of a refusal (see the module docs for where the code travels).
pub fn status(e: AppError) -> Status {
    if let Some(cause) = &e.cause {
        tracing::error!(code = e.code.as_str(), cause, "internal error");
    }
    let mut details = ErrorDetails::new();
    let mut info = std::collections::HashMap::new();
    if e.details.as_object().is_some_and(|m| !m.is_empty()) {
        info.insert("details".to_string(), e.details.to_string());
    }
    details.set_error_info(e.code.as_str(), ERROR_DOMAIN, info);
    if let Some(s) = e.retry_after {
        details.set_retry_info(Some(Duration::from_secs(s)));
    }
    let mut st = Status::with_error_details(grpc_code(e.code), e.message, details);
    st.metadata_mut().insert(CODE_METADATA, tonic::metadata::MetadataValue::from_static(e.code.as_str()));
    if let Some(s) = e.retry_after {
        st.metadata_mut().insert(RETRY_AFTER_METADATA, tonic::metadata::MetadataValue::from(s));
    }
    st
}

/// The `Licensing` service over the services.
#[derive(Clone)]
pub struct Grpc {
    services: Arc<Services>,
    /// The admin API's per-IP limiter (shared with the HTTP listener: one budget per address for both ports).
    limiter: Arc<RateLimiter>,
    timeout: Duration,
}

impl Grpc {
    pub fn new(services: Arc<Services>, limiter: Arc<RateLimiter>) -> Grpc {
        let timeout = Duration::from_secs(services.config.request_timeout_secs.max(1));
        Grpc { services, limiter, timeout }
    }

    /// The tonic service, with the message size limit of the HTTP API (`body_limit_bytes`).
    pub fn into_service(self) -> LicensingServer<Grpc> {
        let limit = self.services.config.body_limit_bytes;
        LicensingServer::new(self).max_decoding_message_size(limit).max_encoding_message_size(limit.max(1 << 20))
    }

    /// The caller's address: the connection's. The gRPC port is reached by backends directly, with no proxy of
    /// ours to overwrite `x-forwarded-for`, so a forwarded address is never taken from the caller here (it would
    /// pick its own rate-limit bucket and audit address on every call).
    fn client_ip<T>(&self, req: &Request<T>) -> Option<String> {
        req.remote_addr().map(|a| a.ip().to_string())
    }

    /// The rate limit, then the bearer token: the caller's context.
    async fn caller<T>(&self, req: &Request<T>) -> AppResult<Ctx> {
        let ip = self.client_ip(req);
        self.limiter.check(&crate::http::extract::rate_key(ip.as_deref())).map_err(AppError::rate_limited)?;
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                AppError::unauthorized("missing authorization metadata: send authorization: Bearer <API token>")
            })?
            .to_str()
            .map_err(|_| AppError::unauthorized("the authorization metadata is not valid text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AppError::unauthorized("use the Bearer scheme: authorization: Bearer <API token>"))?;
        let principal = self.services.authenticate(token).await?;
        Ok(Ctx::admin(principal, ip))
    }

    /// Authenticates, then runs `call` within the request timeout; maps its answer or refusal.
    async fn serve<T, R, F, Fut>(&self, req: Request<T>, call: F) -> Result<Response<R>, Status>
    where
        F: FnOnce(Arc<Services>, Ctx, T) -> Fut,
        Fut: std::future::Future<Output = AppResult<R>>,
    {
        let ctx = self.caller(&req).await.map_err(status)?;
        let fut = call(self.services.clone(), ctx, req.into_inner());
        match crate::store::writes::within(self.timeout, fut).await {
            Ok(Ok(r)) => Ok(Response::new(r)),
            Ok(Err(e)) => Err(status(e)),
            Err(t) => Err(status(AppError::timed_out(t))),
        }
    }
}

// Messages to requests and answers to messages ---------------------------------------------------------------

fn bad(message: impl Into<String>) -> AppError {
    AppError::bad_request(message)
}

fn uuid(field: &str, s: &str) -> AppResult<Uuid> {
    Uuid::parse_str(s.trim()).map_err(|_| bad(format!("{field} must be a UUID")))
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn from_timestamp(field: &str, t: prost_types::Timestamp) -> AppResult<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| bad(format!("{field} is not a valid timestamp")))
}

fn component(c: proto::FingerprintComponent) -> AppResult<Component> {
    let kind = ComponentKind::ALL.into_iter().find(|k| k.as_str() == c.kind).ok_or_else(|| {
        bad(format!(
            "fingerprint component kind {:?} is unknown: one of {}",
            c.kind,
            ComponentKind::ALL.map(ComponentKind::as_str).join(", ")
        ))
    })?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(c.hash.trim(), &mut hash)
        .map_err(|_| bad("a fingerprint component's hash must be 64 hex digits (SHA-256)"))?;
    Ok(Component { kind, hash })
}

/// The wire name of a serde enum (`COUNT`, …).
fn wire_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn facts(f: &Facts) -> proto::Facts {
    proto::Facts {
        expires_at: f.expires_at.map(timestamp),
        grace_ends_at: f.grace_ends_at.map(timestamp),
        lease_expires_at: f.lease_expires_at.map(timestamp),
        feature_expires_at: f.feature_expires_at.map(timestamp),
        limit: f.limit,
        limit_type: f.limit_type.map(wire_name),
        used: f.used,
        remaining: f.remaining,
    }
}

fn feature(f: &FeatureUse) -> proto::Feature {
    let x = &f.feature;
    proto::Feature {
        id: x.id.clone(),
        name: if x.name.is_empty() { x.id.clone() } else { x.name.clone() },
        enabled: x.enabled,
        limit: (x.limit_value >= 0).then_some(x.limit_value),
        limit_type: wire_name(x.limit_type),
        expires_at: x.expires_at.map(timestamp),
        used: f.used,
    }
}

fn check_answer(d: &Decision) -> proto::CheckFeatureResponse {
    proto::CheckFeatureResponse {
        allowed: d.allowed,
        reason: d.reason.as_str().to_string(),
        facts: Some(facts(&d.facts)),
    }
}

#[tonic::async_trait]
impl Licensing for Grpc {
    async fn validate(
        &self,
        req: Request<proto::ValidateRequest>,
    ) -> Result<Response<proto::ValidateResponse>, Status> {
        self.serve(req, |s, ctx, m| async move {
            let fingerprint = if m.fingerprint.is_empty() {
                None
            } else {
                Some(m.fingerprint.into_iter().map(component).collect::<AppResult<Vec<_>>>()?)
            };
            let req = BackendValidate {
                license_key: m.license_key,
                feature: m.feature,
                fingerprint,
                activation_id: m.activation_id.as_deref().map(|a| uuid("activation_id", a)).transpose()?,
                domain: m.domain,
                client_ip: m.client_ip,
                nonce: m.nonce,
            };
            let v = s.backend_validate(&ctx, req).await?;
            let r = &v.result;
            Ok(proto::ValidateResponse {
                valid: r.valid,
                reason: r.decision.reason.as_str().to_string(),
                facts: Some(facts(&r.decision.facts)),
                license_id: r.license_id.to_string(),
                status: r.status.as_str().to_string(),
                expires_at: r.expires_at.map(timestamp),
                features: v.features.iter().map(feature).collect(),
                signed: v.signed.0,
                nonce: v.nonce,
            })
        })
        .await
    }

    async fn check_feature(
        &self,
        req: Request<proto::CheckFeatureRequest>,
    ) -> Result<Response<proto::CheckFeatureResponse>, Status> {
        self.serve(req, |s, ctx, m| async move {
            let req = FeatureCheck { license_key: m.license_key, feature: m.feature, amount: m.amount };
            Ok(check_answer(&s.check_feature(&ctx, req).await?))
        })
        .await
    }

    async fn record_usage(
        &self,
        req: Request<proto::RecordUsageRequest>,
    ) -> Result<Response<proto::RecordUsageResponse>, Status> {
        use proto::record_usage_request::Target;
        self.serve(req, |s, ctx, m| async move {
            let target = match m.target {
                Some(Target::LicenseKey(k)) => UsageTarget::LicenseKey(k),
                Some(Target::ActivationId(a)) => UsageTarget::Activation(uuid("activation_id", &a)?),
                None => return Err(bad("name the license: license_key or activation_id")),
            };
            let req = RecordUsage {
                target,
                feature: m.feature,
                amount: m.amount,
                id: uuid("id", &m.id)?,
                recorded_at: m.recorded_at.map(|t| from_timestamp("recorded_at", t)).transpose()?,
            };
            let r = s.record_usage(&ctx, req).await?;
            Ok(proto::RecordUsageResponse {
                recorded: r.recorded,
                total: r.total,
                license_id: r.license_id.to_string(),
            })
        })
        .await
    }
}

/// Serves the `Licensing` service on `listener` until `shutdown` resolves, then drains in-flight calls.
pub async fn serve(
    listener: tokio::net::TcpListener,
    grpc: Grpc,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(grpc.into_service())
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status_of_its_class() {
        for &c in ErrorCode::ALL {
            let g = grpc_code(c);
            match c.status() {
                500..=599 => {
                    assert!(matches!(g, Code::Internal | Code::Unavailable | Code::DeadlineExceeded), "{c}: {g:?}")
                }
                _ => assert!(!matches!(g, Code::Internal | Code::Unknown | Code::Ok), "{c}: a client error is {g:?}"),
            }
        }
        assert_eq!(grpc_code(ErrorCode::ValidationFailed), Code::InvalidArgument);
        assert_eq!(grpc_code(ErrorCode::RateLimited), Code::ResourceExhausted);
        assert_eq!(grpc_code(ErrorCode::LicenseNotFound), Code::NotFound);
        assert_eq!(grpc_code(ErrorCode::SeatLimitReached), Code::FailedPrecondition);
        assert_eq!(grpc_code(ErrorCode::Conflict), Code::AlreadyExists);
    }

    #[test]
    fn a_refusal_carries_its_code_and_retry_delay() {
        let st = status(AppError::rate_limited(7));
        assert_eq!(st.code(), Code::ResourceExhausted);
        assert_eq!(st.metadata().get(CODE_METADATA).and_then(|v| v.to_str().ok()), Some("RATE_LIMITED"));
        assert_eq!(st.metadata().get(RETRY_AFTER_METADATA).and_then(|v| v.to_str().ok()), Some("7"));
        let d = st.get_error_details();
        assert_eq!(d.error_info().map(|i| i.reason.as_str()), Some("RATE_LIMITED"));
        assert_eq!(d.retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(7)));
    }
}
