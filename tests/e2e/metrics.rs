//! The Prometheus endpoint (`--metrics-listen`): RPCs are counted by method
//! and code, timed, and the scrape-time gauges are there.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn rpcs_are_counted_timed_and_served_on_the_metrics_endpoint() {
    let server = TestServer::spawn_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let addr = metrics_addr(&server);
    let mut client = server.client().await;

    let word = unique_word("metrics");
    let response = ingest(&mut client, vec![item("m-1", &format!("a {word} item"))]).await;
    assert_eq!(response.accepted, 1);
    search(&mut client, search_request(&word)).await;
    let bad = client
        .search(search_request("(unclosed"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    let requests = |method: &str, code: &str| {
        format!(
            "verbatim_rpc_requests_total{{method=\"{method}\",tenant=\"default\",code=\"{code}\"}}"
        )
    };
    let expected = [
        (requests("Ingest", "OK"), 1.0),
        (requests("Search", "OK"), 1.0),
        (requests("Search", "INVALID_ARGUMENT"), 1.0),
        (
            "verbatim_rpc_duration_seconds_count{method=\"Search\",tenant=\"default\"}".to_string(),
            2.0,
        ),
        (
            "verbatim_rpc_duration_seconds_bucket{method=\"Search\",tenant=\"default\",le=\"+Inf\"}"
                .to_string(),
            2.0,
        ),
        ("verbatim_rpc_in_flight{method=\"Search\"}".to_string(), 0.0),
        (
            "verbatim_index_documents{tenant=\"default\"}".to_string(),
            1.0,
        ),
    ];
    // A call is recorded before its client sees the end, and the document
    // is searchable within the refresh interval: retry briefly all the same.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (head, body) = loop {
        let (head, body) = metrics_get(addr, "/metrics").await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|(series, want)| metric_value(&body, series) != Some(*want))
            .collect();
        if missing.is_empty() {
            break (head, body);
        }
        assert!(
            Instant::now() < deadline,
            "not as expected: {missing:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    // The test's own health checks (TestServer waits for SERVING).
    assert!(
        metric_value(
            &body,
            "verbatim_rpc_requests_total{method=\"grpc.health.v1.Health/Check\",tenant=\"-\",code=\"OK\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );
    // The Search histogram has every bucket, the slowest one included.
    assert!(body.contains(
        "verbatim_rpc_duration_seconds_bucket{method=\"Search\",tenant=\"default\",le=\"30\"} 2\n"
    ));
    for family in [
        "verbatim_pool_queue_depth",
        "verbatim_pool_batch_size",
        "verbatim_index_commit_seconds",
        "verbatim_index_size_bytes",
        "verbatim_index_segments",
        "verbatim_ingest_to_searchable_seconds",
        "verbatim_analysis_backlog",
        "verbatim_filter_cache_lookups_total",
        "verbatim_filter_cache_bytes",
    ] {
        assert!(body.contains(&format!("# TYPE {family} ")), "{family}");
    }
    assert!(
        metric_value(&body, "verbatim_index_size_bytes{tenant=\"default\"}")
            .is_some_and(|n| n > 0.0)
    );
    // One document, one commit: one segment.
    assert_eq!(
        metric_value(&body, "verbatim_index_segments{tenant=\"default\"}"),
        Some(1.0),
        "{body}"
    );
    assert!(
        metric_value(&body, "verbatim_ingest_to_searchable_seconds_count")
            .is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(metric_value(&body, "verbatim_pool_batch_size_count{pool=\"ingest\"}") == Some(1.0));

    let (missing, _) = metrics_get(addr, "/").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let server = TestServer::spawn().await;
    assert!(!server.log_text().contains("metrics_addr="));
}
