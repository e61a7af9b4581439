//! Issue 12, through the real binary on both backends: meetings show their live status, and
//! `replay` follows exactly the deliveries it queued — its own counts, each failure as it happens,
//! a non-zero exit when they end failed or when it stops waiting, an error when nothing matches.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::delivery::{eventually, subscribe};
use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

/// Runs `zoomhook <args>` against `server` (through `ZOOMHOOK_URL`/`ZOOMHOOK_TOKEN`) to the end.
async fn zoomhook(server: &TestServer, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"));
    command.args(args).env("ZOOMHOOK_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") {
            command.env_remove(key);
        }
    }
    command
        .env("ZOOMHOOK_URL", &server.base)
        .env("ZOOMHOOK_TOKEN", ADMIN)
        .output()
        .await
        .expect("run zoomhook")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn body(event: &str, ts: i64, object: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"event": event, "event_ts": ts, "payload": {"account_id": "A", "object": object}}),
    )
    .expect("json")
}

/// The STATUS column of `meetings list` for meeting `id`, once sync shows `expected` (or what it
/// shows after the wait, for the assertion message).
async fn listed_status(server: &TestServer, id: &str, expected: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let out = zoomhook(server, &["meetings", "list"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        last = stdout(&out)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_owned();
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

both_backends!(meetings_show_their_live_status_through_the_cli);

async fn meetings_show_their_live_status_through_the_cli(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    let t = 1_700_000_000_000_i64;
    let one_off = json!({"id": 81111111111_u64, "uuid": "b25lLW9mZg==", "host_id": "h1", "topic": "One-off", "type": 2,
        "start_time": "2026-11-02T10:00:00Z"});
    let send = |b: Vec<u8>| {
        let server = &server;
        async move { assert!(server.send(&b).await.status().is_success()) }
    };
    send(body("meeting.created", t, one_off.clone())).await;
    assert_eq!(
        listed_status(&server, "81111111111", "scheduled").await,
        "scheduled"
    );
    let mut started = one_off.clone();
    started["id"] = json!("81111111111");
    started["start_time"] = json!("2026-11-02T10:01:00Z");
    send(body("meeting.started", t + 60_000, started.clone())).await;
    assert_eq!(
        listed_status(&server, "81111111111", "started").await,
        "started"
    );
    let running = zoomhook(&server, &["meetings", "list", "--status", "started"]).await;
    assert!(
        stdout(&running).contains("81111111111"),
        "{}",
        stdout(&running)
    );
    let mut ended = started.clone();
    ended["end_time"] = json!("2026-11-02T10:45:00Z");
    send(body("meeting.ended", t + 2_700_000, ended)).await;
    assert_eq!(
        listed_status(&server, "81111111111", "ended").await,
        "ended"
    );
    let show = zoomhook(&server, &["meetings", "show", "81111111111"]).await;
    assert!(show.status.success(), "{}", stderr(&show));
    let shown = stdout(&show);
    assert!(shown.contains("status  ended"), "{shown}");
    assert!(
        shown.contains("b25lLW9mZg=="),
        "the occurrence is named: {shown}"
    );
    // A late update (an older event_ts than the end) does not move it back.
    send(body(
        "meeting.updated",
        t + 30_000,
        json!({"id": 81111111111_u64, "topic": "Renamed"}),
    ))
    .await;
    assert_eq!(
        listed_status(&server, "81111111111", "ended").await,
        "ended"
    );

    // A weekly series without a fixed time: its ended occurrence leaves it scheduled — and the
    // end arrives before the start, as Zoom may deliver them.
    let series = json!({"id": "82222222222", "uuid": "c2VyaWVz", "host_id": "h2", "topic": "Weekly", "type": 3,
        "start_time": "2026-11-03T09:00:00Z"});
    let mut series_end = series.clone();
    series_end["end_time"] = json!("2026-11-03T09:30:00Z");
    send(body("meeting.ended", t + 5_000_000, series_end)).await;
    send(body("meeting.started", t + 4_000_000, series.clone())).await;
    assert_eq!(
        listed_status(&server, "82222222222", "scheduled").await,
        "scheduled"
    );
    let ended_list = zoomhook(&server, &["meetings", "list", "--status", "ended"]).await;
    assert!(ended_list.status.success(), "{}", stderr(&ended_list));
    assert!(stdout(&ended_list).contains("81111111111"));
    assert!(!stdout(&ended_list).contains("82222222222"));

    // An unknown status is refused by the CLI and by the API, not answered with nothing.
    let bogus = zoomhook(&server, &["meetings", "list", "--status", "running"]).await;
    assert!(!bogus.status.success());
    assert!(stderr(&bogus).contains("started"), "{}", stderr(&bogus));
    let api = server
        .http
        .get(server.url("/api/v1/meetings?status=running"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET");
    assert_eq!(api.status(), 400);
    server.stop().await;
}

/// A server that retries per `schedule`, allows loopback destinations, and has three events of
/// meeting 83333333333 plus one of another meeting in its log, received before any subscription
/// (so only a replay delivers them).
async fn server_with_history(db: &TestDb, schedule: &str) -> TestServer {
    let server = TestServer::start(config(
        db,
        &[
            ("delivery_retry_schedule", schedule),
            ("delivery_allow_cidrs", "127.0.0.0/8"),
        ],
    ))
    .await;
    let t = 1_700_000_000_000_i64;
    for (i, event) in ["meeting.created", "meeting.updated", "meeting.deleted"]
        .iter()
        .enumerate()
    {
        let b = body(
            event,
            t + i as i64,
            json!({"id": 83333333333_u64, "topic": "T"}),
        );
        assert!(server.send(&b).await.status().is_success());
    }
    let other = body("meeting.created", t + 9, json!({"id": 84444444444_u64}));
    assert!(server.send(&other).await.status().is_success());
    server
}

async fn subscription_to(server: &TestServer, url: String) -> String {
    let sub = subscribe(server, json!({"url": url, "events": "meeting.*"})).await;
    sub["id"].as_str().expect("id").to_owned()
}

both_backends!(replay_reports_its_own_deliveries_not_the_running_totals);

async fn replay_reports_its_own_deliveries_not_the_running_totals(db: TestDb) {
    let server = server_with_history(&db, "200ms").await;
    let receiver = Receiver::ok().await;
    let sub = subscription_to(&server, receiver.url("/hook")).await;
    // The subscription already has deliveries of its own (a first replay of everything), so its
    // running totals are not what the second replay did.
    let all = zoomhook(&server, &["replay", &sub]).await;
    assert!(all.status.success(), "{}{}", stdout(&all), stderr(&all));
    assert!(
        stdout(&all).contains("replay finished: 4 of 4 delivered"),
        "{}",
        stdout(&all)
    );
    let one = zoomhook(&server, &["replay", &sub, "--entity", "83333333333"]).await;
    let (out, err) = (stdout(&one), stderr(&one));
    assert!(one.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("queued 3 deliveries to {sub}")),
        "{out}"
    );
    assert!(out.contains("replay finished: 3 of 3 delivered"), "{out}");
    assert!(err.contains("replayed 3/3: 3 succeeded, 0 failed"), "{err}");
    assert!(
        !out.contains(" 7 ") && !err.contains("7 succeeded"),
        "{out}{err}"
    );
    assert_eq!(receiver.wait_for("/hook", 7).await.len(), 7);
    server.stop().await;
}

both_backends!(replay_against_a_failing_endpoint_shows_the_error_and_fails);

async fn replay_against_a_failing_endpoint_shows_the_error_and_fails(db: TestDb) {
    let server = server_with_history(&db, "100ms,100ms").await;
    let receiver = Receiver::start(Arc::new(|_, _| (503, vec![], Duration::ZERO))).await;
    let sub = subscription_to(&server, receiver.url("/down")).await;
    let out = zoomhook(&server, &["replay", &sub, "--entity", "83333333333"]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{}{err}", stdout(&out));
    // Each failure as it happens, with what the endpoint answered …
    assert!(err.contains("attempt "), "{err}");
    assert!(err.contains("failed: HTTP 503 ("), "{err}");
    // … and the end: its own three, failed, with the last error and where to look.
    assert!(
        err.contains(
            "replay finished: 0 of 3 delivered, 3 failed after their last attempt; last error: msg_"
        ) && err.contains(": HTTP 503\nhint:"),
        "{err}"
    );
    assert!(
        err.contains(&format!("deliveries list {sub} --status failed")),
        "{err}"
    );
    server.stop().await;
}

both_backends!(replay_stops_waiting_after_its_timeout_with_the_last_error);

async fn replay_stops_waiting_after_its_timeout_with_the_last_error(db: TestDb) {
    // The second attempt would be an hour away: the command must not wait for it.
    let server = server_with_history(&db, "1h").await;
    let receiver = Receiver::start(Arc::new(|_, _| (500, vec![], Duration::ZERO))).await;
    let sub = subscription_to(&server, receiver.url("/down")).await;
    let started = std::time::Instant::now();
    let out = zoomhook(
        &server,
        &["replay", &sub, "--entity", "84444444444", "--timeout", "3s"],
    )
    .await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(err.contains("failed: HTTP 500"), "{err}");
    assert!(
        err.contains("stopped waiting after 3s: 0 of 1 delivered, 1 not yet (0 succeeded, 0 failed, 1 retrying"),
        "{err}"
    );
    assert!(err.contains("last error: msg_"), "{err}");
    assert!(err.contains("keep retrying"), "{err}");
    // Still queued: the replay did not cancel anything.
    let page = server
        .api(&format!("/api/v1/subscriptions/{sub}/deliveries"))
        .await;
    assert_eq!(page["data"][0]["status"], "pending", "{page}");
    server.stop().await;
}

both_backends!(a_replay_that_matches_nothing_is_an_error_with_a_hint);

async fn a_replay_that_matches_nothing_is_an_error_with_a_hint(db: TestDb) {
    let server = server_with_history(&db, "200ms").await;
    let receiver = Receiver::ok().await;
    let sub = subscription_to(&server, receiver.url("/hook")).await;
    let out = zoomhook(&server, &["replay", &sub, "--entity", "no-such-meeting"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("nothing to replay"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    // Nothing was queued.
    let page = server
        .api(&format!("/api/v1/subscriptions/{sub}/deliveries"))
        .await;
    assert_eq!(page["data"], json!([]));
    let missing = zoomhook(&server, &["replay", "sub_nope"]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("subs list"),
        "{}",
        stderr(&missing)
    );
    server.stop().await;
}

both_backends!(the_deliveries_list_answers_for_exactly_the_ids_asked);

async fn the_deliveries_list_answers_for_exactly_the_ids_asked(db: TestDb) {
    let server = server_with_history(&db, "200ms").await;
    let receiver = Receiver::ok().await;
    let sub = subscription_to(&server, receiver.url("/hook")).await;
    let (status, replay) = common::delivery::post_json(
        &server,
        &format!("/api/v1/subscriptions/{sub}/replay"),
        json!({"entity": "84444444444"}),
    )
    .await;
    assert_eq!(status, 200, "{replay}");
    let ids: Vec<String> = serde_json::from_value(replay["delivery_ids"].clone()).expect("ids");
    assert_eq!(ids.len(), 1);
    let asked = format!("{},msg_not_this_subscriptions", ids[0]);
    let page = eventually("the delivery to succeed", || async {
        let page = server
            .api(&format!(
                "/api/v1/subscriptions/{sub}/deliveries?ids={asked}"
            ))
            .await;
        (page["data"][0]["status"] == "succeeded").then_some(page)
    })
    .await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["data"][0]["id"], ids[0].as_str());
    // Too many, a NUL, odd Unicode, a very long id, none at all: a clear 4xx, nothing else.
    let too_many = vec!["msg_x"; 101].join(",");
    let long = "m".repeat(4_000);
    for hostile in [
        too_many.as_str(),
        "msg_%00x",
        "msg_%E2%80%AE",
        long.as_str(),
        ",",
    ] {
        let r = server
            .http
            .get(server.url(&format!(
                "/api/v1/subscriptions/{sub}/deliveries?ids={hostile}"
            )))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET");
        assert!(
            [400, 414, 431].contains(&r.status().as_u16()),
            "{}: {}",
            &hostile[..hostile.len().min(20)],
            r.status()
        );
    }
    server.stop().await;
}
