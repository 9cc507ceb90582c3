//! Wires the store, the index, the engine and the gRPC services; binds the
//! listener; runs until a shutdown signal and then stops in order: stop
//! accepting, finish in-flight requests, commit the index.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::{AuthMode, Authenticator, KeysFile};
use crate::config::{Config, Switch};
use crate::domain::TenantId;
use crate::engine::{
    tenant_dir, tenants_on_disk, Engine, RedactionSettings, RedactionSource, RequestContext,
    Tenants,
};
use crate::index::{IndexSettings, SearchIndex, Spread};
use crate::nlp::{AnalysisPool, ModelPaths};
use crate::redact::RedactionPolicy;
use crate::store::Store;

pub struct App {
    listener: TcpListener,
    router: crate::grpc::ApiRouter,
    tenants: Arc<Tenants>,
    shutdown_grace: Duration,
    /// Set when the shutdown grace has passed: client streams take no more
    /// messages.
    streams_end: tokio::sync::watch::Sender<bool>,
    /// gRPC connections held at once (`--max-connections`, lowered to what
    /// the open-file limit leaves room for).
    max_connections: usize,
    /// `--tls-cert`: TLS on the gRPC listener.
    tls: Option<Arc<crate::grpc::tls::TlsReloader>>,
    /// The Prometheus endpoint's listener (`--metrics-listen`) and the hooks
    /// that refresh the store and index gauges and the byte budgets' gauges
    /// when it is scraped.
    metrics: Option<(TcpListener, [crate::metrics::ScrapeHook; 2])>,
}

/// What every tenant's engine shares, and how to open one.
#[derive(Clone)]
struct TenantOpener {
    config: Arc<Config>,
    analysis: Option<AnalysisPool>,
    auth: Arc<Authenticator>,
    writable: Arc<AllWritable>,
}

/// Whether every open tenant's store can take writes: health reports
/// NOT_SERVING while one cannot (a full or read-only disk hits them all,
/// whichever tenant writes first).
struct AllWritable {
    unwritable: std::sync::Mutex<std::collections::BTreeSet<TenantId>>,
    tx: tokio::sync::watch::Sender<bool>,
}

impl AllWritable {
    fn new() -> Arc<AllWritable> {
        Arc::new(AllWritable {
            unwritable: Default::default(),
            tx: tokio::sync::watch::channel(true).0,
        })
    }

    fn set(&self, tenant: &TenantId, writable: bool) {
        let mut unwritable = self.unwritable.lock().unwrap_or_else(|e| e.into_inner());
        if writable {
            unwritable.remove(tenant);
        } else {
            unwritable.insert(tenant.clone());
        }
        let all = unwritable.is_empty();
        self.tx
            .send_if_modified(|current| std::mem::replace(current, all) != all);
    }

    /// Follows one tenant's store for as long as it is open.
    fn watch(self: &Arc<Self>, tenant: TenantId, mut writable: tokio::sync::watch::Receiver<bool>) {
        let all = self.clone();
        tokio::spawn(async move {
            loop {
                let now = *writable.borrow_and_update();
                all.set(&tenant, now);
                if writable.changed().await.is_err() {
                    all.set(&tenant, true);
                    return;
                }
            }
        });
    }
}

impl TenantOpener {
    /// A tenant's redaction settings: for the default tenant `--redact`
    /// when given, else the keys file's `[tenants.NAME]` (re-read when the
    /// file changes).
    fn redaction(&self, tenant: &TenantId) -> RedactionSource {
        let flag = match (&self.config.redact, tenant.is_default()) {
            (Some(list), true) => Some(RedactionSettings {
                policy: RedactionPolicy::parse_list(list).unwrap_or_default(),
                keep_original: self.config.redact_keep_original,
            }),
            _ => None,
        };
        let auth = self.auth.clone();
        let tenant = tenant.clone();
        Arc::new(move || {
            if let Some(settings) = &flag {
                return settings.clone();
            }
            let settings = auth.tenant_settings(&tenant);
            RedactionSettings {
                policy: RedactionPolicy {
                    kinds: settings.redact,
                },
                keep_original: settings.keep_original,
            }
        })
    }

    /// Opens the store, the index, the taxonomy and the background analysis
    /// of one tenant (its folder is created if missing).
    async fn open(&self, tenant: &TenantId) -> anyhow::Result<Engine> {
        let config = &self.config;
        let dir = tenant_dir(&config.data_dir, tenant);
        prepare_data_dir(&dir)?;
        let store = Store::open_with_cache(
            &dir,
            config.write_queue,
            config.store_cache_mb * 1024 * 1024,
        )
        .with_context(|| format!("cannot open the store of tenant {tenant}"))?;
        let settings = IndexSettings {
            refresh_interval: Duration::from_millis(config.refresh_interval_ms),
            writer_threads: config.index_threads,
            writer_memory_bytes: config.index_memory_mb * 1024 * 1024,
            similarity_index: config.similarity_index == crate::config::Switch::On,
            phrase_pairs: config.index_phrases == crate::config::Switch::On,
            similarity_threads: config.search_threads + 4,
            // The indexer's share of a shutdown, after the requests' own.
            stop_drain: Duration::from_millis(config.shutdown_grace_ms),
        };
        let index_store = store.clone();
        let index =
            tokio::task::spawn_blocking(move || SearchIndex::open(&dir, index_store, settings))
                .await?
                .with_context(|| format!("cannot open the index of tenant {tenant}"))?;
        // One read pool serves every tenant: the default tenant's (others
        // take it, `with_read_pool_of`), with the threads searches spread over.
        let spread = match (tenant.is_default(), config.search_spread) {
            (true, Switch::On) => Spread::new(config.search_threads)
                .context("cannot start the threads searches spread their segments over")?,
            _ => None,
        };
        let engine = Engine::new(store.clone(), index, self.analysis.clone())
            .with_read_pool(config.search_threads, config.search_queue, spread)
            .with_redaction(self.redaction(tenant));
        // The last step that can fail: it spawns the background re-tag (which
        // holds the engine) only once everything before it succeeded.
        if let Err(error) = engine.start_themes().await {
            // The indexer thread holds the store (and its file lock): stop
            // it, so that the next call can open the tenant again.
            let index = engine.index().clone();
            drop((engine, store));
            tokio::task::spawn_blocking(move || index.shutdown()).await?;
            return Err(anyhow::Error::from(error)
                .context(format!("cannot load the theme taxonomy of tenant {tenant}")));
        }
        if let Some(pool) = &self.analysis {
            crate::enrichment::spawn(store, pool.clone(), engine.theme_state());
        }
        self.writable.watch(tenant.clone(), engine.writable());
        // For the log line only: the tenant is open either way.
        match engine.stats(&RequestContext::internal()).await {
            Ok(stats) => tracing::info!(
                %tenant,
                items = stats.store.items,
                pending_index_changes = stats.store.pending_changes,
                taxonomy_version = stats.taxonomy_version,
                "store opened"
            ),
            Err(error) => {
                tracing::warn!(%tenant, %error, "store opened; its statistics cannot be read")
            }
        }
        Ok(engine)
    }
}

impl App {
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        prepare_data_dir(&config.data_dir)?;
        let keys_path = config.keys_path();
        let keys = KeysFile::load(&keys_path)?;
        let mode = AuthMode::resolve(config.auth, &keys, &keys_path, config.listen)?;
        // Without `--auth` and without keys: anonymous until a key is added.
        let until_keys = config.auth.is_none();
        let auth =
            Arc::new(Authenticator::open(mode, &keys_path)?.anonymous_until_keys(until_keys));
        match mode {
            AuthMode::Required => tracing::info!(
                keys_file = %keys_path.display(),
                active_keys = keys.active_keys(),
                "API keys required"
            ),
            AuthMode::Off => tracing::warn!(
                listen = %config.listen,
                "AUTHENTICATION IS OFF: anyone who can reach this address can read, change and \
                 erase all data (one tenant, every role). For local use only; {}",
                if until_keys {
                    "keys are required as soon as `verbatim keys add` creates one"
                } else {
                    "create keys with `verbatim keys add` and serve with --auth required"
                }
            ),
        }
        let analysis = match config.analysis {
            Switch::Off => {
                tracing::info!("analysis is off (--analysis off)");
                None
            }
            Switch::On => {
                let paths = ModelPaths::new(&config.models_dir)
                    .with_encoder(&config.models_dir.join(&config.encoder));
                let (threads, queue) = (config.analysis_threads, config.analysis_queue);
                Some(
                    tokio::task::spawn_blocking(move || AnalysisPool::start(&paths, threads, queue))
                        .await?
                        .context("cannot start the analysis engine (run with --analysis off to serve without it)")?,
                )
            }
        };
        let all_writable = AllWritable::new();
        let writable = all_writable.tx.subscribe();
        let opener = TenantOpener {
            config: Arc::new(config.clone()),
            analysis,
            auth: auth.clone(),
            writable: all_writable,
        };
        let default = TenantId::default_tenant();
        let default_engine = opener.open(&default).await?;
        let shared = default_engine.clone();
        let open_tenant = opener.clone();
        let tenants = Tenants::new(Box::new(move |tenant: TenantId| {
            let opener = open_tenant.clone();
            let shared = shared.clone();
            Box::pin(async move { Ok(opener.open(&tenant).await?.with_read_pool_of(&shared)) })
        }));
        tenants.insert(default, default_engine);
        // Tenants with data open now, so their analysis backlog drains
        // without waiting for a call. One that cannot be opened (a damaged
        // or unreadable store) does not keep the others down: it is logged,
        // its calls answer UNAVAILABLE with the cause, and a call tries to
        // open it again once `RETRY_OPEN_AFTER` has passed.
        for tenant in tenants_on_disk(&config.data_dir) {
            if tenants.get(&tenant).await.is_err() {
                tracing::warn!(%tenant, "serving without this tenant until it can be opened");
            }
        }
        let limits = crate::grpc::TransportLimits {
            max_inflight_request_bytes: config.max_inflight_request_mb * 1024 * 1024,
            max_inflight_response_bytes: config.max_inflight_response_mb * 1024 * 1024,
            max_concurrent_streams: config.max_concurrent_streams,
        };
        let (streams_end, streams_end_rx) = tokio::sync::watch::channel(false);
        let (router, _health, budget_gauges) =
            crate::grpc::router(tenants.clone(), auth, writable, streams_end_rx, limits).await?;
        let fd_limit = crate::grpc::listen::raise_fd_limit();
        let max_connections = crate::grpc::listen::connection_cap(config.max_connections, fd_limit);
        if max_connections < config.max_connections {
            tracing::warn!(
                open_file_limit = fd_limit,
                max_connections,
                asked = config.max_connections,
                "the open-file limit (ulimit -n) leaves room for fewer connections than \
                 --max-connections asks"
            );
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen for metrics on {addr} (--metrics-listen)")
                })?;
                Some((listener, [scrape_tenants(tenants.clone()), budget_gauges]))
            }
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::grpc::tls::TlsReloader::load(
                crate::grpc::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: config.tls_client_ca.clone(),
                },
            )?)),
            _ => None,
        };
        Ok(App {
            listener,
            router,
            tls,
            tenants,
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
            streams_end,
            max_connections,
            metrics,
        })
    }

    /// The bound address of the Prometheus endpoint, if it is on.
    pub fn metrics_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.metrics
            .as_ref()
            .map(|(listener, _)| listener.local_addr())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains and commits.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        // The endpoint stops when `metrics_stop` is dropped: after the
        // drain below, or on any early return.
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = match self.metrics {
            None => None,
            Some((listener, hook)) => {
                let metrics_addr = listener.local_addr()?;
                tracing::info!(%metrics_addr, "metrics on http://{metrics_addr}/metrics");
                let server = crate::metrics::http::serve(listener, async {
                    let _ = metrics_stopped.await;
                });
                Some((tokio::spawn(server), hook))
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async {
            let _ = stop_rx.await;
        };
        type Serving<'a> = std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send + 'a>,
        >;
        let mut serve: Serving = match self.tls {
            Some(tls) => {
                tracing::info!(%addr, tls = true, "listening");
                Box::pin(self.router.serve_with_incoming_shutdown(
                    crate::grpc::tls::incoming(self.listener, tls, self.max_connections),
                    stop,
                ))
            }
            None => {
                tracing::info!(%addr, "listening");
                let incoming = crate::grpc::listen::incoming(
                    self.listener,
                    self.max_connections,
                    |stream, _| std::future::ready(Some(stream)),
                );
                Box::pin(self.router.serve_with_incoming_shutdown(incoming, stop))
            }
        };
        tokio::select! {
            result = &mut serve => result.context("gRPC server failed")?,
            () = shutdown => {
                let _ = stop_tx.send(());
                // In-flight requests get the grace period to finish. An idle
                // client connection can keep hyper's graceful shutdown waiting
                // forever (hyperium/hyper#4170), so the wait is bounded.
                match tokio::time::timeout(self.shutdown_grace, &mut serve).await {
                    Ok(result) => result.context("gRPC server failed")?,
                    Err(_) => {
                        tracing::info!(
                            grace_ms = self.shutdown_grace.as_millis() as u64,
                            "closing connections still open after the shutdown grace period"
                        );
                        // Streams still open stop reading: what they sent
                        // before is answered, they end UNAVAILABLE, and the
                        // index drain below has no moving target.
                        let _ = self.streams_end.send(true);
                        // Time for their last answers to go out (a
                        // connection whose streams all ended closes; an
                        // idle one would hold this to the end).
                        let _ = tokio::time::timeout(STREAMS_END_WAIT, &mut serve).await;
                    }
                }
            }
        }
        if let Some((server, hook)) = metrics {
            drop(metrics_stop);
            let _ = server.await;
            drop(hook);
        }
        tracing::info!("requests drained; committing the index");
        // Every tenant's indexer drains and commits at the same time: a
        // shutdown takes one drain, however many tenants are open.
        let stopping: Vec<_> = self
            .tenants
            .open_tenants()
            .into_iter()
            .map(|(tenant, engine)| {
                let index = engine.index().clone();
                (
                    tenant,
                    tokio::task::spawn_blocking(move || index.shutdown()),
                )
            })
            .collect();
        for (tenant, stopped) in stopping {
            stopped.await?;
            tracing::debug!(%tenant, "index committed");
        }
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// How long client streams still open at the end of the shutdown grace get
/// to send their last answers after they stop reading.
const STREAMS_END_WAIT: Duration = Duration::from_millis(500);

/// Keeps the gauges read at scrape time up to date, for every open tenant:
/// the index's documents and size, the analysis backlog, and the store
/// writers' queues (summed).
fn scrape_tenants(tenants: Arc<Tenants>) -> crate::metrics::ScrapeHook {
    use crate::metrics::pool;
    crate::metrics::on_scrape(move || {
        let mut write_queue = 0;
        for (tenant, engine) in tenants.open_tenants() {
            let index = engine.index();
            crate::metrics::set_index_stats(
                tenant.as_str(),
                index.documents(),
                index.size_bytes(),
                index.segments(),
            );
            write_queue += engine.store().write_queue_depth();
            match engine.store().stats() {
                Ok(stats) => {
                    crate::metrics::set_analysis_backlog(tenant.as_str(), stats.analysis_backlog)
                }
                Err(error) => {
                    tracing::debug!(%error, %tenant, "metrics: cannot read the store's stats")
                }
            }
        }
        crate::metrics::set_queue_depth(pool::WRITE, write_queue);
    })
}

/// Creates the data dir and checks that it can be written. A full disk
/// does not stop the start of a dir that holds a store: the store then
/// opens with writes refused (UNAVAILABLE, health NOT_SERVING) and serves
/// reads until there is room again (`Store::open`), as a running server
/// does when its disk fills up. A new store is not created on a full disk
/// (a half-created file would not open later).
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    match crate::store::write_probe(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.raw_os_error() == Some(28) && Store::exists_in(dir) => {
            tracing::warn!(
                dir = %dir.display(),
                %error,
                "the data dir's disk is full: starting with writes refused until there is room"
            );
            Ok(())
        }
        Err(error) => {
            Err(error).with_context(|| format!("the data dir {} is not writable", dir.display()))
        }
    }
}

/// Resolves on SIGTERM, SIGINT or SIGHUP. The handlers are installed when this is
/// called, not when the future is first polled: call it before binding, so a
/// signal that arrives while the server starts is a clean shutdown, not the
/// default kill.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        // The terminal of a server started by hand went away: a clean stop
        // too (the default action killed it without a commit).
        let hangup = signal(SignalKind::hangup());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for {name}");
                        std::future::pending::<()>().await
                    }
                }
            };
            tokio::select! {
                _ = wait(interrupt, "SIGINT") => tracing::info!("SIGINT received; shutting down"),
                _ = wait(terminate, "SIGTERM") => tracing::info!("SIGTERM received; shutting down"),
                _ = wait(hangup, "SIGHUP") => tracing::info!("SIGHUP received; shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received; shutting down");
    }
}
