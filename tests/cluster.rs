//! Several instances on one PostgreSQL: an event posted to one reaches stream clients on the
//! other (LISTEN/NOTIFY), single-reader work (sync, fan-out, the Zoom WebSocket connection) runs
//! on exactly one instance, and `kill -9` of that instance moves all of it to the other: the fake
//! Zoom sees a new connection, the gap is recorded, sync keeps converging and each delivery is
//! still made once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::binary::Binary;
use common::delivery::{eventually, subscribe};
use common::fake_zoom::FakeZoom;
use common::receiver::Receiver;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SOURCE: &str = "live";

fn settings(zoom: &FakeZoom, instance: &str) -> Vec<(String, String)> {
    let mut settings = zoom.source_settings(SOURCE);
    settings.push(("instance_id".into(), instance.into()));
    settings.push(("delivery_allow_cidrs".into(), "127.0.0.0/8".into()));
    settings.push(("delivery_retry_schedule".into(), "200ms,200ms,200ms".into()));
    settings
}

fn in_process(db: &TestDb, settings: &[(String, String)]) -> zoomhook::config::Config {
    let refs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    config(db, &refs)
}

/// The same settings as environment variables, for the real binary.
fn as_env(settings: &[(String, String)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(key, value)| {
            let name = match key.strip_prefix(&format!("sources.{SOURCE}.")) {
                Some(field) => format!(
                    "ZOOMHOOK_SOURCE_{}_{}",
                    SOURCE.to_ascii_uppercase(),
                    field.to_ascii_uppercase()
                ),
                None => format!("ZOOMHOOK_{}", key.to_ascii_uppercase()),
            };
            (name, value.clone())
        })
        .collect()
}

fn event(name: &str, n: i64) -> Vec<u8> {
    let value = zoomhook::zoom::templates::template(name, 1_750_000_000_000 + n).expect("template");
    zoomhook::zoom::templates::to_bytes(&value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_posted_to_one_instance_reaches_stream_clients_on_the_other() {
    let db = TestDb::postgres().await;
    let zoom = FakeZoom::start().await;
    let a = TestServer::start(in_process(&db, &settings(&zoom, "a"))).await;
    let (b, b_state) = TestServer::start_with_state(in_process(&db, &settings(&zoom, "b"))).await;

    // The wake-up itself: B hears of A's append without appending anything. B wakes its
    // followers once when its LISTEN takes effect (for what was committed before); after that,
    // only a notification can wake it — B leads nothing and appends nothing here.
    let mut woken = b_state.log_advanced.subscribe();
    tokio::time::timeout(Duration::from_secs(10), woken.wait_for(|n| *n > 0))
        .await
        .expect("B's LISTEN takes effect")
        .expect("B is running");
    woken.borrow_and_update();
    assert!(
        a.send(&event("meeting.created", 0))
            .await
            .status()
            .is_success()
    );
    tokio::time::timeout(Duration::from_secs(5), woken.changed())
        .await
        .expect("B is notified of A's append")
        .expect("B is running");

    // A stream client on B gets events posted to A, in order.
    let mut ws = b.open_stream("").await;
    let hello = ws.next().await.expect("hello").expect("frame");
    assert!(
        hello.to_text().expect("text").contains("hello"),
        "{hello:?}"
    );
    for n in 1..=20 {
        assert!(
            a.send(&event("meeting.started", n))
                .await
                .status()
                .is_success()
        );
    }
    let mut seqs = Vec::new();
    while seqs.len() < 20 {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame from B")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(text.as_str()).expect("json");
            if value["type"] == "event" || value.get("seq").is_some() {
                seqs.push(value["seq"].as_i64().expect("seq"));
            }
        }
    }
    let expected: Vec<i64> = (seqs[0]..seqs[0] + 20).collect();
    assert_eq!(seqs, expected, "every event once, in order");

    // Exactly one instance leads each role, and both say who.
    let (ready_a, ready_b) = (a.readyz().await, b.readyz().await);
    let leading = |v: &Value| -> Vec<String> {
        v["leading"]
            .as_array()
            .expect("leading")
            .iter()
            .map(|r| r.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        leading(&ready_a),
        ["fanout", "source:live", "sync"],
        "{ready_a}"
    );
    assert!(leading(&ready_b).is_empty(), "{ready_b}");
    let sources = b.api("/api/v1/sources").await;
    let leaders: HashMap<String, String> = sources["leaders"]
        .as_array()
        .expect("leaders")
        .iter()
        .map(|l| {
            (
                l["role"].as_str().unwrap_or_default().to_owned(),
                l["instance"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        leaders.get("sync").map(String::as_str),
        Some("a"),
        "{sources:#}"
    );
    assert_eq!(
        leaders.get("source:live").map(String::as_str),
        Some("a"),
        "{sources:#}"
    );
    let live = b.source_view(SOURCE).await;
    assert_eq!(live["leader"], "a", "{live:#}");
    assert_eq!(
        live["state"], "connected",
        "B reports A's connection: {live:#}"
    );
    assert_eq!(
        zoom.connections().len(),
        1,
        "one connection for the subscription"
    );
    drop((ws, woken, b_state));
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_moves_sync_fan_out_and_the_zoom_connection_to_the_other() {
    let db = TestDb::postgres().await;
    let zoom = FakeZoom::start().await;
    let receiver = Receiver::ok().await;
    let env = as_env(&settings(&zoom, "a"));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut a = Binary::start_with(&db, &env_refs);
    zoom.wait_connected(1).await;
    let b = TestServer::start(in_process(&db, &settings(&zoom, "b"))).await;
    subscribe(
        &b,
        json!({"url": receiver.url("/hook"), "events": ["meeting.*"]}),
    )
    .await;
    let http = reqwest::Client::new();

    // Before: A leads; events posted to B are synced and delivered (by A's fan-out, and by
    // whichever instance claims them).
    for n in 0..10 {
        assert!(
            b.send(&event("meeting.started", n))
                .await
                .status()
                .is_success()
        );
    }
    zoom.send_event(&event("meeting.created", 100));
    receiver.wait_for("/hook", 11).await;
    let ready_a: Value = http
        .get(format!("{}/readyz", a.base))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready_a["instance"], "a");
    assert_eq!(
        ready_a["leading"],
        json!(["fanout", "source:live", "sync"]),
        "{ready_a}"
    );

    // kill -9 A: B takes over every role within seconds.
    a.kill();
    zoom.wait_connected(2).await;
    eventually("B to lead everything", || async {
        let ready = b.readyz().await;
        (ready["leading"] == json!(["fanout", "source:live", "sync"])).then_some(())
    })
    .await;
    // The interval between A's last sign of life and B's connection is one recorded gap.
    let gap = eventually("the failover gap", || async {
        let page = b.api("/api/v1/events?event=zoomhook.source.gap").await;
        page["data"].as_array().and_then(|d| d.first().cloned())
    })
    .await;
    let detail = b
        .api(&format!(
            "/api/v1/events/{}",
            gap["id"].as_str().expect("id")
        ))
        .await;
    let text = detail.to_string();
    assert!(text.contains("moved from instance a to b"), "{detail:#}");
    assert_eq!(zoom.connections().len(), 2, "one new connection, from B");

    // After: events from Zoom's WebSocket (now on B) and from webhooks are synced and delivered.
    let created = event("meeting.created", 200);
    let created_value: Value = serde_json::from_slice(&created).expect("json");
    zoom.send_event(&created);
    for n in 10..20 {
        assert!(
            b.send(&event("meeting.started", n))
                .await
                .status()
                .is_success()
        );
    }
    let meeting_id = match &created_value["payload"]["object"]["id"] {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    eventually("B's sync to apply the new meeting", || async {
        let r = b
            .http
            .get(b.url(&format!("/api/v1/meetings/{meeting_id}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let received = receiver.wait_for("/hook", 22).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = if receiver.count("/hook") > received.len() {
        receiver.received_at("/hook")
    } else {
        received
    };
    let mut ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no event delivered twice");
    assert_eq!(
        total, 22,
        "every event delivered: 20 webhooks + 2 from the WebSocket"
    );
    let log = b.api("/api/v1/sync").await;
    assert_eq!(log["lag"], 0, "sync converged: {log}");
    b.stop().await;
}
