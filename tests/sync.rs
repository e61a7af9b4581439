//! Sync through real interfaces on SQLite and PostgreSQL: the real fixtures through a running
//! server and the entity API, `sync rebuild` equal to incremental state, and restarts in the
//! middle of a large backlog (in process, and `kill -9` of the real binary).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use zoomhook::store::{EntityQuery, EventStore, NewEvent};
use zoomhook::sync::project::EntityRow;
use zoomhook::sync::rules::Kind;

both_backends!(
    fixtures_become_entities_through_the_api,
    rebuild_equals_incremental_state,
    restart_mid_backlog_applies_every_event_exactly_once,
);

/// Polls `check` until it returns `Some`, for up to 15 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    for _ in 0..300 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let response = server
        .http
        .get(server.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn fixtures_become_entities_through_the_api(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    // Sent in event_ts order, as Zoom would: the captured `participant_left` comes after
    // `meeting.ended`.
    let mut files: Vec<(String, Vec<u8>)> = fixtures()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("endpoint"))
        .collect();
    files.sort_by_key(|(_, body)| {
        serde_json::from_slice::<Value>(body).unwrap()["event_ts"].as_i64()
    });
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let ended = names
        .iter()
        .position(|n| *n == "meeting.ended.json")
        .unwrap();
    let left = names
        .iter()
        .position(|n| *n == "meeting.participant_left.json")
        .unwrap();
    assert!(left > ended, "the captured ordering: left after ended");
    for (name, body) in &files {
        assert!(server.send(body).await.status().is_success(), "{name}");
    }
    // And an event type sync does not know: kept in the log, ignored by sync.
    let unknown = br#"{"event":"phone.caller_ringing","event_ts":1700000000000,"payload":{"account_id":"A","object":{"id":"x"}}}"#;
    assert!(server.send(unknown).await.status().is_success());
    // Every check below reads entities: wait until the sync reader has applied the whole log.
    let store = db.open_store().await;
    let head = store.head_seq().await.unwrap();
    eventually("the sync reader to reach the log head", || async {
        let position = store.reader_position(zoomhook::sync::READER).await.ok()?;
        (position.seq >= head).then_some(())
    })
    .await;

    let participants = eventually("attendance of the captured meeting", || async {
        let (status, page) = get(
            &server,
            "/api/v1/meeting-instances/hwkAADUySwyG3GyUkqc0vA==/participants",
        )
        .await;
        (status == 200 && page["data"][0]["sessions"][0]["leave_time"].is_string()).then_some(page)
    })
    .await;
    let jan = &participants["data"][0];
    assert_eq!(participants["data"].as_array().unwrap().len(), 1);
    assert_eq!(jan["name"], "Jan");
    assert_eq!(jan["email"], "jan@example.com");
    assert_eq!(jan["attendance"]["session_count"], 1);
    assert_eq!(
        jan["attendance"]["total_seconds"], 13,
        "12:33:26 → 12:33:39"
    );
    assert_eq!(
        jan["sessions"][0]["leave_reason"],
        "left the meeting. Reason : Host ended the meeting."
    );

    // A string id in meeting.started and a number in meeting.created name the same kind of key.
    let (status, instant) = get(&server, "/api/v1/meetings/86431910364").await;
    assert_eq!(status, 200);
    assert_eq!(instant["name"], "Jan's Zoom Meeting");
    assert_eq!(
        instant["start_time"], "2022-03-23T12:33:26.000Z",
        "a meeting seen only starting shows its last start"
    );
    let (_, instances) = get(&server, "/api/v1/meetings/86431910364/instances").await;
    let instance = &instances["data"][0];
    assert_eq!(instance["id"], "hwkAADUySwyG3GyUkqc0vA==");
    assert_eq!(instance["status"], "ended");
    assert_eq!(instance["end_time"], "2022-03-23T12:33:39.000Z");

    let (_, meeting) = get(&server, "/api/v1/meetings/1234567890").await;
    assert_eq!(
        meeting["name"], "My Meeting (moved)",
        "meeting.updated applied"
    );
    assert_eq!(meeting["status"], "permanently_deleted");
    assert_eq!(
        meeting["zoom"]["settings"]["join_before_host"],
        json!(false),
        "created's settings kept"
    );

    let (_, recordings) = get(&server, "/api/v1/recordings?meeting_id=1234567890").await;
    let recording = &recordings["data"][0];
    assert_eq!(recording["status"], "trashed", "trashed after completed");
    assert_eq!(
        recording["zoom"]["recording_files"][0]["file_size"],
        3328371
    );
    assert!(
        recording.get("password").is_none(),
        "the recording password is not copied"
    );

    let (_, user) = get(&server, "/api/v1/users/abcD3ojfdbjfg").await;
    assert_eq!(user["email"], "jill@example.com");
    assert_eq!(user["status"], "inactive");
    let (_, inactive) = get(&server, "/api/v1/users?status=inactive").await;
    assert_eq!(inactive["data"].as_array().unwrap().len(), 1);

    let (_, webinar) = get(&server, "/api/v1/webinars/1234567890").await;
    assert_eq!(webinar["name"], "My Webinar");
    let (_, registrants) = get(&server, "/api/v1/webinars/1234567890/registrants").await;
    assert_eq!(registrants["data"][0]["status"], "approved");
    assert_eq!(registrants["data"][0]["email"], "jchill@example.com");

    let (_, emoji) = get(&server, "/api/v1/meetings/987654321").await;
    assert_eq!(emoji["name"], "Équipe 🚀 — réunion «hebdo» 会议");

    // Filters and errors.
    let (_, by_host) = get(&server, "/api/v1/meetings?host=tUo7WohjTs6ELvl9WR3JAA").await;
    let ids: Vec<&str> = by_host["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["86431910364"]);
    let (status, _) = get(&server, "/api/v1/meetings/999").await;
    assert_eq!(status, 404);
    let (status, error) = get(&server, "/api/v1/meetings?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(error["detail"].as_str().unwrap().contains("since"));

    // The gauge is set just after the reader's batch commits.
    eventually("a sync lag of 0 in /metrics", || async {
        let metrics = server.metrics_page().await;
        metrics.contains("zoomhook_sync_lag_events 0").then_some(())
    })
    .await;
    server.stop().await;
}

/// Every entity row of every kind.
async fn snapshot(store: &dyn EventStore) -> Vec<EntityRow> {
    let mut all = Vec::new();
    for kind in Kind::ALL {
        let mut after = None;
        loop {
            let page = store
                .list_entities(&EntityQuery {
                    kind: kind.as_str().into(),
                    after_key: after.clone(),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            after = page.last().map(|r| r.key.clone());
            let done = page.len() < 1000;
            all.extend(page);
            if done {
                break;
            }
        }
    }
    all
}

/// `meetings` lifecycles: created, updated, started, joins and leaves, ended, recording, with a
/// deliberately late update and a leave that arrives before its join.
fn lifecycle_events(meetings: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for m in 0..meetings {
        let id = 81_000_000_000 + m as i64;
        let uuid = format!("uuid-{m}==");
        let ts = 1_700_000_000_000 + (m as i64) * 100_000;
        let object = |extra: Value| {
            let mut o = json!({"id": id.to_string(), "uuid": uuid, "topic": format!("Meeting {m} (final)"), "host_id": format!("host-{}", m % 3), "type": 2});
            if let (Value::Object(o), Value::Object(extra)) = (&mut o, extra) {
                o.extend(extra);
            }
            o
        };
        let ev = |name: &str, at: i64, object: Value| {
            serde_json::to_vec(&json!({"event": name, "event_ts": at, "payload": {"account_id": "A", "object": object}})).unwrap()
        };
        out.push(ev(
            "meeting.updated",
            ts + 5,
            json!({"id": id, "topic": format!("Meeting {m} (final)")}),
        ));
        out.push(ev("meeting.created", ts, json!({"id": id, "topic": format!("Meeting {m}"), "host_id": format!("host-{}", m % 3), "start_time": "2026-11-23T10:00:00Z", "duration": 30})));
        out.push(ev(
            "meeting.started",
            ts + 10,
            object(json!({"start_time": zoomhook::core::clock::rfc3339(ts + 10)})),
        ));
        for p in 0..3 {
            let person = |extra: Value| {
                let mut o = json!({"user_name": format!("P{p}"), "email": format!("p{p}@example.com"), "user_id": format!("{p}")});
                if let (Value::Object(o), Value::Object(extra)) = (&mut o, extra) {
                    o.extend(extra);
                }
                o
            };
            let left = ev(
                "meeting.participant_left",
                ts + 40 + p,
                object(
                    json!({"participant": person(json!({"leave_time": zoomhook::core::clock::rfc3339(ts + 40_000)}))}),
                ),
            );
            let joined = ev(
                "meeting.participant_joined",
                ts + 20 + p,
                object(
                    json!({"participant": person(json!({"join_time": zoomhook::core::clock::rfc3339(ts + 20_000)}))}),
                ),
            );
            out.push(left);
            out.push(joined);
        }
        out.push(ev(
            "meeting.ended",
            ts + 50,
            object(json!({"end_time": zoomhook::core::clock::rfc3339(ts + 50_000)})),
        ));
        out.push(ev("recording.completed", ts + 60, json!({"id": id, "uuid": uuid, "total_size": 10, "recording_files": [{"id": "f", "file_size": 10}]})));
    }
    out
}

async fn rebuild_equals_incremental_state(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let events = lifecycle_events(20);
    for body in &events {
        assert!(server.send(body).await.status().is_success());
    }
    let store = db.open_store().await;
    let head = store.head_seq().await.unwrap();
    assert_eq!(head, events.len() as i64);
    eventually("sync to reach the head", || {
        let store = store.clone();
        async move {
            (store
                .reader_position(zoomhook::sync::READER)
                .await
                .unwrap()
                .seq
                == head)
                .then_some(())
        }
    })
    .await;
    server.stop().await;
    let incremental = snapshot(store.as_ref()).await;
    assert!(
        incremental.len() > 20 * 5,
        "meetings, instances, participants, recordings: {}",
        incremental.len()
    );
    let meeting = incremental
        .iter()
        .find(|r| r.kind == "meeting" && r.key == "81000000000")
        .unwrap();
    assert!(
        meeting.state.contains("Meeting 0 (final)"),
        "the late update was not overwritten: {}",
        meeting.state
    );

    let position = zoomhook::sync::rebuild(store.as_ref(), |_, _| {})
        .await
        .unwrap();
    assert_eq!((position.seq, position.applied), (head, head));
    assert_eq!(
        snapshot(store.as_ref()).await,
        incremental,
        "rebuild equals incremental state"
    );

    // The CLI does the same against the database.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args(["sync", "rebuild", "--database", &db.url])
        .env("ZOOMHOOK_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        snapshot(store.as_ref()).await,
        incremental,
        "`zoomhook sync rebuild` equals incremental state"
    );
}

async fn restart_mid_backlog_applies_every_event_exactly_once(db: TestDb) {
    let events = lifecycle_events(300);
    let total = events.len() as i64;
    {
        let store = db.open_store().await;
        let batch: Vec<NewEvent> = events
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let env = zoomhook::zoom::envelope::Envelope::parse(body).unwrap();
                NewEvent::from_envelope(&env, "zoom", Bytes::copy_from_slice(body), None, i as i64)
            })
            .collect();
        for chunk in batch.chunks(500) {
            store
                .append_batch(chunk.to_vec(), 86_400_000)
                .await
                .unwrap();
        }
        assert_eq!(store.head_seq().await.unwrap(), total);
        // Part of the backlog, then the process "stops".
        for _ in 0..3 {
            zoomhook::sync::apply_batch(store.as_ref(), 250)
                .await
                .unwrap();
        }
        let position = store.reader_position(zoomhook::sync::READER).await.unwrap();
        assert_eq!((position.seq, position.applied), (750, 750));
    }
    let store = db.open_store().await;
    let position = zoomhook::sync::catch_up(store.as_ref()).await.unwrap();
    assert_eq!(position.seq, total, "none skipped");
    assert_eq!(position.applied, total, "none applied twice");
    let resumed = snapshot(store.as_ref()).await;

    // The same log applied in one go, in memory, gives the same state.
    let mut expected = zoomhook::sync::EntitySet::default();
    let stored = store
        .list_events(&zoomhook::store::EventQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1000);
    let mut all = stored;
    while (all.len() as i64) < total {
        let after = all.last().unwrap().seq;
        all.extend(
            store
                .list_events(&zoomhook::store::EventQuery {
                    after_seq: Some(after),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap(),
        );
    }
    expected.apply_entries(all.iter().map(|e| zoomhook::sync::rules::LogEntry {
        seq: e.seq,
        event: &e.event,
        event_ts: e.event_ts,
        received_at: e.received_at,
        body: &e.body,
    }));
    assert_eq!(resumed, expected.all_rows());
}
