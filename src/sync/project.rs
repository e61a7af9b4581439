//! From an entity's document to what users read: the current state as JSON, the indexed columns
//! the API filters on, and participant sessions with attendance.
//!
//! Everything here is a pure function of the document, so two stores holding the same documents
//! show the same state (which is what `sync rebuild` is checked against).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::doc::{EntityDoc, MarkKind};
use super::rules::Kind;
use super::status::{self, MeetingStatus};
use crate::core::clock::parse_time;

/// The projected row of one entity, as stored in `sync_entities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRow {
    pub kind: String,
    pub key: String,
    pub parent: Option<String>,
    pub status: Option<String>,
    pub host_id: Option<String>,
    pub email: Option<String>,
    /// Topic of a meeting or recording, display name of a user or participant.
    pub label: Option<String>,
    /// Scheduled or actual start (epoch ms): what time-range filters use.
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
    /// The last log `seq` that changed this entity.
    pub updated_seq: i64,
    /// The convergent document (JSON of [`EntityDoc`]).
    pub doc: String,
    /// The current state (JSON object).
    pub state: String,
}

/// One participant session: a join paired with the leave that follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub join_time: Option<i64>,
    pub leave_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave_reason: Option<String>,
}

/// Pairs joins and leaves in time order. A join followed by another join (a reconnect Zoom did
/// not report a leave for) stays open-ended; a leave with no join before it (its join has not
/// arrived yet, or never will) is kept as a session without a join.
pub fn sessions(doc: &EntityDoc) -> Vec<Session> {
    let mut out = Vec::new();
    let mut open: Option<i64> = None;
    for mark in &doc.marks {
        match mark.kind {
            MarkKind::Join => {
                if let Some(join) = open.replace(mark.at) {
                    out.push(Session {
                        join_time: Some(join),
                        leave_time: None,
                        leave_reason: None,
                    });
                }
            }
            MarkKind::Leave => out.push(Session {
                join_time: open.take(),
                leave_time: Some(mark.at),
                leave_reason: Some(mark.reason.clone()).filter(|r| !r.is_empty()),
            }),
        }
    }
    if let Some(join) = open {
        out.push(Session {
            join_time: Some(join),
            leave_time: None,
            leave_reason: None,
        });
    }
    out
}

/// Attendance of one participant. An open session of an instance that has ended counts until
/// the instance's end (Zoom sometimes never sends the last `participant_left`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendance {
    pub sessions: usize,
    pub total_seconds: i64,
    pub first_join: Option<i64>,
    pub last_leave: Option<i64>,
}

pub fn attendance(sessions: &[Session], instance_end: Option<i64>) -> Attendance {
    let mut total_ms = 0;
    for s in sessions {
        if let (Some(join), Some(leave)) = (s.join_time, s.leave_time.or(instance_end)) {
            total_ms += (leave - join).max(0);
        }
    }
    Attendance {
        sessions: sessions.len(),
        total_seconds: total_ms / 1000,
        first_join: sessions.iter().filter_map(|s| s.join_time).min(),
        last_leave: sessions.iter().filter_map(|s| s.leave_time).max(),
    }
}

/// Projects `doc` for an entity of `kind` into its stored row.
pub fn project(kind: Kind, key: &str, parent: Option<&str>, doc: &EntityDoc) -> EntityRow {
    let mut state = doc.to_object();
    let time = |field: &str| doc.text(field).and_then(|t| parse_time(&t));
    let mut row = EntityRow {
        kind: kind.as_str().to_owned(),
        key: key.to_owned(),
        parent: parent.map(str::to_owned),
        status: doc.text("status"),
        host_id: doc.text("host_id"),
        email: doc.text("email").or_else(|| doc.text("host_email")),
        label: doc.text("topic"),
        start_at: time("start_time"),
        end_at: None,
        updated_seq: doc.last_seq(),
        doc: String::new(),
        state: String::new(),
    };
    match kind {
        Kind::Meeting | Kind::Webinar => {
            // A meeting known only from its starts (no `meeting.created` seen) still has a start
            // to show and filter on: its last occurrence's.
            row.start_at = row.start_at.or_else(|| time("last_instance.start_time"));
            row.status = if doc.tombstone.is_some() {
                Some(MeetingStatus::PermanentlyDeleted.as_str().into())
            } else {
                status::shown(doc)
            };
        }
        Kind::Instance => {
            row.end_at = time("end_time");
            row.status = Some(
                if row.end_at.is_some() {
                    "ended"
                } else {
                    "started"
                }
                .into(),
            );
        }
        Kind::Participant => {
            let sessions = sessions(doc);
            let summary = attendance(&sessions, None);
            row.label = doc.text("user_name");
            row.start_at = summary.first_join;
            row.end_at = summary.last_leave;
            row.status = Some(
                match sessions.last() {
                    Some(s) if s.leave_time.is_none() => "in_meeting",
                    _ => "left",
                }
                .into(),
            );
            state.insert("sessions".into(), json!(sessions));
        }
        Kind::Recording => {
            if doc.tombstone.is_some() {
                row.status = Some("deleted".into());
            }
        }
        Kind::User => {
            row.label = doc.text("display_name").or_else(|| {
                let name = [doc.text("first_name"), doc.text("last_name")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(name).filter(|n| !n.is_empty())
            });
            if doc.tombstone.is_some() {
                row.status = Some(doc.text("removal").unwrap_or_else(|| "deleted".into()));
            }
        }
        Kind::Registrant => {
            row.label = [doc.text("first_name"), doc.text("last_name")]
                .into_iter()
                .flatten()
                .reduce(|a, b| format!("{a} {b}"));
        }
    }
    if let Some(status) = &row.status {
        state.insert("status".into(), json!(status));
    }
    row.doc = serde_json::to_string(doc).unwrap_or_default();
    // The state is what users read, also as `jsonb` through the SQL views, which refuse NUL.
    let mut state = Value::Object(state);
    crate::core::storable::scrub_json(&mut state);
    row.state = state.to_string();
    row
}
