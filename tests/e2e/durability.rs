//! Crash and restart: acknowledged writes survive `kill -9`, the index
//! catches up from the store, SIGTERM shuts down cleanly, and the index can
//! be rebuilt from the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;
use verbatim::grpc::pb;

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_mid_ingest() {
    let mut server = TestServer::spawn().await;
    let word = unique_word("crash");
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let channel = server.channel().await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut client = pb::feedback_service_client::FeedbackServiceClient::new(channel.clone());
        let acknowledged = acknowledged.clone();
        let word = word.clone();
        writers.push(tokio::spawn(async move {
            for batch in 0.. {
                let items: Vec<pb::Feedback> = (0..200)
                    .map(|i| {
                        item(
                            &format!("k-{w}-{batch}-{i}"),
                            &format!("durable {word} {i}"),
                        )
                    })
                    .collect();
                let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
                match client
                    .ingest(pb::IngestRequest {
                        items,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => acknowledged.lock().unwrap().extend(ids),
                    Err(_) => return, // the server died mid-request: not acknowledged
                }
            }
        }));
    }
    // Let the writers get going, then pull the plug.
    while acknowledged.lock().unwrap().len() < 5_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 5_000);

    server.restart().await;
    let mut client = server.client().await;
    for chunk in acknowledged.chunks(1000) {
        let got = client
            .get(pb::GetRequest {
                ids: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            got.missing_ids.is_empty(),
            "acknowledged but lost: {:?}",
            &got.missing_ids[..got.missing_ids.len().min(5)]
        );
    }
    // The index replays what it had not committed before the crash.
    let total = acknowledged.len() as u64;
    search_until(&mut client, search_request(&word), |r| {
        r.total_hits >= total
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_and_restart_keeps_everything() {
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("restart");
    let items: Vec<pb::Feedback> = (0..300)
        .map(|i| item(&format!("r-{i}"), &format!("kept {word} {i}")))
        .collect();
    assert_eq!(ingest(&mut client, items).await.accepted, 300);
    // Stop right away: the index may not have refreshed yet; shutdown commits it.
    server.terminate();
    server.restart().await;
    let mut client = server.client().await;
    let response = search(&mut client, search_request(&word)).await;
    assert_eq!(
        response.total_hits, 300,
        "searchable immediately after a clean restart"
    );
    let got = client
        .get(pb::GetRequest {
            ids: vec!["r-0".into(), "r-299".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.items.len(), 2);
}

#[tokio::test]
async fn the_index_is_rebuilt_from_the_store() {
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("rebuild");
    let items: Vec<pb::Feedback> = (0..120)
        .map(|i| item(&format!("x-{i}"), &format!("rebuilt {word} {i}")))
        .collect();
    ingest(&mut client, items).await;
    client
        .delete(pb::DeleteRequest {
            ids: vec!["x-0".into()],
        })
        .await
        .unwrap();
    search_until(&mut client, search_request(&word), |r| r.total_hits == 119).await;
    server.terminate();

    // `verbatim reindex` on the stopped server.
    assert!(reindex_offline(&server.data_dir).contains("reindexed 119 items"));
    server.restart().await;
    let mut client = server.client().await;
    assert_eq!(
        search(&mut client, search_request(&word)).await.total_hits,
        119
    );
    server.terminate();

    // A lost index folder is rebuilt at startup.
    std::fs::remove_dir_all(server.data_dir.join("index")).unwrap();
    server.restart().await;
    let mut client = server.client().await;
    assert_eq!(
        search(&mut client, search_request(&word)).await.total_hits,
        119
    );

    // reindex refuses to run beside a live server instead of corrupting it.
    let output = std::process::Command::new(BIN)
        .args(["reindex", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// A SIGTERM that arrives while the server is still starting (before it
/// binds) is a clean shutdown: the handler is installed first. It used to
/// be installed only once serving began, so such a signal killed the
/// process (exit by signal 15, seen as a flaky test).
#[test]
fn sigterm_during_startup_is_a_clean_shutdown() {
    use std::io::BufRead;
    for delay_ms in [0u64, 20, 100] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--analysis",
                "off",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // From its first log line ("starting") on, the server handles SIGTERM
        // (before it, the process may still be loading: the kernel's default
        // action applies to any program then). The rest of the log is drained.
        let stderr = child.stderr.take().unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut started_tx = Some(started_tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("starting") {
                    if let Some(tx) = started_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        started
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs `starting`");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{delay_ms} ms after `starting`: {status:?}"
        );
    }
}
