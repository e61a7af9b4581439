//! The Zoom event envelope: the few fields zoomhook needs, read leniently from the raw body.
//!
//! Zoom's payloads are inconsistent (PROTOCOL.md §1.4): key order varies, `object.id` is a number on
//! some events and a string on others, `null` and `""` both mean "absent". Only `event`, `event_ts`,
//! `payload.account_id` and the identifying parts of `payload.object` are read; everything else stays
//! in the raw bytes, which are what zoomhook stores and forwards.

use std::borrow::Cow;

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
    id_text(value).map(Cow::into_owned)
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
    fn field<'a>(v: Option<&'a Value>, name: &str) -> Option<Cow<'a, str>> {
        v.and_then(|v| v.get(name)).and_then(id_text)
    }
    let participant = object.and_then(|o| o.get("participant"));
    let registrant = object.and_then(|o| o.get("registrant"));
    let ts = event_ts.map(|ts| Cow::Owned(ts.to_string()));
    let parts: [Option<Cow<'_, str>>; 12] = [
        Some(Cow::Borrowed(event)),
        ts,
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
        hash_part(&mut hasher, part.as_deref().map(str::as_bytes));
    }
    // The content part: written straight from the parsed body, without building a filtered copy.
    let content = payload.map(|p| {
        let mut out = Vec::with_capacity(1024);
        write_canonical(p, &mut out);
        out
    });
    hash_part(&mut hasher, content.as_deref());
    format!(
        "sem:{}:{}",
        time_prefix(event_ts),
        hex::encode(hasher.finalize())
    )
}

/// One part of the semantic key: whether it is present, its length, its bytes.
fn hash_part(hasher: &mut Sha256, part: Option<&[u8]>) {
    match part {
        Some(bytes) => {
            hasher.update([1u8]);
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        None => hasher.update([0u8]),
    }
}

/// [`normalised_id`], borrowing a string id instead of copying it.
fn id_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Whether Zoom regenerates the field `key` when it re-sends an event (see [`semantic_key`]).
fn regenerated(key: &str) -> bool {
    key.ends_with("_token") || key == "download_url" || key == "play_url"
}

/// Writes `value` as compact JSON without what Zoom regenerates when it re-sends an event (see
/// [`semantic_key`]), with every number as a string (Zoom sends some ids as numbers in one event
/// and strings in another) and the query string cut from any other `*_url`. Objects keep the
/// order of the parsed map (sorted by key). The bytes are what serializing such a filtered copy of
/// the tree would give, so keys stored by earlier versions still match.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let mut first = true;
            for (key, item) in map.iter().filter(|(k, _)| !regenerated(k)) {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_json_str(key, out);
                out.push(b':');
                match item {
                    Value::String(url) if key.ends_with("_url") => {
                        write_json_str(url.split('?').next().unwrap_or_default(), out)
                    }
                    other => write_canonical(other, out),
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // A number's text needs no escaping inside a JSON string.
        Value::Number(n) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "\"{n}\"");
        }
        Value::String(s) => write_json_str(s, out),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn write_json_str(text: &str, out: &mut Vec<u8>) {
    // Serializing a string into a Vec cannot fail: the writer never errors.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The semantic key as earlier versions built it (a filtered copy of the tree, serialized):
    /// keys already stored must still match, so the streaming form must give the same bytes.
    fn reference_key(event: &str, event_ts: Option<i64>, payload: Option<&Value>) -> String {
        fn filtered(value: &Value) -> Value {
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
                                Value::String(url) if k.ends_with("_url") => Value::String(
                                    url.split('?').next().unwrap_or_default().to_owned(),
                                ),
                                other => filtered(other),
                            };
                            (k.clone(), v)
                        })
                        .collect(),
                ),
                Value::Array(items) => Value::Array(items.iter().map(filtered).collect()),
                Value::Number(n) => Value::String(n.to_string()),
                other => other.clone(),
            }
        }
        let object = payload.and_then(|p| p.get("object"));
        let field =
            |v: Option<&Value>, name: &str| v.and_then(|v| v.get(name)).and_then(normalised_id);
        let participant = object.and_then(|o| o.get("participant"));
        let registrant = object.and_then(|o| o.get("registrant"));
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
            payload.map(|p| filtered(p).to_string()),
        ];
        let mut hasher = Sha256::new();
        for part in &parts {
            hash_part(&mut hasher, part.as_deref().map(str::as_bytes));
        }
        format!(
            "sem:{}:{}",
            time_prefix(event_ts),
            hex::encode(hasher.finalize())
        )
    }

    fn same_key_as_before(body: &Value) {
        let event = body.get("event").and_then(Value::as_str).unwrap_or("x");
        let ts = body.get("event_ts").and_then(as_millis);
        let payload = body.get("payload");
        assert_eq!(
            semantic_key(event, ts, payload),
            reference_key(event, ts, payload),
            "{body}"
        );
    }

    #[test]
    fn the_streamed_key_equals_the_key_of_earlier_versions_on_every_fixture() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoom");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                same_key_as_before(&body);
                seen += 1;
            }
        }
        assert!(
            seen >= 15,
            "only {seen} fixtures found in {}",
            dir.display()
        );
    }

    fn hostile_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("download_token".to_owned()),
            Just("download_url".to_owned()),
            Just("play_url".to_owned()),
            Just("share_url".to_owned()),
            Just("id".to_owned()),
            Just("uuid".to_owned()),
            Just("participant".to_owned()),
            ".{0,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "(?s).{0,24}".prop_map(Value::String),
            "https://x\\.zoom\\.us/[a-z\u{0}\u{7f}\u{1F600}?&=]{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_streamed_key_equals_the_key_of_earlier_versions_on_any_payload(payload in hostile_json()) {
            same_key_as_before(&serde_json::json!({
                "event": "meeting.updated", "event_ts": 1, "payload": payload,
            }));
            same_key_as_before(&serde_json::json!({
                "event": "meeting.updated", "payload": {"object": payload},
            }));
        }
    }

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
