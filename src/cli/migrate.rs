//! `zoomhook migrate`

use super::ServerArgs;
use crate::{server, store};

/// Applies pending migrations (opening the store applies them) and exits.
///
/// Unlike `sync` and `token create`, `migrate` creates a SQLite file that does not exist yet: it
/// is the command that prepares a database (before a first `token create`, or ahead of a
/// deployment), so creating is what was asked — and it says so.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let created = config
        .database_url
        .strip_prefix("sqlite://")
        .filter(|path| !path.is_empty() && !std::path::Path::new(path).exists());
    if let Some(path) = created {
        eprintln!("creating a new database file at {path}");
    }
    let store = store::open(&config.database_url, &server::store_options(&config)).await?;
    let head = store.head_seq().await?;
    println!(
        "migrations applied to {} (event log head: seq {head})",
        store::postgres::redact_url(&config.database_url)
    );
    Ok(())
}
