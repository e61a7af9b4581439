//! Entities kept by sync — meetings, instances, participants, recordings, users, webinars,
//! registrants — as the API shows them: one envelope for every kind, with Zoom's own words under
//! `zoom`.
//!
//! The envelope is zoomhook's reading of the entity (the fields the lists filter on, times
//! normalised to RFC 3339 UTC); `zoom` is the object as Zoom described it, merged over the
//! entity's events, minus what zoomhook derived (`status`, a participant's identity, a meeting's
//! `last_instance`), which lives in the envelope or in its own endpoint.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::common::time_opt;
use crate::sync::doc::EntityDoc;
use crate::sync::project::{self, EntityRow};
use crate::sync::rules::PARTICIPANT_KEY_SEPARATOR;

/// Fields of an entity's document that zoomhook derived, shown in the envelope instead.
const DERIVED_FIELDS: &[&str] = &[
    "status",
    "identity",
    "meeting_uuid",
    "removal",
    "last_instance",
    "sessions",
];

/// A meeting, meeting instance, recording, user, webinar or registrant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Entity {
    /// The meeting or webinar id, the instance or recording uuid, the user id; a participant's
    /// identity within its instance.
    pub id: String,
    /// `meeting`, `meeting_instance`, `participant`, `recording`, `user`, `webinar` or `registrant`.
    pub kind: String,
    /// An instance's meeting id, a participant's instance uuid, a registrant's webinar id.
    pub parent_id: Option<String>,
    /// Meetings and webinars: `scheduled`, `started`, `ended`, `deleted`, …; instances `started` or
    /// `ended`; participants `in_meeting` or `left`; deleted users and recordings `deleted`.
    pub status: Option<String>,
    /// A meeting's or recording's topic, a user's, participant's or registrant's name.
    pub name: Option<String>,
    pub host_id: Option<String>,
    pub email: Option<String>,
    /// Scheduled or actual start; a participant's first join.
    pub start_time: Option<String>,
    /// An instance's end; a participant's last leave.
    pub end_time: Option<String>,
    /// The fields of the object Zoom described that sync keeps, merged over the entity's
    /// events (ids as strings, whatever type Zoom used).
    #[schema(value_type = Object)]
    pub zoom: Map<String, Value>,
}

impl Entity {
    /// The view of a stored entity.
    pub fn from_row(row: &EntityRow) -> Entity {
        // Sync stored the state already projected and scrubbed (`project::project`): the
        // document's fields plus what it derived, which the envelope shows instead.
        let mut zoom: Map<String, Value> = serde_json::from_str(&row.state).unwrap_or_default();
        for field in DERIVED_FIELDS {
            zoom.remove(*field);
        }
        let id = match row.key.split_once(PARTICIPANT_KEY_SEPARATOR) {
            Some((_, identity)) if row.kind == "participant" => identity.to_owned(),
            _ => row.key.clone(),
        };
        Entity {
            id,
            kind: row.kind.clone(),
            parent_id: row.parent.clone(),
            status: row.status.clone(),
            name: row.label.clone(),
            host_id: row.host_id.clone(),
            email: row.email.clone(),
            start_time: time_opt(row.start_at),
            end_time: time_opt(row.end_at),
            zoom,
        }
    }
}

/// A participant of a meeting instance, with its sessions and attendance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Participant {
    #[serde(flatten)]
    pub entity: Entity,
    /// Each join paired with the leave that follows it, in time order.
    pub sessions: Vec<Session>,
    pub attendance: Attendance,
}

/// One stay in the meeting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub join_time: Option<String>,
    /// `null` while still in the meeting.
    pub leave_time: Option<String>,
    pub leave_reason: Option<String>,
    /// Seconds in the meeting; an open session of an ended instance counts until its end.
    pub seconds: Option<i64>,
}

/// A participant's attendance over all sessions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Attendance {
    pub session_count: usize,
    pub total_seconds: i64,
    pub first_join_time: Option<String>,
    pub last_leave_time: Option<String>,
}

impl Participant {
    /// A participant with its sessions, counting open ones until `instance_end`.
    pub fn from_row(row: &EntityRow, instance_end: Option<i64>) -> Participant {
        let doc: EntityDoc = serde_json::from_str(&row.doc).unwrap_or_default();
        let sessions = project::sessions(&doc);
        let summary = project::attendance(&sessions, instance_end);
        Participant {
            entity: Entity::from_row(row),
            sessions: sessions
                .iter()
                .map(|s| Session {
                    join_time: time_opt(s.join_time),
                    leave_time: time_opt(s.leave_time),
                    leave_reason: s.leave_reason.clone(),
                    seconds: match (s.join_time, s.leave_time.or(instance_end)) {
                        (Some(j), Some(l)) => Some((l - j).max(0) / 1000),
                        _ => None,
                    },
                })
                .collect(),
            attendance: Attendance {
                session_count: summary.sessions,
                total_seconds: summary.total_seconds,
                first_join_time: time_opt(summary.first_join),
                last_leave_time: time_opt(summary.last_leave),
            },
        }
    }
}
