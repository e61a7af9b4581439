//! Leadership: single-reader work (sync, fan-out scheduling, each Zoom WebSocket connection) runs
//! on exactly one of the instances that share a database, and moves to another within seconds
//! when its leader dies or loses the database.
//!
//! [`lead`] loops: take the role's lease ([`crate::store::ClusterStore::try_lead`]); while it is
//! held, run the work, checking the lease every second; when the lease is lost (or the server
//! stops), stop the work, wait for it, and go back to trying. On SQLite the lease is always
//! granted. Work that is stopped half-way is safe to repeat: readers move durable cursors with a
//! compare-and-swap, so a short overlap between an old and a new leader wastes work but never
//! applies an event twice or skips one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::clock::now_millis;
use crate::store::EventStore;

/// How often a held lease is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a follower tries to take a lease (plus up to half of it in jitter).
const TRY_EVERY: Duration = Duration::from_secs(1);
/// How long stopped work may take to finish before the lease is released anyway.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The roles this instance leads, and since when.
#[derive(Debug)]
pub struct Leadership {
    instance: String,
    held: Mutex<BTreeMap<String, i64>>,
}

impl Leadership {
    pub fn new(instance: impl Into<String>) -> Arc<Leadership> {
        Arc::new(Leadership {
            instance: instance.into(),
            held: Mutex::new(BTreeMap::new()),
        })
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The roles this instance leads now, with the time (epoch ms) it took each.
    pub fn held(&self) -> BTreeMap<String, i64> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, role: &str, leading: bool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if leading {
            held.insert(role.to_owned(), now_millis());
        } else {
            held.remove(role);
        }
        metrics::gauge!("zoomhook_leader", "role" => role.to_owned())
            .set(f64::from(u8::from(leading)));
    }
}

/// Runs `work` whenever this instance holds the lease on `role`, until `stop` turns true. `work`
/// gets a receiver that turns true when it must stop (lease lost, or server stopping).
pub fn lead<F, Fut>(
    store: Arc<dyn EventStore>,
    leadership: Arc<Leadership>,
    role: impl Into<String>,
    mut stop: watch::Receiver<bool>,
    work: F,
) -> JoinHandle<()>
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let role = role.into();
    crate::metrics::spawn(async move {
        let mut announced_follower = false;
        while !*stop.borrow() {
            let lease = match store.try_lead(&role, leadership.instance()).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    if !announced_follower {
                        tracing::info!(%role, "another instance leads this role; standing by");
                        announced_follower = true;
                    }
                    pause(&mut stop).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%role, %error, "cannot try the lease; retrying");
                    pause(&mut stop).await;
                    continue;
                }
            };
            announced_follower = false;
            leadership.set(&role, true);
            tracing::info!(%role, instance = leadership.instance(), "leading");
            let lost = hold(lease, &mut stop, &work).await;
            leadership.set(&role, false);
            if lost {
                tracing::warn!(%role, "lost the lease (the database connection holding it failed); stopped the work, another instance takes over");
                pause(&mut stop).await;
            }
        }
    })
}

/// Runs the work while the lease holds; true if the lease was lost (rather than the server
/// stopping or the work ending).
async fn hold<F, Fut>(
    mut lease: Box<dyn crate::store::Lease>,
    stop: &mut watch::Receiver<bool>,
    work: &F,
) -> bool
where
    F: Fn(watch::Receiver<bool>) -> Fut + Sync,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (cancel, cancelled) = watch::channel(false);
    let mut task = crate::metrics::spawn(work(cancelled));
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.tick().await;
    let lost = loop {
        tokio::select! {
            _ = check.tick() => {
                if !lease.still_held().await {
                    break true;
                }
            }
            _ = stop.changed() => break false,
            result = &mut task => {
                if let Err(error) = result {
                    tracing::error!(%error, "led work ended unexpectedly; releasing the lease");
                }
                // Give the lease up; the loop takes it again after a pause (or another
                // instance does).
                tokio::time::sleep(TRY_EVERY).await;
                return false;
            }
        }
    };
    let _ = cancel.send(true);
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        tracing::warn!("led work did not stop within 30s; abandoning it");
        task.abort();
    }
    drop(lease);
    lost
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    let jitter = rand::rng().random_range(0.0..0.5);
    tokio::select! {
        _ = tokio::time::sleep(TRY_EVERY.mul_f64(1.0 + jitter)) => {}
        _ = stop.changed() => {}
    }
}

/// A default instance name: the host name and the process id.
pub fn default_instance_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: `buffer` is valid for its length; gethostname NUL-terminates within it or fails.
    let host = if unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0 {
        let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        "zoomhook".to_owned()
    };
    format!("{host}-{}", std::process::id())
}
