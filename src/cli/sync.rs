//! `zoomhook sync rebuild|status` — run directly against the database.

use std::io::Write;

use clap::Subcommand;

use super::ServerArgs;
use crate::{server, store, sync};

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Drop the synchronised entities and replay the whole event log into them.
    Rebuild(ServerArgs),
    /// Where the sync reader stands: its position, the log head and the lag.
    Status(ServerArgs),
}

/// Runs a sync command.
pub async fn run(cmd: SyncCommand) -> anyhow::Result<()> {
    let (SyncCommand::Rebuild(args) | SyncCommand::Status(args)) = &cmd;
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
        SyncCommand::Status(_) => {
            let position = store.reader_position(sync::READER).await?;
            let head = store.head_seq().await?;
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
