//! `zoomhook events tail`: follows the log over the WebSocket stream (`/api/v1/stream`) and
//! resumes by itself after a disconnect, from the last seq it received — so a restarted server,
//! a dropped connection or a slow-consumer close neither skips nor repeats a line.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ClientArgs;
use super::events::Filter;
use crate::core::clock::parse_time;

/// First pause before reconnecting; doubled after each failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one connection ended.
enum Ended {
    /// Ctrl-C: stop for good.
    Interrupted,
    /// The stream ended or broke (`reason` for the user); reconnect.
    Lost { reason: String, was_connected: bool },
}

/// Follows the stream until Ctrl-C, reconnecting with backoff.
pub async fn tail(
    filter: Filter,
    after_seq: Option<i64>,
    client: ClientArgs,
) -> anyhow::Result<()> {
    let Some(token) = client.token.clone() else {
        bail!(
            "no admin token: pass --token or set ZOOMHOOK_TOKEN (the server prints one at first start; `zoomhook token create` makes more)"
        );
    };
    let base = websocket_base(&client.server)?;
    let mut cursor = after_seq;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match follow(&base, &token, &filter, &mut cursor).await? {
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

/// One connection: prints events until it ends. Errors only for what a retry cannot fix (the
/// server refused the request itself: a bad token, a bad pattern).
async fn follow(
    base: &str,
    token: &str,
    filter: &Filter,
    cursor: &mut Option<i64>,
) -> anyhow::Result<Ended> {
    let mut url = format!("{base}/api/v1/stream?");
    if let Some(events) = &filter.event {
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
            Some(Ok(Message::Text(text))) => on_frame(&text, filter, cursor),
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

/// Handles one frame: announces where the stream starts, prints events and moves the cursor.
fn on_frame(text: &str, filter: &Filter, cursor: &mut Option<i64>) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    match frame["type"].as_str() {
        Some("hello") if cursor.is_none() => {
            let start = frame["after_seq"].as_i64().unwrap_or(0);
            eprintln!("following events after seq {start} (Ctrl-C to stop)");
            *cursor = Some(start);
        }
        Some("event") => {
            let Some(seq) = frame["seq"].as_i64() else {
                return;
            };
            if matches_locally(&frame, filter) {
                print_line(&frame, seq);
            }
            // The cursor follows what was received, printed or not: resuming skips nothing the
            // filter would print.
            *cursor = Some(seq);
        }
        _ => {}
    }
}

/// The filters the stream does not apply itself (it filters by event name only).
fn matches_locally(frame: &Value, filter: &Filter) -> bool {
    let text = |key: &str| frame[key].as_str();
    let received = text("received_at").and_then(parse_time);
    let since_ok = match (filter.since.as_deref().and_then(parse_time), received) {
        (Some(since), Some(at)) => at >= since,
        _ => true,
    };
    let until_ok = match (filter.until.as_deref().and_then(parse_time), received) {
        (Some(until), Some(at)) => at < until,
        _ => true,
    };
    let entity_ok = filter.entity.as_deref().is_none_or(|entity| {
        text("object_id") == Some(entity) || text("object_uuid") == Some(entity)
    });
    let source_ok = filter
        .source
        .as_deref()
        .is_none_or(|source| text("source") == Some(source));
    since_ok && until_ok && entity_ok && source_ok
}

/// One line per event, as `events tail` always printed it.
fn print_line(frame: &Value, seq: i64) {
    let text = |key: &str| frame[key].as_str().unwrap_or("-").to_owned();
    let object = frame["object_id"]
        .as_str()
        .or(frame["object_uuid"].as_str())
        .unwrap_or("-");
    println!(
        "{:>8}  {}  {:<28}  {:<24}  {}",
        seq,
        text("received_at"),
        text("event"),
        object,
        text("id")
    );
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
