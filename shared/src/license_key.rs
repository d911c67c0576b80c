//! License keys: `TSK-XXXXX-XXXXX-XXXXX-XXXXX-XXXXC`.
//!
//! 24 random Crockford symbols (120 bits) and one check symbol over GF(32) with distinct weights, which catches
//! every single-symbol substitution and every adjacent transposition. Input is tolerant of case, spaces,
//! missing hyphens and the I/L/O confusions. The server stores only [`LicenseKey::hash`].

use std::fmt;

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::encoding::{crockford_value, CROCKFORD};
use crate::gf::gf32;

pub const PREFIX: &str = "TSK";
const RANDOM_SYMBOLS: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a license key starts with {PREFIX}-")]
    Prefix,
    #[error("invalid character {ch:?} at position {position} of the license key")]
    Character { ch: char, position: usize },
    #[error(
        "the license key has {got} characters after {PREFIX}-, expected 25: check for a missing or extra character"
    )]
    Length { got: usize },
    #[error("the license key has a typo (check symbol mismatch): compare it with the original character by character")]
    Checksum,
}

/// A syntactically valid license key. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LicenseKey {
    /// Canonical form: 25 upper-case Crockford symbols, no prefix or hyphens.
    symbols: String,
}

impl fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LicenseKey({PREFIX}-{}…)", &self.symbols[..5])
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        for chunk in self.symbols.as_bytes().chunks(5) {
            write!(f, "-{}", String::from_utf8_lossy(chunk))?;
        }
        Ok(())
    }
}

fn check_symbol(values: &[u8]) -> u8 {
    // Weight of position i is α^(i+1); the check symbol has weight 1 so that sum over all is zero.
    values.iter().enumerate().fold(0u8, |acc, (i, &v)| acc ^ gf32::mul(gf32::exp(i + 1), v))
}

impl LicenseKey {
    pub fn generate() -> LicenseKey {
        let mut bytes = [0u8; 15];
        OsRng.fill_bytes(&mut bytes);
        LicenseKey::from_random(&bytes)
    }

    /// Deterministic construction from 15 random bytes (120 bits).
    pub fn from_random(bytes: &[u8; 15]) -> LicenseKey {
        let mut values = crate::encoding::bytes_to_symbols(bytes);
        values.truncate(RANDOM_SYMBOLS);
        values.push(check_symbol(&values));
        LicenseKey { symbols: values.iter().map(|&v| CROCKFORD[v as usize] as char).collect() }
    }

    pub fn parse(input: &str) -> Result<LicenseKey, KeyError> {
        let compact: String = input.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        let rest = compact
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &compact[PREFIX.len()..])
            .ok_or(KeyError::Prefix)?;
        let mut values = Vec::with_capacity(RANDOM_SYMBOLS + 1);
        for (i, ch) in rest.chars().enumerate() {
            let v =
                u8::try_from(ch).ok().and_then(crockford_value).ok_or(KeyError::Character { ch, position: i + 1 })?;
            values.push(v);
        }
        if values.len() != RANDOM_SYMBOLS + 1 {
            return Err(KeyError::Length { got: values.len() });
        }
        let (data, check) = values.split_at(RANDOM_SYMBOLS);
        if check_symbol(data) != check[0] {
            return Err(KeyError::Checksum);
        }
        Ok(LicenseKey { symbols: values.iter().map(|&v| CROCKFORD[v as usize] as char).collect() })
    }

    /// The key as the customer sees it; treat as a secret.
    pub fn expose(&self) -> String {
        self.to_string()
    }

    /// Storage hash: `SHA-256("tessera/license-key/v1" | canonical key)`. Keys carry 120 random bits, so a fast
    /// hash is safe here (no dictionary to attack).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tessera/license-key/v1\0");
        h.update(self.symbols.as_bytes());
        h.finalize().into()
    }

    /// The first 6 bytes of [`LicenseKey::hash`]: how offline codes name a license without carrying the key.
    pub fn hint(&self) -> [u8; 6] {
        hint_of(&self.hash())
    }
}

pub fn hint_of(hash: &[u8; 32]) -> [u8; 6] {
    let mut h = [0u8; 6];
    h.copy_from_slice(&hash[..6]);
    h
}

/// Hash of an API token or other high-entropy secret for storage.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tessera/secret/v1\0");
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_round_trip() {
        for _ in 0..50 {
            let k = LicenseKey::generate();
            let text = k.to_string();
            assert_eq!(text.len(), 3 + 5 * 6);
            assert_eq!(LicenseKey::parse(&text).expect("parse"), k);
            let sloppy = text.to_lowercase().replace('-', " ").replace('0', "o").replace('1', "l");
            assert_eq!(LicenseKey::parse(&sloppy).expect("sloppy"), k);
        }
    }

    #[test]
    fn every_substitution_and_transposition_detected() {
        let k = LicenseKey::from_random(&[7u8; 15]);
        let sym: Vec<u8> = k.symbols.bytes().collect();
        for i in 0..sym.len() {
            for &c in CROCKFORD {
                if c == sym[i] {
                    continue;
                }
                let mut s = sym.clone();
                s[i] = c;
                let text = format!("TSK{}", String::from_utf8_lossy(&s));
                assert!(LicenseKey::parse(&text).is_err(), "substitution at {i} to {}", c as char);
            }
            if i + 1 < sym.len() && sym[i] != sym[i + 1] {
                let mut s = sym.clone();
                s.swap(i, i + 1);
                let text = format!("TSK{}", String::from_utf8_lossy(&s));
                assert_eq!(LicenseKey::parse(&text), Err(KeyError::Checksum), "transposition at {i}");
            }
        }
        assert_eq!(LicenseKey::parse("TSK-ABC"), Err(KeyError::Length { got: 3 }));
        assert_eq!(LicenseKey::parse("XYZ-ABC"), Err(KeyError::Prefix));
        assert!(matches!(LicenseKey::parse("TSK-ABCDU"), Err(KeyError::Character { ch: 'U', position: 5 })));
    }

    #[test]
    fn debug_redacts() {
        let k = LicenseKey::generate();
        assert!(!format!("{k:?}").contains(&k.to_string()));
    }
}
