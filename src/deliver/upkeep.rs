//! The workers' upkeep beside sending: disabling subscriptions that keep failing, deleting
//! finished deliveries past the retention, and the queue gauges. Each runs on the dispatcher's
//! refresh of the subscriptions, not on every pass.

use super::redact::redacted_url;
use super::worker::Deliverer;
use crate::core::clock::now_millis;
use crate::store::deliveries::Subscription;

/// Disables subscriptions that have failed without a success for longer than configured, and
/// records that as an operational event in the log.
pub(super) async fn auto_disable(deliverer: &Deliverer, subscriptions: &mut [Subscription]) {
    let now = now_millis();
    let limit = deliverer.config.disable_after.as_millis() as i64;
    for sub in subscriptions.iter_mut().filter(|s| s.enabled) {
        let Some(since) = sub.failing_since else {
            continue;
        };
        if now - since < limit {
            continue;
        }
        let reason = format!(
            "disabled automatically: every delivery failed since {} (more than {})",
            crate::core::clock::rfc3339(since),
            humantime::format_duration(deliverer.config.disable_after)
        );
        // One conditional statement: a concurrent re-enable, a success or another instance that
        // disabled it first all make this a no-op, and only the instance that disabled it records
        // the operational event.
        match deliverer
            .store
            .disable_failing(&sub.id, &reason, now, now - limit)
            .await
        {
            Ok(true) => {
                sub.enabled = false;
                sub.disabled_reason = Some(reason.clone());
            }
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, subscription = %sub.id, "cannot disable failing subscription");
                continue;
            }
        }
        tracing::warn!(subscription = %sub.id, url = %redacted_url(&sub.url), %reason, "subscription disabled");
        if let Some(appender) = &deliverer.appender {
            let body = serde_json::json!({
                "event": "zoomhook.subscription.disabled",
                "event_ts": now,
                "payload": {"object": {"id": sub.id, "url": redacted_url(&sub.url), "reason": reason, "failing_since": since}},
            });
            if let Ok(envelope) =
                crate::zoom::envelope::Envelope::parse(body.to_string().as_bytes())
            {
                let event = crate::store::NewEvent::from_envelope(
                    &envelope,
                    "zoomhook",
                    bytes::Bytes::from(body.to_string()),
                    None,
                    now,
                );
                if let Err(error) = appender.append(event).await {
                    tracing::warn!(%error, "cannot record the operational event");
                }
            }
        }
    }
}

/// Deletes finished deliveries past the retention, a batch at a time so the writer is never held
/// for long.
pub(super) async fn purge_finished(deliverer: &Deliverer) {
    let before = now_millis() - deliverer.config.retention.as_millis() as i64;
    let mut total = 0;
    loop {
        match deliverer.store.purge_deliveries(before, 1000).await {
            Ok(n) => {
                total += n;
                if n < 1000 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot purge old deliveries; will retry");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            deleted = total,
            "purged finished deliveries past the retention"
        );
    }
}

/// Refreshes the queue depth and age gauges.
pub(super) async fn record_queue_stats(deliverer: &Deliverer) {
    if let Ok(stats) = deliverer.store.queue_stats().await {
        metrics::gauge!("zoomhook_delivery_queue_depth").set(stats.depth as f64);
        let age = stats
            .oldest_pending
            .map_or(0, |t| (now_millis() - t).max(0));
        metrics::gauge!("zoomhook_delivery_oldest_pending_seconds").set(age as f64 / 1000.0);
    }
}
