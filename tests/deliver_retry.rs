//! Delivery failures and what follows them: retries and their schedule, `Retry-After`, 410,
//! redirects, timeouts, 4xx, manual retry, replay and auto-disable.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::delivery::*;
use common::receiver::{Behaviour, Receiver};
use common::*;
use serde_json::json;

both_backends!(receiver_down_then_up_gets_every_event_with_one_webhook_id);

async fn receiver_down_then_up_gets_every_event_with_one_webhook_id(db: TestDb) {
    // A port with nothing listening yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let server = TestServer::start(delivery_config(
        &db,
        &[(
            "delivery_retry_schedule",
            // Quick first retries; long later ones, so a stalled machine cannot dead-letter the
            // deliveries before the receiver is up.
            "300ms,300ms,2s,5s,10s,30s",
        )],
    ))
    .await;
    let sub = subscribe(
        &server,
        json!({"url": format!("http://{addr}/hook"), "events": "*"}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    for name in ["meeting.started.json", "meeting.ended.json"] {
        assert!(server.send(&fixture(name)).await.status().is_success());
    }
    let failed_once = eventually("two failed attempts", || async {
        let page = server
            .api(&format!("/api/v1/subscriptions/{id}/deliveries"))
            .await;
        let all_tried = page["data"].as_array().unwrap().len() == 2
            && page["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["attempt_count"].as_i64() >= Some(2));
        all_tried.then_some(page)
    })
    .await;
    let delivery_id = failed_once["data"][0]["id"].as_str().unwrap().to_owned();

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the receiver port");
    let receiver = Receiver::on(listener, Arc::new(|_, _| (200, vec![], Duration::ZERO)));
    let got = receiver.wait_for("/hook", 2).await;
    assert!(got.iter().any(|r| r.header("webhook-id") == delivery_id));

    let detail = eventually("the delivery to succeed", || async {
        let d = server
            .api(&format!("/api/v1/deliveries/{delivery_id}"))
            .await;
        (d["status"] == "succeeded").then_some(d)
    })
    .await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{detail}");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("onnect"),
        "{}",
        attempts[0]
    );
    assert!(attempts[0]["status_code"].is_null());
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
    assert_eq!(
        attempts.last().unwrap()["response_excerpt"],
        "receiver says hi"
    );
    server.stop().await;
}

both_backends!(answers_retry_after_gone_redirect_timeout_and_client_errors);

async fn answers_retry_after_gone_redirect_timeout_and_client_errors(db: TestDb) {
    let behaviour: Behaviour = Arc::new(|path, n| match (path, n) {
        ("/busy", 0) => (429, vec![("retry-after", "2".to_owned())], Duration::ZERO),
        ("/busy", _) => (200, vec![], Duration::ZERO),
        ("/gone", _) => (410, vec![], Duration::ZERO),
        ("/moved", _) => (
            302,
            vec![("location", "/elsewhere".to_owned())],
            Duration::ZERO,
        ),
        ("/slow", _) => (200, vec![], Duration::from_secs(2)),
        ("/bad", _) => (400, vec![], Duration::ZERO),
        _ => (200, vec![], Duration::ZERO),
    });
    let receiver = Receiver::start(behaviour).await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let mut ids = std::collections::HashMap::new();
    for path in ["/busy", "/gone", "/moved", "/slow", "/bad"] {
        let mut body = json!({"url": receiver.url(path), "events": "meeting.started"});
        if path == "/slow" {
            body["timeout"] = json!("300ms");
        }
        let sub = subscribe(&server, body).await;
        ids.insert(path, sub["id"].as_str().unwrap().to_owned());
    }
    assert!(
        server
            .send(&fixture("meeting.started.json"))
            .await
            .status()
            .is_success()
    );
    let delivery = |path: &'static str| {
        let id = ids[path].clone();
        let server = &server;
        async move {
            let page = server
                .api(&format!("/api/v1/subscriptions/{id}/deliveries"))
                .await;
            let d = page["data"][0]["id"].as_str()?.to_owned();
            Some(server.api(&format!("/api/v1/deliveries/{d}")).await)
        }
    };

    // 429 with Retry-After: 2 → the next attempt waits ~2 s, not the 200 ms of the schedule.
    let busy = receiver.wait_for("/busy", 2).await;
    let waited = busy[1].at.duration_since(busy[0].at);
    assert!(
        waited >= Duration::from_millis(1500),
        "Retry-After honoured: {waited:?}"
    );

    // 410 → failed at once and the subscription disabled.
    let gone = eventually("410 to disable", || async {
        let sub = server
            .api(&format!("/api/v1/subscriptions/{}", ids["/gone"]))
            .await;
        (sub["enabled"] == false).then_some(sub)
    })
    .await;
    assert!(gone["disabled_reason"].as_str().unwrap().contains("410"));
    let gone_delivery = delivery("/gone").await.unwrap();
    assert_eq!(gone_delivery["status"], "failed");
    assert_eq!(gone_delivery["attempt_count"], 1);

    // Every other failure is retried on the schedule (3 retries → 4 attempts), then dead-lettered.
    for (path, error) in [
        ("/moved", "redirect (302) not followed"),
        ("/slow", "timed out"),
        ("/bad", "HTTP 400"),
    ] {
        let d = eventually(path, || async {
            let d = delivery(path).await?;
            (d["status"] == "failed").then_some(d)
        })
        .await;
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 4, "{path}: {d}");
        assert!(attempts.iter().all(|a| a["error"] == error), "{path}: {d}");
    }
    assert!(
        receiver.received_at("/elsewhere").is_empty(),
        "redirects are never followed"
    );
    // The receiver records a request when it arrives; the outcome is committed just after.
    eventually("the 429 delivery to succeed on its retry", || async {
        (delivery("/busy").await?["status"] == "succeeded").then_some(())
    })
    .await;
    server.stop().await;
}
both_backends!(manual_retry_and_replay_by_seq_and_by_entity);

async fn manual_retry_and_replay_by_seq_and_by_entity(db: TestDb) {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = Arc::clone(&fail);
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            (500, vec![], Duration::ZERO)
        } else {
            (204, vec![], Duration::ZERO)
        }
    }))
    .await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/r"), "events": "meeting.*"}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    for name in [
        "meeting.started.json",
        "meeting.ended.json",
        "meeting.created.json",
    ] {
        assert!(server.send(&fixture(name)).await.status().is_success());
    }
    let failed = eventually("dead letters", || async {
        let page = server
            .api(&format!(
                "/api/v1/subscriptions/{id}/deliveries?status=failed"
            ))
            .await;
        (page["data"].as_array().unwrap().len() == 3).then_some(page)
    })
    .await;
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let one = failed["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = post_json(
        &server,
        &format!("/api/v1/deliveries/{one}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, 202);
    eventually("the retried delivery", || async {
        (server.api(&format!("/api/v1/deliveries/{one}")).await["status"] == "succeeded")
            .then_some(())
    })
    .await;
    let before = receiver.received().len();

    // Replay everything of meeting 86431910364 (started + ended), then a seq range.
    let (status, replay) = post_json(
        &server,
        &format!("/api/v1/subscriptions/{id}/replay"),
        json!({"entity": "86431910364"}),
    )
    .await;
    assert_eq!(
        (status, replay["queued_count"].as_i64()),
        (200, Some(2)),
        "{replay}"
    );
    receiver.wait_for("/r", before + 2).await;
    // A replay leaves deliveries being sent alone: wait until the first replay is recorded.
    eventually("the first replay to be recorded", || async {
        let sub = server.api(&format!("/api/v1/subscriptions/{id}")).await;
        let d = &sub["delivery_counts"];
        (d["pending"] == 0 && d["delivering"] == 0).then_some(())
    })
    .await;
    let (_, replay) = post_json(
        &server,
        &format!("/api/v1/subscriptions/{id}/replay"),
        json!({"after_seq": 0, "to_seq": 1}),
    )
    .await;
    assert_eq!(replay["queued_count"], 1);
    let got = receiver.wait_for("/r", before + 3).await;
    let webhook_ids: std::collections::HashSet<&str> =
        got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        webhook_ids.len(),
        3,
        "a replay keeps the webhook-id of its delivery"
    );
    // Exact names replay only those events (and never URL validations), not the whole range.
    let exact = subscribe(
        &server,
        json!({"url": receiver.url("/exact"), "events": "meeting.ended,user.created"}),
    )
    .await;
    let (_, replay) = post_json(
        &server,
        &format!(
            "/api/v1/subscriptions/{}/replay",
            exact["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    assert_eq!(
        replay["queued_count"], 1,
        "only meeting.ended of the log: {replay}"
    );
    let (status, error) = post_json(
        &server,
        &format!("/api/v1/subscriptions/{id}/replay"),
        json!({"since": "yesterday"}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    server.stop().await;
}

both_backends!(failing_subscription_is_disabled_then_delivers_its_backlog_when_enabled);

async fn failing_subscription_is_disabled_then_delivers_its_backlog_when_enabled(db: TestDb) {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = Arc::clone(&fail);
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            (503, vec![], Duration::ZERO)
        } else {
            (200, vec![], Duration::ZERO)
        }
    }))
    .await;
    let server = TestServer::start(delivery_config(
        &db,
        &[
            ("delivery_disable_after", "1s"),
            (
                "delivery_retry_schedule",
                "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
            ),
        ],
    ))
    .await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/flaky"), "events": "meeting.*"}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    assert!(
        server
            .send(&fixture("meeting.started.json"))
            .await
            .status()
            .is_success()
    );
    let disabled = eventually("auto-disable", || async {
        let s = server.api(&format!("/api/v1/subscriptions/{id}")).await;
        (s["enabled"] == false).then_some(s)
    })
    .await;
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("disabled automatically"),
        "{disabled}"
    );
    // The operational event is appended right after the disable is committed.
    let op = eventually("the operational event in the log", || async {
        server
            .all_events()
            .await
            .into_iter()
            .find(|e| e["event"] == "zoomhook.subscription.disabled")
    })
    .await;
    assert_eq!(op["source"], "zoomhook");

    // Events keep queueing while disabled, and go out once it is enabled again.
    assert!(
        server
            .send(&fixture("meeting.ended.json"))
            .await
            .status()
            .is_success()
    );
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ended_before = receiver
        .received_at("/flaky")
        .iter()
        .filter(|r| r.json()["event"] == "meeting.ended")
        .count();
    assert_eq!(ended_before, 0, "nothing is sent while disabled");
    let (status, _) = patch_json(
        &server,
        &format!("/api/v1/subscriptions/{id}"),
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(status, 200);
    eventually("the backlog after re-enabling", || async {
        receiver
            .received_at("/flaky")
            .iter()
            .any(|r| r.json()["event"] == "meeting.ended")
            .then_some(())
    })
    .await;
    server.stop().await;
}

both_backends!(an_answer_with_nul_and_invalid_utf8_is_recorded_as_text);

/// A destination that answers with bytes that are not text (a NUL, invalid UTF-8) still gets its
/// attempt recorded — PostgreSQL refuses NUL in text — with the excerpt made storable: each
/// invalid byte and the NUL become U+FFFD, the rest is kept.
async fn an_answer_with_nul_and_invalid_utf8_is_recorded_as_text(db: TestDb) {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            b"bad\0bytes \xff\xfe end".to_vec(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(
        &server,
        json!({"url": format!("http://{addr}/hook"), "events": "*"}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    assert!(
        server
            .send(&fixture("meeting.started.json"))
            .await
            .status()
            .is_success()
    );
    let attempt = eventually("an attempt recorded", || async {
        let page = server
            .api(&format!("/api/v1/subscriptions/{id}/deliveries"))
            .await;
        let delivery_id = page["data"][0]["id"].as_str()?.to_owned();
        let detail = server
            .api(&format!("/api/v1/deliveries/{delivery_id}"))
            .await;
        detail["attempts"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(attempt["status_code"], 500, "{attempt}");
    assert_eq!(
        attempt["response_excerpt"], "bad\u{FFFD}bytes \u{FFFD}\u{FFFD} end",
        "{attempt}"
    );
    assert_eq!(attempt["error"], "HTTP 500", "{attempt}");
    server.stop().await;
}
