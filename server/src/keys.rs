//! Signing keys in the data directory: `keys/<kid>.pem` (PKCS#8, 0600) and `keys/active` naming the key that
//! signs. Every other key file stays trusted for verification (rotation keeps old artefacts valid).

use std::path::{Path, PathBuf};

use serde::Serialize;
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
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Algorithm,
    pub active: bool,
    pub path: PathBuf,
}

pub struct KeyDir {
    dir: PathBuf,
}

fn io(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Io { path: path.display().to_string(), reason: e.to_string() }
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

    fn load_all(&self) -> Result<Vec<(SigningKey, PathBuf)>, KeyError> {
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
            let key = SigningKey::load(&path)
                .map_err(|e| KeyError::Bad { path: path.display().to_string(), reason: e.to_string() })?;
            out.push((key, path));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    fn active_kid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("active")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn set_active(&self, kid: &str) -> Result<(), KeyError> {
        let p = self.dir.join("active");
        write_private_file(&p, format!("{kid}\n").as_bytes()).map_err(|e| io(&p, e))
    }

    /// Generates and stores a new Ed25519 key (not active).
    pub fn generate(&self) -> Result<KeyInfo, KeyError> {
        self.ensure_dir()?;
        let key = SigningKey::generate_ed25519();
        let kid = key.key_id().to_string();
        let path = self.dir.join(format!("{kid}.pem"));
        key.save(&path).map_err(|e| io(&path, e))?;
        Ok(KeyInfo { kid, alg: key.algorithm(), active: false, path })
    }

    /// Generates a new key and makes it the signing key; the old one keeps verifying.
    pub fn rotate(&self) -> Result<KeyInfo, KeyError> {
        let mut info = self.generate()?;
        self.set_active(&info.kid)?;
        info.active = true;
        Ok(info)
    }

    pub fn activate(&self, kid: &str) -> Result<(), KeyError> {
        if !self.load_all()?.iter().any(|(k, _)| k.key_id().to_string() == kid) {
            return Err(KeyError::Unknown(kid.into()));
        }
        self.set_active(kid)
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let active = self.active_kid();
        Ok(self
            .load_all()?
            .into_iter()
            .map(|(k, path)| {
                let kid = k.key_id().to_string();
                KeyInfo { active: active.as_deref() == Some(kid.as_str()), kid, alg: k.algorithm(), path }
            })
            .collect())
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
                // No marker: the newest file (by name order, stable) signs.
                let kid = all.last().map(|(k, _)| k.key_id().to_string()).unwrap_or_default();
                self.set_active(&kid)?;
                kid
            }
        };
        let pos = all
            .iter()
            .position(|(k, _)| k.key_id().to_string() == active_kid)
            .ok_or_else(|| KeyError::Unknown(active_kid.clone()))?;
        let (active, _) = all.remove(pos);
        let retired: Vec<_> = all.iter().map(|(k, _)| k.verifying_key()).collect();
        Ok((Keyset::new(active, retired), created))
    }
}
