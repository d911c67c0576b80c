//! The payloads of the copy-paste codes, bit-packed to stay within their length budgets.
//!
//! Signatures are Ed25519 (64 bytes, the bulk of every code). Each signature also covers context both sides
//! already hold and that the code therefore does not carry:
//!
//! | code | signed by | payload | context covered |
//! |---|---|---|---|
//! | request `REQ1` | device key | key hint, device public key, fingerprint commitment, time, nonce | license key hash |
//! | response `RSP1` | server key | key tag, grant (license terms, features, lease) | key hash, the whole request |
//! | receipt `RCT2` | device key | key hint, device key tag, grant tag, time | key hash, device public key |
//! | emergency `EMG1` | server key | key tag, flags, expiry, serial | key hash, device public key if bound |
//!
//! A response therefore only verifies on the device holding the pending request it answers. Responses and
//! emergency codes are further bound to the product: the "key hash" context they are signed and verified with
//! is [`license_binding`]`(key hash, product id)`, which both sides know (the server from the license, the agent
//! from its configuration), so a code issued for one product's license never unlocks another product.

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::codes::{self, CodeError, CodeKind};
use crate::crypto::{Algorithm, CryptoError, Domain, PublicKeyset, SigningKey, VerifyingKey};
use crate::fingerprint::MatchPolicy;
use crate::model::{BillingCycle, EmergencyScope, Feature, LicenseModel, LicenseType, LimitPeriod, LimitType};

/// Codes count time from 2020-01-01T00:00:00Z.
pub const CODE_EPOCH: i64 = 1_577_836_800;
const SIG_LEN: usize = 64;

/// The context responses and emergency codes are bound to: one license (by its key hash) of one product.
pub fn license_binding(key_hash: &[u8; 32], product: &Uuid) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tessera/license-binding/v1\0");
    h.update(key_hash);
    h.update(product.as_bytes());
    h.finalize().into()
}

fn to_secs(t: DateTime<Utc>) -> u64 {
    (t.timestamp() - CODE_EPOCH).clamp(0, i64::from(u32::MAX)) as u64
}

fn from_secs(s: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(CODE_EPOCH + s as i64, 0).single().unwrap_or_default()
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, value: u64, width: u32) {
        for i in (0..width).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
    }

    fn put_bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.put(u64::from(x), 8);
        }
    }

    fn flag(&mut self, b: bool) {
        self.put(u64::from(b), 1);
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    kind: CodeKind,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8], kind: CodeKind) -> Self {
        BitReader { bytes, pos: 0, kind }
    }

    fn err(&self, reason: &str) -> CodeError {
        CodeError::Payload { kind: self.kind, reason: reason.into() }
    }

    fn get(&mut self, width: u32) -> Result<u64, CodeError> {
        if self.pos + width as usize > self.bytes.len() * 8 {
            return Err(self.err("ends early"));
        }
        let mut v = 0u64;
        for _ in 0..width {
            let bit = (self.bytes[self.pos / 8] >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], CodeError> {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.get(8)? as u8;
        }
        Ok(out)
    }

    fn flag(&mut self) -> Result<bool, CodeError> {
        Ok(self.get(1)? == 1)
    }

    /// The rest must be zero padding to the byte boundary.
    fn finish(&self) -> Result<usize, CodeError> {
        let end = self.pos.div_ceil(8);
        let pad = (self.pos..end * 8).any(|p| (self.bytes[p / 8] >> (7 - p % 8)) & 1 == 1);
        if pad {
            return Err(self.err("non-zero padding"));
        }
        Ok(end)
    }
}

/// Splits `payload || signature` and checks the payload is fully consumed.
fn split_signed(bytes: &[u8], kind: CodeKind) -> Result<(&[u8], [u8; SIG_LEN]), CodeError> {
    if bytes.len() < SIG_LEN + 1 {
        return Err(CodeError::Payload { kind, reason: "too short to hold a signature".into() });
    }
    let (payload, sig) = bytes.split_at(bytes.len() - SIG_LEN);
    let mut s = [0u8; SIG_LEN];
    s.copy_from_slice(sig);
    Ok((payload, s))
}

fn require_ed25519(key: &SigningKey) -> Result<(), CryptoError> {
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(CryptoError::InvalidKey("codes are signed with Ed25519 keys only".into()));
    }
    Ok(())
}

fn seal(
    kind: CodeKind,
    domain: Domain,
    key: &SigningKey,
    ctx: &[&[u8]],
    payload: Vec<u8>,
) -> Result<(String, Vec<u8>), CryptoError> {
    let sig = key.sign(domain, ctx, &payload);
    let mut bytes = payload;
    bytes.extend_from_slice(&sig);
    let code = codes::encode(kind, &bytes).map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
    Ok((code, bytes))
}

// ---------------------------------------------------------------------------------------------------------------
// Offline request

/// What a device asks for: "bind this license (named by the hint) to me".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineRequest {
    pub key_hint: [u8; 6],
    pub device_public_key: [u8; 32],
    /// First 10 bytes of the fingerprint digest.
    pub fingerprint_commitment: [u8; 10],
    pub created_at: DateTime<Utc>,
    pub nonce: u16,
}

/// A decoded request with the exact bytes that travelled (responses sign over them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub request: OfflineRequest,
    pub bytes: Vec<u8>,
}

impl OfflineRequest {
    fn payload(&self) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put_bytes(&self.key_hint);
        w.put_bytes(&self.device_public_key);
        w.put_bytes(&self.fingerprint_commitment);
        w.put(to_secs(self.created_at), 32);
        w.put(u64::from(self.nonce), 16);
        w.bytes
    }

    /// Signs with the device key (which must be the key named in the request). Returns the code and its bytes.
    pub fn sign(&self, key_hash: &[u8; 32], device_key: &SigningKey) -> Result<(String, SignedRequest), CryptoError> {
        require_ed25519(device_key)?;
        if device_key.verifying_key().public_bytes() != self.device_public_key {
            return Err(CryptoError::InvalidKey("the request names another device key".into()));
        }
        let (code, bytes) =
            seal(CodeKind::OfflineRequest, Domain::OfflineRequest, device_key, &[key_hash], self.payload())?;
        Ok((code, SignedRequest { request: self.clone(), bytes }))
    }
}

impl SignedRequest {
    pub fn decode(text: &str) -> Result<SignedRequest, CodeError> {
        let kind = CodeKind::OfflineRequest;
        let bytes = codes::decode(kind, text)?;
        SignedRequest::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<SignedRequest, CodeError> {
        let kind = CodeKind::OfflineRequest;
        let (payload, _) = split_signed(&bytes, kind)?;
        let mut r = BitReader::new(payload, kind);
        let request = OfflineRequest {
            key_hint: r.bytes()?,
            device_public_key: r.bytes()?,
            fingerprint_commitment: r.bytes()?,
            created_at: from_secs(r.get(32)?),
            nonce: r.get(16)? as u16,
        };
        if r.finish()? != payload.len() {
            return Err(r.err("unexpected trailing data"));
        }
        Ok(SignedRequest { request, bytes })
    }

    pub fn code(&self) -> String {
        // A decoded or signed request always fits: its size is fixed.
        codes::encode(CodeKind::OfflineRequest, &self.bytes).unwrap_or_default()
    }

    pub fn device_key(&self) -> Result<VerifyingKey, CryptoError> {
        crate::crypto::ed25519_public_from_bytes(&self.request.device_public_key)
    }

    /// Verifies the device's signature, given the full hash of the license key the hint names.
    pub fn verify(&self, key_hash: &[u8; 32]) -> Result<(), CryptoError> {
        if crate::license_key::hint_of(key_hash) != self.request.key_hint {
            return Err(CryptoError::BadSignature);
        }
        let (payload, sig) =
            split_signed(&self.bytes, CodeKind::OfflineRequest).map_err(|_| CryptoError::BadSignature)?;
        self.device_key()?.verify(Domain::OfflineRequest, &[key_hash], payload, &sig)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Offline response

/// What an offline response grants: the license terms the device needs to decide on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineGrant {
    pub license_id: Uuid,
    pub issued_at: DateTime<Utc>,
    pub license_type: LicenseType,
    pub license_model: LicenseModel,
    pub starts_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub maintenance_expires_at: Option<DateTime<Utc>>,
    /// Until when the device may run without contacting the server again.
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub grace_days: u8,
    pub fingerprint_policy: MatchPolicy,
    /// Feature ids, enabled flags, limits with their periods, and expiries (names are not carried).
    pub features: Vec<Feature>,
    /// The billing cycle BILLING_PERIOD quotas reset with (carried only when a feature has such a quota).
    pub billing_cycle: Option<BillingCycle>,
}

/// Alphabet of the 6-bit packed feature ids; ids with other characters are sent as 7-bit ASCII.
const ID_ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const MAX_FEATURES: usize = 127;

fn put_time_opt(w: &mut BitWriter, t: Option<DateTime<Utc>>) {
    w.flag(t.is_some());
    if let Some(t) = t {
        w.put(to_secs(t), 32);
    }
}

fn get_time_opt(r: &mut BitReader<'_>) -> Result<Option<DateTime<Utc>>, CodeError> {
    Ok(if r.flag()? { Some(from_secs(r.get(32)?)) } else { None })
}

fn type_index<T: PartialEq + Copy>(all: &[T], v: T) -> u64 {
    all.iter().position(|x| *x == v).unwrap_or(0) as u64
}

impl OfflineGrant {
    fn payload(&self, kid_tag: u8) -> Result<Vec<u8>, CryptoError> {
        let bad = |m: String| CryptoError::InvalidKey(m);
        if self.features.len() > MAX_FEATURES {
            return Err(bad(format!("an offline response carries at most {MAX_FEATURES} features")));
        }
        let mut w = BitWriter::default();
        w.put(u64::from(kid_tag), 8);
        w.put(to_secs(self.issued_at), 32);
        w.put_bytes(self.license_id.as_bytes());
        w.put(type_index(&LicenseType::ALL, self.license_type), 3);
        w.put(type_index(&LicenseModel::ALL, self.license_model), 3);
        w.put(to_secs(self.starts_at), 32);
        put_time_opt(&mut w, self.expires_at);
        put_time_opt(&mut w, self.maintenance_expires_at);
        put_time_opt(&mut w, self.lease_expires_at);
        w.put(u64::from(self.grace_days), 8);
        w.put(u64::from(self.fingerprint_policy.required.min(15)), 4);
        w.put(u64::from(self.fingerprint_policy.deal_breaker_mask()), 8);
        w.put(self.features.len() as u64, 7);
        for f in &self.features {
            let id = f.id.as_bytes();
            if id.is_empty() || id.len() > 64 || !id.is_ascii() {
                return Err(bad(format!("feature id {:?} cannot be carried in a code", f.id)));
            }
            let packed = id.iter().all(|c| ID_ALPHABET.contains(c));
            w.flag(packed);
            w.put(id.len() as u64 - 1, 6);
            for c in id {
                match ID_ALPHABET.iter().position(|x| x == c) {
                    Some(p) if packed => w.put(p as u64, 6),
                    _ => w.put(u64::from(*c), 7),
                }
            }
            w.flag(f.enabled);
            let limited = f.limit_value >= 0;
            w.flag(limited);
            if limited {
                let v = f.limit_value as u64;
                let width = 64 - v.leading_zeros();
                w.put(type_index(&LimitType::ALL, f.limit_type), 2);
                w.put(u64::from(width), 6);
                w.put(v, width);
            }
            put_time_opt(&mut w, f.expires_at);
        }
        // Trailing fields, written only when needed: codes without them stay byte-identical, and a reader that
        // does not know them refuses the code (non-zero padding or trailing data) rather than ignoring them.
        // First the pinned-key flag, then (when a quota counts per period) a set flag, each limited feature's
        // period in 2 bits in feature order, and the billing cycle when a BILLING_PERIOD quota needs one.
        let limited = || self.features.iter().filter(|f| f.limit_value >= 0);
        let periods = limited().any(|f| !f.limit_period.is_lifetime());
        if self.fingerprint_policy.allow_pinned || periods {
            w.flag(self.fingerprint_policy.allow_pinned);
        }
        if periods {
            w.flag(true);
            for f in limited() {
                w.put(type_index(&LimitPeriod::ALL, f.limit_period), 2);
            }
            let cycle = self.billing_cycle.filter(|_| limited().any(|f| f.limit_period == LimitPeriod::BillingPeriod));
            w.flag(cycle.is_some());
            if let Some(c) = cycle {
                if !(1..=BillingCycle::MAX_MONTHS).contains(&c.months) {
                    return Err(bad(format!("a billing cycle is 1 to 12 months, not {}", c.months)));
                }
                if !(0..=i64::from(u32::MAX)).contains(&(c.anchor.timestamp() - CODE_EPOCH)) {
                    // Outside what 32 bits of seconds from the code epoch hold: clamping would move the periods.
                    return Err(bad(format!("a billing cycle anchored at {} cannot be carried in a code", c.anchor)));
                }
                w.put(to_secs(c.anchor), 32);
                w.put(u64::from(c.months - 1), 4);
            }
        }
        Ok(w.bytes)
    }

    fn parse(payload: &[u8]) -> Result<(u8, OfflineGrant), CodeError> {
        let mut r = BitReader::new(payload, CodeKind::OfflineResponse);
        let kid_tag = r.get(8)? as u8;
        let issued_at = from_secs(r.get(32)?);
        let license_id = Uuid::from_bytes(r.bytes()?);
        let license_type = *LicenseType::ALL.get(r.get(3)? as usize).ok_or_else(|| r.err("unknown license type"))?;
        let license_model = *LicenseModel::ALL.get(r.get(3)? as usize).ok_or_else(|| r.err("unknown license model"))?;
        let starts_at = from_secs(r.get(32)?);
        let expires_at = get_time_opt(&mut r)?;
        let maintenance_expires_at = get_time_opt(&mut r)?;
        let lease_expires_at = get_time_opt(&mut r)?;
        let grace_days = r.get(8)? as u8;
        let required = r.get(4)? as u8;
        let mask = r.get(8)? as u8;
        let count = r.get(7)? as usize;
        let mut features = Vec::with_capacity(count);
        for _ in 0..count {
            let packed = r.flag()?;
            let len = r.get(6)? as usize + 1;
            let mut id = String::with_capacity(len);
            for _ in 0..len {
                let c = if packed { ID_ALPHABET[r.get(6)? as usize] } else { r.get(7)? as u8 };
                id.push(char::from(c));
            }
            let enabled = r.flag()?;
            let (limit_value, limit_type) = if r.flag()? {
                let lt = LimitType::ALL[r.get(2)? as usize];
                let width = r.get(6)? as u32;
                (r.get(width)? as i64, lt)
            } else {
                (crate::model::UNLIMITED, LimitType::Count)
            };
            let expires_at = get_time_opt(&mut r)?;
            let limit_period = LimitPeriod::Lifetime;
            features.push(Feature {
                id,
                name: String::new(),
                enabled,
                limit_value,
                limit_type,
                limit_period,
                expires_at,
            });
        }
        let allow_pinned = r.pos < payload.len() * 8 && r.flag()?;
        let mut billing_cycle = None;
        if r.pos < payload.len() * 8 && r.flag()? {
            for f in features.iter_mut().filter(|f| f.limit_value >= 0) {
                f.limit_period = LimitPeriod::ALL[r.get(2)? as usize];
            }
            if r.flag()? {
                let anchor = from_secs(r.get(32)?);
                let months = r.get(4)? as u32 + 1;
                if months > BillingCycle::MAX_MONTHS {
                    return Err(r.err("a billing cycle is 1 to 12 months"));
                }
                billing_cycle = Some(BillingCycle { anchor, months });
            }
        }
        if r.finish()? != payload.len() {
            return Err(r.err("unexpected trailing data"));
        }
        let grant = OfflineGrant {
            license_id,
            issued_at,
            license_type,
            license_model,
            starts_at,
            expires_at,
            maintenance_expires_at,
            lease_expires_at,
            grace_days,
            fingerprint_policy: MatchPolicy { allow_pinned, ..MatchPolicy::from_mask(required, mask) },
            features,
            billing_cycle,
        };
        Ok((kid_tag, grant))
    }

    /// Signs the response to `request` (whose key hash the server looked up).
    pub fn sign(&self, key: &SigningKey, key_hash: &[u8; 32], request: &SignedRequest) -> Result<String, CryptoError> {
        require_ed25519(key)?;
        let payload = self.payload(key.key_id().tag())?;
        Ok(seal(CodeKind::OfflineResponse, Domain::OfflineResponse, key, &[key_hash, &request.bytes], payload)?.0)
    }
}

/// A decoded, not yet verified, offline response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedResponse {
    pub grant: OfflineGrant,
    kid_tag: u8,
    bytes: Vec<u8>,
}

impl SignedResponse {
    pub fn decode(text: &str) -> Result<SignedResponse, CodeError> {
        let bytes = codes::decode(CodeKind::OfflineResponse, text)?;
        let (payload, _) = split_signed(&bytes, CodeKind::OfflineResponse)?;
        let (kid_tag, grant) = OfflineGrant::parse(payload)?;
        Ok(SignedResponse { grant, kid_tag, bytes })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Verifies against the pending request it must answer; fails for any other request or device.
    pub fn verify(&self, keys: &PublicKeyset, key_hash: &[u8; 32], request: &SignedRequest) -> Result<(), CryptoError> {
        verify_tagged(keys, self.kid_tag, Domain::OfflineResponse, &[key_hash, &request.bytes], &self.bytes)
    }
}

fn verify_tagged(keys: &PublicKeyset, tag: u8, domain: Domain, ctx: &[&[u8]], bytes: &[u8]) -> Result<(), CryptoError> {
    let (payload, sig) = bytes.split_at(bytes.len().saturating_sub(SIG_LEN));
    let mut candidates = keys.by_tag(tag).peekable();
    if candidates.peek().is_none() {
        return Err(CryptoError::UnknownKey(format!("{tag:02x}…")));
    }
    if candidates.any(|k| k.verify(domain, ctx, payload, sig).is_ok()) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Deactivation receipt

/// Names one grant a device holds, for the receipt that ends it: an offline grant by the request it answered
/// (every renewal is a new request), an online activation by its id.
pub type GrantTag = [u8; 8];

fn tag_of(label: &[u8], data: &[u8]) -> GrantTag {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(label);
    h.update(data);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&h.finalize()[..8]);
    tag
}

/// The tag of the offline grant that answers this request: SHA-256(`tessera/offline-grant/v1\0` ‖ request
/// bytes)[..8], where the request bytes are the decoded request code (payload and signature).
pub fn offline_grant_tag(request_bytes: &[u8]) -> GrantTag {
    tag_of(b"tessera/offline-grant/v1\0", request_bytes)
}

/// The tag of an online activation: SHA-256(`tessera/online-grant/v1\0` ‖ activation id, 16 bytes)[..8].
pub fn online_grant_tag(activation_id: &Uuid) -> GrantTag {
    tag_of(b"tessera/online-grant/v1\0", activation_id.as_bytes())
}

/// Proof that a device removed its activation; the customer hands it back to free the seat. It names the grant
/// it ends, so a receipt made from a copy of an older state cannot end the device's current grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeactivationReceipt {
    pub key_hint: [u8; 6],
    /// First 4 bytes of the device public key.
    pub device_tag: [u8; 4],
    /// The grant the receipt ends ([`offline_grant_tag`] or [`online_grant_tag`]).
    pub grant_tag: GrantTag,
    pub created_at: DateTime<Utc>,
}

impl DeactivationReceipt {
    fn payload(&self) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put_bytes(&self.key_hint);
        w.put_bytes(&self.device_tag);
        w.put_bytes(&self.grant_tag);
        w.put(to_secs(self.created_at), 32);
        w.bytes
    }

    pub fn for_device(
        key_hash: &[u8; 32],
        device_public: &[u8; 32],
        grant_tag: GrantTag,
        at: DateTime<Utc>,
    ) -> DeactivationReceipt {
        let mut device_tag = [0u8; 4];
        device_tag.copy_from_slice(&device_public[..4]);
        DeactivationReceipt { key_hint: crate::license_key::hint_of(key_hash), device_tag, grant_tag, created_at: at }
    }

    pub fn sign(&self, key_hash: &[u8; 32], device_key: &SigningKey) -> Result<String, CryptoError> {
        require_ed25519(device_key)?;
        let public = device_key.verifying_key().public_bytes();
        Ok(seal(
            CodeKind::DeactivationReceipt,
            Domain::DeactivationReceipt,
            device_key,
            &[key_hash, &public],
            self.payload(),
        )?
        .0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    pub receipt: DeactivationReceipt,
    bytes: Vec<u8>,
}

impl SignedReceipt {
    pub fn decode(text: &str) -> Result<SignedReceipt, CodeError> {
        let kind = CodeKind::DeactivationReceipt;
        let bytes = codes::decode(kind, text)?;
        let (payload, _) = split_signed(&bytes, kind)?;
        let mut r = BitReader::new(payload, kind);
        let receipt = DeactivationReceipt {
            key_hint: r.bytes()?,
            device_tag: r.bytes()?,
            grant_tag: r.bytes()?,
            created_at: from_secs(r.get(32)?),
        };
        if r.finish()? != payload.len() {
            return Err(r.err("unexpected trailing data"));
        }
        Ok(SignedReceipt { receipt, bytes })
    }

    /// Verifies against the activation's device key (the server finds it by key hint and device tag).
    pub fn verify(&self, key_hash: &[u8; 32], device_public: &[u8; 32]) -> Result<(), CryptoError> {
        if self.receipt.device_tag[..] != device_public[..4] {
            return Err(CryptoError::BadSignature);
        }
        let vk = crate::crypto::ed25519_public_from_bytes(device_public)?;
        let (payload, sig) = self.bytes.split_at(self.bytes.len() - SIG_LEN);
        vk.verify(Domain::DeactivationReceipt, &[key_hash, device_public], payload, sig)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Emergency code

/// A short-lived unlock issued by vendor staff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyCode {
    /// Bound to one device (its public key is covered by the signature).
    pub bound: bool,
    pub scope: EmergencyScope,
    /// Minute precision.
    pub expires_at: DateTime<Utc>,
    /// Per-license serial (20 bits): a device accepts each serial once.
    pub serial: u32,
}

pub const EMERGENCY_SERIAL_BITS: u32 = 20;

impl EmergencyCode {
    fn payload(&self, kid_tag: u8) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put(u64::from(kid_tag), 8);
        w.flag(self.bound);
        w.flag(self.scope == EmergencyScope::AllFeatures);
        w.put(to_secs(self.expires_at).div_ceil(60), 26);
        w.put(u64::from(self.serial) & ((1 << EMERGENCY_SERIAL_BITS) - 1), EMERGENCY_SERIAL_BITS);
        w.bytes
    }

    /// Signs; `device_public` must be given exactly when the code is bound.
    pub fn sign(
        &self,
        key: &SigningKey,
        key_hash: &[u8; 32],
        device_public: Option<&[u8; 32]>,
    ) -> Result<String, CryptoError> {
        require_ed25519(key)?;
        if self.bound != device_public.is_some() {
            return Err(CryptoError::InvalidKey("a bound emergency code needs the device key".into()));
        }
        let payload = self.payload(key.key_id().tag());
        let ctx: Vec<&[u8]> = match device_public {
            Some(d) => vec![key_hash, d],
            None => vec![key_hash],
        };
        Ok(seal(CodeKind::Emergency, Domain::EmergencyCode, key, &ctx, payload)?.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEmergency {
    pub code: EmergencyCode,
    kid_tag: u8,
    bytes: Vec<u8>,
}

impl SignedEmergency {
    pub fn decode(text: &str) -> Result<SignedEmergency, CodeError> {
        let kind = CodeKind::Emergency;
        let bytes = codes::decode(kind, text)?;
        let (payload, _) = split_signed(&bytes, kind)?;
        let mut r = BitReader::new(payload, kind);
        let kid_tag = r.get(8)? as u8;
        let bound = r.flag()?;
        let scope = if r.flag()? { EmergencyScope::AllFeatures } else { EmergencyScope::LicensedFeatures };
        let expires_at = from_secs(r.get(26)? * 60);
        let serial = r.get(EMERGENCY_SERIAL_BITS)? as u32;
        if r.finish()? != payload.len() {
            return Err(r.err("unexpected trailing data"));
        }
        Ok(SignedEmergency { code: EmergencyCode { bound, scope, expires_at, serial }, kid_tag, bytes })
    }

    /// The signed bytes (payload and signature) exactly as carried by the code.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Verifies for this license and device. An unbound code verifies on any device of the license.
    pub fn verify(
        &self,
        keys: &PublicKeyset,
        key_hash: &[u8; 32],
        device_public: &[u8; 32],
    ) -> Result<(), CryptoError> {
        let ctx: Vec<&[u8]> = if self.code.bound { vec![key_hash, device_public] } else { vec![key_hash] };
        verify_tagged(keys, self.kid_tag, Domain::EmergencyCode, &ctx, &self.bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn grant(allow_pinned: bool, features: usize) -> OfflineGrant {
        OfflineGrant {
            license_id: Uuid::from_u128(9),
            issued_at: from_secs(1_800_000_000),
            license_type: LicenseType::Subscription,
            license_model: LicenseModel::PerDevice,
            starts_at: from_secs(1_790_000_000),
            expires_at: None,
            maintenance_expires_at: None,
            lease_expires_at: Some(from_secs(1_802_592_000)),
            grace_days: 7,
            fingerprint_policy: MatchPolicy { allow_pinned, ..MatchPolicy::default() },
            features: (0..features).map(|i| Feature::new(format!("f{i}"))).collect(),
            billing_cycle: None,
        }
    }

    #[test]
    fn allow_pinned_travels_as_a_trailing_flag_written_only_when_set() {
        for features in 0..12 {
            let off = grant(false, features).payload(1).unwrap();
            let on = grant(true, features).payload(1).unwrap();
            // Without the flag the payload is what it always was; with it, at most one byte longer.
            assert!(on.len() == off.len() || on.len() == off.len() + 1, "{features}");
            assert_eq!(OfflineGrant::parse(&off).unwrap().1, grant(false, features));
            assert_eq!(OfflineGrant::parse(&on).unwrap().1, grant(true, features));
        }
    }

    #[test]
    fn quota_periods_and_the_billing_cycle_travel_in_the_trailing_fields() {
        use crate::model::LimitType;
        for allow_pinned in [false, true] {
            let mut g = grant(allow_pinned, 0);
            g.features = vec![
                Feature::new("plain"),
                Feature::new("daily").with_limit(100, LimitType::Count).per(LimitPeriod::Day),
                Feature::new("lifetime").with_limit(5, LimitType::Count),
                Feature::new("monthly").with_limit(7, LimitType::Size).per(LimitPeriod::Month),
                Feature::new("billed").with_limit(0, LimitType::Count).per(LimitPeriod::BillingPeriod),
            ];
            g.billing_cycle = Some(BillingCycle { anchor: from_secs(1_795_000_000), months: 12 });
            let bytes = g.payload(1).unwrap();
            assert_eq!(OfflineGrant::parse(&bytes).unwrap().1, g);
            // Without a BILLING_PERIOD quota the cycle is not carried (it would change nothing).
            g.features.pop();
            let parsed = OfflineGrant::parse(&g.payload(1).unwrap()).unwrap().1;
            assert_eq!(parsed.billing_cycle, None);
            assert_eq!(parsed.features, g.features);
            // Lifetime quotas only: the code is the one it always was.
            let mut plain = grant(allow_pinned, 0);
            plain.features = vec![Feature::new("lifetime").with_limit(5, LimitType::Count)];
            let old = plain.payload(1).unwrap();
            plain.billing_cycle = Some(BillingCycle { anchor: from_secs(1_795_000_000), months: 1 });
            assert_eq!(plain.payload(1).unwrap(), old);
        }
        let mut bad = grant(false, 0);
        bad.features = vec![Feature::new("billed").with_limit(1, LimitType::Count).per(LimitPeriod::BillingPeriod)];
        bad.billing_cycle = Some(BillingCycle { anchor: from_secs(1_795_000_000), months: 13 });
        assert!(bad.payload(1).is_err(), "a 13-month cycle cannot be carried");
        bad.billing_cycle =
            Some(BillingCycle { anchor: Utc.timestamp_opt(CODE_EPOCH - 86_400, 0).unwrap(), months: 1 });
        assert!(bad.payload(1).is_err(), "an anchor before the code epoch would be clamped: refused");
    }
}
