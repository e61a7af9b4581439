//! Guarantee 4 for a meeting's live status: the status that meeting.started / meeting.ended
//! give a meeting (and a recurring series' return to `scheduled`) is the same whatever order
//! and duplication its events arrive in, and what it converges to is what the lifecycle says.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use zoomhook::sync::EntitySet;
use zoomhook::sync::rules::LogEntry;

const MEETING: &str = "85746065432";
const BASE_TS: i64 = 1_700_000_000_000;
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// One generated event: name, `event_ts`, body.
type Event = (&'static str, i64, Vec<u8>);

fn iso(ms: i64) -> String {
    zoomhook::core::clock::rfc3339(ms)
}

/// A meeting of Zoom `type` with `occurrences` that ran (the last possibly still running), as
/// they happened: created, then each occurrence started and (unless `running`) ended.
#[derive(Debug, Clone)]
struct Plan {
    kind: i64,
    ran: usize,
    scheduled: usize,
    running: bool,
    deleted_at_end: bool,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop::sample::select(vec![1_i64, 2, 3, 4, 8]),
        1usize..4,
        0usize..3,
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(kind, ran, extra, running, deleted_at_end)| Plan {
            kind,
            ran,
            scheduled: ran + extra,
            running,
            deleted_at_end,
        })
}

fn events(p: &Plan) -> Vec<Event> {
    let body = |name: &str, ts: i64, object: Value| -> Vec<u8> {
        serde_json::to_vec(&json!({"event": name, "event_ts": ts, "payload": {"account_id": "A", "object": object}}))
            .expect("json")
    };
    let occurrences: Vec<Value> = (0..p.scheduled)
        .map(|i| json!({"occurrence_id": i.to_string(), "start_time": iso(BASE_TS + (i as i64 + 1) * WEEK_MS), "duration": 30, "status": "available"}))
        .collect();
    let mut out = vec![(
        "meeting.created",
        BASE_TS,
        body(
            "meeting.created",
            BASE_TS,
            json!({"id": MEETING.parse::<u64>().unwrap_or_default(), "uuid": "first", "type": p.kind, "topic": "T", "occurrences": occurrences}),
        ),
    )];
    for i in 0..p.ran {
        let start = BASE_TS + (i as i64 + 1) * WEEK_MS;
        let object = json!({"id": MEETING, "uuid": format!("occ-{i}"), "type": p.kind, "topic": "T", "start_time": iso(start)});
        out.push((
            "meeting.started",
            start,
            body("meeting.started", start, object.clone()),
        ));
        if i + 1 < p.ran || !p.running {
            let end = start + 1_800_000;
            let mut ended = object;
            ended["end_time"] = json!(iso(end));
            out.push(("meeting.ended", end, body("meeting.ended", end, ended)));
        }
    }
    if p.deleted_at_end {
        let ts = BASE_TS + 10 * WEEK_MS;
        out.push((
            "meeting.deleted",
            ts,
            body("meeting.deleted", ts, json!({"id": MEETING})),
        ));
    }
    out
}

/// What the lifecycle says the meeting is after all of it.
fn expected(p: &Plan) -> &'static str {
    if p.deleted_at_end {
        "deleted"
    } else if p.running {
        "started"
    } else {
        match p.kind {
            3 | 4 => "scheduled",
            8 if p.scheduled > p.ran => "scheduled",
            _ => "ended",
        }
    }
}

/// The meeting's status and state after applying `arrival`, numbered as the log would.
fn meeting_after(arrival: &[&Event]) -> (Option<String>, Value) {
    let mut set = EntitySet::default();
    set.apply_entries(
        arrival
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
    let row = set
        .all_rows()
        .into_iter()
        .find(|r| r.kind == "meeting")
        .expect("the meeting has a row");
    (
        row.status,
        serde_json::from_str(&row.state).expect("state is JSON"),
    )
}

fn case() -> impl Strategy<Value = (Plan, Vec<usize>, Vec<(Index, Index)>)> {
    plan().prop_flat_map(|p| {
        let n = events(&p).len();
        (
            Just(p),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec((any::<Index>(), any::<Index>()), 0..6),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn live_status_converges_in_any_order_to_what_happened((p, order, dups) in case()) {
        let all = events(&p);
        let in_order = meeting_after(&all.iter().collect::<Vec<_>>());
        let mut arrival: Vec<&Event> = order.iter().map(|&i| &all[i]).collect();
        for (which, at) in &dups {
            let e = &all[which.index(all.len())];
            let at = at.index(arrival.len() + 1);
            arrival.insert(at, e);
        }
        let permuted = meeting_after(&arrival);
        prop_assert_eq!(&in_order, &permuted);
        prop_assert_eq!(in_order.0.as_deref(), Some(expected(&p)), "{:?}", p);
        // The last occurrence is named, and an ended one never carries into a running one.
        let last = &in_order.1["last_instance"];
        let last_uuid = format!("occ-{}", p.ran - 1);
        prop_assert_eq!(last["uuid"].as_str(), Some(last_uuid.as_str()));
        prop_assert_eq!(last["end_time"].is_null(), p.running);
    }
}
