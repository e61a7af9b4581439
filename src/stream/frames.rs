//! The JSON text frames a stream client receives, and the close reasons it may be given.
//!
//! Every frame is one JSON object with a `type`: `hello` first (where the stream starts), then
//! one `event` per log entry. Close reasons that invite a resume always end with
//! `resume with after_seq=N`, so a client can parse the number back out of any of them.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::core::clock::rfc3339;
use crate::core::pattern::EventPattern;
use crate::store::StoredEvent;

/// The first frame: the stream delivers the matching events with `seq > after_seq`.
#[derive(Debug, Serialize)]
pub struct Hello<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The stream continues after this seq (the client's `after_seq`, or the head at connect).
    pub after_seq: i64,
    /// The log head when the client connected: events up to it are backlog, later ones live.
    pub head: i64,
    /// The event patterns the client asked for (empty: every event).
    pub events: Vec<&'a str>,
}

impl Hello<'_> {
    /// The hello frame for a stream starting after `after_seq`.
    pub fn text(after_seq: i64, head: i64, patterns: &[EventPattern]) -> String {
        let hello = Hello {
            kind: "hello",
            after_seq,
            head,
            events: patterns.iter().map(EventPattern::as_str).collect(),
        };
        to_text(&hello)
    }
}

/// One log entry as a frame.
#[derive(Debug, Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: i64,
    id: &'a str,
    event: &'a str,
    /// When Zoom says it happened (RFC 3339, as everywhere in the API).
    event_time: Option<String>,
    source: &'a str,
    received_at: String,
    /// Carried so a client can show or filter by entity without fetching the event.
    object_id: Option<&'a str>,
    object_uuid: Option<&'a str>,
    body: Body<'a>,
}

/// The stored body: embedded as JSON when it is JSON (always, for webhooks), else as a string,
/// so a frame is valid JSON whatever the log holds.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Json(&'a RawValue),
    Text(Cow<'a, str>),
}

/// The frame of one stored event. The body is embedded verbatim (a `RawValue` is validated, not
/// re-serialised), so a client sees exactly the JSON Zoom sent.
pub fn event_text(event: &StoredEvent) -> String {
    let body = match serde_json::from_slice::<&RawValue>(&event.body) {
        Ok(raw) => Body::Json(raw),
        Err(_) => Body::Text(String::from_utf8_lossy(&event.body)),
    };
    let frame = EventFrame {
        kind: "event",
        seq: event.seq,
        id: &event.id,
        event: &event.event,
        event_time: event.event_ts.and_then(crate::core::clock::rfc3339_checked),
        source: &event.source,
        received_at: rfc3339(event.received_at),
        object_id: event.object_id.as_deref(),
        object_uuid: event.object_uuid.as_deref(),
        body,
    };
    to_text(&frame)
}

/// Serialises a frame. Our frame types hold only strings, numbers and already-valid JSON, so
/// this cannot fail; should it ever, the client gets an error frame rather than a panic.
fn to_text<T: Serialize>(frame: &T) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not serialise a stream frame");
        r#"{"type":"error","detail":"frame could not be serialised"}"#.to_owned()
    })
}

/// The close reason of a session that ends for `why`, naming where to resume.
pub fn resume_reason(why: &str, last_sent: i64) -> String {
    format!("{why}; resume with after_seq={last_sent}")
}

/// The `after_seq` a close reason made by [`resume_reason`] names.
pub fn parse_resume_seq(reason: &str) -> Option<i64> {
    reason.rsplit_once("after_seq=")?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: &[u8]) -> StoredEvent {
        StoredEvent {
            seq: 7,
            id: "evt_1".into(),
            source: "zoom".into(),
            event: "meeting.started".into(),
            event_ts: Some(1),
            account_id: None,
            object_id: Some("123".into()),
            object_uuid: None,
            received_at: 1_648_038_806_658,
            request_id: None,
            semantic_key: String::new(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn embeds_a_json_body_verbatim_and_anything_else_as_a_string() {
        let frame: serde_json::Value =
            serde_json::from_str(&event_text(&stored(br#"{"event": "meeting.started"}"#))).unwrap();
        assert_eq!(frame["body"]["event"], "meeting.started");
        assert_eq!(frame["received_at"], "2022-03-23T12:33:26.658Z");
        let frame: serde_json::Value =
            serde_json::from_str(&event_text(&stored(b"not json"))).unwrap();
        assert_eq!(frame["body"], "not json");
    }

    #[test]
    fn a_resume_reason_names_the_seq_to_resume_after() {
        let reason = resume_reason("slow consumer", 1234);
        assert_eq!(reason, "slow consumer; resume with after_seq=1234");
        assert_eq!(parse_resume_seq(&reason), Some(1234));
    }
}
