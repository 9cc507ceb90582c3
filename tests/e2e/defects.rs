//! Regressions for the defects found by probing the landed service (issue
//! 10). Each test keeps the reproduction that failed before the fix.

use tonic::Code;
use verbatim::domain::limits;
use verbatim::grpc::pb;

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
        assert!(
            status.message().contains("nests deeper"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("at byte"), "{}", status.message());
    }
    // Many at once, from several connections: the process is still there.
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = server.client().await;
        calls.push(tokio::spawn(async move {
            c.search(search_request(&"(".repeat(1000)))
                .await
                .map(|_| ())
        }));
    }
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    let deepest = format!("{}refund{}", "(".repeat(16), ")".repeat(16));
    let found = search_until(&mut client, search_request(&deepest), |r| r.total_hits == 1).await;
    assert_eq!(hit_ids(&found), ["n1"]);
}

/// Waits up to 30 s (recovery includes backoff) until `word` has `total` hits.
async fn wait_for_hits(client: &mut Client, word: &str, total: u64, when: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // UNAVAILABLE while the index has not applied an acknowledged
        // removal and cannot write.
        let found = match client.search(search_request(word)).await {
            Ok(response) => response.into_inner().total_hits.to_string(),
            Err(status) if status.code() == Code::Unavailable => status.message().to_string(),
            Err(status) => panic!("Search: {status:?}"),
        };
        if found == total.to_string() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "search finds {found} of {total} acked items {when}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A server for a data dir on a small file system (a small index writer
/// buffer, one indexing thread), and a client.
async fn spawn_on_small_disk(data_dir: &std::path::Path) -> (TestServer, Client) {
    let server = TestServer::spawn_in(
        data_dir,
        &["--index-memory-mb", "16", "--index-threads", "1"],
    )
    .await;
    let client = server.client().await;
    (server, client)
}

/// One ingest, refused as UNAVAILABLE with `why` in its message.
async fn assert_write_refused(client: &mut Client, word: &str, why: &str) {
    let status = client
        .ingest(pb::IngestRequest {
            items: vec![item("refused", &format!("{word} refused"))],
            ..Default::default()
        })
        .await
        .expect_err("the write is refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(why), "{}", status.message());
}

/// A restart during a full-disk outage (29th session): the server refused
/// to start ("the data dir ... is not writable: No space left on device"),
/// so nothing could be read until space was freed. It now starts with
/// writes refused (UNAVAILABLE) and health NOT_SERVING, serves reads, and
/// takes writes again once there is room, without another restart.
#[tokio::test]
async fn a_server_started_on_a_full_disk_serves_reads_and_resumes_writes() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(disk) = Tmpfs::mount(24) else { return };
    let data_dir = disk.path().join("data");
    let (mut server, mut client) = spawn_on_small_disk(&data_dir).await;
    let word = unique_word("restart");
    let ids: Vec<String> = (0..50).map(|i| format!("r-{i}")).collect();
    let items = ids
        .iter()
        .map(|id| item(id, &format!("{word} {id}")))
        .collect();
    ingest(&mut client, items).await;
    wait_for_hits(&mut client, &word, 50, "before the restart").await;
    server.terminate();

    let filler = disk.fill();
    server.restart_until(ServingStatus::NotServing).await;
    let mut client = server.client().await;
    assert_eq!(
        search(&mut client, search_request(&word)).await.total_hits,
        50
    );
    let got = client
        .get(pb::GetRequest {
            ids: ids.clone(),
            ..Default::default()
        })
        .await
        .expect("Get on a full disk")
        .into_inner();
    assert_eq!(got.items.len(), 50);
    assert_write_refused(&mut client, &word, "disk is full").await;

    std::fs::remove_file(&filler).unwrap();
    server
        .health_becomes_within(ServingStatus::Serving, std::time::Duration::from_secs(20))
        .await;
    ingest(&mut client, vec![item("after", &format!("{word} after"))]).await;
    wait_for_hits(&mut client, &word, 51, "after the disk was freed").await;
}

/// A file system that the kernel turns read-only under the running server
/// (ext4 `errors=remount-ro` after a disk error; 30th session). Writes were
/// refused clearly, but every read that reached the store failed too:
/// redb needs a re-open after a failed write, the re-open needs a
/// read-write open of the file, and the file system refused it; a
/// read-only open refuses a file marked for recovery. The store now opens
/// the file read-only, repairing it in memory, and serves reads from it.
#[tokio::test]
async fn a_file_system_turned_read_only_serves_reads_and_loses_nothing() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(disk) = Ext4Image::mount(128) else {
        return;
    };
    let data_dir = disk.path().join("data");
    let (mut server, mut client) = spawn_on_small_disk(&data_dir).await;
    let word = unique_word("readonly");
    let ids: Vec<String> = (0..300).map(|i| format!("ro-{i}")).collect();
    for chunk in ids.chunks(100) {
        let items = chunk
            .iter()
            .map(|id| {
                item(
                    id,
                    &format!("{word} {id} {}", "lorem ipsum dolor ".repeat(30)),
                )
            })
            .collect();
        ingest(&mut client, items).await;
    }
    wait_for_hits(&mut client, &word, 300, "before the error").await;

    disk.fail();
    assert_write_refused(&mut client, &word, "read-only").await;
    server.health_becomes(ServingStatus::NotServing).await;
    // Reads go on, through the writer's recovery attempts.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let got = client
            .get(pb::GetRequest {
                ids: ids.clone(),
                ..Default::default()
            })
            .await
            .expect("Get on a read-only file system")
            .into_inner();
        assert_eq!(got.items.len(), 300);
        let mut request = search_request(&word);
        request.limit = 100;
        let found = search(&mut client, request).await;
        assert_eq!(found.total_hits, 300);
        assert!(found.hits.iter().all(|hit| hit
            .item
            .as_ref()
            .is_some_and(|item| item.text.contains(&word))));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The operator stops the server, repairs the file system, restarts:
    // every acknowledged item is there, and writes resume.
    server.terminate();
    disk.repair_and_remount();
    server.restart().await;
    let mut client = server.client().await;
    wait_for_hits(&mut client, &word, 300, "after the repair").await;
    ingest(&mut client, vec![item("after", &format!("{word} after"))]).await;
    wait_for_hits(&mut client, &word, 301, "after the repair").await;
}

/// Background analysis while the store refuses writes (30th session): each
/// round analysed up to 64 items, failed to save them, and began again a
/// second later, so a server whose file system had turned read-only kept
/// both cores busy redoing work it could not keep (29 s of CPU in 20 s),
/// beside the searches it still answered. It now waits for writes: no
/// inference pass runs while it waits.
#[tokio::test]
async fn background_analysis_waits_while_the_store_refuses_writes() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(disk) = Ext4Image::mount(256) else {
        return;
    };
    let data_dir = disk.path().join("data");
    let models = repo_path("models/cache");
    let mut server = TestServer::spawn_in(
        &data_dir,
        &[
            "--analysis",
            "on",
            "--models-dir",
            models.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let mut client = server.client().await;
    // The start's own inference (the built-in taxonomy's theme model) is
    // over before the window measured below: on a loaded machine it ran into it.
    server
        .wait_for_log("theme model compiled", std::time::Duration::from_secs(120))
        .await;
    let word = unique_word("paused");
    let ids: Vec<String> = (0..400).map(|i| format!("p-{i}")).collect();
    let text = "The delivery was late again. The driver was friendly though. \
                Support answered quickly and refunded the shipping fee.";
    let items = ids
        .iter()
        .map(|id| item(id, &format!("{word} {id}. {text}")))
        .collect();
    ingest(&mut client, items).await;
    wait_for_hits(&mut client, &word, 400, "before the error").await;
    let done = analysed(&mut client, &ids).await;
    assert!(
        done < 400,
        "the analysis has work left (the case under test)"
    );

    disk.fail();
    assert_write_refused(&mut client, &word, "read-only").await;
    server.health_becomes(ServingStatus::NotServing).await;
    // The round under way when the file system failed ends first.
    let paused = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !server
        .log_text()
        .contains("background analysis paused: the store refuses writes")
    {
        assert!(
            std::time::Instant::now() < paused,
            "the background analysis never paused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (passes, cpu) = (inference_passes(&server).await, server.cpu_seconds());
    assert!(passes > 0.0, "the analysis ran before the failure");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let cpu = server.cpu_seconds() - cpu;
    eprintln!("server CPU over 6 s with writes refused: {cpu:.2} s");
    let log = server.log_text();
    let from = (log.len().saturating_sub(4_000)..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    let tail = &log[from..];
    assert_eq!(
        inference_passes(&server).await,
        passes,
        "no text is analysed while nothing can be saved; the server's log ends:\n{tail}"
    );
    // Searches go on meanwhile.
    assert_eq!(
        search(&mut client, search_request(&word)).await.total_hits,
        400
    );

    // After the repair and a restart the analysis finishes: nothing lost.
    server.terminate();
    disk.repair_and_remount();
    server.restart().await;
    let mut client = server.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let done = analysed(&mut client, &ids).await;
        if done == 400 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of 400 analysed 180 s after the restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Inference passes the server has run (`verbatim_model_inference_seconds`).
async fn inference_passes(server: &TestServer) -> f64 {
    let (_, body) = metrics_get(metrics_addr(server), "/metrics").await;
    body.lines()
        .filter(|line| line.starts_with("verbatim_model_inference_seconds_count"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// How many of `ids` (all stored) are analysed.
async fn analysed(client: &mut Client, ids: &[String]) -> usize {
    let got = client
        .get(pb::GetRequest {
            ids: ids.to_vec(),
            ..Default::default()
        })
        .await
        .expect("Get")
        .into_inner();
    assert_eq!(got.items.len(), ids.len());
    got.items
        .iter()
        .filter(|i| i.analysis_status == pb::AnalysisStatus::Done as i32)
        .count()
}

/// Reproduction (defects 2 and 4): ingest, delete some items so the store
/// has free pages, fill the disk, ingest more. Before the fix the store acked
/// items while every index commit failed; a later commit stored the change-log
/// position without those documents (the tantivy writer had lost its worker),
/// the change log was trimmed, and after freeing the disk and restarting
/// Search missed them for good. Writes answered INTERNAL, Health stayed
/// SERVING, and after space was freed redb refused every transaction until a
/// restart.
#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_and_recovers_by_itself() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(disk) = Tmpfs::mount(24) else { return };
    let data_dir = disk.path().join("data");
    let (mut server, mut client) = spawn_on_small_disk(&data_dir).await;
    let word = unique_word("disk");
    let text = |i: usize| {
        format!(
            "{word} item {i} {}",
            "lorem ipsum dolor sit amet ".repeat(20)
        )
    };
    let mut acked: Vec<String> = Vec::new();
    for batch in 0..6 {
        let items: Vec<_> = (0..100)
            .map(|i| item(&format!("d-{}", batch * 100 + i), &text(batch * 100 + i)))
            .collect();
        ingest(&mut client, items).await;
        acked.extend((0..100).map(|i| format!("d-{}", batch * 100 + i)));
    }
    let deleted: Vec<String> = acked.drain(..200).collect();
    client
        .delete(pb::DeleteRequest { ids: deleted })
        .await
        .expect("Delete");
    search_until(&mut client, search_request(&word), |r| r.total_hits == 400).await;

    let filler = disk.fill();
    // Ingest until the store itself refuses: every ack must stay good.
    let mut refusal = None;
    for n in 0..400 {
        let items: Vec<_> = (0..10)
            .map(|i| item(&format!("f-{n}-{i}"), &text(n * 10 + i)))
            .collect();
        match client
            .ingest(pb::IngestRequest {
                items,
                ..Default::default()
            })
            .await
        {
            Ok(_) => acked.extend((0..10).map(|i| format!("f-{n}-{i}"))),
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let refusal = refusal.expect("a full disk refuses writes");
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
    assert!(
        refusal.message().contains("disk is full"),
        "{}",
        refusal.message()
    );
    server.health_becomes(ServingStatus::NotServing).await;
    // Later writes are refused at once, not queued behind the recovery.
    for _ in 0..3 {
        let mut request = tonic::Request::new(pb::IngestRequest {
            items: vec![item("refused", "while the disk is full")],
            ..Default::default()
        });
        request.set_timeout(std::time::Duration::from_secs(2));
        let status = client.ingest(request).await.expect_err("still full");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // Reads keep working while writes cannot, through the store's recovery
    // attempts: a failed probe write inside the database made every read of
    // a page it had not cached fail (INTERNAL) until it was opened again.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until {
        for ids in acked.chunks(250) {
            let got = client
                .get(pb::GetRequest {
                    ids: ids.to_vec(),
                    ..Default::default()
                })
                .await
                .expect("Get on a full disk")
                .into_inner();
            assert_eq!(got.items.len(), ids.len());
        }
        search(&mut client, search_request(&word)).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Space returns: writes resume without a restart, and every acked item
    // becomes searchable.
    std::fs::remove_file(&filler).unwrap();
    server
        .health_becomes_within(ServingStatus::Serving, std::time::Duration::from_secs(20))
        .await;
    ingest(&mut client, vec![item("after", &text(9999))]).await;
    acked.push("after".into());
    let total = acked.len() as u64;
    wait_for_hits(&mut client, &word, total, "after the disk was freed").await;
    assert_eq!(stats(&mut client).await.index_lag, 0);

    // And after a crash, nothing acked is missing either.
    server.kill9();
    server.restart().await;
    let mut client = server.client().await;
    let found = search_until(&mut client, search_request(&word), |r| {
        r.total_hits == total
    })
    .await;
    assert_eq!(found.total_hits, total);
    assert_eq!(stats(&mut client).await.items, total);
}

/// Reproduction (defect 2), with only the index on a full disk so that the
/// store keeps acknowledging: before the fix, the failed index commits killed
/// the tantivy writer's worker, a later commit recorded the change-log
/// position without the documents, the change log was trimmed, and the items
/// were missing from Search for good (even after a restart) while
/// `Stats.index_lag` said 0.
#[tokio::test]
async fn index_write_failures_lose_no_acknowledged_item() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    std::fs::create_dir_all(data_dir.join("index")).unwrap();
    let Some(disk) = Tmpfs::mount_at(&data_dir.join("index"), 6) else {
        return;
    };
    let (mut server, mut client) = spawn_on_small_disk(&data_dir).await;
    let word = unique_word("idx");
    let text = |i: usize| {
        format!(
            "{word} item {i} {}",
            "consectetur adipiscing elit ".repeat(30)
        )
    };
    for batch in 0..3 {
        let items: Vec<_> = (0..100)
            .map(|i| item(&format!("a-{}", batch * 100 + i), &text(batch * 100 + i)))
            .collect();
        ingest(&mut client, items).await;
    }
    search_until(&mut client, search_request(&word), |r| r.total_hits == 300).await;

    let filler = disk.fill();
    for batch in 0..5 {
        let items: Vec<_> = (0..10)
            .map(|i| item(&format!("b-{batch}-{i}"), &text(1000 + batch * 10 + i)))
            .collect();
        ingest(&mut client, items).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // The index cannot take them: the lag says so honestly.
    assert!(stats(&mut client).await.index_lag > 0);
    assert_eq!(
        search(&mut client, search_request(&word)).await.total_hits,
        300
    );
    // Found by probing: a removal acknowledged meanwhile was counted for as
    // long as the index could not apply it. Searches are UNAVAILABLE instead.
    client
        .delete(pb::DeleteRequest {
            ids: vec!["a-0".into()],
        })
        .await
        .expect("Delete (the store has room)");
    let refused = client
        .search(search_request(&word))
        .await
        .expect_err("a search that would count the deleted item");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("not yet applied acknowledged removals"),
        "{refused:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for_hits(&mut client, &word, 349, "after the index disk was freed").await;
    assert_eq!(stats(&mut client).await.index_lag, 0);
    server.kill9();
    server.restart().await;
    let mut client = server.client().await;
    search_until(&mut client, search_request(&word), |r| r.total_hits == 349).await;
}

/// Reproduction (defect 8): one missing or truncated segment file, or a
/// garbled `meta.json` (or, later, document store), stopped the server from starting with a raw tantivy
/// error, while `verbatim reindex` repairs it in under a second. Now the
/// damaged index is moved aside (`index/v2.damaged`) and rebuilt at startup.
#[tokio::test]
async fn a_damaged_index_is_moved_aside_and_rebuilt_at_startup() {
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("damage");
    let items: Vec<_> = (0..200)
        .map(|i| item(&format!("m-{i}"), &format!("{word} number {i}")))
        .collect();
    ingest(&mut client, items).await;
    search_until(&mut client, search_request(&word), |r| r.total_hits == 200).await;
    server.terminate();

    let index = std::fs::read_dir(server.data_dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && !p.to_string_lossy().contains("damaged"))
        .expect("an index folder");
    let segment_file = |suffix: &str| {
        std::fs::read_dir(&index)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("a {suffix} file in {}", index.display()))
    };
    type Damage = Box<dyn Fn()>;
    let damages: Vec<(&str, Damage)> = vec![
        ("a missing segment file", {
            let f = segment_file(".idx");
            Box::new(move || std::fs::remove_file(&f).unwrap())
        }),
        ("a truncated segment file", {
            let suffix = ".term";
            let index = index.clone();
            Box::new(move || {
                let f = std::fs::read_dir(&index)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.to_string_lossy().ends_with(suffix))
                    .unwrap();
                let len = std::fs::metadata(&f).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            })
        }),
        // Found only by the first search before (30th session): every
        // search then failed reading the hits' ids.
        ("a garbled document store", {
            let index = index.clone();
            Box::new(move || {
                let f = std::fs::read_dir(&index)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.to_string_lossy().ends_with(".store"))
                    .unwrap();
                let mut bytes = std::fs::read(&f).unwrap();
                let half = bytes.len() / 2;
                bytes[..half].fill(0xA5);
                std::fs::write(&f, bytes).unwrap();
            })
        }),
        // Passed every check at open before (35th session): each faceted
        // search then failed reading the column.
        ("a garbled column file", {
            let index = index.clone();
            Box::new(move || {
                let f = std::fs::read_dir(&index)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.to_string_lossy().ends_with(".fast"))
                    .unwrap();
                let mut bytes = std::fs::read(&f).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle - 64..middle + 64].fill(0xA5);
                std::fs::write(&f, bytes).unwrap();
            })
        }),
        ("a garbled meta.json", {
            let meta = index.join("meta.json");
            Box::new(move || std::fs::write(&meta, b"{\"segments\": [garbage").unwrap())
        }),
    ];
    for (what, damage) in damages {
        damage();
        server.restart().await;
        let mut client = server.client().await;
        let found = search(&mut client, search_request(&word)).await.total_hits;
        assert_eq!(found, 200, "after {what}");
        let mut faceted = search_request(&word);
        faceted.facets = vec!["channel".into(), "customer_id".into()];
        faceted.sort = pb::SortOrder::Newest as i32;
        let faceted = search(&mut client, faceted).await;
        assert_eq!(faceted.total_hits, 200, "after {what}");
        let mut aside = index.as_os_str().to_os_string();
        aside.push(".damaged");
        assert!(
            std::path::Path::new(&aside).is_dir(),
            "after {what}: the damaged index is kept aside"
        );
        server.terminate();
    }
    // `verbatim reindex` repairs the same way, offline.
    std::fs::write(index.join("meta.json"), b"not json").unwrap();
    assert!(reindex_offline(&server.data_dir).contains("reindexed 200 items"));
}

fn text_analysis(result: &pb::TextResult) -> &pb::Analysis {
    match result.outcome.as_ref().expect("outcome") {
        pb::text_result::Outcome::Analysis(a) => a,
        other => panic!("not analysed: {other:?}"),
    }
}

/// Reproduction (defect 3): ingest two texts of `'a\n' * 16384` (within the
/// 32 KiB limit) and one normal item. The analysis queue counted jobs of 64
/// embeddings and each sentence is one, so a background round needing more
/// than ~16,400 embeddings could never be queued: it was retried every 50 ms
/// forever (one core at 100%), the normal item stayed PENDING across
/// restarts, and an interactive Analyze on the idle server was answered
/// "queue full". Scaled down here with `--analysis-queue 2` (the old queue
/// then held 128 embeddings; each item below needs 2,001), so the test runs
/// in seconds instead of minutes.
#[tokio::test]
async fn huge_texts_never_stall_the_analysis() {
    let server = TestServer::spawn_with_analysis(&["--analysis-queue", "2"]).await;
    let mut client = server.client().await;
    let huge = "a\n".repeat(2_000);
    ingest(
        &mut client,
        vec![
            item("huge-1", &huge),
            item("huge-2", &huge),
            item("normal", "The delivery was late and the driver was rude."),
        ],
    )
    .await;
    // Interactive work has its own lane: answered while the background
    // analysis works through the huge items.
    let started = std::time::Instant::now();
    let answer = client
        .analyze(pb::AnalyzeRequest {
            texts: vec!["Great service, thank you!".into()],
            include_embeddings: false,
        })
        .await
        .expect("Analyze while the background analysis is busy")
        .into_inner();
    assert_eq!(answer.results.len(), 1);
    eprintln!("interactive answer after {:?}", started.elapsed());
    // And one interactive request of the same size is answered too.
    let big = client
        .analyze(pb::AnalyzeRequest {
            texts: vec![huge.clone()],
            include_embeddings: false,
        })
        .await
        .expect("Analyze of a text with 2,000 sentences")
        .into_inner();
    assert_eq!(text_analysis(&big.results[0]).sentences.len(), 2_000);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let got = client
            .get(pb::GetRequest {
                ids: vec!["huge-1".into(), "huge-2".into(), "normal".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let pending = got
            .items
            .iter()
            .filter(|i| i.analysis_status == pb::AnalysisStatus::Pending as i32)
            .count();
        if pending == 0 {
            for i in &got.items {
                assert_eq!(
                    i.analysis_status,
                    pb::AnalysisStatus::Done as i32,
                    "{}",
                    i.id
                );
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} items still pending after 240 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(stats(&mut client).await.analysis_backlog, 0);
}

/// Reproduction (defect 5): 40 concurrent 15 MB Analyze calls took peak
/// memory from 0.43 to 2.4 GB and kept it; the jobs of calls whose clients
/// had gone were still computed, so a one-text Analyze was refused for
/// ~10 s afterwards. Now request bytes in flight are bounded before decoding
/// (RESOURCE_EXHAUSTED beyond), a call keeps two jobs queued at most, and the
/// jobs of cancelled calls are dropped.
#[tokio::test]
async fn concurrent_large_requests_are_bounded_and_cancelled_ones_stop() {
    let server = TestServer::spawn_with_analysis(&["--max-inflight-request-mb", "64"]).await;
    let channel = server.channel().await;
    let text = "The checkout page froze twice and support never answered my emails. ".repeat(470);
    let texts: Vec<String> = (0..240).map(|i| format!("{i} {text}")).collect(); // ~7.7 MB
    let mut calls = Vec::new();
    for _ in 0..24 {
        let mut client = pb::feedback_service_client::FeedbackServiceClient::new(channel.clone())
            .max_encoding_message_size(64 << 20);
        let texts = texts.clone();
        calls.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(pb::AnalyzeRequest {
                texts,
                include_embeddings: false,
            });
            request.set_timeout(std::time::Duration::from_secs(3));
            client.analyze(request).await.map(|_| ())
        }));
    }
    let mut exhausted = 0;
    for call in calls {
        let status = call.await.unwrap().expect_err("too much work for 3 s");
        match status.code() {
            Code::ResourceExhausted => exhausted += 1,
            Code::DeadlineExceeded | Code::Cancelled => {}
            other => panic!("unexpected {other:?}: {}", status.message()),
        }
    }
    assert!(exhausted > 0, "the byte budget refused some of 24 x 7.7 MB");
    // The cancelled calls' jobs are not computed: a small call is answered
    // promptly (before the fix it was refused for ~10 s).
    let mut client = server.client().await;
    let started = std::time::Instant::now();
    let answer = client
        .analyze(pb::AnalyzeRequest {
            texts: vec!["Works fine.".into()],
            include_embeddings: false,
        })
        .await
        .expect("a small Analyze right after the cancelled ones");
    assert_eq!(answer.into_inner().results.len(), 1);
    let waited = started.elapsed();
    let peak = server.peak_rss_mib();
    eprintln!("small call answered after {waited:?}; server peak RSS {peak} MiB");
    // Before the fix the small call was refused (the `expect` above) for
    // ~10 s while the cancelled calls' jobs ran. The bound leaves room for
    // a batch still in progress while other tests share the 2 cores (8.6 s
    // was seen once in a full run, past the 5 s this bound used to be).
    assert!(waited < std::time::Duration::from_secs(20), "{waited:?}");
    assert!(peak < 1_500, "peak RSS {peak} MiB");
}

/// A request body of raw bytes, to send frames no gRPC client would.
struct RawBody(Option<bytes::Bytes>);

impl http_body::Body for RawBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Sends `frames` as the body of a Search call; returns grpc-status and
/// grpc-message (from the headers of a trailers-only answer, or the trailers).
async fn raw_search(server: &TestServer, frames: Vec<u8>, encoding: Option<&str>) -> (i32, String) {
    use tower_service::Service;
    let mut channel = server.channel().await;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/verbatim.v1.FeedbackService/Search",
            server.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request
        .body(tonic::body::Body::new(RawBody(Some(frames.into()))))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = channel.call(request).await.expect("an HTTP/2 answer");
    let mut headers = response.headers().clone();
    let mut body = response.into_body();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx))
            .await
    {
        if let Ok(trailers) = frame.expect("body frame").into_trailers() {
            headers.extend(trailers);
        }
    }
    let status = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("grpc-status");
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.to_str().unwrap()))
        .unwrap_or_default();
    (status, message)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reproduction (defect 14): a message flagged compressed without
/// `grpc-encoding`, or a frame shorter than its length prefix, was answered
/// INTERNAL (the server's fault) although the client sent it.
#[tokio::test]
async fn transport_framing_faults_are_invalid_argument() {
    let server = TestServer::spawn().await;
    let search = {
        use prost::Message;
        search_request("refund").encode_to_vec()
    };
    let frame = |flag: u8, declared_len: usize, body: &[u8]| {
        let mut f = vec![flag];
        f.extend_from_slice(&(declared_len as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    };
    // A well-formed call through the same path answers OK.
    let (status, message) = raw_search(&server, frame(0, search.len(), &search), None).await;
    assert_eq!(status, 0, "{message}");

    let (status, message) = raw_search(&server, frame(1, search.len(), &search), None).await;
    assert_eq!(status, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("grpc-encoding"), "{message}");

    let (status, message) = raw_search(&server, frame(0, search.len() + 50, &search), None).await;
    assert_eq!(status, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("ended inside a gRPC message"), "{message}");

    let (status, message) = raw_search(&server, vec![0, 0, 0], None).await;
    assert_eq!(status, Code::InvalidArgument as i32, "{message}");

    // A unary call carries one message: a second one was dropped with OK
    // (an Ingest's second batch lost), and none at all was INTERNAL.
    let mut two = frame(0, search.len(), &search);
    two.extend(frame(0, search.len(), &search));
    let (status, message) = raw_search(&server, two, None).await;
    assert_eq!(status, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("one request message"), "{message}");
    let (status, message) = raw_search(&server, Vec::new(), None).await;
    assert_eq!(status, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("without its message"), "{message}");
}

/// Probes of the 28th session: an edited cursor panicked the search worker
/// (tantivy's BM25 asserts document frequency <= document total); 1 MB
/// filter values were kept as filter-cache keys without counting; a facet
/// on a 1 MB attribute key was answered; a Delete naming an id twice
/// reported it deleted and missing; IngestStream ignored
/// wait_for_analysis.
#[tokio::test]
async fn edited_cursors_and_oversized_values_are_the_callers_fault() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("cursor");
    let items: Vec<_> = (0..30)
        .map(|i| item(&format!("c-{i}"), &format!("{word} late parcel {i}")))
        .collect();
    ingest(&mut client, items).await;
    let mut request = search_request(&word);
    request.limit = 10;
    let first = search_until(&mut client, request.clone(), |r| r.total_hits == 30).await;
    let cursor = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&first.next_cursor)
            .expect("a cursor is base64")
    };
    // Words 0-1 hold the key, 2 the fingerprint, then the statistics.
    let words = cursor.len() / 8;
    assert!(words > 3);
    for word_index in 3..words {
        for value in [0u64, 1_000_000_000] {
            let mut edited = cursor.clone();
            edited[word_index * 8..word_index * 8 + 8].copy_from_slice(&value.to_be_bytes());
            let mut next = request.clone();
            next.cursor = {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&edited)
            };
            match client.search(next).await {
                Ok(_) => {}
                Err(status) => {
                    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                    assert!(status.message().starts_with("cursor:"), "{status:?}");
                }
            }
        }
    }
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );

    let long = "p".repeat(1 << 20);
    let filters = [
        (
            "filter.products[0]",
            pb::Filter {
                products: vec![long.clone()],
                ..Default::default()
            },
        ),
        (
            "filter.tags[0]",
            pb::Filter {
                tags: vec!["t".repeat(65)],
                ..Default::default()
            },
        ),
        (
            "filter.languages[0]",
            pb::Filter {
                languages: vec!["l".repeat(36)],
                ..Default::default()
            },
        ),
        (
            "filter.customer_id",
            pb::Filter {
                customer_id: long.clone(),
                ..Default::default()
            },
        ),
        (
            "filter.attributes.region",
            pb::Filter {
                attributes: [("region".to_string(), "r".repeat(257))].into(),
                ..Default::default()
            },
        ),
    ];
    for (field, filter) in filters {
        let mut request = search_request(&word);
        request.filter = Some(filter);
        let status = client.search(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    // At the item limit a filter value is fine.
    let mut request = search_request(&word);
    request.filter = Some(pb::Filter {
        products: vec!["p".repeat(limits::MAX_NAME_BYTES)],
        ..Default::default()
    });
    assert_eq!(search(&mut client, request).await.total_hits, 0);
    let mut request = search_request(&word);
    request.facets = vec![format!("attributes.{long}")];
    let status = client.search(request).await.expect_err("a 1 MB facet key");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().len() < 1_000, "{}", status.message().len());

    let deleted = client
        .delete(pb::DeleteRequest {
            ids: vec!["c-1".into(), "c-1".into()],
        })
        .await
        .expect("Delete")
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert!(deleted.missing_ids.is_empty(), "{:?}", deleted.missing_ids);

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::IngestRequest {
        items: vec![item("s-1", "streamed while asking to wait")],
        wait_for_analysis: true,
    })
    .await
    .unwrap();
    drop(tx);
    let mut acks = client
        .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("IngestStream")
        .into_inner();
    let status = match acks.message().await {
        Ok(Some(ack)) => panic!("an ack for a refused message: {ack:?}"),
        Ok(None) => panic!("the stream ended without saying why"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("wait_for_analysis"),
        "{status:?}"
    );
}

/// Reproduction (defect 13): `DeleteCustomer` accepted a 1 MB customer id,
/// and logged the erased customer's id at INFO: a personal identifier
/// written to the logs at the moment of an erasure.
#[tokio::test]
async fn delete_customer_checks_the_id_and_never_logs_it() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let status = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "c".repeat(1 << 20),
        })
        .await
        .expect_err("a 1 MB customer id is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("customer_id:"),
        "{}",
        status.message()
    );
    let secret = unique_word("customer");
    let mut with_customer = item("erase-1", "Please delete my data");
    with_customer.customer_id = secret.clone();
    ingest(&mut client, vec![with_customer]).await;
    let erased = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: secret.clone(),
        })
        .await
        .expect("DeleteCustomer")
        .into_inner();
    assert_eq!(erased.deleted, 1);
    server
        .wait_for_log("customer erased", std::time::Duration::from_secs(5))
        .await;
    let logs = server.log_text();
    assert!(!logs.contains(&secret), "the customer id is in the log");
}

/// Probe of the 28th session: a store deleted under the running server
/// (with its data dir) left writes acknowledged (into the unlinked store file, gone at the next
/// start) and health SERVING.
#[tokio::test]
async fn a_store_deleted_under_the_server_refuses_writes() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let server = TestServer::spawn_in(&data, &[]).await;
    let mut client = server.client().await;
    ingest(&mut client, vec![item("kept", "before the folder went")]).await;
    // As `rm -rf DATA_DIR` does to it (the whole folder races the indexer's
    // own files).
    std::fs::remove_file(data.join("store.redb")).unwrap();
    let status = client
        .ingest(pb::IngestRequest {
            items: vec![item("lost", "after the folder went")],
            ..Default::default()
        })
        .await
        .expect_err("a write into a deleted store is refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("deleted under the running server"),
        "{}",
        status.message()
    );
    server.health_becomes(ServingStatus::NotServing).await;
    // Reads still answer from the file the server holds open.
    let got = client
        .get(pb::GetRequest {
            ids: vec!["kept".into()],
            ..Default::default()
        })
        .await
        .expect("Get")
        .into_inner();
    assert_eq!(got.items.len(), 1);
}
