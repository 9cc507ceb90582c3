//! Server configuration: command-line flags, `VERBATIM_*` environment
//! variables and an optional TOML file. A flag or variable wins over the
//! file; the file wins over the defaults in `Config::default`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved server configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (logged at startup).
    pub listen: SocketAddr,
    /// Folder of the store and the index; created if missing.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// tracing filter, e.g. "verbatim=debug,tantivy=info".
    pub log_filter: String,
    /// How often the index commits and becomes searchable, in milliseconds.
    pub refresh_interval_ms: u64,
    /// Write requests that may wait for the store; beyond that unary writes
    /// wait up to 1 s for room, in turn, then get RESOURCE_EXHAUSTED, and
    /// streams wait.
    pub write_queue: usize,
    /// Indexing threads.
    pub index_threads: usize,
    /// Memory budget of the index writer, in MiB.
    pub index_memory_mb: usize,
    /// Index each two adjacent words of a text as one term, so a two-word
    /// phrase is one posting list (`index/vN`); `off` halves bulk
    /// indexing's cost and searches phrases by positions
    /// (`index/vN-nopairs`). Either switch rebuilds the index from the store.
    pub index_phrases: Switch,
    /// Page cache of the store (redb) per tenant, in MiB.
    pub store_cache_mb: usize,
    /// After SIGTERM/SIGINT, how long in-flight requests may take to finish;
    /// the indexer then goes on as long again before it commits and stops.
    pub shutdown_grace_ms: u64,
    /// Transformer analysis (Analyze RPCs); `off` serves store and search only.
    pub analysis: Switch,
    /// Folder prepared by `python3 models/prepare.py --int8`.
    pub models_dir: PathBuf,
    /// Encoder folder inside `models_dir`: `e5-small-int8` (int8, ~2x faster,
    /// cosine >= 0.999 to the reference) or `e5-small` (4-bit, 0.9999).
    pub encoder: String,
    /// Cores one inference pass uses.
    pub analysis_threads: usize,
    /// Interactive analysis requests (Analyze, similar_to_text,
    /// wait_for_analysis) in progress at once; more get RESOURCE_EXHAUSTED
    /// (an Ingest with wait_for_analysis has stored its items by then: it
    /// answers OK and leaves their analysis to the background).
    pub analysis_queue: usize,
    /// Searches and reports running at once (blocking threads).
    pub search_threads: usize,
    /// A search alone on the read pool spreads its index segments over
    /// `search_threads` threads (lower latency on idle cores; no change
    /// under load, when every slot is taken).
    pub search_spread: Switch,
    /// The approximate nearest-neighbour index for `similar_to_*` (about
    /// 0.7 KB of memory per analysed item, saved under DATA_DIR/index/vectors);
    /// `off` ranks the newest matches.
    pub similarity_index: Switch,
    /// Searches and reports waiting for a thread; more get RESOURCE_EXHAUSTED.
    pub search_queue: usize,
    /// Request bytes received and not yet answered, over all connections, in
    /// MiB; a request that would go over gets RESOURCE_EXHAUSTED.
    pub max_inflight_request_mb: usize,
    /// Answer bytes built and not yet taken by the transport (clients that
    /// read slowly or not at all), over all connections, in MiB; a read's
    /// answer over 64 KiB that would go over gets RESOURCE_EXHAUSTED, an
    /// AnalyzeStream answer waits up to 10 s; writes' answers are not
    /// counted.
    pub max_inflight_response_mb: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_concurrent_streams: u32,
    /// gRPC connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// `required` or `off`; unset: required when the keys file holds a key,
    /// else off on a loopback address until a key is added, and refused on
    /// any other.
    pub auth: Option<crate::auth::AuthMode>,
    /// The API keys and tenant settings; unset: `DATA_DIR/keys.toml`.
    pub keys_file: Option<PathBuf>,
    /// PII the default tenant redacts before storing: "email,phone,card,iban",
    /// "all" or "none"; unset: the keys file's `[tenants.default]`, else none.
    pub redact: Option<String>,
    /// With `redact`: keep the original text for admins (default false).
    pub redact_keep_original: bool,
    /// PEM certificate chain: TLS on the gRPC listener (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate signed by one.
    pub tls_client_ca: Option<PathBuf>,
    /// Address of the Prometheus endpoint (`GET /metrics`); None: off.
    /// Unauthenticated: bind it to loopback or a private network.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:50051".parse().expect("valid default address"),
            data_dir: PathBuf::from("data"),
            log_format: LogFormat::Text,
            log_filter: "verbatim=info,tantivy=warn".into(),
            refresh_interval_ms: 250,
            write_queue: 64,
            index_threads: 2,
            index_memory_mb: 256,
            index_phrases: Switch::On,
            store_cache_mb: crate::store::DEFAULT_CACHE_BYTES >> 20,
            shutdown_grace_ms: 2_000,
            analysis: Switch::On,
            models_dir: PathBuf::from("models/cache"),
            encoder: "e5-small-int8".into(),
            analysis_threads: 2,
            analysis_queue: 64,
            search_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            search_spread: Switch::On,
            search_queue: 64,
            similarity_index: Switch::On,
            max_inflight_request_mb: 256,
            max_inflight_response_mb: 256,
            max_concurrent_streams: 64,
            max_connections: 1024,
            auth: None,
            keys_file: None,
            redact: None,
            redact_keep_original: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            metrics_listen: None,
        }
    }
}

/// Flags of `verbatim serve`. Each has a `VERBATIM_*` variable; unset ones
/// come from `--config` or the defaults.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the options below (snake_case keys).
    #[arg(long, env = "VERBATIM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051]; port 0 picks a free port.
    #[arg(long, env = "VERBATIM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Folder of the store and index [default: ./data].
    #[arg(long, env = "VERBATIM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "VERBATIM_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter [default: verbatim=info,tantivy=warn].
    #[arg(long, env = "VERBATIM_LOG_FILTER")]
    pub log_filter: Option<String>,
    /// Index refresh interval in ms [default: 250]: writes are searchable after at most this plus the commit time.
    #[arg(long, env = "VERBATIM_REFRESH_INTERVAL_MS")]
    pub refresh_interval_ms: Option<u64>,
    /// Write requests that may wait for the store [default: 64].
    #[arg(long, env = "VERBATIM_WRITE_QUEUE")]
    pub write_queue: Option<usize>,
    /// Indexing threads [default: 2].
    #[arg(long, env = "VERBATIM_INDEX_THREADS")]
    pub index_threads: Option<usize>,
    /// Index writer memory budget in MiB [default: 256].
    #[arg(long, env = "VERBATIM_INDEX_MEMORY_MB")]
    pub index_memory_mb: Option<usize>,
    /// Index each two adjacent words as one term: two-word phrases ("late delivery", wi-fi) search one posting list instead of matching positions [default: on]; off: about half the indexing work and index size, slower phrases. Switching rebuilds the index from the store at startup.
    #[arg(long, env = "VERBATIM_INDEX_PHRASES")]
    pub index_phrases: Option<Switch>,
    /// Store page cache per tenant in MiB [default: 128]: filled by reads and by the pages writes commit, up to this, and kept.
    #[arg(long, env = "VERBATIM_STORE_CACHE_MB")]
    pub store_cache_mb: Option<usize>,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT, in ms [default: 2000]; then the indexer gets as long again to apply waiting changes before it commits (the rest is indexed at the next start), and running index merges up to 5 s.
    #[arg(long, env = "VERBATIM_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Transformer analysis on or off [default: on]; off needs no model files.
    #[arg(long, env = "VERBATIM_ANALYSIS")]
    pub analysis: Option<Switch>,
    /// Folder of the prepared models [default: models/cache] (python3 models/prepare.py --int8).
    #[arg(long, env = "VERBATIM_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Encoder folder in the models dir [default: e5-small-int8]; `e5-small` is the 4-bit graph (closer to the reference, ~2x slower).
    #[arg(long, env = "VERBATIM_ENCODER")]
    pub encoder: Option<String>,
    /// Cores one inference pass uses [default: 2].
    #[arg(long, env = "VERBATIM_ANALYSIS_THREADS")]
    pub analysis_threads: Option<usize>,
    /// Interactive analysis requests in progress at once [default: 64]; beyond that RESOURCE_EXHAUSTED.
    #[arg(long, env = "VERBATIM_ANALYSIS_QUEUE")]
    pub analysis_queue: Option<usize>,
    /// Searches and reports running at once [default: the number of cores].
    #[arg(long, env = "VERBATIM_SEARCH_THREADS")]
    pub search_threads: Option<usize>,
    /// A search alone on the server spreads its index segments over up to search_threads threads (lower latency on idle cores; under load each search keeps one thread) [default: on].
    #[arg(long, env = "VERBATIM_SEARCH_SPREAD")]
    pub search_spread: Option<Switch>,
    /// Approximate nearest-neighbour index for similar_to_id / similar_to_text over the whole corpus (~0.7 KB of memory per analysed item; saved at shutdown, loaded or built at startup) [default: on]; off ranks the 10,000 newest matches exactly.
    #[arg(long, env = "VERBATIM_SIMILARITY_INDEX")]
    pub similarity_index: Option<Switch>,
    /// Searches and reports waiting for a thread [default: 64]; beyond that RESOURCE_EXHAUSTED.
    #[arg(long, env = "VERBATIM_SEARCH_QUEUE")]
    pub search_queue: Option<usize>,
    /// Request bytes in flight over all connections, in MiB [default: 256]; beyond that RESOURCE_EXHAUSTED.
    #[arg(long, env = "VERBATIM_MAX_INFLIGHT_REQUEST_MB")]
    pub max_inflight_request_mb: Option<usize>,
    /// Answer bytes waiting for their clients to read them, over all connections, in MiB [default: 256; at least 65, so the largest answer (64 MiB) fits]; a read's answer over 64 KiB that would go over ends RESOURCE_EXHAUSTED, an AnalyzeStream answer waits up to 10 s for room; writes' answers are not counted.
    #[arg(long, env = "VERBATIM_MAX_INFLIGHT_RESPONSE_MB")]
    pub max_inflight_response_mb: Option<usize>,
    /// Concurrent calls (HTTP/2 streams) per connection [default: 64].
    #[arg(long, env = "VERBATIM_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// gRPC connections held at once [default: 1024; at most the open-file limit less 256]; more wait in the listen backlog until one closes. A connection that has not completed its HTTP/2 handshake 10 s after it was accepted (after the TLS handshake, with TLS) is closed.
    #[arg(long, env = "VERBATIM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// API keys: `required` (every call but health and reflection needs `authorization: Bearer <token>`) or `off` (anonymous, default tenant, every role; local use only) [default: required when the keys file holds a key; with none, off on a loopback address until a key is added, and refused on any other].
    #[arg(long, env = "VERBATIM_AUTH")]
    pub auth: Option<crate::auth::AuthMode>,
    /// The keys file (`verbatim keys` edits it; re-read on change) [default: DATA_DIR/keys.toml].
    #[arg(long, env = "VERBATIM_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// PII the default tenant replaces by [EMAIL], [PHONE], [CARD], [IBAN] before anything is stored or indexed: a list of email, phone, card, iban, or all / none [default: the keys file's [tenants.default] redact, else none]. Other tenants: `redact` in the keys file.
    #[arg(long, env = "VERBATIM_REDACT")]
    pub redact: Option<String>,
    /// With --redact: also keep each original text, readable only by an admin key with Get's include_original [default: false].
    #[arg(long, env = "VERBATIM_REDACT_KEEP_ORIGINAL")]
    pub redact_keep_original: Option<bool>,
    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key); re-read when the file changes [default: plaintext].
    #[arg(long, env = "VERBATIM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (re-read when it changes).
    #[arg(long, env = "VERBATIM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: require client certificates signed by one of them (mutual TLS) [default: none required].
    #[arg(long, env = "VERBATIM_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Address of the Prometheus endpoint, GET /metrics, e.g. 127.0.0.1:9464 [default: off]; no authentication: keep it on loopback or a private network; port 0 picks a free port (logged as metrics_addr=...).
    #[arg(long, env = "VERBATIM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        let base = match &self.config {
            Some(path) => read_file(path)?,
            None => Config::default(),
        };
        let config = Config {
            listen: self.listen.unwrap_or(base.listen),
            data_dir: self.data_dir.unwrap_or(base.data_dir),
            log_format: self.log_format.unwrap_or(base.log_format),
            log_filter: self.log_filter.unwrap_or(base.log_filter),
            refresh_interval_ms: self.refresh_interval_ms.unwrap_or(base.refresh_interval_ms),
            write_queue: self.write_queue.unwrap_or(base.write_queue),
            index_threads: self.index_threads.unwrap_or(base.index_threads),
            index_memory_mb: self.index_memory_mb.unwrap_or(base.index_memory_mb),
            index_phrases: self.index_phrases.unwrap_or(base.index_phrases),
            store_cache_mb: self.store_cache_mb.unwrap_or(base.store_cache_mb),
            shutdown_grace_ms: self.shutdown_grace_ms.unwrap_or(base.shutdown_grace_ms),
            analysis: self.analysis.unwrap_or(base.analysis),
            models_dir: self.models_dir.unwrap_or(base.models_dir),
            encoder: self.encoder.unwrap_or(base.encoder),
            analysis_threads: self.analysis_threads.unwrap_or(base.analysis_threads),
            analysis_queue: self.analysis_queue.unwrap_or(base.analysis_queue),
            search_threads: self.search_threads.unwrap_or(base.search_threads),
            search_queue: self.search_queue.unwrap_or(base.search_queue),
            search_spread: self.search_spread.unwrap_or(base.search_spread),
            similarity_index: self.similarity_index.unwrap_or(base.similarity_index),
            max_inflight_request_mb: self
                .max_inflight_request_mb
                .unwrap_or(base.max_inflight_request_mb),
            max_inflight_response_mb: self
                .max_inflight_response_mb
                .unwrap_or(base.max_inflight_response_mb),
            max_concurrent_streams: self
                .max_concurrent_streams
                .unwrap_or(base.max_concurrent_streams),
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            auth: self.auth.or(base.auth),
            keys_file: self.keys_file.or(base.keys_file),
            redact: self.redact.or(base.redact),
            redact_keep_original: self
                .redact_keep_original
                .unwrap_or(base.redact_keep_original),
            tls_cert: self.tls_cert.or(base.tls_cert),
            tls_key: self.tls_key.or(base.tls_key),
            tls_client_ca: self.tls_client_ca.or(base.tls_client_ca),
            metrics_listen: self.metrics_listen.or(base.metrics_listen),
        };
        config.validate()?;
        Ok(config)
    }
}

/// A TOML config file over the defaults (keys it leaves out keep them).
pub fn read_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
}

impl Config {
    /// The keys file: `--keys-file`, else `DATA_DIR/keys.toml`.
    pub fn keys_path(&self) -> PathBuf {
        self.keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys.toml"))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        /// The most requests any queue option may hold.
        const MAX_QUEUE: usize = 1_000_000;
        // Found by probing: `data_dir = ""` put the store and index in the
        // working directory, wherever the server was started.
        anyhow::ensure!(
            !self.data_dir.as_os_str().is_empty(),
            "data_dir is empty: name a folder (default \"data\")"
        );
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "tls_cert and tls_key go together (--tls-cert and --tls-key)"
        );
        anyhow::ensure!(
            self.tls_client_ca.is_none() || self.tls_cert.is_some(),
            "tls_client_ca needs tls_cert and tls_key"
        );
        // An invalid filter was replaced by the default without a word.
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            anyhow::bail!(
                "log_filter {:?} is not a valid filter: {error}",
                self.log_filter
            );
        }
        if let Some(list) = &self.redact {
            crate::redact::RedactionPolicy::parse_list(list)
                .map_err(|e| anyhow::anyhow!("redact: {e}"))?;
        }
        anyhow::ensure!(
            (10..=60_000).contains(&self.refresh_interval_ms),
            "refresh_interval_ms must be 10..=60000, got {}",
            self.refresh_interval_ms
        );
        // Upper bounds keep every product with a unit in range and every
        // count within what a semaphore holds (found by probing: a write
        // queue of 2^61 panicked at start, and 2^44 MiB of in-flight
        // requests wrapped to 0 bytes, which refused every request).
        anyhow::ensure!(
            (1..=MAX_QUEUE).contains(&self.write_queue),
            "write_queue must be 1..={MAX_QUEUE}, got {}",
            self.write_queue
        );
        anyhow::ensure!(
            self.search_queue <= MAX_QUEUE,
            "search_queue must be 0..={MAX_QUEUE}, got {}",
            self.search_queue
        );
        anyhow::ensure!(
            self.shutdown_grace_ms <= 3_600_000,
            "shutdown_grace_ms must be 0..=3600000 (an hour), got {}",
            self.shutdown_grace_ms
        );
        anyhow::ensure!(
            (1..=64).contains(&self.index_threads),
            "index_threads must be 1..=64"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.analysis_threads),
            "analysis_threads must be 1..=64"
        );
        anyhow::ensure!(
            (1..=MAX_QUEUE).contains(&self.analysis_queue),
            "analysis_queue must be 1..={MAX_QUEUE}, got {}",
            self.analysis_queue
        );
        anyhow::ensure!(
            (1..=256).contains(&self.search_threads),
            "search_threads must be 1..=256"
        );
        // One request of the largest size must always fit.
        anyhow::ensure!(
            (17..=1024 * 1024).contains(&self.max_inflight_request_mb),
            "max_inflight_request_mb must be 17..=1048576 (one 16 MiB message must fit), got {}",
            self.max_inflight_request_mb
        );
        // One answer of the largest size must always fit.
        anyhow::ensure!(
            (65..=1024 * 1024).contains(&self.max_inflight_response_mb),
            "max_inflight_response_mb must be 65..=1048576 (one 64 MiB answer must fit), got {}",
            self.max_inflight_response_mb
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.max_concurrent_streams),
            "max_concurrent_streams must be 1..=10000"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.max_connections),
            "max_connections must be 1..=1000000, got {}",
            self.max_connections
        );
        anyhow::ensure!(
            (1..=1024 * 1024).contains(&self.store_cache_mb),
            "store_cache_mb must be 1..=1048576, got {}",
            self.store_cache_mb
        );
        anyhow::ensure!(
            self.index_memory_mb <= 4_094 * self.index_threads,
            "index_memory_mb must be at most 4094 per index thread ({} for {} threads): tantivy takes under 4 GiB per thread, got {}",
            4_094 * self.index_threads,
            self.index_threads,
            self.index_memory_mb
        );
        anyhow::ensure!(
            self.index_memory_mb >= 16 * self.index_threads,
            "index_memory_mb must be at least 16 per index thread ({} for {} threads): tantivy needs 15 MiB per thread",
            16 * self.index_threads,
            self.index_threads
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file holding `contents` (kept while the dir lives).
    fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("verbatim.toml");
        std::fs::write(&file, contents).unwrap();
        (dir, file)
    }

    /// The config from a file holding `contents` and no flags.
    fn resolve_file(contents: &str) -> anyhow::Result<Config> {
        let (_dir, file) = config_file(contents);
        ServeArgs {
            config: Some(file),
            ..Default::default()
        }
        .resolve()
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let (_dir, file) = config_file("data_dir = \"/srv/v\"\nwrite_queue = 7\n");
        let config = ServeArgs {
            config: Some(file),
            write_queue: Some(9),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/v"));
        assert_eq!(config.write_queue, 9);
        assert_eq!(
            config.refresh_interval_ms,
            Config::default().refresh_interval_ms
        );
    }

    #[test]
    fn the_store_cache_is_bounded_and_read_from_the_file() {
        let config = resolve_file("store_cache_mb = 64\n").unwrap();
        assert_eq!(config.store_cache_mb, 64);
        assert_eq!(Config::default().store_cache_mb, 128);
        let error = ServeArgs {
            store_cache_mb: Some(0),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.to_string().contains("store_cache_mb"), "{error}");
    }

    /// The README's example config file parses, names every setting and
    /// nothing else, and holds valid values.
    #[test]
    fn the_readme_config_example_is_a_valid_config() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```toml\nlisten = ")
            .expect("the README's config example");
        let body = &readme[start + "```toml\n".len()..];
        let body = &body[..body.find("```").expect("the example's end")];
        let config: Config = toml::from_str(body).expect("the example parses");
        config.validate().expect("the example's values are valid");
        let named: std::collections::BTreeSet<String> = body
            .lines()
            .filter_map(|line| {
                line.split_once(" = ")
                    .map(|(key, _)| key.trim().to_string())
            })
            .collect();
        let every: std::collections::BTreeSet<String> =
            match toml::Value::try_from(Config::default()).expect("the defaults serialise") {
                toml::Value::Table(table) => table.keys().cloned().collect(),
                other => panic!("not a table: {other:?}"),
            };
        // Settings without a default value (None) serialise to nothing.
        let optional = [
            "auth",
            "keys_file",
            "redact",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "metrics_listen",
        ];
        let missing: Vec<&String> = every.iter().filter(|key| !named.contains(*key)).collect();
        assert!(missing.is_empty(), "the README's example lacks {missing:?}");
        for key in optional {
            assert!(named.contains(key), "the README's example lacks {key}");
        }
        assert!(config.search_spread == Switch::On);
        let off = resolve_file("search_spread = \"off\"\n").unwrap();
        assert!(off.search_spread == Switch::Off);
        assert!(config.index_phrases == Switch::On);
        let off = resolve_file("index_phrases = \"off\"\n").unwrap();
        assert!(off.index_phrases == Switch::Off);
    }

    /// Found by probing: absurd sizes panicked at start or wrapped to 0, and
    /// an invalid log filter was replaced by the default without a word.
    #[test]
    fn absurd_settings_are_refused_with_the_setting_named() {
        for (line, setting) in [
            ("write_queue = 2305843009213693952", "write_queue"),
            ("analysis_queue = 2305843009213693952", "analysis_queue"),
            ("search_queue = 2305843009213693952", "search_queue"),
            (
                "max_inflight_request_mb = 17592186044416",
                "max_inflight_request_mb",
            ),
            (
                "max_inflight_response_mb = 17592186044416",
                "max_inflight_response_mb",
            ),
            ("max_inflight_response_mb = 64", "max_inflight_response_mb"),
            ("index_memory_mb = 17592186044416", "index_memory_mb"),
            (
                "shutdown_grace_ms = 18446744073709551615",
                "shutdown_grace_ms",
            ),
            ("shutdown_grace_ms = 3600001", "shutdown_grace_ms"),
            ("log_filter = \"verbatim=loud\"", "log_filter"),
            ("data_dir = \"\"", "data_dir"),
        ] {
            let error = resolve_file(&format!("{line}\n")).unwrap_err();
            assert!(error.to_string().contains(setting), "{line}: {error}");
        }
        // The largest values allowed still start.
        resolve_file(
            "write_queue = 1000000\nmax_inflight_request_mb = 1048576\nmax_inflight_response_mb = 1048576\nindex_memory_mb = 8188\n",
        )
        .unwrap();
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let error = resolve_file("listen_addr = \"x\"\n").unwrap_err();
        assert!(error.to_string().contains("listen_addr"), "{error}");
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(ServeArgs::default().resolve().unwrap().metrics_listen, None);
        let (_dir, file) = config_file("metrics_listen = \"127.0.0.1:9464\"\n");
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            from_file.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let flag = ServeArgs {
            config: Some(file),
            metrics_listen: Some("0.0.0.0:9999".parse().unwrap()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(flag.metrics_listen, Some("0.0.0.0:9999".parse().unwrap()));
    }
}
