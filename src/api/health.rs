//! Unauthenticated operational endpoints: `/healthz`, `/readyz`, `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::AppState;

/// `GET /healthz` — the process is up.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz` — this instance can take events: the committer runs, the store answers and
/// commits succeed; 503 otherwise (a load balancer should stop routing here).
///
/// A ping alone would lie: a full disk still answers reads. So while commits are failing, each
/// call probes with one durable write through the committer's path, and the instance is ready
/// again by itself as soon as that succeeds (no traffic needed, which a load balancer that
/// stopped routing here would not send).
pub async fn readyz(State(state): State<AppState>) -> Response {
    match readiness(&state).await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err((error, detail)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": error, "detail": detail})),
        )
            .into_response(),
    }
}

/// `Ok` when ready, else the error code and a human explanation.
async fn readiness(state: &AppState) -> Result<(), (&'static str, String)> {
    if !state.appender.is_alive() {
        return Err((
            "committer_stopped",
            "the event-log committer is not running; events cannot be stored".into(),
        ));
    }
    if let Some((since, error)) = state.appender.health().failing() {
        if let Err(probe) = state.store.probe_write().await {
            tracing::warn!(error = %probe, "readiness probe: the store still cannot commit");
            return Err((
                "commits_failing",
                format!(
                    "commits have failed since {}: {error}",
                    crate::core::clock::rfc3339(since)
                ),
            ));
        }
        state.appender.health().recovered(since);
    }
    state
        .store
        .ping()
        .await
        .map_err(|e| ("store_unavailable", e.to_string()))
}

/// `GET /metrics` — Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}
