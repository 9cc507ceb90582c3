//! Process-wide metrics, exposed in the Prometheus text exposition format
//! 0.0.4 (`render`, served by `http::serve` when `--metrics-listen` is set).
//!
//! The primitives are lock-free on the hot path: a `Counter` and a `Gauge`
//! are one atomic, a `Histogram` an atomic per bucket plus the sum (f64
//! bits). A `Family` keys its series by label values; looking a series up
//! takes a read lock on the family's map and clones one `Arc`, which callers
//! then update as often as they like. Recording is always on (a few atomic
//! operations per call); only the endpoint is off by default.
//!
//! Values the process does not see happen (index size, documents, backlog,
//! the write queue) are refreshed by callbacks registered with `on_scrape`,
//! which `render` runs first.
//!
//! Every label value set is bounded: a family keeps at most `MAX_SERIES`
//! series; further label sets are counted under `_overflow` values (and
//! logged once), so a caller cannot grow the registry without bound.

pub mod http;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

/// Series one family keeps at most (per metric name).
pub const MAX_SERIES: usize = 10_000;
/// The label value a family uses for label sets beyond `MAX_SERIES`.
const OVERFLOW: &str = "_overflow";

/// Tenant label of the index and backlog gauges until tenants exist.
pub const DEFAULT_TENANT: &str = "default";

/// Pool label values of `verbatim_pool_queue_depth` and `verbatim_pool_batch_size`.
pub mod pool {
    /// Searches and reports waiting for a read thread (`engine/reads.rs`).
    pub const SEARCH: &str = "search";
    /// Analysis jobs waiting for the inference thread; batch = texts per pass.
    pub const ANALYSIS: &str = "analysis";
    /// Writes waiting in the store writer's queue; batch = items per transaction.
    pub const WRITE: &str = "write";
    /// Ingest batches accepted and not yet durable; batch = items per Ingest
    /// request or IngestStream message.
    pub const INGEST: &str = "ingest";
}

/// Upper bounds of latency buckets, in seconds (0.5 ms to 30 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of batch-size buckets (items or texts).
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];
/// Upper bounds of the ingest-to-searchable buckets, in seconds.
pub const FRESHNESS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Sets a count (saturating at `i64::MAX`).
    pub fn set_count(&self, value: impl TryInto<i64>) {
        self.set(value.try_into().unwrap_or(i64::MAX));
    }

    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one now and takes it back when the guard drops.
    pub fn track(self: Arc<Self>) -> GaugeGuard {
        self.add(1);
        GaugeGuard(self)
    }
}

/// One unit of a gauge, held for as long as the guard lives.
#[must_use = "the gauge goes down again when the guard drops"]
pub struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// Observations counted into fixed buckets, with their sum. Buckets are
/// stored apart (not cumulative) and summed when rendered, so `_count` and
/// the `+Inf` bucket are the same number even while observations arrive.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
}

impl Histogram {
    /// `bounds` must be finite and increasing.
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Counts `value` in the first bucket whose bound is >= it; NaN is ignored.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// Cumulative counts per bound (the last is `+Inf`, the total) and the sum.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0u64;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        (
            cumulative,
            f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
        )
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// What a family holds: how it is made and written out.
pub trait Metric: Send + Sync + 'static {
    /// The `# TYPE` of the family.
    const KIND: &'static str;
    /// A new series; `buckets` are the family's (histograms only).
    fn create(buckets: &'static [f64]) -> Self;
    /// Writes the series' sample lines; `labels` is rendered, may be empty.
    fn render(&self, name: &str, labels: &str, out: &mut String);
}

fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name}{suffix} {value}");
    } else {
        let _ = writeln!(out, "{name}{suffix}{{{labels}}} {value}");
    }
}

impl Metric for Counter {
    const KIND: &'static str = "counter";

    fn create(_: &'static [f64]) -> Self {
        Counter::default()
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, "", labels, self.get());
    }
}

impl Metric for Gauge {
    const KIND: &'static str = "gauge";

    fn create(_: &'static [f64]) -> Self {
        Gauge::default()
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, "", labels, self.get());
    }
}

impl Metric for Histogram {
    const KIND: &'static str = "histogram";

    fn create(buckets: &'static [f64]) -> Self {
        Histogram::new(buckets)
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let (cumulative, sum) = self.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&cumulative) {
            let le = format!("{labels}{sep}le=\"{}\"", float(*bound));
            sample(out, name, "_bucket", &le, count);
        }
        let total = *cumulative.last().expect("the +Inf bucket");
        sample(
            out,
            name,
            "_bucket",
            &format!("{labels}{sep}le=\"+Inf\""),
            total,
        );
        sample(out, name, "_sum", labels, float(sum));
        sample(out, name, "_count", labels, total);
    }
}

/// A float as the exposition format writes it (`+Inf`, `-Inf`, `NaN`).
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

/// A label value escaped for the exposition format: backslash, double
/// quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escaped: backslash and line feed.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Series of one metric name, keyed by their label values (in the order of
/// the label names).
pub struct Family<M> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    series: RwLock<HashMap<Vec<String>, Arc<M>>>,
    overflowed: AtomicBool,
}

impl<M: Metric> Family<M> {
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        let family = Family {
            name,
            help,
            labels,
            buckets,
            series: RwLock::new(HashMap::new()),
            overflowed: AtomicBool::new(false),
        };
        // A metric without labels is one series, shown from the start.
        if labels.is_empty() {
            family.with(&[]);
        }
        family
    }

    /// The series for these label values (one per label name), created on
    /// first use.
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Some(series) = self.read().get(&key) {
            return series.clone();
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        let key = if map.len() >= MAX_SERIES && !map.contains_key(&key) {
            if !self.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    metric = self.name,
                    limit = MAX_SERIES,
                    "metric has too many label sets; further ones are counted as _overflow"
                );
            }
            vec![OVERFLOW.to_owned(); self.labels.len()]
        } else {
            key
        };
        map.entry(key)
            .or_insert_with(|| Arc::new(M::create(self.buckets)))
            .clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Vec<String>, Arc<M>>> {
        self.series.read().unwrap_or_else(|e| e.into_inner())
    }

    /// HELP, TYPE and every series, sorted by label values.
    fn render(&self, out: &mut String) {
        let mut series: Vec<(Vec<String>, Arc<M>)> = self
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, M::KIND);
        for (values, metric) in series {
            let labels = self
                .labels
                .iter()
                .zip(&values)
                .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
                .collect::<Vec<_>>()
                .join(",");
            metric.render(self.name, &labels, out);
        }
    }
}

type Hook = Arc<dyn Fn() + Send + Sync>;

/// The registry: every metric family the server exports.
pub struct Metrics {
    pub rpc_requests: Family<Counter>,
    pub rpc_duration: Family<Histogram>,
    pub rpc_in_flight: Family<Gauge>,
    pub pool_queue_depth: Family<Gauge>,
    pub pool_batch_size: Family<Histogram>,
    pub model_inference: Family<Histogram>,
    pub index_commit: Family<Histogram>,
    pub index_documents: Family<Gauge>,
    pub index_size_bytes: Family<Gauge>,
    pub index_segments: Family<Gauge>,
    pub ingest_to_searchable: Family<Histogram>,
    pub analysis_backlog: Family<Gauge>,
    pub filter_cache_lookups: Family<Counter>,
    pub filter_cache_bytes: Family<Gauge>,
    pub retag_items: Family<Counter>,
    pub inflight_bytes: Family<Gauge>,
    hooks: Mutex<Vec<(u64, Hook)>>,
    next_hook: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            rpc_requests: Family::new(
                "verbatim_rpc_requests_total",
                "gRPC calls finished, by method, tenant and gRPC status code.",
                &["method", "tenant", "code"],
                &[],
            ),
            rpc_duration: Family::new(
                "verbatim_rpc_duration_seconds",
                "gRPC call duration in seconds, from the request head until the response ends (a stream's trailers).",
                &["method", "tenant"],
                LATENCY_BUCKETS,
            ),
            rpc_in_flight: Family::new(
                "verbatim_rpc_in_flight",
                "gRPC calls in progress.",
                &["method"],
                &[],
            ),
            pool_queue_depth: Family::new(
                "verbatim_pool_queue_depth",
                "Work waiting in a pool: search (calls waiting for a read thread), analysis (jobs waiting for inference), write (store writes queued), ingest (batches accepted, not yet durable).",
                &["pool"],
                &[],
            ),
            pool_batch_size: Family::new(
                "verbatim_pool_batch_size",
                "Size of the batches a pool works on: analysis (texts per inference pass), write (items per store transaction), ingest (items per ingest batch).",
                &["pool"],
                BATCH_BUCKETS,
            ),
            model_inference: Family::new(
                "verbatim_model_inference_seconds",
                "Duration of one inference pass of the analysis thread, in seconds.",
                &["model"],
                LATENCY_BUCKETS,
            ),
            index_commit: Family::new(
                "verbatim_index_commit_seconds",
                "Duration of an index commit (prepare and commit), in seconds.",
                &[],
                LATENCY_BUCKETS,
            ),
            index_documents: Family::new(
                "verbatim_index_documents",
                "Documents in the search index (refreshed at scrape time).",
                &["tenant"],
                &[],
            ),
            index_size_bytes: Family::new(
                "verbatim_index_size_bytes",
                "Bytes of the search index's files on disk (refreshed at scrape time).",
                &["tenant"],
                &[],
            ),
            index_segments: Family::new(
                "verbatim_index_segments",
                "Segments the search index's reader searches (refreshed at scrape time).",
                &["tenant"],
                &[],
            ),
            ingest_to_searchable: Family::new(
                "verbatim_ingest_to_searchable_seconds",
                "Time from an item version being stored until the index commit that makes it searchable, in seconds.",
                &[],
                FRESHNESS_BUCKETS,
            ),
            analysis_backlog: Family::new(
                "verbatim_analysis_backlog",
                "Stored item versions waiting for the background analysis (refreshed at scrape time).",
                &["tenant"],
                &[],
            ),
            filter_cache_lookups: Family::new(
                "verbatim_filter_cache_lookups_total",
                "Lookups of a filter clause's cached bits for one index segment, by result: hit, or miss (the clause matched afresh and its bits kept).",
                &["result"],
                &[],
            ),
            filter_cache_bytes: Family::new(
                "verbatim_filter_cache_bytes",
                "Bytes of filter clauses' bits held in the filter cache.",
                &[],
                &[],
            ),
            retag_items: Family::new(
                "verbatim_retag_items_total",
                "Stored items a re-tag after a theme edit brought to the new taxonomy version, by outcome: confirmed (same mentions: the version recorded, nothing rewritten or re-indexed) or rewritten (new mentions: the item rewritten and re-indexed).",
                &["outcome"],
                &[],
            ),
            inflight_bytes: Family::new(
                "verbatim_inflight_bytes",
                "Bytes counted against the transport's budgets (refreshed at scrape time): request (received, not yet answered; --max-inflight-request-mb) and response (answers built, not yet taken by the transport: clients reading slowly or not at all; --max-inflight-response-mb).",
                &["direction"],
                &[],
            ),
            hooks: Mutex::new(Vec::new()),
            next_hook: AtomicU64::new(0),
        }
    }

    /// Registers a callback run before every render; returns its id for
    /// `remove_scrape_hook`.
    pub fn add_scrape_hook(&self, hook: impl Fn() + Send + Sync + 'static) -> u64 {
        let id = self.next_hook.fetch_add(1, Ordering::Relaxed);
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Arc::new(hook)));
        id
    }

    pub fn remove_scrape_hook(&self, id: u64) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(hook, _)| *hook != id);
    }

    /// Runs the scrape hooks (outside the hook lock), then writes every
    /// family in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let hooks: Vec<Hook> = self
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, hook)| hook.clone())
            .collect();
        for hook in hooks {
            hook();
        }
        let mut out = String::with_capacity(16 * 1024);
        self.rpc_requests.render(&mut out);
        self.rpc_duration.render(&mut out);
        self.rpc_in_flight.render(&mut out);
        self.pool_queue_depth.render(&mut out);
        self.pool_batch_size.render(&mut out);
        self.model_inference.render(&mut out);
        self.index_commit.render(&mut out);
        self.index_documents.render(&mut out);
        self.index_size_bytes.render(&mut out);
        self.index_segments.render(&mut out);
        self.ingest_to_searchable.render(&mut out);
        self.analysis_backlog.render(&mut out);
        self.filter_cache_lookups.render(&mut out);
        self.filter_cache_bytes.render(&mut out);
        self.retag_items.render(&mut out);
        self.inflight_bytes.render(&mut out);
        out
    }
}

/// The process-wide registry.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The exposition text of the process-wide registry (scrape hooks run first).
pub fn render() -> String {
    METRICS.render()
}

/// A scrape hook of the process-wide registry; removed when dropped.
#[must_use = "the hook is removed when this is dropped"]
pub struct ScrapeHook(u64);

impl Drop for ScrapeHook {
    fn drop(&mut self) {
        METRICS.remove_scrape_hook(self.0);
    }
}

/// Runs `f` before every render of the process-wide registry, for values
/// read when scraped (index size, backlog), until the returned guard drops.
pub fn on_scrape(f: impl Fn() + Send + Sync + 'static) -> ScrapeHook {
    ScrapeHook(METRICS.add_scrape_hook(f))
}

// One-line hooks for the rest of the crate.

/// A finished RPC: its count by code and its duration.
pub fn record_rpc(method: &str, tenant: &str, code: &str, elapsed: Duration) {
    METRICS.rpc_requests.with(&[method, tenant, code]).inc();
    METRICS
        .rpc_duration
        .with(&[method, tenant])
        .observe_duration(elapsed);
}

/// The in-flight gauge of an RPC method (`track` it for the call).
pub fn rpc_in_flight(method: &str) -> Arc<Gauge> {
    METRICS.rpc_in_flight.with(&[method])
}

/// The queue-depth gauge of a pool (`pool::*`), to `set` or `track`.
pub fn queue_depth(pool: &str) -> Arc<Gauge> {
    METRICS.pool_queue_depth.with(&[pool])
}

pub fn set_queue_depth(pool: &str, depth: usize) {
    queue_depth(pool).set_count(depth);
}

pub fn observe_batch_size(pool: &str, size: usize) {
    METRICS.pool_batch_size.with(&[pool]).observe(size as f64);
}

pub fn observe_inference(model: &str, elapsed: Duration) {
    METRICS
        .model_inference
        .with(&[model])
        .observe_duration(elapsed);
}

pub fn observe_index_commit(elapsed: Duration) {
    METRICS.index_commit.with(&[]).observe_duration(elapsed);
}

pub fn observe_ingest_to_searchable(elapsed: Duration) {
    METRICS
        .ingest_to_searchable
        .with(&[])
        .observe_duration(elapsed);
}

pub fn set_index_stats(tenant: &str, documents: u64, size_bytes: u64, segments: u64) {
    METRICS.index_documents.with(&[tenant]).set_count(documents);
    METRICS
        .index_size_bytes
        .with(&[tenant])
        .set_count(size_bytes);
    METRICS.index_segments.with(&[tenant]).set_count(segments);
}

/// The filter cache's hit and miss counters and its bytes gauge (every
/// cache adds its own bytes to the one gauge).
pub fn filter_cache() -> (Arc<Counter>, Arc<Counter>, Arc<Gauge>) {
    (
        METRICS.filter_cache_lookups.with(&["hit"]),
        METRICS.filter_cache_lookups.with(&["miss"]),
        METRICS.filter_cache_bytes.with(&[]),
    )
}

/// Items a re-tag confirmed (same mentions) or rewrote.
pub fn retag_items(confirmed: usize, rewritten: usize) {
    METRICS
        .retag_items
        .with(&["confirmed"])
        .add(confirmed as u64);
    METRICS
        .retag_items
        .with(&["rewritten"])
        .add(rewritten as u64);
}

/// The bytes counted against the request and response budgets.
pub fn set_inflight_bytes(requests: usize, responses: usize) {
    METRICS
        .inflight_bytes
        .with(&["request"])
        .set_count(requests);
    METRICS
        .inflight_bytes
        .with(&["response"])
        .set_count(responses);
}

pub fn set_analysis_backlog(tenant: &str, items: u64) {
    METRICS.analysis_backlog.with(&[tenant]).set_count(items);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed sample line: name, label pairs (unescaped), value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// Parses exposition text strictly enough to catch format mistakes:
    /// every line is `# HELP name text`, `# TYPE name kind` or
    /// `name{label="value",...} value`, and each sample's family was typed
    /// before it.
    fn parse(text: &str) -> Vec<Sample> {
        fn is_name(s: &str) -> bool {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }
        let mut typed: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        assert!(text.ends_with('\n'), "the text ends with a line feed");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kind, name, value) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap_or(""),
                );
                assert!(is_name(name), "{line}");
                match kind {
                    "HELP" => assert!(!value.is_empty(), "{line}"),
                    "TYPE" => {
                        assert!(["counter", "gauge", "histogram"].contains(&value), "{line}");
                        typed.insert(name.into(), value.into());
                    }
                    _ => panic!("unknown comment {line}"),
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("a name");
            let name = &line[..name_end];
            assert!(is_name(name), "{line}");
            let mut labels = Vec::new();
            let mut rest = &line[name_end..];
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.chars();
                loop {
                    let mut c = chars.next().expect("a label or }");
                    if c == '}' {
                        break;
                    }
                    let mut label = String::new();
                    while c != '=' {
                        label.push(c);
                        c = chars.next().expect("= after a label name");
                    }
                    assert!(is_name(&label), "{line}");
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("closing quote") {
                            '"' => break,
                            '\\' => match chars.next().expect("escape") {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                other => panic!("bad escape \\{other} in {line}"),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((label, value));
                    match chars.next().expect(", or }") {
                        ',' => {}
                        '}' => break,
                        other => panic!("unexpected {other:?} in {line}"),
                    }
                }
                rest = chars.as_str();
            }
            let value = rest.strip_prefix(' ').expect("space before the value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|base| typed.get(*base).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "untyped sample {line}");
            samples.push((name.to_string(), labels, value));
        }
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && l.iter()
                    .zip(labels)
                    .all(|((a, b), (c, d))| a == c && b == d)
        })
    }

    #[test]
    fn renders_parseable_text_with_every_family() {
        let metrics = Metrics::new();
        metrics.rpc_requests.with(&["Search", "-", "OK"]).add(3);
        metrics.rpc_duration.with(&["Search", "-"]).observe(0.003);
        metrics.pool_queue_depth.with(&[pool::WRITE]).set(4);
        metrics.filter_cache_lookups.with(&["hit"]).inc();
        metrics.retag_items.with(&["confirmed"]).add(2);
        let text = metrics.render();
        let samples = parse(&text);
        for family in [
            "verbatim_rpc_requests_total",
            "verbatim_rpc_duration_seconds",
            "verbatim_rpc_in_flight",
            "verbatim_pool_queue_depth",
            "verbatim_pool_batch_size",
            "verbatim_model_inference_seconds",
            "verbatim_index_commit_seconds",
            "verbatim_index_documents",
            "verbatim_index_size_bytes",
            "verbatim_index_segments",
            "verbatim_ingest_to_searchable_seconds",
            "verbatim_analysis_backlog",
            "verbatim_filter_cache_lookups_total",
            "verbatim_filter_cache_bytes",
            "verbatim_retag_items_total",
            "verbatim_inflight_bytes",
        ] {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
        let requests = find(
            &samples,
            "verbatim_rpc_requests_total",
            &[("method", "Search"), ("tenant", "-"), ("code", "OK")],
        );
        assert_eq!(requests.map(|s| s.2), Some(3.0));
        assert_eq!(
            find(&samples, "verbatim_pool_queue_depth", &[("pool", "write")]).map(|s| s.2),
            Some(4.0)
        );
        // Unlabelled histograms are shown before their first observation.
        assert_eq!(
            find(&samples, "verbatim_index_commit_seconds_count", &[]).map(|s| s.2),
            Some(0.0)
        );
        assert!(text.contains(
            "verbatim_rpc_duration_seconds_bucket{method=\"Search\",tenant=\"-\",le=\"0.005\"} 1\n"
        ));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        static BOUNDS: &[f64] = &[0.1, 1.0, 10.0];
        let histogram = Histogram::new(BOUNDS);
        for value in [0.05, 0.1, 0.5, 1.0, 2.0, 10.0, 11.0, 1e9, f64::NAN] {
            histogram.observe(value);
        }
        let (cumulative, sum) = histogram.snapshot();
        // <= 0.1: 0.05, 0.1; <= 1: + 0.5, 1.0; <= 10: + 2, 10; +Inf: + 11, 1e9.
        assert_eq!(cumulative, vec![2, 4, 6, 8]);
        assert_eq!(histogram.count(), 8);
        assert!((sum - (0.05 + 0.1 + 0.5 + 1.0 + 2.0 + 10.0 + 11.0 + 1e9)).abs() < 1e-3);

        let mut out = String::new();
        histogram.render("x_seconds", "a=\"b\"", &mut out);
        let expected = "x_seconds_bucket{a=\"b\",le=\"0.1\"} 2\n\
                        x_seconds_bucket{a=\"b\",le=\"1\"} 4\n\
                        x_seconds_bucket{a=\"b\",le=\"10\"} 6\n\
                        x_seconds_bucket{a=\"b\",le=\"+Inf\"} 8\n";
        assert!(out.starts_with(expected), "{out}");
        assert!(out.ends_with("x_seconds_count{a=\"b\"} 8\n"), "{out}");

        let mut bare = String::new();
        Histogram::new(BOUNDS).render("y", "", &mut bare);
        assert!(bare.starts_with("y_bucket{le=\"0.1\"} 0\n"), "{bare}");
        assert!(bare.contains("y_sum 0\ny_count 0\n"), "{bare}");
    }

    #[test]
    fn label_values_are_escaped_and_parse_back() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("line\nnext"), "line\\nnext");
        let metrics = Metrics::new();
        let nasty = "ten\"ant\\with\nnewline, and {braces}=";
        metrics.analysis_backlog.with(&[nasty]).set(7);
        let samples = parse(&metrics.render());
        assert_eq!(
            find(&samples, "verbatim_analysis_backlog", &[("tenant", nasty)]).map(|s| s.2),
            Some(7.0)
        );
    }

    #[test]
    fn concurrent_increments_are_all_counted() {
        let metrics = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        // Half the threads share a series, half create their own.
                        let tenant = if t % 2 == 0 {
                            "shared".to_string()
                        } else {
                            format!("t{t}")
                        };
                        metrics.rpc_requests.with(&["Get", &tenant, "OK"]).inc();
                        metrics
                            .rpc_duration
                            .with(&["Get", &tenant])
                            .observe(f64::from(i % 3));
                        let in_flight = metrics.rpc_in_flight.with(&["Get"]).track();
                        drop(in_flight);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let shared = metrics.rpc_requests.with(&["Get", "shared", "OK"]).get();
        assert_eq!(shared, 40_000);
        assert_eq!(
            metrics.rpc_requests.with(&["Get", "t1", "OK"]).get(),
            10_000
        );
        let histogram = metrics.rpc_duration.with(&["Get", "shared"]);
        assert_eq!(histogram.count(), 40_000);
        // Sum of (i % 3) over 0..10_000 is 9_999, times four threads.
        assert_eq!(histogram.snapshot().1, 4.0 * 9_999.0);
        assert_eq!(metrics.rpc_in_flight.with(&["Get"]).get(), 0);
    }

    #[test]
    fn label_sets_beyond_the_limit_are_counted_as_overflow() {
        let family: Family<Counter> = Family::new("f_total", "help", &["k"], &[]);
        for i in 0..MAX_SERIES + 5 {
            family.with(&[&i.to_string()]).inc();
        }
        assert_eq!(family.read().len(), MAX_SERIES + 1);
        assert_eq!(family.with(&[OVERFLOW]).get(), 5);
        // Existing series keep working.
        family.with(&["0"]).inc();
        assert_eq!(family.with(&["0"]).get(), 2);
    }

    #[test]
    fn scrape_hooks_run_before_rendering_until_removed() {
        let metrics = Arc::new(Metrics::new());
        let seen = Arc::new(AtomicU64::new(0));
        let id = {
            let (metrics2, seen) = (Arc::downgrade(&metrics), seen.clone());
            metrics.add_scrape_hook(move || {
                let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(m) = metrics2.upgrade() {
                    m.index_documents.with(&[DEFAULT_TENANT]).set_count(n * 10);
                }
            })
        };
        assert!(metrics
            .render()
            .contains("verbatim_index_documents{tenant=\"default\"} 10\n"));
        assert!(metrics
            .render()
            .contains("verbatim_index_documents{tenant=\"default\"} 20\n"));
        metrics.remove_scrape_hook(id);
        metrics.render();
        assert_eq!(seen.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn gauge_guards_give_back_what_they_took() {
        let gauge = Arc::new(Gauge::default());
        let a = gauge.clone().track();
        let b = gauge.clone().track();
        assert_eq!(gauge.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(gauge.get(), 0);
        gauge.set_count(u64::MAX);
        assert_eq!(gauge.get(), i64::MAX);
    }
}
