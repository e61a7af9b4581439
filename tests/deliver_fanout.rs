//! Fan-out through real interfaces: Zoom-signed events in through `/webhooks/zoom`, out to real
//! HTTP receivers on 127.0.0.1 — filters, both signature schemes verified independently,
//! publishing, SSRF refusals, concurrent subscription updates and the retention purge.

mod common;

use std::time::Duration;

use common::delivery::*;
use common::receiver::Receiver;
use common::*;
use serde_json::json;

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
        listed["data"][0]["secret"].is_null(),
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
both_backends!(published_events_are_stored_once_and_fanned_out);

async fn published_events_are_stored_once_and_fanned_out(db: TestDb) {
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
    // The same key for different content is refused, not silently taken as the first event.
    let reused = json!({"event": "case.updated", "payload": {"object": {"id": "C-1", "state": "closed"}}, "idempotency_key": "k-1"});
    let (status, error) = post_json(&server, "/api/v1/events", reused).await;
    assert_eq!(status, 409, "{error}");
    assert!(error["detail"].as_str().unwrap().contains("k-1"), "{error}");
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
both_backends!(hostile_destinations_are_refused);

async fn hostile_destinations_are_refused(db: TestDb) {
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
        d["attempts"][0]["error"]
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
        assert_eq!(got["timeout"], "7s", "{got}");
        assert_eq!(got["max_in_flight"], 3, "{got}");
        assert_eq!(got["events"], json!(["meeting.*"]), "{got}");
        assert_eq!(got["rate_limit"], 5, "{got}");
        assert_eq!(got["ordering"], "entity", "{got}");
        assert_eq!(got["headers"]["x-team"], "crm", "{got}");
    }
    server.stop().await;
}
