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

both_backends!(zoom_rotation_signs_with_the_previous_secret_until_the_overlap_ends);

/// `x-zm-signature` carries one signature, so a Zoom-style consumer that knows only the old secret
/// must keep verifying until the overlap ends; only then does the new secret sign.
async fn zoom_rotation_signs_with_the_previous_secret_until_the_overlap_ends(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/legacy"), "events": "*", "scheme": "zoom"}),
    )
    .await;
    let (id, old) = (
        sub["id"].as_str().unwrap().to_owned(),
        sub["secret"].as_str().unwrap().to_owned(),
    );
    let (status, rotated) = patch_json(
        &server,
        &format!("/api/v1/subscriptions/{id}"),
        json!({"rotate_secret": true, "rotation_overlap": "4s"}),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    let until = zoomhook::core::clock::parse_time(
        rotated["previous_secret_expires_at"]
            .as_str()
            .expect("the rotation says until when the old secret signs"),
    )
    .unwrap();
    assert_ne!(new, old);

    let signed_with = |r: &common::receiver::Received| {
        let ts = r.header("x-zm-request-timestamp");
        let sig = r.header("x-zm-signature");
        (
            sig == zoom_signature(&old, ts, &r.body),
            sig == zoom_signature(&new, ts, &r.body),
        )
    };
    assert!(
        server
            .send(&fixture("meeting.started.json"))
            .await
            .status()
            .is_success()
    );
    let during = receiver.wait_for("/legacy", 1).await;
    let sent_at: i64 = during[0].header("x-zm-request-timestamp").parse().unwrap();
    assert!(
        sent_at * 1000 < until,
        "the first delivery must fall inside the overlap for this test to mean anything"
    );
    assert_eq!(
        signed_with(&during[0]),
        (true, false),
        "during the overlap the consumer's old secret verifies"
    );

    // Wall-clock deadline, not synchronisation: the overlap is a point in time.
    while zoomhook::core::clock::now_millis() <= until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server
            .send(&fixture("meeting.ended.json"))
            .await
            .status()
            .is_success()
    );
    let after = receiver.wait_for("/legacy", 2).await;
    let ended = after
        .iter()
        .find(|r| r.json()["event"] == "meeting.ended")
        .expect("meeting.ended delivered");
    assert_eq!(
        signed_with(ended),
        (false, true),
        "after the overlap only the new secret verifies"
    );
    server.stop().await;
}

/// An endpoint that fails as its path says and, like many error pages, echoes the URL it was
/// called with (in the spelling the test gave it, and its query on its own).
async fn echoing_endpoint() -> (u16, tokio::task::JoinHandle<()>) {
    use axum::http::{StatusCode, Uri};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move |uri: Uri| async move {
        let query = uri.query().unwrap_or_default().to_owned();
        let echo = format!("cannot handle http://LocalHost:{port}{uri} (query {query:?})");
        match uri.path() {
            "/moved" => (
                StatusCode::FOUND,
                [(
                    "location",
                    format!("http://LocalHost:{port}/elsewhere?{query}"),
                )],
                echo,
            )
                .into_response(),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                echo.into_response()
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, echo).into_response(),
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

both_backends!(a_subscriber_urls_token_never_reaches_attempt_records_or_answers);

async fn a_subscriber_urls_token_never_reaches_attempt_records_or_answers(db: TestDb) {
    const TOKEN: &str = "s3cr3t";
    let (port, endpoint) = echoing_endpoint().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = TestServer::start(delivery_config(&db, &[])).await;
    // A mixed-case host and a query: the HTTP client prints its own normalised spelling.
    let cases = [
        (
            format!("http://LocalHost:{closed}/hook?token={TOKEN}"),
            "onnect",
        ),
        (
            format!("http://LocalHost:{port}/fail?token={TOKEN}"),
            "HTTP 500",
        ),
        (
            format!("http://LocalHost:{port}/moved?token={TOKEN}"),
            "redirect (302)",
        ),
        (
            format!("http://LocalHost:{port}/slow?token={TOKEN}&x=1"),
            "timed out",
        ),
    ];
    let mut ids = Vec::new();
    for (url, _) in &cases {
        let sub = subscribe(
            &server,
            json!({"url": url, "events": "meeting.started", "timeout": "300ms"}),
        )
        .await;
        ids.push(sub["id"].as_str().unwrap().to_owned());
    }
    assert!(
        server
            .send(&fixture("meeting.started.json"))
            .await
            .status()
            .is_success()
    );
    for (id, (url, error)) in ids.iter().zip(&cases) {
        let d = first_delivery_when(&server, id, "failed").await;
        let attempts = d["attempts"].as_array().unwrap();
        assert!(
            attempts
                .iter()
                .all(|a| a["error"].as_str().unwrap_or_default().contains(error)),
            "{url}: {d}"
        );
        let list = server
            .api(&format!("/api/v1/subscriptions/{id}/deliveries"))
            .await;
        let (status, tested) = post_json(
            &server,
            &format!("/api/v1/subscriptions/{id}/test"),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{tested}");
        assert_eq!(tested["ok"], false, "{tested}");
        for answer in [&d, &list, &tested] {
            assert!(
                !answer.to_string().contains(TOKEN),
                "{url}: the token leaked: {answer}"
            );
        }
    }
    server.stop().await;
    endpoint.abort();
}

/// Rotating a `zoom`-scheme secret again while an overlap runs keeps signing with the secret the
/// consumer verifies with, not with the intermediate one that never signed anything.
async fn a_second_zoom_rotation_within_the_overlap_keeps_the_consumers_secret(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/legacy"), "events": "*", "scheme": "zoom"}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let original = sub["secret"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, rotated) = patch_json(
            &server,
            &format!("/api/v1/subscriptions/{id}"),
            json!({"rotate_secret": true, "rotation_overlap": "1h"}),
        )
        .await;
        assert_eq!(status, 200, "{rotated}");
    }
    assert!(
        server
            .send(&fixture("meeting.started.json"))
            .await
            .status()
            .is_success()
    );
    let received = receiver.wait_for("/legacy", 1).await;
    let ts = received[0].header("x-zm-request-timestamp");
    assert_eq!(
        received[0].header("x-zm-signature"),
        zoom_signature(&original, ts, &received[0].body),
        "still signed with the secret the consumer has"
    );
}

both_backends!(a_second_zoom_rotation_within_the_overlap_keeps_the_consumers_secret);
