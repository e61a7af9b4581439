//! `zoomhook events tail`: follows the log over the WebSocket stream (`/api/v1/stream`) and
//! resumes by itself after a disconnect, from the last seq it received (see `stream_client`).

use async_trait::async_trait;
use serde_json::Value;

use super::ClientArgs;
use super::events::Filter;
use super::stream_client::{FrameHandler, follow};
use crate::core::clock::parse_time;

/// Prints the events that pass the filters the stream does not apply itself.
struct Printer {
    filter: Filter,
    /// Each frame as the JSON it came as, one per line, instead of a table row.
    json: bool,
}

#[async_trait]
impl FrameHandler for Printer {
    async fn started(&mut self, after_seq: i64) {
        eprintln!("following events after seq {after_seq} (Ctrl-C to stop)");
    }

    async fn event(&mut self, frame: &Value) -> anyhow::Result<()> {
        // The cursor follows what was received, printed or not: resuming skips nothing the
        // filter would print.
        if let Some(seq) = frame["seq"].as_i64()
            && matches_locally(frame, &self.filter)
        {
            if self.json {
                println!("{frame}");
            } else {
                print_line(frame, seq);
            }
        }
        Ok(())
    }
}

/// Follows the stream until Ctrl-C, reconnecting with backoff.
pub async fn tail(
    filter: Filter,
    after_seq: Option<i64>,
    json: bool,
    client: ClientArgs,
) -> anyhow::Result<()> {
    let events = filter.event.clone();
    let mut cursor = after_seq;
    follow(
        &client,
        events.as_deref(),
        &mut cursor,
        &mut Printer { filter, json },
    )
    .await
}

/// The filters the stream does not apply itself (it filters by event name only).
fn matches_locally(frame: &Value, filter: &Filter) -> bool {
    let text = |key: &str| frame[key].as_str();
    let received = text("received_at").and_then(parse_time);
    let since_ok = match (filter.since, received) {
        (Some(since), Some(at)) => at >= since.0,
        _ => true,
    };
    let until_ok = match (filter.until, received) {
        (Some(until), Some(at)) => at < until.0,
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

/// One line per event: seq, when it was received (local time), name, object and id.
fn print_line(frame: &Value, seq: i64) {
    let text = |key: &str| frame[key].as_str().unwrap_or("-").to_owned();
    let object = frame["object_id"]
        .as_str()
        .or(frame["object_uuid"].as_str())
        .unwrap_or("-");
    println!(
        "{:>8}  {}  {:<28}  {:<24}  {}",
        seq,
        super::show_time::local(&text("received_at")),
        text("event"),
        object,
        text("id")
    );
}
