//! Coordination on SQLite: one process owns the database, so it leads everything.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tokio::sync::{Notify, watch};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::cluster::{ClusterStore, Leader, Lease, SoleLease, SourceRecord};

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn try_lead(
        &self,
        _role: &str,
        _instance: &str,
    ) -> Result<Option<Box<dyn Lease>>, StoreError> {
        Ok(Some(Box::new(SoleLease)))
    }

    async fn leaders(&self) -> Result<Vec<Leader>, StoreError> {
        Ok(Vec::new())
    }

    async fn source_record(&self, name: &str) -> Result<Option<SourceRecord>, StoreError> {
        let name = name.to_owned();
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT name, instance, connected_since, alive_at FROM source_state WHERE name = ?1",
                    [&name],
                    |r| {
                        Ok(SourceRecord {
                            name: r.get(0)?,
                            instance: r.get(1)?,
                            connected_since: r.get(2)?,
                            alive_at: r.get(3)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn save_source_record(&self, record: &SourceRecord) -> Result<(), StoreError> {
        let r = record.clone();
        self.with_relaxed_writer(move |conn| {
            conn.execute(
                "INSERT INTO source_state (name, instance, connected_since, alive_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET instance = excluded.instance,
                     connected_since = excluded.connected_since, alive_at = excluded.alive_at",
                params![r.name, r.instance, r.connected_since, r.alive_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn follow_other_instances(
        &self,
        _log: watch::Sender<u64>,
        _deliveries: Arc<Notify>,
        _stop: watch::Receiver<bool>,
    ) {
    }
}
