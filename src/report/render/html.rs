//! The HTML page: one self-contained file (inline CSS and SVG, no script,
//! nothing fetched).

use std::fmt::Write;

use crate::domain::{normalize_text, Report, Score};

use super::common::{bucket_adjective, bucket_noun};
use super::common::{
    date_time, escape, highlight_runs, human, instant_key, period_label, segment_label, signed,
    theme_path, Kind, ScoreKind,
};
use super::fig::Fig;
use super::svg;

const STYLE: &str = r#"
*{box-sizing:border-box}
html{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{margin:0;background:#f6f7f9;color:#1f2328;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Noto Sans CJK JP","Hiragino Sans","Yu Gothic","Microsoft YaHei",sans-serif;font-variant-numeric:tabular-nums}
main{max-width:1200px;margin:0 auto;padding:24px 20px 40px}
header.top{margin:0 0 8px}
header.top h1{font-size:24px;line-height:1.25;margin:0 0 6px;font-weight:650;overflow-wrap:anywhere}
header.top p{margin:2px 0;color:#57606a}
header.top .notice{color:#9a6700}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:16px 20px 18px;margin:16px 0;break-inside:avoid}
section h2{font-size:16px;margin:0 0 2px;font-weight:650}
section h3{font-size:14px;margin:18px 0 8px;font-weight:600}
p.note{color:#57606a;margin:0 0 12px;font-size:13px}
p.empty{color:#57606a;font-style:italic;padding:20px;text-align:center;background:#f6f7f9;border-radius:6px;margin:8px 0}
.tiles{display:grid;grid-template-columns:repeat(5,minmax(0,1fr));gap:12px;margin-top:12px}
.tile{border:1px solid #d8dee4;border-radius:6px;padding:12px 14px;min-width:0}
.tile .label{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#57606a;font-weight:600}
.tile .scale{font-size:11px;color:#6e7781;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile .fig,.tile .nw{white-space:nowrap}
.tile .value{font-size:30px;font-weight:650;line-height:1.15;margin:6px 0 2px}
.tile .value .unit{font-size:16px;font-weight:500;color:#57606a;margin-left:2px}
.tile .value.none{font-size:18px;font-weight:500;color:#6e7781;font-style:italic;padding:8px 0}
.tile .ci{font-size:12px;color:#57606a}
.tile .chg{font-size:13px;margin-top:8px;font-weight:600}
.tile .chg-detail{font-size:11px;color:#6e7781;margin-top:2px}
.tile .chg-detail .badge{margin:0 6px 0 0}
.good{color:#1a7f37}.bad{color:#cf222e}.flat{color:#57606a}
.badge{display:inline-block;font-size:10px;font-weight:600;letter-spacing:.03em;text-transform:uppercase;border-radius:8px;padding:0 6px;margin-left:4px;vertical-align:1px}
.badge.sig{background:#ddf4ff;color:#0969da}.badge.ns{background:#eaeef2;color:#57606a}
svg.chart{display:block;width:100%;height:auto;margin-top:8px;overflow:visible}
svg.chart text{font-family:inherit;font-size:12px;fill:#1f2328}
svg.chart .tick{fill:#6e7781;font-size:11px}
svg.chart .head{fill:#57606a;font-size:12px;font-weight:600}
svg.chart .grid{stroke:#eaeef2;stroke-width:1}
svg.chart .zero{stroke:#8c959f;stroke-width:1}
svg.chart .axis{stroke:#afb8c1;stroke-width:1}
svg.chart .band{fill:#0969da;fill-opacity:.14;stroke:none}
svg.chart .band-whisker{stroke:#0969da;stroke-opacity:.35;stroke-width:3}
svg.chart .line{fill:none;stroke-width:2;stroke-linejoin:round}
svg.chart .line.nps{stroke:#0969da}
svg.chart .line.sentiment{stroke:#8250df}
svg.chart .point.nps{fill:#0969da;stroke:#fff;stroke-width:1}
svg.chart .point.sentiment{fill:#8250df;stroke:#fff;stroke-width:1}
svg.chart .reference{stroke:#57606a;stroke-width:1.2;stroke-dasharray:5 4}
svg.chart .volume{fill:#d8dee4}
svg.chart .gap{fill:#f6f7f9}
svg.chart .gap-text{fill:#8c959f;font-size:10px}
svg.chart .bar.negative{fill:#cf222e}
svg.chart .bar.positive{fill:#1a7f37}
svg.chart .bar.unclear{fill-opacity:.35}
svg.chart .whisker{stroke:#1f2328;stroke-width:1.2;fill:none}
svg.chart .value{font-weight:600}
svg.chart .value .ci{fill:#6e7781;font-weight:400}
svg.chart .cell.none{fill:#f6f7f9}
svg.chart .cell.sig{stroke:#1f2328;stroke-width:2.5}
svg.chart .cell-text{font-size:12px}
svg.chart .cell-text.on-dark{fill:#fff}
svg.chart .cell-text.muted{fill:#8c959f}
.legend{font-size:12px;color:#57606a;margin-top:6px}
.legend .key{display:inline-block;margin-right:16px}
.legend .sw{display:inline-block;width:14px;height:10px;vertical-align:-1px;margin-right:5px;border-radius:2px}
.legend .sw.line{height:3px;vertical-align:3px}
.legend .sw.dash{height:0;border-top:2px dashed #57606a;vertical-align:3px;border-radius:0}
table.data{border-collapse:collapse;width:100%;font-size:13px;margin-top:8px}
table.data th{text-align:left;font-weight:600;color:#57606a;border-bottom:1px solid #d0d7de;padding:6px 8px;font-size:12px;vertical-align:bottom}
table.data td{border-bottom:1px solid #eaeef2;padding:6px 8px;vertical-align:top}
table.data .num{text-align:right;white-space:nowrap}
table.data td small{display:block;color:#6e7781;font-size:11px}
table.data td small.sig{color:#0969da;font-weight:600}
table.data td .parent{color:#6e7781}
table.data tr{break-inside:avoid}
.group{break-inside:avoid}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.card{margin:0;border:1px solid #d8dee4;border-left:4px solid #8c959f;border-radius:6px;padding:10px 12px;break-inside:avoid;min-width:0}
.card.negative{border-left-color:#cf222e}.card.positive{border-left-color:#1a7f37}.card.mixed{border-left-color:#bf8700}
.card blockquote{margin:0 0 8px;white-space:pre-wrap;overflow-wrap:anywhere}
.card figcaption{font-size:12px;color:#57606a}
.card figcaption .m{white-space:nowrap}
mark{background:#fff1b8;color:inherit;padding:0 1px;border-radius:2px;box-shadow:0 0 0 1px #f5d565 inset}
footer{color:#6e7781;font-size:12px;margin-top:24px}
@media (max-width:1020px){.tiles{grid-template-columns:repeat(3,minmax(0,1fr))}}
@media (max-width:640px){.tiles{grid-template-columns:repeat(2,minmax(0,1fr))}}
@media print{
body{background:#fff;font-size:11px}
main{max-width:none;padding:0}
.tiles{grid-template-columns:repeat(3,minmax(0,1fr))}
section{border:0;border-radius:0;padding:0;margin:0 0 18px;break-inside:avoid-page}
#verbatims,#themes{break-inside:auto}
.cards{grid-template-columns:repeat(2,minmax(0,1fr))}
}
@page{size:A4;margin:14mm}
"#;

pub(super) fn render(report: &Report, title: &str) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(title)
    );
    header(&mut out, report, title);
    kpis(&mut out, report);
    nps_trend(&mut out, report);
    sentiment_trend(&mut out, report);
    theme_impact(&mut out, report);
    heatmap(&mut out, report);
    emerging(&mut out, report);
    verbatims(&mut out, report);
    themes(&mut out, report);
    out.push_str(
        "<footer>Verbatim voice-of-customer report. Intervals are 95% confidence intervals; \
         a change is significant at p &lt; 0.05. Every figure on this page is also in the \
         report's CSV.</footer>\n</main>\n</body>\n</html>\n",
    );
    out
}

fn section_open(out: &mut String, id: &str, heading: &str, note: &str) {
    let _ = write!(out, "<section id=\"{id}\">\n<h2>{}</h2>\n", escape(heading));
    if !note.is_empty() {
        let _ = writeln!(out, "<p class=\"note\">{note}</p>");
    }
}

fn header(out: &mut String, report: &Report, title: &str) {
    let _ = writeln!(out, "<header class=\"top\">\n<h1>{}</h1>", escape(title));
    let _ = writeln!(
        out,
        "<p>{} · {} buckets · compared with {}</p>",
        escape(&period_label(&report.period)),
        bucket_adjective(report.bucket),
        escape(&period_label(&report.comparison)),
    );
    let _ = writeln!(
        out,
        "<p>{} items, {} analysed · theme taxonomy version {}</p>",
        Fig::count("kpi", "items", report.items).span(),
        Fig::count("kpi", "analysed", report.analysed).span(),
        Fig::count("kpi", "taxonomy_version", report.taxonomy_version).span(),
    );
    if report.retag_pending > 0 {
        let _ = writeln!(
            out,
            "<p class=\"notice\">{} analysed items still carry themes of an older taxonomy version and are not in the theme figures.</p>",
            Fig::count("kpi", "retag_pending", report.retag_pending).span()
        );
    }
    if report.items == 0 {
        out.push_str(&svg::empty("No data: no feedback in this period."));
    }
    out.push_str("</header>\n");
}

/// Direction class of a change: good, bad or flat.
fn change_class(delta: f64, significant: bool, higher_is_better: Option<bool>) -> &'static str {
    match higher_is_better {
        _ if !significant => "flat",
        None => "flat",
        Some(up_good) => {
            if (delta > 0.0) == up_good {
                "good"
            } else {
                "bad"
            }
        }
    }
}

fn arrow(delta: f64) -> &'static str {
    if delta > 0.0 {
        "▲"
    } else if delta < 0.0 {
        "▼"
    } else {
        "▶"
    }
}

fn score_tile(out: &mut String, kind: ScoreKind, score: &Score) {
    let metric = kind.metric();
    let _ = write!(
        out,
        "<div class=\"tile\" data-tile=\"{metric}\">\n<div class=\"label\">{}</div>\n<div class=\"scale\">{}</div>\n",
        kind.label(),
        escape(kind.scale())
    );
    match score.estimate {
        None => {
            let _ = write!(
                out,
                "<div class=\"value none\">no data</div>\n<div class=\"ci\">n = {}</div>\n",
                Fig::missing("kpi", metric, score.n).span()
            );
        }
        Some(e) => {
            let fig = Fig::interval("kpi", metric, &e).n(score.n);
            let _ = write!(
                out,
                "<div class=\"value\">{}<span class=\"unit\">{}</span></div>\n<div class=\"ci\"><span class=\"nw\">95% CI {} to {}</span> · <span class=\"nw\">n = {}</span></div>\n",
                fig.span(),
                kind.unit(),
                human(Kind::Score, e.low),
                human(Kind::Score, e.high),
                human(Kind::Count, score.n as f64)
            );
        }
    }
    match (score.change, score.previous) {
        (Some(change), previous) => {
            let class = change_class(change.delta, change.significant, kind.higher_is_better());
            let delta = Fig::new(
                "kpi",
                &format!("{metric}.change"),
                Kind::Score,
                change.delta,
            )
            .bounds(change.low, change.high)
            .significant(change.significant);
            let previous = previous
                .map(|p| {
                    format!(
                        " vs {}",
                        Fig::new("kpi", &format!("{metric}.previous"), Kind::Score, p)
                            .n(score.previous_n)
                            .span()
                    )
                })
                .unwrap_or_default();
            let p = Fig::new(
                "kpi",
                &format!("{metric}.change.p_value"),
                Kind::P,
                change.p_value,
            );
            let _ = write!(
                out,
                "<div class=\"chg {class}\">{} {}{previous}</div>\n<div class=\"chg-detail\">{}<span class=\"nw\">p {}</span></div>\n<div class=\"chg-detail\"><span class=\"nw\">change 95% CI {} to {}</span> · <span class=\"nw\">previous n = {}</span></div>\n",
                arrow(change.delta),
                delta.span_with(&escape(&signed(change.delta))),
                if change.significant {
                    "<span class=\"badge sig\">significant</span>"
                } else {
                    "<span class=\"badge ns\">not significant</span>"
                },
                p.span_with(&escape(&match human(Kind::P, change.p_value) {
                    s if s.starts_with('<') => s,
                    s => format!("= {s}"),
                })),
                signed(change.low),
                signed(change.high),
                human(Kind::Count, score.previous_n as f64),
            );
        }
        (None, Some(previous)) => {
            let _ = writeln!(
                out,
                "<div class=\"chg flat\">previous {} (no change: no answers now)</div>",
                Fig::new("kpi", &format!("{metric}.previous"), Kind::Score, previous)
                    .n(score.previous_n)
                    .span()
            );
        }
        (None, None) => {
            out.push_str("<div class=\"chg flat\">no comparison data</div>\n");
        }
    }
    out.push_str("</div>\n");
}

fn kpis(out: &mut String, report: &Report) {
    section_open(
        out,
        "kpis",
        "Key figures",
        "Each figure with its 95% interval and sample size; changes against the comparison period.",
    );
    out.push_str("<div class=\"tiles\">\n");
    let _ = write!(
        out,
        "<div class=\"tile\" data-tile=\"items\">\n<div class=\"label\">Items</div>\n<div class=\"scale\">feedback in the period</div>\n<div class=\"value\">{}</div>\n<div class=\"ci\">{} analysed</div>\n<div class=\"chg flat\">previous period {}</div>\n</div>\n",
        Fig::count("kpi", "items", report.items).span(),
        Fig::count("kpi", "analysed", report.analysed).span(),
        Fig::count("kpi", "previous_items", report.previous_items).span(),
    );
    for kind in ScoreKind::ALL {
        score_tile(out, kind, kind.of(report));
    }
    out.push_str("</div>\n</section>\n");
}

fn nps_trend(out: &mut String, report: &Report) {
    section_open(
        out,
        "nps-trend",
        "NPS trend",
        &format!(
            "NPS per {} (−100 to 100); the band is the 95% interval.",
            bucket_noun(report.bucket)
        ),
    );
    let chart = svg::nps_trend(report);
    let drawn = chart.starts_with("<svg");
    out.push_str(&chart);
    if drawn {
        let previous = report
            .nps
            .previous
            .filter(|p| p.is_finite())
            .map(|p| {
                format!(
                    "<span class=\"key\"><span class=\"sw dash\"></span>comparison period {}</span>",
                    Fig::new("kpi", "nps.previous", Kind::Score, p)
                        .n(report.nps.previous_n)
                        .span()
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<div class=\"legend\"><span class=\"key\"><span class=\"sw line\" style=\"background:#0969da\"></span>NPS</span><span class=\"key\"><span class=\"sw\" style=\"background:rgba(9,105,218,.18)\"></span>95% interval</span>{previous}</div>"
        );
    }
    out.push_str("</section>\n");
}

fn sentiment_trend(out: &mut String, report: &Report) {
    section_open(
        out,
        "sentiment-trend",
        "Net sentiment and volume",
        &format!(
            "Net sentiment per {} (% positive minus % negative, left axis) over the number of items (bars, right axis).",
            bucket_noun(report.bucket)
        ),
    );
    let chart = svg::sentiment_trend(report);
    let drawn = chart.starts_with("<svg");
    out.push_str(&chart);
    if drawn {
        out.push_str("<div class=\"legend\"><span class=\"key\"><span class=\"sw line\" style=\"background:#8250df\"></span>net sentiment</span><span class=\"key\"><span class=\"sw\" style=\"background:#d8dee4\"></span>items</span></div>\n");
    }
    out.push_str("</section>\n");
}

fn theme_impact(out: &mut String, report: &Report) {
    section_open(
        out,
        "theme-impact",
        "NPS impact by theme",
        "Overall NPS minus NPS without the theme's items: left of zero the theme pulls NPS down, right of zero it lifts it. Whiskers: 95% interval; pale bars: the interval includes zero.",
    );
    out.push_str(&svg::theme_impact(report));
    out.push_str("</section>\n");
}

fn heatmap(out: &mut String, report: &Report) {
    section_open(
        out,
        "heatmap",
        "Sentiment by theme",
        "Share of each theme's mentions by the sentiment of the passage that carries the theme; darker is a larger share.",
    );
    out.push_str(&svg::sentiment_heatmap(report));
    if let Some(matrix) = &report.matrix {
        let _ = writeln!(
            out,
            "<h3>Themes by {}</h3>\n<p class=\"note\">Share of each {} value's items that carry the theme (darker is larger). Outlined cells differ significantly from the rest of the row (two-proportion test, Holm-adjusted p &lt; 0.05): ▲ above, ▼ below.</p>",
            escape(&matrix.field),
            escape(&matrix.field)
        );
        out.push_str(&svg::segment_matrix(report));
    }
    out.push_str("</section>\n");
}

/// A theme cell: `Parent › Child` with the parent muted.
fn theme_cell(report: &Report, theme_id: &str) -> String {
    let (parent, name) = theme_path(report, theme_id);
    match parent {
        Some(parent) => format!(
            "<span class=\"parent\">{} › </span>{}",
            escape(&parent),
            escape(&name)
        ),
        None => escape(&name),
    }
}

fn emerging(out: &mut String, report: &Report) {
    section_open(
        out,
        "emerging",
        "Emerging themes",
        "Themes whose share of items rose significantly against the comparison period (two-proportion test with a two-sided p, at least 10 mentions, Holm-adjusted over the themes tested).",
    );
    if report.emerging.is_empty() {
        out.push_str(&svg::empty(
            "No data: no theme's share rose significantly against the comparison period.",
        ));
        out.push_str("</section>\n");
        return;
    }
    out.push_str("<table class=\"data\">\n<thead><tr><th>Theme</th><th class=\"num\">Mentions</th><th class=\"num\">Share</th><th class=\"num\">Previous mentions</th><th class=\"num\">Previous share</th><th class=\"num\">p</th><th class=\"num\">Adjusted p</th></tr></thead>\n<tbody>\n");
    for theme in &report.emerging {
        let id = theme.theme_id.as_str();
        let _ = writeln!(
            out,
            "<tr data-theme=\"{}\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(id),
            if theme.candidate {
                format!(
                    "<span style=\"color:#57606a\">new topic:</span> {}<br><span style=\"color:#57606a\">“{}”</span>",
                    escape(&theme.name),
                    escape(theme.representatives.first().map_or("", String::as_str))
                )
            } else {
                theme_cell(report, id)
            },
            Fig::count("emerging", "mentions", theme.mentions).theme(id).span(),
            Fig::new("emerging", "share", Kind::Share, theme.share).theme(id).span(),
            Fig::count("emerging", "previous_mentions", theme.previous_mentions)
                .theme(id)
                .span(),
            Fig::new("emerging", "previous_share", Kind::Share, theme.previous_share)
                .theme(id)
                .span(),
            Fig::new("emerging", "p_value", Kind::P, theme.p_value).theme(id).span(),
            Fig::new("emerging", "adjusted_p_value", Kind::P, theme.adjusted_p_value)
                .theme(id)
                .span(),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn verbatims(out: &mut String, report: &Report) {
    let _ = write!(
        out,
        "<section id=\"verbatims\">\n<h2>Verbatims</h2>\n<p class=\"note\">Representative comments per theme and per significant theme × segment cell; the marked passages carry the theme.</p>\n"
    );
    if report.verbatims.iter().all(|g| g.verbatims.is_empty()) {
        out.push_str(&svg::empty("No data: no verbatims."));
        out.push_str("</section>\n");
        return;
    }
    let field = report
        .matrix
        .as_ref()
        .map(|m| m.field.as_str())
        .unwrap_or("segment");
    for group in &report.verbatims {
        if group.verbatims.is_empty() {
            continue;
        }
        let id = group.theme_id.as_str();
        let segment = if group.segment_value.is_empty() {
            String::new()
        } else {
            format!(
                " <span class=\"parent\">· {} = {}</span>",
                escape(field),
                escape(segment_label(&group.segment_value))
            )
        };
        let _ = write!(
            out,
            "<div class=\"group\" data-theme=\"{}\" data-segment=\"{}\">\n<h3>{}{segment}</h3>\n<div class=\"cards\">\n",
            escape(id),
            escape(&group.segment_value),
            theme_cell(report, id),
        );
        for verbatim in &group.verbatims {
            let sentiment = match verbatim.sentiment.as_str() {
                s @ ("negative" | "neutral" | "positive" | "mixed") => s,
                _ => "",
            };
            let _ = write!(
                out,
                "<figure class=\"card {sentiment}\" data-item=\"{}\">\n<blockquote>",
                escape(&verbatim.item_id)
            );
            for (piece, highlighted) in highlight_runs(&verbatim.text, &verbatim.highlights) {
                // Shown in its normalised form: mojibake such as U+0096 as "–".
                let piece = &*normalize_text(piece);
                if highlighted {
                    let _ = write!(out, "<mark>{}</mark>", escape(piece));
                } else {
                    out.push_str(&escape(piece));
                }
            }
            out.push_str("</blockquote>\n<figcaption>");
            let mut meta = vec![escape(&date_time(verbatim.created_at))];
            if !verbatim.channel.is_empty() {
                meta.push(escape(&verbatim.channel));
            }
            if !verbatim.sentiment.is_empty() {
                meta.push(escape(&verbatim.sentiment));
            }
            if let Some(nps) = verbatim.nps {
                let fig = Fig::new("verbatim", "nps", Kind::Count, nps as f64)
                    .theme(id)
                    .segment(&group.segment_value)
                    .bucket(instant_key(verbatim.created_at));
                meta.push(format!("NPS {}", fig.span()));
            }
            meta.push(format!("item {}", escape(&verbatim.item_id)));
            let meta: Vec<String> = meta
                .into_iter()
                .map(|m| format!("<span class=\"m\">{m}</span>"))
                .collect();
            out.push_str(&meta.join(" · "));
            out.push_str("</figcaption>\n</figure>\n");
        }
        out.push_str("</div>\n</div>\n");
    }
    out.push_str("</section>\n");
}

/// A score cell: value with interval and n, and the change when there is
/// one (`*`: significant).
fn score_cell(
    section: &'static str,
    theme_id: &str,
    metric: &str,
    score: &Score,
    unit: &str,
) -> String {
    let Some(e) = score.estimate else {
        return format!(
            "<span class=\"flat\">n/a</span><small>n = {}</small>",
            Fig::missing(section, metric, score.n)
                .theme(theme_id)
                .span()
        );
    };
    let fig = Fig::interval(section, metric, &e)
        .theme(theme_id)
        .n(score.n);
    let mut cell = format!(
        "{}{unit}<small>{} to {} · n {}</small>",
        fig.span(),
        human(Kind::Score, e.low),
        human(Kind::Score, e.high),
        human(Kind::Count, score.n as f64)
    );
    if let Some(change) = score.change {
        let delta = Fig::new(
            section,
            &format!("{metric}.change"),
            Kind::Score,
            change.delta,
        )
        .theme(theme_id)
        .bounds(change.low, change.high)
        .significant(change.significant);
        let _ = write!(
            cell,
            "<small{}>Δ {}{}</small>",
            if change.significant {
                " class=\"sig\""
            } else {
                ""
            },
            delta.span_with(&escape(&signed(change.delta))),
            if change.significant { "*" } else { "" }
        );
    }
    cell
}

fn impact_cell(theme_id: &str, metric: &str, impact: Option<crate::domain::Interval>) -> String {
    match impact.filter(|i| i.value.is_finite()) {
        None => "<span class=\"flat\">n/a</span>".into(),
        Some(i) => {
            let fig = Fig::interval("theme", metric, &i).theme(theme_id);
            format!(
                "{}<small>{} to {}</small>",
                fig.span_with(&escape(&signed(i.value))),
                signed(i.low),
                signed(i.high)
            )
        }
    }
}

fn themes(out: &mut String, report: &Report) {
    section_open(
        out,
        "themes",
        "All themes",
        "Sorted by NPS impact, most negative first. Scores with their 95% interval and n; Δ: change against the comparison period (* significant). Impact: overall score minus the score without the theme's items.",
    );
    if report.themes.is_empty() {
        out.push_str(&svg::empty("No data: no themes in this period."));
        out.push_str("</section>\n");
        return;
    }
    out.push_str("<table class=\"data\">\n<thead><tr><th>Theme</th><th class=\"num\">Mentions</th><th class=\"num\">Share</th><th class=\"num\">Previous share</th><th class=\"num\">Net sentiment</th><th class=\"num\">NPS</th><th class=\"num\">NPS impact</th><th class=\"num\">CSAT %</th><th class=\"num\">CSAT impact</th></tr></thead>\n<tbody>\n");
    for theme in &report.themes {
        let id = theme.theme_id.as_str();
        let _ = writeln!(
            out,
            "<tr data-theme=\"{}\"><td>{}</td><td class=\"num\">{}<small>previous {}</small></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(id),
            theme_cell(report, id),
            Fig::count("theme", "mentions", theme.mentions).theme(id).span(),
            Fig::count("theme", "previous_mentions", theme.previous_mentions)
                .theme(id)
                .span(),
            Fig::new("theme", "share", Kind::Share, theme.share).theme(id).span(),
            Fig::new("theme", "previous_share", Kind::Share, theme.previous_share)
                .theme(id)
                .span(),
            score_cell("theme", id, "net_sentiment", &theme.net_sentiment, ""),
            score_cell("theme", id, "nps", &theme.nps, ""),
            impact_cell(id, "nps_impact", theme.nps_impact),
            score_cell("theme", id, "csat", &theme.csat, ""),
            impact_cell(id, "csat_impact", theme.csat_impact),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}
