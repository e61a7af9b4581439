//! `/api/v1/subscriptions…`: outbound subscriptions, their secrets, deliveries, replay and a
//! test send.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::extract::{Body, Path};
use crate::api::model::Page;
use crate::api::model::delivery::{ReplayInput, Replayed, TestSend};
use crate::api::model::subscription::{Secrets, Subscription};
use crate::core::clock::{now_millis, parse_time};
use crate::core::pattern::EventPattern;
use crate::deliver::subscription::{self, SubscriptionInput};
use crate::deliver::worker::{self, Deliverer};
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::deliveries::{self as rows, Claimed, ReplayRange};

/// Parses a JSON request body with an error that says what is wrong.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, HttpError> {
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("invalid JSON body: {e}")))
}

/// A subscription as the API shows it; `secret` only when it should be handed out.
async fn view(
    state: &AppState,
    sub: rows::Subscription,
    secret: bool,
) -> Result<Subscription, HttpError> {
    let counts = state.store.delivery_counts(&sub.id).await?;
    // An email is not signed: its subscription has no secret to hand out.
    let secret = (secret && sub.kind != "email").then(|| sub.secret.clone());
    Ok(Subscription::from_row(sub, counts, secret))
}

async fn find(state: &AppState, id: &str) -> Result<rows::Subscription, HttpError> {
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
fn deliverable(state: &AppState, sub: &rows::Subscription) -> Result<(), HttpError> {
    if sub.kind == "email" && state.config.delivery.smtp_url.is_none() {
        return Err(HttpError::bad_request(
            "email subscriptions need an SMTP server, and this server has none: set smtp_url (ZOOMHOOK_SMTP_URL, e.g. smtp://mail.example.com:587) and restart",
        ));
    }
    Ok(())
}

/// `POST /api/v1/subscriptions`
#[utoipa::path(post, path = "/api/v1/subscriptions", operation_id = "create_subscription", tag = "subscriptions",
    summary = "Create a subscription; the answer holds the generated secret, once.",
    request_body = SubscriptionInput,
    responses((status = 201, body = Subscription, description = "Created; `secret` holds the generated secret"), crate::api::openapi::Errors))]
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
#[utoipa::path(get, path = "/api/v1/subscriptions", operation_id = "list_subscriptions", tag = "subscriptions",
    summary = "Every subscription (one page: they are few).",
    responses((status = 200, body = Page<Subscription>, description = "Every subscription"), crate::api::openapi::Errors))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Page<Subscription>>, HttpError> {
    let mut data = Vec::new();
    for sub in state.store.list_subscriptions().await? {
        data.push(view(&state, sub, false).await?);
    }
    Ok(Json(Page::complete(data)))
}

/// `GET /api/v1/subscriptions/{id}`
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", operation_id = "get_subscription", tag = "subscriptions",
    summary = "One subscription, with its delivery counts.",
    params(("id" = String, Path)),
    responses((status = 200, body = Subscription, description = "The subscription"), crate::api::openapi::Errors))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, HttpError> {
    let sub = find(&state, &id).await?;
    Ok(Json(view(&state, sub, false).await?))
}

/// `GET /api/v1/subscriptions/{id}/secret`
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}/secret", operation_id = "get_subscription_secret", tag = "subscriptions",
    summary = "The subscription's signing secret, and the previous one while a rotation overlaps.",
    params(("id" = String, Path)),
    responses((status = 200, body = Secrets, description = "The secrets"), crate::api::openapi::Errors))]
pub async fn secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Secrets>, HttpError> {
    let sub = find(&state, &id).await?;
    Ok(Json(Secrets::of(&sub)))
}

/// `PATCH /api/v1/subscriptions/{id}` — any field of the create request; `rotate_secret: true`
/// makes a new secret (returned once), or takes the one given in `secret` (not returned), while
/// the old one keeps signing for `rotation_overlap`:
/// beside the new one (`standard`), or instead of it until the overlap ends (`zoom`, whose
/// header carries one signature).
#[utoipa::path(patch, path = "/api/v1/subscriptions/{id}", operation_id = "update_subscription", tag = "subscriptions",
    summary = "Change any field; `rotate_secret: true` rotates the secret (a generated one is in the answer, once).",
    params(("id" = String, Path)),
    request_body = SubscriptionInput,
    responses((status = 200, body = Subscription, description = "The subscription as changed"), crate::api::openapi::Errors))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Subscription>, HttpError> {
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
#[utoipa::path(delete, path = "/api/v1/subscriptions/{id}", operation_id = "delete_subscription", tag = "subscriptions",
    summary = "Delete a subscription with its deliveries and attempts.",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::api::openapi::Errors))]
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

/// `POST /api/v1/subscriptions/{id}/replay` — re-queues the matching events of a range.
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/replay", operation_id = "replay_subscription", tag = "subscriptions",
    summary = "Queue again the subscription's events of a range (by seq, time or entity); an empty body replays everything it matches.",
    params(("id" = String, Path)),
    request_body(content = Option<ReplayInput>),
    responses((status = 200, body = Replayed, description = "What was queued"), crate::api::openapi::Errors))]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Replayed>, HttpError> {
    let input: ReplayInput = if body.is_empty() {
        ReplayInput::default()
    } else {
        json_body(&body)?
    };
    let sub = find(&state, &id).await?;
    let range = replay_range(input)?;
    let patterns =
        EventPattern::parse_list(&sub.events).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let now = now_millis();
    let ids = state.store.replay_ids(&sub, &patterns, &range, now).await?;
    state.deliveries_queued.notify_one();
    // The ids let the caller follow exactly what this replay queued (`?ids=` on the deliveries
    // list), not the subscription's running totals, which other events move too.
    Ok(Json(Replayed {
        subscription_id: sub.id,
        queued_at: crate::api::model::time(now),
        queued_count: ids.len(),
        delivery_ids: ids,
    }))
}

/// The range of a replay request, refusing one that could only match nothing (a typo would
/// otherwise answer "queued 0" and look like an empty log).
fn replay_range(input: ReplayInput) -> Result<ReplayRange, HttpError> {
    let time = |name: &str, v: &Option<serde_json::Value>| -> Result<Option<i64>, HttpError> {
        let bad = || {
            HttpError::bad_request(format!(
                "`{name}` must be RFC 3339 (2024-05-01T00:00:00Z) or epoch milliseconds"
            ))
        };
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            Some(serde_json::Value::String(t)) => parse_time(t).map(Some).ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    };
    let range = ReplayRange {
        after_seq: input.after_seq,
        to_seq: input.to_seq,
        since: time("since", &input.since)?,
        until: time("until", &input.until)?,
        entity: input.entity.filter(|e| !e.is_empty()),
    };
    if range.after_seq.is_some_and(|s| s < 0) || range.to_seq.is_some_and(|s| s < 1) {
        return Err(HttpError::bad_request(
            "`after_seq` must be 0 or more and `to_seq` 1 or more (seqs start at 1)",
        ));
    }
    if let (Some(after), Some(to)) = (range.after_seq, range.to_seq)
        && after >= to
    {
        return Err(HttpError::bad_request(format!(
            "`after_seq` ({after}) must be below `to_seq` ({to}): the range is the events after the one and up to the other"
        )));
    }
    if let (Some(since), Some(until)) = (range.since, range.until)
        && since >= until
    {
        return Err(HttpError::bad_request("`since` must be before `until`"));
    }
    Ok(range)
}

/// `POST /api/v1/subscriptions/{id}/test` — one signed test delivery, sent now, not queued;
/// answers what the endpoint said.
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/test", operation_id = "test_subscription", tag = "subscriptions",
    summary = "Send one signed `zoomhook.test` event now (not queued) and answer what the endpoint said.",
    params(("id" = String, Path)),
    responses((status = 200, body = TestSend, description = "What the endpoint answered"), crate::api::openapi::Errors))]
pub async fn test(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TestSend>, HttpError> {
    let sub = find(&state, &id).await?;
    let now = now_millis();
    let body = json!({"event": "zoomhook.test", "event_ts": now, "payload": {"object": {"subscription_id": sub.id}}});
    let http = crate::deliver::http::DeliveryClient::new(
        crate::deliver::ssrf::GuardedResolver::new(Arc::clone(&state.ssrf)),
        crate::deliver::http::CONNECT_TIMEOUT,
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
        delivery: rows::Delivery {
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
    Ok(Json(TestSend {
        ok: a.error.is_none(),
        status_code: a.status_code,
        duration_ms: a.duration_ms,
        error: a.error,
        response_excerpt: a.response_excerpt,
    }))
}
