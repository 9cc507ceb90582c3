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
use std::time::{Duration, Instant};

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
    /// Tenants whose last open failed: when, and the answer their calls
    /// get until `retry_open_after` has passed.
    failed: std::sync::Mutex<HashMap<TenantId, (Instant, String)>>,
    retry_open_after: Duration,
}

/// How long the calls of a tenant that could not be opened get that
/// failure before one tries the open again: opens are serialised, so a
/// client retrying a broken tenant's calls at once would otherwise hold up
/// every other tenant's first open with an open attempt each.
pub const RETRY_OPEN_AFTER: Duration = Duration::from_secs(2);

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
        Self::with_retry_after(open, RETRY_OPEN_AFTER)
    }

    fn with_retry_after(open: OpenTenant, retry_open_after: Duration) -> Arc<Tenants> {
        Arc::new(Tenants {
            engines: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            open,
            failed: std::sync::Mutex::new(HashMap::new()),
            retry_open_after,
        })
    }

    /// The answer of a tenant whose open failed less than
    /// `retry_open_after` ago.
    fn recently_failed(&self, tenant: &TenantId) -> Option<Error> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let (at, why) = failed.get(tenant)?;
        (at.elapsed() < self.retry_open_after).then(|| Error::TenantUnavailable(why.clone()))
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
        if let Some(error) = self.recently_failed(tenant) {
            return Err(error);
        }
        let _opening = self.opening.lock().await;
        if let Some(engine) = self.cached(tenant) {
            return Ok(engine);
        }
        if let Some(error) = self.recently_failed(tenant) {
            return Err(error);
        }
        tracing::info!(%tenant, "opening tenant");
        let opened = (self.open)(tenant.clone()).await;
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        match opened {
            Ok(engine) => {
                failed.remove(tenant);
                self.insert(tenant.clone(), engine.clone());
                Ok(engine)
            }
            Err(error) => {
                let error = crate::error::chain_text(&error);
                tracing::error!(%tenant, error, "cannot open tenant");
                let why = format!(
                    "tenant {tenant} cannot be opened: {error} (tried again at most every {} s)",
                    self.retry_open_after.as_secs_f64()
                );
                failed.insert(tenant.clone(), (Instant::now(), why.clone()));
                Err(Error::TenantUnavailable(why))
            }
        }
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

    /// A tenant whose open fails is tried again only after
    /// `retry_open_after`: its calls in between get the same answer
    /// without an open (nor a wait for the lock that serialises opens).
    #[tokio::test]
    async fn a_failed_open_is_tried_again_only_after_a_pause() {
        let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = opens.clone();
        let tenants = Tenants::with_retry_after(
            Box::new(move |_tenant: TenantId| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async { Err(anyhow::anyhow!("magic number mismatch")) })
            }),
            Duration::from_millis(300),
        );
        let acme = TenantId::parse("acme").unwrap();
        let opens_now = || opens.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..5 {
            let Err(Error::TenantUnavailable(why)) = tenants.get(&acme).await else {
                panic!("acme cannot be opened");
            };
            assert!(
                why.contains("tenant acme cannot be opened: magic number mismatch"),
                "{why}"
            );
        }
        assert_eq!(opens_now(), 1);
        // Another tenant is not held back by acme's failure.
        let globex = TenantId::parse("globex").unwrap();
        assert!(tenants.get(&globex).await.is_err());
        assert_eq!(opens_now(), 2);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(tenants.get(&acme).await.is_err());
        assert_eq!(opens_now(), 3);
    }

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
