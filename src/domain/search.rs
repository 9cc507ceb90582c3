use std::collections::BTreeMap;

use super::{Channel, FeedbackId, JourneyStage, SentimentLabel, StoredFeedback, UnixMicros};

/// Order of search hits. Ties are broken by ingest order (`StoredFeedback::seq`),
/// so every order is total and cursors are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortOrder {
    Relevance,
    Newest,
    Oldest,
    /// Sentiment score ascending; items without analysis last.
    MostNegative,
    /// Sentiment score descending; items without analysis last.
    MostPositive,
}

impl SortOrder {
    pub const ALL: [SortOrder; 5] = [
        SortOrder::Relevance,
        SortOrder::Newest,
        SortOrder::Oldest,
        SortOrder::MostNegative,
        SortOrder::MostPositive,
    ];
}

/// An inclusive range over a sentiment score in [-1, 1]; either end may be open.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreRange {
    pub min: Option<f32>,
    pub max: Option<f32>,
}

impl Eq for ScoreRange {}

impl std::hash::Hash for ScoreRange {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.min.map(f32::to_bits).hash(state);
        self.max.map(f32::to_bits).hash(state);
    }
}

/// An inclusive range over a score; either end may be open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntRange {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl IntRange {
    pub fn is_open(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }
}

/// Structured filters: alternatives within one field, all fields together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SearchFilter {
    pub channels: Vec<Channel>,
    pub journey_stages: Vec<JourneyStage>,
    pub products: Vec<String>,
    pub languages: Vec<String>,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub customer_id: Option<String>,
    /// Inclusive lower bound on `created_at`.
    pub created_after: Option<UnixMicros>,
    /// Exclusive upper bound on `created_at`.
    pub created_before: Option<UnixMicros>,
    pub nps: IntRange,
    pub csat: IntRange,
    pub ces: IntRange,
    pub rating: IntRange,
    pub sentiments: Vec<SentimentLabel>,
    pub sentiment_score: ScoreRange,
    /// Items carrying one of these themes (a parent also matches its
    /// sub-themes' items).
    pub themes: Vec<String>,
    /// Per entry: items where the theme carries one of the labels.
    pub theme_sentiments: Vec<(String, Vec<SentimentLabel>)>,
}

impl SearchFilter {
    /// Whether the filter names themes (and so depends on the taxonomy version).
    pub fn uses_themes(&self) -> bool {
        !self.themes.is_empty() || !self.theme_sentiments.is_empty()
    }

    /// The `created_at` range, `[after, before)` in microseconds (an open
    /// side as `i64::MIN` / `i64::MAX`), where the filter has one.
    pub fn created_range(&self) -> Option<(i64, i64)> {
        match (self.created_after, self.created_before) {
            (None, None) => None,
            (after, before) => Some((
                after.map_or(i64::MIN, |at| at.0),
                before.map_or(i64::MAX, |at| at.0),
            )),
        }
    }

    /// The same filter without its theme parts.
    pub fn without_themes(&self) -> SearchFilter {
        SearchFilter {
            themes: Vec::new(),
            theme_sentiments: Vec::new(),
            ..self.clone()
        }
    }
}

/// One search request, already checked for size limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SearchQuery {
    /// Query-language text; empty matches everything.
    pub text: String,
    pub filter: SearchFilter,
    pub sort: SortOrder,
    pub limit: usize,
    /// Opaque `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Fields to count values of.
    pub facets: Vec<String>,
    /// Rank by embedding similarity instead of `sort`.
    pub similar_to: Option<SimilarTo>,
    /// The taxonomy version theme filters and facets count (set by the
    /// engine: items tagged with another version are left out).
    pub taxonomy_version: u64,
    /// Count matches only up to this many (then `total_hits` is a lower
    /// bound); `None`: exact. Lets a relevance search prune.
    pub total_hits_up_to: Option<u64>,
    /// How much of each hit to return.
    pub view: HitView,
}

impl HitView {
    /// Trims an item to this view (`Summary`: drops sentences, keyphrases
    /// and the themes' sentence indexes and spans).
    pub fn trim(self, mut item: StoredFeedback) -> StoredFeedback {
        if self == HitView::Summary {
            if let super::AnalysisState::Done(analysis) = &mut item.analysis {
                analysis.sentences = Vec::new();
                analysis.keyphrases = Vec::new();
                for theme in &mut analysis.themes {
                    theme.sentences = Vec::new();
                    theme.spans = Vec::new();
                }
            }
        }
        item
    }
}

/// How much of each search hit to return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HitView {
    /// The item with its whole analysis, and a snippet.
    #[default]
    Full,
    /// The item's fields, document sentiment and language, and its themes
    /// without their sentence spans; no sentences, keyphrases or clause
    /// units; a snippet.
    Summary,
    /// Only the id and score: no item read, no snippet.
    Ids,
}

impl SearchQuery {
    /// Whether the query asks for a theme facet (counted at the query's
    /// taxonomy version; the hits do not depend on it).
    pub fn theme_facets(&self) -> bool {
        self.facets
            .iter()
            .any(|f| f == "theme" || f == "theme_sentiment")
    }
}

/// What a similarity search compares against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SimilarTo {
    Item(super::FeedbackId),
    Text(String),
}

/// A fragment of an item's text around the query terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snippet {
    pub fragment: String,
    /// Byte ranges of `fragment` that matched.
    pub highlights: Vec<(usize, usize)>,
    pub html: String,
}

#[derive(Clone, Debug)]
pub struct SearchHit {
    pub id: FeedbackId,
    /// `None` with `HitView::Ids`.
    pub item: Option<StoredFeedback>,
    pub score: f32,
    pub snippet: Option<Snippet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FacetCounts {
    pub field: String,
    pub counts: Vec<(String, u64)>,
}

#[derive(Clone, Debug)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    pub total_hits: u64,
    /// `total_hits` stopped at the query's `total_hits_up_to`.
    pub total_is_lower_bound: bool,
    pub next_cursor: Option<String>,
    pub facets: Vec<FacetCounts>,
    /// The taxonomy version theme filters and facets counted.
    pub taxonomy_version: u64,
    /// With themes in the query: matching items whose themes still come from
    /// an older taxonomy version (not counted by the theme parts).
    pub retag_pending: u64,
}
