//! The status of a meeting (or webinar): one home for the names the rules write, the projection
//! shows, the API filters on and the CLI offers.
//!
//! A meeting's status follows two lifecycles in one last-writer-wins field (`status`, versioned by
//! `(event_ts, seq)` like every field): its schedule (`meeting.created` → `scheduled`,
//! `.deleted`, `.recovered`) and its occurrences (`meeting.started` → `started`, `meeting.ended`
//! → `ended`). Whichever event happened last says what the meeting is now, and because it is a
//! plain field the merge stays commutative: late or repeated events cannot move it backwards.
//!
//! What a user expects of a **recurring** series differs from a one-off meeting: when an
//! occurrence of a weekly meeting ends, the meeting is not over — its next occurrence is
//! scheduled. So [`shown`] turns a stored `ended` back into `scheduled` for series that can start
//! again: recurring meetings without a fixed time, personal meeting rooms, and fixed-time series
//! with an occurrence (known from the `occurrences` Zoom sends) starting after the one that
//! ended — or whose occurrences are not known at all (a series is assumed to continue rather than
//! be declared over on no evidence). A one-off (instant or scheduled) meeting stays `ended`.
//! This is a pure function of the document, so it converges as the document does.

use serde_json::Value;

use super::doc::EntityDoc;
use crate::core::clock::parse_time;

/// What a meeting or webinar is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeetingStatus {
    /// Created (or recurring, between occurrences) and not running.
    Scheduled,
    /// An occurrence is running.
    Started,
    /// Its (last) occurrence ended and no other is expected.
    Ended,
    /// Moved to the trash (`meeting.deleted`); can still be recovered.
    Deleted,
    /// Taken back out of the trash.
    Recovered,
    /// Gone for good (`meeting.permanently_deleted`): a sticky tombstone.
    PermanentlyDeleted,
}

impl MeetingStatus {
    /// Every status, in lifecycle order (what `--status` and `?status=` accept).
    pub const ALL: [MeetingStatus; 6] = [
        MeetingStatus::Scheduled,
        MeetingStatus::Started,
        MeetingStatus::Ended,
        MeetingStatus::Deleted,
        MeetingStatus::Recovered,
        MeetingStatus::PermanentlyDeleted,
    ];

    /// The names of [`MeetingStatus::ALL`], for argument parsers.
    pub const NAMES: [&'static str; 6] = [
        "scheduled",
        "started",
        "ended",
        "deleted",
        "recovered",
        "permanently_deleted",
    ];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The status of a name, if it is one.
    pub fn parse(text: &str) -> Option<MeetingStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Zoom's meeting and webinar `type`s whose occurrences can start again at any time: recurring
/// without a fixed time (3, webinar 6) and the personal meeting room (4).
const OPEN_ENDED_TYPES: [i64; 3] = [3, 4, 6];
/// Recurring with a fixed time (8, webinar 9): more occurrences only if the schedule has them.
const FIXED_RECURRING_TYPES: [i64; 2] = [8, 9];

/// The status to show for a meeting or webinar document (without its tombstone, which the
/// projection handles): the stored field, except that an ended occurrence of a series that goes
/// on leaves the series `scheduled`.
pub fn shown(doc: &EntityDoc) -> Option<String> {
    let stored = doc.text("status")?;
    if stored == MeetingStatus::Ended.as_str() && series_continues(doc) {
        return Some(MeetingStatus::Scheduled.as_str().to_owned());
    }
    Some(stored)
}

/// Whether another occurrence is expected after the last one that ended.
fn series_continues(doc: &EntityDoc) -> bool {
    let Some(kind) = doc.get("type").and_then(meeting_type) else {
        return false;
    };
    if OPEN_ENDED_TYPES.contains(&kind) {
        return true;
    }
    if !FIXED_RECURRING_TYPES.contains(&kind) {
        return false;
    }
    let Some(Value::Array(occurrences)) = doc.get("occurrences") else {
        return true;
    };
    // The occurrence that ended was scheduled before it ended; a later one starts after.
    let Some(ended_at) = ["last_instance.end_time", "last_instance.start_time"]
        .iter()
        .find_map(|field| doc.text(field).and_then(|t| parse_time(&t)))
    else {
        return true;
    };
    occurrences.iter().any(|o| {
        o["status"].as_str() != Some("deleted")
            && o["start_time"]
                .as_str()
                .and_then(parse_time)
                .is_some_and(|start| start > ended_at)
    })
}

/// Zoom sends `type` as a number, occasionally as a string.
fn meeting_type(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(fields: &[(&str, Value)]) -> EntityDoc {
        let mut d = EntityDoc::default();
        for (i, (path, value)) in fields.iter().enumerate() {
            d.set(*path, value.clone(), (1, i as i64));
        }
        d
    }

    #[test]
    fn names_round_trip() {
        for status in MeetingStatus::ALL {
            assert_eq!(MeetingStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(MeetingStatus::parse("bogus"), None);
    }

    #[test]
    fn a_one_off_meeting_stays_ended() {
        let d = doc(&[("status", json!("ended")), ("type", json!(2))]);
        assert_eq!(shown(&d).as_deref(), Some("ended"));
        let instant = doc(&[("status", json!("ended")), ("type", json!(1))]);
        assert_eq!(shown(&instant).as_deref(), Some("ended"));
    }

    #[test]
    fn a_series_without_fixed_time_is_scheduled_again() {
        for kind in [json!(3), json!("4"), json!(6)] {
            let d = doc(&[("status", json!("ended")), ("type", kind)]);
            assert_eq!(shown(&d).as_deref(), Some("scheduled"));
        }
    }

    #[test]
    fn a_fixed_time_series_ends_with_its_last_occurrence() {
        let occurrences = json!([
            {"occurrence_id": "1", "start_time": "2026-11-02T10:00:00Z", "status": "available"},
            {"occurrence_id": "2", "start_time": "2026-11-09T10:00:00Z", "status": "available"},
            {"occurrence_id": "3", "start_time": "2026-11-16T10:00:00Z", "status": "deleted"},
        ]);
        let after = |end: &str| {
            doc(&[
                ("status", json!("ended")),
                ("type", json!(8)),
                ("occurrences", occurrences.clone()),
                ("last_instance.end_time", json!(end)),
            ])
        };
        assert_eq!(
            shown(&after("2026-11-02T11:00:00Z")).as_deref(),
            Some("scheduled")
        );
        // The last available occurrence ended; the deleted one does not count.
        assert_eq!(
            shown(&after("2026-11-09T11:00:00Z")).as_deref(),
            Some("ended")
        );
    }

    #[test]
    fn other_statuses_pass_through() {
        let d = doc(&[("status", json!("started")), ("type", json!(3))]);
        assert_eq!(shown(&d).as_deref(), Some("started"));
        assert_eq!(shown(&EntityDoc::default()), None);
    }
}
