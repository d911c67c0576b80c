//! Signing and verification behind one abstraction: Ed25519 (default) and RSA-PSS-SHA256 (2048/3072 bits).
//!
//! Every signature covers `"tessera/v1/" kind NUL alg NUL key-id context… payload`: the artefact kind
//! separates domains (a license-file signature never verifies as an activation token), the context lets a
//! signature cover bytes both sides already hold without sending them, and the payload is the exact byte string
//! transmitted. Errors are coarse on purpose: a forger learns nothing from them.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer as _, Verifier as _};
use rand_core::OsRng;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use rsa::traits::PublicKeyParts as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::encoding::{b64url, b64url_decode};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("unknown signing key {0}: this key is not in the trusted keyset (was it rotated out, or is the artefact from another vendor?)")]
    UnknownKey(String),
    /// The keyset lists the key as revoked: nothing it signed is trusted, whatever the signature says.
    #[error("signing key {0} is revoked: nothing it signed is trusted any more; get the artefact again from the vendor's server (a new license file, re-activation, a new code), which signs with a current key")]
    RevokedKey(String),
    #[error("the artefact names algorithm {found} but key {kid} is {expected}")]
    AlgorithmMismatch { kid: String, expected: Algorithm, found: Algorithm },
    #[error("signature invalid")]
    BadSignature,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

/// Signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "rsa-pss-sha256")]
    RsaPssSha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::RsaPssSha256 => "rsa-pss-sha256",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "ed25519" => Some(Algorithm::Ed25519),
            "rsa-pss-sha256" => Some(Algorithm::RsaPssSha256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a signature is for. Part of every signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    LicenseFile,
    ActivationToken,
    OfflineRequest,
    OfflineResponse,
    DeactivationReceipt,
    EmergencyCode,
    /// A signed answer of a client endpoint (echoes the client's nonce).
    ServerResponse,
    /// A heartbeat, usage report or deactivation signed by a device key.
    DeviceMessage,
    /// An agent daemon's answer to a local feature check, signed by the device key over the application's
    /// challenge (agent/README.md, "Verifying the daemon's answers").
    LocalAnswer,
}

impl Domain {
    pub fn label(self) -> &'static str {
        match self {
            Domain::LicenseFile => "license-file",
            Domain::ActivationToken => "activation-token",
            Domain::OfflineRequest => "offline-request",
            Domain::OfflineResponse => "offline-response",
            Domain::DeactivationReceipt => "deactivation-receipt",
            Domain::EmergencyCode => "emergency-code",
            Domain::ServerResponse => "server-response",
            Domain::DeviceMessage => "device-message",
            Domain::LocalAnswer => "local-answer",
        }
    }

    pub fn from_label(s: &str) -> Option<Domain> {
        [
            Domain::LicenseFile,
            Domain::ActivationToken,
            Domain::OfflineRequest,
            Domain::OfflineResponse,
            Domain::DeactivationReceipt,
            Domain::EmergencyCode,
            Domain::ServerResponse,
            Domain::DeviceMessage,
            Domain::LocalAnswer,
        ]
        .into_iter()
        .find(|d| d.label() == s)
    }
}

/// Key id: the first 8 bytes of `SHA-256("tessera/kid/v1" NUL alg NUL public-key)`, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    fn derive(alg: Algorithm, public: &[u8]) -> KeyId {
        let mut h = Sha256::new();
        h.update(b"tessera/kid/v1\0");
        h.update(alg.as_str().as_bytes());
        h.update(b"\0");
        h.update(public);
        let d = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        KeyId(id)
    }

    /// One-byte tag used by the short human codes.
    pub fn tag(&self) -> u8 {
        self.0[0]
    }

    /// Parses the canonical form: 16 lower-case hex digits (upper case is refused so one id has one spelling).
    pub fn parse(s: &str) -> Option<KeyId> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        KeyId::parse(&s).ok_or_else(|| serde::de::Error::custom("key id must be 16 hexadecimal digits"))
    }
}

/// Builds the exact byte string a signature covers.
fn signed_message(domain: Domain, alg: Algorithm, kid: &KeyId, context: &[&[u8]], payload: &[u8]) -> Vec<u8> {
    let ctx_len: usize = context.iter().map(|c| c.len() + 4).sum();
    let mut m = Vec::with_capacity(48 + ctx_len + payload.len());
    m.extend_from_slice(b"tessera/v1/");
    m.extend_from_slice(domain.label().as_bytes());
    m.push(0);
    m.extend_from_slice(alg.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(&kid.0);
    for c in context {
        m.extend_from_slice(&(c.len() as u32).to_be_bytes());
        m.extend_from_slice(c);
    }
    m.extend_from_slice(payload);
    m
}

/// A private signing key (its key id computed once). Zeroised on drop; `Debug` shows only the algorithm and key id.
pub struct SigningKey {
    inner: SigningInner,
    kid: KeyId,
}

#[allow(clippy::large_enum_variant)] // a process holds one or two keys; boxing the hot Ed25519 one buys nothing
enum SigningInner {
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} {}, secret redacted)", self.algorithm(), self.key_id())
    }
}

impl SigningKey {
    fn from_inner(inner: SigningInner) -> SigningKey {
        let public = match &inner {
            SigningInner::Ed25519(k) => VerifyingKey::from_ed25519(k.verifying_key()),
            SigningInner::Rsa(k) => VerifyingKey::from_rsa(k.to_public_key()),
        };
        SigningKey { inner, kid: public.kid }
    }

    pub fn generate_ed25519() -> SigningKey {
        SigningKey::from_inner(SigningInner::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)))
    }

    /// RSA-PSS key of 2048 or 3072 bits.
    pub fn generate_rsa(bits: usize) -> Result<SigningKey, CryptoError> {
        if bits != 2048 && bits != 3072 {
            return Err(CryptoError::InvalidKey(format!("RSA keys must be 2048 or 3072 bits, not {bits}")));
        }
        let k = rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
        Ok(SigningKey::from_inner(SigningInner::Rsa(Box::new(k))))
    }

    pub fn ed25519_from_bytes(secret: &[u8; 32]) -> SigningKey {
        SigningKey::from_inner(SigningInner::Ed25519(ed25519_dalek::SigningKey::from_bytes(secret)))
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            SigningInner::Ed25519(_) => Algorithm::Ed25519,
            SigningInner::Rsa(_) => Algorithm::RsaPssSha256,
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match &self.inner {
            SigningInner::Ed25519(k) => VerifyingKey::from_ed25519(k.verifying_key()),
            SigningInner::Rsa(k) => VerifyingKey::from_rsa(k.to_public_key()),
        }
    }

    pub fn key_id(&self) -> KeyId {
        self.kid
    }

    /// Signs `payload` for `domain`, covering `context` without it being part of the output.
    pub fn sign(&self, domain: Domain, context: &[&[u8]], payload: &[u8]) -> Vec<u8> {
        let msg = signed_message(domain, self.algorithm(), &self.kid, context, payload);
        match &self.inner {
            SigningInner::Ed25519(k) => k.sign(&msg).to_bytes().to_vec(),
            SigningInner::Rsa(k) => {
                let signer = rsa::pss::SigningKey::<Sha256>::new((**k).clone());
                signer.sign_with_rng(&mut OsRng, &msg).to_vec()
            }
        }
    }

    /// PKCS#8 PEM of the private key.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, CryptoError> {
        let r = match &self.inner {
            SigningInner::Ed25519(k) => k.to_pkcs8_pem(LineEnding::LF),
            SigningInner::Rsa(k) => rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(k.as_ref(), LineEnding::LF),
        };
        r.map_err(|e| CryptoError::InvalidKey(e.to_string()))
    }

    /// Reads a PKCS#8 PEM private key (Ed25519 or RSA).
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, CryptoError> {
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::from_inner(SigningInner::Ed25519(k)));
        }
        match <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(pem) {
            Ok(k) => {
                let bits = k.size() * 8;
                if bits != 2048 && bits != 3072 {
                    return Err(CryptoError::InvalidKey(format!("RSA key of {bits} bits; use 2048 or 3072")));
                }
                Ok(SigningKey::from_inner(SigningInner::Rsa(Box::new(k))))
            }
            Err(_) => Err(CryptoError::InvalidKey("not a PKCS#8 PEM Ed25519 or RSA private key".into())),
        }
    }

    /// Writes the private key as PKCS#8 PEM, readable by the owner only (0600), atomically.
    pub fn save(&self, path: &Path) -> Result<(), CryptoError> {
        let pem = self.to_pkcs8_pem()?;
        write_private_file(path, pem.as_bytes())
            .map_err(|e| CryptoError::KeyFile { path: path.display().to_string(), reason: e.to_string() })
    }

    pub fn load(path: &Path) -> Result<SigningKey, CryptoError> {
        let err = |reason: String| CryptoError::KeyFile { path: path.display().to_string(), reason };
        let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        SigningKey::from_pkcs8_pem(&pem).map_err(|e| err(e.to_string()))
    }
}

/// Writes `bytes` to `path` with mode 0600 (on Unix) via a temporary file and a rename.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A public verifying key with its derived key id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    kid: KeyId,
    inner: VerifyingInner,
}

#[derive(Clone, PartialEq, Eq)]
enum VerifyingInner {
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(Box<rsa::RsaPublicKey>),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({} {})", self.algorithm(), self.kid)
    }
}

impl VerifyingKey {
    fn from_ed25519(k: ed25519_dalek::VerifyingKey) -> VerifyingKey {
        VerifyingKey { kid: KeyId::derive(Algorithm::Ed25519, k.as_bytes()), inner: VerifyingInner::Ed25519(k) }
    }

    fn from_rsa(k: rsa::RsaPublicKey) -> VerifyingKey {
        let der = k.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
        VerifyingKey { kid: KeyId::derive(Algorithm::RsaPssSha256, &der), inner: VerifyingInner::Rsa(Box::new(k)) }
    }

    /// From the public encoding: 32 raw bytes for Ed25519, SubjectPublicKeyInfo DER for RSA.
    pub fn from_public_bytes(alg: Algorithm, bytes: &[u8]) -> Result<VerifyingKey, CryptoError> {
        match alg {
            Algorithm::Ed25519 => {
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| CryptoError::InvalidKey("an Ed25519 public key is 32 bytes".into()))?;
                let k = ed25519_dalek::VerifyingKey::from_bytes(&arr)
                    .map_err(|_| CryptoError::InvalidKey("not a valid Ed25519 public key".into()))?;
                if k.is_weak() {
                    return Err(CryptoError::InvalidKey("weak Ed25519 public key".into()));
                }
                Ok(VerifyingKey::from_ed25519(k))
            }
            Algorithm::RsaPssSha256 => {
                let k = rsa::RsaPublicKey::from_public_key_der(bytes)
                    .map_err(|_| CryptoError::InvalidKey("not an RSA SubjectPublicKeyInfo".into()))?;
                let bits = k.size() * 8;
                if bits != 2048 && bits != 3072 {
                    return Err(CryptoError::InvalidKey(format!("RSA key of {bits} bits; use 2048 or 3072")));
                }
                Ok(VerifyingKey::from_rsa(k))
            }
        }
    }

    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.inner {
            VerifyingInner::Ed25519(k) => k.as_bytes().to_vec(),
            VerifyingInner::Rsa(k) => k.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default(),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            VerifyingInner::Ed25519(_) => Algorithm::Ed25519,
            VerifyingInner::Rsa(_) => Algorithm::RsaPssSha256,
        }
    }

    pub fn key_id(&self) -> KeyId {
        self.kid
    }

    /// Verifies a signature made by [`SigningKey::sign`] with the same domain, context and payload.
    pub fn verify(&self, domain: Domain, context: &[&[u8]], payload: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let msg = signed_message(domain, self.algorithm(), &self.kid, context, payload);
        match &self.inner {
            VerifyingInner::Ed25519(k) => {
                let sig: [u8; 64] = sig.try_into().map_err(|_| CryptoError::BadSignature)?;
                k.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
                    .map_err(|_| CryptoError::BadSignature)
            }
            VerifyingInner::Rsa(k) => {
                let sig = rsa::pss::Signature::try_from(sig).map_err(|_| CryptoError::BadSignature)?;
                rsa::pss::VerifyingKey::<Sha256>::new((**k).clone())
                    .verify(&msg, &sig)
                    .map_err(|_| CryptoError::BadSignature)
            }
        }
    }
}

/// Ed25519 device keys: agents sign heartbeats, usage and deactivations with them.
pub fn ed25519_public_from_bytes(bytes: &[u8]) -> Result<VerifyingKey, CryptoError> {
    VerifyingKey::from_public_bytes(Algorithm::Ed25519, bytes)
}

/// The trusted public keys (what an agent embeds). Several keys: old ones stay while artefacts they signed live.
///
/// A key can also be listed as **revoked** (a leaked or retired-for-cause key): it never verifies anything, and
/// lookups by its id fail with [`CryptoError::RevokedKey`] before any signature work. Revocation wins: a key that
/// is both listed and revoked (two keyset files merged, say) is revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicKeyset {
    keys: Vec<VerifyingKey>,
    revoked: Vec<VerifyingKey>,
}

#[derive(Serialize, Deserialize)]
struct KeysetJson {
    keys: Vec<KeyJson>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Deserialize)]
struct KeyJson {
    kid: KeyId,
    alg: Algorithm,
    public_key: String,
    /// Absent in keysets written before revocation existed: not revoked.
    #[serde(default, skip_serializing_if = "is_false")]
    revoked: bool,
}

impl PublicKeyset {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let mut ks = PublicKeyset::default();
        for k in keys {
            ks.insert(k);
        }
        ks
    }

    /// Adds a trusted key (ignored when the same key is already listed, or revoked).
    pub fn insert(&mut self, key: VerifyingKey) {
        if !self.keys.iter().chain(&self.revoked).any(|k| k.kid == key.kid) {
            self.keys.push(key);
        }
    }

    /// Lists `key` as revoked (removing it from the trusted keys if it was one).
    pub fn insert_revoked(&mut self, key: VerifyingKey) {
        self.keys.retain(|k| k.kid != key.kid);
        if !self.revoked.iter().any(|k| k.kid == key.kid) {
            self.revoked.push(key);
        }
    }

    /// Marks the key with this id revoked; false when the keyset does not list it.
    pub fn revoke(&mut self, kid: &KeyId) -> bool {
        if self.revoked.iter().any(|k| k.kid == *kid) {
            return true;
        }
        match self.keys.iter().position(|k| k.kid == *kid) {
            Some(i) => {
                let k = self.keys.remove(i);
                self.revoked.push(k);
                true
            }
            None => false,
        }
    }

    /// The trusted keys (revoked ones are not among them).
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// The keys listed as revoked.
    pub fn revoked_keys(&self) -> &[VerifyingKey] {
        &self.revoked
    }

    pub fn is_revoked(&self, kid: &KeyId) -> bool {
        self.revoked.iter().any(|k| k.kid == *kid)
    }

    /// The key with this id; unknown and revoked ids fail here, before any signature work.
    pub fn get(&self, kid: &KeyId) -> Result<&VerifyingKey, CryptoError> {
        if self.is_revoked(kid) {
            return Err(CryptoError::RevokedKey(kid.to_string()));
        }
        self.keys.iter().find(|k| k.kid == *kid).ok_or_else(|| CryptoError::UnknownKey(kid.to_string()))
    }

    /// Trusted Ed25519 keys whose id starts with `tag` (short codes carry one byte of the key id); revoked keys
    /// are never candidates.
    pub fn by_tag(&self, tag: u8) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter().filter(move |k| k.kid.tag() == tag && k.algorithm() == Algorithm::Ed25519)
    }

    /// `{"keys":[{"kid":"…","alg":"ed25519","public_key":"<base64url>"}, {…, "revoked":true}]}`: trusted keys
    /// first, in order, then the revoked ones (`revoked` is written only when true, so a keyset without revoked
    /// keys reads the same as before revocation existed).
    pub fn to_json(&self) -> String {
        let entry = |k: &VerifyingKey, revoked: bool| KeyJson {
            kid: k.kid,
            alg: k.algorithm(),
            public_key: b64url(&k.public_bytes()),
            revoked,
        };
        let j = KeysetJson {
            keys: self
                .keys
                .iter()
                .map(|k| entry(k, false))
                .chain(self.revoked.iter().map(|k| entry(k, true)))
                .collect(),
        };
        serde_json::to_string_pretty(&j).unwrap_or_default()
    }

    /// Parses a keyset; each stated key id must be the one derived from its public key. An entry without
    /// `revoked` is trusted; a keyset must trust at least one key.
    pub fn from_json(s: &str) -> Result<PublicKeyset, CryptoError> {
        let j: KeysetJson =
            serde_json::from_str(s).map_err(|e| CryptoError::InvalidKey(format!("keyset JSON: {e}")))?;
        let mut ks = PublicKeyset::default();
        for k in j.keys {
            let bytes = b64url_decode(&k.public_key)
                .ok_or_else(|| CryptoError::InvalidKey(format!("key {}: public_key is not base64url", k.kid)))?;
            let vk = VerifyingKey::from_public_bytes(k.alg, &bytes)?;
            if vk.kid != k.kid {
                return Err(CryptoError::InvalidKey(format!(
                    "key {} does not match its public key (derived id {})",
                    k.kid, vk.kid
                )));
            }
            if k.revoked {
                ks.insert_revoked(vk);
            } else {
                ks.insert(vk);
            }
        }
        if ks.keys.is_empty() {
            return Err(CryptoError::InvalidKey(if ks.revoked.is_empty() {
                "keyset has no keys".into()
            } else {
                "every key of the keyset is revoked: it trusts nothing; export a keyset with a current key".into()
            }));
        }
        Ok(ks)
    }
}

/// A signer's keys: one active signing key, retired keys that still verify, and revoked keys that never do.
#[derive(Debug)]
pub struct Keyset {
    active: SigningKey,
    retired: Vec<VerifyingKey>,
    revoked: Vec<VerifyingKey>,
}

impl Keyset {
    pub fn new(active: SigningKey, retired: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let kid = active.key_id();
        Keyset { active, retired: retired.into_iter().filter(|k| k.kid != kid).collect(), revoked: Vec::new() }
    }

    /// Lists these keys as revoked (they leave the retired keys). The signing key cannot be revoked: make another
    /// key sign first.
    pub fn with_revoked(mut self, revoked: impl IntoIterator<Item = VerifyingKey>) -> Result<Self, CryptoError> {
        for k in revoked {
            if k.kid == self.active.key_id() {
                return Err(CryptoError::InvalidKey(format!(
                    "key {} signs and cannot be revoked: make another key the signing key first",
                    k.kid
                )));
            }
            self.retired.retain(|r| r.kid != k.kid);
            if !self.revoked.iter().any(|r| r.kid == k.kid) {
                self.revoked.push(k);
            }
        }
        Ok(self)
    }

    pub fn signer(&self) -> &SigningKey {
        &self.active
    }

    /// Every key an agent should trust, the active one first, then the revoked ones marked as such.
    pub fn public(&self) -> PublicKeyset {
        let mut ks =
            PublicKeyset::new(std::iter::once(self.active.verifying_key()).chain(self.retired.iter().cloned()));
        for k in &self.revoked {
            ks.insert_revoked(k.clone());
        }
        ks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_sign_verify_and_domains() {
        let k = SigningKey::generate_ed25519();
        let vk = k.verifying_key();
        let sig = k.sign(Domain::LicenseFile, &[b"ctx"], b"payload");
        assert!(vk.verify(Domain::LicenseFile, &[b"ctx"], b"payload", &sig).is_ok());
        assert_eq!(vk.verify(Domain::ActivationToken, &[b"ctx"], b"payload", &sig), Err(CryptoError::BadSignature));
        assert_eq!(vk.verify(Domain::LicenseFile, &[b"ctX"], b"payload", &sig), Err(CryptoError::BadSignature));
        assert_eq!(vk.verify(Domain::LicenseFile, &[], b"ctxpayload", &sig), Err(CryptoError::BadSignature));
    }

    #[test]
    fn pem_round_trip_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        let k = SigningKey::generate_ed25519();
        k.save(&path).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let back = SigningKey::load(&path).expect("load");
        assert_eq!(back.key_id(), k.key_id());
        assert!(!format!("{back:?}").contains("BEGIN"));
    }

    #[test]
    fn keyset_json_round_trip_and_tamper() {
        let a = SigningKey::generate_ed25519();
        let b = SigningKey::generate_ed25519();
        let ks = Keyset::new(a, [b.verifying_key()]).public();
        let json = ks.to_json();
        assert_eq!(PublicKeyset::from_json(&json).expect("parse"), ks);
        let wrong = json.replacen(&ks.keys()[0].key_id().to_string(), "0000000000000000", 1);
        assert!(PublicKeyset::from_json(&wrong).is_err());
    }

    #[test]
    fn a_keyset_without_the_revoked_field_trusts_every_key() {
        let a = SigningKey::generate_ed25519().verifying_key();
        let old = format!(
            r#"{{"keys":[{{"kid":"{}","alg":"ed25519","public_key":"{}"}}]}}"#,
            a.key_id(),
            b64url(&a.public_bytes())
        );
        let ks = PublicKeyset::from_json(&old).expect("old keyset");
        assert!(!ks.is_revoked(&a.key_id()));
        assert!(ks.get(&a.key_id()).is_ok());
        // A keyset without revoked keys writes no `revoked` field (old readers see the same file).
        assert!(!ks.to_json().contains("revoked"));
    }

    #[test]
    fn a_revoked_key_is_marked_in_json_and_never_returned() {
        let a = SigningKey::generate_ed25519();
        let b = SigningKey::generate_ed25519();
        let ks = Keyset::new(a, []).with_revoked([b.verifying_key()]).expect("revoke b").public();
        assert!(ks.is_revoked(&b.key_id()));
        assert_eq!(ks.get(&b.key_id()), Err(CryptoError::RevokedKey(b.key_id().to_string())));
        assert_eq!(ks.by_tag(b.key_id().tag()).filter(|k| k.key_id() == b.key_id()).count(), 0);
        assert_eq!(ks.keys().len(), 1, "keys() lists trusted keys only");
        let json = ks.to_json();
        assert!(json.contains("\"revoked\": true"), "{json}");
        let back = PublicKeyset::from_json(&json).expect("parse");
        assert_eq!(back, ks);
        assert!(back.is_revoked(&b.key_id()));
    }

    #[test]
    fn revocation_wins_over_a_trusted_listing_of_the_same_key() {
        let a = SigningKey::generate_ed25519();
        let b = SigningKey::generate_ed25519();
        let mut ks = PublicKeyset::new([a.verifying_key(), b.verifying_key()]);
        assert!(ks.revoke(&b.key_id()));
        ks.insert(b.verifying_key());
        assert!(ks.get(&b.key_id()).is_err());
        let entry = |k: &SigningKey, revoked: &str| {
            format!(
                r#"{{"kid":"{}","alg":"ed25519","public_key":"{}"{revoked}}}"#,
                k.key_id(),
                b64url(&k.verifying_key().public_bytes())
            )
        };
        for order in
            [[entry(&b, ""), entry(&b, r#","revoked":true"#)], [entry(&b, r#","revoked":true"#), entry(&b, "")]]
        {
            let json = format!(r#"{{"keys":[{},{},{}]}}"#, entry(&a, ""), order[0], order[1]);
            let ks = PublicKeyset::from_json(&json).expect("parse");
            assert!(ks.is_revoked(&b.key_id()), "{json}");
        }
        let only_revoked = format!(r#"{{"keys":[{}]}}"#, entry(&b, r#","revoked":true"#));
        let err = PublicKeyset::from_json(&only_revoked).unwrap_err().to_string();
        assert!(err.contains("every key of the keyset is revoked"), "{err}");
    }

    #[test]
    fn the_signing_key_cannot_be_revoked() {
        let a = SigningKey::generate_ed25519();
        let vk = a.verifying_key();
        assert!(Keyset::new(a, []).with_revoked([vk]).is_err());
    }
}
