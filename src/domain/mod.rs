//! Pure domain types: what a feedback item is, how it is validated and what a
//! search asks for. Depends on nothing else in the crate and on no transport,
//! storage or index library (serde is used only to give stored records a
//! stable, forward-compatible encoding).

mod analysis;
mod feedback;
pub mod limits;
mod report;
mod search;
mod tenant;
mod text;
mod theme;
mod validate;

pub use analysis::{Analysis, Keyphrase, SentenceAnalysis, Sentiment, SentimentLabel, TextUnit};
pub use feedback::{
    AnalysisState, Channel, Feedback, FeedbackId, JourneyStage, Scores, StoredFeedback, UnixMicros,
    FIELD_NAMES,
};
pub use report::{
    BucketSize, CandidateCount, Change, DayTally, EmergingTheme, Interval, MatrixCell, Period,
    Report, ReportRequest, Score, SegmentColumn, SegmentField, SegmentMatrix, SegmentTally,
    SliceCounts, Tally, ThemeRow, ThemeShare, ThemeTally, TrendBucket, Verbatim, VerbatimGroup,
    SENTIMENT_ORDER,
};
pub use search::{
    FacetCounts, HitView, IntRange, ScoreRange, SearchFilter, SearchHit, SearchPage, SearchQuery,
    SimilarTo, Snippet, SortOrder,
};
pub use tenant::{TenantId, MAX_TENANT_BYTES};
pub use text::{
    decode_cp1252_byte, is_cjk, keyword_form, normalize_text, shown, NormalizedText, SHOWN_CHARS,
};
pub use theme::{
    check_id as check_theme_id, fold_accent, theme_terms, theme_terms_digest, DeleteRefusal, Span,
    Taxonomy, Theme, ThemeDraft, ThemeMention,
};
pub use validate::{
    is_attribute_key, validate_customer_id, validate_text, FeedbackDraft, Rejection,
};
