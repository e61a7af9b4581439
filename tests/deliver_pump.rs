//! The delivery pump (outcomes recorded and slots refilled in one transaction) through the real
//! server: a backlog drains in full, each delivery once, never more in flight than allowed; and
//! subscriptions held parsed in memory pick up a change from the next delivery on.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::delivery::*;
use common::receiver::Receiver;
use common::*;
use serde_json::json;

both_backends!(
    a_backlog_drains_once_each_within_max_in_flight,
    a_changed_header_is_sent_from_the_next_delivery_on,
);

fn participant_joined(i: i64) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"event": "meeting.participant_joined", "event_ts": 1_700_000_000_000i64 + i,
        "payload": {"account_id": "A", "object": {"id": format!("m{i}"), "uuid": format!("u{i}"),
        "participant": {"user_name": "x", "join_time": format!("t{i}")}}}}),
    )
    .unwrap()
}

async fn a_backlog_drains_once_each_within_max_in_flight(db: TestDb) {
    // Slow enough that slots fill: the pump must refill them as outcomes are recorded, never
    // beyond max_in_flight.
    let receiver = Receiver::start(Arc::new(|_, _| (200, vec![], Duration::from_millis(20)))).await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/hook"), "events": "*", "max_in_flight": 4}),
    )
    .await;
    for i in 0..60 {
        assert!(
            server
                .send(&participant_joined(i))
                .await
                .status()
                .is_success()
        );
    }
    let got = receiver.wait_for("/hook", 60).await;
    let ids: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids.len(),
        60,
        "every event once, each with its own webhook-id"
    );
    let concurrency = receiver.max_concurrency();
    assert!(
        (2..=4).contains(&concurrency),
        "in parallel, within max_in_flight 4: {concurrency}"
    );
    // Every outcome is recorded: nothing left pending or in flight, one attempt each.
    let id = sub["id"].as_str().unwrap().to_owned();
    let counts = eventually("every outcome recorded", || async {
        let sub = server.api(&format!("/api/v1/subscriptions/{id}")).await;
        (sub["delivery_counts"]["succeeded"] == 60).then_some(sub)
    })
    .await;
    assert_eq!(counts["delivery_counts"]["pending"], 0, "{counts}");
    assert_eq!(counts["delivery_counts"]["delivering"], 0, "{counts}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count("/hook"), 60, "nothing sent twice");
    server.stop().await;
}

async fn a_changed_header_is_sent_from_the_next_delivery_on(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/hook"), "events": "*", "headers": {"x-team": "before"}}),
    )
    .await;
    assert!(
        server
            .send(&participant_joined(1))
            .await
            .status()
            .is_success()
    );
    let first = receiver.wait_for("/hook", 1).await;
    assert_eq!(first[0].header("x-team"), "before");

    let id = sub["id"].as_str().unwrap();
    let (status, body) = patch_json(
        &server,
        &format!("/api/v1/subscriptions/{id}"),
        json!({"headers": {"x-team": "after", "x-extra": "1"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        server
            .send(&participant_joined(2))
            .await
            .status()
            .is_success()
    );
    let both = receiver.wait_for("/hook", 2).await;
    assert_eq!(both[1].header("x-team"), "after");
    assert_eq!(both[1].header("x-extra"), "1");
    server.stop().await;
}
