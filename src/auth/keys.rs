//! The keys file (`DATA_DIR/keys.toml` by default): API keys, hashed, and
//! per-tenant settings. `verbatim keys` edits it under an exclusive lock and
//! replaces it atomically (write a temporary file, fsync, rename), so a
//! server re-reading it never sees half a file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthError, Role};
use crate::domain::TenantId;

/// Every token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "vb_";

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default, rename = "keys")]
    pub keys: Vec<KeyRecord>,
    /// Settings per tenant name (`[tenants.acme]`).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantSettings>,
}

/// One API key. The token itself is never stored: only its SHA-256.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub roles: Vec<Role>,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

impl KeyRecord {
    pub fn active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Per-tenant settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// PII kinds replaced before anything is stored or indexed:
    /// any of "email", "phone", "card", "iban" (others fail the file's parse).
    #[serde(default)]
    pub redact: std::collections::BTreeSet<crate::redact::PiiKind>,
    /// Keep the original text next to the redacted one (only an admin key
    /// that asks for it reads it back; erasure removes it).
    #[serde(default)]
    pub keep_original: bool,
}

/// A key just created: the record written to the file and the token,
/// shown once.
pub struct NewKey {
    pub record: KeyRecord,
    pub token: String,
}

impl KeysFile {
    /// Reads the file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<KeysFile, AuthError> {
        match std::fs::read_to_string(path) {
            Ok(text) => KeysFile::parse(&text)
                .map_err(|e| AuthError::KeysFile(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
            Err(e) => Err(AuthError::KeysFile(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn parse(text: &str) -> Result<KeysFile, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.validate()?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for key in &self.keys {
            if !is_key_id(&key.id) {
                return Err(format!(
                    "key id {:?} is not 12 lowercase hex digits",
                    key.id
                ));
            }
            if !ids.insert(key.id.as_str()) {
                return Err(format!("key id {} appears twice", key.id));
            }
            TenantId::parse(&key.tenant).map_err(|e| format!("key {}: {e}", key.id))?;
            if key.roles.is_empty() {
                return Err(format!("key {} has no role", key.id));
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("key {}: sha256 must be 64 hex digits", key.id));
            }
        }
        for name in self.tenants.keys() {
            TenantId::parse(name).map_err(|e| format!("[tenants.{name}]: {e}"))?;
        }
        Ok(())
    }

    pub fn active_keys(&self) -> usize {
        self.keys.iter().filter(|k| k.active()).count()
    }

    pub fn find(&self, id: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Adds a key for `tenant` with `roles`; returns it with its token.
    pub fn add(
        &mut self,
        tenant: &TenantId,
        roles: &[Role],
        label: &str,
    ) -> Result<NewKey, AuthError> {
        if roles.is_empty() {
            return Err(AuthError::KeysFile(
                "a key needs at least one --role".into(),
            ));
        }
        let id = loop {
            let mut raw = [0u8; 6];
            random(&mut raw)?;
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if self.find(&id).is_none() {
                break id;
            }
        };
        let mut secret = [0u8; 32];
        random(&mut secret)?;
        let token = format!(
            "{TOKEN_PREFIX}{id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let record = KeyRecord {
            id,
            tenant: tenant.to_string(),
            roles,
            sha256: token_hash(&token),
            created_at: now_rfc3339(),
            revoked_at: None,
            label: label.to_string(),
        };
        self.keys.push(record.clone());
        Ok(NewKey { record, token })
    }

    /// Marks a key revoked (kept in the file, so `keys list` shows it).
    pub fn revoke(&mut self, id: &str) -> Result<&KeyRecord, AuthError> {
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| AuthError::KeysFile(format!("no key with id {id}")))?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(now_rfc3339());
        }
        Ok(key)
    }

    fn render(&self) -> Result<String, AuthError> {
        let body = toml::to_string_pretty(self)
            .map_err(|e| AuthError::KeysFile(format!("cannot encode the keys file: {e}")))?;
        Ok(format!(
            "# Verbatim API keys and tenant settings. Edited by `verbatim keys`; the server\n\
             # re-reads this file when it changes. Tokens are stored as SHA-256 hashes only.\n\n{body}"
        ))
    }

    /// Reads, changes and atomically rewrites the file under an exclusive
    /// lock (`KEYS.lock` beside it), so two `verbatim keys` never lose each
    /// other's edits. The file is created with mode 0600.
    pub fn edit<T>(
        path: &Path,
        change: impl FnOnce(&mut KeysFile) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let io = |what: &str, e: std::io::Error| {
            AuthError::KeysFile(format!("cannot {what} {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
        }
        let lock_path = sibling(path, "lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("lock", e))?;
        lock.lock().map_err(|e| io("lock", e))?;
        let mut file = KeysFile::load(path)?;
        let result = change(&mut file)?;
        let text = file.render()?;
        let tmp = sibling(path, "tmp");
        let written = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.create(true).truncate(true).write(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options.open(&tmp).map_err(|e| io("write", e))?;
            out.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
            out.sync_all().map_err(|e| io("write", e))?;
            std::fs::rename(&tmp, path).map_err(|e| io("replace", e))
        })();
        if let Err(error) = written {
            // A full disk left an empty `keys.toml.tmp` behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        drop(lock);
        Ok(result)
    }
}

fn sibling(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(extension);
    path.with_file_name(name)
}

/// Twelve lowercase hex digits.
pub fn is_key_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The key id inside a token `vb_<id>_<secret>`, if it has that shape.
pub fn token_key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_key_id(id) && !secret.is_empty()).then_some(id)
}

pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares two strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random(buf: &mut [u8]) -> Result<(), AuthError> {
    getrandom::fill(buf).map_err(|e| AuthError::KeysFile(format!("no randomness from the OS: {e}")))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_revoke_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let tenant = TenantId::parse("acme").unwrap();
        let new = KeysFile::edit(&path, |f| {
            f.add(&tenant, &[Role::Read, Role::Ingest, Role::Read], "etl")
        })
        .unwrap();
        assert!(new.token.starts_with("vb_"));
        assert_eq!(token_key_id(&new.token), Some(new.record.id.as_str()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&new.token),
            "the token itself is never stored"
        );
        assert!(text.contains(&token_hash(&new.token)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let file = KeysFile::load(&path).unwrap();
        assert_eq!(file.keys.len(), 1);
        assert_eq!(file.keys[0].roles, vec![Role::Ingest, Role::Read]);
        assert_eq!(file.active_keys(), 1);
        KeysFile::edit(&path, |f| f.revoke(&new.record.id).map(|_| ())).unwrap();
        let file = KeysFile::load(&path).unwrap();
        assert_eq!(file.active_keys(), 0);
        assert!(file.keys[0].revoked_at.is_some());
        assert!(KeysFile::edit(&path, |f| f.revoke("000000000000").map(|_| ())).is_err());
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        assert!(KeysFile::parse("").unwrap().keys.is_empty());
        for (text, needle) in [
            ("[[keys]]\nid='zz'\ntenant='a'\nroles=['read']\nsha256='00'\ncreated_at=''", "hex"),
            ("[[keys]]\nid='0123456789ab'\ntenant='A'\nroles=['read']\nsha256='00'\ncreated_at=''", "tenant"),
            ("[[keys]]\nid='0123456789ab'\ntenant='a'\nroles=['root']\nsha256='00'\ncreated_at=''", "root"),
            ("[tenants.a]\nredact=['ssn']", "ssn"),
            ("bogus = 1", "bogus"),
        ] {
            let error = KeysFile::parse(text).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(token_key_id("vb_0123456789ab_secret"), Some("0123456789ab"));
        for bad in [
            "",
            "vb_",
            "vb_0123456789ab",
            "vb_0123456789ab_",
            "xx_0123456789ab_s",
            "vb_0123456789AB_s",
        ] {
            assert_eq!(token_key_id(bad), None, "{bad}");
        }
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
