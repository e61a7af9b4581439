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
/// identity and join/leave time, registrant, `time_stamp` of `*.updated` — plus the canonical
/// (key-sorted) `payload` without what Zoom regenerates when it re-sends an event: every `*_token`
/// field, the recording files' `download_url` and `play_url`, and the query string of any other
/// `*_url`. Never a hash of the whole body: Zoom re-sends `recording.completed` with a fresh
/// `download_token` (top level, outside `payload`) and fresh tokens in the download links, and
/// those copies must count as one event; but two chat messages in the same millisecond, two call
/// logs of one user, or two updates of one meeting without `event_ts` are two events, because
/// their content differs. Zoom's own retries are also caught by their `x-zm-request-id`.
///
/// Each part is hashed with its length and whether it is present, so no value can pose as two
/// (`"a\u001fb","c"` vs `"a","b\u001fc"`), nor an absent one as `"\u0000"`.
pub fn semantic_key(event: &str, event_ts: Option<i64>, payload: Option<&Value>) -> String {
    let object = payload.and_then(|p| p.get("object"));
    let field = |v: Option<&Value>, name: &str| v.and_then(|v| v.get(name)).and_then(normalised_id);
    let participant = object.and_then(|o| o.get("participant"));
    let registrant = object.and_then(|o| o.get("registrant"));
    let content = payload.map(|p| without_regenerated_fields(p).to_string());
    let parts: [Option<String>; 13] = [
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
        content,
    ];
    let mut hasher = Sha256::new();
    for part in &parts {
        match part {
            Some(text) => {
                hasher.update([1u8]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            None => hasher.update([0u8]),
        }
    }
    format!(
        "sem:{}:{}",
        time_prefix(event_ts),
        hex::encode(hasher.finalize())
    )
}

/// `value` without what Zoom regenerates when it re-sends an event (see [`semantic_key`]), and
/// with numbers in the same form as strings.
fn without_regenerated_fields(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    !(k.ends_with("_token")
                        || k.as_str() == "download_url"
                        || k.as_str() == "play_url")
                })
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(url) if k.ends_with("_url") => {
                            Value::String(url.split('?').next().unwrap_or_default().to_owned())
                        }
                        other => without_regenerated_fields(other),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_regenerated_fields).collect()),
        // Zoom sends some ids as numbers in one event and strings in another: one form.
        Value::Number(n) => Value::String(n.to_string()),
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
    fn events_that_differ_in_content_are_two_events_even_in_the_same_millisecond() {
        let key = |body: &str| Envelope::parse(body.as_bytes()).unwrap().semantic_key;
        let chat = |id: &str| {
            format!(
                r#"{{"event":"meeting.chat_message_sent","event_ts":5,"payload":{{"object":{{"id":1,"chat_message":{{"id":"{id}"}}}}}}}}"#
            )
        };
        assert_ne!(key(&chat("m1")), key(&chat("m2")));
        let joined = |url: &str| {
            format!(
                r#"{{"event":"meeting.updated","payload":{{"object":{{"id":1,"join_url":"{url}"}}}}}}"#
            )
        };
        assert_ne!(key(&joined("https://z/j/1")), key(&joined("https://z/j/2")));
        assert_eq!(
            key(&joined("https://z/j/1?pwd=a")),
            key(&joined("https://z/j/1?pwd=b"))
        );
        // Lengths keep parts apart: a separator inside a value cannot shift it into the next.
        let pair = |a: &str, b: &str| {
            format!(
                r#"{{"event":"x.y","event_ts":1,"payload":{{"account_id":"{a}","object":{{"id":"{b}"}}}}}}"#
            )
        };
        assert_ne!(key(&pair(r"a\u001fb", "c")), key(&pair("a", r"b\u001fc")));
        let nul = r#"{"event":"x.y","event_ts":1,"payload":{"object":{"id":"\u0000"}}}"#;
        let absent = r#"{"event":"x.y","event_ts":1,"payload":{"object":{}}}"#;
        assert_ne!(key(nul), key(absent));
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
