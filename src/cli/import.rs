//! `verbatim import FILE`: streams a CSV or JSONL file into a running server
//! through IngestStream, with a progress bar, a summary of accepted and
//! rejected rows, and `--resume` after an interruption.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::grpc::pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    Csv,
    Jsonl,
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
    /// Read FIELD from COLUMN: --map text=comment --map nps="Likelihood to recommend".
    /// Fields: id text channel journey_stage product customer_id created_at language
    /// nps csat ces rating tags attributes.KEY. Unmapped fields are read from
    /// a column of the same name.
    #[arg(long = "map", value_name = "FIELD=COLUMN", value_parser = parse_mapping)]
    pub mappings: Vec<(String, String)>,
    /// Items per IngestStream message (1..=1000).
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
}

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

/// A row of the file as field -> value (CSV cells are strings).
type Row = serde_json::Map<String, Value>;

/// One message's worth of rows: what goes out and how to report its acks.
struct Batch {
    request: pb::IngestRequest,
    /// File row number (1-based, header excluded) of each item.
    rows: Vec<u64>,
    /// Every row up to this one is done once the batch is acknowledged.
    last_row: u64,
}

enum Produced {
    Batch(Batch),
    /// A row the client could not turn into an item.
    Unreadable {
        row: u64,
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
    let format =
        args.format
            .unwrap_or_else(|| match args.file.extension().and_then(|e| e.to_str()) {
                Some(ext) if ext.eq_ignore_ascii_case("csv") => FileFormat::Csv,
                _ => FileFormat::Jsonl,
            });
    let state_file = state_path(&args.file);
    let mut state = ImportState {
        file_bytes,
        ..Default::default()
    };
    if args.resume {
        if let Ok(text) = std::fs::read_to_string(&state_file) {
            let saved: ImportState = serde_json::from_str(&text)
                .with_context(|| format!("cannot read {}", state_file.display()))?;
            anyhow::ensure!(
                saved.file_bytes == file_bytes,
                "{} changed since the interrupted import ({} bytes then, {} now); import it without --resume",
                args.file.display(),
                saved.file_bytes,
                file_bytes
            );
            eprintln!("resuming after row {}", saved.rows_done);
            state = saved;
        }
    }
    let mut client = crate::cli::connect(&args.server.address).await?;

    let (produced_tx, mut produced_rx) = mpsc::channel::<Produced>(4);
    let reader = {
        let file = args.file.clone();
        let mappings: BTreeMap<String, String> = args.mappings.iter().cloned().collect();
        let batch_size = args.batch_size as usize;
        let skip = state.rows_done;
        let separator = args.tag_separator.clone();
        std::thread::spawn(move || {
            produce(
                &file,
                format,
                &mappings,
                &separator,
                batch_size,
                skip,
                &produced_tx,
            )
        })
    };

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

    // Sending runs in its own task so that acks are read while a send waits
    // for the server (backpressure); everything else reaches this loop as an
    // event, batches before their request is sent, so acks find them.
    let (events_tx, mut events) = mpsc::unbounded_channel::<Produced>();
    let forwarder = tokio::spawn(async move {
        while let Some(produced) = produced_rx.recv().await {
            match produced {
                Produced::Batch(batch) => {
                    let request = batch.request;
                    let meta = Batch {
                        request: pb::IngestRequest::default(),
                        ..batch
                    };
                    if events_tx.send(Produced::Batch(meta)).is_err()
                        || requests_tx.send(request).await.is_err()
                    {
                        return; // the server ended the stream; its status comes with the acks
                    }
                }
                other => {
                    if events_tx.send(other).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let mut pending: VecDeque<(Vec<u64>, u64)> = VecDeque::new();
    let mut rejections: Vec<(u64, String)> = Vec::new();
    let mut unreadable_rows = 0u64;
    let mut events_open = true;
    let mut last_row_seen = state.rows_done;
    let save = |state: &ImportState| {
        let _ = std::fs::write(&state_file, serde_json::to_vec(state).unwrap_or_default());
    };
    loop {
        tokio::select! {
            event = events.recv(), if events_open => match event {
                Some(Produced::Batch(batch)) => pending.push_back((batch.rows, batch.last_row)),
                Some(Produced::Unreadable { row, reason }) => {
                    unreadable_rows += 1;
                    rejections.push((row, reason));
                }
                Some(Produced::Progress(bytes)) => progress.set_position(bytes),
                Some(Produced::Done { last_row }) => last_row_seen = last_row,
                None => events_open = false,
            },
            ack = acks.message() => match ack.context("import stream failed")? {
                Some(ack) => {
                    let (rows, last_row) = pending
                        .pop_front()
                        .context("the server acknowledged a message that was not sent")?;
                    for result in &ack.results {
                        if let Some(pb::item_result::Outcome::Rejection(r)) = &result.outcome {
                            let row = rows.get(result.index as usize).copied().unwrap_or(0);
                            rejections.push((row, format!("{}: {}", r.field, r.reason)));
                        }
                    }
                    state.accepted += u64::from(ack.accepted);
                    state.rejected += u64::from(ack.rejected);
                    state.rows_done = last_row;
                    save(&state);
                    progress.set_message(format!("{} accepted, {} rejected", state.accepted, state.rejected + unreadable_rows));
                }
                None => break,
            },
        }
    }
    forwarder.await.context("the import sender failed")?;
    while let Some(event) = events.recv().await {
        match event {
            Produced::Batch(batch) => pending.push_back((batch.rows, batch.last_row)),
            Produced::Unreadable { row, reason } => {
                unreadable_rows += 1;
                rejections.push((row, reason));
            }
            Produced::Progress(_) => {}
            Produced::Done { last_row } => last_row_seen = last_row,
        }
    }
    progress.finish_and_clear();
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the file reader panicked"))??;
    anyhow::ensure!(
        pending.is_empty(),
        "the server closed the stream before acknowledging every message"
    );
    state.rows_done = state.rows_done.max(last_row_seen);
    state.rejected += unreadable_rows;
    let _ = std::fs::remove_file(&state_file);

    println!(
        "imported {}: {} rows, {} accepted, {} rejected",
        args.file.display(),
        state.accepted + state.rejected,
        state.accepted,
        state.rejected
    );
    rejections.sort_by_key(|(row, _)| *row);
    let shown = if args.all_rejections {
        rejections.len()
    } else {
        20
    };
    for (row, reason) in rejections.iter().take(shown) {
        println!("  row {row}: {reason}");
    }
    if rejections.len() > shown {
        println!(
            "  ... and {} more (--all-rejections lists them)",
            rejections.len() - shown
        );
    }
    Ok(())
}

fn produce(
    file: &Path,
    format: FileFormat,
    mappings: &BTreeMap<String, String>,
    tag_separator: &str,
    batch_size: usize,
    skip_rows: u64,
    out: &mpsc::Sender<Produced>,
) -> anyhow::Result<()> {
    let handle =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut batch = Batch {
        request: pb::IngestRequest::default(),
        rows: Vec::new(),
        last_row: 0,
    };
    let mut row_number = 0u64;
    let emit = |row_number: u64,
                row: Result<Row, String>,
                bytes: u64,
                batch: &mut Batch|
     -> anyhow::Result<bool> {
        if row_number <= skip_rows {
            return Ok(true);
        }
        let item = row.and_then(|row| row_to_item(&row, mappings, tag_separator));
        match item {
            Ok(item) => {
                batch.request.items.push(item);
                batch.rows.push(row_number);
            }
            Err(reason) => {
                if out
                    .blocking_send(Produced::Unreadable {
                        row: row_number,
                        reason,
                    })
                    .is_err()
                {
                    return Ok(false);
                }
            }
        }
        batch.last_row = row_number;
        if batch.request.items.len() >= batch_size {
            let full = std::mem::replace(
                batch,
                Batch {
                    request: pb::IngestRequest::default(),
                    rows: Vec::new(),
                    last_row: row_number,
                },
            );
            if out.blocking_send(Produced::Batch(full)).is_err()
                || out.blocking_send(Produced::Progress(bytes)).is_err()
            {
                return Ok(false);
            }
        }
        Ok(true)
    };
    match format {
        FileFormat::Jsonl => {
            let mut bytes = 0u64;
            for line in BufReader::new(handle).lines() {
                let line = line.with_context(|| format!("cannot read {}", file.display()))?;
                bytes += line.len() as u64 + 1;
                if line.trim().is_empty() {
                    continue;
                }
                row_number += 1;
                let row = match serde_json::from_str::<Value>(&line) {
                    Ok(Value::Object(map)) => Ok(map),
                    Ok(_) => Err("not a JSON object".to_string()),
                    Err(e) => Err(format!("invalid JSON: {e}")),
                };
                if !emit(row_number, row, bytes, &mut batch)? {
                    return Ok(());
                }
            }
        }
        FileFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(handle.take(u64::MAX));
            let headers = reader
                .headers()
                .context("cannot read the CSV header row")?
                .clone();
            let mut record = csv::StringRecord::new();
            loop {
                let read = reader.read_record(&mut record);
                match &read {
                    Ok(false) => break,
                    // A row that is not valid CSV is reported and skipped; an
                    // I/O error ends the import.
                    Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                        anyhow::bail!("cannot read {}: {e}", file.display())
                    }
                    _ => {}
                }
                row_number += 1;
                let row = read
                    .map(|_| {
                        headers
                            .iter()
                            .zip(record.iter())
                            .map(|(h, v)| (h.trim().to_string(), Value::String(v.to_string())))
                            .collect()
                    })
                    .map_err(|e| format!("invalid CSV: {e}"));
                let bytes = reader.position().byte();
                if !emit(row_number, row, bytes, &mut batch)? {
                    return Ok(());
                }
            }
        }
    }
    if !batch.request.items.is_empty() {
        let _ = out.blocking_send(Produced::Batch(batch));
    }
    let _ = out.blocking_send(Produced::Done {
        last_row: row_number,
    });
    Ok(())
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

    fn row(json: &str) -> Row {
        serde_json::from_str(json).unwrap()
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
}
