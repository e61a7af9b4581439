//! Coordination on PostgreSQL: leases are session advisory locks, each on a connection of its
//! own; other instances' appends arrive by `LISTEN/NOTIFY`.
//!
//! A lease lives exactly as long as its connection: `kill -9` of an instance closes its sockets
//! and PostgreSQL releases its locks at once; an instance that can no longer reach the database
//! notices within a second (`still_held`) and stops the work, and the server drops the session
//! after a few seconds of silence (TCP keepalives set on the session), so another instance takes
//! over. Who holds what is read from `pg_locks`: each lease connection names its role and its
//! instance in `application_name`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use super::PgStore;
use crate::store::StoreError;
use crate::store::cluster::{ClusterStore, Leader, Lease, SourceRecord};

/// First key of every zoomhook lease (the two-key form of the advisory lock): keeps them apart
/// from other applications' locks and from the migration lock.
const LEASE_NAMESPACE: i32 = 0x7a68; // "zh"
/// Prefix of a lease connection's `application_name`: `zoomhook-lease <role> <instance>`.
const LEASE_APP: &str = "zoomhook-lease";
/// Channel notified by every append that wrote events.
pub(super) const LOG_CHANNEL: &str = "zoomhook_log";
/// Channel notified when deliveries are queued.
pub(super) const DELIVERIES_CHANNEL: &str = "zoomhook_deliveries";
/// How long a liveness check of a lease connection may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The second lock key of `role`: a stable hash (FNV-1a), the same in every instance and version.
fn role_key(role: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in role.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// `application_name` allows 63 bytes and no control characters: keep the names printable.
fn app_name(role: &str, instance: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect()
    };
    let mut name = format!("{LEASE_APP} {} {}", clean(role), clean(instance));
    name.truncate(63);
    name
}

struct PgLease {
    client: tokio_postgres::Client,
}

#[async_trait]
impl Lease for PgLease {
    async fn still_held(&mut self) -> bool {
        if self.client.is_closed() {
            return false;
        }
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, self.client.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
    }
}

impl PgStore {
    /// A connection of its own (not from a pool), driven by a task of its own.
    async fn dedicated(
        &self,
        application_name: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            mpsc::UnboundedReceiver<AsyncMessage>,
        ),
        StoreError,
    > {
        let mut config = self.config.clone();
        config.application_name(application_name);
        let (client, mut connection) = config.connect(NoTls).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        crate::metrics::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        let _ = tx.send(message);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "dedicated PostgreSQL connection ended");
                        break;
                    }
                }
            }
        });
        Ok((client, rx))
    }
}

#[async_trait]
impl ClusterStore for PgStore {
    async fn try_lead(
        &self,
        role: &str,
        instance: &str,
    ) -> Result<Option<Box<dyn Lease>>, StoreError> {
        // A follower asks every second: it keeps its connection for the next try rather than
        // opening one each time.
        let kept = self
            .lease_candidates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(role)
            .filter(|c| !c.is_closed());
        let client = match kept {
            Some(client) => client,
            None => {
                let (client, _messages) = self.dedicated(&app_name(role, instance)).await?;
                // The server notices a vanished instance within ~10 s even without a FIN (a cut
                // network): the lease must not outlive its holder by long.
                client
                    .batch_execute(
                        "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3",
                    )
                    .await?;
                client
            }
        };
        let granted: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LEASE_NAMESPACE, &role_key(role)],
            )
            .await?
            .try_get(0)?;
        if granted {
            return Ok(Some(Box::new(PgLease { client })));
        }
        self.lease_candidates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(role.to_owned(), client);
        Ok(None)
    }

    async fn leaders(&self) -> Result<Vec<Leader>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                   AND l.classid = CAST($1::int AS oid)
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&LEASE_NAMESPACE],
            )
            .await?;
        let names = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        let mut leaders: Vec<Leader> = names
            .iter()
            .filter_map(|name| {
                let mut parts = name.splitn(3, ' ');
                (parts.next()? == LEASE_APP).then_some(())?;
                Some(Leader {
                    role: parts.next()?.to_owned(),
                    instance: parts.next()?.to_owned(),
                })
            })
            .collect();
        leaders.sort_by(|a, b| a.role.cmp(&b.role));
        Ok(leaders)
    }

    async fn source_record(&self, name: &str) -> Result<Option<SourceRecord>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT name, instance, connected_since, alive_at FROM source_state WHERE name = $1",
                &[&name],
            )
            .await?;
        row.map(|r| {
            Ok(SourceRecord {
                name: r.try_get(0)?,
                instance: r.try_get(1)?,
                connected_since: r.try_get(2)?,
                alive_at: r.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn save_source_record(&self, record: &SourceRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO source_state (name, instance, connected_since, alive_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET instance = excluded.instance,
                     connected_since = excluded.connected_since, alive_at = excluded.alive_at",
                &[
                    &record.name,
                    &record.instance,
                    &record.connected_since,
                    &record.alive_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn follow_other_instances(
        &self,
        log: watch::Sender<u64>,
        deliveries: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        while !*stop.borrow() {
            match self.listen(&log, &deliveries, &mut stop).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "lost the LISTEN connection; other instances' events arrive by polling until it is back");
                    // A notification lost with the connection is found by this wake-up; what
                    // commits until the next LISTEN, by the one `listen` gives when it is back.
                    log.send_modify(|n| *n = n.wrapping_add(1));
                    deliveries.notify_waiters();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }
}

impl PgStore {
    async fn listen(
        &self,
        log: &watch::Sender<u64>,
        deliveries: &Notify,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let (client, mut messages) = self.dedicated("zoomhook-listen").await?;
        client
            .batch_execute(&format!(
                "LISTEN {LOG_CHANNEL}; LISTEN {DELIVERIES_CHANNEL}"
            ))
            .await?;
        // What other instances committed before the LISTEN took effect sent its notifications to
        // nobody: one wake-up now makes every follower look, so nothing waits for the next append.
        log.send_modify(|v| *v = v.wrapping_add(1));
        deliveries.notify_waiters();
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Some(AsyncMessage::Notification(n)) if n.channel() == LOG_CHANNEL => {
                        log.send_modify(|v| *v = v.wrapping_add(1));
                    }
                    Some(AsyncMessage::Notification(_)) => deliveries.notify_waiters(),
                    Some(_) => {}
                    None => return Err(StoreError::Unavailable("the LISTEN connection closed".into())),
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_keys_are_stable_and_names_fit() {
        assert_eq!(role_key("sync"), role_key("sync"));
        assert_ne!(role_key("sync"), role_key("fanout"));
        let name = app_name("source:live", &"i".repeat(100));
        assert!(name.len() <= 63);
        assert!(name.starts_with("zoomhook-lease source:live "));
        assert_eq!(app_name("a b", "x\ny"), "zoomhook-lease a_b x_y");
    }
}
