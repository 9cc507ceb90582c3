//! `verbatim import FILE`: streams a CSV or JSONL file into a running server
//! through IngestStream, with a progress bar, a summary of accepted and
//! rejected rows, and `--resume` after an interruption.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
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
use crate::domain::limits::{MAX_ATTRIBUTE_KEY_BYTES, MAX_MESSAGE_BYTES};
use crate::domain::FIELD_NAMES;
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

    /// What the file's fields are called.
    fn field_label(self) -> &'static str {
        match self {
            FileFormat::Csv => "columns",
            FileFormat::Jsonl => "fields",
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
    #[arg(long, default_value = ";", value_parser = parse_tag_separator)]
    pub tag_separator: String,
    /// Skip the rows an earlier, interrupted run of the same file had acknowledged.
    #[arg(long)]
    pub resume: bool,
    /// When the server ends the stream as busy or unavailable
    /// (RESOURCE_EXHAUSTED, UNAVAILABLE: its request budget is full, it is
    /// restarting), reopen it after a pause that doubles from 1 s up to 30 s
    /// and go on after the last acknowledged row, up to this many times in a
    /// row (the count starts again once a message is acknowledged); a
    /// refusal for room also halves the items per message for the rest of
    /// the run. 0: stop at once and say where --resume goes on.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
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
    match field.strip_prefix("attributes.") {
        // The server rejects any other key: every row would be rejected.
        Some(key) if !crate::domain::is_attribute_key(key) => {
            return Err(format!(
                "attribute key {key:?} in {field:?}: keys are 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes of [a-z0-9_]"
            ))
        }
        Some(_) => {}
        None if FIELD_NAMES.contains(&field) => {}
        None => {
            return Err(format!(
                "unknown field {field:?}; fields: {} attributes.KEY",
                FIELD_NAMES.join(" ")
            ))
        }
    }
    Ok((field.to_string(), column.to_string()))
}

/// `--tag-separator`: splitting on nothing would make each character a tag.
fn parse_tag_separator(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(raw.to_string())
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
        match serde_json::from_slice::<ImportState>(&bytes) {
            // Impossible counts (a row takes a byte at least; the accepted
            // and rejected rows are rows done): damaged as well. They made
            // --resume skip the whole file and report counts it never had.
            Ok(saved)
                if saved.rows_done > saved.file_bytes
                    || saved.accepted.saturating_add(saved.rejected) > saved.rows_done =>
            {
                eprintln!(
                    "warning: ignoring the damaged {path} ({} rows done, {} accepted, {} rejected \
                     in a file of {} bytes): importing from the first row",
                    saved.rows_done, saved.accepted, saved.rejected, saved.file_bytes
                );
                Ok(None)
            }
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

/// The file's size in bytes. A pipe, FIFO or device is refused (exit 2):
/// an import reads its file more than once (the encoding's scan, every pass
/// after a failure), and a pipe read a second time is empty (found by
/// review: `zcat x.gz | verbatim import /dev/stdin` imported 0 rows and
/// succeeded).
fn file_size(file: &Path) -> anyhow::Result<u64> {
    let metadata =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if !metadata.is_file() {
        return Err(anyhow::anyhow!(
            "{} is not a regular file (a pipe or a device?): an import reads its file \
             more than once (to detect its encoding, to resume after a failure); save it \
             to a file first, e.g. `zcat export.jsonl.gz > export.jsonl`",
            file.display()
        )
        .context(crate::cli::Usage));
    }
    Ok(metadata.len())
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let file_bytes = file_size(&args.file)?;
    let format = args.format.unwrap_or_else(|| FileFormat::of(&args.file));
    let mappings: BTreeMap<String, String> = args.mappings.iter().cloned().collect();
    let encoding = encoding::choose(&args.file, args.encoding)?;
    let mut input = Some(open_input(&args.file, format, encoding, &mappings)?);
    let mut state_file = StateFile::new(&args.file);
    let state = start_state(&args, format, &state_file, file_bytes)?;
    let identity = file_identity(&args.file, file_bytes)?;
    let mut client = crate::cli::connect(&args.server).await?;
    let progress = indicatif::ProgressBar::new(file_bytes);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}",
        )
        .expect("valid template"),
    );
    let mut tally = Tally {
        state,
        ..Tally::default()
    };
    // Passes over the file until one ends the import; the progress bar is
    // cleared however they end.
    let passes = async {
        // Fields of the file no item takes, over every pass.
        let mut ignored = BTreeSet::new();
        // Failed streams since the last acknowledged message.
        let mut failures = 0;
        // Items per message: halved after each refusal for room.
        let mut batch_size = args.batch_size as usize;
        loop {
            // A pass over the file, after the last acknowledged row.
            let input = match input.take() {
                Some(input) => input,
                None => {
                    // Row numbers and derived ids hold for the file as it was.
                    let now = file_size(&args.file)?;
                    anyhow::ensure!(
                        now == file_bytes,
                        "{} changed during the import ({file_bytes} bytes at the start, {now} now); {} rows were acknowledged",
                        args.file.display(),
                        tally.state.rows_done
                    );
                    open_input(&args.file, format, encoding, &mappings)?
                }
            };
            let (produced_tx, produced_rx) = mpsc::channel::<Produced>(4);
            let sink = RowSink {
                skip_rows: tally.state.rows_done,
                file_identity: identity.clone(),
                mappings: mappings.clone(),
                tag_separator: args.tag_separator.clone(),
                batcher: Batcher::new(produced_tx, batch_size),
                ignored: BTreeSet::new(),
            };
            let reader = {
                let file = args.file.clone();
                std::thread::spawn(move || produce(&file, input, sink))
            };
            let rows_done = tally.state.rows_done;
            let streamed = stream(
                &mut client,
                produced_rx,
                &mut tally,
                &mut state_file,
                &progress,
            )
            .await;
            // The reader stops at the end of the file or once nobody listens.
            let read = reader
                .join()
                .map_err(|_| anyhow::anyhow!("the file reader panicked"))?;
            let read = read.map(|fields| ignored.extend(fields));
            let status = match streamed {
                Ok(()) => return read.map(|()| std::mem::take(&mut ignored)),
                Err(Stopped::Other(error)) => return Err(error),
                Err(Stopped::Status(status)) => status,
            };
            if tally.state.rows_done > rows_done {
                failures = 0;
            }
            if !retryable(&status) || failures >= args.retries {
                return Err(stream_failed(status, &tally.state, failures));
            }
            failures += 1;
            let pause = retry_pause(failures);
            let smaller = match halved_batch(&status, batch_size) {
                Some(half) => {
                    batch_size = half;
                    format!(", {half} items per message from now on (the server is short of room)")
                }
                None => String::new(),
            };
            progress.suspend(|| {
                eprintln!(
                    "import stream failed ({:?}: {}) with {} rows acknowledged; retrying in {:.1} s ({failures} of {}){smaller}",
                    status.code(),
                    status.message(),
                    tally.state.rows_done,
                    pause.as_secs_f64(),
                    args.retries
                )
            });
            tokio::time::sleep(pause).await;
            tally.rewind();
        }
    };
    let passed: anyhow::Result<BTreeSet<String>> = passes.await;
    progress.finish_and_clear();
    let ignored = passed?;
    tally.finish()?;
    state_file.remove();
    let printed =
        print_summary(&args, format, &mut tally).and_then(|()| print_ignored(&ignored, format));
    if let Err(error) = printed {
        // The import is done: with the output's reader gone (`| head -1`),
        // the exit status still tells of the rejected rows.
        if !error.is::<crate::cli::OutputClosed>() {
            return Err(error);
        }
    }
    match tally.state.rejected {
        0 => Ok(()),
        _ if args.allow_rejections => Ok(()),
        rejected => Err(RowsRejected(rejected).into()),
    }
}

/// The fields or columns no item took, after the summary.
fn print_ignored(ignored: &BTreeSet<String>, format: FileFormat) -> anyhow::Result<()> {
    if ignored.is_empty() {
        return Ok(());
    }
    // A misspelt field ("nsp") would vanish without a word.
    // Quoted and escaped: a name may hold control characters.
    let names: Vec<String> = ignored
        .iter()
        .take(MAX_IGNORED_FIELDS)
        .map(|name| got_text(name))
        .collect();
    outln!(
        "not imported ({}, not a Feedback field; --map FIELD={} takes one for a field): {}{}",
        format.field_label(),
        match format {
            FileFormat::Csv => "COLUMN",
            FileFormat::Jsonl => "NAME",
        },
        names.join(", "),
        if ignored.len() > MAX_IGNORED_FIELDS {
            ", ..."
        } else {
            ""
        }
    )?;
    Ok(())
}

/// Statuses that say "later": the server is busy or not there right now,
/// or the connection under the stream broke (a server killed mid-stream
/// leaves an UNKNOWN status that the client's transport made, with the
/// transport's error as its source; a status the server sent has none).
pub(crate) fn retryable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::ResourceExhausted | tonic::Code::Unavailable => true,
        tonic::Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// After a stream the server refused for room (RESOURCE_EXHAUSTED: its
/// request bytes in flight; a stream waits for the write queue), the next one sends half as
/// many items per message (at least one), so that it holds less of the
/// server's budget; None for other statuses or at one item.
fn halved_batch(status: &tonic::Status, batch_size: usize) -> Option<usize> {
    (status.code() == tonic::Code::ResourceExhausted && batch_size > 1).then_some(batch_size / 2)
}

/// The pause before the `failures`th retry in a row: 1 s doubling up to
/// 30 s, each taken at random from its upper half so that importers refused
/// together do not come back together.
pub(crate) fn retry_pause(failures: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let ceiling = 1000u64 << failures.clamp(1, 6).saturating_sub(1);
    let ceiling = ceiling.min(30_000);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::time::Duration::from_millis(ceiling / 2 + random % (ceiling / 2 + 1))
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

/// How a pass over the file stopped short.
enum Stopped {
    /// The server refused or ended the stream.
    Status(tonic::Status),
    Other(anyhow::Error),
}

/// Sends the reader's batches through IngestStream and counts the acks
/// until the server ends the stream.
async fn stream(
    client: &mut crate::cli::Client,
    produced: mpsc::Receiver<Produced>,
    tally: &mut Tally,
    state_file: &mut StateFile,
    progress: &indicatif::ProgressBar,
) -> Result<(), Stopped> {
    let (requests_tx, requests_rx) = mpsc::channel::<pb::IngestRequest>(2);
    let mut acks = client
        .ingest_stream(ReceiverStream::new(requests_rx))
        .await
        .map_err(Stopped::Status)?
        .into_inner();
    let (events_tx, mut events) = mpsc::unbounded_channel::<Produced>();
    let forwarder = tokio::spawn(forward(produced, events_tx, requests_tx));
    let mut events_open = true;
    let ended = loop {
        tokio::select! {
            // Events first: a batch's event is queued before its request is
            // sent, so it is always read before the batch's ack.
            biased;
            event = events.recv(), if events_open => match event {
                Some(event) => tally.record(event, progress),
                None => events_open = false,
            },
            ack = acks.message() => match ack {
                Ok(Some(ack)) => {
                    if let Err(error) = tally.acknowledge(&ack) {
                        break Err(Stopped::Other(error));
                    }
                    state_file.save(&tally.state);
                    progress.set_message(tally.counts());
                }
                Ok(None) => break Ok(()),
                Err(status) => break Err(Stopped::Status(status)),
            },
        }
    };
    if ended.is_err() {
        // Dropping the forwarder's receiver stops the reader.
        forwarder.abort();
        let _ = forwarder.await;
        return ended;
    }
    forwarder
        .await
        .context("the import sender failed")
        .map_err(Stopped::Other)?;
    while let Some(event) = events.recv().await {
        tally.record(event, progress);
    }
    Ok(())
}

/// The server's status, with where the import stands: the rows
/// acknowledged so far are stored, and `--resume` goes on after them.
fn stream_failed(status: tonic::Status, state: &ImportState, retries: u32) -> anyhow::Error {
    let mut advice = match state.rows_done {
        // Nothing to resume: --resume would only say so.
        0 => "No row was acknowledged; run the same command again".to_string(),
        done => format!(
            "{done} rows were acknowledged before it stopped ({} accepted, {} rejected); run the same command with --resume to go on after row {done}",
            state.accepted, state.rejected
        ),
    };
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => advice.push_str(
            " with an API key that may ingest into this tenant (--token or VERBATIM_TOKEN)",
        ),
        tonic::Code::ResourceExhausted => {
            advice.push_str(" once the server has room (a smaller --batch-size holds less of it)")
        }
        _ if retryable(&status) => advice.push_str(" once the server is back"),
        _ => {}
    }
    let retried = match retries {
        0 => String::new(),
        n => format!(" after {n} retries"),
    };
    anyhow::anyhow!(
        "import stream failed{retried} ({:?}: {}). {advice}",
        status.code(),
        status.message()
    )
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
                // The server echoes the file's own field names (an
                // attribute key): no escape sequence reaches the terminal
                // (found by review: a key holding ESC ] 8 printed a link).
                let reason = format!("{}: {}", r.field, r.reason);
                self.rejections
                    .push((at, crate::report::render::terminal_safe(&reason)));
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

    /// Before a new stream reads the file again after `state.rows_done`:
    /// what was read past it and not acknowledged is forgotten (it comes again).
    fn rewind(&mut self) {
        let done = self.state.rows_done;
        self.pending.clear();
        self.client_rejected.clear();
        self.rejections.retain(|(at, _)| at.row <= done);
        self.last_row = 0;
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

fn print_summary(args: &ImportArgs, format: FileFormat, tally: &mut Tally) -> anyhow::Result<()> {
    let state = &tally.state;
    outln!(
        "imported {}: {} rows, {} accepted, {} rejected",
        args.file.display(),
        state.accepted + state.rejected,
        state.accepted,
        state.rejected
    )?;
    let rejections = &mut tally.rejections;
    rejections.sort_by_key(|(at, _)| at.row);
    let shown = if args.all_rejections {
        rejections.len()
    } else {
        20
    };
    for (at, reason) in rejections.iter().take(shown) {
        outln!("  {}: {reason}", at.label(format))?;
    }
    if rejections.len() > shown {
        outln!(
            "  ... and {} more (--all-rejections lists them)",
            rejections.len() - shown
        )?;
    }
    Ok(())
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
/// bytes from the current record on: what the reader has read ahead. A line
/// ends as a record does for the csv crate: at LF, CRLF or a CR alone (old
/// Mac exports; counting LF only numbered every row of such a file line 1).
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
    /// The last byte passed was a CR (an LF next ends no other line).
    after_cr: bool,
    /// Bytes in `chunks` from `cursor` on (read, not yet passed).
    held: usize,
}

/// The line breaks among `bytes` (LF, CRLF and a CR alone each end one);
/// `after_cr`: the byte before them was a CR, updated to the last of them.
fn line_breaks(bytes: impl Iterator<Item = u8>, after_cr: &mut bool) -> u64 {
    let mut breaks = 0;
    for byte in bytes {
        breaks += u64::from(byte == b'\r' || (byte == b'\n' && !*after_cr));
        *after_cr = byte == b'\r';
    }
    breaks
}

impl LinesRead {
    /// The bytes read and not yet passed, from the first one on.
    fn ahead(&self) -> impl Iterator<Item = &u8> {
        let cursor = self.cursor;
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(i, chunk)| &chunk[if i == 0 { cursor } else { 0 }..])
    }

    /// The line (from 1) of the first byte not yet passed that is not a
    /// line break.
    fn line_here(&self) -> u64 {
        let mut after_cr = self.after_cr;
        let leading = line_breaks(
            self.ahead()
                .copied()
                .take_while(|&b| b == b'\r' || b == b'\n'),
            &mut after_cr,
        );
        1 + self.breaks + leading
    }
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
            read.breaks += line_breaks(counted.iter().copied(), &mut read.after_cr);
            read.passed += take as u64;
            read.cursor += take;
            read.held -= take;
            if read.cursor == chunk.len() {
                read.chunks.pop_front();
                read.cursor = 0;
            }
        }
        read.line_here()
    }
}

impl Lines {
    /// Whether the bytes from `from` (where `line_at` was last asked) to
    /// `to` hold an odd number of `"` and a line break (LF or CR) between
    /// the row's first character and its own line break (its last byte, or
    /// CRLF): the signs of a quoted field still open where the file ended.
    /// The line breaks before its first character (the LF of the CRLF
    /// before it, where the csv crate ends a record at the CR; blank lines)
    /// are not the row's.
    fn open_quote(&self, from: u64, to: u64) -> bool {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let len = to.saturating_sub(from) as usize;
        let is_break = |b: u8| b == b'\n' || b == b'\r';
        // One pass: the quotes, the line breaks after the first character,
        // and the last two bytes (the row's own line break is among them).
        let (mut quotes, mut breaks, mut started, mut last_two) = (0u64, 0u64, false, [0u8; 2]);
        for &b in guard.ahead().take(len) {
            quotes += u64::from(b == b'"');
            started |= !is_break(b);
            breaks += u64::from(started && is_break(b));
            last_two = [last_two[1], b];
        }
        let own_break = match last_two {
            [b'\r', b'\n'] if len >= 2 => 2,
            [_, b'\r' | b'\n'] => 1,
            _ => 0,
        };
        quotes % 2 == 1 && breaks > own_break
    }
}

/// A reader that hands what it reads to `Lines`.
struct LineCounting<R> {
    inner: R,
    lines: Lines,
}

/// The most bytes a CSV import holds of the rows not yet taken (the row
/// held one read behind and the one being read): as for a JSON line, four
/// times the largest message, so a row too large to send is still read
/// whole and rejected with its field's reason.
const MAX_CSV_HELD_BYTES: usize = MAX_LINE_BYTES;

impl<R: Read> Read for LineCounting<R> {
    /// Found by review: one huge field was held whole (by the csv crate's
    /// record and by `Lines`, twice over): a quote left open early in a
    /// large file held the rest of the file. Past `MAX_CSV_HELD_BYTES` the
    /// read fails, which ends the import with the line the rows start on.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(out)?;
        if read > 0 {
            let mut lines = self.lines.0.lock().unwrap_or_else(|e| e.into_inner());
            lines.chunks.push_back(out[..read].to_vec());
            lines.held += read;
            if lines.held > MAX_CSV_HELD_BYTES {
                let line = lines.line_here();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the rows from line {line} on run past {} MiB without ending, more \
                         than an import reads (a quoted field left open takes every line \
                         after it): close the quote, or split the row; rows from line {line} \
                         on were not imported",
                        MAX_CSV_HELD_BYTES / (1024 * 1024)
                    ),
                ));
            }
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
            // The header passed: it is not a row not yet taken.
            lines.line_at(reader.position().byte());
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
    /// The ids in `batch`: a row with one of them goes to the next batch,
    /// so that it replaces the earlier row (the server refuses a second
    /// item with the same id in one request, so the outcome used to depend
    /// on --batch-size).
    ids: HashSet<String>,
}

impl Batcher {
    fn new(out: mpsc::Sender<Produced>, max_items: usize) -> Batcher {
        Batcher {
            out,
            max_items,
            batch: Batch::default(),
            bytes: 0,
            read: 0,
            ids: HashSet::new(),
        }
    }

    /// Adds an item, sending the batch first when the item would take it
    /// over MAX_MESSAGE_BYTES. False once the importer stopped listening.
    fn push(&mut self, at: RowAt, item: pb::Feedback) -> bool {
        let size = item_bytes(&item);
        if (self.bytes + size > MAX_MESSAGE_BYTES || self.ids.contains(&item.id)) && !self.flush() {
            return false;
        }
        self.bytes += size;
        self.ids.insert(item.id.clone());
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
        self.ids.clear();
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
    /// Fields of the rows that no item field takes (`MAX_IGNORED_FIELDS`
    /// names and one more, to tell there are more), told after the summary.
    ignored: BTreeSet<String>,
}

/// Names of fields no item takes that an import tells, at most.
const MAX_IGNORED_FIELDS: usize = 20;

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

    fn item(&mut self, row: u64, fields: &Row) -> Result<pb::Feedback, String> {
        // One name more than is told, to tell that there are more.
        if self.ignored.len() <= MAX_IGNORED_FIELDS {
            for name in fields.keys() {
                // A field's own name is not read when `--map` names another
                // column for it.
                let taken = ((FIELD_NAMES.contains(&name.as_str()) || name == "attributes")
                    && !self.mappings.contains_key(name))
                    || name.starts_with("attributes.")
                    || self.mappings.values().any(|column| column == name);
                if !taken && self.ignored.len() <= MAX_IGNORED_FIELDS {
                    self.ignored.insert(name.clone());
                }
            }
        }
        let mut item = row_to_item(fields, &self.mappings, &self.tag_separator)?;
        if item.id.is_empty() {
            item.id = derived_id(&self.file_identity, row);
        }
        check_size(&item)?;
        Ok(item)
    }
}

/// Reads the whole input (on a thread of its own: it blocks); the names of
/// the fields no item took (`RowSink::ignored`).
fn produce(file: &Path, input: Input, mut sink: RowSink) -> anyhow::Result<BTreeSet<String>> {
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
    Ok(sink.ignored)
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
        let (len, whole) = read_line_bounded(&mut reader, &mut line, MAX_LINE_BYTES)?;
        if len == 0 {
            return Ok(Some(number));
        }
        number += 1;
        read += len as u64;
        if whole && line.trim_ascii().is_empty() {
            continue;
        }
        let at = RowAt {
            row: number,
            line: number,
        };
        let fields = || match whole {
            true => parse_json_line(&line),
            false => Err(format!(
                "the line is {len} bytes, more than an import reads ({MAX_LINE_BYTES}); \
                 one message holds at most {MAX_MESSAGE_BYTES}"
            )),
        };
        if !sink.emit(at, read, fields) {
            return Ok(None);
        }
    }
}

/// The longest JSONL line read into memory: no row over the 16 MiB
/// message limit can be sent, but up to here its rejection names the field
/// at fault (`text: must be at most 32768 bytes`).
const MAX_LINE_BYTES: usize = 4 * MAX_MESSAGE_BYTES;

/// Reads one line (to its `\n`, kept, or to the end) into `line`, and
/// returns the bytes read and whether `line` holds them all: a line longer
/// than `max` bytes is read through but not kept (found by review: a file
/// without line breaks was held whole in memory before its one row was
/// rejected).
fn read_line_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut read, mut whole) = (0, true);
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((read, whole));
        }
        let (n, ends) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        if whole && line.len() + n > max {
            whole = false;
            *line = Vec::new();
        }
        if whole {
            line.extend_from_slice(&buf[..n]);
        }
        reader.consume(n);
        read += n;
        if ends {
            return Ok((read, whole));
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
    // Each row is taken once the next is read: a row that ends the file
    // inside a quoted field it opened on an earlier line is not read as it
    // stands (found by review: `a,"oops` took every later line into its
    // text, and those rows vanished without a word).
    let mut held: Option<HeldRow> = None;
    loop {
        let start = reader.position().byte();
        let read = match reader.read_record(&mut record) {
            Ok(false) => {
                if let Some(mut last) = held.take() {
                    if last.open_quote {
                        last.fields = Err(format!(
                            "invalid CSV: a quoted field opened here is never closed, so every \
                             line after it was read into this row; close the quote and import \
                             again (line {} on)",
                            last.at.line
                        ));
                    }
                    if !sink.emit(last.at, last.read, || last.fields) {
                        return Ok(None);
                    }
                }
                return Ok(Some(number));
            }
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(e),
            other => other,
        };
        number += 1;
        let at = RowAt {
            row: number,
            line: lines.line_at(start),
        };
        let end = reader.position().byte();
        let fields = read.map_err(|e| format!("invalid CSV: {e}")).and_then(|_| {
            // A row cut short or with a stray delimiter would put values
            // under the wrong columns, or drop them without a word.
            if record.len() != columns.len() {
                return Err(format!(
                    "invalid CSV: the row has {} fields, the header {}",
                    record.len(),
                    columns.len()
                ));
            }
            Ok(columns
                .iter()
                .zip(record.iter())
                .map(|(c, v)| (c.clone(), Value::String(v.to_string())))
                .collect())
        });
        let this = HeldRow {
            at,
            read: end,
            fields,
            open_quote: lines.open_quote(start, end),
        };
        if let Some(before) = held.replace(this) {
            if !sink.emit(before.at, before.read, || before.fields) {
                return Ok(None);
            }
        }
    }
}

/// A CSV row read and not yet taken (`read_csv`).
struct HeldRow {
    at: RowAt,
    /// Bytes of the file read up to its end.
    read: u64,
    fields: Result<Row, String>,
    /// Its bytes hold an odd number of quotes and a line break before their
    /// last byte: a quoted field left open would have taken the lines after
    /// its own (`Lines::open_quote`).
    open_quote: bool,
}

/// A value of the file as a rejection names it: JSON (control characters
/// escaped), cut short (`domain::shown`): a 100 KB cell was printed whole.
fn got(value: &Value) -> String {
    match value {
        Value::String(text) => got_text(text),
        other => crate::domain::shown(&other.to_string()).into_owned(),
    }
}

/// A text of the file as a rejection names it: quoted, escaped, cut short.
fn got_text(text: &str) -> String {
    format!("{:?}", crate::domain::shown(text))
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
            Some(other) => return Err(format!("{field}: expected a string, got {}", got(other))),
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
                .map_err(|_| format!("{field}: expected a whole number, got {}", got_text(s))),
            Some(other) => Err(format!(
                "{field}: expected a whole number, got {}",
                got(other)
            )),
        }
    };
    let channel = match get("channel") {
        None => pb::Channel::Unspecified,
        Some(Value::String(raw)) => crate::cli::parse_channel(raw)
            .map(crate::grpc::channel_to_pb)
            .ok_or_else(|| format!("channel: unknown value {}", got_text(raw)))?,
        Some(other) => return Err(format!("channel: expected a name, got {}", got(other))),
    };
    let journey_stage = match get("journey_stage") {
        None => pb::JourneyStage::Unspecified,
        Some(Value::String(raw)) => crate::cli::parse_stage(raw)
            .map(crate::grpc::stage_to_pb)
            .ok_or_else(|| format!("journey_stage: unknown value {}", got_text(raw)))?,
        Some(other) => {
            return Err(format!(
                "journey_stage: expected a name, got {}",
                got(other)
            ))
        }
    };
    let created_at = match get("created_at") {
        None => None,
        // Whole seconds only: 1.7e9 or 1700000000.5 used to become 1970.
        Some(Value::Number(n)) => Some(prost_types::Timestamp {
            seconds: n.as_i64().ok_or_else(|| {
                format!("created_at: expected whole seconds since 1970-01-01, got {n}")
            })?,
            nanos: 0,
        }),
        Some(Value::String(s)) => {
            Some(crate::cli::parse_time(s).map_err(|e| format!("created_at: {e}"))?)
        }
        Some(other) => return Err(format!("created_at: unexpected value {}", got(other))),
    };
    let tags = match get("tags") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("tags: expected strings, got {}", got(t)))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => s
            .split(tag_separator)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Some(other) => {
            return Err(format!(
                "tags: expected a list or a string, got {}",
                got(other)
            ))
        }
    };
    // An attribute value as text: strings as they are, other values as JSON.
    let attribute_value = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut attributes = std::collections::HashMap::new();
    match get("attributes") {
        None => {}
        Some(Value::Object(map)) => {
            // A null is no value, as in an `attributes.KEY` column (it was
            // stored as the text "null").
            for (k, v) in map.iter().filter(|(_, v)| !v.is_null()) {
                attributes.insert(k.clone(), attribute_value(v));
            }
        }
        // It used to be dropped without a word.
        Some(other) => {
            return Err(format!(
            "attributes: expected an object {{\"KEY\": value}} (or attributes.KEY columns), got {}",
            got(other)
        ))
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
    // Values as in `attributes` (a number used to be dropped without a word).
    for (key, column) in attribute_columns {
        match row.get(&column) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if v.is_empty() => {}
            Some(v) => {
                attributes.insert(key, attribute_value(v));
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

    #[test]
    fn retry_pauses_double_up_to_thirty_seconds_from_their_upper_half() {
        let ceilings = [1, 2, 4, 8, 16, 30, 30, 30, 30];
        for (failures, ceiling) in (1..).zip(ceilings) {
            let ceiling = std::time::Duration::from_secs(ceiling);
            for _ in 0..50 {
                let pause = retry_pause(failures);
                assert!(
                    pause >= ceiling / 2 && pause <= ceiling,
                    "{failures}: {pause:?}"
                );
            }
        }
        let pauses: std::collections::HashSet<_> = (0..50).map(|_| retry_pause(3)).collect();
        assert!(pauses.len() > 1, "no jitter: {pauses:?}");
    }

    #[test]
    fn only_transport_failures_and_busy_statuses_are_retried() {
        assert_eq!(
            halved_batch(&tonic::Status::resource_exhausted("full"), 500),
            Some(250)
        );
        assert_eq!(
            halved_batch(&tonic::Status::resource_exhausted("full"), 3),
            Some(1)
        );
        assert_eq!(
            halved_batch(&tonic::Status::resource_exhausted("full"), 1),
            None
        );
        assert_eq!(
            halved_batch(&tonic::Status::unavailable("restarting"), 500),
            None
        );
        assert!(retryable(&tonic::Status::resource_exhausted("full")));
        assert!(retryable(&tonic::Status::unavailable("restarting")));
        // An UNKNOWN the server sent has no source: not retried.
        assert!(!retryable(&tonic::Status::unknown("a server's bug")));
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert!(retryable(&broken));
        assert!(!retryable(&tonic::Status::invalid_argument("bad")));
        assert!(!retryable(&tonic::Status::unauthenticated("no key")));
    }

    /// After a failed stream the file is read again past the last
    /// acknowledged row: what was counted past it must not count twice.
    #[test]
    fn a_rewind_forgets_what_was_not_acknowledged() {
        let at = |row| RowAt { row, line: row };
        let progress = indicatif::ProgressBar::hidden();
        // One pass of the reader: batches of (rows, last row), unreadable
        // rows, and the file's last row.
        let read = |tally: &mut Tally, batches: &[(&[u64], u64)], unreadable: &[u64]| {
            for &(rows, last_row) in batches {
                let batch = Batch {
                    rows: rows.iter().map(|&r| at(r)).collect(),
                    last_row,
                    ..Batch::default()
                };
                tally.record(Produced::Batch(batch), &progress);
            }
            for &row in unreadable {
                let reason = "not JSON".to_string();
                tally.record(
                    Produced::Unreadable {
                        at: at(row),
                        reason,
                    },
                    &progress,
                );
            }
            tally.record(Produced::Done { last_row: 7 }, &progress);
        };
        let two_accepted = pb::IngestAck {
            accepted: 2,
            ..Default::default()
        };
        let mut tally = Tally::default();
        read(&mut tally, &[(&[1, 2], 3), (&[4, 5], 6)], &[3, 6, 7]);
        tally.acknowledge(&two_accepted).unwrap();
        assert_eq!((tally.state.rows_done, tally.state.rejected), (3, 1));
        tally.rewind();
        assert!(tally.pending.is_empty() && tally.client_rejected.is_empty());
        let kept: Vec<u64> = tally.rejections.iter().map(|(at, _)| at.row).collect();
        assert_eq!(kept, [3]);
        assert_eq!(tally.last_row, 0);
        // The second pass reads rows 4-7 again and finishes.
        read(&mut tally, &[(&[4, 5], 6)], &[6, 7]);
        tally.acknowledge(&two_accepted).unwrap();
        tally.finish().unwrap();
        assert_eq!(
            (
                tally.state.rows_done,
                tally.state.accepted,
                tally.state.rejected
            ),
            (7, 4, 3)
        );
        assert_eq!(tally.rejections.len(), 3);
    }

    /// What the reader makes of `contents`: the batches, and the rows the
    /// client rejected. Rows without an id get ids from the identity "test".
    fn produce_file(contents: &[u8], format: FileFormat) -> (Vec<Batch>, Vec<(RowAt, String)>) {
        let (batches, rejected, produced) = try_produce_file(contents, format);
        produced.unwrap();
        (batches, rejected)
    }

    /// What `try_produce_file` read: batches, rejected rows, how it ended.
    type ReadOutcome = (
        Vec<Batch>,
        Vec<(RowAt, String)>,
        anyhow::Result<BTreeSet<String>>,
    );

    /// `produce_file`, with how the read ended.
    fn try_produce_file(contents: &[u8], format: FileFormat) -> ReadOutcome {
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
            ignored: BTreeSet::new(),
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
        let produced = reader.join().unwrap();
        (batches, rejected, produced)
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

    /// Found by the fuzz targets: a `--map` to an attribute key the server
    /// refuses got every row rejected; an empty `--tag-separator` made each
    /// character a tag.
    #[test]
    fn flags_that_would_spoil_every_row_are_refused() {
        let error = parse_mapping("attributes.Region=Region").unwrap_err();
        assert!(error.contains("[a-z0-9_]"), "{error}");
        assert!(parse_mapping("attributes.=x").is_err());
        assert_eq!(
            parse_mapping("attributes.region=Region").unwrap(),
            ("attributes.region".to_string(), "Region".to_string())
        );
        assert!(parse_tag_separator("").is_err());
        assert_eq!(parse_tag_separator(" | ").unwrap(), " | ");
    }

    /// Found by the fuzz target: values dropped or changed without a word:
    /// `attributes` that is not an object, `attributes.KEY` that is not a
    /// string, `created_at` in fractional or huge seconds (read as 1970).
    #[test]
    fn values_are_kept_or_the_row_is_rejected() {
        let none = BTreeMap::new();
        for (json, field) in [
            (r#"{"text":"x","attributes":"region=emea"}"#, "attributes"),
            (r#"{"text":"x","attributes":false}"#, "attributes"),
            (r#"{"text":"x","created_at":1700000000.5}"#, "created_at"),
            (r#"{"text":"x","created_at":1e30}"#, "created_at"),
            (
                r#"{"text":"x","created_at":18446744073709551615}"#,
                "created_at",
            ),
            (r#"{"text":"x","channel":3}"#, "channel"),
        ] {
            let error = row_to_item(&row(json), &none, ";").unwrap_err();
            assert!(error.starts_with(&format!("{field}: ")), "{json}: {error}");
        }
        let item = row_to_item(
            &row(r#"{"text":"x","attributes.floor":3,"attributes.vip":true,"created_at":1700000000}"#),
            &none,
            ";",
        )
        .unwrap();
        assert_eq!(item.attributes["floor"], "3");
        assert_eq!(item.attributes["vip"], "true");
        assert_eq!(item.created_at.unwrap().seconds, 1_700_000_000);
    }

    /// Found by probing: a CSV row with a field too few or too many was
    /// read with its values under the wrong columns or dropped; a null
    /// attribute was stored as "null"; a repeated id was refused by the
    /// server within one message and replaced across two, so the outcome
    /// depended on --batch-size. Now the later row always replaces.
    #[test]
    fn ragged_rows_are_rejected_and_a_repeated_id_goes_to_the_next_batch() {
        let (batches, rejected) = produce_file(
            b"id,text
a,one
b,two,extra
c
d,four
",
            FileFormat::Csv,
        );
        assert_eq!(item_rows(&batches), [1, 4]);
        let reasons: Vec<(u64, &str)> = rejected
            .iter()
            .map(|(at, r)| (at.row, r.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (2, "invalid CSV: the row has 3 fields, the header 2"),
                (3, "invalid CSV: the row has 1 fields, the header 2")
            ]
        );

        let item = row_to_item(
            &row(r#"{"text":"x","attributes":{"plan":null,"tier":"gold"}}"#),
            &BTreeMap::new(),
            ";",
        )
        .unwrap();
        assert_eq!(item.attributes.len(), 1, "{:?}", item.attributes);

        let (batches, _) = produce_file(
            b"{\"id\":\"a\",\"text\":\"1\"}\n{\"id\":\"b\",\"text\":\"2\"}\n{\"id\":\"a\",\"text\":\"3\"}\n{\"id\":\"c\",\"text\":\"4\"}\n",
            FileFormat::Jsonl,
        );
        let sent: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.request.items.iter().map(|i| i.text.as_str()).collect())
            .collect();
        assert_eq!(sent, [vec!["1", "2"], vec!["3", "4"]]);
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
        for damaged in [
            "",
            "{\"file_bytes\":100,\"rows_do",
            "{\"file_bytes\":100,\"rows_done\":999999999,\"accepted\":5,\"rejected\":7}",
            "{\"file_bytes\":100,\"rows_done\":10,\"accepted\":18446744073709551615,\"rejected\":1}",
        ] {
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

    /// A line over the bound is read through, not kept; the lines around it
    /// are read as they are.
    #[test]
    fn lines_over_the_bound_are_skipped_not_held() {
        let text = format!("short\n{}\nafter\nend", "x".repeat(100));
        let mut reader = std::io::BufReader::with_capacity(8, text.as_bytes());
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            let (read, whole) = read_line_bounded(&mut reader, &mut line, 16).unwrap();
            if read == 0 {
                break;
            }
            assert!(line.capacity() <= 32, "{}", line.capacity());
            lines.push((read, whole, String::from_utf8(line).unwrap()));
        }
        assert_eq!(
            lines,
            [
                (6, true, "short\n".to_string()),
                (101, false, String::new()),
                (6, true, "after\n".to_string()),
                (3, true, "end".to_string()),
            ]
        );
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

    /// A quoted field left open at the end of the file would take every
    /// later line into its row: that row is rejected, saying so, and the
    /// rows before it are imported. Closed quotes over several lines, an
    /// escaped quote and a stray quote in an unquoted last cell are rows as
    /// before.
    #[test]
    fn a_quote_left_open_rejects_its_row_instead_of_swallowing_the_rest() {
        let (batches, rejected) = produce_file(
            b"id,text\nr-1,fine\nr-2,\"oops\nr-3,lost\nr-4,also lost\n",
            FileFormat::Csv,
        );
        assert_eq!(item_rows(&batches), [1]);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].0, RowAt { row: 2, line: 3 });
        assert!(rejected[0].1.contains("never closed"), "{}", rejected[0].1);
        for contents in [
            &b"id,text\nr-1,\"two\nlines\"\nr-2,5\" screen\n"[..],
            b"id,text\nr-1,\"say \"\"hi\"\"\nthere\"\nr-2,\"last\nrow\"",
            b"id,text\nr-1,a\nr-2,5\" screen",
            // The LF of a CRLF, and blank lines, before the last row are
            // not line breaks inside it.
            b"id,text\r\nr-1,a\r\nr-2,5\" screen",
            b"id,text\r\nr-1,a\r\nr-2,5\" screen\r\n",
            b"id,text\nr-1,a\n\nr-2,5\" screen\n",
            b"id,text\rr-1,a\r\rr-2,5\" screen",
        ] {
            let (batches, rejected) = produce_file(contents, FileFormat::Csv);
            assert!(rejected.is_empty(), "{rejected:?}");
            assert_eq!(item_rows(&batches), [1, 2]);
        }
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

    /// A quote left open early in a large file is not read into one row
    /// held whole: past the bound the import stops, naming the line.
    #[test]
    fn a_row_that_never_ends_stops_the_import_at_the_bound() {
        let mut contents = b"id,text\nr-1,fine\nr-2,\"oops\n".to_vec();
        let line = b"r-3,a row read into the open quote\n";
        while contents.len() <= MAX_CSV_HELD_BYTES + 1024 * 1024 {
            contents.extend_from_slice(line);
        }
        let (batches, rejected, produced) = try_produce_file(&contents, FileFormat::Csv);
        let error = format!("{:#}", produced.unwrap_err());
        assert!(error.contains("from line 2 on run past 64 MiB"), "{error}");
        assert!(rejected.is_empty(), "{rejected:?}");
        // The row held one read behind (line 2) is not taken either.
        assert!(item_rows(&batches).is_empty());
        // The first row past the bound, after blank lines: its own line.
        let mut first = b"id,text\n\n\nr-1,\"oops\n".to_vec();
        while first.len() <= MAX_CSV_HELD_BYTES + 1024 * 1024 {
            first.extend_from_slice(line);
        }
        let (_, _, produced) = try_produce_file(&first, FileFormat::Csv);
        let error = format!("{:#}", produced.unwrap_err());
        assert!(error.contains("from line 4 on"), "{error}");
        assert!(error.contains("quoted field left open"), "{error}");
        // Rows up to the bound are read as they were.
        let mut fine = b"id,text\n".to_vec();
        let big = format!("r-1,\"{}\"\n", "x".repeat(20 * 1024 * 1024));
        fine.extend_from_slice(big.as_bytes());
        fine.extend_from_slice(big.replace("r-1", "r-2").as_bytes());
        let (_, rejected, produced) = try_produce_file(&fine, FileFormat::Csv);
        produced.unwrap();
        assert_eq!(rejected.len(), 2, "two rows, each rejected for its text");
    }

    /// A CR alone ends a line (and a row) as LF and CRLF do: rows of a file
    /// with old Mac line endings are numbered by their lines, not all line 1,
    /// and a CR inside an unclosed quote is seen as the line break it is.
    #[test]
    fn a_cr_alone_ends_a_line() {
        let (batches, rejected) = produce_file(
            b"id,text\rr-1,one\rr-2,\"two\rlines\"\r\rr-3,three\r\nr-4,four\n",
            FileFormat::Csv,
        );
        assert!(rejected.is_empty(), "{rejected:?}");
        let lines: Vec<u64> = batches
            .iter()
            .flat_map(|b| b.rows.iter().map(|at| at.line))
            .collect();
        assert_eq!(lines, [2, 3, 6, 7]);
        let (batches, rejected) = produce_file(
            b"id,text\rr-1,fine\rr-2,\"oops\rr-3,lost\r",
            FileFormat::Csv,
        );
        assert_eq!(item_rows(&batches), [1]);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].0, RowAt { row: 2, line: 3 });
        assert!(rejected[0].1.contains("never closed"), "{}", rejected[0].1);
    }
}

/// Fuzz targets of the import readers (`cargo test --lib fuzz`): any bytes,
/// as CSV or JSON Lines, in any encoding, with any `--map`: the reader never
/// panics, and every row of the file becomes an item or a rejection that
/// carries its row number; what becomes an item says what the row said.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::{edgy_f64, edgy_i64, field_string, nasty_string};

    /// What the reader made of a file.
    #[derive(Debug)]
    struct Outcome {
        encoding: Encoding,
        items: Vec<(RowAt, pb::Feedback)>,
        rejected: Vec<(RowAt, String)>,
        last_row: Option<u64>,
    }

    fn read_file(
        contents: &[u8],
        format: FileFormat,
        wanted: EncodingArg,
        mappings: &BTreeMap<String, String>,
        tag_separator: &str,
    ) -> anyhow::Result<Outcome> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("input");
        std::fs::write(&file, contents)?;
        let encoding = encoding::choose(&file, wanted)?;
        let input = open_input(&file, format, encoding, mappings)?;
        let (tx, mut rx) = mpsc::channel(4);
        let sink = RowSink {
            skip_rows: 0,
            file_identity: "fuzz".into(),
            mappings: mappings.clone(),
            tag_separator: tag_separator.to_string(),
            batcher: Batcher::new(tx, 7),
            ignored: BTreeSet::new(),
        };
        let reader = std::thread::spawn(move || produce(&file, input, sink));
        let mut outcome = Outcome {
            encoding,
            items: Vec::new(),
            rejected: Vec::new(),
            last_row: None,
        };
        while let Some(event) = rx.blocking_recv() {
            match event {
                Produced::Batch(batch) => {
                    assert!(batch.request.items.len() <= 7);
                    assert!(batch.request.encoded_len() <= MAX_MESSAGE_BYTES);
                    assert_eq!(batch.rows.len(), batch.request.items.len());
                    outcome
                        .items
                        .extend(batch.rows.into_iter().zip(batch.request.items));
                }
                Produced::Unreadable { at, reason } => outcome.rejected.push((at, reason)),
                Produced::Progress(_) => {}
                Produced::Done { last_row } => outcome.last_row = Some(last_row),
            }
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok(outcome)
    }

    /// The file as the reader sees it: UTF-8, without a byte order mark.
    fn decoded(contents: &[u8], encoding: Encoding) -> Vec<u8> {
        let body = contents.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(contents);
        match encoding {
            Encoding::Utf8 => body.to_vec(),
            Encoding::Latin1 => body
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>()
                .into(),
            Encoding::Cp1252 => body
                .iter()
                .map(|&b| crate::domain::decode_cp1252_byte(b))
                .collect::<String>()
                .into(),
        }
    }

    /// Every row once, in order, as an item or a rejection with a reason;
    /// every item one the server may take.
    fn check_rows(outcome: &Outcome, expected_rows: &[u64]) -> Result<(), TestCaseError> {
        let mut rows: Vec<u64> = outcome
            .items
            .iter()
            .map(|(at, _)| at.row)
            .chain(outcome.rejected.iter().map(|(at, _)| at.row))
            .collect();
        rows.sort_unstable();
        prop_assert_eq!(&rows[..], expected_rows);
        for (at, reason) in &outcome.rejected {
            prop_assert!(
                at.row >= 1 && !reason.trim().is_empty(),
                "{at:?}: {reason:?}"
            );
        }
        for (at, item) in &outcome.items {
            prop_assert!(at.row >= 1 && !item.id.is_empty());
            prop_assert!(check_size(item).is_ok());
        }
        Ok(())
    }

    fn encoding_arg() -> impl Strategy<Value = EncodingArg> {
        prop::sample::select(vec![
            EncodingArg::Auto,
            EncodingArg::Auto,
            EncodingArg::Utf8,
            EncodingArg::Latin1,
            EncodingArg::Cp1252,
        ])
    }

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
        "attributes",
        "attributes.region",
        "attributes.Region",
        "attributes.",
    ];

    /// Column (or JSON key) names: the fields', and others.
    fn column() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(FIELDS).prop_map(String::from),
            1 => prop::sample::select(vec!["comment", "Comment", " text ", "NPS", ""]).prop_map(String::from),
            1 => nasty_string(8),
        ]
    }

    /// `--map` values, as typed.
    fn map_spec() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (prop::sample::select(FIELDS), column()).prop_map(|(f, c)| format!("{f}={c}")),
            1 => "attributes\\.[A-Za-z0-9_.-]{0,8}=[a-z]{0,5}",
            1 => nasty_string(12),
        ]
    }

    fn mappings() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::vec(map_spec(), 0..3).prop_map(|specs| {
            specs
                .iter()
                .filter_map(|spec| parse_mapping(spec).ok())
                .collect()
        })
    }

    /// `--tag-separator` values the flag takes.
    fn tag_separator() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![";", ",", "|", " ", "; "]).prop_map(String::from),
            1 => nasty_string(3),
        ]
        .prop_filter_map("refused by the flag", |raw| parse_tag_separator(&raw).ok())
    }

    fn json_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            2 => edgy_i64().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            2 => edgy_f64().prop_filter_map("a JSON number", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            4 => field_string(60).prop_map(Value::String),
            2 => "-?[0-9]{1,11}( )?".prop_map(Value::String),
            1 => prop::sample::select(vec![
                "2026-03-14T09:21:05Z", "2026-03-14", "1970-01-01", "review", "Support Ticket",
                "CHANNEL_CHAT", "onboarding", "vip; b2b", "a,b",
            ])
            .prop_map(|s| Value::String(s.to_string())),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            6 => json_scalar(),
            1 => prop::collection::vec(json_scalar(), 0..3).prop_map(Value::Array),
            1 => prop::collection::btree_map(column(), json_scalar(), 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    }

    fn row() -> impl Strategy<Value = Row> {
        prop::collection::btree_map(column(), json_value(), 0..8)
            .prop_map(|map| map.into_iter().collect())
    }

    /// One JSON Lines line, without its line break.
    fn json_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => row().prop_map(|row| serde_json::to_vec(&row).unwrap()),
            1 => Just(Vec::new()),
            1 => prop::sample::select(vec![" \t", "not json", "[1,2]", "null", "{", "{\"text\":\"a\"} x"])
                .prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..30)
                .prop_map(|bytes| bytes.into_iter().filter(|&b| b != b'\n').collect()),
            1 => Just(b"{\"text\":\"caf\xE9 \x96 ok\"}".to_vec()),
        ]
    }

    /// A CSV cell as written: plain, quoted (quotes doubled), or raw bytes.
    fn cell() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            3 => field_string(40),
            1 => "-?[0-9]{1,3}",
            1 => prop::sample::select(vec!["review", "2026-03-14", "vip;b2b", "\"", "a,b", "x\r\ny"])
                .prop_map(String::from),
        ];
        prop_oneof![
            3 => text.clone().prop_map(|t| t.replace([',', '"', '\n', '\r'], " ").into_bytes()),
            2 => text.prop_map(|t| format!("\"{}\"", t.replace('"', "\"\"")).into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..6),
        ]
    }

    fn csv_file() -> impl Strategy<Value = Vec<u8>> {
        let header = prop::collection::vec(column(), 0..6).prop_map(|mut columns| {
            columns.push("text".into());
            columns
        });
        let records = prop::collection::vec(prop::collection::vec(cell(), 0..7), 0..12);
        let ending = prop::sample::select(vec!["\n", "\r\n", "\r", "\n\n"]);
        (
            header,
            any::<bool>(),
            records,
            ending,
            any::<bool>(),
            1usize..4,
        )
            .prop_map(|(mut header, shuffle, records, ending, bom, repeat)| {
                if shuffle {
                    header.rotate_left(1);
                }
                let mut file = if bom {
                    b"\xEF\xBB\xBF".to_vec()
                } else {
                    Vec::new()
                };
                let header: Vec<Vec<u8>> = header
                    .iter()
                    .map(|c| format!("\"{}\"", c.replace('"', "\"\"")).into_bytes())
                    .collect();
                file.extend(header.join(&b","[..]));
                file.extend(ending.as_bytes());
                // Repeated to cross the readers' buffers now and then.
                for _ in 0..repeat * repeat * repeat {
                    for record in &records {
                        file.extend(record.join(&b","[..]));
                        file.extend(ending.as_bytes());
                    }
                }
                file
            })
    }

    proptest! {
        #[test]
        fn fuzz_map_specs_parse_or_are_refused(spec in prop_oneof![map_spec(), nasty_string(20)]) {
            match parse_mapping(&spec) {
                Ok((field, column)) => {
                    prop_assert_eq!(&format!("{field}={column}"), &spec);
                    match field.strip_prefix("attributes.") {
                        Some(key) => prop_assert!(
                            crate::domain::is_attribute_key(key),
                            "--map {spec:?} accepted: every row would be rejected"
                        ),
                        None => prop_assert!(FIELDS[..13].contains(&field.as_str()), "{field}"),
                    }
                }
                Err(message) => prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn fuzz_jsonl_rows_become_items_or_rejections(
            lines in prop::collection::vec(json_line(), 0..12),
            ending in prop::sample::select(vec!["\n", "\r\n"]),
            last_ending in any::<bool>(),
            bom in any::<bool>(),
            wanted in encoding_arg(),
            mappings in mappings(),
            separator in tag_separator(),
        ) {
            let mut contents = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
            contents.extend(lines.join(ending.as_bytes()));
            if last_ending && !lines.is_empty() {
                contents.extend(ending.as_bytes());
            }
            let outcome = match read_file(&contents, FileFormat::Jsonl, wanted, &mappings, &separator) {
                Ok(outcome) => outcome,
                Err(error) => {
                    prop_assert!(
                        wanted == EncodingArg::Auto
                            && (contents.starts_with(b"\xFF\xFE") || contents.starts_with(b"\xFE\xFF")),
                        "{error:#}"
                    );
                    return Ok(());
                }
            };
            let text = decoded(&contents, outcome.encoding);
            let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            if lines.last().is_some_and(|line| line.is_empty()) {
                lines.pop();
            }
            let expected: Vec<u64> = (1..=lines.len() as u64)
                .filter(|&n| !lines[n as usize - 1].trim_ascii().is_empty())
                .collect();
            check_rows(&outcome, &expected)?;
            prop_assert_eq!(outcome.last_row, Some(lines.len() as u64));
            for (at, _) in &outcome.items {
                prop_assert_eq!(at.line, at.row);
            }
            for (at, _) in &outcome.rejected {
                prop_assert_eq!(at.line, at.row);
            }
        }

        #[test]
        fn fuzz_csv_rows_become_items_or_rejections(
            contents in prop_oneof![4 => csv_file(), 1 => encoding::fuzz::file_bytes()],
            wanted in encoding_arg(),
            mappings in mappings(),
            separator in tag_separator(),
        ) {
            let outcome = match read_file(&contents, FileFormat::Csv, wanted, &mappings, &separator) {
                Ok(outcome) => outcome,
                // The header is checked before any row is read: a clear error.
                Err(error) => {
                    let message = format!("{error:#}");
                    prop_assert!(
                        message.contains("header") || message.contains("UTF-16"),
                        "{message}"
                    );
                    return Ok(());
                }
            };
            // The rows and lines the csv crate sees in the whole text at once.
            let text = decoded(&contents, outcome.encoding);
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(&text[..]);
            reader.headers().ok();
            let mut lines = Vec::new();
            let mut record = csv::ByteRecord::new();
            loop {
                let start = reader.position().byte() as usize;
                // A record that is not valid CSV is a row too.
                if let Ok(false) = reader.read_byte_record(&mut record) {
                    break;
                }
                // A line ends at LF, CRLF or a CR alone, as a record does.
                let ends_line = |i: usize| {
                    text[i] == b'\r' || (text[i] == b'\n' && (i == 0 || text[i - 1] != b'\r'))
                };
                let breaks_before = (0..start).filter(|&i| ends_line(i)).count();
                let leading = (start..text.len())
                    .take_while(|&i| text[i] == b'\r' || text[i] == b'\n')
                    .filter(|&i| ends_line(i))
                    .count();
                lines.push((1 + breaks_before + leading) as u64);
            }
            let expected: Vec<u64> = (1..=lines.len() as u64).collect();
            check_rows(&outcome, &expected)?;
            prop_assert_eq!(outcome.last_row, Some(lines.len() as u64));
            for (at, _) in &outcome.items {
                prop_assert_eq!(at.line, lines[at.row as usize - 1], "row {}", at.row);
            }
            for (at, _) in &outcome.rejected {
                prop_assert_eq!(at.line, lines[at.row as usize - 1], "row {}", at.row);
            }
        }

        /// A row's values arrive in the item as the row gave them, or the
        /// row is rejected naming the field.
        #[test]
        fn fuzz_rows_become_what_they_say_or_are_rejected(
            row in row(),
            mappings in mappings(),
            separator in tag_separator(),
        ) {
            let get = |field: &str| {
                let column = mappings.get(field).map(String::as_str).unwrap_or(field);
                row.get(column)
                    .filter(|v| !matches!(v, Value::Null) && v.as_str() != Some(""))
            };
            let item = match row_to_item(&row, &mappings, &separator) {
                Ok(item) => item,
                Err(reason) => {
                    let field = reason.split(':').next().unwrap_or_default();
                    prop_assert!(FIELDS[..14].contains(&field), "{reason}");
                    return Ok(());
                }
            };
            match get("text") {
                None => prop_assert_eq!(&item.text, ""),
                Some(Value::String(s)) => prop_assert_eq!(&item.text, s),
                Some(Value::Number(n)) => prop_assert_eq!(&item.text, &n.to_string()),
                Some(other) => prop_assert!(false, "text {other} accepted"),
            }
            if let Some(Value::Number(n)) = get("created_at") {
                let seconds = item.created_at.as_ref().map(|ts| ts.seconds);
                prop_assert_eq!(
                    n.as_i64(),
                    seconds,
                    "created_at {} read as {:?}", n, item.created_at
                );
            }
            for (field, value) in [("nps", item.nps), ("csat", item.csat), ("ces", item.ces), ("rating", item.rating)] {
                let expected = match get(field) {
                    None => None,
                    Some(Value::Number(n)) => n.as_i64(),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    Some(other) => return Err(TestCaseError::fail(format!("{field} {other} accepted"))),
                };
                prop_assert_eq!(value.map(i64::from), expected, "{}", field);
            }
            if let Some(value) = get("attributes") {
                prop_assert!(value.is_object(), "attributes {value} accepted and dropped");
            }
            let attribute_columns = row
                .keys()
                .filter_map(|k| k.strip_prefix("attributes.").map(|key| (key, k.as_str())))
                .chain(mappings.iter().filter_map(|(field, column)| {
                    field.strip_prefix("attributes.").map(|key| (key, column.as_str()))
                }));
            for (key, column) in attribute_columns {
                if row.get(column).is_some_and(|v| !v.is_null() && v.as_str() != Some("")) {
                    prop_assert!(
                        item.attributes.contains_key(key),
                        "{column}: {} accepted and dropped", row[column]
                    );
                }
            }
            if let Some(Value::String(s)) = get("tags") {
                let expected: Vec<&str> = s
                    .split(separator.as_str())
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect();
                prop_assert_eq!(&item.tags, &expected);
                prop_assert!(!separator.is_empty(), "tags split with an empty separator");
            }
        }
    }
}
