//! Wire <-> domain conversion. Incoming messages are validated here (unknown
//! enum values, timestamps, request-level limits) with the field path in the
//! error; item rules live in `domain::FeedbackDraft::validate`.

use prost_types::Timestamp;

use super::pb;
use crate::domain::limits::{
    DEFAULT_SEARCH_LIMIT, MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_CREATED_AT_MICROS, MAX_FACET_FIELDS, MAX_FILTER_VALUES, MAX_LANGUAGE_BYTES, MAX_NAME_BYTES,
    MAX_SEARCH_LIMIT, MAX_TAG_BYTES, MIN_CREATED_AT_MICROS,
};
use crate::domain::{
    check_theme_id, is_attribute_key, Analysis, AnalysisState, Channel, FacetCounts, FeedbackDraft,
    FeedbackId, HitView, IntRange, JourneyStage, Rejection, ScoreRange, SearchFilter, SearchHit,
    SearchPage, SearchQuery, Sentiment, SentimentLabel, SimilarTo, SortOrder, StoredFeedback,
    Taxonomy, Theme, ThemeDraft, ThemeMention, UnixMicros,
};
use crate::engine::{DiscoveryReport, IncomingItem, ItemOutcome};
use crate::error::Error;

pub fn channel_from_pb(value: i32) -> Result<Option<Channel>, String> {
    Ok(Some(match pb::Channel::try_from(value) {
        Ok(pb::Channel::Unspecified) => return Ok(None),
        Ok(pb::Channel::Survey) => Channel::Survey,
        Ok(pb::Channel::Review) => Channel::Review,
        Ok(pb::Channel::SupportTicket) => Channel::SupportTicket,
        Ok(pb::Channel::Chat) => Channel::Chat,
        Ok(pb::Channel::Email) => Channel::Email,
        Ok(pb::Channel::Social) => Channel::Social,
        Ok(pb::Channel::CallTranscript) => Channel::CallTranscript,
        Ok(pb::Channel::Other) => Channel::Other,
        Err(_) => return Err(format!("unknown enum value {value}")),
    }))
}

pub fn channel_to_pb(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Survey => pb::Channel::Survey,
        Channel::Review => pb::Channel::Review,
        Channel::SupportTicket => pb::Channel::SupportTicket,
        Channel::Chat => pb::Channel::Chat,
        Channel::Email => pb::Channel::Email,
        Channel::Social => pb::Channel::Social,
        Channel::CallTranscript => pb::Channel::CallTranscript,
        Channel::Other => pb::Channel::Other,
    }
}

pub fn stage_from_pb(value: i32) -> Result<Option<JourneyStage>, String> {
    Ok(Some(match pb::JourneyStage::try_from(value) {
        Ok(pb::JourneyStage::Unspecified) => return Ok(None),
        Ok(pb::JourneyStage::Research) => JourneyStage::Research,
        Ok(pb::JourneyStage::Comparison) => JourneyStage::Comparison,
        Ok(pb::JourneyStage::Purchase) => JourneyStage::Purchase,
        Ok(pb::JourneyStage::Onboarding) => JourneyStage::Onboarding,
        Ok(pb::JourneyStage::Usage) => JourneyStage::Usage,
        Ok(pb::JourneyStage::Support) => JourneyStage::Support,
        Ok(pb::JourneyStage::Renewal) => JourneyStage::Renewal,
        Ok(pb::JourneyStage::Other) => JourneyStage::Other,
        Err(_) => return Err(format!("unknown enum value {value}")),
    }))
}

pub fn stage_to_pb(stage: JourneyStage) -> pb::JourneyStage {
    match stage {
        JourneyStage::Research => pb::JourneyStage::Research,
        JourneyStage::Comparison => pb::JourneyStage::Comparison,
        JourneyStage::Purchase => pb::JourneyStage::Purchase,
        JourneyStage::Onboarding => pb::JourneyStage::Onboarding,
        JourneyStage::Usage => pb::JourneyStage::Usage,
        JourneyStage::Support => pb::JourneyStage::Support,
        JourneyStage::Renewal => pb::JourneyStage::Renewal,
        JourneyStage::Other => pb::JourneyStage::Other,
    }
}

pub fn timestamp_to_micros(ts: &Timestamp) -> Result<UnixMicros, String> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(format!("nanos must be 0..999999999, got {}", ts.nanos));
    }
    ts.seconds
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(i64::from(ts.nanos / 1_000)))
        .map(UnixMicros)
        .ok_or_else(|| format!("seconds out of range: {}", ts.seconds))
}

/// A time bound moved into the range items can have.
pub(super) fn clamp_created(at: UnixMicros) -> UnixMicros {
    UnixMicros(at.0.clamp(MIN_CREATED_AT_MICROS, MAX_CREATED_AT_MICROS))
}

pub fn micros_to_timestamp(at: UnixMicros) -> Timestamp {
    Timestamp {
        seconds: at.0.div_euclid(1_000_000),
        nanos: (at.0.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// An incoming item: a draft for validation, or the rejection of a field the
/// wire format alone makes invalid (unknown enum value, bad timestamp).
pub fn incoming_item(item: pb::Feedback) -> IncomingItem {
    let channel = channel_from_pb(item.channel).map_err(|r| Rejection::new("channel", r))?;
    let journey_stage =
        stage_from_pb(item.journey_stage).map_err(|r| Rejection::new("journey_stage", r))?;
    let created_at = item
        .created_at
        .as_ref()
        .map(timestamp_to_micros)
        .transpose()
        .map_err(|r| Rejection::new("created_at", r))?;
    Ok(FeedbackDraft {
        id: item.id,
        text: item.text,
        channel,
        journey_stage,
        product: item.product,
        customer_id: item.customer_id,
        created_at,
        language: item.language,
        nps: item.nps.map(i64::from),
        csat: item.csat.map(i64::from),
        ces: item.ces.map(i64::from),
        rating: item.rating.map(i64::from),
        tags: item.tags,
        attributes: item.attributes.into_iter().collect(),
    })
}

impl From<StoredFeedback> for pb::Feedback {
    fn from(stored: StoredFeedback) -> Self {
        let item = stored.feedback;
        pb::Feedback {
            id: item.id.into_string(),
            text: item.text,
            channel: channel_to_pb(item.channel) as i32,
            journey_stage: stage_to_pb(item.journey_stage) as i32,
            product: item.product,
            customer_id: item.customer_id,
            created_at: Some(micros_to_timestamp(item.created_at)),
            language: item.language,
            nps: item.scores.nps.map(i32::from),
            csat: item.scores.csat.map(i32::from),
            ces: item.scores.ces.map(i32::from),
            rating: item.scores.rating.map(i32::from),
            tags: item.tags,
            attributes: item.attributes.into_iter().collect(),
            ingested_at: Some(micros_to_timestamp(stored.ingested_at)),
            analysis_status: match &stored.analysis {
                AnalysisState::Pending => pb::AnalysisStatus::Pending,
                AnalysisState::Done(_) => pb::AnalysisStatus::Done,
                AnalysisState::Failed { .. } => pb::AnalysisStatus::Failed,
            } as i32,
            analysis_error: match &stored.analysis {
                AnalysisState::Failed { reason } => reason.clone(),
                _ => String::new(),
            },
            analysis: match stored.analysis {
                AnalysisState::Done(analysis) => Some(analysis.into()),
                _ => None,
            },
            // Never by default: only Get with include_original, for admins.
            original_text: String::new(),
        }
    }
}

pub fn item_results(
    outcomes: Vec<(ItemOutcome, Option<Analysis>)>,
) -> (Vec<pb::ItemResult>, u32, u32) {
    let mut accepted = 0;
    let mut rejected = 0;
    let results = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, (outcome, analysis))| pb::ItemResult {
            index: index as u32,
            analysis: analysis.map(Into::into),
            outcome: Some(match outcome {
                ItemOutcome::Stored(id) => {
                    accepted += 1;
                    pb::item_result::Outcome::Id(id.into_string())
                }
                ItemOutcome::Rejected(r) => {
                    rejected += 1;
                    pb::item_result::Outcome::Rejection(pb::Rejection {
                        field: r.field,
                        reason: r.reason,
                    })
                }
            }),
        })
        .collect();
    (results, accepted, rejected)
}

/// Ids of a Get/Delete request; a malformed id is the request's fault.
pub fn ids(raw: Vec<String>) -> Result<Vec<FeedbackId>, Error> {
    raw.iter()
        .enumerate()
        .map(|(i, id)| FeedbackId::parse(id).map_err(|r| Error::invalid(format!("ids[{i}]"), r)))
        .collect()
}

fn check_count(field: &str, len: usize) -> Result<(), Error> {
    if len > MAX_FILTER_VALUES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_FILTER_VALUES} values, got {len}"),
        ));
    }
    Ok(())
}

/// Trimmed filter values, each no longer than the item rule allows for
/// the field (`what`): a longer value could never match a stored item, and
/// refusing it keeps a caller from filling the filter cache's keys.
fn filter_values(
    field: &str,
    values: &[String],
    max_bytes: usize,
    what: &str,
) -> Result<Vec<String>, Error> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let value = value.trim();
            if value.is_empty() {
                // Found by probing: it matched nothing, while a blank
                // `customer_id` matched everything.
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("empty or blank: no item has an empty value in {what}; leave it out"),
                ));
            }
            check_value_bytes(&format!("{field}[{i}]"), value, max_bytes, what)?;
            Ok(value.to_string())
        })
        .collect()
}

fn check_value_bytes(field: &str, value: &str, max_bytes: usize, what: &str) -> Result<(), Error> {
    if value.len() > max_bytes {
        return Err(Error::invalid(
            field,
            format!(
                "at most {max_bytes} bytes, as item {what} are, got {}",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn int_range(field: &str, range: Option<pb::IntRange>) -> Result<IntRange, Error> {
    let Some(range) = range else {
        return Ok(IntRange::default());
    };
    if let (Some(min), Some(max)) = (range.min, range.max) {
        if min > max {
            return Err(Error::invalid(
                field,
                format!("min {min} is greater than max {max}"),
            ));
        }
    }
    Ok(IntRange {
        min: range.min.map(i64::from),
        max: range.max.map(i64::from),
    })
}

pub(super) fn sentiment_label_from_pb(value: i32) -> Result<Option<SentimentLabel>, String> {
    Ok(Some(match pb::SentimentLabel::try_from(value) {
        Ok(pb::SentimentLabel::Unspecified) => return Ok(None),
        Ok(pb::SentimentLabel::Negative) => SentimentLabel::Negative,
        Ok(pb::SentimentLabel::Neutral) => SentimentLabel::Neutral,
        Ok(pb::SentimentLabel::Positive) => SentimentLabel::Positive,
        Ok(pb::SentimentLabel::Mixed) => SentimentLabel::Mixed,
        Err(_) => return Err(format!("unknown enum value {value}")),
    }))
}

/// Wire enum values of a filter list; UNSPECIFIED entries are ignored.
fn enum_values<T>(
    field: &str,
    values: &[i32],
    from_pb: fn(i32) -> Result<Option<T>, String>,
) -> Result<Vec<T>, Error> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            from_pb(*v)
                .map_err(|r| Error::invalid(format!("{field}[{i}]"), r))
                .transpose()
        })
        .collect()
}

fn filter(raw: pb::Filter) -> Result<SearchFilter, Error> {
    check_count("filter.channels", raw.channels.len())?;
    check_count("filter.journey_stages", raw.journey_stages.len())?;
    check_count("filter.products", raw.products.len())?;
    check_count("filter.languages", raw.languages.len())?;
    check_count("filter.tags", raw.tags.len())?;
    check_count("filter.attributes", raw.attributes.len())?;
    check_count("filter.sentiments", raw.sentiments.len())?;
    check_count("filter.themes", raw.themes.len())?;
    check_count("filter.theme_sentiments", raw.theme_sentiments.len())?;
    for (i, id) in raw.themes.iter().enumerate() {
        check_theme_id(&format!("filter.themes[{i}]"), id)
            .map_err(|r| Error::invalid(r.field, r.reason))?;
    }
    let mut theme_sentiments = Vec::with_capacity(raw.theme_sentiments.len());
    for (i, entry) in raw.theme_sentiments.into_iter().enumerate() {
        let field = format!("filter.theme_sentiments[{i}]");
        check_theme_id(&format!("{field}.theme_id"), &entry.theme_id)
            .map_err(|r| Error::invalid(r.field, r.reason))?;
        check_count(&format!("{field}.sentiments"), entry.sentiments.len())?;
        let labels = enum_values(
            &format!("{field}.sentiments"),
            &entry.sentiments,
            sentiment_label_from_pb,
        )?;
        if labels.is_empty() {
            return Err(Error::invalid(
                format!("{field}.sentiments"),
                "name at least one sentiment",
            ));
        }
        theme_sentiments.push((entry.theme_id, labels));
    }
    // Stored keys follow the item rule: a filter on any other key could
    // never match (as a facet on one is refused).
    if let Some(key) = raw.attributes.keys().find(|key| !is_attribute_key(key)) {
        return Err(Error::invalid(
            format!("filter.attributes.{}", crate::domain::shown(key)),
            format!("key must be 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes of [a-z0-9_], as item attribute keys are"),
        ));
    }
    for (key, value) in &raw.attributes {
        check_value_bytes(
            &format!("filter.attributes.{key}"),
            value,
            MAX_ATTRIBUTE_VALUE_BYTES,
            "attribute values",
        )?;
    }
    let customer_id = raw.customer_id.trim();
    if customer_id.is_empty() && !raw.customer_id.is_empty() {
        // Blank is not "no filter": a lookup for a customer id read from an
        // empty form field would have answered every customer's items.
        return Err(Error::invalid(
            "filter.customer_id",
            "blank: leave it empty for no customer filter",
        ));
    }
    check_value_bytes(
        "filter.customer_id",
        customer_id,
        MAX_NAME_BYTES,
        "customer ids",
    )?;
    let channels = enum_values("filter.channels", &raw.channels, channel_from_pb)?;
    let journey_stages = enum_values("filter.journey_stages", &raw.journey_stages, stage_from_pb)?;
    // Items exist only in [MIN_CREATED_AT, MAX_CREATED_AT): a bound beyond
    // means the same as the nearest end (and keeps every later computation
    // on times, in the index and in reports, far from overflow).
    let created = |field: &str, ts: Option<Timestamp>| {
        ts.as_ref()
            .map(timestamp_to_micros)
            .transpose()
            .map_err(|r| Error::invalid(field, r))
    };
    let created_after = created("filter.created_after", raw.created_after)?;
    let created_before = created("filter.created_before", raw.created_before)?;
    // Reversed bounds are refused as a reversed score range is (equal ones
    // are an empty period).
    if let (Some(after), Some(before)) = (created_after, created_before) {
        if after > before {
            return Err(Error::invalid(
                "filter.created_before",
                "must not be earlier than filter.created_after",
            ));
        }
    }
    Ok(SearchFilter {
        channels,
        journey_stages,
        // Stored values are trimmed on ingest; filter values are compared the same way.
        products: filter_values("filter.products", &raw.products, MAX_NAME_BYTES, "products")?,
        languages: filter_values(
            "filter.languages",
            &raw.languages,
            MAX_LANGUAGE_BYTES,
            "languages",
        )?,
        tags: filter_values("filter.tags", &raw.tags, MAX_TAG_BYTES, "tags")?,
        customer_id: Some(customer_id.to_string()).filter(|c| !c.is_empty()),
        attributes: raw.attributes.into_iter().collect(),
        created_after: created_after.map(clamp_created),
        created_before: created_before.map(clamp_created),
        nps: int_range("filter.nps", raw.nps)?,
        csat: int_range("filter.csat", raw.csat)?,
        ces: int_range("filter.ces", raw.ces)?,
        rating: int_range("filter.rating", raw.rating)?,
        sentiments: enum_values(
            "filter.sentiments",
            &raw.sentiments,
            sentiment_label_from_pb,
        )?,
        sentiment_score: match raw.sentiment_score {
            None => ScoreRange::default(),
            Some(range) => {
                for v in [range.min, range.max].into_iter().flatten() {
                    if !(-1.0..=1.0).contains(&v) {
                        return Err(Error::invalid(
                            "filter.sentiment_score",
                            format!("must lie in [-1, 1], got {v}"),
                        ));
                    }
                }
                if let (Some(min), Some(max)) = (range.min, range.max) {
                    if min > max {
                        return Err(Error::invalid(
                            "filter.sentiment_score",
                            format!("min {min} is greater than max {max}"),
                        ));
                    }
                }
                ScoreRange {
                    min: range.min,
                    max: range.max,
                }
            }
        },
        themes: raw.themes,
        theme_sentiments,
    })
}

impl TryFrom<pb::SearchRequest> for SearchQuery {
    type Error = Error;

    fn try_from(raw: pb::SearchRequest) -> Result<Self, Error> {
        let limit = match raw.limit as usize {
            0 => DEFAULT_SEARCH_LIMIT,
            n if n <= MAX_SEARCH_LIMIT => n,
            n => {
                return Err(Error::invalid(
                    "limit",
                    format!("must be at most {MAX_SEARCH_LIMIT}, got {n}"),
                ))
            }
        };
        if raw.facets.len() > MAX_FACET_FIELDS {
            return Err(Error::invalid(
                "facets",
                format!(
                    "at most {MAX_FACET_FIELDS} fields, got {}",
                    raw.facets.len()
                ),
            ));
        }
        let has_text = !raw.query.trim().is_empty();
        let sort = match pb::SortOrder::try_from(raw.sort) {
            Ok(pb::SortOrder::Unspecified) if has_text => SortOrder::Relevance,
            Ok(pb::SortOrder::Unspecified) => SortOrder::Newest,
            Ok(pb::SortOrder::Relevance) => SortOrder::Relevance,
            Ok(pb::SortOrder::Newest) => SortOrder::Newest,
            Ok(pb::SortOrder::Oldest) => SortOrder::Oldest,
            Ok(pb::SortOrder::MostNegative) => SortOrder::MostNegative,
            Ok(pb::SortOrder::MostPositive) => SortOrder::MostPositive,
            Err(_) => {
                return Err(Error::invalid(
                    "sort",
                    format!("unknown enum value {}", raw.sort),
                ))
            }
        };
        let similar_to = match (raw.similar_to_id.is_empty(), raw.similar_to_text.is_empty()) {
            (true, true) => None,
            (false, true) => Some(SimilarTo::Item(
                FeedbackId::parse(&raw.similar_to_id)
                    .map_err(|r| Error::invalid("similar_to_id", r))?,
            )),
            (true, false) => Some(SimilarTo::Text(raw.similar_to_text)),
            (false, false) => {
                return Err(Error::invalid(
                    "similar_to_text",
                    "give similar_to_id or similar_to_text, not both",
                ))
            }
        };
        if similar_to.is_some() && !raw.cursor.is_empty() {
            return Err(Error::invalid(
                "cursor",
                "not supported with similarity search",
            ));
        }
        Ok(SearchQuery {
            similar_to,
            text: raw.query,
            filter: filter(raw.filter.unwrap_or_default())?,
            sort,
            limit,
            cursor: Some(raw.cursor).filter(|c| !c.is_empty()),
            facets: raw.facets,
            taxonomy_version: 0,
            total_hits_up_to: match raw.track_total_hits_up_to {
                0 => None,
                n => Some(u64::from(n)),
            },
            view: match pb::HitView::try_from(raw.view) {
                Ok(pb::HitView::Unspecified | pb::HitView::Full) => HitView::Full,
                Ok(pb::HitView::Summary) => HitView::Summary,
                Ok(pb::HitView::Ids) => HitView::Ids,
                Err(_) => {
                    return Err(Error::invalid(
                        "view",
                        format!("unknown enum value {}", raw.view),
                    ))
                }
            },
        })
    }
}

fn hit_to_pb(hit: SearchHit) -> pb::SearchHit {
    pb::SearchHit {
        item: Some(match hit.item {
            Some(item) => item.into(),
            None => pb::Feedback {
                id: hit.id.into_string(),
                ..Default::default()
            },
        }),
        score: hit.score,
        snippet: hit.snippet.map(|s| pb::Snippet {
            fragment: s.fragment,
            highlights: s
                .highlights
                .into_iter()
                .map(|(start, end)| pb::HighlightRange {
                    start: start as u32,
                    end: end as u32,
                })
                .collect(),
            html: s.html,
        }),
    }
}

fn facet_to_pb(facet: FacetCounts) -> pb::FacetResult {
    pb::FacetResult {
        field: facet.field,
        counts: facet
            .counts
            .into_iter()
            .map(|(value, count)| pb::FacetCount { value, count })
            .collect(),
    }
}

impl From<SearchPage> for pb::SearchResponse {
    fn from(page: SearchPage) -> Self {
        pb::SearchResponse {
            hits: page.hits.into_iter().map(hit_to_pb).collect(),
            total_hits: page.total_hits,
            next_cursor: page.next_cursor.unwrap_or_default(),
            facets: page.facets.into_iter().map(facet_to_pb).collect(),
            taxonomy_version: page.taxonomy_version,
            retag_pending: page.retag_pending,
            total_hits_is_lower_bound: page.total_is_lower_bound,
        }
    }
}

fn sentiment_to_pb(s: &Sentiment) -> pb::Sentiment {
    pb::Sentiment {
        label: match s.label {
            SentimentLabel::Negative => pb::SentimentLabel::Negative,
            SentimentLabel::Neutral => pb::SentimentLabel::Neutral,
            SentimentLabel::Positive => pb::SentimentLabel::Positive,
            SentimentLabel::Mixed => pb::SentimentLabel::Mixed,
        } as i32,
        score: s.score,
        negative: s.negative,
        neutral: s.neutral,
        positive: s.positive,
    }
}

impl From<Analysis> for pb::Analysis {
    fn from(a: Analysis) -> Self {
        pb::Analysis {
            language: a.language,
            language_confidence: a.language_confidence,
            sentiment: Some(sentiment_to_pb(&a.sentiment)),
            sentences: a
                .sentences
                .iter()
                .map(|s| pb::SentenceAnalysis {
                    start: s.start as u32,
                    end: s.end as u32,
                    sentiment: Some(sentiment_to_pb(&s.sentiment)),
                })
                .collect(),
            keyphrases: a
                .keyphrases
                .into_iter()
                .map(|k| pb::Keyphrase {
                    text: k.text,
                    score: k.score,
                })
                .collect(),
            embedding: a.embedding,
            model: a.model,
            themes: a.themes.iter().map(mention_to_pb).collect(),
            taxonomy_version: a.taxonomy_version,
        }
    }
}

fn mention_to_pb(m: &ThemeMention) -> pb::ThemeMention {
    pb::ThemeMention {
        theme_id: m.theme_id.clone(),
        theme_name: m.theme_name.clone(),
        parent_id: m.parent_id.clone(),
        score: m.score,
        sentences: m.sentences.iter().map(|&s| s as u32).collect(),
        spans: m
            .spans
            .iter()
            .map(|s| pb::Span {
                start: s.start as u32,
                end: s.end as u32,
            })
            .collect(),
        sentiment: Some(sentiment_to_pb(&m.sentiment)),
    }
}

impl From<pb::Theme> for ThemeDraft {
    fn from(t: pb::Theme) -> Self {
        ThemeDraft {
            id: t.id,
            name: t.name,
            description: t.description,
            examples: t.examples,
            counter_examples: t.counter_examples,
            parent_id: t.parent_id,
        }
    }
}

impl From<Theme> for pb::Theme {
    fn from(t: Theme) -> Self {
        pb::Theme {
            id: t.id,
            name: t.name,
            description: t.description,
            examples: t.examples,
            counter_examples: t.counter_examples,
            parent_id: t.parent_id,
            version: t.version,
        }
    }
}

pub fn list_themes_response(taxonomy: Taxonomy, threshold: f32) -> pb::ListThemesResponse {
    pb::ListThemesResponse {
        themes: taxonomy
            .ordered()
            .into_iter()
            .cloned()
            .map(Into::into)
            .collect(),
        taxonomy_version: taxonomy.version,
        threshold,
    }
}

pub fn discovery_request(raw: pb::DiscoverThemesRequest) -> Result<SearchQuery, Error> {
    SearchQuery::try_from(pb::SearchRequest {
        query: raw.query,
        filter: raw.filter,
        ..Default::default()
    })
}

impl From<DiscoveryReport> for pb::DiscoverThemesResponse {
    fn from(r: DiscoveryReport) -> Self {
        pb::DiscoverThemesResponse {
            candidates: r
                .candidates
                .into_iter()
                .map(|c| pb::ThemeCandidate {
                    name: c.name,
                    keyphrases: c.keyphrases,
                    size: c.size,
                    share: c.share,
                    sentiment: Some(sentiment_to_pb(&c.sentiment)),
                    representatives: c.representatives,
                    item_ids: c.item_ids,
                })
                .collect(),
            sentences: r.sentences,
            uncovered: r.uncovered,
            outliers: r.outliers,
            taxonomy_version: r.taxonomy_version,
        }
    }
}

pub fn analyze_response(results: Vec<Result<Analysis, Rejection>>) -> pb::AnalyzeResponse {
    pb::AnalyzeResponse {
        results: results
            .into_iter()
            .enumerate()
            .map(|(index, result)| pb::TextResult {
                index: index as u32,
                outcome: Some(match result {
                    Ok(analysis) => pb::text_result::Outcome::Analysis(analysis.into()),
                    Err(r) => pb::text_result::Outcome::Rejection(pb::Rejection {
                        field: r.field,
                        reason: r.reason,
                    }),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microsecond_precision() {
        for micros in [0, 1, 999_999, 1_700_000_000_123_456, -1] {
            let ts = micros_to_timestamp(UnixMicros(micros));
            assert_eq!(timestamp_to_micros(&ts).unwrap(), UnixMicros(micros));
        }
        assert!(timestamp_to_micros(&Timestamp {
            seconds: 0,
            nanos: -1
        })
        .is_err());
        assert!(timestamp_to_micros(&Timestamp {
            seconds: i64::MAX,
            nanos: 0
        })
        .is_err());
    }

    #[test]
    fn unknown_enum_values_are_rejected_with_their_field() {
        let item = pb::Feedback {
            text: "x".into(),
            channel: 42,
            ..Default::default()
        };
        let rejection = incoming_item(item).unwrap_err();
        assert_eq!(rejection.field, "channel");
        let item = pb::Feedback {
            text: "x".into(),
            journey_stage: -3,
            ..Default::default()
        };
        assert_eq!(incoming_item(item).unwrap_err().field, "journey_stage");
    }

    #[test]
    fn search_request_limits_are_checked() {
        let request = |f: fn(&mut pb::SearchRequest)| {
            let mut r = pb::SearchRequest::default();
            f(&mut r);
            SearchQuery::try_from(r)
        };
        assert_eq!(request(|_| {}).unwrap().limit, DEFAULT_SEARCH_LIMIT);
        assert_eq!(request(|_| {}).unwrap().sort, SortOrder::Newest);
        assert_eq!(
            request(|r| r.query = "x".into()).unwrap().sort,
            SortOrder::Relevance
        );
        assert!(request(|r| r.limit = 101).is_err());
        assert!(request(|r| r.sort = 9).is_err());
        assert!(request(|r| r.facets = vec!["channel".into(); 11]).is_err());
        assert!(request(|r| {
            r.filter = Some(pb::Filter {
                nps: Some(pb::IntRange {
                    min: Some(9),
                    max: Some(3),
                }),
                ..Default::default()
            })
        })
        .is_err());
        assert!(request(|r| {
            r.filter = Some(pb::Filter {
                channels: vec![77],
                ..Default::default()
            })
        })
        .is_err());
    }

    /// Found by the fuzz target: filters that can never match were taken
    /// in silence, where a reversed score range (IntRange) or an attribute
    /// facet are refused: a reversed sentiment_score or time range, an
    /// attribute key no item can have.
    #[test]
    fn filters_that_can_never_match_are_refused() {
        let ts = |seconds| Some(Timestamp { seconds, nanos: 0 });
        let refused = |filter: pb::Filter| match filter_of(filter) {
            Err(Error::InvalidArgument { field, reason }) => format!("{field}: {reason}"),
            other => panic!("{other:?}"),
        };
        let reversed_score = refused(pb::Filter {
            sentiment_score: Some(pb::FloatRange {
                min: Some(0.5),
                max: Some(-0.5),
            }),
            ..Default::default()
        });
        assert_eq!(
            reversed_score,
            "filter.sentiment_score: min 0.5 is greater than max -0.5"
        );
        let reversed_time = refused(pb::Filter {
            created_after: ts(2_000),
            created_before: ts(1_000),
            ..Default::default()
        });
        assert!(
            reversed_time.starts_with("filter.created_before"),
            "{reversed_time}"
        );
        // Reversed before clamping: both beyond the end of item time.
        let beyond = refused(pb::Filter {
            created_after: ts(9_000_000_000),
            created_before: ts(8_000_000_000),
            ..Default::default()
        });
        assert!(beyond.starts_with("filter.created_before"), "{beyond}");
        let key = refused(pb::Filter {
            attributes: [("Region".to_string(), "emea".to_string())].into(),
            ..Default::default()
        });
        assert!(
            key.starts_with("filter.attributes.Region: key must be"),
            "{key}"
        );
        // Blank values: a list element matched nothing, a blank customer
        // id everything.
        let blank = refused(pb::Filter {
            products: vec!["Router".into(), "   ".into()],
            ..Default::default()
        });
        assert!(
            blank.starts_with("filter.products[1]: empty or blank"),
            "{blank}"
        );
        let blank = refused(pb::Filter {
            customer_id: " \t ".into(),
            ..Default::default()
        });
        assert!(blank.starts_with("filter.customer_id: blank"), "{blank}");

        // Equal or open bounds, and a valid key, are fine.
        let fine = filter_of(pb::Filter {
            sentiment_score: Some(pb::FloatRange {
                min: Some(0.5),
                max: Some(0.5),
            }),
            created_after: ts(1_000),
            created_before: ts(1_000),
            attributes: [("region".to_string(), "emea".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(fine.created_after, fine.created_before);
    }

    fn filter_of(filter: pb::Filter) -> Result<SearchFilter, Error> {
        SearchQuery::try_from(pb::SearchRequest {
            filter: Some(filter),
            ..Default::default()
        })
        .map(|query| query.filter)
    }
}

/// Fuzz targets of the request conversions (`cargo test --lib fuzz`): any
/// field values convert, or are refused with the field's path; what is
/// accepted keeps every documented rule, and a search with it answers.
#[cfg(test)]
pub(super) mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::limits::*;
    use crate::domain::{normalize_text, AnalysisState, Feedback, SearchFilter};
    use crate::fuzz::{edgy_f32, edgy_i32, field_string, long_string, nasty_string, timestamp};
    use crate::index::IndexError;

    /// Mostly a valid value (so conversions get past the first field and
    /// the rules of accepted requests are checked), now and then anything.
    fn mostly<T: std::fmt::Debug>(
        valid: impl Strategy<Value = T> + 'static,
        anything: impl Strategy<Value = T> + 'static,
    ) -> BoxedStrategy<T> {
        prop_oneof![9 => valid, 1 => anything].boxed()
    }

    fn id() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => Just(String::new()),
            6 => "[!-~]{1,8}",
            1 => "[!-~]{120,130}",
            1 => nasty_string(12),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => nasty_string(40),
            1 => long_string(MAX_TEXT_BYTES - 8, MAX_TEXT_BYTES + 8),
            1 => prop::sample::select(vec!["", " ", "\u{7}\u{1b} \u{81}", "a\0b", "\u{fffe}", "e\u{301}"])
                .prop_map(String::from),
        ]
    }

    fn name() -> BoxedStrategy<String> {
        mostly("[A-Za-z0-9 ._-]{0,20}", field_string(200))
    }

    fn language() -> BoxedStrategy<String> {
        mostly(
            "[A-Za-z0-9_-]{0,12}",
            prop_oneof![
                "[A-Za-z0-9_-]{30,40}",
                nasty_string(8),
                Just(" PT-BR ".to_string())
            ],
        )
    }

    fn attribute_key() -> BoxedStrategy<String> {
        mostly(
            "[a-z0-9_]{1,10}",
            prop_oneof![Just(String::new()), "[a-z0-9_]{60,70}", nasty_string(8)],
        )
    }

    fn theme_id() -> BoxedStrategy<String> {
        mostly(
            "[a-z0-9_-]{1,12}",
            prop_oneof![Just(String::new()), "[a-z0-9_-]{60,70}", nasty_string(8)],
        )
    }

    fn enum_value(max: i32) -> BoxedStrategy<i32> {
        mostly(0..=max, edgy_i32())
    }

    fn score(max: i32) -> impl Strategy<Value = Option<i32>> {
        prop::option::of(mostly(0..=max, edgy_i32()))
    }

    /// Item times: mostly in the range items may have.
    fn item_time() -> BoxedStrategy<prost_types::Timestamp> {
        mostly(
            (0i64..7_258_118_400, 0i32..1_000_000_000)
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
            timestamp(),
        )
    }

    /// A list of mostly few values, sometimes more than a request may hold.
    fn list<S: Strategy + 'static>(values: S, over: usize) -> impl Strategy<Value = Vec<S::Value>>
    where
        S::Value: std::fmt::Debug,
    {
        let values = std::sync::Arc::new(values);
        prop_oneof![
            20 => prop::collection::vec(values.clone(), 0..4),
            1 => prop::collection::vec(values, over - 3..over + 3),
        ]
    }

    pub(crate) fn feedback() -> impl Strategy<Value = pb::Feedback> {
        let scores = (score(10), score(6), score(8), score(6));
        let names = (name(), name(), language());
        let lists = (
            list(mostly("[a-z ]{1,10}", field_string(80)), MAX_TAGS + 1),
            prop_oneof![
                20 => prop::collection::hash_map(attribute_key(), mostly("[a-z ]{0,10}", field_string(300)), 0..4),
                1 => prop::collection::hash_map("[a-z]{6}", field_string(4), MAX_ATTRIBUTES..MAX_ATTRIBUTES + 3),
            ],
        );
        (
            id(),
            text(),
            enum_value(8),
            enum_value(8),
            prop::option::of(item_time()),
            names,
            scores,
            lists,
        )
            .prop_map(
                |(id, text, channel, journey_stage, created_at, names, scores, lists)| {
                    pb::Feedback {
                        id,
                        text,
                        channel,
                        journey_stage,
                        product: names.0,
                        customer_id: names.1,
                        created_at,
                        language: names.2,
                        nps: scores.0,
                        csat: scores.1,
                        ces: scores.2,
                        rating: scores.3,
                        tags: lists.0,
                        attributes: lists.1,
                        ..Default::default()
                    }
                },
            )
    }

    fn int_range() -> impl Strategy<Value = Option<pb::IntRange>> {
        prop::option::of(
            (prop::option::of(score(10)), prop::option::of(score(10))).prop_map(|(min, max)| {
                pb::IntRange {
                    min: min.flatten(),
                    max: max.flatten(),
                }
            }),
        )
    }

    fn score_range() -> impl Strategy<Value = Option<pb::FloatRange>> {
        let bound = || prop::option::of(mostly(-1.0f32..=1.0, edgy_f32()));
        prop::option::of((bound(), bound()).prop_map(|(min, max)| pb::FloatRange { min, max }))
    }

    pub(crate) fn filter() -> impl Strategy<Value = pb::Filter> {
        let enums = (
            list(enum_value(8), MAX_FILTER_VALUES),
            list(enum_value(8), MAX_FILTER_VALUES),
            list(enum_value(4), MAX_FILTER_VALUES),
        );
        let strings = (
            list(name(), MAX_FILTER_VALUES),
            list(language(), MAX_FILTER_VALUES),
            list(name(), MAX_FILTER_VALUES),
            name(),
            prop::collection::hash_map(attribute_key(), name(), 0..3),
        );
        let ranges = (
            int_range(),
            int_range(),
            int_range(),
            int_range(),
            score_range(),
            prop::option::of(item_time()),
            prop::option::of(item_time()),
        );
        let themes = (
            list(theme_id(), MAX_FILTER_VALUES),
            list(
                (theme_id(), list(enum_value(4), MAX_FILTER_VALUES)).prop_map(
                    |(theme_id, sentiments)| pb::ThemeSentimentFilter {
                        theme_id,
                        sentiments,
                    },
                ),
                MAX_FILTER_VALUES,
            ),
        );
        (enums, strings, ranges, themes).prop_map(|(enums, strings, ranges, themes)| pb::Filter {
            channels: enums.0,
            journey_stages: enums.1,
            sentiments: enums.2,
            products: strings.0,
            languages: strings.1,
            tags: strings.2,
            customer_id: strings.3,
            attributes: strings.4,
            nps: ranges.0,
            csat: ranges.1,
            ces: ranges.2,
            rating: ranges.3,
            sentiment_score: ranges.4,
            created_after: ranges.5,
            created_before: ranges.6,
            themes: themes.0,
            theme_sentiments: themes.1,
        })
    }

    /// Query texts: words, fields, operators.
    pub(crate) fn query_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "((refund|delivery|late|x|NOT|OR|AND|text:|nps:[0 TO 6]|channel:review|attributes.region:emea|theme:delivery|\"late delivery\"|[()\"*-]) ?){0,6}",
            1 => nasty_string(20),
            1 => Just(String::new()),
        ]
    }

    fn facet() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "channel", "journey_stage", "product", "language", "tags", "customer_id",
                "sentiment", "analysis_status", "theme", "theme_sentiment", "attributes.region",
                "attributes.", "attributes", "attributes.Region", "text", "nps", "created_at", "",
            ])
            .prop_map(String::from),
            1 => nasty_string(10),
        ]
    }

    fn cursor() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => Just(String::new()),
            1 => nasty_string(40),
            1 => "[A-Za-z0-9_-]{32}",
        ]
    }

    pub(crate) fn search_request() -> impl Strategy<Value = pb::SearchRequest> {
        let limit = prop_oneof![
            4 => 0u32..=(MAX_SEARCH_LIMIT as u32 + 2),
            1 => any::<u32>(),
        ];
        (
            query_text(),
            prop::option::of(filter()),
            enum_value(5),
            limit,
            cursor(),
            list(facet(), MAX_FACET_FIELDS + 1),
            prop_oneof![3 => Just(String::new()), 1 => id()],
            prop_oneof![3 => Just(String::new()), 1 => text()],
            prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
            enum_value(3),
        )
            .prop_map(
                |(
                    query,
                    filter,
                    sort,
                    limit,
                    cursor,
                    facets,
                    similar_to_id,
                    similar_to_text,
                    track_total_hits_up_to,
                    view,
                )| {
                    pb::SearchRequest {
                        query,
                        filter,
                        sort,
                        limit,
                        cursor,
                        facets,
                        similar_to_id,
                        similar_to_text,
                        track_total_hits_up_to,
                        view,
                    }
                },
            )
    }

    /// The paths a rejected item may name.
    fn is_item_field(field: &str) -> bool {
        crate::domain::FIELD_NAMES.contains(&field)
            || field == "attributes"
            || field
                .strip_prefix("tags[")
                .is_some_and(|rest| rest.ends_with(']'))
            || field.starts_with("attributes.")
    }

    /// Every documented rule of a stored item.
    fn check_item(item: &Feedback) -> Result<(), TestCaseError> {
        let id = item.id.as_str();
        prop_assert!(!id.is_empty() && id.len() <= MAX_ID_BYTES);
        prop_assert!(id.bytes().all(|b| b.is_ascii_graphic()), "{id:?}");
        let text = &item.text;
        prop_assert!(text.len() <= MAX_TEXT_BYTES);
        prop_assert!(!text.contains(['\0', '\u{fffe}', '\u{ffff}']), "{text:?}");
        prop_assert!(!normalize_text(text).trim().is_empty(), "{text:?}");
        for name in [&item.product, &item.customer_id] {
            prop_assert!(name.len() <= MAX_NAME_BYTES && name.trim() == name.as_str());
            prop_assert!(!name.chars().any(char::is_control), "{name:?}");
        }
        prop_assert!(item.language.len() <= MAX_LANGUAGE_BYTES);
        prop_assert!(item
            .language
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
        prop_assert!((MIN_CREATED_AT_MICROS..MAX_CREATED_AT_MICROS).contains(&item.created_at.0));
        let scores = item.scores;
        for (score, min, max) in [
            (scores.nps, 0, 10),
            (scores.csat, 1, 5),
            (scores.ces, 1, 7),
            (scores.rating, 1, 5),
        ] {
            prop_assert!(score.is_none_or(|s| (min..=max).contains(&s)));
        }
        prop_assert!(item.tags.len() <= MAX_TAGS);
        for (i, tag) in item.tags.iter().enumerate() {
            prop_assert!(!tag.is_empty() && tag.len() <= MAX_TAG_BYTES && tag.trim() == tag);
            prop_assert!(!tag.chars().any(char::is_control), "{tag:?}");
            prop_assert!(!item.tags[..i].contains(tag), "duplicate {tag:?}");
        }
        prop_assert!(item.attributes.len() <= MAX_ATTRIBUTES);
        for (key, value) in &item.attributes {
            prop_assert!(crate::domain::is_attribute_key(key), "{key:?}");
            prop_assert!(value.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
            prop_assert!(!value.chars().any(char::is_control), "{value:?}");
        }
        Ok(())
    }

    /// Every documented rule of a search the server runs.
    fn check_query(raw: &pb::SearchRequest, query: &SearchQuery) -> Result<(), TestCaseError> {
        prop_assert!((1..=MAX_SEARCH_LIMIT).contains(&query.limit));
        prop_assert!(query.facets.len() <= MAX_FACET_FIELDS);
        prop_assert!(!(query.similar_to.is_some() && query.cursor.is_some()));
        prop_assert!(query.cursor.as_ref().is_none_or(|c| !c.is_empty()));
        if raw.sort == 0 {
            let expected = if raw.query.trim().is_empty() {
                SortOrder::Newest
            } else {
                SortOrder::Relevance
            };
            prop_assert_eq!(query.sort, expected);
        }
        check_filter(&query.filter)
    }

    pub(crate) fn check_filter(filter: &SearchFilter) -> Result<(), TestCaseError> {
        let lens = [
            filter.channels.len(),
            filter.journey_stages.len(),
            filter.products.len(),
            filter.languages.len(),
            filter.tags.len(),
            filter.attributes.len(),
            filter.sentiments.len(),
            filter.themes.len(),
            filter.theme_sentiments.len(),
        ];
        prop_assert!(lens.iter().all(|&len| len <= MAX_FILTER_VALUES), "{lens:?}");
        for key in filter.attributes.keys() {
            prop_assert!(
                crate::domain::is_attribute_key(key),
                "filter on attribute key {key:?}, which no item can have"
            );
        }
        for theme in filter
            .themes
            .iter()
            .chain(filter.theme_sentiments.iter().map(|(theme, _)| theme))
        {
            prop_assert!(check_theme_id("theme", theme).is_ok(), "{theme:?}");
        }
        prop_assert!(filter
            .theme_sentiments
            .iter()
            .all(|(_, labels)| !labels.is_empty() && labels.len() <= MAX_FILTER_VALUES));
        for range in [filter.nps, filter.csat, filter.ces, filter.rating] {
            if let (Some(min), Some(max)) = (range.min, range.max) {
                prop_assert!(min <= max, "{range:?}");
            }
        }
        let score = filter.sentiment_score;
        for v in [score.min, score.max].into_iter().flatten() {
            prop_assert!((-1.0..=1.0).contains(&v), "{score:?}");
        }
        if let (Some(min), Some(max)) = (score.min, score.max) {
            prop_assert!(min <= max, "reversed {score:?} accepted");
        }
        for at in [filter.created_after, filter.created_before]
            .into_iter()
            .flatten()
        {
            prop_assert!((MIN_CREATED_AT_MICROS..=MAX_CREATED_AT_MICROS).contains(&at.0));
        }
        if let (Some(after), Some(before)) = (filter.created_after, filter.created_before) {
            prop_assert!(
                after <= before,
                "reversed time range {after:?}..{before:?} accepted"
            );
        }
        Ok(())
    }

    /// A search refused by the index layer must be for the client's input.
    fn check_search(query: &SearchQuery) -> Result<(), TestCaseError> {
        let index = crate::index::fuzz_fixture();
        match index.search(query) {
            Ok(page) => {
                if let Some(cursor) = page.next_cursor {
                    let next = SearchQuery {
                        cursor: Some(cursor),
                        ..query.clone()
                    };
                    let answer = index.search(&next);
                    prop_assert!(answer.is_ok(), "next page: {:?}", answer.err());
                }
            }
            Err(
                IndexError::InvalidQuery { .. }
                | IndexError::InvalidCursor(_)
                | IndexError::InvalidFacet(_),
            ) => {}
            Err(other) => prop_assert!(false, "{query:?}: {other}"),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn fuzz_items_convert_or_are_rejected_with_their_field(raw in feedback()) {
            let now = UnixMicros(1_700_000_000_000_000);
            let draft = match incoming_item(raw.clone()) {
                Ok(draft) => draft,
                Err(rejection) => {
                    prop_assert!(
                        ["channel", "journey_stage", "created_at"].contains(&rejection.field.as_str()),
                        "{rejection}"
                    );
                    prop_assert!(!rejection.reason.is_empty());
                    return Ok(());
                }
            };
            let item = match draft.validate(now) {
                Ok(item) => item,
                Err(rejection) => {
                    prop_assert!(is_item_field(&rejection.field), "{rejection}");
                    prop_assert!(!rejection.reason.is_empty());
                    return Ok(());
                }
            };
            check_item(&item)?;
            // What the server answers for the item, sent again, is the item.
            let stored = StoredFeedback {
                feedback: item.clone(),
                ingested_at: now,
                seq: 1,
                analysis: AnalysisState::Pending,
            };
            let (_, fields) = crate::index::schema::build_schema();
            crate::index::schema::to_document(&fields, &stored);
            let again = incoming_item(pb::Feedback::from(stored))
                .map_err(|r| TestCaseError::fail(r.to_string()))?
                .validate(now)
                .map_err(|r| TestCaseError::fail(r.to_string()))?;
            prop_assert_eq!(again, item);
        }

        #[test]
        fn fuzz_search_requests_convert_or_name_their_field(raw in search_request()) {
            match SearchQuery::try_from(raw.clone()) {
                Ok(query) => {
                    check_query(&raw, &query)?;
                    if query.similar_to.is_none() {
                        check_search(&query)?;
                    }
                }
                Err(Error::InvalidArgument { field, reason }) => {
                    prop_assert!(!field.is_empty() && !reason.is_empty());
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }

        #[test]
        fn fuzz_ids_convert_or_name_the_bad_one(raw in prop::collection::vec(id(), 0..6)) {
            match ids(raw.clone()) {
                Ok(ids) => {
                    prop_assert_eq!(ids.len(), raw.len());
                    for (id, raw) in ids.iter().zip(&raw) {
                        prop_assert_eq!(id.as_str(), raw.as_str());
                    }
                }
                Err(Error::InvalidArgument { field, .. }) => {
                    let i: usize = field
                        .strip_prefix("ids[")
                        .and_then(|rest| rest.strip_suffix(']'))
                        .and_then(|i| i.parse().ok())
                        .ok_or_else(|| TestCaseError::fail(field.clone()))?;
                    prop_assert!(FeedbackId::parse(&raw[i]).is_err());
                    prop_assert!(raw[..i].iter().all(|id| FeedbackId::parse(id).is_ok()));
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }

        #[test]
        fn fuzz_timestamps_convert_exactly_or_are_refused(ts in timestamp()) {
            match timestamp_to_micros(&ts) {
                Ok(at) => {
                    prop_assert!((0..1_000_000_000).contains(&ts.nanos));
                    let back = micros_to_timestamp(at);
                    prop_assert_eq!(back.seconds, ts.seconds);
                    prop_assert_eq!(back.nanos, ts.nanos / 1_000 * 1_000);
                    let clamped = clamp_created(at);
                    prop_assert!((MIN_CREATED_AT_MICROS..=MAX_CREATED_AT_MICROS).contains(&clamped.0));
                }
                Err(reason) => prop_assert!(!reason.is_empty()),
            }
        }

        #[test]
        fn fuzz_discovery_requests_convert_or_name_their_field(
            query in query_text(),
            filter in prop::option::of(filter()),
        ) {
            let raw = pb::DiscoverThemesRequest { query, filter, ..Default::default() };
            match discovery_request(raw) {
                Ok(query) => check_filter(&query.filter)?,
                Err(Error::InvalidArgument { field, reason }) => {
                    prop_assert!(field.starts_with("filter.") && !reason.is_empty(), "{field}");
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }
    }
}
