//! `zoomhook migrate`

use super::ServerArgs;
use crate::{server, store};

/// Applies pending migrations (opening the store applies them) and exits.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let store = store::open(&config.database_url, &server::store_options(&config)).await?;
    let head = store.head_seq().await?;
    println!(
        "migrations applied to {} (event log head: seq {head})",
        store::postgres::redact_url(&config.database_url)
    );
    Ok(())
}
