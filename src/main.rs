use clap::Parser;
use tracing_subscriber::EnvFilter;
use zoomhook::config::LogFormat;

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

/// Logs to stderr in `format`, at the level of `ZOOMHOOK_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(log_in_colour()).init(),
        // Event fields at the top level beside `message`, as collectors expect, rather than
        // nested under `fields`. No colour: escape codes inside JSON strings help nobody.
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
}

/// `ZOOMHOOK_LOG` (an `EnvFilter`: `debug`, `warn,zoomhook::server=info`, …); `info` by default.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env("ZOOMHOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The error that ends the process: one plain line, or in JSON mode one more JSON object, so a
/// collector reading stderr sees it like every other line.
fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => tracing::error!("{message}"),
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
