//! PostgreSQL side of the entity contract ([`EntityStore`]).

use async_trait::async_trait;
use futures_util::future::{try_join, try_join3};
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::core::storable;
use crate::store::entities::{
    ENTITY_COLUMNS, EntityQuery, EntityStore, ReaderPosition, storable_row,
};
use crate::store::{QuarantinedEvent, StoreError};
use crate::sync::project::EntityRow;

fn get_entity_sql() -> String {
    format!("SELECT {ENTITY_COLUMNS} FROM sync_entities WHERE kind = $1 AND key = $2")
}

fn row_to_entity(r: &tokio_postgres::Row) -> Result<EntityRow, StoreError> {
    Ok(EntityRow {
        kind: r.try_get(0)?,
        key: r.try_get(1)?,
        parent: r.try_get(2)?,
        status: r.try_get(3)?,
        host_id: r.try_get(4)?,
        email: r.try_get(5)?,
        label: r.try_get(6)?,
        start_at: r.try_get(7)?,
        end_at: r.try_get(8)?,
        updated_seq: r.try_get(9)?,
        doc: r.try_get(10)?,
        state: r.try_get(11)?,
    })
}

const UPSERT_ENTITIES: &str = "INSERT INTO sync_entities (kind, key, parent, status, host_id, email, label, start_at, end_at, updated_seq, doc, state)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[])
    ON CONFLICT (kind, key) DO UPDATE SET parent = excluded.parent, status = excluded.status,
      host_id = excluded.host_id, email = excluded.email, label = excluded.label,
      start_at = excluded.start_at, end_at = excluded.end_at, updated_seq = excluded.updated_seq,
      doc = excluded.doc, state = excluded.state";

/// Column-wise copies of the rows to upsert, for one `UNNEST` statement per batch.
#[derive(Default)]
struct EntityColumns {
    kind: Vec<String>,
    key: Vec<String>,
    parent: Vec<Option<String>>,
    status: Vec<Option<String>>,
    host_id: Vec<Option<String>>,
    email: Vec<Option<String>>,
    label: Vec<Option<String>>,
    start_at: Vec<Option<i64>>,
    end_at: Vec<Option<i64>>,
    updated_seq: Vec<i64>,
    doc: Vec<String>,
    state: Vec<String>,
}

impl EntityColumns {
    fn push(&mut self, r: EntityRow) {
        self.kind.push(r.kind);
        self.key.push(r.key);
        self.parent.push(r.parent);
        self.status.push(r.status);
        self.host_id.push(r.host_id);
        self.email.push(r.email);
        self.label.push(r.label);
        self.start_at.push(r.start_at);
        self.end_at.push(r.end_at);
        self.updated_seq.push(r.updated_seq);
        self.doc.push(r.doc);
        self.state.push(r.state);
    }
}

/// Creates reader `$1`'s cursor at zero if it has none.
const CREATE_CURSOR: &str =
    "INSERT INTO sync_cursors (name, seq, applied) VALUES ($1, 0, 0) ON CONFLICT (name) DO NOTHING";
/// Locks reader `$1`'s cursor row and reads it.
const LOCK_CURSOR: &str = "SELECT seq, applied FROM sync_cursors WHERE name = $1 FOR UPDATE";
/// Moves reader `$1`'s cursor.
pub(super) const MOVE_CURSOR: &str =
    "UPDATE sync_cursors SET seq = $2, applied = $3 WHERE name = $1";

/// Locks reader `name`'s cursor row for this transaction (creating it at zero) and returns it.
/// The row lock makes a second instance's commit wait, then see the moved cursor. Both
/// statements are prepared once per connection and sent back to back (one round trip, run in
/// order). `first`, if given, is sent before them in the same round trip (a `SET LOCAL`).
pub(super) async fn lock_reader(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    first: Option<&str>,
) -> Result<ReaderPosition, StoreError> {
    let (create, lock) = try_join(
        tx.prepare_cached(CREATE_CURSOR),
        tx.prepare_cached(LOCK_CURSOR),
    )
    .await?;
    let first = async {
        match first {
            Some(sql) => tx.batch_execute(sql).await,
            None => Ok(()),
        }
    };
    let ((), _, current) = try_join3(
        first,
        tx.execute(&create, &[&name]),
        tx.query_one(&lock, &[&name]),
    )
    .await?;
    Ok(ReaderPosition {
        seq: current.try_get(0)?,
        applied: current.try_get(1)?,
    })
}

#[async_trait]
impl EntityStore for PgStore {
    async fn reader_position(&self, name: &str) -> Result<ReaderPosition, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT seq, applied FROM sync_cursors WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(match row {
            Some(r) => ReaderPosition {
                seq: r.try_get(0)?,
                applied: r.try_get(1)?,
            },
            None => ReaderPosition::default(),
        })
    }

    async fn load_entities(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<EntityRow>, StoreError> {
        let (kinds, keys): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .map(|(kind, key)| (kind, storable::key_owned(key)))
            .unzip();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ENTITY_COLUMNS} FROM sync_entities
                     WHERE (kind, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
                ),
                &[&kinds, &keys],
            )
            .await?;
        rows.iter().map(row_to_entity).collect()
    }

    async fn commit_reader_batch(
        &self,
        name: &str,
        from: ReaderPosition,
        to: ReaderPosition,
        rows: Vec<EntityRow>,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if lock_reader(&tx, name, Some(super::deliveries::RELAXED_COMMIT)).await? != from {
            return Ok(false);
        }
        let mut c = EntityColumns::default();
        for r in rows {
            c.push(storable_row(r));
        }
        let params: [&(dyn ToSql + Sync); 12] = [
            &c.kind,
            &c.key,
            &c.parent,
            &c.status,
            &c.host_id,
            &c.email,
            &c.label,
            &c.start_at,
            &c.end_at,
            &c.updated_seq,
            &c.doc,
            &c.state,
        ];
        let (upsert, move_cursor) = try_join(
            tx.prepare_cached(UPSERT_ENTITIES),
            tx.prepare_cached(MOVE_CURSOR),
        )
        .await?;
        // Back to back, in one round trip.
        try_join(
            tx.execute(&upsert, &params),
            tx.execute(&move_cursor, &[&name, &to.seq, &to.applied]),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn quarantine_reader_entry(
        &self,
        name: &str,
        from: ReaderPosition,
        entry: QuarantinedEvent,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if lock_reader(&tx, name, None).await? != from {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO sync_quarantine (reader, seq, event_id, event, error, quarantined_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (reader, seq) DO NOTHING",
            &[
                &name,
                &entry.seq,
                &entry.event_id,
                &entry.event,
                &entry.error,
                &entry.quarantined_at,
            ],
        )
        .await?;
        tx.execute(MOVE_CURSOR, &[&name, &entry.seq, &(from.applied + 1)])
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_quarantined(
        &self,
        name: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<QuarantinedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, event_id, event, error, quarantined_at FROM sync_quarantine
                 WHERE reader = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&name, &after_seq, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(QuarantinedEvent {
                    seq: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    event: r.try_get(2)?,
                    error: r.try_get(3)?,
                    quarantined_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn reset_entities(&self, name: &str) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM sync_entities", &[]).await?;
        tx.execute("DELETE FROM sync_cursors WHERE name = $1", &[&name])
            .await?;
        tx.execute("DELETE FROM sync_quarantine WHERE reader = $1", &[&name])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityRow>, StoreError> {
        let (sql, params) = query.to_sql(|i| format!("${i}"));
        let rows = self.query_with(&sql, params).await?;
        rows.iter().map(row_to_entity).collect()
    }

    async fn get_entity(&self, kind: &str, key: &str) -> Result<Option<EntityRow>, StoreError> {
        let client = self.pool.get().await?;
        let key = storable::key(key);
        let row = client.query_opt(&get_entity_sql(), &[&kind, &key]).await?;
        row.as_ref().map(row_to_entity).transpose()
    }

    async fn list_entities_with(
        &self,
        query: &EntityQuery,
        kind: &str,
        key: &str,
    ) -> Result<(Vec<EntityRow>, Option<EntityRow>), StoreError> {
        let (sql, params) = query.to_sql(|i| format!("${i}"));
        let values = super::boxed(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as _).collect();
        let mut client = self.pool.get().await?;
        // REPEATABLE READ: both statements see one snapshot.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let stmt = tx.prepare_cached(&sql).await?;
        let rows = tx.query(&stmt, &refs).await?;
        let key = storable::key(key);
        let other = tx.query_opt(&get_entity_sql(), &[&kind, &key]).await?;
        tx.commit().await?;
        Ok((
            rows.iter().map(row_to_entity).collect::<Result<_, _>>()?,
            other.as_ref().map(row_to_entity).transpose()?,
        ))
    }
}
