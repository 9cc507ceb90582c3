//! Report messages <-> domain: the request (checked, with field paths) and
//! the report both ways (the CLI renders what the server answered).

use super::convert::{
    channel_from_pb, channel_to_pb, clamp_created, micros_to_timestamp, sentiment_label_from_pb,
    timestamp_to_micros,
};
use super::pb;
use crate::domain::{
    BucketSize, Change, EmergingTheme, Interval, MatrixCell, Period, Report, ReportRequest, Score,
    SearchQuery, SegmentColumn, SegmentField, SegmentMatrix, Span, ThemeRow, ThemeShare,
    TrendBucket, UnixMicros, Verbatim, VerbatimGroup,
};
use crate::error::Error;

impl TryFrom<pb::ReportRequest> for ReportRequest {
    type Error = Error;

    fn try_from(raw: pb::ReportRequest) -> Result<Self, Error> {
        let query = SearchQuery::try_from(pb::SearchRequest {
            query: raw.query,
            filter: raw.filter,
            ..Default::default()
        })?;
        let bucket = match pb::ReportBucket::try_from(raw.bucket) {
            Ok(pb::ReportBucket::Auto) => None,
            Ok(pb::ReportBucket::Day) => Some(BucketSize::Day),
            Ok(pb::ReportBucket::Week) => Some(BucketSize::Week),
            Ok(pb::ReportBucket::Month) => Some(BucketSize::Month),
            Ok(pb::ReportBucket::Year) => Some(BucketSize::Year),
            Err(_) => {
                return Err(Error::invalid(
                    "bucket",
                    format!("unknown enum value {}", raw.bucket),
                ))
            }
        };
        let segment = match raw.segment.as_str() {
            "" => None,
            name => Some(SegmentField::parse(name).map_err(|r| Error::invalid("segment", r))?),
        };
        let time = |field: &str, ts: &Option<prost_types::Timestamp>| {
            ts.as_ref()
                .map(|ts| {
                    timestamp_to_micros(ts)
                        .map(clamp_created)
                        .map_err(|r| Error::invalid(field, r))
                })
                .transpose()
        };
        let comparison = match (
            time("compare_after", &raw.compare_after)?,
            time("compare_before", &raw.compare_before)?,
        ) {
            (None, None) => None,
            (Some(start), Some(end)) => Some(Period { start, end }),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "compare_after",
                    "give both compare_after and compare_before, or neither",
                ))
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    "compare_before",
                    "give both compare_after and compare_before, or neither",
                ))
            }
        };
        Ok(ReportRequest {
            query,
            bucket,
            segment,
            comparison,
            include_candidates: raw.include_candidates,
        })
    }
}

fn bucket_to_pb(bucket: BucketSize) -> pb::ReportBucket {
    match bucket {
        BucketSize::Day => pb::ReportBucket::Day,
        BucketSize::Week => pb::ReportBucket::Week,
        BucketSize::Month => pb::ReportBucket::Month,
        BucketSize::Year => pb::ReportBucket::Year,
    }
}

fn period_to_pb(period: Period) -> pb::Period {
    pb::Period {
        start: Some(micros_to_timestamp(period.start)),
        end: Some(micros_to_timestamp(period.end)),
    }
}

fn interval_to_pb(i: Interval) -> pb::Interval {
    pb::Interval {
        value: i.value,
        ci_low: i.low,
        ci_high: i.high,
    }
}

fn score_to_pb(s: Score) -> pb::ReportScore {
    pb::ReportScore {
        value: s.estimate.map(|e| e.value),
        ci_low: s.estimate.map(|e| e.low),
        ci_high: s.estimate.map(|e| e.high),
        n: s.n,
        previous_value: s.previous,
        previous_n: s.previous_n,
        change: s.change.map(|c| pb::ScoreChange {
            delta: c.delta,
            ci_low: c.low,
            ci_high: c.high,
            p_value: c.p_value,
            significant: c.significant,
        }),
    }
}

fn counts_to_pb(c: [u64; 4]) -> pb::SentimentCounts {
    pb::SentimentCounts {
        negative: c[0],
        neutral: c[1],
        positive: c[2],
        mixed: c[3],
    }
}

fn label_to_pb(label: &str) -> pb::SentimentLabel {
    match label {
        "negative" => pb::SentimentLabel::Negative,
        "neutral" => pb::SentimentLabel::Neutral,
        "positive" => pb::SentimentLabel::Positive,
        "mixed" => pb::SentimentLabel::Mixed,
        _ => pb::SentimentLabel::Unspecified,
    }
}

impl From<Report> for pb::ReportResponse {
    fn from(r: Report) -> Self {
        pb::ReportResponse {
            period: Some(period_to_pb(r.period)),
            comparison: Some(period_to_pb(r.comparison)),
            bucket: bucket_to_pb(r.bucket) as i32,
            taxonomy_version: r.taxonomy_version,
            retag_pending: r.retag_pending,
            items: r.items,
            previous_items: r.previous_items,
            analysed: r.analysed,
            sentiment: Some(counts_to_pb(r.sentiment)),
            net_sentiment: Some(score_to_pb(r.net_sentiment)),
            nps: Some(score_to_pb(r.nps)),
            csat: Some(score_to_pb(r.csat)),
            ces: Some(score_to_pb(r.ces)),
            themes: r
                .themes
                .into_iter()
                .map(|t| pb::ThemeRow {
                    theme_id: t.theme_id,
                    name: t.name,
                    parent_id: t.parent_id,
                    mentions: t.mentions,
                    share: t.share,
                    previous_mentions: t.previous_mentions,
                    previous_share: t.previous_share,
                    sentiment: Some(counts_to_pb(t.sentiment)),
                    net_sentiment: Some(score_to_pb(t.net_sentiment)),
                    nps: Some(score_to_pb(t.nps)),
                    nps_impact: t.nps_impact.map(interval_to_pb),
                    csat: Some(score_to_pb(t.csat)),
                    csat_impact: t.csat_impact.map(interval_to_pb),
                })
                .collect(),
            matrix: r.matrix.map(|m| pb::SegmentMatrix {
                field: m.field,
                columns: m
                    .columns
                    .into_iter()
                    .map(|c| pb::SegmentColumn {
                        value: c.value,
                        items: c.items,
                        net_sentiment: c.net_sentiment,
                    })
                    .collect(),
                cells: m
                    .cells
                    .into_iter()
                    .map(|c| pb::MatrixCell {
                        theme_id: c.theme_id,
                        segment_value: c.segment_value,
                        mentions: c.mentions,
                        share: c.share,
                        net_sentiment: c.net_sentiment,
                        p_value: c.p_value,
                        significant: c.significant,
                        direction: c.direction,
                    })
                    .collect(),
            }),
            trend_themes: r.trend_themes,
            trends: r
                .trends
                .into_iter()
                .map(|b| pb::TrendBucket {
                    period: Some(period_to_pb(Period {
                        start: b.start,
                        end: b.end,
                    })),
                    items: b.items,
                    net_sentiment: Some(score_to_pb(b.net_sentiment)),
                    nps: Some(score_to_pb(b.nps)),
                    themes: b
                        .themes
                        .into_iter()
                        .map(|s| pb::ThemeShare {
                            theme_id: s.theme_id,
                            mentions: s.mentions,
                            share: s.share,
                        })
                        .collect(),
                })
                .collect(),
            emerging: r
                .emerging
                .into_iter()
                .map(|e| pb::EmergingTheme {
                    theme_id: e.theme_id,
                    name: e.name,
                    mentions: e.mentions,
                    share: e.share,
                    previous_mentions: e.previous_mentions,
                    previous_share: e.previous_share,
                    p_value: e.p_value,
                    adjusted_p_value: e.adjusted_p_value,
                    candidate: e.candidate,
                    representatives: e.representatives,
                })
                .collect(),
            verbatims: r
                .verbatims
                .into_iter()
                .map(|g| pb::VerbatimGroup {
                    theme_id: g.theme_id,
                    segment_value: g.segment_value,
                    verbatims: g
                        .verbatims
                        .into_iter()
                        .map(|v| pb::Verbatim {
                            item_id: v.item_id,
                            customer_id: v.customer_id,
                            created_at: Some(micros_to_timestamp(v.created_at)),
                            channel: crate::domain::Channel::parse(&v.channel)
                                .map_or(pb::Channel::Unspecified, channel_to_pb)
                                as i32,
                            text: v.text,
                            highlights: v
                                .highlights
                                .iter()
                                .map(|s| pb::Span {
                                    start: s.start as u32,
                                    end: s.end as u32,
                                })
                                .collect(),
                            sentiment: label_to_pb(&v.sentiment) as i32,
                            nps: v.nps,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

// ---- The other way, for clients (the CLI renders the server's answer). ----

fn period_from_pb(p: Option<pb::Period>) -> Period {
    let at = |ts: Option<prost_types::Timestamp>| {
        ts.and_then(|ts| timestamp_to_micros(&ts).ok())
            .unwrap_or(UnixMicros(0))
    };
    let p = p.unwrap_or_default();
    Period {
        start: at(p.start),
        end: at(p.end),
    }
}

fn interval_from_pb(i: pb::Interval) -> Interval {
    Interval {
        value: i.value,
        low: i.ci_low,
        high: i.ci_high,
    }
}

fn score_from_pb(s: Option<pb::ReportScore>) -> Score {
    let s = s.unwrap_or_default();
    Score {
        n: s.n,
        estimate: match (s.value, s.ci_low, s.ci_high) {
            (Some(value), Some(low), Some(high)) => Some(Interval { value, low, high }),
            _ => None,
        },
        previous_n: s.previous_n,
        previous: s.previous_value,
        change: s.change.map(|c| Change {
            delta: c.delta,
            low: c.ci_low,
            high: c.ci_high,
            p_value: c.p_value,
            significant: c.significant,
        }),
    }
}

fn counts_from_pb(c: Option<pb::SentimentCounts>) -> [u64; 4] {
    let c = c.unwrap_or_default();
    [c.negative, c.neutral, c.positive, c.mixed]
}

fn label_name(value: i32) -> String {
    match sentiment_label_from_pb(value) {
        Ok(Some(label)) => label.as_str().to_string(),
        _ => String::new(),
    }
}

/// The report a server answered, as domain values (for rendering).
pub fn report_from_pb(r: pb::ReportResponse) -> Report {
    Report {
        period: period_from_pb(r.period),
        comparison: period_from_pb(r.comparison),
        bucket: match pb::ReportBucket::try_from(r.bucket) {
            Ok(pb::ReportBucket::Day) => BucketSize::Day,
            Ok(pb::ReportBucket::Month) => BucketSize::Month,
            Ok(pb::ReportBucket::Year) => BucketSize::Year,
            _ => BucketSize::Week,
        },
        taxonomy_version: r.taxonomy_version,
        retag_pending: r.retag_pending,
        items: r.items,
        previous_items: r.previous_items,
        analysed: r.analysed,
        sentiment: counts_from_pb(r.sentiment),
        net_sentiment: score_from_pb(r.net_sentiment),
        nps: score_from_pb(r.nps),
        csat: score_from_pb(r.csat),
        ces: score_from_pb(r.ces),
        themes: r
            .themes
            .into_iter()
            .map(|t| ThemeRow {
                theme_id: t.theme_id,
                name: t.name,
                parent_id: t.parent_id,
                mentions: t.mentions,
                share: t.share,
                previous_mentions: t.previous_mentions,
                previous_share: t.previous_share,
                sentiment: counts_from_pb(t.sentiment),
                net_sentiment: score_from_pb(t.net_sentiment),
                nps: score_from_pb(t.nps),
                nps_impact: t.nps_impact.map(interval_from_pb),
                csat: score_from_pb(t.csat),
                csat_impact: t.csat_impact.map(interval_from_pb),
            })
            .collect(),
        matrix: r.matrix.map(|m| SegmentMatrix {
            field: m.field,
            columns: m
                .columns
                .into_iter()
                .map(|c| SegmentColumn {
                    value: c.value,
                    items: c.items,
                    net_sentiment: c.net_sentiment,
                })
                .collect(),
            cells: m
                .cells
                .into_iter()
                .map(|c| MatrixCell {
                    theme_id: c.theme_id,
                    segment_value: c.segment_value,
                    mentions: c.mentions,
                    share: c.share,
                    net_sentiment: c.net_sentiment,
                    p_value: c.p_value,
                    significant: c.significant,
                    direction: c.direction,
                })
                .collect(),
        }),
        trend_themes: r.trend_themes,
        trends: r
            .trends
            .into_iter()
            .map(|b| {
                let period = period_from_pb(b.period);
                TrendBucket {
                    start: period.start,
                    end: period.end,
                    items: b.items,
                    net_sentiment: score_from_pb(b.net_sentiment),
                    nps: score_from_pb(b.nps),
                    themes: b
                        .themes
                        .into_iter()
                        .map(|s| ThemeShare {
                            theme_id: s.theme_id,
                            mentions: s.mentions,
                            share: s.share,
                        })
                        .collect(),
                }
            })
            .collect(),
        emerging: r
            .emerging
            .into_iter()
            .map(|e| EmergingTheme {
                theme_id: e.theme_id,
                name: e.name,
                mentions: e.mentions,
                share: e.share,
                previous_mentions: e.previous_mentions,
                previous_share: e.previous_share,
                p_value: e.p_value,
                adjusted_p_value: e.adjusted_p_value,
                candidate: e.candidate,
                representatives: e.representatives,
            })
            .collect(),
        verbatims: r
            .verbatims
            .into_iter()
            .map(|g| VerbatimGroup {
                theme_id: g.theme_id,
                segment_value: g.segment_value,
                verbatims: g
                    .verbatims
                    .into_iter()
                    .map(|v| Verbatim {
                        item_id: v.item_id,
                        customer_id: v.customer_id,
                        created_at: v
                            .created_at
                            .and_then(|ts| timestamp_to_micros(&ts).ok())
                            .unwrap_or(UnixMicros(0)),
                        channel: channel_from_pb(v.channel)
                            .ok()
                            .flatten()
                            .map(|c| c.as_str().to_string())
                            .unwrap_or_default(),
                        text: v.text,
                        highlights: v
                            .highlights
                            .iter()
                            .map(|s| Span {
                                start: s.start as usize,
                                end: s.end as usize,
                            })
                            .collect(),
                        sentiment: label_name(v.sentiment),
                        nps: v.nps,
                    })
                    .collect(),
            })
            .collect(),
    }
}
