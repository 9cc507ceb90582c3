//! The indexer thread: follows the store's change log, commits in batches
//! whose payload is the seq through which the index is known complete,
//! checks complete batches against the store's item count, and rebuilds the
//! index from the store when they disagree.

use std::sync::atomic::Ordering;
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
    commit_through(writer, last_seq)?;
    tracing::info!(
        items = count,
        last_seq,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index rebuilt"
    );
    Ok((count, last_seq))
}

/// Commits what `writer` holds with `seq` as the payload: the seq through
/// which the index is complete, where the indexer resumes.
fn commit_through(writer: &mut IndexWriter<TantivyDocument>, seq: u64) -> Result<(), IndexError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&seq.to_string());
    prepared.commit()?;
    Ok(())
}

/// Change-log entries read from the store at a time (the items they hold
/// are in memory until the writer has them).
pub(super) const MAX_CHANGES_PER_READ: usize = 10_000;

/// Stored item bytes read at a time: a read stops at whichever of this or
/// `MAX_CHANGES_PER_READ` comes first (10,000 items of the longest text
/// would otherwise be ~0.3 GB encoded, and as much again decoded, in
/// memory at once).
const MAX_BYTES_PER_READ: usize = 16 << 20;

/// Change-log entries applied per commit at most.
const MAX_CHANGES_PER_COMMIT: usize = 100_000;

/// Reads applied per commit while the log holds more than one read: a
/// backlog (a bulk load, a restart behind the store) commits once per
/// this many refresh intervals of indexing, or `MAX_CHANGES_PER_COMMIT`
/// changes, instead of once per read. Fewer, larger commits mean fewer
/// segments to write and merge again; items still become searchable
/// every few seconds while the backlog lasts.
const BACKLOG_COMMIT_INTERVALS: u32 = 8;

/// Changes applied between looks at the stop signal: once its drain time
/// is over, a round applies at most this many more, then commits.
const CHANGES_BETWEEN_STOP_CHECKS: usize = 64;

/// A shutdown's request to the indexer: go on applying the change log for
/// `drain` (a short backlog is then searchable at once after a restart),
/// then commit what was applied and stop (a long one waits for the next
/// start instead of holding the shutdown).
pub(super) struct StopSignal {
    drain: Duration,
    asked: std::sync::OnceLock<Instant>,
}

impl StopSignal {
    pub(super) fn new(drain: Duration) -> StopSignal {
        StopSignal {
            drain,
            asked: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn request(&self) {
        let _ = self.asked.set(Instant::now());
    }

    pub(super) fn requested(&self) -> bool {
        self.asked.get().is_some()
    }

    /// Asked, and the drain time is over.
    fn due(&self) -> bool {
        self.asked
            .get()
            .is_some_and(|at| at.elapsed() >= self.drain)
    }
}

/// How long a stopping indexer waits for the merges in progress, so that a
/// shutdown is not held for a merge of large segments. A merge still
/// running then goes on until the process exits: one that ends before is
/// committed as usual, one the exit cuts short never is (its files are
/// garbage to the next writer, which merges again).
const MERGE_WAIT_AT_STOP: Duration = Duration::from_secs(5);

/// How often an idle indexer looks for merges that ended after its last
/// commit (`Indexer::follow_merges`).
pub(super) const MERGE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What one round of the indexer applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Applied {
    /// The last seq committed, if anything was.
    pub(super) last: Option<u64>,
    /// The round stopped before the end of the change log.
    pub(super) behind: bool,
}

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

    /// Reloads the reader when the committed segments differ from the ones
    /// it searches: a background merge that ended after the last commit's
    /// reload (the reader reloads only when told) replaced segments on disk,
    /// and until the next write the reader would go on searching the
    /// merged-away segments: more segments per query (measured: a server
    /// that just loaded 1M items spent 1.25-1.5x the CPU per single-term
    /// query of the same build restarted on the same files), and their
    /// files, deleted from the folder, kept mapped and on disk. A merge
    /// changes no document (only committed segments merge, deletes
    /// included), so the reload shows the same items; whether they differ
    /// costs a read of meta.json.
    pub(super) fn follow_merges(&self) -> Result<(), IndexError> {
        let committed = self.index.searchable_segment_ids()?;
        let searcher = self.shared.reader.searcher();
        let searched = searcher.segment_readers();
        if searched.len() == committed.len()
            && searched.iter().all(|s| committed.contains(&s.segment_id()))
        {
            return Ok(());
        }
        self.shared.reload()?;
        tracing::debug!(
            segments = committed.len(),
            "reader follows the ended merges"
        );
        Ok(())
    }

    /// Applies change-log entries and commits them: one read of up to
    /// `MAX_CHANGES_PER_READ`, or, while the log holds more, further reads
    /// until it is drained, `MAX_CHANGES_PER_COMMIT` changes are applied or
    /// `BACKLOG_COMMIT_INTERVALS` refresh intervals have passed. Once the
    /// stop is due the round ends within `CHANGES_BETWEEN_STOP_CHECKS`
    /// changes and commits what it applied. Verifies the result when the
    /// round reached the store's snapshot.
    pub(super) fn apply_changes(&mut self, stop: &StopSignal) -> Result<Applied, IndexError> {
        let started = Instant::now();
        let fields = self.shared.fields.clone();
        let mut from = self.applied;
        let mut applied = 0usize;
        let mut versions = Vec::new();
        let mut stored_at = Vec::new();
        // Whether the round read the change log to its end (the snapshot).
        let mut complete = false;
        let batch = loop {
            let batch = self
                .store
                .changes_after(from, MAX_CHANGES_PER_READ, MAX_BYTES_PER_READ)?;
            if batch.changes.is_empty() {
                complete = batch.complete;
                break batch;
            }
            let writer = self.writer()?;
            let mut stopped = false;
            for (i, change) in batch.changes.iter().enumerate() {
                if i % CHANGES_BETWEEN_STOP_CHECKS == 0 && stop.due() {
                    stopped = true;
                    break;
                }
                writer.delete_term(Term::from_field_text(fields.id, change.id.as_str()));
                if let Some(current) = &change.current {
                    // An older change-log entry of an item that was written
                    // again later is applied with the current version; the
                    // later entry then replaces it with the same document.
                    writer.add_document(to_document(&fields, current))?;
                    if current.seq == change.seq {
                        stored_at.push(current.ingested_at);
                    }
                }
                versions.push(Current {
                    id: change.id.clone(),
                    version: change
                        .current
                        .as_ref()
                        .map(|item| (item.seq, matches!(item.analysis, AnalysisState::Done(_)))),
                });
                applied += 1;
                from = change.seq;
            }
            if stopped {
                break batch;
            }
            let budget = self.settings.refresh_interval * BACKLOG_COMMIT_INTERVALS;
            if batch.complete || applied >= MAX_CHANGES_PER_COMMIT || started.elapsed() >= budget {
                complete = batch.complete;
                break batch;
            }
        };
        let last = (from > self.applied).then_some(from);
        if let Some(last) = last {
            let resume_at = if complete {
                last
            } else {
                committed_seq(&self.index)?
            };
            let writer = self.writer()?;
            let committing = Instant::now();
            commit_through(writer, resume_at)?;
            crate::metrics::observe_index_commit(committing.elapsed());
            // The commit is durable, and a failed reload makes the indexer
            // resume after it: the vectors follow it either way.
            let reloaded = self.shared.reload();
            self.sync_vectors(versions);
            reloaded?;
            observe_freshness(&stored_at);
            self.searchable_through(last);
            tracing::debug!(changes = applied, last_seq = last, "index committed");
        }
        if complete {
            if last.is_none() {
                // Nothing committed now: the reader may predate a commit
                // whose reload failed; once reloaded it shows `applied`.
                self.shared.reload()?;
                self.shared
                    .indexed_seq
                    .fetch_max(self.applied, Ordering::AcqRel);
                self.shared.removals_applied_through(self.applied);
            }
            let docs = self.shared.reader.searcher().num_docs();
            if docs != batch.snapshot_items {
                return Err(IndexError::CountMismatch {
                    docs,
                    items: batch.snapshot_items,
                });
            }
            let mut committed = last.is_some();
            if !committed && committed_seq(&self.index)? < self.applied {
                // The round before stopped (on its budget) exactly at the end
                // of the log, so its payload is the one before it: the index,
                // just verified, is complete through `applied`.
                let applied = self.applied;
                commit_through(self.writer()?, applied)?;
                committed = true;
            }
            if committed {
                // Not part of the index's promise: a failed trim only means
                // entries are applied again, which is idempotent.
                if let Err(error) = self.store.trim_changes_through(self.applied) {
                    tracing::warn!(%error, "cannot trim the change log; will retry");
                }
            }
        }
        Ok(Applied {
            last,
            behind: !complete,
        })
    }

    /// Brings the similarity index in step with changes the index just
    /// made searchable (after the commit, so a key it returns has its
    /// document). A failure leaves it behind until the next restart's
    /// build; indexing goes on.
    fn sync_vectors(&self, changes: Vec<Current>) {
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

    /// Records that the (empty) index holds the store through `seq`: its
    /// payload, and the position the indexer resumes from.
    pub(super) fn complete_through(&mut self, seq: u64) -> Result<(), IndexError> {
        commit_through(self.writer()?, seq)?;
        self.shared.reload()?;
        self.searchable_through(seq);
        Ok(())
    }

    /// The reloaded reader shows every change through `seq`: the indexer
    /// resumes after it, and a removal owed since the open is applied once
    /// `seq` reaches it.
    fn searchable_through(&mut self, seq: u64) {
        self.applied = seq;
        self.shared.indexed_seq.store(seq, Ordering::Release);
        self.shared.removals_applied_through(seq);
    }

    /// Rebuilds the whole index from the store.
    pub(super) fn rebuild(&mut self) -> Result<(), IndexError> {
        let fields = self.shared.fields.clone();
        let view = self.store.offline_view()?;
        let (_, last) = rebuild(&view, &fields, self.writer()?)?;
        self.shared.reload()?;
        self.searchable_through(last);
        if let Err(error) = self.store.trim_changes_through(last) {
            tracing::warn!(%error, "cannot trim the change log after the rebuild");
        }
        Ok(())
    }
}

/// Ingest-to-searchable time of the item versions this commit made
/// searchable: `stored_at` holds the ingest times of the versions whose
/// own change (not a later entry of the same version, e.g. its analysis)
/// the commit applied.
fn observe_freshness(stored_at: &[crate::domain::UnixMicros]) {
    let now = crate::domain::UnixMicros::now().0;
    for at in stored_at {
        let micros = u64::try_from(now - at.0).unwrap_or(0);
        crate::metrics::observe_ingest_to_searchable(Duration::from_micros(micros));
    }
}

pub(super) fn run_indexer(mut indexer: Indexer, stop: Arc<StopSignal>) {
    let commits = indexer.store.commit_signal();
    let refresh = indexer.settings.refresh_interval;
    let mut last_commit = Instant::now() - refresh;
    let mut failures = 0u32;
    // The first round runs at once, even with nothing new: it checks the
    // index against the store's item count (and rebuilds on a mismatch).
    let mut check_now = true;
    // The last round left a backlog: go on at once (its commit was large).
    let mut behind = false;
    let mut merges_checked = Instant::now();
    // The last merge check failed (logged once until one succeeds).
    let mut merge_check_failing = false;
    loop {
        // The segments the last round or merge brought, now searchable:
        // their dates read before a date sort waits for them.
        indexer.shared.warm_dates();
        let stopping = stop.requested();
        let newest = if check_now {
            indexer.applied
        } else {
            commits.wait_newer_than(indexer.applied, Duration::from_millis(100))
        };
        // Behind: the last round stopped on its budget, perhaps exactly at
        // the end of the log; the next one finds out (and then records the
        // position it verified) even if nothing new arrives.
        if newest > indexer.applied || stopping || check_now || behind {
            let since = last_commit.elapsed();
            if !stopping && !check_now && !behind && since < refresh {
                std::thread::sleep(refresh - since);
            }
            let result = match indexer.apply_changes(&stop) {
                // A rebuild reads the whole store: not while the server
                // stops. The next start's first round finds the mismatch
                // again and rebuilds then.
                Err(IndexError::CountMismatch { docs, items }) if stopping || stop.requested() => {
                    tracing::error!(
                        docs,
                        items,
                        "the index does not match the store: it is rebuilt at the next start"
                    );
                    break;
                }
                Err(IndexError::CountMismatch { docs, items }) => {
                    tracing::error!(
                        docs,
                        items,
                        "the index does not match the store: rebuilding it from the store"
                    );
                    indexer.rebuild().map(|()| Applied {
                        last: Some(indexer.applied),
                        behind: false,
                    })
                }
                other => other,
            };
            indexer
                .shared
                .failing
                .store(result.is_err(), Ordering::Release);
            match result {
                Ok(Applied {
                    last: Some(_),
                    behind: still_behind,
                }) => {
                    last_commit = Instant::now();
                    resumed(failures);
                    failures = 0;
                    check_now = false;
                    behind = still_behind;
                    if stop.due() {
                        // What is left of the log is applied at the next
                        // start: a shutdown is not held for a backlog.
                        break;
                    }
                    continue; // more may be waiting
                }
                Ok(Applied { last: None, .. }) => {
                    resumed(failures);
                    failures = 0;
                    check_now = false;
                    behind = false;
                }
                Err(error) => {
                    failures += 1;
                    // Logged at the 1st, 2nd, 4th, 8th ... failure in a row:
                    // a full disk failed every retry, an ERROR line a second.
                    if failures.is_power_of_two() {
                        tracing::error!(
                            %error,
                            failures,
                            "indexing failed; re-opening the writer and retrying from the last verified position (failures in a row logged at powers of two)"
                        );
                    }
                    indexer.reset();
                    check_now = true;
                    behind = false;
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
        if merges_checked.elapsed() >= MERGE_CHECK_INTERVAL {
            merges_checked = Instant::now();
            match indexer.follow_merges() {
                Ok(()) if merge_check_failing => {
                    merge_check_failing = false;
                    tracing::info!("the index reader follows merges again");
                }
                Ok(()) => {}
                Err(error) if !merge_check_failing => {
                    merge_check_failing = true;
                    tracing::warn!(%error, "cannot reload the index reader after a merge; retrying every second");
                }
                Err(error) => tracing::debug!(%error, "merge check failed again"),
            }
        }
    }
    if let Some(writer) = indexer.writer.take() {
        finish_merges(writer, MERGE_WAIT_AT_STOP);
    }
    let store_seq = commits.wait_newer_than(u64::MAX, Duration::ZERO);
    tracing::info!(
        indexed_seq = indexer.applied,
        store_seq,
        "indexer stopped{}",
        if store_seq > indexer.applied {
            "; the rest of the change log is applied at the next start"
        } else {
            ""
        }
    );
}

/// Waits up to `limit` for the writer's merges. One still running then
/// goes on, holding the writer (and its lock), until it ends or the
/// process exits (`MERGE_WAIT_AT_STOP`).
fn finish_merges(writer: IndexWriter<TantivyDocument>, limit: Duration) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::Builder::new()
        .name("index-merges".into())
        .spawn(move || {
            let _ = done_tx.send(writer.wait_merging_threads());
        });
    if let Err(error) = waiter {
        tracing::warn!(%error, "cannot wait for the index merges; leaving them");
        return;
    }
    match done_rx.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "index merge threads ended with an error"),
        Err(_) => tracing::info!(
            waited_ms = limit.as_millis() as u64,
            "index merges still running; left to the next start"
        ),
    }
}

/// Logs that indexing works again after `failures` failures in a row.
fn resumed(failures: u32) {
    if failures > 0 {
        tracing::info!(failures, "indexing resumed");
    }
}
