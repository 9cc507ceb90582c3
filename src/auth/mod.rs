//! Who may call, and as which tenant. API keys are bearer tokens
//! (`authorization: Bearer vb_<id>_<secret>`), each bound to one tenant and
//! to roles; they live hashed in the keys file (`keys.rs`), which the server
//! re-reads when it changes, so adding, revoking or rotating a key takes
//! effect without a restart (within `RELOAD_EVERY`).
//!
//! Roles: `ingest` (Ingest, IngestStream), `read` (Get, Search, Report,
//! Stats, ListThemes, DiscoverThemes), `admin` (Delete, DeleteCustomer,
//! UpsertTheme, DeleteTheme, reading kept original texts; an admin key may
//! also do everything the other roles may). Analyze and AnalyzeStream touch
//! no stored data: any valid key may call them.
//!
//! Knows nothing of gRPC: `grpc/` reads the metadata and maps `AuthError`
//! to UNAUTHENTICATED / PERMISSION_DENIED.

pub mod keys;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::domain::TenantId;
pub use keys::{KeyRecord, KeysFile, NewKey, TenantSettings};

/// How often a request may look at the keys file's modification time.
pub const RELOAD_EVERY: Duration = Duration::from_millis(200);

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ingest,
    Read,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any valid key (stateless calls such as Analyze).
    AnyRole,
    Role(Role),
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub roles: BTreeSet<Role>,
    /// `None` for anonymous access (`--auth off`).
    pub key_id: Option<String>,
}

impl Principal {
    /// `--auth off`: the default tenant with every role.
    pub fn anonymous() -> Principal {
        Principal {
            tenant: TenantId::default_tenant(),
            roles: [Role::Ingest, Role::Read, Role::Admin].into(),
            key_id: None,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    pub fn require(&self, need: Need) -> Result<(), AuthError> {
        match need {
            Need::AnyRole => Ok(()),
            Need::Role(role) if self.has(role) => Ok(()),
            Need::Role(role) => Err(AuthError::PermissionDenied {
                key_id: self.key_id.clone().unwrap_or_default(),
                role,
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `authorization: Bearer <token>` (create one with `verbatim keys add`)")]
    MissingToken,
    /// An `authorization` value of another scheme than `Bearer`.
    #[error("unsupported authorization scheme: send `authorization: Bearer <token>`")]
    NotBearer,
    #[error("invalid API key")]
    UnknownKey,
    #[error("API key {0} was revoked")]
    Revoked(String),
    #[error("API key {key_id} lacks the {} role this call needs", .role.name())]
    PermissionDenied { key_id: String, role: Role },
    #[error("keys file: {0}")]
    KeysFile(String),
}

/// `--auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every call but health and reflection needs a valid key.
    Required,
    /// Anonymous access to the default tenant with every role: for local use.
    Off,
}

impl AuthMode {
    /// The mode when `--auth` is not given: `required` when the keys file
    /// holds a key; with no key, `off` on a loopback address (local use)
    /// and an error on any other address, which would otherwise expose
    /// every tenant's data to the network.
    pub fn resolve(
        flag: Option<AuthMode>,
        keys: &KeysFile,
        keys_path: &Path,
        listen: SocketAddr,
    ) -> anyhow::Result<AuthMode> {
        if let Some(mode) = flag {
            return Ok(mode);
        }
        if !keys.keys.is_empty() {
            return Ok(AuthMode::Required);
        }
        if listen.ip().is_loopback() {
            return Ok(AuthMode::Off);
        }
        anyhow::bail!(
            "no API keys in {} and --listen {listen} is not a loopback address: create a key \
             (`verbatim keys add --tenant default --role admin`) or pass --auth off to serve \
             anonymously on purpose",
            keys_path.display()
        )
    }
}

/// What tells that the keys file changed: its modification time and size,
/// and on Unix its inode and change time (an edit that kept the size within
/// the modification time's granularity, or restored the time with `touch`,
/// was missed).
type Stamp = (SystemTime, u64, u64, i64, i64);

struct Loaded {
    stamp: Option<Stamp>,
    checked: Instant,
    file: Arc<KeysFile>,
}

/// Checks tokens against the keys file, re-reading it when it changes.
pub struct Authenticator {
    mode: AuthMode,
    /// `Off` only because the keys file held no key at start (no `--auth`):
    /// anonymous until a key appears, then `Required` for good, as a start
    /// with that file would be (a key added to a running keyless server was
    /// ignored, and its token then reached the default tenant with every
    /// role).
    until_keys: bool,
    /// `until_keys` saw a key.
    keys_appeared: std::sync::atomic::AtomicBool,
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (inode, changed, changed_ns) = {
        use std::os::unix::fs::MetadataExt;
        (meta.ino(), meta.ctime(), meta.ctime_nsec())
    };
    #[cfg(not(unix))]
    let (inode, changed, changed_ns) = (0, 0, 0);
    Some((
        meta.modified().ok()?,
        meta.len(),
        inode,
        changed,
        changed_ns,
    ))
}

impl Authenticator {
    /// Loads the keys file (a missing file is empty; a malformed one is an error).
    pub fn open(mode: AuthMode, path: &Path) -> Result<Authenticator, AuthError> {
        let stamp = stamp(path);
        let file = KeysFile::load(path)?;
        Ok(Authenticator {
            mode,
            until_keys: false,
            keys_appeared: std::sync::atomic::AtomicBool::new(false),
            path: path.to_path_buf(),
            loaded: RwLock::new(Loaded {
                stamp,
                checked: Instant::now(),
                file: Arc::new(file),
            }),
        })
    }

    /// Anonymous only until the keys file holds a key (`--auth` not given,
    /// and no key at start): then keys are required without a restart.
    pub fn anonymous_until_keys(mut self, until_keys: bool) -> Self {
        self.until_keys = until_keys && self.mode == AuthMode::Off;
        self
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Whether calls are anonymous now.
    fn anonymous(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.mode == AuthMode::Required {
            return false;
        }
        if !self.until_keys {
            return true;
        }
        if self.keys_appeared.load(Ordering::Acquire) {
            return false;
        }
        if self.current().keys.is_empty() {
            return true;
        }
        if !self.keys_appeared.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                path = %self.path.display(),
                "the keys file now holds a key: API keys are required from now on, as at a start with this file"
            );
        }
        false
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current keys file, re-read if it changed. A file that became
    /// malformed is logged and the previous keys stay in force.
    pub fn current(&self) -> Arc<KeysFile> {
        {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if loaded.checked.elapsed() < RELOAD_EVERY {
                return loaded.file.clone();
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        if loaded.checked.elapsed() >= RELOAD_EVERY {
            loaded.checked = Instant::now();
            let now = stamp(&self.path);
            if now != loaded.stamp {
                match KeysFile::load(&self.path) {
                    Ok(file) => {
                        tracing::info!(
                            path = %self.path.display(),
                            keys = file.keys.len(),
                            active = file.active_keys(),
                            "keys file reloaded"
                        );
                        loaded.file = Arc::new(file);
                        loaded.stamp = now;
                    }
                    Err(error) => {
                        // Logged once per change of the file.
                        tracing::error!(%error, "keys file unreadable; the previous keys stay in force");
                        loaded.stamp = now;
                    }
                }
            }
        }
        loaded.file.clone()
    }

    /// Who calls with this `authorization` header value (`None`: no header).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if self.anonymous() {
            return Ok(Principal::anonymous());
        }
        let value = authorization
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(AuthError::MissingToken)?;
        // The scheme is case-insensitive (RFC 9110), one or more spaces after.
        let token = match value.split_once([' ', '\t']) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            Some(_) => return Err(AuthError::NotBearer),
            None if value.eq_ignore_ascii_case("bearer") => "",
            None => return Err(AuthError::NotBearer),
        };
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let id = keys::token_key_id(token).ok_or(AuthError::UnknownKey)?;
        let file = self.current();
        let record = file.find(id).ok_or(AuthError::UnknownKey)?;
        if !keys::constant_time_eq(&keys::token_hash(token), &record.sha256) {
            return Err(AuthError::UnknownKey);
        }
        if !record.active() {
            return Err(AuthError::Revoked(record.id.clone()));
        }
        let tenant = TenantId::parse(&record.tenant).map_err(AuthError::KeysFile)?;
        Ok(Principal {
            tenant,
            roles: record.roles.iter().copied().collect(),
            key_id: Some(record.id.clone()),
        })
    }

    /// A tenant's settings from the keys file (defaults if it has none).
    pub fn tenant_settings(&self, tenant: &TenantId) -> TenantSettings {
        self.current()
            .tenants
            .get(tenant.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// Every tenant the keys file names (keys or settings).
    pub fn known_tenants(&self) -> BTreeSet<TenantId> {
        let file = self.current();
        file.keys
            .iter()
            .map(|k| k.tenant.as_str())
            .chain(file.tenants.keys().map(String::as_str))
            .filter_map(|name| TenantId::parse(name).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn tokens_roles_revocation_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let acme = TenantId::parse("acme").unwrap();
        let reader = KeysFile::edit(&path, |f| f.add(&acme, &[Role::Read], "")).unwrap();
        let auth = Authenticator::open(AuthMode::Required, &path).unwrap();

        let who = auth.authenticate(Some(&bearer(&reader.token))).unwrap();
        assert_eq!(who.tenant, acme);
        assert!(who.require(Need::Role(Role::Read)).is_ok());
        assert!(who.require(Need::AnyRole).is_ok());
        assert!(matches!(
            who.require(Need::Role(Role::Ingest)),
            Err(AuthError::PermissionDenied {
                role: Role::Ingest,
                ..
            })
        ));
        assert!(matches!(
            auth.authenticate(None),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            auth.authenticate(Some("Basic abc")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            auth.authenticate(Some(&reader.token)),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            auth.authenticate(Some("Bearer  ")),
            Err(AuthError::MissingToken)
        ));
        for scheme in ["BEARER", "bearer", "bEaReR"] {
            let value = format!("{scheme}  {}", reader.token);
            assert!(auth.authenticate(Some(&value)).is_ok(), "{value}");
        }
        let mut wrong = reader.token.clone();
        wrong.push('x');
        assert!(matches!(
            auth.authenticate(Some(&bearer(&wrong))),
            Err(AuthError::UnknownKey)
        ));
        assert!(matches!(
            auth.authenticate(Some(&bearer("vb_000000000000_nope"))),
            Err(AuthError::UnknownKey)
        ));

        // A key added and one revoked by another process take effect
        // without a restart.
        std::thread::sleep(Duration::from_millis(20));
        let admin = KeysFile::edit(&path, |f| {
            f.revoke(&reader.record.id)?;
            f.add(&TenantId::default_tenant(), &[Role::Admin], "ops")
        })
        .unwrap();
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        assert!(matches!(
            auth.authenticate(Some(&bearer(&reader.token))),
            Err(AuthError::Revoked(_))
        ));
        let who = auth.authenticate(Some(&bearer(&admin.token))).unwrap();
        assert!(who.tenant.is_default());
        assert!(who.has(Role::Ingest) && who.has(Role::Read));

        // A broken file keeps the previous keys.
        std::fs::write(&path, "not = [toml").unwrap();
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        assert!(auth.authenticate(Some(&bearer(&admin.token))).is_ok());
    }

    /// Found by probing: an edit in place that kept the file's size, with
    /// its modification time restored (or within its granularity), was
    /// never read.
    #[test]
    fn an_edit_that_keeps_size_and_time_is_read() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let acme = TenantId::parse("acme").unwrap();
        let key = KeysFile::edit(&path, |f| f.add(&acme, &[Role::Read], "")).unwrap();
        let auth = Authenticator::open(AuthMode::Required, &path).unwrap();
        let who = auth.authenticate(Some(&bearer(&key.token))).unwrap();
        assert_eq!(who.tenant, acme);

        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace("\"acme\"", "\"beta\"");
        assert!(edited != text && edited.len() == text.len(), "{text}");
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(edited.as_bytes()).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        let who = auth.authenticate(Some(&bearer(&key.token))).unwrap();
        assert_eq!(who.tenant, TenantId::parse("beta").unwrap());
    }

    #[test]
    fn off_is_anonymous_default_admin() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::open(AuthMode::Off, &dir.path().join("keys.toml")).unwrap();
        let who = auth.authenticate(None).unwrap();
        assert!(who.tenant.is_default() && who.has(Role::Admin));
    }

    /// A server anonymous because it started without keys requires them
    /// once a key is added, without a restart, and for good.
    #[test]
    fn a_key_added_to_a_keyless_server_turns_keys_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let auth = Authenticator::open(AuthMode::Off, &path)
            .unwrap()
            .anonymous_until_keys(true);
        assert!(auth.authenticate(None).unwrap().has(Role::Admin));
        let acme = TenantId::parse("acme").unwrap();
        let reader = KeysFile::edit(&path, |f| f.add(&acme, &[Role::Read], "")).unwrap();
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        assert!(matches!(
            auth.authenticate(None),
            Err(AuthError::MissingToken)
        ));
        let who = auth.authenticate(Some(&bearer(&reader.token))).unwrap();
        assert_eq!(who.tenant, acme);
        assert!(!who.has(Role::Ingest));
        // Removing the file does not make it anonymous again.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        assert!(auth.authenticate(None).is_err());

        // `--auth off` given: anonymous whatever the file holds.
        let path = dir.path().join("other.toml");
        let off = Authenticator::open(AuthMode::Off, &path).unwrap();
        KeysFile::edit(&path, |f| f.add(&acme, &[Role::Read], "")).unwrap();
        std::thread::sleep(RELOAD_EVERY + Duration::from_millis(50));
        assert!(off.authenticate(None).unwrap().has(Role::Admin));
    }

    #[test]
    fn default_mode() {
        let path = Path::new("keys.toml");
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let empty = KeysFile::default();
        assert_eq!(
            AuthMode::resolve(None, &empty, path, local).unwrap(),
            AuthMode::Off
        );
        assert!(AuthMode::resolve(None, &empty, path, public).is_err());
        assert_eq!(
            AuthMode::resolve(Some(AuthMode::Off), &empty, path, public).unwrap(),
            AuthMode::Off
        );
        let mut one = KeysFile::default();
        one.add(&TenantId::default_tenant(), &[Role::Read], "")
            .unwrap();
        assert_eq!(
            AuthMode::resolve(None, &one, path, local).unwrap(),
            AuthMode::Required
        );
    }
}
