//! The client side of docs/PROTOCOL.md: nonces, device-signed requests, signed and nonce-checked answers.

use chrono::{DateTime, Utc};
use rand_core::{OsRng, RngCore};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_core::encoding::b64url;
use tessera_core::envelope::Envelope;
use tessera_core::protocol::{Endpoint, ErrorBody, ErrorCode, SignedBody, SignedPayload, SIGNATURE_HEADER};
use tessera_core::{Domain, PublicKeyset, SigningKey};
use uuid::Uuid;

use crate::error::AgentError;

/// A fresh nonce: 16 random bytes, base64url.
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b64url(&b)
}

/// Which activation a signed answer must name (its `activation_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForActivation {
    /// This one (heartbeat, deactivate, a stored heartbeat answer).
    Is(Uuid),
    /// None (validate).
    None,
    /// Whichever it names, which the caller then checks against the result: an activation answer names the
    /// activation it created, which the device cannot know before.
    Created,
}

/// A verified answer.
#[derive(Debug)]
pub struct Verified<T> {
    pub result: T,
    pub server_time: DateTime<Utc>,
    /// The activation the answer names.
    pub activation_id: Option<Uuid>,
    /// The compact envelope as received (kept to re-verify later).
    pub signed: String,
}

/// The checked content of a signed answer.
#[derive(Debug)]
pub struct Opened<T> {
    pub result: T,
    pub server_time: DateTime<Utc>,
    pub activation_id: Option<Uuid>,
}

/// Verifies a `server-response` envelope and returns its payload's `result` and `server_time`, once the answer is
/// shown to be for `endpoint` and for the activation `activation` says.
/// `nonce`: the nonce that must be echoed (`None` when re-verifying a stored answer).
pub fn open_signed<T: DeserializeOwned>(
    signed: &str,
    keys: &PublicKeyset,
    nonce: Option<&str>,
    endpoint: Endpoint,
    activation: ForActivation,
) -> Result<Opened<T>, AgentError> {
    let env = Envelope::from_compact(signed).map_err(|e| AgentError::UntrustedResponse(e.to_string()))?;
    let payload = env.open(keys, Domain::ServerResponse).map_err(|e| AgentError::UntrustedResponse(e.to_string()))?;
    let p: SignedPayload<'_, T> = serde_json::from_slice(payload)
        .map_err(|e| AgentError::UntrustedResponse(format!("unexpected signed content: {e}")))?;
    if let Some(n) = nonce {
        if p.nonce != n {
            return Err(AgentError::UntrustedResponse(
                "the answer does not echo this request's nonce (a replayed answer?)".into(),
            ));
        }
    }
    match p.endpoint {
        Some(e) if e == endpoint => {}
        Some(e) => {
            return Err(AgentError::UntrustedResponse(format!(
                "the answer was signed for {e}, not {endpoint} (an answer passed off as another's?)"
            )))
        }
        None => {
            return Err(AgentError::UntrustedResponse(format!(
                "the answer does not name the endpoint it answers ({endpoint} expected): the server is older than \
                 this agent; upgrade tessera-server"
            )))
        }
    }
    let activation_ok = match activation {
        ForActivation::Is(id) => p.activation_id == Some(id),
        ForActivation::None => p.activation_id.is_none(),
        ForActivation::Created => p.activation_id.is_some(),
    };
    if !activation_ok {
        let named = p.activation_id.map_or_else(|| "no activation".to_string(), |a| format!("activation {a}"));
        let wanted = match activation {
            ForActivation::Is(id) => format!("activation {id}"),
            ForActivation::None => "no activation".into(),
            ForActivation::Created => "the new activation".into(),
        };
        return Err(AgentError::UntrustedResponse(format!(
            "the answer was signed for {named}, not {wanted} (an answer of another activation?)"
        )));
    }
    Ok(Opened { result: p.result, server_time: p.server_time, activation_id: p.activation_id })
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Result<Client, AgentError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("tessera-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AgentError::internal)?;
        Ok(Client { http, base: base.trim_end_matches('/').to_string() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs `body` to `endpoint`; signs it with `device` when given; verifies the signed answer, which must name
    /// `endpoint` and the activation `activation` says.
    pub async fn post<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &impl Serialize,
        nonce: &str,
        device: Option<&SigningKey>,
        keys: &PublicKeyset,
        activation: ForActivation,
    ) -> Result<Verified<T>, AgentError> {
        let bytes = serde_json::to_vec(body).map_err(AgentError::internal)?;
        let path = endpoint.path();
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(dev) = device {
            let sig = dev.sign(Domain::DeviceMessage, &[path.as_bytes()], &bytes);
            req = req.header(SIGNATURE_HEADER, b64url(&sig));
        }
        let resp = req
            .body(bytes)
            .send()
            .await
            .map_err(|e| AgentError::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        let status = resp.status();
        let text =
            resp.text().await.map_err(|e| AgentError::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        if !status.is_success() {
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => AgentError::Server { status: status.as_u16(), code: b.error.code, message: b.error.message },
                Err(_) => AgentError::Server {
                    status: status.as_u16(),
                    code: ErrorCode::Unrecognised,
                    message: format!("unexpected answer from {url}: {}", text.chars().take(200).collect::<String>()),
                },
            });
        }
        let body: SignedBody = serde_json::from_str(&text)
            .map_err(|_| AgentError::UntrustedResponse(format!("{url} did not answer with a signed body")))?;
        let o = open_signed(&body.signed, keys, Some(nonce), endpoint, activation)?;
        Ok(Verified {
            result: o.result,
            server_time: o.server_time,
            activation_id: o.activation_id,
            signed: body.signed,
        })
    }
}
