//! Every writable resource of the admin API reads back as it was written (docs/api.md: "what a
//! client sends comes back in the same shape"), on both backends: subscriptions of both kinds,
//! created and then changed field by field, and events published with `POST /api/v1/events`.
//! Also the rules every answer follows: RFC 3339 UTC times, `null` rather than absent fields,
//! `{data, next_cursor}` lists.

mod common;

use common::delivery::*;
use common::*;
use serde_json::{Value, json};

/// Asserts that every field of `written` is in `read` with the same value.
fn assert_reads_back(written: &Value, read: &Value, what: &str) {
    for (field, value) in written.as_object().expect("an object was written") {
        assert_eq!(
            &read[field], value,
            "{what}: `{field}` read back as written: {read}"
        );
    }
}

/// The fields every subscription answer has, present even when `null`.
const SUBSCRIPTION_FIELDS: &[&str] = &[
    "id",
    "kind",
    "url",
    "events",
    "scheme",
    "body_format",
    "headers",
    "timeout",
    "max_in_flight",
    "rate_limit",
    "ordering",
    "https_only",
    "enabled",
    "disabled_reason",
    "failing_since",
    "email",
    "description",
    "previous_secret_expires_at",
    "created_at",
    "updated_at",
    "delivery_counts",
    "secret",
];

fn assert_subscription_shape(sub: &Value) {
    let fields = sub.as_object().expect("a subscription is an object");
    for field in SUBSCRIPTION_FIELDS {
        assert!(fields.contains_key(*field), "`{field}` is present: {sub}");
    }
    assert_eq!(
        fields.len(),
        SUBSCRIPTION_FIELDS.len(),
        "no other field (no bookkeeping): {sub}"
    );
    for field in ["created_at", "updated_at"] {
        assert_rfc3339_utc(&sub[field]);
    }
}

fn assert_rfc3339_utc(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a time is text: {value}"));
    assert!(text.ends_with('Z'), "UTC: {text}");
    assert!(
        zoomhook::core::clock::parse_time(text).is_some() && text.contains('T'),
        "RFC 3339: {text}"
    );
}

both_backends!(a_webhook_subscription_reads_back_as_written_and_as_changed);

async fn a_webhook_subscription_reads_back_as_written_and_as_changed(db: TestDb) {
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let written = json!({
        "kind": "webhook",
        "url": "http://127.0.0.1:9/hooks/crm",
        "events": ["meeting.*", "user.*"],
        "scheme": "zoom",
        "body_format": "compact",
        "headers": {"X-A": "1", "X-Team": "crm"},
        "timeout": "5s",
        "max_in_flight": 3,
        "rate_limit": 7,
        "ordering": "entity",
        "https_only": false,
        "enabled": true,
        "description": "CRM sync — «équipe» 🚀",
    });
    let created = subscribe(&server, written.clone()).await;
    assert_reads_back(&written, &created, "the create answer");
    assert_subscription_shape(&created);
    assert!(created["secret"].is_string(), "a generated secret, once");
    assert!(
        created["email"].is_null(),
        "a webhook has no email settings"
    );
    let id = created["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/subscriptions/{id}");

    let read = server.api(&path).await;
    assert_reads_back(&written, &read, "GET after create");
    assert_subscription_shape(&read);
    assert!(read["secret"].is_null(), "the secret is not shown again");
    let listed = server.api("/api/v1/subscriptions").await;
    assert!(listed["next_cursor"].is_null(), "{listed}");
    assert_reads_back(&written, &listed["data"][0], "the list");

    // Every field changed at once, then read back; durations in their largest exact unit.
    let changed = json!({
        "url": "http://127.0.0.1:9/hooks/other",
        "events": ["recording.completed"],
        "scheme": "standard",
        "body_format": "raw",
        "headers": {"Authorization": "Bearer downstream"},
        "timeout": "45s",
        "max_in_flight": 1,
        "rate_limit": 100,
        "ordering": "none",
        "https_only": false,
        "enabled": false,
        "description": "",
    });
    let (status, answer) = patch_json(&server, &path, changed.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_reads_back(&changed, &answer, "the update answer");
    assert_reads_back(&changed, &server.api(&path).await, "GET after update");

    // A duration is answered in one documented form: the largest unit that divides it.
    let (_, answer) = patch_json(&server, &path, json!({"timeout": "60000ms"})).await;
    assert_eq!(answer["timeout"], "1m", "{answer}");
    // `rate_limit: 0` removes the limit, answered as null.
    let (_, answer) = patch_json(&server, &path, json!({"rate_limit": 0})).await;
    assert!(answer["rate_limit"].is_null(), "{answer}");

    // A rotation: the previous secret's end is a time, and the reveal shows both secrets.
    let (status, rotated) = patch_json(
        &server,
        &path,
        json!({"rotate_secret": true, "rotation_overlap": "1h"}),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    assert_rfc3339_utc(&rotated["previous_secret_expires_at"]);
    let secrets = server.api(&format!("{path}/secret")).await;
    assert_eq!(secrets["secret"], rotated["secret"], "{secrets}");
    assert_eq!(secrets["previous_secret"], created["secret"], "{secrets}");
    assert_eq!(
        secrets["previous_secret_expires_at"],
        rotated["previous_secret_expires_at"]
    );
    server.stop().await;
}

both_backends!(an_email_subscription_reads_back_as_written);

async fn an_email_subscription_reads_back_as_written(db: TestDb) {
    let server = TestServer::start(delivery_config(
        &db,
        &[("smtp_url", "smtp://127.0.0.1:2525")],
    ))
    .await;
    let written = json!({
        "kind": "email",
        "events": ["recording.completed"],
        "email": {
            "to": "{{payload.object.host_email}}, ops@example.com",
            "subject": "Recording of {{payload.object.topic}}",
            "body": "It is ready: {{payload.object.share_url}}",
        },
        "description": "recordings to hosts",
    });
    let created = subscribe(&server, written.clone()).await;
    assert_subscription_shape(&created);
    assert_reads_back(&written, &created, "the create answer");
    assert!(created["url"].is_null(), "an email has no URL: {created}");
    assert!(created["secret"].is_null(), "an email is not signed");
    let path = format!("/api/v1/subscriptions/{}", created["id"].as_str().unwrap());
    assert_reads_back(&written, &server.api(&path).await, "GET after create");

    let changed = json!({"email": {"to": "team@example.com", "subject": "New", "body": "Body"}});
    let (status, answer) = patch_json(&server, &path, changed.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_reads_back(&changed, &server.api(&path).await, "GET after update");
    server.stop().await;
}

both_backends!(a_published_event_reads_back_as_written);

async fn a_published_event_reads_back_as_written(db: TestDb) {
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let payload =
        json!({"object": {"id": "case-7", "title": "Ünïcode ✓", "n": 1.5, "tags": ["a", "b"]}});
    let (status, published) = post_json(
        &server,
        "/api/v1/events",
        json!({"event": "case.updated", "payload": payload, "event_time": "2026-11-28T09:30:00.250Z",
               "idempotency_key": "case-7-v1"}),
    )
    .await;
    assert_eq!(status, 201, "{published}");
    let id = published["id"].as_str().expect("id");
    let event = server.api(&format!("/api/v1/events/{id}")).await;
    assert_eq!(event["event"], "case.updated");
    assert_eq!(event["event_time"], "2026-11-28T09:30:00.250Z", "{event}");
    assert_eq!(event["source"], "api");
    assert_eq!(event["seq"], published["seq"]);
    assert!(event["deliveries"].is_array(), "where it went: {event}");
    let body: Value = serde_json::from_str(event["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(
        body["payload"], payload,
        "the payload reads back as written"
    );
    assert_eq!(body["event"], "case.updated");

    // In a list, the same event with `body` and `deliveries` null (present, not left out).
    let page = server.api("/api/v1/events?event=case.*").await;
    let listed = &page["data"][0];
    assert_eq!(listed["id"], event["id"]);
    assert!(listed.get("body").is_some_and(Value::is_null), "{listed}");
    assert!(
        listed.get("deliveries").is_some_and(Value::is_null),
        "{listed}"
    );
    assert!(
        page.get("next_cursor").is_some_and(Value::is_null),
        "{page}"
    );

    // Epoch milliseconds are taken too, and mean the same instant.
    let (status, again) = post_json(
        &server,
        "/api/v1/events",
        json!({"event": "case.updated", "payload": {"object": {"id": "case-8"}}, "event_time": 1_795_858_200_250_i64}),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    let event = server
        .api(&format!("/api/v1/events/{}", again["id"].as_str().unwrap()))
        .await;
    assert_rfc3339_utc(&event["event_time"]);

    // A published event is fanned out like Zoom's, but never taken for Zoom's word: a published
    // `meeting.started` does not invent a synchronised meeting.
    let (status, _) = post_json(
        &server,
        "/api/v1/events",
        json!({"event": "meeting.started", "payload": {"object": {"id": "999", "topic": "forged"}}}),
    )
    .await;
    assert_eq!(status, 201);
    eventually("sync to catch up", || async {
        (server.api("/api/v1/sync").await["lag"] == 0).then_some(())
    })
    .await;
    let status = server
        .http
        .get(server.url("/api/v1/meetings/999"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET")
        .status();
    assert_eq!(status.as_u16(), 404, "no meeting from a published event");

    // A time RFC 3339 cannot write is refused when published, and shown as null when Zoom sends it.
    let (status, refused) = post_json(
        &server,
        "/api/v1/events",
        json!({"event": "case.updated", "payload": {}, "event_time": 99_999_999_999_999_999_i64}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let far = br#"{"event":"meeting.started","event_ts":99999999999999999,"payload":{"account_id":"A","object":{"id":"55555","uuid":"far==","host_id":"h1"}}}"#;
    assert!(server.send(far).await.status().is_success());
    let page = server
        .api("/api/v1/events?event=meeting.started&source=zoom")
        .await;
    assert!(page["data"][0]["event_time"].is_null(), "{page}");
    server.stop().await;
}

both_backends!(a_subscription_that_could_never_be_sent_is_refused_and_changes_nothing);

/// What a subscription holds must be sendable: an over-long URL, thousands of headers or
/// patterns, control characters, or email settings on a webhook are a 400 when saved, not a
/// failure on every delivery later.
async fn a_subscription_that_could_never_be_sent_is_refused_and_changes_nothing(db: TestDb) {
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let url = "http://127.0.0.1:9/hook";
    let many_headers: serde_json::Map<String, Value> =
        (0..200).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let many_patterns: Vec<String> = (0..500).map(|i| format!("case{i}.*")).collect();
    for (body, field) in [
        (
            json!({"url": format!("{url}/{}", "b".repeat(500_000)), "events": ["*"]}),
            "url",
        ),
        (
            json!({"url": "http://127.0.0.1:9/a\u{0}b", "events": ["*"]}),
            "url",
        ),
        // The URL parser takes this host, but no request line can carry it.
        (
            json!({"url": "https://hooks{1}.example.com/zoom", "events": ["*"]}),
            "url",
        ),
        (
            json!({"url": url, "events": ["*"], "headers": many_headers}),
            "headers",
        ),
        (json!({"url": url, "events": many_patterns}), "events"),
        (
            json!({"url": url, "events": ["*"], "description": "d".repeat(1_000_001)}),
            "description",
        ),
        (
            json!({"url": url, "events": ["*"], "description": "a\u{0}b"}),
            "description",
        ),
        (
            json!({"url": url, "events": ["*"], "email": {"to": "x@example.com"}}),
            "email",
        ),
    ] {
        let (status, answer) = post_json(&server, "/api/v1/subscriptions", body).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "the error names `{field}`: {answer}"
        );
    }
    let listed = server.api("/api/v1/subscriptions").await;
    assert_eq!(listed["data"], json!([]), "nothing was saved: {listed}");

    let sub = subscribe(&server, json!({"url": url, "events": ["*"]})).await;
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let (status, answer) =
        patch_json(&server, &path, json!({"email": {"to": "x@example.com"}})).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = patch_json(&server, &path, json!({"timeout": "2h"})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("100ms and 1m"),
        "durations in the API's own form: {answer}"
    );
    let read = server.api(&path).await;
    assert_eq!(
        read["timeout"], "10s",
        "a refused update changed nothing: {read}"
    );

    // A replay range that can only match nothing is a mistake, said as one; times as numbers too.
    for bad in [
        json!({"after_seq": 10, "to_seq": 5}),
        json!({"after_seq": -5}),
        json!({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}),
        json!({"since": true}),
    ] {
        let (status, answer) = post_json(&server, &format!("{path}/replay"), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let (status, answer) = post_json(
        &server,
        &format!("{path}/replay"),
        json!({"since": 1_700_000_000_000_i64}),
    )
    .await;
    assert_eq!(status, 200, "epoch milliseconds are a time: {answer}");
    // A cursor this API never handed out is a 400, not an empty page.
    for list in [
        "/api/v1/events?cursor=-5".to_owned(),
        "/api/v1/meetings?cursor=%00".to_owned(),
        "/api/v1/sync/quarantine?cursor=abc".to_owned(),
        format!("{path}/deliveries?cursor=-1"),
    ] {
        let status = server
            .http
            .get(server.url(&list))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET")
            .status();
        assert_eq!(status.as_u16(), 400, "{list}");
    }
    server.stop().await;
}
