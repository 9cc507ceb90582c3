//! Regressions for the defects found by probing the landed service (issue
//! 10). Each test keeps the reproduction that failed before the fix.

use tonic::Code;

use crate::helpers::*;

/// Reproduction: `verbatim search --server ADDR "$(printf '(%.0s' $(seq 1000))"`
/// overflowed a worker thread's stack in the recursive query grammar and the
/// process died with SIGABRT, cutting off every client.
#[tokio::test]
async fn deeply_nested_queries_are_refused_and_the_server_lives_on() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    ingest(&mut client, vec![item("n1", "refund please")]).await;
    for hostile in [
        "(".repeat(1000),
        format!("{}refund{}", "(".repeat(400), ")".repeat(400)),
        "NOT ".repeat(255),
        "text:(".repeat(170),
    ] {
        let status = client
            .search(search_request(&hostile))
            .await
            .expect_err("a query nested too deep is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("nests deeper"), "{}", status.message());
        assert!(status.message().contains("at byte"), "{}", status.message());
    }
    // Many at once, from several connections: the process is still there.
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = server.client().await;
        calls.push(tokio::spawn(async move {
            c.search(search_request(&"(".repeat(1000))).await.map(|_| ())
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap_err().code(), Code::InvalidArgument);
    }
    let deepest = format!("{}refund{}", "(".repeat(16), ")".repeat(16));
    let found = search_until(&mut client, search_request(&deepest), |r| r.total_hits == 1).await;
    assert_eq!(hit_ids(&found), ["n1"]);
}
