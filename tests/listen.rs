//! `zoomhook listen`: the real binary forwards a running server's events to a local app, signed
//! exactly as Zoom signs with the local secret and with the original body byte for byte; killed
//! and restarted, it resumes without a gap or a duplicate.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::receiver::Receiver;
use common::{ADMIN, TestDb, TestServer, config, zoom_signature};
use serde_json::{Value, json};

const LOCAL_SECRET: &str = "my-local-dev-secret";

fn start_listen(server: &TestServer, receiver: &Receiver, state: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args(["listen", "--forward-to", &receiver.url("/webhooks/zoom")])
        .arg("--state-file")
        .arg(state)
        .env("ZOOMHOOK_URL", &server.base)
        .env("ZOOMHOOK_TOKEN", ADMIN)
        .env("ZOOM_WEBHOOK_SECRET_TOKEN", LOCAL_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn zoomhook listen")
}

fn event(n: i64) -> Vec<u8> {
    json!({"event": "meeting.started", "event_ts": common::now_secs() * 1000 + n,
        "payload": {"account_id": "acc", "object": {"id": 4_000 + n, "uuid": format!("l{n}=="), "topic": "Local"}}})
    .to_string()
    .into_bytes()
}

/// Waits until the state file names `seq`.
async fn wait_for_state(state: &std::path::Path, seq: i64) {
    for _ in 0..400 {
        if std::fs::read_to_string(state).is_ok_and(|t| t.trim() == seq.to_string()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("listen did not record seq {seq}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_forwards_signed_originals_and_resumes_after_a_kill() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("listen.state");
    // Before listen starts: a fresh listen begins at the head, so this one is not forwarded.
    assert_eq!(server.send(&event(0)).await.status(), 200);

    let mut listen = start_listen(&server, &receiver, &state);
    // Let it connect (it announces nothing we can read: wait for the stream's client gauge).
    wait_for_stream_client(&server).await;
    let mut sent = Vec::new();
    for n in 1..=3 {
        let body = event(n);
        let answer: Value = server.send(&body).await.json().await.expect("json");
        sent.push((answer["seq"].as_i64().expect("seq"), body));
    }
    receiver.wait_for("/webhooks/zoom", 3).await;
    wait_for_state(&state, sent[2].0).await;
    listen.kill().expect("SIGKILL");
    listen.wait().expect("reap");

    for n in 4..=5 {
        let body = event(n);
        let answer: Value = server.send(&body).await.json().await.expect("json");
        sent.push((answer["seq"].as_i64().expect("seq"), body));
    }
    let mut listen = start_listen(&server, &receiver, &state);
    receiver.wait_for("/webhooks/zoom", 5).await;
    wait_for_state(&state, sent[4].0).await;
    // A moment for anything extra (a repeat) to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = listen.kill();
    let _ = listen.wait();
    let received = receiver.received_at("/webhooks/zoom");
    assert_eq!(
        received.len(),
        5,
        "every event once: no gap, no duplicate across the restart"
    );
    for (got, (seq, body)) in received.iter().zip(&sent) {
        assert!(
            got.body == *body,
            "event {seq}: the original body byte for byte"
        );
        let ts = got.header("x-zm-request-timestamp");
        assert_eq!(
            got.header("x-zm-signature"),
            zoom_signature(LOCAL_SECRET, ts, &got.body),
            "event {seq}: signed as Zoom signs, with the local secret"
        );
    }
    server.stop().await;
}

/// Waits until a stream client is connected to `server`.
async fn wait_for_stream_client(server: &TestServer) {
    for _ in 0..400 {
        let page = server.metrics_page().await;
        if page
            .lines()
            .any(|l| l.starts_with("zoomhook_stream_clients ") && !l.ends_with(" 0"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("listen never connected to the stream");
}
