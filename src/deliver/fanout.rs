//! Fan-out: a reader of the event log that turns each event into one delivery per matching
//! subscription, committed together with its durable cursor (exactly once per batch, like sync).
//!
//! Every subscription is considered, enabled or not: events keep queueing for a disabled
//! subscription and are delivered when it is enabled again. A subscription receives the events
//! received after it was created (older ones can be replayed). `endpoint.url_validation` is part
//! of Zoom's protocol, not an event for consumers, and is never fanned out.
//!
//! Fan-out reads only what it decides with — seq, id, event name, entity, time of receipt — never
//! the bodies ([`DeliveryStore::event_heads_after`]); the claim that sends a delivery reads its
//! body, once. The subscriptions are re-read every batch (one created a moment ago must get the
//! events received after it), but their patterns are parsed only when a subscription is new or
//! was written since.
//!
//! [`DeliveryStore::event_heads_after`]: crate::store::deliveries::DeliveryStore::event_heads_after

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::core::pattern::EventPattern;
use crate::store::deliveries::{FANOUT_READER, NewDelivery, delivery_id};
use crate::store::{EventStore, ReaderPosition, StoreError};
use crate::zoom::envelope::URL_VALIDATION_EVENT;

/// Log entries per fan-out batch.
pub const BATCH: i64 = 1000;

/// How long a fan-out under load lets the next batch fill.
const LINGER: Duration = Duration::from_millis(10);
/// How long it lets the next batch fill after a small one: at an ordinary rate a delivery is
/// queued within a few milliseconds of its ack instead of after the full linger, and the
/// transactions still carry a few events each.
const SHORT_LINGER: Duration = Duration::from_millis(2);
/// A batch of at least this many entries means load: the next one lingers fully.
const LINGER_FROM: usize = 64;

/// What fan-out needs of a subscription, parsed once per revision.
struct Filter {
    revision: i64,
    created_at: i64,
    patterns: Vec<EventPattern>,
}

/// The fan-out reader's memory between batches: each subscription's parsed filter.
#[derive(Default)]
pub struct FanOut {
    filters: HashMap<String, Filter>,
}

impl FanOut {
    /// Fans out the next batch of at most `limit` log entries; returns how many entries it
    /// consumed (0 at the head) and how many deliveries it queued.
    pub async fn batch(
        &mut self,
        store: &dyn EventStore,
        limit: i64,
    ) -> Result<(usize, usize), StoreError> {
        loop {
            let from = store.reader_position(FANOUT_READER).await?;
            let events = store.event_heads_after(from.seq, limit).await?;
            let Some(last) = events.last() else {
                return Ok((0, 0));
            };
            let to = ReaderPosition {
                seq: last.seq,
                applied: from.applied + events.len() as i64,
            };
            self.reload(store).await?;
            let mut deliveries = Vec::new();
            for event in events.iter().filter(|e| e.event != URL_VALIDATION_EVENT) {
                for (id, filter) in &self.filters {
                    if event.received_at >= filter.created_at
                        && filter.patterns.iter().any(|p| p.matches(&event.event))
                    {
                        deliveries.push(NewDelivery {
                            id: delivery_id(&event.id, id),
                            subscription_id: id.clone(),
                            event_seq: event.seq,
                            event_id: event.id.clone(),
                            event: event.event.clone(),
                            entity: event.entity.clone(),
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

    /// Re-reads the subscriptions; parses the patterns of new and rewritten ones, forgets
    /// deleted ones.
    async fn reload(&mut self, store: &dyn EventStore) -> Result<(), StoreError> {
        let subscriptions = store.list_subscriptions().await?;
        let mut filters = HashMap::with_capacity(subscriptions.len());
        for sub in subscriptions {
            let filter = match self.filters.remove(&sub.id) {
                Some(f) if f.revision == sub.revision => f,
                _ => Filter {
                    revision: sub.revision,
                    created_at: sub.created_at,
                    patterns: EventPattern::parse_list(&sub.events).unwrap_or_default(),
                },
            };
            filters.insert(sub.id, filter);
        }
        self.filters = filters;
        Ok(())
    }
}

/// Fans out the next batch with subscriptions parsed afresh (a one-off, e.g. to fill a backlog);
/// the reader keeps a [`FanOut`] across batches.
pub async fn fan_out_batch(
    store: &dyn EventStore,
    limit: i64,
) -> Result<(usize, usize), StoreError> {
    FanOut::default().batch(store, limit).await
}
/// Runs the fan-out reader until shutdown; wakes `queued` when it created deliveries.
pub async fn run(
    store: Arc<dyn EventStore>,
    mut wake: watch::Receiver<u64>,
    queued: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut fan_out = FanOut::default();
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        match fan_out.batch(store.as_ref(), BATCH).await {
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
                    let linger = if events >= LINGER_FROM {
                        LINGER
                    } else {
                        SHORT_LINGER
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(linger) => {}
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
