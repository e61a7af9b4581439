//! `zoomhook config check` (and the `config` command group; `example` is in `config_example.rs`)

use clap::Subcommand;

use super::ServerArgs;
use crate::store::postgres::redact_url;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (file, environment, flags) and print the result without secrets.
    Check(ServerArgs),
    /// Print an annotated example configuration file with every key and its default:
    /// `zoomhook config example > zoomhook.toml`.
    Example,
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check(args) => check(args),
        ConfigCommand::Example => super::config_example::run(),
    }
}

/// Validates and summarises the configuration; fails with the bad key named.
fn check(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    println!("configuration OK");
    println!("  listen            {}", config.listen);
    println!("  database          {}", redact_url(&config.database_url));
    println!(
        "  admin token       {}",
        if config.admin_token.is_some() {
            "configured"
        } else {
            "from the store (created at first start)"
        }
    );
    println!("  max body          {} bytes", config.max_body_bytes);
    println!("  read timeout      {:?}", config.read_timeout);
    let limits = &config.limits;
    println!(
        "  connections       at most {}{}; header timeout {:?}, idle timeout {:?}, {} HTTP/2 streams each",
        limits.effective_max_connections(),
        if limits.max_connections.is_none() {
            " (auto, from ulimit -n)"
        } else {
            ""
        },
        limits.header_read_timeout,
        limits.keep_alive_timeout,
        limits.http2_max_concurrent_streams
    );
    println!(
        "  body budget       {} bytes in flight",
        limits.max_body_bytes_in_flight
    );
    println!(
        "  dedupe window     {}",
        humantime::format_duration(config.dedupe_window)
    );
    println!("  log format        {}", config.log_format.as_str());
    for source in config.sources.values() {
        if let Some(ws) = &source.websocket {
            let grant = match &ws.grant {
                crate::config::OAuthGrant::AccountCredentials { .. } => "account_credentials",
                crate::config::OAuthGrant::ClientCredentials => "client_credentials",
            };
            println!(
                "  source {:<10} Zoom WebSocket {}?subscriptionId={} ({grant} via {}; heartbeat {}s, dead after {}s of silence)",
                source.name,
                ws.websocket_url,
                ws.subscription_id,
                ws.oauth_url,
                ws.heartbeat_interval.as_secs_f64(),
                ws.silence_timeout.as_secs_f64(),
            );
            continue;
        }
        let path = if source.name == crate::config::DEFAULT_SOURCE {
            "/webhooks/zoom".to_owned()
        } else {
            format!("/webhooks/zoom/{}", source.name)
        };
        let mut checks = Vec::new();
        match source.secrets.len() {
            0 => {}
            1 => checks.push("signature".to_owned()),
            n => checks.push(format!("signature ({n} secrets, rotation)")),
        }
        if source.basic_auth.is_some() {
            checks.push("basic".into());
        }
        if source.token_auth.is_some() {
            checks.push("bearer token".into());
        }
        if let Some(h) = &source.custom_header {
            checks.push(format!("header {}", h.name));
        }
        if source.verification_token.is_some() {
            checks.push("legacy verification token".into());
        }
        if !source.allow_ips.is_empty() {
            checks.push(format!("{} allowed networks", source.allow_ips.len()));
        }
        let checks = if checks.is_empty() {
            "NONE — every request will be refused; set a secret".to_owned()
        } else {
            checks.join(", ")
        };
        println!(
            "  source {:<10} {path}: {checks}; timestamp tolerance {}s",
            source.name,
            source.timestamp_tolerance.as_secs()
        );
    }
    Ok(())
}
