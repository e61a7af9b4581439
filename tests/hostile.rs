//! One bad event never costs another: hostile values (NUL, very long random strings, odd Unicode)
//! in every field zoomhook extracts, indexes or syncs, sent among valid traffic, on both
//! backends. Every valid event is acknowledged and stored, every hostile one is stored verbatim
//! or refused with a 4xx (never a 5xx), lookups by the hostile values stay exact, and entity sync
//! reaches the log head.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use rand::RngExt;
use serde_json::{Value, json};

use common::{ADMIN, TestDb, TestServer, config};

/// A random string of `len` characters drawn from everything JSON can carry.
fn random_text(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| match rng.random_range(0..10) {
            0 => '\0',
            1 => char::from_u32(rng.random_range(0x80..0xD7FF)).unwrap_or('x'),
            2 => char::from_u32(rng.random_range(0x1F300..0x1FAFF)).unwrap_or('y'),
            _ => char::from(rng.random_range(b' '..=b'~')),
        })
        .collect()
}

/// A random printable ASCII string (what an HTTP header can carry).
fn random_ascii(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(rng.random_range(b'!'..=b'~')))
        .collect()
}

/// The poison events: a NUL or a very long random value in each field that is extracted,
/// indexed or synced. `(what, body)`.
fn poison_bodies(round: i64) -> Vec<(String, Value)> {
    let now = common::now_secs() * 1000 + round;
    let long = || random_text(3_000 + rand::rng().random_range(0..3_000));
    let meeting = |id: Value, uuid: Value, account: Value, topic: Value| {
        json!({"event": "meeting.started", "event_ts": now, "payload": {"account_id": account,
            "object": {"id": id, "uuid": uuid, "host_id": "h1", "topic": topic, "start_time": "2026-11-27T10:00:00Z"}}})
    };
    let joined = |user_name: Value, email: Value, user_id: Value| {
        json!({"event": "meeting.participant_joined", "event_ts": now, "payload": {"account_id": "acc",
            "object": {"id": 901, "uuid": "poison-instance==", "host_id": "h1", "topic": "t",
                "participant": {"user_id": user_id, "user_name": user_name, "email": email,
                    "join_time": "2026-11-27T10:01:00Z"}}}})
    };
    let mut out = vec![
        (
            "NUL in event".into(),
            json!({"event": "meeting.\u{0}started", "event_ts": now, "payload": {"object": {"id": 1}}}),
        ),
        (
            "long event".into(),
            json!({"event": long(), "event_ts": now, "payload": {"object": {"id": 1}}}),
        ),
        (
            "NUL in object.id".into(),
            meeting(json!("8\u{0}1"), json!("u1"), json!("a"), json!("t")),
        ),
        (
            "long object.id".into(),
            meeting(json!(long()), json!("u2"), json!("a"), json!("t")),
        ),
        (
            "NUL in uuid".into(),
            meeting(json!(902), json!("u\u{0}3"), json!("a"), json!("t")),
        ),
        (
            "long uuid".into(),
            meeting(json!(903), json!(long()), json!("a"), json!("t")),
        ),
        (
            "NUL in account_id".into(),
            meeting(json!(904), json!("u5"), json!("a\u{0}"), json!("t")),
        ),
        (
            "long account_id".into(),
            meeting(json!(905), json!("u6"), json!(long()), json!("t")),
        ),
        (
            "NUL in topic".into(),
            json!({"event": "meeting.created", "event_ts": now, "payload": {"account_id": "a",
            "object": {"id": 906, "host_id": "h\u{0}", "topic": "top\u{0}ic", "start_time": "2026-11-27T10:00:00Z"}}}),
        ),
        (
            "long host_id".into(),
            json!({"event": "meeting.created", "event_ts": now, "payload": {"account_id": "a",
            "object": {"id": 907, "host_id": long(), "topic": long(), "start_time": "2026-11-27T10:00:00Z"}}}),
        ),
        (
            "NUL in user_name".into(),
            joined(json!("Eve\u{0}"), json!("e@x"), json!("16778240")),
        ),
        (
            "NUL in email".into(),
            joined(json!("Eve"), json!("e\u{0}@x"), json!("16778241")),
        ),
        (
            "long user_name".into(),
            joined(json!(long()), json!(long()), json!(long())),
        ),
        (
            "odd Unicode".into(),
            meeting(
                json!("\u{202E}\u{FEFF}𝔪"),
                json!("\u{FFFD}"),
                json!("\u{0301}"),
                json!("🎉\u{200D}"),
            ),
        ),
    ];
    out.push((
        "NUL as an object key".into(),
        json!({"event": "user.updated", "event_ts": now, "payload": {"object": {"id": "u\u{0}", "a\u{0}b": 1}}}),
    ));
    out
}

/// A valid, distinct meeting event.
fn valid_body(n: usize) -> Value {
    json!({"event": "meeting.started", "event_ts": common::now_secs() * 1000 + n as i64,
        "payload": {"account_id": "acc", "object": {"id": 7_000_000 + n, "uuid": format!("valid-{n}=="),
            "host_id": "h1", "topic": format!("Valid {n}"), "start_time": "2026-11-27T10:00:00Z"}}})
}

enum Sent {
    Valid(Vec<u8>),
    Poison(String, Vec<u8>),
    Publish(String),
}

async fn send(server: &TestServer, item: &Sent) -> (u16, Value) {
    let response = match item {
        Sent::Valid(body) | Sent::Poison(_, body) => server.send(body).await,
        Sent::Publish(key) => server
            .http
            .post(server.url("/api/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"event": "case.updated", "payload": {"object": {"id": "C-1"}}, "idempotency_key": key}))
            .send()
            .await
            .expect("publish"),
    };
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn hostile_traffic_never_costs_a_valid_event(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let mut items: Vec<Sent> = (0..240)
        .map(|n| Sent::Valid(valid_body(n).to_string().into_bytes()))
        .collect();
    for round in 0..3 {
        for (what, body) in poison_bodies(round as i64) {
            // Spread through the valid traffic so poison shares group commits with it.
            items.insert(
                (round * 80 + items.len() / 7) % items.len(),
                Sent::Poison(what, body.to_string().into_bytes()),
            );
        }
        items.push(Sent::Publish(random_text(4_000)));
        items.push(Sent::Publish(random_ascii(5_000)));
    }
    let answers: Vec<(u16, Value)> = futures_util::stream::iter(items.iter())
        .map(|item| send(&server, item))
        .buffered(48)
        .collect()
        .await;

    let mut poison_stored = Vec::new();
    for (item, (status, answer)) in items.iter().zip(&answers) {
        match item {
            Sent::Valid(body) => {
                assert_eq!(
                    *status, 200,
                    "a valid event was answered {status}: {answer}"
                );
                let id = answer["id"].as_str().expect("id");
                assert!(
                    raw_body(&server, id).await == *body,
                    "valid event {id} stored byte for byte"
                );
            }
            Sent::Poison(what, body) => {
                assert!(*status < 500, "{what}: answered {status} {answer}");
                if *status == 200 && answer["status"] == "accepted" {
                    poison_stored.push((
                        what.clone(),
                        body.clone(),
                        answer["id"].as_str().expect("id").to_owned(),
                    ));
                }
            }
            Sent::Publish(_) => assert!(
                *status < 500,
                "publish with a hostile key: {status} {answer}"
            ),
        }
    }
    // Every stored poison event is stored byte for byte.
    for (what, body, id) in &poison_stored {
        assert!(
            raw_body(&server, id).await == *body,
            "{what}: stored byte for byte"
        );
    }
    assert_eq!(
        poison_stored.len(),
        3 * poison_bodies(0).len(),
        "zoomhook stores hostile events rather than refusing them"
    );
    wait_for_sync_head(&server).await;
    assert_eq!(
        server.api("/api/v1/sync/quarantine").await["data"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "storable forms leave nothing for sync to refuse"
    );
    lookups_by_hostile_values_are_exact(&server).await;
    server.stop().await;
}

/// The stored body of event `id`, byte for byte.
async fn raw_body(server: &TestServer, id: &str) -> Vec<u8> {
    let response = server
        .http
        .get(server.url(&format!("/api/v1/events/{id}/raw")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("raw");
    assert_eq!(response.status(), 200, "event {id}");
    response.bytes().await.expect("bytes").to_vec()
}

/// Waits until the sync reader has consumed the whole log.
async fn wait_for_sync_head(server: &TestServer) {
    for _ in 0..400 {
        let status = server.api("/api/v1/sync").await;
        if status["lag"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "sync did not reach the log head: {}",
        server.api("/api/v1/sync").await
    );
}

/// Entities and events are found by the very values that had to be made storable.
async fn lookups_by_hostile_values_are_exact(server: &TestServer) {
    let encode = |v: &str| url_escape(v);
    let long_id = "9".repeat(4_000);
    let body = json!({"event": "meeting.created", "event_ts": 1, "payload": {"object": {"id": long_id, "topic": "Long\u{0}"}}});
    assert_eq!(server.send(body.to_string().as_bytes()).await.status(), 200);
    wait_for_sync_head(server).await;
    let events = server
        .api(&format!("/api/v1/events?entity={}", encode(&long_id)))
        .await;
    assert_eq!(events["data"].as_array().map(Vec::len), Some(1), "{events}");
    let shown_id = events["data"][0]["object_id"]
        .as_str()
        .expect("object_id")
        .to_owned();
    assert!(shown_id.len() < 400, "the stored id is bounded");
    let meeting = server
        .api(&format!("/api/v1/meetings/{}", encode(&long_id)))
        .await;
    assert_eq!(meeting["name"], "Long\u{FFFD}", "{meeting}");
    // The bounded form shown by the API works as a lookup value too.
    let again = server
        .api(&format!("/api/v1/events?entity={}", encode(&shown_id)))
        .await;
    assert_eq!(again["data"].as_array().map(Vec::len), Some(1));
    let participants = server
        .api("/api/v1/meeting-instances/poison-instance==/participants")
        .await;
    let names: Vec<&str> = participants["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.len() >= 3,
        "one participant per identity, hostile ones included: {names:?}"
    );
    assert!(
        names.contains(&"Eve\u{FFFD}"),
        "a NUL in a name is shown as U+FFFD: {names:?}"
    );
    // A NUL in an admin lookup is a 404 (in a path) or a 400 (in a pattern), on both backends
    // alike; as a list filter it matches nothing. Never a 5xx.
    for (path, expected) in [
        ("/api/v1/events/%00", 404),
        ("/api/v1/meetings/%00", 404),
        ("/api/v1/meeting-instances/%00", 404),
        ("/api/v1/subscriptions/%00", 404),
        ("/api/v1/deliveries/%00", 404),
        ("/api/v1/events?event=a%00", 400),
    ] {
        let status = server
            .http
            .get(server.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET")
            .status();
        assert_eq!(status.as_u16(), expected, "{path}");
    }
    for path in [
        "/api/v1/events?entity=%00",
        "/api/v1/meetings?host=%00",
        "/api/v1/users?email=a%00",
    ] {
        let page = server.api(path).await;
        assert_eq!(
            page["data"].as_array().map(Vec::len),
            Some(0),
            "{path}: {page}"
        );
    }
}

/// Percent-encodes every byte that is not unreserved.
fn url_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

both_backends!(hostile_traffic_never_costs_a_valid_event);

/// Runs one statement directly against the test's database (to corrupt stored state).
async fn execute_directly(db: &TestDb, sql: &str) {
    match db.sqlite_path() {
        Some(path) => {
            // Entities live in the state database beside the log file.
            let state = zoomhook::store::sqlite::state_path(&path);
            let conn = rusqlite::Connection::open(state).expect("open sqlite");
            conn.execute_batch(sql).expect("execute");
        }
        None => {
            let client = db.pg_client().await;
            client.batch_execute(sql).await.expect("execute");
        }
    }
}

fn meeting_event(event: &str, id: i64, topic: &str, ts: i64) -> Vec<u8> {
    json!({"event": event, "event_ts": ts, "payload": {"account_id": "acc",
        "object": {"id": id, "host_id": "h1", "topic": topic, "start_time": "2026-11-27T10:00:00Z"}}})
    .to_string()
    .into_bytes()
}

/// An event that cannot be applied (here: the stored document it must merge into is corrupt) is
/// quarantined after retries — recorded, visible in the API and as an operational event — and
/// sync goes on with everything after it.
async fn an_event_sync_cannot_apply_is_quarantined_and_sync_goes_on(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let ts = common::now_secs() * 1000;
    assert_eq!(
        server
            .send(&meeting_event("meeting.created", 5551, "A", ts))
            .await
            .status(),
        200
    );
    wait_for_sync_head(&server).await;
    execute_directly(
        &db,
        "UPDATE sync_entities SET doc = 'not a document' WHERE kind = 'meeting' AND key = '5551'",
    )
    .await;

    let update = server
        .send(&meeting_event("meeting.updated", 5551, "B", ts + 1))
        .await;
    let update_id = update.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for n in 0..5 {
        let created = meeting_event("meeting.created", 5552 + n, "after", ts + 2 + n);
        assert_eq!(server.send(&created).await.status(), 200);
    }
    wait_for_sync_head(&server).await;

    let quarantined = server.api("/api/v1/sync/quarantine").await;
    let entries = quarantined["data"].as_array().expect("data");
    assert_eq!(entries.len(), 1, "{quarantined}");
    assert_eq!(entries[0]["event_id"], update_id.as_str());
    assert_eq!(entries[0]["event"], "meeting.updated");
    assert!(
        entries[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unreadable")),
        "{quarantined}"
    );
    for n in 0..5 {
        let meeting = server.api(&format!("/api/v1/meetings/{}", 5552 + n)).await;
        assert_eq!(
            meeting["name"], "after",
            "events after the quarantined one are applied"
        );
    }
    let notices = server
        .api("/api/v1/events?event=zoomhook.sync.quarantined&include_body=true")
        .await;
    let notices = notices["data"].as_array().expect("data");
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains(&update_id))
    );
    server.stop().await;
}

both_backends!(an_event_sync_cannot_apply_is_quarantined_and_sync_goes_on);
