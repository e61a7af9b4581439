//! The command line: one file per command. Server-side commands (`serve`, `demo`, `migrate`,
//! `token create`, `config check`) read the configuration; client commands (`events …`) talk to a
//! running server over the admin API; `send` and `simulate` act like Zoom.

pub mod client;
pub mod completions;
pub mod config_check;
pub mod config_example;
pub mod demo;
pub mod events;
pub mod health;
pub mod listen;
pub mod meetings;
pub mod migrate;
pub mod pipe;
pub mod replay;
pub mod send;
pub mod serve;
pub mod show_time;
pub mod simulate;
mod stream_client;
pub mod subs;
pub mod sync;
mod tail;
pub mod time_filter;
pub mod token;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, Flags, LogFormat};

/// zoomhook — receive, verify, store and fan out Zoom events.
#[derive(Debug, Parser)]
#[command(name = "zoomhook", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by the commands that read the server configuration.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "ZOOMHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Database URL: sqlite://PATH (default sqlite://zoomhook.db) or postgres://…
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Log lines on stderr: text (default) or json, one object per line (ZOOMHOOK_LOG_FORMAT).
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

impl ServerArgs {
    /// Loads and validates the configuration (file → environment → these flags).
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref(), &self.flags())?)
    }

    /// The log format from the same layers as [`ServerArgs::load`]; read before logging starts.
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        crate::config::load_log_format(self.config.as_deref(), &self.flags())
    }

    fn flags(&self) -> Flags {
        Flags {
            listen: self.listen.clone(),
            database: self.database.clone(),
            log_format: self.log_format.clone(),
        }
    }

    /// Loads the configuration for a command that works on an existing database (`sync`,
    /// `token create`). Opening a SQLite path creates the file, so a mistyped path or another
    /// working directory used to yield an empty database and a reassuring answer (`lag 0`);
    /// a missing file is refused instead. PostgreSQL databases are never created by opening.
    pub fn load_existing(&self) -> anyhow::Result<Config> {
        let config = self.load()?;
        if let Some(path) = config.database_url.strip_prefix("sqlite://")
            && !path.is_empty()
            && !std::path::Path::new(path).exists()
        {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "?".into());
            bail!(
                "no database file at {path} (working directory {cwd}); nothing was created\n\
                 hint: pass --database sqlite://PATH (or set ZOOMHOOK_DATABASE_URL) to the server's \
                 database, or run `zoomhook serve` (or `zoomhook migrate`) first to create it"
            );
        }
        Ok(config)
    }
}

/// Where the CLI finds a running server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the zoomhook server.
    #[arg(long, env = "ZOOMHOOK_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin API token.
    #[arg(long, env = "ZOOMHOOK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where `send` and `simulate` post events: the default source of the server the other client
/// commands talk to, unless `--url` names another endpoint.
#[derive(Debug, Clone, Args)]
pub struct WebhookTarget {
    /// Base URL of the zoomhook server; events go to its default source, /webhooks/zoom.
    #[arg(long, env = "ZOOMHOOK_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Full endpoint URL (any receiver, or another source's path); overrides --server.
    #[arg(long)]
    pub url: Option<String>,
}

impl WebhookTarget {
    /// The URL events are posted to.
    pub fn endpoint(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => format!("{}/webhooks/zoom", self.server.trim_end_matches('/')),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    ///
    /// Every setting is a TOML key of --config and a ZOOMHOOK_<KEY> variable (see the README's
    /// configuration table). Limits against hostile clients: max_connections (auto: from
    /// ulimit -n), header_read_timeout (10s), keep_alive_timeout (60s),
    /// http2_max_concurrent_streams (64), max_body_bytes (2 MiB), read_timeout (10s),
    /// max_body_bytes_in_flight (64 MiB).
    Serve(ServerArgs),
    /// Run the server and feed it a signed, realistic meeting lifecycle.
    Demo(demo::DemoArgs),
    /// Sign and POST one Zoom event (or run the URL-validation handshake) exactly as Zoom does.
    Send(send::SendArgs),
    /// Load generator: realistic signed events at a target rate; prints rate and latency.
    Simulate(simulate::SimulateArgs),
    /// Query the event log of a running server.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Check the configuration (`config check`) or print an annotated example (`config example`).
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Manage admin API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Apply database migrations and exit.
    Migrate(ServerArgs),
    /// Ask a running server's /readyz; exit 0 only when it is ready (container health checks).
    Health(health::HealthArgs),
    /// Synchronised meetings of a running server.
    #[command(subcommand)]
    Meetings(meetings::MeetingsCommand),
    /// Attendance of one meeting occurrence: who attended and for how long (`--csv` for a report).
    Attendance(meetings::AttendanceArgs),
    /// Outbound subscriptions (webhooks and email) of a running server.
    #[command(subcommand)]
    Subs(subs::SubsCommand),
    /// Deliveries of a subscription: list, show with attempts, retry.
    #[command(subcommand)]
    Deliveries(subs::DeliveriesCommand),
    /// Re-deliver a range of events (by seq, time or entity) to a subscription, with progress.
    Replay(replay::ReplayArgs),
    /// Forward a running server's live events to a local app, signed as Zoom signs (local
    /// development); resumes where it stopped.
    Listen(listen::ListenArgs),
    /// Entity sync: rebuild from the log, or show where it stands.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Print a shell completion script: `zoomhook completions bash > ~/.local/share/bash-completion/completions/zoomhook`.
    Completions(completions::CompletionsArgs),
}

impl Command {
    /// The server options of a command that reads the server configuration (and so takes
    /// `--config` and `--log-format`); `None` for client commands.
    pub fn server_args(&self) -> Option<&ServerArgs> {
        match self {
            Command::Serve(args) | Command::Migrate(args) => Some(args),
            Command::Demo(args) => Some(&args.server),
            Command::Health(args) => Some(&args.server),
            Command::Config(config_check::ConfigCommand::Check(args)) => Some(args),
            Command::Token(token::TokenCommand::Create { server, .. }) => Some(server),
            Command::Sync(sync::SyncCommand::Rebuild(args)) => Some(args),
            Command::Sync(sync::SyncCommand::Status(args)) => Some(&args.server),
            _ => None,
        }
    }

    /// The log format this command logs in: for server commands from their configuration, for
    /// client commands from `ZOOMHOOK_LOG_FORMAT` alone.
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.server_args() {
            Some(args) => args.log_format(),
            None => crate::config::load_log_format(None, &Flags::default()),
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Events(cmd) => events::run(cmd).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Config(cmd) => config_check::run(cmd),
        Command::Token(cmd) => token::run(cmd).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Meetings(cmd) => meetings::run(cmd).await,
        Command::Attendance(args) => meetings::attendance(args).await,
        Command::Sync(cmd) => sync::run(cmd).await,
        Command::Subs(cmd) => subs::run(cmd).await,
        Command::Deliveries(cmd) => subs::deliveries(cmd).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Completions(args) => completions::run(args),
    }
}
