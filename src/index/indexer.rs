//! The indexer thread: follows the store's change log, commits in batches
//! whose payload is the seq through which the index is known complete,
//! checks complete batches against the store's item count, and rebuilds the
//! index from the store when they disagree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::{Index, IndexWriter, TantivyDocument, Term};

use super::schema::{to_document, Fields};
use super::vectors::Current;
use super::{committed_seq, new_writer, IndexError, IndexSettings, Shared};
use crate::domain::AnalysisState;
use crate::store::{OfflineStore, Store, StoreError};

/// Rebuilds the whole index from `store`; returns the items indexed and the
/// store's last seq (the payload the index is complete through).
pub(super) fn rebuild(
    store: &OfflineStore,
    fields: &Fields,
    writer: &mut IndexWriter<TantivyDocument>,
) -> Result<(u64, u64), IndexError> {
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
    Ok((count, last_seq))
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
pub(super) struct Indexer {
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
    /// Starts from the position the open index committed.
    pub(super) fn new(
        shared: Arc<Shared>,
        index: Index,
        writer: IndexWriter<TantivyDocument>,
        store: Store,
        settings: IndexSettings,
    ) -> Self {
        Indexer {
            applied: shared.indexed_seq.load(Ordering::Acquire),
            shared,
            index,
            writer: Some(writer),
            store,
            settings,
        }
    }

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
            let committing = Instant::now();
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&resume_at.to_string());
            prepared.commit()?;
            crate::metrics::observe_index_commit(committing.elapsed());
            self.shared.reload()?;
            observe_freshness(&batch.changes);
            self.sync_vectors(&batch.changes);
            self.applied = last;
            self.shared.indexed_seq.store(last, Ordering::Release);
            tracing::debug!(
                changes = batch.changes.len(),
                last_seq = last,
                "index committed"
            );
        }
        if batch.complete {
            if last.is_none() {
                // Nothing committed now: the reader may predate a commit
                // whose reload failed; once reloaded it shows `applied`.
                self.shared.reload()?;
                self.shared
                    .indexed_seq
                    .fetch_max(self.applied, Ordering::AcqRel);
            }
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

    /// Brings the similarity index in step with changes the index just
    /// made searchable (after the commit, so a key it returns has its
    /// document). A failure leaves it behind until the next restart's
    /// build; indexing goes on.
    fn sync_vectors(&self, changes: &[crate::store::Change]) {
        let changes = changes
            .iter()
            .map(|change| Current {
                id: change.id.clone(),
                version: change
                    .current
                    .as_ref()
                    .map(|item| (item.seq, matches!(item.analysis, AnalysisState::Done(_)))),
            })
            .collect();
        if let Err(error) = self.shared.vectors.apply(&self.store, changes) {
            tracing::error!(%error, "cannot update the similarity index; it misses these changes until the next restart");
        }
    }

    /// After an error: drop the writer (and what it had not committed) and
    /// go back to the last position known complete.
    fn reset(&mut self) {
        self.writer = None;
        match committed_seq(&self.index) {
            Ok(seq) => {
                self.applied = seq;
                // Never above what the reader shows: a commit whose reload
                // failed is on disk but not searchable yet.
                self.shared.indexed_seq.fetch_min(seq, Ordering::AcqRel);
            }
            Err(error) => tracing::warn!(%error, "cannot read the index position"),
        }
    }

    /// Rebuilds the whole index from the store.
    pub(super) fn rebuild(&mut self) -> Result<(), IndexError> {
        let fields = self.shared.fields.clone();
        let view = self.store.offline_view()?;
        let (_, last) = rebuild(&view, &fields, self.writer()?)?;
        self.shared.reload()?;
        self.applied = last;
        self.shared.indexed_seq.store(last, Ordering::Release);
        if let Err(error) = self.store.trim_changes_through(last) {
            tracing::warn!(%error, "cannot trim the change log after the rebuild");
        }
        Ok(())
    }
}

/// Ingest-to-searchable time of the item versions this commit made
/// searchable: the change a version was stored with has the version's own
/// seq (later entries of the same version, e.g. its analysis, do not count).
fn observe_freshness(changes: &[crate::store::Change]) {
    let now = crate::domain::UnixMicros::now().0;
    for item in changes
        .iter()
        .filter_map(|c| c.current.as_ref().filter(|item| item.seq == c.seq))
    {
        let micros = u64::try_from(now - item.ingested_at.0).unwrap_or(0);
        crate::metrics::observe_ingest_to_searchable(Duration::from_micros(micros));
    }
}

pub(super) fn run_indexer(mut indexer: Indexer, stop: Arc<AtomicBool>) {
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
