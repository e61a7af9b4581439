//! Pooled connections that live on the runtime the store was opened on.
//!
//! `tokio_postgres` hands back a client and a connection future; whoever spawns that future drives
//! the socket. deadpool spawns it on the runtime of the task whose checkout happened to create the
//! connection. The delivery pump runs on a thread of its own (`core::own_thread`), so without this
//! a connection it created would be driven by the pump's thread for the rest of its life, even
//! while the admin API or sync used it: a pump busy signing, or restarting after a panic, would
//! stall them, and the pump's runtime going away would break the connection under them.
//!
//! [`OnHomeRuntime`] opens every connection, socket included, inside a task on the home runtime
//! (a socket is registered with the reactor of the runtime that opened it, so opening it
//! elsewhere and moving only the driver would not do). If the home runtime is gone, the
//! connection is opened where it was asked for: there is no other runtime left to drive it.

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

/// A [`Connect`] that opens and drives connections on `home`.
pub(super) struct OnHomeRuntime {
    pub(super) home: Handle,
}

impl Connect for OnHomeRuntime {
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = config.clone();
        let home = self.home.clone();
        Box::pin(async move {
            let on_home = home.spawn(open(config.clone()));
            match on_home.await {
                Ok(opened) => opened,
                // Cancelled: the home runtime is shutting down.
                Err(_) => open(config).await,
            }
        })
    }
}

/// Opens a connection and spawns its driver on the current runtime.
async fn open(config: Config) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended with an error");
        }
    });
    Ok((client, driver))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use deadpool_postgres::RecyclingMethod;

    fn url() -> String {
        let base = std::env::var("ZOOMHOOK_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        format!("{base}/postgres")
    }

    /// A connection created by a checkout on another thread's runtime keeps working while that
    /// thread is stuck. Before, its socket was driven by that thread: the query below hung.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_made_on_another_runtime_is_driven_by_the_home_runtime() {
        let url = url();
        let config: tokio_postgres::Config = url.parse().expect("test url");
        // One connection, and no verifying query at checkout (which would time out and replace
        // the stalled connection, hiding the stall): the home runtime gets the same connection.
        let home = super::OnHomeRuntime {
            home: tokio::runtime::Handle::current(),
        };
        let pool =
            super::super::build_pool(&url, config, 1, RecyclingMethod::Fast, home).expect("pool");

        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let other_pool = pool.clone();
        let other = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let client = other_pool
                    .get()
                    .await
                    .expect("checkout on the other runtime");
                client.simple_query("SELECT 1").await.expect("query");
                drop(client);
                ready_tx.send(()).expect("ready");
                // Stuck without yielding: nothing on this runtime runs until released.
                let _ = release_rx.recv_timeout(Duration::from_secs(30));
            });
        });

        tokio::task::spawn_blocking(move || ready_rx.recv())
            .await
            .expect("join")
            .expect("the other thread made its connection");
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let client = pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await;
        let _ = release_tx.send(());
        other.join().expect("other thread");
        outcome
            .expect("the query ran while the thread that made the connection was stuck")
            .expect("query");
    }
}
