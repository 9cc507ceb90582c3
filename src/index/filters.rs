//! Filter clauses on few-valued fields (channel, product, journey stage,
//! language, sentiment, tags, themes, rating ranges, ...) cached as one bit
//! per document per segment, so a dashboard's repeated filters cost a
//! word-wise AND instead of walking postings or scanning a fast-field
//! column on every query.
//!
//! Invariants:
//! - A segment's documents never change, so a clause's bits are valid for
//!   the segment's whole life; deletes are not in the bits (the collectors
//!   check the alive bitset, as they do for every other query).
//! - The cache holds at most `FILTER_CACHE_BYTES` of bits (least recently
//!   used evicted first); a search drops the entries of segments its
//!   searcher no longer has (`retain_live`).
//! - On a miss the clause runs once over the segment as tantivy would run
//!   it (its own weight, scoring off); two searches racing compute it twice
//!   and keep one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tantivy::index::SegmentId;
use tantivy::query::{ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{
    DocId, DocSet, Score, Searcher, SegmentReader, Term, COLLECT_BLOCK_BUFFER_LEN, TERMINATED,
};

use super::vectors::KeyBits;
use crate::metrics::{self, Counter, Gauge};

/// Bytes of cached bits at most: 64 MiB, about 500 clauses over 1M items
/// (125 KB each), 50 over 10M.
pub const FILTER_CACHE_BYTES: usize = 64 << 20;

/// Every document of the segment `weight` matches (deleted ones too).
fn bits_of_weight(weight: &dyn Weight, reader: &SegmentReader) -> tantivy::Result<KeyBits> {
    let mut bits = KeyBits::default();
    weight.for_each_no_score(reader, &mut |docs| {
        for &doc in docs {
            bits.insert(u64::from(doc));
        }
    })?;
    Ok(bits)
}

/// The documents of a clause's (or several clauses' ANDed) bits, in order.
pub(super) struct BitsDocSet {
    bits: Arc<KeyBits>,
    /// The word holding `doc`.
    word: usize,
    /// That word's bits above `doc`.
    rest: u64,
    doc: DocId,
}

impl BitsDocSet {
    pub(super) fn new(bits: Arc<KeyBits>) -> Self {
        let rest = bits.words().first().copied().unwrap_or(0);
        let mut set = BitsDocSet {
            bits,
            word: 0,
            rest,
            doc: 0,
        };
        set.next_from_rest();
        set
    }

    /// Moves to the lowest bit of `rest`, or of the words after `word`.
    #[inline]
    fn next_from_rest(&mut self) -> DocId {
        while self.rest == 0 {
            self.word += 1;
            match self.bits.words().get(self.word) {
                Some(&w) => self.rest = w,
                None => {
                    self.doc = TERMINATED;
                    return TERMINATED;
                }
            }
        }
        let bit = self.rest.trailing_zeros();
        self.rest &= self.rest - 1;
        self.doc = self.word as u32 * 64 + bit;
        self.doc
    }
}

impl DocSet for BitsDocSet {
    #[inline]
    fn advance(&mut self) -> DocId {
        if self.doc == TERMINATED {
            return TERMINATED;
        }
        self.next_from_rest()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        let word = (target / 64) as usize;
        let Some(&w) = self.bits.words().get(word) else {
            self.doc = TERMINATED;
            return TERMINATED;
        };
        self.word = word;
        self.rest = w & (u64::MAX << (target % 64));
        self.next_from_rest()
    }

    fn fill_buffer(&mut self, buffer: &mut [DocId; COLLECT_BLOCK_BUFFER_LEN]) -> usize {
        let mut n = 0;
        while n < buffer.len() && self.doc != TERMINATED {
            buffer[n] = self.doc;
            n += 1;
            self.next_from_rest();
        }
        n
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.bits.len() as u32
    }

    fn count_including_deleted(&mut self) -> u32 {
        if self.doc == TERMINATED {
            return 0;
        }
        let after: u32 = self.bits.words()[self.word + 1..]
            .iter()
            .map(|w| w.count_ones())
            .sum();
        let count = 1 + self.rest.count_ones() + after;
        self.doc = TERMINATED;
        count
    }
}

/// Bits per (segment, clause key), least recently used evicted first.
pub struct FilterCache {
    max_bytes: usize,
    inner: Mutex<CacheInner>,
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    /// The exported bytes gauge, which every cache adds its bytes to.
    bytes_gauge: Arc<Gauge>,
    pruner: super::NewestSearcher,
}

#[derive(Default)]
struct CacheInner {
    /// Keys are shared with `by_use` (one copy of each key's text).
    segments: HashMap<SegmentId, HashMap<Arc<str>, Entry>>,
    /// Every entry by its last use, oldest first: eviction takes the first
    /// (a scan of every entry under the lock cost milliseconds once many
    /// small entries filled the cache).
    by_use: std::collections::BTreeMap<u64, (SegmentId, Arc<str>)>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    bits: Arc<KeyBits>,
    used: u64,
}

impl Default for FilterCache {
    fn default() -> Self {
        FilterCache::new(FILTER_CACHE_BYTES)
    }
}

impl FilterCache {
    pub fn new(max_bytes: usize) -> Self {
        let (hits, misses, bytes_gauge) = metrics::filter_cache();
        FilterCache {
            max_bytes,
            inner: Mutex::default(),
            hits,
            misses,
            bytes_gauge,
            pruner: Default::default(),
        }
    }

    /// The clause's bits for this segment, computed by `weight` on a miss.
    fn bits(
        &self,
        reader: &SegmentReader,
        key: &str,
        weight: &dyn Weight,
    ) -> tantivy::Result<Arc<KeyBits>> {
        let segment = reader.segment_id();
        {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            if let Some(entry) = inner
                .segments
                .get_mut(&segment)
                .and_then(|clauses| clauses.get_mut(key))
            {
                let last = std::mem::replace(&mut entry.used, now);
                let bits = entry.bits.clone();
                if let Some(listed) = inner.by_use.remove(&last) {
                    inner.by_use.insert(now, listed);
                }
                self.hits.inc();
                return Ok(bits);
            }
        }
        self.misses.inc();
        // Computed outside the lock.
        let bits = Arc::new(bits_of_weight(weight, reader)?);
        self.insert(segment, key, bits.clone());
        Ok(bits)
    }

    fn insert(&self, segment: SegmentId, key: &str, bits: Arc<KeyBits>) {
        let size = entry_bytes(key, &bits);
        if size > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        let before = inner.bytes;
        while inner.bytes + size > self.max_bytes {
            let Some((_, (s, k))) = inner.by_use.pop_first() else {
                break;
            };
            inner.remove(s, &k);
        }
        inner.clock += 1;
        let used = inner.clock;
        let key: Arc<str> = Arc::from(key);
        let previous = inner
            .segments
            .entry(segment)
            .or_default()
            .insert(key.clone(), Entry { bits, used });
        inner.bytes += size;
        inner.by_use.insert(used, (segment, key.clone()));
        if let Some(previous) = previous {
            inner.bytes -= entry_bytes(&key, &previous.bits);
            inner.by_use.remove(&previous.used);
        }
        self.bytes_gauge.add(inner.bytes as i64 - before as i64);
    }

    /// Drops the entries of segments `searcher` no longer has, unless a
    /// newer searcher was seen before (`NewestSearcher`).
    pub fn retain_live(&self, searcher: &Searcher) {
        if !self.pruner.admits(searcher) {
            return;
        }
        let live = searcher.segment_readers();
        let mut inner = self.lock();
        let before = inner.bytes;
        let dead: Vec<SegmentId> = inner
            .segments
            .keys()
            .filter(|id| !live.iter().any(|s| s.segment_id() == **id))
            .copied()
            .collect();
        for id in dead {
            if let Some(clauses) = inner.segments.remove(&id) {
                for (key, entry) in &clauses {
                    inner.bytes -= entry_bytes(key, &entry.bits);
                    inner.by_use.remove(&entry.used);
                }
            }
        }
        self.bytes_gauge.add(inner.bytes as i64 - before as i64);
    }

    /// Bytes of bits held now; checks that every entry is listed by its
    /// use once.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let inner = self.lock();
        let entries: usize = inner.segments.values().map(|clauses| clauses.len()).sum();
        assert_eq!(inner.by_use.len(), entries);
        assert!(inner.segments.iter().all(|(segment, clauses)| {
            clauses
                .iter()
                .all(|(key, entry)| inner.by_use.get(&entry.used) == Some(&(*segment, key.clone())))
        }));
        inner.bytes
    }

    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        // Every update leaves the map and its byte count consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FilterCache {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.bytes_gauge.add(-(bytes as i64));
    }
}

/// What an entry holds: its bits, its key (a clause's field and values,
/// up to ~33 KB for 100 long values) and the maps' own share. A clause that
/// matches nothing has no bits but still counts, so that many distinct
/// clauses are evicted like any others.
fn entry_bytes(key: &str, bits: &KeyBits) -> usize {
    bits.bytes() + key.len() + ENTRY_OVERHEAD_BYTES
}

/// The maps' bytes per entry besides the key's text and the bits.
const ENTRY_OVERHEAD_BYTES: usize = 96;

impl CacheInner {
    fn remove(&mut self, segment: SegmentId, key: &str) {
        let Some(clauses) = self.segments.get_mut(&segment) else {
            return;
        };
        if let Some(entry) = clauses.remove(key) {
            self.bytes -= entry_bytes(key, &entry.bits);
            self.by_use.remove(&entry.used);
        }
        if clauses.is_empty() {
            self.segments.remove(&segment);
        }
    }
}

/// The AND of clauses, each identified by a key naming its field and
/// values, matched through the cache. Scores `boost` (it is a filter).
pub struct CachedFilter {
    clauses: Vec<(String, Box<dyn Query>)>,
    cache: Arc<FilterCache>,
}

impl CachedFilter {
    pub fn new(clauses: Vec<(String, Box<dyn Query>)>, cache: Arc<FilterCache>) -> Self {
        CachedFilter { clauses, cache }
    }
}

impl Clone for CachedFilter {
    fn clone(&self) -> Self {
        CachedFilter {
            clauses: self
                .clauses
                .iter()
                .map(|(k, q)| (k.clone(), q.box_clone()))
                .collect(),
            cache: self.cache.clone(),
        }
    }
}

impl fmt::Debug for CachedFilter {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<&str> = self.clauses.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "CachedFilter({keys:?})")
    }
}

impl Query for CachedFilter {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let off = EnableScoring::disabled_from_schema(enable_scoring.schema());
        let clauses = self
            .clauses
            .iter()
            .map(|(key, query)| Ok((key.clone(), query.weight(off)?)))
            .collect::<tantivy::Result<_>>()?;
        Ok(Box::new(CachedFilterWeight {
            clauses,
            cache: self.cache.clone(),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        for (_, query) in &self.clauses {
            query.query_terms(visitor);
        }
    }
}

struct CachedFilterWeight {
    clauses: Vec<(String, Box<dyn Weight>)>,
    cache: Arc<FilterCache>,
}

impl CachedFilterWeight {
    /// The AND of the clauses' bits for this segment.
    fn bits(&self, reader: &SegmentReader) -> tantivy::Result<Arc<KeyBits>> {
        let mut each = self
            .clauses
            .iter()
            .map(|(key, weight)| self.cache.bits(reader, key, weight.as_ref()))
            .collect::<tantivy::Result<Vec<_>>>()?;
        each.sort_by_key(|bits| bits.len());
        let mut each = each.into_iter();
        // `filter_queries` makes a `CachedFilter` only of one clause or more.
        let first = each.next().ok_or_else(|| {
            tantivy::TantivyError::InvalidArgument("a cached filter without clauses".into())
        })?;
        Ok(each.fold(first, |acc, bits| Arc::new(acc.and(&bits))))
    }
}

impl Weight for CachedFilterWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(ConstScorer::new(
            BitsDocSet::new(self.bits(reader)?),
            boost,
        )))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.bits(reader)?.contains(u64::from(doc)) {
            Ok(Explanation::new("CachedFilter", 1.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document #({doc}) does not match the filter"
            )))
        }
    }

    fn count(&self, reader: &SegmentReader) -> tantivy::Result<u32> {
        let bits = self.bits(reader)?;
        Ok(match reader.alive_bitset() {
            None => bits.len() as u32,
            Some(alive) => BitsDocSet::new(bits).count(alive),
        })
    }
}

#[cfg(test)]
mod tests {
    use tantivy::collector::{Count, DocSetCollector};
    use tantivy::query::{BooleanQuery, Occur, RangeQuery, TermQuery};
    use tantivy::schema::{IndexRecordOption, Schema, FAST, INDEXED, STRING};
    use tantivy::{doc, Index, IndexWriter};

    use super::*;

    fn collect(set: &mut BitsDocSet) -> Vec<DocId> {
        let mut docs = Vec::new();
        while set.doc() != TERMINATED {
            docs.push(set.doc());
            set.advance();
        }
        docs
    }

    fn bits_of(docs: &[DocId]) -> Arc<KeyBits> {
        let mut bits = KeyBits::default();
        for &d in docs {
            bits.insert(u64::from(d));
        }
        Arc::new(bits)
    }

    #[test]
    fn docset_advances_seeks_fills_and_counts_like_a_sorted_list() {
        let docs: Vec<DocId> = vec![0, 1, 63, 64, 65, 127, 128, 300, 511, 512, 999];
        let bits = bits_of(&docs);
        assert_eq!(collect(&mut BitsDocSet::new(bits.clone())), docs);
        assert_eq!(bits.len(), docs.len());
        for target in 0..1001 {
            let mut set = BitsDocSet::new(bits.clone());
            let expected = docs
                .iter()
                .copied()
                .find(|&d| d >= target)
                .unwrap_or(TERMINATED);
            assert_eq!(set.seek(target), expected, "seek {target}");
            // Seeking behind the current doc stays put.
            assert_eq!(set.seek(target.saturating_sub(1)), expected);
            let left = docs.iter().filter(|&&d| d >= target).count() as u32;
            assert_eq!(set.count_including_deleted(), left, "count from {target}");
        }
        let mut set = BitsDocSet::new(bits);
        let mut buffer = [0; COLLECT_BLOCK_BUFFER_LEN];
        let mut filled = Vec::new();
        loop {
            let n = set.fill_buffer(&mut buffer);
            if n == 0 {
                break;
            }
            filled.extend_from_slice(&buffer[..n]);
        }
        assert_eq!(filled, docs);
        assert_eq!(
            collect(&mut BitsDocSet::new(bits_of(&[]))),
            Vec::<DocId>::new()
        );
    }

    /// 5,000 documents over several segments, some deleted: every filter
    /// matches what the uncached query matches, before and after eviction.
    #[test]
    fn cached_filters_match_the_uncached_queries() {
        // A cache that holds about one segment's clause: evictions happen.
        for cache in [FilterCache::default(), FilterCache::new(400)] {
            let cache = Arc::new(cache);
            let mut schema = Schema::builder();
            let channel = schema.add_text_field("channel", STRING);
            let nps = schema.add_i64_field("nps", INDEXED | FAST);
            let index = Index::create_in_ram(schema.build());
            let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
            for i in 0..5_000i64 {
                let c = ["survey", "review", "chat"][(i % 3) as usize];
                writer
                    .add_document(doc!(channel => c, nps => i % 11))
                    .unwrap();
                if i % 1_000 == 999 {
                    writer.commit().unwrap();
                }
            }
            writer.delete_term(Term::from_field_i64(nps, 4));
            writer.commit().unwrap();
            let reader = index.reader().unwrap();
            let searcher = reader.searcher();
            assert!(searcher.segment_readers().len() > 1);

            let term = |c: &str| -> Box<dyn Query> {
                Box::new(TermQuery::new(
                    Term::from_field_text(channel, c),
                    IndexRecordOption::Basic,
                ))
            };
            let range = |lo: i64, hi: i64| -> Box<dyn Query> {
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_i64(nps, lo)),
                    std::ops::Bound::Included(Term::from_field_i64(nps, hi)),
                ))
            };
            for round in 0..2 {
                for (c, lo, hi) in [("survey", 0, 6), ("chat", 9, 10), ("review", 3, 5)] {
                    let cached = CachedFilter::new(
                        vec![
                            (format!("c{c}"), term(c)),
                            (format!("n{lo}-{hi}"), range(lo, hi)),
                        ],
                        cache.clone(),
                    );
                    let plain = BooleanQuery::new(vec![
                        (Occur::Must, term(c)),
                        (Occur::Must, range(lo, hi)),
                    ]);
                    let got = searcher.search(&cached, &DocSetCollector).unwrap();
                    let want = searcher.search(&plain, &DocSetCollector).unwrap();
                    assert_eq!(got, want, "{c} {lo}..{hi} round {round}");
                    assert!(!want.is_empty());
                    assert_eq!(
                        searcher.search(&cached, &Count).unwrap(),
                        want.len(),
                        "count {c} {lo}..{hi}"
                    );
                }
                assert!(cache.bytes() <= cache.max_bytes);
            }
            assert!(cache.bytes() > 0);
            assert!(cache.hits.get() > 0 && cache.misses.get() > 0);
            // Clauses that match nothing hold no bits, but their keys
            // (client text) count: many distinct ones stay within the bound.
            let long = "x".repeat(1_000);
            for i in 0..200 {
                let cached = CachedFilter::new(
                    vec![(format!("c{long}{i}"), term(&format!("{long}{i}")))],
                    cache.clone(),
                );
                assert_eq!(searcher.search(&cached, &Count).unwrap(), 0);
                assert!(cache.bytes() <= cache.max_bytes);
            }
            assert!(cache.bytes() > 0);
            // After a merge the old segments' entries go.
            let ids = index.searchable_segment_ids().unwrap();
            writer.merge(&ids).wait().unwrap();
            reader.reload().unwrap();
            let merged = reader.searcher();
            cache.retain_live(&merged);
            assert_eq!(cache.bytes(), 0);
            // A search that began before the merge (with the searcher
            // before it) drops nothing the newer searcher's searches read.
            let cached = CachedFilter::new(vec![("csurvey".into(), term("survey"))], cache.clone());
            assert!(merged.search(&cached, &Count).unwrap() > 0);
            let held = cache.bytes();
            assert!(held > 0 || cache.max_bytes == 400, "{held}");
            cache.retain_live(&searcher);
            assert_eq!(cache.bytes(), held);
        }
    }
}
