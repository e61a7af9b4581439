//! The WebSocket clients of `bench/stream` (the script starts the server, drives ingest with
//! `zoomhook simulate` and reads the server's memory; this binary is only the client side).
//!
//! `stream_bench follow URL TOKEN CLIENTS`: connects CLIENTS stream clients (at most 50
//! handshakes at a time), each following the log from the head. Prints `{"ready": ...}` once
//! every client has its hello frame, then obeys one command per stdin line, answering each with
//! one JSON line on stdout:
//!
//! - `measure`: from now on, record each frame's delay (and forget earlier ones).
//! - `wait SEQ SECONDS`: wait (at most SECONDS) until every client has received SEQ, then report
//!   frames, gaps, duplicates and the delay percentiles since `measure`.
//! - end of input: disconnect and exit.
//!
//! Delay of a frame = the client's wall clock when the frame has been read off the socket, minus
//! the frame's `received_at` (the server's wall clock when the webhook request reached the
//! handler, before the durable commit), and minus its `event_ts` (which `zoomhook simulate`
//! stamps with its own wall clock when it builds the request). One machine, one clock. Both are
//! whole milliseconds, truncated: a delay reads up to 1 ms long (0.5 ms on average).
//!
//! `stream_bench catchup URL TOKEN COUNT`: one client with `after_seq=0`, timed from before the
//! TCP connect until it has received COUNT event frames, all consecutive from seq 1.
//! Prints `{"events": .., "seconds": .., "events_per_sec": ..}`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

/// Concurrent handshakes while connecting many clients.
const CONNECT_CONCURRENCY: usize = 50;

/// What one client saw since the last `measure`.
struct Stats {
    /// The last seq received (`after_seq` of the hello frame before any event).
    last: i64,
    frames: u64,
    gaps: u64,
    duplicates: u64,
    measuring: bool,
    /// Arrival − `received_at`, µs.
    since_received: Histogram<u64>,
    /// Arrival − `event_ts` (simulate's send time), µs.
    since_sent: Histogram<u64>,
    /// Set when the stream ended (close frame or error), with why.
    ended: Option<String>,
}

impl Stats {
    fn new(last: i64) -> Stats {
        Stats {
            last,
            frames: 0,
            gaps: 0,
            duplicates: 0,
            measuring: false,
            since_received: histogram(),
            since_sent: histogram(),
            ended: None,
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The text after `key` in the head of a frame (before the body, where the server writes its own
/// fields in a fixed order), so a client need not parse the whole 1–2 KB frame.
fn after<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let head = &frame[..frame.find(",\"body\":").unwrap_or(frame.len())];
    head.find(key).map(|at| &head[at + key.len()..])
}

fn number(frame: &str, key: &str) -> Option<i64> {
    let rest = after(frame, key)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The RFC 3339 time of a frame's string field `key` (`"received_at":"`), in epoch ms.
fn time_field(frame: &str, key: &str) -> Option<i64> {
    let rest = after(frame, key)?;
    zoomhook::core::clock::parse_time(&rest[..rest.find('"')?])
}

fn received_at_millis(frame: &str) -> Option<i64> {
    time_field(frame, "\"received_at\":\"")
}

fn stream_url(base: &str, token: &str, query: &str) -> String {
    format!("{base}/api/v1/stream?token={token}{query}")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects one client and reads its hello frame; returns the socket and the hello's `after_seq`.
async fn connect(url: &str) -> anyhow::Result<(Ws, i64)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("WebSocket handshake")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let hello: serde_json::Value = serde_json::from_str(&text)?;
                if hello["type"] != "hello" {
                    bail!("expected the hello frame, got {text}");
                }
                let after = hello["after_seq"]
                    .as_i64()
                    .context("hello without after_seq")?;
                return Ok((ws, after));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the hello frame"),
        }
    }
}

/// Reads one client's frames into its stats until the stream ends.
async fn read_frames(mut ws: Ws, stats: Arc<Mutex<Stats>>) {
    let ended = loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => break e.to_string(),
            None => break "connection ended".to_owned(),
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(close) => {
                break format!(
                    "closed: {}",
                    close.map(|c| c.reason.to_string()).unwrap_or_default()
                );
            }
            _ => continue,
        };
        let arrived = now_micros();
        let Some(seq) = number(&text, "\"seq\":") else {
            continue;
        };
        let mut stats = stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.frames += 1;
        if seq <= stats.last {
            stats.duplicates += 1;
            continue;
        }
        if seq != stats.last + 1 {
            stats.gaps += 1;
        }
        stats.last = seq;
        if stats.measuring {
            if let Some(ms) = received_at_millis(&text) {
                let _ = stats
                    .since_received
                    .record((arrived - ms * 1000).max(1) as u64);
            }
            if let Some(ms) = time_field(&text, "\"event_time\":\"") {
                let _ = stats.since_sent.record((arrived - ms * 1000).max(1) as u64);
            }
        }
    };
    stats.lock().unwrap_or_else(|p| p.into_inner()).ended = Some(ended);
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The report of `wait`: every client's stats merged.
fn report(clients: &[Arc<Mutex<Stats>>], target: i64, waited: Duration) -> serde_json::Value {
    let (mut received, mut sent) = (histogram(), histogram());
    let (mut frames, mut gaps, mut duplicates, mut ended) = (0, 0, 0, Vec::new());
    let (mut min_last, mut max_last) = (i64::MAX, i64::MIN);
    for client in clients {
        let stats = client.lock().unwrap_or_else(|p| p.into_inner());
        let _ = received.add(&stats.since_received);
        let _ = sent.add(&stats.since_sent);
        frames += stats.frames;
        gaps += stats.gaps;
        duplicates += stats.duplicates;
        min_last = min_last.min(stats.last);
        max_last = max_last.max(stats.last);
        if let Some(why) = &stats.ended {
            ended.push(why.clone());
        }
    }
    json!({
        "clients": clients.len(), "target": target, "min_last": min_last, "max_last": max_last,
        "all_reached": min_last >= target, "waited_s": waited.as_secs_f64(),
        "frames": frames, "gaps": gaps, "duplicates": duplicates, "ended": ended,
        "delays_measured": received.len(),
        "since_received_p50_ms": ms(&received, 0.5), "since_received_p99_ms": ms(&received, 0.99),
        "since_received_max_ms": ms(&received, 1.0),
        "since_sent_p50_ms": ms(&sent, 0.5), "since_sent_p99_ms": ms(&sent, 0.99),
        "since_sent_max_ms": ms(&sent, 1.0),
    })
}

async fn follow(base: &str, token: &str, count: usize) -> anyhow::Result<()> {
    let url = stream_url(base, token, "");
    let started = Instant::now();
    let connected: Vec<anyhow::Result<(Ws, i64)>> = stream::iter(0..count)
        .map(|_| connect(&url))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut clients = Vec::with_capacity(count);
    for result in connected {
        let (ws, after) = result?;
        let stats = Arc::new(Mutex::new(Stats::new(after)));
        tokio::spawn(read_frames(ws, Arc::clone(&stats)));
        clients.push(stats);
    }
    println!(
        "{}",
        json!({"ready": clients.len(), "connect_s": started.elapsed().as_secs_f64()})
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["measure"] => {
                for client in &clients {
                    let mut stats = client.lock().unwrap_or_else(|p| p.into_inner());
                    stats.measuring = true;
                    stats.frames = 0;
                    stats.since_received.reset();
                    stats.since_sent.reset();
                }
                println!("{}", json!({"measuring": true}));
            }
            ["wait", seq, seconds] => {
                let target: i64 = seq.parse().context("wait SEQ")?;
                let limit = Duration::from_secs_f64(seconds.parse().context("wait SECONDS")?);
                let waiting = Instant::now();
                loop {
                    let behind = clients.iter().any(|c| {
                        let stats = c.lock().unwrap_or_else(|p| p.into_inner());
                        stats.last < target && stats.ended.is_none()
                    });
                    if !behind || waiting.elapsed() >= limit {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                println!("{}", report(&clients, target, waiting.elapsed()));
            }
            _ => bail!("unknown command {line:?}"),
        }
    }
    Ok(())
}

async fn catchup(base: &str, token: &str, count: i64) -> anyhow::Result<()> {
    let url = stream_url(base, token, "&after_seq=0");
    let started = Instant::now();
    let (mut ws, after) = connect(&url).await?;
    if after != 0 {
        bail!("the stream starts after {after}, not 0");
    }
    let mut last = 0;
    let mut first_at = None;
    while last < count {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let Some(seq) = number(&text, "\"seq\":") else {
                    continue;
                };
                if seq != last + 1 {
                    bail!("after seq {last} came seq {seq}: a gap or a duplicate");
                }
                first_at.get_or_insert_with(|| started.elapsed());
                last = seq;
            }
            Some(Ok(Message::Close(close))) => bail!("closed after seq {last}: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("after seq {last}: {e}"),
            None => bail!("the stream ended after seq {last}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "events": count, "seconds": seconds, "events_per_sec": count as f64 / seconds,
            "first_event_ms": first_at.unwrap_or_default().as_secs_f64() * 1000.0,
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: stream_bench follow WS_BASE TOKEN CLIENTS | catchup WS_BASE TOKEN COUNT";
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["follow", base, token, count] => follow(base, token, count.parse()?).await,
        ["catchup", base, token, count] => catchup(base, token, count.parse()?).await,
        _ => bail!("{usage}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_head_of_a_frame() {
        let frame = r#"{"type":"event","seq":42,"id":"evt_1","event":"meeting.started","event_time":"2023-11-14T22:13:20.123Z","source":"zoom","received_at":"2023-11-14T22:13:20.456Z","object_id":null,"object_uuid":null,"body":{"seq":1,"received_at":"x"}}"#;
        assert_eq!(number(frame, "\"seq\":"), Some(42));
        assert_eq!(
            time_field(frame, "\"event_time\":\""),
            Some(1_700_000_000_123)
        );
        assert_eq!(received_at_millis(frame), Some(1_700_000_000_456));
    }
}
