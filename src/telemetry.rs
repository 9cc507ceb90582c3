//! Logging set-up: `subscriber` builds (testable, any sink), `init` installs.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn subscriber<W>(
    filter: &str,
    format: LogFormat,
    ansi: bool,
    sink: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("verbatim=info,tantivy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().with_current_span(true).finish()),
    }
}

pub fn init(subscriber: Box<dyn Subscriber + Send + Sync>) {
    // A second init (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
