//! `zoomhook token create`

use clap::Subcommand;

use super::ServerArgs;
use crate::{api, server, store};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an admin API token; prints it once (only its hash is stored).
    Create {
        /// A name to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Runs a token command directly against the database (it is how the first token is made).
pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, server: args } => {
            let config = args.load_existing()?;
            let store = store::open(&config.database_url, &server::store_options(&config)).await?;
            let token = api::auth::create_token(store.as_ref(), &name).await?;
            println!("{token}");
            eprintln!("(shown only once; use it as ZOOMHOOK_TOKEN or `Authorization: Bearer …`)");
            Ok(())
        }
    }
}
