//! Zoom's event semantics: which entities an event touches and what it writes into them.
//!
//! Each log entry becomes zero or more [`Change`]s — a patch ([`EntityDoc`]) for one entity, with
//! every field versioned by the event's `(event_ts, seq)`. The rules only *describe* writes; the
//! merge in [`super::doc`] decides what wins, which is what makes the result independent of arrival
//! order. Event types not listed here produce no change (they stay in the log).
//!
//! | event | entity | writes |
//! |---|---|---|
//! | `meeting.created` | meeting | every object field, status `scheduled` |
//! | `meeting.updated` | meeting | only the fields in `object` (nested leaves) |
//! | `meeting.deleted` / `.recovered` | meeting | status `deleted` / `recovered` |
//! | `meeting.permanently_deleted` | meeting | tombstone |
//! | `meeting.started` / `.ended` | instance (uuid), meeting | start / end time; topic, host; the meeting's status `started` / `ended` and `last_instance` |
//! | `meeting.participant_joined` / `_left` | participant (per instance and person), instance, meeting | a join / leave mark; identity fields |
//! | `recording.completed` / `.trashed` / `.recovered` | recording (per instance) | files, sizes, status |
//! | `recording.deleted` | recording | tombstone |
//! | `user.created` / `.updated` / `.activated` / `.deactivated` | user | profile fields, status |
//! | `user.deleted` / `.disassociated` | user | tombstone |
//! | `webinar.*` as `meeting.*`; `webinar.registration_*` | webinar, registrant | as above, registrant status |

use serde_json::{Value, json};

use super::doc::{EntityDoc, Mark, MarkKind, Version};
use super::status::MeetingStatus;
use crate::core::clock::parse_time;
use crate::core::storable;
use crate::zoom::envelope::normalised_id;

/// The kinds of synchronised entities (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Meeting,
    Instance,
    Participant,
    Recording,
    User,
    Webinar,
    Registrant,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Meeting,
        Kind::Instance,
        Kind::Participant,
        Kind::Recording,
        Kind::User,
        Kind::Webinar,
        Kind::Registrant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Meeting => "meeting",
            Kind::Instance => "meeting_instance",
            Kind::Participant => "participant",
            Kind::Recording => "recording",
            Kind::User => "user",
            Kind::Webinar => "webinar",
            Kind::Registrant => "registrant",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Which entity a change is for. `parent` links instances and recordings to their meeting,
/// participants to their instance, registrants to their webinar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    pub kind: Kind,
    pub key: String,
    pub parent: Option<String>,
}

/// One patch for one entity.
#[derive(Debug, Clone)]
pub struct Change {
    pub entity: EntityRef,
    pub patch: EntityDoc,
}

/// What the rules need of a log entry.
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    pub seq: i64,
    pub event: &'a str,
    pub event_ts: Option<i64>,
    pub received_at: i64,
    pub body: &'a [u8],
}

/// Separates the instance uuid from the person in a participant key (`|` is not in base64).
pub const PARTICIPANT_KEY_SEPARATOR: char = '|';

/// The changes one log entry makes. A body that is not JSON, or an event type sync does not know,
/// makes none.
pub fn changes(entry: LogEntry<'_>) -> Vec<Change> {
    let Ok(body) = serde_json::from_slice::<Value>(entry.body) else {
        return Vec::new();
    };
    let version: Version = (entry.event_ts.unwrap_or(entry.received_at), entry.seq);
    let payload = &body["payload"];
    let object = &payload["object"];
    let mut out = Changes {
        list: Vec::new(),
        version,
    };
    let Some((family, action)) = entry.event.split_once('.') else {
        return Vec::new();
    };
    match (family, action) {
        (
            "meeting" | "webinar",
            "created" | "updated" | "deleted" | "recovered" | "permanently_deleted",
        ) => {
            let kind = if family == "meeting" {
                Kind::Meeting
            } else {
                Kind::Webinar
            };
            out.schedule_change(kind, action, object)
        }
        ("meeting", "started" | "ended") => out.instance(Kind::Meeting, action, object),
        ("webinar", "started" | "ended") => out.instance(Kind::Webinar, action, object),
        ("meeting", "participant_joined" | "participant_left")
        | ("webinar", "participant_joined" | "participant_left") => {
            let parent_kind = if family == "meeting" {
                Kind::Meeting
            } else {
                Kind::Webinar
            };
            out.participant(
                parent_kind,
                action == "participant_joined",
                object,
                entry.event_ts,
            )
        }
        ("recording", "completed" | "trashed" | "deleted" | "recovered") => {
            out.recording(action, object)
        }
        ("user", _) => out.user(action, payload, object),
        (
            "webinar",
            "registration_created"
            | "registration_approved"
            | "registration_cancelled"
            | "registration_denied",
        ) => out.registrant(action, object),
        _ => {}
    }
    out.list
}

struct Changes {
    list: Vec<Change>,
    version: Version,
}

impl Changes {
    fn push(&mut self, kind: Kind, key: String, parent: Option<String>) -> &mut EntityDoc {
        // Keys in their storable form from the start, so the working set, the stored rows and
        // the API's lookups all name an entity the same way whatever its id holds.
        let key = storable::key_owned(key);
        let parent = parent.map(storable::key_owned);
        self.list.push(Change {
            entity: EntityRef { kind, key, parent },
            patch: EntityDoc::default(),
        });
        let last = self.list.len() - 1;
        &mut self.list[last].patch
    }

    /// `*.created|updated|deleted|recovered|permanently_deleted` of a meeting or webinar.
    fn schedule_change(&mut self, kind: Kind, action: &str, object: &Value) {
        let Some(id) = normalised_id(&object["id"]) else {
            return;
        };
        let version = self.version;
        let doc = self.push(kind, id.clone(), None);
        doc.set("id", json!(id), version);
        match action {
            "created" => {
                // `uuid` names the first occurrence, not the meeting; instances carry their own.
                doc.set_object(object, &["id", "uuid"], version);
                doc.set("status", status(MeetingStatus::Scheduled), version);
            }
            "updated" => doc.set_object(object, &["id", "uuid"], version),
            "deleted" => doc.set("status", status(MeetingStatus::Deleted), version),
            "recovered" => doc.set("status", status(MeetingStatus::Recovered), version),
            _ => doc.tombstone = Some(version),
        }
    }

    /// `meeting.started|ended` (and the webinar ones): the occurrence, plus what it tells about
    /// its meeting (an instant meeting has no `meeting.created`).
    fn instance(&mut self, parent_kind: Kind, action: &str, object: &Value) {
        let version = self.version;
        let (Some(uuid), Some(id)) = (normalised_id(&object["uuid"]), normalised_id(&object["id"]))
        else {
            return;
        };
        self.parent_fields(parent_kind, &id, object);
        self.parent_live_status(parent_kind, &id, &uuid, action, object);
        let doc = self.push(Kind::Instance, uuid.clone(), Some(id.clone()));
        instance_identity(doc, &uuid, &id, parent_kind, object, version);
        match action {
            "started" => {
                if let Some(start) = object.get("start_time") {
                    doc.set("start_time", start.clone(), version);
                }
            }
            _ => {
                if let Some(end) = object.get("end_time") {
                    doc.set("end_time", end.clone(), version);
                }
            }
        }
    }

    /// What an occurrence starting or ending says about its meeting: `started` / `ended` in the
    /// same last-writer-wins `status` field the schedule events write (so the latest event of
    /// either kind is what the meeting is now, whatever order they arrive in), and which
    /// occurrence that was. A start clears `last_instance.end_time` at its own version, so the
    /// end of an earlier occurrence never sticks to a later one.
    fn parent_live_status(
        &mut self,
        kind: Kind,
        id: &str,
        uuid: &str,
        action: &str,
        object: &Value,
    ) {
        let version = self.version;
        let started = action == "started";
        let doc = self.push(kind, id.to_owned(), None);
        let live = if started {
            MeetingStatus::Started
        } else {
            MeetingStatus::Ended
        };
        doc.set("status", status(live), version);
        doc.set("last_instance.uuid", json!(uuid), version);
        if let Some(start) = object.get("start_time").filter(|v| !v.is_null()) {
            doc.set("last_instance.start_time", start.clone(), version);
        }
        let end = match object.get("end_time").filter(|v| !v.is_null()) {
            Some(end) if !started => end.clone(),
            _ => Value::Null,
        };
        doc.set("last_instance.end_time", end, version);
    }

    /// Topic, host and type of the meeting or webinar an occurrence belongs to.
    fn parent_fields(&mut self, kind: Kind, id: &str, object: &Value) {
        let version = self.version;
        let doc = self.push(kind, id.to_owned(), None);
        doc.set("id", json!(id), version);
        for field in ["topic", "host_id", "type"] {
            if let Some(value) = object.get(field).filter(|v| !v.is_null()) {
                doc.set(field, value.clone(), version);
            }
        }
    }

    fn participant(
        &mut self,
        parent_kind: Kind,
        joined: bool,
        object: &Value,
        event_ts: Option<i64>,
    ) {
        let version = self.version;
        let (Some(uuid), Some(id)) = (normalised_id(&object["uuid"]), normalised_id(&object["id"]))
        else {
            return;
        };
        let person = &object["participant"];
        let Some(identity) = participant_identity(person) else {
            return;
        };
        let time_field = if joined { "join_time" } else { "leave_time" };
        let Some(at) = person
            .get(time_field)
            .and_then(Value::as_str)
            .and_then(parse_time)
            .or(event_ts)
        else {
            return;
        };
        self.parent_fields(parent_kind, &id, object);
        let instance = self.push(Kind::Instance, uuid.clone(), Some(id.clone()));
        instance_identity(instance, &uuid, &id, parent_kind, object, version);
        let key = format!("{uuid}{PARTICIPANT_KEY_SEPARATOR}{identity}");
        let doc = self.push(Kind::Participant, key, Some(uuid.clone()));
        doc.set("meeting_uuid", json!(uuid), version);
        doc.set("identity", json!(identity), version);
        doc.set_object(
            person,
            &[
                "join_time",
                "leave_time",
                "leave_reason",
                "date_time",
                "user_id",
            ],
            version,
        );
        let reason = if joined {
            String::new()
        } else {
            person["leave_reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        doc.marks.insert(Mark {
            at,
            kind: if joined {
                MarkKind::Join
            } else {
                MarkKind::Leave
            },
            reason,
        });
    }

    fn recording(&mut self, action: &str, object: &Value) {
        let version = self.version;
        let Some(uuid) = normalised_id(&object["uuid"]) else {
            return;
        };
        let meeting_id = normalised_id(&object["id"]);
        let doc = self.push(Kind::Recording, uuid.clone(), meeting_id.clone());
        doc.set("uuid", json!(uuid), version);
        if let Some(id) = meeting_id {
            doc.set("meeting_id", json!(id), version);
        }
        match action {
            "deleted" => doc.tombstone = Some(version),
            _ => {
                doc.set_object(object, &["id", "uuid", "password"], version);
                doc.set("status", json!(action), version);
            }
        }
    }

    fn user(&mut self, action: &str, payload: &Value, object: &Value) {
        let version = self.version;
        let Some(id) = normalised_id(&object["id"]) else {
            return;
        };
        let status = match action {
            // "create" sends an activation email: the user is pending until they accept.
            "created" => Some(match payload["creation_type"].as_str() {
                Some("create") => "pending",
                _ => "active",
            }),
            "activated" => Some("active"),
            "deactivated" => Some("inactive"),
            "updated" | "deleted" | "disassociated" => None,
            _ => return,
        };
        let doc = self.push(Kind::User, id.clone(), None);
        doc.set("id", json!(id), version);
        doc.set_object(object, &["id"], version);
        if let Some(status) = status {
            doc.set("status", json!(status), version);
        }
        if matches!(action, "deleted" | "disassociated") {
            doc.set("removal", json!(action), version);
            doc.tombstone = Some(version);
        }
    }

    fn registrant(&mut self, action: &str, object: &Value) {
        let version = self.version;
        let registrant = &object["registrant"];
        let (Some(webinar_id), Some(registrant_id)) = (
            normalised_id(&object["id"]),
            normalised_id(&registrant["id"]),
        ) else {
            return;
        };
        self.parent_fields(Kind::Webinar, &webinar_id, object);
        let key = format!("{webinar_id}{PARTICIPANT_KEY_SEPARATOR}{registrant_id}");
        let doc = self.push(Kind::Registrant, key, Some(webinar_id.clone()));
        doc.set("webinar_id", json!(webinar_id), version);
        doc.set_object(registrant, &["status"], version);
        let status = match action {
            "registration_created" => registrant["status"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("pending")
                .to_owned(),
            other => other.trim_start_matches("registration_").to_owned(),
        };
        doc.set("status", json!(status), version);
    }
}

fn status(status: MeetingStatus) -> Value {
    json!(status.as_str())
}

fn instance_identity(
    doc: &mut EntityDoc,
    uuid: &str,
    id: &str,
    parent_kind: Kind,
    object: &Value,
    version: Version,
) {
    doc.set("uuid", json!(uuid), version);
    let parent_field = if parent_kind == Kind::Meeting {
        "meeting_id"
    } else {
        "webinar_id"
    };
    doc.set(parent_field, json!(id), version);
    for field in ["topic", "host_id", "type"] {
        if let Some(value) = object.get(field).filter(|v| !v.is_null()) {
            doc.set(field, value.clone(), version);
        }
    }
}

/// Who a participant is, most stable identifier first: `participant_uuid`, the Zoom user id
/// (`participant_user_id` / `id`, absent for guests), email, name, and last the per-session
/// `user_id` (which changes when the same person rejoins).
pub fn participant_identity(person: &Value) -> Option<String> {
    [
        "participant_uuid",
        "participant_user_id",
        "id",
        "email",
        "user_name",
        "user_id",
    ]
    .iter()
    .find_map(|field| normalised_id(&person[*field]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(event: &'a str, body: &'a [u8]) -> LogEntry<'a> {
        LogEntry {
            seq: 7,
            event,
            event_ts: Some(1_000),
            received_at: 2_000,
            body,
        }
    }

    #[test]
    fn unknown_events_and_bad_bodies_change_nothing() {
        assert!(changes(entry("phone.callee_answered", br#"{"payload":{}}"#)).is_empty());
        assert!(changes(entry("meeting.created", b"not json")).is_empty());
        assert!(changes(entry("meeting.created", br#"{"payload":{"object":{}}}"#)).is_empty());
    }

    #[test]
    fn numeric_and_string_ids_name_the_same_meeting() {
        let a = changes(entry(
            "meeting.created",
            br#"{"payload":{"object":{"id":86431910364}}}"#,
        ));
        let b = changes(entry(
            "meeting.started",
            br#"{"payload":{"object":{"id":"86431910364","uuid":"u=="}}}"#,
        ));
        assert_eq!(a[0].entity.key, "86431910364");
        assert!(
            b.iter()
                .any(|c| c.entity.kind == Kind::Meeting && c.entity.key == "86431910364")
        );
    }

    #[test]
    fn identity_prefers_stable_ids() {
        let guest = json!({"user_id": "16778240", "user_name": "Jan", "email": ""});
        assert_eq!(participant_identity(&guest).as_deref(), Some("Jan"));
        let member = json!({"user_id": "1", "id": "tUo7", "email": "jan@example.com"});
        assert_eq!(participant_identity(&member).as_deref(), Some("tUo7"));
    }
}
