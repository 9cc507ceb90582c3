//! The CLI as a user runs it: import the shipped sample, search it, resume.

use std::process::Command;

use crate::helpers::*;
use verbatim::grpc::pb;

fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN).args(args).output().expect("run verbatim");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn import_the_sample_then_search_it() {
    let server = TestServer::spawn().await;
    let addr = server.addr.to_string();
    let sample = repo_path("tests/data/sample-feedback.jsonl");
    let lines = std::fs::read_to_string(&sample).unwrap().lines().count();
    let (ok, stdout, stderr) = run(&["import", sample.to_str().unwrap(), "--server", &addr]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("{lines} rows, {lines} accepted, 0 rejected")),
        "{stdout}"
    );
    let mut client = server.client().await;
    search_until(&mut client, search_request(""), |r| {
        r.total_hits == lines as u64
    })
    .await;

    let (ok, stdout, stderr) = run(&[
        "search", "refund", "--server", &addr, "--limit", "3", "--facet", "channel",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("hits"), "{stdout}");
    assert!(stdout.contains("channel:"), "{stdout}");
    let (ok, stdout, _) = run(&[
        "search",
        "--server",
        &addr,
        "--channel",
        "review",
        "--nps",
        "0..6",
        "--json",
    ]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    for hit in json["hits"].as_array().unwrap() {
        assert_eq!(hit["item"]["channel"], "review");
    }
    let (ok, _, stderr) = run(&["search", "refund AND (", "--server", &addr]);
    assert!(!ok);
    assert!(
        stderr.contains("InvalidArgument") || stderr.contains("invalid argument"),
        "{stderr}"
    );
}

#[tokio::test]
async fn csv_import_with_column_mapping_reports_rejections_and_resumes() {
    let server = TestServer::spawn().await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.csv");
    let mut csv = String::from("Comment ID,Comment,Score,Where,Region\n");
    for i in 1..=30 {
        let score = if i == 7 {
            "42".to_string()
        } else {
            (i % 11).to_string()
        };
        csv.push_str(&format!(
            "row-{i},\"Comment number {i}, with a comma\",{score},Review,emea\n"
        ));
    }
    csv.push_str("row-31,,5,survey,emea\n");
    std::fs::write(&file, csv).unwrap();
    let maps = [
        "--map",
        "id=Comment ID",
        "--map",
        "text=Comment",
        "--map",
        "nps=Score",
        "--map",
        "channel=Where",
        "--map",
        "attributes.region=Region",
    ];
    let mut args = vec![
        "import",
        file.to_str().unwrap(),
        "--server",
        &addr,
        "--batch-size",
        "10",
    ];
    args.extend(maps);
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("31 rows, 29 accepted, 2 rejected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("row 7: nps: must be between 0 and 10, got 42"),
        "{stdout}"
    );
    assert!(stdout.contains("row 31: text"), "{stdout}");
    let mut client = server.client().await;
    let got = client
        .get(pb::GetRequest {
            ids: vec!["row-3".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let stored = &got.items[0];
    assert_eq!(stored.text, "Comment number 3, with a comma");
    assert_eq!(stored.nps, Some(3));
    assert_eq!(stored.channel, pb::Channel::Review as i32);
    assert_eq!(stored.attributes["region"], "emea");

    // Resume: an interrupted run left a state file after row 20.
    let state = dir.path().join("export.csv.import-state.json");
    let bytes = std::fs::metadata(&file).unwrap().len();
    std::fs::write(
        &state,
        format!("{{\"file_bytes\":{bytes},\"rows_done\":20,\"accepted\":19,\"rejected\":1}}"),
    )
    .unwrap();
    let mut args = vec![
        "import",
        file.to_str().unwrap(),
        "--server",
        &addr,
        "--resume",
    ];
    args.extend(maps);
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("resuming after row 20"), "{stderr}");
    assert!(
        stdout.contains("31 rows, 29 accepted, 2 rejected"),
        "{stdout}"
    );
    assert!(!state.exists(), "a finished import removes its state file");
}

#[tokio::test]
async fn serve_fails_clearly_on_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("verbatim.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nrefresh_intervall_ms = 5\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("refresh_intervall_ms"), "{stderr}");
    let (ok, _, stderr) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--refresh-interval-ms",
        "1",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("refresh_interval_ms"), "{stderr}");
}
