//! Storage of synchronised entities and of the readers' durable cursors (both backends).

use async_trait::async_trait;

use super::StoreError;
use super::query::Param;
use crate::core::storable;
use crate::sync::project::EntityRow;

/// `row` in the form both backends store and index (see [`storable`]): indexed and filtered
/// columns as storable keys, the label without NUL. The document and the state are JSON text,
/// whose serialisation escapes control characters, so they need nothing. Both backends call
/// this on every row they write, so one hostile value can never fail a sync batch.
pub fn storable_row(row: EntityRow) -> EntityRow {
    EntityRow {
        key: storable::key_owned(row.key),
        parent: row.parent.map(storable::key_owned),
        status: row.status.map(storable::key_owned),
        host_id: row.host_id.map(storable::key_owned),
        email: row.email.map(storable::key_owned),
        label: row.label.map(|l| storable::text(&l).into_owned()),
        ..row
    }
}

/// Where a log reader stands: the last `seq` it applied, and how many events it has applied in
/// all (which lets tests prove that no event was applied twice or skipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderPosition {
    pub seq: i64,
    pub applied: i64,
}

/// A log entry a reader skipped because it could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedEvent {
    pub seq: i64,
    pub event_id: String,
    pub event: String,
    /// Why it could not be applied (the store's message; never the values).
    pub error: String,
    /// Epoch ms.
    pub quarantined_at: i64,
}

/// A filter over one kind of entity, ordered by key, with a key cursor.
#[derive(Debug, Clone, Default)]
pub struct EntityQuery {
    pub kind: String,
    pub parent: Option<String>,
    pub status: Option<String>,
    pub host_id: Option<String>,
    pub email: Option<String>,
    /// `start_at` at or after (epoch ms).
    pub start_from: Option<i64>,
    /// `start_at` strictly before (epoch ms).
    pub start_until: Option<i64>,
    /// Only keys greater than this (the cursor of the previous page).
    pub after_key: Option<String>,
    pub limit: i64,
}

/// Largest page of entities the store returns.
pub const MAX_ENTITY_PAGE: i64 = 1000;

/// The columns of `sync_entities`, in the order the backends read them.
pub const ENTITY_COLUMNS: &str =
    "kind, key, parent, status, host_id, email, label, start_at, end_at, updated_seq, doc, state";

impl EntityQuery {
    /// `WHERE … ORDER BY key LIMIT n` with placeholders from `placeholder(index)`.
    pub fn to_sql(&self, placeholder: impl Fn(usize) -> String) -> (String, Vec<Param>) {
        let mut params = vec![Param::Text(self.kind.clone())];
        let mut sql = format!(
            "SELECT {ENTITY_COLUMNS} FROM sync_entities WHERE kind = {}",
            placeholder(1)
        );
        let mut text = |column: &str, op: &str, value: &Option<String>| {
            if let Some(v) = value {
                // Compared with stored values, which are in their storable form.
                params.push(Param::Text(storable::key(v).into_owned()));
                sql.push_str(&format!(" AND {column} {op} {}", placeholder(params.len())));
            }
        };
        text("parent", "=", &self.parent);
        text("status", "=", &self.status);
        text("host_id", "=", &self.host_id);
        text("email", "=", &self.email);
        text("key", ">", &self.after_key);
        for (op, value) in [(">=", self.start_from), ("<", self.start_until)] {
            if let Some(v) = value {
                params.push(Param::Int(v));
                sql.push_str(&format!(" AND start_at {op} {}", placeholder(params.len())));
            }
        }
        let limit = self.limit.clamp(1, MAX_ENTITY_PAGE);
        sql.push_str(&format!(" ORDER BY key LIMIT {limit}"));
        (sql, params)
    }
}

/// The entity part of the storage contract.
#[async_trait]
pub trait EntityStore: Send + Sync + 'static {
    /// The position of the reader `name` (zero if it never ran).
    async fn reader_position(&self, name: &str) -> Result<ReaderPosition, StoreError>;

    /// The stored rows of these entities (`(kind, key)` pairs); missing ones are left out.
    async fn load_entities(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<EntityRow>, StoreError>;

    /// In one transaction: writes `rows` and moves reader `name` from `from` to `to`. Returns
    /// `false` and writes nothing if the reader is no longer at `from` (another instance or a
    /// rebuild moved it): the caller reloads and tries again, so a batch is applied exactly once.
    async fn commit_reader_batch(
        &self,
        name: &str,
        from: ReaderPosition,
        to: ReaderPosition,
        rows: Vec<EntityRow>,
    ) -> Result<bool, StoreError>;

    /// In one transaction: records `entry` (the log entry right after `from`) as quarantined for
    /// reader `name` and moves the reader past it, counting it as consumed. Returns `false` and
    /// writes nothing if the reader is no longer at `from`.
    async fn quarantine_reader_entry(
        &self,
        name: &str,
        from: ReaderPosition,
        entry: QuarantinedEvent,
    ) -> Result<bool, StoreError>;

    /// Entries quarantined by reader `name` with `seq` above `after_seq`, oldest first.
    async fn list_quarantined(
        &self,
        name: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<QuarantinedEvent>, StoreError>;

    /// Deletes every synchronised entity and resets reader `name`, in one transaction.
    async fn reset_entities(&self, name: &str) -> Result<(), StoreError>;

    /// Entities matching `query`, by key.
    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityRow>, StoreError>;

    /// One entity.
    async fn get_entity(&self, kind: &str, key: &str) -> Result<Option<EntityRow>, StoreError>;

    /// Entities matching `query` and one other entity (`kind`, `key`: e.g. the meeting instance
    /// whose participants these are), read from one snapshot, so a view that combines them never
    /// mixes states from before and after a sync batch.
    async fn list_entities_with(
        &self,
        query: &EntityQuery,
        kind: &str,
        key: &str,
    ) -> Result<(Vec<EntityRow>, Option<EntityRow>), StoreError>;
}
