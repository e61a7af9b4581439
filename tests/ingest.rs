//! The receiver, through a real HTTP server on an ephemeral port, on SQLite and PostgreSQL.

mod common;

use common::*;
use serde_json::{Value, json};

async fn event_count(server: &TestServer) -> usize {
    server.all_events().await.len()
}

both_backends!(
    every_fixture_is_accepted_and_returned_byte_identical,
    rejected_requests_are_not_stored,
    duplicates_are_acknowledged_and_stored_once,
    concurrent_distinct_events_get_unique_gap_free_seqs,
    event_queries_filter_and_paginate,
);

async fn every_fixture_is_accepted_and_returned_byte_identical(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    for (name, body) in fixtures() {
        let response = server.send(&body).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer: Value = response.json().await.unwrap();
        if name == "endpoint.url_validation.json" {
            assert!(answer["encryptedToken"].is_string(), "{name}: {answer}");
            continue;
        }
        assert_eq!(answer["status"], "accepted", "{name}: {answer}");
        let id = answer["id"].as_str().unwrap();
        let raw = server
            .http
            .get(server.url(&format!("/api/v1/events/{id}/raw")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            raw.bytes().await.unwrap().as_ref(),
            body.as_slice(),
            "{name}: raw body differs"
        );
        let shown = server.api(&format!("/api/v1/events/{id}")).await;
        assert_eq!(
            shown["body"].as_str().unwrap().as_bytes(),
            body.as_slice(),
            "{name}: body field differs"
        );
    }
    // URL validation is recorded in the log too.
    let events = server.all_events().await;
    assert_eq!(events.len(), fixtures().len());
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "endpoint.url_validation")
    );
    server.stop().await;
}

async fn rejected_requests_are_not_stored(db: TestDb) {
    let server = TestServer::start(config(&db, &[("max_body_bytes", "4096")])).await;
    let body = fixture("meeting.started.json");
    let ts = now_secs().to_string();
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = server.http.post(server.url("/webhooks/zoom"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(body).send()
    };

    // Wrong signature (right shape, wrong value).
    let wrong = zoom_signature(SECRET, &ts, b"something else");
    let r = post(
        vec![
            ("x-zm-request-timestamp", ts.clone()),
            ("x-zm-signature", wrong),
        ],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"], "unauthorized");
    assert!(
        !err.to_string().contains(SECRET),
        "errors never echo secrets"
    );

    // A signature computed over re-serialised JSON instead of the raw bytes.
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
    assert_ne!(reserialised, body);
    let sig = zoom_signature(SECRET, &ts, &reserialised);
    let r = post(
        vec![
            ("x-zm-request-timestamp", ts.clone()),
            ("x-zm-signature", sig),
        ],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        401,
        "signature over re-serialised JSON must not verify the raw body"
    );

    // Missing headers.
    let sig = zoom_signature(SECRET, &ts, &body);
    let r = post(vec![("x-zm-request-timestamp", ts.clone())], body.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post(vec![("x-zm-signature", sig.clone())], body.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Stale and future timestamps (default tolerance 300 s), correctly signed.
    for skew in [-301i64, 400] {
        let t = (now_secs() + skew).to_string();
        let r = post(
            vec![
                ("x-zm-request-timestamp", t.clone()),
                ("x-zm-signature", zoom_signature(SECRET, &t, &body)),
            ],
            body.clone(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 401, "skew {skew}");
    }

    // Wrong secret.
    let r = server
        .post_signed("/webhooks/zoom", "not-the-secret", &body, None)
        .await;
    assert_eq!(r.status(), 401);

    // Signed, but not JSON / no event.
    let r = server.send(b"this is not json").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
    let r = server.send(br#"{"payload":{"object":{"id":1}}}"#).await;
    assert_eq!(r.status(), 400);

    // Oversized, with and without a declared length.
    let big = format!(
        r#"{{"event":"meeting.started","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let r = server.send(big.as_bytes()).await;
    assert_eq!(r.status(), 413);
    let t = now_secs().to_string();
    let chunks: Vec<Result<http_body::Frame<bytes::Bytes>, std::io::Error>> = vec![
        Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(
            &big.as_bytes()[..3000],
        ))),
        Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(
            &big.as_bytes()[3000..],
        ))),
    ];
    let r = server
        .http
        .post(server.url("/webhooks/zoom"))
        .header("x-zm-request-timestamp", &t)
        .header("x-zm-signature", zoom_signature(SECRET, &t, big.as_bytes()))
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(
            futures_util::stream::iter(chunks),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "chunked oversized body");

    // Wrong method.
    let r = server
        .http
        .get(server.url("/webhooks/zoom"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    let r = server
        .http
        .put(server.url("/webhooks/zoom"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // Unknown source.
    let r = server
        .post_signed("/webhooks/zoom/nope", SECRET, &body, None)
        .await;
    assert_eq!(r.status(), 404);

    assert_eq!(
        event_count(&server).await,
        0,
        "nothing rejected may be stored"
    );

    // And the same body, correctly signed, is accepted.
    assert_eq!(server.send(&body).await.status(), 200);
    assert_eq!(event_count(&server).await, 1);
    server.stop().await;
}

async fn duplicates_are_acknowledged_and_stored_once(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;

    // Zoom's retry: the same x-zm-request-id twice.
    let joined = fixture("meeting.participant_joined.json");
    let first: Value = server
        .post_signed("/webhooks/zoom", SECRET, &joined, Some("rid-1"))
        .await
        .json()
        .await
        .unwrap();
    let again = server
        .post_signed("/webhooks/zoom", SECRET, &joined, Some("rid-1"))
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["status"], "duplicate");
    assert_eq!(
        again["id"], first["id"],
        "a duplicate answers the original's id"
    );

    // Two overlapping subscriptions: the same body under two request ids.
    let started = fixture("meeting.started.json");
    assert_eq!(
        server
            .post_signed("/webhooks/zoom", SECRET, &started, Some("sub-a-1"))
            .await
            .status(),
        200
    );
    let second: Value = server
        .post_signed("/webhooks/zoom", SECRET, &started, Some("sub-b-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["status"], "duplicate");
    // ...and the second subscription's own retry is caught by its request id alone.
    let mut retried_body: Value = serde_json::from_slice(&started).unwrap();
    retried_body["payload"]["object"]["topic"] = json!("changed in transit");
    let third: Value = server
        .post_signed(
            "/webhooks/zoom",
            SECRET,
            &serde_json::to_vec(&retried_body).unwrap(),
            Some("sub-b-1"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["status"], "duplicate");

    // Re-sent recording.completed: differs only in download_token and the URL tokens.
    let recording = String::from_utf8(fixture("recording.completed.json")).unwrap();
    let token = serde_json::from_str::<Value>(&recording).unwrap()["download_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let resent = recording
        .replace(&token, "eyJhbGciOiJIUzI1NiJ9.cmVzZW50.b3RoZXI")
        .replace("rec/download/abc", "rec/download/abc?access_token=fresh");
    assert_ne!(resent, recording);
    assert_eq!(server.send(recording.as_bytes()).await.status(), 200);
    let r: Value = server.send(resent.as_bytes()).await.json().await.unwrap();
    assert_eq!(r["status"], "duplicate");

    // Different event_ts: a different event, both stored.
    let left = String::from_utf8(fixture("meeting.participant_left.json")).unwrap();
    let ts = serde_json::from_str::<Value>(&left).unwrap()["event_ts"]
        .as_i64()
        .unwrap();
    let later = left.replace(&ts.to_string(), &(ts + 1).to_string());
    assert_eq!(
        server
            .send(left.as_bytes())
            .await
            .json::<Value>()
            .await
            .unwrap()["status"],
        "accepted"
    );
    assert_eq!(
        server
            .send(later.as_bytes())
            .await
            .json::<Value>()
            .await
            .unwrap()["status"],
        "accepted"
    );

    let events = server.all_events().await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "meeting.participant_joined",
            "meeting.started",
            "recording.completed",
            "meeting.participant_left",
            "meeting.participant_left"
        ]
    );
    let metrics = server.metrics_page().await;
    let duplicates: f64 = metrics
        .lines()
        .find(|l| l.starts_with("zoomhook_duplicates_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        duplicates >= 4.0,
        "duplicates are counted: {duplicates}\n{metrics}"
    );
    server.stop().await;
}

async fn concurrent_distinct_events_get_unique_gap_free_seqs(db: TestDb) {
    let server = std::sync::Arc::new(TestServer::start(config(&db, &[])).await);
    let mut tasks = Vec::new();
    for n in 0..500 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let name = zoomhook::zoom::templates::TEMPLATE_NAMES[n % 11];
            let body = zoomhook::zoom::templates::to_bytes(
                &zoomhook::zoom::templates::template(name, 1_700_000_000_000 + n as i64).unwrap(),
            );
            let response = server.send(&body).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["seq"]
                .as_i64()
                .unwrap()
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(task.await.unwrap());
    }
    acked.sort();
    assert_eq!(
        acked,
        (1..=500).collect::<Vec<i64>>(),
        "each ack carries its own seq"
    );
    let seqs: Vec<i64> = server
        .all_events()
        .await
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<i64>>());
}

async fn event_queries_filter_and_paginate(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    for name in [
        "meeting.created.json",
        "meeting.started.json",
        "meeting.participant_joined.json",
        "user.created.json",
        "recording.completed.json",
    ] {
        assert_eq!(server.send(&fixture(name)).await.status(), 200);
    }
    let events = |q: &str| {
        let q = q.to_owned();
        let server = &server;
        async move {
            let page = server.api(&format!("/api/v1/events?{q}")).await;
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        events("event=meeting.*").await,
        [
            "meeting.created",
            "meeting.started",
            "meeting.participant_joined"
        ]
    );
    assert_eq!(
        events("event=user.created,recording.*").await,
        ["user.created", "recording.completed"]
    );
    assert_eq!(events("event=*.started").await, ["meeting.started"]);
    // Numeric id in meeting.created/recording.completed and string id elsewhere: one entity.
    assert_eq!(
        events("entity=1234567890").await,
        ["meeting.created", "recording.completed"]
    );
    assert_eq!(
        events("source=zoom&order=desc&limit=2").await,
        ["recording.completed", "user.created"]
    );
    assert!(events("source=other").await.is_empty());
    assert!(events("since=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(events("until=2999-01-01T00:00:00Z").await.len(), 5);

    // Cursor pagination visits every event once.
    let page = server.api("/api/v1/events?limit=2").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2 = server
        .api(&format!("/api/v1/events?limit=2&cursor={cursor}"))
        .await;
    let cursor: i64 = cursor.parse().unwrap();
    assert_eq!(page2["data"][0]["seq"].as_i64().unwrap(), cursor + 1);

    // Bad parameters are refused clearly.
    for bad in [
        "event=meeting.%25",
        "since=yesterday",
        "limit=0",
        "order=sideways",
    ] {
        let r = server
            .http
            .get(server.url(&format!("/api/v1/events?{bad}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = server
        .http
        .get(server.url("/api/v1/events/evt_missing"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.stop().await;
}
