//! Unauthenticated operational endpoints: `/healthz`, `/readyz`, `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::time::Duration;

use crate::core::clock::{now_millis, rfc3339};
use crate::server::AppState;
use crate::store::NewEvent;

/// `GET /healthz` — the process is up.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz` — this instance can take events: the committer runs, no commit hangs, commits
/// succeed and the store answers; 503 otherwise (a load balancer should stop routing here).
///
/// A ping alone would lie: a full disk, a read-only database or a table the role may no longer
/// write still answer reads. So while commits are failing, a call (at most one a second) probes
/// the way an append commits — through the committer, with a real `zoomhook.store.recovered`
/// event that records the outage in the log — and the instance is ready again by itself as soon
/// as that commits (no traffic needed, which a load balancer that stopped routing here would
/// not send).
pub async fn readyz(State(state): State<AppState>) -> Response {
    // Which single-reader work runs here: with several instances on one database, the one that
    // leads sync, fan-out and each WebSocket source.
    let instance = state.leadership.instance();
    let leading: Vec<String> = state.leadership.held().into_keys().collect();
    match readiness(&state).await {
        Ok(()) => Json(json!({"status": "ready", "instance": instance, "leading": leading}))
            .into_response(),
        Err((error, detail)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "error": error,
                "detail": detail,
                "instance": instance,
                "leading": leading,
            })),
        )
            .into_response(),
    }
}

/// A commit running longer than this is stalled: Zoom gives up on an ack after 3 s.
const COMMIT_STALLED_MS: i64 = 3_000;
/// How often a failing store is probed, at most.
const PROBE_EVERY_MS: i64 = 1_000;

/// `Ok` when ready, else the error code and a human explanation. Also `store.ok` of
/// `GET /api/v1/stats`.
pub(crate) async fn readiness(state: &AppState) -> Result<(), (&'static str, String)> {
    let health = state.appender.health();
    if !state.appender.is_alive() {
        return Err((
            "committer_stopped",
            "the event-log committer is not running; events cannot be stored".into(),
        ));
    }
    let now = now_millis();
    if let Some(running) = health
        .commit_running_for_ms(now)
        .filter(|ms| *ms > COMMIT_STALLED_MS)
    {
        return Err((
            "commit_stalled",
            format!("a commit has been running for {running} ms; acks are waiting for it"),
        ));
    }
    if let Some((since, error)) = health.failing() {
        let failing = || {
            (
                "commits_failing",
                format!("commits have failed since {}: {error}", rfc3339(since)),
            )
        };
        if !health.take_probe_turn(now, PROBE_EVERY_MS) {
            return Err(failing());
        }
        let object = json!({"id": "store", "failing_since": rfc3339(since), "error": error});
        let probe = NewEvent::operational("zoomhook.store.recovered", object, now);
        let committed = tokio::time::timeout(Duration::from_secs(2), state.appender.append(probe));
        if !matches!(committed.await, Ok(Ok(_))) {
            return Err(failing());
        }
        state.log_advanced.send_modify(|n| *n = n.wrapping_add(1));
        tracing::info!(failing_since = %rfc3339(since), "the store commits again");
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
