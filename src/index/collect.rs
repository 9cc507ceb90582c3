//! The page collector: the top `k` hits of one search in the order of its
//! sort, each with its total `SortKey` (exact search-after cursors), and the
//! number of matches, doing no more work than the sort needs:
//! - date and sentiment sorts never score: the primary key comes from a fast
//!   field, and the tie breaker (`seq`) is read only for documents that can
//!   still enter the page;
//! - relevance, when it runs alone (no facets in the same pass), lets the
//!   query prune (block-WAND over term postings): a document is only offered
//!   when its score can reach the page. The boundary is tie-safe: the
//!   pruning threshold sits one float step below the page's lowest score,
//!   so a document that ties it on score still competes on `seq`. The total
//!   then comes from `Weight::count`, which needs no scoring (a single term
//!   on a segment without deletes reads it from the term's document
//!   frequency), or, with a count limit, from counting up to that limit;
//! - with facets the page, the count and the aggregations share one pass
//!   (the caller pairs this collector with the aggregation collector);
//! - the fast-field columns it reads are opened once per segment and kept
//!   (`ColumnCache`): opening them parses the segment's column directory,
//!   which cost more than the search itself for a query matching little.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, ColumnValues};
use tantivy::index::SegmentId;
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, DocSet, Score, Searcher, SegmentReader, TERMINATED};

use super::cursor::SortKey;
use super::schema::field;
use crate::domain::SortOrder;

/// The top `k` keys of a search, after an optional cursor key.
pub struct PageCollector {
    pub sort: SortOrder,
    pub k: usize,
    /// Only keys strictly below this one (the last key of the previous page).
    pub after: Option<SortKey>,
    /// With relevance alone: count the matches up to this many only (the
    /// total is then a lower bound once it reaches it).
    pub count_limit: Option<u64>,
    /// Relevance may prune: only when every document's score comes out the
    /// same whichever way the query visits it (see `prunes_exactly`).
    pub prune: bool,
    /// The segments' columns, opened once (shared by every search).
    pub columns: Arc<ColumnCache>,
}

/// The columns a page reads from one segment. A segment never changes
/// (deletes only add a bitset), so its columns stay valid as long as it
/// exists.
#[derive(Clone)]
struct SegmentColumns {
    seq: Arc<dyn ColumnValues<u64>>,
    /// `None` when the segment has no such column (date sorts then fail
    /// as they would opening it).
    created: Option<Arc<dyn ColumnValues<tantivy::DateTime>>>,
    sentiment: Option<Column<f64>>,
}

impl SegmentColumns {
    fn open(segment: &SegmentReader) -> tantivy::Result<SegmentColumns> {
        let fast = segment.fast_fields();
        Ok(SegmentColumns {
            seq: fast.u64(field::SEQ)?.first_or_default_col(0),
            created: fast
                .date(field::CREATED_AT)
                .ok()
                .map(|c| c.first_or_default_col(tantivy::DateTime::MIN)),
            sentiment: fast.f64(field::SENTIMENT_SCORE).ok(),
        })
    }
}

/// Each live segment's columns, by segment id. Segments merged away are
/// dropped by `retain_live`, which every search calls with its searcher.
#[derive(Default)]
pub struct ColumnCache {
    segments: Mutex<HashMap<SegmentId, SegmentColumns>>,
}

impl ColumnCache {
    fn get(&self, segment: &SegmentReader) -> tantivy::Result<SegmentColumns> {
        let id = segment.segment_id();
        if let Some(columns) = self.lock().get(&id) {
            return Ok(columns.clone());
        }
        // Opened outside the lock; two searches racing open it twice and
        // keep one.
        let columns = SegmentColumns::open(segment)?;
        self.lock().insert(id, columns.clone());
        Ok(columns)
    }

    /// Forgets the segments `searcher` no longer has (merged or deleted
    /// away), once the cache holds more segments than the searcher.
    pub fn retain_live(&self, searcher: &Searcher) {
        super::retain_live_segments(&mut self.lock(), searcher);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SegmentId, SegmentColumns>> {
        // The map holds no invariant a panicking holder could break.
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether pruning keeps relevance keys exact for a query with
/// `scoring_terms` terms. Block-WAND sums a document's term scores in the
/// order its cursors happen to stand, the unpruned scorers in query order:
/// with three or more terms the float sums can differ in the last bit, so a
/// document's key could change between two pages and a cursor would skip
/// or repeat it (the unit test below found it). One or two terms sum the
/// same in any order.
pub fn prunes_exactly(scoring_terms: usize) -> bool {
    scoring_terms <= 2
}

/// Whether pruning pays for `query`: block-WAND skips postings only for a
/// term, or a union or intersection of terms, with nothing around them.
/// Any other shape (a phrase, a filter, an exclusion) visits every match
/// anyway, and the separate count would be a second pass; there one pass
/// that scores and counts is cheaper (measured: phrases 18% fewer
/// queries/s with the second pass). With a count limit the count stops
/// early, so pruning pays for every shape.
pub fn pruning_pays(query: &dyn tantivy::query::Query, count_limit: Option<u64>) -> bool {
    use tantivy::query::{BooleanQuery, Occur, TermQuery};
    if count_limit.is_some() || query.is::<TermQuery>() {
        return true;
    }
    let Some(boolean) = query.downcast_ref::<BooleanQuery>() else {
        return false;
    };
    let clauses = boolean.clauses();
    let all = |occur: Occur| {
        clauses
            .iter()
            .all(|(o, q)| *o == occur && q.is::<TermQuery>())
    };
    !clauses.is_empty() && (all(Occur::Should) || all(Occur::Must))
}

/// One segment's (or the merged) page: the keys, best first, and the count.
pub struct PageFruit {
    pub top: Vec<(SortKey, DocAddress)>,
    pub count: u64,
    /// The count stopped at `count_limit`: more documents may match.
    pub count_truncated: bool,
}

pub struct PageSegmentCollector {
    sort: SortOrder,
    k: usize,
    after: Option<SortKey>,
    segment_ord: u32,
    seq: Arc<dyn ColumnValues<u64>>,
    created: Option<Arc<dyn ColumnValues<tantivy::DateTime>>>,
    sentiment: Option<Column<f64>>,
    /// Min-heap of the best `k` keys so far.
    heap: BinaryHeap<Reverse<(SortKey, DocId)>>,
    count: u64,
}

impl PageSegmentCollector {
    /// The key's primary part: everything but the `seq` tie breaker.
    #[inline]
    fn primary(&self, doc: DocId, score: Score) -> i64 {
        let created = self
            .created
            .as_ref()
            .map_or(0, |c| c.get_val(doc).into_timestamp_micros());
        let sentiment = self.sentiment.as_ref().and_then(|c| c.first(doc));
        SortKey::primary_of(self.sort, score, created, sentiment)
    }

    /// Offers one matching document to the page.
    #[inline]
    fn offer(&mut self, doc: DocId, score: Score) {
        let primary = self.primary(doc, score);
        // Cheap rejections on the primary part alone, before `seq` is read.
        if let Some(after) = self.after {
            if primary > after.primary() {
                return;
            }
        }
        if self.heap.len() >= self.k {
            if let Some(Reverse((lowest, _))) = self.heap.peek() {
                if primary < lowest.primary() {
                    return;
                }
            }
        }
        let key = SortKey::from_primary(self.sort, primary, self.seq.get_val(doc));
        if matches!(self.after, Some(after) if key >= after) {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Reverse((key, doc)));
        } else if let Some(mut lowest) = self.heap.peek_mut() {
            if key > lowest.0 .0 {
                *lowest = Reverse((key, doc));
            }
        }
    }

    /// The score a document must exceed to still enter a full page: one
    /// float step below the page's lowest score, so ties on score are kept
    /// (they compete on `seq`).
    fn pruning_threshold(&self) -> Score {
        if self.heap.len() < self.k {
            return Score::MIN;
        }
        match self.heap.peek() {
            Some(Reverse((lowest, _))) => {
                let score = lowest.score(SortOrder::Relevance);
                let bits = score.to_bits();
                if score > 0.0 && bits > 0 {
                    f32::from_bits(bits - 1)
                } else {
                    Score::MIN
                }
            }
            None => Score::MIN,
        }
    }
}

impl SegmentCollector for PageSegmentCollector {
    type Fruit = PageFruit;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.count += 1;
        self.offer(doc, score);
    }

    fn harvest(self) -> PageFruit {
        let segment_ord = self.segment_ord;
        PageFruit {
            top: self
                .heap
                .into_iter()
                .map(|Reverse((key, doc))| (key, DocAddress::new(segment_ord, doc)))
                .collect(),
            count: self.count,
            count_truncated: false,
        }
    }
}

impl Collector for PageCollector {
    type Fruit = PageFruit;
    type Child = PageSegmentCollector;

    fn for_segment(
        &self,
        segment_ord: u32,
        segment: &SegmentReader,
    ) -> tantivy::Result<PageSegmentCollector> {
        let columns = self.columns.get(segment)?;
        let created = match self.sort {
            SortOrder::Newest | SortOrder::Oldest => match columns.created {
                Some(created) => Some(created),
                // Fails as opening it does.
                None => Some(
                    segment
                        .fast_fields()
                        .date(field::CREATED_AT)?
                        .first_or_default_col(tantivy::DateTime::MIN),
                ),
            },
            _ => None,
        };
        let sentiment = match self.sort {
            SortOrder::MostNegative | SortOrder::MostPositive => columns.sentiment,
            _ => None,
        };
        let seq = columns.seq;
        Ok(PageSegmentCollector {
            sort: self.sort,
            k: self.k.max(1),
            after: self.after,
            segment_ord,
            seq,
            created,
            sentiment,
            heap: BinaryHeap::with_capacity(self.k.max(1) + 1),
            count: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.sort == SortOrder::Relevance
    }

    fn merge_fruits(&self, fruits: Vec<PageFruit>) -> tantivy::Result<PageFruit> {
        let mut top = Vec::with_capacity(self.k * fruits.len());
        let mut count = 0u64;
        let mut count_truncated = false;
        for fruit in fruits {
            top.extend(fruit.top);
            count += fruit.count;
            count_truncated |= fruit.count_truncated;
        }
        top.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
        top.truncate(self.k);
        if let Some(limit) = self.count_limit {
            if count > limit {
                count = limit;
                count_truncated = true;
            }
        }
        Ok(PageFruit {
            top,
            count,
            count_truncated,
        })
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageFruit> {
        let mut collector = self.for_segment(segment_ord, reader)?;
        let alive = reader.alive_bitset();
        if self.sort != SortOrder::Relevance {
            weight.for_each_no_score(reader, &mut |docs| {
                for &doc in docs {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        collector.collect(doc, 0.0);
                    }
                }
            })?;
            return Ok(collector.harvest());
        }
        if !self.prune {
            weight.for_each(reader, &mut |doc, score| {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    collector.collect(doc, score);
                }
            })?;
            let mut fruit = collector.harvest();
            if let Some(limit) = self.count_limit {
                fruit.count_truncated = fruit.count > limit;
                fruit.count = fruit.count.min(limit);
            }
            return Ok(fruit);
        }
        // Relevance: only documents whose score can reach the page are
        // offered; the count is a separate pass that does not score.
        let mut threshold = Score::MIN;
        weight.for_each_pruning(Score::MIN, reader, &mut |doc, score| {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                collector.offer(doc, score);
                threshold = collector.pruning_threshold();
            }
            threshold
        })?;
        let (count, count_truncated) = match self.count_limit {
            None => (u64::from(weight.count(reader)?), false),
            Some(limit) => count_up_to(weight, reader, limit)?,
        };
        let mut fruit = collector.harvest();
        fruit.count = count;
        fruit.count_truncated = count_truncated;
        Ok(fruit)
    }
}

/// Live matches in the segment, counting no further than `limit`.
fn count_up_to(
    weight: &dyn Weight,
    reader: &SegmentReader,
    limit: u64,
) -> tantivy::Result<(u64, bool)> {
    let mut scorer = weight.scorer(reader, 1.0)?;
    let alive = reader.alive_bitset();
    let mut count = 0u64;
    let mut doc = scorer.doc();
    while doc != TERMINATED {
        if alive.is_none_or(|a| a.is_alive(doc)) {
            count += 1;
            if count >= limit {
                return Ok((count, scorer.advance() != TERMINATED));
            }
        }
        doc = scorer.advance();
    }
    Ok((count, false))
}

#[cfg(test)]
mod tests {
    use tantivy::collector::Count;
    use tantivy::query::{Query, QueryParser};
    use tantivy::{Index, IndexWriter, TantivyDocument, Term};

    use super::*;
    use crate::domain::{
        AnalysisState, FeedbackDraft, Sentiment, SentimentLabel, StoredFeedback, UnixMicros,
    };
    use crate::index::schema::{self, build_schema, TEXT_TOKENIZER};

    /// 3,000 items over 6 segments, one in ten deleted; texts repeat words
    /// so that BM25 scores both differ and tie; timestamps and sentiment
    /// scores tie in groups.
    fn index() -> (Index, QueryParser) {
        let (schema, fields) = build_schema();
        let index = Index::create_in_ram(schema);
        index
            .tokenizers()
            .register(TEXT_TOKENIZER, schema::text_analyzer());
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        let words = ["alpha", "beta", "gamma", "delta", "omega"];
        for seq in 0..3_000u64 {
            let mut rng = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
            let mut text = Vec::new();
            for _ in 0..(3 + rng % 9) {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                text.push(words[(rng >> 33) as usize % words.len()]);
            }
            text.push("filler");
            let score = ((seq % 7) as f32 - 3.0) / 3.0;
            let analysis = if seq % 5 == 0 {
                AnalysisState::Pending
            } else {
                AnalysisState::Done(crate::domain::Analysis {
                    language: "en".into(),
                    language_confidence: 1.0,
                    sentiment: Sentiment {
                        label: SentimentLabel::Neutral,
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
            };
            let item = StoredFeedback {
                feedback: FeedbackDraft {
                    id: format!("i-{seq}"),
                    text: text.join(" "),
                    created_at: Some(UnixMicros(1_700_000_000_000_000 + (seq / 4) as i64)),
                    ..Default::default()
                }
                .validate(UnixMicros(0))
                .unwrap(),
                ingested_at: UnixMicros(0),
                seq,
                analysis,
            };
            writer
                .add_document(schema::to_document(&fields, &item))
                .unwrap();
            if seq % 500 == 499 {
                writer.commit().unwrap();
            }
        }
        for seq in (0..3_000u64).step_by(10) {
            writer.delete_term(Term::from_field_text(fields.id, &format!("i-{seq}")));
        }
        writer.commit().unwrap();
        let mut parser = QueryParser::for_index(&index, vec![fields.text]);
        parser.set_conjunction_by_default();
        (index, parser)
    }

    fn scoring_terms(query: &dyn Query) -> usize {
        let mut n = 0;
        query.query_terms(&mut |_, _| n += 1);
        n
    }

    fn run(
        searcher: &tantivy::Searcher,
        query: &dyn Query,
        page: PageCollector,
        exhaustive: bool,
    ) -> PageFruit {
        if exhaustive {
            // Paired with another collector, the page takes the default
            // (unpruned) path over every match.
            searcher.search(query, &(page, Count)).unwrap().0
        } else {
            searcher.search(query, &page).unwrap()
        }
    }

    #[test]
    fn pruned_pages_equal_exhaustive_ones_and_concatenate_to_one_long_page() {
        let (index, parser) = index();
        let searcher = index.reader().unwrap().searcher();
        assert!(searcher.segment_readers().len() >= 6);
        // One cache for every search, as the server keeps it.
        let columns = Arc::new(ColumnCache::default());
        for text in [
            "alpha",
            "alpha beta",
            "alpha OR omega",
            "omega OR beta OR gamma",
            "*",
        ] {
            let query = parser.parse_query(text).unwrap();
            let prune = prunes_exactly(scoring_terms(&*query));
            let expected_count = searcher.search(&*query, &Count).unwrap() as u64;
            assert!(expected_count > 100, "{text}: {expected_count}");
            for sort in [
                SortOrder::Relevance,
                SortOrder::Newest,
                SortOrder::Oldest,
                SortOrder::MostNegative,
                SortOrder::MostPositive,
            ] {
                let long = |exhaustive| {
                    let page = PageCollector {
                        sort,
                        k: 5_000,
                        after: None,
                        count_limit: None,
                        prune,
                        columns: columns.clone(),
                    };
                    run(&searcher, &*query, page, exhaustive)
                };
                let all = long(true);
                assert_eq!(all.count, expected_count, "{text} {sort:?}");
                assert_eq!(all.top.len() as u64, expected_count);
                assert!(
                    all.top.windows(2).all(|w| w[0].0 > w[1].0),
                    "strictly ordered"
                );
                for exhaustive in [false, true] {
                    let mut seen = Vec::new();
                    let mut after = None;
                    loop {
                        let page = PageCollector {
                            sort,
                            k: 37,
                            after,
                            count_limit: None,
                            prune,
                            columns: columns.clone(),
                        };
                        let fruit = run(&searcher, &*query, page, exhaustive);
                        assert_eq!(fruit.count, expected_count, "{text} {sort:?}");
                        assert!(!fruit.count_truncated);
                        if fruit.top.is_empty() {
                            break;
                        }
                        after = fruit.top.last().map(|(key, _)| *key);
                        seen.extend(fruit.top);
                    }
                    let first_difference = seen
                        .iter()
                        .zip(&all.top)
                        .position(|(a, b)| a != b)
                        .map(|i| (i, seen[i], all.top[i]));
                    assert!(
                        seen.len() == all.top.len() && first_difference.is_none(),
                        "{text} {sort:?} exhaustive={exhaustive}: {} vs {} hits, first difference {first_difference:?}",
                        seen.len(),
                        all.top.len()
                    );
                }
            }
            // A count limit gives a lower bound past it, and the same page.
            let limited = PageCollector {
                sort: SortOrder::Relevance,
                k: 10,
                after: None,
                count_limit: Some(50),
                prune,
                columns: columns.clone(),
            };
            let fruit = run(&searcher, &*query, limited, false);
            assert_eq!((fruit.count, fruit.count_truncated), (50, true), "{text}");
            let exact = PageCollector {
                sort: SortOrder::Relevance,
                k: 10,
                after: None,
                count_limit: Some(expected_count + 1),
                prune,
                columns: columns.clone(),
            };
            let exact = run(&searcher, &*query, exact, false);
            assert_eq!(
                (exact.count, exact.count_truncated),
                (expected_count, false)
            );
            assert_eq!(fruit.top, exact.top);
        }
    }

    #[test]
    fn pruning_is_chosen_where_block_wand_can_skip() {
        let (_, parser) = index();
        let pays = |text: &str, limit| pruning_pays(&*parser.parse_query(text).unwrap(), limit);
        assert!(pays("alpha", None));
        assert!(pays("alpha beta", None));
        assert!(pays("alpha OR beta", None));
        assert!(!pays("\"alpha beta\"", None));
        assert!(!pays("alpha -beta", None));
        assert!(!pays("alpha OR (beta gamma)", None));
        assert!(pays("\"alpha beta\"", Some(100)));
    }
}
