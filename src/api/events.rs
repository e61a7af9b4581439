//! `/api/v1/events`: query the event log and fetch single events with their raw body.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::api::extract::{Body, Path, Query};
use crate::core::clock::{parse_time, rfc3339};
use crate::core::pattern::EventPattern;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::{EventQuery, StoredEvent};

/// Query string of `GET /api/v1/events`.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Comma-separated event patterns (`meeting.*,user.created`).
    pub event: Option<String>,
    /// Received at or after (RFC 3339 or epoch ms).
    pub since: Option<String>,
    /// Received before (RFC 3339 or epoch ms).
    pub until: Option<String>,
    /// Object id or uuid.
    pub entity: Option<String>,
    pub source: Option<String>,
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
    pub limit: Option<i64>,
    /// Include each event's raw body.
    pub include_body: Option<bool>,
}

/// One event as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventView {
    pub seq: i64,
    pub id: String,
    pub source: String,
    pub event: String,
    pub event_ts: Option<i64>,
    pub event_time: Option<String>,
    pub account_id: Option<String>,
    pub object_id: Option<String>,
    pub object_uuid: Option<String>,
    pub received_at: String,
    pub request_id: Option<String>,
    /// The request body exactly as received (a JSON string holding the original text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventPage {
    pub data: Vec<EventView>,
    /// Pass as `after_seq` (or `before_seq` with `order=desc`) for the next page; `null` at the end.
    pub next_cursor: Option<i64>,
}

impl EventView {
    fn from_stored(e: StoredEvent, include_body: bool) -> EventView {
        EventView {
            seq: e.seq,
            event_time: e.event_ts.map(rfc3339),
            received_at: rfc3339(e.received_at),
            body: include_body.then(|| String::from_utf8_lossy(&e.body).into_owned()),
            id: e.id,
            source: e.source,
            event: e.event,
            event_ts: e.event_ts,
            account_id: e.account_id,
            object_id: e.object_id,
            object_uuid: e.object_uuid,
            request_id: e.request_id,
        }
    }
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<i64>, HttpError> {
    value
        .map(|v| parse_time(v).ok_or_else(|| HttpError::bad_request(format!("`{name}` must be RFC 3339 (2024-05-01T00:00:00Z) or epoch milliseconds, got {v:?}"))))
        .transpose()
}

/// Turns query parameters into a store query, rejecting bad values with a clear message.
pub fn to_query(p: &ListParams) -> Result<EventQuery, HttpError> {
    let patterns = match &p.event {
        Some(list) => {
            EventPattern::parse_list(list).map_err(|e| HttpError::bad_request(e.to_string()))?
        }
        None => Vec::new(),
    };
    let descending = match p.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "`order` must be asc or desc, got {other:?}"
            )));
        }
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=crate::store::query::MAX_PAGE).contains(&limit) {
        return Err(HttpError::bad_request(format!(
            "`limit` must be between 1 and {}",
            crate::store::query::MAX_PAGE
        )));
    }
    Ok(EventQuery {
        patterns,
        since: time_param("since", p.since.as_deref())?,
        until: time_param("until", p.until.as_deref())?,
        entity: p.entity.clone().filter(|s| !s.is_empty()),
        source: p.source.clone().filter(|s| !s.is_empty()),
        after_seq: p.after_seq,
        before_seq: p.before_seq,
        descending,
        limit,
    })
}

/// `GET /api/v1/events`
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<EventPage>, HttpError> {
    let query = to_query(&params)?;
    let events = state.store.list_events(&query).await?;
    let full_page = events.len() as i64 == query.limit;
    let next_cursor = full_page.then(|| events.last().map(|e| e.seq)).flatten();
    let include_body = params.include_body.unwrap_or(false);
    Ok(Json(EventPage {
        data: events
            .into_iter()
            .map(|e| EventView::from_stored(e, include_body))
            .collect(),
        next_cursor,
    }))
}

/// `GET /api/v1/events/{id}` — metadata and the raw body.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EventView>, HttpError> {
    let event = find(&state, &id).await?;
    Ok(Json(EventView::from_stored(event, true)))
}

/// `GET /api/v1/events/{id}/raw` — the body exactly as Zoom sent it.
pub async fn raw(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let event = find(&state, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], event.body).into_response())
}

async fn find(state: &AppState, id: &str) -> Result<StoredEvent, HttpError> {
    state
        .store
        .get_event(id)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no event with id {id:?}")))
}

/// The body of `POST /api/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    /// `family.action`, e.g. `case.updated`.
    pub event: String,
    pub payload: serde_json::Value,
    /// Publishing twice with the same key stores the event once (within the dedupe window).
    pub idempotency_key: Option<String>,
    /// When it happened (epoch ms); default now.
    pub event_ts: Option<i64>,
}

/// `POST /api/v1/events` — the team's own applications publish their own events into the log,
/// to be fanned out like Zoom's (same filters, signing, retries, replay). Source `api`.
pub async fn publish(
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Response, HttpError> {
    let input: PublishInput = crate::api::subscriptions::json_body(&body)?;
    let valid_name = input.event.len() <= 200
        && input.event.contains('.')
        && input
            .event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid_name {
        return Err(HttpError::bad_request(
            "`event` must look like family.action (letters, digits, . _ -), e.g. case.updated",
        ));
    }
    if input.event.starts_with("zoomhook.")
        || input.event == crate::zoom::envelope::URL_VALIDATION_EVENT
    {
        return Err(HttpError::bad_request(format!(
            "`{}` is reserved",
            input.event
        )));
    }
    if !input.payload.is_object() {
        return Err(HttpError::bad_request("`payload` must be a JSON object"));
    }
    let now = crate::core::clock::now_millis();
    let event = serde_json::json!({
        "event": input.event,
        "event_ts": input.event_ts.unwrap_or(now),
        "payload": input.payload,
    });
    let bytes = axum::body::Bytes::from(event.to_string());
    let envelope = crate::zoom::envelope::Envelope::parse(&bytes)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let idempotency_key = input.idempotency_key.filter(|k| !k.is_empty());
    let key = idempotency_key.as_ref().map(|k| format!("api:{k}"));
    let no_key = key.is_none();
    let mut new_event = crate::store::NewEvent::from_envelope(&envelope, "api", bytes, key, now);
    if no_key {
        // Without an idempotency key every publish is a new event, even two identical ones in
        // the same millisecond: the semantic key is made unique.
        new_event.semantic_key = format!("api-unique:{}", new_event.id);
    }
    let (status, outcome, id, seq) = match state.appender.append(new_event).await? {
        crate::store::AppendOutcome::Appended { id, seq } => {
            state.log_advanced.send_modify(|n| *n = n.wrapping_add(1));
            (axum::http::StatusCode::CREATED, "accepted", id, seq)
        }
        crate::store::AppendOutcome::Duplicate { id, seq } => {
            if let Some(key) = &idempotency_key {
                same_request(&state, key, &id, &event).await?;
            }
            (axum::http::StatusCode::OK, "duplicate", id, seq)
        }
    };
    Ok((
        status,
        Json(serde_json::json!({"status": outcome, "id": id, "seq": seq})),
    )
        .into_response())
}

/// A repeated idempotency key must come with the same request (event name and payload): a key
/// reused for different content is a client bug that would otherwise lose the new event silently.
async fn same_request(
    state: &AppState,
    key: &str,
    original_id: &str,
    event: &serde_json::Value,
) -> Result<(), HttpError> {
    let Some(original) = state.store.get_event(original_id).await? else {
        return Ok(());
    };
    let stored: serde_json::Value = serde_json::from_slice(&original.body).unwrap_or_default();
    if stored.get("event") == event.get("event") && stored.get("payload") == event.get("payload") {
        return Ok(());
    }
    Err(HttpError::conflict(format!(
        "idempotency_key {key:?} was already used for a different event ({original_id}, seq {}): use a new key for new content",
        original.seq
    )))
}
