use std::collections::HashMap;

use super::common::{highlight_runs, text_width};
use super::*;
use crate::domain::{
    BucketSize, Interval, MatrixCell, Period, Score, SegmentColumn, SegmentMatrix, Span, ThemeRow,
    UnixMicros, Verbatim, VerbatimGroup,
};

fn empty_report() -> Report {
    Report {
        period: Period {
            start: UnixMicros(1_751_846_400_000_000),
            end: UnixMicros(1_767_571_200_000_000),
        },
        comparison: Period {
            start: UnixMicros(1_736_121_600_000_000),
            end: UnixMicros(1_751_846_400_000_000),
        },
        bucket: BucketSize::Week,
        taxonomy_version: 0,
        retag_pending: 0,
        items: 0,
        previous_items: 0,
        analysed: 0,
        sentiment: [0; 4],
        net_sentiment: Score::default(),
        nps: Score::default(),
        csat: Score::default(),
        ces: Score::default(),
        themes: Vec::new(),
        matrix: None,
        trend_themes: Vec::new(),
        trends: Vec::new(),
        emerging: Vec::new(),
        verbatims: Vec::new(),
    }
}

const SECTIONS: [&str; 8] = [
    "kpis",
    "nps-trend",
    "sentiment-trend",
    "theme-impact",
    "heatmap",
    "emerging",
    "verbatims",
    "themes",
];

const CHARTS: [&str; 5] = [
    "nps-trend",
    "sentiment-trend",
    "theme-impact",
    "heatmap",
    "segment-matrix",
];

/// Words that would betray a non-finite number.
fn non_finite_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| matches!(w.to_ascii_lowercase().as_str(), "nan" | "inf" | "infinity"))
        .map(str::to_string)
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The attributes of every element that carries `data-metric`.
fn figures(html: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(" data-section=\"") {
        let tag_end = rest[at..].find('>').expect("tag closes") + at;
        let tag = &rest[at..tag_end];
        let mut attrs = HashMap::new();
        let mut t = tag.trim_start();
        while let Some(eq) = t.find("=\"") {
            let name = t[..eq].trim().to_string();
            let value_end = t[eq + 2..].find('"').expect("attribute closes") + eq + 2;
            attrs.insert(name, unescape(&t[eq + 2..value_end]));
            t = t[value_end + 1..].trim_start();
        }
        out.push(attrs);
        rest = &rest[tag_end..];
    }
    out
}

fn svgs<'a>(html: &'a str, chart: &str) -> Vec<&'a str> {
    let needle = format!("data-chart=\"{chart}\"");
    html.match_indices("<svg")
        .map(|(at, _)| &html[at..at + html[at..].find("</svg>").expect("svg closes")])
        .filter(|svg| svg[..svg.find('>').unwrap()].contains(&needle))
        .collect()
}

fn has_shape(svg: &str) -> bool {
    [
        "<rect",
        "<path",
        "<circle",
        "<line",
        "<polygon",
        "<polyline",
    ]
    .iter()
    .any(|shape| svg.contains(shape))
}

#[test]
fn a_verbatim_script_is_escaped_and_the_page_has_no_script() {
    let html = html(&example_report(), "Example <b>report</b>");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(html.contains("<title>Example &lt;b&gt;report&lt;/b&gt;</title>"));
    assert!(!html.contains("<b>report"));
    // Theme names with markup characters are escaped too.
    assert!(html.contains("Billing &amp; payment"));
    assert!(!html.contains("Billing & payment"));
}

#[test]
fn every_string_from_the_report_is_escaped() {
    let mut report = example_report();
    let evil = "<img src=x onerror=alert(1)>\"'&";
    report.themes[0].name = evil.into();
    report.emerging[0].name = evil.into();
    let matrix = report.matrix.as_mut().unwrap();
    matrix.field = evil.into();
    matrix.columns[0].value = evil.into();
    for cell in matrix
        .cells
        .iter_mut()
        .filter(|c| c.segment_value == "survey")
    {
        cell.segment_value = evil.into();
    }
    for group in &mut report.verbatims {
        group.theme_id = evil.into();
        for v in &mut group.verbatims {
            v.item_id = evil.into();
            v.channel = evil.into();
            v.sentiment = evil.into();
        }
    }
    let html = html(&report, evil);
    assert!(!html.contains("<img"), "raw markup from data in the page");
    assert!(!html.contains("'&\""));
}

#[test]
fn no_url_outside_escaped_user_text() {
    // The example's one URL is in a verbatim, escaped.
    let html = html(&example_report(), "Example");
    assert!(html.contains("https://example.com/help?topic=refunds&amp;lang=en"));
    assert_eq!(html.matches("http").count(), 1, "only the verbatim's URL");
    // Without URLs in the data, there is none at all (no xmlns, no fonts).
    let mut report = example_report();
    for group in &mut report.verbatims {
        for v in &mut group.verbatims {
            v.text = v.text.replace("http", "hxxp");
        }
    }
    let html = super::html(&report, "Example");
    assert!(!html.to_ascii_lowercase().contains("http"));
    assert!(!html.contains("url("));
    assert!(!html.contains("@import"));
    assert!(!html.contains("<link"));
    assert!(!html.contains("<img"));
}

#[test]
fn the_example_page_has_every_section_and_chart() {
    let html = html(&example_report(), "Example");
    for id in SECTIONS {
        assert_eq!(
            html.matches(&format!("<section id=\"{id}\"")).count(),
            1,
            "section {id}"
        );
    }
    for chart in CHARTS {
        let found = svgs(&html, chart);
        assert_eq!(found.len(), 1, "chart {chart}");
        let svg = found[0];
        assert!(
            svg.contains("role=\"img\"") && svg.contains("aria-label=\""),
            "{chart}"
        );
        assert!(has_shape(svg), "chart {chart} draws nothing");
    }
    assert!(
        !html.contains("class=\"empty\""),
        "the example has data everywhere"
    );
    for kpi in ["items", "net_sentiment", "nps", "csat", "ces"] {
        assert!(
            html.contains(&format!(
                "data-section=\"kpi\" data-metric=\"{kpi}\" data-value="
            )),
            "{kpi}"
        );
    }
    assert!(html.contains("data-section=\"kpi\" data-metric=\"nps\" data-value=\"12.3\""));
    assert!(html.contains("data-significant=\"true\""));
    assert!(html.contains("class=\"cell sig\""));
}

#[test]
fn an_empty_report_says_no_data_everywhere() {
    let report = empty_report();
    let html = html(&report, "Empty");
    let table = super::table(&report);
    let csv = csv(&report);
    for (name, text) in [("html", &html), ("table", &table), ("csv", &csv)] {
        assert!(
            non_finite_words(text).is_empty(),
            "{name}: {:?}",
            non_finite_words(text)
        );
    }
    for id in SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{id}\"")),
            "section {id}"
        );
    }
    assert!(!html.contains("<svg"), "no empty chart");
    for chart in &CHARTS[..4] {
        assert!(html.contains(&format!("<p class=\"empty\" data-empty-chart=\"{chart}\">")));
    }
    assert!(html.matches("<p class=\"empty\"").count() >= 8);
    assert!(html.contains("No data"));
    assert!(table.contains("No data"));
    assert!(table.lines().all(|l| text_width(l) <= 80));
    let mut reader = ::csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<_> = reader.records().map(|r| r.unwrap()).collect();
    let nps = rows
        .iter()
        .find(|r| &r[0] == "kpi" && &r[4] == "nps")
        .unwrap();
    assert_eq!((&nps[5], &nps[8]), ("", "0"));
}

#[test]
fn non_finite_values_print_as_n_a() {
    let mut report = example_report();
    let nan = Interval {
        value: f64::NAN,
        low: f64::NEG_INFINITY,
        high: f64::INFINITY,
    };
    report.nps.estimate = Some(nan);
    report.themes[0].nps_impact = Some(nan);
    report.themes[0].share = f64::NAN;
    report.trends[0].nps.estimate = Some(nan);
    report.emerging[0].p_value = f64::NAN;
    for (name, text) in [
        ("html", html(&report, "Check")),
        ("table", table(&report)),
        ("csv", csv(&report)),
    ] {
        assert!(
            non_finite_words(&text).is_empty(),
            "{name}: {:?}",
            non_finite_words(&text)
        );
        assert!(text.contains("n/a") || name == "csv", "{name}");
    }
}

/// Found by the report fuzz target: finite but huge values (an absurd
/// server answer) overflowed to inf on the way to the page: an impact bound
/// in the chart's axis ticks, a share in percent.
#[test]
fn huge_finite_values_print_no_inf() {
    let mut report = example_report();
    report.themes[1].share = f64::MAX;
    report.themes[0].nps_impact = Some(Interval {
        value: 0.0,
        low: f64::MAX,
        high: 0.0,
    });
    report.trends[0].nps.estimate = Some(Interval {
        value: -f64::MAX,
        low: -f64::MAX,
        high: f64::MAX,
    });
    for (name, text) in [
        ("html", html(&report, "Check")),
        ("table", table(&report)),
        ("csv", csv(&report)),
    ] {
        assert!(
            non_finite_words(&text).is_empty(),
            "{name}: {:?}",
            non_finite_words(&text)
        );
    }
}

#[test]
fn table_lines_fit_80_columns() {
    let mut wide = example_report();
    wide.themes[1].name = "An extraordinarily long theme name that goes on and on".into();
    wide.themes[2].name = "配達と梱包についての非常に長いテーマ名です".into();
    let matrix = wide.matrix.as_mut().unwrap();
    for k in 0..5 {
        matrix.columns.push(SegmentColumn {
            value: format!("attribute value number {k}"),
            items: 12_345_678,
            net_sentiment: None,
        });
    }
    wide.verbatims[0].verbatims[0].text = "x".repeat(300);
    for report in [example_report(), wide, empty_report()] {
        let table = super::table(&report);
        for line in table.lines() {
            assert!(
                text_width(line) <= 80,
                "{} columns: {line}",
                text_width(line)
            );
            assert!(line.chars().count() <= 80);
            assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        }
    }
    let table = table(&example_report());
    for heading in [
        "KEY FIGURES",
        "THEMES",
        "EMERGING THEMES",
        "THEMES BY CHANNEL",
        "TRENDS",
        "VERBATIMS",
    ] {
        assert!(table.contains(heading), "{heading}");
    }
    assert!(table.contains("(1 more column in the HTML and CSV reports)"));
    // 26 weekly buckets, one line each.
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("2025-") || l.starts_with("2026-"))
            .count(),
        26
    );
    // The significant CSAT change is starred.
    let csat = table.lines().find(|l| l.starts_with("CSAT")).unwrap();
    assert!(csat.ends_with('*'), "{csat}");
    assert!(table.contains("«La livraison a pris trois semaines, très décevant.»"));
}

#[test]
fn csv_parses_back_with_the_report_figures() {
    let report = example_report();
    let text = csv(&report);
    let mut reader = ::csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        tidy::HEADER.to_vec()
    );
    let rows: Vec<::csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert!(rows.iter().all(|r| r.len() == 9));
    let find = |section: &str, theme: &str, metric: &str| {
        rows.iter()
            .find(|r| &r[0] == section && &r[1] == theme && &r[4] == metric)
            .unwrap_or_else(|| panic!("{section} {theme} {metric}"))
    };
    let nps = find("kpi", "", "nps");
    let estimate = report.nps.estimate.unwrap();
    assert_eq!(nps[5].parse::<f64>().unwrap(), estimate.value);
    assert_eq!(nps[6].parse::<f64>().unwrap(), estimate.low);
    assert_eq!(nps[7].parse::<f64>().unwrap(), estimate.high);
    assert_eq!(&nps[8], "1204");
    let share = find("theme", "delivery_delay", "share");
    assert_eq!(share[5].parse::<f64>().unwrap(), report.themes[0].share);
    assert_eq!(&find("kpi", "", "csat.change.significant")[5], "1");
    // Trend rows carry the bucket start; the holiday week has no NPS.
    let trend: Vec<_> = rows
        .iter()
        .filter(|r| &r[0] == "trend" && &r[4] == "nps")
        .collect();
    assert_eq!(trend.len(), 26);
    assert_eq!(&trend[0][3], "2025-07-07");
    assert_eq!((&trend[24][5], &trend[24][8]), ("", "0"));
    // Matrix cells and the escaped-in-HTML theme name's id are plain here.
    assert_eq!(
        rows.iter()
            .filter(|r| &r[0] == "matrix" && &r[4] == "share")
            .count(),
        56
    );
    // Quoting: a segment value with a comma and a quote survives.
    let mut report = example_report();
    report.matrix.as_mut().unwrap().columns[0].value = "a, \"b\"\nc".into();
    let text = csv(&report);
    let mut reader = ::csv::Reader::from_reader(text.as_bytes());
    assert!(reader
        .records()
        .map(|r| r.unwrap())
        .any(|r| &r[0] == "segment" && &r[2] == "a, \"b\"\nc"));
}

/// Every figure the page prints is a CSV row with the same key, and its
/// `data-value` is that row's value rounded as printed.
#[test]
fn every_html_figure_is_in_the_csv() {
    let report = example_report();
    let html = html(&report, "Example");
    let rows = tidy::rows(&report);
    let figures = figures(&html);
    assert!(figures.len() > 300, "{} figures", figures.len());
    let close = |printed: &str, value: Option<f64>| -> bool {
        let Some(value) = value else { return false };
        let decimals = printed.split('.').nth(1).map(|d| d.len()).unwrap_or(0) as i32;
        let printed: f64 = printed.parse().unwrap();
        (printed - value).abs() <= 0.5 * 10f64.powi(-decimals) + 1e-9
    };
    for fig in &figures {
        let get = |k: &str| fig.get(k).cloned().unwrap_or_default();
        let row = rows
            .iter()
            .filter(|r| {
                r.section == get("data-section")
                    && r.metric == get("data-metric")
                    && r.theme_id == get("data-theme")
                    && r.segment == get("data-segment")
                    && r.bucket_start == get("data-bucket")
            })
            .find(|r| fig.get("data-value").is_none_or(|v| close(v, r.value)))
            .unwrap_or_else(|| panic!("no CSV row for {fig:?}"));
        for (attr, value) in [("data-low", row.ci_low), ("data-high", row.ci_high)] {
            if let Some(printed) = fig.get(attr) {
                assert!(close(printed, value), "{attr} of {fig:?}: {value:?}");
            }
        }
        if let Some(n) = fig.get("data-n") {
            assert_eq!(Some(n.parse::<u64>().unwrap()), row.n, "{fig:?}");
        }
    }
    // Each figure's text is its value (counts with separators, shares as %).
    assert!(html
        .contains("data-section=\"kpi\" data-metric=\"items\" data-value=\"4812\">4,812</span>"));
    let delay_share = format!("{:.3}", report.themes[0].share);
    assert!(html.contains(&format!(
        "data-section=\"theme\" data-metric=\"share\" data-theme=\"delivery_delay\" data-value=\"{delay_share}\">13.3%</span>"
    )));
}

#[test]
fn highlights_are_code_point_ranges() {
    let text = "Café 日本 très bien 😡 ok";
    let spans = [
        Span { start: 5, end: 7 },   // 日本
        Span { start: 8, end: 12 },  // très
        Span { start: 18, end: 19 }, // 😡
    ];
    let runs = highlight_runs(text, &spans);
    let marked: Vec<&str> = runs.iter().filter(|r| r.1).map(|r| r.0).collect();
    assert_eq!(marked, ["日本", "très", "😡"]);
    assert_eq!(runs.iter().map(|r| r.0).collect::<String>(), text);
    // Out of range, empty, reversed and overlapping spans.
    let runs = highlight_runs(
        "é日本",
        &[
            Span { start: 2, end: 99 },
            Span { start: 1, end: 1 },
            Span { start: 3, end: 1 },
            Span { start: 1, end: 3 },
        ],
    );
    assert_eq!(runs, [("é", false), ("日本", true)]);
    assert_eq!(
        highlight_runs("", &[Span { start: 0, end: 4 }]),
        [("", false)]
    );

    let mut report = example_report();
    report.verbatims = vec![VerbatimGroup {
        theme_id: "delivery".into(),
        segment_value: String::new(),
        verbatims: vec![Verbatim {
            item_id: "x".into(),
            customer_id: String::new(),
            created_at: UnixMicros(0),
            channel: "chat".into(),
            text: text.into(),
            highlights: spans.to_vec(),
            sentiment: "negative".into(),
            nps: None,
        }],
    }];
    let html = html(&report, "Highlights");
    assert!(html.contains(
        "<blockquote>Café <mark>日本</mark> <mark>très</mark> bien <mark>😡</mark> ok</blockquote>"
    ));
    let table = super::table(&report);
    assert!(table.contains("Café «日本» «très» bien «😡» ok"), "{table}");
}

/// Verbatims are stored as sent; pages show them normalised (cp1252
/// mojibake read as cp1252, decomposed accents composed), the highlights
/// still on the spans of the text as sent.
#[test]
fn verbatims_are_shown_normalised_with_their_highlights() {
    // Code points: "Cafe\u{301}" 0..5, " " 5, "cold" 6..10, ...
    let text = "Cafe\u{301} cold \u{96} don\u{92}t go\u{1B}[2J";
    let mut report = example_report();
    report.verbatims = vec![VerbatimGroup {
        theme_id: "delivery".into(),
        segment_value: String::new(),
        verbatims: vec![Verbatim {
            item_id: "x".into(),
            customer_id: String::new(),
            created_at: UnixMicros(0),
            channel: "chat".into(),
            text: text.into(),
            highlights: vec![Span { start: 6, end: 10 }, Span { start: 13, end: 18 }],
            sentiment: "negative".into(),
            nps: None,
        }],
    }];
    let html = html(&report, "Mojibake");
    assert!(
        html.contains(
            "<blockquote>Café <mark>cold</mark> – <mark>don’t</mark> go [2J</blockquote>"
        ),
        "{html}"
    );
    let table = super::table(&report);
    assert!(table.contains("Café «cold» – «don’t» go [2J"), "{table}");
    assert!(!table.contains('\u{1B}') && !html.contains('\u{1B}'));
}

#[test]
fn the_example_highlights_land_on_their_sentences() {
    let html = html(&example_report(), "Example");
    for marked in [
        "<mark>La livraison a pris trois semaines, très décevant.</mark>",
        "<mark>配達が二週間も遅れました。日本からの注文は毎回こうです。</mark>",
        "<mark>The app crashes every time I open the cart 😡</mark>",
        "&lt;script&gt;alert(1)&lt;/script&gt; <mark>Where is my refund?? I returned the parcel on 3 Nov &amp; still nothing.</mark>",
    ] {
        assert!(html.contains(marked), "{marked}");
    }
}

#[test]
fn charts_handle_gaps_single_points_and_many_buckets() {
    // One bucket with NPS, the rest without: a whisker, no band.
    let mut report = example_report();
    for (i, b) in report.trends.iter_mut().enumerate() {
        if i != 3 {
            b.nps = Score::default();
        }
    }
    let html = html(&report, "Gaps");
    let nps = svgs(&html, "nps-trend")[0];
    assert!(nps.contains("band-whisker") && !nps.contains("<polygon"));
    assert_eq!(nps.matches("<circle").count(), 1);

    // No impact anywhere: an empty note instead of a chart.
    let mut report = example_report();
    for t in &mut report.themes {
        t.nps_impact = None;
    }
    let html = super::html(&report, "No impact");
    assert!(svgs(&html, "theme-impact").is_empty());
    assert!(html.contains("No theme has an NPS impact"));

    // A matrix without cells, themes without sentiment labels.
    let mut report = example_report();
    report.matrix = Some(SegmentMatrix {
        field: "channel".into(),
        columns: Vec::new(),
        cells: Vec::<MatrixCell>::new(),
    });
    for t in &mut report.themes {
        t.sentiment = [0; 4];
    }
    let html = super::html(&report, "Sparse");
    assert!(svgs(&html, "segment-matrix").is_empty());
    assert!(html.contains("No segment values in this period"));
    assert!(non_finite_words(&html).is_empty());

    // 400 daily buckets.
    let mut report = example_report();
    let bucket = report.trends[0].clone();
    report.bucket = BucketSize::Day;
    report.trends = (0..400)
        .map(|i| {
            let mut b = bucket.clone();
            b.start = UnixMicros(bucket.start.0 + i * 86_400_000_000);
            b.end = UnixMicros(b.start.0 + 86_400_000_000);
            b
        })
        .collect();
    let html = super::html(&report, "Daily");
    let nps = svgs(&html, "nps-trend")[0];
    assert_eq!(nps.matches("<circle").count(), 400);
    assert!(
        nps.matches("class=\"tick\"").count() < 20,
        "thinned date labels"
    );
}

#[test]
fn a_theme_without_a_row_falls_back_to_its_id() {
    let mut report = example_report();
    report.themes.push(ThemeRow {
        theme_id: "orphan".into(),
        name: "Orphan".into(),
        parent_id: "missing_parent".into(),
        mentions: 0,
        share: 0.0,
        previous_mentions: 0,
        previous_share: 0.0,
        sentiment: [0; 4],
        net_sentiment: Score::default(),
        nps: Score::default(),
        nps_impact: None,
        csat: Score::default(),
        csat_impact: None,
    });
    let html = html(&report, "Orphan");
    assert!(html.contains("missing_parent › </span>Orphan"));
    let table = super::table(&report);
    assert!(table.contains("missing_parent › Orphan"));
}
