//! The NLP engine through the API: Analyze / AnalyzeStream, faithfulness to
//! the reference engine, bad input, overload, and the startup checks.

use std::process::Command;

use tonic::Code;

use crate::helpers::*;
use verbatim::grpc::pb;

async fn analyze(
    client: &mut Client,
    texts: &[&str],
    embeddings: bool,
) -> Vec<pb::text_result::Outcome> {
    client
        .analyze(pb::AnalyzeRequest {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            include_embeddings: embeddings,
        })
        .await
        .expect("Analyze")
        .into_inner()
        .results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r.index as usize, i);
            r.outcome.expect("outcome")
        })
        .collect()
}

fn analysis(outcome: &pb::text_result::Outcome) -> &pb::Analysis {
    match outcome {
        pb::text_result::Outcome::Analysis(a) => a,
        other => panic!("not analysed: {other:?}"),
    }
}

fn label(a: &pb::Analysis) -> pb::SentimentLabel {
    pb::SentimentLabel::try_from(a.sentiment.as_ref().unwrap().label).unwrap()
}

#[tokio::test]
async fn analyze_gives_sentiment_sentences_language_and_keyphrases() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    let texts = [
        "Absolutely love this router, setup took two minutes and the speed is fantastic.",
        "Terrible experience. The package arrived broken and nobody answers the phone.",
        "The delivery was late and the driver was rude. But the product itself is fantastic!",
        "La livraison est arrivée avec trois jours de retard, très déçu.",
        "Die App stürzt ständig ab, unbrauchbar.",
    ];
    let results = analyze(&mut client, &texts, false).await;
    let all: Vec<&pb::Analysis> = results.iter().map(analysis).collect();
    assert_eq!(label(all[0]), pb::SentimentLabel::Positive);
    assert!(all[0].sentiment.as_ref().unwrap().score > 0.5);
    assert_eq!(label(all[1]), pb::SentimentLabel::Negative);
    assert_eq!(label(all[2]), pb::SentimentLabel::Mixed);
    assert_eq!(label(all[3]), pb::SentimentLabel::Negative);
    assert_eq!(label(all[4]), pb::SentimentLabel::Negative);
    assert_eq!(
        all.iter().map(|a| a.language.as_str()).collect::<Vec<_>>(),
        vec!["en", "en", "en", "fr", "de"]
    );
    // Sentences: spans in code points that slice the text back.
    let mixed = all[2];
    assert_eq!(mixed.sentences.len(), 2);
    let chars: Vec<char> = texts[2].chars().collect();
    let slice = |s: &pb::SentenceAnalysis| {
        chars[s.start as usize..s.end as usize]
            .iter()
            .collect::<String>()
    };
    assert_eq!(
        slice(&mixed.sentences[0]),
        "The delivery was late and the driver was rude."
    );
    assert_eq!(
        slice(&mixed.sentences[1]),
        "But the product itself is fantastic!"
    );
    assert_eq!(
        pb::SentimentLabel::try_from(mixed.sentences[0].sentiment.as_ref().unwrap().label).unwrap(),
        pb::SentimentLabel::Negative
    );
    assert_eq!(
        pb::SentimentLabel::try_from(mixed.sentences[1].sentiment.as_ref().unwrap().label).unwrap(),
        pb::SentimentLabel::Positive
    );
    let french = all[3];
    let fchars: Vec<char> = texts[3].chars().collect();
    assert_eq!(
        french.sentences[0].end as usize,
        fchars.len(),
        "code points, not bytes"
    );
    // Probabilities are distributions; scores consistent with them.
    for a in &all {
        let s = a.sentiment.as_ref().unwrap();
        assert!((s.negative + s.neutral + s.positive - 1.0).abs() < 1e-4);
        assert!((s.score - (s.positive - s.negative)).abs() < 1e-5);
        assert!(!a.keyphrases.is_empty() && a.keyphrases[0].score == 1.0);
        assert!(a.embedding.is_empty(), "embeddings only on request");
    }
    assert!(
        all[1]
            .keyphrases
            .iter()
            .any(|k| k.text.contains("package") || k.text.contains("phone")),
        "{:?}",
        all[1].keyphrases
    );
}

#[tokio::test]
async fn embeddings_match_the_reference_engine() {
    embeddings_match_the_reference(&[]).await;
}

#[tokio::test]
async fn the_4bit_encoder_also_matches_the_reference_engine() {
    embeddings_match_the_reference(&["--encoder", "e5-small"]).await;
}

async fn embeddings_match_the_reference(args: &[&str]) {
    let server = TestServer::spawn_with_analysis(args).await;
    let mut client = server.client().await;
    let texts = [
        "The delivery was late and the box was damaged.",
        "Great speed, fair price, friendly staff!",
        "Die Lieferung kam zu spät.",
        "La aplicación se cierra cada vez que la abro.",
        "送货太慢了，客服也不回复。",
        "配達が遅すぎます。",
        "Доставка задержалась на неделю.",
        "التطبيق لا يعمل بعد التحديث",
        "Love it 😍😍 but the battery 🔋 dies fast",
        "ok",
        "Mixed scripts: Lieferung 很慢 delivery lenta",
    ];
    let ours: Vec<Vec<f32>> = analyze(&mut client, &texts, true)
        .await
        .iter()
        .map(|o| analysis(o).embedding.clone())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("texts.txt");
    std::fs::write(&file, texts.join("\n") + "\n").unwrap();
    let reference = repo_path("models/reference-e5");
    let output = Command::new("bash")
        .arg(&reference)
        .args(["embed", "1"])
        .env("OMP_NUM_THREADS", "2")
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("run models/reference-e5");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Vec<Vec<f32>> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(reference.len(), texts.len());
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(a.len(), 384);
        let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
            / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
                * b.iter().map(|x| x * x).sum::<f32>().sqrt());
        assert!(cosine >= 0.99, "text {i} {:?}: cosine {cosine}", texts[i]);
    }
}

#[tokio::test]
async fn bad_and_odd_input_has_a_defined_answer() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    let megabyte = "a".repeat(1 << 20);
    let long_review =
        "The router keeps dropping the connection every evening and support never calls back. "
            .repeat(60);
    let texts: Vec<&str> = vec![
        "",
        "   \n ",
        &megabyte,
        "nul\u{0}byte",
        "😡😡😡",
        "!!!",
        "qxv zzkt wrrp",
        &long_review,
        "ok",
    ];
    let results = analyze(&mut client, &texts, true).await;
    let rejected = |i: usize| match &results[i] {
        pb::text_result::Outcome::Rejection(r) => r.field == "text",
        _ => false,
    };
    assert!(rejected(0) && rejected(1) && rejected(2) && rejected(3));
    let emoji = analysis(&results[4]);
    assert_eq!(emoji.language, "und");
    assert_eq!(emoji.sentences.len(), 1);
    assert_eq!(
        label(emoji),
        pb::SentimentLabel::Negative,
        "angry emoji read as negative"
    );
    assert_eq!(analysis(&results[5]).sentences.len(), 1);
    assert_eq!(
        analysis(&results[6]).embedding.len(),
        384,
        "gibberish still gets a full analysis"
    );
    // 60 sentences, ~1,000 tokens: windowed, every sentence analysed, nothing truncated.
    let long = analysis(&results[7]);
    assert_eq!(long.sentences.len(), 60);
    // Every sentence is read as negative; the document (one sentence
    // repeated 60 times, windowed) must not turn positive.
    assert!(long.sentences.iter().all(|s| {
        pb::SentimentLabel::try_from(s.sentiment.as_ref().unwrap().label).unwrap()
            == pb::SentimentLabel::Negative
    }));
    assert_ne!(label(long), pb::SentimentLabel::Positive);
    assert_eq!(
        long.sentences.last().unwrap().end as usize,
        long_review.trim_end().chars().count()
    );
    assert_eq!(analysis(&results[8]).sentences.len(), 1);

    let too_many: Vec<String> = (0..1001).map(|i| format!("text {i}")).collect();
    let status = client
        .analyze(pb::AnalyzeRequest {
            texts: too_many,
            include_embeddings: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("texts:"),
        "{}",
        status.message()
    );
    let status = client
        .analyze(pb::AnalyzeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_cli_prints_a_breakdown() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let output = Command::new(BIN)
        .args([
            "analyze",
            "--server",
            &server.addr.to_string(),
            "Great staff. But the wait was awful and nobody called back.",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("positive") && stdout.contains("Great staff."),
        "{stdout}"
    );
    assert!(
        stdout.contains("negative")
            && stdout.contains("But the wait was awful and nobody called back."),
        "{stdout}"
    );
    assert!(stdout.contains("language en"), "{stdout}");
    let output = Command::new(BIN)
        .args([
            "analyze",
            "--json",
            "--server",
            &server.addr.to_string(),
            "",
            "fine",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json[0]["rejection"]["field"], "text");
    assert_eq!(json[1]["sentences"][0]["text"], "fine");
}

/// Found by the 42nd session's read-through: `verbatim analyze` read all of
/// standard input, analysed it in one go and printed nothing before the
/// end, holding every text and result in memory (a batch job piping a
/// million comments saw no output and a growing process). Now it streams
/// through `AnalyzeStream`: results appear while input is still open, in
/// input order, and `--json` is the same array as before.
#[tokio::test]
async fn the_cli_streams_standard_input() {
    use std::io::{BufRead, Write};
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut child = Command::new(BIN)
        .args(["analyze", "--json", "--server", &server.addr.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // More than one message's texts (64), blank lines between.
    for i in 0..70 {
        writeln!(stdin, "review {i}: the parcel came late\n").unwrap();
    }
    stdin.flush().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The first message's results, with standard input still open.
    let mut output = String::new();
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("results before the input ends");
        output.push_str(&line);
        output.push('\n');
        if line.contains("review 63:") {
            break;
        }
    }
    drop(stdin);
    output.extend(lines.iter().map(|line| line + "\n"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let json: serde_json::Value = serde_json::from_str(&output).expect("one JSON array");
    let texts: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..70)
        .map(|i| format!("review {i}: the parcel came late"))
        .collect();
    assert_eq!(texts, expected);
    assert_eq!(json[69]["sentences"][0]["text"], expected[69]);
    // The layout of the whole array printed at once (serde_json reads
    // floats to a neighbour, so the bytes are not compared whole).
    assert!(
        output.starts_with("[\n  {\n    \"keyphrases\""),
        "{}",
        &output[..40]
    );
    assert!(output.ends_with("\n  }\n]\n"));
    assert_eq!(output.matches("\n  },\n  {\n").count(), 69);
}

#[tokio::test]
async fn analyze_stream_answers_in_order() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    let messages: Vec<pb::AnalyzeRequest> = (0..5)
        .map(|m| pb::AnalyzeRequest {
            texts: vec![
                format!("Message {m}: the service was excellent."),
                format!("Message {m}: awful, never again."),
            ],
            include_embeddings: false,
        })
        .collect();
    let mut responses = client
        .analyze_stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(response) = responses.message().await.unwrap() {
        assert_eq!(response.results.len(), 2);
        let first = match response.results[0].outcome.as_ref().unwrap() {
            pb::text_result::Outcome::Analysis(a) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(label(first), pb::SentimentLabel::Positive);
        count += 1;
    }
    assert_eq!(count, 5);
}

#[tokio::test]
async fn a_full_analysis_queue_answers_resource_exhausted() {
    let server = TestServer::spawn_with_analysis(&["--analysis-queue", "1"]).await;
    let channel = server.channel().await;
    let mut tasks = Vec::new();
    for t in 0..24 {
        let mut client = pb::feedback_service_client::FeedbackServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let texts = (0..40)
                .map(|i| format!("Request {t} text {i}: the app is slow and crashes on login."))
                .collect();
            client
                .analyze(pb::AnalyzeRequest {
                    texts,
                    include_embeddings: false,
                })
                .await
        }));
    }
    let mut exhausted = 0;
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => {
                assert_eq!(response.into_inner().results.len(), 40);
                ok += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                exhausted += 1;
            }
        }
    }
    assert!(exhausted > 0 && ok > 0, "ok {ok}, exhausted {exhausted}");
}

/// `verbatim analyze` against a busy analysis pool: the stream the server
/// ends with RESOURCE_EXHAUSTED is reopened after a pause and the
/// unanswered texts sent again (`--retries`, as `import` does); with
/// `--retries 0` the command fails at once, naming the cause.
#[tokio::test]
async fn the_cli_retries_a_busy_analysis_pool() {
    let server = TestServer::spawn_with_analysis(&["--analysis-queue", "1"]).await;
    // Holds the pool's one place: call after call, each a second or so,
    // until told to stop (a call refused while the command has the place
    // is fine).
    let channel = server.channel().await;
    let hold = |stop: std::sync::Arc<std::sync::atomic::AtomicBool>| {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut client = pb::feedback_service_client::FeedbackServiceClient::new(channel);
            let mut call = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                call += 1;
                let texts = (0..60)
                    .map(|i| format!("Hold {call} text {i}: the courier left the box in the rain."))
                    .collect();
                let request = pb::AnalyzeRequest {
                    texts,
                    include_embeddings: false,
                };
                if let Err(status) = client.analyze(request).await {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                }
            }
        })
    };
    let addr = server.addr.to_string();
    let cli = move |retries: &str| {
        Command::new(BIN)
            .args(["analyze", "--json", "--retries", retries, "--server", &addr])
            .args(["the parcel came late", "great support"])
            .output()
            .unwrap()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = hold(stop.clone());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let run = cli.clone();
    let output = tokio::task::spawn_blocking(move || run("0")).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    held.await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("busy"), "{stderr}");

    // Held for 2 s: the command is refused, waits, and gets through.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = hold(stop.clone());
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let output = tokio::task::spawn_blocking(move || cli("8")).await.unwrap();
    held.await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json[0]["text"], "the parcel came late");
    assert_eq!(json[1]["text"], "great support");
    assert_eq!(json.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn analysis_off_and_missing_models() {
    let server = TestServer::spawn().await; // --analysis off
    let mut client = server.client().await;
    let status = client
        .analyze(pb::AnalyzeRequest {
            texts: vec!["hello".into()],
            include_embeddings: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--models-dir")
        .arg(dir.path().join("no-models"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("models/prepare.py"), "{stderr}");

    // A corrupted model file is caught by its pinned hash before it is loaded.
    let fake = dir.path().join("fake-models");
    for sub in ["onnxruntime", "e5-small", "sentiment"] {
        std::fs::create_dir_all(fake.join(sub)).unwrap();
    }
    let real = repo_path("models/cache");
    std::fs::copy(
        real.join("onnxruntime/libonnxruntime.so.1.32.0"),
        fake.join("onnxruntime/libonnxruntime.so.1.32.0"),
    )
    .unwrap();
    std::fs::write(fake.join("e5-small/model.onnx"), b"not a model").unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .arg("--models-dir")
        .arg(&fake)
        .args(["--encoder", "e5-small"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not match its pinned sha256"),
        "{stderr}"
    );

    // An encoder the sentiment head was not trained for is refused at startup.
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data3"))
        .arg("--models-dir")
        .arg(&real)
        .args(["--encoder", "all-minilm-l6-v2-onnx"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sentiment head is trained on multilingual-e5-small"),
        "{stderr}"
    );
}

fn status(item: &pb::Feedback) -> pb::AnalysisStatus {
    pb::AnalysisStatus::try_from(item.analysis_status).unwrap()
}

/// All items of one product (tests isolate their items by a unique product).
fn only_product(product: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        filter: Some(pb::Filter {
            products: vec![product.to_string()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn wait_analysed(client: &mut Client, ids: &[&str]) -> Vec<pb::Feedback> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = client
            .get(pb::GetRequest {
                ids: ids.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if got.items.len() == ids.len()
            && got
                .items
                .iter()
                .all(|i| status(i) != pb::AnalysisStatus::Pending)
        {
            return got.items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "items still pending after 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stored_items_are_analysed_in_the_background_and_searchable_by_sentiment() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    let word = unique_word("senti");
    let texts = [
        (
            "bg-pos",
            format!(
                "{word} Wonderful service, the technician was friendly and fixed everything fast."
            ),
        ),
        (
            "bg-neg",
            "Horrible. The router died after two days and support hung up on me.".to_string(),
        ),
        (
            "bg-neu",
            "I changed my billing address last week.".to_string(),
        ),
    ];
    let mut items: Vec<pb::Feedback> = texts
        .iter()
        .map(|(id, text)| pb::Feedback {
            product: word.clone(),
            ..item(id, text)
        })
        .collect();
    // Emoji only: the detector is unsure ("und"); another product, so the
    // searches below by `word` leave it out.
    let und_product = format!("{word}-und");
    items.push(pb::Feedback {
        product: und_product.clone(),
        ..item("bg-und", "\u{1f600}\u{1f600} \u{1f44d}")
    });
    let response = ingest(&mut client, items).await;
    assert_eq!(response.accepted, 4);
    assert!(
        response.results.iter().all(|r| r.analysis.is_none()),
        "no analysis unless asked to wait"
    );
    let analysed = wait_analysed(&mut client, &["bg-pos", "bg-neg", "bg-neu", "bg-und"]).await;
    for item in &analysed {
        assert_eq!(
            status(item),
            pb::AnalysisStatus::Done,
            "{:?}",
            item.analysis_error
        );
        let analysis = item.analysis.as_ref().unwrap();
        assert!(
            analysis.embedding.is_empty(),
            "Get leaves the embedding out"
        );
    }
    assert_eq!(analysed[3].analysis.as_ref().unwrap().language, "und");
    assert_eq!(analysed[0].analysis.as_ref().unwrap().language, "en");
    assert_eq!(analysed[1].analysis.as_ref().unwrap().language, "en");
    assert_eq!(
        label(analysed[0].analysis.as_ref().unwrap()),
        pb::SentimentLabel::Positive
    );
    assert_eq!(
        label(analysed[1].analysis.as_ref().unwrap()),
        pb::SentimentLabel::Negative
    );

    let stats = client
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.analysis_enabled);
    assert_eq!(stats.analysis_backlog, 0);

    // Filter, facet and sort by sentiment once the index has the analyses.
    let mut negative = only_product(&word);
    negative.filter = Some(pb::Filter {
        sentiments: vec![pb::SentimentLabel::Negative as i32],
        products: vec![word.clone()],
        ..Default::default()
    });
    // The index agrees with the stored analyses (whatever the model made of the neutral text).
    let mut expected: Vec<String> = analysed
        .iter()
        .filter(|i| label(i.analysis.as_ref().unwrap()) == pb::SentimentLabel::Negative)
        .map(|i| i.id.clone())
        .collect();
    expected.sort();
    assert!(expected.contains(&"bg-neg".to_string()));
    let want = expected.len() as u64;
    let found = search_until(&mut client, negative, |r| r.total_hits == want).await;
    let mut ids = hit_ids(&found);
    ids.sort();
    assert_eq!(ids, expected);
    let mut by_score = only_product(&word);
    by_score.filter = Some(pb::Filter {
        sentiment_score: Some(pb::FloatRange {
            min: Some(0.5),
            max: None,
        }),
        products: vec![word.clone()],
        ..Default::default()
    });
    assert_eq!(
        hit_ids(&search(&mut client, by_score).await),
        vec!["bg-pos"]
    );
    let mut worst_first = only_product(&word);
    worst_first.sort = pb::SortOrder::MostNegative as i32;
    worst_first.facets = vec![
        "sentiment".into(),
        "language".into(),
        "analysis_status".into(),
    ];
    let sorted = search(&mut client, worst_first.clone()).await;
    assert_eq!(hit_ids(&sorted)[0], "bg-neg");
    assert_eq!(hit_ids(&sorted)[2], "bg-pos");
    // Views: summary keeps the fields and the document analysis, drops
    // sentences and keyphrases; ids keeps ids and order only.
    let full = &sorted.hits[0].item.as_ref().unwrap();
    let full_analysis = full.analysis.as_ref().unwrap();
    assert!(!full_analysis.sentences.is_empty());
    let mut summary = worst_first.clone();
    summary.view = pb::HitView::Summary as i32;
    let summary = search(&mut client, summary).await;
    assert_eq!(hit_ids(&summary), hit_ids(&sorted));
    let item = summary.hits[0].item.as_ref().unwrap();
    assert_eq!(item.text, full.text);
    let analysis = item.analysis.as_ref().unwrap();
    assert!(analysis.sentences.is_empty() && analysis.keyphrases.is_empty());
    assert_eq!(analysis.sentiment, full_analysis.sentiment);
    assert_eq!(analysis.language, full_analysis.language);
    let mut ids_only = worst_first.clone();
    ids_only.view = pb::HitView::Ids as i32;
    let ids_only = search(&mut client, ids_only).await;
    assert_eq!(hit_ids(&ids_only), hit_ids(&sorted));
    assert_eq!(ids_only.total_hits, sorted.total_hits);
    assert_eq!(ids_only.facets, sorted.facets);
    for hit in &ids_only.hits {
        let item = hit.item.as_ref().unwrap();
        assert!(item.text.is_empty() && item.analysis.is_none() && hit.snippet.is_none());
    }
    let mut bad_view = worst_first.clone();
    bad_view.view = 99;
    let status = client.search(bad_view).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("view"), "{}", status.message());
    let facet_values = |field: &str| -> Vec<String> {
        sorted
            .facets
            .iter()
            .find(|f| f.field == field)
            .unwrap()
            .counts
            .iter()
            .map(|c| c.value.clone())
            .collect()
    };
    assert!(facet_values("sentiment").contains(&"negative".to_string()));
    // The detected languages, "und" included where the detector was unsure
    // (the short neutral sentence can be).
    let mut languages: Vec<String> = analysed[..3]
        .iter()
        .map(|i| i.analysis.as_ref().unwrap().language.clone())
        .collect();
    languages.sort();
    languages.dedup();
    let mut faceted = facet_values("language");
    faceted.sort();
    assert_eq!(
        faceted, languages,
        "detected language is indexed for items without one"
    );
    assert_eq!(facet_values("analysis_status"), vec!["done"]);
    // An undetermined language is indexed as "und" (schema 9; before, such
    // items had no language: no filter, facet or segment could pick them).
    let und = pb::SearchRequest {
        filter: Some(pb::Filter {
            languages: vec!["und".into()],
            products: vec![und_product.clone()],
            ..Default::default()
        }),
        facets: vec!["language".into()],
        ..Default::default()
    };
    let found = search_until(&mut client, und, |r| r.total_hits == 1).await;
    assert_eq!(hit_ids(&found), ["bg-und"]);
    assert_eq!(found.facets[0].counts[0].value, "und");
    let status = client
        .search(pb::SearchRequest {
            filter: Some(pb::Filter {
                sentiment_score: Some(pb::FloatRange {
                    min: Some(-2.0),
                    max: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn similar_items_by_embedding() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    let texts = [
        (
            "sim-1",
            "The router keeps dropping the wifi connection every evening.",
        ),
        (
            "sim-2",
            "My wifi disconnects all the time, the router is unreliable.",
        ),
        ("sim-3", "Le routeur perd la connexion wifi tous les soirs."),
        ("sim-4", "The invoice charged me twice for the same month."),
        ("sim-5", "Lovely staff at the store, very helpful."),
    ];
    let items: Vec<pb::Feedback> = texts.iter().map(|(id, text)| item(id, text)).collect();
    client
        .ingest(pb::IngestRequest {
            items,
            wait_for_analysis: true,
        })
        .await
        .unwrap();
    let ids: Vec<&str> = texts.iter().map(|(id, _)| *id).collect();
    // Like any search, similarity sees analyses once the index refreshed.
    let response = search_until(
        &mut client,
        pb::SearchRequest {
            similar_to_id: "sim-1".into(),
            limit: 4,
            ..Default::default()
        },
        |r| r.hits.len() == 4,
    )
    .await;
    let found = hit_ids(&response);
    assert!(
        !found.contains(&"sim-1".to_string()),
        "the item itself is left out"
    );
    assert_eq!(found.len(), 4);
    let top_two: std::collections::HashSet<&str> = found[..2].iter().map(String::as_str).collect();
    assert_eq!(
        top_two,
        ["sim-2", "sim-3"].into_iter().collect(),
        "{found:?} (multilingual neighbours first)"
    );
    assert!(response.hits.windows(2).all(|w| w[0].score >= w[1].score));
    let response = search(
        &mut client,
        pb::SearchRequest {
            similar_to_text: "double charge on my bill".into(),
            limit: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(hit_ids(&response), vec!["sim-4"]);
    assert_eq!(response.total_hits, 5);
    // A bounded count is cut to its bound, as in the other sorts.
    let response = search(
        &mut client,
        pb::SearchRequest {
            similar_to_text: "double charge on my bill".into(),
            limit: 1,
            track_total_hits_up_to: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(hit_ids(&response), vec!["sim-4"]);
    assert_eq!(
        (response.total_hits, response.total_hits_is_lower_bound),
        (2, true)
    );
    let _ = ids;
    let status = client
        .search(pb::SearchRequest {
            similar_to_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .search(pb::SearchRequest {
            similar_to_id: "sim-1".into(),
            cursor: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// The vector index behind similarity search follows updates, deletes and
/// filters, and is rebuilt from the store on restart.
#[tokio::test]
async fn similarity_follows_changes_filters_and_restarts() {
    let mut server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    let mut texts = [
        (
            "v-1",
            "The router keeps dropping the wifi connection every evening.",
        ),
        (
            "v-2",
            "My wifi disconnects all the time, the router is unreliable.",
        ),
        ("v-3", "Le routeur perd la connexion wifi tous les soirs."),
        ("v-4", "The invoice charged me twice for the same month."),
        ("v-5", "Lovely staff at the store, very helpful."),
    ];
    let mut items: Vec<pb::Feedback> = texts.iter().map(|(id, text)| item(id, text)).collect();
    items[2].channel = pb::Channel::Social as i32;
    client
        .ingest(pb::IngestRequest {
            items,
            wait_for_analysis: true,
        })
        .await
        .unwrap();
    let similar = |limit: u32, filter: Option<pb::Filter>| pb::SearchRequest {
        similar_to_id: "v-1".into(),
        limit,
        filter,
        ..Default::default()
    };
    search_until(&mut client, similar(4, None), |r| r.hits.len() == 4).await;
    let social = Some(pb::Filter {
        channels: vec![pb::Channel::Social as i32],
        ..Default::default()
    });
    let filtered = search(&mut client, similar(4, social.clone())).await;
    assert_eq!(hit_ids(&filtered), vec!["v-3"], "the filter is obeyed");
    assert_eq!(filtered.total_hits, 1);
    // A query restricts the candidates too.
    let mut request = similar(4, None);
    request.query = "invoice OR staff".into();
    let queried = search(&mut client, request).await;
    let mut found = hit_ids(&queried);
    found.sort();
    assert_eq!(found, vec!["v-4", "v-5"]);

    // v-2 now talks about billing: it leaves v-1's neighbours and joins v-4's.
    texts[1].1 = "I was billed two times on this month's invoice.";
    client
        .ingest(pb::IngestRequest {
            items: vec![item("v-2", texts[1].1)],
            wait_for_analysis: true,
        })
        .await
        .unwrap();
    let billing = pb::SearchRequest {
        similar_to_id: "v-4".into(),
        limit: 1,
        ..Default::default()
    };
    let response = search_until(&mut client, billing.clone(), |r| {
        hit_ids(r) == vec!["v-2".to_string()]
    })
    .await;
    assert!(
        response.hits[0].score > 0.8,
        "exact cosine {}",
        response.hits[0].score
    );
    // Deleted items leave the ranking.
    client
        .delete(pb::DeleteRequest {
            ids: vec!["v-3".into()],
        })
        .await
        .unwrap();
    let after = search_until(&mut client, similar(4, None), |r| {
        !hit_ids(r).contains(&"v-3".to_string())
    })
    .await;
    assert_eq!(after.hits.len(), 3, "{:?}", hit_ids(&after));

    // A clean stop saves the index; the next start loads it.
    server.terminate();
    let mut client =
        restart_expecting(&mut server, 2, &["loaded", "vectors=4", "corrected=0"]).await;
    let restarted = search(&mut client, similar(4, None)).await;
    assert_eq!(hit_ids(&restarted), hit_ids(&after));
    for (a, b) in restarted.hits.iter().zip(&after.hits) {
        assert_eq!(a.score, b.score, "exact scores survive the restart");
    }
    assert_eq!(
        hit_ids(&search(&mut client, billing.clone()).await),
        vec!["v-2"]
    );

    // After a crash the saved index is older than the store: the start
    // corrects it from the stored items.
    client
        .delete(pb::DeleteRequest {
            ids: vec!["v-5".into()],
        })
        .await
        .unwrap();
    search_until(&mut client, similar(4, None), |r| r.hits.len() == 2).await;
    server.kill9();
    let mut client =
        restart_expecting(&mut server, 3, &["loaded", "vectors=3", "corrected=1"]).await;
    let response = search(&mut client, similar(4, None)).await;
    assert!(!hit_ids(&response).contains(&"v-5".to_string()));
    assert_eq!(response.hits.len(), 2);

    // A damaged save is set aside: the index is built from the store.
    server.terminate();
    let keys = server.data_dir.join("index/vectors/keys.bin");
    let mut bytes = std::fs::read(&keys).expect("the index was saved");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&keys, bytes).unwrap();
    let mut client = restart_expecting(&mut server, 4, &["built", "vectors=3"]).await;
    assert!(server
        .log_text()
        .contains("the saved similarity index cannot be used"));
    let rebuilt = search(&mut client, similar(4, None)).await;
    assert_eq!(hit_ids(&rebuilt), hit_ids(&response));
    assert_eq!(hit_ids(&search(&mut client, billing).await), vec!["v-2"]);
}

/// Restarts the stopped server, waits for its similarity index (the `n`th
/// start) and checks that start's log line holds each of `expected`.
async fn restart_expecting(server: &mut TestServer, n: usize, expected: &[&str]) -> Client {
    server.restart().await;
    let started = wait_for_similarity_index(server, n).await;
    assert!(
        expected.iter().all(|e| started.contains(e)),
        "{expected:?} in {started}"
    );
    server.client().await
}

/// Waits until the server logged its `n`th "similarity index ready" (one
/// per start) and returns that line.
async fn wait_for_similarity_index(server: &TestServer, n: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let lines: Vec<String> = server
            .log_text()
            .lines()
            .filter(|l| l.contains("similarity index ready"))
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "start {n} of the similarity index not logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ingest_can_wait_for_the_analysis() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    let mut bad = item("w-bad", "x");
    bad.nps = Some(12);
    let response = client
        .ingest(pb::IngestRequest {
            items: vec![
                item("w-1", "The new app update is fantastic, so much faster!"),
                bad,
            ],
            wait_for_analysis: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.accepted, response.rejected), (1, 1));
    let analysis = response.results[0]
        .analysis
        .as_ref()
        .expect("analysis in the response");
    assert_eq!(label(analysis), pb::SentimentLabel::Positive);
    assert!(response.results[1].analysis.is_none());
    let got = client
        .get(pb::GetRequest {
            ids: vec!["w-1".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&got.items[0]), pb::AnalysisStatus::Done);

    // A deadline shorter than the analysis: the items are stored, so the
    // call answers OK before the deadline, those not analysed in time
    // without an analysis (it failed at the deadline, and a retry of
    // generated ids stored everything twice).
    let texts = [
        "The delivery was late and the box was damaged.",
        "Support answered quickly and fixed my login problem.",
        "The price went up again without any notice.",
    ];
    // 1,000 items of three sentences: ~4,000 embeddings, far more than a
    // CPU analyses in the second (~100 a second a core).
    let items: Vec<pb::Feedback> = (0..1_000)
        .map(|i| {
            let text = texts[i % texts.len()];
            item("", &format!("{text} Order {i} arrived. {text}"))
        })
        .collect();
    let mut request = tonic::Request::new(pb::IngestRequest {
        items,
        wait_for_analysis: true,
    });
    request.set_timeout(std::time::Duration::from_secs(1));
    let response = client
        .ingest(request)
        .await
        .expect("OK before the deadline")
        .into_inner();
    assert_eq!(response.accepted, 1_000);
    assert!(
        response.results.iter().any(|r| r.analysis.is_none()),
        "1,000 items analysed within a second?"
    );
    let ids: Vec<String> = response
        .results
        .iter()
        .map(|r| match &r.outcome {
            Some(pb::item_result::Outcome::Id(id)) => id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let got = client
        .get(pb::GetRequest {
            ids,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.items.len(), 1_000, "every item stored once");

    let off = TestServer::spawn().await;
    let mut off_client = off.client().await;
    let status = off_client
        .ingest(pb::IngestRequest {
            items: vec![item("w-2", "hello")],
            wait_for_analysis: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn the_analysis_backlog_survives_a_crash() {
    // Ingest with analysis off: everything stays pending, durably queued.
    let mut server = TestServer::spawn().await;
    let mut client = server.client().await;
    let ids: Vec<String> = (0..40).map(|i| format!("p-{i}")).collect();
    let items = ids
        .iter()
        .map(|id| item(id, "Checkout failed three times, very frustrating."))
        .collect();
    ingest(&mut client, items).await;
    let stats = client
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.analysis_backlog, 40);
    assert!(!stats.analysis_enabled);
    server.kill9();
    // The same data dir, restarted with analysis on, works the backlog off.
    let models = repo_path("models/cache");
    server
        .restart_with(&["--analysis", "on", "--models-dir", models.to_str().unwrap()])
        .await;
    let mut client = server.client().await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let analysed = wait_analysed(&mut client, &refs).await;
    assert!(analysed
        .iter()
        .all(|i| status(i) == pb::AnalysisStatus::Done));
    let stats = client
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.analysis_backlog, 0);
}

/// The encoder also loads a standard Hugging Face BERT directory converted by
/// `models/convert_hf.py` (all-minilm-l6-v2 here): our tokenisation and
/// inference agree with the Python tokenizers + onnxruntime of the same files.
#[test]
fn a_converted_hugging_face_bert_encoder_loads_and_agrees_with_python() {
    let cache = repo_path("models/cache");
    let dir = cache.join("all-minilm-l6-v2-onnx");
    let paths = verbatim::nlp::ModelPaths::new(&cache).with_encoder(&dir);
    let encoder = verbatim::nlp::Encoder::load(&paths, 2).expect("load the converted MiniLM");
    assert_eq!(encoder.info.hidden, 384);
    assert!(!encoder.info.expand_unknown_runs);
    let texts = [
        "The delivery was late again.",
        "Customer service solved it in minutes 👍",
        "☃ unknown ☃☃ glyphs",
    ];
    let ours = encoder.embed(&texts).unwrap();
    let ids: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| encoder.content_ids(t).unwrap())
        .collect();
    let script = r#"
import json, sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
d = sys.argv[1]
texts = json.loads(sys.stdin.read())
tok = Tokenizer.from_file(d + "/tokenizer.json")
s = ort.InferenceSession(d + "/model.onnx", providers=["CPUExecutionProvider"])
out = []
for t in texts:
    ids = tok.encode(t).ids
    e = s.run(["embedding"], {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0]
    out.append({"ids": ids[1:-1], "embedding": [float(x) for x in e]})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(cache.join("venv/bin/python"))
        .args(["-c", script, dir.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("models/cache/venv/bin/python (run models/prepare.py)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&texts).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let python: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    for (i, reference) in python.iter().enumerate() {
        let ref_ids: Vec<i64> = reference["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(ids[i], ref_ids, "token ids of {:?}", texts[i]);
        let ref_embedding: Vec<f32> = reference["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let cosine: f32 = ours[i].iter().zip(&ref_embedding).map(|(a, b)| a * b).sum();
        assert!(cosine > 0.9999, "text {i}: cosine {cosine}");
    }
    // A paraphrase is closer than an unrelated sentence.
    let pair = encoder
        .embed(&[
            "The parcel arrived late.",
            "Delivery was delayed.",
            "I love the colour of the case.",
        ])
        .unwrap();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cos(&pair[0], &pair[1]) > cos(&pair[0], &pair[2]) + 0.2);
}
