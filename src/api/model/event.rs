//! An event of the log as the API shows it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{time, time_opt};
use super::delivery::Delivery;
use crate::store::StoredEvent;

/// One event of the log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Its position in the log: increasing, never reused.
    pub seq: i64,
    pub id: String,
    /// The source that received it (`zoom`, another configured source, `api`, `zoomhook`).
    pub source: String,
    /// The event name, e.g. `meeting.started`.
    pub event: String,
    /// When Zoom says it happened (its `event_ts`).
    pub event_time: Option<String>,
    pub account_id: Option<String>,
    /// The id of the object the event is about (a meeting id, a user id).
    pub object_id: Option<String>,
    /// The uuid of that object (a meeting instance's uuid).
    pub object_uuid: Option<String>,
    /// When zoomhook stored it.
    pub received_at: String,
    /// Zoom's request id (`x-zm-request-id`), when it sent one.
    pub request_id: Option<String>,
    /// The body exactly as received, on `GET /events/{id}` and with `include_body=true`.
    pub body: Option<String>,
    /// Its deliveries (without their attempts), on `GET /events/{id}` only.
    pub deliveries: Option<Vec<Delivery>>,
}

impl Event {
    /// The view of a stored event, with its body when `include_body`.
    pub fn from_stored(e: StoredEvent, include_body: bool) -> Event {
        Event {
            seq: e.seq,
            event_time: time_opt(e.event_ts),
            received_at: time(e.received_at),
            body: include_body.then(|| String::from_utf8_lossy(&e.body).into_owned()),
            id: e.id,
            source: e.source,
            event: e.event,
            account_id: e.account_id,
            object_id: e.object_id,
            object_uuid: e.object_uuid,
            request_id: e.request_id,
            deliveries: None,
        }
    }
}

/// The body of `POST /api/v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    /// `family.action`, e.g. `case.updated`; `zoomhook.*` and `endpoint.url_validation` are reserved.
    pub event: String,
    /// Any JSON object.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Publishing twice with the same key stores the event once (within the dedupe window).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// When it happened (RFC 3339 or epoch ms); default now.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub event_time: Option<serde_json::Value>,
}

/// The answer to a publish.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Published {
    /// `accepted` (201) or `duplicate` (200, an earlier publish with the same key).
    pub status: String,
    pub id: String,
    pub seq: i64,
}
