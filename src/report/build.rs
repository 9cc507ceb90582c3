//! From one pass's counts to the finished report: scores with intervals and
//! changes, the theme table sorted by impact, the theme x segment matrix,
//! trend buckets and emerging themes. Pure: no I/O (verbatims are picked by
//! the engine, which reads the store).

use std::collections::BTreeMap;

use super::{buckets, stats};
use crate::domain::limits::{
    EMERGING_ALPHA, EMERGING_MIN_MENTIONS, MAX_REPORT_SEGMENT_VALUES, REPORT_TREND_THEMES,
};
use crate::domain::{
    BucketSize, CandidateCount, Change, EmergingTheme, Interval, MatrixCell, Period, Report, Score,
    SegmentColumn, SegmentMatrix, SliceCounts, Tally, Taxonomy, ThemeRow, ThemeShare, TrendBucket,
};

/// Themes (by mentions) that get matrix rows.
pub const MATRIX_THEMES: usize = 20;

/// What the counts alone do not say.
pub struct ReportShape<'a> {
    pub period: Period,
    pub comparison: Period,
    pub bucket: BucketSize,
    /// The trend buckets covering `period`.
    pub buckets: Vec<Period>,
    pub segment: Option<String>,
    pub taxonomy: &'a Taxonomy,
}

fn score(
    n: u64,
    previous_n: u64,
    estimate: Option<Interval>,
    previous: Option<Interval>,
    change: Option<Change>,
) -> Score {
    Score {
        n,
        estimate,
        previous_n,
        previous: previous.map(|p| p.value),
        change,
    }
}

fn nps_score(current: &Tally, previous: &Tally) -> Score {
    score(
        current.nps.iter().sum(),
        previous.nps.iter().sum(),
        stats::nps(current.nps),
        stats::nps(previous.nps),
        stats::nps_change(current.nps, previous.nps),
    )
}

fn csat_score(current: &Tally, previous: &Tally) -> Score {
    let (c, p) = (
        (current.csat_satisfied, current.csat_answers),
        (previous.csat_satisfied, previous.csat_answers),
    );
    score(
        c.1,
        p.1,
        stats::csat(c.0, c.1),
        stats::csat(p.0, p.1),
        stats::csat_change(c, p),
    )
}

fn ces_score(current: &Tally, previous: &Tally) -> Score {
    let c = (
        current.ces_answers,
        current.ces_sum,
        current.ces_sum_squares,
    );
    let p = (
        previous.ces_answers,
        previous.ces_sum,
        previous.ces_sum_squares,
    );
    score(
        c.0,
        p.0,
        stats::ces(c.0, c.1, c.2),
        stats::ces(p.0, p.1, p.2),
        stats::ces_change(c, p),
    )
}

fn sentiment_score(current: [u64; 4], previous: [u64; 4]) -> Score {
    score(
        current.iter().sum(),
        previous.iter().sum(),
        stats::net_sentiment(current),
        stats::net_sentiment(previous),
        stats::net_sentiment_change(current, previous),
    )
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The report without verbatims.
pub fn build(counts: &SliceCounts, shape: ReportShape<'_>) -> Report {
    let (current, previous) = (&counts.current, &counts.previous);
    let themes = theme_rows(counts, shape.taxonomy);
    let matrix = shape
        .segment
        .as_ref()
        .map(|field| segment_matrix(counts, field, &themes));
    let mut by_mentions: Vec<&ThemeRow> = themes.iter().filter(|t| t.mentions > 0).collect();
    by_mentions.sort_by(|a, b| {
        b.mentions
            .cmp(&a.mentions)
            .then(a.theme_id.cmp(&b.theme_id))
    });
    let trend_themes: Vec<String> = by_mentions
        .iter()
        .take(REPORT_TREND_THEMES)
        .map(|t| t.theme_id.clone())
        .collect();
    let trends = trend_buckets(counts, &shape.buckets, &trend_themes);
    let emerging = emerging(counts, &themes, &[]);
    Report {
        period: shape.period,
        comparison: shape.comparison,
        bucket: shape.bucket,
        taxonomy_version: shape.taxonomy.version,
        retag_pending: counts.retag_pending,
        items: current.items,
        previous_items: previous.items,
        analysed: current.analysed,
        sentiment: current.sentiment,
        net_sentiment: sentiment_score(current.sentiment, previous.sentiment),
        nps: nps_score(current, previous),
        csat: csat_score(current, previous),
        ces: ces_score(current, previous),
        themes,
        matrix,
        trend_themes,
        trends,
        emerging,
        verbatims: Vec::new(),
    }
}

/// One row per theme mentioned in either period, most negative NPS impact
/// first, then themes without an impact by mentions.
fn theme_rows(counts: &SliceCounts, taxonomy: &Taxonomy) -> Vec<ThemeRow> {
    let all = &counts.current;
    let mut rows: Vec<ThemeRow> = counts
        .themes
        .iter()
        .map(|(id, tally)| {
            let theme = taxonomy.themes.get(id);
            let (c, p) = (&tally.current, &tally.previous);
            ThemeRow {
                theme_id: id.clone(),
                name: theme.map_or_else(|| id.clone(), |t| t.name.clone()),
                parent_id: theme.map(|t| t.parent_id.clone()).unwrap_or_default(),
                mentions: c.items,
                share: ratio(c.items, all.tagged),
                previous_mentions: p.items,
                previous_share: ratio(p.items, counts.previous.tagged),
                sentiment: tally.theme_sentiment,
                net_sentiment: sentiment_score(tally.theme_sentiment, [0; 4]),
                nps: nps_score(c, p),
                nps_impact: stats::nps_impact(all.nps, c.nps),
                csat: csat_score(c, p),
                csat_impact: stats::csat_impact(
                    (all.csat_satisfied, all.csat_answers),
                    (c.csat_satisfied, c.csat_answers),
                ),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        match (a.nps_impact, b.nps_impact) {
            (Some(x), Some(y)) => x
                .value
                .total_cmp(&y.value)
                .then(b.mentions.cmp(&a.mentions)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => b.mentions.cmp(&a.mentions),
        }
        .then(a.theme_id.cmp(&b.theme_id))
    });
    rows
}

fn segment_matrix(counts: &SliceCounts, field: &str, themes: &[ThemeRow]) -> SegmentMatrix {
    let mut values: Vec<(&String, &crate::domain::SegmentTally)> = counts.segments.iter().collect();
    values.sort_by(|a, b| b.1.tally.items.cmp(&a.1.tally.items).then(a.0.cmp(b.0)));
    values.truncate(MAX_REPORT_SEGMENT_VALUES);
    let columns: Vec<SegmentColumn> = values
        .iter()
        .map(|(value, segment)| SegmentColumn {
            value: (*value).clone(),
            items: segment.tally.items,
            net_sentiment: stats::net_sentiment(segment.tally.sentiment).map(|i| i.value),
        })
        .collect();
    // Shares are over the items that can carry a counted theme.
    let total_items = counts.current.tagged;
    let mut rows: Vec<&ThemeRow> = themes.iter().filter(|t| t.mentions > 0).collect();
    rows.sort_by(|a, b| {
        b.mentions
            .cmp(&a.mentions)
            .then(a.theme_id.cmp(&b.theme_id))
    });
    rows.truncate(MATRIX_THEMES);
    // Keep the theme table's order among the rows shown.
    let shown: Vec<&ThemeRow> = themes
        .iter()
        .filter(|t| rows.iter().any(|r| r.theme_id == t.theme_id))
        .collect();
    let mut cells = Vec::new();
    let mut p_values = Vec::new();
    for row in shown {
        for (value, segment) in &values {
            let (mentions, sentiment) = segment
                .themes
                .get(&row.theme_id)
                .copied()
                .unwrap_or((0, [0; 4]));
            let items = segment.tally.tagged;
            let rest_mentions = row.mentions.saturating_sub(mentions);
            let rest_items = total_items.saturating_sub(items);
            let p = stats::two_proportion_p(mentions, items, rest_mentions, rest_items, false);
            p_values.push(p);
            let share = ratio(mentions, items);
            let direction = if share > ratio(rest_mentions, rest_items) {
                1
            } else {
                -1
            };
            cells.push(MatrixCell {
                theme_id: row.theme_id.clone(),
                segment_value: (*value).clone(),
                mentions,
                share,
                net_sentiment: stats::net_sentiment(sentiment).map(|i| i.value),
                p_value: p,
                significant: false,
                direction,
            });
        }
    }
    for (cell, adjusted) in cells.iter_mut().zip(stats::holm(&p_values)) {
        cell.p_value = adjusted;
        cell.significant = adjusted < 0.05;
        if !cell.significant {
            cell.direction = 0;
        }
    }
    SegmentMatrix {
        field: field.to_string(),
        columns,
        cells,
    }
}

fn trend_buckets(
    counts: &SliceCounts,
    buckets: &[Period],
    trend_themes: &[String],
) -> Vec<TrendBucket> {
    let Some(first) = buckets.first() else {
        return Vec::new();
    };
    let mut tallies: Vec<(Tally, BTreeMap<&str, u64>)> = vec![Default::default(); buckets.len()];
    for (day, day_tally) in &counts.days {
        let at = day * buckets::MICROS_PER_DAY;
        // The bucket holding the day: the last one starting at or before it.
        let i = buckets.partition_point(|b| b.start.0 <= at.max(first.start.0));
        let Some(slot) = i.checked_sub(1).and_then(|i| tallies.get_mut(i)) else {
            continue;
        };
        slot.0.add(&day_tally.tally);
        for (id, n) in &day_tally.themes {
            *slot.1.entry(id.as_str()).or_default() += n;
        }
    }
    buckets
        .iter()
        .zip(tallies)
        .map(|(period, (tally, themes))| TrendBucket {
            start: period.start,
            end: period.end,
            items: tally.items,
            net_sentiment: sentiment_score(tally.sentiment, [0; 4]),
            nps: nps_score(&tally, &Tally::default()),
            themes: trend_themes
                .iter()
                .map(|id| {
                    let mentions = themes.get(id.as_str()).copied().unwrap_or(0);
                    ThemeShare {
                        theme_id: id.clone(),
                        mentions,
                        share: ratio(mentions, tally.tagged),
                    }
                })
                .collect(),
        })
        .collect()
}

/// Themes (and discovery candidates) whose share rose significantly, Holm
/// over everything tested together.
pub fn emerging(
    counts: &SliceCounts,
    themes: &[ThemeRow],
    candidates: &[CandidateCount],
) -> Vec<EmergingTheme> {
    if counts.previous.tagged == 0 {
        return Vec::new();
    }
    // Denominators are the tagged items of each period, so a comparison
    // period whose re-tag is still under way raises no false alarm.
    let input: Vec<(u64, u64, u64, u64)> = themes
        .iter()
        .map(|t| {
            (
                t.mentions,
                counts.current.tagged,
                t.previous_mentions,
                counts.previous.tagged,
            )
        })
        .chain(candidates.iter().map(|c| {
            (
                c.mentions,
                c.looked_at,
                c.previous_mentions,
                c.previous_looked_at,
            )
        }))
        .collect();
    let rows = themes
        .iter()
        .map(|t| EmergingTheme {
            theme_id: t.theme_id.clone(),
            name: t.name.clone(),
            mentions: t.mentions,
            share: t.share,
            previous_mentions: t.previous_mentions,
            previous_share: t.previous_share,
            p_value: 1.0,
            adjusted_p_value: 1.0,
            candidate: false,
            representatives: Vec::new(),
        })
        .chain(candidates.iter().enumerate().map(|(i, c)| EmergingTheme {
            theme_id: format!("candidate-{}", i + 1),
            name: c.name.clone(),
            mentions: c.mentions,
            share: ratio(c.mentions, c.looked_at),
            previous_mentions: c.previous_mentions,
            previous_share: ratio(c.previous_mentions, c.previous_looked_at),
            p_value: 1.0,
            adjusted_p_value: 1.0,
            candidate: true,
            representatives: c.representatives.clone(),
        }));
    let mut out: Vec<EmergingTheme> = rows
        .zip(stats::emerging(&input, EMERGING_MIN_MENTIONS))
        .filter_map(|(mut row, tested)| {
            let (p, adjusted) = tested?;
            row.p_value = p;
            row.adjusted_p_value = adjusted;
            (adjusted < EMERGING_ALPHA).then_some(row)
        })
        .collect();
    out.sort_by(|a, b| {
        a.adjusted_p_value
            .total_cmp(&b.adjusted_p_value)
            .then(a.theme_id.cmp(&b.theme_id))
    });
    out
}
