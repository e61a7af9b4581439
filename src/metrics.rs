//! Metric names and the Prometheus recorder: one place, so `/metrics` is documented here.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `zoomhook_webhook_requests_total` | counter | `source`, `event`, `outcome` |
//! | `zoomhook_webhook_ack_seconds` | histogram | `outcome` — receipt to response, includes the commit |
//! | `zoomhook_duplicates_total` | counter | `source` |
//! | `zoomhook_commit_batch_size` | histogram | events per group-commit transaction |
//! | `zoomhook_commit_seconds` | histogram | duration of one group commit |
//! | `zoomhook_commit_failures_total` | counter | |
//! | `zoomhook_url_validations_total` | counter | `source`, `outcome` |
//! | `zoomhook_sync_lag_events` | gauge | log head − sync cursor |
//! | `zoomhook_sync_applied_events_total` | counter | events applied by the sync reader |
//! | `zoomhook_sync_batch_seconds` | histogram | duration of one sync batch |
//! | `zoomhook_deliveries_total` | counter | `subscription`, `outcome` (succeeded, retry, failed) |
//! | `zoomhook_delivery_attempt_seconds` | histogram | duration of one attempt |
//! | `zoomhook_delivery_queue_depth` | gauge | deliveries pending or being sent |
//! | `zoomhook_delivery_oldest_pending_seconds` | gauge | age of the oldest of them |

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the global recorder (once per process) and returns a handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("zoomhook_commit_batch_size".into()),
                        &sizes,
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                // Another recorder is installed (e.g. a second server in one test process):
                // render from a private recorder so /metrics still answers.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// One webhook request finished.
pub fn record_request(source: &str, event: &str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!("zoomhook_webhook_requests_total", "source" => source.to_owned(), "event" => event.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!("zoomhook_webhook_ack_seconds", "outcome" => outcome)
        .record(elapsed.as_secs_f64());
    if outcome == "duplicate" {
        metrics::counter!("zoomhook_duplicates_total", "source" => source.to_owned()).increment(1);
    }
}

/// One group commit finished.
pub fn record_commit(batch_size: usize, elapsed: Duration, ok: bool) {
    metrics::histogram!("zoomhook_commit_batch_size").record(batch_size as f64);
    metrics::histogram!("zoomhook_commit_seconds").record(elapsed.as_secs_f64());
    if !ok {
        metrics::counter!("zoomhook_commit_failures_total").increment(1);
    }
}

/// One URL-validation challenge answered or refused.
pub fn record_url_validation(source: &str, outcome: &'static str) {
    metrics::counter!("zoomhook_url_validations_total", "source" => source.to_owned(), "outcome" => outcome).increment(1);
}
