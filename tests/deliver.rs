//! Outbound delivery through real interfaces: Zoom-signed events in through `/webhooks/zoom`,
//! out to real HTTP receivers on 127.0.0.1 — filters, both signature schemes verified
//! independently, retries and their schedule, `Retry-After`, 410, redirects, timeouts, 4xx,
//! entity ordering, manual retry, replay, auto-disable, publishing, SSRF refusals.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::receiver::{Behaviour, Receiver};
use common::*;
use serde_json::{Value, json};

/// Fast retries and loopback allowed, as the tests need.
fn delivery_config(db: &TestDb, extra: &[(&str, &str)]) -> zoomhook::config::Config {
    let mut settings = vec![
        ("delivery_retry_schedule", "200ms,200ms,200ms"),
        ("delivery_allow_cidrs", "127.0.0.0/8"),
    ];
    settings.extend_from_slice(extra);
    config(db, &settings)
}

async fn post_json(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .http
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn patch_json(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .http
        .patch(server.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("PATCH");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn subscribe(server: &TestServer, body: Value) -> Value {
    let (status, sub) = post_json(server, "/api/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{sub}");
    sub
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until the first delivery of subscription `id` reaches `status`; returns it with its attempts.
async fn first_delivery_when(server: &TestServer, id: &str, status: &str) -> Value {
    eventually(&format!("a {status} delivery"), || async {
        let page = server
            .api(&format!("/api/v1/subscriptions/{id}/deliveries"))
            .await;
        let d = page["data"][0]["id"].as_str()?.to_owned();
        let d = server.api(&format!("/api/v1/deliveries/{d}")).await;
        (d["status"] == status).then_some(d)
    })
    .await
}

/// Standard Webhooks verification written from the specification, independently of the product.
fn verify_standard(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header.split(' ').any(|sig| sig == format!("v1,{expected}"))
}

both_backends!(two_subscriptions_with_filters_get_verbatim_signed_events);

async fn two_subscriptions_with_filters_get_verbatim_signed_events(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let meetings = subscribe(
        &server,
        json!({"url": receiver.url("/crm"), "events": ["meeting.*"]}),
    )
    .await;
    let zoomish = subscribe(
        &server,
        json!({"url": receiver.url("/legacy"), "events": "recording.completed, *.deleted", "scheme": "zoom",
               "headers": {"x-team": "data"}}),
    )
    .await;
    let secret_a = meetings["secret"].as_str().unwrap().to_owned();
    let secret_b = zoomish["secret"].as_str().unwrap().to_owned();
    assert!(secret_a.starts_with("whsec_"));
    let (_, listed) = (200, server.api("/api/v1/subscriptions").await);
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown only once"
    );

    for name in [
        "meeting.started.json",
        "recording.completed.json",
        "meeting.deleted.json",
        "user.created.json",
    ] {
        assert!(server.send(&fixture(name)).await.status().is_success());
    }
    let crm = receiver.wait_for("/crm", 2).await;
    let legacy = receiver.wait_for("/legacy", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received_at("/crm").len(), 2, "meeting.* only");
    assert_eq!(
        receiver.received_at("/legacy").len(),
        2,
        "recording.completed and *.deleted only"
    );

    let mut crm_events: Vec<String> = crm
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_owned())
        .collect();
    crm_events.sort();
    assert_eq!(crm_events, ["meeting.deleted", "meeting.started"]);
    for r in &crm {
        let name = format!("{}.json", r.json()["event"].as_str().unwrap());
        assert_eq!(r.body, fixture(&name), "the original Zoom body, verbatim");
        assert!(r.header("webhook-id").starts_with("msg_"));
        assert!(
            verify_standard(
                &secret_a,
                r.header("webhook-id"),
                r.header("webhook-timestamp"),
                &r.body,
                r.header("webhook-signature")
            ),
            "standard signature verifies independently"
        );
        assert_eq!(r.header("content-type"), "application/json");
    }
    for r in &legacy {
        let expected = zoom_signature(&secret_b, r.header("x-zm-request-timestamp"), &r.body);
        assert_eq!(
            r.header("x-zm-signature"),
            expected,
            "verifies like Zoom's own check"
        );
        assert_eq!(r.header("x-team"), "data");
        assert!(!r.headers.contains_key("webhook-signature"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_up_gets_every_event_with_one_webhook_id() {
    let db = TestDb::sqlite();
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
                .all(|d| d["attempts"].as_i64() >= Some(2));
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
    let attempts = detail["attempts_list"].as_array().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_retry_after_gone_redirect_timeout_and_client_errors() {
    let db = TestDb::sqlite();
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
    assert_eq!(gone_delivery["attempts"], 1);

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
        let attempts = d["attempts_list"].as_array().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_ordering_holds_while_entities_run_in_parallel() {
    let db = TestDb::sqlite();
    // Slow answers, and the first delivery of meeting 0 fails once: its later events must wait.
    let failed_first = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&failed_first);
    let behaviour: Behaviour = Arc::new(move |_, n| {
        if n == 0 && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            (503, vec![], Duration::from_millis(30))
        } else {
            (200, vec![], Duration::from_millis(30))
        }
    });
    let receiver = Receiver::start(behaviour).await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    subscribe(&server, json!({"url": receiver.url("/ordered"), "events": "*", "ordering": "entity", "max_in_flight": 16})).await;
    let meetings = 6;
    let per_meeting = 8;
    let mut tasks = Vec::new();
    for m in 0..meetings {
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..per_meeting {
                let body = serde_json::to_vec(&json!({"event": "meeting.updated", "event_ts": 1_700_000_000_000i64 + i,
                    "payload": {"account_id": "A", "object": {"id": 1000 + m, "topic": format!("v{i}")}}})).unwrap();
                let ts = now_secs().to_string();
                let r = client.post(format!("{base}/webhooks/zoom"))
                    .header("x-zm-request-timestamp", &ts)
                    .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
                    .body(body).send().await.unwrap();
                assert!(r.status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = receiver
        .wait_for("/ordered", (meetings * per_meeting) as usize + 1)
        .await;
    let mut per_entity: std::collections::HashMap<i64, Vec<i64>> = Default::default();
    for r in &got {
        let v = r.json();
        per_entity
            .entry(v["payload"]["object"]["id"].as_i64().unwrap())
            .or_default()
            .push(v["event_ts"].as_i64().unwrap());
    }
    for (meeting, seen) in &per_entity {
        let mut deduped = seen.clone();
        deduped.dedup(); // the failed first attempt is repeated in place
        assert_eq!(
            deduped,
            (0..per_meeting)
                .map(|i| 1_700_000_000_000 + i)
                .collect::<Vec<_>>(),
            "meeting {meeting} in log order: {seen:?}"
        );
    }
    assert!(
        receiver.max_concurrency() > 1,
        "different entities proceed in parallel"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_retry_and_replay_by_seq_and_by_entity() {
    let db = TestDb::sqlite();
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
        (status, replay["queued"].as_i64()),
        (200, Some(2)),
        "{replay}"
    );
    receiver.wait_for("/r", before + 2).await;
    // A replay leaves deliveries being sent alone: wait until the first replay is recorded.
    eventually("the first replay to be recorded", || async {
        let sub = server.api(&format!("/api/v1/subscriptions/{id}")).await;
        let d = &sub["deliveries"];
        (d["pending"] == 0 && d["delivering"] == 0).then_some(())
    })
    .await;
    let (_, replay) = post_json(
        &server,
        &format!("/api/v1/subscriptions/{id}/replay"),
        json!({"after_seq": 0, "to_seq": 1}),
    )
    .await;
    assert_eq!(replay["queued"], 1);
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
        replay["queued"], 1,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_subscription_is_disabled_then_delivers_its_backlog_when_enabled() {
    let db = TestDb::sqlite();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_stored_once_and_fanned_out() {
    let db = TestDb::sqlite();
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    subscribe(
        &server,
        json!({"url": receiver.url("/cases"), "events": "case.*"}),
    )
    .await;
    let body = json!({"event": "case.updated", "payload": {"object": {"id": "C-1", "state": "open"}}, "idempotency_key": "k-1"});
    let (status, first) = post_json(&server, "/api/v1/events", body.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = post_json(&server, "/api/v1/events", body).await;
    assert_eq!((status, &again["status"]), (200, &json!("duplicate")));
    assert_eq!(again["id"], first["id"]);
    let got = receiver.wait_for("/cases", 1).await;
    assert_eq!(got[0].json()["payload"]["object"]["id"], "C-1");
    let stored = server
        .api(&format!("/api/v1/events/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(stored["source"], "api");
    for (bad, why) in [
        (json!({"event": "nodot", "payload": {}}), "family.action"),
        (json!({"event": "zoomhook.x", "payload": {}}), "reserved"),
        (json!({"event": "case.x", "payload": []}), "object"),
        (
            json!({"event": "case.x", "payload": {}, "extra": 1}),
            "unknown field",
        ),
    ] {
        let (status, error) = post_json(&server, "/api/v1/events", bad).await;
        assert_eq!(status, 400);
        assert!(error["detail"].as_str().unwrap().contains(why), "{error}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_destinations_are_refused() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[("delivery_retry_schedule", "100ms")])).await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://10.0.0.8/x",
        "ftp://example.com/x",
        "http://user:pw@example.com/",
    ] {
        let (status, error) = post_json(
            &server,
            "/api/v1/subscriptions",
            json!({"url": url, "events": "*"}),
        )
        .await;
        assert_eq!(status, 400, "{url} must be refused: {error}");
        assert!(
            error["detail"].as_str().unwrap().starts_with("`url`"),
            "{error}"
        );
    }
    let (status, _) = post_json(
        &server,
        "/api/v1/subscriptions",
        json!({"url": "http://example.com/x", "events": "*", "https_only": true}),
    )
    .await;
    assert_eq!(status, 400, "https_only refuses http");
    // A name is checked on the address actually connected to: localhost resolves to loopback.
    let receiver = Receiver::ok().await;
    let port = receiver.base.rsplit(':').next().unwrap().to_owned();
    let sub = subscribe(
        &server,
        json!({"url": format!("http://localhost:{port}/x"), "events": "*"}),
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
    let d = first_delivery_when(&server, &id, "failed").await;
    assert!(
        d["attempts_list"][0]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{d}"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing reached the loopback receiver"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_perform_each_delivery_once() {
    let db = TestDb::postgres().await;
    let receiver = Receiver::ok().await;
    let a = TestServer::start(delivery_config(&db, &[])).await;
    let b = TestServer::start(delivery_config(&db, &[])).await;
    subscribe(
        &a,
        json!({"url": receiver.url("/once"), "events": "*", "max_in_flight": 8}),
    )
    .await;
    let total = 300;
    let mut bodies = Vec::new();
    for i in 0..total {
        let server = if i % 2 == 0 { &a } else { &b };
        let body = serde_json::to_vec(&json!({"event": "meeting.participant_joined", "event_ts": 1_700_000_000_000i64 + i,
            "payload": {"account_id": "A", "object": {"id": 5000 + i % 7, "uuid": format!("u{}", i % 7),
                "participant": {"user_name": format!("p{i}"), "join_time": "2026-11-23T10:00:00Z"}}}})).unwrap();
        bodies.push((server, body));
    }
    let sends = bodies.iter().map(|(server, body)| server.send(body));
    for r in futures_util::future::join_all(sends).await {
        assert!(r.status().is_success());
    }
    receiver.wait_for("/once", total as usize).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = receiver.received_at("/once");
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), total as usize, "every event delivered");
    assert_eq!(
        got.len(),
        total as usize,
        "and each exactly once across both instances"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_holds_across_two_instances() {
    let db = TestDb::postgres().await;
    let receiver =
        Receiver::start(Arc::new(|_, _| (200, vec![], Duration::from_millis(150)))).await;
    let a = TestServer::start(delivery_config(&db, &[])).await;
    let b = TestServer::start(delivery_config(&db, &[])).await;
    // Created disabled so the whole backlog is due at once when it is enabled.
    let sub = subscribe(
        &a,
        json!({"url": receiver.url("/fragile"), "events": "*", "max_in_flight": 3, "enabled": false}),
    )
    .await;
    let total = 24;
    for i in 0..total {
        let body = serde_json::to_vec(
            &json!({"event": "meeting.started", "event_ts": 1_700_000_000_000i64 + i,
            "payload": {"account_id": "A", "object": {"id": 7000 + i, "uuid": format!("m{i}")}}}),
        )
        .unwrap();
        let server = if i % 2 == 0 { &a } else { &b };
        assert!(server.send(&body).await.status().is_success());
    }
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let (status, _) = patch_json(&b, &path, json!({"enabled": true})).await;
    assert_eq!(status, 200);
    receiver.wait_for("/fragile", total as usize).await;
    assert!(
        receiver.max_concurrency() <= 3,
        "the endpoint saw {} requests at once across both instances",
        receiver.max_concurrency()
    );
    assert!(
        receiver.max_concurrency() >= 2,
        "deliveries ran in parallel (the limit is not a single lane)"
    );
    a.stop().await;
    b.stop().await;
}

/// A real SMTP listener: speaks enough SMTP for a client to deliver; the first session refuses
/// the recipient with a transient 451 when `refuse_first`.
async fn smtp_server(refuse_first: bool) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sessions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&sessions);
    tokio::spawn(async move {
        let mut session = 0;
        while let Ok((stream, _)) = listener.accept().await {
            session += 1;
            let refuse = refuse_first && session == 1;
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut transcript = String::new();
                write.write_all(b"220 test.local ESMTP\r\n").await.ok();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    transcript.push_str(&line);
                    transcript.push('\n');
                    let reply: &[u8] = if in_data {
                        if line == "." {
                            in_data = false;
                            b"250 2.0.0 queued\r\n"
                        } else {
                            continue;
                        }
                    } else {
                        let upper = line.to_ascii_uppercase();
                        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            b"250-test.local\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT") && refuse {
                            b"451 4.3.0 try again later\r\n"
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            write.write_all(b"221 bye\r\n").await.ok();
                            break;
                        } else {
                            b"250 OK\r\n"
                        }
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
                log.lock().unwrap().push(transcript);
            });
        }
    });
    (port, sessions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_subscription_sends_a_templated_message_and_retries_smtp_failures() {
    let db = TestDb::sqlite();
    let (port, sessions) = smtp_server(true).await;
    let smtp = format!("smtp://127.0.0.1:{port}");
    let server = TestServer::start(delivery_config(
        &db,
        &[("smtp_url", &smtp), ("smtp_from", "zoomhook@example.com")],
    ))
    .await;
    let sub = subscribe(
        &server,
        json!({"kind": "email", "events": "recording.completed",
               "email": {"to": "{{payload.object.host_email}}, ops@example.com",
                         "subject": "Recording ready: {{payload.object.topic}}",
                         "body": "Share it: {{payload.object.share_url}} ({{event_time}})"}}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    assert!(
        server
            .send(&fixture("recording.completed.json"))
            .await
            .status()
            .is_success()
    );
    let d = first_delivery_when(&server, &id, "succeeded").await;
    let attempts = d["attempts_list"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "the 451 was retried: {d}");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("SMTP"),
        "{d}"
    );
    let transcripts = sessions.lock().unwrap().clone();
    let delivered = transcripts
        .iter()
        .find(|t| t.contains("Subject:"))
        .expect("a delivered message");
    assert!(
        delivered.contains("RCPT TO:<jchill@example.com>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("RCPT TO:<ops@example.com>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("Subject: Recording ready: My Meeting"),
        "{delivered}"
    );
    assert!(
        delivered.contains("Share it: https://example.com/rec/share/abc (2021-07-14T"),
        "{delivered}"
    );
    let (status, error) = post_json(
        &server,
        "/api/v1/subscriptions",
        json!({"kind": "email", "events": "*"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error["detail"].as_str().unwrap().contains("email.to"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_alongside_the_old_one_during_the_overlap() {
    let db = TestDb::sqlite();
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(&server, json!({"url": receiver.url("/rot"), "events": "*"})).await;
    let (id, old) = (
        sub["id"].as_str().unwrap().to_owned(),
        sub["secret"].as_str().unwrap().to_owned(),
    );
    let (status, rotated) = patch_json(
        &server,
        &format!("/api/v1/subscriptions/{id}"),
        json!({"rotate_secret": true, "rotation_overlap": "1h"}),
    )
    .await;
    assert_eq!(status, 200);
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(
        server
            .send(&fixture("meeting.started.json"))
            .await
            .status()
            .is_success()
    );
    let got = receiver.wait_for("/rot", 1).await;
    let r = &got[0];
    let (wid, ts, sig) = (
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
    );
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    assert!(
        verify_standard(&new, wid, ts, &r.body, sig),
        "the new secret verifies"
    );
    assert!(
        verify_standard(&old, wid, ts, &r.body, sig),
        "the old secret still verifies during the overlap"
    );
    let (status, error) = post_json(
        &server,
        "/api/v1/subscriptions",
        json!({"url": receiver.url("/x"), "events": "*", "ordering": "sometimes"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error["detail"].as_str().unwrap().contains("ordering"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_and_rate_limit_are_respected() {
    let db = TestDb::sqlite();
    let receiver =
        Receiver::start(Arc::new(|_, _| (200, vec![], Duration::from_millis(150)))).await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    subscribe(&server, json!({"url": receiver.url("/narrow"), "events": "meeting.participant_joined", "max_in_flight": 2})).await;
    subscribe(&server, json!({"url": receiver.url("/limited"), "events": "meeting.participant_left", "rate_limit": 4})).await;
    for i in 0..8i64 {
        for name in ["meeting.participant_joined", "meeting.participant_left"] {
            let body = serde_json::to_vec(&json!({"event": name, "event_ts": 1_700_000_000_000i64 + i,
                "payload": {"account_id": "A", "object": {"id": "1", "uuid": format!("u{i}"), "participant": {"user_name": "x"}}}})).unwrap();
            assert!(server.send(&body).await.status().is_success());
        }
    }
    receiver.wait_for("/narrow", 8).await;
    let limited = receiver.wait_for("/limited", 8).await;
    let narrow_overlap = {
        // With 150 ms answers and at most 2 in flight, 8 deliveries take at least 4 rounds.
        let got = receiver.received_at("/narrow");
        got.last().unwrap().at.duration_since(got[0].at)
    };
    assert!(
        narrow_overlap >= Duration::from_millis(450),
        "max_in_flight 2: {narrow_overlap:?}"
    );
    let spread = limited.last().unwrap().at.duration_since(limited[0].at);
    assert!(
        // The bucket allows the last claim 1 s after the first; arrivals at the receiver may
        // jitter (the first ones open connections), so allow some of that second to be lost.
        spread >= Duration::from_millis(700),
        "4/s for 8 deliveries takes about a second: {spread:?}"
    );
    server.stop().await;
}

both_backends!(finished_deliveries_are_purged_after_the_retention);

async fn finished_deliveries_are_purged_after_the_retention(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(&server, json!({"url": receiver.url("/p"), "events": "*"})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    for name in ["meeting.started.json", "meeting.ended.json"] {
        assert!(server.send(&fixture(name)).await.status().is_success());
    }
    receiver.wait_for("/p", 2).await;
    let store = db.open_store().await;
    let delivered = eventually("both recorded", || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let c = store.delivery_counts(&id).await.unwrap();
            (c.succeeded == 2).then_some(store.list_deliveries(&id, None, None, 10).await.unwrap())
        }
    })
    .await;
    let now = zoomhook::core::clock::now_millis();
    assert_eq!(
        store.purge_deliveries(now - 60_000, 1000).await.unwrap(),
        0,
        "younger than the retention: kept"
    );
    assert_eq!(
        store.purge_deliveries(now + 1, 1).await.unwrap(),
        1,
        "in batches"
    );
    assert_eq!(store.purge_deliveries(now + 1, 1000).await.unwrap(), 1);
    assert!(
        store
            .list_deliveries(&id, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_delivery(&delivered[0].id)
            .await
            .unwrap()
            .is_none()
    );
    server.stop().await;
}

both_backends!(concurrent_updates_of_different_fields_are_all_kept);

/// Each PATCH names only its own field; when they race, every one of them must survive (an update
/// that wrote back the whole row it had read would silently undo the others).
async fn concurrent_updates_of_different_fields_are_all_kept(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    for round in 0..8 {
        let sub = subscribe(&server, json!({"url": receiver.url("/c"), "events": "*"})).await;
        let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().unwrap());
        let patches = [
            json!({"description": format!("round {round}")}),
            json!({"timeout": "7s"}),
            json!({"max_in_flight": 3}),
            json!({"events": "meeting.*"}),
            json!({"rate_limit": 5}),
            json!({"ordering": "entity"}),
            json!({"headers": {"x-team": "crm"}}),
        ];
        let answers = futures_util::future::join_all(patches.iter().map(|patch| {
            server
                .http
                .patch(server.url(&path))
                .bearer_auth(ADMIN)
                .json(patch)
                .send()
        }))
        .await;
        for answer in answers {
            assert_eq!(answer.unwrap().status(), 200);
        }
        let got = server.api(&path).await;
        assert_eq!(got["description"], format!("round {round}"), "{got}");
        assert_eq!(got["timeout_ms"], 7000, "{got}");
        assert_eq!(got["max_in_flight"], 3, "{got}");
        assert_eq!(got["events"], "meeting.*", "{got}");
        assert_eq!(got["rate_limit"], 5, "{got}");
        assert_eq!(got["ordering"], "entity", "{got}");
        assert_eq!(got["headers_map"]["x-team"], "crm", "{got}");
    }
    server.stop().await;
}
