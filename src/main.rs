use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;
use zoomhook::config::LogFormat;

/// With `--features jemalloc`, the server's own memory comes from jemalloc (SQLite's stays with
/// the C library's malloc, tuned in `server::memory`). Why it is not the default: docs/deploy.md.
#[cfg(feature = "jemalloc")]
type Allocator = tikv_jemallocator::Jemalloc;
#[cfg(feature = "jemalloc")]
const ALLOCATOR: Allocator = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "count-allocations", not(feature = "jemalloc")))]
type Allocator = std::alloc::System;
#[cfg(all(feature = "count-allocations", not(feature = "jemalloc")))]
const ALLOCATOR: Allocator = std::alloc::System;

#[cfg(all(feature = "jemalloc", not(feature = "count-allocations")))]
#[global_allocator]
static GLOBAL: Allocator = ALLOCATOR;

/// With `--features count-allocations`, every allocation is counted on its way to the build's
/// allocator (`zoomhook_allocations_total` on `/metrics`; see `core::alloc_count`).
#[cfg(feature = "count-allocations")]
#[global_allocator]
static GLOBAL: zoomhook::core::alloc_count::Counting<Allocator> =
    zoomhook::core::alloc_count::Counting(ALLOCATOR);

fn main() -> std::process::ExitCode {
    // Before any thread starts: arenas are created per thread.
    zoomhook::server::memory::limit_malloc_arenas();
    let cli = zoomhook::cli::Cli::parse();
    // Before the runtime starts its threads: a signal disposition is process-wide.
    zoomhook::cli::pipe::quiet_on_closed_pipe(&cli.command);
    let log_format = match cli.command.log_format() {
        Ok(format) => format,
        Err(error) => {
            // A server command loads the same configuration next and fails there with this
            // error; a client command has nothing else to report it.
            if cli.command.server_args().is_none() {
                eprintln!("warning: {error}; logging as text");
            }
            LogFormat::Text
        }
    };
    init_logging(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            fatal(
                log_format,
                &format!("cannot start the async runtime: {error}"),
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(zoomhook::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            fatal(log_format, &format!("{error:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr in `format`, at the level of `ZOOMHOOK_LOG` (default `info`), never above
/// [`secret_safe_levels`].
fn init_logging(format: LogFormat) {
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(log_in_colour())
    });
    // Event fields at the top level beside `message`, as collectors expect, rather than nested
    // under `fields`. No colour: escape codes inside JSON strings help nobody.
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_ansi(false)
    });
    tracing_subscriber::registry()
        .with(log_filter())
        .with(secret_safe_levels())
        .with(text)
        .with(json)
        .init();
}

/// `ZOOMHOOK_LOG` (an `EnvFilter`: `debug`, `warn,zoomhook::server=info`, …); `info` by default.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env("ZOOMHOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The most verbose level of libraries that write secrets at their finer levels; a filter of its
/// own beside `ZOOMHOOK_LOG`, so no setting of the variable (however specific its targets) lets
/// them through. zoomhook's own events never carry a secret at any level.
/// - `tungstenite` logs every WebSocket frame and message at `trace`: event bodies on the stream
///   (with `download_token`s) and, for a `zoom_websocket` source, the handshake request whose URL
///   carries Zoom's access token.
/// - `tokio_postgres` logs every statement's parameters at `debug`: event bodies, subscription
///   secrets and headers.
fn secret_safe_levels() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("tungstenite", LevelFilter::DEBUG)
        .with_target("tokio_tungstenite", LevelFilter::DEBUG)
        .with_target("tokio_postgres", LevelFilter::INFO)
}

/// The error that ends the process: one plain line, or in JSON mode one more JSON object shaped
/// like the log's, so a collector reading stderr takes it like every other line. Written
/// directly rather than through `tracing`, so no `ZOOMHOOK_LOG` filter can swallow it.
fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => {
            let timestamp = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let line = serde_json::json!({
                "timestamp": timestamp, "level": "ERROR", "message": message, "target": "zoomhook",
            });
            eprintln!("{line}");
        }
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>). tracing-subscriber honours `NO_COLOR` on its own, but an explicit
/// `with_ansi` overrides it, so both conditions are decided here. (clap's own help and errors
/// follow the same rules by themselves.)
fn log_in_colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
