//! Taxonomy versions confirmed by a re-tag without re-indexing.
//!
//! A theme edit re-tags every stored item. Most items keep the same themes
//! and labels (what the index holds) under the new taxonomy version; for
//! those the store records the new version in the item's tag
//! (`Store::retag`) and in memory (`store::ConfirmedVersions`,
//! loaded when the store opens), instead of the item being rewritten and
//! re-indexed (~100 us each). A document's taxonomy version is then the
//! larger of its indexed `taxonomy_version` and its `seq`'s confirmed
//! version.
//!
//! Invariants:
//! - Versions only rise (a confirmation is recorded only above what the
//!   store had, and taxonomy versions never go down), so
//!   `max(indexed, confirmed)` is the item's version whichever came last.
//! - Per-segment views are cached per (segment, generation of the
//!   confirmations), and filter clauses that read them are keyed with the
//!   generation, so nothing cached outlives a confirmation. A view behind
//!   the generation catches up by replaying the confirmations since (the
//!   store's log), or re-reads the map when the log no longer reaches back
//!   or the replay would cost more; since versions only rise, replaying
//!   with `max` gives the same view as a re-read.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tantivy::index::SegmentId;
use tantivy::query::{ConstScorer, EnableScoring, Explanation, Query, Scorer, TermQuery, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, Score, Searcher, SegmentReader, Term};

use super::filters::BitsDocSet;
use super::schema::field;
use super::vectors::KeyBits;
use crate::store::{ConfirmedSnapshot, ConfirmedVersions};

/// The store's confirmed versions, with per-segment views cached.
pub struct ConfirmedTags {
    versions: Arc<ConfirmedVersions>,
    segments: Mutex<HashMap<SegmentId, SegmentState>>,
    pruner: super::NewestSearcher,
}

/// One segment's cached view, the confirmation generation it reflects, and
/// (built at the first catch-up) its documents by seq.
struct SegmentState {
    at: u64,
    view: Arc<SegmentVersions>,
    by_seq: Option<Arc<SeqDocs>>,
    /// The segment's deleted documents, for the reader with this many
    /// deletes (a segment's deletes only grow, so the count names the set).
    deleted: Option<(u32, Arc<Vec<DocId>>)>,
}

impl SegmentState {
    /// Brings the view up to the snapshot's generation by replaying the
    /// confirmations since; false when it must re-read the map instead (the
    /// log no longer reaches back, or the replay would cost more).
    fn catch_up(
        &mut self,
        reader: &SegmentReader,
        map: &ConfirmedSnapshot<'_>,
    ) -> tantivy::Result<bool> {
        let behind = map.generation().saturating_sub(self.at);
        if behind == 0 {
            return Ok(true);
        }
        if behind > u64::from(reader.max_doc()).max(1) * REPLAY_PER_DOC {
            return Ok(false);
        }
        let Some(pairs) = map.since(self.at) else {
            return Ok(false);
        };
        let by_seq = match &self.by_seq {
            Some(by_seq) => by_seq.clone(),
            None => self.by_seq.insert(Arc::new(SeqDocs::new(reader)?)).clone(),
        };
        // In place unless a query still holds the view.
        let view = Arc::make_mut(&mut self.view);
        for (seq, version) in pairs {
            for doc in by_seq.docs(seq) {
                view.confirm(doc, version);
            }
        }
        self.at = map.generation();
        Ok(true)
    }

    /// Live documents at `version`: the view's count less the deleted
    /// documents at it (their list cached per delete count), so a count
    /// costs the deletes, not the segment.
    fn count_at(&mut self, version: u64, reader: &SegmentReader) -> u32 {
        let all = self.view.count(version);
        let Some(alive) = reader.alive_bitset() else {
            return all;
        };
        let deletes = reader.num_deleted_docs();
        let deleted = match &self.deleted {
            Some((n, docs)) if *n == deletes => docs.clone(),
            _ => {
                let docs: Arc<Vec<DocId>> = Arc::new(
                    (0..reader.max_doc())
                        .filter(|&doc| alive.is_deleted(doc))
                        .collect(),
                );
                self.deleted = Some((deletes, docs.clone()));
                docs
            }
        };
        let gone = deleted
            .iter()
            .filter(|&&doc| self.view.versions.get(doc as usize) == Some(&version))
            .count();
        all - gone as u32
    }
}

/// A segment's (seq, doc) pairs sorted by seq: a catch-up finds the
/// document of a confirmed seq by binary search.
struct SeqDocs(Vec<(u64, DocId)>);

impl SeqDocs {
    fn new(reader: &SegmentReader) -> tantivy::Result<Self> {
        let seqs = reader.fast_fields().u64(field::SEQ)?;
        let mut pairs: Vec<(u64, DocId)> = (0..reader.max_doc())
            .filter_map(|doc| seqs.first(doc).map(|seq| (seq, doc)))
            .collect();
        pairs.sort_unstable();
        Ok(SeqDocs(pairs))
    }

    fn docs(&self, seq: u64) -> impl Iterator<Item = DocId> + '_ {
        let from = self.0.partition_point(|&(s, _)| s < seq);
        self.0[from..]
            .iter()
            .take_while(move |&&(s, _)| s == seq)
            .map(|&(_, doc)| doc)
    }
}

/// The taxonomy version of each of one segment's documents, by doc id:
/// the larger of its indexed one and its confirmed one (`NOT_ANALYSED`:
/// none indexed). The indexed versions never change (segments are
/// immutable), so a confirmation only raises entries.
///
/// Invariant: `counts` holds, sorted by version, how many of the segment's
/// documents (deleted ones included) are at each version in `versions`;
/// `confirm` keeps it so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentVersions {
    versions: Vec<u64>,
    counts: Vec<(u64, u32)>,
}

/// A document without an indexed taxonomy version (not analysed).
const NOT_ANALYSED: u64 = u64::MAX;

impl SegmentVersions {
    /// The document's version (None: not analysed).
    #[inline]
    pub fn effective(&self, doc: DocId) -> Option<u64> {
        self.versions
            .get(doc as usize)
            .copied()
            .filter(|&v| v != NOT_ANALYSED)
    }

    /// Every document's version, from its indexed one and the whole map.
    fn read(reader: &SegmentReader, map: &ConfirmedSnapshot<'_>) -> tantivy::Result<Self> {
        let fast = reader.fast_fields();
        let (seqs, indexed) = (fast.u64(field::SEQ)?, fast.u64(field::TAXONOMY_VERSION)?);
        let versions = (0..reader.max_doc())
            .map(|doc| match indexed.first(doc) {
                None => NOT_ANALYSED,
                Some(v) => {
                    let confirmed = seqs.first(doc).and_then(|seq| map.get(seq));
                    v.max(confirmed.unwrap_or(0))
                }
            })
            .collect();
        Ok(SegmentVersions::new(versions))
    }

    fn new(versions: Vec<u64>) -> Self {
        let mut view = SegmentVersions {
            versions,
            counts: Vec::new(),
        };
        for i in 0..view.versions.len() {
            let v = view.versions[i];
            *view.slot(v) += 1;
        }
        view
    }

    /// The count of documents at `version`, an entry made if none (a
    /// handful of versions at most; no entry stays at zero).
    fn slot(&mut self, version: u64) -> &mut u32 {
        let at = self.counts.partition_point(|&(v, _)| v < version);
        if self.counts.get(at).map(|&(v, _)| v) != Some(version) {
            self.counts.insert(at, (version, 0));
        }
        &mut self.counts[at].1
    }

    /// Documents at `version`, deleted ones included.
    fn count(&self, version: u64) -> u32 {
        self.counts
            .iter()
            .find(|&&(v, _)| v == version)
            .map_or(0, |&(_, n)| n)
    }

    /// Raises the document's version to a confirmed one.
    #[inline]
    fn confirm(&mut self, doc: DocId, version: u64) {
        let was = self.versions[doc as usize];
        // Not analysed: nothing to confirm.
        if was != NOT_ANALYSED && was < version {
            self.versions[doc as usize] = version;
            let at = self.counts.partition_point(|&(v, _)| v < was);
            self.counts[at].1 -= 1;
            if self.counts[at].1 == 0 {
                self.counts.remove(at);
            }
            *self.slot(version) += 1;
        }
    }
}

/// Past this many pairs to replay per document of the segment, a catch-up
/// re-reads the map instead.
const REPLAY_PER_DOC: u64 = 1;

impl ConfirmedTags {
    pub fn new(versions: Arc<ConfirmedVersions>) -> Self {
        ConfirmedTags {
            versions,
            segments: Mutex::default(),
            pruner: Default::default(),
        }
    }

    /// Changes with every confirmation.
    pub fn generation(&self) -> u64 {
        self.versions.generation()
    }

    /// The segment's confirmed versions; None while nothing is confirmed
    /// (every document's version is its indexed one). A cached view catches
    /// up with the confirmations since (a binary search per pair in the
    /// segment's seqs) rather than re-reading the whole map.
    pub fn segment(&self, reader: &SegmentReader) -> tantivy::Result<Option<Arc<SegmentVersions>>> {
        self.with_state(reader, |state| state.view.clone())
    }

    /// Live documents of the segment at `version` from its view; None while
    /// nothing is confirmed (count the indexed versions then).
    pub fn count_at(&self, reader: &SegmentReader, version: u64) -> tantivy::Result<Option<u32>> {
        self.with_state(reader, |state| state.count_at(version, reader))
    }

    /// Runs `f` on the segment's state caught up with the confirmations
    /// (None while nothing is confirmed).
    fn with_state<T>(
        &self,
        reader: &SegmentReader,
        f: impl FnOnce(&mut SegmentState) -> T,
    ) -> tantivy::Result<Option<T>> {
        // Under the map's read lock: the view matches the generation.
        self.versions
            .read(|map| {
                let id = reader.segment_id();
                let mut segments = self.lock_segments();
                let (mut by_seq, mut deleted) = (None, None);
                if let Some(state) = segments.get_mut(&id) {
                    if state.catch_up(reader, map)? {
                        return Ok(f(state));
                    }
                    by_seq = state.by_seq.take();
                    deleted = state.deleted.take();
                }
                let mut state = SegmentState {
                    at: map.generation(),
                    view: Arc::new(SegmentVersions::read(reader, map)?),
                    by_seq,
                    deleted,
                };
                let out = f(&mut state);
                segments.insert(id, state);
                Ok(out)
            })
            .transpose()
    }

    /// Which of the segment's documents are tagged with `version` (indexed,
    /// or confirmed since), one document at a time (theme facets).
    pub fn tagged(&self, reader: &SegmentReader, version: u64) -> tantivy::Result<SegmentTagged> {
        Ok(match self.segment(reader)? {
            Some(view) => SegmentTagged::Confirmed(view, version),
            None => {
                SegmentTagged::Indexed(reader.fast_fields().u64(field::TAXONOMY_VERSION)?, version)
            }
        })
    }

    /// Drops the views of segments the searcher no longer has.
    pub fn retain_live(&self, searcher: &Searcher) {
        super::retain_live_segments(&mut self.lock_segments(), &self.pruner, searcher);
    }

    fn lock_segments(&self) -> std::sync::MutexGuard<'_, HashMap<SegmentId, SegmentState>> {
        // The map holds no invariant a panicking holder could break.
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One segment's documents tagged with one taxonomy version
/// (`ConfirmedTags::tagged`).
pub enum SegmentTagged {
    /// Some versions were confirmed: the segment's view.
    Confirmed(Arc<SegmentVersions>, u64),
    /// None: the indexed versions.
    Indexed(tantivy::columnar::Column<u64>, u64),
}

impl SegmentTagged {
    /// Whether `doc` is tagged with the version.
    #[inline]
    pub fn holds(&self, doc: DocId) -> bool {
        match self {
            SegmentTagged::Confirmed(view, version) => view.effective(doc) == Some(*version),
            SegmentTagged::Indexed(column, version) => column.first(doc) == Some(*version),
        }
    }
}

/// Documents whose taxonomy version (indexed, or confirmed since) is
/// `version`.
#[derive(Clone)]
pub struct TaggedVersionQuery {
    field: Field,
    version: u64,
    tags: Arc<ConfirmedTags>,
}

impl TaggedVersionQuery {
    pub fn new(field: Field, version: u64, tags: Arc<ConfirmedTags>) -> Self {
        TaggedVersionQuery {
            field,
            version,
            tags,
        }
    }
}

impl fmt::Debug for TaggedVersionQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaggedVersion({})", self.version)
    }
}

impl Query for TaggedVersionQuery {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let off = EnableScoring::disabled_from_schema(enable_scoring.schema());
        let term = TermQuery::new(
            Term::from_field_u64(self.field, self.version),
            IndexRecordOption::Basic,
        );
        Ok(Box::new(TaggedVersionWeight {
            indexed: term.weight(off)?,
            version: self.version,
            tags: self.tags.clone(),
        }))
    }
}

struct TaggedVersionWeight {
    /// The indexed version's postings: the answer while nothing is confirmed.
    indexed: Box<dyn Weight>,
    version: u64,
    tags: Arc<ConfirmedTags>,
}

impl TaggedVersionWeight {
    fn bits(&self, view: &SegmentVersions) -> KeyBits {
        KeyBits::from_predicate(view.versions.len(), |doc| {
            view.versions[doc] == self.version
        })
    }
}

impl Weight for TaggedVersionWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        match self.tags.segment(reader)? {
            None => self.indexed.scorer(reader, boost),
            Some(view) => Ok(Box::new(ConstScorer::new(
                BitsDocSet::new(Arc::new(self.bits(&view))),
                boost,
            ))),
        }
    }

    /// Counted from the view's counts and the segment's deletes, without
    /// a pass over its documents (`Stats` counts the re-tag backlog this
    /// way on every poll).
    fn count(&self, reader: &SegmentReader) -> tantivy::Result<u32> {
        match self.tags.count_at(reader, self.version)? {
            None => self.indexed.count(reader),
            Some(n) => Ok(n),
        }
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let version = match self.tags.segment(reader)? {
            None => reader
                .fast_fields()
                .u64(field::TAXONOMY_VERSION)?
                .first(doc),
            Some(view) => view.effective(doc),
        };
        if version == Some(self.version) {
            Ok(Explanation::new("TaggedVersion", 1.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document #({doc}) is not tagged with version {}",
                self.version
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Not;

    use tantivy::schema::{Schema, FAST, INDEXED};
    use tantivy::{doc, Index, IndexWriter};

    use super::*;

    /// Views that catch up batch by batch (replaying the log, or re-reading
    /// the map once the log was trimmed past them) equal views read afresh,
    /// and a view a query still holds does not change under it.
    /// Three segments of 40 documents at version 1, seqs out of doc order,
    /// then one of a repeated seq (7), one without a seq and one not
    /// analysed.
    fn segments() -> Searcher {
        let mut schema = Schema::builder();
        let seq = schema.add_u64_field(field::SEQ, FAST);
        let version = schema.add_u64_field(field::TAXONOMY_VERSION, INDEXED | FAST);
        let index = Index::create_in_ram(schema.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for segment in 0..3u64 {
            for i in (0..40u64).rev() {
                let s = segment * 40 + i;
                writer
                    .add_document(doc!(seq => s, version => 1u64))
                    .unwrap();
            }
            writer.commit().unwrap();
        }
        writer
            .add_document(doc!(seq => 7u64, version => 1u64))
            .unwrap();
        writer.add_document(doc!(version => 1u64)).unwrap();
        // Not analysed: no version indexed; confirming its seq changes nothing.
        writer.add_document(doc!(seq => 9u64)).unwrap();
        writer.commit().unwrap();
        index.reader().unwrap().searcher()
    }

    /// The view read afresh (its versions and their counts).
    fn fresh(versions: &ConfirmedVersions, reader: &SegmentReader) -> SegmentVersions {
        versions
            .read(|map| SegmentVersions::read(reader, map).unwrap())
            .unwrap()
    }

    #[test]
    fn caught_up_views_equal_fresh_reads_and_held_views_stay_put() {
        let searcher = segments();
        // Few seqs, so the log (never longer than the map) gets trimmed.
        let versions = Arc::new(ConfirmedVersions::loaded(&[(3, 2), (50, 2)]));
        let tags = ConfirmedTags::new(versions.clone());
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut held = Vec::new();
        for round in 0..60u64 {
            let batch: Vec<(u64, u64)> = (0..1 + next() % 9)
                .map(|_| (next() % (if round < 30 { 20 } else { 130 }), 2 + next() % 6))
                .collect();
            versions.confirm(&batch);
            // Segment k is read every (2k + 1)th round: the others fall
            // behind, some past the log's start.
            for (k, reader) in searcher.segment_readers().iter().enumerate() {
                if round % (k as u64 * 2 + 1) != 0 {
                    continue;
                }
                let view = tags.segment(reader).unwrap().unwrap();
                assert_eq!(*view, fresh(&versions, reader), "round {round}");
                if round % 7 == 0 {
                    held.push((view.clone(), (*view).clone()));
                }
            }
        }
        for (view, then) in held {
            assert_eq!(*view, then);
        }
    }

    /// A view behind the log's start re-reads the map: replaying what is
    /// left of the log would miss the trimmed pairs.
    #[test]
    fn a_view_behind_the_trimmed_log_reads_the_map() {
        let searcher = segments();
        let versions = Arc::new(ConfirmedVersions::loaded(&[(1, 2)]));
        let tags = ConfirmedTags::new(versions.clone());
        for reader in searcher.segment_readers() {
            tags.segment(reader).unwrap().unwrap();
        }
        versions.confirm(&[(6, 3)]);
        // Seq 5 again and again: the log (at most the map's 3 seqs) drops (6, 3).
        for v in 4..8 {
            versions.confirm(&[(5, v)]);
        }
        let mut seen = Vec::new();
        for reader in searcher.segment_readers() {
            let view = tags.segment(reader).unwrap().unwrap();
            assert_eq!(*view, fresh(&versions, reader));
            seen.extend(view.versions.iter().copied().filter(|&v| v != 1));
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![2, 3, 7, NOT_ANALYSED]);
    }

    /// The weight's count (from the view) equals its bitset scorer's count,
    /// deleted documents left out (also once more are deleted: the cached
    /// list of deletes follows), and the documents at a version are the
    /// analysed ones minus those at others.
    #[test]
    fn view_counts_equal_the_scorer_path_with_deletes() {
        let mut schema = Schema::builder();
        let seq = schema.add_u64_field(field::SEQ, FAST | INDEXED);
        let version = schema.add_u64_field(field::TAXONOMY_VERSION, INDEXED | FAST);
        let index = Index::create_in_ram(schema.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for i in 0..30u64 {
            let v = 1 + u64::from(i % 3 == 0);
            writer.add_document(doc!(seq => i, version => v)).unwrap();
        }
        writer.add_document(doc!(seq => 100u64)).unwrap();
        writer.commit().unwrap();
        let versions = Arc::new(ConfirmedVersions::loaded(&[
            (2, 2),
            (5, 3),
            (6, 3),
            (100, 3),
        ]));
        let tags = Arc::new(ConfirmedTags::new(versions));
        for (deletes, expected) in [(&[4u64, 9, 2][..], 27u64), (&[12, 15, 21][..], 24)] {
            for &s in deletes {
                writer.delete_term(Term::from_field_u64(seq, s));
            }
            writer.commit().unwrap();
            let searcher = index.reader().unwrap().searcher();
            let mut at_any = 0u64;
            for v in 1..=4u64 {
                let tagged = TaggedVersionQuery::new(version, v, tags.clone());
                let weight = tagged
                    .weight(EnableScoring::disabled_from_searcher(&searcher))
                    .unwrap();
                for reader in searcher.segment_readers() {
                    let alive = reader.alive_bitset().unwrap();
                    let by_scorer = weight.scorer(reader, 1.0).unwrap().count(alive);
                    let counted = weight.count(reader).unwrap();
                    assert_eq!(counted, by_scorer, "version {v}");
                    at_any += u64::from(counted);
                }
            }
            let mut analysed = 0u64;
            for reader in searcher.segment_readers() {
                let versions = reader.fast_fields().u64(field::TAXONOMY_VERSION).unwrap();
                analysed += (0..reader.max_doc())
                    .filter(|&doc| reader.is_deleted(doc).not() && versions.first(doc).is_some())
                    .count() as u64;
            }
            assert_eq!(analysed, expected);
            assert_eq!(at_any, analysed);
        }
    }
}
