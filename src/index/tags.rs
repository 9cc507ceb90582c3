//! Taxonomy versions confirmed by a re-tag without re-indexing.
//!
//! A theme edit re-tags every stored item. Most items keep the same themes
//! and labels (what the index holds) under the new taxonomy version; for
//! those the store records the new version in the item's tag
//! (`Store::confirm_themes`) and in memory (`store::ConfirmedVersions`,
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
//!   generation, so nothing cached outlives a confirmation.

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
use crate::store::ConfirmedVersions;

/// The store's confirmed versions, with per-segment views cached.
pub struct ConfirmedTags {
    versions: Arc<ConfirmedVersions>,
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

impl ConfirmedTags {
    pub fn new(versions: Arc<ConfirmedVersions>) -> Self {
        ConfirmedTags {
            versions,
            segments: Mutex::default(),
        }
    }

    /// Bumped by every confirmation.
    pub fn generation(&self) -> u64 {
        self.versions.generation()
    }

    /// The segment's confirmed versions; None while nothing is confirmed
    /// (every document's version is its indexed one).
    pub fn segment(&self, reader: &SegmentReader) -> tantivy::Result<Option<Arc<SegmentVersions>>> {
        // Under the map's read lock: the view matches the generation.
        self.versions
            .read(|map, generation| {
                let id = reader.segment_id();
                if let Some((at, view)) = self.lock_segments().get(&id) {
                    if *at == generation {
                        return Ok(view.clone());
                    }
                }
                let seqs = reader.fast_fields().u64(field::SEQ)?;
                let mut versions = vec![0u64; reader.max_doc() as usize];
                for (doc, slot) in versions.iter_mut().enumerate() {
                    if let Some(&v) = seqs.first(doc as DocId).and_then(|seq| map.get(&seq)) {
                        *slot = v;
                    }
                }
                let view = Arc::new(SegmentVersions(versions));
                self.lock_segments().insert(id, (generation, view.clone()));
                Ok(view)
            })
            .transpose()
    }

    /// Drops the views of segments the searcher no longer has.
    pub fn retain_live(&self, searcher: &Searcher) {
        super::retain_live_segments(&mut self.lock_segments(), searcher);
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
