//! The WebSocket stream (`GET /api/v1/stream`), through a real server and a real WebSocket
//! client: live events in order, resuming with `after_seq` without gap or duplicate (also while
//! ingest goes on, and with a filter), a slow client cut off without harm to others, and every
//! refusal answered as JSON before the upgrade.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{StreamExt, stream};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use zoomhook::stream::frames::parse_resume_seq;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest any single wait for a frame may take before the test fails.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A distinct, validly signed webhook body of event `name`; `pad` extra bytes make it large.
fn event_body(name: &str, n: i64, pad: usize) -> Vec<u8> {
    let mut value =
        zoomhook::zoom::templates::template(name, 1_700_000_000_000 + n).expect("template");
    if pad > 0 {
        value["payload"]["object"]["agenda"] = Value::String("x".repeat(pad));
    }
    zoomhook::zoom::templates::to_bytes(&value)
}

/// Sends `count` distinct events numbered from `first`, 16 at a time; each must be acknowledged.
async fn ingest(server: &TestServer, name: &str, first: i64, count: i64, pad: usize) {
    let bodies: Vec<_> = (first..first + count)
        .map(|n| event_body(name, n, pad))
        .collect();
    let statuses: Vec<_> = stream::iter(bodies.iter().map(|b| server.send(b)))
        .buffer_unordered(16)
        .map(|r| r.status())
        .collect()
        .await;
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
}

fn stream_url(server: &TestServer, query: &str) -> String {
    format!(
        "{}/api/v1/stream{query}",
        server.base.replacen("http", "ws", 1)
    )
}

/// Connects with the admin token in the `Authorization` header and reads the hello frame.
async fn connect(server: &TestServer, query: &str) -> (Ws, Value) {
    let mut ws = server.open_stream(query).await;
    let hello = next_frame(&mut ws).await.expect("hello frame");
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

/// The next text frame as JSON; `None` when the server closed (pings are answered in passing).
async fn next_frame(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .expect("a frame within the wait")?;
        match message.ok()? {
            Message::Text(text) => return Some(serde_json::from_str(&text).expect("JSON frame")),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads `count` event frames.
async fn events(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let frame = next_frame(ws).await.expect("an event frame, not a close");
        assert_eq!(frame["type"], "event", "{frame}");
        out.push(frame);
    }
    out
}

fn seqs(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .map(|f| f["seq"].as_i64().expect("seq"))
        .collect()
}

/// Asserts that no frame arrives for a short while (nothing extra, no duplicate).
async fn assert_quiet(ws: &mut Ws) {
    let extra = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    if let Ok(Some(Ok(Message::Text(text)))) = extra {
        panic!("unexpected frame {text}");
    }
}

async fn head(server: &TestServer) -> i64 {
    let page = server.api("/api/v1/events?order=desc&limit=1").await;
    page["data"][0]["seq"].as_i64().unwrap_or(0)
}

async fn live_events_arrive_in_order_with_the_original_body(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    ingest(&server, "meeting.created", 0, 3, 0).await;
    let (mut ws, hello) = connect(&server, "").await;
    assert_eq!(hello["after_seq"], 3, "starts at the head: {hello}");
    assert_eq!(hello["head"], 3);
    ingest(&server, "meeting.started", 10, 1, 0).await;
    ingest(&server, "meeting.ended", 11, 1, 0).await;
    let frames = events(&mut ws, 2).await;
    assert_eq!(seqs(&frames), vec![4, 5]);
    let stored = server.all_events().await;
    for (frame, stored) in frames.iter().zip(&stored[3..]) {
        assert_eq!(frame["id"], stored["id"]);
        assert_eq!(frame["event"], stored["event"]);
        assert_eq!(frame["event_time"], stored["event_time"]);
        assert_eq!(frame["source"], "zoom");
        assert_eq!(frame["received_at"], stored["received_at"]);
        let body: Value =
            serde_json::from_str(stored["body"].as_str().expect("body")).expect("json");
        assert_eq!(frame["body"], body, "the body is JSON, not a string");
    }
    assert_quiet(&mut ws).await;
    server.stop().await;
}

async fn resume_after_a_disconnect_gets_exactly_what_was_missed(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let (mut ws, _) = connect(&server, "").await;
    ingest(&server, "meeting.started", 0, 5, 0).await;
    let last = *seqs(&events(&mut ws, 5).await).last().expect("five");
    drop(ws);
    ingest(&server, "meeting.started", 100, 1000, 0).await;
    let (mut ws, hello) = connect(&server, &format!("?after_seq={last}")).await;
    assert_eq!(hello["after_seq"], last);
    let got = seqs(&events(&mut ws, 1000).await);
    assert_eq!(got, (last + 1..=last + 1000).collect::<Vec<_>>());
    assert_quiet(&mut ws).await;
    server.stop().await;
}

/// The shared tail keeps at most 8 MiB of frames: with 12 MB of large events, a live client is
/// served from the tail while one resuming from the start reads the log, then crosses into the
/// tail — both get every event once, in order, and a filtered one only its events.
async fn a_resume_from_behind_the_shared_tail_crosses_into_it_without_gap(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let (mut live, hello) = connect(&server, "").await;
    let start = hello["after_seq"].as_i64().expect("after_seq");
    // 40 events of ~300 KB: more than the tail's window holds.
    ingest(&server, "meeting.started", 0, 20, 300_000).await;
    ingest(&server, "meeting.ended", 20, 20, 300_000).await;
    let got = seqs(&events(&mut live, 40).await);
    assert_eq!(got, (start + 1..=start + 40).collect::<Vec<_>>());
    let (mut from_start, _) = connect(&server, &format!("?after_seq={start}")).await;
    let (mut filtered, _) =
        connect(&server, &format!("?after_seq={start}&events=meeting.ended")).await;
    // More arrive while the two catch up.
    ingest(&server, "meeting.ended", 40, 5, 300_000).await;
    let got = seqs(&events(&mut from_start, 45).await);
    assert_eq!(got, (start + 1..=start + 45).collect::<Vec<_>>());
    let got = seqs(&events(&mut filtered, 25).await);
    let expected: Vec<i64> = (start + 21..=start + 45).collect();
    assert_eq!(got, expected, "only meeting.ended, each once");
    let got = seqs(&events(&mut live, 5).await);
    assert_eq!(got, (start + 41..=start + 45).collect::<Vec<_>>());
    for ws in [&mut live, &mut from_start, &mut filtered] {
        assert_quiet(ws).await;
    }
    server.stop().await;
}

async fn resume_while_ingest_continues_has_no_gap_and_no_duplicate(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let (mut ws, _) = connect(&server, "").await;
    ingest(&server, "meeting.started", 0, 5, 0).await;
    let last = *seqs(&events(&mut ws, 5).await).last().expect("five");
    drop(ws);
    // Reconnect while the writer is mid-way: the backlog and the live tail overlap.
    let writer = ingest(&server, "meeting.started", 100, 1500, 0);
    let reader = async {
        let started = Instant::now();
        while head(&server).await < last + 300 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (mut ws, _) = connect(&server, &format!("?after_seq={last}")).await;
        let got = seqs(&events(&mut ws, 1500).await);
        (ws, got)
    };
    let ((), (mut ws, got)) = tokio::join!(writer, reader);
    assert_eq!(
        got,
        (last + 1..=last + 1500).collect::<Vec<_>>(),
        "strictly consecutive"
    );
    assert_quiet(&mut ws).await;
    server.stop().await;
}

async fn a_filtered_stream_gets_only_matching_events_once(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    for round in 0..4 {
        ingest(&server, "meeting.started", round * 100, 50, 0).await;
        ingest(&server, "meeting.ended", round * 100 + 50, 50, 0).await;
    }
    let wanted: Vec<i64> = server
        .all_events()
        .await
        .iter()
        .filter(|e| e["event"] == "meeting.started")
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(wanted.len(), 200);
    let (mut ws, hello) = connect(&server, "?events=meeting.started&after_seq=0").await;
    assert_eq!(hello["events"], serde_json::json!(["meeting.started"]));
    let first = events(&mut ws, 120).await;
    drop(ws);
    let last = *seqs(&first).last().expect("some");
    let (mut ws, _) = connect(
        &server,
        &format!("?events=meeting.started&after_seq={last}"),
    )
    .await;
    let rest = events(&mut ws, 80).await;
    assert!(
        rest.iter()
            .chain(&first)
            .all(|f| f["event"] == "meeting.started")
    );
    assert_eq!([seqs(&first), seqs(&rest)].concat(), wanted);
    ingest(&server, "meeting.ended", 1000, 5, 0).await;
    ingest(&server, "meeting.started", 1005, 1, 0).await;
    let live = events(&mut ws, 1).await;
    assert_eq!(live[0]["event"], "meeting.started");
    assert_quiet(&mut ws).await;
    server.stop().await;
}

/// Connects a client that will never read: a tiny receive buffer, so the server's writes to it
/// soon stop completing.
async fn connect_slow(server: &TestServer) -> Ws {
    let addr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let tcp = socket.connect(addr).await.expect("connect");
    let mut request = stream_url(server, "?token=".to_owned().as_str())
        .into_client_request()
        .expect("request");
    *request.uri_mut() = format!("{}{ADMIN}", request.uri()).parse().expect("uri");
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
        .await
        .expect("handshake");
    ws
}

async fn metric(server: &TestServer, line_start: &str) -> f64 {
    let text = server.metrics_page().await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Reads everything a closed-off client was sent, up to the close frame; returns the event seqs
/// and the close reason.
async fn drain_until_close(ws: &mut Ws) -> (Vec<i64>, String) {
    let mut got = Vec::new();
    loop {
        let message = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .expect("a frame within the wait")
            .expect("a close frame before the end")
            .expect("frame");
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).expect("json");
                if frame["type"] == "event" {
                    got.push(frame["seq"].as_i64().expect("seq"));
                }
            }
            Message::Close(Some(close)) => return (got, close.reason.to_string()),
            Message::Close(None) => panic!("closed without a reason"),
            _ => {}
        }
    }
}

async fn a_slow_client_is_cut_off_with_its_resume_point_and_harms_nobody(db: TestDb) {
    let server = TestServer::start(config(&db, &[("stream_send_timeout", "1s")])).await;
    let mut slow = connect_slow(&server).await;
    let (mut fast, hello) = connect(&server, "").await;
    let start = hello["after_seq"].as_i64().expect("start");
    let fast_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(frame) = next_frame(&mut fast).await {
            got.push(frame["seq"].as_i64().expect("seq"));
            if frame["event"] == "meeting.ended" {
                break;
            }
        }
        got
    });
    // Large events fill the slow client's socket quickly; ingest until it is cut off.
    let mut sent = 0;
    while metric(
        &server,
        "zoomhook_stream_disconnects_total{reason=\"slow_consumer\"}",
    )
    .await
        < 1.0
    {
        assert!(sent < 2000, "the slow client was never cut off");
        ingest(&server, "meeting.started", sent, 20, 64 * 1024).await;
        sent += 20;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ingest(&server, "meeting.ended", sent, 1, 0).await;
    let end = head(&server).await;
    let fast_got = fast_reader.await.expect("fast reader");
    assert_eq!(
        fast_got,
        (start + 1..=end).collect::<Vec<_>>(),
        "the fast client got everything"
    );

    let (slow_got, reason) = drain_until_close(&mut slow).await;
    let resume = parse_resume_seq(&reason).unwrap_or_else(|| panic!("reason {reason:?}"));
    assert!(reason.starts_with("slow consumer"), "{reason}");
    assert_eq!(
        slow_got,
        (start + 1..=resume).collect::<Vec<_>>(),
        "the reason names its last seq"
    );
    let (mut resumed, _) = connect(&server, &format!("?after_seq={resume}")).await;
    let rest = seqs(&events(&mut resumed, (end - resume) as usize).await);
    assert_eq!(
        rest,
        (resume + 1..=end).collect::<Vec<_>>(),
        "resuming loses nothing"
    );
    assert!(metric(&server, "zoomhook_stream_frames_total").await >= (end - start) as f64);
    server.stop().await;
}

async fn refusals_are_json_before_the_upgrade(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let (_, hello) = connect(&server, "").await;
    assert_eq!(hello["type"], "hello", "the header token works");
    let by_query = stream_url(&server, &format!("?token={ADMIN}&after_seq=0"));
    let (mut ws, _) = tokio_tungstenite::connect_async(by_query)
        .await
        .expect("?token= works");
    assert_eq!(next_frame(&mut ws).await.expect("hello")["after_seq"], 0);

    // Browsers offer the token as a subprotocol (never in the URL); the server selects
    // `zoomhook.v1`, never echoing the token. A wrong one is refused like a wrong header.
    let offer = |token: &str| {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
        let mut request = stream_url(&server, "?after_seq=0")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("zoomhook.v1, zoomhook.bearer.{encoded}")
                .parse()
                .expect("header"),
        );
        request
    };
    let (mut ws, response) = tokio_tungstenite::connect_async(offer(ADMIN))
        .await
        .expect("the subprotocol token works");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "zoomhook.v1",
        "the server selects the protocol, not the token"
    );
    assert_eq!(next_frame(&mut ws).await.expect("hello")["type"], "hello");
    match tokio_tungstenite::connect_async(offer("wrong")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("a wrong subprotocol token is refused, got {other:?}"),
    }

    for (query, status) in [
        ("", 401),
        ("?token=wrong", 401),
        (&format!("?token={ADMIN}&after_seq=abc") as &str, 400),
        (&format!("?token={ADMIN}&events=bad%20pattern") as &str, 400),
    ] {
        match tokio_tungstenite::connect_async(stream_url(&server, query)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{query}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                        .expect("JSON error body");
                assert!(
                    body["error"].is_string() && body["detail"].is_string(),
                    "{body}"
                );
            }
            other => panic!("{query}: expected a refusal, got {other:?}"),
        }
    }
    let plain = server
        .http
        .get(server.url("/api/v1/stream"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET");
    assert_eq!(plain.status().as_u16(), 426);
    let body: Value = plain.json().await.expect("JSON");
    assert_eq!(body["error"], "upgrade_required");
    let other_route = server
        .http
        .get(server.url(&format!("/api/v1/events?token={ADMIN}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        other_route.status().as_u16(),
        401,
        "only the stream takes ?token="
    );
    server.stop().await;
}

/// Waits (at most a minute: liveness, not timing) until `line_start`'s metric reaches `at_least`.
async fn wait_for_metric(server: &TestServer, line_start: &str, at_least: f64) {
    let started = Instant::now();
    while metric(server, line_start).await < at_least {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{line_start} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_client_that_does_not_answer_pings_is_closed_and_one_that_does_stays(db: TestDb) {
    const PING_TIMEOUTS: &str = "zoomhook_stream_disconnects_total{reason=\"ping_timeout\"}";
    let server = TestServer::start(config(&db, &[("stream_ping_interval", "500ms")])).await;
    ingest(&server, "meeting.started", 0, 3, 0).await;

    // The silent client reads the hello and the backlog, then stops reading: tungstenite answers
    // a ping only while the socket is read, so from here on no pong leaves this client.
    let (mut silent, _) = connect(&server, "?after_seq=0").await;
    assert_eq!(seqs(&events(&mut silent, 3).await), vec![1, 2, 3]);

    // The answering client reads all the time (tungstenite answers each ping as it reads it).
    let (mut answering, _) = connect(&server, "?after_seq=0").await;
    assert_eq!(seqs(&events(&mut answering, 3).await), vec![1, 2, 3]);
    let (pings_tx, mut pings) = tokio::sync::watch::channel(0u32);
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(message) = answering.next().await {
            match message {
                Ok(Message::Ping(_)) => pings_tx.send_modify(|n| *n += 1),
                Ok(Message::Text(text)) => {
                    let _ = frames_tx.send(serde_json::from_str::<Value>(&text).expect("json"));
                }
                Ok(Message::Close(close)) => return Some(format!("{close:?}")),
                Ok(_) => {}
                Err(e) => return Some(e.to_string()),
            }
        }
        Some("the stream ended".to_owned())
    });

    wait_for_metric(&server, PING_TIMEOUTS, 1.0).await;
    // Now read what the silent client was sent: exactly one ping (the server judges a client at
    // the first ping that finds the previous one unanswered), then the close.
    let mut pings_before_close = 0;
    let close = loop {
        let message = tokio::time::timeout(FRAME_WAIT, silent.next())
            .await
            .expect("a frame within the wait")
            .expect("a close frame before the end")
            .expect("frame");
        match message {
            Message::Ping(_) => pings_before_close += 1,
            Message::Close(Some(close)) => break close,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert!(close.reason.starts_with("no answer to ping"), "{close:?}");
    assert_eq!(
        parse_resume_seq(&close.reason),
        Some(3),
        "names the last seq sent"
    );
    assert_eq!(pings_before_close, 1);

    // The answering client lives on through several more ping intervals (each of which would
    // have closed it, had it not answered), and still gets new events.
    let seen = *pings.borrow();
    tokio::time::timeout(Duration::from_secs(60), pings.wait_for(|n| *n >= seen + 3))
        .await
        .expect("pings keep coming")
        .expect("the answering client is still connected");
    ingest(&server, "meeting.ended", 10, 1, 0).await;
    let live = tokio::time::timeout(FRAME_WAIT, frames.recv())
        .await
        .expect("a frame within the wait")
        .expect("the answering client is still connected");
    assert_eq!(live["seq"], 4, "{live}");
    assert!(!reader.is_finished(), "the answering client was closed");
    assert_eq!(
        metric(&server, PING_TIMEOUTS).await,
        1.0,
        "only the silent one"
    );
    reader.abort();
    server.stop().await;
}

both_backends!(
    a_client_that_does_not_answer_pings_is_closed_and_one_that_does_stays,
    a_slow_client_is_cut_off_with_its_resume_point_and_harms_nobody,
    refusals_are_json_before_the_upgrade,
    live_events_arrive_in_order_with_the_original_body,
    resume_after_a_disconnect_gets_exactly_what_was_missed,
    resume_while_ingest_continues_has_no_gap_and_no_duplicate,
    a_resume_from_behind_the_shared_tail_crosses_into_it_without_gap,
    a_filtered_stream_gets_only_matching_events_once,
);

/// `zoomhook events tail`, the real binary, prints events as they arrive over the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_events_as_they_arrive() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    ingest(&server, "meeting.created", 0, 2, 0).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args([
            "events",
            "tail",
            "--event",
            "meeting.started",
            "--after-seq",
            "1",
        ])
        .env("ZOOMHOOK_URL", &server.base)
        .env("ZOOMHOOK_TOKEN", ADMIN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn zoomhook events tail");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    ingest(&server, "meeting.started", 10, 2, 0).await;
    ingest(&server, "meeting.ended", 12, 1, 0).await;
    ingest(&server, "meeting.started", 13, 1, 0).await;
    let mut printed = Vec::new();
    while printed.len() < 3 {
        let line = tokio::time::timeout(FRAME_WAIT, lines.next_line())
            .await
            .expect("a line within the wait")
            .expect("read")
            .expect("tail keeps running");
        printed.push(line);
    }
    let seqs: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(seqs, ["3", "4", "6"], "{printed:#?}");
    assert!(
        printed
            .iter()
            .all(|l| l.contains("meeting.started") && l.contains("evt_")),
        "{printed:#?}"
    );
    child.kill().await.expect("kill");
    server.stop().await;
}

/// `zoomhook serve` (the real binary) on `port` over `db`; killed when dropped.
async fn serve_on(db: &TestDb, port: u16) -> common::binary::Binary {
    let addr = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args(["serve", "--listen", &addr, "--database", &db.url])
        .env("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET)
        .env("ZOOMHOOK_ADMIN_TOKEN", ADMIN)
        .env("ZOOMHOOK_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn zoomhook serve");
    let server = common::binary::Binary {
        child,
        base: format!("http://{addr}"),
        addr,
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "zoomhook serve on {} did not become healthy",
            server.addr
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server
}

/// Sends events `first..first + count` to `base`, signed, 8 at a time; each must be acknowledged.
async fn ingest_to(base: &str, first: i64, count: i64) {
    let http = reqwest::Client::new();
    let statuses: Vec<_> = stream::iter(first..first + count)
        .map(|n| {
            let http = http.clone();
            async move {
                let body = event_body("meeting.started", n, 0);
                let ts = now_secs().to_string();
                http.post(format!("{base}/webhooks/zoom"))
                    .header("content-type", "application/json; charset=utf-8")
                    .header("x-zm-request-timestamp", &ts)
                    .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
                    .header("x-zm-request-id", uuid::Uuid::new_v4().to_string())
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        statuses
            .iter()
            .all(|s| s.as_ref().is_ok_and(|s| s.is_success())),
        "{statuses:?}"
    );
}

/// Reads `count` more lines of `events tail`'s output (each wait bounded: liveness only).
async fn tail_lines(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    count: usize,
    printed: &mut Vec<String>,
) {
    for _ in 0..count {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("a line within the wait; so far {printed:#?}"))
            .expect("read")
            .expect("tail keeps running");
        printed.push(line);
    }
}

/// `zoomhook events tail` (the real binary) follows two real server restarts on the same
/// database and port — one SIGKILL, one graceful SIGTERM — with events ingested while it is
/// disconnected, and prints every event exactly once, in order.
async fn events_tail_resumes_across_server_restarts(db: TestDb) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut first = serve_on(&db, port).await;
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args(["events", "tail", "--after-seq", "0"])
        .env("ZOOMHOOK_URL", &first.base)
        .env("ZOOMHOOK_TOKEN", ADMIN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn zoomhook events tail");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let mut messages = BufReader::new(tail.stderr.take().expect("stderr")).lines();
    let stderr = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = messages.next_line().await {
            all.push(line);
        }
        all
    });
    let mut printed = Vec::new();

    ingest_to(&first.base, 0, 40).await;
    tail_lines(&mut lines, 40, &mut printed).await;

    // 1. The server dies (no close frame); its successor on the same port and database gets
    //    events before tail has reconnected (it backs off), and some after.
    first.kill();
    let mut second = serve_on(&db, port).await;
    ingest_to(&second.base, 100, 30).await;
    tail_lines(&mut lines, 30, &mut printed).await;
    ingest_to(&second.base, 200, 10).await;
    tail_lines(&mut lines, 10, &mut printed).await;

    // 2. A graceful stop: the server closes the stream (1001, "server stopping"), then exits.
    second.signal("-TERM");
    second.child.wait().expect("the server exits on SIGTERM");
    let third = serve_on(&db, port).await;
    ingest_to(&third.base, 300, 40).await;
    // One more event last: a duplicate or a late event would have to show before it.
    ingest_to(&third.base, 400, 1).await;
    tail_lines(&mut lines, 41, &mut printed).await;

    let fields: Vec<Vec<&str>> = printed
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let seqs: Vec<i64> = fields
        .iter()
        .map(|f| f[0].parse().expect("a seq first"))
        .collect();
    assert_eq!(
        seqs,
        (1..=121).collect::<Vec<_>>(),
        "every event once, in order: {printed:#?}"
    );
    let stored: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/events?after_seq=0&limit=1000",
            third.base
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let stored_ids: Vec<&str> = stored["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let printed_ids: Vec<&str> = fields.iter().map(|f| *f.last().expect("id")).collect();
    assert_eq!(printed_ids, stored_ids, "the ids of the log, in its order");

    tail.kill().await.expect("kill tail");
    let stderr = stderr.await.expect("stderr reader");
    assert!(
        stderr
            .iter()
            .filter(|l| l.starts_with("stream interrupted"))
            .count()
            >= 2,
        "tail lost the stream at both restarts: {stderr:#?}"
    );
    drop(third);
}

both_backends!(events_tail_resumes_across_server_restarts);
