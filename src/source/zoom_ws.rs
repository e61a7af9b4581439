//! One Zoom WebSocket event subscription, consumed as a source.
//!
//! The loop: get an access token → connect to `websocket_url?subscriptionId=…&access_token=…` →
//! send `{"module":"heartbeat"}` every `heartbeat_interval` → append each `message` frame's event
//! (a JSON *string* inside `content`) through the same group commit as webhooks → when the
//! connection ends, reconnect with jittered exponential backoff.
//!
//! Zoom keeps nothing for a disconnected client, so every interval without a live connection is a
//! **gap** and is recorded (see `gaps.rs`), with bounds that err on the side of too wide: it
//! starts at the last moment the connection was known alive (the last frame, for one that went
//! silent) and ends when the next connection is up. A gap that spans a restart or a failover is
//! found through the shared source record (`alive_at`), which the connected instance refreshes
//! every few seconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rand::RngExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::board::{Board, SourceState};
use super::gaps;
use super::oauth::TokenCache;
use crate::config::{Secret, ZoomWebSocketConfig};
use crate::core::clock::now_millis;
use crate::store::group_commit::EventAppender;
use crate::store::{AppendOutcome, EventStore, NewEvent, SourceRecord, StoreError};
use crate::zoom::envelope::Envelope;

/// How often the connected instance records that the source is alive (the bound of a gap that
/// spans a crash or a failover).
const ALIVE_EVERY: Duration = Duration::from_secs(5);
/// How long opening a connection (TCP, TLS, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Backoff between attempts: from this…
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// …doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Everything one source's connection loop needs.
pub struct ZoomSource {
    pub name: String,
    pub config: ZoomWebSocketConfig,
    /// This instance's name, recorded as the holder of the connection.
    pub instance: String,
    pub store: Arc<dyn EventStore>,
    pub appender: EventAppender,
    /// Bumped after each append, like the webhook receiver does.
    pub log_advanced: watch::Sender<u64>,
    pub board: Arc<Board>,
    /// Largest event accepted (the same limit as a webhook body).
    pub max_event_bytes: usize,
}

/// How a connection ended.
struct Ended {
    /// Where the blind interval starts (epoch ms).
    blind_from: i64,
    reason: String,
    /// Zoom said the access token is invalid: fetch a new one before reconnecting.
    token_rejected: bool,
    /// The loop was asked to stop (shutdown or lost leadership).
    stopping: bool,
}

/// A blind interval that is still open.
struct Blind {
    from: i64,
    reason: String,
}

impl ZoomSource {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = self.name.clone();
        let mut tokens = match TokenCache::new() {
            Ok(tokens) => tokens,
            Err(error) => {
                tracing::error!(source = %name, %error, "cannot build the HTTP client for Zoom's token endpoint");
                return;
            }
        };
        let mut blind = self.blind_since_last_run().await;
        let mut failures: u32 = 0;
        while !*stop.borrow() {
            self.board
                .update(&name, |s| s.state = SourceState::Connecting);
            let attempt_at = now_millis();
            let outcome = match tokens.token(&self.config).await {
                Ok(token) => {
                    self.board
                        .update(&name, |s| s.tokens_fetched = tokens.fetched);
                    metrics::gauge!("zoomhook_source_tokens_fetched", "source" => name.clone())
                        .set(tokens.fetched as f64);
                    self.connect(&token).await.map(|socket| (socket, token))
                }
                Err(error) => Err(format!("no access token: {error}")),
            };
            let ended = match outcome {
                Ok((socket, token)) => {
                    let connected_at = now_millis();
                    tracing::info!(source = %name, subscription = %self.config.subscription_id, "connected to Zoom's WebSocket");
                    if let Some(open) = blind.take() {
                        gaps::record(&self, open.from, connected_at, &open.reason);
                    }
                    let started = Instant::now();
                    let ended = self.session(socket, &token, connected_at, &mut stop).await;
                    if started.elapsed() >= STABLE_AFTER {
                        failures = 0;
                    }
                    ended
                }
                Err(reason) => Ended {
                    blind_from: attempt_at,
                    reason,
                    token_rejected: false,
                    stopping: false,
                },
            };
            metrics::gauge!("zoomhook_source_connected", "source" => name.clone()).set(0.0);
            self.save_record(None, ended.blind_from).await;
            self.board.update(&name, |s| {
                s.connected_since = None;
                s.state = if ended.stopping {
                    SourceState::Stopped
                } else {
                    SourceState::Backoff
                };
                if !ended.stopping {
                    s.last_error = Some(ended.reason.clone());
                }
            });
            if ended.stopping {
                // The next holder (this instance after a restart, or another) records the gap
                // from the shared record's `alive_at`.
                return;
            }
            tracing::warn!(source = %name, reason = %ended.reason, "Zoom WebSocket disconnected; events Zoom sends meanwhile are lost until the gap ends");
            // The earliest start wins: a failed reconnect does not move the gap's beginning.
            blind.get_or_insert(Blind {
                from: ended.blind_from,
                reason: ended.reason.clone(),
            });
            if ended.token_rejected {
                tokens.invalidate();
                if failures == 0 {
                    // A token that expired early: reconnect at once with a new one.
                    failures = 1;
                    continue;
                }
            }
            failures = failures.saturating_add(1);
            let delay = backoff(failures);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {}
            }
        }
        self.board.update(&name, |s| s.state = SourceState::Stopped);
    }

    /// The interval since the source was last known alive (by this instance in an earlier run, or
    /// by another instance before a failover), if it ever ran.
    async fn blind_since_last_run(&self) -> Option<Blind> {
        match self.store.source_record(&self.name).await {
            Ok(Some(record)) => Some(Blind {
                from: record.alive_at,
                reason: if record.instance == self.instance {
                    "zoomhook was not running".to_owned()
                } else {
                    format!(
                        "the connection moved from instance {} to {}",
                        record.instance, self.instance
                    )
                },
            }),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(source = %self.name, %error, "cannot read the source's last state; a gap before this start may go unrecorded");
                None
            }
        }
    }

    async fn save_record(&self, connected_since: Option<i64>, alive_at: i64) {
        let record = SourceRecord {
            name: self.name.clone(),
            instance: self.instance.clone(),
            connected_since,
            alive_at,
        };
        if let Err(error) = self.store.save_source_record(&record).await {
            tracing::warn!(source = %self.name, %error, "cannot record the source's state");
        }
    }

    /// Opens the connection. The URL carries the token: no error may quote it.
    async fn connect(&self, token: &Secret) -> Result<Socket, String> {
        let url = reqwest::Url::parse_with_params(
            &self.config.websocket_url,
            &[
                ("subscriptionId", self.config.subscription_id.as_str()),
                ("access_token", token.expose()),
            ],
        )
        .map_err(|e| format!("invalid websocket_url: {e}"))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_event_bytes + 4096))
            .max_frame_size(Some(self.max_event_bytes + 4096));
        let connecting =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(error)) => Err(scrub(&connect_error(&error), token)),
            Err(_) => Err(format!(
                "no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    /// One connection, from the upgrade to its end.
    async fn session(
        &self,
        socket: Socket,
        token: &Secret,
        connected_at: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let name = &self.name;
        metrics::gauge!("zoomhook_source_connected", "source" => name.clone()).set(1.0);
        self.save_record(Some(connected_at), connected_at).await;
        self.board.update(name, |s| {
            s.state = SourceState::Connected;
            s.connected_since = Some(connected_at);
            s.last_frame_at = None;
        });
        let (mut sink, mut frames) = socket.split();
        let every = self.config.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut alive = tokio::time::interval_at(Instant::now() + ALIVE_EVERY, ALIVE_EVERY);
        alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The upgrade itself counts as a sign of life.
        let mut last_frame = Instant::now();
        let mut last_frame_ms = connected_at;
        let ended = |blind_from: i64, reason: String| Ended {
            blind_from,
            reason,
            token_rejected: false,
            stopping: false,
        };
        loop {
            let silent_at = last_frame + self.config.silence_timeout;
            tokio::select! {
                frame = frames.next() => {
                    let now = now_millis();
                    match frame {
                        Some(Ok(message)) => {
                            last_frame = Instant::now();
                            last_frame_ms = now;
                            self.board.update(name, |s| s.last_frame_at = Some(now));
                            match message {
                                Message::Text(text) => match self.on_text(text.as_bytes(), &mut sink, stop).await {
                                    Verdict::Continue => {}
                                    Verdict::TokenRejected(reason) => {
                                        return Ended { token_rejected: true, ..ended(now, reason) };
                                    }
                                    Verdict::Stop => {
                                        return Ended { stopping: true, ..ended(now, "stopped".into()) };
                                    }
                                },
                                Message::Close(frame) => {
                                    let reason = match frame {
                                        Some(f) => format!("Zoom closed the connection ({} {})", u16::from(f.code), scrub(f.reason.as_str(), token)),
                                        None => "Zoom closed the connection".to_owned(),
                                    };
                                    return ended(now, reason);
                                }
                                Message::Binary(_) => {
                                    metrics::counter!("zoomhook_source_frames_total", "source" => name.clone(), "module" => "binary").increment(1);
                                }
                                _ => {}
                            }
                        }
                        Some(Err(error)) => return ended(now, format!("connection failed: {}", scrub(&error.to_string(), token))),
                        None => return ended(now, "the connection ended without a close frame".into()),
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(error) = send_heartbeat(&mut sink).await {
                        return ended(now_millis(), format!("cannot send the heartbeat: {}", scrub(&error.to_string(), token)));
                    }
                    metrics::counter!("zoomhook_source_heartbeats_total", "source" => name.clone()).increment(1);
                }
                _ = tokio::time::sleep_until(silent_at) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    return ended(last_frame_ms, format!(
                        "no frame from Zoom for {}s (dead connection)",
                        self.config.silence_timeout.as_secs_f64()
                    ));
                }
                _ = alive.tick() => {
                    // Alive up to now if Zoom answered within a heartbeat period; otherwise only
                    // up to the last frame (a connection going quiet may be dying).
                    let quiet = last_frame.elapsed();
                    let alive_at = if quiet <= every + Duration::from_secs(2) { now_millis() } else { last_frame_ms };
                    self.save_record(Some(connected_at), alive_at).await;
                }
                _ = stop.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    return Ended { stopping: true, ..ended(now_millis(), "stopped".into()) };
                }
            }
        }
    }

    /// Handles one text frame.
    async fn on_text(
        &self,
        text: &[u8],
        sink: &mut futures_util::stream::SplitSink<Socket, Message>,
        stop: &mut watch::Receiver<bool>,
    ) -> Verdict {
        let name = &self.name;
        let frame = match Frame::parse(text) {
            Ok(frame) => frame,
            Err(why) => {
                metrics::counter!("zoomhook_source_frames_total", "source" => name.clone(), "module" => "invalid").increment(1);
                tracing::warn!(source = %name, bytes = text.len(), why, "ignored a frame from Zoom that is not JSON");
                return Verdict::Continue;
            }
        };
        metrics::counter!("zoomhook_source_frames_total", "source" => name.clone(), "module" => frame.module_label()).increment(1);
        if let Some(reason) = frame.token_rejection() {
            tracing::warn!(source = %name, "Zoom rejected the access token; fetching a new one");
            return Verdict::TokenRejected(reason);
        }
        if frame.success == Some(false) {
            tracing::warn!(source = %name, module = %frame.module, content = %frame.content_excerpt(), "Zoom reported an error");
            return Verdict::Continue;
        }
        if frame.module != "message" {
            return Verdict::Continue;
        }
        let Some(body) = frame.event_body() else {
            metrics::counter!("zoomhook_source_events_total", "source" => name.clone(), "outcome" => "invalid").increment(1);
            tracing::warn!(source = %name, "a message frame without an event in `content`; ignored");
            return Verdict::Continue;
        };
        if body.len() > self.max_event_bytes {
            metrics::counter!("zoomhook_source_events_total", "source" => name.clone(), "outcome" => "too_large").increment(1);
            tracing::warn!(source = %name, bytes = body.len(), "an event over max_body_bytes; ignored");
            return Verdict::Continue;
        }
        let envelope = match Envelope::parse(&body) {
            Ok(envelope) => envelope,
            Err(error) => {
                metrics::counter!("zoomhook_source_events_total", "source" => name.clone(), "outcome" => "invalid").increment(1);
                tracing::warn!(source = %name, %error, "an event Zoom sent over the WebSocket is not a Zoom event; ignored");
                return Verdict::Continue;
            }
        };
        let event = NewEvent::from_envelope(&envelope, name, body, None, now_millis());
        self.append(event, sink, stop).await
    }

    /// Appends one event, retrying while the store is unavailable (Zoom will not send it again),
    /// and keeping the heartbeat going meanwhile.
    async fn append(
        &self,
        event: NewEvent,
        sink: &mut futures_util::stream::SplitSink<Socket, Message>,
        stop: &mut watch::Receiver<bool>,
    ) -> Verdict {
        let name = &self.name;
        let mut delay = Duration::from_millis(100);
        let mut last_heartbeat = Instant::now();
        loop {
            let outcome = match self.appender.append(event.clone()).await {
                Ok(AppendOutcome::Appended { .. }) => {
                    self.log_advanced.send_modify(|n| *n = n.wrapping_add(1));
                    "accepted"
                }
                Ok(AppendOutcome::Duplicate { .. }) => "duplicate",
                Err(StoreError::Rejected(error)) => {
                    tracing::warn!(source = %name, %error, "the store cannot hold this event; dropped");
                    "unstorable"
                }
                Err(error) => {
                    tracing::warn!(source = %name, %error, retry_in = ?delay, "cannot store an event from the WebSocket; retrying (Zoom does not re-send it)");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return Verdict::Stop,
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    if last_heartbeat.elapsed() >= self.config.heartbeat_interval {
                        last_heartbeat = Instant::now();
                        let _ = send_heartbeat(sink).await;
                    }
                    continue;
                }
            };
            metrics::counter!("zoomhook_source_events_total", "source" => name.clone(), "outcome" => outcome).increment(1);
            if outcome != "unstorable" {
                self.board.update(name, |s| s.events_received += 1);
            }
            return Verdict::Continue;
        }
    }
}

enum Verdict {
    Continue,
    TokenRejected(String),
    Stop,
}

async fn send_heartbeat(
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
) -> Result<(), tungstenite::Error> {
    sink.send(Message::text(r#"{"module":"heartbeat"}"#)).await
}

/// One frame of Zoom's WebSocket protocol.
#[derive(Debug)]
struct Frame {
    module: String,
    success: Option<bool>,
    content: Option<Value>,
}

impl Frame {
    fn parse(text: &[u8]) -> Result<Frame, &'static str> {
        let value: Value = serde_json::from_slice(text).map_err(|_| "not JSON")?;
        let Value::Object(mut map) = value else {
            return Err("not a JSON object");
        };
        Ok(Frame {
            module: map
                .get("module")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            success: map.get("success").and_then(Value::as_bool),
            content: map.remove("content"),
        })
    }

    /// A bounded metric label.
    fn module_label(&self) -> &'static str {
        match self.module.as_str() {
            "message" => "message",
            "heartbeat" => "heartbeat",
            "build_connection" => "build_connection",
            _ => "other",
        }
    }

    /// Zoom's answers to an expired or revoked token: "Invalid Token" (older) and "Token is
    /// invalid" (newer).
    fn token_rejection(&self) -> Option<String> {
        let text = self.content.as_ref()?.as_str()?;
        let lower = text.to_ascii_lowercase();
        (self.success != Some(true) && lower.contains("token") && lower.contains("invalid")).then(
            || {
                format!(
                    "Zoom rejected the access token ({})",
                    self.content_excerpt()
                )
            },
        )
    }

    fn content_excerpt(&self) -> String {
        let text = match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        text.chars().take(200).collect()
    }

    /// The event of a `message` frame: `content` is the event's JSON as a string (as Zoom sends
    /// it, kept byte for byte); an object is accepted too, serialised.
    fn event_body(&self) -> Option<Bytes> {
        match self.content.as_ref()? {
            Value::String(text) if !text.is_empty() => Some(Bytes::from(text.clone())),
            value @ Value::Object(_) => Some(Bytes::from(value.to_string())),
            _ => None,
        }
    }
}

/// A connection error in words, without the request (which holds the token in its URL).
fn connect_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(200)
                        .collect::<String>()
                })
                .unwrap_or_default();
            format!("Zoom refused the WebSocket upgrade: HTTP {status} {body}")
        }
        other => other.to_string(),
    }
}

/// `text` with the token blanked, wherever it appears.
fn scrub(text: &str, token: &Secret) -> String {
    if token.expose().is_empty() {
        return text.to_owned();
    }
    text.replace(token.expose(), "[token]")
}

/// Jittered exponential backoff: between half and all of `BACKOFF_MIN · 2^(failures-1)`, capped.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let factor: f64 = rand::rng().random_range(0.5..=1.0);
    full.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_as_zoom_sends_them() {
        let frame = Frame::parse(
            br#"{"module":"message","content":"{\"event\":\"meeting.started\",\"payload\":{}}"}"#,
        )
        .unwrap();
        assert_eq!(frame.module_label(), "message");
        assert_eq!(
            frame.event_body().unwrap(),
            Bytes::from_static(br#"{"event":"meeting.started","payload":{}}"#)
        );
        let rejected = Frame::parse(
            br#"{"module":"build_connection","success":false,"content":"Invalid Token"}"#,
        )
        .unwrap();
        assert!(rejected.token_rejection().is_some());
        let newer =
            Frame::parse(br#"{"module":"heartbeat","success":false,"content":"Token is invalid"}"#)
                .unwrap();
        assert!(newer.token_rejection().is_some());
        let ack =
            Frame::parse(br#"{"module":"heartbeat","success":true,"content":"live","header":{}}"#)
                .unwrap();
        assert!(ack.token_rejection().is_none());
        assert!(Frame::parse(b"[1]").is_err());
        assert!(Frame::parse(b"\xff").is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for failures in 1..40 {
            let d = backoff(failures);
            assert!(d <= BACKOFF_MAX, "{d:?}");
            assert!(d >= BACKOFF_MIN / 2, "{d:?}");
        }
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn scrub_removes_the_token() {
        let token = Secret::new("abc.def");
        assert_eq!(
            scrub("GET /ws?access_token=abc.def failed", &token),
            "GET /ws?access_token=[token] failed"
        );
    }
}
