//! tessera-core: what the Tessera server and agent share.
//!
//! - [`model`]: licenses, templates, features, restrictions (stable serde names).
//! - [`decision`]: the one pure decision function, used offline by the agent and online by the server.
//! - [`crypto`]: Ed25519 / RSA-PSS signing behind one abstraction, key ids, keysets, PEM key files.
//! - [`envelope`] and [`token`]: signed license files and activation tokens.
//! - [`codes`] and [`offline`]: human copy-paste codes (offline request / response, deactivation receipt,
//!   emergency code).
//! - [`protocol`]: the wire contract of the client endpoints (bodies, signed-answer payload, error codes).
//! - [`license_key`]: license keys with a check symbol, and hashing helpers for storage.
//! - [`fingerprint`]: component hashes and the K-of-N match policy.
//!
//! Pure and deterministic: time is always passed in; only key generation reads the OS random source.
#![forbid(unsafe_code)]

pub mod codes;
pub mod crypto;
pub mod decision;
pub mod encoding;
pub mod envelope;
pub mod fingerprint;
mod gf;
pub mod license_key;
pub mod model;
pub mod offline;
#[cfg(feature = "openapi")]
mod openapi;
pub mod protocol;
#[cfg(feature = "signals")]
pub mod shutdown;
pub mod token;

pub use crypto::{Algorithm, CryptoError, Domain, KeyId, Keyset, PublicKeyset, SigningKey, VerifyingKey};
pub use decision::{decide, decided_until, Decision, Inputs, Query, Reason};
pub use license_key::LicenseKey;
pub use model::{Feature, License, LicenseModel, LicenseStatus, LicenseType, Template};
