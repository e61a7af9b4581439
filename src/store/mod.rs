//! The event log and the little state around it, behind one trait with one file per backend.
//!
//! * [`EventStore`] is the contract; `sqlite.rs` (embedded default) and `postgres.rs` implement it
//!   and both pass the same contract suite (`tests/store_contract.rs`).
//! * [`group_commit::EventAppender`] batches concurrent appends into one durable transaction.
//! * [`dedupe`] decides, once for both backends, which events of a batch are new.

pub mod cluster;
pub mod dedupe;
pub mod deliveries;
pub mod entities;
pub mod group_commit;
mod migrations;
pub mod postgres;
pub mod query;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::core::storable;

pub use cluster::{ClusterStore, Leader, Lease, SourceRecord};
pub use deliveries::DeliveryStore;
pub use entities::{EntityQuery, EntityStore, QuarantinedEvent, ReaderPosition};
pub use query::EventQuery;

/// The source of events the team's own applications publish (`POST /api/v1/events`). They are
/// fanned out like Zoom's, but never taken for Zoom's word about meetings or users: sync skips
/// them, so a published `meeting.started` cannot invent or change a synchronised meeting.
pub const PUBLISHED_SOURCE: &str = "api";

/// A verified event about to be appended to the log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Stable id (`evt_<ULID>`), generated at receipt; if the event turns out to be a duplicate the
    /// original's id is answered instead.
    pub id: String,
    /// Name of the source it arrived on (`zoom` for `/webhooks/zoom`).
    pub source: String,
    /// `event`, e.g. `meeting.started`.
    pub event: String,
    /// `event_ts` (epoch ms), when the event occurred.
    pub event_ts: Option<i64>,
    /// `payload.account_id`.
    pub account_id: Option<String>,
    /// `payload.object.id`, normalised to a string.
    pub object_id: Option<String>,
    /// `payload.object.uuid`.
    pub object_uuid: Option<String>,
    /// When zoomhook received it (epoch ms).
    pub received_at: i64,
    /// `x-zm-request-id`, stable across Zoom's retries, when Zoom sent one.
    pub request_id: Option<String>,
    /// The semantic dedupe key (see `zoom::envelope::semantic_key`).
    pub semantic_key: String,
    /// The request body, byte for byte.
    pub body: Bytes,
}

impl NewEvent {
    /// A new log entry for `body`, whose parsed `envelope` gives the extracted fields.
    pub fn from_envelope(
        envelope: &crate::zoom::envelope::Envelope,
        source: &str,
        body: Bytes,
        request_id: Option<String>,
        received_at: i64,
    ) -> NewEvent {
        NewEvent {
            id: crate::core::ids::new_id("evt"),
            source: source.to_owned(),
            event: envelope.event.clone(),
            event_ts: envelope.event_ts,
            account_id: envelope.account_id.clone(),
            object_id: envelope.object_id.clone(),
            object_uuid: envelope.object_uuid.clone(),
            received_at,
            request_id,
            semantic_key: envelope.semantic_key.clone(),
            body,
        }
    }

    /// An operational event of zoomhook itself (`zoomhook.…`, source `zoomhook`), written to the
    /// log like Zoom's so it is visible, queryable and can be subscribed to.
    pub fn operational(event: &str, object: serde_json::Value, now: i64) -> NewEvent {
        let body =
            serde_json::json!({"event": event, "event_ts": now, "payload": {"object": object}});
        let bytes = Bytes::from(body.to_string());
        let payload = body.get("payload");
        NewEvent {
            id: crate::core::ids::new_id("evt"),
            source: "zoomhook".into(),
            event: event.to_owned(),
            event_ts: Some(now),
            account_id: None,
            object_id: object_field(payload, "id"),
            object_uuid: object_field(payload, "uuid"),
            received_at: now,
            request_id: None,
            semantic_key: crate::zoom::envelope::semantic_key(event, Some(now), payload),
            body: bytes,
        }
    }

    /// Every dedupe key of this event: the request-id key (when present) and the semantic key,
    /// in their storable form. A later delivery sharing **any** of them is the same event.
    pub fn dedupe_keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        if let Some(rid) = &self.request_id {
            // Not prefixed by time like the semantic key: a request id alone identifies the
            // event, whatever the body says.
            keys.push(storable::key_owned(format!("rid:{rid}")));
        }
        keys.push(storable::key(&self.semantic_key).into_owned());
        keys
    }

    /// This event with every extracted value in the form both backends store and index (see
    /// [`storable`]): whatever the JSON held, the row can be written, so one hostile event can
    /// never fail the batch it shares with others. Both backends call this on every append.
    pub fn into_storable(self) -> NewEvent {
        NewEvent {
            id: storable::key_owned(self.id),
            source: storable::key_owned(self.source),
            event: storable::key_owned(self.event),
            account_id: self.account_id.map(storable::key_owned),
            object_id: self.object_id.map(storable::key_owned),
            object_uuid: self.object_uuid.map(storable::key_owned),
            request_id: self.request_id.map(storable::key_owned),
            semantic_key: storable::key_owned(self.semantic_key),
            ..self
        }
    }
}

fn object_field(payload: Option<&serde_json::Value>, name: &str) -> Option<String> {
    payload
        .and_then(|p| p.get("object"))
        .and_then(|o| o.get(name))
        .and_then(crate::zoom::envelope::normalised_id)
}

/// What happened to one appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly written at `seq`.
    Appended { id: String, seq: i64 },
    /// Already in the log (within the dedupe window) as `id` at `seq`; nothing was written.
    Duplicate { id: String, seq: i64 },
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub source: String,
    pub event: String,
    pub event_ts: Option<i64>,
    pub account_id: Option<String>,
    pub object_id: Option<String>,
    pub object_uuid: Option<String>,
    pub received_at: i64,
    pub request_id: Option<String>,
    pub semantic_key: String,
    pub body: Vec<u8>,
}

/// An admin API token as stored: only a hash of the secret is kept.
#[derive(Debug, Clone)]
pub struct AdminTokenRecord {
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the token.
    pub token_hash: String,
    pub created_at: i64,
}

/// Errors of the storage layer. `Unavailable` is what the receiver turns into 503; `Rejected`
/// is tied to the values of one request (a retry would fail the same way) and becomes a 4xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("the store cannot hold this value: {0}")]
    Rejected(String),
    #[error("invalid database URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("migration {version} failed: {reason}")]
    Migration { version: i64, reason: String },
    #[error(
        "{database} is at schema version {found}, which a newer zoomhook migrated it to; this build knows versions up to {known}. Run the newer version, or restore a backup taken before the upgrade"
    )]
    NewerSchema {
        database: String,
        found: i64,
        known: i64,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let about_the_values = match &e {
            rusqlite::Error::SqliteFailure(f, _) => {
                matches!(f.code, C::TooBig | C::TypeMismatch | C::ParameterOutOfRange)
            }
            rusqlite::Error::ToSqlConversionFailure(_) => true,
            _ => false,
        };
        if about_the_values {
            StoreError::Rejected(format!("sqlite: {e}"))
        } else {
            StoreError::Unavailable(format!("sqlite: {e}"))
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// Names the SQLSTATE and the server's message — never the `detail`, which can quote the
    /// values (`Key (id)=(…)`). Data exceptions (class 22: a NUL in `text`, an invalid value) and
    /// program limits (54: an index row too large) are about the values of the statement, so a
    /// retry would fail the same way: `Rejected`. Everything else is `Unavailable`, integrity
    /// violations (23) included: the values zoomhook writes are made storable first and its keys
    /// are its own, so a duplicate `seq` or id means the store's state is wrong (a partial
    /// restore, a hand edit) — a refusal would lose the event, a 503 lets Zoom retry it.
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            let text = e.to_string();
            return if text.starts_with("error serializing parameter") {
                StoreError::Rejected(format!("postgres: {text}"))
            } else {
                StoreError::Unavailable(format!("postgres: {text}"))
            };
        };
        let code = db.code().code();
        let message: String = db.message().chars().take(300).collect();
        let text = format!("postgres: SQLSTATE {code}: {message}");
        if ["22", "54"].iter().any(|class| code.starts_with(class)) {
            StoreError::Rejected(text)
        } else {
            StoreError::Unavailable(text)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(format!("postgres pool: {e}"))
    }
}

/// The storage contract. Both backends must behave identically (the contract suite checks it).
#[async_trait]
pub trait EventStore: EntityStore + DeliveryStore + ClusterStore + Send + Sync + 'static {
    /// Appends a batch in **one durable transaction**: when this returns `Ok`, every `Appended`
    /// event is committed and synced, and `seq` values are consecutive with no gaps. Events that
    /// share a live dedupe key with the log, or with an earlier event of the same batch, are
    /// answered `Duplicate` and not written. Dedupe keys of accepted events live `dedupe_window_ms`.
    async fn append_batch(
        &self,
        batch: Vec<NewEvent>,
        dedupe_window_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError>;

    /// Log entries matching `query`, in `seq` order (descending if the query asks).
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// One entry by its stable id.
    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// The highest `seq` in the log (0 when empty).
    async fn head_seq(&self) -> Result<i64, StoreError>;

    /// Cheap round trip proving the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Drops at most `limit` dedupe keys whose window has passed; returns how many. Callers
    /// repeat until it returns less than `limit`, so no single statement holds the writer long.
    async fn purge_expired_dedupe_keys(&self, now_ms: i64, limit: i64) -> Result<u64, StoreError>;

    /// Stores a new admin token (hash only).
    async fn insert_admin_token(&self, token: &AdminTokenRecord) -> Result<(), StoreError>;

    /// How many admin tokens exist.
    async fn count_admin_tokens(&self) -> Result<i64, StoreError>;

    /// The id of the admin token with this hash, if any.
    async fn find_admin_token(&self, token_hash: &str) -> Result<Option<String>, StoreError>;
}

/// The position of reader `name` and the next `limit` log entries after it.
pub async fn read_after(
    store: &dyn EventStore,
    name: &str,
    limit: i64,
) -> Result<(ReaderPosition, Vec<StoredEvent>), StoreError> {
    let from = store.reader_position(name).await?;
    let events = store
        .list_events(&EventQuery {
            after_seq: Some(from.seq),
            limit,
            ..Default::default()
        })
        .await?;
    Ok((from, events))
}

/// Options that shape how a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a write waits for a lock held by someone else before failing (SQLite only).
    pub busy_timeout_ms: u64,
    /// Maximum connections for readers (admin API) on top of the single writer.
    pub max_read_connections: usize,
    /// SQLite only: WAL size above which the checkpointer waits for readers to truncate it.
    pub wal_limit_bytes: u64,
    /// SQLite only: how long the dedupe keys of log entries re-read at start live (the same
    /// window the appends are given; see `sqlite/indexer.rs`).
    pub dedupe_window_ms: i64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout_ms: 2_000,
            max_read_connections: 4,
            wal_limit_bytes: 64 * 1024 * 1024,
            dedupe_window_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// Opens the store named by a database URL (`sqlite://PATH` or `postgres://…`) and applies
/// pending migrations.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn EventStore>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sqlite::SqliteStore::open(path, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url, options).await?))
    } else {
        Err(StoreError::BadUrl {
            url: url.to_owned(),
            reason: "expected sqlite://PATH or postgres://USER@HOST:PORT/DB".into(),
        })
    }
}
