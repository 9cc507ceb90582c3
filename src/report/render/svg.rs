//! Inline SVG charts. Each returns an `<svg class="chart" role="img"
//! aria-label="…" data-chart="ID">` or, with nothing to draw, a
//! `<p class="empty">`.

use std::fmt::Write;

use crate::domain::{BucketSize, Report, TrendBucket};

use super::common::{
    axis_date, escape, fit, human, instant_key, segment_label, sentiment_shares, signed,
    text_width, theme_path, year, Kind, SENTIMENT_NAMES,
};
use super::fig::Fig;

/// The drawing width (the page's content width at 1280 px); charts scale
/// with the page.
const WIDTH: f64 = 1120.0;
/// Where theme names end in the theme charts.
const LABEL_W: f64 = 300.0;

pub(super) const NEGATIVE: (u8, u8, u8) = (0xcf, 0x22, 0x2e);
pub(super) const NEUTRAL: (u8, u8, u8) = (0x6e, 0x77, 0x81);
pub(super) const POSITIVE: (u8, u8, u8) = (0x1a, 0x7f, 0x37);
pub(super) const MIXED: (u8, u8, u8) = (0xbf, 0x87, 0x00);
const SHARE_HUE: (u8, u8, u8) = (0x09, 0x69, 0xda);

pub(super) fn empty(text: &str) -> String {
    format!("<p class=\"empty\">{}</p>\n", escape(text))
}

/// The note in place of chart `id` when it has nothing to draw.
fn empty_chart(id: &str, text: &str) -> String {
    format!(
        "<p class=\"empty\" data-empty-chart=\"{id}\">{}</p>\n",
        escape(text)
    )
}

fn open(id: &str, label: &str, height: f64) -> String {
    format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" data-chart=\"{id}\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" preserveAspectRatio=\"xMinYMin meet\">\n",
        escape(label),
    )
}

/// A coordinate: one decimal is finer than a pixel.
fn c(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "0".into()
    }
}

/// `#rrggbb` between white (`t` = 0) and `hue` (`t` = 1).
fn tint(hue: (u8, u8, u8), t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |h: u8| (255.0 + (h as f64 - 255.0) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(hue.0), mix(hue.1), mix(hue.2))
}

/// A linear map from data to drawing coordinates.
#[derive(Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    fn at(&self, x: f64) -> f64 {
        if self.d1 == self.d0 {
            return (self.r0 + self.r1) / 2.0;
        }
        self.r0 + (x - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }
}

/// A domain padded out to round ticks: `(low, high, ticks)`.
fn nice(low: f64, high: f64, target: usize) -> (f64, f64, Vec<f64>) {
    let (mut low, mut high) = (low, high);
    if !low.is_finite() || !high.is_finite() {
        return (0.0, 1.0, vec![0.0, 1.0]);
    }
    if high - low < 1e-9 {
        low -= 1.0;
        high += 1.0;
    }
    let raw = (high - low) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let start = (low / step).floor() * step;
    let end = (high / step).ceil() * step;
    // Near the ends of f64 (a server's absurd value) the rounding overflows:
    // the same fallback as for infinite bounds (values are clamped to it).
    if !(start.is_finite() && end.is_finite() && step.is_finite() && step > 0.0) {
        return (0.0, 1.0, vec![0.0, 1.0]);
    }
    let mut ticks = Vec::new();
    let mut t = start;
    while t <= end + step * 1e-6 && ticks.len() < 50 {
        ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    (start, end, ticks)
}

fn tick_label(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

/// Index-based x positions of `n` buckets across `[left, right]`.
fn bucket_x(i: usize, n: usize, left: f64, right: f64) -> f64 {
    left + (i as f64 + 0.5) * (right - left) / n.max(1) as f64
}

/// Date labels under bucket positions: at most about ten, the year on the
/// first and where it changes.
fn x_labels(
    out: &mut String,
    trends: &[TrendBucket],
    bucket: BucketSize,
    left: f64,
    right: f64,
    y: f64,
) {
    let n = trends.len();
    let every = n.div_ceil(10).max(1);
    let mut last_year = None;
    for (i, b) in trends.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let this_year = year(b.start);
        let with_year = last_year != Some(this_year);
        last_year = Some(this_year);
        let x = bucket_x(i, n, left, right);
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\"/><text class=\"tick\" x=\"{x}\" y=\"{ty}\" text-anchor=\"middle\">{}</text>",
            escape(&axis_date(
                b.start,
                matches!(bucket, BucketSize::Month | BucketSize::Year),
                with_year,
            )),
            x = c(x),
            y0 = c(y),
            y1 = c(y + 4.0),
            ty = c(y + 17.0),
        );
    }
}

/// Horizontal grid lines and their labels on the left (or right).
fn y_grid(
    out: &mut String,
    ticks: &[f64],
    scale: Scale,
    left: f64,
    right: f64,
    labels_right: bool,
) {
    for t in ticks {
        let y = scale.at(*t);
        let class = if *t == 0.0 && !labels_right {
            "zero"
        } else {
            "grid"
        };
        if !labels_right {
            let _ = writeln!(
                out,
                "<line class=\"{class}\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>",
                c(left),
                c(right),
                y = c(y)
            );
        }
        let (x, anchor) = if labels_right {
            (right + 8.0, "start")
        } else {
            (left - 8.0, "end")
        };
        let _ = writeln!(
            out,
            "<text class=\"tick{}\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            if labels_right { " right" } else { "" },
            c(x),
            c(y + 4.0),
            tick_label(*t)
        );
    }
}

/// Runs of consecutive buckets that have a value.
fn runs<T: Copy>(values: &[Option<T>]) -> Vec<Vec<(usize, T)>> {
    let mut out: Vec<Vec<(usize, T)>> = Vec::new();
    let mut current = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => current.push((i, *v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `nps-trend`: NPS per bucket, its interval as a band, the comparison
/// period's NPS dashed.
pub(super) fn nps_trend(report: &Report) -> String {
    let estimates: Vec<_> = report.trends.iter().map(|b| b.nps.estimate).collect();
    if estimates.iter().all(Option::is_none) {
        return empty_chart(
            "nps-trend",
            "No NPS answers in any bucket: nothing to chart.",
        );
    }
    let (h, left, right, top, bottom) = (300.0, 56.0, WIDTH - 24.0, 16.0, 300.0 - 40.0);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for e in estimates.iter().flatten() {
        for v in [e.low, e.high, e.value] {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    let previous = report.nps.previous.filter(|p| p.is_finite());
    if let Some(p) = previous {
        lo = lo.min(p);
        hi = hi.max(p);
    }
    let (d0, d1, ticks) = nice(lo.max(-100.0), hi.min(100.0), 6);
    let y = Scale {
        d0,
        d1,
        r0: bottom,
        r1: top,
    };
    let n = report.trends.len();
    let x = |i: usize| bucket_x(i, n, left, right);

    let mut out = open(
        "nps-trend",
        &format!("NPS per {} with its 95% interval", report.bucket.as_str()),
        h,
    );
    let slot = (right - left) / n as f64;
    for (i, (bucket, e)) in report.trends.iter().zip(&estimates).enumerate() {
        if e.is_none() {
            let fig = Fig::missing("trend", "nps", bucket.nps.n).bucket(instant_key(bucket.start));
            let _ = writeln!(
                out,
                "<rect class=\"gap\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}: no NPS answers</title></rect>",
                c(x(i) - slot / 2.0),
                c(top),
                c(slot),
                c(bottom - top),
                escape(&instant_key(bucket.start))
            );
            if slot >= 24.0 {
                let _ = writeln!(
                    out,
                    "<text class=\"gap-text\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">n = <tspan{}>{}</tspan></text>",
                    c(x(i)),
                    c(top + 12.0),
                    fig.attrs(),
                    fig.text()
                );
            }
        }
    }
    y_grid(&mut out, &ticks, y, left, right, false);
    let clamp = |v: f64| v.clamp(d0, d1);
    for run in runs(&estimates) {
        if run.len() == 1 {
            let (i, e) = run[0];
            let _ = writeln!(
                out,
                "<line class=\"band-whisker\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>",
                c(y.at(clamp(e.low))),
                c(y.at(clamp(e.high))),
                x = c(x(i))
            );
            continue;
        }
        let mut points: Vec<String> = run
            .iter()
            .map(|(i, e)| format!("{},{}", c(x(*i)), c(y.at(clamp(e.high)))))
            .collect();
        points.extend(
            run.iter()
                .rev()
                .map(|(i, e)| format!("{},{}", c(x(*i)), c(y.at(clamp(e.low))))),
        );
        let _ = writeln!(
            out,
            "<polygon class=\"band\" points=\"{}\"/>",
            points.join(" ")
        );
        let line: Vec<String> = run
            .iter()
            .map(|(i, e)| format!("{},{}", c(x(*i)), c(y.at(clamp(e.value)))))
            .collect();
        let _ = writeln!(
            out,
            "<polyline class=\"line nps\" points=\"{}\"/>",
            line.join(" ")
        );
    }
    if let Some(p) = previous {
        let _ = writeln!(
            out,
            "<line class=\"reference\" x1=\"{}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\"/>",
            c(left),
            c(right),
            py = c(y.at(p))
        );
    }
    let radius = if n > 60 { 2.0 } else { 3.5 };
    for (i, (bucket, e)) in report.trends.iter().zip(&estimates).enumerate() {
        let Some(e) = e else { continue };
        let fig = Fig::interval("trend", "nps", e)
            .bucket(instant_key(bucket.start))
            .n(bucket.nps.n);
        let _ = writeln!(
            out,
            "<circle class=\"point nps\" cx=\"{}\" cy=\"{}\" r=\"{radius}\"{}><title>{}: NPS {} (95% CI {} to {}), n = {}</title></circle>",
            c(x(i)),
            c(y.at(clamp(e.value))),
            fig.attrs(),
            escape(&instant_key(bucket.start)),
            human(Kind::Score, e.value),
            human(Kind::Score, e.low),
            human(Kind::Score, e.high),
            human(Kind::Count, bucket.nps.n as f64)
        );
    }
    x_labels(&mut out, &report.trends, report.bucket, left, right, bottom);
    out.push_str("</svg>\n");
    out
}

/// `sentiment-trend`: net sentiment per bucket over volume bars.
pub(super) fn sentiment_trend(report: &Report) -> String {
    let n = report.trends.len();
    let values: Vec<Option<f64>> = report
        .trends
        .iter()
        .map(|b| {
            b.net_sentiment
                .estimate
                .map(|e| e.value)
                .filter(|v| v.is_finite())
        })
        .collect();
    let max_items = report.trends.iter().map(|b| b.items).max().unwrap_or(0);
    if n == 0 || (max_items == 0 && values.iter().all(Option::is_none)) {
        return empty_chart(
            "sentiment-trend",
            "No items in any bucket: nothing to chart.",
        );
    }
    let (h, left, right, top, bottom) = (300.0, 56.0, WIDTH - 64.0, 16.0, 300.0 - 40.0);
    let (lo, hi) = values
        .iter()
        .flatten()
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (d0, d1, ticks) = nice(lo.max(-100.0), hi.min(100.0), 6);
    let y = Scale {
        d0,
        d1,
        r0: bottom,
        r1: top,
    };
    let (_, v1, volume_ticks) = nice(0.0, max_items.max(1) as f64, 4);
    let vy = Scale {
        d0: 0.0,
        d1: v1,
        r0: bottom,
        r1: top,
    };
    let x = |i: usize| bucket_x(i, n, left, right);
    let slot = (right - left) / n as f64;
    let bar_w = (slot * 0.7).max(1.0);

    let mut out = open(
        "sentiment-trend",
        &format!(
            "Net sentiment per {}, with the number of items as bars",
            report.bucket.as_str()
        ),
        h,
    );
    y_grid(&mut out, &volume_ticks, vy, left, right, true);
    for (i, bucket) in report.trends.iter().enumerate() {
        let top_y = vy.at(bucket.items as f64);
        let fig = Fig::count("trend", "items", bucket.items).bucket(instant_key(bucket.start));
        let _ = writeln!(
            out,
            "<rect class=\"volume\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"{}><title>{}: {} items</title></rect>",
            c(x(i) - bar_w / 2.0),
            c(top_y),
            c(bar_w),
            c((bottom - top_y).max(0.0)),
            fig.attrs(),
            escape(&instant_key(bucket.start)),
            human(Kind::Count, bucket.items as f64)
        );
    }
    y_grid(&mut out, &ticks, y, left, right, false);
    for run in runs(&values) {
        if run.len() > 1 {
            let line: Vec<String> = run
                .iter()
                .map(|(i, v)| format!("{},{}", c(x(*i)), c(y.at(*v))))
                .collect();
            let _ = writeln!(
                out,
                "<polyline class=\"line sentiment\" points=\"{}\"/>",
                line.join(" ")
            );
        }
    }
    let radius = if n > 60 { 2.0 } else { 3.0 };
    for (i, bucket) in report.trends.iter().enumerate() {
        let Some(e) = bucket
            .net_sentiment
            .estimate
            .filter(|e| e.value.is_finite())
        else {
            continue;
        };
        let fig = Fig::interval("trend", "net_sentiment", &e)
            .bucket(instant_key(bucket.start))
            .n(bucket.net_sentiment.n);
        let _ = writeln!(
            out,
            "<circle class=\"point sentiment\" cx=\"{}\" cy=\"{}\" r=\"{radius}\"{}><title>{}: net sentiment {} (95% CI {} to {}), n = {}</title></circle>",
            c(x(i)),
            c(y.at(e.value)),
            fig.attrs(),
            escape(&instant_key(bucket.start)),
            human(Kind::Score, e.value),
            human(Kind::Score, e.low),
            human(Kind::Score, e.high),
            human(Kind::Count, bucket.net_sentiment.n as f64)
        );
    }
    x_labels(&mut out, &report.trends, report.bucket, left, right, bottom);
    out.push_str("</svg>\n");
    out
}

/// A theme's label in a chart: `Parent › Child`, cut to `max` columns
/// (wide characters count two), and the full label for the tooltip.
fn chart_label(report: &Report, theme_id: &str, max: usize) -> (String, String) {
    let (parent, name) = theme_path(report, theme_id);
    let full = match parent {
        Some(parent) => format!("{parent} › {name}"),
        None => name.clone(),
    };
    let shown = if text_width(&full) <= max {
        full.clone()
    } else if text_width(&name) + 4 <= max {
        format!("… › {name}")
    } else {
        fit(&name, max)
    };
    (shown, full)
}

/// `theme-impact`: NPS impact per theme, bars from zero, interval whiskers.
pub(super) fn theme_impact(report: &Report) -> String {
    let rows: Vec<_> = report
        .themes
        .iter()
        .filter_map(|t| t.nps_impact.filter(|i| i.value.is_finite()).map(|i| (t, i)))
        .collect();
    if rows.is_empty() {
        return empty_chart(
            "theme-impact",
            "No theme has an NPS impact (no NPS answers): nothing to chart.",
        );
    }
    let row_h = 28.0;
    let (top, plot_l, plot_r, value_x) = (34.0, LABEL_W + 12.0, WIDTH - 170.0, WIDTH - 156.0);
    let h = top + row_h * rows.len() as f64 + 10.0;
    let mut lo = 0.0f64;
    let mut hi = 0.0f64;
    for (_, i) in &rows {
        for v in [i.low, i.high, i.value] {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    let (d0, d1, ticks) = nice(lo, hi, 8);
    let x = Scale {
        d0,
        d1,
        r0: plot_l,
        r1: plot_r,
    };
    let mut out = open(
        "theme-impact",
        "NPS impact per theme (overall NPS minus NPS without the theme's items) with 95% intervals",
        h,
    );
    let bottom = top + row_h * rows.len() as f64;
    for t in &ticks {
        let tx = x.at(*t);
        let _ = writeln!(
            out,
            "<line class=\"{}\" x1=\"{tx}\" y1=\"{}\" x2=\"{tx}\" y2=\"{}\"/><text class=\"tick\" x=\"{tx}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            if *t == 0.0 { "zero" } else { "grid" },
            c(top - 4.0),
            c(bottom),
            c(top - 10.0),
            tick_label(*t),
            tx = c(tx),
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"tick head\" x=\"{}\" y=\"{}\" text-anchor=\"start\">impact (95% CI)</text>",
        c(value_x),
        c(top - 10.0)
    );
    let zero = x.at(0.0);
    for (row, (theme, impact)) in rows.iter().enumerate() {
        let cy = top + row_h * (row as f64 + 0.5);
        let (shown, full) = chart_label(report, &theme.theme_id, 44);
        let clear = impact.low > 0.0 || impact.high < 0.0;
        let class = format!(
            "bar {}{}",
            if impact.value < 0.0 {
                "negative"
            } else {
                "positive"
            },
            if clear { "" } else { " unclear" }
        );
        let vx = x.at(impact.value);
        let fig = Fig::interval("theme", "nps_impact", impact).theme(&theme.theme_id);
        let _ = writeln!(
            out,
            "<g><title>{}: NPS impact {} (95% CI {} to {})</title>",
            escape(&full),
            signed(impact.value),
            signed(impact.low),
            signed(impact.high)
        );
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            c(LABEL_W),
            c(cy + 4.0),
            escape(&shown)
        );
        let _ = writeln!(
            out,
            "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\"/>",
            c(zero.min(vx)),
            c(cy - 7.0),
            c((vx - zero).abs().max(0.5)),
        );
        let (wl, wh) = (x.at(impact.low), x.at(impact.high));
        let _ = writeln!(
            out,
            "<path class=\"whisker\" d=\"M{wl},{cy} H{wh} M{wl},{a} V{b} M{wh},{a} V{b}\"/>",
            wl = c(wl),
            wh = c(wh),
            cy = c(cy),
            a = c(cy - 5.0),
            b = c(cy + 5.0)
        );
        let _ = writeln!(
            out,
            "<text class=\"value\" x=\"{}\" y=\"{}\"{}>{} <tspan class=\"ci\">[{}, {}]</tspan></text></g>",
            c(value_x),
            c(cy + 4.0),
            fig.attrs(),
            signed(impact.value),
            signed(impact.low),
            signed(impact.high)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The theme x sentiment heat map: shares of each aspect sentiment.
pub(super) fn sentiment_heatmap(report: &Report) -> String {
    if report.themes.is_empty() {
        return empty_chart("heatmap", "No themes in this period: nothing to chart.");
    }
    let hues = [NEGATIVE, NEUTRAL, POSITIVE, MIXED];
    let (row_h, top, cell_w, x0) = (28.0, 30.0, 130.0, LABEL_W + 12.0);
    let h = top + row_h * report.themes.len() as f64 + 8.0;
    let mut out = open(
        "heatmap",
        "Heat map: share of each theme's mentions by sentiment (negative, neutral, positive, mixed)",
        h,
    );
    for (j, name) in SENTIMENT_NAMES.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text class=\"head\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{name}</text>",
            c(x0 + cell_w * (j as f64 + 0.5)),
            c(top - 10.0)
        );
    }
    let mentions_x = x0 + cell_w * 4.0 + 24.0;
    let _ = writeln!(
        out,
        "<text class=\"head\" x=\"{}\" y=\"{}\" text-anchor=\"end\">mentions</text>",
        c(mentions_x + 70.0),
        c(top - 10.0)
    );
    for (row, theme) in report.themes.iter().enumerate() {
        let y0 = top + row_h * row as f64;
        let (shown, full) = chart_label(report, &theme.theme_id, 44);
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{}</title>{}</text>",
            c(LABEL_W),
            c(y0 + row_h / 2.0 + 4.0),
            escape(&full),
            escape(&shown)
        );
        let shares = sentiment_shares(&theme.sentiment);
        for (j, (name, hue)) in SENTIMENT_NAMES.iter().zip(hues).enumerate() {
            let cx = x0 + cell_w * j as f64;
            match shares {
                None => {
                    let _ = writeln!(
                        out,
                        "<rect class=\"cell none\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}: no sentiment labels</title></rect><text class=\"cell-text muted\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">–</text>",
                        c(cx + 1.0),
                        c(y0 + 1.0),
                        c(cell_w - 2.0),
                        c(row_h - 2.0),
                        escape(&full),
                        c(cx + cell_w / 2.0),
                        c(y0 + row_h / 2.0 + 4.0)
                    );
                }
                Some((shares, total)) => {
                    let share = shares[j];
                    let t = 0.06 + 0.94 * share;
                    let fig = Fig::new("theme", &format!("sentiment.{name}"), Kind::Share, share)
                        .theme(&theme.theme_id)
                        .n(total);
                    let _ = writeln!(
                        out,
                        "<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}, {}: {} of {} labelled mentions</title></rect><text class=\"cell-text{}\" x=\"{}\" y=\"{}\" text-anchor=\"middle\"{}>{}</text>",
                        c(cx + 1.0),
                        c(y0 + 1.0),
                        c(cell_w - 2.0),
                        c(row_h - 2.0),
                        tint(hue, t),
                        escape(&full),
                        name,
                        human(Kind::Share, share),
                        human(Kind::Count, total as f64),
                        if t > 0.5 { " on-dark" } else { "" },
                        c(cx + cell_w / 2.0),
                        c(y0 + row_h / 2.0 + 4.0),
                        fig.attrs(),
                        human(Kind::Share, share)
                    );
                }
            }
        }
        let fig = Fig::count("theme", "mentions", theme.mentions).theme(&theme.theme_id);
        let _ = writeln!(
            out,
            "<text class=\"value\" x=\"{}\" y=\"{}\" text-anchor=\"end\"{}>{}</text>",
            c(mentions_x + 70.0),
            c(y0 + row_h / 2.0 + 4.0),
            fig.attrs(),
            fig.text()
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The theme x segment matrix: share of each segment value's items that
/// carry the theme; significant cells outlined.
pub(super) fn segment_matrix(report: &Report) -> String {
    let Some(matrix) = &report.matrix else {
        return String::new();
    };
    if matrix.columns.is_empty() || matrix.cells.is_empty() {
        return empty_chart(
            "segment-matrix",
            "No segment values in this period: no matrix.",
        );
    }
    let mut row_ids: Vec<&str> = Vec::new();
    for cell in &matrix.cells {
        if !row_ids.contains(&cell.theme_id.as_str()) {
            row_ids.push(&cell.theme_id);
        }
    }
    let cols = matrix.columns.len();
    let x0 = LABEL_W + 12.0;
    let cell_w = ((WIDTH - x0) / cols as f64).min(110.0);
    let (row_h, top) = (28.0, 44.0);
    let h = top + row_h * row_ids.len() as f64 + 8.0;
    let max_share = matrix
        .cells
        .iter()
        .map(|c| c.share)
        .filter(|s| s.is_finite())
        .fold(0.0f64, f64::max);
    let mut out = open(
        "segment-matrix",
        &format!(
            "Matrix: share of each {} value's items that carry each theme; significant cells outlined",
            matrix.field
        ),
        h,
    );
    let max_chars = ((cell_w - 8.0) / 7.0).floor().max(3.0) as usize;
    for (j, column) in matrix.columns.iter().enumerate() {
        let cx = x0 + cell_w * (j as f64 + 0.5);
        let label = segment_label(&column.value);
        let shown = fit(label, max_chars);
        let fig = Fig::count("segment", "items", column.items).segment(&column.value);
        let _ = writeln!(
            out,
            "<text class=\"head\" x=\"{}\" y=\"{}\" text-anchor=\"middle\"><title>{}</title>{}</text><text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">n = <tspan{}>{}</tspan></text>",
            c(cx),
            c(top - 22.0),
            escape(label),
            escape(&shown),
            c(cx),
            c(top - 8.0),
            fig.attrs(),
            fig.text()
        );
    }
    for (row, theme_id) in row_ids.iter().enumerate() {
        let y0 = top + row_h * row as f64;
        let (shown, full) = chart_label(report, theme_id, 44);
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{}</title>{}</text>",
            c(LABEL_W),
            c(y0 + row_h / 2.0 + 4.0),
            escape(&full),
            escape(&shown)
        );
        for (j, column) in matrix.columns.iter().enumerate() {
            let cx = x0 + cell_w * j as f64;
            let Some(cell) = matrix
                .cells
                .iter()
                .find(|c| c.theme_id == *theme_id && c.segment_value == column.value)
            else {
                continue;
            };
            let t = if max_share > 0.0 {
                0.05 + 0.75 * cell.share / max_share
            } else {
                0.05
            };
            let arrow = match (cell.significant, cell.direction) {
                (true, d) if d > 0 => " ▲",
                (true, d) if d < 0 => " ▼",
                _ => "",
            };
            let fig = Fig::new("matrix", "share", Kind::Share, cell.share)
                .theme(theme_id)
                .segment(&column.value)
                .significant(cell.significant);
            let net = cell
                .net_sentiment
                .map(|v| format!(", net sentiment {}", human(Kind::Score, v)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<rect class=\"cell{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{} × {}: {} ({} of {} items){net}, p = {}{}</title></rect><text class=\"cell-text{}\" x=\"{}\" y=\"{}\" text-anchor=\"middle\"{}>{}{arrow}</text>",
                if cell.significant { " sig" } else { "" },
                c(cx + 1.5),
                c(y0 + 1.5),
                c(cell_w - 3.0),
                c(row_h - 3.0),
                tint(SHARE_HUE, t),
                escape(&full),
                escape(segment_label(&column.value)),
                human(Kind::Share, cell.share),
                human(Kind::Count, cell.mentions as f64),
                human(Kind::Count, column.items as f64),
                human(Kind::P, cell.p_value),
                if cell.significant { " (significant)" } else { "" },
                if t > 0.55 { " on-dark" } else { "" },
                c(cx + cell_w / 2.0),
                c(y0 + row_h / 2.0 + 4.0),
                fig.attrs(),
                human(Kind::Share, cell.share)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
