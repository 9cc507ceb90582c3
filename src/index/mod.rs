//! The tantivy index: schema, the indexer thread that follows the store's
//! change log, and search (query, filters, sort, cursor, facets, snippets).
//!
//! - `mod.rs`: opening (a damaged index is moved aside and rebuilt), the
//!   handle, `reindex`;
//! - `indexer.rs`: the indexer thread (change log -> verified commits) and
//!   the rebuild from the store;
//! - `search.rs`: a search page (query, filters, sort keys, cursor, snippets);
//! - `facets.rs`: facets, counted in the page's pass;
//! - `report.rs`: a report's counts in one pass over fast fields;
//! - `query.rs`, `cursor.rs`, `schema.rs`: the query language, search-after
//!   cursors, the field catalogue;
//! - `vectors.rs`, `similar.rs`: the approximate nearest-neighbour index
//!   over document embeddings (built at startup, kept in step by the
//!   indexer) and the index side of similarity search.
//!
//! Invariants:
//! - The index is derived data. It is written only by the indexer thread,
//!   which applies the store's change log in `seq` order; the commit payload
//!   is the seq through which the index is known complete, and on startup it
//!   resumes from there. A missing, damaged or outdated-schema index is
//!   rebuilt from the store.
//! - Refresh policy: the indexer commits at most once per
//!   `refresh_interval` (default 250 ms) and reloads the searcher right after,
//!   so an acknowledged write is searchable within interval + commit time
//!   while ingest stays below the indexing rate. An idle indexer reloads it
//!   within `MERGE_CHECK_INTERVAL` (1 s) of a background merge that ended
//!   after the last commit (the reader searches the committed segments).
//! - Search never blocks the async executor: callers run it on the blocking pool.

mod collect;
mod cursor;
mod date_range;
mod facets;
mod filters;
mod ids;
mod indexer;
mod query;
mod report;
pub mod schema;
mod search;
mod similar;
mod snippet;
mod tags;
pub mod vectors;
mod words;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tantivy::index::SegmentId;
use tantivy::query::QueryParser;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};

use crate::store::{Store, StoreError};
use indexer::{rebuild, run_indexer, Indexer};
pub use report::ReportPlan;
use schema::{build_schema, Fields, SCHEMA_VERSION};
pub use search::{IndexPage, Spread};
pub use similar::SimilarScope;
use vectors::Vectors;

/// Each message names its cause, and no variant also links the cause as
/// its `source()` (a chain printed whole named it twice); the wrapped
/// errors of other modules pass through whole (`transparent`).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("malformed query at byte {position}: {message}")]
    InvalidQuery { position: usize, message: String },
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    #[error(
        "invalid facet field `{0}`: use {keywords} or {attributes}.KEY (KEY: 1 to {max} bytes of [a-z0-9_])",
        keywords = schema::KEYWORD_FIELDS.join(", "),
        attributes = schema::field::ATTRIBUTES,
        max = crate::domain::limits::MAX_ATTRIBUTE_KEY_BYTES
    )]
    InvalidFacet(String),
    /// A report's segment field that cannot be used (unknown, too many values).
    #[error("{0}")]
    InvalidSegment(String),
    #[error("search engine error: {0}")]
    Tantivy(tantivy::TantivyError),
    #[error("cannot prepare the index folder {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the index holds {docs} documents where the store holds {items} items")]
    CountMismatch { docs: u64, items: u64 },
    /// A store that never held a change beside an index that applied some:
    /// the store file was removed or replaced, and a rebuild would empty
    /// the index as well (found by probing: it served 0 items).
    #[error(
        "the store ({store}) is new and empty but the index beside it applied changes through \
         seq {committed}: was the store file removed or replaced? Restore it from a backup, or \
         remove {index} to start with no items"
    )]
    StoreMissing {
        store: String,
        index: String,
        committed: u64,
    },
    #[error(transparent)]
    Vectors(#[from] vectors::VectorError),
    /// Reads wait for the index to apply the removals the store committed
    /// before it opened (`SearchIndex::removals_left`,
    /// `Engine::removals_applied`); this one waited in vain, or the indexer
    /// is not running (also with a removal acknowledged since).
    #[error("the index has not yet applied acknowledged removals (behind them by {left} changes: catching up after a restart, or unable to write; the server log says which); retry shortly")]
    CatchingUp { left: u64 },
}

impl From<tantivy::TantivyError> for IndexError {
    fn from(error: tantivy::TantivyError) -> Self {
        IndexError::Tantivy(error)
    }
}

/// Tuning of the indexer.
#[derive(Clone, Debug)]
pub struct IndexSettings {
    pub refresh_interval: Duration,
    pub writer_threads: usize,
    pub writer_memory_bytes: usize,
    /// Keep the approximate nearest-neighbour index for similarity search.
    pub similarity_index: bool,
    /// Concurrent operations on it (searches + the indexer + the build).
    pub similarity_threads: usize,
    /// Index each two adjacent words as one term for two-word phrases
    /// (`schema::Fields::phrase_pairs`); the index of either setting has
    /// its own folder (`index_dir`).
    pub phrase_pairs: bool,
    /// After a shutdown is asked, how long the indexer goes on applying the
    /// change log before it commits what it applied and stops; the rest is
    /// applied at the next start.
    pub stop_drain: Duration,
}

#[cfg(test)]
impl IndexSettings {
    /// One small writer thread, no vector index, pairs on.
    pub(crate) fn for_tests() -> IndexSettings {
        IndexSettings {
            refresh_interval: Duration::from_millis(100),
            writer_threads: 1,
            writer_memory_bytes: 20_000_000,
            similarity_index: false,
            similarity_threads: 1,
            phrase_pairs: true,
            stop_drain: Duration::from_secs(2),
        }
    }
}

struct Shared {
    /// The index folder (`index/vN`).
    dir: PathBuf,
    fields: Fields,
    reader: IndexReader,
    parser: QueryParser,
    indexed_seq: AtomicU64,
    /// The store's last removal when the index opened, while the index has
    /// not applied it (0: applied). After a crash the index opens behind
    /// the store's change log; until it catches up, an item removed before
    /// the crash still counts in totals, facets and reports.
    pending_removal: AtomicU64,
    /// The indexer's last round failed (it retries with back-off).
    failing: std::sync::atomic::AtomicBool,
    vectors: Arc<Vectors>,
    /// The page collector's fast-field columns per segment.
    columns: Arc<collect::ColumnCache>,
    /// Filter clauses' bits per segment.
    filters: Arc<filters::FilterCache>,
    /// Taxonomy versions a re-tag confirmed without re-indexing.
    tags: Arc<tags::ConfirmedTags>,
}

impl Shared {
    /// The reader shows every change through `seq`: a removal owed since
    /// the index opened is applied once `seq` reaches it, whatever a later
    /// error does to `indexed_seq` (a reset lowers it to the last payload,
    /// which during a backlog predates what the reader shows).
    fn removals_applied_through(&self, seq: u64) {
        let pending = self.pending_removal.load(Ordering::Acquire);
        if pending != 0 && seq >= pending {
            let _ = self.pending_removal.compare_exchange(
                pending,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Reloads the reader to the last commit and reads the ids of its new
    /// segments (`ColumnCache::warm_ids`), so that no search waits for them.
    /// A segment whose ids cannot be read is logged and left to the first
    /// search that needs them (which then answers the error). Their dates
    /// are read later (`warm_dates`), once the indexer has published what
    /// the reload made searchable.
    fn reload(&self) -> Result<(), IndexError> {
        self.reader.reload()?;
        if let Err(error) = self.columns.warm_ids(&self.reader.searcher()) {
            tracing::warn!(%error, "cannot read the item ids of a new segment");
        }
        Ok(())
    }

    /// Reads the date blocks, and where the dates follow no order the date
    /// order, of the searched segments that lack them
    /// (`ColumnCache::warm_dates`): nothing for a segment read before.
    fn warm_dates(&self) {
        self.columns.warm_dates(&self.reader.searcher());
    }
}

/// Handle to the index; cheap to clone.
#[derive(Clone)]
pub struct SearchIndex {
    shared: Arc<Shared>,
    indexer: Arc<Mutex<Option<IndexerThread>>>,
}

struct IndexerThread {
    stop: Arc<indexer::StopSignal>,
    handle: JoinHandle<()>,
}

/// Drops the entries of segments the searcher no longer has (the caches
/// keyed by segment: columns, confirmed versions), where it is the newest
/// searcher `pruner` has seen.
fn retain_live_segments<V>(
    segments: &mut HashMap<SegmentId, V>,
    pruner: &NewestSearcher,
    searcher: &Searcher,
) {
    let live = searcher.segment_readers();
    // Asked first: every searcher's generation is recorded.
    if pruner.admits(searcher) && segments.len() > live.len() {
        segments.retain(|id, _| live.iter().any(|s| s.segment_id() == *id));
    }
}

/// The newest searcher generation that pruned a cache keyed by segment. A
/// search that began before a reload holds an older searcher, which lacks
/// the new and merged segments the reload's warm just read: it must not
/// drop them. Generations rise with each reload of the one reader a cache
/// serves.
#[derive(Default)]
struct NewestSearcher(AtomicU64);

impl NewestSearcher {
    /// Whether `searcher` is at least as new as every one seen before
    /// (and so may prune).
    fn admits(&self, searcher: &Searcher) -> bool {
        let generation = searcher.generation().generation_id();
        self.0.fetch_max(generation, Ordering::AcqRel) <= generation
    }
}

/// The parser of the query language: words search `text`, AND by default.
fn query_parser(index: &Index, fields: &Fields) -> QueryParser {
    // The query side's analyzers (`schema::query_tokenizers`): a CJK run
    // asks for its pairs of characters, not also for each character.
    let mut parser = QueryParser::new(
        index.schema(),
        vec![fields.text],
        schema::query_tokenizers(),
    );
    parser.set_conjunction_by_default();
    parser
}

/// `index/vN`, or `index/vN-nopairs` for an index without `text_pairs`:
/// turning `--index-phrases` on or off opens the other folder, which is
/// rebuilt from the store when it is new; the other one is removed
/// (`remove_other_layouts`).
fn index_dir(data_dir: &Path, phrase_pairs: bool) -> PathBuf {
    let suffix = if phrase_pairs { "" } else { "-nopairs" };
    data_dir
        .join("index")
        .join(format!("v{SCHEMA_VERSION}{suffix}"))
}

/// Removes the index folders this build does not open: the other
/// `--index-phrases` setting's (it stopped following the store when this
/// one opened, so switching back must rebuild it rather than trust it) and
/// other schema versions' (an older build's after an upgrade only holds
/// disk; a newer build's after a downgrade is rebuilt by that build, as
/// any missing folder).
/// Folders set aside as damaged (`vN.damaged`) and the vector index stay.
/// A failure is logged: no such folder is ever read by this build.
/// The first index folder under `DATA_DIR/index/` (of any layout, set
/// aside ones included) whose last commit applied changes, with the seq it
/// applied through: read from its `meta.json`, whatever its schema.
fn applied_index(data_dir: &Path) -> Option<(PathBuf, u64)> {
    let entries = std::fs::read_dir(data_dir.join("index")).ok()?;
    entries.flatten().find_map(|entry| {
        let meta = std::fs::read(entry.path().join("meta.json")).ok()?;
        let meta: serde_json::Value = serde_json::from_slice(&meta).ok()?;
        let committed: u64 = meta.get("payload")?.as_str()?.parse().ok()?;
        (committed > 0).then(|| (entry.path(), committed))
    })
}

/// Returns the names of the folders found (removed or not).
fn remove_other_layouts(data_dir: &Path, phrase_pairs: bool) -> Vec<String> {
    let current = index_dir(data_dir, phrase_pairs);
    let Ok(entries) = std::fs::read_dir(data_dir.join("index")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let version = name
            .strip_prefix('v')
            .map(|v| v.strip_suffix("-nopairs").unwrap_or(v));
        let is_layout =
            version.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
        let path = entry.path();
        if !is_layout || path == current {
            continue;
        }
        found.push(name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed an index folder this build does not use")
            }
            Err(error) => tracing::warn!(
                dir = %path.display(),
                %error,
                "cannot remove an index folder this build does not use"
            ),
        }
    }
    found.sort();
    found
}

fn open_index(dir: &Path, phrase_pairs: bool) -> Result<(Index, Fields, bool), IndexError> {
    let (schema, mut fields) = build_schema();
    fields.phrase_pairs = phrase_pairs;
    std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
        path: dir.display().to_string(),
        cause: source,
    })?;
    let directory =
        tantivy::directory::MmapDirectory::open(dir).map_err(tantivy::TantivyError::from)?;
    let created = !Index::exists(&directory).map_err(tantivy::TantivyError::from)?;
    let index = Index::builder()
        .schema(schema)
        .settings(new_index_settings())
        .open_or_create(directory)?;
    schema::register_analyzers(index.tokenizers());
    Ok((index, fields, created))
}

/// The settings a new index is created with (an existing index keeps the
/// ones tantivy recorded in its meta.json; `verbatim reindex` rewrites an
/// index whose settings differ):
/// - The document store holds only each document's item id, and a search
///   reads it for every hit: uncompressed, in blocks of 4 KiB, a hit outside
///   the store's cache of recent blocks costs a copy of 4 KiB instead of
///   decompressing 16 KiB (lz4, tantivy's default; ~8% of a single-term
///   search's CPU at 1M items). It costs disk: 23 MB per million items with
///   12-character ids, against 8 MB with lz4 (BENCHMARKS.md).
/// - Every segment keeps its documents in `seq` (ingest) order, the order
///   relevance and sentiment pages break ties in: tantivy sorts a new
///   segment's documents by `seq` and merges segments by it. The indexer
///   writes items in seq order, but a re-analysed item comes back with its
///   old seq, a rebuild reads the store by id, and merges join segments in
///   size order: without the sort most segments would not ascend, and a
///   page would read the seq of every document that ties its lowest key
///   (`collect.rs`, the tie rule).
fn new_index_settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::None,
        docstore_blocksize: 4096,
        sort_by_field: Some(tantivy::IndexSortByField {
            field: schema::field::SEQ.to_string(),
            order: tantivy::Order::Asc,
        }),
        ..tantivy::IndexSettings::default()
    }
}

/// Whether `index` was created with `new_index_settings` (an older build's
/// index was not; `verbatim reindex` makes it anew).
fn has_new_index_settings(index: &Index) -> bool {
    index.settings() == &new_index_settings()
}

fn committed_seq(index: &Index) -> Result<u64, IndexError> {
    Ok(index
        .load_metas()?
        .payload
        .and_then(|p| p.parse().ok())
        .unwrap_or(0))
}

struct Opened {
    index: Index,
    fields: Fields,
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    /// Every segment's ids already read (`ColumnCache::warm_ids`).
    columns: Arc<collect::ColumnCache>,
    needs_rebuild: bool,
}

/// Opens the index, its writer and a reader: everything that reads the
/// index files, so damage shows here and not on the first search.
fn open_for_indexing(dir: &Path, settings: &IndexSettings) -> Result<Opened, IndexError> {
    let (index, fields, created) = open_index(dir, settings.phrase_pairs)?;
    committed_seq(&index)?;
    check_files(&index)?;
    let writer = new_writer(&index, settings)?;
    let reader: IndexReader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    // Touch every segment's term dictionaries and fast fields once.
    let searcher = reader.searcher();
    for segment in searcher.segment_readers() {
        segment.fast_fields().u64(schema::field::SEQ)?;
        segment.inverted_index(fields.id)?;
        segment.inverted_index(fields.text)?;
        segment.inverted_index(fields.text_pairs)?;
    }
    // Every hit's id comes from its segment's document store: read them
    // all now (as the first search would), so a damaged store is found
    // here, where it is set aside and rebuilt, not by every search after.
    let columns = Arc::new(collect::ColumnCache::default());
    columns.warm_ids(&searcher)?;
    Ok(Opened {
        index,
        fields,
        writer,
        reader,
        columns,
        needs_rebuild: created,
    })
}

/// Checks every file of the committed segments against the checksum in its
/// footer (before the writer opens: no merge changes them meanwhile). A
/// damaged byte in a column (`.fast`) or a posting list passed every other
/// check at open, and then failed each search that read it until a
/// reindex; found here, the index is set aside and rebuilt. Reads every
/// file once: measured in BENCHMARKS.md ("Checksums at open").
fn check_files(index: &Index) -> Result<(), IndexError> {
    let started = std::time::Instant::now();
    let damaged = index.validate_checksum()?;
    if !damaged.is_empty() {
        let mut files: Vec<String> = damaged.iter().map(|p| p.display().to_string()).collect();
        files.sort();
        return Err(IndexError::Tantivy(tantivy::TantivyError::DataCorruption(
            tantivy::error::DataCorruption::comment_only(format!(
                "checksum mismatch in {}",
                files.join(", ")
            )),
        )));
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index files match their checksums"
    );
    Ok(())
}

/// A writer, once the files no commit refers to are removed: a process
/// killed between writing a commit's files and its `meta.json` leaves them
/// behind, and the writer that replays the same changes from the same
/// commit gives its files the same names (`SEGMENT.OPSTAMP.del`): every
/// round then failed on "FileAlreadyExists" until an unrelated write
/// shifted the opstamps (found by a kill -9 probe during a catch-up).
fn new_writer(
    index: &Index,
    settings: &IndexSettings,
) -> Result<IndexWriter<TantivyDocument>, IndexError> {
    let writer = index
        .writer_with_num_threads(settings.writer_threads.max(1), settings.writer_memory_bytes)?;
    // Best effort: a folder it cannot clean is no damaged index.
    match writer.garbage_collect_files().wait() {
        Ok(collected) if !collected.deleted_files.is_empty() => tracing::info!(
            files = collected.deleted_files.len(),
            "removed index files no commit refers to (left by an interrupted commit)"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot remove the index files no commit refers to"),
    }
    Ok(writer)
}

/// Errors that mean the index files are damaged (as opposed to the folder
/// being unwritable, or held by another process).
fn is_damage(error: &IndexError) -> bool {
    use tantivy::directory::error::{OpenDirectoryError, OpenReadError, OpenWriteError};
    use tantivy::TantivyError;
    match error {
        IndexError::Tantivy(TantivyError::LockFailure(..)) => false,
        // A full or read-only disk, or no file descriptor left, says
        // nothing of the files (a full disk at a rebuild was reported as
        // damage, and the index moved aside once more at each start).
        IndexError::Tantivy(
            TantivyError::IoError(io)
            | TantivyError::OpenWriteError(OpenWriteError::IoError { io_error: io, .. })
            | TantivyError::OpenReadError(OpenReadError::IoError { io_error: io, .. })
            | TantivyError::OpenDirectoryError(OpenDirectoryError::IoError { io_error: io, .. }),
        ) if is_resource_error(io) => false,
        IndexError::Tantivy(_) => true,
        IndexError::InvalidQuery { .. }
        | IndexError::InvalidCursor(_)
        | IndexError::InvalidFacet(_)
        | IndexError::InvalidSegment(_)
        | IndexError::Io { .. }
        | IndexError::Store(_)
        | IndexError::CountMismatch { .. }
        | IndexError::StoreMissing { .. }
        | IndexError::CatchingUp { .. }
        | IndexError::Vectors(_) => false,
    }
}

/// An I/O error of the system's resources rather than of the files: no
/// room, a read-only file system, no permission, no file descriptor left.
fn is_resource_error(io: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        io.kind(),
        ErrorKind::StorageFull
            | ErrorKind::QuotaExceeded
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::PermissionDenied
            | ErrorKind::OutOfMemory
    ) || matches!(io.raw_os_error(), Some(1 | 13 | 23 | 24 | 28 | 30 | 122))
}

/// Opens with `open`. The index is derived data: a damaged one (a missing or
/// truncated segment file, a garbled meta.json) is moved aside and opened
/// anew (empty, to be rebuilt from the store) instead of failing.
fn open_or_set_aside<T>(
    dir: &Path,
    open: impl Fn() -> Result<T, IndexError>,
) -> Result<T, IndexError> {
    match open() {
        Err(error) if is_damage(&error) => {
            let aside = quarantine(dir)?;
            tracing::error!(
                %error,
                moved_to = %aside.display(),
                "THE INDEX IS DAMAGED: moved it aside; rebuilding it from the store"
            );
            open()
        }
        other => other,
    }
}

/// Renames a damaged index folder to `vN.damaged` (replacing an older one),
/// kept for a post-mortem; returns the new path.
fn quarantine(dir: &Path) -> Result<PathBuf, IndexError> {
    let mut aside = dir.as_os_str().to_os_string();
    aside.push(".damaged");
    let aside = PathBuf::from(aside);
    let io = |source| IndexError::Io {
        path: dir.display().to_string(),
        cause: source,
    };
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(io)?;
    }
    std::fs::rename(dir, &aside).map_err(io)?;
    Ok(aside)
}

impl SearchIndex {
    /// Opens the index under `data_dir` and starts the indexer thread that
    /// follows `store`. A new (or new-schema) index is first filled from the
    /// store's items.
    pub fn open(
        data_dir: &Path,
        store: Store,
        settings: IndexSettings,
    ) -> Result<Self, IndexError> {
        // Read once: nothing writes to this store before its index is open.
        let stats = store.stats()?;
        // Before any folder is opened, replaced or removed: an index of any
        // layout that applied changes, beside a store that never held one.
        if stats.last_seq == 0 {
            if let Some((folder, committed)) = applied_index(data_dir) {
                return Err(IndexError::StoreMissing {
                    store: data_dir
                        .join(crate::store::STORE_FILE)
                        .display()
                        .to_string(),
                    index: folder.display().to_string(),
                    committed,
                });
            }
        }
        let dir = index_dir(data_dir, settings.phrase_pairs);
        let opened = open_or_set_aside(&dir, || open_for_indexing(&dir, &settings))?;
        let other_layouts = remove_other_layouts(data_dir, settings.phrase_pairs);
        let Opened {
            index,
            fields,
            writer,
            reader,
            columns,
            needs_rebuild,
        } = opened;
        // A new folder, or one whose first rebuild never committed (no payload).
        let needs_rebuild = needs_rebuild || index.load_metas()?.payload.is_none();
        let items = stats.items;
        // An index past its store's last change (the store restored from an
        // older copy): the store's next changes reuse seqs the index counts
        // as applied, and the item count may even agree. Rebuilt.
        let committed = committed_seq(&index)?;
        let ahead = committed > stats.last_seq;
        if ahead {
            tracing::warn!(
                index_seq = committed,
                store_seq = stats.last_seq,
                "the index is ahead of the store (restored from an older copy?): rebuilding it"
            );
        }
        // An index behind the store's trimmed change log (the two copied at
        // different times from a running server, or restored from different
        // backups): the changes it lacks are gone from the log, so it would
        // never catch up (new texts unfound, removed items counted, reads
        // waiting for removals it cannot apply). Rebuilt.
        let behind = !needs_rebuild
            && !ahead
            && committed < stats.last_seq
            && stats
                .first_change_seq
                .is_none_or(|first| first > committed + 1);
        if behind {
            tracing::warn!(
                index_seq = committed,
                store_seq = stats.last_seq,
                change_log_from = stats.first_change_seq,
                "the index is older than the store's change log (copied apart from the store?): \
                 rebuilding it"
            );
        }
        if !needs_rebuild && !has_new_index_settings(&index) {
            tracing::info!(
                "the index predates segments kept in ingest order: relevance pages read more \
                 tie breakers; `verbatim reindex` (server stopped) rewrites it"
            );
        }
        let parser = query_parser(&index, &fields);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            indexed_seq: AtomicU64::new(committed),
            // Owed only when the index opened behind it.
            pending_removal: AtomicU64::new(
                Some(store.last_removal_seq())
                    .filter(|&removal| removal > committed)
                    .unwrap_or(0),
            ),
            failing: Default::default(),
            fields,
            reader,
            parser,
            columns,
            filters: Arc::default(),
            tags: Arc::new(tags::ConfirmedTags::new(store.confirmed_versions())),
            vectors: Arc::new(Vectors::new(
                settings.similarity_index,
                settings.similarity_threads,
                Some(data_dir.join("index").join("vectors")),
            )),
        });
        shared.reload()?;
        let vector_store = store.clone();
        let stop_drain = settings.stop_drain;
        let mut indexer = Indexer::new(shared.clone(), index, writer, store, settings);
        if (needs_rebuild && items > 0) || ahead || behind {
            if !ahead && !behind && !other_layouts.is_empty() {
                tracing::info!(
                    items,
                    found = other_layouts.join(", "),
                    "the index was built by another version or --index-phrases setting: \
                     rebuilding it from the store"
                );
            } else if !ahead && !behind {
                tracing::info!(items, "index missing: rebuilding it from the store");
            }
            indexer.rebuild()?;
        } else if needs_rebuild {
            // A new index over a store without items is complete through
            // the store's last seq: a folder made anew after the change log
            // was trimmed had nothing to replay, and stayed at seq 0, behind
            // the store (and a removal it cannot hold) until the next write.
            indexer.complete_through(stats.last_seq)?;
        }
        tracing::info!(
            dir = %dir.display(),
            indexed_seq = shared.indexed_seq.load(Ordering::Relaxed),
            "index opened"
        );
        if shared.vectors.building() {
            let vectors = shared.vectors.clone();
            std::thread::Builder::new()
                .name("similarity-index".into())
                .spawn(move || {
                    if let Err(error) = vectors.start(&vector_store) {
                        tracing::error!(%error, "cannot load or build the similarity index: similarity search ranks the newest matches only");
                        vectors.disable();
                    }
                })
                .map_err(|source| IndexError::Io {
                    path: "similarity index thread".into(),
                    cause: source,
                })?;
        }
        let stop = Arc::new(indexer::StopSignal::new(stop_drain));
        let handle = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("indexer".into())
                .spawn(move || run_indexer(indexer, stop))
                .map_err(|source| IndexError::Io {
                    path: "indexer thread".into(),
                    cause: source,
                })?
        };
        Ok(SearchIndex {
            shared,
            indexer: Arc::new(Mutex::new(Some(IndexerThread { stop, handle }))),
        })
    }

    /// The last store `seq` that is searchable.
    pub fn indexed_seq(&self) -> u64 {
        self.shared.indexed_seq.load(Ordering::Acquire)
    }

    /// Changes left to apply before the index has applied every removal
    /// the store had committed when the index opened (0: it has). Reads
    /// wait for it: before, an item deleted or erased before a crash (the
    /// index had not applied it yet) would still count in totals, facets
    /// and reports. Once applied, never again: later removals are searchable
    /// within the refresh interval, as documented.
    pub fn removals_left(&self) -> u64 {
        match self.shared.pending_removal.load(Ordering::Acquire) {
            0 => 0,
            pending => pending.saturating_sub(self.indexed_seq()),
        }
    }

    /// Whether the indexer thread runs, its last round did not fail, and
    /// no stop was asked: a read that waits for it (`removals_left`) waits
    /// in vain otherwise.
    pub fn indexer_running(&self) -> bool {
        !self.shared.failing.load(Ordering::Acquire)
            && self
                .indexer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|thread| !thread.handle.is_finished() && !thread.stop.requested())
    }

    /// The similarity index, once built (`None` while it builds, when it is
    /// off, or when no item has an embedding yet and it is not built).
    pub fn vectors(&self) -> Option<Arc<vectors::VectorIndex>> {
        self.shared.vectors.index()
    }

    /// Whether similarity search can use the vector index (built, possibly
    /// empty).
    pub fn vectors_ready(&self) -> bool {
        self.shared.vectors.is_ready()
    }

    /// Documents in the searchable (last reloaded) index.
    pub fn documents(&self) -> u64 {
        self.shared.reader.searcher().num_docs()
    }

    /// Segments in the searchable (last reloaded) index.
    pub fn segments(&self) -> u64 {
        self.shared.reader.searcher().segment_readers().len() as u64
    }

    /// Bytes of the index folder's files (segments, metadata); 0 when it
    /// cannot be listed.
    pub fn size_bytes(&self) -> u64 {
        std::fs::read_dir(&self.shared.dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok()?.metadata().ok())
                    .filter(|meta| meta.is_file())
                    .map(|meta| meta.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Stops the indexer: it goes on applying the change log for up to
    /// `stop_drain`, then commits what it applied (within a few changes of
    /// that time); the rest is applied at the next start, so a backlog does
    /// not hold a shutdown. Merges get a few seconds. Then saves the
    /// similarity index if it changed.
    pub fn shutdown(&self) {
        let thread = self
            .indexer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            thread.stop.request();
            if thread.handle.join().is_err() {
                tracing::error!("indexer thread panicked");
            }
            // After the indexer's last changes; skipped when nothing changed.
            self.shared.vectors.save();
        }
    }
}

/// Rebuilds the index of `data_dir` from its store (the server must be stopped).
pub fn reindex(data_dir: &Path, settings: &IndexSettings) -> Result<u64, IndexError> {
    let store = Store::open_offline(data_dir)?;
    let dir = index_dir(data_dir, settings.phrase_pairs);
    let open = || {
        let (index, fields, _) = open_index(&dir, settings.phrase_pairs)?;
        Ok((index, fields))
    };
    let (mut index, mut fields) = open_or_set_aside(&dir, open)?;
    // Everything is rewritten anyway: an index an older build created is
    // made anew, with the settings of a new one.
    if !has_new_index_settings(&index) {
        drop(index);
        std::fs::remove_dir_all(&dir).map_err(|source| IndexError::Io {
            path: dir.display().to_string(),
            cause: source,
        })?;
        (index, fields) = open()?;
    }
    remove_other_layouts(data_dir, settings.phrase_pairs);
    let mut writer = new_writer(&index, settings)?;
    let (count, _) = rebuild(&store, &fields, &mut writer)?;
    writer.wait_merging_threads()?;
    Ok(count)
}

#[cfg(test)]
impl SearchIndex {
    /// An index in memory holding `items`, without a store or an indexer
    /// thread: for tests of the read side.
    pub(crate) fn in_memory(items: &[crate::domain::StoredFeedback]) -> SearchIndex {
        SearchIndex::in_memory_segments(items, items.len().max(1))
    }

    /// As `in_memory`, one segment per `per_segment` items (never merged).
    pub(crate) fn in_memory_segments(
        items: &[crate::domain::StoredFeedback],
        per_segment: usize,
    ) -> SearchIndex {
        let (schema, fields) = build_schema();
        let index = Index::create_in_ram(schema);
        schema::register_analyzers(index.tokenizers());
        let mut writer: IndexWriter<TantivyDocument> = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("index writer");
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        for chunk in items.chunks(per_segment) {
            for item in chunk {
                writer
                    .add_document(schema::to_document(&fields, item))
                    .expect("document");
            }
            writer.commit().expect("commit");
        }
        writer.commit().expect("commit");
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .expect("reader");
        let parser = query_parser(&index, &fields);
        SearchIndex {
            shared: Arc::new(Shared {
                dir: PathBuf::new(),
                fields,
                reader,
                parser,
                indexed_seq: AtomicU64::new(items.len() as u64),
                pending_removal: AtomicU64::new(0),
                failing: Default::default(),
                vectors: Arc::new(Vectors::new(false, 1, None)),
                columns: Arc::default(),
                filters: Arc::default(),
                tags: Arc::new(tags::ConfirmedTags::new(Arc::default())),
            }),
            indexer: Arc::new(Mutex::new(None)),
        }
    }
}

/// An empty in-memory index with the server's schema and analyzers, and a
/// one-thread writer that never merges (tests that build their own tantivy
/// index; segments are the commits).
/// A xorshift64 generator for test data (deterministic, no dependency).
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
pub(crate) fn test_index() -> (Index, Fields, IndexWriter<TantivyDocument>) {
    let (schema, fields) = build_schema();
    let index = Index::create_in_ram(schema);
    schema::register_analyzers(index.tokenizers());
    let writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(1, 15_000_000)
        .expect("an in-memory writer");
    writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
    (index, fields, writer)
}

/// A finished analysis with a neutral label and sentiment `score` and
/// nothing else (tests that sort by sentiment).
#[cfg(test)]
pub(crate) fn test_analysis(score: f32) -> crate::domain::AnalysisState {
    crate::domain::AnalysisState::Done(crate::domain::Analysis {
        language: "en".into(),
        language_confidence: 1.0,
        sentiment: crate::domain::Sentiment {
            label: crate::domain::SentimentLabel::Neutral,
            score,
            negative: 0.0,
            neutral: 1.0,
            positive: 0.0,
        },
        sentences: Vec::new(),
        keyphrases: Vec::new(),
        embedding: Vec::new(),
        model: "test".into(),
        themes: Vec::new(),
        taxonomy_version: 1,
        units: Vec::new(),
    })
}

/// Writes a validated item as the indexer would (tests that build their
/// own tantivy index).
#[cfg(test)]
pub(crate) fn add_test_item(
    writer: &IndexWriter<TantivyDocument>,
    fields: &Fields,
    seq: u64,
    draft: crate::domain::FeedbackDraft,
    analysis: crate::domain::AnalysisState,
) {
    let item = crate::domain::StoredFeedback {
        feedback: draft
            .validate(crate::domain::UnixMicros(0))
            .expect("a valid test item"),
        ingested_at: crate::domain::UnixMicros(0),
        seq,
        analysis,
    };
    writer
        .add_document(schema::to_document(fields, &item))
        .expect("the document is added");
}

/// Adds item `i-{seq}` whose text is the one word "word", pending analysis.
#[cfg(test)]
pub(crate) fn add_word_item(writer: &IndexWriter<TantivyDocument>, fields: &Fields, seq: u64) {
    let draft = crate::domain::FeedbackDraft {
        id: format!("i-{seq}"),
        text: "word".into(),
        ..Default::default()
    };
    add_test_item(
        writer,
        fields,
        seq,
        draft,
        crate::domain::AnalysisState::Pending,
    );
}

/// A small index whose items fill every field (analysed with themes and
/// sub-themes, pending, failed), shared by the fuzz targets that search.
#[cfg(test)]
pub(crate) fn fuzz_fixture() -> &'static SearchIndex {
    static INDEX: std::sync::LazyLock<SearchIndex> =
        std::sync::LazyLock::new(|| SearchIndex::in_memory(&fixture_items()));
    &INDEX
}

#[cfg(test)]
fn fixture_items() -> Vec<crate::domain::StoredFeedback> {
    use crate::domain::limits::MAX_CREATED_AT_MICROS;
    use crate::domain::{
        Analysis, AnalysisState, Channel, FeedbackDraft, JourneyStage, Sentiment, SentimentLabel,
        StoredFeedback, ThemeMention, UnixMicros,
    };

    let analysed = |label: SentimentLabel, score: f32, themes: &[(&str, &str)], version: u64| {
        let sentiment = Sentiment {
            label,
            score,
            negative: (-score).max(0.0),
            neutral: 1.0 - score.abs(),
            positive: score.max(0.0),
        };
        AnalysisState::Done(Analysis {
            language: "en".into(),
            language_confidence: 0.9,
            sentiment,
            sentences: Vec::new(),
            keyphrases: Vec::new(),
            embedding: Vec::new(),
            model: "fixture".into(),
            themes: themes
                .iter()
                .map(|(id, parent)| ThemeMention {
                    theme_id: id.to_string(),
                    theme_name: id.to_string(),
                    parent_id: parent.to_string(),
                    score: 0.8,
                    sentences: Vec::new(),
                    spans: Vec::new(),
                    sentiment,
                })
                .collect(),
            taxonomy_version: version,
            units: Vec::new(),
        })
    };
    let item = |seq: u64, draft: FeedbackDraft, analysis: AnalysisState| StoredFeedback {
        feedback: draft.validate(UnixMicros(0)).expect("a valid fixture item"),
        ingested_at: UnixMicros(1_700_000_000_000_000),
        seq,
        analysis,
    };
    vec![
        item(
            1,
            FeedbackDraft {
                id: "fx-1".into(),
                text: "Refund was late; the delivery driver was rude (again)! \"Never\" again"
                    .into(),
                channel: Some(Channel::Review),
                journey_stage: Some(JourneyStage::Purchase),
                product: "Acme".into(),
                customer_id: "c-1".into(),
                created_at: Some(UnixMicros(1_700_000_000_123_456)),
                language: "en".into(),
                nps: Some(3),
                csat: Some(2),
                ces: Some(6),
                rating: Some(1),
                tags: vec!["vip".into(), "b2b".into()],
                attributes: [("region", "emea"), ("plan", "pro")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            analysed(
                SentimentLabel::Negative,
                -0.8,
                &[("delivery_delay", "delivery"), ("refund", "")],
                1,
            ),
        ),
        item(
            2,
            FeedbackDraft {
                id: "fx-2".into(),
                text: "Great app, caf\u{e9} tr\u{e8}s bien \u{1f600} e\u{301}l\u{e8}ve".into(),
                channel: Some(Channel::Survey),
                created_at: Some(UnixMicros(0)),
                language: "fr".into(),
                nps: Some(10),
                tags: vec!["promoter".into()],
                ..FeedbackDraft::default()
            },
            analysed(SentimentLabel::Positive, 1.0, &[("app", "")], 2),
        ),
        item(
            3,
            FeedbackDraft {
                id: "fx-3".into(),
                text: "Price \u{96} too high\r\n\tdon\u{92}t buy".into(),
                channel: Some(Channel::SupportTicket),
                journey_stage: Some(JourneyStage::Renewal),
                created_at: Some(UnixMicros(MAX_CREATED_AT_MICROS - 1)),
                attributes: [("region".to_string(), "amer".to_string())].into(),
                ..FeedbackDraft::default()
            },
            AnalysisState::Failed {
                reason: "fixture".into(),
            },
        ),
        item(
            4,
            FeedbackDraft {
                id: "fx-4".into(),
                text: "x".into(),
                created_at: Some(UnixMicros(1_700_000_000_123_456)),
                ..FeedbackDraft::default()
            },
            AnalysisState::Pending,
        ),
        item(
            5,
            FeedbackDraft {
                id: "fx-5".into(),
                text: "mixed feelings about delivery and price".into(),
                channel: Some(Channel::Chat),
                created_at: Some(UnixMicros(1_600_000_000_000_000)),
                customer_id: "c-1".into(),
                ces: Some(1),
                ..FeedbackDraft::default()
            },
            analysed(
                SentimentLabel::Mixed,
                0.0,
                &[("delivery", ""), ("price", "")],
                1,
            ),
        ),
    ]
}

/// The texts of the fixture's items (what a search shows snippets of).
#[cfg(test)]
pub(crate) fn fixture_texts() -> Vec<String> {
    fixture_items()
        .into_iter()
        .map(|item| item.feedback.text)
        .collect()
}

#[cfg(test)]
mod doc_store_tests {
    use tantivy::store::Compressor;
    use tantivy::DocAddress;

    use super::*;

    /// Found by probing: a rebuild on a full disk failed with ENOSPC, was
    /// taken for damage, and the (empty) index was moved aside at each start.
    #[test]
    fn a_full_disk_or_no_descriptor_left_is_no_damage() {
        use std::io::{Error, ErrorKind};
        use tantivy::directory::error::OpenReadError;
        let io = |e: Error| IndexError::Tantivy(tantivy::TantivyError::IoError(Arc::new(e)));
        for not_damage in [
            io(Error::from_raw_os_error(28)),
            io(Error::new(ErrorKind::StorageFull, "no room at path x")),
            io(Error::from_raw_os_error(30)),
            IndexError::Tantivy(tantivy::TantivyError::OpenReadError(
                OpenReadError::IoError {
                    io_error: Arc::new(Error::from_raw_os_error(24)),
                    filepath: "x".into(),
                },
            )),
        ] {
            assert!(!is_damage(&not_damage), "{not_damage}");
        }
        for damage in [
            io(Error::new(ErrorKind::UnexpectedEof, "short file")),
            IndexError::Tantivy(tantivy::TantivyError::InvalidArgument("x".into())),
        ] {
            assert!(is_damage(&damage), "{damage}");
        }
    }

    /// Opening an index removes the other `--index-phrases` setting's
    /// folder and older schema versions', and keeps damaged folders set
    /// aside, the vector index and anything else.
    #[test]
    fn only_the_open_layout_and_kept_folders_remain() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join("index");
        let old = SCHEMA_VERSION - 1;
        let names = [
            format!("v{old}"),
            format!("v{SCHEMA_VERSION}-nopairs"),
            format!("v{old}-nopairs"),
            format!("v{SCHEMA_VERSION}.damaged"),
            "vectors".to_string(),
            "v".to_string(),
            "notes".to_string(),
        ];
        for name in &names {
            std::fs::create_dir_all(root.join(name).join("inner")).unwrap();
        }
        let index = SearchIndex::open(
            data.path(),
            Store::open(data.path(), 4).unwrap(),
            IndexSettings::for_tests(),
        )
        .unwrap();
        drop(index);
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            format!("v{SCHEMA_VERSION}"),
            format!("v{SCHEMA_VERSION}.damaged"),
            "vectors".to_string(),
            "v".to_string(),
            "notes".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    /// Item `i` of the backlog tests.
    fn backlog_item(i: usize) -> crate::domain::Feedback {
        crate::domain::FeedbackDraft {
            id: format!("b-{i}"),
            text: format!("backlog item {i}"),
            ..Default::default()
        }
        .validate(crate::domain::UnixMicros(0))
        .unwrap()
    }

    /// Waits (up to 120 s) until `index` applied the change log through `seq`.
    fn wait_indexed(index: &SearchIndex, seq: u64) {
        let started = std::time::Instant::now();
        while index.indexed_seq() < seq {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not indexed through {seq} (at {})",
                index.indexed_seq()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens the index of `data_dir`, lets it apply item 0 and closes it:
    /// an index with a commit (a payload) and one segment.
    async fn committed_first_item(data_dir: &Path, store: &Store, settings: &IndexSettings) {
        let index = SearchIndex::open(data_dir, store.clone(), settings.clone()).unwrap();
        store
            .upsert(vec![backlog_item(0)], crate::store::QueueMode::Wait)
            .await
            .unwrap();
        wait_indexed(&index, store.stats().unwrap().last_seq);
        index.shutdown();
    }

    /// Writes items `range` to the store, 1,000 a transaction; the last seq.
    async fn write_backlog(store: &Store, range: std::ops::RangeInclusive<usize>) -> u64 {
        for chunk in range.collect::<Vec<_>>().chunks(1_000) {
            let items = chunk.iter().map(|&i| backlog_item(i)).collect();
            store
                .upsert(items, crate::store::QueueMode::Wait)
                .await
                .unwrap();
        }
        store.stats().unwrap().last_seq
    }

    /// A backlog longer than one read of the change log (here: items the
    /// store holds from before the index opened) is applied in one commit
    /// of one segment per writer thread, not one commit per read, and ends
    /// complete and verified.
    #[tokio::test]
    async fn a_backlog_is_committed_in_one_commit() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let settings = IndexSettings {
            // A budget the round cannot exhaust.
            refresh_interval: Duration::from_secs(60),
            ..IndexSettings::for_tests()
        };
        // An index with a commit (a payload) and one segment.
        committed_first_item(data.path(), &store, &settings).await;
        let n = indexer::MAX_CHANGES_PER_READ * 2 + 500;
        let last = write_backlog(&store, 1..=n).await;
        let index = SearchIndex::open(data.path(), store, settings).unwrap();
        wait_indexed(&index, last);
        let searcher = index.shared.reader.searcher();
        assert_eq!(searcher.num_docs(), n as u64 + 1);
        // The first commit's segment and the backlog's (the writer's
        // budget holds the backlog's documents: no flush between).
        assert_eq!(
            searcher.segment_readers().len(),
            2,
            "one commit, one writer thread"
        );
        index.shutdown();
        // The payload is the last seq: reopened, nothing is applied again.
        drop(searcher);
        drop(index);
        let (reopened, _, _) = open_index(&index_dir(data.path(), true), true).unwrap();
        assert_eq!(committed_seq(&reopened).unwrap(), last);
    }

    /// Found by probing: an index copied before its store (a naive copy of
    /// a running server's data dir) whose missing changes the store had
    /// already trimmed never caught up: new texts unfound, removed items
    /// counted, reads waiting for removals it could not apply. It is
    /// rebuilt at open.
    #[tokio::test]
    async fn an_index_behind_the_trimmed_change_log_is_rebuilt() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let settings = IndexSettings::for_tests();
        committed_first_item(data.path(), &store, &settings).await;
        // Changes this index never saw, trimmed as another index's commit
        // would trim them: a new item, a new text for item 0 and a removal.
        write_backlog(&store, 1..=3).await;
        let replaced = crate::domain::FeedbackDraft {
            id: "b-0".into(),
            text: "zebra crossing".into(),
            ..Default::default()
        }
        .validate(crate::domain::UnixMicros(0))
        .unwrap();
        store
            .upsert(vec![replaced], crate::store::QueueMode::Wait)
            .await
            .unwrap();
        store
            .delete(
                vec![crate::domain::FeedbackId::parse("b-2").unwrap()],
                crate::store::QueueMode::Wait,
            )
            .await
            .unwrap();
        let last = store.stats().unwrap().last_seq;
        let trim = store.clone();
        tokio::task::spawn_blocking(move || trim.trim_changes_through(last))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.stats().unwrap().first_change_seq, None);

        // A rebuild writes to the store (blocking): off the runtime.
        let (dir, opening) = (data.path().to_path_buf(), store.clone());
        let index = tokio::task::spawn_blocking(move || SearchIndex::open(&dir, opening, settings))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            index.indexed_seq(),
            last,
            "rebuilt through the store's last seq"
        );
        assert_eq!(index.removals_left(), 0);
        let mut query = search::tests::search_query_template();
        let all = index.search(&query).unwrap();
        assert_eq!(all.total_hits, 3, "b-0, b-1, b-3");
        query.text = "zebra".into();
        assert_eq!(index.search(&query).unwrap().total_hits, 1, "the new text");
        index.shutdown();
    }

    /// An index opened behind the store's change log (a crash) owes the
    /// removals the store committed before: `removals_left` counts down to
    /// 0, and from then on a search no longer counts the removed item.
    #[tokio::test]
    async fn removals_made_before_the_index_opened_are_owed_until_applied() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let settings = IndexSettings::for_tests();
        committed_first_item(data.path(), &store, &settings).await;
        let n = indexer::MAX_CHANGES_PER_READ * 2;
        write_backlog(&store, 1..=n).await;
        store
            .delete(
                vec![crate::domain::FeedbackId::parse("b-7").unwrap()],
                crate::store::QueueMode::Wait,
            )
            .await
            .unwrap();
        let last = store.stats().unwrap().last_seq;
        assert_eq!(store.last_removal_seq(), last);
        let index = SearchIndex::open(data.path(), store.clone(), settings.clone()).unwrap();
        // The indexer has 20,000 items to read and index first.
        assert!(index.removals_left() > 0, "owed at open");
        let started = std::time::Instant::now();
        while index.removals_left() > 0 {
            assert!(started.elapsed() < Duration::from_secs(120));
            std::thread::sleep(Duration::from_millis(5));
        }
        let page = index
            .search(&search::tests::search_query_template())
            .unwrap();
        assert_eq!(
            page.total_hits, n as u64,
            "items 0..={n} but the removed one"
        );
        store
            .upsert(vec![backlog_item(n + 1)], crate::store::QueueMode::Wait)
            .await
            .unwrap();
        wait_indexed(&index, store.stats().unwrap().last_seq);
        index.shutdown();
        drop(index);
        drop(store);

        // Both reopened, caught up: nothing is owed (the store knows its
        // last removal, which later writes do not make look newer).
        let mut tries = 0;
        let store = loop {
            match Store::open(data.path(), 4) {
                Err(crate::store::StoreError::InUse { .. }) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(store.last_removal_seq(), last);
        let index = SearchIndex::open(data.path(), store.clone(), settings).unwrap();
        assert_eq!(index.removals_left(), 0);
        index.shutdown();
    }

    /// A commit cut short by a crash (its files written, `meta.json` not)
    /// leaves files that the replay of the same changes from the same
    /// commit names alike: they are removed when the writer opens, and the
    /// index catches up instead of failing every round on
    /// "FileAlreadyExists".
    #[tokio::test]
    async fn a_commit_cut_short_leaves_nothing_in_the_way_of_its_replay() {
        use std::io::Write;
        use tantivy::directory::{Directory, TerminatingWrite};
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let settings = IndexSettings::for_tests();
        committed_first_item(data.path(), &store, &settings).await;
        write_backlog(&store, 1..=20).await;
        let seen = {
            let index = SearchIndex::open(data.path(), store.clone(), settings.clone()).unwrap();
            wait_indexed(&index, store.stats().unwrap().last_seq);
            index.shutdown();
            index.indexed_seq()
        };
        store
            .delete(
                vec![crate::domain::FeedbackId::parse("b-3").unwrap()],
                crate::store::QueueMode::Wait,
            )
            .await
            .unwrap();
        let last = store.stats().unwrap().last_seq;
        assert_eq!(last, seen + 1);

        // The files the replay's commit writes: the same change applied
        // and committed in a copy of the folder.
        let dir = index_dir(data.path(), settings.phrase_pairs);
        let names = |dir: &Path| -> std::collections::BTreeSet<String> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let scratch = tempfile::tempdir().unwrap();
        for name in names(&dir) {
            if !name.ends_with(".lock") {
                std::fs::copy(dir.join(&name), scratch.path().join(&name)).unwrap();
            }
        }
        let written: Vec<String> = {
            let (copy, fields, _) = open_index(scratch.path(), settings.phrase_pairs).unwrap();
            let mut writer: IndexWriter<TantivyDocument> =
                copy.writer_with_num_threads(1, 15_000_000).unwrap();
            writer.delete_term(tantivy::Term::from_field_text(fields.id, "b-3"));
            writer.commit().unwrap();
            let before = names(&dir);
            names(scratch.path())
                .into_iter()
                .filter(|n| !before.contains(n) && n.ends_with(".del"))
                .collect()
        };
        assert!(!written.is_empty(), "the replay writes a delete file");
        // The killed process had written them, registered as the index's.
        {
            let (index, _, _) = open_index(&dir, settings.phrase_pairs).unwrap();
            for name in &written {
                let mut file = index.directory().open_write(Path::new(name)).unwrap();
                file.write_all(b"left by a killed process").unwrap();
                file.terminate().unwrap();
            }
        }

        let index = SearchIndex::open(data.path(), store.clone(), settings).unwrap();
        wait_indexed(&index, last);
        assert_eq!(index.removals_left(), 0);
        index.shutdown();
    }

    /// An index folder made anew over a store without items (its only
    /// customer erased, the folder then lost) is complete through the
    /// store's last seq: nothing is owed, and the index does not lag.
    #[tokio::test]
    async fn a_new_index_over_an_emptied_store_owes_nothing() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let settings = IndexSettings::for_tests();
        committed_first_item(data.path(), &store, &settings).await;
        store
            .delete(
                vec![crate::domain::FeedbackId::parse("b-0").unwrap()],
                crate::store::QueueMode::Wait,
            )
            .await
            .unwrap();
        let last = store.stats().unwrap().last_seq;
        let index = SearchIndex::open(data.path(), store.clone(), settings.clone()).unwrap();
        wait_indexed(&index, last);
        index.shutdown();
        drop(index);
        std::fs::remove_dir_all(index_dir(data.path(), settings.phrase_pairs)).unwrap();
        let index = SearchIndex::open(data.path(), store.clone(), settings).unwrap();
        assert_eq!(index.removals_left(), 0);
        assert_eq!(index.indexed_seq(), last);
        index.shutdown();
    }

    /// A merge that ends after the last commit is searched without a
    /// further write: the reader follows it (`Indexer::follow_merges`)
    /// instead of searching the merged-away segments, whose files are
    /// already deleted, until the next commit.
    #[tokio::test]
    async fn the_reader_follows_a_merge_that_ends_after_the_last_commit() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let index =
            SearchIndex::open(data.path(), store.clone(), IndexSettings::for_tests()).unwrap();
        // Eight commits of one segment each (one writer thread): tantivy's
        // merge policy joins them in the background after the eighth.
        for batch in 0..8 {
            let last = write_backlog(&store, batch * 100 + 1..=batch * 100 + 100).await;
            wait_indexed(&index, last);
        }
        let segment_ids = |searcher: &Searcher| {
            let mut ids: Vec<SegmentId> = searcher
                .segment_readers()
                .iter()
                .map(|s| s.segment_id())
                .collect();
            ids.sort();
            ids
        };
        let started = std::time::Instant::now();
        loop {
            let searcher = index.shared.reader.searcher();
            let mut committed = searcher.index().searchable_segment_ids().unwrap();
            committed.sort();
            let searched = segment_ids(&searcher);
            if committed.len() < 8 && searched == committed {
                assert_eq!(searcher.num_docs(), 800);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the reader searches {} segments, {} are committed",
                searched.len(),
                committed.len()
            );
            drop(searcher);
            std::thread::sleep(Duration::from_millis(50));
        }
        // The indexer reads the date blocks of the segments it brought
        // (`warm_dates`), before any date sort. (These items share one
        // date: no segment counts as scattered, so none gets a date order;
        // the unit test `a_warm_reads_the_date_order_where_dates_follow_no_order`
        // covers that.)
        let started = std::time::Instant::now();
        while !index
            .shared
            .reader
            .searcher()
            .segment_readers()
            .iter()
            .all(|segment| index.shared.columns.dates_read(segment) == (true, false))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the indexer did not read the dates of the searched segments"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        index.shutdown();
    }

    /// A shutdown behind a backlog commits what the indexer applied within
    /// its drain time and stops instead of indexing the whole backlog first
    /// (a SIGTERM must not outlast an orchestrator's grace period); the next
    /// start applies the rest, and nothing is lost.
    #[tokio::test]
    async fn a_shutdown_leaves_a_backlog_to_the_next_start() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let settings = IndexSettings::for_tests();
        // An index with a commit, then a backlog written while it is closed.
        committed_first_item(data.path(), &store, &settings).await;
        let n = 30_000;
        let last = write_backlog(&store, 1..=n).await;
        let no_drain = IndexSettings {
            stop_drain: Duration::ZERO,
            ..settings.clone()
        };
        let index = SearchIndex::open(data.path(), store.clone(), no_drain).unwrap();
        index.shutdown();
        let stopped_at = index.indexed_seq();
        assert!(
            stopped_at < last,
            "the shutdown indexed the whole backlog ({stopped_at} of {last})"
        );
        drop(index);
        let index = SearchIndex::open(data.path(), store.clone(), settings.clone()).unwrap();
        wait_indexed(&index, last);
        assert_eq!(index.shared.reader.searcher().num_docs(), n as u64 + 1);
        index.shutdown();
        drop(index);
        // A short backlog is applied within the drain time (2 s here): a
        // clean restart then finds it searchable at once.
        let last = write_backlog(&store, n + 1..=n + 300).await;
        let index = SearchIndex::open(data.path(), store, settings).unwrap();
        index.shutdown();
        assert_eq!(index.indexed_seq(), last);
    }

    /// A new index stores its ids uncompressed in small blocks; an index an
    /// older build created (tantivy's defaults, lz4) keeps its settings, and
    /// its ids still read back.
    #[test]
    fn new_indexes_store_ids_uncompressed_and_old_ones_keep_lz4() {
        let fresh = tempfile::tempdir().unwrap();
        let (index, _, created) = open_index(fresh.path(), true).unwrap();
        assert!(created);
        assert_eq!(index.settings().docstore_compression, Compressor::None);
        assert_eq!(index.settings().docstore_blocksize, 4096);

        let old = tempfile::tempdir().unwrap();
        let (schema, fields) = build_schema();
        let index = Index::create_in_dir(old.path(), schema).unwrap();
        assert_eq!(index.settings().docstore_compression, Compressor::Lz4);
        schema::register_analyzers(index.tokenizers());
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut doc = TantivyDocument::default();
        doc.add_text(fields.id, "old-1");
        writer.add_document(doc).unwrap();
        writer.commit().unwrap();
        drop(writer);
        drop(index);
        let (index, _, created) = open_index(old.path(), true).unwrap();
        assert!(!created);
        assert_eq!(index.settings().docstore_compression, Compressor::Lz4);
        let searcher = index.reader().unwrap().searcher();
        let columns = collect::ColumnCache::default();
        let id = search::doc_id(&searcher, &columns, DocAddress::new(0, 0)).unwrap();
        assert_eq!(id.as_str(), "old-1");
    }

    /// `reindex` rewrites an index an older build created (lz4, no sort)
    /// with the settings of a new one, and every stored item comes back.
    #[tokio::test]
    async fn reindex_makes_an_old_index_anew() {
        use crate::domain::{FeedbackDraft, UnixMicros};
        use crate::store::{QueueMode, Store};

        let data = tempfile::tempdir().unwrap();
        {
            let store = Store::open(data.path(), 4).unwrap();
            let items = (0..50)
                .map(|i| {
                    FeedbackDraft {
                        id: format!("r-{i}"),
                        text: format!("text number {i}"),
                        ..Default::default()
                    }
                    .validate(UnixMicros(0))
                    .unwrap()
                })
                .collect();
            store.upsert(items, QueueMode::Wait).await.unwrap();
        }
        let dir = index_dir(data.path(), true);
        std::fs::create_dir_all(&dir).unwrap();
        let (schema, _) = build_schema();
        drop(Index::create_in_dir(&dir, schema).unwrap());
        let (index, _, _) = open_index(&dir, true).unwrap();
        assert_ne!(index.settings(), &new_index_settings());
        drop(index);

        let settings = IndexSettings::for_tests();
        // The store's writer thread lets the database go once it sees its
        // queue closed.
        let mut tries = 0;
        let count = loop {
            match reindex(data.path(), &settings) {
                Err(IndexError::Store(crate::store::StoreError::InUse { .. })) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(count, 50);
        let (index, _, created) = open_index(&dir, true).unwrap();
        assert!(!created);
        assert_eq!(index.settings(), &new_index_settings());
        assert_eq!(index.reader().unwrap().searcher().num_docs(), 50);
    }

    /// A new index keeps every segment's documents in ingest (seq) order,
    /// whatever order the writer gets them in (a re-analysed item comes
    /// back with its old seq, a rebuild reads the store by id) and whatever
    /// segments a merge joins: the tie rule of relevance pages
    /// (`collect.rs`) then applies to every segment.
    #[test]
    fn new_indexes_keep_every_segment_in_ingest_order() {
        use crate::index::add_word_item;
        let dir = tempfile::tempdir().unwrap();
        let (index, fields, _) = open_index(dir.path(), true).unwrap();
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(2, 40_000_000).unwrap();
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        // Seqs out of order within each commit, and commits whose seq
        // ranges interleave.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let mut seqs: Vec<u64> = (0..3_000).collect();
        for i in (1..seqs.len()).rev() {
            seqs.swap(i, next() as usize % (i + 1));
        }
        for batch in seqs.chunks(700) {
            for &seq in batch {
                add_word_item(&writer, &fields, seq);
            }
            writer.commit().unwrap();
        }
        let ascending = |index: &Index| {
            let searcher = index.reader().unwrap().searcher();
            let mut docs = 0;
            for segment in searcher.segment_readers() {
                let seq = segment.fast_fields().u64(schema::field::SEQ).unwrap();
                let seq = seq.first_or_default_col(0);
                let values: Vec<u64> = (0..segment.max_doc()).map(|d| seq.get_val(d)).collect();
                assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
                docs += values.len();
            }
            (searcher.segment_readers().len(), docs)
        };
        let (segments, docs) = ascending(&index);
        assert!(segments >= 5, "{segments} segments");
        assert_eq!(docs, 3_000);
        // Merges join segments whose seq ranges interleave.
        let ids = index.searchable_segment_ids().unwrap();
        writer.merge(&ids[..3]).wait().unwrap();
        writer
            .merge(&index.searchable_segment_ids().unwrap())
            .wait()
            .unwrap();
        assert_eq!(ascending(&index), (1, 3_000));
    }
}
