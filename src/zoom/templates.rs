//! Realistic Zoom event bodies with fresh identifiers, for `send`, `simulate` and `demo`.
//!
//! Shapes follow PROTOCOL.md §1.5 and the fixtures, including Zoom's quirks: numeric `object.id`
//! on `meeting.created`/`recording.*`, string ids on `meeting.started`/`ended`/participant events.

use serde_json::{Value, json};

use crate::core::clock::rfc3339;

/// Event names `template` can produce.
pub const TEMPLATE_NAMES: &[&str] = &[
    "meeting.created",
    "meeting.updated",
    "meeting.started",
    "meeting.participant_joined",
    "meeting.participant_left",
    "meeting.ended",
    "recording.completed",
    "meeting.deleted",
    "user.created",
    "user.updated",
    "webinar.started",
];

/// One meeting, the identity shared by all of its events.
#[derive(Debug, Clone)]
pub struct Meeting {
    pub id: u64,
    pub uuid: String,
    pub host_id: String,
    pub account_id: String,
    pub topic: String,
    /// Scheduled start (epoch ms).
    pub start_ms: i64,
}

impl Meeting {
    /// A meeting with random identifiers starting at `start_ms`.
    pub fn random(start_ms: i64) -> Meeting {
        Meeting {
            id: 80_000_000_000 + rand::random::<u64>() % 9_999_999_999,
            uuid: random_token(16) + "==",
            host_id: random_token(22),
            account_id: "AAAAAABBBBccccDDDD1234".into(),
            topic: TOPICS[rand::random::<u64>() as usize % TOPICS.len()].into(),
            start_ms,
        }
    }

    fn object(&self, numeric_id: bool) -> Value {
        json!({
            "uuid": self.uuid,
            "id": if numeric_id { json!(self.id) } else { json!(self.id.to_string()) },
            "host_id": self.host_id,
            "topic": self.topic,
            "type": 2,
            "start_time": rfc3339_secs(self.start_ms),
            "duration": 60,
            "timezone": "America/Los_Angeles",
        })
    }
}

/// A participant of a meeting.
#[derive(Debug, Clone)]
pub struct Participant {
    pub user_id: String,
    pub participant_uuid: String,
    pub name: String,
    pub email: String,
}

impl Participant {
    /// A participant with random identifiers.
    pub fn random(index: usize) -> Participant {
        let name = NAMES[index % NAMES.len()];
        Participant {
            user_id: (16_778_240 + (index as u64 % 100_000) * 1024 + rand::random::<u64>() % 1000)
                .to_string(),
            participant_uuid: random_token(22),
            name: name.into(),
            email: format!(
                "{}.{}@example.com",
                name.to_lowercase(),
                random_token(4).to_lowercase()
            ),
        }
    }

    fn json(&self, time_key: &str, time_ms: i64, leave_reason: Option<&str>) -> Value {
        let mut p = json!({
            "user_id": self.user_id,
            "user_name": self.name,
            "participant_uuid": self.participant_uuid,
            "id": self.participant_uuid,
            "email": self.email,
            "registrant_id": "",
            time_key: rfc3339_secs(time_ms),
        });
        if let (Some(reason), Some(map)) = (leave_reason, p.as_object_mut()) {
            map.insert("leave_reason".into(), json!(reason));
        }
        p
    }
}

fn envelope(event: &str, event_ts: i64, payload: Value) -> Value {
    json!({"event": event, "event_ts": event_ts, "payload": payload})
}

/// `meeting.created`.
pub fn meeting_created(m: &Meeting, ts: i64) -> Value {
    let mut object = m.object(true);
    object["join_url"] = json!(format!("https://example.zoom.us/j/{}", m.id));
    object["settings"] = json!({"use_pmi": false, "alternative_hosts": "", "join_before_host": false, "waiting_room": true});
    envelope(
        "meeting.created",
        ts,
        json!({"account_id": m.account_id, "operator": "admin@example.com", "operator_id": m.host_id, "operation": "single", "object": object}),
    )
}

/// `meeting.updated` with a new topic.
pub fn meeting_updated(m: &Meeting, ts: i64, new_topic: &str) -> Value {
    envelope(
        "meeting.updated",
        ts,
        json!({
            "account_id": m.account_id, "operator": "admin@example.com", "operator_id": m.host_id, "scope": "single",
            "object": {"id": m.id, "topic": new_topic},
            "old_object": {"id": m.id, "topic": m.topic},
            "time_stamp": ts,
        }),
    )
}

/// `meeting.started`.
pub fn meeting_started(m: &Meeting, ts: i64) -> Value {
    envelope(
        "meeting.started",
        ts,
        json!({"account_id": m.account_id, "object": m.object(false)}),
    )
}

/// `meeting.ended`.
pub fn meeting_ended(m: &Meeting, ts: i64) -> Value {
    let mut object = m.object(false);
    object["end_time"] = json!(rfc3339_secs(ts));
    envelope(
        "meeting.ended",
        ts,
        json!({"account_id": m.account_id, "object": object}),
    )
}

/// `meeting.participant_joined`.
pub fn participant_joined(m: &Meeting, p: &Participant, ts: i64) -> Value {
    let mut object = m.object(false);
    object["participant"] = p.json("join_time", ts, None);
    envelope(
        "meeting.participant_joined",
        ts,
        json!({"account_id": m.account_id, "object": object}),
    )
}

/// `meeting.participant_left`.
pub fn participant_left(m: &Meeting, p: &Participant, ts: i64) -> Value {
    let mut object = m.object(false);
    object["participant"] = p.json(
        "leave_time",
        ts,
        Some("left the meeting. Reason : left the meeting"),
    );
    envelope(
        "meeting.participant_left",
        ts,
        json!({"account_id": m.account_id, "object": object}),
    )
}

/// `recording.completed`, with a fresh `download_token` (as Zoom's re-sends have).
pub fn recording_completed(m: &Meeting, ts: i64) -> Value {
    let token = random_token(40);
    let file_id = uuid::Uuid::new_v4().to_string();
    let mut object = m.object(true);
    object["account_id"] = json!(m.account_id);
    object["host_email"] = json!("host@example.com");
    object["share_url"] = json!(format!(
        "https://example.zoom.us/rec/share/{}",
        random_token(12)
    ));
    object["total_size"] = json!(3_328_371);
    object["recording_count"] = json!(1);
    object["recording_files"] = json!([{
        "id": file_id, "meeting_id": m.uuid,
        "recording_start": rfc3339_secs(m.start_ms), "recording_end": rfc3339_secs(ts),
        "file_type": "MP4", "file_size": 3_328_371, "file_extension": "MP4",
        "play_url": format!("https://example.zoom.us/rec/play/{file_id}"),
        "download_url": format!("https://example.zoom.us/rec/download/{file_id}?access_token={token}"),
        "status": "completed", "recording_type": "shared_screen_with_speaker_view",
    }]);
    let mut body = envelope(
        "recording.completed",
        ts,
        json!({"account_id": m.account_id, "object": object}),
    );
    body["download_token"] = json!(token);
    body
}

/// `meeting.deleted`.
pub fn meeting_deleted(m: &Meeting, ts: i64) -> Value {
    envelope(
        "meeting.deleted",
        ts,
        json!({"account_id": m.account_id, "operator": "admin@example.com", "operator_id": m.host_id, "operation": "single", "object": m.object(true)}),
    )
}

/// A full meeting lifecycle in occurrence order: created, updated, started, each participant
/// joining and leaving, ended, recording completed. `(event_ts, body)` pairs.
pub fn lifecycle(m: &Meeting, participants: &[Participant]) -> Vec<Value> {
    let mut ts = m.start_ms - 3_600_000;
    let mut next = |step: i64| {
        ts += step;
        ts
    };
    let mut events = vec![
        meeting_created(m, next(0)),
        meeting_updated(m, next(60_000), &format!("{} (agenda attached)", m.topic)),
    ];
    let started = m.start_ms;
    events.push(meeting_started(m, started));
    let mut t = started;
    for p in participants {
        t += 1_500;
        events.push(participant_joined(m, p, t));
    }
    for p in participants {
        t += 600_000;
        events.push(participant_left(m, p, t));
    }
    t += 1_000;
    events.push(meeting_ended(m, t));
    events.push(recording_completed(m, t + 120_000));
    events
}

/// A single event of kind `name` with fresh identifiers, or `None` for an unknown name.
pub fn template(name: &str, now_ms: i64) -> Option<Value> {
    let m = Meeting::random(now_ms);
    let p = Participant::random(rand::random::<u64>() as usize);
    let user_id = random_token(22);
    Some(match name {
        "meeting.created" => meeting_created(&m, now_ms),
        "meeting.updated" => meeting_updated(&m, now_ms, "Renamed meeting"),
        "meeting.started" => meeting_started(&m, now_ms),
        "meeting.participant_joined" => participant_joined(&m, &p, now_ms),
        "meeting.participant_left" => participant_left(&m, &p, now_ms),
        "meeting.ended" => meeting_ended(&m, now_ms),
        "recording.completed" => recording_completed(&m, now_ms),
        "meeting.deleted" => meeting_deleted(&m, now_ms),
        "user.created" => envelope(
            "user.created",
            now_ms,
            json!({"account_id": m.account_id, "operator": "admin@example.com", "operator_id": m.host_id, "creation_type": "create", "object": {"id": user_id, "first_name": p.name, "last_name": "Example", "display_name": format!("{} Example", p.name), "email": p.email, "type": 1}}),
        ),
        "user.updated" => envelope(
            "user.updated",
            now_ms,
            json!({"account_id": m.account_id, "operator": "admin@example.com", "operator_id": m.host_id, "time_stamp": now_ms, "old_object": {"id": user_id, "email": "old@example.com"}, "object": {"id": user_id, "email": p.email}}),
        ),
        "webinar.started" => {
            let mut object = m.object(false);
            object["type"] = json!(5);
            envelope(
                "webinar.started",
                now_ms,
                json!({"account_id": m.account_id, "object": object}),
            )
        }
        _ => return None,
    })
}

/// Compact JSON bytes of an event, as Zoom sends them.
pub fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn rfc3339_secs(ms: i64) -> String {
    rfc3339(ms - ms.rem_euclid(1000))
}

/// A random alphanumeric token, like Zoom's ids.
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random::<u64>() as usize % ALPHABET.len()] as char)
        .collect()
}

const TOPICS: &[&str] = &[
    "Weekly sync",
    "Customer onboarding",
    "Sprint review",
    "Équipe 🚀 réunion",
    "All hands",
];
const NAMES: &[&str] = &[
    "Jill", "Jan", "Amara", "Kenji", "Sofia", "Liam", "Priya", "Mateo",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoom::envelope::Envelope;

    #[test]
    fn every_template_parses_and_has_identity() {
        for name in TEMPLATE_NAMES {
            let body = to_bytes(&template(name, 1_700_000_000_000).unwrap());
            let env = Envelope::parse(&body).unwrap();
            assert_eq!(&env.event, name);
            assert!(env.object_id.is_some(), "{name}");
        }
        assert!(template("nope", 0).is_none());
    }

    #[test]
    fn lifecycle_is_ordered_and_distinct() {
        let m = Meeting::random(1_700_000_000_000);
        let people: Vec<_> = (0..3).map(Participant::random).collect();
        let events = lifecycle(&m, &people);
        assert_eq!(events.len(), 2 + 1 + 6 + 2);
        let keys: std::collections::HashSet<_> = events
            .iter()
            .map(|e| Envelope::parse(&to_bytes(e)).unwrap().semantic_key)
            .collect();
        assert_eq!(keys.len(), events.len());
    }
}
