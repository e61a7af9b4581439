//! Deliveries and their attempts as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::time;
use crate::store::deliveries;

/// One delivery: an event for a subscription, with its progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// `msg_…`: the `webhook-id` the receiver sees, the same on every attempt and replay.
    pub id: String,
    pub subscription_id: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event: String,
    /// The object the event is about (its deliveries are ordered per entity with `ordering: entity`).
    pub entity_id: Option<String>,
    /// `pending`, `delivering`, `succeeded` or `failed`.
    pub status: String,
    pub attempt_count: i64,
    /// When the next attempt is due; `null` unless `pending`.
    pub next_attempt_at: Option<String>,
    /// The HTTP status of the last attempt.
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Every attempt, oldest first, on `GET /deliveries/{id}`; `null` in lists.
    pub attempts: Option<Vec<Attempt>>,
}

impl Delivery {
    /// The view of a stored delivery, without its attempts.
    pub fn from_row(d: deliveries::Delivery) -> Delivery {
        Delivery {
            next_attempt_at: (d.status == "pending").then(|| time(d.next_attempt_at)),
            created_at: time(d.created_at),
            updated_at: time(d.updated_at),
            id: d.id,
            subscription_id: d.subscription_id,
            event_seq: d.event_seq,
            event_id: d.event_id,
            event: d.event,
            entity_id: d.entity,
            status: d.status,
            attempt_count: d.attempts,
            last_status_code: d.last_status,
            last_error: d.last_error,
            attempts: None,
        }
    }

    /// The view of a stored delivery with its attempts.
    pub fn with_attempts(d: deliveries::Delivery, attempts: Vec<deliveries::Attempt>) -> Delivery {
        Delivery {
            attempts: Some(attempts.into_iter().map(Attempt::from_row).collect()),
            ..Delivery::from_row(d)
        }
    }
}

/// One attempt to deliver.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: i64,
    pub started_at: String,
    pub duration_ms: i64,
    /// The receiver's HTTP status; `null` when no answer came (refused, timed out).
    pub status_code: Option<i64>,
    /// The start of the receiver's answer.
    pub response_excerpt: Option<String>,
    /// Why the attempt failed; `null` when it succeeded.
    pub error: Option<String>,
}

impl Attempt {
    fn from_row(a: deliveries::Attempt) -> Attempt {
        Attempt {
            number: a.attempt,
            started_at: time(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            response_excerpt: a.response_excerpt,
            error: a.error,
        }
    }
}

/// The body of a replay: which events to queue again. All fields are optional and combine.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// Events after this seq.
    #[serde(default)]
    pub after_seq: Option<i64>,
    /// Events up to and including this seq.
    #[serde(default)]
    pub to_seq: Option<i64>,
    /// Received at or after (RFC 3339 or epoch ms).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub since: Option<serde_json::Value>,
    /// Received before (RFC 3339 or epoch ms).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub until: Option<serde_json::Value>,
    /// Only the events of one entity, e.g. a meeting id.
    #[serde(default)]
    pub entity: Option<String>,
}

/// The answer to a replay.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    pub subscription_id: String,
    /// When they were queued: attempts and errors recorded before belong to earlier deliveries
    /// of the same events.
    pub queued_at: String,
    pub queued_count: usize,
    /// The deliveries queued, to follow with `GET …/deliveries?ids=`.
    pub delivery_ids: Vec<String>,
}

/// The answer to a test send: what the endpoint said.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestSend {
    pub ok: bool,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}
