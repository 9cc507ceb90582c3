//! Renderers of a finished `Report`: a self-contained HTML page, an
//! 80-column terminal table and a long ("tidy") CSV. Pure functions of the
//! report; they never panic, print NaN or inf, and say "no data" where a
//! report has none.
//!
//! # CSV
//!
//! One row per figure: `section,theme_id,segment,bucket_start,metric,
//! value,ci_low,ci_high,n` (RFC 4180, CRLF). Values are the report's own, at
//! full precision and in its units (scores as they are, shares 0..1, counts
//! as integers); an empty cell is a missing value. `bucket_start` is a UTC
//! date (`2025-07-07`), or RFC 3339 for an instant that is not a midnight.
//!
//! | section       | key columns             | metrics |
//! |---------------|-------------------------|---------|
//! | `kpi`         | –                       | `items`, `previous_items`, `analysed`, `retag_pending`, `taxonomy_version`, `sentiment.{negative,neutral,positive,mixed}` (share, n = analysed), and the scores `net_sentiment`, `nps`, `csat`, `ces` |
//! | `theme`       | theme_id                | `mentions`, `share`, `previous_mentions`, `previous_share`, `sentiment.*` (share of the aspect labels, n = labels), scores `net_sentiment`, `nps`, `csat`, intervals `nps_impact`, `csat_impact` |
//! | `segment`     | segment                 | `items`, `net_sentiment` (a matrix column) |
//! | `matrix`      | theme_id, segment       | `mentions`, `share`, `net_sentiment`, `p_value`, `significant` (1/0), `direction` (+1/-1/0) |
//! | `trend`       | bucket_start            | `items`, scores `net_sentiment`, `nps` |
//! | `trend_theme` | bucket_start, theme_id  | `mentions`, `share` |
//! | `emerging`    | theme_id                | `mentions`, `share`, `previous_mentions`, `previous_share`, `p_value`, `adjusted_p_value` |
//! | `verbatim`    | theme_id, segment, bucket_start = created_at | `nps` (the comment's answer) |
//!
//! A score `M` is the row `M` (estimate in `value`, interval, `n`), a row
//! `M.previous` (value in the comparison period, `n` = its answers) when
//! that period has answers, and with a change the rows `M.change` (delta and
//! its interval), `M.change.p_value` and `M.change.significant` (1/0).
//!
//! # HTML figure attributes
//!
//! Every number the page prints is an element (a `<span class="fig">`, an
//! SVG `<text>`, `<tspan>`, `<circle>` or `<rect>`) that carries the CSV
//! key of its figure:
//!
//! - `data-section`, `data-metric`: the CSV's `section` and `metric`;
//! - `data-theme`, `data-segment`, `data-bucket`: the CSV's `theme_id`,
//!   `segment` and `bucket_start`, on the figures of the sections keyed by
//!   them (table above);
//! - `data-value`: the value rounded as printed, in the report's units:
//!   counts as integers, scores, impacts and changes with one decimal
//!   (`format!("{:.1}")`, so `-0.0` can appear), shares as the 0..1
//!   fraction with three decimals (`format!("{:.3}")`, printed as a
//!   percentage with one decimal), p-values with three decimals (printed as
//!   `<0.001` below that). A score without an estimate has no `data-value`
//!   and prints its `data-n` instead;
//! - `data-low`, `data-high` (one decimal): the 95% interval printed next
//!   to the value (the CSV's `ci_low`, `ci_high`); `data-n`: the sample size
//!   printed next to it (the CSV's `n`); `data-significant="true|false"` on
//!   changes and matrix cells.
//!
//! So `[data-section="kpi"][data-metric="nps"]` is the NPS tile's value, and
//! `[data-section="theme"][data-theme="delivery"][data-metric="nps_impact"]`
//! a theme's NPS impact. A figure may be printed in more than one place
//! (a theme's mentions in the heat map and the table); every copy carries
//! the same attributes. Chart marks (points, bars) carry them too, their
//! numbers being in their `<title>` tooltips.
//!
//! Sections (`<section id>`): `kpis`, `nps-trend`, `sentiment-trend`,
//! `theme-impact`, `heatmap`, `emerging`, `verbatims`, `themes`. Charts are
//! `<svg role="img" aria-label data-chart>` with `data-chart` one of
//! `nps-trend`, `sentiment-trend`, `theme-impact`, `heatmap` and, with a
//! segment matrix, `segment-matrix` (in the `heatmap` section); a chart
//! with nothing to draw is a `<p class="empty" data-empty-chart="ID">`
//! instead. Verbatim cards
//! are `<figure class="card" data-item="ID">` in groups `<div
//! class="group" data-theme data-segment>`, highlights in `<mark>`.

mod common;
mod example;
mod fig;
mod html;
mod svg;
mod table;
mod tidy;

#[cfg(test)]
mod tests;

use crate::domain::Report;
pub use common::{is_bidi_control, terminal_safe};

/// The report as one self-contained HTML page (inline CSS and SVG, no
/// script, nothing loaded from elsewhere), titled `title`.
pub fn html(report: &Report, title: &str) -> String {
    html::render(report, title)
}

/// The report as plain text for an 80-column terminal.
pub fn table(report: &Report) -> String {
    table::render(report)
}

/// Every figure of the report as one long CSV table (see the module
/// documentation for its rows).
pub fn csv(report: &Report) -> String {
    tidy::render(report)
}

/// A realistic report (26 weekly buckets, 8 themes, a channel matrix,
/// emerging themes, verbatims in several scripts) for tests and demos.
#[doc(hidden)]
pub fn example_report() -> Report {
    example::report()
}
