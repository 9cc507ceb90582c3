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
                .map(|ts| timestamp_to_micros(ts).map_err(|r| Error::invalid(field, r)))
                .transpose()
        };
        let comparison = match (
            time("compare_after", &raw.compare_after)?,
            time("compare_before", &raw.compare_before)?,
        ) {
            (None, None) => None,
            (Some(start), Some(end)) => {
                // Ordered as given: clamped to the dates items can have, two
                // bounds past either end become one.
                if end <= start {
                    return Err(Error::invalid(
                        "compare_before",
                        "must be later than compare_after",
                    ));
                }
                let period = Period {
                    start: clamp_created(start),
                    end: clamp_created(end),
                };
                if period.is_empty() {
                    return Err(Error::invalid(
                        "compare_after",
                        "the comparison period lies outside the dates items can have \
                         (1970-01-01 to 2200-01-01)",
                    ));
                }
                Some(period)
            }
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

/// Fuzz targets of the report messages (`cargo test --lib fuzz`): any
/// request converts or names its field; any answer a server might send
/// converts and renders (the renderers promise never to panic nor print NaN
/// or inf).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::super::convert::fuzz::{check_filter, filter, query_text};
    use super::*;
    use crate::domain::limits::{MAX_CREATED_AT_MICROS, MIN_CREATED_AT_MICROS};
    use crate::fuzz::{edgy_f64, edgy_i32, nasty_string, timestamp};

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "", "channel", "journey_stage", "product", "language", "attributes.region",
                "attributes.", "attributes", "attributes.Region", "attributes.a.b", "tags", "theme",
                " channel", "CHANNEL",
            ])
            .prop_map(String::from),
            1 => "attributes\\.[a-z0-9_]{0,70}",
            1 => nasty_string(12),
        ]
    }

    fn report_request() -> impl Strategy<Value = pb::ReportRequest> {
        (
            query_text(),
            prop::option::of(filter()),
            edgy_i32(),
            segment(),
            prop::option::of(timestamp()),
            prop::option::of(timestamp()),
            any::<bool>(),
        )
            .prop_map(
                |(query, filter, bucket, segment, compare_after, compare_before, candidates)| {
                    pb::ReportRequest {
                        query,
                        filter,
                        bucket,
                        segment,
                        compare_after,
                        compare_before,
                        include_candidates: candidates,
                    }
                },
            )
    }

    /// Strings without the letters of "NaN" and "inf" (so the renderers'
    /// promise not to print them can be checked on their output).
    fn plain(max: usize) -> impl Strategy<Value = String> {
        nasty_string(max).prop_map(|s| s.replace(['N', 'f'], "x"))
    }

    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![4 => 0u64..1000, 1 => any::<u64>()]
    }

    fn score() -> impl Strategy<Value = Option<pb::ReportScore>> {
        let change = (
            edgy_f64(),
            edgy_f64(),
            edgy_f64(),
            edgy_f64(),
            any::<bool>(),
        )
            .prop_map(
                |(delta, ci_low, ci_high, p_value, significant)| pb::ScoreChange {
                    delta,
                    ci_low,
                    ci_high,
                    p_value,
                    significant,
                },
            );
        let f = || prop::option::of(edgy_f64());
        prop::option::of(
            (
                f(),
                f(),
                f(),
                count(),
                f(),
                count(),
                prop::option::of(change),
            )
                .prop_map(
                    |(value, ci_low, ci_high, n, previous_value, previous_n, change)| {
                        pb::ReportScore {
                            value,
                            ci_low,
                            ci_high,
                            n,
                            previous_value,
                            previous_n,
                            change,
                        }
                    },
                ),
        )
    }

    fn counts() -> impl Strategy<Value = Option<pb::SentimentCounts>> {
        prop::option::of((count(), count(), count(), count()).prop_map(
            |(negative, neutral, positive, mixed)| pb::SentimentCounts {
                negative,
                neutral,
                positive,
                mixed,
            },
        ))
    }

    fn interval() -> impl Strategy<Value = Option<pb::Interval>> {
        prop::option::of((edgy_f64(), edgy_f64(), edgy_f64()).prop_map(
            |(value, ci_low, ci_high)| pb::Interval {
                value,
                ci_low,
                ci_high,
            },
        ))
    }

    fn period() -> impl Strategy<Value = Option<pb::Period>> {
        prop::option::of(
            (prop::option::of(timestamp()), prop::option::of(timestamp()))
                .prop_map(|(start, end)| pb::Period { start, end }),
        )
    }

    fn theme_row() -> impl Strategy<Value = pb::ThemeRow> {
        (
            (plain(10), plain(20), plain(10)),
            (count(), edgy_f64(), count(), edgy_f64()),
            (counts(), score(), score(), interval(), score(), interval()),
        )
            .prop_map(|(names, mentions, figures)| pb::ThemeRow {
                theme_id: names.0,
                name: names.1,
                parent_id: names.2,
                mentions: mentions.0,
                share: mentions.1,
                previous_mentions: mentions.2,
                previous_share: mentions.3,
                sentiment: figures.0,
                net_sentiment: figures.1,
                nps: figures.2,
                nps_impact: figures.3,
                csat: figures.4,
                csat_impact: figures.5,
            })
    }

    fn matrix() -> impl Strategy<Value = Option<pb::SegmentMatrix>> {
        let column = (plain(10), count(), prop::option::of(edgy_f64())).prop_map(
            |(value, items, net_sentiment)| pb::SegmentColumn {
                value,
                items,
                net_sentiment,
            },
        );
        let cell = (
            (plain(10), plain(10), count(), edgy_f64()),
            (
                prop::option::of(edgy_f64()),
                edgy_f64(),
                any::<bool>(),
                edgy_i32(),
            ),
        )
            .prop_map(|(a, b)| pb::MatrixCell {
                theme_id: a.0,
                segment_value: a.1,
                mentions: a.2,
                share: a.3,
                net_sentiment: b.0,
                p_value: b.1,
                significant: b.2,
                direction: b.3,
            });
        prop::option::of(
            (
                plain(10),
                prop::collection::vec(column, 0..4),
                prop::collection::vec(cell, 0..6),
            )
                .prop_map(|(field, columns, cells)| pb::SegmentMatrix {
                    field,
                    columns,
                    cells,
                }),
        )
    }

    fn trend() -> impl Strategy<Value = pb::TrendBucket> {
        let share = (plain(10), count(), edgy_f64()).prop_map(|(theme_id, mentions, share)| {
            pb::ThemeShare {
                theme_id,
                mentions,
                share,
            }
        });
        (
            period(),
            count(),
            score(),
            score(),
            prop::collection::vec(share, 0..3),
        )
            .prop_map(
                |(period, items, net_sentiment, nps, themes)| pb::TrendBucket {
                    period,
                    items,
                    net_sentiment,
                    nps,
                    themes,
                },
            )
    }

    fn emerging() -> impl Strategy<Value = pb::EmergingTheme> {
        (
            (plain(10), plain(20), count(), edgy_f64(), count()),
            (edgy_f64(), edgy_f64(), edgy_f64(), any::<bool>()),
            prop::collection::vec(plain(30), 0..3),
        )
            .prop_map(|(a, b, representatives)| pb::EmergingTheme {
                theme_id: a.0,
                name: a.1,
                mentions: a.2,
                share: a.3,
                previous_mentions: a.4,
                previous_share: b.0,
                p_value: b.1,
                adjusted_p_value: b.2,
                candidate: b.3,
                representatives,
            })
    }

    fn verbatims() -> impl Strategy<Value = pb::VerbatimGroup> {
        let span = prop_oneof![
            3 => (0u32..40, 0u32..40),
            1 => (any::<u32>(), any::<u32>()),
        ]
        .prop_map(|(start, end)| pb::Span { start, end });
        let verbatim = (
            (
                plain(10),
                plain(10),
                prop::option::of(timestamp()),
                edgy_i32(),
            ),
            (
                plain(60),
                prop::collection::vec(span, 0..4),
                edgy_i32(),
                prop::option::of(edgy_i32()),
            ),
        )
            .prop_map(|(a, b)| pb::Verbatim {
                item_id: a.0,
                customer_id: a.1,
                created_at: a.2,
                channel: a.3,
                text: b.0,
                highlights: b.1,
                sentiment: b.2,
                nps: b.3,
            });
        (plain(10), plain(10), prop::collection::vec(verbatim, 0..3)).prop_map(
            |(theme_id, segment_value, verbatims)| pb::VerbatimGroup {
                theme_id,
                segment_value,
                verbatims,
            },
        )
    }

    fn report_response() -> impl Strategy<Value = pb::ReportResponse> {
        (
            (period(), period(), edgy_i32(), count(), count()),
            (count(), count(), count(), counts()),
            (score(), score(), score(), score()),
            (
                prop::collection::vec(theme_row(), 0..4),
                matrix(),
                prop::collection::vec(plain(10), 0..4),
                prop::collection::vec(trend(), 0..5),
                prop::collection::vec(emerging(), 0..3),
                prop::collection::vec(verbatims(), 0..3),
            ),
        )
            .prop_map(|(head, totals, scores, sections)| pb::ReportResponse {
                period: head.0,
                comparison: head.1,
                bucket: head.2,
                taxonomy_version: head.3,
                retag_pending: head.4,
                items: totals.0,
                previous_items: totals.1,
                analysed: totals.2,
                sentiment: totals.3,
                net_sentiment: scores.0,
                nps: scores.1,
                csat: scores.2,
                ces: scores.3,
                themes: sections.0,
                matrix: sections.1,
                trend_themes: sections.2,
                trends: sections.3,
                emerging: sections.4,
                verbatims: sections.5,
            })
    }

    /// Where `word` stands alone in `text` (not inside a longer word).
    fn find_word(text: &str, word: &str) -> Option<usize> {
        text.match_indices(word).map(|(at, _)| at).find(|&at| {
            let before = text[..at].chars().next_back();
            let after = text[at + word.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    }

    proptest! {
        #[test]
        fn fuzz_report_requests_convert_or_name_their_field(raw in report_request()) {
            match ReportRequest::try_from(raw.clone()) {
                Ok(request) => {
                    check_filter(&request.query.filter)?;
                    match &request.segment {
                        Some(segment) => {
                            prop_assert_eq!(segment.name(), raw.segment.clone());
                            prop_assert_eq!(SegmentField::parse(&segment.name()), Ok(segment.clone()));
                        }
                        None => prop_assert!(raw.segment.is_empty()),
                    }
                    if let Some(period) = request.comparison {
                        for at in [period.start, period.end] {
                            prop_assert!((MIN_CREATED_AT_MICROS..=MAX_CREATED_AT_MICROS).contains(&at.0));
                        }
                    }
                }
                Err(Error::InvalidArgument { field, reason }) => {
                    prop_assert!(!field.is_empty() && !reason.is_empty());
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }

        #[test]
        fn fuzz_any_report_answer_converts_and_renders(raw in report_response(), title in plain(20)) {
            let report = report_from_pb(raw);
            let pages = [
                crate::report::render::html(&report, &title),
                crate::report::render::table(&report),
                crate::report::render::csv(&report),
            ];
            for page in &pages {
                for word in ["NaN", "inf"] {
                    if let Some(at) = find_word(page, word) {
                        let context: String = page[at..].chars().take(60).collect();
                        prop_assert!(false, "{word} printed: {context:?}");
                    }
                }
            }
        }
    }
}
