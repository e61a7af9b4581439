//! The log indexer: keeps the state database's knowledge of the log — `event_index` (the
//! filterable columns with their indexes) and `dedupe_keys` — a few milliseconds behind the
//! log, on its own thread and on the state database's writer.
//!
//! This is the work the ack does not need: an append only has to make its events durable and
//! decide duplicates, and both are done without it (the log has no secondary index; the keys of
//! entries not yet indexed are in the committer's memory, `dedupe_tail.rs`). Done here, it is
//! done in large batches (up to [`BATCH`] entries a transaction) with `synchronous = NORMAL`:
//! a power loss can roll back the last batches, and the cursor with them, so they are simply
//! indexed again (every write here is idempotent). Queries that filter the log read the index
//! up to its cursor and the log itself after it ([`query_sql`]), so nothing acknowledged is ever
//! missing from an answer while the index is behind.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::dedupe_tail::DedupeTail;
use super::open::apply_migrations;
use super::{StoreError, lock};
use crate::core::clock::now_millis;
use crate::core::storable;
use crate::store::dedupe::KeyOwner;
use crate::store::migrations;
use crate::store::query::{EVENT_COLUMNS, EventQuery, MAX_PAGE, Param};

/// Most log entries indexed in one transaction.
pub const BATCH: i64 = 10_000;
/// How long the indexer sleeps when nothing woke it (appends by another process, a retry).
const IDLE: Duration = Duration::from_millis(200);
/// How long the indexer lets commits accumulate once woken. Each of its transactions rewrites
/// the hot pages it touches (the tails of the time-ordered indexes, the cursor) into the WAL, and
/// resets the page cache of every state reader (the committer's dedupe lookups among them): one
/// transaction per commit cost more than the indexing itself. Keys wait in memory meanwhile
/// (a few thousand at most), and queries scan the log for what is not indexed yet.
const LINGER: Duration = Duration::from_millis(50);
/// Past this many waiting keys the indexer does not linger.
const LINGER_AT_MOST_KEYS: usize = 20_000;
/// More entries than this not yet indexed at start are indexed before the store opens, rather
/// than held in memory.
const REBUILD_IN_MEMORY_AT_MOST: i64 = 50_000;

/// Wakes the indexer thread (after a commit).
#[derive(Clone)]
pub struct Wake(Arc<(Mutex<bool>, Condvar)>);

impl Wake {
    /// Tells the indexer there is something to index.
    pub fn wake(&self) {
        let (flag, signal) = &*self.0;
        *lock(flag) = true;
        signal.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let (flag, signal) = &*self.0;
        let guard = lock(flag);
        let (mut guard, _) = signal
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        *guard = false;
    }
}

/// Runs `f` with `synchronous = NORMAL` on the state database (see `with_relaxed_writer`).
pub fn relaxed<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.pragma_update(Some("main"), "synchronous", "NORMAL")?;
    let result = f(conn);
    let restored = conn.pragma_update(Some("main"), "synchronous", "FULL");
    let value = result?;
    restored?;
    Ok(value)
}

/// Starts the indexer thread; it ends when the state writer is dropped (the store closed).
pub fn spawn(state: Weak<Mutex<Connection>>, tail: Arc<DedupeTail>) -> Result<Wake, StoreError> {
    let wake = Wake(Arc::new((Mutex::new(false), Condvar::new())));
    let waiter = wake.clone();
    let recorder = crate::metrics::current();
    std::thread::Builder::new()
        .name("sqlite-indexer".into())
        .spawn(move || {
            let mut backoff = IDLE;
            loop {
                waiter.wait(backoff);
                if tail.len() < LINGER_AT_MOST_KEYS {
                    std::thread::sleep(LINGER);
                }
                let Some(state) = state.upgrade() else {
                    break;
                };
                backoff = match catch_up(&state, &tail) {
                    Ok(lag) => {
                        crate::metrics::on_thread(recorder.as_ref(), || {
                            metrics::gauge!("zoomhook_sqlite_index_lag_events").set(lag as f64);
                        });
                        IDLE
                    }
                    Err(error) => {
                        tracing::warn!(%error, "indexing the log failed; will retry (appends go on; dedupe keys wait in memory)");
                        (backoff * 2).min(Duration::from_secs(5))
                    }
                };
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the log indexer: {e}")))?;
    Ok(wake)
}

/// Indexes everything the tail holds, on a state writer the caller has locked (and relaxed):
/// for maintenance that must see every committed key in the state database (the purge).
pub fn catch_up_locked(conn: &mut Connection, tail: &DedupeTail) -> Result<(), StoreError> {
    loop {
        let through = tail.through();
        let (indexed, written) = index_batch(conn, tail, through)?;
        tail.forget_through(written);
        if indexed >= through {
            return Ok(());
        }
    }
}

/// Indexes everything the tail says is committed; returns how far behind it still is (0 unless
/// appends raced ahead while it worked).
fn catch_up(state: &Mutex<Connection>, tail: &DedupeTail) -> Result<i64, StoreError> {
    loop {
        let through = tail.through();
        // The writer is released between batches, so sync, fan-out and the API get their turn.
        let (indexed, written) = {
            let mut conn = lock(state);
            relaxed(&mut conn, |conn| index_batch(conn, tail, through))?
        };
        tail.forget_through(written);
        if indexed >= through {
            return Ok(tail.through() - indexed);
        }
    }
}

/// Indexes the entries after the cursor up to `through` (at most [`BATCH`]), with the tail's keys
/// for them, and moves the cursor, in one transaction. Returns the new cursor and the last tail
/// record written.
fn index_batch(
    conn: &mut Connection,
    tail: &DedupeTail,
    through: i64,
) -> Result<(i64, u64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let cursor: i64 = tx.query_row("SELECT seq FROM log_index", [], |r| r.get(0))?;
    // Keys can wait at a position already indexed: the aliases a batch of duplicates recorded
    // (a second request id pointing at the original) come with no new entry.
    let target = through.min(cursor + BATCH).max(cursor);
    let pending = tail.up_to(target);
    if target == cursor && pending.keys.is_empty() {
        return Ok((cursor, pending.through_record));
    }
    if target > cursor {
        index_entries(&tx, cursor, target)?;
        tx.execute("UPDATE log_index SET seq = ?1", [target])?;
    }
    write_keys(
        &tx,
        pending
            .keys
            .iter()
            .map(|k| (k.key.as_str(), &k.owner, k.expires_at)),
    )?;
    tx.commit()?;
    Ok((target, pending.through_record))
}

/// Copies the filterable columns of the log entries in `(after, through]` into `event_index`.
///
/// Row by row rather than one `INSERT … SELECT`: a statement that writes many rows inside a
/// larger transaction keeps a statement journal (a copy of every page it changes, spilled to a
/// temporary file), which cost more than the inserts themselves. A single-row statement needs
/// none — with `OR IGNORE`. `OR REPLACE` may delete a row before a later constraint aborts the
/// statement, so SQLite keeps a statement journal for it too: ~6.5 page copies per entry, a
/// sixth of the indexer's time (bench/RESULTS.md). Entries indexed twice (the cursor rolled back
/// with the rows a power loss undid, or an interrupted rebuild) are the same rows: `seq`
/// identifies a log entry for good, and an index past the log's head is dropped at start.
fn index_entries(conn: &Connection, after: i64, through: i64) -> Result<(), StoreError> {
    let mut read = conn.prepare_cached(
        "SELECT seq, source, event, received_at, object_id, object_uuid FROM log.events
         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let mut write = conn.prepare_cached(
        "INSERT OR IGNORE INTO event_index (seq, source, event, received_at, object_id, object_uuid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut rows = read.query([after, through])?;
    while let Some(row) = rows.next()? {
        let column = |i| row.get_ref(i).map(ToSqlOutput::Borrowed);
        write.execute(params![
            column(0)?,
            column(1)?,
            column(2)?,
            column(3)?,
            column(4)?,
            column(5)?
        ])?;
    }
    Ok(())
}

/// A dedupe key read back from the log.
struct LoggedKey {
    key: String,
    owner: KeyOwner,
    expires_at: i64,
}

/// Writes dedupe keys `(key, owner, expires_at)`; a key already held by a live owner keeps it
/// (as in the append's plan).
///
/// The keys are random (request ids, hashes), so each lands on its own page of a table far larger
/// than the page cache. Written in key order, each page is looked up once per batch and the
/// B-tree is walked left to right instead of jumping about. The sort is stable: a key read back
/// twice from the log keeps its order (the first live owner wins).
fn write_keys<'a>(
    conn: &Connection,
    keys: impl IntoIterator<Item = (&'a str, &'a KeyOwner, i64)>,
) -> Result<(), StoreError> {
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let now = now_millis();
    let mut upsert = conn.prepare_cached(
        "INSERT INTO dedupe_keys (key, event_id, seq, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, seq = excluded.seq, expires_at = excluded.expires_at
         WHERE dedupe_keys.expires_at <= ?5",
    )?;
    for (key, owner, expires_at) in keys {
        upsert.execute(params![key, owner.event_id, owner.seq, expires_at, now])?;
    }
    Ok(())
}

/// When the keys read back from the log expire.
#[derive(Clone, Copy)]
enum Expiry {
    /// A window after the entry was received: for history (a state database recreated beside
    /// a long log).
    AfterReceipt(i64),
    /// At this moment: for the few entries a restart interrupted, which the committer had given
    /// "now + window" moments before; taking the restart's "now" errs towards deduping.
    At(i64),
}

/// The dedupe keys of the log entries in `(after, through]`, read back from the log: what the
/// tail held for them before a restart (request id and semantic key are stored with each entry).
fn keys_from_log(
    conn: &Connection,
    after: i64,
    through: i64,
    expiry: Expiry,
) -> Result<Vec<LoggedKey>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, request_id, dedupe_key, received_at FROM log.events
         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let rows = stmt.query_map([after, through], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut keys = Vec::new();
    for row in rows {
        let (seq, id, request_id, semantic, received_at) = row?;
        let owner = KeyOwner { event_id: id, seq };
        let expires_at = match expiry {
            Expiry::AfterReceipt(window_ms) => received_at.saturating_add(window_ms),
            Expiry::At(at) => at,
        };
        // The same keys `NewEvent::dedupe_keys` gives the stored (storable) values.
        let mut names = Vec::with_capacity(2);
        if let Some(rid) = request_id {
            names.push(storable::key_owned(format!("rid:{rid}")));
        }
        names.push(storable::key_owned(semantic));
        for key in names {
            keys.push(LoggedKey {
                key,
                owner: owner.clone(),
                expires_at,
            });
        }
    }
    Ok(keys)
}

/// The tail after a restart: the keys of every log entry the indexer had not reached. If there
/// are many (a state database recreated beside a long log), they are indexed now instead.
pub fn rebuild_tail(state: &mut Connection, window_ms: i64) -> Result<DedupeTail, StoreError> {
    let head: i64 = state.query_row("SELECT COALESCE(MAX(seq), 0) FROM log.events", [], |r| {
        r.get(0)
    })?;
    let mut cursor: i64 = state.query_row("SELECT seq FROM log_index", [], |r| r.get(0))?;
    if cursor > head {
        // A state database newer than its log (restored from backups taken in the wrong order):
        // what it indexed past the head describes entries the log does not have.
        tracing::warn!(
            indexed = cursor,
            head,
            "the state database has indexed past the end of the log; dropping that part of the index"
        );
        relaxed(state, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM event_index WHERE seq > ?1", [head])?;
            tx.execute("DELETE FROM dedupe_keys WHERE seq > ?1", [head])?;
            tx.execute("UPDATE log_index SET seq = ?1", [head])?;
            tx.commit()?;
            Ok(())
        })?;
        cursor = head;
    }
    if head - cursor > REBUILD_IN_MEMORY_AT_MOST {
        tracing::info!(
            entries = head - cursor,
            "indexing the log entries the state database does not know yet"
        );
    }
    while head - cursor > REBUILD_IN_MEMORY_AT_MOST {
        let target = head.min(cursor + BATCH);
        relaxed(state, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            index_entries(&tx, cursor, target)?;
            let keys = keys_from_log(&tx, cursor, target, Expiry::AfterReceipt(window_ms))?;
            write_keys(
                &tx,
                keys.iter()
                    .map(|k| (k.key.as_str(), &k.owner, k.expires_at)),
            )?;
            tx.execute("UPDATE log_index SET seq = ?1", [target])?;
            tx.commit()?;
            Ok(())
        })?;
        cursor = target;
    }
    let tail = DedupeTail::default();
    let expiry = Expiry::At(now_millis().saturating_add(window_ms));
    for key in keys_from_log(state, cursor, head, expiry)? {
        let position = key.owner.seq;
        tail.record([(key.key, key.owner)], key.expires_at, position);
    }
    tail.record([], 0, head);
    Ok(tail)
}

/// Moves the derived tables of a log file from before the state database into it, once, then
/// drops them from the log (log migration 9). The copy commits (with a marker) before the drop,
/// so a crash between the two only repeats the drop.
pub fn adopt(state: &mut Connection, log: &mut Connection) -> Result<(), StoreError> {
    let legacy: Option<String> = state
        .query_row(
            "SELECT name FROM log.sqlite_master WHERE type = 'table' AND name = 'subscriptions'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let adopted: Option<String> = state
        .query_row(
            "SELECT value FROM state_meta WHERE key = 'adopted_log_tables'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if legacy.is_some() && adopted.is_none() {
        let tx = state.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for table in ADOPTED_TABLES {
            // The old table's columns by name: later state migrations may have added columns
            // (with defaults) that the old file never had.
            let columns: Vec<String> = tx
                .prepare(&format!(
                    "SELECT name FROM pragma_table_info('{table}', 'log')"
                ))?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let columns = columns.join(", ");
            tx.execute(
                &format!("INSERT INTO main.{table} ({columns}) SELECT {columns} FROM log.{table}"),
                [],
            )
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot move table {table} into the state database: {e}"
                ))
            })?;
        }
        // The old file's deliveries have no ordering key (state migration 11 ran on the new,
        // empty state database before this copy): give the open ones of entity-ordered
        // subscriptions theirs, as that migration does.
        tx.execute(crate::store::deliveries::BACKFILL_ORDER_KEYS, [])?;
        tx.execute(
            "INSERT OR REPLACE INTO event_index (seq, source, event, received_at, object_id, object_uuid)
             SELECT seq, source, event, received_at, object_id, object_uuid FROM log.events",
            [],
        )?;
        tx.execute(
            "UPDATE log_index SET seq = (SELECT COALESCE(MAX(seq), 0) FROM log.events)",
            [],
        )?;
        tx.execute(
            "INSERT INTO state_meta (key, value) VALUES ('adopted_log_tables', ?1)",
            [now_millis().to_string()],
        )?;
        tx.commit()?;
    }
    apply_migrations(log, migrations::SQLITE_SPLIT)
}

/// The tables that moved from the log file to the state database (log migration 9).
const ADOPTED_TABLES: &[&str] = &[
    "sync_entities",
    "sync_cursors",
    "sync_quarantine",
    "subscriptions",
    "deliveries",
    "delivery_attempts",
    "source_state",
    "rate_buckets",
    "dedupe_keys",
];

/// The SQL of a log query on SQLite. Without filters it reads the log by `seq` alone. With
/// filters it takes the matching `seq`s from the index up to its cursor and from the log itself
/// after it (a scan of the few entries not indexed yet), so an answer never misses an entry
/// that is committed; both halves are ordered and limited before they are merged.
pub fn query_sql(query: &EventQuery) -> (String, Vec<Param>) {
    let (clauses, mut params) = query.clauses(|n| format!("?{n}"));
    let filtered = query.has_filters();
    let order = if query.descending { "DESC" } else { "ASC" };
    params.push(Param::Int(query.limit.clamp(1, MAX_PAGE)));
    let limit = format!("?{}", params.len());
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    if !filtered {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events{where_sql} ORDER BY seq {order} LIMIT {limit}"
        );
        return (sql, params);
    }
    let matching = clauses.join(" AND ");
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE seq IN (
           SELECT seq FROM (SELECT seq FROM event_index WHERE {matching} ORDER BY seq {order} LIMIT {limit})
           UNION ALL
           SELECT seq FROM (SELECT seq FROM events WHERE seq > (SELECT seq FROM log_index) AND {matching}
                            ORDER BY seq {order} LIMIT {limit})
         ) ORDER BY seq {order} LIMIT {limit}"
    );
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pattern::EventPattern;
    use crate::store::sqlite::open;

    /// A log and its state database with `n` entries of `meeting.started` for meeting `n % 3`,
    /// of which the first `indexed` are indexed.
    fn split_store(n: i64, indexed: i64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("z.db");
        let state_path = open::state_path(&log_path);
        let mut log =
            open::open_log_writer(&log_path, Duration::from_secs(1), 1 << 26).expect("log");
        let mut state =
            open::open_state_writer(&state_path, &log_path, Duration::from_secs(1), 1 << 26)
                .expect("state");
        adopt(&mut state, &mut log).expect("adopt");
        for seq in 1..=n {
            log.execute(
                "INSERT INTO events (seq, id, source, event, event_ts, account_id, object_id, object_uuid, received_at, request_id, dedupe_key, body)
                 VALUES (?1, ?2, 'zoom', 'meeting.started', 1, NULL, ?3, NULL, ?4, NULL, ?5, x'7b7d')",
                params![seq, format!("evt_{seq}"), (seq % 3).to_string(), 1_000 + seq, format!("sem:{seq}")],
            )
            .expect("insert");
        }
        index_entries(&state, 0, indexed).expect("index");
        state
            .execute("UPDATE log_index SET seq = ?1", [indexed])
            .expect("cursor");
        (dir, state)
    }

    fn seqs(conn: &Connection, query: &EventQuery) -> Vec<i64> {
        let (sql, params) = query_sql(query);
        let values: Vec<rusqlite::types::Value> = params
            .into_iter()
            .map(|p| match p {
                Param::Text(s) => rusqlite::types::Value::Text(s),
                Param::Int(i) => rusqlite::types::Value::Integer(i),
            })
            .collect();
        let mut stmt = conn.prepare(&sql).expect("prepare");
        stmt.query_map(rusqlite::params_from_iter(values), |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn filtered_queries_find_entries_the_index_has_not_reached() {
        let (_dir, state) = split_store(12, 5);
        let by_entity = EventQuery {
            entity: Some("1".into()),
            limit: 100,
            ..EventQuery::default()
        };
        // 1, 4 from the index; 7, 10 from the log after the cursor.
        assert_eq!(seqs(&state, &by_entity), [1, 4, 7, 10]);
        let newest_two = EventQuery {
            patterns: EventPattern::parse_list("meeting.*").expect("pattern"),
            descending: true,
            limit: 2,
            ..EventQuery::default()
        };
        assert_eq!(seqs(&state, &newest_two), [12, 11]);
        let page = EventQuery {
            since: Some(1_004),
            after_seq: Some(4),
            limit: 3,
            ..EventQuery::default()
        };
        assert_eq!(seqs(&state, &page), [5, 6, 7]);
    }

    #[test]
    fn indexing_entries_again_changes_nothing() {
        let (_dir, state) = split_store(12, 12);
        let count = |conn: &Connection| -> i64 {
            conn.query_row("SELECT COUNT(*) FROM event_index", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(count(&state), 12);
        // As after a cursor rolled back past entries whose rows are still there.
        index_entries(&state, 4, 12).expect("index again");
        assert_eq!(count(&state), 12);
        let query = EventQuery {
            entity: Some("1".into()),
            limit: 100,
            ..EventQuery::default()
        };
        assert_eq!(seqs(&state, &query), [1, 4, 7, 10]);
    }

    #[test]
    fn the_same_answers_with_the_index_complete_or_empty() {
        let query = EventQuery {
            entity: Some("2".into()),
            until: Some(1_011),
            limit: 100,
            ..EventQuery::default()
        };
        let (_a, none) = split_store(12, 0);
        let (_b, all) = split_store(12, 12);
        assert_eq!(seqs(&none, &query), [2, 5, 8]);
        assert_eq!(seqs(&all, &query), [2, 5, 8]);
    }
}
