//! The WebSocket stream (`GET /api/v1/stream`): each connected client follows the event log from
//! a position of its choice, live, and can resume after a disconnect without gap or duplicate.
//!
//! Why each session keeps its own cursor instead of receiving events pushed by ingest: the log
//! is the source of truth and is ordered by `seq`, which is assigned in commit order and never
//! reused. A session that keeps its own cursor (the last seq it handed to the socket) and always
//! takes `seq > cursor` can neither skip nor repeat an event — not at the switch from backlog to
//! live, not when events commit while the backlog is being sent, not for events another instance
//! appended. Where it takes them from is a matter of cost: a live session takes them from the
//! server's shared tail (`tail.rs`: the recent end of the log, read once and serialised once for
//! every session); a session behind the tail's window reads the log itself, page by page, until it
//! reaches the window. Ingest never waits for a client, and a slow client costs nothing but its
//! own socket buffer.
//!
//! Memory per client is bounded: one page of events while catching up, and the WebSocket write
//! buffer. A client whose socket does not accept a frame within `stream_send_timeout` is closed
//! with a reason naming the last seq it was sent (`slow consumer; resume with after_seq=N`).

pub mod frames;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, timeout};

use crate::core::pattern::EventPattern;
use crate::store::{EventQuery, EventStore, StoredEvent};

/// Events read from the log per query while catching up: large enough for fast catch-up, small
/// enough that a client's share of memory stays small.
const PAGE: i64 = 500;
/// How often a session looks at the log without a local wake-up: appends by other instances.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the close frame may take to reach a client (a slow one must drain its backlog first).
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Close codes: 4000–4999 are the application's own (RFC 6455 §7.4.2).
const CLOSE_SLOW_CONSUMER: u16 = 4000;
const CLOSE_PING_TIMEOUT: u16 = 4001;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_INTERNAL: u16 = 1011;

/// What one session needs; nothing of it keeps the ingest path alive (no appender handle), so a
/// lingering client never delays the server's final commit at shutdown.
pub struct Session {
    pub store: Arc<dyn EventStore>,
    /// The server's shared tail of the log (see `tail.rs`).
    pub tail: Arc<tail::Tail>,
    /// Changes whenever the tail grows (from [`tail::Tail::subscribe`]).
    pub tail_advanced: watch::Receiver<i64>,
    /// Turns true when the server stops.
    pub stopping: watch::Receiver<bool>,
    /// Only events matching one of these (all events when empty).
    pub patterns: Vec<EventPattern>,
    /// The stream starts after this seq.
    pub after_seq: i64,
    /// The log head at connect (told to the client in the hello frame).
    pub head: i64,
    pub send_timeout: Duration,
    pub ping_interval: Duration,
}

/// Why a session ended: the `reason` label of `zoomhook_stream_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    ClientClosed,
    SlowConsumer,
    PingTimeout,
    ServerStopping,
    StoreError,
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Ending::ClientClosed => "client_closed",
            Ending::SlowConsumer => "slow_consumer",
            Ending::PingTimeout => "ping_timeout",
            Ending::ServerStopping => "server_stopping",
            Ending::StoreError => "store_error",
        }
    }

    /// The close frame to send, if the client can still be told anything.
    fn close_frame(self, last_sent: i64) -> Option<CloseFrame> {
        let (code, why) = match self {
            Ending::ClientClosed => return None,
            Ending::SlowConsumer => (CLOSE_SLOW_CONSUMER, "slow consumer"),
            Ending::PingTimeout => (CLOSE_PING_TIMEOUT, "no answer to ping"),
            Ending::ServerStopping => (CLOSE_GOING_AWAY, "server stopping"),
            Ending::StoreError => (CLOSE_INTERNAL, "event store unavailable"),
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(frames::resume_reason(why, last_sent)),
        })
    }
}

/// Counts a connected client for as long as it lives (also if the session task is aborted).
struct Connected;

impl Connected {
    fn new() -> Connected {
        metrics::gauge!("zoomhook_stream_clients").increment(1.0);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!("zoomhook_stream_clients").decrement(1.0);
    }
}

/// A running session: the socket and the positions in the log.
struct Running {
    socket: WebSocket,
    /// The last seq whose frame was handed to the socket: frames are written in order, so a
    /// client that receives the close frame has received every frame up to this one.
    last_sent: i64,
    /// Every event up to here has been looked at (sent, or not matching the filter).
    scanned: i64,
    /// A ping was sent and its pong has not arrived yet.
    ping_pending: bool,
}

impl Session {
    /// Serves the client until it leaves, falls behind, stops answering, or the server stops.
    pub async fn run(mut self, socket: WebSocket) {
        let _connected = Connected::new();
        let mut running = Running {
            socket,
            last_sent: self.after_seq,
            scanned: self.after_seq,
            ping_pending: false,
        };
        let ending = self.serve(&mut running).await;
        metrics::counter!("zoomhook_stream_disconnects_total", "reason" => ending.label())
            .increment(1);
        tracing::debug!(
            reason = ending.label(),
            last_sent = running.last_sent,
            "stream client disconnected"
        );
        if let Some(frame) = ending.close_frame(running.last_sent) {
            let _ = timeout(
                CLOSE_GRACE,
                running.socket.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    async fn serve(&mut self, running: &mut Running) -> Ending {
        let hello = frames::Hello::text(self.after_seq, self.head, &self.patterns);
        if let Err(ending) = self.send_now(running, Message::Text(hello.into())).await {
            return ending;
        }
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        // The first ping one interval after connect, not at once.
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        for ticker in [&mut poll, &mut ping] {
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        loop {
            if let Err(ending) = self.catch_up(running).await {
                return ending;
            }
            if let Err(ending) = self.wait(running, &mut poll, &mut ping).await {
                return ending;
            }
        }
    }

    /// Sends every matching event after the cursor, page by page, until the log is exhausted:
    /// from the shared tail when the cursor is inside its window, else from the log.
    async fn catch_up(&self, running: &mut Running) -> Result<(), Ending> {
        loop {
            if let Some(batch) = self.tail.after(running.scanned, PAGE as usize) {
                let complete = batch.frames.len() < PAGE as usize;
                for frame in batch.frames {
                    running.scanned = frame.seq;
                    if self.matches(&frame.event) {
                        self.feed_text(running, frame.seq, frame.text).await?;
                    }
                }
                if complete {
                    running.scanned = running.scanned.max(batch.last);
                }
                self.flush(running).await?;
                if complete {
                    return Ok(());
                }
                continue;
            }
            let (page, head) = self.next_page(running.scanned).await?;
            let full = page.len() as i64 >= PAGE;
            for event in &page {
                running.scanned = event.seq;
                if self.matches(&event.event) {
                    let text = frames::event_text(event).into();
                    self.feed_text(running, event.seq, text).await?;
                }
            }
            self.flush(running).await?;
            if !full {
                // A short page read below `head` means nothing else up to `head` matches, so a
                // filtered stream need not scan those entries again at the next wake-up.
                if let Some(head) = head {
                    running.scanned = running.scanned.max(head);
                }
                return Ok(());
            }
        }
    }

    /// The next page after `scanned`. A filtered stream reads the head first and bounds the
    /// query by it (seqs up to the head are committed), so a rare filter costs one scan, not one
    /// per wake-up; an unfiltered stream needs no bound (every row it reads is sent).
    async fn next_page(&self, scanned: i64) -> Result<(Vec<StoredEvent>, Option<i64>), Ending> {
        let head = if self.patterns.is_empty() {
            None
        } else {
            Some(self.store.head_seq().await.map_err(store_failed)?)
        };
        let query = EventQuery {
            patterns: self.patterns.clone(),
            after_seq: Some(scanned),
            before_seq: head.map(|h| h.saturating_add(1)),
            limit: PAGE,
            ..EventQuery::default()
        };
        let page = self.store.list_events(&query).await.map_err(store_failed)?;
        Ok((page, head))
    }

    fn matches(&self, event: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(event))
    }

    /// Hands one event frame to the socket. `feed` either takes the frame or (when the timeout
    /// cancels it while waiting for room) does not, never half: so `last_sent` is exact.
    async fn feed_text(
        &self,
        running: &mut Running,
        seq: i64,
        text: Utf8Bytes,
    ) -> Result<(), Ending> {
        match timeout(self.send_timeout, running.socket.feed(Message::Text(text))).await {
            Ok(Ok(())) => {
                running.last_sent = seq;
                metrics::counter!("zoomhook_stream_frames_total").increment(1);
                Ok(())
            }
            Ok(Err(_)) => Err(Ending::ClientClosed),
            Err(_) => Err(Ending::SlowConsumer),
        }
    }

    async fn flush(&self, running: &mut Running) -> Result<(), Ending> {
        match timeout(self.send_timeout, running.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::ClientClosed),
            Err(_) => Err(Ending::SlowConsumer),
        }
    }

    async fn send_now(&self, running: &mut Running, message: Message) -> Result<(), Ending> {
        match timeout(self.send_timeout, running.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::ClientClosed),
            Err(_) => Err(Ending::SlowConsumer),
        }
    }

    /// Waits until the log may have advanced, answering the client and pinging it meanwhile.
    async fn wait(
        &mut self,
        running: &mut Running,
        poll: &mut tokio::time::Interval,
        ping: &mut tokio::time::Interval,
    ) -> Result<(), Ending> {
        let ping_due = tokio::select! {
            // Biased: a pong that arrived while the backlog was sent is read before the ping
            // deadline is judged.
            biased;
            _ = self.stopping.wait_for(|stopping| *stopping) => return Err(Ending::ServerStopping),
            message = running.socket.recv() => match message {
                Some(Ok(Message::Pong(_))) => {
                    running.ping_pending = false;
                    false
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    return Err(Ending::ClientClosed);
                }
                // Pings are answered by the WebSocket layer; other frames mean nothing here.
                Some(Ok(_)) => false,
            },
            changed = self.tail_advanced.changed() => {
                changed.map_err(|_| Ending::ServerStopping)?;
                false
            }
            _ = poll.tick() => false,
            _ = ping.tick() => true,
        };
        if ping_due {
            self.ping(running).await?;
        }
        Ok(())
    }

    /// Sends a ping, unless the previous one is still unanswered: then the client is gone.
    async fn ping(&self, running: &mut Running) -> Result<(), Ending> {
        if running.ping_pending {
            return Err(Ending::PingTimeout);
        }
        running.ping_pending = true;
        self.send_now(running, Message::Ping(Default::default()))
            .await
    }
}

fn store_failed(error: crate::store::StoreError) -> Ending {
    tracing::warn!(%error, "a stream session could not read the event log");
    Ending::StoreError
}
