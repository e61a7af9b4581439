//! `/api/v1/events`: query the event log and fetch single events with their raw body.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::extract::{Body, Path, Query};
use crate::api::model::Page;
use crate::api::model::delivery::Delivery;
use crate::api::model::event::{Event, PublishInput, Published};
use crate::core::clock::parse_time;
use crate::core::pattern::EventPattern;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::{EventQuery, StoredEvent};

/// Query string of `GET /api/v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
    /// Events after this seq (ascending order).
    pub after_seq: Option<i64>,
    /// Events before this seq (descending order).
    pub before_seq: Option<i64>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
    /// The `next_cursor` of the previous page (the same order).
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// Include each event's raw body.
    pub include_body: Option<bool>,
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
    let cursor = crate::api::model::seq_cursor(p.cursor.as_deref())?;
    // A cursor continues in the page's direction: after its seq going up, before it going down.
    let (after_seq, before_seq) = match (cursor, descending) {
        (Some(c), false) => (Some(p.after_seq.map_or(c, |a| a.max(c))), p.before_seq),
        (Some(c), true) => (p.after_seq, Some(p.before_seq.map_or(c, |b| b.min(c)))),
        (None, _) => (p.after_seq, p.before_seq),
    };
    Ok(EventQuery {
        patterns,
        since: time_param("since", p.since.as_deref())?,
        until: time_param("until", p.until.as_deref())?,
        entity: p.entity.clone().filter(|s| !s.is_empty()),
        source: p.source.clone().filter(|s| !s.is_empty()),
        after_seq,
        before_seq,
        descending,
        limit,
    })
}

/// `GET /api/v1/events`
#[utoipa::path(get, path = "/api/v1/events", operation_id = "list_events", tag = "events",
    summary = "Events of the log, filtered, oldest first (or newest with `order=desc`).",
    params(ListParams),
    responses((status = 200, body = Page<Event>, description = "A page of events"), crate::api::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Event>>, HttpError> {
    let query = to_query(&params)?;
    let events = state.store.list_events(&query).await?;
    let include_body = params.include_body.unwrap_or(false);
    let data = events
        .into_iter()
        .map(|e| Event::from_stored(e, include_body))
        .collect();
    Ok(Json(Page::of(data, query.limit, |e: &Event| {
        e.seq.to_string()
    })))
}

/// `GET /api/v1/events/{id}` — metadata, the raw body and the event's deliveries.
#[utoipa::path(get, path = "/api/v1/events/{id}", operation_id = "get_event", tag = "events",
    summary = "One event with its body as received and where it was delivered.",
    params(("id" = String, Path)),
    responses((status = 200, body = Event, description = "The event with its body and deliveries"), crate::api::openapi::Errors))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Event>, HttpError> {
    let event = find(&state, &id).await?;
    let deliveries = state.store.deliveries_for_event(event.seq).await?;
    let mut view = Event::from_stored(event, true);
    view.deliveries = Some(deliveries.into_iter().map(Delivery::from_row).collect());
    Ok(Json(view))
}

/// `GET /api/v1/events/{id}/raw` — the body exactly as Zoom sent it.
#[utoipa::path(get, path = "/api/v1/events/{id}/raw", operation_id = "get_event_body", tag = "events",
    summary = "The event's body, byte for byte as received.",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "application/json", body = Object, description = "The body as received"), crate::api::openapi::Errors))]
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

/// `POST /api/v1/events` — the team's own applications publish their own events into the log,
/// to be fanned out like Zoom's (same filters, signing, retries, replay). Source `api`.
#[utoipa::path(post, path = "/api/v1/events", operation_id = "publish_event", tag = "events",
    summary = "Publish an event of your own into the log, to be fanned out like Zoom's.",
    request_body = PublishInput,
    responses((status = 201, body = Published, description = "Stored"), (status = 200, body = Published, description = "A duplicate of an earlier publish with the same idempotency key"), crate::api::openapi::Errors))]
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
    let event_ts = match &input.event_time {
        None | Some(serde_json::Value::Null) => now,
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(bad_event_time)?,
        Some(serde_json::Value::String(t)) => parse_time(t).ok_or_else(bad_event_time)?,
        Some(_) => return Err(bad_event_time()),
    };
    if crate::core::clock::rfc3339_checked(event_ts).is_none() {
        return Err(bad_event_time());
    }
    let event = serde_json::json!({
        "event": input.event,
        "event_ts": event_ts,
        "payload": input.payload,
    });
    let bytes = axum::body::Bytes::from(event.to_string());
    let envelope = crate::zoom::envelope::Envelope::parse(&bytes)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let idempotency_key = input.idempotency_key.filter(|k| !k.is_empty());
    let key = idempotency_key.as_ref().map(|k| format!("api:{k}"));
    let no_key = key.is_none();
    let mut new_event = crate::store::NewEvent::from_envelope(
        &envelope,
        crate::store::PUBLISHED_SOURCE,
        bytes,
        key,
        now,
    );
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
    let published = Published {
        status: outcome.to_owned(),
        id,
        seq,
    };
    Ok((status, Json(published)).into_response())
}

fn bad_event_time() -> HttpError {
    HttpError::bad_request(
        "`event_time` must be RFC 3339 (2024-05-01T00:00:00Z) or epoch milliseconds",
    )
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
