//! SQLite side of the entity contract ([`EntityStore`]).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use crate::core::storable;
use crate::store::entities::{
    ENTITY_COLUMNS, EntityQuery, EntityStore, ReaderPosition, storable_row,
};
use crate::store::{QuarantinedEvent, StoreError};
use crate::sync::project::EntityRow;

fn entity(
    conn: &rusqlite::Connection,
    kind: &str,
    key: &str,
) -> Result<Option<EntityRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ENTITY_COLUMNS} FROM sync_entities WHERE kind = ?1 AND key = ?2"
        ))?
        .query_row(params![kind, key], row_to_entity)
        .optional()?)
}

fn row_to_entity(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntityRow> {
    Ok(EntityRow {
        kind: r.get(0)?,
        key: r.get(1)?,
        parent: r.get(2)?,
        status: r.get(3)?,
        host_id: r.get(4)?,
        email: r.get(5)?,
        label: r.get(6)?,
        start_at: r.get(7)?,
        end_at: r.get(8)?,
        updated_seq: r.get(9)?,
        doc: r.get(10)?,
        state: r.get(11)?,
    })
}

/// The position of reader `name` (zero if it never ran).
pub(super) fn position(
    conn: &rusqlite::Connection,
    name: &str,
) -> rusqlite::Result<ReaderPosition> {
    Ok(conn
        .query_row(
            "SELECT seq, applied FROM sync_cursors WHERE name = ?1",
            [name],
            |r| {
                Ok(ReaderPosition {
                    seq: r.get(0)?,
                    applied: r.get(1)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

#[async_trait]
impl EntityStore for SqliteStore {
    async fn reader_position(&self, name: &str) -> Result<ReaderPosition, StoreError> {
        let name = name.to_owned();
        self.with_reader(move |conn| Ok(position(conn, &name)?))
            .await
    }

    async fn load_entities(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<EntityRow>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ENTITY_COLUMNS} FROM sync_entities WHERE kind = ?1 AND key = ?2"
            ))?;
            let mut rows = Vec::with_capacity(keys.len());
            for (kind, key) in &keys {
                if let Some(row) = stmt
                    .query_row(params![kind, storable::key(key)], row_to_entity)
                    .optional()?
                {
                    rows.push(row);
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn commit_reader_batch(
        &self,
        name: &str,
        from: ReaderPosition,
        to: ReaderPosition,
        rows: Vec<EntityRow>,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        let rows: Vec<EntityRow> = rows.into_iter().map(storable_row).collect();
        self.with_relaxed_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if position(&tx, &name)? != from {
                return Ok(false);
            }
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO sync_entities (kind, key, parent, status, host_id, email, label, start_at, end_at, updated_seq, doc, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (kind, key) DO UPDATE SET parent = excluded.parent, status = excluded.status,
                       host_id = excluded.host_id, email = excluded.email, label = excluded.label,
                       start_at = excluded.start_at, end_at = excluded.end_at, updated_seq = excluded.updated_seq,
                       doc = excluded.doc, state = excluded.state",
                )?;
                for r in &rows {
                    upsert.execute(params![
                        r.kind, r.key, r.parent, r.status, r.host_id, r.email, r.label, r.start_at,
                        r.end_at, r.updated_seq, r.doc, r.state
                    ])?;
                }
            }
            tx.execute(
                "INSERT INTO sync_cursors (name, seq, applied) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, applied = excluded.applied",
                params![name, to.seq, to.applied],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn quarantine_reader_entry(
        &self,
        name: &str,
        from: ReaderPosition,
        entry: QuarantinedEvent,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_relaxed_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if position(&tx, &name)? != from {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO sync_quarantine (reader, seq, event_id, event, error, quarantined_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (reader, seq) DO NOTHING",
                params![
                    name,
                    entry.seq,
                    entry.event_id,
                    entry.event,
                    entry.error,
                    entry.quarantined_at
                ],
            )?;
            tx.execute(
                "INSERT INTO sync_cursors (name, seq, applied) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, applied = excluded.applied",
                params![name, entry.seq, from.applied + 1],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn list_quarantined(
        &self,
        name: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<QuarantinedEvent>, StoreError> {
        let name = name.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, event_id, event, error, quarantined_at FROM sync_quarantine
                 WHERE reader = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![name, after_seq, limit], |r| {
                Ok(QuarantinedEvent {
                    seq: r.get(0)?,
                    event_id: r.get(1)?,
                    event: r.get(2)?,
                    error: r.get(3)?,
                    quarantined_at: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn reset_entities(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.with_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM sync_entities", [])?;
            tx.execute("DELETE FROM sync_cursors WHERE name = ?1", [&name])?;
            tx.execute("DELETE FROM sync_quarantine WHERE reader = ?1", [&name])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityRow>, StoreError> {
        let (sql, params) = query.to_sql(|i| format!("?{i}"));
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(super::sql_values(params), row_to_entity)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn get_entity(&self, kind: &str, key: &str) -> Result<Option<EntityRow>, StoreError> {
        let (kind, key) = (kind.to_owned(), storable::key(key).into_owned());
        self.with_reader(move |conn| entity(conn, &kind, &key))
            .await
    }

    async fn list_entities_with(
        &self,
        query: &EntityQuery,
        kind: &str,
        key: &str,
    ) -> Result<(Vec<EntityRow>, Option<EntityRow>), StoreError> {
        let (sql, params) = query.to_sql(|i| format!("?{i}"));
        let (kind, key) = (kind.to_owned(), storable::key(key).into_owned());
        self.with_reader(move |conn| {
            // One read transaction: both statements see the same snapshot of the WAL. Dropped
            // (rolled back) on every path, so the connection returns to the pool clean.
            let tx = conn.unchecked_transaction()?;
            let rows = {
                let mut stmt = tx.prepare_cached(&sql)?;
                let rows = stmt.query_map(super::sql_values(params), row_to_entity)?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let other = entity(&tx, &kind, &key)?;
            Ok((rows, other))
        })
        .await
    }
}
