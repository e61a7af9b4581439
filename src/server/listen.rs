//! The accept loop: connections up to `max_connections`, each served by hyper (HTTP/1 or HTTP/2)
//! under a watchdog that closes idle and slow-header connections (see `connection.rs`), and a
//! graceful stop that lets in-flight requests finish.
//!
//! At the cap the loop does not close the newcomer — it may be Zoom — and does not simply pause
//! either, which would leave the newcomer queued behind sockets that send nothing until their
//! timeouts expire. It closes the connection that has waited longest without a request in flight
//! and accepts the next one from the kernel's backlog. Only when every connection is busy with a
//! request does accepting wait, and then the backlog is where the wait belongs.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::connection::{Closing, GuardedBody, Registry, Timeouts, TrackedStream};
use crate::config::Limits;

/// hyper's HTTP/1 buffer per connection (request head, body chunks, response). Bounds what one
/// connection costs; a request head larger than this is refused (431).
const HTTP1_MAX_BUF_BYTES: usize = 32 * 1024;
/// Largest HTTP/2 header list (decoded) one request may send.
const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 32 * 1024;
/// How long an accept error such as EMFILE (too many open files) pauses the loop: long enough not
/// to spin on an error that persists, short enough to resume as soon as descriptors free up.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long the loop waits for an evicted connection to give its slot back before evicting the
/// next one (or, when none could be evicted, before looking again).
const SLOT_WAIT: Duration = Duration::from_millis(50);

/// Accepts and serves connections on `listener` until `stop` turns true, then stops accepting
/// and waits for the open connections to finish their in-flight requests. (The caller bounds
/// that wait; aborting this task drops every connection task with it.)
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let builder = Arc::new(http_builder(limits));
    let max_connections = limits.effective_max_connections();
    let slots = Arc::new(Semaphore::new(max_connections));
    let registry = Arc::new(Registry::default());
    let graceful = GracefulShutdown::new();
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout,
        keep_alive: limits.keep_alive_timeout,
    };
    tracing::debug!(max_connections, ?timeouts, "accepting connections");
    // Connection tasks live in this set so that aborting `serve` ends them all.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = accept(&listener, &slots, &registry) => accepted?,
        };
        let Some((stream, peer, slot)) = accepted else {
            continue;
        };
        let stream = TrackedStream::new(stream, &registry, slot);
        connections.spawn(crate::metrics::carry(serve_connection(
            Arc::clone(&builder),
            stream,
            peer,
            app.clone(),
            timeouts,
            graceful.watcher(),
        )));
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Waits for a free slot, then for a connection. `Ok(None)` after an accept error that concerns
/// only that connection (or that was waited out).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    registry: &Registry,
) -> anyhow::Result<Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)>> {
    let slot = claim_slot(slots, registry).await?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            // Webhook answers are small single writes: do not hold them back for Nagle.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
            }
            Ok(Some((stream, peer, slot)))
        }
        Err(error) if is_connection_error(&error) => Ok(None),
        Err(error) => {
            // EMFILE/ENFILE/ENOBUFS: the process or system is out of descriptors or memory. The
            // connection stays in the backlog; retrying at once would spin on the same error.
            tracing::error!(%error, open = registry.open_connections(), "accept error; pausing before the next accept");
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            Ok(None)
        }
    }
}

/// A slot of the connection cap; at the cap, makes room by closing a waiting connection.
async fn claim_slot(
    slots: &Arc<Semaphore>,
    registry: &Registry,
) -> anyhow::Result<OwnedSemaphorePermit> {
    loop {
        if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
            return Ok(slot);
        }
        if registry.evict_longest_waiting() {
            tracing::debug!("at max_connections: closed the longest-waiting connection");
        }
        let acquire = Arc::clone(slots).acquire_owned();
        if let Ok(slot) = tokio::time::timeout(SLOT_WAIT, acquire).await {
            return slot.context("the connection-slot semaphore was closed");
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// hyper's settings. Its own HTTP/1 header timer stays off: the watchdog enforces header and idle
/// timeouts for both protocols (hyper's would also close idle keep-alive connections early).
/// Runs what hyper spawns (HTTP/2 streams) as Tokio tasks that record into this server's metrics.
#[derive(Clone, Copy, Debug)]
pub struct MetricsExecutor;

impl<F> hyper::rt::Executor<F> for MetricsExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        crate::metrics::spawn(future);
    }
}

fn http_builder(limits: &Limits) -> Builder<MetricsExecutor> {
    let mut builder = Builder::new(MetricsExecutor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(HTTP1_MAX_BUF_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        // WebSocket over HTTP/2 (RFC 8441), as axum::serve allowed.
        .enable_connect_protocol();
    builder
}

/// Serves one connection until it ends, the watchdog closes it, or shutdown finishes it.
async fn serve_connection(
    builder: Arc<Builder<MetricsExecutor>>,
    stream: TrackedStream,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    graceful: Watcher,
) {
    let activity = stream.activity();
    let on_request = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let guard = on_request.request_started();
        let mut request = request.map(Body::new);
        // The receiver's IP allow-lists read the peer address through `ConnectInfo`.
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| GuardedBody::new(body, guard)))
        }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        }
        reason = activity.closing(timeouts) => log_closing(peer, reason),
    }
    // If the connection was upgraded, its socket lives on in the upgrade's task.
    activity.detach();
}

fn log_closing(peer: SocketAddr, reason: Closing) {
    match reason {
        Closing::Evicted => tracing::debug!(%peer, "closed to make room (max_connections)"),
        Closing::HeaderTimeout => {
            tracing::debug!(%peer, "closed: request head not received in time (header_read_timeout)")
        }
        Closing::IdleTimeout => tracing::debug!(%peer, "closed: idle (keep_alive_timeout)"),
    }
}
