use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::index::IndexSettings;

#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// Data folder of the (stopped) server.
    #[arg(long, env = "VERBATIM_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Indexing threads.
    #[arg(long, default_value_t = 2)]
    pub index_threads: usize,
    /// The server's --index-phrases: the index of that setting is rebuilt.
    #[arg(long, env = "VERBATIM_INDEX_PHRASES", default_value = "on")]
    pub index_phrases: crate::config::Switch,
}

pub async fn run(args: ReindexArgs) -> anyhow::Result<()> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "rebuilding the index of {} from its store",
        args.data_dir.display()
    ));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let settings = IndexSettings {
        refresh_interval: Duration::from_millis(250),
        writer_threads: args.index_threads,
        writer_memory_bytes: 256 * 1024 * 1024,
        similarity_index: false,
        phrase_pairs: args.index_phrases == crate::config::Switch::On,
        similarity_threads: 1,
        stop_drain: Duration::ZERO,
    };
    let data_dir = args.data_dir.clone();
    let count =
        tokio::task::spawn_blocking(move || crate::index::reindex(&data_dir, &settings)).await??;
    spinner.finish_and_clear();
    println!(
        "reindexed {count} items in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
