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

/// Texts per `AnalyzeStream` message: output starts after the first
/// message's answer (about a second on 2 cores), and the server batches
/// within a message.
const TEXTS_PER_MESSAGE: usize = 64;

/// Messages read ahead of the answers: the next one waits at the server
/// while one is analysed, and input is read no further (memory stays
/// bounded whatever the input's length).
const MESSAGES_AHEAD: usize = 2;

/// Analyses the texts given as arguments, or each non-empty line of
/// standard input, through one `AnalyzeStream` call: each message's
/// results are printed as its answer comes (standard input of millions of
/// lines streams through in bounded memory), in input order. `--json`
/// prints one array, element by element.
pub async fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<Vec<String>>(MESSAGES_AHEAD);
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel(MESSAGES_AHEAD);
    let from_stdin = args.texts.is_empty();
    let given = args.texts.clone();
    // Reads (a thread of its own: standard input blocks) and sends each
    // chunk twice: to the call, and to the printer, which pairs it with its
    // answer. Not a runtime's blocking task: the end of the command must not
    // wait for a read of standard input that may never return.
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        let send = |chunk: Vec<String>| {
            let request = pb::AnalyzeRequest {
                texts: chunk.clone(),
                include_embeddings: false,
            };
            // The printer stopped (an error, or the output closed): stop too.
            chunks_tx.blocking_send(chunk).is_ok() && requests_tx.blocking_send(request).is_ok()
        };
        if !from_stdin {
            for chunk in given.chunks(TEXTS_PER_MESSAGE) {
                if !send(chunk.to_vec()) {
                    break;
                }
            }
            return Ok(());
        }
        let mut chunk = Vec::with_capacity(TEXTS_PER_MESSAGE);
        for (number, line) in std::io::stdin().lock().lines().enumerate() {
            let line = match line {
                Ok(line) => line,
                Err(error) => {
                    // What was read is analysed, then the command fails.
                    if !chunk.is_empty() {
                        send(chunk);
                    }
                    return Err(anyhow::anyhow!(
                        "standard input, line {}: {error}",
                        number + 1
                    ));
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            chunk.push(line);
            if chunk.len() == TEXTS_PER_MESSAGE && !send(std::mem::take(&mut chunk)) {
                return Ok(());
            }
        }
        if !chunk.is_empty() {
            send(chunk);
        }
        Ok(())
    });
    // Once the printer has seen the channel close, the reader has returned.
    let reader_result = move || {
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    };
    // The first chunk before connecting: no input is a usage error, found
    // without a server.
    let Some(first) = chunks_rx.recv().await else {
        reader_result()?;
        anyhow::bail!("nothing to analyse: give texts as arguments or on standard input");
    };
    let mut client = crate::cli::connect(&args.server).await?;
    let mut answers = client
        .analyze_stream(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .map_err(crate::cli::call_failed)?
        .into_inner();
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
    let mut next = Some(first);
    let printed = async {
        while let Some(chunk) = next.take() {
            let response = answers
                .message()
                .await
                .map_err(crate::cli::call_failed)?
                .ok_or_else(|| {
                    anyhow::anyhow!("the server ended the stream before answering every text")
                })?;
            anyhow::ensure!(
                response.results.len() == chunk.len(),
                "the server answered {} results for {} texts",
                response.results.len(),
                chunk.len()
            );
            let answered = response.results.len() as u64;
            for (text, result) in chunk.into_iter().zip(response.results) {
                print_one(&text, result, args.json, ansi, &mut json)?;
            }
            progress.inc(answered);
            next = chunks_rx.recv().await;
        }
        anyhow::Ok(())
    }
    .await;
    progress.finish_and_clear();
    // On an error the reader is left to end at its next chunk (or with the
    // process).
    printed?;
    if args.json {
        json.end()?;
    }
    reader_result()
}

/// `--json`'s array, printed element by element in the layout
/// `serde_json::to_string_pretty` gives the whole array.
#[derive(Default)]
struct JsonArray {
    elements: usize,
}

impl JsonArray {
    fn push(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        let pretty = serde_json::to_string_pretty(value)?;
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
        chars[(s.start as usize).min(chars.len())..(s.end as usize).min(chars.len())]
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
