//! The recent end of the log, shared by every stream session of a server: read from the store
//! once, each event's frame serialised once, kept in a window bounded in frames and in bytes.
//!
//! Without it every session would query the store after every commit and serialise every event
//! itself: with 100 clients, 100 reads per commit and 100 copies of each frame (measured in
//! `bench/stream`: ingest fell to 0.14× on SQLite). With it a live session only looks at memory;
//! a session behind the window (resuming from far back) reads the log itself, page by page, until
//! it reaches the window.
//!
//! The window holds **every** event with `covered_after < seq <= last`, in order: it is filled by
//! reading the log strictly after its own `last`, and the log never shows a seq before the seqs
//! below it are visible (appends commit in seq order on both backends). So a session that reads
//! from the window never skips an event either. It follows the log only while some session is
//! connected, so a server without stream clients pays nothing for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, watch};

use crate::store::{EventQuery, EventStore};

/// Most frames kept.
const MAX_FRAMES: usize = 10_000;
/// Most frame bytes kept (large events shorten the window rather than grow memory).
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Events read per query.
const PAGE: i64 = 500;
/// How often the log is read without a wake-up (appends by an instance whose notification was
/// lost; a store that was down).
const POLL: Duration = Duration::from_secs(1);

/// One event, ready to send.
#[derive(Clone)]
pub struct Frame {
    pub seq: i64,
    /// The event name, for the sessions' filters.
    pub event: Arc<str>,
    pub text: Utf8Bytes,
}

/// What [`Tail::after`] hands a session.
pub struct Batch {
    /// Frames after the session's position, oldest first.
    pub frames: Vec<Frame>,
    /// The window's last seq: when `frames` is not cut by the limit, everything up to it has been
    /// handed out.
    pub last: i64,
}

struct Window {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// `None` until the tail has read the head; then the window holds every event after this.
    covered_after: Option<i64>,
    last: i64,
}

/// The shared tail of one server.
pub struct Tail {
    window: Mutex<Window>,
    /// The window's last seq; sessions wake when it changes.
    advanced: watch::Sender<i64>,
    /// Woken when a session subscribes (the follower starts following again).
    session_arrived: Notify,
}

impl Tail {
    /// Starts the tail's follower for a server: it reads after every local append
    /// (`log_advanced`, which other instances' appends also bump) while sessions are connected.
    pub fn start(
        store: Arc<dyn EventStore>,
        log_advanced: watch::Receiver<u64>,
        stopping: watch::Receiver<bool>,
    ) -> Arc<Tail> {
        let tail = Arc::new(Tail {
            window: Mutex::new(Window {
                frames: VecDeque::new(),
                bytes: 0,
                covered_after: None,
                last: 0,
            }),
            advanced: watch::channel(0).0,
            session_arrived: Notify::new(),
        });
        crate::metrics::spawn(Arc::clone(&tail).follow(store, log_advanced, stopping));
        tail
    }

    /// A session's wake-up: changes whenever the window grows.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        let receiver = self.advanced.subscribe();
        self.session_arrived.notify_one();
        receiver
    }

    /// Up to `limit` frames after `scanned`, if the window covers `scanned`; `None` when the
    /// session must read the log itself (it is behind the window, or the window is not filled).
    pub fn after(&self, scanned: i64, limit: usize) -> Option<Batch> {
        let window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let covered_after = window.covered_after?;
        if scanned < covered_after {
            return None;
        }
        let start = window.frames.partition_point(|f| f.seq <= scanned);
        Some(Batch {
            frames: window.frames.range(start..).take(limit).cloned().collect(),
            last: window.last,
        })
    }

    async fn follow(
        self: Arc<Tail>,
        store: Arc<dyn EventStore>,
        mut log_advanced: watch::Receiver<u64>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            if self.advanced.receiver_count() == 0 {
                // Nobody to serve: drop the window and wait for a session.
                self.reset();
                tokio::select! {
                    _ = self.session_arrived.notified() => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
            match self.read(store.as_ref()).await {
                Ok(()) => failing = false,
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "the stream tail cannot read the event log; retrying (sessions read it themselves meanwhile)");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => return,
                changed = log_advanced.changed() => if changed.is_err() { return },
                _ = poll.tick() => {}
                // A session arrived while the window was being read: nothing to do but read.
                _ = self.session_arrived.notified() => {}
            }
        }
    }

    fn reset(&self) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        window.frames.clear();
        window.bytes = 0;
        window.covered_after = None;
    }

    /// Reads everything after the window's last seq (the head first, if the window is new).
    async fn read(&self, store: &dyn EventStore) -> Result<(), crate::store::StoreError> {
        let known = {
            let window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            window.covered_after.map(|_| window.last)
        };
        let mut last = match known {
            Some(last) => last,
            None => {
                // A new window starts at the head: sessions behind it read the log.
                let head = store.head_seq().await?;
                let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
                window.covered_after = Some(head);
                window.last = head;
                drop(window);
                self.advanced.send_replace(head);
                head
            }
        };
        loop {
            let page = store
                .list_events(&EventQuery {
                    after_seq: Some(last),
                    limit: PAGE,
                    ..EventQuery::default()
                })
                .await?;
            let full = page.len() as i64 >= PAGE;
            if page.is_empty() {
                return Ok(());
            }
            let frames: Vec<Frame> = page
                .iter()
                .map(|e| Frame {
                    seq: e.seq,
                    event: Arc::from(e.event.as_str()),
                    text: Utf8Bytes::from(super::frames::event_text(e)),
                })
                .collect();
            {
                let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
                if window.covered_after.is_none() {
                    // Reset meanwhile (every session left): stop.
                    return Ok(());
                }
                for frame in frames {
                    window.bytes += frame.text.len();
                    window.last = frame.seq;
                    window.frames.push_back(frame);
                }
                while window.frames.len() > MAX_FRAMES || window.bytes > MAX_BYTES {
                    let Some(old) = window.frames.pop_front() else {
                        break;
                    };
                    window.bytes -= old.text.len();
                    window.covered_after = Some(old.seq);
                }
                last = window.last;
            }
            self.advanced.send_replace(last);
            if !full {
                return Ok(());
            }
        }
    }
}
