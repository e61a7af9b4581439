//! `/api/v1/sync`: where the entity sync reader stands, and the log entries it quarantined.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use crate::core::clock::rfc3339;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::QuarantinedEvent;
use crate::sync::READER;

/// `GET /api/v1/sync`
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The last `seq` the reader consumed (applied or quarantined).
    pub seq: i64,
    /// How many entries it has consumed in all.
    pub applied: i64,
    /// The log head.
    pub head: i64,
    /// `head - seq`: how far behind the reader is.
    pub lag: i64,
}

/// `GET /api/v1/sync`
pub async fn status(State(state): State<AppState>) -> Result<Json<SyncStatus>, HttpError> {
    let position = state.store.reader_position(READER).await?;
    let head = state.store.head_seq().await?;
    Ok(Json(SyncStatus {
        seq: position.seq,
        applied: position.applied,
        head,
        lag: (head - position.seq).max(0),
    }))
}

/// Query string of `GET /api/v1/sync/quarantine`.
#[derive(Debug, Default, Deserialize)]
pub struct QuarantineParams {
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

/// One quarantined log entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct QuarantineView {
    pub seq: i64,
    /// The event's id (`GET /api/v1/events/{id}` shows it with its body).
    pub event_id: String,
    pub event: String,
    pub error: String,
    pub quarantined_at: String,
}

/// A page of quarantined entries.
#[derive(Debug, Serialize, Deserialize)]
pub struct QuarantinePage {
    pub data: Vec<QuarantineView>,
    /// Pass as `after_seq` for the next page; `null` at the end.
    pub next_cursor: Option<i64>,
}

impl From<QuarantinedEvent> for QuarantineView {
    fn from(q: QuarantinedEvent) -> Self {
        QuarantineView {
            seq: q.seq,
            event_id: q.event_id,
            event: q.event,
            error: q.error,
            quarantined_at: rfc3339(q.quarantined_at),
        }
    }
}

/// `GET /api/v1/sync/quarantine` — entries sync skipped because they could not be applied.
pub async fn quarantine(
    State(state): State<AppState>,
    Query(params): Query<QuarantineParams>,
) -> Result<Json<QuarantinePage>, HttpError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::bad_request("`limit` must be between 1 and 1000"));
    }
    let rows = state
        .store
        .list_quarantined(READER, params.after_seq.unwrap_or(0), limit)
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|q| q.seq))
        .flatten();
    Ok(Json(QuarantinePage {
        data: rows.into_iter().map(QuarantineView::from).collect(),
        next_cursor,
    }))
}
