//! Command-line clients of the gRPC API (import, search, report) and offline
//! maintenance (reindex). They talk to the server only through the public
//! API, like any other client.

/// `println!` that returns the write's error (`output_failed`) instead of
/// panicking: `verbatim search ... | head -1` closes the pipe early, and
/// `println!` then panicked with a backtrace.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::cli::output_failed)
    }};
}

/// `outln!` without the line's end.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*).map_err($crate::cli::output_failed)
    }};
}

pub mod analyze;
mod encoding;
pub mod import;
pub mod keys;
pub mod reindex;
pub mod report;
pub mod search;

use crate::grpc::pb::feedback_service_client::FeedbackServiceClient;
use anyhow::Context;
use tonic::transport::Channel;

/// The `--server` and `--token` flags shared by the client commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArg {
    /// Server address.
    #[arg(
        long = "server",
        env = "VERBATIM_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_parser = server_url
    )]
    pub address: String,
    /// API key sent as `authorization: Bearer <token>` (`verbatim keys add` prints one).
    #[arg(long, env = "VERBATIM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust for an `https://` server (besides the system's roots).
    #[arg(long, env = "VERBATIM_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for a server that requires one (with --client-key).
    #[arg(long, env = "VERBATIM_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "VERBATIM_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
}

/// Adds the API key to every call.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The API client of the CLI commands.
pub type Client =
    FeedbackServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// The `--server` value as a URL: `http://` or `https://` and a host, with
/// `http://` when the scheme is left out. A usage error otherwise (another
/// scheme such as `ftp://` used to be spoken to as plain HTTP).
fn server_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let uri: http::Uri = url.parse().map_err(|e| {
        format!("not a server address ({e}); expected http://HOST:PORT or https://HOST:PORT")
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "the scheme must be http:// or https://, got {url:?}"
            ))
        }
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(format!("no host in {url:?}; expected http://HOST:PORT")),
    }
}

/// Connects to a server such as `http://127.0.0.1:50051` (the scheme may be omitted).
pub async fn connect(server: &ServerArg) -> anyhow::Result<Client> {
    let url = server_url(&server.address).map_err(|e| anyhow::anyhow!("--server: {e}"))?;
    let token = match &server.token {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| anyhow::anyhow!("--token: not a valid header value"))?,
        ),
        None => None,
    };
    // HTTP/2 pings find a connection whose server vanished without closing
    // it (a lost host, a partition): the call then fails, and an import
    // retries, instead of waiting forever for an answer.
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .with_context(|| format!("--server: invalid address {url}"))?
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &server.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("--ca-cert {}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&server.client_cert, &server.client_key) {
            let cert =
                std::fs::read(cert).with_context(|| format!("--client-cert {}", cert.display()))?;
            let key =
                std::fs::read(key).with_context(|| format!("--client-key {}", key.display()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).context("--server: TLS settings")?;
    }
    let channel = endpoint.connect().await.with_context(|| {
        format!("cannot connect to the server at {url} (is `verbatim serve` running?)")
    })?;
    let mut client = FeedbackServiceClient::with_interceptor(channel, BearerToken(token))
        .max_decoding_message_size(crate::domain::limits::MAX_RESPONSE_BYTES)
        .max_encoding_message_size(crate::domain::limits::MAX_MESSAGE_BYTES);
    // A connection succeeds before the server has said a word: found by
    // probing, a port that accepted and never answered (a hung process, a
    // service of another kind) held each call until the keep-alive gave up
    // (50 s), and an import retried that for 9 minutes. One cheap call
    // first: any answer (an error too) is a server.
    let mut probe = tonic::Request::new(crate::grpc::pb::StatsRequest::default());
    probe.set_timeout(ANSWER_TIMEOUT);
    let answered = tokio::time::timeout(ANSWER_TIMEOUT, client.stats(probe)).await;
    let silent = match answered {
        Err(_elapsed) => true,
        // A call past its deadline: DEADLINE_EXCEEDED (an older server:
        // CANCELLED, tonic's own timer).
        Ok(result) => result.is_err_and(|status| {
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            )
        }),
    };
    anyhow::ensure!(
        !silent,
        "the server at {url} accepted the connection but did not answer within {} s \
         (is it a `verbatim serve`, and is it running normally?)",
        ANSWER_TIMEOUT.as_secs()
    );
    Ok(client)
}

/// How long `connect` waits for the server's first answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A stored text as a terminal may show it: normalised (C1 characters read
/// as cp1252) and then without control characters or bidi overrides.
pub fn terminal_text(text: &str) -> String {
    crate::report::render::terminal_safe(&crate::domain::normalize_text(text))
}

/// JSON from `serde_json` with the characters a terminal may act on
/// written as `\uXXXX` escapes: DEL, C1 controls (U+0080-009F: 8-bit CSI
/// and OSC on xterm-like terminals), bidi controls and line separators.
/// `serde_json` escapes only U+0000-001F; the value is the same JSON (these
/// characters occur only inside strings). Found by review: stored texts
/// printed by `search --json` reordered or styled the terminal.
pub fn json_terminal_safe(json: String) -> String {
    let acts = |c: char| {
        matches!(c as u32, 0x7F..=0x9F | 0x2028 | 0x2029)
            || crate::report::render::is_bidi_control(c)
    };
    if !json.chars().any(acts) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if acts(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads a channel name as written in files and flags: "review",
/// "Support Ticket", "CHANNEL_SUPPORT_TICKET" all work.
pub fn normalise_enum_name(raw: &str, prefix: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    lower
        .strip_prefix(prefix)
        .map(str::to_string)
        .unwrap_or(lower)
}

pub fn parse_channel(raw: &str) -> Option<crate::domain::Channel> {
    crate::domain::Channel::parse(&normalise_enum_name(raw, "channel_"))
}

pub fn parse_stage(raw: &str) -> Option<crate::domain::JourneyStage> {
    crate::domain::JourneyStage::parse(&normalise_enum_name(raw, "journey_stage_"))
}

/// Exit status of a usage error: a flag value the command cannot use, as
/// clap exits on the ones it finds itself.
pub const EXIT_USAGE: u8 = 2;

/// A failed call as the command reports it: the code and message; a request
/// the server refused as invalid (a flag value it checks: `--nps 9..1`,
/// `--theme BAD`) is a usage error (`Usage`), as one the client finds.
pub fn call_failed(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        // "invalid arguments: " says the code already (it read "invalid
        // arguments: Client specified an invalid argument: ...").
        tonic::Code::InvalidArgument => anyhow::anyhow!("{}", status.message()).context(Usage),
        code => anyhow::anyhow!("{code}: {}", status.message()),
    }
}

/// Context of an error in the flags, found after clap's parse (`--nps abc`,
/// `--attr nokey`): the command exits `EXIT_USAGE`, as for clap's own.
#[derive(Debug)]
pub struct Usage;

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid arguments")
    }
}

/// Standard output was closed by its reader (`verbatim search ... | head
/// -1`, `| grep -q`): the command stops writing and exits with success and
/// no message, as `grep` and `rg` do.
#[derive(Debug)]
pub struct OutputClosed;

impl std::fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed")
    }
}

impl std::error::Error for OutputClosed {}

/// An error writing to standard output as the command's error: a closed
/// pipe is `OutputClosed`, anything else says what failed.
pub fn output_failed(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(OutputClosed)
    } else {
        anyhow::Error::new(error).context("cannot write to standard output")
    }
}

/// The value of a time flag (`--after 2026-03-14`), its errors naming the flag.
pub fn time_flag(
    raw: &Option<String>,
    flag: &str,
) -> anyhow::Result<Option<prost_types::Timestamp>> {
    raw.as_deref()
        .map(|t| parse_time(t).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

/// Parses "2026-03-14T09:21:05Z", "2026-03-14" or unix seconds.
pub fn parse_time(raw: &str) -> Result<prost_types::Timestamp, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<i64>() {
        return Ok(prost_types::Timestamp { seconds, nanos: 0 });
    }
    let parsed = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .or_else(|_| {
            time::Date::parse(raw, time::macros::format_description!("[year]-[month]-[day]"))
                .map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| {
            format!(
                "expected RFC 3339 (2026-03-14T09:21:05Z), a date (2026-03-14) or unix seconds, got {:?}",
                crate::domain::shown(raw)
            )
        })?;
    Ok(prost_types::Timestamp {
        seconds: parsed.unix_timestamp(),
        nanos: parsed.nanosecond() as i32,
    })
}

#[cfg(test)]
mod tests {

    /// Terminal controls in JSON output are escapes of the same value.
    #[test]
    fn json_output_escapes_what_a_terminal_acts_on() {
        let text = "ok \u{9b}31m red \u{202e}evil\u{2066} \u{7f}\u{2028} é 配送";
        let json = serde_json::to_string_pretty(&serde_json::json!({ "text": text })).unwrap();
        let safe = json_terminal_safe(json);
        assert!(
            safe.contains("\\u009b31m") && safe.contains("\\u202e"),
            "{safe}"
        );
        assert!(!safe
            .chars()
            .any(|c| matches!(c as u32, 0x7F..=0x9F | 0x2028..=0x202E | 0x2066..=0x2069)));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["text"], text);
        assert!(safe.contains("é 配送"));
    }

    use super::*;

    #[test]
    fn enum_names_are_read_leniently() {
        assert_eq!(
            parse_channel("Support Ticket"),
            Some(crate::domain::Channel::SupportTicket)
        );
        assert_eq!(
            parse_channel("CHANNEL_REVIEW"),
            Some(crate::domain::Channel::Review)
        );
        assert_eq!(
            parse_stage("journey_stage_onboarding"),
            Some(crate::domain::JourneyStage::Onboarding)
        );
        assert_eq!(parse_channel("fax"), None);
    }

    #[test]
    fn server_addresses_are_http_urls_with_a_host() {
        assert_eq!(server_url("127.0.0.1:1").unwrap(), "http://127.0.0.1:1");
        assert_eq!(server_url(" https://h:2 ").unwrap(), "https://h:2");
        for bad in ["ftp://h:21", "http://", "h o:1", "unix:///tmp/s", ""] {
            assert!(server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_in_three_forms() {
        assert_eq!(parse_time("1970-01-02").unwrap().seconds, 86_400);
        assert_eq!(
            parse_time("1970-01-01T00:00:10.5Z").unwrap().nanos,
            500_000_000
        );
        assert_eq!(parse_time("42").unwrap().seconds, 42);
        assert!(parse_time("yesterday").is_err());
    }
}
