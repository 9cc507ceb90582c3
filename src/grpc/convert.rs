//! Wire <-> domain conversion. Incoming messages are validated here (unknown
//! enum values, timestamps, request-level limits) with the field path in the
//! error; item rules live in `domain::FeedbackDraft::validate`.

use prost_types::Timestamp;

use super::pb;
use crate::domain::limits::{
    DEFAULT_SEARCH_LIMIT, MAX_CREATED_AT_MICROS, MAX_FACET_FIELDS, MAX_FILTER_VALUES,
    MAX_SEARCH_LIMIT, MIN_CREATED_AT_MICROS,
};
use crate::domain::{
    check_theme_id, Analysis, AnalysisState, Channel, FacetCounts, FeedbackDraft, FeedbackId,
    IntRange, JourneyStage, Rejection, ScoreRange, SearchFilter, SearchHit, SearchPage,
    SearchQuery, Sentiment, SentimentLabel, SimilarTo, SortOrder, StoredFeedback, Taxonomy, Theme,
    ThemeDraft, ThemeMention, UnixMicros,
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
            id: item.id.to_string(),
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
                    pb::item_result::Outcome::Id(id.to_string())
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
    let channels = enum_values("filter.channels", &raw.channels, channel_from_pb)?;
    let journey_stages = enum_values("filter.journey_stages", &raw.journey_stages, stage_from_pb)?;
    // Items exist only in [MIN_CREATED_AT, MAX_CREATED_AT): a bound beyond
    // means the same as the nearest end (and keeps every later computation
    // on times, in the index and in reports, far from overflow).
    let created = |field: &str, ts: Option<Timestamp>| {
        ts.as_ref()
            .map(|ts| timestamp_to_micros(ts).map(clamp_created))
            .transpose()
            .map_err(|r| Error::invalid(field, r))
    };
    Ok(SearchFilter {
        channels,
        journey_stages,
        // Stored values are trimmed on ingest; filter values are compared the same way.
        products: raw.products.iter().map(|p| p.trim().to_string()).collect(),
        languages: raw.languages.iter().map(|l| l.trim().to_string()).collect(),
        tags: raw.tags.iter().map(|t| t.trim().to_string()).collect(),
        attributes: raw.attributes.into_iter().collect(),
        customer_id: Some(raw.customer_id.trim().to_string()).filter(|c| !c.is_empty()),
        created_after: created("filter.created_after", raw.created_after)?,
        created_before: created("filter.created_before", raw.created_before)?,
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
        })
    }
}

fn hit_to_pb(hit: SearchHit) -> pb::SearchHit {
    pb::SearchHit {
        item: Some(hit.item.into()),
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
}
