//! Opening the two SQLite files — the event log and the state database beside it — with the
//! settings each needs, and their migrations. (The thread that checkpoints each WAL is in
//! `checkpoint.rs`.)

use std::path::{Path, PathBuf};
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
    // Checkpoints run on their own thread (`checkpoint.rs`), never inside a commit the acks
    // wait for.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Process-wide: every SQLite connection's caches together.
    conn.pragma_update(None, "soft_heap_limit", SOFT_HEAP_LIMIT_BYTES)?;
    // When the WAL starts over, its file is cut back to the limit.
    conn.pragma_update(None, "journal_size_limit", wal_limit as i64)?;
    conn.pragma_update(None, "cache_size", -LOG_CACHE_KIB)?;
    refuse_newer(
        &conn,
        &format!("the SQLite log file {}", path.display()),
        migrations::newest(&[
            migrations::SQLITE,
            migrations::SQLITE_SPLIT,
            migrations::SQLITE_LOG_RETIRED,
        ]),
    )?;
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
    refuse_newer(
        &conn,
        &format!("the SQLite state database {}", state.display()),
        migrations::newest(&[migrations::SQLITE_STATE]),
    )?;
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
/// 61.6 MB with it, at the same ingest rate (`bench/RESULTS.md`). 12 MiB (16 before) since the
/// committer's dedupe lookups go through a filter (`key_filter.rs`, 2 MiB and more) and rarely
/// need pages of `dedupe_keys` cached ([`DEDUPE_READER_CACHE_KIB`]): in 60 s floods peak RSS was
/// 57–62 MB with the filter and 12 MiB, 64–68 MB with it and 14–16 MiB, 61–64 MB before it.
const SOFT_HEAP_LIMIT_BYTES: i64 = 12 * 1024 * 1024;
/// Page cache of the committer's dedupe reader, in KiB: it reads only the keys the filter could
/// not rule out, a few in a thousand.
pub(super) const DEDUPE_READER_CACHE_KIB: i64 = 512;
/// Page cache of the state database's writer, in KiB: entity, delivery and index pages that
/// sync, fan-out and the indexer rewrite again and again.
const STATE_CACHE_KIB: i64 = 8 * 1024;
/// Page cache of each reader connection per database, in KiB.
const READER_CACHE_KIB: i64 = 1024;
/// Page cache of the log's writer, in KiB: it only appends, so it touches the last pages of the
/// table and of the id index; a large cache would only hold bodies it never reads again.
const LOG_CACHE_KIB: i64 = 2 * 1024;
/// Refuses a database (the connection's `main`) that a newer build migrated past `known`.
fn refuse_newer(conn: &Connection, database: &str, known: i64) -> Result<(), StoreError> {
    conn.execute(migrations::CREATE_TABLE, [])?;
    let applied: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM main.schema_migrations", [], |r| {
            r.get(0)
        })?;
    migrations::refuse_newer(database, applied, known)
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
