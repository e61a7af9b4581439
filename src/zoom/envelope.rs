//! The Zoom event envelope: the few fields zoomhook needs, read leniently from the raw body.
//!
//! Zoom's payloads are inconsistent (PROTOCOL.md §1.4): key order varies, `object.id` is a number on
//! some events and a string on others, `null` and `""` both mean "absent". Only `event`, `event_ts`,
//! `payload.account_id` and the identifying parts of `payload.object` are read; everything else stays
//! in the raw bytes, which are what zoomhook stores and forwards.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The event name of Zoom's URL-validation challenge.
pub const URL_VALIDATION_EVENT: &str = "endpoint.url_validation";

/// Why a body is not an acceptable Zoom event (answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("body has no string field \"event\"")]
    MissingEvent,
}

/// What zoomhook extracts from an event body to index and deduplicate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `event`, e.g. `meeting.started`.
    pub event: String,
    /// `event_ts`, epoch milliseconds when the event occurred (absent on some events).
    pub event_ts: Option<i64>,
    /// `payload.account_id`.
    pub account_id: Option<String>,
    /// `payload.object.id`, normalised to a string (Zoom sends numbers or strings).
    pub object_id: Option<String>,
    /// `payload.object.uuid`.
    pub object_uuid: Option<String>,
    /// Dedupe key built from what identifies the event; see [`semantic_key`].
    pub semantic_key: String,
    /// `payload.plainToken` of a URL-validation challenge.
    pub plain_token: Option<String>,
}

impl Envelope {
    /// Parses the envelope out of a raw body. The body itself is never modified.
    pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let root = value.as_object().ok_or(EnvelopeError::NotObject)?;
        let event = root
            .get("event")
            .and_then(Value::as_str)
            .filter(|e| !e.trim().is_empty())
            .ok_or(EnvelopeError::MissingEvent)?
            .to_owned();
        let event_ts = root.get("event_ts").and_then(as_millis);
        let payload = root.get("payload");
        let object = payload.and_then(|p| p.get("object"));
        let account_id = payload
            .and_then(|p| p.get("account_id"))
            .and_then(normalised_id);
        let object_id = object.and_then(|o| o.get("id")).and_then(normalised_id);
        let object_uuid = object.and_then(|o| o.get("uuid")).and_then(normalised_id);
        let plain_token = payload
            .and_then(|p| p.get("plainToken"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let semantic_key = semantic_key(&event, event_ts, payload);
        Ok(Envelope {
            event,
            event_ts,
            account_id,
            object_id,
            object_uuid,
            semantic_key,
            plain_token,
        })
    }
}

/// Normalises an identifier that Zoom sends as a number or a string; `null`/`""` mean absent.
pub fn normalised_id(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_millis(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The `event_ts` part that leads the semantic dedupe key, zero-padded so keys sort by time.
///
/// Both copies of one event carry the same `event_ts`, so the prefix never splits a duplicate from
/// its original; and because new events have recent timestamps, new keys land together at the end
/// of the key index instead of on a random page each, which keeps the write per commit small.
pub fn time_prefix(event_ts: Option<i64>) -> String {
    match event_ts {
        Some(ts) => format!("{ts:015}"),
        None => "-".to_owned(),
    }
}

/// The semantic dedupe key: two deliveries with the same key are the same Zoom event.
///
/// Built from what *identifies* an event — name, `event_ts`, account, object id/uuid, participant
/// identity and join/leave time, registrant, `time_stamp` of `*.updated` — and never from a hash of
/// the whole body: Zoom re-sends `recording.completed` with a fresh `download_token` and fresh
/// tokens inside the download URLs, and those copies must still count as one event.
///
/// Without `event_ts`, nothing tells two events about the same object apart but their content
/// (two `meeting.updated` of one meeting, say), so the canonical (key-sorted) `payload` is part of
/// the key, without the fields Zoom regenerates on a re-send: every `*_token` and `*_url` (the
/// top-level `download_token` is outside `payload` anyway). So such events are merged only when
/// their identifying content is the same; Zoom's own retries are still caught by their
/// `x-zm-request-id`.
pub fn semantic_key(event: &str, event_ts: Option<i64>, payload: Option<&Value>) -> String {
    let object = payload.and_then(|p| p.get("object"));
    let field = |v: Option<&Value>, name: &str| v.and_then(|v| v.get(name)).and_then(normalised_id);
    let participant = object.and_then(|o| o.get("participant"));
    let registrant = object.and_then(|o| o.get("registrant"));
    let parts: [Option<String>; 12] = [
        Some(event.to_owned()),
        event_ts.map(|ts| ts.to_string()),
        field(payload, "account_id"),
        field(object, "id"),
        field(object, "uuid"),
        field(participant, "participant_uuid"),
        field(participant, "user_id").or_else(|| field(participant, "id")),
        field(participant, "email").or_else(|| field(participant, "user_name")),
        field(participant, "join_time"),
        field(participant, "leave_time"),
        field(registrant, "id"),
        field(payload, "time_stamp"),
    ];
    let mut hasher = Sha256::new();
    for part in &parts {
        // A separator that cannot occur in JSON strings keeps ("ab","c") distinct from ("a","bc").
        hasher.update(part.as_deref().unwrap_or("\u{0}").as_bytes());
        hasher.update(b"\x1f");
    }
    if event_ts.is_none()
        && let Some(payload) = payload
    {
        // serde_json's default map is ordered by key, so this serialisation is canonical.
        hasher.update(without_regenerated_fields(payload).to_string().as_bytes());
    }
    format!(
        "sem:{}:{}",
        time_prefix(event_ts),
        hex::encode(hasher.finalize())
    )
}

/// `value` without the fields Zoom regenerates when it re-sends an event (`*_token`, `*_url`).
fn without_regenerated_fields(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !(k.ends_with("_token") || k.ends_with("_url")))
                .map(|(k, v)| (k.clone(), without_regenerated_fields(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_regenerated_fields).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_string_ids_normalise_to_the_same_string() {
        let a = Envelope::parse(
            br#"{"event":"meeting.created","event_ts":1,"payload":{"object":{"id":86431910364}}}"#,
        );
        let b = Envelope::parse(
            br#"{"payload":{"object":{"id":"86431910364"}},"event_ts":1,"event":"meeting.created"}"#,
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.object_id.as_deref(), Some("86431910364"));
        assert_eq!(a.object_id, b.object_id);
        assert_eq!(a.semantic_key, b.semantic_key);
    }

    #[test]
    fn recording_resends_with_new_download_tokens_share_a_key() {
        let first = br#"{"event":"recording.completed","event_ts":1,"download_token":"aaa","payload":{"object":{"id":1,"uuid":"u","recording_files":[{"download_url":"https://x/d?t=aaa"}]}}}"#;
        let second = br#"{"event":"recording.completed","event_ts":1,"download_token":"bbb","payload":{"object":{"id":1,"uuid":"u","recording_files":[{"download_url":"https://x/d?t=bbb"}]}}}"#;
        assert_eq!(
            Envelope::parse(first).unwrap().semantic_key,
            Envelope::parse(second).unwrap().semantic_key
        );
    }

    #[test]
    fn different_event_ts_or_participant_times_give_different_keys() {
        let key = |body: &str| Envelope::parse(body.as_bytes()).unwrap().semantic_key;
        let base = r#"{"event":"meeting.participant_joined","event_ts":1,"payload":{"object":{"id":"9","participant":{"user_id":"1","join_time":"T1"}}}}"#;
        assert_ne!(
            key(base),
            key(&base.replace("\"event_ts\":1", "\"event_ts\":2"))
        );
        assert_ne!(key(base), key(&base.replace("T1", "T2")));
        assert_ne!(
            key(base),
            key(&base.replace("\"user_id\":\"1\"", "\"user_id\":\"2\""))
        );
    }

    #[test]
    fn without_event_ts_only_the_same_content_is_the_same_event() {
        let key = |body: &str| Envelope::parse(body.as_bytes()).unwrap().semantic_key;
        let a = r#"{"event":"meeting.updated","payload":{"object":{"id":1,"topic":"A"}}}"#;
        let b = r#"{"event":"meeting.updated","payload":{"object":{"id":1,"topic":"B"}}}"#;
        assert_ne!(
            key(a),
            key(b),
            "two different updates of one meeting are two events"
        );
        let resend = r#"{"event":"recording.completed","download_token":"x","payload":{"object":{"id":1,"recording_files":[{"id":"f","download_url":"https://z/a?t=1"}]}}}"#;
        let again = r#"{"event":"recording.completed","download_token":"y","payload":{"object":{"id":1,"recording_files":[{"id":"f","download_url":"https://z/a?t=2"}]}}}"#;
        assert_eq!(
            key(resend),
            key(again),
            "a re-send with fresh tokens is the same event"
        );
    }

    #[test]
    fn rejects_non_json_non_object_and_missing_event() {
        assert!(matches!(
            Envelope::parse(b"nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(Envelope::parse(b"[1]"), Err(EnvelopeError::NotObject));
        assert_eq!(
            Envelope::parse(b"{\"payload\":{}}"),
            Err(EnvelopeError::MissingEvent)
        );
        assert_eq!(
            Envelope::parse(b"{\"event\":\"\"}"),
            Err(EnvelopeError::MissingEvent)
        );
        assert_eq!(
            Envelope::parse(b"{\"event\":5}"),
            Err(EnvelopeError::MissingEvent)
        );
    }
}
