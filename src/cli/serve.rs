//! `zoomhook serve`

use anyhow::Context;

use super::ServerArgs;
use crate::server;

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set --listen or ZOOMHOOK_LISTEN)",
                config.listen
            )
        })?;
    server::run(config, listener, server::shutdown_signal()).await
}
