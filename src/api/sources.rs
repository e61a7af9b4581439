//! `GET /api/v1/sources`: every inbound source — webhook or Zoom WebSocket — with its state; for
//! WebSocket sources, which instance holds the connection and the recent gaps (the intervals it
//! was not connected, whose events Zoom never re-sends).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::config::{DEFAULT_SOURCE, SourceConfig};
use crate::core::clock::rfc3339;
use crate::core::pattern::EventPattern;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::source::board::SourceState;
use crate::source::gaps::GAP_EVENT;
use crate::store::{EventQuery, Leader};

/// Gaps listed per source.
const RECENT_GAPS: i64 = 10;

/// One gap of a WebSocket source.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct GapView {
    pub from: Option<String>,
    pub to: Option<String>,
    pub duration_ms: Option<i64>,
    pub reason: Option<String>,
    /// The instance that recorded it (the one that connected next).
    pub instance: Option<String>,
    /// The operational event recording it.
    pub event_id: String,
    pub seq: i64,
}

/// One inbound source.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    /// `webhook` or `zoom_websocket`.
    pub kind: String,
    /// Where Zoom posts (webhook sources).
    pub path: Option<String>,
    /// Zoom's event subscription id (WebSocket sources).
    pub subscription_id: Option<String>,
    /// Webhook sources: `receiving`, or `refusing` when no verification is configured.
    /// WebSocket sources: `connected`, `connecting`, `backoff` (waiting to reconnect),
    /// `disconnected`, or `standby` (no instance holds it yet).
    pub state: String,
    /// The instance that holds the WebSocket connection.
    pub leader: Option<String>,
    pub connected_since: Option<String>,
    /// The last frame of any kind from Zoom (known on the leading instance).
    pub last_frame_at: Option<String>,
    /// The last moment the connection was known alive (shared by every instance).
    pub alive_at: Option<String>,
    /// Why the last connection or attempt ended (known on the leading instance).
    pub last_error: Option<String>,
    /// When the last event arrived on this source.
    pub last_event_at: Option<String>,
    /// The most recent gaps, newest first (WebSocket sources).
    pub recent_gaps: Vec<GapView>,
}

/// `GET /api/v1/sources`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SourceList {
    pub data: Vec<SourceView>,
    /// Always `null`: every source is on the one page.
    pub next_cursor: Option<String>,
    /// This instance.
    pub instance: String,
    /// Who leads each single-reader role (sync, fan-out, `source:NAME`).
    pub leaders: Vec<Leader>,
}

/// `GET /api/v1/sources`
#[utoipa::path(get, path = "/api/v1/sources", operation_id = "list_sources", tag = "operations",
    summary = "Every inbound source with its state; WebSocket sources with their leader and recent gaps.",
    responses((status = 200, body = SourceList, description = "Every source"), crate::api::openapi::Errors))]
pub async fn list(State(state): State<AppState>) -> Result<Json<SourceList>, HttpError> {
    let leaders = leaders(&state).await?;
    let mut data = Vec::with_capacity(state.config.sources.len());
    for source in state.config.sources.values() {
        data.push(view(&state, source, &leaders).await?);
    }
    Ok(Json(SourceList {
        data,
        next_cursor: None,
        instance: state.leadership.instance().to_owned(),
        leaders,
    }))
}

/// This instance's leases, and every other instance's as the database reports them.
async fn leaders(state: &AppState) -> Result<Vec<Leader>, HttpError> {
    let mut leaders: Vec<Leader> = state
        .leadership
        .held()
        .into_keys()
        .map(|role| Leader {
            role,
            instance: state.leadership.instance().to_owned(),
        })
        .collect();
    for leader in state.store.leaders().await? {
        if !leaders.iter().any(|l| l.role == leader.role) {
            leaders.push(leader);
        }
    }
    leaders.sort_by(|a, b| a.role.cmp(&b.role));
    Ok(leaders)
}

async fn view(
    state: &AppState,
    source: &SourceConfig,
    leaders: &[Leader],
) -> Result<SourceView, HttpError> {
    let last_event_at = state
        .store
        .list_events(&EventQuery {
            source: Some(source.name.clone()),
            descending: true,
            limit: 1,
            ..Default::default()
        })
        .await?
        .first()
        .map(|e| rfc3339(e.received_at));
    let Some(ws) = &source.websocket else {
        return Ok(SourceView {
            name: source.name.clone(),
            kind: "webhook".into(),
            path: Some(if source.name == DEFAULT_SOURCE {
                "/webhooks/zoom".to_owned()
            } else {
                format!("/webhooks/zoom/{}", source.name)
            }),
            subscription_id: None,
            state: if source.has_any_check() {
                "receiving"
            } else {
                "refusing"
            }
            .into(),
            leader: None,
            connected_since: None,
            last_frame_at: None,
            alive_at: None,
            last_error: None,
            last_event_at,
            recent_gaps: Vec::new(),
        });
    };
    let role = crate::source::role(&source.name);
    let leader = leaders
        .iter()
        .find(|l| l.role == role)
        .map(|l| l.instance.clone());
    let record = state.store.source_record(&source.name).await?;
    let here = state.leadership.held().contains_key(&role);
    let live = state.sources.get(&source.name);
    let (connection_state, connected_since, last_frame_at, last_error) = if here {
        let name = match live.state {
            SourceState::Connected => "connected",
            SourceState::Connecting => "connecting",
            SourceState::Backoff => "backoff",
            SourceState::Standby | SourceState::Stopped => "disconnected",
        };
        (
            name.to_owned(),
            live.connected_since,
            live.last_frame_at,
            live.last_error,
        )
    } else {
        // Another instance holds it: what it shares through the store.
        let connected_since = record.as_ref().and_then(|r| r.connected_since);
        let name = match (&leader, connected_since) {
            (None, _) => "standby",
            (Some(_), Some(_)) => "connected",
            (Some(_), None) => "disconnected",
        };
        (name.to_owned(), connected_since, None, None)
    };
    Ok(SourceView {
        name: source.name.clone(),
        kind: "zoom_websocket".into(),
        path: None,
        subscription_id: Some(ws.subscription_id.clone()),
        state: connection_state,
        leader,
        connected_since: connected_since.map(rfc3339),
        last_frame_at: last_frame_at.map(rfc3339),
        alive_at: record.map(|r| rfc3339(r.alive_at)),
        last_error,
        last_event_at,
        recent_gaps: recent_gaps(state, &source.name).await?,
    })
}

async fn recent_gaps(state: &AppState, name: &str) -> Result<Vec<GapView>, HttpError> {
    let pattern = EventPattern::parse(GAP_EVENT).map_err(|e| {
        HttpError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("gap event pattern: {e}"),
        )
    })?;
    let events = state
        .store
        .list_events(&EventQuery {
            patterns: vec![pattern],
            entity: Some(name.to_owned()),
            descending: true,
            limit: RECENT_GAPS,
            ..Default::default()
        })
        .await?;
    Ok(events
        .iter()
        .map(|e| {
            let object = serde_json::from_slice::<Value>(&e.body)
                .ok()
                .and_then(|b| b.get("payload")?.get("object").cloned())
                .unwrap_or(Value::Null);
            let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
            GapView {
                from: text("from"),
                to: text("to"),
                duration_ms: object.get("duration_ms").and_then(Value::as_i64),
                reason: text("reason"),
                instance: text("instance"),
                event_id: e.id.clone(),
                seq: e.seq,
            }
        })
        .collect())
}
