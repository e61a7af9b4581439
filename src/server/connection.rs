//! What one connection is doing, so it can be closed when it is doing nothing useful.
//!
//! hyper closes nothing by itself on HTTP/2, and on HTTP/1 its `header_read_timeout` also starts
//! as soon as a keep-alive connection goes idle (hyper ≥ 1.6), so one timer would have to serve
//! both as header timeout and idle timeout. Instead each connection keeps an [`Activity`] that the
//! socket wrapper ([`TrackedStream`]) and the request path ([`RequestGuard`]) update, and a
//! watchdog ([`Activity::closing`]) that ends the connection when
//! - its first request head is not complete `header_read_timeout` after the accept (idle sockets,
//!   trickled request lines and headers),
//! - a later request head is not complete `header_read_timeout` after its first byte,
//! - it has been idle between requests for `keep_alive_timeout`, or
//! - the accept loop needs its slot ([`Registry::evict_longest_waiting`]) while it has no request
//!   in flight.
//!
//! A connection with a request in flight (including one still sending its body: `read_timeout`
//! bounds that) is never closed by the watchdog.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

/// The first bytes of an HTTP/2 connection (the client preface).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// The timeouts the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keep_alive: Duration,
}

/// Why the watchdog ended a connection (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    HeaderTimeout,
    IdleTimeout,
    Evicted,
}

/// Shared between the socket wrapper, the request path, the watchdog and the registry.
#[derive(Debug)]
pub struct Activity {
    // A std mutex: every critical section is a few field updates and never spans an await.
    state: Mutex<State>,
    /// Woken whenever the deadline may have moved earlier or the connection was evicted.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests (HTTP/1) or streams (HTTP/2) whose response is not completely sent yet.
    in_flight: usize,
    /// Requests started on this connection so far.
    started: u64,
    /// When the connection was accepted, or when its last response was sent.
    waiting_since: Instant,
    /// First byte of the next request head, if it has begun to arrive.
    head_started: Option<Instant>,
    /// HTTP/2 sends frames of its own between requests (SETTINGS, PING, WINDOW_UPDATE), so bytes
    /// read while idle do not mean a request head has begun.
    http2: bool,
    evicted: bool,
    /// The connection was handed to an upgrade (WebSocket): it is no longer ours to time out.
    detached: bool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new(State {
                in_flight: 0,
                started: 0,
                waiting_since: Instant::now(),
                head_started: None,
                http2: false,
                evicted: false,
                detached: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the fields inconsistent (each update is a
        // single assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by the socket wrapper with the bytes of every read.
    fn on_read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.lock();
        if state.started == 0 && state.head_started.is_none() && bytes.starts_with(H2_PREFACE_START)
        {
            state.http2 = true;
        }
        if state.in_flight == 0 && state.head_started.is_none() && !state.http2 {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Marks a request as started; the guard marks it finished when its response is sent.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        let mut state = self.lock();
        state.in_flight += 1;
        state.started += 1;
        state.head_started = None;
        RequestGuard {
            activity: Arc::clone(self),
        }
    }

    fn request_finished(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.waiting_since = Instant::now();
        }
    }

    /// The connection lives on as an upgrade; the watchdog and eviction leave it alone.
    pub fn detach(&self) {
        self.lock().detached = true;
    }

    fn evict(&self) {
        self.lock().evicted = true;
        self.changed.notify_one();
    }

    /// Since when the connection has been waiting without a request in flight, if it is.
    fn waiting_since(&self) -> Option<Instant> {
        let state = self.lock();
        (state.in_flight == 0 && !state.evicted && !state.detached).then_some(state.waiting_since)
    }

    /// When the connection must be closed if nothing changes; `None` while a request is in flight.
    fn deadline(&self, timeouts: Timeouts) -> Result<Option<(Instant, Closing)>, Closing> {
        let state = self.lock();
        if state.evicted {
            return Err(Closing::Evicted);
        }
        if state.in_flight > 0 || state.detached {
            return Ok(None);
        }
        Ok(Some(match (state.started, state.head_started) {
            (0, _) => (
                state.waiting_since + timeouts.header_read,
                Closing::HeaderTimeout,
            ),
            (_, Some(first_byte)) => (first_byte + timeouts.header_read, Closing::HeaderTimeout),
            (_, None) => (
                state.waiting_since + timeouts.keep_alive,
                Closing::IdleTimeout,
            ),
        }))
    }

    /// Resolves when the connection should be closed, and says why.
    pub async fn closing(&self, timeouts: Timeouts) -> Closing {
        loop {
            let changed = self.changed.notified();
            match self.deadline(timeouts) {
                Err(reason) => return reason,
                Ok(Some((deadline, reason))) if deadline <= Instant::now() => return reason,
                Ok(Some((deadline, _))) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = changed => {}
                    }
                }
                Ok(None) => changed.await,
            }
        }
    }
}

/// One request in flight; dropped when its response body has been sent (or abandoned).
#[derive(Debug)]
pub struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.request_finished();
    }
}

/// A response body that keeps its request "in flight" until hyper has finished sending it, so a
/// slow download is not mistaken for an idle connection.
pub struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl GuardedBody {
    pub fn new(inner: Body, guard: RequestGuard) -> GuardedBody {
        GuardedBody {
            inner,
            _guard: guard,
        }
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The open connections, so that the accept loop can close one to make room.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        // Inserts and removes are single map operations: a poisoned map is still consistent.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the connection that has waited longest without a request in flight. Legitimate
    /// clients send their request head within milliseconds of connecting, so the longest waiters
    /// are idle keep-alive connections, header trickles and sockets that never send anything.
    /// Returns false when every connection is busy with a request.
    pub fn evict_longest_waiting(&self) -> bool {
        let victim = self
            .lock()
            .values()
            .filter_map(|activity| activity.waiting_since().map(|since| (since, activity)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, activity)| Arc::clone(activity));
        match victim {
            Some(activity) => {
                activity.evict();
                true
            }
            None => false,
        }
    }

    /// Number of open connections (including upgraded ones).
    pub fn open_connections(&self) -> usize {
        self.lock().len()
    }
}

/// A TCP connection that reports its reads to its [`Activity`], holds its slot of the
/// connection cap, and leaves the [`Registry`] when dropped — which may be long after the HTTP
/// connection ended, if it was upgraded to a WebSocket.
pub struct TrackedStream {
    stream: TcpStream,
    activity: Arc<Activity>,
    registry: Arc<Registry>,
    id: u64,
    _slot: OwnedSemaphorePermit,
}

impl TrackedStream {
    /// Registers a freshly accepted connection.
    pub fn new(
        stream: TcpStream,
        registry: &Arc<Registry>,
        slot: OwnedSemaphorePermit,
    ) -> TrackedStream {
        let activity = Arc::new(Activity::new());
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        registry.lock().insert(id, Arc::clone(&activity));
        TrackedStream {
            stream,
            activity,
            registry: Arc::clone(registry),
            id,
            _slot: slot,
        }
    }

    /// The activity record of this connection.
    pub fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.activity.on_read(&buf.filled()[before..]);
        }
        result
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
