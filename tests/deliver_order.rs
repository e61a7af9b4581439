//! Delivery order and concurrency: entity ordering, `max_in_flight` and the rate limit, on one
//! instance and across instances sharing one PostgreSQL database.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::delivery::*;
use common::receiver::{Behaviour, Receiver};
use common::*;
use serde_json::json;

both_backends!(entity_ordering_holds_while_entities_run_in_parallel);

async fn entity_ordering_holds_while_entities_run_in_parallel(db: TestDb) {
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
both_backends!(max_in_flight_and_rate_limit_are_respected);

async fn max_in_flight_and_rate_limit_are_respected(db: TestDb) {
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
