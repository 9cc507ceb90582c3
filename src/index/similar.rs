//! What similarity search needs from the index: the matches of the query
//! and filter as a set of vector keys (with their count and facets), and
//! the documents of the keys the vector index returned.

use tantivy::collector::{Collector, Count, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, Term, TERMINATED};

use super::search::doc_id;
use super::vectors::KeyBits;
use super::{facets, query, schema, IndexError, SearchIndex};
use crate::domain::{FacetCounts, FeedbackId, SearchQuery};

/// The matches a similarity search ranks.
pub struct SimilarScope {
    pub total_hits: u64,
    pub facets: Vec<FacetCounts>,
    pub retag_pending: u64,
    /// The matches' keys; `None` when the query and filter match everything.
    pub keys: Option<KeyBits>,
}

/// Collects the `seq` (vector key) of every match.
struct KeyCollector;

struct SegmentKeys {
    seqs: Column<u64>,
    keys: Vec<u64>,
}

impl Collector for KeyCollector {
    type Fruit = KeyBits;
    type Child = SegmentKeys;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentKeys> {
        Ok(SegmentKeys {
            seqs: segment.fast_fields().u64(schema::field::SEQ)?,
            keys: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, segments: Vec<Vec<u64>>) -> tantivy::Result<KeyBits> {
        let mut bits = KeyBits::default();
        segments
            .into_iter()
            .flatten()
            .for_each(|key| bits.insert(key));
        Ok(bits)
    }
}

impl SegmentCollector for SegmentKeys {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(seq) = self.seqs.first(doc) {
            self.keys.push(seq);
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.keys
    }
}

impl SearchIndex {
    /// The matches of the query and filter for a similarity search
    /// (blocking): count, facets and, unless everything matches, their keys.
    pub fn similar_scope(&self, query: &SearchQuery) -> Result<SimilarScope, IndexError> {
        let fields = &self.shared.fields;
        let searcher = self.shared.reader.searcher();
        let (full_query, retag_pending) = self.slice_query(&searcher, query)?;
        let everything = query.text.trim().is_empty()
            && query::filter_clauses(fields, &self.shared.columns, &query.filter).is_empty()
            && !query::filters_by_themes(query);
        // `slice_query` dropped the segments merged away from the column
        // cache, which facets read.
        let facets = facets::facet_collector(
            &query.facets,
            &self.shared.columns,
            Some((self.shared.tags.clone(), query.taxonomy_version)),
        )?;
        if everything && facets.is_none() {
            // Every document matches: no pass over them (counting through
            // the collector visits every document: 12% of the CPU at 1M).
            return Ok(SimilarScope {
                total_hits: searcher.num_docs(),
                facets: Vec::new(),
                retag_pending,
                keys: None,
            });
        }
        let keys = (!everything).then_some(KeyCollector);
        let (total_hits, keys, facets) = match facets {
            Some(facets) => searcher.search(&*full_query, &(Count, keys, facets))?,
            None => {
                let (count, keys) = searcher.search(&*full_query, &(Count, keys))?;
                (count, keys, Vec::new())
            }
        };
        Ok(SimilarScope {
            total_hits: total_hits as u64,
            facets,
            retag_pending,
            keys,
        })
    }

    /// The ids of the documents holding these keys (`None`: no such
    /// document, e.g. deleted since), in order (blocking). One term lookup
    /// per key and segment: a `TermSetQuery` streamed the `seq` term
    /// dictionary (one term per item) for a few dozen keys, 15% of the
    /// server's CPU in unfiltered similarity searches at 1M items (`perf`,
    /// `cargo bench --bench load -- similar-store`).
    pub fn ids_of_keys(&self, keys: &[u64]) -> Result<Vec<Option<FeedbackId>>, IndexError> {
        let fields = &self.shared.fields;
        let searcher = self.shared.reader.searcher();
        let mut found: std::collections::HashMap<u64, FeedbackId> =
            std::collections::HashMap::with_capacity(keys.len());
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let inverted = segment.inverted_index(fields.seq)?;
            let alive = segment.alive_bitset();
            for &key in keys {
                if found.contains_key(&key) {
                    continue;
                }
                let term = Term::from_field_u64(fields.seq, key);
                let postings = inverted
                    .read_postings(&term, IndexRecordOption::Basic)
                    .map_err(tantivy::TantivyError::from)?;
                let Some(mut postings) = postings else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    if alive.is_none_or(|alive| alive.is_alive(doc)) {
                        let address = DocAddress::new(ord as SegmentOrdinal, doc);
                        if let Ok(id) = doc_id(&searcher, &self.shared.columns, address) {
                            found.insert(key, id);
                        }
                        break;
                    }
                    doc = postings.advance();
                }
            }
        }
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{HitView, SearchFilter, SearchQuery, SortOrder};

    fn query(text: &str, facets: &[&str]) -> SearchQuery {
        SearchQuery {
            text: text.into(),
            filter: SearchFilter::default(),
            sort: SortOrder::Relevance,
            limit: 10,
            cursor: None,
            facets: facets.iter().map(|f| f.to_string()).collect(),
            similar_to: None,
            taxonomy_version: 1,
            total_hits_up_to: None,
            view: HitView::Full,
        }
    }

    #[test]
    fn keys_are_the_matches_and_map_back_to_their_ids() {
        let index = crate::index::fuzz_fixture();
        let all = index.similar_scope(&query("", &[])).unwrap();
        assert!(all.keys.is_none(), "everything matches: no keys");
        assert_eq!(all.total_hits, index.documents());
        // A theme facet counts the current taxonomy's items without
        // restricting the candidates; a theme field in the query restricts
        // them like a filter.
        let faceted = index.similar_scope(&query("", &["theme"])).unwrap();
        assert!(faceted.keys.is_none(), "a facet restricts nothing");
        assert_eq!(faceted.total_hits, all.total_hits);
        assert!(!faceted.facets[0].counts.is_empty());
        for restricted in [query("refund", &[]), query("theme:*", &[])] {
            let scope = index.similar_scope(&restricted).unwrap();
            let keys = scope.keys.expect("restricted: keys");
            assert_eq!(keys.len() as u64, scope.total_hits, "{:?}", restricted.text);
            assert!(scope.total_hits < all.total_hits);
            let wanted: Vec<u64> = keys.iter().chain([u64::MAX]).collect();
            let ids = index.ids_of_keys(&wanted).unwrap();
            assert_eq!(ids.last(), Some(&None), "an unknown key has no id");
            let page = index
                .search(&SearchQuery {
                    limit: 1000,
                    ..restricted.clone()
                })
                .unwrap();
            let mut found: Vec<String> = ids
                .into_iter()
                .flatten()
                .map(|id| id.as_str().to_string())
                .collect();
            let mut expected: Vec<String> = page
                .hits
                .into_iter()
                .map(|(id, _)| id.as_str().to_string())
                .collect();
            found.sort();
            expected.sort();
            assert_eq!(found, expected);
        }
    }
}
