//! Reports: the slice's periods are checked, counted in one index pass,
//! built into scores and tables (`crate::report`), and the representative
//! verbatims read from the store.

use std::collections::HashSet;

use super::{run_blocking, Engine, RequestContext};
use crate::domain::limits::{
    EMERGING_MIN_MENTIONS, MAX_CREATED_AT_MICROS, MAX_DISCOVERY_SENTENCES, MAX_REPORT_BUCKETS,
    MIN_CREATED_AT_MICROS, REPORT_VERBATIMS_PER_GROUP, REPORT_VERBATIM_CELLS,
    REPORT_VERBATIM_THEMES,
};
use crate::domain::{
    AnalysisState, BucketSize, CandidateCount, Channel, JourneyStage, Period, Report,
    ReportRequest, SearchFilter, SearchQuery, SegmentField, SliceCounts, SortOrder, UnixMicros,
    Verbatim, VerbatimGroup, SENTIMENT_ORDER,
};
use crate::error::{Error, Result};
use crate::index::{ReportPlan, SearchIndex};
use crate::report::buckets::{self, MICROS_PER_DAY};
use crate::store::Store;
use crate::themes::discover;

/// Candidates looked at per verbatim group (the strongest-sentiment ones).
const VERBATIM_CANDIDATES: usize = 40;

impl Engine {
    /// A voice-of-customer report over the items matching a query and filter.
    pub async fn report(&self, ctx: &RequestContext, request: ReportRequest) -> Result<Report> {
        let mut query = request.query;
        query.taxonomy_version = self.themes.version();
        let now = UnixMicros::now();
        let plan = plan(&query, &request.segment, request.comparison, now)?;
        if request.include_candidates && self.analysis.is_none() {
            // As DiscoverThemes: candidates are the sentences no theme
            // covers, which the theme model (compiled only with the
            // analysis on) decides.
            return Err(crate::nlp::NlpError::Disabled.into());
        }
        // A bucket that cannot fit is refused before the pass (an open start
        // is known only after it).
        if let (Some(bucket), Some(_)) = (request.bucket, query.filter.created_after) {
            check_buckets(bucket, &plan.current)?;
        }
        self.removals_applied(ctx).await?;
        let index = self.index.clone();
        let store = self.store.clone();
        let bucket = request.bucket;
        let candidates_model = request.include_candidates.then(|| self.themes.current());
        let slot = self.reads.enter(ctx).await?;
        run_blocking(ctx, move || {
            let _slot = slot;
            let mut taxonomy = store.taxonomy()?;
            taxonomy.version = query.taxonomy_version;
            let counts = index.report_counts(&plan)?;
            let period = reported_period(&query.filter, &counts, now);
            let bucket = bucket.unwrap_or_else(|| buckets::auto_size(&period));
            let trend_buckets = check_buckets(bucket, &period)?;
            let comparison = if plan.comparison.is_empty() {
                Period {
                    start: period.start,
                    end: period.start,
                }
            } else {
                plan.comparison
            };
            let mut report = crate::report::build(
                &counts,
                crate::report::ReportShape {
                    period,
                    comparison,
                    bucket,
                    buckets: trend_buckets,
                    segment: plan.segment.clone(),
                    taxonomy: &taxonomy,
                },
            );
            report.verbatims = pick_verbatims(&index, &store, &plan, &request.segment, &report)?;
            if let Some(model) = candidates_model {
                let candidates = candidate_counts(&index, &store, &plan, &model)?;
                report.emerging = crate::report::emerging(&counts, &report.themes, &candidates);
            }
            Ok(report)
        })
        .await
    }
}

fn check_buckets(bucket: BucketSize, period: &Period) -> Result<Vec<Period>> {
    buckets::buckets(bucket, period, MAX_REPORT_BUCKETS).ok_or_else(|| {
        Error::invalid(
            "bucket",
            format!(
                "{} buckets over this period would be {} buckets; at most {MAX_REPORT_BUCKETS} are allowed: choose a wider bucket or a shorter period",
                bucket.as_str(),
                buckets::count(bucket, period)
            ),
        )
    })
}

/// The pass's periods. The current period is the filter's time range (an
/// open start reaches the first possible time, an open end is now); the
/// comparison is the request's, else the period of equal length just before
/// (none when the range has no start: all time has no previous period).
/// Bounds arrive clamped to the range items can have, so no arithmetic here
/// can overflow.
fn plan(
    query: &SearchQuery,
    segment: &Option<SegmentField>,
    comparison: Option<Period>,
    now: UnixMicros,
) -> Result<ReportPlan> {
    let filter = &query.filter;
    let current = Period {
        start: filter
            .created_after
            .unwrap_or(UnixMicros(MIN_CREATED_AT_MICROS)),
        end: filter.created_before.unwrap_or(UnixMicros(
            now.0.clamp(MIN_CREATED_AT_MICROS, MAX_CREATED_AT_MICROS),
        )),
    };
    if current.is_empty() {
        // Name the bound the client sent: a missing one stands for the
        // earliest time an item may have, or now.
        return Err(match (filter.created_after, filter.created_before) {
            // Both bounds past one end of the dates items can have clamp to
            // that end (found by probing: 2200 to 2300 was refused as if
            // the end came first).
            (Some(after), Some(before))
                if (after.0 >= MAX_CREATED_AT_MICROS && before.0 >= MAX_CREATED_AT_MICROS)
                    || (after.0 <= MIN_CREATED_AT_MICROS && before.0 <= MIN_CREATED_AT_MICROS) =>
            {
                Error::invalid(
                    "filter.created_after",
                    "the report's period lies outside the dates items can have (1970-01-01 to 2200-01-01)",
                )
            }
            (Some(_), Some(_)) => Error::invalid(
                "filter.created_before",
                "must be later than filter.created_after",
            ),
            (None, _) => Error::invalid(
                "filter.created_before",
                "must be after 1970-01-01T00:00:00Z, the earliest time an item may have",
            ),
            (Some(_), None) => Error::invalid(
                "filter.created_after",
                "must be earlier than now (a period without created_before ends now)",
            ),
        });
    }
    let comparison = match comparison {
        Some(comparison) => {
            if comparison.is_empty() {
                return Err(Error::invalid(
                    "compare_before",
                    "must be later than compare_after",
                ));
            }
            if comparison.overlaps(&current) {
                return Err(Error::invalid(
                    "compare_after",
                    "the comparison period overlaps the report's period (filter.created_after .. filter.created_before; an open side reaches all time)",
                ));
            }
            comparison
        }
        None => match filter.created_after {
            Some(start) => {
                let length = current.end.0 - start.0;
                Period {
                    start: UnixMicros((start.0 - length).max(MIN_CREATED_AT_MICROS)),
                    end: start,
                }
            }
            None => Period {
                start: current.start,
                end: current.start,
            },
        },
    };
    Ok(ReportPlan {
        query: query.clone(),
        current,
        comparison,
        segment: segment.as_ref().map(SegmentField::name),
    })
}

/// The period the report states: the filter's bounds, an open end is now,
/// an open start the first item's UTC day.
fn reported_period(filter: &SearchFilter, counts: &SliceCounts, now: UnixMicros) -> Period {
    let floor_day = |at: i64| at.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    let start = match (filter.created_after, counts.first_at) {
        (Some(start), _) => start.0,
        (None, Some(first)) => floor_day(first),
        (None, None) => {
            return Period {
                start: filter.created_before.unwrap_or(now),
                end: filter.created_before.unwrap_or(now),
            }
        }
    };
    let end = match (filter.created_before, filter.created_after, counts.last_at) {
        (Some(end), _, _) => end.0,
        (None, Some(_), _) => now.0,
        (None, None, Some(last)) => (floor_day(last) + MICROS_PER_DAY).min(now.0.max(last + 1)),
        (None, None, None) => start,
    };
    Period {
        start: UnixMicros(start),
        end: UnixMicros(end.max(start)),
    }
}

/// Discovery over the uncovered sentences of up to half the discovery limit
/// of each period's newest items, and each candidate's items per period
/// (over the items discovery looked at).
fn candidate_counts(
    index: &SearchIndex,
    store: &Store,
    plan: &ReportPlan,
    model: &crate::themes::ThemeModel,
) -> Result<Vec<CandidateCount>> {
    if plan.comparison.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    let mut period_of = Vec::new();
    for (which, period) in [(0u8, plan.current), (1u8, plan.comparison)] {
        let mut query = plan.query.clone();
        query.filter.created_after = Some(period.start);
        query.filter.created_before = Some(period.end);
        let found = index.matching_ids(&query, MAX_DISCOVERY_SENTENCES / 2)?;
        period_of.extend(std::iter::repeat_n(which, found.len()));
        ids.extend(found);
    }
    let items = store.get_many(&ids)?;
    let units = store.units(&ids)?;
    let uncovered = super::themes::uncovered_sentences(model, &items, &units);
    let mut looked_at = [0u64; 2];
    for (position, looked) in uncovered.looked_at.iter().enumerate() {
        if *looked {
            looked_at[period_of[position] as usize] += 1;
        }
    }
    let sentences: Vec<discover::Sentence<'_>> = uncovered
        .texts
        .iter()
        .zip(&uncovered.embeddings)
        .zip(uncovered.sentiments.iter().zip(&uncovered.owners))
        .map(|((text, embedding), (p, &item))| discover::Sentence {
            text,
            embedding,
            sentiment: p[2] - p[0],
            item,
        })
        .collect();
    let found = discover::discover(
        &sentences,
        &discover::Params {
            min_size: EMERGING_MIN_MENTIONS as usize,
            ..Default::default()
        },
    );
    Ok(found
        .candidates
        .into_iter()
        .map(|c| {
            let mut items = [HashSet::new(), HashSet::new()];
            for &member in &c.members {
                let owner = uncovered.owners[member] as usize;
                items[period_of[owner] as usize].insert(owner);
            }
            CandidateCount {
                name: c.name,
                representatives: c
                    .representatives
                    .iter()
                    .map(|&i| uncovered.texts[i].clone())
                    .collect(),
                mentions: items[0].len() as u64,
                looked_at: looked_at[0],
                previous_mentions: items[1].len() as u64,
                previous_looked_at: looked_at[1],
            }
        })
        .collect())
}

/// The filter narrowed to one segment value (None for an item without one).
fn with_segment(filter: &SearchFilter, field: &SegmentField, value: &str) -> Option<SearchFilter> {
    if value.is_empty() {
        return None;
    }
    let mut filter = filter.clone();
    match field {
        SegmentField::Channel => filter.channels = vec![Channel::parse(value)?],
        SegmentField::JourneyStage => filter.journey_stages = vec![JourneyStage::parse(value)?],
        SegmentField::Product => filter.products = vec![value.to_string()],
        SegmentField::Language => filter.languages = vec![value.to_string()],
        SegmentField::Attribute(key) => {
            filter.attributes.insert(key.clone(), value.to_string());
        }
    }
    Some(filter)
}

/// Representative verbatims: for the top themes of the table and the most
/// significant theme x segment cells, the comments where the theme is
/// carried most clearly (theme score, then the strength of its sentiment,
/// then a readable length), one per customer across the whole report.
fn pick_verbatims(
    index: &SearchIndex,
    store: &Store,
    plan: &ReportPlan,
    segment: &Option<SegmentField>,
    report: &Report,
) -> Result<Vec<VerbatimGroup>> {
    let mut base = plan.query.filter.clone();
    base.created_after = Some(plan.current.start);
    base.created_before = Some(plan.current.end);
    let mut wanted: Vec<(String, String, SearchFilter)> = report
        .themes
        .iter()
        .filter(|t| t.mentions > 0)
        .take(REPORT_VERBATIM_THEMES)
        .map(|t| (t.theme_id.clone(), String::new(), base.clone()))
        .collect();
    if let (Some(matrix), Some(field)) = (&report.matrix, segment) {
        let mut cells: Vec<_> = matrix
            .cells
            .iter()
            .filter(|c| c.significant)
            .filter_map(|c| Some((c, with_segment(&base, field, &c.segment_value)?)))
            .collect();
        cells.sort_by(|a, b| a.0.p_value.total_cmp(&b.0.p_value));
        for (cell, filter) in cells.into_iter().take(REPORT_VERBATIM_CELLS) {
            wanted.push((cell.theme_id.clone(), cell.segment_value.clone(), filter));
        }
    }
    let negative = |theme_id: &str| {
        report
            .themes
            .iter()
            .find(|t| t.theme_id == theme_id)
            .and_then(|t| t.net_sentiment.estimate)
            .is_none_or(|e| e.value <= 0.0)
    };
    let mut customers = HashSet::new();
    let mut groups = Vec::new();
    for (theme_id, segment_value, mut filter) in wanted {
        // AND the theme with the slice's own theme filters.
        filter
            .theme_sentiments
            .push((theme_id.clone(), SENTIMENT_ORDER.to_vec()));
        let query = SearchQuery {
            filter,
            sort: if negative(&theme_id) {
                SortOrder::MostNegative
            } else {
                SortOrder::MostPositive
            },
            limit: VERBATIM_CANDIDATES,
            cursor: None,
            facets: Vec::new(),
            similar_to: None,
            ..plan.query.clone()
        };
        let page = index.search(&query)?;
        let ids: Vec<_> = page.hits.into_iter().map(|(id, _)| id).collect();
        let mut candidates: Vec<(f32, Verbatim)> = store
            .get_many(&ids)?
            .into_iter()
            .flatten()
            .filter_map(|stored| {
                let AnalysisState::Done(analysis) = &stored.analysis else {
                    return None;
                };
                let mention = analysis
                    .themes
                    .iter()
                    .filter(|m| m.theme_id == theme_id || m.parent_id == theme_id)
                    .max_by(|a, b| a.score.total_cmp(&b.score))?;
                let item = &stored.feedback;
                let carried: usize = mention.spans.iter().map(|s| s.end - s.start).sum();
                let chars = item.text.chars().count();
                let informative = mention.score
                    + 0.5 * mention.sentiment.score.abs()
                    + 0.3 * (carried.min(160) as f32 / 160.0)
                    - if chars > 800 { 0.2 } else { 0.0 };
                Some((
                    informative,
                    Verbatim {
                        item_id: item.id.as_str().to_string(),
                        customer_id: item.customer_id.clone(),
                        created_at: item.created_at,
                        channel: item.channel.as_str().to_string(),
                        text: item.text.clone(),
                        highlights: mention.spans.clone(),
                        sentiment: mention.sentiment.label.as_str().to_string(),
                        nps: item.scores.nps.map(i32::from),
                    },
                ))
            })
            .collect();
        candidates.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.item_id.cmp(&b.1.item_id))
        });
        let mut verbatims = Vec::new();
        for (_, verbatim) in candidates {
            if verbatims.len() == REPORT_VERBATIMS_PER_GROUP {
                break;
            }
            let customer = if verbatim.customer_id.is_empty() {
                format!("item:{}", verbatim.item_id)
            } else {
                verbatim.customer_id.clone()
            };
            if customers.insert(customer) {
                verbatims.push(verbatim);
            }
        }
        if !verbatims.is_empty() {
            groups.push(VerbatimGroup {
                theme_id,
                segment_value,
                verbatims,
            });
        }
    }
    Ok(groups)
}
