//! Guarantee 4: entity state converges whatever the arrival order and duplication of events.
//!
//! Generated meeting lifecycles (create, updates, start, participants joining and leaving several
//! times, end, recording, delete/recover, permanent deletion) and user lifecycles are applied in
//! order and in a random permutation with random duplicates; the projected state must be equal.
//! A permutation gets its own `seq` numbers, as it would in the log.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use zoomhook::sync::EntitySet;
use zoomhook::sync::project::EntityRow;
use zoomhook::sync::rules::LogEntry;

/// One generated event: name, `event_ts`, body.
type Event = (String, i64, Vec<u8>);

const BASE_TS: i64 = 1_700_000_000_000;
const MEETING: i64 = 85_746_065_432;
const UUID: &str = "4444AAAiAAAAAiAiAiiAii==";

fn event(name: &str, ts: i64, payload: Value) -> Event {
    let body = json!({"event": name, "event_ts": ts, "payload": payload});
    (
        name.to_owned(),
        ts,
        serde_json::to_vec(&body).expect("json"),
    )
}

fn iso(ms: i64) -> String {
    zoomhook::core::clock::rfc3339(ms)
}

#[derive(Debug, Clone)]
struct MeetingPlan {
    updates: Vec<(Option<String>, Option<i64>, Option<bool>)>,
    sessions: Vec<usize>,
    delete_then_recover: Option<bool>,
    recording: bool,
    permanently_deleted: bool,
}

fn meeting_plan() -> impl Strategy<Value = MeetingPlan> {
    (
        prop::collection::vec(
            (
                prop::option::of("[A-Z][a-z]{2,8}"),
                prop::option::of(15i64..240),
                prop::option::of(any::<bool>()),
            ),
            0..4,
        ),
        prop::collection::vec(1usize..4, 1..4),
        prop::option::of(any::<bool>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(updates, sessions, delete_then_recover, recording, permanently_deleted)| {
                MeetingPlan {
                    updates,
                    sessions,
                    delete_then_recover,
                    recording,
                    permanently_deleted,
                }
            },
        )
}

/// The events of a plan, in the order they happened (strictly increasing `event_ts`).
fn meeting_events(plan: &MeetingPlan) -> Vec<Event> {
    let mut ts = BASE_TS;
    let mut next = || {
        ts += 1_000;
        ts
    };
    let mut topic = "Weekly sync".to_owned();
    let host = "x1yCzABCDEfg23HiJKl4mN";
    let mut out = vec![event(
        "meeting.created",
        next(),
        json!({"account_id": "A", "object": {"id": MEETING, "uuid": UUID, "host_id": host, "topic": topic,
            "type": 2, "start_time": "2026-11-23T10:00:00Z", "duration": 30,
            "settings": {"join_before_host": false, "use_pmi": false}}}),
    )];
    for (new_topic, duration, jbh) in &plan.updates {
        let mut object = json!({"id": MEETING});
        let mut old = json!({"id": MEETING});
        if let Some(t) = new_topic {
            old["topic"] = json!(topic);
            topic = t.clone();
            object["topic"] = json!(topic);
        }
        if let Some(d) = duration {
            object["duration"] = json!(d);
        }
        if let Some(j) = jbh {
            object["settings"] = json!({"join_before_host": j});
        }
        let ts = next();
        out.push(event(
            "meeting.updated",
            ts,
            json!({"account_id": "A", "object": object, "old_object": old, "time_stamp": ts}),
        ));
    }
    let instance = |topic: &str| json!({"id": MEETING.to_string(), "uuid": UUID, "host_id": host, "topic": topic, "type": 2});
    let started = next();
    let mut object = instance(&topic);
    object["start_time"] = json!(iso(started));
    out.push(event(
        "meeting.started",
        started,
        json!({"account_id": "A", "object": object}),
    ));
    for (p, &count) in plan.sessions.iter().enumerate() {
        for _ in 0..count {
            let person = json!({"user_id": format!("1677{p}"), "user_name": format!("Person {p}"),
                "id": format!("user-{p}"), "email": format!("p{p}@example.com")});
            let join = next();
            let mut object = instance(&topic);
            let mut joined = person.clone();
            joined["join_time"] = json!(iso(join));
            object["participant"] = joined;
            out.push(event(
                "meeting.participant_joined",
                join,
                json!({"account_id": "A", "object": object}),
            ));
            let leave = next();
            let mut object = instance(&topic);
            let mut left = person.clone();
            left["leave_time"] = json!(iso(leave));
            left["leave_reason"] = json!("left the meeting");
            object["participant"] = left;
            out.push(event(
                "meeting.participant_left",
                leave,
                json!({"account_id": "A", "object": object}),
            ));
        }
    }
    let ended = next();
    let mut object = instance(&topic);
    object["end_time"] = json!(iso(ended));
    out.push(event(
        "meeting.ended",
        ended,
        json!({"account_id": "A", "object": object}),
    ));
    if plan.recording {
        out.push(event(
            "recording.completed",
            next(),
            json!({"account_id": "A", "object": {"id": MEETING, "uuid": UUID, "host_id": host, "topic": topic,
                "total_size": 1000, "recording_count": 1,
                "recording_files": [{"id": "f1", "file_type": "MP4", "file_size": 1000, "status": "completed"}]}}),
        ));
    }
    let gone = json!({"account_id": "A", "object": {"id": MEETING, "uuid": UUID, "host_id": host, "topic": topic}});
    if let Some(recover) = plan.delete_then_recover {
        out.push(event("meeting.deleted", next(), gone.clone()));
        if recover {
            out.push(event("meeting.recovered", next(), gone.clone()));
        }
    }
    if plan.permanently_deleted {
        out.push(event("meeting.permanently_deleted", next(), gone));
    }
    out
}

fn user_events(steps: &[u8]) -> Vec<Event> {
    let id = "abcD3ojfdbjfg";
    let mut ts = BASE_TS;
    let mut out = vec![event(
        "user.created",
        ts,
        json!({"account_id": "A", "creation_type": "create",
            "object": {"id": id, "first_name": "Jill", "last_name": "Chill", "email": "jill@example.com", "type": 1}}),
    )];
    for (i, step) in steps.iter().enumerate() {
        ts += 1_000;
        let e = match step % 5 {
            0 => event(
                "user.updated",
                ts,
                json!({"account_id": "A", "time_stamp": ts,
                "object": {"id": id, "email": format!("jill{i}@example.com")}, "old_object": {"id": id}}),
            ),
            1 => event(
                "user.updated",
                ts,
                json!({"account_id": "A", "time_stamp": ts,
                "object": {"id": id, "first_name": format!("Jill{i}"), "type": 2}}),
            ),
            2 => event(
                "user.activated",
                ts,
                json!({"account_id": "A", "object": {"id": id}}),
            ),
            3 => event(
                "user.deactivated",
                ts,
                json!({"account_id": "A", "object": {"id": id}}),
            ),
            _ => event(
                "user.deleted",
                ts,
                json!({"account_id": "A", "object": {"id": id}}),
            ),
        };
        out.push(e);
    }
    out
}

/// Applies events in the given order, numbering them as the log would.
fn apply(events: &[&Event]) -> Vec<EntityRow> {
    let mut set = EntitySet::default();
    set.apply_entries(
        events
            .iter()
            .enumerate()
            .map(|(i, (name, ts, body))| LogEntry {
                seq: i as i64 + 1,
                event: name,
                event_ts: Some(*ts),
                received_at: 0,
                body,
            }),
    );
    set.all_rows()
}

/// kind, key, parent, status, start, end, state.
type Visible = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Value,
);

/// What a user sees of an entity: everything but the bookkeeping of versions and seqs.
fn visible(rows: Vec<EntityRow>) -> Vec<Visible> {
    rows.into_iter()
        .map(|r| {
            let state: Value = serde_json::from_str(&r.state).expect("state is JSON");
            (
                r.kind, r.key, r.parent, r.status, r.start_at, r.end_at, state,
            )
        })
        .collect()
}

/// The events in `order`, with `duplicates` (which event, where) inserted.
fn arrival<'a>(
    events: &'a [Event],
    order: &[usize],
    duplicates: &[(Index, Index)],
) -> Vec<&'a Event> {
    let mut out: Vec<&Event> = order.iter().map(|&i| &events[i]).collect();
    for (which, at) in duplicates {
        let e = &events[which.index(events.len())];
        let at = at.index(out.len() + 1);
        out.insert(at, e);
    }
    out
}

fn shuffled_case<T: std::fmt::Debug + Clone>(
    plan: impl Strategy<Value = T>,
    build: fn(&T) -> Vec<Event>,
) -> impl Strategy<Value = (Vec<Event>, Vec<usize>, Vec<(Index, Index)>)> {
    plan.prop_flat_map(move |p| {
        let events = build(&p);
        let order: Vec<usize> = (0..events.len()).collect();
        (
            Just(events),
            Just(order).prop_shuffle(),
            prop::collection::vec((any::<Index>(), any::<Index>()), 0..8),
        )
    })
}

fn meeting_case(p: &MeetingPlan) -> Vec<Event> {
    meeting_events(p)
}

#[allow(clippy::ptr_arg)] // the strategy hands out `&Vec<u8>`
fn user_case(steps: &Vec<u8>) -> Vec<Event> {
    user_events(steps)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn meeting_lifecycles_converge_in_any_order((events, order, dups) in shuffled_case(meeting_plan(), meeting_case)) {
        let in_order = visible(apply(&events.iter().collect::<Vec<_>>()));
        let permuted = visible(apply(&arrival(&events, &order, &dups)));
        prop_assert_eq!(in_order, permuted);
    }

    #[test]
    fn user_lifecycles_converge_in_any_order((events, order, dups) in shuffled_case(prop::collection::vec(any::<u8>(), 0..8), user_case)) {
        let in_order = visible(apply(&events.iter().collect::<Vec<_>>()));
        let permuted = visible(apply(&arrival(&events, &order, &dups)));
        prop_assert_eq!(in_order, permuted);
    }
}

/// The in-order state itself is what Zoom's semantics say (so convergence is not to nonsense).
#[test]
fn in_order_state_follows_zoom_semantics() {
    let plan = MeetingPlan {
        updates: vec![(Some("Renamed".into()), None, Some(true))],
        sessions: vec![2, 1],
        delete_then_recover: Some(true),
        recording: true,
        permanently_deleted: false,
    };
    let rows = apply(&meeting_events(&plan).iter().collect::<Vec<_>>());
    let get = |kind: &str| {
        rows.iter()
            .filter(|r| r.kind == kind)
            .map(|r| serde_json::from_str::<Value>(&r.state).unwrap())
            .collect::<Vec<_>>()
    };
    let meeting = &get("meeting")[0];
    assert_eq!(meeting["name"], "Renamed");
    assert_eq!(meeting["status"], "recovered");
    assert_eq!(
        meeting["duration"], 30,
        "an update without duration keeps it"
    );
    assert_eq!(
        meeting["settings"],
        json!({"join_before_host": true, "use_pmi": false})
    );
    let instance = &get("meeting_instance")[0];
    assert_eq!(instance["status"], "ended");
    let participants = get("participant");
    assert_eq!(participants.len(), 2);
    let sessions: Vec<usize> = participants
        .iter()
        .map(|p| p["sessions"].as_array().unwrap().len())
        .collect();
    assert_eq!(sessions, [2, 1]);
    assert!(
        participants[0]["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["join_time"].is_null() && !s["leave_time"].is_null())
    );
    assert_eq!(get("recording")[0]["status"], "completed");

    let mut gone = plan.clone();
    gone.permanently_deleted = true;
    let events = meeting_events(&gone);
    // The tombstone arrives first; the whole history after it cannot resurrect the meeting.
    let mut reversed: Vec<&Event> = events.iter().collect();
    reversed.reverse();
    let rows = apply(&reversed);
    let meeting = rows.iter().find(|r| r.kind == "meeting").unwrap();
    assert_eq!(meeting.status.as_deref(), Some("permanently_deleted"));
}

#[test]
fn a_leave_before_its_join_is_paired_when_the_join_arrives() {
    let plan = MeetingPlan {
        updates: vec![],
        sessions: vec![1],
        delete_then_recover: None,
        recording: false,
        permanently_deleted: false,
    };
    let events = meeting_events(&plan);
    let left = events
        .iter()
        .find(|e| e.0 == "meeting.participant_left")
        .unwrap();
    let joined = events
        .iter()
        .find(|e| e.0 == "meeting.participant_joined")
        .unwrap();
    let only_left = apply(&[left]);
    let p = only_left.iter().find(|r| r.kind == "participant").unwrap();
    let state: Value = serde_json::from_str(&p.state).unwrap();
    assert!(
        state["sessions"][0]["join_time"].is_null(),
        "kept without its join: {state}"
    );
    let both = apply(&[left, joined]);
    let p = both.iter().find(|r| r.kind == "participant").unwrap();
    let state: Value = serde_json::from_str(&p.state).unwrap();
    assert_eq!(
        state["sessions"].as_array().unwrap().len(),
        1,
        "paired: {state}"
    );
    assert!(!state["sessions"][0]["join_time"].is_null());
    assert_eq!(p.status.as_deref(), Some("left"));
}
