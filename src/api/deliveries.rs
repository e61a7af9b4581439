//! Deliveries: a subscription's list, one delivery with its attempts, and a manual retry.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::extract::{Path, Query};
use crate::api::model::Page;
use crate::api::model::delivery::Delivery;
use crate::core::clock::now_millis;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::deliveries::MAX_DELIVERIES_BY_ID;

/// Query of a subscription's deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `delivering`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// Comma-separated delivery ids (at most 100): exactly these, e.g. the ones a replay queued,
    /// which is how `zoomhook replay` follows its own deliveries.
    pub ids: Option<String>,
}

/// `GET /api/v1/subscriptions/{id}/deliveries` — newest event first; `cursor` pages; or the
/// deliveries named by `ids`.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}/deliveries", operation_id = "list_deliveries", tag = "subscriptions",
    summary = "A subscription's deliveries, newest event first.",
    params(("id" = String, Path), DeliveryParams),
    responses((status = 200, body = Page<Delivery>, description = "A page of the subscription's deliveries"), crate::api::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<DeliveryParams>,
) -> Result<Json<Page<Delivery>>, HttpError> {
    if state.store.get_subscription(&id).await?.is_none() {
        return Err(HttpError::not_found(format!("no subscription {id:?}")));
    }
    if let Some(ids) = &p.ids {
        return by_id(&state, &id, ids).await;
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
    let before_seq = crate::api::model::seq_cursor(p.cursor.as_deref())?;
    let rows = state
        .store
        .list_deliveries(&id, p.status.as_deref(), before_seq, limit)
        .await?;
    let data = rows.into_iter().map(Delivery::from_row).collect();
    Ok(Json(Page::of(data, limit, |d: &Delivery| {
        d.event_seq.to_string()
    })))
}

/// The `ids=` form of the deliveries list: the subscription's deliveries among those named.
async fn by_id(
    state: &AppState,
    subscription_id: &str,
    ids: &str,
) -> Result<Json<Page<Delivery>>, HttpError> {
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
    let rows = state.store.deliveries_by_id(subscription_id, &ids).await?;
    Ok(Json(Page::complete(
        rows.into_iter().map(Delivery::from_row).collect(),
    )))
}

/// `GET /api/v1/deliveries/{id}` — with every attempt.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", operation_id = "get_delivery", tag = "subscriptions",
    summary = "One delivery with every attempt.",
    params(("id" = String, Path)),
    responses((status = 200, body = Delivery, description = "The delivery with its attempts"), crate::api::openapi::Errors))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, HttpError> {
    let (delivery, attempts) = state
        .store
        .get_delivery(&id)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no delivery {id:?}")))?;
    Ok(Json(Delivery::with_attempts(delivery, attempts)))
}

/// `POST /api/v1/deliveries/{id}/retry` — due now, with a fresh retry schedule.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/retry", operation_id = "retry_delivery", tag = "subscriptions",
    summary = "Make a delivery due now, with a fresh retry schedule; answers it, pending.",
    params(("id" = String, Path)),
    responses((status = 202, body = Delivery, description = "Queued again: the delivery, pending"), crate::api::openapi::Errors))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Delivery>), HttpError> {
    if !state.store.retry_delivery(&id, now_millis()).await? {
        return Err(match state.store.get_delivery(&id).await? {
            Some(_) => HttpError::conflict(format!("delivery {id:?} is being sent right now")),
            None => HttpError::not_found(format!("no delivery {id:?}")),
        });
    }
    state.deliveries_queued.notify_one();
    let (delivery, attempts) = state
        .store
        .get_delivery(&id)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no delivery {id:?}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Delivery::with_attempts(delivery, attempts)),
    ))
}
