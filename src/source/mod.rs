//! Inbound sources other than webhooks: Zoom's WebSocket event subscriptions
//! (`[sources.NAME] kind = "zoom_websocket"`).
//!
//! `zoom_ws.rs` is one connection loop, `oauth.rs` its access token, `gaps.rs` the record of the
//! intervals it was blind, `board.rs` the live status the API shows. Zoom allows one connection
//! per subscription, so each source runs on the one instance that leads `source:NAME`.

pub mod board;
pub mod gaps;
pub mod oauth;
pub mod zoom_ws;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster;
use crate::server::AppState;

/// The leadership role of a WebSocket source.
pub fn role(name: &str) -> String {
    format!("source:{name}")
}

/// Starts every WebSocket source of the configuration, each under its own lease.
pub fn start(state: &AppState, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    state
        .config
        .sources
        .values()
        .filter_map(|source| Some((source.name.clone(), source.websocket.clone()?)))
        .map(|(name, config)| {
            let state = state.clone();
            let role = role(&name);
            cluster::lead(
                Arc::clone(&state.store),
                Arc::clone(&state.leadership),
                role,
                stop.clone(),
                move |stop| {
                    let source = zoom_ws::ZoomSource {
                        name: name.clone(),
                        config: config.clone(),
                        instance: state.leadership.instance().to_owned(),
                        store: Arc::clone(&state.store),
                        appender: state.appender.clone(),
                        log_advanced: state.log_advanced.clone(),
                        board: Arc::clone(&state.sources),
                        max_event_bytes: state.config.max_body_bytes,
                    };
                    source.run(stop)
                },
            )
        })
        .collect()
}
