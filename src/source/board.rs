//! What this instance knows of its WebSocket sources right now, for `GET /api/v1/sources`:
//! written by each source's connection loop, read by the API. Shared state that outlives one
//! instance (who holds the connection, when it was last alive) is in the store instead.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// The connection state of one WebSocket source on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Another instance holds the connection (or nobody yet: waiting for the lease).
    Standby,
    /// Getting a token and opening the connection.
    Connecting,
    Connected,
    /// Waiting before the next attempt after a failure.
    Backoff,
    Stopped,
}

/// One source's live status on this instance.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStatus {
    pub state: SourceState,
    /// Since when the current connection is up (epoch ms).
    pub connected_since: Option<i64>,
    /// The last frame of any kind from Zoom (epoch ms).
    pub last_frame_at: Option<i64>,
    /// Why the last connection or attempt ended.
    pub last_error: Option<String>,
    /// Events received over the WebSocket by this instance (accepted or duplicate).
    pub events_received: u64,
    /// Access tokens fetched by this instance.
    pub tokens_fetched: u64,
}

impl Default for LiveStatus {
    fn default() -> Self {
        LiveStatus {
            state: SourceState::Standby,
            connected_since: None,
            last_frame_at: None,
            last_error: None,
            events_received: 0,
            tokens_fetched: 0,
        }
    }
}

/// The live status of every WebSocket source of this instance.
#[derive(Debug, Default)]
pub struct Board {
    sources: Mutex<BTreeMap<String, LiveStatus>>,
}

impl Board {
    /// Changes the status of `name`.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut LiveStatus)) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        f(sources.entry(name.to_owned()).or_default());
    }

    /// The status of `name` (a source that never ran here is on standby).
    pub fn get(&self, name: &str) -> LiveStatus {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.get(name).cloned().unwrap_or_default()
    }
}
