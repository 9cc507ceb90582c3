//! Voice-of-customer reports: what a report asks for (a slice of feedback,
//! time buckets, a segment field, a comparison period), the raw counts one
//! pass over the index yields, and the finished report (every figure with
//! its sample size and, where it has one, its 95% interval).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{SearchQuery, Span, UnixMicros};

/// Sentiment labels in the order every `[u64; 4]` count array uses.
pub const SENTIMENT_ORDER: [super::SentimentLabel; 4] = [
    super::SentimentLabel::Negative,
    super::SentimentLabel::Neutral,
    super::SentimentLabel::Positive,
    super::SentimentLabel::Mixed,
];

/// The width of a trend bucket (UTC; weeks start on Monday).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketSize {
    Day,
    Week,
    Month,
    Year,
}

impl BucketSize {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketSize::Day => "day",
            BucketSize::Week => "week",
            BucketSize::Month => "month",
            BucketSize::Year => "year",
        }
    }
}

/// The field a report breaks themes down by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentField {
    Channel,
    JourneyStage,
    Product,
    Language,
    /// `attributes.KEY`.
    Attribute(String),
}

impl SegmentField {
    /// Parses `channel`, `journey_stage`, `product`, `language` or
    /// `attributes.KEY` (KEY of `[a-z0-9_]`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "channel" => Ok(SegmentField::Channel),
            "journey_stage" => Ok(SegmentField::JourneyStage),
            "product" => Ok(SegmentField::Product),
            "language" => Ok(SegmentField::Language),
            other => match other.strip_prefix("attributes.") {
                Some(key) if super::validate::is_attribute_key(key) => {
                    Ok(SegmentField::Attribute(key.to_string()))
                }
                _ => Err(format!(
                    "unknown segment field {:?}: use channel, journey_stage, product, language or attributes.KEY",
                    super::shown(other)
                )),
            },
        }
    }

    /// The name clients use (and the index field).
    pub fn name(&self) -> String {
        match self {
            SegmentField::Channel => "channel".into(),
            SegmentField::JourneyStage => "journey_stage".into(),
            SegmentField::Product => "product".into(),
            SegmentField::Language => "language".into(),
            SegmentField::Attribute(key) => format!("attributes.{key}"),
        }
    }
}

/// A time range `[start, end)` in microseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Period {
    pub start: UnixMicros,
    pub end: UnixMicros,
}

impl Period {
    pub fn contains(&self, at: i64) -> bool {
        self.start.0 <= at && at < self.end.0
    }

    pub fn overlaps(&self, other: &Period) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }

    pub fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }
}

/// One report request, checked for size limits.
#[derive(Clone, Debug)]
pub struct ReportRequest {
    /// The slice: query text and filter as in `Search` (sort, limit, cursor,
    /// facets and similarity are not used). The filter's `created_after` /
    /// `created_before` bound the report period.
    pub query: SearchQuery,
    /// `None`: chosen from the period's length.
    pub bucket: Option<BucketSize>,
    pub segment: Option<SegmentField>,
    /// The comparison period; `None`: the period of equal length just before.
    pub comparison: Option<Period>,
    /// Also test discovery candidates (clusters of the sentences no theme
    /// covers) as emerging topics.
    pub include_candidates: bool,
}

/// A discovery candidate's counts in both periods, for the emerging test.
#[derive(Clone, Debug, PartialEq)]
pub struct CandidateCount {
    pub name: String,
    pub representatives: Vec<String>,
    /// Items of the period with a sentence in the candidate, and the items
    /// whose sentences discovery looked at.
    pub mentions: u64,
    pub looked_at: u64,
    pub previous_mentions: u64,
    pub previous_looked_at: u64,
}

/// Counts over one set of items: everything the scores need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub items: u64,
    /// Analysed items (the denominator of sentiment figures).
    pub analysed: u64,
    /// Analysed items tagged with the current taxonomy version (the
    /// denominator of theme shares: only they can carry a counted theme).
    pub tagged: u64,
    /// Document sentiment counts, in `SENTIMENT_ORDER`.
    pub sentiment: [u64; 4],
    /// NPS answers: detractors (0-6), passives (7-8), promoters (9-10).
    pub nps: [u64; 3],
    /// CSAT answers: all (1-5), satisfied (4-5).
    pub csat_answers: u64,
    pub csat_satisfied: u64,
    /// CES answers (1-7): count, sum, sum of squares.
    pub ces_answers: u64,
    pub ces_sum: u64,
    pub ces_sum_squares: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.items += other.items;
        self.analysed += other.analysed;
        self.tagged += other.tagged;
        for i in 0..4 {
            self.sentiment[i] += other.sentiment[i];
        }
        for i in 0..3 {
            self.nps[i] += other.nps[i];
        }
        self.csat_answers += other.csat_answers;
        self.csat_satisfied += other.csat_satisfied;
        self.ces_answers += other.ces_answers;
        self.ces_sum += other.ces_sum;
        self.ces_sum_squares += other.ces_sum_squares;
    }

    /// `self` minus `other` (a subset of `self`'s items).
    pub fn minus(&self, other: &Tally) -> Tally {
        let mut out = *self;
        out.items -= other.items.min(out.items);
        out.analysed -= other.analysed.min(out.analysed);
        out.tagged -= other.tagged.min(out.tagged);
        for i in 0..4 {
            out.sentiment[i] -= other.sentiment[i].min(out.sentiment[i]);
        }
        for i in 0..3 {
            out.nps[i] -= other.nps[i].min(out.nps[i]);
        }
        out.csat_answers -= other.csat_answers.min(out.csat_answers);
        out.csat_satisfied -= other.csat_satisfied.min(out.csat_satisfied);
        out.ces_answers -= other.ces_answers.min(out.ces_answers);
        out.ces_sum -= other.ces_sum.min(out.ces_sum);
        out.ces_sum_squares -= other.ces_sum_squares.min(out.ces_sum_squares);
        out
    }
}

/// Counts of the items that carry one theme.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThemeTally {
    /// The items carrying the theme (their document sentiment and scores).
    pub current: Tally,
    pub previous: Tally,
    /// The theme's own (aspect) sentiment in the current period, one label
    /// per item (an item whose mentions of the theme disagree counts as
    /// mixed), in `SENTIMENT_ORDER`.
    pub theme_sentiment: [u64; 4],
}

/// Counts of one segment value (current period).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentTally {
    pub tally: Tally,
    /// Theme id -> (items carrying it, its aspect sentiment counts).
    pub themes: BTreeMap<String, (u64, [u64; 4])>,
}

/// Counts of one UTC day (current period).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayTally {
    pub tally: Tally,
    /// Theme id -> items carrying it.
    pub themes: BTreeMap<String, u64>,
}

/// What one pass over the index yields for a report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceCounts {
    pub current: Tally,
    pub previous: Tally,
    /// Theme id -> counts (items tagged with the current taxonomy version).
    pub themes: BTreeMap<String, ThemeTally>,
    /// Days since the epoch -> counts.
    pub days: BTreeMap<i64, DayTally>,
    /// Segment value -> counts (empty without a segment field). Items
    /// without a value are under "".
    pub segments: BTreeMap<String, SegmentTally>,
    /// Earliest and latest `created_at` in the current period.
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    /// Analysed items in the slice whose themes come from an older taxonomy
    /// version (not in the theme counts).
    pub retag_pending: u64,
}

/// An estimate with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// A difference between two estimates (current minus comparison).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Change {
    pub delta: f64,
    /// 95% interval of the difference.
    pub low: f64,
    pub high: f64,
    /// Two-sided p-value of "no change".
    pub p_value: f64,
    /// p < 0.05.
    pub significant: bool,
}

/// A score (NPS -100..100, CSAT % 0..100, CES mean 1..7, net sentiment
/// -100..100) over the period, its comparison value and the change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// Answers (or items) the score is computed from.
    pub n: u64,
    /// `None` when `n` is 0.
    pub estimate: Option<Interval>,
    pub previous_n: u64,
    pub previous: Option<f64>,
    /// `None` unless both periods have answers.
    pub change: Option<Change>,
}

/// One row of the theme table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThemeRow {
    pub theme_id: String,
    pub name: String,
    /// Empty for a top-level theme.
    pub parent_id: String,
    /// Items carrying the theme in the period.
    pub mentions: u64,
    /// mentions / items in the period tagged with the current taxonomy
    /// version (0..1; all analysed items once the re-tag is done).
    pub share: f64,
    pub previous_mentions: u64,
    pub previous_share: f64,
    /// Aspect sentiment counts, one per item carrying the theme (items whose
    /// mentions disagree count as mixed), in `SENTIMENT_ORDER`.
    pub sentiment: [u64; 4],
    /// Net aspect sentiment (-100..100) with its interval.
    pub net_sentiment: Score,
    /// NPS among the items that carry the theme.
    pub nps: Score,
    /// Overall NPS minus NPS with the theme's items removed (with interval).
    pub nps_impact: Option<Interval>,
    pub csat: Score,
    /// Overall CSAT minus CSAT with the theme's items removed.
    pub csat_impact: Option<Interval>,
}

/// One segment value (a matrix column).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegmentColumn {
    pub value: String,
    pub items: u64,
    pub net_sentiment: Option<f64>,
}

/// One theme x segment cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MatrixCell {
    pub theme_id: String,
    pub segment_value: String,
    /// Items of the segment value carrying the theme.
    pub mentions: u64,
    /// mentions / tagged items of the segment value.
    pub share: f64,
    /// Net aspect sentiment of the theme in this segment value.
    pub net_sentiment: Option<f64>,
    /// Two-proportion test of the cell's share against the rest of the
    /// theme's row, corrected for the number of cells tested (Holm).
    pub p_value: f64,
    pub significant: bool,
    /// +1: share above the rest of the row; -1: below; 0: not significant.
    pub direction: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegmentMatrix {
    pub field: String,
    /// The most frequent values, at most `limits::MAX_REPORT_SEGMENT_VALUES`.
    pub columns: Vec<SegmentColumn>,
    /// Rows follow the theme table's order; cells of one row follow `columns`.
    pub cells: Vec<MatrixCell>,
}

/// One theme's count in a trend bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThemeShare {
    pub theme_id: String,
    pub mentions: u64,
    pub share: f64,
}

/// One trend bucket `[start, end)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrendBucket {
    pub start: UnixMicros,
    pub end: UnixMicros,
    pub items: u64,
    pub net_sentiment: Score,
    pub nps: Score,
    /// The top themes (`Report::trend_themes`), in that order.
    pub themes: Vec<ThemeShare>,
}

/// A theme whose share rose significantly against the comparison period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmergingTheme {
    pub theme_id: String,
    pub name: String,
    pub mentions: u64,
    pub share: f64,
    pub previous_mentions: u64,
    pub previous_share: f64,
    /// Two-sided two-proportion test p-value (two-sided although only rises
    /// are tested, which keeps the family-wise false-alarm rate at 5%), and
    /// Holm-adjusted over the themes tested.
    pub p_value: f64,
    pub adjusted_p_value: f64,
    /// A discovery candidate (no theme yet): `theme_id` is `candidate-N`,
    /// `name` the proposed name, shares are over the items discovery looked
    /// at in each period.
    pub candidate: bool,
    /// A candidate's most central sentences (empty for a theme).
    pub representatives: Vec<String>,
}

/// A representative comment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verbatim {
    pub item_id: String,
    pub customer_id: String,
    pub created_at: UnixMicros,
    pub channel: String,
    pub text: String,
    /// Code-point ranges of `text` that carry the theme (the sentences to highlight).
    pub highlights: Vec<Span>,
    /// The theme's sentiment in this comment.
    pub sentiment: String,
    pub nps: Option<i32>,
}

/// Verbatims of one theme, or of one significant theme x segment cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerbatimGroup {
    pub theme_id: String,
    /// Empty for a theme's group; the cell's segment value otherwise.
    pub segment_value: String,
    pub verbatims: Vec<Verbatim>,
}

/// The finished report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub period: Period,
    pub comparison: Period,
    pub bucket: BucketSize,
    pub taxonomy_version: u64,
    pub retag_pending: u64,
    pub items: u64,
    pub previous_items: u64,
    pub analysed: u64,
    /// Document sentiment counts, in `SENTIMENT_ORDER`.
    pub sentiment: [u64; 4],
    /// Net sentiment: % positive minus % negative among analysed items.
    pub net_sentiment: Score,
    pub nps: Score,
    pub csat: Score,
    pub ces: Score,
    /// Sorted by NPS impact (most negative first), then by mentions.
    pub themes: Vec<ThemeRow>,
    pub matrix: Option<SegmentMatrix>,
    /// Theme ids whose share each trend bucket lists.
    pub trend_themes: Vec<String>,
    pub trends: Vec<TrendBucket>,
    pub emerging: Vec<EmergingTheme>,
    pub verbatims: Vec<VerbatimGroup>,
}
