//! One `Engine` per tenant: its own store, index, taxonomy and analysis
//! queue under its own folder, so no query, cursor, report or erasure can
//! ever reach another tenant's items, and the same item id may exist in two
//! tenants. The analysis pool (the models) and the read pool are shared.
//!
//! Tenants open on first use (a key for a new tenant needs no restart);
//! opening is serialised so a tenant is never opened twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use super::Engine;
use crate::domain::TenantId;
use crate::error::{Error, Result};

/// Opens the engine of one tenant (wired by `app.rs`).
pub type OpenTenant =
    Box<dyn Fn(TenantId) -> BoxFuture<'static, anyhow::Result<Engine>> + Send + Sync>;

pub struct Tenants {
    engines: RwLock<HashMap<TenantId, Engine>>,
    opening: tokio::sync::Mutex<()>,
    open: OpenTenant,
}

/// The folder of a tenant's data: the data directory itself for the default
/// tenant (where a single-tenant server keeps it), `DATA_DIR/tenants/NAME`
/// for any other.
pub fn tenant_dir(data_dir: &Path, tenant: &TenantId) -> PathBuf {
    if tenant.is_default() {
        data_dir.to_path_buf()
    } else {
        data_dir.join("tenants").join(tenant.as_str())
    }
}

/// The tenants that have a folder under `DATA_DIR/tenants/` (names that are
/// not valid tenant names are skipped with a warning). A symbolic link to a
/// folder counts (a tenant moved to another disk): the server opens a
/// tenant through its path, so `reindex` and the start must find it too.
pub fn tenants_on_disk(data_dir: &Path) -> Vec<TenantId> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("tenants")) else {
        return Vec::new();
    };
    let mut found: Vec<TenantId> = entries
        .filter_map(|entry| entry.ok())
        // `DirEntry::file_type` does not follow links; `metadata` of the
        // path does.
        .filter(|entry| std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()))
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            match TenantId::parse(&name) {
                Ok(tenant) if !tenant.is_default() => Some(tenant),
                _ => {
                    tracing::warn!(folder = %name, "not a tenant folder; skipped");
                    None
                }
            }
        })
        .collect();
    found.sort();
    found
}

impl Tenants {
    pub fn new(open: OpenTenant) -> Arc<Tenants> {
        Arc::new(Tenants {
            engines: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            open,
        })
    }

    /// Registers an engine opened by the caller (the default tenant at startup).
    pub fn insert(&self, tenant: TenantId, engine: Engine) {
        self.engines
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant, engine);
    }

    fn cached(&self, tenant: &TenantId) -> Option<Engine> {
        self.engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    /// The engine of `tenant`, opened now if it is not open yet.
    pub async fn get(&self, tenant: &TenantId) -> Result<Engine> {
        if let Some(engine) = self.cached(tenant) {
            return Ok(engine);
        }
        let _opening = self.opening.lock().await;
        if let Some(engine) = self.cached(tenant) {
            return Ok(engine);
        }
        tracing::info!(%tenant, "opening tenant");
        let engine = (self.open)(tenant.clone()).await.map_err(|error| {
            let error = crate::error::chain_text(&error);
            tracing::error!(%tenant, error, "cannot open tenant");
            Error::TenantUnavailable(format!("tenant {tenant} cannot be opened: {error}"))
        })?;
        self.insert(tenant.clone(), engine.clone());
        Ok(engine)
    }

    /// The open tenants, by name.
    pub fn open_tenants(&self) -> Vec<(TenantId, Engine)> {
        let mut all: Vec<_> = self
            .engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders() {
        let root = Path::new("/data");
        assert_eq!(tenant_dir(root, &TenantId::default_tenant()), root);
        assert_eq!(
            tenant_dir(root, &TenantId::parse("acme").unwrap()),
            Path::new("/data/tenants/acme")
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(tenants_on_disk(dir.path()).is_empty());
        for name in ["b", "a", "Bad.Name", "default"] {
            std::fs::create_dir_all(dir.path().join("tenants").join(name)).unwrap();
        }
        std::fs::write(dir.path().join("tenants").join("file"), b"").unwrap();
        // Links: to a folder elsewhere (a tenant), to a file and to nothing
        // (neither).
        let elsewhere = tempfile::tempdir().unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, dir.path().join("tenants").join(name)).unwrap()
        };
        link(elsewhere.path(), "c");
        link(&dir.path().join("tenants").join("file"), "d");
        link(&elsewhere.path().join("missing"), "e");
        let names: Vec<String> = tenants_on_disk(dir.path())
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
