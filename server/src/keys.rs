//! Signing keys in the data directory: `keys/<kid>.pem` (PKCS#8, 0600), beside each a `keys/<kid>.json` with its
//! creation time and, once revoked, its revocation time, and `keys/active` naming the key that signs.
//!
//! Rules:
//! - Keys are ordered by creation time (ties, which `generate` avoids, by key id), never by file name: key ids
//!   are hashes, so name order is random.
//! - A key file without its `.json` (a directory made before creation times were recorded) takes the key file's
//!   modification time (key files are written once, atomically, when the key is made), and that time is recorded
//!   in a new `.json` at once so that copying the directory later cannot reorder the keys.
//! - Without an `active` marker the newest key that is not revoked signs.
//! - A revoked key never signs and never verifies: it is exported marked `"revoked": true`, and every verifier
//!   (server and agent) refuses what it signed. The signing key cannot be revoked: make another key sign first.
//! - Every other key stays trusted for verification (rotation keeps old artefacts valid).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_core::crypto::write_private_file;
use tessera_core::{Algorithm, Keyset, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key directory {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("key file {path}: {reason}")]
    Bad { path: String, reason: String },
    #[error("no key {0} in the key directory: run `tessera-server keys list`")]
    Unknown(String),
    #[error(
        "key {0} is the signing key and cannot be revoked: make another key sign first (`tessera-server keys rotate` \
         for a new one, or `keys activate <kid>`), restart the server, then revoke {0}"
    )]
    RevokeActive(String),
    #[error("key {0} is revoked and never signs again: `tessera-server keys rotate` makes a new signing key")]
    Revoked(String),
    #[error(
        "every key in {0} is revoked, so none can sign: run `tessera-server keys rotate` to make a new signing key, \
         then export the keyset for your applications"
    )]
    AllRevoked(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Algorithm,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    pub path: PathBuf,
}

/// The `keys/<kid>.json` beside a key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyMeta {
    kid: String,
    created_at: DateTime<Utc>,
    /// True when `created_at` was taken from the key file's modification time (a key made before creation times
    /// were recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    created_at_from_file_time: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<DateTime<Utc>>,
}

struct Entry {
    key: SigningKey,
    path: PathBuf,
    meta: KeyMeta,
}

pub struct KeyDir {
    dir: PathBuf,
}

fn io(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Io { path: path.display().to_string(), reason: e.to_string() }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> KeyError {
    KeyError::Bad { path: path.display().to_string(), reason: reason.to_string() }
}

impl KeyDir {
    pub fn new(data_dir: &Path) -> KeyDir {
        KeyDir { dir: data_dir.join("keys") }
    }

    fn ensure_dir(&self) -> Result<(), KeyError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(())
    }

    fn meta_path(&self, kid: &str) -> PathBuf {
        self.dir.join(format!("{kid}.json"))
    }

    fn write_meta(&self, meta: &KeyMeta) -> Result<(), KeyError> {
        let p = self.meta_path(&meta.kid);
        let text = serde_json::to_string_pretty(meta).map_err(|e| bad(&p, e))?;
        write_private_file(&p, format!("{text}\n").as_bytes()).map_err(|e| io(&p, e))
    }

    /// The key's metadata; for a key without one, its file time, recorded now (best effort: a read-only
    /// directory still gets the same order from the file times).
    fn meta_for(&self, kid: &str, pem: &Path) -> Result<KeyMeta, KeyError> {
        let p = self.meta_path(kid);
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                let meta: KeyMeta = serde_json::from_str(&text).map_err(|e| {
                    bad(&p, format!("{e}: expected {{\"kid\": …, \"created_at\": RFC 3339 time}}; fix or delete it"))
                })?;
                if meta.kid != kid {
                    return Err(bad(&p, format!("names key {} but belongs to key {kid}", meta.kid)));
                }
                Ok(meta)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let modified = std::fs::metadata(pem).and_then(|m| m.modified()).map_err(|e| io(pem, e))?;
                let meta = KeyMeta {
                    kid: kid.to_string(),
                    created_at: DateTime::<Utc>::from(modified),
                    created_at_from_file_time: true,
                    revoked_at: None,
                };
                if let Err(e) = self.write_meta(&meta) {
                    tracing::warn!(error = %e, "could not record the creation time of key {kid}; using its file time");
                }
                Ok(meta)
            }
            Err(e) => Err(io(&p, e)),
        }
    }

    /// Every key, oldest first.
    fn load_all(&self) -> Result<Vec<Entry>, KeyError> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|x| x.to_str()) != Some("pem") {
                continue;
            }
            let key = SigningKey::load(&path).map_err(|e| bad(&path, e))?;
            let meta = self.meta_for(&key.key_id().to_string(), &path)?;
            out.push(Entry { key, path, meta });
        }
        out.sort_by(|a, b| a.meta.created_at.cmp(&b.meta.created_at).then_with(|| a.meta.kid.cmp(&b.meta.kid)));
        Ok(out)
    }

    fn find(&self, kid: &str) -> Result<Entry, KeyError> {
        self.load_all()?.into_iter().find(|e| e.meta.kid == kid).ok_or_else(|| KeyError::Unknown(kid.into()))
    }

    fn active_kid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("active")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn set_active(&self, kid: &str) -> Result<(), KeyError> {
        let p = self.dir.join("active");
        write_private_file(&p, format!("{kid}\n").as_bytes()).map_err(|e| io(&p, e))
    }

    /// Generates and stores a new Ed25519 key (not active). Its creation time is after every existing key's, so
    /// keys made in one microsecond still keep their order.
    pub fn generate(&self) -> Result<KeyInfo, KeyError> {
        self.generate_at(Utc::now())
    }

    fn generate_at(&self, now: DateTime<Utc>) -> Result<KeyInfo, KeyError> {
        self.ensure_dir()?;
        let newest = self.load_all()?.last().map(|e| e.meta.created_at);
        let created_at = match newest {
            Some(n) if n >= now => n + chrono::Duration::microseconds(1),
            _ => now,
        };
        let key = SigningKey::generate_ed25519();
        let kid = key.key_id().to_string();
        let path = self.dir.join(format!("{kid}.pem"));
        let meta = KeyMeta { kid: kid.clone(), created_at, created_at_from_file_time: false, revoked_at: None };
        // The creation time first: a key file never exists without it (a crash leaves at most a stray .json).
        self.write_meta(&meta)?;
        key.save(&path).map_err(|e| io(&path, e))?;
        Ok(KeyInfo { kid, alg: key.algorithm(), active: false, created_at, revoked_at: None, path })
    }

    /// Generates a new key and makes it the signing key; the old one keeps verifying.
    pub fn rotate(&self) -> Result<KeyInfo, KeyError> {
        let mut info = self.generate()?;
        self.set_active(&info.kid)?;
        info.active = true;
        Ok(info)
    }

    pub fn activate(&self, kid: &str) -> Result<(), KeyError> {
        if self.find(kid)?.meta.revoked_at.is_some() {
            return Err(KeyError::Revoked(kid.into()));
        }
        self.set_active(kid)
    }

    /// Marks a key revoked (idempotent; returns the revocation time). The signing key is refused.
    pub fn revoke(&self, kid: &str) -> Result<KeyInfo, KeyError> {
        let mut e = self.find(kid)?;
        if self.current_signer()?.as_deref() == Some(kid) {
            return Err(KeyError::RevokeActive(kid.into()));
        }
        if e.meta.revoked_at.is_none() {
            e.meta.revoked_at = Some(Utc::now());
            self.write_meta(&e.meta)?;
        }
        Ok(info(&e, false))
    }

    /// The key that signs: the marker's, else the newest key that is not revoked.
    fn current_signer(&self) -> Result<Option<String>, KeyError> {
        if let Some(k) = self.active_kid() {
            return Ok(Some(k));
        }
        Ok(self.load_all()?.iter().rev().find(|e| e.meta.revoked_at.is_none()).map(|e| e.meta.kid.clone()))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let active = self.current_signer()?;
        Ok(self.load_all()?.iter().map(|e| info(e, active.as_deref() == Some(e.meta.kid.as_str()))).collect())
    }

    /// Loads the keyset, creating a first key when there is none. Returns whether a key was created.
    pub fn load_or_init(&self) -> Result<(Keyset, bool), KeyError> {
        let mut all = self.load_all()?;
        let mut created = false;
        if all.is_empty() {
            self.rotate()?;
            all = self.load_all()?;
            created = true;
        }
        let active_kid = match self.active_kid() {
            Some(k) => k,
            None => {
                // No marker: the newest key by creation time that is not revoked signs.
                let kid = all
                    .iter()
                    .rev()
                    .find(|e| e.meta.revoked_at.is_none())
                    .map(|e| e.meta.kid.clone())
                    .ok_or_else(|| KeyError::AllRevoked(self.dir.display().to_string()))?;
                self.set_active(&kid)?;
                kid
            }
        };
        let pos =
            all.iter().position(|e| e.meta.kid == active_kid).ok_or_else(|| KeyError::Unknown(active_kid.clone()))?;
        let active = all.remove(pos);
        if active.meta.revoked_at.is_some() {
            return Err(KeyError::Revoked(active_kid));
        }
        // Newest first after the signing key: the order `keys export` writes them in.
        let (revoked, retired): (Vec<_>, Vec<_>) = all.iter().rev().partition(|e| e.meta.revoked_at.is_some());
        let keyset = Keyset::new(active.key, retired.iter().map(|e| e.key.verifying_key()))
            .with_revoked(revoked.iter().map(|e| e.key.verifying_key()))
            .map_err(|e| bad(&active.path, e))?;
        Ok((keyset, created))
    }
}

fn info(e: &Entry, active: bool) -> KeyInfo {
    KeyInfo {
        kid: e.meta.kid.clone(),
        alg: e.key.algorithm(),
        active,
        created_at: e.meta.created_at,
        revoked_at: e.meta.revoked_at,
        path: e.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_made_in_the_same_instant_keep_their_creation_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kd = KeyDir::new(dir.path());
        let t = Utc::now();
        let kids: Vec<String> = (0..5).map(|_| kd.generate_at(t).expect("generate").kid).collect();
        let listed: Vec<String> = kd.list().expect("list").into_iter().map(|k| k.kid).collect();
        assert_eq!(listed, kids);
        std::fs::remove_file(dir.path().join("keys/active")).ok();
        let (ks, _) = kd.load_or_init().expect("load");
        assert_eq!(ks.signer().key_id().to_string(), kids[4], "the newest key signs");
    }
}
