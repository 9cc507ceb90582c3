//! `verbatim search QUERY`: a readable table of hits (or `--json`).

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::grpc::pb;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SortArg {
    Relevance,
    Newest,
    Oldest,
    MostNegative,
    MostPositive,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ViewArg {
    /// Items with their whole analysis.
    Full,
    /// Items without sentences, keyphrases and theme spans.
    Summary,
    /// Ids and scores only.
    Ids,
}

/// The filter flags shared by `search` and `report`.
#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Only these channels (repeatable): survey review support_ticket chat email social call_transcript other.
    #[arg(long)]
    pub channel: Vec<String>,
    /// Only these journey stages (repeatable).
    #[arg(long)]
    pub stage: Vec<String>,
    /// Only these products (repeatable).
    #[arg(long)]
    pub product: Vec<String>,
    /// Only items with one of these tags (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only these languages (repeatable).
    #[arg(long)]
    pub language: Vec<String>,
    /// Only this customer.
    #[arg(long)]
    pub customer: Option<String>,
    /// Attribute equality, KEY=VALUE (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// Created at or after (2026-03-14 or RFC 3339).
    #[arg(long)]
    pub after: Option<String>,
    /// Created before.
    #[arg(long)]
    pub before: Option<String>,
    /// NPS range MIN..MAX (either end optional), e.g. 0..6 for detractors.
    #[arg(long)]
    pub nps: Option<String>,
    /// CSAT range MIN..MAX.
    #[arg(long)]
    pub csat: Option<String>,
    /// CES range MIN..MAX.
    #[arg(long)]
    pub ces: Option<String>,
    /// Rating range MIN..MAX.
    #[arg(long)]
    pub rating: Option<String>,
    /// Only analysed items with this document sentiment (repeatable): negative neutral positive mixed.
    #[arg(long)]
    pub sentiment: Vec<String>,
    /// Only items carrying this theme id (repeatable; a parent matches its
    /// sub-themes' items). Theme ids come from the ListThemes RPC, e.g.
    /// `grpcurl -plaintext 127.0.0.1:50051 verbatim.v1.FeedbackService/ListThemes`.
    #[arg(long)]
    pub theme: Vec<String>,
    /// Only items where a theme carries a sentiment, as THEME_ID=LABEL
    /// (repeatable, all must hold), e.g. delivery=negative.
    #[arg(long = "theme-sentiment", value_name = "THEME_ID=LABEL")]
    pub theme_sentiment: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Query, e.g. 'refund OR "late delivery" -spam'; empty matches everything.
    #[arg(default_value = "")]
    pub query: String,
    #[command(flatten)]
    pub server: crate::cli::ServerArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Order of the hits [default: relevance with a query, newest without one; sentiment sorts put unanalysed items last].
    #[arg(long, value_enum)]
    pub sort: Option<SortArg>,
    /// Hits per page (1..=100).
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// Continue from a previous page's cursor.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Count values of a field over all hits (repeatable): channel, product, tags, attributes.region ...
    #[arg(long)]
    pub facet: Vec<String>,
    /// Rank by similarity to this stored item's embedding.
    #[arg(long)]
    pub similar_to: Option<String>,
    /// Rank by similarity to this text's embedding.
    #[arg(long)]
    pub similar_to_text: Option<String>,
    /// Count matches only up to N (faster for broad relevance queries); past
    /// N the total prints as "N+". 0: exact.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub track_total_hits_up_to: u32,
    /// How much of each hit to fetch.
    #[arg(long, value_enum, default_value = "full")]
    pub view: ViewArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn range(raw: &Option<String>, name: &str) -> anyhow::Result<Option<pb::IntRange>> {
    let Some(raw) = raw else { return Ok(None) };
    let (min, max) = raw.split_once("..").unwrap_or((raw, raw));
    let parse = |s: &str| -> anyhow::Result<Option<i32>> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            Ok(Some(s.trim().parse().map_err(|_| {
                anyhow::anyhow!("--{name}: expected MIN..MAX, got {raw:?}")
            })?))
        }
    };
    Ok(Some(pb::IntRange {
        min: parse(min)?,
        max: parse(max)?,
    }))
}

/// The filter the flags describe.
pub fn build_filter(args: &FilterArgs) -> anyhow::Result<pb::Filter> {
    let channels = args
        .channel
        .iter()
        .map(|c| {
            crate::cli::parse_channel(c)
                .map(|c| crate::grpc::channel_to_pb(c) as i32)
                .ok_or_else(|| anyhow::anyhow!("--channel: unknown channel {c:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let journey_stages = args
        .stage
        .iter()
        .map(|s| {
            crate::cli::parse_stage(s)
                .map(|s| crate::grpc::stage_to_pb(s) as i32)
                .ok_or_else(|| anyhow::anyhow!("--stage: unknown journey stage {s:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let label = |flag: &str, s: &str| match s.to_ascii_lowercase().as_str() {
        "negative" => Ok(pb::SentimentLabel::Negative as i32),
        "neutral" => Ok(pb::SentimentLabel::Neutral as i32),
        "positive" => Ok(pb::SentimentLabel::Positive as i32),
        "mixed" => Ok(pb::SentimentLabel::Mixed as i32),
        other => Err(anyhow::anyhow!(
            "--{flag}: expected negative, neutral, positive or mixed, got {other:?}"
        )),
    };
    let sentiments = args
        .sentiment
        .iter()
        .map(|s| label("sentiment", s))
        .collect::<anyhow::Result<_>>()?;
    let theme_sentiments = args
        .theme_sentiment
        .iter()
        .map(|raw| {
            let (theme, sentiment) = raw.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--theme-sentiment: expected THEME_ID=LABEL, got {raw:?}")
            })?;
            Ok(pb::ThemeSentimentFilter {
                theme_id: theme.to_string(),
                sentiments: vec![label("theme-sentiment", sentiment)?],
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let attributes = args
        .attributes
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--attr: expected KEY=VALUE, got {kv:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let time = crate::cli::time_flag;
    Ok(pb::Filter {
        channels,
        journey_stages,
        products: args.product.clone(),
        languages: args.language.clone(),
        tags: args.tag.clone(),
        attributes,
        customer_id: args.customer.clone().unwrap_or_default(),
        created_after: time(&args.after, "after")?,
        created_before: time(&args.before, "before")?,
        nps: range(&args.nps, "nps")?,
        csat: range(&args.csat, "csat")?,
        ces: range(&args.ces, "ces")?,
        rating: range(&args.rating, "rating")?,
        sentiments,
        sentiment_score: None,
        themes: args.theme.clone(),
        theme_sentiments,
    })
}

pub fn build_request(args: &SearchArgs) -> anyhow::Result<pb::SearchRequest> {
    Ok(pb::SearchRequest {
        query: args.query.clone(),
        filter: Some(build_filter(&args.filter)?),
        sort: match args.sort {
            None => pb::SortOrder::Unspecified,
            Some(SortArg::Relevance) => pb::SortOrder::Relevance,
            Some(SortArg::Newest) => pb::SortOrder::Newest,
            Some(SortArg::Oldest) => pb::SortOrder::Oldest,
            Some(SortArg::MostNegative) => pb::SortOrder::MostNegative,
            Some(SortArg::MostPositive) => pb::SortOrder::MostPositive,
        } as i32,
        limit: args.limit,
        cursor: args.cursor.clone().unwrap_or_default(),
        facets: args.facet.clone(),
        similar_to_id: args.similar_to.clone().unwrap_or_default(),
        similar_to_text: args.similar_to_text.clone().unwrap_or_default(),
        track_total_hits_up_to: args.track_total_hits_up_to,
        view: match args.view {
            ViewArg::Full => pb::HitView::Full,
            ViewArg::Summary => pb::HitView::Summary,
            ViewArg::Ids => pb::HitView::Ids,
        } as i32,
    })
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let request = build_request(&args).context(crate::cli::Usage)?;
    let mut client = crate::cli::connect(&args.server).await?;
    let response = client
        .search(request)
        .await
        .map_err(crate::cli::call_failed)?
        .into_inner();
    if args.json {
        outln!(
            "{}",
            crate::cli::json_terminal_safe(serde_json::to_string_pretty(&response_json(
                &response
            ))?)
        )?;
    } else {
        print_table(&response, std::io::stdout().is_terminal())?;
    }
    Ok(())
}

fn date(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

fn rfc3339(ts: &Option<prost_types::Timestamp>) -> Value {
    ts.as_ref()
        .and_then(|t| {
            time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
            )
            .ok()
        })
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn channel_name(value: i32) -> String {
    pb::Channel::try_from(value)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("CHANNEL_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn stage_name(value: i32) -> String {
    pb::JourneyStage::try_from(value)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("JOURNEY_STAGE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

pub fn item_json(item: &pb::Feedback) -> Value {
    let mut value = json!({
        "id": item.id,
        "text": item.text,
        "channel": channel_name(item.channel),
        "journey_stage": stage_name(item.journey_stage),
        "product": item.product,
        "customer_id": item.customer_id,
        "created_at": rfc3339(&item.created_at),
        "language": item.language,
        "tags": item.tags,
        "attributes": item.attributes,
        "ingested_at": rfc3339(&item.ingested_at),
    });
    for (name, score) in [
        ("nps", item.nps),
        ("csat", item.csat),
        ("ces", item.ces),
        ("rating", item.rating),
    ] {
        if let Some(score) = score {
            value[name] = json!(score);
        }
    }
    value
}

fn response_json(response: &pb::SearchResponse) -> Value {
    json!({
        "total_hits": response.total_hits,
        "total_hits_is_lower_bound": response.total_hits_is_lower_bound,
        "next_cursor": response.next_cursor,
        "hits": response.hits.iter().map(|hit| json!({
            "score": hit.score,
            "item": hit.item.as_ref().map(item_json),
            "snippet": hit.snippet.as_ref().map(|s| s.html.clone()),
        })).collect::<Vec<_>>(),
        "facets": response.facets.iter().map(|f| json!({
            "field": f.field,
            "counts": f.counts.iter().map(|c| json!({"value": c.value, "count": c.count})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Turns a snippet's HTML into terminal text: matches bold on a terminal,
/// entities decoded.
fn snippet_text(html: &str, ansi: bool) -> String {
    let (bold, reset) = if ansi {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    // Made safe first: the bold marks are the only escapes that may reach
    // the terminal (a stored CR or U+202E used to).
    crate::report::render::terminal_safe(html)
        .replace("<b>", bold)
        .replace("</b>", reset)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// `text` on one line, fit for a terminal (no control characters or
/// bidi overrides), cut to `max_chars`.
fn shorten(text: &str, max_chars: usize) -> String {
    // Normalised first: C1 characters are cp1252 mojibake to read ("don\u{92}t").
    let one_line = crate::cli::terminal_text(text);
    if one_line.chars().count() <= max_chars {
        one_line
    } else {
        let cut: String = one_line.chars().take(max_chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn print_table(response: &pb::SearchResponse, ansi: bool) -> anyhow::Result<()> {
    let plus = if response.total_hits_is_lower_bound {
        "+"
    } else {
        ""
    };
    outln!("{}{plus} hits", response.total_hits)?;
    if !response.hits.is_empty() {
        outln!()?;
        outln!(
            "{:<14} {:<10} {:<15} {:<24} {:>5}  text",
            "id",
            "date",
            "channel",
            "product",
            "score"
        )?;
    }
    for hit in &response.hits {
        let Some(item) = &hit.item else { continue };
        let score = match (item.nps, item.csat, item.rating) {
            (Some(n), _, _) => format!("nps{n}"),
            (_, Some(c), _) => format!("csat{c}"),
            (_, _, Some(r)) => format!("{r}★"),
            _ => String::new(),
        };
        let text = match &hit.snippet {
            Some(snippet) => snippet_text(&snippet.html, ansi),
            None => shorten(&item.text, 100),
        };
        outln!(
            "{:<14} {:<10} {:<15} {:<24} {:>5}  {}",
            shorten(&item.id, 14),
            date(&item.created_at),
            channel_name(item.channel),
            shorten(&item.product, 24),
            score,
            text
        )?;
    }
    for facet in &response.facets {
        outln!()?;
        outln!("{}:", facet.field)?;
        for count in &facet.counts {
            outln!("  {:<30} {}", shorten(&count.value, 200), count.count)?;
        }
    }
    if !response.next_cursor.is_empty() {
        outln!()?;
        outln!("next page: --cursor {}", response.next_cursor)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by probing: a stored CR or U+202E (right-to-left override)
    /// reached the terminal through the table's snippets and facets.
    #[test]
    fn table_cells_carry_no_control_characters_or_bidi_overrides() {
        let nasty = "ok\r\u{202E}evil\x1b[31m<b>late</b>\u{2066}x &amp; y\n";
        let snippet = snippet_text(nasty, true);
        assert_eq!(snippet, "ok evil [31m\x1b[1mlate\x1b[0m x & y");
        assert_eq!(shorten(nasty, 100), "ok evil [31m<b>late</b> x &amp; y");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("don\u{92}t \u{8a}koda", 100), "don’t Škoda");
    }
}
