//! The terminal rendering: plain text, at most `WIDTH` columns a line.

use std::fmt::Write;

use crate::domain::{normalize_text, Change, Interval, Report, Score};

use super::common::{
    bucket_adjective, date, fit, highlight_runs, human, instant_key, pad_left, pad_right,
    period_label, segment_label, signed, terminal_safe, theme_name, theme_path, wrap, Kind,
    ScoreKind,
};

pub(super) const WIDTH: usize = 80;

/// Theme-name column of the theme and matrix tables.
const NAME: usize = 26;
const MATRIX_NAME: usize = 20;
const MATRIX_CELL: usize = 9;

pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    kpis(&mut out, report);
    themes(&mut out, report);
    emerging(&mut out, report);
    matrix(&mut out, report);
    trends(&mut out, report);
    verbatims(&mut out, report);
    out
}

fn line(out: &mut String, text: &str) {
    out.push_str(text.trim_end());
    out.push('\n');
}

fn heading(out: &mut String, text: &str) {
    out.push('\n');
    line(out, text);
    line(out, &"=".repeat(text.chars().count().min(WIDTH)));
}

fn header(out: &mut String, report: &Report) {
    line(out, "VOICE-OF-CUSTOMER REPORT");
    line(
        out,
        &format!(
            "Period    {} ({} buckets)",
            period_label(&report.period),
            bucket_adjective(report.bucket)
        ),
    );
    line(
        out,
        &format!("Compared  {}", period_label(&report.comparison)),
    );
    line(
        out,
        &format!("Themes    taxonomy version {}", report.taxonomy_version),
    );
    if report.retag_pending > 0 {
        for l in wrap(
            &format!(
                "Note: {} analysed items still carry themes of an older taxonomy version and are not in the theme figures.",
                human(Kind::Count, report.retag_pending as f64)
            ),
            WIDTH,
            "",
        ) {
            line(out, &l);
        }
    }
    if report.items == 0 {
        out.push('\n');
        line(out, "No data: no feedback in this period.");
    }
}

/// `[low, high]`.
fn interval_text(interval: &Interval) -> String {
    format!(
        "[{}, {}]",
        human(Kind::Score, interval.low),
        human(Kind::Score, interval.high)
    )
}

/// `+3.2 [-1.1, 7.5] *` (`*`: significant).
fn change_text(change: &Change) -> String {
    format!(
        "{} [{}, {}]{}",
        signed(change.delta),
        signed(change.low),
        signed(change.high),
        if change.significant { " *" } else { "" }
    )
}

/// `12.3` or `n/a`.
fn value_text(score: &Score) -> String {
    score
        .estimate
        .map(|e| human(Kind::Score, e.value))
        .unwrap_or_else(|| "n/a".into())
}

fn kpis(out: &mut String, report: &Report) {
    heading(out, "KEY FIGURES");
    line(
        out,
        &format!(
            "{}{}  {}{}  {}",
            pad_right("", 16),
            pad_left("value", 6),
            pad_right("95% CI", 16),
            pad_left("n", 7),
            "change vs comparison (95% CI)"
        ),
    );
    line(
        out,
        &format!(
            "{}{}  {}{}  previous period {}",
            pad_right("Items", 16),
            pad_left(&human(Kind::Count, report.items as f64), 6),
            pad_right("", 16),
            pad_left("", 7),
            human(Kind::Count, report.previous_items as f64)
        ),
    );
    for kind in ScoreKind::ALL {
        let score = kind.of(report);
        let label = match kind {
            ScoreKind::Csat => "CSAT %",
            ScoreKind::Ces => "CES (1-7)",
            other => other.label(),
        };
        let change = match (&score.change, score.estimate) {
            (Some(change), _) => change_text(change),
            (None, None) => "no data".into(),
            (None, Some(_)) => "no comparison data".into(),
        };
        line(
            out,
            &format!(
                "{}{}  {}{}  {}",
                pad_right(label, 16),
                pad_left(&value_text(score), 6),
                pad_right(
                    &score
                        .estimate
                        .map(|e| interval_text(&e))
                        .unwrap_or_default(),
                    16
                ),
                pad_left(&human(Kind::Count, score.n as f64), 7),
                fit(&change, 25)
            ),
        );
    }
    if ScoreKind::ALL
        .iter()
        .any(|k| k.of(report).change.is_some_and(|c| c.significant))
    {
        line(out, "* significant change (p < 0.05)");
    }
}

/// A theme's name in `width` columns: `Parent › Child`, or `… › Child`
/// when that does not fit.
fn theme_label(report: &Report, theme_id: &str, width: usize) -> String {
    let (parent, name) = theme_path(report, theme_id);
    let name = terminal_safe(&name);
    match parent {
        None => fit(&name, width),
        Some(parent) => {
            let full = format!("{} › {name}", terminal_safe(&parent));
            if super::common::text_width(&full) <= width {
                full
            } else {
                fit(&format!("… › {name}"), width)
            }
        }
    }
}

fn themes(out: &mut String, report: &Report) {
    heading(out, "THEMES");
    if report.themes.is_empty() {
        line(out, "No data: no themes in this period.");
        return;
    }
    line(
        out,
        &format!(
            "{}{}{}{}{}  {}",
            pad_right("theme", NAME),
            pad_left("mentions", 9),
            pad_left("share", 7),
            pad_left("net", 7),
            pad_left("NPS", 7),
            "NPS impact (95% CI)"
        ),
    );
    for theme in &report.themes {
        let impact = theme
            .nps_impact
            .map(|i| format!("{} {}", signed(i.value), interval_text(&i)))
            .unwrap_or_else(|| "n/a".into());
        line(
            out,
            &format!(
                "{}{}{}{}{}  {}",
                pad_right(&theme_label(report, &theme.theme_id, NAME - 1), NAME),
                pad_left(&human(Kind::Count, theme.mentions as f64), 9),
                pad_left(&human(Kind::Share, theme.share), 7),
                pad_left(&value_text(&theme.net_sentiment), 7),
                pad_left(&value_text(&theme.nps), 7),
                fit(&impact, WIDTH - NAME - 30 - 2)
            ),
        );
    }
    line(
        out,
        "net: net aspect sentiment; NPS impact: overall NPS minus NPS without the theme",
    );
}

fn emerging(out: &mut String, report: &Report) {
    heading(out, "EMERGING THEMES");
    if report.emerging.is_empty() {
        line(
            out,
            "No theme's share rose significantly against the comparison period.",
        );
        return;
    }
    line(
        out,
        &format!(
            "{}{}{}{}  {}",
            pad_right("theme", 30),
            pad_left("mentions", 9),
            pad_left("share", 8),
            pad_left("was", 8),
            "p (Holm-adjusted)"
        ),
    );
    for theme in &report.emerging {
        line(
            out,
            &format!(
                "{}{}{}{}  {} ({})",
                pad_right(
                    &if theme.candidate {
                        fit(&format!("new: {}", terminal_safe(&theme.name)), 29)
                    } else {
                        theme_label(report, &theme.theme_id, 29)
                    },
                    30
                ),
                pad_left(&human(Kind::Count, theme.mentions as f64), 9),
                pad_left(&human(Kind::Share, theme.share), 8),
                pad_left(&human(Kind::Share, theme.previous_share), 8),
                human(Kind::P, theme.p_value),
                human(Kind::P, theme.adjusted_p_value)
            ),
        );
    }
}

fn matrix(out: &mut String, report: &Report) {
    let Some(matrix) = &report.matrix else {
        return;
    };
    heading(
        out,
        &fit(
            &format!("THEMES BY {}", terminal_safe(&matrix.field).to_uppercase()),
            WIDTH,
        ),
    );
    if matrix.columns.is_empty() || matrix.cells.is_empty() {
        line(out, "No data: no segment values in this period.");
        return;
    }
    line(
        out,
        "Share of the segment value's items carrying the theme.",
    );
    line(
        out,
        "+ / - : significantly above / below the rest of the row (Holm, p < 0.05)",
    );
    let fits = (WIDTH - MATRIX_NAME) / MATRIX_CELL;
    let shown = matrix.columns.len().min(fits);
    let mut head = pad_right("", MATRIX_NAME);
    let mut items = pad_right("items", MATRIX_NAME);
    for column in &matrix.columns[..shown] {
        head.push_str(&pad_left(
            &terminal_safe(segment_label(&column.value)),
            MATRIX_CELL - 1,
        ));
        head.push(' ');
        items.push_str(&pad_left(
            &human(Kind::Count, column.items as f64),
            MATRIX_CELL - 1,
        ));
        items.push(' ');
    }
    line(out, &head);
    line(out, &items);
    // Rows in the order of their first cell (the theme table's order).
    let mut row_ids: Vec<&str> = Vec::new();
    for cell in &matrix.cells {
        if !row_ids.contains(&cell.theme_id.as_str()) {
            row_ids.push(&cell.theme_id);
        }
    }
    for theme_id in row_ids {
        let mut text = pad_right(&theme_label(report, theme_id, MATRIX_NAME - 1), MATRIX_NAME);
        for column in &matrix.columns[..shown] {
            let cell = matrix
                .cells
                .iter()
                .find(|c| c.theme_id == theme_id && c.segment_value == column.value);
            let value = match cell {
                None => "-".to_string(),
                Some(c) => {
                    let mark = match (c.significant, c.direction) {
                        (true, d) if d > 0 => "+",
                        (true, d) if d < 0 => "-",
                        (true, _) => "*",
                        _ => " ",
                    };
                    format!("{}{mark}", human(Kind::Share, c.share))
                }
            };
            text.push_str(&pad_left(&value, MATRIX_CELL));
        }
        line(out, &text);
    }
    if shown < matrix.columns.len() {
        let more = matrix.columns.len() - shown;
        line(
            out,
            &format!(
                "({more} more column{} in the HTML and CSV reports)",
                if more == 1 { "" } else { "s" }
            ),
        );
    }
}

fn trends(out: &mut String, report: &Report) {
    heading(
        out,
        &format!("TRENDS ({})", bucket_adjective(report.bucket)),
    );
    if report.trends.is_empty() {
        line(out, "No data: no trend buckets.");
        return;
    }
    line(
        out,
        &format!(
            "{}{}{}{}  {}{}",
            pad_right("start", 20),
            pad_left("items", 7),
            pad_left("net", 8),
            pad_left("NPS", 8),
            pad_right("NPS 95% CI", 16),
            pad_left("NPS n", 7)
        ),
    );
    for bucket in &report.trends {
        line(
            out,
            &format!(
                "{}{}{}{}  {}{}",
                pad_right(&instant_key(bucket.start), 20),
                pad_left(&human(Kind::Count, bucket.items as f64), 7),
                pad_left(&value_text(&bucket.net_sentiment), 8),
                pad_left(&value_text(&bucket.nps), 8),
                pad_right(
                    &bucket
                        .nps
                        .estimate
                        .map(|e| interval_text(&e))
                        .unwrap_or_default(),
                    16
                ),
                pad_left(&human(Kind::Count, bucket.nps.n as f64), 7)
            ),
        );
    }
}

fn verbatims(out: &mut String, report: &Report) {
    heading(out, "VERBATIMS");
    if report.verbatims.iter().all(|g| g.verbatims.is_empty()) {
        line(out, "No data: no verbatims.");
        return;
    }
    line(out, "«» marks the part about the theme.");
    let field = report
        .matrix
        .as_ref()
        .map(|m| m.field.clone())
        .unwrap_or_else(|| "segment".into());
    for group in &report.verbatims {
        if group.verbatims.is_empty() {
            continue;
        }
        out.push('\n');
        let title = if group.segment_value.is_empty() {
            theme_name(report, &group.theme_id)
        } else {
            format!(
                "{} · {} = {}",
                theme_name(report, &group.theme_id),
                field,
                segment_label(&group.segment_value)
            )
        };
        line(
            out,
            &fit(&format!("── {} ──", terminal_safe(&title)), WIDTH),
        );
        for verbatim in &group.verbatims {
            let mut meta = vec![date(verbatim.created_at)];
            if !verbatim.channel.is_empty() {
                meta.push(terminal_safe(&verbatim.channel));
            }
            if !verbatim.sentiment.is_empty() {
                meta.push(terminal_safe(&verbatim.sentiment));
            }
            if let Some(nps) = verbatim.nps {
                meta.push(format!("NPS {nps}"));
            }
            meta.push(format!("item {}", terminal_safe(&verbatim.item_id)));
            line(out, &fit(&format!("  {}", meta.join(" · ")), WIDTH));
            let mut marked = String::new();
            for (piece, highlighted) in highlight_runs(&verbatim.text, &verbatim.highlights) {
                // Shown in its normalised form: mojibake such as U+0096 as "–".
                let piece = &*normalize_text(piece);
                if highlighted {
                    // Keep the marks on the words: spaces at a run's edges
                    // go outside them.
                    let inner = terminal_safe(piece);
                    let lead = piece.starts_with(char::is_whitespace);
                    let trail = piece.ends_with(char::is_whitespace);
                    if inner.is_empty() {
                        marked.push(' ');
                        continue;
                    }
                    let _ = write!(
                        marked,
                        "{}«{inner}»{}",
                        if lead { " " } else { "" },
                        if trail { " " } else { "" }
                    );
                } else {
                    marked.push_str(piece);
                }
            }
            for l in wrap(&terminal_safe(&marked), WIDTH, "    ") {
                line(out, &l);
            }
        }
    }
}
