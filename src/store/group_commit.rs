//! Group commit: many concurrent requests share one durable transaction.
//!
//! Each request hands its event to the committer task and waits for the outcome. The committer
//! takes everything that queued up while the previous commit was syncing and commits it as one
//! batch. Under load, batches grow by themselves (the fsync is paid once per batch, not once per
//! event); when idle, a lone event is committed at once with no added delay. Acknowledging before
//! the commit would be faster and would lose events on a crash, which zoomhook never does.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{AppendOutcome, EventStore, NewEvent, StoreError};
use crate::metrics as m;

/// Largest batch one transaction takes; bounds transaction size and the latency of its members.
pub const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

/// Handle to the committer task. Cloning is cheap; the task ends (after committing everything
/// already queued) once every handle is dropped.
#[derive(Clone)]
pub struct EventAppender {
    queue: mpsc::Sender<(NewEvent, Reply)>,
}

impl EventAppender {
    /// Starts the committer task for `store`.
    pub fn start(
        store: Arc<dyn EventStore>,
        dedupe_window_ms: i64,
    ) -> (EventAppender, JoinHandle<()>) {
        // The queue is bounded so a stalled store exerts back-pressure on requests instead of
        // growing memory without limit.
        let (queue, rx) = mpsc::channel(MAX_BATCH * 8);
        let task = tokio::spawn(run_committer(store, dedupe_window_ms, rx));
        (EventAppender { queue }, task)
    }

    /// Appends one event and returns once it is durably committed (or known to be a duplicate).
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the committer has shut down".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Unavailable("the committer stopped before answering".into()))?
    }
}

async fn run_committer(
    store: Arc<dyn EventStore>,
    dedupe_window_ms: i64,
    mut rx: mpsc::Receiver<(NewEvent, Reply)>,
) {
    let mut events = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while let Some((event, reply)) = rx.recv().await {
        events.push(event);
        replies.push(reply);
        while events.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((event, reply)) => {
                    events.push(event);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let size = events.len();
        let started = Instant::now();
        let result = store
            .append_batch(std::mem::take(&mut events), dedupe_window_ms)
            .await;
        m::record_commit(size, started.elapsed(), result.is_ok());
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    // A requester that gave up (client disconnected) no longer listens; the event
                    // is committed regardless, and Zoom's retry will be answered as a duplicate.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(%error, batch = size, "commit failed; answering 503 so Zoom retries");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(StoreError::Unavailable(error.to_string())));
                }
            }
        }
    }
}
