//! The Zoom WebSocket source against a fake Zoom (OAuth token endpoint + WebSocket server
//! speaking Zoom's frames): events land in the log and in entity state, heartbeats go out on
//! time, an "Invalid Token" frame brings a new token and a reconnect, and every interval without
//! a connection — a dropped connection, a silent one, a restart — is recorded as exactly one gap
//! with the right bounds. The access token appears in no log line, API answer or metric.

mod common;

use std::time::Duration;

use common::fake_zoom::{self, FakeZoom};
use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use zoomhook::core::clock::{now_millis, parse_time};

const SOURCE: &str = "live";

fn ws_config(db: &TestDb, zoom: &FakeZoom, extra: &[(&str, &str)]) -> zoomhook::config::Config {
    let mut settings = zoom.source_settings(SOURCE);
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    config(db, &refs)
}

/// A Zoom event body as Zoom would put it in `content`: pretty-printed, so byte-for-byte storage
/// is visible (a re-serialised copy would be compact).
fn event(name: &str, ts: i64) -> (Vec<u8>, Value) {
    let value = zoomhook::zoom::templates::template(name, ts).expect("template");
    let body = serde_json::to_vec_pretty(&value).expect("json");
    (body, value)
}

/// Polls the log until `f` holds of the events of `event` (at most 20 s).
async fn wait_log(server: &TestServer, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = server.all_events().await;
        if f(&events) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; log: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gaps(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == "zoomhook.source.gap")
        .map(|e| {
            let body: Value = serde_json::from_str(e["body"].as_str().unwrap_or("{}"))
                .or_else(|_| serde_json::from_value(e["body"].clone()))
                .expect("gap body");
            body["payload"]["object"].clone()
        })
        .collect()
}

fn ms(gap: &Value, field: &str) -> i64 {
    parse_time(gap[field].as_str().expect("time")).expect("RFC 3339")
}

async fn events_over_the_websocket_land_in_the_log_and_in_entity_state(db: TestDb) {
    let zoom = FakeZoom::start().await;
    let server = TestServer::start(ws_config(&db, &zoom, &[("instance_id", "node-a")])).await;
    zoom.wait_connected(1).await;
    let ts = now_millis();
    let (started, started_value) = event("meeting.started", ts);
    let (joined, _) = event("meeting.participant_joined", ts + 1);
    zoom.send_event(&started);
    // Zoom's WebSocket re-sends nothing, but the same event may also arrive on a webhook
    // subscription, or twice: the semantic key keeps one entry.
    zoom.send_event(&started);
    zoom.send_event(&joined);
    let events = wait_log(&server, "two events from the WebSocket", |events| {
        events.iter().filter(|e| e["source"] == SOURCE).count() >= 2
    })
    .await;
    let from_ws: Vec<&Value> = events.iter().filter(|e| e["source"] == SOURCE).collect();
    assert_eq!(from_ws.len(), 2, "one entry per event: {from_ws:#?}");
    assert_eq!(from_ws[0]["event"], "meeting.started");
    assert_eq!(from_ws[1]["event"], "meeting.participant_joined");
    let raw = server
        .http
        .get(server.url(&format!(
            "/api/v1/events/{}/raw",
            from_ws[0]["id"].as_str().expect("id")
        )))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("raw");
    assert_eq!(
        raw.bytes().await.expect("bytes").as_ref(),
        started.as_slice()
    );

    // Entity state: sync applies WebSocket events like webhook ones.
    let meeting_id = match &started_value["payload"]["object"]["id"] {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = server
            .http
            .get(server.url(&format!("/api/v1/meetings/{meeting_id}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET meeting");
        if response.status().is_success() {
            let meeting: Value = response.json().await.expect("json");
            assert_eq!(
                meeting["name"], started_value["payload"]["object"]["topic"],
                "{meeting:#}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the meeting {meeting_id} was never synced: {:#}",
            server.api("/api/v1/meetings").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Heartbeats every 200 ms (configured), never late by more than one period.
    zoom.wait_for("6 heartbeats", |z| z.connections()[0].heartbeats.len() >= 6)
        .await;
    let beats = zoom.connections()[0].heartbeats.clone();
    for pair in beats.windows(2) {
        let interval = pair[1] - pair[0];
        assert!(
            (100..=400).contains(&interval),
            "heartbeat interval {interval} ms (configured 200 ms): {beats:?}"
        );
    }

    let live = server.source_view(SOURCE).await;
    assert_eq!(live["kind"], "zoom_websocket", "{live:#}");
    assert_eq!(live["state"], "connected", "{live:#}");
    assert_eq!(live["leader"], "node-a", "{live:#}");
    assert_eq!(live["subscription_id"], fake_zoom::SUBSCRIPTION_ID);
    assert!(live["connected_since"].is_string(), "{live:#}");
    assert!(live["last_frame_at"].is_string(), "{live:#}");
    assert_eq!(
        live["recent_gaps"],
        Value::Array(vec![]),
        "a first start is no gap"
    );
    let webhook = server.source_view("zoom").await;
    assert_eq!(webhook["kind"], "webhook");
    assert_eq!(webhook["path"], "/webhooks/zoom");
    // A WebSocket source does not take webhooks.
    let refused = server
        .post_signed(&format!("/webhooks/zoom/{SOURCE}"), SECRET, &started, None)
        .await;
    assert_eq!(refused.status().as_u16(), 404);
    server.stop().await;
}

async fn a_dropped_and_a_silent_connection_are_each_one_gap_with_the_right_bounds(db: TestDb) {
    let zoom = FakeZoom::start().await;
    let server = TestServer::start(ws_config(&db, &zoom, &[])).await;
    zoom.wait_connected(1).await;
    // A stream client following only gaps (how an operator's backfill job would listen).
    let mut stream = server.open_stream("?events=zoomhook.source.gap").await;
    let hello = stream.next().await.expect("hello").expect("frame");
    assert!(hello.to_text().expect("text").contains("hello"));

    // 1. Zoom drops the connection (no close frame).
    let dropped_at = now_millis();
    zoom.drop_connection();
    zoom.wait_connected(2).await;
    let events = wait_log(&server, "the first gap", |e| gaps(e).len() == 1).await;
    let gap = &gaps(&events)[0];
    let reconnected = zoom.connections()[1].opened_at;
    let (from, to) = (ms(gap, "from"), ms(gap, "to"));
    assert!(
        from >= dropped_at && from <= reconnected,
        "gap {gap:#} dropped at {dropped_at}"
    );
    assert!(
        (to - reconnected).abs() <= 1000,
        "gap {gap:#} reconnected at {reconnected}"
    );
    assert_eq!(gap["source"], SOURCE);
    assert_eq!(gap["duration_ms"].as_i64(), Some(to - from));
    let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the gap reaches the stream client")
        .expect("open")
        .expect("frame");
    let frame: Value = serde_json::from_str(frame.to_text().expect("text")).expect("json");
    assert_eq!(frame["event"], "zoomhook.source.gap", "{frame:#}");
    assert_eq!(frame["body"]["payload"]["object"]["from"], gap["from"]);
    drop(stream);

    // 2. Zoom goes silent: the connection stays open but nothing comes (not even heartbeat
    // answers). The gap starts at the last frame, before the silence, not when it was noticed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last_answer = zoom.connections()[1]
        .heartbeats
        .last()
        .copied()
        .unwrap_or(reconnected);
    let silent_at = now_millis();
    zoom.go_silent();
    zoom.wait_connected(3).await;
    let events = wait_log(&server, "the second gap", |e| gaps(e).len() == 2).await;
    let all = gaps(&events);
    let gap = &all[1];
    let reconnected = zoom.connections()[2].opened_at;
    let (from, to) = (ms(gap, "from"), ms(gap, "to"));
    assert!(
        from <= silent_at && from >= last_answer - 1000,
        "gap {gap:#}: silent at {silent_at}, last heartbeat answered at {last_answer}"
    );
    assert!(to - from >= 1500, "at least the silence timeout: {gap:#}");
    assert!(
        (to - reconnected).abs() <= 1000,
        "gap {gap:#} reconnected at {reconnected}"
    );
    assert!(
        gap["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no frame")),
        "{gap:#}"
    );

    // Nothing else counted as a gap, and the API and metrics say the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gaps(&server.all_events().await).len(), 2);
    let live = server.source_view(SOURCE).await;
    let recent = live["recent_gaps"].as_array().expect("gaps");
    assert_eq!(recent.len(), 2, "{live:#}");
    assert_eq!(recent[0]["from"], gap["from"], "newest first");
    let metrics = server.metrics_page().await;
    assert!(
        metrics.contains(&format!(
            "zoomhook_source_gaps_total{{source=\"{SOURCE}\"}} 2"
        )),
        "{metrics}"
    );

    // 3. A restart: the interval the server was down is a gap too, found through the stored
    // last-alive time.
    server.stop().await;
    let stopped_at = now_millis();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = TestServer::start(ws_config(&db, &zoom, &[])).await;
    zoom.wait_connected(4).await;
    let events = wait_log(&server, "the restart gap", |e| gaps(e).len() == 3).await;
    let gap = &gaps(&events)[2];
    let reconnected = zoom.connections()[3].opened_at;
    let (from, to) = (ms(gap, "from"), ms(gap, "to"));
    assert!(
        from <= stopped_at && from >= stopped_at - 6000,
        "{gap:#} stopped at {stopped_at}"
    );
    assert!((to - reconnected).abs() <= 1000, "{gap:#}");
    assert!(
        gap["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not running")),
        "{gap:#}"
    );
    server.stop().await;
}

async fn an_invalid_token_frame_brings_a_new_token_and_a_reconnect(db: TestDb) {
    let zoom = FakeZoom::start().await;
    let server = TestServer::start(ws_config(&db, &zoom, &[])).await;
    zoom.wait_connected(1).await;
    assert_eq!(zoom.tokens_issued().len(), 1);
    zoom.invalidate_token();
    zoom.wait_connected(2).await;
    let issued = zoom.tokens_issued();
    let connections = zoom.connections();
    assert_eq!(issued.len(), 2, "exactly one new token");
    assert_eq!(connections[0].token, issued[0]);
    assert_eq!(
        connections[1].token, issued[1],
        "the reconnect uses the new token"
    );
    assert_eq!(
        zoom.rejected_tokens(),
        0,
        "the old token was not tried again"
    );
    assert_eq!(zoom.refused_token_requests(), 0);
    // Events flow on the new connection.
    let (body, _) = event("meeting.ended", now_millis());
    zoom.send_event(&body);
    wait_log(&server, "the event after the reconnect", |e| {
        e.iter()
            .any(|e| e["source"] == SOURCE && e["event"] == "meeting.ended")
    })
    .await;
    server.stop().await;
}

both_backends!(
    events_over_the_websocket_land_in_the_log_and_in_entity_state,
    a_dropped_and_a_silent_connection_are_each_one_gap_with_the_right_bounds,
    an_invalid_token_frame_brings_a_new_token_and_a_reconnect,
    hostile_frames_never_cost_the_next_event,
);

/// Hostile frames from the WebSocket — not JSON, not an object, a `message` without an event, an
/// event with NUL bytes and odd Unicode in every extracted field, a frame over the size limit —
/// never cost the events after them: the connection stays (or comes back) and the next event
/// lands.
async fn hostile_frames_never_cost_the_next_event(db: TestDb) {
    let zoom = FakeZoom::start().await;
    let server = TestServer::start(ws_config(&db, &zoom, &[("max_body_bytes", "65536")])).await;
    zoom.wait_connected(1).await;
    for frame in [
        "not json",
        "[1,2,3]",
        r#"{"module":"message"}"#,
        r#"{"module":"message","content":""}"#,
        r#"{"module":"message","content":"{\"no_event\":1}"}"#,
        r#"{"module":"message","content":"[\"array\"]"}"#,
        r#"{"module":"message","content":42}"#,
        r#"{"module":"mystery","success":false,"content":"something odd"}"#,
    ] {
        zoom.send_frame(frame);
    }
    let nul = r"a\u0000b";
    let hostile = format!(
        r#"{{"event":"meeting.started{nul}","event_ts":1,"payload":{{"account_id":"{nul}","object":{{"id":"{nul}{long}","uuid":"\ud83d\ude00{nul}","topic":"{nul}"}}}}}}"#,
        long = "x".repeat(5000)
    );
    zoom.send_event(hostile.as_bytes());
    let (after, _) = event("meeting.ended", now_millis());
    zoom.send_event(&after);
    let events = wait_log(&server, "the event after the hostile frames", |e| {
        e.iter()
            .any(|e| e["event"] == "meeting.ended" && e["source"] == SOURCE)
    })
    .await;
    let from_ws: Vec<&Value> = events.iter().filter(|e| e["source"] == SOURCE).collect();
    assert_eq!(
        from_ws.len(),
        2,
        "the hostile event and the next one: {from_ws:#?}"
    );
    // A frame over the limit ends the connection (the WebSocket layer refuses it); the source
    // reconnects, records the gap, and the next event lands.
    zoom.send_frame(&format!(
        r#"{{"module":"message","content":"{}"}}"#,
        "y".repeat(200_000)
    ));
    zoom.wait_connected(2).await;
    let (last, _) = event("meeting.deleted", now_millis());
    zoom.send_event(&last);
    wait_log(&server, "the event after the oversized frame", |e| {
        e.iter()
            .any(|e| e["event"] == "meeting.deleted" && e["source"] == SOURCE)
    })
    .await;
    let metrics = server.metrics_page().await;
    assert!(
        metrics.contains("zoomhook_source_events_total{source=\"live\",outcome=\"invalid\"}"),
        "{metrics}"
    );
    server.stop().await;
}

/// Wrong credentials: no connection, the refusal is visible in `/api/v1/sources`, and the
/// source keeps retrying (with backoff) rather than giving up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_reported_and_retried() {
    let db = TestDb::sqlite();
    let zoom = FakeZoom::start().await;
    let server = TestServer::start(ws_config(
        &db,
        &zoom,
        &[(&format!("sources.{SOURCE}.client_secret"), "not-the-secret")],
    ))
    .await;
    zoom.wait_for("two refused token requests", |z| {
        z.refused_token_requests() >= 2
    })
    .await;
    assert!(zoom.connections().is_empty());
    let live = server.source_view(SOURCE).await;
    assert_ne!(live["state"], "connected", "{live:#}");
    let error = live["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Invalid client_id or client_secret"),
        "{live:#}"
    );
    assert!(!error.contains("not-the-secret"), "{live:#}");
    server.stop().await;
}

/// The real binary, logging at debug level through a connect, an invalid token and a dropped
/// connection: no access token in any log line, API answer or metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_appears_in_no_log_line() {
    let db = TestDb::sqlite();
    let zoom = FakeZoom::start().await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut env: Vec<(String, String)> = zoom
        .source_settings(SOURCE)
        .into_iter()
        .map(|(k, v)| {
            let field = k
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            (
                format!("ZOOMHOOK_SOURCE_{}_{field}", SOURCE.to_ascii_uppercase()),
                v,
            )
        })
        .collect();
    env.push(("ZOOMHOOK_LOG".into(), "debug".into()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .envs(env)
        .env("ZOOMHOOK_ADMIN_TOKEN", ADMIN)
        .env("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET)
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("spawn zoomhook");
    zoom.wait_connected(1).await;
    zoom.invalidate_token();
    zoom.wait_connected(2).await;
    zoom.drop_connection();
    zoom.wait_connected(3).await;
    let addr = {
        let text = std::fs::read_to_string(log.path()).expect("log");
        text.split("listen=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .expect("the listen address is logged")
    };
    let http = reqwest::Client::new();
    let sources = http
        .get(format!("http://{addr}/api/v1/sources"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sources")
        .text()
        .await
        .expect("text");
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(log.path()).expect("log");
    assert!(text.contains("connected to Zoom's WebSocket"), "{text}");
    let issued = zoom.tokens_issued();
    assert_eq!(issued.len(), 2);
    for token in &issued {
        for (name, place) in [
            ("the log", &text),
            ("/api/v1/sources", &sources),
            ("/metrics", &metrics),
        ] {
            assert!(
                !place.contains(token.as_str()),
                "the access token is in {name}"
            );
        }
    }
    assert!(
        !text.contains(fake_zoom::CLIENT_SECRET),
        "the client secret is in the log"
    );
}
