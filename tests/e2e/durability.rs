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
                ..Default::default()
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
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.items.len(), 2);
}

/// The store restored from an older copy under an index that went on,
/// with the same item count (the index's count check cannot tell): the
/// index is rebuilt at open, and search lists what the store holds.
#[tokio::test]
async fn an_index_ahead_of_a_restored_store_is_rebuilt() {
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("restored");
    let older: Vec<String> = (0..10).map(|i| format!("o-{i}")).collect();
    let items = older
        .iter()
        .map(|id| item(id, &format!("older {word} {id}")))
        .collect();
    ingest(&mut client, items).await;
    server.terminate();
    let store = server.data_dir.join("store.redb");
    let copy = server.data_dir.with_file_name("store.redb.older");
    std::fs::copy(&store, &copy).unwrap();

    server.restart().await;
    let mut client = server.client().await;
    client
        .delete(pb::DeleteRequest {
            ids: older[..5].to_vec(),
        })
        .await
        .unwrap();
    let items = (0..5)
        .map(|i| item(&format!("n-{i}"), &format!("newer {word} {i}")))
        .collect();
    ingest(&mut client, items).await;
    search_until(&mut client, search_request(&word), |r| {
        let ids = hit_ids(r);
        r.total_hits == 10 && ids.iter().filter(|id| id.starts_with("n-")).count() == 5
    })
    .await;
    server.terminate();

    std::fs::copy(&copy, &store).unwrap();
    server.restart().await;
    let mut client = server.client().await;
    let response = search(&mut client, search_request(&word)).await;
    let mut ids = hit_ids(&response);
    ids.sort();
    assert_eq!(ids, older, "search lists the restored store's items");
    assert_eq!(response.total_hits, 10);
    assert!(
        server
            .log_text()
            .contains("the index is ahead of the store"),
        "the rebuild is logged"
    );
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
        let lines = stderr_lines(&mut child);
        while !lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs `starting`")
            .contains("starting")
        {}
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

/// Repeated `kill -9` at random moments while three clients stream items in
/// and the background analysis runs: every acknowledged item is present
/// exactly once, the index holds exactly what the store holds, and the
/// analysis backlog drains. `VERBATIM_TORTURE_ROUNDS` (default 4) and
/// `VERBATIM_TORTURE_SEED` (printed on every run) reproduce a run.
#[tokio::test]
async fn repeated_kill_9_during_streaming_ingest_and_analysis() {
    use std::collections::{HashMap, HashSet};
    use std::time::Instant;
    let rounds: usize = std::env::var("VERBATIM_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("VERBATIM_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
                | 1
        });
    eprintln!("torture: {rounds} rounds, VERBATIM_TORTURE_SEED={seed}");
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const TEXTS: [&str; 4] = [
        "The parcel came late and the box was crushed.",
        "Support solved my billing problem in minutes, great team!",
        "App keeps logging me out after the update. Annoying.",
        "Fair price, decent quality; delivery could be faster.",
    ];
    let mut server = TestServer::spawn_with_analysis(&[]).await;
    let word = unique_word("torture");
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    for round in 0..rounds {
        let channel = server.channel().await;
        let mut writers = Vec::new();
        for writer in 0..3 {
            let mut client =
                pb::feedback_service_client::FeedbackServiceClient::new(channel.clone());
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestRequest>(4);
            let batches: Arc<Mutex<HashMap<u64, Vec<String>>>> = Arc::default();
            let (sent, acked, word) = (sent.clone(), acked.clone(), word.clone());
            let sender_batches = batches.clone();
            let sender = tokio::spawn(async move {
                for batch in 0u64.. {
                    let items: Vec<pb::Feedback> = (0..8)
                        .map(|i| {
                            item(
                                &format!("t-{round}-{writer}-{batch}-{i}"),
                                &format!("{} {word} r{round}", TEXTS[(batch as usize + i) % 4]),
                            )
                        })
                        .collect();
                    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
                    sent.lock().unwrap().extend(ids.iter().cloned());
                    sender_batches.lock().unwrap().insert(batch, ids);
                    let request = pb::IngestRequest {
                        items,
                        ..Default::default()
                    };
                    if tx.send(request).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            });
            let reader = tokio::spawn(async move {
                let Ok(response) = client
                    .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                else {
                    return;
                };
                let mut acks = response.into_inner();
                while let Ok(Some(ack)) = acks.message().await {
                    let ids = batches
                        .lock()
                        .unwrap()
                        .remove(&ack.sequence)
                        .unwrap_or_default();
                    assert_eq!(ack.accepted as usize, ids.len(), "every item is valid");
                    acked.lock().unwrap().extend(ids);
                }
            });
            writers.push((sender, reader));
        }
        let wait = 300 + next() % 1_500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        for (sender, reader) in writers {
            reader.await.unwrap();
            sender.abort();
        }
        eprintln!(
            "torture: round {round} killed after {wait} ms; {} acknowledged of {} sent",
            acked.lock().unwrap().len(),
            sent.lock().unwrap().len()
        );
        server.restart().await;
    }
    let sent = sent.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "nothing was acknowledged");
    let mut client = server.client().await;

    // The analysis backlog drains and the index catches up.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats = stats(&mut client).await;
        if stats.analysis_backlog == 0 && stats.index_lag == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog did not drain: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every acknowledged item is stored, and analysed.
    let mut stored = HashSet::new();
    for chunk in sent.chunks(1000) {
        let got = client
            .get(pb::GetRequest {
                ids: chunk.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for item in got.items {
            assert_eq!(
                item.analysis_status,
                pb::AnalysisStatus::Done as i32,
                "{} not analysed",
                item.id
            );
            stored.insert(item.id);
        }
    }
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {:?}",
        &lost[..lost.len().min(5)]
    );
    // The index holds each stored item exactly once, and nothing else.
    let mut indexed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = search(
            &mut client,
            pb::SearchRequest {
                query: word.clone(),
                limit: 100,
                sort: pb::SortOrder::Newest as i32,
                cursor: cursor.clone(),
                ..Default::default()
            },
        )
        .await;
        indexed.extend(hit_ids(&page));
        if page.next_cursor.is_empty() || page.hits.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let unique: HashSet<String> = indexed.iter().cloned().collect();
    assert_eq!(unique.len(), indexed.len(), "an item is in the index twice");
    assert_eq!(unique, stored, "the index and the store disagree");
    eprintln!(
        "torture: {} sent, {} acknowledged, {} stored and indexed once each",
        sent.len(),
        acked.len(),
        stored.len()
    );
}

/// One server per data dir: a second one is refused at startup with a
/// message that says why, and the first keeps serving.
#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let server = TestServer::spawn().await;
    let output = serve_to_end(&server.data_dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is in use by another verbatim process"),
        "{stderr}"
    );
    let mut client = server.client().await;
    stats(&mut client).await;
}

/// Found by probing: a client stream still open when the shutdown grace
/// ended kept being read and acked until the process exited (5 s later),
/// while the index drain chased its writes. Now it reads nothing more, its
/// last status says why, and every acked message is kept.
#[tokio::test]
async fn a_stream_open_past_the_shutdown_grace_ends_unavailable() {
    let mut server = TestServer::spawn_with(&["--shutdown-grace-ms", "300"]).await;
    let mut client = server.client().await;
    let batch = |m: u64| pb::IngestRequest {
        items: (0..5)
            .map(|i| item(&format!("grace-{m}-{i}"), "sent while the server stops"))
            .collect(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(batch(0)).await.unwrap();
    let mut acks = client
        .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("IngestStream")
        .into_inner();
    let mut acked = vec![
        acks.message()
            .await
            .unwrap()
            .expect("the first ack")
            .sequence,
    ];
    server.send_signal("TERM");
    let sender = tokio::spawn(async move {
        for m in 1.. {
            if tx.send(batch(m)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let status = loop {
        match acks.message().await {
            Ok(Some(ack)) => acked.push(ack.sequence),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    sender.abort();
    server.terminate();
    assert!(acked.len() > 1, "acked while the grace ran: {acked:?}");

    server.restart().await;
    let mut client = server.client().await;
    let ids: Vec<String> = acked
        .iter()
        .flat_map(|m| (0..5).map(move |i| format!("grace-{m}-{i}")))
        .collect();
    let got = client
        .get(pb::GetRequest {
            ids: ids.clone(),
            ..Default::default()
        })
        .await
        .expect("Get")
        .into_inner();
    assert!(
        got.missing_ids.is_empty(),
        "acked, then lost: {:?}",
        got.missing_ids
    );
}

/// Found by probing: SIGTERM during the start-up index rebuild (about a
/// minute a million items) waited for the whole rebuild, then the server
/// bound its port and only then stopped. It now stops at once, and the next
/// start rebuilds and serves everything.
#[tokio::test]
async fn sigterm_during_the_startup_rebuild_stops_at_once() {
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    let text = "the rebuild reads every stored item again ".repeat(20);
    for chunk in 0..30 {
        let items = (0..1_000)
            .map(|i| item(&format!("r-{chunk}-{i}"), &text))
            .collect();
        assert_eq!(ingest(&mut client, items).await.accepted, 1_000);
    }
    server.terminate();
    let index = server.data_dir.join("index");
    std::fs::remove_dir_all(&index).unwrap();

    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--analysis",
            "off",
            "--index-threads",
            "1",
        ])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let mut log = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs the rebuild");
        let rebuilding = line.contains("rebuilding it from the store");
        log.push(line);
        if rebuilding {
            break;
        }
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    // To the end of its output (the last lines may still be in the pipe).
    log.extend(lines.iter());
    let log = log.join("\n");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("stopped while starting"), "{log}");
    assert!(!log.contains("listening"), "it served first:\n{log}");

    server.restart().await;
    let mut client = server.client().await;
    let all = search(&mut client, search_request("rebuild")).await;
    assert_eq!(all.total_hits, 30_000);
}

/// Found by probing: with `store.redb` removed (or replaced by an empty
/// one) the server made a new store, emptied the index to match and served
/// 0 items. It now refuses to start, saying what to restore.
#[tokio::test]
async fn a_missing_store_beside_an_index_stops_the_start() {
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    assert_eq!(
        ingest(&mut client, vec![item("kept", "still here")])
            .await
            .accepted,
        1
    );
    search_until(&mut client, search_request("still"), |r| r.total_hits == 1).await;
    server.terminate();
    std::fs::remove_file(server.data_dir.join("store.redb")).unwrap();
    let refused = |data_dir: &std::path::Path| {
        let output = serve_to_end(data_dir);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("new and empty"), "{stderr}");
        assert!(stderr.contains("Restore it from a backup"), "{stderr}");
    };
    refused(&server.data_dir);
    // The index of an older layout (the first start of a build whose
    // schema changed): refused before that folder is removed.
    let index = server.data_dir.join("index");
    let current = std::fs::read_dir(&index)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("meta.json").exists())
        .expect("the index folder");
    let older = index.join("v1");
    std::fs::rename(&current, &older).unwrap();
    refused(&server.data_dir);
    assert!(older.join("meta.json").exists(), "the older index is kept");
}

/// Found by probing: SIGHUP (the terminal of a server started by hand
/// closed) killed the server without its shutdown; it is now a clean stop,
/// as SIGTERM is.
#[tokio::test]
async fn sighup_is_a_clean_shutdown() {
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    assert_eq!(
        ingest(&mut client, vec![item("hup", "before the hangup")])
            .await
            .accepted,
        1
    );
    server.send_signal("HUP");
    server
        .wait_for_log("shut down cleanly", Duration::from_secs(30))
        .await;
    assert!(server.log_text().contains("SIGHUP received"));
    server.terminate();
    server.restart().await;
    let mut client = server.client().await;
    search_until(&mut client, search_request("hangup"), |r| r.total_hits == 1).await;
}
