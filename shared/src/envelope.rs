//! The signed envelope: format version, artefact kind, algorithm, key id, payload, signature.
//!
//! Two text forms: compact (`v1.<kind>.<alg>.<kid>.<payload>.<signature>`, base64url; activation tokens and
//! API fields) and armored (the downloadable license file). Verification checks, in order: the kind is the one
//! expected, the key id is trusted, the algorithm is the key's, the signature over the exact payload bytes.
//! Only then is the payload handed out.

use crate::crypto::{Algorithm, CryptoError, Domain, KeyId, PublicKeyset, SigningKey};
use crate::encoding::{b64, b64_decode, b64url_decode};

pub const FORMAT_VERSION: u8 = 1;

const ARMOR_BEGIN: &str = "-----BEGIN TESSERA LICENSE-----";
const ARMOR_END: &str = "-----END TESSERA LICENSE-----";
/// Inputs larger than this are refused before parsing.
pub const MAX_ENVELOPE_LEN: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("this is a {found}, not a {expected}")]
    WrongKind { expected: &'static str, found: String },
    #[error("unsupported format version {0}; upgrade Tessera")]
    Version(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn malformed(what: &'static str, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Malformed { what, reason: reason.into() }
}

/// A signed artefact before (or after) verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Domain,
    pub alg: Algorithm,
    pub kid: KeyId,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Envelope {
    /// Signs `payload` as an artefact of `kind`.
    pub fn seal(key: &SigningKey, kind: Domain, payload: Vec<u8>) -> Envelope {
        let signature = key.sign(kind, &[], &payload);
        Envelope { kind, alg: key.algorithm(), kid: key.key_id(), payload, signature }
    }

    /// Verifies and returns the payload bytes exactly as they were signed.
    pub fn open(&self, keys: &PublicKeyset, expected: Domain) -> Result<&[u8], EnvelopeError> {
        if self.kind != expected {
            return Err(EnvelopeError::WrongKind { expected: expected.label(), found: self.kind.label().into() });
        }
        let key = keys.get(&self.kid)?;
        if key.algorithm() != self.alg {
            return Err(CryptoError::AlgorithmMismatch {
                kid: self.kid.to_string(),
                expected: key.algorithm(),
                found: self.alg,
            }
            .into());
        }
        key.verify(self.kind, &[], &self.payload, &self.signature)?;
        Ok(&self.payload)
    }

    pub fn to_compact(&self) -> String {
        use base64::Engine as _;
        // Built in one allocation: this runs for every signed server answer.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let label = self.kind.label();
        let alg = self.alg.as_str();
        let mut s = String::with_capacity(
            8 + label.len() + alg.len() + 16 + (self.payload.len() + self.signature.len()) * 4 / 3 + 4,
        );
        s.push('v');
        s.push_str(&FORMAT_VERSION.to_string());
        for part in [label, alg] {
            s.push('.');
            s.push_str(part);
        }
        s.push('.');
        s.push_str(&self.kid.to_string());
        s.push('.');
        b64.encode_string(&self.payload, &mut s);
        s.push('.');
        b64.encode_string(&self.signature, &mut s);
        s
    }

    pub fn from_compact(s: &str) -> Result<Envelope, EnvelopeError> {
        const WHAT: &str = "signed token";
        let s = s.trim();
        if s.len() > MAX_ENVELOPE_LEN {
            return Err(malformed(WHAT, "too long"));
        }
        let parts: Vec<&str> = s.split('.').collect();
        let [version, kind, alg, kid, payload, sig] = parts[..] else {
            return Err(malformed(WHAT, format!("expected 6 dot-separated parts, found {}", parts.len())));
        };
        if version != "v1" {
            return Err(EnvelopeError::Version(version.into()));
        }
        Ok(Envelope {
            kind: Domain::from_label(kind).ok_or_else(|| malformed(WHAT, format!("unknown kind {kind:?}")))?,
            alg: Algorithm::parse(alg).ok_or_else(|| malformed(WHAT, format!("unknown algorithm {alg:?}")))?,
            kid: KeyId::parse(kid).ok_or_else(|| malformed(WHAT, "bad key id"))?,
            payload: b64url_decode(payload).ok_or_else(|| malformed(WHAT, "payload is not base64url"))?,
            signature: b64url_decode(sig).ok_or_else(|| malformed(WHAT, "signature is not base64url"))?,
        })
    }

    /// The armored license file form (only for [`Domain::LicenseFile`] envelopes).
    pub fn to_armored(&self) -> String {
        let mut out = String::with_capacity(self.payload.len() * 4 / 3 + 400);
        out.push_str(ARMOR_BEGIN);
        out.push('\n');
        out.push_str(&format!("Version: {FORMAT_VERSION}\nAlgorithm: {}\nKey-Id: {}\n", self.alg, self.kid));
        out.push_str(&format!("Signature: {}\n\n", b64(&self.signature)));
        let body = b64(&self.payload);
        for chunk in body.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str(ARMOR_END);
        out.push('\n');
        out
    }

    /// Parses an armored license file. Tolerates CRLF line ends, trailing spaces and text around the block;
    /// nothing inside the block may change.
    pub fn from_armored(s: &str) -> Result<Envelope, EnvelopeError> {
        const WHAT: &str = "license file";
        if s.len() > MAX_ENVELOPE_LEN {
            return Err(malformed(WHAT, "too long"));
        }
        let start = s.find(ARMOR_BEGIN).ok_or_else(|| malformed(WHAT, format!("no {ARMOR_BEGIN} line")))?;
        let rest = &s[start + ARMOR_BEGIN.len()..];
        let end = rest.find(ARMOR_END).ok_or_else(|| malformed(WHAT, "truncated: no END line"))?;
        let inner = rest[..end].strip_prefix("\r\n").or_else(|| rest[..end].strip_prefix('\n'));
        let inner = inner.ok_or_else(|| malformed(WHAT, format!("{ARMOR_BEGIN} must be on a line of its own")))?;
        let mut lines = inner.lines().map(|l| l.trim_end_matches(['\r', ' ', '\t']));
        let (mut version, mut alg, mut kid, mut sig) = (None, None, None, None);
        for line in lines.by_ref() {
            if line.is_empty() {
                if version.is_some() {
                    break;
                }
                continue;
            }
            let (k, v) = line.split_once(':').ok_or_else(|| malformed(WHAT, format!("bad header {line:?}")))?;
            let v = v.trim();
            match k.trim() {
                "Version" => version = Some(v.to_string()),
                "Algorithm" => alg = Some(Algorithm::parse(v).ok_or_else(|| malformed(WHAT, "unknown algorithm"))?),
                "Key-Id" => kid = Some(KeyId::parse(v).ok_or_else(|| malformed(WHAT, "bad Key-Id"))?),
                "Signature" => sig = Some(b64_decode(v).ok_or_else(|| malformed(WHAT, "bad Signature"))?),
                other => return Err(malformed(WHAT, format!("unknown header {other:?}"))),
            }
        }
        match version.as_deref() {
            Some("1") => {}
            Some(v) => return Err(EnvelopeError::Version(v.into())),
            None => return Err(malformed(WHAT, "missing Version header")),
        }
        let body: String = lines.collect();
        Ok(Envelope {
            kind: Domain::LicenseFile,
            alg: alg.ok_or_else(|| malformed(WHAT, "missing Algorithm header"))?,
            kid: kid.ok_or_else(|| malformed(WHAT, "missing Key-Id header"))?,
            signature: sig.ok_or_else(|| malformed(WHAT, "missing Signature header"))?,
            payload: b64_decode(&body).ok_or_else(|| malformed(WHAT, "body is not base64"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_armored_round_trip() {
        let k = SigningKey::generate_ed25519();
        let keys = PublicKeyset::new([k.verifying_key()]);
        let e = Envelope::seal(&k, Domain::LicenseFile, b"{\"hello\":1}".to_vec());
        let c = Envelope::from_compact(&e.to_compact()).expect("compact");
        assert_eq!(c, e);
        let crlf = e.to_armored().replace('\n', "\r\n");
        let a = Envelope::from_armored(&format!("Dear customer,\r\n\r\n{crlf}\r\nRegards")).expect("armored");
        assert_eq!(a, e);
        assert_eq!(a.open(&keys, Domain::LicenseFile).expect("open"), b"{\"hello\":1}");
    }

    #[test]
    fn kind_and_key_checked_first() {
        let k = SigningKey::generate_ed25519();
        let other = SigningKey::generate_ed25519();
        let e = Envelope::seal(&k, Domain::ActivationToken, b"x".to_vec());
        let keys = PublicKeyset::new([k.verifying_key()]);
        assert!(matches!(e.open(&keys, Domain::LicenseFile), Err(EnvelopeError::WrongKind { .. })));
        let mut relabeled = e.clone();
        relabeled.kind = Domain::LicenseFile;
        assert_eq!(relabeled.open(&keys, Domain::LicenseFile), Err(CryptoError::BadSignature.into()));
        let untrusted = PublicKeyset::new([other.verifying_key()]);
        assert!(matches!(
            e.open(&untrusted, Domain::ActivationToken),
            Err(EnvelopeError::Crypto(CryptoError::UnknownKey(_)))
        ));
    }
}
