//! The application core behind every transport: batch validation, writes
//! through the store, reads, searches and analyses. Knows nothing of gRPC.
//!
//! One file per use case, all on the one `Engine` handle: `ingest.rs`
//! (ingest, delete, erasure), `search.rs` (search, similarity, get),
//! `analysis.rs` (analyze, stats), `report.rs` (reports), `themes.rs` (taxonomy edits, the compiled
//! theme model every analysis is tagged with, the background re-tag,
//! discovery). Every operation takes the
//! `RequestContext` (`context.rs`) first and checks its deadline before it
//! starts blocking work.

mod analysis;
mod context;
mod ingest;
mod reads;
mod report;
mod search;
mod tenants;
mod themes;

pub use self::analysis::ServiceStats;
pub use self::context::{Caller, RequestContext};
pub use self::ingest::{IncomingItem, ItemOutcome, RedactionSettings, RedactionSource};
pub use self::tenants::{tenant_dir, tenants_on_disk, OpenTenant, Tenants};
pub(crate) use self::themes::ThemeState;
pub use self::themes::{CandidateReport, DiscoveryReport, ThemeEdit};
pub use crate::store::QueueMode;

use crate::error::{Error, Result};
use crate::index::SearchIndex;
use crate::nlp::AnalysisPool;
use crate::store::Store;

/// The handle every transport calls: the store, the index and the optional
/// analysis pool, shared by the use cases. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    index: SearchIndex,
    analysis: Option<AnalysisPool>,
    themes: std::sync::Arc<ThemeState>,
    reads: std::sync::Arc<reads::ReadPool>,
    redaction: RedactionSource,
}

impl Engine {
    pub fn new(store: Store, index: SearchIndex, analysis: Option<AnalysisPool>) -> Self {
        Engine {
            store,
            index,
            analysis,
            themes: ThemeState::new(),
            reads: std::sync::Arc::new(reads::ReadPool::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
                64,
            )),
            redaction: std::sync::Arc::new(RedactionSettings::default),
        }
    }

    /// Where this tenant's PII redaction settings come from (none by default).
    pub fn with_redaction(mut self, source: RedactionSource) -> Self {
        self.redaction = source;
        self
    }

    /// Searches and reports run on at most `threads` threads; `queue` more
    /// calls wait, the next is RESOURCE_EXHAUSTED (`reads.rs`).
    /// With `spread`, a search alone on the pool spreads its segments over
    /// those threads (`ReadPool::spread_if_idle`).
    pub fn with_read_pool(
        mut self,
        threads: usize,
        queue: usize,
        spread: Option<crate::index::Spread>,
    ) -> Self {
        self.reads = std::sync::Arc::new(reads::ReadPool::new(threads, queue).with_spread(spread));
        self
    }

    /// Shares `other`'s read pool: one pool bounds the searches and reports
    /// of every tenant together.
    pub fn with_read_pool_of(mut self, other: &Engine) -> Self {
        self.reads = other.reads.clone();
        self
    }

    /// The theme state the background analysis tags stored items with.
    pub(crate) fn theme_state(&self) -> std::sync::Arc<ThemeState> {
        self.themes.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    /// Whether writes can succeed now (false while the storage is full or
    /// read-only); health reports NOT_SERVING meanwhile.
    pub fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.store.writable()
    }

    pub fn analysis_enabled(&self) -> bool {
        self.analysis.is_some()
    }
}

/// Longest a search or report waits for the index to apply the removals
/// made before a restart (`Engine::removals_applied`).
const REMOVALS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a waiting read looks again.
const REMOVALS_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a read waits for an indexer that is not running (its last
/// round failed, say) to run again before it is answered UNAVAILABLE: one
/// failed round (retried after 100 ms) must not fail the reads at once.
const INDEXER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Engine {
    /// Removals the index owes before a read may count: after a restart
    /// behind the store, those the store had committed when the index
    /// opened (whatever the indexer does); otherwise, while the indexer is
    /// not running (failing, stopping), any acknowledged removal it has not
    /// applied. 0: none. `running` (the indexer's lock) is asked only
    /// when a removal is not yet applied: not on every search.
    fn removals_owed(&self, running: impl FnOnce() -> bool) -> u64 {
        match self.index.removals_left() {
            0 => match self
                .store
                .last_removal_seq()
                .saturating_sub(self.index.indexed_seq())
            {
                0 => 0,
                _ if running() => 0,
                behind => behind,
            },
            left => left,
        }
    }

    /// Waits until the index owes no removal (`removals_owed`), up to the
    /// caller's deadline and at most `REMOVALS_WAIT`, and at most
    /// `INDEXER_GRACE` while the indexer is not running; then
    /// `IndexError::CatchingUp` (UNAVAILABLE).
    ///
    /// After a restart behind the store, an erasure acknowledged before the
    /// crash is so never counted again by a search or a report. A removal
    /// acknowledged while the server runs is searchable within the refresh
    /// interval, and reads do not wait for it; but while the indexer cannot
    /// apply changes (a full disk, say), one it has not applied would count
    /// on in totals, facets and reports for as long as that lasts, so reads
    /// are UNAVAILABLE meanwhile (found by probing a full disk).
    async fn removals_applied(&self, ctx: &RequestContext) -> Result<()> {
        if self.removals_owed(|| self.index.indexer_running()) == 0 {
            return Ok(());
        }
        let mut running = self.index.indexer_running();
        let started = std::time::Instant::now();
        let cap = started + REMOVALS_WAIT;
        let until = ctx.deadline.map_or(cap, |deadline| deadline.min(cap));
        let mut stalled_since = (!running).then_some(started);
        // A deadline within the grace of a stopped indexer: UNAVAILABLE at
        // once, not DEADLINE_EXCEEDED once it has passed.
        if ctx
            .deadline
            .is_some_and(|deadline| !running && deadline <= started + INDEXER_GRACE)
        {
            let left = self.removals_owed(|| running);
            return Err(crate::index::IndexError::CatchingUp { left }.into());
        }
        loop {
            let left = self.removals_owed(|| running);
            if left == 0 {
                return Ok(());
            }
            // The caller gone: as any read whose deadline passed.
            ctx.check_deadline()?;
            let now = std::time::Instant::now();
            let stalled = stalled_since.is_some_and(|since| now >= since + INDEXER_GRACE);
            if now >= until || stalled {
                return Err(crate::index::IndexError::CatchingUp { left }.into());
            }
            tokio::time::sleep(REMOVALS_POLL).await;
            running = self.index.indexer_running();
            stalled_since = match (running, stalled_since) {
                (true, _) => None,
                (false, since) => since.or(Some(std::time::Instant::now())),
            };
        }
    }
}

/// A request-size rule: 1 to `max` entries.
fn check_batch_size(field: &str, len: usize, max: usize) -> Result<()> {
    if len == 0 || len > max {
        return Err(Error::invalid(
            field,
            format!("must hold 1 to {max} entries, got {len}"),
        ));
    }
    Ok(())
}

/// Runs a search that holds a read-pool slot (`slot`) on the async worker
/// that polled it, on a multi-thread runtime: directly while at least one
/// other worker stays free for everything else (`ReadPool::try_inline`),
/// else with `block_in_place` (which hands the worker's other tasks to
/// another thread, a thread wake and switch per search); on the blocking
/// pool elsewhere. The slot bounds how many run at once
/// (`--search-threads`); it is released only after the search has left its
/// worker, so the next search finds the worker counted free again.
async fn run_search<T: Send + 'static>(
    reads: &reads::ReadPool,
    ctx: &RequestContext,
    slot: tokio::sync::OwnedSemaphorePermit,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    ctx.check_deadline()?;
    let handle = tokio::runtime::Handle::try_current();
    match handle.as_ref().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            let workers = handle.map_or(1, |h| h.metrics().num_workers());
            // A panic (a damaged index file, say) fails this request alone,
            // as one on the blocking pool does, instead of the connection's
            // worker task.
            let guarded = move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(
                    |panic| {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a search panicked".into());
                        Err(Error::Task(message))
                    },
                )
            };
            let result = match reads.try_inline(workers) {
                Some(_inline) => guarded(),
                None => tokio::task::block_in_place(guarded),
            };
            drop(slot);
            result
        }
        _ => {
            run_blocking(ctx, move || {
                let _slot = slot;
                work()
            })
            .await
        }
    }
}

/// Runs store reads and searches on the blocking pool, never on the async
/// executor; refuses to start once the request's deadline has passed.
async fn run_blocking<T: Send + 'static>(
    ctx: &RequestContext,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    ctx.check_deadline()?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
