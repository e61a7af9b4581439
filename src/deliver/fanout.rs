//! Fan-out: a reader of the event log that turns each event into one delivery per matching
//! subscription, committed together with its durable cursor (exactly once per batch, like sync).
//!
//! Every subscription is considered, enabled or not: events keep queueing for a disabled
//! subscription and are delivered when it is enabled again. A subscription receives the events
//! received after it was created (older ones can be replayed). `endpoint.url_validation` is part
//! of Zoom's protocol, not an event for consumers, and is never fanned out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::subscription::patterns;
use crate::store::deliveries::{FANOUT_READER, NewDelivery, delivery_id};
use crate::store::{EventStore, ReaderPosition, StoreError};
use crate::zoom::envelope::URL_VALIDATION_EVENT;

/// Log entries per fan-out batch.
pub const BATCH: i64 = 1000;

/// How long a caught-up fan-out lets the next batch fill.
const LINGER: Duration = Duration::from_millis(10);

/// Fans out the next batch; returns how many log entries it consumed (0 at the head).
pub async fn fan_out_batch(
    store: &dyn EventStore,
    limit: i64,
) -> Result<(usize, usize), StoreError> {
    loop {
        let (from, events) = crate::store::read_after(store, FANOUT_READER, limit).await?;
        let Some(last) = events.last() else {
            return Ok((0, 0));
        };
        let to = ReaderPosition {
            seq: last.seq,
            applied: from.applied + events.len() as i64,
        };
        let subscriptions: Vec<_> = store
            .list_subscriptions()
            .await?
            .into_iter()
            .map(|s| {
                let p = patterns(&s);
                (s, p)
            })
            .collect();
        let mut deliveries = Vec::new();
        for event in events.iter().filter(|e| e.event != URL_VALIDATION_EVENT) {
            for (sub, patterns) in &subscriptions {
                if event.received_at >= sub.created_at
                    && patterns.iter().any(|p| p.matches(&event.event))
                {
                    deliveries.push(NewDelivery {
                        id: delivery_id(&event.id, &sub.id),
                        subscription_id: sub.id.clone(),
                        event_seq: event.seq,
                        event_id: event.id.clone(),
                        event: event.event.clone(),
                        entity: event
                            .object_id
                            .clone()
                            .or_else(|| event.object_uuid.clone()),
                    });
                }
            }
        }
        let queued = deliveries.len();
        if store.enqueue(from, to, deliveries).await? {
            return Ok((events.len(), queued));
        }
    }
}

/// Runs the fan-out reader until shutdown; wakes `queued` when it created deliveries.
pub async fn run(
    store: Arc<dyn EventStore>,
    mut wake: watch::Receiver<u64>,
    queued: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        match fan_out_batch(store.as_ref(), BATCH).await {
            Ok((events, deliveries)) => {
                backoff = Duration::from_millis(100);
                if deliveries > 0 {
                    queued.notify_one();
                }
                if events as i64 >= BATCH {
                    continue;
                }
                if events > 0 {
                    // Let the next batch fill briefly: fewer, larger transactions under load,
                    // at the price of at most this much added delivery delay.
                    tokio::select! {
                        _ = tokio::time::sleep(LINGER) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "fan-out batch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
