//! A `created_at` range (a filter's `created_after` / `created_before`, a
//! report's periods) as a query that reads each segment's date blocks
//! (`collect::DateBlocks`: the lowest and highest date of every block of
//! 1,024 documents, kept per segment) instead of scanning the whole column
//! as tantivy's fast-field `RangeQuery` does on every search:
//! - a block wholly inside the range matches without a read, one wholly
//!   outside is skipped, and only the blocks that straddle an edge are
//!   scanned (128 documents at a time, so that a sparse query seeking
//!   through them reads little). Feedback stored in about the order it was
//!   written has one or two such blocks per segment;
//! - where the dates follow no order (every block straddles) and the
//!   segment's date order is at hand (`DateBlocks::order`, read by the
//!   indexer's warm of such a segment), the range's documents are found by
//!   two binary searches in that order and set as bits, when that is less
//!   work than the scan.
//!
//! Invariants:
//! - It matches exactly the documents tantivy's `RangeQuery` on
//!   `created_at` over `[after, before)` matches (microseconds; deleted
//!   documents included, as with every query: collectors check the alive
//!   bitset).
//! - Its `size_hint` is its number of matches: exact for the blocks inside
//!   and for the date order's, estimated for a straddling block by the
//!   share of the block's date span the range covers. Its `cost` is the
//!   documents driving it reads: the blocks' (or, with the date order, the
//!   matches). An intersection is led by it only where that is little
//!   (tantivy's range guesses a tenth of the segment, and a cost of most of
//!   it, whatever the range).

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use tantivy::columnar::ColumnValues;
use tantivy::query::{
    AllScorer, ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::{
    DateTime, DocId, DocSet, Score, SeekDangerResult, SegmentReader, TantivyError, TERMINATED,
};

use super::collect::{ColumnCache, DateBlocks, SegmentDates};
use super::filters::BitsDocSet;
use super::vectors::KeyBits;

/// Documents of a straddling block scanned at a time.
const SCAN_WINDOW: DocId = 128;

/// Items created in `[after, before)` (microseconds).
#[derive(Clone)]
pub struct CreatedRangeQuery {
    after: i64,
    before: i64,
    columns: Arc<ColumnCache>,
}

impl CreatedRangeQuery {
    /// `[after, before)`; `i64::MIN` / `i64::MAX` leave a side open
    /// (`SearchFilter::created_range`).
    pub fn new((after, before): (i64, i64), columns: Arc<ColumnCache>) -> Self {
        CreatedRangeQuery {
            after,
            before,
            columns,
        }
    }
}

impl fmt::Debug for CreatedRangeQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreatedRange({}..{})", self.after, self.before)
    }
}

impl Query for CreatedRangeQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(CreatedRangeWeight(self.clone())))
    }
}

struct CreatedRangeWeight(CreatedRangeQuery);

/// A segment's matches, as the cheapest docset that yields them.
enum Matches {
    None,
    All,
    Runs(RangeDocs),
}

impl CreatedRangeWeight {
    fn matches(&self, reader: &SegmentReader) -> tantivy::Result<Matches> {
        let CreatedRangeQuery {
            after,
            before,
            ref columns,
        } = self.0;
        if after >= before || reader.max_doc() == 0 {
            return Ok(Matches::None);
        }
        // A segment without the column has no dates to match.
        let Some(SegmentDates { created, blocks }) = columns.segment_dates(reader)? else {
            return Ok(Matches::None);
        };
        let mut runs: Vec<Run> = Vec::new();
        let (mut inside, mut straddling, mut estimate) = (0u64, 0u64, 0f64);
        for block in 0..blocks.len() {
            let (lo, hi) = blocks.dates(block);
            if hi < after || lo >= before {
                continue;
            }
            let (start, end) = blocks.docs(block);
            let len = u64::from(end - start);
            if lo >= after && hi < before {
                inside += len;
                match runs.last_mut() {
                    Some(run) if run.whole && run.end == start => run.end = end,
                    _ => runs.push(Run {
                        start,
                        end,
                        whole: true,
                    }),
                }
            } else {
                straddling += len;
                // The share of the block's date span the range covers (f64:
                // the spans may be as wide as i64).
                let covered = (hi.min(before - 1) as f64 - lo.max(after) as f64 + 1.0)
                    / (hi as f64 - lo as f64 + 1.0);
                estimate += covered.clamp(0.0, 1.0) * len as f64;
                runs.push(Run {
                    start,
                    end,
                    whole: false,
                });
            }
        }
        let max_doc = reader.max_doc();
        if runs.is_empty() {
            return Ok(Matches::None);
        }
        if inside == u64::from(max_doc) {
            matched(Way::All);
            return Ok(Matches::All);
        }
        // The documents the set reads to yield every match.
        let mut cost = inside + straddling;
        let mut size_hint = (inside as f64 + estimate).ceil().min(f64::from(max_doc)) as u32;
        let mut by_date = None;
        let mut first_doc = None;
        if let Some(order) = blocks.order_at_hand() {
            // Two binary searches give the range's documents exactly;
            // setting them as bits costs a write each and the bits a read a
            // word, less than scanning the straddling blocks' dates where
            // those are most of the segment. The bits are set only once
            // finding a next match would take a scan (`RangeDocs`): a set
            // that only answers another one's candidates reads their dates
            // alone.
            let micros = |doc: DocId| created.get_val(doc).into_timestamp_micros();
            let first = order.partition_point(|&doc| micros(doc) < after);
            let end = first + order[first..].partition_point(|&doc| micros(doc) < before);
            let found = (end - first) as u64;
            if found == 0 {
                return Ok(Matches::None);
            }
            if 4 * found + u64::from(max_doc) / 32 < straddling {
                size_hint = found as u32;
                cost = found;
                by_date = Some(ByDate {
                    blocks: blocks.clone(),
                    first,
                    end,
                    max_doc,
                });
                // The first match, so that no scan positions the set.
                first_doc = order[first..end].iter().min().copied();
            }
        }
        let range = DateTime::from_timestamp_nanos(after.saturating_mul(1_000))
            ..=DateTime::from_timestamp_nanos(before.saturating_mul(1_000).saturating_sub(1));
        if inside > 0 {
            matched(Way::WholeBlocks);
        }
        if straddling > 0 {
            matched(Way::Scans);
        }
        Ok(Matches::Runs(RangeDocs::Runs {
            runs: BlockRuns::new(runs, created, range, size_hint, cost, first_doc),
            by_date,
        }))
    }
}

impl Weight for CreatedRangeWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.matches(reader)? {
            Matches::None => Box::new(EmptyScorer),
            // Bare, as tantivy's range returns it: a boolean query then
            // drops it from an intersection.
            Matches::All if boost == 1.0 => Box::new(AllScorer::new(reader.max_doc())),
            Matches::All => Box::new(ConstScorer::new(AllScorer::new(reader.max_doc()), boost)),
            Matches::Runs(docs) => Box::new(ConstScorer::new(docs, boost)),
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.doc() > doc || scorer.seek(doc) != doc {
            return Err(TantivyError::InvalidArgument(format!(
                "document #{doc} is not in {:?}",
                self.0
            )));
        }
        Ok(Explanation::new("CreatedRangeQuery", 1.0))
    }
}

/// The ways a segment's matches were found (counted by tests): every
/// document, blocks wholly inside, straddling blocks scanned, bits from the
/// date order.
#[derive(Clone, Copy)]
enum Way {
    All,
    WholeBlocks,
    Scans,
    Bits,
}

#[cfg(test)]
thread_local! {
    static WAYS: std::cell::Cell<[u64; 4]> = const { std::cell::Cell::new([0; 4]) };
}

fn matched(_way: Way) {
    #[cfg(test)]
    WAYS.with(|ways| {
        let mut counts = ways.get();
        counts[_way as usize] += 1;
        ways.set(counts);
    });
}

/// The range's documents in a segment's date order
/// (`DateBlocks::order_at_hand`): `first..end`.
struct ByDate {
    blocks: Arc<DateBlocks>,
    first: usize,
    end: usize,
    max_doc: DocId,
}

impl ByDate {
    fn bits(&self) -> KeyBits {
        let order = self.blocks.order_at_hand().unwrap_or_default();
        KeyBits::from_keys(
            self.max_doc as usize,
            order[self.first..self.end]
                .iter()
                .map(|&doc| u64::from(doc)),
        )
    }
}

/// A range's documents: runs of blocks, which answer seeks with a read of
/// the target's date; with `by_date`, the first move that would scan (an
/// `advance`, a `seek` to a document that does not match: the set leads an
/// intersection or is counted) turns them into bits.
enum RangeDocs {
    Runs {
        runs: BlockRuns,
        by_date: Option<ByDate>,
    },
    Bits(BitsDocSet),
}

impl RangeDocs {
    /// Turns the runs into the date order's bits (where they have them),
    /// on the first match at or after `target`.
    fn bits_from(&mut self, target: DocId) -> Option<DocId> {
        let RangeDocs::Runs { by_date, .. } = self else {
            return None;
        };
        let by_date = by_date.take()?;
        matched(Way::Bits);
        let mut bits = BitsDocSet::new(Arc::new(by_date.bits()));
        // Past the last word (`TERMINATED` and after) it terminates.
        let doc = bits.seek(target);
        *self = RangeDocs::Bits(bits);
        Some(doc)
    }
}

impl DocSet for RangeDocs {
    fn advance(&mut self) -> DocId {
        match self {
            RangeDocs::Runs { runs, by_date } => {
                if by_date.is_none() {
                    return runs.advance();
                }
                let next = runs.doc().saturating_add(1);
                self.bits_from(next).unwrap_or(TERMINATED)
            }
            RangeDocs::Bits(bits) => bits.advance(),
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        match self {
            RangeDocs::Runs { runs, by_date } => {
                if by_date.is_none() {
                    return runs.seek(target);
                }
                if let Some(doc) = runs.probe(target) {
                    return doc;
                }
                self.bits_from(target).unwrap_or(TERMINATED)
            }
            RangeDocs::Bits(bits) => bits.seek(target),
        }
    }

    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        match self {
            RangeDocs::Runs { runs, .. } => runs.seek_danger(target),
            RangeDocs::Bits(bits) => bits.seek_danger(target),
        }
    }

    fn doc(&self) -> DocId {
        match self {
            RangeDocs::Runs { runs, .. } => runs.doc(),
            RangeDocs::Bits(bits) => bits.doc(),
        }
    }

    fn size_hint(&self) -> u32 {
        match self {
            RangeDocs::Runs { runs, .. } => runs.size_hint,
            RangeDocs::Bits(bits) => bits.size_hint(),
        }
    }

    fn cost(&self) -> u64 {
        match self {
            RangeDocs::Runs { runs, .. } => runs.cost,
            RangeDocs::Bits(bits) => bits.cost(),
        }
    }
}

/// Consecutive documents that all match (`whole`), or a straddling block
/// whose documents are checked.
#[derive(Clone, Copy, Debug)]
struct Run {
    start: DocId,
    end: DocId,
    whole: bool,
}

/// The documents of `runs` (in document order) whose dates lie in `range`.
struct BlockRuns {
    runs: Vec<Run>,
    /// The run holding `doc` (`runs.len()` once terminated).
    run: usize,
    doc: DocId,
    /// The matches among the documents `window` of a straddling run, and
    /// the one at `doc` (when it is among them).
    window: (DocId, DocId),
    scanned: Vec<DocId>,
    pos: usize,
    created: Arc<dyn ColumnValues<DateTime>>,
    range: RangeInclusive<DateTime>,
    size_hint: u32,
    /// The documents driving the set reads (or, with bits from the date
    /// order, their count).
    cost: u64,
}

impl BlockRuns {
    fn new(
        runs: Vec<Run>,
        created: Arc<dyn ColumnValues<DateTime>>,
        range: RangeInclusive<DateTime>,
        size_hint: u32,
        cost: u64,
        first_doc: Option<DocId>,
    ) -> BlockRuns {
        let mut docs = BlockRuns {
            runs,
            run: 0,
            doc: 0,
            window: (0, 0),
            scanned: Vec::new(),
            pos: 0,
            created,
            range,
            size_hint,
            cost,
        };
        match first_doc {
            // A match: the set is on it as after a read of its date.
            Some(doc) => {
                docs.run = docs.run_after(doc);
                docs.doc = doc;
            }
            None => {
                docs.settle(0, 0);
            }
        }
        docs
    }

    /// Moves to the first match at or after `target` in run `run` or a
    /// later one.
    fn settle(&mut self, mut run: usize, target: DocId) -> DocId {
        while let Some(&Run { start, end, whole }) = self.runs.get(run) {
            if end > target {
                let mut from = target.max(start);
                if whole {
                    self.run = run;
                    self.doc = from;
                    return from;
                }
                if self.window.0 <= from && from < self.window.1 {
                    // Within the scanned window: its next match, if any.
                    let pos = self.scanned.partition_point(|&doc| doc < from);
                    if let Some(&doc) = self.scanned.get(pos) {
                        return self.found(run, pos, doc);
                    }
                    from = self.window.1;
                }
                while from < end {
                    let to = (from + SCAN_WINDOW).min(end);
                    self.scanned.clear();
                    self.created.get_row_ids_for_value_range(
                        self.range.clone(),
                        from..to,
                        &mut self.scanned,
                    );
                    self.window = (from, to);
                    if let Some(&doc) = self.scanned.first() {
                        return self.found(run, 0, doc);
                    }
                    from = to;
                }
            }
            run += 1;
        }
        self.run = self.runs.len();
        self.doc = TERMINATED;
        TERMINATED
    }

    fn found(&mut self, run: usize, pos: usize, doc: DocId) -> DocId {
        self.run = run;
        self.pos = pos;
        self.doc = doc;
        doc
    }

    /// Moves to the first match at or after `target` where that takes no
    /// scan: the set is there already, `target` lies in a whole run, or
    /// it lies in a straddling block, not scanned there, and its date is
    /// in the range (one read); past every run, the set ends. `None` where
    /// only a scan can tell (the set is left as it was).
    fn probe(&mut self, target: DocId) -> Option<DocId> {
        if self.doc >= target {
            return Some(self.doc);
        }
        let run = self.run_after(target);
        let Some(&Run { start, whole, .. }) = self.runs.get(run) else {
            self.run = self.runs.len();
            self.doc = TERMINATED;
            return Some(TERMINATED);
        };
        let scanned = self.window.0 <= target && target < self.window.1;
        if target >= start
            && (whole || !scanned && self.range.contains(&self.created.get_val(target)))
        {
            self.run = run;
            self.doc = target;
            return Some(target);
        }
        None
    }

    /// The first run ending after `target`, from the current one on.
    fn run_after(&self, target: DocId) -> usize {
        let from = self.run.min(self.runs.len());
        from + self.runs[from..].partition_point(|run| run.end <= target)
    }
}

impl DocSet for BlockRuns {
    fn advance(&mut self) -> DocId {
        let Some(run) = self.runs.get(self.run) else {
            return TERMINATED;
        };
        let next = self.doc + 1;
        if run.whole {
            if next < run.end {
                self.doc = next;
                return next;
            }
        } else if next < self.window.1 && self.scanned.get(self.pos) == Some(&self.doc) {
            if let Some(&doc) = self.scanned.get(self.pos + 1) {
                self.pos += 1;
                self.doc = doc;
                return doc;
            }
        }
        self.settle(self.run, next)
    }

    /// A target in a straddling block, not scanned there, whose date lies
    /// in the range is found with one read (a walk in date order seeks
    /// such targets only).
    fn seek(&mut self, target: DocId) -> DocId {
        if let Some(doc) = self.probe(target) {
            return doc;
        }
        let run = self.run_after(target);
        self.settle(run, target)
    }

    /// Answers whether `target` matches with one read of its date where
    /// its block straddles and is not scanned there (a sparse query
    /// leading an intersection), leaving the set on it if so.
    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        if target >= TERMINATED {
            return SeekDangerResult::SeekLowerBound(TERMINATED);
        }
        let run = self.run_after(target);
        let Some(&Run { start, whole, .. }) = self.runs.get(run) else {
            self.run = self.runs.len();
            self.doc = TERMINATED;
            return SeekDangerResult::SeekLowerBound(TERMINATED);
        };
        if target < start {
            // Nothing matches before the run: `start` bounds the next match.
            self.run = run;
            return SeekDangerResult::SeekLowerBound(start);
        }
        self.run = run;
        let scanned = self.window.0 <= target && target < self.window.1;
        if whole || !scanned && self.range.contains(&self.created.get_val(target)) {
            // On `target`; a later `advance` scans its window if need be.
            self.doc = target;
            return SeekDangerResult::Found;
        }
        if !scanned {
            return SeekDangerResult::SeekLowerBound(target + 1);
        }
        let doc = self.settle(run, target);
        if doc == target {
            SeekDangerResult::Found
        } else {
            SeekDangerResult::SeekLowerBound(doc)
        }
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.size_hint
    }

    fn cost(&self) -> u64 {
        self.cost
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use tantivy::collector::{Count, DocSetCollector};
    use tantivy::query::{BooleanQuery, Occur, RangeQuery};
    use tantivy::{Searcher, Term};

    use super::*;
    use crate::index::collect::tests::{index_with, Dates};
    use crate::index::collect::DATE_BLOCK_SHIFT;

    const BASE: i64 = 1_700_000_000_000_000;

    /// Each segment's documents (deleted ones included) from `query`'s
    /// scorer, advancing.
    fn segment_docs(query: &dyn Query, searcher: &Searcher) -> Vec<Vec<DocId>> {
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(searcher))
            .unwrap();
        searcher
            .segment_readers()
            .iter()
            .map(|segment| {
                let mut scorer = weight.scorer(segment, 1.0).unwrap();
                let mut docs = Vec::new();
                while scorer.doc() != TERMINATED {
                    docs.push(scorer.doc());
                    scorer.advance();
                }
                docs
            })
            .collect()
    }

    /// The first of `docs` (ascending) at or after `target`.
    fn first_from(docs: &[DocId], target: DocId) -> DocId {
        docs.iter()
            .find(|&&doc| doc >= target)
            .map_or(TERMINATED, |&doc| doc)
    }

    /// Every range (edges on dates many documents share, open on either
    /// side, empty, reversed, past the data, around all of it) matches
    /// what tantivy's range query on `created_at` matches: per segment
    /// advancing and seeking by strides, counted, and intersected with
    /// queries it leads or that lead it (`seek_danger`), over dates in
    /// order, jittered and in no order, in blocks of 16 and 1,024
    /// documents, before and after the date order is read; each way of
    /// matching (every document, whole blocks, scans, bits) is taken.
    #[test]
    fn created_ranges_match_tantivys_range_query() {
        WAYS.with(|ways| ways.set([0; 4]));
        for dates in [Dates::Ordered, Dates::Jittered, Dates::Scrambled] {
            let (index, parser) = index_with(dates, 6_000, 2_000);
            let created = index.schema().get_field("created_at").unwrap();
            let searcher = index.reader().unwrap().searcher();
            let date = |at: i64| {
                Term::from_field_date(created, DateTime::from_timestamp_micros(BASE + at))
            };
            for (shift, warmed) in [
                (4, false),
                (4, true),
                (DATE_BLOCK_SHIFT, false),
                (DATE_BLOCK_SHIFT, true),
            ] {
                let columns = Arc::new(ColumnCache::with_date_block_shift(shift));
                if warmed {
                    columns.warm_dates(&searcher);
                }
                // Ordered dates run 0..1,000, jittered ~0..1,400, scrambled
                // 0..397 (offsets from BASE).
                for (after, before) in [
                    (Some(100), Some(200)),
                    (Some(150), Some(151)),
                    (Some(0), Some(3)),
                    // Block edges: seqs 0..16 (the first block of 16) span
                    // dates 0..=2.
                    (Some(0), Some(2)),
                    (Some(2), Some(5)),
                    (None, Some(60)),
                    (Some(300), None),
                    (Some(120), Some(120)),
                    (Some(200), Some(100)),
                    (Some(5_000), None),
                    (None, Some(-1)),
                    (Some(-5), Some(5_000)),
                    (None, None),
                ] {
                    let ours = CreatedRangeQuery::new(
                        (
                            after.map_or(i64::MIN, |at| BASE + at),
                            before.map_or(i64::MAX, |at| BASE + at),
                        ),
                        columns.clone(),
                    );
                    let theirs: Box<dyn Query> = match (after, before) {
                        (None, None) => Box::new(tantivy::query::AllQuery),
                        _ => Box::new(RangeQuery::new(
                            after.map_or(Bound::Unbounded, |at| Bound::Included(date(at))),
                            before.map_or(Bound::Unbounded, |at| Bound::Excluded(date(at))),
                        )),
                    };
                    let case =
                        format!("{dates:?} shift {shift} warmed {warmed} {after:?}..{before:?}");
                    let expected = segment_docs(&*theirs, &searcher);
                    assert_eq!(segment_docs(&ours, &searcher), expected, "{case}");
                    let weight = ours
                        .weight(EnableScoring::disabled_from_searcher(&searcher))
                        .unwrap();
                    for (segment, expected) in searcher.segment_readers().iter().zip(&expected) {
                        for stride in [1, 5, 64, 700] {
                            let mut scorer = weight.scorer(segment, 1.0).unwrap();
                            let mut target = 0;
                            while target < segment.max_doc() + stride {
                                let next = first_from(expected, target);
                                // A seek never goes back: past the target
                                // already, the set is on its first match.
                                let doc = if scorer.doc() >= target {
                                    scorer.doc()
                                } else {
                                    scorer.seek(target)
                                };
                                assert_eq!(doc, next, "{case} seek {target}");
                                if stride == 5 && doc != TERMINATED {
                                    // From a seek's match (a read of its
                                    // date alone, or a scan), the next.
                                    let after = first_from(expected, doc + 1);
                                    assert_eq!(scorer.advance(), after, "{case} after {doc}");
                                    if after == TERMINATED {
                                        break;
                                    }
                                    target = after;
                                }
                                target += stride;
                            }
                            // `seek_danger` (as an intersection led by
                            // another set calls it): found only where the
                            // target matches, else a bound no match lies
                            // below; after a find, the next by `advance`.
                            let mut scorer = weight.scorer(segment, 1.0).unwrap();
                            let mut target = stride / 2;
                            while target < segment.max_doc() + stride {
                                let next = first_from(expected, target);
                                match scorer.seek_danger(target) {
                                    SeekDangerResult::Found => {
                                        assert_eq!(next, target, "{case} danger {target}");
                                        assert_eq!(scorer.doc(), target);
                                        if stride == 64 {
                                            let after = first_from(expected, target + 1);
                                            assert_eq!(scorer.advance(), after, "{case}");
                                            if after == TERMINATED {
                                                break;
                                            }
                                            target = after;
                                        }
                                    }
                                    SeekDangerResult::SeekLowerBound(bound) => {
                                        assert!(
                                            next != target && bound > target && bound <= next,
                                            "{case} danger {target}: bound {bound}, next {next}"
                                        );
                                    }
                                }
                                target += stride;
                            }
                        }
                    }
                    for text in ["*", "alpha", "alpha OR omega", "delta gamma beta"] {
                        let user = parser.parse_query(text).unwrap();
                        let and = |range: Box<dyn Query>| {
                            BooleanQuery::new(vec![
                                (Occur::Must, user.box_clone()),
                                (Occur::Must, range),
                            ])
                        };
                        // The documents of a query around tantivy's
                        // range and of the same around ours.
                        let same = |shape: &str, theirs: BooleanQuery, ours: BooleanQuery| {
                            let expected = searcher.search(&theirs, &DocSetCollector).unwrap();
                            let got = searcher.search(&ours, &DocSetCollector).unwrap();
                            assert!(
                                got == expected,
                                "{case} {shape} {text}: {} vs {}",
                                got.len(),
                                expected.len()
                            );
                            expected.len()
                        };
                        let expected =
                            same("AND", and(theirs.box_clone()), and(Box::new(ours.clone())));
                        let count = searcher
                            .search(&and(Box::new(ours.clone())), &Count)
                            .unwrap();
                        assert_eq!(count, expected, "{case} {text}");
                        // Excluded, and a report's two periods as a union.
                        let not = |range: Box<dyn Query>| {
                            BooleanQuery::new(vec![
                                (Occur::Must, user.box_clone()),
                                (Occur::MustNot, range),
                            ])
                        };
                        same("NOT", not(theirs.box_clone()), not(Box::new(ours.clone())));
                        let periods = |range: Box<dyn Query>, other: Box<dyn Query>| {
                            BooleanQuery::new(vec![
                                (Occur::Must, user.box_clone()),
                                (
                                    Occur::Must,
                                    Box::new(BooleanQuery::new(vec![
                                        (Occur::Should, range),
                                        (Occur::Should, other),
                                    ])),
                                ),
                            ])
                        };
                        same(
                            "OR",
                            periods(
                                theirs.box_clone(),
                                Box::new(RangeQuery::new(
                                    Bound::Included(date(500)),
                                    Bound::Excluded(date(520)),
                                )),
                            ),
                            periods(
                                Box::new(ours.clone()),
                                Box::new(CreatedRangeQuery::new(
                                    (BASE + 500, BASE + 520),
                                    columns.clone(),
                                )),
                            ),
                        );
                    }
                }
            }
        }
        let [all, whole, scans, bits] = WAYS.with(|ways| ways.get());
        assert!(
            all > 0 && whole > 0 && scans > 0 && bits > 0,
            "{all} {whole} {scans} {bits}"
        );
    }
}
