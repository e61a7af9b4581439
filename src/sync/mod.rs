//! Sync: a reader of the event log that keeps the current state of the Zoom entities the events
//! describe (meetings, occurrences, participants and attendance, recordings, users, webinars).
//!
//! The reader takes the log in `seq` order, a batch at a time, from its durable cursor. For each
//! batch it turns events into per-entity patches ([`rules`]), merges them into the stored documents
//! ([`doc`]), projects the changed documents into rows ([`project`]) and commits the rows together
//! with the new cursor in one transaction, guarded by the cursor it started from. So a crash or
//! restart resumes exactly after the last committed batch, and two instances never both apply a
//! batch. Convergence rules are in `docs/sync.md`.

pub mod doc;
pub mod project;
pub mod rules;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::doc::EntityDoc;
use self::project::EntityRow;
use self::rules::{Kind, LogEntry};
use crate::store::{EventStore, ReaderPosition, StoreError};

/// The name of the sync reader's cursor.
pub const READER: &str = "sync";

/// Log entries per batch (one transaction).
pub const BATCH: i64 = 1000;

/// How long a caught-up reader lets the next batch fill (the bound it adds to the sync lag).
const LINGER: Duration = Duration::from_millis(20);

/// How often an idle reader looks for events another instance appended.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What one call of [`apply_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Log entries consumed (0 when the reader is at the head).
    pub events: usize,
    /// Entities written.
    pub entities: usize,
    /// The reader's position after the batch.
    pub position: ReaderPosition,
}

/// Applies the next batch of at most `limit` log entries. Retries by itself when another
/// instance moved the cursor in between.
pub async fn apply_batch(store: &dyn EventStore, limit: i64) -> Result<BatchOutcome, StoreError> {
    loop {
        let (from, events) = crate::store::read_after(store, READER, limit).await?;
        let Some(last) = events.last() else {
            return Ok(BatchOutcome {
                position: from,
                ..Default::default()
            });
        };
        let to = ReaderPosition {
            seq: last.seq,
            applied: from.applied + events.len() as i64,
        };
        let changes: Vec<rules::Change> = events
            .iter()
            .flat_map(|e| {
                rules::changes(LogEntry {
                    seq: e.seq,
                    event: &e.event,
                    event_ts: e.event_ts,
                    received_at: e.received_at,
                    body: &e.body,
                })
            })
            .collect();
        let rows = merge_changes(store, changes).await?;
        let entities = rows.len();
        if store.commit_reader_batch(READER, from, to, rows).await? {
            metrics::counter!("zoomhook_sync_applied_events_total").increment(events.len() as u64);
            return Ok(BatchOutcome {
                events: events.len(),
                entities,
                position: to,
            });
        }
        tracing::debug!("sync cursor moved under this batch (another instance); retrying");
    }
}

/// Merges `changes` into the stored documents of the entities they touch and returns the rows
/// of the entities that changed.
async fn merge_changes(
    store: &dyn EventStore,
    changes: Vec<rules::Change>,
) -> Result<Vec<EntityRow>, StoreError> {
    let keys = changes
        .iter()
        .map(|c| (c.entity.kind.as_str().to_owned(), c.entity.key.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut set = EntitySet::default();
    for row in store.load_entities(keys).await? {
        set.load(&row)?;
    }
    set.apply(changes);
    Ok(set.changed_rows())
}

/// A working set of entity documents: loaded from rows, changed by patches, projected back.
/// Also the in-memory model the property tests compare orders with.
#[derive(Debug, Default)]
pub struct EntitySet {
    entities: BTreeMap<(Kind, String), Working>,
}

#[derive(Debug, Default)]
struct Working {
    parent: Option<String>,
    doc: EntityDoc,
    changed: bool,
}

impl EntitySet {
    /// Adds a stored row (unchanged).
    pub fn load(&mut self, row: &EntityRow) -> Result<(), StoreError> {
        let Some(kind) = Kind::parse(&row.kind) else {
            return Ok(());
        };
        let doc = serde_json::from_str::<EntityDoc>(&row.doc).map_err(|e| {
            StoreError::Unavailable(format!(
                "the stored document of {} {} is unreadable: {e}",
                row.kind, row.key
            ))
        })?;
        self.entities.insert(
            (kind, row.key.clone()),
            Working {
                parent: row.parent.clone(),
                doc,
                changed: false,
            },
        );
        Ok(())
    }

    /// Merges patches; entities not loaded start empty.
    pub fn apply(&mut self, changes: Vec<rules::Change>) {
        for change in changes {
            let entity = self
                .entities
                .entry((change.entity.kind, change.entity.key))
                .or_default();
            if entity.parent.is_none() && change.entity.parent.is_some() {
                entity.parent = change.entity.parent;
                entity.changed = true;
            }
            entity.changed |= entity.doc.merge(change.patch);
        }
    }

    /// Applies log entries (for tests, benchmarks and tools working in memory).
    pub fn apply_entries<'a>(&mut self, entries: impl IntoIterator<Item = LogEntry<'a>>) {
        for entry in entries {
            self.apply(rules::changes(entry));
        }
    }

    /// Rows of the entities that changed since they were loaded.
    pub fn changed_rows(self) -> Vec<EntityRow> {
        self.rows(true)
    }

    /// Rows of every entity in the set.
    pub fn all_rows(self) -> Vec<EntityRow> {
        self.rows(false)
    }

    fn rows(self, only_changed: bool) -> Vec<EntityRow> {
        self.entities
            .into_iter()
            .filter(|(_, w)| w.changed || !only_changed)
            .map(|((kind, key), w)| project::project(kind, &key, w.parent.as_deref(), &w.doc))
            .collect()
    }
}

/// Runs the sync reader until `shutdown` turns true: applies batches while there are events,
/// then waits for `wake` (an append in this process) or polls (appends by other instances).
pub async fn run(
    store: Arc<dyn EventStore>,
    mut wake: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let started = Instant::now();
        match apply_batch(store.as_ref(), BATCH).await {
            Ok(outcome) => {
                backoff = Duration::from_millis(100);
                if outcome.events > 0 {
                    metrics::histogram!("zoomhook_sync_batch_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                if let Ok(head) = store.head_seq().await {
                    metrics::gauge!("zoomhook_sync_lag_events")
                        .set((head - outcome.position.seq).max(0) as f64);
                }
                if outcome.events as i64 >= BATCH {
                    continue;
                }
                if outcome.events > 0 {
                    // Caught up with a partial batch: let the next one fill for a moment, so a
                    // steady stream is applied in few large transactions instead of many small
                    // ones competing with ingest for the writer.
                    tokio::select! {
                        _ = tokio::time::sleep(LINGER) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "sync batch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Drops every synchronised entity and replays the whole log; `progress(applied, head)` is called
/// after each batch.
pub async fn rebuild(
    store: &dyn EventStore,
    mut progress: impl FnMut(i64, i64),
) -> Result<ReaderPosition, StoreError> {
    store.reset_entities(READER).await?;
    loop {
        let outcome = apply_batch(store, BATCH).await?;
        let head = store.head_seq().await?;
        progress(outcome.position.applied, head);
        if outcome.events == 0 {
            return Ok(outcome.position);
        }
    }
}

/// Applies batches until the reader is at the log head (used by `demo`, tests and benchmarks).
pub async fn catch_up(store: &dyn EventStore) -> Result<ReaderPosition, StoreError> {
    loop {
        let outcome = apply_batch(store, BATCH).await?;
        if outcome.events == 0 {
            return Ok(outcome.position);
        }
    }
}
