//! Facets: how many matches carry each value of a keyword field (or of an
//! `attributes.KEY` path), counted in the page's pass by `FacetCollector`.
//!
//! The result is the one tantivy's terms aggregation gives for the same
//! request (size `FACET_VALUES_PER_FIELD`, each segment cut to its
//! `SEGMENT_VALUES` most frequent values before the segments are merged,
//! values by count then by value), without its cost per search: tantivy
//! builds its aggregation tree and opens every column anew for each
//! segment of each search, reads each document's value out of a
//! bit-packed block, and turns every counted term into an owned key in
//! each segment. Here a segment counts by term ordinal: the single-valued
//! keyword fields (channel, product, ...) from their ordinals decoded once
//! per segment into a byte or two a document (`DocOrds`, kept by the
//! `ColumnCache`), other columns (tags, themes, attributes) from the
//! cached column a batch of documents per call; only the ordinals that
//! survive the segment's cut are turned into text, in one sorted pass over
//! the dictionary. A unit test compares the two on the same index.

use std::collections::HashMap;
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{ColumnIndex, StrColumn};
use tantivy::{DocId, Score, SegmentReader};

use super::collect::ColumnCache;
use super::tags::{ConfirmedTags, SegmentTagged};
use super::{schema, IndexError};
use crate::domain::limits::FACET_VALUES_PER_FIELD;
use crate::domain::FacetCounts;

/// Values one segment keeps per field before the segments are merged
/// (tantivy's default `segment_size`, ten times the size). Where a segment
/// has more distinct values among its matches, counts of values outside
/// its most frequent ones are left out, as tantivy does.
const SEGMENT_VALUES: usize = FACET_VALUES_PER_FIELD * 10;

/// Dictionaries up to this many terms count into an array by ordinal;
/// larger ones (customer ids) into a map of the ordinals seen.
const DENSE_TERMS: usize = 1 << 16;

/// Documents whose values are read in one call per column.
const BATCH: usize = 64;

/// The facet collector of a request, `None` without facets; a field that
/// cannot be faceted on is an error. Theme facets (`theme`,
/// `theme_sentiment`) count only the matches tagged with taxonomy version
/// `themes_at.1` (the others wait for their re-tag: the search's
/// `retag_pending`); without `themes_at` (tests) they count every match.
pub(super) fn facet_collector(
    facets: &[String],
    columns: &Arc<ColumnCache>,
    themes_at: Option<(Arc<ConfirmedTags>, u64)>,
) -> Result<Option<FacetCollector>, IndexError> {
    if facets.is_empty() {
        return Ok(None);
    }
    for field in facets {
        let valid = schema::KEYWORD_FIELDS.contains(&field.as_str())
            || schema::attribute_key(field).is_some_and(crate::domain::is_attribute_key);
        if !valid {
            // Named back in the error, cut short (it is client text).
            return Err(IndexError::InvalidFacet(
                crate::domain::shown(field).into_owned(),
            ));
        }
    }
    Ok(Some(FacetCollector {
        fields: facets.to_vec(),
        columns: columns.clone(),
        dense_terms: DENSE_TERMS,
        decode: true,
        themes_at,
    }))
}

/// Whether `field` is a theme facet (counted at one taxonomy version).
fn is_theme_field(field: &str) -> bool {
    field == schema::field::THEME || field == schema::field::THEME_SENTIMENT
}

/// Counts the matches' values of each requested field.
pub struct FacetCollector {
    fields: Vec<String>,
    columns: Arc<ColumnCache>,
    /// `DENSE_TERMS` (tests count sparsely with 0).
    dense_terms: usize,
    /// Keyword fields count from their decoded ordinals (tests also
    /// read the columns).
    decode: bool,
    /// The confirmed tags and the taxonomy version theme facets count.
    themes_at: Option<(Arc<ConfirmedTags>, u64)>,
}

/// One segment's counts.
pub struct FacetSegmentCollector {
    fields: Vec<FieldCounts>,
    /// Whether some field is read from its column (a batch at a time).
    batched: bool,
    /// Documents collected since the last flush (at most `BATCH`).
    docs: Vec<DocId>,
    values: Vec<Option<u64>>,
}

struct FieldCounts {
    field: String,
    source: Source,
    /// A theme facet's documents at the search's taxonomy version: only
    /// those are counted (read from the column, never decoded).
    tagged: Option<SegmentTagged>,
}

/// Where a segment's field is counted from.
enum Source {
    /// The segment has no such column.
    Absent,
    /// A keyword field whose ordinals the cache decoded by document:
    /// counted at once into an array by ordinal.
    Decoded {
        column: StrColumn,
        ords: Arc<DocOrds>,
        counts: Vec<u32>,
    },
    /// The column itself, read a batch of documents at a time.
    Column { column: StrColumn, counts: Counts },
}

/// Documents' term ordinals of a single-valued keyword column, decoded
/// once per segment: a facet then counts with one array read per document
/// instead of a column read (which decodes a bit-packed block each time).
/// 1 byte a document where the field has fewer than 255 values, else 2;
/// a document without a value reads as the number of values (one past the
/// last ordinal), so counting needs no branch.
pub enum DocOrds {
    Small(Box<[u8]>),
    Wide(Box<[u16]>),
}

impl DocOrds {
    /// The column's ordinals by document, or `None` where a document may
    /// hold several values or the field has 65,535 values or more (such
    /// columns are read as they are).
    pub fn decode(column: &StrColumn, max_doc: DocId) -> Option<DocOrds> {
        let ords = column.ords();
        let terms = column.dictionary().num_terms();
        if matches!(ords.index, ColumnIndex::Multivalued(_)) || terms >= usize::from(u16::MAX) {
            return None;
        }
        let mut decoded: Vec<u16> = Vec::with_capacity(max_doc as usize);
        let mut docs = Vec::with_capacity(1_024);
        let mut values = vec![None; 1_024];
        for start in (0..max_doc).step_by(1_024) {
            docs.clear();
            docs.extend(start..(start + 1_024).min(max_doc));
            let values = &mut values[..docs.len()];
            values.fill(None);
            ords.first_vals(&docs, values);
            // Every ordinal is below `terms` (< u16::MAX).
            decoded.extend(
                values
                    .iter()
                    .map(|ord| ord.map_or(terms as u16, |o| o as u16)),
            );
        }
        Some(if terms < usize::from(u8::MAX) {
            DocOrds::Small(decoded.into_iter().map(|o| o as u8).collect())
        } else {
            DocOrds::Wide(decoded.into_boxed_slice())
        })
    }

    /// Adds the documents' ordinals to `counts` (one more slot than the
    /// field has values: the last counts documents without one).
    #[inline]
    fn count(&self, docs: &[DocId], counts: &mut [u32]) {
        match self {
            DocOrds::Small(ords) => {
                for &doc in docs {
                    counts[usize::from(ords[doc as usize])] += 1;
                }
            }
            DocOrds::Wide(ords) => {
                for &doc in docs {
                    counts[usize::from(ords[doc as usize])] += 1;
                }
            }
        }
    }
}

enum Counts {
    Dense(Vec<u32>),
    Sparse(HashMap<u64, u32>),
}

impl Counts {
    fn add(&mut self, ord: u64) {
        match self {
            Counts::Dense(counts) => counts[ord as usize] += 1,
            Counts::Sparse(counts) => *counts.entry(ord).or_default() += 1,
        }
    }

    /// The ordinals counted, with their counts (in no order).
    fn into_counted(self) -> Vec<(u64, u32)> {
        match self {
            Counts::Dense(counts) => counts
                .into_iter()
                .enumerate()
                .filter(|&(_, count)| count > 0)
                .map(|(ord, count)| (ord as u64, count))
                .collect(),
            Counts::Sparse(counts) => counts.into_iter().collect(),
        }
    }
}

impl Collector for FacetCollector {
    type Fruit = Vec<FacetCounts>;
    type Child = FacetSegmentCollector;

    fn for_segment(
        &self,
        _segment_ord: u32,
        segment: &SegmentReader,
    ) -> tantivy::Result<FacetSegmentCollector> {
        let fields: Vec<FieldCounts> = self
            .fields
            .iter()
            .map(|name| {
                let tagged = match &self.themes_at {
                    Some((tags, version)) if is_theme_field(name) => {
                        Some(tags.tagged(segment, *version)?)
                    }
                    _ => None,
                };
                // Only the keyword fields are decoded (never a client's
                // attribute name: that bounds the memory).
                let decode = self.decode
                    && tagged.is_none()
                    && schema::KEYWORD_FIELDS.contains(&name.as_str());
                let column = self.columns.keyword_column(segment, name)?;
                let ords = match &column {
                    Some(keyword) if decode => keyword.doc_ords(segment.max_doc()),
                    _ => None,
                };
                let source = match (column.map(|keyword| keyword.column), ords) {
                    (None, _) => Source::Absent,
                    (Some(column), Some(ords)) => Source::Decoded {
                        counts: vec![0; column.dictionary().num_terms() + 1],
                        column,
                        ords,
                    },
                    (Some(column), None) => {
                        let terms = column.dictionary().num_terms();
                        let counts = if terms <= self.dense_terms {
                            Counts::Dense(vec![0; terms])
                        } else {
                            Counts::Sparse(HashMap::new())
                        };
                        Source::Column { column, counts }
                    }
                };
                Ok(FieldCounts {
                    field: name.clone(),
                    source,
                    tagged,
                })
            })
            .collect::<tantivy::Result<_>>()?;
        Ok(FacetSegmentCollector {
            batched: fields
                .iter()
                .any(|f| matches!(f.source, Source::Column { .. })),
            fields,
            docs: Vec::with_capacity(BATCH),
            values: vec![None; BATCH],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, segments: Vec<Vec<FacetCounts>>) -> tantivy::Result<Vec<FacetCounts>> {
        Ok(self.merge(segments))
    }
}

impl FacetCollector {
    /// The segments' counts summed per field and value; per field the
    /// `FACET_VALUES_PER_FIELD` most frequent values, on equal counts the
    /// smallest value first.
    pub(super) fn merge(&self, segments: Vec<Vec<FacetCounts>>) -> Vec<FacetCounts> {
        let mut merged: Vec<HashMap<String, u64>> = vec![HashMap::new(); self.fields.len()];
        for segment in segments {
            for (field, facet) in merged.iter_mut().zip(segment) {
                for (value, count) in facet.counts {
                    *field.entry(value).or_default() += count;
                }
            }
        }
        self.fields
            .iter()
            .zip(merged)
            .map(|(field, counts)| {
                let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
                counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                counts.truncate(FACET_VALUES_PER_FIELD);
                FacetCounts {
                    field: field.clone(),
                    counts,
                }
            })
            .collect()
    }
}

impl FacetSegmentCollector {
    /// Counts the column-read fields' values of the documents gathered
    /// so far.
    fn flush(&mut self) {
        let mut kept = Vec::new();
        for field in &mut self.fields {
            let Source::Column { column, counts } = &mut field.source else {
                continue;
            };
            let docs = match &field.tagged {
                None => &self.docs,
                Some(tagged) => {
                    kept.clear();
                    kept.extend(self.docs.iter().copied().filter(|&doc| tagged.holds(doc)));
                    &kept
                }
            };
            let ords = column.ords();
            if let ColumnIndex::Multivalued(_) = ords.index {
                for &doc in docs {
                    for ord in ords.values_for_doc(doc) {
                        counts.add(ord);
                    }
                }
            } else {
                let values = &mut self.values[..docs.len()];
                values.fill(None);
                ords.first_vals(docs, values);
                for ord in values.iter().flatten() {
                    counts.add(*ord);
                }
            }
        }
        self.docs.clear();
    }
}

impl SegmentCollector for FacetSegmentCollector {
    /// Per field, the segment's most frequent values (at most
    /// `SEGMENT_VALUES`) and their counts.
    type Fruit = Vec<FacetCounts>;

    #[inline]
    fn collect(&mut self, doc: DocId, _score: Score) {
        self.collect_block(&[doc]);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for field in &mut self.fields {
            if let Source::Decoded { ords, counts, .. } = &mut field.source {
                ords.count(docs, counts);
            }
        }
        if self.batched {
            for &doc in docs {
                self.docs.push(doc);
                if self.docs.len() == BATCH {
                    self.flush();
                }
            }
        }
    }

    fn harvest(mut self) -> Vec<FacetCounts> {
        self.flush();
        self.fields
            .into_iter()
            .map(|field| {
                let counts = match field.source {
                    Source::Absent => Vec::new(),
                    Source::Decoded {
                        column, mut counts, ..
                    } => {
                        // The last slot: documents without a value.
                        counts.pop();
                        segment_values(&column, Counts::Dense(counts))
                    }
                    Source::Column { column, counts } => segment_values(&column, counts),
                };
                FacetCounts {
                    field: field.field,
                    counts,
                }
            })
            .collect()
    }
}

/// The values counted in a segment, at most its `SEGMENT_VALUES` most
/// frequent ones (on equal counts the lowest ordinal: the smallest value).
fn segment_values(column: &StrColumn, counts: Counts) -> Vec<(String, u64)> {
    let mut counted = counts.into_counted();
    if counted.len() > SEGMENT_VALUES {
        counted.select_nth_unstable_by_key(SEGMENT_VALUES, |&(ord, count)| {
            (std::cmp::Reverse(count), ord)
        });
        counted.truncate(SEGMENT_VALUES);
    }
    counted.sort_unstable_by_key(|&(ord, _)| ord);
    let ords: Vec<u64> = counted.iter().map(|&(ord, _)| ord).collect();
    let mut values = Vec::with_capacity(counted.len());
    // A dictionary that cannot be read loses its values (as a segment
    // without the column): facets never fail a search.
    let _ = column.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
        values.push(String::from_utf8_lossy(bytes).into_owned());
    });
    values
        .into_iter()
        .zip(counted)
        .map(|(value, (_, count))| (value, u64::from(count)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::aggregation::agg_req::{Aggregation, AggregationVariants, Aggregations};
    use tantivy::aggregation::agg_result::{AggregationResult, BucketResult};
    use tantivy::aggregation::bucket::TermsAggregation;
    use tantivy::aggregation::{AggContextParams, AggregationCollector, AggregationLimitsGuard};
    use tantivy::query::{AllQuery, Query, QueryParser};
    use tantivy::Index;

    use crate::domain::{AnalysisState, Channel, FeedbackDraft, UnixMicros};
    use crate::index::{add_test_item, test_index};

    /// tantivy's terms aggregation of `field`, as `FacetCounts` counts.
    fn tantivy_terms(index: &Index, query: &dyn Query, field: &str) -> Vec<(String, u64)> {
        let mut aggs = Aggregations::default();
        aggs.insert(
            "f".into(),
            Aggregation {
                agg: AggregationVariants::Terms(TermsAggregation {
                    field: field.into(),
                    size: Some(FACET_VALUES_PER_FIELD as u32),
                    ..TermsAggregation::default()
                }),
                sub_aggregation: Aggregations::default(),
            },
        );
        let collector = AggregationCollector::from_aggs(
            aggs,
            AggContextParams::new(
                AggregationLimitsGuard::default(),
                index.tokenizers().clone(),
            ),
        );
        let mut results = index
            .reader()
            .unwrap()
            .searcher()
            .search(query, &collector)
            .unwrap();
        match results.0.remove("f") {
            Some(AggregationResult::BucketResult(BucketResult::Terms { buckets, .. })) => buckets
                .into_iter()
                .map(|bucket| (bucket.key.to_string(), bucket.doc_count))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// 4,000 items in 4 segments, one in seven deleted: few channels, 75
    /// products (more than a page of values), a tag or two or none, an
    /// attribute on some items, more customers in a segment than it keeps;
    /// every facet equals tantivy's terms aggregation, for every field,
    /// over all items and a term's, counted from decoded ordinals and from
    /// the columns, by array and by map.
    #[test]
    fn facets_equal_tantivys_terms_aggregation() {
        let (index, fields, mut writer) = test_index();
        let channels = [
            Channel::Survey,
            Channel::Review,
            Channel::Chat,
            Channel::Email,
        ];
        for seq in 0..4_000u64 {
            let rng = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
            let mut attributes = std::collections::BTreeMap::new();
            if seq % 3 == 0 {
                attributes.insert("plan".to_string(), format!("plan-{}", rng % 5));
            }
            add_test_item(
                &writer,
                &fields,
                seq,
                FeedbackDraft {
                    id: format!("i-{seq}"),
                    text: if (rng >> 20) % 2 == 0 {
                        "late delivery"
                    } else {
                        "kind staff"
                    }
                    .into(),
                    channel: Some(channels[(rng % 4) as usize]),
                    // Skewed: low products far more often, and ties.
                    product: format!("p{:02}", (rng % 100) * (rng % 100) / 100),
                    tags: (0..rng % 3)
                        .map(|t| format!("t{}", (rng >> 8) % 9 + t))
                        .collect(),
                    // 25 frequent customers, and one-off ones: each
                    // segment holds more distinct customers than it keeps.
                    customer_id: if seq % 4 == 0 {
                        format!("c{}", (seq / 4) % 25)
                    } else {
                        format!("once-{seq}")
                    },
                    attributes,
                    created_at: Some(UnixMicros(1_700_000_000_000_000)),
                    ..Default::default()
                },
                AnalysisState::Pending,
            );
            if seq % 1_000 == 999 {
                writer.commit().unwrap();
            }
        }
        for seq in (0..4_000u64).step_by(7) {
            writer.delete_term(tantivy::Term::from_field_text(
                fields.id,
                &format!("i-{seq}"),
            ));
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.segment_readers().len(), 4);
        let parser = QueryParser::for_index(&index, vec![fields.text]);
        let late: Box<dyn Query> = parser.parse_query("late").unwrap();
        let columns = Arc::new(ColumnCache::default());
        let names: Vec<String> = [
            "channel",
            "product",
            "tags",
            "attributes.plan",
            "language",
            "attributes.none",
            "customer_id",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for query in [Box::new(AllQuery) as Box<dyn Query>, late] {
            // As the server counts, twice (the second search reads the
            // cached columns and ordinals), then from the columns alone,
            // into arrays and into maps.
            for (decode, dense_terms) in [
                (true, DENSE_TERMS),
                (true, DENSE_TERMS),
                (false, DENSE_TERMS),
                (false, 0),
            ] {
                let mut collector = facet_collector(&names, &columns, None).unwrap().unwrap();
                collector.decode = decode;
                collector.dense_terms = dense_terms;
                let facets = searcher.search(&*query, &collector).unwrap();
                assert_eq!(facets.len(), names.len());
                for (facet, name) in facets.iter().zip(&names) {
                    assert_eq!(&facet.field, name);
                    let mut expected = tantivy_terms(&index, &*query, name);
                    let mut counts = facet.counts.clone();
                    if name == "customer_id" {
                        // Past the segments' cut, which of the one-off
                        // customers (all tied at 1) survive is the
                        // implementation's choice.
                        assert_eq!(counts.len(), FACET_VALUES_PER_FIELD);
                        counts.retain(|(_, count)| *count > 1);
                        expected.retain(|(_, count)| *count > 1);
                        assert_eq!(counts.len(), 25);
                    }
                    assert_eq!(counts, expected, "{name}");
                }
                let products = &facets[1].counts;
                assert_eq!(
                    products.len(),
                    FACET_VALUES_PER_FIELD,
                    "a full page of products"
                );
                assert!(facets[2].counts.len() > 5 && facets[3].counts.len() == 5);
                assert!(facets[5].counts.is_empty());
                let segment_customers = searcher
                    .segment_reader(0)
                    .fast_fields()
                    .str("customer_id")
                    .unwrap()
                    .unwrap()
                    .dictionary()
                    .num_terms();
                assert!(segment_customers > SEGMENT_VALUES, "{segment_customers}");
            }
        }
        // A byte a document for few values, two for more; none for a
        // multi-valued field.
        let segment = searcher.segment_reader(0);
        let max_doc = segment.max_doc() as usize;
        let ords = |field| {
            columns
                .keyword_column(segment, field)
                .unwrap()
                .and_then(|keyword| keyword.doc_ords(segment.max_doc()))
        };
        assert!(
            matches!(ords("channel").as_deref(), Some(DocOrds::Small(o)) if o.len() == max_doc)
        );
        assert!(
            matches!(ords("customer_id").as_deref(), Some(DocOrds::Wide(o)) if o.len() == max_doc)
        );
        assert!(ords("tags").is_none());
        assert!(matches!(
            facet_collector(&["text".to_string()], &columns, None),
            Err(IndexError::InvalidFacet(_))
        ));
        assert!(facet_collector(&[], &columns, None).unwrap().is_none());
    }
}
