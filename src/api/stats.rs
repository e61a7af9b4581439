//! `GET /api/v1/stats`: the counters the dashboard's Overview samples every few seconds.
//!
//! Nothing here is counted twice. Ingest and delivery counts are this process's own `/metrics`
//! counters, read through the same Prometheus-text reading as the periodic log summary
//! (`server::summary::totals`), so the dashboard, the log line and a Prometheus scrape always
//! agree. Queue depth comes from the store (`queue_stats`, what the delivery worker publishes as
//! gauges), sync progress from `api::sync::status`, and store health from the same readiness
//! check as `/readyz`.
//!
//! The counters are totals since this process started, not rates: the dashboard derives rates
//! from the difference of two samples, which keeps this endpoint stateless and lets any number
//! of dashboards poll it without disturbing each other. With several instances on one database
//! each answers for itself; queue and sync figures are shared (they come from the store).
//!
//! A failing store does not fail the answer: the Overview exists precisely to show that state.
//! Figures that need the store are `null` then (the error is logged, at most once a minute), and
//! `store.ok` is `false`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::api::health::readiness;
use crate::core::clock::{now_millis, rfc3339, take_turn};
use crate::server::AppState;
use crate::server::summary::totals;

/// The webhook-request counter, labelled by `outcome`.
const REQUESTS: &str = "zoomhook_webhook_requests_total";
/// The delivery-attempt counter, labelled by `outcome` (succeeded, retry, failed).
const DELIVERIES: &str = "zoomhook_deliveries_total";
/// Request outcomes that are not refusals: stored, recognised as already stored, or Zoom's
/// URL-validation handshake answered. Every other outcome is a refusal and counted by name, so
/// a refusal added to `ingest` later shows up without a change here.
const NOT_REJECTED: [&str; 3] = ["accepted", "duplicate", "url_validation"];

/// The answer of `GET /api/v1/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// When these figures were read (RFC 3339, UTC).
    pub generated_at: String,
    pub ingest: IngestStats,
    pub deliveries: DeliveryStats,
    pub sync: SyncStats,
    pub store: StoreStats,
}

/// Webhook requests this process answered since it started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestStats {
    /// Stored in the log.
    pub accepted_count: u64,
    /// Recognised as an event already in the log, answered 2xx without a second entry.
    pub duplicate_count: u64,
    /// Refused, by the request outcome label (`unauthorized`, `bad_body`, `unavailable` …).
    pub rejected_counts: BTreeMap<String, u64>,
}

/// Delivery attempts this process made since it started, and the queue in the store.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryStats {
    /// Attempts answered 2xx.
    pub succeeded_count: u64,
    /// Attempts that did not succeed, whether a retry follows or it was the last one.
    pub failed_count: u64,
    /// Deliveries pending or being sent, across all instances; `null` if the store did not answer.
    pub pending_count: Option<i64>,
    /// When the oldest of them was created; `null` when there is none.
    pub oldest_pending_at: Option<String>,
}

/// Where the entity sync reader stands; each `null` if the store did not answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncStats {
    /// Log entries the reader has yet to consume.
    pub lag: Option<i64>,
    /// Log entries it has consumed in all.
    pub applied: Option<i64>,
    /// The log head (highest seq).
    pub head: Option<i64>,
}

/// Which store this instance uses and whether it can take events (the `/readyz` verdict).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreStats {
    /// `sqlite` or `postgres`.
    #[schema(value_type = String)]
    pub backend: &'static str,
    pub ok: bool,
}

/// `GET /api/v1/stats`
#[utoipa::path(get, path = "/api/v1/stats", tag = "operations", operation_id = "get_stats",
    summary = "Counters since this process started (ingest outcomes, delivery attempts), queue depth, sync lag and store health, for the dashboard's overview.",
    responses((status = 200, body = Stats, description = "The counters"), crate::api::openapi::Errors))]
pub async fn show(State(state): State<AppState>) -> Json<Stats> {
    let counters = totals(&state.metrics.render());
    let count = |metric: &str, outcome: &str| -> u64 {
        counters
            .get(&(metric.to_owned(), outcome.to_owned()))
            .map_or(0, |v| v.max(0.0) as u64)
    };
    let rejected_counts = counters
        .iter()
        .filter(|((metric, outcome), _)| {
            metric == REQUESTS && !NOT_REJECTED.contains(&outcome.as_str())
        })
        .map(|((_, outcome), value)| (outcome.clone(), value.max(0.0) as u64))
        .collect();
    let queue = state
        .store
        .queue_stats()
        .await
        .inspect_err(|error| {
            if warn_now() {
                tracing::warn!(%error, "stats: the delivery queue could not be read");
            }
        })
        .ok();
    let sync = crate::api::sync::status(State(state.clone()))
        .await
        .inspect_err(|error| {
            if warn_now() {
                tracing::warn!(detail = %error.detail, "stats: the sync status could not be read");
            }
        })
        .ok()
        .map(|Json(s)| s);
    let ok = readiness(&state).await.is_ok();
    Json(Stats {
        generated_at: rfc3339(now_millis()),
        ingest: IngestStats {
            accepted_count: count(REQUESTS, "accepted"),
            duplicate_count: count(REQUESTS, "duplicate"),
            rejected_counts,
        },
        deliveries: DeliveryStats {
            succeeded_count: count(DELIVERIES, "succeeded"),
            failed_count: count(DELIVERIES, "retry") + count(DELIVERIES, "failed"),
            pending_count: queue.as_ref().map(|q| q.depth),
            oldest_pending_at: queue.and_then(|q| q.oldest_pending).map(rfc3339),
        },
        sync: SyncStats {
            lag: sync.as_ref().map(|s| s.lag),
            applied: sync.as_ref().map(|s| s.applied),
            head: sync.as_ref().map(|s| s.head),
        },
        store: StoreStats {
            backend: backend(&state.config.database_url),
            ok,
        },
    })
}

/// Whether a failed read of the store may be logged now: at most once a minute, since every
/// open Overview polls this every few seconds and a store that is down would otherwise fill the
/// log with the same line (its outage is logged by the committer and `/readyz` too).
fn warn_now() -> bool {
    static LAST: AtomicI64 = AtomicI64::new(0);
    take_turn(&LAST, now_millis(), 60_000)
}

/// The backend a database URL names (the same prefixes `store::open` accepts).
fn backend(url: &str) -> &'static str {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "postgres"
    } else {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_named_by_the_database_url() {
        assert_eq!(backend("sqlite://zoomhook.db"), "sqlite");
        assert_eq!(backend("postgres://u@h/db"), "postgres");
        assert_eq!(backend("postgresql://u@h/db"), "postgres");
    }
}
