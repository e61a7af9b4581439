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
//! | `zoomhook_sync_quarantined_total` | counter | log entries sync skipped because they could not be applied |
//! | `zoomhook_sqlite_wal_bytes` | gauge | size of the SQLite WAL file (bounded by `sqlite_wal_limit`) |
//! | `zoomhook_sqlite_wal_restarts_total` | counter | `file` (log, state), `outcome` (restarted, busy, failed) — WAL starts over past `sqlite_wal_limit` |
//! | `zoomhook_sqlite_wal_restart_seconds` | histogram | `file` — how long one such restart held that database's writers back |
//! | `zoomhook_deliveries_total` | counter | `subscription`, `outcome` (succeeded, retry, failed) |
//! | `zoomhook_delivery_attempt_seconds` | histogram | duration of one attempt |
//! | `zoomhook_delivery_queue_depth` | gauge | deliveries pending or being sent |
//! | `zoomhook_delivery_oldest_pending_seconds` | gauge | age of the oldest of them |
//! | `zoomhook_stream_clients` | gauge | WebSocket stream clients connected |
//! | `zoomhook_stream_frames_total` | counter | event frames handed to stream clients |
//! | `zoomhook_stream_disconnects_total` | counter | `reason` (client_closed, slow_consumer, ping_timeout, server_stopping, store_error) |
//! | `zoomhook_allocations_total` | counter | Rust allocations of the process (not SQLite's own); only in the `count-allocations` build |

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::task::JoinHandle;

// Why a recorder per server, and how: the `metrics` macros write to one process-wide recorder,
// so two servers in one process (tests, an embedding application, a restart in place) would show
// each other's counts on `/metrics`. The process-wide recorder is therefore a router
// ([`Routing`]) that hands each metric to the recorder of the server whose task records it: a
// server runs its tasks inside [`ServerMetrics::scope`] (a Tokio task-local), and tasks it spawns
// inherit it through [`spawn`]. Code outside any server (CLI commands) records to a fallback.
tokio::task_local! {
    static CURRENT: Arc<PrometheusRecorder>;
}

/// What code outside any server records into (CLI commands).
fn fallback() -> &'static Arc<PrometheusRecorder> {
    static FALLBACK: OnceLock<Arc<PrometheusRecorder>> = OnceLock::new();
    FALLBACK.get_or_init(|| Arc::new(new_recorder()))
}

/// The recorder of the server whose task is running, else the fallback.
fn current_or_fallback() -> Arc<PrometheusRecorder> {
    CURRENT
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::clone(fallback()))
}

/// The process-wide recorder: forwards to the current server's recorder, else to the fallback.
struct Routing;

impl Routing {
    fn with<T>(&self, f: impl FnOnce(&PrometheusRecorder) -> T) -> T {
        f(&current_or_fallback())
    }
}

impl Recorder for Routing {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_counter(key, unit, description))
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_gauge(key, unit, description))
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_histogram(key, unit, description))
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.with(|r| r.register_counter(key, metadata))
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.with(|r| r.register_gauge(key, metadata))
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.with(|r| r.register_histogram(key, metadata))
    }
}

/// A recorder with zoomhook's histogram buckets.
fn new_recorder() -> PrometheusRecorder {
    let latency = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("zoomhook_commit_batch_size".into()), &sizes)
        })
        .unwrap_or_else(|_| PrometheusBuilder::new())
        .build_recorder()
}

/// Installs the routing recorder, once per process. If another recorder was installed first (an
/// application embedding zoomhook), servers still render their own metrics when their code runs
/// inside their scope — as long as that recorder forwards nothing, there is nothing to mix.
fn install_routing() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if metrics::set_global_recorder(Routing).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics may be incomplete");
        }
    });
}

/// The metrics of one server: its own recorder, and the handle that renders `/metrics`.
#[derive(Clone)]
pub struct ServerMetrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl ServerMetrics {
    /// A fresh, empty set of metrics for a server starting in this process.
    pub fn new() -> ServerMetrics {
        install_routing();
        let recorder = new_recorder();
        let handle = recorder.handle();
        ServerMetrics {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    /// Runs `future` (and, through [`spawn`], the tasks it spawns) recording into these metrics.
    pub fn scope<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(Arc::clone(&self.recorder), future)
    }

    /// `/metrics` in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        // Process-wide, and only in the `count-allocations` build (see `core::alloc_count`).
        if let Some(allocations) = crate::core::alloc_count::allocations() {
            text.push_str(&format!(
                "# TYPE zoomhook_allocations_total counter\nzoomhook_allocations_total {allocations}\n"
            ));
        }
        text
    }

    /// Drains histogram samples into their buckets; run periodically so memory stays bounded
    /// between scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

/// `future`, recording into the metrics of the server whose task creates it: wrap what is
/// handed to another task (task-locals are not inherited by spawned tasks).
pub fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(current_or_fallback(), future)
}

/// `tokio::spawn`, keeping the spawning task's server metrics.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(carry(future))
}

/// The current server's recorder, for a plain thread to record into with [`on_thread`].
pub fn current() -> Option<Arc<PrometheusRecorder>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `f` on a plain thread recording into `recorder` (from [`current`]), if any.
pub fn on_thread<T>(recorder: Option<&Arc<PrometheusRecorder>>, f: impl FnOnce() -> T) -> T {
    match recorder {
        Some(recorder) => metrics::with_local_recorder(recorder.as_ref(), f),
        None => f(),
    }
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
