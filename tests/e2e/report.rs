//! Reports through the API and the CLI, on the shipped sample analysed by
//! the real models: scores against a plain reference computed from the
//! JSONL file, the golden model-independent figures, bad input with its
//! field, the 80-column table, and the HTML page rendered by headless
//! Chromium with the same numbers as the RPC.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;

use crate::browser::check_report_html;
use crate::helpers::*;
use verbatim::grpc::pb;
use verbatim::report::render::{example_report, html};

fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN).args(args).output().expect("run verbatim");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn micros(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000) as i64
}

fn timestamp(rfc3339: &str) -> prost_types::Timestamp {
    let us = micros(rfc3339);
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// The sample's rows as JSON values.
fn sample_rows() -> Vec<serde_json::Value> {
    std::fs::read_to_string(repo_path("tests/data/sample-feedback.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A server with the sample imported and fully analysed.
async fn analysed_sample() -> TestServer {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let addr = server.addr.to_string();
    let sample = repo_path("tests/data/sample-feedback.jsonl");
    let (ok, _, stderr) = run(&["import", sample.to_str().unwrap(), "--server", &addr]);
    assert!(ok, "{stderr}");
    let total = sample_rows().len() as u64;
    let mut client = server.client().await;
    let start = Instant::now();
    loop {
        let s = stats(&mut client).await;
        if s.items == total && s.analysis_backlog == 0 && s.index_lag == 0 && s.retag_backlog == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "sample not analysed in time: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The last analyses become searchable within the refresh interval.
    tokio::time::sleep(Duration::from_millis(600)).await;
    server
}

fn request(after: &str, before: &str, segment: &str) -> pb::ReportRequest {
    pb::ReportRequest {
        filter: Some(pb::Filter {
            created_after: Some(timestamp(after)),
            created_before: Some(timestamp(before)),
            ..Default::default()
        }),
        segment: segment.into(),
        ..Default::default()
    }
}

async fn report(client: &mut Client, request: pb::ReportRequest) -> pb::ReportResponse {
    client.report(request).await.expect("Report").into_inner()
}

/// Exact NPS from individual answers (the plain reference).
fn reference_nps(answers: &[i64]) -> f64 {
    let promoters = answers.iter().filter(|&&a| a >= 9).count() as f64;
    let detractors = answers.iter().filter(|&&a| a <= 6).count() as f64;
    100.0 * (promoters - detractors) / answers.len() as f64
}

fn value(score: &Option<pb::ReportScore>) -> f64 {
    score.as_ref().and_then(|s| s.value).expect("a value")
}

const AFTER: &str = "2026-07-01T00:00:00Z";
const BEFORE: &str = "2026-11-01T00:00:00Z";

#[tokio::test]
async fn report_on_the_sample_matches_a_reference_and_the_cli_renders_it() {
    let server = analysed_sample().await;
    let addr = server.addr.to_string();
    let mut client = server.client().await;
    let r = report(&mut client, request(AFTER, BEFORE, "channel")).await;

    // Scores against a plain reference over the JSONL rows of the period.
    let (start, end) = (micros(AFTER), micros(BEFORE));
    let length = end - start;
    let rows = sample_rows();
    let in_period = |row: &serde_json::Value, from: i64, to: i64| {
        let at = micros(row["created_at"].as_str().unwrap());
        from <= at && at < to
    };
    let current: Vec<&serde_json::Value> =
        rows.iter().filter(|r| in_period(r, start, end)).collect();
    let previous: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| in_period(r, start - length, start))
        .collect();
    assert_eq!(r.items, current.len() as u64);
    assert_eq!(r.previous_items, previous.len() as u64);
    assert_eq!(r.analysed, r.items, "every sample item is analysed");
    let answers = |rows: &[&serde_json::Value], field: &str| -> Vec<i64> {
        rows.iter().filter_map(|r| r[field].as_i64()).collect()
    };
    let nps = answers(&current, "nps");
    let nps_score = r.nps.unwrap();
    assert_eq!(nps_score.n, nps.len() as u64);
    assert!((value(&r.nps) - reference_nps(&nps)).abs() < 1e-9);
    assert!(
        nps_score.ci_low.unwrap() < value(&r.nps) && value(&r.nps) < nps_score.ci_high.unwrap()
    );
    let previous_nps = answers(&previous, "nps");
    assert!((nps_score.previous_value.unwrap() - reference_nps(&previous_nps)).abs() < 1e-9);
    let change = nps_score.change.expect("both periods have NPS");
    assert!((change.delta - (reference_nps(&nps) - reference_nps(&previous_nps))).abs() < 1e-9);
    let csat = answers(&current, "csat");
    let satisfied = csat.iter().filter(|&&c| c >= 4).count() as f64;
    assert!((value(&r.csat) - 100.0 * satisfied / csat.len() as f64).abs() < 1e-9);
    let ces = answers(&current, "ces");
    let mean = ces.iter().sum::<i64>() as f64 / ces.len() as f64;
    assert!((value(&r.ces) - mean).abs() < 1e-9);

    // Sentiment counts add up; the trend buckets partition the items.
    let sentiment = r.sentiment.unwrap();
    assert_eq!(
        sentiment.negative + sentiment.neutral + sentiment.positive + sentiment.mixed,
        r.analysed
    );
    assert_eq!(r.bucket, pb::ReportBucket::Week as i32, "4 months: weekly");
    assert_eq!(r.trends.iter().map(|b| b.items).sum::<u64>(), r.items);
    assert!(
        r.trends.len() >= 17 && r.trends.len() <= 19,
        "{}",
        r.trends.len()
    );
    for bucket in &r.trends {
        assert_eq!(bucket.themes.len(), r.trend_themes.len());
    }

    // The theme table: mentions within the items, sorted by NPS impact.
    assert!(!r.themes.is_empty(), "the built-in themes tag the sample");
    for theme in &r.themes {
        assert!(theme.mentions <= r.items);
        assert!((theme.share - theme.mentions as f64 / r.items as f64).abs() < 1e-9);
    }
    let impacts: Vec<f64> = r
        .themes
        .iter()
        .filter_map(|t| t.nps_impact.as_ref().map(|i| i.value))
        .collect();
    assert!(impacts.windows(2).all(|w| w[0] <= w[1]), "{impacts:?}");
    // Theme counts agree with Search's theme filter over the same period.
    let top = &r.themes[0];
    let mut search = search_request("");
    search.filter = Some(pb::Filter {
        created_after: Some(timestamp(AFTER)),
        created_before: Some(timestamp(BEFORE)),
        themes: vec![top.theme_id.clone()],
        ..Default::default()
    });
    assert_eq!(
        crate::helpers::search(&mut client, search).await.total_hits,
        top.mentions
    );

    // The matrix: one cell per shown theme and column; values by channel.
    let matrix = r.matrix.clone().expect("segment given");
    assert_eq!(matrix.field, "channel");
    assert_eq!(matrix.cells.len() % matrix.columns.len(), 0);
    assert_eq!(
        matrix.columns.iter().map(|c| c.items).sum::<u64>(),
        r.items,
        "fewer than 12 channels: every item is in a column"
    );

    // Verbatims: no customer twice, highlights inside the text.
    assert!(!r.verbatims.is_empty());
    let mut customers = std::collections::HashSet::new();
    for group in &r.verbatims {
        for v in &group.verbatims {
            assert!(
                customers.insert(v.customer_id.clone()),
                "customer twice: {}",
                v.customer_id
            );
            let chars = v.text.chars().count() as u32;
            assert!(!v.highlights.is_empty());
            assert!(v
                .highlights
                .iter()
                .all(|h| h.start < h.end && h.end <= chars));
        }
    }

    // Discovery candidates tested with the themes (one Holm family).
    let mut with_candidates = request(AFTER, BEFORE, "");
    with_candidates.include_candidates = true;
    let rc = report(&mut client, with_candidates).await;
    assert_eq!(rc.items, r.items);
    for e in &rc.emerging {
        eprintln!(
            "emerging: {} {:?} {}/{} was {}/{} p {:.2e}",
            e.theme_id,
            e.name,
            e.mentions,
            e.share,
            e.previous_mentions,
            e.previous_share,
            e.adjusted_p_value
        );
        assert_eq!(e.candidate, e.theme_id.starts_with("candidate-"));
        assert!(e.adjusted_p_value < 0.05 && e.share > e.previous_share);
        assert_eq!(e.candidate, !e.representatives.is_empty());
    }

    // The CLI: the table fits 80 columns; the HTML shows the RPC's numbers
    // and renders in Chromium with every chart.
    let (ok, table, stderr) = run(&[
        "report",
        "--server",
        &addr,
        "--after",
        AFTER,
        "--before",
        BEFORE,
        "--segment",
        "channel",
    ]);
    assert!(ok, "{stderr}");
    for line in table.lines() {
        assert!(line.chars().count() <= 80, "line over 80 columns: {line:?}");
    }
    assert!(table.contains(&format!("{:.1}", value(&r.nps))), "{table}");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let (ok, _, stderr) = run(&[
        "report",
        "--server",
        &addr,
        "--after",
        AFTER,
        "--before",
        BEFORE,
        "--segment",
        "channel",
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let html = std::fs::read_to_string(&page).unwrap();
    // Every KPI in the page equals the RPC's (with its interval and n).
    for (metric, score) in [
        ("nps", &r.nps),
        ("csat", &r.csat),
        ("ces", &r.ces),
        ("net_sentiment", &r.net_sentiment),
    ] {
        let s = score.as_ref().unwrap();
        let tags = tags_with(
            &html,
            &["data-section=\"kpi\"", &format!("data-metric=\"{metric}\"")],
        );
        let wanted = [
            format!("data-value=\"{:.1}\"", s.value.unwrap()),
            format!("data-low=\"{:.1}\"", s.ci_low.unwrap()),
            format!("data-high=\"{:.1}\"", s.ci_high.unwrap()),
            format!("data-n=\"{}\"", s.n),
        ];
        assert!(
            tags.iter()
                .any(|t| wanted.iter().all(|w| t.contains(w.as_str()))),
            "no KPI tag for {metric} with {wanted:?}: {tags:?}"
        );
    }
    for theme in &r.themes {
        let tags = tags_with(
            &html,
            &[
                "data-section=\"theme\"",
                &format!("data-theme=\"{}\"", theme.theme_id),
                "data-metric=\"mentions\"",
            ],
        );
        assert!(
            tags.iter()
                .any(|t| t.contains(&format!("data-value=\"{}\"", theme.mentions))),
            "theme {} mentions {} not in the page: {tags:?}",
            theme.theme_id,
            theme.mentions
        );
    }
    let screenshot = std::env::temp_dir().join("verbatim-sample-report.png");
    let check = check_report_html(&page, &screenshot);
    assert!(
        check.console_errors.is_empty(),
        "{:?}",
        check.console_errors
    );
    for chart in [
        "nps-trend",
        "sentiment-trend",
        "theme-impact",
        "heatmap",
        "segment-matrix",
    ] {
        assert_eq!(charts(&check.dom, chart).len(), 1, "chart {chart} missing");
    }
    assert!(check.screenshot_written);

    // JSON and CSV carry the same NPS.
    let (ok, json, _) = run(&[
        "report", "--server", &addr, "--after", AFTER, "--before", BEFORE, "--format", "json",
    ]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!((json["nps"]["estimate"]["value"].as_f64().unwrap() - value(&r.nps)).abs() < 1e-9);

    // Golden: the model-independent figures of the sample's report.
    let golden = serde_json::json!({
        "items": r.items,
        "previous_items": r.previous_items,
        "nps": golden_score(&r.nps),
        "csat": golden_score(&r.csat),
        "ces": golden_score(&r.ces),
        "trend_items": r.trends.iter().map(|b| b.items).collect::<Vec<_>>(),
        "trend_nps_n": r.trends.iter().map(|b| b.nps.as_ref().unwrap().n).collect::<Vec<_>>(),
        "columns": matrix.columns.iter().map(|c| (c.value.clone(), c.items)).collect::<BTreeMap<_, _>>(),
    });
    let path = repo_path("tests/data/report-golden.json");
    if std::env::var_os("VERBATIM_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&golden).unwrap() + "\n").unwrap();
    }
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file")).unwrap();
    assert_eq!(golden, expected, "report differs from {}", path.display());
}

/// A score rounded to 1e-6 (the golden file's precision).
fn golden_score(score: &Option<pb::ReportScore>) -> serde_json::Value {
    let s = score.as_ref().unwrap();
    let round = |v: Option<f64>| v.map(|v| (v * 1e6).round() / 1e6);
    serde_json::json!({
        "n": s.n,
        "value": round(s.value),
        "ci_low": round(s.ci_low),
        "ci_high": round(s.ci_high),
        "previous_value": round(s.previous_value),
        "change_p": round(s.change.as_ref().map(|c| c.p_value)),
    })
}

#[tokio::test]
async fn report_bad_input_names_the_field_and_an_empty_slice_is_not_an_error() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let items = (0..30)
        .map(|i| {
            let mut it = item(&format!("r-{i}"), "the delivery was late again");
            it.created_at = Some(timestamp(&format!("2026-03-{:02}T10:00:00Z", 1 + i % 28)));
            it.nps = Some(i % 11);
            it
        })
        .collect();
    ingest(&mut client, items).await;
    search_until(&mut client, search_request(""), |r| r.total_hits == 30).await;

    let refused = |request: pb::ReportRequest| {
        let mut client = client.clone();
        async move {
            let status = client.report(request).await.expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            status.message().to_string()
        }
    };
    let mut bad = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "colour");
    assert!(refused(bad.clone()).await.starts_with("segment:"));
    bad.segment = "attributes.Not-Valid".into();
    assert!(refused(bad.clone()).await.starts_with("segment:"));
    bad.segment = "attributes.nothing_has_this".into();
    let message = refused(bad.clone()).await;
    assert!(
        message.starts_with("segment:") && message.contains("no item has"),
        "{message}"
    );
    // Client text is named back cut short: 100,000 bytes named whole passed
    // the 16 KiB a gRPC client takes in headers, and the client read
    // RESOURCE_EXHAUSTED "metadata size exceeds hard limit" instead.
    bad.segment = "x".repeat(100_000);
    let message = refused(bad.clone()).await;
    assert!(
        message.starts_with("segment: unknown segment field \"xxx") && message.len() < 300,
        "{message}"
    );
    let mut long_key = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "");
    long_key
        .filter
        .as_mut()
        .unwrap()
        .attributes
        .insert("K".repeat(20_000), "v".into());
    let message = refused(long_key).await;
    assert!(
        message.starts_with("filter.attributes.KKK") && message.len() < 300,
        "{message}"
    );
    let mut days = request("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "");
    days.bucket = pb::ReportBucket::Day as i32;
    let message = refused(days).await;
    assert!(
        message.starts_with("bucket:") && message.contains("400"),
        "{message}"
    );
    let mut overlap = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "");
    overlap.compare_after = Some(timestamp("2026-02-15T00:00:00Z"));
    overlap.compare_before = Some(timestamp("2026-03-15T00:00:00Z"));
    assert!(refused(overlap.clone()).await.starts_with("compare_after:"));
    overlap.compare_after = None;
    assert!(refused(overlap).await.starts_with("compare_after:"));
    let mut open = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "");
    open.filter.as_mut().unwrap().created_after = None;
    open.compare_after = Some(timestamp("2025-01-01T00:00:00Z"));
    open.compare_before = Some(timestamp("2025-02-01T00:00:00Z"));
    assert!(
        refused(open).await.starts_with("compare_after:"),
        "an open start covers all time"
    );
    let mut reversed = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "");
    reversed.compare_after = Some(timestamp("2025-02-01T00:00:00Z"));
    reversed.compare_before = Some(timestamp("2025-01-01T00:00:00Z"));
    assert!(refused(reversed)
        .await
        .starts_with("compare_before: must be later"));
    // Past the dates items can have, both bounds clamp to one: the error
    // says so, not that the end comes first.
    let mut beyond = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "");
    beyond.compare_after = Some(timestamp("2300-01-01T00:00:00Z"));
    beyond.compare_before = Some(timestamp("2400-01-01T00:00:00Z"));
    let message = refused(beyond).await;
    assert!(
        message.starts_with("compare_after: the comparison period lies outside"),
        "{message}"
    );
    // The same for the report's own period.
    let message = refused(request("2200-01-01T00:00:00Z", "2300-01-01T00:00:00Z", "")).await;
    assert!(
        message.starts_with("filter.created_after: the report's period lies outside"),
        "{message}"
    );
    // Reversed, one bound past an end: the order is what is wrong.
    let message = refused(request("2000-01-01T00:00:00Z", "1965-01-01T00:00:00Z", "")).await;
    assert!(
        message.starts_with("filter.created_before: must"),
        "{message}"
    );
    // Candidates come from a discovery, which needs the analysis.
    let mut candidates = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "");
    candidates.include_candidates = true;
    let status = client.report(candidates).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("--analysis off"), "{status:?}");
    let mut malformed = request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "");
    malformed.query = "(unclosed".into();
    assert_eq!(
        client.report(malformed).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // The slice: 30 items with NPS; without analysis there are no themes
    // and no sentiment, which is not an error.
    let r = report(
        &mut client,
        request("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "channel"),
    )
    .await;
    assert_eq!(r.items, 30);
    assert_eq!(r.nps.as_ref().unwrap().n, 30);
    assert_eq!(
        r.net_sentiment.as_ref().unwrap().value,
        None,
        "nothing analysed"
    );
    assert_eq!(r.bucket, pb::ReportBucket::Day as i32, "a month: daily");
    assert_eq!(r.trends.len(), 31);

    // Bounds beyond the range items can have mean its ends; the automatic
    // bucket never refuses (230 years: yearly).
    let wide = report(
        &mut client,
        request("1000-01-01T00:00:00Z", "3000-01-01T00:00:00Z", ""),
    )
    .await;
    assert_eq!(wide.items, 30);
    assert_eq!(wide.bucket, pb::ReportBucket::Year as i32);
    assert_eq!(wide.trends.len(), 230);

    // An empty slice: zero counts and no values or intervals.
    let empty = report(
        &mut client,
        request("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", "channel"),
    )
    .await;
    assert_eq!(empty.items, 0);
    for score in [&empty.nps, &empty.csat, &empty.ces, &empty.net_sentiment] {
        let s = score.as_ref().unwrap();
        assert_eq!((s.n, s.value, s.ci_low, s.ci_high), (0, None, None, None));
        assert!(s.change.is_none());
    }
    assert!(empty.themes.is_empty() && empty.emerging.is_empty() && empty.verbatims.is_empty());
    assert!(empty.trends.iter().all(|b| b.items == 0));

    // All time (no bounds): no comparison, the period spans the data.
    let all = report(&mut client, pb::ReportRequest::default()).await;
    assert_eq!(all.items, 30);
    assert_eq!(all.previous_items, 0);
    let period = all.period.unwrap();
    assert_eq!(period.start.unwrap(), timestamp("2026-03-01T00:00:00Z"));
    assert_eq!(period.end.unwrap(), timestamp("2026-03-29T00:00:00Z"));
    let comparison = all.comparison.unwrap();
    assert_eq!(comparison.start, comparison.end, "no comparison period");
}

/// The start tags in `dom` that carry every one of `attrs`.
fn tags_with<'a>(dom: &'a str, attrs: &[&str]) -> Vec<&'a str> {
    dom.match_indices('<')
        .filter_map(|(at, _)| dom[at..].find('>').map(|end| &dom[at..at + end + 1]))
        .filter(|tag| attrs.iter().all(|a| tag.contains(a)))
        .collect()
}

/// The `<svg …>…</svg>` elements of `dom` whose start tag has `data-chart="ID"`.
fn charts<'a>(dom: &'a str, id: &str) -> Vec<&'a str> {
    let needle = format!("data-chart=\"{id}\"");
    dom.match_indices("<svg")
        .filter_map(|(at, _)| dom[at..].find("</svg>").map(|end| &dom[at..at + end]))
        .filter(|svg| svg[..svg.find('>').unwrap_or(svg.len())].contains(&needle))
        .collect()
}

#[test]
fn report_html_renders_in_chromium() {
    let report = example_report();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report-example.html");
    std::fs::write(&page, html(&report, "Example")).unwrap();
    // Left behind for a human (and CI artifacts) to look at.
    let screenshot = std::env::temp_dir().join("report-example.png");

    let check = check_report_html(&page, &screenshot);

    assert!(
        check.console_errors.is_empty(),
        "console: {:#?}",
        check.console_errors
    );
    assert!(
        check.screenshot_written,
        "no screenshot at {}",
        screenshot.display()
    );
    let dom = &check.dom;
    assert!(dom.contains("</html>"), "no DOM dumped: {dom:.200}");
    assert!(!dom.to_ascii_lowercase().contains("<script"));
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    for id in [
        "kpis",
        "nps-trend",
        "sentiment-trend",
        "theme-impact",
        "heatmap",
        "emerging",
        "verbatims",
        "themes",
    ] {
        assert_eq!(
            tags_with(dom, &["<section", &format!("id=\"{id}\"")]).len(),
            1,
            "section {id}"
        );
    }
    for id in [
        "nps-trend",
        "sentiment-trend",
        "theme-impact",
        "heatmap",
        "segment-matrix",
    ] {
        let found = charts(dom, id);
        assert_eq!(found.len(), 1, "chart {id}");
        let svg = found[0];
        assert!(
            svg.contains("role=\"img\"") && svg.contains("aria-label="),
            "{id}"
        );
        let shapes = [
            "<rect",
            "<path",
            "<circle",
            "<line",
            "<polygon",
            "<polyline",
        ]
        .iter()
        .map(|s| svg.matches(s).count())
        .sum::<usize>();
        assert!(shapes > 0, "chart {id} has no shape");
    }

    // The KPI values the RPC returned, as the page states them.
    let kpis = [
        ("items", Some(report.items.to_string())),
        (
            "net_sentiment",
            report
                .net_sentiment
                .estimate
                .map(|e| format!("{:.1}", e.value)),
        ),
        (
            "nps",
            report.nps.estimate.map(|e| format!("{:.1}", e.value)),
        ),
        (
            "csat",
            report.csat.estimate.map(|e| format!("{:.1}", e.value)),
        ),
        (
            "ces",
            report.ces.estimate.map(|e| format!("{:.1}", e.value)),
        ),
    ];
    for (metric, value) in kpis {
        let value = value.expect("the example has every KPI");
        let tags = tags_with(
            dom,
            &["data-section=\"kpi\"", &format!("data-metric=\"{metric}\"")],
        );
        assert!(!tags.is_empty(), "KPI {metric} missing");
        for tag in tags {
            assert!(
                tag.contains(&format!("data-value=\"{value}\"")),
                "KPI {metric}: {tag} (expected {value})"
            );
        }
    }
    let nps = report.nps.estimate.unwrap();
    assert!(!tags_with(
        dom,
        &[
            "data-section=\"kpi\"",
            "data-metric=\"nps\"",
            &format!("data-low=\"{:.1}\"", nps.low),
            &format!("data-high=\"{:.1}\"", nps.high),
            &format!("data-n=\"{}\"", report.nps.n),
        ],
    )
    .is_empty());
}
