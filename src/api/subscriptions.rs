//! `/api/v1/subscriptions…` and `/api/v1/deliveries…`: outbound subscriptions, their deliveries
//! and attempts, manual retry, replay and a test send.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::api::extract::{Body, Path, Query};
use crate::core::clock::{now_millis, parse_time};
use crate::core::pattern::EventPattern;
use crate::deliver::subscription::{self, SubscriptionInput};
use crate::deliver::worker::{self, Deliverer};
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::deliveries::{
    Claimed, Delivery, DeliveryCounts, MAX_DELIVERIES_BY_ID, ReplayRange, Subscription,
};

/// Parses a JSON request body with an error that says what is wrong.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, HttpError> {
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("invalid JSON body: {e}")))
}

/// A subscription as the API shows it (never the secret, except right after it was made).
#[derive(Debug, Serialize)]
pub struct SubscriptionView {
    #[serde(flatten)]
    pub subscription: Subscription,
    pub headers_map: Value,
    pub deliveries: DeliveryCounts,
    /// Only in the answer to a create or a rotation, and only a generated one: a secret the user
    /// gave is theirs already and is not echoed into terminals and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

async fn view(
    state: &AppState,
    sub: Subscription,
    secret: bool,
) -> Result<SubscriptionView, HttpError> {
    let deliveries = state.store.delivery_counts(&sub.id).await?;
    Ok(SubscriptionView {
        headers_map: serde_json::from_str(&sub.headers).unwrap_or(json!({})),
        // An email is not signed: its subscription has no secret to hand out.
        secret: (secret && sub.kind != "email").then(|| sub.secret.clone()),
        subscription: sub,
        deliveries,
    })
}

async fn find(state: &AppState, id: &str) -> Result<Subscription, HttpError> {
    state
        .store
        .get_subscription(id)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no subscription {id:?}")))
}

/// How many times an update is re-applied to a row that changed under it before giving up (409).
const UPDATE_ATTEMPTS: u32 = 8;

/// Tells this instance's dispatcher to re-read subscriptions before its next claim.
fn subscriptions_changed(state: &AppState) {
    state
        .subscriptions_changed
        .send_modify(|generation| *generation += 1);
}

fn invalid(e: subscription::InvalidField) -> HttpError {
    HttpError::bad_request(e.to_string())
}

/// A subscription this server could never deliver is refused when it is saved, not discovered
/// later in its failed deliveries: email needs `smtp_url`.
fn deliverable(state: &AppState, sub: &Subscription) -> Result<(), HttpError> {
    if sub.kind == "email" && state.config.delivery.smtp_url.is_none() {
        return Err(HttpError::bad_request(
            "email subscriptions need an SMTP server, and this server has none: set smtp_url (ZOOMHOOK_SMTP_URL, e.g. smtp://mail.example.com:587) and restart",
        ));
    }
    Ok(())
}

/// `POST /api/v1/subscriptions`
pub async fn create(
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Response, HttpError> {
    let input: SubscriptionInput = json_body(&body)?;
    let generated = input.secret.is_none();
    let sub = subscription::create(input, &state.ssrf, now_millis()).map_err(invalid)?;
    deliverable(&state, &sub)?;
    state.store.insert_subscription(&sub).await?;
    subscriptions_changed(&state);
    let view = view(&state, sub, generated).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /api/v1/subscriptions`
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let mut data = Vec::new();
    for sub in state.store.list_subscriptions().await? {
        data.push(view(&state, sub, false).await?);
    }
    Ok(Json(json!({ "data": data })))
}

/// `GET /api/v1/subscriptions/{id}`
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, HttpError> {
    let sub = find(&state, &id).await?;
    Ok(Json(view(&state, sub, false).await?))
}

/// `PATCH /api/v1/subscriptions/{id}` — any field of the create request; `rotate_secret: true`
/// makes a new secret (returned once), or takes the one given in `secret` (not returned), while
/// the old one keeps signing for `rotation_overlap`:
/// beside the new one (`standard`), or instead of it until the overlap ends (`zoom`, whose
/// header carries one signature).
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<SubscriptionView>, HttpError> {
    let input: SubscriptionInput = json_body(&body)?;
    let new_generated_secret = input.rotate_secret == Some(true) && input.secret.is_none();
    let enabling = input.enabled == Some(true);
    // Apply the fields to the row as read and write it only if nobody wrote it meanwhile (another
    // request, a worker disabling it); otherwise apply them again to the newer row.
    let mut attempt = 0;
    let sub = loop {
        let mut sub = find(&state, &id).await?;
        subscription::apply(&mut sub, input.clone(), &state.ssrf, now_millis()).map_err(invalid)?;
        deliverable(&state, &sub)?;
        if state.store.update_subscription(&sub).await? {
            break sub;
        }
        attempt += 1;
        if attempt == UPDATE_ATTEMPTS {
            return Err(HttpError::conflict(format!(
                "subscription {id:?} kept changing while it was being updated; try again"
            )));
        }
        // Let the competing write finish; staggered so racing requests do not collide again.
        tokio::time::sleep(std::time::Duration::from_millis(2 * u64::from(attempt))).await;
    };
    subscriptions_changed(&state);
    if enabling {
        state.deliveries_queued.notify_one();
    }
    Ok(Json(view(&state, sub, new_generated_secret).await?))
}

/// `DELETE /api/v1/subscriptions/{id}` — with its deliveries and attempts.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    if state.store.delete_subscription(&id).await? {
        subscriptions_changed(&state);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HttpError::not_found(format!("no subscription {id:?}")))
    }
}

#[derive(Debug, Deserialize)]
pub struct DeliveryParams {
    pub status: Option<String>,
    pub before_seq: Option<i64>,
    pub limit: Option<i64>,
    /// Comma-separated delivery ids (at most [`MAX_DELIVERIES_BY_ID`]): exactly these, e.g. the
    /// ones a replay queued, which is how `zoomhook replay` follows its own deliveries.
    pub ids: Option<String>,
}

/// `GET /api/v1/subscriptions/{id}/deliveries` — newest event first; `before_seq` pages; or the
/// deliveries named by `ids`.
pub async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<DeliveryParams>,
) -> Result<Json<Value>, HttpError> {
    find(&state, &id).await?;
    if let Some(ids) = &p.ids {
        return deliveries_by_id(&state, &id, ids).await;
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::bad_request("`limit` must be between 1 and 1000"));
    }
    if let Some(status) = &p.status
        && !matches!(
            status.as_str(),
            "pending" | "delivering" | "succeeded" | "failed"
        )
    {
        return Err(HttpError::bad_request(
            "`status` must be pending, delivering, succeeded or failed",
        ));
    }
    let data: Vec<Delivery> = state
        .store
        .list_deliveries(&id, p.status.as_deref(), p.before_seq, limit)
        .await?;
    let next_cursor = (data.len() as i64 == limit)
        .then(|| data.last().map(|d| d.event_seq))
        .flatten();
    Ok(Json(json!({ "data": data, "next_cursor": next_cursor })))
}

/// The `ids=` form of the deliveries list: the subscription's deliveries among those named.
async fn deliveries_by_id(
    state: &AppState,
    subscription_id: &str,
    ids: &str,
) -> Result<Json<Value>, HttpError> {
    let ids: Vec<String> = ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    // Delivery ids are `msg_` + ULIDs: anything else (a NUL, a megabyte) cannot name one, and is
    // refused here rather than handed to a store that may reject it less clearly.
    let plausible = |id: &String| id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic());
    if ids.is_empty() || ids.len() > MAX_DELIVERIES_BY_ID || !ids.iter().all(plausible) {
        return Err(HttpError::bad_request(format!(
            "`ids` must name 1 to {MAX_DELIVERIES_BY_ID} delivery ids (msg_…), comma-separated"
        )));
    }
    let data = state.store.deliveries_by_id(subscription_id, &ids).await?;
    Ok(Json(json!({ "data": data, "next_cursor": null })))
}

/// `GET /api/v1/deliveries/{id}` — with every attempt.
pub async fn delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let (delivery, attempts) = state
        .store
        .get_delivery(&id)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no delivery {id:?}")))?;
    let mut value = serde_json::to_value(&delivery).unwrap_or_default();
    if let Value::Object(map) = &mut value {
        map.insert("attempts_list".into(), json!(attempts));
    }
    Ok(Json(value))
}

/// `POST /api/v1/deliveries/{id}/retry` — due now, with a fresh retry schedule.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    if !state.store.retry_delivery(&id, now_millis()).await? {
        return Err(match state.store.get_delivery(&id).await? {
            Some(_) => HttpError::conflict(format!("delivery {id:?} is being sent right now")),
            None => HttpError::not_found(format!("no delivery {id:?}")),
        });
    }
    state.deliveries_queued.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "pending"})),
    )
        .into_response())
}

/// The body of a replay request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    pub after_seq: Option<i64>,
    pub to_seq: Option<i64>,
    /// RFC 3339 or epoch ms (received time).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only the events of one entity, e.g. a meeting id.
    pub entity: Option<String>,
}

/// `POST /api/v1/subscriptions/{id}/replay` — re-queues the matching events of a range.
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>, HttpError> {
    let input: ReplayInput = if body.is_empty() {
        ReplayInput::default()
    } else {
        json_body(&body)?
    };
    let sub = find(&state, &id).await?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, HttpError> {
        v.as_deref()
            .map(|t| {
                parse_time(t).ok_or_else(|| {
                    HttpError::bad_request(format!("`{name}` must be RFC 3339 or epoch ms"))
                })
            })
            .transpose()
    };
    let range = ReplayRange {
        after_seq: input.after_seq,
        to_seq: input.to_seq,
        since: time("since", &input.since)?,
        until: time("until", &input.until)?,
        entity: input.entity.filter(|e| !e.is_empty()),
    };
    let patterns =
        EventPattern::parse_list(&sub.events).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let ids = state
        .store
        .replay_ids(&sub, &patterns, &range, now_millis())
        .await?;
    state.deliveries_queued.notify_one();
    // The ids let the caller follow exactly what this replay queued (`?ids=` on the deliveries
    // list), not the subscription's running totals, which other events move too.
    Ok(Json(
        json!({ "subscription_id": sub.id, "queued": ids.len(), "deliveries": ids }),
    ))
}

/// `POST /api/v1/subscriptions/{id}/test` — one signed test delivery, sent now, not queued;
/// answers what the endpoint said.
pub async fn test(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let sub = find(&state, &id).await?;
    let now = now_millis();
    let body = json!({"event": "zoomhook.test", "event_ts": now, "payload": {"object": {"subscription_id": sub.id}}});
    let http = crate::deliver::ssrf::delivery_client(
        Arc::clone(&state.ssrf),
        std::time::Duration::from_secs(10),
    )
    .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let email = state.config.delivery.smtp_url.as_ref().and_then(|url| {
        crate::deliver::email::EmailSender::new(url.expose(), &state.config.delivery.smtp_from).ok()
    });
    let deliverer = Deliverer {
        store: Arc::clone(&state.store),
        config: state.config.delivery.clone(),
        http,
        policy: Arc::clone(&state.ssrf),
        email,
        appender: None,
    };
    let claimed = Claimed {
        delivery: Delivery {
            id: crate::core::ids::new_id("msg"),
            subscription_id: sub.id.clone(),
            event_seq: 0,
            event_id: "evt_test".into(),
            event: "zoomhook.test".into(),
            entity: None,
            status: "delivering".into(),
            attempts: 0,
            schedule_base: 0,
            next_attempt_at: now,
            last_status: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        },
        event_ts: Some(now),
        body: body.to_string().into_bytes(),
    };
    let completion = worker::send(&deliverer, &sub, claimed, now).await;
    let a = completion.attempt;
    Ok(Json(json!({
        "ok": a.error.is_none(),
        "status_code": a.status_code,
        "duration_ms": a.duration_ms,
        "error": a.error,
        "response_excerpt": a.response_excerpt,
    })))
}
