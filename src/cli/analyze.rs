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

pub async fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    let texts = if args.texts.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        args.texts.clone()
    };
    anyhow::ensure!(
        !texts.is_empty(),
        "nothing to analyse: give texts as arguments or on standard input"
    );
    let mut client = crate::cli::connect(&args.server).await?;
    let mut outputs = Vec::new();
    for chunk in texts.chunks(crate::domain::limits::MAX_BATCH_ITEMS) {
        let response = client
            .analyze(pb::AnalyzeRequest {
                texts: chunk.to_vec(),
                include_embeddings: false,
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
            .into_inner();
        outputs.extend(chunk.iter().cloned().zip(response.results));
    }
    let ansi = std::io::stdout().is_terminal();
    let mut json_out = Vec::new();
    for (text, result) in outputs {
        let analysis = match result.outcome {
            Some(pb::text_result::Outcome::Analysis(a)) => a,
            Some(pb::text_result::Outcome::Rejection(r)) => {
                if args.json {
                    json_out.push(
                        json!({"text": text, "rejection": {"field": r.field, "reason": r.reason}}),
                    );
                } else {
                    outln!("rejected: {}: {}\n", r.field, r.reason)?;
                }
                continue;
            }
            None => continue,
        };
        let chars: Vec<char> = text.chars().collect();
        let slice = |s: &pb::SentenceAnalysis| {
            chars[s.start as usize..(s.end as usize).min(chars.len())]
                .iter()
                .collect::<String>()
        };
        if args.json {
            json_out.push(json!({
                "text": text,
                "language": analysis.language,
                "sentiment": sentiment_json(&analysis.sentiment),
                "sentences": analysis.sentences.iter().map(|s| json!({
                    "start": s.start, "end": s.end, "text": slice(s), "sentiment": sentiment_json(&s.sentiment),
                })).collect::<Vec<_>>(),
                "keyphrases": analysis.keyphrases.iter().map(|k| json!({"text": k.text, "score": k.score})).collect::<Vec<_>>(),
            }));
            continue;
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
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&json_out)?)?;
    }
    Ok(())
}
