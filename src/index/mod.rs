//! The tantivy index: schema, the indexer thread that follows the store's
//! change log, and search (query, filters, sort, cursor, facets, snippets).
//!
//! Invariants:
//! - The index is derived data. It is written only by the indexer thread,
//!   which applies the store's change log in `seq` order and stores the last
//!   applied `seq` as the commit payload; on startup it resumes from there.
//!   A missing or outdated-schema index is rebuilt from the store.
//! - Refresh policy: the indexer commits at most once per
//!   `refresh_interval` (default 250 ms) and reloads the searcher right after,
//!   so an acknowledged write is searchable within interval + commit time.
//! - Search never blocks the async executor: callers run it on the blocking pool.

mod cursor;
mod query;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::{AggContextParams, AggregationCollector, AggregationLimitsGuard};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::QueryParser;
use tantivy::schema::Value;
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use crate::domain::limits::FACET_VALUES_PER_FIELD;
use crate::domain::{FacetCounts, FeedbackId, SearchQuery, Snippet, SortOrder};
use crate::store::{OfflineStore, Store, StoreError};
use cursor::{Cursor, SortKey};
use schema::{build_schema, to_document, Fields, SCHEMA_VERSION, TEXT_TOKENIZER};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("malformed query at byte {position}: {message}")]
    InvalidQuery { position: usize, message: String },
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    #[error("invalid facet field `{0}`: use channel, journey_stage, product, language, tags, customer_id or attributes.KEY")]
    InvalidFacet(String),
    #[error("search engine error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("cannot prepare the index folder {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the index holds {docs} documents where the store holds {items} items")]
    CountMismatch { docs: u64, items: u64 },
}

/// Tuning of the indexer.
#[derive(Clone, Debug)]
pub struct IndexSettings {
    pub refresh_interval: Duration,
    pub writer_threads: usize,
    pub writer_memory_bytes: usize,
}

/// Ids (with scores) of one page of hits, before the items are fetched.
pub struct IndexPage {
    pub hits: Vec<(FeedbackId, f32)>,
    pub total_hits: u64,
    pub next_cursor: Option<String>,
    pub facets: Vec<FacetCounts>,
    snippets: Option<SnippetGenerator>,
}

impl IndexPage {
    /// A snippet of `text` around the query's terms, if any occur in it.
    pub fn snippet(&self, text: &str) -> Option<Snippet> {
        let generator = self.snippets.as_ref()?;
        let snippet = generator.snippet(text);
        if snippet.highlighted().is_empty() {
            return None;
        }
        Some(Snippet {
            fragment: snippet.fragment().to_string(),
            highlights: snippet
                .highlighted()
                .iter()
                .map(|r| (r.start, r.end))
                .collect(),
            html: snippet.to_html(),
        })
    }
}

struct Shared {
    fields: Fields,
    reader: IndexReader,
    parser: QueryParser,
    indexed_seq: AtomicU64,
}

/// Handle to the index; cheap to clone.
#[derive(Clone)]
pub struct SearchIndex {
    shared: Arc<Shared>,
    indexer: Arc<Mutex<Option<IndexerThread>>>,
}

struct IndexerThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("index").join(format!("v{SCHEMA_VERSION}"))
}

fn open_index(dir: &Path) -> Result<(Index, Fields, bool), IndexError> {
    let (schema, fields) = build_schema();
    std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let directory =
        tantivy::directory::MmapDirectory::open(dir).map_err(|e| tantivy::TantivyError::from(e))?;
    let created = !Index::exists(&directory).map_err(|e| tantivy::TantivyError::from(e))?;
    let index = Index::open_or_create(directory, schema)?;
    index
        .tokenizers()
        .register(TEXT_TOKENIZER, schema::text_analyzer());
    Ok((index, fields, created))
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
    needs_rebuild: bool,
}

/// Opens the index, its writer and a reader: everything that reads the
/// index files, so damage shows here and not on the first search.
fn open_for_indexing(dir: &Path, settings: &IndexSettings) -> Result<Opened, IndexError> {
    let (index, fields, created) = open_index(dir)?;
    committed_seq(&index)?;
    let writer = new_writer(&index, settings)?;
    let reader: IndexReader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    // Touch every segment's term dictionaries and fast fields once.
    let searcher = reader.searcher();
    for segment in searcher.segment_readers() {
        segment.fast_fields().u64("seq")?;
        segment.inverted_index(fields.id)?;
        segment.inverted_index(fields.text)?;
    }
    Ok(Opened {
        index,
        fields,
        writer,
        reader,
        needs_rebuild: created,
    })
}

fn new_writer(
    index: &Index,
    settings: &IndexSettings,
) -> Result<IndexWriter<TantivyDocument>, IndexError> {
    Ok(index
        .writer_with_num_threads(settings.writer_threads.max(1), settings.writer_memory_bytes)?)
}

/// Errors that mean the index files are damaged (as opposed to the folder
/// being unwritable, or held by another process).
fn is_damage(error: &IndexError) -> bool {
    match error {
        IndexError::Tantivy(tantivy::TantivyError::LockFailure(..)) => false,
        IndexError::Tantivy(_) => true,
        IndexError::InvalidQuery { .. }
        | IndexError::InvalidCursor(_)
        | IndexError::InvalidFacet(_)
        | IndexError::Io { .. }
        | IndexError::Store(_)
        | IndexError::CountMismatch { .. } => false,
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
        source,
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
        let dir = index_dir(data_dir);
        let opened = match open_for_indexing(&dir, &settings) {
            Ok(opened) => opened,
            Err(error) if is_damage(&error) => {
                // The index is derived data: a damaged one (a missing or
                // truncated segment file, a garbled meta.json) is moved aside
                // and rebuilt from the store instead of refusing to start.
                let aside = quarantine(&dir)?;
                tracing::error!(
                    %error,
                    moved_to = %aside.display(),
                    "THE INDEX IS DAMAGED: moved it aside; rebuilding it from the store"
                );
                open_for_indexing(&dir, &settings)?
            }
            Err(error) => return Err(error),
        };
        let Opened {
            index,
            fields,
            mut writer,
            reader,
            mut needs_rebuild,
        } = opened;
        needs_rebuild |= index.load_metas()?.payload.is_none();
        // A new folder, or one whose first rebuild never committed (no payload).
        if needs_rebuild {
            let stats = store.stats()?;
            if stats.items > 0 {
                tracing::info!(
                    items = stats.items,
                    "index missing: rebuilding it from the store"
                );
                let last = rebuild(&store.offline_view()?, &fields, &mut writer)?;
                reader.reload()?;
                if let Err(error) = store.trim_changes_through(last) {
                    tracing::warn!(%error, "cannot trim the change log after the rebuild");
                }
            }
        }
        let mut parser = QueryParser::for_index(&index, vec![fields.text]);
        parser.set_conjunction_by_default();
        let shared = Arc::new(Shared {
            indexed_seq: AtomicU64::new(committed_seq(&index)?),
            fields,
            reader,
            parser,
        });
        tracing::info!(
            dir = %dir.display(),
            indexed_seq = shared.indexed_seq.load(Ordering::Relaxed),
            "index opened"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let indexer = Indexer {
                applied: shared.indexed_seq.load(Ordering::Acquire),
                shared: shared.clone(),
                index,
                writer: Some(writer),
                store,
                settings,
            };
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("indexer".into())
                .spawn(move || run_indexer(indexer, stop))
                .map_err(|source| IndexError::Io {
                    path: "indexer thread".into(),
                    source,
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

    /// Applies what is left of the change log, commits and stops the indexer.
    pub fn shutdown(&self) {
        let thread = self
            .indexer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            thread.stop.store(true, Ordering::Release);
            if thread.handle.join().is_err() {
                tracing::error!("indexer thread panicked");
            }
        }
    }

    /// Runs a search (blocking).
    pub fn search(&self, query: &SearchQuery) -> Result<IndexPage, IndexError> {
        let shared = &self.shared;
        let fields = &shared.fields;
        let fingerprint = cursor::fingerprint(query);
        let after = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, fingerprint))
            .transpose()?;
        let facet_aggs = facet_request(&query.facets)?;

        let user_query = query::parse_user_query(&shared.parser, &query.text)?;
        let snippets_wanted = !query.text.trim().is_empty();
        let full_query = query::combine(
            user_query.box_clone(),
            query::filter_clauses(fields, &query.filter),
        );
        let searcher = shared.reader.searcher();
        let sort = query.sort;
        let after_key = after.map(|c| c.key);
        let top = TopDocs::with_limit(query.limit + 1).tweak_score(
            move |segment: &tantivy::SegmentReader| {
                let seq = segment
                    .fast_fields()
                    .u64("seq")
                    .expect("seq is a fast field")
                    .first_or_default_col(0);
                let created = segment
                    .fast_fields()
                    .date("created_at")
                    .expect("created_at is a fast field")
                    .first_or_default_col(tantivy::DateTime::MIN);
                let sentiment = matches!(sort, SortOrder::MostNegative | SortOrder::MostPositive)
                    .then(|| segment.fast_fields().f64("sentiment_score").ok())
                    .flatten();
                move |doc: tantivy::DocId, score: tantivy::Score| {
                    let key = SortKey::new(
                        sort,
                        score,
                        created.get_val(doc).into_timestamp_micros(),
                        seq.get_val(doc),
                        sentiment.as_ref().and_then(|column| column.first(doc)),
                    );
                    match after_key {
                        Some(after) if key >= after => SortKey::EXHAUSTED,
                        _ => key,
                    }
                }
            },
        );
        let (mut top_docs, total_hits) = searcher.search(&full_query, &(top, Count))?;
        top_docs.retain(|(key, _)| *key != SortKey::EXHAUSTED);
        let has_more = top_docs.len() > query.limit;
        top_docs.truncate(query.limit);
        let next_cursor = match (has_more, top_docs.last()) {
            (true, Some((key, _))) => Some(Cursor { key: *key }.encode(fingerprint)),
            _ => None,
        };
        let hits = top_docs
            .iter()
            .map(|(key, address)| Ok((doc_id(&searcher, fields, *address)?, key.score(sort))))
            .collect::<Result<Vec<_>, IndexError>>()?;

        let facets = match facet_aggs {
            Some((names, aggs)) => collect_facets(&searcher, &full_query, names, aggs)?,
            None => Vec::new(),
        };
        let snippets = if snippets_wanted {
            let mut generator = SnippetGenerator::create(&searcher, &*user_query, fields.text)?;
            generator.set_max_num_chars(200);
            Some(generator)
        } else {
            None
        };
        Ok(IndexPage {
            hits,
            total_hits: total_hits as u64,
            next_cursor,
            facets,
            snippets,
        })
    }
}

fn doc_id(
    searcher: &Searcher,
    fields: &Fields,
    address: DocAddress,
) -> Result<FeedbackId, IndexError> {
    let doc: TantivyDocument = searcher.doc(address)?;
    let raw = doc
        .get_first(fields.id)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    FeedbackId::parse(&raw).map_err(|reason| {
        IndexError::Tantivy(tantivy::TantivyError::InternalError(format!(
            "indexed document has an invalid id {raw:?}: {reason}"
        )))
    })
}

/// Facet field names -> (names, aggregation request); None when no facets.
fn facet_request(facets: &[String]) -> Result<Option<(Vec<String>, Aggregations)>, IndexError> {
    if facets.is_empty() {
        return Ok(None);
    }
    let mut request = serde_json::Map::new();
    for (i, field) in facets.iter().enumerate() {
        let valid = schema::KEYWORD_FIELDS.contains(&field.as_str())
            || field.strip_prefix("attributes.").is_some_and(|key| {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid {
            return Err(IndexError::InvalidFacet(field.clone()));
        }
        request.insert(
            format!("f{i}"),
            serde_json::json!({"terms": {"field": field, "size": FACET_VALUES_PER_FIELD}}),
        );
    }
    let aggs: Aggregations = serde_json::from_value(serde_json::Value::Object(request))
        .map_err(|e| IndexError::InvalidFacet(e.to_string()))?;
    Ok(Some((facets.to_vec(), aggs)))
}

fn collect_facets(
    searcher: &Searcher,
    query: &dyn tantivy::query::Query,
    names: Vec<String>,
    aggs: Aggregations,
) -> Result<Vec<FacetCounts>, IndexError> {
    let collector = AggregationCollector::from_aggs(
        aggs,
        AggContextParams::new(
            AggregationLimitsGuard::default(),
            searcher.index().tokenizers().clone(),
        ),
    );
    let results = searcher.search(query, &collector)?;
    let json = serde_json::to_value(&results)
        .map_err(|e| tantivy::TantivyError::InternalError(format!("aggregation result: {e}")))?;
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, field)| {
            let counts = json
                .get(format!("f{i}"))
                .and_then(|agg| agg.get("buckets"))
                .and_then(|b| b.as_array())
                .map(|buckets| {
                    buckets
                        .iter()
                        .filter_map(|b| {
                            let key = match b.get("key")? {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            Some((key, b.get("doc_count")?.as_u64()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            FacetCounts { field, counts }
        })
        .collect())
}

fn rebuild(
    store: &OfflineStore,
    fields: &Fields,
    writer: &mut IndexWriter<TantivyDocument>,
) -> Result<u64, IndexError> {
    let started = Instant::now();
    writer.delete_all_documents()?;
    let mut count = 0u64;
    let last_seq = store.for_each_item(|item| {
        writer
            .add_document(to_document(fields, &item))
            .map_err(|e| StoreError::WriteFailed(format!("indexing {}: {e}", item.feedback.id)))?;
        count += 1;
        Ok(())
    })?;
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&last_seq.to_string());
    prepared.commit()?;
    tracing::info!(
        items = count,
        last_seq,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index rebuilt"
    );
    Ok(count)
}

/// Rebuilds the index of `data_dir` from its store (the server must be stopped).
pub fn reindex(data_dir: &Path, settings: &IndexSettings) -> Result<u64, IndexError> {
    let store = Store::open_offline(data_dir)?;
    let dir = index_dir(data_dir);
    let (index, fields, _) = open_index(&dir)?;
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(settings.writer_threads.max(1), settings.writer_memory_bytes)?;
    let count = rebuild(&store, &fields, &mut writer)?;
    writer.wait_merging_threads()?;
    Ok(count)
}

/// Change-log entries applied per commit at most.
const MAX_CHANGES_PER_COMMIT: usize = 10_000;

/// The indexer thread's state.
///
/// The commit payload is the seq through which the index is known complete:
/// a commit that applied every change up to a store snapshot is checked
/// against that snapshot's item count before it counts as verified, and the
/// change log is trimmed only through a verified seq. After any indexing
/// error the writer is dropped (a tantivy writer whose worker died would
/// commit later payloads without the documents it lost) and re-created, and
/// indexing resumes from the payload on disk.
struct Indexer {
    shared: Arc<Shared>,
    index: Index,
    /// None after an error, until a new writer could be opened.
    writer: Option<IndexWriter<TantivyDocument>>,
    store: Store,
    settings: IndexSettings,
    /// Last seq applied and committed (searchable).
    applied: u64,
}

impl Indexer {
    fn writer(&mut self) -> Result<&mut IndexWriter<TantivyDocument>, IndexError> {
        if self.writer.is_none() {
            self.writer = Some(new_writer(&self.index, &self.settings)?);
            tracing::info!("index writer re-opened");
        }
        Ok(self.writer.as_mut().expect("just set"))
    }

    /// Applies up to `MAX_CHANGES_PER_COMMIT` change-log entries and commits;
    /// verifies the result when the batch reached the store's snapshot.
    /// Returns the last applied seq, if anything was applied.
    fn apply_changes(&mut self) -> Result<Option<u64>, IndexError> {
        let batch = self
            .store
            .changes_after(self.applied, MAX_CHANGES_PER_COMMIT)?;
        let last = batch.changes.last().map(|c| c.seq);
        if let Some(last) = last {
            let fields = self.shared.fields.clone();
            let resume_at = if batch.complete {
                last
            } else {
                committed_seq(&self.index)?
            };
            let writer = self.writer()?;
            for change in &batch.changes {
                writer.delete_term(Term::from_field_text(fields.id, change.id.as_str()));
                if let Some(current) = &change.current {
                    // An older change-log entry of an item that was written
                    // again later is applied with the current version; the
                    // later entry then replaces it with the same document.
                    writer.add_document(to_document(&fields, current))?;
                }
            }
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&resume_at.to_string());
            prepared.commit()?;
            self.shared.reader.reload()?;
            self.applied = last;
            self.shared.indexed_seq.store(last, Ordering::Release);
            tracing::debug!(
                changes = batch.changes.len(),
                last_seq = last,
                "index committed"
            );
        }
        if batch.complete {
            self.shared.reader.reload()?;
            let docs = self.shared.reader.searcher().num_docs();
            if docs != batch.snapshot_items {
                return Err(IndexError::CountMismatch {
                    docs,
                    items: batch.snapshot_items,
                });
            }
            if last.is_some() {
                // Not part of the index's promise: a failed trim only means
                // entries are applied again, which is idempotent.
                if let Err(error) = self.store.trim_changes_through(self.applied) {
                    tracing::warn!(%error, "cannot trim the change log; will retry");
                }
            }
        }
        Ok(last)
    }

    /// After an error: drop the writer (and what it had not committed) and
    /// go back to the last position known complete.
    fn reset(&mut self) {
        self.writer = None;
        match committed_seq(&self.index) {
            Ok(seq) => {
                self.applied = seq;
                self.shared.indexed_seq.store(seq, Ordering::Release);
            }
            Err(error) => tracing::warn!(%error, "cannot read the index position"),
        }
    }

    /// Rebuilds the whole index from the store.
    fn rebuild(&mut self) -> Result<(), IndexError> {
        let fields = self.shared.fields.clone();
        let view = self.store.offline_view()?;
        let last = rebuild(&view, &fields, self.writer()?)?;
        self.shared.reader.reload()?;
        self.applied = last;
        self.shared.indexed_seq.store(last, Ordering::Release);
        if let Err(error) = self.store.trim_changes_through(last) {
            tracing::warn!(%error, "cannot trim the change log after the rebuild");
        }
        Ok(())
    }
}

fn run_indexer(mut indexer: Indexer, stop: Arc<AtomicBool>) {
    let commits = indexer.store.commit_signal();
    let refresh = indexer.settings.refresh_interval;
    let mut last_commit = Instant::now() - refresh;
    let mut failures = 0u32;
    // The first round runs at once, even with nothing new: it checks the
    // index against the store's item count (and rebuilds on a mismatch).
    let mut check_now = true;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let newest = if check_now {
            indexer.applied
        } else {
            commits.wait_newer_than(indexer.applied, Duration::from_millis(100))
        };
        if newest > indexer.applied || stopping || check_now {
            let since = last_commit.elapsed();
            if !stopping && !check_now && since < refresh {
                std::thread::sleep(refresh - since);
            }
            let result = match indexer.apply_changes() {
                Err(IndexError::CountMismatch { docs, items }) => {
                    tracing::error!(
                        docs,
                        items,
                        "the index does not match the store: rebuilding it from the store"
                    );
                    indexer.rebuild().map(|()| Some(indexer.applied))
                }
                other => other,
            };
            match result {
                Ok(Some(_)) => {
                    last_commit = Instant::now();
                    failures = 0;
                    check_now = false;
                    continue; // more may be waiting
                }
                Ok(None) => {
                    failures = 0;
                    check_now = false;
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!(
                        %error,
                        failures,
                        "indexing failed; re-opening the writer and retrying from the last verified position"
                    );
                    indexer.reset();
                    check_now = true;
                    std::thread::sleep(Duration::from_millis(100 * u64::from(failures.min(50))));
                    if stopping && failures > 3 {
                        break;
                    }
                    continue;
                }
            }
        }
        if stopping {
            break;
        }
    }
    if let Some(writer) = indexer.writer.take() {
        if let Err(error) = writer.wait_merging_threads() {
            tracing::warn!(%error, "index merge threads ended with an error");
        }
    }
    tracing::info!(indexed_seq = indexer.applied, "indexer stopped");
}
