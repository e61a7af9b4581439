//! SQLite backend: the embedded default, so `zoomhook serve` needs no setup.
//!
//! One writer connection (SQLite allows one writer at a time anyway) behind a `std::sync::Mutex`
//! that is only ever locked inside `spawn_blocking`, never across an `.await`; readers get their
//! own connections from a small pool so admin queries never wait for a commit. WAL mode with
//! `synchronous = FULL` makes every commit fsync the WAL before it returns: that is the
//! durability the ack waits for.

mod cluster;
mod deliveries;
mod entities;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::dedupe::{KeyOwner, plan_batch};
use super::migrations::{self, Migration};
use super::query::Param;
use super::{
    AdminTokenRecord, AppendOutcome, EventQuery, EventStore, NewEvent, StoreError, StoreOptions,
    StoredEvent,
};
use crate::core::clock::now_millis;

/// The SQLite event store.
pub struct SqliteStore {
    /// The single writer; `Arc` so blocking tasks can own a handle.
    writer: Arc<Mutex<Connection>>,
    /// Idle reader connections, created on demand up to `max_readers`.
    readers: Arc<ReaderPool>,
}

struct ReaderPool {
    path: PathBuf,
    busy_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok(conn);
        }
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(self.busy_timeout)?;
        Ok(conn)
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
    /// Opens (creating if needed) the database file at `path` and applies migrations.
    pub async fn open(path: &str, options: &StoreOptions) -> Result<SqliteStore, StoreError> {
        if path.is_empty() {
            return Err(StoreError::BadUrl {
                url: format!("sqlite://{path}"),
                reason: "the path is empty; use sqlite://zoomhook.db or sqlite:///var/lib/zoomhook/zoomhook.db".into(),
            });
        }
        let path = PathBuf::from(path);
        let busy_timeout = Duration::from_millis(options.busy_timeout_ms);
        let path_for_open = path.clone();
        let wal_limit = options.wal_limit_bytes;
        let writer = tokio::task::spawn_blocking(move || {
            open_writer(&path_for_open, busy_timeout, wal_limit)
        })
        .await
        .map_err(join_error)??;
        let writer = Arc::new(Mutex::new(writer));
        spawn_checkpointer(&path, options.wal_limit_bytes, Arc::downgrade(&writer))?;
        Ok(SqliteStore {
            writer,
            readers: Arc::new(ReaderPool {
                path,
                busy_timeout,
                max_idle: options.max_read_connections.max(1),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || f(&mut lock(&writer)))
            .await
            .map_err(join_error)?
    }

    /// Like `with_writer`, for writes that do not need their own fsync: derived state (sync),
    /// fan-out and delivery bookkeeping. They commit with `synchronous = NORMAL`: atomic, safe
    /// against a process crash, and made durable by the next FULL commit (the WAL is written in
    /// order); a power loss can roll back only the last of them, and each is re-derived or
    /// repeated from the log (at-least-once). Only appends to the event log wait for an fsync.
    async fn with_relaxed_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with_writer(move |conn| {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let result = f(conn);
            let restored = conn.pragma_update(None, "synchronous", "FULL");
            let value = result?;
            restored?;
            Ok(value)
        })
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

fn open_writer(
    path: &Path,
    busy_timeout: Duration,
    wal_limit: u64,
) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    restrict_to_owner(path)?;
    let mut conn = Connection::open(path).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot open SQLite database {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "SQLite refused WAL mode (got {mode}) for {}",
            path.display()
        )));
    }
    // FULL: in WAL mode every commit syncs the WAL, so a committed event survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Checkpoints run on their own thread (see `checkpointer`), never inside a commit the acks
    // wait for; the writer keeps a larger page cache so index pages are not re-read per batch.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // When the WAL starts over, its file is cut back to the limit.
    conn.pragma_update(None, "journal_size_limit", wal_limit as i64)?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    apply_migrations(&mut conn, migrations::SQLITE)?;
    Ok(conn)
}

/// Creates the database file owner-only (0600), and tightens an existing one and its WAL and
/// shared-memory files: they hold subscription secrets, subscriber URLs with their tokens and
/// every event body. SQLite creates the `-wal` and `-shm` files with the database file's mode.
#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let context = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot {what} {}: {e}", p.display()))
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| context("create", path, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| context("restrict the permissions of", &file, e))?;
            tracing::info!(file = %file.display(), "database file made owner-only (0600)");
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Page cache of the writer connection, in KiB.
const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// Restart attempts are at most this frequent (each one holds appends back for a moment).
const RESTART_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Longest a RESTART checkpoint holds appends back while it waits for readers.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(100);
/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Starts the thread that checkpoints the WAL in the background, on its own connection.
///
/// A PASSIVE checkpoint never blocks the writer or readers; it copies what it can and the writer
/// restarts the WAL from the beginning once everything is copied. Doing this inline (SQLite's
/// auto-checkpoint) would put a large write and an extra fsync of the database file inside some
/// commits and so into the tail latency of their acks.
///
/// But the WAL only restarts when no reader is still using it, and under sustained load (sync,
/// fan-out and the admin API read all the time) that moment may never come: the WAL then grows
/// without bound (1 GB in 15 s was seen). So once it passes `wal_limit` bytes, right after a
/// PASSIVE checkpoint has copied nearly everything, a RESTART checkpoint holds new writes back
/// while the readers finish (they are short) so the next commit starts the WAL over, and
/// `journal_size_limit` cuts the file back. Each attempt costs appends a pause — the wait for
/// readers, bounded by [`CHECKPOINT_BUSY`], and copying what PASSIVE could not — which grows
/// with the limit: measured in `bench/ingest` (`bench/RESULTS.md`), 64 MiB with at most one
/// attempt a second gave an ack p99 of 29 ms and a worst ack of 0.41 s, 1 GiB a p99 of 25 ms but
/// a worst ack of 1.7 s (Zoom gives up at 3 s), no limit 27 ms and a WAL of gigabytes. The wait is bounded, so a
/// reader that never finishes (a backup tool holding a read transaction) costs appends at most
/// that pause per attempt, not seconds; such a reader keeps the WAL from restarting, which is
/// SQLite's rule, and the `zoomhook_sqlite_wal_bytes` gauge shows it. The thread ends when the
/// store is dropped.
fn spawn_checkpointer(
    path: &Path,
    wal_limit: u64,
    writer: std::sync::Weak<Mutex<Connection>>,
) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(CHECKPOINT_BUSY)?;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let recorder = crate::metrics::current();
    let checkpoint = move |mode: &str| {
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        match conn.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
            Ok(0) => {}
            Ok(_) => tracing::debug!(mode, "WAL checkpoint could not finish (busy); will retry"),
            Err(error) => tracing::warn!(%error, mode, "WAL checkpoint failed; will retry"),
        }
    };
    let wal_bytes = move || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut last_restart = std::time::Instant::now() - RESTART_AT_MOST_EVERY;
            while writer.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                checkpoint("PASSIVE");
                let size = wal_bytes();
                // Each attempt holds appends back briefly: rarely, and only past the limit.
                if size > wal_limit && last_restart.elapsed() >= RESTART_AT_MOST_EVERY {
                    last_restart = std::time::Instant::now();
                    checkpoint("RESTART");
                }
                crate::metrics::on_thread(recorder.as_ref(), || {
                    metrics::gauge!("zoomhook_sqlite_wal_bytes").set(size as f64);
                });
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

fn apply_migrations(conn: &mut Connection, all: &[Migration]) -> Result<(), StoreError> {
    conn.execute(migrations::CREATE_TABLE, [])?;
    for m in all {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [m.version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            tx.execute_batch(m.sql).map_err(|e| StoreError::Migration {
                version: m.version,
                reason: e.to_string(),
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![m.version, m.name, now_millis()],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn append_in_transaction(
    conn: &mut Connection,
    batch: &[NewEvent],
    dedupe_window_ms: i64,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let now = now_millis();
    // Durability by construction: whatever an earlier use of this connection left behind (a
    // relaxed derived write that panicked half-way, say), the append that acks events commits
    // with a WAL fsync.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // IMMEDIATE takes the write lock before the reads below, so the dedupe plan cannot race.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let mut live = HashMap::new();
    {
        let mut find = tx.prepare_cached(
            "SELECT event_id, seq FROM dedupe_keys WHERE key = ?1 AND expires_at > ?2",
        )?;
        for key in batch.iter().flat_map(NewEvent::dedupe_keys) {
            if live.contains_key(&key) {
                continue;
            }
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
        let mut upsert_key = tx.prepare_cached(
            "INSERT INTO dedupe_keys (key, event_id, seq, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, seq = excluded.seq, expires_at = excluded.expires_at
             WHERE dedupe_keys.expires_at <= ?5",
        )?;
        let expires_at = now.saturating_add(dedupe_window_ms);
        for (key, owner) in &plan.keys {
            upsert_key.execute(params![key, owner.event_id, owner.seq, expires_at, now])?;
        }
    }
    tx.commit()?;
    Ok(plan.outcomes)
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
        self.with_writer(move |conn| append_in_transaction(conn, &batch, dedupe_window_ms))
            .await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let (sql, params) = query.to_sql(|n| format!("?{n}"));
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
        self.with_relaxed_writer(move |conn| {
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
        self.with_writer(move |conn| {
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
            .with_writer(|conn| Ok(conn.pragma_update(None, "synchronous", "OFF")?))
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
            .with_writer(|conn| Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?))
            .await
            .expect("read pragma");
        assert_eq!(level, 2, "FULL");
    }
}
