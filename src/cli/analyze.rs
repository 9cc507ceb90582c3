//! `verbatim analyze "text"`: a readable breakdown of one or more texts:
//! document sentiment, language, keyphrases, and each sentence coloured by
//! its sentiment on a terminal.

use std::io::{BufRead, IsTerminal};

use clap::Args;
use serde_json::json;

use crate::grpc::pb;

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Texts to analyse; none: one text per line from standard input.
    pub texts: Vec<String>,
    #[command(flatten)]
    pub server: crate::cli::ServerArg,
    /// Print JSON instead of the breakdown.
    #[arg(long)]
    pub json: bool,
    /// When the server ends the stream as busy or unavailable
    /// (RESOURCE_EXHAUSTED: its analysis queue is full, or answers other
    /// clients have not read fill its --max-inflight-response-mb; UNAVAILABLE: it is
    /// restarting), reopen it after a pause that doubles from 1 s up to 30 s
    /// and send the unanswered texts again, up to this many times in a row
    /// (the count starts again at each answer). 0: stop at once.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
}

fn label_name(label: i32) -> &'static str {
    match pb::SentimentLabel::try_from(label) {
        Ok(pb::SentimentLabel::Negative) => "negative",
        Ok(pb::SentimentLabel::Neutral) => "neutral",
        Ok(pb::SentimentLabel::Positive) => "positive",
        Ok(pb::SentimentLabel::Mixed) => "mixed",
        _ => "unknown",
    }
}

fn colour(label: i32, ansi: bool) -> (&'static str, &'static str) {
    if !ansi {
        return ("", "");
    }
    match pb::SentimentLabel::try_from(label) {
        Ok(pb::SentimentLabel::Negative) => ("\x1b[31m", "\x1b[0m"),
        Ok(pb::SentimentLabel::Positive) => ("\x1b[32m", "\x1b[0m"),
        Ok(pb::SentimentLabel::Mixed) => ("\x1b[33m", "\x1b[0m"),
        _ => ("\x1b[2m", "\x1b[0m"),
    }
}

fn sentiment_json(s: &Option<pb::Sentiment>) -> serde_json::Value {
    let s = (*s).unwrap_or_default();
    json!({"label": label_name(s.label), "score": s.score, "negative": s.negative, "neutral": s.neutral, "positive": s.positive})
}

/// Texts per `AnalyzeStream` message, at most: output starts after the
/// first message's answer, and the server batches within a message.
const TEXTS_PER_MESSAGE: usize = 64;

/// Bytes of text past which no further text joins a message (64 texts
/// within the server's 32 KiB a text stay under it).
const MESSAGE_BYTES: usize = 4 << 20;

/// Messages sent ahead of their answers: the next one waits at the server
/// while one is analysed.
const MESSAGES_AHEAD: usize = 2;

/// Lines read ahead of the messages: input is read no further (memory
/// stays bounded whatever the input's length).
const LINES_AHEAD: usize = TEXTS_PER_MESSAGE * MESSAGES_AHEAD;

/// Analyses the texts given as arguments, or each non-empty line of
/// standard input, through `AnalyzeStream`: a message takes the lines read
/// so far (up to `TEXTS_PER_MESSAGE`: full ones from a file or a pipe, one
/// line at a time as someone types), and each message's results are
/// printed as its answer comes, in input order, so millions of lines
/// stream through in bounded memory. `--json` prints one array, element by
/// element. A stream the server ends as busy or unavailable is reopened
/// with the unanswered messages (`--retries`).
pub async fn run(mut args: AnalyzeArgs) -> anyhow::Result<()> {
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(LINES_AHEAD);
    let from_stdin = args.texts.is_empty();
    let given = std::mem::take(&mut args.texts);
    // A thread of its own (reads of standard input block), not a runtime's
    // blocking task: the end of the command must not wait for a read that
    // may never return.
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        if !from_stdin {
            for text in given {
                if lines_tx.blocking_send(text).is_err() {
                    break;
                }
            }
            return Ok(());
        }
        for (number, line) in std::io::stdin().lock().lines().enumerate() {
            // What was read before a line that cannot be is analysed, then
            // the command fails.
            let line =
                line.map_err(|e| anyhow::anyhow!("standard input, line {}: {e}", number + 1))?;
            // The printer stopped (an error, or the output closed): stop too.
            if !line.trim().is_empty() && lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
        Ok(())
    });
    // Once the printer has seen the channel close, the reader has returned.
    let reader_result = move || {
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    };
    // The first text before connecting: no input is a usage error, found
    // without a server.
    let Some(first) = lines.recv().await else {
        reader_result()?;
        anyhow::bail!("nothing to analyse: give texts as arguments or on standard input");
    };
    let mut client = crate::cli::connect(&args.server).await?;
    let ansi = std::io::stdout().is_terminal();
    // A count on a terminal's standard error while the results go to a
    // file or a pipe (on a terminal they show the progress themselves).
    let progress = match std::io::stderr().is_terminal() && !ansi {
        true => indicatif::ProgressBar::new_spinner(),
        false => indicatif::ProgressBar::hidden(),
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {pos} texts analysed ({per_sec})",
        )
        .expect("valid template"),
    );
    let mut json = JsonArray::default();
    // Messages sent and not yet answered, oldest first.
    let mut pending: std::collections::VecDeque<Vec<String>> = Default::default();
    let mut next_text = Some(first);
    let mut input_done = false;
    // Failed streams since the last answer.
    let mut failures = 0;
    let printed = async {
        'streams: loop {
            let (requests, requests_rx) = tokio::sync::mpsc::channel(MESSAGES_AHEAD);
            // A message goes with the call (a server may read one before
            // it answers the call's head); a reopened stream sends the
            // unanswered messages first.
            if pending.is_empty() {
                if let Some(text) = next_text.take() {
                    pending.push_back(gather(text, &mut lines));
                }
            }
            for chunk in &pending {
                let _ = requests.try_send(request(chunk));
            }
            let opened = client
                .analyze_stream(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
                .await;
            let mut answers = match opened {
                Ok(answers) => answers.into_inner(),
                Err(status) => {
                    retry_or_fail(status, &mut failures, args.retries, &progress).await?;
                    continue 'streams;
                }
            };
            loop {
                // The next message: the texts read so far, at least one.
                if pending.len() < MESSAGES_AHEAD && !input_done {
                    let text = match next_text.take() {
                        Some(text) => Some(text),
                        None if pending.is_empty() => lines.recv().await,
                        // With a message waiting for its answer, read on
                        // only while texts are there.
                        None => match lines.try_recv() {
                            Ok(text) => Some(text),
                            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => None,
                            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                                input_done = true;
                                None
                            }
                        },
                    };
                    match text {
                        Some(text) => {
                            // Pending before it is sent: a failed send (the
                            // stream ended) leaves it to the next stream.
                            let chunk = gather(text, &mut lines);
                            let message = request(&chunk);
                            pending.push_back(chunk);
                            let _ = requests.send(message).await;
                            continue;
                        }
                        None if pending.is_empty() => input_done = true,
                        None => {}
                    }
                }
                if pending.is_empty() {
                    break 'streams;
                }
                // An answer, or (while the input may have more) a text to
                // send meanwhile.
                let answer = if input_done || pending.len() >= MESSAGES_AHEAD {
                    answers.message().await
                } else {
                    tokio::select! {
                        answer = answers.message() => answer,
                        text = lines.recv() => {
                            match text {
                                Some(text) => next_text = Some(text),
                                None => input_done = true,
                            }
                            continue;
                        }
                    }
                };
                let response = match answer {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        anyhow::bail!("the server ended the stream before answering every text")
                    }
                    Err(status) => {
                        retry_or_fail(status, &mut failures, args.retries, &progress).await?;
                        continue 'streams;
                    }
                };
                failures = 0;
                let chunk = pending.pop_front().expect("an answer follows a message");
                anyhow::ensure!(
                    response.results.len() == chunk.len(),
                    "the server answered {} results for {} texts",
                    response.results.len(),
                    chunk.len()
                );
                let answered = chunk.len() as u64;
                for (text, result) in chunk.into_iter().zip(response.results) {
                    print_one(&text, result, args.json, ansi, &mut json)?;
                }
                progress.inc(answered);
            }
        }
        anyhow::Ok(())
    }
    .await;
    progress.finish_and_clear();
    // On an error the reader is left to end at its next line (or with the
    // process).
    printed?;
    if args.json {
        json.end()?;
    }
    reader_result()
}

/// A message's texts: `first`, then those already read, up to
/// `TEXTS_PER_MESSAGE` texts and `MESSAGE_BYTES` (a line past the
/// server's limit for a text is still sent: its answer is the rejection).
fn gather(first: String, lines: &mut tokio::sync::mpsc::Receiver<String>) -> Vec<String> {
    let mut bytes = first.len();
    let mut chunk = vec![first];
    while chunk.len() < TEXTS_PER_MESSAGE && bytes < MESSAGE_BYTES {
        match lines.try_recv() {
            Ok(text) => {
                bytes += text.len();
                chunk.push(text);
            }
            Err(_) => break,
        }
    }
    chunk
}

fn request(texts: &[String]) -> pb::AnalyzeRequest {
    pb::AnalyzeRequest {
        texts: texts.to_vec(),
        include_embeddings: false,
    }
}

/// After a failed stream: a pause before the next one when the status says
/// "later" and retries are left, else the error.
async fn retry_or_fail(
    status: tonic::Status,
    failures: &mut u32,
    retries: u32,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    if !crate::cli::import::retryable(&status) || *failures >= retries {
        return Err(crate::cli::call_failed(status));
    }
    *failures += 1;
    let pause = crate::cli::import::retry_pause(*failures);
    progress.suspend(|| {
        eprintln!(
            "analysis stream failed ({:?}: {}); retrying in {:.1} s ({} of {retries})",
            status.code(),
            status.message(),
            pause.as_secs_f64(),
            *failures
        )
    });
    tokio::time::sleep(pause).await;
    Ok(())
}

/// `--json`'s array, printed element by element in the layout
/// `serde_json::to_string_pretty` gives the whole array.
#[derive(Default)]
struct JsonArray {
    elements: usize,
}

impl JsonArray {
    fn push(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        let pretty = crate::cli::json_terminal_safe(serde_json::to_string_pretty(value)?);
        let indented = pretty.replace('\n', "\n  ");
        match self.elements {
            0 => out!("[\n  {indented}")?,
            _ => out!(",\n  {indented}")?,
        }
        self.elements += 1;
        Ok(())
    }

    fn end(self) -> anyhow::Result<()> {
        match self.elements {
            0 => outln!("[]")?,
            _ => outln!("\n]")?,
        }
        Ok(())
    }
}

/// Prints one text's result: the breakdown, or `--json`'s element.
fn print_one(
    text: &str,
    result: pb::TextResult,
    as_json: bool,
    ansi: bool,
    json: &mut JsonArray,
) -> anyhow::Result<()> {
    let analysis = match result.outcome {
        Some(pb::text_result::Outcome::Analysis(a)) => a,
        Some(pb::text_result::Outcome::Rejection(r)) => {
            if as_json {
                json.push(
                    &json!({"text": text, "rejection": {"field": r.field, "reason": r.reason}}),
                )?;
            } else {
                outln!("rejected: {}: {}\n", r.field, r.reason)?;
            }
            return Ok(());
        }
        None => return Ok(()),
    };
    let chars: Vec<char> = text.chars().collect();
    let slice = |s: &pb::SentenceAnalysis| {
        let (start, end) = (s.start as usize, (s.end as usize).min(chars.len()));
        chars
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .collect::<String>()
    };
    if as_json {
        return json.push(&json!({
            "text": text,
            "language": analysis.language,
            "sentiment": sentiment_json(&analysis.sentiment),
            "sentences": analysis.sentences.iter().map(|s| json!({
                "start": s.start, "end": s.end, "text": slice(s), "sentiment": sentiment_json(&s.sentiment),
            })).collect::<Vec<_>>(),
            "keyphrases": analysis.keyphrases.iter().map(|k| json!({"text": k.text, "score": k.score})).collect::<Vec<_>>(),
        }));
    }
    let document = analysis.sentiment.unwrap_or_default();
    let (on, off) = colour(document.label, ansi);
    outln!(
        "{on}{}{off} ({:+.2})  language {} ({:.2})",
        label_name(document.label),
        document.score,
        analysis.language,
        analysis.language_confidence
    )?;
    for sentence in &analysis.sentences {
        let s = sentence.sentiment.unwrap_or_default();
        let (on, off) = colour(s.label, ansi);
        outln!(
            "  {on}{:+.2} {:<8} {}{off}",
            s.score,
            label_name(s.label),
            // Control characters and bidi overrides of the text must
            // not reach the terminal.
            crate::cli::terminal_text(&slice(sentence))
        )?;
    }
    if !analysis.keyphrases.is_empty() {
        let phrases: Vec<String> = analysis
            .keyphrases
            .iter()
            .map(|k| crate::cli::terminal_text(&k.text))
            .collect();
        outln!("  keyphrases: {}", phrases.join(", "))?;
    }
    outln!()?;
    Ok(())
}
