//! SQLite backend: the embedded default, so `zoomhook serve` needs no setup.
//!
//! Two database files, each with one writer:
//!
//! * **the event log** (`zoomhook.db`): the events, appended in `seq` order, and the admin
//!   tokens. Its writer only appends. WAL mode with `synchronous = FULL` makes every commit
//!   fsync the WAL before it returns: that is the durability the ack waits for. The log has no
//!   secondary index but the id's, so a group commit dirties little more than the pages its
//!   bodies fill.
//! * **the state database** (`zoomhook.state.db`, see `open::state_path`): everything derived
//!   from the log or configured beside it — entities and reader cursors, subscriptions and their
//!   deliveries, the log's secondary indexes and its dedupe keys (`indexer.rs`), source state.
//!   Sync, fan-out, claims and outcomes write here, so they never take the log's write lock and
//!   never queue in front of an ack.
//!
//! Each writer is a connection behind a `std::sync::Mutex` that is only ever locked inside
//! `spawn_blocking`, never across an `.await`. State connections attach the log read-only, so
//! a query can join deliveries to event bodies; readers get such connections from a small pool
//! so admin queries never wait for a commit.

mod checkpoint;
mod cluster;
mod dedupe_tail;
mod deliveries;
mod entities;
mod indexer;
pub mod instance_lock;
mod key_filter;
mod open;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::dedupe::{KeyOwner, plan_batch};
use super::query::Param;
use super::{
    AdminTokenRecord, AppendOutcome, EventQuery, EventStore, NewEvent, StoreError, StoreOptions,
    StoredEvent,
};
use crate::core::clock::now_millis;
use dedupe_tail::{DedupeTail, Found};
pub use open::state_path;

/// The SQLite event store.
pub struct SqliteStore {
    /// The event log's single writer; `Arc` so blocking tasks can own a handle. Only appends
    /// (and admin tokens) take it.
    log: Arc<Mutex<Connection>>,
    /// The state database's single writer (with the log attached read-only).
    state: Arc<Mutex<Connection>>,
    /// The committer's own state connection, for dedupe lookups of indexed keys: never waits
    /// for a pool or for the state writer.
    dedupe_reader: Arc<Mutex<Connection>>,
    /// Dedupe keys of log entries the indexer has not reached yet.
    tail: Arc<DedupeTail>,
    /// Wakes the log indexer after a commit.
    indexer: indexer::Wake,
    /// Idle reader connections, created on demand up to `max_readers`.
    readers: Arc<ReaderPool>,
}

struct ReaderPool {
    log: PathBuf,
    state: PathBuf,
    busy_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok(conn);
        }
        open::open_state_connection(&self.state, &self.log, self.busy_timeout)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

/// Locks a mutex, recovering from poisoning: a panic while holding the writer can only have
/// happened inside a rusqlite transaction, which rolls back on drop, so the connection is sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("sqlite worker task failed: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the log file at `path` and the state database beside it, and
    /// applies migrations. A log file from before the state database existed hands its derived
    /// tables over to it first (`indexer::adopt`).
    pub async fn open(path: &str, options: &StoreOptions) -> Result<SqliteStore, StoreError> {
        if path.is_empty() {
            return Err(StoreError::BadUrl {
                url: format!("sqlite://{path}"),
                reason: "the path is empty; use sqlite://zoomhook.db or sqlite:///var/lib/zoomhook/zoomhook.db".into(),
            });
        }
        let log_path = PathBuf::from(path);
        let state_path = open::state_path(&log_path);
        let busy_timeout = Duration::from_millis(options.busy_timeout_ms);
        let wal_limit = options.wal_limit_bytes;
        let window_ms = options.dedupe_window_ms;
        let (paths, opened) = (log_path.clone(), state_path.clone());
        let (log, state, dedupe_reader, tail) = tokio::task::spawn_blocking(move || {
            let mut log = open::open_log_writer(&paths, busy_timeout, wal_limit)?;
            let mut state = open::open_state_writer(&opened, &paths, busy_timeout, wal_limit)?;
            indexer::adopt(&mut state, &mut log)?;
            let tail = indexer::rebuild_tail(&mut state, window_ms)?;
            let dedupe_reader = Connection::open(&opened)?;
            dedupe_reader.busy_timeout(busy_timeout)?;
            dedupe_reader.pragma_update(None, "cache_size", -open::DEDUPE_READER_CACHE_KIB)?;
            open::keep_plans(&dedupe_reader)?;
            Ok::<_, StoreError>((log, state, dedupe_reader, tail))
        })
        .await
        .map_err(join_error)??;
        let log = Arc::new(Mutex::new(log));
        let state = Arc::new(Mutex::new(state));
        let tail = Arc::new(tail);
        // The log's commits sync its WAL themselves; the state's mostly do not (`NORMAL`).
        checkpoint::spawn_checkpointer(&log_path, "log", wal_limit, Arc::downgrade(&log), false)?;
        checkpoint::spawn_checkpointer(
            &state_path,
            "state",
            wal_limit,
            Arc::downgrade(&state),
            true,
        )?;
        let indexer = indexer::spawn(Arc::downgrade(&state), Arc::clone(&tail))?;
        let readers = Arc::new(ReaderPool {
            log: log_path,
            state: state_path,
            busy_timeout,
            max_idle: options.max_read_connections.max(1),
            idle: Mutex::new(Vec::new()),
        });
        build_key_filter_if_wanted(&tail, &readers);
        Ok(SqliteStore {
            log,
            state,
            dedupe_reader: Arc::new(Mutex::new(dedupe_reader)),
            tail,
            indexer,
            readers,
        })
    }

    /// The size of the dedupe key filter in use (`key_filter.rs`), in bytes: 0 until the first
    /// build after a start has finished.
    pub fn dedupe_filter_bytes(&self) -> usize {
        self.tail.filter_bytes()
    }

    /// Runs `f` on the log's writer (appends and admin tokens only).
    async fn with_log_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || f(&mut lock(&writer)))
            .await
            .map_err(join_error)?
    }

    /// Runs `f` on the state database's writer, committing with `synchronous = FULL`: for what
    /// the API acknowledges and cannot re-derive (a subscription created, a delivery retried).
    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || f(&mut lock(&writer)))
            .await
            .map_err(join_error)?
    }

    /// Like `with_writer`, for writes that do not need their own fsync: derived state (sync),
    /// fan-out and delivery bookkeeping. They commit with `synchronous = NORMAL`: atomic and safe
    /// against a process crash; a power loss can roll back only the last of them, and each is
    /// re-derived or repeated from the log (at-least-once). Only appends to the event log and
    /// acknowledged configuration wait for an fsync.
    async fn with_relaxed_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with_writer(move |conn| indexer::relaxed(conn, f))
            .await
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = f(&conn);
            readers.give_back(conn);
            result
        })
        .await
        .map_err(join_error)?
    }
}

/// The live owners of the batch's dedupe keys: from the tail first, then from the state
/// database — in that order, which is what keeps the lookup exact while the indexer moves keys
/// from one to the other (see `dedupe_tail`).
fn live_keys(
    tail: &DedupeTail,
    state: &Connection,
    batch: &[NewEvent],
    now: i64,
) -> Result<HashMap<String, KeyOwner>, StoreError> {
    let mut live = HashMap::new();
    let mut unknown = std::collections::HashSet::new();
    let mut ruled_out = 0u64;
    for key in batch.iter().flat_map(NewEvent::dedupe_keys) {
        if live.contains_key(&key) || unknown.contains(&key) {
            continue;
        }
        match tail.lookup(&key, now) {
            Found::Live(owner) => {
                live.insert(key, owner);
            }
            Found::NotStored => ruled_out += 1,
            Found::MaybeStored => {
                unknown.insert(key);
            }
        }
    }
    metrics::counter!("zoomhook_dedupe_lookups_total", "answered_by" => "filter")
        .increment(ruled_out);
    metrics::counter!("zoomhook_dedupe_lookups_total", "answered_by" => "database")
        .increment(unknown.len() as u64);
    if unknown.is_empty() {
        return Ok(live);
    }
    // In key order: the B-tree is walked left to right, each page looked at once (see
    // `indexer::write_keys`).
    let mut unknown: Vec<String> = unknown.into_iter().collect();
    unknown.sort_unstable();
    // One read transaction: one snapshot for every lookup, taken after the tail was read.
    let tx = state.unchecked_transaction()?;
    {
        let mut find = tx.prepare_cached(
            "SELECT event_id, seq FROM dedupe_keys WHERE key = ?1 AND expires_at > ?2",
        )?;
        for key in unknown {
            let owner = find
                .query_row(params![key, now], |r| {
                    Ok(KeyOwner {
                        event_id: r.get(0)?,
                        seq: r.get(1)?,
                    })
                })
                .optional()?;
            if let Some(owner) = owner {
                live.insert(key, owner);
            }
        }
    }
    tx.finish()?;
    Ok(live)
}

/// Writes the new events of `batch` in one transaction and returns the plan it carried out.
fn append_in_transaction(
    conn: &mut Connection,
    batch: &[NewEvent],
    live: HashMap<String, KeyOwner>,
) -> Result<super::dedupe::BatchPlan, StoreError> {
    // Durability by construction: whatever an earlier use of this connection left behind, the
    // append that acks events commits with a WAL fsync.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // IMMEDIATE takes the log's write lock before the head is read, so `seq` cannot race.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let plan = plan_batch(batch, head, live);
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (seq, id, source, event, event_ts, account_id, object_id, object_uuid, received_at, request_id, dedupe_key, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for &(index, seq) in &plan.inserts {
            let e = &batch[index];
            insert.execute(params![
                seq,
                e.id,
                e.source,
                e.event,
                e.event_ts,
                e.account_id,
                e.object_id,
                e.object_uuid,
                e.received_at,
                e.request_id,
                e.semantic_key,
                &e.body[..],
            ])?;
        }
    }
    tx.commit()?;
    Ok(plan)
}

/// Appends a batch: looks its keys up, commits the new events to the log (fsync'd), then
/// records their keys in the tail for the indexer. Runs on a blocking thread.
fn append_batch_blocking(
    store: &AppendHandles,
    batch: &[NewEvent],
    dedupe_window_ms: i64,
) -> Result<Vec<AppendOutcome>, StoreError> {
    if store.tail.len() > dedupe_tail::MAX_KEYS {
        return Err(StoreError::Unavailable(format!(
            "the log indexer is behind ({} dedupe keys wait for the state database); \
             answering 503 until it catches up",
            store.tail.len()
        )));
    }
    let now = now_millis();
    let live = live_keys(&store.tail, &lock(&store.dedupe_reader), batch, now)?;
    let plan = append_in_transaction(&mut lock(&store.log), batch, live)?;
    store.tail.record(
        plan.keys,
        now.saturating_add(dedupe_window_ms),
        plan.new_head,
    );
    build_key_filter_if_wanted(&store.tail, &store.readers);
    Ok(plan.outcomes)
}

/// Starts building the dedupe key filter if there is none yet or the one in use is full.
fn build_key_filter_if_wanted(tail: &Arc<DedupeTail>, readers: &Arc<ReaderPool>) {
    if let Some(stored) = tail.filter_wanted() {
        let readers = Arc::clone(readers);
        key_filter::spawn_build(tail, move || readers.take(), stored);
    }
}

/// What an append needs, cloned into its blocking task.
struct AppendHandles {
    log: Arc<Mutex<Connection>>,
    dedupe_reader: Arc<Mutex<Connection>>,
    tail: Arc<DedupeTail>,
    /// For a build of the dedupe key filter.
    readers: Arc<ReaderPool>,
}

/// The parameters of a generated query (see `query.rs`), bound in order.
fn sql_values(
    params: Vec<Param>,
) -> rusqlite::ParamsFromIter<impl Iterator<Item = rusqlite::types::Value>> {
    params_from_iter(params.into_iter().map(|p| match p {
        Param::Text(s) => rusqlite::types::Value::Text(s),
        Param::Int(i) => rusqlite::types::Value::Integer(i),
    }))
}

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get(0)?,
        id: r.get(1)?,
        source: r.get(2)?,
        event: r.get(3)?,
        event_ts: r.get(4)?,
        account_id: r.get(5)?,
        object_id: r.get(6)?,
        object_uuid: r.get(7)?,
        received_at: r.get(8)?,
        request_id: r.get(9)?,
        semantic_key: r.get(10)?,
        body: r.get(11)?,
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_batch(
        &self,
        batch: Vec<NewEvent>,
        dedupe_window_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let batch: Vec<NewEvent> = batch.into_iter().map(NewEvent::into_storable).collect();
        let handles = AppendHandles {
            log: Arc::clone(&self.log),
            dedupe_reader: Arc::clone(&self.dedupe_reader),
            tail: Arc::clone(&self.tail),
            readers: Arc::clone(&self.readers),
        };
        // The committer runs on a thread of its own (a current-thread runtime, see
        // `core::own_thread`): there, blocking on SQLite blocks nothing else, and
        // handing the batch to the blocking pool and back only added two thread switches per
        // commit on the ack path. Anywhere else (a shared runtime) the blocking pool keeps the
        // runtime's workers free.
        let outcomes = if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            append_batch_blocking(&handles, &batch, dedupe_window_ms)?
        } else {
            tokio::task::spawn_blocking(move || {
                append_batch_blocking(&handles, &batch, dedupe_window_ms)
            })
            .await
            .map_err(join_error)??
        };
        self.indexer.wake();
        Ok(outcomes)
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let (sql, params) = indexer::query_sql(query);
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(sql_values(params), row_to_event)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let id = crate::core::storable::key(id).into_owned();
        self.with_reader(move |conn| {
            let sql = format!(
                "SELECT {} FROM events WHERE id = ?1",
                super::query::EVENT_COLUMNS
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], row_to_event)
                .optional()?)
        })
        .await
    }

    async fn head_seq(&self) -> Result<i64, StoreError> {
        self.with_reader(|conn| {
            Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn purge_expired_dedupe_keys(&self, now_ms: i64, limit: i64) -> Result<u64, StoreError> {
        let tail = Arc::clone(&self.tail);
        self.with_relaxed_writer(move |conn| {
            // Every committed key is in the table first, so what the purge leaves is exactly
            // what is live at `now_ms`.
            indexer::catch_up_locked(conn, &tail)?;
            let n = conn.execute(
                "DELETE FROM dedupe_keys WHERE key IN
                   (SELECT key FROM dedupe_keys WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
                [now_ms, limit],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn insert_admin_token(&self, token: &AdminTokenRecord) -> Result<(), StoreError> {
        let t = token.clone();
        self.with_log_writer(move |conn| {
            conn.execute(
                "INSERT INTO admin_tokens (id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![t.id, t.name, t.token_hash, t.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn count_admin_tokens(&self) -> Result<i64, StoreError> {
        self.with_reader(|conn| {
            Ok(conn.query_row("SELECT COUNT(*) FROM admin_tokens", [], |r| r.get(0))?)
        })
        .await
    }

    async fn find_admin_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let hash = token_hash.to_owned();
        self.with_reader(move |conn| {
            Ok(conn
                .prepare_cached("SELECT id FROM admin_tokens WHERE token_hash = ?1")?
                .query_row([hash], |r| r.get(0))
                .optional()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_append_commits_with_full_sync_whatever_the_connection_did_before() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("z.db");
        let store = SqliteStore::open(&path.display().to_string(), &StoreOptions::default())
            .await
            .expect("open");
        // As if a relaxed write had panicked between its two pragmas.
        store
            .with_log_writer(|conn| Ok(conn.pragma_update(None, "synchronous", "OFF")?))
            .await
            .expect("pragma");
        let body = bytes::Bytes::from_static(br#"{"event":"x.y","event_ts":1}"#);
        let envelope = crate::zoom::envelope::Envelope::parse(&body).expect("envelope");
        let event = NewEvent::from_envelope(&envelope, "zoom", body, None, 1);
        store
            .append_batch(vec![event], 1_000)
            .await
            .expect("append");
        let level: i64 = store
            .with_log_writer(|conn| Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?))
            .await
            .expect("read pragma");
        assert_eq!(level, 2, "FULL");
    }
}
