//! What the three renderers share: number and date formats, the metric
//! names, escaping, highlight runs and terminal widths.

use time::macros::format_description;
use time::OffsetDateTime;

use crate::domain::{BucketSize, Period, Report, Score, Span, UnixMicros};

/// The kind of a figure: how it is formatted in `data-value` and on screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// An integer count.
    Count,
    /// A score, an impact or a difference: one decimal.
    Score,
    /// A share 0..1: printed as a percentage with one decimal, `data-value`
    /// is the fraction with three decimals.
    Share,
    /// A p-value: three decimals (`<0.001` on screen below that).
    P,
}

/// `Some(x)` when `x` is finite.
pub(super) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The machine value of a figure (`data-value`): `None` for NaN/inf.
pub(super) fn machine(kind: Kind, x: f64) -> Option<String> {
    let x = finite(x)?;
    Some(match kind {
        Kind::Count => format!("{}", x.round() as i64),
        Kind::Score => format!("{x:.1}"),
        Kind::Share | Kind::P => format!("{x:.3}"),
    })
}

/// The figure as a reader sees it ("n/a" for NaN/inf).
pub(super) fn human(kind: Kind, x: f64) -> String {
    let Some(x) = finite(x) else {
        return "n/a".into();
    };
    match kind {
        Kind::Count => thousands(x.round() as i64),
        Kind::Score => tidy_zero(format!("{x:.1}")),
        // A share near f64::MAX (an absurd answer) is inf in percent.
        Kind::Share => {
            finite(x * 100.0).map_or_else(|| "n/a".into(), |pct| tidy_zero(format!("{pct:.1}%")))
        }
        Kind::P if x < 0.001 => "<0.001".into(),
        Kind::P => format!("{x:.3}"),
    }
}

/// A signed difference: "+3.2", "-1.0", "0.0".
pub(super) fn signed(x: f64) -> String {
    match finite(x) {
        None => "n/a".into(),
        Some(x) => {
            let s = tidy_zero(format!("{x:.1}"));
            if x > 0.0 && s != "0.0" {
                format!("+{s}")
            } else {
                s
            }
        }
    }
}

/// "-0.0" reads as an error; the reader gets "0.0" (`data-value` keeps
/// `format!` output, so a test reproduces it exactly).
fn tidy_zero(s: String) -> String {
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.' || c == '%') => rest.to_string(),
        _ => s,
    }
}

pub(super) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The four scores of a report, their metric names and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScoreKind {
    NetSentiment,
    Nps,
    Csat,
    Ces,
}

impl ScoreKind {
    pub(super) const ALL: [ScoreKind; 4] = [
        ScoreKind::NetSentiment,
        ScoreKind::Nps,
        ScoreKind::Csat,
        ScoreKind::Ces,
    ];

    /// The metric name (the `Report` field).
    pub(super) fn metric(self) -> &'static str {
        match self {
            ScoreKind::NetSentiment => "net_sentiment",
            ScoreKind::Nps => "nps",
            ScoreKind::Csat => "csat",
            ScoreKind::Ces => "ces",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            ScoreKind::NetSentiment => "Net sentiment",
            ScoreKind::Nps => "NPS",
            ScoreKind::Csat => "CSAT",
            ScoreKind::Ces => "CES",
        }
    }

    /// The scale, as a reader needs it next to the label.
    pub(super) fn scale(self) -> &'static str {
        match self {
            ScoreKind::NetSentiment => "% positive − % negative",
            ScoreKind::Nps => "−100 to 100",
            ScoreKind::Csat => "% satisfied (4–5 of 5)",
            ScoreKind::Ces => "mean answer, 1–7",
        }
    }

    /// Unit printed after the value.
    pub(super) fn unit(self) -> &'static str {
        match self {
            ScoreKind::Csat => "%",
            _ => "",
        }
    }

    /// Whether "up" is good. CES: the domain does not say which end of 1-7
    /// is good, so its changes are not coloured.
    pub(super) fn higher_is_better(self) -> Option<bool> {
        match self {
            ScoreKind::Ces => None,
            _ => Some(true),
        }
    }

    pub(super) fn of(self, report: &Report) -> &Score {
        match self {
            ScoreKind::NetSentiment => &report.net_sentiment,
            ScoreKind::Nps => &report.nps,
            ScoreKind::Csat => &report.csat,
            ScoreKind::Ces => &report.ces,
        }
    }
}

/// Sentiment column names in `SENTIMENT_ORDER`.
pub(super) const SENTIMENT_NAMES: [&str; 4] = ["negative", "neutral", "positive", "mixed"];

/// Shares of a `[u64; 4]` count array, and its total (`None` when 0).
pub(super) fn sentiment_shares(counts: &[u64; 4]) -> Option<([f64; 4], u64)> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let mut shares = [0.0; 4];
    for (share, count) in shares.iter_mut().zip(counts) {
        *share = *count as f64 / total as f64;
    }
    Some((shares, total))
}

fn utc(at: UnixMicros) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(at.0 as i128 * 1000).ok()
}

/// `2026-01-05` when the instant is a UTC midnight, RFC 3339 otherwise (the
/// CSV's `bucket_start` and the HTML's `data-bucket`).
pub(super) fn instant_key(at: UnixMicros) -> String {
    match utc(at) {
        None => at.0.to_string(),
        Some(t) if t.time() == time::Time::MIDNIGHT => date(at),
        Some(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| at.0.to_string()),
    }
}

/// `2026-01-05` (UTC).
pub(super) fn date(at: UnixMicros) -> String {
    utc(at)
        .and_then(|t| t.format(format_description!("[year]-[month]-[day]")).ok())
        .unwrap_or_else(|| at.0.to_string())
}

/// `2026-01-05 14:03 UTC`.
pub(super) fn date_time(at: UnixMicros) -> String {
    utc(at)
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| at.0.to_string())
}

/// A short axis label: `7 Jul` (with the year when `with_year`), or
/// `Jul 2025` for monthly buckets.
pub(super) fn axis_date(at: UnixMicros, monthly: bool, with_year: bool) -> String {
    let Some(t) = utc(at) else {
        return String::new();
    };
    let month = &t.month().to_string()[..3];
    match (monthly, with_year) {
        (true, _) => format!("{month} {}", t.year()),
        (false, true) => format!("{} {month} {}", t.day(), t.year()),
        (false, false) => format!("{} {month}", t.day()),
    }
}

pub(super) fn year(at: UnixMicros) -> i32 {
    utc(at).map(|t| t.year()).unwrap_or(0)
}

/// "day", "week", "month".
pub(super) fn bucket_noun(bucket: BucketSize) -> &'static str {
    bucket.as_str()
}

/// "daily", "weekly", "monthly".
pub(super) fn bucket_adjective(bucket: BucketSize) -> &'static str {
    match bucket {
        BucketSize::Day => "daily",
        BucketSize::Week => "weekly",
        BucketSize::Month => "monthly",
        BucketSize::Year => "yearly",
    }
}

/// A period as a reader says it: first and last day, both inclusive.
pub(super) fn period_label(period: &Period) -> String {
    if period.is_empty() {
        return format!("{} (empty)", date(period.start));
    }
    let last = UnixMicros(period.end.0.saturating_sub(1));
    let (first, last) = (date(period.start), date(last));
    if first == last {
        first
    } else {
        format!("{first} to {last}")
    }
}

/// A theme's display name: the report's name for the id, else the emerging
/// list's, else the id.
pub(super) fn theme_name(report: &Report, theme_id: &str) -> String {
    report
        .themes
        .iter()
        .find(|t| t.theme_id == theme_id)
        .map(|t| t.name.clone())
        .or_else(|| {
            report
                .emerging
                .iter()
                .find(|t| t.theme_id == theme_id)
                .map(|t| t.name.clone())
        })
        .unwrap_or_else(|| theme_id.to_string())
}

/// `Parent › Child` for a sub-theme, the name otherwise.
pub(super) fn theme_path(report: &Report, theme_id: &str) -> (Option<String>, String) {
    let name = theme_name(report, theme_id);
    let parent = report
        .themes
        .iter()
        .find(|t| t.theme_id == theme_id)
        .filter(|t| !t.parent_id.is_empty())
        .map(|t| theme_name(report, &t.parent_id));
    (parent, name)
}

/// A segment value as a reader sees it ("" is the items without a value).
pub(super) fn segment_label(value: &str) -> &str {
    if value.is_empty() {
        "(no value)"
    } else {
        value
    }
}

/// HTML text and attribute escaping.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `text` cut into runs by code-point `spans` (clamped to the text, sorted,
/// overlaps merged, empty ones dropped): `(piece, highlighted)`.
pub(super) fn highlight_runs<'a>(text: &'a str, spans: &[Span]) -> Vec<(&'a str, bool)> {
    let offsets: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    let chars = offsets.len() - 1;
    let mut ranges: Vec<(usize, usize)> = spans
        .iter()
        .map(|s| (s.start.min(chars), s.end.min(chars)))
        .filter(|(s, e)| s < e)
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut runs = Vec::with_capacity(merged.len() * 2 + 1);
    let mut at = 0;
    for (s, e) in merged {
        if at < s {
            runs.push((&text[offsets[at]..offsets[s]], false));
        }
        runs.push((&text[offsets[s]..offsets[e]], true));
        at = e;
    }
    if at < chars || runs.is_empty() {
        runs.push((&text[offsets[at]..], false));
    }
    runs
}

/// Terminal columns of a character: 0 for combining marks and format
/// characters, 2 for East Asian wide and emoji, 1 otherwise.
pub(super) fn char_width(c: char) -> usize {
    let u = c as u32;
    match u {
        0x0300..=0x036F
        | 0x0483..=0x0489
        | 0x0591..=0x05BD
        | 0x0610..=0x061A
        | 0x064B..=0x065F
        | 0x0E31
        | 0x0E34..=0x0E3A
        | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF
        | 0x200B..=0x200F
        | 0x2028..=0x202E
        | 0x2060..=0x2064
        | 0x20D0..=0x20FF
        | 0xFE00..=0xFE0F
        | 0xFE20..=0xFE2F
        | 0xFEFF => 0,
        0x1100..=0x115F
        | 0x231A..=0x231B
        | 0x2329..=0x232A
        | 0x23E9..=0x23EC
        | 0x23F0
        | 0x23F3
        | 0x25FD..=0x25FE
        | 0x2614..=0x2615
        | 0x2648..=0x2653
        | 0x267F
        | 0x2693
        | 0x26A1
        | 0x26AA..=0x26AB
        | 0x26BD..=0x26BE
        | 0x26C4..=0x26C5
        | 0x26CE
        | 0x26D4
        | 0x26EA
        | 0x26F2..=0x26F5
        | 0x26FA
        | 0x26FD
        | 0x2705
        | 0x270A..=0x270B
        | 0x2728
        | 0x274C
        | 0x274E
        | 0x2753..=0x2755
        | 0x2757
        | 0x2795..=0x2797
        | 0x27B0
        | 0x27BF
        | 0x2B1B..=0x2B1C
        | 0x2B50
        | 0x2B55
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE10..=0xFE19
        | 0xFE30..=0xFE6F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F004
        | 0x1F0CF
        | 0x1F18E
        | 0x1F191..=0x1F19A
        | 0x1F200..=0x1F251
        | 0x1F300..=0x1F64F
        | 0x1F680..=0x1F6FF
        | 0x1F7E0..=0x1F7EB
        | 0x1F900..=0x1F9FF
        | 0x1FA70..=0x1FAFF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

pub(super) fn text_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// The bidi controls a terminal reorders text by: embeddings and
/// overrides (U+202A-202E), isolates (U+2066-2069), the marks U+200E/200F.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c as u32, 0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F)
}

/// Text fit for a terminal: control characters (escape sequences
/// included), line breaks and bidi overrides become spaces, runs of
/// whitespace one space.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let blank = c.is_whitespace() || c.is_control() || is_bidi_control(c);
        if blank {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// `s` cut to at most `width` columns, with `…` when cut.
pub(super) fn fit(s: &str, width: usize) -> String {
    if text_width(s) <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `s` fitted and padded on the right to exactly `width` columns.
pub(super) fn pad_right(s: &str, width: usize) -> String {
    let s = fit(s, width);
    let pad = width.saturating_sub(text_width(&s));
    format!("{s}{}", " ".repeat(pad))
}

/// `s` fitted and padded on the left to exactly `width` columns.
pub(super) fn pad_left(s: &str, width: usize) -> String {
    let s = fit(s, width);
    let pad = width.saturating_sub(text_width(&s));
    format!("{}{s}", " ".repeat(pad))
}

/// Words of `s` in lines of at most `width` columns, each line starting
/// with `indent` (counted in the width); words longer than a line are cut.
pub(super) fn wrap(s: &str, width: usize, indent: &str) -> Vec<String> {
    let room = width.saturating_sub(text_width(indent)).max(8);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word.to_string();
        loop {
            let w = text_width(&word);
            let need = if used == 0 { w } else { used + 1 + w };
            if need <= room {
                if used > 0 {
                    line.push(' ');
                }
                line.push_str(&word);
                used = need;
                break;
            }
            if used > 0 {
                lines.push(format!("{indent}{line}"));
                line.clear();
                used = 0;
                continue;
            }
            // A word longer than a line: cut it.
            let mut head = String::new();
            let mut head_w = 0;
            let mut rest = String::new();
            for c in word.chars() {
                let cw = char_width(c);
                if rest.is_empty() && head_w + cw <= room {
                    head.push(c);
                    head_w += cw;
                } else {
                    rest.push(c);
                }
            }
            lines.push(format!("{indent}{head}"));
            if rest.is_empty() {
                break;
            }
            word = rest;
        }
    }
    if used > 0 {
        lines.push(format!("{indent}{line}"));
    }
    lines
}
