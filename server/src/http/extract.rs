//! Extractors that turn every rejection into the one error shape.

use std::net::SocketAddr;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::AppState;
use tessera_core::license_key::{ct_eq, hash_secret};

use crate::error::{AppError, ErrorCode};
use crate::services::Ctx;

fn rejection(status: StatusCode, body_text: String) -> AppError {
    let (code, hint) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "send a smaller body"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (ErrorCode::UnsupportedMediaType, "send Content-Type: application/json"),
        StatusCode::UNPROCESSABLE_ENTITY => (ErrorCode::ValidationFailed, "fix the fields named above"),
        _ => (ErrorCode::BadRequest, "send valid JSON"),
    };
    AppError::new(code, format!("{body_text}: {hint}"))
}

/// A JSON object body sent as `application/json` (serde alone would also read a struct from a JSON array).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiBytes(body) = ApiBytes::from_request(req, state).await?;
        if body.is_empty() {
            return Err(not_an_object());
        }
        axum::Json::<T>::from_bytes(&body).map(|axum::Json(v)| ApiJson(v)).map_err(json_rejection)
    }
}

fn json_rejection(e: JsonRejection) -> AppError {
    rejection(e.status(), e.body_text())
}

fn not_an_object() -> AppError {
    AppError::bad_request("the request body must be a JSON object: send valid JSON")
}

/// `application/json` or `application/*+json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Raw body bytes (device-signed requests, optional bodies). A body that is not blank must be a JSON object
/// sent as `application/json`, as everywhere else in the API; a blank one may come without a content type.
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| rejection(e.status(), e.body_text()))?;
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => Ok(ApiBytes(axum::body::Bytes::new())),
            Some(_) if !json => Err(rejection(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected request with `Content-Type: application/json`".into(),
            )),
            Some(b'{') => Ok(ApiBytes(body)),
            Some(_) => Err(not_an_object()),
        }
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| AppError::bad_request(format!("{}: ids in the path are UUIDs", e.body_text())))
    }
}

/// Query string.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| AppError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// The rate-limit bucket of a client address: an IPv4 address is its own bucket; an IPv6 client is bucketed by
/// its /64 (one customer link gets a whole /64, so per-address buckets would be free to multiply); anything that is
/// no address shares one bucket.
pub fn rate_key(ip: Option<&str>) -> Vec<u8> {
    match ip.and_then(crate::services::client::parse_addr) {
        Some(std::net::IpAddr::V4(v4)) => v4.octets().to_vec(),
        Some(std::net::IpAddr::V6(v6)) => {
            let mut k = vec![6u8];
            k.extend_from_slice(&v6.octets()[..8]);
            k
        }
        // No readable address (none, or a forwarded value that is not one): one bucket for all of them, so such
        // a value can neither pick a fresh bucket per call nor grow the limiter's memory.
        None => b"unknown-address".to_vec(),
    }
}

pub fn client_ip(parts: &Parts, trust_forwarded: bool) -> Option<String> {
    if trust_forwarded {
        // The rightmost entry is the one our proxy appended; entries left of it come from the client and can be
        // anything, so using them would let a client pick its own rate-limit bucket.
        if let Some(v) = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            if let Some(last) = v.rsplit(',').next() {
                let ip = last.trim();
                if !ip.is_empty() {
                    return Some(ip.to_string());
                }
            }
        }
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

/// An authenticated admin caller.
pub struct Auth(pub Ctx);

/// The bearer token of the `Authorization` header; `what` names the token the endpoint wants (for the message).
fn bearer<'a>(parts: &'a Parts, what: &str) -> Result<&'a str, AppError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            AppError::unauthorized(format!("missing Authorization header: send Authorization: Bearer <{what}>"))
        })?
        .to_str()
        .map_err(|_| AppError::unauthorized("the Authorization header is not valid text"))?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| AppError::unauthorized(format!("use the Bearer scheme: Authorization: Bearer <{what}>")))
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts, state.services.config.trust_forwarded_for);
        state.admin_limiter.check(&rate_key(ip.as_deref())).map_err(AppError::rate_limited)?;
        let token = bearer(parts, "API token")?;
        let principal = state.services.authenticate(token).await?;
        Ok(Auth(Ctx::admin(principal, ip)))
    }
}

/// A caller allowed to read `/metrics`: the configured metrics token (compared as a SHA-256 hash, in constant
/// time) or a vendor-admin API token. Within the admin per-IP limit, checked first.
pub struct MetricsAuth;

const METRICS_WANTS: &str = "metrics token or vendor-admin API token";

impl FromRequestParts<AppState> for MetricsAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts, state.services.config.trust_forwarded_for);
        state.admin_limiter.check(&rate_key(ip.as_deref())).map_err(AppError::rate_limited)?;
        let token = bearer(parts, METRICS_WANTS)?.trim();
        if let Some(want) = &state.metrics_token {
            if ct_eq(&hash_secret(token), want) {
                return Ok(MetricsAuth);
            }
        }
        if !token.starts_with(crate::services::admin::TOKEN_PREFIX) {
            return Err(AppError::unauthorized(if state.metrics_token.is_some() {
                "the token is neither the metrics token nor an API token: send Authorization: Bearer <metrics token \
                 or vendor-admin API token>"
            } else {
                "no metrics token is configured (metrics_token / TESSERA_METRICS_TOKEN), so /metrics needs a \
                 vendor-admin API token: send Authorization: Bearer <vendor-admin token>"
            }));
        }
        let principal = state.services.authenticate(token).await?;
        Ctx::admin(principal, ip).require_vendor().map_err(|_| {
            AppError::forbidden(
                "metrics cover every tenant: /metrics needs a vendor-admin API token or the configured metrics token",
            )
        })?;
        Ok(MetricsAuth)
    }
}

/// A client-endpoint caller (authenticated by the license key or device key in the body), within its per-IP rate
/// limit (checked here, before the body is read: 429 with Retry-After otherwise).
pub struct Client(pub Ctx);

impl FromRequestParts<AppState> for Client {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts, state.services.config.trust_forwarded_for);
        state.ip_limiter.check(&rate_key(ip.as_deref())).map_err(AppError::rate_limited)?;
        Ok(Client(Ctx::client(ip)))
    }
}

/// The device signature header (`X-Tessera-Signature`), if present; the services say what is wrong with it.
pub struct DeviceSignature(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for DeviceSignature {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let v = parts.headers.get("x-tessera-signature").and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(DeviceSignature(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(xff: &str) -> Parts {
        let mut p = axum::http::Request::builder().header("x-forwarded-for", xff).body(()).unwrap().into_parts().0;
        p.extensions.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 443))));
        p
    }

    #[test]
    fn forwarded_for_uses_the_entry_our_proxy_appended() {
        let p = parts("6.6.6.6, 203.0.113.9");
        assert_eq!(client_ip(&p, true).as_deref(), Some("203.0.113.9"), "the client-supplied entry is ignored");
        assert_eq!(client_ip(&p, false).as_deref(), Some("10.0.0.1"), "untrusted header: the socket address");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        assert_eq!(rate_key(Some("2001:db8:1:2::1")), rate_key(Some("2001:db8:1:2:ffff::9")));
        assert_ne!(rate_key(Some("2001:db8:1:2::1")), rate_key(Some("2001:db8:1:3::1")));
        assert_eq!(rate_key(Some("::ffff:203.0.113.9")), rate_key(Some("203.0.113.9")), "IPv4-mapped is IPv4");
        assert_ne!(rate_key(Some("203.0.113.9")), rate_key(Some("203.0.113.10")));
        assert_eq!(rate_key(Some("203.0.113.9:4711")), rate_key(Some("203.0.113.9:4712")), "a port is no new client");
    }

    #[test]
    fn values_that_are_no_address_share_one_small_bucket() {
        let junk = "x".repeat(16 * 1024);
        let keys = [rate_key(Some("not-an-address")), rate_key(Some(&junk)), rate_key(Some("")), rate_key(None)];
        assert!(keys.iter().all(|k| *k == keys[0]), "one bucket for all of them");
        assert!(keys[0].len() < 32, "and its key does not grow with the value");
        assert_ne!(keys[0], rate_key(Some("203.0.113.9")));
    }
}
