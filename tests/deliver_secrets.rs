//! Secrets of outbound delivery: rotation overlap for both signature schemes, and credentials of
//! destination URLs kept out of attempt records and answers.

mod common;

use std::time::Duration;

use common::delivery::*;
use common::receiver::Receiver;
use common::*;
use serde_json::json;

both_backends!(a_rotated_secret_signs_alongside_the_old_one_during_the_overlap);

async fn a_rotated_secret_signs_alongside_the_old_one_during_the_overlap(db: TestDb) {
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
