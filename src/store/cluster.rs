//! What the instances sharing one database coordinate through it: who leads each single-reader
//! job (leases), where each Zoom WebSocket source stands, and a wake-up when any instance appends.
//!
//! On PostgreSQL a lease is a session advisory lock held by a connection of its own: it lasts
//! exactly as long as that connection, so an instance that dies or loses the database loses its
//! leases at once and another instance takes over. SQLite is one process's store: every lease is
//! granted and there is nobody else to wake.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};

use super::StoreError;

/// The last known state of one WebSocket source, shared by all instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub name: String,
    /// The instance that holds (or last held) the connection.
    pub instance: String,
    /// Since when the connection is up (epoch ms); `None` while it is not.
    pub connected_since: Option<i64>,
    /// The last moment the source was known to be connected and alive (epoch ms).
    pub alive_at: i64,
}

/// Which instance leads a role right now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Leader {
    pub role: String,
    pub instance: String,
}

/// A granted lease on a role. Dropping it releases the role.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Whether the lease is still held: on PostgreSQL, whether its connection still answers.
    async fn still_held(&mut self) -> bool;
}

/// Coordination between instances on one database (both backends).
#[async_trait]
pub trait ClusterStore {
    /// Tries to take the lease on `role` for `instance`; `None` when another instance holds it.
    async fn try_lead(
        &self,
        role: &str,
        instance: &str,
    ) -> Result<Option<Box<dyn Lease>>, StoreError>;

    /// The holders of every lease on the database (PostgreSQL); empty on SQLite, where the only
    /// instance knows what it leads.
    async fn leaders(&self) -> Result<Vec<Leader>, StoreError>;

    /// The shared state of a WebSocket source, if it was ever connected.
    async fn source_record(&self, name: &str) -> Result<Option<SourceRecord>, StoreError>;

    /// Records the state of a WebSocket source.
    async fn save_source_record(&self, record: &SourceRecord) -> Result<(), StoreError>;

    /// Passes on what other instances do, until `stop` turns true: bumps `log` when one appends
    /// to the log and wakes `deliveries` when one queues deliveries. Returns at once where there
    /// can be no other instance.
    async fn follow_other_instances(
        &self,
        log: watch::Sender<u64>,
        deliveries: Arc<Notify>,
        stop: watch::Receiver<bool>,
    );
}

/// A lease that is always held: the store has one process.
pub struct SoleLease;

#[async_trait]
impl Lease for SoleLease {
    async fn still_held(&mut self) -> bool {
        true
    }
}
