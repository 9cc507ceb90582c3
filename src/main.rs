use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use verbatim::cli;
use verbatim::config::ServeArgs;

/// Verbatim: a self-hosted service that stores, indexes and searches customer feedback.
#[derive(Parser)]
#[command(name = "verbatim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Stream a CSV or JSONL file of feedback into a running server.
    Import(cli::import::ImportArgs),
    /// Search a running server and print the hits.
    Search(cli::search::SearchArgs),
    /// A voice-of-customer report of a running server (table, JSON, CSV or HTML).
    Report(cli::report::ReportArgs),
    /// Analyse texts with a running server: sentiment per sentence, language, keyphrases.
    Analyze(cli::analyze::AnalyzeArgs),
    /// Create, list, revoke and rotate API keys (edits the keys file; no restart needed).
    Keys(cli::keys::KeysArgs),
    /// Rebuild the search index from the store (stop the server first).
    Reindex(cli::reindex::ReindexArgs),
}

/// mimalloc instead of the system allocator: the server allocates per item
/// and per hit on many threads at once (BENCHMARKS.md, "A faster allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One async worker per core and one more: searches run directly on at
    // most all but one of them (`engine::run_search`), so one always stays
    // free for every other call without handing a worker over per search.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores + 1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Import(args) => cli::import::run(args).await,
            Command::Search(args) => cli::search::run(args).await,
            Command::Report(args) => cli::report::run(args).await,
            Command::Analyze(args) => cli::analyze::run(args).await,
            Command::Reindex(args) => cli::reindex::run(args).await,
            Command::Keys(args) => cli::keys::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output went away (`| head -1`): nothing to say.
        Err(error) if error.downcast_ref::<cli::OutputClosed>().is_some() => ExitCode::SUCCESS,
        Err(error) => {
            let message = verbatim::error::chain_text(&error);
            tracing::error!(error = message, "fatal");
            eprintln!("error: {message}");
            if error.downcast_ref::<cli::import::RowsRejected>().is_some() {
                ExitCode::from(cli::import::EXIT_ROWS_REJECTED)
            } else if error.downcast_ref::<cli::Usage>().is_some() {
                ExitCode::from(cli::EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    verbatim::telemetry::init(verbatim::telemetry::subscriber(
        &config.log_filter,
        config.log_format,
        std::io::stderr().is_terminal(),
        std::io::stderr,
    ));
    // Before the first log line and before anything binds: from the moment
    // the server says "starting", a SIGTERM is a clean shutdown.
    let mut shutdown = Box::pin(verbatim::app::shutdown_signal());
    tracing::info!(config = ?config, version = env!("CARGO_PKG_VERSION"), "starting");
    // A signal during the start (an index rebuilt from the store takes about
    // a minute a million items) stops it at once: found by probing, SIGTERM
    // waited for the whole rebuild, past a service manager's stop timeout.
    // Nothing is served yet, and everything the start writes survives a
    // crash at any point (the store commits atomically, a rebuild that did
    // not commit is done again), so the process just ends.
    let app = tokio::select! {
        app = verbatim::app::App::build(&config) => app?,
        () = &mut shutdown => {
            tracing::info!("stopped while starting; an unfinished index rebuild starts over at the next start");
            // Without the exit handlers: other threads (a rebuild, the
            // models) still run, and C++ static destructors under them
            // could crash the exit. The log is unbuffered.
            #[cfg(unix)]
            // SAFETY: _exit ends the process; nothing runs after it.
            unsafe {
                libc::_exit(0)
            };
            #[cfg(not(unix))]
            std::process::exit(0);
        }
    };
    app.run_until(shutdown).await
}
