//! Opening the two SQLite files — the event log and the state database beside it — with the
//! settings each needs, their migrations, and the thread that checkpoints each WAL.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::super::migrations::{self, Migration};
use super::StoreError;
use crate::core::clock::now_millis;

pub(super) fn open_log_writer(
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
    keep_plans(&conn)?;
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
    // wait for.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Process-wide: every SQLite connection's caches together.
    conn.pragma_update(None, "soft_heap_limit", SOFT_HEAP_LIMIT_BYTES)?;
    // When the WAL starts over, its file is cut back to the limit.
    conn.pragma_update(None, "journal_size_limit", wal_limit as i64)?;
    conn.pragma_update(None, "cache_size", -LOG_CACHE_KIB)?;
    apply_migrations(&mut conn, migrations::SQLITE)?;
    Ok(conn)
}

/// The state database that goes with the log file at `log`: `zoomhook.db` → `zoomhook.state.db`
/// (a name without `.db` gets `.state.db` appended), in the same directory.
pub fn state_path(log: &Path) -> PathBuf {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let state = match name.strip_suffix(".db") {
        Some(stem) => format!("{stem}.state.db"),
        None => format!("{name}.state.db"),
    };
    log.with_file_name(state)
}

/// Opens a connection to the state database at `state` with the log file attached **read-only**
/// as `log`. Read-only matters: `BEGIN IMMEDIATE` on this connection then takes the write lock
/// of the state database alone, never the log's, so derived writes never hold appends back; and
/// unqualified `events` / `admin_tokens` resolve to the log's tables (the state has none).
pub(super) fn open_state_connection(
    state: &Path,
    log: &Path,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(state).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot open SQLite state database {}: {e}",
            state.display()
        ))
    })?;
    conn.busy_timeout(busy_timeout)?;
    keep_plans(&conn)?;
    conn.execute(
        "ATTACH DATABASE ?1 AS log",
        [format!("file:{}?mode=ro", uri_path(log))],
    )?;
    // Readers are several and short-lived in what they touch; a small cache each (the writer
    // raises its own). Any change by another connection empties a cache anyway (WAL mode).
    conn.pragma_update(Some("main"), "cache_size", -READER_CACHE_KIB)?;
    conn.pragma_update(Some("log"), "cache_size", -READER_CACHE_KIB)?;
    Ok(conn)
}

/// Makes every statement of `conn` keep the plan it was prepared with, whatever values are bound
/// to it (SQLite's query planner stability guarantee, `SQLITE_DBCONFIG_ENABLE_QPSG`).
///
/// Without it SQLite marks a prepared statement for recompiling whenever a value bound to it
/// *might* change its plan, and since 3.45 a bound `LIMIT ?` is such a value: the statements
/// that run hundreds of times a second from the statement cache — the delivery claim, the
/// readers' batches — were compiled again on every execution (the claim's candidate query: 17 µs
/// a run instead of 6; `sqlite3Reprepare` was ~4 % of the server's CPU while draining a backlog).
/// Nothing here needs a bound value to find its plan: no partial index is chosen by a bound
/// status (each query names its statuses literally) and `x = ?` implies `x IS NOT NULL` without
/// looking at the value.
pub(super) fn keep_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// `path` as the path part of a `file:` URI (`?` and `#` would end it, `%` starts an escape).
fn uri_path(path: &Path) -> String {
    let text = path.display().to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

/// Opens the writer of the state database (WAL; `synchronous = FULL` by default, relaxed per
/// write for derived state) and applies its migrations.
pub(super) fn open_state_writer(
    state: &Path,
    log: &Path,
    busy_timeout: Duration,
    wal_limit: u64,
) -> Result<Connection, StoreError> {
    restrict_to_owner(state)?;
    let mut conn = open_state_connection(state, log, busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA main.journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "SQLite refused WAL mode (got {mode}) for {}",
            state.display()
        )));
    }
    conn.pragma_update(Some("main"), "synchronous", "FULL")?;
    conn.pragma_update(Some("main"), "wal_autocheckpoint", 0)?;
    conn.pragma_update(Some("main"), "journal_size_limit", wal_limit as i64)?;
    conn.pragma_update(Some("main"), "cache_size", -STATE_CACHE_KIB)?;
    apply_migrations(&mut conn, migrations::SQLITE_STATE)?;
    Ok(conn)
}

/// Creates the database file owner-only (0600), and tightens an existing one and its WAL and
/// shared-memory files: they hold subscription secrets, subscriber URLs with their tokens and
/// every event body. SQLite creates the `-wal` and `-shm` files with the database file's mode.
#[cfg(unix)]
pub(super) fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
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
pub(super) fn restrict_to_owner(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// What SQLite may hold in memory over all its connections (page caches above all) before it
/// recycles pages instead of allocating more. Each role's `cache_size` bounds its own cache; this
/// bounds their sum as the databases grow: in a 60 s flood peak RSS was 73.6 MB without it and
/// 61.6 MB with it, at the same ingest rate (`bench/RESULTS.md`).
const SOFT_HEAP_LIMIT_BYTES: i64 = 16 * 1024 * 1024;
/// Page cache of the state database's writer, in KiB: entity, delivery and index pages that
/// sync, fan-out and the indexer rewrite again and again.
const STATE_CACHE_KIB: i64 = 8 * 1024;
/// Page cache of each reader connection per database, in KiB.
const READER_CACHE_KIB: i64 = 1024;
/// Page cache of the log's writer, in KiB: it only appends, so it touches the last pages of the
/// table and of the id index; a large cache would only hold bodies it never reads again.
const LOG_CACHE_KIB: i64 = 2 * 1024;
/// Restart attempts are at most this frequent (each one holds appends back for a moment).
const RESTART_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Longest a RESTART checkpoint holds appends back while it waits for readers.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(100);
/// How long a RESTART checkpoint first waits for readers; each attempt that could not finish
/// doubles it, up to [`CHECKPOINT_BUSY`], and one that finishes starts over from here.
const RESTART_BUSY_FIRST: Duration = Duration::from_millis(10);
/// Bytes of a WAL frame besides its page.
const WAL_FRAME_HEADER: i64 = 24;
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
/// without bound (1 GB in 15 s was seen). So once the frames in use pass `wal_limit` bytes,
/// right after a PASSIVE checkpoint has copied nearly everything, a RESTART checkpoint holds new
/// writes back while the readers finish (they are short) so the next commit starts the WAL over,
/// and `journal_size_limit` cuts the file back. Each attempt costs writers a pause — the wait for
/// readers, 10 ms at first and up to [`CHECKPOINT_BUSY`] only after attempts that could not
/// finish (a flat 100 ms stalled every writer for that long), and copying what PASSIVE could not
/// — which grows with the limit: measured in `bench/ingest` (`bench/RESULTS.md`), 64 MiB with at most one
/// attempt a second gave an ack p99 of 29 ms and a worst ack of 0.41 s, 1 GiB a p99 of 25 ms but
/// a worst ack of 1.7 s (Zoom gives up at 3 s), no limit 27 ms and a WAL of gigabytes. The wait is bounded, so a
/// reader that never finishes (a backup tool holding a read transaction) costs appends at most
/// that pause per attempt, not seconds; such a reader keeps the WAL from restarting, which is
/// SQLite's rule, and the `zoomhook_sqlite_wal_bytes` gauge shows it. The thread ends when the
/// store is dropped.
pub(super) fn spawn_checkpointer(
    path: &Path,
    file: &'static str,
    wal_limit: u64,
    writer: std::sync::Weak<Mutex<Connection>>,
) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    keep_plans(&conn)?;
    let page_bytes: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let recorder = crate::metrics::current();
    // What a checkpoint reports: whether it could not finish (busy), and the frames in the WAL.
    let checkpoint = move |mode: &str, busy: Duration| -> Option<(bool, i64)> {
        if let Err(error) = conn.busy_timeout(busy) {
            tracing::warn!(%error, mode, "cannot set the checkpoint's busy timeout; will retry");
            return None;
        }
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        match conn.query_row(&sql, [], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?))
        }) {
            Ok(outcome) => {
                if outcome.0 {
                    tracing::debug!(mode, "WAL checkpoint could not finish (busy); will retry");
                }
                Some(outcome)
            }
            Err(error) => {
                tracing::warn!(%error, mode, "WAL checkpoint failed; will retry");
                None
            }
        }
    };
    let wal_bytes = move || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut last_restart = std::time::Instant::now() - RESTART_AT_MOST_EVERY;
            let mut restart_busy = RESTART_BUSY_FIRST;
            while writer.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                // The frames in use, not the file's size: the file is cut back to the limit
                // only when the WAL starts over, and stays that large while it is reused.
                let frames = checkpoint("PASSIVE", Duration::ZERO).map_or(0, |(_, frames)| frames);
                let used = frames.saturating_mul(page_bytes + WAL_FRAME_HEADER) as u64;
                // Each attempt holds writers back while it waits for readers: rarely, only past
                // the limit, and first briefly; longer only after a short wait did not do.
                if used > wal_limit && last_restart.elapsed() >= RESTART_AT_MOST_EVERY {
                    last_restart = std::time::Instant::now();
                    restart_busy = match checkpoint("RESTART", restart_busy) {
                        Some((false, _)) => RESTART_BUSY_FIRST,
                        _ => (restart_busy * 2).min(CHECKPOINT_BUSY),
                    };
                }
                let size = wal_bytes();
                crate::metrics::on_thread(recorder.as_ref(), || {
                    metrics::gauge!("zoomhook_sqlite_wal_bytes", "file" => file).set(size as f64);
                });
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

pub(super) fn apply_migrations(conn: &mut Connection, all: &[Migration]) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_statements_are_not_compiled_again_for_new_bound_values() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("zoomhook.db");
        let state = state_path(&log);
        let busy = Duration::from_secs(1);
        let _log_writer = open_log_writer(&log, busy, 1 << 26).expect("log");
        let _state_writer = open_state_writer(&state, &log, busy, 1 << 26).expect("state");
        let conn = open_state_connection(&state, &log, busy).expect("state connection");
        // The shape of the delivery claim's candidate query: a bound LIMIT, a partial index.
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM deliveries WHERE subscription_id = ?1
                   AND status IN ('pending', 'delivering') AND next_attempt_at <= ?2
                 ORDER BY next_attempt_at LIMIT ?3",
            )
            .expect("prepare");
        for (now, limit) in [(1_i64, 1_i64), (2, 64), (3, 256)] {
            let rows = stmt
                .query_map(params!["sub", now, limit], |r| r.get::<_, String>(0))
                .expect("query")
                .count();
            assert_eq!(rows, 0);
        }
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the statement was compiled again for new bound values"
        );
    }
}
