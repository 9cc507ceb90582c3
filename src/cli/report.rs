//! `verbatim report [QUERY] [filter flags]`: a voice-of-customer report of a
//! running server as an 80-column table, JSON, CSV or one self-contained
//! HTML page.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::search::{build_filter, FilterArgs};
use crate::grpc::pb;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BucketArg {
    Auto,
    Day,
    Week,
    Month,
    Year,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Query (as in `search`); empty reports on every item the filters keep.
    #[arg(default_value = "")]
    pub query: String,
    #[command(flatten)]
    pub server: crate::cli::ServerArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Width of the trend buckets (auto: days up to 2 months, weeks up to 2 years, months up to 400 months, years beyond).
    #[arg(long, value_enum, default_value_t = BucketArg::Auto)]
    pub bucket: BucketArg,
    /// Break themes down by channel, journey_stage, product, language or attributes.KEY.
    #[arg(long)]
    pub segment: Option<String>,
    /// Start of the comparison period (default: the period of equal length before --after).
    #[arg(long)]
    pub compare_after: Option<String>,
    /// End (exclusive) of the comparison period.
    #[arg(long)]
    pub compare_before: Option<String>,
    /// Also test discovery candidates (topics no theme covers) as emerging (adds a discovery, ~1-3 s).
    #[arg(long)]
    pub candidates: bool,
    /// Output: an 80-column table, JSON, CSV or one self-contained HTML page (see --title).
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Title of the HTML page.
    #[arg(long, default_value = "Voice of the customer")]
    pub title: String,
}

pub fn build_request(args: &ReportArgs) -> anyhow::Result<pb::ReportRequest> {
    let time = crate::cli::time_flag;
    Ok(pb::ReportRequest {
        query: args.query.clone(),
        filter: Some(build_filter(&args.filter)?),
        bucket: match args.bucket {
            BucketArg::Auto => pb::ReportBucket::Auto,
            BucketArg::Day => pb::ReportBucket::Day,
            BucketArg::Week => pb::ReportBucket::Week,
            BucketArg::Month => pb::ReportBucket::Month,
            BucketArg::Year => pb::ReportBucket::Year,
        } as i32,
        segment: args.segment.clone().unwrap_or_default(),
        compare_after: time(&args.compare_after, "compare-after")?,
        compare_before: time(&args.compare_before, "compare-before")?,
        include_candidates: args.candidates,
    })
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let request = build_request(&args).context(crate::cli::Usage)?;
    let mut client = crate::cli::connect(&args.server).await?;
    let response = client
        .report(request)
        .await
        .map_err(crate::cli::call_failed)?
        .into_inner();
    let report = crate::grpc::report_from_pb(response);
    let rendered = match args.format {
        FormatArg::Table => crate::report::render::table(&report),
        FormatArg::Json => {
            crate::cli::json_terminal_safe(serde_json::to_string_pretty(&report)?) + "\n"
        }
        FormatArg::Csv => crate::report::render::csv(&report),
        FormatArg::Html => crate::report::render::html(&report, &args.title),
    };
    match &args.out {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .lock()
            .write_all(rendered.as_bytes())
            .map_err(crate::cli::output_failed)?,
    }
    Ok(())
}
