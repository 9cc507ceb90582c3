//! The long CSV: one row per figure, keyed by
//! `(section, theme_id, segment, bucket_start, metric)`.

use crate::domain::{Interval, Report, Score};

use super::common::{instant_key, sentiment_shares, ScoreKind, SENTIMENT_NAMES};

pub(super) const HEADER: [&str; 9] = [
    "section",
    "theme_id",
    "segment",
    "bucket_start",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
];

/// One CSV row. Values are the report's own (full precision, shares 0..1).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Row {
    pub section: &'static str,
    pub theme_id: String,
    pub segment: String,
    pub bucket_start: String,
    pub metric: String,
    pub value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub n: Option<u64>,
}

/// The key columns of the rows one context yields.
#[derive(Clone, Default)]
struct Key {
    section: &'static str,
    theme_id: String,
    segment: String,
    bucket_start: String,
}

impl Key {
    fn new(section: &'static str) -> Key {
        Key {
            section,
            ..Key::default()
        }
    }

    fn theme(mut self, id: &str) -> Key {
        self.theme_id = id.to_string();
        self
    }

    fn segment(mut self, value: &str) -> Key {
        self.segment = value.to_string();
        self
    }

    fn bucket(mut self, start: String) -> Key {
        self.bucket_start = start;
        self
    }

    fn row(&self, metric: &str, value: Option<f64>) -> Row {
        Row {
            section: self.section,
            theme_id: self.theme_id.clone(),
            segment: self.segment.clone(),
            bucket_start: self.bucket_start.clone(),
            metric: metric.to_string(),
            value,
            ..Row::default()
        }
    }

    fn count(&self, metric: &str, value: u64) -> Row {
        self.row(metric, Some(value as f64))
    }

    fn interval(&self, metric: &str, interval: Option<Interval>) -> Row {
        Row {
            ci_low: interval.map(|i| i.low),
            ci_high: interval.map(|i| i.high),
            ..self.row(metric, interval.map(|i| i.value))
        }
    }

    /// `M` (estimate, interval, n); `M.previous` when the comparison has
    /// answers; `M.change`, `M.change.p_value`, `M.change.significant` when
    /// there is a change.
    fn score(&self, out: &mut Vec<Row>, metric: &str, score: &Score) {
        out.push(Row {
            n: Some(score.n),
            ..self.interval(metric, score.estimate)
        });
        if score.previous.is_some() || score.previous_n > 0 {
            out.push(Row {
                n: Some(score.previous_n),
                ..self.row(&format!("{metric}.previous"), score.previous)
            });
        }
        if let Some(change) = score.change {
            out.push(Row {
                ci_low: Some(change.low),
                ci_high: Some(change.high),
                ..self.row(&format!("{metric}.change"), Some(change.delta))
            });
            out.push(self.row(&format!("{metric}.change.p_value"), Some(change.p_value)));
            out.push(self.row(
                &format!("{metric}.change.significant"),
                Some(if change.significant { 1.0 } else { 0.0 }),
            ));
        }
    }

    /// `sentiment.LABEL`: share of each label, n = labelled items.
    fn sentiment(&self, out: &mut Vec<Row>, counts: &[u64; 4]) {
        if let Some((shares, total)) = sentiment_shares(counts) {
            for (name, share) in SENTIMENT_NAMES.iter().zip(shares) {
                out.push(Row {
                    n: Some(total),
                    ..self.row(&format!("sentiment.{name}"), Some(share))
                });
            }
        }
    }
}

/// Every figure of the report, in page order.
pub(super) fn rows(report: &Report) -> Vec<Row> {
    let mut out = Vec::new();

    let kpi = Key::new("kpi");
    out.push(kpi.count("items", report.items));
    out.push(kpi.count("previous_items", report.previous_items));
    out.push(kpi.count("analysed", report.analysed));
    out.push(kpi.count("retag_pending", report.retag_pending));
    out.push(kpi.count("taxonomy_version", report.taxonomy_version));
    kpi.sentiment(&mut out, &report.sentiment);
    for kind in ScoreKind::ALL {
        kpi.score(&mut out, kind.metric(), kind.of(report));
    }

    for theme in &report.themes {
        let key = Key::new("theme").theme(&theme.theme_id);
        out.push(key.count("mentions", theme.mentions));
        out.push(key.row("share", Some(theme.share)));
        out.push(key.count("previous_mentions", theme.previous_mentions));
        out.push(key.row("previous_share", Some(theme.previous_share)));
        key.sentiment(&mut out, &theme.sentiment);
        key.score(&mut out, "net_sentiment", &theme.net_sentiment);
        key.score(&mut out, "nps", &theme.nps);
        out.push(key.interval("nps_impact", theme.nps_impact));
        key.score(&mut out, "csat", &theme.csat);
        out.push(key.interval("csat_impact", theme.csat_impact));
    }

    if let Some(matrix) = &report.matrix {
        for column in &matrix.columns {
            let key = Key::new("segment").segment(&column.value);
            out.push(key.count("items", column.items));
            out.push(key.row("net_sentiment", column.net_sentiment));
        }
        for cell in &matrix.cells {
            let key = Key::new("matrix")
                .theme(&cell.theme_id)
                .segment(&cell.segment_value);
            out.push(key.count("mentions", cell.mentions));
            out.push(key.row("share", Some(cell.share)));
            out.push(key.row("net_sentiment", cell.net_sentiment));
            out.push(key.row("p_value", Some(cell.p_value)));
            out.push(key.row(
                "significant",
                Some(if cell.significant { 1.0 } else { 0.0 }),
            ));
            out.push(key.row("direction", Some(cell.direction as f64)));
        }
    }

    for bucket in &report.trends {
        let start = instant_key(bucket.start);
        let key = Key::new("trend").bucket(start.clone());
        out.push(key.count("items", bucket.items));
        key.score(&mut out, "net_sentiment", &bucket.net_sentiment);
        key.score(&mut out, "nps", &bucket.nps);
        for share in &bucket.themes {
            let key = Key::new("trend_theme")
                .bucket(start.clone())
                .theme(&share.theme_id);
            out.push(key.count("mentions", share.mentions));
            out.push(key.row("share", Some(share.share)));
        }
    }

    for theme in &report.emerging {
        let key = Key::new("emerging").theme(&theme.theme_id);
        out.push(key.count("mentions", theme.mentions));
        out.push(key.row("share", Some(theme.share)));
        out.push(key.count("previous_mentions", theme.previous_mentions));
        out.push(key.row("previous_share", Some(theme.previous_share)));
        out.push(key.row("p_value", Some(theme.p_value)));
        out.push(key.row("adjusted_p_value", Some(theme.adjusted_p_value)));
    }

    for group in &report.verbatims {
        for verbatim in &group.verbatims {
            if let Some(nps) = verbatim.nps {
                let key = Key::new("verbatim")
                    .theme(&group.theme_id)
                    .segment(&group.segment_value)
                    .bucket(instant_key(verbatim.created_at));
                out.push(key.row("nps", Some(nps as f64)));
            }
        }
    }
    out
}

/// A number as a spreadsheet reads it: shortest round-trip form, never an
/// exponent; empty for none, NaN and inf.
fn number(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => String::new(),
    }
}

/// A text cell a spreadsheet will not run as a formula: one that starts
/// with `=`, `+`, `-`, `@`, a tab or a carriage return (a product named
/// `=HYPERLINK("http://evil","x")` reached the CSV as it is) gets a leading
/// `'`, as OWASP's "CSV injection" advice says. Numbers are written by
/// `number`, never through here, so a negative figure stays a number.
fn inert(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

pub(super) fn render(report: &Report) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail; the csv crate quotes as RFC 4180 asks.
    let _ = writer.write_record(HEADER);
    for row in rows(report) {
        let _ = writer.write_record([
            row.section.to_string(),
            inert(row.theme_id),
            inert(row.segment),
            inert(row.bucket_start),
            inert(row.metric),
            number(row.value),
            number(row.ci_low),
            number(row.ci_high),
            row.n.map(|n| n.to_string()).unwrap_or_default(),
        ]);
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod inert_tests {
    use super::inert;

    #[test]
    fn cells_a_spreadsheet_would_run_are_quoted() {
        for cell in [
            "=HYPERLINK(\"http://evil\",\"x\")",
            "@evil",
            "+1",
            "-2+3",
            "\tx",
            "\r=1",
        ] {
            assert_eq!(inert(cell.to_string()), format!("'{cell}"));
        }
        for cell in ["acme", "2026-03-01T00:00:00Z", "delivery", "", "a=b"] {
            assert_eq!(inert(cell.to_string()), cell);
        }
    }
}
