use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::index::IndexSettings;

#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// The server's TOML file: its data_dir, index_threads and
    /// index_phrases where the flags below are not given.
    #[arg(long, env = "VERBATIM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data folder of the (stopped) server [default: ./data].
    #[arg(long, env = "VERBATIM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Indexing threads (1 to 64, as the server's) [default: 2].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub index_threads: Option<usize>,
    /// The server's --index-phrases: the index of that setting is rebuilt [default: on].
    #[arg(long, env = "VERBATIM_INDEX_PHRASES")]
    pub index_phrases: Option<crate::config::Switch>,
}

impl ReindexArgs {
    /// The flags over the config file over the server's defaults, checked
    /// as the server checks them.
    fn resolve(self) -> anyhow::Result<crate::config::Config> {
        let mut config = match &self.config {
            Some(path) => crate::config::read_file(path)?,
            None => crate::config::Config::default(),
        };
        config.data_dir = self.data_dir.unwrap_or(config.data_dir);
        config.index_threads = self.index_threads.unwrap_or(config.index_threads);
        config.index_phrases = self.index_phrases.unwrap_or(config.index_phrases);
        config.validate()?;
        Ok(config)
    }
}

/// Rebuilds the index of every tenant: the default one in DATA_DIR, then
/// each under DATA_DIR/tenants/.
pub async fn run(args: ReindexArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    // Found by probing: a folder that was no data dir was given a new,
    // empty store and index, and "reindexed 0 items".
    let store = config.data_dir.join(crate::store::STORE_FILE);
    anyhow::ensure!(
        store.is_file(),
        "{} holds no store ({} is missing): not a data dir (--data-dir)",
        config.data_dir.display(),
        store.display()
    );
    let default = crate::domain::TenantId::default_tenant();
    let tenants = std::iter::once(default).chain(crate::engine::tenants_on_disk(&config.data_dir));
    // A tenant that fails does not stop the others; the command fails at
    // the end, naming each.
    let (mut done, mut failed) = (0, Vec::new());
    for tenant in tenants {
        let dir = crate::engine::tenant_dir(&config.data_dir, &tenant);
        match reindex_one(&config, &tenant, dir).await {
            Ok(()) => done += 1,
            Err(error) => {
                eprintln!("error: {}", crate::error::chain_text(&error));
                failed.push(tenant.to_string());
            }
        }
    }
    if done > 1 {
        outln!("reindexed {done} tenants")?;
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} tenants not reindexed: {}",
        failed.len(),
        failed.len() + done,
        failed.join(", ")
    );
    Ok(())
}

/// Rebuilds one tenant's index.
async fn reindex_one(
    config: &crate::config::Config,
    tenant: &crate::domain::TenantId,
    dir: PathBuf,
) -> anyhow::Result<()> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "rebuilding the index of tenant {tenant} ({}) from its store",
        dir.display()
    ));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let settings = IndexSettings {
        refresh_interval: Duration::from_millis(250),
        writer_threads: config.index_threads,
        // 256 MiB, and at least the 16 MiB a thread that tantivy needs
        // (15 MB) for many threads.
        writer_memory_bytes: (256usize << 20).max(config.index_threads * (16 << 20)),
        similarity_index: false,
        phrase_pairs: config.index_phrases == crate::config::Switch::On,
        similarity_threads: 1,
        stop_drain: Duration::ZERO,
    };
    let data_dir = dir.clone();
    let count = tokio::task::spawn_blocking(move || crate::index::reindex(&data_dir, &settings))
        .await?
        .map_err(|error| {
            // tantivy's writer loses the cause ("An index writer was
            // killed"): a full disk is the usual one, so say how full.
            let room = match free_bytes(&dir) {
                Some(free) if free < LOW_ROOM_BYTES => format!(
                    " (the disk holding it has {} MiB free: the rebuild needs room for a \
                     whole new index beside the old one)",
                    free >> 20
                ),
                _ => String::new(),
            };
            anyhow::Error::new(error).context(format!(
                "cannot reindex tenant {tenant} ({}){room}",
                dir.display()
            ))
        });
    spinner.finish_and_clear();
    let count = count?;
    outln!(
        "tenant {tenant}: reindexed {count} items in {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// Free room under which a failed rebuild names the disk.
const LOW_ROOM_BYTES: u64 = 64 << 20;

/// Bytes free for this user on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs writes the one struct passed and reads the
        // NUL-terminated path, both alive for the call.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_room_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(super::free_bytes(&dir.path().join("missing")), None);
    }
}
