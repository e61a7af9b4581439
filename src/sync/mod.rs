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
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::doc::EntityDoc;
use self::project::EntityRow;
use self::rules::{Kind, LogEntry};
use crate::core::clock::now_millis;
use crate::store::group_commit::EventAppender;
use crate::store::{EventStore, NewEvent, QuarantinedEvent, ReaderPosition, StoreError};

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
            .filter(|e| e.source != crate::store::PUBLISHED_SOURCE)
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
        // Tied to this entity's stored data, not to the store being down: `Rejected`, so the
        // reader isolates and, if it persists, quarantines the entry instead of stalling.
        let doc = serde_json::from_str::<EntityDoc>(&row.doc).map_err(|e| {
            StoreError::Rejected(format!(
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

/// How many times one entry is tried on its own before it is quarantined.
const QUARANTINE_AFTER: u32 = 3;

/// What the reader is doing about a batch the store refused.
#[derive(Debug, Default)]
struct Isolation {
    /// While `Some(seq)`, entries up to `seq` are applied one at a time, to find the one the
    /// store refuses and let every other one through.
    until: Option<i64>,
    /// Consecutive refusals of the entry at the cursor.
    failures: u32,
}

impl Isolation {
    fn batch_size(&self) -> i64 {
        if self.until.is_some() { 1 } else { BATCH }
    }
}

/// Runs the sync reader until `shutdown` turns true: applies batches while there are events,
/// then waits for `wake` (an append in this process) or polls (appends by other instances).
///
/// A batch the store refuses because of a value in it (`StoreError::Rejected`) is retried one
/// entry at a time; an entry refused [`QUARANTINE_AFTER`] times on its own is quarantined —
/// recorded with its error, skipped, and announced as a `zoomhook.sync.quarantined` event — so
/// one bad event never stalls sync for everything after it. A store that is down is retried
/// with backoff, never quarantined.
pub async fn run(
    store: Arc<dyn EventStore>,
    appender: Option<EventAppender>,
    mut wake: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut isolation = Isolation::default();
    while !*shutdown.borrow() {
        let started = Instant::now();
        let result = apply_batch(store.as_ref(), isolation.batch_size()).await;
        report_lag(store.as_ref()).await;
        let pause = match result {
            Ok(outcome) => {
                backoff = Duration::from_millis(100);
                isolation.failures = 0;
                if isolation
                    .until
                    .is_some_and(|until| outcome.position.seq >= until)
                {
                    isolation.until = None;
                }
                if outcome.events > 0 {
                    metrics::histogram!("zoomhook_sync_batch_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                match outcome.events as i64 {
                    0 => Pause::Idle,
                    n if n >= isolation.batch_size() => continue,
                    // Caught up with a partial batch: let the next one fill for a moment, so a
                    // steady stream is applied in few large transactions instead of many small
                    // ones competing with ingest for the writer.
                    _ => Pause::Linger,
                }
            }
            Err(StoreError::Rejected(reason)) => {
                match refused(store.as_ref(), appender.as_ref(), &mut isolation, reason).await {
                    true => continue,
                    false => Pause::Backoff,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "sync batch failed; retrying");
                Pause::Backoff
            }
        };
        let sleep = match pause {
            Pause::Linger => LINGER,
            Pause::Idle => IDLE_POLL,
            Pause::Backoff => {
                let this = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                this
            }
        };
        tokio::select! {
            _ = wake.changed(), if matches!(pause, Pause::Idle) => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// What the reader waits for before its next batch.
enum Pause {
    /// A partial batch was applied: let the next one fill.
    Linger,
    /// At the head: wait for a wake-up or poll.
    Idle,
    /// The last batch failed.
    Backoff,
}

/// Handles a batch the store refused; returns whether to go on at once.
async fn refused(
    store: &dyn EventStore,
    appender: Option<&EventAppender>,
    isolation: &mut Isolation,
    reason: String,
) -> bool {
    if isolation.until.is_none() {
        tracing::warn!(%reason, "the store refused a sync batch; applying its entries one at a time");
        isolation.until = Some(store.head_seq().await.unwrap_or(i64::MAX));
        return true;
    }
    isolation.failures += 1;
    if isolation.failures < QUARANTINE_AFTER {
        return false;
    }
    isolation.failures = 0;
    match quarantine_next(store, appender, &reason).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "could not quarantine the entry sync cannot apply; retrying");
            false
        }
    }
}

/// Records the entry after the reader's cursor as quarantined, moves the cursor past it and
/// writes a `zoomhook.sync.quarantined` event to the log.
async fn quarantine_next(
    store: &dyn EventStore,
    appender: Option<&EventAppender>,
    reason: &str,
) -> Result<(), StoreError> {
    let (from, entries) = crate::store::read_after(store, READER, 1).await?;
    let Some(entry) = entries.first() else {
        return Ok(());
    };
    let now = now_millis();
    let record = QuarantinedEvent {
        seq: entry.seq,
        event_id: entry.id.clone(),
        event: entry.event.clone(),
        error: crate::core::storable::text(reason).into_owned(),
        quarantined_at: now,
    };
    if !store.quarantine_reader_entry(READER, from, record).await? {
        return Ok(()); // another instance moved the cursor; nothing to do here
    }
    metrics::counter!("zoomhook_sync_quarantined_total").increment(1);
    tracing::error!(seq = entry.seq, id = %entry.id, %reason, "sync quarantined a log entry it cannot apply");
    if let Some(appender) = appender {
        let object = serde_json::json!({
            "id": entry.id, "seq": entry.seq, "event": entry.event, "error": reason,
        });
        let event = NewEvent::operational("zoomhook.sync.quarantined", object, now);
        if let Err(error) = appender.append(event).await {
            tracing::warn!(%error, "cannot record the operational event");
        }
    }
    Ok(())
}

/// Sets `zoomhook_sync_lag_events` from the log head and the reader's durable cursor, whatever
/// the last batch did, so the gauge tells the truth while the reader is stuck too.
async fn report_lag(store: &dyn EventStore) {
    if let (Ok(head), Ok(position)) = (store.head_seq().await, store.reader_position(READER).await)
    {
        metrics::gauge!("zoomhook_sync_lag_events").set((head - position.seq).max(0) as f64);
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
