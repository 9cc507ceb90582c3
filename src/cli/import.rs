//! `verbatim import FILE`: streams a CSV or JSONL file into a running server
//! through IngestStream, with a progress bar, a summary of accepted and
//! rejected rows, and `--resume` after an interruption.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Args, ValueEnum};
use prost::Message;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::encoding::{self, Encoding, EncodingArg};
use crate::domain::limits::MAX_MESSAGE_BYTES;
use crate::grpc::pb;

/// Exit status of an import that finished with rejected rows.
pub const EXIT_ROWS_REJECTED: u8 = 3;

/// Bytes of the file's start that go into its identity.
const IDENTITY_HEAD_BYTES: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    Csv,
    Jsonl,
}

impl FileFormat {
    /// From the extension: .csv, else JSON Lines.
    fn of(file: &Path) -> FileFormat {
        match file.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => FileFormat::Csv,
            _ => FileFormat::Jsonl,
        }
    }

    /// What a row number counts: CSV records (header excluded) or JSONL lines.
    fn row_label(self) -> &'static str {
        match self {
            FileFormat::Csv => "row",
            FileFormat::Jsonl => "line",
        }
    }
}

/// Where a row is: its number (CSV records after the header, JSONL lines)
/// and the line of the file it starts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RowAt {
    row: u64,
    line: u64,
}

impl RowAt {
    /// "line 4" (JSONL), "row 3 (line 4)" (CSV).
    fn label(self, format: FileFormat) -> String {
        match format {
            FileFormat::Jsonl => format!("line {}", self.row),
            FileFormat::Csv => format!("row {} (line {})", self.row, self.line),
        }
    }
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// CSV (with a header row) or JSON Lines file.
    pub file: PathBuf,
    #[command(flatten)]
    pub server: crate::cli::ServerArg,
    /// File format [default: from the extension: .csv, else JSON Lines].
    #[arg(long)]
    pub format: Option<FileFormat>,
    /// Character encoding of the file. auto: UTF-8, or cp1252 when the file
    /// is not UTF-8 (said on stderr). latin-1 keeps bytes 0x80-0x9F as the
    /// C1 characters U+0080-U+009F (the server reads them as cp1252 for
    /// analysis and search); cp1252 decodes them as Windows does (0x96 '–').
    /// A UTF-8 byte order mark is skipped.
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    pub encoding: EncodingArg,
    /// Read FIELD from COLUMN: --map text=comment --map nps="Likelihood to recommend".
    /// Fields: id text channel journey_stage product customer_id created_at language
    /// nps csat ces rating tags attributes.KEY. Unmapped fields are read from
    /// a column of the same name.
    #[arg(long = "map", value_name = "FIELD=COLUMN", value_parser = parse_mapping)]
    pub mappings: Vec<(String, String)>,
    /// Items per IngestStream message (1..=1000); fewer when the items would
    /// exceed the 16 MiB message limit.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,
    /// Separator of several tags in one CSV cell.
    #[arg(long, default_value = ";")]
    pub tag_separator: String,
    /// Skip the rows an earlier, interrupted run of the same file had acknowledged.
    #[arg(long)]
    pub resume: bool,
    /// Print every rejected row (default: the first 20).
    #[arg(long)]
    pub all_rejections: bool,
    /// Exit 0 even when rows were rejected (otherwise the exit status is 3).
    #[arg(long)]
    pub allow_rejections: bool,
}

/// The import finished, but rows were rejected.
#[derive(Debug)]
pub struct RowsRejected(pub u64);

impl std::fmt::Display for RowsRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows rejected: {} (--allow-rejections exits 0 all the same)",
            self.0
        )
    }
}

impl std::error::Error for RowsRejected {}

fn parse_mapping(raw: &str) -> Result<(String, String), String> {
    let (field, column) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected FIELD=COLUMN, got {raw:?}"))?;
    const FIELDS: &[&str] = &[
        "id",
        "text",
        "channel",
        "journey_stage",
        "product",
        "customer_id",
        "created_at",
        "language",
        "nps",
        "csat",
        "ces",
        "rating",
        "tags",
    ];
    if !FIELDS.contains(&field) && !field.starts_with("attributes.") {
        return Err(format!(
            "unknown field {field:?}; fields: {} attributes.KEY",
            FIELDS.join(" ")
        ));
    }
    Ok((field.to_string(), column.to_string()))
}

/// Where an interrupted import resumes.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ImportState {
    file_bytes: u64,
    rows_done: u64,
    accepted: u64,
    rejected: u64,
}

fn state_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".import-state.json");
    file.with_file_name(name)
}

/// `FILE.import-state.json` beside the input, saved after every ack.
struct StateFile {
    path: PathBuf,
    save_failed: bool,
}

impl StateFile {
    fn new(file: &Path) -> StateFile {
        StateFile {
            path: state_path(file),
            save_failed: false,
        }
    }

    /// What an interrupted run saved. A missing, empty or damaged state file
    /// means starting from the first row: rows keep their ids from one run
    /// to the next, so the rows imported before are replaced, not duplicated.
    fn load(&self) -> anyhow::Result<Option<ImportState>> {
        let path = self.path.display();
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("nothing to resume ({path} not found): importing from the first row");
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
        };
        match serde_json::from_slice(&bytes) {
            Ok(saved) => Ok(Some(saved)),
            Err(e) => {
                eprintln!(
                    "warning: ignoring the damaged {path} ({e}): importing from the first row"
                );
                Ok(None)
            }
        }
    }

    /// Saves the state; the first failure is reported, the import goes on.
    fn save(&mut self, state: &ImportState) {
        if let Err(e) = serde_json::to_vec(state)
            .map_err(std::io::Error::from)
            .and_then(|bytes| replace_file(&self.path, &bytes))
        {
            if !self.save_failed {
                eprintln!(
                    "warning: cannot save {} ({e}): --resume will start from the first row",
                    self.path.display()
                );
            }
            self.save_failed = true;
        }
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(temporary_path(&self.path));
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it
/// over `path` and syncs the directory: whenever the process dies, `path`
/// holds the old content or the new one, never a part.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = temporary_path(path);
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Identifies the input in the ids of rows that have none: a SHA-256 of the
/// file's canonical path, its size and its first 64 KiB (16 hex digits).
fn file_identity(file: &Path, file_bytes: u64) -> anyhow::Result<String> {
    let context = || format!("cannot read {}", file.display());
    let canonical = std::fs::canonicalize(file).with_context(context)?;
    let mut head = Vec::new();
    File::open(file)
        .and_then(|f| f.take(IDENTITY_HEAD_BYTES).read_to_end(&mut head))
        .with_context(context)?;
    let path = canonical.as_os_str().as_encoded_bytes();
    let digest = Sha256::new()
        .chain_update((path.len() as u64).to_le_bytes())
        .chain_update(path)
        .chain_update(file_bytes.to_le_bytes())
        .chain_update(&head)
        .finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// The id of a row without one, the same in every run over the same file,
/// so that importing it again replaces the row instead of adding it twice.
fn derived_id(file_identity: &str, row: u64) -> String {
    format!("import-{file_identity}-{row}")
}

/// Bytes an item adds to an IngestRequest: the key of field 1, the length
/// and the item.
fn item_bytes(item: &pb::Feedback) -> usize {
    let len = item.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// Refuses an item the server can never take because of its size: sending
/// it would waste the bandwidth, or fail the whole stream when it alone
/// exceeds a message.
fn check_size(item: &pb::Feedback) -> Result<(), String> {
    crate::domain::validate_text(&item.text).map_err(|rejection| rejection.to_string())?;
    let bytes = item_bytes(item);
    if bytes > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the item is {bytes} bytes encoded, more than one message may hold ({MAX_MESSAGE_BYTES})"
        ));
    }
    Ok(())
}

/// A row of the file as field -> value (CSV cells are strings).
type Row = serde_json::Map<String, Value>;

/// One message's worth of rows: what goes out and how to report its acks.
#[derive(Default)]
struct Batch {
    request: pb::IngestRequest,
    /// Where each item's row is.
    rows: Vec<RowAt>,
    /// Every row up to this one is done once the batch is acknowledged.
    last_row: u64,
}

enum Produced {
    Batch(Batch),
    /// A row the client could not turn into an item.
    Unreadable {
        at: RowAt,
        reason: String,
    },
    /// Bytes of the file read so far.
    Progress(u64),
    Done {
        last_row: u64,
    },
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let file_bytes = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    let format = args.format.unwrap_or_else(|| FileFormat::of(&args.file));
    let mappings: BTreeMap<String, String> = args.mappings.iter().cloned().collect();
    let encoding = encoding::choose(&args.file, args.encoding)?;
    let input = open_input(&args.file, format, encoding, &mappings)?;
    let mut state_file = StateFile::new(&args.file);
    let state = start_state(&args, format, &state_file, file_bytes)?;
    let (produced_tx, produced_rx) = mpsc::channel::<Produced>(4);
    let sink = RowSink {
        skip_rows: state.rows_done,
        file_identity: file_identity(&args.file, file_bytes)?,
        mappings,
        tag_separator: args.tag_separator.clone(),
        batcher: Batcher::new(produced_tx, args.batch_size as usize),
    };
    let client = crate::cli::connect(&args.server).await?;
    let reader = {
        let file = args.file.clone();
        std::thread::spawn(move || produce(&file, input, sink))
    };
    let tally = Tally {
        state,
        ..Tally::default()
    };
    let mut tally = stream(client, produced_rx, tally, &mut state_file, file_bytes).await?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the file reader panicked"))??;
    tally.finish()?;
    state_file.remove();
    print_summary(&args, format, &mut tally);
    match tally.state.rejected {
        0 => Ok(()),
        _ if args.allow_rejections => Ok(()),
        rejected => Err(RowsRejected(rejected).into()),
    }
}

/// A fresh state, or with --resume what an interrupted run saved.
fn start_state(
    args: &ImportArgs,
    format: FileFormat,
    state_file: &StateFile,
    file_bytes: u64,
) -> anyhow::Result<ImportState> {
    let saved = if args.resume {
        state_file.load()?
    } else {
        None
    };
    let Some(saved) = saved else {
        return Ok(ImportState {
            file_bytes,
            ..Default::default()
        });
    };
    anyhow::ensure!(
        saved.file_bytes == file_bytes,
        "{} changed since the interrupted import ({} bytes then, {} now); import it without --resume",
        args.file.display(),
        saved.file_bytes,
        file_bytes
    );
    eprintln!("resuming after {} {}", format.row_label(), saved.rows_done);
    Ok(saved)
}

/// Sends the reader's batches through IngestStream and counts the acks
/// until the server ends the stream.
async fn stream(
    mut client: crate::cli::Client,
    produced: mpsc::Receiver<Produced>,
    mut tally: Tally,
    state_file: &mut StateFile,
    file_bytes: u64,
) -> anyhow::Result<Tally> {
    let progress = indicatif::ProgressBar::new(file_bytes);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}",
        )
        .expect("valid template"),
    );
    let (requests_tx, requests_rx) = mpsc::channel::<pb::IngestRequest>(2);
    let mut acks = client
        .ingest_stream(ReceiverStream::new(requests_rx))
        .await
        .context("the server refused the import stream")?
        .into_inner();
    let (events_tx, mut events) = mpsc::unbounded_channel::<Produced>();
    let forwarder = tokio::spawn(forward(produced, events_tx, requests_tx));
    let mut events_open = true;
    loop {
        tokio::select! {
            // Events first: a batch's event is queued before its request is
            // sent, so it is always read before the batch's ack.
            biased;
            event = events.recv(), if events_open => match event {
                Some(event) => tally.record(event, &progress),
                None => events_open = false,
            },
            ack = acks.message() => match ack.context("import stream failed")? {
                Some(ack) => {
                    tally.acknowledge(&ack)?;
                    state_file.save(&tally.state);
                    progress.set_message(tally.counts());
                }
                None => break,
            },
        }
    }
    forwarder.await.context("the import sender failed")?;
    while let Some(event) = events.recv().await {
        tally.record(event, &progress);
    }
    progress.finish_and_clear();
    Ok(tally)
}

/// Sending runs in its own task so that acks are read while a send waits
/// for the server (backpressure); everything else reaches the importer's
/// loop as an event, batches before their request is sent, so acks find them.
async fn forward(
    mut produced: mpsc::Receiver<Produced>,
    events: mpsc::UnboundedSender<Produced>,
    requests: mpsc::Sender<pb::IngestRequest>,
) {
    while let Some(produced) = produced.recv().await {
        let (event, request) = match produced {
            Produced::Batch(mut batch) => {
                let request = std::mem::take(&mut batch.request);
                (Produced::Batch(batch), Some(request))
            }
            other => (other, None),
        };
        if events.send(event).is_err() {
            return;
        }
        if let Some(request) = request {
            if requests.send(request).await.is_err() {
                return; // the server ended the stream; its status comes with the acks
            }
        }
    }
}

/// What the reader and the acks reported so far.
#[derive(Default)]
struct Tally {
    state: ImportState,
    /// Rows of each message sent and not acknowledged yet, and the last row
    /// it covers.
    pending: VecDeque<(Vec<RowAt>, u64)>,
    /// Rows the client rejected that no acknowledged message covers yet.
    client_rejected: VecDeque<u64>,
    rejections: Vec<(RowAt, String)>,
    /// The last row of the file, once it is read.
    last_row: u64,
}

impl Tally {
    fn record(&mut self, event: Produced, progress: &indicatif::ProgressBar) {
        match event {
            Produced::Batch(batch) => self.pending.push_back((batch.rows, batch.last_row)),
            Produced::Unreadable { at, reason } => {
                self.client_rejected.push_back(at.row);
                self.rejections.push((at, reason));
            }
            // Bytes of UTF-8 read: more than the file's when it is decoded.
            Produced::Progress(bytes) => {
                progress.set_position(bytes.min(progress.length().unwrap_or(u64::MAX)))
            }
            Produced::Done { last_row } => self.last_row = last_row,
        }
    }

    /// Counts an ack: every row up to the last one of its message is done.
    fn acknowledge(&mut self, ack: &pb::IngestAck) -> anyhow::Result<()> {
        let (rows, last_row) = self
            .pending
            .pop_front()
            .context("the server acknowledged a message that was not sent")?;
        for result in &ack.results {
            if let Some(pb::item_result::Outcome::Rejection(r)) = &result.outcome {
                let at = rows.get(result.index as usize).copied().unwrap_or_default();
                self.rejections
                    .push((at, format!("{}: {}", r.field, r.reason)));
            }
        }
        self.state.accepted += u64::from(ack.accepted);
        self.state.rejected += u64::from(ack.rejected);
        while self
            .client_rejected
            .front()
            .is_some_and(|&row| row <= last_row)
        {
            self.client_rejected.pop_front();
            self.state.rejected += 1;
        }
        self.state.rows_done = last_row;
        Ok(())
    }

    fn counts(&self) -> String {
        format!(
            "{} accepted, {} rejected",
            self.state.accepted,
            self.state.rejected + self.client_rejected.len() as u64
        )
    }

    /// Once the stream ended and the reader finished: every row read is done.
    fn finish(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.pending.is_empty(),
            "the server closed the stream before acknowledging every message"
        );
        self.state.rows_done = self.state.rows_done.max(self.last_row);
        self.state.rejected += self.client_rejected.len() as u64;
        self.client_rejected.clear();
        Ok(())
    }
}

fn print_summary(args: &ImportArgs, format: FileFormat, tally: &mut Tally) {
    let state = &tally.state;
    println!(
        "imported {}: {} rows, {} accepted, {} rejected",
        args.file.display(),
        state.accepted + state.rejected,
        state.accepted,
        state.rejected
    );
    let rejections = &mut tally.rejections;
    rejections.sort_by_key(|(at, _)| at.row);
    let shown = if args.all_rejections {
        rejections.len()
    } else {
        20
    };
    for (at, reason) in rejections.iter().take(shown) {
        println!("  {}: {reason}", at.label(format));
    }
    if rejections.len() > shown {
        println!(
            "  ... and {} more (--all-rejections lists them)",
            rejections.len() - shown
        );
    }
}

/// The file as UTF-8 (decoded as it streams, a BOM skipped).
type Decoded = Box<dyn Read + Send>;

/// The opened input, its CSV header checked.
enum Input {
    Jsonl(BufReader<Decoded>),
    Csv {
        reader: csv::Reader<LineCounting<Decoded>>,
        lines: Lines,
        columns: Vec<String>,
    },
}

/// The line breaks of what the CSV reader has consumed, so that the byte
/// offset where a record's read starts gives the line its first cell is on.
/// (The csv crate's own line numbers are one short after a CRLF, whose LF it
/// counts with the next record, and after skipped blank lines.) Keeps the
/// bytes from the current record on: what the reader has read ahead.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<LinesRead>>);

#[derive(Default)]
struct LinesRead {
    /// Chunks read and not yet passed, the first from byte `cursor` on.
    chunks: VecDeque<Vec<u8>>,
    cursor: usize,
    /// Bytes passed, and the line breaks among them.
    passed: u64,
    breaks: u64,
}

impl Lines {
    /// The line (from 1) of the first byte at or after `offset` that is not
    /// a line break. Offsets must not decrease from one call to the next:
    /// each byte is counted once.
    fn line_at(&self, offset: u64) -> u64 {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let read = &mut *guard;
        while read.passed < offset {
            let Some(chunk) = read.chunks.front() else {
                break;
            };
            let left = (chunk.len() - read.cursor) as u64;
            let take = left.min(offset - read.passed) as usize;
            let counted = &chunk[read.cursor..read.cursor + take];
            read.breaks += counted.iter().filter(|&&b| b == b'\n').count() as u64;
            read.passed += take as u64;
            read.cursor += take;
            if read.cursor == chunk.len() {
                read.chunks.pop_front();
                read.cursor = 0;
            }
        }
        let cursor = read.cursor;
        let leading = read
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(i, chunk)| &chunk[if i == 0 { cursor } else { 0 }..])
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .filter(|&&b| b == b'\n')
            .count() as u64;
        1 + read.breaks + leading
    }
}

/// A reader that hands what it reads to `Lines`.
struct LineCounting<R> {
    inner: R,
    lines: Lines,
}

impl<R: Read> Read for LineCounting<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(out)?;
        if read > 0 {
            let mut lines = self.lines.0.lock().unwrap_or_else(|e| e.into_inner());
            lines.chunks.push_back(out[..read].to_vec());
        }
        Ok(read)
    }
}

fn open_input(
    file: &Path,
    format: FileFormat,
    encoding: Encoding,
    mappings: &BTreeMap<String, String>,
) -> anyhow::Result<Input> {
    let decoded = encoding::open(file, encoding)?;
    Ok(match format {
        FileFormat::Jsonl => Input::Jsonl(BufReader::new(decoded)),
        FileFormat::Csv => {
            let lines = Lines::default();
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(LineCounting {
                    inner: decoded,
                    lines: lines.clone(),
                });
            let columns: Vec<String> = reader
                .headers()
                .context("cannot read the CSV header row")?
                .iter()
                .map(|h| h.trim().to_string())
                .collect();
            check_columns(&columns, mappings)?;
            Input::Csv {
                reader,
                lines,
                columns,
            }
        }
    })
}

/// Every mapped column, and the column of the text, must be in the header:
/// otherwise every row would be rejected.
fn check_columns(columns: &[String], mappings: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let listed = || {
        columns
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<String> = mappings
        .iter()
        .filter(|(_, column)| !columns.contains(column))
        .map(|(field, column)| format!("{column:?} (--map {field}={column})"))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the CSV header has no column {}; its columns: {}",
        missing.join(", "),
        listed()
    );
    anyhow::ensure!(
        mappings.contains_key("text") || columns.iter().any(|c| c == "text"),
        "the CSV header has no \"text\" column (name it with --map text=COLUMN); its columns: {}",
        listed()
    );
    Ok(())
}

/// Groups items into messages of at most `max_items` items and
/// MAX_MESSAGE_BYTES bytes, and sends them to the importer.
struct Batcher {
    out: mpsc::Sender<Produced>,
    max_items: usize,
    batch: Batch,
    /// Encoded bytes of `batch.request`.
    bytes: usize,
    /// Bytes of the file read so far.
    read: u64,
}

impl Batcher {
    fn new(out: mpsc::Sender<Produced>, max_items: usize) -> Batcher {
        Batcher {
            out,
            max_items,
            batch: Batch::default(),
            bytes: 0,
            read: 0,
        }
    }

    /// Adds an item, sending the batch first when the item would take it
    /// over MAX_MESSAGE_BYTES. False once the importer stopped listening.
    fn push(&mut self, at: RowAt, item: pb::Feedback) -> bool {
        let size = item_bytes(&item);
        if self.bytes + size > MAX_MESSAGE_BYTES && !self.flush() {
            return false;
        }
        self.bytes += size;
        self.batch.request.items.push(item);
        self.batch.rows.push(at);
        self.batch.last_row = at.row;
        self.batch.request.items.len() < self.max_items || self.flush()
    }

    /// Reports a row the client could not turn into an item.
    fn reject(&mut self, at: RowAt, reason: String) -> bool {
        self.batch.last_row = at.row;
        self.out
            .blocking_send(Produced::Unreadable { at, reason })
            .is_ok()
    }

    /// Sends the batch, if it holds an item.
    fn flush(&mut self) -> bool {
        if self.batch.request.items.is_empty() {
            return true;
        }
        let last_row = self.batch.last_row;
        let full = std::mem::replace(
            &mut self.batch,
            Batch {
                last_row,
                ..Batch::default()
            },
        );
        self.bytes = 0;
        self.out.blocking_send(Produced::Batch(full)).is_ok()
            && self
                .out
                .blocking_send(Produced::Progress(self.read))
                .is_ok()
    }

    /// Sends the last batch and says the file is read.
    fn finish(mut self, last_row: u64) {
        if self.flush() {
            let _ = self.out.blocking_send(Produced::Done { last_row });
        }
    }
}

/// Turns the rows of the file into items.
struct RowSink {
    /// Rows an interrupted run had finished.
    skip_rows: u64,
    file_identity: String,
    mappings: BTreeMap<String, String>,
    tag_separator: String,
    batcher: Batcher,
}

impl RowSink {
    /// Takes the row at `at`, read by `fields`, unless an interrupted run
    /// had finished it; `read` is the bytes of the file read so far. False
    /// once the importer stopped listening.
    fn emit(&mut self, at: RowAt, read: u64, fields: impl FnOnce() -> Result<Row, String>) -> bool {
        self.batcher.read = read;
        if at.row <= self.skip_rows {
            return true;
        }
        match fields().and_then(|fields| self.item(at.row, &fields)) {
            Ok(item) => self.batcher.push(at, item),
            Err(reason) => self.batcher.reject(at, reason),
        }
    }

    fn item(&self, row: u64, fields: &Row) -> Result<pb::Feedback, String> {
        let mut item = row_to_item(fields, &self.mappings, &self.tag_separator)?;
        if item.id.is_empty() {
            item.id = derived_id(&self.file_identity, row);
        }
        check_size(&item)?;
        Ok(item)
    }
}

/// Reads the whole input (on a thread of its own: it blocks).
fn produce(file: &Path, input: Input, mut sink: RowSink) -> anyhow::Result<()> {
    let last_row = match input {
        Input::Jsonl(reader) => read_jsonl(reader, &mut sink).map_err(anyhow::Error::from),
        Input::Csv {
            reader,
            lines,
            columns,
        } => read_csv(reader, &lines, &columns, &mut sink).map_err(anyhow::Error::from),
    }
    .with_context(|| format!("cannot read {}", file.display()))?;
    if let Some(last_row) = last_row {
        sink.batcher.finish(last_row);
    }
    Ok(())
}

/// Reads JSON Lines as bytes, numbering rows by line: a line that is not
/// UTF-8 or not a JSON object is a rejected row, blank lines are skipped
/// (a BOM is gone already: `encoding::open`). The last line number, or None
/// when the importer stopped listening.
fn read_jsonl(mut reader: impl BufRead, sink: &mut RowSink) -> std::io::Result<Option<u64>> {
    let mut line = Vec::new();
    let (mut number, mut read) = (0u64, 0u64);
    loop {
        line.clear();
        let len = reader.read_until(b'\n', &mut line)?;
        if len == 0 {
            return Ok(Some(number));
        }
        number += 1;
        read += len as u64;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let at = RowAt {
            row: number,
            line: number,
        };
        if !sink.emit(at, read, || parse_json_line(&line)) {
            return Ok(None);
        }
    }
}

fn parse_json_line(line: &[u8]) -> Result<Row, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".to_string()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

/// Reads CSV records, numbered from 1 after the header, with the line each
/// starts on (a quoted cell may hold line breaks): a record that is not
/// valid CSV is a rejected row, an I/O error ends the import. The last row
/// number, or None when the importer stopped listening.
fn read_csv(
    mut reader: csv::Reader<impl Read>,
    lines: &Lines,
    columns: &[String],
    sink: &mut RowSink,
) -> Result<Option<u64>, csv::Error> {
    let mut record = csv::StringRecord::new();
    let mut number = 0u64;
    loop {
        let start = reader.position().byte();
        let read = match reader.read_record(&mut record) {
            Ok(false) => return Ok(Some(number)),
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(e),
            other => other,
        };
        number += 1;
        let at = RowAt {
            row: number,
            line: lines.line_at(start),
        };
        let fields = || {
            read.map(|_| {
                columns
                    .iter()
                    .zip(record.iter())
                    .map(|(c, v)| (c.clone(), Value::String(v.to_string())))
                    .collect()
            })
            .map_err(|e| format!("invalid CSV: {e}"))
        };
        if !sink.emit(at, reader.position().byte(), fields) {
            return Ok(None);
        }
    }
}

fn row_to_item(
    row: &Row,
    mappings: &BTreeMap<String, String>,
    tag_separator: &str,
) -> Result<pb::Feedback, String> {
    let get = |field: &str| -> Option<&Value> {
        let column = mappings.get(field).map(String::as_str).unwrap_or(field);
        row.get(column)
            .filter(|v| !matches!(v, Value::Null) && v.as_str() != Some(""))
    };
    let text = |field: &str| -> Result<String, String> {
        Ok(match get(field) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(format!("{field}: expected a string, got {other}")),
        })
    };
    let score = |field: &str| -> Result<Option<i32>, String> {
        match get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| format!("{field}: expected a whole number, got {n}")),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i32>()
                .map(Some)
                .map_err(|_| format!("{field}: expected a whole number, got {s:?}")),
            Some(other) => Err(format!("{field}: expected a whole number, got {other}")),
        }
    };
    let channel = match get("channel") {
        None => pb::Channel::Unspecified,
        Some(v) => {
            let raw = v.as_str().unwrap_or_default();
            crate::cli::parse_channel(raw)
                .map(crate::grpc::channel_to_pb)
                .ok_or_else(|| format!("channel: unknown value {raw:?}"))?
        }
    };
    let journey_stage = match get("journey_stage") {
        None => pb::JourneyStage::Unspecified,
        Some(v) => {
            let raw = v.as_str().unwrap_or_default();
            crate::cli::parse_stage(raw)
                .map(crate::grpc::stage_to_pb)
                .ok_or_else(|| format!("journey_stage: unknown value {raw:?}"))?
        }
    };
    let created_at = match get("created_at") {
        None => None,
        Some(Value::Number(n)) => Some(prost_types::Timestamp {
            seconds: n.as_i64().unwrap_or(0),
            nanos: 0,
        }),
        Some(Value::String(s)) => {
            Some(crate::cli::parse_time(s).map_err(|e| format!("created_at: {e}"))?)
        }
        Some(other) => return Err(format!("created_at: unexpected value {other}")),
    };
    let tags = match get("tags") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("tags: expected strings, got {t}"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => s
            .split(tag_separator)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Some(other) => return Err(format!("tags: expected a list or a string, got {other}")),
    };
    let mut attributes = std::collections::HashMap::new();
    if let Some(Value::Object(map)) = get("attributes") {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            attributes.insert(k.clone(), v);
        }
    }
    let attribute_columns = row
        .keys()
        .filter_map(|k| {
            k.strip_prefix("attributes.")
                .map(|key| (key.to_string(), k.clone()))
        })
        .chain(mappings.iter().filter_map(|(field, column)| {
            field
                .strip_prefix("attributes.")
                .map(|key| (key.to_string(), column.clone()))
        }));
    for (key, column) in attribute_columns {
        if let Some(Value::String(v)) = row.get(&column) {
            if !v.is_empty() {
                attributes.insert(key, v.clone());
            }
        }
    }
    Ok(pb::Feedback {
        id: text("id")?,
        text: text("text")?,
        channel: channel as i32,
        journey_stage: journey_stage as i32,
        product: text("product")?,
        customer_id: text("customer_id")?,
        created_at,
        language: text("language")?,
        nps: score("nps")?,
        csat: score("csat")?,
        ces: score("ces")?,
        rating: score("rating")?,
        tags,
        attributes,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::MAX_TEXT_BYTES;

    fn row(json: &str) -> Row {
        serde_json::from_str(json).unwrap()
    }

    /// What the reader makes of `contents`: the batches, and the rows the
    /// client rejected. Rows without an id get ids from the identity "test".
    fn produce_file(contents: &[u8], format: FileFormat) -> (Vec<Batch>, Vec<(RowAt, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input");
        std::fs::write(&file, contents).unwrap();
        let encoding = encoding::choose(&file, EncodingArg::Auto).unwrap();
        let input = open_input(&file, format, encoding, &BTreeMap::new()).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let sink = RowSink {
            skip_rows: 0,
            file_identity: "test".into(),
            mappings: BTreeMap::new(),
            tag_separator: ";".into(),
            batcher: Batcher::new(tx, 1000),
        };
        let reader = std::thread::spawn(move || produce(&file, input, sink));
        let (mut batches, mut rejected) = (Vec::new(), Vec::new());
        while let Some(event) = rx.blocking_recv() {
            match event {
                Produced::Batch(batch) => batches.push(batch),
                Produced::Unreadable { at, reason } => rejected.push((at, reason)),
                Produced::Progress(_) | Produced::Done { .. } => {}
            }
        }
        reader.join().unwrap().unwrap();
        (batches, rejected)
    }

    fn item_rows(batches: &[Batch]) -> Vec<u64> {
        batches
            .iter()
            .flat_map(|b| b.rows.iter().map(|at| at.row))
            .collect()
    }

    #[test]
    fn maps_columns_and_coerces_values() {
        let mappings: BTreeMap<String, String> = [
            ("text".to_string(), "comment".to_string()),
            ("attributes.region".to_string(), "Region".to_string()),
        ]
        .into_iter()
        .collect();
        let item = row_to_item(
            &row(r#"{"comment":"slow","nps":"3","channel":"Support Ticket","tags":"a; b","Region":"emea","created_at":"2026-01-02"}"#),
            &mappings,
            ";",
        )
        .unwrap();
        assert_eq!(item.text, "slow");
        assert_eq!(item.nps, Some(3));
        assert_eq!(item.channel, pb::Channel::SupportTicket as i32);
        assert_eq!(item.tags, vec!["a", "b"]);
        assert_eq!(
            item.attributes.get("region").map(String::as_str),
            Some("emea")
        );
        assert!(item.created_at.is_some());
    }

    #[test]
    fn unreadable_values_name_their_field() {
        let none = BTreeMap::new();
        assert!(
            row_to_item(&row(r#"{"text":"x","nps":"high"}"#), &none, ";")
                .unwrap_err()
                .starts_with("nps")
        );
        assert!(
            row_to_item(&row(r#"{"text":"x","channel":"fax"}"#), &none, ";")
                .unwrap_err()
                .starts_with("channel")
        );
    }

    /// Defect 6: rows without an id were sent with an empty id, so the
    /// server gave them a fresh ULID each time and a resumed or repeated
    /// import stored them again.
    #[test]
    fn rows_without_an_id_get_ids_from_the_file_and_the_row() {
        let (batches, _) = produce_file(
            b"{\"text\":\"a\"}\n{\"id\":\"given\",\"text\":\"b\"}\n",
            FileFormat::Jsonl,
        );
        let ids: Vec<&str> = batches[0]
            .request
            .items
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, [derived_id("test", 1).as_str(), "given"]);

        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one.csv"), dir.path().join("two.csv"));
        std::fs::write(&one, "text\nsame\n").unwrap();
        std::fs::write(&two, "text\nsame\n").unwrap();
        let identity = |file: &Path| file_identity(file, std::fs::metadata(file).unwrap().len());
        let first = identity(&one).unwrap();
        assert_eq!(identity(&one).unwrap(), first, "stable");
        assert_ne!(identity(&two).unwrap(), first, "another path");
        std::fs::write(&one, "text\nsamf\n").unwrap();
        assert_ne!(identity(&one).unwrap(), first, "other content");
        let id = derived_id(&first, u64::MAX);
        crate::domain::FeedbackId::parse(&id).expect("a valid id");
    }

    /// Defect 7: the state file was truncated, then written, in place: a
    /// kill -9 in between left it empty and --resume failed. A reader that
    /// had the old file open now keeps the whole old content.
    #[test]
    fn the_state_file_is_replaced_never_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut state_file = StateFile::new(&dir.path().join("in.csv"));
        let state = |rows_done| ImportState {
            file_bytes: 100,
            rows_done,
            ..Default::default()
        };
        state_file.save(&state(10));
        let mut before = File::open(&state_file.path).unwrap();
        state_file.save(&state(20));
        let mut old = String::new();
        before.read_to_string(&mut old).unwrap();
        assert!(old.contains("\"rows_done\":10"), "{old}");
        assert_eq!(state_file.load().unwrap().unwrap().rows_done, 20);
        assert!(!temporary_path(&state_file.path).exists());
        assert!(!state_file.save_failed);
    }

    /// Defect 7: an empty or damaged state file made --resume fail; now the
    /// import starts from the first row (ids make that idempotent).
    #[test]
    fn a_damaged_state_file_means_starting_from_the_first_row() {
        let dir = tempfile::tempdir().unwrap();
        let state_file = StateFile::new(&dir.path().join("in.csv"));
        assert!(state_file.load().unwrap().is_none(), "missing");
        for damaged in ["", "{\"file_bytes\":100,\"rows_do"] {
            std::fs::write(&state_file.path, damaged).unwrap();
            assert!(state_file.load().unwrap().is_none(), "{damaged:?}");
        }
    }

    /// Defect 9: a batch was cut by count only: 600 texts of 32,000 bytes
    /// made one 19 MB message, over the 16 MiB limit, and the stream failed.
    #[test]
    fn batches_are_split_by_encoded_size() {
        let text = "x".repeat(32_000);
        let line = format!("{{\"text\":\"{text}\"}}\n");
        let (batches, rejected) = produce_file(line.repeat(600).as_bytes(), FileFormat::Jsonl);
        assert!(rejected.is_empty());
        assert_eq!(item_rows(&batches), (1..=600).collect::<Vec<_>>());
        assert!(batches.len() > 1);
        for batch in &batches {
            assert!(batch.request.encoded_len() <= MAX_MESSAGE_BYTES);
        }
    }

    /// Defect 9: one oversized row was sent and failed the whole stream; now
    /// the client rejects it, with its row number, and reads on.
    #[test]
    fn oversized_rows_are_rejected_by_the_client() {
        let long_text = "x".repeat(MAX_TEXT_BYTES + 1);
        let huge_attribute = "y".repeat(MAX_MESSAGE_BYTES);
        let contents = format!(
            "{{\"text\":\"ok\"}}\n{{\"text\":\"{long_text}\"}}\n{{\"text\":\"ok\",\"attributes\":{{\"k\":\"{huge_attribute}\"}}}}\n{{\"text\":\"ok\"}}\n"
        );
        let (batches, rejected) = produce_file(contents.as_bytes(), FileFormat::Jsonl);
        assert_eq!(item_rows(&batches), [1, 4]);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].0.row, 2);
        assert_eq!(
            rejected[0].1,
            "text: must be at most 32768 bytes, got 32769"
        );
        assert_eq!(rejected[1].0.row, 3);
        assert!(
            rejected[1].1.contains("more than one message may hold"),
            "{}",
            rejected[1].1
        );
    }

    /// Defect 10: a mapped column missing from the header went unnoticed and
    /// every row was rejected.
    #[test]
    fn mapped_columns_must_be_in_the_csv_header() {
        let columns = ["Comment ID".to_string(), "Comment".to_string()];
        let mappings = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(f, c)| (f.to_string(), c.to_string()))
                .collect()
        };
        let error = check_columns(
            &columns,
            &mappings(&[("text", "Coment"), ("id", "Comment ID")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "the CSV header has no column \"Coment\" (--map text=Coment); its columns: \"Comment ID\", \"Comment\""
        );
        let error = check_columns(&columns, &mappings(&[("id", "Comment ID")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no \"text\" column"), "{error}");
        check_columns(&columns, &mappings(&[("text", "Comment")])).unwrap();
    }

    /// Defect 11: JSONL was read as UTF-8 text: one bad byte ended the import
    /// without a line number, and a BOM made the first row invalid JSON.
    #[test]
    fn jsonl_is_read_as_bytes_line_by_line() {
        let contents = b"\xEF\xBB\xBF{\"text\":\"first\"}\n{\"text\":\"bad \xFF\"}\n\n{\"text\":\"fourth\"}\r\n";
        let (batches, rejected) = produce_file(contents, FileFormat::Jsonl);
        assert_eq!(item_rows(&batches), [1, 4]);
        assert_eq!(batches[0].request.items[0].text, "first");
        assert_eq!(
            rejected,
            [(
                RowAt { row: 2, line: 2 },
                "not valid UTF-8 (byte 14 of the line)".to_string()
            )]
        );
    }

    /// Defect 11 (CSV side): the csv crate skips a BOM; keep it that way.
    #[test]
    fn csv_skips_a_leading_bom() {
        let (batches, rejected) =
            produce_file(b"\xEF\xBB\xBFid,text\nr-1,hello\n", FileFormat::Csv);
        assert!(rejected.is_empty());
        assert_eq!(batches[0].request.items[0].id, "r-1");
    }

    /// A cp1252 CSV file with CRLF line endings and a quoted cell over two
    /// lines: decoded as it streams, every row knows the line it starts on,
    /// and a bad row is reported with it while the rest goes in.
    #[test]
    fn a_cp1252_csv_with_crlf_is_decoded_and_rows_know_their_lines() {
        let contents = b"id,text,nps\r\nr-1,caf\xE9 \x96 tr\xE8s bien,9\r\nr-2,\"two\r\nlines\",8\r\nr-3,bad,high\r\n\r\nr-4,na\xEFve \x93quote\x94,7\r\n";
        let (batches, rejected) = produce_file(contents, FileFormat::Csv);
        let items = &batches[0].request.items;
        let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts, ["café – très bien", "two\r\nlines", "naïve “quote”"]);
        let rows: Vec<(u64, u64)> = batches[0].rows.iter().map(|at| (at.row, at.line)).collect();
        assert_eq!(rows, [(1, 2), (2, 3), (4, 7)], "a blank line before row 4");
        assert_eq!(
            rejected,
            [(
                RowAt { row: 3, line: 5 },
                "nps: expected a whole number, got \"high\"".to_string()
            )]
        );
        assert_eq!(rejected[0].0.label(FileFormat::Csv), "row 3 (line 5)");

        let (batches, _) =
            produce_file(b"id,text\nr-1,a\n\nr-2,\"x\ny\"\nr-3,b\n", FileFormat::Csv);
        let lines: Vec<u64> = batches[0].rows.iter().map(|at| at.line).collect();
        assert_eq!(lines, [2, 4, 6], "LF line endings");
    }

    /// JSON Lines with CRLF line endings, in cp1252.
    #[test]
    fn a_cp1252_jsonl_file_with_crlf_is_decoded() {
        let contents =
            b"{\"text\":\"caf\xE9 \x96 ok\"}\r\n\r\nnot json\r\n{\"text\":\"don\x92t\"}\r\n";
        let (batches, rejected) = produce_file(contents, FileFormat::Jsonl);
        let texts: Vec<&str> = batches[0]
            .request
            .items
            .iter()
            .map(|i| i.text.as_str())
            .collect();
        assert_eq!(texts, ["café – ok", "don’t"]);
        assert_eq!(item_rows(&batches), [1, 4]);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0.label(FileFormat::Jsonl), "line 3");
    }

    /// Line numbers stay right across the reader's chunks.
    #[test]
    fn csv_lines_are_counted_across_read_chunks() {
        let mut contents = String::from("id,text\r\n");
        for i in 1..=3000 {
            contents.push_str(&format!("r-{i},\"cell {i}\r\nover two lines\"\r\n"));
        }
        let (batches, rejected) = produce_file(contents.as_bytes(), FileFormat::Csv);
        assert!(rejected.is_empty());
        let rows: Vec<RowAt> = batches.iter().flat_map(|b| b.rows.clone()).collect();
        assert_eq!(rows.len(), 3000);
        for at in rows {
            assert_eq!(at.line, 2 * at.row, "{at:?}");
        }
    }
}
