//! Gaps: the intervals a WebSocket source was not connected. Zoom keeps nothing for a
//! disconnected client, so each gap is an interval whose events are lost unless they are fetched
//! another way (Zoom's REST API, or a webhook subscription alongside). A gap is written to the
//! log as an operational event (`zoomhook.source.gap`, object id = the source's name, so
//! `GET /api/v1/events?event=zoomhook.source.gap&entity=NAME` lists one source's gaps), counted
//! in metrics and logged.

use std::time::Duration;

use serde_json::json;

use super::zoom_ws::ZoomSource;
use crate::core::clock::{now_millis, rfc3339};
use crate::store::NewEvent;

/// The operational event of a gap.
pub const GAP_EVENT: &str = "zoomhook.source.gap";

/// How long recording a gap is retried while the store is unavailable.
const RECORD_FOR: Duration = Duration::from_secs(600);

/// The log entry of one gap.
pub fn gap_event(source: &ZoomSource, from: i64, to: i64, reason: &str, now: i64) -> NewEvent {
    NewEvent::operational(
        GAP_EVENT,
        json!({
            "id": source.name,
            "source": source.name,
            "kind": "zoom_websocket",
            "subscription_id": source.config.subscription_id,
            "from": rfc3339(from),
            "to": rfc3339(to),
            "duration_ms": to - from,
            "reason": reason,
            "instance": source.instance,
        }),
        now,
    )
}

/// Records the gap `[from, to]` (epoch ms): logs and counts it at once, and appends it to the log
/// in the background (retrying while the store is down), so the new connection is read at once.
pub fn record(source: &ZoomSource, from: i64, to: i64, reason: &str) {
    let to = to.max(from);
    let seconds = (to - from) as f64 / 1000.0;
    tracing::warn!(
        source = %source.name,
        from = %rfc3339(from),
        to = %rfc3339(to),
        seconds,
        reason,
        "gap: the Zoom WebSocket source was not connected; Zoom does not re-send the events of this interval"
    );
    metrics::counter!("zoomhook_source_gaps_total", "source" => source.name.clone()).increment(1);
    metrics::counter!("zoomhook_source_gap_seconds_total", "source" => source.name.clone())
        .increment(seconds.ceil() as u64);
    let event = gap_event(source, from, to, reason, now_millis());
    let appender = source.appender.clone();
    let log_advanced = source.log_advanced.clone();
    let name = source.name.clone();
    crate::metrics::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            match appender.append(event.clone()).await {
                Ok(_) => {
                    log_advanced.send_modify(|n| *n = n.wrapping_add(1));
                    return;
                }
                Err(error) if started.elapsed() < RECORD_FOR => {
                    tracing::warn!(source = %name, %error, "cannot record a gap in the log yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(error) => {
                    tracing::error!(source = %name, %error, "gave up recording a gap in the log (it is in this log output and in metrics)");
                    return;
                }
            }
        }
    });
}
