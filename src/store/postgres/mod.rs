//! PostgreSQL backend: for production and for running several zoomhook instances on one database.
//!
//! Appends (`append.rs`) lock the single `log_head` row (`SELECT … FOR UPDATE`). That one lock is
//! what makes the log safe across instances: `seq` stays gap-free and in commit order, and the
//! dedupe plan cannot race with another instance's batch. Group commit keeps the lock's cost per
//! event small, and each commit takes two pipelined round trips, so the lock is held for little
//! more than the commit's WAL flush (`docs/postgres-log.md`). Every append forces
//! `synchronous_commit = on` (WAL flushed before the commit returns): the durability the ack
//! waits for.

mod append;
mod cluster;
mod deliveries;
mod entities;
mod home_runtime;
#[cfg(test)]
mod plans;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    ConfigConnectImpl, Connect, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::migrations;
use super::query::{EVENT_COLUMNS, Param};
use super::{
    AdminTokenRecord, AppendOutcome, EventQuery, EventStore, NewEvent, StoreError, StoreOptions,
    StoredEvent,
};
use crate::core::clock::now_millis;

/// Advisory-lock key that serialises migrations when several instances start at once.
const MIGRATION_LOCK_KEY: i64 = 0x7a6f_6f6d_686f_6f6b; // "zoomhook"

/// The PostgreSQL event store.
pub struct PgStore {
    /// Connections are checked for health on reuse, so a lost server is noticed and replaced by
    /// a fresh connection as soon as it is back ("recovers by itself").
    pool: Pool,
    /// The event-log committer's own connections, never shared with the admin API, sync or
    /// delivery: however busy those are, an append never waits for a connection (which would
    /// turn into a 503 for Zoom). Two: the committer, and `/readyz`'s probe. Checked out without
    /// a verifying query (`RecyclingMethod::Fast`): every round trip is on the ack's path.
    committer: Pool,
    /// The delivery pump's own connections (`deliveries.rs`): its passes record outcomes and
    /// claim, every statement prepared once per connection, with no verifying query per checkout
    /// and no hop to another thread per round trip (opened, like the committer's, where they are
    /// first checked out: on the pump's thread). Its writes are all re-derived or repeated if
    /// lost, so the session runs with `synchronous_commit = off`.
    pump: Pool,
    /// For connections of their own: leases and the LISTEN connection.
    config: tokio_postgres::Config,
    /// Connections of roles this instance follows, kept for the next try of the lease.
    lease_candidates: std::sync::Mutex<HashMap<String, tokio_postgres::Client>>,
}

impl PgStore {
    /// Connects to `url` and applies migrations.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::BadUrl {
            url: redact_url(url),
            reason: format!("{e}"),
        })?;
        config.connect_timeout(Duration::from_secs(5));
        config.application_name("zoomhook");
        // Shared by tasks on several runtimes (the delivery pump has a thread of its own): each
        // connection is opened and driven on this, the store's home runtime (`home_runtime.rs`).
        let pool = build_pool(
            url,
            config.clone(),
            options.max_read_connections.max(1),
            RecyclingMethod::Verified,
            home_runtime::OnHomeRuntime {
                home: tokio::runtime::Handle::current(),
            },
        )?;
        // No verifying query per checkout: it would add a round trip to every commit. A
        // connection the server closed is seen as closed (and replaced) at checkout all the same,
        // and one that fails mid-append is closed rather than reused (see `append.rs`).
        // Opened where they are first checked out: on the committer's own thread, which then
        // drives its connection without a hop to another thread on every round trip.
        let committer = build_pool(
            url,
            config.clone(),
            2,
            RecyclingMethod::Fast,
            ConfigConnectImpl { tls: NoTls },
        )?;
        let mut relaxed = config.clone();
        let options = match config.get_options() {
            Some(given) => format!("{given} -c synchronous_commit=off"),
            None => "-c synchronous_commit=off".to_owned(),
        };
        relaxed.options(&options);
        let pump = build_pool(
            url,
            relaxed,
            2,
            RecyclingMethod::Fast,
            ConfigConnectImpl { tls: NoTls },
        )?;
        let store = PgStore {
            pool,
            committer,
            pump,
            config,
            lease_candidates: std::sync::Mutex::new(HashMap::new()),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs a generated query (see `query.rs`) with its parameters.
    async fn query_with(
        &self,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let values = boxed(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as _).collect();
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, &refs).await?)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        // Under the migration lock, like the migrations: instances starting together must not
        // both create the table.
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        tx.batch_execute(migrations::CREATE_TABLE).await?;
        let applied: Option<i64> = tx
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .await?
            .try_get(0)?;
        tx.commit().await?;
        migrations::refuse_newer(
            "the PostgreSQL database",
            applied,
            migrations::newest(&[migrations::POSTGRES]),
        )?;
        for m in migrations::POSTGRES {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                .await?;
            tx.batch_execute(migrations::CREATE_TABLE).await?;
            let done = tx
                .query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[&m.version],
                )
                .await?;
            if done.is_none() {
                tx.batch_execute(m.sql)
                    .await
                    .map_err(|e| StoreError::Migration {
                        version: m.version,
                        reason: e.to_string(),
                    })?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &now_millis()],
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// A pool of at most `size` connections, opened by `connect`.
fn build_pool(
    url: &str,
    config: tokio_postgres::Config,
    size: usize,
    recycling_method: RecyclingMethod,
    connect: impl Connect + 'static,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_connect(config, connect, ManagerConfig { recycling_method });
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::BadUrl {
            url: redact_url(url),
            reason: e.to_string(),
        })
}

/// The parameters of a generated query (see `query.rs`), owned for binding.
fn boxed(params: Vec<Param>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Text(s) => Box::new(s),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect()
}

/// Hides the password of a database URL in error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn row_to_event(r: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        source: r.try_get(2)?,
        event: r.try_get(3)?,
        event_ts: r.try_get(4)?,
        account_id: r.try_get(5)?,
        object_id: r.try_get(6)?,
        object_uuid: r.try_get(7)?,
        received_at: r.try_get(8)?,
        request_id: r.try_get(9)?,
        semantic_key: r.try_get(10)?,
        body: r.try_get(11)?,
    })
}

#[async_trait]
impl EventStore for PgStore {
    async fn append_batch(
        &self,
        batch: Vec<NewEvent>,
        dedupe_window_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        append::append_batch(&self.committer, batch, dedupe_window_ms).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let (sql, params) = query.to_sql(|n| format!("${n}"));
        let rows = self.query_with(&sql, params).await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        let row = client
            .query_opt(&sql, &[&crate::core::storable::key(id)])
            .await?;
        row.as_ref().map(row_to_event).transpose()
    }

    async fn head_seq(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one("SELECT seq FROM log_head", &[])
            .await?
            .try_get(0)?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Skips keys locked elsewhere: an append taking over expired keys holds them (and the head
    /// lock) until it commits, and a purge that waited on them while holding others the append
    /// needs next deadlocked with it, failing the append's whole batch.
    async fn purge_expired_dedupe_keys(&self, now_ms: i64, limit: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "DELETE FROM dedupe_keys WHERE key IN
                   (SELECT key FROM dedupe_keys WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2
                    FOR UPDATE SKIP LOCKED)",
                &[&now_ms, &limit],
            )
            .await?)
    }

    async fn insert_admin_token(&self, token: &AdminTokenRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO admin_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
                &[&token.id, &token.name, &token.token_hash, &token.created_at],
            )
            .await?;
        Ok(())
    }

    async fn count_admin_tokens(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one("SELECT COUNT(*) FROM admin_tokens", &[])
            .await?
            .try_get(0)?)
    }

    async fn find_admin_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT id FROM admin_tokens WHERE token_hash = $1",
                &[&token_hash],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/zoomhook"),
            "postgres://app:***@db:5432/zoomhook"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
    }
}
