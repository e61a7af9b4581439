//! `zoomhook sync rebuild|status` — run directly against the database.

use std::io::Write;

use clap::{Args, Subcommand};

use super::ServerArgs;
use crate::{server, store, sync};

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Drop the synchronised entities and replay the whole event log into them.
    Rebuild(ServerArgs),
    /// Where the sync reader stands: its position, the log head and the lag.
    Status(StatusArgs),
}

/// `zoomhook sync status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (`{"seq", "applied", "head", "lag"}`, as `GET /api/v1/sync`) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs a sync command.
pub async fn run(cmd: SyncCommand) -> anyhow::Result<()> {
    let args = match &cmd {
        SyncCommand::Rebuild(args) => args,
        SyncCommand::Status(status) => &status.server,
    };
    let config = args.load_existing()?;
    let store = store::open(&config.database_url, &server::store_options(&config)).await?;
    match cmd {
        SyncCommand::Rebuild(_) => {
            let started = std::time::Instant::now();
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let position = sync::rebuild(store.as_ref(), |applied, head| {
                if tty {
                    eprint!("\rreplayed {applied} of {head} events");
                    let _ = std::io::stderr().flush();
                }
            })
            .await?;
            if tty {
                eprintln!();
            }
            println!(
                "rebuilt from {} events in {:.1}s; sync is at seq {}",
                position.applied,
                started.elapsed().as_secs_f64(),
                position.seq
            );
        }
        SyncCommand::Status(StatusArgs { json, .. }) => {
            let position = store.reader_position(sync::READER).await?;
            let head = store.head_seq().await?;
            if json {
                let status = crate::api::sync::SyncStatus {
                    seq: position.seq,
                    applied: position.applied,
                    head,
                    lag: (head - position.seq).max(0),
                };
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "sync at seq {} ({} events applied); log head {}; lag {}",
                position.seq,
                position.applied,
                head,
                head - position.seq
            );
        }
    }
    Ok(())
}
