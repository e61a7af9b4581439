//! A client of the WebSocket stream (`/api/v1/stream`) for the CLI: connects, hands each frame
//! to a handler, and after any disconnect reconnects with backoff from the last seq the handler
//! accepted — so a restarted server, a dropped connection or a slow-consumer close neither skips
//! nor repeats an event. Used by `events tail` and `listen`.

use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ClientArgs;

/// First pause before reconnecting; doubled after each failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a command does with the frames of the stream.
#[async_trait]
pub trait FrameHandler: Send {
    /// The stream starts after `after_seq` (the hello frame of the first connection).
    async fn started(&mut self, after_seq: i64);
    /// One event frame. The cursor moves past it once this returns.
    async fn event(&mut self, frame: &Value) -> anyhow::Result<()>;
}

/// How one connection ended.
enum Ended {
    /// Ctrl-C: stop for good.
    Interrupted,
    /// The stream ended or broke (`reason` for the user); reconnect.
    Lost { reason: String, was_connected: bool },
}

/// Follows the stream of `client`'s server (events matching `events`, after `cursor`) until
/// Ctrl-C, reconnecting with backoff. `cursor` is the last seq handled.
pub async fn follow(
    client: &ClientArgs,
    events: Option<&str>,
    cursor: &mut Option<i64>,
    handler: &mut dyn FrameHandler,
) -> anyhow::Result<()> {
    let Some(token) = client.token.clone() else {
        bail!(
            "no admin token: pass --token or set ZOOMHOOK_TOKEN (the server prints one at first start; `zoomhook token create` makes more)"
        );
    };
    let base = websocket_base(&client.server)?;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match connect_once(&base, &token, events, cursor, handler).await? {
            Ended::Interrupted => return Ok(()),
            Ended::Lost {
                reason,
                was_connected,
            } => {
                if was_connected {
                    backoff = FIRST_BACKOFF;
                }
                eprintln!("stream interrupted ({reason}); reconnecting in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// `http://host` → `ws://host`, `https://host` → `wss://host`.
fn websocket_base(server: &str) -> anyhow::Result<String> {
    let server = server.trim_end_matches('/');
    if let Some(rest) = server.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else if let Some(rest) = server.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else {
        bail!("--server / ZOOMHOOK_URL must start with http:// or https://, got {server:?}")
    }
}

/// One connection: hands frames to `handler` until it ends. Errors only for what a retry cannot
/// fix (the server refused the request itself: a bad token, a bad pattern; or the handler
/// failed).
async fn connect_once(
    base: &str,
    token: &str,
    events: Option<&str>,
    cursor: &mut Option<i64>,
    handler: &mut dyn FrameHandler,
) -> anyhow::Result<Ended> {
    let mut url = format!("{base}/api/v1/stream?");
    if let Some(events) = events {
        url.push_str(&format!("events={}&", encode(events)));
    }
    if let Some(seq) = cursor {
        url.push_str(&format!("after_seq={seq}"));
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .context("building the stream request")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?,
    );
    let mut ws = match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(response)) if response.status().is_client_error() => {
            let detail = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_default();
            bail!(
                "{base}/api/v1/stream answered {}: {detail}",
                response.status()
            );
        }
        Err(e) => return Ok(lost(format!("cannot connect to {base}: {e}"), false)),
    };
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = tokio::signal::ctrl_c() => return Ok(Ended::Interrupted),
        };
        match message {
            Some(Ok(Message::Text(text))) => on_frame(&text, cursor, handler).await?,
            Some(Ok(Message::Close(close))) => {
                let reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
                return Ok(lost(format!("closed by the server: {reason}"), true));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Ok(lost(e.to_string(), true)),
            None => return Ok(lost("connection ended".into(), true)),
        }
    }
}

fn lost(reason: String, was_connected: bool) -> Ended {
    Ended::Lost {
        reason,
        was_connected,
    }
}

/// Handles one frame: announces where the stream starts, hands events over, moves the cursor.
async fn on_frame(
    text: &str,
    cursor: &mut Option<i64>,
    handler: &mut dyn FrameHandler,
) -> anyhow::Result<()> {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return Ok(());
    };
    match frame["type"].as_str() {
        Some("hello") if cursor.is_none() => {
            let start = frame["after_seq"].as_i64().unwrap_or(0);
            handler.started(start).await;
            *cursor = Some(start);
        }
        Some("event") => {
            let Some(seq) = frame["seq"].as_i64() else {
                return Ok(());
            };
            handler.event(&frame).await?;
            *cursor = Some(seq);
        }
        _ => {}
    }
    Ok(())
}

/// Percent-encodes a query value (patterns hold only `[A-Za-z0-9._*:-]` and commas, but a
/// user's typo should reach the server intact and be refused there with a clear message).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'*' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
