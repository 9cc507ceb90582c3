//! Report counts: one pass over the items of a report's slice and of its
//! comparison period, reading fast fields only (no stored documents). A
//! custom collector keeps dense per-segment counters indexed by term ordinal
//! and names them (theme ids, segment values) once per segment at harvest.

use std::collections::HashMap;
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{BooleanQuery, Occur, Query};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::schema::field;
use super::{query, IndexError, SearchIndex};
use crate::domain::limits::MAX_REPORT_SEGMENT_CARDINALITY;
use crate::domain::{
    DayTally, Period, SearchQuery, SegmentTally, SliceCounts, Tally, ThemeTally, SENTIMENT_ORDER,
};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// What one report pass counts.
#[derive(Clone, Debug)]
pub struct ReportPlan {
    /// The slice's query and filter; its `created_after`/`created_before`
    /// are replaced by the two periods below.
    pub query: SearchQuery,
    pub current: Period,
    /// Empty: no comparison.
    pub comparison: Period,
    /// Index field of the segment (`channel`, `attributes.region`...).
    pub segment: Option<String>,
}

impl SearchIndex {
    /// Counts a report's slice in one pass (blocking).
    pub fn report_counts(&self, plan: &ReportPlan) -> Result<SliceCounts, IndexError> {
        let shared = &self.shared;
        let searcher = shared.reader.searcher();
        if let Some(name) = &plan.segment {
            check_segment(&searcher, name)?;
        }
        let mut filter = plan.query.filter.clone();
        filter.created_after = None;
        filter.created_before = None;
        let slice = SearchQuery {
            filter,
            ..plan.query.clone()
        };
        let (base, _) = self.slice_query(&searcher, &slice)?;
        // With themes in the query, the matches tagged with another version
        // are left out of the pass: count those of the current period.
        let mut retag_pending = 0;
        let by_themes = query::filters_by_themes(&slice);
        if by_themes {
            let mut current = plan.query.clone();
            current.filter.created_after = Some(plan.current.start);
            current.filter.created_before = Some(plan.current.end);
            retag_pending = self.slice_query(&searcher, &current)?.1;
        }
        let mut periods: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Should,
            query::created_between(&shared.columns, plan.current.start.0, plan.current.end.0),
        )];
        if !plan.comparison.is_empty() {
            periods.push((
                Occur::Should,
                query::created_between(
                    &shared.columns,
                    plan.comparison.start.0,
                    plan.comparison.end.0,
                ),
            ));
        }
        let full = query::combine(base, vec![Box::new(BooleanQuery::new(periods))]);
        let collector = ReportCollector {
            current: plan.current,
            comparison: plan.comparison,
            segment: plan.segment.clone(),
            taxonomy_version: plan.query.taxonomy_version,
            tags: self.shared.tags.clone(),
            // With themes in the query, other versions are already left out
            // (and counted by `slice_query`).
            count_retag: !by_themes,
        };
        let mut counts = searcher.search(&*full, &collector)?;
        if by_themes {
            counts.retag_pending = retag_pending;
        } else {
            retag_pending = counts.retag_pending;
        }
        tracing::debug!(
            items = counts.current.items,
            retag_pending,
            "report counted"
        );
        Ok(counts)
    }
}

/// A segment field must exist (an attribute some item has, when there are
/// items) and have at most `MAX_REPORT_SEGMENT_CARDINALITY` values in any
/// index segment, which bounds the pass's per-value counters.
fn check_segment(searcher: &tantivy::Searcher, name: &str) -> Result<(), IndexError> {
    let mut found = false;
    for segment in searcher.segment_readers() {
        if let Some(column) = segment.fast_fields().str(name)? {
            found = true;
            if column.num_terms() > MAX_REPORT_SEGMENT_CARDINALITY {
                return Err(IndexError::InvalidSegment(format!(
                    "`{}` has more than {MAX_REPORT_SEGMENT_CARDINALITY} distinct values; break down by a field with fewer",
                    crate::domain::shown(name)
                )));
            }
        }
    }
    let is_attribute = super::schema::attribute_key(name).is_some();
    if !found && is_attribute && !searcher.segment_readers().is_empty() {
        return Err(IndexError::InvalidSegment(format!(
            "no item has the attribute `{}`",
            crate::domain::shown(name)
        )));
    }
    Ok(())
}

struct ReportCollector {
    current: Period,
    comparison: Period,
    segment: Option<String>,
    taxonomy_version: u64,
    tags: Arc<super::tags::ConfirmedTags>,
    count_retag: bool,
}

impl Collector for ReportCollector {
    type Fruit = SliceCounts;
    type Child = SegmentReport;

    fn for_segment(
        &self,
        _ordinal: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentReport> {
        SegmentReport::open(self, segment)
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<SliceCounts>) -> tantivy::Result<SliceCounts> {
        let mut all = SliceCounts::default();
        for fruit in fruits {
            merge(&mut all, fruit);
        }
        Ok(all)
    }
}

fn merge(into: &mut SliceCounts, from: SliceCounts) {
    into.current.add(&from.current);
    into.previous.add(&from.previous);
    for (id, theme) in from.themes {
        let entry = into.themes.entry(id).or_default();
        entry.current.add(&theme.current);
        entry.previous.add(&theme.previous);
        add4(&mut entry.theme_sentiment, &theme.theme_sentiment);
    }
    for (day, tally) in from.days {
        let entry = into.days.entry(day).or_default();
        entry.tally.add(&tally.tally);
        for (id, n) in tally.themes {
            *entry.themes.entry(id).or_default() += n;
        }
    }
    for (value, segment) in from.segments {
        let entry = into.segments.entry(value).or_default();
        entry.tally.add(&segment.tally);
        for (id, (n, sentiment)) in segment.themes {
            let cell = entry.themes.entry(id).or_default();
            cell.0 += n;
            add4(&mut cell.1, &sentiment);
        }
    }
    into.first_at = min_opt(into.first_at, from.first_at);
    into.last_at = match (into.last_at, from.last_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    into.retag_pending += from.retag_pending;
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn add4(into: &mut [u64; 4], from: &[u64; 4]) {
    for i in 0..4 {
        into[i] += from[i];
    }
}

/// Per-segment-value counters of one index segment.
#[derive(Default)]
struct ValueAcc {
    tally: Tally,
    themes: FastMap<u32, (u64, [u64; 4])>,
}

/// A multiplicative hasher for the pass's small integer keys (std's SipHash,
/// made for untrusted keys, doubled the pass's time; these keys are term
/// ordinals and day numbers from the index, not client input).
#[derive(Default, Clone, Copy)]
struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;

/// A `theme_sentiment` value as (theme term ordinal, label index); None for
/// a value whose theme or label is unknown.
type ThemeLabel = Option<(u32, u8)>;

struct SegmentReport {
    current: Period,
    comparison: Period,
    taxonomy_version: u64,
    /// Versions confirmed since the documents were indexed (None: none).
    confirmed: Option<Arc<super::tags::SegmentVersions>>,
    count_retag: bool,
    created: Column<tantivy::DateTime>,
    nps: Column<i64>,
    csat: Column<i64>,
    ces: Column<i64>,
    version: Column<u64>,
    /// Sentiment column and its term ordinal -> `SENTIMENT_ORDER` index.
    sentiment: Option<(StrColumn, Vec<Option<u8>>)>,
    theme: Option<StrColumn>,
    /// theme_sentiment term ordinal -> (theme term ordinal, label index).
    theme_sentiment: Option<(StrColumn, Vec<ThemeLabel>)>,
    segment: Option<StrColumn>,
    segment_wanted: bool,
    // Counters.
    cur: Tally,
    prev: Tally,
    themes_cur: Vec<Tally>,
    themes_prev: Vec<Tally>,
    themes_sentiment: Vec<[u64; 4]>,
    days: FastMap<i64, Tally>,
    /// (day, theme term ordinal) -> items: sparse, so a pass over data
    /// spread across decades costs memory by what it finds, not by span.
    day_themes: FastMap<(i64, u32), u64>,
    /// Indexed by segment term ordinal + 1 (0: no value).
    values: Vec<ValueAcc>,
    first_at: Option<i64>,
    last_at: Option<i64>,
    retag_pending: u64,
    // Scratch buffers.
    doc_themes: Vec<u32>,
    doc_theme_labels: Vec<(u32, u8)>,
}

/// Sorted (theme, label) pairs reduced to one label per theme: mentions of
/// one theme in one item that disagree count once, as mixed.
fn one_label_per_theme(labels: &mut Vec<(u32, u8)>) {
    const MIXED: u8 = 3;
    debug_assert_eq!(SENTIMENT_ORDER[MIXED as usize].as_str(), "mixed");
    labels.sort_unstable();
    labels.dedup();
    let mut kept = 0;
    for i in 0..labels.len() {
        if kept > 0 && labels[kept - 1].0 == labels[i].0 {
            labels[kept - 1].1 = MIXED;
        } else {
            labels[kept] = labels[i];
            kept += 1;
        }
    }
    labels.truncate(kept);
}

fn label_index(label: &str) -> Option<u8> {
    SENTIMENT_ORDER
        .iter()
        .position(|l| l.as_str() == label)
        .map(|i| i as u8)
}

fn term_strings(column: &StrColumn) -> tantivy::Result<Vec<String>> {
    let mut out = Vec::with_capacity(column.num_terms());
    let mut buffer = String::new();
    for ord in 0..column.num_terms() as u64 {
        buffer.clear();
        column.ord_to_str(ord, &mut buffer)?;
        out.push(buffer.clone());
    }
    Ok(out)
}

impl SegmentReport {
    fn open(plan: &ReportCollector, segment: &SegmentReader) -> tantivy::Result<Self> {
        let fast = segment.fast_fields();
        let sentiment = match fast.str(field::SENTIMENT)? {
            Some(column) => {
                let map = term_strings(&column)?
                    .iter()
                    .map(|s| label_index(s))
                    .collect();
                Some((column, map))
            }
            None => None,
        };
        let theme = fast.str(field::THEME)?;
        let theme_sentiment = match (&theme, fast.str(field::THEME_SENTIMENT)?) {
            (Some(themes), Some(column)) => {
                let ids = term_strings(themes)?;
                let by_id: HashMap<&str, u32> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (id.as_str(), i as u32))
                    .collect();
                let map = term_strings(&column)?
                    .iter()
                    .map(|value| {
                        let (id, label) = value.rsplit_once('.')?;
                        Some((*by_id.get(id)?, label_index(label)?))
                    })
                    .collect();
                Some((column, map))
            }
            _ => None,
        };
        let segment_column = match &plan.segment {
            Some(name) => fast.str(name)?,
            None => None,
        };
        let themes = theme.as_ref().map_or(0, |c| c.num_terms());
        let values = segment_column.as_ref().map_or(0, |c| c.num_terms()) + 1;
        Ok(SegmentReport {
            current: plan.current,
            comparison: plan.comparison,
            taxonomy_version: plan.taxonomy_version,
            confirmed: plan.tags.segment(segment)?,
            count_retag: plan.count_retag,
            created: fast.date(field::CREATED_AT)?,
            nps: fast.i64(field::NPS)?,
            csat: fast.i64(field::CSAT)?,
            ces: fast.i64(field::CES)?,
            version: fast.u64(field::TAXONOMY_VERSION)?,
            sentiment,
            theme,
            theme_sentiment,
            segment: segment_column,
            segment_wanted: plan.segment.is_some(),
            cur: Tally::default(),
            prev: Tally::default(),
            themes_cur: vec![Tally::default(); themes],
            themes_prev: vec![Tally::default(); themes],
            themes_sentiment: vec![[0; 4]; themes],
            days: FastMap::default(),
            day_themes: FastMap::default(),
            values: (0..values).map(|_| ValueAcc::default()).collect(),
            first_at: None,
            last_at: None,
            retag_pending: 0,
            doc_themes: Vec::new(),
            doc_theme_labels: Vec::new(),
        })
    }

    /// The doc's own tally (one item).
    fn doc_tally(&self, doc: DocId) -> Tally {
        let mut tally = Tally {
            items: 1,
            ..Tally::default()
        };
        if let Some((column, map)) = &self.sentiment {
            if let Some(Some(label)) = column.term_ords(doc).next().map(|o| map[o as usize]) {
                tally.analysed = 1;
                tally.sentiment[label as usize] = 1;
            }
        }
        if let Some(nps) = self.nps.first(doc) {
            if (0..=10).contains(&nps) {
                let bucket = match nps {
                    0..=6 => 0,
                    7..=8 => 1,
                    _ => 2,
                };
                tally.nps[bucket] = 1;
            }
        }
        if let Some(csat) = self.csat.first(doc) {
            if (1..=5).contains(&csat) {
                tally.csat_answers = 1;
                tally.csat_satisfied = u64::from(csat >= 4);
            }
        }
        if let Some(ces) = self.ces.first(doc) {
            if (1..=7).contains(&ces) {
                let ces = ces as u64;
                tally.ces_answers = 1;
                tally.ces_sum = ces;
                tally.ces_sum_squares = ces * ces;
            }
        }
        tally
    }
}

impl SegmentCollector for SegmentReport {
    type Fruit = SliceCounts;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let Some(at) = self.created.first(doc).map(|d| d.into_timestamp_micros()) else {
            return;
        };
        let in_current = self.current.contains(at);
        if !in_current && !self.comparison.contains(at) {
            return;
        }
        let mut tally = self.doc_tally(doc);
        // Themes count only when tagged with the current taxonomy version.
        self.doc_themes.clear();
        self.doc_theme_labels.clear();
        if tally.analysed == 1 {
            let version = match &self.confirmed {
                Some(confirmed) => confirmed.effective(doc),
                None => self.version.first(doc),
            };
            if version == Some(self.taxonomy_version) {
                tally.tagged = 1;
                if let Some(column) = &self.theme {
                    self.doc_themes
                        .extend(column.term_ords(doc).map(|o| o as u32));
                }
                if in_current {
                    if let Some((column, map)) = &self.theme_sentiment {
                        self.doc_theme_labels
                            .extend(column.term_ords(doc).filter_map(|o| map[o as usize]));
                        one_label_per_theme(&mut self.doc_theme_labels);
                    }
                }
            } else if self.count_retag && in_current {
                self.retag_pending += 1;
            }
        }
        if !in_current {
            self.prev.add(&tally);
            for &theme in &self.doc_themes {
                self.themes_prev[theme as usize].add(&tally);
            }
            return;
        }
        self.cur.add(&tally);
        self.first_at = Some(self.first_at.map_or(at, |f| f.min(at)));
        self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
        for &theme in &self.doc_themes {
            self.themes_cur[theme as usize].add(&tally);
        }
        for &(theme, label) in &self.doc_theme_labels {
            self.themes_sentiment[theme as usize][label as usize] += 1;
        }
        let day = at.div_euclid(MICROS_PER_DAY);
        self.days.entry(day).or_default().add(&tally);
        for &theme in &self.doc_themes {
            *self.day_themes.entry((day, theme)).or_default() += 1;
        }
        if self.segment_wanted {
            let value = self
                .segment
                .as_ref()
                .and_then(|c| c.term_ords(doc).next())
                .map_or(0, |o| o as usize + 1);
            let acc = &mut self.values[value];
            acc.tally.add(&tally);
            for &theme in &self.doc_themes {
                acc.themes.entry(theme).or_default().0 += 1;
            }
            for &(theme, label) in &self.doc_theme_labels {
                acc.themes.entry(theme).or_default().1[label as usize] += 1;
            }
        }
    }

    fn harvest(self) -> SliceCounts {
        let ids = match &self.theme {
            Some(column) => term_strings(column).unwrap_or_default(),
            None => Vec::new(),
        };
        let name = |ord: usize| ids.get(ord).cloned().unwrap_or_default();
        let mut out = SliceCounts {
            current: self.cur,
            previous: self.prev,
            first_at: self.first_at,
            last_at: self.last_at,
            retag_pending: self.retag_pending,
            ..SliceCounts::default()
        };
        for ord in 0..ids.len() {
            let (current, previous) = (self.themes_cur[ord], self.themes_prev[ord]);
            if current.items == 0 && previous.items == 0 {
                continue;
            }
            out.themes.insert(
                name(ord),
                ThemeTally {
                    current,
                    previous,
                    theme_sentiment: self.themes_sentiment[ord],
                },
            );
        }
        for (day, tally) in self.days {
            out.days.insert(
                day,
                DayTally {
                    tally,
                    themes: Default::default(),
                },
            );
        }
        for ((day, theme), n) in self.day_themes {
            if let Some(entry) = out.days.get_mut(&day) {
                entry.themes.insert(name(theme as usize), n);
            }
        }
        let values = match &self.segment {
            Some(column) => term_strings(column).unwrap_or_default(),
            None => Vec::new(),
        };
        for (i, acc) in self.values.into_iter().enumerate() {
            if acc.tally.items == 0 {
                continue;
            }
            let value = if i == 0 {
                String::new()
            } else {
                values.get(i - 1).cloned().unwrap_or_default()
            };
            let themes = acc
                .themes
                .into_iter()
                .map(|(ord, cell)| (name(ord as usize), cell))
                .collect();
            out.segments.insert(
                value,
                SegmentTally {
                    tally: acc.tally,
                    themes,
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{check_segment, one_label_per_theme};
    use crate::domain::limits::MAX_REPORT_SEGMENT_CARDINALITY;
    use crate::index::IndexError;

    /// A report's segment field may have `MAX_REPORT_SEGMENT_CARDINALITY`
    /// values in an index segment, not one more; an attribute no item has
    /// is refused.
    #[test]
    fn segment_fields_are_bounded_in_values() {
        let searcher = |values: usize| {
            let (index, fields, small) = crate::index::test_index();
            drop(small);
            // Room for every document in one segment.
            let mut writer: tantivy::IndexWriter<tantivy::TantivyDocument> =
                index.writer_with_num_threads(1, 200_000_000).unwrap();
            for seq in 0..values as u64 {
                let draft = crate::domain::FeedbackDraft {
                    id: format!("i-{seq}"),
                    text: "word".into(),
                    attributes: [("store".to_string(), format!("s{seq}"))].into(),
                    ..Default::default()
                };
                crate::index::add_test_item(
                    &writer,
                    &fields,
                    seq,
                    draft,
                    crate::domain::AnalysisState::Pending,
                );
            }
            writer.commit().unwrap();
            index.reader().unwrap().searcher()
        };
        let at_limit = searcher(MAX_REPORT_SEGMENT_CARDINALITY);
        assert_eq!(at_limit.segment_readers().len(), 1);
        check_segment(&at_limit, "attributes.store").unwrap();
        let refused =
            |result: Result<(), IndexError>| matches!(result, Err(IndexError::InvalidSegment(_)));
        assert!(refused(check_segment(&at_limit, "attributes.region")));
        let over = searcher(MAX_REPORT_SEGMENT_CARDINALITY + 1);
        assert_eq!(over.segment_readers().len(), 1);
        assert!(refused(check_segment(&over, "attributes.store")));
        check_segment(&over, "channel").unwrap();
    }

    #[test]
    fn disagreeing_mentions_of_a_theme_count_once_as_mixed() {
        // theme 1: negative (0) twice; theme 2: negative and positive; theme 3: neutral.
        let mut labels = vec![(2, 2), (1, 0), (3, 1), (2, 0), (1, 0)];
        one_label_per_theme(&mut labels);
        assert_eq!(labels, vec![(1, 0), (2, 3), (3, 1)]);
        let mut none: Vec<(u32, u8)> = Vec::new();
        one_label_per_theme(&mut none);
        assert!(none.is_empty());
    }
}
