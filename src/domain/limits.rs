//! The API's request limits, in one place. The proto comments and the README
//! quote these numbers; tests exercise each of them (most in
//! `tests/e2e/limits.rs`, the theme, discovery and report ones beside their
//! features). Limits of other kinds live with the code they bound, and the
//! README quotes them too: the `x-request-id` length (`grpc/request_id.rs`),
//! tenant names (`domain/tenant.rs`), a cursor's statistics
//! (`index/cursor.rs`), snippet windows (`index/search.rs`), the filter cache
//! (`index/filters.rs`), facet values read per segment (`index/facets.rs`),
//! the report's matrix rows (`report/build.rs`).

/// Items in one Ingest request or one IngestStream message.
pub const MAX_BATCH_ITEMS: usize = 1_000;
/// Bytes of UTF-8 in `Feedback.text`.
pub const MAX_TEXT_BYTES: usize = 32_768;
/// Bytes in a feedback id.
pub const MAX_ID_BYTES: usize = 128;
/// Bytes in `product` and `customer_id`.
pub const MAX_NAME_BYTES: usize = 128;
/// Bytes in a language tag.
pub const MAX_LANGUAGE_BYTES: usize = 35;
/// Tags on one item.
pub const MAX_TAGS: usize = 32;
/// Bytes in one tag.
pub const MAX_TAG_BYTES: usize = 64;
/// Attributes on one item.
pub const MAX_ATTRIBUTES: usize = 32;
/// Bytes in an attribute key.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;
/// Bytes in an attribute value.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 256;
/// Ids in one Get or Delete request.
pub const MAX_IDS_PER_REQUEST: usize = 1_000;
/// Bytes in a search query string.
pub const MAX_QUERY_BYTES: usize = 1_024;
/// Terms, phrases and other leaf clauses in one search query.
pub const MAX_QUERY_CLAUSES: usize = 32;
/// Nesting depth of parentheses (and chained `NOT`s) in one search query.
/// Checked before any recursive parse, so no query can exhaust a stack.
pub const MAX_QUERY_DEPTH: usize = 16;
/// Hits per search page.
pub const MAX_SEARCH_LIMIT: usize = 100;
/// Hits per search page when the request says 0.
pub const DEFAULT_SEARCH_LIMIT: usize = 10;
/// Fields one search may facet on.
pub const MAX_FACET_FIELDS: usize = 10;
/// Values returned per facet field.
pub const FACET_VALUES_PER_FIELD: usize = 50;
/// Candidates a similarity search compares without the similarity index
/// (while it builds, or with `--similarity-index off`): the newest matching
/// ones. With the index every match is a candidate.
pub const MAX_SIMILARITY_CANDIDATES: usize = 10_000;
/// Values listed in one filter field.
pub const MAX_FILTER_VALUES: usize = 100;
/// Size of one gRPC request message.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Bytes in one gRPC response message the server sends (and the CLI accepts).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Earliest accepted `created_at`: 1970-01-01T00:00:00Z.
pub const MIN_CREATED_AT_MICROS: i64 = 0;
/// Latest accepted `created_at` (exclusive): 2200-01-01T00:00:00Z.
pub const MAX_CREATED_AT_MICROS: i64 = 7_258_118_400_000_000;
/// Themes in the taxonomy.
pub const MAX_THEMES: usize = 500;
/// Bytes in a theme id (`[a-z0-9_-]`).
pub const MAX_THEME_ID_BYTES: usize = 64;
/// Bytes in a theme name.
pub const MAX_THEME_NAME_BYTES: usize = 100;
/// Bytes in a theme description.
pub const MAX_THEME_DESCRIPTION_BYTES: usize = 1_000;
/// Examples (and, separately, counter-examples) of one theme.
pub const MAX_THEME_EXAMPLES: usize = 50;
/// Bytes in one example or counter-example sentence.
pub const MAX_THEME_EXAMPLE_BYTES: usize = 500;
/// Analysed sentences one DiscoverThemes call looks at: those of the newest
/// matching items, up to this many.
pub const MAX_DISCOVERY_SENTENCES: usize = 20_000;
/// Candidates one DiscoverThemes call returns at most.
pub const MAX_DISCOVERY_CANDIDATES: usize = 50;
/// Trend buckets one report may produce (a year of days fits).
pub const MAX_REPORT_BUCKETS: usize = 400;
/// Segment values (matrix columns) one report lists: the most frequent ones.
pub const MAX_REPORT_SEGMENT_VALUES: usize = 12;
/// Distinct values a report's segment field may have (per index segment):
/// bounds the counting pass's per-value counters.
pub const MAX_REPORT_SEGMENT_CARDINALITY: usize = 10_000;
/// Top themes whose share each trend bucket lists.
pub const REPORT_TREND_THEMES: usize = 8;
/// Themes (by impact) that get representative verbatims.
pub const REPORT_VERBATIM_THEMES: usize = 8;
/// Verbatims per theme, and per significant theme x segment cell.
pub const REPORT_VERBATIMS_PER_GROUP: usize = 3;
/// Significant cells that get verbatims.
pub const REPORT_VERBATIM_CELLS: usize = 6;
/// Minimum mentions in the period before a theme can be called emerging.
pub const EMERGING_MIN_MENTIONS: u64 = 10;
/// Family-wise false-positive rate of the emerging-theme alarms (Holm).
pub const EMERGING_ALPHA: f64 = 0.05;
