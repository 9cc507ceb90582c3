//! Taxonomy versions confirmed by a re-tag without re-indexing.
//!
//! A theme edit re-tags every stored item. Most items keep exactly the same
//! mentions under the new taxonomy version; for those the store records the
//! new version in the item's 32-byte tag (`Store::confirm_themes`) and the
//! index learns it here, instead of the item being rewritten and re-indexed
//! (~100 us each). A document's taxonomy version is then the larger of its
//! indexed `taxonomy_version` and its `seq`'s confirmed version.
//!
//! Invariants:
//! - Versions only rise: a confirmation is recorded for a seq only above
//!   what the store had for it, and taxonomy versions never go down, so
//!   `max(indexed, confirmed)` is the item's version whichever arrived last.
//! - The map holds what the store's tags say (`Store::confirmed_tags` at
//!   start, then each applied `confirm_themes`); a seq whose item changed
//!   keeps a stale entry that no live document has (harmless; gone at the
//!   next start).
//! - Every change bumps `generation`; per-segment versions are cached per
//!   (segment, generation), and filter clauses that read them are keyed
//!   with the generation, so nothing cached outlives a confirmation.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tantivy::index::SegmentId;
use tantivy::query::{ConstScorer, EnableScoring, Explanation, Query, Scorer, TermQuery, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, Score, Searcher, SegmentReader, Term};

use super::filters::BitsDocSet;
use super::schema::field;
use super::vectors::KeyBits;

/// The confirmed taxonomy version of item versions (by `seq`), with
/// per-segment views cached.
#[derive(Default)]
pub struct ConfirmedTags {
    by_seq: RwLock<HashMap<u64, u64>>,
    generation: AtomicU64,
    segments: Mutex<HashMap<SegmentId, (u64, Arc<SegmentVersions>)>>,
}

/// Confirmed versions of one segment's documents (0: none), by doc id.
pub struct SegmentVersions(Vec<u64>);

impl SegmentVersions {
    /// The document's version: the larger of its indexed one and its
    /// confirmed one.
    #[inline]
    pub fn effective(&self, doc: DocId, indexed: Option<u64>) -> Option<u64> {
        let confirmed = self.0.get(doc as usize).copied().unwrap_or(0);
        // Not analysed (no version indexed): nothing to confirm.
        indexed.map(|v| v.max(confirmed))
    }
}

impl fmt::Debug for ConfirmedTags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfirmedTags")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl ConfirmedTags {
    /// Records (seq, version) pairs; a lower version never replaces a higher.
    pub fn confirm(&self, pairs: &[(u64, u64)]) {
        if pairs.is_empty() {
            return;
        }
        let mut map = self.by_seq.write().unwrap_or_else(|e| e.into_inner());
        for &(seq, version) in pairs {
            let slot = map.entry(seq).or_insert(0);
            *slot = (*slot).max(version);
        }
        // Under the lock: a reader sees the new entries with the new generation.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Confirmations recorded so far.
    pub fn len(&self) -> usize {
        self.by_seq.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Bumped by every `confirm`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The segment's confirmed versions; None while nothing is confirmed
    /// (every document's version is its indexed one).
    pub fn segment(&self, reader: &SegmentReader) -> tantivy::Result<Option<Arc<SegmentVersions>>> {
        let map = self.by_seq.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return Ok(None);
        }
        // Read under the map's lock: the view matches this generation.
        let generation = self.generation();
        let id = reader.segment_id();
        if let Some((at, view)) = self.lock_segments().get(&id) {
            if *at == generation {
                return Ok(Some(view.clone()));
            }
        }
        let seqs = reader.fast_fields().u64(field::SEQ)?;
        let mut versions = vec![0u64; reader.max_doc() as usize];
        for (doc, slot) in versions.iter_mut().enumerate() {
            if let Some(seq) = seqs.first(doc as DocId) {
                if let Some(&v) = map.get(&seq) {
                    *slot = v;
                }
            }
        }
        let view = Arc::new(SegmentVersions(versions));
        self.lock_segments().insert(id, (generation, view.clone()));
        Ok(Some(view))
    }

    /// Drops the views of segments the searcher no longer has.
    pub fn retain_live(&self, searcher: &Searcher) {
        let live = searcher.segment_readers();
        let mut segments = self.lock_segments();
        if segments.len() > live.len() {
            segments.retain(|id, _| live.iter().any(|s| s.segment_id() == *id));
        }
    }

    fn lock_segments(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SegmentId, (u64, Arc<SegmentVersions>)>> {
        // The map holds no invariant a panicking holder could break.
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
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
    fn bits(&self, reader: &SegmentReader, view: &SegmentVersions) -> tantivy::Result<KeyBits> {
        let versions = reader.fast_fields().u64(field::TAXONOMY_VERSION)?;
        let mut bits = KeyBits::default();
        for doc in 0..reader.max_doc() {
            if view.effective(doc, versions.first(doc)) == Some(self.version) {
                bits.insert(u64::from(doc));
            }
        }
        Ok(bits)
    }
}

impl Weight for TaggedVersionWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        match self.tags.segment(reader)? {
            None => self.indexed.scorer(reader, boost),
            Some(view) => Ok(Box::new(ConstScorer::new(
                BitsDocSet::new(Arc::new(self.bits(reader, &view)?)),
                boost,
            ))),
        }
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let versions = reader.fast_fields().u64(field::TAXONOMY_VERSION)?;
        let version = match self.tags.segment(reader)? {
            None => versions.first(doc),
            Some(view) => view.effective(doc, versions.first(doc)),
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
