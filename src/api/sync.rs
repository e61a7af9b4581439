//! `/api/v1/sync`: where the entity sync reader stands, and the log entries it quarantined.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::extract::Query;
use crate::api::model::Page;
use crate::core::clock::rfc3339;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::QuarantinedEvent;
use crate::sync::READER;

/// `GET /api/v1/sync`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
#[utoipa::path(get, path = "/api/v1/sync", operation_id = "get_sync_status", tag = "operations",
    summary = "Where the entity sync reader stands in the log.",
    responses((status = 200, body = SyncStatus, description = "Where sync stands"), crate::api::openapi::Errors))]
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
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuarantineParams {
    /// Entries after this seq.
    pub after_seq: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// One quarantined log entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuarantineView {
    pub seq: i64,
    /// The event's id (`GET /api/v1/events/{id}` shows it with its body).
    pub event_id: String,
    pub event: String,
    pub error: String,
    pub quarantined_at: String,
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
#[utoipa::path(get, path = "/api/v1/sync/quarantine", operation_id = "list_quarantined", tag = "operations",
    summary = "Log entries sync skipped because they could not be applied.",
    params(QuarantineParams),
    responses((status = 200, body = Page<QuarantineView>, description = "A page of quarantined entries"), crate::api::openapi::Errors))]
pub async fn quarantine(
    State(state): State<AppState>,
    Query(params): Query<QuarantineParams>,
) -> Result<Json<Page<QuarantineView>>, HttpError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::bad_request("`limit` must be between 1 and 1000"));
    }
    let cursor = crate::api::model::seq_cursor(params.cursor.as_deref())?.unwrap_or(0);
    let after = params.after_seq.unwrap_or(0).max(cursor);
    let rows = state.store.list_quarantined(READER, after, limit).await?;
    let data = rows.into_iter().map(QuarantineView::from).collect();
    Ok(Json(Page::of(data, limit, |q: &QuarantineView| {
        q.seq.to_string()
    })))
}
