use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // Before any thread starts: arenas are created per thread.
    zoomhook::server::memory::limit_malloc_arenas();
    let cli = zoomhook::cli::Cli::parse();
    // Before the runtime starts its threads: a signal disposition is process-wide.
    zoomhook::cli::pipe::quiet_on_closed_pipe(&cli.command);
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ZOOMHOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(log_in_colour())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(zoomhook::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
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
